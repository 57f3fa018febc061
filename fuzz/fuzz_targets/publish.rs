//! A publish body, read as `POST /api/v1/notifications` and `POST /api/v1/notifications/batch`
//! read it: the `Json` extractor's `parse_json` (depth limit, objects only, unknown fields
//! refused), then the garde rules and the conversion to the stored record
//! (`PublishRequest::validate_into_record`; for a batch `check` then `BatchRequest::into_valid`).
//! Every input is tried as both.
//!
//! Checks: a refused body is a 400 naming at least one field, never another error; what passes
//! is what the rules promise (lengths, no control characters, a click URL the WHATWG parser
//! takes with its host as written, an envelope of the documented shape, targets that each become
//! a device or a group); the device's view of the record (`device_json`) carries exactly the
//! request's text; and the `DEVICE_ID` pattern the OpenAPI document states agrees with the rule.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

use beepmyphone::api::body::parse_json;
use beepmyphone::api::schemas::{
    check, is_device_id, BatchRequest, PublishRequest, TargetsBody, ValidPublish, DEVICE_ID,
    ENCRYPTED_TITLE, MAX_BATCH, MAX_TARGETS, PRIORITIES, TTL_RANGE,
};
use beepmyphone::config::Settings;
use beepmyphone::error::ApiError;
use beepmyphone_actors::model::{NotificationId, Priority};
use beepmyphone_actors::queue::Targets;

/// The clock of every publish here (2025-12-02).
const NOW_MS: i64 = 1_764_670_000_000;

/// The relay's defaults: the JSON depth limit and the default lifetime.
static LIMITS: LazyLock<(usize, u64)> = LazyLock::new(|| {
    let settings = Settings::default();
    (
        settings.server.max_json_depth,
        settings.delivery.default_ttl_seconds,
    )
});

static DEVICE_ID_PATTERN: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(DEVICE_ID).expect("DEVICE_ID is a regex"));

/// What a client sent, kept to compare with what the relay made of it.
struct Sent {
    title: Option<String>,
    body: String,
    app: Option<String>,
    priority: Option<String>,
    tags: Vec<String>,
    click_url: Option<String>,
    ttl_seconds: Option<u64>,
    encrypted: Option<String>,
    targets: Option<TargetsBody>,
}

impl Sent {
    fn of(request: &PublishRequest) -> Self {
        Self {
            title: request.title.clone(),
            body: request.body.clone(),
            app: request.app.clone(),
            priority: request.priority.clone(),
            tags: request.tags.clone(),
            click_url: request.click_url.clone(),
            ttl_seconds: request.ttl_seconds,
            encrypted: request.encrypted.clone(),
            targets: request.targets.clone(),
        }
    }
}

/// A refusal of a bad body: a 400 that names what is wrong.
fn refused(error: &ApiError) {
    match error {
        ApiError::Validation { errors, .. } => {
            assert!(!errors.is_empty(), "a 400 naming no field");
            // The field may be empty: an unknown key `""` is named as it is.
            for e in errors {
                assert!(!e.reason.is_empty(), "{e:?}");
            }
        }
        other => panic!("a bad body answered {other:?}, not a 400"),
    }
}

fn one_line(text: &str, min: usize, max: usize) {
    let len = text.chars().count();
    assert!((min..=max).contains(&len), "{len} characters: {text:?}");
    assert!(!text.chars().any(char::is_control), "{text:?}");
}

