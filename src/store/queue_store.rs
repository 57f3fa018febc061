//! The queue's port onto the store: group commits and restores.
//!
//! A [`CommitBatch`] is written in one `BEGIN IMMEDIATE` transaction: new notifications with their
//! delivery rows (after an idempotency-key check), then sent, acked and expired marks. State marks
//! never move a delivery backwards: an acked or expired delivery stays so.

use std::collections::{HashMap, HashSet};

use super::db::{Backend, Db, Kind, WriteTransaction};
use diesel::prelude::*;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::sql_types::{BigInt, Nullable, Text};

use beepmyphone_actors::model::{DeviceId, NotificationId, QueuedNotification};
use beepmyphone_actors::ports::{
    self, CommitBatch, InsertOutcome, PendingDelivery, QueueSnapshot, QueueStore,
};

use super::notifications::NotificationRow;
use super::schema::{deliveries, devices as devices_table, notification_tags, notifications};
use super::{devices, Store, StoreError};
use crate::crypto::{fields, Cipher, Purpose};
use crate::domain::DeliveryStatus;

/// How long an idempotency key is remembered, in milliseconds.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3_600 * 1_000;

fn store_err(e: impl std::fmt::Display) -> ports::StoreError {
    ports::StoreError(e.to_string())
}

/// A notification row as inserted.
///
/// `None` binds NULL rather than leaving the column out: the statement's text is then the same
/// for every row, so diesel prepares it once and reuses it (a column list that depends on which
/// fields are set cannot be cached, and SQLite would parse the insert again for every row).
#[derive(Insertable)]
#[diesel(table_name = notifications, treat_none_as_default_value = false)]
struct NewRow<'a> {
    seq: i64,
    id: &'a str,
    title: &'a [u8],
    body: &'a [u8],
    app: &'a [u8],
    priority: i16,
    tags: &'a [u8],
    click_url: Option<&'a [u8]>,
    created_at: i64,
    expires_at: i64,
    publisher: &'a str,
    idempotency_key: Option<&'a [u8]>,
    trace_id: Option<&'a [u8]>,
    key_id: Option<i64>,
    app_index: Option<&'a [u8]>,
    encrypted: Option<&'a [u8]>,
}

/// A notification's sealed fields and blind indexes, made before the write transaction so that
/// the write lock is not held while sealing.
struct Sealed {
    title: Vec<u8>,
    body: Vec<u8>,
    app: Vec<u8>,
    tags: Vec<u8>,
    click_url: Option<Vec<u8>>,
    encrypted: Option<Vec<u8>>,
    key_id: i64,
    app_index: Vec<u8>,
    tag_indexes: Vec<Vec<u8>>,
    idempotency_index: Option<Vec<u8>>,
}

fn seal_insert(cipher: &Cipher, op: &ports::InsertOp) -> Result<Sealed, StoreError> {
    let crypto = StoreError::crypto;
    let record = &op.record;
    let id = record.id.as_str();
    let sealer = cipher.sealer(Purpose::Content).map_err(crypto)?;
    let tags = serde_json::to_vec(&record.tags).map_err(|e| StoreError::Other(e.to_string()))?;
    let mut tag_indexes = record
        .tags
        .iter()
        .map(|tag| cipher.blind_index(fields::INDEX_TAG, tag))
        .collect::<Result<Vec<_>, _>>()
        .map_err(crypto)?;
    tag_indexes.sort();
    tag_indexes.dedup();
    Ok(Sealed {
        title: sealer
            .seal(fields::NOTIFICATION_TITLE, id, record.title.as_bytes())
            .map_err(crypto)?,
        body: sealer
            .seal(fields::NOTIFICATION_BODY, id, record.body.as_bytes())
            .map_err(crypto)?,
        app: sealer
            .seal(fields::NOTIFICATION_APP, id, record.app.as_bytes())
            .map_err(crypto)?,
        tags: sealer
            .seal(fields::NOTIFICATION_TAGS, id, &tags)
            .map_err(crypto)?,
        click_url: sealer
            .seal_opt(
                fields::NOTIFICATION_CLICK_URL,
                id,
                record.click_url.as_deref(),
            )
            .map_err(crypto)?,
        encrypted: sealer
            .seal_opt(
                fields::NOTIFICATION_ENCRYPTED,
                id,
                record.encrypted.as_deref(),
            )
            .map_err(crypto)?,
        key_id: sealer.key_id(),
        app_index: cipher
            .blind_index(fields::INDEX_APP, &record.app)
            .map_err(crypto)?,
        tag_indexes,
        idempotency_index: op
            .idempotency_key
            .as_deref()
            .map(|key| cipher.blind_index(fields::INDEX_IDEMPOTENCY, key))
            .transpose()
            .map_err(crypto)?,
    })
}

