//! `beepmyphone cert status | renew | export-ca`: the relay's TLS certificate, on the files of
//! the keys directory (or the operator's, in mode `files`). `renew` writes a new certificate
//! beside a running relay, which serves it to new connections within seconds.

use std::io::Write;

use beepmyphone_actors::model::rfc3339;
use beepmyphone_actors::ports::{Action, CertificateInfo, CertificateProvider, Outcome};
use clap::Subcommand;

use crate::config::Settings;
use crate::tls::{DiskCertificates, Served};

use super::local::{settings, LocalError};
use super::ConfigArgs;

/// `beepmyphone cert …`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Show the certificate in force: mode, hosts, validity, fingerprints.
    Status {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Issue a new certificate now (modes self-signed and local-ca; a running relay serves it
    /// to new connections within seconds).
    Renew {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the local CA's certificate (PEM), to install on devices that cannot pin it.
    ExportCa {
        /// Settings and data directory.
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Runs a `cert` command.
pub fn run(command: CertCommand, out: &mut impl Write) -> Result<(), LocalError> {
    match command {
        CertCommand::Status { config } => status(&settings(&config)?, out),
        CertCommand::Renew { config } => renew(&settings(&config)?, out),
        CertCommand::ExportCa { config } => {
            let settings = settings(&config)?;
            if settings.tls.mode != crate::config::TlsMode::LocalCa {
                return Err(LocalError::Usage(format!(
                    "the relay has no local CA (tls.mode is \"{}\", not \"local-ca\")",
                    settings.tls.mode.as_str()
                )));
            }
            let pem = provider(&settings)?
                .ca_pem()
                .map_err(|e| LocalError::Failed(e.to_string()))?;
            out.write_all(&pem)
                .map_err(|e| LocalError::Failed(e.to_string()))
        }
    }
}

/// The provider of `settings`; a usage error with TLS off.
pub fn provider(settings: &Settings) -> Result<DiskCertificates, LocalError> {
    if !settings.tls.enabled() {
        return Err(LocalError::Usage(
            "TLS is off (tls.mode = \"off\"); set tls.mode to self-signed, local-ca or files"
                .into(),
        ));
    }
    crate::tls::provider(settings, Served::default()).map_err(|e| LocalError::Usage(e.to_string()))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn status(settings: &Settings, out: &mut impl Write) -> Result<(), LocalError> {
    let info = provider(settings)?
        .inspect(now_ms())
        .map_err(|e| LocalError::Failed(format!("the certificate cannot be served: {e}")))?;
    print(&info, out).map_err(|e| LocalError::Failed(e.to_string()))
}

fn renew(settings: &Settings, out: &mut impl Write) -> Result<(), LocalError> {
    let provider = provider(settings)?;
    let store = super::local::open_store(settings)?;
    // Recorded before the certificate exists, as every local operation is.
    super::local::record(
        settings,
        &store,
        Action::CertificateRenewed,
        None,
        Outcome::Requested,
    )?;
    let info = provider.renew(now_ms()).map_err(|e| match e {
        beepmyphone_actors::ports::TlsError::CannotIssue => LocalError::Usage(e.to_string()),
        e => LocalError::Failed(e.to_string()),
    })?;
    super::local::record(
        settings,
        &store,
        Action::CertificateRenewed,
        Some(info.fingerprint.clone()),
        Outcome::Ok,
    )?;
    print(&info, out).map_err(|e| LocalError::Failed(e.to_string()))
}

/// The certificate as `cert status` and `cert renew` print it.
fn print(info: &CertificateInfo, out: &mut impl Write) -> std::io::Result<()> {
    let days = (info.not_after_ms - now_ms()).div_euclid(86_400_000);
    writeln!(out, "Mode:         {}", info.mode)?;
    writeln!(out, "Subject:      {}", info.subject)?;
    writeln!(out, "Issuer:       {}", info.issuer)?;
    writeln!(out, "Hosts:        {}", info.hosts.join(", "))?;
    writeln!(out, "Key:          {}", info.key)?;
    writeln!(out, "Valid from:   {}", rfc3339(info.not_before_ms))?;
    writeln!(
        out,
        "Valid until:  {} ({days} days left)",
        rfc3339(info.not_after_ms)
    )?;
    writeln!(out, "Fingerprint:  {}", info.fingerprint)?;
    if let Some(pin) = &info.pin {
        writeln!(out, "Pin (device): {pin}")?;
    }
    if let Some(until) = info.ca_not_after_ms {
        writeln!(out, "CA valid until: {}", rfc3339(until))?;
    }
    Ok(())
}
