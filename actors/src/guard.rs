//! Panic containment for supervised actors.
//!
//! actix's `Supervisor` restarts an actor that stops, but a panic inside a handler would unwind
//! through the arbiter and take the mailbox with it. Handlers of supervised actors run their body
//! through [`guarded`]: a panic is caught, logged, counted, and the actor is stopped so that its
//! supervisor restarts it (the address stays valid; `restarting` reloads state).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use actix::ActorContext;

/// Restarts counted across all supervised actors, readable by health checks and metrics.
pub static RESTARTS: AtomicU64 = AtomicU64::new(0);

/// Runs `body`; if it panics, stops the actor (its supervisor restarts it) and returns `None`.
pub fn guarded<C, R>(
    actor: &str,
    log: &slog::Logger,
    ctx: &mut C,
    body: impl FnOnce(&mut C) -> R,
) -> Option<R>
where
    C: ActorContext,
{
    match catch_unwind(AssertUnwindSafe(|| body(ctx))) {
        Ok(value) => Some(value),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            RESTARTS.fetch_add(1, Ordering::Relaxed);
            slog::error!(log, "actor panicked; restarting it"; "actor" => actor, "reason" => reason);
            ctx.stop();
            None
        }
    }
}
