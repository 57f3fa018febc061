//! `beepmyphone capture`: forwards a Linux desktop's notifications to the relay.
//!
//! It monitors the session D-Bus for `org.freedesktop.Notifications.Notify` calls beside the
//! desktop's own notification daemon ([`dbus`]), filters and maps each one onto a publish
//! ([`rules`]), appends it to a disk queue ([`spool`]) and sends the queue in order to
//! `POST /api/v1/notifications` with a publish token. An item leaves the queue once the relay
//! answered 202 (durable). While the relay cannot be reached (connection errors, 408, 429, 5xx)
//! the head is retried with exponential backoff (1 s doubling to `max_backoff_seconds`) and new
//! notifications keep being spooled; an item the relay refuses (another 4xx) is moved to the
//! spool's rejected file with the relay's detail, so it never blocks the ones behind it. A 401,
//! 403 or 404 says the token or the server URL is wrong, not the item: the queue is held and
//! retried, not emptied into the rejected file.
//!
//! With `e2e = true` each item is sealed at send time for every device its targets reach
//! ([`crate::cli::e2e`]): the relay sees the priority and the targets, not the title, body, app
//! or icon. A device without a key makes the relay refuse the item (422, to the rejected file).
//!
//! - [`config`]: the TOML config and its defaults;
//! - [`dbus`]: the monitor connection and the decoding of `Notify`;
//! - [`rules`]: `skip_apps`, `only_apps`, `min_urgency`, and the mapping;
//! - [`spool`]: the disk queue.
//!
//! Everything runs on the one task `main` blocks on: the bus is read, the spool written and the
//! head sent from one `select!` loop, so the order of the bus is the order of the spool is the
//! order of the relay. Quiet hours are not applied here: the relay's per-device quiet hours do.
//!
//! Logs are text lines on stderr (journald keeps them under a user unit); the token never
//! appears in them, nor in a URL. Exit codes: 0 after SIGINT or SIGTERM, 1 when the bus or the
//! spool fails, 2 for a bad config.

pub mod config;
pub mod dbus;
pub mod rules;
pub mod spool;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use slog::{error, info, warn, Drain, Logger};
use tokio::time::Instant;

use crate::cli::client::{ClientError, Relay};
use config::{CaptureConfig, Env};
use rules::Publish;
use spool::{Head, Spool, SpoolError};

/// The first wait after a failed send.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// What ends `capture` with an error.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The config cannot be used (exit 2).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The session bus failed.
    #[error(transparent)]
    Bus(#[from] dbus::BusError),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The relay's client could not be set up.
    #[error("{0}")]
    Client(ClientError),
    /// The session bus closed the connection (the session ended).
    #[error("the session bus closed the connection")]
    BusClosed,
    /// A signal handler could not be installed.
    #[error("cannot install a signal handler: {0}")]
    Signal(std::io::Error),
}

impl CaptureError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) => 2,
            Self::Client(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// Runs `capture` with the config file `config` (else the default one), inside the actix System
/// `main` starts; returns the process exit code. Its arguments are `cli::CaptureArgs`.
pub async fn run(config: Option<&Path>) -> i32 {
    let config = match CaptureConfig::load(config, &Env::from_process()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("beepmyphone: {e}");
            return 2;
        }
    };
    let log = stderr_logger();
    match capture(config, &log).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("beepmyphone: {e}");
            e.exit_code()
        }
    }
}

/// Text lines on stderr, info and above.
fn stderr_logger() -> Logger {
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator)
        .build()
        .filter_level(slog::Level::Info)
        .fuse();
    Logger::root(drain, slog::o!())
}

/// Monitors, spools and sends until a signal or an error.
async fn capture(config: CaptureConfig, log: &Logger) -> Result<(), CaptureError> {
    let relay = Relay::new(&config.server, &config.trust).map_err(CaptureError::Client)?;
    let spool = Spool::open(&config.spool_dir, config.max_spooled)?;
    let mut monitor = dbus::Monitor::connect().await?;
    info!(log, "monitoring the session bus for notifications";
        "relay" => &relay.base,
        "spool" => %spool.dir().display(),
        "spooled" => spool.len(),
        "config" => config.source.as_ref().map_or_else(|| "defaults".to_owned(), |p| p.display().to_string()),
    );
    let mut agent = Agent {
        log: log.clone(),
        sender: Sender {
            relay,
            token: config.token.clone(),
            e2e: config.e2e,
        },
        spool,
        backoff: Backoff::new(FIRST_BACKOFF, config.max_backoff),
        config,
        in_flight: None,
        retry_at: None,
    };
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(CaptureError::Signal)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(CaptureError::Signal)?;
    loop {
        agent.start_next_send()?;
        let (in_flight, retry_at) = (&mut agent.in_flight, agent.retry_at);
        let event = tokio::select! {
            event = monitor.next() => Event::Bus(event),
            sent = async {
                match in_flight.as_mut() {
                    Some(send) => send.await,
                    None => std::future::pending().await,
                }
            } => Event::Sent(sent),
            () = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => Event::RetryDue,
            _ = interrupt.recv() => Event::Stop("SIGINT"),
            _ = terminate.recv() => Event::Stop("SIGTERM"),
        };
        match event {
            Event::Bus(None) => return Err(CaptureError::BusClosed),
            Event::Bus(Some(Err(e @ dbus::BusError::Body { .. }))) => {
                warn!(log, "ignoring a Notify call"; "error" => %e);
            }
            Event::Bus(Some(Err(e))) => return Err(e.into()),
            Event::Bus(Some(Ok(captured))) => agent.on_captured(&captured),
            Event::Sent(sent) => {
                agent.in_flight = None;
                agent.on_sent(sent)?;
            }
            Event::RetryDue => agent.retry_at = None,
            Event::Stop(signal) => {
                info!(log, "stopping"; "signal" => signal, "spooled" => agent.spool.len());
                return Ok(());
            }
        }
    }
}

