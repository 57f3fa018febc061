//! Security primitives: random secrets and their hashes ([`secrets`]), device access tokens
//! ([`jwt`], jsonwebtoken's OpenSSL backend in [`jwt_openssl`]) and the ring of keys that signs them ([`keys`]), admin passwords ([`passwords`]) and accounts ([`admins`]), admin sessions ([`sessions`]), rate limits ([`ratelimit`]) and the limits in force ([`limits`]), revocation of device tokens ([`revocation`]) and their check ([`device_auth`]) and the sweep of what expired ([`cleanup`]), and encryption at rest ([`crypto`]). Nothing here logs a secret; secrets are wrapped in [`secrets::SecretString`], which does not print.

pub mod admins;
pub mod cleanup;
pub mod datakeys;
pub mod crypto;
pub mod device_auth;
pub mod files;
pub mod jwt;
pub mod jwt_openssl;
pub mod keys;
pub mod limits;
pub mod passwords;
pub mod ratelimit;
pub mod revocation;
pub mod secrets;
pub mod sessions;
