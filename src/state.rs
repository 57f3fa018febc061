//! The state every handler shares: settings, store, actor addresses, keys, clock, logger.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::supervisor::ActorGraph;

use crate::config::Settings;
use crate::security::jwt::JwtKeys;
use crate::store::Store;

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// Publish notifications only.
    Publish,
}

impl Scope {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Publish => "publish",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Scope::Admin),
            "publish" => Some(Scope::Publish),
            _ => None,
        }
    }
}

/// An API token known to be valid, cached by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    /// `tok_…`
    pub id: String,
    /// Its scope.
    pub scope: Scope,
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

    /// Forgets a token.
    pub fn remove(&self, hash: &str) {
        if let Ok(mut map) = self.by_hash.write() {
            map.remove(hash);
        }
    }
}

/// Shared by all handlers and sockets (behind `web::Data`).
pub struct AppState {
    /// The settings in force.
    pub settings: Arc<Settings>,
    /// The store.
    pub store: Store,
    /// The actor graph's addresses.
    pub graph: ActorGraph,
    /// Access-token keys (an immutable snapshot).
    pub keys: Arc<JwtKeys>,
    /// The clock.
    pub clock: SharedClock,
    /// The root logger.
    pub log: slog::Logger,
    /// Valid API tokens.
    pub api_tokens: ApiTokenCache,
}
