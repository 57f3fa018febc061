//! The notification queue: per-device priority heaps, in-flight deliveries and ack timeouts, in
//! front of a group-committed durable store.
//!
//! Publishes arrive as [`Enqueue`]; they are collected into one [`CommitBatch`] and written in a
//! single transaction on a blocking thread while the next batch collects (group commit sized by
//! load). Publishers are answered only after their rows are committed. Committed notifications go
//! into each target device's heap (priority, then age); devices that are online get them through
//! the [`Deliver`] recipient (the batcher) up to `max_in_flight` unacknowledged items each. An
//! [`Ack`] ends a delivery; an unacked one goes back to the heap when its ack timeout passes or its
//! device goes offline. On start and on every supervised restart the queue reloads pending
//! deliveries from the store, so a panic or a crash loses nothing that was committed.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::batcher::Deliver;
use crate::clock::SharedClock;
use crate::guard::guarded;
use crate::model::{
    DeviceId, DevicePolicy, NotificationId, NotificationRecord, QueuedNotification,
};
use crate::ports::{
    CommitBatch, DeliveryChange, InsertOp, InsertOutcome, QueueSnapshot, QueueStore,
};

/// Why an enqueue failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum QueueError {
    /// Some explicit targets are not paired devices: `(item index, ids)`.
    #[error("unknown target devices")]
    UnknownTargets(Vec<(usize, Vec<String>)>),
    /// The store could not commit; nothing from this request was stored.
    #[error("the store is unavailable: {0}")]
    Store(String),
    /// The queue restarted or stopped before answering.
    #[error("the queue is unavailable")]
    Unavailable,
}

/// Which devices a notification goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Every enabled device whose minimum priority it meets.
    All,
    /// These devices (each must exist).
    Devices(Vec<DeviceId>),
}

/// One validated notification to publish.
#[derive(Debug)]
pub struct NewNotification {
    /// The notification.
    pub record: NotificationRecord,
    /// Its device view, serialised once by the caller.
    pub payload: Bytes,
    /// Who gets it.
    pub targets: Targets,
    /// Repeating the key within 24 h returns the first notification instead of a new one.
    pub idempotency_key: Option<String>,
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
}

/// Publishes notifications; answers once they are durably stored (all or nothing).
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<EnqueueOutcome>, QueueError>")]
pub struct Enqueue {
    /// The notifications, in request order.
    pub items: Vec<NewNotification>,
    /// The publishing principal, which scopes idempotency keys.
    pub publisher: String,
}

/// A device acknowledged these notifications.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Ack {
    /// The acknowledging device.
    pub device: DeviceId,
    /// The acknowledged notification ids.
    pub ids: Vec<NotificationId>,
}

/// A device now has at least one live socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct DeviceOnline {
    /// The device.
    pub device: DeviceId,
}

/// A device's last socket closed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct DeviceOffline {
    /// The device.
    pub device: DeviceId,
}

/// A device was paired or its settings changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct UpsertDevice {
    /// The device.
    pub device: DeviceId,
    /// Its delivery policy.
    pub policy: DevicePolicy,
}

/// A device was deleted; its queue is dropped (the store cascades its deliveries).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct RemoveDevice {
    /// The device.
    pub device: DeviceId,
}

/// Counts for health checks and metrics.
#[derive(Message, Debug)]
#[rtype(result = "QueueStats")]
pub struct GetQueueStats;

/// The queue's counts.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Known devices.
    pub devices: usize,
    /// Devices with a live socket.
    pub online: usize,
    /// Deliveries waiting to be sent.
    pub ready: usize,
    /// Deliveries sent and not yet acknowledged.
    pub in_flight: usize,
    /// Rows waiting for the next group commit.
    pub uncommitted: usize,
}

/// Commits everything pending now and answers once the store has it (used at shutdown, so that
/// sent and acked marks waiting for the commit window are not lost).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

/// Chaos hook: makes the queue panic inside a handler, to exercise supervision.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct InjectFault;

/// Where a publisher waits for its answer.
type Reply = oneshot::Sender<Result<Vec<EnqueueOutcome>, QueueError>>;

/// A group commit finished (sent by the blocking writer).
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Committed {
    /// Newly stored notifications and the devices they are for.
    inserted: Vec<(Arc<QueuedNotification>, Vec<DeviceId>)>,
    /// The publishers' answers, given once the notifications are in the heaps.
    answers: Vec<(Reply, Result<Vec<EnqueueOutcome>, QueueError>)>,
}

