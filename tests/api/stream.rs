//! Tests: the device stream over Server-Sent Events (`GET /api/v1/stream`) and acks over HTTP
//! (`POST /api/v1/acks`): backlog, order, redelivery, acks, revocation and token expiry.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, wait_for_delivery_status, Device, TestApp};

/// An open event stream, read event by event.
struct Stream {
    body: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>,
    >,
    buffer: String,
}

impl Stream {
    async fn open(app: &TestApp, token: &str) -> Self {
        let response = app
            .client
            .get(format!("{}/api/v1/stream", app.address))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        Self {
            body: Box::pin(response),
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped): its name and JSON data.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(d).expect("JSON data"));
                    }
                }
                if let (Some(name), Some(data)) = (name, data) {
                    return (name, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream is open")
                .expect("a chunk");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next `notifications` event's items.
    async fn items(&mut self) -> Vec<Value> {
        let (name, data) = self.next().await;
        assert_eq!(name, "notifications", "{data}");
        assert_eq!(data["type"], "notifications");
        data["items"].as_array().unwrap().clone()
    }
}

async fn ack(app: &TestApp, device: &Device, ids: &[&str]) -> u16 {
    app.post(
        "/api/v1/acks",
        Some(&device.access_token),
        &json!({ "ids": ids }),
    )
    .await
    .0
}

#[actix_web::test]
async fn a_stream_gets_the_backlog_in_priority_order_then_live_ones_and_acks_settle_them() {
    let app = spawn_app().await;
    let device = app.pair_device("browser").await;
    let low = app
        .publish(json!({"title": "low", "priority": "low"}))
        .await;
    let critical = app
        .publish(json!({"title": "critical", "priority": "critical"}))
        .await;

    let mut stream = Stream::open(&app, &device.access_token).await;
    let (name, hello) = stream.next().await;
    assert_eq!(
        (name.as_str(), hello["deviceId"].as_str()),
        ("hello", Some(device.id.as_str()))
    );
    let mut backlog = Vec::new();
    while backlog.len() < 2 {
        backlog.extend(stream.items().await);
    }
    let titles: Vec<&str> = backlog
        .iter()
        .map(|i| i["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["critical", "low"], "highest priority first");

    let live = app.publish(json!({"title": "live"})).await;
    let items = stream.items().await;
    assert_eq!(items[0]["id"], live["id"]);

    let ids = [
        critical["id"].as_str().unwrap(),
        low["id"].as_str().unwrap(),
        live["id"].as_str().unwrap(),
    ];
    assert_eq!(ack(&app, &device, &ids).await, 204);
    for id in ids {
        wait_for_delivery_status(&app, id, "acked").await;
    }
}

#[actix_web::test]
async fn what_a_stream_was_sent_and_did_not_ack_comes_again_on_the_next_stream() {
    let app = spawn_app().await;
    let device = app.pair_device("browser").await;
    let mut first = Stream::open(&app, &device.access_token).await;
    first.next().await; // hello
    let published = app.publish(json!({"title": "once more"})).await;
    assert_eq!(first.items().await[0]["id"], published["id"]);
    drop(first);

    // The relay notices the client left at its next heartbeat, or when it writes to it.
    let mut second = Stream::open(&app, &device.access_token).await;
    second.next().await;
    let again = loop {
        // Until the first stream is seen gone, its delivery waits for the ack timeout or for the
        // device to go offline; a heartbeat tick lets the relay notice.
        app.clock.advance(Duration::from_secs(31));
        let (name, data) = second.next().await;
        if name == "notifications" {
            break data["items"].as_array().unwrap().clone();
        }
    };
    assert_eq!(again[0]["id"], published["id"]);
}

#[actix_web::test]
async fn only_a_device_may_stream_or_ack_and_bad_acks_are_refused() {
    let app = spawn_app().await;
    let device = app.pair_device("browser").await;
    let res = app
        .client
        .get(format!("{}/api/v1/stream", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let (status, _) = app.get("/api/v1/stream", Some(&app.admin_token)).await;
    assert_eq!(status, 403);
    let (status, _) = app
        .post(
            "/api/v1/acks",
            Some(&app.admin_token),
            &json!({"ids": ["ntf_01J00000000000000000000000"]}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .post(
            "/api/v1/acks",
            Some(&device.access_token),
            &json!({"ids": ["not-an-id"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "ids[0]");
    let (status, _) = app
        .post(
            "/api/v1/acks",
            Some(&device.access_token),
            &json!({"ids": []}),
        )
        .await;
    assert_eq!(status, 400);
}

#[actix_web::test]
async fn a_revoked_device_and_an_expired_token_end_the_stream_with_a_close_event() {
    let app = spawn_app().await;
    let revoked = app.pair_device("revoked").await;
    let expiring = app.pair_device("expiring").await;
    let mut doomed = Stream::open(&app, &revoked.access_token).await;
    doomed.next().await;
    assert_eq!(
        app.delete(
            &format!("/api/v1/devices/{}", revoked.id),
            Some(&app.admin_token)
        )
        .await,
        204
    );
    let (name, data) = doomed.next().await;
    assert_eq!(
        (name.as_str(), data["code"].as_u64()),
        ("close", Some(4003))
    );

    let mut ending = Stream::open(&app, &expiring.access_token).await;
    ending.next().await;
    app.clock.advance(Duration::from_secs(3_601));
    let (name, data) = loop {
        let (name, data) = ending.next().await;
        if name == "close" {
            break (name, data);
        }
        app.clock.advance(Duration::from_secs(30));
    };
    assert_eq!(
        (name.as_str(), data["code"].as_u64()),
        ("close", Some(4001))
    );
    assert_eq!(data["reason"], "token expired");
}
