//! Live activity for admins: `GET /events`, a Server-Sent Events stream of the activity feed
//! ([`beepmyphone_actors::feed`]): notifications as they are committed, delivered and acked, and
//! devices as they come online, go offline, pair and are revoked. The dashboard's live pages read
//! it with `EventSource` and the session cookie (a GET changes nothing, so it needs no CSRF
//! token, and the `SameSite=Strict` cookie is not sent by other sites); an admin token works too.
//!
//! Opening a stream counts against the caller's rate limit like any request, and a caller may hold
//! [`MAX_STREAMS_PER_CALLER`] at once (429 beyond; a session counts apart from the admin's other
//! sessions). Every 15 s of the relay's clock a comment line keeps proxies from closing an idle
//! stream, and the credential is checked again: a session's stream ends once the session has
//! (logout, expiry; the check does not count as a use, so an open tab does not keep the session
//! from idling out), a token's once the token is deleted.
//! Each event is `event: <type>` with a JSON `data` line; `lagged` says how many events a slow
//! reader missed.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

use beepmyphone_actors::feed::{Activity, Received, Subscription};
use beepmyphone_actors::model::rfc3339;

use crate::api::auth::{session_cookie, Principal};
use crate::crypto::secrets::{secret_string, ExposeSecret, SecretString};
use crate::error::ApiError;
use crate::security::limits::{StreamSlot, MAX_STREAMS_PER_CALLER};
use crate::state::AppState;

/// How often an idle stream sends a keep-alive comment (and re-checks the session).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(events))]
pub struct Api;

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(events));
}

/// The SSE event name and JSON data of an activity.
pub fn render(activity: &Activity) -> (&'static str, Value) {
    match activity {
        Activity::Published {
            id,
            priority,
            devices,
            payload,
            at,
        } => {
            // The device view is JSON the queue serialised; its title is what a watcher wants.
            let view: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
            (
                "published",
                json!({
                    "at": rfc3339(*at),
                    "id": id,
                    "priority": priority.as_str(),
                    "devices": devices,
                    "title": view.get("title"),
                    "app": view.get("app"),
                }),
            )
        }
        Activity::Delivered { id, device, at } => (
            "delivered",
            json!({ "at": rfc3339(*at), "id": id, "device": device }),
        ),
        Activity::Acked { id, device, at } => (
            "acked",
            json!({ "at": rfc3339(*at), "id": id, "device": device }),
        ),
        Activity::Online { device, at } => {
            ("online", json!({ "at": rfc3339(*at), "device": device }))
        }
        Activity::Offline { device, at } => {
            ("offline", json!({ "at": rfc3339(*at), "device": device }))
        }
        Activity::Paired {
            device,
            name,
            platform,
            at,
        } => (
            "paired",
            json!({ "at": rfc3339(*at), "device": device, "name": name, "platform": platform }),
        ),
        Activity::Revoked { device, at } => {
            ("revoked", json!({ "at": rfc3339(*at), "device": device }))
        }
    }
}

fn frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The credential a stream was opened with.
enum Credential {
    /// A session's cookie value.
    Session(SecretString),
    /// An API token.
    Token(SecretString),
}

impl Credential {
    /// Whether it still holds (`true` when that cannot be told now: checked again next time).
    async fn holds(&self, state: &AppState) -> bool {
        match self {
            Credential::Session(cookie) => {
                !matches!(state.sessions.peek(cookie.expose_secret()).await, Ok(None))
            }
            Credential::Token(token) => !matches!(
                crate::api::auth::authenticate(state, token.expose_secret(), None).await,
                Err(ApiError::Unauthorized(_))
            ),
        }
    }
}

/// What one open stream holds.
struct Open {
    state: web::Data<AppState>,
    subscription: Subscription,
    /// Keep-alive ticks on the relay's clock.
    keepalive: beepmyphone_actors::ports::Ticks,
    /// What opened it, checked again at every keep-alive.
    credential: Credential,
    _slot: StreamSlot,
}

