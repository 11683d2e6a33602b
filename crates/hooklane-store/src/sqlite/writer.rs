//! The writer thread and the sync thread of the embedded store.
//!
//! The writer owns the write connection. It opens a transaction, runs each write as it
//! arrives, and commits when the sync thread is free (or the batch is full); the sync
//! thread then flushes the write-ahead log with one `fdatasync` and only then answers the
//! callers of that batch. While the disk works on one batch the writer is already running
//! the next one inside a new transaction, so neither waits for the other, and a batch holds
//! everything that arrived during one flush: few, large commits, and few WAL frames per
//! write (each commit rewrites the last page of every B-tree it touched).
//!
//! A claim's leases are answered at the commit instead, unless its batch wrote messages
//! or follows one still being flushed: a lease lost with the machine only means a send
//! again, and a claim never hands over a delivery of a message that is not on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

use super::queries::execute;
use crate::backlog::Place;
use crate::signals::StreamSignals;
use crate::{StoreError, StoreResult};

/// Most writes committed together; bounds the latency one batch adds to the next.
const MAX_GROUP: usize = 512;
/// How often the writer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// What the writer thread receives: writes, and word from the sync thread.
pub(super) enum ToWriter {
    Job(Box<dyn WriteJob>),
    /// The sync thread finished with this many batches.
    Synced(usize),
    /// The store was dropped: commit what is open and stop. (The sync thread holds a
    /// sender too, so the writer's inbox never closes by itself.)
    Stop,
}

/// A write waiting for the writer thread, with its result type erased.
pub(super) trait WriteJob: Send {
    /// Runs the work inside the open transaction. Returns false when it failed after
    /// changing rows that no savepoint can take back: the transaction must then be
    /// rolled back as a whole.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, outcome: &Result<(), String>);
    /// Whether the caller waits until the commit is on disk (most writes), or is answered
    /// at the commit itself.
    fn waits_for_flush(&self) -> bool {
        true
    }
}

pub(super) struct TypedJob<T, F> {
    work: Option<F>,
    savepoint: bool,
    flushed: bool,
    result: Option<StoreResult<T>>,
    reply: Option<oneshot::Sender<StoreResult<T>>>,
    /// A message's place in the ingest backlog, given back once the job has run.
    place: Option<Place>,
}

impl<T, F> TypedJob<T, F> {
    /// `flushed`: answered once the commit is on disk, not at the commit.
    pub(super) fn new(work: F, savepoint: bool, flushed: bool, reply: oneshot::Sender<StoreResult<T>>) -> Self {
        TypedJob { work: Some(work), savepoint, flushed, result: None, reply: Some(reply), place: None }
    }

    /// The same job, holding `place` in the ingest backlog until it has run.
    pub(super) fn holding(mut self, place: Option<Place>) -> Self {
        self.place = place;
        self
    }
}

