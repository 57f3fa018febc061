//! Tests: revocation (device logout, its persistence across restarts and `kill -9`, both backends),
//! admin accounts (CLI), password login, session cookies, the session cap, CSRF, idle and absolute
//! timeouts on the manual clock, two relays sharing Redis, and Redis going away mid-test.
//!
//! Tests that use Redis need the one on 127.0.0.1:6379 (`BEEP_TEST_REDIS` overrides it) and fail
//! when it is missing; each uses its own key prefix. The outage test starts a private
//! `redis-server` on a free port (the binary must be installed) and kills it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use awc::http::Method;
use base64::Engine;
use serde_json::{json, Value};

use beepmyphone::config::Settings;
use beepmyphone::crypto::secrets::secret_string;
use beepmyphone::security::admins;
use beepmyphone::security::passwords::Bcrypt;
use beepmyphone::startup::{Application, Options};

use crate::helpers::{
    create_admin, spawn_app_with, spawn_process, start_in, test_settings, ChildRelay, Device,
    TestApp,
};

const PASSWORD: &str = crate::helpers::ADMIN_PASSWORD;

// ---------------------------------------------------------------------------------------------
// Helpers

/// The shared test Redis; panics (the test fails) if it does not answer.
pub(crate) fn redis_url() -> String {
    let url = std::env::var("BEEP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url.as_str()).expect("a redis:// URL");
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("this test needs Redis at {url}: {e}"));
    let pong: String = redis::cmd("PING").query(&mut conn).expect("PING");
    assert_eq!(pong, "PONG");
    url
}

fn unique_prefix() -> String {
    format!("beeptest:{}:", ulid::Ulid::new())
}

/// Points settings at the shared test Redis with a fresh key prefix.
fn use_redis(settings: &mut Settings) {
    settings.redis.url = redis_url();
    settings.redis.key_prefix = unique_prefix();
}

/// A logged-in admin session.
#[derive(Debug, Clone)]
struct Login {
    /// `beep_session=…`, ready for a `Cookie` header.
    cookie: String,
    /// The whole `Set-Cookie` header of the login answer.
    set_cookie: String,
    csrf: String,
    body: Value,
}

/// Posts a login; returns status, `Set-Cookie` headers and body.
async fn try_login(
    app: &TestApp,
    body: &Value,
    extra: Option<(&str, &str)>,
) -> (u16, Vec<String>, Value) {
    let mut req = app.request(Method::POST, "/api/v1/auth/login", None);
    if let Some(header) = extra {
        req = req.insert_header(header);
    }
    let mut res = req.send_json(body).await.expect("request");
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let bytes = res.body().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (res.status().as_u16(), cookies, body)
}

async fn login(app: &TestApp, name: &str) -> Login {
    let (status, cookies, body) =
        try_login(app, &json!({"username": name, "password": PASSWORD}), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let set_cookie = cookies[0].clone();
    let cookie = set_cookie.split(';').next().unwrap().trim().to_owned();
    assert!(cookie.starts_with("beep_session=bms_"), "{set_cookie}");
    Login {
        cookie,
        set_cookie,
        csrf: body["csrfToken"].as_str().unwrap().to_owned(),
        body,
    }
}

/// A request authenticated by a session cookie, with or without the CSRF header.
async fn with_session(
    app: &TestApp,
    method: Method,
    path: &str,
    login: &Login,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> (u16, Vec<String>, Value) {
    let mut req = app
        .request(method, path, None)
        .insert_header(("Cookie", login.cookie.clone()));
    if let Some(token) = csrf {
        req = req.insert_header(("X-CSRF-Token", token.to_owned()));
    }
    let mut res = match body {
        Some(body) => req.send_json(body).await,
        None => req.send().await,
    }
    .expect("request");
    let cookies = res
        .headers()
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let bytes = res.body().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(format!("{bytes:?}")))
    };
    (res.status().as_u16(), cookies, body)
}

async fn session_get(app: &TestApp, path: &str, login: &Login) -> (u16, Value) {
    let (status, _, body) = with_session(app, Method::GET, path, login, None, None).await;
    (status, body)
}

/// A device's own view of itself: 200 while its token is accepted.
async fn device_status(app: &TestApp, device: &Device) -> (u16, Value) {
    app.get(
        &format!("/api/v1/devices/{}", device.id),
        Some(&device.access_token),
    )
    .await
}

async fn refresh(app: &TestApp, device: &Device) -> (u16, Value) {
    app.post(
        "/api/v1/auth/refresh",
        None,
        &json!({"refreshToken": device.refresh_token}),
    )
    .await
}

async fn logout_device(app: &TestApp, device: &Device) -> u16 {
    let (status, body) = app
        .post(
            "/api/v1/auth/logout",
            Some(&device.access_token),
            &json!({}),
        )
        .await;
    assert!(status == 204 || status >= 400, "{status} {body}");
    status
}

