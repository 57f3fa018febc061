//! The store: by default one SQLite file under the data directory; for clusters a PostgreSQL
//! database (`storage.url`), reached through the same diesel code ([`db::Db`]) and an r2d2 pool.
//!
//! Every SQLite connection runs in WAL mode with `synchronous=NORMAL`, a busy timeout and foreign keys on.
//! Queries are plain functions taking `&mut Db`, grouped by table in the submodules,
//! and always run on a blocking thread through [`Store::run`] (reads) or [`Store::write`]. The
//! notification queue's writes (publishes, sent and acked marks) go through one group-committed
//! path ([`queue_store`]), so concurrent publishers never contend for the write lock.
//!
//! Writers of this process take turns at a fair in-process gate ([`Store::writer`]) before they
//! ask SQLite for its write lock. SQLite's own busy handler polls with growing sleeps and is not
//! fair: with a few dozen writers at once (pairing a fleet, say) one of them could lose every
//! race for the full busy timeout and fail. The busy timeout is left for other processes (the
//! CLI). On PostgreSQL the gate still orders this process's writers, and the write transaction's
//! advisory lock ([`db::WriteTransaction`]) orders those of every relay.

pub mod admins;
pub mod audit;
pub mod db;
pub mod devices;
pub mod notifications;
pub mod pairing;
pub mod queue_store;
pub mod reencrypt;
pub mod retention;
pub mod revoked;
pub mod schema;
pub mod sealed;
pub mod tokens;

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::r2d2::{CustomizeConnection, Pool, PooledConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use db::{Db, Kind, WriteTransaction};

use crate::config::StorageSettings;
use crate::crypto::Cipher;

/// The SQLite migrations in `migrations/sqlite/`, compiled in.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// The PostgreSQL migrations in `migrations/postgres/`, compiled in: the same schema.
pub const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "beepmyphone.db";

/// A store failure. Callers map it to a 503 or 500; its text is logged, never sent to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No pooled connection could be had in time.
    #[error("connection pool: {0}")]
    Pool(String),
    /// A query failed.
    #[error("query: {0}")]
    Query(#[from] diesel::result::Error),
    /// The blocking task failed (panicked or was cancelled).
    #[error("blocking task: {0}")]
    Task(String),
    /// A stored value no writer produces (an unknown priority, a time zone or tags that do not
    /// parse): the row is corrupt, and it is reported, never read as a default.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The in-process write gate was not free within the busy timeout.
    #[error("the database is busy: no write turn within {0} ms")]
    Busy(u64),
    /// Anything else (migrations, files).
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// Whether the database was too busy to answer (the write gate timed out, SQLite's lock, or
    /// PostgreSQL's `lock_timeout`): worth a retry, unlike other failures.
    pub fn is_busy(&self) -> bool {
        match self {
            StoreError::Pool(_) | StoreError::Busy(_) => true,
            StoreError::Query(diesel::result::Error::DatabaseError(_, info)) => {
                let message = info.message();
                message.contains("database is locked") || message.contains("lock timeout")
            }
            _ => false,
        }
    }

    /// A [`StoreError::Corrupt`] naming the table, column and row id, and what is wrong.
    pub fn corrupt(
        table: &str,
        column: &str,
        row: impl std::fmt::Display,
        what: impl std::fmt::Display,
    ) -> Self {
        StoreError::Corrupt(format!("{table}.{column} of row {row}: {what}"))
    }
}

/// A pooled connection.
pub type Conn = PooledConnection<db::Manager>;

/// A pooled connection holding this process's write turn ([`Store::writer`]), released with it.
pub struct Writer<'a> {
    conn: Conn,
    _turn: parking_lot::MutexGuard<'a, ()>,
}

impl std::ops::Deref for Writer<'_> {
    type Target = Db;

    fn deref(&self) -> &Db {
        &self.conn
    }
}

impl std::ops::DerefMut for Writer<'_> {
    fn deref_mut(&mut self) -> &mut Db {
        &mut self.conn
    }
}

/// Pool counters, for health and metrics.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Connections handed out.
    pub acquired: AtomicU64,
    /// Acquisitions that waited for a free connection (took longer than 1 ms).
    pub waited: AtomicU64,
    /// Total time spent acquiring, in microseconds.
    pub acquire_micros: AtomicU64,
    /// Acquisitions that failed.
    pub failed: AtomicU64,
    /// Where acquisition times are also observed, once metrics are attached.
    pub wait_seconds: std::sync::OnceLock<prometheus::Histogram>,
}