impl<T, F> WriteJob for TypedJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // Out of the queue: what the job holds is the transaction's now.
        self.place = None;
        let Some(work) = self.work.take() else { return true };
        if !self.savepoint {
            // A failed statement takes back its own rows and does not count in
            // `total_changes`: a job that failed with the count unchanged left nothing behind.
            let before = conn.total_changes();
            let result = work(conn);
            let clean = result.is_ok() || conn.total_changes() == before;
            self.result = Some(result);
            return clean;
        }
        // One job's failure (say, a duplicate uid) rolls back only its own changes. The
        // statements go through the statement cache (`execute_batch` parses them every time).
        if let Err(e) = execute(conn, "SAVEPOINT job", []) {
            self.result = Some(Err(e));
            return true;
        }
        let result = work(conn);
        let end = match result {
            Ok(_) => execute(conn, "RELEASE job", []),
            Err(_) => execute(conn, "ROLLBACK TO job", []).and_then(|_| execute(conn, "RELEASE job", [])),
        };
        // A savepoint that could not be ended holds the job's changes in the transaction,
        // whatever the job is told: only the batch's rollback takes them back.
        let clean = end.is_ok();
        self.result = Some(match (end, result) {
            // The job's own failure, not the savepoint's that followed it: SQLite rolled the
            // whole transaction back on it (a full disk, an I/O error), taking the savepoint
            // too ("no such savepoint"), and the job is told why (a 503, not a 500).
            (Err(_), Err(own)) => Err(own),
            (end, result) => end.and(result),
        });
        clean
    }

    fn waits_for_flush(&self) -> bool {
        self.flushed
    }

    fn finish(mut self: Box<Self>, outcome: &Result<(), String>) {
        let outcome = match (outcome, self.result.take()) {
            (Ok(()), Some(result)) => result,
            // The job's own failure, which undid its batch, says more than the batch's.
            (Err(_), Some(Err(own))) => Err(own),
            // A batch that failed through no fault of this job (another's, the disk's, a
            // failed flush): the same write may succeed in another batch, or after a restart.
            (Err(e), _) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
            (Ok(()), None) => Err(StoreError::Database("write job did not run".into())),
        };
        if let Some(reply) = self.reply.take() {
            // The caller may have gone away (request cancelled); the write stands anyway.
            let _ = reply.send(outcome);
        }
    }
}

/// A committed batch on its way to the disk, with the highest message sequence number
/// given out when it committed: once the batch is on disk every message up to that number
/// is (the writer gives them in commit order), and readers of the message stream may see it.
pub(super) struct Committed {
    jobs: Vec<Box<dyn WriteJob>>,
    last_message_seq: u64,
    /// Applications with messages in the batch, whose stream readers are woken once it is
    /// on disk; `None`: not looked up (nobody was waiting when it committed, or the lookup
    /// failed), so whoever waits by the time it is on disk is woken.
    apps: Option<Vec<String>>,
}

/// Set for good when a flush of the write-ahead log failed. Linux may then have dropped
/// the pages it could not write, so nothing committed since the last good flush is known
/// to be on disk, and a later flush succeeding would not make it so: the store takes no
/// more writes (and readers of the message stream see nothing more) until it is reopened,
/// when SQLite reads back what the disk really holds.
pub(super) type FlushFailed = Arc<AtomicBool>;

/// Starts both threads; the returned sender takes the writes. `durable_seq` is raised to
/// the highest message sequence number on disk after each flush, and the `signals` of the
/// applications written are raised then.
pub(super) fn start(
    conn: Connection,
    wal: WalFile,
    durable_seq: watch::Sender<u64>,
    signals: Arc<StreamSignals>,
    flush_failed: FlushFailed,
) -> StoreResult<mpsc::Sender<ToWriter>> {
    let (to_writer, inbox) = mpsc::channel::<ToWriter>();
    let (to_sync, committed) = mpsc::channel::<Committed>();
    let writer_inbox = to_writer.clone();
    let sync_failed = flush_failed.clone();
    let sync_signals = signals.clone();
    // The durable end at open is the highest sequence number committed so far.
    let last_message_seq = *durable_seq.borrow();
    std::thread::Builder::new()
        .name("hooklane-sqlite-sync".into())
        .spawn(move || sync_loop(wal, committed, writer_inbox, (durable_seq, sync_signals), sync_failed))
        .map_err(|e| StoreError::Database(format!("cannot start sync thread: {e}")))?;
    std::thread::Builder::new()
        .name("hooklane-sqlite-writer".into())
        .spawn(move || Writer::new(conn, to_sync, flush_failed, signals, last_message_seq).run(inbox))
        .map_err(|e| StoreError::Database(format!("cannot start writer thread: {e}")))?;
    Ok(to_writer)
}

