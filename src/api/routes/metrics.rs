//! `GET /metrics`: every metric in the Prometheus text format, for an API token of scope
//! `metrics` or `admin` (or an admin session). `metrics.listen` serves the same without a token on
//! a second address ([`crate::monitoring::metrics::listen`]).

use actix_web::{web, HttpResponse};

use crate::api::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(scrape))]
pub struct Api;

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape));
}

#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "Every metric, in the Prometheus text exposition format (docs/operations.md lists them)",
        body = String, content_type = "text/plain; version=0.0.4; charset=utf-8")))]
async fn scrape(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    if !state.settings.metrics.enabled {
        return Err(ApiError::NotFound(
            "metrics are off (metrics.enabled)".into(),
        ));
    }
    principal.require_metrics_reader()?;
    Ok(state.scrape().response().await)
}
