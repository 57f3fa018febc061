//! C2SP signed notes (Ed25519, via openssl) and tlog checkpoints for the audit log.
//!
//! The relay signs each tree head of its audit log as a C2SP `tlog-checkpoint`
//! wrapped in a C2SP `signed-note`, so that the format can be checked with
//! standard tooling (golang.org/x/mod/sumdb/note is the reference
//! implementation). Notes are appended to a file one after another, each
//! followed by one empty line; [`split_notes`] reads such a file back and
//! reports a torn last entry left by a crash.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// Signature type byte of Ed25519 in C2SP signed-note.
const ALG_ED25519: u8 = 0x01;

/// Prefix of every signature line: U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Most signature lines [`NoteVerifier::open`] will look at (the spec requires at least 16).
const MAX_SIGNATURES: usize = 100;

/// Length of an Ed25519 signature in bytes.
const ED25519_SIG_LEN: usize = 64;

/// Errors from signing, opening and parsing notes and checkpoints.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// The note (or the text to sign) breaks the signed-note format.
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    /// A key name is empty or holds whitespace, '+' or control characters.
    #[error("invalid key name {0:?}: it must be non-empty with no whitespace, '+' or control characters")]
    BadKeyName(String),
    /// A verifier key string is malformed, of another algorithm, or has a wrong key id.
    #[error("invalid verifier key: {0}")]
    BadVerifierKey(&'static str),
    /// A private key is not an Ed25519 key.
    #[error("invalid private key: {0}")]
    BadPrivateKey(&'static str),
    /// The note has no signature line by the verifier's key.
    #[error("note has no signature by key {name}+{key_id}")]
    NoSignature {
        /// The verifier's key name.
        name: String,
        /// The verifier's key id, as 8 hex digits.
        key_id: String,
    },
    /// A signature line by the verifier's key does not verify.
    #[error("signature by key {name}+{key_id} does not verify")]
    BadSignature {
        /// The verifier's key name.
        name: String,
        /// The verifier's key id, as 8 hex digits.
        key_id: String,
    },
    /// A note text is not a well-formed checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    /// OpenSSL reported an error.
    #[error("openssl error: {0}")]
    OpenSsl(String),
}

impl From<openssl::error::ErrorStack> for NoteError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        NoteError::OpenSsl(e.to_string())
    }
}

/// Checks a key name per C2SP signed-note: non-empty, no Unicode spaces, no '+'.
///
/// Control characters are also refused, since a note may not contain them.
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::BadKeyName(name.to_owned()));
    }
    Ok(())
}

/// The C2SP key id of an Ed25519 key: SHA-256(name || "\n" || 0x01 || key)[:4].
fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public_key);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Renders a key id as the 8 lowercase hex digits of a verifier key.
fn key_id_hex(id: [u8; 4]) -> String {
    format!("{:08x}", u32::from_be_bytes(id))
}

/// True when `s` holds an ASCII control character other than newline.
fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 && b != b'\n')
}

/// The raw 32-byte public key of an Ed25519 openssl key.
fn raw_public(pkey: &PKey<Private>) -> Result<[u8; 32], NoteError> {
    let raw = pkey.raw_public_key()?;
    <[u8; 32]>::try_from(raw.as_slice())
        .map_err(|_| NoteError::BadPrivateKey("Ed25519 public key is not 32 bytes"))
}

/// Signs notes with one Ed25519 key under one key name (the log's signing identity).
pub struct NoteSigner {
    name: String,
    pkey: PKey<Private>,
    key_id: [u8; 4],
}

