//! Tests: the ntfy and Gotify publish endpoints, one per example of their documentation
//! (docs.ntfy.sh/publish, gotify.net/docs/pushmsg), with the token where those examples put it
//! unless it is the URL, which is refused.

use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Device, TestApp, WsClient};

/// A publish token (what a tool written for ntfy or Gotify is given).
async fn publish_token(app: &TestApp) -> String {
    let (status, body) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "home automation", "scope": "publish"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A device in `group`, connected.
async fn member(app: &TestApp, group: &str) -> (Device, WsClient) {
    let device = app.pair_device(group).await;
    let (status, body) = app
        .patch(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
            &json!({ "groups": [group] }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let ws = app.connect_device(&device).await;
    (device, ws)
}

/// Sends `req` with `body`; the status and JSON answer.
async fn send<B: actix_web::body::MessageBody + 'static>(
    req: awc::ClientRequest,
    body: B,
) -> (u16, Value) {
    let mut res = req.send_body(body).await.expect("request");
    let status = res.status().as_u16();
    let bytes = res.body().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn post(app: &TestApp, path: &str) -> awc::ClientRequest {
    app.client.post(format!("{}{path}", app.address))
}

fn bearer(req: awc::ClientRequest, token: &str) -> awc::ClientRequest {
    req.insert_header(("Authorization", format!("Bearer {token}")))
}

fn basic(req: awc::ClientRequest, user: &str, password: &str) -> awc::ClientRequest {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    req.insert_header(("Authorization", format!("Basic {encoded}")))
}

/// What `curl -d` sends.
fn form(req: awc::ClientRequest) -> awc::ClientRequest {
    req.insert_header(("Content-Type", "application/x-www-form-urlencoded"))
}

// ---------------------------------------------------------------------------------------------
// ntfy
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn ntfy_a_message_as_the_body_reaches_the_topics_devices_with_ntfys_answer() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let (_, mut ws) = member(&app, "mytopic").await;
    let outsider = app.pair_device("outsider").await;
    let mut outside = app.connect_device(&outsider).await;

    // curl -d "Backup successful 😀" ntfy.sh/mytopic   (with the token as Bearer)
    let (status, answer) = send(
        bearer(form(post(&app, "/compat/ntfy/mytopic")), &token),
        "Backup successful 😀",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["event"], "message");
    assert_eq!(answer["topic"], "mytopic");
    assert_eq!(answer["message"], "Backup successful 😀");
    assert!(answer["time"].as_i64().unwrap() > 1_700_000_000, "{answer}");
    assert!(answer["expires"].as_i64().unwrap() > answer["time"].as_i64().unwrap());
    assert!(
        answer.get("priority").is_none(),
        "the default is left out, as ntfy does"
    );
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], answer["id"]);
    assert_eq!(
        items[0]["title"], "mytopic",
        "no title: the topic, as ntfy's apps show"
    );
    assert_eq!(items[0]["body"], "Backup successful 😀");
    assert_eq!(items[0]["app"], "ntfy");
    assert_eq!(items[0]["priority"], "normal");
    // Only the topic's devices: the outsider's next message is the one published to everyone.
    let everyone = app.publish(json!({"title": "to all"})).await;
    assert_eq!(outside.receive(1).await[0]["id"], everyone["id"]);
}

