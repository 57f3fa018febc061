//! The dashboard over plain HTTP (no browser): its security headers on every response, the
//! login's messages, the CSRF and same-origin checks of its forms, the pages that work without
//! JavaScript, and the API endpoints it added (live events, metrics history, audit verification).
//! `dashboard_browser.rs` drives the same pages in Chromium.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use beepmyphone::api::headers::DASHBOARD_CSP;

use crate::helpers::{create_admin, spawn_app, spawn_app_with, TestApp, ADMIN_PASSWORD};

/// A browser-like client: no redirects followed, so each answer can be checked.
fn client() -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(30))
        .finish()
}

/// A dashboard login: the session cookie and the CSRF token its pages carry.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

/// An answer: status, headers, body text.
pub struct Answer {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn answer(
    mut res: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
) -> Answer {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.body().limit(8 * 1024 * 1024).await.expect("body");
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// GET `path` with the session (if any).
pub async fn page(app: &TestApp, path: &str, session: Option<&Session>) -> Answer {
    let mut req = client().get(format!("{}{path}", app.address));
    if let Some(s) = session {
        req = req.insert_header(("Cookie", s.cookie.clone()));
    }
    answer(req.send().await.expect("request")).await
}

/// POSTs a form to `path` (from the relay's own origin) with the session (if any).
pub async fn post_form(
    app: &TestApp,
    path: &str,
    session: Option<&Session>,
    fields: &[(&str, &str)],
) -> Answer {
    let mut req = client()
        .post(format!("{}{path}", app.address))
        .insert_header(("Origin", app.address.clone()));
    if let Some(s) = session {
        req = req.insert_header(("Cookie", s.cookie.clone()));
    }
    answer(req.send_form(&fields).await.expect("request")).await
}

/// POSTs a form of `session`'s with its CSRF token and `fields`.
pub async fn submit(
    app: &TestApp,
    session: &Session,
    path: &str,
    fields: &[(&str, &str)],
) -> Answer {
    let mut all = vec![("csrf", session.csrf.as_str())];
    all.extend_from_slice(fields);
    post_form(app, path, Some(session), &all).await
}

/// The `csrf` value of a page's first form.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a csrf field")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// Logs `name` in through the form.
pub async fn log_in(app: &TestApp, name: &str) -> Session {
    let res = post_form(
        app,
        "/dashboard/login",
        None,
        &[("username", name), ("password", ADMIN_PASSWORD)],
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.body);
    let cookie = res
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("beep_session="), "{cookie}");
    let overview = page(
        app,
        "/dashboard/",
        Some(&Session {
            cookie: cookie.clone(),
            csrf: String::new(),
        }),
    )
    .await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    Session {
        csrf: csrf_of(&overview.body),
        cookie,
    }
}

/// Posts the login form (from the relay's own origin).
async fn login_form(app: &TestApp, name: &str, password: &str) -> Answer {
    post_form(
        app,
        "/dashboard/login",
        None,
        &[("username", name), ("password", password)],
    )
    .await
}

/// Posts wrong passwords for `name` to `path` until the login budget is spent (each refusal
/// before it a 401); returns the 429.
async fn fail_logins_until_limited(app: &TestApp, path: &str, name: &str) -> Answer {
    for _ in 0..12 {
        let res = post_form(app, path, None, &[("username", name), ("password", "nope")]).await;
        if res.status == 429 {
            return res;
        }
        assert_eq!(res.status, 401, "{}", res.body);
    }
    panic!("{path}: twelve failed logins and no 429");
}

/// Every `src`/`href`/`action` value in a page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in [" src=\"", " href=\"", " action=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            found.push(rest.split('"').next().unwrap_or("").to_owned());
        }
    }
    found
}

/// Whether an attribute such as ` onclick=` appears.
fn has_inline_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(at, _)| {
        let name: String = html[at + 3..]
            .chars()
            .take_while(char::is_ascii_lowercase)
            .collect();
        !name.is_empty() && html[at + 3 + name.len()..].starts_with('=')
    })
}

