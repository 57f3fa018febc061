//! Security primitives: random secrets and their hashes ([`secrets`]), device access tokens
//! ([`jwt`]), admin passwords ([`passwords`]) and encryption at rest ([`crypto`]). Nothing here logs; secrets are wrapped in [`secrets::Secret`], which does not print.

pub mod crypto;
pub mod jwt;
pub mod passwords;
pub mod secrets;
