//! ntfy's publish API (<https://docs.ntfy.sh/publish/>): `POST|PUT /compat/ntfy/{topic}` with the
//! message as the body and `Title`, `Priority`, `Tags`, `Click` and `Markdown` in headers (or the
//! query string, as ntfy allows), and `POST /compat/ntfy` with a JSON object naming the topic.
//!
//! The topic is a device group: a topic that no device is in is a 404, never a silent drop. The
//! answer is ntfy's message object. ntfy features this relay does not have (scheduled delivery,
//! attachments, actions, e-mail, phone calls) are refused with a 400 naming them, so a publisher
//! never believes they happened.

use actix_web::{guard, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::api::auth::Principal;
use crate::api::body::{parse_json, RawBody};
use crate::api::middleware::RequestLog;
use crate::api::routes::notifications::{publish_request, Published};
use crate::api::schemas::{PublishRequest, TargetsBody};
use crate::api::targets::is_group_name;
use crate::error::ApiError;
use crate::state::AppState;

use super::{message_text, one_line, tags};

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(publish_topic, put_topic, publish_json))]
pub struct Api;

/// Registers the routes (under `/compat`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ntfy", web::post().to(publish_json))
        .route("/ntfy/{topic}", web::post().to(publish_topic))
        .route("/ntfy/{topic}", web::put().to(put_topic));
}

/// Registers `POST /` and `POST|PUT /{topic}` at the root (`compat.mount_at_root`), after the
/// relay's own routes. actix-web moves a route's method guard to its resource, so a path the relay
/// serves for GET only (`/health`, `/`) still reaches these for POST; other methods on paths nothing
/// serves stay 404s.
pub fn configure_root(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::post().to(publish_json)).service(
        web::resource("/{topic}")
            .guard(guard::Any(guard::Post()).or(guard::Put()))
            .route(web::post().to(publish_topic))
            .route(web::put().to(put_topic)),
    );
}

/// The message text when the request has none, as ntfy does.
const TRIGGERED: &str = "triggered";
/// The longest message text the relay stores (the body rule of `POST /api/v1/notifications`).
const MAX_MESSAGE: usize = 4_096;

/// ntfy's answer to a publish.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NtfyMessage {
    /// The notification's id.
    id: String,
    /// When it was stored, seconds since the epoch.
    time: i64,
    /// When it expires, seconds since the epoch.
    expires: i64,
    /// Always `message`.
    event: &'static str,
    /// The topic (group).
    topic: String,
    /// The message text.
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    /// 1–5; left out for the default (3).
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    click: Option<String>,
}

/// A publish as ntfy describes it, from headers and query or from JSON.
#[derive(Debug, Default, PartialEq)]
struct NtfyPublish {
    topic: String,
    message: Option<String>,
    title: Option<String>,
    /// 1–5.
    priority: Option<u8>,
    tags: Vec<String>,
    click: Option<String>,
}

/// ntfy's priority names and numbers: 1 `min`, 2 `low`, 3 `default`, 4 `high`, 5 `max`/`urgent`.
fn parse_priority(raw: &str) -> Result<u8, ApiError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "min" => Ok(1),
        "2" | "low" => Ok(2),
        "3" | "default" => Ok(3),
        "4" | "high" => Ok(4),
        "5" | "max" | "urgent" => Ok(5),
        _ => Err(ApiError::field(
            "Priority",
            "must be 1 to 5 or min, low, default, high, max, urgent",
        )),
    }
}

/// Ours: min and low are `low`, default `normal`, high `high`, max (urgent) `critical`.
fn relay_priority(ntfy: u8) -> &'static str {
    match ntfy {
        0..=2 => "low",
        3 => "normal",
        4 => "high",
        _ => "critical",
    }
}

fn parse_bool(field: &str, raw: &str) -> Result<bool, ApiError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" => Ok(true),
        "0" | "no" | "false" => Ok(false),
        _ => Err(ApiError::field(
            field,
            "must be yes or no (true/false, 1/0)",
        )),
    }
}

