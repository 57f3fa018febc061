//! Optional OTLP/HTTP export (`[otlp]`, off by default): one server span per HTTP request, and
//! every figure of the Prometheus registry, sent to a collector (or DataDog, New Relic) in
//! protobuf.
//!
//! - Spans: the request middleware hands [`Otlp::record_request`] the request's trace (the trace id
//!   and the caller's span), the span id the relay put in its `traceparent` answer, the method,
//!   route pattern and status. The span is queued (bounded: `otlp.max_queued_spans`; a full queue
//!   drops it and counts `beepmyphone_otlp_dropped_spans_total`), and exported in batches by
//!   `opentelemetry-otlp`'s HTTP span exporter.
//! - Metrics: every `otlp.export_interval_ms` the registry is gathered and sent as OTLP metrics
//!   (`opentelemetry-proto` messages): counters as cumulative monotonic sums, gauges as gauges,
//!   histograms as cumulative explicit-bucket histograms, under their Prometheus names
//!   (`beepmyphone_notifications_published_total`).
//!
//! Export runs on its own thread (an actix system of its own, with an `awc` client: no second
//! HTTP stack), so a slow or down collector never holds a request; failed exports are counted in
//! `beepmyphone_otlp_export_failures_total{signal}` and logged without the headers. When export is
//! off, [`start`] returns `None` and the middleware does nothing more than test that.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, InstrumentationScope as ProtoScope, KeyValue as ProtoKeyValue,
};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use beepmyphone_actors::metrics::Metrics;

use crate::config::OtlpSettings;
use crate::request_id::TraceContext;

/// Spans sent in one export request at most.
const MAX_BATCH: usize = 512;

/// Bytes of a collector's answer read at most.
const MAX_ANSWER: usize = 64 * 1024;

/// The running export: where the middleware queues spans.
pub struct Otlp {
    spans: mpsc::Sender<SpanData>,
    dropped: IntCounter,
    scope: InstrumentationScope,
    /// Tells the export thread to send what it holds once more and end.
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl std::fmt::Debug for Otlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otlp").finish_non_exhaustive()
    }
}

/// What [`Otlp::record_request`] needs to know about an answered request.
pub struct RequestSpan<'a> {
    /// The request's trace (its id, and the caller's span as the parent).
    pub trace: &'a TraceContext,
    /// The relay's span id, the one its `traceparent` answer carries.
    pub span_id: [u8; 8],
    /// The request method.
    pub method: &'a str,
    /// The route pattern (`/api/v1/devices/{id}`), `None` when no route matched.
    pub route: Option<&'a str>,
    /// The answer's status code.
    pub status: u16,
    /// How long the request took.
    pub elapsed: Duration,
}

impl Otlp {
    /// Ends the export: the thread sends its queued spans and one last snapshot of the metrics,
    /// then stops (the relay calls this once it has stopped serving). Later calls do nothing.
    pub fn shutdown(&self) {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = stop.send(()); // the thread may have ended already
        }
    }

    /// Queues the server span of one request; never waits (a full queue drops it, counted).
    pub fn record_request(&self, request: RequestSpan<'_>) {
        let end = SystemTime::now();
        let start = end.checked_sub(request.elapsed).unwrap_or(end);
        let route = request
            .route
            .unwrap_or(crate::monitoring::metrics::UNMATCHED_ROUTE);
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(request.status)),
        ];
        if let Some(route) = request.route {
            attributes.push(KeyValue::new("http.route", route.to_owned()));
        }
        let span = SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(*request.trace.trace_id.as_bytes()),
                SpanId::from_bytes(request.span_id),
                TraceFlags::new(request.trace.flags & 0x01),
                false,
                TraceState::default(),
            ),
            parent_span_id: request
                .trace
                .parent_id
                .map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: request.trace.parent_id.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(format!("{} {route}", request.method)),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            // OTel semantic conventions: a server span is an error for 5xx only.
            status: if request.status >= 500 {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: self.scope.clone(),
        };
        if self.spans.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
#[error("otlp: {0}")]
pub struct OtlpError(String);