struct Writer {
    conn: Connection,
    to_sync: mpsc::Sender<Committed>,
    /// Writes run in the open transaction, waiting for its commit.
    batch: Vec<Box<dyn WriteJob>>,
    /// Time spent running the batch's writes (not waiting between them).
    busy: Duration,
    /// Batches handed to the sync thread and not yet flushed.
    syncing: usize,
    last_checkpoint: Instant,
    flush_failed: FlushFailed,
    /// The highest message sequence number committed so far.
    last_message_seq: u64,
    signals: Arc<StreamSignals>,
}

impl Writer {
    fn new(
        conn: Connection,
        to_sync: mpsc::Sender<Committed>,
        flush_failed: FlushFailed,
        signals: Arc<StreamSignals>,
        last_message_seq: u64,
    ) -> Self {
        Writer {
            conn,
            to_sync,
            batch: Vec::new(),
            busy: Duration::ZERO,
            syncing: 0,
            last_checkpoint: Instant::now(),
            flush_failed,
            last_message_seq,
            signals,
        }
    }

    fn run(mut self, inbox: mpsc::Receiver<ToWriter>) {
        loop {
            // Take everything waiting, then commit if the disk is free; otherwise block
            // until more work or the sync thread's word arrives.
            let mut next = inbox.try_recv().ok();
            if next.is_none() {
                if !self.batch.is_empty() && (self.syncing == 0 || self.batch.len() >= MAX_GROUP) {
                    self.commit();
                    continue;
                }
                match inbox.recv() {
                    Ok(msg) => next = Some(msg),
                    Err(_) => break,
                }
            }
            match next {
                Some(ToWriter::Job(job)) => self.run_job(job),
                Some(ToWriter::Synced(n)) => self.syncing = self.syncing.saturating_sub(n),
                Some(ToWriter::Stop) => break,
                None => {}
            }
            if self.batch.len() >= MAX_GROUP {
                self.commit();
            }
        }
        if !self.batch.is_empty() {
            self.commit();
        }
        tracing::debug!("sqlite writer stopped");
    }

