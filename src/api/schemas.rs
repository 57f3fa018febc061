//! Request and response bodies, and the rules that turn requests into domain values.
//!
//! Requests are parsed with unknown fields refused (serde), then checked by [`garde`] rules declared
//! on the same types; [`check`] turns a garde report into one response that lists every invalid
//! field by its JSON path (`items[3].title`, `settings.quietHours.start`). The same types derive
//! the OpenAPI schemas (`utoipa`), whose length, range and pattern keywords state the garde rules
//! to clients; `tests/api/openapi.rs` holds the two in step. The rules are those of `docs/api.md`.

use beepmyphone_actors::model::{NotificationId, NotificationRecord, Priority};
use beepmyphone_actors::queue::Targets;
use chrono::NaiveTime;
use garde::Validate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use crate::api::ids::{is_device_id, is_issued_id, DEVICE_ID};
use crate::api::targets::{group_list, groups_schema};
pub use crate::api::targets::{TargetsBody, MAX_TARGETS};
use crate::crypto::secrets::{ExposeSecret, SecretString};
use crate::error::{ApiError, FieldError};

/// Most items in one batch.
pub const MAX_BATCH: usize = 500;
/// Shortest and longest notification lifetime, in seconds.
pub const TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=2_592_000;
/// Platforms a device may declare.
pub const PLATFORMS: [&str; 6] = ["ios", "android", "windows", "macos", "linux", "other"];
/// Priority names.
pub const PRIORITIES: [&str; 4] = ["low", "normal", "high", "critical"];

/// Schema pattern of one-line text: no control characters (Unicode category Cc).
pub const SINGLE_LINE: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";
/// Schema pattern of multi-line text: no control characters but tab, newline and carriage return.
pub const MULTI_LINE: &str = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$";
/// Schema pattern of an `HH:MM` time of day.
pub const HHMM: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// Schema pattern of printable ASCII.
pub const PRINTABLE_ASCII: &str = "^[!-~]*$";
/// Schema pattern of a `clickUrl`, and the whole of its rule (with `maxLength` 2048): `http` or
/// `https`, a host, an optional path. The host is a dotted IPv4 address or DNS labels of letters,
/// digits and single inner hyphens whose last label starts with a letter; no credentials, no port.
/// Every string it matches is a URL the WHATWG parser (the `url` crate, browsers) accepts as it is:
/// hosts it would read as a number (`https://09`) or as punycode (`xn--…`) are outside it.
pub const CLICK_URL: &str = concat!(
    "^https?://",
    "(([A-Za-z0-9]+(-[A-Za-z0-9]+)*\\.)*[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+)*",
    "|(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})",
    "(/[A-Za-z0-9._~%!$&'()*+,;=:@/?#-]*)?$"
);
/// Longest `clickUrl`, in characters (all ASCII, so also bytes).
pub const CLICK_URL_MAX: usize = 2_048;

/// The IANA time zone names a `quietHours.timezone` may be: those chrono-tz knows (the schema's
/// `enum` and the rule both read this list).
pub fn time_zone_names() -> impl Iterator<Item = &'static str> {
    chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())
}

/// Validates `value` with its garde rules, turning the report into one 400 that lists every invalid
/// field by its JSON path, ordered by path.
pub fn check<T: Validate<Context = ()>>(value: &T) -> Result<(), ApiError> {
    value.validate().map_err(|report| {
        let mut errors: Vec<FieldError> = report
            .iter()
            .map(|(path, error)| {
                let field = camel_case_path(&path.to_string());
                let field = if field.is_empty() {
                    "body".into()
                } else {
                    field
                };
                FieldError::new(field, error.message())
            })
            .collect();
        errors.sort_by(|a, b| a.field.cmp(&b.field));
        ApiError::invalid(errors)
    })
}

/// garde names fields as Rust does (`quiet_hours`); the API's JSON is camelCase (`quietHours`),
/// as every request type declares with `#[serde(rename_all = "camelCase")]`.
fn camel_case_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// A text field as custom rules read it: a string, or an optional one (absent passes).
pub trait TextValue {
    /// The text, if present.
    fn text(&self) -> Option<&str>;
}

impl TextValue for String {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl TextValue for str {
    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl TextValue for Option<String> {
    fn text(&self) -> Option<&str> {
        self.as_deref()
    }
}

fn length_error(min: usize, max: usize) -> garde::Error {
    garde::Error::new(if min == max {
        format!("must be {min} characters long")
    } else if min == 0 {
        format!("must be at most {max} characters long")
    } else {
        format!("must be {min} to {max} characters long")
    })
}

fn text_rule<T: TextValue + ?Sized>(
    value: &T,
    min: usize,
    max: usize,
    multiline: bool,
) -> garde::Result {
    let Some(value) = value.text() else {
        return Ok(());
    };
    let len = value.chars().count();
    if len < min || len > max {
        return Err(length_error(min, max));
    }
    if multiline {
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            return Err(garde::Error::new(
                "must not contain control characters other than newlines and tabs",
            ));
        }
    } else if value.chars().any(char::is_control) {
        return Err(garde::Error::new("must not contain control characters"));
    }
    Ok(())
}

/// One-line text of `min..=max` characters without control characters.
pub fn line<T: TextValue + ?Sized>(
    min: usize,
    max: usize,
) -> impl FnOnce(&T, &()) -> garde::Result {
    move |value, ()| text_rule(value, min, max, false)
}

/// Text of at most `max` characters, newlines and tabs allowed.
pub fn multiline<T: TextValue + ?Sized>(max: usize) -> impl FnOnce(&T, &()) -> garde::Result {
    move |value, ()| text_rule(value, 0, max, true)
}

/// One of `allowed`, with `reason` otherwise.
pub fn one_of<T: TextValue + ?Sized>(
    allowed: &'static [&'static str],
    reason: &'static str,
) -> impl FnOnce(&T, &()) -> garde::Result {
    move |value, ()| match value.text() {
        Some(v) if !allowed.contains(&v) => Err(garde::Error::new(reason)),
        _ => Ok(()),
    }
}

