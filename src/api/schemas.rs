//! Request and response bodies, and the rules that turn requests into domain values.
//!
//! Requests are parsed with unknown fields refused, then checked field by field; one response
//! lists every invalid field. The rules are those of `docs/api.md`.

use beepmyphone_actors::model::{DeviceId, NotificationId, NotificationRecord, Priority};
use beepmyphone_actors::queue::Targets;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Most explicit targets in one notification.
pub const MAX_TARGETS: usize = 1_000;
/// Most items in one batch.
pub const MAX_BATCH: usize = 500;
/// Shortest and longest notification lifetime, in seconds.
pub const TTL_RANGE: std::ops::RangeInclusive<u64> = 60..=2_592_000;
/// Platforms a device may declare.
pub const PLATFORMS: [&str; 6] = ["ios", "android", "windows", "macos", "linux", "other"];

/// Collects field errors under a path prefix.
#[derive(Debug, Default)]
pub struct Errors {
    prefix: String,
    /// The errors so far.
    pub list: Vec<FieldError>,
}

impl Errors {
    /// Errors for fields under `prefix` (empty for top level).
    pub fn under(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            list: Vec::new(),
        }
    }

    /// Records that `field` is invalid.
    pub fn add(&mut self, field: &str, reason: impl Into<String>) {
        let field = if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.list.push(FieldError::new(field, reason));
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks a text field's length in characters and, unless `multiline`, the absence of control
/// characters.
pub fn check_text(
    errors: &mut Errors,
    field: &str,
    value: &str,
    min: usize,
    max: usize,
    multiline: bool,
) {
    let len = value.chars().count();
    if len < min || len > max {
        if min == max {
            errors.add(field, format!("must be {min} characters long"));
        } else if min == 0 {
            errors.add(field, format!("must be at most {max} characters long"));
        } else {
            errors.add(field, format!("must be {min} to {max} characters long"));
        }
    } else if multiline {
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            errors.add(
                field,
                "must not contain control characters other than newlines and tabs",
            );
        }
    } else if has_control(value) {
        errors.add(field, "must not contain control characters");
    }
}

/// `POST /notifications` and each item of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishRequest {
    /// 1–256 characters.
    pub title: String,
    /// Up to 4096 characters.
    #[serde(default)]
    pub body: String,
    /// 1–64 characters; default `api`.
    pub app: Option<String>,
    /// `low`, `normal`, `high` or `critical`.
    pub priority: Option<String>,
    /// `"all"` or a list of device ids.
    pub targets: Option<serde_json::Value>,
    /// Up to 10 tags of 1–32 characters.
    #[serde(default)]
    pub tags: Vec<String>,
    /// An http(s) URL.
    pub click_url: Option<String>,
    /// 60..2592000 seconds.
    pub ttl_seconds: Option<u64>,
    /// Up to 128 printable ASCII characters.
    pub idempotency_key: Option<String>,
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
    /// Applies the rules; `prefix` names the item in a batch (`items[3]`).
    pub fn validate(
        self,
        prefix: &str,
        now_ms: i64,
        default_ttl: u64,
    ) -> Result<ValidPublish, Vec<FieldError>> {
        let mut errors = Errors::under(prefix);
        check_text(&mut errors, "title", &self.title, 1, 256, false);
        check_text(&mut errors, "body", &self.body, 0, 4_096, true);
        let app = self.app.unwrap_or_else(|| "api".to_owned());
        check_text(&mut errors, "app", &app, 1, 64, false);
        let priority = match self.priority.as_deref() {
            None => Priority::Normal,
            Some(raw) => Priority::parse(raw).unwrap_or_else(|| {
                errors.add("priority", "must be one of low, normal, high, critical");
                Priority::Normal
            }),
        };
        let targets = parse_targets(&mut errors, self.targets);
        if self.tags.len() > 10 {
            errors.add("tags", "must have at most 10 tags");
        }
        for (i, tag) in self.tags.iter().enumerate() {
            check_text(&mut errors, &format!("tags[{i}]"), tag, 1, 32, false);
        }
        if let Some(url) = &self.click_url {
            match url::Url::parse(url) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https")
                        && url.len() <= 2_048
                        && parsed.host().is_some() => {}
                Ok(_) => errors.add(
                    "clickUrl",
                    "must be an http or https URL of at most 2048 characters",
                ),
                Err(_) => errors.add("clickUrl", "must be an absolute http or https URL"),
            }
        }
        let ttl = self.ttl_seconds.unwrap_or(default_ttl);
        if !TTL_RANGE.contains(&ttl) {
            errors.add("ttlSeconds", "must be between 60 and 2592000");
        }
        if let Some(key) = &self.idempotency_key {
            if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()) {
                errors.add(
                    "idempotencyKey",
                    "must be 1 to 128 printable ASCII characters",
                );
            }
        }
        if !errors.list.is_empty() {
            return Err(errors.list);
        }
        let ttl_ms = i64::try_from(ttl).unwrap_or(0) * 1_000;
        Ok(ValidPublish {
            record: NotificationRecord {
                id: NotificationId::generate(),
                title: self.title,
                body: self.body,
                app,
                priority,
                tags: self.tags,
                click_url: self.click_url,
                created_at: now_ms,
                expires_at: now_ms + ttl_ms,
            },
            targets,
            idempotency_key: self.idempotency_key,
        })
    }
}

