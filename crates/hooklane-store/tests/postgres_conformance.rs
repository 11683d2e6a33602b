//! The store conformance suite (`tests/conformance`) run against the PostgreSQL store, each
//! case on a fresh database of its own, plus what only matters with several nodes sharing
//! one database.
//!
//! The server is `DATABASE_URL` when set, else a throw-away cluster this test process
//! starts (see `hooklane_store::postgres::testing`). Without PostgreSQL these tests fail,
//! saying how to install it: they are never skipped.

#[macro_use]
mod conformance;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hooklane_core::model::{DeliveryStatus, Message};
use hooklane_store::postgres::testing::TestDatabase;
use hooklane_store::postgres::PgStore;
use hooklane_store::{ClaimRoom, DynStore, EventPosition, EventsQuery, NextStep, StoreError};
use tokio_postgres::NoTls;

/// A new, empty store on a database of its own, dropped with the returned guard.
async fn fresh_store() -> (DynStore, TestDatabase) {
    let db = TestDatabase::create().await;
    let store = PgStore::open(db.url()).await.expect("open postgres store");
    (Arc::new(store), db)
}

store_conformance_tests!(fresh_store);

/// A plain connection to the test database, to look under the store.
async fn sql(db: &TestDatabase) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(db.url(), NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn migrations(db: &TestDatabase) -> Vec<i32> {
    let rows = sql(db).await.query("SELECT version FROM schema_migrations ORDER BY version", &[]).await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

/// A database that takes no connections (its connections ended, new ones refused, as while
/// it restarts) makes the store unavailable, an error the API answers 503 with
/// `Retry-After`, not an internal error; once it takes them again, so does the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_taking_no_connections_makes_the_store_unavailable() {
    let (store, db) = fresh_store().await;
    let app = conformance::new_app("Before", Some("before"));
    store.create_app(app.clone()).await.expect("a write while connected");
    // A database cannot refuse connections from a session of its own: from the server's.
    let server = tokio::task::spawn_blocking(hooklane_store::postgres::testing::server).await.expect("server");
    let (admin, connection) = tokio_postgres::connect(server.admin_url(), NoTls).await.expect("connect");
    tokio::spawn(connection);
    let name = db.name();
    admin.batch_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false")).await.expect("refuse");
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&name])
        .await
        .expect("end the store's connections");
    for _ in 0..3 {
        let read = store.get_app("before").await;
        assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
        let write = store.create_app(conformance::new_app("During", None)).await;
        assert!(matches!(write, Err(StoreError::Unavailable(_))), "{write:?}");
    }
    admin.batch_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true")).await.expect("allow");
    assert_eq!(store.get_app("before").await.expect("connected again"), Some(app));
}

/// A database whose sessions take no writes (read-only by default here, as a standby after
/// a failover is) fails the store's ping, which `/ready` reads, though it answers reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_takes_no_writes_is_not_ready() {
    let (store, db) = fresh_store().await;
    store.ping().await.expect("ready while it takes writes");
    let name = db.name();
    let admin = sql(&db).await;
    admin.batch_execute(&format!("ALTER DATABASE \"{name}\" SET default_transaction_read_only = on")).await.unwrap();
    // The store's sessions made again, reading the new default.
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await
        .unwrap();
    let mut last = Ok(());
    for _ in 0..5 {
        last = store.ping().await;
        if matches!(&last, Err(StoreError::Unavailable(m)) if m.contains("takes no writes")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(&last, Err(StoreError::Unavailable(m)) if m.contains("takes no writes")), "{last:?}");
    assert!(store.get_app("none").await.is_ok(), "reads still work");
}

/// Reopening the same database finds what was written before, and the migrations are not
/// run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data() {
    let db = TestDatabase::create().await;
    let app = conformance::new_app("Persistent", Some("persist"));
    {
        let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
        store.create_app(app.clone()).await.unwrap();
    }
    let secret = {
        let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
        store.instance_secret()
    };
    let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    assert_eq!(store.get_app("persist").await.unwrap(), Some(app));
    assert_eq!(migrations(&db).await, (1..=39).collect::<Vec<i32>>());
    assert_eq!(store.instance_secret(), secret, "the instance secret is kept");
    let (other, _other_db) = fresh_store().await;
    assert_ne!(other.instance_secret(), secret, "each database has its own");
}

/// Several nodes starting at once on an empty database: every open succeeds, each
/// migration runs once, and all nodes hold the same instance secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once() {
    let db = TestDatabase::create().await;
    let mut opens = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let url = db.url().to_string();
        opens.spawn(async move { PgStore::open(&url).await.map(|s| hooklane_store::Store::instance_secret(&s)) });
    }
    let mut secrets = Vec::new();
    while let Some(r) = opens.join_next().await {
        secrets.push(r.unwrap().expect("concurrent open"));
    }
    assert_eq!(migrations(&db).await, (1..=39).collect::<Vec<i32>>());
    assert!(secrets.iter().all(|s| *s == secrets[0]), "one secret for every node");
    assert_ne!(secrets[0], [0; 32]);
}

/// `hooklane_store::open` recognizes both URL schemes and hooklane's `pool_max_size`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_dispatches_postgres_urls() {
    let db = TestDatabase::create().await;
    let app = conformance::new_app("Via open", Some("via-open"));
    let store = hooklane_store::open(db.url()).await.expect("postgres:// URL");
    store.create_app(app.clone()).await.unwrap();
    let other = db.url().replacen("postgres://", "postgresql://", 1) + "?pool_max_size=2";
    let store = hooklane_store::open(&other).await.expect("postgresql:// URL with pool_max_size");
    assert_eq!(store.get_app("via-open").await.unwrap(), Some(app));
    match hooklane_store::open(&format!("{}?pool_max_size=zero", db.url())).await {
        Err(StoreError::Database(_)) => {}
        other => panic!("a bad pool_max_size must be refused, got {:?}", other.map(|_| ())),
    }
}

/// Pollers on two nodes (two stores, two pools) claiming at the same time never get the
/// same delivery, and together get all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_due_is_exclusive_across_nodes() {
    const MESSAGES: usize = 150;
    let db = TestDatabase::create().await;
    let node_a: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let node_b: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let t = conformance::now_ms();
    let app = conformance::setup_app(&node_a, "A").await;
    let e1 = conformance::setup_endpoint(&node_a, &app.id).await;
    let e2 = conformance::setup_endpoint(&node_b, &app.id).await;
    let mut all = BTreeSet::new();
    for _ in 0..MESSAGES {
        let msg = conformance::post(&node_a, &app.id, &[&e1, &e2], t).await;
        all.insert(conformance::pair(&msg, &e1));
        all.insert(conformance::pair(&msg, &e2));
    }

    let mut pollers = tokio::task::JoinSet::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { node_a.clone() } else { node_b.clone() };
        pollers.spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = store
                    .claim_due(t + conformance::secs(1), 7, Duration::from_secs(60), &ClaimRoom::default())
                    .await
                    .unwrap();
                if jobs.is_empty() {
                    return got;
                }
                got.extend(jobs.into_iter().map(|j| (j.delivery.msg_id, j.delivery.endpoint_id)));
            }
        });
    }
    let mut claimed = Vec::new();
    while let Some(r) = pollers.join_next().await {
        claimed.extend(r.unwrap());
    }
    let unique: BTreeSet<_> = claimed.iter().cloned().collect();
    assert_eq!(unique.len(), claimed.len(), "a delivery was claimed twice");
    assert_eq!(unique, all, "every due delivery is claimed");
}

/// A create_message that fails part-way (here: the same endpoint twice) writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_create_message_writes_nothing() {
    let (store, _db) = fresh_store().await;
    let t = conformance::now_ms();
    let app = conformance::setup_app(&store, "A").await;
    let ep = conformance::setup_endpoint(&store, &app.id).await;
    let msg = conformance::new_message(&app.id, "user.created", t);
    let r = store.create_message(msg.clone(), vec![ep.id.clone(), ep.id.clone()], None).await;
    conformance::assert_conflict(r, "the same endpoint twice");
    assert_eq!(store.get_message(&app.id, &msg.id).await.unwrap(), None);
    assert!(store.message_deliveries(&app.id, &msg.id).await.unwrap().is_empty());
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None);
}

