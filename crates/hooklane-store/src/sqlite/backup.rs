//! An online copy of the embedded database: taken while `serve` runs, consistent, and
//! restorable as it is.
//!
//! `VACUUM INTO` reads one snapshot of the database (a read transaction: the server's
//! writes go on meanwhile and are not in the copy) and writes it, compacted, into a new
//! file. Copying the database file by hand while the server runs is not safe: recent
//! commits live in the write-ahead log beside it.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::{StoreError, StoreResult};

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// Size of the copy, in bytes.
    pub bytes: u64,
    /// Messages in the copy.
    pub messages: u64,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Copies the database at `from` into the new file `to` (which must not exist), syncs the
/// copy to disk and checks it.
pub fn backup(from: &Path, to: &Path) -> StoreResult<BackupReport> {
    if !from.is_file() {
        return Err(StoreError::Database(format!("no database at {}", from.display())));
    }
    if to.exists() {
        return Err(StoreError::Database(format!("{} exists already: a backup goes to a new file", to.display())));
    }
    let target = to.to_str().ok_or_else(|| StoreError::Database(format!("{} is not UTF-8", to.display())))?;
    // Read-write (a reader of a database in WAL mode needs its shared-memory index) but
    // never creating: a wrong path is an error, not a new empty database.
    let conn = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(db_err)?;
    // This connection writes nothing to the source: no checkpoint of the server's log
    // when it closes (the server runs its own), and it waits for a busy writer.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(db_err)?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(db_err)?;
    drop(conn);
    // `VACUUM INTO` does not sync what it wrote: a backup that a crash can lose is none.
    std::fs::File::open(to).and_then(|f| f.sync_all()).map_err(|e| StoreError::Database(e.to_string()))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| StoreError::Database(e.to_string()))?;
    }
    let copy = Connection::open_with_flags(to, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_err)?;
    let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(db_err)?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!("the copy at {} fails its check: {check}", to.display())));
    }
    let messages: i64 = copy.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).map_err(db_err)?;
    let bytes = std::fs::metadata(to).map_err(|e| StoreError::Database(e.to_string()))?.len();
    Ok(BackupReport { bytes, messages: u64::try_from(messages).unwrap_or(0) })
}
