//! The disk queue of `capture`: every captured notification is written here before it is sent,
//! and leaves only once the relay has answered 202 (or refused it for good).
//!
//! Layout of the spool directory (mode 0700):
//!
//! - `00000000000000000042.json`: one item, named by its sequence number (20 digits, so names
//!   sort as numbers); items are sent in that order. Each is written to a temporary file, synced
//!   and linked into place ([`crate::crypto::files::write_new`]), then the directory is synced:
//!   a crash leaves the whole item or none.
//! - `.tmp-…`: a write that a crash interrupted; ignored and removed when the spool opens.
//! - `rejected.jsonl`: items the relay refused (a 4xx other than 429), one JSON object a line with
//!   the status and the relay's detail, so one bad item never blocks the queue; it is rotated to
//!   `rejected.jsonl.1` past [`MAX_REJECTED_BYTES`].
//! - `lock`: held (flock) by the running `capture`, so two agents never share a spool.
//!
//! The spool is bounded: past `max_spooled` items the oldest are dropped.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// The file refused items are moved to.
pub const REJECTED_FILE: &str = "rejected.jsonl";
/// Past this size the rejected file is rotated (one previous file is kept).
pub const MAX_REJECTED_BYTES: u64 = 1024 * 1024;
/// Digits of an item's file name.
const SEQ_DIGITS: usize = 20;

/// What can go wrong with the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file or directory operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another `capture` holds the spool's lock.
    #[error("spool {0} is in use by another `beepmyphone capture`")]
    Locked(String),
    /// An item could not be encoded.
    #[error("cannot encode a spool item: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What [`Spool::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed {
    /// The new item's sequence number.
    pub seq: u64,
    /// The oldest items dropped to make room.
    pub dropped: Vec<u64>,
}

/// The head of the spool as [`Spool::head`] reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<T> {
    /// Its sequence number.
    pub seq: u64,
    /// The item.
    pub item: T,
}

