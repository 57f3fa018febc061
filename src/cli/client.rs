//! Client commands: `send` publishes a notification, `listen` acts as a device.
//!
//! Both talk to a relay with `awc` (HTTP and WebSocket) inside the actix System that `main`
//! starts, and both report failures as `beepmyphone: …` on stderr with the process exit codes of
//! the command line: 0 success, 1 runtime failure, 2 bad usage or configuration.
//!
//! `send` posts one notification and prints its id. A problem document from the relay is printed
//! as its `detail` followed by one `field: reason` line per invalid field.
//!
//! `listen` pairs once with a pairing code and keeps the device's credentials (server, device id,
//! access and refresh token) in a JSON file of mode 0600, by default
//! `<config dir>/beepmyphone/device.json`. It then holds the device WebSocket: it prints every
//! notification as one JSON line on stdout, acknowledges it once printed, answers pings, refreshes
//! its access token before it expires (rotating the refresh token, which is saved atomically), and
//! reconnects with exponential backoff and full jitter. Close 4003 (device revoked) ends it with
//! exit 1, unless a `--code` was given, which is then used to pair again.
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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::tls::client::{self as trust, Trust, TrustArgs};
use crate::ws::protocol::{close, MAX_ACK_IDS};

/// The relay assumed when neither `--server` nor `BEEP_SERVER` nor stored credentials name one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// The device name used when the host name cannot be read.
pub const FALLBACK_DEVICE_NAME: &str = "beepmyphone-cli";

/// Time allowed for one HTTP exchange or WebSocket handshake.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body read from the relay.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
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
    /// Target device ids (default: all devices).
    #[arg(long = "to", value_name = "DEVICE")]
    pub to: Vec<String>,
    /// The sending application's name (default: `api`).
    #[arg(long)]
    pub app: Option<String>,
    /// A tag (repeatable, at most 10).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// An http(s) URL to open when the notification is tapped.
    #[arg(long, value_name = "URL")]
    pub click_url: Option<String>,
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
    /// The relay's URL (default: the one stored with the credentials, else http://127.0.0.1:8080).
    #[arg(long, env = "BEEP_SERVER")]
    pub server: Option<String>,
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

// ---------------------------------------------------------------------------------------------
// Errors

/// What can go wrong in a client command. No variant ever holds a token.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad usage or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The relay refused the request; carries its problem document.
    #[error("{0}")]
    Rejected(Problem),
    /// The relay could not be reached, or the exchange broke off.
    #[error("{0}")]
    Transport(String),
    /// The credentials file could not be read or written.
    #[error("credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The relay revoked this device (close 4003).
    #[error("the relay revoked device {device}; pair again with `beepmyphone listen --code CODE`")]
    Revoked {
        /// The device id.
        device: String,
    },
    /// The relay no longer accepts the stored credentials.
    #[error(
        "the relay no longer accepts the credentials of device {device} ({why}); \
         pair again with `beepmyphone listen --code CODE`"
    )]
    CredentialsRejected {
        /// The device id.
        device: String,
        /// Why, as the relay put it.
        why: String,
    },
    /// Standard output could not be written.
    #[error("cannot write to standard output: {0}")]
    Output(std::io::Error),
}

