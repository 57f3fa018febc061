//! The audit log from outside: every event kind produced through the API and found through
//! `GET /api/v1/audit`; `audit verify` against a real database edited with SQL (each tamper kind);
//! inclusion proofs; kill -9 during a burst of audited operations; a log that cannot be written
//! (health, 503, recovery); archives and retention; the checkpoint webhook.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use awc::http::Method;
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use serde_json::{json, Value};

use beepmyphone::audit::merkle;
use beepmyphone::audit::note::{Checkpoint, NoteVerifier};
use beepmyphone_actors::audit::{Flush, Maintain};
use beepmyphone_actors::clock::Clock;
use beepmyphone_actors::ports::Action;
use beepmyphone_actors::queue::InjectFault;

use crate::helpers::{
    beep, create_admin, eventually, record_requests, spawn_app, spawn_app_with, spawn_process,
    start_in, test_settings, TestApp,
};

const PASSWORD: &str = crate::helpers::ADMIN_PASSWORD;

/// Writes everything the writer holds and signs a checkpoint; the log's size.
async fn flush(app: &TestApp) -> u64 {
    app.state
        .audit
        .writer()
        .send(Flush)
        .await
        .expect("the writer answers")
        .expect("the log is written")
}

/// `GET /api/v1/audit?{query}` (every page), newest first.
async fn records(app: &TestApp, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/audit?{query}&cursor={c}&limit=500"),
            None => format!("/api/v1/audit?{query}&limit=500"),
        };
        let (status, body) = app.get(&path, Some(&app.admin_token)).await;
        assert_eq!(status, 200, "{path}: {body}");
        out.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// Logs in; the cookie (`beep_session=…`) and CSRF token.
async fn login(app: &TestApp, name: &str) -> (String, String) {
    let mut res = app
        .request(Method::POST, "/api/v1/auth/login", None)
        .send_json(&json!({"username": name, "password": PASSWORD}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: Value = res.json().await.unwrap();
    (cookie, body["csrfToken"].as_str().unwrap().to_owned())
}

/// A request with a session cookie and its CSRF token; the status and body.
async fn as_session(
    app: &TestApp,
    method: Method,
    path: &str,
    (cookie, csrf): &(String, String),
) -> (u16, Value) {
    let mut res = app
        .request(method, path, None)
        .insert_header(("Cookie", cookie.clone()))
        .insert_header(("X-CSRF-Token", csrf.clone()))
        .send()
        .await
        .unwrap();
    let bytes = res.body().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (res.status().as_u16(), body)
}

/// A round trip, then the clock moves.
async fn advance(app: &TestApp, by: Duration) {
    let _ = app.get("/health", None).await;
    app.clock.advance(by);
}

fn one<'a>(found: &'a [Value], what: &str) -> &'a Value {
    found.first().unwrap_or_else(|| panic!("no {what} record"))
}

