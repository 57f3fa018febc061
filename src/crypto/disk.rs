//! The data-key ring on disk, in the keys directory (`storage.keys_dir`):
//!
//! - `data-keys.json` (mode 0600): every data key, wrapped (AES-256-GCM, in the [envelope]
//!   format, bound to the key's id, purpose and algorithm) by the key-encryption key (KEK), with
//!   its state (`current`, `decrypt_only`, `retired`), its creation time and the encryptions
//!   reserved under it; and how the KEK is had. It is replaced whole (a temporary file renamed over
//!   it) under an advisory lock on `data-keys.lock`, so the CLI and relays sharing the directory
//!   never lose each other's changes and a crash leaves the old or the new file, never half.
//! - `kek-<id>.key` (mode 0600): the KEK, 32 random bytes, when no passphrase is used (the
//!   default). The ring file names it.
//! - With a passphrase (`BEEP_MASTER_PASSPHRASE` or `encryption.passphrase_file`) there is no KEK
//!   file: the KEK is PBKDF2-HMAC-SHA256 of the passphrase with the ring's salt and iteration count.
//!
//! A retired key's wrapped bytes are deleted from the file: what it sealed is gone for good.
//!
//! [envelope]: super::envelope

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::envelope::{self, Context};
use super::provider::{Algorithm, AES_256_GCM};
use super::ring::{DataKey, DataRing, Purpose};
use crate::config::{ConfigError, EncryptionSettings, PASSPHRASE_ENV};
use crate::crypto::secrets::{
    os_random, secret_string, ExposeSecret, KeyBytes, SecretString, Zeroizing,
};

/// The ring file's name in the keys directory.
pub const RING_FILE: &str = "data-keys.json";
const LOCK_FILE: &str = "data-keys.lock";
const FORMAT: u32 = 1;
pub use crate::config::MIN_PBKDF2_ITERATIONS;
/// The shortest passphrase accepted.
pub const MIN_PASSPHRASE_CHARS: usize = 12;
/// Encryptions reserved in the ring file at a time per AES-GCM key: the count on disk is always
/// at least what was used (a crash forgets at most the unused rest of a reservation, which only
/// brings the rotation forward).
pub const RESERVATION: u64 = 1 << 26;

/// Why the data keys cannot be used. Each stops start-up with exit code 2 and changes nothing.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DataKeyError {
    /// The ring names a key file that is not there.
    #[error(
        "data keys: the key file {0} is missing (restore it from the keys directory's backup)"
    )]
    MissingKeyFile(PathBuf),
    /// The key file is not 32 bytes, or cannot be read.
    #[error("data keys: the key file {0} is corrupt: {1}")]
    CorruptKeyFile(PathBuf, String),
    /// The key file opens none of the keys.
    #[error(
        "data keys: the key file {0} does not open the data keys (a key file from another relay?)"
    )]
    WrongKeyFile(PathBuf),
    /// The passphrase opens none of the keys.
    #[error("data keys: wrong passphrase: it does not open the data keys in {0}")]
    WrongPassphrase(PathBuf),
    /// The ring is wrapped by a passphrase and none was given.
    #[error("data keys: {0} is protected by a passphrase; set BEEP_MASTER_PASSPHRASE or encryption.passphrase_file")]
    PassphraseNeeded(PathBuf),
    /// A passphrase was given for a ring wrapped by a key file.
    #[error("data keys: {0} is protected by a key file, not a passphrase; unset the passphrase, or switch with `beepmyphone keys passphrase`")]
    PassphraseNotUsed(PathBuf),
    /// The passphrase is too short.
    #[error("data keys: the passphrase must be at least {MIN_PASSPHRASE_CHARS} characters")]
    WeakPassphrase,
    /// Some key does not open though others do.
    #[error("data keys: data key {0} cannot be opened (its wrapped bytes are corrupt)")]
    KeyDoesNotOpen(u32),
    /// Rows do not open with the ring's keys although their ids match: a ring from another relay,
    /// or a new one (the keys directory was lost).
    #[error("data keys: {table} has rows that do not open with the data keys in {dir} (another relay's keys directory, or a new one made because the old one is missing: restore it from its backup)")]
    RowsDoNotOpen {
        /// Which table.
        table: String,
        /// The keys directory.
        dir: PathBuf,
    },
    /// Rows are sealed under a key the ring does not have.
    #[error("data keys: {table} has rows sealed under data key {key_id}, which the ring does not hold (retired, or a ring from another relay)")]
    RowsUnderUnknownKey {
        /// Which table.
        table: String,
        /// Which key.
        key_id: u32,
    },
    /// The ring file does not parse or breaks a rule.
    #[error("data keys: {0} is corrupt: {1}")]
    CorruptRing(PathBuf, String),
    /// A file could not be read or written.
    #[error("data keys: {0}")]
    Io(String),
}

/// Where the KEK comes from.
pub enum KekSource {
    /// A key file in the keys directory (generated on first start).
    KeyFile,
    /// An operator passphrase.
    Passphrase(SecretString),
}

