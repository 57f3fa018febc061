//! The memory monitor: samples the process's memory on the injected clock, exports it, and tells
//! the alert manager when growth is sustained (a leak) and when it stops.
//!
//! Messages first ([`MemoryTrend`], sent to the alert manager; [`GetMemoryStatus`]), then the
//! tunables ([`MemoryConfig`], [`LeakRule`]), the detection ([`assess`], a pure function over the
//! last samples) and the [`MemoryMonitor`] actor. The figures come from a
//! [`MemorySampler`] port.
//!
//! **Sustained growth** of one series (RSS, and the allocator's `allocated` bytes when known) over
//! the sliding window of the last [`LeakRule::window_samples`] samples means all of:
//! - it grew by at least [`LeakRule::min_growth_bytes`] from the window's first to its last sample,
//! - and by at least [`LeakRule::min_growth_percent`] of the first,
//! - at least [`LeakRule::min_rising_steps`] of the window's steps went up,
//! - and no single step carries more than [`LeakRule::max_step_share_percent`] of the growth.
//!
//! A plateau fails the first two, jitter the first and third, a one-off step (a cache filled, a
//! burst of connections) the last. With the defaults (a sample every 5 s, 6 samples, 4 rising
//! steps, 4 MiB and 5 %), a leak of 1 MiB per sample or more is flagged at the fourth rising
//! sample after it starts: at most 5 s (sampling phase) + 4 × 5 s = 25 s. The flag clears at the
//! first sample where the window no longer shows sustained growth.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus::IntGauge;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::ports::{MemorySample, MemorySampler};

/// The memory trend, sent to the alert manager after every sample.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub struct MemoryTrend {
    /// Sustained growth is seen now.
    pub leaking: bool,
    /// The growing series (`rss` or `allocated`), or the one with the most growth.
    pub series: &'static str,
    /// Its latest value, bytes.
    pub current_bytes: u64,
    /// Its growth over the window, bytes (0 when it shrank).
    pub growth_bytes: u64,
    /// The window's span, milliseconds.
    pub window_ms: i64,
    /// When the last sample was taken, epoch milliseconds.
    pub at_ms: i64,
}

/// Asks for the last sample and trend (tests and diagnostics).
#[derive(Message, Debug)]
#[rtype(result = "MemoryStatus")]
pub struct GetMemoryStatus;

/// What the monitor saw last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryStatus {
    /// The last sample, if one was taken.
    pub last: Option<MemorySample>,
    /// Sustained growth is flagged.
    pub leaking: bool,
    /// Samples taken so far.
    pub samples: u64,
}

/// What counts as sustained growth; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakRule {
    /// Samples in the sliding window (at least 3).
    pub window_samples: usize,
    /// Least growth over the window, bytes.
    pub min_growth_bytes: u64,
    /// Least growth over the window, percent of its first sample.
    pub min_growth_percent: f64,
    /// Least number of steps in the window that went up.
    pub min_rising_steps: usize,
    /// Largest share of the growth one step may carry, percent.
    pub max_step_share_percent: f64,
}

impl Default for LeakRule {
    fn default() -> Self {
        Self {
            window_samples: 6,
            min_growth_bytes: 4 << 20,
            min_growth_percent: 5.0,
            min_rising_steps: 4,
            max_step_share_percent: 50.0,
        }
    }
}

/// The monitor's tunables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryConfig {
    /// Time between samples.
    pub interval: Duration,
    /// Sustained growth.
    pub rule: LeakRule,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            rule: LeakRule::default(),
        }
    }
}

/// Growth of one series over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    /// From the first to the last sample, bytes (0 when it shrank).
    pub bytes: u64,
    /// Whether it is sustained growth under the rule.
    pub sustained: bool,
}

/// Judges one series' window (oldest first) against the rule; `None` until the window is full.
pub fn assess(window: &VecDeque<u64>, rule: &LeakRule) -> Option<Growth> {
    if window.len() < rule.window_samples.max(3) {
        return None;
    }
    let (first, last) = (*window.front()?, *window.back()?);
    let growth = last.saturating_sub(first);
    let mut rising = 0;
    let mut largest_step = 0;
    for (a, b) in window.iter().zip(window.iter().skip(1)) {
        if b > a {
            rising += 1;
            largest_step = largest_step.max(b - a);
        }
    }
    // Byte counts of a process are far below 2^52: exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let (growth_f, first_f, step_f) = (growth as f64, first as f64, largest_step as f64);
    let sustained = growth > 0
        && growth >= rule.min_growth_bytes
        && growth_f >= first_f * rule.min_growth_percent / 100.0
        && rising >= rule.min_rising_steps
        && step_f <= growth_f * rule.max_step_share_percent / 100.0;
    Some(Growth {
        bytes: growth,
        sustained,
    })
}

