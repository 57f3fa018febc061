//! Verification of the whole audit log, archives included, against its signed checkpoints; and
//! inclusion proofs.
//!
//! [`verify`] reads every checkpoint (the checkpoint file and the `audit_checkpoints` table),
//! checks each signature with the verifier key, then walks every record in order (the archives,
//! oldest first, then the table), recomputing each leaf hash from the record's columns and the
//! tree from the leaves. It stops at the first thing that does not hold:
//!
//! - a checkpoint whose signature does not verify, or whose origin is not this log's (forged);
//! - two checkpoints of one size with different roots (a fork);
//! - a record whose seq is not the next one (deleted, or the table was cut);
//! - a record whose columns do not hash to its stored leaf hash (changed, or swapped with
//!   another: the seq is hashed too);
//! - a tree whose root at a checkpoint's size is not the checkpoint's (a record changed and its
//!   stored leaf hash rewritten to match: the failure names the span between the two checkpoints);
//! - fewer records than the largest checkpoint covers (a truncated tail).
//!
//! Records after the last checkpoint are checked for their leaf hashes and order only; the report
//! says how many there are.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::store::Db;
use serde::Serialize;

use super::archive::{self, Line};
use super::merkle::{self, Frontier, Hash};
use super::note::{split_notes, Checkpoint, NoteVerifier};
use super::record;
use crate::store::audit::{self as rows, AuditRow};
use crate::store::StoreError;

/// What verification needs besides the database.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The checkpoint file.
    pub checkpoint_file: PathBuf,
    /// The archive directory.
    pub archive_dir: PathBuf,
}

impl Sources {
    /// The files `settings` name.
    pub fn of(settings: &crate::config::Settings) -> Self {
        Self {
            checkpoint_file: settings.audit_checkpoint_file(),
            archive_dir: settings.audit_archive_dir(),
        }
    }
}

/// The outcome of the relay's last verification (`POST /api/v1/audit/verify`), for the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// When it ran (RFC 3339).
    pub at: String,
    /// Whether the log held.
    pub intact: bool,
    /// What held (when intact).
    #[schema(value_type = Option<Object>)]
    pub report: Option<Report>,
    /// What did not hold (when not): the first bad record or checkpoint.
    pub failure: Option<String>,
}

/// The last [`Verification`], kept in memory, and whether one is running.
#[derive(Debug, Default)]
pub struct LastVerification(
    std::sync::Mutex<Option<Verification>>,
    std::sync::atomic::AtomicBool,
);

/// A running verification; dropping it lets the next one start.
#[derive(Debug)]
pub struct Running<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl LastVerification {
    /// Marks a verification as running, or `None` when one already is (one at a time: each
    /// reads the whole log).
    pub fn start(&self) -> Option<Running<'_>> {
        use std::sync::atomic::Ordering;
        self.1
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Running(&self.1))
    }

    /// The last verification, if one ran since start.
    pub fn get(&self) -> Option<Verification> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Keeps `verification` as the last.
    pub fn set(&self, verification: Verification) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(verification);
        }
    }
}

/// What held.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Records checked (archives and database).
    pub records: u64,
    /// The first record checked (1 unless old archives were deleted by retention).
    pub first: u64,
    /// Archive files read.
    pub archives: usize,
    /// Distinct checkpoints whose signatures were checked.
    pub checkpoints: usize,
    /// The largest checkpoint's size.
    pub checkpoint_size: u64,
    /// When it was signed (epoch ms).
    pub checkpoint_ms: i64,
    /// Records after it (checked for order and leaf hashes; not yet signed for).
    pub uncovered: u64,
}

/// What did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The first bad record, and what is wrong with it.
    #[error("record {seq}: {why}")]
    Record {
        /// Its seq.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// A checkpoint that is forged or contradicts another.
    #[error("checkpoint {what}: {why}")]
    Checkpoint {
        /// Which (its source and size).
        what: String,
        /// What is wrong.
        why: String,
    },
    /// The log could not be read at all.
    #[error("{0}")]
    Unreadable(String),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Unreadable(e.to_string())
    }
}

struct Known {
    root: Hash,
    time_ms: i64,
    source: String,
}

