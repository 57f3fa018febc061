//! The TLS certificate the relay serves, as the [`crate::certs::CertificateManager`] sees it: a
//! [`CertificateProvider`] reads, checks, issues and serves certificates (the binary implements it
//! on openssl, with one provider per `tls.mode`), and [`CertificateInfo`] describes the one in
//! force.

use serde::Serialize;

/// The certificate in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    /// Where it comes from: `self-signed`, `local-ca` or `files`.
    pub mode: String,
    /// Its subject (`CN=…`).
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// The host names and addresses it covers (its subject alternative names).
    pub hosts: Vec<String>,
    /// Valid from (epoch ms).
    pub not_before_ms: i64,
    /// Valid until (epoch ms).
    pub not_after_ms: i64,
    /// `sha256:` and the hex SHA-256 of the certificate.
    pub fingerprint: String,
    /// Its key, e.g. `ECDSA P-256`.
    pub key: String,
    /// The fingerprint a device pins: the local CA's (mode `local-ca`) or the self-signed
    /// certificate's own; none for certificates from the operator's CA.
    pub pin: Option<String>,
    /// When the local CA expires (epoch ms), in mode `local-ca`.
    pub ca_not_after_ms: Option<i64>,
}

/// Why a certificate could not be loaded or issued; the one in force stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key on disk is unusable (expired, not matching, missing a host name,
    /// a weak key, unreadable).
    #[error("{0}")]
    Invalid(String),
    /// The provider only reads files (mode `files`): the operator's CA renews them.
    #[error("certificates from files are renewed by replacing the files (the relay reloads them when they change)")]
    CannotIssue,
    /// The work could not run.
    #[error("the certificate work did not finish: {0}")]
    Unavailable(String),
}

/// A source of certificates. Every method may block (files, key generation): the manager calls
/// them on the blocking pool.
pub trait CertificateProvider: Send + Sync + 'static {
    /// Reads the certificate and key on disk, checks them and serves them to new connections (open
    /// connections keep theirs).
    fn load(&self, now_ms: i64) -> Result<CertificateInfo, TlsError>;
    /// Issues and stores a new certificate (and key), then serves it; [`TlsError::CannotIssue`]
    /// for a provider that only reads files.
    fn renew(&self, now_ms: i64) -> Result<CertificateInfo, TlsError>;
    /// Whether [`CertificateProvider::renew`] can issue at all (false for certificates from
    /// files).
    fn can_issue(&self) -> bool;
    /// A stamp of the files (their sizes and modification times): when it changes, the manager
    /// loads them again.
    fn stamp(&self) -> u64;
}
