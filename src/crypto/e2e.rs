//! End-to-end encryption of a notification's content, from the publisher to one device: the
//! envelope the CLI (`send --e2e`, `listen`), the capture agent and the tests seal and open. The
//! relay never opens it; it only checks the envelope's shape (see `PublishRequest::encrypted`) and
//! stores and forwards it.
//!
//! The format (version 1), as a base64url string without padding:
//!
//! ```text
//! version (1 byte, 0x01) || ephemeral X25519 public key (32) || nonce (24)
//!     || XChaCha20-Poly1305 ciphertext and tag (plaintext length + 16)
//! ```
//!
//! The key is HKDF-SHA256 with `ikm` = X25519(ephemeral secret, device public key), `salt` =
//! ephemeral public key || device public key, `info` = `b"beepmyphone e2e v1"`, 32 bytes. The
//! associated data is the device id, which binds an envelope to its recipient: one sealed for
//! another device does not open. The plaintext is the JSON object [`Content`]. A fresh ephemeral
//! key per envelope gives forward secrecy on the publisher's side; the nonce is random as well.
//! docs/api.md ("End-to-end encryption") documents the same format for other clients.

use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::crypto::secrets::os_random;

/// The envelope's first byte.
pub const VERSION: u8 = 0x01;
/// Length of an X25519 key.
pub const KEY_LEN: usize = 32;
/// Length of the XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// The shortest envelope (empty plaintext), in bytes.
pub const MIN_LEN: usize = 1 + KEY_LEN + NONCE_LEN + TAG_LEN;
/// The HKDF `info` of version 1.
pub const INFO: &[u8] = b"beepmyphone e2e v1";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why an envelope or a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E2eError {
    /// Not base64url (without padding).
    #[error("the encrypted payload is not base64url")]
    Base64,
    /// Shorter than the smallest envelope.
    #[error("the encrypted payload is too short ({0} bytes, at least {MIN_LEN})")]
    TooShort(usize),
    /// A version this build does not read.
    #[error("unknown end-to-end envelope version {0} (this build reads version 1)")]
    UnknownVersion(u8),
    /// The tag does not verify: another device's key or id, or tampered with.
    #[error("the encrypted payload does not open (sealed for another key or device, or altered)")]
    Open,
    /// It opened, but the plaintext is not the content object.
    #[error("the decrypted payload is not a notification: {0}")]
    Content(String),
    /// A key that is not 32 bytes of base64url.
    #[error("an end-to-end key must be 32 bytes as base64url")]
    Key,
    /// A public key of small order: the agreement would not depend on the secret.
    #[error("the device's end-to-end key is not a usable X25519 public key")]
    WeakKey,
}

/// What is sealed: the fields of a notification the relay does not see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    /// The title.
    pub title: String,
    /// The body (may be empty).
    #[serde(default)]
    pub body: String,
    /// The sending application, if the publisher named one (it may also be sent in clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The URL opened when the notification is tapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_url: Option<String>,
}

/// A device's X25519 secret key: wiped on drop, never printed.
#[derive(Clone)]
pub struct SecretKey(StaticSecret);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// The secret from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// The secret from base64url (how the CLI's credentials file keeps it).
    pub fn from_base64(raw: &str) -> Result<Self, E2eError> {
        decode_key(raw).map(Self::from_bytes)
    }

    /// The secret as base64url (for the credentials file only).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.as_bytes()))
    }

    /// Its public key.
    pub fn public_key(&self) -> [u8; KEY_LEN] {
        PublicKey::from(&self.0).to_bytes()
    }
}

/// A new device keypair: the secret and its public key.
pub fn generate_keypair() -> (SecretKey, [u8; KEY_LEN]) {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    os_random(bytes.as_mut());
    let secret = SecretKey::from_bytes(*bytes);
    let public = secret.public_key();
    (secret, public)
}

/// A key as base64url without padding (how the API carries public keys).
pub fn encode_key(key: &[u8; KEY_LEN]) -> String {
    B64.encode(key)
}

/// A key from base64url: exactly 32 bytes.
pub fn decode_key(raw: &str) -> Result<[u8; KEY_LEN], E2eError> {
    let bytes = Zeroizing::new(B64.decode(raw).map_err(|_| E2eError::Key)?);
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| E2eError::Key)
}

fn cipher(
    shared: &[u8; KEY_LEN],
    ephemeral: &[u8; KEY_LEN],
    device: &[u8; KEY_LEN],
) -> XChaCha20Poly1305 {
    let mut salt = [0u8; 2 * KEY_LEN];
    salt[..KEY_LEN].copy_from_slice(ephemeral);
    salt[KEY_LEN..].copy_from_slice(device);
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(INFO, key.as_mut())
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output length"));
    XChaCha20Poly1305::new(&(*key).into())
}

/// Seals `content` for the device `device_id` whose public key is `device_public`: a fresh
/// ephemeral key and nonce each time. [`E2eError::WeakKey`] for a public key of small order.
pub fn seal(
    device_id: &str,
    device_public: &[u8; KEY_LEN],
    content: &Content,
) -> Result<String, E2eError> {
    let (ephemeral, ephemeral_public) = generate_keypair();
    let shared = ephemeral.0.diffie_hellman(&PublicKey::from(*device_public));
    if !shared.was_contributory() {
        return Err(E2eError::WeakKey);
    }
    let mut nonce = [0u8; NONCE_LEN];
    os_random(&mut nonce);
    let plaintext =
        Zeroizing::new(serde_json::to_vec(content).map_err(|e| E2eError::Content(e.to_string()))?);
    let sealed = cipher(shared.as_bytes(), &ephemeral_public, device_public)
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &plaintext,
                aad: device_id.as_bytes(),
            },
        )
        .map_err(|_| E2eError::Open)?;
    let mut envelope = Vec::with_capacity(1 + KEY_LEN + NONCE_LEN + sealed.len());
    envelope.push(VERSION);
    envelope.extend_from_slice(&ephemeral_public);
    envelope.extend_from_slice(&nonce);
    envelope.extend_from_slice(&sealed);
    Ok(B64.encode(envelope))
}

