//! `GET /metrics`: counters that move by exactly what happened, route patterns as labels, who may
//! scrape, the token-free listener, promtool's verdict, and the Grafana dashboard's queries.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};

use awc::http::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, wait_for_delivery_status, TestApp};

/// A parsed scrape: `name{labels}` (as written, labels sorted) → value.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                Some((key.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self { text, samples }
    }

    /// The sample's value; 0 when the series does not exist yet.
    fn value(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// Every metric family name in the scrape (from `# TYPE` lines).
    fn families(&self) -> BTreeSet<String> {
        self.text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    }
}

async fn scrape_with(app: &TestApp, token: Option<&str>) -> (u16, String, String) {
    let mut res = app
        .request(Method::GET, "/metrics", token)
        .send()
        .await
        .expect("scrape");
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = res.body().limit(16 * 1024 * 1024).await.expect("body");
    (
        res.status().as_u16(),
        content_type,
        String::from_utf8(body.to_vec()).expect("UTF-8"),
    )
}

async fn scrape(app: &TestApp) -> Scrape {
    let (status, content_type, text) = scrape_with(app, Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(text)
}

async fn token_of_scope(app: &TestApp, scope: &str) -> String {
    let (status, body) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": format!("{scope} token"), "scope": scope}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn a_publish_deliver_ack_moves_each_counter_by_exactly_one() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let before = scrape(&app).await;

    let published = app
        .publish(json!({"title": "disk", "body": "full", "priority": "high"}))
        .await;
    let id = published["id"].as_str().unwrap().to_owned();
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], id.as_str());
    ws.ack(&[&id]).await;
    wait_for_delivery_status(&app, &id, "acked").await;
    let after = scrape(&app).await;

    let moved = |key: &str| after.value(key) - before.value(key);
    for family in ["published", "delivered", "acked"] {
        let key = format!("beepmyphone_notifications_{family}_total{{priority=\"high\"}}");
        assert_eq!(moved(&key), 1.0, "{key}");
        let other = format!("beepmyphone_notifications_{family}_total{{priority=\"normal\"}}");
        assert_eq!(moved(&other), 0.0, "{other}");
    }
    for family in ["expired", "redelivered"] {
        let key = format!("beepmyphone_notifications_{family}_total{{priority=\"high\"}}");
        assert_eq!(moved(&key), 0.0, "{key}");
    }
    assert_eq!(moved("beepmyphone_publish_to_deliver_seconds_count"), 1.0);
    assert_eq!(moved("beepmyphone_deliver_to_ack_seconds_count"), 1.0);
    assert!(moved("beepmyphone_group_commit_rows_count") >= 1.0);
    assert!(moved("beepmyphone_ws_frames_sent_total") >= 1.0);
    assert!(
        moved("beepmyphone_ws_bytes_sent_total") > 100.0,
        "the frame carried the notification"
    );
    let publishes = "beepmyphone_http_requests_total{method=\"POST\",route=\"/api/v1/notifications\",status=\"202\"}";
    assert_eq!(moved(publishes), 1.0);
    assert_eq!(
        moved("beepmyphone_token_verifications_total{result=\"ok\"}"),
        0.0,
        "the socket authenticated before the first scrape"
    );
    assert_eq!(after.value("beepmyphone_sockets_open"), 1.0);
    assert_eq!(after.value("beepmyphone_devices_online"), 1.0);
    assert_eq!(after.value("beepmyphone_queue_in_flight"), 0.0);
    assert_eq!(
        after.value("beepmyphone_queue_ready{priority=\"high\"}"),
        0.0
    );
    assert!(after.value("process_resident_memory_bytes") > 0.0);
    assert!(after.value("process_open_fds") > 0.0);
    let build = format!(
        "beepmyphone_build_info{{commit=\"{}\",version=\"{}\"}}",
        beepmyphone::GIT_COMMIT,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(after.value(&build), 1.0, "{build}");

    // A client that closes and goes (the relay may see the close frame or only the dropped
    // connection first): exactly one close is counted.
    ws.close().await;
    crate::helpers::eventually("the socket close is counted", || async {
        let scrape = scrape(&app).await;
        let closed = scrape.value("beepmyphone_ws_closed_total{code=\"1000\"}")
            + scrape.value("beepmyphone_ws_closed_total{code=\"1006\"}");
        (closed == 1.0 && scrape.value("beepmyphone_sockets_open") == 0.0).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn queue_gauges_and_token_results_follow_the_relay() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    for priority in ["low", "critical", "critical"] {
        app.publish(json!({"title": "t", "priority": priority}))
            .await;
    }
    let scraped = scrape(&app).await;
    assert_eq!(
        scraped.value("beepmyphone_queue_ready{priority=\"critical\"}"),
        2.0
    );
    assert_eq!(
        scraped.value("beepmyphone_queue_ready{priority=\"low\"}"),
        1.0
    );
    assert_eq!(scraped.value("beepmyphone_sockets_open"), 0.0);

    // A forged token and a good one, over HTTP (a device's own calls).
    let (status, _) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&device.access_token),
        )
        .await;
    assert_eq!(status, 200);
    let scraped = scrape(&app).await;
    assert_eq!(
        scraped.value("beepmyphone_token_verifications_total{result=\"invalid\"}"),
        1.0
    );
    assert_eq!(
        scraped.value("beepmyphone_token_verifications_total{result=\"ok\"}"),
        1.0
    );
    assert!(scraped.value("beepmyphone_db_pool_connections{state=\"idle\"}") >= 1.0);
    assert!(scraped.value("beepmyphone_db_pool_wait_seconds_count") >= 1.0);

    // A deleted device takes its waiting deliveries out of the totals.
    assert_eq!(
        app.delete(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token)
        )
        .await,
        204
    );
    crate::helpers::eventually(
        "the deleted device's deliveries leave the gauges",
        || async {
            let scraped = scrape(&app).await;
            (scraped.value("beepmyphone_queue_ready{priority=\"critical\"}") == 0.0
                && scraped.value("beepmyphone_queue_ready{priority=\"low\"}") == 0.0)
                .then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn route_labels_are_patterns_never_raw_paths() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let (status, _) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .get(
            "/api/v1/no/such/path/dev_secretlooking",
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 404);
    let scraped = scrape(&app).await;
    assert_eq!(
        scraped.value("beepmyphone_http_requests_total{method=\"GET\",route=\"/api/v1/devices/{id}\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        scraped.value(
            "beepmyphone_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"
        ),
        1.0
    );
    assert!(
        !scraped.text.contains(&device.id),
        "a device id became a label"
    );
    assert!(!scraped.text.contains("dev_secretlooking"));
    assert!(
        scraped.value("beepmyphone_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/devices/{id}\"}") >= 1.0
    );
}

#[actix_web::test]
async fn only_metrics_and_admin_tokens_scrape_and_a_metrics_token_does_nothing_else() {
    let app = spawn_app().await;
    let reader = token_of_scope(&app, "metrics").await;
    let publisher = token_of_scope(&app, "publish").await;
    let device = app.pair_device("phone").await;

    assert_eq!(scrape_with(&app, None).await.0, 401);
    assert_eq!(scrape_with(&app, Some(&publisher)).await.0, 403);
    assert_eq!(scrape_with(&app, Some(&device.access_token)).await.0, 403);
    let (status, _, text) = scrape_with(&app, Some(&reader)).await;
    assert_eq!(status, 200);
    assert!(text.contains("beepmyphone_notifications_published_total"));

    let (status, body) = app
        .post(
            "/api/v1/notifications",
            Some(&reader),
            &json!({"title": "x"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(app.get("/api/v1/devices", Some(&reader)).await.0, 403);
    assert_eq!(app.get("/api/v1/notifications", Some(&reader)).await.0, 403);
    assert_eq!(app.get("/api/v1/tokens", Some(&reader)).await.0, 403);
    assert_eq!(
        app.post("/api/v1/pairing-codes", Some(&reader), &json!({}))
            .await
            .0,
        403
    );
}

#[actix_web::test]
async fn metrics_listen_serves_the_scrape_without_a_token_and_nothing_else() {
    let app = spawn_app_with(|s| s.metrics.listen = "127.0.0.1:0".into()).await;
    let port = app.metrics_port.expect("the metrics listener is bound");
    assert_ne!(port, app.port);
    let client = awc::Client::default();
    let mut res = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(res.status().as_u16(), 200);
    let body = res.body().limit(16 * 1024 * 1024).await.expect("body");
    assert!(String::from_utf8_lossy(&body).contains("beepmyphone_sockets_open"));
    for path in ["/api/v1/devices", "/health", "/"] {
        let res = client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .expect("request");
        assert_eq!(
            res.status().as_u16(),
            404,
            "{path} is not on the metrics listener"
        );
    }
}

#[actix_web::test]
async fn metrics_off_means_no_endpoint_and_no_listener() {
    let app = spawn_app_with(|s| {
        s.metrics.enabled = false;
        s.metrics.listen = "127.0.0.1:0".into();
    })
    .await;
    let (status, _, _) = scrape_with(&app, Some(&app.admin_token)).await;
    assert_eq!(status, 404);
    assert!(app.metrics_port.is_none());
}

#[actix_web::test]
async fn a_bad_metrics_listen_address_is_refused_at_start() {
    let mut settings = beepmyphone::config::Settings::default();
    settings.metrics.listen = "localhost".into();
    let err = settings.validate().unwrap_err();
    assert!(err.to_string().contains("metrics.listen"), "{err}");
}

/// `promtool check metrics` (Debian package `prometheus`) reads the scrape on stdin and lists
/// every problem it finds (format errors and lint: names, units, help texts).
#[actix_web::test]
async fn promtool_accepts_the_scrape() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let published = app.publish(json!({"title": "t"})).await;
    ws.receive(1).await;
    ws.ack(&[published["id"].as_str().unwrap()]).await;
    let text = scrape(&app).await.text;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package `prometheus`; see README)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

/// Every metric the committed Grafana dashboard queries exists in a real scrape.
#[actix_web::test]
async fn the_grafana_dashboard_queries_only_metrics_a_scrape_has() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana/beepmyphone.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "the dashboard has its panels: {exprs:?}");

    let app = spawn_app().await;
    // Component health is reported once the health supervisor has checked.
    assert_eq!(app.get("/health", None).await.0, 200);
    let families = scrape(&app).await.families();
    let mut queried = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    for name in &queried {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| families.contains(*base))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "the dashboard queries {name}, which no scrape has"
        );
    }
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The metric names in a PromQL expression: identifiers starting with `beepmyphone_` or
/// `process_`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (rest.starts_with("beepmyphone_") || rest.starts_with("process_")) {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..len].to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}
