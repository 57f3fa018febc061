//! Client commands: `send` publishes a notification, `listen` acts as a device.
//!
//! Both talk to a relay with `awc` (HTTP and WebSocket) inside the actix System that `main`
//! starts, and both report failures as `beepmyphone: …` on stderr with the process exit codes of
//! the command line: 0 success, 1 runtime failure, 2 bad usage or configuration.
//!
//! `send` posts one notification and prints its id. A problem document from the relay is printed
//! as its `detail` followed by one `field: reason` line per invalid field.
//!
//! `listen` pairs once with a pairing code and keeps the device's credentials (servers, device id,
//! access and refresh token) in a JSON file of mode 0600, by default
//! `<config dir>/beepmyphone/device.json`. It then holds the device WebSocket: it prints every
//! notification as one JSON line on stdout, acknowledges it once printed, answers pings, refreshes
//! its access token before it expires (rotating the refresh token, which is saved atomically), and
//! reconnects with exponential backoff and full jitter. Close 4003 (device revoked) ends it with
//! exit 1, unless a `--code` was given, which is then used to pair again.
//!
//! `--server` may name several relays of one cluster (the first is the primary). Pairing goes to
//! the first that answers, and the credentials keep the list (`servers`; `server` is its first,
//! for older versions): the device's tokens go to those relays only, so a run naming one more needs
//! a `--code`. The socket is tried at the relay in use (at first the primary, later the last one
//! that worked); when it cannot be reached, fails, drops or goes silent, the next one is tried at
//! once, round robin, and the backoff waits only after a full round. A relay that closes with 4001
//! or 4008 is up, and is asked again after the backoff. Token refreshes go to the relay in use.
//!
//! Over https both check the relay's certificate by the system's trust store, or by the CA
//! fingerprint given with `--ca-fingerprint` (kept with `listen`'s credentials from pairing on);
//! `--insecure` turns the check off ([`crate::tls::client`]).
//!
//! Tokens never appear in output: not on stdout, not in error messages.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use awc::error::WsProtocolError;
use awc::ws;
use base64::Engine;
use clap::Args;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::relay::connect_error;
pub(crate) use super::relay::{normalize_server, Relay};
pub use super::relay::{ClientError, FieldProblem, Problem};
use crate::tls::client::{Trust, TrustArgs};
use crate::ws::protocol::{close, MAX_ACK_IDS};

/// The relay assumed when neither `--server` nor `BEEP_SERVER` nor stored credentials name one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// The device name used when the host name cannot be read.
pub const FALLBACK_DEVICE_NAME: &str = "beepmyphone-cli";

/// Largest WebSocket frame accepted from the relay.
const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// Refresh the access token when less than this remains (or half its lifetime, if shorter).
const REFRESH_MARGIN_SECONDS: i64 = 300;
/// After a failed in-session refresh, try again this much later.
const REFRESH_RETRY: Duration = Duration::from_secs(15);
/// Heartbeat assumed until the relay's `hello` says otherwise.
const DEFAULT_HEARTBEAT_SECONDS: u64 = 30;
/// Closes with 4001 in a row (without a `hello` between them) before giving up.
const MAX_UNAUTHORIZED_CLOSES: u32 = 5;
/// Notification ids remembered for de-duplication.
const REMEMBERED_IDS: usize = 10_000;
/// How long to wait for the relay's answer to our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// `beepmyphone send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The relay's URL.
    #[arg(long, env = "BEEP_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// A publish or admin API token.
    #[arg(long, env = "BEEP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// low, normal, high or critical.
    #[arg(long, default_value = "normal")]
    pub priority: String,
    /// A target device id (repeatable; default: all devices).
    #[arg(long = "to", value_name = "DEVICE")]
    pub to: Vec<String>,
    /// A target group: every device in it (repeatable, combines with --to).
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// The sending application's name (default: `api`).
    #[arg(long)]
    pub app: Option<String>,
    /// A tag (repeatable, at most 10).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// An http(s) URL to open when the notification is tapped.
    #[arg(long, value_name = "URL")]
    pub click_url: Option<String>,
    /// Encrypt end to end: one envelope per target device, sealed with its public key, so the
    /// relay sees only the priority, the targets, the app and the times (a device without a key
    /// is an error). Prints one id per device.
    #[arg(long)]
    pub e2e: bool,
    /// The title.
    pub title: String,
    /// The body.
    pub body: Option<String>,
    /// How the relay's certificate is checked (https only).
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// `beepmyphone listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// The relay's URL (default: the ones stored with the credentials, else
    /// http://127.0.0.1:8080). Repeat it, or give a comma-separated list, for relays that stand in
    /// for one another (a cluster): the first is the primary, pairing goes to the first that
    /// answers, and when a relay cannot be reached or its socket drops, the next one is tried in
    /// turn (the backoff waits only after a full round). Credentials are only used with the relays
    /// they were paired with: a URL outside that list needs --code (pairing again).
    #[arg(
        long = "server",
        env = "BEEP_SERVER",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub servers: Vec<String>,
    /// A pairing code (needed the first time only, or to pair again after a revocation).
    #[arg(long)]
    pub code: Option<String>,
    /// The credentials file (default: <config dir>/beepmyphone/device.json).
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Exit 0 after printing this many notifications.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// The device name to pair with (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Run this shell command for each notification instead of printing it, with its fields in
    /// BEEP_ID, BEEP_TITLE, BEEP_BODY, BEEP_APP, BEEP_PRIORITY, BEEP_TAGS, BEEP_CLICK_URL,
    /// BEEP_CREATED_AT and BEEP_RAW; it is acknowledged once the command has finished.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// How the relay's certificate is checked (https only). A fingerprint given when pairing is
    /// kept with the credentials and pinned from then on.
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// Runs `send`; returns the process exit code.
pub async fn send(args: SendArgs) -> i32 {
    finish(run_send(args).await)
}

