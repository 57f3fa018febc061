//! Tests: `listen` with a list of relays, as the real binary. Pairing goes past a relay that does
//! not answer; the CA fingerprint is checked on every relay of the list; a listener whose relay is
//! killed moves to the next relay of the list, which (one PostgreSQL database, one Redis, one keys
//! directory, as tests/api/cluster.rs sets up) knows the device, and receives what is published
//! there. The cluster test needs the machine's PostgreSQL (`BEEP_TEST_POSTGRES`, default
//! postgres://postgres@127.0.0.1:5432) and Redis (`BEEP_TEST_REDIS`) and fails when either does
//! not answer.

use std::path::Path;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};

use crate::cli::{beep, device_count, finish, printed, read_json, run, wait_for_file, RUN_TIMEOUT};
use crate::helpers::{
    fresh_postgres_database, spawn_app, spawn_app_with, spawn_process_with, start_in,
    test_postgres_server, test_settings, tls_client, wait_for_delivery_status,
};

/// A URL nothing answers at: a port that was just free.
fn closed_server() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("http://127.0.0.1:{port}")
}

/// A child's output read line by line as it comes, keeping everything read.
struct Transcript<R> {
    lines: Lines<BufReader<R>>,
    text: String,
}

impl<R: AsyncRead + Unpin> Transcript<R> {
    fn new(output: R) -> Self {
        Self {
            lines: BufReader::new(output).lines(),
            text: String::new(),
        }
    }

