//! Tests: pairing, device tokens, devices, API tokens and the notification read API.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use beepmyphone_actors::clock::Clock;

use crate::helpers::{spawn_app, spawn_app_with, wait_for_delivery_status, Device, Event, TestApp};

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

/// Pairs a device with a chosen platform.
async fn pair_with(app: &TestApp, name: &str, platform: &str) -> Device {
    let code = app.pairing_code().await;
    let (status, body) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": name, "platform": platform}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    Device {
        id: body["deviceId"].as_str().unwrap().to_owned(),
        access_token: body["accessToken"].as_str().unwrap().to_owned(),
        refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
    }
}

/// The `field` of every entry of a problem document's `errors`.
fn problem_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("a problem document with errors: {body}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts a 400 validation problem naming exactly these fields (in any order).
fn assert_invalid_fields(status: u16, body: &Value, fields: &[&str]) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "VALIDATION_ERROR", "{body}");
    assert_eq!(body["status"], 400, "{body}");
    let got: HashSet<String> = problem_fields(body).into_iter().collect();
    let want: HashSet<String> = fields.iter().map(|f| (*f).to_owned()).collect();
    assert_eq!(got, want, "{body}");
}

/// The `id` of every item of a list response.
fn item_ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// GET a list with the admin token; returns its ids.
async fn list_ids(app: &TestApp, path: &str) -> Vec<String> {
    let (status, body) = app.get(path, Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{path}: {body}");
    item_ids(&body)
}

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn as_set(ids: Vec<String>) -> HashSet<String> {
    ids.into_iter().collect()
}

/// Polls `GET /notifications/{id}` (admin) until `done` holds for it (the store changes by group
/// commit, with no signal to the test).
async fn wait_for_notification(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    crate::helpers::eventually(
        &format!("notification {id} reaches the expected state"),
        || async {
            let (code, body) = app
                .get(
                    &format!("/api/v1/notifications/{id}"),
                    Some(&app.admin_token),
                )
                .await;
            assert_eq!(code, 200, "{body}");
            done(&body).then_some(body)
        },
    )
    .await
}

/// The delivery to `device` in a notification's detail view.
fn delivery_to<'a>(body: &'a Value, device: &str) -> &'a Value {
    body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deviceId"] == device)
        .unwrap_or_else(|| panic!("no delivery to {device}: {body}"))
}

/// The device ids a notification has deliveries for.
fn delivery_devices(body: &Value) -> HashSet<String> {
    body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_owned())
        .collect()
}

fn millis(timestamp: &Value) -> i64 {
    let text = timestamp
        .as_str()
        .unwrap_or_else(|| panic!("a timestamp: {timestamp}"));
    assert!(text.ends_with('Z'), "UTC timestamp: {text}");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("RFC 3339 ({e}): {text}"))
        .timestamp_millis()
}

fn hhmm_in(ms: i64, zone: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&zone)
        .format("%H:%M")
        .to_string()
}

fn hhmm_utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%H:%M")
        .to_string()
}