/// A number in `range`, with `reason` otherwise.
pub fn within(
    range: std::ops::RangeInclusive<u64>,
    reason: &'static str,
) -> impl FnOnce(&Option<u64>, &()) -> garde::Result {
    move |value, ()| match value {
        Some(v) if !range.contains(v) => Err(garde::Error::new(reason)),
        _ => Ok(()),
    }
}

fn issued_id(prefix: &'static str) -> impl FnOnce(&Option<String>, &()) -> garde::Result {
    move |value, ()| match value {
        Some(raw) if !is_issued_id(raw, prefix) => Err(garde::Error::new(
            "is not a cursor this server returned (pass nextCursor as it came)",
        )),
        _ => Ok(()),
    }
}

fn seq_cursor(value: &Option<String>, (): &()) -> garde::Result {
    match value {
        Some(raw)
            if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Err(garde::Error::new(
                "is not a cursor this server returned (pass nextCursor as it came)",
            ))
        }
        _ => Ok(()),
    }
}

fn hhmm(value: &str, (): &()) -> garde::Result {
    if value.len() == 5 && NaiveTime::parse_from_str(value, "%H:%M").is_ok() {
        Ok(())
    } else {
        Err(garde::Error::new(
            "must be a time of day as HH:MM (24-hour)",
        ))
    }
}

fn differs_from(start: &str) -> impl FnOnce(&str, &()) -> garde::Result + '_ {
    move |end, ()| {
        if end == start {
            Err(garde::Error::new("must differ from start"))
        } else {
            Ok(())
        }
    }
}

fn time_zone(value: &str, (): &()) -> garde::Result {
    static NAMES: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
        std::sync::LazyLock::new(|| time_zone_names().collect());
    if NAMES.contains(value) {
        Ok(())
    } else {
        Err(garde::Error::new(
            "must be an IANA time zone such as Europe/Berlin",
        ))
    }
}

/// The schema of `quietHours.timezone`: an `enum` of [`time_zone_names`].
fn time_zone_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(time_zone_names()))
        .description(Some("An IANA time zone such as `Europe/Berlin`"))
        .examples(["Europe/Berlin"])
        .build()
}

/// The schema keyword that states `end` ≠ `start` on quiet hours, as a `not`: equal times share
/// an hour and a minute, so "not (some hour both start with, and some minute both end with)".
/// Exact for `HH:MM` values, which both fields must be anyway.
pub fn quiet_hours_differ() -> serde_json::Value {
    let both = |pattern: String| serde_json::json!({"properties": {"start": {"pattern": pattern}, "end": {"pattern": pattern}}});
    let hours: Vec<_> = (0..24).map(|h| both(format!("^{h:02}:"))).collect();
    let minutes: Vec<_> = (0..60).map(|m| both(format!(":{m:02}$"))).collect();
    serde_json::json!({"allOf": [{"anyOf": hours}, {"anyOf": minutes}]})
}

fn http_url(value: &Option<String>, (): &()) -> garde::Result {
    static PATTERN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(CLICK_URL).expect("CLICK_URL is a valid regex")
    });
    let Some(url) = value else { return Ok(()) };
    if url.len() > CLICK_URL_MAX {
        Err(garde::Error::new("must be at most 2048 characters long"))
    } else if !PATTERN.is_match(url) {
        Err(garde::Error::new("must be an absolute http or https URL"))
    } else {
        Ok(())
    }
}

fn idempotency_key_rule(value: &Option<String>, (): &()) -> garde::Result {
    match value {
        Some(key)
            if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Err(garde::Error::new(
                "must be 1 to 128 printable ASCII characters",
            ))
        }
        _ => Ok(()),
    }
}

fn tag_count(tags: &[String], (): &()) -> garde::Result {
    if tags.len() > 10 {
        Err(garde::Error::new("must have at most 10 tags"))
    } else {
        Ok(())
    }
}

/// `POST /notifications` and each item of a batch.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({"title": "Build finished", "body": "main is green", "priority": "high", "tags": ["ci"]}))]
pub struct PublishRequest {
    /// 1–256 characters, one line; required, except with `encrypted`, where it must be absent
    /// (the title is sealed inside, and the relay shows a placeholder).
    #[garde(custom(line(1, 256)), custom(title_presence(&self.encrypted)))]
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub title: Option<String>,
    /// Up to 4096 characters; newlines and tabs allowed.
    #[serde(default)]
    #[garde(custom(multiline(4_096)), custom(empty_with(&self.encrypted)))]
    #[schema(
        max_length = 4096,
        pattern = "^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]*$"
    )]
    pub body: String,
    /// The sending application, 1–64 characters; default `api`.
    #[garde(custom(line(1, 64)))]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub app: Option<String>,
    /// Delivery order; default `normal`.
    #[garde(custom(one_of(&PRIORITIES, PRIORITY_RULE)))]
    #[schema(value_type = Option<PriorityName>)]
    pub priority: Option<String>,
    /// `"all"` (the default), `"group:NAME"`, or a list of up to 1000 device ids and
    /// `group:NAME`s.
    #[garde(dive, custom(one_device_with(&self.encrypted)))]
    pub targets: Option<TargetsBody>,
    /// Up to 10 tags of 1–32 characters.
    #[serde(default)]
    #[garde(custom(tag_count), custom(no_tags_with(&self.encrypted)), inner(custom(line(1, 32))))]
    #[schema(schema_with = tags_schema)]
    pub tags: Vec<String>,
    /// An absolute http(s) URL of at most 2048 characters, opened when the notification is tapped.
    #[garde(custom(http_url), custom(absent_with(&self.encrypted)))]
    #[schema(schema_with = click_url_schema)]
    pub click_url: Option<String>,
    /// Lifetime in seconds, 60..2592000; default `delivery.default_ttl_seconds`.
    #[serde(default, deserialize_with = "whole_number")]
    #[garde(custom(within(TTL_RANGE, "must be between 60 and 2592000")))]
    #[schema(minimum = 60, maximum = 2592000)]
    pub ttl_seconds: Option<u64>,
    /// Up to 128 printable ASCII characters; a repeat within 24 h returns the first notification.
    #[garde(custom(idempotency_key_rule))]
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]*$")]
    pub idempotency_key: Option<String>,
    /// An end-to-end envelope for one device (docs/api.md, "End-to-end encryption"): base64url
    /// without padding, at most 12000 characters, version byte 1. With it, `targets` must be
    /// exactly one device id and `title`, `body`, `tags` and `clickUrl` absent; `app`, `priority`
    /// and `ttlSeconds` stay visible to the relay.
    #[garde(custom(envelope_rule))]
    #[schema(schema_with = encrypted_schema)]
    pub encrypted: Option<String>,
}