#[actix_rt::test]
async fn every_event_kind_is_recorded_and_found_through_the_api() {
    // Over TLS (local CA), so that certificate renewals and reloads are among the events.
    let app = spawn_app_with(|s| {
        s.sessions.max_per_admin = 1;
        s.limits.ip_per_minute = 2;
        s.limits.trusted_proxies = vec!["127.0.0.1".into()];
        s.tls.mode = beepmyphone::config::TlsMode::LocalCa;
    })
    .await;

    // Admins: a refused login, a login, a second one that ends the first (the cap), a session
    // deleted, a logout.
    create_admin(&app, "alice").await;
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"username": "mallory-typo", "password": "nope"}),
        )
        .await;
    assert_eq!(status, 401);
    let _first = login(&app, "alice").await;
    let second = login(&app, "alice").await;
    let (status, sessions) = as_session(&app, Method::GET, "/api/v1/auth/sessions", &second).await;
    assert_eq!(status, 200, "{sessions}");
    let session_id = sessions["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = as_session(
        &app,
        Method::DELETE,
        &format!("/api/v1/auth/sessions/{session_id}"),
        &second,
    )
    .await;
    assert_eq!(status, 204);
    let third = login(&app, "alice").await;
    let (status, _) = as_session(&app, Method::POST, "/api/v1/auth/logout", &third).await;
    assert_eq!(status, 204);

    // API tokens: created, used for the first time, deleted.
    let (status, token) = app
        .post(
            "/api/v1/tokens",
            Some(&app.admin_token),
            &json!({"name": "ci", "scope": "publish"}),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    let (token_id, secret) = (
        token["id"].as_str().unwrap().to_owned(),
        token["token"].as_str().unwrap().to_owned(),
    );
    let (status, _) = app
        .post(
            "/api/v1/notifications",
            Some(&secret),
            &json!({"title": "hi"}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        app.delete(
            &format!("/api/v1/tokens/{token_id}"),
            Some(&app.admin_token)
        )
        .await,
        204
    );

    // Devices: a code, a pairing, a refused pairing, a refresh, a reused refresh token, a logout,
    // a deletion.
    let phone = app.pair_device("Alice's phone").await;
    let (status, _) = app
        .post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": "AAAA-BBBB", "name": "x", "platform": "android"}),
        )
        .await;
    assert_eq!(status, 409);
    let refresh = json!({"refreshToken": phone.refresh_token});
    let (status, fresh) = app.post("/api/v1/auth/refresh", None, &refresh).await;
    assert_eq!(status, 200, "{fresh}");
    let (status, _) = app.post("/api/v1/auth/refresh", None, &refresh).await;
    assert_eq!(status, 401);
    let tablet = app.pair_device("tablet").await;
    let (status, _) = app
        .post(
            "/api/v1/auth/logout",
            Some(&tablet.access_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 204);
    // `device revoke` from the CLI, on the relay's data directory.
    let data_dir = app.data_dir.path().to_str().unwrap().to_owned();
    let cwd = tempfile::tempdir().unwrap();
    let (code, _, err) = crate::helpers::beep(
        cwd.path(),
        &["device", "revoke", &tablet.id, "--data-dir", &data_dir],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        app.delete(
            &format!("/api/v1/devices/{}", tablet.id),
            Some(&app.admin_token)
        )
        .await,
        204
    );

    // An IP blocked by its violations, then unblocked.
    let offender = ("x-forwarded-for", "198.51.100.7");
    for _ in 0..12 {
        let _ = app
            .request(Method::GET, "/api/v1/devices", None)
            .insert_header(offender)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        app.delete("/api/v1/blocks/198.51.100.7", Some(&app.admin_token))
            .await,
        204
    );

    // Keys: both rotated on demand.
    let (status, key) = app
        .post("/api/v1/keys/rotate", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 201, "{key}");
    let new_kid = key["kid"].as_str().unwrap().to_owned();
    let (status, data) = app
        .post(
            "/api/v1/keys/data/rotate",
            Some(&app.admin_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 201, "{data}");

    // The TLS certificate: renewed on request, then reloaded when its file is replaced (the same
    // bytes under a new inode are a change).
    let (status, tls) = app
        .post("/api/v1/tls/renew", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(status, 200, "{tls}");
    let server_crt = app.data_dir.path().join("keys/tls/server.crt");
    let pem = std::fs::read(&server_crt).unwrap();
    std::fs::remove_file(&server_crt).unwrap();
    beepmyphone::tls::certs::write_atomic(&server_crt, &pem, 0o600).unwrap();
    eventually("the certificate reloaded", || async {
        app.clock.advance(Duration::from_secs(10));
        flush(&app).await;
        let found = records(&app, "action=tls.certificate_reloaded").await;
        (!found.is_empty()).then_some(())
    })
    .await;

    // An actor restart, seen on the writer's next tick.
    app.state.graph.queue.do_send(InjectFault);
    app.publish(json!({"title": "after the restart"})).await;
    advance(&app, Duration::from_secs(5)).await;

    // An alert fires and resolves.
    record_requests(&app, 95, 0.003);
    record_requests(&app, 5, 1.5);
    advance(&app, Duration::from_secs(15)).await;
    eventually("the alert fired", || async {
        (app.state
            .graph
            .metrics
            .alerts_firing
            .with_label_values(&["http_p99_latency"])
            .get()
            == 1)
            .then_some(())
    })
    .await;
    record_requests(&app, 1_000, 0.002);
    advance(&app, Duration::from_secs(6 * 60)).await;

    // The old data keys retire once nothing uses them (a minute as decrypt-only), the old
    // signing key once its tokens have all expired.
    eventually("a data key retired", || async {
        app.clock.advance(Duration::from_secs(10));
        flush(&app).await;
        let found = records(&app, "action=data_key.retired").await;
        (!found.is_empty()).then_some(())
    })
    .await;
    advance(&app, Duration::from_secs(3_700)).await;
    eventually("the old signing key retired", || async {
        app.clock.advance(Duration::from_secs(10));
        flush(&app).await;
        let found = records(&app, "action=signing_key.retired").await;
        (!found.is_empty()).then_some(())
    })
    .await;

    flush(&app).await;
    for action in Action::ALL {
        let found = records(&app, &format!("action={}", action.as_str())).await;
        assert!(!found.is_empty(), "no {} record", action.as_str());
    }

    // What the records say.
    let denied = records(&app, "action=admin.login").await;
    let refused = denied.iter().find(|r| r["outcome"] == "denied").unwrap();
    assert_eq!(refused["actor"], "anonymous");
    assert_eq!(refused["details"]["username"], "mallory-typo");
    assert_eq!(refused["ip"], "127.0.0.1");
    assert!(refused["requestId"].as_str().unwrap().starts_with("req_"));
    assert_eq!(refused["traceId"].as_str().unwrap().len(), 32);
    let logins = denied.iter().filter(|r| r["outcome"] == "ok").count();
    assert_eq!(logins, 3);
    let ended = records(&app, "action=admin.session_ended").await;
    assert!(ended
        .iter()
        .any(|r| r["details"]["reason"] == "session cap"));
    assert!(ended
        .iter()
        .any(|r| r["details"]["reason"] == "deleted" && r["subject"] == session_id.as_str()));
    let created = records(&app, "action=token.created").await;
    assert!(created
        .iter()
        .any(|r| r["outcome"] == "ok" && r["subject"] == token_id.as_str()));
    assert!(created.iter().any(|r| r["outcome"] == "requested"));
    let first_use = records(&app, "action=token.first_used").await;
    assert!(first_use.iter().any(|r| r["actorId"] == token_id.as_str()));
    let reuse = records(&app, "action=device.refresh_reuse").await;
    assert_eq!(one(&reuse, "reuse")["subject"], phone.id.as_str());
    assert_eq!(one(&reuse, "reuse")["outcome"], "denied");
    let deleted = records(
        &app,
        &format!("action=device.deleted&subject={}", tablet.id),
    )
    .await;
    let outcomes: Vec<&str> = deleted
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "requested"], "newest first");
    let blocked = records(&app, "action=ip.blocked").await;
    assert_eq!(one(&blocked, "block")["ip"], "198.51.100.7");
    assert_eq!(one(&blocked, "block")["actor"], "system");
    let rotated = records(&app, "action=signing_key.rotated").await;
    assert!(rotated
        .iter()
        .any(|r| r["subject"] == new_kid.as_str() && r["outcome"] == "ok"));
    let restarted = records(&app, "action=actor.restarted&actor=system").await;
    assert!(restarted.iter().any(|r| r["subject"] == "queue"));
    let fired = records(&app, "action=alert.fired").await;
    assert_eq!(one(&fired, "alert")["subject"], "http_p99_latency");
    let config = records(&app, "action=config.loaded").await;
    assert_eq!(
        one(&config, "config")["details"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );

    // Filters combine, and pages follow the cursor without overlap.
    let by_admin_token = records(&app, &format!("actor={}", token_actor(&app).await)).await;
    assert!(by_admin_token.iter().all(|r| r["actor"] == "token"));
    let (status, page) = app
        .get("/api/v1/audit?limit=3", Some(&app.admin_token))
        .await;
    assert_eq!(status, 200);
    let cursor = page["nextCursor"].as_str().unwrap();
    let (_, next) = app
        .get(
            &format!("/api/v1/audit?limit=3&cursor={cursor}"),
            Some(&app.admin_token),
        )
        .await;
    let last_seq = page["items"][2]["seq"].as_i64().unwrap();
    assert_eq!(next["items"][0]["seq"].as_i64().unwrap(), last_seq - 1);

    // The attempted user name and the source IPs are sealed: not in the database files.
    let dir = app.data_dir.path().to_path_buf();
    for name in ["beepmyphone.db", "beepmyphone.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            for needle in ["mallory-typo", "198.51.100.7"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{needle} is readable in {name}"
                );
            }
        }
    }
}

