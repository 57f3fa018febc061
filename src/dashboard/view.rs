//! What every page shares: the [`Layout`] (who is logged in, the CSRF token for its forms, the
//! section in the navigation, a flash message), turning an [`ApiError`] into words for a person,
//! and rendering a template into a response.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;
use askama::Template;

use crate::dashboard::guard::Admin;
use crate::error::ApiError;

/// The sections of the navigation: id, link, label.
pub const SECTIONS: &[(&str, &str, &str)] = &[
    ("overview", "/dashboard/", "Overview"),
    ("devices", "/dashboard/devices", "Devices"),
    ("pairing", "/dashboard/pairing", "Pairing"),
    ("live", "/dashboard/live", "Live"),
    ("send", "/dashboard/send", "Send"),
    ("health", "/dashboard/health", "Health"),
    ("keys", "/dashboard/keys", "Keys"),
    ("certificates", "/dashboard/certificates", "Certificates"),
    ("blocks", "/dashboard/blocks", "Blocks"),
    ("tokens", "/dashboard/tokens", "Tokens"),
    ("audit", "/dashboard/audit", "Audit"),
];

/// A message shown at the top of a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Flash {
    /// `ok` or `error` (the CSS class).
    pub kind: &'static str,
    /// What to say.
    pub text: String,
}

impl Flash {
    /// A success.
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            kind: "ok",
            text: text.into(),
        }
    }

    /// A failure.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            kind: "error",
            text: text.into(),
        }
    }
}

/// The frame of every page after login.
#[derive(Clone)]
pub struct Layout {
    /// Who is logged in.
    pub username: String,
    /// The CSRF token every form carries.
    pub csrf: String,
    /// The section this page belongs to.
    pub section: &'static str,
    /// A message, if any.
    pub flash: Option<Flash>,
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("username", &self.username)
            .field("csrf", &"[REDACTED]")
            .field("section", &self.section)
            .field("flash", &self.flash)
            .finish()
    }
}

impl Layout {
    /// The layout of a page in `section` for `admin`.
    pub fn new(admin: &Admin, section: &'static str) -> Self {
        Self {
            username: admin.username.clone(),
            csrf: admin.csrf.clone(),
            section,
            flash: None,
        }
    }

    /// With a message.
    pub fn with(mut self, flash: Option<Flash>) -> Self {
        self.flash = flash;
        self
    }

    /// The navigation.
    pub fn sections(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        SECTIONS
    }
}

/// A confirmation page: a question, what follows, and a form that posts to `action`.
#[derive(Template)]
#[template(path = "confirm.html", config = "src/dashboard/askama.toml")]
pub struct Confirm {
    /// The frame.
    pub layout: Layout,
    /// The heading.
    pub title: String,
    /// What is asked.
    pub question: String,
    /// What follows.
    pub consequence: &'static str,
    /// Where the form posts.
    pub action: String,
    /// Hidden fields.
    pub fields: Vec<(&'static str, String)>,
    /// The button's label.
    pub confirm: &'static str,
    /// Where Cancel goes.
    pub cancel: String,
}

/// What a person should read for `error` (field errors listed; internal errors not detailed).
pub fn message(error: &ApiError) -> String {
    match error {
        ApiError::Validation { errors, .. } | ApiError::Unprocessable { errors, .. }
            if !errors.is_empty() =>
        {
            let fields: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.reason))
                .collect();
            fields.join("; ")
        }
        ApiError::Internal(_) => "Something went wrong on the relay; it has been logged.".into(),
        other => other.to_string(),
    }
}

/// The flash of a failed operation, with its status.
pub fn failure(error: &ApiError) -> (StatusCode, Flash) {
    use actix_web::ResponseError;
    (error.status_code(), Flash::error(message(error)))
}

/// A rendered page.
pub fn page(status: StatusCode, template: &impl Template) -> HttpResponse {
    match template.render() {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => HttpResponse::from_error(actix_web::Error::from(ApiError::Internal(format!(
            "a dashboard template failed: {e}"
        )))),
    }
}

/// A page with 200.
pub fn ok(template: &impl Template) -> HttpResponse {
    page(StatusCode::OK, template)
}

/// A `303 See Other` to `to` (after a form post).
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// The message a `done=` code in a redirect stands for (fixed texts only: nothing a link could
/// choose reaches the page).
pub fn done(code: Option<&str>) -> Option<Flash> {
    let text = match code? {
        "saved" => "Saved.",
        "revoked" => "The device is revoked; its sockets are closed.",
        "signing-rotated" => "A new signing key is in use; tokens signed by the old one stay valid until they expire.",
        "data-rotated" => "New data keys are in use; older rows are being re-encrypted in the background.",
        "renewed" => "The certificate is renewed and served to new connections.",
        "unblocked" => "The address is unblocked.",
        "token-revoked" => "The token is revoked; it stops working at once.",
        "verified" => "The audit log was verified; the result is below.",
        "session-cap" => "You already had the most sessions allowed, so your oldest session was logged out.",
        "logged-out" => "You are logged out.",
        _ => return None,
    };
    Some(Flash::ok(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::FieldError;

    #[test]
    fn messages_list_fields_and_hide_internal_details() {
        let e = ApiError::invalid(vec![
            FieldError::new("title", "must not be empty"),
            FieldError::new("priority", "must be one of low, normal, high, critical"),
        ]);
        assert_eq!(
            message(&e),
            "title: must not be empty; priority: must be one of low, normal, high, critical"
        );
        assert!(!message(&ApiError::Internal("db path /x".into())).contains("/x"));
        assert_eq!(message(&ApiError::Conflict("taken".into())), "taken");
        let (status, flash) = failure(&ApiError::NotFound("no device".into()));
        assert_eq!((status, flash.kind), (StatusCode::NOT_FOUND, "error"));
    }

    #[test]
    fn the_csrf_token_is_not_in_debug_output() {
        let layout = Layout {
            username: "alice".into(),
            csrf: "s3cret-token".into(),
            section: "overview",
            flash: None,
        };
        let text = format!("{layout:?}");
        assert!(
            text.contains("alice") && !text.contains("s3cret-token"),
            "{text}"
        );
    }

    #[test]
    fn done_codes_are_fixed_texts() {
        assert!(done(Some("saved")).is_some());
        assert_eq!(done(Some("<script>")), None);
        assert_eq!(done(None), None);
    }
}