/// Starts the export thread when `otlp.endpoint` is set; `None` when export is off.
pub fn start(
    settings: &OtlpSettings,
    metrics: &Arc<Metrics>,
    log: &slog::Logger,
) -> Result<Option<Arc<Otlp>>, OtlpError> {
    if settings.endpoint.is_empty() {
        return Ok(None);
    }
    let err = |e: &dyn std::fmt::Display| OtlpError(e.to_string());
    let registry = metrics.registry();
    let dropped = IntCounter::new(
        "beepmyphone_otlp_dropped_spans_total",
        "Spans dropped because the OTLP export queue was full.",
    )
    .map_err(|e| err(&e))?;
    registry
        .register(Box::new(dropped.clone()))
        .map_err(|e| err(&e))?;
    let failures = IntCounterVec::new(
        Opts::new(
            "beepmyphone_otlp_export_failures_total",
            "OTLP export requests that failed, by signal (traces, metrics).",
        ),
        &["signal"],
    )
    .map_err(|e| err(&e))?;
    registry
        .register(Box::new(failures.clone()))
        .map_err(|e| err(&e))?;
    let base = settings.endpoint.trim_end_matches('/').to_owned();
    let headers = settings.headers.pairs().map_err(|e| err(&e))?;
    let timeout = Duration::from_millis(settings.timeout_ms);
    let (http_tx, http_rx) = mpsc::unbounded_channel();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(Bridge(http_tx))
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(timeout)
        .with_headers(headers.iter().cloned().collect::<HashMap<_, _>>())
        .build()
        .map_err(|e| err(&e))?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .build(),
    );
    let (spans_tx, spans_rx) = mpsc::channel(settings.max_queued_spans);
    let (stop_tx, stop_rx) = oneshot::channel();
    let job = Exporter {
        spans: spans_rx,
        exporter,
        http: http_rx,
        metrics: MetricsJob {
            registry: registry.clone(),
            url: format!("{base}/v1/metrics"),
            resource: ProtoResource {
                attributes: vec![string_attribute("service.name", &settings.service_name)],
                ..Default::default()
            },
            started: unix_nanos(SystemTime::now()),
        },
        headers,
        timeout,
        every: Duration::from_millis(settings.export_interval_ms),
        failures,
        log: log.new(slog::o!("component" => "otlp")),
        stop: stop_rx,
    };
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || actix_rt::System::new().block_on(job.run()))
        .map_err(|e| err(&e))?;
    slog::info!(log, "exporting spans and metrics over OTLP"; "endpoint" => &base, "interval_ms" => settings.export_interval_ms);
    Ok(Some(Arc::new(Otlp {
        stop: std::sync::Mutex::new(Some(stop_tx)),
        spans: spans_tx,
        dropped,
        scope: InstrumentationScope::builder("beepmyphone")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    })))
}

/// One HTTP exchange the span exporter asks the export thread's client for.
type Exchange = (
    Request<Bytes>,
    oneshot::Sender<Result<Response<Bytes>, HttpError>>,
);

/// `opentelemetry-http`'s client over the export thread's `awc` client (which is not `Send`): the
/// request goes over a channel to a task on that thread, the answer comes back.
#[derive(Debug)]
struct Bridge(mpsc::UnboundedSender<Exchange>);

#[async_trait::async_trait]
impl HttpClient for Bridge {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send((request, tx))
            .map_err(|_| "the OTLP export thread stopped")?;
        rx.await.map_err(|_| "the OTLP export thread stopped")?
    }
}

/// The export thread's state.
struct Exporter {
    spans: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    http: mpsc::UnboundedReceiver<Exchange>,
    metrics: MetricsJob,
    headers: Vec<(String, String)>,
    timeout: Duration,
    every: Duration,
    failures: IntCounterVec,
    log: slog::Logger,
    stop: oneshot::Receiver<()>,
}

