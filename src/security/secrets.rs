//! Random secrets (API tokens, refresh tokens, session ids, CSRF tokens, pairing codes), their storage hashes and
//! constant-time comparison.
//!
//! Tokens carry at least 256 bits from the OS generator, so a plain SHA-256 is a sound storage
//! hash: it is not reversible and the space cannot be searched. Pairing codes are short (40 bits),
//! single use and expire within the hour.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of API tokens.
pub const API_TOKEN_PREFIX: &str = "bmp_";
/// Prefix of device refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "bmr_";
/// Prefix of admin session ids (the session cookie's value).
pub const SESSION_ID_PREFIX: &str = "bms_";

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself: only for sending it to its owner once, or hashing it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

fn random_token(prefix: &str) -> Secret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A new API token: `bmp_` and 256 random bits.
pub fn new_api_token() -> Secret {
    random_token(API_TOKEN_PREFIX)
}

/// A new refresh token: `bmr_` and 256 random bits.
pub fn new_refresh_token() -> Secret {
    random_token(REFRESH_TOKEN_PREFIX)
}

/// A new admin session id: `bms_` and 256 random bits. Only its hash is stored.
pub fn new_session_id() -> Secret {
    random_token(SESSION_ID_PREFIX)
}

/// A new CSRF token for an admin session: 256 random bits, URL-safe base64.
pub fn new_csrf_token() -> Secret {
    random_token("")
}

/// Crockford's base32 alphabet: no I, L, O, U, so codes survive being read aloud.
const CODE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new pairing code, `XXXX-XXXX` (40 random bits).
pub fn new_pairing_code() -> Secret {
    let mut code = String::with_capacity(9);
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    for (i, b) in bytes.iter().enumerate() {
        if i == 4 {
            code.push('-');
        }
        code.push(char::from(CODE_ALPHABET[usize::from(b & 31)]));
    }
    Secret(code)
}

/// Normalises a pairing code as typed by a person: upper case, no separators or spaces, and the
/// letters Crockford's alphabet reads as digits (I, L → 1; O → 0). `None` if it cannot be one.
pub fn normalize_pairing_code(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(8);
    for c in raw.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'I' | 'L' => '1',
            'O' => '0',
            c => c,
        };
        if !c.is_ascii() || !CODE_ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == 8).then_some(out)
}

/// The storage hash of a secret (hex SHA-256).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two secrets (or their hashes) in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_long() {
        let a = new_api_token();
        let b = new_api_token();
        assert!(a.expose().starts_with(API_TOKEN_PREFIX));
        assert_ne!(a, b);
        assert!(a.expose().len() >= 4 + 43);
        assert!(new_refresh_token()
            .expose()
            .starts_with(REFRESH_TOKEN_PREFIX));
        assert_eq!(format!("{a:?}"), "Secret(***)");
    }

    #[test]
    fn pairing_codes_normalise() {
        let code = new_pairing_code();
        assert_eq!(code.expose().len(), 9);
        let normal = normalize_pairing_code(code.expose()).unwrap();
        assert_eq!(normal, code.expose().replace('-', ""));
        assert_eq!(
            normalize_pairing_code("k7qf-2m9x").as_deref(),
            Some("K7QF2M9X")
        );
        assert_eq!(
            normalize_pairing_code("o1lI 2345").as_deref(),
            Some("01112345")
        );
        assert_eq!(normalize_pairing_code("K7QF-2M9"), None);
        assert_eq!(normalize_pairing_code("K7QF-2M9U"), None);
        assert_eq!(normalize_pairing_code("K7QF-2M9XÄ"), None);
    }

    #[test]
    fn hashes_and_comparisons() {
        assert_eq!(hash_secret("abc").len(), 64);
        assert_ne!(hash_secret("abc"), hash_secret("abd"));
        assert!(constant_time_eq("same", "same"));
        assert!(!constant_time_eq("same", "sane"));
        assert!(!constant_time_eq("same", "same!"));
    }
}
