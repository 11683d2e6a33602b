//! Several `hooklane serve` nodes on one PostgreSQL database: work is shared, a node killed
//! with SIGKILL loses nothing (its leases expire and another node takes its deliveries).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hooklane_store::postgres::testing::TestDatabase;
use serde_json::json;

const MESSAGES: usize = 10_000;
const CLIENTS: usize = 24;

fn node_config(db: &TestDatabase) -> String {
    // A short lease so the dead node's deliveries are taken over within seconds: as short as
    // requests of 5 s allow (4/3 of request and connect timeouts and a second). Requests
    // that timed out sooner failed on a loaded machine, and were sent again.
    node_config_with_lease(db, "10s")
}

fn node_config_with_lease(db: &TestDatabase, lease: &str) -> String {
    format!(
        "database_url = \"{}\"\n[delivery]\nlease = \"{lease}\"\nrequest_timeout = \"5s\"\nconnect_timeout = \"1s\"\npoll_interval = \"500ms\"",
        db.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_killed_nothing_lost() {
    let db = TestDatabase::create().await;
    let mut nodes = vec![
        Server::start(&node_config(&db)).await,
        Server::start(&node_config(&db)).await,
        Server::start(&node_config(&db)).await,
    ];
    let rx = Receiver::start().await;
    let app = nodes[0].create_app("cluster").await;
    nodes[0].create_endpoint(&app, json!({ "url": rx.url })).await;

    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| n.base.clone()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (bases, next, acked_count, client, app) =
            (bases.clone(), next.clone(), acked_count.clone(), client.clone(), app.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= MESSAGES {
                    return acked;
                }
                // Round-robin; when a node is down, the client moves on to the next one.
                for attempt in 0..bases.len() {
                    let base = &bases[(i + attempt) % bases.len()];
                    let resp = client
                        .post(format!("{base}/api/v1/app/{app}/msg/"))
                        .header("authorization", format!("Bearer {ADMIN}"))
                        .json(&json!({ "eventType": "cluster.test", "payload": { "i": i } }))
                        .send()
                        .await;
                    if let Ok(r) = resp {
                        if r.status().as_u16() == 202 {
                            if let Ok(body) = r.json::<serde_json::Value>().await {
                                acked.push(body["id"].as_str().unwrap_or_default().to_string());
                                acked_count.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            }
        }));
    }

    // Kill one node a third of the way through.
    let started = Instant::now();
    while acked_count.load(Ordering::Relaxed) < MESSAGES / 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "ingest stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes[1].kill9();

    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), MESSAGES, "the surviving nodes should acknowledge every message");

    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = rx.received();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in &got {
            *seen.entry(r.header("webhook-id").to_string()).or_default() += 1;
        }
        let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
        if std::env::var("CLUSTER_PROGRESS").is_ok() {
            eprintln!("{:.1}s: {} received, {missing} missing", started.elapsed().as_secs_f64(), got.len());
        }
        if missing == 0 {
            let duplicates: usize = seen.values().map(|n| n - 1).sum();
            eprintln!(
                "cluster: {} acknowledged, {} deliveries received, {} duplicates (at-least-once after the kill), {:.1}s",
                acked.len(),
                got.len(),
                duplicates,
                started.elapsed().as_secs_f64()
            );
            // Duplicates can only come from the killed node's in-flight work.
            assert!(duplicates < MESSAGES / 3, "{duplicates} duplicates");
            break;
        }
        if Instant::now() > deadline {
            let tail = |s: String| s.chars().rev().take(3000).collect::<String>().chars().rev().collect::<String>();
            panic!(
                "{missing} acknowledged messages never arrived\nnode 0 log:\n{}\nnode 2 log:\n{}",
                tail(nodes[0].logs()),
                tail(nodes[2].logs())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(nodes);
}

/// Waits until the node's log has `needle`.
async fn wait_for_log(node: &Server, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.logs().contains(needle) {
        assert!(Instant::now() < deadline, "no log line with {needle:?}:\n{}", node.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Circuits are kept by each node, and their resets reach every node: a resend on one
/// node (which says "try this endpoint now") starts the endpoint's circuit over on the
/// others too, so that they deliver to it at once instead of waiting out their cool-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_reset_reaches_every_node() {
    let db = TestDatabase::create().await;
    // Circuits open after 3 failures for an hour, and failed deliveries retry in an hour:
    // nothing but the reset can make a node send to the endpoint again within the test.
    let config = format!(
        "{}\ncircuit_failures = 3\ncircuit_cooldown = \"1h\"\ncircuit_max_cooldown = \"1h\"\nretry_schedule = [\"1h\"]",
        node_config(&db)
    );
    let mut nodes = [Server::start(&config).await, Server::start(&config).await];
    let rx = Receiver::scripted(|_, _| Reply::Status(503)).await;
    let app = nodes[0].create_app("circuits").await;
    let (ep, _) = nodes[0].create_endpoint(&app, json!({ "url": rx.url })).await;
    // Each node sends what was posted to it: three failures each open both circuits.
    let mut first = Vec::new();
    for node in &nodes {
        for i in 0..3 {
            first.push(node.send_message(&app, "order.created", json!({ "i": i })).await);
        }
        wait_for_log(node, "circuit open").await;
    }

    // The endpoint is fixed; its owner resends a message through node 0.
    rx.set_script(|_, _| Reply::Status(200));
    let path = format!("/api/v1/app/{app}/msg/{}/endpoint/{ep}/resend", first[0]);
    let (status, body) = nodes[0].call("POST", &path, None).await;
    assert_eq!(status, 202, "{body}");
    wait_for_log(&nodes[1], "circuit reset by another node").await;
    assert!(nodes[1].logs().contains(&ep), "the reset names the endpoint:\n{}", nodes[1].logs());

    // Node 0 gone, node 1 alone delivers a new message at once: its circuit was closed by
    // node 0's reset (open, it would hold the message for an hour).
    nodes[0].kill9();
    let late = nodes[1].send_message(&app, "order.created", json!({ "late": true })).await;
    // (Panics if it does not arrive within 10 s.)
    rx.wait_for_ids(std::slice::from_ref(&late), Duration::from_secs(10)).await;
}

/// Nodes cache applications and endpoints for the ingest path; a change through one node
/// clears every node's cache at once (announced through the database), not after the
/// cache's time to live: an endpoint disabled on node 0 gets nothing more posted to node 1,
/// and re-enabled, gets the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_on_one_node_reaches_every_nodes_cache() {
    let db = TestDatabase::create().await;
    // A time to live longer than the test: only the announcement can clear node 1's cache.
    let config = format!("tenant_cache_ttl = \"10m\"\n{}", node_config(&db));
    let nodes = [Server::start(&config).await, Server::start(&config).await];
    let rx = Receiver::start().await;
    let app = nodes[0].create_app("cache").await;
    let (ep, _) = nodes[0].create_endpoint(&app, json!({ "url": rx.url })).await;
    let first = nodes[1].send_message(&app, "order.created", json!({ "n": 1 })).await;
    rx.wait_for_ids(std::slice::from_ref(&first), Duration::from_secs(10)).await;

    let path = format!("/api/v1/app/{app}/endpoint/{ep}");
    let (status, out) = nodes[0].call("PATCH", &path, Some(json!({ "disabled": true }))).await;
    assert_eq!(status, 200, "{out}");
    node_sees(&nodes[1], &app, false).await;
    let second = nodes[1].send_message(&app, "order.created", json!({ "n": 2 })).await;
    let (_, dest) = nodes[1].call("GET", &format!("/api/v1/app/{app}/msg/{second}/endpoint"), None).await;
    assert_eq!(dest["data"], json!([]), "node 1 fanned out to the disabled endpoint: {dest}");

    let (status, out) = nodes[0].call("PATCH", &path, Some(json!({ "disabled": false }))).await;
    assert_eq!(status, 200, "{out}");
    node_sees(&nodes[1], &app, true).await;
    let third = nodes[1].send_message(&app, "order.created", json!({ "n": 3 })).await;
    rx.wait_for_ids(std::slice::from_ref(&third), Duration::from_secs(10)).await;
    assert!(!rx.received().iter().any(|r| r.header("webhook-id") == second), "the disabled endpoint got a message");
}

/// Waits until `node`'s cached view of the application says whether an `order.created`
/// message would go anywhere (`active`): another node's change reached it.
async fn node_sees(node: &Server, app: &str, active: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let precheck = json!({ "eventType": "order.created" });
        let (_, out) = node.call("POST", &format!("/api/v1/app/{app}/msg/precheck/active"), Some(precheck)).await;
        if out["active"] == active {
            return;
        }
        assert!(Instant::now() < deadline, "the change never reached the node: {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pulling on a cluster: a node's stream holds every node's messages, each once, and a
/// long-poll on one node is answered by a message posted to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_sees_every_nodes_messages() {
    let db = TestDatabase::create().await;
    let nodes = [Server::start(&node_config(&db)).await, Server::start(&node_config(&db)).await];
    let app = nodes[0].create_app("pull-cluster").await;

    // Posted to both nodes at once, so their writes interleave.
    let app_id = app.as_str();
    let posts = (0..40).map(|i| {
        let node = &nodes[i % 2];
        let body = json!({ "eventType": "cluster.pull", "payload": { "i": i } });
        async move {
            let (status, out) = node.call("POST", &format!("/api/v1/app/{app_id}/msg/"), Some(body)).await;
            assert_eq!(status, 202, "{out}");
            out["id"].as_str().unwrap().to_string()
        }
    });
    let mut posted: Vec<String> = futures::future::join_all(posts).await;
    // A message shows once every older transaction of the database server has finished:
    // on a busy machine that can take a moment, so the reader long-polls (and gives up
    // after a minute).
    let mut seen = Vec::new();
    // From the start (no iterator), then from each answer's: a node reads the iterators
    // of another (they are encrypted with the database's secret, which both share).
    let mut iterator = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < posted.len() && Instant::now() < deadline {
        let (status, page) =
            nodes[1].call("GET", &format!("/api/v1/app/{app}/events?limit=7&wait=5&iterator={iterator}"), None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()));
        iterator = page["iterator"].as_str().unwrap().to_string();
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a message was read twice");
    posted.sort();
    assert_eq!(sorted, posted);

    // A long-poll on node 0 carrying node 1's iterator, answered by a message posted to
    // node 1.
    let waiting = {
        let client = nodes[0].client.clone();
        let url = nodes[0].url(&format!("/api/v1/app/{app}/events?iterator={iterator}&wait=30"));
        tokio::spawn(async move {
            read(client.get(url).header("authorization", format!("Bearer {ADMIN}")).send().await.unwrap()).await
        })
    };
    waiting_readers(&nodes[0], 1).await;
    let id = nodes[1].send_message(&app, "cluster.pull", json!({ "late": true })).await;
    let (status, page) = waiting.await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"][0]["id"], json!(id), "{page}");
}

/// A FIFO endpoint on a cluster: messages posted to both nodes in turn reach it one at a
/// time and in order, whichever node claims each (the lane's claim is shared through the
/// database, not held in one node's memory), and a failing one holds the lane on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_lane_holds_across_nodes() {
    const COUNT: usize = 16;
    let db = TestDatabase::create().await;
    let nodes = [Server::start(&node_config(&db)).await, Server::start(&node_config(&db)).await];
    let lane = lane_receiver().await;
    let app = nodes[0].create_app("fifo").await;
    nodes[0].create_endpoint(&app, json!({ "url": lane.url, "ordering": "fifo" })).await;
    post_in_turn(&[&nodes[0], &nodes[1]], &app, COUNT).await;
    let got = lane.wait_for(COUNT + 2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (order, overlaps) = lane_log(&lane.received());
    assert_eq!(got.len(), order.len(), "nothing more arrived: {order:?}");
    let mut distinct = order.clone();
    distinct.dedup();
    assert_eq!(distinct, (0..COUNT as i64).collect::<Vec<_>>(), "in order: {order:?}");
    assert_eq!(order.iter().filter(|n| **n == 2).count(), 3, "{order:?}");
    assert_eq!(overlaps, 0, "two nodes sent at once: {order:?}");
}

/// An endpoint the dispatcher disables (failing for `disable_after`) is dropped from every
/// node's cache at once, as an API change is: neither the node that disabled it nor another
/// one, both with a long cache lifetime, fans out to it any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_disabled_by_failures_leaves_every_nodes_cache() {
    let db = TestDatabase::create().await;
    let config = format!("tenant_cache_ttl = \"10m\"\n{}\ndisable_after = \"500ms\"", node_config(&db));
    let nodes = [Server::start(&config).await, Server::start(&config).await];
    let rx = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let app = nodes[0].create_app("disabled").await;
    let (ep, _) = nodes[0].create_endpoint(&app, json!({ "url": rx.url })).await;
    // Node 1 caches the endpoint without sending anything to it (a precheck fans out on
    // paper); only node 0 makes attempts, so node 0 is the one that disables it.
    let precheck = json!({ "eventType": "order.created" });
    let (_, out) = nodes[1].call("POST", &format!("/api/v1/app/{app}/msg/precheck/active"), Some(precheck)).await;
    assert_eq!(out["active"], true, "{out}");
    nodes[0].send_message(&app, "order.created", json!({ "n": 1 })).await;
    nodes[0]
        .wait_until(&format!("/api/v1/app/{app}/endpoint/{ep}"), Duration::from_secs(15), |e| e["disabled"] == true)
        .await;
    node_sees(&nodes[1], &app, false).await;
    for (i, node) in nodes.iter().enumerate() {
        let msg = node.send_message(&app, "order.created", json!({ "n": 2 })).await;
        let (_, dest) = node.call("GET", &format!("/api/v1/app/{app}/msg/{msg}/endpoint"), None).await;
        assert_eq!(dest["data"], json!([]), "node {i} fanned out to the endpoint disabled by failures: {dest}");
    }
}

/// A rate-limited endpoint whose send slots other nodes have taken far ahead (more than a
/// lease's worth): a node does not take slots it could not use before its lease runs out
/// (each would push every later one back, and the endpoint would get nothing for ever); it
/// hands the deliveries back and sends them once slots come free, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_taken_far_ahead_do_not_starve_a_rate_limited_endpoint() {
    let db = TestDatabase::create().await;
    let config = format!(
        "database_url = \"{}\"\n[delivery]\nlease = \"3s\"\nrequest_timeout = \"1s\"\nconnect_timeout = \"250ms\"\npoll_interval = \"200ms\"",
        db.url()
    );
    let server = Server::start(&config).await;
    let rx = Receiver::start().await;
    let app = server.create_app("rated").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url, "rateLimit": 1 })).await;

    // Another node's sends: slots taken for the next 6 seconds.
    let other = hooklane_store::postgres::PgStore::open(db.url()).await.expect("another node's store");
    let store: &dyn hooklane_store::Store = &other;
    let now = hooklane_core::Utc::now();
    let far = now + chrono::Duration::hours(1);
    for _ in 0..8 {
        store.take_rate_slot(&ep, 1, now, far).await.expect("slot").taken().expect("taken");
    }
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(server.send_message(&app, "rated", json!({ "i": i })).await);
    }
    let got = rx.wait_for(3, Duration::from_secs(45)).await;
    let mut ids: Vec<String> = got.iter().map(|r| r.header("webhook-id").to_string()).collect();
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent, "each once");
    // Sent at the rate: at least a second apart.
    let times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(900)), "{times:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.received().len(), 3);
    // Each came back when a slot was within its reach, not claimed and handed back again
    // and again while the other node's slots ran (every poll, 200 ms, for 7 seconds).
    let metrics = server.client.get(server.url("/metrics")).bearer_auth(ADMIN).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("metrics body");
    let handed_back: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("hooklane_deliveries_handed_back_total") && l.contains("reason=\"rate\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!((1.0..=9.0).contains(&handed_back), "{handed_back} rate hand-backs\n{metrics}");
}

