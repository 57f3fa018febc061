//! Health checks of external dependencies as a port: [`Probe`], answered with a [`Status`]. The
//! [`crate::supervisor::HealthSupervisor`] runs them; the binary implements them (store, Redis).

use serde::Serialize;

/// A component's state, as `GET /health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working.
    Healthy,
    /// Working, with reduced capacity or a fallback.
    Degraded,
    /// Not working.
    Unhealthy,
}

/// An external dependency's health check; runs on a blocking thread.
pub trait Probe: Send + Sync + 'static {
    /// The component's name.
    fn name(&self) -> &str;
    /// Checks it now.
    fn check(&self) -> (Status, String);
}
