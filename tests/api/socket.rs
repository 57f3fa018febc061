//! Tests: the device WebSocket: authentication (header, first frame, in-band renewal), close codes
//! (4001, 4003, 1008, 1009, 1001), error frames, heartbeats on the relay's manual clock, and the
//! auth timeout.
//!
//! These tests read raw frames through [`RawWs`], which never answers pings by itself, so that
//! heartbeat tests decide exactly which frames the relay receives.

use std::time::Duration;

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use beepmyphone_actors::clock::Clock;
use beepmyphone_actors::model::rfc3339;

use crate::helpers::{spawn_app, spawn_app_with, Device, TestApp};

// ---------------------------------------------------------------------------------------------
// Raw frame access
// ---------------------------------------------------------------------------------------------

/// A device socket that shows every frame and answers nothing on its own.
struct RawWs {
    framed: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
}

/// What the relay sent, as the tests care about it.
#[derive(Debug)]
enum Got {
    Json(Value),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame and its code.
    Close(Option<u16>),
    /// The connection ended without a close frame.
    End,
}

impl RawWs {
    /// Opens `/api/v1/ws`, with a header token if given.
    async fn open(app: &TestApp, token: Option<&str>) -> Self {
        let mut req = app
            .client
            .ws(format!("ws://127.0.0.1:{}/api/v1/ws", app.port))
            .max_frame_size(16 * 1024 * 1024);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let (res, framed) = req.connect().await.expect("websocket connects");
        assert_eq!(res.status().as_u16(), 101);
        Self { framed }
    }

    /// Opens the socket with the device's header token and checks `hello`.
    async fn device(app: &TestApp, device: &Device) -> Self {
        let mut ws = Self::open(app, Some(&device.access_token)).await;
        let hello = ws.next_json().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["deviceId"], device.id.as_str(), "{hello}");
        ws
    }

    /// The next frame; panics after 10 s of silence.
    async fn next(&mut self) -> Got {
        let frame = tokio::time::timeout(Duration::from_secs(10), self.framed.next())
            .await
            .expect("a frame within 10 s");
        match frame {
            None => Got::End,
            // The relay may drop the connection right after its close frame.
            Some(Err(_)) => Got::End,
            Some(Ok(ws::Frame::Text(bytes))) => {
                Got::Json(serde_json::from_slice(&bytes).expect("a JSON text frame"))
            }
            Some(Ok(ws::Frame::Ping(bytes))) => Got::Ping(bytes.to_vec()),
            Some(Ok(ws::Frame::Pong(bytes))) => Got::Pong(bytes.to_vec()),
            Some(Ok(ws::Frame::Close(reason))) => Got::Close(reason.map(|r| u16::from(r.code))),
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
        }
    }

    /// The next frame, which must be a JSON text frame.
    async fn next_json(&mut self) -> Value {
        match self.next().await {
            Got::Json(v) => v,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next frame must be a close frame (or the end of the connection); returns its code.
    async fn expect_close_now(&mut self) -> Option<u16> {
        match self.next().await {
            Got::Close(code) => code,
            Got::End => None,
            other => panic!("expected the socket to close, got {other:?}"),
        }
    }

    /// Reads until the socket closes, collecting JSON frames on the way (pings are not answered).
    async fn close_after(&mut self) -> (Option<u16>, Vec<Value>) {
        let mut frames = Vec::new();
        loop {
            match self.next().await {
                Got::Json(v) => frames.push(v),
                Got::Ping(_) | Got::Pong(_) => {}
                Got::Close(code) => return (code, frames),
                Got::End => return (None, frames),
            }
        }
    }

    /// Sends a message.
    async fn send(&mut self, message: ws::Message) {
        self.framed.send(message).await.expect("send");
    }

    /// Sends a text frame.
    async fn text(&mut self, text: &str) {
        self.send(ws::Message::Text(text.to_owned().into())).await;
    }

    /// Sends a JSON frame.
    async fn json(&mut self, value: &Value) {
        self.text(&value.to_string()).await;
    }

    /// Round trip: sends a ping with a unique payload and reads until its pong. Everything the relay
    /// handled before that ping has been handled when this returns. Returns the frames seen on the
    /// way; panics if the socket closes.
    async fn sync(&mut self) -> Vec<Got> {
        let payload = ulid::Ulid::new().to_string().into_bytes();
        self.send(ws::Message::Ping(payload.clone().into())).await;
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Got::Pong(p) if p == payload => return seen,
                Got::Close(code) => panic!("socket closed ({code:?}) during a round trip"),
                Got::End => panic!("connection ended during a round trip"),
                other => seen.push(other),
            }
        }
    }
}

