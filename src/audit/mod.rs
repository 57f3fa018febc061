//! The tamper-evident audit log (the design card's audit writer; docs/security.md, "Audit log").
//!
//! - [`merkle`]: RFC 6962 / 9162 tree hashing, the growing tree's frontier, inclusion and
//!   consistency proofs;
//! - [`note`]: C2SP signed notes (Ed25519) and tlog checkpoints;
//! - [`signing`]: the checkpoint-signing key in the keys directory;
//! - [`record`]: how an event becomes a row (its personal part sealed) and the encoding its leaf
//!   hash covers;
//! - [`log`]: the writer's port over SQLite and the checkpoint file;
//! - [`archive`]: retention (compressed archives with their checkpoints);
//! - [`verify`]: `audit verify` and `audit prove`.
//!
//! Handlers reach the writer through [`Audit`] (in the app state) with an [`AuditContext`] (the
//! request's source IP, request id and trace id): [`Audit::record`] for what is only worth
//! knowing, [`Audit::record_now`] before an operation that must not go unrecorded.

pub mod archive;
pub mod log;
pub mod merkle;
pub mod note;
pub mod record;
pub mod signing;
pub mod verify;

use std::sync::Arc;

use actix::Addr;
use beepmyphone_actors::audit::{AuditAlerts, AuditStatus, AuditWriter, Record, RecordNow};
use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::ports::{
    Action, ActorKind, AuditError, AuditEvent, CheckpointInfo, CheckpointSink, Outcome,
};

use crate::api::auth::Principal;
use crate::config::Settings;
use crate::error::ApiError;
use crate::store::Store;

/// The checkpoint file's default name in the data directory.
pub const CHECKPOINT_FILE: &str = "audit-checkpoints.log";
/// The archive directory's default name in the data directory.
pub const ARCHIVE_DIR: &str = "audit-archive";

/// The writer, as handlers use it.
#[derive(Clone)]
pub struct Audit {
    writer: Addr<AuditWriter>,
    clock: SharedClock,
    status: Arc<AuditStatus>,
}

impl Audit {
    /// Appends `event` without waiting (stamped now).
    pub fn record(&self, mut event: AuditEvent) {
        event.at_ms = self.clock.now_ms();
        self.writer.do_send(Record { event });
    }

    /// Appends `event` and waits until it is durable: a 503 when it cannot be written, so the
    /// caller stops before doing what it guards.
    pub async fn record_now(&self, mut event: AuditEvent) -> Result<u64, ApiError> {
        event.at_ms = self.clock.now_ms();
        match self.writer.send(RecordNow { event }).await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(unavailable(&AuditError::Unavailable)),
        }
    }

    /// Appends the result of an operation whose request [`Audit::record_now`] wrote before it:
    /// durable before the answer goes out, but the operation is done either way, so a failure
    /// is only logged (the request is in the log).
    pub async fn record_result(&self, event: AuditEvent, log: &slog::Logger) {
        let action = event.action.as_str();
        if let Err(e) = self.record_now(event).await {
            slog::error!(log, "the result of an audited operation could not be recorded; its request is in the audit log"; "action" => action, "error" => %e);
        }
    }

    /// The writer's address (tests flush through it).
    pub fn writer(&self) -> &Addr<AuditWriter> {
        &self.writer
    }

    /// The writer's status (health, metrics).
    pub fn status(&self) -> &Arc<AuditStatus> {
        &self.status
    }

    /// The alert channel that records alert transitions.
    pub fn alert_channel(&self) -> AuditAlerts {
        AuditAlerts(self.writer.clone().recipient())
    }
}

fn unavailable(e: &AuditError) -> ApiError {
    ApiError::Unavailable(format!(
        "not done: the audit log cannot record it right now ({e}); try again"
    ))
}

/// Where an event came from: the request's source IP, request id and trace id (an extractor).
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    /// The client's IP (through trusted proxies).
    pub ip: Option<String>,
    /// `X-Request-Id`.
    pub request_id: Option<String>,
    /// The W3C trace id.
    pub trace_id: Option<String>,
}

impl AuditContext {
    /// The relay itself as the actor.
    pub fn system() -> (ActorKind, Option<String>) {
        (ActorKind::System, None)
    }

    /// An event of `action` by `actor` (kind and id) from this request.
    pub fn event(
        &self,
        action: Action,
        (actor, actor_id): (ActorKind, Option<String>),
        outcome: Outcome,
    ) -> AuditEvent {
        AuditEvent {
            actor_id,
            ip: self.ip.clone(),
            request_id: self.request_id.clone(),
            trace_id: self.trace_id.clone(),
            ..AuditEvent::new(action, actor, outcome)
        }
    }

    /// An event by whoever `principal` is.
    pub fn by(&self, principal: &Principal, action: Action, outcome: Outcome) -> AuditEvent {
        self.event(action, actor_of(principal), outcome)
    }
}