/// The initial admin token's id (the actor of the test's admin calls).
async fn token_actor(app: &TestApp) -> String {
    let (_, tokens) = app.get("/api/v1/tokens", Some(&app.admin_token)).await;
    tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "initial admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_rt::test]
async fn the_api_refuses_bad_filters_and_non_admins() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let (status, _) = app.get("/api/v1/audit", Some(&device.access_token)).await;
    assert_eq!(status, 403);
    let (status, _) = app.get("/api/v1/audit", None).await;
    assert_eq!(status, 401);
    for (query, field) in [
        ("action=admin.nope", "action"),
        ("actor=root", "actor"),
        ("since=yesterday", "since"),
        ("cursor=abc", "cursor"),
        ("limit=0", "limit"),
        ("colour=red", ""),
    ] {
        let (status, body) = app
            .get(&format!("/api/v1/audit?{query}"), Some(&app.admin_token))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.to_string().contains(field), "{query}: {body}");
    }
}

// ---------------------------------------------------------------------------------------------
// Verification of a real database edited with SQL

/// A relay that recorded some events, stopped: its data directory.
async fn recorded_log() -> tempfile::TempDir {
    let app = spawn_app_with(|s| s.audit.checkpoint_every_records = 4).await;
    for i in 0..3 {
        app.pair_device(&format!("d{i}")).await;
    }
    flush(&app).await;
    app.stop().await
}

