//! Rate limits (embedded and Redis), blocking, trusted proxies, security headers, CORS and
//! resource limits. Time is the relay's manual clock: tests advance it instead of sleeping. The
//! Redis tests need the local Redis on 127.0.0.1:6379 (or `BEEP_TEST_REDIS`) and fail without it.

use std::time::Duration;

use awc::http::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, start_in, test_settings, TestApp};

fn redis_url() -> String {
    std::env::var("BEEP_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    format!("beeptest:limits:{}:", ulid::Ulid::new())
}

/// Fails loudly when the test Redis is missing.
async fn require_redis() {
    let settings = beepmyphone::config::RedisSettings {
        url: redis_url(),
        key_prefix: unique_prefix(),
        ..Default::default()
    };
    let redis = beepmyphone::redis::Redis::connect(&settings)
        .await
        .expect("redis url");
    redis
        .ping()
        .await
        .expect("the test Redis on 127.0.0.1:6379 must be running for the limits tests");
}

/// GET with extra headers; returns the status, headers and body.
async fn get_with(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, awc::http::header::HeaderMap, Value) {
    let mut req = app.request(Method::GET, path, token);
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    let mut res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.body().limit(1 << 20).await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn header<'a>(headers: &'a awc::http::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

const ANON: &str = "/api/v1/nothing-here";

/// An access token for a device of `app` (paired through the API).
async fn device_token(app: &TestApp) -> String {
    app.pair_device("phone").await.access_token
}

#[actix_rt::test]
async fn anonymous_requests_are_limited_per_ip_with_headers_and_retry_after() {
    let app = spawn_app_with(|s| s.limits.ip_per_minute = 3).await;
    for remaining in [2, 1, 0] {
        let (status, headers, _) = get_with(&app, ANON, None, &[]).await;
        assert_eq!(status, 404);
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            Some("\"ip\";q=3;w=60")
        );
        let rl = header(&headers, "ratelimit").unwrap();
        assert!(rl.starts_with(&format!("\"ip\";r={remaining};t=")), "{rl}");
    }
    let (status, headers, body) = get_with(&app, ANON, None, &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["status"], 429);
    let retry: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(header(&headers, "ratelimit").unwrap().contains("r=0"));
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/problem+json")
    );
    // Health probes and the JWKS are never limited.
    for path in ["/health/live", "/health", "/.well-known/jwks.json"] {
        let (status, headers, _) = get_with(&app, path, None, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert!(header(&headers, "ratelimit").is_none());
    }
    // Authenticated callers have their own budget.
    let (status, _) = app.get("/api/v1/devices", Some(&app.admin_token)).await;
    assert_eq!(status, 200);
    app.clock.advance(Duration::from_secs(retry + 60));
    let (status, _, _) = get_with(&app, ANON, None, &[]).await;
    assert_eq!(status, 404, "the window has passed");
}

#[actix_rt::test]
async fn authenticated_callers_are_limited_per_principal() {
    let app = spawn_app_with(|s| s.limits.principal_per_minute = 3).await;
    let device = app.pair_device("phone").await;
    let path = format!("/api/v1/devices/{}", device.id);
    for _ in 0..3 {
        let (status, headers, _) = get_with(&app, &path, Some(&device.access_token), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            Some("\"principal\";q=3;w=60")
        );
    }
    let (status, headers, body) = get_with(&app, &path, Some(&device.access_token), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(header(&headers, "retry-after").is_some());
    // Another caller is not affected; admins have their own, larger budget.
    let other = app.pair_device("tablet").await;
    let (status, _) = app
        .get(
            &format!("/api/v1/devices/{}", other.id),
            Some(&other.access_token),
        )
        .await;
    assert_eq!(status, 200);
    let (status, headers, _) = get_with(&app, &path, Some(&app.admin_token), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some("\"admin\";q=100000;w=60")
    );
    // Publishing has its own GCRA budget.
    let res = app
        .request(
            Method::POST,
            "/api/v1/notifications",
            Some(&app.admin_token),
        )
        .send_json(&json!({"title": "hi", "body": "there"}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    assert!(header(res.headers(), "ratelimit-policy")
        .unwrap()
        .starts_with("\"publish\";q=6000000"));
}

#[actix_rt::test]
async fn failed_logins_are_limited_per_ip_and_successes_are_not() {
    let app = spawn_app_with(|s| s.limits.auth_per_minute = 3).await;
    // Pairing with valid codes never spends the budget.
    for i in 0..5 {
        app.pair_device(&format!("d{i}")).await;
    }
    let bad = json!({"username": "nobody", "password": "wrong password"});
    for _ in 0..3 {
        let (status, _) = app.post("/api/v1/auth/login", None, &bad).await;
        assert_eq!(status, 401);
    }
    let (status, body) = app.post("/api/v1/auth/login", None, &bad).await;
    assert_eq!(status, 429, "{body}");
    let (status, _) = app
        .post("/api/v1/auth/refresh", None, &json!({"refreshToken": "x"}))
        .await;
    assert_eq!(status, 429, "refresh shares the category");
}

#[actix_rt::test]
async fn ten_violations_block_the_ip_until_an_admin_lifts_it() {
    let app = spawn_app_with(|s| {
        s.limits.ip_per_minute = 2;
        s.limits.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    // Device tokens are checked against real time, so pair before the clock moves.
    let device = app.pair_device("phone").await;
    let offender = [("x-forwarded-for", "198.51.100.7")];
    for _ in 0..2 {
        assert_eq!(get_with(&app, ANON, None, &offender).await.0, 404);
    }
    for _ in 0..10 {
        assert_eq!(get_with(&app, ANON, None, &offender).await.0, 429);
    }
    // Blocked now, even after the window passed.
    app.clock.advance(Duration::from_secs(120));
    let (status, headers, body) = get_with(&app, ANON, None, &offender).await;
    assert_eq!(status, 429);
    assert!(
        body["detail"].as_str().unwrap().contains("blocked"),
        "{body}"
    );
    let retry: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    assert!(retry > 600 && retry <= 900, "{retry}");
    // The admin (another address) sees and lifts it.
    let (status, list) = app.get("/api/v1/blocks", Some(&app.admin_token)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["ip"], "198.51.100.7", "{list}");
    let (status, body) = app.get("/api/v1/blocks", Some(&device.access_token)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        app.delete("/api/v1/blocks/198.51.100.7", Some(&app.admin_token))
            .await,
        204
    );
    assert_eq!(
        app.delete("/api/v1/blocks/198.51.100.7", Some(&app.admin_token))
            .await,
        404
    );
    assert_eq!(
        app.delete("/api/v1/blocks/not-an-ip", Some(&app.admin_token))
            .await,
        404
    );
    assert_eq!(get_with(&app, ANON, None, &offender).await.0, 404);
    // The block expires by itself too.
    for _ in 0..12 {
        get_with(&app, ANON, None, &offender).await;
    }
    assert_eq!(get_with(&app, ANON, None, &offender).await.0, 429);
    app.clock.advance(Duration::from_secs(901));
    assert_eq!(get_with(&app, ANON, None, &offender).await.0, 404);
}

#[actix_rt::test]
async fn forwarded_for_is_ignored_from_untrusted_peers_and_used_from_trusted_ones() {
    let untrusted = spawn_app_with(|s| s.limits.ip_per_minute = 2).await;
    for (i, status) in [404, 404, 429].into_iter().enumerate() {
        let spoof = format!("203.0.113.{i}");
        let (got, _, _) = get_with(&untrusted, ANON, None, &[("x-forwarded-for", &spoof)]).await;
        assert_eq!(got, status, "spoofed addresses share the peer's budget");
    }
    let trusted = spawn_app_with(|s| {
        s.limits.ip_per_minute = 2;
        s.limits.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    for i in 0..5 {
        let client = format!("203.0.113.{i}");
        let (got, _, _) = get_with(&trusted, ANON, None, &[("x-forwarded-for", &client)]).await;
        assert_eq!(got, 404, "each forwarded client has its own budget");
    }
}

#[actix_rt::test]
async fn security_headers_are_on_every_response() {
    let app = spawn_app_with(|s| {
        s.limits.ip_per_minute = 1;
        s.limits.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let check = |headers: &awc::http::header::HeaderMap, api: bool, what: &str| {
        assert_eq!(
            header(headers, "x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(
            header(headers, "referrer-policy"),
            Some("no-referrer"),
            "{what}"
        );
        assert_eq!(
            header(headers, "content-security-policy"),
            Some("default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'"),
            "{what}"
        );
        assert_eq!(
            header(headers, "permissions-policy"),
            Some("camera=(), microphone=(), geolocation=()"),
            "{what}"
        );
        assert_eq!(
            header(headers, "cross-origin-opener-policy"),
            Some("same-origin")
        );
        assert_eq!(
            header(headers, "cross-origin-resource-policy"),
            Some("same-origin")
        );
        assert!(
            header(headers, "server").is_none(),
            "{what}: no Server banner"
        );
        assert!(
            header(headers, "strict-transport-security").is_none(),
            "{what}: plain HTTP"
        );
        assert!(
            header(headers, "access-control-allow-origin").is_none(),
            "{what}: CORS closed"
        );
        if api {
            assert_eq!(header(headers, "cache-control"), Some("no-store"), "{what}");
        }
    };
    let (status, headers, _) = get_with(&app, "/health/live", None, &[]).await;
    assert_eq!(status, 200);
    check(&headers, false, "200");
    let (status, headers, _) = get_with(&app, "/api/v1/devices", Some(&app.admin_token), &[]).await;
    assert_eq!(status, 200);
    check(&headers, true, "200 api");
    let (status, headers, _) =
        get_with(&app, "/nope", None, &[("x-forwarded-for", "192.0.2.1")]).await;
    assert_eq!(status, 404);
    check(&headers, false, "404");
    let (status, headers, _) = get_with(&app, ANON, None, &[]).await;
    assert_eq!(status, 404);
    check(&headers, true, "404 api");
    let (status, headers, _) = get_with(&app, ANON, None, &[]).await;
    assert_eq!(status, 429);
    check(&headers, true, "429");
    let (status, headers, _) = get_with(&app, "/api/v1/devices", Some("bmp_wrong"), &[]).await;
    assert_eq!(status, 401);
    check(&headers, true, "401");
    let (status, headers, _) = get_with(
        &app,
        "/health/live",
        None,
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains"),
        "TLS at a trusted proxy"
    );
    // A 5xx carries them too: a relay whose Redis is unreachable cannot check a device token's
    // revocation, and says 503 rather than guess.
    let down = spawn_app_with(|s| {
        s.redis.url = "redis://127.0.0.1:1".into();
        s.redis.timeout_ms = 200;
    })
    .await;
    let (status, headers, body) = get_with(
        &down,
        "/api/v1/devices/dev_01J00000000000000000000000",
        Some(&device_token(&down).await),
        &[],
    )
    .await;
    assert_eq!(status, 503, "{body}");
    check(&headers, true, "503");
    // A URI over the limit is a 414 problem document with the headers.
    let long = format!("/api/v1/devices?x={}", "a".repeat(9_000));
    let (status, headers, body) = get_with(&app, &long, Some(&app.admin_token), &[]).await;
    assert_eq!(status, 414, "{body}");
    assert_eq!(body["code"], "URI_TOO_LONG");
    check(&headers, true, "414");
}

#[actix_rt::test]
async fn cors_answers_only_allowed_origins() {
    let app = spawn_app_with(|s| {
        s.security.cors_allowed_origins = vec!["https://dash.example.com".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/api/v1/devices", None)
            .insert_header(("origin", origin))
            .insert_header(("access-control-request-method", "GET"))
            .send()
    };
    let res = preflight("https://dash.example.com").await.unwrap();
    assert_eq!(res.status().as_u16(), 204);
    assert_eq!(
        header(res.headers(), "access-control-allow-origin"),
        Some("https://dash.example.com")
    );
    let res = preflight("https://evil.example").await.unwrap();
    assert!(header(res.headers(), "access-control-allow-origin").is_none());
    assert_ne!(res.status().as_u16(), 204);
}

#[actix_rt::test]
async fn deeply_nested_json_is_refused_naming_the_body() {
    let app = spawn_app_with(|_| {}).await;
    let mut nested = json!(1);
    for _ in 0..40 {
        nested = json!([nested]);
    }
    let (status, body) = app
        .post(
            "/api/v1/notifications",
            Some(&app.admin_token),
            &json!({"title": "t", "data": nested}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "body", "{body}");
}

#[actix_rt::test]
async fn socket_floods_are_refused_and_the_relay_keeps_serving() {
    let app = spawn_app_with(|s| {
        s.limits.max_sockets_per_ip = 5;
        s.limits.ws_frame_burst = 5;
        s.limits.ws_frames_per_second = 1;
        s.websocket.auth_timeout_seconds = 60;
    })
    .await;
    // Unauthenticated sockets up to the cap; the next upgrade is refused with 429.
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(app.connect(None).await);
    }
    let refused = app
        .client
        .ws(format!("ws://127.0.0.1:{}/api/v1/ws", app.port))
        .connect()
        .await;
    match refused {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
            assert_eq!(status.as_u16(), 429)
        }
        Err(e) => panic!("expected 429, got {e}"),
        Ok(_) => panic!("the sixth socket was accepted"),
    }
    assert_eq!(app.get("/health/live", None).await.0, 200);
    // Closing sockets frees the count.
    for ws in open.drain(..) {
        ws.close().await;
    }
    let device = app.pair_device("phone").await;
    let mut flooding = None;
    for _ in 0..50 {
        // The closes are processed asynchronously.
        if app.state.limits.open_socket("127.0.0.1".parse().unwrap()) {
            app.state.limits.close_socket("127.0.0.1".parse().unwrap());
            flooding = Some(app.connect_device(&device).await);
            break;
        }
        // Bounded retry: each closed socket releases its count in its actor's `stopped`.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ws = flooding.expect("sockets were released");
    // A burst of garbage frames over the frame rate closes the socket with 4008.
    for _ in 0..7 {
        ws.send_text("garbage").await;
    }
    assert_eq!(ws.expect_close().await, Some(4008));
    assert_eq!(app.get("/health/live", None).await.0, 200);
    let (status, _) = app.get("/api/v1/devices", Some(&app.admin_token)).await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn redis_limits_per_ip_and_principal() {
    require_redis().await;
    let app = spawn_app_with(|s| {
        s.redis.url = redis_url();
        s.redis.key_prefix = unique_prefix();
        s.limits.ip_per_minute = 2;
        s.limits.principal_per_minute = 2;
    })
    .await;
    assert_eq!(get_with(&app, ANON, None, &[]).await.0, 404);
    assert_eq!(get_with(&app, ANON, None, &[]).await.0, 404);
    let (status, headers, _) = get_with(&app, ANON, None, &[]).await;
    assert_eq!(status, 429);
    assert!(header(&headers, "retry-after").is_some());
    let device = app.pair_device("phone").await;
    let path = format!("/api/v1/devices/{}", device.id);
    for expected in [200, 200, 429] {
        let (status, _, body) = get_with(&app, &path, Some(&device.access_token), &[]).await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, health) = app.get("/health", Some(&app.admin_token)).await;
    assert_eq!(status, 200);
    assert_eq!(health["rateLimit"]["backend"], "redis");
    assert_eq!(health["rateLimit"]["status"], "healthy");
    app.clock.advance(Duration::from_secs(121));
    assert_eq!(get_with(&app, ANON, None, &[]).await.0, 404);
}

#[actix_rt::test]
async fn two_relays_sharing_redis_share_one_limit() {
    require_redis().await;
    let prefix = unique_prefix();
    let tweak = |s: &mut beepmyphone::config::Settings| {
        s.redis.url = redis_url();
        s.redis.key_prefix = prefix.clone();
        s.limits.ip_per_minute = 3;
    };
    let a = spawn_app_with(tweak).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    tweak(&mut settings);
    let b = start_in(dir, settings).await;
    assert_eq!(get_with(&a, ANON, None, &[]).await.0, 404);
    assert_eq!(get_with(&b, ANON, None, &[]).await.0, 404);
    assert_eq!(get_with(&a, ANON, None, &[]).await.0, 404);
    let (status, headers, _) = get_with(&b, ANON, None, &[]).await;
    assert_eq!(
        status, 429,
        "the second relay sees the first one's requests"
    );
    assert!(header(&headers, "ratelimit").unwrap().contains("r=0"));
}

#[actix_rt::test]
async fn a_block_made_by_one_relay_holds_on_every_relay_sharing_redis() {
    require_redis().await;
    let prefix = unique_prefix();
    let tweak = |s: &mut beepmyphone::config::Settings| {
        s.redis.url = redis_url();
        s.redis.key_prefix = prefix.clone();
        s.limits.ip_per_minute = 2;
        s.limits.trusted_proxies = vec!["127.0.0.1".into()];
    };
    let a = spawn_app_with(tweak).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    tweak(&mut settings);
    let b = start_in(dir, settings).await;
    let offender = [("x-forwarded-for", "203.0.113.9")];
    // Two allowed, then ten violations on relay A block the address.
    for _ in 0..2 {
        assert_eq!(get_with(&a, ANON, None, &offender).await.0, 404);
    }
    for _ in 0..10 {
        assert_eq!(get_with(&a, ANON, None, &offender).await.0, 429);
    }
    // Relay B lists it at once (its admin call reads Redis) and enforces it after its next sync
    // (one tick of its clock); the window has passed by then, so only the block can refuse.
    let (status, list) = b.get("/api/v1/blocks", Some(&b.admin_token)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["ip"], "203.0.113.9", "{list}");
    b.clock.advance(Duration::from_secs(61));
    let mut refused = None;
    for _ in 0..100 {
        let (status, _, body) = get_with(&b, ANON, None, &offender).await;
        if status == 429 {
            refused = Some(body);
            break;
        }
        b.clock.advance(Duration::from_secs(1));
        // The block sync runs on B's clock but reads Redis asynchronously: let it land.
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    let body = refused.expect("relay B enforces relay A's block");
    assert!(
        body["detail"].as_str().unwrap().contains("blocked"),
        "{body}"
    );
    // Lifting it on B lifts it everywhere: B's call removes it from Redis, and A drops its own
    // record at its next read of Redis.
    assert_eq!(
        b.delete("/api/v1/blocks/203.0.113.9", Some(&b.admin_token))
            .await,
        204
    );
    let (_, list) = b.get("/api/v1/blocks", Some(&b.admin_token)).await;
    assert_eq!(list["items"], json!([]), "{list}");
    a.clock.advance(Duration::from_secs(61));
    // (The two relays' manual clocks differ, so A may also rate-limit the address through the
    // shared window: only a "blocked" answer counts as the block.)
    let mut lifted = false;
    for _ in 0..100 {
        let (status, _, body) = get_with(&a, ANON, None, &offender).await;
        if status != 429 || !body["detail"].as_str().unwrap_or("").contains("blocked") {
            lifted = true;
            break;
        }
        a.clock.advance(Duration::from_secs(1));
        // As above, on A: the tick's Redis read is asynchronous.
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lifted, "relay A lifts the block B lifted");
    // (The per-IP window is shared too; move B's clock past it.)
    b.clock.advance(Duration::from_secs(120));
    assert_eq!(get_with(&b, ANON, None, &offender).await.0, 404);
}

#[actix_rt::test]
async fn an_unreachable_redis_falls_back_to_embedded_limits_and_reports_degraded() {
    let app = spawn_app_with(|s| {
        s.redis.url = "redis://127.0.0.1:1".into();
        s.redis.timeout_ms = 200;
        s.limits.ip_per_minute = 2;
    })
    .await;
    assert_eq!(get_with(&app, ANON, None, &[]).await.0, 404);
    assert_eq!(get_with(&app, ANON, None, &[]).await.0, 404);
    let (status, _, body) = get_with(&app, ANON, None, &[]).await;
    assert_eq!(status, 429, "embedded limits still hold: {body}");
    assert!(app.state.limits.limiter.degraded());
    // Redis itself is unhealthy (so is the relay as a whole), the limiter is degraded, and the
    // relay stays ready: only an unwritable store takes it out.
    let (status, health) = app.get("/health", Some(&app.admin_token)).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unhealthy", "{health}");
    let component = |name: &str| {
        health["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {health}"))
            .clone()
    };
    assert_eq!(component("redis")["status"], "unhealthy", "{health}");
    assert_eq!(component("ratelimit")["status"], "degraded", "{health}");
    assert_eq!(component("store")["status"], "healthy", "{health}");
    assert_eq!(health["rateLimit"]["status"], "degraded", "{health}");
    assert_eq!(app.get("/health/ready", None).await.0, 200);
    // A 5xx (the deny-list cannot be checked without Redis) still carries the headers.
    let device = app.pair_device("phone").await;
    let (status, headers, body) = get_with(
        &app,
        &format!("/api/v1/devices/{}", device.id),
        Some(&device.access_token),
        &[],
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    assert!(header(&headers, "content-security-policy").is_some());
}

/// The cost of one limit decision. Run with
/// `cargo test --release --test api limits::decision_cost -- --ignored --nocapture`.
#[actix_rt::test]
#[ignore]
async fn decision_cost() {
    use beepmyphone::security::ratelimit::{EmbeddedLimiter, Rule};
    let limiter = EmbeddedLimiter::new(100_000);
    let window = Rule::window("ip", 1_000_000, 60_000);
    let gcra = Rule::gcra("publish", 1_000_000, 60_000, 1_000);
    let n = 200_000;
    let started = std::time::Instant::now();
    for i in 0..n {
        limiter.check(
            &window,
            &format!("10.0.{}.{}", (i / 256) % 256, i % 256),
            1_000,
            true,
        );
    }
    let per_window = started.elapsed() / n;
    let started = std::time::Instant::now();
    for i in 0..n {
        limiter.check(&gcra, "tok_01", 1_000 + i64::from(i), true);
    }
    let per_gcra = started.elapsed() / n;
    println!("embedded: sliding window {per_window:?}/decision (65,536 keys), GCRA {per_gcra:?}/decision");
    require_redis().await;
    let redis = beepmyphone::redis::Redis::connect(&beepmyphone::config::RedisSettings {
        url: redis_url(),
        key_prefix: unique_prefix(),
        ..Default::default()
    })
    .await
    .unwrap();
    let n = 5_000u32;
    let started = std::time::Instant::now();
    for i in 0..n {
        redis
            .rate_limit(&window, "10.0.0.1", 1_000 + i64::from(i), true)
            .await
            .unwrap();
    }
    let per_redis_window = started.elapsed() / n;
    let started = std::time::Instant::now();
    for i in 0..n {
        redis
            .rate_limit(&gcra, "tok_01", 1_000 + i64::from(i), true)
            .await
            .unwrap();
    }
    let per_redis_gcra = started.elapsed() / n;
    println!("redis (one round trip, sequential): sliding window {per_redis_window:?}/decision, GCRA {per_redis_gcra:?}/decision");
}

#[actix_rt::test]
async fn a_slow_request_body_gets_408_when_the_body_timeout_passes() {
    let app = spawn_app_with(|s| s.server.body_timeout_seconds = 1).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /api/v1/devices/pair HTTP/1.1\r\nHost: relay\r\n\
              Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n{",
        )
        .await
        .expect("head");
    // A real wait: actix's connection IO runs on the real tokio clock, not on the relay's manual
    // clock, so the 1 s timeout is waited for (bounded by 10 s below).
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the relay answers a stalled body and closes the connection within 10 s");
    read.expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(
        response.contains(r#""code":"REQUEST_TIMEOUT""#),
        "{response}"
    );
    assert!(
        response.to_ascii_lowercase().contains("x-request-id:"),
        "{response}"
    );
    // The relay still serves.
    assert_eq!(app.get("/health/live", None).await.0, 200);
}