    fn run_job(&mut self, mut job: Box<dyn WriteJob>) {
        if self.flush_failed.load(Ordering::Acquire) {
            job.finish(&Err(FLUSH_FAILED.to_string()));
            return;
        }
        let started = Instant::now();
        if self.batch.is_empty() {
            if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
                job.finish(&Err(e.to_string()));
                return;
            }
        }
        // SQLite rolls back the whole transaction itself on some errors (a full disk, an I/O
        // error, no memory): the jobs before this one are undone, and the ones after it
        // would each commit on their own. The batch fails here, as it is.
        let clean = job.run(&self.conn) && !self.conn.is_autocommit();
        self.batch.push(job);
        self.busy += started.elapsed();
        if !clean {
            // Nothing can take back what the failed write changed but the whole transaction.
            let _ = self.conn.execute_batch("ROLLBACK");
            self.fail_batch("a write failed half-way; its batch was rolled back".to_string());
        }
    }

    fn commit(&mut self) {
        if self.flush_failed.load(Ordering::Acquire) {
            // Writes answered at the commit (claims) could take deliveries of messages the
            // failed flush may not have kept, whose callers were told so.
            let _ = self.conn.execute_batch("ROLLBACK");
            self.fail_batch(FLUSH_FAILED.to_string());
            return;
        }
        let started = Instant::now();
        // Read inside the transaction, so it counts this batch's messages and no later ones.
        let last_message_seq = last_message_seq(&self.conn);
        let apps = if last_message_seq <= self.last_message_seq {
            Some(Vec::new())
        } else if self.signals.watched() {
            apps_written_after(&self.conn, self.last_message_seq)
        } else {
            None
        };
        let committed = self.conn.execute_batch("COMMIT");
        self.busy += started.elapsed();
        metrics::histogram!("hooklane_store_commit_seconds", "store" => "sqlite").record(self.busy);
        self.busy = Duration::ZERO;
        if let Err(e) = committed {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.fail_batch(e.to_string());
            return;
        }
        // Writes that need not wait for the disk are answered now, the rest by the sync
        // thread once the WAL is on disk (a batch of the former only is flushed along with
        // the next one: every flush covers all that was committed before it). Not when the
        // batch wrote messages, or follows one still on its way to the disk: a claim may
        // have taken their deliveries, and no message is sent before it is durable.
        let settled_before = last_message_seq <= self.last_message_seq && self.syncing == 0;
        // A rolled-back batch gave its sequence numbers back; a committed one keeps them.
        self.last_message_seq = last_message_seq;
        let batch = std::mem::take(&mut self.batch);
        let (jobs, now): (Vec<_>, Vec<_>) = batch.into_iter().partition(|j| j.waits_for_flush() || !settled_before);
        now.into_iter().for_each(|job| job.finish(&Ok(())));
        if !jobs.is_empty() {
            match self.to_sync.send(Committed { jobs, last_message_seq, apps }) {
                Ok(()) => self.syncing += 1,
                Err(mpsc::SendError(batch)) => {
                    let gone = Err("the sync thread stopped".to_string());
                    batch.jobs.into_iter().for_each(|job| job.finish(&gone));
                }
            }
        }
        self.checkpoint_if_due();
    }

    fn fail_batch(&mut self, error: String) {
        tracing::error!(error = %error, jobs = self.batch.len(), "sqlite group commit failed");
        self.busy = Duration::ZERO;
        let failed = Err(error);
        self.batch.drain(..).for_each(|job| job.finish(&failed));
    }

    /// Runs after each commit, before the next transaction opens: only then can it copy the
    /// whole WAL, so that the next transaction starts the WAL over. (A checkpointer beside a
    /// busy writer never catches up with the end of the WAL, which then grows without
    /// bound.) Writes arriving meanwhile wait in the inbox and join the next batch.
    fn checkpoint_if_due(&mut self) {
        if self.last_checkpoint.elapsed() < CHECKPOINT_EVERY {
            return;
        }
        match self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => {}
            // The checkpoint syncs the WAL through SQLite's own file handle: a write error
            // it is told of is reported once, to it, and a later flush of the sync thread
            // may succeed over pages the kernel dropped. So it stops writes as a failed
            // flush does; batches still on their way to the disk are failed with it.
            // (Not a full disk: `SQLITE_FULL` is a write the kernel refused at once, dropping
            // nothing; the pages stay in the WAL, and the next checkpoint copies them once
            // there is room. Stopping for it kept the store refusing writes until a restart
            // after a moment's full disk, say while logs rotated.)
            Err(e) if is_io_error(&e) => {
                tracing::error!(error = %e, "sqlite checkpoint failed to write; the store takes no more writes until restarted");
                self.flush_failed.store(true, Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
        }
        self.last_checkpoint = Instant::now();
    }
}

/// Whether SQLite failed on the disk (an `SQLITE_IOERR_*`): not a busy or locked database,
/// nor a full one, which only postpone a checkpoint.
fn is_io_error(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen | ErrorCode::DatabaseCorrupt)
    )
}

const FLUSH_FAILED: &str =
    "a flush of the write-ahead log failed earlier: the store takes no more writes until hooklane is restarted";

/// The highest message sequence number given out so far (`AUTOINCREMENT` keeps it in
/// `sqlite_sequence`, and never gives a number twice); 0 before the first message.
pub(super) fn last_message_seq(conn: &Connection) -> u64 {
    conn.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map(|seq| seq.max(0) as u64)
        .unwrap_or(0)
}

/// The applications of the messages after sequence number `seq` (the batch being
/// committed: a range of the table's rowid, so a few rows read from cached pages). A
/// failed read wakes every reader instead.
fn apps_written_after(conn: &Connection, seq: u64) -> Option<Vec<String>> {
    let read = conn
        .prepare_cached("SELECT DISTINCT app_id FROM messages WHERE seq > ?1")
        .and_then(|mut s| s.query_map([i64::try_from(seq).unwrap_or(i64::MAX)], |r| r.get::<_, String>(0))?.collect());
    read.map_err(
        |e| tracing::warn!(error = %e, "cannot tell which applications a batch wrote; waking every stream reader"),
    )
    .ok()
}

