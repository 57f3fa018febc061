//! Admin dashboard sessions: created by password login, carried in an `HttpOnly` cookie.
//!
//! - A session id is `bms_` and 256 random bits. Only its SHA-256 (the *id hash*) is stored, so a
//!   copy of the store or of Redis cannot be replayed as a cookie.
//! - The session record (admin id and name, CSRF token, creation and last-use times, public id) is
//!   sealed under the current `sessions` data key ([`crate::crypto`]), bound to the id
//!   hash, in both backends: a record moved to another id does not open. Every write seals again
//!   under the current key, so after a rotation the old key covers only sessions not used since,
//!   which end within the absolute timeout; the key then retires.
//! - A session ends `sessions.idle_timeout_seconds` after its last use or
//!   `sessions.absolute_timeout_seconds` after login, whichever comes first, measured on the
//!   injected clock. The last-use time is written at most every [`SessionManager::touch_every_ms`]
//!   (a tenth of the idle timeout, at most a minute), in the background: a request costs one read.
//! - At most `sessions.max_per_admin` sessions live per admin; a further login ends the oldest.
//! - Storage is behind two traits, [`SessionReader`] (the hot path: one lookup per request) and
//!   [`SessionWriter`], each implemented by [`SqliteSessions`] (`admin_sessions`, swept by the cleanup
//!   task) and [`RedisSessions`] (keys with TTLs, so Redis drops what ended). Relays that share a
//!   Redis and a keys directory (`storage.keys_dir`) accept each other's sessions. A record sealed
//!   under a data key this process has not loaded yet (another relay rotated) makes it re-read the
//!   ring, at most every [`REFRESH_INTERVAL_MS`](crate::crypto::ring::REFRESH_INTERVAL_MS).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use beepmyphone_actors::clock::SharedClock;

use crate::config::SessionSettings;
use crate::crypto::secrets::{
    hash_secret, new_csrf_token, new_session_id, secret_string, ExposeSecret, SecretString,
};
use crate::crypto::{fields, Cipher, CryptoError, Purpose};
use crate::redis::{Redis, RedisError};
use crate::store::admins::{self, SessionRow};
use crate::store::{Store, StoreError};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "beep_session";
/// Prefix of public session ids (what `GET /auth/sessions` shows; not a credential).
pub const PUBLIC_ID_PREFIX: &str = "ses_";
/// The first byte of session records sealed before encryption at rest (their keys are gone).
const LEGACY_RECORD_VERSION: u8 = 1;

/// Longest interval between two writes of a session's last-use time.
pub const MAX_TOUCH_INTERVAL_MS: i64 = 60_000;

/// A session storage failure.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Redis is unreachable or timed out: sessions cannot be checked, so requests fail (503).
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    /// The embedded store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record could not be sealed or encoded.
    #[error("session record: {0}")]
    Record(String),
}

impl From<RedisError> for SessionError {
    fn from(e: RedisError) -> Self {
        SessionError::Unavailable(e.to_string())
    }
}

/// A session as stored: its key and its sealed record, with the plain fields a backend needs to
/// index and expire it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    /// Hex SHA-256 of the session id.
    pub id_hash: String,
    /// Whose session it is (for the per-admin index and cap).
    pub admin_id: String,
    /// The sealed record.
    pub sealed: Vec<u8>,
    /// Login time, epoch ms (orders sessions for the cap).
    pub created_at: i64,
    /// When the session ends unless used again, epoch ms.
    pub expires_at: i64,
}

/// A session's id hash and its sealed record, as a backend lists them.
pub type SealedEntry = (String, Vec<u8>);

/// Reads sessions: the per-request path.
pub trait SessionReader: Send + Sync + 'static {
    /// The sealed record of a session, if it exists (it may still be past its idle expiry).
    fn get<'a>(&'a self, id_hash: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SessionError>>;
    /// An admin's sessions that have not expired by `now`: `(id hash, sealed record)`.
    fn list<'a>(
        &'a self,
        admin_id: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Vec<SealedEntry>, SessionError>>;
}

