//! The certificate manager: keeps the relay's TLS certificate valid and in service without a
//! restart.
//!
//! Messages first: [`Renew`] (issue a new certificate now), [`GetCertificate`]. Then the
//! [`CertificateManager`] actor and the [`TlsStatus`] that health, metrics and the API read.
//!
//! On every [`CertificatesConfig::watch_every`] of the injected clock it compares the provider's
//! [`CertificateProvider::stamp`] with the last one and loads the files again when they changed
//! (an operator's new files, or `beepmyphone cert renew` run beside the relay). Once a
//! [`CertificatesConfig::check_every`] (a day) it renews what expires within
//! [`CertificatesConfig::renew_before`]. Either way the provider serves the new certificate to
//! new connections; open connections keep theirs. A failed load or renewal keeps the certificate
//! in force, is logged, counted and shown in the status; a renewal is tried again on the next
//! check, a load when the files change again. The first check runs on the first tick after start,
//! so a certificate from files that is already due is reported at once. A provider that cannot
//! issue (mode `files`) is never asked to: a due certificate is logged as a warning each day,
//! and health degrades as its end nears.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::ports::audit::{Action, AuditEvent, Outcome};
use crate::ports::tls::{CertificateInfo, CertificateProvider, TlsError};

/// Issues a new certificate now and serves it; answers with it. The caller records it in the
/// audit log (the manager records only what it does on its own: scheduled renewals, reloads).
#[derive(Message, Debug)]
#[rtype(result = "Result<CertificateInfo, TlsError>")]
pub struct Renew {
    /// Who asked (for the audit record and the log), e.g. `admin:alice`.
    pub requested_by: String,
}

/// The certificate in force.
#[derive(Message, Debug)]
#[rtype(result = "TlsSnapshot")]
pub struct GetCertificate;

/// Who renews on the daily check.
const SCHEDULE: &str = "schedule";

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct CertificatesConfig {
    /// Renew what expires within this.
    pub renew_before: Duration,
    /// The renewal check runs this often.
    pub check_every: Duration,
    /// The files are compared with the last stamp this often.
    pub watch_every: Duration,
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        Self {
            renew_before: Duration::from_secs(30 * 86_400),
            check_every: Duration::from_secs(86_400),
            watch_every: Duration::from_secs(10),
        }
    }
}

/// What health, metrics and the API read: the certificate in force and the last failure.
#[derive(Debug)]
pub struct TlsStatus {
    inner: Mutex<TlsSnapshot>,
}

/// A copy of [`TlsStatus`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsSnapshot {
    /// The certificate in force.
    pub certificate: CertificateInfo,
    /// When the last renewal check ran (epoch ms).
    pub checked_at_ms: i64,
    /// The last failed load or renewal, until one succeeds.
    pub last_error: Option<String>,
}

impl TlsStatus {
    /// The status of a certificate just put into service.
    pub fn new(certificate: CertificateInfo, now_ms: i64) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(TlsSnapshot {
                certificate,
                checked_at_ms: now_ms,
                last_error: None,
            }),
        })
    }

    /// The status now.
    pub fn snapshot(&self) -> TlsSnapshot {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TlsSnapshot> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why the manager put a certificate into service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Renewed,
    Reloaded,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Self::Renewed => "renewed",
            Self::Reloaded => "reloaded",
        }
    }
}

/// The actor.
pub struct CertificateManager {
    provider: Arc<dyn CertificateProvider>,
    config: CertificatesConfig,
    clock: SharedClock,
    status: Arc<TlsStatus>,
    metrics: Arc<Metrics>,
    audit: Option<Recipient<crate::audit::Record>>,
    log: slog::Logger,
    /// The provider's stamp when its files were last loaded or written.
    stamp: u64,
    /// When the next renewal check is due (epoch ms; the first tick after start).
    next_check_ms: i64,
    /// A load or renewal is on the blocking pool.
    busy: bool,
}

impl CertificateManager {
    /// A manager for the certificate `status` holds (already loaded and served by `provider`).
    pub fn new(
        provider: Arc<dyn CertificateProvider>,
        config: CertificatesConfig,
        status: Arc<TlsStatus>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        log: slog::Logger,
    ) -> Self {
        // Taken after the certificate in `status` was read: see `with_stamp`.
        let stamp = provider.stamp();
        metrics
            .tls_certificate_expiry
            .set(status.snapshot().certificate.not_after_ms / 1_000);
        Self {
            provider,
            config,
            clock,
            status,
            metrics,
            audit: None,
            log,
            stamp,
            next_check_ms: i64::MIN,
            busy: false,
        }
    }

    /// The provider's stamp from before the certificate in `status` was read (so that files
    /// changed since are loaded on the first tick).
    pub fn with_stamp(mut self, stamp: u64) -> Self {
        self.stamp = stamp;
        self
    }

