//! Domain types shared by the actors and the HTTP layer: identifiers, priorities, the notification
//! as stored and as a device sees it, and the per-device delivery policy.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::trace::TraceId;

/// A monotonic ULID: ids made in the same millisecond still sort in creation order.
fn next_ulid() -> ulid::Ulid {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut guard = GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // An overflow of the random part within one millisecond (2^80 ids) falls back to a plain ULID.
    guard
        .get_or_insert_with(ulid::Generator::new)
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::new())
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id: the prefix and a ULID (time-ordered, 80 random bits), strictly
            /// increasing within this process even inside one millisecond.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, next_ulid()).into())
            }

            /// Parses an id, checking its prefix and ULID body; `None` if it is not one.
            pub fn parse(raw: &str) -> Option<Self> {
                let body = raw.strip_prefix($prefix)?;
                ulid::Ulid::from_string(body).ok()?;
                Some(Self(raw.into()))
            }

            /// Wraps a value read back from the store, where it was validated on the way in.
            pub fn from_trusted(raw: impl Into<Arc<str>>) -> Self {
                Self(raw.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// When the id was generated (its ULID's time), epoch milliseconds; `None` if its
            /// body is not a ULID (a value from an older store).
            pub fn created_ms(&self) -> Option<i64> {
                let body = self.0.strip_prefix($prefix)?;
                let ulid = ulid::Ulid::from_string(body).ok()?;
                i64::try_from(ulid.timestamp_ms()).ok()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A paired device: `dev_` and a ULID.
    DeviceId,
    "dev_"
);
prefixed_id!(
    /// A notification: `ntf_` and a ULID.
    NotificationId,
    "ntf_"
);

/// How urgent a notification is; delivery order is priority first, then age.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Delivered last.
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Delivered before normal.
    High = 2,
    /// Delivered first, and even during quiet hours.
    Critical = 3,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Parses a wire name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }

    /// The stored integer form.
    pub fn as_i16(self) -> i16 {
        self as i16
    }

    /// From the stored integer form; `None` for a value [`Priority::as_i16`] never produces (a
    /// corrupt row is the caller's error to report, never read as some default priority).
    pub const fn from_i16(value: i16) -> Option<Self> {
        match value {
            0 => Some(Priority::Low),
            1 => Some(Priority::Normal),
            2 => Some(Priority::High),
            3 => Some(Priority::Critical),
            _ => None,
        }
    }
}

/// A notification as it is stored, already validated.
#[derive(Clone, Debug, PartialEq)]
pub struct NotificationRecord {
    /// Its public id.
    pub id: NotificationId,
    /// 1–256 characters.
    pub title: String,
    /// Up to 4096 characters.
    pub body: String,
    /// The source application, 1–64 characters.
    pub app: String,
    /// Delivery priority.
    pub priority: Priority,
    /// Up to 10 short labels.
    pub tags: Vec<String>,
    /// An http(s) URL opened when the notification is tapped.
    pub click_url: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// After this instant the notification is no longer delivered.
    pub expires_at: i64,
    /// The trace of the request that published it (W3C `traceparent`), for the log.
    pub trace_id: Option<TraceId>,
    /// An end-to-end envelope (base64url) only the target device can open; the title is then a
    /// fixed placeholder and the body, tags and click URL are empty.
    pub encrypted: Option<String>,
}

/// The device's view of a notification, as serialised into `notifications` frames.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceView<'a> {
    id: &'a NotificationId,
    title: &'a str,
    body: &'a str,
    app: &'a str,
    priority: Priority,
    tags: &'a [String],
    click_url: Option<&'a str>,
    created_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypted: Option<&'a str>,
}

/// Formats epoch milliseconds as an RFC 3339 UTC timestamp with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl NotificationRecord {
    /// The JSON object a device receives for this notification.
    pub fn device_json(&self) -> Bytes {
        let view = DeviceView {
            id: &self.id,
            title: &self.title,
            body: &self.body,
            app: &self.app,
            priority: self.priority,
            tags: &self.tags,
            click_url: self.click_url.as_deref(),
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            encrypted: self.encrypted.as_deref(),
        };
        // unwrap: serialising plain strings and numbers into a Vec cannot fail.
        #[allow(clippy::unwrap_used)]
        Bytes::from(serde_json::to_vec(&view).unwrap())
    }
}

/// A notification as the queue holds it: what it needs to order, expire and send it.
#[derive(Debug)]
pub struct QueuedNotification {
    /// Its public id.
    pub id: NotificationId,
    /// Store sequence: age order within a priority.
    pub seq: i64,
    /// Delivery priority.
    pub priority: Priority,
    /// Expiry instant, epoch milliseconds.
    pub expires_at: i64,
    /// When it was published, epoch milliseconds (for the publish-to-deliver latency).
    pub created_at: i64,
    /// The pre-serialised device view (a JSON object).
    pub payload: Bytes,
    /// The trace of the request that published it, for the delivery and ack log lines.
    pub trace_id: Option<TraceId>,
}

