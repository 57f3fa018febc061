//! Health probes: `GET /health/live` (the process answers), `GET /health/ready` (the store is
//! writable and the queue answers), `GET /health` (every component, from the health supervisor's
//! report of at most `health.interval_seconds` ago; the details only for admins).

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use beepmyphone_actors::health::{Check, ComponentHealth, HealthReport, Status};

use crate::api::auth::Principal;
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
#[derive(Serialize, ToSchema)]
struct Probe {
    /// `ok` (live) or `ready`.
    status: &'static str,
}

/// A component's or the relay's state.
#[derive(Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working.
    Healthy,
    /// Working, with reduced capacity or a fallback.
    Degraded,
    /// Not working.
    Unhealthy,
}

impl HealthStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl From<Status> for HealthStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Healthy => HealthStatus::Healthy,
            Status::Degraded => HealthStatus::Degraded,
            Status::Unhealthy => HealthStatus::Unhealthy,
        }
    }
}

/// One component (docs/operations.md lists them all).
#[derive(Serialize, ToSchema)]
pub struct ComponentBody {
    /// `queue`, `registry`, `batcher`, `queue_lag`, `store`, `disk`, `keys`, `redis` (when
    /// configured), `ratelimit`.
    pub(crate) name: String,
    /// Its state.
    pub(crate) status: HealthStatus,
    /// Why (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
}

/// The rate limiter's backend.
#[derive(Serialize, ToSchema)]
pub struct RateLimitBody {
    /// `redis` or `embedded`.
    pub(crate) backend: &'static str,
    /// `degraded` while Redis fails and limits are per process.
    pub(crate) status: HealthStatus,
}

/// The relay's health. Anonymous callers get `status` and each component's `name` and `status`;
/// admins also get the reasons and the other fields.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthBody {
    /// The worst component state.
    pub(crate) status: HealthStatus,
    /// Per component.
    pub(crate) components: Vec<ComponentBody>,
    /// Admins only: restarts of the supervised actors since start (up to date, not cached).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) restarts: Option<u64>,
    /// Admins only: when the components were probed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) checked_at: Option<String>,
    /// Admins only: the queue's counts (`devices`, `online`, `ready`, `inFlight`, `uncommitted`,
    /// `oldestReadyMs`), when the queue answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) queue: Option<serde_json::Value>,
    /// Admins only: `devices` online and open `sockets`, when the registry answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) sockets: Option<serde_json::Value>,
    /// Admins only: the store's connection pool now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) pool: Option<serde_json::Value>,
    /// Admins only: the rate limiter's backend now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rate_limit: Option<RateLimitBody>,
    /// Admins only, clustered relays: this relay's `node` and the `nodes` whose heartbeat is
    /// recent (`id`, `devices` connected, `heartbeatAt` epoch ms), or the `error` reading them
    /// from Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) cluster: Option<serde_json::Value>,
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

/// Why the relay cannot take traffic: the store is not writable or the queue does not answer.
/// Everything else (Redis, disk space, keys, lag) degrades the relay without taking it out.
fn not_ready(report: &HealthReport) -> Option<&'static str> {
    let unhealthy = |name| {
        report
            .component(name)
            .is_some_and(|c| c.status == Status::Unhealthy)
    };
    if unhealthy("store") {
        Some("not ready: the store is not writable")
    } else if unhealthy("queue") {
        Some("not ready: the queue is not answering")
    } else {
        None
    }
}

#[utoipa::path(get, path = "/health/ready", tag = "health", security(()),
    responses((status = 200, description = "The store is writable and the queue answers", body = Probe),
        (status = 503, description = "The store is not writable or the queue does not answer", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = report(&state).await?;
    if let Some(why) = not_ready(&report) {
        return Err(ApiError::Unavailable(why.into()));
    }
    Ok(HttpResponse::Ok().json(Probe { status: "ready" }))
}

#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses((status = 200, description = "Healthy or degraded; details for admins only", body = HealthBody),
        (status = 503, description = "A component is unhealthy (same body)", body = HealthBody)))]
