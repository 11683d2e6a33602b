//! The embedded store's `ping` (what `/ready` asks) answers only once its writer has taken
//! a job.

use std::time::Duration;

use hooklane_store::sqlite::SqliteStore;
use hooklane_store::Store;

/// Another connection holding the database's write lock (as a long job, or a disk that stopped
/// answering, holds the writer): every write waits, and `ping` does not answer; once the lock
/// goes, it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_waits_for_the_writer() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("hooklane.db");
    let store = SqliteStore::open(&path).await.expect("open");
    store.ping().await.expect("ready");
    let other = rusqlite::Connection::open(&path).expect("open another connection");
    other.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
    let pinged = tokio::time::timeout(Duration::from_secs(1), store.ping()).await;
    assert!(!matches!(pinged, Ok(Ok(()))), "ready while nothing can be written: {pinged:?}");
    other.execute_batch("ROLLBACK").expect("let the lock go");
    let again = tokio::time::timeout(Duration::from_secs(10), store.ping()).await;
    assert!(matches!(again, Ok(Ok(()))), "{again:?}");
}