/// Checks an envelope's shape without opening it (what the relay can check): base64url, the
/// version byte, the minimum length. Returns the decoded bytes.
pub fn parse(envelope: &str) -> Result<Vec<u8>, E2eError> {
    let bytes = B64.decode(envelope).map_err(|_| E2eError::Base64)?;
    match bytes.first() {
        None => Err(E2eError::TooShort(0)),
        Some(&VERSION) if bytes.len() < MIN_LEN => Err(E2eError::TooShort(bytes.len())),
        Some(&VERSION) => Ok(bytes),
        Some(&other) => Err(E2eError::UnknownVersion(other)),
    }
}

/// Opens an envelope sealed for `device_id` with the device's secret key.
pub fn open(device_id: &str, secret: &SecretKey, envelope: &str) -> Result<Content, E2eError> {
    let bytes = parse(envelope)?;
    let (ephemeral, rest) = bytes[1..].split_at(KEY_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let ephemeral: [u8; KEY_LEN] = ephemeral.try_into().map_err(|_| E2eError::Open)?;
    let nonce = XNonce::try_from(nonce).map_err(|_| E2eError::Open)?;
    let shared = secret.0.diffie_hellman(&PublicKey::from(ephemeral));
    if !shared.was_contributory() {
        return Err(E2eError::Open);
    }
    let plaintext = Zeroizing::new(
        cipher(shared.as_bytes(), &ephemeral, &secret.public_key())
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: device_id.as_bytes(),
                },
            )
            .map_err(|_| E2eError::Open)?,
    );
    serde_json::from_slice(&plaintext).map_err(|e| E2eError::Content(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = "dev_01HZZZZZZZZZZZZZZZZZZZZZZZ";

    fn content() -> Content {
        Content {
            title: "the vault code".into(),
            body: "is 4711".into(),
            app: Some("bank".into()),
            tags: vec!["secret".into()],
            click_url: Some("https://bank.example/".into()),
        }
    }

    #[test]
    fn a_sealed_envelope_opens_with_the_device_key_and_id() {
        let (secret, public) = generate_keypair();
        let envelope = seal(DEVICE, &public, &content()).unwrap();
        assert!(!envelope.contains('='), "no padding");
        assert!(!envelope.contains("vault"));
        let bytes = B64.decode(&envelope).unwrap();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(open(DEVICE, &secret, &envelope).unwrap(), content());
        // Fresh ephemeral key and nonce each time.
        assert_ne!(seal(DEVICE, &public, &content()).unwrap(), envelope);
    }

    #[test]
    fn another_key_or_device_id_does_not_open_it() {
        let (_, public) = generate_keypair();
        let (other, _) = generate_keypair();
        let envelope = seal(DEVICE, &public, &content()).unwrap();
        assert_eq!(open(DEVICE, &other, &envelope), Err(E2eError::Open));
        let (secret, public) = generate_keypair();
        let envelope = seal(DEVICE, &public, &content()).unwrap();
        assert_eq!(
            open("dev_01HYYYYYYYYYYYYYYYYYYYYYYY", &secret, &envelope),
            Err(E2eError::Open)
        );
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let (secret, public) = generate_keypair();
        let envelope = seal(DEVICE, &public, &content()).unwrap();
        let bytes = B64.decode(&envelope).unwrap();
        for i in 1..bytes.len() {
            let mut tampered = bytes.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                open(DEVICE, &secret, &B64.encode(&tampered)),
                Err(E2eError::Open),
                "byte {i}"
            );
        }
    }

    #[test]
    fn malformed_envelopes_get_their_own_errors() {
        let (secret, public) = generate_keypair();
        let envelope = seal(DEVICE, &public, &content()).unwrap();
        let mut bytes = B64.decode(&envelope).unwrap();
        bytes[0] = 0x02;
        assert_eq!(
            open(DEVICE, &secret, &B64.encode(&bytes)),
            Err(E2eError::UnknownVersion(2))
        );
        assert_eq!(open(DEVICE, &secret, "not base64!"), Err(E2eError::Base64));
        assert_eq!(open(DEVICE, &secret, ""), Err(E2eError::TooShort(0)));
        let short = B64.encode([VERSION; MIN_LEN - 1]);
        assert_eq!(
            open(DEVICE, &secret, &short),
            Err(E2eError::TooShort(MIN_LEN - 1))
        );
        // Padding is not part of the format.
        assert_eq!(
            open(DEVICE, &secret, &format!("{envelope}=")),
            Err(E2eError::Base64)
        );
    }

    #[test]
    fn keys_round_trip_as_base64url_and_weak_keys_are_refused() {
        let (secret, public) = generate_keypair();
        let again = SecretKey::from_base64(&secret.to_base64()).unwrap();
        assert_eq!(again.public_key(), public);
        assert_eq!(decode_key(&encode_key(&public)).unwrap(), public);
        assert_eq!(decode_key("AAAA"), Err(E2eError::Key));
        assert_eq!(format!("{secret:?}"), "SecretKey(..)");
        // The identity point: the shared secret would be all zeros.
        assert_eq!(seal(DEVICE, &[0u8; 32], &content()), Err(E2eError::WeakKey));
    }
}
