//! The data keys in force, as the store reads them: an immutable [`DataRing`] snapshot behind a
//! [`Cipher`] handle, swapped whole by the key manager.
//!
//! Every sealed column is a [`Field`] with its purpose: its values are sealed under the purpose's
//! current key and open with any key of that purpose still in the ring. A row's fields are all
//! sealed under one key (a [`Sealer`]), whose id the row records, so the re-encryption job finds
//! what an old key still covers. Filters compare blind indexes ([`Cipher::blind_index`]):
//! HMAC-SHA256 of the value under the index key, separated per column.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::envelope::{self, Context};
use super::provider::EncryptionProvider;
use super::CryptoError;
use crate::crypto::secrets::{ExposeSecret, KeyBytes};

/// What a data key protects. Each purpose has its own keys.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Notification title, body, app, tags and click URL.
    Content,
    /// Device names, platforms, app versions and quiet hours.
    Devices,
    /// Admin session records.
    Sessions,
    /// The blind-index key (HMAC-SHA256) that filters compare; never rotated by `keys rotate`.
    Index,
    /// The personal parts of audit records (source IP, details). Never rotated by `keys rotate`
    /// and never retired: the audit log's leaves hash these sealed bytes, so its rows are never
    /// re-encrypted, and archives outlive the rows.
    Audit,
}

impl Purpose {
    /// Every purpose; the ring has a current key for each.
    pub const ALL: [Purpose; 5] = [
        Purpose::Content,
        Purpose::Devices,
        Purpose::Sessions,
        Purpose::Index,
        Purpose::Audit,
    ];

    /// The purposes whose keys seal values (and so rotate).
    pub const SEALING: [Purpose; 3] = [Purpose::Content, Purpose::Devices, Purpose::Sessions];

    /// Its name in files, logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Content => "content",
            Purpose::Devices => "devices",
            Purpose::Sessions => "sessions",
            Purpose::Index => "index",
            Purpose::Audit => "audit",
        }
    }
}

/// A sealed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its table.
    pub table: &'static str,
    /// Its column.
    pub column: &'static str,
    /// The keys that seal it.
    pub purpose: Purpose,
}

impl Field {
    const fn new(table: &'static str, column: &'static str, purpose: Purpose) -> Self {
        Self {
            table,
            column,
            purpose,
        }
    }

    fn context<'a>(&self, row: &'a str) -> Context<'a> {
        Context {
            table: self.table,
            column: self.column,
            row,
        }
    }
}

/// Every sealed column, and the blind-indexed ones.
pub mod fields {
    use super::{Field, Purpose};
    /// `notifications.title`.
    pub const NOTIFICATION_TITLE: Field = Field::new("notifications", "title", Purpose::Content);
    /// `notifications.body`.
    pub const NOTIFICATION_BODY: Field = Field::new("notifications", "body", Purpose::Content);
    /// `notifications.app`.
    pub const NOTIFICATION_APP: Field = Field::new("notifications", "app", Purpose::Content);
    /// `notifications.tags` (a JSON array).
    pub const NOTIFICATION_TAGS: Field = Field::new("notifications", "tags", Purpose::Content);
    /// `notifications.click_url`.
    pub const NOTIFICATION_CLICK_URL: Field =
        Field::new("notifications", "click_url", Purpose::Content);
    /// `notifications.encrypted` (an end-to-end envelope, sealed again at rest like the body).
    pub const NOTIFICATION_ENCRYPTED: Field =
        Field::new("notifications", "encrypted", Purpose::Content);
    /// `devices.name`.
    pub const DEVICE_NAME: Field = Field::new("devices", "name", Purpose::Devices);
    /// `devices.platform`.
    pub const DEVICE_PLATFORM: Field = Field::new("devices", "platform", Purpose::Devices);
    /// `devices.app_version`.
    pub const DEVICE_APP_VERSION: Field = Field::new("devices", "app_version", Purpose::Devices);
    /// `devices.quiet_start`.
    pub const DEVICE_QUIET_START: Field = Field::new("devices", "quiet_start", Purpose::Devices);
    /// `devices.quiet_end`.
    pub const DEVICE_QUIET_END: Field = Field::new("devices", "quiet_end", Purpose::Devices);
    /// `devices.quiet_tz`.
    pub const DEVICE_QUIET_TZ: Field = Field::new("devices", "quiet_tz", Purpose::Devices);
    /// `devices.groups` (a JSON array of names).
    pub const DEVICE_GROUPS: Field = Field::new("devices", "groups", Purpose::Devices);
    /// `admin_sessions.data` (and the same record in Redis).
    pub const SESSION_DATA: Field = Field::new("admin_sessions", "data", Purpose::Sessions);
    /// `audit_log.sealed` (a JSON object: the source IP and the details).
    pub const AUDIT_SEALED: Field = Field::new("audit_log", "sealed", Purpose::Audit);
    /// The blind index of `notifications.app`.
    pub const INDEX_APP: Field = Field::new("notifications", "app_index", Purpose::Index);
    /// The blind index of each tag (`notification_tags.tag_index`).
    pub const INDEX_TAG: Field = Field::new("notification_tags", "tag_index", Purpose::Index);
    /// The blind index of `devices.platform`.
    pub const INDEX_PLATFORM: Field = Field::new("devices", "platform_index", Purpose::Index);
    /// The blind index of `notifications.idempotency_key`.
    pub const INDEX_IDEMPOTENCY: Field =
        Field::new("notifications", "idempotency_key", Purpose::Index);
}

