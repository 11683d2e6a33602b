//! An online copy of the embedded database: taken while `serve` runs, consistent, and
//! restorable as it is.
//!
//! `VACUUM INTO` reads one snapshot of the database (a read transaction: the server's
//! writes go on meanwhile and are not in the copy) and writes it, compacted, into a new
//! file. Copying the database file by hand while the server runs is not safe: recent
//! commits live in the write-ahead log beside it.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::db_err;
use crate::{StoreError, StoreResult};

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Size of the copy, in bytes.
    pub bytes: u64,
    /// Messages in the copy.
    pub messages: u64,
}

/// How far a restored copy's stream positions jump ahead of the last one it holds: past
/// any position the original handed out after the copy was taken, so that a consumer
/// holding one reads on from the restored server's new messages instead of passing over
/// them.
const RESTORE_GAP: i64 = 1 << 32;

/// Copies the database at `from` into the new file `to` (which must not exist), syncs the
/// copy to disk and checks it. The copy is written under a temporary name beside `to` and
/// takes its name only once complete: a failed backup leaves no file that looks like one.
pub fn backup(from: &Path, to: &Path) -> StoreResult<BackupReport> {
    if !from.is_file() {
        return Err(StoreError::Database(format!("no database at {}", from.display())));
    }
    if to.exists() {
        return Err(StoreError::Database(format!("{} exists already: a backup goes to a new file", to.display())));
    }
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(StoreError::Database(format!("there is no folder {}", dir.display())));
    }
    crate::private_files::publish_new(to, io_err, |partial| copy_into(from, partial))
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Database(format!("{}: {e}", path.display()))
}

/// The copy itself, into `target` (a new, empty, owner-only file: `VACUUM INTO` fills one).
fn copy_into(from: &Path, target: &Path) -> StoreResult<BackupReport> {
    let target_text =
        target.to_str().ok_or_else(|| StoreError::Database(format!("{} is not UTF-8", target.display())))?;
    // Read-write (a reader of a database in WAL mode needs its shared-memory index) but
    // never creating: a wrong path is an error, not a new empty database. Nothing is
    // written to the database itself (with the server stopped, SQLite may make its `-wal`
    // and `-shm` files, which it would on any open).
    let conn = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(db_err)?;
    // No checkpoint of the server's log when this connection closes (the server runs its
    // own), and a busy writer is waited for.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(db_err)?;
    conn.execute("VACUUM INTO ?1", [target_text]).map_err(db_err)?;
    drop(conn);
    let copy = Connection::open_with_flags(target, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(db_err)?;
    copy.execute_batch(&format!(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'messages', 0
             WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'messages');
         UPDATE sqlite_sequence SET seq = seq + {RESTORE_GAP} WHERE name = 'messages';"
    ))
    .map_err(db_err)?;
    let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(db_err)?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!("the copy fails its check: {check}")));
    }
    let messages: i64 = copy.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).map_err(db_err)?;
    drop(copy);
    // Flushed before it takes its name: a backup that a crash can lose is none.
    std::fs::File::open(target).and_then(|f| f.sync_all()).map_err(|e| io_err(target, e))?;
    let bytes = std::fs::metadata(target).map_err(|e| io_err(target, e))?.len();
    Ok(BackupReport { bytes, messages: u64::try_from(messages).unwrap_or(0) })
}
