//! `beepmyphone audit verify | prove | export`: the audit log, read straight from the data
//! directory (safe while the relay runs). (The other local commands record what they do through
//! [`super::local::record`].)
//!
//! `verify` exits 0 when every record and checkpoint holds, 1 naming the first that does not, 2
//! for a usage or configuration error (no database, no signing key, a bad `--key`).

use std::io::Write;

use clap::Subcommand;

use crate::audit::verify::{self, Sources};
use crate::audit::{record as records, signing};
use crate::config::Settings;
use crate::store::audit::{self as rows, AuditFilter};
use crate::store::{Store, DB_FILE};

use super::local::{settings, LocalError};
use super::ConfigArgs;

/// `beepmyphone audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every record (archives included) against its leaf hash, the Merkle tree and the
    /// signed checkpoints. Exit 0: all holds; 1: the first bad record or checkpoint is named; 2:
    /// usage or configuration error.
    Verify {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// The verifier key to check checkpoints with (`name+id+key`, as in
        /// `keys/audit-signing.vkey`); default: derived from the signing key in the keys
        /// directory. Pin it somewhere the relay cannot write.
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print an inclusion proof (RFC 9162) of one record in the tree of the latest checkpoint,
    /// as JSON, with that checkpoint.
    Prove {
        /// The record's seq.
        seq: u64,
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// The verifier key (see `audit verify`).
        #[arg(long, value_name = "VKEY")]
        key: Option<String>,
    },
    /// Print records, oldest first, their sealed parts opened (needs the data keys), for an
    /// investigation.
    Export {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
        /// From this time on (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// `jsonl` (one record per line) or `json` (one array).
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "json"])]
        format: String,
    },
}

/// Runs an audit command.
pub fn run(command: AuditCommand, out: &mut impl Write) -> Result<(), LocalError> {
    match command {
        AuditCommand::Verify { config, key, json } => {
            verify_command(&settings(&config)?, key.as_deref(), json, out)
        }
        AuditCommand::Prove { seq, config, key } => {
            prove_command(&settings(&config)?, seq, key.as_deref(), out)
        }
        AuditCommand::Export {
            config,
            since,
            until,
            format,
        } => export(
            &settings(&config)?,
            since.as_deref(),
            until.as_deref(),
            &format,
            out,
        ),
    }
}

fn io(e: std::io::Error) -> LocalError {
    LocalError::Failed(e.to_string())
}

/// The store of an existing data directory (a missing database is a usage error, not a new log).
fn existing_store(settings: &Settings) -> Result<Store, LocalError> {
    let db = settings.storage.data_dir.join(DB_FILE);
    if settings.storage.postgres_url().is_none() && !db.is_file() {
        return Err(LocalError::Usage(format!(
            "no relay database at {} (is --data-dir right?)",
            db.display()
        )));
    }
    super::local::open_store(settings)
}

fn sources(settings: &Settings) -> Sources {
    Sources::of(settings)
}

fn verifier(
    settings: &Settings,
    key: Option<&str>,
) -> Result<crate::audit::note::NoteVerifier, LocalError> {
    signing::verifier(&settings.keys_dir(), key).map_err(|e| LocalError::Usage(e.to_string()))
}

/// A connection to an existing log and the key its checkpoints are checked with.
fn reading(
    settings: &Settings,
    key: Option<&str>,
) -> Result<(crate::store::Conn, crate::audit::note::NoteVerifier), LocalError> {
    let store = existing_store(settings)?;
    let verifier = verifier(settings, key)?;
    let conn = store
        .conn()
        .map_err(|e| LocalError::Failed(e.to_string()))?;
    Ok((conn, verifier))
}

fn verify_command(
    settings: &Settings,
    key: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    let (mut conn, verifier) = reading(settings, key)?;
    match verify::verify(&mut conn, &verifier, &sources(settings)) {
        Ok(report) => {
            if json {
                let text = serde_json::to_string_pretty(&report)
                    .map_err(|e| LocalError::Failed(e.to_string()))?;
                writeln!(out, "{text}").map_err(io)?;
            } else {
                writeln!(
                    out,
                    "audit log verified: {} records (from record {}, {} archives), {} signed checkpoints",
                    report.records, report.first, report.archives, report.checkpoints
                )
                .map_err(io)?;
                if report.checkpoint_size > 0 {
                    writeln!(
                        out,
                        "latest checkpoint: {} records, signed {}",
                        report.checkpoint_size,
                        beepmyphone_actors::model::rfc3339(report.checkpoint_ms)
                    )
                    .map_err(io)?;
                }
                if report.uncovered > 0 {
                    writeln!(
                        out,
                        "{} records after it are in order but not yet covered by a checkpoint",
                        report.uncovered
                    )
                    .map_err(io)?;
                }
            }
            Ok(())
        }
        Err(verify::Failure::Unreadable(why)) => Err(LocalError::Failed(format!(
            "audit log cannot be read: {why}"
        ))),
        Err(failure) => Err(LocalError::Failed(format!(
            "audit log verification FAILED: {failure}"
        ))),
    }
}

fn prove_command(
    settings: &Settings,
    seq: u64,
    key: Option<&str>,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    let (mut conn, verifier) = reading(settings, key)?;
    let proof = verify::prove(&mut conn, &verifier, &sources(settings), seq)
        .map_err(|e| LocalError::Failed(e.to_string()))?;
    let text =
        serde_json::to_string_pretty(&proof).map_err(|e| LocalError::Failed(e.to_string()))?;
    writeln!(out, "{text}").map_err(io)
}

fn time(name: &str, value: Option<&str>) -> Result<Option<i64>, LocalError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    LocalError::Usage(format!(
                        "--{name}: must be an RFC 3339 time such as 2026-01-31T12:00:00Z"
                    ))
                })
        })
        .transpose()
}

fn export(
    settings: &Settings,
    since: Option<&str>,
    until: Option<&str>,
    format: &str,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    let (since, until) = (time("since", since)?, time("until", until)?);
    let store = existing_store(settings)?;
    let cipher = super::datakeys::cipher(settings)?;
    let mut conn = store
        .conn()
        .map_err(|e| LocalError::Failed(e.to_string()))?;
    let mut filter = AuditFilter {
        since,
        until,
        after_seq: Some(0),
        ..AuditFilter::default()
    };
    let json = format == "json";
    if json {
        write!(out, "[").map_err(io)?;
    }
    let mut first = true;
    loop {
        let page =
            rows::list(&mut conn, &filter, 1_000).map_err(|e| LocalError::Failed(e.to_string()))?;
        let Some(last) = page.last().map(|r| r.seq) else {
            break;
        };
        for row in page {
            let text = serde_json::to_string(&records::view(row, &cipher))
                .map_err(|e| LocalError::Failed(e.to_string()))?;
            match (json, first) {
                (true, true) => write!(out, "\n{text}"),
                (true, false) => write!(out, ",\n{text}"),
                (false, _) => writeln!(out, "{text}"),
            }
            .map_err(io)?;
            first = false;
        }
        filter.after_seq = Some(last);
    }
    if json {
        writeln!(out, "\n]").map_err(io)?;
    }
    Ok(())
}