/// Every visible form control has a label: a `<label for=…>` naming its id, an enclosing
/// `<label>`, or an `aria-label`.
fn assert_labelled(path: &str, html: &str) {
    for tag in ["<input", "<select", "<textarea"] {
        for (at, _) in html.match_indices(tag) {
            let end = at + html[at..].find('>').expect("a closed tag");
            let element = &html[at..=end];
            if element.contains("type=\"hidden\"") || element.contains("aria-label=") {
                continue;
            }
            let by_for = element
                .split("id=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .is_some_and(|id| html.contains(&format!("for=\"{id}\"")));
            let before = &html[..at];
            let enclosed = before
                .rfind("<label")
                .is_some_and(|label| !before[label..].contains("</label>"));
            assert!(
                by_for || enclosed,
                "{path}: a control without a label: {element}"
            );
        }
    }
}

/// What every dashboard answer must carry, and what no dashboard page may contain.
fn assert_locked_down(path: &str, res: &Answer) {
    assert_eq!(
        res.header("content-security-policy"),
        DASHBOARD_CSP,
        "{path}"
    );
    assert!(DASHBOARD_CSP.contains("frame-ancestors 'none'"));
    assert!(
        !DASHBOARD_CSP.contains("unsafe"),
        "no unsafe-inline, no unsafe-eval"
    );
    assert_eq!(res.header("x-content-type-options"), "nosniff", "{path}");
    assert_eq!(res.header("cache-control"), "no-store", "{path}");
    if res.header("content-type").starts_with("text/html") {
        for reference in references(&res.body) {
            assert!(
                reference.starts_with('/') && !reference.starts_with("//")
                    || reference.starts_with('#')
                    || reference.starts_with('?'),
                "{path} refers to another origin: {reference}"
            );
        }
        assert!(
            !res.body.contains("<script>"),
            "{path} has an inline script"
        );
        assert!(!res.body.contains(" style="), "{path} has an inline style");
        assert!(
            !has_inline_handler(&res.body),
            "{path} has an inline event handler"
        );
        assert_labelled(path, &res.body);
    }
}

#[actix_rt::test]
async fn every_dashboard_response_carries_the_strict_policy_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    create_admin(&app, "alice").await;
    let device = app.pair_device("Pixel <b>8</b>").await;
    // Before login: the redirect, the login page, an asset, a refusal.
    for path in [
        "/",
        "/dashboard",
        "/dashboard/",
        "/dashboard/login",
        "/dashboard/assets/app.css",
        "/dashboard/devices",
        "/dashboard/nope",
    ] {
        let res = page(&app, path, None).await;
        assert_locked_down(path, &res);
    }
    let root = page(&app, "/", None).await;
    assert_eq!((root.status, root.header("location")), (303, "/dashboard/"));
    let refused = page(&app, "/dashboard/devices", None).await;
    assert_eq!(
        (refused.status, refused.header("location")),
        (303, "/dashboard/login")
    );
    let session = log_in(&app, "alice").await;
    let device_page = format!("/dashboard/devices/{}", device.id);
    let revoke_page = format!("{device_page}/revoke");
    let paths = [
        "/dashboard/",
        "/dashboard/devices",
        device_page.as_str(),
        revoke_page.as_str(),
        "/dashboard/pairing",
        "/dashboard/live",
        "/dashboard/send",
        "/dashboard/health",
        "/dashboard/keys",
        "/dashboard/keys/rotate?what=signing",
        "/dashboard/certificates",
        "/dashboard/blocks",
        "/dashboard/tokens",
        "/dashboard/audit",
        "/dashboard/audit?action=admin.login",
        "/dashboard/assets/app.js",
        "/dashboard/assets/favicon.svg",
        "/dashboard/devices/dev_nope",
        "/dashboard/keys/rotate?what=nonsense",
    ];
    for path in paths {
        let res = page(&app, path, Some(&session)).await;
        assert_locked_down(path, &res);
        let expected = if path.contains("nope") {
            404
        } else if path.contains("nonsense") {
            400
        } else {
            200
        };
        assert_eq!(res.status, expected, "{path}: {}", res.body);
    }
    // Escaped by the template engine, never markup.
    let listed = page(&app, "/dashboard/devices", Some(&session)).await;
    assert!(
        listed.body.contains("Pixel &#60;b&#62;8&#60;/b&#62;"),
        "{}",
        listed.body
    );
    assert!(!listed.body.contains("<b>8</b>"));
    // Form posts too, refused or not.
    let forged = post_form(&app, "/dashboard/send", Some(&session), &[("title", "x")]).await;
    assert_locked_down("POST /dashboard/send", &forged);
    let sent = submit(
        &app,
        &session,
        "/dashboard/send",
        &[("title", "hi"), ("priority", "high"), ("targets", "all")],
    )
    .await;
    assert_locked_down("POST /dashboard/send", &sent);
    // The API keeps its own (configurable) policy.
    let (status, _) = app.get("/api/v1/devices", Some(&app.admin_token)).await;
    assert_eq!(status, 200);
    let api = page(&app, "/api/v1/openapi.json", None).await;
    assert_ne!(api.header("content-security-policy"), DASHBOARD_CSP);
}

