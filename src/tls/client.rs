//! How the client commands (`send`, `listen`, `bench`) check the relay's TLS certificate: by the
//! system's trust store (the default), by a pinned CA fingerprint (the one `pairing-code` shows
//! for a relay in mode `local-ca` or `self-signed`), or not at all with the explicit `--insecure`.
//!
//! A pin replaces the system store: the relay's chain must end in the pinned certificate, and
//! everything else is still checked (signatures, validity dates, the host name).

use clap::Args;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509StoreContextRef;

use super::certs::{fingerprint, parse_fingerprint};

/// The certificate check of a client command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Trust {
    /// The system's trust store.
    #[default]
    System,
    /// Only a chain that ends in the certificate of this fingerprint (`sha256:` and hex).
    Pinned(String),
    /// No check at all (`--insecure`).
    Insecure,
}

/// `--ca-fingerprint` and `--insecure`.
#[derive(Debug, Args, Clone, Default)]
pub struct TrustArgs {
    /// Trust only a relay whose certificate chain ends in the CA of this SHA-256 fingerprint
    /// (shown by `beepmyphone pairing-code`), instead of the system's trust store.
    #[arg(long, env = "BEEP_CA_FINGERPRINT", value_name = "SHA256")]
    pub ca_fingerprint: Option<String>,
    /// Do not check the relay's certificate at all (anyone on the path can read and change
    /// the traffic; for tests only).
    #[arg(long, conflicts_with = "ca_fingerprint")]
    pub insecure: bool,
}

impl TrustArgs {
    /// The check asked for, if any; an unreadable fingerprint is an error.
    pub fn trust(&self) -> Result<Option<Trust>, String> {
        if self.insecure {
            return Ok(Some(Trust::Insecure));
        }
        match &self.ca_fingerprint {
            None => Ok(None),
            Some(text) => parse_fingerprint(text).map(|pin| Some(Trust::Pinned(pin))).ok_or_else(
                || "--ca-fingerprint must be a SHA-256 fingerprint (64 hex digits, optionally sha256: and colons)".to_owned(),
            ),
        }
    }
}

impl Trust {
    /// The pinned fingerprint, if any.
    pub fn pin(&self) -> Option<&str> {
        match self {
            Self::Pinned(pin) => Some(pin),
            _ => None,
        }
    }
}

/// The verify-result codes a pin may override: the chain ends in a certificate the (empty)
/// store does not hold.
const UNTRUSTED_ROOT: [std::ffi::c_int; 2] = [
    openssl_sys::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
    openssl_sys::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
];

/// Whether the certificate OpenSSL stopped at is the pinned root.
fn is_pinned_root(pin: &str, ctx: &X509StoreContextRef) -> bool {
    UNTRUSTED_ROOT.contains(&ctx.error().as_raw())
        && ctx
            .current_cert()
            .is_some_and(|cert| fingerprint(&cert.to_owned()) == pin)
}

/// An OpenSSL connector for awc (`awc::Connector::openssl`, after `max_http_version`, which
/// would replace it): TLS 1.2 or later, HTTP/1.1 only, and the check of `trust`.
pub fn connector(trust: &Trust) -> Result<SslConnector, openssl::error::ErrorStack> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    builder.set_alpn_protos(b"\x08http/1.1")?;
    match trust {
        Trust::System => {}
        Trust::Insecure => builder.set_verify(SslVerifyMode::NONE),
        Trust::Pinned(pin) => {
            builder.set_cert_store(X509StoreBuilder::new()?.build());
            let pin = pin.clone();
            builder.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
                ok || is_pinned_root(&pin, ctx)
            });
        }
    }
    Ok(builder.build())
}
