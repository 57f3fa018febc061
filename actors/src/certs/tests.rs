//! The manager against an in-memory provider: renewal on the daily check of a manual clock,
//! reloads of changed files, failures that keep the certificate in force.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::*;
use crate::clock::ManualClock;

const DAY_MS: i64 = 86_400_000;
const START: i64 = 1_700_000_000_000;

/// A provider whose "disk" is a field: `renew` issues a certificate valid for 90 days from now,
/// `load` reads what `put_on_disk` left (or fails as told).
struct Provider {
    disk: Mutex<Result<CertificateInfo, TlsError>>,
    stamp: AtomicU64,
    can_issue: bool,
    renewals: AtomicU64,
}

fn cert(serial: u64, not_after_ms: i64) -> CertificateInfo {
    CertificateInfo {
        mode: "self-signed".into(),
        subject: "CN=localhost".into(),
        issuer: "CN=localhost".into(),
        hosts: vec!["localhost".into()],
        not_before_ms: START,
        not_after_ms,
        fingerprint: format!("sha256:{serial:064x}"),
        key: "ECDSA P-256".into(),
        pin: None,
        ca_not_after_ms: None,
    }
}

impl Provider {
    fn new(can_issue: bool) -> Arc<Self> {
        Arc::new(Self {
            disk: Mutex::new(Ok(cert(1, START + 40 * DAY_MS))),
            stamp: AtomicU64::new(1),
            can_issue,
            renewals: AtomicU64::new(0),
        })
    }

    fn put_on_disk(&self, what: Result<CertificateInfo, TlsError>) {
        *self.disk.lock().unwrap() = what;
        self.stamp.fetch_add(1, Ordering::SeqCst);
    }
}

impl CertificateProvider for Provider {
    fn load(&self, _now_ms: i64) -> Result<CertificateInfo, TlsError> {
        self.disk.lock().unwrap().clone()
    }

    fn renew(&self, now_ms: i64) -> Result<CertificateInfo, TlsError> {
        if !self.can_issue {
            return Err(TlsError::CannotIssue);
        }
        let serial = 100 + self.renewals.fetch_add(1, Ordering::SeqCst);
        let issued = cert(serial, now_ms + 90 * DAY_MS);
        *self.disk.lock().unwrap() = Ok(issued.clone());
        self.stamp.fetch_add(1, Ordering::SeqCst);
        Ok(issued)
    }

    fn can_issue(&self) -> bool {
        self.can_issue
    }

    fn stamp(&self) -> u64 {
        self.stamp.load(Ordering::SeqCst)
    }
}

struct Relay {
    clock: ManualClock,
    provider: Arc<Provider>,
    status: Arc<TlsStatus>,
    metrics: Arc<Metrics>,
    manager: Addr<CertificateManager>,
}

fn start(can_issue: bool) -> Relay {
    let clock = ManualClock::new(START);
    let provider = Provider::new(can_issue);
    let status = TlsStatus::new(provider.load(START).unwrap(), START);
    let metrics = Arc::new(Metrics::new("test", "test"));
    let manager = CertificateManager::new(
        provider.clone(),
        CertificatesConfig::default(),
        status.clone(),
        Arc::new(clock.clone()),
        metrics.clone(),
        slog::Logger::root(slog::Discard, slog::o!()),
    )
    .start_supervised();
    Relay {
        clock,
        provider,
        status,
        metrics,
        manager,
    }
}

impl Relay {
    async fn advance(&self, by: Duration) {
        // Make sure the manager has subscribed to the clock before it moves.
        self.manager.send(GetCertificate).await.unwrap();
        self.clock.advance(by);
        settle().await;
    }

    fn serving(&self) -> String {
        self.status.snapshot().certificate.fingerprint
    }

    fn changes(&self, reason: &str) -> u64 {
        self.metrics
            .tls_certificate_changes
            .with_label_values(&[reason])
            .get()
    }
}