#[actix_rt::test]
async fn login_refusals_read_as_messages_on_the_form() {
    let app = spawn_app().await;
    create_admin(&app, "alice").await;
    let wrong = login_form(&app, "alice", "nope").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("content-type").starts_with("text/html"));
    assert!(
        wrong.body.contains("the username or password is wrong"),
        "{}",
        wrong.body
    );
    assert!(
        wrong.body.contains("value=\"alice\""),
        "the name tried stays in the form"
    );
    // Another site's form is refused before the password is checked.
    let res = client()
        .post(format!("{}/dashboard/login", app.address))
        .insert_header(("Origin", "http://evil.example"))
        .send_form(&[("username", "alice"), ("password", ADMIN_PASSWORD)])
        .await
        .expect("request");
    let forged = answer(res).await;
    assert_eq!(forged.status, 403);
    assert!(forged.body.contains("another site"), "{}", forged.body);
    // Failures spend the address's login budget; then even the right password waits, and the
    // form says for how long.
    let limited = fail_logins_until_limited(&app, "/dashboard/login", "alice").await;
    assert!(
        limited.body.contains("Too many requests"),
        "{}",
        limited.body
    );
    assert!(limited.body.contains("Try again in"), "{}", limited.body);
    assert!(
        limited.body.contains("<form"),
        "the login form is shown again"
    );
    assert!(!limited.header("retry-after").is_empty());
    let right = login_form(&app, "alice", ADMIN_PASSWORD).await;
    assert_eq!(right.status, 429);
}

#[actix_rt::test]
async fn the_session_cap_and_logout_are_said_in_words() {
    let app = spawn_app().await;
    create_admin(&app, "bob").await;
    let cap = app.state.settings.sessions.max_per_admin;
    let first = log_in(&app, "bob").await;
    for _ in 1..cap {
        log_in(&app, "bob").await;
    }
    let over = login_form(&app, "bob", ADMIN_PASSWORD).await;
    assert_eq!(
        (over.status, over.header("location")),
        (303, "/dashboard/?done=session-cap")
    );
    let cookie = over
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let newest = Session {
        cookie,
        csrf: String::new(),
    };
    let told = page(&app, "/dashboard/?done=session-cap", Some(&newest)).await;
    assert!(
        told.body.contains("your oldest session was logged out"),
        "{}",
        told.body
    );
    // The oldest is the one that went.
    let gone = page(&app, "/dashboard/", Some(&first)).await;
    assert_eq!(
        (gone.status, gone.header("location")),
        (303, "/dashboard/login")
    );
    // Logout needs the form's token, then ends the session.
    let newest = Session {
        csrf: csrf_of(&told.body),
        cookie: newest.cookie,
    };
    let forged = post_form(&app, "/dashboard/logout", Some(&newest), &[]).await;
    assert_eq!(forged.status, 403);
    let out = submit(&app, &newest, "/dashboard/logout", &[]).await;
    assert_eq!(
        (out.status, out.header("location")),
        (303, "/dashboard/login?done=logged-out")
    );
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    let after = page(&app, "/dashboard/", Some(&newest)).await;
    assert_eq!(after.status, 303);
    let login = page(&app, "/dashboard/login?done=logged-out", None).await;
    assert!(login.body.contains("You are logged out."));
}

