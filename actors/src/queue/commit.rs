//! The queue's group commit: [`GroupCommit`] collects every row the queue must write (inserts and
//! state changes) into one [`CommitBatch`] while the previous batch is being written, and hands
//! the whole batch to the store as one [`Flush`] on a blocking thread.
//!
//! A clustered queue also reads deliveries back from the store ([`Load`]): each read rides on the
//! next flush, after its batch is written with every state change pending (so an ack made before
//! the read was asked for is in the store when it runs).
//!
//! Its invariants are private: the payloads stay index-aligned with the batch's inserts, each
//! publisher's waiter names the offset and count of its inserts in the batch, at most one flush is
//! in flight (`flushing`), and at most one delayed flush is scheduled (`scheduled`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::model::{DeviceId, NotificationId, QueuedNotification};
use crate::ports::{
    CommitBatch, DeliveryChange, InsertOp, InsertOutcome, QueueSnapshot, QueueStore, StoreError,
};

/// Why an enqueue failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum QueueError {
    /// Some explicit targets are not paired devices, or name groups no device is in:
    /// `(item index, device ids and `group:NAME`s)`.
    #[error("unknown targets")]
    UnknownTargets(Vec<(usize, Vec<String>)>),
    /// The store could not commit; nothing from this request was stored.
    #[error("the store is unavailable: {0}")]
    Store(String),
    /// The queue restarted or stopped before answering.
    #[error("the queue is unavailable")]
    Unavailable,
}

/// What became of one published notification.
#[derive(Debug, Clone, PartialEq)]
pub struct EnqueueOutcome {
    /// The notification's id (the first one's, for a repeated idempotency key).
    pub id: NotificationId,
    /// How many devices it was queued for.
    pub targets: usize,
    /// Whether an earlier notification with the same idempotency key was returned.
    pub duplicate: bool,
    /// Its sequence number in the store (`None` for a duplicate): increasing with each insert.
    pub seq: Option<i64>,
}

/// Where a publisher waits for its answer.
pub(super) type Reply = oneshot::Sender<Result<Vec<EnqueueOutcome>, QueueError>>;

/// A publisher waiting for its inserts `first..first + count` of the batch.
#[derive(Debug)]
struct Waiter {
    first: usize,
    count: usize,
    targets: Vec<usize>,
    reply: Reply,
}

/// A read of pending deliveries from the store (clustered queues only).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Load {
    /// Whose deliveries.
    pub(super) devices: Vec<DeviceId>,
    /// Of these notifications only; `None`: every pending one.
    pub(super) seqs: Option<Vec<i64>>,
    /// Whether it is the first read after the devices connected (they get nothing before it).
    pub(super) initial: bool,
}

/// What the queue should do about the pending batch now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    /// Nothing: the batch is empty, a flush is running, or one is already scheduled.
    Wait,
    /// Flush now.
    Now,
    /// Flush when the commit window closes (the caller schedules it and then calls
    /// [`GroupCommit::window_closed`]).
    Later,
}

/// The group-commit state machine. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    pending: CommitBatch,
    /// Device views of `pending.inserts`, index-aligned with them.
    payloads: Vec<Bytes>,
    waiters: Vec<Waiter>,
    /// Answered when nothing is pending or being committed.
    drain_waiters: Vec<oneshot::Sender<()>>,
    flushing: bool,
    scheduled: bool,
    /// When the oldest pending state change (sent, acked, expired, seen) was made, epoch ms.
    marks_since: Option<i64>,
    /// Reads for the next flush.
    loads: Vec<Load>,
    /// Whether the running flush carries reads.
    reading: bool,
}

impl GroupCommit {
    /// Adds one publisher's inserts (with their device views); `reply` is answered once they are
    /// committed or failed.
    pub(super) fn publish(&mut self, items: Vec<(InsertOp, Bytes)>, reply: Reply) {
        let first = self.pending.inserts.len();
        let count = items.len();
        let targets = items.iter().map(|(op, _)| op.devices.len()).collect();
        for (op, payload) in items {
            self.payloads.push(payload);
            self.pending.inserts.push(op);
        }
        self.waiters.push(Waiter {
            first,
            count,
            targets,
            reply,
        });
    }

    /// A delivery was handed to a socket.
    pub(super) fn sent(&mut self, change: DeliveryChange) {
        self.marked(change.at);
        self.pending.sent.push(change);
    }

