//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that owns the write connection and commits them
//! in groups; a sync thread flushes the write-ahead log before any caller of a group is
//! answered (see `writer`). Reads run on a small pool of read-only connections, which WAL
//! lets proceed while the writer works.
//!
//! Most writes run in a savepoint of their own, so that one failing (a duplicate uid, say)
//! rolls back only its own changes. The hot writes (ingest, attempt results) run
//! without one: a savepoint copies every page a job first touches into a sub-journal, about
//! a fifth of the writer's time in a profile. They are written so that their expected
//! failures (a duplicate eventId) happen before they change anything; should one fail after
//! changing rows all the same, the whole batch is rolled back and every caller in it told
//! so, which loses nothing that was acknowledged.

pub mod backup;
mod inbound;
mod integrations;
mod lanes;
mod queries;
mod rows;
mod schema;
mod store_impl;
mod tasks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{oneshot, watch};

use self::writer::{ToWriter, TypedJob};

use crate::backlog::{Backlog, Place};
use crate::signals::StreamSignals;
use crate::{StoreError, StoreResult};

/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;
/// Prepared statements kept per connection. rusqlite's default of 16 is fewer than the
/// writer's hot set (ingest, results, claims, leases, keys, housekeeping…): an admin
/// write or a housekeeping round pushed hot statements out, to be prepared again.
const STATEMENT_CACHE: usize = 128;

pub struct SqliteStore {
    writer: mpsc::Sender<ToWriter>,
    readers: Arc<ReadPool>,
    /// The highest message sequence number on disk: the end of the stream pull readers
    /// may see (a commit is visible to readers before the sync thread flushed it).
    durable_seq: watch::Receiver<u64>,
    /// Wakes an application's stream readers when its messages are on disk.
    signals: Arc<StreamSignals>,
    /// See [`crate::Store::instance_secret`].
    instance_secret: [u8; 32],
    /// The messages waiting for the writer (see [`crate::backlog`]).
    backlog: Arc<Backlog>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(|e| StoreError::Database(format!("open task failed: {e}")))?
    }

    fn open_blocking(path: PathBuf) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_files::create_dir_all(dir)
                .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
        }
        // Made by us, owner-only, before SQLite opens it (see `private_files`).
        match crate::private_files::create_new(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Database(format!("cannot create {}: {e}", path.display())))
            }
            _ => {}
        }
        // The file its symbolic links lead to: SQLite keeps its `-wal` and `-shm` beside that
        // file, which the writer flushes and the checks below look at by name.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        // Its `-wal` and `-shm` too: SQLite reuses those a killed process left, with the mode
        // they had, when the database itself was made owner-only since.
        let open_to_others = ["", "-wal", "-shm"].iter().find(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            crate::private_files::readable_by_others(Path::new(&name))
        });
        if let Some(suffix) = open_to_others {
            tracing::warn!(
                path = %format!("{}{suffix}", path.display()),
                "the database, which holds every secret, can be read by other users (chmod 600 it, with its -wal and -shm files)"
            );
        }
        let mut conn = Connection::open(&path).map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // NORMAL: a commit writes the WAL but does not fsync it; the syncer thread does,
        // before any caller of the batch is answered (see `sync_loop`), so an acknowledged
        // write survives power loss as with FULL, while the writer goes on with the next
        // batch instead of waiting for the disk. Checkpoints (copying the WAL into the
        // database file, which SQLite syncs on both sides) are not run inside a commit, where
        // they would stall the requests waiting on it; the writer runs them between batches.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -16000;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(db_err)?;
        schema::migrate(&mut conn)?;
        // Made durable by the flush below, before anything encrypted with it is handed out.
        let instance_secret = schema::instance_secret(&conn)?;
        // Whatever the last run committed is what readers may now see: make sure it is on
        // disk (a crash between its commit and its flush left it in the OS cache only).
        // The WAL is opened here, once, for every flush to come (see `writer::WalFile`).
        let mut wal = writer::WalFile::new(writer::wal_path(&path));
        match wal.sync() {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StoreError::Database(e.to_string())),
            _ => {}
        }
        let (durable_seq, durable_seen) = watch::channel(writer::last_message_seq(&conn));
        let flush_failed = writer::FlushFailed::default();
        let signals = Arc::new(StreamSignals::default());
        let tx = writer::start(conn, wal, durable_seq, signals.clone(), flush_failed)?;
        let readers = Arc::new(ReadPool { path, idle: Mutex::new(Vec::new()) });
        let backlog = Backlog::new("sqlite");
        Ok(SqliteStore { writer: tx, readers, durable_seq: durable_seen, signals, instance_secret, backlog })
    }

    /// Runs `f` in a savepoint of its own inside the next group-committed transaction;
    /// resolves after the commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.send_write(f, true, true).await
    }

    /// Like [`Self::write`], answered at the commit instead of once it is on disk: for
    /// writes whose loss in a crash of the machine (not of the process: the WAL is in the
    /// page cache then) costs nothing but a repeat, such as a claim's leases.
    async fn write_unflushed<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.send_write(f, true, false).await
    }

    /// Like [`Self::write`] without the savepoint, for hot writes whose expected failures
    /// happen before they change anything (see the module comment).
    async fn write_unguarded<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.send_write(f, false, true).await
    }

    /// Like [`Self::write_unguarded`] for a message of `bytes`, refused as
    /// [`StoreError::Unavailable`] while the writer is too far behind.
    async fn write_message<T, F>(&self, bytes: usize, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let place = self.backlog.admit(bytes)?;
        self.send_job(f, false, true, Some(place)).await
    }

    async fn send_write<T, F>(&self, f: F, savepoint: bool, flushed: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.send_job(f, savepoint, flushed, None).await
    }

    async fn send_job<T, F>(&self, f: F, savepoint: bool, flushed: bool, place: Option<Place>) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = TypedJob::new(f, savepoint, flushed, reply).holding(place);
        self.writer.send(ToWriter::Job(Box::new(job))).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a pooled read connection on the blocking thread pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn);
            pool.give_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Lets the writer and sync threads finish what is queued and end.
        let _ = self.writer.send(ToWriter::Stop);
    }
}

pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => {
            let msg = match &e {
                rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
                _ => "constraint violation".into(),
            };
            StoreError::Conflict(msg)
        }
        // The disk, not the request: full, failing, or the file locked by another process.
        Some(
            ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::OutOfMemory,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Database(e.to_string()),
    }
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(db_err)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;").map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection) -> StoreResult<i64> {
        conn.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get(0)).map_err(db_err)
    }

    fn insert(conn: &Connection, hash: &str) -> StoreResult<()> {
        queries::execute(conn, "INSERT INTO tokens (hash, app_id, created_at) VALUES (?1, NULL, 0)", [hash]).map(|_| ())
    }

    /// Messages arriving while the writer is held (a long delete, a slow disk) wait in its
    /// queue up to the backlog's bound; past it they are refused as unavailable, holding no
    /// memory, and taken again once the writer has taken those waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_past_the_backlog_are_refused_until_the_writer_takes_them() {
        use crate::Store;
        use hooklane_core::model::{Application, Message};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = SqliteStore::open(dir.path().join("t.db")).await.expect("open");
        store.backlog = Backlog::bounded("sqlite", 3, 1 << 20);
        let store = Arc::new(store);
        let app = Application::new("Backlog", chrono::Utc::now());
        store.create_app(app.clone()).await.expect("app");
        let message = |n: u32| Message::new(app.id.clone(), "a.b", format!("{{\"n\":{n}}}"), chrono::Utc::now());
        // Hold the writer until told.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let holder = store.clone();
        let holding = tokio::spawn(async move {
            holder
                .write_unguarded(move |_| {
                    let _ = started.send(());
                    held.recv().ok();
                    Ok(())
                })
                .await
        });
        running.await.expect("the writer runs the holding job");
        let waiting =
            crate::backlog::fill_then_refuse(store.clone(), &store.backlog, (0..3).map(message).collect(), message(3))
                .await;
        release.send(()).expect("release the writer");
        holding.await.expect("join").expect("the holding job");
        for waited in waiting {
            waited.await.expect("join").expect("a message that waited is written");
        }
        store.create_message(message(4), Vec::new(), None).await.expect("taken again");
        assert_eq!(store.backlog.jobs(), 0);
        let written: i64 = store
            .read(|c| c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).map_err(db_err))
            .await
            .expect("count");
        assert_eq!(written, 4, "the three that waited and the one after; not the refused one");
    }

    #[tokio::test]
    async fn a_failed_write_leaves_nothing_behind_with_or_without_savepoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).await.expect("open");
        store.write_unguarded(|c| insert(c, "kept")).await.expect("first write");

        // Fails before changing anything: no savepoint needed, nothing rolled back.
        let dup = store.write_unguarded(|c| insert(c, "kept")).await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        // Fails after changing a row: without a savepoint its whole batch is rolled back
        // (the rows below show it), and the caller is told its own failure.
        let half = store
            .write_unguarded(|c| {
                insert(c, "half")?;
                insert(c, "kept")
            })
            .await;
        assert!(matches!(half, Err(StoreError::Conflict(_))), "{half:?}");
        // The same with a savepoint: only its own changes are taken back.
        let guarded = store
            .write(|c| {
                insert(c, "guarded")?;
                insert(c, "kept")
            })
            .await;
        assert!(matches!(guarded, Err(StoreError::Conflict(_))), "{guarded:?}");

        let hashes: Vec<String> = store
            .read(|c| queries::query_all(c, "SELECT hash FROM tokens ORDER BY hash", [], |r| r.get(0)))
            .await
            .expect("read");
        assert_eq!(hashes, vec!["kept".to_string()]);
        assert_eq!(store.write_unguarded(count).await.expect("count"), 1);
    }
}
