//! Logins and logouts: `POST /auth/login`, `POST /auth/logout`, `GET /auth/sessions`,
//! `DELETE /auth/sessions/{id}`. (`POST /auth/refresh` is in [`super::pairing`].)
//!
//! Login checks the password through the [`crate::security::passwords::PasswordManager`] (off the
//! async workers, a bounded number at once); an unknown name is checked against a dummy hash, so a
//! wrong name and a wrong password get the same 401 in the same time. Success creates a new session
//! (a fresh id every time) and sets it as an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the
//! request came over TLS); the body carries the CSRF token the dashboard must echo on state-changing
//! requests. Logout with a device access token revokes that token and the device's refresh family;
//! with a session cookie it ends the session.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Serialize;

use beepmyphone_actors::model::rfc3339;

use beepmyphone_actors::ports::{Action, ActorKind, Outcome};

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::api::body::Json;
use crate::api::middleware::RequestLog;
use crate::api::schemas::{check, LoginRequest, Page};
use crate::crypto::secrets::ExposeSecret;
use crate::domain::AdminId;
use crate::error::ApiError;
use crate::security::passwords::PasswordError;
use crate::security::revocation::RevocationError;
use crate::security::sessions::{NewSession, SessionError, SESSION_COOKIE};
use crate::state::AppState;
use crate::store::admins;
use crate::ws::protocol::close;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(login, logout, list_sessions, delete_session))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/login", web::post().to(login))
        .route("/auth/logout", web::post().to(logout))
        .route("/auth/sessions", web::get().to(list_sessions))
        .route("/auth/sessions/{id}", web::delete().to(delete_session));
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Unavailable(_) => {
                ApiError::Unavailable("sessions cannot be reached right now; try again".into())
            }
            SessionError::Store(e) => e.into(),
            SessionError::Record(e) => ApiError::Internal(e),
        }
    }
}

impl From<RevocationError> for ApiError {
    fn from(e: RevocationError) -> Self {
        match e {
            RevocationError::Unavailable(_) => ApiError::Unavailable(
                "the revocation list cannot be reached right now; try again".into(),
            ),
            RevocationError::Store(e) => e.into(),
        }
    }
}

/// A new admin session (the id travels in the `beep_session` cookie).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct LoginResponse {
    /// Who logged in.
    username: String,
    /// Send as `X-CSRF-Token` on state-changing requests that carry the cookie.
    csrf_token: String,
    /// The session's absolute end (RFC 3339).
    expires_at: String,
}

/// One session in `GET /auth/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    id: String,
    created_at: String,
    last_seen_at: String,
    expires_at: String,
    current: bool,
}

const WRONG_CREDENTIALS: &str = "the username or password is wrong";

/// The cookie's attributes after its value: `Path=/; HttpOnly; SameSite=Strict`, `Secure` when the
/// request came over TLS.
fn cookie_attributes(req: &HttpRequest, max_age_s: i64) -> String {
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|state| crate::api::headers::trusted_proxies(state))
        .unwrap_or_default();
    let secure = if crate::api::headers::request_over_tls(req, &trusted) {
        "; Secure"
    } else {
        ""
    };
    format!("Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

fn set_cookie(
    response: &mut HttpResponseBuilder,
    value: &str,
    attributes: &str,
) -> Result<(), ApiError> {
    let cookie = HeaderValue::from_str(&format!("{SESSION_COOKIE}={value}; {attributes}"))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    response.append_header((header::SET_COOKIE, cookie));
    Ok(())
}

fn clear_cookie(response: &mut HttpResponseBuilder, req: &HttpRequest) -> Result<(), ApiError> {
    set_cookie(response, "", &cookie_attributes(req, 0))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", security(()),
    request_body = LoginRequest,
    responses((status = 200, description = "Logged in; sets the session cookie", body = LoginResponse)))]
async fn login(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    req: HttpRequest,
    Json(request): Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let new = log_in(&state, &log, &source, request).await?;
    let mut response = HttpResponse::Ok();
    set_session_cookie(&mut response, &req, &state, &new)?;
    Ok(response.json(LoginResponse {
        username: new.session.username.clone(),
        csrf_token: new.session.csrf_token.expose_secret().to_owned(),
        expires_at: rfc3339(new.session.expires_at),
    }))
}

/// Sets the new session's cookie on `response` (and `Cache-Control: no-store`).
pub(crate) fn set_session_cookie(
    response: &mut HttpResponseBuilder,
    req: &HttpRequest,
    state: &AppState,
    new: &NewSession,
) -> Result<(), ApiError> {
    let max_age = state.sessions.absolute_ms() / 1_000;
    set_cookie(
        response,
        new.id.expose_secret(),
        &cookie_attributes(req, max_age),
    )?;
    response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    Ok(())
}

