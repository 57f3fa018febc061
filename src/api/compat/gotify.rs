//! Gotify's publish API (<https://gotify.net/docs/pushmsg>): `POST /compat/gotify/message` with
//! `title`, `message`, `priority` (0–10) and `extras`, as JSON, a URL-encoded form or multipart
//! form data, authenticated by the `X-Gotify-Key` header (a publish token). Gotify's `?token=`
//! query form is refused: tokens never travel in URLs.
//!
//! Gotify has no topics: a message goes to every device. The answer is Gotify's message object,
//! whose `id` is the notification's sequence number in the store (Gotify's ids are numbers).

use std::collections::HashMap;
use std::convert::Infallible;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::api::auth::Principal;
use crate::api::body::{parse_json, RawBody};
use crate::api::middleware::RequestLog;
use crate::api::routes::notifications::publish_request;
use crate::api::schemas::{PublishRequest, TargetsBody};
use crate::error::ApiError;
use crate::state::AppState;

use super::{message_text, one_line};

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_message))]
pub struct Api;

/// Registers the route (under `/compat`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/gotify/message", web::post().to(create_message));
}

/// Registers the route at the root (`compat.mount_at_root`).
pub fn configure_root(cfg: &mut web::ServiceConfig) {
    cfg.route("/message", web::post().to(create_message));
}

/// A message as Gotify clients send it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GotifyMessage {
    /// The title (default: the message's first line).
    #[serde(default)]
    title: Option<String>,
    /// The text (required, not blank; at most 4096 characters).
    #[schema(min_length = 1, max_length = 4096, pattern = "\\S")]
    message: String,
    /// 0–10: 0–3 is our `low`, 4–7 `normal`, 8–9 `high`, 10 `critical` (default `normal`).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10)]
    priority: Option<i64>,
    /// Gotify's extras: `client::notification.click.url` becomes the click URL; the rest is kept
    /// in the answer only.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    extras: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A message as a form (URL-encoded or multipart) states it: text fields only, no extras.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct GotifyForm {
    /// The title (default: the message's first line).
    #[schema(nullable = false)]
    title: Option<String>,
    /// The text (required, not blank; at most 4096 characters).
    #[schema(min_length = 1, max_length = 4096, pattern = "\\S")]
    message: String,
    /// 0–10, as for JSON.
    #[schema(nullable = false, minimum = 0, maximum = 10)]
    priority: Option<i64>,
}

/// Gotify's answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GotifyAnswer {
    /// The notification's sequence number.
    id: i64,
    /// Always 0: the relay has no Gotify applications.
    appid: i64,
    message: String,
    title: String,
    priority: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    extras: Option<serde_json::Map<String, serde_json::Value>>,
    /// RFC 3339.
    date: String,
}

/// The Gotify priority of a message without one (a `normal` one).
const DEFAULT_PRIORITY: i64 = 5;

fn relay_priority(gotify: i64) -> Result<&'static str, ApiError> {
    match gotify {
        0..=3 => Ok("low"),
        4..=7 => Ok("normal"),
        8..=9 => Ok("high"),
        10 => Ok("critical"),
        _ => Err(ApiError::field("priority", "must be between 0 and 10")),
    }
}

impl GotifyMessage {
    /// From form fields (URL-encoded or multipart), all text.
    fn from_fields(mut fields: HashMap<String, String>) -> Result<Self, ApiError> {
        let message = fields
            .remove("message")
            .ok_or_else(|| ApiError::field("message", "is required"))?;
        let priority = fields
            .remove("priority")
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                p.trim()
                    .parse::<i64>()
                    .map_err(|_| ApiError::field("priority", "must be a whole number 0 to 10"))
            })
            .transpose()?;
        let title = fields.remove("title");
        if let Some(unknown) = fields.keys().next() {
            return Err(ApiError::field(
                unknown.clone(),
                "is not a field of a Gotify message (title, message, priority)",
            ));
        }
        Ok(Self {
            title,
            message,
            priority,
            extras: None,
        })
    }

    fn click_url(&self) -> Option<String> {
        self.extras
            .as_ref()?
            .get("client::notification")?
            .get("click")?
            .get("url")?
            .as_str()
            .map(str::to_owned)
    }

    fn to_request(&self) -> Result<PublishRequest, ApiError> {
        if self.message.trim().is_empty() {
            return Err(ApiError::field("message", "must not be empty"));
        }
        let priority = relay_priority(self.priority.unwrap_or(DEFAULT_PRIORITY))?;
        // Without a title, the first line that has something to show (the first may be empty).
        let title = match self.title.as_deref().map(|t| one_line(t, 256)) {
            Some(t) if !t.trim().is_empty() => t,
            _ => self
                .message
                .lines()
                .map(|line| one_line(line.trim(), 256))
                .find(|line| !line.trim().is_empty())
                .ok_or_else(|| ApiError::field("message", "must not be empty"))?,
        };
        Ok(PublishRequest {
            title: Some(title),
            body: message_text(&self.message),
            app: Some("gotify".into()),
            priority: Some(priority.into()),
            targets: Some(TargetsBody::Keyword("all".into())),
            tags: Vec::new(),
            click_url: self.click_url(),
            ttl_seconds: None,
            idempotency_key: None,
            encrypted: None,
        })
    }
}