/// The ntfy parameters this relay refuses, by the names ntfy accepts for them.
const UNSUPPORTED: [(&str, &[&str]); 6] = [
    (
        "scheduled delivery (X-Delay)",
        &["x-delay", "delay", "x-at", "at", "x-in", "in"],
    ),
    (
        "attachments (X-Attach)",
        &[
            "x-attach",
            "attach",
            "a",
            "x-filename",
            "filename",
            "file",
            "f",
        ],
    ),
    (
        "action buttons (X-Actions)",
        &["x-actions", "actions", "action"],
    ),
    (
        "e-mail (X-Email)",
        &["x-email", "x-e-mail", "email", "e-mail", "mail", "e"],
    ),
    ("phone calls (X-Call)", &["x-call", "call"]),
    ("templates (X-Template)", &["x-template", "template", "tpl"]),
];

/// A publish parameter from a header (any of `names`) or else the query string, as ntfy reads
/// them. Header values are read as UTF-8.
struct Params<'a> {
    req: &'a HttpRequest,
    query: Vec<(String, String)>,
}

impl<'a> Params<'a> {
    fn new(req: &'a HttpRequest) -> Result<Self, ApiError> {
        let query = serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
            .map_err(|e| ApiError::field("query", format!("is not a valid query string: {e}")))?;
        Ok(Self { req, query })
    }

    /// The parameter, if present and not blank (an empty header is no header, as in ntfy).
    fn get(&self, field: &str, names: &[&str]) -> Result<Option<String>, ApiError> {
        for name in names {
            if let Some(value) = self.req.headers().get(*name) {
                let text = String::from_utf8(value.as_bytes().to_vec())
                    .map_err(|_| ApiError::field(field, "is not UTF-8"))?;
                if !text.trim().is_empty() {
                    return Ok(Some(text));
                }
            }
        }
        Ok(self
            .query
            .iter()
            .find(|(k, v)| names.iter().any(|n| n.eq_ignore_ascii_case(k)) && !v.trim().is_empty())
            .map(|(_, v)| v.clone()))
    }

    fn refuse_unsupported(&self) -> Result<(), ApiError> {
        for (what, names) in UNSUPPORTED {
            let present = names.iter().any(|n| {
                (n.len() > 2 && self.req.headers().contains_key(*n))
                    || self.query.iter().any(|(k, _)| k.eq_ignore_ascii_case(n))
            });
            if present {
                return Err(ApiError::field(
                    names[0],
                    format!("ntfy's {what} is not supported by this relay; nothing was published"),
                ));
            }
        }
        Ok(())
    }

    /// The publish these parameters and `body` describe, for `topic`.
    fn publish(&self, topic: String, body: &[u8]) -> Result<NtfyPublish, ApiError> {
        self.refuse_unsupported()?;
        let message = match self.get("Message", &["x-message", "message", "m"])? {
            Some(m) => Some(m),
            None if body.is_empty() => None,
            None => Some(
                String::from_utf8(body.to_vec())
                    .map_err(|_| ApiError::field("body", "the message must be UTF-8 text"))?,
            ),
        };
        if let Some(markdown) = self.get("Markdown", &["x-markdown", "markdown", "md"])? {
            parse_bool("Markdown", &markdown)?;
        }
        let tags = self
            .get("Tags", &["x-tags", "tags", "tag", "ta"])?
            .map(|t| tags(t.split(',').map(str::to_owned)))
            .unwrap_or_default();
        Ok(NtfyPublish {
            topic,
            message,
            title: self
                .get("Title", &["x-title", "title", "ti", "t"])?
                .filter(|t| !t.trim().is_empty()),
            priority: self
                .get("Priority", &["x-priority", "priority", "prio", "p"])?
                .map(|p| parse_priority(&p))
                .transpose()?,
            tags,
            click: self
                .get("Click", &["x-click", "click"])?
                .filter(|c| !c.trim().is_empty()),
        })
    }
}

