//! The re-encryption job's queries: which rows a data key still covers, which rows are stale
//! (sealed under a key older than their purpose's current one, or plaintext from before
//! encryption), and moving a batch of them to the current keys.
//!
//! Key ids only grow, and each purpose's current key is its newest, so "stale" is `key_id IS NULL
//! OR key_id < current`: two range scans of the `key_id` index. A batch is one immediate
//! transaction per table (so it never interleaves with a device update), and each row records its
//! new key in the same statement that stores its new values: a crash leaves every row under the
//! old key or the new one, and the next run finds what is left.

use super::db::{insert_or_ignore, Db, Kind, WriteTransaction};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary};

use super::devices::StoredDevice;
use super::notifications::NotificationRow;
use super::schema::{devices, notification_tags, notifications};
use super::sealed::open_text;
use super::StoreError;
use crate::crypto::{fields, Cipher, Purpose};

/// Where the job is: rows it could not open are skipped until the job counts again.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    /// Last notification seq looked at.
    pub notification: i64,
    /// Last device id looked at.
    pub device: String,
}

#[derive(QueryableByName)]
struct Checkpoint {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    busy: i32,
}

/// Sealing a plaintext row (from before encryption) sets the database's `user_version` to this,
/// in the same transaction: the old value may linger in free pages and the WAL until [`scrub`],
/// and the mark survives a crash, so the scrub is never skipped.
const SCRUB_PENDING: i64 = 1;

fn mark_scrub_pending(conn: &mut Db) -> Result<(), StoreError> {
    use diesel::connection::SimpleConnection;
    // A PostgreSQL store never held plaintext rows: it starts with encryption.
    if conn.kind() == Kind::Sqlite {
        conn.batch_execute(&format!("PRAGMA user_version = {SCRUB_PENDING}"))?;
    }
    Ok(())
}

/// Whether sealed plaintext rows still have to be scrubbed from the files (SQLite only).
pub fn scrub_pending(conn: &mut Db) -> Result<bool, StoreError> {
    if conn.kind() != Kind::Sqlite {
        return Ok(false);
    }
    let version: Count =
        diesel::sql_query("SELECT user_version AS n FROM pragma_user_version").get_result(conn)?;
    Ok(version.n == SCRUB_PENDING)
}

/// Rewrites the database without its free pages (`VACUUM`) and empties the WAL
/// (`wal_checkpoint(TRUNCATE)`), so that plaintext from before encryption, overwritten by the job,
/// is gone from the files too; then clears the mark. Run once, when the job has sealed the last
/// plaintext rows. A checkpoint that readers keep busy is an error, and the scrub runs again on
/// the job's next pass.
pub fn scrub(conn: &mut Db) -> Result<(), StoreError> {
    use diesel::connection::SimpleConnection;
    if conn.kind() != Kind::Sqlite {
        return Ok(());
    }
    conn.batch_execute("VACUUM")?;
    let checkpoint: Checkpoint =
        diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").get_result(conn)?;
    if checkpoint.busy != 0 {
        return Err(StoreError::Other(
            "the WAL could not be emptied after sealing the plaintext rows (readers were busy); trying again on the next pass".into(),
        ));
    }
    conn.batch_execute("PRAGMA user_version = 0")?;
    Ok(())
}

/// What a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Rows now under the current key.
    pub moved: u64,
    /// Rows that did not open (left as they are).
    pub failed: u64,
    /// Whether the batch was full (more may be left).
    pub full: bool,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn current_id(cipher: &Cipher, purpose: Purpose) -> Result<i64, StoreError> {
    cipher
        .snapshot()
        .current(purpose)
        .map(|k| i64::from(k.id))
        .ok_or_else(|| StoreError::Other(format!("no current {} key", purpose.as_str())))
}

