//! Settings: built-in defaults, then `config.toml`, then `BEEP__SECTION__KEY` environment variables,
//! then command-line flags. Every setting, its default and its meaning is listed in the repository's
//! `config.toml`; [`Settings::load`] names the offending key when a value is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod audit;
mod cluster;
mod encryption;
mod monitoring;
mod tls;

pub use audit::{AuditSettings, ARCHIVE_DIR, CHECKPOINT_FILE, DEFAULT_RETENTION_DAYS};
pub use cluster::ClusterSettings;
pub use encryption::{EncryptionSettings, MIN_PBKDF2_ITERATIONS, PASSPHRASE_ENV};
pub use tls::{TlsKeyType, TlsMode, TlsSettings};

pub use monitoring::{
    AlertSettings, HealthSettings, MemorySettings, MetricsSettings, OtlpHeaders, OtlpSettings,
    SecretSetting,
};

/// A setting that could not be used; start-up fails with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port to listen on.
    pub listen: String,
    /// HTTP worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// The URL devices use to reach this relay (shown in pairing QR codes); empty: derived from `listen`.
    pub public_url: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a client has to send the whole request body once the head arrived (408 after).
    pub body_timeout_seconds: u64,
    /// Seconds to let open requests and sockets finish on shutdown.
    pub shutdown_timeout_seconds: u64,
    /// Concurrent connections per worker at most; more wait in the backlog.
    pub max_connections: usize,
    /// Milliseconds a client has to send the request head (408 after).
    pub client_request_timeout_ms: u64,
    /// Seconds an idle keep-alive connection stays open.
    pub keep_alive_seconds: u64,
    /// Milliseconds a client has to acknowledge the connection shutdown.
    pub client_disconnect_timeout_ms: u64,
    /// Longest request URI (path and query), in bytes; longer gets 414.
    pub max_uri_bytes: usize,
    /// Deepest nesting of arrays and objects in a JSON body; deeper gets 400.
    pub max_json_depth: usize,
}

/// `[storage]`: the embedded SQLite store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Empty: the embedded SQLite file in `data_dir`. `postgres://…`: that PostgreSQL database,
    /// shared by the relays of a cluster. Held as a secret (it may carry a password).
    pub url: monitoring::SecretSetting,
    /// Directory for the database, keys and the initial admin token.
    pub data_dir: PathBuf,
    /// Directory of the signing and data-encryption keys; empty means `<data_dir>/keys`. Relays
    /// that share sessions through Redis must share it (see [`Settings::keys_dir`]).
    pub keys_dir: PathBuf,
    /// Most pooled connections.
    pub pool_max_size: u32,
    /// Connections kept open while idle.
    pub pool_min_idle: u32,
    /// Milliseconds to wait for a pooled connection before failing the request.
    pub pool_timeout_ms: u64,
    /// Milliseconds a write waits for its turn among the relay's writers, and SQLite for a lock
    /// held by another process, before giving up.
    pub busy_timeout_ms: u64,
    /// Milliseconds that delivery state changes (sent, acked) may wait to share a commit.
    pub group_commit_window_ms: u64,
    /// Rows that trigger an immediate commit.
    pub group_commit_max_rows: usize,
}

/// `[auth]`: device tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `iss` of device access tokens.
    pub issuer: String,
    /// `aud` of device access tokens.
    pub audience: String,
    /// Lifetime of a device access token, in seconds.
    pub access_token_ttl_seconds: u64,
    /// Lifetime of a device refresh token, in seconds.
    pub refresh_token_ttl_seconds: u64,
    /// Default lifetime of a pairing code, in seconds.
    pub pairing_code_ttl_seconds: u64,
    /// Days between automatic signing-key rotations.
    pub key_rotation_days: u64,
    /// bcrypt cost for admin passwords (10 or more).
    pub bcrypt_cost: u32,
    /// Password hashes computed at once; more logins wait their turn.
    pub password_concurrency: usize,
}