/// The headers of a publish, as the OpenAPI document states them (read by [`Params`], which also
/// takes their other names and the query string).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct NtfyHeaders {
    /// Also X-Title, ti, t; default: the topic; cut to 256 characters.
    #[param(required = false, rename = "Title")]
    title: String,
    /// 1 to 5 or min, low, default, high, max, urgent (any case); also X-Priority, prio, p.
    #[param(
        required = false,
        rename = "Priority",
        pattern = "^([1-5]|min|low|default|high|max|urgent)$"
    )]
    priority: String,
    /// Comma-separated (at most 10 are kept, each cut to 32 characters); also X-Tags, Tag, ta.
    #[param(required = false, rename = "Tags")]
    tags: String,
    /// An http(s) URL (the rule of `clickUrl`); also X-Click.
    #[param(required = false, rename = "Click", example = "https://status.example.com/incidents/42", schema_with = crate::api::schemas::click_header_schema)]
    click: String,
    /// Yes or no (any case); the text is forwarded as it is.
    #[param(
        required = false,
        rename = "Markdown",
        pattern = "^(yes|no|true|false|1|0)$"
    )]
    markdown: String,
}

/// `POST /` with JSON, as ntfy documents it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NtfyJson {
    /// The topic (a device group).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    topic: String,
    /// The message text (default `triggered`).
    #[serde(default)]
    #[schema(max_length = 4096)]
    message: Option<String>,
    /// Cut to 256 characters.
    #[serde(default)]
    title: Option<String>,
    /// 1 (min) to 5 (max).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 5)]
    priority: Option<u8>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = crate::api::schemas::click_url_schema)]
    click: Option<String>,
    /// Accepted; the text is forwarded as it is.
    #[serde(default, rename = "markdown")]
    _markdown: Option<bool>,
    /// Accepted and not used (devices show their own icon).
    #[serde(default, rename = "icon")]
    _icon: Option<String>,
    /// Refused: no scheduled delivery (left out of the schema: any value is refused by name).
    #[serde(default)]
    #[schema(ignore)]
    delay: Option<serde_json::Value>,
    /// Refused: no attachments.
    #[serde(default)]
    #[schema(ignore)]
    attach: Option<serde_json::Value>,
    /// Refused: no attachments.
    #[serde(default)]
    #[schema(ignore)]
    filename: Option<serde_json::Value>,
    /// Refused: no action buttons.
    #[serde(default)]
    #[schema(ignore)]
    actions: Option<serde_json::Value>,
    /// Refused: no e-mail.
    #[serde(default)]
    #[schema(ignore)]
    email: Option<serde_json::Value>,
    /// Refused: no phone calls.
    #[serde(default)]
    #[schema(ignore)]
    call: Option<serde_json::Value>,
}

impl NtfyJson {
    fn into_publish(self) -> Result<NtfyPublish, ApiError> {
        let refused = [
            ("delay", self.delay.is_some(), "scheduled delivery"),
            ("attach", self.attach.is_some(), "attachments"),
            ("filename", self.filename.is_some(), "attachments"),
            ("actions", self.actions.is_some(), "action buttons"),
            ("email", self.email.is_some(), "e-mail"),
            ("call", self.call.is_some(), "phone calls"),
        ];
        if let Some((field, _, what)) = refused.into_iter().find(|(_, present, _)| *present) {
            return Err(ApiError::field(
                field,
                format!("ntfy's {what} is not supported by this relay; nothing was published"),
            ));
        }
        if let Some(p) = self.priority {
            if !(1..=5).contains(&p) {
                return Err(ApiError::field("priority", "must be 1 to 5"));
            }
        }
        Ok(NtfyPublish {
            topic: self.topic,
            message: self.message.filter(|m| !m.is_empty()),
            title: self.title.filter(|t| !t.trim().is_empty()),
            priority: self.priority,
            tags: tags(self.tags),
            click: self.click.filter(|c| !c.trim().is_empty()),
        })
    }
}

