//! Monitoring: what the relay says about itself.
//!
//! - [`health`]: the binary's health probes (store, Redis, disk, keys) that the actors' health
//!   supervisor runs.

pub mod health;
