//! The data-encryption keys as ports: [`DataKeyRing`] (the ring's upkeep, driven by the
//! [`crate::keys::KeyManager`]) and [`Reencrypt`] (moving rows to the current keys, driven by the
//! [`crate::reencrypt::Reencryptor`]). The binary implements both.

use super::keys::KeyRingError;
use super::store::StoreError;

/// A data key, as the port reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyInfo {
    /// Its id (in every value it sealed).
    pub id: u32,
    /// What it protects (`content`, `devices`, `sessions`, `index`).
    pub purpose: String,
    /// Its algorithm.
    pub algorithm: String,
    /// `current`, `decrypt_only` or `retired`.
    pub state: String,
    /// Created at, epoch ms.
    pub created_ms: i64,
    /// Encryptions reserved under it (AES-GCM keys rotate before 2^30).
    pub reserved: u64,
}

/// What one upkeep step did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataKeyReport {
    /// Every key the ring lists.
    pub keys: Vec<DataKeyInfo>,
    /// Keys made by this step.
    pub created: Vec<u32>,
    /// Keys retired by this step.
    pub retired: Vec<u32>,
    /// Rows still under a decrypt-only key or in plaintext: the re-encryption job has work.
    pub stale_rows: u64,
}

/// The data-key ring's upkeep. Blocking: the key manager calls it on the blocking pool.
pub trait DataKeyRing: Send + Sync + 'static {
    /// Re-reads the ring, reserves encryptions for the keys that count them, rotates the keys
    /// whose budget is spent (every sealing purpose when `rotate`), retires decrypt-only keys that
    /// nothing uses any more, and publishes the keys in force.
    fn step(&self, now_ms: i64, rotate: bool) -> Result<DataKeyReport, KeyRingError>;
}

/// One batch of the re-encryption job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReencryptBatch {
    /// Rows moved to the current keys.
    pub moved: u64,
    /// Rows that did not open (reported, left as they are, not counted as remaining).
    pub failed: u64,
    /// Whether rows are left after this batch.
    pub more: bool,
}

/// Moves rows sealed under decrypt-only keys, and plaintext rows from before encryption, to the
/// current keys. Resumable by construction: each row records the key that sealed it, so the job
/// only ever looks for rows that need it. Blocking: called on the blocking pool.
pub trait Reencrypt: Send + Sync + 'static {
    /// Rows left to move.
    fn remaining(&self) -> Result<u64, StoreError>;
    /// Moves at most `max_rows` rows, in one transaction per table.
    fn step(&self, max_rows: usize) -> Result<ReencryptBatch, StoreError>;
}