/// The queue's tunables.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// How long a sent delivery waits for its ack before it is sent again.
    pub ack_timeout: Duration,
    /// Unacknowledged deliveries per device before the queue waits for acks.
    pub max_in_flight: usize,
    /// How long state changes (sent/acked) may wait to share a commit; publishes never wait for it.
    pub commit_window: Duration,
    /// A batch this large is committed at once.
    pub commit_max_rows: usize,
    /// How often expired notifications are swept out of the heaps.
    pub expiry_sweep: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            max_in_flight: 256,
            commit_window: Duration::from_millis(5),
            commit_max_rows: 2_000,
            expiry_sweep: Duration::from_secs(60),
        }
    }
}

/// Heap entry: highest priority first, then lowest sequence (oldest) first.
struct ReadyEntry(Arc<QueuedNotification>);

impl PartialEq for ReadyEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ReadyEntry {}
impl PartialOrd for ReadyEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ReadyEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.priority, Reverse(self.0.seq)).cmp(&(other.0.priority, Reverse(other.0.seq)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SlotState {
    Ready,
    InFlight { deadline: i64 },
}

struct Slot {
    note: Arc<QueuedNotification>,
    state: SlotState,
}

/// One device's deliveries: a `BinaryHeap` of ready ones (priority, then store sequence) and a
/// slot per delivery it holds (ready or in flight, with its ack deadline).
///
/// The heap may hold stale entries (acknowledged, expired or already in flight): removing from the
/// middle of a heap is O(n), so they are skipped when they reach the top instead. Public so that
/// `benches/queue.rs` measures the real structure; the queue actor is its only other user.
#[derive(Default)]
pub struct DeviceQueue {
    policy: DevicePolicy,
    ready: BinaryHeap<ReadyEntry>,
    slots: HashMap<NotificationId, Slot>,
    in_flight: usize,
}

impl DeviceQueue {
    /// An empty queue for a device with `policy`.
    pub fn new(policy: DevicePolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// Adds a delivery unless the device already has it (restores and late commits may overlap).
    pub fn add(&mut self, note: &Arc<QueuedNotification>) -> bool {
        if self.slots.contains_key(&note.id) {
            return false;
        }
        self.slots.insert(
            note.id.clone(),
            Slot {
                note: note.clone(),
                state: SlotState::Ready,
            },
        );
        self.ready.push(ReadyEntry(note.clone()));
        true
    }

    /// The ready delivery that goes next, after discarding stale heap entries on the way.
    pub fn peek_ready(&mut self) -> Option<&Arc<QueuedNotification>> {
        while let Some(top) = self.ready.peek() {
            let fresh = self
                .slots
                .get(&top.0.id)
                .is_some_and(|slot| slot.state == SlotState::Ready);
            if fresh {
                break;
            }
            self.ready.pop();
        }
        self.ready.peek().map(|entry| &entry.0)
    }

    /// Takes the delivery [`peek_ready`](Self::peek_ready) returned and marks it in flight until
    /// `deadline`. Call it only right after `peek_ready` returned `Some`.
    pub fn send_next(&mut self, deadline: i64) -> Option<Arc<QueuedNotification>> {
        let ReadyEntry(note) = self.ready.pop()?;
        if let Some(slot) = self.slots.get_mut(&note.id) {
            slot.state = SlotState::InFlight { deadline };
        }
        self.in_flight += 1;
        Some(note)
    }

    /// Drops the delivery [`peek_ready`](Self::peek_ready) returned (it expired).
    pub fn drop_next(&mut self) -> Option<Arc<QueuedNotification>> {
        let ReadyEntry(note) = self.ready.pop()?;
        self.slots.remove(&note.id);
        Some(note)
    }

    /// Ends the delivery of `id` (acknowledged); returns its notification if the device had it.
    pub fn ack(&mut self, id: &NotificationId) -> Option<Arc<QueuedNotification>> {
        let slot = self.slots.remove(id)?;
        if matches!(slot.state, SlotState::InFlight { .. }) {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        Some(slot.note)
    }

    /// Deliveries sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Deliveries held (ready or in flight).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the device has no deliveries.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Moves every in-flight delivery back to the heap.
    fn requeue_in_flight(&mut self) {
        for slot in self.slots.values_mut() {
            if matches!(slot.state, SlotState::InFlight { .. }) {
                slot.state = SlotState::Ready;
                self.ready.push(ReadyEntry(slot.note.clone()));
            }
        }
        self.in_flight = 0;
    }
}

struct Waiter {
    first: usize,
    count: usize,
    targets: Vec<usize>,
    reply: Reply,
}

/// The queue actor. See the module documentation.
pub struct NotificationQueue {
    config: QueueConfig,
    store: Arc<dyn QueueStore>,
    clock: SharedClock,
    log: slog::Logger,
    deliver: Recipient<Deliver>,
    devices: HashMap<DeviceId, DeviceQueue>,
    /// Devices with live sockets; kept across restarts (the registry is its source).
    online: HashSet<DeviceId>,
    /// Devices with ready items held back by quiet hours.
    held: HashSet<DeviceId>,
    /// Ack deadlines in send order (the timeout is constant, so deadlines are too).
    deadlines: VecDeque<(i64, DeviceId, NotificationId)>,
    pending: CommitBatch,
    payloads: Vec<Bytes>,
    waiters: Vec<Waiter>,
    /// Answered when nothing is pending or being committed.
    drain_waiters: Vec<oneshot::Sender<()>>,
    flushing: bool,
    flush_scheduled: bool,
    last_sweep: i64,
}

impl NotificationQueue {
    /// A queue over `store`, delivering through `deliver`.
    pub fn new(
        config: QueueConfig,
        store: Arc<dyn QueueStore>,
        clock: SharedClock,
        deliver: Recipient<Deliver>,
        log: slog::Logger,
    ) -> Self {
        Self {
            config,
            store,
            clock,
            log,
            deliver,
            devices: HashMap::new(),
            online: HashSet::new(),
            held: HashSet::new(),
            deadlines: VecDeque::new(),
            pending: CommitBatch::default(),
            payloads: Vec::new(),
            waiters: Vec::new(),
            drain_waiters: Vec::new(),
            flushing: false,
            flush_scheduled: false,
            last_sweep: 0,
        }
    }

    /// Reloads devices and pending deliveries; the mailbox waits until it is done.
    fn load(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let now = self.clock.now_ms();
        let load = async move {
            tokio::task::spawn_blocking(move || store.load(now))
                .await
                .map_err(|e| crate::ports::StoreError(e.to_string()))
                .and_then(|r| r)
        };
        ctx.wait(load.into_actor(self).map(|result, act, ctx| match result {
            Ok(snapshot) => act.restore(snapshot),
            Err(e) => {
                slog::error!(act.log, "could not load the queue from the store; retrying"; "error" => %e);
                ctx.run_later(Duration::from_secs(1), |act, ctx| act.load(ctx));
            }
        }));
    }

    fn restore(&mut self, snapshot: QueueSnapshot) {
        self.devices.clear();
        self.deadlines.clear();
        self.held.clear();
        for (device, policy) in snapshot.devices {
            self.devices.insert(
                device,
                DeviceQueue {
                    policy,
                    ..DeviceQueue::default()
                },
            );
        }
        let notes: Vec<Arc<QueuedNotification>> =
            snapshot.notifications.into_iter().map(Arc::new).collect();
        let mut restored = 0usize;
        for pending in snapshot.pending {
            if let (Some(queue), Some(note)) = (
                self.devices.get_mut(&pending.device),
                notes.get(pending.notification),
            ) {
                restored += usize::from(queue.add(note));
            }
        }
        slog::info!(self.log, "queue restored"; "devices" => self.devices.len(), "pending" => restored);
        let online: Vec<DeviceId> = self.online.iter().cloned().collect();
        for device in online {
            self.dispatch(&device);
        }
    }

    /// Sends what `device` may receive now, up to its in-flight window.
    fn dispatch(&mut self, device: &DeviceId) {
        if !self.online.contains(device) {
            return;
        }
        let Some(queue) = self.devices.get_mut(device) else {
            return;
        };
        let now = self.clock.now_ms();
        let room = self.config.max_in_flight.saturating_sub(queue.in_flight);
        let deadline = now + i64::try_from(self.config.ack_timeout.as_millis()).unwrap_or(i64::MAX);
        let mut items = Vec::new();
        while items.len() < room {
            let Some((expires_at, priority)) =
                queue.peek_ready().map(|n| (n.expires_at, n.priority))
            else {
                break;
            };
            if expires_at <= now {
                if let Some(note) = queue.drop_next() {
                    self.pending.expired.push(DeliveryChange {
                        seq: note.seq,
                        device: device.clone(),
                        at: now,
                    });
                }
                continue;
            }
            if !queue.policy.may_send(priority, now) {
                self.held.insert(device.clone());
                break;
            }
            let Some(note) = queue.send_next(deadline) else {
                break;
            };
            self.deadlines
                .push_back((deadline, device.clone(), note.id.clone()));
            self.pending.sent.push(DeliveryChange {
                seq: note.seq,
                device: device.clone(),
                at: now,
            });
            items.push(note);
        }
        if !items.is_empty() {
            self.deliver.do_send(Deliver {
                device: device.clone(),
                items,
            });
        }
    }

    /// Queues a commit of what is pending: at once when publishers wait, else after the window.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>, urgent: bool) {
        if self.flushing || self.pending.is_empty() {
            return;
        }
        if urgent
            || self.pending.len() >= self.config.commit_max_rows
            || self.config.commit_window.is_zero()
        {
            self.flush(ctx);
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(self.config.commit_window, |act, ctx| {
                act.flush_scheduled = false;
                act.flush(ctx);
            });
        }
    }

    /// Commits the pending batch on a blocking thread. One commit is in flight at a time; what
    /// arrives meanwhile shares the next one.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.pending.is_empty() {
            return;
        }
        self.flushing = true;
        let batch = std::mem::take(&mut self.pending);
        let payloads = std::mem::take(&mut self.payloads);
        let waiters = std::mem::take(&mut self.waiters);
        let store = self.store.clone();
        let addr = ctx.address();
        let log = self.log.clone();
        // The writer reports back by message, not through a future tied to this actor's context:
        // a restart in the meantime loses neither the answer to the publishers nor the rows.
        tokio::task::spawn_blocking(move || {
            let result = store.commit(&batch);
            let mut inserted = Vec::new();
            let answers = match result {
                Ok(outcomes) => {
                    for (op, (outcome, payload)) in
                        batch.inserts.into_iter().zip(outcomes.iter().zip(payloads))
                    {
                        if let InsertOutcome::Inserted { seq } = outcome {
                            let note = QueuedNotification {
                                id: op.record.id,
                                seq: *seq,
                                priority: op.record.priority,
                                expires_at: op.record.expires_at,
                                payload,
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
            addr.do_send(Committed { inserted, answers });
        });
    }

    fn on_tick(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now_ms();
        // Ack timeouts: back to the heap, and out again if the device is online.
        let mut touched = HashSet::new();
        while let Some((deadline, _, _)) = self.deadlines.front() {
            if *deadline > now {
                break;
            }
            let Some((deadline, device, id)) = self.deadlines.pop_front() else {
                break;
            };
            if let Some(queue) = self.devices.get_mut(&device) {
                if let Some(slot) = queue.slots.get_mut(&id) {
                    if slot.state == (SlotState::InFlight { deadline }) {
                        slot.state = SlotState::Ready;
                        queue.in_flight = queue.in_flight.saturating_sub(1);
                        queue.ready.push(ReadyEntry(slot.note.clone()));
                        touched.insert(device);
                    }
                }
            }
        }
        touched.extend(self.held.drain());
        if now - self.last_sweep
            >= i64::try_from(self.config.expiry_sweep.as_millis()).unwrap_or(i64::MAX)
        {
            self.last_sweep = now;
            self.sweep_expired(now);
        }
        for device in touched {
            self.dispatch(&device);
        }
        self.schedule_flush(ctx, false);
    }

    fn sweep_expired(&mut self, now: i64) {
        for (device, queue) in &mut self.devices {
            let mut dropped_in_flight = 0;
            queue.slots.retain(|_, slot| {
                if slot.note.expires_at > now {
                    return true;
                }
                if matches!(slot.state, SlotState::InFlight { .. }) {
                    dropped_in_flight += 1;
                }
                self.pending.expired.push(DeliveryChange {
                    seq: slot.note.seq,
                    device: device.clone(),
                    at: now,
                });
                false
            });
            queue.in_flight -= dropped_in_flight;
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
                })
                .ok_or(QueueError::Unavailable),
            InsertOutcome::Duplicate { id, targets } => Ok(EnqueueOutcome {
                id: id.clone(),
                targets: *targets,
                duplicate: true,
            }),
        })
        .collect()
}

impl Actor for NotificationQueue {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.last_sweep = self.clock.now_ms();
        ctx.add_stream(self.clock.interval(Duration::from_secs(1)));
        self.load(ctx);
    }
}

impl Supervised for NotificationQueue {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        slog::warn!(
            self.log,
            "notification queue restarting; reloading from the store"
        );
        self.devices.clear();
        self.deadlines.clear();
        self.held.clear();
        self.flush_scheduled = false;
        // `pending`, `waiters` and `flushing` stay: they describe writes already promised, and a
        // commit in flight will still report back with `Committed`.
    }
}

impl StreamHandler<()> for NotificationQueue {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |ctx| self.on_tick(ctx));
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Enqueue> for NotificationQueue {
    type Result = ResponseFuture<Result<Vec<EnqueueOutcome>, QueueError>>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Self::Context) -> Self::Result {
        let log = self.log.clone();
        let accepted = guarded("queue", &log, ctx, |ctx| {
            // Resolve targets first: one unknown id rejects the whole request.
            let mut unknown = Vec::new();
            let mut resolved = Vec::with_capacity(msg.items.len());
            for (index, item) in msg.items.iter().enumerate() {
                let devices: Vec<DeviceId> = match &item.targets {
                    Targets::All => self
                        .devices
                        .iter()
                        .filter(|(_, q)| q.policy.accepts(item.record.priority))
                        .map(|(id, _)| id.clone())
                        .collect(),
                    Targets::Devices(ids) => {
                        let missing: Vec<String> = ids
                            .iter()
                            .filter(|id| !self.devices.contains_key(*id))
                            .map(|id| id.to_string())
                            .collect();
                        if !missing.is_empty() {
                            unknown.push((index, missing));
                        }
                        let mut seen = HashSet::new();
                        ids.iter()
                            .filter(|id| seen.insert((*id).clone()))
                            .filter(|id| {
                                self.devices
                                    .get(*id)
                                    .is_some_and(|q| q.policy.accepts(item.record.priority))
                            })
                            .cloned()
                            .collect()
                    }
                };
                resolved.push(devices);
            }
            if !unknown.is_empty() {
                return Err(QueueError::UnknownTargets(unknown));
            }
            let (reply, rx) = oneshot::channel();
            let first = self.pending.inserts.len();
            let targets = resolved.iter().map(Vec::len).collect();
            let count = msg.items.len();
            for (item, devices) in msg.items.into_iter().zip(resolved) {
                self.payloads.push(item.payload);
                self.pending.inserts.push(InsertOp {
                    record: item.record,
                    devices,
                    publisher: msg.publisher.clone(),
                    idempotency_key: item.idempotency_key,
                });
            }
            self.waiters.push(Waiter {
                first,
                count,
                targets,
                reply,
            });
            self.schedule_flush(ctx, true);
            Ok(rx)
        });
        Box::pin(async move {
            match accepted {
                Some(Ok(rx)) => rx.await.unwrap_or(Err(QueueError::Unavailable)),
                Some(Err(e)) => Err(e),
                None => Err(QueueError::Unavailable),
            }
        })
    }
}

impl Handler<Committed> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, msg: Committed, ctx: &mut Self::Context) {
        self.flushing = false;
        let log = self.log.clone();
        let Committed { inserted, answers } = msg;
        guarded("queue", &log, ctx, |ctx| {
            let mut touched = HashSet::new();
            for (note, devices) in inserted {
                for device in devices {
                    if let Some(queue) = self.devices.get_mut(&device) {
                        if queue.add(&note) && self.online.contains(&device) {
                            touched.insert(device);
                        }
                    }
                }
            }
            for device in touched {
                self.dispatch(&device);
            }
            let urgent = !self.waiters.is_empty();
            self.schedule_flush(ctx, urgent);
        });
        // The rows are committed whatever happened above: a 202 is true. Answer after the heaps
        // hold them, so that a device connecting after the answer gets them in priority order.
        for (reply, answer) in answers {
            let _ = reply.send(answer); // the publisher may have gone away
        }
        if !self.flushing && self.pending.is_empty() {
            for waiter in self.drain_waiters.drain(..) {
                let _ = waiter.send(()); // the caller may have given up waiting
            }
        }
    }
}

