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

/// Makes the new file `path`, owner-only, whole or not at all: `fill` writes it under a
/// temporary name beside it (made empty and owner-only first; a random name, since
/// processes sharing the folder, containers, may all be process 1), which is then linked to
/// `path` (failing with `AlreadyExists`, and touching nothing, when `path` exists by then:
/// never overwritten, even in a race), and the folder is synced (on Unix). A reader never
/// finds it half written; a failure leaves nothing. `io_err` names an I/O failure and the
/// file it was about in `fill`'s kind of error.
pub fn publish_new<T, E>(
    path: &Path,
    io_err: impl Fn(&Path, io::Error) -> E,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tag: String = hooklane_core::signing::random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect();
    let partial = dir.join(format!(".{name}.partial-{tag}"));
    // (Removed below only once this process made it.)
    create_new(&partial).map_err(|e| io_err(&partial, e))?;
    let published =
        fill(&partial).and_then(|done| std::fs::hard_link(&partial, path).map(|()| done).map_err(|e| io_err(path, e)));
    let _ = std::fs::remove_file(&partial);
    let done = published?;
    #[cfg(unix)]
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| io_err(dir, e))?;
    Ok(done)
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
