//! The auth extractor: turns `Authorization: Bearer …` or an admin session cookie into a
//! [`Principal`].
//!
//! `bmp_…` tokens are API tokens, looked up by hash (cached after the first success); anything else
//! must be a device access token (RS256 JWT), whose device must still exist, must not have had its
//! tokens revoked after the token was issued, and whose `jti` must not be on the deny-list
//! ([`crate::security::revocation`]; if the deny-list cannot answer, the request fails with 503).
//! Without a bearer token, the `beep_session` cookie of a dashboard login is checked; a
//! cookie-authenticated request other than GET, HEAD or OPTIONS must carry the session's CSRF token
//! in `X-CSRF-Token` (403 otherwise). Tokens are only read from headers, never from the URL.

use std::future::{ready, Ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};
use actix_web::{HttpMessage, HttpResponse};

use beepmyphone_actors::model::DeviceId;

use actix_web::http::Method;

use crate::crypto::secrets::{constant_time_eq, hash_secret, ExposeSecret, API_TOKEN_PREFIX};
use crate::domain::{AdminId, ApiTokenId, Jti, Scope, SessionId};
use crate::error::ApiError;
use crate::security::device_auth::{count_verification, verify_device_token, DeviceAuthError};
use crate::security::sessions::{SessionError, SESSION_COOKIE};
use crate::state::{AppState, CachedToken};
use crate::store::tokens;

/// The login path: the session cookie is not read there.
const LOGIN_PATH: &str = "/api/v1/auth/login";

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// An API token.
    Token {
        /// The token.
        id: ApiTokenId,
        /// Its scope.
        scope: Scope,
    },
    /// A paired device, by its access token.
    Device {
        /// The device.
        device: DeviceId,
        /// The access token's id.
        jti: Jti,
        /// The access token's expiry, seconds since the epoch (how long logout must deny it).
        exp: i64,
    },
    /// An admin logged in to the dashboard (session cookie); may do what an admin token may.
    Session {
        /// The admin.
        admin_id: AdminId,
        /// The admin's name.
        username: String,
        /// The session's id hash (its storage key; not a credential).
        id_hash: String,
        /// The session's public id.
        public_id: SessionId,
    },
}

