//! The alert manager: evaluates the alert rules on the injected clock and sends every transition
//! to its channels.
//!
//! Messages first ([`Evaluate`], [`GetFiring`]; the memory monitor's
//! [`MemoryTrend`] is handled here too), then the rules
//! ([`AlertConfig`], the rule names), the inputs ([`HttpSnapshot`], taken from the metrics), the
//! per-rule state machine ([`RuleState`]) and the [`AlertManager`] actor.
//!
//! Each evaluation tick reads:
//! - the HTTP figures from [`Metrics`]: the cumulative buckets of `http_duration` (summed over
//!   every route and method) and the `http_requests` counters (5xx and all), compared with the
//!   snapshot taken one window ago (or the oldest one kept, early on); the p99 is the upper bound
//!   of the bucket where the window's cumulative count crosses 99 %;
//! - the health supervisor's report (`Check { fresh: false }`): queue backlog and unhealthy
//!   components;
//! - the last trend the memory monitor reported (which is also evaluated as soon as it arrives).
//!
//! An alert fires once when its condition starts to hold, repeats at most every
//! [`AlertConfig::repeat_interval`] while it holds, and resolves once when it clears;
//! `beepmyphone_alerts_firing{alert}` is 1 while it holds. A rule whose input is missing (the
//! health check did not answer, no memory trend yet) keeps its state until the input returns.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus::core::Collector;

use crate::clock::SharedClock;
use crate::memory::MemoryTrend;
use crate::metrics::Metrics;
use crate::ports::{AlertChannel, AlertEvent, AlertState, Status};
use crate::supervisor::{Check, HealthReport};

/// p99 response time over the window above the threshold.
pub const HTTP_P99: &str = "http_p99_latency";
/// Share of 5xx answers over the window above the threshold.
pub const HTTP_ERROR_RATE: &str = "http_error_rate";
/// Deliveries waiting (ready, plus rows waiting for the group commit) above the threshold.
pub const QUEUE_LAG: &str = "queue_lag";
/// The memory monitor sees sustained growth.
pub const MEMORY_GROWTH: &str = "memory_growth";
/// At least one component reports unhealthy.
pub const COMPONENT_UNHEALTHY: &str = "component_unhealthy";

/// Every rule, in evaluation order.
pub const RULES: [&str; 5] = [
    HTTP_P99,
    HTTP_ERROR_RATE,
    QUEUE_LAG,
    MEMORY_GROWTH,
    COMPONENT_UNHEALTHY,
];

/// Evaluates every rule now (what each tick does); answers once the transitions were sent.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Evaluate;

/// The alerts firing now, in rule order.
#[derive(Message, Debug)]
#[rtype(result = "Vec<&'static str>")]
pub struct GetFiring;

/// The rules and their thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// Time between evaluations.
    pub evaluation_interval: Duration,
    /// Least time between two notices of one alert while it holds.
    pub repeat_interval: Duration,
    /// The span the HTTP rules look back over.
    pub window: Duration,
    /// p99 response time above which [`HTTP_P99`] fires; zero turns the rule off.
    pub p99_threshold: Duration,
    /// Least requests in the window before the HTTP rules judge (fewer: they hold as cleared).
    pub min_requests: u64,
    /// Share of 5xx (0–1) above which [`HTTP_ERROR_RATE`] fires; zero turns the rule off.
    pub error_rate_threshold: f64,
    /// Age of the oldest delivery an online device waits for above which [`QUEUE_LAG`] fires;
    /// zero turns the rule off.
    pub queue_lag_threshold: Duration,
    /// Whether [`MEMORY_GROWTH`] is on.
    pub memory_growth: bool,
    /// Whether [`COMPONENT_UNHEALTHY`] is on.
    pub component_unhealthy: bool,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            evaluation_interval: Duration::from_secs(15),
            repeat_interval: Duration::from_secs(60 * 60),
            window: Duration::from_secs(5 * 60),
            p99_threshold: Duration::from_millis(500),
            min_requests: 20,
            error_rate_threshold: 0.05,
            queue_lag_threshold: Duration::from_secs(60),
            memory_growth: true,
            component_unhealthy: true,
        }
    }
}

