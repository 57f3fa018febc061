//! API tokens: `POST /tokens`, `GET /tokens`, `DELETE /tokens/{id}` (admin).
//!
//! A token is shown once, when it is created; the store keeps only its SHA-256.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use beepmyphone_actors::model::rfc3339;

use crate::api::auth::Principal;
use crate::api::body::Json;
use crate::api::schemas::{check_text, CreateTokenRequest, Errors, Page};
use crate::api::{decode_cursor, encode_cursor, page_limit};
use crate::error::ApiError;
use crate::security::secrets::{hash_secret, new_api_token, Secret};
use crate::state::{AppState, Scope};
use crate::store::tokens::{self, ApiTokenRow};
use crate::store::StoreError;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::post().to(create_token))
        .route("/tokens", web::get().to(list_tokens))
        .route("/tokens/{id}", web::delete().to(delete_token));
}

/// Creates an API token in the store; used by the API, `beepmyphone token create` and first start.
pub fn mint_api_token(
    conn: &mut diesel::SqliteConnection,
    name: &str,
    scope: Scope,
    now_ms: i64,
) -> Result<(ApiTokenRow, Secret), StoreError> {
    let secret = new_api_token();
    let row = ApiTokenRow {
        id: format!("tok_{}", ulid::Ulid::new()),
        name: name.to_owned(),
        scope: scope.as_str().to_owned(),
        token_hash: hash_secret(secret.expose()),
        created_at: now_ms,
        last_used_at: None,
    };
    tokens::insert_api(conn, &row)?;
    Ok((row, secret))
}

/// A token as listed (never the secret).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenView {
    id: String,
    name: String,
    scope: String,
    created_at: String,
    last_used_at: Option<String>,
}

impl From<ApiTokenRow> for TokenView {
    fn from(row: ApiTokenRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            scope: row.scope,
            created_at: rfc3339(row.created_at),
            last_used_at: row.last_used_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedToken {
    #[serde(flatten)]
    view: TokenView,
    /// The secret, shown this once.
    token: String,
}

async fn create_token(
    state: web::Data<AppState>,
    principal: Principal,
    Json(request): Json<CreateTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let mut errors = Errors::default();
    check_text(&mut errors, "name", &request.name, 1, 64, false);
    let scope = Scope::parse(&request.scope);
    if scope.is_none() {
        errors.add("scope", "must be admin or publish");
    }
    let Some(scope) = scope.filter(|_| errors.list.is_empty()) else {
        return Err(ApiError::invalid(errors.list));
    };
    let now = state.clock.now_ms();
    let name = request.name;
    let (row, secret) = state
        .store
        .run(move |conn| mint_api_token(conn, &name, scope, now))
        .await?;
    slog::info!(state.log, "api token created"; "token_id" => &row.id, "scope" => scope.as_str());
    Ok(HttpResponse::Created().json(CreatedToken {
        view: row.into(),
        token: secret.expose().to_owned(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_tokens(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let limit = page_limit(query.limit)?;
    let after = decode_cursor(query.cursor.as_deref())?;
    let rows = state
        .store
        .run(move |conn| Ok(tokens::list_api(conn, after.as_deref(), limit)?))
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| encode_cursor(&r.id)))
        .flatten();
    let items: Vec<TokenView> = rows.into_iter().map(TokenView::from).collect();
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}

async fn delete_token(
    state: web::Data<AppState>,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let id = path.into_inner();
    let lookup = id.clone();
    let hash = state
        .store
        .run(move |conn| Ok(tokens::delete_api(conn, &lookup)?))
        .await?;
    let hash = hash.ok_or_else(|| ApiError::NotFound(format!("no token {id}")))?;
    state.api_tokens.remove(&hash);
    slog::info!(state.log, "api token deleted"; "token_id" => &id);
    Ok(HttpResponse::NoContent().finish())
}
