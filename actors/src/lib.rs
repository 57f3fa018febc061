//! The BeepMyPhone actor graph.
//!
//! Every long-lived component of the relay is an actix actor exchanging typed messages:
//!
//! - [`registry::SessionRegistry`]: which device has which live sockets;
//! - [`queue::NotificationQueue`]: per-device priority heaps, in-flight deliveries, ack timeouts and
//!   the group-committed durable store behind them;
//! - [`batcher::Batcher`]: coalesces what goes to one device within a short window into one frame;
//! - [`health::HealthSupervisor`]: probes every component on its own, logs transitions, sets the
//!   component gauges and answers health checks from its cache;
//! - [`keys::KeyManager`]: the ring of token-signing keys and the data-encryption keys: rotation,
//!   retirement, the published snapshots;
//! - [`reencrypt::Reencryptor`]: moves rows under old data keys (or from before encryption) to
//!   the current keys, in paced batches;
//! - [`memory::MemoryMonitor`]: samples the process's memory and flags sustained growth;
//! - [`alerts::AlertManager`]: evaluates the alert rules and sends transitions to its channels;
//! - [`audit::AuditWriter`]: appends security-relevant events to the tamper-evident audit log and
//!   signs its checkpoints;
//! - [`certs::CertificateManager`]: keeps the TLS certificate valid (renewal, reload of changed
//!   files) and in service without a restart.
//!
//! Beside them:
//!
//! - [`history::MetricsHistory`]: samples throughput, latency, queue depth and sockets for the
//!   dashboard's charts (the last hour, in memory);
//!
//! - [`feed`]: the activity feed (commits, deliveries, acks, presence, pairings) for live views;
//! - [`socket`]: the messages a device socket accepts (the socket actor itself is in the binary);
//! - [`ports`]: every trait the actors need from outside ([`ports::QueueStore`], [`ports::Clock`],
//!   [`ports::KeyRing`], [`ports::Probe`], [`ports::MemorySampler`], [`ports::AlertChannel`], [`ports::AuditLog`],
//!   [`ports::CertificateProvider`]);
//!   [`clock`] holds the two clocks that implement one;
//! - [`model`]: ids, priorities, notifications and device policies; [`guard`]: panic containment;
//! - [`trace`]: the W3C trace id a notification carries from its publish request to its ack.
//!
//! The queue is a folder: [`queue`] (the actor and its messages), [`queue::device`] (the
//! per-device heap and in-flight window, [`queue::DeviceQueue`]) and the group commit.
//!
//! Actors depend on ports and on `Recipient<M>`s, never on each other's concrete types; the only
//! import circle is the runtime ring queue → batcher → registry → queue.
//! [`supervisor::start_graph`] builds the whole graph once at start-up, each actor supervised.

pub mod alerts;
pub mod audit;
pub mod batcher;
pub mod certs;
pub mod clock;
pub mod feed;
pub mod guard;
pub mod health;
pub mod history;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod queue;
pub mod reencrypt;
pub mod registry;
pub mod socket;
pub mod supervisor;
pub mod trace;

pub use clock::{Clock, ManualClock, SystemClock};
pub use model::{DeviceId, NotificationId, Priority};

/// Mailbox capacity of the hot actors: `send` waits beyond it (backpressure on publishers);
/// `do_send` from other actors is not bounded by it.
pub const MAILBOX_CAPACITY: usize = 1 << 16;