/// A tag's blind index as inserted.
#[derive(Insertable)]
#[diesel(table_name = notification_tags)]
struct NewTag<'a> {
    tag_index: &'a [u8],
    notification_seq: i64,
}

/// A delivery row as inserted.
#[derive(Insertable)]
#[diesel(table_name = deliveries)]
struct NewDelivery<'a> {
    notification_seq: i64,
    device_id: &'a str,
    status: DeliveryStatus,
}

/// The earlier notification with this publisher's idempotency key (its blind index `key`, or,
/// on a row from before encryption not sealed yet, the key itself), within the window.
fn earlier_with_key(
    conn: &mut Db,
    publisher: &str,
    (key, plain): (&[u8], &str),
    created_at: i64,
) -> QueryResult<Option<InsertOutcome>> {
    let earlier: Option<(i64, String)> = notifications::table
        .filter(notifications::publisher.eq(publisher))
        .filter(
            notifications::idempotency_key
                .eq(key)
                .or(notifications::key_id
                    .is_null()
                    .and(notifications::idempotency_key.eq(plain.as_bytes()))),
        )
        .filter(notifications::created_at.gt(created_at - IDEMPOTENCY_WINDOW_MS))
        .select((notifications::seq, notifications::id))
        .order(notifications::seq.asc())
        .first(conn)
        .optional()?;
    let Some((seq, id)) = earlier else {
        return Ok(None);
    };
    let targets: i64 = deliveries::table
        .filter(deliveries::notification_seq.eq(seq))
        .count()
        .get_result(conn)?;
    Ok(Some(InsertOutcome::Duplicate {
        id: NotificationId::from_trusted(id),
        targets: usize::try_from(targets).unwrap_or(0),
    }))
}

/// Delivery marks written per statement at most (4 or 5 bound values each, far below SQLite's
/// limit).
const MARKS_PER_STATEMENT: usize = 500;

