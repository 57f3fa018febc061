//! Chaos under load (issue 18): ignored tests, each run by its script in `scripts/chaos/`
//! (`scripts/chaos/all` runs every one in turn). Each starts the real relay binary on a fresh data
//! directory (SQLite), puts it under load, breaks something, and checks what the relay promises:
//! nothing answered 202 is lost (at-least-once: duplicates are allowed, counted and reported), and
//! the relay keeps serving everyone else. Each ends by printing one line,
//! `202'd N, delivered N, lost N, duplicated N` (counted per notification and target device), and
//! fails if anything was lost.
//!
//! - `scripts/chaos/kill-9` runs [`kill::kill_9_every_few_seconds_under_load_loses_nothing_202d`];
//! - `scripts/chaos/redis-restart` runs
//!   [`redis::redis_stopped_and_restarted_under_load_loses_nothing_and_the_relay_serves_again`];
//! - `scripts/chaos/disk-full` runs
//!   [`disk_full::a_full_disk_answers_503_loses_nothing_202d_and_the_relay_recovers`];
//! - `scripts/chaos/slow-reader` runs
//!   [`slow_reader::a_device_that_never_reads_is_dropped_and_the_others_keep_receiving`];
//! - `scripts/chaos/reconnect-storm` runs
//!   [`storm::a_thousand_devices_reconnecting_at_once_all_get_their_backlog`];
//! - `scripts/chaos/malformed-frames` runs
//!   [`malformed::ten_thousand_malformed_frames_on_one_socket_leave_the_others_unaffected`];
//! - `scripts/chaos/clock-jumps` runs
//!   [`clock::clock_jumps_across_ack_timeouts_quiet_hours_and_token_expiry_lose_nothing`].
//!
//! Sizes and durations come from `CHAOS_…` environment variables (each test's comment names its
//! own, with the defaults); the scripts document them. The load is the test's own: publishers
//! closed-loop on `POST /notifications` (title `chaos SEQ`, so a 202 whose body the kill cut off
//! still counts), devices from [`crate::helpers::device_loop`] that ack every frame and reconnect
//! when their socket drops.
//!
//! Layout: here the chaos settings, the restartable [`Relay`], the publishers and the tally; one
//! submodule per scenario.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify};

use crate::helpers::{
    device_loop, spawn_process_with, until, ChildRelay, Device, DeviceLog, Roaming,
    RECONNECT_BACKOFF,
};

mod clock;
mod disk_full;
mod kill;
mod malformed;
mod redis;
mod slow_reader;
mod storm;

/// A `CHAOS_…` setting from the environment, or its default.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} does not parse")),
        _ => default,
    }
}

/// The rate limits that are not what a scenario is about, lifted as `scripts/bench.sh` lifts
/// them: every test socket and request comes from 127.0.0.1.
const LIFTED_LIMITS: &[(&str, &str)] = &[
    ("BEEP__LIMITS__MAX_SOCKETS_PER_IP", "0"),
    ("BEEP__LIMITS__WS_CONNECTS_PER_MINUTE", "10000000"),
    ("BEEP__LIMITS__WS_FRAMES_PER_SECOND", "1000000"),
    ("BEEP__LIMITS__WS_FRAME_BURST", "1000000"),
    ("BEEP__LIMITS__ADMIN_PER_MINUTE", "100000000"),
    ("BEEP__LIMITS__IP_PER_MINUTE", "100000000"),
];

/// The relay binary on a data directory of its own, which it keeps across kills.
struct Relay {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    process: Option<ChildRelay>,
    /// The initial admin token.
    token: String,
    http: awc::Client,
}

impl Relay {
    /// Starts `beepmyphone serve` on a fresh data directory with `env` (plus info-level logs).
    async fn start(env: &[(&str, &str)]) -> Relay {
        Relay::start_in(tempfile::tempdir().unwrap(), env).await
    }

    /// [`Relay::start`] on the data directory `dir`.
    async fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Relay {
        let mut all = vec![("BEEP__LOG__LEVEL".to_owned(), "info".to_owned())];
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let mut relay = Relay {
            dir,
            env: all,
            process: None,
            token: String::new(),
            http: awc::Client::builder()
                .timeout(Duration::from_secs(20))
                .finish(),
        };
        relay.launch().await;
        relay.token = std::fs::read_to_string(relay.dir.path().join("initial-admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        relay
    }

    /// Starts the binary and waits for its listening line, off the test's thread so that the
    /// load keeps running meanwhile; how long that took.
    async fn launch(&mut self) -> Duration {
        let began = Instant::now();
        let (dir, env) = (self.dir.path().to_path_buf(), self.env.clone());
        let child = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            spawn_process_with(&dir, &env)
        })
        .await
        .expect("the relay starts");
        self.process = Some(child);
        began.elapsed()
    }