/// The cumulative HTTP figures at one instant, summed over routes and methods.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSnapshot {
    /// When it was taken, epoch milliseconds.
    pub at_ms: i64,
    /// `(upper bound in seconds, cumulative count)` per finite bucket of `http_duration`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations of `http_duration`.
    pub count: u64,
    /// Requests counted by `http_requests`.
    pub requests: f64,
    /// Of those, answered with a 5xx.
    pub errors: f64,
}

impl HttpSnapshot {
    /// Reads the figures from the metrics.
    pub fn take(metrics: &Metrics, at_ms: i64) -> Self {
        let mut buckets: Vec<(f64, u64)> = Vec::new();
        let mut count = 0;
        for family in metrics.http_duration.collect() {
            for metric in family.get_metric() {
                let histogram = metric.get_histogram();
                count += histogram.get_sample_count();
                for (i, bucket) in histogram.get_bucket().iter().enumerate() {
                    match buckets.get_mut(i) {
                        Some(slot) => slot.1 += bucket.cumulative_count(),
                        None => buckets.push((bucket.upper_bound(), bucket.cumulative_count())),
                    }
                }
            }
        }
        let (mut requests, mut errors) = (0.0, 0.0);
        for family in metrics.http_requests.collect() {
            for metric in family.get_metric() {
                let value = metric.get_counter().get_value();
                requests += value;
                if metric
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "status" && l.value().starts_with('5'))
                {
                    errors += value;
                }
            }
        }
        Self {
            at_ms,
            buckets,
            count,
            requests,
            errors,
        }
    }

    /// The p99 in seconds of what was observed since `earlier`, with the number of observations;
    /// `None` when nothing was. Beyond the last finite bucket it is that bucket's bound.
    pub fn p99_since(&self, earlier: &HttpSnapshot) -> Option<(f64, u64)> {
        let total = self.count.saturating_sub(earlier.count);
        if total == 0 {
            return None;
        }
        // The rank of the 99th percentile: ceil(0.99 × total), computed in integers.
        let rank = (total * 99).div_ceil(100);
        for (i, (bound, cumulative)) in self.buckets.iter().enumerate() {
            let before = earlier.buckets.get(i).map_or(0, |b| b.1);
            if cumulative.saturating_sub(before) >= rank {
                return Some((*bound, total));
            }
        }
        Some((self.buckets.last().map_or(f64::MAX, |b| b.0), total))
    }
}

/// What one rule saw at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The condition holds.
    pub holds: bool,
    /// The measured value.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// One line for a human.
    pub summary: String,
}

/// One rule's alert state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleState {
    /// The alert holds.
    pub firing: bool,
    /// When its last firing notice went out, epoch milliseconds.
    pub last_sent_ms: i64,
}

impl RuleState {
    /// Moves the state on what was seen at `now_ms`; returns the notice to send, if any:
    /// `(Firing, false)` when it starts to hold, `(Firing, true)` when it still holds and the last
    /// notice is at least `repeat` old, `(Resolved, false)` when it cleared.
    pub fn step(
        &mut self,
        holds: bool,
        now_ms: i64,
        repeat: Duration,
    ) -> Option<(AlertState, bool)> {
        let repeat_ms = i64::try_from(repeat.as_millis()).unwrap_or(i64::MAX);
        match (self.firing, holds) {
            (false, true) => {
                self.firing = true;
                self.last_sent_ms = now_ms;
                Some((AlertState::Firing, false))
            }
            (true, true) if now_ms - self.last_sent_ms >= repeat_ms => {
                self.last_sent_ms = now_ms;
                Some((AlertState::Firing, true))
            }
            (true, false) => {
                self.firing = false;
                Some((AlertState::Resolved, false))
            }
            _ => None,
        }
    }
}

/// The channel every alert goes to: the relay's own log.
pub struct LogChannel {
    log: slog::Logger,
}

impl LogChannel {
    /// Logs into `log`.
    pub fn new(log: slog::Logger) -> Self {
        Self { log }
    }
}

