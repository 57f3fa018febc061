//! Security headers on every response (errors and 404s included), CORS for the configured origins
//! only, and the URI length limit.
//!
//! The OWASP set: `X-Content-Type-Options`, `Referrer-Policy`, `Content-Security-Policy`
//! (`security.content_security_policy`), `Permissions-Policy`, `Cross-Origin-Opener-Policy`,
//! `Cross-Origin-Resource-Policy`, `Cache-Control: no-store` on `/api/`, and
//! `Strict-Transport-Security` when the request came over TLS (directly, or `X-Forwarded-Proto:
//! https` from a trusted proxy). actix sends no `Server` header. CORS is closed unless
//! `security.cors_allowed_origins` lists the request's `Origin`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use crate::domain::net::Cidr;
use crate::error::ApiError;
use crate::state::AppState;

/// The dashboard's policy, whatever `security.content_security_policy` says: its own scripts,
/// styles and images only, no inline script or style, no `eval`, no other origin, no framing,
/// forms only to itself.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Whether `path` is one of the dashboard's (its pages, assets and the `/` redirect).
pub fn dashboard_path(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/dashboard/")
}

const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
const COOP: HeaderName = HeaderName::from_static("cross-origin-opener-policy");
const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");

fn set_static(headers: &mut HeaderMap, secure: bool, api: bool, csp: Option<&HeaderValue>) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        PERMISSIONS_POLICY,
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    headers.insert(COOP, HeaderValue::from_static("same-origin"));
    headers.insert(CORP, HeaderValue::from_static("same-origin"));
    if let Some(csp) = csp {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if secure {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    headers.remove(header::SERVER);
}

fn over_tls(req: &ServiceRequest, trusted: &[Cidr]) -> bool {
    request_over_tls(req.request(), trusted)
}

/// `limits.trusted_proxies`, parsed (checked at start-up).
pub fn trusted_proxies(state: &AppState) -> Vec<Cidr> {
    state
        .settings
        .limits
        .trusted_proxies
        .iter()
        .filter_map(|p| Cidr::parse(p))
        .collect()
}

/// Whether `req` came over TLS: to this relay's HTTPS listener, or through a trusted proxy that
/// says `X-Forwarded-Proto: https` (the same rule for HSTS and for `Secure` cookies).
pub fn request_over_tls(req: &actix_web::HttpRequest, trusted: &[Cidr]) -> bool {
    if req.app_config().secure() {
        return true;
    }
    let from_proxy = req
        .peer_addr()
        .is_some_and(|peer| trusted.iter().any(|c| c.contains(peer.ip())));
    from_proxy
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The outermost middleware (`actix_web::middleware::from_fn`).
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (csp, origin_allowed, secure, max_uri) = match &state {
        Some(state) => {
            let security = &state.settings.security;
            let origin = req
                .headers()
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .filter(|o| security.cors_allowed_origins.iter().any(|a| a == o))
                .and_then(|o| HeaderValue::from_str(o).ok());
            let trusted = trusted_proxies(state);
            let csp = if dashboard_path(req.match_info().as_str()) {
                Some(HeaderValue::from_static(DASHBOARD_CSP))
            } else {
                HeaderValue::from_str(&security.content_security_policy).ok()
            };
            (
                csp,
                origin,
                over_tls(&req, &trusted),
                state.settings.server.max_uri_bytes,
            )
        }
        None => (None, None, false, usize::MAX),
    };
    let path = req.match_info().as_str();
    let api = path.starts_with("/api/") || dashboard_path(path);
    let uri_len = req.path().len() + req.query_string().len();
    let preflight = *req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let early = if uri_len > max_uri {
        Some(HttpResponse::from_error(actix_web::Error::from(
            ApiError::UriTooLong { limit: max_uri },
        )))
    } else if preflight && origin_allowed.is_some() {
        Some(
            HttpResponse::NoContent()
                .insert_header((
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    "GET, POST, PATCH, DELETE, OPTIONS",
                ))
                .insert_header((
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "authorization, content-type, x-csrf-token, x-request-id, idempotency-key",
                ))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
                .finish(),
        )
    } else {
        None
    };
    let mut res = match early {
        Some(response) => req.into_response(response).map_into_right_body(),
        // Handler errors are responses by now (the inner layers never fail a request), so this
        // sees every response.
        None => next.call(req).await?.map_into_left_body(),
    };
    let headers = res.headers_mut();
    set_static(headers, secure, api, csp.as_ref());
    if let Some(origin) = origin_allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ratelimit, ratelimit-policy, retry-after, x-request-id"),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(res)
}