fn encrypted_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    // `null` reads as absent (a plain publish), as for the other optional fields.
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .min_length(Some(ENCRYPTED_MIN))
        .max_length(Some(ENCRYPTED_MAX))
        .pattern(Some(ENCRYPTED_PATTERN))
        .description(Some(
            "An end-to-end envelope for one device (see docs/api.md): base64url without padding, \
             version byte 1; with it `targets` is exactly one device id and `title`, `body`, \
             `tags` and `clickUrl` are absent",
        ))
        .build()
}

/// The title every end-to-end encrypted notification has on the relay (and in its listings).
pub const ENCRYPTED_TITLE: &str = "Encrypted notification";
/// Longest `encrypted`, in characters.
pub const ENCRYPTED_MAX: usize = 12_000;
/// Shortest `encrypted`, in characters: the base64url length of [`crate::crypto::e2e::MIN_LEN`]
/// bytes (an empty plaintext).
pub const ENCRYPTED_MIN: usize = (crate::crypto::e2e::MIN_LEN * 4).div_ceil(3);
/// Schema pattern of `encrypted`: base64url without padding whose first byte is 0x01 (`A` then
/// one of `Q`–`f`) and whose last character has no stray bits (canonical, as the decoder wants).
pub const ENCRYPTED_PATTERN: &str = concat!(
    "^A[Q-Za-f][A-Za-z0-9_-]{2}([A-Za-z0-9_-]{4})*",
    "([A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$"
);
const WITH_ENCRYPTED: &str = "must be absent with encrypted (the content is sealed inside it)";

fn envelope_rule(value: &Option<String>, (): &()) -> garde::Result {
    let Some(raw) = value else { return Ok(()) };
    if raw.len() > ENCRYPTED_MAX {
        return Err(garde::Error::new(format!(
            "must be at most {ENCRYPTED_MAX} characters long"
        )));
    }
    crate::crypto::e2e::parse(raw)
        .map(|_| ())
        .map_err(|e| garde::Error::new(format!("must be an end-to-end envelope: {e}")))
}

fn title_presence<'a>(
    encrypted: &'a Option<String>,
) -> impl FnOnce(&Option<String>, &()) -> garde::Result + 'a {
    move |title, ()| match (title, encrypted) {
        (None, None) => Err(garde::Error::new("is required")),
        (Some(_), Some(_)) => Err(garde::Error::new(WITH_ENCRYPTED)),
        _ => Ok(()),
    }
}

fn empty_with<'a>(
    encrypted: &'a Option<String>,
) -> impl FnOnce(&String, &()) -> garde::Result + 'a {
    move |value, ()| {
        if encrypted.is_some() && !value.is_empty() {
            Err(garde::Error::new(WITH_ENCRYPTED))
        } else {
            Ok(())
        }
    }
}

fn no_tags_with<'a>(
    encrypted: &'a Option<String>,
) -> impl FnOnce(&Vec<String>, &()) -> garde::Result + 'a {
    move |tags, ()| {
        if encrypted.is_some() && !tags.is_empty() {
            Err(garde::Error::new(WITH_ENCRYPTED))
        } else {
            Ok(())
        }
    }
}

fn absent_with<'a>(
    encrypted: &'a Option<String>,
) -> impl FnOnce(&Option<String>, &()) -> garde::Result + 'a {
    move |value, ()| {
        if encrypted.is_some() && value.is_some() {
            Err(garde::Error::new(WITH_ENCRYPTED))
        } else {
            Ok(())
        }
    }
}

/// With `encrypted`, the targets must be a list of exactly one device id: each device has its
/// own envelope.
fn one_device_with<'a>(
    encrypted: &'a Option<String>,
) -> impl FnOnce(&Option<TargetsBody>, &()) -> garde::Result + 'a {
    move |targets, ()| {
        if encrypted.is_none() {
            return Ok(());
        }
        match targets {
            Some(TargetsBody::List(items))
                if items.len() == 1 && items[0].as_str().is_some_and(is_device_id) =>
            {
                Ok(())
            }
            _ => Err(garde::Error::new(
                "must be exactly one device id with encrypted (each device has its own envelope)",
            )),
        }
    }
}

/// The schema keyword (a `oneOf`) stating the rules between `encrypted` and the other fields of a
/// publish: either a plain notification with a `title` and no `encrypted`, or an envelope for
/// exactly one device without `title`, `body`, `tags` or `clickUrl`.
pub fn publish_one_of() -> serde_json::Value {
    serde_json::json!([
        // A plain publish: a title, and no envelope (`encrypted` absent or null).
        {
            "required": ["title"],
            "not": {"required": ["encrypted"], "properties": {"encrypted": {"type": "string"}}}
        },
        // An envelope: one device, and no title (absent or null), body, tags or click URL.
        {
            "required": ["encrypted", "targets"],
            "properties": {
                "encrypted": {"type": "string"},
                "title": {"type": "null"},
                "body": {"maxLength": 0},
                "tags": {"maxItems": 0},
                "clickUrl": {"type": "null"},
                "targets": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {"type": "string", "pattern": DEVICE_ID}
                }
            }
        }
    ])
}

/// The schema of a click URL (nullable), for the relay's fields and ntfy's `click`.
pub(crate) fn click_url_schema() -> utoipa::openapi::schema::Object {
    click_url(true)
}

