//! The load itself: one OS thread per worker, each running its own `actix_rt::System` with awc
//! clients. A worker pairs devices, holds their sockets (acking every `notifications` frame like a
//! real device), and runs publisher tasks, as the main thread asks it to through a job channel.
//!
//! Everything a socket or publisher records stays on its thread (histograms and the received and
//! accepted bitmaps, no locks) except a few shared atomic counters the main thread watches; the
//! per-thread records are handed back when the worker finishes and merged there. A notification
//! targets one device and a device lives on one thread, so duplicates are caught per thread.
//!
//! With several relays (`--server` more than once) pairing and clean-up go through the first,
//! device i holds its socket on relay i mod n and publisher j publishes on relay (j + 1) mod n
//! ([`super::plan::device_server`], [`super::plan::publisher_server`]); each notification's title
//! names the relay it was published on, so its device can tell a same-relay delivery from a
//! cross-relay one.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use awc::ws::{CloseCode, Frame, Message};
use bytes::Bytes;
use futures_util::{stream, Sink, SinkExt, Stream, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Semaphore};

use super::plan::{
    claim_range, device_server, encode_title, intended_offset_us, parse_title, publisher_server,
    source_address, target_index, Pacing, Parsed, Stamp,
};
use super::stats::{latency_us, new_histogram, PerSecond, SeqSet};
use super::BenchError;

/// How long a socket may take from connect to `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// Time limit of every HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest frame the device sockets accept.
const MAX_FRAME: usize = 4 * 1024 * 1024;
/// Most ids in one ack frame (the relay's limit).
const MAX_ACK_IDS: usize = 1_000;
/// Longest error label kept in the report.
const MAX_ERROR_LABEL: usize = 120;

/// What every worker knows about the run.
#[derive(Debug)]
pub struct Config {
    /// Base URLs of the relays (at least one; pairing and clean-up go through the first).
    pub servers: Vec<String>,
    /// WebSocket URLs of the relays, in the same order.
    pub ws_urls: Vec<String>,
    /// The admin token.
    pub token: String,
    /// This run's id.
    pub run_id: String,
    /// The bench's own start: every timestamp is µs since this instant.
    pub start: Instant,
    /// Whether sockets may bind 127.0.0.x source addresses.
    pub spread_sources: bool,
    /// How the relay's certificate is checked (https).
    pub trust: crate::tls::client::Trust,
}

impl Config {
    /// µs since the bench's start.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The relay pairing, clean-up and the readiness check go through: the first.
    pub fn first_server(&self) -> &str {
        self.servers.first().map_or("", String::as_str)
    }

    /// Whether the run has more than one relay.
    pub fn clustered(&self) -> bool {
        self.servers.len() > 1
    }
}