fn parse_targets(errors: &mut Errors, raw: Option<serde_json::Value>) -> Targets {
    match raw {
        None => Targets::All,
        Some(serde_json::Value::String(s)) if s == "all" => Targets::All,
        Some(serde_json::Value::Array(items)) => {
            if items.is_empty() {
                errors.add("targets", "must name at least one device, or be \"all\"");
            } else if items.len() > MAX_TARGETS {
                errors.add(
                    "targets",
                    format!("must name at most {MAX_TARGETS} devices"),
                );
            }
            let mut ids = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str().and_then(DeviceId::parse) {
                    Some(id) => ids.push(id),
                    None => errors.add(&format!("targets[{i}]"), "must be a device id (dev_…)"),
                }
            }
            Targets::Devices(ids)
        }
        Some(_) => {
            errors.add("targets", "must be \"all\" or a list of device ids");
            Targets::All
        }
    }
}

/// `POST /notifications/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 500 notifications.
    pub items: Vec<PublishRequest>,
}

/// `202` body of a publish.
#[derive(Debug, Serialize, Deserialize)]
pub struct PublishResponse {
    /// The notification's id.
    pub id: String,
    /// Always `queued`.
    pub status: String,
    /// How many devices it was queued for.
    pub targets: usize,
}

/// `POST /pairing-codes`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairingCodeRequest {
    /// 60..3600; default from `auth.pairing_code_ttl_seconds`.
    pub ttl_seconds: Option<u64>,
}

/// `POST /devices/pair`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairRequest {
    /// The pairing code.
    pub code: String,
    /// 1–50 characters.
    pub name: String,
    /// One of [`PLATFORMS`].
    pub platform: String,
    /// Up to 32 characters.
    pub app_version: Option<String>,
}

impl PairRequest {
    /// Checks name, platform and version (the code is checked against the store).
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Errors::default();
        check_text(&mut errors, "name", &self.name, 1, 50, false);
        if !PLATFORMS.contains(&self.platform.as_str()) {
            errors.add(
                "platform",
                "must be one of ios, android, windows, macos, linux, other",
            );
        }
        if let Some(version) = &self.app_version {
            check_text(&mut errors, "appVersion", version, 1, 32, false);
        }
        if self.code.is_empty() || self.code.len() > 32 {
            errors.add("code", "must be a pairing code such as K7QF-2M9X");
        }
        if errors.list.is_empty() {
            Ok(())
        } else {
            Err(errors.list)
        }
    }
}

/// Tokens handed to a device when it pairs or refreshes.
#[derive(Debug, Serialize, Deserialize)]
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefreshRequest {
    /// The refresh token from pairing or the last refresh.
    pub refresh_token: String,
}

/// Quiet hours in a `PATCH /devices/{id}`.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursBody {
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`.
    pub end: String,
    /// An IANA time zone such as `Europe/Berlin`.
    pub timezone: String,
}

/// Device settings in a `PATCH /devices/{id}`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SettingsBody {
    /// Receives new notifications.
    pub enabled: Option<bool>,
    /// `low`..`critical`.
    pub min_priority: Option<String>,
    /// Quiet hours; `null` clears them.
    #[serde(default, deserialize_with = "double_option")]
    pub quiet_hours: Option<Option<QuietHoursBody>>,
}

/// `PATCH /devices/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchDeviceRequest {
    /// 1–50 characters.
    pub name: Option<String>,
    /// Delivery settings.
    pub settings: Option<SettingsBody>,
}

fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// `POST /tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// 1–64 characters.
    pub name: String,
    /// `admin` or `publish`.
    pub scope: String,
}

/// A page of a list.
#[derive(Debug, Serialize, Deserialize)]
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

    fn request(json: &str) -> PublishRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_full_request_validates() {
        let valid = request(
            r#"{"title":"Build finished","body":"main is green","app":"CI","priority":"high",
                "targets":["dev_01J00000000000000000000000"],"tags":["ci"],"clickUrl":"https://ci.example/123",
                "ttlSeconds":86400,"idempotencyKey":"build-123"}"#,
        )
        .validate("", 1_000, 604_800)
        .unwrap();
        assert_eq!(valid.record.priority, Priority::High);
        assert_eq!(valid.record.expires_at, 1_000 + 86_400_000);
        assert!(matches!(valid.targets, Targets::Devices(ref ids) if ids.len() == 1));
    }

    #[test]
    fn every_invalid_field_is_listed() {
        let long = "x".repeat(257);
        let json = format!(
            r#"{{"title":"{long}","priority":"urgent","targets":["nope"],"tags":["","a"],"clickUrl":"javascript:alert(1)","ttlSeconds":5,"idempotencyKey":"has space","app":""}}"#
        );
        let errors = request(&json).validate("items[2]", 0, 604_800).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "items[2].title",
                "items[2].app",
                "items[2].priority",
                "items[2].targets[0]",
                "items[2].tags[0]",
                "items[2].clickUrl",
                "items[2].ttlSeconds",
                "items[2].idempotencyKey"
            ]
        );
    }

    #[test]
    fn targets_forms() {
        let mut errors = Errors::default();
        assert_eq!(
            parse_targets(&mut errors, Some(serde_json::json!("all"))),
            Targets::All
        );
        assert_eq!(parse_targets(&mut errors, None), Targets::All);
        assert!(errors.list.is_empty());
        parse_targets(&mut errors, Some(serde_json::json!("everyone")));
        parse_targets(&mut errors, Some(serde_json::json!([])));
        assert_eq!(errors.list.len(), 2);
    }

    #[test]
    fn control_characters_are_refused_in_titles_not_newlines_in_bodies() {
        let errors = request(r#"{"title":"a\u0007b","body":"line\nline"}"#)
            .validate("", 0, 604_800)
            .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "title");
    }

    #[test]
    fn pair_requests() {
        let ok = PairRequest {
            code: "K7QF-2M9X".into(),
            name: "Pixel".into(),
            platform: "android".into(),
            app_version: None,
        };
        assert!(ok.validate().is_ok());
        let bad = PairRequest {
            code: String::new(),
            name: String::new(),
            platform: "palm".into(),
            app_version: Some(String::new()),
        };
        assert_eq!(bad.validate().unwrap_err().len(), 4);
    }

    #[test]
    fn remaining_publish_rules_each_name_their_field() {
        let errors = request(r#"{"title":"t","body":"bell\u0007"}"#)
            .validate("", 0, 604_800)
            .unwrap_err();
        assert_eq!(errors[0].field, "body");
        assert!(errors[0].reason.contains("control characters"));
        let tags: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
        let json = serde_json::json!({"title": "t", "tags": tags}).to_string();
        let errors = request(&json).validate("", 0, 604_800).unwrap_err();
        assert_eq!(errors[0].field, "tags");
        let errors = request(r#"{"title":"t","clickUrl":"not a url"}"#)
            .validate("", 0, 604_800)
            .unwrap_err();
        assert_eq!(errors[0].reason, "must be an absolute http or https URL");
        let many: Vec<String> = (0..=MAX_TARGETS)
            .map(|_| DeviceId::generate().to_string())
            .collect();
        let json = serde_json::json!({"title": "t", "targets": many}).to_string();
        let errors = request(&json).validate("", 0, 604_800).unwrap_err();
        assert_eq!(errors[0].field, "targets");
        assert!(errors[0].reason.contains("at most"));
        let mut errors = Errors::default();
        check_text(&mut errors, "code", "abc", 4, 4, false);
        assert_eq!(errors.list[0].reason, "must be 4 characters long");
    }
}
