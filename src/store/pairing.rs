//! Queries on `pairing_codes`: only hashes are stored; a code is consumed atomically.

use super::Db;
use diesel::prelude::*;

use super::schema::pairing_codes;

/// Stores a new code's hash.
pub fn insert(conn: &mut Db, code_hash: &str, now: i64, expires_at: i64) -> QueryResult<()> {
    diesel::insert_into(pairing_codes::table)
        .values((
            pairing_codes::code_hash.eq(code_hash),
            pairing_codes::created_at.eq(now),
            pairing_codes::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Marks the code used if it exists, is unused and unexpired; whether it was.
pub fn consume(conn: &mut Db, code_hash: &str, now: i64) -> QueryResult<bool> {
    diesel::update(
        pairing_codes::table
            .find(code_hash)
            .filter(pairing_codes::used_at.is_null())
            .filter(pairing_codes::expires_at.gt(now)),
    )
    .set(pairing_codes::used_at.eq(now))
    .execute(conn)
    .map(|n| n == 1)
}

/// Deletes codes that expired more than a day ago.
pub fn purge(conn: &mut Db, now: i64) -> QueryResult<usize> {
    diesel::delete(pairing_codes::table.filter(pairing_codes::expires_at.lt(now - 86_400_000)))
        .execute(conn)
}
