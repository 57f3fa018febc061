//! The binary's health probes, run by the actors' [`HealthSupervisor`] every
//! `health.interval_seconds` under `health.probe_timeout_ms` (docs/operations.md lists every
//! component and its thresholds):
//!
//! - [`StoreProbe`] (`store`): a real write transaction (`BEGIN IMMEDIATE`, committed empty)
//!   through the pool, and the pool's figures;
//! - [`RedisProbe`] (`redis`, only when Redis is configured): `PING`;
//! - [`DiskProbe`] (`disk`): free space of the data directory's file system ([`disk_finding`]);
//! - [`KeysProbe`] (`keys`): the key manager runs and the newest signing key is not overdue for
//!   rotation ([`key_age_finding`]).
//!
//! Blocking work (SQLite, `statvfs`, the keys directory) runs on the blocking pool.
//!
//! [`HealthSupervisor`]: beepmyphone_actors::health::HealthSupervisor

use crate::store::WriteTransaction;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use beepmyphone_actors::clock::SharedClock;
use beepmyphone_actors::health::{Finding, Probe, Status};
use beepmyphone_actors::keys::{KeyManager, KeyRing};
use beepmyphone_actors::ports::{blocking, ProbeFuture};

use crate::config::HealthSettings;
use crate::redis::Redis;
use crate::store::Store;

const MIB: u64 = 1024 * 1024;

/// The store: writable, and a pooled connection is to be had.
pub struct StoreProbe(pub Store);

impl StoreProbe {
    fn check_now(store: &Store) -> Finding {
        let before = store.stats();
        let mut conn = match store.writer() {
            Ok(conn) => conn,
            Err(e) => return Finding::new(Status::Unhealthy, format!("no connection: {e}")),
        };
        // A write transaction takes the database's write lock (and fails on a read-only or
        // locked database); committing it empty writes nothing.
        if let Err(e) = conn.immediate_transaction(|_| Ok::<_, diesel::result::Error>(())) {
            return Finding::new(Status::Unhealthy, format!("not writable: {e}"));
        }
        let pool = format!(
            "pool {}/{} in use, {} waits, {} failures",
            before.in_use, before.max_size, before.waited, before.failed
        );
        if before.in_use >= before.max_size {
            Finding::new(
                Status::Degraded,
                format!("writable; every connection was in use ({pool})"),
            )
        } else {
            Finding::new(Status::Healthy, format!("writable; {pool}"))
        }
    }
}

impl Probe for StoreProbe {
    fn name(&self) -> &str {
        "store"
    }

    fn check(&self) -> ProbeFuture {
        let store = self.0.clone();
        blocking(move || Self::check_now(&store))
    }
}

/// Redis answers `PING` (its own deadline is `redis.timeout_ms`).
pub struct RedisProbe(pub Redis);

impl Probe for RedisProbe {
    fn name(&self) -> &str {
        "redis"
    }

    fn check(&self) -> ProbeFuture {
        let redis = self.0.clone();
        Box::pin(async move {
            match redis.ping().await {
                Ok(()) => Finding::new(Status::Healthy, "PING answered"),
                Err(e) => Finding::new(
                    Status::Unhealthy,
                    format!(
                        "{e}; rate limits are per process and device tokens are refused until it is back"
                    ),
                ),
            }
        })
    }
}

/// The disk component from the free and total bytes of the data directory's file system.
pub fn disk_finding(free: u64, total: u64, settings: &HealthSettings) -> Finding {
    // Whole percent, rounded down; an empty file system (total 0) counts as full.
    let percent = free.saturating_mul(100).checked_div(total).unwrap_or(0);
    let what = format!(
        "{} MiB free of {} MiB ({percent} %)",
        free / MIB,
        total / MIB
    );
    if percent < u64::from(settings.disk_unhealthy_percent)
        || free < settings.disk_unhealthy_mib.saturating_mul(MIB)
    {
        Finding::new(
            Status::Unhealthy,
            format!(
                "{what}: below {} % or {} MiB",
                settings.disk_unhealthy_percent, settings.disk_unhealthy_mib
            ),
        )
    } else if percent < u64::from(settings.disk_degraded_percent)
        || free < settings.disk_degraded_mib.saturating_mul(MIB)
    {
        Finding::new(
            Status::Degraded,
            format!(
                "{what}: below {} % or {} MiB",
                settings.disk_degraded_percent, settings.disk_degraded_mib
            ),
        )
    } else {
        Finding::new(Status::Healthy, what)
    }
}

