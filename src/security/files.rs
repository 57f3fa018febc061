//! Secret files in the keys directory (signing keys, data keys).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a hard link: readers, including
/// other relays sharing the directory, see the whole file or none, and an existing file is never
/// replaced (`AlreadyExists`). The directory is synced afterwards so the new name is durable before
/// anyone relies on it.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no directory"))?;
    let tmp = dir.join(format!(
        ".tmp-{}",
        ulid::Ulid::new().to_string().to_lowercase()
    ));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| fs::hard_link(&tmp, path));
    // Best effort: the link (or the error) is what counts.
    let _ = fs::remove_file(&tmp);
    written?;
    fs::File::open(dir).and_then(|d| d.sync_all())
}