/// Counters shared by all workers and read by the main thread.
#[derive(Debug)]
pub struct Shared {
    /// Next sequence number to hand out.
    pub next_seq: AtomicU64,
    /// Notifications sent in publish requests.
    pub published: AtomicU64,
    /// Notifications answered 202.
    pub accepted: AtomicU64,
    /// Distinct notifications of this run received.
    pub delivered: AtomicU64,
    /// Receptions of an already received notification.
    pub duplicates: AtomicU64,
    /// Received notifications of other runs.
    pub foreign: AtomicU64,
    /// `notifications` frames received.
    pub frames: AtomicU64,
    /// Their bytes.
    pub frame_bytes: AtomicU64,
    /// Notifications in them.
    pub items: AtomicU64,
    /// First reception of this run's notifications, µs since start (`u64::MAX`: none yet).
    pub first_rx_us: AtomicU64,
    /// Last reception, µs since start.
    pub last_rx_us: AtomicU64,
    /// Connects tried.
    pub connect_attempts: AtomicU64,
    /// Sockets that reached `hello`.
    pub connected: AtomicU64,
    /// Connects that failed.
    pub connect_failed: AtomicU64,
    /// Sockets the relay closed.
    pub closed_by_server: AtomicU64,
    /// Open-loop requests that left more than 1 ms late.
    pub late_sends: AtomicU64,
    /// Failures by kind.
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            next_seq: AtomicU64::new(0),
            published: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            frame_bytes: AtomicU64::new(0),
            items: AtomicU64::new(0),
            first_rx_us: AtomicU64::new(u64::MAX),
            last_rx_us: AtomicU64::new(0),
            connect_attempts: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            closed_by_server: AtomicU64::new(0),
            late_sends: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Shared {
    /// Counts a failure of kind `label`.
    pub fn error(&self, label: impl Into<String>) {
        let mut label = label.into();
        if label.len() > MAX_ERROR_LABEL {
            let mut cut = MAX_ERROR_LABEL;
            while !label.is_char_boundary(cut) {
                cut -= 1;
            }
            label.truncate(cut);
        }
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        *errors.entry(label).or_default() += 1;
    }

    /// A copy of the failures so far.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A paired device.
#[derive(Debug, Clone)]
pub struct Device {
    /// `dev_…`.
    pub id: String,
    /// Its access token.
    pub access_token: String,
}

/// One publishing phase, as every worker runs it.
#[derive(Debug)]
pub struct PublishJob {
    /// Open or closed loop.
    pub pacing: Pacing,
    /// Notifications per request.
    pub batch: u64,
    /// Consecutive notifications per device.
    pub burst: u64,
    /// Publishers in total.
    pub publishers: u64,
    /// Notifications to publish at most.
    pub count: Option<u64>,
    /// When publishing starts, µs since start.
    pub start_us: u64,
    /// When publishing stops, µs since start.
    pub end_us: Option<u64>,
    /// Device ids, by index.
    pub targets: Arc<Vec<String>>,
}

type Reply<T> = std_mpsc::Sender<T>;

/// Connects paced at a fixed rate: device `i` starts `i / rate` seconds after `start_us`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectPace {
    /// When the first connect starts, µs since the bench's start.
    pub start_us: u64,
    /// Connects per second, all threads together.
    pub rate: f64,
}

/// What the main thread asks a worker to do.
pub enum Job {
    /// Pair the devices of these indices.
    Pair {
        /// Device indices.
        indices: Vec<usize>,
        /// Pairings in flight.
        concurrency: usize,
        /// The devices, by index.
        reply: Reply<Result<Vec<(usize, Device)>, BenchError>>,
    },
    /// Open and hold these devices' sockets.
    Connect {
        /// Devices with their indices.
        devices: Vec<(usize, Device)>,
        /// Sockets in the whole run (for the source address spread).
        total: usize,
        /// Connects in flight.
        concurrency: usize,
        /// When each connect starts, if paced.
        pace: Option<ConnectPace>,
        /// Done.
        reply: Reply<()>,
    },
    /// Run these publishers until the job's end.
    Publish {
        /// The phase.
        job: Arc<PublishJob>,
        /// Publisher numbers to run here.
        publishers: Vec<u64>,
        /// Done.
        reply: Reply<()>,
    },
    /// Wait until `GET /health/ready` answers 200.
    Ready {
        /// How long to wait.
        timeout: Duration,
        /// Ready, or why not.
        reply: Reply<Result<(), BenchError>>,
    },
    /// Delete devices (`DELETE /devices/{id}`).
    Delete {
        /// Device ids.
        ids: Vec<String>,
        /// Deletions that failed.
        reply: Reply<u64>,
    },
    /// Close every socket.
    Disconnect {
        /// Done.
        reply: Reply<()>,
    },
}

/// The histograms one worker fills.
#[derive(Debug, Clone)]
pub struct Histograms {
    /// Intended send → receive.
    pub latency: Histogram<u64>,
    /// Actual send → receive.
    pub latency_from_send: Histogram<u64>,
    /// Publish response time.
    pub publish: Histogram<u64>,
    /// Connect → hello.
    pub connect: Histogram<u64>,
    /// Open loop: actual − intended send time.
    pub lag: Histogram<u64>,
    /// Intended send → receive, by the second of the intended send.
    pub per_second: PerSecond,
    /// Several relays: intended send → receive of notifications published on the relay that
    /// holds their device's socket.
    pub latency_same_relay: Histogram<u64>,
    /// Several relays: the same, published on another relay than their device's.
    pub latency_cross_relay: Histogram<u64>,
}

impl Histograms {
    /// Empty histograms.
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        Ok(Self {
            latency: new_histogram()?,
            latency_from_send: new_histogram()?,
            publish: new_histogram()?,
            connect: new_histogram()?,
            lag: new_histogram()?,
            per_second: PerSecond::default(),
            latency_same_relay: new_histogram()?,
            latency_cross_relay: new_histogram()?,
        })
    }