async fn detail(
    state: web::Data<AppState>,
    principal: Option<Principal>,
) -> Result<HttpResponse, ApiError> {
    let admin = principal.is_some_and(|p| p.is_admin());
    let body = health(&state, admin).await?;
    let mut response = match body.status {
        HealthStatus::Unhealthy => HttpResponse::ServiceUnavailable(),
        _ => HttpResponse::Ok(),
    };
    Ok(response.json(body))
}

/// The relay's health; the reasons and figures only for `admin`.
pub(crate) async fn health(state: &AppState, admin: bool) -> Result<HealthBody, ApiError> {
    let report = report(state).await?;
    let limits = &state.limits.limiter;
    // The limiter notices a failing Redis on every call: read its state now, not from the report.
    let limiter_status = if limits.degraded() {
        Status::Degraded
    } else {
        Status::Healthy
    };
    let components: Vec<ComponentHealth> = report
        .components
        .iter()
        .cloned()
        .map(|mut c| {
            if c.name == "ratelimit" && c.status != limiter_status {
                c.status = limiter_status;
                c.reason = match limiter_status {
                    Status::Degraded => "Redis is failing; limits are per process".into(),
                    _ => limits.backend_name().into(),
                };
            }
            c
        })
        .collect();
    let status = HealthReport::worst(&components);
    let cluster = if admin {
        cluster_view(state).await
    } else {
        None
    };
    Ok(HealthBody {
        cluster,
        status: status.into(),
        components: components
            .into_iter()
            .map(|c| ComponentBody {
                name: c.name,
                status: c.status.into(),
                reason: admin.then_some(c.reason),
            })
            .collect(),
        // Counted as they happen, not as of the report.
        restarts: admin.then(|| beepmyphone_actors::health::restarts(&state.graph.metrics)),
        checked_at: admin.then(|| beepmyphone_actors::model::rfc3339(report.checked_at)),
        queue: if admin {
            report
                .queue
                .as_ref()
                .and_then(|q| serde_json::to_value(q).ok())
        } else {
            None
        },
        sockets: if admin {
            report
                .sockets
                .as_ref()
                .map(|s| json!({"devices": s.devices, "sockets": s.sockets}))
        } else {
            None
        },
        pool: if admin {
            serde_json::to_value(state.store.stats()).ok()
        } else {
            None
        },
        rate_limit: admin.then(|| RateLimitBody {
            backend: limits.backend_name(),
            status: limiter_status.into(),
        }),
    })
}

/// The cluster as Redis has it now, when clustered.
async fn cluster_view(state: &AppState) -> Option<serde_json::Value> {
    let nodes = state.cluster.view(state.clock.now_ms()).await?;
    let node = state.cluster.node();
    Some(match nodes {
        Ok(nodes) => json!({"node": node, "nodes": nodes}),
        Err(e) => json!({"node": node, "error": e.to_string()}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(states: &[(&str, Status)]) -> HealthReport {
        let components: Vec<ComponentHealth> = states
            .iter()
            .map(|(name, status)| ComponentHealth {
                name: (*name).to_owned(),
                status: *status,
                reason: String::new(),
            })
            .collect();
        HealthReport {
            status: HealthReport::worst(&components),
            components,
            restarts: 0,
            checked_at: 0,
            queue: None,
            sockets: None,
        }
    }

    #[test]
    fn only_the_store_and_the_queue_decide_readiness() {
        use Status::{Degraded, Healthy, Unhealthy};
        let others_down = report(&[
            ("queue", Healthy),
            ("store", Degraded),
            ("redis", Unhealthy),
            ("disk", Unhealthy),
            ("queue_lag", Unhealthy),
            ("keys", Unhealthy),
        ]);
        assert_eq!(not_ready(&others_down), None);
        assert_eq!(
            not_ready(&report(&[("queue", Healthy), ("store", Unhealthy)])),
            Some("not ready: the store is not writable")
        );
        assert_eq!(
            not_ready(&report(&[("queue", Unhealthy), ("store", Healthy)])),
            Some("not ready: the queue is not answering")
        );
    }
}
