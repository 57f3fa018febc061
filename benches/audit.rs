//! The audit log (`src/audit/`): what one append costs, alone (a `RecordNow` of one event: one
//! immediate transaction) and in batches of 100 (what the writer does under a burst), with the
//! sealed part (source IP and details) and without; the leaf encoding and hash alone; a signed
//! checkpoint; and verification of a 10,000-record log.
//!
//! Appends go to a real SQLite file in a temporary directory (WAL, `synchronous=NORMAL`, as the
//! relay runs it). Run with `cargo bench --bench audit`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use beepmyphone::audit::log::SqliteAuditLog;
use beepmyphone::audit::note::NoteSigner;
use beepmyphone::audit::verify::{verify, Sources};
use beepmyphone::audit::{record, signing};
use beepmyphone::config::StorageSettings;
use beepmyphone::crypto::provider::AES_256_GCM;
use beepmyphone::crypto::ring::DataKey;
use beepmyphone::crypto::secrets::KeyBytes;
use beepmyphone::crypto::{Cipher, DataRing, Purpose};
use beepmyphone::store::Store;
use beepmyphone_actors::ports::{Action, ActorKind, AuditEvent, AuditLog, Outcome};

fn cipher() -> Cipher {
    let key = || KeyBytes::new(Box::new([7u8; 32]));
    let keys = vec![Arc::new(DataKey::new(
        1,
        Purpose::Audit,
        (AES_256_GCM.build)(&key()),
    ))];
    let current: HashMap<Purpose, u32> = [(Purpose::Audit, 1)].into_iter().collect();
    Cipher::new(DataRing::new(keys, current, Some(Arc::new(key()))))
}

/// A device deletion by an admin token, as the API records it.
fn event(personal: bool) -> AuditEvent {
    let mut event = AuditEvent::new(Action::DeviceDeleted, ActorKind::Token, Outcome::Ok)
        .by("tok_01M8TX4X149EVESZX2TJGEX3YS")
        .on("dev_01M8TX4X149EVESZX2TJGEX3YT");
    event.at_ms = 1_796_199_319_397;
    event.request_id = Some("req_01M8TX50WCNXPBKJ8AMH1AEJZM".into());
    event.trace_id = Some("c6c935c9e611c32a8dabe1db016d08d5".into());
    if personal {
        event.ip = Some("192.0.2.10".into());
        event.details = serde_json::json!({ "name": "Alice's phone", "platform": "android" });
    }
    event
}

struct Log {
    _dir: tempfile::TempDir,
    log: SqliteAuditLog,
    store: Store,
    sources: Sources,
    signer_dir: std::path::PathBuf,
}

fn open() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StorageSettings::default())
        .unwrap()
        .with_cipher(cipher());
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let signer = signing::load_or_create(&keys).unwrap();
    let file = dir.path().join("audit-checkpoints.log");
    let log = SqliteAuditLog::open(store.clone(), signer, file.clone(), None).unwrap();
    Log {
        sources: Sources {
            checkpoint_file: file,
            archive_dir: dir.path().join("audit-archive"),
        },
        signer_dir: keys,
        _dir: dir,
        log,
        store,
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit_append");
    for (name, personal) in [("sealed", true), ("plain", false)] {
        let log = open();
        let one = [event(personal)];
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("one_{name}"), |b| {
            b.iter(|| black_box(log.log.append(&one).unwrap()))
        });
        let batch: Vec<AuditEvent> = (0..100).map(|_| event(personal)).collect();
        group.throughput(Throughput::Elements(100));
        group.bench_function(format!("batch_of_100_{name}"), |b| {
            b.iter(|| black_box(log.log.append(&batch).unwrap()))
        });
    }
    group.finish();
}

fn leaf(c: &mut Criterion) {
    let cipher = cipher();
    let row = record::seal(&event(true), 42, Some(&cipher)).unwrap();
    c.bench_function("audit_seal_row", |b| {
        b.iter(|| black_box(record::seal(&event(true), 42, Some(&cipher)).unwrap()))
    });
    c.bench_function("audit_leaf_hash", |b| {
        b.iter(|| black_box(record::leaf_of(&row)))
    });
    let signer = NoteSigner::generate("beepmyphone.audit/bench").unwrap();
    c.bench_function("audit_sign_checkpoint", |b| {
        b.iter(|| {
            black_box(
                signer
                    .sign("beepmyphone.audit/bench\n10000\nAAAA\ntime 1\n")
                    .unwrap(),
            )
        })
    });
}

fn verification(c: &mut Criterion) {
    let log = open();
    let batch: Vec<AuditEvent> = (0..1_000).map(|i| event(i % 2 == 0)).collect();
    for i in 0..10 {
        log.log.append(&batch).unwrap();
        log.log.checkpoint(i).unwrap();
    }
    let verifier = signing::verifier(&log.signer_dir, None).unwrap();
    let mut group = c.benchmark_group("audit_verify");
    group.sample_size(10);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("10000_records", |b| {
        b.iter_batched(
            || log.store.conn().unwrap(),
            |mut conn| black_box(verify(&mut conn, &verifier, &log.sources).unwrap()),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, append, leaf, verification);
criterion_main!(benches);
