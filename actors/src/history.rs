//! The metrics history: the last hour of throughput, delivery latency, queue depth and sockets,
//! sampled on the injected clock, for the dashboard's charts (`GET /api/v1/metrics/history`).
//!
//! Every [`HistoryConfig::every`] the actor reads the counters and histograms it needs from
//! [`Metrics`] (no new instrumentation on the hot path) and keeps one [`Sample`] of what happened
//! since the previous reading: rates per second, the publish-to-deliver percentiles of that
//! interval (at bucket bounds, as Prometheus' `histogram_quantile` would round them up), and the
//! gauges as they stand. It keeps [`HistoryConfig::keep`] samples, in memory only: a restart
//! starts an empty history, which Prometheus (`/metrics`) does not have.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use prometheus::core::Collector;
use serde::Serialize;

use crate::clock::SharedClock;
use crate::metrics::Metrics;

/// How often to sample and how many samples to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryConfig {
    /// The sampling period.
    pub every: Duration,
    /// Samples kept (the default, 120 of 30 s, is an hour).
    pub keep: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(30),
            keep: 120,
        }
    }
}

/// What happened in one sampling interval, and the gauges at its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// The interval's end, epoch milliseconds.
    pub at_ms: i64,
    /// Its length, milliseconds.
    pub interval_ms: i64,
    /// Notifications committed per second.
    pub published_per_second: f64,
    /// Deliveries sent to sockets per second (first sends; resends are not counted).
    pub delivered_per_second: f64,
    /// Acknowledgements per second.
    pub acked_per_second: f64,
    /// Publish-to-deliver latency of the interval's deliveries, milliseconds (`None` without any).
    pub latency_p50_ms: Option<f64>,
    /// Its 95th percentile.
    pub latency_p95_ms: Option<f64>,
    /// Its 99th percentile.
    pub latency_p99_ms: Option<f64>,
    /// Deliveries waiting (ready, all priorities) at the end.
    pub queue_depth: i64,
    /// Deliveries sent and not yet acknowledged at the end.
    pub in_flight: i64,
    /// Open device sockets at the end.
    pub sockets: i64,
}

/// The samples, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Vec<Sample>")]
pub struct GetHistory;

/// The cumulative figures at one reading.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    at_ms: i64,
    published: u64,
    delivered: u64,
    acked: u64,
    /// `(upper bound in seconds, cumulative count)` per finite bucket of publish-to-deliver.
    buckets: Vec<(f64, u64)>,
    count: u64,
}

impl Reading {
    fn take(metrics: &Metrics, at_ms: i64) -> Self {
        let mut buckets = Vec::new();
        let mut count = 0;
        for family in metrics.publish_to_deliver.collect() {
            for metric in family.get_metric() {
                let histogram = metric.get_histogram();
                count += histogram.get_sample_count();
                buckets.extend(
                    histogram
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count())),
                );
            }
        }
        Self {
            at_ms,
            published: metrics.published.total(),
            delivered: metrics.delivered.total(),
            acked: metrics.acked.total(),
            buckets,
            count,
        }
    }
}

/// The `q` quantile (0–1) in milliseconds of what was observed between `earlier` and `later`, at
/// the bound of the bucket it falls in (beyond the last finite bucket, that bucket's bound).
fn quantile_ms(earlier: &Reading, later: &Reading, q: f64) -> Option<f64> {
    let total = later.count.saturating_sub(earlier.count);
    if total == 0 {
        return None;
    }
    // The rank of the quantile, at least 1.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut last = None;
    for (i, (bound, cumulative)) in later.buckets.iter().enumerate() {
        let before = earlier.buckets.get(i).map_or(0, |b| b.1);
        last = Some(*bound);
        if cumulative.saturating_sub(before) >= rank {
            return Some(bound * 1_000.0);
        }
    }
    last.map(|b| b * 1_000.0)
}

/// The sample of the interval between two readings, with the gauges as they stand.
fn sample(earlier: &Reading, later: &Reading, metrics: &Metrics) -> Sample {
    let interval_ms = (later.at_ms - earlier.at_ms).max(1);
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 * 1_000.0 / interval_ms as f64;
    Sample {
        at_ms: later.at_ms,
        interval_ms,
        published_per_second: rate(earlier.published, later.published),
        delivered_per_second: rate(earlier.delivered, later.delivered),
        acked_per_second: rate(earlier.acked, later.acked),
        latency_p50_ms: quantile_ms(earlier, later, 0.50),
        latency_p95_ms: quantile_ms(earlier, later, 0.95),
        latency_p99_ms: quantile_ms(earlier, later, 0.99),
        queue_depth: metrics.queue.ready.iter().map(|g| g.get()).sum(),
        in_flight: metrics.queue.in_flight.get(),
        sockets: metrics.sockets_open.get(),
    }
}

