//! The notification queue: per-device priority heaps, in-flight deliveries and ack timeouts, in
//! front of a group-committed durable store.
//!
//! Publishes arrive as [`Enqueue`]; they are collected into one [`CommitBatch`](crate::ports::CommitBatch) and written in a
//! single transaction on a blocking thread while the next batch collects (group commit sized by
//! load). Publishers are answered only after their rows are committed. Committed notifications go
//! into each target device's heap (priority, then age); devices that are online get them through
//! the [`Deliver`] recipient (the batcher) up to `max_in_flight` unacknowledged items each. An
//! [`Ack`] ends a delivery; an unacked one goes back to the heap when its ack timeout passes or its
//! device goes offline. On start and on every supervised restart the queue reloads pending
//! deliveries from the store, so a panic or a crash loses nothing that was committed.
//!
//! In a cluster (a [`ClusterPort`], relays sharing one store) the queue holds deliveries only for
//! the devices connected to this relay: a device that connects gets nothing until its backlog is
//! read from the store; one that leaves is forgotten (the store keeps its deliveries); a delivery
//! committed here for a device not connected here goes to [`ClusterPort::published`], and the
//! relay holding that device reads it back on [`Wake`]. [`Reconcile`] reads back every connected
//! device's backlog (after the wake-ups may have been missed). Reads ride on the group commit
//! (`commit::Load`): an ack made before a read is in the store when it runs, and one made while it
//! runs is not undone by what it found.
//!
//! Layout: this file holds the actor and its messages; [`device`] the per-device structure
//! ([`DeviceQueue`]: heap, in-flight window, quiet-hours hold); `commit` the group commit (the
//! pending batch, its index-aligned payloads, the publishers waiting by offset, one flush at a
//! time).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::batcher::Deliver;
use crate::clock::SharedClock;
use crate::feed::{Activity, Feed};
use crate::guard::guarded;
use crate::metrics::{seconds_between, Metrics};
use crate::model::{
    DeviceId, DevicePolicy, NotificationId, NotificationRecord, QueuedNotification,
};
use crate::ports::{ClusterPort, Deliveries, DeliveryChange, InsertOp, QueueSnapshot, QueueStore};

mod commit;
pub mod device;

pub use commit::{EnqueueOutcome, QueueError};
use commit::{GroupCommit, Load, Plan, Written};
pub use device::{Acked, DeviceQueue};

/// Which devices a notification goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Every enabled device whose minimum priority it meets.
    All,
    /// These devices (each must exist) and the members of these groups (each must have one).
    Listed {
        /// Device ids.
        devices: Vec<DeviceId>,
        /// Group names (without the `group:` prefix).
        groups: Vec<String>,
    },
}

impl Targets {
    /// Exactly these devices.
    pub fn devices(devices: Vec<DeviceId>) -> Self {
        Self::Listed {
            devices,
            groups: Vec::new(),
        }
    }
}

/// One validated notification to publish.
#[derive(Debug, Clone)]
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

/// Another relay committed notifications for devices that may be connected here (clustered
/// queues): those that are get them from the store.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Wake {
    /// Deliveries by device.
    pub deliveries: Deliveries,
}

/// Reads every connected device's backlog from the store again (clustered queues; after
/// wake-ups may have been missed, such as while Redis was unreachable).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Reconcile;

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
    /// `ready` by priority, indexed by `Priority as usize` (lowest first).
    #[serde(skip)]
    pub ready_by_priority: [usize; 4],
    /// Since when (epoch ms) the longest-waiting delivery for an online device that quiet hours
    /// do not hold has been sendable: its creation, or its device's coming online if later;
    /// `None` when there is none. Its age is the queue lag.
    pub oldest_ready_ms: Option<i64>,
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

