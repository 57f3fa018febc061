//! Device access tokens: RS256 JWTs signed by the newest key of the ring, verified strictly.
//!
//! [`JwtKeys`] is an immutable snapshot of the key ring: the current signing key and every key
//! that still verifies, by `kid`, plus their public halves as a JWK set. The
//! [`KeyManager`](beepmyphone_actors::keys::KeyManager) builds a new snapshot whenever the ring
//! changes (through [`crate::security::keys::DiskKeyRing`]) and swaps it in; handlers read the
//! snapshot in force, never a mailbox.
//!
//! Verification is strict (RFC 8725):
//! - RS256 only; any other `alg` (including `none` and the HMAC family) is refused before any key
//!   is touched;
//! - the key is the one whose `kid` is in the snapshot, and nowhere else: a missing, malformed or
//!   unknown `kid` is invalid; `jku`, `x5u`, `x5c` and `jwk` headers are never fetched nor used; a
//!   `crit` header is refused (we understand no extension);
//! - `iss`, `aud`, `sub`, `exp`, `nbf`, `iat`, `jti` and `typ` are required; `exp` and `nbf` are
//!   checked with [`LEEWAY_SECONDS`] of leeway, and must be numbers; `typ` must be `access`, so
//!   nothing but an access token passes (refresh tokens are opaque `bmr_…` strings anyway).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, Header};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use beepmyphone_actors::keys::{KeyState, KeyStatus};
use beepmyphone_actors::model::DeviceId;

use crate::crypto::secrets::constant_time_eq;

/// The `typ` claim of an access token.
pub const ACCESS_TYPE: &str = "access";
/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;
/// Longest token looked at; anything longer is refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Length of a key id: 16 hex digits (64 bits of the public key's SHA-256).
pub const KID_LEN: usize = 16;

/// A key failure at start-up or signing time.
#[derive(Debug, thiserror::Error)]
#[error("signing keys: {0}")]
pub struct KeyError(pub String);

/// Why a token was refused. Deliberately coarse: clients learn only that it is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenRejection {
    /// Expired.
    #[error("the token has expired")]
    Expired,
    /// Anything else: bad signature, unknown key, wrong claims, malformed.
    #[error("the token is invalid")]
    Invalid,
}

/// The claims of a device access token. Every field is required: a token missing one fails to
/// deserialize, and so fails verification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeviceClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The device id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Unique token id (the revocation deny-list is keyed by it).
    pub jti: String,
    /// Token type: always `access`.
    pub typ: String,
}

/// A verified access token.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDevice {
    /// Whose it is.
    pub device: DeviceId,
    /// Its id.
    pub jti: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

/// The id of a key: the first 64 bits of the SHA-256 of its public key (DER), in hex.
pub fn kid_of(public_der: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_der)[..KID_LEN / 2])
}

/// Whether `kid` has the shape of a key id we issue (16 lowercase hex digits). Anything else (a
/// path, a URL, an injection attempt) is refused before it is looked up.
pub fn is_kid(kid: &str) -> bool {
    kid.len() == KID_LEN && kid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One public key as a JWK (RFC 7517), as `GET /.well-known/jwks.json` publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `RSA`.
    pub kty: String,
    /// The key id.
    pub kid: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Always `RS256`.
    pub alg: String,
    /// The modulus, base64url without padding.
    pub n: String,
    /// The public exponent, base64url without padding.
    pub e: String,
}

/// The JWK set of the keys that verify, the current one first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One RSA key of the ring, parsed: its private half for signing, its public half for verifying
/// and publishing.
pub struct RingKey {
    kid: String,
    /// The private key, parsed once, held by OpenSSL (which clears it when freed). Signing is
    /// OpenSSL's RSASSA-PKCS1-v1_5: no private-key operation goes through the `rsa` crate.
    signer: PKey<Private>,
    /// The public key, parsed once: RS256 signatures are checked with OpenSSL against it.
    verifier: PKey<Public>,
    jwk: Jwk,
    public_pem: Vec<u8>,
}

impl std::fmt::Debug for RingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn key_err(e: impl std::fmt::Display) -> KeyError {
    KeyError(e.to_string())
}

