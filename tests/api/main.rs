//! Black-box tests: each starts the real relay on port 0 with a fresh data directory and talks
//! HTTP and WebSocket to it. One binary, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
mod audit;
mod bench;
mod browser;
mod cli;
mod dashboard;
mod dashboard_browser;
mod delivery;
mod devices;
mod encryption;
mod health;
mod helpers;
mod http2;
mod identity;
mod limits;
mod log_secrets;
mod logs;
mod metrics;
mod openapi;
mod otlp;
mod socket;
mod startup;
mod tls;
mod tls_cli;
mod tokens;
mod validation;