#[actix_web::test]
async fn ntfy_title_priority_and_tags_headers_and_their_short_forms() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let (_, mut ws) = member(&app, "phil_alerts").await;

    // curl -H "Title: Unauthorized access detected" -H "Priority: urgent" -H "Tags: warning,skull"
    //   -d "Remote access to phils-laptop detected. Act right away." ntfy.sh/phil_alerts
    let (status, answer) = send(
        bearer(form(post(&app, "/compat/ntfy/phil_alerts")), &token)
            .insert_header(("Title", "Unauthorized access detected"))
            .insert_header(("Priority", "urgent"))
            .insert_header(("Tags", "warning,skull")),
        "Remote access to phils-laptop detected. Act right away.",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["title"], "Unauthorized access detected");
    assert_eq!(answer["priority"], 5);
    assert_eq!(answer["tags"], json!(["warning", "skull"]));
    let item = &ws.receive(1).await[0];
    assert_eq!(item["title"], "Unauthorized access detected");
    assert_eq!(item["priority"], "critical");
    assert_eq!(item["tags"], json!(["warning", "skull"]));
    ws.ack_all(std::slice::from_ref(item)).await;

    // curl -H "t: Dogs are better than cats" -H "p: 4" -H "ta: dog" -d "Oh my ..." ntfy.sh/…
    let (status, _) = send(
        bearer(post(&app, "/compat/ntfy/phil_alerts"), &token)
            .insert_header(("t", "Dogs are better than cats"))
            .insert_header(("p", "4"))
            .insert_header(("ta", "dog")),
        "Oh my ...",
    )
    .await;
    assert_eq!(status, 200);
    let item = &ws.receive(1).await[0];
    assert_eq!(item["title"], "Dogs are better than cats");
    assert_eq!(item["priority"], "high");
    assert_eq!(item["tags"], json!(["dog"]));
    ws.ack_all(std::slice::from_ref(item)).await;

    // X-Priority: min, and the parameters in the query string instead of headers.
    let (status, answer) = send(
        bearer(
            post(
                &app,
                "/compat/ntfy/phil_alerts?title=From%20the%20query&tags=a,b",
            ),
            &token,
        )
        .insert_header(("X-Priority", "min")),
        "quiet",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let item = &ws.receive(1).await[0];
    assert_eq!(item["title"], "From the query");
    assert_eq!(item["priority"], "low");
    assert_eq!(item["tags"], json!(["a", "b"]));
}

#[actix_web::test]
async fn ntfy_click_markdown_put_and_an_empty_body() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let (_, mut ws) = member(&app, "reddit_alerts").await;

    // curl -d "New messages on Reddit" -H "Click: https://www.reddit.com/message/messages" ntfy.sh/reddit_alerts
    let (status, answer) = send(
        bearer(post(&app, "/compat/ntfy/reddit_alerts"), &token)
            .insert_header(("Click", "https://www.reddit.com/message/messages")),
        "New messages on Reddit",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["click"], "https://www.reddit.com/message/messages");
    let item = &ws.receive(1).await[0];
    assert_eq!(item["clickUrl"], "https://www.reddit.com/message/messages");
    ws.ack_all(std::slice::from_ref(item)).await;

    // curl -d "Look ma, **bold text**, *italics*, ..." -H "Markdown: yes" ntfy.sh/mytopic
    let (status, _) = send(
        bearer(post(&app, "/compat/ntfy/reddit_alerts"), &token).insert_header(("Markdown", "yes")),
        "Look ma, **bold text**, *italics*, ...",
    )
    .await;
    assert_eq!(status, 200);
    let item = &ws.receive(1).await[0];
    assert_eq!(item["body"], "Look ma, **bold text**, *italics*, ...");
    ws.ack_all(std::slice::from_ref(item)).await;

    // PUT works like POST; no body is ntfy's "triggered".
    let put = app
        .client
        .put(format!("{}/compat/ntfy/reddit_alerts", app.address));
    let (status, answer) = send(bearer(put, &token), "").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message"], "triggered");
    assert_eq!(ws.receive(1).await[0]["body"], "triggered");

    // A click URL the relay's rules refuse is the same 400 as on the relay's own API.
    let (status, body) = send(
        bearer(post(&app, "/compat/ntfy/reddit_alerts"), &token)
            .insert_header(("Click", "myapp://open")),
        "x",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "clickUrl");
}