/// `[sessions]`: admin dashboard sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Seconds without a request after which a session ends.
    pub idle_timeout_seconds: u64,
    /// Seconds after login after which a session ends regardless of use.
    pub absolute_timeout_seconds: u64,
    /// Live sessions per admin; a further login ends the oldest.
    pub max_per_admin: usize,
    /// Seconds between sweeps of expired sessions and revoked-token entries.
    pub cleanup_interval_seconds: u64,
}

/// `[redis]`: optional shared state for several relay processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port/db`; empty keeps sessions and revocations in SQLite.
    pub url: String,
    /// Prefix of every key this relay writes.
    pub key_prefix: String,
    /// Most pooled connections.
    pub pool_max_size: u32,
    /// Milliseconds to wait for a connection or a reply before failing closed.
    pub timeout_ms: u64,
}

/// `[delivery]`: the queue and the batcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Seconds a sent notification waits for its ack before it is sent again.
    pub ack_timeout_seconds: u64,
    /// Default notification lifetime, in seconds.
    pub default_ttl_seconds: u64,
    /// Unacknowledged notifications per device before the relay waits for acks.
    pub max_in_flight_per_device: usize,
    /// Milliseconds the batcher waits to put more notifications into one frame; 0 sends at once.
    pub batch_window_ms: u64,
    /// Notifications per frame at most.
    pub batch_max_items: usize,
    /// Seconds from its creation a notification is kept once every delivery of it is finished
    /// (acked or expired); then the retention sweep deletes it. 0 keeps every notification.
    pub keep_finished_seconds: u64,
}

/// `[websocket]`: device sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketSettings {
    /// Seconds between server pings; no pong within two intervals closes the socket.
    pub heartbeat_seconds: u64,
    /// Whether each socket's first ping comes at its own point of the first interval (so that
    /// sockets that connected together do not all ping together), instead of one interval after
    /// it connected.
    pub heartbeat_spread: bool,
    /// Seconds a socket may take to send its auth frame.
    pub auth_timeout_seconds: u64,
    /// Largest inbound frame, in bytes (close 1009 above it).
    pub max_frame_bytes: usize,
    /// Outbound frames buffered per socket; a device that falls further behind is dropped.
    pub outbound_buffer_frames: usize,
    /// Bad frames tolerated before the socket is closed with 1008.
    pub max_bad_frames: u32,
}

/// `[log]`: structured logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `trace`, `debug`, `info`, `warning`, `error` or `critical`.
    pub level: String,
    /// `json` (the default), `text`, or `auto` (text on a terminal, JSON otherwise).
    pub format: String,
    /// Levels for parts of the relay: a module path (`beepmyphone_actors::queue`) or a prefix of
    /// one (`beepmyphone::api`) → a level name; a line's module takes the level of the longest
    /// matching prefix, else `level`.
    pub modules: BTreeMap<String, String>,
    /// Whether lines go to stdout (in `format`).
    pub stdout: bool,
    /// A file that gets every line as well, in JSON; empty for none.
    pub file: String,
    /// Rotate the file before a line once it holds more than this many bytes; 0 for no size limit.
    pub file_max_bytes: u64,
    /// Rotate the file when the UTC hour or day changes: `hourly`, `daily` or `never`.
    pub file_rotate_every: String,
    /// Rotated files kept (the newest ones; at least 1).
    pub file_keep: usize,
    /// Rotated files older than this many days are deleted when the file rotates; 0 for no age limit.
    pub file_max_age_days: u32,
}

