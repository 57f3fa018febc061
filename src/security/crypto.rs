//! Encryption at rest: AES-256-GCM with versioned data keys.
//!
//! Data keys are 32 random bytes in `<keys_dir>/data-<version>.key` (mode 0600; the keys directory
//! is `storage.keys_dir`, by default `<data_dir>/keys`). The newest
//! seals; every version still on disk opens, so rotating the data key loses nothing. A sealed value
//! is `[1][version: u32 BE][nonce: 12 bytes][ciphertext and tag]`; the caller's associated data
//! (e.g. the session id hash) binds it to its row, so a sealed value copied elsewhere fails to open.
//!
//! Key bytes live in memory only as long as it takes to write or parse them, in [`KeyBytes`] /
//! [`Zeroizing`] buffers that are wiped on drop; the ciphers (aes-gcm's `zeroize` feature) wipe
//! their key schedules when dropped. [`DataKeys`] prints only its versions.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::Rng;

use crate::security::secrets::{os_random, ExposeSecret, KeyBytes, Zeroizing};

const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const TAG_LEN: usize = 16;

/// A crypto failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Not a value this module sealed, tampered with, or sealed under a key that is gone.
    #[error("the sealed value cannot be opened")]
    Open,
    /// Keys could not be read or written.
    #[error("data keys: {0}")]
    Keys(String),
}

/// The data keys, by version.
pub struct DataKeys {
    current: u32,
    keys: BTreeMap<u32, Aes256Gcm>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("current", &self.current)
            .field("versions", &self.versions())
            .finish_non_exhaustive()
    }
}

fn key_path(dir: &Path, version: u32) -> std::path::PathBuf {
    dir.join(format!("data-{version}.key"))
}

/// Writes a new key file through [`crate::security::files::write_new`], so that a relay sharing the
/// directory never reads a half-written key, and an existing version is never overwritten.
fn write_new_key(dir: &Path, version: u32) -> Result<(), CryptoError> {
    let key = KeyBytes::init_with_mut(|key| os_random(key));
    let path = key_path(dir, version);
    crate::security::files::write_new(&path, key.expose_secret())
        .map_err(|e| CryptoError::Keys(format!("cannot write {}: {e}", path.display())))
}