#[actix_web::test]
async fn ntfy_json_publishing_and_what_the_relay_cannot_do() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let (_, mut ws) = member(&app, "mytopic").await;

    // The documented JSON example, as published: attachments and actions are refused, by name.
    let documented = json!({
        "topic": "mytopic",
        "message": "Disk space is low at 5.1 GB",
        "title": "Low disk space alert",
        "tags": ["warning", "cd"],
        "priority": 4,
        "attach": "https://filesrv.lan/space.jpg",
        "filename": "diskspace.jpg",
        "click": "https://homecamera.lan/xasds1h2xsSsa/",
        "actions": [{"action": "view", "label": "Admin panel", "url": "https://filesrv.lan/admin"}]
    });
    let (status, body) = send(
        bearer(form(post(&app, "/compat/ntfy")), &token),
        documented.to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errors"][0]["field"], "attach");
    assert!(body["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("not supported"));

    // Without them (and sent as curl sends it, form-encoded): published.
    let mut supported = documented.clone();
    for field in ["attach", "filename", "actions"] {
        supported.as_object_mut().unwrap().remove(field);
    }
    let (status, answer) = send(
        bearer(form(post(&app, "/compat/ntfy")), &token),
        supported.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["topic"], "mytopic");
    assert_eq!(answer["priority"], 4);
    let item = &ws.receive(1).await[0];
    assert_eq!(item["title"], "Low disk space alert");
    assert_eq!(item["body"], "Disk space is low at 5.1 GB");
    assert_eq!(item["priority"], "high");
    assert_eq!(item["clickUrl"], "https://homecamera.lan/xasds1h2xsSsa/");

    // Scheduled delivery in a header: refused, nothing published.
    let (status, body) = send(
        bearer(post(&app, "/compat/ntfy/mytopic"), &token)
            .insert_header(("X-Delay", "tomorrow, 10am")),
        "later",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("scheduled delivery"));
    // A topic field that is missing, and a priority out of range.
    let (status, body) = send(
        bearer(post(&app, "/compat/ntfy"), &token),
        r#"{"message":"x"}"#,
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("topic"))
    );
    let (status, _) = send(
        bearer(post(&app, "/compat/ntfy/mytopic"), &token).insert_header(("Priority", "6")),
        "x",
    )
    .await;
    assert_eq!(status, 400);
    let (_, listed) = app
        .get("/api/v1/notifications", Some(&app.admin_token))
        .await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "only the supported one"
    );
}

#[actix_web::test]
async fn ntfy_texts_and_tags_are_made_to_fit_rather_than_refused() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let (_, mut ws) = member(&app, "lenient").await;
    let many: Vec<String> = (0..12).map(|i| format!("tag{i}")).collect();
    let (status, answer) = send(
        bearer(post(&app, "/compat/ntfy/lenient"), &token)
            .insert_header(("Title", "x".repeat(300)))
            .insert_header(("Tags", many.join(",")))
            .insert_header(("Priority", "")),
        "bell\u{7} and\ttab",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let item = &ws.receive(1).await[0];
    assert_eq!(item["title"].as_str().unwrap().len(), 256);
    assert_eq!(item["tags"].as_array().unwrap().len(), 10);
    assert_eq!(item["body"], "bell and\ttab");
    assert_eq!(item["priority"], "normal", "an empty header is no header");
}

#[actix_web::test]
async fn ntfy_an_unknown_topic_is_a_404_and_nothing_is_queued() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let (status, body) = send(
        bearer(post(&app, "/compat/ntfy/nobody_here"), &token),
        "hello?",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("no device is in group nobody_here"));
    let (status, body) = send(bearer(post(&app, "/compat/ntfy/bad.topic"), &token), "x").await;
    assert_eq!(status, 404, "a name no group can have is no topic: {body}");
    assert!(
        body["detail"].as_str().unwrap().contains("no topic"),
        "{body}"
    );
    let (_, listed) = app
        .get("/api/v1/notifications", Some(&app.admin_token))
        .await;
    assert_eq!(listed["items"], json!([]));
}

