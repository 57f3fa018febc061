//! `beepmyphone token list | revoke` and `device list | revoke`: the local operator's view of who
//! may publish and which devices may connect, on the data directory like `token create`.
//!
//! Both revocations work with a relay running on the same data directory or without one:
//! - `token revoke` deletes the token. A running relay re-reads each cached token from the store at
//!   most a minute after its last check, so it stops accepting the token within a minute.
//! - `device revoke` refuses every token the device holds (its access tokens by its "not before"
//!   time, its refresh tokens by family) and disables it, so nothing new is queued for it after the
//!   relay's next start. A running relay refuses the device's next connection and request at once;
//!   a socket it already holds stays open until its access token expires
//!   (`auth.access_token_ttl_seconds`). The device stays listed: `DELETE /api/v1/devices/{id}` or
//!   the dashboard deletes it and closes its sockets at once.

use std::io::Write;

use beepmyphone_actors::model::rfc3339;
use beepmyphone_actors::ports::{Action, Outcome};

use crate::store::{devices, tokens};

use super::local::{open_store, record, settings, LocalError};
use super::ConfigArgs;

/// Rows read per query while listing.
const PAGE: i64 = 500;

fn failed(e: impl std::fmt::Display) -> LocalError {
    LocalError::Failed(e.to_string())
}

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".to_owned(), rfc3339)
}

fn write_line(out: &mut impl Write, line: std::fmt::Arguments) -> Result<(), LocalError> {
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(failed)
}

/// `beepmyphone token list`: every API token (never its secret), oldest first.
pub fn token_list(args: &ConfigArgs, out: &mut impl Write) -> Result<(), LocalError> {
    let settings = settings(args)?;
    let store = open_store(&settings)?;
    let mut conn = store.conn().map_err(failed)?;
    write_line(out, format_args!("ID\tSCOPE\tNAME\tCREATED\tLAST USED"))?;
    let mut after: Option<String> = None;
    loop {
        let rows = tokens::list_api(&mut conn, after.as_deref(), PAGE).map_err(failed)?;
        for row in &rows {
            write_line(
                out,
                format_args!(
                    "{}\t{}\t{}\t{}\t{}",
                    row.id,
                    row.scope,
                    row.name,
                    rfc3339(row.created_at),
                    when(row.last_used_at)
                ),
            )?;
        }
        match rows.last() {
            Some(last) if rows.len() == PAGE as usize => after = Some(last.id.clone()),
            _ => return Ok(()),
        }
    }
}

/// `beepmyphone token revoke ID`: deletes the API token (recorded in the audit log first).
pub fn token_revoke(args: &ConfigArgs, id: &str, out: &mut impl Write) -> Result<(), LocalError> {
    let settings = settings(args)?;
    let store = open_store(&settings)?;
    let subject = Some(id.to_owned());
    record(
        &settings,
        &store,
        Action::TokenDeleted,
        subject.clone(),
        Outcome::Requested,
    )?;
    let mut conn = store.conn().map_err(failed)?;
    let deleted = tokens::delete_api(&mut conn, id).map_err(failed);
    let outcome = match &deleted {
        Ok(Some(_)) => Outcome::Ok,
        _ => Outcome::Failed,
    };
    record(&settings, &store, Action::TokenDeleted, subject, outcome)?;
    match deleted? {
        Some(_) => write_line(
            out,
            format_args!("revoked {id}; a running relay refuses it within a minute"),
        ),
        None => Err(LocalError::Failed(format!("no API token {id}"))),
    }
}

/// `beepmyphone device list`: every paired device, oldest first (names are opened with the data
/// keys, so this needs the passphrase when one is set).
pub fn device_list(args: &ConfigArgs, out: &mut impl Write) -> Result<(), LocalError> {
    let settings = settings(args)?;
    let store = open_store(&settings)?;
    let cipher = super::datakeys::cipher(&settings)?;
    let mut conn = store.conn().map_err(failed)?;
    write_line(
        out,
        format_args!("ID\tNAME\tPLATFORM\tENABLED\tGROUPS\tPAIRED\tLAST SEEN"),
    )?;
    let mut after: Option<String> = None;
    loop {
        let rows =
            devices::list(&mut conn, &cipher, None, after.as_deref(), PAGE).map_err(failed)?;
        for row in &rows {
            write_line(
                out,
                format_args!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    row.id,
                    row.name,
                    row.platform,
                    if row.enabled { "yes" } else { "no" },
                    if row.groups.is_empty() {
                        "-".to_owned()
                    } else {
                        row.groups.join(",")
                    },
                    rfc3339(row.created_at),
                    when(row.last_seen_at)
                ),
            )?;
        }
        match rows.last() {
            Some(last) if rows.len() == PAGE as usize => after = Some(last.id.clone()),
            _ => return Ok(()),
        }
    }
}

/// `beepmyphone device revoke ID`: refuses the device's tokens and disables it (see the module
/// documentation for what a running relay does).
pub fn device_revoke(args: &ConfigArgs, id: &str, out: &mut impl Write) -> Result<(), LocalError> {
    let settings = settings(args)?;
    let store = open_store(&settings)?;
    let subject = Some(id.to_owned());
    record(
        &settings,
        &store,
        Action::DeviceRevoked,
        subject.clone(),
        Outcome::Requested,
    )?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut conn = store.conn().map_err(failed)?;
    let revoked = devices::revoke(&mut conn, id, now).map_err(failed);
    let outcome = match &revoked {
        Ok(true) => Outcome::Ok,
        _ => Outcome::Failed,
    };
    record(&settings, &store, Action::DeviceRevoked, subject, outcome)?;
    if revoked? {
        write_line(
            out,
            format_args!(
                "revoked {id}: its tokens are refused and it is disabled; \
                 DELETE /api/v1/devices/{id} removes it"
            ),
        )
    } else {
        Err(LocalError::Failed(format!("no device {id}")))
    }
}
