//! The data keys at run time: [`DataKeyService`] implements the key manager's
//! [`DataKeyRing`] port (re-reading the ring, reserving AES-GCM nonces, rotating, retiring keys
//! no row uses) and [`ReencryptService`] the re-encryption job's [`Reencrypt`] port. The ring's
//! format and rules are in [`crate::crypto`].

use std::sync::{Arc, Mutex};

use beepmyphone_actors::ports::{
    self, DataKeyInfo, DataKeyReport, DataKeyRing, KeyRingError, Reencrypt, ReencryptBatch,
};

use crate::crypto::disk::{DataKeyState, StoredKey};
use crate::crypto::provider::Algorithm;
use crate::crypto::{Cipher, DataKeyError, DiskDataKeys, Purpose};
use crate::store::reencrypt::{self, Cursor};
use crate::store::Store;

/// How long a key stays decrypt-only at least before it may retire: longer than any write that
/// sealed under it just before the rotation takes to commit, so such a row is never left under a
/// key that is gone (it is found and moved by the re-encryption job instead).
pub const RETIRE_GRACE_MS: i64 = 60_000;

fn ring_err(e: impl std::fmt::Display) -> KeyRingError {
    KeyRingError(e.to_string())
}

/// A key as the port reports it.
pub fn info(key: &StoredKey) -> DataKeyInfo {
    DataKeyInfo {
        id: key.id,
        purpose: key.purpose.as_str().to_owned(),
        algorithm: key.algorithm.clone(),
        state: key.state.as_str().to_owned(),
        created_ms: key.created_ms,
        reserved: key.reserved,
    }
}

/// The data-key ring's upkeep, over the keys directory and the store.
pub struct DataKeyService {
    disk: Mutex<DiskDataKeys>,
    dir: std::path::PathBuf,
    cipher: Cipher,
    store: Store,
    algorithm: &'static Algorithm,
    /// How long a session lives at most: a decrypt-only sessions key retires only after it (a
    /// session in Redis cannot be re-encrypted; it ends).
    session_lifetime_ms: i64,
}

impl DataKeyService {
    /// The service; makes `cipher` re-read the ring on demand through it.
    pub fn new(
        disk: DiskDataKeys,
        dir: std::path::PathBuf,
        store: Store,
        algorithm: &'static Algorithm,
        session_lifetime_ms: i64,
    ) -> Result<Arc<Self>, DataKeyError> {
        let cipher = store
            .cipher()
            .map_err(|e| DataKeyError::Io(e.to_string()))?
            .clone();
        let service = Arc::new(Self {
            disk: Mutex::new(disk),
            dir,
            cipher: cipher.clone(),
            store,
            algorithm,
            session_lifetime_ms,
        });
        let weak = Arc::downgrade(&service);
        cipher.set_refresher(Box::new(move || {
            let service = weak.upgrade()?;
            let mut disk = service.disk.lock().ok()?;
            disk.reload(&service.cipher.snapshot()).ok()
        }));
        Ok(service)
    }

    fn retirable(&self, key: &StoredKey, now_ms: i64) -> Result<bool, KeyRingError> {
        // Audit keys never retire: archives keep sealed audit records after their rows are gone.
        if key.state != DataKeyState::DecryptOnly || key.purpose == Purpose::Audit {
            return Ok(false);
        }
        let wait = match key.purpose {
            Purpose::Sessions => self.session_lifetime_ms.max(RETIRE_GRACE_MS),
            _ => RETIRE_GRACE_MS,
        };
        let since = key.decrypt_only_ms.unwrap_or(now_ms);
        if now_ms.saturating_sub(since) < wait {
            return Ok(false);
        }
        let mut conn = self.store.conn().map_err(ring_err)?;
        Ok(reencrypt::rows_under(&mut conn, key.purpose, key.id).map_err(ring_err)? == 0)
    }
}

