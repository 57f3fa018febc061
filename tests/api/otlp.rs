//! `[otlp]`: the relay exports a server span per request (with the caller's trace) and the
//! Prometheus figures to an OTLP/HTTP receiver the test runs; off by default; a down collector
//! changes nothing for requests.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::Method;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

use crate::helpers::{eventually, spawn_app, spawn_app_with_log_and, TestApp};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";
const API_KEY: &str = "otlp-test-key-5f2c9a";

/// One request the receiver got: its path, its `api-key` header, its body.
type Export = (String, Option<String>, Vec<u8>);

/// What the receiver got.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Export>>>);

impl Received {
    fn spans(&self) -> Vec<Span> {
        let got = self.0.lock().unwrap();
        got.iter()
            .filter(|(path, _, _)| path == "/v1/traces")
            .flat_map(|(_, _, body)| {
                let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("traces");
                request
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
            })
            .collect()
    }

    fn metric_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        let got = self.0.lock().unwrap();
        got.iter()
            .filter(|(path, _, _)| path == "/v1/metrics")
            .map(|(_, _, body)| {
                ExportMetricsServiceRequest::decode(body.as_slice()).expect("metrics")
            })
            .collect()
    }

    fn api_keys(&self) -> Vec<Option<String>> {
        let got = self.0.lock().unwrap();
        got.iter().map(|(_, key, _)| key.clone()).collect()
    }
}

/// An OTLP/HTTP receiver on port 0: answers 200 to POST /v1/traces and /v1/metrics, keeps bodies.
fn receiver() -> (String, Received) {
    let received = Received::default();
    let store = received.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let store = store.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let store = store.clone();
            async move {
                let known = req.method() == Method::POST
                    && matches!(req.path(), "/v1/traces" | "/v1/metrics");
                if !known {
                    return HttpResponse::NotFound().finish();
                }
                let key = req
                    .headers()
                    .get("api-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                store
                    .0
                    .lock()
                    .unwrap()
                    .push((req.path().to_owned(), key, body.to_vec()));
                HttpResponse::Ok()
                    .content_type("application/x-protobuf")
                    .finish()
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    (format!("http://127.0.0.1:{port}"), received)
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

async fn get_with_traceparent(app: &TestApp, path: &str, traceparent: &str) -> (u16, String) {
    let res = app
        .request(Method::GET, path, Some(&app.admin_token))
        .insert_header(("traceparent", traceparent))
        .send()
        .await
        .expect("request");
    let answer = res
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (res.status().as_u16(), answer)
}

#[actix_web::test]
async fn spans_and_metrics_reach_the_receiver() {
    let (endpoint, received) = receiver();
    let (app, log) = spawn_app_with_log_and(|s| {
        s.otlp.endpoint = endpoint.clone();
        s.otlp.export_interval_ms = 100;
        s.otlp.headers = beepmyphone::config::OtlpHeaders(format!("api-key={API_KEY}").into());
    })
    .await;
    let device = app.pair_device("phone").await;
    app.publish(json!({"title": "t", "priority": "high"})).await;
    let (status, answer) = get_with_traceparent(
        &app,
        &format!("/api/v1/devices/{}", device.id),
        &format!("00-{TRACE}-{PARENT}-01"),
    )
    .await;
    assert_eq!(status, 200);
    // The relay's span id, as its answer named it.
    let span_id = answer
        .split('-')
        .nth(2)
        .expect("a traceparent answer")
        .to_owned();

    let span = eventually("the request's span arrives", || {
        let spans = received.spans();
        async move {
            spans
                .into_iter()
                .find(|s| hex::encode(&s.trace_id) == TRACE)
        }
    })
    .await;
    assert_eq!(span.name, "GET /api/v1/devices/{id}");
    assert_eq!(hex::encode(&span.span_id), span_id);
    assert_eq!(hex::encode(&span.parent_span_id), PARENT);
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        attribute(&span.attributes, "http.route"),
        Some(&any_value::Value::StringValue(
            "/api/v1/devices/{id}".into()
        ))
    );
    assert_eq!(
        attribute(&span.attributes, "http.request.method"),
        Some(&any_value::Value::StringValue("GET".into()))
    );
    assert_eq!(
        attribute(&span.attributes, "http.response.status_code"),
        Some(&any_value::Value::IntValue(200))
    );
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    // A request without a traceparent: a trace of its own, no parent.
    let unknown = eventually("the publish's span arrives", || {
        let spans = received.spans();
        async move {
            spans
                .into_iter()
                .find(|s| s.name == "POST /api/v1/notifications")
        }
    })
    .await;
    assert!(unknown.parent_span_id.is_empty(), "{unknown:?}");
    assert_ne!(hex::encode(&unknown.trace_id), TRACE);

    // The series exist (at 0) from the start: wait for an export taken after the publish counted.
    let high = Some(any_value::Value::StringValue("high".into()));
    let one = Some(number_data_point::Value::AsDouble(1.0));
    let published = eventually("the published counter arrives at 1", || {
        let requests = received.metric_requests();
        let high = high.clone();
        async move {
            requests.into_iter().rev().find_map(|request| {
                let resource = request.resource_metrics.first()?;
                let service =
                    attribute(&resource.resource.as_ref()?.attributes, "service.name").cloned();
                assert_eq!(
                    service,
                    Some(any_value::Value::StringValue("beepmyphone".into()))
                );
                let metric = resource
                    .scope_metrics
                    .iter()
                    .flat_map(|s| &s.metrics)
                    .find(|m| m.name == "beepmyphone_notifications_published_total")?
                    .clone();
                let Some(metric::Data::Sum(sum)) = &metric.data else {
                    panic!("a counter is a sum: {metric:?}");
                };
                sum.data_points
                    .iter()
                    .any(|p| {
                        attribute(&p.attributes, "priority") == high.as_ref() && p.value == one
                    })
                    .then_some(sum.clone())
            })
        }
    })
    .await;
    assert!(published.is_monotonic);
    assert_eq!(published.aggregation_temporality, 2, "cumulative");
    let normal = published
        .data_points
        .iter()
        .find(|p| {
            attribute(&p.attributes, "priority")
                == Some(&any_value::Value::StringValue("normal".into()))
        })
        .expect("the normal-priority series");
    assert_eq!(normal.value, Some(number_data_point::Value::AsDouble(0.0)));

    // Histograms keep their buckets (per bucket, plus the overflow one).
    let requests = received.metric_requests();
    let histogram = requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == "beepmyphone_http_request_duration_seconds")
        .and_then(|m| match &m.data {
            Some(metric::Data::Histogram(h)) => Some(h.clone()),
            _ => None,
        })
        .expect("the request-duration histogram");
    let point = histogram.data_points.first().expect("a series");
    assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
    assert_eq!(point.bucket_counts.iter().sum::<u64>(), point.count);

    // State gauges (sockets, pool) are refreshed for the export without any scrape: a device
    // connects, the clock moves one export interval, and the open socket arrives.
    let device = app.pair_device("phone").await;
    let _ws = app.connect_device(&device).await;
    app.clock.advance(std::time::Duration::from_millis(100));
    eventually("sockets_open arrives at 1 over OTLP", || {
        let requests = received.metric_requests();
        async move {
            requests.into_iter().rev().find_map(|request| {
                let gauge = request
                    .resource_metrics
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .find(|m| m.name == "beepmyphone_sockets_open")?
                    .clone();
                let Some(metric::Data::Gauge(gauge)) = gauge.data else {
                    return None;
                };
                gauge
                    .data_points
                    .iter()
                    .any(|p| p.value == Some(number_data_point::Value::AsDouble(1.0)))
                    .then_some(())
            })
        }
    })
    .await;

    // Every export carried the header; the key never reached the log.
    let keys = received.api_keys();
    assert!(!keys.is_empty());
    assert!(
        keys.iter().all(|k| k.as_deref() == Some(API_KEY)),
        "{keys:?}"
    );
    assert!(!log.text().contains(API_KEY));
}

#[actix_web::test]
async fn export_is_off_by_default() {
    let app = spawn_app().await;
    assert!(app.state.otlp.is_none());
    assert!(app.state.settings.otlp.endpoint.is_empty());
    let (status, body) = app.get("/metrics", Some(&app.admin_token)).await;
    assert_eq!(status, 200);
    let text = body
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    assert!(!text.contains("beepmyphone_otlp_"), "{text}");
}

#[actix_web::test]
async fn a_down_collector_costs_requests_nothing() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (app, _log) = spawn_app_with_log_and(|s| {
        s.otlp.endpoint = format!("http://127.0.0.1:{port}");
        s.otlp.export_interval_ms = 100;
        s.otlp.max_queued_spans = 4;
    })
    .await;
    for _ in 0..20 {
        let (status, _) = app.get("/api/v1/devices", Some(&app.admin_token)).await;
        assert_eq!(status, 200);
    }
    eventually("failed exports are counted", || {
        let app = &app;
        async move {
            let (_, body) = app.get("/metrics", Some(&app.admin_token)).await;
            let text = body.as_str().map(str::to_owned).unwrap_or_default();
            text.lines()
                .find(|l| {
                    l.starts_with("beepmyphone_otlp_export_failures_total{signal=\"metrics\"}")
                })
                .filter(|l| !l.ends_with(" 0"))
                .map(|_| ())
        }
    })
    .await;
}