/// Rows sealed under `key_id` (of `purpose`): what keeps it from retiring.
pub fn rows_under(conn: &mut Db, purpose: Purpose, key_id: u32) -> Result<u64, StoreError> {
    let id = i64::from(key_id);
    let n: i64 = match purpose {
        Purpose::Content => notifications::table
            .filter(notifications::key_id.eq(id))
            .count()
            .get_result(conn)?,
        Purpose::Devices => devices::table
            .filter(devices::key_id.eq(id))
            .count()
            .get_result(conn)?,
        // Session records carry their key only in the envelope's header (bytes 2..6).
        Purpose::Sessions => {
            diesel::sql_query(
                conn.sql("SELECT COUNT(*) AS n FROM admin_sessions WHERE substr(data, 2, 4) = ?"),
            )
            .bind::<Binary, _>(key_id.to_be_bytes().to_vec())
            .get_result::<Count>(conn)?
            .n
        }
        Purpose::Index => 0,
        Purpose::Audit => super::audit::rows_under(conn, id)?,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The key ids rows are sealed under that the ring does not hold, per table: found at start-up,
/// they stop the relay (the ring is not the one these rows were sealed with).
pub fn unknown_keys(
    conn: &mut Db,
    cipher: &Cipher,
) -> Result<Vec<(&'static str, u32)>, StoreError> {
    let ring = cipher.snapshot();
    let mut out = Vec::new();
    let known_content: Vec<i64> = ring
        .ids_of(Purpose::Content)
        .into_iter()
        .map(i64::from)
        .collect();
    let known_devices: Vec<i64> = ring
        .ids_of(Purpose::Devices)
        .into_iter()
        .map(i64::from)
        .collect();
    let content: Option<Option<i64>> = notifications::table
        .filter(notifications::key_id.is_not_null())
        .filter(notifications::key_id.ne_all(&known_content))
        .select(notifications::key_id)
        .first(conn)
        .optional()?;
    if let Some(Some(id)) = content {
        out.push(("notifications", u32::try_from(id).unwrap_or(u32::MAX)));
    }
    let device: Option<Option<i64>> = devices::table
        .filter(devices::key_id.is_not_null())
        .filter(devices::key_id.ne_all(&known_devices))
        .select(devices::key_id)
        .first(conn)
        .optional()?;
    if let Some(Some(id)) = device {
        out.push(("devices", u32::try_from(id).unwrap_or(u32::MAX)));
    }
    Ok(out)
}

/// Rows sampled per table by [`first_table_that_does_not_open`].
const SAMPLE: i64 = 4;

/// The first table none of whose sampled sealed rows (the oldest and newest few) opens with the
/// ring: the ring is not the one they were sealed with (a keys directory from elsewhere, or a new
/// ring made because the old one was lost). One tampered row does not count: it is reported when
/// it is read. Nothing is counted as an open failure.
pub fn first_table_that_does_not_open(
    conn: &mut Db,
    cipher: &Cipher,
) -> Result<Option<&'static str>, StoreError> {
    let sealed = || notifications::table.filter(notifications::key_id.is_not_null());
    let mut rows: Vec<(String, Vec<u8>)> = sealed()
        .order(notifications::seq.asc())
        .limit(SAMPLE)
        .select((notifications::id, notifications::title))
        .load(conn)?;
    rows.extend(
        sealed()
            .order(notifications::seq.desc())
            .limit(SAMPLE)
            .select((notifications::id, notifications::title))
            .load::<(String, Vec<u8>)>(conn)?,
    );
    if !rows.is_empty()
        && !rows
            .iter()
            .any(|(id, title)| cipher.opens(fields::NOTIFICATION_TITLE, id, title))
    {
        return Ok(Some("notifications"));
    }
    let devices: Vec<(String, Vec<u8>)> = devices::table
        .filter(devices::key_id.is_not_null())
        .order(devices::id.asc())
        .limit(2 * SAMPLE)
        .select((devices::id, devices::name))
        .load(conn)?;
    if !devices.is_empty()
        && !devices
            .iter()
            .any(|(id, name)| cipher.opens(fields::DEVICE_NAME, id, name))
    {
        return Ok(Some("devices"));
    }
    Ok(None)
}

/// Rows left to move.
pub fn stale_rows(conn: &mut Db, cipher: &Cipher) -> Result<u64, StoreError> {
    let content = current_id(cipher, Purpose::Content)?;
    let device = current_id(cipher, Purpose::Devices)?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let plain_n: i64 = notifications::table
        .filter(notifications::key_id.is_null())
        .count()
        .get_result(conn)?;
    let old_n: i64 = notifications::table
        .filter(notifications::key_id.lt(content))
        .count()
        .get_result(conn)?;
    let plain_d: i64 = devices::table
        .filter(devices::key_id.is_null())
        .count()
        .get_result(conn)?;
    let old_d: i64 = devices::table
        .filter(devices::key_id.lt(device))
        .count()
        .get_result(conn)?;
    Ok(count(plain_n) + count(old_n) + count(plain_d) + count(old_d))
}

/// Moves up to `max_rows` stale rows (notifications first, then devices) after `cursor`.
pub fn step(
    conn: &mut Db,
    cipher: &Cipher,
    cursor: &mut Cursor,
    max_rows: usize,
) -> Result<Moved, StoreError> {
    let mut done = move_notifications(conn, cipher, cursor, max_rows)?;
    let left =
        max_rows.saturating_sub(usize::try_from(done.moved + done.failed).unwrap_or(max_rows));
    if left > 0 {
        let devices = move_devices(conn, cipher, cursor, left)?;
        done.moved += devices.moved;
        done.failed += devices.failed;
        done.full = devices.full;
    }
    Ok(done)
}

fn limit(max_rows: usize) -> i64 {
    i64::try_from(max_rows).unwrap_or(i64::MAX)
}

fn move_notifications(
    conn: &mut Db,
    cipher: &Cipher,
    cursor: &mut Cursor,
    max_rows: usize,
) -> Result<Moved, StoreError> {
    let current = current_id(cipher, Purpose::Content)?;
    conn.immediate_transaction(|conn| {
        let rows: Vec<NotificationRow> = notifications::table
            .filter(notifications::seq.gt(cursor.notification))
            .filter(
                notifications::key_id
                    .is_null()
                    .or(notifications::key_id.lt(current)),
            )
            .order(notifications::seq.asc())
            .limit(limit(max_rows))
            .select(NotificationRow::as_select())
            .load(conn)?;
        let mut done = Moved {
            full: rows.len() == max_rows,
            ..Moved::default()
        };
        let sealer = cipher
            .sealer(Purpose::Content)
            .map_err(StoreError::crypto)?;
        for row in rows {
            cursor.notification = row.seq;
            let record = match row.record(cipher) {
                Ok(record) => record,
                Err(_) => {
                    done.failed += 1;
                    continue;
                }
            };
            let id = row.id.as_str();
            let seal =
                |field, value: &[u8]| sealer.seal(field, id, value).map_err(StoreError::crypto);
            let tags =
                serde_json::to_vec(&record.tags).map_err(|e| StoreError::Other(e.to_string()))?;
            let legacy = row.key_id.is_none();
            // Before encryption the idempotency key was stored as it is, and tags had no index.
            let idempotency = match (&row.idempotency_key, legacy) {
                (Some(raw), true) => {
                    let key = open_text(cipher, fields::INDEX_IDEMPOTENCY, id, None, raw)?;
                    Some(
                        cipher
                            .blind_index(fields::INDEX_IDEMPOTENCY, &key)
                            .map_err(StoreError::crypto)?,
                    )
                }
                (other, _) => other.clone(),
            };
            diesel::update(notifications::table.find(row.seq))
                .set((
                    notifications::title
                        .eq(seal(fields::NOTIFICATION_TITLE, record.title.as_bytes())?),
                    notifications::body
                        .eq(seal(fields::NOTIFICATION_BODY, record.body.as_bytes())?),
                    notifications::app.eq(seal(fields::NOTIFICATION_APP, record.app.as_bytes())?),
                    notifications::tags.eq(seal(fields::NOTIFICATION_TAGS, &tags)?),
                    notifications::click_url.eq(sealer
                        .seal_opt(
                            fields::NOTIFICATION_CLICK_URL,
                            id,
                            record.click_url.as_deref(),
                        )
                        .map_err(StoreError::crypto)?),
                    notifications::encrypted.eq(sealer
                        .seal_opt(
                            fields::NOTIFICATION_ENCRYPTED,
                            id,
                            record.encrypted.as_deref(),
                        )
                        .map_err(StoreError::crypto)?),
                    notifications::idempotency_key.eq(idempotency),
                    notifications::key_id.eq(Some(sealer.key_id())),
                    notifications::app_index.eq(Some(
                        cipher
                            .blind_index(fields::INDEX_APP, &record.app)
                            .map_err(StoreError::crypto)?,
                    )),
                ))
                .execute(conn)?;
            if legacy {
                mark_scrub_pending(conn)?;
                for tag in &record.tags {
                    let index = cipher
                        .blind_index(fields::INDEX_TAG, tag)
                        .map_err(StoreError::crypto)?;
                    insert_or_ignore!(
                        conn,
                        notification_tags::table,
                        (
                            notification_tags::tag_index.eq(&index),
                            notification_tags::notification_seq.eq(row.seq),
                        )
                    )?;
                }
            }
            done.moved += 1;
        }
        Ok(done)
    })
}

fn move_devices(
    conn: &mut Db,
    cipher: &Cipher,
    cursor: &mut Cursor,
    max_rows: usize,
) -> Result<Moved, StoreError> {
    let current = current_id(cipher, Purpose::Devices)?;
    conn.immediate_transaction(|conn| {
        let rows: Vec<StoredDevice> = devices::table
            .filter(devices::id.gt(cursor.device.clone()))
            .filter(devices::key_id.is_null().or(devices::key_id.lt(current)))
            .order(devices::id.asc())
            .limit(limit(max_rows))
            .select(StoredDevice::as_select())
            .load(conn)?;
        let mut done = Moved {
            full: rows.len() == max_rows,
            ..Moved::default()
        };
        for stored in rows {
            cursor.device = stored.id().to_owned();
            let Ok(row) = stored.open(cipher) else {
                done.failed += 1;
                continue;
            };
            if stored.key_id().is_none() {
                mark_scrub_pending(conn)?;
            }
            let sealed = StoredDevice::seal(&row, cipher)?;
            diesel::update(devices::table.find(&row.id))
                .set(&sealed)
                .execute(conn)?;
            done.moved += 1;
        }
        Ok(done)
    })
}

/// Rows from before encryption, not sealed yet.
pub fn plaintext_rows(conn: &mut Db) -> Result<u64, StoreError> {
    let n: i64 = notifications::table
        .filter(notifications::key_id.is_null())
        .count()
        .get_result(conn)?;
    let d: i64 = devices::table
        .filter(devices::key_id.is_null())
        .count()
        .get_result(conn)?;
    Ok(u64::try_from(n + d).unwrap_or(0))
}