/// The gauges the monitor sets.
struct Gauges {
    rss: IntGauge,
    allocated: IntGauge,
    resident: IntGauge,
    leak: IntGauge,
}

impl Gauges {
    fn register(metrics: &Metrics, log: &slog::Logger) -> Self {
        let gauge = |name: &str, help: &str| {
            // expect: the names below are fixed and valid.
            #[allow(clippy::expect_used)]
            let gauge = IntGauge::new(name, help).expect("a valid gauge definition");
            // A name that cannot be registered (a second monitor on one registry) still gets a
            // working, unexported gauge: the monitor's other duties do not depend on it.
            if let Err(e) = metrics.registry().register(Box::new(gauge.clone())) {
                slog::warn!(log, "memory gauge not exported"; "gauge" => name, "error" => %e);
            }
            gauge
        };
        Self {
            rss: gauge(
                "beepmyphone_memory_rss_bytes",
                "Resident set size of the relay process, bytes.",
            ),
            allocated: gauge(
                "beepmyphone_jemalloc_allocated_bytes",
                "Bytes allocated by the program and not freed (jemalloc stats.allocated).",
            ),
            resident: gauge(
                "beepmyphone_jemalloc_resident_bytes",
                "Bytes in resident pages mapped by jemalloc (stats.resident).",
            ),
            leak: gauge(
                "beepmyphone_memory_leak_suspected",
                "1 while the memory monitor sees sustained growth.",
            ),
        }
    }
}

fn gauge_value(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The memory monitor actor.
pub struct MemoryMonitor {
    config: MemoryConfig,
    sampler: Arc<dyn MemorySampler>,
    clock: SharedClock,
    alerts: Option<Recipient<MemoryTrend>>,
    gauges: Gauges,
    rss: VecDeque<u64>,
    allocated: VecDeque<u64>,
    times: VecDeque<i64>,
    status: MemoryStatus,
    sample_failing: bool,
    log: slog::Logger,
}

impl MemoryMonitor {
    /// A monitor that samples `sampler` every `config.interval` of `clock`, exports into
    /// `metrics` and reports the trend to `alerts` (when alerting is on).
    pub fn new(
        config: MemoryConfig,
        sampler: Arc<dyn MemorySampler>,
        clock: SharedClock,
        metrics: &Metrics,
        alerts: Option<Recipient<MemoryTrend>>,
        log: slog::Logger,
    ) -> Self {
        let gauges = Gauges::register(metrics, &log);
        Self {
            config,
            sampler,
            clock,
            alerts,
            gauges,
            rss: VecDeque::new(),
            allocated: VecDeque::new(),
            times: VecDeque::new(),
            status: MemoryStatus::default(),
            sample_failing: false,
            log,
        }
    }

    fn push(window: &mut VecDeque<u64>, value: u64, len: usize) {
        window.push_back(value);
        while window.len() > len {
            window.pop_front();
        }
    }

    /// Takes one sample, updates the gauges and the windows, and reports the trend.
    fn sample(&mut self) {
        let sample = match self.sampler.sample() {
            Ok(sample) => {
                self.sample_failing = false;
                sample
            }
            Err(e) => {
                if !self.sample_failing {
                    slog::warn!(self.log, "cannot read the process's memory"; "error" => %e);
                    self.sample_failing = true;
                }
                return;
            }
        };
        let now = self.clock.now_ms();
        let len = self.config.rule.window_samples.max(3);
        self.gauges.rss.set(gauge_value(sample.rss_bytes));
        Self::push(&mut self.rss, sample.rss_bytes, len);
        if let Some(allocated) = sample.allocated_bytes {
            self.gauges.allocated.set(gauge_value(allocated));
            Self::push(&mut self.allocated, allocated, len);
        }
        if let Some(resident) = sample.resident_bytes {
            self.gauges.resident.set(gauge_value(resident));
        }
        self.times.push_back(now);
        while self.times.len() > len {
            self.times.pop_front();
        }
        let rule = self.config.rule;
        let rss = assess(&self.rss, &rule).map(|g| ("rss", g, sample.rss_bytes));
        let allocated = assess(&self.allocated, &rule)
            .map(|g| ("allocated", g, sample.allocated_bytes.unwrap_or(0)));
        // The sustained series wins; otherwise the one that grew most.
        let pick = [rss, allocated]
            .into_iter()
            .flatten()
            .max_by_key(|(_, g, _)| (g.sustained, g.bytes));
        let leaking = pick.is_some_and(|(_, g, _)| g.sustained);
        if leaking != self.status.leaking {
            if let Some((series, growth, current)) = pick {
                if leaking {
                    slog::warn!(self.log, "sustained memory growth"; "series" => series, "growth_bytes" => growth.bytes, "current_bytes" => current);
                } else {
                    slog::info!(self.log, "memory growth stopped"; "series" => series, "current_bytes" => current);
                }
            }
        }
        self.gauges.leak.set(i64::from(leaking));
        self.status.leaking = leaking;
        self.status.last = Some(sample);
        self.status.samples += 1;
        if let (Some(alerts), Some((series, growth, current))) = (&self.alerts, pick) {
            alerts.do_send(MemoryTrend {
                leaking,
                series,
                current_bytes: current,
                growth_bytes: growth.bytes,
                window_ms: now - self.times.front().copied().unwrap_or(now),
                at_ms: now,
            });
        }
    }
}

impl Actor for MemoryMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.sample();
        ctx.add_stream(self.clock.interval(self.config.interval));
    }
}