/// Quiet hours: a daily local-time window in which only critical notifications are delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct QuietHours {
    /// Local start time.
    pub start: NaiveTime,
    /// Local end time; before `start` means the window crosses midnight.
    pub end: NaiveTime,
    /// The device owner's time zone.
    pub timezone: chrono_tz::Tz,
}

impl QuietHours {
    /// Whether `now_ms` falls inside the window.
    pub fn contains(&self, now_ms: i64) -> bool {
        let Some(now) = Utc.timestamp_millis_opt(now_ms).single() else {
            return false;
        };
        let local = now.with_timezone(&self.timezone).time();
        if self.start <= self.end {
            local >= self.start && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }
}

/// What a device accepts, as the queue applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct DevicePolicy {
    /// A disabled device receives nothing new.
    pub enabled: bool,
    /// Notifications below this priority are not queued for the device.
    pub min_priority: Priority,
    /// Everything below `critical` is held back inside this window.
    pub quiet_hours: Option<QuietHours>,
    /// The named groups ("topics") it belongs to, sorted, without repeats: a publish to
    /// `group:NAME` reaches every member.
    pub groups: Vec<String>,
}

impl Default for DevicePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            min_priority: Priority::Low,
            quiet_hours: None,
            groups: Vec::new(),
        }
    }
}

impl DevicePolicy {
    /// Whether a new notification of `priority` is queued for this device.
    pub fn accepts(&self, priority: Priority) -> bool {
        self.enabled && priority >= self.min_priority
    }

    /// Whether the device belongs to the group `name`.
    pub fn in_group(&self, name: &str) -> bool {
        self.groups
            .binary_search_by(|g| g.as_str().cmp(name))
            .is_ok()
    }

    /// Whether a queued notification of `priority` may be sent at `now_ms`.
    pub fn may_send(&self, priority: Priority, now_ms: i64) -> bool {
        priority == Priority::Critical
            || !self
                .quiet_hours
                .as_ref()
                .is_some_and(|q| q.contains(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_foreign_prefixes() {
        let id = DeviceId::generate();
        assert_eq!(DeviceId::parse(id.as_str()), Some(id.clone()));
        assert!(DeviceId::parse(&id.as_str().replace("dev_", "ntf_")).is_none());
        assert!(DeviceId::parse("dev_../../etc").is_none());
        assert!(NotificationId::parse("ntf_").is_none());
    }

    #[test]
    fn priorities_order_and_parse() {
        assert!(Priority::Critical > Priority::High && Priority::High > Priority::Normal);
        assert_eq!(Priority::parse("high"), Some(Priority::High));
        assert_eq!(Priority::parse("urgent"), None);
        for p in Priority::ALL {
            assert_eq!(Priority::from_i16(p.as_i16()), Some(p));
        }
        for unknown in [-1, 4, 9, i16::MAX, i16::MIN] {
            assert_eq!(Priority::from_i16(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn quiet_hours_across_midnight() {
        let q = QuietHours {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap_or_default(),
            end: NaiveTime::from_hms_opt(7, 0, 0).unwrap_or_default(),
            timezone: chrono_tz::Europe::Berlin,
        };
        // 2026-01-15 23:30 Berlin = 22:30 UTC
        let late = Utc
            .with_ymd_and_hms(2026, 1, 15, 22, 30, 0)
            .unwrap()
            .timestamp_millis();
        let noon = Utc
            .with_ymd_and_hms(2026, 1, 15, 11, 0, 0)
            .unwrap()
            .timestamp_millis();
        assert!(q.contains(late));
        assert!(!q.contains(noon));
        let policy = DevicePolicy {
            quiet_hours: Some(q),
            ..DevicePolicy::default()
        };
        assert!(!policy.may_send(Priority::High, late));
        assert!(policy.may_send(Priority::Critical, late));
        assert!(policy.may_send(Priority::Low, noon));
    }

    #[test]
    fn device_json_uses_camel_case_and_rfc3339() {
        let record = NotificationRecord {
            id: NotificationId::generate(),
            title: "t".into(),
            body: "b".into(),
            app: "api".into(),
            priority: Priority::High,
            tags: vec!["x".into()],
            click_url: Some("https://example.com".into()),
            created_at: 0,
            expires_at: 1_000,
            trace_id: None,
            encrypted: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&record.device_json()).unwrap();
        assert!(v.get("encrypted").is_none(), "skipped when absent");
        let sealed = NotificationRecord {
            encrypted: Some("AQ".into()),
            id: record.id.clone(),
            title: record.title.clone(),
            body: String::new(),
            app: record.app.clone(),
            tags: Vec::new(),
            click_url: None,
            ..record
        };
        let e: serde_json::Value = serde_json::from_slice(&sealed.device_json()).unwrap();
        assert_eq!(e["encrypted"], "AQ");
        assert_eq!(v["clickUrl"], "https://example.com");
        assert_eq!(v["priority"], "high");
        assert_eq!(v["expiresAt"], "1970-01-01T00:00:01.000Z");
    }
}