/// A snapshot of the pool.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStats {
    /// Most connections.
    pub max_size: u32,
    /// Open connections.
    pub size: u32,
    /// Open and idle.
    pub idle: u32,
    /// Open and in use.
    pub in_use: u32,
    /// Connections handed out since start.
    pub acquired: u64,
    /// Acquisitions that had to wait.
    pub waited: u64,
    /// Acquisitions that failed.
    pub failed: u64,
    /// Mean acquisition time, microseconds.
    pub mean_acquire_micros: u64,
}

#[derive(Debug)]
struct Pragmas {
    busy_timeout_ms: u64,
}

impl CustomizeConnection<Db, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut Db) -> Result<(), diesel::r2d2::Error> {
        let Db::Sqlite(conn) = conn else {
            // PostgreSQL: a statement waits for a lock at most the busy timeout (0 would mean
            // for ever there, where SQLite's 0 fails at once).
            return conn
                .batch_execute(&format!(
                    "SET lock_timeout = {}",
                    self.busy_timeout_ms.max(1)
                ))
                .map_err(diesel::r2d2::Error::QueryError);
        };
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
            self.busy_timeout_ms
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// `text` without the password of `settings.url`, if it has one (as written and decoded).
fn redact_password(text: &str, settings: &StorageSettings) -> String {
    let Some(password) = settings
        .postgres_url()
        .and_then(|url| url::Url::parse(url).ok())
        .and_then(|url| url.password().map(str::to_owned))
        .filter(|p| !p.is_empty())
    else {
        return text.to_owned();
    };
    let mut out = text.replace(&password, "[REDACTED]");
    if let Ok(decoded) = percent_encoding::percent_decode_str(&password).decode_utf8() {
        if !decoded.is_empty() {
            out = out.replace(decoded.as_ref(), "[REDACTED]");
        }
    }
    out
}

/// The store: a connection pool over the database (the SQLite file or a PostgreSQL database),
/// and the data keys that seal its sealed columns (see [`Store::with_cipher`]).
#[derive(Clone)]
pub struct Store {
    pool: Pool<db::Manager>,
    kind: Kind,
    counters: Arc<PoolCounters>,
    cipher: Option<Cipher>,
    /// The in-process write gate (eventually fair: a waiter is handed the lock within 0.5 ms of
    /// contention, never overtaken for ever).
    writes: Arc<parking_lot::Mutex<()>>,
    /// How long a writer waits for its turn: the busy timeout.
    write_wait: Duration,
}

impl Store {
    /// Opens the database `settings` name (creating the SQLite file in `data_dir` if needed) and
    /// runs pending migrations.
    pub fn open(data_dir: &Path, settings: &StorageSettings) -> Result<Self, StoreError> {
        // The directory holds notification contents and keys: owner only when we create it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", data_dir.display())))?;
        let manager = match settings.postgres_url() {
            Some(url) => db::Manager::new(Kind::Postgres, url),
            None => db::Manager::new(
                Kind::Sqlite,
                data_dir.join(DB_FILE).to_string_lossy().into_owned(),
            ),
        };
        let kind = manager.kind();
        let pool = Pool::builder()
            .max_size(settings.pool_max_size)
            .min_idle(Some(settings.pool_min_idle))
            .connection_timeout(Duration::from_millis(settings.pool_timeout_ms.max(1)))
            .test_on_check_out(true)
            .connection_customizer(Box::new(Pragmas {
                busy_timeout_ms: settings.busy_timeout_ms,
            }))
            .build(manager)
            // libpq may quote a part of the URL it cannot read: never the password.
            .map_err(|e| StoreError::Pool(redact_password(&e.to_string(), settings)))?;
        let store = Self {
            pool,
            kind,
            counters: Arc::new(PoolCounters::default()),
            cipher: None,
            writes: Arc::new(parking_lot::Mutex::new(())),
            write_wait: Duration::from_millis(settings.busy_timeout_ms),
        };
        let mut conn = store.conn()?;
        match kind {
            Kind::Sqlite => conn
                .run_pending_migrations(MIGRATIONS)
                .map(|_| ())
                .map_err(|e| StoreError::Other(format!("migrations: {e}")))?,
            // Relays of a cluster may start together: one migrates at a time, the others then
            // find nothing to do.
            Kind::Postgres => {
                conn.batch_execute(&format!("SELECT pg_advisory_lock({})", db::MIGRATION_LOCK))?;
                let migrated = conn
                    .run_pending_migrations(PG_MIGRATIONS)
                    .map(|_| ())
                    .map_err(|e| StoreError::Other(format!("migrations: {e}")));
                conn.batch_execute(&format!(
                    "SELECT pg_advisory_unlock({})",
                    db::MIGRATION_LOCK
                ))?;
                migrated?
            }
        }
        Ok(store)
    }

