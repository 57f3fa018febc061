//! The state every handler shares: settings, store, actor addresses, keys, clock, logger.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::keys::KeyManager;
use beepmyphone_actors::supervisor::ActorGraph;

use crate::config::Settings;
use crate::domain::{ApiTokenId, Scope};
use crate::security::jwt::JwtKeys;
use crate::security::limits::Limits;
use crate::security::passwords::PasswordManager;
use crate::security::revocation::Revocations;
use crate::security::sessions::SessionManager;
use crate::store::Store;

/// An API token known to be valid, cached by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    /// The token.
    pub id: ApiTokenId,
    /// Its scope.
    pub scope: Scope,
    /// When its `last_used_at` was last written (epoch ms).
    pub touched_at: i64,
}

/// API tokens seen valid, by hash, so that publishing does not read the store per request.
/// Deleting a token through the API evicts it.
#[derive(Debug, Default)]
pub struct ApiTokenCache {
    by_hash: RwLock<HashMap<String, CachedToken>>,
}

impl ApiTokenCache {
    /// The cached token with this hash.
    pub fn get(&self, hash: &str) -> Option<CachedToken> {
        self.by_hash.read().ok()?.get(hash).cloned()
    }

    /// Remembers a valid token.
    pub fn insert(&self, hash: String, token: CachedToken) {
        if let Ok(mut map) = self.by_hash.write() {
            map.insert(hash, token);
        }
    }

    /// Whether the token's `last_used_at` is more than a minute old; if so, marks it written now.
    pub fn touch_due(&self, hash: &str, now_ms: i64) -> bool {
        let stale = |t: &CachedToken| now_ms - t.touched_at >= 60_000;
        if !self
            .by_hash
            .read()
            .ok()
            .and_then(|m| m.get(hash).map(stale))
            .unwrap_or(false)
        {
            return false;
        }
        match self.by_hash.write() {
            Ok(mut map) => match map.get_mut(hash) {
                Some(token) if stale(token) => {
                    token.touched_at = now_ms;
                    true
                }
                _ => false,
            },
            Err(_) => false,
        }
    }

    /// Forgets a token.
    pub fn remove(&self, hash: &str) {
        if let Ok(mut map) = self.by_hash.write() {
            map.remove(hash);
        }
    }
}

/// Shared by all handlers and sockets (behind `web::Data`).
pub struct AppState {
    /// The other relays of a cluster: closing a device's sockets on all of them.
    pub cluster: crate::cluster::Cluster,
    /// The settings in force.
    pub settings: Arc<Settings>,
    /// The store.
    pub store: Store,
    /// The actor graph's addresses.
    pub graph: ActorGraph,
    /// Access-token keys: the immutable snapshot the key manager publishes and swaps on every
    /// change. Read it per request (`keys.load()`); never hold it across an await.
    pub keys: Arc<ArcSwap<JwtKeys>>,
    /// The key manager (rotation on demand).
    pub key_manager: actix::Addr<KeyManager>,
    /// The clock.
    pub clock: SharedClock,
    /// The root logger.
    pub log: slog::Logger,
    /// Valid API tokens.
    pub api_tokens: ApiTokenCache,
    /// The device-token deny-list and revocation (Redis or SQLite).
    pub revocations: Revocations,
    /// Admin dashboard sessions (Redis or SQLite).
    pub sessions: SessionManager,
    /// Admin password hashing, off the async workers with bounded concurrency.
    pub passwords: PasswordManager,
    /// Rate limits, blocked IPs and open sockets per IP ([`crate::security::limits`]).
    pub limits: Arc<Limits>,
    /// The OTLP export (`[otlp]`), `None` when it is off.
    pub otlp: Option<Arc<crate::monitoring::otlp::Otlp>>,
    /// The re-encryption job's progress.
    pub reencrypt: Arc<beepmyphone_actors::reencrypt::Progress>,
    /// The audit log's writer.
    pub audit: crate::audit::Audit,
    /// The certificate manager, when the relay serves HTTPS (`tls.mode`).
    pub tls: Option<crate::tls::Tls>,
    /// The last hour of throughput, latency, queue depth and sockets (the dashboard's charts).
    pub history: actix::Addr<beepmyphone_actors::history::MetricsHistory>,
    /// The last audit verification the relay ran.
    pub verification: crate::audit::verify::LastVerification,
    /// Live event streams open per caller (`GET /api/v1/events`).
    pub streams: crate::security::limits::StreamSlots,
}

impl AppState {
    /// What a metrics scrape reads.
    pub fn scrape(&self) -> crate::monitoring::metrics::Scrape {
        crate::monitoring::metrics::Scrape {
            graph: self.graph.clone(),
            store: self.store.clone(),
            limits: self.limits.clone(),
            clock: self.clock.clone(),
            reencrypt: self.reencrypt.clone(),
        }
    }
}
