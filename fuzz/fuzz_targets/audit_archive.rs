//! An audit archive (`audit-<first>-<last>.jsonl.gz`) as `audit verify` reads it: the input is
//! the decompressed JSON-lines text, gzip'd and written to a file here so that `archive::read`
//! (gzip, UTF-8, one `Line` per line) runs as it does on a real one. Then each record line goes
//! through `ArchivedRow::to_row` and the record encoding its leaf hash covers, and the start
//! line's frontier through `Frontier::from_bytes`.
//!
//! Checks: every line reads back from its own serialisation; a record that decodes archives to
//! the same line and decodes again to the same row; two different records never encode alike
//! (the encoding's promise); a frontier that decodes encodes to the same bytes; and the records'
//! leaves give the same tree head incrementally (a `Frontier`, as the writer keeps it) and at
//! once (`merkle::root`), with an inclusion proof of each that verifies.

#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

use beepmyphone::audit::archive::{self, ArchivedRow, Line};
use beepmyphone::audit::merkle::{self, Frontier, Hash};
use beepmyphone::audit::record;
use beepmyphone::store::audit::AuditRow;

/// Most leaves whose tree is checked per input (every proof is O(n log n)).
const MAX_LEAVES: usize = 64;

/// This process's archive file.
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    std::env::temp_dir().join(format!(
        "beepmyphone-fuzz-{}-audit-000000000001-000000000002.jsonl.gz",
        std::process::id()
    ))
});

fn write_archive(text: &[u8]) {
    let file = std::fs::File::create(&*FILE).expect("the archive file");
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(text).expect("writing the archive");
    gz.finish().expect("writing the archive");
}

fn row_without_hash(row: &AuditRow) -> AuditRow {
    AuditRow {
        leaf_hash: Vec::new(),
        ..row.clone()
    }
}

fn check_tree(leaves: &[Hash]) {
    let mut frontier = Frontier::new();
    for leaf in leaves {
        frontier.push(*leaf);
    }
    let root = merkle::root(leaves);
    assert_eq!(frontier.root(), root, "{} leaves", leaves.len());
    let size = u64::try_from(leaves.len()).expect("a size");
    assert_eq!(frontier.size(), size);
    let again = Frontier::from_bytes(&frontier.to_bytes()).expect("a frontier it wrote");
    assert_eq!(again.root(), root);
    for (index, leaf) in (0u64..).zip(leaves) {
        let proof = merkle::inclusion_proof(leaves, index).expect("a leaf it has");
        assert!(merkle::verify_inclusion(leaf, index, size, &proof, &root));
    }
}

fuzz_target!(|text: &[u8]| {
    write_archive(text);
    let Ok(lines) = archive::read(&FILE) else {
        return;
    };
    let mut rows: Vec<AuditRow> = Vec::new();
    for line in &lines {
        let json = serde_json::to_string(line).expect("a line serialises");
        assert_eq!(
            &serde_json::from_str::<Line>(&json).expect("its own line"),
            line
        );
        match line {
            Line::Record(archived) => {
                let Ok(row) = archived.to_row() else {
                    continue;
                };
                let rearchived = ArchivedRow::from(&row);
                assert_eq!(rearchived.to_row().as_ref(), Ok(&row));
                let encoded = record::encode(&row);
                assert!(encoded.starts_with(b"BMPAUDIT1"));
                assert_eq!(record::leaf_of(&row), merkle::leaf_hash(&encoded));
                for other in &rows {
                    if record::encode(other) == encoded {
                        assert_eq!(row_without_hash(other), row_without_hash(&row));
                    }
                }
                rows.push(row);
            }
            Line::Start { frontier, .. } => {
                let Ok(bytes) = hex::decode(frontier) else {
                    continue;
                };
                if let Ok(decoded) = Frontier::from_bytes(&bytes) {
                    assert_eq!(decoded.to_bytes(), bytes);
                    assert_eq!(
                        decoded.size(),
                        u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
                    );
                }
            }
            Line::End { .. } => {}
        }
    }
    let leaves: Vec<Hash> = rows.iter().take(MAX_LEAVES).map(record::leaf_of).collect();
    check_tree(&leaves);
});
