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

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use openssl::pkey::{PKey, Private};
    use openssl::ssl::SslAcceptor;
    use openssl::x509::X509;

    use super::*;
    use crate::tls::certs::{self, Host, KeyType};

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// Serves `chain` and `key` for one handshake on a loopback port.
    fn serve_once(chain: Vec<X509>, key: PKey<Private>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut acceptor =
                SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
            acceptor.set_certificate(&chain[0]).unwrap();
            for cert in &chain[1..] {
                acceptor.add_extra_chain_cert(cert.clone()).unwrap();
            }
            acceptor.set_private_key(&key).unwrap();
            let acceptor = acceptor.build();
            if let Ok((stream, _)) = listener.accept() {
                let _ = acceptor.accept(stream);
            }
        });
        port
    }

    fn connect(trust: &Trust, port: u16, name: &str) -> Result<(), String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        connector(trust)
            .unwrap()
            .connect(name, stream)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn localhost() -> Vec<Host> {
        vec![Host::parse("localhost").unwrap()]
    }

    #[test]
    fn a_pinned_ca_accepts_what_it_signed_and_nothing_forged_with_it() {
        let ca_key = certs::generate_key(KeyType::EcdsaP256).unwrap();
        let ca = certs::new_local_ca(&ca_key, "test CA", now(), 30, &localhost()).unwrap();
        let pin = Trust::Pinned(certs::fingerprint(&ca));
        let key = certs::generate_key(KeyType::EcdsaP256).unwrap();
        let leaf = certs::issue(&ca, &ca_key, &key, &localhost(), now(), 30).unwrap();
        let port = serve_once(vec![leaf.clone(), ca.clone()], key.clone());
        assert_eq!(connect(&pin, port, "localhost"), Ok(()));

        // A leaf with the CA's name but signed by another key, sent with the real CA: refused.
        let forger = certs::generate_key(KeyType::EcdsaP256).unwrap();
        let fake_ca = {
            let mut b = openssl::x509::X509Builder::new().unwrap();
            b.set_version(2).unwrap();
            b.set_subject_name(ca.subject_name()).unwrap();
            b.set_issuer_name(ca.subject_name()).unwrap();
            b.set_pubkey(&forger).unwrap();
            b.set_not_before(ca.not_before()).unwrap();
            b.set_not_after(ca.not_after()).unwrap();
            let bc = openssl::x509::extension::BasicConstraints::new()
                .ca()
                .build()
                .unwrap();
            b.append_extension(bc).unwrap();
            let ski = openssl::x509::extension::SubjectKeyIdentifier::new()
                .build(&b.x509v3_context(None, None))
                .unwrap();
            b.append_extension(ski).unwrap();
            b.sign(&forger, openssl::hash::MessageDigest::sha256())
                .unwrap();
            b.build()
        };
        let forged = certs::issue(&fake_ca, &forger, &key, &localhost(), now(), 30).unwrap();
        let port = serve_once(vec![forged, ca.clone()], key.clone());
        let error = connect(&pin, port, "localhost").unwrap_err();
        assert!(error.contains("certificate verify failed"), "{error}");

        // The right chain under another name: refused (the pin does not excuse the host name).
        let port = serve_once(vec![leaf.clone(), ca.clone()], key.clone());
        assert!(connect(&pin, port, "relay.example").is_err());
        // The system's store does not know the CA; a wrong pin neither.
        let port = serve_once(vec![leaf.clone(), ca.clone()], key.clone());
        assert!(connect(&Trust::System, port, "localhost").is_err());
        let port = serve_once(vec![leaf, ca], key);
        let wrong = Trust::Pinned(format!("sha256:{}", "0".repeat(64)));
        assert!(connect(&wrong, port, "localhost").is_err());
    }

    #[test]
    fn a_pinned_self_signed_certificate_and_insecure() {
        let key = certs::generate_key(KeyType::EcdsaP256).unwrap();
        let cert = certs::self_signed(&key, &localhost(), now(), 30).unwrap();
        let pin = Trust::Pinned(certs::fingerprint(&cert));
        let port = serve_once(vec![cert.clone()], key.clone());
        assert_eq!(connect(&pin, port, "localhost"), Ok(()));
        let port = serve_once(vec![cert], key);
        assert_eq!(connect(&Trust::Insecure, port, "anything.example"), Ok(()));
    }

    #[test]
    fn the_flags_give_the_check() {
        let args = |fp: Option<&str>, insecure| TrustArgs {
            ca_fingerprint: fp.map(str::to_owned),
            insecure,
        };
        assert_eq!(args(None, false).trust(), Ok(None));
        assert_eq!(args(None, true).trust(), Ok(Some(Trust::Insecure)));
        let pin = format!("SHA256:{}", "AB".repeat(32));
        assert_eq!(
            args(Some(&pin), false).trust(),
            Ok(Some(Trust::Pinned(format!("sha256:{}", "ab".repeat(32)))))
        );
        assert!(args(Some("nope"), false).trust().is_err());
        assert_eq!(Trust::Insecure.pin(), None);
    }
}