/// An import whose last write fails (a NUL, which PostgreSQL text cannot hold) writes
/// nothing of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_event_type_import_writes_nothing() {
    let (store, _db) = fresh_store().await;
    let first = conformance::new_event_type("first");
    let mut bad = conformance::new_event_type("bad");
    bad.description = "a\0b".into();
    let existing = conformance::new_event_type("existing");
    store.create_event_type(existing.clone()).await.unwrap();
    let r = store.import_event_types(vec![first, bad], vec!["existing".into()], conformance::now_ms(), false).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(store.get_event_type("first").await.unwrap(), None);
    assert_eq!(store.get_event_type("existing").await.unwrap(), Some(existing), "not archived");
}

/// A receiver's response with NUL bytes (which PostgreSQL text cannot hold) is still
/// recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_with_nul_is_recorded() {
    let (store, _db) = fresh_store().await;
    let t = conformance::now_ms();
    let app = conformance::setup_app(&store, "A").await;
    let ep = conformance::setup_endpoint(&store, &app.id).await;
    let msg = conformance::post(&store, &app.id, &[&ep], t).await;
    assert_eq!(conformance::claim(&store, t + conformance::secs(1)).await.len(), 1);
    let mut o = conformance::outcome(&msg.id, &ep, t, NextStep::GiveUp);
    o.attempt.response = "bad\0body".into();
    store.record_attempts(vec![o.clone()], Duration::from_secs(3600)).await.unwrap();
    let stored = store.get_attempt(&app.id, &msg.id, &o.attempt.id).await.unwrap().expect("attempt");
    assert_eq!(stored.response, "bad\u{FFFD}body");
    assert_eq!(stored.status, DeliveryStatus::Fail);
}

/// A claimed delivery whose endpoint does not exist (here: never did) is dropped, not
/// handed out, as the SQLite store does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_drops_deliveries_without_endpoint() {
    let (store, _db) = fresh_store().await;
    let t = conformance::now_ms();
    let app = conformance::setup_app(&store, "A").await;
    let ep = conformance::setup_endpoint(&store, &app.id).await;
    let msg = conformance::new_message(&app.id, "user.created", t);
    let ghost = hooklane_core::ids::new_id(hooklane_core::ids::ENDPOINT);
    store.create_message(msg.clone(), vec![ep.id.clone(), ghost], None).await.unwrap();
    let jobs = conformance::claim(&store, t + conformance::secs(1)).await;
    assert_eq!(conformance::job_keys(&jobs), BTreeSet::from([conformance::pair(&msg, &ep)]));
    store
        .record_attempts(vec![conformance::outcome(&msg.id, &ep, t, NextStep::Succeeded)], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "the ghost delivery is gone");
}

/// A message three hours old whose one delivery failed, on a database of its own.
struct OldFailure {
    db: TestDatabase,
    store: DynStore,
    t: hooklane_core::DateTime<hooklane_core::Utc>,
    app: hooklane_core::model::Application,
    ep: hooklane_core::model::Endpoint,
    msg: Message,
}

impl OldFailure {
    async fn new() -> Self {
        let db = TestDatabase::create().await;
        let store: DynStore = Arc::new(PgStore::open(db.url()).await.expect("open"));
        let t = conformance::now_ms();
        let app = conformance::setup_app(&store, "A").await;
        let ep = conformance::setup_endpoint(&store, &app.id).await;
        let msg = conformance::post(&store, &app.id, &[&ep], t - conformance::hours(3)).await;
        assert_eq!(conformance::claim(&store, t).await.len(), 1);
        let failed = conformance::outcome(&msg.id, &ep, t, NextStep::GiveUp);
        store.record_attempts(vec![failed], Duration::from_secs(24 * 3600)).await.unwrap();
        OldFailure { db, store, t, app, ep, msg }
    }
}

/// Pruning an old message while a resend of its failed delivery is under way (its
/// transaction holding the row): once the resend commits, its delivery and its message stay,
/// and the delivery can be claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_committed_while_pruning_is_kept() {
    let OldFailure { db, store, t, app, ep, msg } = OldFailure::new().await;

    // Another connection queues it again (as a resend does) and holds its transaction open.
    let mut other = sql(&db).await;
    let resend = other.transaction().await.unwrap();
    let queued = resend
        .execute(
            "UPDATE deliveries SET status = 1, attempts = 0, due_at = $2 WHERE msg_id = $1",
            &[&msg.id, &t.timestamp_millis()],
        )
        .await
        .unwrap();
    assert_eq!(queued, 1);
    let pruning = {
        let store = store.clone();
        let before = hooklane_store::PruneMessages { before: t - conformance::hours(1), after: String::new() };
        tokio::spawn(async move { store.prune(t, None, Some(before), 100).await })
    };
    // The prune reads the delivery as failed, then waits for its row.
    until_a_store_statement_waits(&db).await;
    resend.commit().await.unwrap();
    let pruned = tokio::time::timeout(Duration::from_secs(10), pruning).await.expect("pruned").unwrap().unwrap();
    assert_eq!(pruned.messages, 0, "{pruned:?}");
    assert!(store.get_message(&app.id, &msg.id).await.unwrap().is_some(), "the message stays");
    let kept = store.message_deliveries(&app.id, &msg.id).await.unwrap();
    assert_eq!(kept.len(), 1, "its delivery stays");
    assert_eq!(kept[0].0.status, DeliveryStatus::Pending);
    let again = conformance::claim(&store, t + conformance::secs(1)).await;
    assert_eq!(conformance::job_keys(&again), BTreeSet::from([conformance::pair(&msg, &ep)]));
}

/// A resend waiting for a prune that locked its message (to delete it) queues nothing once
/// the prune has deleted it: no delivery is left without its message, and the resend says
/// the message is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_behind_a_prune_queues_nothing() {
    let OldFailure { db, store, t, app, ep, msg } = OldFailure::new().await;

    // The prune's lock, and its deletes, held open on another connection.
    let mut other = sql(&db).await;
    let prune = other.transaction().await.unwrap();
    prune.query("SELECT id FROM messages WHERE id = $1 FOR UPDATE", &[&msg.id]).await.unwrap();
    let resending = {
        let (store, app_id, msg_id, ep_id) = (store.clone(), app.id.clone(), msg.id.clone(), ep.id.clone());
        tokio::spawn(async move { store.resend(&app_id, &msg_id, &ep_id, t + conformance::secs(1)).await })
    };
    // The resend waits to share the message's row.
    until_a_store_statement_waits(&db).await;
    prune.execute("DELETE FROM deliveries WHERE msg_id = $1", &[&msg.id]).await.unwrap();
    prune.execute("DELETE FROM attempts WHERE msg_id = $1", &[&msg.id]).await.unwrap();
    prune.execute("DELETE FROM messages WHERE id = $1", &[&msg.id]).await.unwrap();
    prune.commit().await.unwrap();
    let resent = tokio::time::timeout(Duration::from_secs(10), resending).await.expect("answered").unwrap();
    assert!(matches!(resent, Err(StoreError::NotFound)), "{resent:?}");
    let left = sql(&db).await.query("SELECT 1 FROM deliveries WHERE msg_id = $1", &[&msg.id]).await.unwrap();
    assert!(left.is_empty(), "no delivery without its message");
}

