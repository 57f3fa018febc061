//! Local commands: they open the data directory directly (safe while the server runs: SQLite
//! in WAL mode with a busy timeout) and never need the server.

use std::io::Write;
use std::path::Path;

use beepmyphone_actors::model::rfc3339;
use qrcode::render::unicode;
use qrcode::QrCode;

use beepmyphone_actors::ports::{Action, ActorKind, AuditEvent, AuditLog, Outcome};

use crate::api::routes::pairing::{mint_pairing_code, pairing_link};
use crate::api::routes::tokens::mint_api_token;
use crate::audit::log::SqliteAuditLog;
use crate::audit::signing;
use crate::config::{Overrides, Settings};
use crate::crypto::secrets::ExposeSecret;
use crate::domain::Scope;
use crate::store::Store;

use super::ConfigArgs;

/// A local command's failure, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Bad configuration or arguments: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Anything else: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl LocalError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            LocalError::Usage(_) => 2,
            LocalError::Failed(_) => 1,
        }
    }
}

/// Loads settings for a local command.
pub fn settings(args: &ConfigArgs) -> Result<Settings, LocalError> {
    Settings::load(&Overrides {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        listen: None,
    })
    .map_err(|e| LocalError::Usage(e.to_string()))
}

/// The store, without data keys (the local commands that use it touch no sealed column).
pub(super) fn open_store(settings: &Settings) -> Result<Store, LocalError> {
    open(settings)
}

fn open(settings: &Settings) -> Result<Store, LocalError> {
    let mut storage = settings.storage.clone();
    storage.pool_min_idle = 0;
    storage.pool_max_size = 2;
    Store::open(&settings.storage.data_dir, &storage).map_err(|e| LocalError::Failed(e.to_string()))
}

/// The URL devices should use: `server.public_url`, else derived from `server.listen` (`https`
/// when TLS is on).
pub fn public_url(settings: &Settings) -> String {
    if !settings.server.public_url.is_empty() {
        return settings.server.public_url.trim_end_matches('/').to_owned();
    }
    let listen = settings
        .server
        .listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    let scheme = if settings.tls.enabled() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{listen}")
}