/// Writes sessions.
pub trait SessionWriter: Send + Sync + 'static {
    /// Stores a new session; ends the admin's oldest beyond `max_per_admin` live ones, atomically.
    /// `longest_ms` is the longest any session may live (for index expiry). Returns the id hashes
    /// of the sessions it ended.
    fn insert(
        &self,
        session: StoredSession,
        max_per_admin: usize,
        now: i64,
        longest_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, SessionError>>;
    /// Replaces a session's record and expiry if it still exists; whether it did.
    fn replace(
        &self,
        session: StoredSession,
        now: i64,
    ) -> BoxFuture<'_, Result<bool, SessionError>>;
    /// Ends one session; whether it existed.
    fn delete<'a>(
        &'a self,
        id_hash: &'a str,
        admin_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SessionError>>;
    /// Ends every session of an admin; how many.
    fn delete_admin<'a>(&'a self, admin_id: &'a str) -> BoxFuture<'a, Result<usize, SessionError>>;
    /// Deletes sessions that ended by `now`; how many (backends with TTLs do nothing).
    fn purge_expired(&self, now: i64) -> BoxFuture<'_, Result<usize, SessionError>>;
}

/// Sessions in SQLite (`admin_sessions`).
#[derive(Clone)]
pub struct SqliteSessions {
    store: Store,
}

impl SqliteSessions {
    /// Sessions in this store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl SessionReader for SqliteSessions {
    fn get<'a>(&'a self, id_hash: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SessionError>> {
        let id = id_hash.to_owned();
        Box::pin(async move {
            let row = self
                .store
                .run(move |conn| Ok(admins::session(conn, &id)?))
                .await?;
            Ok(row.map(|r| r.data))
        })
    }

    fn list<'a>(
        &'a self,
        admin_id: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Vec<SealedEntry>, SessionError>> {
        let id = admin_id.to_owned();
        Box::pin(async move {
            let rows = self
                .store
                .run(move |conn| Ok(admins::sessions_of(conn, &id, now)?))
                .await?;
            Ok(rows.into_iter().map(|r| (r.id_hash, r.data)).collect())
        })
    }
}

impl SessionWriter for SqliteSessions {
    fn insert(
        &self,
        session: StoredSession,
        max_per_admin: usize,
        now: i64,
        _longest_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, SessionError>> {
        Box::pin(async move {
            let row = SessionRow {
                id_hash: session.id_hash,
                admin_id: session.admin_id,
                data: session.sealed,
                created_at: session.created_at,
                expires_at: session.expires_at,
            };
            Ok(self
                .store
                .write(move |conn| {
                    Ok(admins::insert_session_capped(
                        conn,
                        &row,
                        max_per_admin,
                        now,
                    )?)
                })
                .await?)
        })
    }

    fn replace(
        &self,
        session: StoredSession,
        _now: i64,
    ) -> BoxFuture<'_, Result<bool, SessionError>> {
        Box::pin(async move {
            Ok(self
                .store
                .write(move |conn| {
                    Ok(admins::update_session(
                        conn,
                        &session.id_hash,
                        &session.sealed,
                        session.expires_at,
                    )?)
                })
                .await?)
        })
    }

    fn delete<'a>(
        &'a self,
        id_hash: &'a str,
        _admin_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SessionError>> {
        let id = id_hash.to_owned();
        Box::pin(async move {
            Ok(self
                .store
                .write(move |conn| Ok(admins::delete_session(conn, &id)?))
                .await?)
        })
    }

    fn delete_admin<'a>(&'a self, admin_id: &'a str) -> BoxFuture<'a, Result<usize, SessionError>> {
        let id = admin_id.to_owned();
        Box::pin(async move {
            Ok(self
                .store
                .write(move |conn| Ok(admins::delete_sessions_of(conn, &id)?))
                .await?)
        })
    }

    fn purge_expired(&self, now: i64) -> BoxFuture<'_, Result<usize, SessionError>> {
        Box::pin(async move {
            Ok(self
                .store
                .write(move |conn| Ok(admins::purge_sessions(conn, now)?))
                .await?)
        })
    }
}

/// Sessions in Redis (`session:<id hash>` with a TTL, and a per-admin index).
#[derive(Clone)]
pub struct RedisSessions {
    redis: Redis,
}