/// Runs `listen`; returns the process exit code.
pub async fn listen(args: ListenArgs) -> i32 {
    finish(run_listen(args).await)
}

fn finish(result: Result<(), ClientError>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(ClientError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 1,
        Err(e) => {
            eprintln!("beepmyphone: {e}");
            e.exit_code()
        }
    }
}

/// The relays `--server` (or `BEEP_SERVER`) names: normalized, in order, without repeats or empty
/// entries (`BEEP_SERVER="http://a, http://b,"` is two relays).
fn server_list(given: &[String]) -> Result<Vec<String>, ClientError> {
    let mut list: Vec<String> = Vec::new();
    for raw in given.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let base = normalize_server(raw)?;
        if !list.contains(&base) {
            list.push(base);
        }
    }
    Ok(list)
}

/// The relays stored credentials were paired with, normalized (an entry that is not a valid URL
/// names no relay).
fn paired_servers(stored: &Credentials) -> Vec<String> {
    stored
        .servers
        .iter()
        .filter_map(|s| normalize_server(s).ok())
        .collect()
}

/// Whether the credentials were paired with every relay of `servers` (normalized URLs), so that
/// the device's tokens may go to each of them. Fewer relays, or another order, is fine; one more is
/// not: that one never saw this device, and may not be the cluster at all.
fn paired_with(stored: &Credentials, servers: &[String]) -> bool {
    let known = paired_servers(stored);
    servers.iter().all(|s| known.contains(s))
}

/// The relays of a `listen` run in order (the first is the primary), which one is in use, and
/// how many moves were made since the backoff last waited.
#[derive(Debug, Clone, PartialEq)]
struct Servers {
    list: Vec<String>,
    current: usize,
    /// Moves since the last wait: at the list's length, every relay has been tried once.
    moves: usize,
}

impl Servers {
    /// A rotation over `list` (normalized, not empty), starting at the first.
    fn new(list: Vec<String>) -> Self {
        debug_assert!(!list.is_empty());
        Self {
            list,
            current: 0,
            moves: 0,
        }
    }

    /// The relay in use.
    fn current(&self) -> &str {
        &self.list[self.current]
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    /// Moves to the next relay (round robin). True when that completes a round, every relay
    /// having been tried since the last wait: the backoff waits now (and a new round begins).
    /// A `hello` does not begin a round, so relays that greet and drop at once are not tried in a
    /// tight loop.
    fn advance(&mut self) -> bool {
        self.current = (self.current + 1) % self.list.len();
        self.moves += 1;
        let full_round = self.moves >= self.list.len();
        if full_round {
            self.moves = 0;
        }
        full_round
    }

    /// The backoff waited without a move, or a relay just paired: a new round begins.
    fn new_round(&mut self) {
        self.moves = 0;
    }
}

/// The device socket's URL for a normalized base URL: `ws(s)://…/api/v1/ws`.
fn websocket_url(base: &str) -> Result<String, ClientError> {
    let rest = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            base.strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .ok_or_else(|| ClientError::Usage("invalid server URL".into()))?;
    Ok(format!("{rest}/api/v1/ws"))
}

// ---------------------------------------------------------------------------------------------
// send

#[derive(Deserialize)]
struct Published {
    id: String,
}

async fn run_send(args: SendArgs) -> Result<(), ClientError> {
    let token = require_token(args.token.as_deref())?;
    let trust = args
        .trust
        .trust()
        .map_err(ClientError::Usage)?
        .unwrap_or_default();
    let relay = Relay::new(&args.server, &trust)?;
    if args.e2e {
        let visible = super::e2e::Visible {
            targets: targets(&args.to, &args.groups),
            priority: Some(args.priority.clone()),
            app: args.app.clone(),
            idempotency_key: None,
        };
        let content = crate::crypto::e2e::Content {
            title: args.title.clone(),
            body: args.body.clone().unwrap_or_default(),
            app: args.app.clone(),
            tags: args.tags.clone(),
            click_url: args.click_url.clone(),
        };
        for id in super::e2e::publish(&relay, token, &visible, &content).await? {
            print_line(&id)?;
        }
        return Ok(());
    }
    let published: Published = relay
        .post_json("/notifications", Some(token), &publish_body(&args))
        .await?;
    print_line(&published.id)
}

fn require_token(token: Option<&str>) -> Result<&str, ClientError> {
    match token.map(str::trim) {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(ClientError::Usage(
            "an API token is required: pass --token or set BEEP_TOKEN".into(),
        )),
    }
}

/// The `POST /notifications` body for the arguments.
fn publish_body(args: &SendArgs) -> Value {
    let mut body = json!({"title": args.title, "priority": args.priority});
    let fields = [
        ("body", args.body.as_ref().map(|b| json!(b))),
        ("app", args.app.as_ref().map(|a| json!(a))),
        ("clickUrl", args.click_url.as_ref().map(|u| json!(u))),
        ("targets", targets(&args.to, &args.groups)),
        ("tags", (!args.tags.is_empty()).then(|| json!(args.tags))),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    body
}

/// `targets` from `--to` and `--group` (none: all devices).
pub(crate) fn targets(devices: &[String], groups: &[String]) -> Option<Value> {
    let list: Vec<String> = devices
        .iter()
        .cloned()
        .chain(groups.iter().map(|g| format!("group:{g}")))
        .collect();
    (!list.is_empty()).then(|| json!(list))
}

fn print_line(line: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(ClientError::Output)
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// What `listen` keeps between runs.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The first of `servers` (files from before `servers` have only this one).
    #[serde(default)]
    pub server: String,
    /// The relays the device was paired with, primary first: its tokens go to no other
    /// (normalized URLs; filled from `server` when a file has none).
    #[serde(default)]
    pub servers: Vec<String>,
    /// The paired device.
    pub device_id: String,
    /// The current access token.
    pub access_token: String,
    /// The current (single-use) refresh token.
    pub refresh_token: String,
    /// The relay's CA fingerprint pinned at pairing, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    /// The device's X25519 secret key for end-to-end encryption (base64url), made at pairing;
    /// absent in files from before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2e_secret: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("servers", &self.servers)
            .field("device_id", &self.device_id)
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field(
                "e2e_secret",
                &self.e2e_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Tokens as `/devices/pair` and `/auth/refresh` return them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IssuedTokens {
    /// Always sent by `/devices/pair`; a refresh keeps the device it had if absent.
    device_id: Option<String>,
    access_token: String,
    refresh_token: String,
}

/// The default credentials file: `<config dir>/beepmyphone/device.json`.
pub fn default_credentials_path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("beepmyphone").join("device.json"))
}

/// Reads the credentials file; `None` if there is none.
pub fn load_credentials(path: &Path) -> Result<Option<Credentials>, ClientError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClientError::credentials(path, e)),
    };
    warn_if_exposed(path);
    let mut credentials: Credentials = serde_json::from_str(&text)
        .map_err(|e| ClientError::credentials(path, format!("{e}; delete it and pair again")))?;
    if credentials.servers.is_empty() && !credentials.server.is_empty() {
        credentials.servers = vec![credentials.server.clone()];
    }
    match credentials.servers.first() {
        Some(first) if credentials.server.is_empty() => credentials.server = first.clone(),
        Some(_) => {}
        None => {
            return Err(ClientError::credentials(
                path,
                "it names no server; delete it and pair again",
            ))
        }
    }
    Ok(Some(credentials))
}

