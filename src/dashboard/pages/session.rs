//! Logging in and out: `GET|POST /dashboard/login`, `POST /dashboard/logout`.
//!
//! The form posts to the same [`log_in`] the API's `POST /auth/login` uses (same password check,
//! same audit records, same session cap and the same `auth` rate limit on failures), then sets
//! the same cookie. A login that ended the oldest session because of the cap says so on the next
//! page.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::api::middleware::RequestLog;
use crate::api::routes::auth::{clear_session_cookie, end_session, log_in, set_session_cookie};
use crate::api::schemas::LoginRequest;
use crate::crypto::secrets::secret_string;
use crate::dashboard::errors::LoginPage;
use crate::dashboard::guard::{same_origin, NoFields, Submitted};
use crate::dashboard::view::{self, Flash};
use crate::state::AppState;

/// `?done=` on the login page.
#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `GET /dashboard/login`: the form, or the overview for someone already logged in.
pub async fn login_page(req: HttpRequest, query: web::Query<Done>) -> HttpResponse {
    use actix_web::HttpMessage;
    if matches!(
        req.extensions().get::<Principal>(),
        Some(Principal::Session { .. })
    ) {
        return view::see_other("/dashboard/");
    }
    view::ok(&LoginPage {
        flash: view::done(query.done.as_deref()),
        username: String::new(),
    })
}

/// `POST /dashboard/login`.
pub async fn login(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let LoginForm { username, password } = form.into_inner();
    let refused = |status, text: String, username: String| {
        view::page(
            status,
            &LoginPage {
                flash: Some(Flash::error(text)),
                username,
            },
        )
    };
    if !same_origin(&req) {
        return refused(
            actix_web::http::StatusCode::FORBIDDEN,
            "The login form was posted from another site.".into(),
            String::new(),
        );
    }
    let request = LoginRequest {
        username: username.clone(),
        password: secret_string(password),
    };
    match log_in(&state, &log, &source, request).await {
        Ok(new) => {
            let to = if new.ended > 0 {
                "/dashboard/?done=session-cap"
            } else {
                "/dashboard/"
            };
            let mut response = HttpResponse::SeeOther();
            if let Err(e) = set_session_cookie(&mut response, &req, &state, &new) {
                let (status, flash) = view::failure(&e);
                return refused(status, flash.text, username);
            }
            response
                .insert_header((actix_web::http::header::LOCATION, to))
                .finish()
        }
        Err(e) => {
            let (status, flash) = view::failure(&e);
            refused(status, flash.text, username)
        }
    }
}

/// `POST /dashboard/logout`: ends the session (as `POST /auth/logout` does) and clears the cookie.
pub async fn logout(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    req: HttpRequest,
    posted: Submitted<NoFields>,
) -> HttpResponse {
    let mut response = HttpResponse::SeeOther();
    if let Err(e) = end_session(&state, &log, &source, &posted.admin.principal).await {
        let (status, flash) = view::failure(&e);
        return view::page(
            status,
            &LoginPage {
                flash: Some(flash),
                username: String::new(),
            },
        );
    }
    // Clearing a cookie cannot fail for a fixed value; a failure would only leave it to expire.
    let _ = clear_session_cookie(&mut response, &req);
    response
        .insert_header((
            actix_web::http::header::LOCATION,
            "/dashboard/login?done=logged-out",
        ))
        .finish()
}