/// Writes delivery marks, one statement per [`MARKS_PER_STATEMENT`] rows:
/// `UPDATE deliveries SET {set} FROM (VALUES (seq, device, a, b, …), …) AS v` on each delivery not
/// yet acknowledged nor expired ([`PENDING`]; `set` reads `v.column3` onwards, `width` values per
/// row). diesel never caches an UPDATE, so one statement per row meant SQLite parsed the same text
/// again for every row; this parses once per batch, and SQLite still finds each row by its
/// primary key. `OR FAIL` spares the statement journal SQLite keeps to undo a multi-row statement
/// that aborts half-way: these updates change no unique key, and an error fails the whole
/// transaction anyway.
fn update_marks<R>(
    conn: &mut Db,
    set: &str,
    width: usize,
    rows: &[R],
    bind: impl for<'q> Fn(
        BoxedSqlQuery<'q, Backend, SqlQuery>,
        &'q R,
    ) -> BoxedSqlQuery<'q, Backend, SqlQuery>,
) -> QueryResult<()> {
    let row = format!("({})", vec!["?"; width].join(", "));
    // SQLite names the columns of VALUES column1, column2, …; PostgreSQL needs them named.
    let (verb, columns) = match conn.kind() {
        Kind::Sqlite => ("UPDATE OR FAIL", String::new()),
        Kind::Postgres => (
            "UPDATE",
            format!(
                "({})",
                (1..=width)
                    .map(|i| format!("column{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    for chunk in rows.chunks(MARKS_PER_STATEMENT) {
        let values = vec![row.as_str(); chunk.len()].join(", ");
        let sql = conn.sql(&format!(
            "{verb} deliveries SET {set} FROM (VALUES {values}) AS v{columns} \
             WHERE deliveries.notification_seq = v.column1 AND deliveries.device_id = v.column2 \
             AND {PENDING}"
        ));
        let mut query = diesel::sql_query(sql).into_boxed::<Backend>();
        for row in chunk {
            query = bind(query, row);
        }
        query.execute(conn)?;
    }
    Ok(())
}

/// The condition of the partial index `deliveries_pending` (migration 6: `status < 2`, queued or
/// sent), as a literal: SQLite is built with the query planner stability guarantee
/// (`.cargo/config.toml`), so a bound `status < ?` could not use the index.
pub const PENDING: &str = "deliveries.status < 2";

/// Deliveries not yet acked or expired, in a form that uses `deliveries_pending`.
fn pending() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    const _: () = assert!(DeliveryStatus::Acked.as_i16() == 2);
    diesel::dsl::sql::<diesel::sql_types::Bool>(PENDING)
}

/// Writes one batch in one transaction; returns one outcome per insert.
///
/// Sequence numbers are assigned here, inside the write transaction (so no other writer can take
/// them), so inserts need no `RETURNING` round trip and reuse one prepared statement each.
/// A delivery that was sent and acknowledged within the same batch is written once, as acked.
/// Sent and acked marks are written a few hundred rows per statement ([`update_marks`]).
pub fn commit_batch(
    conn: &mut Db,
    cipher: &Cipher,
    batch: &CommitBatch,
) -> Result<Vec<InsertOutcome>, StoreError> {
    let sealed = batch
        .inserts
        .iter()
        .map(|op| seal_insert(cipher, op))
        .collect::<Result<Vec<_>, _>>()?;
    // `gone`: devices deleted since the queue resolved the targets (a deletion through another
    // relay of a cluster, or one racing the commit); their deliveries are left out.
    let attempt = |conn: &mut Db, gone: &HashSet<String>| {
        conn.immediate_transaction(|conn| {
            let mut outcomes = Vec::with_capacity(batch.inserts.len());
            let mut rows = Vec::with_capacity(batch.inserts.len());
            let mut new_deliveries = Vec::new();
            let mut new_tags = Vec::new();
            if !batch.inserts.is_empty() {
                let max: Option<i64> = notifications::table
                    .select(diesel::dsl::max(notifications::seq))
                    .first(conn)?;
                let mut next_seq = max.unwrap_or(0) + 1;
                // Keys repeated inside this batch resolve to the batch's first notification.
                let mut keyed: HashMap<(&str, &[u8]), InsertOutcome> = HashMap::new();
                for (op, sealed) in batch.inserts.iter().zip(&sealed) {
                    let record = &op.record;
                    if let Some(key) = sealed.idempotency_index.as_deref() {
                        let known = match keyed.get(&(op.publisher.as_str(), key)) {
                            Some(outcome) => Some(outcome.clone()),
                            None => earlier_with_key(
                                conn,
                                &op.publisher,
                                (key, op.idempotency_key.as_deref().unwrap_or_default()),
                                record.created_at,
                            )?,
                        };
                        if let Some(duplicate) = known {
                            outcomes.push(duplicate);
                            continue;
                        }
                        keyed.insert(
                            (op.publisher.as_str(), key),
                            InsertOutcome::Duplicate {
                                id: record.id.clone(),
                                targets: op.devices.len(),
                            },
                        );
                    }
                    let seq = next_seq;
                    next_seq += 1;
                    rows.push(NewRow {
                        seq,
                        id: record.id.as_str(),
                        title: &sealed.title,
                        body: &sealed.body,
                        app: &sealed.app,
                        priority: record.priority.as_i16(),
                        tags: &sealed.tags,
                        click_url: sealed.click_url.as_deref(),
                        created_at: record.created_at,
                        expires_at: record.expires_at,
                        publisher: &op.publisher,
                        idempotency_key: sealed.idempotency_index.as_deref(),
                        trace_id: record.trace_id.as_ref().map(|t| t.as_bytes().as_slice()),
                        key_id: Some(sealed.key_id),
                        app_index: Some(&sealed.app_index),
                        encrypted: sealed.encrypted.as_deref(),
                    });
                    new_tags.extend(sealed.tag_indexes.iter().map(|index| NewTag {
                        tag_index: index,
                        notification_seq: seq,
                    }));
                    new_deliveries.extend(
                        op.devices
                            .iter()
                            .filter(|device| !gone.contains(device.as_str()))
                            .map(|device| NewDelivery {
                                notification_seq: seq,
                                device_id: device.as_str(),
                                status: DeliveryStatus::Queued,
                            }),
                    );
                    outcomes.push(InsertOutcome::Inserted { seq });
                }
            }
            // One row per statement: diesel caches the prepared single-row statements, where a
            // multi-row insert would be parsed again for every batch size.
            for row in &rows {
                diesel::insert_into(notifications::table)
                    .values(row)
                    .execute(conn)?;
            }
            for tag in &new_tags {
                diesel::insert_into(notification_tags::table)
                    .values(tag)
                    .execute(conn)?;
            }
            for delivery in &new_deliveries {
                diesel::insert_into(deliveries::table)
                    .values(delivery)
                    .execute(conn)?;
            }
            // Sent marks per delivery: the last send and how many. A delivery acknowledged in this
            // batch is written once, with its ack (which records its send); a repeated ack is a no-op.
            let mut sends: HashMap<(i64, &str), (i64, i64)> = HashMap::new();
            for change in &batch.sent {
                let send = sends
                    .entry((change.seq, change.device.as_str()))
                    .or_insert((change.at, 0));
                *send = (change.at, send.1 + 1);
            }
            let mut acked = HashSet::new();
            // Each with the batch's last send and its number of sends (an ack absorbs them all).
            let acks: Vec<(i64, &str, i64, Option<i64>, i64)> = batch
                .acked
                .iter()
                .filter(|c| acked.insert((c.seq, c.device.as_str())))
                .map(|c| {
                    let send = sends.get(&(c.seq, c.device.as_str()));
                    (
                        c.seq,
                        c.device.as_str(),
                        c.at,
                        send.map(|s| s.0),
                        send.map_or(0, |s| s.1),
                    )
                })
                .collect();
            let sent: Vec<(i64, &str, i64, i64)> = sends
                .iter()
                .filter(|(key, _)| !acked.contains(*key))
                .map(|(&(seq, device), &(at, count))| (seq, device, at, count))
                .collect();
            update_marks(
                conn,
                &format!(
                    "status = {}, attempts = attempts + v.column4, sent_at = v.column3",
                    DeliveryStatus::Sent.as_i16()
                ),
                4,
                &sent,
                |query, &(seq, device, at, count)| {
                    query
                        .bind::<BigInt, _>(seq)
                        .bind::<Text, _>(device)
                        .bind::<BigInt, _>(at)
                        .bind::<BigInt, _>(count)
                },
            )?;
            update_marks(
                conn,
                &format!(
                    "status = {}, acked_at = v.column3, \
                 attempts = attempts + v.column5, \
                 sent_at = COALESCE(v.column4, deliveries.sent_at)",
                    DeliveryStatus::Acked.as_i16()
                ),
                5,
                &acks,
                |query, &(seq, device, at, sent_at, sends)| {
                    query
                        .bind::<BigInt, _>(seq)
                        .bind::<Text, _>(device)
                        .bind::<BigInt, _>(at)
                        .bind::<Nullable<BigInt>, _>(sent_at)
                        .bind::<BigInt, _>(sends)
                },
            )?;
            for (device, at) in &batch.seen {
                diesel::update(devices_table::table.find(device.as_str()))
                    .set(devices_table::last_seen_at.eq(*at))
                    .execute(conn)?;
            }
            for change in &batch.expired {
                diesel::update(
                    deliveries::table
                        .find((change.seq, change.device.as_str()))
                        .filter(deliveries::status.lt(DeliveryStatus::Acked)),
                )
                .set(deliveries::status.eq(DeliveryStatus::Expired))
                .execute(conn)?;
            }
            Ok::<_, diesel::result::Error>(outcomes)
        })
    };
    match attempt(conn, &HashSet::new()) {
        // A delivery row names a device that no longer exists: write again without them (the
        // failed transaction left nothing behind).
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _,
        )) if !batch.inserts.is_empty() => {
            let gone = missing_devices(conn, batch)?;
            Ok(attempt(conn, &gone)?)
        }
        result => Ok(result?),
    }
}

/// The devices the batch's inserts target that are not in the store.
fn missing_devices(conn: &mut Db, batch: &CommitBatch) -> QueryResult<HashSet<String>> {
    let mut wanted: Vec<&str> = batch
        .inserts
        .iter()
        .flat_map(|op| op.devices.iter().map(DeviceId::as_str))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut present = HashSet::new();
    for chunk in wanted.chunks(500) {
        present.extend(
            devices_table::table
                .filter(devices_table::id.eq_any(chunk))
                .select(devices_table::id)
                .load::<String>(conn)?,
        );
    }
    Ok(wanted
        .into_iter()
        .filter(|id| !present.contains(*id))
        .map(str::to_owned)
        .collect())
}

/// Marks expired deliveries and reads everything the queue needs.
///
/// A corrupt device or notification row (see [`StoreError::Corrupt`]) is left out and named in
/// [`QueueSnapshot::corrupt`] (the queue logs it as an error), never read with default values.
/// Leaving it out rather than failing the load is deliberate: the queue retries a failed load
/// forever and accepts nothing meanwhile, so one bad row would stop every delivery to every
/// device. Left out, a corrupt device gets nothing until it is repaired, and a corrupt
/// notification is not delivered; their delivery rows stay in the store as they are.
pub fn load_snapshot(
    conn: &mut Db,
    cipher: &Cipher,
    now: i64,
) -> Result<QueueSnapshot, StoreError> {
    diesel::update(
        deliveries::table.filter(pending()).filter(
            deliveries::notification_seq.eq_any(
                notifications::table
                    .filter(notifications::expires_at.le(now))
                    .select(notifications::seq),
            ),
        ),
    )
    .set(deliveries::status.eq(DeliveryStatus::Expired))
    .execute(conn)?;
    let mut corrupt = Vec::new();
    let mut devices = Vec::new();
    for row in devices::all(conn, cipher)? {
        match row.and_then(|row| row.policy().map(|policy| (row.device_id(), policy))) {
            Ok(device) => devices.push(device),
            Err(e) => corrupt.push(e.to_string()),
        }
    }
    let rows: Vec<NotificationRow> = notifications::table
        .filter(notifications::expires_at.gt(now))
        .filter(
            notifications::seq.eq_any(
                deliveries::table
                    .filter(pending())
                    .select(deliveries::notification_seq),
            ),
        )
        .order(notifications::seq.asc())
        .select(NotificationRow::as_select())
        .load(conn)?;
    let pending_rows: Vec<(i64, String, i32)> = deliveries::table
        .filter(pending())
        .select((
            deliveries::notification_seq,
            deliveries::device_id,
            deliveries::attempts,
        ))
        .load(conn)?;
    let mut snapshot = snapshot_of(cipher, &rows, pending_rows);
    snapshot.devices = devices;
    snapshot.corrupt.splice(0..0, corrupt);
    Ok(snapshot)
}

/// Reads the pending deliveries of `devices` (of the notifications `seqs` only, when given) whose
/// notifications are unexpired at `now`. Read-only: overdue deliveries are left for the next full
/// load to mark. Lists are read a few hundred ids per statement.
pub fn load_pending(
    conn: &mut Db,
    cipher: &Cipher,
    devices: &[DeviceId],
    seqs: Option<&[i64]>,
    now: i64,
) -> Result<QueueSnapshot, StoreError> {
    const CHUNK: usize = 500;
    let mut pending_rows: Vec<(i64, String, i32)> = Vec::new();
    for chunk in devices.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(DeviceId::as_str).collect();
        let query = || {
            deliveries::table
                .filter(pending())
                .filter(deliveries::device_id.eq_any(ids.clone()))
                .select((
                    deliveries::notification_seq,
                    deliveries::device_id,
                    deliveries::attempts,
                ))
        };
        match seqs {
            None => pending_rows.extend(query().load::<(i64, String, i32)>(conn)?),
            Some(seqs) => {
                for seq_chunk in seqs.chunks(CHUNK) {
                    pending_rows.extend(
                        query()
                            .filter(deliveries::notification_seq.eq_any(seq_chunk))
                            .load::<(i64, String, i32)>(conn)?,
                    );
                }
            }
        }
    }
    let mut wanted: Vec<i64> = pending_rows.iter().map(|(seq, _, _)| *seq).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut rows: Vec<NotificationRow> = Vec::with_capacity(wanted.len());
    for chunk in wanted.chunks(CHUNK) {
        rows.extend(
            notifications::table
                .filter(notifications::expires_at.gt(now))
                .filter(notifications::seq.eq_any(chunk))
                .select(NotificationRow::as_select())
                .load::<NotificationRow>(conn)?,
        );
    }
    Ok(snapshot_of(cipher, &rows, pending_rows))
}

