//! Where alerts go, as a port: the [`crate::alerts::AlertManager`] hands every [`AlertEvent`] to
//! each [`AlertChannel`]. The log channel is in [`crate::alerts`]; the webhook and the relay's own
//! critical notification are implemented by the binary (`src/monitoring/alerts.rs`).

use serde::Serialize;

/// Whether an alert started (or still) holds, or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds (first time, or a repeat after the repeat interval).
    Firing,
    /// The condition no longer holds.
    Resolved,
}

impl AlertState {
    /// `firing` or `resolved`, as in the webhook payload.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// One alert transition, as every channel receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// The rule's stable name (`http_p99_latency`, `http_error_rate`, `queue_lag`,
    /// `memory_growth`, `component_unhealthy`).
    pub alert: &'static str,
    /// Firing or resolved.
    pub state: AlertState,
    /// One line for a human: what was seen against what limit.
    pub summary: String,
    /// The measured value, in the rule's unit (seconds, share, deliveries, bytes, components).
    pub value: f64,
    /// The rule's threshold, in the same unit.
    pub threshold: f64,
    /// When it was decided, epoch milliseconds.
    #[serde(skip)]
    pub at_ms: i64,
    /// A repeat of an alert already firing (not its first notice).
    #[serde(skip)]
    pub repeat: bool,
}

/// A destination for alerts. `send` must return at once: a channel that talks to the network
/// spawns that work (the manager's mailbox never waits on a slow webhook).
pub trait AlertChannel: Send + Sync + 'static {
    /// The channel's name, for logs.
    fn name(&self) -> &str;
    /// Delivers (or starts delivering) one event.
    fn send(&self, event: &AlertEvent);
}
