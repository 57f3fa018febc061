//! The request middleware: a request id and a W3C trace on every request and response, a child
//! logger carrying both (`request_id`, `trace_id`) for every log line of the request, and one log
//! line per request (with the cause of any 500).
//!
//! The trace comes from a valid `traceparent` header or is started here (a random trace id); the
//! answer's `traceparent` carries the trace id and a new span id for the relay's part. The trace id
//! is kept in a task-local too, so publish handlers can give it to the queue with the notification.
//! With OTLP export on (`[otlp]`), the finished request is handed to
//! [`crate::monitoring::otlp::Otlp::record_request`] as a server span under that span id.
//!
//! The id comes from a sane `X-Request-Id` header (1–64 of `A-Za-z0-9._-`) or is generated
//! (`req_` and a ULID). It is kept in a task-local ([`crate::request_id`]) while the request runs,
//! so problem documents can carry it without threading it through every handler, and code below
//! the API can tag its lines with it ([`crate::logging::request_scoped`]). Handlers log through the
//! [`RequestLog`] extractor.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};

use crate::monitoring::otlp::RequestSpan;
use crate::request_id;
use crate::state::AppState;

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The W3C Trace Context header, read on requests and written on answers.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request's logger, carrying its `request_id`. Handlers take it as an argument (it is an
/// extractor) and log their events through it, so every line about a request can be found by the
/// id the client saw in `X-Request-Id`.
#[derive(Clone)]
pub struct RequestLog(pub slog::Logger);

impl std::ops::Deref for RequestLog {
    type Target = slog::Logger;

    fn deref(&self) -> &slog::Logger {
        &self.0
    }
}

impl actix_web::FromRequest for RequestLog {
    type Error = Error;
    type Future = std::future::Ready<Result<Self, Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(request_log(req)))
    }
}

/// The logger [`request_context`] stored for this request; outside the middleware (which every
/// route runs behind) the application's logger with whatever request id this task carries.
fn request_log(req: &actix_web::HttpRequest) -> RequestLog {
    if let Some(log) = req.extensions().get::<RequestLog>() {
        return log.clone();
    }
    let root = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.log.clone())
        .unwrap_or_else(crate::logging::discard);
    let id = request_id::current_request_id().unwrap_or_default();
    let trace_id = request_id::current_trace_id();
    RequestLog(root.new(slog::o!("request_id" => id, "trace_id" => trace_id)))
}

fn sane(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Answers `HEAD` wherever `GET` works (RFC 9110 §9.3.2): the request is routed as a `GET`, and
/// the HTTP/1 codec, which saw the `HEAD`, sends the headers (with the `GET`'s `Content-Length`)
/// and no body. Runs innermost, so the request's log line still names `HEAD`.
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    if req.method() == actix_web::http::Method::HEAD {
        req.head_mut().method = actix_web::http::Method::GET;
    }
    next.call(req).await
}

/// The request-id and access-log middleware (`actix_web::middleware::from_fn`).
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", ulid::Ulid::new()));
    let state = req.app_data::<web::Data<AppState>>();
    let root = state
        .map(|s| s.log.clone())
        .unwrap_or_else(crate::logging::discard);
    // The OTLP export, when on (an `Arc` clone per request then; nothing when off).
    let otlp = state.and_then(|s| s.otlp.clone());
    // A valid `traceparent` continues the caller's trace; without one (or with an invalid one)
    // the request starts a trace of its own.
    let trace = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(request_id::TraceContext::parse)
        .unwrap_or_else(request_id::TraceContext::generate);
    let log = root.new(slog::o!("request_id" => id.clone(), "trace_id" => trace.trace_id));
    req.extensions_mut().insert(RequestLog(log.clone()));
    let method = req.method().to_string();
    // Spans are named by a bounded set of methods, as the metrics are.
    let span_method = crate::api::timing::method_label(req.method());
    // The path only: query strings are never logged.
    let path = req.path().to_owned();
    let started = Instant::now();
    let result = request_id::scoped(
        id.clone(),
        request_id::trace_scoped(trace.trace_id, next.call(req)),
    )
    .await;
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros() as u64;
    // The relay's span for this request: in the answer's `traceparent` and the exported span.
    let span_id = request_id::new_span_id();
    if let Some(otlp) = &otlp {
        let (route, status) = match &result {
            Ok(res) => (res.request().match_pattern(), res.status()),
            Err(e) => (None, e.as_response_error().status_code()),
        };
        otlp.record_request(RequestSpan {
            trace: &trace,
            span_id,
            method: span_method,
            route: route.as_deref(),
            status: status.as_u16(),
            elapsed,
        });
    }
    match result {
        Ok(mut res) => {
            let status = res.status().as_u16();
            if let Some(error) = res.response().error() {
                if status >= 500 {
                    slog::error!(log, "request failed"; "method" => &method, "path" => &path, "status" => status, "micros" => micros, "cause" => %error);
                } else {
                    slog::info!(log, "request rejected"; "method" => &method, "path" => &path, "status" => status, "micros" => micros, "reason" => %error);
                }
            } else {
                slog::debug!(log, "request"; "method" => &method, "path" => &path, "status" => status, "micros" => micros);
            }
            if let Ok(value) = HeaderValue::from_str(&id) {
                res.headers_mut().insert(REQUEST_ID, value);
            }
            if let Ok(value) = HeaderValue::from_str(&trace.child(span_id)) {
                res.headers_mut().insert(TRACEPARENT, value);
            }
            Ok(res)
        }
        Err(e) => {
            slog::error!(log, "request errored"; "method" => &method, "path" => &path, "micros" => micros, "cause" => %e);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_request_ids_are_echoed() {
        assert!(sane("abc-123_x.y"));
        assert!(!sane(""));
        assert!(!sane("a b"));
        assert!(!sane("x\ny"));
        assert!(!sane(&"a".repeat(65)));
    }
}
