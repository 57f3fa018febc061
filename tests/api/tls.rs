//! HTTPS and WSS on the relay itself: each provider's certificates, the checks at start, the
//! protocol policy, renewal on the manual clock, hot swaps with sockets open, the renewal API,
//! health and metrics, the redirect listener, `Secure` cookies.

use std::net::TcpStream;
use std::time::Duration;

use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use serde_json::{json, Value};

use beepmyphone::config::{Settings, TlsKeyType, TlsMode};
use beepmyphone::startup::{Application, Options};
use beepmyphone::tls::certs::{self, Host, KeyType};
use beepmyphone::tls::client::Trust;
use beepmyphone_actors::audit::Flush;

use crate::helpers::*;

const DAY: Duration = Duration::from_secs(86_400);

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hosts(names: &[&str]) -> Vec<Host> {
    names.iter().map(|n| Host::parse(n).unwrap()).collect()
}

/// What one TLS handshake with the relay saw (no verification: the leaf and the protocol).
struct Handshake {
    chain: Vec<X509>,
    version: String,
}

/// A handshake on a fresh connection, limited to `versions` and, if given, TLS 1.2 `ciphers`.
async fn handshake(
    port: u16,
    versions: (SslVersion, SslVersion),
    ciphers: Option<&'static str>,
) -> Result<Handshake, String> {
    tokio::task::spawn_blocking(move || {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        // Also lets the client offer what OpenSSL's default level refuses (TLS 1.0, weak suites).
        // A suite this OpenSSL cannot even offer is as refused as one the relay declines.
        builder
            .set_cipher_list(ciphers.unwrap_or("DEFAULT:@SECLEVEL=0"))
            .map_err(|e| e.to_string())?;
        builder.set_security_level(0);
        builder.set_min_proto_version(Some(versions.0)).unwrap();
        builder.set_max_proto_version(Some(versions.1)).unwrap();
        let connector = builder.build();
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let tls = connector
            .configure()
            .unwrap()
            .verify_hostname(false)
            .connect("localhost", stream)
            .map_err(|e| e.to_string())?;
        let chain = tls
            .ssl()
            .peer_cert_chain()
            .map(|chain| chain.iter().map(|c| c.to_owned()).collect())
            .unwrap_or_default();
        Ok(Handshake {
            chain,
            version: tls.ssl().version_str().to_owned(),
        })
    })
    .await
    .unwrap()
}

/// The fingerprint of the leaf a new connection is served.
async fn served_leaf(port: u16) -> String {
    let seen = handshake(port, (SslVersion::TLS1_2, SslVersion::TLS1_3), None)
        .await
        .expect("handshake");
    certs::fingerprint(&seen.chain[0])
}

fn status_of<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {health}"))
}

