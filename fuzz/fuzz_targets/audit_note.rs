//! The audit log's signed checkpoints (`audit::note`): C2SP signed notes, tlog checkpoints,
//! verifier keys and the checkpoint file, as `audit verify` and the relay's start-up read them.
//! Every input is tried as each:
//!
//! - a checkpoint text: `Checkpoint::parse` takes only the canonical form, so what parses prints
//!   back as the same text; signed, it opens to itself and splits out of a file as one note;
//! - a verifier key: what `NoteVerifier::parse` takes encodes back to the same string (but for
//!   the key id's hex case, which the reference implementation also ignores);
//! - a note: `NoteVerifier::open` with the key of the reference example (golang.org/x/mod's
//!   PeterNeumann, whose note is in the seed corpus) opens only its one signed text, and with a
//!   key made here opens nothing; any text `NoteSigner::sign` takes opens to itself;
//! - a checkpoint file: `split_notes` returns notes that put back together are the file's
//!   complete part, and says torn exactly when bytes follow it.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

use beepmyphone::audit::note::{split_notes, Checkpoint, NoteSigner, NoteVerifier};

const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                          then you don't know what your problem is.\n";

struct Fixture {
    peter: NoteVerifier,
    signer: NoteSigner,
    ours: NoteVerifier,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let signer = NoteSigner::generate("relay.beepmyphone.example/audit").expect("a signer");
    Fixture {
        peter: NoteVerifier::parse(PETER_VKEY).expect("the reference key"),
        ours: signer.verifier().expect("its verifier"),
        signer,
    }
});

fn as_checkpoint(fixture: &Fixture, text: &str) {
    let Ok(checkpoint) = Checkpoint::parse(text) else {
        return;
    };
    assert_eq!(
        checkpoint.to_text(),
        text,
        "a checkpoint that is not canonical"
    );
    let note = fixture.signer.sign(text).expect("a checkpoint is signable");
    assert_eq!(fixture.ours.open(&note), Ok(text));
    let file = format!("{note}\n{note}\n");
    let split = split_notes(&file);
    assert_eq!(split.notes, [note.as_str(), note.as_str()]);
    assert!(!split.torn && split.complete_len == file.len());
}

fn as_verifier_key(text: &str) {
    let Ok(verifier) = NoteVerifier::parse(text) else {
        return;
    };
    let mut parts = text.splitn(3, '+');
    let (name, id, key) = (parts.next(), parts.next(), parts.next());
    let expected = format!(
        "{}+{}+{}",
        name.unwrap_or_default(),
        id.unwrap_or_default().to_ascii_lowercase(),
        key.unwrap_or_default()
    );
    assert_eq!(verifier.encode(), expected);
    let again = NoteVerifier::parse(&verifier.encode()).expect("its own encoding");
    assert_eq!(
        (again.name(), again.key_id()),
        (verifier.name(), verifier.key_id())
    );
}

fn as_note(fixture: &Fixture, text: &str) {
    if let Ok(opened) = fixture.peter.open(text) {
        assert_eq!(
            opened, PETER_TEXT,
            "another text opened with the reference key"
        );
        assert!(text.starts_with(opened));
    }
    assert!(
        fixture.ours.open(text).is_err(),
        "a note opened without our signature"
    );
    if let Ok(note) = fixture.signer.sign(text) {
        assert_eq!(fixture.ours.open(&note), Ok(text));
        assert!(fixture.peter.open(&note).is_err());
        let file = format!("{note}\n");
        assert_eq!(split_notes(&file).notes, [note.as_str()]);
    }
}

fn as_file(text: &str) {
    let split = split_notes(text);
    assert!(split.complete_len <= text.len());
    let rebuilt: String = split.notes.iter().map(|n| format!("{n}\n")).collect();
    assert_eq!(rebuilt, text[..split.complete_len]);
    assert_eq!(split.torn, split.complete_len < text.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = &*FIXTURE;
    as_checkpoint(fixture, text);
    as_verifier_key(text);
    as_note(fixture, text);
    as_file(text);
});
