//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one writer thread that owns the write connection. It takes every
//! write waiting in its queue, runs each in its own savepoint inside one transaction, and
//! commits (one fsync) before answering any of them: group commit, so durability costs one
//! disk flush per batch rather than per request. Reads run on a small pool of read-only
//! connections, which WAL lets proceed while the writer works.

mod inbound;
mod queries;
mod rows;
mod schema;
mod store_impl;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::{StoreError, StoreResult};

/// Most writes committed together; bounds the latency one batch adds to the next.
const MAX_GROUP: usize = 512;
/// Read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 8;

pub struct SqliteStore {
    writer: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Arc<ReadPool>,
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
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut conn = Connection::open(&path).map_err(db_err)?;
        // FULL makes every commit fsync the WAL: an acknowledged write survives power loss.
        // Checkpoints (copying the WAL into the database file, with an fsync of its own) are
        // not run inside a commit, where they would stall the requests waiting on it; the
        // writer runs them between batches, after answering (see `writer_loop`).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -16000;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 67108864;",
        )
        .map_err(db_err)?;
        schema::migrate(&mut conn)?;
        let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>();
        std::thread::Builder::new()
            .name("hooklane-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| StoreError::Database(format!("cannot start writer thread: {e}")))?;
        let readers = Arc::new(ReadPool { path, idle: Mutex::new(Vec::new()) });
        Ok(SqliteStore { writer: tx, readers })
    }

    /// Runs `f` inside the next group-committed transaction; resolves after the commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = TypedJob { work: Some(f), result: None, reply: Some(reply) };
        self.writer.send(Box::new(job)).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Fails when the writer thread is gone (it stops only if it panicked).
    fn ensure_writer(&self) -> StoreResult<()> {
        self.writer.send(Box::new(NoopJob)).map_err(|_| StoreError::Closed)
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

pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, msg) = &e {
        if f.code == rusqlite::ErrorCode::ConstraintViolation {
            return StoreError::Conflict(msg.clone().unwrap_or_else(|| "constraint violation".into()));
        }
    }
    StoreError::Database(e.to_string())
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
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// A write waiting for the writer thread, with its result type erased.
trait WriteJob: Send {
    /// Runs the work inside the open transaction (in a savepoint of its own).
    fn run(&mut self, conn: &Connection);
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: &Result<(), String>);
}

struct TypedJob<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: Option<oneshot::Sender<StoreResult<T>>>,
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) {
        let Some(work) = self.work.take() else { return };
        // A savepoint per job: one job's failure (say, a duplicate eventId) rolls back only
        // its own changes, not the rest of the batch.
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            self.result = Some(Err(db_err(e)));
            return;
        }
        let result = work(conn);
        let end = if result.is_ok() { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
        self.result = Some(match conn.execute_batch(end) {
            Ok(()) => result,
            Err(e) => Err(db_err(e)),
        });
    }

    fn finish(mut self: Box<Self>, commit: &Result<(), String>) {
        let outcome = match (commit, self.result.take()) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(StoreError::Database(format!("commit failed: {e}"))),
            (Ok(()), None) => Err(StoreError::Database("write job did not run".into())),
        };
        if let Some(reply) = self.reply.take() {
            // The caller may have gone away (request cancelled); the write stands anyway.
            let _ = reply.send(outcome);
        }
    }
}

/// A write with nothing to do: checks that the writer thread still takes work.
struct NoopJob;

impl WriteJob for NoopJob {
    fn run(&mut self, _: &Connection) {}
    fn finish(self: Box<Self>, _: &Result<(), String>) {}
}

/// How often the writer copies the WAL into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

fn writer_loop(conn: Connection, jobs: mpsc::Receiver<Box<dyn WriteJob>>) {
    let mut last_checkpoint = std::time::Instant::now();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let commit = match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                for job in batch.iter_mut() {
                    job.run(&conn);
                }
                conn.execute_batch("COMMIT").map_err(|e| {
                    let _ = conn.execute_batch("ROLLBACK");
                    e.to_string()
                })
            }
            Err(e) => Err(e.to_string()),
        };
        metrics::histogram!("hooklane_store_commit_seconds", "store" => "sqlite").record(started.elapsed());
        if let Err(e) = &commit {
            tracing::error!(error = %e, jobs = batch.len(), "sqlite group commit failed");
        }
        for job in batch {
            job.finish(&commit);
        }
        // Checkpoint here, on the writer, with nothing being written: only then can it copy
        // the whole WAL, so that the next transaction starts the WAL over. (A checkpointer
        // beside a busy writer never catches up with the end of the WAL, which then grows
        // without bound.) Requests arriving meanwhile simply join the next batch.
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "sqlite checkpoint failed");
            }
            last_checkpoint = std::time::Instant::now();
        }
    }
    tracing::debug!("sqlite writer stopped");
}