fn id_of(published: &Value) -> String {
    published["id"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Pairing codes
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn pairing_code_is_created_with_format_and_expiry() {
    let app = spawn_app().await;
    let now = app.clock.now_ms();
    let (status, body) = app
        .post(
            "/api/v1/pairing-codes",
            Some(&app.admin_token),
            &json!({"ttlSeconds": 120}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let code = body["code"].as_str().unwrap();
    let chars: Vec<char> = code.chars().collect();
    assert_eq!(chars.len(), 9, "{code}");
    for (i, c) in chars.iter().enumerate() {
        if i == 4 {
            assert_eq!(*c, '-', "{code}");
        } else {
            assert!(
                c.is_ascii_digit() || c.is_ascii_uppercase(),
                "code {code} has {c:?}"
            );
        }
    }
    assert_eq!(millis(&body["expiresAt"]), now + 120_000, "{body}");

    // The bounds are inclusive; just outside them is refused.
    for ttl in [60, 3_600] {
        let (status, body) = app
            .post(
                "/api/v1/pairing-codes",
                Some(&app.admin_token),
                &json!({"ttlSeconds": ttl}),
            )
            .await;
        assert_eq!(status, 201, "ttl {ttl}: {body}");
        assert_eq!(millis(&body["expiresAt"]), now + ttl * 1_000);
    }
    for ttl in [0, 59, 3_601, 86_400] {
        let (status, body) = app
            .post(
                "/api/v1/pairing-codes",
                Some(&app.admin_token),
                &json!({"ttlSeconds": ttl}),
            )
            .await;
        assert_invalid_fields(status, &body, &["ttlSeconds"]);
    }
    // Two codes differ.
    let a = app.pairing_code().await;
    let b = app.pairing_code().await;
    assert_ne!(a, b);
}

#[actix_web::test]
async fn minting_a_pairing_code_needs_admin_but_pairing_needs_no_token() {
    let app = spawn_app().await;
    let (status, body) = app.post("/api/v1/pairing-codes", None, &json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "UNAUTHORIZED");

    let (status, created) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "ci", "scope": "publish"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let publish_token = created["token"].as_str().unwrap();
    let (status, body) = app
        .post("/api/v1/pairing-codes", Some(publish_token), &json!({}))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "FORBIDDEN");

    // Pairing itself takes no token at all.
    let device = app.pair_device("phone").await;
    assert!(device.id.starts_with("dev_"), "{device:?}");
    let (status, body) = app
        .post(
            "/api/v1/pairing-codes",
            Some(&device.access_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

/// Many pairings at once (each two writes) beside the queue's commits and the audit writer: every
/// one succeeds within a short busy timeout, because the relay's writers take turns. With SQLite's
/// busy handler alone one of them could lose every race for the lock and fail with 500.
#[actix_web::test]
async fn concurrent_pairings_all_succeed_with_a_short_busy_timeout() {
    let app = spawn_app_with(|s| s.storage.busy_timeout_ms = 1_000).await;
    let devices = futures_util::future::join_all((0..48).map(|i| {
        let app = &app;
        async move { app.pair_device(&format!("phone {i}")).await }
    }))
    .await;
    let ids: HashSet<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), 48);
    let (status, body) = app
        .get("/api/v1/devices?limit=100", Some(&app.admin_token))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 48);
}

#[actix_web::test]
async fn pairing_returns_tokens_and_the_code_is_single_use() {
    let app = spawn_app().await;
    let code = app.pairing_code().await;
    let (status, body) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": "Pixel", "platform": "android", "appVersion": "1.2.3"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let device_id = body["deviceId"].as_str().unwrap();
    assert!(device_id.starts_with("dev_"), "{body}");
    assert!(!body["accessToken"].as_str().unwrap().is_empty());
    assert!(!body["refreshToken"].as_str().unwrap().is_empty());
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 3_600);
    assert_eq!(body["refreshExpiresIn"], 2_592_000);

    let (status, again) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": "Thief", "platform": "android"}),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["code"], "CONFLICT");

    // Only the first device exists.
    let devices = list_ids(&app, "/api/v1/devices").await;
    assert_eq!(devices, [device_id]);
    let (_, shown) = app
        .get(
            &format!("/api/v1/devices/{device_id}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(shown["name"], "Pixel");
    assert_eq!(shown["platform"], "android");
    assert_eq!(shown["appVersion"], "1.2.3");
}

#[actix_web::test]
async fn a_pairing_code_may_be_typed_in_lower_case_without_the_dash() {
    let app = spawn_app().await;
    for typed in [
        |c: &str| c.to_lowercase(),
        |c: &str| c.replace('-', ""),
        |c: &str| c.replace('-', "").to_lowercase(),
    ] {
        let code = app.pairing_code().await;
        let typed = typed(&code);
        assert_ne!(typed, code);
        let (status, body) = app
            .post(
                "/api/v1/devices/pair",
                None,
                &json!({"code": typed, "name": "phone", "platform": "ios"}),
            )
            .await;
        assert_eq!(status, 201, "{typed}: {body}");
        // And it was consumed: the canonical form no longer works.
        let (status, body) = app
            .post(
                "/api/v1/devices/pair",
                None,
                &json!({"code": code, "name": "phone", "platform": "ios"}),
            )
            .await;
        assert_eq!(status, 409, "{body}");
    }
}

#[actix_web::test]
async fn an_expired_pairing_code_is_refused() {
    let app = spawn_app().await;
    let mint = |ttl: u64| {
        let app = &app;
        async move {
            let (status, body) = app
                .post(
                    "/api/v1/pairing-codes",
                    Some(&app.admin_token),
                    &json!({"ttlSeconds": ttl}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            body["code"].as_str().unwrap().to_owned()
        }
    };
    let early = mint(60).await;
    let late = mint(60).await;
    let pair = |code: String| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/devices/pair",
                None,
                &json!({"code": code, "name": "phone", "platform": "linux"}),
            )
            .await
        }
    };
    // Just before the end of its life a code works...
    app.clock.advance(Duration::from_secs(59));
    let (status, body) = pair(early).await;
    assert_eq!(status, 201, "{body}");
    // ...and past it, an unused one does not.
    app.clock.advance(Duration::from_secs(2));
    let (status, body) = pair(late).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "CONFLICT");
    assert_eq!(list_ids(&app, "/api/v1/devices").await.len(), 1);
}

#[actix_web::test]
async fn pairing_with_a_bad_name_or_platform_names_the_fields_and_keeps_the_code() {
    let app = spawn_app().await;
    let code = app.pairing_code().await;
    let cases = [
        (
            json!({"code": code, "name": "", "platform": "android"}),
            vec!["name"],
        ),
        (
            json!({"code": code, "name": "x".repeat(51), "platform": "android"}),
            vec!["name"],
        ),
        (
            json!({"code": code, "name": "bad\u{7}name", "platform": "android"}),
            vec!["name"],
        ),
        (
            json!({"code": code, "name": "phone", "platform": "symbian"}),
            vec!["platform"],
        ),
        (
            json!({"code": code, "name": "", "platform": "Android"}),
            vec!["name", "platform"],
        ),
    ];
    for (request, fields) in cases {
        let (status, body) = app.post("/api/v1/devices/pair", None, &request).await;
        assert_invalid_fields(status, &body, &fields);
    }
    assert!(list_ids(&app, "/api/v1/devices").await.is_empty());
    // A refused request did not use up the code. 50 characters is the longest name.
    let (status, body) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": "y".repeat(50), "platform": "other"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn refresh_rotates_the_pair_and_the_new_access_token_works() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": device.refresh_token}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deviceId"], device.id.as_str());
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], 3_600);
    let refreshed = Device {
        id: device.id.clone(),
        access_token: body["accessToken"].as_str().unwrap().to_owned(),
        refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
    };
    assert_ne!(refreshed.access_token, device.access_token);
    assert_ne!(refreshed.refresh_token, device.refresh_token);

    let (status, shown) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&refreshed.access_token),
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["id"], device.id.as_str());

    let mut ws = app.connect_device(&refreshed).await;
    let id = id_of(&app.publish(json!({"title": "hi"})).await);
    assert_eq!(ws.receive(1).await[0]["id"], id.as_str());

    // The new refresh token is itself good for one more rotation.
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": refreshed.refresh_token}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn reusing_a_refresh_token_revokes_the_whole_family() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let refresh = |token: String| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/auth/refresh",
                None,
                &json!({"refreshToken": token}),
            )
            .await
        }
    };
    let (status, first) = refresh(device.refresh_token.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = refresh(first["refreshToken"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, 200, "{second}");
    let newest = second["refreshToken"].as_str().unwrap().to_owned();

    // The original token was used already: presenting it again is theft.
    let (status, body) = refresh(device.refresh_token.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "UNAUTHORIZED");
    // The newest token of the family, never used, now fails too.
    let (status, body) = refresh(newest).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "UNAUTHORIZED");
}