/// The schema of ntfy's `Click` header: a click URL, never null.
pub(crate) fn click_header_schema() -> utoipa::openapi::schema::Object {
    click_url(false)
}

fn click_url(nullable: bool) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let kind = match nullable {
        true => SchemaType::from_iter([Type::String, Type::Null]),
        false => SchemaType::Type(Type::String),
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .max_length(Some(CLICK_URL_MAX))
        .pattern(Some(CLICK_URL))
        .description(Some(
            "An absolute http(s) URL of at most 2048 characters, opened when the notification is \
             tapped: a DNS name or IPv4 address, no port, no credentials, an optional path",
        ))
        .examples(["https://status.example.com/incidents/42"])
        .build()
}

fn tags_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(32))
                .pattern(Some(SINGLE_LINE)),
        )
        .max_items(Some(10))
        .description(Some("Up to 10 tags of 1–32 characters"))
        .build()
}

/// What a priority that is not one of the names is told.
const PRIORITY_RULE: &str = "must be one of low, normal, high, critical";

/// A priority name.
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum PriorityName {
    /// Delivered last.
    Low,
    /// The default.
    Normal,
    /// Before normal.
    High,
    /// First, and through quiet hours.
    Critical,
}

/// A publish request that passed every rule.
#[derive(Debug)]
pub struct ValidPublish {
    /// The notification to store.
    pub record: NotificationRecord,
    /// Who gets it.
    pub targets: Targets,
    /// The idempotency key.
    pub idempotency_key: Option<String>,
}

impl PublishRequest {
    /// Builds the notification from a request that passed [`check`]. A value the rules refuse
    /// is an error here too (the field, relative to this request), never a default.
    pub fn into_valid(self, now_ms: i64, default_ttl: u64) -> Result<ValidPublish, FieldError> {
        let priority = match self.priority.as_deref() {
            None => Priority::Normal,
            Some(raw) => {
                Priority::parse(raw).ok_or_else(|| FieldError::new("priority", PRIORITY_RULE))?
            }
        };
        let ttl = self.ttl_seconds.unwrap_or(default_ttl);
        let ttl_ms = i64::try_from(ttl).unwrap_or(0) * 1_000;
        Ok(ValidPublish {
            record: NotificationRecord {
                id: NotificationId::generate(),
                title: match self.encrypted {
                    Some(_) => ENCRYPTED_TITLE.to_owned(),
                    None => self
                        .title
                        .ok_or_else(|| FieldError::new("title", "is required"))?,
                },
                body: self.body,
                app: self.app.unwrap_or_else(|| "api".to_owned()),
                priority,
                tags: self.tags,
                click_url: self.click_url,
                created_at: now_ms,
                expires_at: now_ms + ttl_ms,
                trace_id: None,
                encrypted: self.encrypted,
            },
            targets: self.targets.map_or(Targets::All, TargetsBody::into_targets),
            idempotency_key: self.idempotency_key,
        })
    }

    /// [`check`] then [`PublishRequest::into_valid`].
    pub fn validate_into_record(
        self,
        now_ms: i64,
        default_ttl: u64,
    ) -> Result<ValidPublish, ApiError> {
        check(&self)?;
        self.into_valid(now_ms, default_ttl)
            .map_err(|e| ApiError::invalid(vec![e]))
    }
}

impl BatchRequest {
    /// Builds every item of a batch that passed [`check`]; an item the rules refuse is an error
    /// naming it (`items[3].priority`).
    pub fn into_valid(self, now_ms: i64, default_ttl: u64) -> Result<Vec<ValidPublish>, ApiError> {
        self.items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                item.into_valid(now_ms, default_ttl).map_err(|e| {
                    ApiError::invalid(vec![FieldError::new(
                        format!("items[{i}].{}", e.field),
                        e.reason,
                    )])
                })
            })
            .collect()
    }
}

fn batch_size(items: &[PublishRequest], (): &()) -> garde::Result {
    if items.is_empty() || items.len() > MAX_BATCH {
        Err(garde::Error::new(format!(
            "must hold 1 to {MAX_BATCH} notifications"
        )))
    } else {
        Ok(())
    }
}

/// `POST /notifications/batch`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 500 notifications, validated and queued together (all or none).
    #[serde(deserialize_with = "crate::api::body::objects::objects")]
    #[garde(custom(batch_size), dive)]
    #[schema(min_items = 1, max_items = 500)]
    pub items: Vec<PublishRequest>,
}

/// `202` body of a publish.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// The notification's id.
    pub id: String,
    /// Always `queued`.
    pub status: String,
    /// How many devices it was queued for.
    pub targets: usize,
}

/// `202` body of a batch publish.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One result per item, in order.
    pub items: Vec<PublishResponse>,
}

/// `POST /pairing-codes`.
#[derive(Debug, Deserialize, Default, Validate, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairingCodeRequest {
    /// 60..3600; default `auth.pairing_code_ttl_seconds`.
    #[serde(default, deserialize_with = "whole_number")]
    #[garde(custom(within(60..=3_600, "must be between 60 and 3600")))]
    #[schema(minimum = 60, maximum = 3600)]
    pub ttl_seconds: Option<u64>,
}

/// `POST /devices/pair`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairRequest {
    /// The pairing code shown by the operator (`K7QF-2M9X`; case, spaces and dashes are ignored).
    #[garde(custom(pairing_code))]
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[0-9A-Za-z -]*$",
        example = "K7QF-2M9X"
    )]
    pub code: String,
    /// 1–50 characters.
    #[garde(custom(line(1, 50)))]
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// The device's platform.
    #[garde(custom(one_of(&PLATFORMS, "must be one of ios, android, windows, macos, linux, other")))]
    #[schema(value_type = PlatformName)]
    pub platform: String,
    /// 1–32 characters.
    #[garde(custom(line(1, 32)))]
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub app_version: Option<String>,
    /// The groups the device joins (see `PATCH /devices/{id}`).
    #[serde(default)]
    #[garde(custom(group_list))]
    #[schema(schema_with = groups_schema)]
    pub groups: Option<Vec<String>>,
    /// The device's X25519 public key for end-to-end encryption: 32 bytes as base64url without
    /// padding (43 characters).
    #[garde(custom(e2e_key_rule))]
    #[schema(schema_with = e2e_key_schema)]
    pub e2e_key: Option<String>,
}