#[actix_rt::test]
async fn forms_need_the_sessions_token_and_this_origin_and_bearer_tokens_get_no_pages() {
    let app = spawn_app().await;
    create_admin(&app, "carol").await;
    let session = log_in(&app, "carol").await;
    let (_, tokens) = app.get("/api/v1/tokens", Some(&app.admin_token)).await;
    let before = tokens["items"].as_array().unwrap().len();
    let fields = [
        ("csrf", session.csrf.as_str()),
        ("name", "ci"),
        ("scope", "publish"),
    ];
    // No token, a wrong token, another origin: refused, nothing made.
    let missing = post_form(&app, "/dashboard/tokens", Some(&session), &fields[1..]).await;
    let wrong = post_form(
        &app,
        "/dashboard/tokens",
        Some(&session),
        &[("csrf", "x"), ("name", "ci"), ("scope", "publish")],
    )
    .await;
    let res = client()
        .post(format!("{}/dashboard/tokens", app.address))
        .insert_header(("Cookie", session.cookie.clone()))
        .insert_header(("Sec-Fetch-Site", "cross-site"))
        .send_form(&fields)
        .await
        .expect("request");
    let cross = answer(res).await;
    for refused in [&missing, &wrong, &cross] {
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.header("content-type").starts_with("text/html"));
    }
    assert!(wrong.body.contains("CSRF token"), "{}", wrong.body);
    let (_, tokens) = app.get("/api/v1/tokens", Some(&app.admin_token)).await;
    assert_eq!(
        tokens["items"].as_array().unwrap().len(),
        before,
        "nothing was made"
    );
    // The right form makes it, shows its secret once, and the secret works.
    let made = post_form(&app, "/dashboard/tokens", Some(&session), &fields).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let at = made.body.find("id=\"new-token\">").unwrap() + 15;
    let secret = made.body[at..].split('<').next().unwrap().to_owned();
    assert!(secret.starts_with("bmp_"), "{secret}");
    let (status, _) = app
        .post(
            "/api/v1/notifications",
            Some(&secret),
            &json!({"title": "from the new token"}),
        )
        .await;
    assert_eq!(status, 202);
    let listed = page(&app, "/dashboard/tokens", Some(&session)).await;
    assert!(!listed.body.contains(&secret), "the secret is shown once");
    // An admin API token is for the API: the dashboard wants a session.
    let res = client()
        .get(format!("{}/dashboard/", app.address))
        .insert_header(("Authorization", format!("Bearer {}", app.admin_token)))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 303);
    // And a session cannot skip the CSRF header on the API by posting where forms go.
    let res = client()
        .post(format!("{}/api/v1/tokens", app.address))
        .insert_header(("Cookie", session.cookie.clone()))
        .send_json(&json!({"name": "x", "scope": "admin"}))
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 403);
}