/// The queue's view of notification rows (a corrupt one is named in `corrupt` and left out) and
/// of the pending deliveries of those it has; `devices` is left empty.
fn snapshot_of(
    cipher: &Cipher,
    rows: &[NotificationRow],
    pending_rows: Vec<(i64, String, i32)>,
) -> QueueSnapshot {
    let mut corrupt = Vec::new();
    let mut index = HashMap::with_capacity(rows.len());
    let mut notes = Vec::with_capacity(rows.len());
    for row in rows {
        let record = match row.record(cipher) {
            Ok(record) => record,
            Err(e) => {
                corrupt.push(e.to_string());
                continue;
            }
        };
        index.insert(row.seq, notes.len());
        notes.push(QueuedNotification {
            payload: record.device_json(),
            id: record.id,
            seq: row.seq,
            priority: record.priority,
            expires_at: record.expires_at,
            created_at: record.created_at,
            trace_id: record.trace_id,
        });
    }
    let pending = pending_rows
        .into_iter()
        .filter_map(|(seq, device, attempts)| {
            index.get(&seq).map(|&notification| PendingDelivery {
                device: DeviceId::from_trusted(device),
                notification,
                sent_before: attempts > 0,
            })
        })
        .collect();
    QueueSnapshot {
        devices: Vec::new(),
        notifications: notes,
        pending,
        corrupt,
    }
}

