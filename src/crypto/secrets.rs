//! Random secrets (API tokens, refresh tokens, session ids, CSRF tokens, pairing codes), their storage hashes and
//! constant-time comparison.
//!
//! Tokens carry at least 256 bits from the OS generator, so a plain SHA-256 is a sound storage
//! hash: it is not reversible and the space cannot be searched. Pairing codes are short (40 bits),
//! single use and expire within the hour.

use base64::Engine;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of API tokens.
pub const API_TOKEN_PREFIX: &str = "bmp_";
/// Prefix of device refresh tokens.
pub const REFRESH_TOKEN_PREFIX: &str = "bmr_";
/// Prefix of admin session ids (the session cookie's value).
pub const SESSION_ID_PREFIX: &str = "bms_";

/// A secret string (API token, refresh token, session id, CSRF token, pairing code, password):
/// wiped on drop, printed by `Debug` as `[REDACTED]`, and with no `PartialEq` (compare with
/// [`constant_time_eq`]). Read it with [`ExposeSecret::expose_secret`], only to send it to its
/// owner once, to hash it or to check it.
pub use secrecy::SecretString;
pub use secrecy::{ExposeSecret, SecretBox};
pub use zeroize::Zeroizing;

/// 32 bytes of key material (an AES-256 data key), wiped on drop, never printed.
pub type KeyBytes = SecretBox<[u8; 32]>;

/// Wraps a secret that arrived as a plain `String` (a deserialised field, a terminal read): the
/// secret is copied once into a buffer of its exact size and the original is wiped, so no
/// unwiped copy is left behind by a reallocation.
pub fn secret_string(value: String) -> SecretString {
    let value = Zeroizing::new(value);
    SecretString::from(value.as_str())
}

/// Fills `bytes` from the operating system's random source. A failing OS source is not something
/// the relay can go on without, so it panics, as rand's `OsRng` always did.
pub(crate) fn os_random(bytes: &mut [u8]) {
    UnwrapErr(SysRng).fill_bytes(bytes);
}

fn random_token(prefix: &str) -> SecretString {
    let mut bytes = Zeroizing::new([0u8; 32]);
    os_random(bytes.as_mut());
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // Built at its final size, so that turning it into the secret does not reallocate.
    let mut token = String::with_capacity(prefix.len() + 43);
    token.push_str(prefix);
    engine.encode_string(bytes.as_ref(), &mut token);
    SecretString::from(token)
}

/// A new API token: `bmp_` and 256 random bits.
pub fn new_api_token() -> SecretString {
    random_token(API_TOKEN_PREFIX)
}

/// A new refresh token: `bmr_` and 256 random bits.
pub fn new_refresh_token() -> SecretString {
    random_token(REFRESH_TOKEN_PREFIX)
}

/// A new admin session id: `bms_` and 256 random bits. Only its hash is stored.
pub fn new_session_id() -> SecretString {
    random_token(SESSION_ID_PREFIX)
}

/// A new CSRF token for an admin session: 256 random bits, URL-safe base64.
pub fn new_csrf_token() -> SecretString {
    random_token("")
}

/// Crockford's base32 alphabet: no I, L, O, U, so codes survive being read aloud.
const CODE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A new pairing code, `XXXX-XXXX` (40 random bits).
pub fn new_pairing_code() -> SecretString {
    let mut code = String::with_capacity(9);
    let mut bytes = Zeroizing::new([0u8; 8]);
    os_random(bytes.as_mut());
    for (i, b) in bytes.iter().enumerate() {
        if i == 4 {
            code.push('-');
        }
        code.push(char::from(CODE_ALPHABET[usize::from(b & 31)]));
    }
    SecretString::from(code)
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

/// Compares two secrets (or their hashes) in time that depends only on their lengths: the one
/// place where secrets are compared (none of the secret types has `PartialEq`).
pub fn constant_time_eq(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    a.as_ref().ct_eq(b.as_ref()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_long() {
        let a = new_api_token();
        let b = new_api_token();
        assert!(a.expose_secret().starts_with(API_TOKEN_PREFIX));
        assert!(!constant_time_eq(a.expose_secret(), b.expose_secret()));
        assert_eq!(a.expose_secret().len(), 4 + 43);
        assert!(new_refresh_token()
            .expose_secret()
            .starts_with(REFRESH_TOKEN_PREFIX));
        assert!(new_session_id()
            .expose_secret()
            .starts_with(SESSION_ID_PREFIX));
        assert_eq!(new_csrf_token().expose_secret().len(), 43);
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let secrets = [
            new_api_token(),
            new_refresh_token(),
            new_session_id(),
            new_csrf_token(),
            new_pairing_code(),
            secret_string("a long enough password".to_owned()),
        ];
        for secret in &secrets {
            let printed = format!("{secret:?} {secret:#?}");
            assert!(printed.contains("REDACTED"), "{printed}");
            assert!(!printed.contains(secret.expose_secret()), "{printed}");
        }
        let key = KeyBytes::new(Box::new([0xAB; 32]));
        let printed = format!("{key:?} {key:#?}");
        assert!(printed.contains("REDACTED"), "{printed}");
        assert!(!printed.contains("171") && !printed.to_lowercase().contains("ab, "));
    }

    #[test]
    fn secret_string_keeps_the_value() {
        let s = secret_string(String::with_capacity(100) + "hunter2hunter2");
        assert_eq!(s.expose_secret(), "hunter2hunter2");
    }

    #[test]
    fn pairing_codes_normalise() {
        let code = new_pairing_code();
        let code = code.expose_secret();
        assert_eq!(code.len(), 9);
        let normal = normalize_pairing_code(code).unwrap();
        assert_eq!(normal, code.replace('-', ""));
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
        // Equal, different at the start / middle / end, different lengths (either way), empty.
        assert!(constant_time_eq("same", "same"));
        assert!(constant_time_eq("", ""));
        assert!(!constant_time_eq("same", "sane"));
        assert!(!constant_time_eq("same", "xame"));
        assert!(!constant_time_eq("same", "samf"));
        assert!(!constant_time_eq("same", "same!"));
        assert!(!constant_time_eq("same!", "same"));
        assert!(!constant_time_eq("", "x"));
        assert!(!constant_time_eq("same", "sam"));
        // Bytes and strings alike, and secrets through their exposed value.
        assert!(constant_time_eq([1u8, 2, 3], [1u8, 2, 3]));
        assert!(!constant_time_eq([1u8, 2, 3], [1u8, 2, 4]));
        let a = new_api_token();
        let copy = secret_string(a.expose_secret().to_owned());
        assert!(constant_time_eq(a.expose_secret(), copy.expose_secret()));
        assert!(!constant_time_eq(
            a.expose_secret(),
            new_api_token().expose_secret()
        ));
    }
}