/// `[limits]`: rate limits and blocking (see docs/security.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Whether rate limits apply at all.
    pub enabled: bool,
    /// Proxies (IPs or CIDRs) whose `X-Forwarded-For` is believed; empty believes nobody.
    pub trusted_proxies: Vec<String>,
    /// Requests per minute per IP without credentials (sliding window).
    pub ip_per_minute: u32,
    /// Requests per minute per authenticated caller (token, device, admin; sliding window).
    pub principal_per_minute: u32,
    /// Requests per minute per admin token or admin session (sliding window).
    pub admin_per_minute: u32,
    /// Failed login, pairing and refresh attempts per minute per IP (sliding window).
    pub auth_per_minute: u32,
    /// Notifications published per minute per token (GCRA).
    pub publish_per_minute: u32,
    /// Publish requests allowed at once per token (the GCRA burst).
    pub publish_burst: u32,
    /// WebSocket connection attempts per minute per IP (sliding window).
    pub ws_connects_per_minute: u32,
    /// Inbound WebSocket frames per second per socket (GCRA); above it the socket closes with 4008.
    /// Acks of notifications sent on the socket and not yet acked are not counted.
    pub ws_frames_per_second: u32,
    /// Inbound frames allowed at once per socket (the GCRA burst).
    pub ws_frame_burst: u32,
    /// Open device sockets per IP at most (0: no limit); more are refused with 429.
    pub max_sockets_per_ip: usize,
    /// Consecutive rate-limit violations that block an IP.
    pub block_after_violations: u32,
    /// Seconds an IP stays blocked.
    pub block_seconds: u64,
    /// Keys per rule kept by the embedded backend; the oldest are evicted beyond it.
    pub max_keys: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_proxies: Vec::new(),
            ip_per_minute: 100,
            principal_per_minute: 500,
            admin_per_minute: 100_000,
            auth_per_minute: 10,
            publish_per_minute: 6_000_000,
            publish_burst: 100_000,
            ws_connects_per_minute: 60,
            ws_frames_per_second: 50,
            ws_frame_burst: 100,
            max_sockets_per_ip: 50,
            block_after_violations: 10,
            block_seconds: 900,
            max_keys: 100_000,
        }
    }
}

/// `[security]`: response headers and CORS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// The `Content-Security-Policy` of every response but the dashboard's (its own is fixed).
    pub content_security_policy: String,
    /// Origins allowed to call the API from a browser (`https://dash.example.com`); empty: none.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            content_security_policy:
                "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
                    .into(),
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Every setting of the relay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener.
    pub server: ServerSettings,
    /// The embedded store.
    pub storage: StorageSettings,
    /// Device tokens.
    pub auth: AuthSettings,
    /// Queue and batching.
    pub delivery: DeliverySettings,
    /// Device sockets.
    pub websocket: WebSocketSettings,
    /// Logging.
    pub log: LogSettings,
    /// Admin sessions.
    pub sessions: SessionSettings,
    /// Optional Redis.
    pub redis: RedisSettings,
    /// Rate limits.
    pub limits: LimitSettings,
    /// Response headers and CORS.
    pub security: SecuritySettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
    /// Health probes and their thresholds.
    pub health: HealthSettings,
    /// Alert rules and channels.
    pub alerts: AlertSettings,
    /// The memory monitor.
    pub memory: MemorySettings,
    /// Optional OTLP export of spans and metrics.
    pub otlp: OtlpSettings,
    /// Encryption at rest.
    pub encryption: EncryptionSettings,
    /// The audit log.
    pub audit: AuditSettings,
    /// HTTPS and WSS on the relay itself.
    pub tls: TlsSettings,
    /// The ntfy- and Gotify-compatible publish endpoints.
    pub compat: CompatSettings,
    /// The relays of a cluster (PostgreSQL and Redis).
    pub cluster: ClusterSettings,
}

/// `[compat]`: publishing the way ntfy and Gotify clients do (`/compat/ntfy/{topic}`,
/// `/compat/gotify/message`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompatSettings {
    /// Also serve them at the root (`/{topic}`, `/`, `/message`), for tools that cannot take a path
    /// prefix.
    pub mount_at_root: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout_seconds: 30 * 60,
            absolute_timeout_seconds: 12 * 3_600,
            max_per_admin: 5,
            cleanup_interval_seconds: 24 * 3_600,
        }
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            key_prefix: "beep:".into(),
            pool_max_size: 16,
            timeout_ms: 500,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            workers: 0,
            public_url: String::new(),
            max_body_bytes: 64 * 1024,
            body_timeout_seconds: 10,
            shutdown_timeout_seconds: 10,
            max_connections: 25_000,
            client_request_timeout_ms: 5_000,
            keep_alive_seconds: 75,
            client_disconnect_timeout_ms: 1_000,
            max_uri_bytes: 8 * 1024,
            max_json_depth: 32,
        }
    }
}