/// Opens one checkpoint note with `verifier`, checking that it is this log's.
fn open_checkpoint(verifier: &NoteVerifier, note: &str, what: &str) -> Result<Checkpoint, Failure> {
    let bad = |why: String| Failure::Checkpoint {
        what: what.to_owned(),
        why,
    };
    let text = verifier
        .open(note)
        .map_err(|e| bad(format!("{e} (forged, or signed by another key)")))?;
    let checkpoint = Checkpoint::parse(text).map_err(|e| bad(e.to_string()))?;
    if checkpoint.origin != verifier.name() {
        return Err(bad(format!(
            "its origin is {:?}, not this log's {:?}",
            checkpoint.origin,
            verifier.name()
        )));
    }
    Ok(checkpoint)
}

fn learn(
    known: &mut BTreeMap<u64, Known>,
    checkpoint: Checkpoint,
    source: String,
) -> Result<(), Failure> {
    match known.get(&checkpoint.size) {
        Some(seen) if seen.root != checkpoint.root => Err(Failure::Checkpoint {
            what: source,
            why: format!(
                "its root for {} records differs from that of {} (the log was forked or rewritten)",
                checkpoint.size, seen.source
            ),
        }),
        Some(_) => Ok(()),
        None => {
            known.insert(
                checkpoint.size,
                Known {
                    root: checkpoint.root,
                    time_ms: checkpoint.time_ms,
                    source,
                },
            );
            Ok(())
        }
    }
}

/// Every checkpoint of the file and the table, signatures checked.
fn checkpoints(
    conn: &mut Db,
    verifier: &NoteVerifier,
    sources: &Sources,
) -> Result<BTreeMap<u64, Known>, Failure> {
    let mut known = BTreeMap::new();
    let file = match std::fs::read(&sources.checkpoint_file) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Failure::Unreadable(format!(
                "{}: {e}",
                sources.checkpoint_file.display()
            )))
        }
    };
    let split = split_notes(&file);
    for (i, note) in split.notes.iter().enumerate() {
        let what = format!("{} entry {}", sources.checkpoint_file.display(), i + 1);
        let checkpoint = open_checkpoint(verifier, note, &what)?;
        learn(&mut known, checkpoint, what)?;
    }
    let from_file = known.len();
    for row in rows::checkpoints(conn)? {
        let what = format!("of size {} in the database", row.size);
        let checkpoint = open_checkpoint(verifier, &row.note, &what)?;
        if i64::try_from(checkpoint.size).ok() != Some(row.size) {
            return Err(Failure::Checkpoint {
                what,
                why: format!("the signed note says {} records", checkpoint.size),
            });
        }
        learn(&mut known, checkpoint, what)?;
    }
    if from_file == 0 && !known.is_empty() {
        return Err(Failure::Checkpoint {
            what: sources.checkpoint_file.display().to_string(),
            why: "the database has checkpoints but the checkpoint file has none (it was removed or emptied)".into(),
        });
    }
    Ok(known)
}

/// Walks the tree leaf by leaf, checking each against the checkpoints as it grows.
struct Walk<'a> {
    known: &'a BTreeMap<u64, Known>,
    frontier: Frontier,
    /// Size at the last checkpoint passed.
    checked_at: u64,
    records: u64,
    /// Every leaf, when a proof is wanted.
    leaves: Option<Vec<Hash>>,
}

impl Walk<'_> {
    fn record(&mut self, row: &AuditRow) -> Result<(), Failure> {
        let expected = self.frontier.size() + 1;
        let seq = u64::try_from(row.seq).unwrap_or(0);
        if seq != expected {
            return Err(Failure::Record {
                seq: expected,
                why: if seq > expected {
                    format!("is missing (the next record is {seq}): deleted")
                } else {
                    format!("appears again as record {seq}: records were copied or reordered")
                },
            });
        }
        let leaf = record::leaf_of(row);
        if row.leaf_hash != leaf {
            return Err(Failure::Record {
                seq,
                why:
                    "its fields do not match its leaf hash: changed, or swapped with another record"
                        .into(),
            });
        }
        self.frontier.push(leaf);
        if let Some(leaves) = &mut self.leaves {
            leaves.push(leaf);
        }
        self.records += 1;
        self.at_size()
    }

    /// Compares the root with a checkpoint of this size, if there is one.
    fn at_size(&mut self) -> Result<(), Failure> {
        let size = self.frontier.size();
        if let Some(known) = self.known.get(&size) {
            if known.root != self.frontier.root() {
                return Err(Failure::Record {
                    seq: self.checked_at + 1,
                    why: format!(
                        "records {}..{} do not hash to the checkpoint of size {size} ({}): one of them was changed, removed or reordered and its leaf hash rewritten",
                        self.checked_at + 1,
                        size,
                        known.source
                    ),
                });
            }
            self.checked_at = size;
        }
        Ok(())
    }
}

