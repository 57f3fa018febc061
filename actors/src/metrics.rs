//! The relay's Prometheus metrics: one [`Metrics`] per running relay, built at start-up and handed
//! to every actor and handler that records something. Nothing here is global: two relays in one
//! process (tests) each count from zero.
//!
//! Names are stable (docs/operations.md lists them). Recording is an atomic add or a histogram
//! observation; labelled families that the hot path touches are resolved to their children once
//! (per priority, per result), so no label lookup happens per notification. Gauges that describe
//! state another component owns (queue depth, open sockets, pool) are set when scraped, from that
//! component's own figures, instead of being kept in step on every change.

use std::sync::Arc;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::Priority;

/// Latency buckets in seconds, from 250 µs to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// Buckets for request handling, in seconds: most answers take well under a millisecond.
const REQUEST_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Buckets for the time a device takes to ack, in seconds (ack timeouts are tens of seconds).
const ACK_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Rows per group commit.
const ROW_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0,
];

/// WebSocket close codes counted by their own label value; any other code a peer sends is
/// counted as `other`, so a client cannot grow the label set.
const KNOWN_CLOSE_CODES: &[u16] = &[
    1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1012, 4001, 4003, 4008, 4009, 4029,
];

/// The supervised actors, by the name their restarts are counted under.
pub const SUPERVISED_ACTORS: &[&str] = &[
    "queue", "registry", "batcher", "keys", "health", "audit", "tls",
];

/// The `rule` label values of `beepmyphone_ratelimit_rejections_total`: the rate-limit rules by
/// name, `sockets` (too many open sockets from one IP) and `blocked` (a blocked IP).
pub const RATE_LIMIT_RULES: &[&str] = &[
    "ip",
    "principal",
    "admin",
    "auth",
    "publish",
    "ws",
    "frames",
    "sockets",
    "blocked",
];

/// One counter per priority, indexed by `Priority as usize`.
#[derive(Clone)]
pub struct PerPriority([IntCounter; 4]);

impl PerPriority {
    fn new(registry: &Registry, name: &str, help: &str) -> Self {
        let family = register(
            registry,
            IntCounterVec::new(Opts::new(name, help), &["priority"]),
        );
        Self(Priority::ALL.map(|p| family.with_label_values(&[p.as_str()])))
    }

    /// The counter of this priority.
    pub fn of(&self, priority: Priority) -> &IntCounter {
        &self.0[priority as usize]
    }

    /// The sum over every priority.
    pub fn total(&self) -> u64 {
        self.0.iter().map(IntCounter::get).sum()
    }
}

/// Relay-wide totals over every `DeviceQueue` that shares them: ready deliveries by priority
/// and in-flight deliveries. Each queue adds its own changes as they happen (an atomic add) and
/// takes its counts back out when dropped, so the totals are exact at any moment and reading
/// them costs nothing, whatever the number of devices.
pub struct QueueGauges {
    /// Ready deliveries, indexed by `Priority as usize`.
    pub ready: [prometheus::IntGauge; 4],
    /// In-flight deliveries.
    pub in_flight: prometheus::IntGauge,
}

impl QueueGauges {
    pub(crate) fn ready_changed(&self, priority: usize, by: i64) {
        self.ready[priority].add(by);
    }
}

/// The outcome of verifying a device access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Valid.
    Ok,
    /// Past its `exp`.
    Expired,
    /// Well formed and signed, but revoked.
    Revoked,
    /// Anything else: bad signature, wrong issuer, malformed.
    Invalid,
}

impl Verification {
    const ALL: [Verification; 4] = [
        Verification::Ok,
        Verification::Expired,
        Verification::Revoked,
        Verification::Invalid,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Verification::Ok => "ok",
            Verification::Expired => "expired",
            Verification::Revoked => "revoked",
            Verification::Invalid => "invalid",
        }
    }
}

