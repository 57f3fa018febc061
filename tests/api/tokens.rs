//! Tests: forged access tokens, and signing-key rotation.
//!
//! Every forged token is tried twice against a running relay: on `GET /api/v1/devices/{own id}`
//! (expect 401) and on the WebSocket (expect close 4001). Tokens are forged with jsonwebtoken or by
//! hand, signed with an attacker's key or with the relay's own private key read from its keys
//! directory, which lets us build exact claim sets (expired, not yet valid, wrongly typed...).
//! jsonwebtoken checks `exp` and `nbf` against the system clock, so time-based forgeries use real
//! time; the relay's manual clock drives key rotation and retirement.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::{beep, spawn_app, Device, TestApp};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The relay's keys directory.
fn keys_dir(app: &TestApp) -> PathBuf {
    app.data_dir.path().join("keys")
}

/// The private key file of `kid` in the relay's keys directory.
fn key_file(app: &TestApp, kid: &str) -> PathBuf {
    std::fs::read_dir(keys_dir(app))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("signing-") && name.ends_with(&format!("{kid}.pem"))
        })
        .unwrap_or_else(|| panic!("no key file for {kid}"))
}

/// The relay's private key of `kid` (PEM).
fn relay_pem(app: &TestApp, kid: &str) -> Vec<u8> {
    std::fs::read(key_file(app, kid)).unwrap()
}

/// The kid the relay signs with now.
fn current_kid(app: &TestApp) -> String {
    app.state.keys.load().kid().to_owned()
}

/// The kid in a token's header.
fn kid_of_token(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Claims the relay would accept for `device`.
fn good_claims(device: &Device) -> Value {
    let now = now_s();
    json!({
        "iss": "beepmyphone", "aud": "beepmyphone-devices", "sub": device.id,
        "iat": now, "nbf": now, "exp": now + 600,
        "jti": ulid::Ulid::new().to_string(), "typ": "access",
    })
}

/// Signs `claims` (any JSON) with RS256 under `header`, using the PEM private key.
fn sign(pem: &[u8], header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap()
}

fn rs256(kid: &str) -> Header {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    header
}

/// A token the relay accepts, signed by us with its current key.
fn relay_signed(app: &TestApp, claims: &Value) -> String {
    let kid = current_kid(app);
    sign(&relay_pem(app, &kid), &rs256(&kid), claims)
}

/// An attacker's RSA key: (PEM, kid-shaped id).
fn attacker_key() -> (Vec<u8>, String) {
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    (
        rsa.private_key_to_pem().unwrap(),
        "a77ac4e2a77ac4e2".to_owned(),
    )
}

/// Asserts that `token` works: 200 on the device's own resource and `hello` on the socket.
async fn assert_accepted(app: &TestApp, device: &Device, token: &str, what: &str) {
    let (status, body) = app
        .get(&format!("/api/v1/devices/{}", device.id), Some(token))
        .await;
    assert_eq!(status, 200, "{what}: {body}");
    let mut ws = app.connect(Some(token)).await;
    let hello = ws.next_json().await;
    assert_eq!(hello["type"], "hello", "{what}: {hello}");
    ws.close().await;
}

/// Asserts that `token` is refused: 401 over HTTP, close 4001 on the socket (header and in-band).
async fn assert_refused(app: &TestApp, device: &Device, token: &str, what: &str) {
    let (status, body) = app
        .get(&format!("/api/v1/devices/{}", device.id), Some(token))
        .await;
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["code"], "UNAUTHORIZED", "{what}: {body}");
    let mut ws = app.connect(Some(token)).await;
    assert_eq!(ws.expect_close().await, Some(4001), "{what} (header)");
    let mut ws = app.connect(None).await;
    ws.send_json(&json!({"type": "auth", "token": token})).await;
    assert_eq!(ws.expect_close().await, Some(4001), "{what} (auth frame)");
}

