//! Queries on `revoked_tokens`: the embedded deny-list of device access tokens, by `jti`. A row is
//! kept until the token it names would have expired, then swept.

use diesel::prelude::*;
use diesel::SqliteConnection;

use super::schema::revoked_tokens;

/// Adds a token to the deny-list (a second revocation of the same token changes nothing).
pub fn insert(
    conn: &mut SqliteConnection,
    jti: &str,
    device_id: &str,
    expires_at: i64,
) -> QueryResult<()> {
    diesel::insert_or_ignore_into(revoked_tokens::table)
        .values((
            revoked_tokens::jti.eq(jti),
            revoked_tokens::device_id.eq(device_id),
            revoked_tokens::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Whether the token is on the deny-list.
pub fn contains(conn: &mut SqliteConnection, jti: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(revoked_tokens::table.find(jti))).get_result(conn)
}

/// Deletes entries whose token has expired by `now` (epoch ms); how many.
pub fn purge(conn: &mut SqliteConnection, now: i64) -> QueryResult<usize> {
    diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.le(now))).execute(conn)
}
