//! The auth extractor: turns `Authorization: Bearer …` into a [`Principal`].
//!
//! `bmp_…` tokens are API tokens, looked up by hash (cached after the first success); anything else
//! must be a device access token (RS256 JWT), whose device must still exist and must not have had
//! its tokens revoked after the token was issued. Tokens are only read from the header, never from
//! the URL.

use std::future::{ready, Ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};
use actix_web::{HttpMessage, HttpResponse};

use beepmyphone_actors::model::DeviceId;

use crate::error::ApiError;
use crate::security::jwt::TokenRejection;
use crate::security::secrets::{hash_secret, API_TOKEN_PREFIX};
use crate::state::{AppState, CachedToken, Scope};
use crate::store::{devices, tokens};

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// An API token.
    Token {
        /// `tok_…`
        id: String,
        /// Its scope.
        scope: Scope,
    },
    /// A paired device, by its access token.
    Device {
        /// The device.
        device: DeviceId,
        /// The access token's id.
        jti: String,
    },
}

impl Principal {
    /// Fails unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Token {
                scope: Scope::Admin,
                ..
            } => Ok(()),
            _ => Err(ApiError::Forbidden("this call needs an admin token".into())),
        }
    }

    /// Fails unless the caller may publish.
    pub fn require_publisher(&self) -> Result<(), ApiError> {
        match self {
            Principal::Token { .. } => Ok(()),
            Principal::Device { .. } => Err(ApiError::Forbidden(
                "this call needs a publish or admin token".into(),
            )),
        }
    }

    /// Fails unless the caller is an admin or this device.
    pub fn require_admin_or_device(&self, device: &DeviceId) -> Result<(), ApiError> {
        match self {
            Principal::Token {
                scope: Scope::Admin,
                ..
            } => Ok(()),
            Principal::Device { device: own, .. } if own == device => Ok(()),
            _ => Err(ApiError::Forbidden(
                "this call needs an admin token or the device's own token".into(),
            )),
        }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Principal::Token {
                scope: Scope::Admin,
                ..
            }
        )
    }

    /// The device, for a device caller.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Principal::Device { device, .. } => Some(device),
            Principal::Token { .. } => None,
        }
    }

    /// A stable name for idempotency scoping.
    pub fn key(&self) -> String {
        match self {
            Principal::Token { id, .. } => id.clone(),
            Principal::Device { device, .. } => device.to_string(),
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Authenticates a bearer token.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    if token.starts_with(API_TOKEN_PREFIX) {
        let hash = hash_secret(token);
        let now = state.clock.now_ms();
        if let Some(cached) = state.api_tokens.get(&hash) {
            if state.api_tokens.touch_due(&hash, now) {
                touch_api_token(state, cached.id.clone(), now);
            }
            return Ok(Principal::Token {
                id: cached.id,
                scope: cached.scope,
            });
        }
        let lookup = hash.clone();
        let row = state
            .store
            .run(move |conn| Ok(tokens::api_by_hash(conn, &lookup)?))
            .await?;
        let row = row.ok_or_else(|| ApiError::Unauthorized("the token is invalid".into()))?;
        let scope = Scope::parse(&row.scope).ok_or_else(|| {
            ApiError::Internal(format!("token {} has scope {}", row.id, row.scope))
        })?;
        state.api_tokens.insert(
            hash,
            CachedToken {
                id: row.id.clone(),
                scope,
                touched_at: now,
            },
        );
        touch_api_token(state, row.id.clone(), now);
        return Ok(Principal::Token { id: row.id, scope });
    }
    let verified = authenticate_device(state, token).await?;
    Ok(Principal::Device {
        device: verified.0,
        jti: verified.1,
    })
}

/// Records an API token's use in the background (at most once a minute per token).
fn touch_api_token(state: &AppState, id: String, now: i64) {
    let (store, log) = (state.store.clone(), state.log.clone());
    actix_rt::spawn(async move {
        if let Err(e) = store
            .run(move |conn| Ok(tokens::touch_api(conn, &id, now)?))
            .await
        {
            slog::warn!(log, "could not record token use"; "error" => %e);
        }
    });
}

/// Why a device token was refused.
#[derive(Debug)]
pub enum DeviceAuthError {
    /// Malformed, forged, expired or revoked: WebSocket close 4001.
    Invalid(&'static str),
    /// The device was deleted: WebSocket close 4003.
    Gone,
    /// The store failed.
    Store(ApiError),
}

impl From<DeviceAuthError> for ApiError {
    fn from(e: DeviceAuthError) -> Self {
        match e {
            DeviceAuthError::Invalid(why) => ApiError::Unauthorized(why.into()),
            DeviceAuthError::Gone => ApiError::Unauthorized("the device no longer exists".into()),
            DeviceAuthError::Store(e) => e,
        }
    }
}

/// Verifies a device access token and that its device still accepts it. Returns the device, the
/// token id and the token's expiry (seconds since the epoch).
pub async fn authenticate_device(
    state: &AppState,
    token: &str,
) -> Result<(DeviceId, String, i64), DeviceAuthError> {
    let verified = state.keys.verify_access(token).map_err(|e| match e {
        TokenRejection::Expired => DeviceAuthError::Invalid("the token has expired"),
        TokenRejection::Invalid => DeviceAuthError::Invalid("the token is invalid"),
    })?;
    let id = verified.device.to_string();
    let row = state
        .store
        .run(move |conn| Ok(devices::get(conn, &id)?))
        .await
        .map_err(|e| DeviceAuthError::Store(e.into()))?;
    match row {
        Some(row) if verified.iat * 1_000 >= row.tokens_valid_after => {
            Ok((verified.device, verified.jti, verified.exp))
        }
        Some(_) => Err(DeviceAuthError::Invalid("the token has been revoked")),
        None => Err(DeviceAuthError::Gone),
    }
}

/// Authenticates the bearer token, when there is one, before the handler runs (and so before any
/// body is read): a bad token is a 401 whatever else is wrong with the request. The result is kept
/// in the request extensions for the [`Principal`] extractor. The device socket authenticates
/// itself (it answers bad tokens with close codes), so `/api/v1/ws` is passed through.
pub async fn authenticate_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if req.path() != "/api/v1/ws" {
        let token = bearer(req.request()).map(str::to_owned);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        if let (Some(token), Some(state)) = (token, state) {
            match authenticate(&state, &token).await {
                Ok(principal) => {
                    req.extensions_mut().insert(principal);
                }
                Err(e) => {
                    // Rendered here, inside the request context, so it carries the request id.
                    let response = HttpResponse::from_error(actix_web::Error::from(e));
                    return Ok(req.into_response(response).map_into_right_body());
                }
            }
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into())),
        )
    }
}
