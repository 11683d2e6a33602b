//! Files and folders only their owner may read. The embedded database holds every secret
//! (endpoint and source secrets, the instance secret position tokens are derived from), and
//! SQLite gives its `-wal` and `-shm` files the database file's mode: creating that file
//! with the umask's usual 0644 would let any local user read them.

use std::io;
use std::path::Path;

/// Creates `dir` and its missing parents, each made readable by its owner only (folders
/// that exist already are left as they are).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the new, empty file `path` readable and writable by its owner only; fails if it
/// exists.
pub fn create_new(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Whether users other than the owner may read the existing `path` (always false where
/// modes do not exist).
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map(|m| m.permissions().mode() & 0o044 != 0).unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}
