//! The rate-limit middleware, in two layers around authentication, and the open-socket count.
//!
//! [`limit_ip`] runs before authentication: it refuses blocked IPs, limits requests without
//! credentials per IP (`ip`), WebSocket connection attempts per IP (`ws`), and counts
//! failed authentications against the IP. [`limit_principal`] runs after authentication: per
//! caller (`principal`), a separate budget for publishing (`publish`) and for admins (`admin`),
//! and failed login, pairing and refresh attempts per IP (`auth`; admins are exempt).
//! Health probes and the JWKS are never limited. Every limited response carries `RateLimit-Policy`
//! and `RateLimit`; a 429 is a `RATE_LIMITED` problem document with `Retry-After`. Ten consecutive
//! violations block the IP for `limits.block_seconds` (see [`crate::api::routes::blocks`]).

use std::net::IpAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use crate::api::auth::{session_cookie, Principal};
use crate::domain::ratelimit::{Decision, Rule};
use crate::domain::Scope;
use crate::error::ApiError;
use crate::state::AppState;

/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The client IP, as [`limit_ip`] found it, for later layers.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

fn exempt(path: &str) -> bool {
    path == "/health" || path.starts_with("/health/") || path == "/.well-known/jwks.json"
}

fn sensitive(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && matches!(
            path.trim_end_matches('/'),
            "/api/v1/auth/login"
                | "/api/v1/devices/pair"
                | "/api/v1/auth/refresh"
                | "/dashboard/login"
        )
}

fn publishing(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && matches!(
            path.trim_end_matches('/'),
            "/api/v1/notifications" | "/api/v1/notifications/batch"
        )
}

fn add_headers<B>(res: &mut ServiceResponse<B>, rule: &Rule, decision: &Decision) {
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rule.policy_header()) {
        headers.append(RATELIMIT_POLICY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&decision.header(rule)) {
        headers.append(RATELIMIT, v);
    }
}

fn too_many<B>(
    req: ServiceRequest,
    retry_after_secs: u64,
    detail: String,
    limit: Option<(&Rule, &Decision)>,
) -> ServiceResponse<EitherBody<B>> {
    let error = ApiError::RateLimited {
        retry_after_secs,
        detail,
    };
    let response = HttpResponse::from_error(actix_web::Error::from(error));
    let mut res = req.into_response(response).map_into_right_body();
    if let Some((rule, decision)) = limit {
        add_headers(&mut res, rule, decision);
    }
    res
}

/// Counts a violation of `ip`; a block it causes is recorded in the audit log (the IP sealed in
/// the record's source IP).
async fn violation(state: &AppState, ip: IpAddr, now: i64) {
    if state.limits.limiter.violation(ip, now).await {
        let until = state.limits.limiter.blocked_until(ip, now);
        let mut event = beepmyphone_actors::ports::AuditEvent::system(
            beepmyphone_actors::ports::Action::IpBlocked,
            beepmyphone_actors::ports::Outcome::Ok,
        )
        .with_details(serde_json::json!({
            "until": until.map(beepmyphone_actors::model::rfc3339),
            "seconds": state.settings.limits.block_seconds,
        }));
        event.ip = Some(ip.to_string());
        event.request_id = crate::request_id::current_request_id();
        event.trace_id = crate::request_id::current_trace_id().map(|t| t.to_string());
        state.audit.record(event);
    }
}

async fn denied<B>(
    state: &AppState,
    req: ServiceRequest,
    ip: IpAddr,
    rule: &Rule,
    decision: &Decision,
    now: i64,
) -> ServiceResponse<EitherBody<B>> {
    violation(state, ip, now).await;
    state
        .graph
        .metrics
        .ratelimit_rejections
        .with_label_values(&[rule.name])
        .inc();
    let detail = format!(
        "rate limit \"{}\" exceeded ({} requests per {} s); retry after {} s",
        rule.name,
        rule.limit,
        rule.window_ms.div_ceil(1_000),
        decision.retry_after_secs()
    );
    too_many(
        req,
        decision.retry_after_secs(),
        detail,
        Some((rule, decision)),
    )
}