impl NoteSigner {
    /// Creates a signer with a fresh random Ed25519 key.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        Self::from_pkey(name, PKey::generate_ed25519()?)
    }

    /// Loads a signer from a PKCS#8 PEM Ed25519 private key written by [`NoteSigner::to_pkcs8_pem`].
    pub fn from_pkcs8_pem(name: &str, pem: &[u8]) -> Result<Self, NoteError> {
        check_name(name)?;
        Self::from_pkey(name, PKey::private_key_from_pem(pem)?)
    }

    /// Builds a signer from an openssl key, checking the name and the key type.
    fn from_pkey(name: &str, pkey: PKey<Private>) -> Result<Self, NoteError> {
        check_name(name)?;
        if pkey.id() != Id::ED25519 {
            return Err(NoteError::BadPrivateKey("not an Ed25519 key"));
        }
        let public = raw_public(&pkey)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, &public),
            pkey,
        })
    }

    /// Exports the private key as PKCS#8 PEM; the caller stores it with mode 0600.
    pub fn to_pkcs8_pem(&self) -> Result<Vec<u8>, NoteError> {
        Ok(self.pkey.private_key_to_pem_pkcs8()?)
    }

    /// The key name that appears in this signer's signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public verifier for this signer's key, to publish or to check our own notes.
    pub fn verifier(&self) -> Result<NoteVerifier, NoteError> {
        let public = raw_public(&self.pkey)?;
        Ok(NoteVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_raw: public,
            pkey: PKey::public_key_from_raw_bytes(&public, Id::ED25519)?,
        })
    }

    /// Signs `text` and returns the whole note (text, blank line, one signature line).
    ///
    /// The text must be non-empty, end with "\n", hold no ASCII control
    /// character other than newline, and (stricter than the spec, so that
    /// notes in a [`split_notes`] file stay unambiguous) hold no empty line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if text.is_empty() {
            return Err(NoteError::MalformedNote("text is empty"));
        }
        if !text.ends_with('\n') {
            return Err(NoteError::MalformedNote("text does not end with a newline"));
        }
        if has_control(text) {
            return Err(NoteError::MalformedNote(
                "text holds a control character other than newline",
            ));
        }
        if text.starts_with('\n') || text.contains("\n\n") {
            return Err(NoteError::MalformedNote("text holds an empty line"));
        }
        let mut signer = Signer::new_without_digest(&self.pkey)?;
        let sig = signer.sign_oneshot_to_vec(text.as_bytes())?;
        let mut blob = Vec::with_capacity(4 + sig.len());
        blob.extend_from_slice(&self.key_id);
        blob.extend_from_slice(&sig);
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_id", &key_id_hex(self.key_id))
            .finish_non_exhaustive()
    }
}

/// Checks notes against one trusted Ed25519 public key (what auditors and the relay itself use).
#[derive(Clone)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; 4],
    public_raw: [u8; 32],
    pkey: PKey<Public>,
}