/// Every metric the relay exports, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// Notifications accepted (committed, answered 202), by priority.
    pub published: PerPriority,
    /// Deliveries sent to a device for the first time, by priority.
    pub delivered: PerPriority,
    /// Deliveries acknowledged, by priority.
    pub acked: PerPriority,
    /// Deliveries dropped unacknowledged at their expiry, by priority.
    pub expired: PerPriority,
    /// Deliveries sent again (ack timeout or reconnect), by priority.
    pub redelivered: PerPriority,
    /// From a notification's creation to its first send to a device.
    pub publish_to_deliver: Histogram,
    /// From a delivery's send to its ack.
    pub deliver_to_ack: Histogram,
    /// Deliveries waiting to be sent (by priority) and in flight, kept by the device queues.
    pub queue: Arc<QueueGauges>,
    /// Rows per group commit.
    pub group_commit_rows: Histogram,
    /// Time one group commit takes in the store.
    pub group_commit_seconds: Histogram,
    /// Open device sockets (set when scraped).
    pub sockets_open: IntGauge,
    /// Devices with at least one open socket (set when scraped).
    pub devices_online: IntGauge,
    /// WebSocket frames sent to devices.
    pub ws_frames_sent: IntCounter,
    /// Bytes of those frames.
    pub ws_bytes_sent: IntCounter,
    ws_closed: IntCounterVec,
    /// HTTP requests answered, by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// Time to answer an HTTP request, by route pattern and method.
    pub http_duration: HistogramVec,
    /// Store connections by state (`idle`, `in_use`; set when scraped).
    pub db_pool_connections: IntGaugeVec,
    /// Time spent waiting for a store connection.
    pub db_pool_wait_seconds: Histogram,
    /// Requests and sockets refused by a rate limit, by rule.
    pub ratelimit_rejections: IntCounterVec,
    /// IP addresses blocked now (set when scraped).
    pub ip_blocks_active: IntGauge,
    /// Sealed values that did not open (tampered with, moved, or under a key the ring lacks).
    pub crypto_open_failures: IntCounter,
    /// Rows the re-encryption job has left to move (set when scraped).
    pub reencrypt_rows_remaining: IntGauge,
    /// Rows the re-encryption job moved since start (set when scraped).
    pub reencrypt_rows_moved: IntGauge,
    /// Rows the re-encryption job could not open since start (set when scraped).
    pub reencrypt_rows_failed: IntGauge,
    /// Audit records appended since start.
    pub audit_records: IntCounter,
    /// Audit appends (or checkpoints) that failed: the disk is full, the store is locked.
    pub audit_write_failures: IntCounter,
    /// Audit records that could not be kept while the log could not be written (the wait list
    /// was full): the only way a fire-and-forget event is lost.
    pub audit_dropped: IntCounter,
    /// Records covered by the last signed checkpoint.
    pub audit_checkpoint_size: IntGauge,
    /// When the served TLS certificate expires (unix seconds; 0 with TLS off).
    pub tls_certificate_expiry: IntGauge,
    /// Certificates put into service (issued or loaded), by reason (`renewed`, `reloaded`).
    pub tls_certificate_changes: IntCounterVec,
    /// Renewals or reloads that failed (the certificate in force stays).
    pub tls_failures: IntCounter,
    verifications: [IntCounter; 4],
    /// Supervised actors restarted, by actor.
    pub actor_restarts: IntCounterVec,
    /// 1 when a component is healthy, 0 when degraded or unhealthy, by component.
    pub component_healthy: IntGaugeVec,
    /// 1 while an alert holds, by alert.
    pub alerts_firing: IntGaugeVec,
    /// 1 for this relay's node id, when clustered.
    pub cluster_node_info: IntGaugeVec,
    /// Relays of the cluster with a recent heartbeat, as this relay last read them.
    pub cluster_nodes: IntGauge,
    /// Wake-ups published to other relays (`sent`) and taken from them (`received`).
    pub cluster_wakes: IntCounterVec,
}