/// Work written by one node wakes the pollers of every node (`LISTEN/NOTIFY`).
/// Two nodes on `db`, an application and endpoint written through the first, once the
/// second's LISTEN connection is up (it bumps the events signal once when it comes up; the
/// same connection carries wake-ups): the second node's wake-ups, any left over dropped.
async fn two_listening_nodes(
    db: &TestDatabase,
) -> (DynStore, DynStore, Arc<tokio::sync::Notify>, hooklane_core::model::Application, hooklane_core::model::Endpoint) {
    let node_a: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let node_b: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let wake_b = node_b.wakeups().expect("PostgreSQL nodes can be woken");
    let app = conformance::setup_app(&node_a, "A").await;
    let ep = conformance::setup_endpoint(&node_a, &app.id).await;
    let mut listening = node_b.message_events_signal(&app.id);
    tokio::time::timeout(Duration::from_secs(10), listening.wait_for(|v| *v > 0))
        .await
        .expect("B's LISTEN connection comes up")
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(50), wake_b.notified()).await;
    (node_a, node_b, wake_b, app, ep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unleased_work_wakes_other_nodes() {
    let db = TestDatabase::create().await;
    let (node_a, _node_b, wake_b, app, ep) = two_listening_nodes(&db).await;
    let t = conformance::now_ms();

    let woken = wake_b.notified();
    conformance::post(&node_a, &app.id, &[&ep], t).await;
    tokio::time::timeout(Duration::from_secs(5), woken).await.expect("node B was not woken by node A's message");

    // A message leased at ingest belongs to its writer: nobody else is woken.
    let quiet = wake_b.notified();
    let msg = conformance::new_message(&app.id, "user.created", t);
    node_a.create_message(msg, vec![ep.id.clone()], Some(t + conformance::secs(60))).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), quiet).await.is_err(), "leased work woke other nodes");
}

/// A LISTEN connection that stops answering without closing (its server process stopped,
/// as a half-open connection behaves) is made again within seconds, and wake-ups reach the
/// node again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_connection_that_stops_answering_is_made_again() {
    let db = TestDatabase::create().await;
    let (node_a, _node_b, wake_b, app, ep) = two_listening_nodes(&db).await;
    // Every LISTEN connection's server process stopped (SIGSTOP): its socket stays open.
    let admin = sql(&db).await;
    async fn listeners(admin: &tokio_postgres::Client) -> BTreeSet<i32> {
        let sql = "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()";
        let rows = admin.query(sql, &[&hooklane_store::postgres::LISTEN_APPLICATION_NAME]).await.unwrap();
        rows.iter().map(|r| r.get::<_, i32>(0)).collect()
    }
    // (Node B's connection is up, node A's may still be on its way on a busy machine.)
    let mut stopped = listeners(&admin).await;
    for _ in 0..100 {
        if stopped.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stopped = listeners(&admin).await;
    }
    assert!(stopped.len() >= 2, "both nodes listen: {stopped:?}");
    let signal = |sig: &str, pids: &BTreeSet<i32>| {
        for pid in pids {
            let status = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill");
            assert!(status.success(), "kill {sig} {pid}");
        }
    };
    signal("-STOP", &stopped);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let fresh = loop {
        let now_listening = listeners(&admin).await;
        let fresh: BTreeSet<i32> = now_listening.difference(&stopped).copied().collect();
        if fresh.len() >= 2 || std::time::Instant::now() > deadline {
            break fresh;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    signal("-CONT", &stopped);
    assert!(fresh.len() >= 2, "new LISTEN connections: {fresh:?}");
    let _ = tokio::time::timeout(Duration::from_millis(200), wake_b.notified()).await;
    let woken = wake_b.notified();
    conformance::post(&node_a, &app.id, &[&ep], conformance::now_ms()).await;
    tokio::time::timeout(Duration::from_secs(5), woken).await.expect("B is woken again");
}

/// The stream of an application's messages never passes over a write still in flight: a
/// message whose transaction began first (a smaller transaction id, and here a smaller
/// message id too) but commits after a later one is read, in its place, once it commits.
/// Messages written through the store announce themselves to every node (`NOTIFY` in the
/// ingest statement), and a write that inserts nothing announces nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_never_pass_over_a_write_in_flight() {
    let db = TestDatabase::create().await;
    let node_a: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let node_b: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let t = conformance::now_ms();
    let app = conformance::setup_app(&node_a, "A").await;
    // B's LISTEN connection bumps the signal once when it comes up; from then on only
    // notifications do.
    let mut signal = node_b.message_events_signal(&app.id);
    tokio::time::timeout(Duration::from_secs(10), signal.wait_for(|v| *v > 0))
        .await
        .expect("B's LISTEN connection comes up")
        .unwrap();
    // Announcements name the applications written: readers of another one sleep on.
    let other = conformance::setup_app(&node_a, "Other").await;
    let other_signal = node_b.message_events_signal(&other.id);
    let read = |after: EventPosition| {
        let (store, app_id) = (node_a.clone(), app.id.clone());
        async move {
            let q = EventsQuery::after(after, 10);
            store.read_message_events(&app_id, &q).await.expect("read_message_events")
        }
    };

    // A writer that began first and is still open.
    let mut raw = sql(&db).await;
    let tx = raw.transaction().await.unwrap();
    let mut early = conformance::new_message(&app.id, "user.created", t);
    early.channels = Some(vec!["eu".into()]);
    tx.execute(
        "INSERT INTO messages (id, app_id, event_type, payload, channels, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&early.id, &early.app_id, &early.event_type, &early.payload, &early.channels, &t.timestamp_millis()],
    )
    .await
    .unwrap();
    // A later write, through the store, commits first.
    let later = conformance::post(&node_a, &app.id, &[], t).await;
    assert!(early.id < later.id);
    tokio::time::timeout(Duration::from_secs(5), signal.changed())
        .await
        .expect("node B was not told of node A's message")
        .unwrap();
    assert!(!other_signal.has_changed().unwrap(), "another application's readers were woken");
    assert_eq!(node_b.get_message(&app.id, &later.id).await.unwrap(), Some(later.clone()), "committed");
    let first = read(EventPosition::START).await;
    assert!(first.messages.is_empty(), "read past a write in flight: {:?}", first.messages);
    assert!(first.done);
    assert!(first.held_back, "the reader is told its committed message is held back");
    // Another application's message is held back by this application's open write too, and
    // its readers hear of nothing when that write ends: they are told to look again soon.
    let other_message = conformance::post(&node_a, &other.id, &[], t).await;
    let q = EventsQuery::after(EventPosition::START, 10);
    let held = node_b.read_message_events(&other.id, &q).await.unwrap();
    assert!(held.messages.is_empty() && held.held_back, "{held:?}");

    tx.commit().await.unwrap();
    // Both become readable once every transaction begun before them (in the whole cluster,
    // which other tests share) has finished: read on, carrying `next`, until they are.
    let (mut got, mut next) = (Vec::new(), first.next);
    for _ in 0..500 {
        let page = read(next).await;
        assert!(page.next >= next, "positions never go back");
        got.extend(page.messages);
        next = page.next;
        if got.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let messages: Vec<&Message> = got.iter().map(|(_, m)| m).collect();
    assert_eq!(messages, vec![&early, &later], "the earlier writer's message first, nothing passed over");
    assert!(first.next < got[0].0 && got[0].0 < got[1].0 && got[1].0 <= next, "{got:?}");
    let rest = read(next).await;
    assert!(rest.messages.is_empty(), "each message once: {:?}", rest.messages);
    assert!(rest.done && rest.next >= next);
    let mut released = node_b.read_message_events(&other.id, &q).await.unwrap();
    for _ in 0..500 {
        if !released.messages.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        released = node_b.read_message_events(&other.id, &q).await.unwrap();
    }
    assert_eq!(released.messages.iter().map(|(_, m)| m).collect::<Vec<_>>(), vec![&other_message]);

    // A write that inserts nothing (a duplicate eventId) notifies nothing.
    let mut dup = conformance::new_message(&app.id, "user.created", t);
    dup.event_id = Some("evt-1".into());
    node_a.create_message(dup, vec![], None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), signal.changed()).await.expect("told of the first").unwrap();
    let mut again = conformance::new_message(&app.id, "user.created", t);
    again.event_id = Some("evt-1".into());
    conformance::assert_conflict(node_a.create_message(again, vec![], None).await, "a duplicate eventId");
    assert!(tokio::time::timeout(Duration::from_millis(500), signal.changed()).await.is_err(), "told of nothing");
}