impl DataKeys {
    /// Loads every data key in `<data_dir>/keys`, creating version 1 on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, CryptoError> {
        Self::load_or_create_in(&data_dir.join("keys"))
    }

    /// Loads every data key in the keys directory `dir` (`storage.keys_dir`, see
    /// [`crate::config::Settings::keys_dir`]), creating version 1 on first start. Relays that share
    /// sessions through Redis must share this directory, so that each opens what the others seal.
    pub fn load_or_create_in(dir: &Path) -> Result<Self, CryptoError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CryptoError::Keys(format!("cannot create {}: {e}", dir.display())))?;
        let mut keys = Self::read_all(dir)?;
        if keys.is_empty() {
            // Two relays starting at once on a shared directory may both try: `create_new` lets one
            // win, and the other reads the winner's key.
            if let Err(e) = write_new_key(dir, 1) {
                if !key_path(dir, 1).exists() {
                    return Err(e);
                }
            }
            keys = Self::read_all(dir)?;
        }
        let current = keys
            .keys()
            .next_back()
            .copied()
            .ok_or_else(|| CryptoError::Keys("no data key".into()))?;
        Ok(Self { current, keys })
    }

    fn read_all(dir: &Path) -> Result<BTreeMap<u32, Aes256Gcm>, CryptoError> {
        let mut keys = BTreeMap::new();
        let entries = fs::read_dir(dir).map_err(|e| CryptoError::Keys(e.to_string()))?;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name
                .strip_prefix("data-")
                .and_then(|n| n.strip_suffix(".key"))
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let bytes = Zeroizing::new(
                fs::read(entry.path()).map_err(|e| CryptoError::Keys(e.to_string()))?,
            );
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| CryptoError::Keys(format!("{name} is not a 32-byte key")))?;
            keys.insert(version, cipher);
        }
        Ok(keys)
    }

    /// Adds a new data key version on disk; returns it. Running relays pick it up on restart.
    pub fn rotate(data_dir: &Path) -> Result<u32, CryptoError> {
        Self::rotate_in(&data_dir.join("keys"))
    }

    /// Adds a new data key version in the keys directory `dir`; returns it.
    pub fn rotate_in(dir: &Path) -> Result<u32, CryptoError> {
        let keys = Self::load_or_create_in(dir)?;
        let next = keys.current + 1;
        write_new_key(dir, next)?;
        Ok(next)
    }

    /// The version that seals.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// Every version that opens.
    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// The key version a sealed value names, if it looks like one (to tell "sealed under a key
    /// this process has not loaded yet" from "not ours").
    pub fn sealed_version(sealed: &[u8]) -> Option<u32> {
        (sealed.len() >= HEADER_LEN + TAG_LEN && sealed[0] == FORMAT)
            .then(|| u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]))
    }

    /// Seals `plaintext`, bound to `aad`.
    ///
    /// The value is built in one allocation and encrypted in place (no intermediate ciphertext
    /// buffer). The 96-bit nonce is random, from the thread's CSPRNG (ChaCha, seeded and
    /// periodically reseeded from the OS), which spares a system call per seal.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = self.keys.get(&self.current).ok_or(CryptoError::Open)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(FORMAT);
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from(nonce), aad, (&mut out[HEADER_LEN..]).into())
            .map_err(|_| CryptoError::Open)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a value sealed by [`DataKeys::seal`] with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != FORMAT {
            return Err(CryptoError::Open);
        }
        let version = u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
        let cipher = self.keys.get(&version).ok_or(CryptoError::Open)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[5..HEADER_LEN]);
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad,
                },
            )
            .map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_wiped_on_drop_and_never_printed() {
        // Compiles only while aes-gcm's `zeroize` feature is on: the ciphers wipe their keys.
        fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wiped_on_drop::<Aes256Gcm>();
        wiped_on_drop::<KeyBytes>();

        let dir = tempfile::tempdir().unwrap();
        let keys = DataKeys::load_or_create(dir.path()).unwrap();
        let bytes = fs::read(dir.path().join("keys/data-1.key")).unwrap();
        let printed = format!("{keys:?} {keys:#?}");
        assert!(printed.contains("versions: [1]"), "{printed}");
        assert!(
            !printed.contains(&format!("{:?}", &bytes[..4])),
            "{printed}"
        );
        assert!(!printed.contains(&hex::encode(&bytes[..4])), "{printed}");
    }

    #[test]
    fn seals_and_opens_and_binds_to_its_associated_data() {
        let dir = tempfile::tempdir().unwrap();
        let keys = DataKeys::load_or_create(dir.path()).unwrap();
        let sealed = keys.seal(b"secret session", b"row-1").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(keys.open(&sealed, b"row-1").unwrap(), b"secret session");
        assert_eq!(keys.open(&sealed, b"row-2"), Err(CryptoError::Open));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(keys.open(&tampered, b"row-1"), Err(CryptoError::Open));
        assert_eq!(keys.open(b"short", b"row-1"), Err(CryptoError::Open));
        // Two seals of the same value differ (fresh nonces).
        assert_ne!(
            keys.seal(b"x", b"a").unwrap(),
            keys.seal(b"x", b"a").unwrap()
        );
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let dir = tempfile::tempdir().unwrap();
        let old = DataKeys::load_or_create(dir.path()).unwrap();
        let sealed = old.seal(b"before", b"").unwrap();
        assert_eq!(DataKeys::rotate(dir.path()).unwrap(), 2);
        let new = DataKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(new.current_version(), 2);
        assert_eq!(new.versions(), vec![1, 2]);
        assert_eq!(new.open(&sealed, b"").unwrap(), b"before");
        let resealed = new.seal(b"after", b"").unwrap();
        assert_eq!(
            u32::from_be_bytes([resealed[1], resealed[2], resealed[3], resealed[4]]),
            2
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.path().join("keys/data-2.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_bad_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("keys")).unwrap();
        fs::write(dir.path().join("keys/data-1.key"), b"short").unwrap();
        assert!(matches!(
            DataKeys::load_or_create(dir.path()),
            Err(CryptoError::Keys(_))
        ));
    }
}
