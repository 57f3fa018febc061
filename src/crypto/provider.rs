//! The AEAD algorithms behind the envelope.
//!
//! An [`EncryptionProvider`] encrypts and decrypts with one key; an [`Algorithm`] describes one
//! algorithm (its id in the envelope, its nonce length, how many random nonces one key may use) and
//! builds providers from key bytes. [`ALGORITHMS`] lists those the relay knows: a new algorithm is
//! a new provider (or, for another RustCrypto AEAD, one more [`Algorithm`] over [`RustCryptoAead`])
//! and a line there; the envelope and the key ring do not change.

use aes_gcm::aead::array::Array;
use aes_gcm::aead::{AeadCore, AeadInOut, KeyInit};

use super::CryptoError;
use crate::crypto::secrets::KeyBytes;

/// The length of every authentication tag here (both algorithms use 128-bit tags).
pub const TAG_LEN: usize = 16;

/// Encrypts and decrypts with one key.
pub trait EncryptionProvider: Send + Sync {
    /// The algorithm.
    fn algorithm(&self) -> &'static Algorithm;

    /// Encrypts `buffer[start..]` in place under `nonce` (of [`Algorithm::nonce_len`] bytes),
    /// authenticating `aad` too, and appends the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), CryptoError>;

    /// Decrypts `ciphertext` (the encrypted bytes followed by the tag); fails if anything,
    /// `aad` included, is not exactly what was sealed.
    fn open(&self, nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError>;
}

/// One AEAD algorithm.
pub struct Algorithm {
    /// Its byte in the envelope.
    pub id: u8,
    /// Its name in settings and in the key ring file.
    pub name: &'static str,
    /// Nonce length in bytes.
    pub nonce_len: usize,
    /// After how many encryptions a key is replaced: random nonces of 96 bits stay safe for 2^32
    /// encryptions per key (NIST SP 800-38D), so AES-GCM keys are rotated at 2^30, well before;
    /// `None` when random nonces are safe at any volume (XChaCha20's 192 bits).
    pub rotate_after: Option<u64>,
    /// Builds a provider for a key.
    pub build: fn(&KeyBytes) -> Box<dyn EncryptionProvider>,
}

impl std::fmt::Debug for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Algorithm {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for Algorithm {}

/// AES-256-GCM: the default (hardware AES on every current CPU).
pub static AES_256_GCM: Algorithm = Algorithm {
    id: 1,
    name: "aes-256-gcm",
    nonce_len: 12,
    rotate_after: Some(1 << 30),
    build: |key| Box::new(RustCryptoAead::<aes_gcm::Aes256Gcm>::new(key, &AES_256_GCM)),
};

/// XChaCha20-Poly1305: 192-bit nonces, safe at random for any volume; fast without AES hardware.
pub static XCHACHA20_POLY1305: Algorithm = Algorithm {
    id: 2,
    name: "xchacha20-poly1305",
    nonce_len: 24,
    rotate_after: None,
    build: |key| {
        Box::new(RustCryptoAead::<chacha20poly1305::XChaCha20Poly1305>::new(
            key,
            &XCHACHA20_POLY1305,
        ))
    },
};

/// Every algorithm the relay opens.
pub static ALGORITHMS: &[&Algorithm] = &[&AES_256_GCM, &XCHACHA20_POLY1305];

impl Algorithm {
    /// The algorithm with this envelope byte.
    pub fn by_id(id: u8) -> Option<&'static Algorithm> {
        ALGORITHMS.iter().copied().find(|a| a.id == id)
    }

    /// The algorithm with this name.
    pub fn by_name(name: &str) -> Option<&'static Algorithm> {
        ALGORITHMS.iter().copied().find(|a| a.name == name)
    }

    /// The names, for error messages.
    pub fn names() -> String {
        ALGORITHMS
            .iter()
            .map(|a| a.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A provider over any RustCrypto AEAD with a 256-bit key and a 128-bit postfix tag. The cipher
/// wipes its key schedule on drop (the crates' `zeroize` features).
pub struct RustCryptoAead<T> {
    cipher: T,
    algorithm: &'static Algorithm,
}

impl<T: KeyInit + AeadCore> RustCryptoAead<T> {
    fn new(key: &KeyBytes, algorithm: &'static Algorithm) -> Self {
        use crate::crypto::secrets::ExposeSecret;
        let key = Array::try_from(key.expose_secret().as_slice())
            .unwrap_or_else(|_| unreachable!("every algorithm here takes a 256-bit key"));
        Self {
            cipher: T::new(&key),
            algorithm,
        }
    }
}

impl<T> EncryptionProvider for RustCryptoAead<T>
where
    T: AeadInOut + Send + Sync,
{
    fn algorithm(&self) -> &'static Algorithm {
        self.algorithm
    }

    fn seal_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buffer: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), CryptoError> {
        let nonce = Array::try_from(nonce).map_err(|_| CryptoError::Truncated)?;
        let plaintext = buffer.get_mut(start..).ok_or(CryptoError::Truncated)?;
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, aad, plaintext.into())
            .map_err(|_| CryptoError::Open)?;
        buffer.extend_from_slice(&tag);
        Ok(())
    }

    fn open(&self, nonce: &[u8], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = Array::try_from(nonce).map_err(|_| CryptoError::Truncated)?;
        let split = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(CryptoError::Truncated)?;
        let (body, tag) = ciphertext.split_at(split);
        let tag = Array::try_from(tag).map_err(|_| CryptoError::Truncated)?;
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_inout_detached(&nonce, aad, plain.as_mut_slice().into(), &tag)
            .map_err(|_| CryptoError::Open)?;
        Ok(plain)
    }
}