/// Schema pattern of an end-to-end public key: 32 bytes as canonical base64url without padding.
pub const E2E_KEY: &str = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$";

fn e2e_key_rule(value: &Option<String>, (): &()) -> garde::Result {
    match value {
        Some(raw) if crate::crypto::e2e::decode_key(raw).is_err() => Err(garde::Error::new(
            "must be an X25519 public key: 32 bytes as base64url without padding",
        )),
        _ => Ok(()),
    }
}

fn e2e_key_nullable_rule(value: &Option<Option<String>>, (): &()) -> garde::Result {
    e2e_key_rule(&value.clone().flatten(), &())
}

fn e2e_key_object(nullable: bool) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let schema_type = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::new(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .pattern(Some(E2E_KEY))
        .description(Some(
            "An X25519 public key for end-to-end encryption: 32 bytes as base64url without \
             padding",
        ))
        .build()
}

fn e2e_key_schema() -> utoipa::openapi::schema::Object {
    e2e_key_object(false)
}

fn nullable_e2e_key_schema() -> utoipa::openapi::schema::Object {
    e2e_key_object(true)
}

/// Reads a field that may be absent (`None`, with `#[serde(default)]`), `null` (`Some(None)`)
/// or a string.
fn nullable_string<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(de).map(Some)
}

fn pairing_code(value: &str, (): &()) -> garde::Result {
    if value.is_empty()
        || value.len() > 32
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b' ')
    {
        Err(garde::Error::new(
            "must be a pairing code such as K7QF-2M9X",
        ))
    } else {
        Ok(())
    }
}

fn token_length(value: &str, (): &()) -> garde::Result {
    // An empty or garbled token is simply not a valid one (401); only the size is a request error.
    if value.chars().count() > 4_096 {
        Err(garde::Error::new("must be at most 4096 characters long"))
    } else {
        Ok(())
    }
}

/// Reads an optional whole number that JSON may write as `965` or `965.0` (JSON Schema's
/// `integer` allows both); fractions, negatives and other types are refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(de)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= 9.0e15 => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "invalid value: {number}, expected a whole number of seconds"
        ))),
    }
}

/// A platform name.
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum PlatformName {
    /// iPhone, iPad.
    Ios,
    /// Android.
    Android,
    /// Windows.
    Windows,
    /// macOS.
    Macos,
    /// Linux.
    Linux,
    /// Anything else.
    Other,
}

/// Tokens handed to a device when it pairs or refreshes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTokens {
    /// The device.
    pub device_id: String,
    /// An RS256 access token.
    pub access_token: String,
    /// A single-use refresh token.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: u64,
}

/// `POST /auth/refresh`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefreshRequest {
    /// The refresh token from pairing or the last refresh (anything else is a 401).
    #[garde(custom(token_length))]
    #[schema(min_length = 1, max_length = 4096)]
    pub refresh_token: String,
}

/// Quiet hours: notifications below `critical` wait until they end.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursBody {
    /// `HH:MM`, 24-hour.
    #[garde(custom(hhmm))]
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "22:00")]
    pub start: String,
    /// `HH:MM`, 24-hour, different from `start` (may be earlier: the window wraps midnight); the
    /// object's `not` states the difference.
    #[garde(custom(hhmm), custom(differs_from(&self.start)))]
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$", example = "07:00")]
    pub end: String,
    /// An IANA time zone such as `Europe/Berlin`.
    #[garde(custom(time_zone))]
    #[schema(schema_with = time_zone_schema)]
    pub timezone: String,
}

/// Device settings in a `PATCH /devices/{id}`.
#[derive(Debug, Deserialize, Default, Validate, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsBody {
    /// Receives new notifications.
    #[garde(skip)]
    pub enabled: Option<bool>,
    /// Notifications below this priority are not delivered.
    #[garde(custom(one_of(&PRIORITIES, "must be one of low, normal, high, critical")))]
    #[schema(value_type = Option<PriorityName>)]
    pub min_priority: Option<String>,
    /// Quiet hours; `null` clears them.
    #[serde(
        default,
        deserialize_with = "crate::api::body::objects::nullable_object"
    )]
    #[garde(dive)]
    #[schema(value_type = Option<QuietHoursBody>, nullable)]
    pub quiet_hours: Option<Option<QuietHoursBody>>,
}

/// `PATCH /devices/{id}`: only the fields present change.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchDeviceRequest {
    /// 1–50 characters.
    #[garde(custom(line(1, 50)))]
    #[schema(
        min_length = 1,
        max_length = 50,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    /// Delivery settings.
    #[serde(
        default,
        deserialize_with = "crate::api::body::objects::optional_object"
    )]
    #[garde(dive)]
    pub settings: Option<SettingsBody>,
    /// The device's groups, all of them: the list replaces the old one (`[]` leaves every group).
    #[serde(default)]
    #[garde(custom(group_list))]
    #[schema(schema_with = groups_schema)]
    pub groups: Option<Vec<String>>,
    /// The device's end-to-end public key (as in pairing); `null` removes it.
    #[serde(default, rename = "e2eKey", deserialize_with = "nullable_string")]
    #[garde(custom(e2e_key_nullable_rule))]
    #[schema(schema_with = nullable_e2e_key_schema)]
    pub e2e_key: Option<Option<String>>,
}

/// `POST /tokens`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// 1–64 characters.
    #[garde(custom(line(1, 64)))]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
    /// What the token may do.
    #[garde(custom(one_of(
        &["admin", "publish", "metrics"],
        "must be admin, publish or metrics"
    )))]
    #[schema(value_type = ScopeName)]
    pub scope: String,
}