    /// A delivery was acknowledged.
    pub(super) fn acked(&mut self, change: DeliveryChange) {
        self.marked(change.at);
        self.pending.acked.push(change);
    }

    /// A delivery expired unacknowledged.
    pub(super) fn expired(&mut self, change: DeliveryChange) {
        self.marked(change.at);
        self.pending.expired.push(change);
    }

    /// A device connected or disconnected at `at`.
    pub(super) fn seen(&mut self, device: DeviceId, at: i64) {
        self.marked(at);
        self.pending.seen.push((device, at));
    }

    fn marked(&mut self, at: i64) {
        self.marks_since.get_or_insert(at);
    }

    /// Asks for a read of the store after the next write.
    pub(super) fn load(&mut self, load: Load) {
        self.loads.push(load);
    }

    /// Whether the running flush reads from the store (an ack made meanwhile may be missing from
    /// what it reads).
    pub(super) fn reading(&self) -> bool {
        self.flushing && self.reading
    }

    /// Whether publishers wait for the pending batch.
    pub(super) fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// Rows waiting for the next commit.
    pub(super) fn uncommitted(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending or being committed.
    pub(super) fn is_idle(&self) -> bool {
        !self.flushing && self.pending.is_empty()
    }

    /// Decides when to commit: at once when `urgent` (publishers wait), when the batch reached
    /// `max_rows`, or when there is no window; else once, when the window closes.
    pub(super) fn plan(&mut self, urgent: bool, max_rows: usize, no_window: bool) -> Plan {
        if self.flushing || (self.pending.is_empty() && self.loads.is_empty()) {
            Plan::Wait
        } else if urgent || !self.loads.is_empty() || self.pending.len() >= max_rows || no_window {
            Plan::Now
        } else if self.scheduled {
            Plan::Wait
        } else {
            self.scheduled = true;
            Plan::Later
        }
    }

    /// The scheduled commit window closed.
    pub(super) fn window_closed(&mut self) {
        self.scheduled = false;
    }

    /// Takes the pending batch for writing, unless it is empty or a flush is already running.
    ///
    /// Publishers' inserts always go. The state changes go with them only once they are due: the
    /// oldest is `window_ms` old at `now_ms`, there are `max_rows` of them, there are no inserts,
    /// someone waits for the queue to drain, or reads go with it. So under a steady publish load
    /// the commits that publishers wait for carry only inserts, and a delivery sent and
    /// acknowledged within the window is written once (as acked) by a later commit.
    pub(super) fn begin(&mut self, now_ms: i64, window_ms: i64, max_rows: usize) -> Option<Flush> {
        if self.flushing || (self.pending.is_empty() && self.loads.is_empty()) {
            return None;
        }
        let marks = self.pending.len() - self.pending.inserts.len();
        let marks_due = self.pending.inserts.is_empty()
            || marks >= max_rows
            || !self.drain_waiters.is_empty()
            || !self.loads.is_empty()
            || self
                .marks_since
                .is_some_and(|since| now_ms.saturating_sub(since) >= window_ms);
        let batch = if marks_due {
            self.marks_since = None;
            std::mem::take(&mut self.pending)
        } else {
            CommitBatch {
                inserts: std::mem::take(&mut self.pending.inserts),
                ..CommitBatch::default()
            }
        };
        self.flushing = true;
        self.reading = !self.loads.is_empty();
        Some(Flush {
            batch,
            payloads: std::mem::take(&mut self.payloads),
            waiters: std::mem::take(&mut self.waiters),
            loads: std::mem::take(&mut self.loads),
            now_ms,
        })
    }

    /// The running flush reported back.
    pub(super) fn finished(&mut self) {
        self.flushing = false;
    }

    /// The actor restarts: a scheduled window is gone with the old context. What is pending, the
    /// waiters and a running flush stay: they describe writes already promised.
    pub(super) fn restarting(&mut self) {
        self.scheduled = false;
    }

    /// A receiver answered once nothing is pending or being committed; `None` if that is now.
    pub(super) fn wait_drained(&mut self) -> Option<oneshot::Receiver<()>> {
        if self.is_idle() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        Some(rx)
    }

    /// Answers the drain waiters if nothing is pending or being committed.
    pub(super) fn answer_drained(&mut self) {
        if self.is_idle() {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(()); // the caller may have given up waiting
            }
        }
    }
}

/// One batch on its way to the store.
#[derive(Debug)]
pub(super) struct Flush {
    batch: CommitBatch,
    payloads: Vec<Bytes>,
    waiters: Vec<Waiter>,
    loads: Vec<Load>,
    now_ms: i64,
}