#[actix_web::test]
async fn stopping_the_relay_sends_what_the_export_holds() {
    let (endpoint, received) = receiver();
    // An interval far beyond the test: only the first tick and the shutdown export.
    let (app, _log) = spawn_app_with_log_and(|s| {
        s.otlp.endpoint = endpoint.clone();
        s.otlp.export_interval_ms = 3_600_000;
    })
    .await;
    // The interval's first tick exports at once; after it, nothing until the shutdown.
    eventually("the first export arrives", || {
        let requests = received.metric_requests();
        async move { (!requests.is_empty()).then_some(()) }
    })
    .await;
    app.publish(json!({"title": "t", "priority": "low"})).await;
    let published_low = |requests: Vec<_>| {
        requests
            .iter()
            .any(|request: &ExportMetricsServiceRequest| {
                request
                    .resource_metrics
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .filter(|m| m.name == "beepmyphone_notifications_published_total")
                    .any(|m| match &m.data {
                        Some(metric::Data::Sum(sum)) => sum.data_points.iter().any(|p| {
                            attribute(&p.attributes, "priority")
                                == Some(&any_value::Value::StringValue("low".into()))
                                && p.value == Some(number_data_point::Value::AsDouble(1.0))
                        }),
                        _ => false,
                    })
            })
    };
    assert!(
        !published_low(received.metric_requests()),
        "no export yet after the publish"
    );
    let spans_before = received.spans().len();
    let _data_dir = app.stop().await;
    eventually("the shutdown export arrives", || {
        let requests = received.metric_requests();
        async move { published_low(requests).then_some(()) }
    })
    .await;
    assert!(
        received.spans().len() > spans_before,
        "the publish's queued span went out at shutdown"
    );
}