impl NoteVerifier {
    /// Parses a verifier key string `<name>+<8 hex digit key id>+<base64(0x01 || public key)>`.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let (name, rest) = vkey
            .split_once('+')
            .ok_or(NoteError::BadVerifierKey("missing '+' after the key name"))?;
        let (id_hex, key_b64) = rest
            .split_once('+')
            .ok_or(NoteError::BadVerifierKey("missing '+' after the key id"))?;
        check_name(name)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::BadVerifierKey("key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16)
            .map_err(|_| NoteError::BadVerifierKey("key id is not 8 hex digits"))?
            .to_be_bytes();
        let key = STANDARD
            .decode(key_b64)
            .map_err(|_| NoteError::BadVerifierKey("key is not valid base64"))?;
        let (alg, public) = key
            .split_first()
            .ok_or(NoteError::BadVerifierKey("key is empty"))?;
        if *alg != ALG_ED25519 {
            return Err(NoteError::BadVerifierKey(
                "unsupported signature algorithm (only Ed25519, 0x01)",
            ));
        }
        let public_raw = <[u8; 32]>::try_from(public)
            .map_err(|_| NoteError::BadVerifierKey("Ed25519 public key is not 32 bytes"))?;
        if key_id(name, &public_raw) != id {
            return Err(NoteError::BadVerifierKey(
                "key id does not match the name and key",
            ));
        }
        let pkey = PKey::public_key_from_raw_bytes(&public_raw, Id::ED25519)
            .map_err(|_| NoteError::BadVerifierKey("not a valid Ed25519 public key"))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: id,
            public_raw,
            pkey,
        })
    }

    /// Renders the verifier key string that [`NoteVerifier::parse`] reads.
    pub fn encode(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(ALG_ED25519);
        key.extend_from_slice(&self.public_raw);
        format!(
            "{}+{}+{}",
            self.name,
            key_id_hex(self.key_id),
            STANDARD.encode(key)
        )
    }

    /// The key name this verifier matches in signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id this verifier matches in signatures.
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// Checks that `note` carries a valid signature by this key (signature lines from other keys are ignored; a line by this name and key id whose signature fails is an error); returns the note's text.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        if has_control(note) {
            return Err(NoteError::MalformedNote(
                "note holds a control character other than newline",
            ));
        }
        let split = note.rfind("\n\n").ok_or(NoteError::MalformedNote(
            "no blank line before the signatures",
        ))?;
        let text = &note[..split + 1];
        let sigs = &note[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::MalformedNote(
                "signature block is empty or does not end with a newline",
            ));
        }
        let mut verified = false;
        for (count, line) in sigs[..sigs.len() - 1].split('\n').enumerate() {
            if count >= MAX_SIGNATURES {
                return Err(NoteError::MalformedNote("too many signatures"));
            }
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or(NoteError::MalformedNote(
                    "signature line does not start with an em dash and a space",
                ))?;
            let (name, b64) = rest.split_once(' ').ok_or(NoteError::MalformedNote(
                "signature line has no space after the key name",
            ))?;
            if check_name(name).is_err() {
                return Err(NoteError::MalformedNote(
                    "signature line has an invalid key name",
                ));
            }
            let blob = STANDARD
                .decode(b64)
                .map_err(|_| NoteError::MalformedNote("signature is not valid base64"))?;
            if blob.len() < 5 {
                return Err(NoteError::MalformedNote("signature is too short"));
            }
            if name != self.name || blob[..4] != self.key_id {
                continue;
            }
            let sig = &blob[4..];
            let ok = sig.len() == ED25519_SIG_LEN && {
                let mut verifier = Verifier::new_without_digest(&self.pkey)?;
                verifier.verify_oneshot(sig, text.as_bytes())?
            };
            if !ok {
                return Err(NoteError::BadSignature {
                    name: self.name.clone(),
                    key_id: key_id_hex(self.key_id),
                });
            }
            verified = true;
        }
        if !verified {
            return Err(NoteError::NoSignature {
                name: self.name.clone(),
                key_id: key_id_hex(self.key_id),
            });
        }
        Ok(text)
    }
}

impl std::fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NoteVerifier").field(&self.encode()).finish()
    }
}

/// A tlog checkpoint (C2SP tlog-checkpoint): origin line, tree size (decimal, no leading zeros), base64 root hash, then extension lines. We add one extension line `time <epoch ms>` (checkpoints must say when they were made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log identity; must be a single non-empty line.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The RFC 6962 root hash of the tree at `size`.
    pub root: Hash,
    /// When the checkpoint was made, in milliseconds since the Unix epoch.
    pub time_ms: i64,
}

/// Prefix of the checkpoint's time extension line.
const TIME_PREFIX: &str = "time ";

impl Checkpoint {
    /// Renders the note text to sign: origin, size, base64 root, `time <ms>`, each ending in "\n".
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{TIME_PREFIX}{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root),
            self.time_ms
        )
    }

    /// Parses the text written by [`Checkpoint::to_text`], accepting only its canonical form.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::MalformedCheckpoint(
                "text does not end with a newline",
            ))?;
        if has_control(text) {
            return Err(NoteError::MalformedCheckpoint(
                "text holds a control character other than newline",
            ));
        }
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, time] = lines[..] else {
            return Err(NoteError::MalformedCheckpoint(if lines.len() < 4 {
                "expected origin, size, root hash and time lines"
            } else {
                "unexpected extension lines after the time line"
            }));
        };
        if origin.is_empty() {
            return Err(NoteError::MalformedCheckpoint("origin is empty"));
        }
        let size_val: u64 = size
            .parse()
            .map_err(|_| NoteError::MalformedCheckpoint("tree size is not a decimal number"))?;
        if size_val.to_string() != size {
            return Err(NoteError::MalformedCheckpoint(
                "tree size is not canonical decimal (leading zeros or sign)",
            ));
        }
        let root_bytes = STANDARD
            .decode(root)
            .map_err(|_| NoteError::MalformedCheckpoint("root hash is not valid base64"))?;
        let root_val = <Hash>::try_from(root_bytes.as_slice())
            .map_err(|_| NoteError::MalformedCheckpoint("root hash is not 32 bytes"))?;
        let time_str = time
            .strip_prefix(TIME_PREFIX)
            .ok_or(NoteError::MalformedCheckpoint(
                "missing `time <epoch ms>` line",
            ))?;
        let time_ms: i64 = time_str
            .parse()
            .map_err(|_| NoteError::MalformedCheckpoint("time is not a decimal number"))?;
        if time_ms.to_string() != time_str {
            return Err(NoteError::MalformedCheckpoint(
                "time is not canonical decimal (leading zeros or sign)",
            ));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size: size_val,
            root: root_val,
            time_ms,
        })
    }
}