impl RedisSessions {
    /// Sessions in this Redis.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

fn ttl_ms(expires_at: i64, now: i64) -> u64 {
    u64::try_from(expires_at - now).unwrap_or(0).max(1)
}

impl SessionReader for RedisSessions {
    fn get<'a>(&'a self, id_hash: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, SessionError>> {
        Box::pin(async move { Ok(self.redis.session(id_hash).await?) })
    }

    fn list<'a>(
        &'a self,
        admin_id: &'a str,
        _now: i64,
    ) -> BoxFuture<'a, Result<Vec<SealedEntry>, SessionError>> {
        Box::pin(async move { Ok(self.redis.sessions_of(admin_id).await?) })
    }
}

impl SessionWriter for RedisSessions {
    fn insert(
        &self,
        session: StoredSession,
        max_per_admin: usize,
        now: i64,
        longest_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, SessionError>> {
        Box::pin(async move {
            Ok(self
                .redis
                .create_session(
                    &session.id_hash,
                    &session.admin_id,
                    &session.sealed,
                    ttl_ms(session.expires_at, now),
                    session.created_at,
                    max_per_admin,
                    longest_ms,
                )
                .await?)
        })
    }

    fn replace(
        &self,
        session: StoredSession,
        now: i64,
    ) -> BoxFuture<'_, Result<bool, SessionError>> {
        Box::pin(async move {
            Ok(self
                .redis
                .replace_session(
                    &session.id_hash,
                    &session.sealed,
                    ttl_ms(session.expires_at, now),
                )
                .await?)
        })
    }

    fn delete<'a>(
        &'a self,
        id_hash: &'a str,
        admin_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, SessionError>> {
        Box::pin(async move { Ok(self.redis.delete_session(id_hash, admin_id).await?) })
    }

    fn delete_admin<'a>(&'a self, admin_id: &'a str) -> BoxFuture<'a, Result<usize, SessionError>> {
        Box::pin(async move { Ok(self.redis.delete_sessions_of(admin_id).await?) })
    }

    fn purge_expired(&self, _now: i64) -> BoxFuture<'_, Result<usize, SessionError>> {
        Box::pin(async { Ok(0) }) // keys expire by themselves
    }
}

/// The sealed part of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// Public id (`ses_…`).
    id: String,
    admin_id: String,
    username: String,
    csrf: String,
    created_at: i64,
    last_seen_at: i64,
}

/// A live session.
#[derive(Clone)]
pub struct Session {
    /// Hex SHA-256 of the session id: the storage key.
    pub id_hash: String,
    /// The public id (`ses_…`), safe to show and to name in `DELETE /auth/sessions/{id}`.
    pub public_id: String,
    /// The admin (`adm_…`).
    pub admin_id: String,
    /// The admin's login name.
    pub username: String,
    /// The CSRF token state-changing requests must echo in `X-CSRF-Token`.
    pub csrf_token: SecretString,
    /// Login time, epoch ms.
    pub created_at: i64,
    /// Last use, epoch ms (to the touch granularity).
    pub last_seen_at: i64,
    /// When the session ends unless used again, epoch ms.
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("public_id", &self.public_id)
            .field("admin_id", &self.admin_id)
            .field("username", &self.username)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A session just created by login.
#[derive(Debug)]
pub struct NewSession {
    /// The session id: the cookie value, shown once.
    pub id: SecretString,
    /// The session.
    pub session: Session,
    /// How many of the admin's oldest sessions this login ended (the cap).
    pub ended: usize,
}

/// Creates, checks, lists and ends admin sessions over a [`SessionReader`] and a [`SessionWriter`].
#[derive(Clone)]
pub struct SessionManager {
    reader: Arc<dyn SessionReader>,
    writer: Arc<dyn SessionWriter>,
    cipher: Cipher,
    clock: SharedClock,
    idle_ms: i64,
    absolute_ms: i64,
    max_per_admin: usize,
    log: slog::Logger,
}

fn seconds_ms(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 2_000)
        .saturating_mul(1_000)
}

impl SessionManager {
    /// A manager over `backend` (one type implementing both traits).
    pub fn new<B: SessionReader + SessionWriter>(
        backend: Arc<B>,
        cipher: Cipher,
        clock: SharedClock,
        settings: &SessionSettings,
        log: slog::Logger,
    ) -> Self {
        Self {
            reader: backend.clone(),
            writer: backend,
            cipher,
            clock,
            idle_ms: seconds_ms(settings.idle_timeout_seconds),
            absolute_ms: seconds_ms(settings.absolute_timeout_seconds),
            max_per_admin: settings.max_per_admin,
            log,
        }
    }