/// Content deleted through one node is not sent by another that already holds a delivery
/// of it in memory (a rate limit of one a second keeps node 1's there, with a copy of the
/// content): the deletion is announced through the database. The same for an application
/// emptied at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_deleted_on_one_node_is_not_sent_by_another() {
    let db = TestDatabase::create().await;
    // A lease long enough for a delivery to wait for its slot in memory (with the short one
    // of the other tests, it would be handed back to the store, which knows of the deletion).
    let config = node_config_with_lease(&db, "30s");
    let nodes = [Server::start(&config).await, Server::start(&config).await];
    let rx = Receiver::start().await;
    let app = nodes[0].create_app("expunge").await;
    nodes[0].create_endpoint(&app, json!({ "url": rx.url, "rateLimit": 1 })).await;
    // Posted to node 1, which leases them as it writes them and holds them for their slots.
    let first = nodes[1].send_message(&app, "a.b", json!({ "n": 1 })).await;
    let second = nodes[1].send_message(&app, "a.b", json!({ "n": 2, "secret": "gone" })).await;
    let third = nodes[1].send_message(&app, "a.b", json!({ "n": 3 })).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    let (status, _) = nodes[0].call("DELETE", &format!("/api/v1/app/{app}/msg/{second}/content"), None).await;
    assert_eq!(status, 204);
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        [got[0].header("webhook-id"), got[1].header("webhook-id")],
        [first.as_str(), third.as_str()],
        "node 1 sent the second after its content was deleted through node 0"
    );
    let mut posted = Vec::new();
    for i in 0..3 {
        posted.push(nodes[1].send_message(&app, "a.b", json!({ "later": i })).await);
    }
    let (status, task) = nodes[0].call("POST", &format!("/api/v1/app/{app}/msg/expunge-all-contents"), None).await;
    assert_eq!(status, 202, "{task}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sent: Vec<String> = rx.received().iter().skip(2).map(|r| r.header("webhook-id").to_string()).collect();
    assert!(sent.len() <= 1 && sent.iter().all(|id| *id == posted[0]), "sent after the purge: {sent:?}");
    assert!(rx.received().iter().all(|r| !String::from_utf8_lossy(&r.body).contains("gone")));
}

