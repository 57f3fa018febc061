//! Queries on `api_tokens` and `device_tokens` (refresh tokens). Only hashes are stored.

use super::Db;
use diesel::prelude::*;

use super::schema::{api_tokens, device_tokens};

/// An API token row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_tokens)]
pub struct ApiTokenRow {
    /// `tok_…`
    pub id: String,
    /// What the operator called it.
    pub name: String,
    /// `admin` or `publish`.
    pub scope: String,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// Created at, epoch ms.
    pub created_at: i64,
    /// Last used at, epoch ms (updated at most once a minute).
    pub last_used_at: Option<i64>,
}

/// Inserts an API token.
pub fn insert_api(conn: &mut Db, row: &ApiTokenRow) -> QueryResult<()> {
    diesel::insert_into(api_tokens::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// The API token with this hash.
pub fn api_by_hash(conn: &mut Db, hash: &str) -> QueryResult<Option<ApiTokenRow>> {
    api_tokens::table
        .filter(api_tokens::token_hash.eq(hash))
        .select(ApiTokenRow::as_select())
        .first(conn)
        .optional()
}

/// A page of API tokens in id order.
pub fn list_api(conn: &mut Db, after: Option<&str>, limit: i64) -> QueryResult<Vec<ApiTokenRow>> {
    let mut query = api_tokens::table
        .select(ApiTokenRow::as_select())
        .order(api_tokens::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(api_tokens::id.gt(after.to_owned()));
    }
    query.load(conn)
}

/// Deletes an API token; returns its hash if it existed.
pub fn delete_api(conn: &mut Db, id: &str) -> QueryResult<Option<String>> {
    let hash = api_tokens::table
        .find(id)
        .select(api_tokens::token_hash)
        .first::<String>(conn)
        .optional()?;
    if hash.is_some() {
        diesel::delete(api_tokens::table.find(id)).execute(conn)?;
    }
    Ok(hash)
}

/// Records use of an API token.
pub fn touch_api(conn: &mut Db, id: &str, at: i64) -> QueryResult<()> {
    diesel::update(api_tokens::table.find(id))
        .set(api_tokens::last_used_at.eq(at))
        .execute(conn)
        .map(|_| ())
}

/// A refresh token row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = device_tokens)]
pub struct RefreshTokenRow {
    /// Row id (a ULID).
    pub id: String,
    /// Whose it is.
    pub device_id: String,
    /// All refresh tokens descending from one pairing share a family.
    pub family_id: String,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// Issued at, epoch ms.
    pub created_at: i64,
    /// Expires at, epoch ms.
    pub expires_at: i64,
    /// When it was exchanged (single use).
    pub used_at: Option<i64>,
    /// When its family was revoked.
    pub revoked_at: Option<i64>,
}

/// Inserts a refresh token.
pub fn insert_refresh(conn: &mut Db, row: &RefreshTokenRow) -> QueryResult<()> {
    diesel::insert_into(device_tokens::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// The refresh token with this hash.
pub fn refresh_by_hash(conn: &mut Db, hash: &str) -> QueryResult<Option<RefreshTokenRow>> {
    device_tokens::table
        .filter(device_tokens::token_hash.eq(hash))
        .select(RefreshTokenRow::as_select())
        .first(conn)
        .optional()
}

/// Marks a refresh token used if it was not yet; whether this call did.
pub fn use_refresh(conn: &mut Db, id: &str, now: i64) -> QueryResult<bool> {
    diesel::update(
        device_tokens::table
            .find(id)
            .filter(device_tokens::used_at.is_null()),
    )
    .set(device_tokens::used_at.eq(now))
    .execute(conn)
    .map(|n| n == 1)
}

/// Revokes every token of a family.
pub fn revoke_family(conn: &mut Db, family: &str, now: i64) -> QueryResult<usize> {
    diesel::update(
        device_tokens::table
            .filter(device_tokens::family_id.eq(family))
            .filter(device_tokens::revoked_at.is_null()),
    )
    .set(device_tokens::revoked_at.eq(now))
    .execute(conn)
}

/// Revokes every refresh-token family of a device (a device has one, begun when it paired): used
/// by logout. Returns how many tokens it revoked.
pub fn revoke_families_of_device(conn: &mut Db, device_id: &str, now: i64) -> QueryResult<usize> {
    let families: Vec<String> = device_tokens::table
        .filter(device_tokens::device_id.eq(device_id))
        .filter(device_tokens::revoked_at.is_null())
        .select(device_tokens::family_id)
        .distinct()
        .load(conn)?;
    diesel::update(
        device_tokens::table
            .filter(device_tokens::family_id.eq_any(families))
            .filter(device_tokens::revoked_at.is_null()),
    )
    .set(device_tokens::revoked_at.eq(now))
    .execute(conn)
}