/// A file of notes appended one after another, each followed by one empty line. Returns the complete notes in order and whether the file ended in a torn (incomplete) last entry, with the byte length of the complete part, so a writer can truncate a torn tail after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteFile<'a> {
    /// The complete notes, in file order, each without its trailing empty line.
    pub notes: Vec<&'a str>,
    /// Byte length of the prefix of the file made of complete entries.
    pub complete_len: usize,
    /// True when bytes follow the last complete entry (a torn append).
    pub torn: bool,
}

/// Splits a note file into its complete notes and reports a torn tail.
///
/// Each entry is a note (text lines, one empty line, signature lines) followed
/// by one empty line, so an entry ends at its second empty line. This is a
/// structural split only: callers must still [`NoteVerifier::open`] each note.
pub fn split_notes(file: &str) -> NoteFile<'_> {
    let mut notes = Vec::new();
    let mut entry_start = 0;
    let mut line_start = 0;
    let mut empty_lines = 0;
    for (i, b) in file.bytes().enumerate() {
        if b != b'\n' {
            continue;
        }
        if i == line_start {
            empty_lines += 1;
            if empty_lines == 2 {
                notes.push(&file[entry_start..i]);
                entry_start = i + 1;
                empty_lines = 0;
            }
        }
        line_start = i + 1;
    }
    NoteFile {
        notes,
        complete_len: entry_start,
        torn: entry_start < file.len(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The example of golang.org/x/mod/sumdb/note (note.go and note_test.go).
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const PETER_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                              then you don't know what your problem is.\n";
    const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                              then you don't know what your problem is.\n\
                              \n\
                              \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn peter_signer() -> NoteSigner {
        let skey = STANDARD.decode(PETER_SKEY_B64).unwrap();
        assert_eq!(skey[0], ALG_ED25519);
        let pkey = PKey::private_key_from_raw_bytes(&skey[1..], Id::ED25519).unwrap();
        NoteSigner::from_pkey("PeterNeumann", pkey).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "relay.beepmyphone.example/audit".to_owned(),
            size: 42,
            root: [7; 32],
            time_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn go_reference_vector_opens() {
        let v = NoteVerifier::parse(PETER_VKEY).unwrap();
        assert_eq!(v.name(), "PeterNeumann");
        assert_eq!(v.key_id(), [0xc7, 0x4f, 0x20, 0xa3]);
        assert_eq!(v.encode(), PETER_VKEY);
        assert_eq!(v.open(PETER_NOTE).unwrap(), PETER_TEXT);
        let tampered = PETER_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            v.open(&tampered),
            Err(NoteError::BadSignature {
                name: "PeterNeumann".to_owned(),
                key_id: "c74f20a3".to_owned()
            })
        );
    }

    #[test]
    fn go_reference_vector_signs_byte_for_byte() {
        let s = peter_signer();
        assert_eq!(s.verifier().unwrap().encode(), PETER_VKEY);
        assert_eq!(s.sign(PETER_TEXT).unwrap(), PETER_NOTE);
    }

    #[test]
    fn go_reference_verifier_key_manglings_fail() {
        // As in note_test.go TestNewVerifier: every proper substring and every
        // single-byte increment of the key must be rejected.
        let b = PETER_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i != 0 || j != b.len() {
                    assert!(NoteVerifier::parse(&PETER_VKEY[i..j]).is_err(), "{i}..{j}");
                }
            }
        }
        for i in 0..b.len() {
            let mut m = b.to_vec();
            m[i] += 1;
            let m = String::from_utf8(m).unwrap();
            assert!(NoteVerifier::parse(&m).is_err(), "{m}");
        }
    }

    #[test]
    fn sign_open_round_trip_and_pem() {
        let s = NoteSigner::generate("relay.example/audit").unwrap();
        let v = s.verifier().unwrap();
        let note = s.sign("hello\nworld\n").unwrap();
        assert_eq!(v.open(&note).unwrap(), "hello\nworld\n");
        assert_eq!(
            NoteVerifier::parse(&v.encode()).unwrap().encode(),
            v.encode()
        );

        let pem = s.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let s2 = NoteSigner::from_pkcs8_pem("relay.example/audit", &pem).unwrap();
        assert_eq!(s2.verifier().unwrap().encode(), v.encode());
        assert_eq!(v.open(&s2.sign("x\n").unwrap()).unwrap(), "x\n");

        let debug = format!("{s:?}");
        assert!(debug.contains("relay.example/audit"));
        assert!(!debug.contains("PRIVATE"));
        assert_eq!(s.name(), "relay.example/audit");
    }

    #[test]
    fn non_ed25519_pem_is_rejected() {
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let pem = PKey::from_ec_key(ec)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        assert_eq!(
            NoteSigner::from_pkcs8_pem("a", &pem).unwrap_err(),
            NoteError::BadPrivateKey("not an Ed25519 key")
        );
        assert!(matches!(
            NoteSigner::from_pkcs8_pem("a", b"garbage"),
            Err(NoteError::OpenSsl(_))
        ));
    }

    #[test]
    fn bad_key_names() {
        for name in ["", "a b", "a+b", "a\tb", "a\u{2003}b", "a\nb"] {
            assert_eq!(
                NoteSigner::generate(name).unwrap_err(),
                NoteError::BadKeyName(name.to_owned())
            );
        }
    }

    #[test]
    fn sign_rejects_bad_text() {
        let s = NoteSigner::generate("k").unwrap();
        for text in ["", "no newline", "a\n\nb\n", "\nfoo\n", "a\rb\n", "a\n\n"] {
            assert!(
                matches!(s.sign(text), Err(NoteError::MalformedNote(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn open_failures() {
        let s = NoteSigner::generate("relay.example/audit").unwrap();
        let v = s.verifier().unwrap();
        let note = s.sign("hello\n").unwrap();
        let bad_sig = NoteError::BadSignature {
            name: v.name().to_owned(),
            key_id: key_id_hex(v.key_id()),
        };
        let no_sig = NoteError::NoSignature {
            name: v.name().to_owned(),
            key_id: key_id_hex(v.key_id()),
        };

        // A changed text byte.
        assert_eq!(
            v.open(&note.replacen("hello", "hellp", 1)),
            Err(bad_sig.clone())
        );

        // A changed signature byte (keep the key id, flip a signature bit).
        let (head, b64) = note.trim_end().rsplit_once(' ').unwrap();
        let mut blob = STANDARD.decode(b64).unwrap();
        blob[10] ^= 1;
        let changed = format!("{head} {}\n", STANDARD.encode(&blob));
        assert_eq!(v.open(&changed), Err(bad_sig.clone()));
        // A truncated signature by this key.
        let short = format!("{head} {}\n", STANDARD.encode(&blob[..40]));
        assert_eq!(v.open(&short), Err(bad_sig.clone()));

        // Another key's verifier, same name: its key id differs, so the line is foreign.
        let other = NoteSigner::generate("relay.example/audit").unwrap();
        let ov = other.verifier().unwrap();
        assert!(matches!(ov.open(&note), Err(NoteError::NoSignature { .. })));

        // A note with only foreign signatures.
        let foreign = NoteSigner::generate("someone.else").unwrap();
        assert_eq!(
            v.open(&foreign.sign("hello\n").unwrap()),
            Err(no_sig.clone())
        );

        // Foreign lines are ignored next to a good one, in either order.
        let foreign_line = foreign.sign("hello\n").unwrap();
        let foreign_line = foreign_line.rsplit_once("\n\n").unwrap().1;
        let both = format!("{note}{foreign_line}");
        assert_eq!(v.open(&both).unwrap(), "hello\n");
        let both = format!(
            "hello\n\n{foreign_line}{}",
            note.rsplit_once("\n\n").unwrap().1
        );
        assert_eq!(v.open(&both).unwrap(), "hello\n");

        // A good signature plus a bad one by the same key is rejected.
        let good_line = note.rsplit_once("\n\n").unwrap().1;
        let bad_line = changed.rsplit_once("\n\n").unwrap().1;
        assert_eq!(
            v.open(&format!("hello\n\n{good_line}{bad_line}")),
            Err(bad_sig)
        );

        // Malformed notes.
        for bad in [
            "hello\n",
            "hello\n\n",
            "hello\n\n\u{2014} relay.example/audit AAAA",
            "hello\n\n- relay.example/audit AAAAAAAA\n",
            "hello\n\n\u{2014} relay.example/audit\n",
            "hello\n\n\u{2014} relay.example/audit !!!!\n",
            "hello\n\n\u{2014} relay.example/audit AAAA\n",
            "he\rllo\n\n\u{2014} relay.example/audit AAAAAAAA\n",
        ] {
            assert!(
                matches!(v.open(bad), Err(NoteError::MalformedNote(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn verifier_key_errors() {
        let s = NoteSigner::generate("relay.example/audit").unwrap();
        let vkey = s.verifier().unwrap().encode();
        let (name, rest) = vkey.split_once('+').unwrap();
        let (id, key) = rest.split_once('+').unwrap();

        // Wrong key id.
        let mut id_num = u32::from_str_radix(id, 16).unwrap();
        id_num ^= 1;
        let wrong_id = format!("{name}+{id_num:08x}+{key}");
        assert_eq!(
            NoteVerifier::parse(&wrong_id).unwrap_err(),
            NoteError::BadVerifierKey("key id does not match the name and key")
        );

        // Wrong algorithm byte.
        let mut raw = STANDARD.decode(key).unwrap();
        raw[0] = 0x02;
        let wrong_alg = format!("{name}+{id}+{}", STANDARD.encode(&raw));
        assert_eq!(
            NoteVerifier::parse(&wrong_alg).unwrap_err(),
            NoteError::BadVerifierKey("unsupported signature algorithm (only Ed25519, 0x01)")
        );

        // Wrong key length, bad base64, bad hex, bad name, missing parts.
        let short = format!("{name}+{id}+{}", STANDARD.encode(&raw[..20]));
        assert!(matches!(
            NoteVerifier::parse(&short),
            Err(NoteError::BadVerifierKey(_))
        ));
        for bad in [
            format!("{name}+{id}+!!!"),
            format!("{name}+zzzzzzzz+{key}"),
            format!("{name}+{id}0+{key}"),
            format!("{name}+{id}"),
            name.to_owned(),
        ] {
            assert!(
                matches!(NoteVerifier::parse(&bad), Err(NoteError::BadVerifierKey(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            NoteVerifier::parse(&format!("+{id}+{key}")),
            Err(NoteError::BadKeyName(_))
        ));
    }

    #[test]
    fn checkpoint_round_trip_and_signing() {
        let c = checkpoint();
        let text = c.to_text();
        assert_eq!(
            text,
            format!(
                "relay.beepmyphone.example/audit\n42\n{}\ntime 1700000000123\n",
                STANDARD.encode([7u8; 32])
            )
        );
        assert_eq!(Checkpoint::parse(&text).unwrap(), c);

        let s = NoteSigner::generate("relay.beepmyphone.example/audit").unwrap();
        let note = s.sign(&text).unwrap();
        let opened = s.verifier().unwrap().open(&note).unwrap();
        assert_eq!(Checkpoint::parse(opened).unwrap(), c);

        let zero = Checkpoint { size: 0, ..c };
        assert_eq!(Checkpoint::parse(&zero.to_text()).unwrap(), zero);
    }

    #[test]
    fn checkpoint_rejections() {
        let root = STANDARD.encode([7u8; 32]);
        let cases = [
            (format!("o\n042\n{root}\ntime 1\n"), "leading zeros"),
            (format!("o\n00\n{root}\ntime 1\n"), "zero with leading zero"),
            (format!("o\n+42\n{root}\ntime 1\n"), "plus sign"),
            (format!("o\n-1\n{root}\ntime 1\n"), "negative size"),
            (format!("o\n\n{root}\ntime 1\n"), "empty size"),
            (format!("o\n42\n!!{root}\ntime 1\n"), "bad base64"),
            (
                format!("o\n42\n{}\ntime 1\n", STANDARD.encode([7u8; 31])),
                "short root",
            ),
            (
                format!("o\n42\n{}\ntime 1\n", STANDARD.encode([7u8; 33])),
                "long root",
            ),
            (format!("o\n42\n{root}\n"), "missing time line"),
            (format!("o\n42\n{root}\nclock 1\n"), "wrong time line"),
            (format!("o\n42\n{root}\ntime 01\n"), "time leading zero"),
            (format!("o\n42\n{root}\ntime x\n"), "time not a number"),
            (format!("o\n42\n{root}\ntime 1\nextra\n"), "extra line"),
            (format!("o\n42\n{root}\ntime 1"), "no final newline"),
            (format!("\n42\n{root}\ntime 1\n"), "empty origin"),
            (format!("o\n42\n{root}\n\ntime 1\n"), "empty line"),
            (
                format!("o\n18446744073709551616\n{root}\ntime 1\n"),
                "size overflow",
            ),
        ];
        for (text, why) in cases {
            assert!(
                matches!(
                    Checkpoint::parse(&text),
                    Err(NoteError::MalformedCheckpoint(_))
                ),
                "{why}: {text:?}"
            );
        }
        let neg = format!("o\n42\n{root}\ntime -5\n");
        assert_eq!(Checkpoint::parse(&neg).unwrap().time_ms, -5);
    }

    #[test]
    fn split_notes_counts() {
        let s = NoteSigner::generate("k").unwrap();
        let notes: Vec<String> = (0..3)
            .map(|i| s.sign(&format!("entry {i}\nline\n")).unwrap())
            .collect();

        let empty = split_notes("");
        assert_eq!(
            empty,
            NoteFile {
                notes: vec![],
                complete_len: 0,
                torn: false
            }
        );

        let one = format!("{}\n", notes[0]);
        let f = split_notes(&one);
        assert_eq!(f.notes, vec![notes[0].as_str()]);
        assert_eq!(f.complete_len, one.len());
        assert!(!f.torn);

        let three: String = notes.iter().map(|n| format!("{n}\n")).collect();
        let f = split_notes(&three);
        assert_eq!(
            f.notes,
            notes.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(f.complete_len, three.len());
        assert!(!f.torn);
        let v = s.verifier().unwrap();
        for (i, n) in f.notes.iter().enumerate() {
            assert_eq!(v.open(n).unwrap(), format!("entry {i}\nline\n"));
        }
    }

    #[test]
    fn split_notes_torn_tail_at_every_offset() {
        let s = NoteSigner::generate("k").unwrap();
        let notes: Vec<String> = (0..3)
            .map(|i| s.sign(&format!("entry \u{e9} {i}\n")).unwrap())
            .collect();
        let file: String = notes.iter().map(|n| format!("{n}\n")).collect();
        let last_start = file.len() - notes[2].len() - 1;
        for cut in last_start..=file.len() {
            if !file.is_char_boundary(cut) {
                continue;
            }
            let f = split_notes(&file[..cut]);
            if cut == file.len() {
                assert_eq!(f.notes.len(), 3);
                assert!(!f.torn);
                assert_eq!(f.complete_len, cut);
            } else {
                assert_eq!(
                    f.notes,
                    vec![notes[0].as_str(), notes[1].as_str()],
                    "cut {cut}"
                );
                assert_eq!(f.complete_len, last_start, "cut {cut}");
                assert_eq!(f.torn, cut != last_start, "cut {cut}");
            }
        }
    }

    proptest! {
        #[test]
        fn checkpoint_text_round_trip(
            origin in "[a-z0-9./_-]{1,40}",
            size in any::<u64>(),
            root in any::<[u8; 32]>(),
            time_ms in any::<i64>(),
        ) {
            let c = Checkpoint { origin, size, root, time_ms };
            let text = c.to_text();
            prop_assert_eq!(Checkpoint::parse(&text).unwrap(), c);
        }
    }
}
