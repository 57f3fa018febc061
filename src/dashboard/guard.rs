//! Who may use a dashboard page, and how its forms are checked.
//!
//! [`Admin`] is an admin session (the `beep_session` cookie, authenticated by
//! [`crate::api::auth::authenticate_request`] like any API call); without one, a page redirects
//! to the login. A form post goes through [`Submitted`], which also requires the session's CSRF
//! token in the form's `csrf` field (compared in constant time) and a same-origin request
//! (`Sec-Fetch-Site`, else `Origin`); [`Admin`] alone refuses anything but GET and HEAD, so no
//! handler can forget the check. The login form has no session yet: it is checked for the same
//! origin only ([`same_origin`]).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::api::auth::{Principal, SessionCsrf};
use crate::crypto::secrets::{constant_time_eq, ExposeSecret};
use crate::error::ApiError;

/// Where a page without a session sends the browser.
pub const LOGIN_PAGE: &str = "/dashboard/login";

/// An admin with a dashboard session.
#[derive(Clone)]
pub struct Admin {
    /// The session, as the API sees it (handlers pass it to the API's operations).
    pub principal: Principal,
    /// The admin's name.
    pub username: String,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("principal", &self.principal)
            .field("username", &self.username)
            .field("csrf", &"[REDACTED]")
            .finish()
    }
}

/// Why a dashboard request was refused before its handler ran.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No session: log in first.
    #[error("log in to use the dashboard")]
    LogIn,
    /// A form without the session's CSRF token, or from another origin.
    #[error("{0}")]
    Forged(&'static str),
    /// The form could not be read.
    #[error("{0}")]
    BadForm(String),
}

impl ResponseError for Refused {
    fn status_code(&self) -> StatusCode {
        match self {
            Refused::LogIn => StatusCode::SEE_OTHER,
            Refused::Forged(_) => StatusCode::FORBIDDEN,
            Refused::BadForm(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Refused::LogIn => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, LOGIN_PAGE))
                .finish(),
            // Rendered as a page by `errors::html_errors`, like every other refusal.
            other => HttpResponse::from_error(actix_web::Error::from(match other {
                Refused::Forged(why) => ApiError::Forbidden((*why).into()),
                _ => ApiError::field("form", other.to_string()),
            })),
        }
    }
}

fn admin_of(req: &HttpRequest) -> Result<Admin, Refused> {
    let extensions = req.extensions();
    match (
        extensions.get::<Principal>(),
        extensions.get::<SessionCsrf>(),
    ) {
        (Some(principal @ Principal::Session { username, .. }), Some(SessionCsrf(csrf))) => {
            Ok(Admin {
                username: username.clone(),
                csrf: csrf.expose_secret().to_owned(),
                principal: principal.clone(),
            })
        }
        // A bearer token is for the API; the dashboard is for people with a session.
        _ => Err(Refused::LogIn),
    }
}

impl FromRequest for Admin {
    type Error = Refused;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let admin = admin_of(req).and_then(|admin| {
            if matches!(*req.method(), Method::GET | Method::HEAD) {
                Ok(admin)
            } else {
                Err(Refused::Forged(
                    "a dashboard form must carry its CSRF token",
                ))
            }
        });
        std::future::ready(admin)
    }
}

/// Whether the request came from a page of this relay: `Sec-Fetch-Site` is `same-origin` (or
/// `none`, typed by the user), or, from a browser that does not send it, `Origin` names the
/// `Host` the request was sent to. A request with neither header is not from a browser page
/// (browsers send `Origin` on every form post), so no other site can have forged it.
pub fn same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| !host.is_empty() && authority.eq_ignore_ascii_case(host))
}

/// A form with no fields but the CSRF token (a button).
#[derive(Debug, Deserialize)]
pub struct NoFields {}

/// A form with the session's CSRF token.
#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

/// A checked form post: the admin, and the form's fields.
#[derive(Debug)]
pub struct Submitted<T> {
    /// Who posted it.
    pub admin: Admin,
    /// The fields (besides `csrf`).
    pub form: T,
}