impl Handler<Ack> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, msg: Ack, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |ctx| {
            let now = self.clock.now_ms();
            let Some(queue) = self.devices.get_mut(&msg.device) else {
                return;
            };
            for id in msg.ids {
                if let Some(note) = queue.ack(&id) {
                    self.pending.acked.push(DeliveryChange {
                        seq: note.seq,
                        device: msg.device.clone(),
                        at: now,
                    });
                }
            }
            self.dispatch(&msg.device);
            self.schedule_flush(ctx, false);
        });
    }
}

impl Handler<DeviceOnline> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, msg: DeviceOnline, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |ctx| {
            self.online.insert(msg.device.clone());
            self.pending
                .seen
                .push((msg.device.clone(), self.clock.now_ms()));
            self.dispatch(&msg.device);
            self.schedule_flush(ctx, false);
        });
    }
}

impl Handler<DeviceOffline> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, msg: DeviceOffline, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |ctx| {
            self.online.remove(&msg.device);
            self.held.remove(&msg.device);
            self.pending
                .seen
                .push((msg.device.clone(), self.clock.now_ms()));
            if let Some(queue) = self.devices.get_mut(&msg.device) {
                queue.requeue_in_flight();
            }
            self.schedule_flush(ctx, false);
        });
    }
}

impl Handler<UpsertDevice> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, msg: UpsertDevice, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |ctx| {
            self.devices.entry(msg.device.clone()).or_default().policy = msg.policy;
            // A lifted quiet window or a re-enabled device may release held items.
            self.dispatch(&msg.device);
            self.schedule_flush(ctx, false);
        });
    }
}