impl DataKeyRing for DataKeyService {
    fn step(&self, now_ms: i64, rotate: bool) -> Result<DataKeyReport, KeyRingError> {
        let mut disk = self
            .disk
            .lock()
            .map_err(|_| ring_err("the data-key ring lock is poisoned"))?;
        let mut created = Vec::new();
        if rotate {
            created = disk
                .rotate(&Purpose::SEALING, self.algorithm, now_ms)
                .map_err(ring_err)?;
        }
        let mut ring = disk.reload(&self.cipher.snapshot()).map_err(ring_err)?;
        // AES-GCM keys: reserve encryptions ahead, and replace a key past its budget.
        let mut due: Vec<Purpose> = disk
            .reserve(&ring)
            .map_err(ring_err)?
            .into_iter()
            .filter(|&(_, _, reserved, limit)| reserved >= limit)
            .map(|(_, purpose, _, _)| purpose)
            .collect();
        due.sort();
        due.dedup();
        if !due.is_empty() {
            created.extend(
                disk.rotate(&due, self.algorithm, now_ms)
                    .map_err(ring_err)?,
            );
            ring = disk.reload(&self.cipher.snapshot()).map_err(ring_err)?;
        }
        self.cipher.publish(ring);
        let listed = DiskDataKeys::list(&self.dir).map_err(ring_err)?;
        let mut retired = Vec::new();
        for key in &listed {
            if self.retirable(key, now_ms)? {
                retired.push(key.id);
            }
        }
        if !retired.is_empty() {
            disk.retire(&retired, now_ms).map_err(ring_err)?;
            let ring = disk.reload(&self.cipher.snapshot()).map_err(ring_err)?;
            self.cipher.publish(ring);
        }
        drop(disk);
        let listed = DiskDataKeys::list(&self.dir).map_err(ring_err)?;
        let mut conn = self.store.conn().map_err(ring_err)?;
        let stale_rows = reencrypt::stale_rows(&mut conn, &self.cipher).map_err(ring_err)?;
        Ok(DataKeyReport {
            keys: listed.iter().map(info).collect(),
            created,
            retired,
            stale_rows,
        })
    }
}

/// The re-encryption job's store side.
pub struct ReencryptService {
    store: Store,
    cursor: Mutex<Cursor>,
}

impl ReencryptService {
    /// Over `store` (which holds the data keys).
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cursor: Mutex::default(),
        }
    }
}

fn store_err(e: impl std::fmt::Display) -> ports::StoreError {
    ports::StoreError(e.to_string())
}

impl Reencrypt for ReencryptService {
    fn remaining(&self) -> Result<u64, ports::StoreError> {
        // Counting starts a new pass: rows that did not open are tried again.
        *self.cursor.lock().map_err(store_err)? = Cursor::default();
        let cipher = self.store.cipher().map_err(store_err)?;
        let mut conn = self.store.conn().map_err(store_err)?;
        let stale = reencrypt::stale_rows(&mut conn, cipher).map_err(store_err)?;
        // A crash after the last plaintext row was sealed, before the scrub: scrub now.
        if stale == 0 && reencrypt::scrub_pending(&mut conn).map_err(store_err)? {
            reencrypt::scrub(&mut *self.store.writer().map_err(store_err)?).map_err(store_err)?;
        }
        Ok(stale)
    }

