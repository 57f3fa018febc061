//! API tokens: `GET /dashboard/tokens` (the list; never a secret), `POST /dashboard/tokens`
//! (creates one through the API's operation and shows its secret this once, on a page that is
//! never cached), `GET|POST /dashboard/tokens/{id}/revoke`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::api::audited::AuditContext;
use crate::api::middleware::RequestLog;
use crate::api::routes::tokens::{self, CreatedToken, TokenView};
use crate::api::schemas::{CreateTokenRequest, TokenListQuery};
use crate::dashboard::guard::{Admin, NoFields, Submitted};
use crate::dashboard::view::{self, Confirm, Flash, Layout};
use crate::error::ApiError;
use crate::state::AppState;

/// The tokens page.
#[derive(Template)]
#[template(path = "tokens.html", config = "src/dashboard/askama.toml")]
struct Tokens {
    layout: Layout,
    tokens: Vec<TokenView>,
    created: Option<CreatedToken>,
    next: Option<String>,
}

/// `?cursor=&done=`.
#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    done: Option<String>,
}

async fn tokens_page(
    state: &AppState,
    admin: &Admin,
    status: StatusCode,
    flash: Option<Flash>,
    created: Option<CreatedToken>,
    cursor: Option<String>,
) -> HttpResponse {
    let query = TokenListQuery {
        limit: Some(100),
        cursor,
    };
    let (tokens, next, flash) = match tokens::list(state, &admin.principal, query).await {
        Ok(page) => (page.items, page.next_cursor, flash),
        Err(e) => (Vec::new(), None, Some(view::failure(&e).1)),
    };
    view::page(
        status,
        &Tokens {
            layout: Layout::new(admin, "tokens").with(flash),
            tokens,
            created,
            next,
        },
    )
}

/// `GET /dashboard/tokens`.
pub async fn list(
    state: web::Data<AppState>,
    admin: Admin,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    let ListQuery { cursor, done } = query.into_inner();
    tokens_page(
        &state,
        &admin,
        StatusCode::OK,
        view::done(done.as_deref()),
        None,
        cursor,
    )
    .await
}

/// The create form.
#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
}

/// `POST /dashboard/tokens`.
pub async fn create(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    posted: Submitted<CreateForm>,
) -> HttpResponse {
    let Submitted { admin, form } = posted;
    let request = CreateTokenRequest {
        name: form.name.trim().to_owned(),
        scope: form.scope,
    };
    match tokens::create(&state, &log, &source, &admin.principal, request).await {
        Ok(created) => {
            let flash = Flash::ok("Token created. Copy its secret now: it is not shown again.");
            tokens_page(
                &state,
                &admin,
                StatusCode::CREATED,
                Some(flash),
                Some(created),
                None,
            )
            .await
        }
        Err(e) => {
            let (status, flash) = view::failure(&e);
            tokens_page(&state, &admin, status, Some(flash), None, None).await
        }
    }
}

/// A token id as the relay makes them (`tok_` and a ULID), or 404: the id goes into a form's
/// address, which must stay this token's.
fn token_id(raw: &str) -> Result<&str, ApiError> {
    let ok = raw
        .strip_prefix("tok_")
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(raw)
    } else {
        Err(ApiError::NotFound(format!("no token {raw}")))
    }
}

/// `GET /dashboard/tokens/{id}/revoke`: are you sure?
pub async fn confirm_revoke(admin: Admin, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = token_id(&id)?;
    Ok(view::ok(&Confirm {
        layout: Layout::new(&admin, "tokens"),
        title: "Revoke a token".into(),
        question: format!("Revoke the API token {id}?"),
        consequence: "Whatever uses it is refused from now on; this cannot be undone.",
        action: format!("/dashboard/tokens/{id}/revoke"),
        fields: Vec::new(),
        confirm: "Revoke the token",
        cancel: "/dashboard/tokens".into(),
    }))
}

/// `POST /dashboard/tokens/{id}/revoke`.
pub async fn revoke(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    id: web::Path<String>,
    posted: Submitted<NoFields>,
) -> Result<HttpResponse, ApiError> {
    tokens::delete(
        &state,
        &log,
        &source,
        &posted.admin.principal,
        id.into_inner(),
    )
    .await?;
    Ok(view::see_other("/dashboard/tokens?done=token-revoked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_ids_reach_a_form_address() {
        assert!(token_id("tok_01M8W3TPMAWGWHY24J6ZS0DYXG").is_ok());
        for bad in ["tok_", "..", "tok_../devices/dev_1", "tok_a?b", "dev_01M8"] {
            assert!(token_id(bad).is_err(), "{bad}");
        }
    }
}