impl KekSource {
    /// Where the settings say the KEK comes from: the passphrase in `BEEP_MASTER_PASSPHRASE` or
    /// in `encryption.passphrase_file` (one trailing newline dropped), else the key file. Both
    /// set, or an unreadable passphrase file, is an error.
    pub fn from_settings(settings: &EncryptionSettings) -> Result<Self, ConfigError> {
        let env = std::env::var(PASSPHRASE_ENV).ok().map(secret_string);
        let file = if settings.passphrase_file.as_os_str().is_empty() {
            None
        } else {
            let path = &settings.passphrase_file;
            let mut text = Zeroizing::new(fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "encryption.passphrase_file: cannot read {}: {e}",
                    path.display()
                ))
            })?);
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Some(SecretString::from(text.as_str()))
        };
        match (env, file) {
            (Some(_), Some(_)) => Err(ConfigError(format!(
                "{PASSPHRASE_ENV} and encryption.passphrase_file are both set; set one"
            ))),
            (Some(p), None) | (None, Some(p)) => Ok(KekSource::Passphrase(p)),
            (None, None) => Ok(KekSource::KeyFile),
        }
    }
}

/// The algorithm `encryption.algorithm` names.
pub fn algorithm_of(settings: &EncryptionSettings) -> Result<&'static Algorithm, ConfigError> {
    Algorithm::by_name(&settings.algorithm).ok_or_else(|| {
        ConfigError(format!(
            "encryption.algorithm: {:?} is not one of {}",
            settings.algorithm,
            Algorithm::names()
        ))
    })
}

impl std::fmt::Debug for KekSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KekSource::KeyFile => "KeyFile",
            KekSource::Passphrase(_) => "Passphrase([REDACTED])",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
enum KekParams {
    KeyFile { file: String },
    Passphrase { salt: String, iterations: u32 },
}

/// A data key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKeyState {
    /// Seals new values of its purpose (one per purpose).
    Current,
    /// Opens what it sealed until the re-encryption job has moved every row to a newer key.
    DecryptOnly,
    /// Gone: no row used it when it retired, and its bytes are deleted.
    Retired,
}

impl DataKeyState {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataKeyState::Current => "current",
            DataKeyState::DecryptOnly => "decrypt_only",
            DataKeyState::Retired => "retired",
        }
    }
}

/// One data key as the ring file holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    /// Its id.
    pub id: u32,
    /// What it protects.
    pub purpose: Purpose,
    /// Its algorithm's name (`hmac-sha256` for the index key).
    pub algorithm: String,
    /// Created at, epoch ms.
    pub created_ms: i64,
    /// Its state.
    pub state: DataKeyState,
    /// Since when it is decrypt-only, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypt_only_ms: Option<i64>,
    /// Retired at, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_ms: Option<i64>,
    /// Encryptions reserved under it so far (every encryption made is within this).
    #[serde(default)]
    pub reserved: u64,
    /// The key, wrapped by the KEK (base64); none once retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RingFile {
    format: u32,
    kek: KekParams,
    next_id: u32,
    keys: Vec<StoredKey>,
}

const INDEX_ALGORITHM: &str = "hmac-sha256";

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> DataKeyError {
    DataKeyError::Io(format!("cannot {what} {}: {e}", path.display()))
}

fn random_key() -> KeyBytes {
    KeyBytes::init_with_mut(|k| os_random(k))
}

/// Runs `f` with the KEK's provider and the context a wrapped key is bound to: its purpose and
/// algorithm (as the column) and its id (as the row).
fn with_wrapping<T>(
    kek: &KeyBytes,
    key: &StoredKey,
    f: impl FnOnce(&dyn super::provider::EncryptionProvider, &Context<'_>) -> T,
) -> T {
    let provider = (AES_256_GCM.build)(kek);
    let column = format!("{}/{}", key.purpose.as_str(), key.algorithm);
    let row = key.id.to_string();
    let context = Context {
        table: "data_keys",
        column: &column,
        row: &row,
    };
    f(&*provider, &context)
}

fn wrap(kek: &KeyBytes, key: &StoredKey, bytes: &KeyBytes) -> Result<String, DataKeyError> {
    let sealed = with_wrapping(kek, key, |provider, context| {
        envelope::seal(provider, 0, context, bytes.expose_secret())
    })
    .map_err(|e| DataKeyError::Io(format!("cannot wrap data key {}: {e}", key.id)))?;
    Ok(B64.encode(sealed))
}

fn unwrap(kek: &KeyBytes, key: &StoredKey) -> Option<KeyBytes> {
    let sealed = B64.decode(key.wrapped.as_deref()?).ok()?;
    let parsed = envelope::parse(&sealed).ok()?;
    let plain = Zeroizing::new(
        with_wrapping(kek, key, |provider, context| {
            envelope::open(provider, &parsed, context)
        })
        .ok()?,
    );
    let bytes: [u8; 32] = plain.as_slice().try_into().ok()?;
    Some(KeyBytes::new(Box::new(bytes)))
}

/// Derives the KEK from a passphrase (PBKDF2-HMAC-SHA256). Slow on purpose: call it off the
/// async workers.
pub fn derive_kek(passphrase: &SecretString, salt: &[u8], iterations: u32) -> KeyBytes {
    KeyBytes::init_with_mut(|out| {
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            passphrase.expose_secret().as_bytes(),
            salt,
            iterations,
            out,
        );
    })
}

/// Holds the advisory lock on the ring while alive.
struct RingLock(fs::File);