impl AlertChannel for LogChannel {
    fn name(&self) -> &str {
        "log"
    }

    fn send(&self, event: &AlertEvent) {
        match event.state {
            AlertState::Firing => slog::warn!(self.log, "alert firing";
                "alert" => event.alert, "summary" => &event.summary, "value" => event.value,
                "threshold" => event.threshold, "repeat" => event.repeat),
            AlertState::Resolved => slog::info!(self.log, "alert resolved";
                "alert" => event.alert, "summary" => &event.summary, "value" => event.value,
                "threshold" => event.threshold),
        }
    }
}

/// The alert manager actor.
pub struct AlertManager {
    config: AlertConfig,
    metrics: Arc<Metrics>,
    health: Option<Recipient<Check>>,
    clock: SharedClock,
    channels: Vec<Arc<dyn AlertChannel>>,
    history: VecDeque<HttpSnapshot>,
    states: [RuleState; RULES.len()],
    memory: Option<MemoryTrend>,
    evaluating: bool,
    log: slog::Logger,
}

impl AlertManager {
    /// A manager that reads `metrics` and `health` on `clock` and sends transitions to the log
    /// and to `channels`.
    pub fn new(
        config: AlertConfig,
        metrics: Arc<Metrics>,
        health: Option<Recipient<Check>>,
        clock: SharedClock,
        channels: Vec<Arc<dyn AlertChannel>>,
        log: slog::Logger,
    ) -> Self {
        let mut all: Vec<Arc<dyn AlertChannel>> = vec![Arc::new(LogChannel::new(log.clone()))];
        all.extend(channels);
        for rule in RULES {
            metrics.alerts_firing.with_label_values(&[rule]).set(0);
        }
        // The first snapshot is the baseline of the first window.
        let history = VecDeque::from([HttpSnapshot::take(&metrics, clock.now_ms())]);
        Self {
            config,
            metrics,
            health,
            clock,
            channels: all,
            history,
            states: [RuleState::default(); RULES.len()],
            memory: None,
            evaluating: false,
            log,
        }
    }

    fn evaluate(&mut self) -> ResponseActFuture<Self, ()> {
        let health = self.health.clone();
        let work = async move {
            match health {
                Some(health) => health
                    .send(Check { fresh: false })
                    .timeout(Duration::from_secs(30))
                    .await
                    .ok(),
                None => None,
            }
        };
        Box::pin(
            work.into_actor(self)
                .map(|report, act, _| act.apply(report.as_ref())),
        )
    }

    /// Judges every rule on the figures now and the health report (when it answered).
    fn apply(&mut self, report: Option<&HealthReport>) {
        let now = self.clock.now_ms();
        let snapshot = HttpSnapshot::take(&self.metrics, now);
        let window_ms = i64::try_from(self.config.window.as_millis()).unwrap_or(i64::MAX);
        while self.history.len() >= 2 && self.history[1].at_ms <= now - window_ms {
            self.history.pop_front();
        }
        let baseline = self
            .history
            .front()
            .cloned()
            .unwrap_or_else(|| snapshot.clone());
        let observations = [
            (HTTP_P99, self.observe_p99(&snapshot, &baseline)),
            (HTTP_ERROR_RATE, self.observe_errors(&snapshot, &baseline)),
            (QUEUE_LAG, self.observe_queue(report)),
            (MEMORY_GROWTH, self.observe_memory()),
            (COMPONENT_UNHEALTHY, self.observe_components(report)),
        ];
        self.history.push_back(snapshot);
        for (rule, observation) in observations {
            if let Some(observation) = observation {
                self.transition(rule, &observation, now);
            }
        }
    }

    fn window_text(&self, baseline: &HttpSnapshot, now: i64) -> String {
        format!("{} s", (now - baseline.at_ms).max(0) / 1_000)
    }

