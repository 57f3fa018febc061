//! RFC 6962 / RFC 9162 Merkle tree hashing for the tamper-evident audit log.
//!
//! The audit log is an append-only list of entries whose leaf hashes form an
//! RFC 6962 Merkle tree. This module computes tree heads (directly, and
//! incrementally with a [`Frontier`] that only keeps the perfect-subtree
//! peaks), and builds and verifies inclusion and consistency proofs exactly as
//! RFC 9162 §2.1.3 and §2.1.4 describe, so that any third-party
//! transparency-log tooling can check our proofs.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: the type of every leaf, node and root in the tree.
pub type Hash = [u8; 32];

/// Size in bytes of a [`Hash`].
const HASH_LEN: usize = 32;

/// Size in bytes of the big-endian tree size that opens [`Frontier::to_bytes`].
const SIZE_LEN: usize = 8;

/// Errors from building proofs or decoding a stored frontier.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MerkleError {
    /// A proof was asked for a leaf the tree does not have.
    #[error("leaf index {index} is out of range for a tree of {size} leaves")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The number of leaves in the tree.
        size: u64,
    },
    /// A consistency proof was asked from a tree larger than the current one.
    #[error("old tree size {old_size} is larger than the tree size {size}")]
    OldSizeTooLarge {
        /// The requested old tree size.
        old_size: u64,
        /// The number of leaves in the tree.
        size: u64,
    },
    /// A frontier's peak count disagrees with its size.
    #[error("a frontier of size {size} needs {expected} peaks, got {actual}")]
    BadPeakCount {
        /// The frontier's tree size.
        size: u64,
        /// The number of peaks that size requires (its popcount).
        expected: usize,
        /// The number of peaks supplied.
        actual: usize,
    },
    /// Stored frontier bytes are not an 8-byte size followed by whole hashes.
    #[error("bad frontier encoding: {0}")]
    BadFrontierBytes(&'static str),
}

/// Hashes one log entry into a leaf: SHA-256(0x00 || data), per RFC 6962 §2.1.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Hashes two subtree roots into their parent: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string (MTH of 0 leaves).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly less than `n` (requires `n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    let p = n.next_power_of_two();
    if p == n {
        n / 2
    } else {
        p / 2
    }
}

/// Converts a leaf count to the `u64` used in the public API.
fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The root of the tree over these leaf hashes (RFC 6962 MTH), computed directly (recursive split at the largest power of two < n). Used by tests and by proofs.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [leaf] => *leaf,
        _ => {
            let k = split_point(leaves.len());
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The compact state of a tree that only grows: the roots of its perfect subtrees, largest (leftmost) first; peaks.len() == size.count_ones().
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Hash>,
}

impl Frontier {
    /// Starts the frontier of an empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier from stored parts, checking the peak count matches the size.
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Result<Self, MerkleError> {
        let expected = size.count_ones() as usize;
        if peaks.len() != expected {
            return Err(MerkleError::BadPeakCount {
                size,
                expected,
                actual: peaks.len(),
            });
        }
        Ok(Self { size, peaks })
    }

    /// The number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, largest (leftmost) first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Appends a leaf hash in O(log n), merging equal-height peaks with [`node_hash`].
    ///
    /// A tree of `u64::MAX` leaves cannot grow further; that size is not
    /// reachable in practice.
    pub fn push(&mut self, leaf: Hash) {
        let mut acc = leaf;
        // Each trailing one bit of the size is a peak of the same height as
        // the subtree being carried, so it merges into it.
        for _ in 0..self.size.trailing_ones() {
            if let Some(left) = self.peaks.pop() {
                acc = node_hash(&left, &acc);
            }
        }
        self.peaks.push(acc);
        self.size += 1;
    }

