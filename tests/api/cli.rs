//! Tests: the client commands `send` and `listen`, run as the real binary against an in-process
//! relay. The binary runs through `tokio::process` so the relay keeps serving while we wait.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{spawn_app, wait_for_delivery_status, Device, TestApp};

/// How long one run of the binary may take.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary with a clean environment for the client settings.
pub(crate) fn beep(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beepmyphone"));
    cmd.args(args)
        .env_remove("BEEP_TOKEN")
        .env_remove("BEEP_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// What a finished run printed.
pub(crate) struct Run {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts that no output contains `secret`.
    pub(crate) fn assert_hides(&self, secret: &str) {
        assert!(!self.stdout.contains(secret), "stdout leaks a secret");
        assert!(!self.stderr.contains(secret), "stderr leaks a secret");
    }
}

pub(crate) async fn finish(child: Child) -> Run {
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("the command finished in time")
        .expect("the command ran");
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub(crate) async fn run(mut cmd: Command) -> Run {
    finish(cmd.spawn().expect("start the binary")).await
}

/// Polls until `path` exists (another OS process writes it).
pub(crate) async fn wait_for_file(path: &Path) {
    crate::helpers::eventually(&format!("{} appears", path.display()), || async {
        path.exists().then_some(())
    })
    .await;
}

pub(crate) fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("JSON")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Writes a credentials file for a device paired by the test harness.
fn write_credentials(path: &Path, server: &str, device: &Device, access_token: &str) {
    use std::os::unix::fs::PermissionsExt;
    let body = json!({
        "server": server,
        "deviceId": device.id,
        "accessToken": access_token,
        "refreshToken": device.refresh_token,
    });
    std::fs::write(path, body.to_string()).expect("write credentials");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Parses the JSON lines `listen` printed.
pub(crate) fn printed(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

pub(crate) async fn device_count(app: &TestApp) -> usize {
    let (status, body) = app.get("/api/v1/devices", Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().expect("items").len()
}

#[actix_web::test]
async fn send_delivers_to_a_connected_device_and_prints_the_id() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;

    let run = run(beep(&[
        "send",
        "--server",
        &app.address,
        "--token",
        &app.admin_token,
        "--priority",
        "high",
        "Build finished",
        "main is green",
    ]))
    .await;

    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr);
    let id = run.stdout.trim();
    assert!(id.starts_with("ntf_"), "stdout: {}", run.stdout);
    assert_eq!(run.stdout.lines().count(), 1);
    run.assert_hides(&app.admin_token);
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], id);
    assert_eq!(items[0]["title"], "Build finished");
    assert_eq!(items[0]["body"], "main is green");
    assert_eq!(items[0]["priority"], "high");
}

#[actix_web::test]
async fn send_reads_server_and_token_from_the_environment_and_targets_devices() {
    let app = spawn_app().await;
    let chosen = app.pair_device("chosen").await;
    let other = app.pair_device("other").await;
    let mut ws = app.connect_device(&chosen).await;

    let mut cmd = beep(&[
        "send", "--to", &chosen.id, "--app", "CI", "--tag", "ci", "Deployed",
    ]);
    cmd.env("BEEP_SERVER", format!("{}/", app.address))
        .env("BEEP_TOKEN", &app.admin_token);
    let run = run(cmd).await;

    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr);
    let id = run.stdout.trim().to_owned();
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["app"], "CI");
    assert_eq!(items[0]["tags"], json!(["ci"]));
    let (status, body) = app
        .get(
            &format!("/api/v1/notifications/{id}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deliveries = body["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{body}");
    assert!(!body.to_string().contains(&other.id), "{body}");
}

#[actix_web::test]
async fn send_to_a_group_reaches_its_members_and_an_empty_group_exits_1() {
    let app = spawn_app().await;
    let member = app.pair_device("member").await;
    let other = app.pair_device("other").await;
    let (status, body) = app
        .patch(
            &format!("/api/v1/devices/{}", member.id),
            Some(&app.admin_token),
            &json!({"groups": ["ci"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut ws = app.connect_device(&member).await;

    let mut cmd = beep(&["send", "--group", "ci", "Built"]);
    cmd.env("BEEP_SERVER", &app.address)
        .env("BEEP_TOKEN", &app.admin_token);
    let sent = run(cmd).await;
    assert_eq!(sent.code(), Some(0), "stderr: {}", sent.stderr);
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], sent.stdout.trim());
    let (_, shown) = app
        .get(
            &format!("/api/v1/notifications/{}", sent.stdout.trim()),
            Some(&app.admin_token),
        )
        .await;
    assert!(!shown.to_string().contains(&other.id), "{shown}");

    let mut cmd = beep(&["send", "--group", "nobody", "Built"]);
    cmd.env("BEEP_SERVER", &app.address)
        .env("BEEP_TOKEN", &app.admin_token);
    let refused = run(cmd).await;
    assert_eq!(refused.code(), Some(1));
    assert!(
        refused.stderr.contains("no device is in group nobody"),
        "{}",
        refused.stderr
    );
}

#[actix_web::test]
async fn send_with_a_bad_priority_exits_1_and_names_the_field() {
    let app = spawn_app().await;

    let run = run(beep(&[
        "send",
        "--server",
        &app.address,
        "--token",
        &app.admin_token,
        "--priority",
        "urgent",
        "Title",
    ]))
    .await;

    assert_eq!(run.code(), Some(1), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with("beepmyphone: "),
        "stderr: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("priority: must be one of low, normal, high, critical"),
        "stderr: {}",
        run.stderr
    );
    run.assert_hides(&app.admin_token);
}

#[actix_web::test]
async fn send_with_a_bad_token_exits_1() {
    let app = spawn_app().await;

    let run = run(beep(&[
        "send",
        "--server",
        &app.address,
        "--token",
        "bmp_not_a_real_token",
        "Title",
    ]))
    .await;

    assert_eq!(run.code(), Some(1), "stderr: {}", run.stderr);
    assert!(run.stderr.starts_with("beepmyphone: "), "{}", run.stderr);
    run.assert_hides("bmp_not_a_real_token");
}

#[actix_web::test]
async fn send_without_a_token_exits_2() {
    let app = spawn_app().await;

    let run = run(beep(&["send", "--server", &app.address, "Title"])).await;

    assert_eq!(run.code(), Some(2), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("BEEP_TOKEN"), "stderr: {}", run.stderr);
}

#[actix_web::test]
async fn send_to_an_unreachable_server_exits_1() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = format!("http://127.0.0.1:{port}");

    let run = run(beep(&[
        "send",
        "--server",
        &server,
        "--token",
        "bmp_secret",
        "Title",
    ]))
    .await;

    assert_eq!(run.code(), Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("cannot reach"),
        "stderr: {}",
        run.stderr
    );
    run.assert_hides("bmp_secret");
}

#[actix_web::test]
async fn listen_pairs_prints_acks_and_reuses_its_credentials() {
    let app = spawn_app().await;
    let config = tempfile::tempdir().expect("temp dir");
    let credentials = config.path().join("beepmyphone").join("device.json");
    let code = app.pairing_code().await;

    // First run: pairs with the code and stores the credentials under XDG_CONFIG_HOME.
    let mut cmd = beep(&[
        "listen",
        "--server",
        &app.address,
        "--code",
        &code,
        "--count",
        "1",
    ]);
    cmd.env("XDG_CONFIG_HOME", config.path());
    let child = cmd.spawn().expect("start listen");
    wait_for_file(&credentials).await;
    let first = app
        .publish(json!({"title": "Hello", "body": "from the test", "priority": "high"}))
        .await;
    let run1 = finish(child).await;

    assert_eq!(run1.code(), Some(0), "stderr: {}", run1.stderr);
    let items = printed(&run1);
    assert_eq!(items.len(), 1, "stdout: {}", run1.stdout);
    assert_eq!(items[0]["id"], first["id"]);
    assert_eq!(items[0]["title"], "Hello");
    assert_eq!(items[0]["body"], "from the test");
    assert_eq!(items[0]["priority"], "high");
    let first_id = first["id"].as_str().expect("id");
    wait_for_delivery_status(&app, first_id, "acked").await;

    assert_eq!(mode(&credentials), 0o600);
    assert_eq!(mode(credentials.parent().expect("dir")), 0o700);
    let stored = read_json(&credentials);
    let device_id = stored["deviceId"].as_str().expect("deviceId").to_owned();
    assert!(device_id.starts_with("dev_"), "{device_id}");
    assert_eq!(stored["server"], app.address.as_str());
    let access = stored["accessToken"].as_str().expect("accessToken");
    let refresh = stored["refreshToken"].as_str().expect("refreshToken");
    assert!(!access.is_empty() && !refresh.is_empty());
    run1.assert_hides(access);
    run1.assert_hides(refresh);
    let (status, device) = app
        .get(
            &format!("/api/v1/devices/{device_id}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["platform"], "linux");

    // Second run: no code; the stored credentials (and server) are reused.
    let second = app.publish(json!({"title": "Again"})).await;
    let mut cmd = beep(&["listen", "--count", "1"]);
    cmd.env("XDG_CONFIG_HOME", config.path());
    let run2 = run(cmd).await;

    assert_eq!(run2.code(), Some(0), "stderr: {}", run2.stderr);
    let items = printed(&run2);
    assert_eq!(items.len(), 1, "stdout: {}", run2.stdout);
    assert_eq!(items[0]["id"], second["id"]);
    wait_for_delivery_status(&app, second["id"].as_str().expect("id"), "acked").await;
    assert_eq!(device_count(&app).await, 1, "no second device was paired");
    assert_eq!(read_json(&credentials)["deviceId"], device_id.as_str());
}

#[actix_web::test]
async fn listen_prints_a_backlog_in_priority_order_and_acks_all_of_it() {
    let app = spawn_app().await;
    let device = app.pair_device("backlog").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");
    write_credentials(&credentials, &app.address, &device, &device.access_token);
    let low = app
        .publish(json!({"title": "low", "priority": "low"}))
        .await;
    let critical = app
        .publish(json!({"title": "critical", "priority": "critical"}))
        .await;
    let normal = app.publish(json!({"title": "normal"})).await;

    let run = run(beep(&[
        "listen",
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
        "--count",
        "3",
    ]))
    .await;

    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr);
    let ids: Vec<Value> = printed(&run).iter().map(|i| i["id"].clone()).collect();
    assert_eq!(
        ids,
        [
            critical["id"].clone(),
            normal["id"].clone(),
            low["id"].clone()
        ]
    );
    for id in &ids {
        wait_for_delivery_status(&app, id.as_str().expect("id"), "acked").await;
    }
    run.assert_hides(&device.access_token);
}

#[actix_web::test]
async fn listen_exec_runs_a_command_per_notification_with_its_fields_and_acks_after_it() {
    let app = spawn_app().await;
    let device = app.pair_device("automation").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");
    write_credentials(&credentials, &app.address, &device, &device.access_token);
    let first = app
        .publish(
            json!({"title": "Door", "body": "front door\nopened", "priority": "high",
            "tags": ["home", "door"], "clickUrl": "https://cam.example/1"}),
        )
        .await;
    let second = app.publish(json!({"title": "fails"})).await;
    let log = dir.path().join("ran.log");

    // The second command fails: reported, acked all the same, and listen carries on.
    let command = format!(
        r#"printf '%s|%s|%s|%s|%s\n' "$BEEP_ID" "$BEEP_TITLE" "$BEEP_PRIORITY" "$BEEP_TAGS" "$BEEP_CLICK_URL" >> {log}; printf '%s\n' "$BEEP_BODY" >> {log}; test "$BEEP_TITLE" != fails"#,
        log = log.display()
    );
    let run = run(beep(&[
        "listen",
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
        "--count",
        "2",
        "--exec",
        &command,
    ]))
    .await;

    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "nothing printed with --exec: {}",
        run.stdout
    );
    let (first_id, second_id) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let ran = std::fs::read_to_string(&log).expect("the commands ran");
    assert_eq!(
        ran,
        format!(
            "{first_id}|Door|high|home,door|https://cam.example/1\nfront door\nopened\n{second_id}|fails|normal||\n\n"
        )
    );
    assert!(
        run.stderr
            .contains(&format!("--exec for {second_id} ended with")),
        "{}",
        run.stderr
    );
    for id in [first_id, second_id] {
        wait_for_delivery_status(&app, id, "acked").await;
    }
}

#[actix_web::test]
async fn listen_refreshes_a_refused_access_token_and_saves_the_rotated_pair() {
    let app = spawn_app().await;
    let device = app.pair_device("stale").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");
    // An access token the relay refuses: the socket closes with 4001 and the client refreshes.
    write_credentials(&credentials, &app.address, &device, "not.a.token");
    let published = app.publish(json!({"title": "after refresh"})).await;

    let run = run(beep(&[
        "listen",
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
        "--count",
        "1",
    ]))
    .await;

    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("4001"), "stderr: {}", run.stderr);
    assert_eq!(printed(&run)[0]["id"], published["id"]);
    let stored = read_json(&credentials);
    assert_eq!(stored["deviceId"], device.id.as_str());
    assert_ne!(stored["refreshToken"], device.refresh_token.as_str());
    assert_ne!(stored["accessToken"], "not.a.token");
    assert_eq!(mode(&credentials), 0o600);
    run.assert_hides(stored["refreshToken"].as_str().expect("refreshToken"));
    run.assert_hides(&device.refresh_token);
    // The stored refresh token is the live one of the family.
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": stored["refreshToken"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn listen_exits_1_when_the_device_is_revoked() {
    let app = spawn_app().await;
    let device = app.pair_device("doomed").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");
    write_credentials(&credentials, &app.address, &device, &device.access_token);
    app.publish(json!({"title": "before"})).await;

    let mut child = beep(&[
        "listen",
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
    ])
    .spawn()
    .expect("start listen");
    // Once the first notification is printed, the device is connected.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(RUN_TIMEOUT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("a line");
    assert_eq!(
        serde_json::from_str::<Value>(&first).expect("JSON")["title"],
        "before"
    );
    assert_eq!(
        app.delete(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token)
        )
        .await,
        204
    );
    let run = finish(child).await;

    assert_eq!(run.code(), Some(1), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("revoked"), "stderr: {}", run.stderr);
    run.assert_hides(&device.access_token);
    run.assert_hides(&device.refresh_token);
}

#[actix_web::test]
async fn listen_without_code_or_credentials_exits_2() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials: PathBuf = dir.path().join("device.json");

    let run = run(beep(&[
        "listen",
        "--server",
        &app.address,
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
    ]))
    .await;

    assert_eq!(run.code(), Some(2), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("--code"), "stderr: {}", run.stderr);
    assert!(!credentials.exists());
}

