//! The one envelope every sealed value uses:
//!
//! ```text
//! version (1 byte, 2) ‖ key id (u32, big-endian) ‖ algorithm (1 byte) ‖ nonce ‖ ciphertext ‖ tag (16)
//! ```
//!
//! The nonce's length is the algorithm's ([`Algorithm::nonce_len`]). The associated data is the
//! header (version, key id, algorithm) followed by the value's place, its [`Context`]: table,
//! column and row id, each length-prefixed. A value copied to another column or row, a changed
//! header, a flipped bit or a cut-off tail all fail to open. (Version 1 was the session records'
//! format before the key ring; it is no longer read.)

use super::provider::{Algorithm, EncryptionProvider, TAG_LEN};
use super::CryptoError;
use crate::crypto::secrets::os_random;

/// The envelope's version byte.
pub const VERSION: u8 = 2;
/// Bytes before the nonce: version, key id, algorithm.
pub const HEADER_LEN: usize = 1 + 4 + 1;
/// The longest nonce of any algorithm here (XChaCha20's).
pub const MAX_NONCE_LEN: usize = 24;

/// Where a sealed value lives: what binds it to its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    /// The table.
    pub table: &'a str,
    /// The column.
    pub column: &'a str,
    /// The row's id (its primary key as text).
    pub row: &'a str,
}

/// A parsed envelope, borrowing the sealed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed<'a> {
    /// The key that sealed it.
    pub key_id: u32,
    /// The algorithm it names.
    pub algorithm: &'static Algorithm,
    header: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

/// Reads the header of `sealed`: a clear error for an unknown version or algorithm and for a
/// value too short to be one.
pub fn parse(sealed: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    let (&version, rest) = sealed.split_first().ok_or(CryptoError::Truncated)?;
    if version != VERSION {
        return Err(CryptoError::UnknownVersion(version));
    }
    let header = sealed.get(..HEADER_LEN).ok_or(CryptoError::Truncated)?;
    let key_id = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let algorithm = Algorithm::by_id(header[5]).ok_or(CryptoError::UnknownAlgorithm(header[5]))?;
    let body = &sealed[HEADER_LEN..];
    if body.len() < algorithm.nonce_len + TAG_LEN {
        return Err(CryptoError::Truncated);
    }
    let (nonce, ciphertext) = body.split_at(algorithm.nonce_len);
    Ok(Parsed {
        key_id,
        algorithm,
        header,
        nonce,
        ciphertext,
    })
}

