//! The retention sweep: a notification whose every delivery is finished (acked or expired) is
//! deleted `delivery.keep_finished_seconds` after its creation, with its deliveries and tag index
//! rows (`ON DELETE CASCADE`). Without it the database grows with every notification ever sent.
//!
//! The sweep runs once at start and then every [`SWEEP_EVERY`] of the injected clock, in batches of
//! [`BATCH`] rows: each batch is read on a pooled connection and deleted at one turn of the write
//! gate, and the next waits at least as long as that delete took (and [`MIN_PAUSE`]), so that the
//! sweep holds the gate at most half the time and group commits go on between its batches. (The
//! soak at 1,000 notifications/s put the relay's p99 at ≤ 250 ms with 5,000-row batches back to
//! back, ≤ 25–50 ms with 500-row ones, ≤ 10–25 ms with 100: docs/benchmarks.md.) A notification still waiting for a device is never deleted;
//! it is finished when its last delivery is acked or expires.

use std::time::Duration;

use diesel::dsl::{exists, not};
use diesel::prelude::*;
use futures_util::StreamExt;

use beepmyphone_actors::clock::SharedClock;

use super::queue_store::PENDING;
use super::schema::{deliveries, notifications};
use super::{Db, Store, StoreError};

/// Notifications deleted per batch.
pub const BATCH: i64 = 100;

/// The shortest wait between two batches.
pub const MIN_PAUSE: Duration = Duration::from_millis(5);

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Up to `limit` notifications created before `before` (epoch ms) with no unfinished delivery,
/// oldest first. It reads in store order only as far as the first notification young enough to
/// keep, so a sweep costs the old rows, not the whole table.
pub fn finished_before(conn: &mut Db, before: i64, limit: i64) -> QueryResult<Vec<i64>> {
    let young: Option<i64> = notifications::table
        .filter(notifications::created_at.ge(before))
        .select(notifications::seq)
        .order(notifications::seq)
        .first(conn)
        .optional()?;
    let mut query = notifications::table
        .filter(notifications::created_at.lt(before))
        .filter(not(exists(unfinished())))
        .select(notifications::seq)
        .order(notifications::seq)
        .limit(limit)
        .into_boxed();
    if let Some(young) = young {
        query = query.filter(notifications::seq.lt(young));
    }
    query.load(conn)
}

/// Deletes the notifications `seqs` that still have no unfinished delivery; how many.
pub fn delete_finished(conn: &mut Db, seqs: &[i64]) -> QueryResult<usize> {
    diesel::delete(
        notifications::table
            .filter(notifications::seq.eq_any(seqs))
            .filter(not(exists(unfinished()))),
    )
    .execute(conn)
}

/// The deliveries of the outer query's notification that are queued or sent.
fn unfinished() -> diesel::dsl::Filter<
    diesel::dsl::Filter<
        deliveries::table,
        diesel::dsl::Eq<deliveries::notification_seq, notifications::seq>,
    >,
    diesel::expression::SqlLiteral<diesel::sql_types::Bool>,
> {
    deliveries::table
        .filter(deliveries::notification_seq.eq(notifications::seq))
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(PENDING))
}

/// One sweep: deletes every finished notification created before `before`; how many.
pub async fn sweep(store: &Store, before: i64) -> Result<usize, StoreError> {
    let mut deleted = 0;
    loop {
        let seqs = store
            .run(move |conn| Ok(finished_before(conn, before, BATCH)?))
            .await?;
        let found = seqs.len();
        if found == 0 {
            return Ok(deleted);
        }
        let began = std::time::Instant::now();
        let gone = store
            .write(move |conn| Ok(delete_finished(conn, &seqs)?))
            .await?;
        deleted += gone;
        if gone == 0 || i64::try_from(found).unwrap_or(i64::MAX) < BATCH {
            return Ok(deleted);
        }
        // Real time, not the injected clock: this paces the sweep against the commits.
        tokio::time::sleep(began.elapsed().max(MIN_PAUSE)).await;
    }
}

