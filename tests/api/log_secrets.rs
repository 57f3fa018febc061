//! No secret is ever logged: every kind of secret the relay has is minted and used (and misused)
//! while everything down to `trace` is captured, then the captured log is searched for each of
//! them and for the parts that identify them (the random part after a prefix, a JWT's payload and
//! signature, key material in hex and base64).

use awc::http::Method;
use base64::Engine;
use serde_json::{json, Value};

use beepmyphone::crypto::secrets::secret_string;
use beepmyphone::security::admins;
use beepmyphone::security::passwords::Bcrypt;

use crate::helpers::{
    spawn_app_with_log_at, spawn_app_with_log_at_with, wait_for_delivery_status, CapturedLog,
    TestApp,
};

const PASSWORD: &str = "correct horse battery staple";
const WRONG_PASSWORD: &str = "Tr0ub4dor&3-not-it";

/// Sends a request with optional bearer token, cookie, CSRF header and JSON body; returns the
/// status, the `Set-Cookie` headers and the body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    cookie: Option<&str>,
    csrf: Option<&str>,
    body: Option<&Value>,
) -> (u16, Vec<String>, Value) {
    let mut req = app.request(method, path, token);
    if let Some(cookie) = cookie {
        req = req.insert_header(("Cookie", cookie.to_owned()));
    }
    if let Some(csrf) = csrf {
        req = req.insert_header(("X-CSRF-Token", csrf.to_owned()));
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
    let bytes = res.body().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (res.status().as_u16(), cookies, body)
}

/// A secret and the parts of it that must not be logged either.
fn with_parts(secret: &str) -> Vec<String> {
    let mut parts = vec![secret.to_owned()];
    let random = ["bmp_", "bmr_", "bms_"]
        .iter()
        .find_map(|prefix| secret.strip_prefix(prefix));
    if let Some(random) = random {
        parts.push(random.to_owned());
        parts.push(random[..12].to_owned());
    }
    let segments: Vec<&str> = secret.split('.').collect();
    if segments.len() == 3 {
        // A JWT: its claims and its signature (the header is the same for every token).
        parts.push(segments[1].to_owned());
        parts.push(segments[2].to_owned());
    }
    if secret.contains('-') && secret.len() < 16 {
        // A pairing code, as typed without its dash.
        parts.push(secret.replace('-', ""));
    }
    parts
}

/// Every key file under the keys directory, as the strings its material could be logged as.
fn key_material(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let bytes = std::fs::read(&entry).unwrap();
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".pem") && !name.contains(".pub") {
            // A private key: every line of its base64 body.
            let text = String::from_utf8(bytes).unwrap();
            found.extend(
                text.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .map(str::to_owned),
            );
        } else if name.ends_with(".key") {
            found.push(hex::encode(&bytes));
            found.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
            found.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
        }
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[actix_rt::test]
async fn no_secret_is_ever_logged() {
    let (app, log) = spawn_app_with_log_at(slog::Level::Trace).await;
    mint_use_and_search(app, log).await;
}

/// The same with sessions, revocations and rate limits in Redis (the one on 127.0.0.1:6379, or
/// `BEEP_TEST_REDIS`; fails without it, like the other Redis tests).
#[actix_rt::test]
async fn no_secret_is_ever_logged_with_redis() {
    let url = std::env::var("BEEP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (app, log) = spawn_app_with_log_at_with(slog::Level::Trace, |settings| {
        settings.redis.url = url;
        settings.redis.key_prefix = format!("beeptest:secrets:{}:", ulid::Ulid::new());
    })
    .await;
    let ready = log.with_msg("identity ready");
    assert_eq!(ready[0]["backend"], "redis", "{ready:?}");
    mint_use_and_search(app, log).await;
}