/// Stream order compares transaction ids as numbers (9 before 10), whatever the order of
/// the sequence numbers: here two rows written with old transaction ids, the larger first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_order_transaction_ids_as_numbers() {
    let (store, db) = fresh_store().await;
    let t = conformance::now_ms();
    let app = conformance::setup_app(&store, "A").await;
    let (ten, nine) =
        (conformance::new_message(&app.id, "user.created", t), conformance::new_message(&app.id, "user.created", t));
    for (m, xid) in [(&ten, "10"), (&nine, "9")] {
        sql(&db)
            .await
            .execute(
                "INSERT INTO messages (id, app_id, event_type, payload, created_at, xid) \
                 VALUES ($1, $2, $3, $4, $5, $6::text::xid8)",
                &[&m.id, &m.app_id, &m.event_type, &m.payload, &t.timestamp_millis(), &xid],
            )
            .await
            .unwrap();
    }
    let q = EventsQuery::after(EventPosition::START, 1);
    let first = store.read_message_events(&app.id, &q).await.unwrap();
    assert_eq!(first.messages.iter().map(|(p, m)| (p.major, &m.id)).collect::<Vec<_>>(), vec![(9, &nine.id)]);
    assert!(!first.done);
    let q = EventsQuery { after: first.next, limit: 10, ..q };
    let rest = store.read_message_events(&app.id, &q).await.unwrap();
    assert_eq!(rest.messages.iter().map(|(p, m)| (p.major, &m.id)).collect::<Vec<_>>(), vec![(10, &ten.id)]);
    assert!(rest.done && rest.next > rest.messages[0].0);
}

/// `sslmode=require` (and stricter) connects over TLS only, and only to a server whose
/// certificate chains to a trusted root and names the host: against a database whose role
/// the server admits over TLS only, with a certificate issued to 127.0.0.1 by a test CA.
#[tokio::test]
async fn tls_is_required_and_verified() {
    use hooklane_store::postgres::testing::TlsDatabase;
    let db = TlsDatabase::create().await;
    let ca = format!("sslrootcert={}", db.root_cert().display());
    let open_err = |url: String| async move {
        match PgStore::open(&url).await {
            Ok(_) => panic!("{url} opened"),
            Err(e) => e.to_string(),
        }
    };

    // Without TLS the server turns the role away (proof that the successful open below
    // did use TLS).
    let plain = open_err(db.url("127.0.0.1", "")).await;
    assert!(plain.contains("no encryption") || plain.contains("pg_hba"), "{plain}");
    // A certificate from an unknown CA is refused.
    let unknown_ca = open_err(db.url("127.0.0.1", "sslmode=require")).await;
    assert!(unknown_ca.to_lowercase().contains("certificate"), "{unknown_ca}");
    // The right CA, but a host name the certificate does not carry.
    let wrong_name = open_err(db.url("localhost", &format!("sslmode=verify-full&{ca}"))).await;
    assert!(wrong_name.to_lowercase().contains("certificate"), "{wrong_name}");

    // The right CA and host: the store works over TLS, the LISTEN connection included.
    let store: DynStore =
        Arc::new(PgStore::open(&db.url("127.0.0.1", &format!("sslmode=require&{ca}"))).await.expect("open over TLS"));
    store.ping().await.expect("ping over TLS");
    let app = conformance::setup_app(&store, "tls").await;
    assert_eq!(store.get_app(&app.id).await.expect("read back").map(|a| a.name), Some("tls".to_string()));
    let wakeups = store.wakeups().expect("PostgreSQL announces due work");
    let ep = conformance::setup_endpoint(&store, &app.id).await;
    let msg = conformance::post(&store, &app.id, &[&ep], conformance::now_ms()).await;
    // Each resend announces due work; the LISTEN connection comes up in the background.
    let heard = async {
        loop {
            store.resend(&app.id, &msg.id, &ep.id, conformance::now_ms()).await.expect("resend over TLS");
            if tokio::time::timeout(Duration::from_millis(500), wakeups.notified()).await.is_ok() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), heard).await.expect("NOTIFY arrives over the TLS LISTEN connection");
}

/// REVIEW: a lane claim racing the record of the lane's head. Node B's record of the head's
/// success takes its snapshot while the head is still pending (held here by a row lock, as a
/// slower statement would), node A's claim runs meanwhile (its snapshot sees the head in
/// flight, so it parks the awake row behind it), then the record commits: its advance saw
/// that row awake and left it alone. The lane is left with every row parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_claim_racing_a_record_does_not_stall_the_lane() {
    use hooklane_core::model::DeliveryOrder;
    let db = TestDatabase::create().await;
    let node_a: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let node_b: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let t = conformance::now_ms();
    let app = conformance::setup_app(&node_a, "A").await;
    let mut ep = conformance::new_endpoint(&app.id, None);
    ep.order = DeliveryOrder::Fifo;
    node_a.create_endpoint(ep.clone()).await.unwrap();
    let head = conformance::post(&node_a, &app.id, &[&ep], t).await;
    let now = t + conformance::secs(1);
    let jobs = conformance::claim(&node_a, now).await;
    assert_eq!(jobs.len(), 1, "the head is in flight");
    // The next message arrives while the head is in flight: awake (due now), not parked yet.
    let next = conformance::post(&node_a, &app.id, &[&ep], t + conformance::millis(1)).await;

    // Something holds the head's row for a moment (any concurrent writer of it would do).
    let mut raw = sql(&db).await;
    let hold = raw.transaction().await.unwrap();
    hold.execute("SELECT 1 FROM deliveries WHERE msg_id = $1 FOR UPDATE", &[&head.id]).await.unwrap();
    let (b, ep_b, head_id) = (node_b.clone(), ep.clone(), head.id.clone());
    let record = tokio::spawn(async move {
        b.record_attempts(
            vec![conformance::outcome(&head_id, &ep_b, now, NextStep::Succeeded)],
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
    });
    until_a_store_statement_waits(&db).await; // the record is waiting on the row
    assert!(!record.is_finished());
    assert!(conformance::claim(&node_a, now).await.is_empty(), "the head reads as in flight");
    hold.commit().await.unwrap();
    record.await.unwrap();

    assert_eq!(conformance::delivery(&node_a, &app.id, &head.id, &ep.id).await.status, DeliveryStatus::Success);
    assert_eq!(conformance::delivery(&node_a, &app.id, &next.id, &ep.id).await.status, DeliveryStatus::Pending);
    let later = now + conformance::secs(5);
    let got: Vec<String> = conformance::claim(&node_a, later).await.into_iter().map(|j| j.message.id.clone()).collect();
    assert_eq!(
        got,
        vec![next.id.clone()],
        "the next message of the lane is sent (next_due_at: {:?})",
        node_a.next_due_at(&[]).await.unwrap()
    );
}

