//! Queries on `devices`.

use std::collections::HashMap;

use super::db::{Db, WriteTransaction};
use chrono::NaiveTime;
use diesel::dsl::count_star;
use diesel::prelude::*;

use beepmyphone_actors::model::{DeviceId, DevicePolicy, Priority, QuietHours};

use super::schema::{deliveries, devices};
use super::sealed::{open_opt, open_text};
use super::StoreError;
use crate::crypto::{fields, Cipher, Purpose};
use crate::domain::DeliveryStatus;

/// A device, as handlers and the queue see it (opened).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    /// `dev_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// `ios`, `android`, …
    pub platform: String,
    /// The client app's version, if it said.
    pub app_version: Option<String>,
    /// Receives new notifications.
    pub enabled: bool,
    /// Minimum priority, stored as [`Priority::as_i16`].
    pub min_priority: i16,
    /// Quiet hours start, `HH:MM`.
    pub quiet_start: Option<String>,
    /// Quiet hours end, `HH:MM`.
    pub quiet_end: Option<String>,
    /// Quiet hours time zone (IANA name).
    pub quiet_tz: Option<String>,
    /// Paired at, epoch ms.
    pub created_at: i64,
    /// Last socket activity, epoch ms.
    pub last_seen_at: Option<i64>,
    /// Access tokens issued before this instant (epoch ms) are refused.
    pub tokens_valid_after: i64,
    /// The groups it belongs to, sorted, without repeats.
    pub groups: Vec<String>,
    /// Its X25519 public key for end-to-end encryption, if it registered one (stored as it is:
    /// public by design, see `crate::crypto::e2e`).
    pub e2e_public_key: Option<[u8; 32]>,
}

impl DeviceRow {
    /// An enabled device with no settings, for tests.
    #[cfg(test)]
    pub(crate) fn for_tests(id: &str, name: &str, platform: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            platform: platform.to_owned(),
            app_version: None,
            enabled: true,
            min_priority: 0,
            quiet_start: None,
            quiet_end: None,
            quiet_tz: None,
            created_at: 0,
            last_seen_at: None,
            tokens_valid_after: 0,
            groups: Vec::new(),
            e2e_public_key: None,
        }
    }

    /// The typed id.
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_trusted(self.id.as_str())
    }

    /// The quiet hours: `None` if none are set, [`StoreError::Corrupt`] if they are set only in
    /// part or a value does not parse (the API only ever writes all three, valid, or none).
    pub fn quiet_hours(&self) -> Result<Option<QuietHours>, StoreError> {
        let (start, end, tz) = match (&self.quiet_start, &self.quiet_end, &self.quiet_tz) {
            (None, None, None) => return Ok(None),
            (Some(start), Some(end), Some(tz)) => (start, end, tz),
            _ => {
                return Err(self.corrupt(
                    "quiet_start, quiet_end, quiet_tz",
                    "quiet hours set only in part",
                ))
            }
        };
        let time = |column: &str, raw: &str| {
            NaiveTime::parse_from_str(raw, "%H:%M")
                .map_err(|e| self.corrupt(column, format_args!("{raw:?} is not HH:MM: {e}")))
        };
        let start = time("quiet_start", start)?;
        let end = time("quiet_end", end)?;
        let timezone = tz.parse().map_err(|_| {
            self.corrupt("quiet_tz", format_args!("{tz:?} is not an IANA time zone"))
        })?;
        Ok(Some(QuietHours {
            start,
            end,
            timezone,
        }))
    }

    /// The minimum priority; [`StoreError::Corrupt`] for a value no writer stores.
    pub fn min_priority(&self) -> Result<Priority, StoreError> {
        Priority::from_i16(self.min_priority).ok_or_else(|| {
            self.corrupt(
                "min_priority",
                format_args!("unknown priority {}", self.min_priority),
            )
        })
    }

    /// The delivery policy the queue applies; [`StoreError::Corrupt`] if the row's minimum priority
    /// or quiet hours are.
    pub fn policy(&self) -> Result<DevicePolicy, StoreError> {
        Ok(DevicePolicy {
            enabled: self.enabled,
            min_priority: self.min_priority()?,
            quiet_hours: self.quiet_hours()?,
            groups: self.groups.clone(),
        })
    }

    fn corrupt(&self, column: &str, what: impl std::fmt::Display) -> StoreError {
        StoreError::corrupt("devices", column, &self.id, what)
    }
}

/// Settings changes from `PATCH /devices/{id}`; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct DeviceChanges {
    /// New name.
    pub name: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New minimum priority.
    pub min_priority: Option<i16>,
    /// Quiet hours start (`Some(None)` clears).
    pub quiet_start: Option<Option<String>>,
    /// Quiet hours end.
    pub quiet_end: Option<Option<String>>,
    /// Quiet hours zone.
    pub quiet_tz: Option<Option<String>>,
    /// The new set of groups (replaces the old one).
    pub groups: Option<Vec<String>>,
    /// The end-to-end public key (`Some(None)` clears).
    pub e2e_public_key: Option<Option<[u8; 32]>>,
}

