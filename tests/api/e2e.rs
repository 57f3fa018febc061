//! End-to-end encryption, from outside: `send --e2e` (the real binary) seals per device and the
//! relay stores and forwards what it cannot read (not in its database files, not in its log);
//! `listen` registers a key at pairing and prints the opened notification; a device without a
//! key is a clear error; the publish rules of `encrypted`; a restart still delivers an envelope.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use beepmyphone::crypto::e2e::{self, Content, SecretKey};

use crate::helpers::{
    beep, database_files, eventually, spawn_app, spawn_app_with_log, start_in, test_settings,
    Device, TestApp,
};

/// Pairs a device that registers an end-to-end key; returns it with its secret.
pub(crate) async fn pair_with_key(app: &TestApp, name: &str) -> (Device, SecretKey) {
    let (secret, public) = e2e::generate_keypair();
    let code = app.pairing_code().await;
    let (status, body) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": name, "platform": "linux", "e2eKey": e2e::encode_key(&public)}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let device = Device {
        id: body["deviceId"].as_str().unwrap().to_owned(),
        access_token: body["accessToken"].as_str().unwrap().to_owned(),
        refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
    };
    (device, secret)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `send --e2e` with the admin token.
async fn send_e2e(app: &TestApp, extra: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "send",
        "--server",
        &app.address,
        "--token",
        &app.admin_token,
        "--e2e",
    ];
    args.extend_from_slice(extra);
    beep(dir.path(), &args).await
}

#[actix_rt::test]
async fn send_e2e_is_unreadable_in_the_database_and_the_log_and_opens_on_the_device() {
    let (app, log) = spawn_app_with_log().await;
    let (device, secret) = pair_with_key(&app, "phone").await;
    let mut ws = app.connect_device(&device).await;
    const TITLE: &str = "Vault code zebra-quartz";
    const BODY: &str = "the combination is 31-41-59-26";

    let (code, stdout, stderr) = send_e2e(
        &app,
        &[
            "--to",
            &device.id,
            "--priority",
            "high",
            "--tag",
            "secret-tag-xyzzy",
            TITLE,
            BODY,
        ],
    )
    .await;
    assert_eq!(code, 0, "stderr: {stderr}");
    let ids: Vec<&str> = stdout.lines().collect();
    assert_eq!(ids.len(), 1, "{stdout}");

    let items = ws.receive(1).await;
    let item = &items[0];
    assert_eq!(item["id"], ids[0]);
    assert_eq!(item["title"], "Encrypted notification");
    assert_eq!(item["body"], "");
    assert_eq!(item["priority"], "high");
    assert_eq!(item["tags"], json!([]));
    let envelope = item["encrypted"].as_str().expect("an envelope");
    let content = e2e::open(&device.id, &secret, envelope).expect("opens with the device's key");
    assert_eq!(content.title, TITLE);
    assert_eq!(content.body, BODY);
    assert_eq!(content.tags, ["secret-tag-xyzzy"]);
    ws.ack(&[ids[0]]).await;

    // The relay's copies: the admin view shows the placeholder, the files and the log neither.
    let (status, stored) = app
        .get(
            &format!("/api/v1/notifications/{}", ids[0]),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["title"], "Encrypted notification");
    let files = database_files(app.data_dir.path());
    assert!(!files.is_empty());
    for (name, bytes) in &files {
        for needle in [TITLE, BODY, "zebra-quartz", "secret-tag-xyzzy"] {
            assert!(!contains(bytes, needle), "{needle:?} is readable in {name}");
        }
    }
    let text = log.text();
    assert!(text.contains(ids[0]), "the log names the notification");
    for needle in [TITLE, BODY, "zebra-quartz", "secret-tag-xyzzy"] {
        assert!(!text.contains(needle), "{needle:?} is in the relay's log");
    }
}