/// Creates `msg` (to `ep`, leased until `lease`) with an ingest statement whose snapshot
/// predates a change of `ep`'s ordering to `order`: the ingest waits on a unique index (an
/// uncommitted message with the same `eventId`) while the change commits, as it may wait on
/// any lock or just be slow. Returns what the ingest answered.
async fn ingest_across_change(
    db: &TestDatabase,
    store: &DynStore,
    msg: &Message,
    ep: &hooklane_core::model::Endpoint,
    lease: Option<chrono::DateTime<chrono::Utc>>,
    order: hooklane_core::model::DeliveryOrder,
) -> Vec<String> {
    let mut raw = sql(db).await;
    let other = raw.transaction().await.unwrap();
    other
        .execute(
            "INSERT INTO messages (id, app_id, event_type, event_id, payload, created_at) \
             VALUES ('msg_other', $1, 'x', 'evt-1', '{}', 0)",
            &[&msg.app_id],
        )
        .await
        .unwrap();
    let mut m = msg.clone();
    m.event_id = Some("evt-1".into());
    let (s, e) = (store.clone(), ep.id.clone());
    let ingest = tokio::spawn(async move { s.create_message(m, vec![e], lease).await });
    until_a_store_statement_waits(db).await; // waiting on the other writer
    assert!(!ingest.is_finished());
    let mut changed = conformance::endpoint_now(store, ep).await;
    changed.order = order;
    changed.updated_at = msg.created_at;
    store.update_endpoint(changed, None).await.unwrap();
    other.rollback().await.unwrap();
    ingest.await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_racing_fifo_on_keeps_retries_in_the_lane() {
    // An ingest whose snapshot predates a change to FIFO writes its delivery leased and
    // outside the lane (it is sent at once); should that send fail, the retry waits its turn
    // in the lane instead of going beside the lane's head.
    use hooklane_core::model::DeliveryOrder;
    let db = TestDatabase::create().await;
    let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let t = conformance::now_ms();
    let app = conformance::setup_app(&store, "A").await;
    let ep = conformance::setup_endpoint(&store, &app.id).await;

    let first = conformance::new_message(&app.id, "user.created", t);
    let leased =
        ingest_across_change(&db, &store, &first, &ep, Some(t + conformance::mins(2)), DeliveryOrder::Fifo).await;
    assert_eq!(leased, vec![ep.id.clone()], "the racing ingest still read the endpoint as concurrent");

    let second = conformance::post(&store, &app.id, &[&ep], t + conformance::millis(1)).await;
    let retry = NextStep::RetryAt(t + conformance::secs(1));
    store
        .record_attempts(vec![conformance::outcome(&first.id, &ep, t, retry)], Duration::from_secs(3600))
        .await
        .unwrap();

    let got = conformance::claim(&store, t + conformance::secs(2)).await;
    assert_eq!(
        conformance::job_keys(&got),
        conformance::set([conformance::pair(&first, &ep)]),
        "the retry heads the lane and the later message waits behind it"
    );
    let done = conformance::outcome(&first.id, &ep, t + conformance::secs(2), NextStep::Succeeded);
    store.record_attempts(vec![done], Duration::from_secs(3600)).await.unwrap();
    let got = conformance::claim(&store, t + conformance::secs(3)).await;
    assert_eq!(conformance::job_keys(&got), conformance::set([conformance::pair(&second, &ep)]));
}

/// REVIEW: ingest racing a change of ordering to concurrent. The ingest statement's snapshot
/// predates the change (it waits here on a unique index, as it may on any lock or just on
/// being slow), so it reads the endpoint as FIFO and writes a lane row; the change's
/// `reorder` ran before that row existed. A row in a lane of a concurrent endpoint is never
/// claimed (the lane claim runs for FIFO endpoints only, the other claim skips lane rows),
/// yet it reads as due: the delivery is stuck and every poller spins on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_racing_fifo_off_strands_no_delivery() {
    use hooklane_core::model::DeliveryOrder;
    let db = TestDatabase::create().await;
    let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let t = conformance::now_ms();
    let app = conformance::setup_app(&store, "A").await;
    let mut ep = conformance::new_endpoint(&app.id, None);
    ep.order = DeliveryOrder::Fifo;
    store.create_endpoint(ep.clone()).await.unwrap();

    let msg = conformance::new_message(&app.id, "user.created", t);
    ingest_across_change(&db, &store, &msg, &ep, None, DeliveryOrder::Concurrent).await;

    let now = t + conformance::secs(1);
    let next = store.next_due_at(&[]).await.unwrap();
    let got = conformance::claim(&store, now).await;
    assert_eq!(got.len(), 1, "the message is sent (it reads as due at {next:?}, and nobody claims it)");
}

/// A recovery round running while an expunge of one of its messages is under way (that
/// transaction holds the message for update) waits for it, reads the message again, and
/// queues nothing of it: the expunged message is never sent as `{}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_waits_for_an_expunge_of_its_messages() {
    let db = TestDatabase::create().await;
    let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let app = conformance::setup_app(&store, "A").await;
    let ep = conformance::setup_endpoint(&store, &app.id).await;
    let t = conformance::now_ms();
    let msg = conformance::post(&store, &app.id, &[&ep], t).await;
    assert_eq!(conformance::claim(&store, t + conformance::secs(1)).await.len(), 1);
    let failed = conformance::outcome(&msg.id, &ep, t + conformance::secs(1), hooklane_store::NextStep::GiveUp);
    store.record_attempts(vec![failed], Duration::from_secs(3600)).await.unwrap();
    // An expunge under way: the message held for update, its flag set, not committed yet.
    let expunging = sql(&db).await;
    expunging.batch_execute("BEGIN").await.unwrap();
    expunging.execute("SELECT id FROM messages WHERE id = $1 FOR UPDATE", &[&msg.id]).await.unwrap();
    expunging.execute("UPDATE messages SET expunged = true WHERE id = $1", &[&msg.id]).await.unwrap();
    let recovering = {
        let (store, app, ep) = (store.clone(), app.id.clone(), ep.id.clone());
        tokio::spawn(async move {
            let now = conformance::now_ms();
            store.recover(&app, &ep, (t - conformance::secs(60), None), now, ("", 100)).await
        })
    };
    // The recovery waits to share the message's row.
    until_a_store_statement_waits(&db).await;
    expunging.batch_execute("COMMIT").await.unwrap();
    let (queued, _) = recovering.await.unwrap().unwrap();
    assert_eq!(queued, 0, "an expunged message was queued again");
}

/// Reads the application's stream from `after` on, carrying `next`, until `n` messages
/// came (other tests' transactions on the shared cluster may hold them back a moment).
async fn read_n(store: &DynStore, app_id: &str, after: EventPosition, n: usize) -> Vec<(EventPosition, Message)> {
    let (mut got, mut next) = (Vec::new(), after);
    for _ in 0..500 {
        let q = EventsQuery::after(next, 10);
        let page = store.read_message_events(app_id, &q).await.expect("read_message_events");
        next = page.next;
        got.extend(page.messages);
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    got
}

fn ids_of(read: &[(EventPosition, Message)]) -> Vec<String> {
    read.iter().map(|(_, m)| m.id.clone()).collect()
}

/// A database restored into another cluster whose transaction ids are behind its messages'
/// (a `pg_dump` loaded elsewhere; played here by moving the recorded cluster, and the
/// messages' and kept positions' ids, far ahead) has its stream renumbered at its next
/// open: every message is read again, in order, kept positions go on from the first message
/// they had not read, new messages come after the old ones, and a client's iterator from
/// before is refused as ahead of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_into_another_cluster_keeps_the_stream_readable() {
    let db = TestDatabase::create().await;
    let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let app = conformance::setup_app(&store, "Restored").await;
    let t = conformance::now_ms();
    let mut posted = Vec::new();
    for i in 0..4 {
        posted.push(conformance::post(&store, &app.id, &[], t + chrono::Duration::milliseconds(i)).await.id);
    }
    let read = read_n(&store, &app.id, EventPosition::START, 4).await;
    assert_eq!(ids_of(&read), posted);
    let unbounded = ("", u64::MAX);
    assert!(store.add_events_subscription(&app.id, "half", read[1].0, unbounded, t).await.unwrap());
    assert!(store.add_events_subscription(&app.id, "all", read[3].0, unbounded, t).await.unwrap());
    assert!(store.add_events_subscription(&app.id, "none", EventPosition::START, unbounded, t).await.unwrap());
    let secret = store.instance_secret();
    drop(store);

    const SHIFT: i64 = 1_000_000_000;
    let raw = sql(&db).await;
    raw.batch_execute(&format!(
        "UPDATE messages SET xid = (xid::text::bigint + {SHIFT})::text::xid8; \
         UPDATE events_subscriptions SET major = major + {SHIFT} WHERE major > 0; \
         UPDATE instance_secrets SET value = '\\x0000000000000001' WHERE name = 'cluster'"
    ))
    .await
    .unwrap();
    let visible: i64 = raw
        .query_one("SELECT count(*) FROM messages WHERE xid < pg_snapshot_xmin(pg_current_snapshot())", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(visible, 0, "as restored, no reader would find any message");

    let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    assert_ne!(store.instance_secret(), secret, "iterators of the old numbering no longer decode");
    assert_eq!(ids_of(&read_n(&store, &app.id, EventPosition::START, 4).await), posted, "all read again, in order");
    let from = |id: &'static str| {
        let (store, app_id) = (store.clone(), app.id.clone());
        async move { store.get_events_subscription(&app_id, id).await.unwrap().expect("kept position") }
    };
    assert_eq!(ids_of(&read_n(&store, &app.id, from("half").await, 2).await), posted[2..]);
    assert_eq!(ids_of(&read_n(&store, &app.id, from("none").await, 4).await), posted);
    let after_all = from("all").await;
    let later = conformance::post(&store, &app.id, &[], t + chrono::Duration::seconds(1)).await.id;
    assert_eq!(
        ids_of(&read_n(&store, &app.id, after_all, 1).await),
        std::slice::from_ref(&later),
        "new messages come after"
    );
    assert_eq!(
        ids_of(&read_n(&store, &app.id, from("half").await, 3).await),
        [posted[2].clone(), posted[3].clone(), later]
    );
    let old_iterator = EventPosition { major: read[3].0.major + SHIFT, minor: read[3].0.minor };
    let q = EventsQuery::after(old_iterator, 10);
    assert!(matches!(store.read_message_events(&app.id, &q).await, Err(StoreError::PositionAhead(_))));

    // Opened again on this cluster, nothing is renumbered.
    let xids = || async {
        let rows = raw.query("SELECT xid::text FROM messages ORDER BY seq", &[]).await.unwrap();
        rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
    };
    let before = xids().await;
    drop(PgStore::open(db.url()).await.unwrap());
    assert_eq!(xids().await, before);
    // Nor when moved to a cluster whose ids go on from the old one's (`pg_upgrade`): the new
    // cluster is recorded, the messages left as they are.
    let cluster = "SELECT value FROM instance_secrets WHERE name = 'cluster'";
    let recorded: Vec<u8> = raw.query_one(cluster, &[]).await.unwrap().get(0);
    raw.batch_execute("UPDATE instance_secrets SET value = '\\x0000000000000002' WHERE name = 'cluster'")
        .await
        .unwrap();
    drop(PgStore::open(db.url()).await.unwrap());
    assert_eq!(xids().await, before);
    assert_eq!(raw.query_one(cluster, &[]).await.unwrap().get::<_, Vec<u8>>(0), recorded);
}