impl DeviceChanges {
    fn apply(self, row: &mut DeviceRow) {
        if let Some(name) = self.name {
            row.name = name;
        }
        if let Some(enabled) = self.enabled {
            row.enabled = enabled;
        }
        if let Some(min) = self.min_priority {
            row.min_priority = min;
        }
        if let Some(start) = self.quiet_start {
            row.quiet_start = start;
        }
        if let Some(end) = self.quiet_end {
            row.quiet_end = end;
        }
        if let Some(tz) = self.quiet_tz {
            row.quiet_tz = tz;
        }
        if let Some(groups) = self.groups {
            row.groups = normalise_groups(groups);
        }
        if let Some(key) = self.e2e_public_key {
            row.e2e_public_key = key;
        }
    }
}

/// Group names sorted and without repeats, as [`DevicePolicy::in_group`] needs them.
pub fn normalise_groups(mut groups: Vec<String>) -> Vec<String> {
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// A device row as stored: name, platform, app version and quiet hours sealed under the devices
/// key (see [`crate::crypto`]).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = devices, treat_none_as_null = true)]
pub struct StoredDevice {
    id: String,
    name: Vec<u8>,
    platform: Vec<u8>,
    app_version: Option<Vec<u8>>,
    enabled: bool,
    min_priority: i16,
    quiet_start: Option<Vec<u8>>,
    quiet_end: Option<Vec<u8>>,
    quiet_tz: Option<Vec<u8>>,
    created_at: i64,
    last_seen_at: Option<i64>,
    tokens_valid_after: i64,
    key_id: Option<i64>,
    platform_index: Option<Vec<u8>>,
    groups: Option<Vec<u8>>,
    /// Not sealed: a public key.
    e2e_public_key: Option<Vec<u8>>,
}

impl StoredDevice {
    /// Seals `row` under the current devices key.
    pub fn seal(row: &DeviceRow, cipher: &Cipher) -> Result<Self, StoreError> {
        let crypto = StoreError::crypto;
        let sealer = cipher.sealer(Purpose::Devices).map_err(crypto)?;
        let id = row.id.as_str();
        let opt = |field, value: &Option<String>| sealer.seal_opt(field, id, value.as_deref());
        Ok(Self {
            id: row.id.clone(),
            name: sealer
                .seal(fields::DEVICE_NAME, id, row.name.as_bytes())
                .map_err(crypto)?,
            platform: sealer
                .seal(fields::DEVICE_PLATFORM, id, row.platform.as_bytes())
                .map_err(crypto)?,
            app_version: opt(fields::DEVICE_APP_VERSION, &row.app_version).map_err(crypto)?,
            enabled: row.enabled,
            min_priority: row.min_priority,
            quiet_start: opt(fields::DEVICE_QUIET_START, &row.quiet_start).map_err(crypto)?,
            quiet_end: opt(fields::DEVICE_QUIET_END, &row.quiet_end).map_err(crypto)?,
            quiet_tz: opt(fields::DEVICE_QUIET_TZ, &row.quiet_tz).map_err(crypto)?,
            created_at: row.created_at,
            last_seen_at: row.last_seen_at,
            tokens_valid_after: row.tokens_valid_after,
            key_id: Some(sealer.key_id()),
            platform_index: Some(
                cipher
                    .blind_index(fields::INDEX_PLATFORM, &row.platform)
                    .map_err(crypto)?,
            ),
            groups: if row.groups.is_empty() {
                None
            } else {
                let json = serde_json::to_string(&row.groups)
                    .map_err(|e| StoreError::Other(e.to_string()))?;
                Some(
                    sealer
                        .seal(fields::DEVICE_GROUPS, id, json.as_bytes())
                        .map_err(crypto)?,
                )
            },
            e2e_public_key: row.e2e_public_key.map(|key| key.to_vec()),
        })
    }

    /// Opens it; [`StoreError::Corrupt`] for a field that does not open.
    pub fn open(&self, cipher: &Cipher) -> Result<DeviceRow, StoreError> {
        let id = self.id.as_str();
        let text = |field, bytes: &[u8]| open_text(cipher, field, id, self.key_id, bytes);
        let opt = |field, bytes: &Option<Vec<u8>>| {
            open_opt(cipher, field, id, self.key_id, bytes.as_deref())
        };
        Ok(DeviceRow {
            id: self.id.clone(),
            name: text(fields::DEVICE_NAME, &self.name)?,
            platform: text(fields::DEVICE_PLATFORM, &self.platform)?,
            app_version: opt(fields::DEVICE_APP_VERSION, &self.app_version)?,
            enabled: self.enabled,
            min_priority: self.min_priority,
            quiet_start: opt(fields::DEVICE_QUIET_START, &self.quiet_start)?,
            quiet_end: opt(fields::DEVICE_QUIET_END, &self.quiet_end)?,
            quiet_tz: opt(fields::DEVICE_QUIET_TZ, &self.quiet_tz)?,
            created_at: self.created_at,
            last_seen_at: self.last_seen_at,
            tokens_valid_after: self.tokens_valid_after,
            groups: match opt(fields::DEVICE_GROUPS, &self.groups)? {
                None => Vec::new(),
                Some(json) => serde_json::from_str::<Vec<String>>(&json)
                    .map(normalise_groups)
                    .map_err(|e| {
                        StoreError::corrupt(
                            "devices",
                            "groups",
                            id,
                            format_args!("not a list of names: {e}"),
                        )
                    })?,
            },
            e2e_public_key: self
                .e2e_public_key
                .as_deref()
                .map(<[u8; 32]>::try_from)
                .transpose()
                .map_err(|_| {
                    StoreError::corrupt("devices", "e2e_public_key", id, "not 32 bytes")
                })?,
        })
    }

    /// The data key that sealed it (`None`: plaintext from before encryption).
    pub fn key_id(&self) -> Option<i64> {
        self.key_id
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Inserts a device, sealed.
pub fn insert(conn: &mut Db, cipher: &Cipher, row: &DeviceRow) -> Result<(), StoreError> {
    let stored = StoredDevice::seal(row, cipher)?;
    diesel::insert_into(devices::table)
        .values(&stored)
        .execute(conn)?;
    Ok(())
}

/// One device, opened.
pub fn get(conn: &mut Db, cipher: &Cipher, id: &str) -> Result<Option<DeviceRow>, StoreError> {
    devices::table
        .find(id)
        .select(StoredDevice::as_select())
        .first(conn)
        .optional()?
        .map(|stored| stored.open(cipher))
        .transpose()
}

/// When the device's access tokens start to count (`tokens_valid_after`, epoch ms), if it exists:
/// the per-request check, which opens nothing.
pub fn tokens_valid_after(conn: &mut Db, id: &str) -> QueryResult<Option<i64>> {
    devices::table
        .find(id)
        .select(devices::tokens_valid_after)
        .first(conn)
        .optional()
}

/// A page of devices in id order, after `after`, optionally of one platform (compared by its
/// blind index).
pub fn list(
    conn: &mut Db,
    cipher: &Cipher,
    platform: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<DeviceRow>, StoreError> {
    let mut query = devices::table
        .select(StoredDevice::as_select())
        .order(devices::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(platform) = platform {
        let index = cipher
            .blind_index(fields::INDEX_PLATFORM, platform)
            .map_err(StoreError::crypto)?;
        query = query.filter(devices::platform_index.eq(index));
    }
    if let Some(after) = after {
        query = query.filter(devices::id.gt(after.to_owned()));
    }
    query
        .load::<StoredDevice>(conn)?
        .iter()
        .map(|stored| stored.open(cipher))
        .collect()
}

/// Every device, for the queue: each opened on its own, so one that does not open is reported
/// without hiding the others.
pub fn all(conn: &mut Db, cipher: &Cipher) -> QueryResult<Vec<Result<DeviceRow, StoreError>>> {
    Ok(devices::table
        .select(StoredDevice::as_select())
        .load::<StoredDevice>(conn)?
        .iter()
        .map(|stored| stored.open(cipher))
        .collect())
}

/// Applies settings changes, sealing the whole row again under the current key (so the row's
/// fields stay under one key); returns the updated row, or `None` if there is no such device.
pub fn update(
    conn: &mut Db,
    cipher: &Cipher,
    id: &str,
    changes: DeviceChanges,
) -> Result<Option<DeviceRow>, StoreError> {
    conn.immediate_transaction(|conn| {
        let Some(mut row) = get(conn, cipher, id)? else {
            return Ok(None);
        };
        changes.apply(&mut row);
        let stored = StoredDevice::seal(&row, cipher)?;
        diesel::update(devices::table.find(id))
            .set(&stored)
            .execute(conn)?;
        Ok(Some(row))
    })
}

/// Deletes a device (its tokens and deliveries cascade); whether it existed.
pub fn delete(conn: &mut Db, id: &str) -> QueryResult<bool> {
    diesel::delete(devices::table.find(id))
        .execute(conn)
        .map(|n| n > 0)
}

/// Refuses every access token of the device issued before `now` (epoch ms).
pub fn revoke_tokens(conn: &mut Db, id: &str, now: i64) -> QueryResult<()> {
    diesel::update(devices::table.find(id))
        .set(devices::tokens_valid_after.eq(now))
        .execute(conn)
        .map(|_| ())
}

/// Refuses every token of the device issued until `now` (access tokens by its "not before" time,
/// refresh tokens by family) and disables it, in one transaction; whether it exists.
pub fn revoke(conn: &mut Db, id: &str, now: i64) -> QueryResult<bool> {
    conn.immediate_transaction(|conn| {
        let found = diesel::update(devices::table.find(id))
            .set((
                devices::enabled.eq(false),
                devices::tokens_valid_after.eq(now),
            ))
            .execute(conn)?;
        if found == 0 {
            return Ok(false);
        }
        super::tokens::revoke_families_of_device(conn, id, now)?;
        Ok(true)
    })
}

/// Records socket activity.
pub fn touch(conn: &mut Db, id: &str, at: i64) -> QueryResult<()> {
    diesel::update(devices::table.find(id))
        .set(devices::last_seen_at.eq(at))
        .execute(conn)
        .map(|_| ())
}

/// Delivery counts of one device, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryCounts {
    /// Waiting to be sent.
    pub queued: i64,
    /// Sent, not acknowledged.
    pub sent: i64,
    /// Acknowledged.
    pub acked: i64,
    /// Expired unacknowledged.
    pub expired: i64,
}

/// Delivery counts for these devices.
pub fn delivery_counts(
    conn: &mut Db,
    ids: &[String],
) -> QueryResult<HashMap<String, DeliveryCounts>> {
    let rows: Vec<(String, DeliveryStatus, i64)> = deliveries::table
        .filter(deliveries::device_id.eq_any(ids))
        .group_by((deliveries::device_id, deliveries::status))
        .select((deliveries::device_id, deliveries::status, count_star()))
        .load(conn)?;
    let mut out: HashMap<String, DeliveryCounts> = HashMap::new();
    for (device, status, n) in rows {
        let counts = out.entry(device).or_default();
        match status {
            DeliveryStatus::Queued => counts.queued = n,
            DeliveryStatus::Sent => counts.sent = n,
            DeliveryStatus::Acked => counts.acked = n,
            DeliveryStatus::Expired => counts.expired = n,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> DeviceRow {
        DeviceRow {
            id: "dev_corrupt".into(),
            name: "d".into(),
            platform: "linux".into(),
            app_version: None,
            enabled: true,
            min_priority: Priority::High.as_i16(),
            quiet_start: Some("22:00".into()),
            quiet_end: Some("07:00".into()),
            quiet_tz: Some("Europe/Berlin".into()),
            created_at: 0,
            last_seen_at: None,
            tokens_valid_after: 0,
            groups: vec!["ops".into()],
            e2e_public_key: None,
        }
    }

    fn corrupt_message(result: Result<DevicePolicy, StoreError>) -> String {
        match result {
            Err(StoreError::Corrupt(message)) => message,
            other => panic!("expected a corrupt-row error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_row_gives_its_policy() {
        let policy = row().policy().unwrap();
        assert_eq!(policy.min_priority, Priority::High);
        let quiet = policy.quiet_hours.unwrap();
        assert_eq!(quiet.timezone, chrono_tz::Europe::Berlin);
        let none = DeviceRow {
            quiet_start: None,
            quiet_end: None,
            quiet_tz: None,
            ..row()
        };
        assert!(none.policy().unwrap().quiet_hours.is_none());
    }

    #[test]
    fn an_unknown_priority_is_an_error_not_normal() {
        let bad = DeviceRow {
            min_priority: 9,
            ..row()
        };
        let message = corrupt_message(bad.policy());
        assert!(message.contains("devices.min_priority"), "{message}");
        assert!(message.contains("dev_corrupt"), "{message}");
        assert!(message.contains('9'), "{message}");
    }

    #[test]
    fn a_time_zone_that_does_not_parse_is_an_error_not_no_quiet_hours() {
        let bad = DeviceRow {
            quiet_tz: Some("Mars/Olympus".into()),
            ..row()
        };
        let message = corrupt_message(bad.policy());
        assert!(message.contains("devices.quiet_tz"), "{message}");
        assert!(message.contains("dev_corrupt"), "{message}");
        assert!(matches!(bad.quiet_hours(), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn bad_or_partial_quiet_hours_are_errors() {
        let bad_time = DeviceRow {
            quiet_start: Some("25:00".into()),
            ..row()
        };
        assert!(corrupt_message(bad_time.policy()).contains("devices.quiet_start"));
        let partial = DeviceRow {
            quiet_tz: None,
            ..row()
        };
        assert!(corrupt_message(partial.policy()).contains("only in part"));
    }
}