impl QueueStore for Store {
    fn commit(&self, batch: &CommitBatch) -> Result<Vec<InsertOutcome>, ports::StoreError> {
        let cipher = self.cipher().map_err(store_err)?;
        let mut conn = self.writer().map_err(store_err)?;
        commit_batch(&mut conn, cipher, batch).map_err(store_err)
    }

    fn load(&self, now_ms: i64) -> Result<QueueSnapshot, ports::StoreError> {
        let cipher = self.cipher().map_err(store_err)?;
        // It expires overdue deliveries first: a write.
        let mut conn = self.writer().map_err(store_err)?;
        load_snapshot(&mut conn, cipher, now_ms).map_err(store_err)
    }

    fn pending(
        &self,
        devices: &[DeviceId],
        seqs: Option<&[i64]>,
        now_ms: i64,
    ) -> Result<QueueSnapshot, ports::StoreError> {
        let cipher = self.cipher().map_err(store_err)?;
        let mut conn = self.conn().map_err(store_err)?;
        load_pending(&mut conn, cipher, devices, seqs, now_ms).map_err(store_err)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::StorageSettings;
    use crate::store::devices::DeviceRow;
    use beepmyphone_actors::model::{NotificationRecord, Priority};
    use beepmyphone_actors::ports::{DeliveryChange, InsertOp};

    /// A store on a fresh directory with one device.
    pub(crate) fn store_with_device() -> (tempfile::TempDir, Store, DeviceId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default())
            .unwrap()
            .with_cipher(crate::crypto::ring::tests::test_cipher());
        let device = DeviceId::generate();
        let cipher = store.cipher().unwrap().clone();
        devices::insert(
            &mut store.conn().unwrap(),
            &cipher,
            &device_row(&device, "d"),
        )
        .unwrap();
        (dir, store, device)
    }