/// The outcome of a walk over the whole log.
pub struct Walked {
    /// What held.
    pub report: Report,
    /// Every leaf from the first record checked, when asked for.
    pub leaves: Option<Vec<Hash>>,
}

/// Verifies the log; with `keep_leaves`, also returns every leaf (for proofs).
pub fn walk(
    conn: &mut Db,
    verifier: &NoteVerifier,
    sources: &Sources,
    keep_leaves: bool,
) -> Result<Walked, Failure> {
    let known = checkpoints(conn, verifier, sources)?;
    let archives = archive::list(&sources.archive_dir)
        .map_err(|e| Failure::Unreadable(format!("{}: {e}", sources.archive_dir.display())))?;
    let mut walk = Walk {
        known: &known,
        frontier: Frontier::new(),
        checked_at: 0,
        records: 0,
        leaves: keep_leaves.then(Vec::new),
    };
    let mut first = 1;
    for (i, file) in archives.iter().enumerate() {
        let what = file.path.display().to_string();
        let lines = archive::read(&file.path).map_err(Failure::Unreadable)?;
        for line in lines {
            match line {
                Line::Start {
                    size,
                    frontier,
                    checkpoint,
                } => {
                    if i == 0 && size > 0 {
                        // Older archives were deleted by retention: start from this one's
                        // frontier, which its signed checkpoint vouches for.
                        let bytes = hex::decode(&frontier)
                            .map_err(|e| Failure::Unreadable(format!("{what}: frontier: {e}")))?;
                        let start = Frontier::from_bytes(&bytes)
                            .map_err(|e| Failure::Unreadable(format!("{what}: frontier: {e}")))?;
                        let note = checkpoint.ok_or_else(|| Failure::Checkpoint {
                            what: what.clone(),
                            why: "the archive starts mid-log without a checkpoint".into(),
                        })?;
                        let signed = open_checkpoint(verifier, &note, &format!("{what} (start)"))?;
                        if signed.size != size
                            || signed.root != start.root()
                            || start.size() != size
                        {
                            return Err(Failure::Checkpoint {
                                what: format!("{what} (start)"),
                                why: "the frontier does not match its signed checkpoint".into(),
                            });
                        }
                        walk.frontier = start;
                        walk.checked_at = size;
                        first = size + 1;
                        if keep_leaves {
                            return Err(Failure::Unreadable(
                                "older archives were deleted by retention: proofs need every leaf from record 1".into(),
                            ));
                        }
                    } else if size != walk.frontier.size() {
                        return Err(Failure::Record {
                            seq: walk.frontier.size() + 1,
                            why: format!(
                                "is missing: the archive {what} starts after record {size}"
                            ),
                        });
                    }
                }
                Line::Record(archived) => {
                    let row = archived.to_row().map_err(Failure::Unreadable)?;
                    walk.record(&row)?;
                }
                Line::End { size, checkpoint } => {
                    let signed = open_checkpoint(verifier, &checkpoint, &format!("{what} (end)"))?;
                    if signed.size != size
                        || size != walk.frontier.size()
                        || signed.root != walk.frontier.root()
                    {
                        return Err(Failure::Record {
                            seq: walk.checked_at + 1,
                            why: format!(
                                "the archive {what} does not hash to its own end checkpoint"
                            ),
                        });
                    }
                    walk.checked_at = size;
                }
            }
        }
    }
    const PAGE: i64 = 5_000;
    loop {
        let after = i64::try_from(walk.frontier.size()).unwrap_or(i64::MAX);
        let page = rows::rows_after(conn, after, PAGE)?;
        if page.is_empty() {
            break;
        }
        for row in &page {
            walk.record(row)?;
        }
    }
    // Rows the walk did not reach are below it: the table restarts at an earlier seq.
    let (largest, latest) = known
        .iter()
        .next_back()
        .map(|(size, k)| (*size, k.time_ms))
        .unwrap_or((0, 0));
    let size = walk.frontier.size();
    if largest > size {
        return Err(Failure::Record {
            seq: size + 1,
            why: format!(
                "is missing: the log ends at record {size}, but a checkpoint covers {largest} records (the tail was truncated)"
            ),
        });
    }
    Ok(Walked {
        report: Report {
            records: walk.records,
            first,
            archives: archives.len(),
            checkpoints: known.len(),
            checkpoint_size: largest,
            checkpoint_ms: latest,
            uncovered: size - largest,
        },
        leaves: walk.leaves,
    })
}