/// A restored database whose messages were all pruned, while its readers' positions stand
/// at the old cluster's snapshots, beyond the new cluster's ids: renumbered too, so that
/// readers do not wait (answered 422) until the new ids pass theirs, then skip what came
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_with_positions_ahead_and_no_message_is_renumbered() {
    let db = TestDatabase::create().await;
    let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let app = conformance::setup_app(&store, "Pruned").await;
    let t = conformance::now_ms();
    let unbounded = ("", u64::MAX);
    let end = store.message_events_end().await.unwrap();
    let ahead = EventPosition { major: end.major + 1_000_000_000, minor: 0 };
    assert!(store.add_events_subscription(&app.id, "caught-up", ahead, unbounded, t).await.unwrap());
    drop(store);
    sql(&db)
        .await
        .batch_execute("UPDATE instance_secrets SET value = '\\x0000000000000001' WHERE name = 'cluster'")
        .await
        .unwrap();

    let store: DynStore = Arc::new(PgStore::open(db.url()).await.unwrap());
    let kept = store.get_events_subscription(&app.id, "caught-up").await.unwrap().expect("kept");
    assert!(kept.major < ahead.major, "moved back to the new numbering: {kept:?}");
    let later = conformance::post(&store, &app.id, &[], t).await.id;
    assert_eq!(ids_of(&read_n(&store, &app.id, kept, 1).await), [later], "read on from it");
}

/// Waits until a statement of a store under test (`application_name` hooklane; the raw
/// connections of these tests have none) waits on a lock of the test database.
async fn until_a_store_statement_waits(db: &TestDatabase) {
    let watcher = sql(db).await;
    for _ in 0..1000 {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'hooklane' AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no statement of the store came to wait on a lock");
}

/// A FIFO endpoint with `n` messages posted to it, one millisecond apart from `t`, on a store
/// of its own (also as a `PgStore`, for `testing::claim_fifo_lanes`).
struct FifoBacklog {
    db: TestDatabase,
    pg: Arc<PgStore>,
    store: DynStore,
    t: hooklane_core::DateTime<hooklane_core::Utc>,
    app: hooklane_core::model::Application,
    ep: hooklane_core::model::Endpoint,
    msgs: Vec<Message>,
}

impl FifoBacklog {
    async fn new(n: i64) -> Self {
        Self::opened_with("", n).await
    }

    /// With `query` (`options=…`) added to the database's URL.
    async fn opened_with(query: &str, n: i64) -> Self {
        let db = TestDatabase::create().await;
        let url = if query.is_empty() { db.url().to_string() } else { format!("{}?{query}", db.url()) };
        let pg = Arc::new(PgStore::open(&url).await.expect("open"));
        let store: DynStore = pg.clone();
        let t = conformance::now_ms();
        let app = conformance::setup_app(&store, "A").await;
        let mut ep = conformance::new_endpoint(&app.id, None);
        ep.order = hooklane_core::model::DeliveryOrder::Fifo;
        store.create_endpoint(ep.clone()).await.unwrap();
        let mut msgs = Vec::new();
        for i in 0..n {
            msgs.push(conformance::post(&store, &app.id, &[&ep], t + conformance::millis(i)).await);
        }
        FifoBacklog { db, pg, store, t, app, ep, msgs }
    }

    async fn make_concurrent(&self, at: hooklane_core::DateTime<hooklane_core::Utc>) {
        let mut changed = conformance::endpoint_now(&self.store, &self.ep).await;
        changed.order = hooklane_core::model::DeliveryOrder::Concurrent;
        changed.updated_at = at;
        self.store.update_endpoint(changed, None).await.unwrap();
    }

    /// How many of the endpoint's pending rows stand as `condition` says.
    async fn count(&self, condition: &str) -> i64 {
        let sql_text = format!("SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND status = 1 AND {condition}");
        sql(&self.db).await.query_one(&sql_text, &[&self.ep.id]).await.unwrap().get(0)
    }

    fn pairs(&self, msgs: &[&Message]) -> BTreeSet<(String, String)> {
        msgs.iter().map(|m| conformance::pair(m, &self.ep)).collect()
    }
}

/// A claim that read an endpoint as FIFO walks its lanes once a change to concurrent has
/// committed (the change took every pending row out of its lane, the backlog due): the walk
/// puts none back into a lane (where it would be parked, and nothing wakes parked rows of a
/// concurrent endpoint) and leases none; the backlog is the concurrent claim's, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_claim_after_a_change_to_concurrent_puts_no_row_back_in_a_lane() {
    let b = FifoBacklog::new(4).await;
    let now = b.t + conformance::secs(1);
    assert_eq!(conformance::job_keys(&conformance::claim(&b.store, now).await), b.pairs(&[&b.msgs[0]]));
    b.make_concurrent(now).await;
    let end = now + conformance::mins(1);
    let heads = hooklane_store::postgres::testing::claim_fifo_lanes(&b.pg, &b.ep.id, now, end, 100).await.unwrap();
    assert!(heads.is_empty(), "a lane of a concurrent endpoint was claimed: {heads:?}");
    assert_eq!(b.count("lane_seq IS NOT NULL").await, 0, "rows were put back in a lane");
    assert_eq!(
        conformance::job_keys(&conformance::claim(&b.store, now).await),
        b.pairs(&[&b.msgs[1], &b.msgs[2], &b.msgs[3]]),
        "the backlog goes beside the one in flight"
    );
}

/// Rows in a lane of an endpoint that is concurrent now (given it by a write that raced the
/// change, as `ingest_racing_fifo_off_strands_no_delivery` makes one), walked by a claim that
/// read the endpoint as FIFO: the lane's claim leases none and parks none; the concurrent
/// claim takes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_claim_leaves_the_lanes_of_an_endpoint_no_longer_fifo() {
    let b = FifoBacklog::new(3).await;
    let now = b.t + conformance::secs(1);
    b.make_concurrent(now).await;
    let in_lane =
        "UPDATE deliveries SET lane_seq = (SELECT seq FROM messages m WHERE m.id = msg_id) WHERE endpoint_id = $1";
    assert_eq!(sql(&b.db).await.execute(in_lane, &[&b.ep.id]).await.unwrap(), 3);
    let end = now + conformance::mins(1);
    let heads = hooklane_store::postgres::testing::claim_fifo_lanes(&b.pg, &b.ep.id, now, end, 100).await.unwrap();
    assert!(heads.is_empty(), "a lane of a concurrent endpoint was claimed: {heads:?}");
    assert_eq!(b.count("due_at IS NULL").await, 0, "rows were parked");
    let all: Vec<&Message> = b.msgs.iter().collect();
    assert_eq!(conformance::job_keys(&conformance::claim(&b.store, now).await), b.pairs(&all));
}

