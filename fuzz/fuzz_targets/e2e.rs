//! The end-to-end envelope (`crypto::e2e`): what a publisher sends in `encrypted` and a device
//! opens. The relay checks only its shape (`e2e::parse`, through the publish rule); the CLI and
//! the capture agent seal and open it.
//!
//! The input is used twice:
//!
//! - as an envelope (UTF-8): the shape check agrees with the `ENCRYPTED_PATTERN` and
//!   `ENCRYPTED_MIN` the OpenAPI document states; `open` with the device key the seed corpus was
//!   sealed for never panics, and what opens has that shape;
//! - as content (title, body, app, tags and click URL, split at NUL bytes): sealed for the
//!   device, the envelope has the documented shape and opens to the same content with the
//!   device's key and id, and not with another id, another key, or one character changed.

#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;

use beepmyphone::api::schemas::{ENCRYPTED_MAX, ENCRYPTED_MIN, ENCRYPTED_PATTERN};
use beepmyphone::crypto::e2e::{self, Content, E2eError, SecretKey, MIN_LEN, VERSION};

/// The device the seed corpus's envelopes were sealed for (its secret: 32 bytes of 9).
const DEVICE: &str = "dev_01M8GQ0YA57DQR0800C2D6GBMT";
const OTHER_DEVICE: &str = "dev_01M8GQ0YA57DQR0800C2D6GBMA";

struct Fixture {
    secret: SecretKey,
    public: [u8; 32],
    other: SecretKey,
    pattern: regex::Regex,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let secret = SecretKey::from_bytes([9; 32]);
    Fixture {
        public: secret.public_key(),
        secret,
        other: SecretKey::from_bytes([10; 32]),
        pattern: regex::Regex::new(ENCRYPTED_PATTERN).expect("ENCRYPTED_PATTERN is a regex"),
    }
});

/// What the OpenAPI document says an `encrypted` value is.
fn documented_shape(fixture: &Fixture, text: &str) -> bool {
    (ENCRYPTED_MIN..=ENCRYPTED_MAX).contains(&text.len()) && fixture.pattern.is_match(text)
}

fn as_envelope(fixture: &Fixture, text: &str) {
    let parsed = e2e::parse(text);
    if text.len() <= ENCRYPTED_MAX {
        assert_eq!(
            parsed.is_ok(),
            documented_shape(fixture, text),
            "the rule and the schema disagree on {text:?}: {parsed:?}"
        );
    }
    if let Ok(bytes) = &parsed {
        assert!(bytes.len() >= MIN_LEN && bytes[0] == VERSION);
        assert_eq!(
            e2e::parse(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)).as_ref(),
            Ok(bytes)
        );
    }
    match e2e::open(DEVICE, &fixture.secret, text) {
        Ok(content) => {
            assert!(parsed.is_ok());
            assert_eq!(
                e2e::open(OTHER_DEVICE, &fixture.secret, text),
                Err(E2eError::Open)
            );
            assert_eq!(e2e::open(DEVICE, &fixture.other, text), Err(E2eError::Open));
            // Opening is a pure function of the envelope.
            assert_eq!(e2e::open(DEVICE, &fixture.secret, text), Ok(content));
        }
        Err(e) => assert_eq!(
            parsed.is_ok(),
            matches!(e, E2eError::Open | E2eError::Content(_)),
            "{e:?}"
        ),
    }
}

fn as_content(fixture: &Fixture, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let content = Content {
        title: parts.next().unwrap_or_default().to_owned(),
        body: parts.next().unwrap_or_default().to_owned(),
        app: parts.next().map(str::to_owned),
        tags: parts
            .next()
            .map_or_else(Vec::new, |t| t.split(',').map(str::to_owned).collect()),
        click_url: parts.next().map(str::to_owned),
    };
    let envelope = e2e::seal(DEVICE, &fixture.public, &content).expect("sealing for a real key");
    assert!(fixture.pattern.is_match(&envelope), "{envelope}");
    assert!(envelope.len() >= ENCRYPTED_MIN);
    assert_eq!(
        e2e::open(DEVICE, &fixture.secret, &envelope).as_ref(),
        Ok(&content)
    );
    assert_eq!(
        e2e::open(OTHER_DEVICE, &fixture.secret, &envelope),
        Err(E2eError::Open)
    );
    assert_eq!(
        e2e::open(DEVICE, &fixture.other, &envelope),
        Err(E2eError::Open)
    );
    // One character changed (past the version byte's two), chosen by the input.
    let at = 2 + data.len() % (envelope.len() - 2);
    let mut changed = envelope.clone().into_bytes();
    changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).expect("base64url is ASCII");
    assert!(
        e2e::open(DEVICE, &fixture.secret, &changed).is_err(),
        "changed at {at} and it opened"
    );
}

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    if let Ok(text) = std::str::from_utf8(data) {
        as_envelope(fixture, text);
    }
    as_content(fixture, data);
});
