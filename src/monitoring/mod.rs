//! Watching the relay: Prometheus metrics ([`metrics`]): the scrape and the optional listener
//! that serves it without a token.

pub mod metrics;