/// A copy of `dir` (the tamper works on the copy).
fn copy_dir(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let mut stack = vec![(dir.to_path_buf(), copy.path().to_path_buf())];
    while let Some((from, to)) = stack.pop() {
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.path().is_dir() {
                stack.push((entry.path(), target));
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    copy
}

fn sql(dir: &Path, statements: &str) {
    let mut conn =
        SqliteConnection::establish(&dir.join("beepmyphone.db").to_string_lossy()).unwrap();
    conn.batch_execute(&format!(
        "DROP TRIGGER IF EXISTS audit_log_append_only; {statements}"
    ))
    .unwrap();
}

async fn verify(dir: &Path) -> (i32, String, String) {
    beep(
        dir,
        &["audit", "verify", "--data-dir", &dir.to_string_lossy()],
    )
    .await
}

#[actix_rt::test]
async fn audit_verify_passes_on_an_untouched_log_and_detects_each_tamper() {
    let dir = recorded_log().await;
    let (code, out, err) = verify(dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("audit log verified"), "{out}");
    let (code, json_out, _) = beep(
        dir.path(),
        &[
            "audit",
            "verify",
            "--json",
            "--data-dir",
            &dir.path().to_string_lossy(),
        ],
    )
    .await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&json_out).unwrap();
    let size = report["records"].as_u64().unwrap();
    assert!(size >= 8, "{report}");
    assert_eq!(report["checkpointSize"].as_u64().unwrap(), size, "{report}");

    let cases: [(&str, String, &str); 7] = [
        (
            "a changed field",
            "UPDATE audit_log SET outcome = 'denied' WHERE seq = 3".into(),
            "record 3: its fields do not match",
        ),
        (
            "a deleted record",
            "DELETE FROM audit_log WHERE seq = 4".into(),
            "record 4: is missing",
        ),
        (
            "two records swapped",
            "UPDATE audit_log SET seq = -1 WHERE seq = 5; UPDATE audit_log SET seq = 5 WHERE seq = 6; \
             UPDATE audit_log SET seq = 6 WHERE seq = -1"
                .into(),
            "record 5: its fields do not match",
        ),
        (
            "a truncated tail",
            format!("DELETE FROM audit_log WHERE seq >= {}", size - 1),
            "the tail was truncated",
        ),
        (
            "a forged checkpoint",
            "UPDATE audit_checkpoints SET note = replace(note, 'time ', 'time 1') \
             WHERE size = (SELECT MAX(size) FROM audit_checkpoints)"
                .into(),
            "does not verify (forged",
        ),
        (
            // The record and its stored leaf hash both rewritten: only the checkpoint tells.
            "a changed record with its leaf hash recomputed",
            String::new(),
            "do not hash to the checkpoint",
        ),
        (
            "the checkpoint file removed",
            String::new(),
            "the checkpoint file has none",
        ),
    ];
    for (what, statements, expected) in cases {
        let copy = copy_dir(dir.path());
        match what {
            "a changed record with its leaf hash recomputed" => rewrite_with_leaf(copy.path(), 2),
            "the checkpoint file removed" => {
                std::fs::remove_file(copy.path().join("audit-checkpoints.log")).unwrap()
            }
            _ => sql(copy.path(), &statements),
        }
        let (code, out, err) = verify(copy.path()).await;
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(err.contains(expected), "{what}: {err}");
    }

    // A forged note in the file (signed by another key) is refused too.
    let copy = copy_dir(dir.path());
    let other =
        beepmyphone::audit::note::NoteSigner::generate("beepmyphone.audit/00000000").unwrap();
    let forged = other
        .sign(
            &Checkpoint {
                origin: "beepmyphone.audit/00000000".into(),
                size: 1,
                root: [0; 32],
                time_ms: 1,
            }
            .to_text(),
        )
        .unwrap();
    let file = copy.path().join("audit-checkpoints.log");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!("{forged}\n"));
    std::fs::write(&file, text).unwrap();
    let (code, _, err) = verify(copy.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains("forged"), "{err}");

    // A pinned verifier key of another log: every checkpoint is refused.
    let (code, _, err) = beep(
        dir.path(),
        &[
            "audit",
            "verify",
            "--data-dir",
            &dir.path().to_string_lossy(),
            "--key",
            &other.verifier().unwrap().encode(),
        ],
    )
    .await;
    assert_eq!(code, 1, "{err}");
    // Usage errors: no database, a key that does not parse.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = verify(empty.path()).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no relay database"), "{err}");
    let (code, _, _) = beep(
        dir.path(),
        &[
            "audit",
            "verify",
            "--data-dir",
            &dir.path().to_string_lossy(),
            "--key",
            "nonsense",
        ],
    )
    .await;
    assert_eq!(code, 2);
}