    fn observe_p99(&self, now: &HttpSnapshot, baseline: &HttpSnapshot) -> Option<Observation> {
        if self.config.p99_threshold.is_zero() {
            return None;
        }
        let threshold_ms = self.config.p99_threshold.as_secs_f64() * 1_000.0;
        let window = self.window_text(baseline, now.at_ms);
        Some(match now.p99_since(baseline) {
            Some((p99, requests)) if requests >= self.config.min_requests => {
                let value = p99 * 1_000.0;
                Observation {
                    holds: value > threshold_ms,
                    value,
                    threshold: threshold_ms,
                    summary: format!(
                        "p99 response time {value:.1} ms over the last {window} ({requests} requests); threshold {threshold_ms:.0} ms"
                    ),
                }
            }
            other => Observation {
                holds: false,
                value: 0.0,
                threshold: threshold_ms,
                summary: format!(
                    "{} requests in the last {window}, fewer than the {} needed to judge the p99",
                    other.map_or(0, |o| o.1),
                    self.config.min_requests
                ),
            },
        })
    }

    fn observe_errors(&self, now: &HttpSnapshot, baseline: &HttpSnapshot) -> Option<Observation> {
        if self.config.error_rate_threshold <= 0.0 {
            return None;
        }
        let threshold = self.config.error_rate_threshold;
        let requests = (now.requests - baseline.requests).max(0.0);
        let errors = (now.errors - baseline.errors).max(0.0);
        let window = self.window_text(baseline, now.at_ms);
        // Request counts are whole numbers far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let enough = requests >= self.config.min_requests as f64;
        if !enough || requests == 0.0 {
            return Some(Observation {
                holds: false,
                value: 0.0,
                threshold,
                summary: format!(
                    "{requests} requests in the last {window}, fewer than the {} needed to judge the error rate",
                    self.config.min_requests
                ),
            });
        }
        let share = errors / requests;
        Some(Observation {
            holds: share > threshold,
            value: share,
            threshold,
            summary: format!(
                "{:.1} % of {requests} requests in the last {window} answered 5xx; threshold {:.1} %",
                share * 100.0,
                threshold * 100.0
            ),
        })
    }

    fn observe_queue(&self, report: Option<&HealthReport>) -> Option<Observation> {
        if self.config.queue_lag_threshold.is_zero() {
            return None;
        }
        let report = report?;
        let stats = report.queue.as_ref()?;
        // The age, at the health check, of the oldest delivery an online device is waiting for
        // (none waiting: no lag).
        let lag_ms = stats
            .oldest_ready_ms
            .map_or(0, |oldest| (report.checked_at - oldest).max(0));
        let threshold_ms =
            i64::try_from(self.config.queue_lag_threshold.as_millis()).unwrap_or(i64::MAX);
        // Milliseconds far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let (value, threshold) = (lag_ms as f64 / 1_000.0, threshold_ms as f64 / 1_000.0);
        Some(Observation {
            holds: lag_ms > threshold_ms,
            value,
            threshold,
            summary: format!(
                "the oldest delivery waiting for an online device is {value:.0} s old ({} ready in all); threshold {threshold:.0} s",
                stats.ready
            ),
        })
    }

    fn observe_memory(&self) -> Option<Observation> {
        if !self.config.memory_growth {
            return None;
        }
        let trend = self.memory.as_ref()?;
        // Byte counts far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let value = trend.growth_bytes as f64;
        Some(Observation {
            holds: trend.leaking,
            value,
            threshold: 0.0,
            summary: if trend.leaking {
                format!(
                    "{} grew by {:.1} MiB in {} s without levelling off (now {:.1} MiB)",
                    trend.series,
                    value / 1_048_576.0,
                    trend.window_ms / 1_000,
                    mib(trend.current_bytes)
                )
            } else {
                format!(
                    "{} is no longer growing (now {:.1} MiB)",
                    trend.series,
                    mib(trend.current_bytes)
                )
            },
        })
    }

    fn observe_components(&self, report: Option<&HealthReport>) -> Option<Observation> {
        if !self.config.component_unhealthy {
            return None;
        }
        let report = report?;
        let unhealthy: Vec<String> = report
            .components
            .iter()
            .filter(|c| c.status == Status::Unhealthy)
            .map(|c| format!("{} ({})", c.name, c.reason))
            .collect();
        // A handful of components.
        #[allow(clippy::cast_precision_loss)]
        let value = unhealthy.len() as f64;
        Some(Observation {
            holds: !unhealthy.is_empty(),
            value,
            threshold: 0.0,
            summary: if unhealthy.is_empty() {
                "every component is healthy or degraded".to_owned()
            } else {
                format!("unhealthy: {}", unhealthy.join(", "))
            },
        })
    }