/// What a [`Flush`] wrote: the new notifications for the heaps, and the publishers' answers.
#[derive(Debug)]
pub(super) struct Written {
    /// Newly stored notifications and the devices they are for.
    pub(super) inserted: Vec<(Arc<QueuedNotification>, Vec<DeviceId>)>,
    /// The publishers' answers, given once the notifications are in the heaps.
    pub(super) answers: Answers,
    /// The reads, in the order asked, with what they found (a read after a failed write fails).
    pub(super) loaded: Vec<(Load, Result<QueueSnapshot, StoreError>)>,
}

/// Publishers' answers, to send with [`Answers::send`].
#[derive(Debug)]
pub(super) struct Answers(Vec<(Reply, Result<Vec<EnqueueOutcome>, QueueError>)>);

impl Answers {
    /// Answers every publisher.
    pub(super) fn send(self) {
        for (reply, answer) in self.0 {
            let _ = reply.send(answer); // the publisher may have gone away
        }
    }
}

impl Flush {
    /// Whether this flush reads from the store after writing.
    pub(super) fn reads(&self) -> bool {
        !self.loads.is_empty()
    }

    /// Rows this flush writes.
    pub(super) fn rows(&self) -> usize {
        self.batch.len()
    }

    /// Writes the batch in one transaction, then makes the reads. Blocks: call it on a blocking
    /// thread.
    pub(super) fn write(self, store: &dyn QueueStore, log: &slog::Logger) -> Written {
        let Flush {
            batch,
            payloads,
            waiters,
            loads,
            now_ms,
        } = self;
        let mut inserted = Vec::new();
        let committed = if batch.is_empty() {
            Ok(Vec::new())
        } else {
            store.commit(&batch)
        };
        let loaded = loads
            .into_iter()
            .map(|load| {
                let found = match &committed {
                    Ok(_) => store.pending(&load.devices, load.seqs.as_deref(), now_ms),
                    Err(e) => Err(StoreError(format!(
                        "not read: the write before it failed: {e}"
                    ))),
                };
                (load, found)
            })
            .collect();
        let answers = match committed {
            Ok(outcomes) => {
                for (op, (outcome, payload)) in
                    batch.inserts.into_iter().zip(outcomes.iter().zip(payloads))
                {
                    if let InsertOutcome::Inserted { seq } = outcome {
                        slog::debug!(log, "notification committed"; "notification_id" => %op.record.id, "trace_id" => op.record.trace_id, "seq" => *seq, "devices" => op.devices.len());
                        let note = QueuedNotification {
                            id: op.record.id,
                            seq: *seq,
                            priority: op.record.priority,
                            expires_at: op.record.expires_at,
                            created_at: op.record.created_at,
                            payload,
                            trace_id: op.record.trace_id,
                        };
                        inserted.push((Arc::new(note), op.devices));
                    }
                }
                let ids = inserted_ids(&inserted);
                waiters
                    .into_iter()
                    .map(|waiter| {
                        let answer = outcomes
                            .get(waiter.first..waiter.first + waiter.count)
                            .map(|slice| answer(slice, &ids, &waiter.targets))
                            .unwrap_or(Err(QueueError::Unavailable));
                        (waiter.reply, answer)
                    })
                    .collect()
            }
            Err(e) => {
                slog::error!(log, "group commit failed"; "error" => %e, "rows" => batch.len());
                waiters
                    .into_iter()
                    .map(|w| (w.reply, Err(QueueError::Store(e.to_string()))))
                    .collect()
            }
        };
        Written {
            inserted,
            answers: Answers(answers),
            loaded,
        }
    }
}

fn inserted_ids(
    inserted: &[(Arc<QueuedNotification>, Vec<DeviceId>)],
) -> HashMap<i64, NotificationId> {
    inserted
        .iter()
        .map(|(n, _)| (n.seq, n.id.clone()))
        .collect()
}

