//! The metrics registry stays small: with every label set at its worst case (every route pattern ×
//! every method label × every status a relay answers, every close code, rule, component and
//! alert), what the registry holds is measured by a counting allocator and must stay under 5 MB.
//! Its own test binary, because it installs the counting allocator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use beepmyphone::api::timing::record;
use beepmyphone::api::ROUTES;
use beepmyphone_actors::metrics::{Metrics, RATE_LIMIT_RULES, SUPERVISED_ACTORS};
use beepmyphone_actors::Priority;

/// Bytes allocated and not yet freed, by anyone in this process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];
const STATUSES: &[&str] = &[
    "200", "201", "202", "204", "301", "304", "400", "401", "403", "404", "405", "408", "409",
    "413", "415", "422", "429", "431", "500", "503",
];

#[test]
fn the_registry_stays_under_five_megabytes_at_its_worst() {
    let before = LIVE.load(Ordering::Relaxed);
    let metrics = Metrics::new("0.1.0", "0123456789ab");
    let mut routes: Vec<&str> = ROUTES.iter().map(|(route, _)| *route).collect();
    routes.push(beepmyphone::api::timing::UNMATCHED);
    for route in &routes {
        for method in METHODS {
            for status in STATUSES {
                record(&metrics, route, method, status, 0.001);
            }
        }
    }
    for code in 1000..1015u16 {
        metrics.ws_closed(code);
    }
    for code in 4000..4030u16 {
        metrics.ws_closed(code);
    }
    for rule in RATE_LIMIT_RULES {
        metrics
            .ratelimit_rejections
            .with_label_values(&[rule])
            .inc();
    }
    for actor in SUPERVISED_ACTORS {
        metrics.actor_restarts.with_label_values(&[actor]).inc();
    }
    for component in [
        "queue",
        "registry",
        "batcher",
        "store",
        "disk",
        "keys",
        "redis",
        "queue_lag",
    ] {
        metrics
            .component_healthy
            .with_label_values(&[component])
            .set(1);
    }
    for alert in [
        "p99_latency",
        "error_rate",
        "queue_lag",
        "memory_growth",
        "component_unhealthy",
    ] {
        metrics.alerts_firing.with_label_values(&[alert]).set(0);
    }
    for priority in Priority::ALL {
        metrics.published.of(priority).inc();
    }
    metrics.queue.ready[Priority::Low as usize].set(1);
    metrics.queue.in_flight.set(5);
    let held = LIVE.load(Ordering::Relaxed) - before;
    let scrape = metrics.encode();
    let series = scrape
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty() && line[0] != b'#')
        .count();
    println!(
        "registry: {series} series, {held} bytes held ({:.2} MiB), scrape {} bytes",
        held as f64 / 1_048_576.0,
        scrape.len()
    );
    assert!(
        series > routes.len() * METHODS.len() * STATUSES.len(),
        "{series}"
    );
    assert!(held > 0);
    assert!(held < 5_000_000, "the registry holds {held} bytes");
    drop(metrics);
}