#[actix_web::test]
async fn listen_with_a_used_code_exits_1_with_the_relays_reason() {
    let app = spawn_app().await;
    let code = app.pairing_code().await;
    let (status, body) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": "first", "platform": "linux"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");

    let run = run(beep(&[
        "listen",
        "--server",
        &app.address,
        "--code",
        &code,
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
    ]))
    .await;

    assert_eq!(run.code(), Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("pairing code"),
        "stderr: {}",
        run.stderr
    );
    assert!(!credentials.exists());
}

#[actix_web::test]
async fn listen_refuses_credentials_of_another_server_without_a_code() {
    let app = spawn_app().await;
    let device = app.pair_device("elsewhere").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");
    write_credentials(
        &credentials,
        "http://127.0.0.1:9",
        &device,
        &device.access_token,
    );

    let run = run(beep(&[
        "listen",
        "--server",
        &app.address,
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
    ]))
    .await;

    assert_eq!(run.code(), Some(2), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("http://127.0.0.1:9"),
        "stderr: {}",
        run.stderr
    );
    run.assert_hides(&device.refresh_token);
}

#[actix_web::test]
async fn listen_pairs_again_with_a_spare_code_after_a_revocation() {
    let app = spawn_app().await;
    let device = app.pair_device("revoked").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");
    write_credentials(&credentials, &app.address, &device, &device.access_token);
    assert_eq!(
        app.delete(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token)
        )
        .await,
        204
    );
    let code = app.pairing_code().await;

    // The stored device is gone (close 4003); the code given is used to pair again.
    let child = beep(&[
        "listen",
        "--code",
        &code,
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
        "--count",
        "1",
        "--name",
        "second life",
    ])
    .spawn()
    .expect("start listen");
    // The `listen` process rewrites its credentials file: no signal reaches this process.
    let new_id = crate::helpers::eventually("listen paired again", || async {
        let id = read_json(&credentials)["deviceId"].clone();
        (id != device.id.as_str()).then_some(id)
    })
    .await;
    let published = app.publish(json!({"title": "welcome back"})).await;
    let run = finish(child).await;

    assert_eq!(run.code(), Some(0), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("revoked"), "stderr: {}", run.stderr);
    assert_eq!(printed(&run)[0]["id"], published["id"]);
    let (status, body) = app
        .get(
            &format!("/api/v1/devices/{}", new_id.as_str().expect("id")),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "second life");
    assert_eq!(mode(&credentials), 0o600);
}