    /// Adds `other`'s values.
    pub fn merge(&mut self, other: &Histograms) -> Result<(), hdrhistogram::AdditionError> {
        self.latency.add(&other.latency)?;
        self.latency_from_send.add(&other.latency_from_send)?;
        self.publish.add(&other.publish)?;
        self.connect.add(&other.connect)?;
        self.per_second.merge(&other.per_second);
        self.latency_same_relay.add(&other.latency_same_relay)?;
        self.latency_cross_relay.add(&other.latency_cross_relay)?;
        self.lag.add(&other.lag)
    }
}

/// What a worker hands back when it finishes.
#[derive(Debug)]
pub struct WorkerResult {
    /// Its histograms.
    pub histograms: Histograms,
    /// Sequence numbers its devices received.
    pub received: SeqSet,
    /// Sequence numbers its publishers got a 202 for.
    pub accepted: SeqSet,
}

/// A worker thread.
pub struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    thread: JoinHandle<WorkerResult>,
}

impl Worker {
    /// Starts worker `index`.
    pub fn spawn(
        index: usize,
        config: Arc<Config>,
        shared: Arc<Shared>,
        histograms: Histograms,
    ) -> Result<Self, BenchError> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || {
                actix_rt::System::new().block_on(worker_main(rx, config, shared, histograms))
            })
            .map_err(|e| BenchError::Thread(e.to_string()))?;
        Ok(Self { jobs, thread })
    }

    /// Queues a job.
    pub fn send(&self, job: Job) -> Result<(), BenchError> {
        self.jobs.send(job).map_err(|_| BenchError::WorkerGone)
    }

    /// Ends the worker and collects its records.
    pub fn finish(self) -> Result<WorkerResult, BenchError> {
        drop(self.jobs);
        self.thread.join().map_err(|_| BenchError::WorkerGone)
    }
}

/// A worker's thread-local state.
struct Local {
    config: Arc<Config>,
    shared: Arc<Shared>,
    histograms: RefCell<Histograms>,
    received: RefCell<SeqSet>,
    accepted: RefCell<SeqSet>,
    http: awc::Client,
    ws_clients: RefCell<HashMap<Option<Ipv4Addr>, awc::Client>>,
    shutdown: watch::Sender<bool>,
    sockets: RefCell<Vec<actix_rt::task::JoinHandle<()>>>,
}

fn client(source: Option<Ipv4Addr>, trust: &crate::tls::client::Trust) -> awc::Client {
    // HTTP/1.1 only: the generator never speaks HTTP/2 (see deny.toml on h2).
    let mut connector = awc::Connector::new()
        .max_http_version(awc::http::Version::HTTP_11)
        .limit(0)
        .timeout(Duration::from_secs(10));
    if let Some(ip) = source {
        connector = connector.local_address(IpAddr::V4(ip));
    }
    // A connector that cannot be built (OpenSSL out of memory) leaves awc's default, which
    // checks by the system's store: never weaker than asked.
    if let Ok(tls) = crate::tls::client::connector(trust) {
        connector = connector.openssl(tls);
    }
    awc::Client::builder()
        .connector(connector)
        .timeout(HTTP_TIMEOUT)
        .finish()
}

async fn worker_main(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    config: Arc<Config>,
    shared: Arc<Shared>,
    histograms: Histograms,
) -> WorkerResult {
    let (shutdown, _) = watch::channel(false);
    let http = client(None, &config.trust);
    let local = Rc::new(Local {
        config,
        shared,
        histograms: RefCell::new(histograms),
        received: RefCell::new(SeqSet::new()),
        accepted: RefCell::new(SeqSet::new()),
        http,
        ws_clients: RefCell::new(HashMap::new()),
        shutdown,
        sockets: RefCell::new(Vec::new()),
    });
    while let Some(job) = jobs.recv().await {
        match job {
            Job::Pair {
                indices,
                concurrency,
                reply,
            } => {
                let _ = reply.send(pair_all(&local, indices, concurrency).await);
            }
            Job::Connect {
                devices,
                total,
                concurrency,
                pace,
                reply,
            } => {
                connect_all(&local, devices, total, concurrency, pace).await;
                let _ = reply.send(());
            }
            Job::Publish {
                job,
                publishers,
                reply,
            } => {
                futures_util::future::join_all(
                    publishers
                        .into_iter()
                        .map(|p| run_publisher(local.clone(), job.clone(), p)),
                )
                .await;
                let _ = reply.send(());
            }
            Job::Ready { timeout, reply } => {
                let _ = reply.send(wait_ready(&local, timeout).await);
            }
            Job::Delete { ids, reply } => {
                let _ = reply.send(delete_all(&local, ids).await);
            }
            Job::Disconnect { reply } => {
                disconnect_all(&local).await;
                let _ = reply.send(());
            }
        }
    }
    disconnect_all(&local).await;
    let histograms = local.histograms.borrow().clone();
    let received = local.received.borrow().clone();
    let accepted = local.accepted.borrow().clone();
    WorkerResult {
        histograms,
        received,
        accepted,
    }
}

