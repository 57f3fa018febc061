//! The binary: configuration errors, local commands, and what reaches the log.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::helpers::spawn_process;

fn beepmyphone() -> Command {
    Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
}

#[test]
fn a_missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = beepmyphone()
        .args(["serve", "--config", "/nonexistent/beep.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn a_bad_value_names_its_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = beepmyphone()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("BEEP__DELIVERY__ACK_TIMEOUT_SECONDS", "soon")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("delivery.ack_timeout_seconds"), "{stderr}");

    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = beepmyphone()
        .args(["serve", "--config", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn a_port_in_use_is_a_clear_error_and_exit_1_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = beepmyphone()
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("beepmyphone: cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_repository_config_toml_loads_and_equals_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let overrides = beepmyphone::config::Overrides {
        config: Some(path.into()),
        ..Default::default()
    };
    let loaded = beepmyphone::config::Settings::load(&overrides).expect("config.toml loads");
    let defaults = beepmyphone::config::Settings::default();
    assert_eq!(
        serde_json::to_value(&loaded).unwrap(),
        serde_json::to_value(&defaults).unwrap()
    );
}

#[test]
fn local_commands_mint_tokens_and_pairing_codes_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = beepmyphone()
        .args([
            "token",
            "create",
            "--scope",
            "publish",
            "--name",
            "ci",
            "--data-dir",
        ])
        .arg(&data)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("bmp_") && token.len() > 40, "{token}");

    let out = beepmyphone()
        .args([
            "pairing-code",
            "--server",
            "https://relay.example:8443/",
            "--data-dir",
        ])
        .arg(&data)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Server:       https://relay.example:8443\n"),
        "{text}"
    );
    let code = text
        .lines()
        .find_map(|l| l.strip_prefix("Pairing code: "))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(code.len(), 9);
    assert!(
        text.contains('█') || text.contains('▀') || text.contains('▄'),
        "a QR code is printed"
    );

    let out = beepmyphone()
        .args(["token", "create", "--scope", "root", "--name", "x"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The running relay accepts both.
    let relay = spawn_process(&data);
    actix_rt::System::new().block_on(async {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let res = client
            .post(format!("{}/api/v1/devices/pair", relay.address))
            .send_json(&json!({"code": code, "name": "phone", "platform": "ios"}))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 201);
        let res = client
            .post(format!("{}/api/v1/notifications", relay.address))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_json(&json!({"title": "from a CLI-made token"}))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 202);
    });
}

#[test]
fn secrets_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let relay = spawn_process(dir.path());
    let admin = std::fs::read_to_string(dir.path().join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("initial-admin-token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let secrets = actix_rt::System::new().block_on(async {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let auth = ("Authorization", format!("Bearer {admin}"));
        let code: serde_json::Value = client
            .post(format!("{}/api/v1/pairing-codes", relay.address))
            .insert_header(auth.clone())
            .send_json(&json!({}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let code = code["code"].as_str().unwrap().to_owned();
        let paired: serde_json::Value = client
            .post(format!("{}/api/v1/devices/pair", relay.address))
            .send_json(&json!({"code": code, "name": "phone", "platform": "ios"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let refresh = paired["refreshToken"].as_str().unwrap().to_owned();
        let refreshed: serde_json::Value = client
            .post(format!("{}/api/v1/auth/refresh", relay.address))
            .send_json(&json!({"refreshToken": refresh}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // A bad token and a rejected request are logged too; their values must not be.
        let _ = client
            .get(format!("{}/api/v1/devices", relay.address))
            .insert_header(("Authorization", "Bearer bmp_wrong-secret-value"))
            .send()
            .await
            .unwrap();
        let created: serde_json::Value = client
            .post(format!("{}/api/v1/tokens", relay.address))
            .insert_header(auth.clone())
            .send_json(&json!({"name": "x", "scope": "publish"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        vec![
            admin.clone(),
            code.clone(),
            code.replace('-', ""),
            paired["accessToken"].as_str().unwrap().to_owned(),
            refresh,
            refreshed["refreshToken"].as_str().unwrap().to_owned(),
            refreshed["accessToken"].as_str().unwrap().to_owned(),
            "bmp_wrong-secret-value".to_owned(),
            created["token"].as_str().unwrap().to_owned(),
        ]
    });
    // The log drains asynchronously: wait for the last event to show up.
    let mut log = String::new();
    for _ in 0..100 {
        log = relay.output.lock().unwrap().clone();
        if log.contains("api token created") {
            break;
        }
        // Waiting on another OS process's asynchronous log drain: bounded retry.
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        log.contains("request_id"),
        "requests are logged with their id: {log}"
    );
    for secret in secrets {
        assert!(!secret.is_empty());
        assert!(!log.contains(&secret), "a secret reached the log");
    }
}

/// Every directory and file under `dir` (not following links), with its permission bits.
fn modes_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = vec![(
        dir.to_path_buf(),
        std::fs::symlink_metadata(dir).unwrap().permissions().mode() & 0o777,
    )];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(modes_under(&path));
        } else {
            out.push((path, meta.permissions().mode() & 0o777));
        }
    }
    out
}

fn assert_owner_only(dir: &std::path::Path) {
    let modes = modes_under(dir);
    assert!(modes.len() > 3, "{modes:?}");
    for (path, mode) in modes {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
}

#[actix_rt::test]
async fn a_fresh_data_directory_is_owner_only() {
    let app = crate::helpers::spawn_app().await;
    let dir = app.data_dir.path().to_path_buf();
    assert!(dir.join("beepmyphone.db").exists());
    assert!(dir.join("initial-admin-token").exists());
    assert_owner_only(&dir);
}

#[actix_rt::test]
async fn a_loose_existing_data_directory_is_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().to_path_buf();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data.join("beepmyphone.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let settings = crate::helpers::test_settings(&data);
    let app = crate::helpers::start_in(root, settings).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    assert_owner_only(&data);
    drop(app);
}

#[test]
fn completions_and_the_manual_page_cover_every_subcommand() {
    let run = |args: &[&str]| {
        let out = beepmyphone().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let subcommands = [
        "serve",
        "send",
        "listen",
        "capture",
        "pairing-code",
        "completions",
        "man",
    ];
    let (code, bash, _) = run(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    assert!(bash.contains("_beepmyphone()"), "{bash}");
    let (code, zsh, _) = run(&["completions", "zsh"]);
    assert_eq!(code, Some(0));
    assert!(zsh.starts_with("#compdef beepmyphone"), "{zsh}");
    let (code, fish, _) = run(&["completions", "fish"]);
    assert_eq!(code, Some(0));
    for script in [&bash, &zsh, &fish] {
        for sub in subcommands {
            assert!(script.contains(sub), "{sub} missing from\n{script}");
        }
    }
    // A flag of a subcommand, not just the names.
    assert!(fish.contains("connect-rate"), "{fish}");

    let (code, page, _) = run(&["man"]);
    assert_eq!(code, Some(0));
    assert!(page.contains(".TH beepmyphone 1"), "{page}");
    for sub in subcommands {
        // roff escapes every dash: `beepmyphone\-pairing\-code(1)`.
        let entry = format!("beepmyphone\\-{}(1)", sub.replace('-', "\\-"));
        assert!(page.contains(&entry), "{entry} missing from\n{page}");
    }

    let (code, _, stderr) = run(&["completions", "tcsh"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("possible values: bash, elvish, fish, powershell, zsh"),
        "{stderr}"
    );
}