impl StreamHandler<()> for MemoryMonitor {
    fn handle(&mut self, _tick: (), _ctx: &mut Self::Context) {
        self.sample();
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The clock's ticks ended (its owner dropped it); the monitor keeps answering queries.
    }
}

impl Handler<GetMemoryStatus> for MemoryMonitor {
    type Result = MessageResult<GetMemoryStatus>;

    fn handle(&mut self, _msg: GetMemoryStatus, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Mutex;

    const MIB: u64 = 1 << 20;

    /// Replays a script of RSS values; repeats the last one when the script is used up.
    struct Script {
        values: Mutex<VecDeque<u64>>,
        last: Mutex<u64>,
    }

    impl Script {
        fn new(values: impl IntoIterator<Item = u64>) -> Arc<Self> {
            Arc::new(Self {
                values: Mutex::new(values.into_iter().collect()),
                last: Mutex::new(0),
            })
        }
    }

    impl MemorySampler for Script {
        fn sample(&self) -> Result<MemorySample, String> {
            let mut last = self.last.lock().unwrap();
            if let Some(v) = self.values.lock().unwrap().pop_front() {
                *last = v;
            }
            Ok(MemorySample {
                rss_bytes: *last,
                allocated_bytes: None,
                resident_bytes: None,
            })
        }
    }

    /// Records the trends the monitor reports.
    #[derive(Default)]
    struct Trends(Vec<MemoryTrend>);

    impl Actor for Trends {
        type Context = Context<Self>;
    }

    impl Handler<MemoryTrend> for Trends {
        type Result = ();
        fn handle(&mut self, msg: MemoryTrend, _ctx: &mut Self::Context) {
            self.0.push(msg);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<MemoryTrend>")]
    struct Take;

    impl Handler<Take> for Trends {
        type Result = MessageResult<Take>;
        fn handle(&mut self, _msg: Take, _ctx: &mut Self::Context) -> Self::Result {
            MessageResult(std::mem::take(&mut self.0))
        }
    }

    struct Harness {
        clock: ManualClock,
        monitor: Addr<MemoryMonitor>,
        trends: Addr<Trends>,
        metrics: Arc<Metrics>,
    }

    fn start(script: Arc<Script>) -> Harness {
        let clock = ManualClock::new(0);
        let metrics = Arc::new(Metrics::new("0", "x"));
        let trends = Trends::default().start();
        let monitor = MemoryMonitor::new(
            MemoryConfig::default(),
            script,
            Arc::new(clock.clone()),
            &metrics,
            Some(trends.clone().recipient()),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start();
        Harness {
            clock,
            monitor,
            trends,
            metrics,
        }
    }

    /// Advances one sampling interval and returns the status once the sample was taken (the
    /// actor handles its tick before the query that follows it).
    async fn step(h: &Harness) -> MemoryStatus {
        h.clock.advance(Duration::from_secs(5));
        h.monitor.send(GetMemoryStatus).await.unwrap()
    }

    /// Seconds from the start (the first sample, at 0 s) until the leak flag rose, if it did
    /// within `samples` samples.
    async fn flagged_after(h: &Harness, samples: usize) -> Option<u64> {
        if h.monitor.send(GetMemoryStatus).await.unwrap().leaking {
            return Some(0);
        }
        for i in 1..samples {
            if step(h).await.leaking {
                return Some(5 * i as u64);
            }
        }
        None
    }

    #[actix::test]
    async fn a_leak_is_flagged_within_30_s_and_clears_when_growth_stops() {
        // 20 s flat at 20 MiB, then 1.5 MiB per 5 s (18 MiB a minute), then flat again.
        let flat = std::iter::repeat_n(20 * MIB, 5);
        let leak = (1..=12).map(|i| 20 * MIB + i * 3 * MIB / 2);
        let h = start(Script::new(flat.chain(leak)));
        // Samples 0..=4 are flat (0–20 s); the first leaking sample is at 25 s.
        let at = flagged_after(&h, 40).await.expect("the leak is flagged");
        assert!((25..=25 + 30).contains(&at), "flagged at {at} s");
        assert!(
            at - 25 <= 30,
            "flagged {} s after the leak started",
            at - 25
        );
        let text = String::from_utf8(h.metrics.encode()).unwrap();
        assert!(
            text.contains("beepmyphone_memory_leak_suspected 1"),
            "{text}"
        );
        assert!(text.contains("beepmyphone_memory_rss_bytes"));
        let trends = h.trends.send(Take).await.unwrap();
        assert!(trends.iter().any(|t| t.leaking && t.series == "rss"));
        // The script ends: memory stays flat, and the flag clears within a window.
        let mut cleared = false;
        for _ in 0..16 {
            if !step(&h).await.leaking {
                cleared = true;
                break;
            }
        }
        assert!(cleared, "the flag stayed up on a plateau");
        let trends = h.trends.send(Take).await.unwrap();
        assert_eq!(trends.last().map(|t| t.leaking), Some(false));
    }

    #[actix::test]
    async fn a_plateau_is_not_a_leak() {
        let h = start(Script::new(std::iter::repeat_n(25 * MIB, 30)));
        assert_eq!(flagged_after(&h, 30).await, None);
    }

    #[actix::test]
    async fn jitter_is_not_a_leak() {
        // ±1.5 MiB around 24 MiB, in a pattern with as many rises as falls.
        let noise = [
            0i64, 3, -2, 2, -3, 1, 3, -1, 0, -3, 2, -2, 3, 1, -1, 2, -3, 0, 3, -2,
        ];
        let values = noise
            .iter()
            .map(|n| (24 * MIB as i64 + n * (MIB as i64) / 2) as u64);
        let h = start(Script::new(values));
        assert_eq!(flagged_after(&h, 20).await, None);
    }

    #[actix::test]
    async fn a_single_big_step_is_not_a_leak() {
        // 20 MiB, one jump to 60 MiB (a burst of connections), then flat with small noise.
        let values = [20, 20, 20, 60, 60, 60, 60, 60, 60, 60, 60]
            .into_iter()
            .map(|m| m * MIB)
            .chain([60 * MIB + 100_000, 60 * MIB + 200_000, 60 * MIB + 150_000]);
        let h = start(Script::new(values));
        assert_eq!(flagged_after(&h, 16).await, None);
    }

    #[test]
    fn slow_growth_below_the_thresholds_is_not_flagged_and_the_rule_needs_a_full_window() {
        let rule = LeakRule::default();
        let partial: VecDeque<u64> = [1, 2, 3].into_iter().collect();
        assert_eq!(assess(&partial, &rule), None);
        // 100 KiB per sample: steady, but 500 KiB over the window is under 4 MiB.
        let slow: VecDeque<u64> = (0..6).map(|i| 20 * MIB + i * 100 * 1024).collect();
        assert_eq!(
            assess(&slow, &rule),
            Some(Growth {
                bytes: 500 * 1024,
                sustained: false
            })
        );
        let fast: VecDeque<u64> = (0..6).map(|i| 20 * MIB + i * MIB).collect();
        assert!(assess(&fast, &rule).unwrap().sustained);
    }
}