/// The on-disk queue (see the module documentation).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Sequence numbers of the items on disk, oldest first.
    seqs: VecDeque<u64>,
    /// The next sequence number.
    next: u64,
    /// Most items kept.
    max: usize,
    /// The lock, held while the spool is open.
    _lock: fs::File,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`, keeping at most `max` items (at least 1).
    /// Interrupted writes are removed; other files that are not items are left alone.
    pub fn open(dir: &Path, max: usize) -> Result<Self, SpoolError> {
        crate::cli::client::create_private_dir(dir).map_err(io_error(dir))?;
        let lock = lock(dir)?;
        let mut seqs = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp-") {
                // Best effort: an interrupted write is never read, whether or not it goes.
                let _ = fs::remove_file(entry.path());
            } else if let Some(seq) = parse_name(name) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let next = seqs.last().map_or(1, |last| last.saturating_add(1));
        Ok(Self {
            dir: dir.to_path_buf(),
            seqs: seqs.into(),
            next,
            max: max.max(1),
            _lock: lock,
        })
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Appends `item` durably (written, synced, in place, directory synced) before returning;
    /// drops the oldest items first if the spool is full.
    pub fn push<T: Serialize>(&mut self, item: &T) -> Result<Pushed, SpoolError> {
        let bytes = serde_json::to_vec(item)?;
        let mut dropped = Vec::new();
        while self.seqs.len() >= self.max {
            let Some(oldest) = self.seqs.pop_front() else {
                break;
            };
            self.unlink(oldest)?;
            dropped.push(oldest);
        }
        let seq = self.next;
        let path = self.path(seq);
        crate::crypto::files::write_new(&path, &bytes).map_err(io_error(&path))?;
        self.next = seq.saturating_add(1);
        self.seqs.push_back(seq);
        Ok(Pushed { seq, dropped })
    }

    /// The oldest item. One that cannot be read as a `T` (damaged on disk) is moved to the
    /// rejected file, and the next one is tried; the second value lists those.
    pub fn head<T: DeserializeOwned>(&mut self) -> Result<(Option<Head<T>>, Vec<u64>), SpoolError> {
        let mut damaged = Vec::new();
        while let Some(&seq) = self.seqs.front() {
            let path = self.path(seq);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.seqs.pop_front(); // removed by hand; nothing to send
                    continue;
                }
                Err(e) => return Err(io_error(&path)(e)),
            };
            match serde_json::from_slice(&bytes) {
                Ok(item) => return Ok((Some(Head { seq, item }), damaged)),
                Err(e) => {
                    let raw = Value::String(String::from_utf8_lossy(&bytes).into_owned());
                    self.reject_raw(seq, None, &format!("unreadable spool item: {e}"), raw)?;
                    damaged.push(seq);
                }
            }
        }
        Ok((None, damaged))
    }

    /// Removes an item that the relay accepted (nothing happens if it is gone already).
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.seqs.retain(|&s| s != seq);
        self.unlink(seq)
    }

    /// Moves an item the relay refused to the rejected file, with the status and its detail.
    pub fn reject<T: Serialize>(
        &mut self,
        seq: u64,
        item: &T,
        status: u16,
        detail: &str,
    ) -> Result<(), SpoolError> {
        let item = serde_json::to_value(item)?;
        self.reject_raw(seq, Some(status), detail, item)
    }

    fn reject_raw(
        &mut self,
        seq: u64,
        status: Option<u16>,
        detail: &str,
        item: Value,
    ) -> Result<(), SpoolError> {
        let line = json!({
            "seq": seq,
            "rejectedAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "status": status,
            "detail": detail,
            "item": item,
        });
        let path = self.dir.join(REJECTED_FILE);
        if fs::metadata(&path).is_ok_and(|m| m.len() > MAX_REJECTED_BYTES) {
            let old = self.dir.join(format!("{REJECTED_FILE}.1"));
            fs::rename(&path, &old).map_err(io_error(&path))?;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(&path))?;
        let mut text = line.to_string();
        text.push('\n');
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_error(&path))?;
        self.remove(seq)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:0SEQ_DIGITS$}.json"))
    }

    fn unlink(&self, seq: u64) -> Result<(), SpoolError> {
        let path = self.path(seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&path)(e)),
        }
    }
}

/// The sequence number of an item's file name (`NNNNNNNNNNNNNNNNNNNN.json`).
fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != SEQ_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An exclusive lock on `dir/lock`, held until the file is dropped; refused if another process
/// holds it.
fn lock(dir: &Path) -> Result<fs::File, SpoolError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error(&path))?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(SpoolError::Locked(dir.display().to_string()));
        }
        return Err(io_error(&path)(e));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(spool: &Spool) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(spool.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        names
    }

    fn head(spool: &mut Spool) -> Option<(u64, String)> {
        spool.head::<String>().unwrap().0.map(|h| (h.seq, h.item))
    }

    fn rejected(dir: &Path) -> Vec<Value> {
        fs::read_to_string(dir.join(REJECTED_FILE))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn items_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let mut spool = Spool::open(&path, 100).unwrap();
        assert!(spool.is_empty());
        for text in ["one", "two", "three"] {
            spool.push(&text).unwrap();
        }
        assert_eq!(head(&mut spool), Some((1, "one".into())));
        spool.remove(1).unwrap();
        assert_eq!(head(&mut spool), Some((2, "two".into())));
        drop(spool);

        let mut spool = Spool::open(&path, 100).unwrap();
        assert_eq!(spool.len(), 2);
        assert_eq!(head(&mut spool), Some((2, "two".into())));
        // Numbering goes on after the newest item, so order holds across restarts.
        assert_eq!(spool.push(&"four").unwrap().seq, 4);
        spool.remove(2).unwrap();
        spool.remove(2).unwrap(); // twice is fine
        assert_eq!(head(&mut spool), Some((3, "three".into())));
        spool.remove(3).unwrap();
        assert_eq!(head(&mut spool), Some((4, "four".into())));
        spool.remove(4).unwrap();
        assert_eq!(head(&mut spool), None);
        assert!(items(&spool).is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn names_sort_as_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 100).unwrap();
        spool.next = 9;
        spool.push(&"nine").unwrap();
        spool.push(&"ten").unwrap();
        assert_eq!(
            items(&spool),
            ["00000000000000000009.json", "00000000000000000010.json"]
        );
        drop(spool);
        let mut spool = Spool::open(dir.path(), 100).unwrap();
        assert_eq!(head(&mut spool), Some((9, "nine".into())));
    }

    #[test]
    fn an_interrupted_write_is_ignored_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 100).unwrap();
        spool.push(&"kept").unwrap();
        drop(spool);
        // What a crash in the middle of write_new leaves: a partial temporary file.
        fs::write(dir.path().join(".tmp-01jabc"), b"{\"tit").unwrap();
        // And files that are not items at all.
        fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        fs::write(dir.path().join("123.json"), b"\"short name\"").unwrap();
        let mut spool = Spool::open(dir.path(), 100).unwrap();
        assert_eq!(spool.len(), 1);
        assert_eq!(head(&mut spool), Some((1, "kept".into())));
        assert!(!dir.path().join(".tmp-01jabc").exists());
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(spool.push(&"next").unwrap().seq, 2);
    }

    #[test]
    fn a_full_spool_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 3).unwrap();
        for text in ["a", "b", "c"] {
            assert!(spool.push(&text).unwrap().dropped.is_empty());
        }
        assert_eq!(
            spool.push(&"d").unwrap(),
            Pushed {
                seq: 4,
                dropped: vec![1]
            }
        );
        assert_eq!(spool.len(), 3);
        assert_eq!(items(&spool).len(), 3);
        assert_eq!(head(&mut spool), Some((2, "b".into())));
        drop(spool);
        // A smaller bound on a fuller spool trims it on the next push.
        let mut spool = Spool::open(dir.path(), 1).unwrap();
        assert_eq!(spool.push(&"e").unwrap().dropped, vec![2, 3, 4]);
        assert_eq!(head(&mut spool), Some((5, "e".into())));
    }

    #[test]
    fn refused_and_damaged_items_move_to_the_rejected_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 100).unwrap();
        spool.push(&"bad").unwrap();
        spool.push(&"good").unwrap();
        spool
            .reject(1, &"bad", 422, "title: must be 1 to 256 characters long")
            .unwrap();
        assert_eq!(head(&mut spool), Some((2, "good".into())));
        let lines = rejected(dir.path());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["seq"], 1);
        assert_eq!(lines[0]["status"], 422);
        assert_eq!(lines[0]["item"], "bad");
        assert!(lines[0]["detail"].as_str().unwrap().contains("title"));

        // Damage on disk: the item is set aside and the next one comes up.
        spool.push(&"after").unwrap();
        fs::write(dir.path().join("00000000000000000002.json"), b"{not json").unwrap();
        let (head, damaged) = spool.head::<String>().unwrap();
        assert_eq!(head.map(|h| h.item).as_deref(), Some("after"));
        assert_eq!(damaged, vec![2]);
        let lines = rejected(dir.path());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["item"], "{not json");
        assert_eq!(lines[1]["status"], Value::Null);
        assert_eq!(items(&spool), ["00000000000000000003.json"]);
    }

    #[test]
    fn the_rejected_file_is_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 100).unwrap();
        let big = "x".repeat(usize::try_from(MAX_REJECTED_BYTES).unwrap() + 1);
        fs::write(dir.path().join(REJECTED_FILE), big).unwrap();
        spool.push(&"bad").unwrap();
        spool.reject(1, &"bad", 400, "no").unwrap();
        assert_eq!(rejected(dir.path()).len(), 1);
        assert!(dir.path().join(format!("{REJECTED_FILE}.1")).exists());
    }

    #[test]
    fn a_second_agent_cannot_open_the_same_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 10).unwrap();
        match Spool::open(dir.path(), 10) {
            Err(SpoolError::Locked(_)) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(spool);
        Spool::open(dir.path(), 10).unwrap();
    }

    #[test]
    fn an_item_removed_by_hand_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 10).unwrap();
        spool.push(&"gone").unwrap();
        spool.push(&"here").unwrap();
        fs::remove_file(dir.path().join("00000000000000000001.json")).unwrap();
        assert_eq!(head(&mut spool), Some((2, "here".into())));
        assert_eq!(spool.len(), 1);
    }
}
