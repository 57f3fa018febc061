//! The queue's durable store, [`QueueStore`], and what it reads and writes.
//!
//! The queue's store is synchronous (diesel on SQLite); the queue calls it on a blocking thread,
//! never on an actor's own thread.

use crate::model::{
    DeviceId, DevicePolicy, NotificationId, NotificationRecord, QueuedNotification,
};

/// A failure of the durable store.
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// One notification to insert, with the devices it was resolved to.
#[derive(Debug)]
pub struct InsertOp {
    /// The validated notification.
    pub record: NotificationRecord,
    /// The devices that get a delivery row.
    pub devices: Vec<DeviceId>,
    /// Who published it (token or principal id), scoping the idempotency key.
    pub publisher: String,
    /// The publisher's idempotency key, if any.
    pub idempotency_key: Option<String>,
}

/// What became of an [`InsertOp`].
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    /// Stored with this sequence number.
    Inserted {
        /// Age order within a priority.
        seq: i64,
    },
    /// The idempotency key was seen within 24 h: nothing new was stored.
    Duplicate {
        /// The first notification's id.
        id: NotificationId,
        /// How many devices it targeted.
        targets: usize,
    },
}

/// A change of one delivery's state.
#[derive(Debug, Clone)]
pub struct DeliveryChange {
    /// Which notification.
    pub seq: i64,
    /// Which device.
    pub device: DeviceId,
    /// When, epoch milliseconds.
    pub at: i64,
}

/// Everything the queue writes in one group commit (one transaction).
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// New notifications and their deliveries.
    pub inserts: Vec<InsertOp>,
    /// Deliveries handed to a socket (attempts + 1).
    pub sent: Vec<DeliveryChange>,
    /// Deliveries acknowledged by their device.
    pub acked: Vec<DeliveryChange>,
    /// Deliveries whose notification expired before it was acknowledged.
    pub expired: Vec<DeliveryChange>,
    /// Devices that connected or disconnected, and when (their `last_seen_at`).
    pub seen: Vec<(DeviceId, i64)>,
}

impl CommitBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty()
            && self.sent.is_empty()
            && self.acked.is_empty()
            && self.expired.is_empty()
            && self.seen.is_empty()
    }

    /// Rows this batch touches, for sizing group commits.
    pub fn len(&self) -> usize {
        self.inserts.len()
            + self.sent.len()
            + self.acked.len()
            + self.expired.len()
            + self.seen.len()
    }
}

/// A pending delivery restored from the store.
#[derive(Debug)]
pub struct PendingDelivery {
    /// The device it is for.
    pub device: DeviceId,
    /// Index into [`QueueSnapshot::notifications`].
    pub notification: usize,
    /// Whether it was sent before (its next send is a redelivery).
    pub sent_before: bool,
}

/// Everything the queue needs to rebuild itself after a start or restart.
#[derive(Debug, Default)]
pub struct QueueSnapshot {
    /// Every device and its policy.
    pub devices: Vec<(DeviceId, DevicePolicy)>,
    /// Unexpired notifications with at least one delivery not yet acknowledged.
    pub notifications: Vec<QueuedNotification>,
    /// Deliveries not yet acknowledged nor expired.
    pub pending: Vec<PendingDelivery>,
    /// Rows the store left out because they are corrupt (one description each, naming table,
    /// column and row); the queue logs each as an error. Their deliveries stay in the store,
    /// untouched, until the row is repaired and the queue reloads.
    pub corrupt: Vec<String>,
}

/// The durable store behind the notification queue.
pub trait QueueStore: Send + Sync + 'static {
    /// Writes a batch in one transaction; returns one outcome per insert, in order.
    fn commit(&self, batch: &CommitBatch) -> Result<Vec<InsertOutcome>, StoreError>;
    /// Reads every device policy and every pending delivery.
    fn load(&self, now_ms: i64) -> Result<QueueSnapshot, StoreError>;
    /// Reads the pending deliveries of `devices` (of the notifications `seqs` only, when given)
    /// unexpired at `now_ms`; the snapshot's `devices` is empty. Read-only.
    fn pending(
        &self,
        devices: &[DeviceId],
        seqs: Option<&[i64]>,
        now_ms: i64,
    ) -> Result<QueueSnapshot, StoreError>;
}