impl RingKey {
    /// Parses an RSA private key in PEM (PKCS#1 or PKCS#8). RSA parsing is not free: call it on a
    /// blocking thread.
    pub fn from_private_pem(pem: &[u8]) -> Result<Self, KeyError> {
        crate::security::jwt_openssl::install();
        let rsa = openssl::rsa::Rsa::private_key_from_pem(pem).map_err(key_err)?;
        if rsa.size() < 256 {
            return Err(KeyError("signing keys must have at least 2048 bits".into()));
        }
        let public_der = rsa.public_key_to_der().map_err(key_err)?;
        let public_pem = rsa.public_key_to_pem().map_err(key_err)?;
        let kid = kid_of(&public_der);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = Jwk {
            kty: "RSA".into(),
            kid: kid.clone(),
            use_: "sig".into(),
            alg: "RS256".into(),
            n: b64.encode(rsa.n().to_vec()),
            e: b64.encode(rsa.e().to_vec()),
        };
        Ok(Self {
            signer: PKey::from_rsa(rsa).map_err(key_err)?,
            verifier: PKey::public_key_from_der(&public_der).map_err(key_err)?,
            kid,
            jwk,
            public_pem,
        })
    }

    /// Its id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its public half, in PEM (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> &[u8] {
        &self.public_pem
    }
}