impl Metrics {
    /// Builds and registers every metric, the process collector (resident memory, open fds, CPU)
    /// and `beepmyphone_build_info{version, commit}`.
    pub fn new(version: &str, commit: &str) -> Self {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            register(
                &registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())),
            )
        };
        let counter = |name: &str, help: &str| register(&registry, IntCounter::new(name, help));
        let gauge = |name: &str, help: &str| register(&registry, IntGauge::new(name, help));
        let gauges = |name: &str, help: &str, label: &str| {
            register(&registry, IntGaugeVec::new(Opts::new(name, help), &[label]))
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let verification_family = counters(
            "beepmyphone_token_verifications_total",
            "Device access tokens verified, by result.",
            &["result"],
        );
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "beepmyphone_build_info",
                    "The relay's version and git commit (always 1).",
                ),
                &["version", "commit"],
            ),
        );
        build_info.with_label_values(&[version, commit]).set(1);
        let ws_closed = counters(
            "beepmyphone_ws_closed_total",
            "Device sockets closed, by close code (other: a code the relay does not use).",
            &["code"],
        );
        let actor_restarts = counters(
            "beepmyphone_actor_restarts_total",
            "Supervised actors restarted, by actor.",
            &["actor"],
        );
        // Known label values start at zero, so `rate()` and `increase()` see the first event.
        for code in KNOWN_CLOSE_CODES {
            ws_closed.with_label_values(&[&code.to_string()]);
        }
        ws_closed.with_label_values(&["other"]);
        for actor in SUPERVISED_ACTORS {
            actor_restarts.with_label_values(&[actor]);
        }
        let cluster_wakes = counters(
            "beepmyphone_cluster_wakes_total",
            "Wake-ups published to other relays of the cluster (sent) and taken from them (received).",
            &["direction"],
        );
        for direction in ["sent", "received"] {
            cluster_wakes.with_label_values(&[direction]);
        }
        let queue_ready = gauges(
            "beepmyphone_queue_ready",
            "Deliveries waiting to be sent, by priority.",
            "priority",
        );
        let ratelimit_rejections = counters(
            "beepmyphone_ratelimit_rejections_total",
            "Requests and sockets refused by a rate limit, by rule.",
            &["rule"],
        );
        for rule in RATE_LIMIT_RULES {
            ratelimit_rejections.with_label_values(&[rule]);
        }
        #[cfg(target_os = "linux")]
        {
            // expect: the collector's names are fixed and registered once.
            #[allow(clippy::expect_used)]
            registry
                .register(Box::new(Sampled::process()))
                .expect("the process collector registers once");
        }
        Self {
            published: PerPriority::new(
                &registry,
                "beepmyphone_notifications_published_total",
                "Notifications accepted (durable, answered 202), by priority.",
            ),
            delivered: PerPriority::new(
                &registry,
                "beepmyphone_notifications_delivered_total",
                "Deliveries sent to a device for the first time, by priority.",
            ),
            acked: PerPriority::new(
                &registry,
                "beepmyphone_notifications_acked_total",
                "Deliveries acknowledged by their device, by priority.",
            ),
            expired: PerPriority::new(
                &registry,
                "beepmyphone_notifications_expired_total",
                "Deliveries dropped unacknowledged at their expiry, by priority.",
            ),
            redelivered: PerPriority::new(
                &registry,
                "beepmyphone_notifications_redelivered_total",
                "Deliveries sent again after an ack timeout or a reconnect, by priority.",
            ),
            publish_to_deliver: histogram(
                "beepmyphone_publish_to_deliver_seconds",
                "From a notification's creation to its first send to a device.",
                LATENCY_BUCKETS,
            ),
            deliver_to_ack: histogram(
                "beepmyphone_deliver_to_ack_seconds",
                "From a delivery's send to its ack.",
                ACK_BUCKETS,
            ),
            queue: Arc::new(QueueGauges {
                ready: Priority::ALL.map(|p| queue_ready.with_label_values(&[p.as_str()])),
                in_flight: gauge(
                    "beepmyphone_queue_in_flight",
                    "Deliveries sent and not yet acknowledged.",
                ),
            }),
            group_commit_rows: histogram(
                "beepmyphone_group_commit_rows",
                "Rows written per group commit.",
                ROW_BUCKETS,
            ),
            group_commit_seconds: histogram(
                "beepmyphone_group_commit_seconds",
                "Time one group commit takes in the store.",
                LATENCY_BUCKETS,
            ),
            sockets_open: gauge("beepmyphone_sockets_open", "Open device sockets."),
            devices_online: gauge(
                "beepmyphone_devices_online",
                "Devices with at least one open socket.",
            ),
            ws_frames_sent: counter(
                "beepmyphone_ws_frames_sent_total",
                "WebSocket frames sent to devices.",
            ),
            ws_bytes_sent: counter(
                "beepmyphone_ws_bytes_sent_total",
                "Bytes of the WebSocket frames sent to devices.",
            ),
            ws_closed,
            http_requests: counters(
                "beepmyphone_http_requests_total",
                "HTTP requests answered, by route pattern, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "beepmyphone_http_request_duration_seconds",
                        "Time to answer an HTTP request, by route pattern and method.",
                    )
                    .buckets(REQUEST_BUCKETS.to_vec()),
                    &["route", "method"],
                ),
            ),
            db_pool_connections: gauges(
                "beepmyphone_db_pool_connections",
                "Store connections, by state (idle, in_use).",
                "state",
            ),
            db_pool_wait_seconds: histogram(
                "beepmyphone_db_pool_wait_seconds",
                "Time spent waiting for a store connection.",
                LATENCY_BUCKETS,
            ),
            ratelimit_rejections,
            ip_blocks_active: gauge("beepmyphone_ip_blocks_active", "IP addresses blocked now."),
            crypto_open_failures: counter(
                "beepmyphone_crypto_open_failures_total",
                "Sealed values that did not open (tampered with, moved, or under a key the ring lacks).",
            ),
            reencrypt_rows_remaining: gauge(
                "beepmyphone_reencrypt_rows_remaining",
                "Rows the re-encryption job has left to move to the current data keys.",
            ),
            reencrypt_rows_moved: gauge(
                "beepmyphone_reencrypt_rows_moved",
                "Rows the re-encryption job moved to the current data keys since start.",
            ),
            reencrypt_rows_failed: gauge(
                "beepmyphone_reencrypt_rows_failed",
                "Rows the re-encryption job could not open since start.",
            ),
            audit_records: counter(
                "beepmyphone_audit_records_total",
                "Audit records appended since start.",
            ),
            audit_write_failures: counter(
                "beepmyphone_audit_write_failures_total",
                "Audit appends or checkpoints that failed (disk full, store locked).",
            ),
            audit_dropped: counter(
                "beepmyphone_audit_dropped_total",
                "Fire-and-forget audit events dropped because the log stayed unwritable and the wait list was full.",
            ),
            audit_checkpoint_size: gauge(
                "beepmyphone_audit_checkpoint_size",
                "Records covered by the last signed audit checkpoint.",
            ),
            tls_certificate_expiry: gauge(
                "beepmyphone_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires (unix seconds; 0 with TLS off).",
            ),
            tls_certificate_changes: counters(
                "beepmyphone_tls_certificate_changes_total",
                "TLS certificates put into service without a restart, by reason (renewed, reloaded).",
                &["reason"],
            ),
            tls_failures: counter(
                "beepmyphone_tls_failures_total",
                "TLS certificate renewals or reloads that failed (the certificate in force stays).",
            ),
            verifications: Verification::ALL
                .map(|v| verification_family.with_label_values(&[v.as_str()])),
            actor_restarts,
            component_healthy: gauges(
                "beepmyphone_component_healthy",
                "1 when a component is healthy, 0 when degraded or unhealthy.",
                "component",
            ),
            alerts_firing: gauges(
                "beepmyphone_alerts_firing",
                "1 while an alert holds.",
                "alert",
            ),
            cluster_node_info: gauges(
                "beepmyphone_cluster_node_info",
                "This relay's node id in its cluster (always 1; absent when not clustered).",
                "node",
            ),
            cluster_nodes: gauge(
                "beepmyphone_cluster_nodes",
                "Relays of the cluster with a recent heartbeat, as last read from Redis (0 when not clustered).",
            ),
            cluster_wakes,
            registry,
        }
    }

    /// Counts one verification of a device access token.
    pub fn verification(&self, outcome: Verification) -> &IntCounter {
        &self.verifications[outcome as usize]
    }

    /// Counts a socket closed with `code`.
    pub fn ws_closed(&self, code: u16) {
        let label = if KNOWN_CLOSE_CODES.contains(&code) {
            code.to_string()
        } else {
            "other".to_owned()
        };
        self.ws_closed.with_label_values(&[&label]).inc();
    }

    /// The registry, for collectors registered by the binary.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a family the encoder refuses would be a bug in
        // the definitions above, caught by the tests that scrape.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// How often the process collector is read. Reading it counts the open file descriptors by