    /// Sessions in Redis when one is given, else in the store.
    pub fn for_backend(
        store: Store,
        redis: Option<Redis>,
        cipher: Cipher,
        clock: SharedClock,
        settings: &SessionSettings,
        log: slog::Logger,
    ) -> Self {
        match redis {
            Some(redis) => Self::new(
                Arc::new(RedisSessions::new(redis)),
                cipher,
                clock,
                settings,
                log,
            ),
            None => Self::new(
                Arc::new(SqliteSessions::new(store)),
                cipher,
                clock,
                settings,
                log,
            ),
        }
    }

    /// How often a session's last-use time is written: a tenth of the idle timeout, at most a
    /// minute. The idle timeout therefore ends a session at most this much early, never late.
    pub fn touch_every_ms(&self) -> i64 {
        (self.idle_ms / 10).clamp(1_000, MAX_TOUCH_INTERVAL_MS)
    }

    /// The idle timeout, ms.
    pub fn idle_ms(&self) -> i64 {
        self.idle_ms
    }

    /// The absolute timeout, ms (the longest a session lives; the cookie's `Max-Age`).
    pub fn absolute_ms(&self) -> i64 {
        self.absolute_ms
    }

    fn expires_at(&self, record: &Record) -> i64 {
        (record.last_seen_at.saturating_add(self.idle_ms))
            .min(record.created_at.saturating_add(self.absolute_ms))
    }

    fn seal(&self, id_hash: &str, record: &Record) -> Result<StoredSession, SessionError> {
        let plain = serde_json::to_vec(record).map_err(|e| SessionError::Record(e.to_string()))?;
        let sealed = self
            .cipher
            .sealer(Purpose::Sessions)
            .and_then(|sealer| sealer.seal(fields::SESSION_DATA, id_hash, &plain))
            .map_err(|e| SessionError::Record(e.to_string()))?;
        Ok(StoredSession {
            id_hash: id_hash.to_owned(),
            admin_id: record.admin_id.clone(),
            sealed,
            created_at: record.created_at,
            expires_at: self.expires_at(record),
        })
    }

    fn try_open(&self, id_hash: &str, sealed: &[u8]) -> Result<Record, CryptoError> {
        // A record in the format before encryption at rest (version 1, still in Redis after an
        // upgrade) is no session, and not a value that failed to open.
        if sealed.first() == Some(&LEGACY_RECORD_VERSION) {
            return Err(CryptoError::UnknownVersion(LEGACY_RECORD_VERSION));
        }
        let plain = self.cipher.open(fields::SESSION_DATA, id_hash, sealed)?;
        serde_json::from_slice::<Record>(&plain).map_err(|_| CryptoError::NotText)
    }

    /// Opens a stored record; `None` (logged) if it does not open: a foreign, tampered or
    /// retired-key record is no session.
    async fn open(&self, id_hash: &str, sealed: &[u8]) -> Option<Record> {
        let mut opened = self.try_open(id_hash, sealed);
        if let Err(CryptoError::UnknownKey(_)) = opened {
            // Sealed by a relay that rotated since this one last read the ring.
            let (cipher, now) = (self.cipher.clone(), self.clock.now_ms());
            let refreshed = tokio::task::spawn_blocking(move || cipher.refresh(now))
                .await
                .unwrap_or(false);
            if refreshed {
                opened = self.try_open(id_hash, sealed);
            }
        }
        match opened {
            Ok(record) => Some(record),
            Err(CryptoError::UnknownVersion(LEGACY_RECORD_VERSION)) => {
                slog::info!(
                    self.log,
                    "a session from before the upgrade to encryption at rest; it has ended"
                );
                None
            }
            Err(e) => {
                slog::warn!(self.log, "a stored session record does not open; ignoring it"; "error" => %e);
                None
            }
        }
    }

    fn session(&self, id_hash: String, record: Record) -> Session {
        Session {
            expires_at: self.expires_at(&record),
            id_hash,
            public_id: record.id,
            admin_id: record.admin_id,
            username: record.username,
            csrf_token: secret_string(record.csrf),
            created_at: record.created_at,
            last_seen_at: record.last_seen_at,
        }
    }

