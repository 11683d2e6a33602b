//! The pull side on a cluster: two `hooklane serve` nodes on one PostgreSQL database, a
//! consumer moving between them. Server-Sent Events, server-side subscriptions and polling
//! endpoints' consumers read every message once, in order, whichever node took it and
//! whichever node is read; positions (event ids, a subscription's, a consumer's) are kept in
//! the database and honoured by every node.

mod common;

use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::*;
use futures::{Stream, StreamExt};
use hooklane_store::postgres::testing::TestDatabase;
use serde_json::{json, Value};

/// The longest any single wait of these tests lasts before it fails.
const WAIT: Duration = Duration::from_secs(15);

fn node_config(db: &TestDatabase) -> String {
    format!("database_url = \"{}\"\n[delivery]\npoll_interval = \"500ms\"", db.url())
}

/// Two nodes on one fresh database, and an application created through the first.
async fn cluster(app_name: &str) -> (TestDatabase, [Server; 2], String) {
    let db = TestDatabase::create().await;
    let nodes = [Server::start(&node_config(&db)).await, Server::start(&node_config(&db)).await];
    let app = nodes[0].create_app(app_name).await;
    (db, nodes, app)
}

/// Posts a message; returns its id and timestamp. Messages posted one after the other are
/// a few milliseconds apart, so that each has a creation time of its own (seeks go by it).
async fn post(node: &Server, app: &str, event_type: &str, n: usize) -> (String, String) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let body = json!({ "eventType": event_type, "payload": { "n": n } });
    let (status, out) = node.call("POST", &format!("/api/v1/app/{app}/msg/"), Some(body)).await;
    assert_eq!(status, 202, "{out}");
    (out["id"].as_str().expect("msg id").to_string(), out["timestamp"].as_str().expect("timestamp").to_string())
}

fn ids(page: &Value) -> Vec<String> {
    let data = page["data"].as_array().unwrap_or_else(|| panic!("no data: {page}"));
    data.iter().map(|m| m["id"].as_str().expect("id").to_string()).collect()
}

async fn get(node: &Server, path: &str) -> Value {
    let (status, page) = node.call("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {page}");
    page
}

/// Reads `path` (a read that moves no position) until it answers exactly `want`: on
/// PostgreSQL a message becomes readable once every older transaction of the database
/// server has ended.
async fn read_until(node: &Server, path: &str, want: &[String]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = ids(&get(node, path).await);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never answered {want:?}; last {got:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts a long-poll (`path` has `wait=`) in the background; answers its status, its page
/// and how long it took.
fn long_poll(node: &Server, path: &str) -> tokio::task::JoinHandle<(u16, Value, Duration)> {
    let request = node.client.get(node.url(path)).bearer_auth(ADMIN).timeout(Duration::from_secs(90)).send();
    tokio::spawn(async move {
        let started = Instant::now();
        let (status, page) = read(request.await.expect("long-poll")).await;
        (status, page, started.elapsed())
    })
}

/// Waits for a long-poll started by [`long_poll`] with `wait=30`: it must answer `want`, and
/// well before its wait is over (it was woken, not timed out).
async fn answered(poll: tokio::task::JoinHandle<(u16, Value, Duration)>, want: &[String]) {
    let (status, page, took) = tokio::time::timeout(Duration::from_secs(60), poll).await.expect("answered").unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), want, "{page}");
    assert!(took < Duration::from_secs(20), "the long-poll waited out its wait: {took:?}");
}