    /// The store's backend.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The store with the data keys that seal and open notification, device and session
    /// columns. Without them (the CLI's commands that touch none of those), such reads and writes
    /// fail rather than store plaintext.
    pub fn with_cipher(mut self, cipher: Cipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// The data keys; an error if the store was opened without them.
    pub fn cipher(&self) -> Result<&Cipher, StoreError> {
        self.cipher
            .as_ref()
            .ok_or_else(|| StoreError::Other("the store was opened without data keys".into()))
    }

    /// A pooled connection; blocks, so only call it on a blocking thread.
    pub fn conn(&self) -> Result<Conn, StoreError> {
        let started = Instant::now();
        let result = self.pool.get();
        let elapsed = started.elapsed();
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if let Some(histogram) = self.counters.wait_seconds.get() {
            histogram.observe(elapsed.as_secs_f64());
        }
        match result {
            Ok(conn) => {
                self.counters.acquired.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .acquire_micros
                    .fetch_add(micros, Ordering::Relaxed);
                if micros > 1_000 {
                    self.counters.waited.fetch_add(1, Ordering::Relaxed);
                }
                Ok(conn)
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Pool(e.to_string()))
            }
        }
    }

    /// A pooled connection for writing, after this process's write turn: every write of the
    /// relay goes through here (or [`Store::write`]), so in-process writers queue fairly instead
    /// of racing for SQLite's lock. The turn comes first, so waiting writers hold no connection.
    /// Blocks; only call it on a blocking thread, and never while holding another `Writer`.
    pub fn writer(&self) -> Result<Writer<'_>, StoreError> {
        let turn = self.writes.try_lock_for(self.write_wait).ok_or_else(|| {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            StoreError::Busy(u64::try_from(self.write_wait.as_millis()).unwrap_or(u64::MAX))
        })?;
        Ok(Writer {
            conn: self.conn()?,
            _turn: turn,
        })
    }

    /// Observes every later connection acquisition in `histogram` as well (the relay's
    /// `beepmyphone_db_pool_wait_seconds`); the first call wins.
    pub fn observe_waits_in(&self, histogram: prometheus::Histogram) {
        let _ = self.counters.wait_seconds.set(histogram);
    }

