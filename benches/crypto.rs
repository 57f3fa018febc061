//! Encryption at rest (`src/crypto/`): seal and open through the [`Cipher`] at 256 B,
//! 4 KiB and 64 KiB for both algorithms; what sealing costs one stored notification (its five
//! sealed fields, the app, tag and idempotency blind indexes: what the group commit does per row);
//! the blind index alone; and the PBKDF2 derivation of a passphrase's key-encryption key.
//!
//! Figures for seal/open are bytes of plaintext per second (criterion's `Throughput::Bytes`);
//! `seal` includes the nonce from the OS and the header, `open` the header checks and the tag.
//!
//! Run with `cargo bench --bench crypto`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use beepmyphone::crypto::disk::derive_kek;
use beepmyphone::crypto::provider::{Algorithm, ALGORITHMS};
use beepmyphone::crypto::ring::DataKey;
use beepmyphone::crypto::secrets::{KeyBytes, SecretString};
use beepmyphone::crypto::{fields, Cipher, DataRing, Purpose};

fn cipher(algorithm: &'static Algorithm) -> Cipher {
    let key = || KeyBytes::new(Box::new([7u8; 32]));
    let keys = vec![Arc::new(DataKey::new(
        1,
        Purpose::Content,
        (algorithm.build)(&key()),
    ))];
    let current: HashMap<Purpose, u32> = [(Purpose::Content, 1)].into_iter().collect();
    Cipher::new(DataRing::new(keys, current, Some(Arc::new(key()))))
}

fn seal_open(c: &mut Criterion) {
    for algorithm in ALGORITHMS {
        let cipher = cipher(algorithm);
        let sealer = cipher.sealer(Purpose::Content).unwrap();
        let mut group = c.benchmark_group(algorithm.name);
        for size in [256usize, 4 * 1024, 64 * 1024] {
            let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let row = "ntf_01M8THD201Z3X7X9A1294VKQ2W";
            let sealed = sealer
                .seal(fields::NOTIFICATION_BODY, row, &plaintext)
                .unwrap();
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
                b.iter(|| {
                    sealer
                        .seal(fields::NOTIFICATION_BODY, row, black_box(p))
                        .unwrap()
                })
            });
            group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
                b.iter(|| {
                    cipher
                        .open(fields::NOTIFICATION_BODY, row, black_box(s))
                        .unwrap()
                })
            });
        }
        group.finish();
    }
}

fn per_notification(c: &mut Criterion) {
    let mut group = c.benchmark_group("notification");
    for algorithm in ALGORITHMS {
        let cipher = cipher(algorithm);
        let row = "ntf_01M8THD201Z3X7X9A1294VKQ2W";
        let (title, body) = (
            "Build finished",
            "main is green: 1,234 tests passed in 5 min 12 s",
        );
        let tags = ["ci", "main"];
        group.bench_function(BenchmarkId::new("seal_row", algorithm.name), |b| {
            b.iter(|| {
                let sealer = cipher.sealer(Purpose::Content).unwrap();
                let tags_json = serde_json::to_vec(&tags).unwrap();
                black_box((
                    sealer
                        .seal(fields::NOTIFICATION_TITLE, row, title.as_bytes())
                        .unwrap(),
                    sealer
                        .seal(fields::NOTIFICATION_BODY, row, body.as_bytes())
                        .unwrap(),
                    sealer.seal(fields::NOTIFICATION_APP, row, b"CI").unwrap(),
                    sealer
                        .seal(fields::NOTIFICATION_TAGS, row, &tags_json)
                        .unwrap(),
                    sealer
                        .seal(
                            fields::NOTIFICATION_CLICK_URL,
                            row,
                            b"https://ci.example/123",
                        )
                        .unwrap(),
                    cipher.blind_index(fields::INDEX_APP, "CI").unwrap(),
                    tags.map(|t| cipher.blind_index(fields::INDEX_TAG, t).unwrap()),
                    cipher
                        .blind_index(fields::INDEX_IDEMPOTENCY, "build-123")
                        .unwrap(),
                ))
            })
        });
    }
    let cipher = cipher(&beepmyphone::crypto::provider::AES_256_GCM);
    group.bench_function("blind_index", |b| {
        b.iter(|| {
            cipher
                .blind_index(fields::INDEX_APP, black_box("CI"))
                .unwrap()
        })
    });
    group.finish();
}

fn pbkdf2(c: &mut Criterion) {
    let passphrase = SecretString::from("correct horse battery staple");
    let mut group = c.benchmark_group("kek");
    group.sample_size(10);
    group.bench_function("pbkdf2_hmac_sha256_600000", |b| {
        b.iter(|| derive_kek(&passphrase, black_box(&[1u8; 16]), 600_000))
    });
    group.finish();
}

criterion_group!(benches, seal_open, per_notification, pbkdf2);
criterion_main!(benches);
