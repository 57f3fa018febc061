//! The encryption-at-rest envelope (`crypto::envelope`): `version ‖ key id ‖ algorithm ‖ nonce ‖
//! ciphertext ‖ tag`, bound to its table, column and row.
//!
//! The input is used twice:
//!
//! - as a stored value: `parse`, then `open` with a key of each algorithm (the same key bytes the
//!   seed corpus was sealed with) for the seeds' place. A header that parses names what its
//!   bytes say; a value that opens is exactly what sealing its plaintext again with its own
//!   nonce gives (so nothing but a sealed value opens, and nothing in it is ignored);
//! - as a plaintext: sealed with each algorithm for a place taken from the input, it parses to
//!   its key id and algorithm, is as long as the format says, and opens to the input; with one
//!   bit flipped, cut short, or opened for another row or another key it does not open.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

use beepmyphone::crypto::envelope::{self, Context, HEADER_LEN, VERSION};
use beepmyphone::crypto::provider::{EncryptionProvider, ALGORITHMS, TAG_LEN};
use beepmyphone::crypto::secrets::KeyBytes;
use beepmyphone::crypto::CryptoError;

/// Where the seed corpus's values live.
const HERE: Context<'static> = Context {
    table: "notifications",
    column: "title",
    row: "ntf_1",
};

/// The key bytes the seeds were sealed with, and another key.
const KEY: u8 = 7;
const OTHER_KEY: u8 = 8;

fn provider(index: usize, key: u8) -> Box<dyn EncryptionProvider> {
    (ALGORITHMS[index].build)(&KeyBytes::new(Box::new([key; 32])))
}

static PROVIDERS: LazyLock<Vec<(Box<dyn EncryptionProvider>, Box<dyn EncryptionProvider>)>> =
    LazyLock::new(|| {
        (0..ALGORITHMS.len())
            .map(|i| (provider(i, KEY), provider(i, OTHER_KEY)))
            .collect()
    });

fn as_stored(data: &[u8]) {
    let Ok(parsed) = envelope::parse(data) else {
        return;
    };
    assert_eq!(data[0], VERSION);
    assert_eq!(
        parsed.key_id,
        u32::from_be_bytes([data[1], data[2], data[3], data[4]])
    );
    assert_eq!(parsed.algorithm.id, data[5]);
    assert!(data.len() >= HEADER_LEN + parsed.algorithm.nonce_len + TAG_LEN);
    for (provider, _) in PROVIDERS.iter() {
        match envelope::open(&**provider, &parsed, &HERE) {
            Ok(plaintext) => {
                let nonce = &data[HEADER_LEN..HEADER_LEN + parsed.algorithm.nonce_len];
                let again =
                    envelope::seal_with_nonce(&**provider, parsed.key_id, nonce, &HERE, &plaintext)
                        .expect("sealing what opened");
                assert_eq!(again, data, "an opened value is not what sealing it gives");
            }
            Err(CryptoError::AlgorithmMismatch { key_id, .. }) => {
                assert_ne!(provider.algorithm().id, parsed.algorithm.id);
                assert_eq!(key_id, parsed.key_id);
            }
            Err(e) => assert_eq!(e, CryptoError::Open),
        }
    }
}

fn as_plaintext(data: &[u8]) {
    // A place from the input: its first bytes as the row (so rows vary, and may be empty).
    let split = data
        .first()
        .map_or(0, |b| usize::from(*b % 16))
        .min(data.len());
    let row = String::from_utf8_lossy(&data[..split]);
    let here = Context { row: &row, ..HERE };
    let elsewhere = format!("{row}!");
    let elsewhere = Context {
        row: &elsewhere,
        ..HERE
    };
    let key_id = u32::try_from(data.len()).unwrap_or(u32::MAX) ^ 0x5A5A_0000;
    for (provider, other) in PROVIDERS.iter() {
        let algorithm = provider.algorithm();
        let nonce: Vec<u8> = (0..algorithm.nonce_len)
            .map(|i| data.get(i).copied().unwrap_or(0) ^ 0xA5)
            .collect();
        let sealed = envelope::seal_with_nonce(&**provider, key_id, &nonce, &here, data)
            .expect("sealing any value");
        assert_eq!(
            sealed.len(),
            HEADER_LEN + algorithm.nonce_len + data.len() + TAG_LEN
        );
        let parsed = envelope::parse(&sealed).expect("a sealed value parses");
        assert_eq!(parsed.key_id, key_id);
        assert_eq!(parsed.algorithm, algorithm);
        assert_eq!(
            envelope::open(&**provider, &parsed, &here).expect("it opens"),
            data
        );
        assert_eq!(
            envelope::open(&**provider, &parsed, &elsewhere),
            Err(CryptoError::Open)
        );
        assert_eq!(
            envelope::open(&**other, &parsed, &here),
            Err(CryptoError::Open)
        );
        // One flipped bit anywhere, chosen by the input.
        let bit = data.iter().fold(data.len(), |acc, b| {
            acc.wrapping_mul(31).wrapping_add(usize::from(*b))
        }) % (sealed.len() * 8);
        let mut flipped = sealed.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let opened = envelope::parse(&flipped).and_then(|p| envelope::open(&**provider, &p, &here));
        assert!(opened.is_err(), "bit {bit} flipped and it still opened");
        // Cut short.
        let keep = bit % sealed.len();
        let opened =
            envelope::parse(&sealed[..keep]).and_then(|p| envelope::open(&**provider, &p, &here));
        assert!(opened.is_err(), "cut to {keep} bytes and it still opened");
    }
}

fuzz_target!(|data: &[u8]| {
    as_stored(data);
    as_plaintext(data);
});