#[actix_rt::test]
async fn devices_keys_blocks_and_the_audit_log_work_without_javascript() {
    let app = spawn_app().await;
    create_admin(&app, "dave").await;
    let session = log_in(&app, "dave").await;
    let device = app.pair_device("Laptop").await;
    let mut socket = app.connect_device(&device).await;
    let path = format!("/dashboard/devices/{}", device.id);
    // Settings: quiet hours in a time zone, a minimum priority, a new name.
    let saved = submit(
        &app,
        &session,
        &path,
        &[
            ("name", "Work laptop"),
            ("enabled", "on"),
            ("min_priority", "high"),
            ("quiet", "on"),
            ("quiet_start", "22:30"),
            ("quiet_end", "06:45"),
            ("timezone", "Europe/Berlin"),
            ("groups", "home, alerts  ops"),
        ],
    )
    .await;
    assert_eq!(
        (saved.status, saved.header("location")),
        (303, format!("{path}?done=saved").as_str())
    );
    let (_, view) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(view["name"], "Work laptop");
    assert_eq!(view["settings"]["minPriority"], "high");
    assert_eq!(
        view["settings"]["quietHours"],
        json!({"start": "22:30", "end": "06:45", "timezone": "Europe/Berlin"})
    );
    let shown = page(&app, &format!("{path}?done=saved"), Some(&session)).await;
    assert!(
        shown
            .body
            .contains("<option value=\"Europe/Berlin\" selected>"),
        "the picker shows the zone"
    );
    assert!(shown.body.contains("Saved."));
    assert_eq!(view["groups"], json!(["alerts", "home", "ops"]));
    assert!(
        shown.body.contains("value=\"alerts home ops\""),
        "the form shows the groups"
    );
    // A bad value is the API's own error, on the page, and changes nothing.
    let bad = submit(
        &app,
        &session,
        &path,
        &[
            ("name", "Work laptop"),
            ("min_priority", "high"),
            ("quiet", "on"),
            ("quiet_start", "22:30"),
            ("quiet_end", "22:30"),
            ("timezone", "Mars/Olympus"),
        ],
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("settings.quietHours"), "{}", bad.body);
    let (_, view) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(view["settings"]["quietHours"]["timezone"], "Europe/Berlin");
    // Revoke: a confirmation, then the socket closes at once.
    let confirm = page(&app, &format!("{path}/revoke"), Some(&session)).await;
    assert!(confirm.body.contains("Revoke the device"));
    let revoked = submit(&app, &session, &format!("{path}/revoke"), &[]).await;
    assert_eq!(
        (revoked.status, revoked.header("location")),
        (303, "/dashboard/devices?done=revoked")
    );
    assert_eq!(socket.expect_close().await, Some(4003));
    assert_eq!(page(&app, &path, Some(&session)).await.status, 404);
    // Key rotations, both kinds.
    let (_, before) = app.get("/api/v1/keys", Some(&app.admin_token)).await;
    let rotated = submit(
        &app,
        &session,
        "/dashboard/keys/rotate",
        &[("what", "signing")],
    )
    .await;
    assert_eq!(
        rotated.header("location"),
        "/dashboard/keys?done=signing-rotated"
    );
    let (_, after) = app.get("/api/v1/keys", Some(&app.admin_token)).await;
    assert_eq!(
        after["items"].as_array().unwrap().len(),
        before["items"].as_array().unwrap().len() + 1
    );
    let data = submit(
        &app,
        &session,
        "/dashboard/keys/rotate",
        &[("what", "data")],
    )
    .await;
    assert_eq!(data.header("location"), "/dashboard/keys?done=data-rotated");
    // A second rotation within a minute is the API's 429, as a message.
    let again = submit(
        &app,
        &session,
        "/dashboard/keys/rotate",
        &[("what", "data")],
    )
    .await;
    assert_eq!(again.status, 429, "{}", again.body);
    assert!(again.body.contains("class=\"flash error\""));
    // Unblocking an address that is not blocked says so.
    let unblock = submit(
        &app,
        &session,
        "/dashboard/blocks/unblock",
        &[("ip", "192.0.2.7")],
    )
    .await;
    assert_eq!(unblock.status, 404);
    assert!(
        unblock.body.contains("192.0.2.7 is not blocked"),
        "{}",
        unblock.body
    );
    // Certificates with TLS off: said, and renewing is the API's 409.
    let renew = submit(&app, &session, "/dashboard/certificates/renew", &[]).await;
    assert_eq!(renew.status, 409);
    assert!(renew.body.contains("TLS is off"));
    // The audit log shows what the dashboard did, filtered, and verifies.
    let audit = page(
        &app,
        "/dashboard/audit?action=device.deleted",
        Some(&session),
    )
    .await;
    assert!(
        audit.body.contains("data-action=\"device.deleted\""),
        "{}",
        audit.body
    );
    assert!(!audit.body.contains("data-action=\"admin.login\""));
    assert!(audit.body.contains("Not verified since the relay started"));
    let verified = submit(&app, &session, "/dashboard/audit/verify", &[]).await;
    assert_eq!(
        verified.header("location"),
        "/dashboard/audit?done=verified"
    );
    let audit = page(&app, "/dashboard/audit?done=verified", Some(&session)).await;
    assert!(
        audit.body.contains("badge healthy\">intact"),
        "{}",
        audit.body
    );
}

