//! Route handlers, one module per resource; each has a `configure` that registers its routes.

pub mod audit;
pub mod auth;
pub mod blocks;
pub mod datakeys;
pub mod devices;
pub mod e2e;
pub mod events;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod notifications;
pub mod pairing;
pub mod socket;
pub mod stream;
pub mod tls;
pub mod tokens;