#[actix_web::test]
async fn a_token_we_sign_with_the_relay_key_passes_so_the_forgeries_below_are_meaningful() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    assert_eq!(kid_of_token(&device.access_token), current_kid(&app));
    assert_accepted(&app, &device, &device.access_token, "issued").await;
    let ours = relay_signed(&app, &good_claims(&device));
    assert_accepted(&app, &device, &ours, "signed by the test").await;
    // Within the 30 s leeway on both ends.
    let mut claims = good_claims(&device);
    claims["exp"] = json!(now_s() - 15);
    claims["nbf"] = json!(now_s() + 15);
    assert_accepted(&app, &device, &relay_signed(&app, &claims), "within leeway").await;
}

#[actix_web::test]
async fn alg_none_and_stripped_signatures_are_refused() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let kid = current_kid(&app);
    let claims = b64(good_claims(&device).to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes());
        assert_refused(&app, &device, &format!("{header}.{claims}."), alg).await;
    }
    let [header, payload, _]: [&str; 3] = device
        .access_token
        .split('.')
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    assert_refused(
        &app,
        &device,
        &format!("{header}.{payload}."),
        "stripped signature",
    )
    .await;
    assert_refused(
        &app,
        &device,
        &format!("{header}.{payload}"),
        "two segments",
    )
    .await;
}

#[actix_web::test]
async fn hs256_with_the_relay_public_key_as_the_secret_is_refused() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let kid = current_kid(&app);
    let rsa = openssl::rsa::Rsa::private_key_from_pem(&relay_pem(&app, &kid)).unwrap();
    // The public key as an attacker can get it: from the JWK set, in every usual encoding.
    let (status, jwks) = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    let jwk_n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("PEM (SPKI)", rsa.public_key_to_pem().unwrap()),
        ("PEM (PKCS#1)", rsa.public_key_to_pem_pkcs1().unwrap()),
        ("DER (SPKI)", rsa.public_key_to_der().unwrap()),
        ("DER (PKCS#1)", rsa.public_key_to_der_pkcs1().unwrap()),
        ("JWK n", jwk_n.into_bytes()),
    ];
    for (form, secret) in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(kid.clone());
            let token = jsonwebtoken::encode(
                &header,
                &good_claims(&device),
                &EncodingKey::from_secret(&secret),
            )
            .unwrap();
            assert_refused(&app, &device, &token, &format!("{alg:?} with {form}")).await;
        }
    }
}

#[actix_web::test]
async fn unknown_and_path_traversal_kids_are_refused() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let kid = current_kid(&app);
    let pem = relay_pem(&app, &kid);
    let claims = good_claims(&device);
    // Even signed with the relay's own key, a kid that is not exactly ours is refused.
    for bad in [
        "0000000000000000".to_owned(),
        "../../keys/x".to_owned(),
        format!("../keys/signing-{kid}"),
        format!("{kid}.pem"),
        kid.to_uppercase(),
        format!("{kid} "),
        String::new(),
    ] {
        assert_refused(&app, &device, &sign(&pem, &rs256(&bad), &claims), &bad).await;
    }
    let no_kid = sign(&pem, &Header::new(Algorithm::RS256), &claims);
    assert_refused(&app, &device, &no_kid, "no kid").await;
    // An attacker's key under an unknown kid.
    let (attacker, attacker_kid) = attacker_key();
    let token = sign(&attacker, &rs256(&attacker_kid), &claims);
    assert_refused(&app, &device, &token, "attacker key").await;
    // An attacker's key under our kid.
    let token = sign(&attacker, &rs256(&kid), &claims);
    assert_refused(&app, &device, &token, "attacker key, our kid").await;
}

