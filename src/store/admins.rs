//! Queries on `admins` (dashboard accounts; bcrypt hashes only) and `admin_sessions` (the embedded
//! session backend: SHA-256 of the session id, and the session record sealed under the data key).

use super::db::{Db, WriteTransaction};
use diesel::prelude::*;

use super::schema::{admin_sessions, admins};

/// An admin account.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = admins)]
pub struct AdminRow {
    /// `adm_…`
    pub id: String,
    /// The login name (unique).
    pub username: String,
    /// bcrypt hash of the password.
    pub password_hash: String,
    /// Created at, epoch ms.
    pub created_at: i64,
    /// Password last changed at, epoch ms.
    pub updated_at: i64,
}

/// Inserts an admin.
pub fn insert(conn: &mut Db, row: &AdminRow) -> QueryResult<()> {
    diesel::insert_into(admins::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// The admin with this name.
pub fn by_username(conn: &mut Db, username: &str) -> QueryResult<Option<AdminRow>> {
    admins::table
        .filter(admins::username.eq(username))
        .select(AdminRow::as_select())
        .first(conn)
        .optional()
}

/// Every admin, by name.
pub fn list(conn: &mut Db) -> QueryResult<Vec<AdminRow>> {
    admins::table
        .order(admins::username.asc())
        .select(AdminRow::as_select())
        .load(conn)
}

/// Replaces an admin's password hash; whether the admin exists.
pub fn set_password(conn: &mut Db, id: &str, hash: &str, now: i64) -> QueryResult<bool> {
    diesel::update(admins::table.find(id))
        .set((admins::password_hash.eq(hash), admins::updated_at.eq(now)))
        .execute(conn)
        .map(|n| n == 1)
}

/// Deletes an admin (its embedded sessions cascade); whether it existed.
pub fn delete(conn: &mut Db, id: &str) -> QueryResult<bool> {
    diesel::delete(admins::table.find(id))
        .execute(conn)
        .map(|n| n == 1)
}

/// A stored admin session.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = admin_sessions)]
pub struct SessionRow {
    /// Hex SHA-256 of the session id.
    pub id_hash: String,
    /// Whose session it is.
    pub admin_id: String,
    /// The session record, sealed with the data key (associated data: `id_hash`).
    pub data: Vec<u8>,
    /// Created at, epoch ms (orders sessions for the per-admin cap).
    pub created_at: i64,
    /// When it ends unless used again, epoch ms (for the sweep).
    pub expires_at: i64,
}

/// Inserts a session, ends the admin's expired sessions and, beyond `max` live ones, the oldest;
/// returns the id hashes it ended. One transaction, so concurrent logins cannot exceed the cap.
pub fn insert_session_capped(
    conn: &mut Db,
    row: &SessionRow,
    max: usize,
    now: i64,
) -> QueryResult<Vec<String>> {
    conn.immediate_transaction(|conn| {
        diesel::insert_into(admin_sessions::table)
            .values(row)
            .execute(conn)?;
        let mut ended: Vec<String> = admin_sessions::table
            .filter(admin_sessions::admin_id.eq(&row.admin_id))
            .filter(admin_sessions::expires_at.le(now))
            .select(admin_sessions::id_hash)
            .load(conn)?;
        // Newest first; the insertion order breaks ties between logins in the same ms: SQLite's
        // rowid, PostgreSQL's `inserted` column (a sequence; see its migration).
        let inserted = match conn.kind() {
            super::Kind::Sqlite => "rowid",
            super::Kind::Postgres => "admin_sessions.inserted",
        };
        let live: Vec<String> = admin_sessions::table
            .filter(admin_sessions::admin_id.eq(&row.admin_id))
            .filter(admin_sessions::expires_at.gt(now))
            .order((
                admin_sessions::created_at.desc(),
                diesel::dsl::sql::<diesel::sql_types::BigInt>(inserted).desc(),
            ))
            .select(admin_sessions::id_hash)
            .load(conn)?;
        ended.extend(live.into_iter().skip(max));
        if !ended.is_empty() {
            diesel::delete(admin_sessions::table.filter(admin_sessions::id_hash.eq_any(&ended)))
                .execute(conn)?;
        }
        Ok(ended)
    })
}

/// The session with this id hash.
pub fn session(conn: &mut Db, id_hash: &str) -> QueryResult<Option<SessionRow>> {
    admin_sessions::table
        .find(id_hash)
        .select(SessionRow::as_select())
        .first(conn)
        .optional()
}

/// An admin's sessions not yet past `expires_at`, oldest first.
pub fn sessions_of(conn: &mut Db, admin_id: &str, now: i64) -> QueryResult<Vec<SessionRow>> {
    admin_sessions::table
        .filter(admin_sessions::admin_id.eq(admin_id))
        .filter(admin_sessions::expires_at.gt(now))
        .order(admin_sessions::created_at.asc())
        .select(SessionRow::as_select())
        .load(conn)
}

/// Replaces a session's record and expiry if it still exists; whether it did.
pub fn update_session(
    conn: &mut Db,
    id_hash: &str,
    data: &[u8],
    expires_at: i64,
) -> QueryResult<bool> {
    diesel::update(admin_sessions::table.find(id_hash))
        .set((
            admin_sessions::data.eq(data),
            admin_sessions::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|n| n == 1)
}

/// Deletes one session; whether it existed.
pub fn delete_session(conn: &mut Db, id_hash: &str) -> QueryResult<bool> {
    diesel::delete(admin_sessions::table.find(id_hash))
        .execute(conn)
        .map(|n| n == 1)
}

/// Deletes every session of an admin; how many.
pub fn delete_sessions_of(conn: &mut Db, admin_id: &str) -> QueryResult<usize> {
    diesel::delete(admin_sessions::table.filter(admin_sessions::admin_id.eq(admin_id)))
        .execute(conn)
}

/// Deletes sessions that ended at or before `now`; how many.
pub fn purge_sessions(conn: &mut Db, now: i64) -> QueryResult<usize> {
    diesel::delete(admin_sessions::table.filter(admin_sessions::expires_at.le(now))).execute(conn)
}