/// An endpoint disabled or paused through one node gets nothing more from another node
/// that already holds deliveries to it in memory (a rate limit of one a second keeps node
/// 1's there): the change is announced through the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_disabled_or_paused_on_one_node_is_not_sent_to_by_another() {
    let db = TestDatabase::create().await;
    // A lease long enough for deliveries to wait for their slots in memory.
    let config = node_config_with_lease(&db, "30s");
    let nodes = [Server::start(&config).await, Server::start(&config).await];
    for change in [json!({ "disabled": true }), json!({ "paused": true })] {
        let rx = Receiver::start().await;
        let app = nodes[0].create_app("stopped").await;
        let (ep, _) = nodes[0].create_endpoint(&app, json!({ "url": rx.url, "rateLimit": 1 })).await;
        // Posted to node 1, which leases them as it writes them and holds them for their slots.
        for i in 0..4 {
            nodes[1].send_message(&app, "a.b", json!({ "n": i })).await;
        }
        rx.wait_for(1, Duration::from_secs(10)).await;
        let (status, body) =
            nodes[0].call("PATCH", &format!("/api/v1/app/{app}/endpoint/{ep}"), Some(change.clone())).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(3500)).await;
        let sent = rx.received().len();
        assert!(sent <= 2, "{change}: node 1 sent {sent} of its 4 held deliveries after the change on node 0");
    }
}