impl Exporter {
    async fn run(self) {
        let Self {
            mut spans,
            exporter,
            mut http,
            metrics,
            headers,
            timeout,
            every,
            failures,
            log,
            mut stop,
        } = self;
        let client = awc::Client::builder()
            .timeout(timeout)
            .disable_redirects()
            .finish();
        let bridge_client = client.clone();
        actix_rt::spawn(async move {
            while let Some((request, answer)) = http.recv().await {
                // The exporter may have given up waiting: nothing to answer then.
                let _ = answer.send(post(&bridge_client, request).await);
            }
        });
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut failing = false;
        loop {
            let why = tokio::select! {
                span = spans.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() < MAX_BATCH {
                            continue;
                        }
                        Wake::Full
                    }
                    None => Wake::Closed,
                },
                _ = tick.tick() => Wake::Tick,
                _ = &mut stop => Wake::Closed,
            };
            let mut ok = true;
            if !batch.is_empty() {
                let spans = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
                if let Err(e) = exporter.export(spans).await {
                    failures.with_label_values(&["traces"]).inc();
                    slog::debug!(log, "span export failed"; "error" => %e);
                    ok = false;
                }
            }
            // Metrics on the tick (and once more at the end), not on every full batch.
            if why != Wake::Full {
                if let Err(e) = export_metrics(&client, &metrics, &headers).await {
                    failures.with_label_values(&["metrics"]).inc();
                    slog::debug!(log, "metrics export failed"; "error" => %e);
                    ok = false;
                }
            }
            let now_failing = !ok;
            if now_failing != failing {
                failing = now_failing;
                if failing {
                    slog::warn!(
                        log,
                        "OTLP export failing (counted in beepmyphone_otlp_export_failures_total)"
                    );
                } else {
                    slog::info!(log, "OTLP export working again");
                }
            }
            if why == Wake::Closed {
                break;
            }
        }
    }
}

/// Sends one snapshot of the registry.
async fn export_metrics(
    client: &awc::Client,
    metrics: &MetricsJob,
    headers: &[(String, String)],
) -> Result<(), HttpError> {
    let mut request =
        Request::post(metrics.url.as_str()).header("content-type", "application/x-protobuf");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let answer = post(client, request.body(Bytes::from(metrics.encode()))?).await?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {}", answer.status().as_u16()).into())
    }
}

/// Why the export loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The interval elapsed: spans and metrics go out.
    Tick,
    /// A batch is full: its spans go out.
    Full,
    /// Every sender is gone (the relay stopped): the last spans and metrics go out.
    Closed,
}

/// Sends one request with `awc`; the answer's body is read up to [`MAX_ANSWER`].
async fn post(client: &awc::Client, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let (parts, body) = request.into_parts();
    let mut outgoing = client.post(parts.uri.to_string());
    for (name, value) in &parts.headers {
        let name = HeaderName::from_bytes(name.as_str().as_bytes())?;
        let value = HeaderValue::from_bytes(value.as_bytes())?;
        outgoing = outgoing.insert_header((name, value));
    }
    let mut answer = outgoing.send_body(body).await.map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    let body = answer.body().limit(MAX_ANSWER).await.unwrap_or_default();
    Ok(Response::builder().status(status).body(body)?)
}

/// The Prometheus registry as an OTLP metrics request.
struct MetricsJob {
    registry: Registry,
    url: String,
    resource: ProtoResource,
    /// When the export started: the start of every cumulative figure.
    started: u64,
}

impl MetricsJob {
    fn encode(&self) -> Vec<u8> {
        let request = to_otlp(
            &self.registry.gather(),
            self.resource.clone(),
            self.started,
            unix_nanos(SystemTime::now()),
        );
        request.encode_to_vec()
    }
}