/// Checks a password login and starts a session (ending the oldest beyond the cap); every
/// attempt is recorded.
pub(crate) async fn log_in(
    state: &AppState,
    log: &RequestLog,
    source: &AuditContext,
    request: LoginRequest,
) -> Result<NewSession, ApiError> {
    check(&request)?;
    let LoginRequest { username, password } = request;
    let lookup = username.clone();
    let admin = state
        .store
        .run(move |conn| Ok(admins::by_username(conn, &lookup)?))
        .await?;
    // Unknown names are verified against the dummy hash: same work, same answer.
    let hash = admin.as_ref().map(|a| a.password_hash.clone());
    let matches = match state.passwords.verify(password, hash).await {
        Ok(matches) => matches,
        // Cannot be anyone's password (bcrypt's limit), whoever the user is.
        Err(PasswordError::TooLong) => false,
        Err(PasswordError::BadHash) => {
            slog::error!(log, "an admin's stored password hash is malformed"; "admin" => &username);
            false
        }
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let admin = match admin {
        Some(admin) if matches => admin,
        _ => {
            let tried: String = username.chars().take(64).collect();
            slog::warn!(log, "admin login refused"; "username" => &tried);
            // The name tried is sealed with the record (it may be a mistyped password).
            state.audit.record(
                source
                    .event(
                        Action::AdminLogin,
                        crate::api::audited::anonymous(),
                        Outcome::Denied,
                    )
                    .with_details(serde_json::json!({ "username": tried })),
            );
            return Err(ApiError::Unauthorized(WRONG_CREDENTIALS.into()));
        }
    };
    let new = state.sessions.create(&admin.id, &admin.username).await?;
    slog::info!(log, "admin logged in"; "admin" => &admin.username, "session" => &new.session.public_id);
    state.audit.record(
        source
            .event(
                Action::AdminLogin,
                (ActorKind::Admin, Some(admin.id.to_string())),
                Outcome::Ok,
            )
            .on(new.session.public_id.to_string())
            .with_details(serde_json::json!({ "username": admin.username })),
    );
    if new.ended > 0 {
        state.audit.record(
            source
                .event(
                    Action::SessionEnded,
                    crate::api::audited::AuditContext::system(),
                    Outcome::Ok,
                )
                .on(admin.id.to_string())
                .with_details(
                    serde_json::json!({ "reason": "session cap", "sessions": new.ended }),
                ),
        );
    }
    Ok(new)
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "The device token (and its refresh family) or the session is revoked")))]
async fn logout(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    req: HttpRequest,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    let actor = crate::api::audited::actor_of(&principal);
    match &principal {
        Principal::Device { device, jti, exp } => {
            let (device, exp) = (device.clone(), *exp);
            state.revocations.logout(&device, jti.as_str(), exp).await?;
            state
                .cluster
                .kick(&device, close::UNAUTHORIZED, "logged out");
            slog::info!(log, "device logged out; its token and refresh family are revoked"; "device" => %device);
            state.audit.record(
                source
                    .event(Action::DeviceLogout, actor, Outcome::Ok)
                    .on(device.to_string()),
            );
            Ok(HttpResponse::NoContent().finish())
        }
        Principal::Session { .. } => {
            end_session(&state, &log, &source, &principal).await?;
            let mut response = HttpResponse::NoContent();
            clear_cookie(&mut response, &req)?;
            Ok(response.finish())
        }
        Principal::Token { .. } => Err(ApiError::Forbidden(
            "API tokens do not log out; delete them with DELETE /api/v1/tokens/{id}".into(),
        )),
    }
}

/// Ends the caller's session (a session caller; anyone else is refused), recorded.
pub(crate) async fn end_session(
    state: &AppState,
    log: &RequestLog,
    source: &AuditContext,
    principal: &Principal,
) -> Result<(), ApiError> {
    let actor = crate::api::audited::actor_of(principal);
    let Principal::Session {
        admin_id,
        username,
        id_hash,
        public_id,
    } = principal
    else {
        return Err(ApiError::Forbidden(
            "this call needs an admin session (log in with a password)".into(),
        ));
    };
    state.sessions.end(id_hash, admin_id.as_str()).await?;
    slog::info!(log, "admin logged out"; "admin" => username);
    state.audit.record(
        source
            .event(Action::AdminLogout, actor, Outcome::Ok)
            .on(public_id.to_string()),
    );
    Ok(())
}

/// Clears the session cookie on `response`.
pub(crate) fn clear_session_cookie(
    response: &mut HttpResponseBuilder,
    req: &HttpRequest,
) -> Result<(), ApiError> {
    clear_cookie(response, req)
}

/// The admin and session id hash of a session caller; 403 for anyone else.
fn session_of(principal: Principal) -> Result<(AdminId, String), ApiError> {
    match principal {
        Principal::Session {
            admin_id, id_hash, ..
        } => Ok((admin_id, id_hash)),
        _ => Err(ApiError::Forbidden(
            "this call needs an admin session (log in with a password)".into(),
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth",
    responses((status = 200, description = "The caller's sessions", body = Page<SessionView>)))]
async fn list_sessions(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    let (admin_id, current) = session_of(principal)?;
    let items = state
        .sessions
        .list(admin_id.as_str())
        .await?
        .into_iter()
        .map(|s| SessionView {
            current: s.id_hash == current,
            id: s.public_id,
            created_at: rfc3339(s.created_at),
            last_seen_at: rfc3339(s.last_seen_at),
            expires_at: rfc3339(s.expires_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page {
        items,
        next_cursor: None,
    }))
}

#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth", params(("id" = String, Path, description = "a session id (ses_…)")),
    responses((status = 204, description = "The session is ended")))]
async fn delete_session(
    state: web::Data<AppState>,
    req: HttpRequest,
    source: AuditContext,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let actor = crate::api::audited::actor_of(&principal);
    let (admin_id, current) = session_of(principal)?;
    let not_found = || ApiError::NotFound(format!("no session {}", path.as_str()));
    let target = state
        .sessions
        .list(admin_id.as_str())
        .await?
        .into_iter()
        .find(|s| s.public_id == path.as_str())
        .ok_or_else(not_found)?;
    if !state
        .sessions
        .end(&target.id_hash, admin_id.as_str())
        .await?
    {
        return Err(not_found());
    }
    state.audit.record(
        source
            .event(Action::SessionEnded, actor, Outcome::Ok)
            .on(target.public_id.to_string())
            .with_details(serde_json::json!({ "reason": "deleted" })),
    );
    let mut response = HttpResponse::NoContent();
    if target.id_hash == current {
        clear_cookie(&mut response, &req)?;
    }
    Ok(response.finish())
}
