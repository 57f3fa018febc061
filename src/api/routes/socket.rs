//! `GET /api/v1/ws`: the device WebSocket's upgrade handler. It checks a header token before the
//! upgrade completes, counts the socket against its IP, and starts one
//! [`DeviceSocket`](crate::ws::DeviceSocket) with the shared [`SocketHandles`].

use actix::Actor;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::auth::bearer;
use crate::ws::{DeviceSocket, SocketHandles};

/// The upgrade handler.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    handles: web::Data<SocketHandles>,
) -> Result<HttpResponse, actix_web::Error> {
    let pre_auth = match bearer(&req) {
        Some(token) => Some(handles.devices.authenticate(token).await),
        None => None,
    };
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| {
        crate::error::ApiError::field(
            "upgrade",
            format!("expected a WebSocket upgrade request: {e}"),
        )
    })?;
    let ip = handles.limits.client_ip(&req);
    admit(&handles, ip)?;
    let max = handles.websocket.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let socket = DeviceSocket::new(handles.into_inner(), session, pre_auth);
    match ip {
        Some(ip) => socket.holding_socket_of(ip).start_with(stream),
        None => socket.start_with(stream),
    }
    Ok(response)
}

/// Counts a new socket (or event stream) against its IP: 429 once the IP holds
/// `limits.max_sockets_per_ip`. The caller releases it when the connection ends.
pub(crate) fn admit(
    handles: &SocketHandles,
    ip: Option<std::net::IpAddr>,
) -> Result<(), crate::error::ApiError> {
    match ip {
        Some(ip) if !handles.limits.open_socket(ip) => {
            handles
                .metrics
                .ratelimit_rejections
                .with_label_values(&["sockets"])
                .inc();
            Err(crate::error::ApiError::RateLimited {
                retry_after_secs: 60,
                detail: "too many open sockets from this address".into(),
            })
        }
        _ => Ok(()),
    }
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