/// The `jti` claim of an access token.
fn jti_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Device logout and revocation

async fn logout_revokes_token_socket_and_family(redis: bool) {
    let app = spawn_app_with(|s| {
        if redis {
            use_redis(s)
        }
    })
    .await;
    let device = app.pair_device("phone").await;
    let other = app.pair_device("tablet").await;
    let mut ws = app.connect_device(&device).await;
    assert_eq!(device_status(&app, &device).await.0, 200);

    assert_eq!(logout_device(&app, &device).await, 204);
    assert_eq!(
        ws.expect_close().await,
        Some(4001),
        "its socket closes at once"
    );
    let (status, body) = device_status(&app, &device).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "UNAUTHORIZED");
    let (status, body) = refresh(&app, &device).await;
    assert_eq!(status, 401, "the refresh family is revoked: {body}");
    // The revoked token opens no socket, by header or by auth frame.
    let mut ws = app.connect(Some(&device.access_token)).await;
    assert_eq!(ws.expect_close().await, Some(4001));
    let mut ws = app.connect(None).await;
    ws.send_json(&json!({"type": "auth", "token": device.access_token}))
        .await;
    assert_eq!(ws.expect_close().await, Some(4001));
    // A second logout with the same token is refused like any revoked token.
    assert_eq!(logout_device(&app, &device).await, 401);
    // Other devices are untouched.
    assert_eq!(device_status(&app, &other).await.0, 200);
    assert_eq!(refresh(&app, &other).await.0, 200);
}

#[actix_rt::test]
async fn logout_revokes_the_access_token_its_socket_and_its_refresh_family_sqlite() {
    logout_revokes_token_socket_and_family(false).await;
}

#[actix_rt::test]
async fn logout_revokes_the_access_token_its_socket_and_its_refresh_family_redis() {
    logout_revokes_token_socket_and_family(true).await;
}

#[actix_rt::test]
async fn in_band_reauth_with_a_revoked_token_closes_the_socket() {
    let app = spawn_app_with(|_| {}).await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let (status, fresh) = refresh(&app, &device).await;
    assert_eq!(status, 200, "{fresh}");
    let fresh_token = fresh["accessToken"].as_str().unwrap().to_owned();
    // Revoke the new token without kicking (as another relay's logout would).
    let device_id = beepmyphone_actors::model::DeviceId::parse(&device.id).unwrap();
    app.state
        .revocations
        .deny(
            &device_id,
            &jti_of(&fresh_token),
            chrono::Utc::now().timestamp() + 3_600,
        )
        .await
        .unwrap();
    ws.send_json(&json!({"type": "auth", "token": fresh_token}))
        .await;
    assert_eq!(ws.expect_close().await, Some(4001));
}

async fn logout_survives_in_process_restart(redis: bool) {
    let mut settings_seen = None;
    let app = spawn_app_with(|s| {
        if redis {
            use_redis(s);
        }
        settings_seen = Some(s.clone());
    })
    .await;
    let device = app.pair_device("phone").await;
    let control = app.pair_device("control").await;
    assert_eq!(logout_device(&app, &device).await, 204);
    let dir = app.stop().await;
    let app = start_in(dir, settings_seen.unwrap()).await;
    assert_eq!(device_status(&app, &device).await.0, 401);
    assert_eq!(refresh(&app, &device).await.0, 401);
    // The keys survived too: a device that did not log out is still accepted.
    assert_eq!(device_status(&app, &control).await.0, 200);
}

#[actix_rt::test]
async fn logout_survives_a_restart_sqlite() {
    logout_survives_in_process_restart(false).await;
}

#[actix_rt::test]
async fn logout_survives_a_restart_redis() {
    logout_survives_in_process_restart(true).await;
}