/// One data key, ready to use.
pub struct DataKey {
    /// Its id (in every envelope it seals).
    pub id: u32,
    /// What it protects.
    pub purpose: Purpose,
    provider: Box<dyn EncryptionProvider>,
    /// Encryptions by this process (for the AES-GCM nonce budget).
    sealed: AtomicU64,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("purpose", &self.purpose)
            .field("algorithm", &self.provider.algorithm().name)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    /// A key of `purpose` from its bytes.
    pub fn new(id: u32, purpose: Purpose, provider: Box<dyn EncryptionProvider>) -> Self {
        Self {
            id,
            purpose,
            provider,
            sealed: AtomicU64::new(0),
        }
    }

    /// Encryptions this process has made with it.
    pub fn sealed(&self) -> u64 {
        self.sealed.load(Ordering::Relaxed)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> &'static super::provider::Algorithm {
        self.provider.algorithm()
    }
}

/// The data keys in force: immutable, replaced whole.
#[derive(Default)]
pub struct DataRing {
    keys: HashMap<u32, Arc<DataKey>>,
    current: HashMap<Purpose, u32>,
    index: Option<Arc<KeyBytes>>,
}

impl std::fmt::Debug for DataRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<u32> = self.keys.keys().copied().collect();
        ids.sort_unstable();
        f.debug_struct("DataRing")
            .field("current", &self.current)
            .field("keys", &ids)
            .finish_non_exhaustive()
    }
}

