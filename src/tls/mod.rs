//! TLS on the relay itself: HTTPS and WSS with a certificate that the relay issues (`self-signed`,
//! `local-ca`) or reads from the operator's files (`files`), renewed and reloaded without a
//! restart (docs/security.md, "TLS").
//!
//! - [`certs`]: generation and checks on openssl (keys, CA, server certificates, validation);
//! - [`client`]: how the client commands check the relay's certificate (system store, pinned
//!   CA fingerprint, `--insecure`);
//! - [`DiskCertificates`]: the providers of the three modes, on the files of the keys directory
//!   (`keys/tls/`) or the operator's;
//! - [`Served`]: the context new handshakes use, and the acceptor actix-web serves with;
//! - [`redirect_listener`]: the optional plain-HTTP listener that only redirects;
//! - [`Tls`]: what start-up keeps: the [`CertificateManager`] and its status.

pub mod certs;
pub mod client;
mod provider;
mod serve;

use std::sync::Arc;

use actix::Addr;

use beepmyphone_actors::certs::{CertificateManager, CertificatesConfig, TlsStatus};
use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::ports::{CertificateInfo, TlsError};

pub use provider::{DiskCertificates, CA_CERT, TLS_DIR};
pub use serve::{redirect_listener, Served};

use crate::config::Settings;

/// The certificate manager of a relay serving HTTPS, and the status it keeps.
#[derive(Clone)]
pub struct Tls {
    /// The manager (renewal on request: `Renew`).
    pub manager: Addr<CertificateManager>,
    /// The certificate in force, for health, metrics and the API.
    pub status: Arc<TlsStatus>,
}

/// A certificate loaded at start-up, before the listener is bound.
pub struct Prepared {
    provider: Arc<DiskCertificates>,
    served: Served,
    info: CertificateInfo,
    /// The files' stamp from before `info` was read.
    stamp: u64,
}

/// The provider `settings` name (TLS on), serving into `served`.
pub fn provider(settings: &Settings, served: Served) -> Result<DiskCertificates, TlsError> {
    let public_host = url::Url::parse(&settings.server.public_url)
        .ok()
        .and_then(|url| {
            url.host_str()
                .map(|h| h.trim_matches(['[', ']']).to_owned())
        });
    DiskCertificates::new(
        &settings.tls,
        &settings.keys_dir(),
        public_host.as_deref(),
        served,
    )
}

/// Loads the certificate `settings.tls` names, issuing one first where the mode can and what is
/// on disk is missing, unusable or due; `None` with TLS off. An unusable certificate in mode
/// `files` (expired, not matching its key, lacking a configured host) stops start-up here.
pub async fn prepare(settings: &Settings, now_ms: i64) -> Result<Option<Prepared>, TlsError> {
    if !settings.tls.enabled() {
        return Ok(None);
    }
    let served = Served::default();
    let provider = Arc::new(provider(settings, served.clone())?);
    let work = provider.clone();
    let (info, stamp) = tokio::task::spawn_blocking(move || work.prepare(now_ms))
        .await
        .map_err(|e| TlsError::Unavailable(e.to_string()))??;
    Ok(Some(Prepared {
        provider,
        served,
        info,
        stamp,
    }))
}

impl Prepared {
    /// The acceptor actix-web serves with.
    pub fn acceptor(&self) -> Result<openssl::ssl::SslAcceptorBuilder, TlsError> {
        self.served
            .acceptor()
            .map_err(|e| TlsError::Invalid(e.to_string()))
    }

    /// The certificate loaded.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// Starts the certificate manager under supervision.
    pub fn start(
        self,
        settings: &Settings,
        clock: &SharedClock,
        metrics: Arc<Metrics>,
        audit: actix::Recipient<beepmyphone_actors::audit::Record>,
        log: &slog::Logger,
    ) -> Tls {
        let status = TlsStatus::new(self.info, clock.now_ms());
        let manager = CertificateManager::new(
            self.provider,
            CertificatesConfig {
                renew_before: std::time::Duration::from_secs(
                    u64::from(settings.tls.renew_before_days) * 86_400,
                ),
                ..CertificatesConfig::default()
            },
            status.clone(),
            clock.clone(),
            metrics,
            log.new(slog::o!("actor" => "tls")),
        )
        .with_stamp(self.stamp)
        .with_audit(audit)
        .start_supervised();
        Tls { manager, status }
    }
}
