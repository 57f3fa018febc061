//! The health supervisor: probes every component on its own, keeps the last report, and answers
//! [`Check`] from it.
//!
//! Every [`HealthConfig::every`] of the injected clock (and once at start) it runs one round:
//! the queue and the registry must answer a stats request, the batcher must be running, the queue
//! lag (the oldest delivery waiting for an online device, [`queue_lag`]) must stay under its
//! thresholds, and every external [`Probe`] (store, Redis, disk, keys: the binary implements them)
//! must answer. Each of those waits at most [`HealthConfig::probe_timeout`]; one that does not
//! answer in time (or panics) is unhealthy. Probes run concurrently, so a round takes at most one
//! timeout.
//!
//! After a round it sets `beepmyphone_component_healthy{component}` and logs each transition once
//! (`component health changed`: warn when a component got worse, info when it recovered; a
//! component first seen healthy is not logged). [`Check`] answers from the last report while it is
//! younger than [`HealthConfig::every`], so a burst of health requests probes nothing; a stale
//! report (or `fresh: true`) runs a round first. Rounds never overlap: a round holds the mailbox.
//!
//! The supervisor is itself supervised ([`HealthSupervisor::start_supervised`]): a panic in a
//! round restarts it; it keeps the last states, so a restart does not log transitions again.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use futures_util::FutureExt;
use serde::Serialize;

use crate::batcher::Batcher;
use crate::clock::SharedClock;
use crate::guard::guarded;
use crate::metrics::Metrics;
pub use crate::ports::{Finding, Probe, Status};
use crate::queue::{GetQueueStats, NotificationQueue, QueueStats};
use crate::registry::{GetRegistryStats, RegistryStats, SessionRegistry};

/// Asks for the health report: the cached one while it is younger than [`HealthConfig::every`].
#[derive(Message, Debug)]
#[rtype(result = "HealthReport")]
pub struct Check {
    /// Probe now, ignoring the cache.
    pub fresh: bool,
}

/// One component's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentHealth {
    /// The component's name (`store`, `queue`, `disk`, …).
    pub name: String,
    /// Its state.
    pub status: Status,
    /// Why, for operators (shown to admins only).
    pub reason: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The worst component status.
    pub status: Status,
    /// Per component, in a stable order.
    pub components: Vec<ComponentHealth>,
    /// Restarts of this relay's supervised actors since start ([`restarts`]).
    pub restarts: u64,
    /// When this report was made, epoch milliseconds of the injected clock.
    pub checked_at: i64,
    /// Queue counts, when the queue answered.
    pub queue: Option<QueueStats>,
    /// Socket counts, when the registry answered.
    pub sockets: Option<RegistryStats>,
}

impl HealthReport {
    /// The component called `name`, if the report has it.
    pub fn component(&self, name: &str) -> Option<&ComponentHealth> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The worst status of `components` (healthy when there are none).
    pub fn worst(components: &[ComponentHealth]) -> Status {
        components
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Healthy)
    }
}

/// The health supervisor's tunables (`[health]` in the settings).
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// How often every component is probed, and how long a report is reused.
    pub every: Duration,
    /// How long one probe (or actor) may take to answer before it counts as unhealthy.
    pub probe_timeout: Duration,
    /// Queue lag above which the queue is degraded.
    pub queue_lag_degraded: Duration,
    /// Queue lag above which the queue is unhealthy.
    pub queue_lag_unhealthy: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(5),
            queue_lag_degraded: Duration::from_secs(30),
            queue_lag_unhealthy: Duration::from_secs(300),
        }
    }
}

/// The supervised actors, as they label `beepmyphone_actor_restarts_total`.
pub const SUPERVISED: [&str; 5] = ["queue", "registry", "batcher", "keys", "health"];