    /// Records renewals and reloads into `audit`.
    pub fn with_audit(mut self, audit: Recipient<crate::audit::Record>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Starts it under an actix `Supervisor` (restarted with the same address if it stops).
    pub fn start_supervised(self) -> Addr<Self> {
        actix::Supervisor::start(move |_| self)
    }

    /// Whether the certificate in force expires within the renewal window at `now_ms`.
    fn due(&self, now_ms: i64) -> bool {
        let window = i64::try_from(self.config.renew_before.as_millis()).unwrap_or(i64::MAX);
        self.status
            .snapshot()
            .certificate
            .not_after_ms
            .saturating_sub(now_ms)
            <= window
    }

    /// Runs `work` (a load or a renewal) on the blocking pool and applies its outcome.
    fn run(
        &mut self,
        change: Change,
        requested_by: String,
    ) -> impl ActorFuture<Self, Output = Result<CertificateInfo, TlsError>> {
        self.busy = true;
        let provider = self.provider.clone();
        let now = self.clock.now_ms();
        let work = tokio::task::spawn_blocking(move || {
            // The stamp of what a load reads is taken before it reads: files that change while
            // it runs (a cert copied before its key) change the stamp again, so they are loaded
            // again on the next tick. A renewal's stamp is that of the files it wrote.
            match change {
                Change::Renewed => {
                    let result = provider.renew(now);
                    (result, provider.stamp())
                }
                Change::Reloaded => {
                    let stamp = provider.stamp();
                    (provider.load(now), stamp)
                }
            }
        });
        async move {
            work.await
                .unwrap_or_else(|e| (Err(TlsError::Unavailable(e.to_string())), 0))
        }
        .into_actor(self)
        .map(move |(result, stamp), act, _| {
            act.busy = false;
            act.apply(change, &requested_by, &result, stamp);
            result
        })
    }

    fn apply(
        &mut self,
        change: Change,
        requested_by: &str,
        result: &Result<CertificateInfo, TlsError>,
        stamp: u64,
    ) {
        if stamp != 0 {
            self.stamp = stamp;
        }
        let mut status = self.status.lock();
        match result {
            Ok(info) => {
                slog::info!(self.log, "TLS certificate in service";
                    "why" => change.as_str(), "requested_by" => requested_by,
                    "fingerprint" => &info.fingerprint, "not_after_ms" => info.not_after_ms);
                self.metrics
                    .tls_certificate_expiry
                    .set(info.not_after_ms / 1_000);
                self.metrics
                    .tls_certificate_changes
                    .with_label_values(&[change.as_str()])
                    .inc();
                let on_its_own = change == Change::Reloaded || requested_by == SCHEDULE;
                if let Some(audit) = self.audit.as_ref().filter(|_| on_its_own) {
                    let action = match change {
                        Change::Renewed => Action::CertificateRenewed,
                        Change::Reloaded => Action::CertificateReloaded,
                    };
                    audit.do_send(crate::audit::Record {
                        event: AuditEvent::system(action, Outcome::Ok)
                            .on(info.fingerprint.clone())
                            .with_details(serde_json::json!({
                                "by": requested_by,
                                "mode": info.mode,
                                "hosts": info.hosts,
                                "notAfterMs": info.not_after_ms,
                            })),
                    });
                }
                status.certificate = info.clone();
                status.last_error = None;
            }
            Err(e) => {
                slog::error!(self.log, "TLS certificate not changed; the one in force stays";
                    "why" => change.as_str(), "error" => %e);
                self.metrics.tls_failures.inc();
                status.last_error = Some(e.to_string());
            }
        }
    }

    /// One tick: reload changed files, or renew what is due once a check period has passed.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let now = self.clock.now_ms();
        if self.provider.stamp() != self.stamp {
            ctx.spawn(
                self.run(Change::Reloaded, "files changed".into())
                    .map(|_, _, _| ()),
            );
            return;
        }
        if now < self.next_check_ms {
            return;
        }
        let check_every = i64::try_from(self.config.check_every.as_millis()).unwrap_or(i64::MAX);
        self.next_check_ms = now.saturating_add(check_every);
        self.status.lock().checked_at_ms = now;
        if !self.due(now) {
            return;
        }
        if self.provider.can_issue() {
            ctx.spawn(self.run(Change::Renewed, SCHEDULE.into()).map(|_, _, _| ()));
        } else {
            let cert = self.status.snapshot().certificate;
            slog::warn!(self.log, "the TLS certificate expires soon: replace its files (the relay reloads them)";
                "fingerprint" => &cert.fingerprint, "not_after_ms" => cert.not_after_ms,
                "days_left" => (cert.not_after_ms - now).div_euclid(86_400_000));
        }
    }
}

impl Actor for CertificateManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.busy = false;
        ctx.add_stream(self.clock.interval(self.config.watch_every));
    }
}

impl Supervised for CertificateManager {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        self.metrics
            .actor_restarts
            .with_label_values(&["tls"])
            .inc();
        slog::warn!(self.log, "certificate manager restarting");
    }
}

impl StreamHandler<()> for CertificateManager {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        let log = self.log.clone();
        crate::guard::guarded("tls", &log, ctx, |ctx| self.tick(ctx));
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Renew> for CertificateManager {
    type Result = ResponseActFuture<Self, Result<CertificateInfo, TlsError>>;

    fn handle(&mut self, msg: Renew, _ctx: &mut Self::Context) -> Self::Result {
        if !self.provider.can_issue() {
            return Box::pin(fut::ready(Err(TlsError::CannotIssue)));
        }
        if self.busy {
            return Box::pin(fut::ready(Err(TlsError::Unavailable(
                "a renewal or reload is under way; try again in a moment".into(),
            ))));
        }
        Box::pin(self.run(Change::Renewed, msg.requested_by))
    }
}

impl Handler<GetCertificate> for CertificateManager {
    type Result = MessageResult<GetCertificate>;

    fn handle(&mut self, _msg: GetCertificate, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.status.snapshot())
    }
}

#[cfg(test)]
mod tests;