/// The snapshot of the ring that handlers sign and verify with.
pub struct JwtKeys {
    current: Arc<RingKey>,
    verifying: HashMap<String, Arc<RingKey>>,
    status: Vec<KeyStatus>,
    jwks: JwkSet,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// A snapshot of `keys` (oldest first), each with its status: exactly one must be current (it
    /// signs); the others verify.
    pub fn new(
        keys: Vec<(Arc<RingKey>, KeyStatus)>,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, KeyError> {
        let mut current = None;
        let mut verifying = HashMap::with_capacity(keys.len());
        let mut jwks = Vec::with_capacity(keys.len());
        let mut status = Vec::with_capacity(keys.len());
        for (key, key_status) in keys {
            if key.kid != key_status.kid {
                return Err(KeyError(format!(
                    "key {} was published as {}",
                    key.kid, key_status.kid
                )));
            }
            match key_status.state {
                KeyState::Current if current.is_none() => {
                    jwks.insert(0, key.jwk.clone());
                    current = Some(key.clone());
                }
                KeyState::Current => return Err(KeyError("two current signing keys".into())),
                KeyState::Verifying => jwks.push(key.jwk.clone()),
                KeyState::Retired => continue,
            }
            verifying.insert(key.kid.clone(), key.clone());
            status.push(key_status);
        }
        let current = current.ok_or_else(|| KeyError("no current signing key".into()))?;
        Ok(Self {
            current,
            verifying,
            status,
            jwks: JwkSet { keys: jwks },
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A snapshot of one key (tests and benchmarks).
    pub fn single(key: RingKey, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let status = KeyStatus {
            kid: key.kid.clone(),
            created_ms: 0,
            state: KeyState::Current,
            retires_at_ms: None,
        };
        Self::new(vec![(Arc::new(key), status)], issuer, audience)
    }

    /// A snapshot of one key given as a PEM private key (tests and benchmarks).
    pub fn from_private_pem(pem: &[u8], issuer: &str, audience: &str) -> Result<Self, KeyError> {
        Self::single(RingKey::from_private_pem(pem)?, issuer, audience)
    }

    /// The current signing key's id.
    pub fn kid(&self) -> &str {
        &self.current.kid
    }

    /// The keys in force, oldest first, with their states.
    pub fn keys(&self) -> &[KeyStatus] {
        &self.status
    }

    /// The public keys that verify, as a JWK set (current first).
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Signs an access token for `device`, valid for `ttl_seconds` from `now_s`. RSA signing takes
    /// about a millisecond: call it on a blocking thread.
    pub fn sign_access(
        &self,
        device: &DeviceId,
        now_s: i64,
        ttl_seconds: u64,
    ) -> Result<(String, DeviceClaims), KeyError> {
        let claims = DeviceClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: device.to_string(),
            // Saturating: a lifetime beyond the end of i64 time (a setting near i64::MAX) is
            // "never", not an overflow.
            exp: now_s.saturating_add(i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 2)),
            nbf: now_s,
            iat: now_s,
            jti: ulid::Ulid::new().to_string(),
            typ: ACCESS_TYPE.to_owned(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.current.kid.clone());
        // The JWS compact form, as jsonwebtoken::encode builds it: base64url(JSON header) "."
        // base64url(JSON claims) "." base64url(RSASSA-PKCS1-v1_5-SHA256 signature).
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(serde_json::to_vec(&header).map_err(key_err)?);
        let payload = b64.encode(serde_json::to_vec(&claims).map_err(key_err)?);
        let message = format!("{header}.{payload}");
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), &self.current.signer)
            .map_err(key_err)?;
        let signature = signer
            .sign_oneshot_to_vec(message.as_bytes())
            .map_err(key_err)?;
        let token = format!("{message}.{}", b64.encode(signature));
        Ok((token, claims))
    }

    /// Verifies an access token now by the wall clock (see [`JwtKeys::verify_access_at`]).
    pub fn verify_access(&self, token: &str) -> Result<VerifiedDevice, TokenRejection> {
        self.verify_access_at(token, chrono::Utc::now().timestamp())
    }

    /// Verifies an access token at `now` (seconds since the epoch; the relay's clock, which
    /// also dated the token), by the rules of the module documentation.
    pub fn verify_access_at(
        &self,
        token: &str,
        now: i64,
    ) -> Result<VerifiedDevice, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES || token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(TokenRejection::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Invalid)?;
        if header.alg != Algorithm::RS256 || header.crit.is_some() {
            return Err(TokenRejection::Invalid);
        }
        // The key comes from our ring, by kid, and from nowhere else: jku, x5u, x5c and jwk are
        // deliberately never read.
        let key = header
            .kid
            .as_deref()
            .filter(|kid| is_kid(kid))
            .and_then(|kid| self.verifying.get(kid))
            .ok_or(TokenRejection::Invalid)?;
        // The signature: RSASSA-PKCS1-v1_5 with SHA-256 over `header.payload`, checked by OpenSSL
        // with the key parsed once (jsonwebtoken's pure-Rust backend re-parses the key per call,
        // which made verification ten times slower).
        let (signing_input, signature) = token.rsplit_once('.').ok_or(TokenRejection::Invalid)?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signature = b64.decode(signature).map_err(|_| TokenRejection::Invalid)?;
        let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &key.verifier)
            .map_err(|_| TokenRejection::Invalid)?;
        if !verifier
            .verify_oneshot(&signature, signing_input.as_bytes())
            .unwrap_or(false)
        {
            return Err(TokenRejection::Invalid);
        }
        // The claims: every one required, times as numbers (a string `exp` fails to parse).
        let payload = signing_input
            .split_once('.')
            .map(|(_, p)| p)
            .ok_or(TokenRejection::Invalid)?;
        let payload = b64.decode(payload).map_err(|_| TokenRejection::Invalid)?;
        let claims: DeviceClaims =
            serde_json::from_slice(&payload).map_err(|_| TokenRejection::Invalid)?;
        let leeway = LEEWAY_SECONDS as i64;
        if !constant_time_eq(&claims.iss, &self.issuer)
            || !constant_time_eq(&claims.aud, &self.audience)
        {
            return Err(TokenRejection::Invalid);
        }
        if claims.nbf > now + leeway {
            return Err(TokenRejection::Invalid);
        }
        if claims.exp <= now - leeway {
            return Err(TokenRejection::Expired);
        }
        if claims.typ != ACCESS_TYPE || claims.jti.is_empty() {
            return Err(TokenRejection::Invalid);
        }
        let device = DeviceId::parse(&claims.sub).ok_or(TokenRejection::Invalid)?;
        Ok(VerifiedDevice {
            device,
            jti: claims.jti,
            iat: claims.iat,
            exp: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::OnceLock;

    fn pem(n: usize) -> &'static [u8] {
        static PEMS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
        &PEMS.get_or_init(|| {
            (0..3)
                .map(|_| {
                    openssl::rsa::Rsa::generate(2048)
                        .unwrap()
                        .private_key_to_pem()
                        .unwrap()
                })
                .collect()
        })[n]
    }

    fn keys() -> JwtKeys {
        JwtKeys::from_private_pem(pem(0), "iss", "aud").unwrap()
    }

    #[test]
    fn a_ring_key_prints_only_its_kid() {
        let key = RingKey::from_private_pem(pem(0)).unwrap();
        let printed = format!("{key:?} {key:#?}");
        assert!(printed.contains(key.kid()), "{printed}");
        let rsa = openssl::rsa::Rsa::private_key_from_pem(pem(0)).unwrap();
        let d = hex::encode(rsa.d().to_vec());
        assert!(!printed.to_lowercase().contains(&d[..16]), "{printed}");
        assert!(!printed.contains("PRIVATE"), "{printed}");
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs arbitrary header and claims with key `n` (RS256).
    fn forge(n: usize, header: serde_json::Value, claims: serde_json::Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rsa = openssl::rsa::Rsa::private_key_from_pem(pem(n)).unwrap();
        let pkey = openssl::pkey::PKey::from_rsa(rsa).unwrap();
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
        signer.update(message.as_bytes()).unwrap();
        format!("{message}.{}", b64(&signer.sign_to_vec().unwrap()))
    }

    fn good_claims(device: &DeviceId) -> serde_json::Value {
        json!({"iss": "iss", "aud": "aud", "sub": device.to_string(), "exp": now() + 600,
               "nbf": now(), "iat": now(), "jti": "01J000", "typ": "access"})
    }

    #[test]
    fn signs_and_verifies_with_the_kid_of_the_public_key() {
        let k = keys();
        let device = DeviceId::generate();
        let (token, claims) = k.sign_access(&device, now(), 3600).unwrap();
        let verified = k.verify_access(&token).unwrap();
        assert_eq!(verified.device, device);
        assert_eq!(verified.jti, claims.jti);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(k.kid()));
        assert!(is_kid(k.kid()));
        assert_eq!(k.jwks().keys.len(), 1);
        assert_eq!(k.jwks().keys[0].kid, k.kid());
        assert_eq!(k.jwks().keys[0].e, "AQAB");
    }

    #[test]
    fn a_snapshot_verifies_every_key_and_signs_with_the_current_one() {
        let old = Arc::new(RingKey::from_private_pem(pem(0)).unwrap());
        let new = Arc::new(RingKey::from_private_pem(pem(1)).unwrap());
        let status = |key: &RingKey, state| KeyStatus {
            kid: key.kid.clone(),
            created_ms: 0,
            state,
            retires_at_ms: None,
        };
        let before =
            JwtKeys::single(RingKey::from_private_pem(pem(0)).unwrap(), "iss", "aud").unwrap();
        let device = DeviceId::generate();
        let (old_token, _) = before.sign_access(&device, now(), 600).unwrap();
        let both = JwtKeys::new(
            vec![
                (old.clone(), status(&old, KeyState::Verifying)),
                (new.clone(), status(&new, KeyState::Current)),
            ],
            "iss",
            "aud",
        )
        .unwrap();
        assert_eq!(both.kid(), new.kid());
        assert!(both.verify_access(&old_token).is_ok());
        let (new_token, _) = both.sign_access(&device, now(), 600).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token)
                .unwrap()
                .kid
                .as_deref(),
            Some(new.kid())
        );
        let kids: Vec<&str> = both.jwks().keys.iter().map(|k| k.kid.as_str()).collect();
        assert_eq!(kids, vec![new.kid(), old.kid()]);
        // Without the old key its tokens are refused.
        let after = JwtKeys::new(
            vec![(new.clone(), status(&new, KeyState::Current))],
            "iss",
            "aud",
        )
        .unwrap();
        assert_eq!(
            after.verify_access(&old_token),
            Err(TokenRejection::Invalid)
        );
        // A snapshot needs exactly one current key.
        assert!(JwtKeys::new(
            vec![(old.clone(), status(&old, KeyState::Verifying))],
            "iss",
            "aud"
        )
        .is_err());
        assert!(JwtKeys::new(
            vec![
                (old.clone(), status(&old, KeyState::Current)),
                (new.clone(), status(&new, KeyState::Current))
            ],
            "iss",
            "aud"
        )
        .is_err());
    }

    #[test]
    fn rejects_expired_foreign_tampered_and_unsigned_tokens() {
        let k = keys();
        let device = DeviceId::generate();
        let (expired, _) = k.sign_access(&device, now() - 7200, 3600).unwrap();
        assert_eq!(k.verify_access(&expired), Err(TokenRejection::Expired));
        let other = JwtKeys::from_private_pem(pem(1), "iss", "aud").unwrap();
        let (foreign, _) = other.sign_access(&device, now(), 3600).unwrap();
        assert_eq!(k.verify_access(&foreign), Err(TokenRejection::Invalid));
        let (good, _) = k.sign_access(&device, now(), 3600).unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = serde_json::Value::String(DeviceId::generate().to_string());
        parts[1] = engine.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            k.verify_access(&parts.join(".")),
            Err(TokenRejection::Invalid)
        );
        assert_eq!(k.verify_access("not.a.token"), Err(TokenRejection::Invalid));
        assert_eq!(k.verify_access(""), Err(TokenRejection::Invalid));
        let none_header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let good_claims = good.split('.').nth(1).unwrap();
        assert_eq!(
            k.verify_access(&format!("{none_header}.{good_claims}.")),
            Err(TokenRejection::Invalid)
        );
        let stripped: Vec<&str> = good.split('.').collect();
        assert_eq!(
            k.verify_access(&format!("{}.{}.", stripped[0], stripped[1])),
            Err(TokenRejection::Invalid)
        );
        assert_eq!(
            k.verify_access(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(TokenRejection::Invalid)
        );
    }

    #[test]
    fn every_claim_is_required_and_checked() {
        let k = keys();
        let device = DeviceId::generate();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": k.kid()});
        assert!(k
            .verify_access(&forge(0, header.clone(), good_claims(&device)))
            .is_ok());
        for missing in ["iss", "aud", "sub", "exp", "nbf", "iat", "jti", "typ"] {
            let mut claims = good_claims(&device);
            claims.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                k.verify_access(&forge(0, header.clone(), claims)),
                Err(TokenRejection::Invalid),
                "a token without {missing} passed"
            );
        }
        let wrong: [(&str, serde_json::Value); 8] = [
            ("iss", json!("someone-else")),
            ("aud", json!("someone-else")),
            ("aud", json!(["aud", "other"])),
            ("sub", json!("not-a-device")),
            ("typ", json!("refresh")),
            ("jti", json!("")),
            ("exp", json!((now() + 600).to_string())),
            ("nbf", json!(now() + 3_600)),
        ];
        for (field, value) in wrong {
            let mut claims = good_claims(&device);
            claims[field] = value.clone();
            assert!(
                k.verify_access(&forge(0, header.clone(), claims)).is_err(),
                "{field} = {value} passed"
            );
        }
        // Leeway: 20 s past exp still passes, 40 s does not.
        let mut claims = good_claims(&device);
        claims["exp"] = json!(now() - 20);
        assert!(k.verify_access(&forge(0, header.clone(), claims)).is_ok());
        let mut claims = good_claims(&device);
        claims["exp"] = json!(now() - 40);
        assert_eq!(
            k.verify_access(&forge(0, header, claims)),
            Err(TokenRejection::Expired)
        );
    }

    #[test]
    fn the_key_comes_from_the_ring_by_kid_and_from_nowhere_else() {
        let k = keys();
        let device = DeviceId::generate();
        let claims = good_claims(&device);
        let attacker = RingKey::from_private_pem(pem(2)).unwrap();
        for header in [
            json!({"alg": "RS256"}),
            json!({"alg": "RS256", "kid": "0000000000000000"}),
            json!({"alg": "RS256", "kid": "../../keys/x"}),
            json!({"alg": "RS256", "kid": k.kid().to_uppercase()}),
            json!({"alg": "RS256", "kid": attacker.kid(), "jku": "https://evil.example/jwks.json"}),
            json!({"alg": "RS256", "kid": attacker.kid(), "jwk": attacker.jwk}),
            json!({"alg": "RS256", "kid": attacker.kid(), "x5u": "https://evil.example/cert.pem"}),
            json!({"alg": "RS256", "kid": k.kid(), "crit": ["exp"]}),
        ] {
            assert_eq!(
                k.verify_access(&forge(2, header.clone(), claims.clone())),
                Err(TokenRejection::Invalid),
                "{header} passed"
            );
        }
        // Our own key with a jku header: the header is ignored, the token verifies by kid.
        let header = json!({"alg": "RS256", "kid": k.kid(), "jku": "https://evil.example/"});
        assert!(k.verify_access(&forge(0, header, claims)).is_ok());
    }

    #[test]
    fn direct_signing_is_the_jws_jsonwebtoken_builds_through_openssl() {
        let k = keys();
        let device = DeviceId::generate();
        let (token, claims) = k.sign_access(&device, now(), 600).unwrap();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(k.kid().to_owned());
        // RSASSA-PKCS1-v1_5 is deterministic: the same input gives the same token.
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem(0)).unwrap();
        assert_eq!(jsonwebtoken::encode(&header, &claims, &key).unwrap(), token);
        // And jsonwebtoken's own verification (through the OpenSSL provider) accepts it.
        let public = openssl::rsa::Rsa::private_key_from_pem(pem(0)).unwrap();
        let decoding =
            jsonwebtoken::DecodingKey::from_rsa_der(&public.public_key_to_der_pkcs1().unwrap());
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.set_audience(&["aud"]);
        let data = jsonwebtoken::decode::<DeviceClaims>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims, claims);
        let wrong = jsonwebtoken::DecodingKey::from_rsa_der(
            &openssl::rsa::Rsa::private_key_from_pem(pem(1))
                .unwrap()
                .public_key_to_der_pkcs1()
                .unwrap(),
        );
        assert!(jsonwebtoken::decode::<DeviceClaims>(&token, &wrong, &validation).is_err());
    }

    #[test]
    fn the_openssl_provider_signs_and_verifies_hmac_and_pss_and_refuses_the_rest() {
        crate::security::jwt_openssl::install();
        let claims = json!({"sub": "x", "exp": now() + 600});
        let validation = |alg| {
            let mut v = jsonwebtoken::Validation::new(alg);
            v.validate_aud = false;
            v
        };
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = jsonwebtoken::encode(
                &Header::new(alg),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(b"secret"),
            )
            .unwrap();
            let ok = jsonwebtoken::DecodingKey::from_secret(b"secret");
            let bad = jsonwebtoken::DecodingKey::from_secret(b"secreT");
            assert!(
                jsonwebtoken::decode::<serde_json::Value>(&token, &ok, &validation(alg)).is_ok()
            );
            assert!(
                jsonwebtoken::decode::<serde_json::Value>(&token, &bad, &validation(alg)).is_err()
            );
        }
        let rsa = openssl::rsa::Rsa::private_key_from_pem(pem(0)).unwrap();
        let (n, e) = (b64(&rsa.n().to_vec()), b64(&rsa.e().to_vec()));
        for alg in [
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ] {
            let token = jsonwebtoken::encode(
                &Header::new(alg),
                &claims,
                &jsonwebtoken::EncodingKey::from_rsa_pem(pem(0)).unwrap(),
            )
            .unwrap();
            let decoding = jsonwebtoken::DecodingKey::from_rsa_components(&n, &e).unwrap();
            assert!(
                jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation(alg))
                    .is_ok(),
                "{alg:?}"
            );
        }
        let es = jsonwebtoken::EncodingKey::from_ec_der(b"not a key");
        assert!(jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &es).is_err());
    }

    #[test]
    fn hmac_with_the_public_key_as_secret_is_refused() {
        let k = keys();
        let device = DeviceId::generate();
        let rsa = openssl::rsa::Rsa::private_key_from_pem(pem(0)).unwrap();
        let secrets = [
            rsa.public_key_to_pem().unwrap(),
            rsa.public_key_to_pem_pkcs1().unwrap(),
            rsa.public_key_to_der().unwrap(),
            rsa.public_key_to_der_pkcs1().unwrap(),
        ];
        for secret in secrets {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(k.kid().to_owned());
            let token = jsonwebtoken::encode(
                &header,
                &good_claims(&device),
                &jsonwebtoken::EncodingKey::from_secret(&secret),
            )
            .unwrap();
            assert_eq!(k.verify_access(&token), Err(TokenRejection::Invalid));
        }
    }
}