async fn audit_actions(app: &TestApp, action: &str) -> Vec<Value> {
    app.state.audit.writer().send(Flush).await.unwrap().unwrap();
    let (status, body) = app
        .get(
            &format!("/api/v1/audit?action={action}&limit=500"),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// A CA and a server certificate it issued, as an operator's CA would hand them out.
struct OperatorCa {
    ca: X509,
    ca_key: PKey<Private>,
}

impl OperatorCa {
    fn new() -> Self {
        let ca_key = certs::generate_key(KeyType::EcdsaP256).unwrap();
        let ca = certs::new_ca(&ca_key, "Operator CA", now_s(), 3_650).unwrap();
        Self { ca, ca_key }
    }

    /// Writes a chain for `names`, valid from `from` for `days`, to `dir`; returns the paths.
    fn write(
        &self,
        dir: &std::path::Path,
        names: &[&str],
        from: i64,
        days: u32,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = certs::generate_key(KeyType::EcdsaP256).unwrap();
        let leaf = certs::issue(&self.ca, &self.ca_key, &key, &hosts(names), from, days).unwrap();
        self.write_pair(dir, &[leaf, self.ca.clone()], &key)
    }

    fn write_pair(
        &self,
        dir: &std::path::Path,
        chain: &[X509],
        key: &PKey<Private>,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert_file, key_file) = (dir.join("relay.crt"), dir.join("relay.key"));
        certs::write_atomic(&cert_file, &certs::chain_pem(chain).unwrap(), 0o644).unwrap();
        certs::write_atomic(&key_file, &certs::key_pem(key).unwrap(), 0o600).unwrap();
        (cert_file, key_file)
    }
}

fn files_settings(settings: &mut Settings, cert: &std::path::Path, key: &std::path::Path) {
    settings.tls.mode = TlsMode::Files;
    settings.tls.cert_file = cert.to_path_buf();
    settings.tls.key_file = key.to_path_buf();
}

/// Builds a relay that is expected not to start; returns the error.
async fn start_error(settings: Settings) -> String {
    match Application::build(settings, Options::default()).await {
        Ok(_) => panic!("the relay started"),
        Err(e) => e.to_string(),
    }
}

#[actix_rt::test]
async fn local_ca_serves_https_and_a_pinned_device_pairs_and_receives() {
    let app = spawn_app_with(|s| s.tls.mode = TlsMode::LocalCa).await;
    assert!(app.address.starts_with("https://"));
    // The CA and the server key stay private; the CA is reused by later renewals.
    let tls_dir = app.data_dir.path().join("keys/tls");
    for file in ["ca.key", "ca.crt", "server.key", "server.crt"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(tls_dir.join(file)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let ca = certs::read_chain(&std::fs::read(tls_dir.join("ca.crt")).unwrap()).unwrap();
    let pin = certs::fingerprint(&ca[0]);
    let (status, tls) = app.get("/api/v1/tls", Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{tls}");
    assert_eq!(tls["mode"], "local-ca");
    assert_eq!(tls["certificate"]["pin"], pin.as_str());
    assert_eq!(tls["certificate"]["key"], "ECDSA P-256");
    assert!(tls["certificate"]["daysLeft"].as_i64().unwrap() >= 89);
    for host in ["localhost", "127.0.0.1", "::1"] {
        assert!(
            tls["certificate"]["hosts"]
                .as_array()
                .unwrap()
                .contains(&json!(host)),
            "{tls}"
        );
    }
    // The chain served is leaf then CA, and the leaf is signed by the CA.
    let seen = handshake(app.port, (SslVersion::TLS1_2, SslVersion::TLS1_3), None)
        .await
        .unwrap();
    assert_eq!(seen.chain.len(), 2);
    assert_eq!(certs::fingerprint(&seen.chain[1]), pin);
    assert!(seen.chain[0].verify(&ca[0].public_key().unwrap()).unwrap());

    // The device pins the CA: pairs over HTTPS, holds a WSS socket, receives and acks.
    let device = app.pair_device("pinned phone").await;
    let mut ws = app.connect_device(&device).await;
    let published = app
        .publish(json!({"title": "over TLS", "targets": [device.id]}))
        .await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], published["id"]);
    ws.ack_all(&items).await;
    wait_for_delivery_status(&app, published["id"].as_str().unwrap(), "acked").await;

    // Without the pin, the system's trust store refuses the relay; a wrong pin too.
    for trust in [
        Trust::System,
        Trust::Pinned(format!("sha256:{}", "0".repeat(64))),
    ] {
        let refused = tls_client(&trust)
            .get(format!("{}/health", app.address))
            .send()
            .await;
        let error = refused.expect_err("refused").to_string();
        assert!(error.contains("certificate verify failed"), "{error}");
    }
    // The pin checks the host name too: the certificate does not cover 127.0.0.2's name.
    let pinned = tls_client(&Trust::Pinned(pin.clone()));
    let response = pinned
        .get(format!("https://127.0.0.1:{}/health", app.port))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("strict-transport-security").unwrap(),
        "max-age=31536000; includeSubDomains"
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = awc::Client::default()
        .get(format!("http://127.0.0.1:{}/health", app.port))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() == 400);
}

#[actix_rt::test]
async fn a_pin_does_not_excuse_a_wrong_host_name() {
    let app = spawn_app_with(|s| {
        s.tls.mode = TlsMode::SelfSigned;
        s.tls.hosts = vec!["relay.test".into()];
    })
    .await;
    let pin = app.certificate().pin.unwrap();
    let port = app.port;
    let connect = move |name: &'static str, pin: String| {
        tokio::task::spawn_blocking(move || {
            let connector = beepmyphone::tls::client::connector(&Trust::Pinned(pin)).unwrap();
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            connector
                .connect(name, stream)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    assert_eq!(connect("relay.test", pin.clone()).await.unwrap(), Ok(()));
    let error = connect("wrong.test", pin).await.unwrap().unwrap_err();
    assert!(error.contains("certificate verify failed"), "{error}");
}

#[actix_rt::test]
async fn self_signed_certificates_cover_the_configured_hosts_with_the_chosen_key() {
    let app = spawn_app_with(|s| {
        s.tls.mode = TlsMode::SelfSigned;
        s.tls.hosts = vec!["relay.test".into(), "10.1.2.3".into()];
        s.server.public_url = "https://beep.example.org:8443".into();
    })
    .await;
    let cert = app.certificate();
    assert_eq!(cert.mode, "self-signed");
    assert_eq!(cert.subject, cert.issuer);
    assert_eq!(cert.pin.as_deref(), Some(cert.fingerprint.as_str()));
    for host in [
        "relay.test",
        "10.1.2.3",
        "beep.example.org",
        "localhost",
        "127.0.0.1",
    ] {
        assert!(
            cert.hosts.iter().any(|h| h == host),
            "{host} in {:?}",
            cert.hosts
        );
    }
    assert_eq!(cert.key, "ECDSA P-256");
    let seen = handshake(app.port, (SslVersion::TLS1_2, SslVersion::TLS1_3), None)
        .await
        .unwrap();
    assert_eq!(seen.chain.len(), 1);
    assert_eq!(certs::fingerprint(&seen.chain[0]), cert.fingerprint);
    // A restart keeps the certificate (nothing is due).
    let dir = app.stop().await;
    let mut settings = test_settings(dir.path());
    settings.tls.mode = TlsMode::SelfSigned;
    settings.tls.hosts = vec!["relay.test".into(), "10.1.2.3".into()];
    settings.server.public_url = "https://beep.example.org:8443".into();
    let again = start_in(dir, settings.clone()).await;
    let kept = again.certificate();
    assert_eq!(kept.fingerprint, cert.fingerprint);
    // A new host name in the settings: the next start issues a certificate that covers it.
    let dir = again.stop().await;
    settings.tls.hosts.push("new.test".into());
    settings.tls.key_type = TlsKeyType::Rsa2048;
    let reissued = start_in(dir, settings).await;
    let cert = reissued.certificate();
    assert!(
        cert.hosts.iter().any(|h| h == "new.test"),
        "{:?}",
        cert.hosts
    );
    assert_eq!(cert.key, "RSA 2048");
}

#[actix_rt::test]
async fn only_tls_1_2_and_1_3_with_forward_secret_aead_suites() {
    let app = spawn_app_with(|s| s.tls.mode = TlsMode::SelfSigned).await;
    for (versions, expected) in [
        ((SslVersion::TLS1_3, SslVersion::TLS1_3), "TLSv1.3"),
        ((SslVersion::TLS1_2, SslVersion::TLS1_2), "TLSv1.2"),
    ] {
        let seen = handshake(app.port, versions, None).await.unwrap();
        assert_eq!(seen.version, expected);
    }
    for old in [SslVersion::TLS1, SslVersion::TLS1_1] {
        assert!(
            handshake(app.port, (old, old), None).await.is_err(),
            "{old:?} was accepted"
        );
    }
    // TLS 1.2 without forward secrecy, with CBC or with RC4/3DES: refused.
    for weak in [
        "AES128-SHA",
        "AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "DES-CBC3-SHA",
    ] {
        assert!(
            handshake(
                app.port,
                (SslVersion::TLS1_2, SslVersion::TLS1_2),
                Some(weak)
            )
            .await
            .is_err(),
            "{weak} was accepted"
        );
    }
    assert!(handshake(
        app.port,
        (SslVersion::TLS1_2, SslVersion::TLS1_2),
        Some("ECDHE-ECDSA-CHACHA20-POLY1305")
    )
    .await
    .is_ok());
}

#[actix_rt::test]
async fn files_that_cannot_be_served_stop_the_start_with_a_clear_error() {
    let operator = OperatorCa::new();
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let settings_for = |cert: &std::path::Path, key: &std::path::Path, names: &[&str]| {
        let mut settings = test_settings(data.path());
        files_settings(&mut settings, cert, key);
        settings.tls.hosts = names.iter().map(|n| (*n).to_owned()).collect();
        settings
    };

    // Expired ten days ago.
    let (cert, key) = operator.write(files.path(), &["relay.test"], now_s() - 40 * 86_400, 30);
    let error = start_error(settings_for(&cert, &key, &["relay.test"])).await;
    assert!(error.contains("expired"), "{error}");
    // Not valid yet.
    let (cert, key) = operator.write(files.path(), &["relay.test"], now_s() + 86_400 * 2, 30);
    let error = start_error(settings_for(&cert, &key, &["relay.test"])).await;
    assert!(error.contains("not valid before"), "{error}");
    // A host the certificate does not cover (tls.hosts, then the public URL's host).
    let (cert, key) = operator.write(files.path(), &["relay.test"], now_s(), 30);
    let error = start_error(settings_for(&cert, &key, &["other.test"])).await;
    assert!(
        error.contains("does not cover the host name other.test"),
        "{error}"
    );
    let mut public = settings_for(&cert, &key, &[]);
    public.server.public_url = "https://beep.example.org".into();
    let error = start_error(public).await;
    assert!(error.contains("beep.example.org"), "{error}");
    // A key that is not the certificate's.
    let other_key = certs::generate_key(KeyType::EcdsaP256).unwrap();
    certs::write_atomic(&key, &certs::key_pem(&other_key).unwrap(), 0o600).unwrap();
    let error = start_error(settings_for(&cert, &key, &["relay.test"])).await;
    assert!(error.contains("does not match"), "{error}");
    // A weak key (RSA 1024), self-signed.
    let weak = PKey::from_rsa(openssl::rsa::Rsa::generate(1024).unwrap()).unwrap();
    let weak_cert = {
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_pubkey(&weak).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::from_unix(now_s() - 60).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::from_unix(now_s() + 86_400 * 30).unwrap())
            .unwrap();
        let san = openssl::x509::extension::SubjectAlternativeName::new()
            .dns("relay.test")
            .build(&b.x509v3_context(None, None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&weak, openssl::hash::MessageDigest::sha256())
            .unwrap();
        b.build()
    };
    let (cert, key) = operator.write_pair(files.path(), &[weak_cert], &weak);
    let error = start_error(settings_for(&cert, &key, &["relay.test"])).await;
    assert!(error.contains("weak or unsupported key"), "{error}");
    // Missing files, garbage files.
    let missing = files.path().join("missing.crt");
    let error = start_error(settings_for(&missing, &key, &[])).await;
    assert!(error.contains("missing.crt"), "{error}");
    std::fs::write(&cert, "not a certificate").unwrap();
    let error = start_error(settings_for(&cert, &key, &[])).await;
    assert!(error.contains("no certificate"), "{error}");

    // A good chain starts, serves the chain as given, and pins nothing (the CA is the
    // operator's).
    let (cert, key) = operator.write(files.path(), &["relay.test", "127.0.0.1"], now_s(), 30);
    let good = settings_for(&cert, &key, &["relay.test"]);
    let app = start_in(data, good).await;
    let (status, tls) = app.get("/api/v1/tls", Some(&app.admin_token)).await;
    assert_eq!(status, 200, "{tls}");
    assert_eq!(tls["mode"], "files");
    assert!(tls["certificate"].get("pin").is_none(), "{tls}");
    assert_eq!(
        tls["certificate"]["issuer"],
        "CN=Operator CA, O=BeepMyPhone"
    );
    // The operator's CA in the client's store verifies it.
    let trusted = {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        let mut store = openssl::x509::store::X509StoreBuilder::new().unwrap();
        store.add_cert(operator.ca.clone()).unwrap();
        builder.set_cert_store(store.build());
        builder.set_alpn_protos(b"\x08http/1.1").unwrap();
        awc::Client::builder()
            .connector(
                awc::Connector::new()
                    .max_http_version(awc::http::Version::HTTP_11)
                    .openssl(builder.build()),
            )
            .finish()
    };
    let response = trusted
        .get(format!("https://127.0.0.1:{}/health/live", app.port))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[actix_rt::test]
async fn renewal_runs_on_the_daily_check_of_the_clock() {
    // A 31-day certificate: outside the 30-day window at start, inside it a day later. The
    // relay's clock starts a day and an hour back, so that what it issues a day later is valid
    // by the real clock the test's TLS client checks with.
    let start = chrono::Utc::now().timestamp_millis() - 25 * 3_600_000;
    let app = spawn_app_at(start, |s| {
        s.tls.mode = TlsMode::LocalCa;
        s.tls.certificate_days = 31;
    })
    .await;
    let tls = app.state.tls.clone().unwrap();
    let first = tls.status.snapshot().certificate;
    assert_eq!(served_leaf(app.port).await, first.fingerprint);
    // An hour: no check yet.
    app.clock.advance(Duration::from_secs(3_600));
    app.clock.advance(Duration::from_secs(10));
    assert_eq!(
        tls.status.snapshot().certificate.fingerprint,
        first.fingerprint
    );
    app.clock.advance(DAY);
    let renewed = eventually("the scheduled renewal", || {
        let tls = tls.clone();
        let first = first.fingerprint.clone();
        async move {
            let now = tls.status.snapshot().certificate;
            (now.fingerprint != first).then_some(now)
        }
    })
    .await;
    // The CA stays (devices keep their pin); the new leaf is what new connections get.
    assert_eq!(renewed.pin, first.pin);
    assert!(renewed.not_after_ms > first.not_after_ms);
    assert_eq!(served_leaf(app.port).await, renewed.fingerprint);
    let metrics = String::from_utf8(app.state.scrape().encode().await).unwrap();
    assert!(
        metrics.contains("beepmyphone_tls_certificate_changes_total{reason=\"renewed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "beepmyphone_tls_certificate_expiry_timestamp_seconds {}",
        renewed.not_after_ms / 1_000
    )));
    let records = audit_actions(&app, "tls.certificate_renewed").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["actor"], "system", "{records:?}");
    assert_eq!(records[0]["subject"], renewed.fingerprint.as_str());
    assert_eq!(records[0]["details"]["by"], "schedule");
}

#[actix_rt::test]
async fn renewal_through_the_api_keeps_open_sockets_and_new_ones_see_the_new_certificate() {
    let app = spawn_app_with(|s| s.tls.mode = TlsMode::LocalCa).await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let before = served_leaf(app.port).await;

    let (status, renewed) = app
        .post("/api/v1/tls/renew", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 200, "{renewed}");
    let after = renewed["certificate"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(after, before);
    // New connections at once; the socket opened before keeps its session and its deliveries.
    assert_eq!(served_leaf(app.port).await, after);
    let published = app
        .publish(json!({"title": "after the swap", "targets": [device.id]}))
        .await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], published["id"]);
    ws.ack_all(&items).await;
    wait_for_delivery_status(&app, published["id"].as_str().unwrap(), "acked").await;
    let fresh = app.connect_device(&device).await;
    fresh.close().await;

    // Recorded once, by the admin, with its request and its result.
    let records = audit_actions(&app, "tls.certificate_renewed").await;
    let outcomes: Vec<&str> = records
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "requested"], "{records:?}");
    assert_eq!(records[0]["subject"], after.as_str());
    assert_eq!(records[0]["actor"], "token", "{records:?}");

    // Admins only.
    let publisher = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "ci", "scope": "publish"}),
        )
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get("/api/v1/tls", Some(&publisher)).await.0, 403);
    assert_eq!(app.get("/api/v1/tls", None).await.0, 401);
    assert_eq!(
        app.post("/api/v1/tls/renew", Some(&publisher), &json!({}))
            .await
            .0,
        403
    );
}