#[actix_web::test]
async fn jku_x5u_and_embedded_jwk_headers_are_never_used_nor_fetched() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    // Where the attacker's key set "lives": the relay must never connect here.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!("http://{}/jwks.json", trap.local_addr().unwrap());
    let (attacker, attacker_kid) = attacker_key();
    let rsa = openssl::rsa::Rsa::private_key_from_pem(&attacker).unwrap();
    let claims = good_claims(&device);

    let mut jku = rs256(&attacker_kid);
    jku.jku = Some(trap_url.clone());
    assert_refused(&app, &device, &sign(&attacker, &jku, &claims), "jku").await;

    let mut x5u = rs256(&attacker_kid);
    x5u.x5u = Some(trap_url.clone());
    assert_refused(&app, &device, &sign(&attacker, &x5u, &claims), "x5u").await;

    // The attacker's public key embedded in the header.
    let jwk = json!({
        "kty": "RSA", "kid": attacker_kid, "use": "sig", "alg": "RS256",
        "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec()),
    });
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": attacker_kid, "jwk": jwk});
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let pkey = openssl::pkey::PKey::from_rsa(rsa).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
    signer.update(message.as_bytes()).unwrap();
    let embedded = format!("{message}.{}", b64(&signer.sign_to_vec().unwrap()));
    assert_refused(&app, &device, &embedded, "embedded jwk").await;

    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the relay fetched an attacker-supplied URL"
    );
}

#[actix_web::test]
async fn a_tampered_payload_is_refused() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let other = app.pair_device("other").await;
    let parts: Vec<&str> = device.access_token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let longer = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(&app, &device, &longer, "exp extended").await;
    claims["sub"] = json!(other.id);
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(&app, &other, &swapped, "sub swapped").await;
    // One flipped bit in the signature.
    let mut signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    signature[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
    assert_refused(&app, &device, &flipped, "signature bit").await;
}

#[actix_web::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut expired = good_claims(&device);
    expired["iat"] = json!(now_s() - 7_200);
    expired["nbf"] = json!(now_s() - 7_200);
    expired["exp"] = json!(now_s() - 60);
    assert_refused(&app, &device, &relay_signed(&app, &expired), "expired").await;
    let mut future = good_claims(&device);
    future["nbf"] = json!(now_s() + 600);
    future["exp"] = json!(now_s() + 3_600);
    assert_refused(
        &app,
        &device,
        &relay_signed(&app, &future),
        "nbf in the future",
    )
    .await;
}

#[actix_web::test]
async fn wrongly_typed_missing_or_foreign_claims_are_refused() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let later = now_s() + 600;
    let mut cases: Vec<(String, Value)> = vec![
        ("string exp".into(), json!({"exp": later.to_string()})),
        ("float exp".into(), json!({"exp": later as f64 + 0.5})),
        ("string nbf".into(), json!({"nbf": now_s().to_string()})),
        ("wrong typ".into(), json!({"typ": "refresh"})),
        ("wrong aud".into(), json!({"aud": "someone-else"})),
        (
            "aud list".into(),
            json!({"aud": ["beepmyphone-devices", "x"]}),
        ),
        ("wrong iss".into(), json!({"iss": "https://evil.example"})),
        ("empty jti".into(), json!({"jti": ""})),
        ("sub not a device id".into(), json!({"sub": "admin"})),
    ];
    for missing in ["jti", "typ", "exp", "nbf", "iat", "iss", "aud", "sub"] {
        let mut change = serde_json::Map::new();
        change.insert(missing.to_owned(), Value::Null);
        cases.push((format!("missing {missing}"), Value::Object(change)));
    }
    for (what, change) in cases {
        let mut claims = good_claims(&device);
        for (field, value) in change.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(field);
            } else {
                claims[field] = value.clone();
            }
        }
        assert_refused(&app, &device, &relay_signed(&app, &claims), &what).await;
    }
}