/// A group commit finished (sent by the blocking writer).
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct Committed {
    /// What was written, and the publishers' answers.
    written: Written,
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
    /// When each online device came online (epoch ms), for the queue lag.
    online_since: HashMap<DeviceId, i64>,
    /// Ack deadlines in send order (the timeout is constant, so deadlines are too).
    deadlines: VecDeque<(i64, DeviceId, NotificationId)>,
    /// The rows waiting for, or in, the next group commit.
    commit: GroupCommit,
    last_sweep: i64,
    metrics: Arc<Metrics>,
    feed: Feed,
    /// The other relays sharing the store, if any (see the module documentation).
    cluster: Option<Arc<dyn ClusterPort>>,
    /// Clustered: connected devices whose backlog is being read, with the acks they sent
    /// meanwhile (applied once it is in).
    loading: HashMap<DeviceId, Vec<NotificationId>>,
    /// Clustered: acks made while the running flush reads the store; what it finds for them is
    /// stale.
    acked_while_reading: HashSet<(DeviceId, NotificationId)>,
    /// Clustered: reads that failed, asked for again on the next tick.
    retry_loads: Vec<Load>,
}

impl NotificationQueue {
    /// A queue over `store`, delivering through `deliver`.
    pub fn new(
        config: QueueConfig,
        store: Arc<dyn QueueStore>,
        clock: SharedClock,
        deliver: Recipient<Deliver>,
        metrics: Arc<Metrics>,
        log: slog::Logger,
    ) -> Self {
        Self {
            metrics,
            config,
            store,
            clock,
            log,
            deliver,
            devices: HashMap::new(),
            online: HashSet::new(),
            online_since: HashMap::new(),
            deadlines: VecDeque::new(),
            commit: GroupCommit::default(),
            last_sweep: 0,
            feed: Feed::default(),
            cluster: None,
            loading: HashMap::new(),
            acked_while_reading: HashSet::new(),
            retry_loads: Vec::new(),
        }
    }

