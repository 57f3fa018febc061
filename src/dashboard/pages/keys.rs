//! Keys: `GET /dashboard/keys` (signing keys and data keys with their state and age, and the
//! re-encryption job), `GET /dashboard/keys/rotate?what=signing|data` (confirmation) and
//! `POST /dashboard/keys/rotate` (the API's rotation, recorded in the audit log before and after).

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use crate::api::audited::AuditContext;
use crate::api::routes::datakeys::{self, DataKeysView};
use crate::api::routes::keys::{self, KeyView};
use crate::dashboard::guard::{Admin, Submitted};
use crate::dashboard::view::{self, Confirm, Flash, Layout};
use crate::error::ApiError;
use crate::state::AppState;

/// The keys page.
#[derive(Template)]
#[template(path = "keys.html", config = "src/dashboard/askama.toml")]
struct Keys {
    layout: Layout,
    signing: Vec<KeyView>,
    data: Option<DataKeysView>,
    now_ms: i64,
}

impl Keys {
    /// How old a key created at `created` (RFC 3339) is, in words.
    fn age(&self, created: &str) -> String {
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(created) else {
            return String::new();
        };
        let days = (self.now_ms - at.timestamp_millis()).max(0) / 86_400_000;
        match days {
            0 => "today".into(),
            1 => "1 day".into(),
            n => format!("{n} days"),
        }
    }
}

/// `?done=`.
#[derive(Deserialize)]
pub struct Done {
    done: Option<String>,
}

async fn keys_page(
    state: &AppState,
    admin: &Admin,
    status: actix_web::http::StatusCode,
    flash: Option<Flash>,
) -> HttpResponse {
    let (data, flash) = match datakeys::data_keys(state).await {
        Ok(data) => (Some(data), flash),
        Err(e) => (None, flash.or_else(|| Some(view::failure(&e).1))),
    };
    view::page(
        status,
        &Keys {
            layout: Layout::new(admin, "keys").with(flash),
            signing: keys::signing_keys(state),
            data,
            now_ms: state.clock.now_ms(),
        },
    )
}

/// `GET /dashboard/keys`.
pub async fn list(
    state: web::Data<AppState>,
    admin: Admin,
    query: web::Query<Done>,
) -> HttpResponse {
    keys_page(
        &state,
        &admin,
        actix_web::http::StatusCode::OK,
        view::done(query.done.as_deref()),
    )
    .await
}

/// Which keys: `signing` or `data`.
#[derive(Deserialize)]
pub struct What {
    #[serde(default)]
    what: String,
}

/// `GET /dashboard/keys/rotate?what=…`: are you sure?
pub async fn confirm(admin: Admin, query: web::Query<What>) -> Result<HttpResponse, ApiError> {
    let (title, question, consequence) = match query.what.as_str() {
        "signing" => (
            "Rotate the signing key",
            "Make a new key to sign device tokens?",
            "New access tokens are signed with it at once. Tokens signed with the old key stay valid until they expire; the old key keeps verifying them until then.",
        ),
        "data" => (
            "Rotate the data keys",
            "Make new keys for notification contents, devices and sessions?",
            "New values are sealed under the new keys at once; older rows are re-encrypted in the background, and the old keys decrypt until that is done.",
        ),
        _ => return Err(ApiError::field("what", "must be signing or data")),
    };
    Ok(view::ok(&Confirm {
        layout: Layout::new(&admin, "keys"),
        title: title.into(),
        question: question.into(),
        consequence,
        action: "/dashboard/keys/rotate".into(),
        fields: vec![("what", query.what.clone())],
        confirm: "Rotate",
        cancel: "/dashboard/keys".into(),
    }))
}

/// `POST /dashboard/keys/rotate`.
pub async fn rotate(
    state: web::Data<AppState>,
    source: AuditContext,
    posted: Submitted<What>,
) -> HttpResponse {
    let Submitted { admin, form } = posted;
    let result = match form.what.as_str() {
        "signing" => keys::rotate(&state, &source, &admin.principal)
            .await
            .map(|_| "signing-rotated"),
        "data" => datakeys::rotate(&state, &source, &admin.principal)
            .await
            .map(|_| "data-rotated"),
        _ => Err(ApiError::field("what", "must be signing or data")),
    };
    match result {
        Ok(done) => view::see_other(&format!("/dashboard/keys?done={done}")),
        Err(e) => {
            let (status, flash) = view::failure(&e);
            keys_page(&state, &admin, status, Some(flash)).await
        }
    }
}
