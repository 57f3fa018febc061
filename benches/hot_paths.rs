//! Hot-path micro-benchmarks: validating a typical publish, encoding a `notifications` frame, and
//! an embedded rate-limit decision.
//!
//! Run with `cargo bench --bench hot_paths`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

use beepmyphone::api::schemas::PublishRequest;
use beepmyphone::security::ratelimit::{EmbeddedLimiter, Rule};
use beepmyphone_actors::batcher::encode_frame;

const PUBLISH: &str = r#"{"title": "Build finished", "body": "main is green", "app": "CI",
  "priority": "high", "targets": ["dev_01J00000000000000000000000"], "tags": ["ci"],
  "clickUrl": "https://ci.example/123", "ttlSeconds": 86400, "idempotencyKey": "build-123"}"#;

fn hot_paths(c: &mut Criterion) {
    c.bench_function("validate_publish", |b| {
        b.iter(|| {
            let request: PublishRequest =
                beepmyphone::api::body::parse(black_box(PUBLISH.as_bytes())).unwrap();
            request.validate_into_record(1_000, 604_800).unwrap()
        })
    });

    let item = Bytes::from(vec![b'x'; 250]);
    let items: Vec<Bytes> = (0..64).map(|_| item.clone()).collect();
    c.bench_function("encode_frame_64_items", |b| {
        b.iter(|| encode_frame(black_box(&items), 64 * 251))
    });

    let limiter = Arc::new(EmbeddedLimiter::new(100_000));
    let gcra = Rule::gcra("publish", 6_000_000, 60_000, 100_000);
    let window = Rule::window("ip", 1_000_000_000, 60_000);
    let mut now = 1_000i64;
    c.bench_function("ratelimit_embedded_gcra", |b| {
        b.iter(|| {
            now += 1;
            limiter.check(&gcra, black_box("tok_01"), now, true)
        })
    });
    c.bench_function("ratelimit_embedded_window", |b| {
        b.iter(|| limiter.check(&window, black_box("10.0.0.1"), 1_000, true))
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
