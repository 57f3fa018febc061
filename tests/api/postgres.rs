//! Tests: the relay on PostgreSQL (`storage.url`), always, whatever run this is. The server is
//! `BEEP_TEST_POSTGRES` or the machine's 127.0.0.1:5432; each test gets a fresh database. A
//! server that does not answer fails the test.
//!
//! The rest of the suite runs on PostgreSQL too in scripts/test's PostgreSQL run; these tests
//! pin what only PostgreSQL has: the schema of its own migrations, and writers of two stores
//! (two relays' pools) on one database.

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};
use serde_json::json;

use beepmyphone::config::StorageSettings;
use beepmyphone::store::{Kind, Store};

use crate::helpers::{fresh_postgres_database, start_in, test_settings};

/// A fresh database on the suite's PostgreSQL server.
fn database() -> String {
    let server = crate::helpers::test_postgres_server()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned());
    fresh_postgres_database(
        &server,
        &format!("beep_t_{}", ulid::Ulid::new().to_string().to_lowercase()),
    )
}

fn storage(url: &str) -> StorageSettings {
    StorageSettings {
        url: url.to_owned().into(),
        pool_min_idle: 1,
        ..StorageSettings::default()
    }
}

#[derive(diesel::QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

#[test]
fn the_migrations_make_every_table_and_run_once() {
    let url = database();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &storage(&url)).expect("the store opens on PostgreSQL");
    assert_eq!(store.kind(), Kind::Postgres);
    // A second open (a restart, another relay) finds nothing to migrate.
    Store::open(dir.path(), &storage(&url)).expect("opens again");
    assert!(
        !dir.path().join(beepmyphone::store::DB_FILE).exists(),
        "no SQLite file is made"
    );

    let mut conn = diesel::PgConnection::establish(&url).unwrap();
    let tables: Vec<String> = diesel::sql_query(
        "SELECT table_name AS name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations' \
         ORDER BY table_name",
    )
    .load::<Name>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|n| n.name)
    .collect();
    assert_eq!(
        tables,
        [
            "admin_sessions",
            "admins",
            "api_tokens",
            "audit_checkpoints",
            "audit_log",
            "deliveries",
            "device_tokens",
            "devices",
            "notification_tags",
            "notifications",
            "pairing_codes",
            "revoked_tokens",
        ]
    );
    // The audit log is append-only here too.
    conn.batch_execute(
        "INSERT INTO audit_log (seq, at_ms, actor_kind, action, outcome, leaf_hash) \
         VALUES (1, 0, 'system', 'test', 'ok', '\\x00')",
    )
    .unwrap();
    let refused = conn
        .batch_execute("UPDATE audit_log SET action = 'other'")
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
}

#[actix_web::test]
async fn a_relay_on_postgres_delivers_and_a_restart_redelivers_what_was_not_acked() {
    let url = database();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.storage.url = url.clone().into();
    let app = start_in(dir, settings.clone()).await;
    assert_eq!(app.state.store.kind(), Kind::Postgres);
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let first = app
        .publish(json!({"title": "first", "priority": "high", "tags": ["a"]}))
        .await;
    let second = app.publish(json!({"title": "second"})).await;
    let items = ws.receive(2).await;
    assert_eq!(items[0]["id"], first["id"]);
    assert_eq!(items[0]["tags"], json!(["a"]));
    assert_eq!(items[1]["id"], second["id"]);
    ws.ack(&[items[0]["id"].as_str().unwrap()]).await;
    // The ack is durable before the relay stops.
    crate::helpers::eventually("the ack is stored", || async {
        let (_, n) = app
            .get(
                &format!("/api/v1/notifications?deviceId={}&status=acked", device.id),
                Some(&app.admin_token),
            )
            .await;
        n["items"]
            .as_array()
            .is_some_and(|i| i.len() == 1)
            .then_some(())
    })
    .await;
    drop(ws);

    let dir = app.stop().await;
    let app = start_in(dir, settings).await;
    let mut ws = app.connect_device(&device).await;
    let items = ws.receive(1).await;
    assert_eq!(
        items[0]["id"], second["id"],
        "only the unacked one comes again"
    );
    let (status, found) = app
        .get("/api/v1/notifications?tag=a", Some(&app.admin_token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        found["items"][0]["id"], first["id"],
        "the tag index works: {found}"
    );
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[test]
fn two_stores_on_one_database_take_turns_at_writing() {
    // Two relays' pools: a write transaction of one waits for the other's (the write turn is a
    // PostgreSQL advisory lock, not only this process's gate), so sequence numbers one assigns
    // are never taken by the other.
    use beepmyphone::store::WriteTransaction;
    let url = database();
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), &storage(&url)).unwrap();
    let b = Store::open(dir.path(), &storage(&url)).unwrap();
    let mut watcher = diesel::PgConnection::establish(&url).unwrap();
    let mut first = a.conn().unwrap();
    let mut second = b.conn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = first
        .immediate_transaction(|conn| {
            conn.batch_execute("INSERT INTO api_tokens VALUES ('t1', 'a', 'publish', 'h1', 1, NULL)")?;
            let waiter = std::thread::spawn(move || {
                second
                    .immediate_transaction(|conn| {
                        tx.send(()).unwrap();
                        conn.batch_execute(
                            "INSERT INTO api_tokens VALUES ('t2', 'b', 'publish', 'h2', 2, NULL)",
                        )
                    })
                    .unwrap();
            });
            // Until b's request for the turn is seen waiting by the server.
            loop {
                let waiting: Count = diesel::sql_query(
                    "SELECT COUNT(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )
                .get_result(&mut watcher)?;
                if waiting.n == 1 {
                    break;
                }
                std::thread::yield_now();
            }
            assert!(rx.try_recv().is_err(), "b wrote while a held the turn");
            Ok::<_, diesel::result::Error>(waiter)
        })
        .unwrap();
    waiter.join().unwrap();
    rx.try_recv().expect("b wrote once a committed");
    let rows: Count = diesel::sql_query("SELECT COUNT(*) AS n FROM api_tokens")
        .get_result(&mut watcher)
        .unwrap();
    assert_eq!(rows.n, 2);
}

#[test]
fn relays_starting_together_on_an_empty_database_all_start() {
    // Each opens the store (and so migrates) at once; one migrates, the others wait for it and
    // find nothing to do.
    let url = database();
    let dir = tempfile::tempdir().unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let opened: Vec<_> = (0..3)
        .map(|_| {
            let (url, path, barrier) = (url.clone(), dir.path().to_path_buf(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Store::open(&path, &storage(&url)).map(|_| ())
            })
        })
        .collect();
    for relay in opened {
        relay.join().unwrap().expect("every relay's store opens");
    }
}
