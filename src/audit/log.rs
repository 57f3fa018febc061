//! The audit log on disk: [`SqliteAuditLog`] implements the writer's port over the `audit_log`
//! and `audit_checkpoints` tables and the checkpoint file.
//!
//! It keeps the tree's [`Frontier`] (the roots of its perfect subtrees) in memory, so an append
//! costs one seal, one hash and O(log n) node hashes, and signing a checkpoint needs no read of
//! old leaves. The frontier is rebuilt from the last stored checkpoint and the leaves after it
//! when the log is opened, and again whenever an append finds the table longer than it expected
//! (another process, such as the CLI, appended meanwhile). Each append is one immediate
//! transaction: a crash leaves the log as it was before it or after it, never between.

use crate::store::WriteTransaction;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::Db;
use beepmyphone_actors::ports::{AuditError, AuditEvent, AuditLog, CheckpointInfo};

use super::archive::Archiver;
use super::merkle::{Frontier, Hash};
use super::note::{split_notes, Checkpoint, NoteSigner};
use super::record;
use crate::store::audit::{self as rows, CheckpointRow};
use crate::store::{Store, StoreError};

fn write_err(e: impl std::fmt::Display) -> AuditError {
    AuditError::Write(e.to_string())
}

/// The tree's frontier as stored: from the last checkpoint, plus the leaves after it.
pub fn rebuild(conn: &mut Db) -> Result<Frontier, StoreError> {
    let mut frontier = match rows::last_checkpoint(conn)? {
        Some(row) => Frontier::from_bytes(&row.frontier).map_err(|e| {
            StoreError::Corrupt(format!("audit checkpoint of size {}: {e}", row.size))
        })?,
        None => Frontier::new(),
    };
    let after = i64::try_from(frontier.size()).unwrap_or(i64::MAX);
    for (seq, leaf) in rows::leaves_after(conn, after)? {
        let expected = frontier.size() + 1;
        if u64::try_from(seq).ok() != Some(expected) {
            return Err(StoreError::Corrupt(format!(
                "audit record {expected} is missing (the next is {seq}); run `beepmyphone audit verify`"
            )));
        }
        let leaf: Hash = leaf.as_slice().try_into().map_err(|_| {
            StoreError::Corrupt(format!("audit record {seq}: the leaf hash is not 32 bytes"))
        })?;
        frontier.push(leaf);
    }
    Ok(frontier)
}

/// Appends `note` and an empty line to the checkpoint file (made 0600 if new) and syncs it.
pub fn append_note(path: &Path, note: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{note}\n").as_bytes())?;
    file.sync_data()
}

/// Cuts a checkpoint file back to its last complete note, if a crash tore the one after it.
/// Returns whether it did.
pub fn repair_torn_tail(path: &Path) -> std::io::Result<bool> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&text);
    let split = split_notes(&text);
    if !split.torn {
        return Ok(false);
    }
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(split.complete_len as u64)?;
    file.sync_data()?;
    Ok(true)
}

/// The audit log over the store and the checkpoint file.
pub struct SqliteAuditLog {
    store: Store,
    signer: NoteSigner,
    checkpoint_file: PathBuf,
    archiver: Option<Archiver>,
    frontier: Mutex<Frontier>,
}

impl SqliteAuditLog {
    /// Opens the log: repairs a torn checkpoint file and rebuilds the frontier. Blocking.
    pub fn open(
        store: Store,
        signer: NoteSigner,
        checkpoint_file: PathBuf,
        archiver: Option<Archiver>,
    ) -> Result<Self, AuditError> {
        repair_torn_tail(&checkpoint_file).map_err(|e| {
            write_err(format!(
                "checkpoint file {}: {e}",
                checkpoint_file.display()
            ))
        })?;
        let mut conn = store.conn().map_err(write_err)?;
        let frontier = rebuild(&mut conn).map_err(write_err)?;
        Ok(Self {
            store,
            signer,
            checkpoint_file,
            archiver,
            frontier: Mutex::new(frontier),
        })
    }

    /// The signing key's name (the checkpoints' origin).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    fn frontier(&self) -> Result<std::sync::MutexGuard<'_, Frontier>, AuditError> {
        self.frontier
            .lock()
            .map_err(|_| write_err("the audit frontier lock is poisoned"))
    }
}

impl AuditLog for SqliteAuditLog {
    fn append(&self, events: &[AuditEvent]) -> Result<Vec<u64>, AuditError> {
        let cipher = self.store.cipher().ok().cloned();
        let mut guard = self.frontier()?;
        let mut conn = self.store.writer().map_err(write_err)?;
        let (frontier, seqs) = conn
            .immediate_transaction(|conn| {
                let mut frontier = guard.clone();
                let last = rows::last_seq(conn)?;
                if u64::try_from(last).ok() != Some(frontier.size()) && last != 0 {
                    frontier = rebuild(conn)?;
                }
                let mut batch = Vec::with_capacity(events.len());
                let mut seqs = Vec::with_capacity(events.len());
                for event in events {
                    let seq = frontier.size() + 1;
                    let row = record::seal(
                        event,
                        i64::try_from(seq).unwrap_or(i64::MAX),
                        cipher.as_ref(),
                    )
                    .map_err(StoreError::crypto)?;
                    let leaf: Hash = record::leaf_of(&row);
                    frontier.push(leaf);
                    batch.push(row);
                    seqs.push(seq);
                }
                rows::insert(conn, &batch)?;
                Ok::<_, StoreError>((frontier, seqs))
            })
            .map_err(write_err)?;
        *guard = frontier;
        Ok(seqs)
    }

    fn size(&self) -> Result<u64, AuditError> {
        Ok(self.frontier()?.size())
    }

    fn checkpoint(&self, now_ms: i64) -> Result<Option<CheckpointInfo>, AuditError> {
        let frontier = self.frontier()?.clone();
        if frontier.size() == 0 {
            return Ok(None);
        }
        let mut conn = self.store.conn().map_err(write_err)?;
        let size = i64::try_from(frontier.size()).unwrap_or(i64::MAX);
        if rows::last_checkpoint(&mut conn)
            .map_err(write_err)?
            .is_some_and(|last| last.size >= size)
        {
            return Ok(None);
        }
        let text = Checkpoint {
            origin: self.signer.name().to_owned(),
            size: frontier.size(),
            root: frontier.root(),
            time_ms: now_ms,
        }
        .to_text();
        let note = self.signer.sign(&text).map_err(write_err)?;
        // The file first: a checkpoint that is only in the file still verifies.
        append_note(&self.checkpoint_file, &note).map_err(|e| {
            write_err(format!(
                "checkpoint file {}: {e}",
                self.checkpoint_file.display()
            ))
        })?;
        rows::insert_checkpoint(
            &mut *self.store.writer().map_err(write_err)?,
            &CheckpointRow {
                size,
                at_ms: now_ms,
                note: note.clone(),
                frontier: frontier.to_bytes(),
            },
        )
        .map_err(write_err)?;
        Ok(Some(CheckpointInfo {
            size: frontier.size(),
            at_ms: now_ms,
            note,
        }))
    }

    fn maintain(&self, now_ms: i64) -> Result<u64, AuditError> {
        match &self.archiver {
            Some(archiver) => archiver.run(&self.store, now_ms).map_err(write_err),
            None => Ok(0),
        }
    }
}