/// Posts `count` messages (their event types `event_types` in turn) to both nodes from
/// four clients at once, while one reader reads `reads` (a subscription or a consumer,
/// whose position the server keeps) through each node in turn until it has read `expect`
/// messages; answers what the reader got, in order. Writes commit in an order only the
/// database knows: the caller compares with the stream read afterwards.
async fn read_while_posting(
    nodes: &[Server; 2],
    app: &str,
    reads: &str,
    event_types: &[&str],
    count: usize,
    expect: usize,
) -> Vec<String> {
    let writers = futures::future::join_all((0..4).map(|w| async move {
        for i in (w..count).step_by(4) {
            post(&nodes[i % 2], app, event_types[i % event_types.len()], 1000 + i).await;
        }
    }));
    let reader = async {
        let (mut got, mut i) = (Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < expect {
            assert!(Instant::now() < deadline, "read {} of {expect}: {got:?}", got.len());
            got.extend(ids(&get(&nodes[i % 2], &format!("{reads}?limit=5&wait=2")).await));
            i += 1;
        }
        got
    };
    futures::join!(writers, reader).1
}

/// One Server-Sent Event: its `id` (a position) and the message id in its `data`.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: String,
    msg: String,
}

/// An open Server-Sent Events stream, read one event at a time.
struct SseStream {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

impl SseStream {
    /// Opens `GET …/events/stream` on `node`, resuming after `last_event_id` if given.
    async fn open(node: &Server, app: &str, last_event_id: Option<&str>) -> SseStream {
        let mut req = node
            .client
            .get(node.url(&format!("/api/v1/app/{app}/events/stream")))
            .bearer_auth(ADMIN)
            // The harness client's overall timeout would cut the stream; this one has none.
            .timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.expect("stream");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        SseStream { body: Box::pin(resp.bytes_stream()), buffer: String::new() }
    }

    /// The next event (keep-alive comments skipped); panics when none comes within `WAIT`.
    async fn next(&mut self) -> SseEvent {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some((id, data)) = take_sse_event(&mut self.buffer) {
                return SseEvent { id, msg: data["id"].as_str().expect("message id").to_string() };
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event within {WAIT:?}; unread: {:?}", self.buffer))
                .expect("the stream stays open")
                .expect("chunk");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }

    /// The next `n` events.
    async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await);
        }
        events
    }
}

fn msgs(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.msg.clone()).collect()
}

/// Server-Sent Events on a cluster: a stream open on node A carries the messages posted to
/// node B as well as A's, each once, in the order posted; messages
/// posted to both nodes at once come once each, in the same order on every node's stream;
/// a client reconnecting to node B with the last event id A gave it gets exactly what was
/// posted after that event (nothing lost, nothing again), and B gives each message the same
/// event id A did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_follows_every_node_and_resumes_on_another() {
    let (_db, nodes, app) = cluster("sse").await;
    let [a, b] = &nodes;
    let (first, _) = post(b, &app, "sse.test", 0).await;

    // From the start of the stream: what B took before it opened, then one message at a
    // time, posted to each node in turn, read before the next is posted.
    let mut on_a = SseStream::open(a, &app, None).await;
    let mut seen = vec![on_a.next().await];
    assert_eq!(seen[0].msg, first);
    for n in 1..=12 {
        let (node, name) = if n % 2 == 1 { (b, "B") } else { (a, "A") };
        let (id, _) = post(node, &app, "sse.test", n).await;
        let event = on_a.next().await;
        assert_eq!(event.msg, id, "message {n}, posted to node {name}");
        seen.push(event);
    }
    // (How soon A hears of B's messages is the store's wake-up, tested in its conformance
    // without a clock: timings belong in benchmarks, not here.)
    let before_batch = seen.last().unwrap().id.clone();

    // Twenty posted to both nodes at once: their writes interleave, in no order known here.
    let app_id = app.as_str();
    let posts = (0..20).map(|i| {
        let node = &nodes[i % 2];
        async move { post(node, app_id, "sse.test", 100 + i).await.0 }
    });
    let mut batch: Vec<String> = futures::future::join_all(posts).await;
    let batch_events = on_a.take(batch.len()).await;
    let mut got = msgs(&batch_events);
    got.sort();
    batch.sort();
    assert_eq!(got, batch, "each of the batch once");
    seen.extend(batch_events.iter().cloned());
    let last_seen = seen.last().unwrap().id.clone();
    drop(on_a);

    // Disconnected, the client misses three messages; it reconnects to B with the last id.
    let mut missed = Vec::new();
    for (n, node) in [b, a, b].into_iter().enumerate() {
        missed.push(post(node, &app, "sse.test", 200 + n).await.0);
    }
    let mut on_b = SseStream::open(b, &app, Some(&last_seen)).await;
    let resumed = on_b.take(missed.len()).await;
    assert_eq!(msgs(&resumed), missed, "exactly what came after the last event received");
    // Nothing more lies between: the next event is the next message posted.
    let (sentinel, _) = post(a, &app, "sse.test", 300).await;
    let last = on_b.next().await;
    assert_eq!(last.msg, sentinel);
    drop(on_b);

    // B, resuming from before the batch, agrees with A on the order of the batch and on
    // every event id.
    let mut again = SseStream::open(b, &app, Some(&before_batch)).await;
    let replayed = again.take(batch_events.len() + missed.len() + 1).await;
    assert_eq!(replayed[..batch_events.len()], batch_events[..], "the batch in A's order, with A's ids");
    assert_eq!(msgs(&replayed[batch_events.len()..]), [&missed[..], &[sentinel][..]].concat());
    assert_eq!(replayed[batch_events.len()..][..missed.len()], resumed[..], "the same ids on B's two streams");
}

