//! `beepmyphone keys rotate | status | passphrase`: the signing keys (through the same
//! [`reconcile`] as the relay) and, in [`super::datakeys`], the data-encryption keys.

use std::io::Write;

use beepmyphone_actors::keys::{reconcile, KeyState};
use beepmyphone_actors::model::rfc3339;
use beepmyphone_actors::ports::{Action, Outcome};

use crate::security::keys::{DiskKeyRing, KEY_SCAN_INTERVAL};

use super::local::{settings, LocalError};
use super::ConfigArgs;

/// `beepmyphone keys passphrase`: re-wraps the data keys ([`super::datakeys::passphrase`]).
pub fn keys_passphrase(
    args: &ConfigArgs,
    remove: bool,
    from_stdin: bool,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    super::datakeys::passphrase(&settings(args)?, remove, from_stdin, out)
}

/// `beepmyphone keys rotate`: adds a signing key (newest, so it signs from now on; a running relay
/// picks it up at its next scan of the keys directory), retiring signing keys whose tokens have all
/// expired, by the same rules as the relay. With `--data`, new data-encryption keys instead
/// ([`super::datakeys::rotate`]).
pub fn keys_rotate(args: &ConfigArgs, data: bool, out: &mut impl Write) -> Result<(), LocalError> {
    let settings = settings(args)?;
    let store = super::local::open_store(&settings)?;
    let action = if data {
        Action::DataKeyRotated
    } else {
        Action::SigningKeyRotated
    };
    // Recorded before the rotation: a rotation is never unrecorded.
    super::local::record(&settings, &store, action, None, Outcome::Requested)?;
    if data {
        super::datakeys::rotate(&settings, out)?;
        return super::local::record(&settings, &store, action, None, Outcome::Ok);
    }
    let dir = settings.keys_dir();
    let policy = crate::security::keys::policy(&settings.auth);
    let now = chrono::Utc::now().timestamp_millis();
    let failed = |e: &dyn std::fmt::Display| LocalError::Failed(e.to_string());
    // On an empty keys directory, opening the ring creates its first key: that is the rotation.
    let first = DiskKeyRing::status(&dir, &policy, now)
        .map_err(|e| failed(&e))?
        .is_empty();
    let ring = DiskKeyRing::open(
        &dir,
        &settings.auth.issuer,
        &settings.auth.audience,
        &policy,
        now,
        crate::logging::discard(),
    )
    .map_err(|e| failed(&e))?;
    let done = reconcile(&ring, now, &policy, !first, None).map_err(|e| failed(&e))?;
    if let Some(refused) = &done.refused {
        return Err(LocalError::Failed(format!(
            "rotation refused: {refused}; try again in {} s",
            refused.retry_after_secs()
        )));
    }
    let io = |e: std::io::Error| LocalError::Failed(e.to_string());
    if let Some(created) = done.created.as_ref().or(done.keys.last().filter(|_| first)) {
        super::local::record(
            &settings,
            &store,
            action,
            Some(created.kid.clone()),
            Outcome::Ok,
        )?;
        writeln!(out, "New signing key: {} (current)", created.kid).map_err(io)?;
    }
    for key in done.keys.iter().filter(|k| k.state == KeyState::Verifying) {
        if let Some(until) = key.retires_at_ms {
            writeln!(out, "Still verifying: {} until {}", key.kid, rfc3339(until)).map_err(io)?;
        }
    }
    for kid in &done.retired {
        writeln!(out, "Retired:         {kid}").map_err(io)?;
    }
    writeln!(
        out,
        "A running relay signs with the new key within {} s.",
        KEY_SCAN_INTERVAL.as_secs()
    )
    .map_err(io)?;
    Ok(())
}

/// `beepmyphone keys status`: the signing keys, newest first, with their states, and the data keys
/// with the rows each covers. Changes nothing.
pub fn keys_status(args: &ConfigArgs, out: &mut impl Write) -> Result<(), LocalError> {
    let settings = settings(args)?;
    let dir = settings.keys_dir();
    let policy = crate::security::keys::policy(&settings.auth);
    let now = chrono::Utc::now().timestamp_millis();
    let keys =
        DiskKeyRing::status(&dir, &policy, now).map_err(|e| LocalError::Failed(e.to_string()))?;
    let io = |e: std::io::Error| LocalError::Failed(e.to_string());
    if keys.is_empty() {
        writeln!(
            out,
            "Signing keys: none yet (the relay creates one on first start)"
        )
        .map_err(io)?;
    } else {
        writeln!(out, "Signing keys (newest first):").map_err(io)?;
        for key in keys.iter().rev() {
            let state = match (key.state, key.retires_at_ms) {
                (KeyState::Current, _) => "current (signs and verifies)".to_owned(),
                (KeyState::Verifying, Some(at)) => format!("verifying until {}", rfc3339(at)),
                (KeyState::Retired, Some(at)) => {
                    format!("retiring (every token expired by {})", rfc3339(at))
                }
                (state, _) => state.as_str().to_owned(),
            };
            writeln!(
                out,
                "  {}  created {}  {state}",
                key.kid,
                rfc3339(key.created_ms)
            )
            .map_err(io)?;
        }
    }
    super::datakeys::status(&settings, out)
}