/// The relay's heartbeat period.
fn heartbeat(app: &TestApp) -> Duration {
    Duration::from_secs(app.state.settings.websocket.heartbeat_seconds)
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn header_auth_gets_hello_with_device_heartbeat_and_server_time() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::open(&app, Some(&device.access_token)).await;
    let hello = ws.next_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["deviceId"], device.id.as_str());
    assert_eq!(hello["heartbeatSeconds"], 30);
    // The relay's (manual) clock has not moved since the start.
    assert_eq!(hello["serverTime"], rfc3339(app.clock.now_ms()));
    let time = hello["serverTime"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{time}");
    assert!(time.ends_with('Z'), "{time}");
    // Nothing else arrives, and the socket is open.
    assert!(ws.sync().await.is_empty());
    // The device shows as online.
    let (status, body) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "online", "{body}");
}

#[actix_web::test]
async fn hello_reports_the_configured_heartbeat() {
    let app = spawn_app_with(|s| s.websocket.heartbeat_seconds = 45).await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::open(&app, None).await;
    ws.json(&json!({"type": "auth", "token": device.access_token}))
        .await;
    let hello = ws.next_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["heartbeatSeconds"], 45, "{hello}");
}

#[actix_web::test]
async fn first_frame_auth_without_header_works() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::open(&app, None).await;
    // Nothing is sent before authentication.
    assert!(ws.sync().await.is_empty());
    ws.json(&json!({"type": "auth", "token": device.access_token}))
        .await;
    let hello = ws.next_json().await;
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["deviceId"], device.id.as_str());
    assert_eq!(hello["heartbeatSeconds"], 30);
    assert!(hello["serverTime"].as_str().is_some());
    // The socket delivers.
    let id = app
        .publish(json!({"title": "via frame auth", "targets": [device.id]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let frame = ws.next_json().await;
    assert_eq!(frame["type"], "notifications", "{frame}");
    assert_eq!(frame["items"][0]["id"], id.as_str());
}

#[actix_web::test]
async fn invalid_header_token_closes_with_4001() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut forged: Vec<String> = device.access_token.split('.').map(String::from).collect();
    forged[2] = forged[2].chars().rev().collect();
    let forged = forged.join(".");
    for token in [
        "garbage",
        forged.as_str(),
        app.admin_token.as_str(), // an API token is not a device token
    ] {
        let mut ws = RawWs::open(&app, Some(token)).await;
        assert_eq!(ws.expect_close_now().await, Some(4001), "{token}");
    }
}

#[actix_web::test]
async fn garbage_token_in_first_frame_closes_with_4001() {
    let app = spawn_app().await;
    for token in ["garbage", "", "bmp_nope", "a.b.c"] {
        let mut ws = RawWs::open(&app, None).await;
        ws.json(&json!({"type": "auth", "token": token})).await;
        assert_eq!(ws.expect_close_now().await, Some(4001), "{token:?}");
    }
}

#[actix_web::test]
async fn a_non_auth_first_frame_closes_with_4001() {
    let app = spawn_app().await;
    let ack = json!({"type": "ack", "ids": [format!("ntf_{}", ulid::Ulid::new())]}).to_string();
    let firsts = [
        ws::Message::Text(ack.into()),
        ws::Message::Text("hello?".into()),
        ws::Message::Text(r#"{"type":"dance"}"#.into()),
        ws::Message::Text(r#"{"type":"auth"}"#.into()),
        ws::Message::Binary(bytes::Bytes::from_static(b"\x00\x01")),
    ];
    for first in firsts {
        let shown = format!("{first:?}");
        let mut ws = RawWs::open(&app, None).await;
        ws.send(first).await;
        assert_eq!(ws.expect_close_now().await, Some(4001), "{shown}");
    }
}

#[actix_web::test]
async fn a_deleted_device_is_closed_with_4003_and_cannot_reconnect() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let other = app.pair_device("tablet").await;
    let mut ws = RawWs::device(&app, &device).await;
    let mut bystander = RawWs::device(&app, &other).await;
    assert_eq!(
        app.delete(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token)
        )
        .await,
        204
    );
    assert_eq!(ws.expect_close_now().await, Some(4003));
    // Its token has not expired, but the device is gone: header and first frame both get 4003.
    let mut again = RawWs::open(&app, Some(&device.access_token)).await;
    assert_eq!(again.expect_close_now().await, Some(4003));
    let mut again = RawWs::open(&app, None).await;
    again
        .json(&json!({"type": "auth", "token": device.access_token}))
        .await;
    assert_eq!(again.expect_close_now().await, Some(4003));
    // The other device's socket is untouched.
    assert!(bystander.sync().await.is_empty());
}

#[actix_web::test]
async fn in_band_reauth_with_a_fresh_token_keeps_the_socket_open() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    let (status, fresh) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": device.refresh_token}),
        )
        .await;
    assert_eq!(status, 200, "{fresh}");
    let token = fresh["accessToken"].as_str().unwrap();
    assert_ne!(token, device.access_token);
    ws.json(&json!({"type": "auth", "token": token})).await;
    // No second hello, no error, no close.
    let seen = ws.sync().await;
    assert!(seen.is_empty(), "{seen:?}");
    // And it still delivers.
    let id = app
        .publish(json!({"title": "after renewal", "targets": [device.id]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let frame = ws.next_json().await;
    assert_eq!(frame["type"], "notifications", "{frame}");
    assert_eq!(frame["items"][0]["id"], id.as_str());
}

#[actix_web::test]
async fn in_band_reauth_as_another_device_or_with_garbage_closes_with_4001() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let other = app.pair_device("tablet").await;
    let mut ws = RawWs::device(&app, &device).await;
    ws.json(&json!({"type": "auth", "token": other.access_token}))
        .await;
    assert_eq!(ws.expect_close_now().await, Some(4001));
    let mut ws = RawWs::device(&app, &device).await;
    ws.json(&json!({"type": "auth", "token": "garbage"})).await;
    assert_eq!(ws.expect_close_now().await, Some(4001));
}

#[actix_web::test]
async fn the_auth_timeout_closes_an_unauthenticated_socket_with_4001() {
    let app = spawn_app_with(|s| s.websocket.auth_timeout_seconds = 1).await;
    let device = app.pair_device("phone").await;
    // Opened at the same time: one authenticates by frame, one by header, one never.
    let mut by_frame = RawWs::open(&app, None).await;
    let mut by_header = RawWs::device(&app, &device).await;
    let mut silent = RawWs::open(&app, None).await;
    by_frame
        .json(&json!({"type": "auth", "token": device.access_token}))
        .await;
    assert_eq!(by_frame.next_json().await["type"], "hello");
    // The silent one is closed (pings alone do not authenticate).
    assert!(silent.sync().await.is_empty());
    assert_eq!(silent.expect_close_now().await, Some(4001));
    // The authenticated ones outlive the timeout.
    assert!(by_frame.sync().await.is_empty());
    assert!(by_header.sync().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Bad frames
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn bad_frames_get_error_frames_and_the_tenth_closes_with_1008() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    let bad: [ws::Message; 9] = [
        ws::Message::Text("not json".into()),
        ws::Message::Text("[1,2,3]".into()),
        ws::Message::Text(r#"{"type":"dance"}"#.into()),
        ws::Message::Text(r#"{"ids":["x"]}"#.into()),
        ws::Message::Text(r#"{"type":"ack"}"#.into()),
        ws::Message::Text(r#"{"type":"ack","ids":[],"extra":1}"#.into()),
        ws::Message::Text(r#"{"type":"ack","ids":[]}"#.into()),
        ws::Message::Text(r#"{"type":"ack","ids":"ntf_x"}"#.into()),
        ws::Message::Binary(bytes::Bytes::from_static(b"\xff")),
    ];
    for (i, message) in bad.into_iter().enumerate() {
        let binary = matches!(message, ws::Message::Binary(_));
        ws.send(message).await;
        let frame = ws.next_json().await;
        assert_eq!(frame["type"], "error", "frame {i}: {frame}");
        let code = frame["code"].as_str().expect("code");
        assert_eq!(
            code,
            if binary { "UNSUPPORTED" } else { "BAD_FRAME" },
            "{frame}"
        );
        let message = frame["message"].as_str().expect("message");
        assert!(!message.is_empty(), "{frame}");
        assert!(!message.contains(" at line "), "{frame}");
        assert_eq!(frame.as_object().unwrap().len(), 3, "{frame}");
    }
    // Nine bad frames: still open, still delivering.
    assert!(ws.sync().await.is_empty());
    // The tenth: an error frame, then close 1008.
    ws.text("the tenth").await;
    let (code, frames) = ws.close_after().await;
    assert_eq!(code, Some(1008));
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error", "{frames:?}");
}

#[actix_web::test]
async fn an_ack_with_a_malformed_id_gets_an_error_frame() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    let dev = format!("dev_{}", ulid::Ulid::new());
    for ids in [json!(["nope"]), json!([dev]), json!(["ntf_"]), json!([42])] {
        ws.json(&json!({"type": "ack", "ids": ids})).await;
        let frame = ws.next_json().await;
        assert_eq!(frame["type"], "error", "{ids}: {frame}");
        assert_eq!(frame["code"], "BAD_FRAME", "{frame}");
        assert!(
            frame["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{frame}"
        );
    }
    // A well-formed id of an unknown notification is not an error.
    ws.json(&json!({"type": "ack", "ids": [format!("ntf_{}", ulid::Ulid::new())]}))
        .await;
    assert!(ws.sync().await.is_empty());
    // Too many ids at once.
    let ids: Vec<String> = (0..1001)
        .map(|_| format!("ntf_{}", ulid::Ulid::new()))
        .collect();
    ws.json(&json!({"type": "ack", "ids": ids})).await;
    let frame = ws.next_json().await;
    assert_eq!(frame["code"], "BAD_FRAME", "{frame}");
}

#[actix_web::test]
async fn a_frame_over_max_frame_bytes_closes_with_1009() {
    let app = spawn_app().await;
    let max = app.state.settings.websocket.max_frame_bytes;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    // Exactly at the limit: read, judged bad, answered with an error frame.
    ws.text(&"x".repeat(max)).await;
    let frame = ws.next_json().await;
    assert_eq!(frame["code"], "BAD_FRAME", "{frame}");
    ws.text(&"x".repeat(max + 1)).await;
    let (code, frames) = ws.close_after().await;
    assert_eq!(code, Some(1009), "{frames:?}");
    assert!(frames.is_empty(), "{frames:?}");
}

#[actix_web::test]
async fn a_fragmented_message_over_max_frame_bytes_closes_with_1009() {
    let app = spawn_app().await;
    let max = app.state.settings.websocket.max_frame_bytes;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    let half = bytes::Bytes::from("y".repeat(max / 2 + 1));
    ws.send(ws::Message::Continuation(actix_ws::Item::FirstText(
        half.clone(),
    )))
    .await;
    ws.send(ws::Message::Continuation(actix_ws::Item::Last(half)))
        .await;
    let (code, frames) = ws.close_after().await;
    assert_eq!(code, Some(1009), "{frames:?}");
}

// ---------------------------------------------------------------------------------------------
// Heartbeats, on the relay's manual clock
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn no_pong_within_two_heartbeats_closes_the_socket() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    // One jump past two intervals: the next tick finds the device silent for too long.
    app.clock
        .advance(2 * heartbeat(&app) + Duration::from_secs(1));
    let (code, frames) = ws.close_after().await;
    assert_eq!(code, Some(1001));
    assert!(frames.is_empty(), "{frames:?}");
    // The device is offline again.
    let mut offline = false;
    for _ in 0..200 {
        let (_, body) = app
            .get(
                &format!("/api/v1/devices/{}", device.id),
                Some(&app.admin_token),
            )
            .await;
        if body["status"] == "offline" {
            offline = true;
            break;
        }
        // Bounded retry: the socket actor unregisters by message after it stopped.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        offline,
        "the device is shown offline after the heartbeat timeout"
    );
}

#[actix_web::test]
async fn the_server_pings_each_heartbeat_and_closes_after_two_unanswered() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    let beat = heartbeat(&app);
    // Not yet a heartbeat: no ping.
    app.clock.advance(beat - Duration::from_secs(1));
    let seen = ws.sync().await;
    assert!(seen.is_empty(), "no ping before a heartbeat: {seen:?}");
    // Now the sync frame above counts as the device's last frame; go one beat past it in two
    // steps, leaving the ping unanswered.
    app.clock.advance(Duration::from_secs(2));
    assert!(
        matches!(ws.next().await, Got::Ping(_)),
        "a ping on the tick"
    );
    app.clock.advance(beat);
    match ws.next().await {
        Got::Ping(_) => {}
        other => panic!("one interval after the last frame: another ping, got {other:?}"),
    }
    app.clock.advance(beat);
    let (code, frames) = ws.close_after().await;
    assert_eq!(code, Some(1001));
    assert!(frames.is_empty(), "{frames:?}");
}

#[actix_web::test]
async fn spread_heartbeats_ping_each_socket_once_in_the_first_interval_not_all_at_once() {
    let app = spawn_app_with(|s| s.websocket.heartbeat_spread = true).await;
    let beat = heartbeat(&app);
    let mut sockets = Vec::new();
    for i in 0..16 {
        let device = app.pair_device(&format!("phone {i}")).await;
        sockets.push(RawWs::device(&app, &device).await);
    }
    let pings = |seen: &[Got]| seen.iter().filter(|g| matches!(g, Got::Ping(_))).count();
    // Half an interval: some sockets have had their first ping, not all.
    app.clock.advance(beat / 2);
    let mut early = Vec::new();
    for ws in &mut sockets {
        // Two round trips: the relay has handled the tick by the end of the second.
        let mut seen = ws.sync().await;
        seen.extend(ws.sync().await);
        early.push(pings(&seen));
    }
    let pinged = early.iter().filter(|n| **n == 1).count();
    assert!(early.iter().all(|n| *n <= 1), "{early:?}");
    assert!(
        (1..16).contains(&pinged),
        "16 sockets opened together: some, not all, pinged in the first half: {early:?}"
    );
    // The whole interval: every socket has had exactly one ping.
    app.clock.advance(beat / 2);
    for (i, ws) in sockets.iter_mut().enumerate() {
        let mut seen = ws.sync().await;
        seen.extend(ws.sync().await);
        assert_eq!(early[i] + pings(&seen), 1, "socket {i}: {seen:?}");
    }
}

#[actix_web::test]
async fn a_socket_that_answers_pings_stays_open() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    let beat = heartbeat(&app) + Duration::from_secs(1);
    // Five heartbeats, each answered: far past two intervals in total.
    for round in 0..5 {
        app.clock.advance(beat);
        match ws.next().await {
            Got::Ping(payload) => ws.send(ws::Message::Pong(payload.into())).await,
            other => panic!("round {round}: expected a ping, got {other:?}"),
        }
        let seen = ws.sync().await;
        assert!(seen.is_empty(), "round {round}: {seen:?}");
    }
    // Still open and delivering.
    let id = app
        .publish(json!({"title": "still here", "targets": [device.id]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let frame = ws.next_json().await;
    assert_eq!(frame["items"][0]["id"], id.as_str(), "{frame}");
}

#[actix_web::test]
async fn an_expired_session_is_closed_with_4001_on_the_next_tick() {
    // Heartbeats far apart, so that the only reason to close is the token's expiry (1 h).
    let app = spawn_app_with(|s| s.websocket.heartbeat_seconds = 2_000).await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    app.clock.advance(Duration::from_secs(2_001));
    match ws.next().await {
        Got::Ping(payload) => ws.send(ws::Message::Pong(payload.into())).await,
        other => panic!("expected a ping, got {other:?}"),
    }
    assert!(ws.sync().await.is_empty());
    // 4002 s after the token was issued: past its one-hour lifetime.
    app.clock.advance(Duration::from_secs(2_001));
    assert_eq!(ws.expect_close_now().await, Some(4001));
}

// ---------------------------------------------------------------------------------------------
// Acks and the inbound frame limit
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_device_that_acks_every_notification_on_its_own_is_never_closed_for_it() {
    // Default frame limit (50/s, burst 100); one frame per notification. 300 acks in their own
    // frames arrive far faster than 50/s, but each acks something the relay sent and so is free.
    let app = spawn_app_with(|s| s.delivery.batch_window_ms = 0).await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    let mut published = Vec::new();
    for i in 0..300 {
        let id = app
            .publish(json!({"title": format!("n{i}"), "targets": [device.id]}))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        published.push(id);
    }
    let mut acked = Vec::new();
    while acked.len() < published.len() {
        let frame = match ws.next().await {
            Got::Json(frame) => frame,
            Got::Ping(payload) => {
                ws.send(ws::Message::Pong(payload.into())).await;
                continue;
            }
            other => panic!("after {} acks: {other:?}", acked.len()),
        };
        assert_eq!(frame["type"], "notifications", "{frame}");
        for item in frame["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap().to_owned();
            ws.json(&json!({"type": "ack", "ids": [id]})).await;
            acked.push(id);
        }
    }
    acked.sort();
    let mut expected = published.clone();
    expected.sort();
    assert_eq!(acked, expected);
    // Still open: nothing was closed, and the socket still delivers.
    assert!(ws.sync().await.is_empty());
    let id = app
        .publish(json!({"title": "still here", "targets": [device.id]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let frame = ws.next_json().await;
    assert_eq!(frame["items"][0]["id"], id.as_str(), "{frame}");
    for id in [&published[0], &published[150], &published[299]] {
        crate::helpers::wait_for_delivery_status(&app, id, "acked").await;
    }
}

#[actix_web::test]
async fn acks_of_nothing_outstanding_count_against_the_frame_limit() {
    let app = spawn_app_with(|s| {
        s.limits.ws_frame_burst = 5;
        s.limits.ws_frames_per_second = 1;
    })
    .await;
    let device = app.pair_device("phone").await;
    let mut ws = RawWs::device(&app, &device).await;
    let bogus = json!({"type": "ack", "ids": [format!("ntf_{}", ulid::Ulid::new())]});
    for _ in 0..7 {
        ws.json(&bogus).await;
    }
    let (code, _) = ws.close_after().await;
    assert_eq!(code, Some(4008));
}