/// Requests against a relay child process.
async fn child_request(
    client: &awc::Client,
    relay: &ChildRelay,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = client.request(method, format!("{}{path}", relay.address));
    if let Some(token) = token {
        req = req.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let mut res = match body {
        Some(body) => req.send_json(body).await,
        None => req.send().await,
    }
    .expect("request");
    let bytes = res.body().await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (res.status().as_u16(), value)
}

async fn logout_survives_kill_9(redis: bool) {
    let dir = tempfile::tempdir().unwrap();
    if redis {
        // The binary runs in the data directory, so it reads this as ./config.toml.
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[redis]\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
                redis_url(),
                unique_prefix()
            ),
        )
        .unwrap();
    }
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let relay = spawn_process(dir.path());
    let admin = std::fs::read_to_string(dir.path().join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let (status, code) = child_request(
        &client,
        &relay,
        Method::POST,
        "/api/v1/pairing-codes",
        Some(&admin),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 201, "{code}");
    let (status, paired) = child_request(
        &client,
        &relay,
        Method::POST,
        "/api/v1/devices/pair",
        None,
        Some(&json!({"code": code["code"], "name": "phone", "platform": "ios"})),
    )
    .await;
    assert_eq!(status, 201, "{paired}");
    let access = paired["accessToken"].as_str().unwrap().to_owned();
    let (status, code) = child_request(
        &client,
        &relay,
        Method::POST,
        "/api/v1/pairing-codes",
        Some(&admin),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 201, "{code}");
    let (status, control) = child_request(
        &client,
        &relay,
        Method::POST,
        "/api/v1/devices/pair",
        None,
        Some(&json!({"code": code["code"], "name": "control", "platform": "ios"})),
    )
    .await;
    assert_eq!(status, 201, "{control}");
    let control_path = format!("/api/v1/devices/{}", control["deviceId"].as_str().unwrap());
    let control_token = control["accessToken"].as_str().unwrap().to_owned();
    let refresh_token = paired["refreshToken"].as_str().unwrap().to_owned();
    let device_path = format!("/api/v1/devices/{}", paired["deviceId"].as_str().unwrap());
    let (status, _) = child_request(
        &client,
        &relay,
        Method::GET,
        &device_path,
        Some(&access),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = child_request(
        &client,
        &relay,
        Method::POST,
        "/api/v1/auth/logout",
        Some(&access),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    relay.kill_9();

    let relay = spawn_process(dir.path());
    let (status, body) = child_request(
        &client,
        &relay,
        Method::GET,
        &device_path,
        Some(&access),
        None,
    )
    .await;
    assert_eq!(status, 401, "the logout outlived kill -9: {body}");
    let (status, body) = child_request(
        &client,
        &relay,
        Method::GET,
        &control_path,
        Some(&control_token),
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "a device that did not log out is still accepted: {body}"
    );
    let (status, body) = child_request(
        &client,
        &relay,
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(&json!({"refreshToken": refresh_token})),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let log = relay.output.lock().unwrap().clone();
    let expected = if redis { "redis" } else { "sqlite" };
    assert!(
        log.contains(&format!("\"backend\":\"{expected}\"")),
        "the relay used the {expected} backend"
    );
    assert!(!log.contains(&access), "tokens are never logged");
}

#[actix_rt::test]
async fn logout_survives_kill_9_sqlite() {
    logout_survives_kill_9(false).await;
}

#[actix_rt::test]
async fn logout_survives_kill_9_redis() {
    logout_survives_kill_9(true).await;
}

// ---------------------------------------------------------------------------------------------
// Admin accounts through the CLI

/// Runs the binary with a config file (bcrypt cost 10, the lowest real one), in `dir`.
fn beep(
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let config = dir.join("cli.toml");
    if !config.exists() {
        std::fs::write(&config, "[auth]\nbcrypt_cost = 10\n").unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beepmyphone"));
    cmd.args(args)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run the binary");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[actix_rt::test]
async fn admin_cli_adds_lists_changes_and_removes_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, out, err) = beep(
        d,
        &["admin", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created admin alice (adm_"), "{out}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    let (code, _, err) = beep(
        d,
        &["admin", "add", "alice", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
        &[],
    );
    assert_eq!(code, 1, "a taken name: {err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = beep(
        d,
        &["admin", "add", "bob", "--password-stdin"],
        Some("short\n"),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("at least 12"), "{err}");
    let long = "x".repeat(73);
    let (code, _, err) = beep(
        d,
        &["admin", "add", "bob", "--password-stdin"],
        Some(&format!("{long}\n")),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("72"),
        "over-long passwords are refused, not cut: {err}"
    );
    let (code, _, err) = beep(
        d,
        &["admin", "add", "bad name", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = beep(d, &["admin", "add", "bob"], None, &[]);
    assert_eq!(code, 2, "no terminal and no --password-stdin: {err}");
    assert!(err.contains("--password-stdin"), "{err}");
    let (code, out, _) = beep(d, &["admin", "list"], None, &[]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("alice\tadm_"), "{out}");

    // The relay on the same directory accepts the CLI's account.
    let mut settings = test_settings(d);
    settings.auth.bcrypt_cost = 10;
    let app = start_in(dir, settings).await;
    let session = login(&app, "alice").await;
    assert_eq!(
        session_get(&app, "/api/v1/auth/sessions", &session).await.0,
        200
    );

    // A new password ends the sessions and replaces the old one.
    let new_password = "a brand new long password";
    let (code, out, err) = beep(
        app.data_dir.path(),
        &["admin", "passwd", "alice", "--password-stdin"],
        Some(&format!("{new_password}\r\n")),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ended 1 session"), "{out}");
    assert_eq!(
        session_get(&app, "/api/v1/auth/sessions", &session).await.0,
        401
    );
    let (status, _, _) = try_login(
        &app,
        &json!({"username": "alice", "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, cookies, _) = try_login(
        &app,
        &json!({"username": "alice", "password": new_password}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let cookie = cookies[0].split(';').next().unwrap().to_owned();
    let session = Login { cookie, ..session };
    assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 200);
    let (code, _, err) = beep(
        app.data_dir.path(),
        &["admin", "passwd", "nobody", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
        &[],
    );
    assert_eq!(code, 1, "{err}");

    // Removing the account ends its sessions at once.
    let (code, out, err) = beep(
        app.data_dir.path(),
        &["admin", "remove", "alice"],
        None,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed admin alice"), "{out}");
    assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 401);
    let (code, out, _) = beep(app.data_dir.path(), &["admin", "list"], None, &[]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, _) = beep(
        app.data_dir.path(),
        &["admin", "remove", "alice"],
        None,
        &[],
    );
    assert_eq!(code, 1);
}

#[actix_rt::test]
async fn admin_remove_ends_sessions_held_in_redis() {
    let url = redis_url();
    let prefix = unique_prefix();
    let app = spawn_app_with(|s| {
        s.redis.url = url.clone();
        s.redis.key_prefix = prefix.clone();
    })
    .await;
    create_admin(&app, "carol").await;
    let session = login(&app, "carol").await;
    assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 200);
    let env = [
        ("BEEP__REDIS__URL", url.as_str()),
        ("BEEP__REDIS__KEY_PREFIX", prefix.as_str()),
    ];
    let (code, out, err) = beep(
        app.data_dir.path(),
        &["admin", "remove", "carol"],
        None,
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ended 1 session"), "{out}");
    assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 401);
}

// ---------------------------------------------------------------------------------------------
// Login, cookies, CSRF, the cap, timeouts

#[actix_rt::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let app = spawn_app_with(|_| {}).await;
    create_admin(&app, "alice").await;
    let (s1, c1, wrong_password) = try_login(
        &app,
        &json!({"username": "alice", "password": "not the password!"}),
        None,
    )
    .await;
    let (s2, c2, unknown_user) = try_login(
        &app,
        &json!({"username": "mallory", "password": "not the password!"}),
        None,
    )
    .await;
    let (s3, _, too_long) = try_login(
        &app,
        &json!({"username": "alice", "password": "x".repeat(100)}),
        None,
    )
    .await;
    assert_eq!((s1, s2, s3), (401, 401, 401));
    assert!(c1.is_empty() && c2.is_empty(), "no cookie on failure");
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("requestId");
        v
    };
    assert_eq!(strip(wrong_password.clone()), strip(unknown_user));
    assert_eq!(strip(wrong_password.clone()), strip(too_long));
    assert_eq!(wrong_password["code"], "UNAUTHORIZED");
    assert_eq!(
        wrong_password["detail"],
        "the username or password is wrong"
    );
    let (status, _, body) = try_login(&app, &json!({"username": "alice"}), None).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "password");
}

/// The time of one refused login of `username` at `address`.
async fn refusal(client: &awc::Client, address: &str, username: &str) -> Duration {
    let started = Instant::now();
    let res = client
        .post(format!("{address}/api/v1/auth/login"))
        .send_json(&json!({"username": username, "password": "not the password!"}))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(res.status().as_u16(), 401);
    took
}

#[actix_rt::test]
async fn wrong_password_and_unknown_user_take_the_same_time() {
    // A real cost (10, the lowest settings allow) for the admin's hash and the dummy hash alike,
    // so that bcrypt dominates the time; the test-only low cost is not used here.
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.auth.bcrypt_cost = 10;
    // Twenty refused logins from one address: more than the failed-login rate limit allows.
    settings.limits.auth_per_minute = 1_000;
    let app = Application::build(
        settings,
        Options {
            clock: std::sync::Arc::new(beepmyphone_actors::clock::SystemClock),
            log: beepmyphone::logging::discard(),
            insecure_bcrypt_cost: None,
        },
    )
    .await
    .unwrap();
    let (state, handle) = (app.state(), app.handle());
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_rt::spawn(app.run_until_stopped());
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = store.conn().unwrap();
        let bcrypt = Bcrypt::new(10, false).unwrap();
        admins::add(
            &mut conn,
            &bcrypt,
            "alice",
            &secret_string(PASSWORD.into()),
            0,
        )
        .unwrap();
    })
    .await
    .unwrap();
    let client = awc::Client::default();
    // One to warm up.
    refusal(&client, &address, "alice").await;
    // Pairs taken back to back, and the median of their ratios: whatever else loads the machine
    // (other tests, a build) slows both logins of a pair alike. Without the dummy hash an unknown
    // user would answer in well under a millisecond against bcrypt's tens, a ratio far outside
    // the band.
    let mut ratios = Vec::new();
    let mut known = Vec::new();
    for _ in 0..9 {
        let wrong_password = refusal(&client, &address, "alice").await;
        let unknown_user = refusal(&client, &address, "mallory").await;
        ratios.push(wrong_password.as_secs_f64() / unknown_user.as_secs_f64());
        known.push(wrong_password);
    }
    ratios.sort_by(f64::total_cmp);
    known.sort();
    let ratio = ratios[ratios.len() / 2];
    assert!(
        (0.5..2.0).contains(&ratio),
        "wrong password / unknown user, median of 9 pairs: {ratio:.2} (all: {ratios:.2?})"
    );
    assert!(
        known[4] >= Duration::from_millis(5),
        "bcrypt ran: {known:?}"
    );
    handle.stop(true).await;
}

#[actix_rt::test]
async fn login_sets_a_strict_http_only_cookie_with_a_fresh_session_each_time() {
    // The test client stands in for a TLS-terminating proxy on loopback.
    let app = spawn_app_with(|s| s.limits.trusted_proxies = vec!["127.0.0.1".into()]).await;
    create_admin(&app, "alice").await;
    let first = login(&app, "alice").await;
    let attributes: Vec<&str> = first.set_cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"HttpOnly"), "{}", first.set_cookie);
    assert!(
        attributes.contains(&"SameSite=Strict"),
        "{}",
        first.set_cookie
    );
    assert!(attributes.contains(&"Path=/"), "{}", first.set_cookie);
    assert!(
        attributes.contains(&"Max-Age=43200"),
        "{}",
        first.set_cookie
    );
    assert!(
        !attributes.contains(&"Secure"),
        "plain HTTP: {}",
        first.set_cookie
    );
    assert_eq!(first.body["username"], "alice");
    assert!(first.csrf.len() >= 43);
    assert!(first.body["expiresAt"].as_str().unwrap().ends_with('Z'));
    let second = login(&app, "alice").await;
    assert_ne!(
        first.cookie, second.cookie,
        "a fresh session id on every login"
    );
    assert_ne!(first.csrf, second.csrf);
    // Under TLS (here: as a TLS-terminating proxy reports it) the cookie is Secure.
    let (status, cookies, _) = try_login(
        &app,
        &json!({"username": "alice", "password": PASSWORD}),
        Some(("X-Forwarded-Proto", "https")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        cookies[0].split(';').any(|a| a.trim() == "Secure"),
        "{}",
        cookies[0]
    );
    // The session id itself is stored only as a hash.
    let id = first.cookie.trim_start_matches("beep_session=").to_owned();
    let store = app.state.store.clone();
    let rows = tokio::task::spawn_blocking(move || {
        use beepmyphone::store::schema::admin_sessions;
        use diesel::prelude::*;
        let mut conn = store.conn().unwrap();
        admin_sessions::table
            .select((admin_sessions::id_hash, admin_sessions::data))
            .load::<(String, Vec<u8>)>(&mut conn)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(rows.len(), 3);
    for (hash, data) in rows {
        assert_ne!(hash, id);
        assert!(
            !data.windows(5).any(|w| w == b"alice"),
            "session data is sealed"
        );
    }
}

async fn sixth_login_ends_the_oldest(redis: bool) {
    let app = spawn_app_with(|s| {
        if redis {
            use_redis(s)
        }
    })
    .await;
    create_admin(&app, "alice").await;
    let mut logins = Vec::new();
    for _ in 0..6 {
        logins.push(login(&app, "alice").await);
        app.clock.advance(Duration::from_secs(1));
    }
    let (status, body) = session_get(&app, "/api/v1/auth/sessions", &logins[0]).await;
    assert_eq!(status, 401, "the oldest session ended: {body}");
    assert_eq!(body["detail"], "the session has ended; log in again");
    for login in &logins[1..] {
        assert_eq!(session_get(&app, "/api/v1/devices", login).await.0, 200);
    }
    let (status, body) = session_get(&app, "/api/v1/auth/sessions", &logins[5]).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{body}");
    assert_eq!(body["nextCursor"], Value::Null);
    let current: Vec<&Value> = items.iter().filter(|i| i["current"] == true).collect();
    assert_eq!(current.len(), 1, "{body}");
    assert_eq!(current[0]["id"], items[4]["id"], "oldest first: {body}");
    for item in items {
        let id = item["id"].as_str().unwrap();
        assert!(id.starts_with("ses_"), "{id}");
        assert!(
            !logins.iter().any(|l| l.cookie.contains(id)),
            "the public id is not the secret"
        );
        for field in ["createdAt", "lastSeenAt", "expiresAt"] {
            assert!(item[field].as_str().unwrap().ends_with('Z'), "{item}");
        }
    }
}

#[actix_rt::test]
async fn a_sixth_login_ends_the_oldest_session_sqlite() {
    sixth_login_ends_the_oldest(false).await;
}

#[actix_rt::test]
async fn a_sixth_login_ends_the_oldest_session_redis() {
    sixth_login_ends_the_oldest(true).await;
}

#[actix_rt::test]
async fn cookie_requests_that_change_state_need_the_csrf_token() {
    let app = spawn_app_with(|_| {}).await;
    create_admin(&app, "alice").await;
    let session = login(&app, "alice").await;
    let path = "/api/v1/pairing-codes";
    let (status, _, body) =
        with_session(&app, Method::POST, path, &session, None, Some(&json!({}))).await;
    assert_eq!(status, 403, "no CSRF header: {body}");
    assert_eq!(body["code"], "FORBIDDEN");
    let (status, _, _) = with_session(
        &app,
        Method::POST,
        path,
        &session,
        Some("not-the-token"),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 403, "a wrong CSRF header");
    let other = login(&app, "alice").await;
    let (status, _, _) = with_session(
        &app,
        Method::POST,
        path,
        &session,
        Some(&other.csrf),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 403, "another session's CSRF token");
    let (status, _, body) = with_session(
        &app,
        Method::POST,
        path,
        &session,
        Some(&session.csrf),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Reads need no CSRF token.
    assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 200);
    assert_eq!(session_get(&app, "/api/v1/tokens", &session).await.0, 200);
    // An admin session can do what an admin token can: delete a device, publish.
    let device = app.pair_device("phone").await;
    let (status, _, _) = with_session(
        &app,
        Method::DELETE,
        &format!("/api/v1/devices/{}", device.id),
        &session,
        None,
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = with_session(
        &app,
        Method::DELETE,
        &format!("/api/v1/devices/{}", device.id),
        &session,
        Some(&session.csrf),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, body) = with_session(
        &app,
        Method::POST,
        "/api/v1/notifications",
        &session,
        Some(&session.csrf),
        Some(&json!({"title": "hi"})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // A bearer token wins over a cookie and needs no CSRF token.
    let (status, _) = app
        .send_json(Method::POST, path, Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 201);
    // A stale cookie does not stand in the way of public calls or of logging in again.
    let (status, _, _) = with_session(
        &app,
        Method::POST,
        "/api/v1/auth/logout",
        &session,
        Some(&session.csrf),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) =
        with_session(&app, Method::GET, "/health/live", &session, None, None).await;
    assert_eq!(status, 200);
    let res = app
        .request(Method::POST, "/api/v1/auth/login", None)
        .insert_header(("Cookie", session.cookie.clone()))
        .send_json(&json!({"username": "alice", "password": PASSWORD}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

/// Waits until the session's last use is stored as the relay's current time: the write runs in a
/// spawned task, so the test retries the session list (bounded) until it shows it.
async fn last_use_recorded(app: &TestApp, session: &Login) {
    let now = beepmyphone_actors::clock::Clock::now_ms(&app.clock);
    crate::helpers::eventually("the session's last use is recorded", || async {
        let (status, body) = session_get(app, "/api/v1/auth/sessions", session).await;
        assert_eq!(status, 200, "{body}");
        let seen = body["items"][0]["lastSeenAt"].as_str()?;
        let seen = chrono::DateTime::parse_from_rfc3339(seen)
            .ok()?
            .timestamp_millis();
        (seen == now).then_some(())
    })
    .await;
}

#[actix_rt::test]
async fn sessions_end_after_the_idle_timeout() {
    let app = spawn_app_with(|s| {
        s.sessions.idle_timeout_seconds = 600;
        s.sessions.absolute_timeout_seconds = 7_200;
    })
    .await;
    create_admin(&app, "alice").await;
    let session = login(&app, "alice").await;
    // Used every 500 s, it outlives the 600 s idle timeout many times over.
    for _ in 0..4 {
        app.clock.advance(Duration::from_secs(500));
        assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 200);
        last_use_recorded(&app, &session).await;
    }
    let (_, body) = session_get(&app, "/api/v1/auth/sessions", &session).await;
    let last_seen = body["items"][0]["lastSeenAt"].as_str().unwrap().to_owned();
    assert_ne!(last_seen, body["items"][0]["createdAt"].as_str().unwrap());
    // Left alone for longer than that, it ends.
    app.clock.advance(Duration::from_secs(601));
    let (status, body) = session_get(&app, "/api/v1/devices", &session).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["detail"], "the session has ended; log in again");
}

#[actix_rt::test]
async fn sessions_end_after_the_absolute_timeout_however_busy() {
    let app = spawn_app_with(|s| {
        s.sessions.idle_timeout_seconds = 600;
        s.sessions.absolute_timeout_seconds = 1_800;
    })
    .await;
    create_admin(&app, "alice").await;
    let session = login(&app, "alice").await;
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(590));
        assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 200);
        last_use_recorded(&app, &session).await;
    }
    app.clock.advance(Duration::from_secs(60)); // 1830 s after login, 60 s after the last use
    assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 401);
}

#[actix_rt::test]
async fn ended_sessions_and_expired_revocations_are_swept() {
    let app = spawn_app_with(|s| {
        s.sessions.idle_timeout_seconds = 600;
        s.sessions.absolute_timeout_seconds = 600;
        s.sessions.cleanup_interval_seconds = 3_600;
    })
    .await;
    create_admin(&app, "alice").await;
    login(&app, "alice").await;
    let device = app.pair_device("phone").await;
    assert_eq!(logout_device(&app, &device).await, 204);
    let count = |app: &TestApp| {
        let store = app.state.store.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                use beepmyphone::store::schema::{admin_sessions, revoked_tokens};
                use diesel::prelude::*;
                let mut conn = store.conn().unwrap();
                let s: i64 = admin_sessions::table.count().get_result(&mut conn).unwrap();
                let r: i64 = revoked_tokens::table.count().get_result(&mut conn).unwrap();
                (s, r)
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(count(&app).await, (1, 1));
    // Past the token's expiry and the session's end, one cleanup interval later both are gone.
    app.clock.advance(Duration::from_secs(3_700));
    for _ in 0..100 {
        if count(&app).await == (0, 0) {
            return;
        }
        // A bounded retry: the cleanup task deletes on the blocking pool after the clock tick.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not swept: {:?}", count(&app).await);
}

#[actix_rt::test]
async fn session_logout_list_and_delete() {
    let app = spawn_app_with(|_| {}).await;
    create_admin(&app, "alice").await;
    create_admin(&app, "bob").await;
    let a = login(&app, "alice").await;
    let b = login(&app, "alice").await;
    let (_, bob_cookies, _) = try_login(
        &app,
        &json!({"username": "bob", "password": PASSWORD}),
        None,
    )
    .await;
    let bob_cookie = bob_cookies[0].split(';').next().unwrap().to_owned();
    let (_, body) = session_get(&app, "/api/v1/auth/sessions", &a).await;
    let items = body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "only alice's sessions: {body}");
    let b_id = items.iter().find(|i| i["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Deleting another of one's sessions needs the CSRF token, ends it, and keeps this one.
    let path = format!("/api/v1/auth/sessions/{b_id}");
    assert_eq!(
        with_session(&app, Method::DELETE, &path, &a, None, None)
            .await
            .0,
        403
    );
    let (status, cookies, _) =
        with_session(&app, Method::DELETE, &path, &a, Some(&a.csrf), None).await;
    assert_eq!(status, 204);
    assert!(
        cookies.is_empty(),
        "not the current session: no cookie change"
    );
    assert_eq!(session_get(&app, "/api/v1/devices", &b).await.0, 401);
    assert_eq!(session_get(&app, "/api/v1/devices", &a).await.0, 200);
    assert_eq!(
        with_session(&app, Method::DELETE, &path, &a, Some(&a.csrf), None)
            .await
            .0,
        404
    );
    // Another admin's session is not found from here.
    let bob = Login {
        cookie: bob_cookie,
        ..a.clone()
    };
    let (_, body) = session_get(&app, "/api/v1/auth/sessions", &bob).await;
    let bob_id = body["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _, _) = with_session(
        &app,
        Method::DELETE,
        &format!("/api/v1/auth/sessions/{bob_id}"),
        &a,
        Some(&a.csrf),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Session calls are for sessions only.
    let (status, _) = app
        .get("/api/v1/auth/sessions", Some(&app.admin_token))
        .await;
    assert_eq!(status, 403);
    let (status, body) = app
        .post("/api/v1/auth/logout", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = app.post("/api/v1/auth/logout", None, &json!({})).await;
    assert_eq!(status, 401);
    let (status, _) = app.get("/api/v1/auth/login", None).await;
    assert_eq!(status, 405);
    // Logout ends this session and clears the cookie.
    let (status, cookies, _) = with_session(
        &app,
        Method::POST,
        "/api/v1/auth/logout",
        &a,
        Some(&a.csrf),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert!(cookies[0].starts_with("beep_session=;"), "{cookies:?}");
    assert!(cookies[0].contains("Max-Age=0"), "{cookies:?}");
    assert_eq!(session_get(&app, "/api/v1/devices", &a).await.0, 401);
}

// ---------------------------------------------------------------------------------------------
// Several relays, and Redis going away

#[actix_rt::test]
async fn two_relays_sharing_redis_and_keys_accept_each_others_sessions() {
    let url = redis_url();
    let prefix = unique_prefix();
    let keys = tempfile::tempdir().unwrap();
    let shared = |s: &mut Settings| {
        s.redis.url = url.clone();
        s.redis.key_prefix = prefix.clone();
        s.storage.keys_dir = keys.path().to_path_buf();
    };
    let one = spawn_app_with(shared).await;
    let two = spawn_app_with(shared).await;
    create_admin(&one, "alice").await;
    let session = login(&one, "alice").await;
    // Made through one, valid on the other: reads and CSRF-checked writes.
    assert_eq!(session_get(&two, "/api/v1/devices", &session).await.0, 200);
    let (status, _, body) = with_session(
        &two,
        Method::POST,
        "/api/v1/pairing-codes",
        &session,
        Some(&session.csrf),
        Some(&json!({})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, body) = session_get(&two, "/api/v1/auth/sessions", &session).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    // Ended on the other, ended everywhere.
    let (status, _, _) = with_session(
        &two,
        Method::POST,
        "/api/v1/auth/logout",
        &session,
        Some(&session.csrf),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(session_get(&one, "/api/v1/devices", &session).await.0, 401);
    // A device logged out through one relay is on the other's deny-list too. (Each relay here
    // has its own SQLite file, so the device itself is unknown to the second.)
    let device = one.pair_device("phone").await;
    assert_eq!(logout_device(&one, &device).await, 204);
    assert!(two
        .state
        .revocations
        .is_denied(&jti_of(&device.access_token))
        .await
        .unwrap());
}

/// A private `redis-server` on a fixed port, started and killed by the test.
pub(crate) struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self { port, child: None };
        redis.restart();
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            // Waiting on another OS process (redis-server) to listen: bounded by the deadline.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[actix_rt::test]
async fn redis_outage_fails_closed_then_recovers() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let app = spawn_app_with(|s| {
        s.redis.url = url.clone();
        s.redis.timeout_ms = 300;
    })
    .await;
    create_admin(&app, "alice").await;
    let session = login(&app, "alice").await;
    let revoked = app.pair_device("revoked").await;
    let good = app.pair_device("good").await;
    assert_eq!(logout_device(&app, &revoked).await, 204);
    assert_eq!(device_status(&app, &revoked).await.0, 401);
    let mut open_socket = app.connect_device(&good).await;

    redis.kill();
    // Nothing that depends on the deny-list or on sessions gets through: 503, never 200.
    for device in [&revoked, &good] {
        let (status, body) = device_status(&app, device).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "UNAVAILABLE");
    }
    let (status, body) = app
        .get("/api/v1/notifications", Some(&revoked.access_token))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(logout_device(&app, &good).await, 503);
    let mut ws = app.connect(Some(&revoked.access_token)).await;
    assert_eq!(ws.expect_close().await, Some(1013));
    let mut ws = app.connect(None).await;
    ws.send_json(&json!({"type": "auth", "token": good.access_token}))
        .await;
    assert_eq!(ws.expect_close().await, Some(1013));
    // In-band renewal on a socket that is already open is refused too.
    open_socket
        .send_json(&json!({"type": "auth", "token": revoked.access_token}))
        .await;
    assert_eq!(open_socket.expect_close().await, Some(1013));
    let (status, body) = session_get(&app, "/api/v1/devices", &session).await;
    assert_eq!(status, 503, "{body}");
    let (status, _, body) = try_login(
        &app,
        &json!({"username": "alice", "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    // What does not depend on Redis keeps working.
    assert_eq!(
        app.get("/api/v1/devices", Some(&app.admin_token)).await.0,
        200
    );

    // Back on the same port (empty: it had no persistence), things work again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = device_status(&app, &good).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis came back"
        );
        // Real time on purpose: reconnecting to a restarted redis-server (another OS process)
        // goes through the Redis client's own backoff, not the relay's clock. Bounded above.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = login(&app, "alice").await;
    assert_eq!(session_get(&app, "/api/v1/devices", &session).await.0, 200);
    // The revoked device's refresh family is in SQLite and stays revoked whatever Redis forgot.
    assert_eq!(refresh(&app, &revoked).await.0, 401);
    assert_eq!(logout_device(&app, &good).await, 204);
    assert_eq!(device_status(&app, &good).await.0, 401);
}

#[actix_web::test]
async fn a_foreign_authorization_header_is_refused_even_beside_a_valid_session() {
    let app = spawn_app_with(|_| {}).await;
    create_admin(&app, "alice").await;
    let session = login(&app, "alice").await;
    for value in ["Basic YWxpY2U6cHc=", "Bearer", "garbage"] {
        let mut res = app
            .request(Method::POST, "/api/v1/auth/logout", None)
            .insert_header(("Cookie", session.cookie.clone()))
            .insert_header(("X-CSRF-Token", session.csrf.clone()))
            .insert_header(("Authorization", value))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status().as_u16(), 401, "{value}");
        let body: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
        assert_eq!(body["code"], "UNAUTHORIZED", "{value}");
    }
    // The session was not used, so it still works.
    let (status, _, body) = with_session(
        &app,
        Method::GET,
        "/api/v1/auth/sessions",
        &session,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
