//! The dashboard end to end in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver by [`crate::browser`]): log in, mint a pairing code,
//! pair a device from the test, see it online, send a notification from the page and watch it
//! arrive and be acked in the live stream, change quiet hours, revoke the device and see its
//! socket closed, rotate a key, log out. Every page is checked for Content-Security-Policy
//! violations and for anything loaded from another origin.
//!
//! Screenshots of the main pages at desktop and phone width are taken on every run; they are
//! written to `BEEP_SCREENSHOT_DIR` when it is set (`scripts/screenshots` sets it to `docs/img`),
//! else to a temporary directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::helpers::{create_admin, spawn_app_at, TestApp, ADMIN_PASSWORD};

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// Where screenshots go.
fn screenshot_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("BEEP_SCREENSHOT_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let dir = if dir.is_absolute() {
                dir
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
            };
            std::fs::create_dir_all(&dir).expect("the screenshot directory");
            (dir, None)
        }
        None => {
            let temp = tempfile::tempdir().expect("a temp dir");
            (temp.path().to_path_buf(), Some(temp))
        }
    }
}

/// Checks the page in view: nothing refused by the policy, nothing loaded from elsewhere, no
/// script errors.
async fn assert_clean(browser: &Browser, app: &TestApp, what: &str) {
    let violations = browser.csp_violations().await;
    assert!(
        violations.is_empty(),
        "{what}: CSP violations {violations:?}"
    );
    for url in browser.loaded_resources().await {
        assert!(
            url.starts_with(&app.address),
            "{what}: loaded {url} from another origin"
        );
    }
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "{what}: console errors {errors:?}");
}

/// A screenshot of the page in view at desktop width (full page) and at phone width.
async fn shoot(browser: &Browser, dir: &Path, name: &str) {
    let path = dir.join(format!("dashboard-{name}.png"));
    browser.screenshot_full_page(&path).await;
    browser.set_window_size(PHONE.0, PHONE.1).await;
    let phone = dir.join(format!("dashboard-{name}-phone.png"));
    browser.screenshot(&phone).await;
    browser.set_window_size(DESKTOP.0, DESKTOP.1).await;
    for file in [path, phone] {
        let bytes = std::fs::read(&file).expect("the screenshot was written");
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", file.display());
    }
}

/// The sum of the red, green and blue of the page's background (0 black, 765 white).
async fn background(browser: &Browser) -> u32 {
    let css = browser
        .execute(
            "return getComputedStyle(document.body).backgroundColor",
            vec![],
        )
        .await;
    let css = css.as_str().expect("a colour");
    css.trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .take(3)
        .map(|c| c.trim().parse::<u32>().expect("a colour component"))
        .sum()
}

/// Opens `path` and checks it.
async fn visit(browser: &Browser, app: &TestApp, path: &str) {
    browser.goto(&format!("{}{path}", app.address)).await;
    browser.find("main").await;
    assert_clean(browser, app, path).await;
}

