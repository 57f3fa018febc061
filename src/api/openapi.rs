//! The OpenAPI 3.1 document of the HTTP API, generated from the request and response types
//! (`utoipa`) and the `#[utoipa::path]` of every handler. Served at `GET /api/v1/openapi.json`
//! (any valid token), printed by `beepmyphone openapi`, and committed as `docs/openapi.json`;
//! `tests/api/openapi.rs` checks that it covers every route and that the committed copy is current.
//!
//! Every operation also gets the problem documents any request can meet (400, 401, 403, 404, 413,
//! 415, 429, 503 and a `default`), added here rather than repeated on each handler. The WebSocket
//! (`GET /api/v1/ws`) is described in `docs/api.md`, not here: OpenAPI cannot describe it.
//! Quiet hours get a `not` keyword stating that `end` differs from `start`, and a publish a
//! `oneOf` stating how `encrypted` excludes the content fields, so the document describes every
//! rule the validators apply.

use actix_web::{web, HttpResponse};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, RefOr, Response, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi};

use crate::api::auth::Principal;
use crate::api::routes;
use crate::error::{ApiError, FieldError, Problem};

/// The top of the document: info, tags, shared schemas, the security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "BeepMyPhone relay",
        description = "Publish notifications over HTTP; paired devices receive them over a WebSocket \
                       (see docs/api.md). Errors are RFC 9457 problem documents.",
        license(name = "MIT")
    ),
    paths(openapi_json),
    components(schemas(Problem, FieldError)),
    security(("bearer" = []), ("session" = [])),
    modifiers(&Shared),
    tags(
        (name = "notifications", description = "Publish and inspect notifications"),
        (name = "devices", description = "Paired devices and their settings"),
        (name = "pairing", description = "Pairing codes and device tokens"),
        (name = "auth", description = "Admin logins and sessions, logout"),
        (name = "tokens", description = "API tokens"),
        (name = "keys", description = "Signing keys"),
        (name = "limits", description = "Rate-limit blocks"),
        (name = "audit", description = "The tamper-evident audit log"),
        (name = "tls", description = "The TLS certificate"),
        (name = "health", description = "Probes"),
        (name = "monitoring", description = "Prometheus metrics"),
        (name = "meta", description = "This document"),
        (name = "compat", description = "Publishing as ntfy and Gotify clients do (a publish or admin token)"),
    )
)]
struct Top;

/// The whole document.
pub fn document() -> Document {
    let mut doc = Top::openapi();
    for part in [
        routes::notifications::Api::openapi(),
        routes::e2e::Api::openapi(),
        routes::devices::Api::openapi(),
        routes::pairing::Api::openapi(),
        routes::auth::Api::openapi(),
        routes::tokens::Api::openapi(),
        routes::keys::Api::openapi(),
        routes::datakeys::Api::openapi(),
        routes::tls::Api::openapi(),
        routes::audit::Api::openapi(),
        routes::blocks::Api::openapi(),
        routes::health::Api::openapi(),
        routes::metrics::Api::openapi(),
        routes::events::Api::openapi(),
        routes::stream::Api::openapi(),
        crate::api::compat::ntfy::Api::openapi(),
        crate::api::compat::gotify::Api::openapi(),
    ] {
        doc.merge(part);
    }
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    Shared.modify(&mut doc);
    doc
}

/// The document as pretty JSON (what `docs/openapi.json` holds).
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Adds the security schemes and the problem responses every operation can give.
struct Shared;

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "Problem",
            )))),
        )
        .into()
}

const SHARED_RESPONSES: [(&str, &str); 9] = [
    (
        "400",
        "Invalid request: every invalid field is listed in `errors`",
    ),
    ("401", "Missing, invalid, expired or revoked credentials"),
    (
        "403",
        "Valid credentials without the right, or a blocked IP address",
    ),
    ("404", "No such resource"),
    ("413", "The body is larger than `server.max_body_bytes`"),
    ("415", "The body is not JSON"),
    (
        "429",
        "Rate limited; see `Retry-After` and the `RateLimit` headers",
    ),
    (
        "503",
        "A dependency is unavailable; retry (see `Retry-After`)",
    ),
    ("default", "Any other error, as a problem document"),
];

fn add_shared(operation: &mut Operation) {
    for (status, description) in SHARED_RESPONSES {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    }
}

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        // utoipa has no `not`; the keyword goes in as an extension, which is serialised inline.
        if let Some(RefOr::T(Schema::Object(quiet))) = components.schemas.get_mut("QuietHoursBody")
        {
            quiet
                .extensions
                .get_or_insert_with(Default::default)
                .insert("not".to_owned(), crate::api::schemas::quiet_hours_differ());
        }
        // A publish is a plain notification or an end-to-end envelope for one device.
        if let Some(RefOr::T(Schema::Object(publish))) =
            components.schemas.get_mut("PublishRequest")
        {
            publish
                .extensions
                .get_or_insert_with(Default::default)
                .insert("oneOf".to_owned(), crate::api::schemas::publish_one_of());
        }
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("API token (bmp_…) or device access token (JWT)")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "ntfy clients: an API token as the password (any user name), or as the \
                         user name with an empty password",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "gotify_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Gotify-Key",
                "Gotify clients: an API token (never in the URL: `?token=` is refused)",
            ))),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::security::sessions::SESSION_COOKIE,
                "An admin session from POST /api/v1/auth/login; state-changing requests also \
                 need the X-CSRF-Token header",
            ))),
        );
        for item in doc.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_shared(operation);
            }
        }
    }
}

/// Registers `GET /openapi.json` (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json));
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", body = Object)))]
async fn openapi_json(_caller: Principal) -> Result<HttpResponse, ApiError> {
    // Built once per process: the document only changes with the code.
    static SERVED: std::sync::LazyLock<String> = std::sync::LazyLock::new(document_json);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(SERVED.as_str()))
}