/// Restarts of this relay's supervised actors since start, from its metrics.
pub fn restarts(metrics: &Metrics) -> u64 {
    SUPERVISED
        .iter()
        .map(|actor| metrics.actor_restarts.with_label_values(&[actor]).get())
        .sum()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The queue-lag component from the queue's figures at `now_ms`: the age of the oldest delivery
/// waiting for an online device (deliveries for offline devices, or held by quiet hours, wait by
/// design and do not count).
pub fn queue_lag(stats: Option<&QueueStats>, now_ms: i64, config: &HealthConfig) -> Finding {
    let Some(stats) = stats else {
        return Finding::new(Status::Unhealthy, "unknown: the queue did not answer");
    };
    let Some(oldest) = stats.oldest_ready_ms else {
        return Finding::new(Status::Healthy, "nothing waits for an online device");
    };
    let lag = now_ms.saturating_sub(oldest).max(0);
    let secs = lag / 1_000;
    let (degraded, unhealthy) = (
        millis(config.queue_lag_degraded),
        millis(config.queue_lag_unhealthy),
    );
    if lag > unhealthy {
        Finding::new(
            Status::Unhealthy,
            format!(
                "the oldest delivery waiting for an online device is {secs} s old (over {} s)",
                unhealthy / 1_000
            ),
        )
    } else if lag > degraded {
        Finding::new(
            Status::Degraded,
            format!(
                "the oldest delivery waiting for an online device is {secs} s old (over {} s)",
                degraded / 1_000
            ),
        )
    } else {
        Finding::new(
            Status::Healthy,
            format!("the oldest delivery waiting for an online device is {secs} s old"),
        )
    }
}

/// The actors the supervisor watches.
#[derive(Clone)]
pub struct Watched {
    /// The notification queue (must answer [`GetQueueStats`]).
    pub queue: Addr<NotificationQueue>,
    /// The session registry (must answer [`GetRegistryStats`]).
    pub registry: Addr<SessionRegistry>,
    /// The batcher (must be running).
    pub batcher: Addr<Batcher>,
}

/// The health supervisor actor.
pub struct HealthSupervisor {
    watched: Watched,
    probes: Vec<Arc<dyn Probe>>,
    clock: SharedClock,
    config: HealthConfig,
    metrics: Arc<Metrics>,
    log: slog::Logger,
    cached: Option<HealthReport>,
    /// Each component's last state, to log transitions once.
    last: HashMap<String, Status>,
}

impl HealthSupervisor {
    /// A supervisor of `watched` and `probes`, recording into `metrics`.
    pub fn new(
        watched: Watched,
        probes: Vec<Arc<dyn Probe>>,
        clock: SharedClock,
        config: HealthConfig,
        metrics: Arc<Metrics>,
        log: slog::Logger,
    ) -> Self {
        Self {
            watched,
            probes,
            clock,
            config,
            metrics,
            log,
            cached: None,
            last: HashMap::new(),
        }
    }

    /// Starts it under an actix `Supervisor` (restarted with the same address if it stops).
    pub fn start_supervised(self) -> Addr<Self> {
        Supervisor::start(move |_| self)
    }

    /// One probe round; records and caches the report, and answers with it.
    fn round(&mut self) -> impl ActorFuture<Self, Output = HealthReport> + 'static {
        let now = self.clock.now_ms();
        let watched = self.watched.clone();
        let probes = self.probes.clone();
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let timeout = config.probe_timeout;
        let work = async move {
            let (queue, sockets) = futures_util::future::join(
                watched.queue.send(GetQueueStats).timeout(timeout),
                watched.registry.send(GetRegistryStats).timeout(timeout),
            )
            .await;
            let (queue, sockets) = (queue.ok(), sockets.ok());
            let findings = join_all(probes.iter().map(|probe| run_probe(&**probe, timeout))).await;
            let mut components = vec![
                actor_health("queue", queue.is_some(), timeout),
                actor_health("registry", sockets.is_some(), timeout),
                actor_health("batcher", watched.batcher.connected(), timeout),
                component("queue_lag", queue_lag(queue.as_ref(), now, &config)),
            ];
            components.extend(
                probes
                    .iter()
                    .zip(findings)
                    .map(|(probe, finding)| component(probe.name(), finding)),
            );
            HealthReport {
                status: HealthReport::worst(&components),
                components,
                restarts: restarts(&metrics),
                checked_at: now,
                queue,
                sockets,
            }
        };
        work.into_actor(self).map(|report, act, ctx| {
            let log = act.log.clone();
            guarded("health", &log, ctx, |_| act.record(&report));
            report
        })
    }

    /// Sets the gauges, logs transitions and caches `report`.
    fn record(&mut self, report: &HealthReport) {
        for c in &report.components {
            self.metrics
                .component_healthy
                .with_label_values(&[&c.name])
                .set(i64::from(c.status == Status::Healthy));
            let previous = self.last.insert(c.name.clone(), c.status);
            match previous {
                Some(before) if before == c.status => {}
                None if c.status == Status::Healthy => {}
                Some(before) if c.status < before => {
                    slog::info!(self.log, "component health changed"; "component" => &c.name,
                        "from" => before.as_str(), "to" => c.status.as_str(), "reason" => &c.reason);
                }
                before => {
                    slog::warn!(self.log, "component health changed"; "component" => &c.name,
                        "from" => before.map_or("unknown", Status::as_str),
                        "to" => c.status.as_str(), "reason" => &c.reason);
                }
            }
        }
        self.cached = Some(report.clone());
    }

    fn fresh_cache(&self) -> Option<&HealthReport> {
        let cached = self.cached.as_ref()?;
        let age = self.clock.now_ms() - cached.checked_at;
        (0..millis(self.config.every))
            .contains(&age)
            .then_some(cached)
    }
}

