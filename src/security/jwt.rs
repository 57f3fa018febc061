//! Device access tokens: RS256 JWTs signed by a key kept in the data directory.
//!
//! On first start an RSA-2048 key is generated (OpenSSL) and written to
//! `<data_dir>/keys/signing-<kid>.pem` with mode 0600 in a 0700 directory. Handlers verify against
//! [`JwtKeys`], an immutable snapshot shared through an `Arc`: no mailbox round trip per request.
//! Verification is strict: RS256 only, `kid` looked up among our keys and nowhere else, and `iss`,
//! `aud`, `sub`, `exp`, `nbf`, `jti` and `typ` required and checked.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use beepmyphone_actors::model::DeviceId;

/// The `typ` claim of an access token.
pub const ACCESS_TYPE: &str = "access";
/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 30;

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

/// The claims of a device access token.
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
    /// Unique token id.
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

/// The signing key and the verifying keys, by `kid`.
pub struct JwtKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
}

fn kid_of(public_der: &[u8]) -> String {
    hex::encode(&Sha256::digest(public_der)[..8])
}

impl JwtKeys {
    /// Loads the signing key from `<data_dir>/keys`, generating one on first start.
    pub fn load_or_create(data_dir: &Path, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let dir = data_dir.join("keys");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| KeyError(format!("cannot create {}: {e}", dir.display())))?;
        let mut existing: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| KeyError(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("signing-") && n.ends_with(".pem"))
            })
            .collect();
        existing.sort();
        let pem = match existing.last() {
            Some(path) => fs::read(path)
                .map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))?,
            None => {
                let rsa = openssl::rsa::Rsa::generate(2048).map_err(|e| KeyError(e.to_string()))?;
                let pem = rsa
                    .private_key_to_pem()
                    .map_err(|e| KeyError(e.to_string()))?;
                let der = rsa
                    .public_key_to_der()
                    .map_err(|e| KeyError(e.to_string()))?;
                let path = dir.join(format!("signing-{}.pem", kid_of(&der)));
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| KeyError(format!("cannot write {}: {e}", path.display())))?;
                file.write_all(&pem)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| KeyError(e.to_string()))?;
                pem
            }
        };
        Self::from_private_pem(&pem, issuer, audience)
    }

    /// Builds the key set from a PEM private key.
    pub fn from_private_pem(pem: &[u8], issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let rsa =
            openssl::rsa::Rsa::private_key_from_pem(pem).map_err(|e| KeyError(e.to_string()))?;
        let public_pem = rsa
            .public_key_to_pem()
            .map_err(|e| KeyError(e.to_string()))?;
        let kid = kid_of(
            &rsa.public_key_to_der()
                .map_err(|e| KeyError(e.to_string()))?,
        );
        let encoding = EncodingKey::from_rsa_pem(pem).map_err(|e| KeyError(e.to_string()))?;
        let decoding =
            DecodingKey::from_rsa_pem(&public_pem).map_err(|e| KeyError(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Ok(Self {
            decoding: HashMap::from([(kid.clone(), decoding)]),
            kid,
            encoding,
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// The current signing key's id.
    pub fn kid(&self) -> &str {
        &self.kid
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
            exp: now_s + i64::try_from(ttl_seconds).unwrap_or(i64::MAX / 2),
            nbf: now_s,
            iat: now_s,
            jti: ulid::Ulid::new().to_string(),
            typ: ACCESS_TYPE.to_owned(),
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| KeyError(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verifies an access token.
    pub fn verify_access(&self, token: &str) -> Result<VerifiedDevice, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenRejection::Invalid);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(TokenRejection::Invalid)?;
        let data = jsonwebtoken::decode::<DeviceClaims>(token, key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenRejection::Expired,
                _ => TokenRejection::Invalid,
            },
        )?;
        let claims = data.claims;
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
    use base64::Engine;

    fn keys() -> JwtKeys {
        let dir = tempfile::tempdir().unwrap();
        JwtKeys::load_or_create(dir.path(), "iss", "aud").unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn signs_and_verifies_and_keeps_the_key_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let a = JwtKeys::load_or_create(dir.path(), "iss", "aud").unwrap();
        let b = JwtKeys::load_or_create(dir.path(), "iss", "aud").unwrap();
        assert_eq!(a.kid(), b.kid());
        let device = DeviceId::generate();
        let (token, _) = a.sign_access(&device, now(), 3600).unwrap();
        assert_eq!(b.verify_access(&token).unwrap().device, device);
        let key_file = std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            key_file.metadata().unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn rejects_expired_foreign_and_tampered_tokens() {
        let k = keys();
        let device = DeviceId::generate();
        let (expired, _) = k.sign_access(&device, now() - 7200, 3600).unwrap();
        assert_eq!(k.verify_access(&expired), Err(TokenRejection::Expired));
        let other = keys();
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
        // alg none
        let none_header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let good_claims = good.split('.').nth(1).unwrap();
        assert_eq!(
            k.verify_access(&format!("{none_header}.{good_claims}.")),
            Err(TokenRejection::Invalid)
        );
    }

    #[test]
    fn wrong_audience_is_invalid() {
        let k = keys();
        let device = DeviceId::generate();
        let (token, _) = k.sign_access(&device, now(), 3600).unwrap();
        let mut validation = k.validation.clone();
        validation.set_audience(&["someone-else"]);
        let other = JwtKeys { validation, ..k };
        assert_eq!(other.verify_access(&token), Err(TokenRejection::Invalid));
    }
}