/// Warns on stderr when a file holding a secret is readable by other users.
#[cfg(unix)]
pub(crate) fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "beepmyphone: warning: {} is readable by other users; run chmod 600 on it",
                path.display()
            );
        }
    }
}

/// Warns on stderr when a file holding a secret is readable by other users.
#[cfg(not(unix))]
pub(crate) fn warn_if_exposed(_path: &Path) {}

/// Writes the credentials file atomically (temporary file, fsync, rename) with mode 0600,
/// creating its directory (mode 0700) if needed.
pub fn save_credentials(path: &Path, credentials: &Credentials) -> Result<(), ClientError> {
    let fail = |e: std::io::Error| ClientError::credentials(path, e);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir).map_err(fail)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "device.json".into());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut text =
        serde_json::to_string_pretty(credentials).map_err(|e| ClientError::credentials(path, e))?;
    text.push('\n');
    let written = write_private(&temp, text.as_bytes()).and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp); // best effort; the error below is what matters
        return Err(fail(e));
    }
    if let Ok(dir) = std::fs::File::open(&dir) {
        let _ = dir.sync_all(); // makes the rename durable where the platform allows it
    }
    Ok(())
}

/// Creates `dir` and its missing parents, the new ones with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `path` afresh with mode 0600 and writes `bytes` durably.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

// ---------------------------------------------------------------------------------------------
// Token timing

/// When an access token was issued and expires (seconds since the epoch, the relay's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TokenTimes {
    issued_at: i64,
    expires_at: i64,
}

impl TokenTimes {
    /// Reads `iat` and `exp` from a JWT's payload (not verified: the relay does that).
    fn of(token: &str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Claims {
            exp: i64,
            iat: Option<i64>,
        }
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let claims: Claims = serde_json::from_slice(&bytes).ok()?;
        Some(Self {
            issued_at: claims
                .iat
                .unwrap_or(claims.exp - 2 * REFRESH_MARGIN_SECONDS),
            expires_at: claims.exp,
        })
    }

    /// When to refresh: 5 minutes before expiry, or half-way for tokens shorter than 10 minutes.
    fn refresh_at(self) -> i64 {
        let lifetime = (self.expires_at - self.issued_at).max(0);
        self.expires_at - REFRESH_MARGIN_SECONDS.min(lifetime / 2)
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Backoff

/// Exponential backoff with full jitter: a random delay in `[0, min(max, base × 2^attempt)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, and one step further.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Back to the first step (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// De-duplication

/// The most recent notification ids seen, for de-duplicating redeliveries.
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// listen

/// The device socket as `awc` hands it over: a stream of frames and a sink of messages.
trait Socket:
    Stream<Item = Result<ws::Frame, WsProtocolError>>
    + Sink<ws::Message, Error = WsProtocolError>
    + Unpin
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<ws::Frame, WsProtocolError>>
        + Sink<ws::Message, Error = WsProtocolError>
        + Unpin
{
}

/// Why a socket session ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// `--count` notifications were printed.
    Done,
    /// The relay closed the socket (with this code, if any).
    Closed(Option<u16>),
    /// Nothing arrived for three heartbeats.
    Silent,
}

/// Where to connect after a session ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    /// The same relay again (it is up, and said why it closed).
    Stay,
    /// The next relay of the list (this one failed, dropped the socket or went silent).
    Move,
}

/// What the reader made of one frame.
enum Step {
    /// Read on.
    Continue,
    /// `hello` arrived: the relay's clock is known now.
    Greeted,
    /// The session is over.
    End(Ended),
}