/// listing `/proc/self/fd`, which takes tens of milliseconds with tens of thousands of sockets
/// open; a scrape must not wait for that, so a thread samples it and scrapes read the sample.
#[cfg(target_os = "linux")]
const PROCESS_SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A collector read on a thread of its own every [`PROCESS_SAMPLE_EVERY`]; `collect` returns
/// the latest sample (at most that old). The thread ends once the collector is dropped.
#[cfg(target_os = "linux")]
struct Sampled {
    descs: Vec<prometheus::core::Desc>,
    latest: std::sync::Arc<std::sync::Mutex<Vec<prometheus::proto::MetricFamily>>>,
}

#[cfg(target_os = "linux")]
impl Sampled {
    /// The crate's process collector (resident memory, open fds, CPU, threads), sampled.
    fn process() -> Self {
        let inner = prometheus::process_collector::ProcessCollector::for_self();
        let descs = inner.desc().into_iter().cloned().collect();
        let latest = std::sync::Arc::new(std::sync::Mutex::new(inner.collect()));
        let weak = std::sync::Arc::downgrade(&latest);
        let sampler = move || loop {
            std::thread::sleep(PROCESS_SAMPLE_EVERY);
            let Some(latest) = weak.upgrade() else {
                return;
            };
            let sample = inner.collect();
            if let Ok(mut slot) = latest.lock() {
                *slot = sample;
            };
        };
        // Without the thread (the OS refused one), the first sample stays: stale, not wrong.
        let _ = std::thread::Builder::new()
            .name("process-metrics".into())
            .spawn(sampler);
        Self { descs, latest }
    }
}