pub(super) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Makes committed batches durable, then answers their callers. One `fdatasync` of the WAL
/// covers every batch committed before it, so batches that finished while the last sync
/// ran share the next one.
fn sync_loop(
    mut wal: WalFile,
    committed: mpsc::Receiver<Committed>,
    writer: mpsc::Sender<ToWriter>,
    (durable_seq, signals): (watch::Sender<u64>, Arc<StreamSignals>),
    flush_failed: FlushFailed,
) {
    while let Ok(first) = committed.recv() {
        let mut batches = vec![first];
        while let Ok(more) = committed.try_recv() {
            batches.push(more);
        }
        let started = Instant::now();
        let synced = wal.sync().map_err(|e| format!("cannot sync the write-ahead log {}: {e}", wal.path.display()));
        metrics::histogram!("hooklane_store_sync_seconds", "store" => "sqlite").record(started.elapsed());
        // After one failure no later flush proves anything (see `FlushFailed`).
        let synced = match synced {
            Ok(()) if flush_failed.load(Ordering::Acquire) => Err(FLUSH_FAILED.to_string()),
            Err(e) => {
                // Committed but maybe not on disk: callers are told it failed and may retry.
                tracing::error!(error = %e, "sqlite sync failed; the store takes no more writes until restarted");
                flush_failed.store(true, Ordering::Release);
                Err(e)
            }
            ok => ok,
        };
        let n = batches.len();
        if synced.is_ok() {
            let seq = batches.iter().map(|b| b.last_message_seq).max().unwrap_or(0);
            durable_seq.send_if_modified(|durable| {
                let raised = seq > *durable;
                *durable = (*durable).max(seq);
                raised
            });
            if batches.iter().any(|b| b.apps.is_none()) {
                signals.raise_all();
            } else {
                signals.raise(batches.iter().flat_map(|b| b.apps.iter().flatten().map(String::as_str)));
            }
        }
        for job in batches.into_iter().flat_map(|b| b.jobs) {
            job.finish(&synced);
        }
        // The writer may commit again.
        let _ = writer.send(ToWriter::Synced(n));
    }
}

/// The write-ahead log, kept open from the store's start for its flushes. A write error
/// the kernel met is reported once to each file handle open when it happened: one opened
/// afresh for each flush would not hear of an error already reported to another (SQLite's
/// checkpoint), and would call pages the kernel dropped durable. SQLite truncates the WAL
/// in place (the handle stays good) and deletes it only when its last connection closes;
/// should another file come to stand at its path all the same, it is opened instead.
pub(super) struct WalFile {
    path: PathBuf,
    file: Option<(std::fs::File, FileId)>,
}

/// What tells one file from another at the same path (device and inode on Unix; elsewhere
/// nothing, and the file kept open is assumed to stay the WAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId(meta.dev(), meta.ino())
    }

    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> Self {
        FileId(0, 0)
    }
}

impl WalFile {
    pub(super) fn new(path: PathBuf) -> Self {
        WalFile { path, file: None }
    }