/// The device client.
struct Listener {
    /// The relay in use: its base URL is always `servers.current()`.
    relay: Relay,
    /// The relays of this run and which one is in use.
    servers: Servers,
    path: PathBuf,
    credentials: Credentials,
    /// A pairing code not used yet: used to pair again if the device was revoked.
    spare_code: Option<String>,
    device_name: String,
    count: Option<u64>,
    /// `--exec`: run per notification instead of printing it.
    exec: Option<String>,
    printed: u64,
    seen: RecentIds,
    backoff: Backoff,
    /// The relay's clock minus ours, in seconds (from `hello`).
    skew: i64,
    heartbeat: Duration,
    /// The access token was refused: refresh before connecting again.
    stale: bool,
    unauthorized_closes: u32,
}

async fn run_listen(args: ListenArgs) -> Result<(), ClientError> {
    let path = match args.credentials.clone() {
        Some(path) => path,
        None => default_credentials_path().ok_or_else(|| {
            ClientError::Usage(
                "cannot find a configuration directory; pass --credentials FILE".into(),
            )
        })?,
    };
    let mut listener = Listener::start(args, path).await?;
    listener.run().await
}

/// How `listen` begins: with stored credentials, or by pairing.
enum Start {
    /// Stored credentials for this relay, and a code kept in case the device was revoked.
    Resume(Credentials, Option<String>),
    /// Pair with this code.
    Pair(String),
}

/// Decides between the stored credentials and `--code` for the relays `servers` (normalized):
/// the credentials only if they were paired with every one of them.
fn choose_start(
    stored: Option<Credentials>,
    code: Option<String>,
    servers: &[String],
    path: &Path,
) -> Result<Start, ClientError> {
    match (stored, code) {
        (Some(stored), code) if paired_with(&stored, servers) => Ok(Start::Resume(stored, code)),
        (_, Some(code)) => Ok(Start::Pair(code)),
        (Some(stored), None) => {
            let known = paired_servers(&stored);
            let unknown: Vec<&str> = servers
                .iter()
                .filter(|s| !known.contains(s))
                .map(String::as_str)
                .collect();
            let given = match servers {
                [one] => one.clone(),
                _ => "the servers given".to_owned(),
            };
            Err(ClientError::Usage(format!(
                "{} holds the credentials of device {} on {}, not on {}; pass --code to pair \
                 with {given} or --credentials to use another file",
                path.display(),
                stored.device_id,
                stored.servers.join(", "),
                unknown.join(", "),
            )))
        }
        (None, None) => Err(ClientError::Usage(format!(
            "not paired yet ({} does not exist): pass --code CODE \
             (mint one with `beepmyphone pairing-code`)",
            path.display()
        ))),
    }
}

impl Listener {
    /// Loads the device's credentials, or pairs.
    async fn start(args: ListenArgs, path: PathBuf) -> Result<Self, ClientError> {
        let explicit = server_list(&args.servers)?;
        let stored = load_credentials(&path)?;
        let servers = if !explicit.is_empty() {
            explicit
        } else if let Some(stored) = &stored {
            // Each stored URL must be one (a bad one is an error here, not skipped).
            stored
                .servers
                .iter()
                .map(|s| normalize_server(s))
                .collect::<Result<_, _>>()?
        } else {
            vec![normalize_server(DEFAULT_SERVER)?]
        };
        let asked = args.trust.trust().map_err(ClientError::Usage)?;
        // An explicit check wins; else the pin kept from pairing with these relays.
        let stored_pin = stored
            .as_ref()
            .filter(|c| paired_with(c, &servers))
            .and_then(|c| c.ca_fingerprint.clone());
        let trust =
            asked.unwrap_or_else(|| stored_pin.clone().map_or(Trust::System, Trust::Pinned));
        // One client, one certificate check, for every relay of the list.
        let relay = Relay::new(&servers[0], &trust)?;
        let start = choose_start(stored, args.code, &servers, &path)?;
        let name = args.name.unwrap_or_else(host_name);
        let mut listener = Self::new(relay, Servers::new(servers), path, name, args.count);
        listener.exec = args.exec;
        // The pin to keep: a new one, else the one kept from pairing (also under --insecure).
        listener.credentials.ca_fingerprint = trust.pin().map(str::to_owned).or(stored_pin);
        match start {
            Start::Resume(credentials, code) => {
                // The relays paired with stay the device's, even when this run uses fewer.
                let paired = paired_servers(&credentials);
                listener.credentials = Credentials {
                    server: paired[0].clone(),
                    servers: paired,
                    ca_fingerprint: listener.credentials.ca_fingerprint.take(),
                    ..credentials
                };
                listener.spare_code = code;
            }
            Start::Pair(code) => listener.pair(&code).await?,
        }
        Ok(listener)
    }

    fn new(
        relay: Relay,
        servers: Servers,
        path: PathBuf,
        device_name: String,
        count: Option<u64>,
    ) -> Self {
        Self {
            credentials: Credentials {
                server: servers.list[0].clone(),
                servers: servers.list.clone(),
                device_id: String::new(),
                access_token: String::new(),
                refresh_token: String::new(),
                ca_fingerprint: None,
                e2e_secret: None,
            },
            relay,
            servers,
            path,
            spare_code: None,
            device_name,
            count,
            exec: None,
            printed: 0,
            seen: RecentIds::new(REMEMBERED_IDS),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            skew: 0,
            heartbeat: Duration::from_secs(DEFAULT_HEARTBEAT_SECONDS),
            stale: false,
            unauthorized_closes: 0,
        }
    }

    /// Makes the relay at `servers.current()` the one in use.
    fn use_current(&mut self) {
        self.relay.base = self.servers.current().to_owned();
    }