/// What woke the loop.
enum Event {
    /// A message from the bus (`None`: the connection closed).
    Bus(Option<Result<rules::Captured, dbus::BusError>>),
    /// The send of the head finished.
    Sent(Sent),
    /// The backoff after a failed send is over.
    RetryDue,
    /// A signal asked to stop.
    Stop(&'static str),
}

/// A send under way: resolves to its outcome.
type InFlight = Pin<Box<dyn Future<Output = Sent>>>;

/// How the send of one item ended.
struct Sent {
    seq: u64,
    item: Publish,
    outcome: Outcome,
}

/// What the relay made of a publish.
#[derive(Debug)]
enum Outcome {
    /// 202: stored durably (the notification's id).
    Accepted(String),
    /// Try the same item again later (connection error, 408, 429, 5xx).
    Retry(String),
    /// The relay refuses the token or the URL (401, 403, 404): hold the queue and retry.
    Held(u16, String),
    /// The relay refuses this item (another 4xx): move it aside.
    Refused(u16, String),
}

impl Outcome {
    fn of(result: Result<Value, ClientError>) -> Self {
        match result {
            Ok(answer) => Self::Accepted(answer["id"].as_str().unwrap_or("").to_owned()),
            Err(e) if e.is_transient() => Self::Retry(e.to_string()),
            Err(ClientError::Rejected(problem)) if matches!(problem.status, 401 | 403 | 404) => {
                Self::Held(problem.status, problem.to_string())
            }
            Err(ClientError::Rejected(problem)) => {
                Self::Refused(problem.status, problem.to_string())
            }
            Err(e) => Self::Retry(e.to_string()),
        }
    }
}

/// Publishes items to the relay.
struct Sender {
    relay: Relay,
    token: SecretString,
    /// Seal each item for its devices (`e2e = true`).
    e2e: bool,
}

impl Sender {
    /// A send of `item`, as a future that owns what it needs.
    fn send(&self, seq: u64, item: Publish) -> InFlight {
        let relay = self.relay.clone();
        let token = self.token.clone();
        if self.e2e {
            return Box::pin(async move {
                let outcome = Outcome::of(
                    send_sealed(&relay, token.expose_secret(), &item)
                        .await
                        .map(|ids| serde_json::json!({"id": ids.join(",")})),
                );
                Sent { seq, item, outcome }
            });
        }
        Box::pin(async move {
            let outcome = match serde_json::to_value(&item) {
                Ok(body) => Outcome::of(
                    relay
                        .post_json::<Value>("/notifications", Some(token.expose_secret()), &body)
                        .await,
                ),
                Err(e) => Outcome::Refused(0, format!("cannot encode: {e}")),
            };
            Sent { seq, item, outcome }
        })
    }
}

/// Publishes `item` sealed end to end, one envelope per device; the new ids.
async fn send_sealed(
    relay: &Relay,
    token: &str,
    item: &Publish,
) -> Result<Vec<String>, ClientError> {
    let visible = crate::cli::e2e::Visible {
        targets: item.targets.as_ref().map(|t| serde_json::json!(t)),
        priority: Some(item.priority.clone()),
        app: None,
        idempotency_key: Some(item.idempotency_key.clone()),
    };
    let content = crate::crypto::e2e::Content {
        title: item.title.clone(),
        body: item.body.clone(),
        app: Some(item.app.clone()),
        tags: item.tags.clone(),
        click_url: None,
    };
    crate::cli::e2e::publish(relay, token, &visible, &content).await
}

/// The state of the loop.
struct Agent {
    log: Logger,
    sender: Sender,
    spool: Spool,
    config: CaptureConfig,
    backoff: Backoff,
    in_flight: Option<InFlight>,
    /// While set, the head waits (backoff after a failure).
    retry_at: Option<Instant>,
}

impl Agent {
    /// Starts sending the head of the spool if nothing is under way and no backoff runs.
    fn start_next_send(&mut self) -> Result<(), CaptureError> {
        if self.in_flight.is_some() || self.retry_at.is_some() {
            return Ok(());
        }
        let (head, damaged) = self.spool.head::<Publish>()?;
        for seq in damaged {
            warn!(self.log, "moved an unreadable spool item to the rejected file"; "seq" => seq);
        }
        if let Some(Head { seq, item }) = head {
            self.in_flight = Some(self.sender.send(seq, item));
        }
        Ok(())
    }

