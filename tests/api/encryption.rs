//! Encryption at rest, from outside: what a copy of the database files shows, data-key rotation
//! under load, kill -9 in the middle of re-encryption, start-up faults (wrong passphrase, missing
//! or corrupt key file), passphrase changes, plaintext rows from before encryption, and a value
//! that does not open.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::{Connection, RunQueryDsl, SqliteConnection};
use serde_json::{json, Value};

use crate::helpers::{
    beep, beep_with, database_files, eventually, spawn_app, spawn_app_with, spawn_process,
    spawn_process_with, start_in, test_settings, TestApp,
};

const PASSPHRASE: &str = "correct horse battery staple";

fn assert_nowhere_in_files(dir: &Path, needles: &[&str]) {
    let files = database_files(dir);
    assert!(
        files
            .iter()
            .any(|(name, bytes)| name.ends_with("-wal") && !bytes.is_empty()),
        "the WAL holds the recent writes: {:?}",
        files.iter().map(|(n, b)| (n, b.len())).collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} is readable in {name}"
            );
        }
    }
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// `serve` on `dir` that is expected to stop before serving: its exit code and stderr.
async fn serve_fails(dir: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let data_dir = dir.to_str().unwrap();
    let (code, _out, err) = beep_with(
        dir,
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        env,
    )
    .await;
    (code, err)
}

/// Starts the relay binary on `dir`, publishes one notification titled `title`, and kills it.
async fn publish_one_and_kill(dir: &Path, env: &[(&str, &str)], title: &str) {
    let relay = spawn_process_with(dir, env);
    let res = awc::Client::new()
        .post(format!("{}/api/v1/notifications", relay.address))
        .insert_header(("Authorization", format!("Bearer {}", admin_token(dir))))
        .send_json(&json!({ "title": title }))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    relay.kill_9();
}

/// The data keys as `GET /keys/data` shows them.
async fn data_keys(app: &TestApp) -> Value {
    let (code, body) = app.get("/api/v1/keys/data", Some(&app.admin_token)).await;
    assert_eq!(code, 200, "{body}");
    body
}

fn key(keys: &Value, id: u64) -> &Value {
    keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("no key {id}: {keys}"))
}

fn current(keys: &Value, purpose: &str) -> u64 {
    keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["purpose"] == purpose && k["state"] == "current")
        .and_then(|k| k["id"].as_u64())
        .unwrap_or_else(|| panic!("no current {purpose} key: {keys}"))
}

/// Every notification title the API lists, following the cursor.
async fn all_titles(client: &awc::Client, address: &str, token: &str) -> Vec<String> {
    let mut titles = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{address}/api/v1/notifications?limit=500&cursor={c}"),
            None => format!("{address}/api/v1/notifications?limit=500"),
        };
        let mut res = client
            .get(url)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        let page: Value = res.json().limit(16 * 1024 * 1024).await.unwrap();
        for item in page["items"].as_array().unwrap() {
            titles.push(item["title"].as_str().unwrap().to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return titles,
        }
    }
}