/// A change of an endpoint to concurrent being committed (its transaction has taken the rows
/// out of their lane) while a claim that read the endpoint as FIFO walks its lanes, and a
/// message ingested meanwhile that read it as FIFO still, and joined the lane: the lane's
/// claim waits for the change, then leaves the lane alone. Had it parked the new row behind
/// the lane's head, that row would wait for good; had it held the head back, the head would
/// wait for the row in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_claim_waits_for_a_change_to_concurrent_being_committed() {
    let b = FifoBacklog::new(2).await;
    let now = b.t + conformance::secs(1);
    assert_eq!(conformance::job_keys(&conformance::claim(&b.store, now).await), b.pairs(&[&b.msgs[0]]));
    // The change, as `update_endpoint` makes it, not committed yet.
    let mut raw = sql(&b.db).await;
    let change = raw.transaction().await.unwrap();
    let at = now.timestamp_millis();
    change.execute("UPDATE endpoints SET fifo = false, updated_at = $2 WHERE id = $1", &[&b.ep.id, &at]).await.unwrap();
    change
        .execute(
            "UPDATE deliveries SET lane_seq = NULL, due_at = COALESCE(due_at, $2) \
             WHERE endpoint_id = $1 AND status = 1 AND lane_seq IS NOT NULL",
            &[&b.ep.id, &at],
        )
        .await
        .unwrap();
    let late = conformance::post(&b.store, &b.app.id, &[&b.ep], b.t + conformance::millis(10)).await;
    let joined: bool = sql(&b.db)
        .await
        .query_one("SELECT lane_seq IS NOT NULL FROM deliveries WHERE msg_id = $1", &[&late.id])
        .await
        .unwrap()
        .get(0);
    assert!(joined, "the ingest read the endpoint as FIFO");
    let walk = {
        let (pg, ep_id) = (b.pg.clone(), b.ep.id.clone());
        let end = now + conformance::mins(1);
        tokio::spawn(
            async move { hooklane_store::postgres::testing::claim_fifo_lanes(&pg, &ep_id, now, end, 100).await },
        )
    };
    until_a_store_statement_waits(&b.db).await;
    change.commit().await.unwrap();
    let heads = tokio::time::timeout(Duration::from_secs(20), walk).await.expect("walked").unwrap().unwrap();
    assert!(heads.is_empty(), "a lane of a concurrent endpoint was claimed: {heads:?}");
    assert_eq!(
        conformance::job_keys(&conformance::claim(&b.store, now).await),
        b.pairs(&[&b.msgs[1], &late]),
        "both waiting go beside the one in flight"
    );
}

/// One lane of a FIFO endpoint claimed, the next one's claim failing (a row it must take
/// locked past `lock_timeout`): the head claimed is handed over, not left leased with its
/// lane until its lease ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_lane_claim_hands_over_the_lanes_claimed_before() {
    let FifoBacklog { db, pg, store, t, app, ep, .. } =
        FifoBacklog::opened_with("options=-c%20lock_timeout%3D300ms", 0).await;
    // Lane `a` falls due first, so it is claimed first.
    let mut keyed = Vec::new();
    for (key, at) in [("a", t), ("b", t + conformance::millis(5))] {
        let mut msg = conformance::new_message(&app.id, "order.updated", at);
        msg.ordering_key = Some(key.into());
        store.create_message(msg.clone(), vec![ep.id.clone()], None).await.unwrap();
        keyed.push(msg);
    }
    let mut raw = sql(&db).await;
    let lock = raw.transaction().await.unwrap();
    lock.query("SELECT 1 FROM deliveries WHERE msg_id = $1 FOR UPDATE", &[&keyed[1].id]).await.unwrap();
    let now = t + conformance::secs(1);
    let end = now + conformance::mins(2);
    let heads = hooklane_store::postgres::testing::claim_fifo_lanes(&pg, &ep.id, now, end, 100).await;
    let heads = heads.expect("the lane claimed before the failure is handed over");
    assert_eq!(heads.len(), 1, "{heads:?}");
    lock.rollback().await.unwrap();
}

/// An attempt recorded while its endpoint, or its application, is being deleted does not
/// outlive the delete: the recorder waits on another delivery of its batch (a row held by
/// another transaction, here) while the delete runs. Outcomes failed (several statements)
/// or all succeeded (one), the endpoint deleted or its application. (Attempts inserted
/// first, unlocked, were not seen by the delete's statement, and stayed for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_recorded_while_its_endpoint_is_deleted_does_not_outlive_it() {
    for (next, whole_app) in
        [(NextStep::GiveUp, false), (NextStep::Succeeded, false), (NextStep::GiveUp, true), (NextStep::Succeeded, true)]
    {
        let (store, db) = fresh_store().await;
        let t = conformance::now_ms();
        let (other, doomed) = (conformance::setup_app(&store, "B").await, conformance::setup_app(&store, "A").await);
        let (f, e) = (
            conformance::setup_endpoint(&store, &other.id).await,
            conformance::setup_endpoint(&store, &doomed.id).await,
        );
        // m0 before m1: the recorder takes their rows in that order.
        let m0 = conformance::post(&store, &other.id, &[&f], t).await;
        let m1 = conformance::post(&store, &doomed.id, &[&e], t + conformance::millis(1)).await;
        assert_eq!(conformance::claim(&store, t + conformance::secs(1)).await.len(), 2);
        let mut raw = sql(&db).await;
        let hold = raw.transaction().await.unwrap();
        hold.query("SELECT 1 FROM deliveries WHERE msg_id = $1 FOR UPDATE", &[&m0.id]).await.unwrap();
        let at = t + conformance::secs(1);
        let outcomes = vec![
            conformance::outcome(&m0.id, &f, at, next.clone()),
            conformance::outcome(&m1.id, &e, at, next.clone()),
        ];
        let recorder = tokio::spawn({
            let store = store.clone();
            async move { store.record_attempts(outcomes, Duration::from_secs(3600)).await }
        });
        until_a_store_statement_waits(&db).await;
        let delete = tokio::spawn({
            let (store, app, ep) = (store.clone(), doomed.id.clone(), e.id.clone());
            async move {
                if whole_app {
                    store.delete_app(&app).await
                } else {
                    store.delete_endpoint(&app, &ep).await
                }
            }
        });
        // The delete runs meanwhile (or waits for the recorder, had it taken e's row first).
        for _ in 0..100 {
            if delete.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hold.commit().await.unwrap();
        recorder.await.unwrap().expect("recorded");
        delete.await.unwrap().expect("deleted");
        let raw = sql(&db).await;
        let attempts_of = |ep: String| {
            let raw = &raw;
            async move {
                let row = raw.query_one("SELECT count(*) FROM attempts WHERE endpoint_id = $1", &[&ep]).await;
                row.unwrap().get::<_, i64>(0)
            }
        };
        let left = attempts_of(e.id.clone()).await;
        assert_eq!(left, 0, "{next:?}, app deleted {whole_app}: an attempt outlived its endpoint");
        assert_eq!(attempts_of(f.id.clone()).await, 1, "{next:?}: the other attempt is recorded");
    }
}

/// An endpoint with one message pending to it, on a store of its own; the endpoint is a
/// destination of an inbound source (whose update may delete it).
struct EndpointWithWork {
    db: TestDatabase,
    store: DynStore,
    t: hooklane_core::DateTime<hooklane_core::Utc>,
    source: hooklane_core::model::Source,
    ep: hooklane_core::model::Endpoint,
    msg: Message,
}

impl EndpointWithWork {
    async fn new() -> Self {
        let (store, db) = fresh_store().await;
        let t = conformance::now_ms();
        let (source, app) = conformance::new_source("github");
        let ep = conformance::new_endpoint(&app.id, None);
        store.create_source(source.clone(), app, vec![ep.clone()]).await.unwrap();
        let msg = conformance::post(&store, &ep.app_id, &[&ep], t).await;
        EndpointWithWork { db, store, t, source, ep, msg }
    }

    async fn assert_deleted(&self) {
        assert_eq!(self.store.get_endpoint(&self.ep.app_id, &self.ep.id).await.unwrap(), None);
        let left = self.store.message_deliveries(&self.ep.app_id, &self.msg.id).await.unwrap();
        assert!(left.is_empty(), "its delivery is gone");
        assert_eq!(self.store.next_due_at(&[]).await.unwrap(), None);
    }
}