/// Free and total bytes of the file system holding `dir` (for unprivileged users).
fn free_space(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a valid NUL-terminated string and `stat` points to writable memory of the
    // right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    let (frsize, avail, blocks) = (
        u64::from(stat.f_frsize),
        u64::from(stat.f_bavail),
        u64::from(stat.f_blocks),
    );
    Ok((avail.saturating_mul(frsize), blocks.saturating_mul(frsize)))
}

/// Free space of the data directory's file system.
pub struct DiskProbe {
    /// The data directory.
    pub dir: PathBuf,
    /// The thresholds.
    pub settings: HealthSettings,
}

impl Probe for DiskProbe {
    fn name(&self) -> &str {
        "disk"
    }

    fn check(&self) -> ProbeFuture {
        let (dir, settings) = (self.dir.clone(), self.settings.clone());
        blocking(move || match free_space(&dir) {
            Ok((free, total)) => disk_finding(free, total, &settings),
            Err(e) => Finding::new(
                Status::Unhealthy,
                format!("cannot read the free space of {}: {e}", dir.display()),
            ),
        })
    }
}

/// The key-age part of the keys component: the newest signing key (created at `newest_ms`, if
/// there is one) should have been replaced `rotate_every` after its creation; past that plus
/// `grace` the key manager is not rotating.
pub fn key_age_finding(
    newest_ms: Option<i64>,
    now_ms: i64,
    rotate_every: Duration,
    grace: Duration,
) -> Finding {
    let Some(created) = newest_ms else {
        return Finding::new(Status::Unhealthy, "no signing key in the ring");
    };
    let age_ms = now_ms.saturating_sub(created).max(0);
    let age_hours = age_ms / 3_600_000;
    let due = i64::try_from(rotate_every.as_millis()).unwrap_or(i64::MAX);
    let late = due.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
    if age_ms > late {
        Finding::new(
            Status::Degraded,
            format!(
                "the newest signing key is {age_hours} h old, but keys rotate every {} h \
                 (+{} h grace): the key manager is not rotating; see its log",
                rotate_every.as_secs() / 3_600,
                grace.as_secs() / 3_600
            ),
        )
    } else {
        Finding::new(
            Status::Healthy,
            format!(
                "the newest signing key is {age_hours} h old; keys rotate every {} h",
                rotate_every.as_secs() / 3_600
            ),
        )
    }
}

/// The key manager runs, the ring is readable, and its newest key is not overdue.
pub struct KeysProbe {
    /// The ring the key manager manages.
    pub ring: Arc<dyn KeyRing>,
    /// The key manager.
    pub manager: actix::Addr<KeyManager>,
    /// `auth.key_rotation_days`.
    pub rotate_every: Duration,
    /// `health.key_age_grace_hours`.
    pub grace: Duration,
    /// The injected clock.
    pub clock: SharedClock,
}

impl Probe for KeysProbe {
    fn name(&self) -> &str {
        "keys"
    }

    fn check(&self) -> ProbeFuture {
        if !self.manager.connected() {
            return Box::pin(std::future::ready(Finding::new(
                Status::Unhealthy,
                "the key manager is not running",
            )));
        }
        let (ring, now) = (self.ring.clone(), self.clock.now_ms());
        let (rotate_every, grace) = (self.rotate_every, self.grace);
        blocking(move || match ring.list() {
            Ok(keys) => key_age_finding(
                keys.iter().map(|k| k.created_ms).max(),
                now,
                rotate_every,
                grace,
            ),
            Err(e) => Finding::new(Status::Unhealthy, format!("cannot read the key ring: {e}")),
        })
    }
}

/// How long a value that did not open keeps the `encryption` component degraded.
pub const OPEN_FAILURE_RECENT: Duration = Duration::from_secs(3_600);

/// Encryption at rest (`encryption`): degraded for [`OPEN_FAILURE_RECENT`] after a sealed value
/// failed to open, and while the re-encryption job's last batch failed; healthy otherwise, saying
/// how many rows are left to re-encrypt.
pub struct EncryptionProbe {
    /// The data keys (their open failures).
    pub cipher: crate::crypto::Cipher,
    /// The re-encryption job's progress.
    pub reencrypt: Arc<beepmyphone_actors::reencrypt::Progress>,
}

