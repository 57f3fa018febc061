//! Encryption at rest, and the primitives every secret of the relay is made of.
//!
//! - [`secrets`]: random tokens and keys from the OS, their storage hashes, constant-time
//!   comparison, and the wiped-on-drop secret types;
//! - [`files`]: secret files written whole (temporary file, then link or rename) and owner-only
//!   modes;
//! - [`provider`]: the [`EncryptionProvider`](provider::EncryptionProvider) trait and its
//!   algorithms, AES-256-GCM (the default) and XChaCha20-Poly1305;
//! - [`envelope`]: the one versioned format of every sealed value, bound to its table, column and
//!   row;
//! - [`ring`]: the data keys in force as the store uses them ([`Cipher`], [`Sealer`]), the sealed
//!   columns ([`fields`]) and blind indexes;
//! - [`disk`]: the data keys on disk, wrapped by the key-encryption key (a key file, or a
//!   passphrase through PBKDF2);
//! - [`e2e`]: end-to-end envelopes from a publisher to one device (X25519, HKDF-SHA256,
//!   XChaCha20-Poly1305), which the relay stores and forwards without opening.
//!
//! docs/security.md states what this protects against and what it does not.

pub mod disk;
pub mod e2e;
pub mod envelope;
pub mod files;
pub mod provider;
pub mod ring;
pub mod secrets;

pub use disk::{DataKeyError, DiskDataKeys, KekSource};
pub use ring::{fields, Cipher, DataRing, Field, Purpose, Sealer};

/// A value that cannot be sealed or opened.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The tag does not verify: tampered with, moved to another field or row, or another key.
    #[error("the sealed value does not open (tampered with, moved, or another key)")]
    Open,
    /// Too short to be a sealed value.
    #[error("the sealed value is truncated")]
    Truncated,
    /// An envelope version this relay does not read.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u8),
    /// An algorithm this relay does not know.
    #[error("unknown algorithm {0}")]
    UnknownAlgorithm(u8),
    /// A key id the ring does not hold.
    #[error("sealed under data key {0}, which the ring does not hold")]
    UnknownKey(u32),
    /// The key is of another algorithm than the envelope names.
    #[error("data key {key_id} is {key}, the value says {sealed}")]
    AlgorithmMismatch {
        /// The key.
        key_id: u32,
        /// Its algorithm.
        key: &'static str,
        /// The envelope's.
        sealed: &'static str,
    },
    /// The key is not one of the field's purpose.
    #[error("data key {key_id} does not protect {field}")]
    WrongPurpose {
        /// The key.
        key_id: u32,
        /// The column.
        field: &'static str,
    },
    /// The ring has no current key of a purpose.
    #[error("no {} data key", .0.as_str())]
    NoKey(Purpose),
    /// It opened, but it is not UTF-8 text.
    #[error("the opened value is not text")]
    NotText,
    /// Keys could not be read or written.
    #[error("data keys: {0}")]
    Keys(String),
}
