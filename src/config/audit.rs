//! `[audit]`: the tamper-evident audit log (docs/security.md, "Audit log").

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, SecretSetting};

/// The checkpoint file's default name in the data directory.
pub const CHECKPOINT_FILE: &str = "audit-checkpoints.log";
/// The archive directory's default name in the data directory.
pub const ARCHIVE_DIR: &str = "audit-archive";

/// Seven years and two leap days: the seed plan's retention.
pub const DEFAULT_RETENTION_DAYS: u64 = 7 * 365 + 2;

/// `[audit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// A signed checkpoint after this many new records.
    pub checkpoint_every_records: u64,
    /// A signed checkpoint at least this often (seconds) while records arrive.
    pub checkpoint_interval_seconds: u64,
    /// Where checkpoints are appended outside the database; empty means
    /// `<data_dir>/audit-checkpoints.log`. Put it on other storage (or forward it) so that whoever
    /// can rewrite the database cannot rewrite it too.
    pub checkpoint_file: PathBuf,
    /// Optional: every checkpoint is also POSTed here (`text/plain`, the signed note). A secret
    /// setting: never logged beyond its host.
    pub checkpoint_webhook_url: SecretSetting,
    /// Records older than this many days move from the database to compressed archive files
    /// (with their checkpoints); 0 keeps everything in the database.
    pub archive_after_days: u64,
    /// Archives whose newest record is older than this many days are deleted; 0 keeps them
    /// forever. At least `archive_after_days`.
    pub retention_days: u64,
    /// Where archives go; empty means `<data_dir>/audit-archive`.
    pub archive_dir: PathBuf,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            checkpoint_every_records: 1_000,
            checkpoint_interval_seconds: 60,
            checkpoint_file: PathBuf::new(),
            checkpoint_webhook_url: SecretSetting::default(),
            archive_after_days: 365,
            retention_days: DEFAULT_RETENTION_DAYS,
            archive_dir: PathBuf::new(),
        }
    }
}

impl AuditSettings {
    /// Checks the section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("audit.{key}: {why}")));
        if self.checkpoint_every_records == 0 || self.checkpoint_every_records > 1_000_000 {
            return bad("checkpoint_every_records", "must be between 1 and 1000000");
        }
        if self.checkpoint_interval_seconds == 0 || self.checkpoint_interval_seconds > 86_400 {
            return bad("checkpoint_interval_seconds", "must be between 1 and 86400");
        }
        let hook = self.checkpoint_webhook_url.expose();
        if !hook.is_empty()
            && !url::Url::parse(hook).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return bad("checkpoint_webhook_url", "must be empty or an http(s) URL");
        }
        if self.retention_days != 0 && self.retention_days < self.archive_after_days {
            return bad(
                "retention_days",
                "must be 0 (keep archives) or at least archive_after_days",
            );
        }
        if self.archive_after_days > 36_500 || self.retention_days > 36_500 {
            return bad(
                "archive_after_days and retention_days",
                "must be at most 36500",
            );
        }
        Ok(())
    }

    /// The writer's tunables.
    pub fn writer(&self) -> beepmyphone_actors::audit::AuditConfig {
        beepmyphone_actors::audit::AuditConfig {
            checkpoint_every: self.checkpoint_every_records,
            checkpoint_interval: Duration::from_secs(self.checkpoint_interval_seconds),
            ..beepmyphone_actors::audit::AuditConfig::default()
        }
    }
}