impl Principal {
    /// Fails unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Token {
                scope: Scope::Admin,
                ..
            }
            | Principal::Session { .. } => Ok(()),
            _ => Err(ApiError::Forbidden("this call needs an admin token".into())),
        }
    }

    /// Fails unless the caller may publish.
    pub fn require_publisher(&self) -> Result<(), ApiError> {
        match self {
            Principal::Token {
                scope: Scope::Admin | Scope::Publish,
                ..
            }
            | Principal::Session { .. } => Ok(()),
            _ => Err(ApiError::Forbidden(
                "this call needs a publish or admin token".into(),
            )),
        }
    }

    /// Fails unless the caller may read the metrics (a token of scope `metrics` or `admin`, or an
    /// admin session).
    pub fn require_metrics_reader(&self) -> Result<(), ApiError> {
        match self {
            Principal::Token {
                scope: Scope::Admin | Scope::Metrics,
                ..
            }
            | Principal::Session { .. } => Ok(()),
            _ => Err(ApiError::Forbidden(
                "this call needs a metrics or admin token".into(),
            )),
        }
    }

    /// Fails unless the caller is an admin or this device.
    pub fn require_admin_or_device(&self, device: &DeviceId) -> Result<(), ApiError> {
        match self {
            Principal::Token {
                scope: Scope::Admin,
                ..
            }
            | Principal::Session { .. } => Ok(()),
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
            } | Principal::Session { .. }
        )
    }

    /// The device, for a device caller.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Principal::Device { device, .. } => Some(device),
            Principal::Token { .. } | Principal::Session { .. } => None,
        }
    }

    /// A stable name for idempotency scoping.
    pub fn key(&self) -> String {
        match self {
            Principal::Token { id, .. } => id.to_string(),
            Principal::Device { device, .. } => device.to_string(),
            Principal::Session { admin_id, .. } => admin_id.to_string(),
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

/// Authenticates a bearer token (from `ip`, which the audit record of a token's first use keeps).
pub async fn authenticate(
    state: &AppState,
    token: &str,
    ip: Option<std::net::IpAddr>,
) -> Result<Principal, ApiError> {
    if token.starts_with(API_TOKEN_PREFIX) {
        let hash = hash_secret(token);
        let now = state.clock.now_ms();
        if let Some(cached) = state.api_tokens.get(&hash) {
            if !state.api_tokens.touch_due(&hash, now) {
                return Ok(Principal::Token {
                    id: cached.id,
                    scope: cached.scope,
                });
            }
            // Once a minute per token the store is asked again (and the use recorded), so a token
            // deleted by another process (`beepmyphone token revoke`) is refused from then on.
        }
        let lookup = hash.clone();
        let row = state
            .store
            .run(move |conn| Ok(tokens::api_by_hash(conn, &lookup)?))
            .await?;
        let Some(row) = row else {
            state.api_tokens.remove(&hash);
            return Err(ApiError::Unauthorized("the token is invalid".into()));
        };
        let scope = Scope::parse(&row.scope).ok_or_else(|| {
            ApiError::Internal(format!("token {} has scope {}", row.id, row.scope))
        })?;
        let id = ApiTokenId::from_trusted(row.id);
        if row.last_used_at.is_none() {
            use beepmyphone_actors::ports::{Action, ActorKind, AuditEvent, Outcome};
            let mut event = AuditEvent::new(Action::TokenFirstUsed, ActorKind::Token, Outcome::Ok)
                .by(id.to_string())
                .on(id.to_string());
            event.ip = ip.map(|ip| ip.to_string());
            event.request_id = crate::request_id::current_request_id();
            event.trace_id = crate::request_id::current_trace_id().map(|t| t.to_string());
            state.audit.record(event);
        }
        state.api_tokens.insert(
            hash,
            CachedToken {
                id: id.clone(),
                scope,
                touched_at: now,
            },
        );
        touch_api_token(state, id.clone(), now);
        return Ok(Principal::Token { id, scope });
    }
    let verified = authenticate_device(state, token).await?;
    Ok(Principal::Device {
        device: verified.0,
        jti: verified.1,
        exp: verified.2,
    })
}

/// Records an API token's use in the background (at most once a minute per token).
fn touch_api_token(state: &AppState, id: ApiTokenId, now: i64) {
    let store = state.store.clone();
    // The write outlives the request's task; its log line keeps the request's id.
    let log = crate::logging::request_scoped(&state.log);
    actix_rt::spawn(async move {
        if let Err(e) = store
            .write(move |conn| Ok(tokens::touch_api(conn, id.as_str(), now)?))
            .await
        {
            slog::warn!(log, "could not record token use"; "error" => %e);
        }
    });
}

impl From<DeviceAuthError> for ApiError {
    fn from(e: DeviceAuthError) -> Self {
        match e {
            DeviceAuthError::Invalid(why) => ApiError::Unauthorized(why.into()),
            DeviceAuthError::Gone => ApiError::Unauthorized("the device no longer exists".into()),
            DeviceAuthError::Store(e) => e.into(),
            DeviceAuthError::Unavailable(_) => ApiError::Unavailable(
                "token revocation cannot be checked right now; try again".into(),
            ),
        }
    }
}

/// Verifies a device access token and that its device still accepts it (see
/// [`DeviceTokens::authenticate`]).
pub async fn authenticate_device(
    state: &AppState,
    token: &str,
) -> Result<(DeviceId, Jti, i64), DeviceAuthError> {
    let now = state.clock.now_ms() / 1_000;
    let result = verify_device_token(&state.keys, &state.revocations, token, now).await;
    count_verification(&state.graph.metrics, &result);
    result
}

/// The value of the admin session cookie, if the request carries one.
pub fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
}

/// The header a cookie-authenticated, state-changing request must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The dashboard's form posts carry the CSRF token in a form field, which only the dashboard's
/// own extractor can read (`crate::dashboard::guard`); under this prefix the header is not
/// required, and the session's token is left in [`SessionCsrf`] for that extractor to compare.
pub const FORM_CSRF_PREFIX: &str = "/dashboard/";

/// Sent by the dashboard's script on requests the page makes by itself (a chart's refresh): the
/// session is checked without counting as a use, so an open tab does not keep it from idling out.
pub const BACKGROUND_HEADER: &str = "x-beep-background";

/// The CSRF token of the request's session (for the dashboard: its forms carry it, and its
/// form extractor checks it).
#[derive(Debug, Clone)]
pub struct SessionCsrf(pub crate::crypto::secrets::SecretString);

/// Marks a request whose session cookie named no live session, so the extractor can say so.
#[derive(Debug, Clone, Copy)]
struct SessionEnded;

/// Authenticates the session cookie: `Ok(None)` when it names no live session, `Err` when the
/// session store cannot answer (503) or the CSRF token is missing or wrong (403).
async fn authenticate_session(
    state: &AppState,
    req: &HttpRequest,
    cookie: &str,
) -> Result<Option<Principal>, ApiError> {
    let background = req.headers().contains_key(BACKGROUND_HEADER);
    let looked_up = if background {
        state.sessions.peek(cookie).await
    } else {
        state.sessions.authenticate(cookie).await
    };
    let session = match looked_up {
        Ok(Some(session)) => session,
        Ok(None) => return Ok(None),
        Err(SessionError::Unavailable(_)) => {
            return Err(ApiError::Unavailable(
                "sessions cannot be checked right now; try again".into(),
            ))
        }
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // The path as the router matches it (percent-decoded), as every path rule reads it.
    let form_checked = req.match_info().as_str().starts_with(FORM_CSRF_PREFIX);
    req.extensions_mut()
        .insert(SessionCsrf(session.csrf_token.clone()));
    if !safe && !form_checked {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(sent, session.csrf_token.expose_secret()) {
            return Err(ApiError::Forbidden(
                "a cookie-authenticated request that changes state needs the session's X-CSRF-Token header".into(),
            ));
        }
    }
    Ok(Some(Principal::Session {
        admin_id: AdminId::from_trusted(session.admin_id),
        username: session.username,
        id_hash: session.id_hash,
        public_id: SessionId::from_trusted(session.public_id),
    }))
}

/// Authenticates the bearer token, when there is one, before the handler runs (and so before any
/// body is read): a bad token is a 401 whatever else is wrong with the request. Without a bearer
/// token, the session cookie is checked (with its CSRF rule); a cookie naming no live session
/// leaves the request anonymous, so public calls still work. The result is kept in the request
/// extensions for the [`Principal`] extractor. The device socket authenticates itself (it answers
/// bad tokens with close codes), so `/api/v1/ws` is passed through, and so is `/api/v1/auth/login`,
/// which must work whatever cookie the browser still holds.
pub async fn authenticate_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if req.match_info().as_str() != "/api/v1/ws" {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        // The ntfy and Gotify endpoints also take the token as their clients send it; there, that
        // credential wins over a bearer token, so a wrong X-Gotify-Key is never overlooked.
        let mount_at_root = state
            .as_ref()
            .is_some_and(|s| s.settings.compat.mount_at_root);
        let token = match crate::api::compat::credential(req.request(), mount_at_root) {
            Ok(compat) => compat.or_else(|| bearer(req.request()).map(str::to_owned)),
            Err(e) => {
                let response = HttpResponse::from_error(actix_web::Error::from(e));
                return Ok(req.into_response(response).map_into_right_body());
            }
        };
        let cookie = match req.match_info().as_str() {
            LOGIN_PATH => None,
            _ => session_cookie(req.request()),
        };
        // A credential that is present must be valid: an Authorization header of another scheme
        // (or an empty bearer) is refused, never ignored in favour of a cookie or anonymity.
        let foreign_scheme = token.is_none() && req.headers().contains_key(header::AUTHORIZATION);
        let result = match (token, cookie, state) {
            _ if foreign_scheme => Err(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`".into(),
            )),
            (Some(token), _, Some(state)) => {
                let ip = state.limits.client_ip(req.request());
                authenticate(&state, &token, ip).await.map(Some)
            }
            (None, Some(cookie), Some(state)) => {
                authenticate_session(&state, req.request(), &cookie).await
            }
            _ => Ok(None),
        };
        match result {
            Ok(Some(principal)) => {
                req.extensions_mut().insert(principal);
            }
            Ok(None) => {
                if req.headers().get(header::AUTHORIZATION).is_none()
                    && session_cookie(req.request()).is_some()
                {
                    req.extensions_mut().insert(SessionEnded);
                }
            }
            Err(e) => {
                // Rendered here, inside the request context, so it carries the request id.
                let response = HttpResponse::from_error(actix_web::Error::from(e));
                return Ok(req.into_response(response).map_into_right_body());
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
        let extensions = req.extensions();
        ready(extensions.get::<Principal>().cloned().ok_or_else(|| {
            if extensions.get::<SessionEnded>().is_some() {
                ApiError::Unauthorized("the session has ended; log in again".into())
            } else {
                ApiError::Unauthorized("a bearer token is required".into())
            }
        }))
    }
}
