//! Retention: old records move from the database to compressed archive files, and archives past
//! the retention period are deleted, oldest first.
//!
//! An archive is a gzip'd JSON-lines file, `audit-<first seq>-<last seq>.jsonl.gz`, holding one
//! segment of the log that ends at a checkpoint:
//!
//! - a `start` line: the tree's size before the segment, its frontier, and the signed checkpoint
//!   of that size (none for the first segment), so the archive can be verified on its own;
//! - one `record` line per record, every stored column (the sealed part still sealed, base64);
//! - an `end` line: the signed checkpoint the segment ends at.
//!
//! The file is written whole (a temporary file, synced, then linked into place) before its rows
//! leave the database, in one transaction; a crash between the two leaves both, and the next run
//! finds the archive in place and only deletes the rows. The newest record always stays in the
//! database, so the writer's position never depends on the archives.

use crate::store::WriteTransaction;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::store::audit::{self as rows, AuditRow};
use crate::store::{Store, StoreError};

/// Most records in one archive.
pub const MAX_SEGMENT: i64 = 100_000;

/// One line of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// Where the segment starts.
    Start {
        /// Records before the segment.
        size: u64,
        /// The tree's frontier at `size` (hex of `Frontier::to_bytes`).
        frontier: String,
        /// The signed checkpoint of `size` (none when `size` is 0).
        checkpoint: Option<String>,
    },
    /// One record.
    Record(ArchivedRow),
    /// Where the segment ends.
    End {
        /// Records up to the end of the segment.
        size: u64,
        /// The signed checkpoint of `size`.
        checkpoint: String,
    },
}

/// A record as archived: every column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRow {
    seq: i64,
    at_ms: i64,
    actor_kind: String,
    actor_id: Option<String>,
    action: String,
    subject: Option<String>,
    outcome: String,
    request_id: Option<String>,
    trace_id: Option<String>,
    key_id: Option<i64>,
    /// Base64.
    sealed: Option<String>,
    /// Hex.
    leaf_hash: String,
}

impl From<&AuditRow> for ArchivedRow {
    fn from(row: &AuditRow) -> Self {
        Self {
            seq: row.seq,
            at_ms: row.at_ms,
            actor_kind: row.actor_kind.clone(),
            actor_id: row.actor_id.clone(),
            action: row.action.clone(),
            subject: row.subject.clone(),
            outcome: row.outcome.clone(),
            request_id: row.request_id.clone(),
            trace_id: row.trace_id.clone(),
            key_id: row.key_id,
            sealed: row
                .sealed
                .as_ref()
                .map(|s| base64::engine::general_purpose::STANDARD.encode(s)),
            leaf_hash: hex::encode(&row.leaf_hash),
        }
    }
}

impl ArchivedRow {
    /// The row it was (an error names what does not decode).
    pub fn to_row(&self) -> Result<AuditRow, String> {
        let sealed = match &self.sealed {
            Some(text) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("record {}: sealed: {e}", self.seq))?,
            ),
            None => None,
        };
        Ok(AuditRow {
            seq: self.seq,
            at_ms: self.at_ms,
            actor_kind: self.actor_kind.clone(),
            actor_id: self.actor_id.clone(),
            action: self.action.clone(),
            subject: self.subject.clone(),
            outcome: self.outcome.clone(),
            request_id: self.request_id.clone(),
            trace_id: self.trace_id.clone(),
            key_id: self.key_id,
            sealed,
            leaf_hash: hex::decode(&self.leaf_hash)
                .map_err(|e| format!("record {}: leaf hash: {e}", self.seq))?,
        })
    }
}

/// An archive file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFile {
    /// Its path.
    pub path: PathBuf,
    /// Its first record.
    pub first: i64,
    /// Its last record.
    pub last: i64,
}

/// The archives in `dir`, oldest first (none when the directory does not exist).
pub fn list(dir: &Path) -> std::io::Result<Vec<ArchiveFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(range) = name
            .strip_prefix("audit-")
            .and_then(|n| n.strip_suffix(".jsonl.gz"))
        else {
            continue;
        };
        let Some((first, last)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
            out.push(ArchiveFile {
                path: entry.path(),
                first,
                last,
            });
        }
    }
    out.sort_by_key(|a| a.first);
    Ok(out)
}

