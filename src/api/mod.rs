//! The HTTP API under `/api/v1`, plus health probes at the root.
//!
//! Routes live per resource in [`routes`] and are registered in one [`configure`]. Every error is
//! an [`crate::error::ApiError`]; unknown paths and methods get problem documents too.

pub mod audited;
pub mod auth;
pub mod body;
pub mod compat;
pub mod headers;
pub mod ids;
pub mod middleware;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod schemas;
pub mod targets;
pub mod timing;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 500;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .configure(routes::pairing::configure)
            .configure(routes::auth::configure)
            .configure(routes::devices::configure)
            .configure(routes::tokens::configure)
            .configure(routes::keys::configure)
            .configure(routes::datakeys::configure)
            .configure(routes::blocks::configure)
            .configure(routes::audit::configure)
            .configure(routes::tls::configure)
            .configure(routes::notifications::configure)
            .configure(routes::e2e::configure)
            .configure(routes::events::configure)
            .configure(routes::stream::configure)
            .configure(routes::metrics::configure_api)
            .configure(openapi::configure)
            .route("/ws", web::get().to(routes::socket::connect)),
    )
    .configure(routes::health::configure)
    .configure(routes::metrics::configure)
    .configure(routes::keys::configure_well_known);
}

/// Registers the ntfy and Gotify endpoints (at the root too when `mount_at_root`), then the
/// problem document for everything else. Called after every other route: a root topic matches only
/// what nothing else does.
pub fn configure_compat_and_fallback(cfg: &mut web::ServiceConfig, mount_at_root: bool) {
    compat::configure(cfg, mount_at_root);
    cfg.default_service(web::to(not_found));
}

/// Every route and its methods, for 405 answers with an `Allow` header.
pub const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/pairing-codes", "POST"),
    ("/api/v1/devices", "GET"),
    ("/api/v1/devices/pair", "POST"),
    ("/api/v1/devices/{id}", "GET, PATCH, DELETE"),
    ("/api/v1/auth/refresh", "POST"),
    ("/api/v1/auth/login", "POST"),
    ("/api/v1/auth/logout", "POST"),
    ("/api/v1/auth/sessions", "GET"),
    ("/api/v1/auth/sessions/{id}", "DELETE"),
    ("/api/v1/tokens", "GET, POST"),
    ("/api/v1/tokens/{id}", "DELETE"),
    ("/api/v1/keys", "GET"),
    ("/api/v1/keys/rotate", "POST"),
    ("/api/v1/keys/data", "GET"),
    ("/api/v1/keys/data/rotate", "POST"),
    ("/api/v1/blocks", "GET"),
    ("/api/v1/blocks/{ip}", "DELETE"),
    ("/api/v1/audit", "GET"),
    ("/api/v1/audit/verify", "GET, POST"),
    ("/api/v1/events", "GET"),
    ("/api/v1/metrics/history", "GET"),
    ("/api/v1/tls", "GET"),
    ("/api/v1/tls/renew", "POST"),
    ("/api/v1/notifications", "GET, POST"),
    ("/api/v1/notifications/batch", "POST"),
    ("/api/v1/notifications/{id}", "GET"),
    ("/api/v1/e2e/keys", "POST"),
    ("/api/v1/ws", "GET"),
    ("/api/v1/stream", "GET"),
    ("/api/v1/acks", "POST"),
    ("/api/v1/openapi.json", "GET"),
    ("/health", "GET"),
    ("/health/live", "GET"),
    ("/health/ready", "GET"),
    ("/metrics", "GET"),
    ("/.well-known/jwks.json", "GET"),
    ("/compat/ntfy", "POST"),
    ("/compat/ntfy/{topic}", "POST, PUT"),
    ("/compat/gotify/message", "POST"),
];

fn template_matches(template: &str, path: &str) -> bool {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || (a.starts_with('{') && !b.is_empty()) => continue,
            _ => return false,
        }
    }
}

/// The methods a path supports, if it is a route at all (an exact route wins over a template).
/// A path with a trailing slash is another path, which does not exist. Where `GET` is allowed,
/// so is `HEAD` (see [`middleware::head_as_get`]); the `Allow` header says so.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|(t, _)| *t == path)
        .or_else(|| {
            ROUTES
                .iter()
                .find(|(t, _)| t.contains('{') && template_matches(t, path))
        })
        .map(|(_, methods)| with_head(methods))
}

/// `methods` with `HEAD` after `GET`, where there is a `GET`.
fn with_head(methods: &'static str) -> &'static str {
    static WITH_HEAD: std::sync::LazyLock<Vec<(&'static str, String)>> =
        std::sync::LazyLock::new(|| {
            ROUTES
                .iter()
                .map(|(_, m)| (*m, m.replacen("GET", "GET, HEAD", 1)))
                .collect()
        });
    WITH_HEAD
        .iter()
        .find(|(m, _)| *m == methods)
        .map_or(methods, |(_, with)| with.as_str())
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    match allowed_methods(req.path()) {
        Some(allow) => Err(ApiError::MethodNotAllowed { allow }),
        None => Err(ApiError::NotFound(format!(
            "no such resource: {}",
            req.path()
        ))),
    }
}

/// Reads `limit` (default 50, at most 500).
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::field("limit", "must be between 1 and 500")),
    }
}

/// Parses an RFC 3339 timestamp query parameter into epoch milliseconds.
pub fn parse_time(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    ApiError::field(
                        field,
                        "must be an RFC 3339 timestamp such as 2026-01-31T12:00:00Z",
                    )
                })
        })
        .transpose()
}

/// Maps a query-string parse failure to a problem document.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    let message = err.to_string();
    let message = message
        .strip_prefix("Query deserialize error: ")
        .unwrap_or(&message)
        .to_owned();
    ApiError::field("query", message).into()
}

/// Maps a path parse failure to a 404.
pub fn path_error(_err: actix_web::error::PathError, req: &HttpRequest) -> actix_web::Error {
    ApiError::NotFound(format!("no such resource: {}", req.path())).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_methods_match_routes_and_templates() {
        assert_eq!(allowed_methods("/api/v1/devices"), Some("GET, HEAD"));
        assert_eq!(allowed_methods("/api/v1/devices/pair"), Some("POST"));
        assert_eq!(
            allowed_methods("/api/v1/devices/dev_1"),
            Some("GET, HEAD, PATCH, DELETE")
        );
        assert_eq!(allowed_methods("/api/v1/tokens/tok_1"), Some("DELETE"));
        assert_eq!(allowed_methods("/api/v1/tokens/tok_1/"), None);
        assert_eq!(allowed_methods("/api/v1/devices/"), None);
        assert_eq!(allowed_methods("/api/v1/devices/dev_1/extra"), None);
        assert_eq!(allowed_methods("/nope"), None);
    }

    #[test]
    fn limits_and_times() {
        assert_eq!(page_limit(None).unwrap(), 50);
        assert!(page_limit(Some(0)).is_err());
        assert!(page_limit(Some(501)).is_err());
        assert_eq!(
            parse_time("since", Some("1970-01-01T00:00:01Z")).unwrap(),
            Some(1_000)
        );
        assert!(parse_time("since", Some("yesterday")).is_err());
    }
}
