//! The audit writer: every security-relevant event becomes a record of the append-only,
//! tamper-evident audit log ([`crate::ports::AuditLog`]), and the log is checkpointed (signed)
//! every [`AuditConfig::checkpoint_every`] records or [`AuditConfig::checkpoint_interval`].
//!
//! Messages first: [`Record`] (fire and forget: the caller never waits on the disk),
//! [`RecordNow`] (answered once the record is durable: for operations that must not go
//! unrecorded), [`Flush`] (everything waiting is written and checkpointed) and [`GetStatus`].
//! Then the [`AuditWriter`] actor, the [`AuditStatus`] that health and metrics read, and
//! [`AuditAlerts`], the alert channel that records alert transitions.
//!
//! Events are written in batches, one blocking call at a time: whatever arrives while a batch is
//! on the disk goes in the next one (a group commit, as the queue does). When the log cannot be
//! written (disk full), [`RecordNow`] callers get the error at once, so the operation they guard
//! fails rather than going unrecorded; fire-and-forget events wait (up to
//! [`AuditConfig::max_pending`]) and are written when the disk is back. The status says so, which
//! makes the `audit` health component unhealthy and so fires the `component_unhealthy` alert.
//!
//! On each tick it also compares the supervised actors' restart counters with what it saw last
//! and records every restart.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::metrics::{Metrics, SUPERVISED_ACTORS};
use crate::ports::audit::{
    Action, AuditError, AuditEvent, AuditLog, CheckpointInfo, CheckpointSink, Outcome,
};
use crate::ports::{AlertChannel, AlertEvent, AlertState};

/// Appends an event; returns at once.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Record {
    /// The event.
    pub event: AuditEvent,
}

/// Appends an event and answers with its sequence number once it is durable, or with the
/// reason it could not be written.
#[derive(Message, Debug)]
#[rtype(result = "Result<u64, AuditError>")]
pub struct RecordNow {
    /// The event.
    pub event: AuditEvent,
}

/// Writes everything waiting, signs a checkpoint, and answers with the log's size.
#[derive(Message, Debug)]
#[rtype(result = "Result<u64, AuditError>")]
pub struct Flush;

/// Runs the housekeeping (archiving, retention) now, after what is waiting is written; answers
/// with the records archived. (The writer also runs it every [`AuditConfig::maintain_every`].)
#[derive(Message, Debug)]
#[rtype(result = "Result<u64, AuditError>")]
pub struct Maintain;

/// The writer's status.
#[derive(Message, Debug)]
#[rtype(result = "AuditSnapshot")]
pub struct GetStatus;

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct AuditConfig {
    /// A checkpoint after this many new records.
    pub checkpoint_every: u64,
    /// A checkpoint at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// How often the writer looks at its timers, restart counters and failed writes.
    pub tick: Duration,
    /// Housekeeping (archiving) this often.
    pub maintain_every: Duration,
    /// Most records in one append.
    pub batch_max: usize,
    /// Most fire-and-forget events kept while the log cannot be written.
    pub max_pending: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: 1_000,
            checkpoint_interval: Duration::from_secs(60),
            tick: Duration::from_secs(5),
            maintain_every: Duration::from_secs(24 * 3_600),
            batch_max: 1_000,
            max_pending: 10_000,
        }
    }
}