#[actix_web::test]
async fn a_garbage_refresh_token_is_refused() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    for token in [
        "garbage".to_owned(),
        String::new(),
        format!("{}x", device.refresh_token),
        device.access_token.clone(),
        app.admin_token.clone(),
    ] {
        let (status, body) = app
            .post(
                "/api/v1/auth/refresh",
                None,
                &json!({"refreshToken": token}),
            )
            .await;
        assert_eq!(status, 401, "{token}: {body}");
        assert_eq!(body["code"], "UNAUTHORIZED");
    }
    // None of that hurt the real token.
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": device.refresh_token}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

// ---------------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn device_list_shows_presence_and_filters_by_status_and_platform() {
    let app = spawn_app().await;
    let phone = pair_with(&app, "phone", "android").await;
    let tablet = pair_with(&app, "tablet", "ios").await;
    let laptop = pair_with(&app, "laptop", "linux").await;
    let ws = app.connect_device(&phone).await;

    let (status, body) = app.get("/api/v1/devices", Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["nextCursor"], Value::Null, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{body}");
    let by_id: HashMap<&str, &Value> = items
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i))
        .collect();
    assert_eq!(by_id[phone.id.as_str()]["status"], "online");
    assert_eq!(by_id[tablet.id.as_str()]["status"], "offline");
    assert_eq!(by_id[laptop.id.as_str()]["status"], "offline");
    assert_eq!(by_id[tablet.id.as_str()]["platform"], "ios");
    assert_eq!(by_id[tablet.id.as_str()]["name"], "tablet");
    assert_eq!(by_id[tablet.id.as_str()]["lastSeenAt"], Value::Null);
    for item in items {
        assert!(item["deliveries"].is_object(), "{item}");
        assert!(item["createdAt"].as_str().is_some(), "{item}");
    }

    assert_eq!(
        list_ids(&app, "/api/v1/devices?status=online").await,
        [phone.id.as_str()]
    );
    assert_eq!(
        as_set(list_ids(&app, "/api/v1/devices?status=offline").await),
        set(&[&tablet.id, &laptop.id])
    );
    assert_eq!(
        list_ids(&app, "/api/v1/devices?platform=ios").await,
        [tablet.id.as_str()]
    );
    assert_eq!(
        list_ids(&app, "/api/v1/devices?platform=android&status=online").await,
        [phone.id.as_str()]
    );
    assert!(
        list_ids(&app, "/api/v1/devices?platform=android&status=offline")
            .await
            .is_empty()
    );
    assert!(list_ids(&app, "/api/v1/devices?platform=windows")
        .await
        .is_empty());

    let (status, body) = app
        .get("/api/v1/devices?status=asleep", Some(&app.admin_token))
        .await;
    assert_invalid_fields(status, &body, &["status"]);
    let (status, body) = app
        .get("/api/v1/devices?platform=symbian", Some(&app.admin_token))
        .await;
    assert_invalid_fields(status, &body, &["platform"]);

    // Listing devices is for admins only.
    let (status, body) = app.get("/api/v1/devices", Some(&phone.access_token)).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app.get("/api/v1/devices", None).await;
    assert_eq!(status, 401);

    // The socket's activity shows as lastSeenAt (recorded asynchronously).
    let mut seen = Value::Null;
    for _ in 0..200 {
        let (_, body) = app
            .get(
                &format!("/api/v1/devices/{}", phone.id),
                Some(&app.admin_token),
            )
            .await;
        seen = body["lastSeenAt"].clone();
        if !seen.is_null() {
            break;
        }
        // Bounded retry: last-seen is written by the group commit after the socket registered.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(millis(&seen), app.clock.now_ms());

    // Closing the socket makes it offline and records the moment.
    app.clock.advance(Duration::from_secs(5));
    let closed_at = app.clock.now_ms();
    ws.close().await;
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, body) = app
            .get(
                &format!("/api/v1/devices/{}", phone.id),
                Some(&app.admin_token),
            )
            .await;
        if body["status"] == "offline" && millis(&body["lastSeenAt"]) == closed_at {
            last = body;
            break;
        }
        // Bounded retry: the close reaches the queue by message and the store by group commit.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        !last.is_null(),
        "the device never went offline at {closed_at}"
    );
    assert!(list_ids(&app, "/api/v1/devices?status=online")
        .await
        .is_empty());
}

#[actix_web::test]
async fn device_list_pages_without_overlap() {
    let app = spawn_app().await;
    let mut paired = Vec::new();
    for i in 0..5 {
        paired.push(app.pair_device(&format!("d{i}")).await);
    }
    let _ws = app.connect_device(&paired[2]).await;

    let walk = |filter: &'static str| {
        let app = &app;
        async move {
            let mut pages = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    None => format!("/api/v1/devices?limit=2{filter}"),
                    Some(c) => format!("/api/v1/devices?limit=2{filter}&cursor={c}"),
                };
                let (status, body) = app.get(&path, Some(&app.admin_token)).await;
                assert_eq!(status, 200, "{body}");
                let ids = item_ids(&body);
                assert!(ids.len() <= 2, "{body}");
                pages.push(ids);
                match body["nextCursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
                assert!(pages.len() < 10, "the cursor never ends");
            }
            pages
        }
    };

    let pages = walk("").await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "{pages:?}"
    );
    let all: Vec<String> = pages.into_iter().flatten().collect();
    let unique: HashSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "overlap: {all:?}");
    let expected: HashSet<String> = paired.iter().map(|d| d.id.clone()).collect();
    assert_eq!(unique, expected);

    // Paging through a presence filter still covers exactly the matching devices.
    let pages = walk("&status=offline").await;
    let offline: Vec<String> = pages.into_iter().flatten().collect();
    let unique: HashSet<String> = offline.iter().cloned().collect();
    assert_eq!(unique.len(), offline.len(), "overlap: {offline:?}");
    let mut expected = expected;
    expected.remove(&paired[2].id);
    assert_eq!(unique, expected);

    let (status, body) = app
        .get("/api/v1/devices?cursor=!!!", Some(&app.admin_token))
        .await;
    assert_eq!(status, 400, "{body}");
}