/// Prometheus metric families as an OTLP export request: counters as cumulative monotonic sums,
/// gauges as gauges, histograms as cumulative histograms (Prometheus's cumulative bucket counts
/// become OTLP's per-bucket counts). Summaries and untyped metrics (the relay has none) are
/// skipped.
pub fn to_otlp(
    families: &[prometheus::proto::MetricFamily],
    resource: ProtoResource,
    start: u64,
    now: u64,
) -> ExportMetricsServiceRequest {
    use prometheus::proto::MetricType;
    let number = |attributes, value| NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    };
    let mut metrics = Vec::with_capacity(families.len());
    for family in families {
        let points = family.get_metric();
        let attributes = |m: &prometheus::proto::Metric| -> Vec<ProtoKeyValue> {
            m.get_label()
                .iter()
                .map(|l| string_attribute(l.name(), l.value()))
                .collect()
        };
        let data = match family.get_field_type() {
            MetricType::COUNTER => metric::Data::Sum(Sum {
                data_points: points
                    .iter()
                    .map(|m| number(attributes(m), m.get_counter().get_value()))
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            MetricType::GAUGE => metric::Data::Gauge(Gauge {
                data_points: points
                    .iter()
                    .map(|m| number(attributes(m), m.get_gauge().get_value()))
                    .collect(),
            }),
            MetricType::HISTOGRAM => metric::Data::Histogram(Histogram {
                data_points: points
                    .iter()
                    .map(|m| {
                        let h = m.get_histogram();
                        let mut bounds = Vec::new();
                        let mut counts = Vec::new();
                        let mut below = 0u64;
                        for bucket in h.get_bucket() {
                            if bucket.upper_bound().is_infinite() {
                                continue;
                            }
                            bounds.push(bucket.upper_bound());
                            counts.push(bucket.cumulative_count().saturating_sub(below));
                            below = bucket.cumulative_count();
                        }
                        counts.push(h.get_sample_count().saturating_sub(below));
                        HistogramDataPoint {
                            attributes: attributes(m),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: h.get_sample_count(),
                            sum: Some(h.get_sample_sum()),
                            bucket_counts: counts,
                            explicit_bounds: bounds,
                            ..Default::default()
                        }
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
            // The relay registers neither.
            MetricType::UNTYPED | MetricType::SUMMARY => continue,
        };
        metrics.push(Metric {
            name: family.name().to_owned(),
            description: family.help().to_owned(),
            data: Some(data),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(ProtoScope {
                    name: "beepmyphone".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn string_attribute(key: &str, value: &str) -> ProtoKeyValue {
    ProtoKeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Histogram as PromHistogram, HistogramOpts, IntGauge};

    #[test]
    fn the_registry_becomes_sums_gauges_and_histograms() {
        let registry = Registry::new();
        let counter = IntCounterVec::new(Opts::new("c_total", "a counter"), &["k"]).unwrap();
        let gauge = IntGauge::new("g", "a gauge").unwrap();
        let histogram = PromHistogram::with_opts(
            HistogramOpts::new("h_seconds", "a histogram").buckets(vec![0.1, 1.0]),
        )
        .unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        registry.register(Box::new(gauge.clone())).unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        counter.with_label_values(&["v"]).inc_by(3);
        gauge.set(-2);
        for seconds in [0.05, 0.5, 0.7, 5.0] {
            histogram.observe(seconds);
        }
        let request = to_otlp(&registry.gather(), ProtoResource::default(), 10, 20);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let find = |name: &str| metrics.iter().find(|m| m.name == name).unwrap();
        let Some(metric::Data::Sum(sum)) = &find("c_total").data else {
            panic!("a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let point = &sum.data_points[0];
        assert_eq!(point.attributes, vec![string_attribute("k", "v")]);
        assert_eq!(point.value, Some(number_data_point::Value::AsDouble(3.0)));
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (10, 20));
        let Some(metric::Data::Gauge(g)) = &find("g").data else {
            panic!("a gauge")
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(-2.0))
        );
        let Some(metric::Data::Histogram(h)) = &find("h_seconds").data else {
            panic!("a histogram")
        };
        let point = &h.data_points[0];
        assert_eq!(point.explicit_bounds, vec![0.1, 1.0]);
        // Per bucket: (..0.1] one, (0.1..1] two, (1..) one.
        assert_eq!(point.bucket_counts, vec![1, 2, 1]);
        assert_eq!(point.count, 4);
        assert_eq!(point.sum, Some(0.05 + 0.5 + 0.7 + 5.0));
    }
}