#[actix_rt::test]
async fn the_pairing_page_shows_a_working_code_with_its_qr_code() {
    let app = spawn_app().await;
    create_admin(&app, "erin").await;
    let session = log_in(&app, "erin").await;
    let minted = submit(&app, &session, "/dashboard/pairing", &[("ttl", "300")]).await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    let at = minted.body.find("id=\"pairing-code\">").unwrap() + 18;
    let code = minted.body[at..].split('<').next().unwrap().to_owned();
    assert!(minted.body.contains("<path d=\"M4 4h1v1h-1z"), "a QR code");
    let expires = beepmyphone_actors::Clock::now_ms(&app.clock) + 300_000;
    assert!(
        minted
            .body
            .contains(&format!("data-countdown=\"{expires}\"")),
        "{}",
        minted.body
    );
    assert!(minted.body.contains(&format!("--server {}", app.address)));
    let (status, _) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": "Phone", "platform": "android"}),
        )
        .await;
    assert_eq!(status, 201);
    let bad_ttl = submit(&app, &session, "/dashboard/pairing", &[("ttl", "5")]).await;
    assert_eq!(bad_ttl.status, 400);
    assert!(
        bad_ttl
            .body
            .contains("ttlSeconds: must be between 60 and 3600"),
        "{}",
        bad_ttl.body
    );
}

/// Whether the stream ends (within 10 s), reading what comes before its end.
async fn stream_ends(
    body: &mut (impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>
              + Unpin),
) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            chunk.expect("chunk");
        }
    })
    .await
}

