//! Heap allocations the relay makes per delivered notification: publish (one `POST
//! /api/v1/notifications`), store, deliver over the device's WebSocket, ack, commit.
//!
//! The relay runs in this process on its own thread and actix system, exactly as
//! `beepmyphone serve` builds it (`Application::build`, jemalloc underneath), on a temporary data
//! directory; a client on the main thread publishes `N` notifications one at a time, reads each
//! from the socket and acks it. A counting global allocator counts every allocation in the process
//! and, separately, those made on the client's thread; the relay's share is the difference. Its
//! blocking pool (SQLite) and workers are counted with the relay. The client's own runtime runs on
//! its thread only (it resolves no names: the address is an IP literal).
//!
//! Run with `cargo bench --bench allocations` (optionally `-- 5000` for N); it prints the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use beepmyphone::config::Settings;
use beepmyphone::startup::{Application, Options};

/// Counts allocations (and bytes) in the whole process and on the current thread.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    static THREAD_BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(size: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    // try_with: a thread being torn down has no slot any more; its allocations still count globally.
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = THREAD_BYTES.try_with(|c| c.set(c.get() + size as u64));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { tikv_jemallocator::Jemalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { tikv_jemallocator::Jemalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { tikv_jemallocator::Jemalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (process allocations, process bytes, this thread's allocations, this thread's bytes).
fn counters() -> (u64, u64, u64, u64) {
    (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
        THREAD_ALLOCS.with(Cell::get),
        THREAD_BYTES.with(Cell::get),
    )
}

/// Starts the relay on its own thread; returns its port and data directory.
fn start_relay() -> (u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.workers = 1;
    settings.storage.data_dir = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let app = Application::build(settings, Options::default())
                .await
                .unwrap();
            tx.send(app.port()).unwrap();
            app.run_until_stopped().await.unwrap();
        });
    });
    (rx.recv().unwrap(), dir)
}

type Socket = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match socket.next().await.unwrap().unwrap() {
            ws::Frame::Text(bytes) => return serde_json::from_slice(&bytes).unwrap(),
            ws::Frame::Ping(bytes) => socket.send(ws::Message::Pong(bytes)).await.unwrap(),
            _ => {}
        }
    }
}

async fn post(client: &awc::Client, url: String, token: Option<&str>, body: &Value) -> Value {
    let mut req = client.post(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let mut res = req.send_json(body).await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    res.json().await.unwrap()
}

/// Publishes `n` notifications one at a time, each read from the socket and acked before the next.
async fn round_trips(client: &awc::Client, base: &str, admin: &str, socket: &mut Socket, n: usize) {
    for i in 0..n {
        let published = post(
            client,
            format!("{base}/api/v1/notifications"),
            Some(admin),
            &json!({"title": format!("n{i}"), "body": "allocation count", "priority": "high"}),
        )
        .await;
        let frame = next_json(socket).await;
        assert_eq!(frame["type"], "notifications", "{frame}");
        let ids: Vec<Value> = frame["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].clone())
            .collect();
        assert_eq!(ids, [published["id"].clone()]);
        let ack = json!({"type": "ack", "ids": ids}).to_string();
        socket.send(ws::Message::Text(ack.into())).await.unwrap();
    }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let (port, dir) = start_relay();
    let admin = std::fs::read_to_string(dir.path().join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    actix_rt::System::new().block_on(async move {
        let base = format!("http://127.0.0.1:{port}");
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish();
        let code = post(
            &client,
            format!("{base}/api/v1/pairing-codes"),
            Some(&admin),
            &json!({}),
        )
        .await;
        let paired = post(
            &client,
            format!("{base}/api/v1/devices/pair"),
            None,
            &json!({"code": code["code"], "name": "bench", "platform": "android"}),
        )
        .await;
        let token = paired["accessToken"].as_str().unwrap().to_owned();
        let (_, mut socket) = client
            .ws(format!("ws://127.0.0.1:{port}/api/v1/ws"))
            .bearer_auth(&token)
            .connect()
            .await
            .unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "hello");
        // Warm-up: pools, caches, buffers and lazily built state reach their steady size.
        round_trips(&client, &base, &admin, &mut socket, 500).await;
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        let before = counters();
        let started = Instant::now();
        round_trips(&client, &base, &admin, &mut socket, n).await;
        let elapsed = started.elapsed();
        // Let the last acks' group commit happen (5 ms window) before counting.
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        let after = counters();
        let process = (after.0 - before.0, after.1 - before.1);
        let client_side = (after.2 - before.2, after.3 - before.3);
        let relay = (process.0 - client_side.0, process.1 - client_side.1);
        let per = |x: u64| x as f64 / n as f64;
        println!("notifications: {n} (one POST each, delivered and acked), {elapsed:.2?}");
        println!(
            "relay:  {:.1} allocations, {:.0} bytes allocated per notification",
            per(relay.0),
            per(relay.1)
        );
        println!(
            "client: {:.1} allocations, {:.0} bytes per notification (the load, not the relay)",
            per(client_side.0),
            per(client_side.1)
        );
    });
    drop(dir);
    std::process::exit(0);
}