/// Verifies the whole log.
pub fn verify(
    conn: &mut Db,
    verifier: &NoteVerifier,
    sources: &Sources,
) -> Result<Report, Failure> {
    walk(conn, verifier, sources, false).map(|w| w.report)
}

/// An inclusion proof of one record in the tree of the latest checkpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proof {
    /// The record.
    pub seq: u64,
    /// Its leaf hash (hex).
    pub leaf_hash: String,
    /// The tree's size (the checkpoint's).
    pub tree_size: u64,
    /// The tree's root (base64, as in the checkpoint).
    pub root_hash: String,
    /// The audit path, leaf to root (hex), RFC 9162 §2.1.3.
    pub proof: Vec<String>,
    /// The signed checkpoint the root is from.
    pub checkpoint: String,
}

/// Proves that record `seq` is in the log as of its latest checkpoint (after verifying it).
pub fn prove(
    conn: &mut Db,
    verifier: &NoteVerifier,
    sources: &Sources,
    seq: u64,
) -> Result<Proof, Failure> {
    let walked = walk(conn, verifier, sources, true)?;
    let leaves = walked.leaves.unwrap_or_default();
    let size = walked.report.checkpoint_size;
    if seq == 0 || seq > size {
        return Err(Failure::Unreadable(format!(
            "record {seq} is not covered by a checkpoint yet (the latest covers {size} records); try again after the next one"
        )));
    }
    let covered = leaves
        .get(..usize::try_from(size).unwrap_or(usize::MAX))
        .ok_or_else(|| Failure::Unreadable("the leaves do not reach the checkpoint".into()))?;
    let path = merkle::inclusion_proof(covered, seq - 1)
        .map_err(|e| Failure::Unreadable(e.to_string()))?;
    let note = checkpoint_note(conn, sources, size)?;
    let root = merkle::root(covered);
    use base64::Engine;
    Ok(Proof {
        seq,
        leaf_hash: hex::encode(covered[usize::try_from(seq - 1).unwrap_or(0)]),
        tree_size: size,
        root_hash: base64::engine::general_purpose::STANDARD.encode(root),
        proof: path.iter().map(hex::encode).collect(),
        checkpoint: note,
    })
}

