//! The command line over TLS, as the real binary: `pairing-code` shows the CA fingerprint, a
//! `listen` that pins it pairs and receives (and keeps the pin), `send` refuses an untrusted
//! relay, and `cert status | renew | export-ca`, with a running relay serving what `renew` wrote.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use beepmyphone::config::TlsMode;
use beepmyphone::tls::certs;

use crate::helpers::*;

/// The environment that makes a local command see the test relay's TLS mode (its other
/// settings are the defaults, with `--data-dir` pointing at the relay's data).
fn env_for(mode: TlsMode) -> [(&'static str, &'static str); 1] {
    [("BEEP__TLS__MODE", mode.as_str())]
}

async fn local(app: &TestApp, mode: TlsMode, args: &[&str]) -> (i32, String, String) {
    let dir = app.data_dir.path().to_str().unwrap().to_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", &dir]);
    beep_with(app.data_dir.path(), &all, &env_for(mode)).await
}

fn line_value<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} line in {text}"))
        .trim()
}

fn listen(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
        .arg("listen")
        .args(args)
        .env_remove("BEEP_SERVER")
        .env_remove("BEEP_CA_FINGERPRINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("listen starts")
}

async fn output_of(child: tokio::process::Child) -> (i32, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("listen finished in time")
        .expect("listen ran");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[actix_rt::test]
async fn a_device_pinning_the_local_ca_pairs_receives_and_keeps_its_pin() {
    let app = spawn_app_with(|s| s.tls.mode = TlsMode::LocalCa).await;
    let pin = app.certificate().pin.unwrap();
    let (code, out, err) = local(&app, TlsMode::LocalCa, &["pairing-code", "--no-qr"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(line_value(&out, "CA fingerprint:"), pin);
    let pairing = line_value(&out, "Pairing code:").to_owned();
    assert!(
        out.contains(&format!("--ca-fingerprint {pin} --code {pairing}")),
        "{out}"
    );
    assert!(line_value(&out, "Server:").starts_with("https://"), "{out}");

    // The fingerprint as a user may type it: upper case with colons.
    let typed = pin
        .trim_start_matches("sha256:")
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let credentials = app.data_dir.path().join("device.json");
    let creds = credentials.to_str().unwrap();
    let child = listen(&[
        "--server",
        &app.address,
        "--ca-fingerprint",
        &format!("SHA256:{typed}"),
        "--code",
        &pairing,
        "--credentials",
        creds,
        "--count",
        "1",
    ]);
    eventually("listen paired", || async {
        credentials.exists().then_some(())
    })
    .await;
    let first = app.publish(json!({"title": "pinned"})).await;
    let (code, out, err) = output_of(child).await;
    assert_eq!(code, 0, "{err}");
    let printed: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(printed["id"], first["id"]);
    wait_for_delivery_status(&app, first["id"].as_str().unwrap(), "acked").await;
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&credentials).unwrap()).unwrap();
    assert_eq!(stored["caFingerprint"], pin.as_str());

    // The next run needs no flag: the pin comes with the credentials.
    let second = app.publish(json!({"title": "again"})).await;
    let (code, out, err) = output_of(listen(&["--credentials", creds, "--count", "1"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(second["id"].as_str().unwrap()), "{out}");
    // --insecure for one run does not drop the pin kept for the next.
    let third = app.publish(json!({"title": "unchecked"})).await;
    let (code, out, err) = output_of(listen(&[
        "--credentials",
        creds,
        "--insecure",
        "--count",
        "1",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(third["id"].as_str().unwrap()), "{out}");
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&credentials).unwrap()).unwrap();
    assert_eq!(stored["caFingerprint"], pin.as_str());

    // send: refused without the pin (the system's store does not know the CA), with a hint;
    // accepted with it.
    let token = app.admin_token.clone();
    let server = app.address.clone();
    let (code, _, err) = beep_with(
        app.data_dir.path(),
        &["send", "--server", &server, "--token", &token, "untrusted"],
        &[],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("not trusted") && err.contains("--ca-fingerprint"),
        "{err}"
    );
    assert!(!err.contains(&token));
    let (code, out, err) = beep_with(
        app.data_dir.path(),
        &[
            "send",
            "--server",
            &server,
            "--token",
            &token,
            "--ca-fingerprint",
            &pin,
            "pinned",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("ntf_"), "{out}");
    // --insecure is explicit, and says so.
    let (code, _, err) = beep_with(
        app.data_dir.path(),
        &[
            "send",
            "--server",
            &server,
            "--token",
            &token,
            "--insecure",
            "unchecked",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("not checked"), "{err}");
    // A fingerprint that is not one is a usage error.
    let (code, _, err) = beep_with(
        app.data_dir.path(),
        &[
            "send",
            "--server",
            &server,
            "--token",
            &token,
            "--ca-fingerprint",
            "abc",
            "x",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{err}");
}

#[actix_rt::test]
async fn cert_status_renew_and_export_ca_and_the_running_relay_serves_the_renewal() {
    let app = spawn_app_with(|s| s.tls.mode = TlsMode::LocalCa).await;
    let tls = app.state.tls.clone().unwrap();
    let served = tls.status.snapshot().certificate;

    let (code, out, err) = local(&app, TlsMode::LocalCa, &["cert", "status"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(line_value(&out, "Mode:"), "local-ca");
    assert_eq!(line_value(&out, "Fingerprint:"), served.fingerprint);
    assert_eq!(
        line_value(&out, "Pin (device):"),
        served.pin.clone().unwrap()
    );
    assert!(
        line_value(&out, "Valid until:").contains("days left"),
        "{out}"
    );

    let (code, pem, err) = local(&app, TlsMode::LocalCa, &["cert", "export-ca"]).await;
    assert_eq!(code, 0, "{err}");
    let ca = certs::read_chain(pem.as_bytes()).unwrap();
    assert_eq!(ca.len(), 1);
    assert_eq!(Some(certs::fingerprint(&ca[0])), served.pin);
    assert!(!pem.contains("PRIVATE KEY"));

    let (code, out, err) = local(&app, TlsMode::LocalCa, &["cert", "renew"]).await;
    assert_eq!(code, 0, "{err}");
    let renewed = line_value(&out, "Fingerprint:").to_owned();
    assert_ne!(renewed, served.fingerprint);
    assert_eq!(
        line_value(&out, "Pin (device):"),
        served.pin.clone().unwrap()
    );
    // The relay sees the new files on its next watch tick and serves them.
    app.clock.advance(Duration::from_secs(10));
    eventually("the relay serves the renewal", || {
        let (tls, renewed) = (tls.clone(), renewed.clone());
        async move { (tls.status.snapshot().certificate.fingerprint == renewed).then_some(()) }
    })
    .await;
    let (status, body) = app.get("/health/live", None).await;
    assert_eq!(status, 200, "{body}");
    app.state
        .audit
        .writer()
        .send(beepmyphone_actors::audit::Flush)
        .await
        .unwrap()
        .unwrap();
    let (_, audit) = app
        .get(
            "/api/v1/audit?action=tls.certificate_renewed",
            Some(&app.admin_token),
        )
        .await;
    let by_cli: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actorId"] == "cli")
        .collect();
    assert_eq!(by_cli.len(), 2, "{audit}");
    assert_eq!(by_cli[0]["outcome"], "ok");
    assert_eq!(by_cli[0]["subject"], renewed.as_str());
    let (_, reloads) = app
        .get(
            "/api/v1/audit?action=tls.certificate_reloaded",
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(
        reloads["items"][0]["subject"],
        renewed.as_str(),
        "{reloads}"
    );
}

#[actix_rt::test]
async fn cert_commands_say_clearly_what_they_cannot_do() {
    let app = spawn_app().await;
    let (code, _, err) = local(&app, TlsMode::Off, &["cert", "status"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TLS is off"), "{err}");

    let signed = spawn_app_with(|s| s.tls.mode = TlsMode::SelfSigned).await;
    let (code, _, err) = local(&signed, TlsMode::SelfSigned, &["cert", "export-ca"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no local CA"), "{err}");
    // pairing-code pins the self-signed certificate itself.
    let (code, out, err) = local(&signed, TlsMode::SelfSigned, &["pairing-code", "--no-qr"]).await;
    assert_eq!(code, 0, "{err}");
    let own = signed.certificate();
    assert_eq!(line_value(&out, "CA fingerprint:"), own.fingerprint);

    // A local CA that is not there yet.
    let fresh = tempfile::tempdir().unwrap();
    let dir = fresh.path().to_str().unwrap();
    let (code, _, err) = beep_with(
        fresh.path(),
        &["cert", "export-ca", "--data-dir", dir],
        &env_for(TlsMode::LocalCa),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no local CA yet"), "{err}");
    let (code, _, err) = beep_with(
        fresh.path(),
        &["cert", "status", "--data-dir", dir],
        &env_for(TlsMode::LocalCa),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be served"), "{err}");
    // No code is minted when there is nothing to pin yet.
    let (code, out, err) = beep_with(
        fresh.path(),
        &["pairing-code", "--no-qr", "--data-dir", dir],
        &env_for(TlsMode::LocalCa),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no certificate to pin yet"), "{err}");
    assert!(!out.contains("Pairing code"), "{out}");
    // Mode files: renewing is the operator's CA's job.
    let (code, _, err) = beep_with(
        fresh.path(),
        &["cert", "renew", "--data-dir", dir],
        &[
            ("BEEP__TLS__MODE", "files"),
            ("BEEP__TLS__CERT_FILE", "/nonexistent/relay.crt"),
            ("BEEP__TLS__KEY_FILE", "/nonexistent/relay.key"),
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("replacing the files"), "{err}");
}