    /// Flushes the write-ahead log to disk: the file kept open, unless another stands at its
    /// path now (or none was open yet, or the last open failed).
    pub(super) fn sync(&mut self) -> std::io::Result<()> {
        let at_path = FileId::of(&std::fs::metadata(&self.path)?);
        if !self.file.as_ref().is_some_and(|(_, id)| *id == at_path) {
            let file = std::fs::OpenOptions::new().write(true).open(&self.path)?;
            let id = FileId::of(&file.metadata()?);
            self.file = Some((file, id));
        }
        match &self.file {
            Some((file, _)) => file.sync_data(),
            None => Err(std::io::Error::other("the write-ahead log is not open")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint that failed on the disk stops writes; one only postponed (the database
    /// busy, locked, or its disk full for now) does not.
    #[test]
    fn checkpoint_failures_on_the_disk_are_told_apart() {
        let failure = |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        assert!(is_io_error(&failure(rusqlite::ffi::SQLITE_IOERR_FSYNC)));
        assert!(is_io_error(&failure(rusqlite::ffi::SQLITE_IOERR_WRITE)));
        assert!(!is_io_error(&failure(rusqlite::ffi::SQLITE_FULL)));
        assert!(!is_io_error(&failure(rusqlite::ffi::SQLITE_BUSY)));
        assert!(!is_io_error(&failure(rusqlite::ffi::SQLITE_LOCKED)));
    }

    /// The WAL's handle is kept from one flush to the next (so that it hears of every write
    /// error since it was opened), and another file standing at its path is opened instead.
    #[test]
    fn the_wal_handle_is_kept_until_another_file_stands_at_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db-wal");
        let mut wal = WalFile::new(path.clone());
        assert_eq!(wal.sync().map_err(|e| e.kind()), Err(std::io::ErrorKind::NotFound));
        std::fs::write(&path, b"frames").expect("wal");
        wal.sync().expect("sync");
        let first = wal.file.as_ref().map(|(_, id)| *id);
        wal.sync().expect("sync again");
        assert_eq!(wal.file.as_ref().map(|(_, id)| *id), first, "the same handle");
        let other = dir.path().join("other");
        std::fs::write(&other, b"new").expect("other");
        std::fs::rename(&other, &path).expect("replace");
        wal.sync().expect("sync the new file");
        let now = wal.file.as_ref().map(|(_, id)| *id);
        if cfg!(unix) {
            assert_ne!(now, first, "the file now at the path is opened");
        }
        std::fs::remove_file(&path).expect("remove");
        assert!(wal.sync().is_err(), "no WAL at its path: not called durable");
    }

    type Answer = oneshot::Receiver<StoreResult<()>>;

    /// A write of one row into `table`, answered on the disk's flush or at the commit.
    fn insert(table: &'static str, flushed: bool) -> (Box<dyn WriteJob>, Answer) {
        let (reply, answer) = oneshot::channel();
        let work = move |c: &Connection| execute(c, &format!("INSERT INTO {table} (x) VALUES (1)"), []).map(|_| ());
        (Box::new(TypedJob::new(work, true, flushed, reply)), answer)
    }

    /// Whether the write is answered with a success, waiting up to 10 s for its answer (the
    /// writer thread may be slow to run under load).
    fn answered(answer: &mut Answer) -> bool {
        matches!(answer_of(answer), Ok(Ok(())))
    }

    /// Whether the write is still unanswered 200 ms on: an answer that comes later would
    /// have come too early as well.
    fn unanswered(answer: &mut Answer) -> bool {
        std::thread::sleep(Duration::from_millis(200));
        matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Empty))
    }

    /// The answer on `receiver`, waited for up to 10 s.
    fn answer_of<T>(receiver: &mut oneshot::Receiver<T>) -> Result<T, oneshot::error::TryRecvError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match receiver.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// The sync thread is played by the test: batches handed to it are never flushed
    /// until it says so.
    #[test]
    fn writes_that_need_no_flush_are_answered_at_the_commit_unless_messages_came_with_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = Connection::open(dir.path().join("w.db")).expect("open");
        conn.execute_batch(
            "CREATE TABLE leases (x INTEGER); CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, x INTEGER);",
        )
        .expect("schema");
        let (to_sync, committed) = mpsc::channel::<Committed>();
        let (to_writer, inbox) = mpsc::channel::<ToWriter>();
        let signals = Arc::new(StreamSignals::default());
        std::thread::spawn(move || Writer::new(conn, to_sync, FlushFailed::default(), signals, 0).run(inbox));
        let send = |job| to_writer.send(ToWriter::Job(job)).expect("writer");

        let (job, mut lease) = insert("leases", false);
        send(job);
        assert!(answered(&mut lease), "answered at its commit");
        assert!(committed.try_recv().is_err(), "and nothing handed over to be flushed");

        let (job, mut durable) = insert("leases", true);
        send(job);
        assert!(unanswered(&mut durable), "a write that waits for the disk is not answered before the flush");
        assert_eq!(committed.recv().expect("batch").jobs.len(), 1);

        // While that batch is being flushed the writer gathers the next one: a message and
        // a lease that could have read it, which then waits for the flush too.
        let (job, mut message) = insert("messages", true);
        send(job);
        let (job, mut lease) = insert("leases", false);
        send(job);
        to_writer.send(ToWriter::Synced(1)).expect("writer");
        assert!(unanswered(&mut lease), "committed with a message: answered on the flush only");
        assert!(unanswered(&mut message));
        let batch = committed.recv().expect("batch");
        assert_eq!(batch.jobs.len(), 2);
        batch.jobs.into_iter().for_each(|job| job.finish(&Ok(())));
        assert!(answered(&mut lease) && answered(&mut message), "both answered by the flush");
        let _ = to_writer.send(ToWriter::Stop);
    }

