//! The queue's port onto the store: group commits and restores.
//!
//! A [`CommitBatch`] is written in one `BEGIN IMMEDIATE` transaction: new notifications with their
//! delivery rows (after an idempotency-key check), then sent, acked and expired marks. State marks
//! never move a delivery backwards: an acked or expired delivery stays so.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::SqliteConnection;

use beepmyphone_actors::model::{DeviceId, NotificationId, QueuedNotification};
use beepmyphone_actors::ports::{
    self, CommitBatch, InsertOutcome, PendingDelivery, QueueSnapshot, QueueStore,
};

use super::notifications::{NotificationRow, ACKED, EXPIRED, QUEUED, SENT};
use super::schema::{deliveries, notifications};
use super::{devices, Store};

/// How long an idempotency key is remembered, in milliseconds.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3_600 * 1_000;

fn store_err(e: impl std::fmt::Display) -> ports::StoreError {
    ports::StoreError(e.to_string())
}

/// Writes one batch; returns one outcome per insert.
pub fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &CommitBatch,
) -> QueryResult<Vec<InsertOutcome>> {
    conn.immediate_transaction(|conn| {
        let mut outcomes = Vec::with_capacity(batch.inserts.len());
        for op in &batch.inserts {
            let record = &op.record;
            if let Some(key) = &op.idempotency_key {
                let earlier: Option<(i64, String)> = notifications::table
                    .filter(notifications::publisher.eq(&op.publisher))
                    .filter(notifications::idempotency_key.eq(key))
                    .filter(notifications::created_at.gt(record.created_at - IDEMPOTENCY_WINDOW_MS))
                    .select((notifications::seq, notifications::id))
                    .order(notifications::seq.asc())
                    .first(conn)
                    .optional()?;
                if let Some((seq, id)) = earlier {
                    let targets: i64 = deliveries::table
                        .filter(deliveries::notification_seq.eq(seq))
                        .count()
                        .get_result(conn)?;
                    outcomes.push(InsertOutcome::Duplicate {
                        id: NotificationId::from_trusted(id),
                        targets: usize::try_from(targets).unwrap_or(0),
                    });
                    continue;
                }
            }
            let tags = serde_json::to_string(&record.tags).unwrap_or_else(|_| "[]".into());
            let seq: i64 = diesel::insert_into(notifications::table)
                .values((
                    notifications::id.eq(record.id.as_str()),
                    notifications::title.eq(&record.title),
                    notifications::body.eq(&record.body),
                    notifications::app.eq(&record.app),
                    notifications::priority.eq(record.priority.as_i16()),
                    notifications::tags.eq(tags),
                    notifications::click_url.eq(record.click_url.as_deref()),
                    notifications::created_at.eq(record.created_at),
                    notifications::expires_at.eq(record.expires_at),
                    notifications::publisher.eq(&op.publisher),
                    notifications::idempotency_key.eq(op.idempotency_key.as_deref()),
                ))
                .returning(notifications::seq)
                .get_result(conn)?;
            for chunk in op.devices.chunks(500) {
                let rows: Vec<_> = chunk
                    .iter()
                    .map(|device| {
                        (
                            deliveries::notification_seq.eq(seq),
                            deliveries::device_id.eq(device.as_str()),
                            deliveries::status.eq(QUEUED),
                        )
                    })
                    .collect();
                diesel::insert_into(deliveries::table)
                    .values(rows)
                    .execute(conn)?;
            }
            outcomes.push(InsertOutcome::Inserted { seq });
        }
        for change in &batch.sent {
            diesel::update(
                deliveries::table
                    .find((change.seq, change.device.as_str()))
                    .filter(deliveries::status.lt(ACKED)),
            )
            .set((
                deliveries::status.eq(SENT),
                deliveries::attempts.eq(deliveries::attempts + 1),
                deliveries::sent_at.eq(change.at),
            ))
            .execute(conn)?;
        }
        for change in &batch.acked {
            diesel::update(
                deliveries::table
                    .find((change.seq, change.device.as_str()))
                    .filter(deliveries::status.lt(ACKED)),
            )
            .set((
                deliveries::status.eq(ACKED),
                deliveries::acked_at.eq(change.at),
            ))
            .execute(conn)?;
        }
        for change in &batch.expired {
            diesel::update(
                deliveries::table
                    .find((change.seq, change.device.as_str()))
                    .filter(deliveries::status.lt(ACKED)),
            )
            .set(deliveries::status.eq(EXPIRED))
            .execute(conn)?;
        }
        Ok(outcomes)
    })
}

/// Marks expired deliveries and reads everything the queue needs.
pub fn load_snapshot(conn: &mut SqliteConnection, now: i64) -> QueryResult<QueueSnapshot> {
    diesel::update(
        deliveries::table
            .filter(deliveries::status.lt(ACKED))
            .filter(
                deliveries::notification_seq.eq_any(
                    notifications::table
                        .filter(notifications::expires_at.le(now))
                        .select(notifications::seq),
                ),
            ),
    )
    .set(deliveries::status.eq(EXPIRED))
    .execute(conn)?;
    let devices = devices::all(conn)?
        .into_iter()
        .map(|row| (row.device_id(), row.policy()))
        .collect();
    let rows: Vec<NotificationRow> = notifications::table
        .filter(notifications::expires_at.gt(now))
        .filter(
            notifications::seq.eq_any(
                deliveries::table
                    .filter(deliveries::status.lt(ACKED))
                    .select(deliveries::notification_seq),
            ),
        )
        .order(notifications::seq.asc())
        .select(NotificationRow::as_select())
        .load(conn)?;
    let mut index = HashMap::with_capacity(rows.len());
    let mut notes = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        index.insert(row.seq, i);
        let record = row.record();
        notes.push(QueuedNotification {
            payload: record.device_json(),
            id: record.id,
            seq: row.seq,
            priority: record.priority,
            expires_at: record.expires_at,
        });
    }
    let pending_rows: Vec<(i64, String)> = deliveries::table
        .filter(deliveries::status.lt(ACKED))
        .select((deliveries::notification_seq, deliveries::device_id))
        .load(conn)?;
    let pending = pending_rows
        .into_iter()
        .filter_map(|(seq, device)| {
            index.get(&seq).map(|&notification| PendingDelivery {
                device: DeviceId::from_trusted(device),
                notification,
            })
        })
        .collect();
    Ok(QueueSnapshot {
        devices,
        notifications: notes,
        pending,
    })
}

impl QueueStore for Store {
    fn commit(&self, batch: &CommitBatch) -> Result<Vec<InsertOutcome>, ports::StoreError> {
        let mut conn = self.conn().map_err(store_err)?;
        commit_batch(&mut conn, batch).map_err(store_err)
    }

    fn load(&self, now_ms: i64) -> Result<QueueSnapshot, ports::StoreError> {
        let mut conn = self.conn().map_err(store_err)?;
        load_snapshot(&mut conn, now_ms).map_err(store_err)
    }
}