#[actix_web::test]
async fn device_shows_its_delivery_counts() {
    let app = spawn_app().await;
    let online = app.pair_device("online").await;
    let offline = app.pair_device("offline").await;
    let mut ws = app.connect_device(&online).await;

    let acked = id_of(
        &app.publish(json!({"title": "acked", "targets": [online.id]}))
            .await,
    );
    let sent = id_of(
        &app.publish(json!({"title": "sent", "targets": [online.id]}))
            .await,
    );
    for i in 0..2 {
        app.publish(json!({"title": format!("queued {i}"), "targets": [offline.id]}))
            .await;
    }
    let items = ws.receive(2).await;
    assert_eq!(
        as_set(
            items
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned())
                .collect()
        ),
        set(&[&acked, &sent])
    );
    ws.ack(&[&acked]).await;
    wait_for_delivery_status(&app, &acked, "acked").await;
    wait_for_delivery_status(&app, &sent, "sent").await;

    let counts = |device: &Device| {
        let app = &app;
        let path = format!("/api/v1/devices/{}", device.id);
        async move {
            let (status, body) = app.get(&path, Some(&app.admin_token)).await;
            assert_eq!(status, 200, "{body}");
            body["deliveries"].clone()
        }
    };
    assert_eq!(
        counts(&online).await,
        json!({"queued": 0, "sent": 1, "acked": 1, "expired": 0})
    );
    assert_eq!(
        counts(&offline).await,
        json!({"queued": 2, "sent": 0, "acked": 0, "expired": 0})
    );
    // The list shows the same counts.
    let (_, list) = app.get("/api/v1/devices", Some(&app.admin_token)).await;
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == offline.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(listed["deliveries"]["queued"], 2, "{listed}");
}