    /// kill -9, then a start on the same data directory (on a new port); the time to listening.
    async fn kill_9_and_restart(&mut self) -> Duration {
        if let Some(process) = self.process.take() {
            process.kill_9();
        }
        self.launch().await
    }

    fn process(&self) -> &ChildRelay {
        self.process.as_ref().expect("the relay runs")
    }

    fn port(&self) -> u16 {
        self.process().port
    }

    fn address(&self) -> String {
        self.process().address.clone()
    }

    fn pid(&self) -> u32 {
        self.process().child.id()
    }

    /// Whether the process is still there (it did not exit or crash).
    fn running(&mut self) -> bool {
        let process = self.process.as_mut().expect("the relay runs");
        matches!(process.child.try_wait(), Ok(None))
    }

    /// Its resident memory, KiB.
    fn rss_kb(&self) -> u64 {
        beepmyphone::bench::report::read_rss_kb(Some(self.pid())).expect("/proc/PID/status")
    }

    /// Its open file descriptors (sockets included).
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc/PID/fd")
            .count()
    }

    /// Pairs a device through `client` (whose source address counts for the per-IP limits).
    async fn pair_via(&self, client: &awc::Client, name: &str) -> Device {
        let address = self.address();
        let mut res = client
            .post(format!("{address}/api/v1/pairing-codes"))
            .bearer_auth(&self.token)
            .send_json(&json!({}))
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 201);
        let code: Value = res.json().await.unwrap();
        let mut res = client
            .post(format!("{address}/api/v1/devices/pair"))
            .send_json(&json!({"code": code["code"], "name": name, "platform": "android"}))
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        assert_eq!(res.status().as_u16(), 201, "{body}");
        Device {
            id: body["deviceId"].as_str().unwrap().to_owned(),
            access_token: body["accessToken"].as_str().unwrap().to_owned(),
            refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    async fn pair(&self, name: &str) -> Device {
        self.pair_via(&self.http, name).await
    }

    /// `POST /notifications/batch` with the admin token; asserts 202.
    async fn publish_batch(&self, items: &[Value]) {
        let mut res = self
            .http
            .post(format!("{}/api/v1/notifications/batch", self.address()))
            .bearer_auth(&self.token)
            .send_json(&json!({ "items": items }))
            .await
            .unwrap();
        let body: Value = res.json().limit(16 * 1024 * 1024).await.unwrap();
        assert_eq!(res.status().as_u16(), 202, "{body}");
    }

    /// The Prometheus text of `GET /metrics`.
    async fn metrics(&self) -> String {
        let mut res = self
            .http
            .get(format!("{}/metrics", self.address()))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        String::from_utf8(res.body().limit(16 * 1024 * 1024).await.unwrap().to_vec()).unwrap()
    }

    /// One sample of `GET /metrics`, e.g. `beepmyphone_ws_closed_total{code="1008"}`; 0 if absent.
    async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// The lines of the relay's JSON log (all its processes so far) for which `keep` holds.
    fn log_lines(&self, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let output = self.process().output.lock().unwrap().clone();
        output
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| keep(line))
            .collect()
    }

    /// `GET /health/live`'s status.
    async fn live(&self) -> u16 {
        match self
            .http
            .get(format!("{}/health/live", self.address()))
            .send()
            .await
        {
            Ok(res) => res.status().as_u16(),
            Err(_) => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load: publishers, devices, and the tally.

/// What the publishers were answered.
#[derive(Default)]
struct Published {
    /// Sequence numbers answered 202 (the title `chaos SEQ` names it to its devices).
    accepted: RefCell<HashSet<u64>>,
    /// Everything else, by kind (`HTTP 503`, `send error`): counted, never an error by itself.
    outcomes: RefCell<BTreeMap<String, u64>>,
    /// When each answered request was sent, and how long its answer took.
    latencies: RefCell<Vec<(Instant, Duration)>>,
}

impl Published {
    fn accepted(&self) -> usize {
        self.accepted.borrow().len()
    }

    fn outcome(&self, what: String) {
        *self.outcomes.borrow_mut().entry(what).or_default() += 1;
    }

    /// Fails if a publish was answered with a 5xx other than 503 (a store or Redis that cannot
    /// answer is a 503, and only that).
    fn assert_no_5xx_but_503(&self) {
        let outcomes = self.outcomes.borrow();
        assert!(
            !outcomes
                .keys()
                .any(|k| k.starts_with("HTTP 5") && k != "HTTP 503"),
            "a publish was answered with a 5xx other than 503: {outcomes:?}"
        );
    }

    /// The median answer time of the requests sent within (`inside`) or outside `windows`.
    fn median_ms(&self, windows: &[(Instant, Instant)], inside: bool) -> f64 {
        let mut took: Vec<Duration> = self
            .latencies
            .borrow()
            .iter()
            .filter(|(at, _)| windows.iter().any(|(from, to)| at >= from && at < to) == inside)
            .map(|(_, took)| *took)
            .collect();
        took.sort();
        took.get(took.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

/// Publishers and the devices they publish to.
struct Load {
    /// The relay's port now, for publishers and devices; empty while it is down.
    relays: watch::Sender<Vec<u16>>,
    roaming: Roaming,
    /// Notification `seq` goes to `targets[seq % targets.len()]` (device ids).
    targets: Rc<Vec<Vec<String>>>,
    /// Each device's log, by device id.
    logs: HashMap<String, Rc<DeviceLog>>,
    published: Rc<Published>,
    next_seq: Rc<Cell<u64>>,
    stop: Rc<Cell<bool>>,
    publishers: Vec<actix_rt::task::JoinHandle<()>>,
}

impl Load {
    fn new(port: u16, targets: Vec<Vec<String>>) -> Load {
        let (relays, list) = watch::channel(vec![port]);
        Load {
            relays,
            roaming: Roaming {
                relays: list,
                done: Rc::new(Cell::new(false)),
                progress: Rc::new(Notify::new()),
            },
            targets: Rc::new(targets),
            logs: HashMap::new(),
            published: Rc::new(Published::default()),
            next_seq: Rc::new(Cell::new(0)),
            stop: Rc::new(Cell::new(false)),
            publishers: Vec::new(),
        }
    }

    /// Pairs `n` devices (`phone 0`, `phone 1`, …) with `relay`, each the target of every `n`-th
    /// notification, and starts them roaming on it; the load and the devices' logs, in order.
    async fn phones(relay: &Relay, n: usize) -> (Load, Vec<Rc<DeviceLog>>) {
        let mut paired = Vec::new();
        for i in 0..n {
            paired.push(relay.pair(&format!("phone {i}")).await);
        }
        let mut load = Load::new(
            relay.port(),
            paired.iter().map(|d| vec![d.id.clone()]).collect(),
        );
        let logs = paired.iter().map(|d| load.device(d)).collect();
        (load, logs)
    }

    /// Starts a roaming device (see [`device_loop`]) on the load's relay list.
    fn device(&mut self, device: &Device) -> Rc<DeviceLog> {
        let log = Rc::new(DeviceLog::default());
        self.logs.insert(device.id.clone(), log.clone());
        actix_rt::spawn(device_loop(
            device.access_token.clone(),
            self.roaming.clone(),
            log.clone(),
        ));
        log
    }

    /// Starts `n` closed-loop publishers with the admin token; `body` goes into every notification.
    fn publish(&mut self, n: usize, token: &str, body: &str) {
        for _ in 0..n {
            self.publishers.push(actix_rt::spawn(publisher(Publisher {
                relays: self.roaming.relays.clone(),
                token: token.to_owned(),
                body: body.to_owned(),
                targets: self.targets.clone(),
                next_seq: self.next_seq.clone(),
                stop: self.stop.clone(),
                published: self.published.clone(),
                progress: self.roaming.progress.clone(),
            })));
        }
    }

    /// Stops the publishers and waits for their last requests' answers.
    async fn stop_publishing(&mut self) {
        self.stop.set(true);
        for publisher in self.publishers.drain(..) {
            publisher.await.unwrap();
        }
    }

    /// Waits up to 30 s until every device of the load has had a `hello`; whether all did.
    async fn all_connected(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        until(&self.roaming.progress, deadline, || {
            self.logs.values().all(|log| log.hellos.get() > 0)
        })
        .await
    }

    /// Notifications the devices have received, all together.
    fn received(&self) -> usize {
        self.logs.values().map(|log| log.items.borrow().len()).sum()
    }

    /// Waits up to `seconds` until every 202'd notification reached every target device.
    async fn drain(&self, seconds: f64) -> bool {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        until(&self.roaming.progress, deadline, || {
            // Cheap first: nothing can be complete while fewer items arrived than were due.
            self.received() >= self.tally().deliveries && self.tally().lost.is_empty()
        })
        .await
    }

    /// 202'd deliveries against the devices' logs.
    fn tally(&self) -> Tally {
        let mut received: HashMap<&str, HashSet<u64>> = HashMap::new();
        let mut unconfirmed = 0;
        let accepted = self.published.accepted.borrow();
        for (device, log) in &self.logs {
            let seqs = received.entry(device.as_str()).or_default();
            for title in log.items.borrow().values() {
                let Some(seq) = title.strip_prefix("chaos ").and_then(|s| s.parse().ok()) else {
                    continue;
                };
                seqs.insert(seq);
                if !accepted.contains(&seq) {
                    unconfirmed += 1;
                }
            }
        }
        let mut tally = Tally {
            unconfirmed,
            duplicated: self.logs.values().map(|log| log.duplicates.get()).sum(),
            ..Tally::default()
        };
        for seq in accepted.iter() {
            let targets = &self.targets[usize::try_from(*seq).unwrap() % self.targets.len()];
            for device in targets {
                tally.deliveries += 1;
                if received
                    .get(device.as_str())
                    .is_some_and(|s| s.contains(seq))
                {
                    tally.delivered += 1;
                } else {
                    tally.lost.push((*seq, device.clone()));
                }
            }
        }
        tally.lost.sort();
        tally
    }

    fn done(&self) {
        self.roaming.done.set(true);
    }
}

/// One publisher's share of a [`Load`].
struct Publisher {
    relays: watch::Receiver<Vec<u16>>,
    token: String,
    body: String,
    targets: Rc<Vec<Vec<String>>>,
    next_seq: Rc<Cell<u64>>,
    stop: Rc<Cell<bool>>,
    published: Rc<Published>,
    progress: Rc<Notify>,
}

/// Publishes one notification at a time until told to stop. A status line of 202 counts as
/// accepted even if the body then fails to arrive (the relay answered 202). After a failure it
/// backs off until the relay list changes (a restart) or 100 ms pass.
async fn publisher(mut p: Publisher) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    while !p.stop.get() {
        // Out of the watch's lock before anything awaits.
        let port = p.relays.borrow_and_update().first().copied();
        let Some(port) = port else {
            let _ = tokio::time::timeout(Duration::from_millis(100), p.relays.changed()).await;
            continue;
        };
        let seq = p.next_seq.get();
        p.next_seq.set(seq + 1);
        let targets = &p.targets[usize::try_from(seq).unwrap() % p.targets.len()];
        let sent_at = Instant::now();
        let sent = client
            .post(format!("http://127.0.0.1:{port}/api/v1/notifications"))
            .bearer_auth(&p.token)
            .send_json(
                &json!({"title": format!("chaos {seq}"), "body": p.body, "targets": targets}),
            )
            .await;
        if sent.is_ok() {
            p.published
                .latencies
                .borrow_mut()
                .push((sent_at, sent_at.elapsed()));
        }
        match sent {
            Ok(mut res) if res.status().as_u16() == 202 => {
                p.published.accepted.borrow_mut().insert(seq);
                let _ = res.body().await; // the 202 counts even if the body is cut off
                p.progress.notify_one();
                continue;
            }
            Ok(mut res) => {
                p.published
                    .outcome(format!("HTTP {}", res.status().as_u16()));
                let _ = res.body().await;
            }
            Err(_) => p.published.outcome("send error".into()),
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), p.relays.changed()).await;
    }
}

/// 202'd deliveries (a notification and one of its target devices) and what became of them.
#[derive(Default, Debug)]
struct Tally {
    deliveries: usize,
    delivered: usize,
    /// (seq, device) of each 202'd delivery never received.
    lost: Vec<(u64, String)>,
    duplicated: u64,
    /// Received notifications that were never answered 202 (the kill cut the answer off): the
    /// relay had committed them; not an error.
    unconfirmed: usize,
}

impl Tally {
    /// Prints the scenario's one result line (and the unconfirmed count on its own line).
    fn print(&self, scenario: &str) {
        if self.unconfirmed > 0 {
            println!(
                "{scenario}: {} notifications received whose 202 never reached the publisher \
                 (committed as the relay died)",
                self.unconfirmed
            );
        }
        println!(
            "202'd {}, delivered {}, lost {}, duplicated {}",
            self.deliveries,
            self.delivered,
            self.lost.len(),
            self.duplicated
        );
    }

    fn assert_nothing_lost(&self) {
        assert!(
            self.lost.is_empty(),
            "{} of {} 202'd deliveries never arrived; the first: {:?}",
            self.lost.len(),
            self.deliveries,
            &self.lost[..self.lost.len().min(10)]
        );
    }
}

/// Opens a socket for `token` and reads to `hello` (`Ok`) or the close (`Err(code)`).
async fn probe_socket(port: u16, token: &str) -> Result<(), Option<u16>> {
    let Ok((_res, mut framed)) = awc::Client::new()
        .ws(format!("ws://127.0.0.1:{port}/api/v1/ws"))
        .bearer_auth(token)
        .connect()
        .await
    else {
        return Err(None);
    };
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), framed.next())
            .await
            .expect("the relay answers an upgrade within 10 s");
        match frame {
            Some(Ok(awc::ws::Frame::Text(bytes))) => {
                let value: Value = serde_json::from_slice(&bytes).unwrap();
                if value["type"] == "hello" {
                    let _ = framed.send(awc::ws::Message::Close(None)).await;
                    return Ok(());
                }
            }
            Some(Ok(awc::ws::Frame::Close(reason))) => {
                return Err(reason.map(|r| u16::from(r.code)))
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(None),
        }
    }
}
