//! The audit log as a port: what happened ([`AuditEvent`]: who, what, to what, from where, with
//! what outcome), the store that appends it and signs checkpoints of it ([`AuditLog`], implemented
//! by the binary over SQLite and the checkpoint file), and where checkpoints are copied
//! ([`CheckpointSink`], the optional webhook). The [`crate::audit::AuditWriter`] drives both.

use serde::Serialize;

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// An admin, by session or by name (`actor_id` is the admin's id).
    Admin,
    /// An API token (`actor_id` is the token's id).
    Token,
    /// A paired device (`actor_id` is the device's id).
    Device,
    /// The relay itself: schedules, start-up, supervision, alerts.
    System,
    /// Nobody known yet: a failed login, a pairing attempt.
    Anonymous,
}

impl ActorKind {
    /// Every kind, in the order of the enum.
    pub const ALL: [ActorKind; 5] = [
        ActorKind::Admin,
        ActorKind::Token,
        ActorKind::Device,
        ActorKind::System,
        ActorKind::Anonymous,
    ];

    /// Its name in the log, the API and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::Admin => "admin",
            ActorKind::Token => "token",
            ActorKind::Device => "device",
            ActorKind::System => "system",
            ActorKind::Anonymous => "anonymous",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused: wrong credentials, a reused token, a limit, a rule.
    Denied,
    /// Attempted and failed on the relay's side.
    Failed,
    /// About to be done: written before an operation that must not go unrecorded; its result
    /// follows in a second record.
    Requested,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 4] = [
        Outcome::Ok,
        Outcome::Denied,
        Outcome::Failed,
        Outcome::Requested,
    ];

    /// Its name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
            Outcome::Requested => "requested",
        }
    }

    /// The outcome named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// Declares [`Action`] with its stable names, in one list.
macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What was done: one name per kind of security-relevant event.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $($(#[$doc])* $variant,)*
        }

        impl Action {
            /// Every action.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// Its stable name (`admin.login`, …).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }
        }
    };
}

actions! {
    /// An admin password login (ok or denied).
    AdminLogin => "admin.login",
    /// An admin ended their own session by logging out.
    AdminLogout => "admin.logout",
    /// An admin session ended otherwise: deleted through the API, or evicted by the session cap.
    SessionEnded => "admin.session_ended",
    /// An API token was created.
    TokenCreated => "token.created",
    /// An API token was used for the first time.
    TokenFirstUsed => "token.first_used",
    /// An API token was deleted.
    TokenDeleted => "token.deleted",
    /// A pairing code was minted.
    PairingCodeCreated => "pairing.code_created",
    /// A device paired with a code (ok, or denied for a bad or used code).
    DevicePaired => "device.paired",
    /// A device exchanged its refresh token.
    DeviceRefreshed => "device.refreshed",
    /// A refresh token was presented twice: its family is revoked.
    RefreshReuse => "device.refresh_reuse",
    /// A device logged out (its token and refresh family revoked).
    DeviceLogout => "device.logout",
    /// A device was deleted.
    DeviceDeleted => "device.deleted",
    /// A device's tokens were refused and the device disabled (`beepmyphone device revoke`).
    DeviceRevoked => "device.revoked",
    /// A token-signing key was created (on demand or by the schedule).
    SigningKeyRotated => "signing_key.rotated",
    /// A token-signing key was retired.
    SigningKeyRetired => "signing_key.retired",
    /// Data keys were created (on demand, by the schedule or past their budget).
    DataKeyRotated => "data_key.rotated",
    /// A data key was retired.
    DataKeyRetired => "data_key.retired",
    /// An IP was blocked for repeated rate-limit violations.
    IpBlocked => "ip.blocked",
    /// An IP block was lifted by an admin.
    IpUnblocked => "ip.unblocked",
    /// The relay started with this configuration (a digest of it, never a secret).
    ConfigLoaded => "config.loaded",
    /// A supervised actor was restarted.
    ActorRestarted => "actor.restarted",
    /// An alert started to hold.
    AlertFired => "alert.fired",
    /// An alert cleared.
    AlertResolved => "alert.resolved",
    /// A new TLS certificate was issued and put into service (by the schedule or on request).
    CertificateRenewed => "tls.certificate_renewed",
    /// Changed certificate files were loaded and put into service.
    CertificateReloaded => "tls.certificate_reloaded",
}

