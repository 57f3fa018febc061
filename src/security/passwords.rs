//! Admin passwords: bcrypt behind the [`PasswordHasher`] trait, run off the async workers with
//! bounded concurrency.
//!
//! - Cost comes from `auth.bcrypt_cost` (default 12); below 10 is refused outside tests.
//! - Passwords over 72 bytes are refused with a clear error instead of being silently truncated
//!   (bcrypt's `non_truncating_*` functions).
//! - Hashing and verification run on the blocking pool behind a semaphore, so a login flood queues
//!   up instead of starving delivery.
//! - Unknown users get a verification against a dummy hash of the same cost, so the time taken does
//!   not reveal which names exist.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::crypto::secrets::{secret_string, ExposeSecret, SecretString};

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;
/// bcrypt's limit: longer inputs would be truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// Lowest cost accepted outside tests.
pub const MIN_COST: u32 = 10;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_LEN`] characters.
    #[error("the password must be at least {MIN_PASSWORD_LEN} characters long")]
    TooShort,
    /// Longer than [`MAX_PASSWORD_BYTES`] bytes.
    #[error("the password must be at most {MAX_PASSWORD_BYTES} bytes long (bcrypt's limit)")]
    TooLong,
    /// The stored hash is not a bcrypt hash.
    #[error("the stored password hash is malformed")]
    BadHash,
    /// The blocking task failed.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies passwords. Implementations are blocking (CPU-bound).
pub trait PasswordHasher: Send + Sync + 'static {
    /// A new salted hash of `password`.
    fn hash(&self, password: &SecretString) -> Result<String, PasswordError>;
    /// Whether `password` matches `hash` (compared in constant time by the implementation).
    fn verify(&self, password: &SecretString, hash: &str) -> Result<bool, PasswordError>;
}

/// bcrypt with a fixed cost.
#[derive(Debug, Clone)]
pub struct Bcrypt {
    cost: u32,
}

impl Bcrypt {
    /// bcrypt at `cost`; refuses costs below [`MIN_COST`] unless `allow_weak` (tests only).
    pub fn new(cost: u32, allow_weak: bool) -> Result<Self, String> {
        if !(4..=31).contains(&cost) || (cost < MIN_COST && !allow_weak) {
            return Err(format!("bcrypt cost must be between {MIN_COST} and 31"));
        }
        Ok(Self { cost })
    }
}

fn check_length(password: &SecretString) -> Result<(), PasswordError> {
    if password.expose_secret().len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

impl PasswordHasher for Bcrypt {
    fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        check_length(password)?;
        if password.expose_secret().chars().count() < MIN_PASSWORD_LEN {
            return Err(PasswordError::TooShort);
        }
        bcrypt::non_truncating_hash(password.expose_secret(), self.cost)
            .map_err(|e| PasswordError::Failed(e.to_string()))
    }

    fn verify(&self, password: &SecretString, hash: &str) -> Result<bool, PasswordError> {
        check_length(password)?;
        match bcrypt::non_truncating_verify(password.expose_secret(), hash) {
            Ok(matches) => Ok(matches),
            Err(bcrypt::BcryptError::Truncation(_)) => Err(PasswordError::TooLong),
            Err(_) => Err(PasswordError::BadHash),
        }
    }
}

/// Runs a [`PasswordHasher`] off the async workers, a bounded number at a time.
#[derive(Clone)]
pub struct PasswordManager {
    hasher: Arc<dyn PasswordHasher>,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl PasswordManager {
    /// A manager allowing `concurrency` hashes at once. Computes the dummy hash once (blocking).
    pub fn new(hasher: Arc<dyn PasswordHasher>, concurrency: usize) -> Result<Self, PasswordError> {
        let dummy = hasher.hash(&secret_string("not-a-real-password-for-timing".to_owned()))?;
        Ok(Self {
            hasher,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy_hash: dummy.into(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn PasswordHasher) -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| PasswordError::Failed(e.to_string()))?;
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || work(hasher.as_ref()))
            .await
            .map_err(|e| PasswordError::Failed(e.to_string()))?
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: SecretString) -> Result<String, PasswordError> {
        self.run(move |h| h.hash(&password)).await
    }

    /// Verifies `password` against `hash`, or against the dummy hash when there is no user, so
    /// that both take the same time; `false` for no user.
    pub async fn verify(
        &self,
        password: SecretString,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let exists = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = self.run(move |h| h.verify(&password, &hash)).await;
        match matches {
            Ok(m) => Ok(m && exists),
            // An over-long password is refused the same way for real and unknown users.
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        secret_string(s.to_owned())
    }

    #[test]
    fn costs_below_ten_are_refused_outside_tests() {
        assert!(Bcrypt::new(9, false).is_err());
        assert!(Bcrypt::new(4, true).is_ok());
        assert!(Bcrypt::new(12, false).is_ok());
        assert!(Bcrypt::new(32, true).is_err());
    }

    #[test]
    fn hashes_verify_and_limits_hold() {
        let b = Bcrypt::new(4, true).unwrap();
        let hash = b.hash(&secret("correct horse battery")).unwrap();
        assert!(hash.starts_with("$2"));
        assert!(b.verify(&secret("correct horse battery"), &hash).unwrap());
        assert!(!b.verify(&secret("correct horse battery!"), &hash).unwrap());
        assert_eq!(b.hash(&secret("short")), Err(PasswordError::TooShort));
        let long = "a".repeat(73);
        assert_eq!(b.hash(&secret(&long)), Err(PasswordError::TooLong));
        assert_eq!(b.verify(&secret(&long), &hash), Err(PasswordError::TooLong));
        assert_eq!(
            b.verify(&secret("whatever password"), "not-a-hash"),
            Err(PasswordError::BadHash)
        );
    }

    #[actix_rt::test]
    async fn unknown_users_never_match_but_cost_the_same() {
        let manager = PasswordManager::new(Arc::new(Bcrypt::new(4, true).unwrap()), 2).unwrap();
        let hash = manager
            .hash(secret("a long enough password"))
            .await
            .unwrap();
        assert!(manager
            .verify(secret("a long enough password"), Some(hash))
            .await
            .unwrap());
        assert!(!manager
            .verify(secret("not-a-real-password-for-timing"), None)
            .await
            .unwrap());
        assert!(!manager
            .verify(secret("a long enough password"), None)
            .await
            .unwrap());
    }
}