    fn step(&self, max_rows: usize) -> Result<ReencryptBatch, ports::StoreError> {
        let cipher = self.store.cipher().map_err(store_err)?;
        let mut conn = self.store.writer().map_err(store_err)?;
        let mut cursor = self.cursor.lock().map_err(store_err)?;
        let moved = reencrypt::step(&mut conn, cipher, &mut cursor, max_rows).map_err(store_err)?;
        if !moved.full && reencrypt::scrub_pending(&mut conn).map_err(store_err)? {
            reencrypt::scrub(&mut conn).map_err(store_err)?;
        }
        Ok(ReencryptBatch {
            moved: moved.moved,
            failed: moved.failed,
            more: moved.full,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StorageSettings, MIN_PBKDF2_ITERATIONS};
    use crate::crypto::disk::{OpenOptions, RING_FILE};
    use crate::crypto::provider::AES_256_GCM;
    use crate::crypto::KekSource;
    use crate::store::devices::{self, DeviceRow};

    const HOUR_MS: i64 = 3_600_000;

    fn service() -> (tempfile::TempDir, Arc<DataKeyService>, Store) {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let (disk, ring) = DiskDataKeys::open(
            &keys,
            &OpenOptions {
                source: &KekSource::KeyFile,
                algorithm: &AES_256_GCM,
                iterations: MIN_PBKDF2_ITERATIONS,
                now_ms: 0,
            },
        )
        .unwrap();
        let store = Store::open(dir.path(), &StorageSettings::default())
            .unwrap()
            .with_cipher(Cipher::new(ring));
        let service =
            DataKeyService::new(disk, keys, store.clone(), &AES_256_GCM, HOUR_MS).unwrap();
        (dir, service, store)
    }

    fn device(store: &Store) {
        let mut conn = store.conn().unwrap();
        let row = DeviceRow::for_tests("dev_1", "phone", "ios");
        devices::insert(&mut conn, store.cipher().unwrap(), &row).unwrap();
    }

    fn state(report: &DataKeyReport, id: u32) -> &str {
        &report.keys.iter().find(|k| k.id == id).unwrap().state
    }

    #[test]
    fn an_aes_gcm_key_past_its_budget_is_replaced_and_old_keys_retire_when_unused() {
        let (dir, service, store) = service();
        device(&store);
        let first = service.step(0, false).unwrap();
        assert!(
            first.created.is_empty() && first.stale_rows == 0,
            "{first:?}"
        );
        assert!(first
            .keys
            .iter()
            .filter(|k| k.algorithm == "aes-256-gcm")
            .all(|k| k.reserved > 0));
        // The devices key has reserved 2^30 encryptions (as if used): the next step replaces it.
        let path = dir.path().join("keys").join(RING_FILE);
        let mut ring: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        ring["keys"][1]["reserved"] = (1u64 << 30).into();
        std::fs::write(&path, serde_json::to_vec(&ring).unwrap()).unwrap();
        let rotated = service.step(1_000, false).unwrap();
        let grace = RETIRE_GRACE_MS;
        assert_eq!(rotated.created, vec![6], "{rotated:?}");
        assert_eq!(state(&rotated, 2), "decrypt_only");
        assert_eq!(state(&rotated, 6), "current");
        // The device is still under key 2: it is stale, and key 2 stays until it moves.
        assert_eq!(rotated.stale_rows, 1);
        assert_eq!(
            service.step(1_000 + grace, false).unwrap().retired,
            Vec::<u32>::new()
        );
        let job = ReencryptService::new(store.clone());
        assert_eq!(job.remaining().unwrap(), 1);
        let batch = job.step(10).unwrap();
        assert_eq!((batch.moved, batch.failed, batch.more), (1, 0, false));
        // Unused now, but it retires only a grace period after the rotation.
        assert!(service
            .step(1_000 + grace - 1, false)
            .unwrap()
            .retired
            .is_empty());
        let after = service.step(1_000 + grace, false).unwrap();
        assert_eq!(after.retired, vec![2]);
        assert_eq!(state(&after, 2), "retired");
        // A forced rotation: every sealing purpose; the sessions key waits for the session lifetime.
        let forced = service.step(100_000, true).unwrap();
        assert_eq!(forced.created.len(), 3, "{forced:?}");
        let later = service.step(100_000 + HOUR_MS - 1, false).unwrap();
        assert!(!later.retired.contains(&3), "{later:?}");
        let done = service.step(100_000 + HOUR_MS, false).unwrap();
        assert!(done.retired.contains(&3), "{done:?}");
        // The device moved again and reads.
        let job = ReencryptService::new(store.clone());
        job.remaining().unwrap();
        job.step(10).unwrap();
        let mut conn = store.conn().unwrap();
        let row = devices::get(&mut conn, store.cipher().unwrap(), "dev_1")
            .unwrap()
            .unwrap();
        assert_eq!(row.name, "phone");
    }

    #[test]
    fn the_cipher_re_reads_the_ring_on_demand_through_the_service() {
        let (_dir, service, store) = service();
        let cipher = store.cipher().unwrap().clone();
        assert!(cipher.refresh(0));
        // At most every ten seconds.
        assert!(!cipher.refresh(5_000));
        assert!(cipher.refresh(10_000));
        drop(service);
        // Without the service, nothing to re-read with.
        assert!(!cipher.refresh(30_000));
    }
}
