//! Tests: the OpenAPI document is served (to token holders only), covers exactly the routes the
//! server answers, describes what the server really returns, and the committed `docs/openapi.json`
//! is the document the code generates.

use std::collections::BTreeSet;

use awc::http::Method;
use serde_json::{json, Value};

use beepmyphone::api::openapi::{document, document_json};
use beepmyphone::api::ROUTES;

use crate::helpers::spawn_app;

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    out
}

#[actix_rt::test]
async fn the_document_is_served_to_token_holders_only() {
    let app = spawn_app().await;
    let (status, body) = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "UNAUTHORIZED");
    let (status, served) = app
        .get("/api/v1/openapi.json", Some(&app.admin_token))
        .await;
    assert_eq!(status, 200);
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(served, serde_json::to_value(document()).unwrap());
}

#[test]
fn the_committed_copy_is_current() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .expect("docs/openapi.json exists");
    assert!(
        committed.trim_end() == document_json().trim_end(),
        "docs/openapi.json is stale: run `cargo run -q -- openapi > docs/openapi.json`"
    );
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let doc = serde_json::to_value(document()).unwrap();
    let documented = operations(&doc);
    let mut routed = BTreeSet::new();
    for (path, methods) in ROUTES {
        // The WebSocket upgrade cannot be described in OpenAPI; docs/api.md describes it.
        if *path == "/api/v1/ws" {
            continue;
        }
        for method in methods.split(", ") {
            routed.insert(((*path).to_owned(), method.to_owned()));
        }
    }
    assert_eq!(documented, routed);
}

#[actix_rt::test]
async fn every_documented_operation_is_routed() {
    let app = spawn_app().await;
    let doc = serde_json::to_value(document()).unwrap();
    for (path, method) in operations(&doc) {
        let concrete = path
            .replace("{id}", "x_00000000000000000000000000")
            .replace("{ip}", "192.0.2.1");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        // Safe calls only: the point is that the router knows the path and the method.
        if concrete.ends_with("/rotate") {
            continue;
        }
        // A stream that never ends: its route is checked by its own tests (dashboard.rs).
        if concrete == "/api/v1/events" {
            continue;
        }
        let (status, body) = app
            .send_json(
                method.clone(),
                &concrete,
                Some(&app.admin_token),
                &json!({}),
            )
            .await;
        assert_ne!(status, 405, "{method} {concrete}: {body}");
        assert!(
            status != 404
                || !body["detail"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no such resource"),
            "{method} {concrete} is not routed: {body}"
        );
    }
}

#[test]
fn request_bodies_refuse_unknown_fields_and_state_their_limits() {
    let doc = serde_json::to_value(document()).unwrap();
    let schemas = &doc["components"]["schemas"];
    for name in [
        "PublishRequest",
        "BatchRequest",
        "PairRequest",
        "PairingCodeRequest",
        "RefreshRequest",
        "PatchDeviceRequest",
        "SettingsBody",
        "QuietHoursBody",
        "CreateTokenRequest",
        "LoginRequest",
    ] {
        assert_eq!(
            schemas[name]["additionalProperties"],
            Value::Bool(false),
            "{name} must refuse unknown fields"
        );
    }
    // The patterns the schemas state are the ones the rules are written against.
    use beepmyphone::api::schemas::{DEVICE_ID, HHMM, MULTI_LINE, PRINTABLE_ASCII, SINGLE_LINE};
    let publish = &schemas["PublishRequest"]["properties"];
    assert_eq!(publish["title"]["pattern"], SINGLE_LINE);
    assert_eq!(publish["app"]["pattern"], SINGLE_LINE);
    assert_eq!(publish["body"]["pattern"], MULTI_LINE);
    assert_eq!(publish["idempotencyKey"]["pattern"], PRINTABLE_ASCII);
    assert_eq!(publish["tags"]["items"]["pattern"], SINGLE_LINE);
    let quiet = &schemas["QuietHoursBody"]["properties"];
    assert_eq!(quiet["start"]["pattern"], HHMM);
    assert_eq!(quiet["end"]["pattern"], HHMM);
    // Every rule is in the document: the URL's whole rule, the zone names, end ≠ start.
    use beepmyphone::api::schemas::{
        quiet_hours_differ, time_zone_names, CLICK_URL, CLICK_URL_MAX,
    };
    assert_eq!(publish["clickUrl"]["pattern"], CLICK_URL);
    assert_eq!(publish["clickUrl"]["maxLength"], CLICK_URL_MAX);
    let zones: Vec<&str> = time_zone_names().collect();
    assert_eq!(quiet["timezone"]["enum"], json!(zones));
    assert_eq!(schemas["QuietHoursBody"]["not"], quiet_hours_differ());
    let pair = &schemas["PairRequest"]["properties"];
    assert_eq!(pair["name"]["pattern"], SINGLE_LINE);
    let device_list = &doc["paths"]["/api/v1/devices"]["get"]["parameters"];
    let cursor = device_list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cursor")
        .unwrap();
    assert_eq!(cursor["schema"]["pattern"], DEVICE_ID);
    assert_eq!(publish["title"]["maxLength"], 256);
    assert_eq!(publish["title"]["minLength"], 1);
    assert_eq!(publish["ttlSeconds"]["minimum"], 60);
    assert_eq!(
        schemas["BatchRequest"]["properties"]["items"]["maxItems"],
        500
    );
    // Nothing is required on its own: a title, or else an end-to-end envelope (the `oneOf`).
    assert_eq!(schemas["PublishRequest"]["required"], Value::Null);
    assert_eq!(
        schemas["PublishRequest"]["oneOf"],
        beepmyphone::api::schemas::publish_one_of()
    );
    use beepmyphone::api::schemas::{E2E_KEY, ENCRYPTED_PATTERN};
    assert_eq!(publish["encrypted"]["pattern"], ENCRYPTED_PATTERN);
    assert_eq!(publish["encrypted"]["maxLength"], 12000);
    assert_eq!(pair["e2eKey"]["pattern"], E2E_KEY);
    // Every operation documents the problem documents it can answer with.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            for status in ["400", "401", "429", "default"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
        }
    }
}

#[actix_rt::test]
async fn a_served_validation_error_matches_the_problem_schema() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/notifications",
            Some(&app.admin_token),
            &json!({"title": "", "priority": "loud"}),
        )
        .await;
    assert_eq!(status, 400);
    let doc = serde_json::to_value(document()).unwrap();
    let problem = doc["components"]["schemas"]["Problem"]["properties"]
        .as_object()
        .unwrap();
    for key in body.as_object().unwrap().keys() {
        assert!(
            problem.contains_key(key),
            "problem field {key} is not in the schema"
        );
    }
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["priority", "title"]);
}
