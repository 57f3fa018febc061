//! Secret files in the keys directory (signing keys, data keys), and owner-only modes for the
//! data directory and everything in it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a hard link: readers, including
/// other relays sharing the directory, see the whole file or none, and an existing file is never
/// replaced (`AlreadyExists`). The directory is synced afterwards so the new name is durable before
/// anyone relies on it.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    put_in_place(path, bytes, |tmp, path| {
        let linked = fs::hard_link(tmp, path);
        // Best effort: the link (or the error) is what counts.
        let _ = fs::remove_file(tmp);
        linked
    })
}

/// Writes `bytes` to a new temporary file (mode 0600, synced) beside `path`, hands it to `place`
/// (which links or renames it to `path`, and removes it if that fails), then syncs the directory.
fn put_in_place(
    path: &Path,
    bytes: &[u8],
    place: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
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
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    place(&tmp, path)?;
    fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Makes files created from now on by this process owner-only (umask 0o077): the database, its
/// `-wal`/`-shm` files, keys and the initial admin token are 0600, new directories 0700.
pub fn restrict_umask() {
    // SAFETY: umask only swaps the process's file-mode creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Tightens `dir` and everything under it that this process owns: directories to 0700, files to
/// 0600 (a data directory created by an older relay or by hand is 0755 with 0644 files). Symbolic
/// links are not followed. A missing `dir` is not an error.
pub fn restrict_tree(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let restrict = |path: &Path, meta: &fs::Metadata, mode: u32| -> io::Result<()> {
        if meta.uid() == me && meta.mode() & 0o777 != mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    };
    if meta.is_file() {
        return restrict(dir, &meta, 0o600);
    }
    if !meta.is_dir() {
        return Ok(());
    }
    restrict(dir, &meta, 0o700)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            restrict_tree(&path)?;
        } else if meta.is_file() {
            restrict(&path, &meta, 0o600)?;
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` (mode 0600) atomically: written to a temporary file, synced, then
/// renamed over it, and the directory synced. Readers see the old file or the new one, whole.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    put_in_place(path, bytes, |tmp, path| {
        let renamed = fs::rename(tmp, path);
        if renamed.is_err() {
            let _ = fs::remove_file(tmp);
        }
        renamed
    })
}
