//! Hot-path micro-benchmarks: validating a typical publish, encoding a `notifications` frame, an
//! embedded rate-limit decision, and what metrics add to a request and to a delivery.
//!
//! Run with `cargo bench --bench hot_paths`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

use beepmyphone::api::schemas::PublishRequest;
use beepmyphone::api::timing::record;
use beepmyphone::security::ratelimit::{EmbeddedLimiter, Rule};
use beepmyphone_actors::batcher::encode_frame;
use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::Priority;

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

    // The timing middleware's own work per request: two clock reads, a counter and a histogram
    // observation behind two label lookups.
    let metrics = Metrics::new("bench", "bench");
    c.bench_function("metrics_http_request", |b| {
        b.iter(|| {
            let started = std::time::Instant::now();
            record(
                &metrics,
                black_box("/api/v1/notifications"),
                "POST",
                "202",
                started.elapsed().as_secs_f64(),
            )
        })
    });
    // What the queue records per delivered and acked notification.
    c.bench_function("metrics_delivery_and_ack", |b| {
        b.iter(|| {
            metrics.delivered.of(black_box(Priority::High)).inc();
            metrics.publish_to_deliver.observe(black_box(0.002));
            metrics.acked.of(black_box(Priority::High)).inc();
            metrics.deliver_to_ack.observe(black_box(0.04));
        })
    });
    // A scrape's encoding (the registry as a relay fills it).
    for route in [
        "/api/v1/notifications",
        "/api/v1/devices/{id}",
        "/health",
        "/metrics",
    ] {
        for status in ["200", "202", "400", "401", "404", "429"] {
            record(&metrics, route, "GET", status, 0.001);
        }
    }
    c.bench_function("metrics_encode", |b| b.iter(|| metrics.encode().len()));
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