impl ClientError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// Whether trying again later may succeed (network trouble, 408, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Rejected(problem) => {
                matches!(problem.status, 408 | 429) || problem.status >= 500
            }
            _ => false,
        }
    }

    fn credentials(path: &Path, reason: impl fmt::Display) -> Self {
        ClientError::Credentials {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// An RFC 9457 problem document from the relay (only the parts a client shows).
#[derive(Debug, Default, Deserialize)]
pub struct Problem {
    /// The HTTP status (taken from the response line).
    #[serde(skip)]
    pub status: u16,
    /// A short summary of the problem type.
    pub title: Option<String>,
    /// A one-line explanation of this occurrence.
    pub detail: Option<String>,
    /// The stable machine-readable code.
    pub code: Option<String>,
    /// The invalid fields, if any.
    #[serde(default)]
    pub errors: Vec<FieldProblem>,
}

/// One entry of a problem document's `errors`.
#[derive(Debug, Deserialize)]
pub struct FieldProblem {
    /// The field's path in the request.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Problem {
    fn from_body(status: u16, body: &[u8]) -> Self {
        let mut problem = serde_json::from_slice::<Problem>(body).unwrap_or_default();
        problem.status = status;
        problem
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.detail, &self.title) {
            (Some(detail), _) => write!(f, "{detail}")?,
            (None, Some(title)) => write!(f, "{title}")?,
            (None, None) => write!(f, "the relay answered HTTP {}", self.status)?,
        }
        for error in &self.errors {
            write!(f, "\n  {}: {}", error.field, error.reason)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The relay's HTTP API

/// A relay's base URL and an HTTP client for it.
struct Relay {
    client: awc::Client,
    /// The normalized base URL (no trailing slash).
    base: String,
}

impl Relay {
    fn new(server: &str, trust: &Trust) -> Result<Self, ClientError> {
        let base = normalize_server(server)?;
        if *trust == Trust::Insecure {
            eprintln!("beepmyphone: warning: --insecure: the relay's certificate is not checked");
        }
        let tls = trust::connector(trust)
            .map_err(|e| ClientError::Transport(format!("cannot set up TLS: {e}")))?;
        let client = awc::Client::builder()
            // HTTP/1.1 only, so the client never speaks HTTP/2 even against a TLS server that
            // offers it (the h2 crate is in the tree only through awc; see deny.toml).
            .connector(
                awc::Connector::new()
                    .max_http_version(awc::http::Version::HTTP_11)
                    .openssl(tls),
            )
            .timeout(REQUEST_TIMEOUT)
            .add_default_header((
                awc::http::header::USER_AGENT,
                concat!("beepmyphone/", env!("CARGO_PKG_VERSION")),
            ))
            .finish();
        Ok(Self { client, base })
    }

    fn api_url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    /// POSTs `body` as JSON; parses a 2xx answer as `T`, anything else as a problem document.
    async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<T, ClientError> {
        let mut request = self.client.post(self.api_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let mut response = request
            .send_json(body)
            .await
            .map_err(|e| connect_error(&self.base, &e))?;
        let status = response.status();
        let bytes = response
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| ClientError::Transport(format!("reading the relay's answer: {e}")))?;
        if !status.is_success() {
            return Err(ClientError::Rejected(Problem::from_body(
                status.as_u16(),
                &bytes,
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Transport(format!(
                "unexpected answer from the relay (HTTP {status}): {e}"
            ))
        })
    }
}

/// A failed connection, with what to do when the relay's certificate was not trusted.
fn connect_error(base: &str, error: &dyn fmt::Display) -> ClientError {
    let error = error.to_string();
    let hint = if error.contains("certificate verify failed") {
        "; the relay's certificate is not trusted: pass the CA fingerprint that \
         `beepmyphone pairing-code` shows with --ca-fingerprint, or install the relay's CA \
         (`beepmyphone cert export-ca`)"
    } else {
        ""
    };
    ClientError::Transport(format!("cannot reach {base}: {error}{hint}"))
}

/// Checks a relay URL (http or https, a host, no user info) and drops trailing slashes.
fn normalize_server(server: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::Usage(format!("invalid server URL: {why}"));
    let url = url::Url::parse(server.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Whether a stored server URL names the relay at `base` (a normalized URL).
fn same_server(stored: &str, base: &str) -> bool {
    normalize_server(stored).is_ok_and(|stored| stored == base)
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
        ("targets", (!args.to.is_empty()).then(|| json!(args.to))),
        ("tags", (!args.tags.is_empty()).then(|| json!(args.tags))),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    body
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
    /// The relay's normalized URL.
    pub server: String,
    /// The paired device.
    pub device_id: String,
    /// The current access token.
    pub access_token: String,
    /// The current (single-use) refresh token.
    pub refresh_token: String,
    /// The relay's CA fingerprint pinned at pairing, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("device_id", &self.device_id)
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("ca_fingerprint", &self.ca_fingerprint)
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
    let credentials = serde_json::from_str(&text)
        .map_err(|e| ClientError::credentials(path, format!("{e}; delete it and pair again")))?;
    Ok(Some(credentials))
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
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

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

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

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
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
    relay: Relay,
    path: PathBuf,
    credentials: Credentials,
    /// A pairing code not used yet: used to pair again if the device was revoked.
    spare_code: Option<String>,
    device_name: String,
    count: Option<u64>,
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

/// Decides between the stored credentials and `--code` for the relay at `base`.
fn choose_start(
    stored: Option<Credentials>,
    code: Option<String>,
    base: &str,
    path: &Path,
) -> Result<Start, ClientError> {
    match (stored, code) {
        (Some(stored), code) if same_server(&stored.server, base) => {
            Ok(Start::Resume(stored, code))
        }
        (_, Some(code)) => Ok(Start::Pair(code)),
        (Some(stored), None) => Err(ClientError::Usage(format!(
            "{} holds the credentials of device {} on {}, not {base}; pass --code to pair \
             with {base} or --credentials to use another file",
            path.display(),
            stored.device_id,
            stored.server,
        ))),
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
        let explicit = args.server.as_deref().map(normalize_server).transpose()?;
        let stored = load_credentials(&path)?;
        let server = explicit
            .or_else(|| stored.as_ref().map(|c| c.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let base = normalize_server(&server)?;
        let asked = args.trust.trust().map_err(ClientError::Usage)?;
        // An explicit check wins; else the pin kept from pairing with this relay.
        let stored_pin = stored
            .as_ref()
            .filter(|c| same_server(&c.server, &base))
            .and_then(|c| c.ca_fingerprint.clone());
        let trust =
            asked.unwrap_or_else(|| stored_pin.clone().map_or(Trust::System, Trust::Pinned));
        let relay = Relay::new(&server, &trust)?;
        let start = choose_start(stored, args.code, &relay.base, &path)?;
        let name = args.name.unwrap_or_else(host_name);
        let mut listener = Self::new(relay, path, name, args.count);
        // The pin to keep: a new one, else the one kept from pairing (also under --insecure).
        listener.credentials.ca_fingerprint = trust.pin().map(str::to_owned).or(stored_pin);
        match start {
            Start::Resume(credentials, code) => {
                listener.credentials = Credentials {
                    server: listener.relay.base.clone(),
                    ca_fingerprint: listener.credentials.ca_fingerprint.take(),
                    ..credentials
                };
                listener.spare_code = code;
            }
            Start::Pair(code) => listener.pair(&code).await?,
        }
        Ok(listener)
    }

    fn new(relay: Relay, path: PathBuf, device_name: String, count: Option<u64>) -> Self {
        Self {
            credentials: Credentials {
                server: relay.base.clone(),
                device_id: String::new(),
                access_token: String::new(),
                refresh_token: String::new(),
                ca_fingerprint: None,
            },
            relay,
            path,
            spare_code: None,
            device_name,
            count,
            printed: 0,
            seen: RecentIds::new(REMEMBERED_IDS),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            skew: 0,
            heartbeat: Duration::from_secs(DEFAULT_HEARTBEAT_SECONDS),
            stale: false,
            unauthorized_closes: 0,
        }
    }

    /// Pairs with `code` and saves the new credentials.
    async fn pair(&mut self, code: &str) -> Result<(), ClientError> {
        let body = json!({
            "code": code.trim(),
            "name": self.device_name,
            "platform": platform(),
            "appVersion": env!("CARGO_PKG_VERSION"),
        });
        let tokens: IssuedTokens = self.relay.post_json("/devices/pair", None, &body).await?;
        self.adopt(tokens)?;
        eprintln!(
            "beepmyphone: paired as device {} ({}); credentials saved in {}",
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
            server: self.relay.base.clone(),
            device_id,
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
            ca_fingerprint: self.credentials.ca_fingerprint.take(),
        };
        self.stale = false;
        save_credentials(&self.path, &self.credentials)
    }

    /// Exchanges the refresh token for a new pair and saves it.
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
            let why = match outcome {
                Ok(Ended::Done) => return Ok(()),
                Ok(Ended::Closed(code)) => self.after_close(code).await?,
                Ok(Ended::Silent) => "the relay went silent".to_owned(),
                Err(e) if e.is_transient() => e.to_string(),
                Err(e) => {
                    self.recover(e).await?;
                    continue;
                }
            };
            let delay = self.backoff.next_delay();
            eprintln!(
                "beepmyphone: {why}; reconnecting in {:.1} s",
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
        }
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

    /// Decides what a close code means; returns a description for a reconnect.
    async fn after_close(&mut self, code: Option<u16>) -> Result<String, ClientError> {
        match code {
            Some(close::REVOKED) => {
                let error = ClientError::Revoked {
                    device: self.credentials.device_id.clone(),
                };
                self.recover(error).await?;
                Ok("paired again".into())
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
                    return Ok("paired again".into());
                }
                self.stale = true;
                Ok("the relay refused the access token (4001)".into())
            }
            Some(close::RATE_LIMITED) => Ok("rate limited by the relay (4008)".into()),
            Some(code) => Ok(format!("the relay closed the connection ({code})")),
            None => Ok("the connection closed".into()),
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
                print_line(&item.to_string())?;
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
            device_id: "dev_1".into(),
            access_token: "secret-access".into(),
            refresh_token: "secret-refresh".into(),
            ca_fingerprint: Some(format!("sha256:{}", "ab".repeat(32))),
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
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(
            load_credentials(&dir.path().join("none.json")).unwrap(),
            None
        );
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