/// `beepmyphone pairing-code`: prints the code, its expiry, the CA fingerprint to pin (TLS modes
/// `local-ca` and `self-signed`), and (unless `no_qr`) a QR code of
/// `beepmyphone://pair?server=…&code=…[&ca=sha256:…]` that a device app can scan.
pub fn pairing_code(
    args: &ConfigArgs,
    ttl: Option<u64>,
    no_qr: bool,
    server: Option<&str>,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    let settings = settings(args)?;
    let ttl = ttl.unwrap_or(settings.auth.pairing_code_ttl_seconds);
    if !(60..=3_600).contains(&ttl) {
        return Err(LocalError::Usage(
            "--ttl must be between 60 and 3600 seconds".into(),
        ));
    }
    // The pin first: without a certificate to pin, no code is minted.
    let pin = pin_of(&settings)?;
    let store = open(&settings)?;
    let now = chrono::Utc::now().timestamp_millis();
    record(
        &settings,
        &store,
        Action::PairingCodeCreated,
        None,
        Outcome::Ok,
    )?;
    let mut conn = store
        .conn()
        .map_err(|e| LocalError::Failed(e.to_string()))?;
    let (code, expires_at) =
        mint_pairing_code(&mut conn, now, ttl).map_err(|e| LocalError::Failed(e.to_string()))?;
    let server = match server {
        Some(url) => {
            let parsed = url::Url::parse(url)
                .map_err(|_| LocalError::Usage("--server must be an absolute URL".into()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(LocalError::Usage(
                    "--server must be an http or https URL".into(),
                ));
            }
            url.trim_end_matches('/').to_owned()
        }
        None => public_url(&settings),
    };
    let io = |e: std::io::Error| LocalError::Failed(e.to_string());
    writeln!(out, "Pairing code: {}", code.expose_secret()).map_err(io)?;
    writeln!(out, "Expires:      {}", rfc3339(expires_at)).map_err(io)?;
    writeln!(out, "Server:       {server}").map_err(io)?;
    let pin_flag = match &pin {
        Some(pin) => {
            writeln!(out, "CA fingerprint: {pin}").map_err(io)?;
            format!(" --ca-fingerprint {pin}")
        }
        None => String::new(),
    };
    writeln!(
        out,
        "On the device: beepmyphone listen --server {server}{pin_flag} --code {}",
        code.expose_secret()
    )
    .map_err(io)?;
    if !no_qr {
        let link = pairing_link(&server, code.expose_secret(), pin.as_deref());
        let qr = QrCode::new(link.as_bytes()).map_err(|e| LocalError::Failed(e.to_string()))?;
        let image = qr
            .render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .build();
        writeln!(out, "\n{image}").map_err(io)?;
    }
    Ok(())
}

/// The fingerprint devices pin (the local CA's, or a self-signed certificate's own), when the
/// relay issues its certificates; `None` with TLS off or in mode `files` (the system's trust
/// store checks those).
fn pin_of(settings: &Settings) -> Result<Option<String>, LocalError> {
    if !matches!(
        settings.tls.mode,
        crate::config::TlsMode::LocalCa | crate::config::TlsMode::SelfSigned
    ) {
        return Ok(None);
    }
    let info = crate::tls::provider(settings, crate::tls::Served::default())
        .map_err(|e| LocalError::Usage(e.to_string()))?
        .inspect(chrono::Utc::now().timestamp_millis())
        .map_err(|e| {
            LocalError::Failed(format!(
                "no certificate to pin yet ({e}); start the relay once, or run beepmyphone cert renew"
            ))
        })?;
    Ok(info.pin)
}

/// `beepmyphone token create`: prints the new token (shown once) on stdout.
pub fn token_create(
    args: &ConfigArgs,
    scope: &str,
    name: &str,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    let settings = settings(args)?;
    let scope = Scope::parse(scope)
        .ok_or_else(|| LocalError::Usage("--scope must be publish, admin or metrics".into()))?;
    let length = name.chars().count();
    if !(1..=64).contains(&length) || name.chars().any(char::is_control) {
        return Err(LocalError::Usage(
            "--name must be 1 to 64 printable characters".into(),
        ));
    }
    let store = open(&settings)?;
    // Recorded before the credential exists: a token is never made unrecorded.
    record(
        &settings,
        &store,
        Action::TokenCreated,
        None,
        Outcome::Requested,
    )?;
    let mut conn = store
        .conn()
        .map_err(|e| LocalError::Failed(e.to_string()))?;
    let now = chrono::Utc::now().timestamp_millis();
    let (row, secret) = mint_api_token(&mut conn, name, scope, now)
        .map_err(|e| LocalError::Failed(e.to_string()))?;
    record(
        &settings,
        &store,
        Action::TokenCreated,
        Some(row.id.clone()),
        Outcome::Ok,
    )?;
    writeln!(out, "{}", secret.expose_secret()).map_err(|e| LocalError::Failed(e.to_string()))?;
    eprintln!("created {} ({}, scope {})", row.id, row.name, row.scope);
    Ok(())
}

/// Appends one event by the local operator (`system`, id `cli`) to the log of `settings`'s data
/// directory: written before what it records, so a command that cannot record does nothing.
/// Nothing personal goes in (the CLI opens no data keys for this).
pub fn record(
    settings: &Settings,
    store: &Store,
    action: Action,
    subject: Option<String>,
    outcome: Outcome,
) -> Result<(), LocalError> {
    let log = open_log(settings, store)?;
    let mut event = AuditEvent::new(action, ActorKind::System, outcome).by("cli");
    event.subject = subject;
    event.at_ms = chrono::Utc::now().timestamp_millis();
    log.append(&[event])
        .map(|_| ())
        .map_err(|e| LocalError::Failed(format!("not done: {e}")))
}

fn open_log(settings: &Settings, store: &Store) -> Result<SqliteAuditLog, LocalError> {
    let signer = signing::load_or_create(&settings.keys_dir())
        .map_err(|e| LocalError::Failed(e.to_string()))?;
    ensure_dir(&settings.audit_checkpoint_file())?;
    SqliteAuditLog::open(
        store.clone(),
        signer,
        settings.audit_checkpoint_file(),
        None,
    )
    .map_err(|e| LocalError::Failed(e.to_string()))
}

fn ensure_dir(file: &Path) -> Result<(), LocalError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| LocalError::Failed(e.to_string()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::api::routes::pairing::pairing_link;

    #[test]
    fn the_pairing_link_carries_the_pin_when_there_is_one() {
        assert_eq!(
            pairing_link("https://relay.lan:8080", "K7QF-2M9X", Some("sha256:ab12")),
            "beepmyphone://pair?server=https%3A%2F%2Frelay.lan%3A8080&code=K7QF-2M9X&ca=sha256%3Aab12"
        );
        assert_eq!(
            pairing_link("http://127.0.0.1:8080", "K7QF-2M9X", None),
            "beepmyphone://pair?server=http%3A%2F%2F127.0.0.1%3A8080&code=K7QF-2M9X"
        );
    }
}