/// The layer before authentication (`actix_web::middleware::from_fn`).
pub async fn limit_ip(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let state = match req.app_data::<web::Data<AppState>>() {
        Some(state) if state.limits.enabled && !exempt(req.match_info().as_str()) => state.clone(),
        _ => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
    };
    let limits = &state.limits;
    let Some(ip) = limits.client_ip(req.request()) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    req.extensions_mut().insert(ClientIp(ip));
    let now = state.clock.now_ms();
    if let Some(until) = limits.limiter.blocked_until(ip, now) {
        let secs = ((until - now).max(0) as u64).div_ceil(1_000).max(1);
        let detail =
            format!("this address is blocked for {secs} s after repeated rate-limit violations");
        state
            .graph
            .metrics
            .ratelimit_rejections
            .with_label_values(&["blocked"])
            .inc();
        return Ok(too_many(req, secs, detail, None));
    }
    let credentialed =
        req.headers().contains_key(AUTHORIZATION) || session_cookie(req.request()).is_some();
    // The path as the router matches it (percent-decoded): `/api/v1/auth/%6cogin` is the login.
    let path = req.match_info().as_str().to_owned();
    let rule = if path == "/api/v1/ws" {
        Some(&limits.rules.ws)
    } else if !credentialed && !sensitive(req.method(), &path) {
        Some(&limits.rules.ip)
    } else {
        None
    };
    let key = ip.to_string();
    let before = match rule {
        Some(rule) => {
            let decision = limits.limiter.check(rule, &key, now, true).await;
            if !decision.allowed {
                return Ok(denied(&state, req, ip, rule, &decision, now).await);
            }
            limits.limiter.allowed(ip, now);
            Some((rule, decision))
        }
        None => None,
    };
    let mut res = next.call(req).await?;
    if let Some((rule, decision)) = before {
        add_headers(&mut res, rule, &decision);
    } else if credentialed && res.status() == actix_web::http::StatusCode::UNAUTHORIZED {
        // Guessing credentials spends the IP's budget, and repeated guessing blocks it.
        let rule = &limits.rules.ip;
        let decision = limits.limiter.check(rule, &key, now, true).await;
        if !decision.allowed {
            violation(&state, ip, now).await;
        }
        add_headers(&mut res, rule, &decision);
    }
    Ok(res.map_into_left_body())
}

/// The layer after authentication (`actix_web::middleware::from_fn`).
pub async fn limit_principal(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let client = req.extensions().get::<ClientIp>().copied();
    let (state, ip) = match (req.app_data::<web::Data<AppState>>(), client) {
        (Some(state), Some(ClientIp(ip))) if req.match_info().as_str() != "/api/v1/ws" => {
            (state.clone(), ip)
        }
        _ => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
    };
    let limits = &state.limits;
    let rules = &limits.rules;
    let now = state.clock.now_ms();
    // The caller's key and budget, without cloning the principal.
    let caller = req.extensions().get::<Principal>().map(|p| match p {
        Principal::Token { id, scope } => (id.to_string(), *scope == Scope::Admin, true),
        Principal::Session { admin_id, .. } => (admin_id.to_string(), true, true),
        Principal::Device { device, .. } => (device.to_string(), false, false),
    });
    let is_admin = caller.as_ref().is_some_and(|c| c.1);
    let path = req.match_info().as_str().to_owned();
    if sensitive(req.method(), &path) && !is_admin {
        // Only failures spend this budget: a valid code, password or refresh token always works
        // until the budget is spent by failures.
        let rule = &rules.auth;
        let key = ip.to_string();
        let peek = limits.limiter.check(rule, &key, now, false).await;
        if !peek.allowed {
            return Ok(denied(&state, req, ip, rule, &peek, now).await);
        }
        let mut res = next.call(req).await?;
        let decision = if res.status().is_client_error() {
            limits.limiter.check(rule, &key, now, true).await
        } else {
            limits.limiter.allowed(ip, now);
            peek
        };
        add_headers(&mut res, rule, &decision);
        return Ok(res.map_into_left_body());
    }
    let Some((key, admin, publisher)) = caller else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let rule = if publisher && publishing(req.method(), &path) {
        &rules.publish
    } else if admin {
        &rules.admin
    } else {
        &rules.principal
    };
    let decision = limits.limiter.check(rule, &key, now, true).await;
    if !decision.allowed {
        return Ok(denied(&state, req, ip, rule, &decision, now).await);
    }
    limits.limiter.allowed(ip, now);
    let mut res = next.call(req).await?;
    add_headers(&mut res, rule, &decision);
    Ok(res.map_into_left_body())
}