/// Reads an archive's lines.
pub fn read(path: &Path) -> Result<Vec<Line>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    text.as_bytes()
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            serde_json::from_str(&line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn file_name(first: i64, last: i64) -> String {
    format!("audit-{first:012}-{last:012}.jsonl.gz")
}

/// Moves old records to archives and deletes archives past retention.
#[derive(Debug, Clone)]
pub struct Archiver {
    /// Where archives go.
    pub dir: PathBuf,
    /// Records older than this move out of the database (ms; 0: never).
    pub archive_after_ms: i64,
    /// Archives whose newest record is older than this are deleted (ms; 0: never).
    pub retention_ms: i64,
}

impl Archiver {
    /// From the settings.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let ms = |days: u64| i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        Self {
            dir: settings.audit_archive_dir(),
            archive_after_ms: ms(settings.audit.archive_after_days),
            retention_ms: ms(settings.audit.retention_days),
        }
    }

    /// One housekeeping pass: archives every segment that is due, then deletes expired
    /// archives. Returns the records archived. Blocking.
    pub fn run(&self, store: &Store, now_ms: i64) -> Result<u64, StoreError> {
        let mut moved = 0;
        if self.archive_after_ms > 0 {
            while let Some(n) =
                self.archive_one(store, now_ms.saturating_sub(self.archive_after_ms))?
            {
                moved += n;
            }
        }
        if self.retention_ms > 0 {
            self.expire(now_ms.saturating_sub(self.retention_ms))?;
        }
        Ok(moved)
    }

    /// Archives the oldest segment whose records are all older than `cutoff_ms`, ending at a
    /// checkpoint; `None` when there is none.
    fn archive_one(&self, store: &Store, cutoff_ms: i64) -> Result<Option<u64>, StoreError> {
        let mut conn = store.conn()?;
        let Some(first) = rows::first_seq(&mut conn)? else {
            return Ok(None);
        };
        let last = rows::last_seq(&mut conn)?;
        // The newest old record, never the newest record, at most a segment.
        let mut end = (last - 1).min(first - 1 + MAX_SEGMENT);
        let old: Vec<AuditRow> = rows::rows_after(&mut conn, first - 1, end - first + 1)?
            .into_iter()
            .take_while(|r| r.at_ms < cutoff_ms)
            .collect();
        end = match old.last() {
            Some(row) => row.seq,
            None => return Ok(None),
        };
        let Some(stop) = rows::checkpoint_at_most(&mut conn, end)? else {
            return Ok(None);
        };
        if stop.size < first {
            return Ok(None);
        }
        let start_size = first - 1;
        let start = if start_size == 0 {
            None
        } else {
            match rows::checkpoint_at_most(&mut conn, start_size)? {
                Some(row) if row.size == start_size => Some(row),
                // The segment before was archived at a checkpoint that is gone: nothing to
                // anchor this one to, so it stays.
                _ => {
                    return Err(StoreError::Other(format!(
                        "no checkpoint of size {start_size} to start an archive at"
                    )))
                }
            }
        };
        let records: Vec<&AuditRow> = old.iter().filter(|r| r.seq <= stop.size).collect();
        let mut lines = vec![Line::Start {
            size: u64::try_from(start_size).unwrap_or(0),
            frontier: start
                .as_ref()
                .map(|s| hex::encode(&s.frontier))
                .unwrap_or_else(|| hex::encode(super::merkle::Frontier::new().to_bytes())),
            checkpoint: start.map(|s| s.note),
        }];
        lines.extend(records.iter().map(|r| Line::Record(ArchivedRow::from(*r))));
        lines.push(Line::End {
            size: u64::try_from(stop.size).unwrap_or(0),
            checkpoint: stop.note.clone(),
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for line in &lines {
            let text = serde_json::to_string(line).map_err(|e| StoreError::Other(e.to_string()))?;
            gz.write_all(text.as_bytes())
                .and_then(|()| gz.write_all(b"\n"))
                .map_err(|e| StoreError::Other(e.to_string()))?;
        }
        let bytes = gz.finish().map_err(|e| StoreError::Other(e.to_string()))?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| StoreError::Other(format!("{}: {e}", self.dir.display())))?;
        let path = self.dir.join(file_name(first, stop.size));
        match crate::crypto::files::write_new(&path, &bytes) {
            Ok(()) => {}
            // A crash after the file and before the delete: the file is in place already.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::Other(format!("{}: {e}", path.display()))),
        }
        let size = stop.size;
        let deleted = store
            .writer()?
            .immediate_transaction(|conn| rows::delete_through(conn, size))?;
        Ok(Some(deleted as u64))
    }

    /// Deletes archives whose newest record is older than `cutoff_ms`, oldest first, stopping at
    /// the first that is not (so what is left is always one unbroken run of the log).
    fn expire(&self, cutoff_ms: i64) -> Result<(), StoreError> {
        let other = |e: std::io::Error| StoreError::Other(e.to_string());
        for archive in list(&self.dir).map_err(other)? {
            let lines = read(&archive.path).map_err(StoreError::Other)?;
            let newest = lines.iter().rev().find_map(|l| match l {
                Line::Record(r) => Some(r.at_ms),
                _ => None,
            });
            if newest.is_some_and(|at| at < cutoff_ms) {
                std::fs::remove_file(&archive.path).map_err(other)?;
            } else {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(seq: i64) -> AuditRow {
        AuditRow {
            seq,
            at_ms: 1,
            actor_kind: "system".into(),
            actor_id: None,
            action: "config.loaded".into(),
            subject: None,
            outcome: "ok".into(),
            request_id: None,
            trace_id: None,
            key_id: Some(4),
            sealed: Some(vec![1, 2, 3]),
            leaf_hash: vec![9; 32],
        }
    }

    #[test]
    fn rows_round_trip_and_bad_ones_are_named() {
        let archived = ArchivedRow::from(&row(3));
        assert_eq!(archived.to_row().unwrap(), row(3));
        let bad_sealed = ArchivedRow {
            sealed: Some("not base64!".into()),
            ..archived.clone()
        };
        assert!(bad_sealed
            .to_row()
            .unwrap_err()
            .contains("record 3: sealed"));
        let bad_leaf = ArchivedRow {
            leaf_hash: "zz".into(),
            ..archived
        };
        assert!(bad_leaf
            .to_row()
            .unwrap_err()
            .contains("record 3: leaf hash"));
    }

    #[test]
    fn only_archive_files_are_listed_in_order_and_bad_ones_do_not_read() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("none")).unwrap().is_empty());
        for name in [
            "audit-000000000011-000000000020.jsonl.gz",
            "audit-000000000001-000000000010.jsonl.gz",
            "audit-x-y.jsonl.gz",
            "audit-1.jsonl.gz",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"not gzip").unwrap();
        }
        let found = list(dir.path()).unwrap();
        let ranges: Vec<(i64, i64)> = found.iter().map(|a| (a.first, a.last)).collect();
        assert_eq!(ranges, [(1, 10), (11, 20)]);
        assert!(read(&found[0].path).is_err(), "not gzip");
        assert!(read(&dir.path().join("gone.jsonl.gz")).is_err());
        let path = dir.path().join("bad-line.jsonl.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"{\"type\":\"end\",\"size\":1,\"checkpoint\":\"x\"}\n{oops\n")
            .unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        assert!(read(&path).unwrap_err().contains("line 2"));
        assert_eq!(file_name(1, 10), "audit-000000000001-000000000010.jsonl.gz");
    }

    #[test]
    fn nothing_is_archived_when_both_periods_are_off_or_nothing_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::config::StorageSettings::default()).unwrap();
        let off = Archiver {
            dir: dir.path().join("a"),
            archive_after_ms: 0,
            retention_ms: 0,
        };
        assert_eq!(off.run(&store, 1_000).unwrap(), 0);
        let on = Archiver {
            archive_after_ms: 10,
            retention_ms: 20,
            ..off
        };
        // An empty log: nothing to archive, no directory to expire from.
        assert_eq!(on.run(&store, 1_000).unwrap(), 0);
        let mut settings = crate::config::Settings::default();
        settings.storage.data_dir = dir.path().to_path_buf();
        settings.audit.archive_after_days = 2;
        let from = Archiver::from_settings(&settings);
        assert_eq!(from.archive_after_ms, 2 * 86_400_000);
        assert_eq!(from.dir, dir.path().join(crate::config::ARCHIVE_DIR));
    }
}