#[actix_rt::test]
async fn listen_registers_a_key_at_pairing_and_prints_the_opened_notification() {
    let app = spawn_app().await;
    let config = tempfile::tempdir().unwrap();
    let credentials = config.path().join("beepmyphone").join("device.json");
    let code = app.pairing_code().await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
        .args([
            "listen",
            "--server",
            &app.address,
            "--code",
            &code,
            "--count",
            "1",
        ])
        .env_remove("BEEP_TOKEN")
        .env_remove("BEEP_SERVER")
        .env("XDG_CONFIG_HOME", config.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stored: Value = eventually("listen saves its credentials", || async {
        let text = std::fs::read_to_string(&credentials).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    let device_id = stored["deviceId"].as_str().unwrap().to_owned();
    let secret = SecretKey::from_base64(stored["e2eSecret"].as_str().expect("e2eSecret")).unwrap();
    let (status, device) = app
        .get(
            &format!("/api/v1/devices/{device_id}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["e2eKey"], e2e::encode_key(&secret.public_key()));

    let (code, stdout, stderr) =
        send_e2e(&app, &["--to", &device_id, "Door opened", "at the back"]).await;
    assert_eq!(code, 0, "stderr: {stderr}");
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("listen finished")
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let item: Value = serde_json::from_str(printed.lines().next().expect("a line")).unwrap();
    assert_eq!(item["id"], stdout.trim());
    assert_eq!(item["title"], "Door opened");
    assert_eq!(item["body"], "at the back");
    assert_eq!(item["e2e"], true);
    assert!(item.get("encrypted").is_none(), "{item}");
}

#[actix_rt::test]
async fn a_device_without_a_key_is_a_clear_error_until_it_registers_one() {
    let app = spawn_app().await;
    let (with_key, _) = pair_with_key(&app, "keyed").await;
    let plain = app.pair_device("plain").await;
    let expected = format!(
        "device {} has no end-to-end key; pair it with one or publish without --e2e",
        plain.id
    );

    let (code, stdout, stderr) = send_e2e(&app, &["Hello"]).await;
    assert_eq!(code, 1, "stdout: {stdout}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stdout.is_empty(), "nothing was published: {stdout}");

    let (status, body) = app
        .post(
            "/api/v1/e2e/keys",
            Some(&app.admin_token),
            &json!({"targets": [plain.id]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains(&expected),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/api/v1/e2e/keys",
            Some(&app.admin_token),
            &json!({"targets": ["dev_00000000000000000000000000"]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    // A device token may not ask.
    let (status, _) = app
        .post("/api/v1/e2e/keys", Some(&with_key.access_token), &json!({}))
        .await;
    assert_eq!(status, 403);

    // The device registers a key itself; null removes it again.
    let (_, public) = e2e::generate_keypair();
    let key = e2e::encode_key(&public);
    let (status, view) = app
        .patch(
            &format!("/api/v1/devices/{}", plain.id),
            Some(&plain.access_token),
            &json!({"e2eKey": key}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["e2eKey"], key.as_str());
    let (status, body) = app
        .post("/api/v1/e2e/keys", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<&str> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["deviceId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = vec![with_key.id.as_str(), plain.id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    let (status, view) = app
        .patch(
            &format!("/api/v1/devices/{}", plain.id),
            Some(&app.admin_token),
            &json!({"e2eKey": null}),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["e2eKey"], Value::Null);
    let (status, _) = app
        .patch(
            &format!("/api/v1/devices/{}", plain.id),
            Some(&app.admin_token),
            &json!({"e2eKey": "short"}),
        )
        .await;
    assert_eq!(status, 400);
}

#[actix_rt::test]
async fn encrypted_publishes_need_one_device_and_no_content_fields() {
    let app = spawn_app().await;
    let (device, _) = pair_with_key(&app, "phone").await;
    let (other, _) = pair_with_key(&app, "tablet").await;
    let (_, public) = e2e::generate_keypair();
    let envelope = e2e::seal(&device.id, &public, &Content::default()).unwrap();
    let publish = |body: Value| {
        let app = &app;
        async move {
            app.post("/api/v1/notifications", Some(&app.admin_token), &body)
                .await
        }
    };
    let refused = [
        (
            json!({"encrypted": envelope, "targets": [device.id, other.id]}),
            "targets",
        ),
        (json!({"encrypted": envelope}), "targets"),
        (
            json!({"encrypted": envelope, "targets": ["group:all"]}),
            "targets",
        ),
        (
            json!({"encrypted": envelope, "targets": [device.id], "title": "t"}),
            "title",
        ),
        (
            json!({"encrypted": envelope, "targets": [device.id], "body": "b"}),
            "body",
        ),
        (
            json!({"encrypted": envelope, "targets": [device.id], "tags": ["x"]}),
            "tags",
        ),
        (
            json!({"encrypted": "AQ", "targets": [device.id]}),
            "encrypted",
        ),
        (
            json!({"encrypted": "not base64!", "targets": [device.id]}),
            "encrypted",
        ),
        (
            json!({"encrypted": format!("Ag{}", &envelope[2..]), "targets": [device.id]}),
            "encrypted",
        ),
        (json!({"body": "no title"}), "title"),
    ];
    for (body, field) in refused {
        let (status, problem) = publish(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {problem}");
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{body}: {problem}");
    }
    let (status, body) = publish(json!({
        "encrypted": envelope, "targets": [device.id], "app": "bank", "priority": "high"
    }))
    .await;
    assert_eq!(status, 202, "{body}");
}

#[actix_rt::test]
async fn a_queued_encrypted_notification_is_delivered_after_a_restart() {
    let app = spawn_app().await;
    let (device, secret) = pair_with_key(&app, "phone").await;
    let content = Content {
        title: "after the restart".into(),
        body: "still sealed".into(),
        ..Content::default()
    };
    let public = secret.public_key();
    let envelope = e2e::seal(&device.id, &public, &content).unwrap();
    let published = app
        .publish(json!({"encrypted": envelope, "targets": [device.id]}))
        .await;
    let data_dir = app.stop().await;
    let settings = test_settings(data_dir.path());
    let app = start_in(data_dir, settings).await;
    let mut ws = app.connect_device(&device).await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], published["id"]);
    assert_eq!(items[0]["encrypted"], envelope.as_str());
    assert_eq!(
        e2e::open(&device.id, &secret, items[0]["encrypted"].as_str().unwrap()).unwrap(),
        content
    );
}