    /// Logs `admin_id` in: a fresh session id and CSRF token; ends the admin's oldest sessions
    /// beyond the cap.
    pub async fn create(&self, admin_id: &str, username: &str) -> Result<NewSession, SessionError> {
        let now = self.clock.now_ms();
        let id = new_session_id();
        let id_hash = hash_secret(id.expose_secret());
        let record = Record {
            id: format!("{PUBLIC_ID_PREFIX}{}", ulid::Ulid::new()),
            admin_id: admin_id.to_owned(),
            username: username.to_owned(),
            csrf: new_csrf_token().expose_secret().to_owned(),
            created_at: now,
            last_seen_at: now,
        };
        let stored = self.seal(&id_hash, &record)?;
        let ended = self
            .writer
            .insert(
                stored,
                self.max_per_admin,
                now,
                u64::try_from(self.absolute_ms).unwrap_or(u64::MAX),
            )
            .await?;
        if !ended.is_empty() {
            slog::info!(crate::logging::request_scoped(&self.log), "session cap reached; ended the oldest"; "admin" => admin_id, "ended" => ended.len());
        }
        Ok(NewSession {
            id,
            session: self.session(id_hash, record),
            ended: ended.len(),
        })
    }

    /// The live session with this id (the cookie value), or `None` if there is none or it ended.
    /// Records its use when the last write is older than [`SessionManager::touch_every_ms`], in the
    /// background.
    pub async fn authenticate(&self, session_id: &str) -> Result<Option<Session>, SessionError> {
        self.lookup(session_id, true).await
    }

    /// Like [`SessionManager::authenticate`], without recording a use: for what a page does by
    /// itself (a chart's refresh, the event stream's keep-alive), which must not keep an idle
    /// session alive.
    pub async fn peek(&self, session_id: &str) -> Result<Option<Session>, SessionError> {
        self.lookup(session_id, false).await
    }

    async fn lookup(&self, session_id: &str, touch: bool) -> Result<Option<Session>, SessionError> {
        let id_hash = hash_secret(session_id);
        let Some(sealed) = self.reader.get(&id_hash).await? else {
            return Ok(None);
        };
        let Some(mut record) = self.open(&id_hash, &sealed).await else {
            return Ok(None);
        };
        let now = self.clock.now_ms();
        if now >= self.expires_at(&record) {
            self.end_in_background(id_hash, record.admin_id);
            return Ok(None);
        }
        if touch && now - record.last_seen_at >= self.touch_every_ms() {
            record.last_seen_at = now;
            let stored = self.seal(&id_hash, &record)?;
            let (writer, log) = (
                self.writer.clone(),
                crate::logging::request_scoped(&self.log),
            );
            tokio::spawn(async move {
                if let Err(e) = writer.replace(stored, now).await {
                    slog::warn!(log, "could not record session use"; "error" => %e);
                }
            });
        }
        Ok(Some(self.session(id_hash, record)))
    }

    fn end_in_background(&self, id_hash: String, admin_id: String) {
        let (writer, log) = (
            self.writer.clone(),
            crate::logging::request_scoped(&self.log),
        );
        tokio::spawn(async move {
            if let Err(e) = writer.delete(&id_hash, &admin_id).await {
                slog::warn!(log, "could not delete an ended session"; "error" => %e);
            }
        });
    }

    /// An admin's live sessions, oldest first.
    pub async fn list(&self, admin_id: &str) -> Result<Vec<Session>, SessionError> {
        let now = self.clock.now_ms();
        let mut sessions = Vec::new();
        for (id_hash, sealed) in self.reader.list(admin_id, now).await? {
            let Some(record) = self.open(&id_hash, &sealed).await else {
                continue;
            };
            if record.admin_id == admin_id && now < self.expires_at(&record) {
                sessions.push(self.session(id_hash, record));
            }
        }
        sessions.sort_by(|a, b| (a.created_at, &a.public_id).cmp(&(b.created_at, &b.public_id)));
        Ok(sessions)
    }

    /// Ends one session (logout, or `DELETE /auth/sessions/{id}`); whether it existed.
    pub async fn end(&self, id_hash: &str, admin_id: &str) -> Result<bool, SessionError> {
        self.writer.delete(id_hash, admin_id).await
    }

