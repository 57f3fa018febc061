//! The token-signing key ring as a port: [`KeyRing`] and the types it speaks. The
//! [`crate::keys::KeyManager`] owns the policy; the binary implements the ring (files on disk).

/// A key of the ring, as the port lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id (`kid` header of the tokens it signs).
    pub kid: String,
    /// When it was created, epoch milliseconds: it signs from then until a newer key exists.
    pub created_ms: i64,
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// The newest key: it signs, and verifies.
    Current,
    /// Replaced, but tokens it signed may still be live: it verifies only.
    Verifying,
    /// Every token it signed has expired: it is removed from the ring.
    Retired,
}

impl KeyState {
    /// The wire and CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Current => "current",
            KeyState::Verifying => "verifying",
            KeyState::Retired => "retired",
        }
    }
}

/// A key with its state, as [`crate::keys::classify`] sees it at some time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The key id.
    pub kid: String,
    /// When it was created, epoch milliseconds.
    pub created_ms: i64,
    /// Its state.
    pub state: KeyState,
    /// When it is (or was) retired, epoch milliseconds; `None` for the current key.
    pub retires_at_ms: Option<i64>,
}

/// A failure of the key ring (disk, key generation, a corrupt key file).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("key ring: {0}")]
pub struct KeyRingError(pub String);

/// The key ring as the actor needs it. Every method may block; the actor calls them on the
/// blocking pool.
pub trait KeyRing: Send + Sync + 'static {
    /// Every key of the ring, oldest first.
    fn list(&self) -> Result<Vec<KeyInfo>, KeyRingError>;
    /// Generates and stores a new key created at `created_ms`.
    fn create(&self, created_ms: i64) -> Result<KeyInfo, KeyRingError>;
    /// Removes a key from the ring for good (its private half is destroyed). Retiring a key that is
    /// already gone is not an error.
    fn retire(&self, kid: &str) -> Result<(), KeyRingError>;
    /// Makes `keys` (exactly one of them current, the others verifying) the snapshot that request
    /// handlers sign and verify with.
    fn publish(&self, keys: &[KeyStatus]) -> Result<(), KeyRingError>;
}
