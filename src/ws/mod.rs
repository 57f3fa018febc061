//! The device WebSocket, `GET /api/v1/ws`: the upgrade handler and the per-connection actor
//! ([`socket::DeviceSocket`]).
//!
//! A token in the `Authorization` header is checked before the upgrade completes; without one the
//! socket must send `{"type":"auth","token":…}` within `websocket.auth_timeout_seconds`. A bad
//! token still upgrades, then closes with 4001 (4003 for a deleted device), so that clients see the
//! close codes of the protocol.

pub mod protocol;
pub mod socket;

use actix::Actor;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::auth::{authenticate_device, bearer};
use crate::state::AppState;

pub use socket::DeviceSocket;

/// The upgrade handler.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let pre_auth = match bearer(&req) {
        Some(token) => Some(authenticate_device(&state, token).await),
        None => None,
    };
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        crate::error::ApiError::field(
            "upgrade",
            format!("expected a WebSocket upgrade request: {e}"),
        )
    })?;
    let ip = state.limits.client_ip(&req);
    if let Some(ip) = ip {
        if !state.limits.open_socket(ip) {
            return Err(crate::error::ApiError::RateLimited {
                retry_after_secs: 60,
                detail: "too many open sockets from this address".into(),
            }
            .into());
        }
    }
    let max = state.settings.websocket.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let socket = DeviceSocket::new(state.into_inner(), session, pre_auth);
    match ip {
        Some(ip) => socket.holding_socket_of(ip).start_with(stream),
        None => socket.start_with(stream),
    }
    Ok(response)
}

/// Convenience so the socket can be started with its stream attached.
trait StartWith {
    fn start_with(self, stream: actix_ws::AggregatedMessageStream);
}

impl StartWith for DeviceSocket {
    fn start_with(self, stream: actix_ws::AggregatedMessageStream) {
        DeviceSocket::create(move |ctx| {
            actix::AsyncContext::add_stream(ctx, stream);
            self
        });
    }
}
