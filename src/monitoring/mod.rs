//! Monitoring: what the relay says about itself.
//!
//! - [`metrics`]: the Prometheus scrape and the optional listener that serves it without a token;
//! - [`health`]: the binary's health probes (store, Redis, disk, keys) that the actors' health
//!   supervisor runs;
//! - [`otlp`]: the optional OTLP/HTTP export of request spans and of the metrics.

pub mod health;
pub mod metrics;
pub mod otlp;