/// The audit actor of a caller.
pub fn actor_of(principal: &Principal) -> (ActorKind, Option<String>) {
    match principal {
        Principal::Token { id, .. } => (ActorKind::Token, Some(id.to_string())),
        Principal::Device { device, .. } => (ActorKind::Device, Some(device.to_string())),
        Principal::Session { admin_id, .. } => (ActorKind::Admin, Some(admin_id.to_string())),
    }
}

/// Nobody known.
pub fn anonymous() -> (ActorKind, Option<String>) {
    (ActorKind::Anonymous, None)
}

impl actix_web::FromRequest for AuditContext {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, actix_web::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let ip = req
            .app_data::<actix_web::web::Data<crate::state::AppState>>()
            .and_then(|state| state.limits.client_ip(req))
            .map(|ip| ip.to_string());
        std::future::ready(Ok(Self {
            ip,
            request_id: crate::request_id::current_request_id(),
            trace_id: crate::request_id::current_trace_id().map(|t| t.to_string()),
        }))
    }
}

/// POSTs every checkpoint (the signed note, `text/plain`) to `audit.checkpoint_webhook_url`.
pub struct WebhookSink {
    url: crate::config::SecretSetting,
    log: slog::Logger,
}

impl CheckpointSink for WebhookSink {
    fn publish(&self, checkpoint: &CheckpointInfo) {
        let (url, log) = (self.url.clone(), self.log.clone());
        let (note, size) = (checkpoint.note.clone(), checkpoint.size);
        actix_rt::spawn(async move {
            let client = awc::Client::builder()
                .connector(awc::Connector::new().max_http_version(awc::http::Version::HTTP_11))
                .timeout(std::time::Duration::from_secs(10))
                .finish();
            match client
                .post(url.expose())
                .content_type("text/plain; charset=utf-8")
                .send_body(note)
                .await
            {
                Ok(response) if response.status().is_success() => {
                    slog::debug!(log, "audit checkpoint sent"; "size" => size);
                }
                Ok(response) => {
                    slog::warn!(log, "the checkpoint webhook refused an audit checkpoint (it is in the checkpoint file)"; "size" => size, "status" => response.status().as_u16());
                }
                Err(e) => {
                    slog::warn!(log, "the checkpoint webhook is unreachable (the checkpoint is in the checkpoint file)"; "size" => size, "error" => %e);
                }
            }
        });
    }
}

/// Opens the log (making the signing key on first start) and starts the writer under
/// supervision. Blocking work runs on the blocking pool.
pub async fn start(
    settings: &Settings,
    store: &Store,
    clock: &SharedClock,
    metrics: &Arc<Metrics>,
    log: &slog::Logger,
) -> Result<Audit, String> {
    let (keys_dir, file) = (settings.keys_dir(), settings.audit_checkpoint_file());
    let archiver = archive::Archiver::from_settings(settings);
    let archiver = (archiver.archive_after_ms > 0 || archiver.retention_ms > 0).then_some(archiver);
    let store = store.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let signer = signing::load_or_create(&keys_dir).map_err(|e| e.to_string())?;
        // A crash mid-append can leave half a note at the end: it never counted, so it goes.
        let repaired = log::repair_torn_tail(&file)
            .map_err(|e| format!("checkpoint file {}: {e}", file.display()))?;
        log::SqliteAuditLog::open(store, signer, file, archiver)
            .map(|log| (log, repaired))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    let (opened, repaired) = opened;
    if repaired {
        slog::warn!(log, "the audit checkpoint file ended in a torn note (a crash while writing it); it was cut back to the last complete one");
    }
    slog::info!(log, "audit log open"; "origin" => opened.origin());
    let status = Arc::new(AuditStatus::default());
    let mut writer = AuditWriter::new(
        Arc::new(opened),
        settings.audit.writer(),
        clock.clone(),
        metrics.clone(),
        status.clone(),
        log.new(slog::o!("actor" => "audit")),
    );
    let hook = &settings.audit.checkpoint_webhook_url;
    if !hook.expose().is_empty() {
        let host = url::Url::parse(hook.expose())
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        writer = writer.with_sink(Arc::new(WebhookSink {
            url: hook.clone(),
            log: log.new(slog::o!("component" => "audit", "webhook_host" => host)),
        }));
    }
    Ok(Audit {
        writer: writer.start_supervised(),
        clock: clock.clone(),
        status,
    })
}

/// The `config.loaded` event: a SHA-256 of the settings as loaded, secrets redacted (they
/// serialize as empty or `[REDACTED]`), and a few facts an investigator wants at a glance.
pub fn config_loaded(settings: &Settings) -> AuditEvent {
    use sha2::Digest;
    let text = serde_json::to_vec(settings).unwrap_or_default();
    let digest = hex::encode(sha2::Sha256::digest(&text));
    AuditEvent::system(Action::ConfigLoaded, Outcome::Ok).with_details(serde_json::json!({
        "sha256": digest,
        "version": env!("CARGO_PKG_VERSION"),
        "commit": crate::GIT_COMMIT,
        "listen": settings.server.listen,
        "redis": !settings.redis.url.is_empty(),
        "encryption": settings.encryption.algorithm,
    }))
}