/// What health, metrics and the API read about the writer.
#[derive(Debug, Default)]
pub struct AuditStatus {
    size: AtomicU64,
    checkpoint_size: AtomicU64,
    checkpoint_ms: AtomicI64,
    pending: AtomicU64,
    failing_since_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`AuditStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditSnapshot {
    /// Records in the log.
    pub size: u64,
    /// Records covered by the last checkpoint.
    pub checkpoint_size: u64,
    /// When the last checkpoint was signed (epoch ms; 0: none yet).
    pub checkpoint_ms: i64,
    /// Events waiting to be written.
    pub pending: u64,
    /// Since when writes fail (epoch ms), if they do.
    pub failing_since_ms: Option<i64>,
    /// The last write error, while writes fail.
    pub last_error: Option<String>,
}

impl AuditStatus {
    /// The status now.
    pub fn snapshot(&self) -> AuditSnapshot {
        let failing = self.failing_since_ms.load(Ordering::Relaxed);
        AuditSnapshot {
            size: self.size.load(Ordering::Relaxed),
            checkpoint_size: self.checkpoint_size.load(Ordering::Relaxed),
            checkpoint_ms: self.checkpoint_ms.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            failing_since_ms: (failing != 0).then_some(failing),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    fn failed(&self, now_ms: i64, error: &AuditError) {
        let _ = self.failing_since_ms.compare_exchange(
            0,
            now_ms.max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
    }

    fn succeeded(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
    }
}

struct Pending {
    event: AuditEvent,
    reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
}

/// The audit writer actor.
pub struct AuditWriter {
    log: Arc<dyn AuditLog>,
    config: AuditConfig,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    status: Arc<AuditStatus>,
    sink: Option<Arc<dyn CheckpointSink>>,
    logger: slog::Logger,
    pending: VecDeque<Pending>,
    /// A call to the log is on the blocking pool.
    busy: bool,
    /// Records appended since the last checkpoint.
    since_checkpoint: u64,
    /// When the last checkpoint was signed (or the writer started).
    last_checkpoint_ms: i64,
    last_maintain_ms: i64,
    /// A checkpoint is wanted as soon as the pending records are written.
    want_checkpoint: bool,
    /// [`Flush`] callers, answered after the next checkpoint.
    flushes: Vec<oneshot::Sender<Result<u64, AuditError>>>,
    /// Housekeeping is due.
    want_maintain: bool,
    /// [`Maintain`] callers, answered after the next housekeeping.
    maintains: Vec<oneshot::Sender<Result<u64, AuditError>>>,
    /// Restart counts last seen, by actor.
    restarts_seen: HashMap<&'static str, u64>,
    /// The last append failed: wait for the tick before trying again.
    backing_off: bool,
}

impl AuditWriter {
    /// A writer over `log`, reporting into `status`.
    pub fn new(
        log: Arc<dyn AuditLog>,
        config: AuditConfig,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        status: Arc<AuditStatus>,
        logger: slog::Logger,
    ) -> Self {
        let now = clock.now_ms();
        Self {
            log,
            config,
            clock,
            metrics,
            status,
            sink: None,
            logger,
            pending: VecDeque::new(),
            busy: false,
            since_checkpoint: 0,
            last_checkpoint_ms: now,
            last_maintain_ms: now,
            want_checkpoint: false,
            flushes: Vec::new(),
            want_maintain: false,
            maintains: Vec::new(),
            restarts_seen: HashMap::new(),
            backing_off: false,
        }
    }

    /// Also sends every checkpoint to `sink`.
    pub fn with_sink(mut self, sink: Arc<dyn CheckpointSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Starts it under an actix `Supervisor`.
    pub fn start_supervised(self) -> Addr<Self> {
        actix::Supervisor::start(move |_| self)
    }

    fn push(
        &mut self,
        mut event: AuditEvent,
        reply: Option<oneshot::Sender<Result<u64, AuditError>>>,
    ) {
        if event.at_ms == 0 {
            event.at_ms = self.clock.now_ms();
        }
        if reply.is_none() && self.pending.len() >= self.config.max_pending {
            // Only fire-and-forget events wait this long: the oldest goes.
            if let Some(index) = self.pending.iter().position(|p| p.reply.is_none()) {
                if let Some(dropped) = self.pending.remove(index) {
                    self.metrics.audit_dropped.inc();
                    slog::error!(self.logger, "audit event dropped: the log stays unwritable and the wait list is full";
                        "action" => dropped.event.action.as_str());
                }
            }
        }
        self.pending.push_back(Pending { event, reply });
        self.status
            .pending
            .store(self.pending.len() as u64, Ordering::Relaxed);
    }

    /// Starts the next call to the log, if none is running: an append of what waits, else a
    /// wanted checkpoint, else wanted housekeeping. After a failed write nothing is tried until
    /// the next tick (or a [`Flush`]); flushes waiting meanwhile get the error.
    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        if self.backing_off {
            if !self.flushes.is_empty() {
                let error = AuditError::Write(
                    self.status
                        .snapshot()
                        .last_error
                        .unwrap_or_else(|| "the last write failed".into()),
                );
                for flush in self.flushes.drain(..) {
                    let _ = flush.send(Err(error.clone()));
                }
            }
            return;
        }
        if !self.pending.is_empty() {
            self.append(ctx);
        } else if self.want_checkpoint || !self.flushes.is_empty() {
            self.checkpoint(ctx);
        } else if self.want_maintain {
            self.maintain(ctx);
        }
    }

    fn append(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        let take = self.pending.len().min(self.config.batch_max);
        let batch: Vec<Pending> = self.pending.drain(..take).collect();
        let events: Vec<AuditEvent> = batch.iter().map(|p| p.event.clone()).collect();
        let log = self.log.clone();
        let work = tokio::task::spawn_blocking(move || log.append(&events));
        ctx.spawn(
            async move { work.await.unwrap_or(Err(AuditError::Unavailable)) }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.busy = false;
                    match result {
                        Ok(seqs) => {
                            act.backing_off = false;
                            act.status.succeeded();
                            let n = seqs.len() as u64;
                            act.metrics.audit_records.inc_by(n);
                            if let Some(last) = seqs.last() {
                                act.status.size.store(*last, Ordering::Relaxed);
                            }
                            for (pending, seq) in batch.into_iter().zip(seqs) {
                                if let Some(reply) = pending.reply {
                                    let _ = reply.send(Ok(seq));
                                }
                            }
                            act.since_checkpoint += n;
                            if act.since_checkpoint >= act.config.checkpoint_every {
                                act.want_checkpoint = true;
                            }
                        }
                        Err(e) => {
                            act.failed(&e);
                            // The next tick tries again: what waits, or else a checkpoint, whose
                            // success says the log is writable again.
                            act.want_checkpoint = true;
                            // Those waiting for an answer get it now; the rest wait for the
                            // disk, in their order.
                            for pending in batch.into_iter().rev() {
                                match pending.reply {
                                    Some(reply) => {
                                        let _ = reply.send(Err(e.clone()));
                                    }
                                    None => act.pending.push_front(pending),
                                }
                            }
                        }
                    }
                    act.status
                        .pending
                        .store(act.pending.len() as u64, Ordering::Relaxed);
                    act.kick(ctx);
                }),
        );
    }

    fn failed(&mut self, e: &AuditError) {
        if self.status.snapshot().failing_since_ms.is_none() {
            slog::error!(self.logger, "the audit log cannot be written; operations that must be audited are refused until it can"; "error" => %e);
        }
        self.backing_off = true;
        self.metrics.audit_write_failures.inc();
        self.status.failed(self.clock.now_ms(), e);
    }

    fn checkpoint(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        self.want_checkpoint = false;
        // Those who asked before it started (what they waited for is written): a flush that
        // arrives meanwhile waits for the next one.
        let flushes = std::mem::take(&mut self.flushes);
        let log = self.log.clone();
        let now = self.clock.now_ms();
        let work = tokio::task::spawn_blocking(move || {
            let made = log.checkpoint(now)?;
            Ok((made, log.size()?))
        });
        ctx.spawn(
            async move { work.await.unwrap_or(Err(AuditError::Unavailable)) }
                .into_actor(self)
                .map(
                    move |result: Result<(Option<CheckpointInfo>, u64), AuditError>, act, ctx| {
                        act.busy = false;
                        let answer = match result {
                            Ok((made, size)) => {
                                act.backing_off = false;
                                act.status.succeeded();
                                act.status.size.store(size, Ordering::Relaxed);
                                act.since_checkpoint = 0;
                                act.last_checkpoint_ms = now;
                                if let Some(info) = made {
                                    act.checkpointed(info);
                                }
                                Ok(size)
                            }
                            Err(e) => {
                                act.failed(&e);
                                // Tried again on the next tick.
                                act.want_checkpoint = true;
                                Err(e)
                            }
                        };
                        for flush in flushes {
                            let _ = flush.send(answer.clone());
                        }
                        act.kick(ctx);
                    },
                ),
        );
    }

    fn checkpointed(&mut self, info: CheckpointInfo) {
        self.status
            .checkpoint_size
            .store(info.size, Ordering::Relaxed);
        self.status
            .checkpoint_ms
            .store(info.at_ms, Ordering::Relaxed);
        self.metrics
            .audit_checkpoint_size
            .set(i64::try_from(info.size).unwrap_or(i64::MAX));
        slog::debug!(self.logger, "audit checkpoint signed"; "size" => info.size);
        if let Some(sink) = &self.sink {
            sink.publish(&info);
        }
    }

    /// Records the restarts counted since the last look.
    fn look_at_restarts(&mut self, baseline: bool) {
        for &actor in SUPERVISED_ACTORS {
            let now = self
                .metrics
                .actor_restarts
                .with_label_values(&[actor])
                .get();
            let seen = self.restarts_seen.insert(actor, now).unwrap_or(0);
            if !baseline && now > seen {
                let event = AuditEvent::system(Action::ActorRestarted, Outcome::Ok)
                    .on(actor)
                    .with_details(serde_json::json!({ "restarts": now - seen, "total": now }));
                self.push(event, None);
            }
        }
    }

    fn maintain(&mut self, ctx: &mut Context<Self>) {
        let log = self.log.clone();
        let now = self.clock.now_ms();
        self.last_maintain_ms = now;
        self.want_maintain = false;
        self.busy = true;
        let waiters = std::mem::take(&mut self.maintains);
        let work = tokio::task::spawn_blocking(move || log.maintain(now));
        ctx.spawn(
            async move { work.await.unwrap_or(Err(AuditError::Unavailable)) }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.busy = false;
                    match &result {
                        Ok(0) => {}
                        Ok(n) => slog::info!(act.logger, "audit records archived"; "records" => n),
                        Err(e) => {
                            slog::warn!(act.logger, "audit housekeeping failed; it runs again tomorrow"; "error" => %e);
                        }
                    }
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                    act.kick(ctx);
                }),
        );
    }
}

impl Actor for AuditWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        self.busy = false;
        self.look_at_restarts(self.restarts_seen.is_empty());
        ctx.add_stream(self.clock.interval(self.config.tick));
        // What an earlier run left uncovered is checkpointed at start.
        self.want_checkpoint = true;
        self.kick(ctx);
    }
}

impl Supervised for AuditWriter {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics
            .actor_restarts
            .with_label_values(&["audit"])
            .inc();
        slog::warn!(self.logger, "audit writer restarting"; "pending" => self.pending.len());
    }
}

impl StreamHandler<()> for AuditWriter {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        let now = self.clock.now_ms();
        self.look_at_restarts(false);
        self.backing_off = false;
        let interval =
            i64::try_from(self.config.checkpoint_interval.as_millis()).unwrap_or(i64::MAX);
        if self.since_checkpoint > 0 && now.saturating_sub(self.last_checkpoint_ms) >= interval {
            self.want_checkpoint = true;
        }
        let maintain = i64::try_from(self.config.maintain_every.as_millis()).unwrap_or(i64::MAX);
        if !self.busy
            && self.pending.is_empty()
            && now.saturating_sub(self.last_maintain_ms) >= maintain
        {
            self.maintain(ctx);
            return;
        }
        self.kick(ctx);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Record> for AuditWriter {
    type Result = ();

    fn handle(&mut self, msg: Record, ctx: &mut Self::Context) {
        self.push(msg.event, None);
        self.kick(ctx);
    }
}

impl Handler<RecordNow> for AuditWriter {
    type Result = ResponseFuture<Result<u64, AuditError>>;

    fn handle(&mut self, msg: RecordNow, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.backing_off {
            // The last write failed: answer from it at once rather than queue behind it, so a
            // guarded operation fails fast; the next tick tries the disk again.
            let error = AuditError::Write(
                self.status
                    .snapshot()
                    .last_error
                    .unwrap_or_else(|| "the last write failed".into()),
            );
            return Box::pin(async move { Err(error) });
        }
        self.push(msg.event, Some(tx));
        self.kick(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(AuditError::Unavailable)) })
    }
}

impl Handler<Flush> for AuditWriter {
    type Result = ResponseFuture<Result<u64, AuditError>>;

    fn handle(&mut self, _msg: Flush, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.flushes.push(tx);
        self.want_checkpoint = true;
        self.backing_off = false;
        self.kick(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(AuditError::Unavailable)) })
    }
}

impl Handler<Maintain> for AuditWriter {
    type Result = ResponseFuture<Result<u64, AuditError>>;

    fn handle(&mut self, _msg: Maintain, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.maintains.push(tx);
        self.want_maintain = true;
        self.kick(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(AuditError::Unavailable)) })
    }
}

impl Handler<GetStatus> for AuditWriter {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status.snapshot())
    }
}

/// The alert channel that records every alert transition (first notices only; repeats of an
/// alert still firing are not new events).
pub struct AuditAlerts(pub Recipient<Record>);

impl AlertChannel for AuditAlerts {
    fn name(&self) -> &str {
        "audit"
    }

    fn send(&self, event: &AlertEvent) {
        if event.repeat {
            return;
        }
        let action = match event.state {
            AlertState::Firing => Action::AlertFired,
            AlertState::Resolved => Action::AlertResolved,
        };
        let mut audit = AuditEvent::system(action, Outcome::Ok)
            .on(event.alert)
            .with_details(serde_json::json!({
                "summary": event.summary,
                "value": event.value,
                "threshold": event.threshold,
            }));
        audit.at_ms = event.at_ms;
        self.0.do_send(Record { event: audit });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A log in memory: appends fail while `failing`; every call is counted.
    #[derive(Default)]
    struct Memory {
        events: Mutex<Vec<AuditEvent>>,
        batches: Mutex<Vec<usize>>,
        checkpoints: Mutex<Vec<u64>>,
        maintained: Mutex<u32>,
        failing: std::sync::atomic::AtomicBool,
    }

    impl AuditLog for Memory {
        fn append(&self, events: &[AuditEvent]) -> Result<Vec<u64>, AuditError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(AuditError::Write("database or disk is full".into()));
            }
            let mut all = self.events.lock().unwrap();
            let first = all.len() as u64 + 1;
            all.extend(events.iter().cloned());
            self.batches.lock().unwrap().push(events.len());
            Ok((first..first + events.len() as u64).collect())
        }

        fn size(&self) -> Result<u64, AuditError> {
            Ok(self.events.lock().unwrap().len() as u64)
        }

        fn checkpoint(&self, now_ms: i64) -> Result<Option<CheckpointInfo>, AuditError> {
            let size = self.size()?;
            let mut made = self.checkpoints.lock().unwrap();
            if size == 0 || made.last() == Some(&size) {
                return Ok(None);
            }
            made.push(size);
            Ok(Some(CheckpointInfo {
                size,
                at_ms: now_ms,
                note: format!("size {size}\n"),
            }))
        }

        fn maintain(&self, _now_ms: i64) -> Result<u64, AuditError> {
            *self.maintained.lock().unwrap() += 1;
            Ok(7)
        }
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<u64>>);

    impl CheckpointSink for Sink {
        fn publish(&self, checkpoint: &CheckpointInfo) {
            self.0.lock().unwrap().push(checkpoint.size);
        }
    }

    struct Setup {
        log: Arc<Memory>,
        clock: ManualClock,
        metrics: Arc<Metrics>,
        status: Arc<AuditStatus>,
        sink: Arc<Sink>,
        writer: Addr<AuditWriter>,
    }

    fn start(config: AuditConfig) -> Setup {
        let log = Arc::new(Memory::default());
        let clock = ManualClock::new(1_000);
        let metrics = Arc::new(Metrics::new("0", "x"));
        let status = Arc::new(AuditStatus::default());
        let sink = Arc::new(Sink::default());
        let writer = AuditWriter::new(
            log.clone(),
            config,
            Arc::new(clock.clone()),
            metrics.clone(),
            status.clone(),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .with_sink(sink.clone())
        .start_supervised();
        Setup {
            log,
            clock,
            metrics,
            status,
            sink,
            writer,
        }
    }

    fn event(action: Action) -> AuditEvent {
        AuditEvent::system(action, Outcome::Ok)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
            actix_rt::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[actix::test]
    async fn records_are_stamped_batched_and_checkpointed() {
        let s = start(AuditConfig {
            checkpoint_every: 3,
            ..AuditConfig::default()
        });
        for _ in 0..5 {
            s.writer.do_send(Record {
                event: event(Action::IpBlocked),
            });
        }
        let seq = s
            .writer
            .send(RecordNow {
                event: event(Action::DeviceDeleted),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seq, 6, "in the order sent");
        let events = s.log.events.lock().unwrap().clone();
        assert!(
            events.iter().all(|e| e.at_ms == 1_000),
            "stamped by the clock"
        );
        assert!(s.log.batches.lock().unwrap().len() < 6, "batched");
        settle().await;
        assert_eq!(
            s.log.checkpoints.lock().unwrap().last(),
            Some(&6),
            "three new records call for a checkpoint, without a flush"
        );
        assert_eq!(s.writer.send(Flush).await.unwrap().unwrap(), 6);
        settle().await;
        let made = s.log.checkpoints.lock().unwrap().clone();
        assert_eq!(made.last(), Some(&6));
        assert_eq!(s.sink.0.lock().unwrap().last(), Some(&6));
        let status = s.writer.send(GetStatus).await.unwrap();
        assert_eq!((status.size, status.checkpoint_size), (6, 6));
        assert_eq!(s.metrics.audit_records.get(), 6);
        assert_eq!(s.metrics.audit_checkpoint_size.get(), 6);
        // Nothing new: no new checkpoint.
        s.writer.send(Flush).await.unwrap().unwrap();
        assert_eq!(s.log.checkpoints.lock().unwrap().len(), made.len());
    }

    #[actix::test]
    async fn a_checkpoint_follows_the_interval_while_records_arrive() {
        let s = start(AuditConfig {
            checkpoint_every: 1_000,
            checkpoint_interval: Duration::from_secs(60),
            tick: Duration::from_secs(5),
            ..AuditConfig::default()
        });
        s.writer
            .send(RecordNow {
                event: event(Action::ConfigLoaded),
            })
            .await
            .unwrap()
            .unwrap();
        settle().await;
        let at_start = s.log.checkpoints.lock().unwrap().len();
        s.writer
            .send(RecordNow {
                event: event(Action::IpBlocked),
            })
            .await
            .unwrap()
            .unwrap();
        s.clock.advance(Duration::from_secs(30));
        settle().await;
        assert_eq!(s.log.checkpoints.lock().unwrap().len(), at_start, "not yet");
        s.clock.advance(Duration::from_secs(35));
        settle().await;
        assert_eq!(s.log.checkpoints.lock().unwrap().last(), Some(&2));
    }

    #[actix::test]
    async fn an_unwritable_log_refuses_guarded_events_keeps_the_rest_and_recovers() {
        let s = start(AuditConfig {
            max_pending: 3,
            ..AuditConfig::default()
        });
        settle().await;
        s.log.failing.store(true, Ordering::SeqCst);
        let refused = s
            .writer
            .send(RecordNow {
                event: event(Action::DeviceDeleted),
            })
            .await
            .unwrap();
        assert!(matches!(refused, Err(AuditError::Write(ref e)) if e.contains("disk is full")));
        let snapshot = s.status.snapshot();
        assert!(snapshot.failing_since_ms.is_some());
        assert!(snapshot.last_error.unwrap().contains("disk is full"));
        // Backing off: the next guarded event is refused at once.
        assert!(s
            .writer
            .send(RecordNow {
                event: event(Action::SigningKeyRotated),
            })
            .await
            .unwrap()
            .is_err());
        for _ in 0..5 {
            s.writer.do_send(Record {
                event: event(Action::IpBlocked),
            });
        }
        settle().await;
        assert_eq!(s.status.snapshot().pending, 3, "at most max_pending wait");
        assert_eq!(s.metrics.audit_dropped.get(), 2);
        assert!(s.writer.send(Flush).await.unwrap().is_err());
        // The disk is back: the next tick writes what waited.
        s.log.failing.store(false, Ordering::SeqCst);
        s.clock.advance(Duration::from_secs(5));
        settle().await;
        assert_eq!(s.log.events.lock().unwrap().len(), 3);
        assert!(s.status.snapshot().failing_since_ms.is_none());
        assert!(s.metrics.audit_write_failures.get() >= 1);
        assert!(s
            .writer
            .send(RecordNow {
                event: event(Action::DeviceDeleted),
            })
            .await
            .unwrap()
            .is_ok());
    }

    #[actix::test]
    async fn the_status_recovers_on_a_tick_when_nothing_waits() {
        let s = start(AuditConfig::default());
        settle().await;
        s.log.failing.store(true, Ordering::SeqCst);
        assert!(s
            .writer
            .send(RecordNow {
                event: event(Action::DeviceDeleted),
            })
            .await
            .unwrap()
            .is_err());
        assert!(s.status.snapshot().failing_since_ms.is_some());
        // The disk is back, and no event comes: the next tick's checkpoint says so.
        s.log.failing.store(false, Ordering::SeqCst);
        s.clock.advance(Duration::from_secs(5));
        settle().await;
        assert!(s.status.snapshot().failing_since_ms.is_none());
        assert!(
            s.log.events.lock().unwrap().is_empty(),
            "the refused event stays out"
        );
    }

    #[actix::test]
    async fn restarts_of_supervised_actors_are_recorded_once_each() {
        let s = start(AuditConfig::default());
        settle().await;
        s.metrics
            .actor_restarts
            .with_label_values(&["queue"])
            .inc_by(2);
        s.clock.advance(Duration::from_secs(5));
        settle().await;
        s.writer.send(Flush).await.unwrap().unwrap();
        let events = s.log.events.lock().unwrap().clone();
        let restarts: Vec<&AuditEvent> = events
            .iter()
            .filter(|e| e.action == Action::ActorRestarted)
            .collect();
        assert_eq!(restarts.len(), 1);
        assert_eq!(restarts[0].subject.as_deref(), Some("queue"));
        assert_eq!(restarts[0].details["restarts"], 2);
        // Seen once: the next tick records nothing new.
        s.clock.advance(Duration::from_secs(5));
        settle().await;
        s.writer.send(Flush).await.unwrap().unwrap();
        assert_eq!(
            s.log
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.action == Action::ActorRestarted)
                .count(),
            1
        );
    }

    #[actix::test]
    async fn housekeeping_runs_on_demand_and_daily() {
        let s = start(AuditConfig::default());
        assert_eq!(s.writer.send(Maintain).await.unwrap().unwrap(), 7);
        assert_eq!(*s.log.maintained.lock().unwrap(), 1);
        s.clock.advance(Duration::from_secs(24 * 3_600));
        settle().await;
        assert_eq!(*s.log.maintained.lock().unwrap(), 2);
    }

    #[actix::test]
    async fn alert_transitions_are_recorded_but_not_their_repeats() {
        let s = start(AuditConfig::default());
        let channel = AuditAlerts(s.writer.clone().recipient());
        assert_eq!(channel.name(), "audit");
        let alert = |state, repeat| AlertEvent {
            alert: "queue_lag",
            state,
            summary: "12 deliveries wait".into(),
            value: 12.0,
            threshold: 10.0,
            at_ms: 5_000,
            repeat,
        };
        channel.send(&alert(AlertState::Firing, false));
        channel.send(&alert(AlertState::Firing, true));
        channel.send(&alert(AlertState::Resolved, false));
        settle().await;
        s.writer.send(Flush).await.unwrap().unwrap();
        let events = s.log.events.lock().unwrap().clone();
        let actions: Vec<Action> = events.iter().map(|e| e.action).collect();
        assert_eq!(actions, [Action::AlertFired, Action::AlertResolved]);
        assert_eq!(events[0].at_ms, 5_000);
        assert_eq!(events[0].subject.as_deref(), Some("queue_lag"));
        assert_eq!(events[0].details["threshold"], 10.0);
    }

    #[test]
    fn names_parse_back() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(*action));
        }
        for kind in crate::ports::ActorKind::ALL {
            assert_eq!(crate::ports::ActorKind::parse(kind.as_str()), Some(kind));
        }
        for outcome in Outcome::ALL {
            assert_eq!(Outcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(Action::parse("nope"), None);
        assert_eq!(
            serde_json::to_value(Action::DeviceDeleted).unwrap(),
            "device.deleted"
        );
        let e = AuditEvent::new(
            Action::AdminLogin,
            crate::ports::ActorKind::Admin,
            Outcome::Denied,
        )
        .by("adm_1")
        .on("ses_1");
        assert_eq!(
            (e.actor_id.as_deref(), e.subject.as_deref()),
            (Some("adm_1"), Some("ses_1"))
        );
    }
}
