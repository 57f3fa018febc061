//! Blocked IPs (admin only): `GET /api/v1/blocks` lists the IPs blocked after repeated rate-limit
//! violations, `DELETE /api/v1/blocks/{ip}` lifts a block early.

use std::net::IpAddr;

use actix_web::{web, HttpResponse};

use beepmyphone_actors::ports::{Action, Outcome};

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_blocks, delete_block))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/blocks", web::get().to(list_blocks))
        .route("/blocks/{ip}", web::delete().to(delete_block));
}

/// An IP address blocked after repeated rate-limit violations.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockView {
    pub(crate) ip: String,
    /// When the block ends (RFC 3339).
    pub(crate) blocked_until: String,
    pub(crate) retry_after_seconds: u64,
}

/// `GET /blocks`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct BlockList {
    items: Vec<BlockView>,
}

#[utoipa::path(get, path = "/api/v1/blocks", tag = "limits",
    responses((status = 200, description = "Blocked IP addresses", body = BlockList)))]
async fn list_blocks(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    Ok(HttpResponse::Ok().json(BlockList {
        items: blocks(&state).await,
    }))
}

/// The IPs blocked now.
pub(crate) async fn blocks(state: &AppState) -> Vec<BlockView> {
    let now = state.clock.now_ms();
    state
        .limits
        .limiter
        .blocks(now)
        .await
        .into_iter()
        .map(|b| BlockView {
            ip: b.ip.to_string(),
            blocked_until: beepmyphone_actors::model::rfc3339(b.until_ms),
            retry_after_seconds: ((b.until_ms - now).max(0) as u64).div_ceil(1_000),
        })
        .collect()
}

#[utoipa::path(delete, path = "/api/v1/blocks/{ip}", tag = "limits",
    params(("ip" = String, Path, description = "An IPv4 or IPv6 address")),
    responses((status = 204, description = "Unblocked")))]
async fn delete_block(
    state: web::Data<AppState>,
    source: AuditContext,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    unblock(&state, &source, &principal, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Lifts the block of an IP (admin).
pub(crate) async fn unblock(
    state: &AppState,
    source: &AuditContext,
    principal: &Principal,
    raw: &str,
) -> Result<(), ApiError> {
    principal.require_admin()?;
    let ip: IpAddr = raw.parse().map_err(|_| {
        ApiError::NotFound(format!("no block for {raw}: not an IPv4 or IPv6 address"))
    })?;
    let lifted = state
        .limits
        .limiter
        .unblock(ip, state.clock.now_ms())
        .await
        .map_err(|_| {
            ApiError::Unavailable(
                "the shared block list in Redis cannot be reached; try again".into(),
            )
        })?;
    if lifted {
        state.audit.record(
            source
                .by(principal, Action::IpUnblocked, Outcome::Ok)
                // An IP is personal data: in the sealed details, not the subject.
                .with_details(serde_json::json!({ "ip": ip.to_string() })),
        );
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("{ip} is not blocked")))
    }
}