/// Server-side subscriptions on a cluster: the position a read moves on one node is where
/// the next read on the other starts, so reads alternating between the nodes see every
/// message exactly once and in order; a long-poll on one node is answered by a message
/// posted to the other, and moves the subscription past it for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_shared_by_the_nodes() {
    let (_db, nodes, app) = cluster("subscription").await;
    let [a, b] = &nodes;
    let mut posted = Vec::new();
    for n in 0..11 {
        posted.push(post(&nodes[n % 2], &app, "sub.test", n).await.0);
    }
    // Once every message is readable (on both nodes), each read's answer is known.
    for node in &nodes {
        read_until(node, &format!("/api/v1/app/{app}/events?limit=250"), &posted).await;
    }
    let sub = format!("/api/v1/app/{app}/events/subscription/billing");
    let mut read_so_far = Vec::new();
    for (i, chunk) in posted.chunks(3).enumerate() {
        let node = &nodes[i % 2];
        let page = get(node, &format!("{sub}?limit=3")).await;
        assert_eq!(ids(&page), chunk, "read {i} (on node {}), after {read_so_far:?}", ["A", "B"][i % 2]);
        read_so_far.extend(ids(&page));
    }
    assert_eq!(read_so_far, posted);
    for node in &nodes {
        assert_eq!(ids(&get(node, &sub).await), Vec::<String>::new(), "caught up on both nodes");
    }

    // Posted to one node, read through the other: that message only.
    for (to, from) in [(a, b), (b, a), (a, a), (b, b)] {
        let (id, _) = post(to, &app, "sub.test", 20).await;
        let page = get(from, &format!("{sub}?wait=10")).await;
        assert_eq!(ids(&page), [id]);
    }

    // A long-poll on each node, answered by a message posted to the other; the other node
    // then reads nothing more.
    for (waiting, to) in [(a, b), (b, a)] {
        let poll = long_poll(waiting, &format!("{sub}?wait=30"));
        waiting_readers(waiting, 1).await;
        let (id, _) = post(to, &app, "sub.test", 30).await;
        answered(poll, &[id]).await;
        assert_eq!(ids(&get(to, &sub).await), Vec::<String>::new(), "the long-poll moved it for every node");
    }

    // Another subscription, read from the start the same way, has the same messages.
    let all = ids(&get(a, &format!("/api/v1/app/{app}/events?limit=250")).await);
    let audit = format!("/api/v1/app/{app}/events/subscription/audit?limit=4");
    let mut read_so_far = Vec::new();
    for i in 0.. {
        let page = get(&nodes[i % 2], &audit).await;
        if ids(&page).is_empty() {
            break;
        }
        read_so_far.extend(ids(&page));
    }
    assert_eq!(read_so_far, all);

    // Read through both nodes in turn while both take messages from several clients at
    // once: each once, in the stream's order, none passed over.
    let during = read_while_posting(&nodes, &app, &sub, &["sub.test"], 40, 40).await;
    let stream = get(b, &format!("/api/v1/app/{app}/events?limit=250")).await;
    assert_eq!(during, ids(&stream)[all.len()..], "read while posting");
    assert_eq!(ids(&get(a, &sub).await), Vec::<String>::new());
}