    /// The tree head: peaks folded right-to-left with `node_hash(peak_i, acc)`; equals [`root`] of all leaves.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(last) => iter.fold(*last, |acc, peak| node_hash(peak, &acc)),
        }
    }

    /// Serializes the frontier for storage: 8-byte big-endian size, then the peaks.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SIZE_LEN + HASH_LEN * self.peaks.len());
        out.extend_from_slice(&self.size.to_be_bytes());
        for peak in &self.peaks {
            out.extend_from_slice(peak);
        }
        out
    }

    /// Decodes bytes written by [`Frontier::to_bytes`], rejecting any malformed input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MerkleError> {
        let (size_bytes, rest) =
            bytes
                .split_first_chunk::<SIZE_LEN>()
                .ok_or(MerkleError::BadFrontierBytes(
                    "shorter than the 8-byte size",
                ))?;
        if rest.len() % HASH_LEN != 0 {
            return Err(MerkleError::BadFrontierBytes(
                "peak bytes are not a whole number of 32-byte hashes",
            ));
        }
        let size = u64::from_be_bytes(*size_bytes);
        let mut peaks = Vec::with_capacity(rest.len() / HASH_LEN);
        for chunk in rest.chunks_exact(HASH_LEN) {
            let mut peak = [0u8; HASH_LEN];
            peak.copy_from_slice(chunk);
            peaks.push(peak);
        }
        Self::from_parts(size, peaks)
    }
}

/// The audit path (RFC 9162 §2.1.3.1) of leaf `index` in the tree of all of `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, MerkleError> {
    let size = to_u64(leaves.len());
    let m = usize::try_from(index)
        .ok()
        .filter(|m| *m < leaves.len())
        .ok_or(MerkleError::IndexOutOfRange { index, size })?;
    let mut proof = Vec::new();
    path(m, leaves, &mut proof);
    Ok(proof)
}

/// PATH(m, D[n]) of RFC 9162 §2.1.3.1, appending to `out` (deepest node first).
fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len());
    if m < k {
        path(m, &leaves[..k], out);
        out.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(root(&leaves[..k]));
    }
}

/// RFC 9162 §2.1.3.2 verification: does `proof` show `leaf` at `index` in the tree of `size` with `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// Consistency proof (RFC 9162 §2.1.4.1) that the tree of the first `old_size` leaves is a prefix of the tree of all `leaves`, and its verification (§2.1.4.2).
///
/// The proof is empty when `old_size` is 0 or equals the tree size.
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, MerkleError> {
    let size = to_u64(leaves.len());
    let m = usize::try_from(old_size)
        .ok()
        .filter(|m| *m <= leaves.len())
        .ok_or(MerkleError::OldSizeTooLarge { old_size, size })?;
    let mut proof = Vec::new();
    if m > 0 {
        subproof(m, leaves, true, &mut proof);
    }
    Ok(proof)
}

/// SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1, appending to `out`.
fn subproof(m: usize, leaves: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            out.push(root(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &leaves[..k], whole, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// Checks a consistency proof (RFC 9162 §2.1.4.2) between the tree of `old_size` with `old_root` and the tree of `new_size` with `new_root`.
///
/// For `old_size == 0` the proof must be empty and `old_root` must be
/// [`empty_root`] (any `new_root` is then consistent, unless `new_size` is 0
/// too); for `old_size == new_size` the proof must be empty and the
/// roots equal.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == 0 {
        let empty = empty_root();
        return proof.is_empty() && *old_root == empty && (new_size > 0 || *new_root == empty);
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let (first, rest): (&Hash, &[Hash]) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => return false,
        }
    };
    if proof.is_empty() {
        return false;
    }
    let mut fnode = old_size - 1;
    let mut snode = new_size - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    fr == *old_root && sr == *new_root && snode == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(s: &str) -> Hash {
        let bytes = hex(s);
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        out
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Reference vectors from transparency-dev/merkle proof/verify_test.go
    // (originally google/certificate-transparency).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// (leaf index, tree size, proof) — the Go vectors use 1-based leaf numbers.
    const INCLUSION: &[(u64, u64, &[&str])] = &[
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];

    /// (old size, new size, proof).
    const CONSISTENCY: &[(u64, u64, &[&str])] = &[
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];

    fn vector_leaves() -> Vec<Hash> {
        LEAVES.iter().map(|l| leaf_hash(&hex(l))).collect()
    }

    fn hashes(v: &[&str]) -> Vec<Hash> {
        v.iter().map(|s| h(s)).collect()
    }

    /// Distinct leaves derived from a seed, so no two positions collide.
    fn make_leaves(n: usize, seed: u64) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| leaf_hash(&[seed.to_be_bytes(), i.to_be_bytes()].concat()))
            .collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root(),
            h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(root(&[]), empty_root());
        assert_eq!(Frontier::new().root(), empty_root());
    }

    #[test]
    fn known_roots() {
        let leaves = vector_leaves();
        let mut frontier = Frontier::new();
        for (n, want) in ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..=n]), h(want), "root of size {}", n + 1);
            frontier.push(leaves[n]);
            assert_eq!(frontier.root(), h(want), "frontier of size {}", n + 1);
        }
    }

    #[test]
    fn known_inclusion_proofs() {
        let leaves = vector_leaves();
        for (index, size, want) in INCLUSION {
            let tree = &leaves[..*size as usize];
            let proof = inclusion_proof(tree, *index).unwrap();
            assert_eq!(proof, hashes(want), "proof of {index} in {size}");
            let root = h(ROOTS[*size as usize - 1]);
            assert!(verify_inclusion(
                &leaves[*index as usize],
                *index,
                *size,
                &proof,
                &root
            ));
        }
    }

    #[test]
    fn known_consistency_proofs() {
        let leaves = vector_leaves();
        for (old, new, want) in CONSISTENCY {
            let proof = consistency_proof(&leaves[..*new as usize], *old).unwrap();
            assert_eq!(proof, hashes(want), "proof {old} -> {new}");
            let old_root = h(ROOTS[*old as usize - 1]);
            let new_root = h(ROOTS[*new as usize - 1]);
            assert!(verify_consistency(*old, *new, &old_root, &new_root, &proof));
            if !proof.is_empty() {
                assert!(!verify_consistency(
                    *old, *new, &new_root, &old_root, &proof
                ));
            }
        }
    }

    #[test]
    fn proof_errors() {
        let leaves = vector_leaves();
        assert_eq!(
            inclusion_proof(&leaves, 8),
            Err(MerkleError::IndexOutOfRange { index: 8, size: 8 })
        );
        assert_eq!(
            inclusion_proof(&[], 0),
            Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
        );
        assert_eq!(
            consistency_proof(&leaves, 9),
            Err(MerkleError::OldSizeTooLarge {
                old_size: 9,
                size: 8
            })
        );
        assert_eq!(consistency_proof(&leaves, 0).unwrap(), Vec::<Hash>::new());
        assert_eq!(consistency_proof(&leaves, 8).unwrap(), Vec::<Hash>::new());
    }

    #[test]
    fn trivial_consistency_cases() {
        let e = empty_root();
        let a = leaf_hash(b"a");
        assert!(verify_consistency(0, 0, &e, &e, &[]));
        assert!(verify_consistency(0, 5, &e, &a, &[]));
        assert!(!verify_consistency(0, 5, &a, &a, &[]));
        assert!(!verify_consistency(0, 5, &e, &a, &[e]));
        assert!(verify_consistency(3, 3, &a, &a, &[]));
        assert!(!verify_consistency(3, 3, &a, &e, &[]));
        assert!(!verify_consistency(3, 3, &a, &a, &[a]));
        assert!(!verify_consistency(4, 3, &a, &a, &[]));
        assert!(!verify_consistency(1, 2, &a, &e, &[]));
    }

    #[test]
    fn trivial_inclusion_cases() {
        let a = leaf_hash(b"a");
        assert!(verify_inclusion(&a, 0, 1, &[], &a));
        assert!(!verify_inclusion(&a, 0, 0, &[], &a));
        assert!(!verify_inclusion(&a, 1, 1, &[], &a));
        assert!(!verify_inclusion(&a, 0, 1, &[a], &a));
    }

    #[test]
    fn frontier_matches_root_for_every_prefix() {
        let leaves = make_leaves(300, 7);
        let mut frontier = Frontier::new();
        for n in 0..300 {
            assert_eq!(frontier.root(), root(&leaves[..n]), "size {n}");
            assert_eq!(frontier.peaks().len(), n.count_ones() as usize);
            frontier.push(leaves[n]);
        }
    }

    #[test]
    fn frontier_bytes_errors() {
        assert_eq!(
            Frontier::from_bytes(&[0; 7]),
            Err(MerkleError::BadFrontierBytes(
                "shorter than the 8-byte size"
            ))
        );
        assert!(matches!(
            Frontier::from_bytes(&[0; 9]),
            Err(MerkleError::BadFrontierBytes(_))
        ));
        let mut bytes = 3u64.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 32]);
        assert_eq!(
            Frontier::from_bytes(&bytes),
            Err(MerkleError::BadPeakCount {
                size: 3,
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(Frontier::from_bytes(&[0; 8]).unwrap(), Frontier::new());
        assert!(Frontier::from_parts(2, vec![[0; 32]]).is_ok());
        assert!(Frontier::from_parts(2, vec![]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn frontier_root_equals_root(n in 0usize..300, seed in any::<u64>()) {
            let leaves = make_leaves(n, seed);
            let mut frontier = Frontier::new();
            for leaf in &leaves {
                frontier.push(*leaf);
            }
            prop_assert_eq!(frontier.size(), n as u64);
            prop_assert_eq!(frontier.peaks().len(), n.count_ones() as usize);
            prop_assert_eq!(frontier.root(), root(&leaves));
        }

        #[test]
        fn frontier_bytes_round_trip(n in 0usize..300, seed in any::<u64>()) {
            let mut frontier = Frontier::new();
            for leaf in make_leaves(n, seed) {
                frontier.push(leaf);
            }
            let bytes = frontier.to_bytes();
            prop_assert_eq!(bytes.len(), 8 + 32 * n.count_ones() as usize);
            let back = Frontier::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&back, &frontier);
            let rebuilt = Frontier::from_parts(back.size(), back.peaks().to_vec()).unwrap();
            prop_assert_eq!(rebuilt, frontier);
        }

        #[test]
        fn inclusion_proofs_verify_and_detect_tampering(n in 1usize..70, seed in any::<u64>()) {
            let leaves = make_leaves(n, seed);
            let size = n as u64;
            let root = root(&leaves);
            let other_root = node_hash(&root, &root);
            for i in 0..n {
                let index = i as u64;
                let leaf = leaves[i];
                let proof = inclusion_proof(&leaves, index).unwrap();
                prop_assert!(verify_inclusion(&leaf, index, size, &proof, &root));
                for j in 0..n as u64 {
                    if j != index {
                        prop_assert!(!verify_inclusion(&leaf, j, size, &proof, &root));
                    }
                }
                prop_assert!(!verify_inclusion(&leaf, size, size, &proof, &root));
                let other_leaf = leaves[(i + 1) % n];
                if n > 1 {
                    prop_assert!(!verify_inclusion(&other_leaf, index, size, &proof, &root));
                }
                prop_assert!(!verify_inclusion(&leaf_hash(b"x"), index, size, &proof, &root));
                prop_assert!(!verify_inclusion(&leaf, index, size, &proof, &other_root));
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][0] ^= 8;
                    prop_assert!(!verify_inclusion(&leaf, index, size, &bad, &root));
                }
                if !proof.is_empty() {
                    let short = &proof[..proof.len() - 1];
                    prop_assert!(!verify_inclusion(&leaf, index, size, short, &root));
                }
                let mut long = proof.clone();
                long.push(root);
                prop_assert!(!verify_inclusion(&leaf, index, size, &long, &root));
            }
        }

        #[test]
        fn consistency_proofs_verify_and_detect_tampering(n in 0usize..70, seed in any::<u64>()) {
            let leaves = make_leaves(n, seed);
            let size = n as u64;
            let new_root = root(&leaves);
            for m in 0..=n {
                let old_size = m as u64;
                let old_root = root(&leaves[..m]);
                let proof = consistency_proof(&leaves, old_size).unwrap();
                prop_assert!(verify_consistency(old_size, size, &old_root, &new_root, &proof));
                let bogus = leaf_hash(b"bogus");
                prop_assert!(!verify_consistency(old_size, size, &bogus, &new_root, &proof));
                if m > 0 || n == 0 {
                    // Every tree is consistent with the empty tree, whatever its root.
                    prop_assert!(!verify_consistency(old_size, size, &old_root, &bogus, &proof));
                }
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][0] ^= 16;
                    prop_assert!(!verify_consistency(old_size, size, &old_root, &new_root, &bad));
                }
                if !proof.is_empty() {
                    let short = &proof[..proof.len() - 1];
                    prop_assert!(!verify_consistency(old_size, size, &old_root, &new_root, short));
                }
                let mut long = proof.clone();
                long.push(new_root);
                prop_assert!(!verify_consistency(old_size, size, &old_root, &new_root, &long));
            }
        }
    }
}