    /// Reads until a line contains `needle`; returns that line. Panics at the end of the output
    /// or after [`RUN_TIMEOUT`], with what was read.
    async fn line_with(&mut self, needle: &str) -> String {
        let (lines, text) = (&mut self.lines, &mut self.text);
        let found = tokio::time::timeout(RUN_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("read the output") {
                text.push_str(&line);
                text.push('\n');
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("the output ended without {needle:?}:\n{}", self.text),
            Err(_) => panic!("no {needle:?} within {RUN_TIMEOUT:?}:\n{}", self.text),
        }
    }

    /// Everything, once the output has ended.
    async fn rest(mut self) -> String {
        while let Some(line) = self.lines.next_line().await.expect("read the output") {
            self.text.push_str(&line);
            self.text.push('\n');
        }
        self.text
    }
}

#[actix_web::test]
async fn listen_pairs_past_a_server_that_does_not_answer_and_keeps_the_list() {
    let app = spawn_app().await;
    let dead = closed_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");
    let creds = credentials.to_str().expect("utf-8 path");
    let code = app.pairing_code().await;

    // The first server is the primary; it does not answer, so the second pairs and delivers.
    let child = beep(&[
        "listen",
        "--server",
        &dead,
        "--server",
        &app.address,
        "--code",
        &code,
        "--credentials",
        creds,
        "--count",
        "1",
    ])
    .spawn()
    .expect("start listen");
    wait_for_file(&credentials).await;
    let first = app.publish(json!({"title": "past the dead one"})).await;
    let run1 = finish(child).await;

    assert_eq!(run1.code(), Some(0), "stderr: {}", run1.stderr);
    assert_eq!(printed(&run1)[0]["id"], first["id"]);
    wait_for_delivery_status(&app, first["id"].as_str().expect("id"), "acked").await;
    assert!(
        run1.stderr.contains(&format!("cannot reach {dead}"))
            && run1
                .stderr
                .contains(&format!("pairing with {} instead", app.address))
            && run1
                .stderr
                .contains(&format!("connected to {}", app.address)),
        "stderr: {}",
        run1.stderr
    );
    let stored = read_json(&credentials);
    assert_eq!(
        stored["server"],
        dead.as_str(),
        "the primary, for older versions"
    );
    assert_eq!(stored["servers"], json!([dead, app.address]));
    for secret in ["accessToken", "refreshToken"] {
        run1.assert_hides(stored[secret].as_str().expect(secret));
    }

    // Again from BEEP_SERVER's comma-separated list, no code: the stored credentials serve both
    // relays; the primary is tried first and the listener moves on at once.
    let second = app.publish(json!({"title": "from the list"})).await;
    let mut cmd = beep(&["listen", "--credentials", creds, "--count", "1"]);
    cmd.env("BEEP_SERVER", format!("{dead}, {}/", app.address));
    let run2 = run(cmd).await;

    assert_eq!(run2.code(), Some(0), "stderr: {}", run2.stderr);
    assert_eq!(printed(&run2)[0]["id"], second["id"]);
    assert!(
        run2.stderr.contains(&format!("moving to {}", app.address))
            && !run2.stderr.contains("reconnecting"),
        "no backoff before the round is over: {}",
        run2.stderr
    );
    assert_eq!(device_count(&app).await, 1, "no second device was paired");

    // A relay the device was not paired with gets none of its tokens: not without a code.
    let stranger = closed_server();
    let run3 = run(beep(&[
        "listen",
        "--server",
        &app.address,
        "--server",
        &stranger,
        "--credentials",
        creds,
    ]))
    .await;
    assert_eq!(run3.code(), Some(2), "stderr: {}", run3.stderr);
    assert!(
        run3.stderr.contains(&format!("not on {stranger};")),
        "stderr: {}",
        run3.stderr
    );
    assert_eq!(read_json(&credentials)["servers"], stored["servers"]);
}

#[actix_web::test]
async fn the_ca_fingerprint_is_checked_on_every_server_of_the_list() {
    let app = spawn_app_with(|s| s.tls.mode = beepmyphone::config::TlsMode::LocalCa).await;
    let pin = app.certificate().pin.expect("a pin");
    let dead = closed_server().replacen("http://", "https://", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = dir.path().join("device.json");
    let creds = credentials.to_str().expect("utf-8 path");
    let code = app.pairing_code().await;

    // A wrong pin refuses the second relay too (and the code stays unused: no request was sent).
    let wrong = format!("sha256:{}", "00".repeat(32));
    let refused = run(beep(&[
        "listen",
        "--server",
        &dead,
        "--server",
        &app.address,
        "--ca-fingerprint",
        &wrong,
        "--code",
        &code,
        "--credentials",
        creds,
    ]))
    .await;
    assert_eq!(refused.code(), Some(1), "stderr: {}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains(&format!("cannot reach {}", app.address))
            && refused.stderr.contains("not trusted"),
        "stderr: {}",
        refused.stderr
    );
    assert!(!credentials.exists());

    // The right pin: the second relay pairs and delivers, and the pin is kept with the list.
    let child = beep(&[
        "listen",
        "--server",
        &dead,
        "--server",
        &app.address,
        "--ca-fingerprint",
        &pin,
        "--code",
        &code,
        "--credentials",
        creds,
        "--count",
        "1",
    ])
    .spawn()
    .expect("start listen");
    wait_for_file(&credentials).await;
    let first = app.publish(json!({"title": "pinned"})).await;
    let paired = finish(child).await;
    assert_eq!(paired.code(), Some(0), "stderr: {}", paired.stderr);
    assert_eq!(printed(&paired)[0]["id"], first["id"]);
    let stored = read_json(&credentials);
    assert_eq!(stored["caFingerprint"], pin.as_str());
    assert_eq!(stored["servers"], json!([dead, app.address]));

    // No flag: the kept pin, not the system's store (which does not know the local CA), checks
    // the relay reached after the primary.
    let second = app.publish(json!({"title": "still pinned"})).await;
    let again = run(beep(&["listen", "--credentials", creds, "--count", "1"])).await;
    assert_eq!(again.code(), Some(0), "stderr: {}", again.stderr);
    assert_eq!(printed(&again)[0]["id"], second["id"]);
}

/// The settings every relay of a test cluster shares, as `BEEP__…` variables and as settings.
struct Cluster {
    url: String,
    redis: String,
    prefix: String,
    keys: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Self {
        let server = test_postgres_server()
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned());
        let url = fresh_postgres_database(
            &server,
            &format!("beep_t_{}", ulid::Ulid::new().to_string().to_lowercase()),
        );
        Self {
            url,
            redis: crate::identity::redis_url(),
            prefix: format!("beeptest:{}:", ulid::Ulid::new()),
            keys: tempfile::tempdir().expect("keys dir"),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BEEP__STORAGE__URL", self.url.clone()),
            (
                "BEEP__STORAGE__KEYS_DIR",
                self.keys.path().to_str().expect("utf-8 path").to_owned(),
            ),
            ("BEEP__REDIS__URL", self.redis.clone()),
            ("BEEP__REDIS__KEY_PREFIX", self.prefix.clone()),
        ]
    }

    fn settings(&self, dir: &Path) -> beepmyphone::config::Settings {
        let mut s = test_settings(dir);
        s.storage.url = self.url.clone().into();
        s.storage.keys_dir = self.keys.path().to_path_buf();
        s.redis.url = self.redis.clone();
        s.redis.key_prefix = self.prefix.clone();
        s
    }
}

#[actix_web::test]
async fn a_listener_whose_relay_is_killed_moves_to_the_next_relay_and_receives_there() {
    let cluster = Cluster::new();
    // Relay 1 is the real binary, so that it can die with SIGKILL.
    let dir1 = tempfile::tempdir().expect("temp dir");
    let env = cluster.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let one = spawn_process_with(dir1.path(), &env);
    let admin_token = std::fs::read_to_string(dir1.path().join("initial-admin-token"))
        .expect("relay 1's admin token")
        .trim()
        .to_owned();

    // The device pairs through relay 1 before relay 2 starts, so relay 2 loads it at its start.
    let client = tls_client(&beepmyphone::tls::client::Trust::System);
    let api = |path: &str| format!("{}/api/v1{path}", one.address);
    let mut res = client
        .post(api("/pairing-codes"))
        .bearer_auth(&admin_token)
        .send_json(&json!({}))
        .await
        .expect("mint a code");
    assert_eq!(res.status(), 201);
    let code: Value = res.json().await.expect("JSON");
    let mut res = client
        .post(api("/devices/pair"))
        .send_json(&json!({"code": code["code"], "name": "phone", "platform": "linux"}))
        .await
        .expect("pair");
    assert_eq!(res.status(), 201);
    let paired: Value = res.json().await.expect("JSON");
    let device_id = paired["deviceId"].as_str().expect("deviceId").to_owned();

    let dir2 = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir2.path().join("initial-admin-token"), &admin_token).expect("token");
    let settings = cluster.settings(dir2.path());
    let two = start_in(dir2, settings).await;