fn answer(
    outcomes: &[InsertOutcome],
    ids: &HashMap<i64, NotificationId>,
    targets: &[usize],
) -> Result<Vec<EnqueueOutcome>, QueueError> {
    outcomes
        .iter()
        .zip(targets)
        .map(|(outcome, &targets)| match outcome {
            InsertOutcome::Inserted { seq } => ids
                .get(seq)
                .map(|id| EnqueueOutcome {
                    id: id.clone(),
                    targets,
                    duplicate: false,
                    seq: Some(*seq),
                })
                .ok_or(QueueError::Unavailable),
            InsertOutcome::Duplicate { id, targets } => Ok(EnqueueOutcome {
                id: id.clone(),
                targets: *targets,
                duplicate: true,
                seq: None,
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NotificationRecord, Priority};

    fn insert() -> (InsertOp, Bytes) {
        let record = NotificationRecord {
            id: NotificationId::generate(),
            title: "t".into(),
            body: String::new(),
            app: "test".into(),
            priority: Priority::Normal,
            tags: vec![],
            click_url: None,
            created_at: 0,
            expires_at: 1,
            trace_id: None,
            encrypted: None,
        };
        let op = InsertOp {
            record,
            devices: vec![DeviceId::from_trusted("dev_a")],
            publisher: "tok".into(),
            idempotency_key: None,
        };
        (op, Bytes::from_static(b"{}"))
    }

    fn change(seq: i64, at: i64) -> DeliveryChange {
        DeliveryChange {
            seq,
            device: DeviceId::from_trusted("dev_a"),
            at,
        }
    }

    fn rows(flush: &Flush) -> (usize, usize, usize) {
        let b = &flush.batch;
        (b.inserts.len(), b.sent.len(), b.acked.len())
    }

    #[test]
    fn publishers_commits_leave_young_state_changes_for_a_later_commit() {
        let mut commit = GroupCommit::default();
        commit.sent(change(1, 1_000));
        commit.acked(change(1, 1_002));
        commit.publish(vec![insert()], oneshot::channel().0);
        // 4 ms after the first change, window 5 ms: the publisher's insert goes alone.
        let flush = commit.begin(1_004, 5, 100).unwrap();
        assert_eq!(rows(&flush), (1, 0, 0));
        assert!(commit.begin(1_004, 5, 100).is_none(), "one flush at a time");
        commit.finished();
        // Another insert once the oldest change is 5 ms old: everything goes.
        commit.publish(vec![insert()], oneshot::channel().0);
        commit.sent(change(2, 1_005));
        let flush = commit.begin(1_005, 5, 100).unwrap();
        assert_eq!(rows(&flush), (1, 2, 1));
        commit.finished();
        assert_eq!(commit.uncommitted(), 0);
    }

    #[test]
    fn a_read_flushes_alone_or_takes_every_pending_change_with_it() {
        let mut commit = GroupCommit::default();
        let load = Load {
            devices: vec![DeviceId::from_trusted("dev_a")],
            seqs: None,
            initial: true,
        };
        commit.load(load.clone());
        assert_eq!(
            commit.plan(false, 100, false),
            Plan::Now,
            "a read never waits"
        );
        let flush = commit.begin(1_000, 5, 100).unwrap();
        assert!(flush.reads() && commit.reading());
        assert_eq!(rows(&flush), (0, 0, 0));
        commit.finished();
        assert!(!commit.reading());
        // A young ack would wait for the window; a read takes it along, so it is written first.
        commit.acked(change(1, 1_000));
        commit.publish(vec![insert()], oneshot::channel().0);
        commit.load(load);
        let flush = commit.begin(1_001, 5, 100).unwrap();
        assert_eq!(rows(&flush), (1, 0, 1));
        assert!(commit.begin(1_001, 5, 100).is_none());
    }

    #[test]
    fn state_changes_go_at_once_without_inserts_at_the_row_limit_or_for_a_drain() {
        let mut commit = GroupCommit::default();
        commit.sent(change(1, 1_000));
        let flush = commit.begin(1_000, 5, 100).unwrap();
        assert_eq!(
            rows(&flush),
            (0, 1, 0),
            "nothing else to commit: no reason to wait"
        );
        commit.finished();

        commit.sent(change(2, 1_000));
        commit.acked(change(2, 1_000));
        commit.publish(vec![insert()], oneshot::channel().0);
        assert_eq!(
            rows(&commit.begin(1_000, 5, 2).unwrap()),
            (1, 1, 1),
            "two marks: the limit"
        );
        commit.finished();

        commit.sent(change(3, 1_000));
        commit.publish(vec![insert()], oneshot::channel().0);
        assert!(commit.wait_drained().is_some());
        assert_eq!(
            rows(&commit.begin(1_000, 5, 100).unwrap()),
            (1, 1, 0),
            "a drain takes all"
        );
    }
}