impl StorageSettings {
    /// The PostgreSQL URL, when `url` names one (`postgres://` or `postgresql://`).
    pub fn postgres_url(&self) -> Option<&str> {
        let url = self.url.expose();
        let scheme = url.split_once("://")?.0;
        matches!(scheme, "postgres" | "postgresql").then_some(url)
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            url: monitoring::SecretSetting::default(),
            data_dir: PathBuf::from("./data"),
            keys_dir: PathBuf::new(),
            pool_max_size: 20,
            pool_min_idle: 5,
            pool_timeout_ms: 5_000,
            busy_timeout_ms: 5_000,
            group_commit_window_ms: 5,
            group_commit_max_rows: 2_000,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: "beepmyphone".into(),
            audience: "beepmyphone-devices".into(),
            access_token_ttl_seconds: 3_600,
            refresh_token_ttl_seconds: 30 * 24 * 3_600,
            pairing_code_ttl_seconds: 600,
            key_rotation_days: 30,
            bcrypt_cost: 12,
            password_concurrency: 2,
        }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            ack_timeout_seconds: 30,
            default_ttl_seconds: 7 * 24 * 3_600,
            max_in_flight_per_device: 256,
            batch_window_ms: 2,
            batch_max_items: 64,
            keep_finished_seconds: 7 * 24 * 3_600,
        }
    }
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        Self {
            heartbeat_seconds: 30,
            heartbeat_spread: true,
            auth_timeout_seconds: 5,
            max_frame_bytes: 64 * 1024,
            outbound_buffer_frames: 256,
            max_bad_frames: 10,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "json".into(),
            modules: BTreeMap::new(),
            stdout: true,
            file: String::new(),
            file_max_bytes: 100 * 1024 * 1024,
            file_rotate_every: "daily".into(),
            file_keep: 10,
            file_max_age_days: 30,
        }
    }
}

/// Where settings come from, besides the defaults and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--config FILE`: must exist and parse.
    pub config: Option<PathBuf>,
    /// `--listen ADDR:PORT`.
    pub listen: Option<String>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
}

/// The longest `auth.access_token_ttl_seconds`: a year.
pub const MAX_ACCESS_TOKEN_TTL_SECONDS: u64 = 365 * 86_400;

/// The longest `auth.refresh_token_ttl_seconds`: ten years.
pub const MAX_REFRESH_TOKEN_TTL_SECONDS: u64 = 10 * 365 * 86_400;

/// The longest `delivery.keep_finished_seconds`: 100 years (milliseconds of it fit an i64 many times).
pub const MAX_KEEP_FINISHED_SECONDS: u64 = 100 * 365 * 86_400;