#[actix_web::test]
async fn a_device_is_visible_to_admin_and_itself_only() {
    let app = spawn_app().await;
    let mine = pair_with(&app, "mine", "macos").await;
    let other = app.pair_device("other").await;
    let path = format!("/api/v1/devices/{}", mine.id);

    let (status, by_admin) = app.get(&path, Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{by_admin}");
    assert_eq!(by_admin["id"], mine.id.as_str());
    assert_eq!(by_admin["name"], "mine");
    assert_eq!(by_admin["platform"], "macos");
    assert_eq!(by_admin["status"], "offline");
    assert_eq!(
        by_admin["settings"],
        json!({"enabled": true, "minPriority": "low", "quietHours": null})
    );

    let (status, by_itself) = app.get(&path, Some(&mine.access_token)).await;
    assert_eq!(status, 200, "{by_itself}");
    assert_eq!(by_itself["id"], mine.id.as_str());

    let (status, body) = app.get(&path, Some(&other.access_token)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "FORBIDDEN");
    assert!(body.get("name").is_none(), "{body}");

    let (status, body) = app.get(&path, None).await;
    assert_eq!(status, 401, "{body}");

    let unknown = format!("dev_{}", ulid::Ulid::new());
    let (status, body) = app
        .get(
            &format!("/api/v1/devices/{unknown}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "NOT_FOUND");
    let (status, body) = app
        .get("/api/v1/devices/not-a-device", Some(&app.admin_token))
        .await;
    assert_eq!(status, 404, "{body}");
}

#[actix_web::test]
async fn patching_a_device_validates_and_names_the_fields() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let other = app.pair_device("other").await;
    let path = format!("/api/v1/devices/{}", device.id);

    let (status, body) = app
        .patch(
            &path,
            Some(&app.admin_token),
            &json!({"name": "", "settings": {"minPriority": "urgent",
                    "quietHours": {"start": "25:00", "end": "07:00", "timezone": "Mars/Olympus"}}}),
        )
        .await;
    assert_invalid_fields(
        status,
        &body,
        &[
            "name",
            "settings.minPriority",
            "settings.quietHours.start",
            "settings.quietHours.timezone",
        ],
    );
    for (request, field) in [
        (json!({"name": "x".repeat(51)}), "name"),
        (json!({"name": "tab\there"}), "name"),
        (
            json!({"settings": {"quietHours": {"start": "22:00", "end": "7:00", "timezone": "UTC"}}}),
            "settings.quietHours.end",
        ),
        (
            json!({"settings": {"quietHours": {"start": "22:00", "end": "07:00", "timezone": "Berlin"}}}),
            "settings.quietHours.timezone",
        ),
        (
            json!({"settings": {"minPriority": "HIGH"}}),
            "settings.minPriority",
        ),
    ] {
        let (status, body) = app.patch(&path, Some(&app.admin_token), &request).await;
        assert_invalid_fields(status, &body, &[field]);
    }
    // Nothing of the refused requests was applied.
    let (_, shown) = app.get(&path, Some(&app.admin_token)).await;
    assert_eq!(shown["name"], "phone");
    assert_eq!(shown["settings"]["minPriority"], "low");
    assert_eq!(shown["settings"]["quietHours"], Value::Null);

    // A valid change, by the device itself.
    let (status, body) = app
        .patch(
            &path,
            Some(&device.access_token),
            &json!({"name": "Work phone", "settings": {"minPriority": "normal",
                    "quietHours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Work phone");
    let (_, shown) = app.get(&path, Some(&app.admin_token)).await;
    assert_eq!(shown["name"], "Work phone");
    assert_eq!(
        shown["settings"],
        json!({"enabled": true, "minPriority": "normal",
               "quietHours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}})
    );

    // Another device may not touch it; an unknown one is 404.
    let (status, body) = app
        .patch(
            &path,
            Some(&other.access_token),
            &json!({"name": "mine now"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .patch(
            &format!("/api/v1/devices/dev_{}", ulid::Ulid::new()),
            Some(&app.admin_token),
            &json!({"name": "ghost"}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, shown) = app.get(&path, Some(&app.admin_token)).await;
    assert_eq!(shown["name"], "Work phone");
}

#[actix_web::test]
async fn minimum_priority_filters_what_a_device_is_sent() {
    let app = spawn_app().await;
    let picky = app.pair_device("picky").await;
    let relaxed = app.pair_device("relaxed").await;
    let (status, body) = app
        .patch(
            &format!("/api/v1/devices/{}", picky.id),
            Some(&app.admin_token),
            &json!({"settings": {"minPriority": "high"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["minPriority"], "high");
    let mut ws = app.connect_device(&picky).await;

    let normal = app
        .publish(json!({"title": "normal", "priority": "normal"}))
        .await;
    assert_eq!(normal["targets"], 1, "{normal}");
    let critical = app
        .publish(json!({"title": "critical", "priority": "critical"}))
        .await;
    assert_eq!(critical["targets"], 2, "{critical}");

    let explicit = app
        .publish(json!({"title": "explicit high", "priority": "high", "targets": [picky.id]}))
        .await;
    assert_eq!(
        explicit["targets"], 1,
        "high meets minPriority high: {explicit}"
    );
    let skipped = app
        .publish(json!({"title": "explicit normal", "targets": [picky.id, relaxed.id]}))
        .await;
    assert_eq!(skipped["targets"], 1, "{skipped}");

    // The first thing the picky device sees is the critical one, then the explicit high one.
    let items = ws.receive(2).await;
    let got: Vec<&Value> = items.iter().map(|i| &i["id"]).collect();
    assert_eq!(got, [&critical["id"], &explicit["id"]], "{items:?}");

    for skipped in [&normal, &skipped] {
        let (_, detail) = app
            .get(
                &format!("/api/v1/notifications/{}", id_of(skipped)),
                Some(&app.admin_token),
            )
            .await;
        assert_eq!(delivery_devices(&detail), set(&[&relaxed.id]));
    }
}

#[actix_web::test]
async fn quiet_hours_hold_back_all_but_critical_until_lifted() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let path = format!("/api/v1/devices/{}", device.id);
    let mut ws = app.connect_device(&device).await;

    // A window of an hour either side of the relay's now (it may cross midnight; that is fine).
    let now = app.clock.now_ms();
    let quiet = json!({"start": hhmm_utc(now - 3_600_000), "end": hhmm_utc(now + 3_600_000),
                       "timezone": "UTC"});
    let (status, body) = app
        .patch(
            &path,
            Some(&device.access_token),
            &json!({"settings": {"quietHours": quiet}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["quietHours"], quiet);

    let normal = app
        .publish(json!({"title": "normal", "priority": "normal"}))
        .await;
    assert_eq!(
        normal["targets"], 1,
        "held back, but still queued for the device"
    );
    let normal = id_of(&normal);
    let critical = id_of(
        &app.publish(json!({"title": "critical", "priority": "critical"}))
            .await,
    );
    let items = ws.receive(1).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["id"], critical.as_str());
    ws.ack(&[&critical]).await;
    wait_for_delivery_status(&app, &critical, "acked").await;
    let (_, held) = app
        .get(
            &format!("/api/v1/notifications/{normal}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(held["deliveries"][0]["status"], "queued", "{held}");
    assert_eq!(held["deliveries"][0]["attempts"], 0, "{held}");

    // Lifting the window releases it at once.
    let (status, body) = app
        .patch(
            &path,
            Some(&app.admin_token),
            &json!({"settings": {"quietHours": null}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["quietHours"], Value::Null);
    let released = ws.receive(1).await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["id"], normal.as_str());
}

#[actix_web::test]
async fn quiet_hours_follow_the_devices_time_zone_and_end_on_the_clock() {
    // Heartbeats would need answering while the clock jumps; make them rare.
    let app = spawn_app_with(|s| s.websocket.heartbeat_seconds = 86_400).await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;

    // From an hour ago until ~30 minutes from now, local time in Kolkata (UTC+05:30). Read as
    // UTC, the same window would not contain now.
    let zone = chrono_tz::Asia::Kolkata;
    let now = app.clock.now_ms();
    let end_ms = now + 30 * 60_000;
    let quiet = json!({"start": hhmm_in(now - 3_600_000, zone), "end": hhmm_in(end_ms, zone),
                       "timezone": "Asia/Kolkata"});
    let (status, body) = app
        .patch(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
            &json!({"settings": {"quietHours": quiet}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let held = id_of(
        &app.publish(json!({"title": "high, but not critical", "priority": "high"}))
            .await,
    );
    let critical = id_of(
        &app.publish(json!({"title": "critical", "priority": "critical"}))
            .await,
    );
    let items = ws.receive(1).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["id"], critical.as_str());
    ws.ack(&[&critical]).await;
    wait_for_delivery_status(&app, &critical, "acked").await;

    // Past the end of the window (the minute is truncated, so at most 30 minutes away).
    app.clock.advance(Duration::from_secs(31 * 60));
    let released = ws.receive(1).await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0]["id"], held.as_str());
}

#[actix_web::test]
async fn a_disabled_device_is_not_targeted() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let other = app.pair_device("other").await;
    let path = format!("/api/v1/devices/{}", device.id);
    let mut ws = app.connect_device(&device).await;

    let (status, body) = app
        .patch(
            &path,
            Some(&app.admin_token),
            &json!({"settings": {"enabled": false}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["enabled"], false);

    let skipped = app.publish(json!({"title": "while disabled"})).await;
    assert_eq!(skipped["targets"], 1, "{skipped}");
    let (_, detail) = app
        .get(
            &format!("/api/v1/notifications/{}", id_of(&skipped)),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(delivery_devices(&detail), set(&[&other.id]));

    // An explicit target that is disabled is dropped silently.
    let explicit = app
        .publish(json!({"title": "explicitly", "targets": [device.id]}))
        .await;
    assert_eq!(explicit["targets"], 0, "{explicit}");
    let (_, detail) = app
        .get(
            &format!("/api/v1/notifications/{}", id_of(&explicit)),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(detail["deliveries"], json!([]), "{detail}");

    let (status, body) = app
        .patch(
            &path,
            Some(&app.admin_token),
            &json!({"settings": {"enabled": true}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let wanted = app.publish(json!({"title": "after enabling"})).await;
    assert_eq!(wanted["targets"], 2, "{wanted}");
    // The first notification the device ever gets is the one after re-enabling.
    let items = ws.receive(1).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["id"], wanted["id"]);
}

#[actix_web::test]
async fn deleting_a_device_revokes_everything_at_once() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let other = app.pair_device("other").await;
    let path = format!("/api/v1/devices/{}", device.id);
    let mut ws = app.connect_device(&device).await;

    // Only an admin may delete.
    let status = app.delete(&path, Some(&device.access_token)).await;
    assert_eq!(status, 403);
    let status = app.delete(&path, Some(&other.access_token)).await;
    assert_eq!(status, 403);

    let status = app.delete(&path, Some(&app.admin_token)).await;
    assert_eq!(status, 204);
    assert_eq!(ws.expect_close().await, Some(4003));

    let (status, body) = app.get(&path, Some(&app.admin_token)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.get(&path, Some(&device.access_token)).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": device.refresh_token}),
        )
        .await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = app
        .post(
            "/api/v1/notifications",
            Some(&app.admin_token),
            &json!({"title": "to the dead", "targets": [device.id]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_fields(&body), ["targets"]);
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(&device.id),
        "{body}"
    );
    // "all" no longer includes it.
    assert_eq!(app.publish(json!({"title": "to all"})).await["targets"], 1);
    assert_eq!(list_ids(&app, "/api/v1/devices").await, [other.id.as_str()]);

    // Its token can no longer open a socket: 4003 (device revoked).
    let mut again = app.connect(Some(&device.access_token)).await;
    match again.next_event().await {
        Event::Closed(code) => assert_eq!(code, Some(4003)),
        Event::Json(frame) => panic!("a deleted device was answered: {frame}"),
    }

    let status = app.delete(&path, Some(&app.admin_token)).await;
    assert_eq!(status, 404);
}

// ---------------------------------------------------------------------------------------------
// API tokens
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn api_tokens_are_shown_once_and_listed_without_the_secret() {
    let app = spawn_app().await;
    let (status, created) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "ci", "scope": "publish"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("bmp_"), "{created}");
    assert!(secret.len() >= 4 + 22, "at least 128 bits: {secret}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tok_"), "{created}");
    assert_eq!(created["name"], "ci");
    assert_eq!(created["scope"], "publish");

    // The new token works for publishing.
    let (status, body) = app
        .post(
            "/api/v1/notifications",
            Some(&secret),
            &json!({"title": "hi"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    let (status, list) = app.get("/api/v1/tokens", Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    // The initial admin token and the new one.
    assert_eq!(items.len(), 2, "{list}");
    let listed = items.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(listed["name"], "ci");
    assert_eq!(listed["scope"], "publish");
    assert!(listed.get("token").is_none(), "{listed}");
    let text = list.to_string();
    for s in [secret.as_str(), app.admin_token.as_str()] {
        assert!(!text.contains(s), "a secret is listed: {list}");
        // Not even the part after the prefix.
        assert!(!text.contains(&s[4..]), "a secret is listed: {list}");
    }
    for item in items {
        for (field, value) in item.as_object().unwrap() {
            assert!(
                !value.to_string().contains(&secret[4..]),
                "{field} holds the secret"
            );
        }
    }

    // Tokens are an admin matter.
    let (status, body) = app.get("/api/v1/tokens", Some(&secret)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/tokens",
            Some(&secret),
            &json!({"name": "escalate", "scope": "admin"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
}

#[actix_web::test]
async fn a_deleted_api_token_is_refused_at_once_even_when_cached() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for scope in ["publish", "admin"] {
        let (status, created) = app
            .post(
                "/api/v1/tokens",
                Some(&app.admin_token),
                &json!({"name": format!("{scope} token"), "scope": scope}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        made.push((
            created["id"].as_str().unwrap().to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        ));
    }
    let (publish_id, publish) = made[0].clone();
    let (admin_id, admin) = made[1].clone();

    // Use both (twice, so they are surely cached).
    for _ in 0..2 {
        let (status, body) = app
            .post(
                "/api/v1/notifications",
                Some(&publish),
                &json!({"title": "x"}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let (status, body) = app.get("/api/v1/tokens", Some(&admin)).await;
        assert_eq!(status, 200, "{body}");
    }

    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{publish_id}"), Some(&admin))
            .await,
        204
    );
    let (status, body) = app
        .post(
            "/api/v1/notifications",
            Some(&publish),
            &json!({"title": "x"}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "UNAUTHORIZED");

    // An admin token may delete itself; the very next request is refused.
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{admin_id}"), Some(&admin))
            .await,
        204
    );
    let (status, body) = app.get("/api/v1/tokens", Some(&admin)).await;
    assert_eq!(status, 401, "{body}");

    let remaining = list_ids(&app, "/api/v1/tokens").await;
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert!(!remaining.contains(&publish_id) && !remaining.contains(&admin_id));
    assert_eq!(
        app.delete(
            &format!("/api/v1/tokens/{publish_id}"),
            Some(&app.admin_token)
        )
        .await,
        404
    );
}

#[actix_web::test]
async fn creating_an_api_token_with_a_bad_scope_or_name_is_refused() {
    let app = spawn_app().await;
    for (request, fields) in [
        (json!({"name": "ci", "scope": "root"}), vec!["scope"]),
        (json!({"name": "ci", "scope": "Admin"}), vec!["scope"]),
        (json!({"name": "", "scope": "publish"}), vec!["name"]),
        (
            json!({"name": "x".repeat(65), "scope": "publish"}),
            vec!["name"],
        ),
        (json!({"name": "new\nline", "scope": "admin"}), vec!["name"]),
        (
            json!({"name": "", "scope": "everything"}),
            vec!["name", "scope"],
        ),
    ] {
        let (status, body) = app
            .post("/api/v1/tokens", Some(&app.admin_token), &request)
            .await;
        assert_invalid_fields(status, &body, &fields);
    }
    let (status, body) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"scope": "publish"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "VALIDATION_ERROR");
    // Nothing was created.
    assert_eq!(list_ids(&app, "/api/v1/tokens").await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Notifications (read side)
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn notifications_list_filters_by_device_status_priority_app_and_time() {
    let app = spawn_app().await;
    let a = app.pair_device("a").await;
    let b = app.pair_device("b").await;
    let mut ws = app.connect_device(&a).await;

    let n1 = id_of(
        &app.publish(json!({"title": "n1", "priority": "high", "app": "CI", "targets": [a.id]}))
            .await,
    );
    app.clock.advance(Duration::from_secs(10));
    let n2 = id_of(
        &app.publish(
            json!({"title": "n2", "priority": "normal", "app": "backup", "targets": [b.id]}),
        )
        .await,
    );
    app.clock.advance(Duration::from_secs(10));
    let n3 = id_of(
        &app.publish(json!({"title": "n3", "priority": "low", "app": "CI"}))
            .await,
    );

    let items = ws.receive(2).await;
    let got: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(got, [n1.as_str(), n3.as_str()]);
    ws.ack(&[&n1]).await;
    wait_for_delivery_status(&app, &n1, "acked").await;
    wait_for_notification(&app, &n3, |n| {
        delivery_to(n, &a.id)["status"] == "sent" && delivery_to(n, &b.id)["status"] == "queued"
    })
    .await;

    // Newest first.
    assert_eq!(
        list_ids(&app, "/api/v1/notifications").await,
        [n3.as_str(), n2.as_str(), n1.as_str()]
    );
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("deviceId={}", a.id), vec![&n3, &n1]),
        (format!("deviceId={}", b.id), vec![&n3, &n2]),
        ("status=acked".into(), vec![&n1]),
        ("status=delivered".into(), vec![&n3]),
        ("status=queued".into(), vec![&n3, &n2]),
        (format!("deviceId={}&status=queued", a.id), vec![]),
        (format!("deviceId={}&status=delivered", a.id), vec![&n3]),
        (format!("deviceId={}&status=acked", b.id), vec![]),
        ("priority=high".into(), vec![&n1]),
        ("priority=low".into(), vec![&n3]),
        ("priority=critical".into(), vec![]),
        ("app=CI".into(), vec![&n3, &n1]),
        ("app=backup".into(), vec![&n2]),
        ("app=ci".into(), vec![]),
        ("app=CI&priority=low".into(), vec![&n3]),
    ];
    for (query, want) in cases {
        assert_eq!(
            list_ids(&app, &format!("/api/v1/notifications?{query}")).await,
            want,
            "{query}"
        );
    }

    // Time windows: `since` is inclusive, `until` exclusive.
    let (_, detail2) = app
        .get(
            &format!("/api/v1/notifications/{n2}"),
            Some(&app.admin_token),
        )
        .await;
    let (_, detail3) = app
        .get(
            &format!("/api/v1/notifications/{n3}"),
            Some(&app.admin_token),
        )
        .await;
    let t2 = detail2["createdAt"].as_str().unwrap().to_owned();
    let t3 = detail3["createdAt"].as_str().unwrap().to_owned();
    assert_eq!(millis(&json!(t3)) - millis(&json!(t2)), 10_000);
    for (query, want) in [
        (format!("since={t2}"), vec![n3.as_str(), n2.as_str()]),
        (format!("until={t2}"), vec![n1.as_str()]),
        (format!("since={t2}&until={t3}"), vec![n2.as_str()]),
        (format!("since={t3}&app=backup"), vec![]),
    ] {
        assert_eq!(
            list_ids(&app, &format!("/api/v1/notifications?{query}")).await,
            want,
            "{query}"
        );
    }

    for (query, field) in [
        ("status=lost", "status"),
        ("priority=urgent", "priority"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("deviceId=phone", "deviceId"),
    ] {
        let (status, body) = app
            .get(
                &format!("/api/v1/notifications?{query}"),
                Some(&app.admin_token),
            )
            .await;
        assert_invalid_fields(status, &body, &[field]);
    }
}

#[actix_web::test]
async fn a_device_sees_only_its_own_notifications() {
    let app = spawn_app().await;
    let a = app.pair_device("a").await;
    let b = app.pair_device("b").await;
    let to_a = id_of(
        &app.publish(json!({"title": "for a", "targets": [a.id]}))
            .await,
    );
    let to_b = id_of(
        &app.publish(json!({"title": "for b", "targets": [b.id]}))
            .await,
    );
    let to_all = id_of(&app.publish(json!({"title": "for all"})).await);

    let (status, list) = app
        .get("/api/v1/notifications", Some(&a.access_token))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(item_ids(&list), [to_all.as_str(), to_a.as_str()]);
    // Its own filter is allowed; another device's is not.
    let (status, list) = app
        .get(
            &format!("/api/v1/notifications?deviceId={}", a.id),
            Some(&a.access_token),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(item_ids(&list), [to_all.as_str(), to_a.as_str()]);
    let (status, body) = app
        .get(
            &format!("/api/v1/notifications?deviceId={}", b.id),
            Some(&a.access_token),
        )
        .await;
    assert_eq!(status, 403, "{body}");

    let (status, body) = app
        .get(
            &format!("/api/v1/notifications/{to_b}"),
            Some(&a.access_token),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "NOT_FOUND");
    assert!(!body.to_string().contains("for b"), "{body}");

    // A shared notification shows only the device's own delivery.
    let (status, shared) = app
        .get(
            &format!("/api/v1/notifications/{to_all}"),
            Some(&a.access_token),
        )
        .await;
    assert_eq!(status, 200, "{shared}");
    assert_eq!(delivery_devices(&shared), set(&[&a.id]));
    assert_eq!(shared["targets"], 1, "only its own delivery: {shared}");
    assert_eq!(shared["counts"]["queued"], 1, "{shared}");
    let (_, own_list) = app
        .get("/api/v1/notifications", Some(&a.access_token))
        .await;
    assert_eq!(own_list["items"][0]["id"], to_all.as_str());
    assert_eq!(own_list["items"][0]["targets"], 1, "{own_list}");
    let (_, shared_admin) = app
        .get(
            &format!("/api/v1/notifications/{to_all}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(delivery_devices(&shared_admin), set(&[&a.id, &b.id]));

    // A publish token cannot read notifications.
    let (status, created) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "ci", "scope": "publish"}),
        )
        .await;
    assert_eq!(status, 201);
    let publish = created["token"].as_str().unwrap();
    let (status, body) = app.get("/api/v1/notifications", Some(publish)).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app
        .get(&format!("/api/v1/notifications/{to_a}"), Some(publish))
        .await;
    assert_eq!(status, 403, "{body}");
    // Unknown ids are 404 for an admin too.
    let (status, body) = app
        .get(
            &format!("/api/v1/notifications/ntf_{}", ulid::Ulid::new()),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[actix_web::test]
async fn notification_detail_shows_each_devices_delivery() {
    let app = spawn_app().await;
    let online = app.pair_device("online").await;
    let offline = app.pair_device("offline").await;
    let mut ws = app.connect_device(&online).await;
    let published = app
        .publish(
            json!({"title": "Build finished", "body": "green", "app": "CI",
                        "priority": "high", "tags": ["ci"]}),
        )
        .await;
    assert_eq!(published["targets"], 2);
    let id = id_of(&published);
    let sent_at = app.clock.now_ms();
    assert_eq!(ws.receive(1).await[0]["id"], id.as_str());

    let body = wait_for_notification(&app, &id, |n| {
        delivery_to(n, &online.id)["status"] == "sent"
    })
    .await;
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["title"], "Build finished");
    assert_eq!(body["app"], "CI");
    assert_eq!(body["priority"], "high");
    assert_eq!(body["targets"], 2);
    assert_eq!(body["status"], "queued", "one delivery still waits: {body}");
    assert_eq!(body["deliveries"].as_array().unwrap().len(), 2, "{body}");
    let sent = delivery_to(&body, &online.id);
    assert_eq!(sent["attempts"], 1, "{body}");
    assert_eq!(millis(&sent["sentAt"]), sent_at);
    assert_eq!(sent["ackedAt"], Value::Null);
    let queued = delivery_to(&body, &offline.id);
    assert_eq!(queued["status"], "queued", "{body}");
    assert_eq!(queued["attempts"], 0, "{body}");
    assert_eq!(queued["sentAt"], Value::Null);
    assert_eq!(queued["ackedAt"], Value::Null);

    app.clock.advance(Duration::from_secs(3));
    ws.ack(&[&id]).await;
    let body = wait_for_notification(&app, &id, |n| {
        delivery_to(n, &online.id)["status"] == "acked"
    })
    .await;
    let acked = delivery_to(&body, &online.id);
    assert_eq!(acked["attempts"], 1, "{body}");
    assert_eq!(millis(&acked["sentAt"]), sent_at);
    assert_eq!(millis(&acked["ackedAt"]), sent_at + 3_000);
    assert_eq!(delivery_to(&body, &offline.id)["status"], "queued");

    // Then the other device connects and acknowledges: the whole notification is acked.
    let mut late = app.connect_device(&offline).await;
    assert_eq!(late.receive(1).await[0]["id"], id.as_str());
    late.ack(&[&id]).await;
    let body = wait_for_delivery_status(&app, &id, "acked").await;
    assert_eq!(body["status"], "acked");
    assert_eq!(
        millis(&delivery_to(&body, &offline.id)["sentAt"]),
        sent_at + 3_000
    );
}

#[actix_web::test]
async fn batch_publish_returns_ids_in_order_and_everything_arrives() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let items: Vec<Value> = (0..7)
        .map(|i| json!({"title": format!("b{i}"), "app": "batch"}))
        .collect();
    let (status, body) = app
        .post(
            "/api/v1/notifications/batch",
            Some(&app.admin_token),
            &json!({"items": items}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let ids = item_ids(&body);
    assert_eq!(ids.len(), 7, "{body}");
    assert_eq!(as_set(ids.clone()).len(), 7, "{body}");
    assert!(ids.iter().all(|id| id.starts_with("ntf_")), "{body}");

    let received = ws.receive(7).await;
    assert_eq!(received.len(), 7);
    let by_title: HashMap<String, String> = received
        .iter()
        .map(|i| {
            (
                i["title"].as_str().unwrap().to_owned(),
                i["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(by_title.get(&format!("b{i}")), Some(id), "item {i}");
    }
    // Same priority: oldest first, i.e. in batch order.
    let order: Vec<&str> = received.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(order, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        as_set(list_ids(&app, "/api/v1/notifications?app=batch").await),
        as_set(ids)
    );
}