/// An API token's scope.
#[derive(Debug, Clone, Copy, ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ScopeName {
    /// Everything.
    Admin,
    /// Publishing notifications only.
    Publish,
    /// Reading `/metrics` only.
    Metrics,
}

/// `POST /auth/login`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The admin's user name.
    #[garde(custom(line(1, 64)))]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub username: String,
    /// The admin's password (bcrypt reads at most 72 bytes; longer ones never match).
    #[garde(custom(password_length))]
    // Held as a `SecretString` from the moment it is parsed: wiped on drop, `[REDACTED]` in
    // `Debug`. (A `//` comment: the `///` above is the document's description.)
    #[schema(value_type = String, min_length = 1, max_length = 1024, format = Password)]
    pub password: SecretString,
}

fn password_length(value: &SecretString, (): &()) -> garde::Result {
    let value = value.expose_secret();
    if value.is_empty() || value.chars().count() > 1_024 {
        Err(garde::Error::new("must be 1 to 1024 characters long"))
    } else {
        Ok(())
    }
}

/// `GET /tokens` paging.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenListQuery {
    /// Page size, 1..500 (default 50).
    #[garde(custom(page_size))]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    #[garde(custom(issued_id("tok_")))]
    #[param(pattern = "^tok_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub cursor: Option<String>,
}

fn page_size(value: &Option<i64>, (): &()) -> garde::Result {
    match value {
        Some(n) if !(1..=crate::api::MAX_LIMIT).contains(n) => {
            Err(garde::Error::new("must be between 1 and 500"))
        }
        _ => Ok(()),
    }
}

/// `GET /devices` filters.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// `online` or `offline`.
    #[garde(custom(one_of(&["online", "offline"], "must be online or offline")))]
    #[param(pattern = "^(online|offline)$")]
    pub status: Option<String>,
    /// Only devices of this platform.
    #[garde(custom(one_of(&PLATFORMS, "must be one of ios, android, windows, macos, linux, other")))]
    #[param(value_type = Option<PlatformName>)]
    pub platform: Option<String>,
    /// Page size, 1..500 (default 50).
    #[garde(custom(page_size))]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    #[garde(custom(issued_id("dev_")))]
    #[param(pattern = "^dev_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub cursor: Option<String>,
}

fn device_id_text(value: &Option<String>, (): &()) -> garde::Result {
    match value {
        Some(raw) if !is_device_id(raw) => Err(garde::Error::new("must be a device id (dev_…)")),
        _ => Ok(()),
    }
}

fn timestamp(value: &Option<String>, (): &()) -> garde::Result {
    match value {
        Some(raw) if chrono::DateTime::parse_from_rfc3339(raw).is_err() => Err(garde::Error::new(
            "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
        )),
        _ => Ok(()),
    }
}

/// `GET /notifications` filters.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct NotificationListQuery {
    /// Only notifications for this device (a device may name only itself).
    #[garde(custom(device_id_text))]
    #[param(pattern = "^dev_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub device_id: Option<String>,
    /// Delivery status.
    #[garde(custom(one_of(
        &["queued", "delivered", "sent", "acked", "expired"],
        "must be one of queued, delivered, acked, expired"
    )))]
    #[param(pattern = "^(queued|delivered|sent|acked|expired)$")]
    pub status: Option<String>,
    /// Priority.
    #[garde(custom(one_of(&PRIORITIES, "must be one of low, normal, high, critical")))]
    #[param(value_type = Option<PriorityName>)]
    pub priority: Option<String>,
    /// The sending application.
    #[garde(custom(line(1, 64)))]
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub app: Option<String>,
    /// Only notifications with this tag.
    #[garde(custom(line(1, 32)))]
    #[param(
        min_length = 1,
        max_length = 32,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub tag: Option<String>,
    /// Created at or after (RFC 3339).
    #[garde(custom(timestamp))]
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[garde(custom(timestamp))]
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Page size, 1..500 (default 50).
    #[garde(custom(page_size))]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    #[garde(custom(seq_cursor))]
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

/// The actions `GET /audit` filters by (every [`beepmyphone_actors::ports::Action`]).
pub const AUDIT_ACTIONS: [&str; 25] = [
    "admin.login",
    "admin.logout",
    "admin.session_ended",
    "token.created",
    "token.first_used",
    "token.deleted",
    "pairing.code_created",
    "device.paired",
    "device.refreshed",
    "device.refresh_reuse",
    "device.logout",
    "device.deleted",
    "device.revoked",
    "signing_key.rotated",
    "signing_key.retired",
    "data_key.rotated",
    "data_key.retired",
    "ip.blocked",
    "ip.unblocked",
    "config.loaded",
    "actor.restarted",
    "alert.fired",
    "alert.resolved",
    "tls.certificate_renewed",
    "tls.certificate_reloaded",
];

/// `GET /audit` filters.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditListQuery {
    /// Only this action.
    #[garde(custom(one_of(&AUDIT_ACTIONS, "must be an audit action such as admin.login (see the API documentation)")))]
    #[param(schema_with = audit_action_schema)]
    pub action: Option<String>,
    /// Only records by this actor: an admin, token or device id, or `system` or `anonymous`.
    #[garde(custom(actor_filter))]
    #[param(pattern = "^(system|anonymous|(adm|tok|dev)_[0-9A-Za-z]{1,40})$")]
    pub actor: Option<String>,
    /// Only records about this subject (a device, token, key or session id, an actor name).
    #[garde(custom(line(1, 128)))]
    #[param(
        min_length = 1,
        max_length = 128,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub subject: Option<String>,
    /// At or after (RFC 3339).
    #[garde(custom(timestamp))]
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Before (RFC 3339).
    #[garde(custom(timestamp))]
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Page size, 1..500 (default 50).
    #[garde(custom(page_size))]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    #[garde(custom(seq_cursor))]
    #[param(pattern = "^[0-9]{1,18}$")]
    pub cursor: Option<String>,
}

fn audit_action_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(AUDIT_ACTIONS))
        .description(Some("Only this action."))
        .build()
}