/// Lets the actor and the blocking pool finish what the last tick started.
async fn settle() {
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[actix_rt::test]
async fn renews_on_the_daily_check_once_inside_the_window() {
    let relay = start(true);
    assert_eq!(relay.serving(), format!("sha256:{:064x}", 1));
    assert_eq!(
        relay.metrics.tls_certificate_expiry.get(),
        (START + 40 * DAY_MS) / 1_000
    );
    // 40 days left, then 39 … 31: outside the 30-day window, nothing happens.
    for _ in 0..9 {
        relay.advance(Duration::from_millis(DAY_MS as u64)).await;
    }
    assert_eq!(relay.provider.renewals.load(Ordering::SeqCst), 0);
    // 30 days left: renewed, served, counted.
    relay.advance(Duration::from_millis(DAY_MS as u64)).await;
    assert_eq!(relay.provider.renewals.load(Ordering::SeqCst), 1);
    assert_eq!(relay.serving(), format!("sha256:{:064x}", 100));
    assert_eq!(relay.changes("renewed"), 1);
    let snapshot = relay.status.snapshot();
    assert_eq!(snapshot.certificate.not_after_ms, START + 100 * DAY_MS);
    assert_eq!(snapshot.checked_at_ms, START + 10 * DAY_MS);
    assert_eq!(
        relay.metrics.tls_certificate_expiry.get(),
        (START + 100 * DAY_MS) / 1_000
    );
    // Its own write is not taken for a change of the files.
    relay.advance(Duration::from_secs(10)).await;
    assert_eq!(relay.changes("reloaded"), 0);
}

#[actix_rt::test]
async fn the_check_runs_on_the_first_tick_then_once_a_day() {
    let relay = start(true);
    // The first tick checks: 40 days left, nothing due.
    relay.advance(Duration::from_secs(10)).await;
    assert_eq!(relay.status.snapshot().checked_at_ms, START + 10_000);
    relay.provider.put_on_disk(Ok(cert(2, START + 5 * DAY_MS)));
    relay.advance(Duration::from_secs(10)).await;
    assert_eq!(relay.serving(), format!("sha256:{:064x}", 2));
    // Due (5 days left), but the day since the last check has not passed.
    relay.advance(Duration::from_secs(3_600)).await;
    assert_eq!(relay.provider.renewals.load(Ordering::SeqCst), 0);
    relay.advance(Duration::from_millis(DAY_MS as u64)).await;
    assert_eq!(relay.provider.renewals.load(Ordering::SeqCst), 1);
}

#[actix_rt::test]
async fn changed_files_are_loaded_and_broken_ones_leave_the_certificate_in_force() {
    let relay = start(false);
    relay.provider.put_on_disk(Ok(cert(7, START + 60 * DAY_MS)));
    relay.advance(Duration::from_secs(10)).await;
    assert_eq!(relay.serving(), format!("sha256:{:064x}", 7));
    assert_eq!(relay.changes("reloaded"), 1);

    relay.provider.put_on_disk(Err(TlsError::Invalid(
        "the private key does not match the certificate".into(),
    )));
    relay.advance(Duration::from_secs(10)).await;
    let snapshot = relay.status.snapshot();
    assert_eq!(
        snapshot.certificate.fingerprint,
        format!("sha256:{:064x}", 7)
    );
    assert_eq!(
        snapshot.last_error.as_deref(),
        Some("the private key does not match the certificate")
    );
    assert_eq!(relay.metrics.tls_failures.get(), 1);
    // The same broken files are not tried again on every tick …
    relay.advance(Duration::from_secs(10)).await;
    assert_eq!(relay.metrics.tls_failures.get(), 1);
    // … and fixed ones clear the error.
    relay.provider.put_on_disk(Ok(cert(8, START + 60 * DAY_MS)));
    relay.advance(Duration::from_secs(10)).await;
    assert_eq!(relay.serving(), format!("sha256:{:064x}", 8));
    assert_eq!(relay.status.snapshot().last_error, None);
}

#[actix_rt::test]
async fn renew_on_request_and_a_provider_that_cannot_issue() {
    let relay = start(true);
    let issued = relay
        .manager
        .send(Renew {
            requested_by: "admin:alice".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(issued.fingerprint, relay.serving());
    assert_eq!(relay.changes("renewed"), 1);

    let files = start(false);
    let refused = files
        .manager
        .send(Renew {
            requested_by: "cli".into(),
        })
        .await
        .unwrap();
    assert_eq!(refused, Err(TlsError::CannotIssue));
    assert_eq!(files.serving(), format!("sha256:{:064x}", 1));
    // A files provider due for renewal is only reported, never asked to renew by the schedule,
    // and a refused request is no failure of the certificate in force.
    assert_eq!(files.metrics.tls_failures.get(), 0);
    assert_eq!(files.status.snapshot().last_error, None);
    for _ in 0..11 {
        files.advance(Duration::from_millis(DAY_MS as u64)).await;
    }
    assert_eq!(files.changes("renewed"), 0);
    assert_eq!(files.metrics.tls_failures.get(), 0);
}