    /// Filters, maps and spools one notification. A spool that cannot be written loses this
    /// one notification (logged), not the agent.
    fn on_captured(&mut self, captured: &rules::Captured) {
        let app = captured.app();
        if let Err(skip) = self.config.rules.check(captured) {
            info!(self.log, "skipped a notification"; "app" => &app, "why" => skip.reason());
            return;
        }
        let key = format!("capture-{}", ulid::Ulid::new());
        let publish = rules::to_publish(captured, self.config.targets.as_deref(), key);
        match self.spool.push(&publish) {
            Ok(pushed) => {
                if !pushed.dropped.is_empty() {
                    warn!(self.log, "the spool is full: dropped the oldest notifications";
                        "dropped" => pushed.dropped.len(), "max_spooled" => self.config.max_spooled);
                }
                info!(self.log, "captured a notification";
                    "seq" => pushed.seq, "app" => &app, "priority" => &publish.priority);
            }
            Err(e) => {
                error!(self.log, "could not spool a notification; it is lost";
                    "app" => &app, "error" => %e);
            }
        }
    }

    /// Acts on the outcome of a send.
    fn on_sent(&mut self, sent: Sent) -> Result<(), CaptureError> {
        let Sent { seq, item, outcome } = sent;
        match outcome {
            Outcome::Accepted(id) => {
                self.spool.remove(seq)?;
                self.backoff.reset();
                info!(self.log, "delivered to the relay";
                    "seq" => seq, "id" => id, "spooled" => self.spool.len());
            }
            Outcome::Refused(status, detail) => {
                self.spool.reject(seq, &item, status, &detail)?;
                self.backoff.reset();
                warn!(self.log, "the relay refused a notification; moved to the rejected file";
                    "seq" => seq, "status" => status, "detail" => detail,
                    "file" => %self.spool.dir().join(spool::REJECTED_FILE).display());
            }
            Outcome::Retry(why) => {
                let delay = self.backoff.next_delay();
                self.retry_at = Some(Instant::now() + delay);
                warn!(self.log, "the relay is unreachable; keeping the spool";
                    "error" => why, "spooled" => self.spool.len(),
                    "retry_in_seconds" => delay.as_secs());
            }
            Outcome::Held(status, detail) => {
                let delay = self.backoff.next_delay();
                self.retry_at = Some(Instant::now() + delay);
                error!(self.log, "the relay refuses this agent (check token_file and server); keeping the spool";
                    "status" => status, "detail" => detail, "spooled" => self.spool.len(),
                    "retry_in_seconds" => delay.as_secs());
            }
        }
        Ok(())
    }
}

/// Exponential backoff without jitter (one agent, one relay): `first`, doubling, at most `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubles up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first.min(max),
        }
    }

    /// The next wait, and one step further.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to `first` (after a send the relay answered).
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::Problem;

    #[test]
    fn backoff_doubles_from_one_second_to_the_cap() {
        let mut b = Backoff::new(FIRST_BACKOFF, Duration::from_secs(60));
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(), FIRST_BACKOFF);
        let mut capped = Backoff::new(FIRST_BACKOFF, Duration::from_secs(1));
        assert_eq!(capped.next_delay(), capped.next_delay());
    }

    fn rejected(status: u16) -> Result<Value, ClientError> {
        Err(ClientError::Rejected(Problem {
            status,
            detail: Some(format!("status {status}")),
            ..Problem::default()
        }))
    }

    #[test]
    fn outcomes_follow_the_status() {
        assert!(matches!(
            Outcome::of(Ok(serde_json::json!({"id": "ntf_1"}))),
            Outcome::Accepted(id) if id == "ntf_1"
        ));
        assert!(matches!(
            Outcome::of(Err(ClientError::Transport("refused".into()))),
            Outcome::Retry(_)
        ));
        for status in [408, 429, 500, 502, 503] {
            assert!(
                matches!(Outcome::of(rejected(status)), Outcome::Retry(_)),
                "{status}"
            );
        }
        for status in [401, 403, 404] {
            assert!(matches!(Outcome::of(rejected(status)), Outcome::Held(s, _) if s == status));
        }
        for status in [400, 409, 413, 422] {
            assert!(
                matches!(Outcome::of(rejected(status)), Outcome::Refused(s, ref d) if s == status && d.contains("status")),
                "{status}"
            );
        }
    }
}
