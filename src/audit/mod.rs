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
//! Handlers reach the writer through [`Audit`] (in the app state), building events with
//! `crate::api::audited::AuditContext` (the request's source IP, request id and trace id):
//! [`Audit::record`] for what is only worth knowing, [`Audit::record_now`] before an operation
//! that must not go unrecorded.

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
    Action, AuditError, AuditEvent, CheckpointInfo, CheckpointSink, Outcome,
};

use crate::config::Settings;
use crate::store::Store;

pub use crate::config::{ARCHIVE_DIR, CHECKPOINT_FILE};

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

    /// Appends `event` and waits until it is durable, or says why it cannot be written (the
    /// API answers 503 then: the caller stops before doing what it guards).
    pub async fn record_now(&self, mut event: AuditEvent) -> Result<u64, AuditError> {
        event.at_ms = self.clock.now_ms();
        match self.writer.send(RecordNow { event }).await {
            Ok(result) => result,
            Err(_) => Err(AuditError::Unavailable),
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
