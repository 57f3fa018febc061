//! Tests: device groups: joining at pairing, by the admin and by the device itself, publishing to
//! `group:NAME`, and groups surviving a restart.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, start_in, test_settings, Device, TestApp};

/// Pairs a device that joins `groups`.
async fn pair_in(app: &TestApp, name: &str, groups: &[&str]) -> Device {
    let code = app.pairing_code().await;
    let (status, body) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": name, "platform": "linux", "groups": groups}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    Device {
        id: body["deviceId"].as_str().unwrap().to_owned(),
        access_token: body["accessToken"].as_str().unwrap().to_owned(),
        refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
    }
}

async fn groups_of(app: &TestApp, device: &Device) -> Value {
    let (status, body) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["groups"].clone()
}

/// The devices a notification went to.
async fn recipients(app: &TestApp, id: &str) -> HashSet<String> {
    let (status, body) = app
        .get(
            &format!("/api/v1/notifications/{id}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_owned())
        .collect()
}

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[actix_web::test]
async fn a_publish_to_a_group_reaches_its_members_only() {
    let app = spawn_app().await;
    let phone = pair_in(&app, "phone", &["alerts", "home"]).await;
    let laptop = pair_in(&app, "laptop", &["home"]).await;
    let other = app.pair_device("other").await;
    assert_eq!(groups_of(&app, &phone).await, json!(["alerts", "home"]));
    assert_eq!(groups_of(&app, &other).await, json!([]));

    let mut ws = app.connect_device(&phone).await;
    let alert = app
        .publish(json!({"title": "disk full", "targets": "group:alerts"}))
        .await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], alert["id"]);
    assert_eq!(alert["targets"], 1);

    let home = app
        .publish(json!({"title": "door", "targets": ["group:home", other.id]}))
        .await;
    assert_eq!(home["targets"], 3);
    assert_eq!(
        recipients(&app, home["id"].as_str().unwrap()).await,
        set(&[&phone.id, &laptop.id, &other.id])
    );
}

#[actix_web::test]
async fn a_group_no_device_is_in_is_refused_and_nothing_is_queued() {
    let app = spawn_app().await;
    let phone = pair_in(&app, "phone", &["alerts"]).await;
    let (status, body) = app
        .post(
            "/api/v1/notifications",
            Some(&app.admin_token),
            &json!({"title": "t", "targets": ["group:alerts", "group:nobody"]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "targets");
    assert_eq!(body["errors"][0]["reason"], "no device is in group nobody");
    let (_, listed) = app
        .get("/api/v1/notifications", Some(&app.admin_token))
        .await;
    assert_eq!(listed["items"], json!([]), "nothing was queued");

    // Badly formed group names are request errors, by index.
    let (status, body) = app
        .post(
            "/api/v1/notifications",
            Some(&app.admin_token),
            &json!({"title": "t", "targets": [phone.id, "group:no way"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "targets[1]");
}

#[actix_web::test]
async fn groups_are_set_by_the_admin_and_by_the_device_itself_and_validated() {
    let app = spawn_app().await;
    let phone = app.pair_device("phone").await;
    let other = app.pair_device("other").await;
    let path = format!("/api/v1/devices/{}", phone.id);

    let (status, body) = app
        .patch(
            &path,
            Some(&app.admin_token),
            &json!({"groups": ["ops", "alerts", "ops"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["groups"],
        json!(["alerts", "ops"]),
        "sorted, once each"
    );

    let (status, body) = app
        .patch(
            &path,
            Some(&phone.access_token),
            &json!({"groups": ["night"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["groups"],
        json!(["night"]),
        "the list replaces the old one"
    );
    // The change reaches the queue at once: the old group is gone, the new one has a member.
    let (status, _) = app
        .post(
            "/api/v1/notifications",
            Some(&app.admin_token),
            &json!({"title": "t", "targets": "group:alerts"}),
        )
        .await;
    assert_eq!(status, 422);
    let published = app
        .publish(json!({"title": "t", "targets": "group:night"}))
        .await;
    assert_eq!(published["targets"], 1);

    // Another device cannot change it.
    let (status, _) = app
        .patch(&path, Some(&other.access_token), &json!({"groups": ["x"]}))
        .await;
    assert_eq!(status, 403);

    let (status, body) = app
        .patch(
            &path,
            Some(&app.admin_token),
            &json!({"groups": ["fine", "not/fine"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "groups");
    assert!(
        body["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("\"not/fine\""),
        "{body}"
    );
    let many: Vec<String> = (0..33).map(|i| format!("g{i}")).collect();
    let (status, _) = app
        .patch(&path, Some(&app.admin_token), &json!({ "groups": many }))
        .await;
    assert_eq!(status, 400);
    assert_eq!(groups_of(&app, &phone).await, json!(["night"]), "unchanged");

    let (status, _) = app
        .patch(&path, Some(&app.admin_token), &json!({"groups": []}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(groups_of(&app, &phone).await, json!([]));
}

#[actix_web::test]
async fn groups_survive_a_restart_sealed_in_the_store() {
    let app = spawn_app().await;
    let phone = pair_in(&app, "phone", &["secret-project"]).await;
    let data_dir = app.stop().await;
    for file in ["beepmyphone.db", "beepmyphone.db-wal", "beepmyphone.db-shm"] {
        let Ok(bytes) = std::fs::read(data_dir.path().join(file)) else {
            continue;
        };
        assert!(
            !bytes
                .windows(b"secret-project".len())
                .any(|w| w == b"secret-project"),
            "group names are sealed at rest ({file})"
        );
    }
    let settings = test_settings(data_dir.path());
    let app = start_in(data_dir, settings).await;
    let published = app
        .publish(json!({"title": "t", "targets": "group:secret-project"}))
        .await;
    assert_eq!(
        recipients(&app, published["id"].as_str().unwrap()).await,
        set(&[&phone.id])
    );
}