#[actix_rt::test]
async fn renewal_is_refused_with_tls_off_or_for_files() {
    let plain = spawn_app().await;
    let (status, tls) = plain.get("/api/v1/tls", Some(&plain.admin_token)).await;
    assert_eq!((status, tls), (200, json!({"mode": "off"})));
    let (status, problem) = plain
        .post("/api/v1/tls/renew", Some(&plain.admin_token), &json!({}))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("TLS is off"));

    let operator = OperatorCa::new();
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = operator.write(files.path(), &["localhost"], now_s(), 60);
    let app = spawn_app_with(|s| files_settings(s, &cert, &key)).await;
    let (status, problem) = app
        .post("/api/v1/tls/renew", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("replacing the files"),
        "{problem}"
    );
    let records = audit_actions(&app, "tls.certificate_renewed").await;
    assert_eq!(records[0]["outcome"], "failed", "{records:?}");
}

#[actix_rt::test]
async fn changed_files_are_served_without_a_restart_while_sockets_stay_open() {
    let operator = OperatorCa::new();
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = operator.write(files.path(), &["localhost", "127.0.0.1"], now_s(), 60);
    let app = spawn_app_with(|s| files_settings(s, &cert, &key)).await;
    let tls = app.state.tls.clone().unwrap();
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let before = served_leaf(app.port).await;

    // The operator's renewal: new files in place (atomically), seen on the next watch tick.
    operator.write(files.path(), &["localhost", "127.0.0.1"], now_s(), 90);
    app.clock.advance(Duration::from_secs(10));
    let after = eventually("the reload", || {
        let tls = tls.clone();
        let before = before.clone();
        async move {
            let now = tls.status.snapshot().certificate.fingerprint;
            (now != before).then_some(now)
        }
    })
    .await;
    assert_eq!(served_leaf(app.port).await, after);
    let published = app
        .publish(json!({"title": "after the reload", "targets": [device.id]}))
        .await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["id"], published["id"]);
    ws.ack_all(&items).await;

    // Broken files (a key that does not match) leave the certificate in force, and say so.
    let stray = certs::generate_key(KeyType::EcdsaP256).unwrap();
    certs::write_atomic(&key, &certs::key_pem(&stray).unwrap(), 0o600).unwrap();
    app.clock.advance(Duration::from_secs(10));
    let error = eventually("the failed reload", || {
        let tls = tls.clone();
        async move { tls.status.snapshot().last_error }
    })
    .await;
    assert!(error.contains("does not match"), "{error}");
    assert_eq!(served_leaf(app.port).await, after);
    app.clock.advance(Duration::from_secs(30));
    let (_, health) = app.get("/health", Some(&app.admin_token)).await;
    assert_eq!(status_of(&health, "tls")["status"], "degraded", "{health}");
    let records = audit_actions(&app, "tls.certificate_reloaded").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["subject"], after.as_str());
}

