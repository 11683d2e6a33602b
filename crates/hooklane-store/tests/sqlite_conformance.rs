//! The store conformance suite (`tests/conformance`) run against the embedded SQLite store,
//! each case on a fresh database file of its own.

#[macro_use]
mod conformance;

use std::sync::Arc;

use hooklane_store::sqlite::SqliteStore;
use hooklane_store::{DynStore, Store, StoreError};
use tempfile::TempDir;

/// A new, empty store in a temporary directory that lives as long as the returned guard.
async fn fresh_store() -> (DynStore, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("hooklane.db")).await.expect("open sqlite store");
    (Arc::new(store), dir)
}

store_conformance_tests!(fresh_store);

/// Reopening the same file finds what was written before (the schema migration is not
/// re-run destructively and acknowledged writes are on disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/hooklane.db");
    let app = conformance::new_app("Persistent", Some("persist"));
    {
        let store: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());
        store.create_app(app.clone()).await.unwrap();
    }
    let store: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());
    assert_eq!(store.get_app("persist").await.unwrap(), Some(app));
}

/// Lanes are claimed longest due first whatever plan SQLite picks for finding them. With no
/// statistics it reads an endpoint's due rows by due time (`deliveries_pending`), which gave
/// that order by chance; with those of a large backlog (many pending rows, few awake lane
/// rows: what `ANALYZE` records then, put here by hand) it walks the awake rows by lane key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_lanes_are_claimed_due_longest_first_whatever_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooklane.db");
    let (fifo, heads, now) = {
        let store: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());
        conformance::lanes_due_in_reverse_key_order(&store).await
    };
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "ANALYZE; DELETE FROM sqlite_stat1; \
             INSERT INTO sqlite_stat1 VALUES ('deliveries', 'deliveries_pending', '1000000 100000 1'), \
                 ('deliveries', 'deliveries_lane_awake', '50 50 1 1'), \
                 ('deliveries', 'deliveries_lane', '100000 100000 10 1');",
        )
        .unwrap();
    }
    // Statistics are read as a connection opens.
    let store: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());
    conformance::assert_lanes_are_claimed_due_longest_first(&store, &fifo, &heads, now).await;
}

#[tokio::test]
async fn sqlite_needs_no_recheck_of_event_streams() {
    let (store, _dir) = fresh_store().await;
    assert_eq!(store.message_events_recheck(), None, "the signal announces every flushed message");
}

/// The instance secret is made once per database file and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_secret_is_kept_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooklane.db");
    let secret = SqliteStore::open(&path).await.unwrap().instance_secret();
    assert_ne!(secret, [0; 32]);
    assert_eq!(SqliteStore::open(&path).await.unwrap().instance_secret(), secret);
    let (other, _other_dir) = fresh_store().await;
    assert_ne!(other.instance_secret(), secret, "each database has its own");
}

/// A failed flush of the write-ahead log stops the store taking writes for good: the
/// kernel may have dropped what it could not write, and a later flush that succeeds would
/// not bring it back. Reads go on; `ping` (behind `/ready`) fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_stops_writes_until_reopened() {
    let (store, dir) = fresh_store().await;
    let app = conformance::new_app("before", None);
    store.create_app(app.clone()).await.expect("a write before the failure");
    store.ping().await.expect("ready");
    let wal = dir.path().join("hooklane.db-wal");
    // The sync thread opens the log by name for each flush: without it, the flush fails.
    std::fs::rename(&wal, dir.path().join("moved-wal")).expect("move the write-ahead log away");
    let failed = store.create_app(conformance::new_app("during", None)).await;
    // Unavailable (the API answers 503 with `Retry-After`): the write was good, the disk not.
    assert!(matches!(failed, Err(StoreError::Unavailable(_))), "the write whose flush failed: {failed:?}");
    // Put a file back: flushes would succeed now, but nothing since the failure is known
    // to be on disk.
    std::fs::write(&wal, b"").expect("a file where the log was");
    let after = store.create_app(conformance::new_app("after", None)).await;
    assert!(matches!(&after, Err(StoreError::Unavailable(why)) if why.contains("restarted")), "{after:?}");
    assert!(store.ping().await.is_err(), "not ready");
    assert_eq!(store.get_app(&app.id).await.expect("reads go on").map(|a| a.id), Some(app.id));
}

/// A write wakes the stream readers of the applications it wrote to, once it is on disk,
/// and no others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_signals_are_per_application() {
    let (store, _dir) = fresh_store().await;
    let t = conformance::now_ms();
    let a = conformance::setup_app(&store, "A").await;
    let b = conformance::setup_app(&store, "B").await;
    let mut signal_a = store.message_events_signal(&a.id);
    let signal_b = store.message_events_signal(&b.id);
    store.create_message(conformance::new_message(&a.id, "user.created", t), vec![], None).await.unwrap();
    // The answer comes after the flush, and the signal is raised before the answer.
    assert!(signal_a.has_changed().unwrap(), "A's readers are woken by A's message");
    assert!(!signal_b.has_changed().unwrap(), "B's readers slept through A's message");
    signal_a.borrow_and_update();
    store.create_message(conformance::new_message(&b.id, "user.created", t), vec![], None).await.unwrap();
    assert!(signal_b.has_changed().unwrap() && !signal_a.has_changed().unwrap());
}
