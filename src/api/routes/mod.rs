//! Route handlers, one module per resource; each has a `configure` that registers its routes.

pub mod devices;
pub mod health;
pub mod notifications;
pub mod pairing;
pub mod tokens;