#[actix_web::test]
async fn a_refresh_token_is_never_an_access_token() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    assert!(device.refresh_token.starts_with("bmr_"));
    assert_refused(&app, &device, &device.refresh_token, "refresh token").await;
    // Nor is a JWT that claims to be one.
    let mut claims = good_claims(&device);
    claims["typ"] = json!("refresh");
    assert_refused(&app, &device, &relay_signed(&app, &claims), "typ refresh").await;
    // The refresh token still works where it belongs.
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": device.refresh_token}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn jwks_is_public_and_holds_only_public_parts() {
    let app = spawn_app().await;
    let mut res = app
        .request(awc::http::Method::GET, "/.well-known/jwks.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let cache = res
        .headers()
        .get("cache-control")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(cache.contains("max-age=60"), "{cache}");
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let key = keys[0].as_object().unwrap();
    let mut fields: Vec<&str> = key.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, vec!["alg", "e", "kid", "kty", "n", "use"]);
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["e"], "AQAB");
    assert_eq!(key["kid"], current_kid(&app).as_str());
    // 2048-bit modulus: 256 bytes, 342 base64url characters.
    assert_eq!(key["n"].as_str().unwrap().len(), 342);
    // The JWK verifies the relay's tokens (what a third-party verifier would do).
    let device = app.pair_device("phone").await;
    let decoding = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap(),
        key["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_audience(&["beepmyphone-devices"]);
    jsonwebtoken::decode::<Value>(&device.access_token, &decoding, &validation).unwrap();
    // Wrong method: 405 with Allow.
    let res = app
        .request(awc::http::Method::POST, "/.well-known/jwks.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 405);
    assert_eq!(res.headers().get("allow").unwrap(), "GET, HEAD");
}

#[actix_web::test]
async fn key_endpoints_are_for_admins_only() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let (status, body) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "ci", "scope": "publish"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let publisher = body["token"].as_str().unwrap().to_owned();
    for token in [
        None,
        Some(device.access_token.as_str()),
        Some(publisher.as_str()),
    ] {
        let expected = if token.is_none() { 401 } else { 403 };
        let (status, _) = app.get("/api/v1/keys", token).await;
        assert_eq!(status, expected);
        let (status, _) = app.post("/api/v1/keys/rotate", token, &json!({})).await;
        assert_eq!(status, expected);
    }
    assert_eq!(app.state.keys.load().keys().len(), 1, "nothing was rotated");
}

/// `POST /keys/rotate` once; the status, `Retry-After` and body.
async fn rotate_once(app: &TestApp) -> (u16, Option<u64>, Value) {
    let mut res = app
        .request(
            awc::http::Method::POST,
            "/api/v1/keys/rotate",
            Some(&app.admin_token),
        )
        .send_json(&json!({}))
        .await
        .unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (res.status().as_u16(), retry, body)
}

#[actix_web::test]
async fn rotation_is_bounded_in_rate_and_ring_size_and_the_jwks_stays_small() {
    use beepmyphone_actors::keys::{MAX_KEYS_IN_FORCE, MIN_ROTATION_INTERVAL};
    let app = spawn_app().await;
    let (status, _, body) = rotate_once(&app).await;
    assert_eq!(status, 201, "{body}");
    // At once after it: too soon, a 429 problem saying when to retry.
    let (status, retry, body) = rotate_once(&app).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "RATE_LIMITED");
    let retry = retry.expect("Retry-After");
    assert!(
        (1..=MIN_ROTATION_INTERVAL.as_secs()).contains(&retry),
        "{retry}"
    );
    // One rotation per interval fills the ring, then every further one is refused until the
    // oldest verifying key retires; no key is retired early.
    let mut created = 1;
    let mut full = None;
    for _ in 0..40 {
        app.clock.advance(MIN_ROTATION_INTERVAL);
        let (status, retry, body) = rotate_once(&app).await;
        match status {
            201 => created += 1,
            429 => {
                assert_eq!(body["code"], "RATE_LIMITED", "{body}");
                full = retry;
            }
            other => panic!("rotation answered {other}: {body}"),
        }
        assert!(app.state.keys.load().keys().len() <= MAX_KEYS_IN_FORCE);
    }
    assert_eq!(
        created,
        MAX_KEYS_IN_FORCE - 1,
        "the ring fills, then refuses"
    );
    // The ring is full until the start-up key retires (3640 s after the second key appeared,
    // of which 40 intervals have passed).
    let full = full.expect("a Retry-After when the ring is full");
    assert!(full > 60 && full <= 3_640, "{full}");
    let (status, jwks) = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), MAX_KEYS_IN_FORCE);
    assert!(jwks.to_string().len() < 8 * 1024, "the JWK set stays small");
}