/// Changes record `seq`'s outcome and stores the leaf hash of the changed record, as an
/// attacker who knows the format would.
fn rewrite_with_leaf(dir: &Path, seq: i64) {
    use beepmyphone::store::audit::AuditRow;
    use beepmyphone::store::schema::audit_log;
    use diesel::prelude::*;
    let mut conn =
        SqliteConnection::establish(&dir.join("beepmyphone.db").to_string_lossy()).unwrap();
    conn.batch_execute("DROP TRIGGER audit_log_append_only")
        .unwrap();
    let mut row: AuditRow = audit_log::table
        .find(seq)
        .select(AuditRow::as_select())
        .first(&mut conn)
        .unwrap();
    row.outcome = "denied".into();
    row.leaf_hash = beepmyphone::audit::record::leaf_of(&row).to_vec();
    diesel::update(audit_log::table.find(seq))
        .set((
            audit_log::outcome.eq(&row.outcome),
            audit_log::leaf_hash.eq(&row.leaf_hash),
        ))
        .execute(&mut conn)
        .unwrap();
}

#[actix_rt::test]
async fn inclusion_proofs_verify_against_the_signed_checkpoint() {
    let dir = recorded_log().await;
    let data_dir = dir.path().to_string_lossy().into_owned();
    let vkey = std::fs::read_to_string(dir.path().join("keys/audit-signing.vkey")).unwrap();
    let verifier = NoteVerifier::parse(vkey.trim()).unwrap();
    let (code, _, _) = verify(dir.path()).await;
    assert_eq!(code, 0);
    for seq in [1u64, 2, 5] {
        let (code, out, err) = beep(
            dir.path(),
            &["audit", "prove", &seq.to_string(), "--data-dir", &data_dir],
        )
        .await;
        assert_eq!(code, 0, "{err}");
        let proof: Value = serde_json::from_str(&out).unwrap();
        let checkpoint = Checkpoint::parse(
            verifier
                .open(proof["checkpoint"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(checkpoint.size, proof["treeSize"].as_u64().unwrap());
        let hash = |s: &Value| -> merkle::Hash {
            hex::decode(s.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        };
        let leaf = hash(&proof["leafHash"]);
        let path: Vec<merkle::Hash> = proof["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(hash)
            .collect();
        assert!(merkle::verify_inclusion(
            &leaf,
            seq - 1,
            checkpoint.size,
            &path,
            &checkpoint.root
        ));
        // The same path does not prove the leaf at another place.
        assert!(!merkle::verify_inclusion(
            &leaf,
            seq,
            checkpoint.size,
            &path,
            &checkpoint.root
        ));
    }
    let (code, _, err) = beep(
        dir.path(),
        &["audit", "prove", "9999", "--data-dir", &data_dir],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("not covered by a checkpoint"), "{err}");
}

#[actix_rt::test]
async fn export_prints_records_with_their_sealed_parts_opened() {
    let app = spawn_app().await;
    app.pair_device("Bob's phone").await;
    flush(&app).await;
    let dir = app.stop().await;
    let data_dir = dir.path().to_string_lossy().into_owned();
    let (code, out, err) = beep(dir.path(), &["audit", "export", "--data-dir", &data_dir]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] + 1 == w[1]),
        "oldest first: {seqs:?}"
    );
    let paired = lines
        .iter()
        .find(|l| l["action"] == "device.paired")
        .unwrap();
    assert_eq!(paired["details"]["name"], "Bob's phone");
    let (code, out, _) = beep(
        dir.path(),
        &[
            "audit",
            "export",
            "--format",
            "json",
            "--since",
            "2999-01-01T00:00:00Z",
            "--data-dir",
            &data_dir,
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let (code, _, err) = beep(
        dir.path(),
        &[
            "audit",
            "export",
            "--since",
            "yesterday",
            "--data-dir",
            &data_dir,
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
}

// ---------------------------------------------------------------------------------------------
// Faults

#[actix_rt::test]
async fn kill_9_during_a_burst_keeps_every_answered_event_and_a_verifiable_log() {
    let data_dir = tempfile::tempdir().unwrap();
    let relay = spawn_process(data_dir.path());
    let admin = std::fs::read_to_string(data_dir.path().join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    // Devices to delete (a deletion is recorded before it is done and answered after its result).
    let mut devices = Vec::new();
    for i in 0..40 {
        let mut res = client
            .post(format!("{}/api/v1/pairing-codes", relay.address))
            .bearer_auth(&admin)
            .send_json(&json!({}))
            .await
            .unwrap();
        let code: Value = res.json().await.unwrap();
        let mut res = client
            .post(format!("{}/api/v1/devices/pair", relay.address))
            .send_json(&json!({"code": code["code"], "name": format!("d{i}"), "platform": "linux"}))
            .await
            .unwrap();
        let paired: Value = res.json().await.unwrap();
        devices.push(paired["deviceId"].as_str().unwrap().to_owned());
    }
    let answered = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for device in devices.clone() {
        let (client, address, admin, answered) = (
            client.clone(),
            relay.address.clone(),
            admin.clone(),
            answered.clone(),
        );
        tasks.push(actix_rt::spawn(async move {
            let res = client
                .delete(format!("{address}/api/v1/devices/{device}"))
                .bearer_auth(&admin)
                .send()
                .await;
            if res.is_ok_and(|r| r.status().as_u16() == 204) {
                answered.lock().unwrap().push(device);
            }
        }));
    }
    // Kill as soon as some are answered, while the rest are in flight.
    eventually("some deletions answered", || async {
        (answered.lock().unwrap().len() >= 10).then_some(())
    })
    .await;
    relay.kill_9();
    for task in tasks {
        let _ = task.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 10);

    // The log verifies as it was left, and again after a restart (which checkpoints it).
    let (code, out, err) = verify(data_dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
    let relay = spawn_process(data_dir.path());
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut res = client
            .get(format!(
                "{}/api/v1/audit?action=device.deleted&limit=500{cursor}",
                relay.address
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        let page: Value = res.json().await.unwrap();
        listed.extend(page["items"].as_array().unwrap().clone());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    for device in &answered {
        for outcome in ["requested", "ok"] {
            assert!(
                listed
                    .iter()
                    .any(|r| r["subject"] == device.as_str() && r["outcome"] == outcome),
                "the answered deletion of {device} has no {outcome} record"
            );
        }
    }
    relay.kill_9();
    let (code, out, err) = verify(data_dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
}

#[actix_rt::test]
async fn a_log_that_cannot_be_written_is_unhealthy_refuses_guarded_operations_and_recovers() {
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    flush(&app).await;
    // Every insert into the log fails as a full disk would make it (a fault at the store's
    // boundary: the data directory cannot be filled safely here).
    let db = app.data_dir.path().to_path_buf();
    sql_live(
        &db,
        "CREATE TRIGGER audit_full BEFORE INSERT ON audit_log \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    );
    // A fire-and-forget event finds the log unwritable.
    let (status, _) = app
        .post("/api/v1/pairing-codes", Some(&app.admin_token), &json!({}))
        .await;
    assert_eq!(
        status, 201,
        "what is only worth knowing does not wait on the disk"
    );
    eventually("the writer saw the failure", || async {
        app.state
            .audit
            .status()
            .snapshot()
            .failing_since_ms
            .map(|_| ())
    })
    .await;
    // Deleting a device must be recorded first: refused, and the device stays.
    let path = format!("/api/v1/devices/{}", device.id);
    let mut res = app
        .request(Method::DELETE, &path, Some(&app.admin_token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("audit log"),
        "{body}"
    );
    let (status, _) = app.get(&path, Some(&app.admin_token)).await;
    assert_eq!(status, 200, "the device was not deleted");
    // The next health round (its report is cached for a period) sees it.
    app.clock.advance(Duration::from_secs(
        app.state.settings.health.interval_seconds,
    ));
    let (status, health) = eventually("health sees the audit log fail", || async {
        let (status, health) = app.get("/health", Some(&app.admin_token)).await;
        (status == 503).then_some((status, health))
    })
    .await;
    assert_eq!(status, 503, "{health}");
    let audit = health["components"]
        .as_array()
        .map(|c| c.iter().find(|c| c["name"] == "audit").cloned())
        .unwrap_or_else(|| health["components"].get("audit").cloned())
        .expect("an audit component");
    assert_eq!(audit["status"], "unhealthy", "{health}");
    assert!(
        audit["reason"].as_str().unwrap().contains("disk is full"),
        "{audit}"
    );
    // Space is back: the next tick writes what waited, and guarded operations work again.
    sql_live(&db, "DROP TRIGGER audit_full;");
    app.clock.advance(Duration::from_secs(5));
    eventually("the log is writable again", || async {
        app.state
            .audit
            .status()
            .snapshot()
            .failing_since_ms
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(app.delete(&path, Some(&app.admin_token)).await, 204);
    flush(&app).await;
    assert!(!records(&app, "action=pairing.code_created")
        .await
        .is_empty());
    assert!(app.state.graph.metrics.audit_write_failures.get() >= 1);
    let dir = app.stop().await;
    let (code, out, err) = verify(dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
}

fn sql_live(dir: &Path, statements: &str) {
    let mut conn =
        SqliteConnection::establish(&dir.join("beepmyphone.db").to_string_lossy()).unwrap();
    conn.batch_execute(&format!("PRAGMA busy_timeout = 5000; {statements}"))
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Retention

/// Runs the writer's housekeeping now; the records it archived.
async fn maintain(app: &TestApp) -> u64 {
    app.state
        .audit
        .writer()
        .send(Maintain)
        .await
        .expect("the writer answers")
        .expect("housekeeping works")
}

fn archives(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("audit-archive"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[actix_rt::test]
async fn old_records_move_to_archives_that_verify_and_expire() {
    let app = spawn_app_with(|s| {
        s.audit.checkpoint_every_records = 2;
        s.audit.archive_after_days = 1;
        s.audit.retention_days = 4;
    })
    .await;
    for i in 0..3 {
        app.pair_device(&format!("old{i}")).await;
    }
    let old_size = flush(&app).await;
    assert_eq!(maintain(&app).await, 0, "nothing is a day old yet");
    // Two days later the old records move to an archive (which ends at a checkpoint; the newest
    // record always stays in the database).
    app.clock.advance(Duration::from_secs(2 * 86_400));
    app.pair_device("new").await;
    flush(&app).await;
    // (The clock's jump may have started the daily housekeeping already: it and this call
    // archive in one or two segments, each ending at a checkpoint.)
    maintain(&app).await;
    let segments = archives(app.data_dir.path()).len();
    assert!(segments >= 1, "an archive");
    let listed = records(&app, "").await;
    let oldest = listed.last().unwrap()["seq"].as_u64().unwrap();
    assert!(oldest > 2 && oldest <= old_size + 1, "{oldest} {old_size}");
    let (code, out, err) = verify(app.data_dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("from record 1, {segments} archives")),
        "{out}"
    );

    // A record changed inside the archive is found.
    let copy = copy_dir(app.data_dir.path());
    let archive = copy
        .path()
        .join("audit-archive")
        .join(&archives(copy.path())[0]);
    let text = gunzip(&archive).replacen("\"outcome\":\"ok\"", "\"outcome\":\"denied\"", 1);
    gzip(&archive, &text);
    let (code, _, err) = verify(copy.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains("its fields do not match"), "{err}");

    // Three days on, the records of two days ago are archived too, and the first archive (its
    // records now four days old) expires; what is left verifies from its signed start.
    app.clock.advance(Duration::from_secs(3 * 86_400));
    app.pair_device("newer").await;
    flush(&app).await;
    maintain(&app).await;
    let names = archives(app.data_dir.path());
    assert!(
        !names.is_empty(),
        "the records of two days ago are archived"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("audit-000000000001-")),
        "{names:?}"
    );
    let (code, out, err) = verify(app.data_dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("from record 1,"), "{out}");
    // Proofs need every leaf from the first record: refused with the reason.
    let data_dir = app.data_dir.path().to_string_lossy().into_owned();
    let (code, _, err) = beep(
        app.data_dir.path(),
        &["audit", "prove", "1", "--data-dir", &data_dir],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("retention"), "{err}");
}

fn gunzip(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn gzip(path: &Path, text: &str) {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The webhook and restarts

#[actix_rt::test]
async fn every_checkpoint_reaches_the_webhook_and_a_restart_resumes_the_tree() {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let kept = notes.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let kept = kept.clone();
        App::new().route(
            "/checkpoints",
            web::post().to(move |body: String| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(body);
                    HttpResponse::NoContent().finish()
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    let url = format!("http://127.0.0.1:{port}/checkpoints");
    let app = spawn_app_with(|s| s.audit.checkpoint_webhook_url = url.clone().into()).await;
    app.pair_device("phone").await;
    let size = flush(&app).await;
    let note = eventually("a checkpoint at the webhook", || async {
        notes.lock().unwrap().last().cloned()
    })
    .await;
    let vkey =
        std::fs::read_to_string(app.data_dir.path().join("keys/audit-signing.vkey")).unwrap();
    let verifier = NoteVerifier::parse(vkey.trim()).unwrap();
    let checkpoint = Checkpoint::parse(verifier.open(&note).unwrap()).unwrap();
    assert_eq!(checkpoint.size, size);
    assert_eq!(checkpoint.time_ms, app.clock.now_ms());

    // A restart carries on the same tree: the log still verifies and grows from where it was.
    let settings = {
        let mut s = test_settings(app.data_dir.path());
        s.audit.checkpoint_webhook_url = url.into();
        s
    };
    let dir = app.stop().await;
    let app = start_in(dir, settings).await;
    app.pair_device("tablet").await;
    let grown = flush(&app).await;
    assert!(grown > size + 1, "{grown} after {size}");
    let dir = app.stop().await;
    let (code, out, err) = verify(dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
}