/// Reads the message from JSON, a URL-encoded form or multipart form data.
async fn read_message(body: RawBody, max_depth: usize) -> Result<GotifyMessage, ApiError> {
    match body.media_type.as_str() {
        "application/x-www-form-urlencoded" => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body.bytes)
                .map_err(|e| ApiError::field("body", format!("is not a valid form: {e}")))?;
            GotifyMessage::from_fields(pairs.into_iter().collect())
        }
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(&body.content_type)
                .map_err(|e| ApiError::field("body", format!("is not multipart form data: {e}")))?;
            let bytes = body.bytes;
            let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(bytes) });
            let mut parts = multer::Multipart::new(stream, boundary);
            let bad = |e: multer::Error| {
                ApiError::field("body", format!("is not multipart form data: {e}"))
            };
            let mut fields = HashMap::new();
            while let Some(part) = parts.next_field().await.map_err(bad)? {
                let name = part.name().unwrap_or("").to_owned();
                let text = part.text().await.map_err(bad)?;
                fields.insert(name, text);
            }
            GotifyMessage::from_fields(fields)
        }
        _ if body.is_json() => parse_json(&body.bytes, max_depth),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// The relay's publish request for a message body, as `create_message` builds it: for the fuzz
/// targets (`fuzz/`), which cannot make the private types.
#[doc(hidden)]
pub async fn body_request(body: RawBody, max_depth: usize) -> Result<PublishRequest, ApiError> {
    read_message(body, max_depth).await?.to_request()
}

#[utoipa::path(post, path = "/compat/gotify/message", tag = "compat",
    request_body(content(
        (GotifyMessage = "application/json"),
        (GotifyForm = "application/x-www-form-urlencoded"),
        (GotifyForm = "multipart/form-data"))),
    security(("gotify_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Stored durably and queued for every device (Gotify's message object)", body = GotifyAnswer)))]
async fn create_message(
    state: web::Data<AppState>,
    log: RequestLog,
    principal: Principal,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    let message = read_message(body, state.settings.server.max_json_depth).await?;
    let request = message.to_request()?;
    let title = request.title.clone().unwrap_or_default();
    let published = publish_request(&state, &log, &principal, request).await?;
    Ok(HttpResponse::Ok().json(GotifyAnswer {
        id: published.outcome.seq.unwrap_or(0),
        appid: 0,
        title,
        priority: message.priority.unwrap_or(DEFAULT_PRIORITY),
        message: message.message,
        extras: message.extras,
        date: beepmyphone_actors::model::rfc3339(published.created_at),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_zero_to_ten_map_onto_ours() {
        let ours: Vec<&str> = (0..=10)
            .map(|p| relay_priority(p).expect("in range"))
            .collect();
        assert_eq!(
            ours,
            [
                "low", "low", "low", "low", "normal", "normal", "normal", "normal", "high", "high",
                "critical"
            ]
        );
        assert!(relay_priority(11).is_err());
        assert!(relay_priority(-1).is_err());
    }

    #[test]
    fn the_click_url_comes_from_the_notification_extras() {
        let message: GotifyMessage = serde_json::from_str(
            r#"{"message":"**bold**\nsecond","priority":2,"extras":{"client::display":{"contentType":"text/markdown"},"client::notification":{"click":{"url":"https://gotify.net"}}}}"#,
        )
        .expect("json");
        let request = message.to_request().expect("request");
        assert_eq!(request.click_url.as_deref(), Some("https://gotify.net"));
        assert_eq!(
            request.title.as_deref(),
            Some("**bold**"),
            "the first line when there is no title"
        );
        assert_eq!(request.priority.as_deref(), Some("low"));
    }

    #[test]
    fn form_fields_are_text_and_checked() {
        let fields = |pairs: &[(&str, &str)]| {
            GotifyMessage::from_fields(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let ok = fields(&[
            ("title", "my title"),
            ("message", "my message"),
            ("priority", "5"),
        ])
        .expect("ok");
        assert_eq!(ok.priority, Some(5));
        assert!(fields(&[("title", "t")]).is_err(), "message is required");
        assert!(fields(&[("message", "m"), ("priority", "high")]).is_err());
        assert!(fields(&[("message", "m"), ("colour", "red")]).is_err());
        assert!(fields(&[("message", "  ")])
            .expect("parsed")
            .to_request()
            .is_err());
        let request = fields(&[("message", "\nsecond line")])
            .expect("parsed")
            .to_request()
            .expect("request");
        assert_eq!(request.title.as_deref(), Some("second line"));
        assert!(fields(&[("message", "\u{7}")])
            .expect("parsed")
            .to_request()
            .is_err());
    }
}