    /// A plain enabled device row.
    fn device_row(id: &DeviceId, name: &str) -> DeviceRow {
        DeviceRow::for_tests(id.as_str(), name, "linux")
    }

    /// A normal-priority notification to `device`, created at 1,000.
    pub(crate) fn op(device: &DeviceId, key: Option<&str>) -> InsertOp {
        InsertOp {
            record: NotificationRecord {
                id: NotificationId::generate(),
                title: "t".into(),
                body: String::new(),
                app: "a".into(),
                priority: Priority::Normal,
                tags: vec!["x".into()],
                click_url: None,
                created_at: 1_000,
                expires_at: i64::MAX / 2,
                trace_id: None,
                encrypted: None,
            },
            devices: vec![device.clone()],
            publisher: "tok_1".into(),
            idempotency_key: key.map(str::to_owned),
        }
    }

    #[test]
    fn corrupt_rows_are_left_out_of_the_snapshot_and_named_never_defaulted() {
        let (_dir, store, device) = store_with_device();
        let other = DeviceId::generate();
        let cipher = store.cipher().unwrap().clone();
        let mut conn = store.conn().unwrap();
        devices::insert(&mut conn, &cipher, &device_row(&other, "o")).unwrap();
        let batch = CommitBatch {
            inserts: vec![
                op(&device, None),
                op(&device, None),
                op(&device, None),
                op(&device, None),
            ],
            ..CommitBatch::default()
        };
        store.commit(&batch).unwrap();
        let devices_key = cipher.sealer(Purpose::Devices).unwrap();
        let other_id = other.to_string();
        let seal = |field, value: &str| {
            devices_key
                .seal(field, &other_id, value.as_bytes())
                .unwrap()
        };
        diesel::update(devices_table::table.find(other.to_string()))
            .set((
                devices_table::quiet_start.eq(Some(seal(fields::DEVICE_QUIET_START, "22:00"))),
                devices_table::quiet_end.eq(Some(seal(fields::DEVICE_QUIET_END, "07:00"))),
                devices_table::quiet_tz.eq(Some(seal(fields::DEVICE_QUIET_TZ, "Mars/Olympus"))),
            ))
            .execute(&mut conn)
            .unwrap();
        diesel::update(notifications::table.find(1_i64))
            .set(notifications::priority.eq(9_i16))
            .execute(&mut conn)
            .unwrap();
        let second = batch.inserts[1].record.id.to_string();
        let content = cipher.sealer(Purpose::Content).unwrap();
        diesel::update(notifications::table.find(2_i64))
            .set(
                notifications::tags.eq(content
                    .seal(fields::NOTIFICATION_TAGS, &second, b"not json")
                    .unwrap()),
            )
            .execute(&mut conn)
            .unwrap();
        // A title that does not open (a flipped bit): reported, not delivered empty.
        let mut title: Vec<u8> = notifications::table
            .find(3_i64)
            .select(notifications::title)
            .first(&mut conn)
            .unwrap();
        let last = title.len() - 1;
        title[last] ^= 1;
        diesel::update(notifications::table.find(3_i64))
            .set(notifications::title.eq(title))
            .execute(&mut conn)
            .unwrap();
        let snapshot = store.load(2_000).unwrap();
        assert_eq!(snapshot.devices.len(), 1);
        assert_eq!(snapshot.devices[0].0, device);
        assert_eq!(snapshot.notifications.len(), 1);
        assert_eq!(snapshot.notifications[0].seq, 4);
        assert_eq!(snapshot.pending.len(), 1);
        assert_eq!(snapshot.pending[0].notification, 0);
        assert_eq!(snapshot.corrupt.len(), 4, "{:?}", snapshot.corrupt);
        let all = snapshot.corrupt.join("\n");
        assert!(
            all.contains("devices.quiet_tz") && all.contains(&other.to_string()),
            "{all}"
        );
        assert!(all.contains("notifications.priority"), "{all}");
        assert!(all.contains("notifications.tags"), "{all}");
        assert!(
            all.contains("notifications.title") && all.contains("does not open"),
            "{all}"
        );
        assert_eq!(cipher.failures().count(), 1);
        // Their deliveries are still queued in the store, for when the rows are repaired.
        let queued: i64 = deliveries::table
            .filter(deliveries::status.eq(DeliveryStatus::Queued))
            .count()
            .get_result(&mut conn)
            .unwrap();
        assert_eq!(queued, 4);
    }

