//! BeepMyPhone: a self-hosted notification relay.
//!
//! Sources publish notifications over HTTP; paired devices hold a WebSocket and receive them in
//! priority order, acknowledge them, and get what they missed when they reconnect. This crate holds
//! everything around the actor graph of `beepmyphone-actors`:
//!
//! - [`domain`]: small shared types (CIDR, rate-limit rules, log levels, token scopes), below
//!   every other module;
//! - [`config`]: settings from `config.toml`, the environment and flags;
//! - [`crypto`]: secrets, their hashes, secret files, and encryption at rest (the envelope, the
//!   algorithms, the data-key ring), below the store and security;
//! - [`store`]: diesel on SQLite, the pool, the queue's group-committed writes, and the sealed
//!   columns;
//! - [`security`]: device access tokens, passwords, sessions, rate limits, revocation, the data
//!   keys' upkeep;
//! - [`api`]: the HTTP API (routes, auth extractor, request middleware, problem documents);
//! - [`ws`]: the per-connection device socket actor;
//! - [`audit`]: the tamper-evident audit log (records, Merkle tree, signed checkpoints, archives,
//!   verification) and the handle handlers record through;
//! - [`monitoring`]: the memory sampler and the alert channels (webhook, the relay itself);
//! - [`startup`]: [`startup::Application`], which wires it all together;
//! - [`monitoring`]: health probes (and, later, metrics);
//! - [`cli`]: the `beepmyphone` command line (server, local admin commands, client commands);
//! - [`capture`]: `beepmyphone capture`, which forwards a Linux desktop's notifications (seen on
//!   the session D-Bus) to the relay through a disk queue;
//! - [`bench`]: `beepmyphone bench`, the load generator.

pub mod api;
pub mod audit;
pub mod bench;
pub mod capture;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod dashboard;
pub mod domain;
pub mod error;
pub mod logging;
pub mod monitoring;
pub mod redis;
pub mod request_id;
pub mod security;
pub mod startup;
pub mod state;
pub mod store;
pub mod tls;
pub mod ws;

/// The git commit this binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = match option_env!("BEEP_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};