impl Settings {
    /// Loads defaults, the config file (the given one, else `./config.toml` if present), the
    /// `BEEP__SECTION__KEY` environment, and the overrides, in that order; then checks the values.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match &overrides.config {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None if Path::new("config.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("config.toml"))
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("BEEP__").split("__"));
        let mut settings: Settings = figment.extract().map_err(|e| ConfigError(describe(e)))?;
        if let Some(listen) = &overrides.listen {
            settings.server.listen.clone_from(listen);
        }
        if let Some(dir) = &overrides.data_dir {
            settings.storage.data_dir.clone_from(dir);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &str, why: &str) -> Result<(), ConfigError> {
            Err(ConfigError(format!("{key}: {why}")))
        }
        self.otlp.validate()?;
        self.encryption.validate()?;
        self.audit.validate()?;
        self.tls.validate()?;
        self.cluster.validate()?;
        if let Some(bad_proxy) = self
            .limits
            .trusted_proxies
            .iter()
            .find(|p| crate::domain::net::Cidr::parse(p).is_none())
        {
            return Err(ConfigError(format!(
                "limits.trusted_proxies: {bad_proxy:?} is not an IP address or CIDR"
            )));
        }
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "server.listen",
                "must be an address and port such as 0.0.0.0:8080",
            );
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "metrics.listen",
                "must be an address and port such as 127.0.0.1:9464, or empty",
            );
        }
        if !self.server.public_url.is_empty() && url::Url::parse(&self.server.public_url).is_err() {
            return bad("server.public_url", "must be an absolute URL or empty");
        }
        if self.tls.enabled() && self.server.public_url.starts_with("http://") {
            return bad(
                "server.public_url",
                "must be an https:// URL when TLS is on (tls.mode)",
            );
        }
        if self.server.body_timeout_seconds == 0 {
            return bad("server.body_timeout_seconds", "must be at least 1");
        }
        if self.server.max_body_bytes < 1024 {
            return bad("server.max_body_bytes", "must be at least 1024");
        }
        if !self.storage.url.expose().is_empty() && self.storage.postgres_url().is_none() {
            return bad(
                "storage.url",
                "must be empty (SQLite in data_dir) or a postgres:// URL",
            );
        }
        if self.storage.pool_max_size == 0 {
            return bad("storage.pool_max_size", "must be at least 1");
        }
        if self.storage.pool_min_idle > self.storage.pool_max_size {
            return bad(
                "storage.pool_min_idle",
                "must not exceed storage.pool_max_size",
            );
        }
        if self.keys_dir().is_file() {
            return bad("storage.keys_dir", "must be a directory, not a file");
        }
        if self.storage.group_commit_max_rows == 0 {
            return bad("storage.group_commit_max_rows", "must be at least 1");
        }
        if !(60..=MAX_ACCESS_TOKEN_TTL_SECONDS).contains(&self.auth.access_token_ttl_seconds) {
            return bad(
                "auth.access_token_ttl_seconds",
                "must be between 60 and 31536000 (a year)",
            );
        }
        if self.auth.refresh_token_ttl_seconds > MAX_REFRESH_TOKEN_TTL_SECONDS {
            return bad(
                "auth.refresh_token_ttl_seconds",
                "must be at most 315360000 (ten years)",
            );
        }
        if self.auth.refresh_token_ttl_seconds < self.auth.access_token_ttl_seconds {
            return bad(
                "auth.refresh_token_ttl_seconds",
                "must not be shorter than auth.access_token_ttl_seconds",
            );
        }
        if !(60..=3_600).contains(&self.auth.pairing_code_ttl_seconds) {
            return bad(
                "auth.pairing_code_ttl_seconds",
                "must be between 60 and 3600",
            );
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return bad("auth.issuer", "issuer and audience must not be empty");
        }
        if !(1..=3_650).contains(&self.auth.key_rotation_days) {
            return bad("auth.key_rotation_days", "must be between 1 and 3650");
        }
        if !(10..=31).contains(&self.auth.bcrypt_cost) {
            return bad("auth.bcrypt_cost", "must be between 10 and 31");
        }
        if self.auth.password_concurrency == 0 {
            return bad("auth.password_concurrency", "must be at least 1");
        }
        if self.sessions.idle_timeout_seconds < 60 {
            return bad("sessions.idle_timeout_seconds", "must be at least 60");
        }
        if self.sessions.absolute_timeout_seconds < self.sessions.idle_timeout_seconds {
            return bad(
                "sessions.absolute_timeout_seconds",
                "must not be shorter than sessions.idle_timeout_seconds",
            );
        }
        if !(1..=100).contains(&self.sessions.max_per_admin) {
            return bad("sessions.max_per_admin", "must be between 1 and 100");
        }
        if self.sessions.cleanup_interval_seconds < 60 {
            return bad("sessions.cleanup_interval_seconds", "must be at least 60");
        }
        if !self.redis.url.is_empty()
            && !url::Url::parse(&self.redis.url)
                .is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss"))
        {
            return bad("redis.url", "must be empty or a redis:// URL");
        }
        self.health.validate()?;
        if self.redis.pool_max_size == 0 {
            return bad("redis.pool_max_size", "must be at least 1");
        }
        if self.redis.timeout_ms == 0 {
            return bad("redis.timeout_ms", "must be at least 1");
        }
        if self.delivery.ack_timeout_seconds == 0 {
            return bad("delivery.ack_timeout_seconds", "must be at least 1");
        }
        if !(60..=2_592_000).contains(&self.delivery.default_ttl_seconds) {
            return bad(
                "delivery.default_ttl_seconds",
                "must be between 60 and 2592000",
            );
        }
        if self.delivery.max_in_flight_per_device == 0 {
            return bad("delivery.max_in_flight_per_device", "must be at least 1");
        }
        if self.delivery.batch_max_items == 0 {
            return bad("delivery.batch_max_items", "must be at least 1");
        }
        let keep = self.delivery.keep_finished_seconds;
        if keep != 0 && !(60..=MAX_KEEP_FINISHED_SECONDS).contains(&keep) {
            return bad(
                "delivery.keep_finished_seconds",
                "must be 0 (keep forever) or between 60 and 3153600000 (100 years)",
            );
        }
        if !(1..=86_400).contains(&self.websocket.heartbeat_seconds) {
            return bad("websocket.heartbeat_seconds", "must be between 1 and 86400");
        }
        if self.websocket.auth_timeout_seconds == 0 {
            return bad("websocket.auth_timeout_seconds", "must be at least 1");
        }
        if self.websocket.max_frame_bytes < 1024 {
            return bad("websocket.max_frame_bytes", "must be at least 1024");
        }
        if self.websocket.outbound_buffer_frames < self.delivery.max_in_flight_per_device {
            // A full in-flight window must fit, so that only a device that stops reading overflows.
            return bad(
                "websocket.outbound_buffer_frames",
                "must be at least delivery.max_in_flight_per_device",
            );
        }
        if crate::domain::log_level::parse_level(&self.log.level).is_none() {
            return bad(
                "log.level",
                "must be one of trace, debug, info, warning, error, critical",
            );
        }
        if !matches!(self.log.format.as_str(), "auto" | "json" | "text") {
            return bad("log.format", "must be one of auto, json, text");
        }
        for (module, level) in &self.log.modules {
            if module.is_empty() || crate::domain::log_level::parse_level(level).is_none() {
                return Err(ConfigError(format!(
                    "log.modules.{module:?}: must map a module path to one of trace, debug, info, warning, error, critical"
                )));
            }
        }
        if !self.log.stdout && self.log.file.is_empty() {
            return bad("log.stdout", "can only be false when log.file is set");
        }
        if !matches!(
            self.log.file_rotate_every.as_str(),
            "hourly" | "daily" | "never"
        ) {
            return bad(
                "log.file_rotate_every",
                "must be one of hourly, daily, never",
            );
        }
        if self.log.file_keep == 0 {
            return bad("log.file_keep", "must be at least 1");
        }
        self.alerts.validate()?;
        self.memory.validate()?;
        Ok(())
    }

    /// The listen address (checked by [`Settings::validate`]).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError("server.listen: must be an address and port such as 0.0.0.0:8080".into())
        })
    }

    /// The keys directory: `storage.keys_dir`, or `<data_dir>/keys` when that is empty. A relative
    /// `keys_dir` is relative to the working directory, like `data_dir`.
    pub fn keys_dir(&self) -> PathBuf {
        if self.storage.keys_dir.as_os_str().is_empty() {
            self.storage.data_dir.join("keys")
        } else {
            self.storage.keys_dir.clone()
        }
    }

    /// Where audit checkpoints are appended (`audit.checkpoint_file`, by default in the data
    /// directory).
    pub fn audit_checkpoint_file(&self) -> PathBuf {
        if self.audit.checkpoint_file.as_os_str().is_empty() {
            self.storage.data_dir.join(audit::CHECKPOINT_FILE)
        } else {
            self.audit.checkpoint_file.clone()
        }
    }

    /// Where audit archives go (`audit.archive_dir`, by default in the data directory).
    pub fn audit_archive_dir(&self) -> PathBuf {
        if self.audit.archive_dir.as_os_str().is_empty() {
            self.storage.data_dir.join(audit::ARCHIVE_DIR)
        } else {
            self.audit.archive_dir.clone()
        }
    }

    /// The ack timeout.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_secs(self.delivery.ack_timeout_seconds)
    }
}