impl Open {
    /// The next chunk, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        tokio::select! {
            received = self.subscription.next() => match received? {
                Received::Event(activity) => {
                    let (event, data) = render(&activity);
                    Some(frame(event, &data))
                }
                Received::Missed(missed) => Some(frame(
                    "lagged",
                    &json!({ "at": rfc3339(self.state.clock.now_ms()), "missed": missed }),
                )),
            },
            _ = self.keepalive.next() => {
                if !self.credential.holds(&self.state).await {
                    return None;
                }
                Some(Bytes::from_static(b": keep-alive\n\n"))
            }
        }
    }
}

#[utoipa::path(get, path = "/api/v1/events", tag = "monitoring",
    responses((status = 200, description = "Server-Sent Events: `published`, `delivered`, `acked`, `online`, `offline`, `paired`, `revoked`, `lagged`, each with a JSON `data` line",
        body = String, content_type = "text/event-stream"),
        (status = 429, description = "The caller already holds the most streams it may")))]
async fn events(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let (credential, caller) = match &principal {
        Principal::Session { public_id, .. } => (
            session_cookie(&req).map(|c| Credential::Session(secret_string(c))),
            public_id.to_string(),
        ),
        _ => (
            crate::api::auth::bearer(&req).map(|t| Credential::Token(secret_string(t.to_owned()))),
            principal.key(),
        ),
    };
    let credential = credential
        .ok_or_else(|| ApiError::Unauthorized("the stream needs a session or a token".into()))?;
    let slot = state
        .streams
        .take(&caller)
        .ok_or_else(|| ApiError::RateLimited {
            retry_after_secs: KEEPALIVE.as_secs(),
            detail: format!(
                "at most {MAX_STREAMS_PER_CALLER} event streams may be open at once; close one"
            ),
        })?;
    let keepalive = state.clock.interval(KEEPALIVE);
    let open = Open {
        subscription: state.graph.feed.subscribe(),
        state: state.clone(),
        keepalive,
        credential,
        _slot: slot,
    };
    // The first chunk goes out at once, so the client knows the stream is live.
    let hello =
        stream::once(async { Ok::<_, actix_web::Error>(Bytes::from_static(b"retry: 3000\n\n")) });
    let body = stream::unfold(open, |mut open| async move {
        let chunk = open.next().await?;
        Some((Ok::<_, actix_web::Error>(chunk), open))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(hello.chain(body)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use beepmyphone_actors::model::{DeviceId, NotificationId, Priority};

    #[test]
    fn every_activity_renders_with_its_name_and_time() {
        let (id, device) = (NotificationId::generate(), DeviceId::generate());
        let payload = Bytes::from(r#"{"id":"x","title":"Backup <done>","app":"cron"}"#);
        let (name, data) = render(&Activity::Published {
            id: id.clone(),
            priority: Priority::High,
            devices: 2,
            payload,
            at: 0,
        });
        assert_eq!(name, "published");
        assert_eq!(data["title"], "Backup <done>");
        assert_eq!(
            (data["priority"].as_str(), data["devices"].as_u64()),
            (Some("high"), Some(2))
        );
        assert_eq!(data["at"], "1970-01-01T00:00:00.000Z");
        let names: Vec<&str> = [
            Activity::Delivered {
                id: id.clone(),
                device: device.clone(),
                at: 1,
            },
            Activity::Acked {
                id,
                device: device.clone(),
                at: 1,
            },
            Activity::Online {
                device: device.clone(),
                at: 1,
            },
            Activity::Offline {
                device: device.clone(),
                at: 1,
            },
            Activity::Paired {
                device: device.clone(),
                name: "p".into(),
                platform: "android".into(),
                at: 1,
            },
            Activity::Revoked {
                device: device.clone(),
                at: 1,
            },
        ]
        .iter()
        .map(|a| {
            let (name, data) = render(a);
            assert_eq!(data["device"], device.as_str());
            name
        })
        .collect();
        assert_eq!(
            names,
            [
                "delivered",
                "acked",
                "online",
                "offline",
                "paired",
                "revoked"
            ]
        );
        assert_eq!(
            frame("online", &json!({"a": 1})),
            Bytes::from("event: online\ndata: {\"a\":1}\n\n")
        );
    }
}
