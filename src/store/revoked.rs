//! Queries on `revoked_tokens`: the embedded deny-list of device access tokens, by `jti`. A row is
//! kept until the token it names would have expired, then swept.

use super::db::{insert_or_ignore, Db};
use diesel::prelude::*;

use super::schema::revoked_tokens;

/// Adds a token to the deny-list (a second revocation of the same token changes nothing).
pub fn insert(conn: &mut Db, jti: &str, device_id: &str, expires_at: i64) -> QueryResult<()> {
    insert_or_ignore!(
        conn,
        revoked_tokens::table,
        (
            revoked_tokens::jti.eq(jti),
            revoked_tokens::device_id.eq(device_id),
            revoked_tokens::expires_at.eq(expires_at),
        )
    )
    .map(|_| ())
}

/// Whether the token is on the deny-list.
pub fn contains(conn: &mut Db, jti: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(revoked_tokens::table.find(jti))).get_result(conn)
}

/// Deletes entries whose token has expired by `now` (epoch ms); how many.
pub fn purge(conn: &mut Db, now: i64) -> QueryResult<usize> {
    diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.le(now))).execute(conn)
}