/// Reads SSE events from `body` until one named `name` arrives; returns its data.
async fn next_event(
    body: &mut (impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>
              + Unpin),
    buffer: &mut String,
    name: &str,
) -> Value {
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                }
            }
            if event.as_deref() == Some(name) {
                return serde_json::from_str(&data.expect("data")).expect("JSON data");
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap_or_else(|_| panic!("no {name} event within 10 s"))
            .expect("the stream is open")
            .expect("a chunk");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[actix_rt::test]
async fn the_event_stream_carries_publishes_deliveries_acks_and_presence_to_admins_only() {
    let app = spawn_app().await;
    let device = app.pair_device("Phone").await;
    let url = format!("{}/api/v1/events", app.address);
    let anonymous = client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let as_device = client()
        .get(&url)
        .bearer_auth(&device.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(as_device.status().as_u16(), 403);
    let stream_client = awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(3600))
        .finish();
    let mut res = stream_client
        .get(&url)
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut buffer = String::new();
    let mut socket = app.connect_device(&device).await;
    let online = next_event(&mut res, &mut buffer, "online").await;
    assert_eq!(online["device"], device.id.as_str());
    let published = app
        .publish(json!({"title": "Backup <done>", "priority": "high"}))
        .await;
    let id = published["id"].as_str().unwrap().to_owned();
    let event = next_event(&mut res, &mut buffer, "published").await;
    assert_eq!(
        (
            event["id"].as_str(),
            event["title"].as_str(),
            event["priority"].as_str(),
            event["devices"].as_u64()
        ),
        (
            Some(id.as_str()),
            Some("Backup <done>"),
            Some("high"),
            Some(1)
        )
    );
    let delivered = next_event(&mut res, &mut buffer, "delivered").await;
    assert_eq!(
        (delivered["id"].as_str(), delivered["device"].as_str()),
        (Some(id.as_str()), Some(device.id.as_str()))
    );
    let items = socket.receive(1).await;
    socket.ack_all(&items).await;
    let acked = next_event(&mut res, &mut buffer, "acked").await;
    assert_eq!(acked["id"], id.as_str());
    socket.close().await;
    let offline = next_event(&mut res, &mut buffer, "offline").await;
    assert_eq!(offline["device"], device.id.as_str());
    let paired = app.pair_device("Tablet").await;
    let event = next_event(&mut res, &mut buffer, "paired").await;
    assert_eq!(
        (event["device"].as_str(), event["name"].as_str()),
        (Some(paired.id.as_str()), Some("Tablet"))
    );
    assert_eq!(
        app.delete(
            &format!("/api/v1/devices/{}", paired.id),
            Some(&app.admin_token)
        )
        .await,
        204
    );
    let event = next_event(&mut res, &mut buffer, "revoked").await;
    assert_eq!(event["device"], paired.id.as_str());
    // A caller holds at most four streams.
    let mut open = Vec::new();
    for _ in 0..3 {
        let res = stream_client
            .get(&url)
            .bearer_auth(&app.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        open.push(res);
    }
    let fifth = client()
        .get(&url)
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(fifth.status().as_u16(), 429);
    drop(open);
}

#[actix_rt::test]
async fn a_sessions_stream_ends_with_the_session() {
    let app = spawn_app().await;
    create_admin(&app, "fay").await;
    let session = log_in(&app, "fay").await;
    let stream_client = awc::Client::builder()
        .timeout(Duration::from_secs(3600))
        .finish();
    let mut res = stream_client
        .get(format!("{}/api/v1/events", app.address))
        .insert_header(("Cookie", session.cookie.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), res.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"retry: 3000\n\n");
    let out = submit(&app, &session, "/dashboard/logout", &[]).await;
    assert_eq!(out.status, 303);
    // The next keep-alive (every 15 s of the relay's clock) finds the session gone.
    app.clock.advance(Duration::from_secs(15));
    let end = stream_ends(&mut res).await;
    assert!(end.is_ok(), "the stream ended after logout");
}

#[actix_rt::test]
async fn the_metrics_history_and_the_audit_verification_are_in_the_api() {
    let app = spawn_app_with(|_| {}).await;
    let (status, body) = app
        .get("/api/v1/metrics/history", Some(&app.admin_token))
        .await;
    assert_eq!(
        (status, body["samples"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    app.publish(json!({"title": "one"})).await;
    app.publish(json!({"title": "two"})).await;
    app.clock.advance(Duration::from_secs(30));
    let samples = crate::helpers::eventually("a history sample", || async {
        let (_, body) = app
            .get("/api/v1/metrics/history", Some(&app.admin_token))
            .await;
        body["samples"]
            .as_array()
            .filter(|s| !s.is_empty())
            .cloned()
    })
    .await;
    let rate = samples[0]["publishedPerSecond"].as_f64().unwrap();
    assert!((rate - 2.0 / 30.0).abs() < 1e-9, "{samples:?}");
    let device = app.pair_device("Phone").await;
    let (status, _) = app
        .get("/api/v1/metrics/history", Some(&device.access_token))
        .await;
    assert_eq!(status, 403);
    let (status, _) = app
        .get("/api/v1/audit/verify", Some(&app.admin_token))
        .await;
    assert_eq!(status, 404);
    let (status, body) = app
        .post("/api/v1/audit/verify", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["intact"], true);
    assert!(body["report"]["records"].as_u64().unwrap() > 0);
    let (status, last) = app
        .get("/api/v1/audit/verify", Some(&app.admin_token))
        .await;
    assert_eq!((status, &last), (200, &body));
    let (status, _) = app
        .post(
            "/api/v1/audit/verify",
            Some(&device.access_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 403);
}

#[actix_rt::test]
async fn percent_encoded_paths_get_the_same_rules() {
    let app = spawn_app().await;
    create_admin(&app, "gus").await;
    let session = log_in(&app, "gus").await;
    // The router decodes `%64` to `d`: the page is the dashboard's, with its policy and no-store.
    let encoded = page(&app, "/%64ashboard/tokens", Some(&session)).await;
    assert_eq!(encoded.status, 200);
    assert_locked_down("/%64ashboard/tokens", &encoded);
    // Failed logins at an encoded path spend the login budget all the same.
    let limited = fail_logins_until_limited(&app, "/dashboard/%6cogin", "gus").await;
    assert!(limited.body.contains("Try again in"), "{}", limited.body);
    // A path that only looks like the dashboard's reaches no API handler without the header.
    let (_, tokens) = app.get("/api/v1/tokens", Some(&app.admin_token)).await;
    let before = tokens["items"].as_array().unwrap().len();
    for path in [
        "/dashboard/%2e%2e/api/v1/tokens",
        "/dashboard/../api/v1/tokens",
        "//dashboard/x/../../api/v1/tokens",
    ] {
        let res = client()
            .post(format!("{}{path}", app.address))
            .insert_header(("Cookie", session.cookie.clone()))
            .send_json(&json!({"name": "x", "scope": "admin"}))
            .await
            .expect("request");
        assert!(
            matches!(res.status().as_u16(), 403 | 404),
            "{path}: {}",
            res.status()
        );
    }
    let (_, tokens) = app.get("/api/v1/tokens", Some(&app.admin_token)).await;
    assert_eq!(
        tokens["items"].as_array().unwrap().len(),
        before,
        "nothing was made"
    );
    // A revoke form can only name a token.
    let res = page(
        &app,
        "/dashboard/tokens/..%2Fdevices%2Fdev_X/revoke",
        Some(&session),
    )
    .await;
    assert_eq!(res.status, 404);
}

#[actix_rt::test]
async fn a_tokens_stream_ends_with_the_token() {
    let app = spawn_app().await;
    let (status, made) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "watcher", "scope": "admin"}),
        )
        .await;
    assert_eq!(status, 201);
    let token = made["token"].as_str().unwrap();
    let stream_client = awc::Client::builder()
        .timeout(Duration::from_secs(3600))
        .finish();
    let mut res = stream_client
        .get(format!("{}/api/v1/events", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let id = made["id"].as_str().unwrap();
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{id}"), Some(&app.admin_token))
            .await,
        204
    );
    app.clock.advance(Duration::from_secs(15));
    let end = stream_ends(&mut res).await;
    assert!(end.is_ok(), "the stream ended after the token was deleted");
}

#[actix_rt::test]
async fn what_a_page_does_by_itself_does_not_keep_a_session_alive() {
    let app = spawn_app().await;
    create_admin(&app, "hal").await;
    let (busy, idle) = (log_in(&app, "hal").await, log_in(&app, "hal").await);
    let idle_ms = app.state.sessions.idle_ms();
    let step =
        Duration::from_millis(u64::try_from(app.state.sessions.touch_every_ms()).unwrap() + 1_000);
    let background = |session: &Session| {
        client()
            .get(format!("{}/dashboard/", app.address))
            .insert_header(("Cookie", session.cookie.clone()))
            .insert_header(("X-Beep-Background", "1"))
    };
    let mut elapsed = 0;
    while elapsed <= idle_ms + 60_000 {
        app.clock.advance(step);
        elapsed += i64::try_from(step.as_millis()).unwrap();
        // A person's request keeps its session alive; the page's own refreshes do not.
        assert_eq!(page(&app, "/dashboard/", Some(&busy)).await.status, 200);
        let refreshed = background(&idle).send().await.expect("request");
        let expected = if elapsed < idle_ms { 200 } else { 303 };
        assert_eq!(refreshed.status().as_u16(), expected, "after {elapsed} ms");
    }
}

#[test]
fn the_page_checks_catch_what_they_look_for() {
    assert!(has_inline_handler("<a onclick=\"x()\">"));
    assert!(!has_inline_handler("<p>Quiet hours on only</p>"));
    assert_labelled("ok", "<label for=\"a\">A</label><input id=\"a\"><label>B <input name=\"b\"></label><input type=\"hidden\" name=\"c\">");
    let unlabelled =
        std::panic::catch_unwind(|| assert_labelled("bad", "<label>A</label><input id=\"z\">"));
    assert!(unlabelled.is_err());
    assert_eq!(
        references("<a href=\"/x\"> <img src=\"https://cdn\"> <p data-action=\"y\">"),
        ["https://cdn", "/x"]
    );
}
