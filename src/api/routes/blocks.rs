//! Blocked IPs (admin only): `GET /api/v1/blocks` lists the IPs blocked after repeated rate-limit
//! violations, `DELETE /api/v1/blocks/{ip}` lifts a block early.

use std::net::IpAddr;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::api::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/blocks", web::get().to(list_blocks))
        .route("/blocks/{ip}", web::delete().to(delete_block));
}

async fn list_blocks(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let now = state.clock.now_ms();
    let items: Vec<_> = state
        .limits
        .limiter
        .blocks(now)
        .into_iter()
        .map(|b| {
            json!({
                "ip": b.ip,
                "blockedUntil": beepmyphone_actors::model::rfc3339(b.until_ms),
                "retryAfterSeconds": ((b.until_ms - now).max(0) as u64).div_ceil(1_000),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

async fn delete_block(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let raw = path.into_inner();
    let ip: IpAddr = raw
        .parse()
        .map_err(|_| ApiError::field("ip", "must be an IPv4 or IPv6 address"))?;
    if state.limits.limiter.unblock(ip, state.clock.now_ms()) {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("{ip} is not blocked")))
    }
}
