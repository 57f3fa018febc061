//! Publish → deliver → ack, backlog order, redelivery, crash safety, supervision.

use std::time::Duration;

use serde_json::json;

use beepmyphone_actors::queue::InjectFault;

use crate::helpers::{spawn_app, spawn_process, start_in, test_settings, wait_for_delivery_status};

#[actix_web::test]
async fn published_notification_is_delivered_acked_and_shown_acked() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let published = app
        .publish(json!({"title": "Build finished", "body": "main is green", "app": "CI", "priority": "high",
                        "targets": [device.id], "tags": ["ci"], "clickUrl": "https://ci.example/123"}))
        .await;
    assert_eq!(published["status"], "queued");
    assert_eq!(published["targets"], 1);
    let id = published["id"].as_str().unwrap();
    let items = ws.receive(1).await;
    let item = &items[0];
    assert_eq!(item["id"], id);
    assert_eq!(item["title"], "Build finished");
    assert_eq!(item["body"], "main is green");
    assert_eq!(item["app"], "CI");
    assert_eq!(item["priority"], "high");
    assert_eq!(item["tags"], json!(["ci"]));
    assert_eq!(item["clickUrl"], "https://ci.example/123");
    assert!(item["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(item["expiresAt"].as_str().is_some());
    ws.ack(&[id]).await;
    let body = wait_for_delivery_status(&app, id, "acked").await;
    let delivery = &body["deliveries"][0];
    assert_eq!(delivery["deviceId"], device.id.as_str());
    assert_eq!(delivery["attempts"], 1);
    assert!(delivery["ackedAt"].as_str().is_some());
    assert_eq!(body["status"], "acked");
}

#[actix_web::test]
async fn offline_device_gets_its_backlog_highest_priority_first_then_oldest() {
    let app = spawn_app().await;
    let device = app.pair_device("tablet").await;
    let order = [
        "low", "normal", "critical", "high", "normal", "critical", "low",
    ];
    let mut ids = Vec::new();
    for (i, priority) in order.iter().enumerate() {
        let published = app
            .publish(json!({"title": format!("n{i}"), "priority": priority}))
            .await;
        ids.push((
            priority.to_string(),
            i,
            published["id"].as_str().unwrap().to_owned(),
        ));
    }
    let mut ws = app.connect_device(&device).await;
    let items = ws.receive(order.len()).await;
    let got: Vec<String> = items
        .iter()
        .map(|i| i["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, ["n2", "n5", "n3", "n1", "n4", "n0", "n6"]);
}

#[actix_web::test]
async fn unacked_notification_is_delivered_again_after_reconnect() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let id = app.publish(json!({"title": "once"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = ws.receive(1).await;
    assert_eq!(first[0]["id"], id.as_str());
    ws.close().await; // no ack
    let mut again = app.connect_device(&device).await;
    let second = again.receive(1).await;
    assert_eq!(second[0]["id"], id.as_str());
    again.ack(&[&id]).await;
    let body = wait_for_delivery_status(&app, &id, "acked").await;
    assert_eq!(body["deliveries"][0]["attempts"], 2);
}

#[actix_web::test]
async fn unacked_notification_is_sent_again_after_the_ack_timeout() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let id = app.publish(json!({"title": "ack me"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ws.receive(1).await[0]["id"], id.as_str());
    // Past the 30 s ack timeout on the relay's clock: the queue's next tick resends.
    app.clock.advance(Duration::from_secs(31));
    let again = ws.receive(1).await;
    assert_eq!(again[0]["id"], id.as_str());
}

#[actix_web::test]
async fn idempotency_key_returns_the_first_notification() {
    let app = spawn_app().await;
    let _device = app.pair_device("phone").await;
    let first = app
        .publish(json!({"title": "deploy", "idempotencyKey": "deploy-42"}))
        .await;
    let second = app
        .publish(json!({"title": "deploy again", "idempotencyKey": "deploy-42"}))
        .await;
    assert_eq!(first["id"], second["id"]);
    let (_, list) = app
        .get("/api/v1/notifications", Some(&app.admin_token))
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn a_panicking_queue_is_restarted_and_delivery_goes_on() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let pending = app.publish(json!({"title": "before the crash"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.state.graph.queue.do_send(InjectFault);
    // The restarted queue reloads from the store: the earlier notification is still there, and new
    // publishes go through.
    let after = app.publish(json!({"title": "after the crash"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = app.connect_device(&device).await;
    let items = ws.receive(2).await;
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [pending.as_str(), after.as_str()]);
    let (_, health) = app.get("/health", Some(&app.admin_token)).await;
    assert!(health["restarts"].as_u64().unwrap() >= 1, "{health}");
}

#[actix_web::test]
async fn a_restart_on_the_same_data_directory_keeps_devices_tokens_and_backlog() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let id = app.publish(json!({"title": "survives"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = app.stop().await;
    let settings = test_settings(dir.path());
    let app = start_in(dir, settings).await;
    let mut ws = app.connect_device(&device).await;
    assert_eq!(ws.receive(1).await[0]["id"], id.as_str());
}

#[actix_web::test]
async fn kill_9_under_load_loses_nothing_that_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let relay = spawn_process(dir.path());
    let token = std::fs::read_to_string(dir.path().join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let post = |path: &str, body: serde_json::Value| {
        client
            .post(format!("{}{path}", relay.address))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_json(&body)
    };
    let code: serde_json::Value = post("/api/v1/pairing-codes", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paired: serde_json::Value = post(
        "/api/v1/devices/pair",
        json!({"code": code["code"], "name": "phone", "platform": "ios"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    // Publish concurrently; every 202 must survive the kill.
    let mut accepted = std::collections::HashSet::new();
    let total = 400;
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    for i in 0..total {
        in_flight.push(post(
            "/api/v1/notifications",
            json!({"title": format!("n{i}")}),
        ));
    }
    use futures_util::StreamExt;
    while let Some(result) = in_flight.next().await {
        let mut res = result.unwrap();
        assert_eq!(res.status().as_u16(), 202);
        let body: serde_json::Value = res.json().await.unwrap();
        accepted.insert(body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(accepted.len(), total);
    relay.kill_9();

    let relay = spawn_process(dir.path());
    let (_res, mut framed) = awc::Client::new()
        .ws(format!("ws://127.0.0.1:{}/api/v1/ws", relay.port))
        .bearer_auth(paired["accessToken"].as_str().unwrap())
        .max_frame_size(16 * 1024 * 1024)
        .connect()
        .await
        .unwrap();
    use futures_util::SinkExt;
    let mut received = std::collections::HashSet::new();
    let mut duplicates = 0;
    while received.len() < total {
        let frame = tokio::time::timeout(Duration::from_secs(10), framed.next())
            .await
            .expect("frames keep coming");
        let Some(Ok(awc::ws::Frame::Text(bytes))) = frame else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if value["type"] != "notifications" {
            continue;
        }
        let ids: Vec<String> = value["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        for id in &ids {
            if !received.insert(id.clone()) {
                duplicates += 1;
            }
        }
        framed
            .send(awc::ws::Message::Text(
                json!({"type": "ack", "ids": ids}).to_string().into(),
            ))
            .await
            .unwrap();
    }
    assert!(
        accepted.is_subset(&received),
        "lost {:?}",
        accepted.difference(&received).count()
    );
    eprintln!(
        "kill -9: {total} accepted, {} received, {duplicates} duplicates",
        received.len()
    );
    drop(relay);
}

#[actix_web::test]
async fn an_expired_notification_is_not_delivered_and_shows_expired() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let short = app
        .publish(json!({"title": "short-lived", "ttlSeconds": 60}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let long = app.publish(json!({"title": "long-lived"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(Duration::from_secs(61));
    let mut ws = app.connect_device(&device).await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], long.as_str());
    let body = wait_for_delivery_status(&app, &short, "expired").await;
    assert_eq!(body["status"], "expired");
}

#[actix_web::test]
async fn finished_notifications_are_deleted_after_keep_finished_seconds_and_waiting_ones_stay() {
    // Heartbeats far apart: the clock jumps past two of them would close the test's socket.
    let app = crate::helpers::spawn_app_with(|s| {
        s.delivery.keep_finished_seconds = 120;
        s.websocket.heartbeat_seconds = 2_000;
    })
    .await;
    let phone = app.pair_device("phone").await;
    let tablet = app.pair_device("tablet").await;
    let to = |device: &crate::helpers::Device, title: &str| json!({"title": title, "targets": [device.id], "idempotencyKey": title});
    let acked = app.publish(to(&phone, "acked")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The tablet stays offline: its notification waits, however old it gets.
    let waiting = app.publish(to(&tablet, "waiting")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ws = app.connect_device(&phone).await;
    assert_eq!(ws.receive(1).await[0]["id"], acked.as_str());
    ws.ack(&[&acked]).await;
    wait_for_delivery_status(&app, &acked, "acked").await;
    // One sweep later, but younger than 120 s: both are kept.
    app.clock.advance(Duration::from_secs(61));
    let recent = app.publish(to(&phone, "recent")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ws.receive(1).await[0]["id"], recent.as_str());
    ws.ack(&[&recent]).await;
    wait_for_delivery_status(&app, &recent, "acked").await;
    let path = |id: &str| format!("/api/v1/notifications/{id}");
    assert_eq!(app.get(&path(&acked), Some(&app.admin_token)).await.0, 200);
    // Past 120 s from its creation, the acked one goes at the next sweep.
    app.clock.advance(Duration::from_secs(61));
    crate::helpers::eventually("the acked notification is deleted", || async {
        (app.get(&path(&acked), Some(&app.admin_token)).await.0 == 404).then_some(())
    })
    .await;
    assert_eq!(
        app.get(&path(&waiting), Some(&app.admin_token)).await.0,
        200
    );
    assert_eq!(app.get(&path(&recent), Some(&app.admin_token)).await.0, 200);
    // Its idempotency key is free again: the same publish makes a new notification.
    let again = app.publish(to(&phone, "acked")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(again, acked);
    // The waiting one is delivered when its device comes, as ever.
    let mut tablet_ws = app.connect_device(&tablet).await;
    assert_eq!(tablet_ws.receive(1).await[0]["id"], waiting.as_str());
}

#[actix_web::test]
async fn a_device_that_stops_reading_is_dropped_and_keeps_its_deliveries() {
    // One notification per frame, a one-frame outbound buffer and no in-flight cap: a device that
    // does not read fills the socket's buffers and is dropped.
    let app = crate::helpers::spawn_app_with(|s| {
        s.websocket.outbound_buffer_frames = 1;
        s.delivery.batch_max_items = 1;
        s.delivery.batch_window_ms = 0;
        s.delivery.max_in_flight_per_device = 100_000;
        s.server.max_body_bytes = 4 * 1024 * 1024;
    })
    .await;
    let device = app.pair_device("stalled").await;
    let stalled = app.connect_device(&device).await; // never read from again
    let body = "x".repeat(4_000);
    let mut ids = std::collections::HashSet::new();
    let batches = 12;
    for b in 0..batches {
        let items: Vec<_> = (0..500)
            .map(|i| json!({"title": format!("b{b}-{i}"), "body": body}))
            .collect();
        let (status, response) = app
            .post(
                "/api/v1/notifications/batch",
                Some(&app.admin_token),
                &json!({"items": items}),
            )
            .await;
        assert_eq!(status, 202, "{response}");
        for item in response["items"].as_array().unwrap() {
            ids.insert(item["id"].as_str().unwrap().to_owned());
        }
    }
    // The registry forgets the stalled socket once it is dropped.
    // The socket actor stops on its own arbiter and unregisters with a message.
    crate::helpers::eventually("the stalled socket is dropped", || async {
        let stats = app
            .state
            .graph
            .registry
            .send(beepmyphone_actors::registry::GetRegistryStats)
            .await
            .unwrap();
        (stats.sockets == 0).then_some(())
    })
    .await;
    drop(stalled);
    // Everything is still pending: after a restart with default settings (whose in-flight window
    // fits the outbound buffer) a reading device gets all of it.
    let dir = app.stop().await;
    let settings = test_settings(dir.path());
    let app = start_in(dir, settings).await;
    // Opening 6,000 sealed 4 KB notifications takes seconds in a debug build: the queue answers
    // once it has restored them, so wait for that before timing frames.
    let restored = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        app.state
            .graph
            .queue
            .send(beepmyphone_actors::queue::GetQueueStats),
    )
    .await
    .expect("the queue restores within two minutes")
    .unwrap();
    assert_eq!(
        restored.ready + restored.in_flight,
        ids.len(),
        "{restored:?}"
    );
    let mut ws = app.connect_device(&device).await;
    let mut received = std::collections::HashSet::new();
    while received.len() < ids.len() {
        let items = ws.receive(1).await;
        ws.ack_all(&items).await;
        for item in items {
            received.insert(item["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(received, ids);
}
