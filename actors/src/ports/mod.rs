//! Ports: everything the actors need from the outside world, as traits the binary (or a test)
//! implements. Implementations stay with their owners: the clocks in [`crate::clock`], the store
//! in `src/store/`, the key ring in `src/security/keys.rs`, the probes beside what they probe.
//!
//! - [`QueueStore`] ([`store`]): the notification queue's durable store;
//! - [`Clock`] ([`clock`]): "now" and periodic ticks;
//! - [`ClusterPort`] ([`cluster`]): the other relays sharing the store;
//! - [`KeyRing`] ([`keys`]): the token-signing keys on disk and the published snapshot;
//! - [`DataKeyRing`] and [`Reencrypt`] ([`datakeys`]): the data-encryption keys' upkeep and the
//!   job that moves rows to the current keys;
//! - [`Probe`] ([`health`]): a health check of an external dependency;
//! - [`MemorySampler`] ([`memory`]): the process's memory figures;
//! - [`AlertChannel`] ([`alerts`]): a destination for alerts;
//! - [`AuditLog`] and [`CheckpointSink`] ([`audit`]): the audit log's store and the copy of its
//!   checkpoints outside the relay;
//! - [`CertificateProvider`] ([`tls`]): the TLS certificates the relay serves.
//!
//! Ports depend only on [`crate::model`], never on an actor, so every actor can use them.

pub mod alerts;
pub mod audit;
pub mod clock;
pub mod cluster;
pub mod datakeys;
pub mod health;
pub mod keys;
pub mod memory;
pub mod store;
pub mod tls;

pub use alerts::{AlertChannel, AlertEvent, AlertState};
pub use audit::{
    Action, ActorKind, AuditError, AuditEvent, AuditLog, CheckpointInfo, CheckpointSink, Outcome,
};
pub use clock::{Clock, SharedClock, Ticks};
pub use cluster::{ClusterFuture, ClusterPort, Deliveries};
pub use datakeys::{DataKeyInfo, DataKeyReport, DataKeyRing, Reencrypt, ReencryptBatch};
pub use health::{blocking, Finding, Probe, ProbeFuture, Status};
pub use keys::{KeyInfo, KeyRing, KeyRingError, KeyState, KeyStatus};
pub use memory::{MemorySample, MemorySampler};
pub use store::{
    CommitBatch, DeliveryChange, InsertOp, InsertOutcome, PendingDelivery, QueueSnapshot,
    QueueStore, StoreError,
};
pub use tls::{CertificateInfo, CertificateProvider, TlsError};
