//! Encryption at rest: AES-256-GCM sealing and opening through [`DataKeys`]
//! (`src/security/crypto.rs`), at 256 B, 4 KiB and 64 KiB.
//!
//! Figures are bytes of plaintext per second (criterion's `Throughput::Bytes`); `seal` includes
//! the fresh random nonce and the versioned header, `open` the header check and the tag.
//!
//! Run with `cargo bench --bench crypto`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use beepmyphone::security::crypto::DataKeys;

fn crypto(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let keys = DataKeys::load_or_create(dir.path()).unwrap();
    let aad = b"sessions:0123456789abcdef";
    let mut group = c.benchmark_group("aes256gcm");
    for size in [256usize, 4 * 1024, 64 * 1024] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let sealed = keys.seal(&plaintext, aad).unwrap();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("seal", size), &plaintext, |b, p| {
            b.iter(|| keys.seal(black_box(p), aad).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, s| {
            b.iter(|| keys.open(black_box(s), aad).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, crypto);
criterion_main!(benches);
