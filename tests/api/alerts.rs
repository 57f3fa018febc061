//! Alerts through the real relay: a rule fires on the relay's own metrics and its clock, the
//! webhook receives the JSON payload, and the operator's device receives a critical notification.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;

use beepmyphone_actors::clock::Clock;

use crate::helpers::{
    eventually, record_requests, spawn_app_with, start_in, test_settings, TestApp,
};

/// A webhook receiver on port 0 that keeps every JSON body it is sent.
fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let kept = kept.clone();
        App::new().route(
            "/hook",
            web::post().to(move |body: web::Json<Value>| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body.into_inner());
                    HttpResponse::NoContent().finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    (format!("http://127.0.0.1:{port}/hook"), bodies)
}

/// A round trip through the relay: its actors have run their first poll since (the alert
/// manager makes its interval on the clock when it starts).
async fn settle(app: &TestApp) {
    let (status, _) = app.get("/health", None).await;
    assert!(status == 200 || status == 503);
}

/// Settles, then moves the relay's clock.
async fn advance(app: &TestApp, by: Duration) {
    settle(app).await;
    app.clock.advance(by);
}

async fn next_body(bodies: &Arc<Mutex<Vec<Value>>>, n: usize) -> Value {
    eventually(&format!("webhook call {n}"), || async {
        bodies.lock().unwrap().get(n - 1).cloned()
    })
    .await
}

#[actix_web::test]
async fn a_slow_p99_reaches_the_webhook_and_its_recovery_too() {
    let (url, bodies) = receiver();
    let app = spawn_app_with(|s| {
        s.alerts.webhook_url = url.clone().into();
        s.alerts.webhook_backoff_ms = 10;
    })
    .await;
    let firing_gauge = || {
        app.state
            .graph
            .metrics
            .alerts_firing
            .with_label_values(&["http_p99_latency"])
            .get()
    };
    settle(&app).await;
    assert_eq!(firing_gauge(), 0);
    // 100 requests, 5 taking 1.5 s: the p99 is in the 2.5 s bucket, over 500 ms.
    record_requests(&app, 95, 0.003);
    record_requests(&app, 5, 1.5);
    advance(&app, Duration::from_secs(15)).await;
    let firing = next_body(&bodies, 1).await;
    assert_eq!(firing["alert"], "http_p99_latency");
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["value"], 2500.0);
    assert_eq!(firing["threshold"], 500.0);
    assert!(
        firing["summary"]
            .as_str()
            .unwrap()
            .contains("p99 response time 2500.0 ms"),
        "{firing}"
    );
    let at = chrono::DateTime::parse_from_rfc3339(firing["at"].as_str().unwrap()).unwrap();
    assert_eq!(at.timestamp_millis(), app.clock.now_ms());
    assert_eq!(firing_gauge(), 1);
    // Six minutes of fast requests: the slow ones leave the window and the alert resolves.
    record_requests(&app, 1_000, 0.002);
    advance(&app, Duration::from_secs(6 * 60)).await;
    let resolved = next_body(&bodies, 2).await;
    assert_eq!(resolved["alert"], "http_p99_latency");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(firing_gauge(), 0);
    assert_eq!(bodies.lock().unwrap().len(), 2, "one firing, one resolved");
}

#[actix_web::test]
async fn an_alert_reaches_the_operators_device_as_a_critical_notification() {
    let app = spawn_app_with(|_| {}).await;
    let device = app.pair_device("operator phone").await;
    let data_dir = app.stop().await;
    let mut settings = test_settings(data_dir.path());
    settings.alerts.notify_devices = vec![device.id.clone()];
    let app = start_in(data_dir, settings).await;
    let mut ws = app.connect_device(&device).await;
    settle(&app).await;
    record_requests(&app, 100, 4.0);
    advance(&app, Duration::from_secs(15)).await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["title"], "Alert: http_p99_latency");
    assert_eq!(items[0]["priority"], "critical");
    assert_eq!(items[0]["app"], "beepmyphone");
    assert!(
        items[0]["body"]
            .as_str()
            .unwrap()
            .contains("p99 response time 5000.0 ms"),
        "{}",
        items[0]
    );
    ws.ack_all(&items).await;
}
