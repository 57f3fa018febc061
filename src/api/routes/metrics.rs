//! `GET /metrics`: every metric in the Prometheus text format, for an API token of scope
//! `metrics` or `admin` (or an admin session). `metrics.listen` serves the same without a token on
//! a second address ([`crate::monitoring::metrics::listen`]). `GET /api/v1/metrics/history` is
//! the last hour as the dashboard charts it ([`beepmyphone_actors::history`]).

use actix_web::{web, HttpResponse};

use crate::api::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(scrape, history))]
pub struct Api;

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape));
}

/// Registers the history route (under `/api/v1`).
pub fn configure_api(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics/history", web::get().to(history));
}

/// The last hour, oldest first, one sample per 30 s.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    /// The samples (empty until the first 30 s have passed; kept in memory only).
    #[schema(value_type = Vec<Object>)]
    pub samples: Vec<beepmyphone_actors::history::Sample>,
}

/// The samples of the metrics history.
pub(crate) async fn samples(
    state: &AppState,
) -> Result<Vec<beepmyphone_actors::history::Sample>, ApiError> {
    state
        .history
        .send(beepmyphone_actors::history::GetHistory)
        .await
        .map_err(|_| ApiError::Unavailable("the metrics history is restarting; try again".into()))
}

#[utoipa::path(get, path = "/api/v1/metrics/history", tag = "monitoring",
    responses((status = 200, description = "Throughput, publish-to-deliver percentiles, queue depth and sockets per 30 s over the last hour", body = HistoryView)))]
async fn history(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require_metrics_reader()?;
    Ok(HttpResponse::Ok().json(HistoryView {
        samples: samples(&state).await?,
    }))
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