impl Action {
    /// The action named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == name)
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One security-relevant event, as a caller hands it to the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// When it happened, epoch ms; `0` lets the writer stamp it with its clock.
    pub at_ms: i64,
    /// Who did it.
    pub actor: ActorKind,
    /// The actor's id (`adm_…`, `tok_…`, `dev_…`), when there is one.
    pub actor_id: Option<String>,
    /// What was done.
    pub action: Action,
    /// What it was done to (a device, token, key or session id, an IP), when anything.
    pub subject: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The source IP of the request. Personal data: stored sealed.
    pub ip: Option<String>,
    /// The request's `X-Request-Id`.
    pub request_id: Option<String>,
    /// The request's W3C trace id (32 hex digits).
    pub trace_id: Option<String>,
    /// Anything else worth keeping (a JSON object, or null). Stored sealed: it may name people
    /// (an attempted user name, a device's name).
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An event of `action` by `actor`, ending in `outcome`; the rest empty.
    pub fn new(action: Action, actor: ActorKind, outcome: Outcome) -> Self {
        Self {
            at_ms: 0,
            actor,
            actor_id: None,
            action,
            subject: None,
            outcome,
            ip: None,
            request_id: None,
            trace_id: None,
            details: serde_json::Value::Null,
        }
    }

    /// An event the relay itself caused.
    pub fn system(action: Action, outcome: Outcome) -> Self {
        Self::new(action, ActorKind::System, outcome)
    }

    /// With the actor's id.
    pub fn by(mut self, id: impl Into<String>) -> Self {
        self.actor_id = Some(id.into());
        self
    }

    /// With a subject.
    pub fn on(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// With details (a JSON object).
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A signed checkpoint, as the writer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Records it covers.
    pub size: u64,
    /// When it was signed, epoch ms.
    pub at_ms: i64,
    /// The signed note (C2SP tlog-checkpoint), as written to the file.
    pub note: String,
}

/// Why the log could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The store or the checkpoint file refused the write (disk full, I/O, a lock).
    #[error("the audit log cannot be written: {0}")]
    Write(String),
    /// The writer is gone or its blocking task failed.
    #[error("the audit writer is unavailable")]
    Unavailable,
}

/// The durable log. Blocking: the writer calls it on the blocking pool, one call at a time.
pub trait AuditLog: Send + Sync + 'static {
    /// Appends `events` in order, in one transaction, as the next leaves of the tree; returns
    /// the sequence number of each (1-based, no gaps).
    fn append(&self, events: &[AuditEvent]) -> Result<Vec<u64>, AuditError>;
    /// Records in the log so far.
    fn size(&self) -> Result<u64, AuditError>;
    /// Signs a checkpoint of the log as it is now, if it grew since the last one, and writes it
    /// to the database and the checkpoint file.
    fn checkpoint(&self, now_ms: i64) -> Result<Option<CheckpointInfo>, AuditError>;
    /// Housekeeping on the writer's daily tick: archiving old records. Returns how many records
    /// moved out of the database.
    fn maintain(&self, now_ms: i64) -> Result<u64, AuditError>;
}

/// A copy of every checkpoint outside the relay's disk (the webhook).
pub trait CheckpointSink: Send + Sync + 'static {
    /// Sends one checkpoint. Must return at once: a sink that talks to the network spawns that
    /// work and logs its own failures (the checkpoint is in the file either way).
    fn publish(&self, checkpoint: &CheckpointInfo);
}