#[actix_web::test]
async fn nothing_published_can_be_found_in_the_database_its_wal_or_its_shm() {
    let app = spawn_app().await;
    let device = app.pair_device("Secret-Phone-Name-42").await;
    let (code, body) = app
        .patch(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
            &json!({"settings": {"quietHours": {"start": "22:00", "end": "07:00",
                                               "timezone": "Pacific/Chatham"}}}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let published = app
        .publish(json!({
            "title": "on /var secret-title-42", "body": "secret-body-42 is full",
            "app": "secret-app-42", "tags": ["secret-tag-42"],
            "clickUrl": "https://secret-click.example/42", "idempotencyKey": "secret-idem-42",
        }))
        .await;
    // The relay reads it all back, and its filters still work.
    let (code, list) = app
        .get(
            "/api/v1/notifications?app=secret-app-42&tag=secret-tag-42",
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(code, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["id"], published["id"]);
    assert_eq!(items[0]["title"], "on /var secret-title-42");
    assert_eq!(items[0]["body"], "secret-body-42 is full");
    assert_eq!(items[0]["tags"], json!(["secret-tag-42"]));
    assert_eq!(items[0]["clickUrl"], "https://secret-click.example/42");
    for other in [
        "?app=secret-app-4",
        "?tag=secret-tag-4",
        "?app=SECRET-APP-42",
    ] {
        let (_, none) = app
            .get(
                &format!("/api/v1/notifications{other}"),
                Some(&app.admin_token),
            )
            .await;
        assert_eq!(none["items"], json!([]), "{other}: {none}");
    }
    // The same idempotency key is still recognised.
    let again = app
        .publish(json!({"title": "again", "idempotencyKey": "secret-idem-42"}))
        .await;
    assert_eq!(again["id"], published["id"]);
    let (_, shown) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(shown["name"], "Secret-Phone-Name-42", "{shown}");
    assert_eq!(
        shown["settings"]["quietHours"]["timezone"],
        "Pacific/Chatham"
    );
    let (_, by_platform) = app
        .get("/api/v1/devices?platform=android", Some(&app.admin_token))
        .await;
    assert_eq!(
        by_platform["items"].as_array().unwrap().len(),
        1,
        "{by_platform}"
    );
    let (_, other_platform) = app
        .get("/api/v1/devices?platform=ios", Some(&app.admin_token))
        .await;
    assert_eq!(other_platform["items"], json!([]));

    assert_nowhere_in_files(
        app.data_dir.path(),
        &[
            "secret-title-42",
            "secret-body-42",
            "secret-app-42",
            "secret-tag-42",
            "secret-click",
            "secret-idem-42",
            "Secret-Phone-Name-42",
            "Pacific/Chatham",
        ],
    );
}

#[actix_web::test]
async fn rotation_under_publishing_load_delivers_everything_and_moves_every_row() {
    let app = spawn_app_with(|s| s.encryption.reencrypt_batch_rows = 40).await;
    let device = app.pair_device("phone").await;
    let mut socket = app.connect_device(&device).await;
    let before = data_keys(&app).await;
    let old_content = current(&before, "content");
    let old_devices = current(&before, "devices");

    // 300 publishes in flight, and a rotation among them.
    let total = 300;
    let publishes = futures_util::future::join_all((0..total).map(|i| {
        let app = &app;
        async move {
            let (code, body) = app
                .post(
                    "/api/v1/notifications",
                    Some(&app.admin_token),
                    &json!({"title": format!("n{i}"), "tags": [format!("t{}", i % 7)]}),
                )
                .await;
            assert_eq!(code, 202, "{body}");
        }
    }));
    let empty = json!({});
    let rotate = || app.post("/api/v1/keys/data/rotate", Some(&app.admin_token), &empty);
    let rotation = async {
        let (code, body) = rotate().await;
        assert_eq!(code, 201, "{body}");
        body
    };
    let ((), rotated) = futures_util::join!(
        async {
            publishes.await;
        },
        rotation
    );
    assert_eq!(rotated["created"].as_array().unwrap().len(), 3, "{rotated}");
    let new_content = current(&rotated, "content");
    assert!(new_content > old_content, "{rotated}");
    assert_eq!(key(&rotated, old_content)["state"], "decrypt_only");
    // A second rotation within the minute is refused, and changes nothing.
    let (code, refused) = rotate().await;
    assert_eq!(code, 429, "{refused}");

    // Every notification is delivered, readable (acked as it comes: the in-flight window is
    // smaller than the load).
    let mut titles = HashSet::new();
    while titles.len() < total {
        let items = socket.receive(1).await;
        socket.ack_all(&items).await;
        titles.extend(
            items
                .iter()
                .map(|n| n["title"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(titles, (0..total).map(|i| format!("n{i}")).collect());

    // The key manager's next steps find the old rows and the job moves them, paced by the clock;
    // then the old keys retire (the sessions key waits for the session lifetime).
    let done = eventually("the old content and devices keys retire", || async {
        app.clock.advance(Duration::from_secs(10));
        let keys = data_keys(&app).await;
        (key(&keys, old_content)["state"] == "retired"
            && key(&keys, old_devices)["state"] == "retired")
            .then_some(keys)
    })
    .await;
    assert_eq!(done["reencryption"]["remaining"], 0, "{done}");
    assert!(
        done["reencryption"]["moved"].as_u64().unwrap() >= 1,
        "{done}"
    );
    assert_eq!(done["reencryption"]["failed"], 0, "{done}");
    let listed = all_titles(&app.client, &app.address, &app.admin_token).await;
    assert_eq!(listed.len(), total);
    assert_eq!(
        listed.into_iter().collect::<HashSet<_>>(),
        (0..total).map(|i| format!("n{i}")).collect()
    );
    let (_, tagged) = app
        .get(
            "/api/v1/notifications?tag=t3&limit=500",
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(
        tagged["items"].as_array().unwrap().len(),
        (0..total).filter(|i| i % 7 == 3).count()
    );
    let (_, health) = app.get("/health", Some(&app.admin_token)).await;
    let encryption = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "encryption")
        .cloned()
        .unwrap_or_else(|| panic!("{health}"));
    assert_eq!(encryption["status"], "healthy", "{health}");
}

/// The rows the old content key (id 1) still covers, from `keys status`.
async fn rows_under_first_content_key(dir: &Path) -> u64 {
    let (code, out, err) = beep(
        dir,
        &["keys", "status", "--data-dir", dir.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("1  content"))
        .unwrap_or_else(|| panic!("{out}"));
    line.rsplit(", ")
        .next()
        .and_then(|rows| rows.strip_suffix(" rows"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count in {line:?}"))
}

#[actix_web::test]
async fn kill_9_during_re_encryption_loses_nothing_and_the_job_finishes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let total = 2_000;
    {
        let relay = spawn_process(dir.path());
        let token = admin_token(dir.path());
        for batch in 0..total / 500 {
            let items: Vec<Value> = (0..500)
                .map(|i| json!({"title": format!("n{}", batch * 500 + i)}))
                .collect();
            let res = client
                .post(format!("{}/api/v1/notifications/batch", relay.address))
                .insert_header(("Authorization", format!("Bearer {token}")))
                .send_json(&json!({"items": items}))
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 202);
        }
        relay.kill_9();
    }
    let data_dir = dir.path().to_str().unwrap();
    let (code, out, err) = beep(
        dir.path(),
        &["keys", "rotate", "--data", "--data-dir", data_dir],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(rows_under_first_content_key(dir.path()).await, total);

    // A slow job (20 rows every 50 ms), killed once it has started.
    let relay = spawn_process_with(
        dir.path(),
        &[
            ("BEEP__ENCRYPTION__REENCRYPT_BATCH_ROWS", "20"),
            ("BEEP__ENCRYPTION__REENCRYPT_PAUSE_MS", "50"),
        ],
    );
    let mut left = total;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while left == total {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        left = rows_under_first_content_key(dir.path()).await;
    }
    relay.kill_9();
    let left = rows_under_first_content_key(dir.path()).await;
    assert!(
        left > 0 && left < total,
        "killed in the middle: {left} rows left"
    );

    // After a restart the job carries on and finishes; everything reads.
    let relay = spawn_process(dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rows_under_first_content_key(dir.path()).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never finished"
        );
    }
    let titles = all_titles(&client, &relay.address, &admin_token(dir.path())).await;
    assert_eq!(titles.len(), total as usize);
    assert_eq!(
        titles.into_iter().collect::<HashSet<_>>(),
        (0..total).map(|i| format!("n{i}")).collect()
    );
    drop(relay);
}

#[actix_web::test]
async fn a_wrong_or_missing_passphrase_stops_start_up_with_exit_2_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    publish_one_and_kill(
        dir.path(),
        &[("BEEP_MASTER_PASSPHRASE", PASSPHRASE)],
        "behind a passphrase",
    )
    .await;
    // No key file: the passphrase is the only way in.
    let keys: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!keys.iter().any(|k| k.starts_with("kek-")), "{keys:?}");
    let before = snapshot(dir.path());
    for (env, says) in [
        (
            vec![("BEEP_MASTER_PASSPHRASE", "wrong horse battery staple")],
            "wrong passphrase",
        ),
        (vec![], "is protected by a passphrase"),
        (
            vec![("BEEP_MASTER_PASSPHRASE", "short")],
            "at least 12 characters",
        ),
    ] {
        let (code, err) = serve_fails(dir.path(), &env).await;
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(
            !err.contains("wrong horse"),
            "the passphrase is never printed: {err}"
        );
        assert_eq!(snapshot(dir.path()), before, "{env:?} changed files");
    }
    // The right one opens everything.
    let relay = spawn_process_with(dir.path(), &[("BEEP_MASTER_PASSPHRASE", PASSPHRASE)]);
    let titles = all_titles(
        &awc::Client::new(),
        &relay.address,
        &admin_token(dir.path()),
    )
    .await;
    assert_eq!(titles, vec!["behind a passphrase".to_owned()]);
}

fn kek_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("kek-"))
        .expect("a key file")
}

#[actix_web::test]
async fn a_missing_corrupt_or_foreign_key_file_stops_start_up_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    spawn_process(dir.path()).kill_9();
    let kek = kek_file(dir.path());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kek).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let original = std::fs::read(&kek).unwrap();
    let aside = dir.path().join("kek.aside");
    std::fs::rename(&kek, &aside).unwrap();
    let before = snapshot(dir.path());
    let (code, err) = serve_fails(dir.path(), &[]).await;
    assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");
    assert!(err.contains("is missing"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    for (bytes, says) in [
        (b"short".to_vec(), "is corrupt: 5 bytes, not 32"),
        (vec![7u8; 32], "does not open the data keys"),
    ] {
        std::fs::write(&kek, &bytes).unwrap();
        let before = snapshot(dir.path());
        let (code, err) = serve_fails(dir.path(), &[]).await;
        assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");
        assert!(err.contains(says), "{says}: {err}");
        assert_eq!(snapshot(dir.path()), before);
    }
    // A passphrase for a ring that has a key file is refused too.
    std::fs::write(&kek, &original).unwrap();
    let (code, err) = serve_fails(dir.path(), &[("BEEP_MASTER_PASSPHRASE", PASSPHRASE)]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a passphrase"), "{err}");
    std::fs::remove_file(&aside).unwrap();
    spawn_process(dir.path()).kill_9();
}

/// `keys passphrase` with `stdin` as its input.
async fn keys_passphrase(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> (i32, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
        .args(["keys", "passphrase", "--data-dir", dir.to_str().unwrap()])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[actix_web::test]
async fn changing_the_passphrase_rewraps_the_keys_and_touches_no_row() {
    let dir = tempfile::tempdir().unwrap();
    publish_one_and_kill(dir.path(), &[], "kept").await;
    let db = std::fs::read(dir.path().join("beepmyphone.db")).unwrap();
    let wal = std::fs::read(dir.path().join("beepmyphone.db-wal")).unwrap();
    // Key file → passphrase: the key file goes.
    let (code, out) = keys_passphrase(
        dir.path(),
        &["--passphrase-stdin"],
        &[],
        &format!("{PASSPHRASE}\n"),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(PASSPHRASE), "{out}");
    assert!(!std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("kek-")));
    assert_eq!(
        std::fs::read(dir.path().join("beepmyphone.db")).unwrap(),
        db
    );
    assert_eq!(
        std::fs::read(dir.path().join("beepmyphone.db-wal")).unwrap(),
        wal
    );
    let (code, err) = serve_fails(dir.path(), &[]).await;
    assert_eq!(code, 2, "{err}");
    // A passphrase → another passphrase: the old one no longer opens.
    let env = [("BEEP_MASTER_PASSPHRASE", PASSPHRASE)];
    let (code, out) = keys_passphrase(
        dir.path(),
        &["--passphrase-stdin"],
        &env,
        "another long passphrase\n",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, err) = serve_fails(dir.path(), &env).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    let (code, out) = keys_passphrase(dir.path(), &["--passphrase-stdin"], &env, "x\n").await;
    assert_eq!(code, 2, "the current passphrase is checked first: {out}");
    // And back to a key file.
    let env = [("BEEP_MASTER_PASSPHRASE", "another long passphrase")];
    let (code, out) = keys_passphrase(dir.path(), &["--remove"], &env, "").await;
    assert_eq!(code, 0, "{out}");
    kek_file(dir.path());
    let relay = spawn_process(dir.path());
    let titles = all_titles(
        &awc::Client::new(),
        &relay.address,
        &admin_token(dir.path()),
    )
    .await;
    assert_eq!(titles, vec!["kept".to_owned()]);
}

#[actix_web::test]
async fn plaintext_rows_from_before_encryption_are_sealed_on_start_and_scrubbed_from_the_files() {
    let app = spawn_app().await;
    let device = app.pair_device("new-phone").await;
    let published = app
        .publish(json!({"title": "to be replaced", "app": "x", "tags": ["y"]}))
        .await;
    let dir = app.stop().await;
    // Rewrite the rows as a relay from before encryption left them: plaintext, no key, no index.
    {
        let path = dir.path().join("beepmyphone.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query(
            "UPDATE notifications SET title = 'legacy-title-77', body = 'legacy-body-77', \
             app = 'legacy-app', tags = '[\"legacy-tag\"]', click_url = 'https://legacy.example/', \
             idempotency_key = NULL, key_id = NULL, app_index = NULL",
        )
        .execute(&mut conn)
        .unwrap();
        diesel::sql_query("DELETE FROM notification_tags")
            .execute(&mut conn)
            .unwrap();
        diesel::sql_query(
            "UPDATE devices SET name = 'legacy-device-77', platform = 'linux', app_version = '1.0', \
             quiet_start = NULL, quiet_end = NULL, quiet_tz = NULL, key_id = NULL, platform_index = NULL",
        )
        .execute(&mut conn)
        .unwrap();
    }
    let settings = test_settings(dir.path());
    let app = start_in(dir, settings).await;
    let id = published["id"].as_str().unwrap();
    let found = eventually("the job seals the plaintext rows", || async {
        app.clock.advance(Duration::from_millis(100));
        let (_, list) = app
            .get(
                "/api/v1/notifications?app=legacy-app&tag=legacy-tag",
                Some(&app.admin_token),
            )
            .await;
        let keys = data_keys(&app).await;
        (list["items"].as_array().is_some_and(|i| i.len() == 1)
            && keys["reencryption"]["running"] == false)
            .then_some(list)
    })
    .await;
    assert_eq!(found["items"][0]["id"], id);
    assert_eq!(found["items"][0]["title"], "legacy-title-77");
    assert_eq!(found["items"][0]["clickUrl"], "https://legacy.example/");
    let (_, shown) = app
        .get(
            &format!("/api/v1/devices/{}", device.id),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(shown["name"], "legacy-device-77", "{shown}");
    let (_, linux) = app
        .get("/api/v1/devices?platform=linux", Some(&app.admin_token))
        .await;
    assert_eq!(linux["items"].as_array().unwrap().len(), 1, "{linux}");
    // Sealed in place, then the free pages and the WAL are scrubbed: the plaintext is gone.
    for (name, bytes) in database_files(app.data_dir.path()) {
        for needle in [
            "legacy-title-77",
            "legacy-body-77",
            "legacy-device-77",
            "legacy.example",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} is still in {name}"
            );
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Blob {
    #[diesel(sql_type = diesel::sql_types::Binary)]
    value: Vec<u8>,
}

#[actix_web::test]
async fn a_value_that_does_not_open_is_reported_for_its_row_and_the_rest_is_delivered() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let bad = app.publish(json!({"title": "tampered"})).await;
    let good = app.publish(json!({"title": "intact"})).await;
    let dir = app.stop().await;
    {
        let path = dir.path().join("beepmyphone.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        let id = bad["id"].as_str().unwrap();
        let mut title = diesel::sql_query("SELECT title AS value FROM notifications WHERE id = ?")
            .bind::<diesel::sql_types::Text, _>(id)
            .get_result::<Blob>(&mut conn)
            .unwrap()
            .value;
        let last = title.len() - 1;
        title[last] ^= 1;
        diesel::sql_query("UPDATE notifications SET title = ? WHERE id = ?")
            .bind::<diesel::sql_types::Binary, _>(title)
            .bind::<diesel::sql_types::Text, _>(id)
            .execute(&mut conn)
            .unwrap();
    }
    let settings = test_settings(dir.path());
    let app = start_in(dir, settings).await;
    // The intact one is delivered; the tampered one is not sent as something else.
    let mut socket = app.connect_device(&device).await;
    let items = socket.receive(1).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], good["id"]);
    assert_eq!(items[0]["title"], "intact");
    // Reading it is an error for that row only.
    let (code, body) = app
        .get(
            &format!("/api/v1/notifications/{}", bad["id"].as_str().unwrap()),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(code, 500, "{body}");
    let (code, body) = app
        .get(
            &format!("/api/v1/notifications/{}", good["id"].as_str().unwrap()),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // Counted and reported.
    let health = eventually("health reports the value that does not open", || async {
        app.clock.advance(Duration::from_secs(30));
        let (_, health) = app.get("/health", Some(&app.admin_token)).await;
        let encryption = health["components"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "encryption")?
            .clone();
        (encryption["status"] == "degraded").then_some(encryption)
    })
    .await;
    let reason = health["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not open") && reason.contains(bad["id"].as_str().unwrap()),
        "{reason}"
    );
    let mut res = app
        .request(awc::http::Method::GET, "/metrics", Some(&app.admin_token))
        .send()
        .await
        .unwrap();
    let text = String::from_utf8(res.body().limit(1 << 22).await.unwrap().to_vec()).unwrap();
    let failures: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("beepmyphone_crypto_open_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no failure counter"));
    assert!(failures >= 2.0, "the restore and the read: {failures}");
}

#[actix_web::test]
async fn a_lost_keys_directory_stops_start_up_and_is_not_replaced_by_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    publish_one_and_kill(dir.path(), &[], "sealed under the lost keys").await;
    let aside = dir.path().join("keys.lost");
    std::fs::rename(dir.path().join("keys"), &aside).unwrap();
    let (code, err) = serve_fails(dir.path(), &[]).await;
    assert_eq!((code, err.trim().lines().count()), (2, 1), "{err}");
    assert!(err.contains("do not open with the data keys"), "{err}");
    assert!(
        !dir.path().join("keys").exists(),
        "no new keys directory is left behind"
    );
    // Restored, it starts.
    std::fs::rename(&aside, dir.path().join("keys")).unwrap();
    let relay = spawn_process(dir.path());
    let titles = all_titles(
        &awc::Client::new(),
        &relay.address,
        &admin_token(dir.path()),
    )
    .await;
    assert_eq!(titles, vec!["sealed under the lost keys".to_owned()]);
}