/// The note of the checkpoint of `size` (the table's, else the file's).
fn checkpoint_note(conn: &mut Db, sources: &Sources, size: u64) -> Result<String, Failure> {
    let at = i64::try_from(size).unwrap_or(i64::MAX);
    if let Some(row) = rows::checkpoint_at_most(conn, at)?.filter(|r| r.size == at) {
        return Ok(row.note);
    }
    let file = std::fs::read_to_string(&sources.checkpoint_file)
        .map_err(|e| Failure::Unreadable(e.to_string()))?;
    split_notes(&file)
        .notes
        .iter()
        .rev()
        .find(|n| n.lines().nth(1) == Some(size.to_string().as_str()))
        .map(|n| (*n).to_owned())
        .ok_or_else(|| Failure::Unreadable(format!("no checkpoint note of size {size}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn one_verification_runs_at_a_time_and_the_last_result_is_kept() {
        let last = LastVerification::default();
        assert_eq!(last.get(), None);
        let running = last.start().expect("none is running");
        assert!(last.start().is_none(), "a second waits for the first");
        drop(running);
        assert!(last.start().is_some());
        let result = Verification {
            at: "1970-01-01T00:00:00.000Z".into(),
            intact: false,
            report: None,
            failure: Some("record 3: changed".into()),
        };
        last.set(result.clone());
        assert_eq!(last.get(), Some(result));
    }
    use beepmyphone_actors::ports::{Action, AuditEvent, AuditLog, Outcome};
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::audit::log::SqliteAuditLog;
    use crate::audit::note::NoteSigner;
    use crate::audit::signing;
    use crate::store::Store;

    struct Fixture {
        dir: tempfile::TempDir,
        store: Store,
        log: SqliteAuditLog,
        sources: Sources,
        verifier: NoteVerifier,
        signer: NoteSigner,
    }

    /// A log of `n` records with a checkpoint every `every`.
    fn fixture(n: u64, every: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::config::StorageSettings::default())
            .unwrap()
            .with_cipher(crate::crypto::ring::tests::test_cipher());
        let keys = dir.path().join("keys");
        let signer = signing::load_or_create(&keys).unwrap();
        let verifier = signer.verifier().unwrap();
        let file = dir.path().join("audit-checkpoints.log");
        let log = SqliteAuditLog::open(
            store.clone(),
            signing::load(&keys).unwrap(),
            file.clone(),
            None,
        )
        .unwrap();
        for i in 1..=n {
            let mut event = AuditEvent::system(Action::IpBlocked, Outcome::Ok);
            event.ip = Some(format!("192.0.2.{i}"));
            log.append(&[event]).unwrap();
            if i % every == 0 {
                log.checkpoint(i64::try_from(i).unwrap()).unwrap();
            }
        }
        Fixture {
            sources: Sources {
                checkpoint_file: file,
                archive_dir: dir.path().join("audit-archive"),
            },
            dir,
            store,
            log,
            verifier,
            signer,
        }
    }

    fn run(f: &Fixture) -> Result<Report, Failure> {
        let mut conn = f.store.conn().unwrap();
        verify(&mut conn, &f.verifier, &f.sources)
    }

    fn append_note(f: &Fixture, checkpoint: &Checkpoint) {
        let note = f.signer.sign(&checkpoint.to_text()).unwrap();
        crate::audit::log::append_note(&f.sources.checkpoint_file, &note).unwrap();
    }

    #[test]
    fn an_untouched_log_verifies_and_reports_what_it_covers() {
        let f = fixture(7, 3);
        let report = run(&f).unwrap();
        assert_eq!(
            report,
            Report {
                records: 7,
                first: 1,
                archives: 0,
                checkpoints: 2,
                checkpoint_size: 6,
                checkpoint_ms: 6,
                uncovered: 1,
            }
        );
        assert_eq!(f.log.size().unwrap(), 7);
        // Nothing new since the last checkpoint: none is made.
        f.log.checkpoint(100).unwrap();
        assert!(f.log.checkpoint(101).unwrap().is_none());
        // An empty log verifies too, with nothing to say.
        let empty = fixture(0, 1);
        assert_eq!(run(&empty).unwrap().records, 0);
        assert!(empty.log.checkpoint(1).unwrap().is_none());
    }

    #[test]
    fn checkpoints_of_another_origin_or_a_fork_are_refused() {
        let f = fixture(4, 2);
        let mut conn = f.store.conn().unwrap();
        let root = rows::last_checkpoint(&mut conn).unwrap().unwrap();
        drop(conn);
        let signed = Checkpoint::parse(f.verifier.open(&root.note).unwrap()).unwrap();
        // Signed by this key, for another log.
        let other = fixture(4, 2);
        append_note(
            &other,
            &Checkpoint {
                origin: "beepmyphone.audit/elsewhere".into(),
                ..signed.clone()
            },
        );
        let Err(Failure::Checkpoint { why, .. }) = run(&Fixture {
            signer: signing::load(&f.dir.path().join("keys")).unwrap(),
            ..other
        }) else {
            panic!("another origin verified")
        };
        assert!(why.contains("not this log's"), "{why}");
        // Two roots for one size: a fork.
        append_note(
            &f,
            &Checkpoint {
                root: [7; 32],
                ..signed.clone()
            },
        );
        let Err(Failure::Checkpoint { why, .. }) = run(&f) else {
            panic!("a fork verified")
        };
        assert!(why.contains("forked"), "{why}");
    }

    #[test]
    fn a_table_checkpoint_must_say_its_own_size_and_the_file_must_be_readable() {
        let f = fixture(4, 2);
        {
            let mut conn = f.store.conn().unwrap();
            conn.batch_execute("UPDATE audit_checkpoints SET size = 3 WHERE size = 4")
                .unwrap();
        }
        let Err(Failure::Checkpoint { why, .. }) = run(&f) else {
            panic!("a mislabelled checkpoint verified")
        };
        assert!(why.contains("says 4 records"), "{why}");
        let g = fixture(2, 2);
        std::fs::remove_file(&g.sources.checkpoint_file).unwrap();
        std::fs::create_dir(&g.sources.checkpoint_file).unwrap();
        assert!(matches!(run(&g), Err(Failure::Unreadable(_))));
        // A failure reads as what it names.
        let failure = Failure::Record {
            seq: 3,
            why: "is missing".into(),
        };
        assert_eq!(failure.to_string(), "record 3: is missing");
        assert!(Failure::from(StoreError::Other("x".into()))
            .to_string()
            .contains('x'));
    }

    #[test]
    fn proofs_cover_checkpointed_records_only_and_verify() {
        let f = fixture(5, 4);
        let mut conn = f.store.conn().unwrap();
        let proof = prove(&mut conn, &f.verifier, &f.sources, 3).unwrap();
        assert_eq!(proof.tree_size, 4);
        let checkpoint = Checkpoint::parse(f.verifier.open(&proof.checkpoint).unwrap()).unwrap();
        let hash = |s: &str| -> Hash { hex::decode(s).unwrap().try_into().unwrap() };
        let path: Vec<Hash> = proof.proof.iter().map(|p| hash(p)).collect();
        assert!(merkle::verify_inclusion(
            &hash(&proof.leaf_hash),
            2,
            4,
            &path,
            &checkpoint.root
        ));
        for seq in [0, 5] {
            assert!(matches!(
                prove(&mut conn, &f.verifier, &f.sources, seq),
                Err(Failure::Unreadable(_))
            ));
        }
        // The note comes from the file when the table has lost it.
        conn.batch_execute("DELETE FROM audit_checkpoints").unwrap();
        let again = prove(&mut conn, &f.verifier, &f.sources, 1).unwrap();
        assert_eq!(again.checkpoint, proof.checkpoint);
    }

    #[test]
    fn the_writer_resumes_and_notices_a_longer_table() {
        let f = fixture(3, 2);
        // Another writer (the CLI) appends: this one rebuilds its frontier first.
        let other = SqliteAuditLog::open(
            f.store.clone(),
            signing::load(&f.dir.path().join("keys")).unwrap(),
            f.sources.checkpoint_file.clone(),
            None,
        )
        .unwrap();
        assert_eq!(other.origin(), f.signer.name());
        other
            .append(&[AuditEvent::system(Action::ConfigLoaded, Outcome::Ok)])
            .unwrap();
        let seqs = f
            .log
            .append(&[AuditEvent::system(Action::ConfigLoaded, Outcome::Ok)])
            .unwrap();
        assert_eq!(seqs, vec![5]);
        f.log.checkpoint(9).unwrap();
        assert_eq!(run(&f).unwrap().checkpoint_size, 5);
        // A gap in the table stops a rebuild (and so a start) with the record named.
        let mut conn = f.store.conn().unwrap();
        conn.batch_execute("DELETE FROM audit_checkpoints; DELETE FROM audit_log WHERE seq = 2")
            .unwrap();
        let Err(StoreError::Corrupt(why)) = crate::audit::log::rebuild(&mut conn) else {
            panic!("a gap was rebuilt")
        };
        assert!(why.contains("record 2 is missing"), "{why}");
    }

    #[test]
    fn a_torn_note_at_the_end_of_the_file_is_cut_back() {
        let f = fixture(2, 2);
        let path = &f.sources.checkpoint_file;
        let whole = std::fs::read_to_string(path).unwrap();
        assert!(!crate::audit::log::repair_torn_tail(path).unwrap());
        std::fs::write(path, format!("{whole}beepmyphone.audit/x\n3\n")).unwrap();
        assert!(crate::audit::log::repair_torn_tail(path).unwrap());
        assert_eq!(std::fs::read_to_string(path).unwrap(), whole);
        let missing = f.dir.path().join("none.log");
        assert!(!crate::audit::log::repair_torn_tail(&missing).unwrap());
    }
}
