//! Health that does something: every component with a state and (for admins) a reason, the
//! readiness probe that only an unwritable store (or a silent queue) fails, transitions logged
//! once with recovery on its own, the component gauges, per-actor restart counts and queue lag.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde_json::{json, Value};

use beepmyphone_actors::queue::InjectFault;

use crate::helpers::{
    eventually, spawn_app, spawn_app_with, spawn_app_with_log_and, CapturedLog, TestApp,
};

/// The probe period and cache (the default `health.interval_seconds`).
const PERIOD: Duration = Duration::from_secs(30);

fn component(health: &Value, name: &str) -> Value {
    health["components"]
        .as_array()
        .unwrap_or_else(|| panic!("no components in {health}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {health}"))
        .clone()
}

async fn admin_health(app: &TestApp) -> (u16, Value) {
    app.get("/health", Some(&app.admin_token)).await
}

fn gauge(app: &TestApp, name: &str) -> i64 {
    app.state
        .graph
        .metrics
        .component_healthy
        .with_label_values(&[name])
        .get()
}

fn transitions(log: &CapturedLog, name: &str) -> Vec<Value> {
    log.with_msg("component health changed")
        .into_iter()
        .filter(|l| l["component"] == name)
        .collect()
}

#[actix_rt::test]
async fn anonymous_callers_get_the_states_and_admins_the_details() {
    let app = spawn_app().await;
    let (status, anonymous) = app.get("/health", None).await;
    assert_eq!(status, 200, "{anonymous}");
    assert_eq!(anonymous["status"], "healthy", "{anonymous}");
    let keys: Vec<&String> = anonymous.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["components", "status"], "{anonymous}");
    let names: Vec<&str> = anonymous["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                ["name", "status"],
                "no reasons for anonymous callers: {c}"
            );
            c["name"].as_str().unwrap()
        })
        .collect();
    // No Redis configured: no redis component.
    assert_eq!(
        names,
        [
            "queue",
            "registry",
            "batcher",
            "queue_lag",
            "store",
            "disk",
            "keys",
            "audit",
            "encryption",
            "ratelimit"
        ]
    );
    // A device is not an admin either.
    let device = app.pair_device("phone").await;
    let (_, as_device) = app.get("/health", Some(&device.access_token)).await;
    assert!(as_device.get("pool").is_none(), "{as_device}");
    assert!(component(&as_device, "store").get("reason").is_none());

    let (status, admin) = admin_health(&app).await;
    assert_eq!(status, 200, "{admin}");
    let store = component(&admin, "store");
    assert_eq!(store["status"], "healthy");
    assert!(
        store["reason"]
            .as_str()
            .unwrap()
            .starts_with("writable; pool "),
        "{store}"
    );
    assert!(component(&admin, "keys")["reason"]
        .as_str()
        .unwrap()
        .starts_with("the newest signing key is 0 h old"));
    assert_eq!(
        component(&admin, "queue_lag")["reason"],
        "nothing waits for an online device"
    );
    assert!(admin["pool"]["maxSize"].as_u64().unwrap() > 0, "{admin}");
    // The report is from before the pairing (it is reused for a period).
    assert_eq!(admin["queue"]["devices"], 0, "{admin}");
    assert_eq!(admin["sockets"], json!({"devices": 0, "sockets": 0}));
    assert_eq!(admin["rateLimit"]["backend"], "embedded");
    assert!(admin["checkedAt"].is_string() && admin["restarts"].is_u64());
    for name in names {
        assert_eq!(gauge(&app, name), 1, "{name}");
    }
}

