//! The signing-key ring on disk, and the snapshot handlers sign and verify with.
//!
//! [`DiskKeyRing`] implements the [`KeyRing`] port of the
//! [`KeyManager`](beepmyphone_actors::keys::KeyManager) actor, which owns the policy (when to
//! rotate, when to retire). Layout of the keys directory (`storage.keys_dir`, by default
//! `<data_dir>/keys`, mode 0700):
//!
//! - `signing-<created_ms>-<kid>.pem`: an RSA-2048 private key (PKCS#1 PEM, mode 0600), created at
//!   `created_ms` (epoch milliseconds). The creation time in the name orders the ring without
//!   reading clocks or file times; the newest key signs.
//! - `signing-<kid>.pem`: the single key of relays from before rotation existed. It is loaded as the
//!   oldest key of the ring (its file time stands in for its creation time) and retires like any
//!   other once a newer key exists.
//! - `retired/signing-<created_ms>-<kid>.pub.pem`: the public half of a retired key, kept so that
//!   old signatures can still be examined. The private half is deleted when the key retires.
//!
//! New keys are written to a temporary file and hard-linked into place, so a relay scanning the
//! directory (the CLI may add a key while the relay runs) never reads half a key, and nothing is
//! ever overwritten. Parsed keys are cached by kid; the published snapshot is an
//! `ArcSwap<JwtKeys>`, swapped whole.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use beepmyphone_actors::keys::{
    classify, KeyInfo, KeyPolicy, KeyRing, KeyRingError, KeyState, KeyStatus,
};

use crate::config::AuthSettings;
use crate::crypto::secrets::Zeroizing;
use crate::security::jwt::{is_kid, kid_of, JwtKeys, RingKey, LEEWAY_SECONDS};

/// How often the key manager rescans the keys directory (and so the longest a key added by the
/// CLI waits before the running relay signs with it).
pub const KEY_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Bits of a new signing key.
pub const RSA_BITS: u32 = 2048;
/// Where the public halves of retired keys go, inside the keys directory.
pub const RETIRED_DIR: &str = "retired";

const PREFIX: &str = "signing-";
const SUFFIX: &str = ".pem";

/// The key policy the settings ask for.
pub fn policy(auth: &AuthSettings) -> KeyPolicy {
    KeyPolicy {
        rotate_every: Duration::from_secs(auth.key_rotation_days.saturating_mul(24 * 3_600)),
        token_lifetime: Duration::from_secs(
            auth.access_token_ttl_seconds.saturating_add(LEEWAY_SECONDS),
        ),
        scan_every: KEY_SCAN_INTERVAL,
    }
}

/// A signing-key file found in the keys directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyFile {
    path: PathBuf,
    kid: String,
    created_ms: i64,
    /// `signing-<kid>.pem`, from before rotation: always the oldest.
    legacy: bool,
}

fn ring_err(what: impl std::fmt::Display) -> KeyRingError {
    KeyRingError(what.to_string())
}

/// Parses a key file name: `signing-<created_ms>-<kid>.pem` or the legacy `signing-<kid>.pem`.
fn parse_name(name: &str) -> Option<(Option<i64>, String)> {
    let stem = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    match stem.split_once('-') {
        Some((created, kid)) => {
            let created = created
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| created.parse::<i64>().ok())
                .flatten()?;
            is_kid(kid).then(|| (Some(created), kid.to_owned()))
        }
        None => is_kid(stem).then(|| (None, stem.to_owned())),
    }
}

fn file_ms(path: &Path) -> i64 {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// The signing-key files of `dir`, oldest first. A missing directory has none.
fn scan(dir: &Path) -> Result<Vec<KeyFile>, KeyRingError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ring_err(format!("cannot read {}: {e}", dir.display()))),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ring_err)?;
        let name = entry.file_name();
        let Some((created, kid)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        let path = entry.path();
        files.push(KeyFile {
            created_ms: created.unwrap_or_else(|| file_ms(&path)),
            legacy: created.is_none(),
            path,
            kid,
        });
    }
    files.sort_by(|a, b| (!a.legacy, a.created_ms, &a.kid).cmp(&(!b.legacy, b.created_ms, &b.kid)));
    for pair in files.windows(2) {
        if pair[0].kid == pair[1].kid {
            return Err(ring_err(format!(
                "{} and {} hold the same key",
                pair[0].path.display(),
                pair[1].path.display()
            )));
        }
    }
    Ok(files)
}