/// Polling endpoints on a cluster: the endpoint's `filterTypes` apply on both nodes (and a
/// change made through one applies to the other's next read); a consumer's position is
/// kept in the database, so reads alternating between the nodes see every message the
/// endpoint gets once and in order, a seek through one node is where the next read on the
/// other starts, and a consumer's long-poll on one node is answered by a message it gets
/// posted to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_endpoints_consumer_is_shared_by_the_nodes() {
    let (_db, nodes, app) = cluster("poller").await;
    let [a, b] = &nodes;
    let spec = json!({ "polling": true, "uid": "ledger", "filterTypes": ["invoice.paid", "invoice.void"] });
    let (status, ep) = a.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(spec)).await;
    assert_eq!(status, 201, "{ep}");
    let ep_id = ep["id"].as_str().expect("id").to_string();

    // Posted to each node in turn; the endpoint gets the invoices only.
    let types = ["invoice.paid", "user.created", "invoice.void", "invoice.paid", "user.created", "invoice.paid"];
    let (mut wanted, mut users, mut times) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..12 {
        let event_type = types[n % types.len()];
        let (id, at) = post(&nodes[n % 2], &app, event_type, n).await;
        if event_type == "user.created" {
            users.push(id);
        } else {
            wanted.push(id);
            times.push(at);
        }
    }
    assert_eq!(wanted.len(), 8);
    // Its filter, on both nodes, by uid and by id.
    let poller = format!("/api/v1/app/{app}/poller/ledger");
    for node in &nodes {
        read_until(node, &format!("{poller}?limit=250"), &wanted).await;
        read_until(node, &format!("/api/v1/app/{app}/poller/{ep_id}?limit=250"), &wanted).await;
    }

    // A consumer read through each node in turn: each page the next three, none again.
    let consumer = format!("{poller}/consumer/books");
    for (i, chunk) in wanted.chunks(3).enumerate() {
        let page = get(&nodes[i % 2], &format!("{consumer}?limit=3")).await;
        assert_eq!(ids(&page), chunk, "read {i}, on node {}", ["A", "B"][i % 2]);
    }
    for node in &nodes {
        assert_eq!(ids(&get(node, &consumer).await), Vec::<String>::new(), "caught up on both nodes");
    }

    // A seek through one node is where the next read on the other starts.
    let seek = |node: &'static str, after: String| {
        let (node, path) = (if node == "A" { a } else { b }, format!("{consumer}/seek"));
        async move {
            let (status, out) = node.call("POST", &path, Some(json!({ "after": after }))).await;
            assert_eq!(status, 200, "{out}");
            out["iterator"].as_str().expect("iterator").to_string()
        }
    };
    let it = seek("A", times[2].clone()).await;
    assert_eq!(ids(&get(b, &format!("{consumer}?limit=250")).await), wanted[3..], "after the third invoice");
    // (The position a seek answers is one every node reads from.)
    assert_eq!(ids(&get(b, &format!("{poller}?limit=250&iterator={it}")).await), wanted[3..]);
    seek("B", "2000-01-01T00:00:00Z".into()).await;
    assert_eq!(ids(&get(a, &format!("{consumer}?limit=4")).await), wanted[..4], "back to the endpoint's first");
    assert_eq!(ids(&get(b, &format!("{consumer}?limit=250")).await), wanted[4..]);
    seek("A", times[5].clone()).await;
    seek("B", times[6].clone()).await;
    assert_eq!(ids(&get(a, &consumer).await), wanted[7..], "the later seek holds");
    seek("B", "2999-01-01T00:00:00Z".into()).await;
    let (later_user, _) = post(a, &app, "user.created", 40).await;
    let (later, _) = post(a, &app, "invoice.void", 41).await;
    let page = get(b, &format!("{consumer}?wait=10")).await;
    assert_eq!(ids(&page), std::slice::from_ref(&later), "only what came after the seek to the future, filtered");
    users.push(later_user);
    wanted.push(later);

    // A consumer's long-poll on each node, answered by an invoice posted to the other (the
    // user.created before it is not the endpoint's, and does not answer it).
    for (waiting, to) in [(a, b), (b, a)] {
        let poll = long_poll(waiting, &format!("{consumer}?wait=30"));
        waiting_readers(waiting, 1).await;
        let (user, _) = post(to, &app, "user.created", 50).await;
        let (invoice, _) = post(to, &app, "invoice.paid", 51).await;
        answered(poll, std::slice::from_ref(&invoice)).await;
        assert_eq!(ids(&get(to, &consumer).await), Vec::<String>::new(), "the long-poll moved it for every node");
        users.push(user);
        wanted.push(invoice);
    }
    for node in &nodes {
        read_until(node, &format!("{poller}?limit=250"), &wanted).await;
    }

    // A seek through B while a long-poll of the consumer waits on A: the poll's answer
    // does not undo it, and the next read (on B) starts where the seek put it.
    let poll = long_poll(a, &format!("{consumer}?wait=30"));
    // (The seek must come after the poll has read where the consumer stood; a poll
    // started after the seek would answer from the seek's place at once.)
    waiting_readers(a, 1).await;
    seek("B", times[1].clone()).await;
    let (invoice, _) = post(b, &app, "invoice.void", 60).await;
    wanted.push(invoice.clone());
    answered(poll, &[invoice]).await;
    assert_eq!(ids(&get(b, &format!("{consumer}?limit=250")).await), wanted[2..], "from the seek's place");

    // Read through both nodes in turn while both take messages from several clients at
    // once: each invoice once, in the stream's order, none passed over.
    let mixed = ["invoice.paid", "user.created", "invoice.void"];
    let stream = format!("/api/v1/app/{app}/events?limit=250");
    let before = ids(&get(b, &stream).await).len();
    let during = read_while_posting(&nodes, &app, &consumer, &mixed, 45, 30).await;
    let added = ids(&get(a, &format!("{poller}?limit=250")).await)[wanted.len()..].to_vec();
    assert_eq!(during, added, "read while posting");
    // (The users among them, in the stream's order, once all are readable.)
    let deadline = Instant::now() + WAIT;
    let mut all = ids(&get(b, &stream).await);
    while all.len() < before + 45 {
        assert!(Instant::now() < deadline, "{} of {} messages readable", all.len(), before + 45);
        tokio::time::sleep(Duration::from_millis(25)).await;
        all = ids(&get(b, &stream).await);
    }
    users.extend(all[before..].iter().filter(|id| !added.contains(id)).cloned());
    wanted.extend(added);
    assert_eq!(ids(&get(b, &consumer).await), Vec::<String>::new());

    // The filter changed through A applies to reads on B (and A): now the users only.
    let path = format!("/api/v1/app/{app}/endpoint/{ep_id}");
    let (status, out) = a.call("PATCH", &path, Some(json!({ "filterTypes": ["user.created"] }))).await;
    assert_eq!(status, 200, "{out}");
    for node in [b, a] {
        assert_eq!(ids(&get(node, &format!("{poller}?limit=250")).await), users);
    }
    let fresh = format!("{poller}/consumer/fresh?limit=250");
    assert_eq!(ids(&get(b, &fresh).await), users);
    assert_eq!(ids(&get(a, &fresh).await), Vec::<String>::new());
}
