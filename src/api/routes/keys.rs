//! Signing keys: `GET /.well-known/jwks.json` (anyone), `GET /keys` and `POST /keys/rotate`
//! (admin).
//!
//! The JWK set and the key list are read from the snapshot the key manager publishes; only a
//! rotation goes through the [`KeyManager`](beepmyphone_actors::keys::KeyManager), which generates
//! the key on a blocking thread and publishes the new snapshot before it answers, so the next
//! token issued carries the new `kid`.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{web, HttpResponse};
use serde::Serialize;

use beepmyphone_actors::keys::{KeyManagerError, KeyStatus, Rotate};
use beepmyphone_actors::model::rfc3339;

use beepmyphone_actors::ports::{Action, AuditEvent, Outcome};

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::api::schemas::Page;
use crate::error::ApiError;
use crate::state::AppState;

/// Seconds clients may cache the JWK set. Short: a rotation should show within a minute.
pub const JWKS_MAX_AGE_SECONDS: u32 = 60;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(get_jwks, list_keys, rotate_keys))]
pub struct Api;

/// Registers the admin routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/keys", web::get().to(list_keys))
        .route("/keys/rotate", web::post().to(rotate_keys));
}

/// Registers `/.well-known/jwks.json` (at the root, not under `/api/v1`).
pub fn configure_well_known(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/jwks.json", web::get().to(get_jwks));
}

/// A signing key as the admin API shows it (never any private part).
/// A signing key (never its private half).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub(crate) kid: String,
    pub(crate) created_at: String,
    /// `current` (signs new tokens), `verifying` or `retired`.
    pub(crate) state: &'static str,
    /// When a verifying key stops verifying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retires_at: Option<String>,
}

impl From<&KeyStatus> for KeyView {
    fn from(key: &KeyStatus) -> Self {
        Self {
            kid: key.kid.clone(),
            created_at: rfc3339(key.created_ms),
            state: key.state.as_str(),
            retires_at: key.retires_at_ms.map(rfc3339),
        }
    }
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "keys", security(()),
    responses((status = 200, description = "The public keys that verify access tokens (RFC 7517)", body = Object)))]
async fn get_jwks(state: web::Data<AppState>) -> HttpResponse {
    let keys = state.keys.load();
    HttpResponse::Ok()
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(JWKS_MAX_AGE_SECONDS),
        ]))
        .json(keys.jwks())
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, description = "Signing keys, newest first", body = Page<KeyView>)))]
async fn list_keys(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    Ok(HttpResponse::Ok().json(Page {
        items: signing_keys(&state),
        next_cursor: None,
    }))
}

/// The signing keys, newest (current) first.
pub(crate) fn signing_keys(state: &AppState) -> Vec<KeyView> {
    let keys = state.keys.load();
    keys.keys().iter().rev().map(KeyView::from).collect()
}

#[utoipa::path(post, path = "/api/v1/keys/rotate", tag = "keys",
    responses((status = 201, description = "The new signing key", body = KeyView),
        (status = 429, description = "Rate limited (see `Retry-After` and the `RateLimit` headers), or the rotation was refused: the previous one was less than 60 s ago, or 8 keys are in force; `Retry-After` says when to retry", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn rotate_keys(
    state: web::Data<AppState>,
    source: AuditContext,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(rotate(&state, &source, &principal).await?))
}

/// Rotates the signing key (admin), recorded before and after.
pub(crate) async fn rotate(
    state: &AppState,
    source: &AuditContext,
    principal: &Principal,
) -> Result<KeyView, ApiError> {
    principal.require_admin()?;
    let event = |outcome| source.by(principal, Action::SigningKeyRotated, outcome);
    // A key rotation is never unrecorded: the request first, then its result, both durable
    // before the answer.
    state.audit.record_now(event(Outcome::Requested)).await?;
    let created = state
        .key_manager
        .send(Rotate {
            requested_by: principal.key(),
        })
        .await
        .map_err(|_| key_manager_unavailable())
        .and_then(|r| r.map_err(key_manager_error));
    let created = audited_result(
        state,
        created,
        |created| event(Outcome::Ok).on(created.kid.clone()),
        event,
    )
    .await?;
    Ok(KeyView::from(&created))
}

/// Records the result of a key operation (its success through `ok`, a refusal or failure with
/// its reason) durably, and hands the result on.
pub async fn audited_result<T>(
    state: &AppState,
    result: Result<T, ApiError>,
    ok: impl FnOnce(&T) -> AuditEvent,
    other: impl FnOnce(Outcome) -> AuditEvent,
) -> Result<T, ApiError> {
    let event = match &result {
        Ok(value) => ok(value),
        Err(e @ ApiError::RateLimited { .. }) => {
            other(Outcome::Denied).with_details(serde_json::json!({ "reason": e.to_string() }))
        }
        Err(e) => {
            other(Outcome::Failed).with_details(serde_json::json!({ "reason": e.to_string() }))
        }
    };
    state.audit.record_result(event, &state.log).await;
    result
}

/// The answer when the key manager cannot be reached.
pub fn key_manager_unavailable() -> ApiError {
    ApiError::Unavailable("the key manager is restarting; try again".into())
}

/// A key manager's refusal or failure as an API error: a refused rotation is 429 with
/// `Retry-After`.
pub fn key_manager_error(e: KeyManagerError) -> ApiError {
    match e {
        KeyManagerError::Unavailable => key_manager_unavailable(),
        KeyManagerError::Refused(refused) => ApiError::RateLimited {
            retry_after_secs: refused.retry_after_secs(),
            detail: refused.to_string(),
        },
        KeyManagerError::Ring(e) => ApiError::Internal(e.to_string()),
    }
}