    fn transition(&mut self, rule: &'static str, observation: &Observation, now: i64) {
        let Some(index) = RULES.iter().position(|r| *r == rule) else {
            return;
        };
        let Some((state, repeat)) =
            self.states[index].step(observation.holds, now, self.config.repeat_interval)
        else {
            return;
        };
        self.metrics
            .alerts_firing
            .with_label_values(&[rule])
            .set(i64::from(state == AlertState::Firing));
        let event = AlertEvent {
            alert: rule,
            state,
            summary: observation.summary.clone(),
            value: observation.value,
            threshold: observation.threshold,
            at_ms: now,
            repeat,
        };
        for channel in &self.channels {
            slog::debug!(self.log, "alert to channel"; "alert" => rule, "channel" => channel.name());
            channel.send(&event);
        }
    }
}

fn mib(bytes: u64) -> f64 {
    // Byte counts far below 2^52.
    #[allow(clippy::cast_precision_loss)]
    let bytes = bytes as f64;
    bytes / 1_048_576.0
}

impl Actor for AlertManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(self.clock.interval(self.config.evaluation_interval));
    }
}

impl StreamHandler<()> for AlertManager {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        // A slow health check must not pile evaluations up.
        if self.evaluating {
            return;
        }
        self.evaluating = true;
        let work = self.evaluate().map(|(), act, _| act.evaluating = false);
        ctx.spawn(work);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The clock's ticks ended; the manager still answers Evaluate and memory trends.
    }
}

impl Handler<Evaluate> for AlertManager {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _msg: Evaluate, _ctx: &mut Self::Context) -> Self::Result {
        self.evaluate()
    }
}

impl Handler<GetFiring> for AlertManager {
    type Result = MessageResult<GetFiring>;

    fn handle(&mut self, _msg: GetFiring, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(
            RULES
                .iter()
                .zip(self.states.iter())
                .filter(|(_, s)| s.firing)
                .map(|(r, _)| *r)
                .collect(),
        )
    }
}

impl Handler<MemoryTrend> for AlertManager {
    type Result = ();

