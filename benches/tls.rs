//! TLS (`src/tls/`): what one full handshake costs, server and client together on this machine,
//! with the relay's policy (Mozilla intermediate, TLS 1.3 and 1.2) and its issued certificates
//! (local CA, ECDSA P-256 and RSA 2048), the client pinning the CA as a paired device does. Also
//! what issuing a certificate costs (a renewal: a new key and a signature).
//!
//! The two ends talk over a Unix socket pair; the server side runs on its own thread, as a relay
//! worker would. Run with `cargo bench --bench tls`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixStream;
use std::sync::mpsc;

use criterion::{criterion_group, criterion_main, Criterion};
use openssl::ssl::{SslAcceptor, SslConnector, SslVersion};

use beepmyphone::config::{TlsKeyType, TlsMode, TlsSettings};
use beepmyphone::tls::client::{connector, Trust};
use beepmyphone::tls::{DiskCertificates, Served};

/// A relay's acceptor and the pinning connector of a device, for a local CA with `key_type`.
fn ends(
    key_type: TlsKeyType,
    version: SslVersion,
) -> (SslAcceptor, SslConnector, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let settings = TlsSettings {
        mode: TlsMode::LocalCa,
        key_type,
        ..TlsSettings::default()
    };
    let served = Served::default();
    let provider = DiskCertificates::new(&settings, dir.path(), None, served.clone()).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let pin = provider.prepare(now).unwrap().0.pin.unwrap();
    let mut acceptor = served.acceptor().unwrap();
    acceptor.set_max_proto_version(Some(version)).unwrap();
    (
        acceptor.build(),
        connector(&Trust::Pinned(pin)).unwrap(),
        dir,
    )
}

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls_handshake");
    for (name, key_type, version) in [
        (
            "ecdsa_p256_tls13",
            TlsKeyType::EcdsaP256,
            SslVersion::TLS1_3,
        ),
        (
            "ecdsa_p256_tls12",
            TlsKeyType::EcdsaP256,
            SslVersion::TLS1_2,
        ),
        ("rsa2048_tls13", TlsKeyType::Rsa2048, SslVersion::TLS1_3),
    ] {
        let (acceptor, connector, _dir) = ends(key_type, version);
        let (to_server, streams) = mpsc::channel::<UnixStream>();
        let (done, finished) = mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            for stream in streams {
                let tls = acceptor.accept(stream).expect("server handshake");
                drop(tls);
                done.send(()).unwrap();
            }
        });
        group.bench_function(name, |b| {
            b.iter(|| {
                let (client, server_end) = UnixStream::pair().unwrap();
                to_server.send(server_end).unwrap();
                let tls = connector
                    .connect("localhost", client)
                    .expect("client handshake");
                finished.recv().unwrap();
                drop(tls);
            });
        });
        drop(to_server);
        server.join().unwrap();
    }
    group.finish();
}

fn issuing(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls_issue");
    group.sample_size(20);
    for (name, key_type) in [
        ("ecdsa_p256", TlsKeyType::EcdsaP256),
        ("rsa2048", TlsKeyType::Rsa2048),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let settings = TlsSettings {
            mode: TlsMode::LocalCa,
            key_type,
            ..TlsSettings::default()
        };
        let provider =
            DiskCertificates::new(&settings, dir.path(), None, Served::default()).unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        provider.prepare(now).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                beepmyphone_actors::ports::CertificateProvider::renew(&provider, now).unwrap()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, handshakes, issuing);
criterion_main!(benches);