#[actix_rt::test]
async fn ready_fails_only_while_the_store_is_not_writable_and_recovers_on_its_own() {
    let (app, log) = spawn_app_with_log_and(|s| s.storage.busy_timeout_ms = 100).await;
    assert_eq!(app.get("/health/ready", None).await.0, 200);
    assert!(transitions(&log, "store").is_empty());

    // Another process holds the database's write lock: the store cannot be written to.
    let path = app.data_dir.path().join(beepmyphone::store::DB_FILE);
    let mut locker = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    locker.batch_execute("BEGIN EXCLUSIVE").unwrap();
    app.clock.advance(PERIOD);
    let (status, body) = app.get("/health/ready", None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["detail"], "not ready: the store is not writable");
    let (status, health) = admin_health(&app).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unhealthy");
    let store = component(&health, "store");
    assert_eq!(store["status"], "unhealthy");
    assert!(
        store["reason"].as_str().unwrap().contains("not writable"),
        "{store}"
    );
    assert_eq!(gauge(&app, "store"), 0);
    // Still unwritable a period later: the transition is not logged again.
    app.clock.advance(PERIOD);
    assert_eq!(app.get("/health/ready", None).await.0, 503);
    let lines = transitions(&log, "store");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines[0]["from"], "healthy");
    assert_eq!(lines[0]["to"], "unhealthy");

    // The lock goes away; the next round notices without anyone restarting anything.
    locker.batch_execute("ROLLBACK").unwrap();
    app.clock.advance(PERIOD);
    assert_eq!(app.get("/health/ready", None).await.0, 200);
    let (_, health) = admin_health(&app).await;
    assert_eq!(component(&health, "store")["status"], "healthy", "{health}");
    assert_eq!(gauge(&app, "store"), 1);
    // The audit writer, which could not write meanwhile either, retries on its own tick: the
    // whole relay is healthy once it has.
    eventually("the relay healthy again", || async {
        app.clock.advance(PERIOD);
        (admin_health(&app).await.1["status"] == "healthy").then_some(())
    })
    .await;
    let lines = transitions(&log, "store");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["level"], "INFO");
    assert_eq!(lines[1]["to"], "healthy");
}

#[actix_rt::test]
async fn a_report_is_reused_within_the_period() {
    let app = spawn_app().await;
    let (_, first) = admin_health(&app).await;
    app.clock.advance(Duration::from_secs(29));
    let (_, second) = admin_health(&app).await;
    assert_eq!(first["checkedAt"], second["checkedAt"]);
    app.clock.advance(Duration::from_secs(1));
    let (_, third) = admin_health(&app).await;
    assert_ne!(first["checkedAt"], third["checkedAt"]);
}

#[actix_rt::test]
async fn the_disk_component_follows_its_thresholds() {
    let app = spawn_app_with(|s| {
        s.health.disk_degraded_percent = 100;
    })
    .await;
    let (status, health) = admin_health(&app).await;
    assert_eq!(status, 200, "{health}");
    let disk = component(&health, "disk");
    assert_eq!(disk["status"], "degraded", "{disk}");
    assert!(
        disk["reason"]
            .as_str()
            .unwrap()
            .ends_with("below 100 % or 0 MiB"),
        "{disk}"
    );
    assert_eq!(health["status"], "degraded");
    assert_eq!(gauge(&app, "disk"), 0);

    let app = spawn_app_with(|s| {
        s.health.disk_degraded_mib = u64::MAX / 2;
        s.health.disk_unhealthy_mib = u64::MAX / 2;
    })
    .await;
    let (status, health) = admin_health(&app).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(component(&health, "disk")["status"], "unhealthy");
    // A full disk makes the relay unhealthy, not unready: the store decides readiness.
    assert_eq!(app.get("/health/ready", None).await.0, 200);
}

#[actix_rt::test]
async fn a_delivery_waiting_for_an_online_device_is_queue_lag() {
    let app = spawn_app_with(|s| {
        s.delivery.max_in_flight_per_device = 1;
        s.delivery.ack_timeout_seconds = 3_600;
        s.websocket.heartbeat_seconds = 86_400;
    })
    .await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let first = app.publish(json!({"title": "one"})).await;
    app.publish(json!({"title": "two"})).await;
    let sent = ws.receive(1).await;
    assert_eq!(sent[0]["id"], first["id"]);
    // The second waits for the first's ack (window of one). Lag counts from the notification's
    // creation on the wall clock, a little after the relay's clock started: leave a margin.
    app.clock.advance(Duration::from_secs(40));
    let (_, health) = admin_health(&app).await;
    let lag = component(&health, "queue_lag");
    assert_eq!(lag["status"], "degraded", "{health}");
    assert!(health["queue"]["oldestReadyMs"].is_i64(), "{health}");
    app.clock.advance(Duration::from_secs(300));
    let (status, health) = admin_health(&app).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(component(&health, "queue_lag")["status"], "unhealthy");
    // Lag is not a reason to take the relay out of rotation.
    assert_eq!(app.get("/health/ready", None).await.0, 200);
    // Acks drain it; the queue recovers on its own.
    ws.ack_all(&sent).await;
    let second = ws.receive(1).await;
    ws.ack_all(&second).await;
    app.clock.advance(PERIOD);
    let (status, health) = admin_health(&app).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(component(&health, "queue_lag")["status"], "healthy");
}