    /// Shares the store with other relays through `cluster` (see the module documentation).
    pub fn with_cluster(mut self, cluster: Option<Arc<dyn ClusterPort>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Reports commits, deliveries, acks and presence to `feed`.
    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.feed = feed;
        self
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

    fn restore(&mut self, mut snapshot: QueueSnapshot) {
        self.devices.clear();
        self.deadlines.clear();
        for problem in &snapshot.corrupt {
            slog::error!(self.log, "a corrupt row is left out of the queue"; "error" => %problem);
        }
        for (device, policy) in std::mem::take(&mut snapshot.devices) {
            let queue = self.new_device_queue(policy);
            self.devices.insert(device, queue);
        }
        let devices = self.devices.len();
        let (restored, _) = self.add_pending(snapshot, &HashSet::new());
        slog::info!(self.log, "queue restored"; "devices" => devices, "pending" => restored);
        // The whole store was read: devices that were connecting have their backlog.
        let loaded: Vec<(DeviceId, Vec<NotificationId>)> = self.loading.drain().collect();
        for (device, acks) in loaded {
            self.ack(&device, acks);
        }
        let online: Vec<DeviceId> = self.online.iter().cloned().collect();
        for device in online {
            self.dispatch(&device);
        }
    }

    /// Adds the pending deliveries of `snapshot` to their devices' queues: every one, or in a
    /// cluster those of connected devices; none in `stale`. Returns how many were new, and the
    /// devices that got one.
    fn add_pending(
        &mut self,
        snapshot: QueueSnapshot,
        stale: &HashSet<(DeviceId, NotificationId)>,
    ) -> (usize, HashSet<DeviceId>) {
        let notes: Vec<Arc<QueuedNotification>> =
            snapshot.notifications.into_iter().map(Arc::new).collect();
        let clustered = self.cluster.is_some();
        let (mut count, mut added) = (0, HashSet::new());
        for pending in snapshot.pending {
            if clustered && !self.online.contains(&pending.device) {
                continue;
            }
            let (Some(queue), Some(note)) = (
                self.devices.get_mut(&pending.device),
                notes.get(pending.notification),
            ) else {
                continue;
            };
            if !stale.is_empty() && stale.contains(&(pending.device.clone(), note.id.clone())) {
                continue;
            }
            if queue.add_restored(note, pending.sent_before) {
                count += 1;
                added.insert(pending.device);
            }
        }
        (count, added)
    }

    /// Asks for a read of the store with the next flush.
    fn request(&mut self, ctx: &mut Context<Self>, load: Load) {
        self.commit.load(load);
        self.schedule_flush(ctx, true);
    }

    /// What the flush's reads found: their deliveries join the queues; a device's first read
    /// ends its loading (its buffered acks apply, it may be sent to); a failed read is asked for
    /// again on the next tick of the clock.
    fn loaded(&mut self, loaded: Vec<(Load, Result<QueueSnapshot, crate::ports::StoreError>)>) {
        let stale = std::mem::take(&mut self.acked_while_reading);
        let mut touched = HashSet::new();
        for (load, found) in loaded {
            match found {
                Ok(snapshot) => {
                    touched.extend(self.add_pending(snapshot, &stale).1);
                    if load.initial {
                        for device in load.devices {
                            if let Some(acks) = self.loading.remove(&device) {
                                self.ack(&device, acks);
                                touched.insert(device);
                            }
                        }
                    }
                }
                Err(e) => {
                    slog::warn!(self.log, "could not read deliveries from the store; retrying";
                        "devices" => load.devices.len(), "error" => %e);
                    self.retry_loads.push(load);
                }
            }
        }
        for device in touched {
            self.dispatch(&device);
        }
    }

    /// Ends the deliveries `ids` of `device` (acknowledged), buffering them while its backlog is
    /// read.
    fn ack(&mut self, device: &DeviceId, ids: Vec<NotificationId>) {
        if let Some(buffered) = self.loading.get_mut(device) {
            buffered.extend(ids);
            return;
        }
        let reading = self.cluster.is_some() && self.commit.reading();
        let now = self.clock.now_ms();
        let Some(queue) = self.devices.get_mut(device) else {
            return;
        };
        for id in ids {
            if reading {
                self.acked_while_reading
                    .insert((device.clone(), id.clone()));
            }
            if let Some(Acked { note, sent_at }) = queue.ack(&id) {
                self.metrics.acked.of(note.priority).inc();
                self.feed.emit(|| Activity::Acked {
                    id: note.id.clone(),
                    device: device.clone(),
                    at: now,
                });
                if let Some(sent_at) = sent_at {
                    self.metrics
                        .deliver_to_ack
                        .observe(seconds_between(sent_at, now));
                }
                self.commit.acked(DeliveryChange {
                    seq: note.seq,
                    device: device.clone(),
                    at: now,
                });
            }
        }
    }

    /// An empty device queue with this queue's in-flight window.
    fn new_device_queue(&self, policy: DevicePolicy) -> DeviceQueue {
        DeviceQueue::new(policy)
            .with_window(self.config.max_in_flight)
            .with_gauges(self.metrics.queue.clone())
    }

    /// Sends what `device` may receive now, up to its in-flight window.
    fn dispatch(&mut self, device: &DeviceId) {
        if !self.online.contains(device) || self.loading.contains_key(device) {
            return;
        }
        let Some(queue) = self.devices.get_mut(device) else {
            return;
        };
        let now = self.clock.now_ms();
        let deadline = now + i64::try_from(self.config.ack_timeout.as_millis()).unwrap_or(i64::MAX);
        let out = queue.dispatch(now, deadline);
        let mut resent = out.resent.iter().peekable();
        for (index, note) in out.sent.iter().enumerate() {
            if resent.next_if_eq(&&index).is_some() {
                self.metrics.redelivered.of(note.priority).inc();
            } else {
                self.metrics.delivered.of(note.priority).inc();
                self.metrics
                    .publish_to_deliver
                    .observe(seconds_between(note.created_at, now));
            }
        }
        for note in &out.expired {
            self.metrics.expired.of(note.priority).inc();
            self.commit.expired(DeliveryChange {
                seq: note.seq,
                device: device.clone(),
                at: now,
            });
        }
        for note in &out.sent {
            self.feed.emit(|| Activity::Delivered {
                id: note.id.clone(),
                device: device.clone(),
                at: now,
            });
            self.deadlines
                .push_back((deadline, device.clone(), note.id.clone()));
            self.commit.sent(DeliveryChange {
                seq: note.seq,
                device: device.clone(),
                at: now,
            });
        }
        if !out.sent.is_empty() {
            self.deliver.do_send(Deliver {
                device: device.clone(),
                items: out.sent,
            });
        }
    }

    /// Queues a commit of what is pending: at once when publishers wait, else after the window.
    fn schedule_flush(&mut self, ctx: &mut Context<Self>, urgent: bool) {
        let plan = self.commit.plan(
            urgent,
            self.config.commit_max_rows,
            self.config.commit_window.is_zero(),
        );
        match plan {
            Plan::Wait => {}
            Plan::Now => self.flush(ctx),
            Plan::Later => {
                ctx.run_later(self.config.commit_window, |act, ctx| {
                    act.commit.window_closed();
                    act.flush(ctx);
                });
            }
        }
    }

    /// Commits the pending batch on a blocking thread. One commit is in flight at a time; what
    /// arrives meanwhile shares the next one.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let window_ms = i64::try_from(self.config.commit_window.as_millis()).unwrap_or(i64::MAX);
        let Some(flush) =
            self.commit
                .begin(self.clock.now_ms(), window_ms, self.config.commit_max_rows)
        else {
            return;
        };
        if flush.reads() {
            self.acked_while_reading.clear();
        }
        let store = self.store.clone();
        let addr = ctx.address();
        let log = self.log.clone();
        let metrics = self.metrics.clone();
        // The writer reports back by message, not through a future tied to this actor's context:
        // a restart in the meantime loses neither the answer to the publishers nor the rows.
        tokio::task::spawn_blocking(move || {
            // Row counts are far below 2^52: exact in f64.
            #[allow(clippy::cast_precision_loss)]
            metrics.group_commit_rows.observe(flush.rows() as f64);
            let timer = metrics.group_commit_seconds.start_timer();
            let written = flush.write(&*store, &log);
            timer.observe_duration();
            addr.do_send(Committed { written });
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
                if queue.ack_timeout(&id, deadline) {
                    touched.insert(device);
                }
            }
        }
        // Devices held back by quiet hours: the window may have ended.
        touched.extend(
            self.devices
                .iter()
                .filter(|(_, queue)| queue.is_held())
                .map(|(device, _)| device.clone()),
        );
        if now - self.last_sweep
            >= i64::try_from(self.config.expiry_sweep.as_millis()).unwrap_or(i64::MAX)
        {
            self.last_sweep = now;
            self.sweep_expired(now);
        }
        for device in touched {
            self.dispatch(&device);
        }
        for load in std::mem::take(&mut self.retry_loads) {
            self.commit.load(load);
        }
        self.schedule_flush(ctx, false);
    }