#[actix_rt::test]
async fn health_and_metrics_follow_the_expiry() {
    let operator = OperatorCa::new();
    let files = tempfile::tempdir().unwrap();
    // Valid for 20 days (the leaf starts an hour back).
    let (cert, key) = operator.write(files.path(), &["localhost"], now_s(), 20);
    let app = spawn_app_with(|s| {
        files_settings(s, &cert, &key);
        s.tls.renew_before_days = 15;
    })
    .await;
    let component = |app: &TestApp| {
        let (client, address, token) = (
            app.client.clone(),
            app.address.clone(),
            app.admin_token.clone(),
        );
        async move {
            let mut response = client
                .get(format!("{address}/health"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let health: Value = response.json().limit(1 << 20).await.unwrap();
            status_of(&health, "tls").clone()
        }
    };
    assert_eq!(component(&app).await["status"], "healthy");
    let metrics = String::from_utf8(app.state.scrape().encode().await).unwrap();
    let expiry = app.certificate().not_after_ms / 1_000;
    assert!(metrics.contains(&format!(
        "beepmyphone_tls_certificate_expiry_timestamp_seconds {expiry}"
    )));
    // Seven days later: under 14 days left.
    app.clock.advance(DAY * 7);
    let app = &app;
    let until = |wanted: &'static str| {
        eventually(wanted, move || {
            let check = component(app);
            async move {
                let c = check.await;
                (c["status"] == wanted).then_some(c)
            }
        })
    };
    let degraded = until("degraded").await;
    assert!(
        degraded["reason"]
            .as_str()
            .unwrap()
            .contains("expires in 12 days"),
        "{degraded}"
    );
    // Past its end: unhealthy, and /health says so.
    app.clock.advance(DAY * 14);
    let expired = until("unhealthy").await;
    assert!(
        expired["reason"].as_str().unwrap().contains("expired"),
        "{expired}"
    );
}

#[actix_rt::test]
async fn the_redirect_listener_only_redirects_to_https() {
    let app = spawn_app_with(|s| {
        s.tls.mode = TlsMode::SelfSigned;
        s.tls.redirect_http_listen = "127.0.0.1:0".into();
    })
    .await;
    let redirect_port = redirect_port_of(&app);
    assert_ne!(redirect_port, app.port);
    let plain = awc::Client::builder().disable_redirects().finish();
    for (method, path) in [
        (awc::http::Method::GET, "/api/v1/devices?limit=5"),
        (awc::http::Method::POST, "/api/v1/notifications"),
        (awc::http::Method::GET, "/"),
    ] {
        let response = plain
            .request(
                method.clone(),
                format!("http://127.0.0.1:{redirect_port}{path}"),
            )
            .insert_header(("Host", format!("Relay.LAN:{redirect_port}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 308, "{method} {path}");
        assert_eq!(
            response.headers().get("location").unwrap(),
            format!("https://relay.lan:{}{path}", app.port).as_str()
        );
    }
}

/// The redirect listener's port.
fn redirect_port_of(app: &TestApp) -> u16 {
    app.redirect_port.expect("a redirect listener")
}

#[actix_rt::test]
async fn the_redirect_goes_to_the_public_url_when_it_is_https() {
    let app = spawn_app_with(|s| {
        s.tls.mode = TlsMode::SelfSigned;
        s.tls.redirect_http_listen = "127.0.0.1:0".into();
        s.server.public_url = "https://beep.example.org:8443/".into();
    })
    .await;
    let response = awc::Client::builder()
        .disable_redirects()
        .finish()
        .get(format!(
            "http://127.0.0.1:{}/dashboard/login?next=%2F",
            redirect_port_of(&app)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers().get("location").unwrap(),
        "https://beep.example.org:8443/dashboard/login?next=%2F"
    );
}

#[actix_rt::test]
async fn session_cookies_are_secure_under_tls() {
    let app = spawn_app_with(|s| s.tls.mode = TlsMode::SelfSigned).await;
    create_admin(&app, "alice").await;
    let response = app
        .request(awc::http::Method::POST, "/api/v1/auth/login", None)
        .send_json(&json!({"username": "alice", "password": ADMIN_PASSWORD}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));

    // Over plain HTTP, a client's own X-Forwarded-Proto does not make it Secure (only a trusted
    // proxy's does, as for HSTS).
    let plain = spawn_app().await;
    create_admin(&plain, "alice").await;
    let response = plain
        .request(awc::http::Method::POST, "/api/v1/auth/login", None)
        .insert_header(("X-Forwarded-Proto", "https"))
        .send_json(&json!({"username": "alice", "password": ADMIN_PASSWORD}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(response
        .headers()
        .get("strict-transport-security")
        .is_none());
}