    /// Runs `f` with a pooled connection on a blocking thread. For reads: writes go through
    /// [`Store::write`].
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.blocking(false, f).await
    }

    /// Runs `f` with a [`Store::writer`] connection on a blocking thread.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        self.blocking(true, f).await
    }

    async fn blocking<T, F>(&self, write: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            if write {
                f(&mut *store.writer()?)
            } else {
                f(&mut *store.conn()?)
            }
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The pool's counts now.
    pub fn stats(&self) -> PoolStats {
        let state = self.pool.state();
        let acquired = self.counters.acquired.load(Ordering::Relaxed);
        PoolStats {
            max_size: self.pool.max_size(),
            size: state.connections,
            idle: state.idle_connections,
            in_use: state.connections - state.idle_connections,
            acquired,
            waited: self.counters.waited.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            mean_acquire_micros: self.counters.acquire_micros.load(Ordering::Relaxed)
                / acquired.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_password_is_redacted_from_errors_as_written_and_decoded() {
        let settings = StorageSettings {
            url: "postgres://beep:s3cr%25t@db.example:5432/beep"
                .to_owned()
                .into(),
            ..StorageSettings::default()
        };
        let text = "invalid percent-encoded token: \"s3cr%25t\"; password s3cr%t refused";
        assert_eq!(
            redact_password(text, &settings),
            "invalid percent-encoded token: \"[REDACTED]\"; password [REDACTED] refused"
        );
        assert_eq!(
            redact_password("no such host", &StorageSettings::default()),
            "no such host"
        );
    }
    use diesel::RunQueryDsl;

    #[derive(diesel::QueryableByName)]
    struct Text {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }

    /// Pool acquisition (target ≤ 50 µs, docs/benchmarks.md), with the check on checkout, idle pool:
    /// `cargo test --release --lib pool_acquisition_latency -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn pool_acquisition_latency() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default()).unwrap();
        for _ in 0..1_000 {
            drop(store.conn().unwrap());
        }
        let n = 20_000u32;
        let mut samples = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let started = Instant::now();
            let conn = store.conn().unwrap();
            samples.push(started.elapsed());
            drop(conn);
        }
        samples.sort();
        let total: std::time::Duration = samples.iter().sum();
        println!(
            "pool acquisition: mean {:?}, p50 {:?}, p99 {:?} over {n}",
            total / n,
            samples[samples.len() / 2],
            samples[samples.len() * 99 / 100]
        );
    }

    /// Writers that keep the lock busy: each holds it 2 ms inside its transaction. Returns the
    /// failures.
    fn hammer(store: &Store, threads: usize, writes: usize) -> Vec<String> {
        let hold = std::time::Duration::from_millis(2);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(move || {
                        (0..writes)
                            .filter_map(|_| {
                                let written = store.writer().and_then(|mut conn| {
                                    Ok(conn.immediate_transaction(|conn| {
                                        diesel::sql_query("INSERT INTO scratch (n) VALUES (1)")
                                            .execute(conn)?;
                                        std::thread::sleep(hold);
                                        Ok::<_, diesel::result::Error>(())
                                    })?)
                                });
                                written.err().map(|e| e.to_string())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    }

    fn busy_store(dir: &Path, busy_timeout_ms: u64) -> Store {
        let settings = StorageSettings {
            busy_timeout_ms,
            pool_max_size: 40,
            ..StorageSettings::default()
        };
        let store = Store::open(dir, &settings).unwrap();
        store
            .conn()
            .unwrap()
            .batch_execute("CREATE TABLE scratch (n INTEGER)")
            .unwrap();
        store
    }

    #[test]
    fn writers_take_fair_turns_instead_of_timing_out_on_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        // 24 writers, each holding the lock 2 ms at a time: a turn comes every ~50 ms, well
        // within the 1 s timeout, and nobody fails.
        let store = busy_store(dir.path(), 1_000);
        let failures = hammer(&store, 24, 20);
        assert!(failures.is_empty(), "{failures:?}");
        let mut conn = store.conn().unwrap();
        let rows: Vec<Text> =
            diesel::sql_query("SELECT CAST(COUNT(*) AS TEXT) AS value FROM scratch")
                .load(&mut conn)
                .unwrap();
        assert_eq!(rows[0].value, "480");
    }

    #[test]
    fn a_writer_gives_up_with_busy_when_its_turn_does_not_come() {
        let dir = tempfile::tempdir().unwrap();
        let store = busy_store(dir.path(), 50);
        let held = store.writer().unwrap();
        let other = store.clone();
        let waited = std::thread::spawn(move || other.writer().map(|_| ()))
            .join()
            .unwrap();
        drop(held);
        let e = waited.unwrap_err();
        assert!(matches!(e, StoreError::Busy(50)), "{e:?}");
        assert!(e.is_busy());
        assert_eq!(
            e.to_string(),
            "the database is busy: no write turn within 50 ms"
        );
        // The turn is free again, and reads never needed it.
        assert!(store.writer().is_ok());
        assert_eq!(store.stats().failed, 1);
    }

    #[test]
    fn sqlite_is_built_with_qpsg() {
        // `.cargo/config.toml` sets it; without it every `LIMIT ?` statement is re-prepared on
        // each execution (docs/benchmarks.md, "Second push").
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default()).unwrap();
        let options: Vec<Text> = diesel::sql_query(
            "SELECT compile_options AS value FROM pragma_compile_options WHERE compile_options = 'ENABLE_QPSG'",
        )
        .load(&mut store.conn().unwrap())
        .unwrap();
        assert_eq!(
            options.len(),
            1,
            "SQLite was built without SQLITE_ENABLE_QPSG"
        );
    }

    #[test]
    fn connections_use_wal_normal_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default()).unwrap();
        let mut conn = store.conn().unwrap();
        let mode: Vec<Text> =
            diesel::sql_query("SELECT journal_mode AS value FROM pragma_journal_mode")
                .load(&mut conn)
                .unwrap();
        assert_eq!(mode[0].value, "wal");
        let sync: Vec<Text> =
            diesel::sql_query("SELECT CAST(synchronous AS TEXT) AS value FROM pragma_synchronous")
                .load(&mut conn)
                .unwrap();
        assert_eq!(sync[0].value, "1"); // NORMAL
        let fk: Vec<Text> = diesel::sql_query(
            "SELECT CAST(foreign_keys AS TEXT) AS value FROM pragma_foreign_keys",
        )
        .load(&mut conn)
        .unwrap();
        assert_eq!(fk[0].value, "1");
        let stats = store.stats();
        assert!(stats.acquired >= 2 && stats.in_use >= 1, "{stats:?}");
    }
}