/// Makes `path` mode `mode` if it is anything looser; returns whether it had to.
fn tighten(path: &Path, mode: u32) -> Result<bool, KeyRingError> {
    let meta = fs::metadata(path).map_err(|e| ring_err(format!("{}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| ring_err(format!("cannot restrict {}: {e}", path.display())))?;
    Ok(true)
}

fn create_dir(dir: &Path) -> Result<(), KeyRingError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ring_err(format!("cannot create {}: {e}", dir.display())))
}

/// [`crate::crypto::files::write_new`], with the ring's error.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), KeyRingError> {
    crate::crypto::files::write_new(path, bytes)
        .map_err(|e| ring_err(format!("cannot write {}: {e}", path.display())))
}

/// The files and the parsed-key cache behind a [`DiskKeyRing`].
struct Disk {
    dir: PathBuf,
    issuer: String,
    audience: String,
    loaded: Mutex<HashMap<String, Arc<RingKey>>>,
    log: slog::Logger,
}

/// The key ring in a keys directory, and the snapshot it publishes.
pub struct DiskKeyRing {
    disk: Disk,
    snapshot: Arc<ArcSwap<JwtKeys>>,
}

impl DiskKeyRing {
    /// Opens the ring in `dir`: creates the directory (0700) or tightens it, creates a first key
    /// at `now_ms` if there is none, and publishes a first snapshot of the keys that `policy` says
    /// are in force at `now_ms` (retiring them is left to the key manager's first step). Blocks
    /// (RSA key generation on first start): call it on a blocking thread.
    pub fn open(
        dir: &Path,
        issuer: &str,
        audience: &str,
        policy: &KeyPolicy,
        now_ms: i64,
        log: slog::Logger,
    ) -> Result<Self, KeyRingError> {
        create_dir(dir)?;
        if tighten(dir, 0o700)? {
            slog::warn!(log, "the keys directory was readable by others; restricted it to its owner";
                "dir" => %dir.display());
        }
        let disk = Disk {
            dir: dir.to_path_buf(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            loaded: Mutex::new(HashMap::new()),
            log,
        };
        let mut keys = disk.list()?;
        if keys.is_empty() {
            keys.push(disk.create(now_ms)?);
        }
        let live: Vec<KeyStatus> = classify(&keys, now_ms, policy)
            .into_iter()
            .filter(|k| k.state != KeyState::Retired)
            .collect();
        let first = disk.build(&live)?;
        Ok(Self {
            disk,
            snapshot: Arc::new(ArcSwap::from_pointee(first)),
        })
    }

    /// The keys of `dir` and their states at `now_ms`, without changing anything (for
    /// `beepmyphone keys status`). Keys due for retirement are listed as retired.
    pub fn status(
        dir: &Path,
        policy: &KeyPolicy,
        now_ms: i64,
    ) -> Result<Vec<KeyStatus>, KeyRingError> {
        let files = scan(dir)?;
        let keys: Vec<KeyInfo> = files
            .into_iter()
            .map(|f| KeyInfo {
                kid: f.kid,
                created_ms: f.created_ms,
            })
            .collect();
        Ok(classify(&keys, now_ms, policy))
    }

    /// The snapshot handlers read; swapped whole on every change.
    pub fn snapshot(&self) -> Arc<ArcSwap<JwtKeys>> {
        self.snapshot.clone()
    }

    /// The keys directory.
    pub fn dir(&self) -> &Path {
        &self.disk.dir
    }
}

impl Disk {
    fn cache(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, Arc<RingKey>>>, KeyRingError> {
        self.loaded
            .lock()
            .map_err(|_| ring_err("the key cache was poisoned"))
    }

    /// Reads and parses a key file, checking that it holds the key its name says.
    fn load(&self, file: &KeyFile) -> Result<Arc<RingKey>, KeyRingError> {
        if tighten(&file.path, 0o600)? {
            slog::warn!(self.log, "a signing key was readable by others; restricted it to its owner (consider rotating)";
                "kid" => &file.kid);
        }
        // The private key's PEM: wiped once parsed (OpenSSL holds and clears the parsed key).
        let pem = Zeroizing::new(
            fs::read(&file.path)
                .map_err(|e| ring_err(format!("cannot read {}: {e}", file.path.display())))?,
        );
        let key = RingKey::from_private_pem(&pem)
            .map_err(|e| ring_err(format!("{}: {e}", file.path.display())))?;
        if key.kid() != file.kid {
            return Err(ring_err(format!(
                "{} holds key {}, not {}",
                file.path.display(),
                key.kid(),
                file.kid
            )));
        }
        Ok(Arc::new(key))
    }

    /// Builds a snapshot of `keys` from the cache.
    fn build(&self, keys: &[KeyStatus]) -> Result<JwtKeys, KeyRingError> {
        let cache = self.cache()?;
        let mut ring = Vec::with_capacity(keys.len());
        for status in keys {
            let key = cache
                .get(&status.kid)
                .ok_or_else(|| ring_err(format!("key {} is not loaded", status.kid)))?;
            ring.push((key.clone(), status.clone()));
        }
        JwtKeys::new(ring, &self.issuer, &self.audience).map_err(ring_err)
    }

    fn list(&self) -> Result<Vec<KeyInfo>, KeyRingError> {
        let files = scan(&self.dir)?;
        let known: Vec<String> = self.cache()?.keys().cloned().collect();
        let mut fresh = HashMap::new();
        for file in files.iter().filter(|f| !known.contains(&f.kid)) {
            fresh.insert(file.kid.clone(), self.load(file)?);
        }
        let mut cache = self.cache()?;
        cache.extend(fresh);
        // Forget keys whose files are gone (retired by another process).
        cache.retain(|kid, _| files.iter().any(|f| &f.kid == kid));
        Ok(files
            .into_iter()
            .map(|f| KeyInfo {
                kid: f.kid,
                created_ms: f.created_ms,
            })
            .collect())
    }

    fn create(&self, created_ms: i64) -> Result<KeyInfo, KeyRingError> {
        let rsa = openssl::rsa::Rsa::generate(RSA_BITS).map_err(ring_err)?;
        let pem = Zeroizing::new(rsa.private_key_to_pem().map_err(ring_err)?);
        let kid = kid_of(&rsa.public_key_to_der().map_err(ring_err)?);
        let key = RingKey::from_private_pem(&pem).map_err(ring_err)?;
        let created_ms = created_ms.max(0);
        write_new(
            &self.dir.join(format!("{PREFIX}{created_ms}-{kid}{SUFFIX}")),
            &pem,
        )?;
        self.cache()?.insert(kid.clone(), Arc::new(key));
        Ok(KeyInfo { kid, created_ms })
    }

    fn retire(&self, kid: &str) -> Result<(), KeyRingError> {
        let Some(file) = scan(&self.dir)?.into_iter().find(|f| f.kid == kid) else {
            self.cache()?.remove(kid);
            return Ok(());
        };
        let key = match self.cache()?.get(kid).cloned() {
            Some(key) => key,
            None => self.load(&file)?,
        };
        let retired = self.dir.join(RETIRED_DIR);
        create_dir(&retired)?;
        let public = retired.join(format!("{PREFIX}{}-{kid}.pub{SUFFIX}", file.created_ms));
        if !public.exists() {
            write_new(&public, key.public_pem())?;
        }
        match fs::remove_file(&file.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ring_err(format!(
                    "cannot remove {}: {e}",
                    file.path.display()
                )))
            }
        }
        self.cache()?.remove(kid);
        Ok(())
    }
}