    fn handle(&mut self, msg: MemoryTrend, _ctx: &mut Self::Context) {
        self.memory = Some(msg);
        // Judged at once, so a leak is reported within the monitor's detection time rather than
        // at the next evaluation tick.
        if let Some(observation) = self.observe_memory() {
            let now = self.clock.now_ms();
            self.transition(MEMORY_GROWTH, &observation, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::queue::QueueStats;
    use crate::supervisor::ComponentHealth;
    use std::sync::Mutex;

    /// Records every event it is sent.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<AlertEvent>>);

    impl AlertChannel for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn send(&self, event: &AlertEvent) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<(&'static str, AlertState, bool)> {
            std::mem::take(&mut *self.0.lock().unwrap())
                .into_iter()
                .map(|e| (e.alert, e.state, e.repeat))
                .collect()
        }
    }

    /// A health supervisor stand-in that answers with what the test set.
    struct FakeHealth(Arc<Mutex<HealthReport>>);

    impl Actor for FakeHealth {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct StopFake;

    impl Handler<StopFake> for FakeHealth {
        type Result = ();
        fn handle(&mut self, _msg: StopFake, ctx: &mut Self::Context) {
            ctx.stop();
        }
    }

    impl Handler<Check> for FakeHealth {
        type Result = MessageResult<Check>;
        fn handle(&mut self, _msg: Check, _ctx: &mut Self::Context) -> Self::Result {
            MessageResult(self.0.lock().unwrap().clone())
        }
    }

    fn healthy() -> HealthReport {
        HealthReport {
            status: Status::Healthy,
            components: vec![ComponentHealth {
                name: "store".into(),
                status: Status::Healthy,
                reason: "ok".into(),
            }],
            restarts: 0,
            checked_at: 0,
            queue: Some(QueueStats::default()),
            sockets: None,
        }
    }

    struct Harness {
        clock: ManualClock,
        metrics: Arc<Metrics>,
        health: Arc<Mutex<HealthReport>>,
        recorder: Arc<Recorder>,
        manager: Addr<AlertManager>,
        fake: Addr<FakeHealth>,
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn config() -> AlertConfig {
        AlertConfig {
            evaluation_interval: Duration::from_secs(15),
            repeat_interval: 10 * MINUTE,
            window: 5 * MINUTE,
            min_requests: 10,
            queue_lag_threshold: Duration::from_secs(100),
            ..AlertConfig::default()
        }
    }

    fn start() -> Harness {
        let clock = ManualClock::new(1_000_000);
        let metrics = Arc::new(Metrics::new("0", "x"));
        let health = Arc::new(Mutex::new(healthy()));
        let recorder = Arc::new(Recorder::default());
        let fake = FakeHealth(health.clone()).start();
        let manager = AlertManager::new(
            config(),
            metrics.clone(),
            Some(fake.clone().recipient()),
            Arc::new(clock.clone()),
            vec![recorder.clone() as Arc<dyn AlertChannel>],
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start();
        Harness {
            clock,
            metrics,
            health,
            recorder,
            manager,
            fake,
        }
    }

    impl Harness {
        /// Moves the clock and evaluates (the tick's evaluation, awaited).
        async fn at(&self, by: Duration) -> Vec<(&'static str, AlertState, bool)> {
            self.clock.advance(by);
            self.manager.send(Evaluate).await.unwrap();
            self.recorder.take()
        }

        fn requests(&self, n: u64, seconds: f64, status: &str) {
            for _ in 0..n {
                self.metrics
                    .http_duration
                    .with_label_values(&["/api/v1/notifications", "POST"])
                    .observe(seconds);
                self.metrics
                    .http_requests
                    .with_label_values(&["/api/v1/notifications", "POST", status])
                    .inc();
            }
        }

        fn firing_gauge(&self, rule: &str) -> i64 {
            self.metrics.alerts_firing.with_label_values(&[rule]).get()
        }
    }

    use AlertState::{Firing, Resolved};

    #[actix::test]
    async fn p99_fires_once_repeats_after_the_interval_and_recovers_once() {
        let h = start();
        assert!(h.at(Duration::from_secs(15)).await.is_empty());
        // 100 requests, 2 of them slow: the p99 is in the slow bucket (2.5 s).
        h.requests(98, 0.002, "202");
        h.requests(2, 2.0, "202");
        assert_eq!(
            h.at(Duration::from_secs(15)).await,
            [(HTTP_P99, Firing, false)]
        );
        assert_eq!(h.firing_gauge(HTTP_P99), 1);
        // Still within the window (it holds) and within the repeat interval: nothing new.
        for _ in 0..8 {
            h.requests(50, 0.002, "202");
            h.requests(1, 2.0, "202");
            assert!(h.at(MINUTE).await.is_empty());
        }
        h.requests(50, 0.002, "202");
        h.requests(1, 2.0, "202");
        // 9 min 15 s after it fired, then 10 min 15 s: the repeat comes at the second.
        assert!(h.at(Duration::from_secs(75)).await.is_empty());
        h.requests(50, 0.002, "202");
        h.requests(1, 2.0, "202");
        assert_eq!(h.at(MINUTE).await, [(HTTP_P99, Firing, true)]);
        // Only fast requests from now: once the slow ones left the window, it resolves, once.
        let mut seen = Vec::new();
        for _ in 0..8 {
            h.requests(100, 0.002, "202");
            seen.extend(h.at(MINUTE).await);
        }
        assert_eq!(seen, [(HTTP_P99, Resolved, false)]);
        assert_eq!(h.firing_gauge(HTTP_P99), 0);
    }

    #[actix::test]
    async fn error_rate_needs_enough_requests_and_recovers() {
        let h = start();
        // 5 failures of 5 requests: too few to judge.
        h.requests(5, 0.001, "500");
        assert!(h.at(Duration::from_secs(15)).await.is_empty());
        // 5 + 5 of 100: 10 % > 5 %.
        h.requests(90, 0.001, "200");
        h.requests(5, 0.001, "503");
        assert_eq!(
            h.at(Duration::from_secs(15)).await,
            [(HTTP_ERROR_RATE, Firing, false)]
        );
        assert!(h.at(Duration::from_secs(15)).await.is_empty());
        // The window moves past the failures.
        h.requests(1_000, 0.001, "200");
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.extend(h.at(MINUTE).await);
        }
        assert_eq!(seen, [(HTTP_ERROR_RATE, Resolved, false)]);
    }

    #[actix::test]
    async fn queue_lag_and_unhealthy_components_come_from_the_health_report() {
        let h = start();
        {
            let mut report = h.health.lock().unwrap();
            report.queue = Some(QueueStats {
                ready: 90,
                oldest_ready_ms: Some(report.checked_at - 101_000),
                ..QueueStats::default()
            });
            report.components[0].status = Status::Unhealthy;
        }
        let mut fired = h.at(Duration::from_secs(15)).await;
        fired.sort();
        assert_eq!(
            fired,
            [
                (COMPONENT_UNHEALTHY, Firing, false),
                (QUEUE_LAG, Firing, false)
            ]
        );
        assert_eq!(
            h.manager.send(GetFiring).await.unwrap(),
            [QUEUE_LAG, COMPONENT_UNHEALTHY]
        );
        // Repeats after 10 minutes, not before.
        assert!(h.at(9 * MINUTE).await.is_empty());
        let mut repeated = h.at(MINUTE).await;
        repeated.sort();
        assert_eq!(
            repeated,
            [
                (COMPONENT_UNHEALTHY, Firing, true),
                (QUEUE_LAG, Firing, true)
            ]
        );
        *h.health.lock().unwrap() = healthy();
        let mut resolved = h.at(Duration::from_secs(15)).await;
        resolved.sort();
        assert_eq!(
            resolved,
            [
                (COMPONENT_UNHEALTHY, Resolved, false),
                (QUEUE_LAG, Resolved, false)
            ]
        );
        assert!(h.at(Duration::from_secs(15)).await.is_empty());
    }

    #[actix::test]
    async fn memory_growth_fires_on_the_trend_at_once_and_resolves() {
        let h = start();
        let trend = |leaking| MemoryTrend {
            leaking,
            series: "rss",
            current_bytes: 40 << 20,
            growth_bytes: 10 << 20,
            window_ms: 25_000,
            at_ms: 0,
        };
        h.manager.send(trend(true)).await.unwrap();
        let events = h.recorder.0.lock().unwrap().clone();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].alert, MEMORY_GROWTH);
        assert!(
            events[0].summary.contains("rss grew by 10.0 MiB"),
            "{}",
            events[0].summary
        );
        h.recorder.take();
        h.manager.send(trend(true)).await.unwrap();
        assert!(h.at(Duration::from_secs(15)).await.is_empty());
        h.manager.send(trend(false)).await.unwrap();
        assert_eq!(h.recorder.take(), [(MEMORY_GROWTH, Resolved, false)]);
    }

    #[actix::test]
    async fn a_health_check_that_does_not_answer_keeps_the_state() {
        let h = start();
        h.health.lock().unwrap().components[0].status = Status::Unhealthy;
        assert_eq!(
            h.at(Duration::from_secs(15)).await,
            [(COMPONENT_UNHEALTHY, Firing, false)]
        );
        // The health supervisor stops answering: the rule is not judged, so neither resolves
        // nor repeats, and it still counts as firing.
        h.fake.send(StopFake).await.unwrap();
        *h.health.lock().unwrap() = healthy();
        assert!(h.at(Duration::from_secs(15)).await.is_empty());
        assert!(h.at(20 * MINUTE).await.is_empty());
        assert_eq!(
            h.manager.send(GetFiring).await.unwrap(),
            [COMPONENT_UNHEALTHY]
        );
    }

    #[actix::test]
    async fn the_clock_drives_evaluation() {
        let h = start();
        h.health.lock().unwrap().components[0].status = Status::Unhealthy;
        // A round trip: the manager has started (and made its interval) before the clock moves.
        assert!(h.manager.send(GetFiring).await.unwrap().is_empty());
        h.clock.advance(Duration::from_secs(14));
        tokio::task::yield_now().await;
        assert!(
            h.recorder.take().is_empty(),
            "evaluated before the interval"
        );
        h.clock.advance(Duration::from_secs(1));
        // The tick's evaluation runs on its own; wait for its notice (no clock time passes).
        let fired = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let events = h.recorder.take();
                if !events.is_empty() {
                    return events;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the tick evaluated");
        assert_eq!(fired, [(COMPONENT_UNHEALTHY, Firing, false)]);
    }

    /// RSS flat at 20 MiB for `flat` samples, then growing by 2 MiB per sample.
    struct Leaking {
        calls: std::sync::atomic::AtomicU64,
        flat: u64,
    }

    impl crate::ports::MemorySampler for Leaking {
        fn sample(&self) -> Result<crate::ports::MemorySample, String> {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(crate::ports::MemorySample {
                rss_bytes: (20 << 20) + n.saturating_sub(self.flat) * (2 << 20),
                allocated_bytes: None,
                resident_bytes: None,
            })
        }
    }

    #[actix::test]
    async fn a_leak_seen_by_the_memory_monitor_fires_memory_growth_within_30_s() {
        use crate::memory::{GetMemoryStatus, MemoryConfig, MemoryMonitor};
        let h = start();
        let monitor = MemoryMonitor::new(
            MemoryConfig::default(),
            Arc::new(Leaking {
                calls: 0.into(),
                flat: 4,
            }),
            Arc::new(h.clock.clone()),
            &h.metrics,
            Some(h.manager.clone().recipient()),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start();
        monitor.send(GetMemoryStatus).await.unwrap();
        // Samples at 0, 5, 10, 15 s are flat; growth starts with the sample at 20 s.
        let mut fired_at = None;
        for second in (5..=60).step_by(5) {
            h.clock.advance(Duration::from_secs(5));
            monitor.send(GetMemoryStatus).await.unwrap();
            if h.manager
                .send(GetFiring)
                .await
                .unwrap()
                .contains(&MEMORY_GROWTH)
            {
                fired_at = Some(second);
                break;
            }
        }
        let fired_at = fired_at.expect("memory_growth fired");
        assert!(
            fired_at - 15 <= 30,
            "fired {} s after the leak began",
            fired_at - 15
        );
        assert_eq!(h.firing_gauge(MEMORY_GROWTH), 1);
        let events = h.recorder.take();
        assert!(
            events.contains(&(MEMORY_GROWTH, Firing, false)),
            "{events:?}"
        );
    }

    #[test]
    fn p99_is_the_bound_of_the_bucket_that_crosses_99_percent() {
        let metrics = Metrics::new("0", "x");
        let before = HttpSnapshot::take(&metrics, 0);
        let child = metrics.http_duration.with_label_values(&["/a", "GET"]);
        for _ in 0..99 {
            child.observe(0.000_2);
        }
        metrics
            .http_duration
            .with_label_values(&["/b", "POST"])
            .observe(0.7);
        let after = HttpSnapshot::take(&metrics, 1);
        // 99 of 100 are at or below 0.25 ms: the p99 is that bucket's bound.
        assert_eq!(after.p99_since(&before), Some((0.000_25, 100)));
        metrics
            .http_duration
            .with_label_values(&["/b", "POST"])
            .observe(0.7);
        let more = HttpSnapshot::take(&metrics, 2);
        // 99 of 101: the 100th falls in the 1 s bucket.
        assert_eq!(more.p99_since(&before), Some((1.0, 101)));
        // Only what happened since `after`: one slow request.
        assert_eq!(more.p99_since(&after), Some((1.0, 1)));
        assert_eq!(more.p99_since(&more), None);
    }
}