    /// Ends every session of an admin (account removed or password changed); how many.
    pub async fn end_all(&self, admin_id: &str) -> Result<usize, SessionError> {
        self.writer.delete_admin(admin_id).await
    }

    /// Deletes ended sessions from a backend without TTLs; how many.
    pub async fn purge_expired(&self) -> Result<usize, SessionError> {
        self.writer.purge_expired(self.clock.now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use beepmyphone_actors::clock::ManualClock;

    use super::*;
    use crate::config::{RedisSettings, StorageSettings};
    use crate::crypto::secrets::constant_time_eq;
    use crate::store::admins::AdminRow;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Store,
        cipher: Cipher,
        clock: ManualClock,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default()).unwrap();
        let cipher = crate::crypto::ring::tests::test_cipher();
        let clock = ManualClock::starting_now();
        let mut conn = store.conn().unwrap();
        for id in ["adm_1", "adm_2"] {
            admins::insert(
                &mut conn,
                &AdminRow {
                    id: id.into(),
                    username: id.into(),
                    password_hash: "x".into(),
                    created_at: 0,
                    updated_at: 0,
                },
            )
            .unwrap();
        }
        Fixture {
            _dir: dir,
            store,
            cipher,
            clock,
        }
    }

    fn settings() -> SessionSettings {
        SessionSettings {
            idle_timeout_seconds: 600,
            absolute_timeout_seconds: 3_600,
            max_per_admin: 3,
            cleanup_interval_seconds: 60,
        }
    }

    async fn redis() -> Redis {
        crate::redis::test_redis().await
    }

    fn manager(f: &Fixture, redis: Option<Redis>) -> SessionManager {
        SessionManager::for_backend(
            f.store.clone(),
            redis,
            f.cipher.clone(),
            Arc::new(f.clock.clone()),
            &settings(),
            crate::logging::discard(),
        )
    }