    /// Pairs with `code` at the first relay that answers, from the one in use on, and saves the
    /// new credentials (for every relay of this run).
    async fn pair(&mut self, code: &str) -> Result<(), ClientError> {
        // A new device gets a new end-to-end key; the secret is kept with the credentials.
        let (secret, public) = crate::crypto::e2e::generate_keypair();
        let body = json!({
            "code": code.trim(),
            "name": self.device_name,
            "platform": platform(),
            "appVersion": env!("CARGO_PKG_VERSION"),
            "e2eKey": crate::crypto::e2e::encode_key(&public),
        });
        let mut left = self.servers.len();
        let tokens: IssuedTokens = loop {
            left -= 1;
            match self.relay.post_json("/devices/pair", None, &body).await {
                Ok(tokens) => break tokens,
                // No answer (or a relay that cannot serve now): the next one may.
                Err(e) if e.is_transient() && left > 0 => {
                    self.servers.advance();
                    self.use_current();
                    eprintln!("beepmyphone: {e}; pairing with {} instead", self.relay.base);
                }
                Err(e) => return Err(e),
            }
        };
        self.servers.new_round();
        self.credentials.server = self.servers.list[0].clone();
        self.credentials.servers = self.servers.list.clone();
        self.credentials.e2e_secret = Some(secret.to_base64().to_string());
        self.adopt(tokens)?;
        eprintln!(
            "beepmyphone: paired with {} as device {} ({}); credentials saved in {}",
            self.relay.base,
            self.credentials.device_id,
            self.device_name,
            self.path.display()
        );
        Ok(())
    }

    /// Takes newly issued tokens and saves them.
    fn adopt(&mut self, tokens: IssuedTokens) -> Result<(), ClientError> {
        let device_id = tokens
            .device_id
            .unwrap_or_else(|| self.credentials.device_id.clone());
        if device_id.is_empty() {
            return Err(ClientError::Transport(
                "the relay's answer names no device".into(),
            ));
        }
        self.credentials = Credentials {
            server: std::mem::take(&mut self.credentials.server),
            servers: std::mem::take(&mut self.credentials.servers),
            device_id,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            ca_fingerprint: self.credentials.ca_fingerprint.take(),
            e2e_secret: self.credentials.e2e_secret.take(),
        };
        self.stale = false;
        save_credentials(&self.path, &self.credentials)
    }

    /// Exchanges the refresh token for a new pair at the relay in use and saves it.
    async fn refresh(&mut self) -> Result<(), ClientError> {
        let body = json!({"refreshToken": self.credentials.refresh_token});
        let tokens: IssuedTokens = match self.relay.post_json("/auth/refresh", None, &body).await {
            Ok(tokens) => tokens,
            Err(ClientError::Rejected(problem)) if problem.status == 401 => {
                return Err(ClientError::CredentialsRejected {
                    device: self.credentials.device_id.clone(),
                    why: problem.to_string(),
                })
            }
            Err(e) => return Err(e),
        };
        // The relay has rotated the refresh token: the old one is spent, so keep going with the
        // new pair in memory even if it cannot be saved.
        if let Err(e) = self.adopt(tokens) {
            eprintln!("beepmyphone: warning: {e}; the new tokens are kept in memory only");
        }
        Ok(())
    }

    /// Connects, reads and reconnects until `--count` is reached or a fatal error.
    async fn run(&mut self) -> Result<(), ClientError> {
        loop {
            let outcome = self.connect_once().await;
            let (why, next) = match outcome {
                Ok(Ended::Done) => return Ok(()),
                Ok(Ended::Closed(code)) => self.after_close(code).await?,
                Ok(Ended::Silent) => ("the relay went silent".to_owned(), Next::Move),
                Err(e) if e.is_transient() => (e.to_string(), Next::Move),
                Err(e) => {
                    self.recover(e).await?;
                    continue;
                }
            };
            self.reconnect(&why, next).await;
        }
    }

    /// Picks the relay to connect to next and waits as long as the backoff says: a relay that
    /// failed or dropped the socket hands over to the next one at once, and the backoff waits
    /// once every relay has been tried since it last waited (with one relay: after each failure,
    /// as always).
    async fn reconnect(&mut self, why: &str, next: Next) {
        let wait = match next {
            Next::Stay => {
                self.servers.new_round();
                true
            }
            Next::Move => {
                let full_round = self.servers.advance();
                self.use_current();
                full_round
            }
        };
        let to = &self.relay.base;
        if !wait {
            eprintln!("beepmyphone: {why}; moving to {to}");
            return;
        }
        let delay = self.backoff.next_delay();
        let seconds = delay.as_secs_f64();
        match next {
            _ if self.servers.len() == 1 => {
                eprintln!("beepmyphone: {why}; reconnecting in {seconds:.1} s");
            }
            Next::Stay => eprintln!("beepmyphone: {why}; reconnecting to {to} in {seconds:.1} s"),
            Next::Move => eprintln!(
                "beepmyphone: {why}; tried every server, reconnecting to {to} in {seconds:.1} s"
            ),
        }
        tokio::time::sleep(delay).await;
    }

    /// Pairs again with a spare `--code` after a revocation; otherwise passes the error on.
    async fn recover(&mut self, error: ClientError) -> Result<(), ClientError> {
        let revoked = matches!(
            error,
            ClientError::Revoked { .. } | ClientError::CredentialsRejected { .. }
        );
        match self.spare_code.take() {
            Some(code) if revoked => {
                eprintln!("beepmyphone: {error}");
                eprintln!("beepmyphone: pairing again with the code given");
                self.pair(&code).await
            }
            _ => Err(error),
        }
    }