impl Handler<RemoveDevice> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, msg: RemoveDevice, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |_| {
            self.devices.remove(&msg.device);
            self.online.remove(&msg.device);
            self.held.remove(&msg.device);
        });
    }
}

impl Handler<GetQueueStats> for NotificationQueue {
    type Result = MessageResult<GetQueueStats>;

    fn handle(&mut self, _msg: GetQueueStats, _ctx: &mut Self::Context) -> Self::Result {
        let (ready, in_flight) = self.devices.values().fold((0, 0), |(r, f), q| {
            (
                r + q.slots.len().saturating_sub(q.in_flight),
                f + q.in_flight,
            )
        });
        MessageResult(QueueStats {
            devices: self.devices.len(),
            online: self.online.len(),
            ready,
            in_flight,
            uncommitted: self.pending.len(),
        })
    }
}

impl Handler<Drain> for NotificationQueue {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Drain, ctx: &mut Self::Context) -> Self::Result {
        if !self.flushing && self.pending.is_empty() {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        self.schedule_flush(ctx, true);
        Box::pin(async move {
            let _ = rx.await; // a restart drops the sender; the caller stops waiting either way
        })
    }
}

impl Handler<InjectFault> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, _msg: InjectFault, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |_| panic!("injected fault"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Priority;

    fn entry(priority: Priority, seq: i64) -> ReadyEntry {
        ReadyEntry(Arc::new(QueuedNotification {
            id: NotificationId::generate(),
            seq,
            priority,
            expires_at: i64::MAX,
            payload: Bytes::new(),
        }))
    }

    #[test]
    fn heap_serves_highest_priority_then_oldest() {
        let mut heap: BinaryHeap<ReadyEntry> = [
            (Priority::Low, 1),
            (Priority::High, 5),
            (Priority::Normal, 2),
            (Priority::High, 3),
            (Priority::Critical, 9),
            (Priority::Normal, 0),
        ]
        .into_iter()
        .map(|(p, s)| entry(p, s))
        .collect();
        let mut order = Vec::new();
        while let Some(ReadyEntry(n)) = heap.pop() {
            order.push((n.priority, n.seq));
        }
        assert_eq!(
            order,
            vec![
                (Priority::Critical, 9),
                (Priority::High, 3),
                (Priority::High, 5),
                (Priority::Normal, 0),
                (Priority::Normal, 2),
                (Priority::Low, 1),
            ]
        );
    }

    #[test]
    fn device_queue_ignores_a_delivery_it_already_has() {
        let mut queue = DeviceQueue::default();
        let note = entry(Priority::Normal, 1).0;
        assert!(queue.add(&note));
        assert!(!queue.add(&note));
        assert_eq!(queue.ready.len(), 1);
    }

    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use crate::clock::{Clock, ManualClock};
    use crate::ports::{PendingDelivery, StoreError};

    /// An in-memory store: remembers what was committed and serves it back on load.
    #[derive(Default)]
    struct MemoryStore {
        devices: Mutex<Vec<(DeviceId, DevicePolicy)>>,
        rows: Mutex<Vec<(QueuedNotification, Vec<DeviceId>)>>,
        acked: Mutex<Vec<(i64, DeviceId)>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl QueueStore for MemoryStore {
        fn commit(&self, batch: &CommitBatch) -> Result<Vec<InsertOutcome>, StoreError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError("disk full".into()));
            }
            let mut rows = self.rows.lock().unwrap();
            let mut out = Vec::new();
            for op in &batch.inserts {
                let seq = rows.len() as i64 + 1;
                rows.push((
                    QueuedNotification {
                        id: op.record.id.clone(),
                        seq,
                        priority: op.record.priority,
                        expires_at: op.record.expires_at,
                        payload: op.record.device_json(),
                    },
                    op.devices.clone(),
                ));
                out.push(InsertOutcome::Inserted { seq });
            }
            self.acked
                .lock()
                .unwrap()
                .extend(batch.acked.iter().map(|c| (c.seq, c.device.clone())));
            Ok(out)
        }

        fn load(&self, _now_ms: i64) -> Result<QueueSnapshot, StoreError> {
            let rows = self.rows.lock().unwrap();
            let acked = self.acked.lock().unwrap();
            let mut snapshot = QueueSnapshot {
                devices: self.devices.lock().unwrap().clone(),
                ..QueueSnapshot::default()
            };
            for (i, (note, devices)) in rows.iter().enumerate() {
                snapshot.notifications.push(QueuedNotification {
                    id: note.id.clone(),
                    seq: note.seq,
                    priority: note.priority,
                    expires_at: note.expires_at,
                    payload: note.payload.clone(),
                });
                for device in devices {
                    if !acked.contains(&(note.seq, device.clone())) {
                        snapshot.pending.push(PendingDelivery {
                            device: device.clone(),
                            notification: i,
                        });
                    }
                }
            }
            Ok(snapshot)
        }
    }

    /// Forwards every `Deliver` to a channel.
    struct Recorder(mpsc::UnboundedSender<Deliver>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<Deliver> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) {
            let _ = self.0.send(msg);
        }
    }

    struct Harness {
        queue: Addr<NotificationQueue>,
        delivered: mpsc::UnboundedReceiver<Deliver>,
        clock: ManualClock,
        store: Arc<MemoryStore>,
        device: DeviceId,
    }

    fn harness_with(policy: DevicePolicy) -> Harness {
        let device = DeviceId::generate();
        let store = Arc::new(MemoryStore::default());
        store.devices.lock().unwrap().push((device.clone(), policy));
        let clock = ManualClock::new(1_000_000);
        let (tx, delivered) = mpsc::unbounded_channel();
        let recorder = Recorder(tx).start();
        let config = QueueConfig {
            commit_window: Duration::ZERO,
            ..QueueConfig::default()
        };
        let (s, c) = (store.clone(), clock.clone());
        let queue = actix::Supervisor::start(move |_| {
            NotificationQueue::new(
                config,
                s,
                Arc::new(c),
                recorder.recipient(),
                slog::Logger::root(slog::Discard, slog::o!()),
            )
        });
        Harness {
            queue,
            delivered,
            clock,
            store,
            device,
        }
    }

    fn harness() -> Harness {
        harness_with(DevicePolicy::default())
    }

    fn note(title: &str, priority: Priority, now: i64) -> NewNotification {
        let record = NotificationRecord {
            id: NotificationId::generate(),
            title: title.into(),
            body: String::new(),
            app: "test".into(),
            priority,
            tags: vec![],
            click_url: None,
            created_at: now,
            expires_at: now + 3_600_000,
        };
        NewNotification {
            payload: record.device_json(),
            record,
            targets: Targets::All,
            idempotency_key: None,
        }
    }

    async fn publish(h: &Harness, title: &str, priority: Priority) -> NotificationId {
        let outcome = h
            .queue
            .send(Enqueue {
                items: vec![note(title, priority, h.clock.now_ms())],
                publisher: "t".into(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome[0].targets, 1);
        outcome[0].id.clone()
    }

    async fn next(h: &mut Harness) -> Vec<NotificationId> {
        let msg = tokio::time::timeout(Duration::from_secs(5), h.delivered.recv())
            .await
            .unwrap()
            .unwrap();
        msg.items.iter().map(|n| n.id.clone()).collect()
    }

    #[actix::test]
    async fn delivers_in_priority_order_once_online_and_not_before() {
        let mut h = harness();
        let low = publish(&h, "low", Priority::Low).await;
        let high = publish(&h, "high", Priority::High).await;
        assert!(
            h.delivered.try_recv().is_err(),
            "nothing goes to an offline device"
        );
        h.queue
            .send(DeviceOnline {
                device: h.device.clone(),
            })
            .await
            .unwrap();
        assert_eq!(next(&mut h).await, vec![high, low]);
    }

    #[actix::test]
    async fn unknown_targets_reject_the_whole_request() {
        let h = harness();
        let mut bad = note("x", Priority::Normal, 0);
        bad.targets = Targets::Devices(vec![h.device.clone(), DeviceId::generate()]);
        let err = h
            .queue
            .send(Enqueue {
                items: vec![note("ok", Priority::Normal, 0), bad],
                publisher: "t".into(),
            })
            .await
            .unwrap();
        assert!(
            matches!(err, Err(QueueError::UnknownTargets(ref u)) if u.len() == 1 && u[0].0 == 1)
        );
        assert!(h.store.rows.lock().unwrap().is_empty());
    }

    #[actix::test]
    async fn a_failed_commit_is_reported_to_the_publisher() {
        let h = harness();
        h.store
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let result = h
            .queue
            .send(Enqueue {
                items: vec![note("x", Priority::Normal, 0)],
                publisher: "t".into(),
            })
            .await
            .unwrap();
        assert!(matches!(result, Err(QueueError::Store(_))));
    }

    #[actix::test]
    async fn ack_timeouts_and_disconnects_send_again() {
        let mut h = harness();
        h.queue
            .send(DeviceOnline {
                device: h.device.clone(),
            })
            .await
            .unwrap();
        let id = publish(&h, "n", Priority::Normal).await;
        assert_eq!(next(&mut h).await, vec![id.clone()]);
        h.clock.advance(Duration::from_secs(31));
        assert_eq!(
            next(&mut h).await,
            vec![id.clone()],
            "resent after the ack timeout"
        );
        h.queue
            .send(DeviceOffline {
                device: h.device.clone(),
            })
            .await
            .unwrap();
        h.queue
            .send(DeviceOnline {
                device: h.device.clone(),
            })
            .await
            .unwrap();
        assert_eq!(next(&mut h).await, vec![id.clone()], "resent on reconnect");
        h.queue
            .send(Ack {
                device: h.device.clone(),
                ids: vec![id],
            })
            .await
            .unwrap();
        h.clock.advance(Duration::from_secs(31));
        let stats = h.queue.send(GetQueueStats).await.unwrap();
        assert_eq!((stats.ready, stats.in_flight), (0, 0));
    }

    #[actix::test]
    async fn the_in_flight_window_waits_for_acks() {
        let device = DeviceId::generate();
        let mut h = harness();
        h.device = device.clone();
        h.queue
            .send(UpsertDevice {
                device: device.clone(),
                policy: DevicePolicy::default(),
            })
            .await
            .unwrap();
        // Two devices now; target only the new one with more than the window.
        let window = QueueConfig::default().max_in_flight;
        let items: Vec<_> = (0..window + 5)
            .map(|i| {
                let mut n = note(&format!("n{i}"), Priority::Normal, 0);
                n.targets = Targets::Devices(vec![device.clone()]);
                n
            })
            .collect();
        h.queue
            .send(Enqueue {
                items,
                publisher: "t".into(),
            })
            .await
            .unwrap()
            .unwrap();
        h.queue
            .send(DeviceOnline {
                device: device.clone(),
            })
            .await
            .unwrap();
        let first = next(&mut h).await;
        assert_eq!(first.len(), window);
        assert!(h.delivered.try_recv().is_err());
        h.queue
            .send(Ack {
                device,
                ids: first[..5].to_vec(),
            })
            .await
            .unwrap();
        assert_eq!(next(&mut h).await.len(), 5);
    }

    #[actix::test]
    async fn quiet_hours_hold_back_all_but_critical() {
        let quiet = crate::model::QuietHours {
            start: chrono::NaiveTime::MIN,
            end: chrono::NaiveTime::from_hms_opt(23, 59, 59).unwrap(),
            timezone: chrono_tz::UTC,
        };
        let mut h = harness_with(DevicePolicy {
            quiet_hours: Some(quiet),
            ..DevicePolicy::default()
        });
        h.queue
            .send(DeviceOnline {
                device: h.device.clone(),
            })
            .await
            .unwrap();
        let _normal = publish(&h, "normal", Priority::Normal).await;
        let critical = publish(&h, "critical", Priority::Critical).await;
        let mut got = next(&mut h).await;
        if got.is_empty() {
            got = next(&mut h).await;
        }
        assert_eq!(got, vec![critical]);
        h.clock.advance(Duration::from_secs(2));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), h.delivered.recv())
                .await
                .is_err(),
            "normal is held"
        );
    }

    #[actix::test]
    async fn drain_commits_pending_acks_at_once() {
        let mut h = harness();
        h.queue
            .send(DeviceOnline {
                device: h.device.clone(),
            })
            .await
            .unwrap();
        let id = publish(&h, "n", Priority::Normal).await;
        assert_eq!(next(&mut h).await, vec![id.clone()]);
        h.queue
            .send(Ack {
                device: h.device.clone(),
                ids: vec![id],
            })
            .await
            .unwrap();
        h.queue.send(Drain).await.unwrap();
        assert_eq!(h.store.acked.lock().unwrap().len(), 1);
        h.queue.send(Drain).await.unwrap(); // nothing pending: answers at once
    }

    #[actix::test]
    async fn min_priority_filters_at_enqueue() {
        let h = harness_with(DevicePolicy {
            min_priority: Priority::High,
            ..DevicePolicy::default()
        });
        let outcome = h
            .queue
            .send(Enqueue {
                items: vec![note("n", Priority::Normal, 0)],
                publisher: "t".into(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome[0].targets, 0);
    }

    #[actix::test]
    async fn a_panic_restarts_the_queue_which_reloads_from_the_store() {
        let mut h = harness();
        let id = publish(&h, "kept", Priority::Normal).await;
        let before = crate::guard::RESTARTS.load(std::sync::atomic::Ordering::Relaxed);
        h.queue.do_send(InjectFault);
        h.queue
            .send(DeviceOnline {
                device: h.device.clone(),
            })
            .await
            .unwrap();
        assert_eq!(next(&mut h).await, vec![id]);
        assert!(crate::guard::RESTARTS.load(std::sync::atomic::Ordering::Relaxed) > before);
    }
}