/// Starts the sweep on the current arbiter, keeping finished notifications for `keep`; abort the
/// handle to stop it. A failed sweep is logged and tried again at the next tick.
pub fn spawn(
    store: Store,
    clock: SharedClock,
    keep: Duration,
    log: slog::Logger,
) -> actix_rt::task::JoinHandle<()> {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    actix_rt::spawn(async move {
        let mut ticks = clock.interval(SWEEP_EVERY);
        loop {
            match sweep(&store, clock.now_ms().saturating_sub(keep_ms)).await {
                Ok(0) => {}
                Ok(deleted) => {
                    slog::debug!(log, "finished notifications deleted"; "count" => deleted)
                }
                Err(e) => slog::warn!(log, "the retention sweep failed"; "error" => %e),
            }
            if ticks.next().await.is_none() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeliveryStatus;
    use crate::store::queue_store::commit_batch;
    use crate::store::queue_store::tests::{op, store_with_device};
    use beepmyphone_actors::model::DeviceId;
    use beepmyphone_actors::ports::CommitBatch;

    /// A store with one device and a notification to it created at each of `created` (epoch ms),
    /// seqs 1, 2, …
    fn store_with(created: &[i64]) -> (tempfile::TempDir, Store, DeviceId) {
        let (dir, store, device) = store_with_device();
        let inserts = created
            .iter()
            .map(|&at| {
                let mut insert = op(&device, None);
                insert.record.created_at = at;
                insert
            })
            .collect();
        let batch = CommitBatch {
            inserts,
            ..CommitBatch::default()
        };
        let cipher = store.cipher().unwrap().clone();
        commit_batch(&mut store.conn().unwrap(), &cipher, &batch).unwrap();
        (dir, store, device)
    }

    fn set_status(store: &Store, seq: i64, status: DeliveryStatus) {
        diesel::update(deliveries::table.filter(deliveries::notification_seq.eq(seq)))
            .set(deliveries::status.eq(status))
            .execute(&mut store.conn().unwrap())
            .unwrap();
    }

    fn seqs(store: &Store) -> Vec<i64> {
        notifications::table
            .select(notifications::seq)
            .order(notifications::seq)
            .load(&mut store.conn().unwrap())
            .unwrap()
    }

    fn rows(store: &Store, table: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}"))
            .get_result::<Count>(&mut store.conn().unwrap())
            .unwrap()
            .n
    }

    #[actix_rt::test]
    async fn only_old_notifications_with_every_delivery_finished_are_deleted_with_their_rows() {
        // 1 acked and old, 2 expired and old, 3 sent and old, 4 queued and old, 5 acked and young.
        let (_dir, store, _device) = store_with(&[100, 200, 300, 400, 5_000]);
        set_status(&store, 1, DeliveryStatus::Acked);
        set_status(&store, 2, DeliveryStatus::Expired);
        set_status(&store, 3, DeliveryStatus::Sent);
        set_status(&store, 5, DeliveryStatus::Acked);
        assert_eq!(rows(&store, "notification_tags"), 5);
        assert_eq!(sweep(&store, 1_000).await.unwrap(), 2);
        assert_eq!(seqs(&store), vec![3, 4, 5]);
        assert_eq!(rows(&store, "deliveries"), 3, "deliveries go with them");
        assert_eq!(
            rows(&store, "notification_tags"),
            3,
            "and their tag index rows"
        );
        // Once the waiting ones finish, the next sweep takes them; the young one stays.
        set_status(&store, 3, DeliveryStatus::Acked);
        set_status(&store, 4, DeliveryStatus::Expired);
        assert_eq!(sweep(&store, 1_000).await.unwrap(), 2);
        assert_eq!(seqs(&store), vec![5]);
        assert_eq!(sweep(&store, 1_000).await.unwrap(), 0);
    }

    #[actix_rt::test]
    async fn a_sweep_goes_on_in_batches_until_nothing_old_is_left() {
        let created: Vec<i64> = (0..BATCH * 2 + 7).collect();
        let (_dir, store, _device) = store_with(&created);
        diesel::update(deliveries::table)
            .set(deliveries::status.eq(DeliveryStatus::Acked))
            .execute(&mut store.conn().unwrap())
            .unwrap();
        // Everything before BATCH + 3 goes: more than one batch, and the rest is young.
        assert_eq!(
            sweep(&store, BATCH + 3).await.unwrap(),
            usize::try_from(BATCH + 3).unwrap()
        );
        assert_eq!(seqs(&store).first(), Some(&(BATCH + 4)));
    }

    #[test]
    fn the_search_stops_at_the_first_young_notification_and_the_delete_rechecks() {
        // Store order and creation order can disagree by a little (seq is taken at commit): a
        // notification behind a younger one waits for a later sweep rather than costing a scan.
        let (_dir, store, _device) = store_with(&[100, 5_000, 200]);
        for seq in 1..=3 {
            set_status(&store, seq, DeliveryStatus::Acked);
        }
        let mut conn = store.conn().unwrap();
        assert_eq!(finished_before(&mut conn, 1_000, 10).unwrap(), vec![1]);
        assert_eq!(finished_before(&mut conn, 10_000, 1).unwrap(), vec![1]);
        drop(conn);
        // A delivery that is unfinished after all keeps its notification.
        set_status(&store, 1, DeliveryStatus::Queued);
        let mut conn = store.conn().unwrap();
        assert_eq!(delete_finished(&mut conn, &[1, 2]).unwrap(), 1);
        assert_eq!(seqs(&store), vec![1, 3]);
    }
}