    /// Decides what a close code means; returns a description for a reconnect and where to.
    /// A relay that refuses the token or limits the rate is up and is asked again; one that
    /// closes for any other reason (shutting down: 1001) hands over to the next.
    async fn after_close(&mut self, code: Option<u16>) -> Result<(String, Next), ClientError> {
        match code {
            Some(close::REVOKED) => {
                let error = ClientError::Revoked {
                    device: self.credentials.device_id.clone(),
                };
                self.recover(error).await?;
                Ok(("paired again".into(), Next::Stay))
            }
            Some(close::UNAUTHORIZED) => {
                self.unauthorized_closes += 1;
                if self.unauthorized_closes >= MAX_UNAUTHORIZED_CLOSES {
                    let error = ClientError::CredentialsRejected {
                        device: self.credentials.device_id.clone(),
                        why: "the access token is refused even after a refresh".into(),
                    };
                    self.unauthorized_closes = 0;
                    self.recover(error).await?;
                    return Ok(("paired again".into(), Next::Stay));
                }
                self.stale = true;
                Ok((
                    "the relay refused the access token (4001)".into(),
                    Next::Stay,
                ))
            }
            Some(close::RATE_LIMITED) => {
                Ok(("rate limited by the relay (4008)".into(), Next::Stay))
            }
            Some(code) => Ok((
                format!("the relay closed the connection ({code})"),
                Next::Move,
            )),
            None => Ok(("the connection closed".into(), Next::Move)),
        }
    }

    /// Whether the access token should be refreshed before connecting.
    fn needs_refresh(&self) -> bool {
        self.stale
            || TokenTimes::of(&self.credentials.access_token)
                .is_some_and(|t| t.refresh_at() <= unix_now() + self.skew)
    }

    /// When (on our clock) the current access token should be refreshed in-band.
    fn refresh_deadline(&self) -> Option<Instant> {
        let times = TokenTimes::of(&self.credentials.access_token)?;
        let wait = times.refresh_at() - (unix_now() + self.skew);
        let wait = Duration::from_secs(u64::try_from(wait).unwrap_or(0));
        Some(Instant::now() + wait)
    }

    /// One connection: refresh if due, connect, read until it ends.
    async fn connect_once(&mut self) -> Result<Ended, ClientError> {
        if self.needs_refresh() {
            self.refresh().await?;
        }
        let url = websocket_url(&self.relay.base)?;
        let (_response, mut socket) = self
            .relay
            .client
            .ws(url)
            .bearer_auth(&self.credentials.access_token)
            .max_frame_size(MAX_FRAME_BYTES)
            .connect()
            .await
            .map_err(|e| connect_error(&self.relay.base, &e))?;
        let ended = self.session(&mut socket).await;
        if matches!(ended, Ok(Ended::Done)) {
            close_politely(&mut socket).await;
        }
        ended
    }

    /// Reads frames until the socket ends, refreshing the token in-band when due.
    async fn session(&mut self, socket: &mut impl Socket) -> Result<Ended, ClientError> {
        let mut refresh_at = self.refresh_deadline();
        loop {
            let idle = self.heartbeat.saturating_mul(3);
            let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
            tokio::select! {
                frame = tokio::time::timeout(idle, socket.next()) => {
                    let frame = match frame {
                        Err(_) => return Ok(Ended::Silent),
                        Ok(None) => return Ok(Ended::Closed(None)),
                        Ok(Some(Err(e))) => {
                            return Err(ClientError::Transport(format!("socket error: {e}")))
                        }
                        Ok(Some(Ok(frame))) => frame,
                    };
                    match self.on_frame(socket, frame).await? {
                        Step::Continue => {}
                        Step::Greeted => refresh_at = self.refresh_deadline(),
                        Step::End(ended) => return Ok(ended),
                    }
                }
                () = tokio::time::sleep_until(refresh_at.unwrap_or(far)) => {
                    refresh_at = match self.refresh_in_band(socket).await {
                        Ok(()) => self.refresh_deadline(),
                        Err(e) if e.is_transient() => {
                            eprintln!("beepmyphone: warning: token refresh failed: {e}");
                            Some(Instant::now() + REFRESH_RETRY)
                        }
                        Err(e) => return Err(e),
                    };
                }
            }
        }
    }

    /// Refreshes the token and hands the new one to the open socket.
    async fn refresh_in_band(&mut self, socket: &mut impl Socket) -> Result<(), ClientError> {
        self.refresh().await?;
        let frame = json!({"type": "auth", "token": self.credentials.access_token});
        send_text(socket, &frame).await
    }

    async fn on_frame(
        &mut self,
        socket: &mut impl Socket,
        frame: ws::Frame,
    ) -> Result<Step, ClientError> {
        match frame {
            ws::Frame::Text(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(value) => self.on_message(socket, value).await,
                Err(_) => {
                    eprintln!("beepmyphone: warning: ignoring a frame that is not JSON");
                    Ok(Step::Continue)
                }
            },
            ws::Frame::Ping(payload) => {
                socket
                    .send(ws::Message::Pong(payload))
                    .await
                    .map_err(|e| ClientError::Transport(format!("socket error: {e}")))?;
                Ok(Step::Continue)
            }
            ws::Frame::Close(reason) => {
                Ok(Step::End(Ended::Closed(reason.map(|r| u16::from(r.code)))))
            }
            ws::Frame::Binary(_) | ws::Frame::Pong(_) | ws::Frame::Continuation(_) => {
                Ok(Step::Continue)
            }
        }
    }

    async fn on_message(
        &mut self,
        socket: &mut impl Socket,
        message: Value,
    ) -> Result<Step, ClientError> {
        match message["type"].as_str() {
            Some("hello") => {
                self.on_hello(&message);
                Ok(Step::Greeted)
            }
            Some("notifications") => {
                let items = match message["items"].as_array() {
                    Some(items) => items.as_slice(),
                    None => &[],
                };
                self.on_notifications(socket, items).await
            }
            Some("error") => {
                eprintln!(
                    "beepmyphone: warning: the relay reported {}: {}",
                    message["code"].as_str().unwrap_or("an error"),
                    message["message"].as_str().unwrap_or("")
                );
                Ok(Step::Continue)
            }
            _ => Ok(Step::Continue), // frames of later protocol versions
        }
    }

