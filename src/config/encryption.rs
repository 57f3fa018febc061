//! `[encryption]`: encryption at rest (docs/security.md).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The environment variable that holds the master passphrase.
pub const PASSPHRASE_ENV: &str = "BEEP_MASTER_PASSPHRASE";
/// The fewest PBKDF2 iterations accepted (OWASP's figure for PBKDF2-HMAC-SHA256).
pub const MIN_PBKDF2_ITERATIONS: u32 = 600_000;

/// `[encryption]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionSettings {
    /// Algorithm of new data keys: `aes-256-gcm` or `xchacha20-poly1305`.
    pub algorithm: String,
    /// A file whose content is the master passphrase (instead of `BEEP_MASTER_PASSPHRASE`);
    /// empty: none. Without a passphrase the key-encryption key is a key file in the keys directory.
    pub passphrase_file: PathBuf,
    /// PBKDF2-HMAC-SHA256 iterations when a passphrase is first used (at least 600000).
    pub pbkdf2_iterations: u32,
    /// Rows the re-encryption job moves per batch.
    pub reencrypt_batch_rows: usize,
    /// Milliseconds between two re-encryption batches.
    pub reencrypt_pause_ms: u64,
}

impl Default for EncryptionSettings {
    fn default() -> Self {
        Self {
            algorithm: "aes-256-gcm".into(),
            passphrase_file: PathBuf::new(),
            pbkdf2_iterations: MIN_PBKDF2_ITERATIONS,
            reencrypt_batch_rows: 500,
            reencrypt_pause_ms: 100,
        }
    }
}

impl EncryptionSettings {
    /// Checks the section (the algorithm's name is checked where keys are made).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pbkdf2_iterations < MIN_PBKDF2_ITERATIONS {
            return Err(ConfigError(format!(
                "encryption.pbkdf2_iterations: must be at least {MIN_PBKDF2_ITERATIONS}"
            )));
        }
        if self.reencrypt_batch_rows == 0 || self.reencrypt_pause_ms == 0 {
            return Err(ConfigError(
                "encryption.reencrypt_batch_rows and reencrypt_pause_ms: must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The re-encryption job's pace.
    pub fn reencrypt(&self) -> beepmyphone_actors::reencrypt::ReencryptConfig {
        beepmyphone_actors::reencrypt::ReencryptConfig {
            batch_rows: self.reencrypt_batch_rows,
            pause: Duration::from_millis(self.reencrypt_pause_ms),
        }
    }
}