impl DataRing {
    /// A ring of `keys` (each purpose's current one named in `current`) and the index key.
    pub fn new(
        keys: impl IntoIterator<Item = Arc<DataKey>>,
        current: HashMap<Purpose, u32>,
        index: Option<Arc<KeyBytes>>,
    ) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.id, k)).collect(),
            current,
            index,
        }
    }

    /// The key with this id, if it opens.
    pub fn key(&self, id: u32) -> Option<&Arc<DataKey>> {
        self.keys.get(&id)
    }

    /// Every key that opens.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<DataKey>> {
        self.keys.values()
    }

    /// The current key of a purpose.
    pub fn current(&self, purpose: Purpose) -> Option<&Arc<DataKey>> {
        self.current.get(&purpose).and_then(|id| self.keys.get(id))
    }

    /// The index key, to carry it over a reload.
    pub(super) fn index_key(&self) -> Option<Arc<KeyBytes>> {
        self.index.clone()
    }

    /// The ids of a purpose's keys, current included.
    pub fn ids_of(&self, purpose: Purpose) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .keys
            .values()
            .filter(|k| k.purpose == purpose)
            .map(|k| k.id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// Nonces a [`Sealer`] takes from the operating system in one read: enough for a notification's
/// five fields.
const NONCES_PER_READ: usize = 5;

/// Seals the fields of one row under one key. Its nonces come from the operating system's random
/// source, read [`NONCES_PER_READ`] at a time (one system call for a row instead of one per
/// field); each is used once.
#[derive(Debug)]
pub struct Sealer {
    key: Arc<DataKey>,
    nonces: std::cell::RefCell<NoncePool>,
}

#[derive(Debug)]
struct NoncePool {
    bytes: [u8; NONCES_PER_READ * envelope::MAX_NONCE_LEN],
    /// Bytes of `bytes` already used.
    used: usize,
}

impl NoncePool {
    fn empty() -> Self {
        Self {
            bytes: [0; NONCES_PER_READ * envelope::MAX_NONCE_LEN],
            used: NONCES_PER_READ * envelope::MAX_NONCE_LEN,
        }
    }

    /// The next unused nonce of `len` bytes, reading the source again when the pool is spent.
    fn take(&mut self, len: usize) -> &[u8] {
        if self.used + len > self.bytes.len() {
            crate::crypto::secrets::os_random(&mut self.bytes);
            self.used = 0;
        }
        let nonce = &self.bytes[self.used..self.used + len];
        self.used += len;
        nonce
    }
}

impl Drop for NoncePool {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

impl Sealer {
    /// The key's id, as the row records it.
    pub fn key_id(&self) -> i64 {
        i64::from(self.key.id)
    }

    /// Seals `plaintext` for `field` of `row`.
    pub fn seal(&self, field: Field, row: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if field.purpose != self.key.purpose {
            return Err(CryptoError::WrongPurpose {
                key_id: self.key.id,
                field: field.column,
            });
        }
        self.key.sealed.fetch_add(1, Ordering::Relaxed);
        let mut nonces = self.nonces.borrow_mut();
        let nonce = nonces.take(self.key.provider.algorithm().nonce_len);
        envelope::seal_with_nonce(
            &*self.key.provider,
            self.key.id,
            nonce,
            &field.context(row),
            plaintext,
        )
    }

    /// Seals an optional text.
    pub fn seal_opt(
        &self,
        field: Field,
        row: &str,
        plaintext: Option<&str>,
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        plaintext
            .map(|p| self.seal(field, row, p.as_bytes()))
            .transpose()
    }
}

/// Values that failed to open since start, for metrics and health.
#[derive(Default)]
pub struct OpenFailures {
    count: AtomicU64,
    last: Mutex<Option<(String, std::time::Instant)>>,
    counter: OnceLock<prometheus::IntCounter>,
}

impl OpenFailures {
    /// How many.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The last one: which field, which row, why.
    pub fn last(&self) -> Option<String> {
        self.last
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|(what, _)| what.clone()))
    }

    /// The last one if it happened within `within`.
    pub fn recent(&self, within: std::time::Duration) -> Option<String> {
        self.last.lock().ok().and_then(|l| {
            l.as_ref()
                .filter(|(_, at)| at.elapsed() <= within)
                .map(|(what, _)| what.clone())
        })
    }

    fn record(&self, field: Field, row: &str, error: &CryptoError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = self.counter.get() {
            counter.inc();
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some((
                format!("{}.{} of row {row}: {error}", field.table, field.column),
                std::time::Instant::now(),
            ));
        }
    }
}

/// Re-reads the ring from disk (set by whoever owns it).
pub type Refresher = Box<dyn Fn() -> Option<DataRing> + Send + Sync>;

/// Shortest interval between two on-demand re-reads of the ring ([`Cipher::refresh`]).
pub const REFRESH_INTERVAL_MS: i64 = 10_000;

/// The store's handle on the data keys: cheap to clone, reads a snapshot per call.
#[derive(Clone)]
pub struct Cipher {
    ring: Arc<ArcSwap<DataRing>>,
    failures: Arc<OpenFailures>,
    refresher: Arc<OnceLock<Refresher>>,
    last_refresh: Arc<AtomicI64>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cipher").field(&*self.ring.load()).finish()
    }
}