    #[test]
    fn a_batch_inserts_in_order_and_resolves_repeated_keys_inside_it() {
        let (_dir, store, device) = store_with_device();
        let batch = CommitBatch {
            inserts: vec![
                op(&device, None),
                op(&device, Some("k")),
                op(&device, Some("k")),
                op(&device, None),
            ],
            ..CommitBatch::default()
        };
        let outcomes = store.commit(&batch).unwrap();
        assert!(matches!(outcomes[0], InsertOutcome::Inserted { seq: 1 }));
        assert!(matches!(outcomes[1], InsertOutcome::Inserted { seq: 2 }));
        assert_eq!(
            outcomes[2],
            InsertOutcome::Duplicate {
                id: batch.inserts[1].record.id.clone(),
                targets: 1
            }
        );
        assert!(matches!(outcomes[3], InsertOutcome::Inserted { seq: 3 }));
        // A later batch finds the key in the store.
        let later = CommitBatch {
            inserts: vec![op(&device, Some("k"))],
            ..CommitBatch::default()
        };
        assert_eq!(
            store.commit(&later).unwrap()[0],
            InsertOutcome::Duplicate {
                id: batch.inserts[1].record.id.clone(),
                targets: 1
            }
        );
        let snapshot = store.load(2_000).unwrap();
        assert_eq!(snapshot.notifications.len(), 3);
        assert_eq!(snapshot.pending.len(), 3);
    }

