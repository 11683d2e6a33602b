//! Polling endpoints (Svix's message poller): an endpoint created with `"polling": true` is
//! sent nothing; its consumer reads the messages its filters let through, created since it
//! was, through `/api/v1/app/{app_id}/poller/{endpoint_id}`, with its own iterator or a
//! position the server keeps per consumer. Against the real binary, on SQLite and on a
//! real PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use hooklane_store::postgres::testing::TestDatabase;
use serde_json::{json, Value};

/// Posts a message; returns its id and timestamp.
async fn post(server: &Server, app: &str, event_type: &str, channels: &[&str]) -> (String, String) {
    // Apart by a few milliseconds, so that every message has its own creation time.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let body = json!({ "eventType": event_type, "payload": { "type": event_type }, "channels": channels });
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg/"), Some(body)).await;
    assert_eq!(status, 202, "{out}");
    (out["id"].as_str().expect("msg id").to_string(), out["timestamp"].as_str().expect("timestamp").to_string())
}

fn ids(page: &Value) -> Vec<String> {
    let data = page["data"].as_array().unwrap_or_else(|| panic!("no data: {page}"));
    data.iter().map(|m| m["id"].as_str().expect("id").to_string()).collect()
}

async fn get(server: &Server, path: &str) -> Value {
    let (status, page) = server.call("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {page}");
    page
}