/// Turns a figment error into one line that names the key (also the capture agent's config).
pub(crate) fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = e.kind.to_string();
            if key.is_empty() {
                kind
            } else {
                format!("{key}: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn file_env_and_flags_layer_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "[server]\nlisten = \"127.0.0.1:9000\"\n[delivery]\nack_timeout_seconds = 7\n",
            )?;
            jail.set_env("BEEP__DELIVERY__ACK_TIMEOUT_SECONDS", "9");
            let overrides = Overrides {
                config: Some("custom.toml".into()),
                data_dir: Some("/tmp/x".into()),
                ..Overrides::default()
            };
            let settings = Settings::load(&overrides).map_err(|e| e.to_string())?;
            assert_eq!(settings.server.listen, "127.0.0.1:9000");
            assert_eq!(settings.delivery.ack_timeout_seconds, 9);
            assert_eq!(settings.storage.data_dir, PathBuf::from("/tmp/x"));
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BEEP__WEBSOCKET__HEARTBEAT_SECONDS", "soon");
            let err = Settings::load(&Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("websocket.heartbeat_seconds"), "{err}");
            jail.clear_env();
            jail.set_env("BEEP__SERVER__LISTEN", "nowhere");
            let err = Settings::load(&Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("server.listen"), "{err}");
            jail.clear_env();
            jail.set_env("BEEP__SERVER__LISTNE", "1");
            let err = Settings::load(&Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("listne"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn lifetimes_and_intervals_have_bounds_that_keep_their_arithmetic_in_range() {
        let check = |tweak: fn(&mut Settings)| {
            let mut settings = Settings::default();
            tweak(&mut settings);
            settings.validate().err().map(|e| e.to_string())
        };
        let err = check(|s| s.auth.access_token_ttl_seconds = u64::MAX).unwrap();
        assert!(err.contains("auth.access_token_ttl_seconds"), "{err}");
        let err = check(|s| s.auth.access_token_ttl_seconds = 59).unwrap();
        assert!(err.contains("auth.access_token_ttl_seconds"), "{err}");
        let err = check(|s| s.auth.refresh_token_ttl_seconds = u64::MAX).unwrap();
        assert!(err.contains("auth.refresh_token_ttl_seconds"), "{err}");
        let err = check(|s| s.websocket.heartbeat_seconds = 86_401).unwrap();
        assert!(err.contains("websocket.heartbeat_seconds"), "{err}");
        let err = check(|s| s.delivery.keep_finished_seconds = 59).unwrap();
        assert!(err.contains("delivery.keep_finished_seconds"), "{err}");
        let err = check(|s| s.delivery.keep_finished_seconds = u64::MAX).unwrap();
        assert!(err.contains("delivery.keep_finished_seconds"), "{err}");
        assert_eq!(check(|s| s.delivery.keep_finished_seconds = 0), None);
        assert_eq!(
            check(|s| {
                s.auth.access_token_ttl_seconds = MAX_ACCESS_TOKEN_TTL_SECONDS;
                s.auth.refresh_token_ttl_seconds = MAX_REFRESH_TOKEN_TTL_SECONDS;
                s.websocket.heartbeat_seconds = 86_400;
            }),
            None
        );
    }

    #[test]
    fn health_thresholds_must_be_ordered() {
        let check = |tweak: fn(&mut HealthSettings)| {
            let mut settings = Settings::default();
            tweak(&mut settings.health);
            settings.validate().err().map(|e| e.to_string())
        };
        assert_eq!(check(|_| {}), None);
        let err = check(|h| h.disk_unhealthy_percent = 20).unwrap();
        assert!(err.contains("health.disk_unhealthy_percent"), "{err}");
        let err = check(|h| h.disk_unhealthy_mib = 2_048).unwrap();
        assert!(err.contains("health.disk_unhealthy_mib"), "{err}");
        let err = check(|h| h.queue_lag_unhealthy_seconds = 10).unwrap();
        assert!(err.contains("health.queue_lag_unhealthy_seconds"), "{err}");
        let err = check(|h| h.probe_timeout_ms = 0).unwrap();
        assert!(err.contains("health.probe_timeout_ms"), "{err}");
        let err = check(|h| h.interval_seconds = 0).unwrap();
        assert!(err.contains("health.interval_seconds"), "{err}");
    }

    #[test]
    fn otlp_settings_are_checked_and_the_headers_kept_secret() {
        let check = |tweak: &dyn Fn(&mut OtlpSettings)| {
            let mut settings = Settings::default();
            tweak(&mut settings.otlp);
            settings.validate().err().map(|e| e.to_string())
        };
        assert_eq!(check(&|_| {}), None);
        assert_eq!(
            check(&|o| o.endpoint = "https://otlp.nr-data.net".into()),
            None
        );
        for bad in [
            "otlp.example",
            "ftp://x",
            "http://user:pw@x:4318",
            "http://x?key=1",
        ] {
            let err = check(&|o| o.endpoint = bad.into()).unwrap();
            assert!(err.contains("otlp.endpoint"), "{bad}: {err}");
            assert!(!err.contains("pw"), "{err}");
        }
        let err = check(&|o| o.export_interval_ms = 10).unwrap();
        assert!(err.contains("otlp.export_interval_ms"), "{err}");
        let err = check(&|o| o.timeout_ms = 0).unwrap();
        assert!(err.contains("otlp.timeout_ms"), "{err}");
        let err = check(&|o| o.max_queued_spans = 0).unwrap();
        assert!(err.contains("otlp.max_queued_spans"), "{err}");
        let err = check(&|o| o.max_queued_spans = 1 << 40).unwrap();
        assert!(err.contains("otlp.max_queued_spans"), "{err}");
        let err = check(&|o| o.headers = OtlpHeaders("api-key".into())).unwrap();
        assert!(err.contains("otlp.headers"), "{err}");
        let err = check(&|o| o.headers = OtlpHeaders("api-key=s3cret\u{1}x".into())).unwrap();
        assert!(!err.contains("s3cret"), "{err}");

        figment::Jail::expect_with(|jail| {
            jail.set_env("BEEP__OTLP__HEADERS", "api-key=s3cret, DD-API-KEY = other");
            let settings = Settings::load(&Overrides::default()).unwrap();
            assert_eq!(
                settings.otlp.headers.pairs().unwrap(),
                vec![
                    ("api-key".to_owned(), "s3cret".to_owned()),
                    ("dd-api-key".to_owned(), "other".to_owned())
                ]
            );
            assert!(!format!("{settings:?}").contains("s3cret"));
            let json = serde_json::to_string(&settings).unwrap();
            assert!(!json.contains("s3cret"), "{json}");
            Ok(())
        });
    }

    #[test]
    fn log_settings_are_checked() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                "[log]\nmodules = { \"beepmyphone::api\" = \"loud\" }\n",
            )?;
            let overrides = Overrides {
                config: Some("bad.toml".into()),
                ..Overrides::default()
            };
            let err = Settings::load(&overrides).unwrap_err().to_string();
            assert!(err.contains("log.modules.\"beepmyphone::api\""), "{err}");
            for (key, value) in [
                ("BEEP__LOG__STDOUT", "false"),
                ("BEEP__LOG__FILE_KEEP", "0"),
                ("BEEP__LOG__FILE_ROTATE_EVERY", "weekly"),
            ] {
                jail.clear_env();
                jail.set_env(key, value);
                let err = Settings::load(&Overrides::default())
                    .unwrap_err()
                    .to_string();
                let name = key.trim_start_matches("BEEP__LOG__").to_lowercase();
                assert!(err.contains(&format!("log.{name}")), "{err}");
            }
            Ok(())
        });
    }

    #[test]
    fn the_keys_dir_defaults_to_the_data_dir() {
        let mut settings = Settings::default();
        settings.storage.data_dir = "/srv/beep".into();
        assert_eq!(settings.keys_dir(), PathBuf::from("/srv/beep/keys"));
        settings.storage.keys_dir = "/shared/keys".into();
        assert_eq!(settings.keys_dir(), PathBuf::from("/shared/keys"));
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let overrides = Overrides {
            config: Some("/nonexistent/beep.toml".into()),
            ..Overrides::default()
        };
        assert!(Settings::load(&overrides)
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }
}
