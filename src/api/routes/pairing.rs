//! Pairing and device tokens: `POST /pairing-codes`, `POST /devices/pair`, `POST /auth/refresh`.
//!
//! A pairing code is single use; exchanging it creates the device, its first refresh token (a new
//! family) and an access token. A refresh token is single use too: each refresh returns a new pair,
//! and presenting a used one again revokes its whole family (someone copied it).

use crate::store::{Db, WriteTransaction};
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use beepmyphone_actors::feed::Activity;
use beepmyphone_actors::model::{rfc3339, DeviceId};
use beepmyphone_actors::queue::UpsertDevice;

use beepmyphone_actors::ports::{Action, ActorKind, Outcome};

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::api::body::{Json, OptionalJson};
use crate::api::middleware::RequestLog;
use crate::api::schemas::{check, DeviceTokens, PairRequest, PairingCodeRequest, RefreshRequest};
use crate::crypto::secrets::{
    hash_secret, new_pairing_code, new_refresh_token, normalize_pairing_code, ExposeSecret,
    SecretString,
};
use crate::error::ApiError;
use crate::security::jwt::JwtKeys;
use crate::state::AppState;
use crate::store::devices::DeviceRow;
use crate::store::tokens::RefreshTokenRow;
use crate::store::{devices, pairing, tokens, Store, StoreError};

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_pairing_code, pair_device, refresh_tokens))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/pairing-codes", web::post().to(create_pairing_code))
        .route("/devices/pair", web::post().to(pair_device))
        .route("/auth/refresh", web::post().to(refresh_tokens));
}

/// A new pairing code.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingCodeResponse {
    /// Show it to the device's user once; it works once.
    pub code: String,
    /// When it stops working (RFC 3339).
    pub expires_at: String,
    /// The same, epoch milliseconds (not serialised).
    #[serde(skip)]
    pub expires_at_ms: i64,
}

/// What a pairing QR code holds: `beepmyphone://pair?server=…&code=…`, and `&ca=sha256:…` when
/// the device should pin the relay's CA (shown by `beepmyphone pairing-code` and the dashboard).
pub fn pairing_link(server: &str, code: &str, pin: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("server", server)
        .append_pair("code", code);
    if let Some(pin) = pin {
        query.append_pair("ca", pin);
    }
    format!("beepmyphone://pair?{}", query.finish())
}

/// Creates a pairing code in the store; used by the API and by `beepmyphone pairing-code`.
pub fn mint_pairing_code(
    conn: &mut Db,
    now_ms: i64,
    ttl_seconds: u64,
) -> Result<(SecretString, i64), StoreError> {
    let code = new_pairing_code();
    let normal = normalize_pairing_code(code.expose_secret())
        .ok_or_else(|| StoreError::Other("generated a bad code".into()))?;
    let expires_at = now_ms + i64::try_from(ttl_seconds).unwrap_or(0) * 1_000;
    pairing::insert(conn, &hash_secret(&normal), now_ms, expires_at)?;
    Ok((code, expires_at))
}

#[utoipa::path(post, path = "/api/v1/pairing-codes", tag = "pairing",
    request_body(content = Option<PairingCodeRequest>, description = "May be empty."),
    responses((status = 201, description = "A single-use pairing code", body = PairingCodeResponse)))]
async fn create_pairing_code(
    state: web::Data<AppState>,
    principal: Principal,
    source: AuditContext,
    OptionalJson(request): OptionalJson<PairingCodeRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created()
        .json(new_pairing_code_for(&state, &principal, &source, request).await?))
}