fn accepted(valid: &ValidPublish, sent: &Sent) {
    let record = &valid.record;
    assert!(NotificationId::parse(record.id.as_str()).is_some());
    match &sent.encrypted {
        Some(envelope) => {
            assert_eq!(record.title, ENCRYPTED_TITLE);
            assert!(sent.title.is_none() && sent.body.is_empty() && sent.tags.is_empty());
            assert!(sent.click_url.is_none());
            let bytes = beepmyphone::crypto::e2e::parse(envelope).expect("a checked envelope");
            assert_eq!(bytes[0], beepmyphone::crypto::e2e::VERSION);
            match &valid.targets {
                Targets::Listed { devices, groups } => {
                    assert!(
                        devices.len() == 1 && groups.is_empty(),
                        "{:?}",
                        valid.targets
                    )
                }
                Targets::All => panic!("an envelope for every device"),
            }
        }
        None => {
            one_line(&record.title, 1, 256);
            assert_eq!(Some(&record.title), sent.title.as_ref());
        }
    }
    assert!(record.body.chars().count() <= 4_096);
    assert!(!record
        .body
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')));
    one_line(&record.app, 1, 64);
    assert_eq!(record.app, sent.app.as_deref().unwrap_or("api"));
    assert!(record.tags.len() <= 10);
    for tag in &record.tags {
        one_line(tag, 1, 32);
    }
    match sent.priority.as_deref() {
        None => assert_eq!(record.priority, Priority::Normal),
        Some(name) => {
            assert!(PRIORITIES.contains(&name));
            assert_eq!(record.priority.as_str(), name);
        }
    }
    let ttl = sent.ttl_seconds.unwrap_or(LIMITS.1);
    assert!(TTL_RANGE.contains(&ttl));
    assert_eq!(record.created_at, NOW_MS);
    assert_eq!(
        record.expires_at,
        NOW_MS + i64::try_from(ttl).expect("a TTL") * 1_000
    );
    if let Some(click) = &record.click_url {
        // The promise of CLICK_URL: a URL a device can open, to the host it names.
        let url = url::Url::parse(click).expect("an accepted click URL parses");
        assert!(matches!(url.scheme(), "http" | "https"), "{click}");
        let host = url.host_str().expect("an accepted click URL has a host");
        assert!(
            click.to_ascii_lowercase().contains(host),
            "{click} -> {host}"
        );
    }
    // Every target the rules passed reaches the queue as a device or a group.
    match (&sent.targets, &valid.targets) {
        (None, Targets::All) => {}
        (Some(TargetsBody::Keyword(word)), Targets::All) => assert_eq!(word, "all"),
        (Some(TargetsBody::Keyword(_)), Targets::Listed { devices, groups }) => {
            assert!(devices.is_empty() && groups.len() == 1)
        }
        (Some(TargetsBody::List(items)), Targets::Listed { devices, groups }) => {
            assert!((1..=MAX_TARGETS).contains(&items.len()));
            assert_eq!(devices.len() + groups.len(), items.len(), "{items:?}");
        }
        (sent, queued) => panic!("targets {sent:?} became {queued:?}"),
    }
    // The device sees exactly what was published.
    let view: Value = serde_json::from_slice(&record.device_json()).expect("the view is JSON");
    assert_eq!(view["id"], record.id.as_str());
    assert_eq!(view["title"], record.title.as_str());
    assert_eq!(view["body"], sent.body.as_str());
    assert_eq!(view["app"], record.app.as_str());
    assert_eq!(view["priority"], record.priority.as_str());
    let tags: Vec<&str> = view["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(tags, sent.tags);
    assert_eq!(view["clickUrl"].as_str(), sent.click_url.as_deref());
    assert_eq!(view["encrypted"].as_str(), sent.encrypted.as_deref());
}

/// The schema's device id pattern and the rule agree on every string target.
fn patterns_agree(targets: Option<&TargetsBody>) {
    let items: Vec<&str> = match targets {
        Some(TargetsBody::List(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(TargetsBody::Keyword(word)) => vec![word.as_str()],
        None => Vec::new(),
    };
    for item in items {
        assert_eq!(
            DEVICE_ID_PATTERN.is_match(item),
            is_device_id(item),
            "{item:?}"
        );
    }
}

fuzz_target!(|body: &[u8]| {
    let (max_depth, default_ttl) = *LIMITS;

    // POST /api/v1/notifications
    match parse_json::<PublishRequest>(body, max_depth) {
        Ok(request) => {
            let sent = Sent::of(&request);
            patterns_agree(sent.targets.as_ref());
            match request.validate_into_record(NOW_MS, default_ttl) {
                Ok(valid) => accepted(&valid, &sent),
                Err(e) => refused(&e),
            }
        }
        Err(e) => refused(&e),
    }

    // POST /api/v1/notifications/batch
    match parse_json::<BatchRequest>(body, max_depth) {
        Ok(request) => {
            let sent: Vec<Sent> = request.items.iter().map(Sent::of).collect();
            match check(&request).and_then(|()| request.into_valid(NOW_MS, default_ttl)) {
                Ok(valid) => {
                    assert!((1..=MAX_BATCH).contains(&valid.len()));
                    assert_eq!(valid.len(), sent.len());
                    for (valid, sent) in valid.iter().zip(&sent) {
                        accepted(valid, sent);
                    }
                }
                Err(e) => refused(&e),
            }
        }
        Err(e) => refused(&e),
    }
});
