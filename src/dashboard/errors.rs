//! Refusals as pages: a dashboard request that ends in a problem document (from a handler, the
//! authentication or the rate limits, which run before any dashboard code) gets an HTML page
//! saying the same thing instead. The login form gets itself back with the message, so a wrong
//! password or a spent login budget reads as a sentence on the form, never as JSON.

use actix_web::body::{self, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use askama::Template;

use crate::api::headers::dashboard_path;
use crate::dashboard::guard::LOGIN_PAGE;
use crate::dashboard::view::{self, Flash};

/// A refusal, on its own page.
#[derive(Template)]
#[template(path = "error.html", config = "src/dashboard/askama.toml")]
struct ErrorPage {
    title: String,
    detail: String,
}

/// The login form.
#[derive(Template)]
#[template(path = "login.html", config = "src/dashboard/askama.toml")]
pub struct LoginPage {
    /// What to say above the form.
    pub flash: Option<Flash>,
    /// The name tried last, if any.
    pub username: String,
}

/// The largest problem document read back (they are a few hundred bytes).
const MAX_PROBLEM_BYTES: usize = 16 * 1024;

/// What a person reads for a refusal with this status and problem detail.
fn explain(status: StatusCode, detail: &str, retry_after: Option<&str>) -> String {
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            let wait = retry_after.map_or_else(String::new, |s| format!(" Try again in {s} s."));
            format!("Too many requests from your address or session.{wait} ({detail})")
        }
        StatusCode::SERVICE_UNAVAILABLE => format!("The relay cannot do this right now: {detail}"),
        _ => detail.to_owned(),
    }
}

/// The outermost dashboard layer (inside the security headers, around everything else).
pub async fn html_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error> {
    // The path as the router matches it (percent-decoded).
    let on_dashboard = dashboard_path(req.match_info().as_str());
    let login = req.match_info().as_str() == LOGIN_PAGE;
    let res = next.call(req).await?;
    let problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if !on_dashboard || !problem {
        return Ok(res.map_body(|_, b| EitherBody::left(b.boxed())));
    }
    let status = res.status();
    let retry_after = res
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (req, response) = res.into_parts();
    let (mut head, body) = response.into_parts();
    let bytes = body::to_bytes_limited(body, MAX_PROBLEM_BYTES)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let text = explain(status, &detail, retry_after.as_deref());
    let page = if login {
        view::page(
            status,
            &LoginPage {
                flash: Some(Flash::error(text)),
                username: String::new(),
            },
        )
    } else {
        view::page(
            status,
            &ErrorPage {
                title: status.canonical_reason().unwrap_or("Error").to_owned(),
                detail: text,
            },
        )
    };
    // Keep the refusal's own headers (Retry-After, RateLimit, request id), but not its type.
    let (_, page_body) = page.into_parts();
    let mut html = actix_web::HttpResponse::with_body(status, page_body);
    head.headers_mut().remove(header::CONTENT_LENGTH);
    for (name, value) in head.headers().iter() {
        if name != header::CONTENT_TYPE {
            html.headers_mut().append(name.clone(), value.clone());
        }
    }
    html.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(ServiceResponse::new(req, html).map_body(|_, b| EitherBody::right(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_sentences() {
        let text = explain(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit \"auth\" exceeded",
            Some("42"),
        );
        assert!(text.contains("Try again in 42 s"), "{text}");
        assert!(explain(StatusCode::SERVICE_UNAVAILABLE, "x", None).starts_with("The relay cannot"));
        assert_eq!(explain(StatusCode::FORBIDDEN, "no", None), "no");
    }
}