#[actix_web::test]
async fn ntfy_auth_basic_with_the_token_as_password_bearer_and_never_the_url() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let (_, mut ws) = member(&app, "mysecrets").await;

    // curl -u :tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2 -d "Look ma, with auth" https://ntfy.example.com/mysecrets
    let (status, answer) = send(
        basic(post(&app, "/compat/ntfy/mysecrets"), "", &token),
        "Look ma, with auth",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ws.receive(1).await[0]["body"], "Look ma, with auth");
    // A user name is allowed, and ignored.
    let (status, _) = send(
        basic(post(&app, "/compat/ntfy/mysecrets"), "phil", &token),
        "x",
    )
    .await;
    assert_eq!(status, 200);

    // A password that is no token, no credentials at all, and a device's token: refused.
    let (status, _) = send(
        basic(
            post(&app, "/compat/ntfy/mysecrets"),
            "testuser",
            "fakepassword",
        ),
        "x",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = send(post(&app, "/compat/ntfy/mysecrets"), "x").await;
    assert_eq!(status, 401);
    let device = app.pair_device("a phone").await;
    let (status, _) = send(
        bearer(post(&app, "/compat/ntfy/mysecrets"), &device.access_token),
        "x",
    )
    .await;
    assert_eq!(status, 403);

    // ?auth= in the URL is refused even with a valid token in it.
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!(":{token}"));
    let (status, body) = send(
        post(&app, &format!("/compat/ntfy/mysecrets?auth={encoded}")),
        "x",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("not accepted in URLs"),
        "{body}"
    );
    // Basic is for the compatibility endpoints only.
    let (status, _) = send(basic(post(&app, "/api/v1/notifications"), "", &token), "{}").await;
    assert_eq!(status, 401);
}

// ---------------------------------------------------------------------------------------------
// Gotify
// ---------------------------------------------------------------------------------------------

fn gotify(app: &TestApp, token: &str) -> awc::ClientRequest {
    post(app, "/compat/gotify/message").insert_header(("X-Gotify-Key", token.to_owned()))
}

#[actix_web::test]
async fn gotify_multipart_form_as_curl_f_sends_it() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;

    // curl "…/message" -H "X-Gotify-Key: <token>" -F "title=my title" -F "message=my message" -F "priority=5"
    let boundary = "------------------------d74496d66958873e";
    let part = |name: &str, value: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    let body = format!(
        "{}{}{}--{boundary}--\r\n",
        part("title", "my title"),
        part("message", "my message"),
        part("priority", "5")
    );
    let (status, answer) = send(
        gotify(&app, &token).insert_header((
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )),
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["id"].as_i64().unwrap() > 0,
        "Gotify's ids are numbers: {answer}"
    );
    assert_eq!(answer["appid"], 0);
    assert_eq!(answer["title"], "my title");
    assert_eq!(answer["message"], "my message");
    assert_eq!(answer["priority"], 5);
    assert!(answer["date"].as_str().unwrap().ends_with('Z'));
    let item = &ws.receive(1).await[0];
    assert_eq!(item["title"], "my title");
    assert_eq!(item["body"], "my message");
    assert_eq!(item["priority"], "normal");
    assert_eq!(item["app"], "gotify");
}

#[actix_web::test]
async fn gotify_a_url_encoded_form_and_json_with_extras() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;

    // http -f POST "…/message" X-Gotify-Key:<token> title="my title" message="my message" priority="5"
    let (status, first) = send(
        form(gotify(&app, &token)),
        "title=my+title&message=my+message&priority=8",
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let item = &ws.receive(1).await[0];
    assert_eq!(
        (item["title"].as_str(), item["priority"].as_str()),
        (Some("my title"), Some("high"))
    );
    ws.ack_all(std::slice::from_ref(item)).await;

    // curl -X POST "…/message" -H "X-Gotify-Key: <token>" -H "Content-Type: application/json"
    //   --data '{"message": "**Markdown** _message_", "title": "some title", "extras": {…}}'
    let message = json!({
        "message": "**Markdown** _message_",
        "title": "some title",
        "priority": 10,
        "extras": {
            "client::display": {"contentType": "text/markdown"},
            "client::notification": {"click": {"url": "https://gotify.net"}}
        }
    });
    let (status, answer) = send(
        gotify(&app, &token).insert_header(("Content-Type", "application/json")),
        message.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["extras"], message["extras"]);
    assert!(answer["id"].as_i64().unwrap() > first["id"].as_i64().unwrap());
    let item = &ws.receive(1).await[0];
    assert_eq!(item["body"], "**Markdown** _message_");
    assert_eq!(item["priority"], "critical");
    assert_eq!(item["clickUrl"], "https://gotify.net");
}

