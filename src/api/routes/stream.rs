//! The device stream over HTTP: `GET /stream` (Server-Sent Events) and `POST /acks`, for clients
//! that cannot hold a WebSocket. Both take a device access token; the stream is counted against
//! its IP like a socket ([`crate::ws::sse`] has the rest).

use std::convert::Infallible;

use actix::Actor;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use garde::Validate;
use serde::Deserialize;
use utoipa::ToSchema;

use beepmyphone_actors::model::NotificationId;
use beepmyphone_actors::queue::Ack;

use crate::api::auth::Principal;
use crate::api::body::Json;
use crate::api::schemas::check;
use crate::error::ApiError;
use crate::ws::protocol::MAX_ACK_IDS;
use crate::ws::sse::DeviceStream;
use crate::ws::SocketHandles;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(stream, acks))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stream", web::get().to(stream))
        .route("/acks", web::post().to(acks));
}

fn not_a_device() -> ApiError {
    ApiError::Forbidden("this needs a device access token".into())
}

#[utoipa::path(get, path = "/api/v1/stream", tag = "devices",
    responses((status = 200, description = "The device's notifications as Server-Sent Events: `hello`, then `notifications` frames (as on the WebSocket) as they come, backlog first; `close` says why it ends", content_type = "text/event-stream", body = String)))]
async fn stream(
    req: HttpRequest,
    principal: Principal,
    handles: web::Data<SocketHandles>,
) -> Result<HttpResponse, ApiError> {
    let Principal::Device { device, exp, .. } = principal else {
        return Err(not_a_device());
    };
    let ip = handles.limits.client_ip(&req);
    super::socket::admit(&handles, ip)?;
    let (actor, body) = DeviceStream::open(handles.into_inner(), device, exp, ip);
    actor.start();
    let events = futures_util::stream::unfold(body, |mut body| async move {
        body.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), body))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Proxies that buffer responses (nginx) would hold events back.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events))
}

/// `POST /acks`.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// 1–1000 notification ids (`ntf_…`) the device received.
    #[garde(length(min = 1, max = MAX_ACK_IDS), inner(custom(notification_id)))]
    #[schema(min_items = 1, max_items = 1000)]
    pub ids: Vec<String>,
}

fn notification_id(value: &str, (): &()) -> garde::Result {
    match NotificationId::parse(value) {
        Some(_) => Ok(()),
        None => Err(garde::Error::new("must be a notification id (ntf_…)")),
    }
}

#[utoipa::path(post, path = "/api/v1/acks", tag = "devices", request_body = AckRequest,
    responses((status = 204, description = "Acknowledged (ids this device was not sent are ignored, as on the WebSocket)")))]
async fn acks(
    principal: Principal,
    handles: web::Data<SocketHandles>,
    Json(request): Json<AckRequest>,
) -> Result<HttpResponse, ApiError> {
    let device = principal.device().ok_or_else(not_a_device)?.clone();
    check(&request)?;
    let ids = request
        .ids
        .iter()
        .filter_map(|id| NotificationId::parse(id))
        .collect();
    handles.queue.do_send(Ack { device, ids });
    Ok(HttpResponse::NoContent().finish())
}