impl NtfyPublish {
    /// The relay's publish: the group is the topic, the title defaults to the topic (what ntfy's
    /// apps show), the message to `triggered`.
    fn to_request(&self) -> Result<PublishRequest, ApiError> {
        if !is_group_name(&self.topic) {
            return Err(ApiError::field(
                "topic",
                "must be 1 to 64 letters, digits, - or _",
            ));
        }
        let message = self.message.as_deref().unwrap_or(TRIGGERED);
        if message.chars().count() > MAX_MESSAGE {
            return Err(ApiError::field(
                "message",
                format!("must be at most {MAX_MESSAGE} characters (this relay has no attachments)"),
            ));
        }
        // A title of nothing but control characters is no title: the topic, as without one.
        let title = self
            .title
            .as_deref()
            .map(|t| one_line(t, 256))
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| one_line(&self.topic, 256));
        Ok(PublishRequest {
            title: Some(title),
            body: message_text(message),
            app: Some("ntfy".into()),
            priority: Some(relay_priority(self.priority.unwrap_or(3)).into()),
            targets: Some(TargetsBody::group(&self.topic)),
            tags: self.tags.clone(),
            click_url: self.click.clone(),
            ttl_seconds: None,
            idempotency_key: None,
            encrypted: None,
        })
    }

    fn answer(self, published: &Published) -> NtfyMessage {
        NtfyMessage {
            id: published.outcome.id.to_string(),
            time: published.created_at / 1_000,
            expires: published.expires_at / 1_000,
            event: "message",
            message: self.message.unwrap_or_else(|| TRIGGERED.into()),
            title: self.title,
            tags: self.tags,
            priority: self.priority.filter(|p| *p != 3),
            click: self.click,
            topic: self.topic,
        }
    }
}

/// The relay's publish request for a topic publish (headers, query string and body), as
/// `publish_topic` builds it: for the fuzz targets (`fuzz/`), which cannot make the private types.
#[doc(hidden)]
pub fn topic_request(
    req: &HttpRequest,
    topic: String,
    body: &[u8],
) -> Result<PublishRequest, ApiError> {
    Params::new(req)?.publish(topic, body)?.to_request()
}

/// The relay's publish request for a JSON publish, as `publish_json` builds it: for the fuzz
/// targets (`fuzz/`).
#[doc(hidden)]
pub fn json_request(body: &[u8], max_depth: usize) -> Result<PublishRequest, ApiError> {
    let json: NtfyJson = parse_json(body, max_depth)?;
    json.into_publish()?.to_request()
}

/// Publishes, turning "no device is in group T" into ntfy's 404 for an unknown topic.
async fn publish(
    state: &AppState,
    log: &RequestLog,
    principal: &Principal,
    ntfy: NtfyPublish,
) -> Result<HttpResponse, ApiError> {
    let request = ntfy.to_request()?;
    let published = match publish_request(state, log, principal, request).await {
        Err(ApiError::Unprocessable { .. }) => {
            return Err(ApiError::NotFound(format!(
                "no device is in group {} (the topic); add one with PATCH /api/v1/devices/{{id}} \
                 {{\"groups\": [\"{}\"]}}",
                ntfy.topic, ntfy.topic
            )))
        }
        other => other?,
    };
    Ok(HttpResponse::Ok().json(ntfy.answer(&published)))
}

