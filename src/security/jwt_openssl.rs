//! jsonwebtoken's cryptography through OpenSSL: the process-wide [`CryptoProvider`] installed by
//! [`install`], so that nothing in the process signs or verifies through the `rsa` crate
//! (RUSTSEC-2023-0071, a timing side channel on RSA private-key operations).
//!
//! The relay itself signs and verifies access tokens with OpenSSL directly (see
//! [`crate::security::jwt`]); this provider serves every other use of jsonwebtoken in the process
//! (the black-box tests forge tokens with it). It implements the HMAC and RSA families (RS and
//! PS); the elliptic-curve and EdDSA families are refused with an error, never a panic.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};

/// The OpenSSL-backed provider.
pub static OPENSSL_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidEcdsaKey.into()),
        ed_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidEddsaKey.into()),
        compute_digest,
    },
};

/// Installs [`OPENSSL_PROVIDER`] as jsonwebtoken's process default. Idempotent; call it before
/// the first use of jsonwebtoken's `encode`/`decode` (start-up does, and so does loading a key).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: only ours is ever installed.
        let _ = OPENSSL_PROVIDER.install_default();
    });
}

fn ssl_err(e: openssl::error::ErrorStack) -> signature::Error {
    signature::Error::from_source(e)
}

fn digest_of(alg: Algorithm) -> Option<MessageDigest> {
    Some(match alg {
        Algorithm::HS256 | Algorithm::RS256 | Algorithm::PS256 => MessageDigest::sha256(),
        Algorithm::HS384 | Algorithm::RS384 | Algorithm::PS384 => MessageDigest::sha384(),
        Algorithm::HS512 | Algorithm::RS512 | Algorithm::PS512 => MessageDigest::sha512(),
        _ => return None,
    })
}

fn is_pss(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

enum SignKey {
    Hmac(PKey<Private>),
    Rsa(PKey<Private>),
}

/// Signs with OpenSSL: HMAC, RSASSA-PKCS1-v1_5 or RSASSA-PSS.
struct OpenSslSigner {
    alg: Algorithm,
    digest: MessageDigest,
    key: SignKey,
}

impl signature::Signer<Vec<u8>> for OpenSslSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let (key, rsa) = match &self.key {
            SignKey::Hmac(key) => (key, false),
            SignKey::Rsa(key) => (key, true),
        };
        let mut signer = Signer::new(self.digest, key).map_err(ssl_err)?;
        if rsa && is_pss(self.alg) {
            signer
                .set_rsa_padding(Padding::PKCS1_PSS)
                .map_err(ssl_err)?;
            signer
                .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                .map_err(ssl_err)?;
        }
        signer.sign_oneshot_to_vec(msg).map_err(ssl_err)
    }
}

impl JwtSigner for OpenSslSigner {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

enum VerifyKey {
    Hmac(PKey<Private>),
    Rsa(PKey<Public>),
}

/// Verifies with OpenSSL; HMAC tags are compared in constant time.
struct OpenSslVerifier {
    alg: Algorithm,
    digest: MessageDigest,
    key: VerifyKey,
}

impl signature::Verifier<Vec<u8>> for OpenSslVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match &self.key {
            VerifyKey::Hmac(key) => {
                let mut signer = Signer::new(self.digest, key).map_err(ssl_err)?;
                let tag = signer.sign_oneshot_to_vec(msg).map_err(ssl_err)?;
                tag.len() == signature.len() && openssl::memcmp::eq(&tag, signature)
            }
            VerifyKey::Rsa(key) => {
                let mut verifier = Verifier::new(self.digest, key).map_err(ssl_err)?;
                if is_pss(self.alg) {
                    verifier
                        .set_rsa_padding(Padding::PKCS1_PSS)
                        .map_err(ssl_err)?;
                    verifier
                        .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                        .map_err(ssl_err)?;
                }
                verifier.verify_oneshot(signature, msg).unwrap_or(false)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for OpenSslVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn invalid_key(e: impl std::fmt::Display) -> Error {
    ErrorKind::InvalidRsaKey(e.to_string()).into()
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let alg = *alg;
    let digest = digest_of(alg).ok_or_else(|| Error::from(ErrorKind::InvalidAlgorithm))?;
    let key = if is_hmac(alg) {
        SignKey::Hmac(PKey::hmac(key.as_bytes()).map_err(invalid_key)?)
    } else {
        // jsonwebtoken hands RSA private keys over as PKCS#1 DER.
        let rsa = Rsa::private_key_from_der(key.as_bytes()).map_err(invalid_key)?;
        SignKey::Rsa(PKey::from_rsa(rsa).map_err(invalid_key)?)
    };
    Ok(Box::new(OpenSslSigner { alg, digest, key }))
}

fn rsa_public(key: &DecodingKey) -> Result<PKey<Public>, Error> {
    let rsa = match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => {
            Rsa::public_key_from_der_pkcs1(der).map_err(invalid_key)?
        }
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            let n = openssl::bn::BigNum::from_slice(n).map_err(invalid_key)?;
            let e = openssl::bn::BigNum::from_slice(e).map_err(invalid_key)?;
            Rsa::from_public_components(n, e).map_err(invalid_key)?
        }
    };
    PKey::from_rsa(rsa).map_err(invalid_key)
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let alg = *alg;
    let digest = digest_of(alg).ok_or_else(|| Error::from(ErrorKind::InvalidAlgorithm))?;
    let key = if is_hmac(alg) {
        let DecodingKeyKind::SecretOrDer(secret) = key.kind() else {
            return Err(ErrorKind::InvalidKeyFormat.into());
        };
        VerifyKey::Hmac(PKey::hmac(secret).map_err(invalid_key)?)
    } else {
        VerifyKey::Rsa(rsa_public(key)?)
    };
    Ok(Box::new(OpenSslVerifier { alg, digest, key }))
}

fn rsa_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let rsa = Rsa::private_key_from_der(der).map_err(invalid_key)?;
    Ok((rsa.n().to_vec(), rsa.e().to_vec()))
}

fn rsa_components_from_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let rsa = Rsa::public_key_from_der_pkcs1(der).map_err(invalid_key)?;
    Ok((rsa.n().to_vec(), rsa.e().to_vec()))
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let md = match hash {
        ThumbprintHash::SHA256 => MessageDigest::sha256(),
        ThumbprintHash::SHA384 => MessageDigest::sha384(),
        ThumbprintHash::SHA512 => MessageDigest::sha512(),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(openssl::hash::hash(md, data).map_err(invalid_key)?.to_vec())
}
