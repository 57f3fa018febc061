//! The connection type of the store: SQLite (the embedded default) or PostgreSQL (clusters),
//! behind one diesel [`MultiConnection`](diesel::MultiConnection), so that every query of the
//! store is written once.
//!
//! What differs between the two is kept here:
//!
//! - [`WriteTransaction::immediate_transaction`]: a write transaction that holds the database's
//!   single write turn from its first statement. SQLite: `BEGIN IMMEDIATE`. PostgreSQL: `BEGIN`
//!   and a transaction-scoped advisory lock, so that writers on every relay of a cluster take
//!   turns as the writers of one process do, and a read-then-write transaction (a refresh
//!   token's single use, the next sequence number) sees no write of another relay in between;
//! - [`Db::sql`]: raw SQL with `?` placeholders, as PostgreSQL's `$1`, `$2`, … there;
//! - [`Db::kind`], for the few statements only one backend has (SQLite's pragmas).

use diesel::connection::{
    AnsiTransactionManager, Connection, SimpleConnection, TransactionManager,
};
use diesel::pg::PgConnection;
use diesel::result::Error;
use diesel::sqlite::SqliteConnection;

/// A connection to the store's database.
#[derive(diesel::MultiConnection)]
pub enum Db {
    /// A PostgreSQL server (`storage.url = "postgres://…"`).
    Pg(PgConnection),
    /// The embedded SQLite file.
    Sqlite(SqliteConnection),
}

/// The diesel backend of [`Db`] (for boxed raw queries).
pub type Backend = <Db as Connection>::Backend;

/// The backend of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// The key of PostgreSQL's advisory lock that is the store's write turn ("beep" in ASCII).
pub const WRITE_LOCK: i64 = 0x6265_6570;

/// The key of the (session) advisory lock held while migrating ("beeM").
pub const MIGRATION_LOCK: i64 = 0x6265_654d;

impl Db {
    /// Which backend this is.
    pub fn kind(&self) -> Kind {
        match self {
            Db::Pg(_) => Kind::Postgres,
            Db::Sqlite(_) => Kind::Sqlite,
        }
    }

    /// `sql` for this backend: its `?` placeholders numbered (`$1`, `$2`, …) for PostgreSQL,
    /// unchanged for SQLite. The store's raw SQL has no `?` inside literals.
    pub fn sql(&self, sql: &str) -> String {
        placeholders(self.kind(), sql)
    }
}

/// `sql` with `?` placeholders for `kind`.
pub fn placeholders(kind: Kind, sql: &str) -> String {
    match kind {
        Kind::Sqlite => sql.to_owned(),
        Kind::Postgres => {
            let mut out = String::with_capacity(sql.len() + 16);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}

/// Write transactions that hold the write turn from their first statement.
pub trait WriteTransaction {
    /// Runs `f` in a write transaction (see the module's documentation); commits when it returns
    /// `Ok`, rolls back otherwise.
    fn immediate_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>;
}

impl WriteTransaction for Db {
    fn immediate_transaction<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut Self) -> Result<T, E>,
        E: From<Error>,
    {
        match self {
            Db::Sqlite(conn) => {
                AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN IMMEDIATE")?
            }
            Db::Pg(conn) => {
                AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN")?;
                if let Err(e) =
                    conn.batch_execute(&format!("SELECT pg_advisory_xact_lock({WRITE_LOCK})"))
                {
                    AnsiTransactionManager::rollback_transaction(conn)?;
                    return Err(e.into());
                }
            }
        }
        match f(self) {
            Ok(value) => {
                self.commit()?;
                Ok(value)
            }
            Err(e) => {
                self.rollback()?;
                Err(e)
            }
        }
    }
}

impl Db {
    fn commit(&mut self) -> Result<(), Error> {
        match self {
            Db::Sqlite(conn) => AnsiTransactionManager::commit_transaction(conn),
            Db::Pg(conn) => AnsiTransactionManager::commit_transaction(conn),
        }
    }

    fn rollback(&mut self) -> Result<(), Error> {
        match self {
            Db::Sqlite(conn) => AnsiTransactionManager::rollback_transaction(conn),
            Db::Pg(conn) => AnsiTransactionManager::rollback_transaction(conn),
        }
    }
}

/// `INSERT` that skips rows whose key is already there, on either backend (diesel's multi
/// connection has no `ON CONFLICT`): SQLite's `INSERT OR IGNORE`, PostgreSQL's
/// `ON CONFLICT DO NOTHING`. Evaluates to the `QueryResult<usize>` of the insert.
macro_rules! insert_or_ignore {
    ($conn:expr, $table:expr, $values:expr) => {{
        use diesel::RunQueryDsl as _;
        match $conn {
            $crate::store::Db::Sqlite(conn) => diesel::insert_or_ignore_into($table)
                .values($values)
                .execute(conn),
            $crate::store::Db::Pg(conn) => diesel::insert_into($table)
                .values($values)
                .on_conflict_do_nothing()
                .execute(conn),
        }
    }};
}
pub(crate) use insert_or_ignore;

/// The pool's connection manager: connections of one backend to one database (diesel's own
/// manager would try PostgreSQL first for every SQLite path).
#[derive(Clone)]
pub struct Manager {
    kind: Kind,
    url: String,
}

impl Manager {
    /// Connections of `kind` to `url` (a PostgreSQL URL, or the SQLite file's path).
    pub fn new(kind: Kind, url: impl Into<String>) -> Self {
        Self {
            kind,
            url: url.into(),
        }
    }

    /// The backend.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("Manager").field("kind", &self.kind).finish()
    }
}

impl diesel::r2d2::ManageConnection for Manager {
    type Connection = Db;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Db, Self::Error> {
        Ok(match self.kind {
            Kind::Postgres => Db::Pg(
                PgConnection::establish(&self.url).map_err(diesel::r2d2::Error::ConnectionError)?,
            ),
            Kind::Sqlite => Db::Sqlite(
                SqliteConnection::establish(&self.url)
                    .map_err(diesel::r2d2::Error::ConnectionError)?,
            ),
        })
    }

    fn is_valid(&self, conn: &mut Db) -> Result<(), Self::Error> {
        use diesel::r2d2::R2D2Connection;
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut Db) -> bool {
        use diesel::r2d2::R2D2Connection;
        std::thread::panicking() || conn.is_broken()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        let sql = "UPDATE t SET a = ? WHERE b = ? AND c IN (?, ?)";
        assert_eq!(placeholders(Kind::Sqlite, sql), sql);
        assert_eq!(
            placeholders(Kind::Postgres, sql),
            "UPDATE t SET a = $1 WHERE b = $2 AND c IN ($3, $4)"
        );
    }
}