    fn sweep_expired(&mut self, now: i64) {
        for (device, queue) in &mut self.devices {
            for note in queue.sweep_expired(now) {
                self.metrics.expired.of(note.priority).inc();
                self.commit.expired(DeliveryChange {
                    seq: note.seq,
                    device: device.clone(),
                    at: now,
                });
            }
        }
    }
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
        self.metrics
            .actor_restarts
            .with_label_values(&["queue"])
            .inc();
        slog::warn!(
            self.log,
            "notification queue restarting; reloading from the store"
        );
        self.devices.clear();
        self.deadlines.clear();
        // The pending batch, its waiters and a running flush stay: they describe writes already
        // promised, and a commit in flight will still report back with `Committed`.
        self.commit.restarting();
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
                        .filter(|(_, q)| q.policy().accepts(item.record.priority))
                        .map(|(id, _)| id.clone())
                        .collect(),
                    Targets::Listed { devices, groups } => {
                        let mut missing: Vec<String> = devices
                            .iter()
                            .filter(|id| !self.devices.contains_key(*id))
                            .map(|id| id.to_string())
                            .collect();
                        missing.extend(
                            groups
                                .iter()
                                .filter(|g| !self.devices.values().any(|q| q.policy().in_group(g)))
                                .map(|g| format!("group:{g}")),
                        );
                        if !missing.is_empty() {
                            unknown.push((index, missing));
                        }
                        let members = self
                            .devices
                            .iter()
                            .filter(|(_, q)| groups.iter().any(|g| q.policy().in_group(g)))
                            .map(|(id, _)| id);
                        let mut seen = HashSet::new();
                        devices
                            .iter()
                            .chain(members)
                            .filter(|id| seen.insert((*id).clone()))
                            .filter(|id| {
                                self.devices
                                    .get(*id)
                                    .is_some_and(|q| q.policy().accepts(item.record.priority))
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
            let items = msg
                .items
                .into_iter()
                .zip(resolved)
                .map(|(item, devices)| {
                    let op = InsertOp {
                        record: item.record,
                        devices,
                        publisher: msg.publisher.clone(),
                        idempotency_key: item.idempotency_key,
                    };
                    (op, item.payload)
                })
                .collect();
            self.commit.publish(items, reply);
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
        self.commit.finished();
        let log = self.log.clone();
        let Written {
            inserted,
            answers,
            loaded,
        } = msg.written;
        guarded("queue", &log, ctx, |ctx| {
            let mut touched = HashSet::new();
            let mut remote: HashMap<DeviceId, Vec<i64>> = HashMap::new();
            let clustered = self.cluster.is_some();
            let now = self.clock.now_ms();
            for (note, devices) in inserted {
                self.metrics.published.of(note.priority).inc();
                self.feed.emit(|| Activity::Published {
                    id: note.id.clone(),
                    priority: note.priority,
                    devices: devices.len(),
                    payload: note.payload.clone(),
                    at: now,
                });
                for device in devices {
                    if clustered && !self.online.contains(&device) {
                        remote.entry(device).or_default().push(note.seq);
                    } else if let Some(queue) = self.devices.get_mut(&device) {
                        if queue.add(&note) && self.online.contains(&device) {
                            touched.insert(device);
                        }
                    }
                }
            }
            if let (Some(cluster), false) = (&self.cluster, remote.is_empty()) {
                cluster.published(remote.into_iter().collect());
            }
            for device in touched {
                self.dispatch(&device);
            }
            self.loaded(loaded);
            let urgent = self.commit.has_waiters();
            self.schedule_flush(ctx, urgent);
        });
        // The rows are committed whatever happened above: a 202 is true. Answer after the heaps
        // hold them, so that a device connecting after the answer gets them in priority order.
        answers.send();
        self.commit.answer_drained();
    }
}

impl Handler<Ack> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, msg: Ack, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |ctx| {
            self.ack(&msg.device, msg.ids);
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
            if self.online.insert(msg.device.clone()) {
                self.online_since
                    .insert(msg.device.clone(), self.clock.now_ms());
                self.feed.emit(|| Activity::Online {
                    device: msg.device.clone(),
                    at: self.clock.now_ms(),
                });
                if let Some(cluster) = &self.cluster {
                    // Its backlog is read once the other relays route its deliveries here.
                    self.loading.insert(msg.device.clone(), Vec::new());
                    let device = msg.device.clone();
                    ctx.spawn(
                        cluster
                            .online(&device)
                            .into_actor(self)
                            .map(move |(), act, ctx| {
                                if act.loading.contains_key(&device) {
                                    act.request(
                                        ctx,
                                        Load {
                                            devices: vec![device],
                                            seqs: None,
                                            initial: true,
                                        },
                                    );
                                }
                            }),
                    );
                }
            }
            self.commit.seen(msg.device.clone(), self.clock.now_ms());
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
            if self.online.remove(&msg.device) {
                self.feed.emit(|| Activity::Offline {
                    device: msg.device.clone(),
                    at: self.clock.now_ms(),
                });
            }
            self.online_since.remove(&msg.device);
            self.commit.seen(msg.device.clone(), self.clock.now_ms());
            if let Some(queue) = self.devices.get_mut(&msg.device) {
                queue.requeue_in_flight();
            }
            if let Some(cluster) = &self.cluster {
                cluster.offline(&msg.device);
                self.loading.remove(&msg.device);
                if let Some(queue) = self.devices.get_mut(&msg.device) {
                    queue.clear();
                }
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
            match self.devices.get_mut(&msg.device) {
                Some(queue) => queue.set_policy(msg.policy),
                None => {
                    let queue = self.new_device_queue(msg.policy);
                    self.devices.insert(msg.device.clone(), queue);
                }
            }
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
            self.online_since.remove(&msg.device);
            self.loading.remove(&msg.device);
        });
    }
}