/// The history actor.
pub struct MetricsHistory {
    config: HistoryConfig,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    last: Reading,
    samples: VecDeque<Sample>,
}

impl MetricsHistory {
    /// A history of `metrics`, sampled every `config.every` of `clock`.
    pub fn new(config: HistoryConfig, clock: SharedClock, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            clock,
            metrics,
            last: Reading::default(),
            samples: VecDeque::new(),
        }
    }

    fn tick(&mut self) {
        let reading = Reading::take(&self.metrics, self.clock.now_ms());
        self.samples
            .push_back(sample(&self.last, &reading, &self.metrics));
        while self.samples.len() > self.config.keep.max(1) {
            self.samples.pop_front();
        }
        self.last = reading;
    }
}

impl Actor for MetricsHistory {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.last = Reading::take(&self.metrics, self.clock.now_ms());
        ctx.add_stream(self.clock.interval(self.config.every));
    }
}

impl StreamHandler<()> for MetricsHistory {
    fn handle(&mut self, _tick: (), _ctx: &mut Self::Context) {
        self.tick();
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The clock's ticks ended (its owner dropped it); the history keeps answering.
    }
}

impl Handler<GetHistory> for MetricsHistory {
    type Result = Vec<Sample>;

    fn handle(&mut self, _msg: GetHistory, _ctx: &mut Self::Context) -> Self::Result {
        self.samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::model::Priority;

    #[actix_rt::test]
    async fn samples_rates_percentiles_and_gauges_per_interval_and_keeps_the_last_few() {
        let clock = ManualClock::new(1_000_000);
        let metrics = Arc::new(Metrics::new("test", "test"));
        let history = MetricsHistory::new(
            HistoryConfig {
                every: Duration::from_secs(10),
                keep: 2,
            },
            Arc::new(clock.clone()),
            metrics.clone(),
        )
        .start();
        assert!(history.send(GetHistory).await.unwrap().is_empty());
        metrics.published.of(Priority::High).inc_by(50);
        metrics.delivered.of(Priority::High).inc_by(20);
        metrics.acked.of(Priority::Low).inc_by(10);
        for _ in 0..98 {
            metrics.publish_to_deliver.observe(0.002);
        }
        metrics.publish_to_deliver.observe(0.2);
        metrics.publish_to_deliver.observe(0.2);
        metrics.sockets_open.set(3);
        metrics.queue.ready[0].set(7);
        metrics.queue.in_flight.set(2);
        clock.advance(Duration::from_secs(10));
        let samples = loop {
            let samples = history.send(GetHistory).await.unwrap();
            if !samples.is_empty() {
                break samples;
            }
            actix_rt::task::yield_now().await;
        };
        let s = &samples[0];
        assert_eq!((s.at_ms, s.interval_ms), (1_010_000, 10_000));
        assert_eq!(
            (
                s.published_per_second,
                s.delivered_per_second,
                s.acked_per_second
            ),
            (5.0, 2.0, 1.0)
        );
        let (p50, p99) = (s.latency_p50_ms.unwrap(), s.latency_p99_ms.unwrap());
        assert!(p50 <= 5.0 && p99 >= 200.0, "{s:?}");
        assert_eq!((s.queue_depth, s.in_flight, s.sockets), (7, 2, 3));
        // A quiet interval: no rates, no latency.
        for n in 2..=3 {
            clock.advance(Duration::from_secs(10));
            while history
                .send(GetHistory)
                .await
                .unwrap()
                .last()
                .map(|s| s.at_ms)
                != Some(1_000_000 + n * 10_000)
            {
                actix_rt::task::yield_now().await;
            }
        }
        let samples = history.send(GetHistory).await.unwrap();
        assert_eq!(samples.len(), 2, "only the last two are kept");
        assert_eq!(samples[1].published_per_second, 0.0);
        assert_eq!(samples[1].latency_p50_ms, None);
    }
}
