//! Health checks of external dependencies as a port: [`Probe`], answered with a [`Finding`]. The
//! [`crate::health::HealthSupervisor`] runs them (each under its timeout); the binary implements
//! them (store, Redis, disk, keys). A probe that blocks runs its work through [`blocking`].

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;

/// A component's state, as `GET /health` reports it; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working.
    Healthy,
    /// Working, with reduced capacity or a fallback.
    Degraded,
    /// Not working.
    Unhealthy,
}

impl Status {
    /// The name on the wire and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// What one probe saw: the state and why, for operators (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The state.
    pub status: Status,
    /// Why, in a few words.
    pub reason: String,
}

impl Finding {
    /// A finding of `status` because of `reason`.
    pub fn new(status: Status, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// The answer of a probe, awaited by the health supervisor under its timeout.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Finding> + Send>>;

/// An external dependency's health check.
pub trait Probe: Send + Sync + 'static {
    /// The component's name (stable: it labels `beepmyphone_component_healthy`).
    fn name(&self) -> &str;
    /// Checks it now. Must not block the calling thread: blocking work goes through [`blocking`].
    fn check(&self) -> ProbeFuture;
}

/// Runs a blocking check on the blocking pool; a check that panicked is unhealthy.
pub fn blocking(check: impl FnOnce() -> Finding + Send + 'static) -> ProbeFuture {
    Box::pin(async move {
        tokio::task::spawn_blocking(check)
            .await
            .unwrap_or_else(|e| Finding::new(Status::Unhealthy, format!("probe failed: {e}")))
    })
}
