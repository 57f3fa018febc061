//! The cleanup task: every `sessions.cleanup_interval_seconds` of the injected clock (and once at
//! start) it deletes ended admin sessions and deny-list entries whose token has expired from SQLite.
//! Redis needs no sweep: every key there has a TTL.

use std::time::Duration;

use futures_util::StreamExt;

use beepmyphone_actors::clock::SharedClock;

use crate::security::revocation::Revocations;
use crate::security::sessions::SessionManager;

/// One sweep; logs what it removed and any failure (the next tick tries again).
pub async fn sweep(sessions: &SessionManager, revocations: &Revocations, log: &slog::Logger) {
    let ended = sessions.purge_expired().await;
    let expired = revocations.purge_expired().await;
    match (ended, expired) {
        (Ok(0), Ok(0)) => {}
        (Ok(sessions), Ok(tokens)) => {
            slog::info!(log, "cleanup"; "ended_sessions" => sessions, "expired_revocations" => tokens)
        }
        (sessions, tokens) => {
            if let Err(e) = sessions {
                slog::warn!(log, "cleanup of ended sessions failed"; "error" => %e);
            }
            if let Err(e) = tokens {
                slog::warn!(log, "cleanup of expired revocations failed"; "error" => %e);
            }
        }
    }
}

/// Starts the cleanup task on the current arbiter; abort the handle to stop it.
pub fn spawn(
    sessions: SessionManager,
    revocations: Revocations,
    clock: SharedClock,
    every: Duration,
    log: slog::Logger,
) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        let mut ticks = clock.interval(every);
        sweep(&sessions, &revocations, &log).await;
        while ticks.next().await.is_some() {
            sweep(&sessions, &revocations, &log).await;
        }
    })
}