#[utoipa::path(post, path = "/compat/ntfy/{topic}", tag = "compat",
    params(("topic" = String, Path, pattern = "^[A-Za-z0-9_-]{1,64}$", description = "a device group (1 to 64 letters, digits, - or _); another name is no topic (404)"),
        NtfyHeaders),
    request_body(content = String, content_type = "text/plain", description = "The message (default `triggered`)"),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, description = "Stored durably and queued for the topic's devices (ntfy's message object)", body = NtfyMessage),
        (status = 404, description = "No device is in the topic's group; nothing was queued", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn publish_topic(
    state: web::Data<AppState>,
    log: RequestLog,
    principal: Principal,
    req: HttpRequest,
    topic: web::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    let topic = topic.into_inner();
    if !is_group_name(&topic) {
        return Err(ApiError::NotFound(format!(
            "no topic {topic:?}: topics are 1 to 64 letters, digits, - or _"
        )));
    }
    let ntfy = Params::new(&req)?.publish(topic, &body.bytes)?;
    publish(&state, &log, &principal, ntfy).await
}

#[utoipa::path(put, path = "/compat/ntfy/{topic}", tag = "compat",
    params(("topic" = String, Path, description = "a device group")),
    request_body(content = String, content_type = "text/plain", description = "The message"),
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, description = "As POST", body = NtfyMessage)))]
async fn put_topic(
    state: web::Data<AppState>,
    log: RequestLog,
    principal: Principal,
    req: HttpRequest,
    topic: web::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    publish_topic(state, log, principal, req, topic, body).await
}

#[utoipa::path(post, path = "/compat/ntfy", tag = "compat", request_body = NtfyJson,
    security(("bearer" = []), ("basic" = [])),
    responses((status = 200, description = "Stored durably and queued for the topic's devices (ntfy's message object)", body = NtfyMessage),
        (status = 404, description = "No device is in the topic's group; nothing was queued", body = crate::error::Problem, content_type = "application/problem+json")))]