/// The encryption finding from the open failures since start, the last of them if it is recent,
/// and the job.
pub fn encryption_finding(
    failures: u64,
    recent: Option<String>,
    job: &beepmyphone_actors::reencrypt::ProgressSnapshot,
) -> Finding {
    if let Some(last) = recent {
        return Finding::new(
            Status::Degraded,
            format!("{failures} sealed values did not open since start; the last within the hour: {last}"),
        );
    }
    if let Some(error) = &job.last_error {
        return Finding::new(Status::Degraded, format!("re-encryption failed: {error}"));
    }
    if job.running {
        Finding::new(
            Status::Healthy,
            format!(
                "re-encryption: {} rows left, {} moved",
                job.remaining, job.moved
            ),
        )
    } else {
        Finding::new(Status::Healthy, "every row is under the current data keys")
    }
}

impl Probe for EncryptionProbe {
    fn name(&self) -> &str {
        "encryption"
    }

    fn check(&self) -> ProbeFuture {
        let failures = self.cipher.failures();
        Box::pin(std::future::ready(encryption_finding(
            failures.count(),
            failures.recent(OPEN_FAILURE_RECENT),
            &self.reencrypt.snapshot(),
        )))
    }
}

/// The audit log (`audit`): unhealthy while it cannot be written (disk full, a lock): events
/// that must be audited are refused meanwhile, and `component_unhealthy` fires.
pub struct AuditProbe(pub Arc<beepmyphone_actors::audit::AuditStatus>);

/// The audit finding from the writer's status.
pub fn audit_finding(status: &beepmyphone_actors::audit::AuditSnapshot) -> Finding {
    match &status.last_error {
        Some(error) => Finding::new(
            Status::Unhealthy,
            format!(
                "{error}; {} events wait, and operations that must be audited are refused",
                status.pending
            ),
        ),
        None => Finding::new(
            Status::Healthy,
            format!(
                "{} records, {} covered by the last signed checkpoint",
                status.size, status.checkpoint_size
            ),
        ),
    }
}

impl Probe for AuditProbe {
    fn name(&self) -> &str {
        "audit"
    }

    fn check(&self) -> ProbeFuture {
        Box::pin(std::future::ready(audit_finding(&self.0.snapshot())))
    }
}

/// Below this many days to expiry, the `tls` component is degraded.
pub const TLS_DEGRADED_DAYS: i64 = 14;

/// The served TLS certificate (`tls`): degraded under [`TLS_DEGRADED_DAYS`] to expiry or after a
/// failed renewal or reload, unhealthy once it expired.
pub struct TlsProbe {
    /// The certificate manager's status.
    pub status: Arc<beepmyphone_actors::certs::TlsStatus>,
    /// The injected clock.
    pub clock: beepmyphone_actors::clock::SharedClock,
}

/// The TLS finding at `now_ms`.
pub fn tls_finding(status: &beepmyphone_actors::certs::TlsSnapshot, now_ms: i64) -> Finding {
    let cert = &status.certificate;
    let left_ms = cert.not_after_ms - now_ms;
    let days = left_ms.div_euclid(86_400_000);
    if left_ms <= 0 {
        return Finding::new(
            Status::Unhealthy,
            format!("the certificate {} expired", cert.fingerprint),
        );
    }
    let expiry = format!("the certificate expires in {days} days");
    match &status.last_error {
        Some(error) => Finding::new(
            Status::Degraded,
            format!("{expiry}; the last renewal or reload failed: {error}"),
        ),
        None if days < TLS_DEGRADED_DAYS => Finding::new(
            Status::Degraded,
            format!("{expiry} (renew it: beepmyphone cert renew, or new files in mode files)"),
        ),
        None => Finding::new(Status::Healthy, expiry),
    }
}

impl Probe for TlsProbe {
    fn name(&self) -> &str {
        "tls"
    }