/// Runs one probe under `timeout`; a probe that panics is unhealthy (and the round goes on).
fn run_probe(
    probe: &dyn Probe,
    timeout: Duration,
) -> impl std::future::Future<Output = Finding> + 'static {
    let panicked = || Finding::new(Status::Unhealthy, "the probe panicked");
    let check = catch_unwind(AssertUnwindSafe(|| probe.check()));
    async move {
        let Ok(check) = check else {
            return panicked();
        };
        match tokio::time::timeout(timeout, AssertUnwindSafe(check).catch_unwind()).await {
            Ok(Ok(finding)) => finding,
            Ok(Err(_)) => panicked(),
            Err(_) => Finding::new(
                Status::Unhealthy,
                format!("no answer within {} ms", timeout.as_millis()),
            ),
        }
    }
}

fn component(name: &str, finding: Finding) -> ComponentHealth {
    ComponentHealth {
        name: name.to_owned(),
        status: finding.status,
        reason: finding.reason,
    }
}

fn actor_health(name: &str, answered: bool, timeout: Duration) -> ComponentHealth {
    component(
        name,
        if answered {
            Finding::new(Status::Healthy, "answering")
        } else {
            Finding::new(
                Status::Unhealthy,
                format!("not answering within {} ms", timeout.as_millis()),
            )
        },
    )
}

impl Actor for HealthSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(self.clock.interval(self.config.every));
        let first = self.round().map(|_, _, _| ());
        ctx.wait(first);
    }
}

impl Supervised for HealthSupervisor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics
            .actor_restarts
            .with_label_values(&["health"])
            .inc();
        slog::warn!(self.log, "health supervisor restarting");
        // The last states stay, so that the next round logs only real transitions.
        self.cached = None;
    }
}