fn actor_filter(value: &Option<String>, (): &()) -> garde::Result {
    let ok = |raw: &str| {
        matches!(raw, "system" | "anonymous")
            || ["adm_", "tok_", "dev_"].iter().any(|p| {
                raw.strip_prefix(p).is_some_and(|rest| {
                    (1..=40).contains(&rest.len())
                        && rest.bytes().all(|b| b.is_ascii_alphanumeric())
                })
            })
    };
    match value {
        Some(raw) if !ok(raw) => Err(garde::Error::new(
            "must be an admin, token or device id (adm_…, tok_…, dev_…), system or anonymous",
        )),
        _ => Ok(()),
    }
}

/// A page of a list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the documented `clickUrl` pattern allows, the WHATWG URL parser takes as it
        /// is (same host, http or https): the pattern never promises a URL a device cannot open.
        #[test]
        fn every_url_the_pattern_allows_parses(url in proptest::string::string_regex(&CLICK_URL[1..CLICK_URL.len() - 1]).unwrap()) {
            proptest::prop_assume!(url.len() <= CLICK_URL_MAX);
            let parsed = url::Url::parse(&url).unwrap();
            proptest::prop_assert!(matches!(parsed.scheme(), "http" | "https"));
            let host = parsed.host_str().unwrap();
            proptest::prop_assert!(url.to_ascii_lowercase().contains(host), "{url} -> {host}");
            proptest::prop_assert!(http_url(&Some(url.clone()), &()).is_ok());
        }
    }

    /// The quiet hours' `not` is true exactly when `end` equals `start`.
    #[test]
    fn the_documented_not_states_end_differs_from_start() {
        let not = quiet_hours_differ();
        let groups: Vec<Vec<regex::Regex>> = not["allOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|group| {
                group["anyOf"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|alt| {
                        let start = alt["properties"]["start"]["pattern"].as_str().unwrap();
                        assert_eq!(start, alt["properties"]["end"]["pattern"]);
                        regex::Regex::new(start).unwrap()
                    })
                    .collect()
            })
            .collect();
        let excluded = |start: &str, end: &str| {
            groups
                .iter()
                .all(|alts| alts.iter().any(|re| re.is_match(start) && re.is_match(end)))
        };
        let times: Vec<String> = (0..1440)
            .map(|m| format!("{:02}:{:02}", m / 60, m % 60))
            .collect();
        for (i, start) in times.iter().enumerate() {
            assert!(excluded(start, start), "{start}");
            // Every end that shares the hour or the minute, and a spread of others.
            for end in times.iter().skip(i % 7).step_by(7) {
                assert_eq!(excluded(start, end), start == end, "{start} {end}");
            }
        }
    }

    /// The schema's time zones are the ones the rule takes.
    #[test]
    fn every_documented_time_zone_is_accepted() {
        for zone in time_zone_names() {
            assert!(time_zone(zone, &()).is_ok(), "{zone}");
            assert!(zone.parse::<chrono_tz::Tz>().is_ok(), "{zone}");
        }
        assert!(time_zone("Mars/Olympus", &()).is_err());
    }

    fn request(json: &str) -> PublishRequest {
        serde_json::from_str(json).unwrap()
    }

    fn fields<T: Validate<Context = ()>>(value: &T) -> Vec<(String, String)> {
        match check(value) {
            Ok(()) => Vec::new(),
            Err(ApiError::Validation { errors, .. }) => {
                errors.into_iter().map(|e| (e.field, e.reason)).collect()
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    fn names<T: Validate<Context = ()>>(value: &T) -> Vec<String> {
        fields(value).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn a_full_request_validates() {
        let request = request(
            r#"{"title":"Build finished","body":"main is green","app":"CI","priority":"high",
                "targets":["dev_01J00000000000000000000000"],"tags":["ci"],"clickUrl":"https://ci.example/123",
                "ttlSeconds":86400,"idempotencyKey":"build-123"}"#,
        );
        assert!(fields(&request).is_empty());
        let valid = request.into_valid(1_000, 604_800).unwrap();
        assert_eq!(valid.record.priority, Priority::High);
        assert_eq!(valid.record.expires_at, 1_000 + 86_400_000);
        assert!(
            matches!(valid.targets, Targets::Listed { ref devices, ref groups } if devices.len() == 1 && groups.is_empty())
        );
    }

    #[test]
    fn defaults_apply() {
        let valid = request(r#"{"title":"t"}"#)
            .validate_into_record(0, 600)
            .unwrap();
        assert_eq!(valid.record.app, "api");
        assert_eq!(valid.record.priority, Priority::Normal);
        assert_eq!(valid.targets, Targets::All);
        assert_eq!(valid.record.expires_at, 600_000);
    }

    #[test]
    fn a_bad_priority_is_refused_not_defaulted() {
        // Skipping the rules (as no handler does) must not turn a bad name into `normal`.
        let error = request(r#"{"title":"t","priority":"urgent"}"#)
            .into_valid(0, 600)
            .unwrap_err();
        assert_eq!(error.field, "priority");
        let batch: BatchRequest =
            serde_json::from_str(r#"{"items":[{"title":"a"},{"title":"b","priority":"p"}]}"#)
                .unwrap();
        match batch.into_valid(0, 600).unwrap_err() {
            ApiError::Validation { errors, .. } => {
                assert_eq!(errors[0].field, "items[1].priority");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_invalid_field_is_listed() {
        let long = "x".repeat(257);
        let json = format!(
            r#"{{"items":[{{"title":"ok"}},{{"title":"ok"}},{{"title":"{long}","priority":"urgent","targets":["nope"],"tags":["","a"],"clickUrl":"javascript:alert(1)","ttlSeconds":5,"idempotencyKey":"has space","app":""}}]}}"#
        );
        let batch: BatchRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(
            names(&batch),
            [
                "items[2].app",
                "items[2].clickUrl",
                "items[2].idempotencyKey",
                "items[2].priority",
                "items[2].tags[0]",
                "items[2].targets[0]",
                "items[2].title",
                "items[2].ttlSeconds",
            ]
        );
    }

    #[test]
    fn batch_size_is_bounded() {
        let empty: BatchRequest = serde_json::from_str(r#"{"items":[]}"#).unwrap();
        assert_eq!(
            fields(&empty),
            [(
                "items".to_owned(),
                "must hold 1 to 500 notifications".to_owned()
            )]
        );
    }

    #[test]
    fn targets_forms() {
        let all: PublishRequest = request(r#"{"title":"t","targets":"all"}"#);
        assert!(fields(&all).is_empty());
        let word = request(r#"{"title":"t","targets":"everyone"}"#);
        assert_eq!(names(&word), ["targets"]);
        let empty = request(r#"{"title":"t","targets":[]}"#);
        assert_eq!(names(&empty), ["targets"]);
        let mixed = request(r#"{"title":"t","targets":["dev_01J00000000000000000000000", 5]}"#);
        assert_eq!(names(&mixed), ["targets[1]"]);
        assert!(serde_json::from_str::<PublishRequest>(r#"{"title":"t","targets":5}"#).is_err());
    }

    #[test]
    fn device_ids_are_checked_as_issued() {
        assert!(is_device_id("dev_01J00000000000000000000000"));
        assert!(!is_device_id("dev_01j00000000000000000000000"));
        assert!(!is_device_id("dev_81J00000000000000000000000"));
        assert!(!is_device_id("dev_01J0000000000000000000000U"));
        assert!(!is_device_id("tok_01J00000000000000000000000"));
        assert!(!is_device_id("dev_01J"));
    }

    #[test]
    fn control_characters_are_refused_in_titles_not_newlines_in_bodies() {
        let request = request(r#"{"title":"a\u0007b","body":"line\nline"}"#);
        assert_eq!(names(&request), ["title"]);
    }

    #[test]
    fn pair_requests() {
        let ok = PairRequest {
            code: "K7QF-2M9X".into(),
            name: "Pixel".into(),
            platform: "android".into(),
            app_version: None,
            groups: None,
            e2e_key: Some(crate::crypto::e2e::encode_key(&[7; 32])),
        };
        assert!(fields(&ok).is_empty());
        let bad = PairRequest {
            code: String::new(),
            name: String::new(),
            platform: "palm".into(),
            app_version: Some(String::new()),
            groups: Some(vec!["fine".into(), "not fine".into()]),
            e2e_key: Some("AAAA".into()),
        };
        assert_eq!(
            names(&bad),
            ["appVersion", "code", "e2eKey", "groups", "name", "platform"]
        );
    }

    #[test]
    fn remaining_publish_rules_each_name_their_field() {
        let errors = fields(&request(r#"{"title":"t","body":"bell\u0007"}"#));
        assert_eq!(errors[0].0, "body");
        assert!(errors[0].1.contains("control characters"));
        let tags: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        let json = serde_json::json!({"title": "t", "tags": tags}).to_string();
        assert_eq!(names(&request(&json)), ["tags"]);
        let errors = fields(&request(r#"{"title":"t","clickUrl":"not a url"}"#));
        assert_eq!(errors[0].1, "must be an absolute http or https URL");
        let many: Vec<String> = (0..=MAX_TARGETS)
            .map(|_| beepmyphone_actors::model::DeviceId::generate().to_string())
            .collect();
        let json = serde_json::json!({"title": "t", "targets": many}).to_string();
        let errors = fields(&request(&json));
        assert_eq!(errors[0].0, "targets");
        assert!(errors[0].1.contains("at most"));
        assert_eq!(
            text_rule("abc", 4, 4, false).unwrap_err().message(),
            "must be 4 characters long"
        );
    }

    #[test]
    fn device_patches_name_nested_fields() {
        let patch: PatchDeviceRequest = serde_json::from_str(
            r#"{"name":"","settings":{"minPriority":"loud","quietHours":{"start":"25:00","end":"25:00","timezone":"Mars/Olympus"}}}"#,
        )
        .unwrap();
        assert_eq!(
            names(&patch),
            [
                "name",
                "settings.minPriority",
                "settings.quietHours.end",
                "settings.quietHours.end",
                "settings.quietHours.start",
                "settings.quietHours.timezone"
            ]
        );
        let clear: PatchDeviceRequest =
            serde_json::from_str(r#"{"settings":{"quietHours":null}}"#).unwrap();
        assert!(fields(&clear).is_empty());
        assert!(matches!(
            clear.settings.and_then(|s| s.quiet_hours),
            Some(None)
        ));
    }

    #[test]
    fn queries_list_every_invalid_parameter() {
        let query: NotificationListQuery = serde_json::from_str(
            r#"{"deviceId":"x","status":"lost","priority":"p","app":"","since":"yesterday","until":"2026-01-01T00:00:00Z","limit":0,"cursor":""}"#,
        )
        .unwrap();
        assert_eq!(
            names(&query),
            ["app", "cursor", "deviceId", "limit", "priority", "since", "status"]
        );
        let devices: DeviceListQuery =
            serde_json::from_str(r#"{"status":"away","platform":"palm","limit":501}"#).unwrap();
        assert_eq!(names(&devices), ["limit", "platform", "status"]);
    }

    #[test]
    fn other_bodies() {
        let token: CreateTokenRequest =
            serde_json::from_str(r#"{"name":"","scope":"root"}"#).unwrap();
        assert_eq!(names(&token), ["name", "scope"]);
        let login: LoginRequest = serde_json::from_str(r#"{"username":"","password":""}"#).unwrap();
        assert_eq!(names(&login), ["password", "username"]);
        let code: PairingCodeRequest = serde_json::from_str(r#"{"ttlSeconds":5}"#).unwrap();
        assert_eq!(names(&code), ["ttlSeconds"]);
        let long = "x".repeat(4_097);
        let refresh: RefreshRequest =
            serde_json::from_str(&format!(r#"{{"refreshToken":"{long}"}}"#)).unwrap();
        assert_eq!(names(&refresh), ["refreshToken"]);
    }
}