    fn on_hello(&mut self, hello: &Value) {
        eprintln!("beepmyphone: connected to {}", self.relay.base);
        self.backoff.reset();
        self.stale = false;
        self.unauthorized_closes = 0;
        if let Some(seconds) = hello["heartbeatSeconds"].as_u64().filter(|s| *s > 0) {
            self.heartbeat = Duration::from_secs(seconds);
        }
        if let Some(server_time) = hello["serverTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            self.skew = server_time.timestamp() - unix_now();
        }
    }

    /// Prints what is new, then acknowledges what was printed (and redeliveries).
    async fn on_notifications(
        &mut self,
        socket: &mut impl Socket,
        items: &[Value],
    ) -> Result<Step, ClientError> {
        let mut ack = Vec::new();
        for item in items {
            if self.count.is_some_and(|n| self.printed >= n) {
                break; // leave the rest unacknowledged: the relay sends it again later
            }
            let Some(id) = item["id"].as_str() else {
                continue;
            };
            if !self.seen.contains(id) {
                let item = super::e2e::reveal(
                    item,
                    &self.credentials.device_id,
                    self.credentials.e2e_secret.as_deref(),
                );
                match &self.exec {
                    Some(command) => super::exec::run(command, &item).await,
                    None => print_line(&item.to_string())?,
                }
                self.seen.insert(id);
                self.printed += 1;
            }
            ack.push(id.to_owned());
        }
        for ids in ack.chunks(MAX_ACK_IDS) {
            send_text(socket, &json!({"type": "ack", "ids": ids})).await?;
        }
        if self.count.is_some_and(|n| self.printed >= n) {
            return Ok(Step::End(Ended::Done));
        }
        Ok(Step::Continue)
    }
}

async fn send_text(socket: &mut impl Socket, value: &Value) -> Result<(), ClientError> {
    socket
        .send(ws::Message::Text(value.to_string().into()))
        .await
        .map_err(|e| ClientError::Transport(format!("socket error: {e}")))
}