impl StreamHandler<()> for HealthSupervisor {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        let round = self.round().map(|_, _, _| ());
        ctx.wait(round);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Check> for HealthSupervisor {
    type Result = AtomicResponse<Self, HealthReport>;

    fn handle(&mut self, msg: Check, _ctx: &mut Self::Context) -> Self::Result {
        if !msg.fresh {
            if let Some(cached) = self.fresh_cache() {
                return AtomicResponse::new(Box::pin(fut::ready(cached.clone())));
            }
        }
        AtomicResponse::new(Box::pin(self.round()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use crate::batcher::BatcherConfig;
    use crate::clock::ManualClock;
    use crate::guard::RESTARTS;
    use crate::ports::{CommitBatch, InsertOutcome, QueueSnapshot, QueueStore, StoreError};
    use crate::queue::{InjectFault, QueueConfig};
    use crate::supervisor::{start_graph, ActorGraph, GraphSettings};

    struct EmptyStore;

    impl QueueStore for EmptyStore {
        fn commit(&self, batch: &CommitBatch) -> Result<Vec<InsertOutcome>, StoreError> {
            Ok((1..=batch.inserts.len())
                .map(|seq| InsertOutcome::Inserted { seq: seq as i64 })
                .collect())
        }
        fn load(&self, _now_ms: i64) -> Result<QueueSnapshot, StoreError> {
            Ok(QueueSnapshot::default())
        }
        fn pending(
            &self,
            _devices: &[crate::model::DeviceId],
            _seqs: Option<&[i64]>,
            _now_ms: i64,
        ) -> Result<QueueSnapshot, StoreError> {
            Ok(QueueSnapshot::default())
        }
    }

    /// A probe whose answer the test sets; counts its calls; can hang forever.
    #[derive(Clone)]
    struct FakeProbe {
        finding: Arc<Mutex<Finding>>,
        calls: Arc<AtomicUsize>,
        hang: Arc<AtomicBool>,
    }

    impl FakeProbe {
        fn new() -> Self {
            Self {
                finding: Arc::new(Mutex::new(Finding::new(Status::Healthy, "fine"))),
                calls: Arc::new(AtomicUsize::new(0)),
                hang: Arc::new(AtomicBool::new(false)),
            }
        }
        fn set(&self, status: Status, reason: &str) {
            *self.finding.lock().unwrap() = Finding::new(status, reason);
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Probe for FakeProbe {
        fn name(&self) -> &str {
            "fake"
        }
        fn check(&self) -> crate::ports::ProbeFuture {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.hang.load(Ordering::SeqCst) {
                return Box::pin(std::future::pending());
            }
            let finding = self.finding.lock().unwrap().clone();
            Box::pin(async move { finding })
        }
    }

    /// Log lines as `level msg component=… from=… to=…`.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<String>>>);

    struct Kv(String);

    impl slog::Serializer for Kv {
        fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments) -> slog::Result {
            self.0.push_str(&format!(" {key}={val}"));
            Ok(())
        }
    }

    impl slog::Drain for Captured {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, record: &slog::Record, _values: &slog::OwnedKVList) -> Result<(), Self::Err> {
            let mut kv = Kv(format!(
                "{} {}",
                record.level().as_short_str(),
                record.msg()
            ));
            let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
            self.0.lock().unwrap().push(kv.0);
            Ok(())
        }
    }

    impl Captured {
        fn transitions(&self) -> Vec<String> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("component health changed"))
                .cloned()
                .collect()
        }
    }

    struct Harness {
        graph: ActorGraph,
        probe: FakeProbe,
        clock: ManualClock,
        log: Captured,
    }

    /// The graph on an empty store, with `probes`, on `clock`, logging to `log`.
    fn graph_with(
        probes: Vec<Arc<dyn Probe>>,
        clock: &ManualClock,
        log: slog::Logger,
    ) -> ActorGraph {
        start_graph(
            GraphSettings {
                queue: QueueConfig::default(),
                batcher: BatcherConfig::default(),
                health: HealthConfig::default(),
                cluster: None,
            },
            Arc::new(EmptyStore),
            probes,
            Arc::new(clock.clone()),
            Arc::new(Metrics::new("test", "test")),
            &log,
        )
    }

    fn harness() -> Harness {
        let probe = FakeProbe::new();
        let clock = ManualClock::starting_now();
        let log = Captured::default();
        let graph = graph_with(
            vec![Arc::new(probe.clone()) as Arc<dyn Probe>],
            &clock,
            slog::Logger::root(slog::Fuse(log.clone()), slog::o!()),
        );
        Harness {
            graph,
            probe,
            clock,
            log,
        }
    }

    async fn check(h: &Harness) -> HealthReport {
        h.graph.health.send(Check { fresh: false }).await.unwrap()
    }

    fn gauge(h: &Harness, component: &str) -> i64 {
        h.graph
            .metrics
            .component_healthy
            .with_label_values(&[component])
            .get()
    }

    /// Lets the actors run until `done` holds (no sleeping: the clock does not move).
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition never held");
    }

    fn status_of(report: &HealthReport, name: &str) -> Status {
        report.component(name).unwrap().status
    }

    #[actix::test]
    async fn every_actor_answers_and_every_component_is_reported_healthy() {
        let h = harness();
        let report = check(&h).await;
        let names: Vec<&str> = report.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["queue", "registry", "batcher", "queue_lag", "fake"]);
        assert_eq!(report.status, Status::Healthy, "{report:?}");
        assert!(report.queue.is_some() && report.sockets.is_some());
        for name in names {
            assert_eq!(gauge(&h, name), 1, "{name}");
        }
        // Components first seen healthy are not logged as transitions.
        assert!(h.log.transitions().is_empty(), "{:?}", h.log.transitions());
    }