/// The associated data: the header, then each part of the context with its length.
fn associated_data(header: &[u8], context: &Context<'_>) -> Vec<u8> {
    let parts = [context.table, context.column, context.row];
    let mut aad =
        Vec::with_capacity(header.len() + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    aad.extend_from_slice(header);
    for part in parts {
        aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Seals `plaintext` under `provider` (the key `key_id`) for `context`, with a fresh nonce from
/// the operating system's random source. One allocation: the value is encrypted in place.
pub fn seal(
    provider: &dyn EncryptionProvider,
    key_id: u32,
    context: &Context<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; MAX_NONCE_LEN];
    let nonce = nonce
        .get_mut(..provider.algorithm().nonce_len)
        .ok_or(CryptoError::Truncated)?;
    os_random(nonce);
    seal_with_nonce(provider, key_id, nonce, context, plaintext)
}

/// [`seal`] with a nonce the caller took from the operating system's random source (of the
/// algorithm's length, never used before): for sealing a row's fields with one read of the source.
pub fn seal_with_nonce(
    provider: &dyn EncryptionProvider,
    key_id: u32,
    nonce: &[u8],
    context: &Context<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let algorithm = provider.algorithm();
    if nonce.len() != algorithm.nonce_len {
        return Err(CryptoError::Truncated);
    }
    let start = HEADER_LEN + algorithm.nonce_len;
    let mut out = Vec::with_capacity(start + plaintext.len() + TAG_LEN);
    out.push(VERSION);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.push(algorithm.id);
    out.extend_from_slice(nonce);
    let aad = associated_data(&out[..HEADER_LEN], context);
    out.extend_from_slice(plaintext);
    provider.seal_in_place(nonce, &aad, &mut out, start)?;
    Ok(out)
}

/// Opens a parsed envelope with `provider`, which must be of the algorithm the envelope names.
pub fn open(
    provider: &dyn EncryptionProvider,
    parsed: &Parsed<'_>,
    context: &Context<'_>,
) -> Result<Vec<u8>, CryptoError> {
    if provider.algorithm() != parsed.algorithm {
        return Err(CryptoError::AlgorithmMismatch {
            key_id: parsed.key_id,
            key: provider.algorithm().name,
            sealed: parsed.algorithm.name,
        });
    }
    let aad = associated_data(parsed.header, context);
    provider.open(parsed.nonce, &aad, parsed.ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::provider::{AES_256_GCM, ALGORITHMS};
    use crate::crypto::secrets::KeyBytes;
    use proptest::prelude::*;

    const HERE: Context<'static> = Context {
        table: "notifications",
        column: "title",
        row: "ntf_1",
    };

    fn key(byte: u8) -> KeyBytes {
        KeyBytes::new(Box::new([byte; 32]))
    }

    fn open_with(
        provider: &dyn EncryptionProvider,
        sealed: &[u8],
        context: &Context<'_>,
    ) -> Result<Vec<u8>, CryptoError> {
        open(provider, &parse(sealed)?, context)
    }

    #[test]
    fn the_header_names_version_key_and_algorithm() {
        for algorithm in ALGORITHMS {
            let provider = (algorithm.build)(&key(7));
            let sealed = seal(&*provider, 0x0102_0304, &HERE, b"hello").unwrap();
            assert_eq!(sealed[0], VERSION);
            assert_eq!(&sealed[1..5], &[1, 2, 3, 4]);
            assert_eq!(sealed[5], algorithm.id);
            assert_eq!(sealed.len(), HEADER_LEN + algorithm.nonce_len + 5 + TAG_LEN);
            let parsed = parse(&sealed).unwrap();
            assert_eq!(parsed.key_id, 0x0102_0304);
            assert_eq!(parsed.algorithm, *algorithm);
            assert!(!sealed.windows(5).any(|w| w == b"hello"));
        }
    }

    #[test]
    fn unknown_versions_algorithms_and_short_values_are_clear_errors() {
        let provider = (AES_256_GCM.build)(&key(1));
        let sealed = seal(&*provider, 1, &HERE, b"x").unwrap();
        let mut v1 = sealed.clone();
        v1[0] = 1;
        assert_eq!(parse(&v1), Err(CryptoError::UnknownVersion(1)));
        let mut alg = sealed.clone();
        alg[5] = 99;
        assert_eq!(parse(&alg), Err(CryptoError::UnknownAlgorithm(99)));
        assert_eq!(parse(&[]), Err(CryptoError::Truncated));
        assert_eq!(parse(&[VERSION, 0, 0]), Err(CryptoError::Truncated));
        assert_eq!(
            parse(&sealed[..sealed.len() - 2]),
            Err(CryptoError::Truncated)
        );
        assert_eq!(
            parse(&sealed[..HEADER_LEN + 12 + TAG_LEN - 1]),
            Err(CryptoError::Truncated)
        );
        assert!(CryptoError::UnknownVersion(1)
            .to_string()
            .contains("version 1"));
    }

    #[test]
    fn a_key_of_another_algorithm_is_a_clear_error() {
        let aes = (AES_256_GCM.build)(&key(1));
        let chacha = (crate::crypto::provider::XCHACHA20_POLY1305.build)(&key(1));
        let sealed = seal(&*aes, 3, &HERE, b"x").unwrap();
        let err = open_with(&*chacha, &sealed, &HERE).unwrap_err();
        assert!(
            matches!(err, CryptoError::AlgorithmMismatch { key_id: 3, .. }),
            "{err}"
        );
    }

    fn algorithm() -> impl Strategy<Value = &'static Algorithm> {
        prop::sample::select(ALGORITHMS.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_value_round_trips(algorithm in algorithm(), key_byte: u8, key_id: u32,
                                 plaintext in prop::collection::vec(any::<u8>(), 0..2048),
                                 row in "[a-z0-9_]{0,40}") {
            let provider = (algorithm.build)(&key(key_byte));
            let context = Context { row: &row, ..HERE };
            let sealed = seal(&*provider, key_id, &context, &plaintext).unwrap();
            prop_assert_eq!(open_with(&*provider, &sealed, &context).unwrap(), plaintext);
        }

        #[test]
        fn any_flipped_bit_fails(algorithm in algorithm(),
                                 plaintext in prop::collection::vec(any::<u8>(), 0..256),
                                 bit in any::<prop::sample::Index>()) {
            let provider = (algorithm.build)(&key(9));
            let mut sealed = seal(&*provider, 5, &HERE, &plaintext).unwrap();
            let bit = bit.index(sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open_with(&*provider, &sealed, &HERE).is_err());
        }

        #[test]
        fn another_table_column_or_row_fails(algorithm in algorithm(),
                                             plaintext in prop::collection::vec(any::<u8>(), 0..256),
                                             which in 0..3usize, other in "[a-z_]{1,12}") {
            let provider = (algorithm.build)(&key(3));
            let sealed = seal(&*provider, 5, &HERE, &plaintext).unwrap();
            let mut moved = HERE;
            let other = format!("{other}!");
            match which {
                0 => moved.table = &other,
                1 => moved.column = &other,
                _ => moved.row = &other,
            }
            prop_assert_eq!(open_with(&*provider, &sealed, &moved), Err(CryptoError::Open));
            // The parts are length-prefixed: moving bytes between them does not line up either.
            let shifted = Context { table: "notificationst", column: "itle", row: HERE.row };
            prop_assert_eq!(open_with(&*provider, &sealed, &shifted), Err(CryptoError::Open));
        }

        #[test]
        fn any_truncation_fails(algorithm in algorithm(),
                                plaintext in prop::collection::vec(any::<u8>(), 0..256),
                                cut in any::<prop::sample::Index>()) {
            let provider = (algorithm.build)(&key(4));
            let sealed = seal(&*provider, 5, &HERE, &plaintext).unwrap();
            let keep = cut.index(sealed.len());
            prop_assert!(open_with(&*provider, &sealed[..keep], &HERE).is_err());
        }

        #[test]
        fn another_key_fails(algorithm in algorithm(), a: u8, b: u8,
                             plaintext in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assume!(a != b);
            let sealed = seal(&*(algorithm.build)(&key(a)), 5, &HERE, &plaintext).unwrap();
            prop_assert_eq!(open_with(&*(algorithm.build)(&key(b)), &sealed, &HERE), Err(CryptoError::Open));
        }
    }
}