#[actix_rt::test]
async fn a_queue_panic_is_counted_as_a_restart_of_the_queue() {
    let app = spawn_app().await;
    let restarts = |actor: &str| {
        app.state
            .graph
            .metrics
            .actor_restarts
            .with_label_values(&[actor])
            .get()
    };
    app.state.graph.queue.do_send(InjectFault);
    // The publish is answered by the restarted queue.
    app.publish(json!({"title": "after"})).await;
    assert_eq!(restarts("queue"), 1);
    assert_eq!(restarts("registry"), 0);
    assert_eq!(restarts("keys"), 0);
    app.clock.advance(PERIOD);
    let (_, health) = admin_health(&app).await;
    assert!(health["restarts"].as_u64().unwrap() >= 1, "{health}");
    assert_eq!(component(&health, "queue")["status"], "healthy");
    let scraped = String::from_utf8(app.state.graph.metrics.encode()).unwrap();
    assert!(
        scraped.contains(r#"beepmyphone_actor_restarts_total{actor="queue"} 1"#),
        "{scraped}"
    );
    assert!(
        scraped.contains(r#"beepmyphone_component_healthy{component="store"} 1"#),
        "{scraped}"
    );
}

/// A TCP proxy in front of the test Redis that the test can cut (open connections drop, new ones
/// are refused) and restore: a real outage without stopping the shared Redis.
struct RedisProxy {
    url: String,
    up: tokio::sync::watch::Sender<bool>,
}

async fn redis_proxy() -> RedisProxy {
    let target =
        std::env::var("BEEP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let target = url::Url::parse(&target).unwrap();
    let upstream = format!(
        "{}:{}",
        target.host_str().unwrap(),
        target.port_or_known_default().unwrap_or(6379)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (up, watch) = tokio::sync::watch::channel(true);
    actix_rt::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut watch = watch.clone();
            if !*watch.borrow() {
                continue; // dropped: the client sees the connection close
            }
            let upstream = upstream.clone();
            actix_rt::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = watch.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    RedisProxy {
        url: format!("redis://127.0.0.1:{port}"),
        up,
    }
}

#[actix_rt::test]
async fn a_redis_outage_fails_over_is_logged_once_and_recovers_on_its_own() {
    let proxy = redis_proxy().await;
    let (app, log) = spawn_app_with_log_and(|s| {
        s.redis.url = proxy.url.clone();
        s.redis.key_prefix = format!("beeptest:health:{}:", ulid::Ulid::new());
        s.redis.timeout_ms = 300;
    })
    .await;
    let (status, health) = admin_health(&app).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(component(&health, "redis")["status"], "healthy", "{health}");
    assert_eq!(health["rateLimit"]["backend"], "redis");
    assert_eq!(gauge(&app, "redis"), 1);
    let device = app.pair_device("phone").await;
    let own = format!("/api/v1/devices/{}", device.id);

    // Redis goes away.
    proxy.up.send_replace(false);
    app.clock.advance(PERIOD);
    let (status, health) = admin_health(&app).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(
        component(&health, "redis")["status"],
        "unhealthy",
        "{health}"
    );
    assert_eq!(gauge(&app, "redis"), 0);
    // Rate limits fall back to this process; the deny-list fails closed; the relay stays ready.
    assert_eq!(
        app.get("/api/v1/devices", Some(&app.admin_token)).await.0,
        200
    );
    assert!(app.state.limits.limiter.degraded());
    let (_, health) = admin_health(&app).await;
    assert_eq!(component(&health, "ratelimit")["status"], "degraded");
    assert_eq!(app.get(&own, Some(&device.access_token)).await.0, 503);
    assert_eq!(app.get("/health/ready", None).await.0, 200);
    app.clock.advance(PERIOD);
    admin_health(&app).await;
    assert_eq!(transitions(&log, "redis").len(), 1);

    // Redis is back: nothing to restart.
    proxy.up.send_replace(true);
    app.clock.advance(PERIOD);
    let (_, health) = admin_health(&app).await;
    assert_eq!(component(&health, "redis")["status"], "healthy", "{health}");
    assert_eq!(
        app.get("/api/v1/devices", Some(&app.admin_token)).await.0,
        200
    );
    assert!(!app.state.limits.limiter.degraded());
    assert_eq!(app.get(&own, Some(&device.access_token)).await.0, 200);
    let (status, health) = admin_health(&app).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(gauge(&app, "redis"), 1);
    let lines = transitions(&log, "redis");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (&lines[0]["level"], &lines[0]["to"]),
        (&json!("WARN"), &json!("unhealthy"))
    );
    assert_eq!(
        (&lines[1]["level"], &lines[1]["to"]),
        (&json!("INFO"), &json!("healthy"))
    );
}