/// Polls the JWK set until `ready` holds for its kids.
async fn wait_for_jwks(
    app: &TestApp,
    what: &str,
    ready: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    // The key manager publishes its snapshot from its own actor after a clock tick.
    crate::helpers::eventually(&format!("the JWK set shows {what}"), || async {
        let (status, jwks) = app.get("/.well-known/jwks.json", None).await;
        assert_eq!(status, 200);
        let kids: Vec<String> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        ready(&kids).then_some(kids)
    })
    .await
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[actix_web::test]
async fn rotation_keeps_old_tokens_valid_until_they_expire_then_retires_the_old_key() {
    let app = spawn_app().await;
    let old_kid = current_kid(&app);
    let device = app.pair_device("before").await;
    let old_token = device.access_token.clone();
    let old_file = key_file(&app, &old_kid);
    let mut old_socket = app.connect_device(&device).await;

    let (status, created) = app
        .post("/api/v1/keys/rotate", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 201, "{created}");
    let new_kid = created["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(created["state"], "current");
    assert_eq!(current_kid(&app), new_kid, "the new key signs at once");

    // Private keys on disk are for the owner only.
    assert_eq!(mode(&keys_dir(&app)), 0o700);
    assert_eq!(mode(&key_file(&app, &new_kid)), 0o600);
    assert_eq!(mode(&old_file), 0o600);

    // The admin view: the new key current, the old one verifying until a stated time.
    let (status, list) = app.get("/api/v1/keys", Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["kid"], new_kid.as_str());
    assert_eq!(items[0]["state"], "current");
    assert!(items[0].get("retiresAt").is_none(), "{list}");
    assert_eq!(items[1]["kid"], old_kid.as_str());
    assert_eq!(items[1]["state"], "verifying");
    let retires_at = chrono::DateTime::parse_from_rfc3339(items[1]["retiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let created_at = chrono::DateTime::parse_from_rfc3339(items[0]["createdAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    // Access-token lifetime (3600 s) + leeway (30 s) + one scan (10 s) after the new key appeared.
    assert_eq!(retires_at - created_at, 3_640_000);

    // JWKS publishes both; the old token still works, over HTTP and on its open socket.
    let kids = wait_for_jwks(&app, "both keys", |kids| kids.len() == 2).await;
    assert_eq!(kids, vec![new_kid.clone(), old_kid.clone()]);
    assert_accepted(&app, &device, &old_token, "old token after rotation").await;
    // In-band re-authentication with it keeps the open socket, which still receives.
    old_socket
        .send_json(&json!({"type": "auth", "token": old_token}))
        .await;
    app.publish(json!({"title": "still here", "targets": [device.id]}))
        .await;
    let items = old_socket.receive(1).await;
    assert_eq!(items[0]["title"], "still here");
    old_socket.ack_all(&items).await;

    // New tokens, from pairing and from refresh, carry the new kid.
    let paired = app.pair_device("after").await;
    assert_eq!(kid_of_token(&paired.access_token), new_kid);
    let (status, refreshed) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": device.refresh_token}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let refreshed_token = refreshed["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(kid_of_token(&refreshed_token), new_kid);
    assert_accepted(&app, &device, &refreshed_token, "refreshed token").await;

    // Just before the retirement point nothing changes.
    app.clock.advance(Duration::from_millis(
        u64::try_from(retires_at - created_at - 5_000).unwrap(),
    ));
    // Nothing must happen here, and absence has no signal: give the key manager a real-time
    // moment to act on the advanced clock (if it wrongly retired now, the check below sees it).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        wait_for_jwks(&app, "both keys", |kids| kids.len() == 2).await,
        vec![new_kid.clone(), old_kid.clone()]
    );
    // Past it (and a tick later) the old key is gone: from JWKS, from disk, from verification.
    app.clock.advance(Duration::from_secs(15));
    let kids = wait_for_jwks(&app, "the old key retired", |kids| kids.len() == 1).await;
    assert_eq!(kids, vec![new_kid.clone()]);
    // The snapshot is published first, then the file goes.
    crate::helpers::eventually("the retired private key is deleted", || async {
        (!old_file.exists()).then_some(())
    })
    .await;
    let retired: Vec<String> = std::fs::read_dir(keys_dir(&app).join("retired"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(retired.len(), 1);
    assert!(
        retired[0].ends_with(&format!("{old_kid}.pub.pem")),
        "{retired:?}"
    );
    assert_refused(&app, &device, &old_token, "token of a retired key").await;
    let (status, list) = app.get("/api/v1/keys", Some(&app.admin_token)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    // Tokens are judged on the relay's clock: the one paired after the rotation has expired by
    // now (an hour and more later), and a refreshed one of the current key verifies.
    let path = format!("/api/v1/devices/{}", paired.id);
    let (status, body) = app.get(&path, Some(&paired.access_token)).await;
    assert_eq!(status, 401, "{body}");
    let (status, refreshed) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": paired.refresh_token}),
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    let token = refreshed["accessToken"].as_str().unwrap();
    assert_eq!(kid_of_token(token), new_kid);
    let (status, body) = app.get(&path, Some(token)).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn cli_keys_rotate_and_status_and_the_running_relay_picks_the_new_key_up() {
    let app = spawn_app().await;
    let old_kid = current_kid(&app);
    let device = app.pair_device("phone").await;
    let data_dir = app.data_dir.path().to_str().unwrap().to_owned();

    let (code, out, err) = beep(
        app.data_dir.path(),
        &["keys", "rotate", "--data-dir", &data_dir],
    )
    .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let new_kid = out
        .lines()
        .find_map(|l| l.strip_prefix("New signing key: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no new kid in: {out}"))
        .to_owned();
    assert_ne!(new_kid, old_kid);
    assert!(
        out.contains(&format!("Still verifying: {old_kid} until ")),
        "{out}"
    );
    assert!(!out.contains("data key"), "signing keys only: {out}");
    assert_eq!(mode(&key_file(&app, &new_kid)), 0o600);
    // Nothing secret is printed.
    let pem = String::from_utf8(relay_pem(&app, &new_kid)).unwrap();
    assert!(!out.contains("PRIVATE KEY") && !err.contains("PRIVATE KEY"));
    assert!(!out.contains(pem.lines().nth(1).unwrap()));

    let (code, status, err) = beep(
        app.data_dir.path(),
        &["keys", "status", "--data-dir", &data_dir],
    )
    .await;
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(lines[0], "Signing keys (newest first):", "{status}");
    assert!(
        lines[1].contains(&new_kid) && lines[1].contains("current"),
        "{status}"
    );
    assert!(
        lines[2].contains(&old_kid) && lines[2].contains("verifying until"),
        "{status}"
    );
    assert!(
        status.contains("Data keys (wrapped by a key file):"),
        "{status}"
    );
    assert!(
        status.contains("content   aes-256-gcm         current"),
        "{status}"
    );

    // The running relay still signs with the old key until its next scan of the keys directory.
    assert_eq!(current_kid(&app), old_kid);
    app.clock.advance(Duration::from_secs(10));
    let kids = wait_for_jwks(&app, "the CLI's key", |kids| kids.first() == Some(&new_kid)).await;
    assert_eq!(kids, vec![new_kid.clone(), old_kid.clone()]);
    assert_eq!(current_kid(&app), new_kid);
    let paired = app.pair_device("after").await;
    assert_eq!(kid_of_token(&paired.access_token), new_kid);
    assert_accepted(&app, &device, &device.access_token, "old token").await;
    assert_accepted(&app, &paired, &paired.access_token, "new token").await;
}

#[actix_web::test]
async fn keys_commands_on_an_empty_directory_and_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = beep(
        dir.path(),
        &["keys", "rotate", "--config", "/nonexistent.toml"],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = beep(
        dir.path(),
        &["keys", "status", "--data-dir", dir.path().to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Signing keys: none yet"), "{out}");
    assert!(out.contains("Data keys: none yet"), "{out}");
    // On an empty directory, rotate makes the first keys, one of each.
    let (code, out, err) = beep(
        dir.path(),
        &["keys", "rotate", "--data-dir", dir.path().to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("signing-"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        out.contains(&format!(
            "New signing key: {} (current)",
            &names[0][names[0].len() - 20..names[0].len() - 4]
        )),
        "{out}"
    );
}