#[actix_rt::test]
async fn an_operator_runs_the_relay_from_the_dashboard() {
    // The relay's clock starts six minutes back and is moved up to now by the history below
    // (device tokens are checked against real time).
    const ROUNDS: u64 = 12;
    let start = chrono::Utc::now().timestamp_millis() - ROUNDS as i64 * 30_000;
    let app = spawn_app_at(start, |_| {}).await;
    create_admin(&app, "admin").await;
    // Some history for the overview's charts: publishes, 30 s apart on the relay's clock.
    for round in 0..ROUNDS {
        for n in 0..(round % 4 + 1) {
            app.publish(json!({"title": format!("load {round}.{n}")}))
                .await;
        }
        app.clock.advance(Duration::from_secs(30));
    }
    let (dir, _temp) = screenshot_dir();
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.record_csp_violations().await;

    // Log in: the dashboard sends a stranger to the login page.
    browser.goto(&format!("{}/", app.address)).await;
    browser
        .wait_for_path("the login page", |p| p.starts_with("/dashboard/login"))
        .await;
    assert_clean(&browser, &app, "login").await;
    shoot(&browser, &dir, "login").await;
    browser.find("#username").await.type_text("admin").await;
    browser
        .find("#password")
        .await
        .type_text("not the password")
        .await;
    browser.find("button[type=submit]").await.click().await;
    browser
        .wait_for_text(".flash.error", "the username or password is wrong")
        .await;
    // The refused login is a 401, which the browser reports; nothing else.
    let refused = browser.console_errors().await;
    assert!(
        refused.iter().all(|e| e.contains("status of 401")),
        "{refused:?}"
    );
    browser
        .find("#password")
        .await
        .type_text(ADMIN_PASSWORD)
        .await;
    browser.find("button[type=submit]").await.click().await;
    browser
        .wait_for_path("the overview", |p| p == "/dashboard/")
        .await;
    browser.wait_for_text("h1", "Overview").await;
    assert_clean(&browser, &app, "overview").await;
    assert!(browser.exists("figure.chart polyline.series.s1").await);
    shoot(&browser, &dir, "overview").await;
    // In dark mode too: the page's background turns dark.
    let light = background(&browser).await;
    browser
        .cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        )
        .await;
    let dark = background(&browser).await;
    assert!(
        light > 600 && dark < 150,
        "light {light}, dark {dark} (sums of RGB)"
    );
    browser
        .screenshot(&dir.join("dashboard-overview-dark.png"))
        .await;
    browser
        .cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "light"}]}),
        )
        .await;

    // Pair: mint a code, pair a device over HTTP with it, see it appear.
    visit(&browser, &app, "/dashboard/pairing").await;
    browser.find("#mint").await.click().await;
    let code = browser.find("#pairing-code").await.text().await;
    assert!(browser.exists(".qr svg path").await, "a QR code");
    // The page watches the live stream for the device; pair once it does.
    crate::helpers::eventually("the pairing page watches the stream", || async {
        app.state.graph.feed.watched().then_some(())
    })
    .await;
    let countdown = browser.find("[data-countdown]").await.text().await;
    assert!(countdown.contains(':'), "the countdown runs: {countdown}");
    assert_clean(&browser, &app, "pairing code").await;
    let (status, tokens) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": code, "name": "Pixel 8", "platform": "android"}),
        )
        .await;
    assert_eq!(status, 201, "{tokens}");
    let watch = browser
        .wait_for_text("[data-pairing-watch]", "Paired: Pixel 8")
        .await;
    let device_id = watch
        .attribute("data-paired-device")
        .await
        .expect("the paired device's id");
    shoot(&browser, &dir, "pairing").await;
    let device = crate::helpers::Device {
        id: device_id.clone(),
        access_token: tokens["accessToken"].as_str().unwrap().to_owned(),
        refresh_token: tokens["refreshToken"].as_str().unwrap().to_owned(),
    };
    let mut socket = app.connect_device(&device).await;

    // Listed online.
    visit(&browser, &app, "/dashboard/devices").await;
    let badge = format!("[data-device-status=\"{device_id}\"]");
    browser.wait_for_text(&badge, "online").await;
    shoot(&browser, &dir, "devices").await;

    // The live stream in one tab, the send form in another.
    visit(&browser, &app, "/dashboard/live").await;
    browser.wait_for_text("[data-live-status]", "Live").await;
    let live_tab = browser.window_handle().await;
    let send_tab = browser.new_tab().await;
    browser.switch_to(&send_tab).await;
    visit(&browser, &app, "/dashboard/send").await;
    let title = browser.find("#title").await;
    title.clear().await;
    title.type_text("Dinner is ready").await;
    browser
        .find("#body")
        .await
        .type_text("Come downstairs")
        .await;
    browser.find("#priority").await.select("high").await;
    browser.find("#to-some").await.click().await;
    browser
        .find(&format!("#to-{device_id}"))
        .await
        .click()
        .await;
    browser
        .find("#send button[type=submit]")
        .await
        .click()
        .await;
    let sent = browser.find("#sent-id").await.text().await;
    browser.wait_for_text(".flash.ok", "for 1 device").await;
    assert_clean(&browser, &app, "send").await;
    shoot(&browser, &dir, "send").await;
    // The device gets it and acks it; the live tab shows both.
    let items = socket.receive(1).await;
    assert_eq!(
        (items[0]["id"].as_str(), items[0]["title"].as_str()),
        (Some(sent.as_str()), Some("Dinner is ready"))
    );
    socket.ack_all(&items).await;
    browser.switch_to(&live_tab).await;
    browser
        .wait_for_text(
            &format!("tr[data-event=\"published\"][data-id=\"{sent}\"]"),
            "Dinner is ready",
        )
        .await;
    browser
        .find(&format!("tr[data-event=\"delivered\"][data-id=\"{sent}\"]"))
        .await;
    browser
        .find(&format!(
            "tr[data-event=\"acked\"][data-id=\"{sent}\"][data-device=\"{device_id}\"]"
        ))
        .await;
    assert_clean(&browser, &app, "live").await;
    shoot(&browser, &dir, "live").await;

    // Quiet hours, with the time-zone picker.
    visit(&browser, &app, &format!("/dashboard/devices/{device_id}")).await;
    browser.wait_for_text("#settings", "Quiet hours").await;
    browser.find("#quiet").await.click().await;
    browser
        .execute(
            "document.getElementById('quiet_start').value = '21:15'; document.getElementById('quiet_end').value = '06:30';",
            vec![],
        )
        .await;
    browser
        .find("#timezone")
        .await
        .select("America/New_York")
        .await;
    browser
        .find("#settings button[type=submit]")
        .await
        .click()
        .await;
    browser.wait_for_text(".flash.ok", "Saved.").await;
    let (_, view) = app
        .get(
            &format!("/api/v1/devices/{device_id}"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(
        view["settings"]["quietHours"],
        json!({"start": "21:15", "end": "06:30", "timezone": "America/New_York"})
    );
    assert_clean(&browser, &app, "device").await;
    shoot(&browser, &dir, "device").await;

    // Revoke, confirmed; the socket closes at once.
    browser
        .find("a.button.danger[href$=\"/revoke\"]")
        .await
        .click()
        .await;
    browser.wait_for_text("h1", "Revoke Pixel 8").await;
    browser.find("button.danger").await.click().await;
    browser
        .wait_for_text(".flash.ok", "The device is revoked")
        .await;
    assert_eq!(socket.expect_close().await, Some(4003));
    assert!(
        !browser.exists(&badge).await,
        "the device is no longer listed"
    );

    // Rotate the signing key, confirmed.
    let (_, before) = app.get("/api/v1/keys", Some(&app.admin_token)).await;
    visit(&browser, &app, "/dashboard/keys").await;
    shoot(&browser, &dir, "keys").await;
    browser.find("#rotate-signing").await.click().await;
    browser.wait_for_text("h1", "Rotate the signing key").await;
    browser.find("button.danger").await.click().await;
    browser
        .wait_for_text(".flash.ok", "A new signing key is in use")
        .await;
    let (_, after) = app.get("/api/v1/keys", Some(&app.admin_token)).await;
    assert_eq!(
        after["items"].as_array().unwrap().len(),
        before["items"].as_array().unwrap().len() + 1
    );
    let kid = after["items"][0]["kid"].as_str().unwrap().to_owned();
    browser.find(&format!("tr[data-kid=\"{kid}\"]")).await;

    // The other pages, each checked and pictured.
    for (path, name) in [
        ("/dashboard/health", "health"),
        ("/dashboard/certificates", "certificates"),
        ("/dashboard/blocks", "blocks"),
        ("/dashboard/tokens", "tokens"),
        ("/dashboard/audit", "audit"),
    ] {
        visit(&browser, &app, path).await;
        shoot(&browser, &dir, name).await;
    }
    browser
        .find("#audit tr[data-action=\"signing_key.rotated\"]")
        .await;

    // Log out: back at the login page, and the pages are closed again.
    browser.find("form.logout button").await.click().await;
    browser
        .wait_for_text(".flash.ok", "You are logged out.")
        .await;
    browser
        .goto(&format!("{}/dashboard/devices", app.address))
        .await;
    browser
        .wait_for_path("the login page", |p| p.starts_with("/dashboard/login"))
        .await;
    browser.quit().await;
}
