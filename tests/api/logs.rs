//! Logs you can follow: handler events carry their request's `request_id`, socket open and close
//! carry the socket id, device id and close code, and one notification can be followed by its id
//! from publish through delivery to ack. The relay logs its JSON format into a capture here.

use awc::http::Method;
use serde_json::{json, Value};

use beepmyphone::crypto::secrets::secret_string;
use beepmyphone::security::admins;
use beepmyphone::security::passwords::Bcrypt;

use crate::helpers::{
    spawn_app_with_log, start_in_with_log, test_settings, wait_for_delivery_status, CapturedLog,
    TestApp,
};

/// POSTs JSON with our own `X-Request-Id`; returns status and body.
async fn post_traced(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    request_id: &str,
    body: &Value,
) -> (u16, Value) {
    let mut res = app
        .request(Method::POST, path, token)
        .insert_header(("X-Request-Id", request_id))
        .send_json(body)
        .await
        .expect("request");
    let bytes = res.body().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (res.status().as_u16(), body)
}

/// DELETE with our own `X-Request-Id`; returns the status.
async fn delete_traced(app: &TestApp, path: &str, request_id: &str) -> u16 {
    app.request(Method::DELETE, path, Some(&app.admin_token))
        .insert_header(("X-Request-Id", request_id))
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// The single line with `msg`, asserting it is there exactly once.
fn only(log: &CapturedLog, msg: &str) -> Value {
    let lines = log.with_msg(msg);
    assert_eq!(lines.len(), 1, "one {msg:?} line: {lines:?}");
    lines.into_iter().next().unwrap()
}

#[actix_rt::test]
async fn handler_events_carry_the_request_id() {
    let (app, log) = spawn_app_with_log().await;

    // A device pairs (anonymous request).
    let code = app.pairing_code().await;
    let (status, paired) = post_traced(
        &app,
        "/api/v1/devices/pair",
        None,
        "trace-pair",
        &json!({"code": code, "name": "phone", "platform": "android"}),
    )
    .await;
    assert_eq!(status, 201, "{paired}");
    let device = paired["deviceId"].as_str().unwrap();
    let line = only(&log, "device paired");
    assert_eq!(line["request_id"], "trace-pair", "{line}");
    assert_eq!(line["device"], device, "{line}");

    // An admin logs in (password, bcrypt cost 4 through the library).
    let store = app.state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = store.conn().unwrap();
        let bcrypt = Bcrypt::new(4, true).unwrap();
        admins::add(
            &mut conn,
            &bcrypt,
            "alice",
            &secret_string("correct horse battery staple".into()),
            chrono::Utc::now().timestamp_millis(),
        )
        .unwrap();
    })
    .await
    .unwrap();
    let (status, body) = post_traced(
        &app,
        "/api/v1/auth/login",
        None,
        "trace-login",
        &json!({"username": "alice", "password": "correct horse battery staple"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let line = only(&log, "admin logged in");
    assert_eq!(line["request_id"], "trace-login", "{line}");
    assert_eq!(line["admin"], "alice", "{line}");

    // A refused login is logged with its request too.
    let (status, _) = post_traced(
        &app,
        "/api/v1/auth/login",
        None,
        "trace-bad-login",
        &json!({"username": "alice", "password": "wrong"}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        only(&log, "admin login refused")["request_id"],
        "trace-bad-login"
    );

    // An API token is created and deleted; a device is deleted.
    let (status, created) = post_traced(
        &app,
        "/api/v1/tokens",
        Some(&app.admin_token),
        "trace-token",
        &json!({"name": "ci", "scope": "publish"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(only(&log, "api token created")["request_id"], "trace-token");
    let token_id = created["id"].as_str().unwrap();
    assert_eq!(
        delete_traced(&app, &format!("/api/v1/tokens/{token_id}"), "trace-untoken").await,
        204
    );
    assert_eq!(
        only(&log, "api token deleted")["request_id"],
        "trace-untoken"
    );
    assert_eq!(
        delete_traced(&app, &format!("/api/v1/devices/{device}"), "trace-unpair").await,
        204
    );
    assert_eq!(only(&log, "device deleted")["request_id"], "trace-unpair");

    // Without a header the generated id is both in the answer and on the event.
    let (status, response) = app
        .post(
            "/api/v1/notifications",
            Some(&app.admin_token),
            &json!({"title": "t", "body": "b"}),
        )
        .await;
    assert_eq!(status, 202, "{response}");
    let line = only(&log, "notification published");
    let id = line["request_id"].as_str().expect("a request id");
    assert!(id.starts_with("req_"), "{line}");
    let access = log
        .lines()
        .into_iter()
        .filter(|l| l["request_id"] == id)
        .count();
    assert!(access >= 2, "the event and the request line share the id");
}

#[actix_rt::test]
async fn socket_open_and_close_are_logged_with_device_and_code() {
    let (app, log) = spawn_app_with_log().await;
    let device = app.pair_device("phone").await;

    let mut ws = app.connect_device(&device).await;
    let opened = only(&log, "socket opened");
    assert_eq!(opened["level"], "INFO", "{opened}");
    assert_eq!(opened["device_id"], device.id.as_str(), "{opened}");
    let socket = opened["socket"].as_u64().expect("a socket id");

    // Deleting the device closes its socket with 4003.
    assert_eq!(
        app.delete(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token)
        )
        .await,
        204
    );
    assert_eq!(ws.expect_close().await, Some(4003));
    let closed = only(&log, "socket closed");
    assert_eq!(closed["level"], "INFO", "{closed}");
    assert_eq!(closed["socket"], socket, "{closed}");
    assert_eq!(closed["device_id"], device.id.as_str(), "{closed}");
    assert_eq!(closed["code"], 4003, "{closed}");

    // A socket that never authenticates is closed too, with no device.
    let mut anonymous = app.connect(None).await;
    anonymous.send_text("not an auth frame").await;
    assert_eq!(anonymous.expect_close().await, Some(4001));
    let closed = log.with_msg("socket closed");
    assert_eq!(closed.len(), 2, "{closed:?}");
    assert_eq!(closed[1]["code"], 4001, "{}", closed[1]);
    assert!(closed[1]["device_id"].is_null(), "{}", closed[1]);
    assert_ne!(closed[1]["socket"], socket);
}

#[actix_rt::test]
async fn one_notification_is_followed_from_publish_to_ack_by_its_id() {
    let (app, log) = spawn_app_with_log().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;

    let (status, published) = post_traced(
        &app,
        "/api/v1/notifications",
        Some(&app.admin_token),
        "trace-publish",
        &json!({"title": "Build", "body": "green"}),
    )
    .await;
    assert_eq!(status, 202, "{published}");
    let id = published["id"].as_str().unwrap().to_owned();
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], id.as_str());
    ws.ack(&[&id]).await;
    wait_for_delivery_status(&app, &id, "acked").await;

    let trail: Vec<Value> = log
        .lines()
        .into_iter()
        .filter(|l| l["notification_id"] == id.as_str())
        .collect();
    let mut msgs: Vec<&str> = trail.iter().map(|l| l["msg"].as_str().unwrap()).collect();
    // The publish line is written when the publisher is answered, which is after the queue
    // stored the notification and handed it on: an online device's delivery may come first.
    msgs.sort_unstable();
    assert_eq!(
        msgs,
        [
            "ack received",
            "delivering",
            "notification committed",
            "notification published"
        ],
        "{trail:?}"
    );
    let line = |msg: &str| trail.iter().find(|l| l["msg"] == msg).unwrap();
    let publish = line("notification published");
    assert_eq!(publish["level"], "INFO", "{publish}");
    assert_eq!(publish["request_id"], "trace-publish", "{publish}");
    assert_eq!(publish["targets"], 1, "{publish}");
    assert_eq!(publish["duplicate"], false, "{publish}");
    for msg in ["delivering", "ack received"] {
        let line = line(msg);
        assert_eq!(line["level"], "DEBG", "{line}");
        assert_eq!(line["device_id"], device.id.as_str(), "{line}");
    }
    let position = |msg: &str| trail.iter().position(|l| l["msg"] == msg).unwrap();
    assert!(
        position("delivering") < position("ack received"),
        "{trail:?}"
    );
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// POSTs a notification with a `traceparent` header (if any); returns the status, the answer's
/// `traceparent` and the body.
async fn publish_traced(app: &TestApp, traceparent: Option<&str>) -> (u16, String, Value) {
    let mut req = app.request(
        Method::POST,
        "/api/v1/notifications",
        Some(&app.admin_token),
    );
    if let Some(traceparent) = traceparent {
        req = req.insert_header(("traceparent", traceparent));
    }
    let mut res = req
        .send_json(&json!({"title": "Build", "body": "green"}))
        .await
        .expect("request");
    let answer = res
        .headers()
        .get("traceparent")
        .expect("a traceparent answer")
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = res.body().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (res.status().as_u16(), answer, body)
}

#[actix_rt::test]
async fn one_trace_id_follows_a_notification_from_publish_to_ack() {
    let (app, log) = spawn_app_with_log().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;

    let incoming = format!("00-{TRACE}-00f067aa0ba902b7-01");
    let (status, answer, published) = publish_traced(&app, Some(&incoming)).await;
    assert_eq!(status, 202, "{published}");
    // The answer continues the trace with the relay's own span, sampled as it came.
    let parts: Vec<&str> = answer.split('-').collect();
    assert_eq!(parts.len(), 4, "{answer}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{answer}"
    );
    assert_eq!(parts[2].len(), 16, "{answer}");
    assert_ne!(parts[2], "00f067aa0ba902b7", "a new span id: {answer}");

    let id = published["id"].as_str().unwrap().to_owned();
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], id.as_str());
    ws.ack(&[&id]).await;
    wait_for_delivery_status(&app, &id, "acked").await;

    let traced: Vec<Value> = log
        .lines()
        .into_iter()
        .filter(|l| l["trace_id"] == TRACE)
        .collect();
    let mut msgs: Vec<&str> = traced.iter().map(|l| l["msg"].as_str().unwrap()).collect();
    msgs.sort_unstable();
    assert_eq!(
        msgs,
        [
            "ack received",
            "delivering",
            "notification committed",
            "notification published",
            "request"
        ],
        "{traced:?}"
    );
    for line in &traced {
        let msg = line["msg"].as_str().unwrap();
        if msg != "request" {
            assert_eq!(line["notification_id"], id.as_str(), "{line}");
        }
    }
    // The publish request's lines carry both ids; nothing else is on this trace.
    let request_id = traced
        .iter()
        .find(|l| l["msg"] == "request")
        .and_then(|l| l["request_id"].as_str())
        .unwrap();
    assert_eq!(
        only(&log, "notification published")["request_id"],
        request_id
    );
}

#[actix_rt::test]
async fn without_a_valid_traceparent_the_request_starts_its_own_trace() {
    let (app, log) = spawn_app_with_log().await;
    let mut traces = Vec::new();
    for header in [
        None,
        Some(format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32))),
        Some(format!("00-{}-00f067aa0ba902b7-01", TRACE.to_uppercase())),
        Some("garbage".to_owned()),
    ] {
        let (status, answer, _) = publish_traced(&app, header.as_deref()).await;
        assert_eq!(status, 202);
        let parts: Vec<&str> = answer.split('-').collect();
        assert_eq!(parts.len(), 4, "{answer}");
        assert_eq!((parts[0], parts[3]), ("00", "00"), "not sampled: {answer}");
        let trace = parts[1].to_owned();
        assert_eq!(trace.len(), 32);
        assert!(trace
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(trace, TRACE.to_lowercase());
        assert_ne!(trace, "0".repeat(32));
        traces.push(trace);
    }
    let published = log.with_msg("notification published");
    let logged: Vec<&str> = published
        .iter()
        .map(|l| l["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        logged, traces,
        "each publish line carries its answer's trace"
    );
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 4, "a new trace each time");
    // Errors carry it too: a rejected request's line has the trace of its answer.
    let mut res = app
        .request(Method::GET, "/api/v1/devices", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let answer = res
        .headers()
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let _ = res.body().await;
    let trace = answer.split('-').nth(1).unwrap();
    assert!(
        log.lines()
            .iter()
            .any(|l| l["trace_id"] == trace && l["status"] == 401),
        "{answer}"
    );
}

#[actix_rt::test]
async fn a_redelivery_after_a_restart_keeps_the_trace_id() {
    let (app, _) = spawn_app_with_log().await;
    let device = app.pair_device("phone").await;
    let (status, _, published) =
        publish_traced(&app, Some(&format!("00-{TRACE}-00f067aa0ba902b7-01"))).await;
    assert_eq!(status, 202, "{published}");
    let id = published["id"].as_str().unwrap().to_owned();

    let dir = app.stop().await;
    let settings = test_settings(dir.path());
    let (app, log) = start_in_with_log(dir, settings).await;
    let mut ws = app.connect_device(&device).await;
    assert_eq!(ws.receive(1).await[0]["id"], id.as_str());
    let delivering = only(&log, "delivering");
    assert_eq!(delivering["notification_id"], id.as_str(), "{delivering}");
    assert_eq!(
        delivering["trace_id"], TRACE,
        "read back from the store: {delivering}"
    );
    ws.ack(&[&id]).await;
    wait_for_delivery_status(&app, &id, "acked").await;
    assert_eq!(only(&log, "ack received")["trace_id"], TRACE);
}
