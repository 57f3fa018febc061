//! The audit log's checkpoint-signing key: an Ed25519 key in the keys directory
//! (`audit-signing.pem`, PKCS#8, mode 0600), made on first start, and its verifier key beside it
//! (`audit-signing.vkey`, the C2SP `name+id+key` string) for anyone who checks checkpoints.
//!
//! The key's name, which is also the checkpoints' origin line, is `beepmyphone.audit/<id>`, the id
//! being the first 8 hex digits of the SHA-256 of the public key: two relays' logs never share an
//! origin.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::note::{NoteSigner, NoteVerifier};
use crate::crypto::files::write_new;

/// The private key's file in the keys directory.
pub const KEY_FILE: &str = "audit-signing.pem";
/// The verifier key's file in the keys directory.
pub const VERIFIER_FILE: &str = "audit-signing.vkey";
/// The prefix of the key's name (and of every checkpoint's origin).
pub const NAME_PREFIX: &str = "beepmyphone.audit";

/// Why the key could not be had.
#[derive(Debug, thiserror::Error)]
#[error("audit signing key {path}: {why}")]
pub struct SigningKeyError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub why: String,
}

fn error(path: &Path, why: impl std::fmt::Display) -> SigningKeyError {
    SigningKeyError {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// The name a key with this PKCS#8 PEM gets: derived from its public key, so the file alone
/// says which log it signs.
fn name_of(pem: &[u8], path: &Path) -> Result<String, SigningKeyError> {
    let key = openssl::pkey::PKey::private_key_from_pem(pem).map_err(|e| error(path, e))?;
    let public = key.raw_public_key().map_err(|e| error(path, e))?;
    Ok(format!(
        "{NAME_PREFIX}/{}",
        &hex::encode(Sha256::digest(&public))[..8]
    ))
}

/// Loads the key, creating it (and its verifier file) when there is none. Blocking.
pub fn load_or_create(keys_dir: &Path) -> Result<NoteSigner, SigningKeyError> {
    let path = keys_dir.join(KEY_FILE);
    if !path.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(keys_dir)
            .map_err(|e| error(keys_dir, e))?;
        let fresh = NoteSigner::generate("beepmyphone.audit/new").map_err(|e| error(&path, e))?;
        let pem = fresh.to_pkcs8_pem().map_err(|e| error(&path, e))?;
        match write_new(&path, &pem) {
            Ok(()) => {}
            // Another relay sharing the directory made one first: use that.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error(&path, e)),
        }
    }
    let signer = load(keys_dir)?;
    let vkey_path = keys_dir.join(VERIFIER_FILE);
    if !vkey_path.exists() {
        let vkey = signer
            .verifier()
            .map_err(|e| error(&vkey_path, e))?
            .encode();
        match write_new(&vkey_path, format!("{vkey}\n").as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error(&vkey_path, e)),
        }
    }
    Ok(signer)
}

/// Loads the key; an error when there is none.
pub fn load(keys_dir: &Path) -> Result<NoteSigner, SigningKeyError> {
    let path = keys_dir.join(KEY_FILE);
    let pem = std::fs::read(&path).map_err(|e| error(&path, e))?;
    let name = name_of(&pem, &path)?;
    NoteSigner::from_pkcs8_pem(&name, &pem).map_err(|e| error(&path, e))
}

/// The verifier key: from `vkey` when given (a pinned key), else derived from the private key in
/// the keys directory (whoever holds that can sign anyway).
pub fn verifier(keys_dir: &Path, vkey: Option<&str>) -> Result<NoteVerifier, SigningKeyError> {
    match vkey {
        Some(text) => NoteVerifier::parse(text.trim()).map_err(|e| SigningKeyError {
            path: "--key".into(),
            why: e.to_string(),
        }),
        None => {
            let path = keys_dir.join(KEY_FILE);
            load(keys_dir)?.verifier().map_err(|e| error(&path, e))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_names_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!(first.name(), again.name());
        assert!(first.name().starts_with("beepmyphone.audit/"));
        assert_eq!(first.name().len(), NAME_PREFIX.len() + 9);
        let vkey = std::fs::read_to_string(dir.path().join(VERIFIER_FILE)).unwrap();
        let pinned = verifier(dir.path(), Some(&vkey)).unwrap();
        assert_eq!(pinned.encode(), first.verifier().unwrap().encode());
        let note = first.sign("hello\n").unwrap();
        assert_eq!(pinned.open(&note).unwrap(), "hello\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another directory, another key, another name.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap().name(), first.name());
        assert!(verifier(dir.path(), Some("not a key")).is_err());
        assert!(load(other.path().join("missing").as_path()).is_err());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod more_tests {
    use super::*;

    #[test]
    fn a_missing_or_foreign_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = verifier(dir.path(), None).unwrap_err();
        assert!(missing.to_string().contains(KEY_FILE), "{missing}");
        // An RSA key where the Ed25519 key should be.
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pem = openssl::pkey::PKey::from_rsa(rsa)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        std::fs::write(dir.path().join(KEY_FILE), pem).unwrap();
        assert!(load(dir.path()).is_err());
        std::fs::write(dir.path().join(KEY_FILE), b"not a key").unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
