//! Security primitives: random secrets and their hashes ([`secrets`]) and device access tokens
//! ([`jwt`]). Nothing here logs; secrets are wrapped in [`secrets::Secret`], which does not print.

pub mod jwt;
pub mod secrets;
