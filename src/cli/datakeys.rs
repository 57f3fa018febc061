//! `beepmyphone keys rotate --data`, the data-key part of `keys status`, and `keys passphrase`:
//! the data-encryption keys in the keys directory (see [`crate::crypto::disk`]). Safe
//! while the relay runs: the ring file is changed under its lock, and the relay re-reads it within
//! [`KEY_SCAN_INTERVAL`].

use std::io::Write;

use beepmyphone_actors::model::rfc3339;

use crate::config::Settings;
use crate::crypto::disk::{algorithm_of, DataKeyState, OpenOptions};
use crate::crypto::{DiskDataKeys, KekSource, Purpose};
use crate::security::keys::KEY_SCAN_INTERVAL;
use crate::store::reencrypt;

use super::local::LocalError;

fn failed(e: impl std::fmt::Display) -> LocalError {
    LocalError::Failed(e.to_string())
}

/// Opens the ring as the relay would (creating it on first use), with the keys it holds; a wrong
/// passphrase or a missing key file is a usage error (exit 2), as for `serve`.
fn open_with_ring(
    settings: &Settings,
    source: &KekSource,
) -> Result<(DiskDataKeys, crate::crypto::DataRing), LocalError> {
    let algorithm = algorithm_of(&settings.encryption).map_err(|e| LocalError::Usage(e.0))?;
    DiskDataKeys::open(
        &settings.keys_dir(),
        &OpenOptions {
            source,
            algorithm,
            iterations: settings.encryption.pbkdf2_iterations,
            now_ms: chrono::Utc::now().timestamp_millis(),
        },
    )
    .map_err(|e| LocalError::Usage(e.to_string()))
}

/// [`open_with_ring`], the ring file alone.
fn open(settings: &Settings, source: &KekSource) -> Result<DiskDataKeys, LocalError> {
    open_with_ring(settings, source).map(|(disk, _)| disk)
}

/// The data keys, to open sealed values (`audit export`).
pub(super) fn cipher(settings: &Settings) -> Result<crate::crypto::Cipher, LocalError> {
    let (_, ring) = open_with_ring(settings, &source(settings)?)?;
    Ok(crate::crypto::Cipher::new(ring))
}

fn source(settings: &Settings) -> Result<KekSource, LocalError> {
    KekSource::from_settings(&settings.encryption).map_err(|e| LocalError::Usage(e.0))
}

/// `keys rotate --data`: a new current key for every sealing purpose; the old ones open what they
/// sealed until the relay's re-encryption job has moved it.
pub fn rotate(settings: &Settings, out: &mut impl Write) -> Result<(), LocalError> {
    let source = source(settings)?;
    let mut disk = open(settings, &source)?;
    let algorithm = algorithm_of(&settings.encryption).map_err(|e| LocalError::Usage(e.0))?;
    let now = chrono::Utc::now().timestamp_millis();
    let ids = disk
        .rotate(&Purpose::SEALING, algorithm, now)
        .map_err(failed)?;
    for (purpose, id) in Purpose::SEALING.iter().zip(&ids) {
        writeln!(
            out,
            "New data key:    {id} ({}, {})",
            purpose.as_str(),
            algorithm.name
        )
        .map_err(failed)?;
    }
    writeln!(
        out,
        "A running relay seals with the new keys within {} s and re-encrypts older rows in the background (`keys status` shows progress).",
        KEY_SCAN_INTERVAL.as_secs()
    )
    .map_err(failed)?;
    Ok(())
}

/// The data-key lines of `keys status`: every key with its state, and how many rows each still
/// covers (read from the store; nothing is opened, so no passphrase is needed).
pub fn status(settings: &Settings, out: &mut impl Write) -> Result<(), LocalError> {
    let dir = settings.keys_dir();
    let keys = DiskDataKeys::list(&dir).map_err(failed)?;
    if keys.is_empty() {
        writeln!(
            out,
            "Data keys: none yet (the relay creates them on first start)"
        )
        .map_err(failed)?;
        return Ok(());
    }
    let protection = match DiskDataKeys::uses_passphrase(&dir).map_err(failed)? {
        Some(true) => "a passphrase (PBKDF2-HMAC-SHA256)",
        _ => "a key file",
    };
    writeln!(out, "Data keys (wrapped by {protection}):").map_err(failed)?;
    let store = super::local::open_store(settings)?;
    let mut conn = store.conn().map_err(failed)?;
    for key in &keys {
        let rows = match key.state {
            DataKeyState::Retired => String::new(),
            _ if key.purpose == Purpose::Index => String::new(),
            _ => format!(
                ", {} rows",
                reencrypt::rows_under(&mut conn, key.purpose, key.id).map_err(failed)?
            ),
        };
        writeln!(
            out,
            "  {:>4}  {:<8}  {:<18}  {:<12}  created {}{rows}",
            key.id,
            key.purpose.as_str(),
            key.algorithm,
            key.state.as_str(),
            rfc3339(key.created_ms)
        )
        .map_err(failed)?;
    }
    let plaintext = reencrypt::plaintext_rows(&mut conn).map_err(failed)?;
    let waiting: u64 = keys
        .iter()
        .filter(|k| k.state == DataKeyState::DecryptOnly && k.purpose != Purpose::Sessions)
        .map(|k| reencrypt::rows_under(&mut conn, k.purpose, k.id).unwrap_or(0))
        .sum();
    writeln!(
        out,
        "Re-encryption: {} rows left ({plaintext} from before encryption, {waiting} under decrypt-only keys)",
        plaintext + waiting
    )
    .map_err(failed)?;
    Ok(())
}

/// `keys passphrase`: re-wraps the data keys under a new passphrase (read from stdin or the
/// terminal), or with `--remove` under a new key file. The current passphrase, if any, comes from
/// the usual settings. Rows are not touched; restart the relay with the new passphrase.
pub fn passphrase(
    settings: &Settings,
    remove: bool,
    from_stdin: bool,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    let current = source(settings)?;
    let mut disk = open(settings, &current)?;
    let to = if remove {
        KekSource::KeyFile
    } else {
        KekSource::Passphrase(super::admin::read_new_secret(from_stdin, "passphrase")?)
    };
    disk.rewrap(&to, settings.encryption.pbkdf2_iterations)
        .map_err(|e| LocalError::Usage(e.to_string()))?;
    let now = match to {
        KekSource::KeyFile => "a new key file in the keys directory",
        KekSource::Passphrase(_) => "the new passphrase",
    };
    writeln!(
        out,
        "The data keys are now wrapped by {now}; no row changed. Restart the relay with {}.",
        if remove {
            "no passphrase set"
        } else {
            "BEEP_MASTER_PASSPHRASE (or encryption.passphrase_file) set to the new passphrase"
        }
    )
    .map_err(failed)?;
    Ok(())
}