impl<T: DeserializeOwned + 'static> FromRequest for Submitted<T> {
    type Error = Refused;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let admin = admin_of(req);
        let origin_ok = same_origin(req);
        let form = web::Form::<WithCsrf<T>>::from_request(req, payload);
        Box::pin(async move {
            let admin = admin?;
            if !origin_ok {
                return Err(Refused::Forged("the form was posted from another site"));
            }
            let web::Form(WithCsrf { csrf, form }) =
                form.await.map_err(|e| Refused::BadForm(e.to_string()))?;
            if !constant_time_eq(&csrf, &admin.csrf) {
                return Err(Refused::Forged(
                    "the form's CSRF token is missing or stale; reload the page and try again",
                ));
            }
            Ok(Submitted { admin, form })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn same_origin_trusts_fetch_metadata_then_origin() {
        let check = |headers: &[(&str, &str)]| {
            let mut req = TestRequest::post().insert_header(("host", "relay.lan:8080"));
            for h in headers {
                req = req.insert_header(*h);
            }
            same_origin(&req.to_http_request())
        };
        assert!(check(&[]));
        assert!(check(&[("sec-fetch-site", "same-origin")]));
        assert!(check(&[("sec-fetch-site", "none")]));
        assert!(!check(&[("sec-fetch-site", "cross-site")]));
        assert!(!check(&[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://relay.lan:8080")
        ]));
        assert!(check(&[("origin", "http://relay.lan:8080")]));
        assert!(check(&[("origin", "https://RELAY.lan:8080")]));
        assert!(!check(&[("origin", "http://evil.example")]));
        assert!(!check(&[("origin", "null")]));
    }

    fn with_session(req: TestRequest) -> HttpRequest {
        let req = req.to_http_request();
        add_session(&req);
        req
    }

    fn add_session(req: &HttpRequest) {
        req.extensions_mut().insert(Principal::Session {
            admin_id: crate::domain::AdminId::from_trusted("adm_1"),
            username: "alice".into(),
            id_hash: "h".into(),
            public_id: crate::domain::SessionId::from_trusted("ses_1"),
        });
        req.extensions_mut()
            .insert(SessionCsrf(crate::crypto::secrets::secret_string(
                "the-token".into(),
            )));
    }

    #[actix_rt::test]
    async fn a_page_needs_a_session_and_only_reads() {
        let mut payload = Payload::None;
        let get = with_session(TestRequest::get());
        let admin = Admin::from_request(&get, &mut payload).await.unwrap();
        assert_eq!(
            (admin.username.as_str(), admin.csrf.as_str()),
            ("alice", "the-token")
        );
        assert!(
            !format!("{admin:?}").contains("the-token"),
            "not in Debug output"
        );
        let post = with_session(TestRequest::post());
        assert!(matches!(
            Admin::from_request(&post, &mut payload).await,
            Err(Refused::Forged(_))
        ));
        let anonymous = TestRequest::get().to_http_request();
        assert!(matches!(
            Admin::from_request(&anonymous, &mut payload).await,
            Err(Refused::LogIn)
        ));
    }

    #[derive(Debug, Deserialize)]
    struct Name {
        name: String,
    }

    #[actix_rt::test]
    async fn a_form_needs_the_token_this_origin_and_a_form_body() {
        let submit = |body: &'static str, content_type: &'static str, site: &'static str| {
            let (req, mut payload) = TestRequest::post()
                .insert_header(("content-type", content_type))
                .insert_header(("sec-fetch-site", site))
                .set_payload(body)
                .to_http_parts();
            add_session(&req);
            async move { Submitted::<Name>::from_request(&req, &mut payload).await }
        };
        let form = "application/x-www-form-urlencoded";
        let ok = submit("csrf=the-token&name=x", form, "same-origin")
            .await
            .unwrap();
        assert_eq!(ok.form.name, "x");
        assert!(matches!(
            submit("csrf=wrong&name=x", form, "same-origin").await,
            Err(Refused::Forged(_))
        ));
        assert!(matches!(
            submit("csrf=the-token&name=x", form, "cross-site").await,
            Err(Refused::Forged(_))
        ));
        let json = submit("{\"name\":\"x\"}", "application/json", "same-origin").await;
        assert!(matches!(json, Err(Refused::BadForm(_))), "{json:?}");
    }

    #[test]
    fn refusals_are_a_redirect_to_the_login_or_a_problem() {
        let login = Refused::LogIn.error_response();
        assert_eq!(login.status(), StatusCode::SEE_OTHER);
        assert_eq!(login.headers().get(header::LOCATION).unwrap(), LOGIN_PAGE);
        assert_eq!(
            Refused::Forged("x").error_response().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            Refused::BadForm("x".into()).error_response().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
