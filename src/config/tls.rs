//! `[tls]`: HTTPS and WSS on the relay itself (docs/security.md, "TLS").

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Where the served certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain HTTP (behind a reverse proxy that terminates TLS, or on a trusted network).
    #[default]
    Off,
    /// A self-signed certificate the relay issues and renews (development).
    SelfSigned,
    /// The relay's own root CA (created once, kept in the keys directory) issues and renews the
    /// server certificate; devices pin the CA's fingerprint at pairing.
    LocalCa,
    /// A certificate and key from any CA, read from `cert_file` and `key_file` and reloaded when
    /// they change.
    Files,
}

impl TlsMode {
    /// The name used in settings, status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::SelfSigned => "self-signed",
            Self::LocalCa => "local-ca",
            Self::Files => "files",
        }
    }
}

/// The key the relay generates for the certificates it issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsKeyType {
    /// ECDSA on P-256 (fast handshakes; every current client).
    #[default]
    EcdsaP256,
    /// RSA, 2048 bits (for very old clients).
    Rsa2048,
}

/// `[tls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// `off`, `self-signed`, `local-ca` or `files`.
    pub mode: TlsMode,
    /// Mode `files`: the certificate chain (PEM, server certificate first).
    pub cert_file: PathBuf,
    /// Mode `files`: its private key (PEM; RSA of 2048 bits or more, or ECDSA P-256 or P-384).
    pub key_file: PathBuf,
    /// Host names and IP addresses the certificate must cover, besides the host of
    /// `server.public_url`. Issued certificates also cover localhost, 127.0.0.1, ::1 and the
    /// machine's host name.
    pub hosts: Vec<String>,
    /// Renew (modes `self-signed` and `local-ca`) or warn (mode `files`) when the certificate
    /// expires within this many days.
    pub renew_before_days: u32,
    /// Days an issued server certificate is valid.
    pub certificate_days: u32,
    /// The key of issued certificates: `ecdsa-p256` or `rsa-2048`.
    pub key_type: TlsKeyType,
    /// Optional: a plain-HTTP listener (e.g. `0.0.0.0:80`) that only redirects to HTTPS; empty
    /// means none.
    pub redirect_http_listen: String,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            mode: TlsMode::Off,
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            hosts: Vec::new(),
            renew_before_days: 30,
            certificate_days: 90,
            key_type: TlsKeyType::EcdsaP256,
            redirect_http_listen: String::new(),
        }
    }
}

impl TlsSettings {
    /// Whether the relay serves HTTPS.
    pub fn enabled(&self) -> bool {
        self.mode != TlsMode::Off
    }

    /// Checks the section (host names are parsed in full when the certificate is loaded).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("tls.{key}: {why}")));
        if self.mode == TlsMode::Files {
            if self.cert_file.as_os_str().is_empty() {
                return bad("cert_file", "mode \"files\" needs a certificate file");
            }
            if self.key_file.as_os_str().is_empty() {
                return bad("key_file", "mode \"files\" needs a key file");
            }
        }
        if !(1..=825).contains(&self.certificate_days) {
            return bad("certificate_days", "must be between 1 and 825");
        }
        if self.renew_before_days == 0 || self.renew_before_days >= self.certificate_days {
            return bad(
                "renew_before_days",
                "must be at least 1 and less than certificate_days",
            );
        }
        if let Some(host) = self
            .hosts
            .iter()
            .find(|h| h.trim().is_empty() || h.contains(['/', ' ', ',']))
        {
            return bad(
                "hosts",
                &format!("{host:?} is not a host name or IP address"),
            );
        }
        if !self.redirect_http_listen.is_empty() {
            if !self.enabled() {
                return bad("redirect_http_listen", "needs TLS on (tls.mode)");
            }
            if self.redirect_http_listen.parse::<SocketAddr>().is_err() {
                return bad(
                    "redirect_http_listen",
                    "must be an address and port such as 0.0.0.0:80, or empty",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_off() {
        let settings = TlsSettings::default();
        settings.validate().unwrap();
        assert!(!settings.enabled());
    }

    type Change = fn(&mut TlsSettings);

    #[test]
    fn bad_values_name_their_key() {
        let cases: [(Change, &str); 7] = [
            (|s| s.mode = TlsMode::Files, "tls.cert_file"),
            (
                |s| {
                    s.mode = TlsMode::Files;
                    s.cert_file = "a.pem".into();
                },
                "tls.key_file",
            ),
            (|s| s.certificate_days = 0, "tls.certificate_days"),
            (|s| s.renew_before_days = 90, "tls.renew_before_days"),
            (|s| s.hosts = vec!["a b".into()], "tls.hosts"),
            (
                |s| s.redirect_http_listen = "0.0.0.0:80".into(),
                "tls.redirect_http_listen: needs TLS",
            ),
            (
                |s| {
                    s.mode = TlsMode::SelfSigned;
                    s.redirect_http_listen = "port 80".into();
                },
                "tls.redirect_http_listen: must be",
            ),
        ];
        for (change, key) in cases {
            let mut settings = TlsSettings::default();
            change(&mut settings);
            let error = settings.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error} should name {key}");
        }
    }

    #[test]
    fn the_public_url_is_https_when_tls_is_on() {
        let mut settings = crate::config::Settings::default();
        settings.server.public_url = "http://relay.lan:8080".into();
        settings.validate().unwrap();
        settings.tls.mode = TlsMode::LocalCa;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("server.public_url"), "{error}");
        settings.server.public_url = "https://relay.lan:8080".into();
        settings.validate().unwrap();
    }
}