#[actix_web::test]
async fn gotify_refuses_the_token_in_the_url_bad_messages_and_other_content_types() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let _device = app.pair_device("phone").await;

    // curl "https://push.example.de/message?token=<apptoken>" -F …: refused, and the token unused.
    let (status, body) = send(
        form(post(&app, &format!("/compat/gotify/message?token={token}"))),
        "message=hi",
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("not accepted in URLs") && detail.contains("X-Gotify-Key"),
        "{detail}"
    );
    assert!(
        !body.to_string().contains(&token),
        "the answer does not echo the token"
    );

    for (content_type, bad, field) in [
        ("application/json", r#"{"title":"no message"}"#, "message"),
        (
            "application/json",
            r#"{"message":"m","priority":11}"#,
            "priority",
        ),
        (
            "application/x-www-form-urlencoded",
            "message=m&priority=high",
            "priority",
        ),
        (
            "application/json",
            r#"{"message":"m","sound":"ding"}"#,
            "sound",
        ),
    ] {
        let (status, body) = send(
            gotify(&app, &token).insert_header(("Content-Type", content_type)),
            bad,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{bad}: {body}");
    }
    let (status, _) = send(
        gotify(&app, &token).insert_header(("Content-Type", "text/plain")),
        "hi",
    )
    .await;
    assert_eq!(status, 415);
    let (status, _) = send(
        gotify(&app, "bmp_not_a_token").insert_header(("Content-Type", "application/json")),
        r#"{"message":"m"}"#,
    )
    .await;
    assert_eq!(status, 401);
    // The endpoint's own credential wins: a wrong or empty X-Gotify-Key is refused even beside a
    // valid bearer token, never passed over for it.
    for key in ["bmp_not_a_token", " "] {
        let (status, body) = send(
            bearer(gotify(&app, key), &token).insert_header(("Content-Type", "application/json")),
            r#"{"message":"m"}"#,
        )
        .await;
        assert_eq!(status, 401, "{key:?}: {body}");
    }
    let (_, listed) = app
        .get("/api/v1/notifications", Some(&app.admin_token))
        .await;
    assert_eq!(listed["items"], json!([]), "nothing was published");
}

// ---------------------------------------------------------------------------------------------
// At the root
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn mount_at_root_serves_both_apis_beside_the_relays_own_routes() {
    let app = spawn_app_with(|s| s.compat.mount_at_root = true).await;
    let token = publish_token(&app).await;
    let (_, mut ws) = member(&app, "mytopic").await;

    let (status, answer) = send(bearer(post(&app, "/mytopic"), &token), "at the root").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ws.receive(1).await[0]["body"], "at the root");
    let (status, answer) = send(
        bearer(post(&app, "/"), &token),
        json!({"topic": "mytopic", "message": "json at the root"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = send(
        post(&app, "/message")
            .insert_header(("X-Gotify-Key", token.clone()))
            .insert_header(("Content-Type", "application/json")),
        r#"{"message":"gotify at the root"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // The relay's own routes are untouched.
    // (awc follows the redirect to the dashboard's login page.)
    let mut res = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    let page = String::from_utf8(res.body().await.unwrap().to_vec()).unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(
        page.contains("<html"),
        "GET / still opens the dashboard: {page}"
    );
    let (status, _) = app.get("/health/live", None).await;
    assert_eq!(status, 200);
    // A path the relay serves for GET only is a topic for POST.
    let (status, body) = send(bearer(post(&app, "/health"), &token), "x").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("group health"),
        "{body}"
    );
    let (status, _) = app.get("/mytopic", Some(&token)).await;
    assert_eq!(status, 404, "only POST and PUT are publishes");
}

#[actix_web::test]
async fn without_mount_at_root_the_root_paths_are_not_publishes() {
    let app = spawn_app().await;
    let token = publish_token(&app).await;
    let _member = member(&app, "mytopic").await;
    let (status, _) = send(bearer(post(&app, "/mytopic"), &token), "x").await;
    assert_eq!(status, 404);
    let (status, _) = send(
        post(&app, "/message").insert_header(("X-Gotify-Key", token.clone())),
        "message=x",
    )
    .await;
    assert_eq!(
        status, 404,
        "no route, and no credential read outside the compatibility paths"
    );
}