async fn publish_json(
    state: web::Data<AppState>,
    log: RequestLog,
    principal: Principal,
    body: RawBody,
) -> Result<HttpResponse, ApiError> {
    // ntfy's own clients send this JSON without a JSON content type, so any type is read as JSON.
    let max_depth = state.settings.server.max_json_depth;
    let json: NtfyJson = parse_json(&body.bytes, max_depth)?;
    publish(&state, &log, &principal, json.into_publish()?).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn params(req: &HttpRequest) -> Params<'_> {
        Params::new(req).expect("query")
    }

    /// The field and reason of a one-field request error.
    fn reason(e: ApiError) -> (String, String) {
        match e {
            ApiError::Validation { errors, .. } => {
                (errors[0].field.clone(), errors[0].reason.clone())
            }
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn priorities_map_names_and_numbers_onto_ours() {
        let ours = |raw| relay_priority(parse_priority(raw).expect(raw));
        assert_eq!(
            ["1", "min", "2", "LOW", "3", "default", "4", "high", "5", "max", "urgent"].map(ours),
            [
                "low", "low", "low", "low", "normal", "normal", "high", "high", "critical",
                "critical", "critical"
            ]
        );
        assert!(parse_priority("6").is_err());
        assert!(parse_priority("loud").is_err());
    }

    #[test]
    fn headers_win_over_the_query_and_the_body_is_the_message() {
        let req = TestRequest::post()
            .uri("/compat/ntfy/alerts?title=from+query&p=2&tags=a")
            .insert_header(("X-Title", "Dinner"))
            .insert_header(("Tags", "tada, partying_face ,"))
            .insert_header(("Click", "https://example.com/"))
            .insert_header(("Markdown", "yes"))
            .to_http_request();
        let ntfy = params(&req)
            .publish("alerts".into(), b"ready")
            .expect("publish");
        assert_eq!(
            ntfy,
            NtfyPublish {
                topic: "alerts".into(),
                message: Some("ready".into()),
                title: Some("Dinner".into()),
                priority: Some(2),
                tags: vec!["tada".into(), "partying_face".into()],
                click: Some("https://example.com/".into()),
            }
        );
        let request = ntfy.to_request().expect("request");
        assert_eq!(request.priority.as_deref(), Some("low"));
        assert_eq!(request.app.as_deref(), Some("ntfy"));
    }

    #[test]
    fn an_empty_publish_is_triggered_and_titled_by_its_topic() {
        let req = TestRequest::put()
            .uri("/compat/ntfy/door")
            .to_http_request();
        let ntfy = params(&req).publish("door".into(), b"").expect("publish");
        let request = ntfy.to_request().expect("request");
        assert_eq!(
            (request.title.as_deref(), request.body.as_str()),
            (Some("door"), "triggered")
        );
        assert_eq!(request.priority.as_deref(), Some("normal"));
        // A title that is only control characters (here DEL, from the query) is none.
        let req = TestRequest::put()
            .uri("/compat/ntfy/door?t=%7F")
            .to_http_request();
        let ntfy = params(&req).publish("door".into(), b"").expect("publish");
        assert_eq!(
            ntfy.to_request().expect("request").title.as_deref(),
            Some("door")
        );
    }

    #[test]
    fn what_the_relay_cannot_do_is_refused_by_name() {
        for (name, value) in [
            ("X-Delay", "30m"),
            ("Attach", "https://x/y.jpg"),
            ("X-Email", "a@b.c"),
            ("Actions", "view, Open, https://x"),
        ] {
            let req = TestRequest::post()
                .uri("/compat/ntfy/t")
                .insert_header((name, value))
                .to_http_request();
            let (field, why) = reason(params(&req).publish("t".into(), b"x").unwrap_err());
            assert!(why.contains("not supported"), "{name}: {why}");
            assert!(field.starts_with("x-"), "named as ntfy's header: {field}");
        }
        let query = TestRequest::post()
            .uri("/compat/ntfy/t?delay=1h")
            .to_http_request();
        assert!(params(&query).publish("t".into(), b"x").is_err());
        let bad = TestRequest::post()
            .uri("/compat/ntfy/t")
            .insert_header(("Markdown", "perhaps"))
            .to_http_request();
        assert!(params(&bad).publish("t".into(), b"x").is_err());
        let binary = TestRequest::post().uri("/compat/ntfy/t").to_http_request();
        assert!(params(&binary).publish("t".into(), &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn bad_topics_and_long_messages_are_request_errors() {
        let long = NtfyPublish {
            topic: "t".into(),
            message: Some("x".repeat(MAX_MESSAGE + 1)),
            ..NtfyPublish::default()
        };
        assert!(long.to_request().is_err());
        let topic = NtfyPublish {
            topic: "no/slashes".into(),
            ..NtfyPublish::default()
        };
        assert!(topic.to_request().is_err());
    }

    #[test]
    fn json_publishing_reads_ntfys_fields_and_refuses_the_rest() {
        let json: NtfyJson = serde_json::from_str(
            r#"{"topic":"mytopic","message":"Disk space is low at 5.1 GB","title":"Low disk space alert","tags":["warning","cd"],"priority":4,"click":"https://homecamera.lan/xasds1h2xsSsa/","markdown":false,"icon":"https://x/i.png"}"#,
        )
        .expect("json");
        let ntfy = json.into_publish().expect("publish");
        assert_eq!(ntfy.priority, Some(4));
        assert_eq!(
            ntfy.to_request().expect("request").priority.as_deref(),
            Some("high")
        );
        let delayed: NtfyJson =
            serde_json::from_str(r#"{"topic":"t","delay":"tomorrow"}"#).expect("json");
        let (field, why) = reason(delayed.into_publish().unwrap_err());
        assert_eq!(field, "delay");
        assert!(why.contains("scheduled delivery"), "{why}");
        let loud: NtfyJson = serde_json::from_str(r#"{"topic":"t","priority":9}"#).expect("json");
        assert!(loud.into_publish().is_err());
        assert!(serde_json::from_str::<NtfyJson>(r#"{"topic":"t","sound":"x"}"#).is_err());
    }
}