/// Reads `path` (a read that moves no position) until it answers `want`: on PostgreSQL a
/// message becomes readable only once every older transaction of the cluster has ended.
async fn read_until(server: &Server, path: &str, want: &[&str]) -> Value {
    let mut last = Vec::new();
    for _ in 0..200 {
        let page = get(server, path).await;
        if ids(&page) == want {
            return page;
        }
        last = ids(&page);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never answered {want:?}, last {last:?}");
}

/// An `invoice.paid` message of `app` created at `at`, as another node writes it to the
/// database itself.
fn message_of(app: &str, at: hooklane_core::DateTime<hooklane_core::Utc>) -> hooklane_core::model::Message {
    hooklane_core::model::Message {
        id: hooklane_core::ids::new_id(hooklane_core::ids::MESSAGE),
        app_id: app.to_string(),
        event_type: "invoice.paid".into(),
        event_id: None,
        payload: "{\"n\":1}".into(),
        channels: None,
        tags: None,
        created_at: at,
        content_type: None,
        headers: Default::default(),
        ordering_key: None,
        deliver_at: None,
    }
}

/// What a polling endpoint reads, and what it is spared, on one server.
async fn polling_endpoint_reads_its_messages(server: &Server) {
    let app = server.create_app("poller").await;
    let (before, _) = post(server, &app, "invoice.paid", &["eu"]).await;
    // (More than the clock skew a polling endpoint allows before its creation: on
    // PostgreSQL, a transaction of a test beside this one left open while the endpoint is
    // created would let in what was created that little before it.)
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let spec = json!({
        "polling": true, "uid": "books", "filterTypes": ["invoice.paid", "invoice.void"], "channels": ["eu", "us"]
    });
    let (status, ep) = server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(spec)).await;
    assert_eq!(status, 201, "{ep}");
    let ep_id = ep["id"].as_str().expect("id").to_string();
    assert_eq!(ep["polling"], true);
    let url = ep["url"].as_str().expect("url");
    assert!(url.ends_with(&format!("/api/v1/app/{app}/poller/{ep_id}")), "{url}");
    let direct = reqwest::Client::new()
        .get(url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("the url answered is where the endpoint is read");
    assert_eq!(direct.status(), 200);

    let (m1, t1) = post(server, &app, "invoice.paid", &["eu"]).await;
    let (m2, _) = post(server, &app, "invoice.paid", &["asia"]).await; // not on its channels
    let (m3, _) = post(server, &app, "user.created", &["eu"]).await; // not of its types
    let (m4, _) = post(server, &app, "invoice.void", &["us"]).await;
    let (m5, _) = post(server, &app, "invoice.void", &["asia", "us"]).await;
    let poller = format!("/api/v1/app/{app}/poller/books");
    read_until(server, &format!("{poller}?limit=50"), &[&m1, &m4, &m5]).await;

    // Nothing is sent to it: no delivery was made.
    for m in [&m1, &m4, &m5] {
        let dest = get(server, &format!("/api/v1/app/{app}/msg/{m}/endpoint")).await;
        assert_eq!(dest["data"], json!([]), "{dest}");
    }
    let sent = get(server, &format!("/api/v1/app/{app}/endpoint/{ep_id}/msg")).await;
    assert_eq!(sent["data"], json!([]), "{sent}");

    // Its messages, in order, by id or uid, page by page; none from before it existed.
    let first = get(server, &format!("{poller}?limit=2")).await;
    assert_eq!(ids(&first), [m1.clone(), m4.clone()]);
    assert_eq!(first["done"], false);
    assert_eq!(first["data"][0]["payload"], json!({ "type": "invoice.paid" }));
    let it = first["iterator"].as_str().expect("iterator");
    let rest = get(server, &format!("{poller}?limit=2&iterator={it}")).await;
    assert_eq!(ids(&rest), [m5.as_str()]);
    assert_eq!(rest["done"], true);
    let all = get(server, &format!("/api/v1/app/{app}/poller/{ep_id}?limit=50")).await;
    assert_eq!(ids(&all), [m1.clone(), m4.clone(), m5.clone()]);
    assert!(!ids(&all).contains(&before) && !ids(&all).contains(&m2) && !ids(&all).contains(&m3));

    // Narrowed by the query: one of its types; a type it never gets; a channel beside its own.
    let void = get(server, &format!("{poller}?event_type=invoice.void")).await;
    assert_eq!(ids(&void), [m4.clone(), m5.clone()]);
    let never = get(server, &format!("{poller}?event_type=user.created")).await;
    // …which a long-poll waits out rather than answering at once (a polling loop would spin).
    let asked = std::time::Instant::now();
    let waited = get(server, &format!("{poller}?event_type=user.created&wait=1")).await;
    assert!(asked.elapsed() >= Duration::from_millis(900), "answered after {:?}", asked.elapsed());
    assert_eq!(ids(&waited), Vec::<String>::new());
    assert_eq!((ids(&never), &never["done"]), (vec![], &json!(true)));
    let asia = get(server, &format!("{poller}?channel=asia")).await;
    assert_eq!(ids(&asia), [m5.as_str()], "on asia and on one of its own channels");
    let after = get(server, &format!("{poller}?after={}", t1.replace('+', "%2B"))).await;
    assert_eq!(ids(&after), [m4.clone(), m5.clone()]);

    // Consumers: each has its own position, kept by the server.
    let consumer = |name: &str| format!("/api/v1/app/{app}/poller/{ep_id}/consumer/{name}");
    assert_eq!(ids(&get(server, &format!("{}?limit=2", consumer("a"))).await), [m1.clone(), m4.clone()]);
    assert_eq!(ids(&get(server, &format!("{}?limit=2", consumer("a"))).await), [m5.as_str()]);
    assert_eq!(ids(&get(server, &consumer("a")).await), Vec::<String>::new());
    assert_eq!(ids(&get(server, &consumer("b")).await), [m1.clone(), m4.clone(), m5.clone()]);

    // Seek: back to just after m1's creation, then to before the endpoint existed.
    let seek = |name: &str, after: &str| {
        let path = format!("{}/seek", consumer(name));
        let body = json!({ "after": after });
        async move {
            let (status, out) = server.call("POST", &path, Some(body)).await;
            assert_eq!(status, 200, "{out}");
            out["iterator"].as_str().expect("iterator").to_string()
        }
    };
    let it = seek("a", &t1).await;
    assert_eq!(ids(&get(server, &consumer("a")).await), [m4.clone(), m5.clone()]);
    assert_eq!(ids(&get(server, &format!("{poller}?iterator={it}")).await), [m4.clone(), m5.clone()]);
    seek("a", "2000-01-01T00:00:00Z").await;
    assert_eq!(ids(&get(server, &consumer("a")).await), [m1.clone(), m4.clone(), m5.clone()]);
    // Past the end: the next message to come.
    seek("b", "2999-01-01T00:00:00Z").await;
    let (m6, _) = post(server, &app, "invoice.paid", &["us"]).await;
    read_until(server, &format!("{poller}?iterator={it}"), &[&m4, &m5, &m6]).await;
    assert_eq!(ids(&get(server, &consumer("b")).await), [m6.as_str()]);
    seek("b", "2999-01-01T00:00:00Z").await;
    assert_eq!(ids(&get(server, &consumer("b")).await), Vec::<String>::new(), "nothing created after that time");

    // A seek while a long-poll of the consumer waits: the poll's answer does not undo it.
    let waiting = {
        let (base, path) = (server.base.clone(), format!("{}?wait=10", consumer("b")));
        tokio::spawn(async move {
            let resp = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(ADMIN).send().await;
            resp.expect("long-poll").json::<Value>().await.expect("json")
        })
    };
    // (The seek must come after the poll has read where the consumer stood.)
    waiting_readers(server, 1).await;
    seek("b", "2000-01-01T00:00:00Z").await;
    let (m7, _) = post(server, &app, "invoice.paid", &["us"]).await;
    let answered = tokio::time::timeout(Duration::from_secs(15), waiting).await.expect("answered").expect("task");
    assert_eq!(ids(&answered), [m7.as_str()], "{answered}");
    assert_eq!(ids(&get(server, &consumer("b")).await), [m1.clone(), m4.clone(), m5.clone(), m6.clone(), m7.clone()]);
    // A consumer reads with its endpoint's filters, from where it stands: no others.
    for query in ["after=2020-01-01T00:00:00Z", "event_type=user.created", "channel=eu"] {
        let (status, out) = server.call("GET", &format!("{}?{query}", consumer("b")), None).await;
        assert_eq!((status, out["code"].as_str()), (422, Some("validation")), "{query}: {out}");
    }

    // A sender's precheck counts it: it reads what it gets.
    let precheck = |et: &str| json!({ "eventType": et, "channels": ["eu"] });
    let path = format!("/api/v1/app/{app}/msg/precheck/active");
    assert_eq!(server.call("POST", &path, Some(precheck("invoice.paid"))).await.1["active"], true);
    assert_eq!(server.call("POST", &path, Some(precheck("user.created"))).await.1["active"], false);

    // Another application's iterator is not a position here.
    let other = server.create_app("other").await;
    let (_, page) = server.call("GET", &format!("/api/v1/app/{other}/events"), None).await;
    let foreign = page["iterator"].as_str().expect("iterator");
    let (status, out) = server.call("GET", &format!("{poller}?iterator={foreign}"), None).await;
    assert_eq!(status, 422, "{out}");

    // Long-polling with a channel beside its own waits for a message it gets.
    let caught_up = get(server, &format!("{poller}?channel=asia&limit=250")).await;
    assert_eq!(caught_up["done"], true, "{caught_up}");
    let end = caught_up["iterator"].as_str().expect("iterator").to_string();
    let stream = get(server, &format!("/api/v1/app/{app}/events?limit=250")).await;
    assert_eq!(stream["done"], true, "{stream}");
    let stream_end = stream["iterator"].as_str().expect("iterator").to_string();
    let waiting = {
        let (base, path) = (server.base.clone(), format!("{poller}?channel=asia&wait=10&iterator={end}"));
        tokio::spawn(async move {
            let resp = reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(ADMIN).send().await;
            resp.expect("long-poll").json::<Value>().await.expect("json")
        })
    };
    waiting_readers(server, 1).await;
    let (elsewhere, _) = post(server, &app, "invoice.paid", &["asia"]).await; // on none of its channels
                                                                              // Once that message is readable (and so read by the long-poll), the long-poll goes on.
    read_until(server, &format!("/api/v1/app/{app}/events?iterator={stream_end}"), &[&elsewhere]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered by a message it does not get");
    let (m7, _) = post(server, &app, "invoice.paid", &["asia", "eu"]).await;
    let page = waiting.await.expect("long-poll task");
    assert_eq!(ids(&page), [m7.as_str()], "not answered empty by the message it does not get: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_endpoints_on_sqlite() {
    let server = Server::start("").await;
    polling_endpoint_reads_its_messages(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_endpoints_on_postgres() {
    let db = TestDatabase::create().await;
    let server = Server::start(&format!("database_url = \"{}\"", db.url())).await;
    polling_endpoint_reads_its_messages(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_endpoints_refuse_what_only_sending_uses() {
    // Behind a proxy on a path of its own: the url a polling endpoint answers has it.
    let server = Server::start("public_url = \"https://hooks.example.com/hooklane\"").await;
    let app = server.create_app("poller").await;
    let rx = Receiver::start().await;
    let endpoints = format!("/api/v1/app/{app}/endpoint");
    let create = |spec: Value| server.call("POST", &endpoints, Some(spec));

    // Refused on creation: a URL, the settings of deliveries; and no URL for a webhook endpoint.
    for (spec, field) in [
        (json!({ "polling": true, "url": rx.url }), "url"),
        (json!({ "polling": true, "rateLimit": 5 }), "rateLimit"),
        (json!({ "polling": true, "headers": { "x-a": "1" } }), "headers"),
        (json!({ "polling": true, "transform": { "a": "{{ $ }}" } }), "transform"),
        (json!({ "polling": true, "ordering": "fifo" }), "ordering"),
        (json!({ "polling": true, "retrySchedule": ["1s"] }), "retrySchedule"),
        (json!({ "polling": true, "paused": true }), "paused"),
        (json!({ "polling": true, "payloadFilter": { "a": 1 } }), "payloadFilter"),
        (json!({ "description": "no url" }), "url"),
    ] {
        let (status, out) = create(spec.clone()).await;
        assert_eq!(status, 422, "{spec}: {out}");
        assert_eq!(out["detail"][0]["loc"][1], field, "{spec}: {out}");
    }

    let (status, ep) = create(json!({ "polling": true, "description": "pulls" })).await;
    assert_eq!(status, 201, "{ep}");
    let id = ep["id"].as_str().expect("id").to_string();
    assert_eq!(ep["url"], format!("https://hooks.example.com/hooklane/api/v1/app/{app}/poller/{id}"));
    let path = format!("/api/v1/app/{app}/endpoint/{id}");

    // Changes: a URL or `polling: false` is refused; the URL it answers, repeated (an SDK's
    // read-modify-write), is accepted.
    let (status, out) = server.call("PATCH", &path, Some(json!({ "url": rx.url }))).await;
    assert_eq!((status, &out["detail"][0]["loc"][1]), (422, &json!("url")), "{out}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "polling": false }))).await;
    assert_eq!((status, &out["detail"][0]["loc"][1]), (422, &json!("polling")), "{out}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "rateLimit": 3 }))).await;
    assert_eq!(status, 422, "{out}");
    let put = json!({ "url": ep["url"], "description": "still pulls", "polling": true });
    let (status, out) = server.call("PUT", &path, Some(put)).await;
    assert_eq!((status, &out["description"], &out["url"]), (200, &json!("still pulls"), &ep["url"]), "{out}");
    let (status, out) = server.call("PUT", &path, Some(json!({ "description": "no url, still fine" }))).await;
    assert_eq!(status, 200, "{out}");

    // Nothing can be sent to it.
    for (method, tail, body) in [
        ("POST", "/recover", json!({ "since": "2020-01-01T00:00:00Z" })),
        ("POST", "/replay-missing", json!({ "since": "2020-01-01T00:00:00Z" })),
        ("POST", "/send-example", json!({ "eventType": "svix.ping" })),
        (
            "PUT",
            "/oauth",
            json!({ "tokenUrl": "https://auth.example.com/token", "clientId": "c",
            "clientSecret": "s", "grantType": "clientCredentials", "authMethod": "clientSecretBasic" }),
        ),
        ("PUT", "/mtls", json!({ "identity": "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n" })),
        ("POST", "/bulk-replay", json!({ "since": "2020-01-01T00:00:00Z" })),
        ("POST", "/preview", json!({ "payload": { "a": 1 } })),
    ] {
        let (status, out) = server.call(method, &format!("{path}{tail}"), Some(body)).await;
        assert_eq!(status, 409, "{tail}: {out}");
        assert_eq!(out["code"], "conflict", "{out}");
    }
    let msg = server.send_message(&app, "user.created", json!({ "n": 0 })).await;
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg/{msg}/endpoint/{id}/resend"), None).await;
    assert_eq!((status, &out["code"]), (409, &json!("conflict")), "{out}");
    let js = json!({ "code": "function handler(w) { return w }" });
    let (status, out) = server.call("PATCH", &format!("{path}/transformation"), Some(js)).await;
    assert_eq!(status, 422, "{out}");

    // Only polling endpoints are polled; a disabled one answers 409; consumer names are names.
    let (web, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let (status, out) = server.call("GET", &format!("/api/v1/app/{app}/poller/{web}"), None).await;
    assert_eq!((status, &out["code"]), (404, &json!("not_found")), "{out}");
    let (status, out) =
        server.call("GET", &format!("/api/v1/app/{app}/poller/{id}/consumer/not%20a%20name"), None).await;
    assert_eq!(status, 422, "{out}");
    let (status, _) = server.call("PATCH", &path, Some(json!({ "disabled": true }))).await;
    assert_eq!(status, 200);
    let (status, out) = server.call("GET", &format!("/api/v1/app/{app}/poller/{id}"), None).await;
    assert_eq!(status, 409, "{out}");

    // An inbound source's application takes URL destinations only.
    let source = json!({ "name": "gh", "verification": { "type": "github", "secret": "s3cr3t" },
        "destinations": [{ "url": rx.url }] });
    let (status, src) = server.call("POST", "/api/v1/source", Some(source)).await;
    assert_eq!(status, 201, "{src}");
    let src_app = src["id"].as_str().expect("source id");
    let (status, out) =
        server.call("POST", &format!("/api/v1/app/{src_app}/endpoint"), Some(json!({ "polling": true }))).await;
    assert_eq!((status, &out["detail"][0]["loc"][1]), (422, &json!("polling")), "{out}");

    // The webhook endpoint beside it gets its message; nothing went anywhere else.
    server.send_message(&app, "user.created", json!({ "n": 1 })).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.received().len(), 1, "only the webhook endpoint's message");
}

/// During a rolling upgrade a node of an older version, which knows nothing of polling
/// endpoints, makes deliveries to one: an upgraded node gives them up at once, as a
/// disabled endpoint's, with no attempt and no failure counted against the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_a_polling_endpoint_is_given_up() {
    let db = TestDatabase::create().await;
    let server =
        Server::start(&format!("database_url = \"{}\"\n[delivery]\npoll_interval = \"200ms\"", db.url())).await;
    let app = server.create_app("poller").await;
    let (status, ep) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({"polling": true}))).await;
    assert_eq!(status, 201, "{ep}");
    let ep_id = ep["id"].as_str().expect("id").to_string();

    // The older node: another process writing to the same database.
    let older = hooklane_store::postgres::PgStore::open(db.url()).await.expect("second node's store");
    let msg = message_of(&app, hooklane_core::Utc::now());
    let store: &dyn hooklane_store::Store = &older;
    store.create_message(msg.clone(), vec![ep_id.clone()], None).await.expect("an older node's message");

    let path = format!("/api/v1/app/{app}/msg/{}/endpoint", msg.id);
    let dest = server
        .wait_until(&path, Duration::from_secs(15), |b| {
            b["data"][0]["status"].as_u64().is_some_and(|s| s == 0 || s == 2)
        })
        .await;
    assert_eq!(dest["data"][0]["status"], 2, "given up, as failed: {dest}");
    assert!(dest["data"][0]["url"].as_str().unwrap_or_default().ends_with(&format!("/poller/{ep_id}")), "{dest}");
    let attempts = get(&server, &format!("/api/v1/app/{app}/attempt/endpoint/{ep_id}")).await;
    assert_eq!(attempts["data"], json!([]), "never tried: {attempts}");
    let ep = get(&server, &format!("/api/v1/app/{app}/endpoint/{ep_id}")).await;
    assert_eq!(ep["disabled"], false, "{ep}");
}

/// A message taken by a node whose clock is behind the one that created the endpoint still
/// reaches the endpoint: its reads are bounded by the stream's position at its creation,
/// not by clocks. An iterator of the application's stream from before the endpoint was
/// created reads no history through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_slow_clock_loses_no_message() {
    let db = TestDatabase::create().await;
    let server = Server::start(&format!("database_url = \"{}\"", db.url())).await;
    let app = server.create_app("poller").await;
    let early = get(&server, &format!("/api/v1/app/{app}/events")).await;
    let early = early["iterator"].as_str().expect("iterator").to_string();
    let (before, _) = post(&server, &app, "invoice.paid", &["eu"]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // (as above)
    let (status, ep) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({"polling": true}))).await;
    assert_eq!(status, 201, "{ep}");
    let ep_id = ep["id"].as_str().expect("id").to_string();
    let created: hooklane_core::DateTime<hooklane_core::Utc> =
        ep["createdAt"].as_str().expect("createdAt").parse().expect("a time");

    // Another node, its clock 50 ms behind, takes a message after the endpoint exists.
    let other = hooklane_store::postgres::PgStore::open(db.url()).await.expect("second node's store");
    let msg = message_of(&app, created - chrono::TimeDelta::milliseconds(50));
    let store: &dyn hooklane_store::Store = &other;
    store.create_message(msg.clone(), vec![], None).await.expect("the other node's message");

    let poller = format!("/api/v1/app/{app}/poller/{ep_id}");
    read_until(&server, &poller, &[&msg.id]).await;
    let consumer = format!("{poller}/consumer/c1");
    assert_eq!(ids(&get(&server, &consumer).await), [msg.id.as_str()]);
    // From the application's early iterator: still only what came since the endpoint.
    let page = get(&server, &format!("{poller}?iterator={early}")).await;
    assert_eq!(ids(&page), [msg.id.as_str()], "not {before}");
    let page = get(&server, &format!("{consumer}?iterator={early}")).await;
    assert_eq!(ids(&page), [msg.id.as_str()], "not {before}");

    // A transaction left open elsewhere on the database while an endpoint is created: the
    // start recorded is where it stood, and a message committed meanwhile but created well
    // before the endpoint (here 10 s) is not the endpoint's, once that transaction ends.
    // (Another application, with no other history: what was created in the last seconds
    // before an endpoint may be read while a transaction older than it stays open.)
    let app = server.create_app("poller-2").await;
    let (pg, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    pg.batch_execute("BEGIN; SELECT pg_current_xact_id();").await.expect("an open transaction");
    let mut old = msg.clone();
    old.id = hooklane_core::ids::new_id(hooklane_core::ids::MESSAGE);
    old.app_id = app.clone();
    old.created_at = hooklane_core::Utc::now() - chrono::TimeDelta::seconds(10);
    store.create_message(old.clone(), vec![], None).await.expect("an old message, committed now");
    let (status, late) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({"polling": true}))).await;
    assert_eq!(status, 201, "{late}");
    pg.batch_execute("COMMIT").await.expect("the transaction ends");
    let (after, _) = post(&server, &app, "invoice.paid", &["eu"]).await;
    let late_poller = format!("/api/v1/app/{app}/poller/{}", late["id"].as_str().expect("id"));
    let page = read_until(&server, &late_poller, &[&after]).await;
    assert_eq!(ids(&page), [after.as_str()], "not {}", old.id);
}

/// A polling endpoint's key (`sk_poll_…`, made by the admin token): it reads that endpoint's
/// poller and moves its consumers, and nothing else; a rotation retires the earlier keys,
/// and deleting the endpoint its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_endpoints_key_reads_that_endpoint_only() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("poller").await;
    let other_app = server.create_app("other").await;
    let polling = |app: String, uid: &'static str| {
        let server = &server;
        async move {
            let spec = json!({ "polling": true, "uid": uid });
            let (status, ep) = server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(spec)).await;
            assert_eq!(status, 201, "{ep}");
            ep["id"].as_str().expect("id").to_string()
        }
    };
    let (books, ledger, elsewhere) = (
        polling(app.clone(), "books").await,
        polling(app.clone(), "ledger").await,
        polling(other_app.clone(), "x").await,
    );
    let (web, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let (m1, _) = post(&server, &app, "invoice.paid", &["eu"]).await;

    let rotate = |ep: &str, body: Value| {
        let path = format!("/api/v1/auth/app/{app}/poller/{ep}/token/rotate");
        let server = &server;
        async move { server.call("POST", &path, Some(body)).await }
    };
    let (status, out) = rotate(&books, json!({})).await;
    assert_eq!(status, 200, "{out}");
    let key = out["token"].as_str().expect("token").to_string();
    assert!(key.starts_with("sk_poll_"), "{key}");
    assert!(out.get("expiresAt").is_none() && out["id"].as_str().is_some(), "{out}");

    // What it may do: its poller (by id or uid), its consumers, and say who it is.
    let as_key = |method: &'static str, path: String| {
        let (server, key) = (&server, key.clone());
        async move { server.call_as(&key, method, &path, Some(json!({ "after": "2000-01-01T00:00:00Z" }))).await }
    };
    for path in [format!("/api/v1/app/{app}/poller/{books}"), format!("/api/v1/app/{app}/poller/books")] {
        let (status, page) = server.call_as(&key, "GET", &path, None).await;
        assert_eq!((status, ids(&page)), (200, vec![m1.clone()]), "{path}: {page}");
    }
    let consumer = format!("/api/v1/app/{app}/poller/books/consumer/c");
    let (status, page) = server.call_as(&key, "GET", &consumer, None).await;
    assert_eq!((status, ids(&page)), (200, vec![m1.clone()]), "{page}");
    assert_eq!(as_key("POST", format!("{consumer}/seek")).await.0, 200);
    let (status, me) = server.call_as(&key, "GET", "/api/v1/auth/whoami", None).await;
    assert_eq!((status, &me["endpointId"], &me["appId"]), (200, &json!(books), &json!(app)), "{me}");
    // A source the Svix SDK can read (it refuses names it does not know).
    let read: svix::models::WhoamiOut = serde_json::from_value(me.clone()).expect("the SDK reads it");
    assert_eq!(read.permission_source, svix::models::AuthenticationSource::Unknown);
    // It may keep 100 consumers, no more; those it has go on.
    for i in 1..100 {
        let (status, out) = server.call_as(&key, "GET", &format!("{consumer}{i}"), None).await;
        assert_eq!(status, 200, "consumer {i}: {out}");
    }
    let (status, out) = server.call_as(&key, "GET", &format!("{consumer}100"), None).await;
    assert_eq!((status, &out["code"]), (409, &json!("conflict")), "{out}");
    let (status, out) = server
        .call_as(&key, "POST", &format!("{consumer}100/seek"), Some(json!({"after": "2020-01-01T00:00:00Z"})))
        .await;
    assert_eq!(status, 409, "{out}");
    assert_eq!(server.call_as(&key, "GET", &format!("{consumer}99"), None).await.0, 200);
    assert_eq!(server.call_as(&key, "GET", &consumer, None).await.0, 200);

    // What it may not: another polling endpoint, another application, everything else.
    for (method, path, want) in [
        ("GET", format!("/api/v1/app/{app}/poller/{ledger}"), 404),
        ("GET", format!("/api/v1/app/{other_app}/poller/{elsewhere}"), 404),
        ("GET", format!("/api/v1/app/{app}/events"), 403),
        ("GET", format!("/api/v1/app/{app}/events/subscription/s"), 403),
        ("GET", format!("/api/v1/app/{app}"), 403),
        ("GET", format!("/api/v1/app/{app}/endpoint"), 403),
        ("GET", format!("/api/v1/app/{app}/endpoint/{web}/secret"), 403),
        ("GET", format!("/api/v1/app/{app}/msg"), 403),
        ("POST", format!("/api/v1/app/{app}/msg"), 403),
        ("GET", "/api/v1/app".into(), 403),
        ("GET", "/api/v1/event-type".into(), 403),
        ("GET", "/api/v1/background-task".into(), 403),
        ("POST", format!("/api/v1/auth/app/{app}/poller/{books}/token/rotate"), 403),
    ] {
        let (status, out) = as_key(method, path.clone()).await;
        assert_eq!(status, want, "{method} {path}: {out}");
    }
    // It cannot tell another endpoint from none: both are not found alike.
    let other = server.call_as(&key, "GET", &format!("/api/v1/app/{app}/poller/ledger"), None).await;
    let missing = server.call_as(&key, "GET", &format!("/api/v1/app/{app}/poller/no-such-uid"), None).await;
    assert_eq!(other, missing);

    // Only the admin token makes keys, for polling endpoints, within the bounds.
    let (status, access) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{app}"), None).await;
    assert_eq!(status, 200, "{access}");
    let app_token = access["token"].as_str().expect("token");
    let path = format!("/api/v1/auth/app/{app}/poller/{books}/token/rotate");
    assert_eq!(server.call_as(app_token, "POST", &path, None).await.0, 403);
    assert_eq!(rotate(&web, json!({})).await.0, 404, "not a polling endpoint");
    for body in [json!({ "expiry": 0 }), json!({ "expiry": 31_536_001 }), json!({ "oldTokenExpiry": 86_401 })] {
        assert_eq!(rotate(&books, body.clone()).await.0, 422, "{body}");
    }
    let (_, me) = server.call_as(&key, "GET", "/api/v1/auth/whoami", None).await;
    assert_eq!(me["endpointId"], json!(books), "refused rotations retire nothing");

    // A rotation: the earlier key stops (at once here), the new one works, with its expiry.
    let (status, out) = rotate(&books, json!({ "expiry": 3600, "oldTokenExpiry": 0 })).await;
    assert_eq!(status, 200, "{out}");
    assert!(out["expiresAt"].as_str().is_some(), "{out}");
    let second = out["token"].as_str().expect("token").to_string();
    let poll = format!("/api/v1/app/{app}/poller/{books}");
    assert_eq!(server.call_as(&key, "GET", &poll, None).await.0, 401);
    assert_eq!(server.call_as(&second, "GET", &poll, None).await.0, 200);
    // …and another endpoint's key is untouched by it, until the application's tokens expire.
    let ledger_key = rotate(&ledger, json!({})).await.1["token"].as_str().expect("token").to_string();
    let ledger_poll = format!("/api/v1/app/{app}/poller/{ledger}");
    assert_eq!(server.call_as(&ledger_key, "GET", &ledger_poll, None).await.0, 200);

    // Deleting the endpoint deletes its keys.
    let (status, _) = server.call("DELETE", &format!("/api/v1/app/{app}/endpoint/{books}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(server.call_as(&second, "GET", "/api/v1/auth/whoami", None).await.0, 401);
    assert_eq!(server.call_as(&ledger_key, "GET", &ledger_poll, None).await.0, 200);
    let (status, _) = server.call("POST", &format!("/api/v1/auth/app/{app}/expire-all"), None).await;
    assert_eq!(status, 204);
    assert_eq!(server.call_as(&ledger_key, "GET", &ledger_poll, None).await.0, 401);
}

/// A long-poll whose token is revoked while it waits (a polling key rotated away at once,
/// an application's tokens expired) answers 401 when a message comes, not the message:
/// and a consumer's shared position stays where it was, for the new key to read from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_whose_token_is_revoked_meanwhile_answers_401_and_moves_nothing() {
    let server = Server::start("").await;
    let app = server.create_app("revoked").await;
    server.create_polling_endpoint(&app, "books").await;
    let rotate = |body: Value| server.rotate_poller_key(&app, "books", body);
    let first = rotate(json!({})).await;
    let consumer = format!("/api/v1/app/{app}/poller/books/consumer/c");
    let (status, page) = server.call_as(&first, "GET", &consumer, None).await;
    assert_eq!((status, ids(&page)), (200, vec![]), "{page}");

    // The first key's long-poll waits; meanwhile the key is rotated away and a message comes.
    let long_poll = format!("{consumer}?wait=20");
    let waiting = server.call_as(&first, "GET", &long_poll, None);
    let revoke = async {
        waiting_readers(&server, 1).await;
        let second = rotate(json!({ "oldTokenExpiry": 0 })).await;
        (second, post(&server, &app, "invoice.paid", &["eu"]).await.0)
    };
    let ((status, out), (second, m1)) = tokio::join!(waiting, revoke);
    assert_eq!((status, &out["code"]), (401, &json!("authentication_failed")), "the revoked key read on: {out}");
    let (status, page) = server.call_as(&second, "GET", &consumer, None).await;
    assert_eq!((status, ids(&page)), (200, vec![m1]), "the consumer moved past what the revoked key was refused");

    // An application token's long-poll of the application's stream, its tokens expired meanwhile.
    let token = server.app_token(&app).await;
    let (status, start) = server.call_as(&token, "GET", &format!("/api/v1/app/{app}/events"), None).await;
    assert_eq!(status, 200, "{start}");
    let iterator = start["iterator"].as_str().expect("iterator").to_string();
    let long_poll = format!("/api/v1/app/{app}/events?wait=20&iterator={iterator}");
    let waiting = server.call_as(&token, "GET", &long_poll, None);
    let expire = async {
        waiting_readers(&server, 1).await;
        let (status, out) = server.call("POST", &format!("/api/v1/auth/app/{app}/expire-all"), None).await;
        assert_eq!(status, 204, "{out}");
        post(&server, &app, "invoice.paid", &["eu"]).await
    };
    let ((status, out), _) = tokio::join!(waiting, expire);
    assert_eq!((status, &out["code"]), (401, &json!("authentication_failed")), "the expired token read on: {out}");
}

/// A consumer's first read refused (429: its application holds its share of the node's
/// waiting places, and there is nothing to read) makes no consumer: it does not take one of
/// the endpoint's 100, nor does a seek refused for a new consumer beyond them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_read_makes_no_consumer() {
    let server = Server::start("").await;
    let app = server.create_app("poller").await;
    let (status, ep) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "polling": true, "uid": "p" }))).await;
    assert_eq!(status, 201, "{ep}");
    let client = reqwest::Client::new();
    let mut held = Vec::new();
    for _ in 0..100 {
        let resp = client.get(server.url(&format!("/api/v1/app/{app}/events/stream"))).bearer_auth(ADMIN).send();
        let resp = resp.await.expect("stream");
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    for i in 0..3 {
        let path = format!("/api/v1/app/{app}/poller/p/consumer/refused{i}?wait=30");
        let (status, out) = server.call("GET", &path, None).await;
        assert_eq!((status, out["code"].as_str()), (429, Some("too_many_waiting")), "{out}");
    }
    drop(held);
    // Every one of the 100 is still there for others to take.
    let consumer = |i: usize| format!("/api/v1/app/{app}/poller/p/consumer/c{i}");
    for i in 0..100 {
        let (status, out) = server.call("GET", &consumer(i), None).await;
        assert_eq!(status, 200, "consumer {i}: {out}");
    }
    let (status, out) = server.call("GET", &consumer(100), None).await;
    assert_eq!((status, out["code"].as_str()), (409, Some("conflict")), "{out}");
    let seek = Some(json!({ "after": "2020-01-01T00:00:00Z" }));
    let (status, out) = server.call("POST", &format!("{}/seek", consumer(100)), seek.clone()).await;
    assert_eq!(status, 409, "{out}");
    let (status, out) = server.call("POST", &format!("{}/seek", consumer(99)), seek).await;
    assert_eq!(status, 200, "{out}");
}