/// Sends a normal close and waits briefly for the relay's answer, so that what was sent before
/// (acks) is read by the relay before the connection drops.
async fn close_politely(socket: &mut impl Socket) {
    let reason = ws::CloseReason {
        code: ws::CloseCode::Normal,
        description: None,
    };
    if socket.send(ws::Message::Close(Some(reason))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(frame)) = socket.next().await {
            if matches!(frame, ws::Frame::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The platform reported when pairing.
fn platform() -> &'static str {
    match std::env::consts::OS {
        "linux" => "linux",
        "macos" => "macos",
        "windows" => "windows",
        "ios" => "ios",
        "android" => "android",
        _ => "other",
    }
}

/// This machine's host name as a device name (1–50 characters, no control characters).
fn host_name() -> String {
    let raw = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    device_name_from(&raw)
}

fn device_name_from(raw: &str) -> String {
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(50)
        .collect();
    let name = name.trim().to_owned();
    if name.is_empty() {
        FALLBACK_DEVICE_NAME.to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_checked_and_normalized() {
        assert_eq!(
            normalize_server("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_server("https://relay.example/beep/").unwrap(),
            "https://relay.example/beep"
        );
        for bad in [
            "ftp://x",
            "relay.example",
            "http://user:pw@relay.example",
            "http://x/?a=1",
        ] {
            assert_eq!(normalize_server(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        assert_eq!(
            websocket_url("https://relay.example/beep").unwrap(),
            "wss://relay.example/beep/api/v1/ws"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/api/v1/ws"
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            let ceiling = b.ceiling();
            let delay = b.next_delay();
            assert!(delay <= ceiling);
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(
            ceilings,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]
        );
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn token_times_come_from_the_jwt_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"dev_1","iat":1000,"exp":4600}"#);
        let times = TokenTimes::of(&format!("h.{payload}.s")).unwrap();
        assert_eq!(
            times,
            TokenTimes {
                issued_at: 1_000,
                expires_at: 4_600
            }
        );
        assert_eq!(times.refresh_at(), 4_300);
        let short = TokenTimes {
            issued_at: 0,
            expires_at: 120,
        };
        assert_eq!(short.refresh_at(), 60);
        assert!(TokenTimes::of("not a jwt").is_none());
    }

    #[test]
    fn problems_print_detail_and_fields() {
        let body = br#"{"type":"about:blank","title":"Invalid request","status":400,
            "code":"VALIDATION_ERROR","detail":"1 field is invalid",
            "errors":[{"field":"priority","reason":"must be one of low, normal, high, critical"}]}"#;
        let problem = Problem::from_body(400, body);
        assert_eq!(
            problem.to_string(),
            "1 field is invalid\n  priority: must be one of low, normal, high, critical"
        );
        assert_eq!(
            Problem::from_body(502, b"<html>").to_string(),
            "the relay answered HTTP 502"
        );
        assert!(ClientError::Rejected(Problem::from_body(503, b"")).is_transient());
        assert!(!ClientError::Rejected(Problem::from_body(409, b"")).is_transient());
    }

    #[test]
    fn credentials_are_saved_privately_and_never_debug_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("device.json");
        let credentials = Credentials {
            server: "http://127.0.0.1:1".into(),
            servers: vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()],
            device_id: "dev_1".into(),
            access_token: "secret-access".into(),
            refresh_token: "secret-refresh".into(),
            ca_fingerprint: Some(format!("sha256:{}", "ab".repeat(32))),
            e2e_secret: Some("secret-e2e".into()),
        };
        save_credentials(&path, &credentials).unwrap();
        save_credentials(&path, &credentials).unwrap(); // replaces
        assert_eq!(load_credentials(&path).unwrap(), Some(credentials.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("secret-"), "no secret's value: {debug}");
        assert_eq!(
            load_credentials(&dir.path().join("none.json")).unwrap(),
            None
        );
    }

    fn stored(servers: &[&str]) -> Credentials {
        Credentials {
            server: servers[0].into(),
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            device_id: "dev_1".into(),
            access_token: "a".into(),
            refresh_token: "r".into(),
            ca_fingerprint: None,
            e2e_secret: None,
        }
    }

    #[test]
    fn server_lists_are_normalized_in_order_without_repeats() {
        let given: Vec<String> = [" http://a:1/ ", "", "https://b/x", "http://a:1", " "]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(server_list(&given).unwrap(), ["http://a:1", "https://b/x"]);
        assert!(server_list(&[]).unwrap().is_empty());
        let bad = ["http://a:1".to_owned(), "ftp://b".to_owned()];
        assert_eq!(server_list(&bad).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn server_flags_repeat_and_split_on_commas() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "beepmyphone",
            "listen",
            "--server",
            "http://a:1",
            "--server",
            "http://b:2,http://c:3",
        ])
        .unwrap();
        let crate::cli::Command::Listen(args) = cli.command else {
            panic!("not listen: {:?}", cli.command);
        };
        assert_eq!(args.servers, ["http://a:1", "http://b:2", "http://c:3"]);
    }

    #[test]
    fn servers_rotate_and_the_backoff_waits_after_each_full_round() {
        let mut servers = Servers::new(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(servers.current(), "a");
        assert!(!servers.advance());
        assert_eq!(servers.current(), "b");
        assert!(!servers.advance());
        assert!(servers.advance(), "all three tried: wait");
        assert_eq!(servers.current(), "a");
        // A new round after the wait, from where it stands.
        assert!(!servers.advance());
        assert!(!servers.advance());
        assert_eq!(servers.current(), "c");
        assert!(servers.advance());
        // A wait without a move (or a pairing) begins a round too.
        servers.advance();
        servers.new_round();
        assert_eq!(servers.current(), "b");
        assert!(!servers.advance());
        assert!(!servers.advance());
        assert!(servers.advance());
        assert_eq!(servers.current(), "b");
        // One relay: every failure is a full round (the backoff waits each time, as before lists).
        let mut one = Servers::new(vec!["a".into()]);
        assert!(one.advance());
        assert!(one.advance());
        assert_eq!(one.current(), "a");
    }

    #[test]
    fn stored_credentials_serve_only_the_relays_they_were_paired_with() {
        let path = Path::new("device.json");
        let list = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let both = stored(&["http://a:1/", "http://b:2"]);
        // The same relays, fewer, or another order: resume (a code is kept for later).
        for servers in [
            list(&["http://a:1", "http://b:2"]),
            list(&["http://b:2", "http://a:1"]),
            list(&["http://b:2"]),
        ] {
            let start = choose_start(Some(both.clone()), None, &servers, path).unwrap();
            assert!(matches!(start, Start::Resume(_, None)), "{servers:?}");
            let start = choose_start(Some(both.clone()), Some("C".into()), &servers, path);
            assert!(
                matches!(start, Ok(Start::Resume(_, Some(_)))),
                "{servers:?}"
            );
        }
        // One relay more: not without a code, which pairs anew.
        let more = list(&["http://a:1", "http://c:3"]);
        let err = choose_start(Some(both.clone()), None, &more, path)
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("on http://a:1/, http://b:2, not on http://c:3;"),
            "{text}"
        );
        let start = choose_start(Some(both), Some("C".into()), &more, path).unwrap();
        assert!(matches!(start, Start::Pair(code) if code == "C"));
        // A stored URL that is not one names no relay.
        let broken = stored(&["not a url"]);
        let err = choose_start(Some(broken), None, &list(&["http://a:1"]), path);
        assert!(err.is_err());
    }

    #[test]
    fn credentials_files_with_only_a_server_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.json");
        std::fs::write(
            &path,
            r#"{"server":"http://a:1","deviceId":"dev_1","accessToken":"a","refreshToken":"r"}"#,
        )
        .unwrap();
        let loaded = load_credentials(&path).unwrap().unwrap();
        assert_eq!(loaded.servers, ["http://a:1"]);
        // Written back, `server` stays the first, for older versions.
        save_credentials(&path, &stored(&["http://b:2", "http://a:1"])).unwrap();
        let text: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(text["server"], "http://b:2");
        assert_eq!(text["servers"], json!(["http://b:2", "http://a:1"]));
        // Only `servers`: `server` is its first; neither: refused.
        std::fs::write(
            &path,
            r#"{"servers":["http://c:3"],"deviceId":"d","accessToken":"a","refreshToken":"r"}"#,
        )
        .unwrap();
        assert_eq!(
            load_credentials(&path).unwrap().unwrap().server,
            "http://c:3"
        );
        std::fs::write(
            &path,
            r#"{"deviceId":"d","accessToken":"a","refreshToken":"r"}"#,
        )
        .unwrap();
        assert!(load_credentials(&path).is_err());
    }

    #[test]
    fn device_names_are_sanitized() {
        assert_eq!(device_name_from("box\n"), "box");
        assert_eq!(device_name_from(""), FALLBACK_DEVICE_NAME);
        assert_eq!(device_name_from(&"x".repeat(80)).chars().count(), 50);
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut ids = RecentIds::new(2);
        ids.insert("a");
        ids.insert("b");
        ids.insert("a");
        ids.insert("c");
        assert!(!ids.contains("a"));
        assert!(ids.contains("b") && ids.contains("c"));
    }
}