/// Deleting an endpoint while an attempt of it is being recorded, which holds the attempt's
/// delivery (its update) and then updates the endpoint (its failure streak): the delete takes
/// the endpoint's deliveries before its row, as the recorder does, so the recorder is not held
/// up by it. (Taking the row first, the delete waited for the recorder's delivery while the
/// recorder waited for the row: a deadlock, which PostgreSQL may end by failing the delete.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_endpoint_takes_its_deliveries_before_its_row() {
    let w = EndpointWithWork::new().await;
    let mut raw = sql(&w.db).await;
    let recorder = raw.transaction().await.unwrap();
    recorder
        .execute(
            "UPDATE deliveries SET attempts = attempts + 1 WHERE msg_id = $1 AND endpoint_id = $2",
            &[&w.msg.id, &w.ep.id],
        )
        .await
        .unwrap();
    let deleting = {
        let (store, app_id, ep_id) = (w.store.clone(), w.ep.app_id.clone(), w.ep.id.clone());
        tokio::spawn(async move { store.delete_endpoint(&app_id, &ep_id).await })
    };
    until_a_store_statement_waits(&w.db).await;
    // Short of the deadlock check's second: a wait here is the delete's lock, not the deadlock.
    recorder.batch_execute("SET LOCAL lock_timeout = '500ms'").await.unwrap();
    let streak = recorder
        .execute("UPDATE endpoints SET failing_since = $2 WHERE id = $1", &[&w.ep.id, &w.t.timestamp_millis()])
        .await;
    assert!(streak.is_ok(), "the recorder's update of the endpoint waited for the delete: {streak:?}");
    recorder.commit().await.unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(20), deleting).await.expect("answered").unwrap();
    assert!(deleted.is_ok(), "{deleted:?}");
    w.assert_deleted().await;
}

/// `op` deletes the endpoint of `w` while a writer that takes an endpoint's row before its
/// deliveries (a change of its ordering, a FIFO lane's claim) holds the row, then wants the
/// delivery the delete took: a deadlock, which PostgreSQL ends here by failing the delete,
/// the first to wait. The delete runs again once the writer is through, and succeeds.
async fn a_delete_survives_a_deadlock<F>(w: &EndpointWithWork, op: F)
where
    F: std::future::Future<Output = hooklane_store::StoreResult<()>> + Send + 'static,
{
    let mut raw = sql(&w.db).await;
    let writer = raw.transaction().await.unwrap();
    writer.execute("SELECT 1 FROM endpoints WHERE id = $1 FOR UPDATE", &[&w.ep.id]).await.unwrap();
    let deleting = tokio::spawn(op);
    // The delete took the delivery and waits for the row. Each waiter looks for a deadlock
    // `deadlock_timeout` (1 s) after it began to wait, and the first to find one fails: the
    // delete, by this margin, on a busy machine too.
    until_a_store_statement_waits(&w.db).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = writer.execute("UPDATE deliveries SET attempts = attempts WHERE endpoint_id = $1", &[&w.ep.id]).await;
    assert!(taken.is_ok(), "the delete, which waited first, is the deadlock's victim: {taken:?}");
    writer.commit().await.unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(20), deleting).await.expect("answered").unwrap();
    assert!(deleted.is_ok(), "a deadlock failed the delete: {deleted:?}");
    w.assert_deleted().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_endpoint_survives_a_deadlock() {
    let w = EndpointWithWork::new().await;
    let (store, app_id, ep_id) = (w.store.clone(), w.ep.app_id.clone(), w.ep.id.clone());
    a_delete_survives_a_deadlock(&w, async move { store.delete_endpoint(&app_id, &ep_id).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_update_deleting_a_destination_survives_a_deadlock() {
    let w = EndpointWithWork::new().await;
    let (store, mut source) = (w.store.clone(), w.source.clone());
    source.name = "renamed".into();
    let changes = hooklane_store::DestinationChanges { deleted: vec![w.ep.id.clone()], ..Default::default() };
    let renamed = source.clone();
    a_delete_survives_a_deadlock(&w, async move { store.update_source(source, changes).await }).await;
    assert_eq!(w.store.get_source(&renamed.id).await.unwrap(), Some(renamed));
}

/// A payload with a NUL character (an inbound request's text body may hold one), which
/// PostgreSQL's text cannot store, is refused as the request's fault, not the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_with_a_nul_character_is_refused() {
    let (store, _db) = fresh_store().await;
    let app = conformance::new_app("Nul", None);
    store.create_app(app.clone()).await.unwrap();
    let msg = Message::new(app.id.clone(), "a.b", "before\0after", chrono::Utc::now());
    let refused = store.create_message(msg, Vec::new(), None).await;
    assert!(matches!(refused, Err(StoreError::Refused(_))), "{refused:?}");
}

/// A long transaction holding one endpoint's deliveries (here an uncommitted delete of them,
/// as deleting an endpoint with a large backlog is) holds up neither the claims of other
/// endpoints' deliveries, past that endpoint's FIFO lanes, nor the records of their attempts:
/// they wait for it a few seconds at most, then leave that endpoint for later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_on_one_endpoint_holds_up_no_other() {
    use hooklane_core::model::DeliveryOrder;
    let (store, db) = fresh_store().await;
    let t = conformance::now_ms();
    let app = conformance::setup_app(&store, "A").await;
    let mut held = conformance::new_endpoint(&app.id, None);
    held.order = DeliveryOrder::Fifo;
    store.create_endpoint(held.clone()).await.unwrap();
    let other = conformance::new_endpoint(&app.id, None);
    store.create_endpoint(other.clone()).await.unwrap();
    let sent = conformance::post(&store, &app.id, &[&held, &other], t).await;
    let now = t + conformance::secs(1);
    assert_eq!(conformance::claim(&store, now).await.len(), 2, "both in flight");

    let mut raw = sql(&db).await;
    let hold = raw.transaction().await.unwrap();
    hold.execute("DELETE FROM deliveries WHERE endpoint_id = $1", &[&held.id]).await.unwrap();
    let outcomes = vec![
        conformance::outcome(&sent.id, &held, now, NextStep::Succeeded),
        conformance::outcome(&sent.id, &other, now, NextStep::Succeeded),
    ];
    let recorded =
        tokio::time::timeout(Duration::from_secs(20), store.record_attempts(outcomes, Duration::from_secs(3600)));
    let recorded = recorded.await.expect("the record waited for the held rows").expect("recorded");
    assert_eq!(conformance::delivery(&store, &app.id, &sent.id, &other.id).await.status, DeliveryStatus::Success);
    // The outcome left unrecorded is set aside: nothing is told of it.
    assert_eq!(recorded.set_aside, vec![conformance::key(&sent.id, &held.id)]);

    // Another message: the held endpoint's lane is due again (its head's lease over), and
    // the other's delivery is claimed past it.
    let next = conformance::post(&store, &app.id, &[&held, &other], t + conformance::millis(5)).await;
    let later = now + conformance::secs(600);
    let claimed = tokio::time::timeout(Duration::from_secs(20), conformance::claim(&store, later));
    let claimed = claimed.await.expect("the claim waited for the held rows");
    let pairs: Vec<(String, String)> = claimed.iter().map(|j| conformance::pair(&j.message, &j.endpoint)).collect();
    assert!(pairs.contains(&(next.id.clone(), other.id.clone())), "{pairs:?}");
    // Handing back the held endpoint's delivery, or failing it, waits a moment at most too.
    let held_key = vec![conformance::unleased(&sent.id, &held.id)];
    let deferred = tokio::time::timeout(Duration::from_secs(20), store.defer_deliveries(held_key.clone(), later));
    assert!(deferred.await.is_ok(), "the hand-back waited for the held rows");
    let abandoned = tokio::time::timeout(Duration::from_secs(20), store.abandon_deliveries(held_key));
    assert!(abandoned.await.is_ok(), "the abandon waited for the held rows");
    hold.rollback().await.unwrap();
    assert_eq!(
        conformance::delivery(&store, &app.id, &sent.id, &held.id).await.status,
        DeliveryStatus::Sending,
        "the held endpoint's outcome is left, for its lease to end"
    );
}