impl KeyRing for DiskKeyRing {
    fn list(&self) -> Result<Vec<KeyInfo>, KeyRingError> {
        self.disk.list()
    }

    fn create(&self, created_ms: i64) -> Result<KeyInfo, KeyRingError> {
        self.disk.create(created_ms)
    }

    fn retire(&self, kid: &str) -> Result<(), KeyRingError> {
        self.disk.retire(kid)
    }

    fn publish(&self, keys: &[KeyStatus]) -> Result<(), KeyRingError> {
        let snapshot = self.disk.build(keys)?;
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beepmyphone_actors::keys::reconcile;
    use beepmyphone_actors::model::DeviceId;

    const NOW: i64 = 1_700_000_000_000;

    fn test_policy() -> KeyPolicy {
        KeyPolicy {
            rotate_every: Duration::from_secs(30 * 24 * 3_600),
            token_lifetime: Duration::from_secs(3_630),
            scan_every: KEY_SCAN_INTERVAL,
        }
    }

    fn open(dir: &Path, now: i64) -> DiskKeyRing {
        DiskKeyRing::open(
            dir,
            "iss",
            "aud",
            &test_policy(),
            now,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn now_s() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn names_parse_strictly() {
        let kid = "0123456789abcdef";
        assert_eq!(
            parse_name(&format!("signing-17-{kid}.pem")),
            Some((Some(17), kid.to_owned()))
        );
        assert_eq!(
            parse_name(&format!("signing-{kid}.pem")),
            Some((None, kid.to_owned()))
        );
        for bad in [
            "signing-.pem",
            "signing-17-0123.pem",
            "signing-+17-0123456789abcdef.pem",
            "signing-17-0123456789ABCDEF.pem",
            "signing-17-0123456789abcdef.pem.tmp",
            ".tmp-01j",
            "data-1.key",
            "signing-../../x.pem",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn first_open_creates_one_private_key_and_reopening_keeps_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keys");
        let ring = open(&dir, NOW);
        let kid = ring.snapshot().load().kid().to_owned();
        let file = dir.join(format!("signing-{NOW}-{kid}.pem"));
        assert_eq!(names(&dir), vec![format!("signing-{NOW}-{kid}.pem")]);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
        let again = open(&dir, NOW + 1_000);
        assert_eq!(again.snapshot().load().kid(), kid);
        let device = DeviceId::generate();
        let (token, _) = ring
            .snapshot()
            .load()
            .sign_access(&device, now_s(), 600)
            .unwrap();
        assert_eq!(
            again
                .snapshot()
                .load()
                .verify_access(&token)
                .unwrap()
                .device,
            device
        );
    }

    #[test]
    fn loose_permissions_are_tightened_on_open() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keys");
        let kid = open(&dir, NOW).snapshot().load().kid().to_owned();
        let file = dir.join(format!("signing-{NOW}-{kid}.pem"));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        open(&dir, NOW);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn a_legacy_key_is_the_oldest_and_rotation_keeps_it_verifying_then_retires_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keys");
        fs::create_dir_all(&dir).unwrap();
        // The layout of relays from before rotation: one `signing-<kid>.pem`.
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let legacy_kid = kid_of(&rsa.public_key_to_der().unwrap());
        let legacy = dir.join(format!("signing-{legacy_kid}.pem"));
        write_new(&legacy, &rsa.private_key_to_pem().unwrap()).unwrap();
        // Its file time stands in for its creation time, so work in real time here.
        let now = chrono::Utc::now().timestamp_millis() + 1_000;
        let ring = open(&dir, now);
        assert_eq!(ring.snapshot().load().kid(), legacy_kid);
        let device = DeviceId::generate();
        let (old_token, _) = ring
            .snapshot()
            .load()
            .sign_access(&device, now_s(), 600)
            .unwrap();

        let policy = test_policy();
        let rotated = reconcile(&ring, now, &policy, true, None).unwrap();
        let new_kid = rotated.created.unwrap().kid;
        let snapshot = ring.snapshot().load_full();
        assert_eq!(snapshot.kid(), new_kid);
        assert_eq!(
            snapshot.keys().iter().map(|k| k.state).collect::<Vec<_>>(),
            vec![KeyState::Verifying, KeyState::Current]
        );
        assert!(snapshot.verify_access(&old_token).is_ok());
        let jwks: Vec<&str> = snapshot
            .jwks()
            .keys
            .iter()
            .map(|k| k.kid.as_str())
            .collect();
        assert_eq!(jwks, vec![new_kid.as_str(), legacy_kid.as_str()]);

        // A relay opening the directory now sees the same ring, newest signing.
        assert_eq!(open(&dir, now + 1).snapshot().load().kid(), new_kid);

        // Past the retirement point the legacy key goes: its private half is deleted, its public
        // half kept under retired/.
        let due = now + policy.retire_after_ms();
        let done = reconcile(&ring, due, &policy, false, Some(&rotated.keys)).unwrap();
        assert_eq!(done.retired, vec![legacy_kid.clone()]);
        assert!(!legacy.exists());
        let retired = names(&dir.join(RETIRED_DIR));
        assert_eq!(retired.len(), 1);
        assert!(
            retired[0].ends_with(&format!("-{legacy_kid}.pub.pem")),
            "{retired:?}"
        );
        let public = fs::read_to_string(dir.join(RETIRED_DIR).join(&retired[0])).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        let snapshot = ring.snapshot().load_full();
        assert_eq!(snapshot.keys().len(), 1);
        assert!(snapshot.verify_access(&old_token).is_err());
        assert_eq!(snapshot.jwks().keys.len(), 1);
    }
}