#[cfg(target_os = "linux")]
impl Collector for Sampled {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.latest
            .lock()
            .map(|sample| sample.clone())
            .unwrap_or_default()
    }
}

/// Seconds between two epoch-millisecond instants, never negative.
pub fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    // Millisecond spans in a relay's lifetime are far below 2^52: exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let millis = (to_ms - from_ms).max(0) as f64;
    millis / 1_000.0
}

/// Registers `metric`; a definition error or a duplicate name is a programming error in this
/// file, caught by every test that builds a [`Metrics`].
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<C>,
) -> C {
    #[allow(clippy::expect_used)]
    let metric = metric.expect("a valid metric definition");
    #[allow(clippy::expect_used)]
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(metrics: &Metrics) -> String {
        String::from_utf8(metrics.encode()).unwrap_or_default()
    }

    #[test]
    fn every_family_is_exported_from_zero() {
        let metrics = Metrics::new("1.2.3", "abc1234");
        let text = scrape(&metrics);
        assert!(text.contains("beepmyphone_notifications_published_total{priority=\"critical\"} 0"));
        assert!(text.contains("beepmyphone_token_verifications_total{result=\"revoked\"} 0"));
        assert!(text.contains("beepmyphone_build_info{commit=\"abc1234\",version=\"1.2.3\"} 1"));
        assert!(text.contains("beepmyphone_group_commit_rows_bucket"));
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn counters_move_by_what_was_recorded() {
        let metrics = Metrics::new("0", "x");
        metrics.published.of(Priority::High).inc();
        metrics.verification(Verification::Expired).inc();
        metrics.ws_closed(1000);
        metrics.ws_closed(3999);
        metrics.queue.ready[Priority::Critical as usize].set(4);
        metrics.queue.in_flight.set(5);
        let text = scrape(&metrics);
        assert!(text.contains("beepmyphone_notifications_published_total{priority=\"high\"} 1"));
        assert!(text.contains("beepmyphone_notifications_published_total{priority=\"low\"} 0"));
        assert!(text.contains("beepmyphone_token_verifications_total{result=\"expired\"} 1"));
        assert!(text.contains("beepmyphone_ws_closed_total{code=\"1000\"} 1"));
        assert!(text.contains("beepmyphone_ws_closed_total{code=\"other\"} 1"));
        assert!(text.contains("beepmyphone_queue_ready{priority=\"critical\"} 4"));
        assert!(text.contains("beepmyphone_queue_in_flight 5"));
    }

    #[test]
    fn two_relays_count_apart() {
        let (a, b) = (Metrics::new("0", "x"), Metrics::new("0", "x"));
        a.acked.of(Priority::Low).inc();
        assert_eq!(a.acked.of(Priority::Low).get(), 1);
        assert_eq!(b.acked.of(Priority::Low).get(), 0);
    }

    #[test]
    fn seconds_between_never_goes_negative() {
        assert!((seconds_between(1_000, 3_500) - 2.5).abs() < f64::EPSILON);
        assert!(seconds_between(5_000, 1_000).abs() < f64::EPSILON);
    }
}