// ---------------------------------------------------------------------------------------------
// Pairing and clean-up.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CodeResponse {
    code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PairResponse {
    device_id: String,
    access_token: String,
}

#[derive(Serialize)]
struct PairRequest<'a> {
    code: &'a str,
    name: &'a str,
    platform: &'static str,
}

async fn post_json<T: for<'de> Deserialize<'de>>(
    local: &Local,
    path: &str,
    admin: bool,
    body: &impl Serialize,
    expect: u16,
) -> Result<T, String> {
    let mut request = local
        .http
        .post(format!("{}{path}", local.config.first_server()));
    if admin {
        request = request.bearer_auth(&local.config.token);
    }
    let mut response = request
        .send_json(body)
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    let status = response.status().as_u16();
    let bytes = response
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    if status != expect {
        return Err(format!(
            "POST {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("POST {path}: {e}"))
}

async fn pair_one(local: &Local, index: usize) -> Result<Device, String> {
    let code: CodeResponse = post_json(
        local,
        "/api/v1/pairing-codes",
        true,
        &serde_json::json!({}),
        201,
    )
    .await?;
    let name = format!("bench-{}-{index}", local.config.run_id);
    let paired: PairResponse = post_json(
        local,
        "/api/v1/devices/pair",
        false,
        &PairRequest {
            code: &code.code,
            name: &name,
            platform: "other",
        },
        201,
    )
    .await?;
    Ok(Device {
        id: paired.device_id,
        access_token: paired.access_token,
    })
}

async fn pair_all(
    local: &Rc<Local>,
    indices: Vec<usize>,
    concurrency: usize,
) -> Result<Vec<(usize, Device)>, BenchError> {
    let results: Vec<(usize, Result<Device, String>)> = stream::iter(indices)
        .map(|i| async move { (i, pair_one(local, i).await) })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results
        .into_iter()
        .map(|(i, r)| r.map(|d| (i, d)).map_err(BenchError::Pairing))
        .collect()
}

async fn delete_all(local: &Rc<Local>, ids: Vec<String>) -> u64 {
    let failures: Vec<bool> = stream::iter(ids)
        .map(|id| async move {
            let url = format!("{}/api/v1/devices/{id}", local.config.first_server());
            match local
                .http
                .delete(url)
                .bearer_auth(&local.config.token)
                .send()
                .await
            {
                Ok(mut response) => {
                    let _ = response.body().await;
                    !response.status().is_success()
                }
                Err(_) => true,
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    failures.into_iter().filter(|failed| *failed).count() as u64
}

/// Waits until every relay's `GET /health/ready` answers 200, all within `timeout`.
async fn wait_ready(local: &Rc<Local>, timeout: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    for server in &local.config.servers {
        let url = format!("{server}/health/ready");
        loop {
            let last = match local.http.get(&url).send().await {
                Ok(mut response) => {
                    let _ = response.body().await;
                    if response.status().as_u16() == 200 {
                        break;
                    }
                    format!("HTTP {}", response.status().as_u16())
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(BenchError::NotReady(format!("{server}: {last}")));
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Device sockets.

#[derive(Deserialize)]
struct InFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    items: Vec<InItem>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct InItem {
    id: String,
    #[serde(default)]
    title: String,
}

#[derive(Serialize)]
struct AckFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ids: &'a [String],
}

/// What a text frame asks of the socket.
enum TextOutcome {
    Hello,
    Ack(Vec<String>),
    Nothing,
}

impl Local {
    fn ws_client(&self, source: Option<Ipv4Addr>) -> awc::Client {
        self.ws_clients
            .borrow_mut()
            .entry(source)
            .or_insert_with(|| client(source, &self.config.trust))
            .clone()
    }

    /// Accounts a text frame from the relay that holds the socket (`relay`, an index into the
    /// servers); returns what to answer.
    fn on_text(&self, bytes: &[u8], relay: usize) -> TextOutcome {
        let now_us = self.config.now_us();
        let frame: InFrame = match serde_json::from_slice(bytes) {
            Ok(frame) => frame,
            Err(_) => {
                self.shared.error("ws: unparsable frame");
                return TextOutcome::Nothing;
            }
        };
        match frame.kind.as_str() {
            "hello" => return TextOutcome::Hello,
            "notifications" => {}
            "error" => {
                self.shared.error(format!(
                    "ws error frame: {}",
                    frame.code.as_deref().unwrap_or("?")
                ));
                return TextOutcome::Nothing;
            }
            other => {
                self.shared.error(format!("ws: unexpected frame {other}"));
                return TextOutcome::Nothing;
            }
        }
        let shared = &self.shared;
        add(&shared.frames, 1);
        add(&shared.frame_bytes, bytes.len() as u64);
        add(&shared.items, frame.items.len() as u64);
        let mut ours = 0;
        let clustered = self.config.clustered();
        {
            let mut histograms = self.histograms.borrow_mut();
            let mut received = self.received.borrow_mut();
            for item in &frame.items {
                match parse_title(&item.title, &self.config.run_id) {
                    Parsed::Ours(stamp) => {
                        ours += 1;
                        let latency = latency_us(stamp.intended_us, now_us);
                        histograms.latency.saturating_record(latency);
                        histograms.per_second.record(stamp.intended_us, latency);
                        histograms
                            .latency_from_send
                            .saturating_record(latency_us(stamp.sent_us, now_us));
                        if clustered {
                            if stamp.via == relay {
                                histograms.latency_same_relay.saturating_record(latency);
                            } else {
                                histograms.latency_cross_relay.saturating_record(latency);
                            }
                        }
                        if received.insert(stamp.seq) {
                            add(&shared.delivered, 1);
                        } else {
                            add(&shared.duplicates, 1);
                        }
                    }
                    Parsed::Foreign => add(&shared.foreign, 1),
                }
            }
        }
        if ours > 0 {
            shared.first_rx_us.fetch_min(now_us, Ordering::Relaxed);
            shared.last_rx_us.fetch_max(now_us, Ordering::Relaxed);
        }
        TextOutcome::Ack(frame.items.into_iter().map(|i| i.id).collect())
    }
}

async fn send_acks<S>(socket: &mut S, ids: &[String]) -> Result<(), String>
where
    S: Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    for chunk in ids.chunks(MAX_ACK_IDS) {
        let text = serde_json::to_string(&AckFrame {
            kind: "ack",
            ids: chunk,
        })
        .map_err(|e| e.to_string())?;
        socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| format!("ws ack: {e}"))?;
    }
    Ok(())
}

/// Connects one device's socket and reads up to `hello`; records the set-up time.
async fn connect_one(
    local: &Rc<Local>,
    index: usize,
    total: usize,
    device: &Device,
) -> Result<(), String> {
    let source = if local.config.spread_sources {
        source_address(index, total)
    } else {
        None
    };
    let client = local.ws_client(source);
    let relay = device_server(index, local.config.ws_urls.len());
    let ws_url = local.config.ws_urls.get(relay).map_or("", String::as_str);
    let started = Instant::now();
    add(&local.shared.connect_attempts, 1);
    let (_, mut socket) = client
        .ws(ws_url)
        .bearer_auth(&device.access_token)
        .max_frame_size(MAX_FRAME)
        .connect()
        .await
        .map_err(|e| format!("ws connect: {e}"))?;
    loop {
        let frame = actix_rt::time::timeout(HELLO_TIMEOUT, socket.next())
            .await
            .map_err(|_| "ws hello: timed out".to_owned())?;
        match frame {
            None => return Err("ws hello: connection closed".into()),
            Some(Err(e)) => return Err(format!("ws hello: {e}")),
            Some(Ok(Frame::Text(bytes))) => match local.on_text(&bytes, relay) {
                TextOutcome::Hello => break,
                TextOutcome::Ack(ids) => send_acks(&mut socket, &ids).await?,
                TextOutcome::Nothing => {}
            },
            Some(Ok(Frame::Ping(bytes))) => socket
                .send(Message::Pong(bytes))
                .await
                .map_err(|e| format!("ws pong: {e}"))?,
            Some(Ok(Frame::Close(reason))) => {
                return Err(format!(
                    "ws hello: closed with {}",
                    reason.map_or(0, |r| u16::from(r.code))
                ))
            }
            Some(Ok(_)) => {}
        }
    }
    let setup = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    local
        .histograms
        .borrow_mut()
        .connect
        .saturating_record(setup);
    add(&local.shared.connected, 1);
    let handle = actix_rt::spawn(hold_socket(
        local.clone(),
        socket,
        relay,
        local.shutdown.subscribe(),
    ));
    local.sockets.borrow_mut().push(handle);
    Ok(())
}

/// Reads a socket (held by relay `relay`) until it closes or the run ends: accounts
/// notifications, acks them, pongs.
async fn hold_socket<S>(
    local: Rc<Local>,
    mut socket: S,
    relay: usize,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Stream<Item = Result<Frame, awc::error::WsProtocolError>>
        + Sink<Message, Error = awc::error::WsProtocolError>
        + Unpin,
{
    loop {
        let frame = tokio::select! {
            _ = shutdown.changed() => {
                let _ = socket.send(Message::Close(Some(CloseCode::Normal.into()))).await;
                return;
            }
            frame = socket.next() => frame,
        };
        let result = match frame {
            None => {
                add(&local.shared.closed_by_server, 1);
                return;
            }
            Some(Err(e)) => Err(format!("ws read: {e}")),
            Some(Ok(Frame::Text(bytes))) => match local.on_text(&bytes, relay) {
                TextOutcome::Ack(ids) => send_acks(&mut socket, &ids).await,
                TextOutcome::Hello | TextOutcome::Nothing => Ok(()),
            },
            Some(Ok(Frame::Ping(bytes))) => socket
                .send(Message::Pong(bytes))
                .await
                .map_err(|e| format!("ws pong: {e}")),
            Some(Ok(Frame::Close(reason))) => {
                add(&local.shared.closed_by_server, 1);
                local.shared.error(format!(
                    "ws closed by the relay: {}",
                    reason.map_or(0, |r| u16::from(r.code))
                ));
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            Some(Ok(_)) => Ok(()),
        };
        if let Err(e) = result {
            local.shared.error(e);
            add(&local.shared.closed_by_server, 1);
            return;
        }
    }
}

async fn connect_all(
    local: &Rc<Local>,
    devices: Vec<(usize, Device)>,
    total: usize,
    concurrency: usize,
    pace: Option<ConnectPace>,
) {
    stream::iter(devices)
        .for_each_concurrent(concurrency.max(1), |(index, device)| async move {
            if let Some(pace) = pace {
                // f64 holds every index exactly; the offset is far below u64::MAX µs.
                let offset = (index as f64 * 1e6 / pace.rate) as u64;
                local.sleep_until_us(pace.start_us + offset).await;
            }
            if let Err(e) = connect_one(local, index, total, &device).await {
                add(&local.shared.connect_failed, 1);
                local.shared.error(e);
            }
        })
        .await;
}

async fn disconnect_all(local: &Rc<Local>) {
    let _ = local.shutdown.send(true);
    let handles: Vec<_> = local.sockets.borrow_mut().drain(..).collect();
    let _ = actix_rt::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(handles),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Publishers.

#[derive(Serialize)]
struct PublishItem<'a> {
    title: String,
    app: &'static str,
    targets: [&'a str; 1],
}

#[derive(Serialize)]
struct PublishBatch<'a> {
    items: Vec<PublishItem<'a>>,
}

impl Local {
    fn claim(&self, job: &PublishJob) -> Option<Range<u64>> {
        let first = self.shared.next_seq.fetch_add(job.batch, Ordering::Relaxed);
        claim_range(first, job.batch, job.count)
    }

    async fn sleep_until_us(&self, us: u64) {
        let at = self.config.start + Duration::from_micros(us);
        actix_rt::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

/// Sends one publish request for `seqs` to relay `via` (an index into the servers), meant to
/// leave at `intended_us`; accounts the answer.
async fn send_request(
    local: &Local,
    job: &PublishJob,
    via: usize,
    seqs: Range<u64>,
    intended_us: u64,
) {
    let sent_us = local.config.now_us();
    let n = seqs.end - seqs.start;
    add(&local.shared.published, n);
    let items: Vec<PublishItem<'_>> = seqs
        .clone()
        .map(|seq| {
            let target = job
                .targets
                .get(target_index(seq, job.targets.len(), job.burst))
                .map_or("", String::as_str);
            PublishItem {
                title: encode_title(
                    &local.config.run_id,
                    Stamp {
                        seq,
                        intended_us,
                        sent_us,
                        via,
                    },
                ),
                app: "bench",
                targets: [target],
            }
        })
        .collect();
    let (path, body) = if job.batch > 1 {
        (
            "/api/v1/notifications/batch",
            serde_json::to_vec(&PublishBatch { items }),
        )
    } else {
        let Some(item) = items.first() else { return };
        ("/api/v1/notifications", serde_json::to_vec(item))
    };
    let body = match body {
        Ok(body) => Bytes::from(body),
        Err(e) => return local.shared.error(format!("encode: {e}")),
    };
    let server = local.config.servers.get(via).map_or("", String::as_str);
    let result = local
        .http
        .post(format!("{server}{path}"))
        .bearer_auth(&local.config.token)
        .content_type("application/json")
        .send_body(body)
        .await;
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let _ = response.body().limit(1 << 20).await;
            let took = local.config.now_us().saturating_sub(sent_us);
            local
                .histograms
                .borrow_mut()
                .publish
                .saturating_record(took);
            if status == 202 {
                add(&local.shared.accepted, n);
                local.accepted.borrow_mut().insert_range(seqs);
            } else {
                local.shared.error(format!("HTTP {status}"));
            }
        }
        Err(e) => local.shared.error(format!("send: {e}")),
    }
}

/// The intended send times of one open-loop publisher, each delivered at that time (µs since
/// `start`) by a thread of its own. tokio's timers have a 1 ms resolution, which would make
/// every send up to a millisecond late; a thread's sleep is within tens of µs. A publisher that
/// falls behind (its requests in flight at the cap) finds the ticks waiting and sends late, and
/// its latency still counts from the schedule.
fn pace(
    start: Instant,
    job: Arc<PublishJob>,
    publisher: u64,
    rate: f64,
) -> Option<mpsc::UnboundedReceiver<u64>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name(format!("bench-pacer-{publisher}"))
        .spawn(move || {
            for k in 0.. {
                let intended_us = job.start_us
                    + intended_offset_us(k, publisher, job.publishers, rate, job.batch);
                if job.end_us.is_some_and(|end| intended_us >= end) {
                    break;
                }
                let at = start + Duration::from_micros(intended_us);
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if tx.send(intended_us).is_err() {
                    break; // the publisher is done
                }
            }
        })
        .ok()?;
    Some(rx)
}

async fn run_publisher(local: Rc<Local>, job: Arc<PublishJob>, publisher: u64) {
    let via = publisher_server(publisher, local.config.servers.len());
    match job.pacing {
        Pacing::Open {
            rate,
            max_in_flight,
        } => {
            let max_in_flight = max_in_flight.clamp(1, 1 << 20);
            let permits = Arc::new(Semaphore::new(max_in_flight));
            let Some(mut ticks) = pace(local.config.start, job.clone(), publisher, rate) else {
                return local.shared.error("could not start a pacer thread");
            };
            while let Some(intended_us) = ticks.recv().await {
                let Some(seqs) = local.claim(&job) else { break };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let lag = local.config.now_us().saturating_sub(intended_us);
                local.histograms.borrow_mut().lag.saturating_record(lag);
                if lag > 1_000 {
                    add(&local.shared.late_sends, 1);
                }
                let (local2, job2) = (local.clone(), job.clone());
                actix_rt::spawn(async move {
                    send_request(&local2, &job2, via, seqs, intended_us).await;
                    drop(permit);
                });
            }
            drop(ticks); // stops the pacer of a run that ended by count
            let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
            let _ = permits.acquire_many(all).await; // every request answered
        }
        Pacing::Closed { concurrency } => {
            futures_util::future::join_all((0..concurrency.max(1)).map(|_| {
                let (local, job) = (local.clone(), job.clone());
                async move {
                    local.sleep_until_us(job.start_us).await;
                    loop {
                        let now = local.config.now_us();
                        if job.end_us.is_some_and(|end| now >= end) {
                            break;
                        }
                        let Some(seqs) = local.claim(&job) else { break };
                        send_request(&local, &job, via, seqs, now).await;
                    }
                }
            }))
            .await;
        }
    }
}
