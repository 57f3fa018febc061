//! Health probes: `GET /health/live` (the process answers), `GET /health/ready` (the store and the
//! queue answer), `GET /health` (per-component detail, cached by the health supervisor).

use actix_web::{web, HttpResponse};
use serde_json::json;

use beepmyphone_actors::supervisor::{Check, HealthReport, Status};

use crate::error::ApiError;
use crate::state::AppState;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(live, ready, detail))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready))
        .route("/health", web::get().to(detail));
}

/// A probe's answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Probe {
    /// `ok` (live) or `ready`.
    status: &'static str,
}

#[utoipa::path(get, path = "/health/live", tag = "health", security(()),
    responses((status = 200, description = "The process answers", body = Probe)))]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Probe { status: "ok" })
}

/// The health supervisor's (cached) report.
async fn report(state: &AppState) -> Result<HealthReport, ApiError> {
    state
        .graph
        .health
        .send(Check { fresh: false })
        .await
        .map_err(|_| ApiError::Unavailable("the health supervisor is not answering".into()))
}

#[utoipa::path(get, path = "/health/ready", tag = "health", security(()),
    responses((status = 200, description = "The store and the queue answer", body = Probe),
        (status = 503, description = "A component is unhealthy", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = report(&state).await?;
    if report.status == Status::Unhealthy {
        return Err(ApiError::Unavailable(
            "not ready: a component is unhealthy".into(),
        ));
    }
    Ok(HttpResponse::Ok().json(Probe { status: "ready" }))
}

#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses((status = 200, description = "Healthy or degraded, per component", body = Object),
        (status = 503, description = "A component is unhealthy (same body)", body = Object)))]
async fn detail(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = report(&state).await?;
    let mut response = if report.status == Status::Unhealthy {
        HttpResponse::ServiceUnavailable()
    } else {
        HttpResponse::Ok()
    };
    let limits = &state.limits.limiter;
    let status = if limits.degraded() && report.status == Status::Healthy {
        Status::Degraded
    } else {
        report.status
    };
    Ok(response.json(json!({
        "status": status,
        "components": report.components,
        "restarts": report.restarts,
        "checkedAt": beepmyphone_actors::model::rfc3339(report.checked_at),
        "queue": report.queue,
        "sockets": report.sockets.map(|s| json!({"devices": s.devices, "sockets": s.sockets})),
        "pool": state.store.stats(),
        "rateLimit": {
            "backend": limits.backend_name(),
            "status": if limits.degraded() { Status::Degraded } else { Status::Healthy },
        },
    })))
}
