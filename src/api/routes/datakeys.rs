//! Data-encryption keys: `GET /keys/data` and `POST /keys/data/rotate` (admin). Key material is
//! never shown: only ids, purposes, algorithms, states, and the re-encryption job's progress.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use beepmyphone_actors::keys::{DataKeyReport, DataStatus, RotateData};
use beepmyphone_actors::model::rfc3339;
use beepmyphone_actors::ports::DataKeyInfo;
use beepmyphone_actors::reencrypt::ProgressSnapshot;

use super::keys::{audited_result, key_manager_error, key_manager_unavailable};
use beepmyphone_actors::ports::Action;
use beepmyphone_actors::ports::Outcome;

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list_data_keys, rotate_data_keys))]
pub struct Api;

/// Registers the routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/keys/data", web::get().to(list_data_keys))
        .route("/keys/data/rotate", web::post().to(rotate_data_keys));
}

/// A data key (never its bytes).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataKeyView {
    pub(crate) id: u32,
    /// `content`, `devices`, `sessions` or `index`.
    pub(crate) purpose: String,
    /// `aes-256-gcm`, `xchacha20-poly1305`, or `hmac-sha256` for the index key.
    pub(crate) algorithm: String,
    /// `current`, `decrypt_only` or `retired`.
    pub(crate) state: String,
    pub(crate) created_at: String,
    /// Encryptions reserved under it so far (AES-GCM keys are replaced before 2^30).
    pub(crate) encryptions_reserved: u64,
}

impl From<&DataKeyInfo> for DataKeyView {
    fn from(key: &DataKeyInfo) -> Self {
        Self {
            id: key.id,
            purpose: key.purpose.clone(),
            algorithm: key.algorithm.clone(),
            state: key.state.clone(),
            created_at: rfc3339(key.created_ms),
            encryptions_reserved: key.reserved,
        }
    }
}

/// The re-encryption job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReencryptionView {
    /// Whether rows are being moved.
    pub(crate) running: bool,
    /// Rows left (under decrypt-only keys, or from before encryption).
    pub(crate) remaining: u64,
    /// Rows moved since start.
    pub(crate) moved: u64,
    /// Rows that did not open since start (left as they are; see `/health`).
    pub(crate) failed: u64,
}

impl From<ProgressSnapshot> for ReencryptionView {
    fn from(p: ProgressSnapshot) -> Self {
        Self {
            running: p.running,
            remaining: p.remaining,
            moved: p.moved,
            failed: p.failed,
        }
    }
}

/// The data keys and the re-encryption job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataKeysView {
    /// Every key of the ring, oldest first (retired keys included, without their bytes).
    pub(crate) items: Vec<DataKeyView>,
    /// Ids of keys made by this call (rotation only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) created: Vec<u32>,
    pub(crate) reencryption: ReencryptionView,
}

fn view(state: &AppState, report: &DataKeyReport) -> DataKeysView {
    DataKeysView {
        items: report.keys.iter().map(DataKeyView::from).collect(),
        created: report.created.clone(),
        reencryption: state.reencrypt.snapshot().into(),
    }
}

#[utoipa::path(get, path = "/api/v1/keys/data", tag = "keys",
    responses((status = 200, description = "The data-encryption keys (as of the key manager's last step, at most 10 s ago) and the re-encryption job", body = DataKeysView)))]
async fn list_data_keys(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    Ok(HttpResponse::Ok().json(data_keys(&state).await?))
}

/// The data keys and the re-encryption job.
pub(crate) async fn data_keys(state: &AppState) -> Result<DataKeysView, ApiError> {
    let report = state
        .key_manager
        .send(DataStatus)
        .await
        .map_err(|_| key_manager_unavailable())?
        .unwrap_or_default();
    // `created` belongs to the rotation's answer only.
    let report = DataKeyReport {
        created: Vec::new(),
        ..report
    };
    Ok(view(state, &report))
}

#[utoipa::path(post, path = "/api/v1/keys/data/rotate", tag = "keys",
    responses((status = 201, description = "New data keys for notification contents, devices and sessions: new values are sealed under them from the answer on; older rows are re-encrypted in the background", body = DataKeysView),
        (status = 429, description = "Rate limited, or the previous data-key rotation was less than 60 s ago; `Retry-After` says when to retry", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn rotate_data_keys(
    state: web::Data<AppState>,
    source: AuditContext,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(rotate(&state, &source, &principal).await?))
}

/// Rotates the data keys (admin), recorded before and after; older rows move in the background.
pub(crate) async fn rotate(
    state: &AppState,
    source: &AuditContext,
    principal: &Principal,
) -> Result<DataKeysView, ApiError> {
    principal.require_admin()?;
    let event = |outcome| source.by(principal, Action::DataKeyRotated, outcome);
    state.audit.record_now(event(Outcome::Requested)).await?;
    let report = state
        .key_manager
        .send(RotateData {
            requested_by: principal.key(),
        })
        .await
        .map_err(|_| key_manager_unavailable())
        .and_then(|r| r.map_err(key_manager_error));
    let report = audited_result(
        state,
        report,
        |report| {
            let ids: Vec<String> = report.created.iter().map(u32::to_string).collect();
            event(Outcome::Ok)
                .on(ids.join(","))
                .with_details(serde_json::json!({ "created": report.created }))
        },
        event,
    )
    .await?;
    Ok(view(state, &report))
}