    #[actix::test]
    async fn a_probe_that_does_not_answer_in_5_s_is_unhealthy_and_the_round_still_ends() {
        tokio::time::pause();
        let probe = FakeProbe::new();
        probe.hang.store(true, Ordering::SeqCst);
        let clock = ManualClock::starting_now();
        let graph = graph_with(
            vec![Arc::new(probe.clone()) as Arc<dyn Probe>],
            &clock,
            slog::Logger::root(slog::Discard, slog::o!()),
        );
        let started = tokio::time::Instant::now();
        let report = graph.health.send(Check { fresh: true }).await.unwrap();
        let took = started.elapsed();
        let fake = report.component("fake").unwrap();
        assert_eq!(fake.status, Status::Unhealthy);
        assert_eq!(fake.reason, "no answer within 5000 ms");
        assert_eq!(report.status, Status::Unhealthy);
        // The actors still answered: only the hanging probe is unhealthy.
        assert_eq!(status_of(&report, "queue"), Status::Healthy);
        // The start-up round and this one each waited one timeout, no more.
        assert!(
            took >= Duration::from_secs(5) && took <= Duration::from_secs(11),
            "{took:?}"
        );
        assert_eq!(
            graph
                .metrics
                .component_healthy
                .with_label_values(&["fake"])
                .get(),
            0
        );
    }

    struct PanickingProbe;

    impl Probe for PanickingProbe {
        fn name(&self) -> &str {
            "panicky"
        }
        fn check(&self) -> crate::ports::ProbeFuture {
            Box::pin(async { panic!("probe bug") })
        }
    }

    #[actix::test]
    async fn a_panicking_probe_is_unhealthy_and_the_others_are_still_reported() {
        let probe = FakeProbe::new();
        let graph = graph_with(
            vec![
                Arc::new(PanickingProbe) as Arc<dyn Probe>,
                Arc::new(probe.clone()),
            ],
            &ManualClock::starting_now(),
            slog::Logger::root(slog::Discard, slog::o!()),
        );
        let report = graph.health.send(Check { fresh: true }).await.unwrap();
        let panicky = report.component("panicky").unwrap();
        assert_eq!(panicky.status, Status::Unhealthy);
        assert_eq!(panicky.reason, "the probe panicked");
        assert_eq!(status_of(&report, "fake"), Status::Healthy);
        // The supervisor itself did not go down.
        assert!(graph.health.send(Check { fresh: false }).await.is_ok());
    }

    #[actix::test]
    async fn a_report_is_reused_for_30_s_of_clock_then_probed_again() {
        let h = harness();
        let first = check(&h).await;
        assert_eq!(h.probe.calls(), 1, "the start-up round probed once");
        h.clock.advance(Duration::from_secs(29));
        let second = check(&h).await;
        assert_eq!(h.probe.calls(), 1, "a check within 30 s does not probe");
        assert_eq!(second.checked_at, first.checked_at);
        h.clock.advance(Duration::from_secs(1));
        let third = check(&h).await;
        assert!(h.probe.calls() >= 2, "probed again after 30 s");
        assert_eq!(third.checked_at, first.checked_at + 30_000);
        // `fresh` ignores the cache.
        let before = h.probe.calls();
        h.graph.health.send(Check { fresh: true }).await.unwrap();
        assert_eq!(h.probe.calls(), before + 1);
    }

