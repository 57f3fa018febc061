//! bcrypt hash and verify time at the default cost (12), as admin logins pay it.
//!
//! Run with `cargo bench --bench passwords`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

use beepmyphone::crypto::secrets::secret_string;
use beepmyphone::security::passwords::{Bcrypt, PasswordHasher};

fn passwords(c: &mut Criterion) {
    let bcrypt = Bcrypt::new(12, false).unwrap();
    let password = secret_string("correct horse battery staple".to_owned());
    let hash = bcrypt.hash(&password).unwrap();
    let mut group = c.benchmark_group("bcrypt_cost_12");
    group.sample_size(10);
    group.bench_function("hash", |b| {
        b.iter(|| bcrypt.hash(black_box(&password)).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| bcrypt.verify(black_box(&password), &hash).unwrap())
    });
    group.finish();
}

criterion_group!(benches, passwords);
criterion_main!(benches);
