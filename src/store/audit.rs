//! The audit log's tables: `audit_log` (one row per record, a leaf of the Merkle tree) and
//! `audit_checkpoints` (the signed checkpoints with the tree's frontier). What a record means and
//! how it is hashed is in `crate::audit`; these are only the queries.

use super::db::{insert_or_ignore, Db};
use diesel::prelude::*;

use super::schema::{audit_checkpoints, audit_log};
use super::StoreError;

/// One stored record, as the row holds it (the sealed part still sealed).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    /// Position in the log (leaf index + 1).
    pub seq: i64,
    /// When it happened, epoch ms.
    pub at_ms: i64,
    /// `admin`, `token`, `device`, `system` or `anonymous`.
    pub actor_kind: String,
    /// The actor's id.
    pub actor_id: Option<String>,
    /// The action's name.
    pub action: String,
    /// What it was done to.
    pub subject: Option<String>,
    /// `ok`, `denied`, `failed` or `requested`.
    pub outcome: String,
    /// The request's id.
    pub request_id: Option<String>,
    /// The request's trace id.
    pub trace_id: Option<String>,
    /// The audit data key that sealed `sealed`.
    pub key_id: Option<i64>,
    /// The source IP and details, sealed.
    pub sealed: Option<Vec<u8>>,
    /// SHA-256(0x00 ‖ the record's encoding).
    pub leaf_hash: Vec<u8>,
}

/// One stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_checkpoints)]
pub struct CheckpointRow {
    /// Records it covers.
    pub size: i64,
    /// When it was signed, epoch ms.
    pub at_ms: i64,
    /// The signed note.
    pub note: String,
    /// The tree's frontier at `size` (`crate::audit::merkle::Frontier::to_bytes`).
    pub frontier: Vec<u8>,
}

/// Filters of `GET /audit` and `audit export`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this action.
    pub action: Option<String>,
    /// Only records by this actor id (or, for `system`/`anonymous`, by this kind).
    pub actor: Option<String>,
    /// Only records about this subject.
    pub subject: Option<String>,
    /// At or after (epoch ms).
    pub since: Option<i64>,
    /// Before (epoch ms).
    pub until: Option<i64>,
    /// Only records before this seq (the page cursor, newest first).
    pub before_seq: Option<i64>,
    /// Only records after this seq (oldest first, for exports).
    pub after_seq: Option<i64>,
}

/// Appends rows (the caller holds an immediate transaction and has checked their seqs).
pub fn insert(conn: &mut Db, rows: &[AuditRow]) -> Result<(), StoreError> {
    // One row per statement: a cached prepared statement, on either backend (diesel's multi
    // connection has no multi-row insert).
    for row in rows {
        diesel::insert_into(audit_log::table)
            .values(row)
            .execute(conn)?;
    }
    Ok(())
}

/// The highest seq in the table (0 when empty).
pub fn last_seq(conn: &mut Db) -> Result<i64, StoreError> {
    let max: Option<i64> = audit_log::table
        .select(diesel::dsl::max(audit_log::seq))
        .first(conn)?;
    Ok(max.unwrap_or(0))
}

/// The lowest seq in the table (`None` when empty).
pub fn first_seq(conn: &mut Db) -> Result<Option<i64>, StoreError> {
    Ok(audit_log::table
        .select(diesel::dsl::min(audit_log::seq))
        .first(conn)?)
}

/// Rows with `seq > after`, oldest first, at most `limit`.
pub fn rows_after(conn: &mut Db, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
    Ok(audit_log::table
        .filter(audit_log::seq.gt(after))
        .order(audit_log::seq.asc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load(conn)?)
}

/// The (seq, leaf hash) of rows with `seq > after`, oldest first.
pub fn leaves_after(conn: &mut Db, after: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
    Ok(audit_log::table
        .filter(audit_log::seq.gt(after))
        .order(audit_log::seq.asc())
        .select((audit_log::seq, audit_log::leaf_hash))
        .load(conn)?)
}

/// One record.
pub fn get(conn: &mut Db, seq: i64) -> Result<Option<AuditRow>, StoreError> {
    Ok(audit_log::table
        .find(seq)
        .select(AuditRow::as_select())
        .first(conn)
        .optional()?)
}

/// Records matching `filter`: newest first when paging back (`before_seq` or neither cursor),
/// oldest first when `after_seq` is set.
pub fn list(conn: &mut Db, filter: &AuditFilter, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
    let mut query = audit_log::table.select(AuditRow::as_select()).into_boxed();
    if let Some(action) = &filter.action {
        query = query.filter(audit_log::action.eq(action.clone()));
    }
    if let Some(actor) = &filter.actor {
        query = match actor.as_str() {
            kind @ ("system" | "anonymous") => {
                query.filter(audit_log::actor_kind.eq(kind.to_owned()))
            }
            id => query.filter(audit_log::actor_id.eq(id.to_owned())),
        };
    }
    if let Some(subject) = &filter.subject {
        query = query.filter(audit_log::subject.eq(subject.clone()));
    }
    if let Some(since) = filter.since {
        query = query.filter(audit_log::at_ms.ge(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(audit_log::at_ms.lt(until));
    }
    if let Some(before) = filter.before_seq {
        query = query.filter(audit_log::seq.lt(before));
    }
    query = match filter.after_seq {
        Some(after) => query
            .filter(audit_log::seq.gt(after))
            .order(audit_log::seq.asc()),
        None => query.order(audit_log::seq.desc()),
    };
    Ok(query.limit(limit).load(conn)?)
}

/// Stores a checkpoint (once per size).
pub fn insert_checkpoint(conn: &mut Db, row: &CheckpointRow) -> Result<(), StoreError> {
    insert_or_ignore!(conn, audit_checkpoints::table, row)?;
    Ok(())
}

/// The checkpoint of the largest tree.
pub fn last_checkpoint(conn: &mut Db) -> Result<Option<CheckpointRow>, StoreError> {
    Ok(audit_checkpoints::table
        .order(audit_checkpoints::size.desc())
        .select(CheckpointRow::as_select())
        .first(conn)
        .optional()?)
}

/// The checkpoint of the largest tree of at most `size` records.
pub fn checkpoint_at_most(conn: &mut Db, size: i64) -> Result<Option<CheckpointRow>, StoreError> {
    Ok(audit_checkpoints::table
        .filter(audit_checkpoints::size.le(size))
        .order(audit_checkpoints::size.desc())
        .select(CheckpointRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every checkpoint, smallest tree first.
pub fn checkpoints(conn: &mut Db) -> Result<Vec<CheckpointRow>, StoreError> {
    Ok(audit_checkpoints::table
        .order(audit_checkpoints::size.asc())
        .select(CheckpointRow::as_select())
        .load(conn)?)
}

/// Deletes the rows up to `seq` (they are in an archive now).
pub fn delete_through(conn: &mut Db, seq: i64) -> Result<usize, StoreError> {
    Ok(diesel::delete(audit_log::table.filter(audit_log::seq.le(seq))).execute(conn)?)
}

/// Records sealed under the audit key `key_id`.
pub fn rows_under(conn: &mut Db, key_id: i64) -> Result<i64, StoreError> {
    Ok(audit_log::table
        .filter(audit_log::key_id.eq(key_id))
        .count()
        .get_result(conn)?)
}
