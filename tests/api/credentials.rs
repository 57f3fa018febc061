//! Tests: `beepmyphone token list | revoke` and `device list | revoke` on the data directory of a
//! running relay.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{beep, spawn_app, TestApp};

/// Runs a local command against the app's data directory.
async fn local(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let data_dir = app.data_dir.path().to_str().unwrap().to_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", &data_dir]);
    let cwd = tempfile::tempdir().unwrap();
    beep(cwd.path(), &all).await
}

#[actix_web::test]
async fn token_list_shows_every_token_but_no_secret_and_revoke_ends_one_within_a_minute() {
    let app = spawn_app().await;
    let (status, created) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "grafana", "scope": "publish"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (id, secret) = (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    );
    let publish = |token: String| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/notifications",
                Some(&token),
                &json!({"title": "t"}),
            )
            .await
            .0
        }
    };
    assert_eq!(publish(secret.clone()).await, 202);

    let (code, out, err) = local(&app, &["token", "list"]).await;
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} listed: {out}"));
    assert!(line.contains("\tpublish\tgrafana\t"), "{line}");
    assert!(!line.ends_with("never"), "it was used: {line}");
    assert!(out.contains("\tadmin\tinitial admin\t"), "{out}");
    assert!(
        !out.contains(&secret) && !out.contains(&app.admin_token),
        "no secret: {out}"
    );

    let (code, out, err) = local(&app, &["token", "revoke", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("within a minute"), "{out}");
    // The relay had the token cached; it asks the store again a minute after its last check.
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(publish(secret.clone()).await, 401);
    assert_eq!(publish(secret).await, 401, "and stays refused");

    let (code, _, err) = local(&app, &["token", "revoke", &id]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no API token"), "{err}");
    let (_, audit) = app
        .get(
            &format!("/api/v1/audit?action=token.deleted&subject={id}"),
            Some(&app.admin_token),
        )
        .await;
    let outcomes: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 4, "{audit}");
    assert!(
        outcomes.contains(&"ok") && outcomes.contains(&"failed"),
        "{outcomes:?}"
    );
}

#[actix_web::test]
async fn device_list_opens_names_and_revoke_refuses_the_devices_tokens_without_breaking_publishing()
{
    let app = spawn_app().await;
    let phone = app.pair_device("Pixel of Ada").await;
    let other = app.pair_device("Tablet").await;
    let (status, _) = app
        .patch(
            &format!("/api/v1/devices/{}", phone.id),
            Some(&app.admin_token),
            &json!({"groups": ["alerts", "home"]}),
        )
        .await;
    assert_eq!(status, 200);

    let (code, out, err) = local(&app, &["device", "list"]).await;
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&phone.id))
        .expect("listed");
    assert!(
        line.contains("\tPixel of Ada\tandroid\tyes\talerts,home\t"),
        "{line}"
    );
    assert!(out.contains(&other.id));

    let (code, out, err) = local(&app, &["device", "revoke", &phone.id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    // Its access token and its refresh token are refused at once.
    let (status, _) = app
        .get(
            &format!("/api/v1/devices/{}", phone.id),
            Some(&phone.access_token),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = app
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refreshToken": phone.refresh_token}),
        )
        .await;
    assert_eq!(status, 401);
    // Publishing goes on (the running relay still knows the device; nothing fails).
    let mut ws = app.connect_device(&other).await;
    let published = app.publish(json!({"title": "after the revocation"})).await;
    assert_eq!(ws.receive(1).await[0]["id"], published["id"]);
    let (_, out, _) = local(&app, &["device", "list"]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with(&phone.id))
        .expect("listed");
    assert!(line.contains("\tno\t"), "disabled: {line}");

    let (code, _, err) = local(
        &app,
        &["device", "revoke", "dev_01J00000000000000000000000"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no device"), "{err}");
}
