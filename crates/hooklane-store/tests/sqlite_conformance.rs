//! The store conformance suite (`tests/conformance`) run against the embedded SQLite store,
//! each case on a fresh database file of its own.

#[macro_use]
mod conformance;

use std::sync::Arc;

use hooklane_store::sqlite::SqliteStore;
use hooklane_store::DynStore;
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