    let home = tempfile::tempdir().expect("temp dir");
    let credentials = home.path().join("device.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let body = json!({
            "server": one.address,
            "servers": [one.address, two.address],
            "deviceId": device_id,
            "accessToken": paired["accessToken"],
            "refreshToken": paired["refreshToken"],
        });
        std::fs::write(&credentials, body.to_string()).expect("write credentials");
        std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    let mut child = beep(&[
        "listen",
        "--credentials",
        credentials.to_str().expect("utf-8 path"),
        "--count",
        "1",
    ])
    .spawn()
    .expect("start listen");
    let mut stderr = Transcript::new(child.stderr.take().expect("stderr"));
    let connected = stderr.line_with("connected to").await;
    assert!(
        connected.ends_with(&format!("connected to {}", one.address)),
        "the primary first: {connected}"
    );

    one.kill_9();
    let moved = stderr.line_with("moving to").await;
    assert!(
        moved.ends_with(&format!("moving to {}", two.address)),
        "the next one at once: {moved}"
    );
    stderr
        .line_with(&format!("connected to {}", two.address))
        .await;
    // The rest of stderr is read while the listener runs on.
    let stderr = tokio::spawn(stderr.rest());

    let published = two
        .publish(json!({"title": "from relay 2", "targets": [device_id]}))
        .await;
    let run = finish(child).await;
    let stderr = stderr.await.expect("stderr read");
    assert_eq!(run.code(), Some(0), "stderr: {stderr}");
    assert_eq!(printed(&run)[0]["id"], published["id"]);
    wait_for_delivery_status(&two, published["id"].as_str().expect("id"), "acked").await;
    for secret in ["accessToken", "refreshToken"] {
        let secret = paired[secret].as_str().expect("token");
        assert!(!stderr.contains(secret), "no token on stderr: {stderr}");
    }
}