    /// A job that ends up outside the transaction (SQLite rolled it back on a full disk, an
    /// I/O error: played here by the job itself) fails its batch at once: the writes before
    /// it are told they failed (they were undone), and the next job starts a batch of its
    /// own instead of committing alone, outside any transaction, and then being told it
    /// failed.
    #[test]
    fn a_batch_the_database_rolled_back_fails_where_it_stands() {
        for savepoint in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let conn = Connection::open(dir.path().join("w.db")).expect("open");
            conn.execute_batch("CREATE TABLE leases (x INTEGER); CREATE TABLE messages (seq INTEGER PRIMARY KEY)")
                .expect("schema");
            let (to_sync, _committed) = mpsc::channel::<Committed>();
            let (to_writer, inbox) = mpsc::channel::<ToWriter>();
            let send = |job| to_writer.send(ToWriter::Job(job)).expect("writer");
            let (before, mut before_answer) = insert("leases", false);
            send(before);
            let (reply, mut undone) = oneshot::channel();
            let work = |c: &Connection| {
                execute(c, "ROLLBACK", [])?;
                Err::<(), _>(StoreError::Unavailable("disk full".into()))
            };
            send(Box::new(TypedJob::new(work, savepoint, false, reply)));
            let (after, mut after_answer) = insert("leases", false);
            send(after);
            // All three wait in the inbox before the writer starts: one batch.
            let signals = Arc::new(StreamSignals::default());
            let check = Connection::open(dir.path().join("w.db")).expect("open");
            std::thread::spawn(move || Writer::new(conn, to_sync, FlushFailed::default(), signals, 0).run(inbox));
            // Through no fault of its own: the same write may succeed again.
            let before = answer_of(&mut before_answer);
            assert!(
                matches!(before, Ok(Err(StoreError::Unavailable(_)))),
                "undone, and told so ({savepoint}): {before:?}"
            );
            // Told its own failure, not the savepoint's that followed it.
            let undone = answer_of(&mut undone);
            assert!(
                matches!(&undone, Ok(Err(StoreError::Unavailable(m))) if m == "disk full"),
                "{savepoint}: {undone:?}"
            );
            assert!(answered(&mut after_answer), "the next write commits in a batch of its own");
            let rows: i64 = check.query_row("SELECT COUNT(*) FROM leases", [], |r| r.get(0)).expect("count");
            assert_eq!(rows, 1, "only the write told it succeeded is there");
            let _ = to_writer.send(ToWriter::Stop);
        }
    }
}