impl Drop for RingLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// A key of the ring file, with the key a previous snapshot already holds or its bytes.
type Unwrapped = (StoredKey, Option<Arc<DataKey>>, Option<KeyBytes>);

/// The data-key ring in one keys directory, with its KEK unwrapped in memory.
pub struct DiskDataKeys {
    dir: PathBuf,
    kek: KeyBytes,
    params: KekParams,
    /// Encryptions this process reserved per key.
    reserved_here: HashMap<u32, u64>,
    /// What this process created because there was no ring yet (see
    /// [`DiskDataKeys::undo_creation`]).
    created: Vec<PathBuf>,
}

impl std::fmt::Debug for DiskDataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskDataKeys")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What `DiskDataKeys::open` needs to know.
#[derive(Debug)]
pub struct OpenOptions<'a> {
    /// Where the KEK comes from.
    pub source: &'a KekSource,
    /// The algorithm of new data keys.
    pub algorithm: &'static Algorithm,
    /// PBKDF2 iterations for a new passphrase.
    pub iterations: u32,
    /// Now, epoch ms.
    pub now_ms: i64,
}

impl DiskDataKeys {
    fn ring_path(dir: &Path) -> PathBuf {
        dir.join(RING_FILE)
    }

    fn lock(dir: &Path) -> Result<RingLock, DataKeyError> {
        let path = dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_err("open", &path, e))?;
        file.lock().map_err(|e| io_err("lock", &path, e))?;
        Ok(RingLock(file))
    }

    fn read(dir: &Path) -> Result<Option<RingFile>, DataKeyError> {
        let path = Self::ring_path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path, e)),
        };
        let ring: RingFile = serde_json::from_str(&text)
            .map_err(|e| DataKeyError::CorruptRing(path.clone(), e.to_string()))?;
        if ring.format != FORMAT {
            return Err(DataKeyError::CorruptRing(
                path,
                format!("unknown format {}", ring.format),
            ));
        }
        Ok(Some(ring))
    }

    fn write(dir: &Path, ring: &RingFile) -> Result<(), DataKeyError> {
        let path = Self::ring_path(dir);
        let json = serde_json::to_vec_pretty(ring).map_err(|e| io_err("encode", &path, e))?;
        crate::crypto::files::replace(&path, &json).map_err(|e| io_err("write", &path, e))
    }

    /// The keys as the ring file lists them, without opening any (no KEK needed): for
    /// `keys status`. Empty if there is no ring yet.
    pub fn list(dir: &Path) -> Result<Vec<StoredKey>, DataKeyError> {
        Ok(Self::read(dir)?.map(|r| r.keys).unwrap_or_default())
    }

    /// Whether the ring is protected by a passphrase (`None`: no ring yet).
    pub fn uses_passphrase(dir: &Path) -> Result<Option<bool>, DataKeyError> {
        Ok(Self::read(dir)?.map(|r| matches!(r.kek, KekParams::Passphrase { .. })))
    }

    /// Opens the ring in `dir`, creating it (and the KEK file, without a passphrase) on first
    /// start, and gives the keys in force. Any failure changes nothing on disk.
    pub fn open(dir: &Path, options: &OpenOptions<'_>) -> Result<(Self, DataRing), DataKeyError> {
        if let KekSource::Passphrase(p) = options.source {
            if p.expose_secret().chars().count() < MIN_PASSPHRASE_CHARS {
                return Err(DataKeyError::WeakPassphrase);
            }
        }
        let (ring, created) = match Self::read(dir)? {
            Some(ring) => (ring, Vec::new()),
            None => Self::create(dir, options)?,
        };
        let path = Self::ring_path(dir);
        let kek = Self::kek_for(dir, &ring, options.source)?;
        let mut disk = Self {
            dir: dir.to_path_buf(),
            kek,
            params: ring.kek.clone(),
            reserved_here: HashMap::new(),
            created,
        };
        let opened = disk.unwrap_all(&ring, &DataRing::default(), true)?;
        if opened.is_empty() && ring.keys.iter().any(|k| k.wrapped.is_some()) {
            return Err(match ring.kek {
                KekParams::KeyFile { file } => DataKeyError::WrongKeyFile(dir.join(file)),
                KekParams::Passphrase { .. } => DataKeyError::WrongPassphrase(path),
            });
        }
        // A purpose with no current key (one added by a newer relay) gets one.
        let missing: Vec<Purpose> = Purpose::ALL
            .into_iter()
            .filter(|p| {
                !ring
                    .keys
                    .iter()
                    .any(|k| k.purpose == *p && k.state == DataKeyState::Current)
            })
            .collect();
        if !missing.is_empty() {
            disk.rotate(&missing, options.algorithm, options.now_ms)?;
        }
        let ring = disk.reload(&DataRing::default())?;
        Ok((disk, ring))
    }

    /// Whether this process created the ring (there was none).
    pub fn created_now(&self) -> bool {
        !self.created.is_empty()
    }

    /// Removes what [`DiskDataKeys::open`] created because there was no ring (the ring file, the
    /// key file, the lock file, and the keys directory if it was made and is empty): start-up
    /// found that the ring cannot be the one the store's rows were sealed with, and stops
    /// leaving things as they were.
    pub fn undo_creation(self) {
        for path in self.created.iter().rev() {
            let _ = fs::remove_file(path).or_else(|_| fs::remove_dir(path));
        }
    }

    fn create(
        dir: &Path,
        options: &OpenOptions<'_>,
    ) -> Result<(RingFile, Vec<PathBuf>), DataKeyError> {
        let mut created = Vec::new();
        if !dir.exists() {
            created.push(dir.to_path_buf());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_err("create", dir, e))?;
        if !dir.join(LOCK_FILE).exists() {
            created.push(dir.join(LOCK_FILE));
        }
        let _lock = Self::lock(dir)?;
        if let Some(ring) = Self::read(dir)? {
            return Ok((ring, Vec::new())); // another process made it first
        }
        let (kek, params) = match options.source {
            KekSource::KeyFile => {
                let file = format!("kek-{}.key", ulid::Ulid::new().to_string().to_lowercase());
                let kek = random_key();
                crate::crypto::files::write_new(&dir.join(&file), kek.expose_secret())
                    .map_err(|e| io_err("write", &dir.join(&file), e))?;
                created.push(dir.join(&file));
                (kek, KekParams::KeyFile { file })
            }
            KekSource::Passphrase(passphrase) => {
                let mut salt = [0u8; 16];
                os_random(&mut salt);
                let kek = derive_kek(passphrase, &salt, options.iterations);
                (
                    kek,
                    KekParams::Passphrase {
                        salt: B64.encode(salt),
                        iterations: options.iterations,
                    },
                )
            }
        };
        let mut ring = RingFile {
            format: FORMAT,
            kek: params,
            next_id: 1,
            keys: Vec::new(),
        };
        for purpose in Purpose::ALL {
            add_key(&mut ring, &kek, purpose, options.algorithm, options.now_ms)?;
        }
        Self::write(dir, &ring)?;
        created.push(Self::ring_path(dir));
        Ok((ring, created))
    }

    fn kek_for(dir: &Path, ring: &RingFile, source: &KekSource) -> Result<KeyBytes, DataKeyError> {
        let path = Self::ring_path(dir);
        match (&ring.kek, source) {
            (KekParams::KeyFile { file }, KekSource::KeyFile) => read_kek_file(&dir.join(file)),
            (KekParams::KeyFile { .. }, KekSource::Passphrase(_)) => {
                Err(DataKeyError::PassphraseNotUsed(path))
            }
            (KekParams::Passphrase { .. }, KekSource::KeyFile) => {
                Err(DataKeyError::PassphraseNeeded(path))
            }
            (KekParams::Passphrase { salt, iterations }, KekSource::Passphrase(passphrase)) => {
                let salt = B64
                    .decode(salt)
                    .map_err(|e| DataKeyError::CorruptRing(path.clone(), format!("salt: {e}")))?;
                if *iterations < MIN_PBKDF2_ITERATIONS {
                    return Err(DataKeyError::CorruptRing(
                        path,
                        format!(
                            "{iterations} PBKDF2 iterations, fewer than {MIN_PBKDF2_ITERATIONS}"
                        ),
                    ));
                }
                Ok(derive_kek(passphrase, &salt, *iterations))
            }
        }
    }

    /// Unwraps the keys of `file` that are not retired, reusing those `known` already holds.
    /// With `strict`, a key that does not open is an error when another one does (a corrupt
    /// wrapped key); otherwise it is left out.
    fn unwrap_all(
        &self,
        file: &RingFile,
        known: &DataRing,
        strict: bool,
    ) -> Result<Vec<Unwrapped>, DataKeyError> {
        let mut out = Vec::new();
        let mut failed = None;
        for stored in file
            .keys
            .iter()
            .filter(|k| k.state != DataKeyState::Retired)
        {
            if let Some(key) = known.key(stored.id) {
                out.push((stored.clone(), Some(key.clone()), None));
                continue;
            }
            match unwrap(&self.kek, stored) {
                Some(bytes) => out.push((stored.clone(), None, Some(bytes))),
                None => failed = failed.or(Some(stored.id)),
            }
        }
        match failed {
            Some(id) if strict && !out.is_empty() => Err(DataKeyError::KeyDoesNotOpen(id)),
            _ => Ok(out),
        }
    }

    /// Re-reads the ring file and gives the keys in force, reusing the keys of `known` (so their
    /// encryption counts carry on). A key this KEK does not open (added under another KEK) is
    /// left out.
    pub fn reload(&mut self, known: &DataRing) -> Result<DataRing, DataKeyError> {
        let path = Self::ring_path(&self.dir);
        let file = Self::read(&self.dir)?
            .ok_or_else(|| DataKeyError::CorruptRing(path.clone(), "it is gone".into()))?;
        let mut keys = Vec::new();
        let mut current = HashMap::new();
        let mut index = None;
        for (stored, existing, bytes) in self.unwrap_all(&file, known, false)? {
            if stored.state == DataKeyState::Current {
                current.insert(stored.purpose, stored.id);
            }
            if stored.purpose == Purpose::Index {
                if stored.state == DataKeyState::Current {
                    index = match (bytes, known.index_key()) {
                        (Some(bytes), _) => Some(Arc::new(bytes)),
                        (None, known) => known,
                    };
                }
                continue;
            }
            let key = match (existing, bytes) {
                (Some(key), _) => key,
                (None, Some(bytes)) => {
                    let algorithm = Algorithm::by_name(&stored.algorithm).ok_or_else(|| {
                        DataKeyError::CorruptRing(
                            path.clone(),
                            format!(
                                "data key {} has unknown algorithm {}",
                                stored.id, stored.algorithm
                            ),
                        )
                    })?;
                    Arc::new(DataKey::new(
                        stored.id,
                        stored.purpose,
                        (algorithm.build)(&bytes),
                    ))
                }
                (None, None) => continue,
            };
            keys.push(key);
        }
        Ok(DataRing::new(keys, current, index))
    }

    /// Makes a new current key for each of `purposes`; the keys they replace become
    /// decrypt-only. Gives the new ids.
    pub fn rotate(
        &mut self,
        purposes: &[Purpose],
        algorithm: &'static Algorithm,
        now_ms: i64,
    ) -> Result<Vec<u32>, DataKeyError> {
        self.modify(|ring, kek| {
            let mut ids = Vec::new();
            for &purpose in purposes {
                for key in ring
                    .keys
                    .iter_mut()
                    .filter(|k| k.purpose == purpose && k.state == DataKeyState::Current)
                {
                    key.state = DataKeyState::DecryptOnly;
                    key.decrypt_only_ms = Some(now_ms);
                }
                ids.push(add_key(ring, kek, purpose, algorithm, now_ms)?);
            }
            Ok(ids)
        })
    }

    /// Retires decrypt-only keys: their bytes are deleted from the file.
    pub fn retire(&mut self, ids: &[u32], now_ms: i64) -> Result<(), DataKeyError> {
        self.modify(|ring, _| {
            for key in ring
                .keys
                .iter_mut()
                .filter(|k| ids.contains(&k.id) && k.state == DataKeyState::DecryptOnly)
            {
                key.state = DataKeyState::Retired;
                key.retired_ms = Some(now_ms);
                key.wrapped = None;
            }
            Ok(())
        })
    }

    /// Reserves encryptions for the AES-GCM keys of `ring` whose reservation by this process is
    /// running low; gives each current key's total reservation on disk, to rotate those past
    /// their algorithm's budget.
    pub fn reserve(
        &mut self,
        ring: &DataRing,
    ) -> Result<Vec<(u32, Purpose, u64, u64)>, DataKeyError> {
        let mut wanted = Vec::new();
        for key in ring.keys() {
            if key.algorithm().rotate_after.is_none() {
                continue;
            }
            let here = self.reserved_here.get(&key.id).copied().unwrap_or(0);
            let used = key.sealed();
            if used + RESERVATION / 2 > here {
                let more = RESERVATION.max(used.saturating_sub(here) + RESERVATION);
                wanted.push((key.id, more));
            }
        }
        let totals = |file: &RingFile| {
            file.keys
                .iter()
                .filter(|k| k.state == DataKeyState::Current)
                .filter_map(|k| {
                    Algorithm::by_name(&k.algorithm)
                        .and_then(|a| a.rotate_after)
                        .map(|limit| (k.id, k.purpose, k.reserved, limit))
                })
                .collect::<Vec<_>>()
        };
        if wanted.is_empty() {
            // Nothing to reserve: the file is read, not rewritten.
            let path = Self::ring_path(&self.dir);
            let file = Self::read(&self.dir)?
                .ok_or_else(|| DataKeyError::CorruptRing(path, "it is gone".into()))?;
            return Ok(totals(&file));
        }
        let totals = self.modify(|file, _| {
            for (id, more) in &wanted {
                if let Some(stored) = file.keys.iter_mut().find(|k| k.id == *id) {
                    stored.reserved = stored.reserved.saturating_add(*more);
                }
            }
            Ok(totals(file))
        })?;
        for (id, more) in wanted {
            *self.reserved_here.entry(id).or_insert(0) += more;
        }
        Ok(totals)
    }

    /// Re-wraps every key under a new KEK: a new passphrase, or a new key file. Rows are not
    /// touched. The ring file is replaced in one rename, so a crash leaves the old wrapping or the
    /// new one; a KEK file the ring no longer names is deleted afterwards.
    pub fn rewrap(&mut self, to: &KekSource, iterations: u32) -> Result<(), DataKeyError> {
        if let KekSource::Passphrase(p) = to {
            if p.expose_secret().chars().count() < MIN_PASSPHRASE_CHARS {
                return Err(DataKeyError::WeakPassphrase);
            }
        }
        let _lock = Self::lock(&self.dir)?;
        let path = Self::ring_path(&self.dir);
        let mut file = Self::read(&self.dir)?
            .ok_or_else(|| DataKeyError::CorruptRing(path.clone(), "it is gone".into()))?;
        let (kek, params) = match to {
            KekSource::KeyFile => {
                let name = format!("kek-{}.key", ulid::Ulid::new().to_string().to_lowercase());
                let kek = random_key();
                let kek_path = self.dir.join(&name);
                crate::crypto::files::write_new(&kek_path, kek.expose_secret())
                    .map_err(|e| io_err("write", &kek_path, e))?;
                (kek, KekParams::KeyFile { file: name })
            }
            KekSource::Passphrase(passphrase) => {
                let mut salt = [0u8; 16];
                os_random(&mut salt);
                (
                    derive_kek(passphrase, &salt, iterations),
                    KekParams::Passphrase {
                        salt: B64.encode(salt),
                        iterations,
                    },
                )
            }
        };
        for key in file.keys.iter_mut().filter(|k| k.wrapped.is_some()) {
            let bytes = unwrap(&self.kek, key).ok_or(DataKeyError::KeyDoesNotOpen(key.id))?;
            key.wrapped = Some(wrap(&kek, key, &bytes)?);
        }
        let old = std::mem::replace(&mut file.kek, params.clone());
        Self::write(&self.dir, &file)?;
        if let KekParams::KeyFile { file: name } = old {
            if !matches!(&params, KekParams::KeyFile { file } if *file == name) {
                let _ = fs::remove_file(self.dir.join(name));
            }
        }
        self.kek = kek;
        self.params = params;
        Ok(())
    }

    /// Applies `change` to the ring file under the lock, and writes it back.
    fn modify<T>(
        &mut self,
        change: impl FnOnce(&mut RingFile, &KeyBytes) -> Result<T, DataKeyError>,
    ) -> Result<T, DataKeyError> {
        let _lock = Self::lock(&self.dir)?;
        let path = Self::ring_path(&self.dir);
        let mut file = Self::read(&self.dir)?
            .ok_or_else(|| DataKeyError::CorruptRing(path.clone(), "it is gone".into()))?;
        if file.kek != self.params {
            return Err(DataKeyError::Io(
                "the key-encryption key was changed by another process; restart the relay with the new passphrase or key file".into(),
            ));
        }
        let out = change(&mut file, &self.kek)?;
        Self::write(&self.dir, &file)?;
        Ok(out)
    }
}