/// Mints a pairing code for an admin (recorded in the audit log).
pub(crate) async fn new_pairing_code_for(
    state: &AppState,
    principal: &Principal,
    source: &AuditContext,
    request: PairingCodeRequest,
) -> Result<PairingCodeResponse, ApiError> {
    principal.require_admin()?;
    check(&request)?;
    let ttl = request
        .ttl_seconds
        .unwrap_or(state.settings.auth.pairing_code_ttl_seconds);
    let now = state.clock.now_ms();
    let (code, expires_at) = state
        .store
        .write(move |conn| {
            let _ = pairing::purge(conn, now);
            mint_pairing_code(conn, now, ttl)
        })
        .await?;
    // The code itself is a secret: only its expiry is recorded.
    state.audit.record(
        source
            .by(principal, Action::PairingCodeCreated, Outcome::Ok)
            .with_details(serde_json::json!({ "expiresAt": rfc3339(expires_at) })),
    );
    Ok(PairingCodeResponse {
        code: code.expose_secret().to_owned(),
        expires_at: rfc3339(expires_at),
        expires_at_ms: expires_at,
    })
}

/// Issues an access token and a refresh token (in `family`) for a device, and stores the latter.
async fn issue_tokens(
    state: &AppState,
    conn_work: impl FnOnce(&mut Db, &RefreshTokenRow) -> Result<(), ApiError> + Send + 'static,
    device: DeviceId,
    family: String,
) -> Result<DeviceTokens, ApiError> {
    let settings = &state.settings.auth;
    let now = state.clock.now_ms();
    let refresh = new_refresh_token();
    let row = RefreshTokenRow {
        id: ulid::Ulid::new().to_string(),
        device_id: device.to_string(),
        family_id: family,
        token_hash: hash_secret(refresh.expose_secret()),
        created_at: now,
        expires_at: now + i64::try_from(settings.refresh_token_ttl_seconds).unwrap_or(0) * 1_000,
        used_at: None,
        revoked_at: None,
    };
    let store: Store = state.store.clone();
    let keys: Arc<JwtKeys> = state.keys.load_full();
    let ttl = settings.access_token_ttl_seconds;
    let signer_device = device.clone();
    // One blocking task: the store work, the refresh token row, and the RSA signature.
    let access = tokio::task::spawn_blocking(move || -> Result<String, ApiError> {
        store.writer()?.immediate_transaction(|conn| {
            conn_work(conn, &row)?;
            tokens::insert_refresh(conn, &row).map_err(StoreError::from)?;
            Ok::<(), ApiError>(())
        })?;
        let (token, _) = keys
            .sign_access(&signer_device, now / 1_000, ttl)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(token)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(DeviceTokens {
        device_id: device.to_string(),
        access_token: access,
        refresh_token: refresh.expose_secret().to_owned(),
        token_type: "Bearer".into(),
        expires_in: settings.access_token_ttl_seconds,
        refresh_expires_in: settings.refresh_token_ttl_seconds,
    })
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::from(StoreError::from(e))
    }
}

#[utoipa::path(post, path = "/api/v1/devices/pair", tag = "pairing", security(()),
    request_body = PairRequest,
    responses((status = 201, description = "The device exists; its first tokens", body = DeviceTokens),
        (status = 409, description = "The code is invalid, used or expired", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn pair_device(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    Json(request): Json<PairRequest>,
) -> Result<HttpResponse, ApiError> {
    check(&request)?;
    let refused = |state: &AppState| {
        state.audit.record(source.event(
            Action::DevicePaired,
            crate::api::audited::anonymous(),
            Outcome::Denied,
        ));
        ApiError::Conflict("the pairing code is invalid, used or expired".into())
    };
    let Some(code) = normalize_pairing_code(&request.code) else {
        return Err(refused(&state));
    };
    let code_hash = hash_secret(&code);
    let now = state.clock.now_ms();
    let device = DeviceId::generate();
    let row = DeviceRow {
        id: device.to_string(),
        name: request.name,
        platform: request.platform,
        app_version: request.app_version,
        enabled: true,
        min_priority: 0,
        quiet_start: None,
        quiet_end: None,
        quiet_tz: None,
        created_at: now,
        last_seen_at: None,
        tokens_valid_after: 0,
        groups: devices::normalise_groups(request.groups.unwrap_or_default()),
        e2e_public_key: request
            .e2e_key
            .as_deref()
            .map(crate::crypto::e2e::decode_key)
            .transpose()
            .map_err(|_| {
                ApiError::field(
                    "e2eKey",
                    "must be an X25519 public key: 32 bytes as base64url",
                )
            })?,
    };
    let policy = row.policy()?;
    let (device_name, platform) = (row.name.clone(), row.platform.clone());
    let family = ulid::Ulid::new().to_string();
    let cipher = state.store.cipher()?.clone();
    let tokens = issue_tokens(
        &state,
        move |conn, _| {
            if !pairing::consume(conn, &code_hash, now)? {
                return Err(ApiError::Conflict(
                    "the pairing code is invalid, used or expired".into(),
                ));
            }
            devices::insert(conn, &cipher, &row)?;
            Ok(())
        },
        device.clone(),
        family,
    )
    .await
    .map_err(|e| match e {
        ApiError::Conflict(_) => refused(&state),
        other => other,
    })?;
    state.audit.record(
        source
            .event(
                Action::DevicePaired,
                (ActorKind::Device, Some(device.to_string())),
                Outcome::Ok,
            )
            .on(device.to_string())
            .with_details(serde_json::json!({ "name": device_name, "platform": platform })),
    );
    state.graph.feed.emit(|| Activity::Paired {
        device: device.clone(),
        name: device_name,
        platform,
        at: now,
    });
    // Queued before the answer goes out, so a publish that follows it finds the device; a
    // restarting queue processes it after reloading (the store has the device either way).
    state.graph.queue.do_send(UpsertDevice {
        device: device.clone(),
        policy,
    });
    state.cluster.device_changed(&device);
    slog::info!(log, "device paired"; "device" => %device);
    Ok(HttpResponse::Created().json(tokens))
}

#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "pairing", security(()),
    request_body = RefreshRequest,
    responses((status = 200, description = "A new token pair; the presented refresh token is used up", body = DeviceTokens)))]
async fn refresh_tokens(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    Json(request): Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    check(&request)?;
    let hash = hash_secret(&request.refresh_token);
    let now = state.clock.now_ms();
    let invalid = || ApiError::Unauthorized("the refresh token is invalid, used or expired".into());
    let lookup = hash.clone();
    let row = state
        .store
        .run(move |conn| Ok(tokens::refresh_by_hash(conn, &lookup)?))
        .await?
        .ok_or_else(invalid)?;
    if row.revoked_at.is_some() || row.expires_at <= now {
        return Err(invalid());
    }
    if row.used_at.is_some() {
        // Reuse of a rotated token: someone else has a copy. Revoke the family and every access
        // token issued to the device so far, and close its sockets.
        let (family, device) = (row.family_id.clone(), row.device_id.clone());
        state
            .store
            .write(move |conn| {
                tokens::revoke_family(conn, &family, now)?;
                devices::revoke_tokens(conn, &device, now)?;
                Ok(())
            })
            .await?;
        state.cluster.kick(
            &DeviceId::from_trusted(row.device_id.as_str()),
            crate::ws::protocol::close::UNAUTHORIZED,
            "tokens revoked",
        );
        slog::warn!(log, "refresh token reused; family and access tokens revoked"; "device" => &row.device_id);
        state.audit.record(
            source
                .event(
                    Action::RefreshReuse,
                    crate::api::audited::anonymous(),
                    Outcome::Denied,
                )
                .on(row.device_id.clone())
                .with_details(serde_json::json!({ "family": row.family_id, "revoked": true })),
        );
        return Err(invalid());
    }
    let device = DeviceId::from_trusted(row.device_id.as_str());
    let used_id = row.id.clone();
    let tokens = issue_tokens(
        &state,
        move |conn, _| {
            if !tokens::use_refresh(conn, &used_id, now)? {
                return Err(ApiError::Unauthorized(
                    "the refresh token is invalid, used or expired".into(),
                ));
            }
            Ok(())
        },
        device.clone(),
        row.family_id,
    )
    .await?;
    state.audit.record(
        source
            .event(
                Action::DeviceRefreshed,
                (ActorKind::Device, Some(device.to_string())),
                Outcome::Ok,
            )
            .on(device.to_string()),
    );
    Ok(HttpResponse::Ok().json(tokens))
}