impl Handler<Wake> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, msg: Wake, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |ctx| {
            let mut devices = Vec::new();
            let mut seqs = Vec::new();
            for (device, device_seqs) in msg.deliveries {
                if self.online.contains(&device) {
                    devices.push(device);
                    seqs.extend(device_seqs);
                }
            }
            if devices.is_empty() {
                return;
            }
            seqs.sort_unstable();
            seqs.dedup();
            self.request(
                ctx,
                Load {
                    devices,
                    seqs: Some(seqs),
                    initial: false,
                },
            );
        });
    }
}

impl Handler<Reconcile> for NotificationQueue {
    type Result = ();

    fn handle(&mut self, _msg: Reconcile, ctx: &mut Self::Context) {
        let log = self.log.clone();
        guarded("queue", &log, ctx, |ctx| {
            if self.cluster.is_none() || self.online.is_empty() {
                return;
            }
            let devices = self.online.iter().cloned().collect();
            self.request(
                ctx,
                Load {
                    devices,
                    seqs: None,
                    initial: false,
                },
            );
        });
    }
}

impl Handler<GetQueueStats> for NotificationQueue {
    type Result = MessageResult<GetQueueStats>;

    fn handle(&mut self, _msg: GetQueueStats, _ctx: &mut Self::Context) -> Self::Result {
        let mut ready_by_priority = [0usize; 4];
        let mut in_flight = 0;
        for queue in self.devices.values() {
            for (sum, count) in ready_by_priority.iter_mut().zip(queue.ready_by_priority()) {
                *sum += count;
            }
            in_flight += queue.in_flight();
        }
        MessageResult(QueueStats {
            devices: self.devices.len(),
            online: self.online.len(),
            ready: ready_by_priority.iter().sum(),
            in_flight,
            uncommitted: self.commit.uncommitted(),
            ready_by_priority,
            // A delivery waits from its creation or from when its device came online, whichever
            // is later: a device reconnecting to a backlog is not a lagging relay.
            oldest_ready_ms: self
                .online
                .iter()
                .filter_map(|device| {
                    let queue = self.devices.get(device).filter(|q| !q.is_held())?;
                    let created = queue.oldest_ready()?;
                    Some(created.max(self.online_since.get(device).copied().unwrap_or(0)))
                })
                .min(),
        })
    }
}

impl Handler<Drain> for NotificationQueue {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _msg: Drain, ctx: &mut Self::Context) -> Self::Result {
        let Some(rx) = self.commit.wait_drained() else {
            return Box::pin(async {});
        };
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
mod tests;