    fn check(&self) -> ProbeFuture {
        Box::pin(std::future::ready(tls_finding(
            &self.status.snapshot(),
            self.clock.now_ms(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_degraded_near_expiry_and_unhealthy_after() {
        use beepmyphone_actors::certs::TlsSnapshot;
        use beepmyphone_actors::ports::CertificateInfo;
        const DAY: i64 = 86_400_000;
        let snapshot = |not_after_ms, last_error: Option<&str>| TlsSnapshot {
            certificate: CertificateInfo {
                mode: "files".into(),
                subject: "CN=relay".into(),
                issuer: "CN=ca".into(),
                hosts: vec!["relay".into()],
                not_before_ms: 0,
                not_after_ms,
                fingerprint: "sha256:00".into(),
                key: "ECDSA P-256".into(),
                pin: None,
                ca_not_after_ms: None,
            },
            checked_at_ms: 0,
            last_error: last_error.map(str::to_owned),
        };
        let now = 1_000 * DAY;
        let status = |not_after, error| tls_finding(&snapshot(not_after, error), now).status;
        assert_eq!(status(now + 30 * DAY, None), Status::Healthy);
        assert_eq!(status(now + 14 * DAY, None), Status::Healthy);
        assert_eq!(status(now + 14 * DAY - 1, None), Status::Degraded);
        assert_eq!(status(now + 60 * DAY, Some("disk full")), Status::Degraded);
        assert_eq!(status(now, None), Status::Unhealthy);
        assert!(tls_finding(&snapshot(now + 3 * DAY, None), now)
            .reason
            .contains("expires in 3 days"));
    }

    #[test]
    fn audit_is_unhealthy_while_it_cannot_write() {
        use beepmyphone_actors::audit::AuditSnapshot;
        let fine = AuditSnapshot {
            size: 12,
            checkpoint_size: 10,
            ..AuditSnapshot::default()
        };
        let finding = audit_finding(&fine);
        assert_eq!(finding.status, Status::Healthy);
        assert!(finding.reason.contains("12 records") && finding.reason.contains("10 covered"));
        let full = AuditSnapshot {
            pending: 3,
            failing_since_ms: Some(5),
            last_error: Some("database or disk is full".into()),
            ..fine
        };
        let finding = audit_finding(&full);
        assert_eq!(finding.status, Status::Unhealthy);
        assert!(finding.reason.contains("disk is full") && finding.reason.contains("3 events"));
    }

    #[test]
    fn encryption_is_degraded_by_open_failures_and_a_failed_batch() {
        use beepmyphone_actors::reencrypt::ProgressSnapshot;
        let idle = ProgressSnapshot::default();
        assert_eq!(encryption_finding(0, None, &idle).status, Status::Healthy);
        // Failures long ago no longer degrade it.
        assert_eq!(encryption_finding(3, None, &idle).status, Status::Healthy);
        let failed = encryption_finding(2, Some("notifications.title of row ntf_1".into()), &idle);
        assert_eq!(failed.status, Status::Degraded);
        assert!(failed.reason.contains("2 sealed values") && failed.reason.contains("ntf_1"));
        let running = ProgressSnapshot {
            running: true,
            remaining: 40,
            moved: 60,
            ..ProgressSnapshot::default()
        };
        let finding = encryption_finding(0, None, &running);
        assert_eq!(finding.status, Status::Healthy);
        assert_eq!(finding.reason, "re-encryption: 40 rows left, 60 moved");
        let broken = ProgressSnapshot {
            last_error: Some("database is locked".into()),
            ..running
        };
        assert_eq!(
            encryption_finding(0, None, &broken).status,
            Status::Degraded
        );
    }

    #[test]
    fn disk_thresholds_by_percent_and_by_size() {
        let s = HealthSettings::default();
        let gib = 1024 * MIB;
        let status = |free, total| disk_finding(free, total, &s).status;
        assert_eq!(status(50 * gib, 100 * gib), Status::Healthy);
        // Below 10 % of a large disk, or below 1 GiB of any disk: degraded.
        assert_eq!(status(9 * gib, 100 * gib), Status::Degraded);
        assert_eq!(status(900 * MIB, 2 * gib), Status::Degraded);
        // Below 1 % or 100 MiB: unhealthy.
        assert_eq!(status(5 * gib, 1000 * gib), Status::Unhealthy);
        assert_eq!(status(99 * MIB, 200 * MIB), Status::Unhealthy);
        assert_eq!(status(0, 0), Status::Unhealthy);
        assert_eq!(
            disk_finding(9 * gib, 100 * gib, &s).reason,
            "9216 MiB free of 102400 MiB (9 %): below 10 % or 1024 MiB"
        );
    }

    #[test]
    fn key_age_is_degraded_past_rotation_plus_grace() {
        let day = Duration::from_secs(24 * 3_600);
        let (every, grace) = (30 * day, day);
        let now = 100 * 86_400_000;
        let at = |age_days: i64| {
            key_age_finding(Some(now - age_days * 86_400_000), now, every, grace).status
        };
        assert_eq!(at(0), Status::Healthy);
        assert_eq!(at(31), Status::Healthy);
        assert_eq!(at(32), Status::Degraded);
        assert_eq!(
            key_age_finding(None, now, every, grace).status,
            Status::Unhealthy
        );
        assert!(
            key_age_finding(Some(now - 40 * 86_400_000), now, every, grace)
                .reason
                .contains("960 h old, but keys rotate every 720 h (+24 h grace)")
        );
    }

    #[test]
    fn the_data_directory_has_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = free_space(dir.path()).unwrap();
        assert!(total > 0 && free <= total, "{free} {total}");
        assert!(free_space(&dir.path().join("missing")).is_err());
    }
}
