//! The TLS certificate: `GET /tls` (its status) and `POST /tls/renew` (a new one now), admin
//! only. The renewal goes through the
//! [`CertificateManager`](beepmyphone_actors::certs::CertificateManager), which issues on a
//! blocking thread and serves the new certificate to new connections before it answers.

use actix_web::{web, HttpResponse};
use serde::Serialize;

use beepmyphone_actors::certs::{Renew, TlsSnapshot};
use beepmyphone_actors::model::rfc3339;
use beepmyphone_actors::ports::{Action, CertificateInfo, Outcome, TlsError};

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::api::routes::keys::audited_result;
use crate::error::ApiError;
use crate::state::AppState;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(get_tls, renew_certificate))]
pub struct Api;

/// Registers the routes (under `/api/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tls", web::get().to(get_tls))
        .route("/tls/renew", web::post().to(renew_certificate));
}

/// The certificate in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateView {
    /// `self-signed`, `local-ca` or `files`.
    pub(crate) mode: String,
    pub(crate) subject: String,
    pub(crate) issuer: String,
    /// The host names and addresses it covers.
    pub(crate) hosts: Vec<String>,
    pub(crate) not_before: String,
    pub(crate) not_after: String,
    /// Whole days until it expires (negative once expired).
    pub(crate) days_left: i64,
    /// `sha256:` and the hex SHA-256 of the certificate.
    pub(crate) fingerprint: String,
    /// Its key, e.g. `ECDSA P-256`.
    pub(crate) key: String,
    /// The fingerprint devices pin (the local CA's, or a self-signed certificate's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pin: Option<String>,
    /// When the local CA expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ca_not_after: Option<String>,
}

impl CertificateView {
    fn of(cert: &CertificateInfo, now_ms: i64) -> Self {
        Self {
            mode: cert.mode.clone(),
            subject: cert.subject.clone(),
            issuer: cert.issuer.clone(),
            hosts: cert.hosts.clone(),
            not_before: rfc3339(cert.not_before_ms),
            not_after: rfc3339(cert.not_after_ms),
            days_left: (cert.not_after_ms - now_ms).div_euclid(86_400_000),
            fingerprint: cert.fingerprint.clone(),
            key: cert.key.clone(),
            pin: cert.pin.clone(),
            ca_not_after: cert.ca_not_after_ms.map(rfc3339),
        }
    }
}

/// `GET /tls`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsView {
    /// `off`, `self-signed`, `local-ca` or `files`.
    pub(crate) mode: String,
    /// The certificate in force (absent with TLS off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) certificate: Option<CertificateView>,
    /// When the daily renewal check last ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) checked_at: Option<String>,
    /// The last failed renewal or reload, until one succeeds (the certificate in force stays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

impl TlsView {
    fn of(state: &AppState, snapshot: Option<TlsSnapshot>) -> Self {
        let now = state.clock.now_ms();
        match snapshot {
            None => Self {
                mode: state.settings.tls.mode.as_str().to_owned(),
                certificate: None,
                checked_at: None,
                last_error: None,
            },
            Some(snapshot) => Self {
                mode: snapshot.certificate.mode.clone(),
                certificate: Some(CertificateView::of(&snapshot.certificate, now)),
                checked_at: Some(rfc3339(snapshot.checked_at_ms)),
                last_error: snapshot.last_error,
            },
        }
    }
}

#[utoipa::path(get, path = "/api/v1/tls", tag = "tls",
    responses((status = 200, description = "The TLS mode and the certificate in force", body = TlsView)))]
async fn get_tls(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    Ok(HttpResponse::Ok().json(status(&state)))
}

/// The TLS mode and the certificate in force.
pub(crate) fn status(state: &AppState) -> TlsView {
    let snapshot = state.tls.as_ref().map(|tls| tls.status.snapshot());
    TlsView::of(state, snapshot)
}

#[utoipa::path(post, path = "/api/v1/tls/renew", tag = "tls",
    responses((status = 200, description = "The new certificate, already served to new connections", body = TlsView),
        (status = 409, description = "TLS is off, or the certificate comes from files (replace them; the relay reloads them)", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn renew_certificate(
    state: web::Data<AppState>,
    source: AuditContext,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(renew(&state, &source, &principal).await?))
}

/// Renews the certificate now (admin; self-signed and local-ca), recorded before and after.
pub(crate) async fn renew(
    state: &AppState,
    source: &AuditContext,
    principal: &Principal,
) -> Result<TlsView, ApiError> {
    principal.require_admin()?;
    let Some(tls) = &state.tls else {
        return Err(ApiError::Conflict(
            "TLS is off (tls.mode = \"off\"): there is no certificate to renew".into(),
        ));
    };
    let event = |outcome| source.by(principal, Action::CertificateRenewed, outcome);
    state.audit.record_now(event(Outcome::Requested)).await?;
    let renewed = tls
        .manager
        .send(Renew {
            requested_by: principal.key(),
        })
        .await
        .map_err(|_| {
            ApiError::Unavailable("the certificate manager is restarting; try again".into())
        })
        .and_then(|result| {
            result.map_err(|e| match e {
                TlsError::CannotIssue => ApiError::Conflict(e.to_string()),
                TlsError::Unavailable(why) => ApiError::Unavailable(why),
                TlsError::Invalid(why) => ApiError::Internal(why),
            })
        });
    audited_result(
        state,
        renewed,
        |cert| event(Outcome::Ok).on(cert.fingerprint.clone()),
        event,
    )
    .await?;
    Ok(TlsView::of(state, Some(tls.status.snapshot())))
}
