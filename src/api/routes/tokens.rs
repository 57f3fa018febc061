//! API tokens: `POST /tokens`, `GET /tokens`, `DELETE /tokens/{id}` (admin).
//!
//! A token is shown once, when it is created; the store keeps only its SHA-256.

use crate::store::Db;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use beepmyphone_actors::model::rfc3339;

use beepmyphone_actors::ports::{Action, Outcome};

use crate::api::audited::AuditContext;
use crate::api::auth::Principal;
use crate::api::body::Json;
use crate::api::middleware::RequestLog;
use crate::api::page_limit;
use crate::api::schemas::{check, CreateTokenRequest, Page, TokenListQuery};
use crate::crypto::secrets::{hash_secret, new_api_token, ExposeSecret, SecretString};
use crate::domain::Scope;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::tokens::{self, ApiTokenRow};
use crate::store::StoreError;

/// This module's operations in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create_token, list_tokens, delete_token))]
pub struct Api;

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::post().to(create_token))
        .route("/tokens", web::get().to(list_tokens))
        .route("/tokens/{id}", web::delete().to(delete_token));
}

/// Creates an API token in the store; used by the API, `beepmyphone token create` and first start.
pub fn mint_api_token(
    conn: &mut Db,
    name: &str,
    scope: Scope,
    now_ms: i64,
) -> Result<(ApiTokenRow, SecretString), StoreError> {
    let secret = new_api_token();
    let row = ApiTokenRow {
        id: format!("tok_{}", ulid::Ulid::new()),
        name: name.to_owned(),
        scope: scope.as_str().to_owned(),
        token_hash: hash_secret(secret.expose_secret()),
        created_at: now_ms,
        last_used_at: None,
    };
    tokens::insert_api(conn, &row)?;
    Ok((row, secret))
}

/// A token as listed (never the secret).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) scope: String,
    pub(crate) created_at: String,
    pub(crate) last_used_at: Option<String>,
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

/// A new token with its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    #[serde(flatten)]
    pub(crate) view: TokenView,
    /// The secret, shown this once.
    pub(crate) token: String,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, description = "The token; its secret is shown this once", body = CreatedToken)))]
async fn create_token(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    principal: Principal,
    Json(request): Json<CreateTokenRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(create(&state, &log, &source, &principal, request).await?))
}

/// Creates an API token (admin); recorded before it exists.
pub(crate) async fn create(
    state: &AppState,
    log: &RequestLog,
    source: &AuditContext,
    principal: &Principal,
    request: CreateTokenRequest,
) -> Result<CreatedToken, ApiError> {
    principal.require_admin()?;
    check(&request)?;
    let scope = Scope::parse(&request.scope)
        .ok_or_else(|| ApiError::field("scope", "must be admin, publish or metrics"))?;
    let now = state.clock.now_ms();
    let name = request.name;
    let details = serde_json::json!({ "name": name, "scope": scope.as_str() });
    // A new credential is never made unrecorded.
    state
        .audit
        .record_now(
            source
                .by(principal, Action::TokenCreated, Outcome::Requested)
                .with_details(details.clone()),
        )
        .await?;
    let (row, secret) = state
        .store
        .write(move |conn| mint_api_token(conn, &name, scope, now))
        .await?;
    slog::info!(log, "api token created"; "token_id" => &row.id, "scope" => scope.as_str());
    state
        .audit
        .record_result(
            source
                .by(principal, Action::TokenCreated, Outcome::Ok)
                .on(row.id.clone())
                .with_details(details),
            log,
        )
        .await;
    Ok(CreatedToken {
        view: row.into(),
        token: secret.expose_secret().to_owned(),
    })
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", params(TokenListQuery),
    responses((status = 200, description = "API tokens (never their secrets)", body = Page<TokenView>)))]
async fn list_tokens(
    state: web::Data<AppState>,
    principal: Principal,
    query: web::Query<TokenListQuery>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(list(&state, &principal, query.into_inner()).await?))
}

/// A page of API tokens (admin), never their secrets.
pub(crate) async fn list(
    state: &AppState,
    principal: &Principal,
    query: TokenListQuery,
) -> Result<Page<TokenView>, ApiError> {
    principal.require_admin()?;
    check(&query)?;
    let limit = page_limit(query.limit)?;
    let after = query.cursor.clone();
    let rows = state
        .store
        .run(move |conn| Ok(tokens::list_api(conn, after.as_deref(), limit)?))
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    let items: Vec<TokenView> = rows.into_iter().map(TokenView::from).collect();
    Ok(Page { items, next_cursor })
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "a token id (tok_…)")),
    responses((status = 204, description = "Deleted; it stops working at once")))]
async fn delete_token(
    state: web::Data<AppState>,
    log: RequestLog,
    source: AuditContext,
    principal: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    delete(&state, &log, &source, &principal, path.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes an API token (admin); it stops working at once.
pub(crate) async fn delete(
    state: &AppState,
    log: &RequestLog,
    source: &AuditContext,
    principal: &Principal,
    id: String,
) -> Result<(), ApiError> {
    principal.require_admin()?;
    let lookup = id.clone();
    let hash = state
        .store
        .write(move |conn| Ok(tokens::delete_api(conn, &lookup)?))
        .await?;
    let hash = hash.ok_or_else(|| ApiError::NotFound(format!("no token {id}")))?;
    state.api_tokens.remove(&hash);
    slog::info!(log, "api token deleted"; "token_id" => &id);
    state.audit.record(
        source
            .by(principal, Action::TokenDeleted, Outcome::Ok)
            .on(id),
    );
    Ok(())
}
