//! Dropping the embedded store ends its writer and sync threads (each holds the database
//! open). Alone in its file so that no other test's store runs in this process.

use std::time::{Duration, Instant};

use hooklane_store::sqlite::SqliteStore;
use hooklane_store::Store;

/// Threads of this process whose name starts with `hooklane-sqlite`.
fn store_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("hooklane-sqlite"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_its_threads() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(dir.path().join("hooklane.db")).await.expect("open");
    store
        .create_token("hash".into(), hooklane_core::model::Principal::Admin, hooklane_core::Utc::now(), None, None)
        .await
        .expect("a write");
    assert_eq!(store_threads(), 2, "a writer and a sync thread while the store is open");
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store_threads() > 0 {
        assert!(Instant::now() < deadline, "{} store threads still running after the drop", store_threads());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