impl Cipher {
    /// A handle on `ring`.
    pub fn new(ring: DataRing) -> Self {
        Self {
            ring: Arc::new(ArcSwap::from_pointee(ring)),
            failures: Arc::default(),
            refresher: Arc::default(),
            last_refresh: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// How to re-read the ring when a value names a key not loaded yet (another relay sharing the
    /// keys directory rotated); the first call wins.
    pub fn set_refresher(&self, refresher: Refresher) {
        let _ = self.refresher.set(refresher);
    }

    /// Re-reads the ring if a refresher is set and the last re-read is at least
    /// [`REFRESH_INTERVAL_MS`] ago; whether a new ring is in force. Blocks (file I/O): call it off
    /// the async workers.
    pub fn refresh(&self, now_ms: i64) -> bool {
        let Some(refresher) = self.refresher.get() else {
            return false;
        };
        let last = self.last_refresh.load(Ordering::Relaxed);
        if last > i64::MIN && now_ms.saturating_sub(last) < REFRESH_INTERVAL_MS {
            return false;
        }
        if self
            .last_refresh
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        match refresher() {
            Some(ring) => {
                self.publish(ring);
                true
            }
            None => false,
        }
    }

    /// The keys in force now.
    pub fn snapshot(&self) -> Arc<DataRing> {
        self.ring.load_full()
    }

    /// Puts a new ring in force.
    pub fn publish(&self, ring: DataRing) {
        self.ring.store(Arc::new(ring));
    }

    /// Counts open failures into `counter` too (`beepmyphone_crypto_open_failures_total`).
    pub fn count_failures_in(&self, counter: prometheus::IntCounter) {
        let _ = self.failures.counter.set(counter);
    }

    /// The open failures since start.
    pub fn failures(&self) -> &OpenFailures {
        &self.failures
    }

    /// A sealer for one row of `purpose`, under its current key.
    pub fn sealer(&self, purpose: Purpose) -> Result<Sealer, CryptoError> {
        let ring = self.ring.load();
        let key = ring.current(purpose).ok_or(CryptoError::NoKey(purpose))?;
        Ok(Sealer {
            key: key.clone(),
            nonces: std::cell::RefCell::new(NoncePool::empty()),
        })
    }

    /// Opens a value of `field` of `row`. A failure is counted and remembered for health; the
    /// caller reports the row as unreadable.
    pub fn open(&self, field: Field, row: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let result = self.try_open(field, row, sealed);
        if let Err(e) = &result {
            self.failures.record(field, row, e);
        }
        result
    }

    /// Whether a value opens, without counting a failure: for the start-up check that the ring
    /// is the one the rows were sealed with.
    pub fn opens(&self, field: Field, row: &str, sealed: &[u8]) -> bool {
        self.try_open(field, row, sealed).is_ok()
    }

    fn try_open(&self, field: Field, row: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let parsed = envelope::parse(sealed)?;
        let ring = self.ring.load();
        let key = ring
            .key(parsed.key_id)
            .ok_or(CryptoError::UnknownKey(parsed.key_id))?;
        if key.purpose != field.purpose {
            return Err(CryptoError::WrongPurpose {
                key_id: key.id,
                field: field.column,
            });
        }
        envelope::open(&*key.provider, &parsed, &field.context(row))
    }

    /// Opens a text value.
    pub fn open_string(
        &self,
        field: Field,
        row: &str,
        sealed: &[u8],
    ) -> Result<String, CryptoError> {
        let plain = self.open(field, row, sealed)?;
        String::from_utf8(plain).map_err(|_| {
            let e = CryptoError::NotText;
            self.failures.record(field, row, &e);
            e
        })
    }

    /// The blind index of `value` in `field`: HMAC-SHA256 under the index key of the column's
    /// name and the value. Equal values give equal indexes; nothing else can be read from it.
    pub fn blind_index(&self, field: Field, value: &str) -> Result<Vec<u8>, CryptoError> {
        let ring = self.ring.load();
        let key = ring
            .index
            .as_ref()
            .ok_or(CryptoError::NoKey(Purpose::Index))?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret())
            .map_err(|_| CryptoError::Keys("the index key is not 32 bytes".into()))?;
        mac.update(field.table.as_bytes());
        mac.update(b".");
        mac.update(field.column.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crypto::provider::{AES_256_GCM, XCHACHA20_POLY1305};

    /// A ring with one random key per purpose (content under XChaCha20, the rest AES-GCM).
    pub(crate) fn test_cipher() -> Cipher {
        let random = || KeyBytes::init_with_mut(|k| crate::crypto::secrets::os_random(k));
        let keys = vec![
            Arc::new(DataKey::new(
                1,
                Purpose::Content,
                (XCHACHA20_POLY1305.build)(&random()),
            )),
            Arc::new(DataKey::new(
                2,
                Purpose::Devices,
                (AES_256_GCM.build)(&random()),
            )),
            Arc::new(DataKey::new(
                3,
                Purpose::Sessions,
                (AES_256_GCM.build)(&random()),
            )),
            Arc::new(DataKey::new(
                4,
                Purpose::Audit,
                (AES_256_GCM.build)(&random()),
            )),
        ];
        let current = [
            (Purpose::Content, 1),
            (Purpose::Devices, 2),
            (Purpose::Sessions, 3),
            (Purpose::Audit, 4),
        ]
        .into_iter()
        .collect();
        Cipher::new(DataRing::new(keys, current, Some(Arc::new(random()))))
    }

    #[test]
    fn fields_seal_under_their_purpose_and_open_only_in_place() {
        let cipher = test_cipher();
        let sealer = cipher.sealer(Purpose::Content).unwrap();
        assert_eq!(sealer.key_id(), 1);
        let sealed = sealer
            .seal(fields::NOTIFICATION_TITLE, "ntf_1", b"on /var")
            .unwrap();
        assert_eq!(
            cipher
                .open_string(fields::NOTIFICATION_TITLE, "ntf_1", &sealed)
                .unwrap(),
            "on /var"
        );
        assert_eq!(
            cipher.open(fields::NOTIFICATION_BODY, "ntf_1", &sealed),
            Err(CryptoError::Open)
        );
        assert_eq!(
            cipher.open(fields::NOTIFICATION_TITLE, "ntf_2", &sealed),
            Err(CryptoError::Open)
        );
        // A content value pasted into a device column names the mismatch.
        assert!(matches!(
            cipher.open(fields::DEVICE_NAME, "ntf_1", &sealed),
            Err(CryptoError::WrongPurpose { key_id: 1, .. })
        ));
        assert!(matches!(
            sealer.seal(fields::DEVICE_NAME, "dev_1", b"x"),
            Err(CryptoError::WrongPurpose { .. })
        ));
        assert_eq!(cipher.failures().count(), 3);
        assert!(cipher
            .failures()
            .last()
            .unwrap()
            .contains("devices.name of row ntf_1"));
        assert_eq!(sealer.key.sealed(), 1);
        // Nonces are never reused, across pool refills too.
        let nonces: std::collections::HashSet<Vec<u8>> = (0..3 * NONCES_PER_READ + 1)
            .map(|_| {
                let sealed = sealer
                    .seal(fields::NOTIFICATION_BODY, "ntf_1", b"x")
                    .unwrap();
                sealed[envelope::HEADER_LEN..envelope::HEADER_LEN + 24].to_vec()
            })
            .collect();
        assert_eq!(nonces.len(), 3 * NONCES_PER_READ + 1);
        assert!(cipher.sealer(Purpose::Index).is_err());
    }

    #[test]
    fn an_unknown_key_id_is_a_clear_error() {
        let cipher = test_cipher();
        let other = test_cipher();
        let sealed = other
            .sealer(Purpose::Devices)
            .unwrap()
            .seal(fields::DEVICE_NAME, "dev_1", b"phone")
            .unwrap();
        // Same id (2), another key: the tag does not verify.
        assert_eq!(
            cipher.open(fields::DEVICE_NAME, "dev_1", &sealed),
            Err(CryptoError::Open)
        );
        let mut renumbered = sealed.clone();
        renumbered[1..5].copy_from_slice(&77u32.to_be_bytes());
        let err = cipher
            .open(fields::DEVICE_NAME, "dev_1", &renumbered)
            .unwrap_err();
        assert_eq!(err, CryptoError::UnknownKey(77));
        assert!(err.to_string().contains("77"));
    }

    #[test]
    fn blind_indexes_are_equal_for_equal_values_and_separate_per_column() {
        let cipher = test_cipher();
        let a = cipher.blind_index(fields::INDEX_APP, "CI").unwrap();
        assert_eq!(a, cipher.blind_index(fields::INDEX_APP, "CI").unwrap());
        assert_ne!(a, cipher.blind_index(fields::INDEX_APP, "ci").unwrap());
        assert_ne!(a, cipher.blind_index(fields::INDEX_TAG, "CI").unwrap());
        assert_ne!(
            a,
            test_cipher().blind_index(fields::INDEX_APP, "CI").unwrap()
        );
        assert_eq!(a.len(), 32);
        assert!(!format!("{cipher:?}").contains("CI"));
    }

    #[test]
    fn text_that_is_not_utf8_is_an_error() {
        let cipher = test_cipher();
        let sealed = cipher
            .sealer(Purpose::Content)
            .unwrap()
            .seal(fields::NOTIFICATION_BODY, "ntf_1", &[0xff, 0xfe])
            .unwrap();
        assert_eq!(
            cipher.open_string(fields::NOTIFICATION_BODY, "ntf_1", &sealed),
            Err(CryptoError::NotText)
        );
    }
}