    #[derive(diesel::QueryableByName)]
    struct PlanRow {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    #[test]
    fn pending_queries_use_the_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default()).unwrap();
        let mut conn = store.conn().unwrap();
        for query in [
            format!("SELECT notification_seq, device_id, attempts FROM deliveries WHERE {PENDING}"),
            format!("SELECT seq FROM notifications WHERE seq IN (SELECT notification_seq FROM deliveries WHERE {PENDING})"),
        ] {
            let plan: Vec<PlanRow> = diesel::sql_query(format!("EXPLAIN QUERY PLAN {query}"))
                .load(&mut conn)
                .unwrap();
            let plan: Vec<String> = plan.into_iter().map(|row| row.detail).collect();
            assert!(
                plan.iter().any(|step| step.contains("deliveries_pending")),
                "{query}: {plan:?}"
            );
        }
    }

    #[test]
    fn a_deleted_target_is_left_out_instead_of_failing_the_commit() {
        let (_dir, store, device) = store_with_device();
        let gone = DeviceId::generate();
        let mut both = op(&device, None);
        both.devices.push(gone.clone());
        let batch = CommitBatch {
            inserts: vec![both, op(&device, None)],
            ..CommitBatch::default()
        };
        let outcomes = store.commit(&batch).unwrap();
        assert_eq!(
            outcomes,
            vec![
                InsertOutcome::Inserted { seq: 1 },
                InsertOutcome::Inserted { seq: 2 }
            ]
        );
        let rows: Vec<(i64, String)> = deliveries::table
            .select((deliveries::notification_seq, deliveries::device_id))
            .order(deliveries::notification_seq.asc())
            .load(&mut store.conn().unwrap())
            .unwrap();
        assert_eq!(
            rows,
            vec![(1, device.to_string()), (2, device.to_string())],
            "one row per existing device, nothing written twice"
        );
    }

    #[test]
    fn pending_reads_only_the_devices_and_notifications_asked_for() {
        let (_dir, store, device) = store_with_device();
        let other = DeviceId::generate();
        let cipher = store.cipher().unwrap().clone();
        devices::insert(
            &mut store.conn().unwrap(),
            &cipher,
            &device_row(&other, "o"),
        )
        .unwrap();
        let mut shared = op(&device, None);
        shared.devices.push(other.clone());
        let batch = CommitBatch {
            inserts: vec![shared, op(&device, None), op(&other, None)],
            ..CommitBatch::default()
        };
        store.commit(&batch).unwrap();
        store
            .commit(&CommitBatch {
                acked: vec![DeliveryChange {
                    seq: 1,
                    device: device.clone(),
                    at: 2_000,
                }],
                ..CommitBatch::default()
            })
            .unwrap();
        let pairs = |snapshot: QueueSnapshot| -> Vec<(String, i64)> {
            let mut pairs: Vec<(String, i64)> = snapshot
                .pending
                .iter()
                .map(|p| {
                    (
                        p.device.to_string(),
                        snapshot.notifications[p.notification].seq,
                    )
                })
                .collect();
            pairs.sort();
            pairs
        };
        // Every pending delivery of `device`: not the acked one, not the other device's.
        let mine = store
            .pending(std::slice::from_ref(&device), None, 1_000)
            .unwrap();
        assert!(mine.devices.is_empty());
        assert_eq!(pairs(mine), vec![(device.to_string(), 2)]);
        // Of one notification only, for both devices.
        let both = [device.clone(), other.clone()];
        let one = store.pending(&both, Some(&[1]), 1_000).unwrap();
        assert_eq!(pairs(one), vec![(other.to_string(), 1)]);
        // Expired notifications are not read.
        let later = store.pending(&both, None, i64::MAX / 2).unwrap();
        assert!(later.pending.is_empty() && later.notifications.is_empty());
    }

    #[test]
    fn the_trace_id_is_stored_and_restored() {
        let (_dir, store, device) = store_with_device();
        let trace = beepmyphone_actors::trace::TraceId::from_bytes([7; 16]);
        let mut traced = op(&device, None);
        traced.record.trace_id = trace;
        let batch = CommitBatch {
            inserts: vec![traced, op(&device, None)],
            ..CommitBatch::default()
        };
        store.commit(&batch).unwrap();
        let snapshot = store.load(2_000).unwrap();
        let traces: Vec<_> = snapshot.notifications.iter().map(|n| n.trace_id).collect();
        assert_eq!(traces, [trace, None]);
    }

    #[test]
    fn sent_and_acked_in_one_batch_are_written_once_as_acked() {
        let (_dir, store, device) = store_with_device();
        let first = CommitBatch {
            inserts: vec![op(&device, None), op(&device, None)],
            ..CommitBatch::default()
        };
        store.commit(&first).unwrap();
        let change = |seq| DeliveryChange {
            seq,
            device: device.clone(),
            at: 5_000,
        };
        // Delivery 1 is sent twice (a reconnect in between) and acked, all within one window.
        let batch = CommitBatch {
            sent: vec![
                DeliveryChange {
                    at: 4_000,
                    ..change(1)
                },
                change(1),
                change(2),
            ],
            acked: vec![DeliveryChange {
                at: 6_000,
                ..change(1)
            }],
            ..CommitBatch::default()
        };
        store.commit(&batch).unwrap();
        let mut conn = store.conn().unwrap();
        let rows = crate::store::notifications::deliveries_of(&mut conn, &[1, 2], None).unwrap();
        assert_eq!(
            (
                rows[0].status,
                rows[0].attempts,
                rows[0].sent_at,
                rows[0].acked_at
            ),
            (DeliveryStatus::Acked, 2, Some(5_000), Some(6_000))
        );
        assert_eq!(
            (
                rows[1].status,
                rows[1].attempts,
                rows[1].sent_at,
                rows[1].acked_at
            ),
            (DeliveryStatus::Sent, 1, Some(5_000), None)
        );
        // An acked delivery never moves back.
        store
            .commit(&CommitBatch {
                sent: vec![change(1)],
                expired: vec![change(1)],
                ..CommitBatch::default()
            })
            .unwrap();
        let rows = crate::store::notifications::deliveries_of(&mut conn, &[1], None).unwrap();
        assert_eq!(rows[0].status, DeliveryStatus::Acked);
        assert_eq!(store.load(7_000).unwrap().pending.len(), 1);
    }

    #[test]
    fn repeated_sends_in_one_batch_add_up_and_a_repeated_ack_changes_nothing() {
        let (_dir, store, device) = store_with_device();
        store
            .commit(&CommitBatch {
                inserts: vec![op(&device, None), op(&device, None)],
                ..CommitBatch::default()
            })
            .unwrap();
        let change = |seq, at| DeliveryChange {
            seq,
            device: device.clone(),
            at,
        };
        store
            .commit(&CommitBatch {
                sent: vec![change(1, 5_000), change(1, 6_000), change(2, 5_000)],
                acked: vec![change(2, 7_000), change(2, 8_000)],
                ..CommitBatch::default()
            })
            .unwrap();
        let mut conn = store.conn().unwrap();
        let rows = crate::store::notifications::deliveries_of(&mut conn, &[1, 2], None).unwrap();
        let summary = |r: &crate::store::notifications::DeliveryRow| {
            (r.status, r.attempts, r.sent_at, r.acked_at)
        };
        assert_eq!(
            summary(&rows[0]),
            (DeliveryStatus::Sent, 2, Some(6_000), None)
        );
        assert_eq!(
            summary(&rows[1]),
            (DeliveryStatus::Acked, 1, Some(5_000), Some(7_000))
        );
    }
}