/// Mints every kind of secret, uses and misuses each, and searches the log for them.
async fn mint_use_and_search(app: TestApp, log: CapturedLog) {
    let mut secrets: Vec<String> = vec![
        app.admin_token.clone(),
        PASSWORD.into(),
        WRONG_PASSWORD.into(),
    ];

    // An API token with the publish scope, used to publish.
    let (status, _, created) = call(
        &app,
        Method::POST,
        "/api/v1/tokens",
        Some(&app.admin_token),
        None,
        None,
        Some(&json!({"name": "ci", "scope": "publish"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let publisher = created["token"].as_str().unwrap().to_owned();
    secrets.push(publisher.clone());

    // A pairing code, used to pair; the same code again is refused.
    let code = app.pairing_code().await;
    secrets.push(code.clone());
    let pair = json!({"code": code, "name": "phone", "platform": "android"});
    let (status, _, paired) = call(
        &app,
        Method::POST,
        "/api/v1/devices/pair",
        None,
        None,
        None,
        Some(&pair),
    )
    .await;
    assert_eq!(status, 201, "{paired}");
    let device_id = paired["deviceId"].as_str().unwrap().to_owned();
    let access = paired["accessToken"].as_str().unwrap().to_owned();
    let refresh = paired["refreshToken"].as_str().unwrap().to_owned();
    secrets.extend([access.clone(), refresh.clone()]);
    let (status, ..) = call(
        &app,
        Method::POST,
        "/api/v1/devices/pair",
        None,
        None,
        None,
        Some(&pair),
    )
    .await;
    assert!((400..500).contains(&status), "a used code: {status}");

    // The device connects with its access token (header), gets a notification published with
    // the publish token, and acks it; a second socket authenticates by frame.
    let mut ws = app.connect(Some(&access)).await;
    assert_eq!(ws.next_json().await["type"], "hello");
    let (status, _, published) = call(
        &app,
        Method::POST,
        "/api/v1/notifications",
        Some(&publisher),
        None,
        None,
        Some(&json!({"title": "Build", "body": "green"})),
    )
    .await;
    assert_eq!(status, 202, "{published}");
    let id = published["id"].as_str().unwrap().to_owned();
    let items = ws.receive(1).await;
    ws.ack(&[items[0]["id"].as_str().unwrap()]).await;
    wait_for_delivery_status(&app, &id, "acked").await;
    let mut by_frame = app.connect(None).await;
    by_frame
        .send_json(&json!({"type": "auth", "token": access}))
        .await;
    assert_eq!(by_frame.next_json().await["type"], "hello");
    by_frame.close().await;

    // The refresh token is used, then reused (refused; the family is revoked).
    let (status, _, refreshed) = call(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        None,
        None,
        Some(&json!({"refreshToken": refresh})),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let access2 = refreshed["accessToken"].as_str().unwrap().to_owned();
    let refresh2 = refreshed["refreshToken"].as_str().unwrap().to_owned();
    secrets.extend([access2.clone(), refresh2.clone()]);
    let (status, ..) = call(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        None,
        None,
        Some(&json!({"refreshToken": refresh})),
    )
    .await;
    assert_eq!(status, 401, "a reused refresh token");

    // Tokens that are wrong: a made-up API token, a made-up JWT, a bad socket auth frame.
    let fake_api = "bmp_Zm9yZ2VkLXRva2VuLXRoYXQtbmV2ZXItZXhpc3RlZA";
    let fake_jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkZXZfZmFrZSJ9.c2lnbmF0dXJlLW9mLW5vYm9keQ";
    secrets.extend([fake_api.to_owned(), fake_jwt.to_owned()]);
    for token in [fake_api, fake_jwt] {
        let (status, ..) = call(
            &app,
            Method::GET,
            "/api/v1/devices",
            Some(token),
            None,
            None,
            None,
        )
        .await;
        assert_eq!(status, 401, "{token}");
    }
    // A token in a query string (which the relay does not read) is not logged with the path.
    let (status, ..) = call(
        &app,
        Method::GET,
        &format!("/api/v1/devices?access_token={}", app.admin_token),
        None,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let mut bad_frame = app.connect(None).await;
    bad_frame
        .send_json(&json!({"type": "auth", "token": fake_jwt}))
        .await;
    assert_eq!(bad_frame.expect_close().await, Some(4001));

    // An admin logs in with the wrong password, then the right one, uses the session (a read, a
    // write with the CSRF token, a write with a wrong one) and logs out; the cookie then fails.
    let store = app.state.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = store.conn().unwrap();
        let bcrypt = Bcrypt::new(4, true).unwrap();
        admins::add(
            &mut conn,
            &bcrypt,
            "alice",
            &secret_string(PASSWORD.into()),
            chrono::Utc::now().timestamp_millis(),
        )
        .unwrap();
    })
    .await
    .unwrap();
    let login = |password: &str| json!({"username": "alice", "password": password});
    let (status, ..) = call(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        None,
        None,
        Some(&login(WRONG_PASSWORD)),
    )
    .await;
    assert_eq!(status, 401);
    let (status, cookies, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        None,
        None,
        Some(&login(PASSWORD)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cookie = cookies[0].split(';').next().unwrap().to_owned();
    let session = cookie.trim_start_matches("beep_session=").to_owned();
    let csrf = body["csrfToken"].as_str().unwrap().to_owned();
    secrets.extend([session.clone(), csrf.clone()]);
    let session_call = |method: Method, path: &'static str, csrf: Option<String>| {
        let cookie = cookie.clone();
        let app = &app;
        async move {
            let (status, _, body) = call(
                app,
                method,
                path,
                None,
                Some(&cookie),
                csrf.as_deref(),
                Some(&json!({})),
            )
            .await;
            (status, body)
        }
    };
    assert_eq!(
        session_call(Method::GET, "/api/v1/devices", None).await.0,
        200
    );
    let (status, minted) =
        session_call(Method::POST, "/api/v1/pairing-codes", Some(csrf.clone())).await;
    assert_eq!(status, 201, "{minted}");
    let code2 = minted["code"].as_str().unwrap().to_owned();
    secrets.push(code2.clone());
    let wrong_csrf = "dGhpcy1pcy1ub3QtdGhlLWNzcmYtdG9rZW4tYXQtYWxs";
    secrets.push(wrong_csrf.to_owned());
    assert_eq!(
        session_call(
            Method::POST,
            "/api/v1/pairing-codes",
            Some(wrong_csrf.to_owned())
        )
        .await
        .0,
        403
    );
    assert_eq!(
        session_call(Method::POST, "/api/v1/auth/logout", Some(csrf.clone()))
            .await
            .0,
        204
    );
    assert_eq!(
        session_call(Method::GET, "/api/v1/devices", None).await.0,
        401
    );

    // A device paired with the session's code logs out with its access token (the first
    // device's tokens were revoked by the reuse); the deleted publish token is refused.
    let (status, _, tablet) = call(
        &app,
        Method::POST,
        "/api/v1/devices/pair",
        None,
        None,
        None,
        Some(&json!({"code": code2, "name": "tablet", "platform": "android"})),
    )
    .await;
    assert_eq!(status, 201, "{tablet}");
    let access3 = tablet["accessToken"].as_str().unwrap().to_owned();
    secrets.extend([
        access3.clone(),
        tablet["refreshToken"].as_str().unwrap().to_owned(),
    ]);
    let (status, ..) = call(
        &app,
        Method::POST,
        "/api/v1/auth/logout",
        Some(&access3),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let token_id = created["id"].as_str().unwrap();
    assert_eq!(
        app.delete(
            &format!("/api/v1/tokens/{token_id}"),
            Some(&app.admin_token)
        )
        .await,
        204
    );
    let (status, ..) = call(
        &app,
        Method::POST,
        "/api/v1/notifications",
        Some(&publisher),
        None,
        None,
        Some(&json!({"title": "t", "body": "b"})),
    )
    .await;
    assert_eq!(status, 401);
    ws.close().await;

    // What the data directory holds: the initial token file and the keys.
    let initial = std::fs::read_to_string(app.data_dir.path().join("initial-admin-token")).unwrap();
    secrets.push(initial.trim().to_owned());
    let keys = key_material(&app.data_dir.path().join("keys"));
    assert!(keys.len() >= 4, "a signing key and a data key: {keys:?}");

    let text = log.text();
    // The log saw all of it, so the search below is over something.
    for msg in [
        "api token created",
        "device paired",
        "notification published",
        "delivering",
        "ack received",
        "socket opened",
        "refresh token reused; family and access tokens revoked",
        "admin login refused",
        "admin logged in",
        "admin logged out",
        "request rejected",
        "request",
    ] {
        assert!(!log.with_msg(msg).is_empty(), "a {msg:?} line");
    }
    assert!(log
        .lines()
        .iter()
        .any(|l| l["level"] == "TRCE" || l["level"] == "DEBG"));
    assert!(text.contains(&device_id));
    let mut leaks = Vec::new();
    for secret in secrets.iter().flat_map(|s| with_parts(s)).chain(keys) {
        if text.contains(&secret) {
            let line = text.lines().find(|l| l.contains(&secret)).unwrap();
            leaks.push(format!("{secret}: {line}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "secrets in the log:\n{}",
        leaks.join("\n")
    );
}
