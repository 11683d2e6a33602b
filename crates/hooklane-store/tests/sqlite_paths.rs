//! The embedded store opened by another name than its file's.

use hooklane_store::sqlite::SqliteStore;
use hooklane_store::Store;

/// A database reached through a symbolic link takes writes, made durable: SQLite keeps its
/// write-ahead log beside the file the link leads to, which is the one flushed.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_reached_through_a_link_takes_writes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let real = dir.path().join("real").join("hooklane.db");
    std::fs::create_dir_all(real.parent().expect("a folder")).expect("folder");
    // Made by the store the first time, through its own name.
    drop(SqliteStore::open(&real).await.expect("open"));
    let link = dir.path().join("hooklane.db");
    std::os::unix::fs::symlink(&real, &link).expect("link");
    let store = SqliteStore::open(&link).await.expect("open through the link");
    let principal = hooklane_core::model::Principal::Admin;
    store.create_token("hash".into(), principal.clone(), hooklane_core::Utc::now(), None, None).await.expect("a write");
    store.ping().await.expect("ready");
    assert!(dir.path().join("real").join("hooklane.db-wal").exists(), "the log beside the file itself");
    drop(store);
    let store = SqliteStore::open(&link).await.expect("open again");
    assert_eq!(store.find_token("hash", hooklane_core::Utc::now()).await.expect("read"), Some(principal));
}
