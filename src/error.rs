//! The one error type of the HTTP API: every failure a client sees is an [`ApiError`], rendered as
//! an RFC 9457 problem document with a stable `code`. Unexpected failures become an opaque 500
//! whose cause is logged by the request middleware, never sent.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::request_id::current_request_id;
use crate::store::StoreError;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's path in the request (`priority`, `items[3].title`, `settings.quietHours.start`).
    pub field: String,
    /// What is wrong with it, in words a client author can act on.
    pub reason: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Everything that can go wrong in a request, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a field is invalid.
    #[error("{detail}")]
    Validation {
        /// A one-line summary.
        detail: String,
        /// Every invalid field.
        errors: Vec<FieldError>,
    },
    /// 422: well-formed, but refers to things that do not exist (unknown target devices).
    #[error("{detail}")]
    Unprocessable {
        /// A one-line summary.
        detail: String,
        /// What could not be resolved.
        errors: Vec<FieldError>,
    },
    /// 401: no credentials, or invalid ones.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: valid credentials without the right.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("method not allowed; this resource supports {allow}")]
    MethodNotAllowed {
        /// The methods the resource supports, for the `Allow` header.
        allow: &'static str,
    },
    /// 409: conflicts with the current state (a used pairing code, ...).
    #[error("{0}")]
    Conflict(String),
    /// 413: body over the limit.
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 408: the request body did not arrive within `server.body_timeout_seconds`.
    #[error("the request body did not arrive within {seconds} s")]
    RequestTimeout {
        /// The timeout in seconds.
        seconds: u64,
    },
    /// 415: not JSON.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// 414: the request URI is longer than the limit.
    #[error("the request URI is longer than {limit} bytes")]
    UriTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// 429: over a rate limit, or the IP is blocked; `Retry-After` says when to come back.
    #[error("{detail}")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
        /// What was exceeded.
        detail: String,
    },
    /// 503: a dependency is down; try again later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; the text is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A validation error for one field.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, reason)])
    }

    /// A validation error for several fields.
    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        Self::Validation { detail, errors }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. }
            | ApiError::Unprocessable { .. }
            | ApiError::UnsupportedMediaType => "VALIDATION_ERROR",
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::RequestTimeout { .. } => "REQUEST_TIMEOUT",
            ApiError::UriTooLong { .. } => "URI_TOO_LONG",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::Unavailable(_) => "UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "Invalid request",
            ApiError::Unprocessable { .. } => "Unprocessable request",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) => "Not found",
            ApiError::MethodNotAllowed { .. } => "Method not allowed",
            ApiError::Conflict(_) => "Conflict",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::RequestTimeout { .. } => "Request timeout",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::UriTooLong { .. } => "URI too long",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::Internal(_) => "Internal server error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            busy if busy.is_busy() => ApiError::Unavailable("the store is busy; try again".into()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The problem document (RFC 9457) with the API's extensions.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem<'a> {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The status's phrase.
    title: &'static str,
    /// The HTTP status.
    status: u16,
    /// A stable machine-readable code (`VALIDATION_ERROR`, `RATE_LIMITED`, …).
    code: &'static str,
    /// What went wrong, for people.
    detail: String,
    /// Every invalid field (400, 422).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<FieldError>>)]
    errors: Option<&'a [FieldError]>,
    /// The request's id (also in the `X-Request-Id` header and the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let detail = match self {
            ApiError::Internal(_) => "an unexpected error occurred; it has been logged".to_owned(),
            other => other.to_string(),
        };
        let errors = match self {
            ApiError::Validation { errors, .. } | ApiError::Unprocessable { errors, .. } => {
                Some(errors.as_slice())
            }
            _ => None,
        };
        let problem = Problem {
            kind: "about:blank",
            title: self.title(),
            status: status.as_u16(),
            code: self.code(),
            detail,
            errors,
            request_id: current_request_id(),
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        if matches!(self, ApiError::Unauthorized(_)) {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        if matches!(self, ApiError::RequestTimeout { .. }) {
            // The rest of the body is not read: the connection cannot carry another request.
            response.insert_header((header::CONNECTION, HeaderValue::from_static("close")));
        }
        if matches!(self, ApiError::Unavailable(_)) {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after_secs)));
        }
        response.body(serde_json::to_string(&problem).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body(e: &ApiError) -> serde_json::Value {
        let bytes = e.error_response().into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn validation_problems_list_fields() {
        let e = ApiError::invalid(vec![
            FieldError::new("priority", "must be one of low, normal, high, critical"),
            FieldError::new("title", "required"),
        ]);
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
        let v = body(&e);
        assert_eq!(v["code"], "VALIDATION_ERROR");
        assert_eq!(v["detail"], "2 fields are invalid");
        assert_eq!(v["errors"][0]["field"], "priority");
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["status"], 400);
    }

    #[test]
    fn a_busy_store_is_a_503_and_other_store_failures_a_500() {
        use diesel::result::{DatabaseErrorKind, Error};
        let locked = StoreError::Query(Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("database is locked".to_owned()),
        ));
        for busy in [
            StoreError::Busy(5_000),
            StoreError::Pool("timed out".into()),
            locked,
        ] {
            let e = ApiError::from(busy);
            assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body(&e)["detail"], "the store is busy; try again");
        }
        let e = ApiError::from(StoreError::Query(Error::NotFound));
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn rate_limited_is_a_429_with_retry_after() {
        let e = ApiError::RateLimited {
            retry_after_secs: 17,
            detail: "too many requests".into(),
        };
        let response = e.error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "17");
        assert_eq!(body(&e)["code"], "RATE_LIMITED");
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let e = ApiError::Internal("disk /var/secret failed".into());
        let v = body(&e);
        assert_eq!(v["code"], "INTERNAL");
        assert!(!v["detail"].as_str().unwrap().contains("secret"));
    }
}