fn add_key(
    ring: &mut RingFile,
    kek: &KeyBytes,
    purpose: Purpose,
    algorithm: &'static Algorithm,
    now_ms: i64,
) -> Result<u32, DataKeyError> {
    let id = ring.next_id;
    ring.next_id = id
        .checked_add(1)
        .ok_or_else(|| DataKeyError::Io("no key ids left".into()))?;
    let mut key = StoredKey {
        id,
        purpose,
        algorithm: if purpose == Purpose::Index {
            INDEX_ALGORITHM.into()
        } else {
            algorithm.name.into()
        },
        created_ms: now_ms,
        state: DataKeyState::Current,
        decrypt_only_ms: None,
        retired_ms: None,
        reserved: 0,
        wrapped: None,
    };
    key.wrapped = Some(wrap(kek, &key, &random_key())?);
    ring.keys.push(key);
    Ok(id)
}

fn read_kek_file(path: &Path) -> Result<KeyBytes, DataKeyError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataKeyError::MissingKeyFile(path.to_path_buf()))
        }
        Err(e) => {
            return Err(DataKeyError::CorruptKeyFile(
                path.to_path_buf(),
                e.to_string(),
            ))
        }
    };
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        DataKeyError::CorruptKeyFile(path.to_path_buf(), format!("{} bytes, not 32", bytes.len()))
    })?;
    Ok(KeyBytes::new(Box::new(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::provider::XCHACHA20_POLY1305;
    use crate::crypto::ring::{fields, Cipher};

    fn options<'a>(source: &'a KekSource) -> OpenOptions<'a> {
        OpenOptions {
            source,
            algorithm: &AES_256_GCM,
            iterations: MIN_PBKDF2_ITERATIONS,
            now_ms: 1_000,
        }
    }

    fn passphrase(text: &str) -> KekSource {
        KekSource::Passphrase(SecretString::from(text))
    }

    fn edit_ring(dir: &Path, change: impl FnOnce(&mut serde_json::Value)) {
        let path = dir.join(RING_FILE);
        let mut ring: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        change(&mut ring);
        fs::write(&path, serde_json::to_vec(&ring).unwrap()).unwrap();
    }

    #[test]
    fn first_start_makes_one_key_per_purpose_under_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let (disk, ring) = DiskDataKeys::open(&keys, &options(&KekSource::KeyFile)).unwrap();
        assert!(disk.created_now());
        assert!(format!("{disk:?}").contains("keys"));
        let listed = DiskDataKeys::list(&keys).unwrap();
        let purposes: Vec<Purpose> = listed.iter().map(|k| k.purpose).collect();
        assert_eq!(purposes, Purpose::ALL.to_vec());
        assert!(listed.iter().all(|k| k.state == DataKeyState::Current));
        assert_eq!(listed[3].algorithm, "hmac-sha256");
        assert_eq!(DiskDataKeys::uses_passphrase(&keys).unwrap(), Some(false));
        assert_eq!(DiskDataKeys::uses_passphrase(dir.path()).unwrap(), None);
        assert!(DiskDataKeys::list(dir.path()).unwrap().is_empty());
        assert_eq!(ring.ids_of(Purpose::Content), vec![1]);
        // The ring file holds no key in the clear: every key is wrapped.
        let text = fs::read_to_string(keys.join(RING_FILE)).unwrap();
        assert!(
            text.contains("\"wrapped\"") && text.contains("kek-"),
            "{text}"
        );
        // Opened again: the same keys, nothing created.
        let (again, ring2) = DiskDataKeys::open(&keys, &options(&KekSource::KeyFile)).unwrap();
        assert!(!again.created_now());
        let cipher = Cipher::new(ring);
        let sealed = cipher
            .sealer(Purpose::Devices)
            .unwrap()
            .seal(fields::DEVICE_NAME, "dev_1", b"phone")
            .unwrap();
        assert_eq!(
            Cipher::new(ring2)
                .open(fields::DEVICE_NAME, "dev_1", &sealed)
                .unwrap(),
            b"phone"
        );
    }

    #[test]
    fn undoing_a_creation_leaves_the_directory_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let (disk, _) = DiskDataKeys::open(&keys, &options(&KekSource::KeyFile)).unwrap();
        disk.undo_creation();
        assert!(!keys.exists());
        // In a directory that existed (signing keys), only the new files go.
        fs::create_dir(&keys).unwrap();
        fs::write(keys.join("signing-1-abc.pem"), b"x").unwrap();
        let (disk, _) = DiskDataKeys::open(&keys, &options(&KekSource::KeyFile)).unwrap();
        disk.undo_creation();
        let left: Vec<String> = fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["signing-1-abc.pem".to_owned()]);
    }

    #[test]
    fn a_passphrase_ring_needs_the_right_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let right = passphrase("correct horse battery staple");
        DiskDataKeys::open(dir.path(), &options(&right)).unwrap();
        assert_eq!(
            DiskDataKeys::uses_passphrase(dir.path()).unwrap(),
            Some(true)
        );
        assert!(!fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("kek-")));
        let err =
            |source: &KekSource| DiskDataKeys::open(dir.path(), &options(source)).unwrap_err();
        assert!(matches!(
            err(&passphrase("wrong horse battery staple")),
            DataKeyError::WrongPassphrase(_)
        ));
        assert!(matches!(
            err(&KekSource::KeyFile),
            DataKeyError::PassphraseNeeded(_)
        ));
        assert_eq!(err(&passphrase("short")), DataKeyError::WeakPassphrase);
        assert_eq!(format!("{right:?}"), "Passphrase([REDACTED])");
        // Too few iterations in the file is a corrupt ring, not a weak key.
        edit_ring(dir.path(), |r| r["kek"]["iterations"] = 1_000.into());
        assert!(
            matches!(err(&right), DataKeyError::CorruptRing(_, why) if why.contains("1000 PBKDF2 iterations"))
        );
        edit_ring(dir.path(), |r| r["kek"]["salt"] = "not base64!".into());
        assert!(matches!(err(&right), DataKeyError::CorruptRing(_, why) if why.contains("salt")));
    }

    #[test]
    fn key_file_faults_are_named() {
        let dir = tempfile::tempdir().unwrap();
        DiskDataKeys::open(dir.path(), &options(&KekSource::KeyFile)).unwrap();
        let err =
            |source: &KekSource| DiskDataKeys::open(dir.path(), &options(source)).unwrap_err();
        assert!(matches!(
            err(&passphrase("correct horse battery staple")),
            DataKeyError::PassphraseNotUsed(_)
        ));
        let kek = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("kek-"))
            .unwrap();
        let original = fs::read(&kek).unwrap();
        fs::write(&kek, [0u8; 31]).unwrap();
        assert!(
            matches!(err(&KekSource::KeyFile), DataKeyError::CorruptKeyFile(_, why) if why.contains("31 bytes"))
        );
        fs::write(&kek, [9u8; 32]).unwrap();
        assert!(matches!(
            err(&KekSource::KeyFile),
            DataKeyError::WrongKeyFile(_)
        ));
        fs::remove_file(&kek).unwrap();
        assert!(matches!(
            err(&KekSource::KeyFile),
            DataKeyError::MissingKeyFile(_)
        ));
        fs::write(&kek, &original).unwrap();
        // One wrapped key damaged while the others open: that key is named.
        edit_ring(dir.path(), |r| {
            let wrapped = r["keys"][1]["wrapped"].as_str().unwrap().to_owned();
            let mut bytes = B64.decode(wrapped).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            r["keys"][1]["wrapped"] = B64.encode(bytes).into();
        });
        assert_eq!(err(&KekSource::KeyFile), DataKeyError::KeyDoesNotOpen(2));
        edit_ring(dir.path(), |r| r["format"] = 9.into());
        assert!(
            matches!(err(&KekSource::KeyFile), DataKeyError::CorruptRing(_, why) if why.contains("format 9"))
        );
        fs::write(dir.path().join(RING_FILE), b"{").unwrap();
        assert!(matches!(
            err(&KekSource::KeyFile),
            DataKeyError::CorruptRing(..)
        ));
    }

    #[test]
    fn rotation_reservation_retirement_and_a_new_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, ring) =
            DiskDataKeys::open(dir.path(), &options(&KekSource::KeyFile)).unwrap();
        // The first reservation covers every current AES-GCM key.
        let totals = disk.reserve(&ring).unwrap();
        assert_eq!(
            totals.len(),
            4,
            "content, devices, sessions, audit: {totals:?}"
        );
        assert!(totals
            .iter()
            .all(|&(_, _, reserved, limit)| reserved == RESERVATION && limit == 1 << 30));
        // Nothing more is due: the file is not rewritten.
        let before = fs::read(dir.path().join(RING_FILE)).unwrap();
        disk.reserve(&ring).unwrap();
        assert_eq!(fs::read(dir.path().join(RING_FILE)).unwrap(), before);
        let ids = disk
            .rotate(&[Purpose::Content], &XCHACHA20_POLY1305, 2_000)
            .unwrap();
        assert_eq!(ids, vec![6]);
        let listed = DiskDataKeys::list(dir.path()).unwrap();
        assert_eq!(listed[0].state, DataKeyState::DecryptOnly);
        assert_eq!(listed[0].decrypt_only_ms, Some(2_000));
        assert_eq!(listed[5].algorithm, "xchacha20-poly1305");
        let ring = disk.reload(&ring).unwrap();
        assert_eq!(ring.current(Purpose::Content).unwrap().id, 6);
        assert_eq!(ring.ids_of(Purpose::Content), vec![1, 6]);
        // XChaCha20 keys are not counted.
        assert!(!disk.reserve(&ring).unwrap().iter().any(|t| t.0 == 6));
        disk.retire(&[1, 2], 3_000).unwrap();
        let listed = DiskDataKeys::list(dir.path()).unwrap();
        assert_eq!(listed[0].state, DataKeyState::Retired);
        assert!(listed[0].wrapped.is_none() && listed[0].retired_ms == Some(3_000));
        // A current key is never retired that way.
        assert_eq!(listed[1].state, DataKeyState::Current);
        let ring = disk.reload(&ring).unwrap();
        assert_eq!(ring.ids_of(Purpose::Content), vec![6]);
        // A purpose without a current key (one a newer relay added) gets one on open.
        edit_ring(dir.path(), |r| {
            for key in r["keys"].as_array_mut().unwrap() {
                if key["purpose"] == "sessions" {
                    key["state"] = "retired".into();
                }
            }
        });
        let (_, ring) = DiskDataKeys::open(dir.path(), &options(&KekSource::KeyFile)).unwrap();
        assert_eq!(ring.current(Purpose::Sessions).unwrap().id, 7);
        assert_eq!(DataKeyState::DecryptOnly.as_str(), "decrypt_only");
    }

    #[test]
    fn rewrapping_changes_the_kek_and_keeps_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let (mut disk, ring) =
            DiskDataKeys::open(dir.path(), &options(&KekSource::KeyFile)).unwrap();
        let sealed = Cipher::new(ring)
            .sealer(Purpose::Content)
            .unwrap()
            .seal(fields::NOTIFICATION_TITLE, "ntf_1", b"kept")
            .unwrap();
        assert_eq!(
            disk.rewrap(&passphrase("short"), MIN_PBKDF2_ITERATIONS),
            Err(DataKeyError::WeakPassphrase)
        );
        let new = passphrase("a new and long passphrase");
        disk.rewrap(&new, MIN_PBKDF2_ITERATIONS).unwrap();
        assert_eq!(
            DiskDataKeys::uses_passphrase(dir.path()).unwrap(),
            Some(true)
        );
        let (mut disk, ring) = DiskDataKeys::open(dir.path(), &options(&new)).unwrap();
        assert_eq!(
            Cipher::new(ring)
                .open(fields::NOTIFICATION_TITLE, "ntf_1", &sealed)
                .unwrap(),
            b"kept"
        );
        disk.rewrap(&KekSource::KeyFile, MIN_PBKDF2_ITERATIONS)
            .unwrap();
        let (_, ring) = DiskDataKeys::open(dir.path(), &options(&KekSource::KeyFile)).unwrap();
        assert!(Cipher::new(ring).opens(fields::NOTIFICATION_TITLE, "ntf_1", &sealed));
        // Another process changed the KEK: this one's writes are refused until it restarts.
        let (mut stale, _) = DiskDataKeys::open(dir.path(), &options(&KekSource::KeyFile)).unwrap();
        let (mut other, _) = DiskDataKeys::open(dir.path(), &options(&KekSource::KeyFile)).unwrap();
        other
            .rewrap(&KekSource::KeyFile, MIN_PBKDF2_ITERATIONS)
            .unwrap();
        let kek_files = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("kek-")
            })
            .count();
        assert_eq!(kek_files, 1, "the old key file is deleted");
        assert!(matches!(
            stale.rotate(&[Purpose::Content], &AES_256_GCM, 1),
            Err(DataKeyError::Io(why)) if why.contains("changed by another process")
        ));
    }

    #[test]
    fn the_settings_choose_the_kek_source_and_the_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = EncryptionSettings::default();
        assert_eq!(algorithm_of(&settings).unwrap(), &AES_256_GCM);
        settings.algorithm = "rot13".into();
        assert!(algorithm_of(&settings)
            .unwrap_err()
            .0
            .contains("aes-256-gcm, xchacha20-poly1305"));
        // BEEP_MASTER_PASSPHRASE is not set in the unit tests' environment.
        assert!(std::env::var(PASSPHRASE_ENV).is_err());
        assert!(matches!(
            KekSource::from_settings(&settings).unwrap(),
            KekSource::KeyFile
        ));
        let file = dir.path().join("passphrase");
        fs::write(&file, "from a file, long enough\r\n").unwrap();
        settings.passphrase_file = file;
        match KekSource::from_settings(&settings).unwrap() {
            KekSource::Passphrase(p) => assert_eq!(p.expose_secret(), "from a file, long enough"),
            KekSource::KeyFile => panic!("a passphrase file was set"),
        }
        settings.passphrase_file = dir.path().join("missing");
        assert!(KekSource::from_settings(&settings)
            .unwrap_err()
            .0
            .contains("cannot read"));
    }
}