    /// Lets background touches and deletes land.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn lifecycle(redis: Option<Redis>) {
        let f = fixture();
        let m = manager(&f, redis);
        let new = m.create("adm_1", "alice").await.unwrap();
        assert!(new.id.expose_secret().starts_with("bms_"));
        let s = m
            .authenticate(new.id.expose_secret())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.username, "alice");
        assert!(s.public_id.starts_with("ses_"));
        assert!(constant_time_eq(
            s.csrf_token.expose_secret(),
            new.session.csrf_token.expose_secret()
        ));
        // Neither the session id nor the CSRF token is ever printed.
        let printed = format!("{new:?} {new:#?} {s:?}");
        assert!(printed.contains("ses_") && printed.contains("REDACTED"));
        assert!(!printed.contains(new.id.expose_secret()), "{printed}");
        assert!(!printed.contains(s.csrf_token.expose_secret()), "{printed}");
        assert!(!printed.contains(&s.id_hash), "{printed}");
        assert!(m.authenticate("bms_nope").await.unwrap().is_none());
        // Idle: used within the idle timeout, it lives on; left alone past it, it ends.
        for _ in 0..5 {
            f.clock.advance(Duration::from_secs(500));
            assert!(m
                .authenticate(new.id.expose_secret())
                .await
                .unwrap()
                .is_some());
            settle().await;
        }
        f.clock.advance(Duration::from_secs(601));
        assert!(m
            .authenticate(new.id.expose_secret())
            .await
            .unwrap()
            .is_none());
        // Absolute: ends after an hour however busy.
        let busy = m.create("adm_1", "alice").await.unwrap();
        for _ in 0..7 {
            f.clock.advance(Duration::from_secs(500));
            assert!(m
                .authenticate(busy.id.expose_secret())
                .await
                .unwrap()
                .is_some());
            settle().await;
        }
        f.clock.advance(Duration::from_secs(200));
        assert!(m
            .authenticate(busy.id.expose_secret())
            .await
            .unwrap()
            .is_none());
    }

    #[actix_rt::test]
    async fn sessions_lifecycle_sqlite() {
        lifecycle(None).await;
    }

    #[actix_rt::test]
    async fn sessions_lifecycle_redis() {
        lifecycle(Some(redis().await)).await;
    }

    async fn cap_list_and_end(redis: Option<Redis>) {
        let f = fixture();
        let m = manager(&f, redis);
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(m.create("adm_1", "alice").await.unwrap());
            f.clock.advance(Duration::from_secs(1));
        }
        let other = m.create("adm_2", "bob").await.unwrap();
        assert!(
            m.authenticate(ids[0].id.expose_secret())
                .await
                .unwrap()
                .is_none(),
            "the fourth login ended the oldest"
        );
        let live = m.list("adm_1").await.unwrap();
        let public: Vec<&str> = live.iter().map(|s| s.public_id.as_str()).collect();
        let expected: Vec<&str> = ids[1..]
            .iter()
            .map(|n| n.session.public_id.as_str())
            .collect();
        assert_eq!(public, expected);
        assert!(m.end(&ids[1].session.id_hash, "adm_1").await.unwrap());
        assert!(!m.end(&ids[1].session.id_hash, "adm_1").await.unwrap());
        assert_eq!(m.list("adm_1").await.unwrap().len(), 2);
        assert_eq!(m.end_all("adm_1").await.unwrap(), 2);
        assert!(m.list("adm_1").await.unwrap().is_empty());
        assert!(m
            .authenticate(other.id.expose_secret())
            .await
            .unwrap()
            .is_some());
    }

    #[actix_rt::test]
    async fn sessions_cap_list_and_end_sqlite() {
        cap_list_and_end(None).await;
    }

    #[actix_rt::test]
    async fn sessions_cap_list_and_end_redis() {
        cap_list_and_end(Some(redis().await)).await;
    }

    #[actix_rt::test]
    async fn sessions_are_sealed_and_bound_to_their_id() {
        let f = fixture();
        let m = manager(&f, None);
        let a = m.create("adm_1", "alice").await.unwrap();
        let b = m.create("adm_1", "alice").await.unwrap();
        let mut conn = f.store.conn().unwrap();
        let row_a = admins::session(&mut conn, &a.session.id_hash)
            .unwrap()
            .unwrap();
        assert!(!row_a.data.windows(5).any(|w| w == b"alice"));
        assert!(!row_a
            .data
            .windows(10)
            .any(|w| w == &a.session.csrf_token.expose_secret().as_bytes()[..10]));
        assert_ne!(
            row_a.id_hash,
            a.id.expose_secret(),
            "only the hash is stored"
        );
        // Swap the records: neither opens under the other's id.
        admins::update_session(&mut conn, &b.session.id_hash, &row_a.data, row_a.expires_at)
            .unwrap();
        drop(conn);
        assert!(m
            .authenticate(b.id.expose_secret())
            .await
            .unwrap()
            .is_none());
        assert!(m
            .authenticate(a.id.expose_secret())
            .await
            .unwrap()
            .is_some());
    }

    #[actix_rt::test]
    async fn sessions_sealed_under_a_newer_data_key_open_after_a_reload() {
        use crate::crypto::disk::OpenOptions;
        use crate::crypto::provider::AES_256_GCM;
        use crate::crypto::{DiskDataKeys, KekSource};
        let f = fixture();
        let dir = f._dir.path().join("keys");
        let open = || {
            DiskDataKeys::open(
                &dir,
                &OpenOptions {
                    source: &KekSource::KeyFile,
                    algorithm: &AES_256_GCM,
                    iterations: crate::config::MIN_PBKDF2_ITERATIONS,
                    now_ms: 0,
                },
            )
            .unwrap()
        };
        // Two relays share the keys directory; the second rotates and seals with the new key.
        let (disk, ring) = open();
        let old_cipher = Cipher::new(ring);
        let disk = std::sync::Mutex::new(disk);
        // The ring as loaded, not the cipher itself: a refresher holding its own cipher is a
        // reference cycle (LeakSanitizer reported it; the relay's refresher holds a Weak).
        let loaded = old_cipher.snapshot();
        old_cipher.set_refresher(Box::new(move || disk.lock().unwrap().reload(&loaded).ok()));
        let session_manager = |cipher: Cipher| {
            SessionManager::for_backend(
                f.store.clone(),
                None,
                cipher,
                Arc::new(f.clock.clone()),
                &settings(),
                crate::logging::discard(),
            )
        };
        let old = session_manager(old_cipher.clone());
        let (mut other, _) = open();
        other.rotate(&[Purpose::Sessions], &AES_256_GCM, 1).unwrap();
        let (_, rotated_ring) = open();
        let rotated = session_manager(Cipher::new(rotated_ring));
        let new = rotated.create("adm_1", "alice").await.unwrap();
        assert!(old
            .authenticate(new.id.expose_secret())
            .await
            .unwrap()
            .is_some());
        assert_eq!(old.list("adm_1").await.unwrap().len(), 1);
        // Without a way to re-read the ring (another ring altogether), such a record does not open.
        let stuck = manager(&f, None);
        assert!(stuck
            .authenticate(new.id.expose_secret())
            .await
            .unwrap()
            .is_none());
    }

    /// Changes the sealed record of a stored session in place.
    fn rewrite_record(f: &Fixture, id_hash: &str, change: impl FnOnce(&mut Vec<u8>)) {
        let mut conn = f.store.conn().unwrap();
        let row = admins::session(&mut conn, id_hash).unwrap().unwrap();
        let mut record = row.data.clone();
        change(&mut record);
        admins::update_session(&mut conn, id_hash, &record, row.expires_at).unwrap();
    }

    #[actix_rt::test]
    async fn a_session_record_from_before_the_upgrade_is_no_session_and_no_failure() {
        let f = fixture();
        let m = manager(&f, None);
        let a = m.create("adm_1", "alice").await.unwrap();
        rewrite_record(&f, &a.session.id_hash, |record| {
            record[0] = LEGACY_RECORD_VERSION
        });
        assert!(m
            .authenticate(a.id.expose_secret())
            .await
            .unwrap()
            .is_none());
        assert_eq!(f.cipher.failures().count(), 0);
        // A tampered current record is a failure.
        let b = m.create("adm_1", "alice").await.unwrap();
        rewrite_record(&f, &b.session.id_hash, |record| {
            let last = record.len() - 1;
            record[last] ^= 1;
        });
        assert!(m
            .authenticate(b.id.expose_secret())
            .await
            .unwrap()
            .is_none());
        assert_eq!(f.cipher.failures().count(), 1);
    }

    #[actix_rt::test]
    async fn sessions_purge_removes_ended_rows() {
        let f = fixture();
        let m = manager(&f, None);
        m.create("adm_1", "alice").await.unwrap();
        assert_eq!(m.purge_expired().await.unwrap(), 0);
        f.clock.advance(Duration::from_secs(601));
        assert_eq!(m.purge_expired().await.unwrap(), 1);
    }

    #[actix_rt::test]
    async fn sessions_fail_closed_without_redis() {
        let f = fixture();
        let down = Redis::connect(&RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            timeout_ms: 200,
            ..RedisSettings::default()
        })
        .await
        .unwrap();
        let m = manager(&f, Some(down));
        assert!(matches!(
            m.authenticate("bms_x").await,
            Err(SessionError::Unavailable(_))
        ));
        assert!(matches!(
            m.create("adm_1", "alice").await,
            Err(SessionError::Unavailable(_))
        ));
    }

    /// Session lookup latency (one `authenticate` without a touch), SQLite and Redis.
    /// `cargo test --release --lib session_lookup_latency -- --ignored --nocapture`
    #[actix_rt::test]
    #[ignore = "a measurement, not a check"]
    async fn session_lookup_latency() {
        for (name, redis) in [("sqlite", None), ("redis", Some(redis().await))] {
            let f = fixture();
            let m = manager(&f, redis);
            let new = m.create("adm_1", "alice").await.unwrap();
            for _ in 0..200 {
                m.authenticate(new.id.expose_secret())
                    .await
                    .unwrap()
                    .unwrap();
            }
            let n = 5_000u32;
            let mut samples = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let started = std::time::Instant::now();
                m.authenticate(new.id.expose_secret())
                    .await
                    .unwrap()
                    .unwrap();
                samples.push(started.elapsed());
            }
            samples.sort();
            let total: Duration = samples.iter().sum();
            println!(
                "session lookup {name}: mean {:?}, p50 {:?}, p99 {:?} over {n}",
                total / n,
                samples[samples.len() / 2],
                samples[samples.len() * 99 / 100]
            );
        }
    }
}