    #[actix::test]
    async fn the_supervisor_probes_on_its_own_and_logs_each_transition_once() {
        let h = harness();
        check(&h).await;
        h.probe.set(Status::Degraded, "half full");
        // Nobody asks: the periodic round notices the change by itself.
        h.clock.advance(Duration::from_secs(30));
        until(|| h.probe.calls() == 2).await;
        assert_eq!(h.log.transitions().len(), 1, "logged before anyone asked");
        let report = check(&h).await;
        assert_eq!(status_of(&report, "fake"), Status::Degraded);
        assert_eq!(report.status, Status::Degraded);
        assert_eq!(gauge(&h, "fake"), 0);
        // More rounds in the same state log nothing more.
        for _ in 0..3 {
            h.clock.advance(Duration::from_secs(30));
            check(&h).await;
        }
        h.probe.set(Status::Unhealthy, "full");
        h.clock.advance(Duration::from_secs(30));
        assert_eq!(check(&h).await.status, Status::Unhealthy);
        h.clock.advance(Duration::from_secs(30));
        check(&h).await;
        // Recovery, on its own.
        h.probe.set(Status::Healthy, "fine");
        h.clock.advance(Duration::from_secs(30));
        let report = check(&h).await;
        assert_eq!(report.status, Status::Healthy);
        assert_eq!(gauge(&h, "fake"), 1);
        h.clock.advance(Duration::from_secs(30));
        check(&h).await;
        let lines = h.log.transitions();
        assert_eq!(
            lines,
            [
                "WARN component health changed reason=half full to=degraded from=healthy component=fake",
                "WARN component health changed reason=full to=unhealthy from=degraded component=fake",
                "INFO component health changed reason=fine to=healthy from=unhealthy component=fake",
            ],
            "{lines:#?}"
        );
    }

    #[actix::test]
    async fn restarts_are_counted_per_actor() {
        let h = harness();
        let before = RESTARTS.load(Ordering::Relaxed);
        h.graph.queue.do_send(InjectFault);
        // The restarted queue answers (the supervisor restarted it before the next message).
        h.graph.queue.send(GetQueueStats).await.unwrap();
        let restarts = |actor: &str| {
            h.graph
                .metrics
                .actor_restarts
                .with_label_values(&[actor])
                .get()
        };
        assert_eq!(restarts("queue"), 1);
        assert_eq!(restarts("registry"), 0);
        assert_eq!(restarts("batcher"), 0);
        assert!(RESTARTS.load(Ordering::Relaxed) > before);
        let report = h.graph.health.send(Check { fresh: true }).await.unwrap();
        assert_eq!(report.restarts, 1, "this relay's restarts: {report:?}");
        assert_eq!(status_of(&report, "queue"), Status::Healthy);
    }

    #[test]
    fn queue_lag_thresholds() {
        let config = HealthConfig::default();
        let stats = |oldest: Option<i64>| QueueStats {
            oldest_ready_ms: oldest,
            ..QueueStats::default()
        };
        let now = 1_000_000;
        let at = |oldest| queue_lag(Some(&stats(oldest)), now, &config).status;
        assert_eq!(at(None), Status::Healthy);
        assert_eq!(at(Some(now - 30_000)), Status::Healthy);
        assert_eq!(at(Some(now - 30_001)), Status::Degraded);
        assert_eq!(at(Some(now - 300_000)), Status::Degraded);
        assert_eq!(at(Some(now - 300_001)), Status::Unhealthy);
        // A delivery from a clock ahead of ours is not negative lag.
        assert_eq!(at(Some(now + 5_000)), Status::Healthy);
        let unknown = queue_lag(None, now, &config);
        assert_eq!(unknown.status, Status::Unhealthy);
        assert_eq!(
            queue_lag(Some(&stats(Some(now - 301_000))), now, &config).reason,
            "the oldest delivery waiting for an online device is 301 s old (over 300 s)"
        );
    }
}
