//! Monitoring: what the relay says about itself.
//!
//! - [`metrics`]: the Prometheus scrape and the optional listener that serves it without a token;
//! - [`health`]: the binary's health probes (store, Redis, disk, keys) that the actors' health
//!   supervisor runs;
//! - [`memory`] and [`alerts`]: the memory sampler and the alert channels (webhook, relay) the
//!   binary provides to the actors, each with its settings and its start-up helper;
//! - [`otlp`]: the optional OTLP/HTTP export of request spans and of the metrics.

pub mod alerts;
pub mod health;
pub mod memory;
pub mod metrics;
pub mod otlp;
