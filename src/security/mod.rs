//! Security: device access tokens ([`jwt`], jsonwebtoken's OpenSSL backend in [`jwt_openssl`])
//! and the ring of keys that signs them ([`keys`]), admin passwords ([`passwords`]) and accounts
//! ([`admins`]), admin sessions ([`sessions`]), rate limits ([`ratelimit`]) and the limits in force
//! ([`limits`]), revocation of device tokens ([`revocation`]) and their check ([`device_auth`]),
//! the sweep of what expired ([`cleanup`]), and the data keys at run time ([`datakeys`]). The
//! primitives they are built of (secrets, secret files, encryption at rest) are in
//! [`crate::crypto`], which the store uses too. Nothing here logs a secret; secrets are wrapped in
//! [`crate::crypto::secrets::SecretString`], which does not print.

pub mod admins;
pub mod cleanup;
pub mod datakeys;
pub mod device_auth;
pub mod jwt;
pub mod jwt_openssl;
pub mod keys;
pub mod limits;
pub mod passwords;
pub mod ratelimit;
pub mod revocation;
pub mod sessions;
