//! JWT sign and verify times: RS256 with a 2048-bit key, as the relay does them.
//!
//! Run with `cargo bench --bench tokens`. `sign` is what pairing and refresh pay (on a blocking
//! thread); `verify` is what every device request and socket authentication pays, including the
//! snapshot load through `ArcSwap`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};

use beepmyphone::security::jwt::JwtKeys;
use beepmyphone_actors::model::DeviceId;

fn tokens(c: &mut Criterion) {
    let pem = openssl::rsa::Rsa::generate(2048)
        .unwrap()
        .private_key_to_pem()
        .unwrap();
    let keys = Arc::new(ArcSwap::from_pointee(
        JwtKeys::from_private_pem(&pem, "beepmyphone", "beepmyphone-devices").unwrap(),
    ));
    let device = DeviceId::generate();
    let now = chrono::Utc::now().timestamp();
    let (token, _) = keys.load().sign_access(&device, now, 3_600).unwrap();

    c.bench_function("jwt_sign_rs256", |b| {
        b.iter(|| {
            keys.load()
                .sign_access(black_box(&device), now, 3_600)
                .unwrap()
        })
    });
    c.bench_function("jwt_verify_rs256", |b| {
        b.iter(|| keys.load().verify_access(black_box(&token)).unwrap())
    });
    // A well-formed token whose signature belongs to another token: a full RSA check that fails.
    let (other, _) = keys.load().sign_access(&device, now + 1, 3_600).unwrap();
    let (message, _) = token.rsplit_once('.').unwrap();
    let (_, signature) = other.rsplit_once('.').unwrap();
    let forged = format!("{message}.{signature}");
    c.bench_function("jwt_verify_rs256_bad_signature", |b| {
        b.iter(|| keys.load().verify_access(black_box(&forged)).is_err())
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
