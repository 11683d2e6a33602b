//! Pulling instead of pushes: polling, long-polling, server-side subscriptions and
//! Server-Sent Events on `/api/v1/app/{app_id}/events`, against the real binary.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// Posts a message with channels; returns its id.
async fn post(server: &Server, app: &str, event_type: &str, channels: &[&str], n: u32) -> String {
    let mut body = json!({ "eventType": event_type, "payload": { "n": n } });
    if !channels.is_empty() {
        body["channels"] = json!(channels);
    }
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg/"), Some(body)).await;
    assert_eq!(status, 202, "{out}");
    out["id"].as_str().expect("msg id").to_string()
}

fn data_ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data: {page}"))
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Reads `path` (which has a query string) page by page until `done`.
async fn read_all(server: &Server, path: &str) -> (Vec<String>, String) {
    let (mut ids, mut iterator) = (Vec::new(), None::<String>);
    for _ in 0..100 {
        let url = match &iterator {
            Some(it) => format!("{path}&iterator={it}"),
            None => path.to_string(),
        };
        let (status, page) = server.call("GET", &url, None).await;
        assert_eq!(status, 200, "{page}");
        ids.extend(data_ids(&page));
        iterator = Some(page["iterator"].as_str().expect("iterator").to_string());
        if page["done"] == true {
            return (ids, iterator.unwrap_or_default());
        }
    }
    panic!("never done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_reads_each_message_once_in_order() {
    let server = Server::start("").await;
    // No endpoint at all: pulling needs none.
    let app = server.create_app("puller").await;
    let other = server.create_app("other").await;
    let mut posted = Vec::new();
    for n in 0..5 {
        let (et, ch): (&str, &[&str]) = if n % 2 == 0 { ("user.created", &["eu"]) } else { ("user.deleted", &[]) };
        posted.push(post(&server, &app, et, ch, n).await);
    }
    post(&server, &other, "user.created", &[], 99).await;

    // Two at a time, carrying the iterator: every message once, in the order posted.
    let (ids, end) = read_all(&server, &format!("/api/v1/app/{app}/events?limit=2")).await;
    assert_eq!(ids, posted);
    let (status, page) = server.call("GET", &format!("/api/v1/app/{app}/events?limit=2"), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["done"], false);
    assert_eq!(page["data"][0]["payload"], json!({ "n": 0 }), "{page}");
    assert_eq!(page["data"][0]["eventType"], "user.created");
    assert_eq!(page["data"][0]["channels"], json!(["eu"]));

    // Caught up: nothing, same iterator; then only what came after.
    let (_, page) = server.call("GET", &format!("/api/v1/app/{app}/events?iterator={end}"), None).await;
    assert_eq!(data_ids(&page), Vec::<String>::new());
    assert_eq!(page["done"], true);
    assert_eq!(page["iterator"], json!(end));
    let later = post(&server, &app, "user.created", &[], 5).await;
    let (_, page) = server.call("GET", &format!("/api/v1/app/{app}/events?iterator={end}"), None).await;
    assert_eq!(data_ids(&page), vec![later.clone()]);

    // Filters, in both spellings SDKs use.
    let (ids, _) = read_all(&server, &format!("/api/v1/app/{app}/events?event_types=user.deleted")).await;
    assert_eq!(ids, vec![posted[1].clone(), posted[3].clone()]);
    let (ids, _) = read_all(&server, &format!("/api/v1/app/{app}/events?channels[]=eu&limit=1")).await;
    assert_eq!(ids, vec![posted[0].clone(), posted[2].clone(), posted[4].clone()]);
    let (_, page) = server.call("GET", &format!("/api/v1/app/{app}/events?with_content=false"), None).await;
    assert_eq!(page["data"][0]["payload"], json!({}), "{page}");

    // Another application's stream, and its token, see only their own.
    let (ids, _) = read_all(&server, &format!("/api/v1/app/{other}/events?limit=10")).await;
    assert_eq!(ids.len(), 1);
    let (status, access) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{other}"), None).await;
    assert_eq!(status, 200, "{access}");
    let token = access["token"].as_str().unwrap();
    let (status, body) = server.call_as(token, "GET", &format!("/api/v1/app/{app}/events"), None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = server.call_as(token, "GET", &format!("/api/v1/app/{other}/events"), None).await;
    assert_eq!(status, 200, "{body}");

    // Iterators are opaque, and bound to their application: another application's is
    // refused rather than read from (its position would tell that stream's length).
    assert!(end.len() >= 40 && !end.contains('.'), "an opaque iterator: {end}");
    let (status, body) = server.call("GET", &format!("/api/v1/app/{other}/events?iterator={end}"), None).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("validation")), "{body}");
    assert!(body["detail"][0]["msg"].as_str().unwrap().contains("not a position"), "{body}");
    let altered = format!("{}{}", if end.starts_with('A') { "B" } else { "A" }, &end[1..]);

    // Bad input: a clear 4xx with a code, never a 500.
    // (`0.5`: how positions looked before they were opaque; a client cannot make one up.)
    for query in [
        "iterator=nonsense",
        "iterator=1",
        "iterator=-1.2",
        "iterator=0.5",
        &format!("iterator={altered}"),
        "limit=0",
        "limit=251",
        "wait=61",
        "wait=x",
    ] {
        let (status, body) = server.call("GET", &format!("/api/v1/app/{app}/events?{query}"), None).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["code"], "validation", "{query}: {body}");
    }
    let (status, body) = server.call("GET", "/api/v1/app/no-such-app/events", None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_answers_when_a_message_arrives() {
    let server = Server::start("").await;
    let app = server.create_app("long-poller").await;
    post(&server, &app, "user.created", &[], 0).await;
    let (_, end) = read_all(&server, &format!("/api/v1/app/{app}/events?limit=10")).await;

    // Nothing comes: the poll answers empty when its wait is over, iterator unchanged.
    let started = Instant::now();
    let (status, page) = server.call("GET", &format!("/api/v1/app/{app}/events?iterator={end}&wait=1"), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(started.elapsed() >= Duration::from_millis(900), "answered before its wait: {:?}", started.elapsed());
    assert_eq!(data_ids(&page), Vec::<String>::new());
    assert_eq!(page["iterator"], json!(end));

    // A message posted while the poll waits is its answer, long before the wait is over.
    let waiting = {
        let (client, url) =
            (server.client.clone(), server.url(&format!("/api/v1/app/{app}/events?iterator={end}&wait=30")));
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(url).header("authorization", format!("Bearer {ADMIN}")).send().await.unwrap();
            (read(resp).await, started.elapsed())
        })
    };
    waiting_readers(&server, 1).await;
    let id = post(&server, &app, "user.created", &[], 1).await;
    let ((status, page), took) = waiting.await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(data_ids(&page), vec![id]);
    assert!(took < Duration::from_secs(30), "the poll waited out its whole wait: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_keeps_the_position_on_the_server() {
    let server = Server::start("").await;
    let app = server.create_app("subscriber").await;
    let mut posted = Vec::new();
    for n in 0..3 {
        posted.push(post(&server, &app, "user.created", &[], n).await);
    }
    let path = format!("/api/v1/app/{app}/events/subscription/billing");
    let (status, page) = server.call("GET", &path, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(data_ids(&page), posted);
    let (_, page) = server.call("GET", &path, None).await;
    assert_eq!(data_ids(&page), Vec::<String>::new(), "the subscription moved past what it answered");
    let fourth = post(&server, &app, "user.created", &[], 3).await;
    let (_, page) = server.call("GET", &path, None).await;
    assert_eq!(data_ids(&page), vec![fourth.clone()]);
    // Subscriptions are independent; `limit` pages them as polls.
    let other = format!("/api/v1/app/{app}/events/subscription/audit?limit=3");
    let (_, page) = server.call("GET", &other, None).await;
    assert_eq!(data_ids(&page), posted);
    let (_, page) = server.call("GET", &other, None).await;
    assert_eq!(data_ids(&page), vec![fourth]);
    let (status, body) = server.call("GET", &format!("/api/v1/app/{app}/events/subscription/bad%20name"), None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["path", "subscription_id"]), "{body}");
}

/// One Server-Sent Event: its `id` and its `data` as JSON.
struct SseEvent {
    id: String,
    data: Value,
}

/// Reads a Server-Sent Events response until `n` events arrived (comments skipped).
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<SseEvent> {
    let mut body = resp.bytes_stream();
    let (mut buffer, mut events) = (String::new(), Vec::new());
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("an event within 20 s")
            .expect("the stream stays open")
            .expect("chunk");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some((id, data)) = take_sse_event(&mut buffer) {
            events.push(SseEvent { id, data });
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_and_resume() {
    let server = Server::start("").await;
    let app = server.create_app("streamer").await;
    let first = post(&server, &app, "user.created", &[], 0).await;
    let stream_req = |last_event_id: Option<&str>| {
        let mut req = server
            .client
            .get(server.url(&format!("/api/v1/app/{app}/events/stream?event_types=user.created")))
            .header("authorization", format!("Bearer {ADMIN}"))
            // The harness client's overall timeout would cut a stream; this one has none.
            .timeout(Duration::from_secs(3600));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        req.send()
    };
    let resp = stream_req(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // Posted while the stream is open: they arrive on it; the filtered-out one does not.
    let second = post(&server, &app, "user.created", &[], 1).await;
    post(&server, &app, "user.deleted", &[], 2).await;
    let third = post(&server, &app, "user.created", &[], 3).await;
    let events = read_events(resp, 3).await;
    let ids: Vec<&str> = events.iter().map(|e| e.data["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![first.as_str(), second.as_str(), third.as_str()]);
    assert_eq!(events[1].data["payload"], json!({ "n": 1 }));

    // Reconnecting with the last id seen resumes after it.
    let fourth = post(&server, &app, "user.created", &[], 4).await;
    let resumed = read_events(stream_req(Some(&events[1].id)).await.unwrap(), 2).await;
    let ids: Vec<&str> = resumed.iter().map(|e| e.data["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![third.as_str(), fourth.as_str()]);
    assert_eq!(resumed[0].id, events[2].id, "an event keeps its id");

    // Another application's event id, a made-up one, an old-style position.
    let other = server.create_app("other").await;
    post(&server, &other, "user.created", &[], 0).await;
    let (_, other_end) = read_all(&server, &format!("/api/v1/app/{other}/events?limit=10")).await;
    for bad in ["garbage", "0.1", other_end.as_str()] {
        let resp = stream_req(Some(bad)).await.unwrap();
        let (status, body) = read(resp).await;
        assert_eq!((status, body["code"].as_str()), (422, Some("validation")), "{bad}: {body}");
        assert!(body.to_string().contains("Last-Event-ID"), "{bad}: {body}");
    }
    let (status, body) = server.call("GET", &format!("/api/v1/app/{app}/events/stream?wait=5"), None).await;
    assert_eq!(status, 422, "{body}");
}

/// A stream opened with an application token ends once the token no longer works (here
/// a logout), within the server's 15 s between two looks at it; the admin's is the
/// configuration's and is not looked up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_stops_working() {
    let server = Server::start("").await;
    let app = server.create_app("streamer").await;
    let token = server.app_token(&app).await;
    let first = post(&server, &app, "user.created", &[], 0).await;
    let resp = server
        .client
        .get(server.url(&format!("/api/v1/app/{app}/events/stream")))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(3600))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains(&first) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next()).await.expect("the first event");
        seen.push_str(std::str::from_utf8(&chunk.expect("open").expect("chunk")).expect("utf-8"));
    }
    let (status, _) = server.call_as(&token, "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(status, 204);
    // The stream ends (keep-alive comments may come first) within the recheck and a margin.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => panic!("still open 25 s after the logout: {seen}"),
        }
    }
    let (status, _) = server.call_as(&token, "GET", &format!("/api/v1/app/{app}/events/stream"), None).await;
    assert_eq!(status, 401, "and cannot be opened again");
}

/// A stream whose client stops reading, its connection left open (its socket's buffers
/// full), still ends when its token stops working: its waiting place goes back (the
/// `hooklane_waiting_readers` gauge), where the stream was held, and the place with it, for
/// as long as the client kept the connection (a stalled client's streams could take an
/// application's share of places, revoked or not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_stopped_reading_still_ends_with_its_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start("").await;
    let app = server.create_app("stalled").await;
    let token = server.app_token(&app).await;
    // About 24 MB of events: more than the server's socket buffer (4 MB at most), the
    // client's (kept small) and hyper's queue of 16 writes hold.
    let pad = "x".repeat(600_000);
    for n in 0..40 {
        let message = json!({ "eventType": "big.one", "payload": { "n": n, "pad": pad } });
        let (status, body) = server.call("POST", &format!("/api/v1/app/{app}/msg/"), Some(message)).await;
        assert_eq!(status, 202, "{body}");
    }
    let waiting = || async {
        let page = server.metrics().await;
        page.lines()
            .find_map(|l| l.strip_prefix("hooklane_waiting_readers "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let address = server.base.trim_start_matches("http://").to_string();
    // A small receive buffer: the client's window closes soon, as a real stalled reader's.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("receive buffer");
    let mut socket = socket.connect(address.parse().expect("address")).await.expect("connect");
    let request = format!(
        "GET /api/v1/app/{app}/events/stream HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("send the request");
    // The head of the answer, and nothing more is read.
    let mut head = vec![0u8; 1024];
    let n = socket.read(&mut head).await.expect("the answer");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head[..n]));
    assert_eq!(waiting().await, Some(1.0), "the stream holds a place");
    // Time for the server to fill the buffers and stall on them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = server.call_as(&token, "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(status, 204);
    // Within the token's recheck (15 s) and a margin, the client still connected.
    let deadline = Instant::now() + Duration::from_secs(40);
    while waiting().await != Some(0.0) {
        assert!(Instant::now() < deadline, "the stalled stream still holds its place 40 s after the logout");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(socket);
}

/// An iterator handed out before the database was restored from an older backup points
/// past the restored stream's end: refused with 422 (reading from it would silently pass
/// over every message until the stream caught up), for polls and streams alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iterator_from_before_a_restore_is_refused() {
    let mut server = Server::start("").await;
    let app = server.create_app("restored").await;
    post(&server, &app, "user.created", &[], 0).await;
    let data = server.data_dir().join("data");
    let backup = server.data_dir().join("backup");
    // SIGKILL leaves the files as a crash would: what the WAL holds is the backup's too.
    server.kill9();
    std::fs::create_dir_all(&backup).unwrap();
    for file in ["hooklane.db", "hooklane.db-wal"] {
        if data.join(file).exists() {
            std::fs::copy(data.join(file), backup.join(file)).unwrap();
        }
    }
    server.restart_after_kill();
    for n in 1..4 {
        post(&server, &app, "user.created", &[], n).await;
    }
    let (ids, ahead) = read_all(&server, &format!("/api/v1/app/{app}/events?limit=10")).await;
    assert_eq!(ids.len(), 4);
    server.kill9();
    for file in ["hooklane.db", "hooklane.db-wal", "hooklane.db-shm"] {
        let _ = std::fs::remove_file(data.join(file));
        if backup.join(file).exists() {
            std::fs::copy(backup.join(file), data.join(file)).unwrap();
        }
    }
    server.restart_after_kill();
    let (ids, _) = read_all(&server, &format!("/api/v1/app/{app}/events?limit=10")).await;
    assert_eq!(ids.len(), 1, "the restored database has the first message only");
    // Refused as ahead of the stream (the database kept its secret through the restore: the
    // iterator is still one of its own), not as a position it never gave out.
    let (status, body) = server.call("GET", &format!("/api/v1/app/{app}/events?iterator={ahead}"), None).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("validation")), "{body}");
    assert!(body["detail"][0]["msg"].as_str().unwrap().contains("is ahead of this server's stream"), "{body}");
    let resp = server
        .client
        .get(server.url(&format!("/api/v1/app/{app}/events/stream")))
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("last-event-id", &ahead)
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("validation")), "{body}");
    assert!(body["detail"][0]["msg"].as_str().unwrap().contains("is ahead of this server's stream"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_and_long_polls_do_not_hold_up_shutdown() {
    let mut server = Server::start("").await;
    let app = server.create_app("closing").await;
    let client = reqwest::Client::new();
    let stream = client
        .get(server.url(&format!("/api/v1/app/{app}/events/stream")))
        .header("authorization", format!("Bearer {ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let poll = {
        let req = client
            .get(server.url(&format!("/api/v1/app/{app}/events?wait=60")))
            .header("authorization", format!("Bearer {ADMIN}"));
        tokio::spawn(async move { read(req.send().await.unwrap()).await })
    };
    waiting_readers(&server, 2).await; // the stream and the poll
    let pid = server.pid().expect("running");
    let started = Instant::now();
    let status = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
    // The waiting poll is answered (empty) and the process exits, well before its 60 s wait.
    let (status, page) = tokio::time::timeout(Duration::from_secs(30), poll).await.expect("poll answered").unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(data_ids(&page), Vec::<String>::new());
    assert!(server.wait_exit(Duration::from_secs(30)), "the server did not exit; log:\n{}", server.logs());
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(stream);
}

/// One application may hold only a share of the node's waiting places: streams beyond it
/// are refused for that application (429 with `Retry-After`), while another application
/// still gets a stream; its long-polls without a place answer what there is at once, and
/// are refused when there is nothing (an empty answer at once would be asked again at
/// once, by a client reading in a loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_application_cannot_take_every_waiting_place() {
    let server = Server::start("").await;
    let greedy = server.create_app("greedy").await;
    let other = server.create_app("other").await;
    let (status, body) = server
        .call("POST", &format!("/api/v1/app/{greedy}/endpoint"), Some(json!({ "polling": true, "uid": "p" })))
        .await;
    assert_eq!(status, 201, "{body}");
    let client = reqwest::Client::new();
    let get = |path: String| client.get(server.url(&path)).header("authorization", format!("Bearer {ADMIN}")).send();
    let open = |app: &str| get(format!("/api/v1/app/{app}/events/stream"));
    let mut held = Vec::new();
    for _ in 0..100 {
        let resp = open(&greedy).await.unwrap();
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    let refused = open(&greedy).await.unwrap();
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let (status, body) = read(refused).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("too_many_waiting")), "{body}");
    let resp = open(&other).await.unwrap();
    assert_eq!(resp.status(), 200, "another application still gets a stream");

    // Long-polls (the application's stream, a subscription, a polling endpoint) without a
    // place: refused at once when they find nothing, rather than waiting out their 30 s.
    let started = Instant::now();
    for path in [
        format!("/api/v1/app/{greedy}/events?wait=30"),
        format!("/api/v1/app/{greedy}/events/subscription/s1?wait=30"),
        format!("/api/v1/app/{greedy}/poller/p?wait=30"),
    ] {
        let resp = get(path.clone()).await.unwrap();
        assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"), "{path}");
        let (status, body) = read(resp).await;
        assert_eq!((status, body["code"].as_str()), (429, Some("too_many_waiting")), "{path}: {body}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "a refused long-poll waited");
    // With something to read, they answer it.
    let id = server.send_message(&greedy, "a.b", json!({ "n": 1 })).await;
    for path in [
        format!("/api/v1/app/{greedy}/events?wait=30"),
        format!("/api/v1/app/{greedy}/events/subscription/s1?wait=30"),
        format!("/api/v1/app/{greedy}/poller/p?wait=30"),
    ] {
        let (status, body) = read(get(path.clone()).await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["data"][0]["id"].as_str(), Some(id.as_str()), "{path}: {body}");
    }
    // Caught up again, a poll that does not wait is answered as ever.
    let (status, body) = read(get(format!("/api/v1/app/{greedy}/events/subscription/s1")).await.unwrap()).await;
    assert_eq!((status, body["data"].as_array().map(Vec::len)), (200, Some(0)), "{body}");
    // A stream that closes gives its place back.
    held.pop();
    let mut reopened = None;
    for _ in 0..100 {
        let resp = open(&greedy).await.unwrap();
        if resp.status() == 200 {
            reopened = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "the place of a closed stream never came back");
}

/// An application keeps at most 10,000 positions on the server: a new subscription beyond
/// is refused (409), the ones it has go on, and another application is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_keeps_a_bounded_number_of_subscriptions() {
    let server = Server::start("").await;
    let (app, other) = (server.create_app("many").await, server.create_app("other").await);
    let id = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    let read = |app: &str, sub: String| {
        let path = format!("/api/v1/app/{app}/events/subscription/{sub}");
        let request = server.client.get(server.url(&path)).bearer_auth(ADMIN).send();
        async move { common::read(request.await.expect("subscription read")).await }
    };
    // A refused request makes no position (else 10,000 would not all be made below).
    for bad in ["limit=0", "iterator=nonsense", "wait=999"] {
        let path = format!("/api/v1/app/{app}/events/subscription/bad?{bad}");
        let (status, body) =
            common::read(server.client.get(server.url(&path)).bearer_auth(ADMIN).send().await.unwrap()).await;
        assert_eq!(status, 422, "{bad}: {body}");
    }
    let (status, body) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "polling": true, "uid": "p" }))).await;
    assert_eq!(status, 201, "{body}");
    // (The polling endpoint's recorded start is one of the application's positions.)
    let made: Vec<u16> = futures::stream::iter(0..9_999)
        .map(|i| read(&app, format!("s{i}")))
        .buffer_unordered(16)
        .map(|(status, _)| status)
        .collect()
        .await;
    assert!(made.iter().all(|s| *s == 200), "{} refused early", made.iter().filter(|s| **s != 200).count());
    let (status, body) = read(&app, "one-more".into()).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    // A polling endpoint's new consumer counts among them too.
    let consumer = format!("/api/v1/app/{app}/poller/p/consumer/c1");
    let (status, body) = server.call("GET", &consumer, None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{body}");
    // The ones it has read on (each was read once, and read the one message then).
    let id2 = server.send_message(&app, "a.b", json!({ "n": 2 })).await;
    let (status, page) = read(&app, "s9998".into()).await;
    assert_eq!((status, page["data"][0]["id"].as_str()), (200, Some(id2.as_str())), "{page}");
    assert_ne!(id, id2);
    let (status, _) = read(&other, "s0".into()).await;
    assert_eq!(status, 200, "another application's subscriptions are its own");
}

/// `hooklane forward`: messages posted from its start on reach a local URL, signed, retried
/// when it fails, and not again after the server restarts or the command is started again
/// from a printed position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_posts_the_stream_to_a_local_url() {
    let mut server = Server::start("").await;
    server.keep_address();
    let app = server.create_app("laptop").await;
    // The local receiver fails the message with n = 2 twice.
    let failures = std::sync::atomic::AtomicUsize::new(0);
    let rx = Receiver::scripted(move |_, r| {
        if r.json()["n"] == 2 && failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            Reply::Status(500)
        } else {
            Reply::Status(204)
        }
    })
    .await;
    let before = post(&server, &app, "a.b", &[], 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let to = format!("{}/local", rx.url);
    let base = server.base.clone();
    let common =
        ["--server", base.as_str(), "--app", app.as_str(), "--token", ADMIN, "--secret", secret, "--event-type", "a.b"];
    let mut forward = Forwarder::start(&[&[to.as_str()][..], &common[..]].concat());
    forward.connected(1).await;
    let m1 = post(&server, &app, "a.b", &[], 1).await;
    let m2 = post(&server, &app, "a.b", &[], 2).await;
    post(&server, &app, "other.type", &[], 3).await;
    let m4 = post(&server, &app, "a.b", &[], 4).await;
    let got = rx.wait_for(5, WAIT).await;
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        ids,
        [m1.as_str(), m2.as_str(), m2.as_str(), m2.as_str(), m4.as_str()],
        "in order, n = 2 tried three times"
    );
    assert!(!ids.contains(&before.as_str()), "messages from before the start are not forwarded");
    for r in &got {
        assert_eq!(r.path, "/local");
        assert!(signature_valid(secret, r), "{:?}", r.headers);
        assert_eq!(r.body, format!("{{\"n\":{}}}", r.json()["n"]).into_bytes(), "the payload as posted");
    }

    // The server dies and comes back on the same address: the stream resumes after m4.
    server.restart_after_kill();
    let m5 = post(&server, &app, "a.b", &[], 5).await;
    let got = rx.wait_for(6, Duration::from_secs(30)).await;
    assert_eq!(got[5].header("webhook-id"), m5);
    // Each forwarded message was printed with the position to go on from.
    let deadline = Instant::now() + WAIT;
    while !forward.lines().iter().any(|l| l.contains(&m5)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = forward.lines();
    let last = lines.iter().find(|l| l.contains(&m5)).unwrap_or_else(|| panic!("{lines:?}"));
    assert!(last.starts_with("204 a.b"), "{last}");
    let iterator = last.rsplit("iterator=").next().unwrap().to_string();
    assert!(lines.iter().filter(|l| l.starts_with("500 a.b")).count() == 2, "{lines:?}");

    // Stopped, then started again from the printed position: only what came since.
    forward.child.kill().await.unwrap();
    let m6 = post(&server, &app, "a.b", &[], 6).await;
    let again = Forwarder::start(&[&[to.as_str(), "--iterator", iterator.as_str()][..], &common[..]].concat());
    again.connected(1).await;
    let got = rx.wait_for(7, WAIT).await;
    assert_eq!(got[6].header("webhook-id"), m6);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.received().len(), 7, "nothing forwarded twice");

    // A token the server refuses ends the command with the reason.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["forward", &to, "--server", &base, "--app", &app, "--token", "wrong"])
        .env_remove("HOOKLANE_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A polling endpoint's messages, forwarded to a local URL with only the endpoint's key: the
/// command long-polls its poller, and goes on from a printed position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_reads_a_polling_endpoint_with_its_key() {
    let server = Server::start("").await;
    let app = server.create_app("laptop").await;
    let spec = json!({ "polling": true, "uid": "local", "filterTypes": ["a.b"] });
    let (status, ep) = server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(spec)).await;
    assert_eq!(status, 201, "{ep}");
    let (status, key) =
        server.call("POST", &format!("/api/v1/auth/app/{app}/poller/local/token/rotate"), Some(json!({}))).await;
    assert_eq!(status, 200, "{key}");
    let key = key["token"].as_str().expect("key").to_string();
    let rx = Receiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let to = format!("{}/local", rx.url);
    let base = server.base.clone();
    let common = ["--server", base.as_str(), "--app", app.as_str(), "--endpoint", "local", "--token", key.as_str()];
    let common = [&common[..], &["--secret", secret][..]].concat();

    let forward = Forwarder::start(&[&[to.as_str()][..], &common[..]].concat());
    forward.connected(1).await;
    let m1 = post(&server, &app, "a.b", &[], 1).await;
    post(&server, &app, "other.type", &[], 2).await; // not the endpoint's
    let m3 = post(&server, &app, "a.b", &[], 3).await;
    let got = rx.wait_for(2, WAIT).await;
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, [m1.as_str(), m3.as_str()]);
    assert!(got.iter().all(|r| signature_valid(secret, r)), "signed with --secret");

    // Stopped, then started again from the last position printed: only what came since.
    let deadline = Instant::now() + WAIT;
    while !forward.lines().iter().any(|l| l.contains(&m3)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = forward.lines();
    let last = lines.iter().find(|l| l.contains(&m3)).unwrap_or_else(|| panic!("{lines:?}"));
    let iterator = last.rsplit("iterator=").next().unwrap().to_string();
    drop(forward);
    let m4 = post(&server, &app, "a.b", &[], 4).await;
    let again = Forwarder::start(&[&[to.as_str(), "--iterator", iterator.as_str()][..], &common[..]].concat());
    again.connected(1).await;
    let got = rx.wait_for(3, WAIT).await;
    assert_eq!(got[2].header("webhook-id"), m4);
    // A message posted while it long-polls arrives without waiting out the poll.
    let m5 = post(&server, &app, "a.b", &[], 5).await;
    let got = rx.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(got[3].header("webhook-id"), m5);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 4, "nothing forwarded twice");

    // Two filters of a kind are more than a poller takes; a key for another endpoint is refused.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["forward", &to, "--event-type", "a.b", "--event-type", "c.d"])
        .args(&common)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most one"), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, _) = server
        .call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({"polling": true, "uid": "other"})))
        .await;
    assert_eq!(status, 201);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["forward", &to, "--server", &base, "--app", &app, "--endpoint", "other", "--token", &key])
        .env_remove("HOOKLANE_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A TCP proxy to `target` (`host:port`) that cuts its first connection's answer a few
/// bytes into the body, and passes every later connection through.
async fn cutting_proxy(target: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else { continue };
            if !std::mem::take(&mut first) {
                tokio::spawn(async move { tokio::io::copy_bidirectional(&mut client, &mut upstream).await });
                continue;
            }
            tokio::spawn(async move {
                let (mut client_reads, mut client_writes) = client.into_split();
                let (mut upstream_reads, mut upstream_writes) = upstream.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut client_reads, &mut upstream_writes).await });
                let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
                while let Ok(n @ 1..) = upstream_reads.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let cut = (end + 4 + 10).min(seen.len());
                        let _ = client_writes.write_all(&seen[..cut]).await;
                        break;
                    }
                }
                // Both halves dropped here: the client reads the end of the connection.
            });
        }
    });
    url
}

/// A page whose connection drops while it is read is read again, not the end of the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_reads_a_page_again_when_its_answer_is_cut_off() {
    let server = Server::start("").await;
    let app = server.create_app("laptop").await;
    let (status, ep) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "polling": true, "uid": "p" }))).await;
    assert_eq!(status, 201, "{ep}");
    // The position before two messages: the first page read from it holds both.
    let (status, page) = server.call("GET", &format!("/api/v1/app/{app}/poller/p"), None).await;
    assert_eq!((status, page["data"].as_array().map(Vec::len)), (200, Some(0)), "{page}");
    let iterator = page["iterator"].as_str().expect("iterator").to_string();
    let m1 = post(&server, &app, "a.b", &[], 1).await;
    let m2 = post(&server, &app, "a.b", &[], 2).await;
    let rx = Receiver::start().await;
    let to = format!("{}/local", rx.url);
    let proxy = cutting_proxy(server.base.trim_start_matches("http://").to_string()).await;
    let args = [to.as_str(), "--server", &proxy, "--app", &app, "--endpoint", "p", "--token", ADMIN];
    let forward = Forwarder::start(&[&args[..], &["--iterator", iterator.as_str()][..]].concat());
    let deadline = Instant::now() + WAIT;
    while rx.received().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = forward.lines();
    let got = rx.received();
    assert_eq!(got.len(), 2, "forwarded: {lines:?}");
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, [m1.as_str(), m2.as_str()]);
    forward.wait_for_line("saying the page was cut off", |l| l.contains("cut off")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.received().len(), 2, "nothing forwarded twice");
}

/// An inbound source's requests, forwarded to a local URL: its application is the source's
/// (its uid is the source id), so the same command brings a provider's webhooks to a laptop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_brings_an_inbound_source_to_a_local_url() {
    let server = Server::start("").await;
    let (status, src) = server
        .call("POST", "/api/v1/source", Some(json!({ "name": "github", "verification": { "type": "none" } })))
        .await;
    assert_eq!(status, 201, "{src}");
    let source = src["id"].as_str().unwrap().to_string();
    let rx = Receiver::start().await;
    let to = format!("{}/github", rx.url);
    let base = server.base.clone();
    let forward = Forwarder::start(&[to.as_str(), "--server", &base, "--app", &source, "--token", ADMIN]);
    forward.connected(1).await;
    let body = r#"{"ref": "refs/heads/main",  "after": "6113728f"}"#;
    let resp = server
        .client
        .post(server.url(&format!("/in/{source}")))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/github");
    assert_eq!(got[0].body, body.as_bytes(), "the provider's body, byte for byte");
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_eq!(got[0].header("x-github-event"), "push", "with the provider's informative headers");
    // The message shows them to the admin; to a token without ViewEndpointSecret, redacted.
    let msg_id = got[0].header("webhook-id").to_string();
    let (_, msg) = server.call("GET", &format!("/api/v1/app/{source}/msg/{msg_id}"), None).await;
    assert_eq!(msg["headers"]["x-github-event"], "push", "{msg}");
    let (status, portal) = server
        .call("POST", &format!("/api/v1/auth/app-portal-access/{source}"), Some(json!({ "readOnly": true })))
        .await;
    assert_eq!(status, 200, "{portal}");
    let (_, seen) = server
        .call_as(portal["token"].as_str().unwrap(), "GET", &format!("/api/v1/app/{source}/msg/{msg_id}"), None)
        .await;
    assert_eq!(seen["headers"]["x-github-event"], "[redacted]", "{seen}");
    assert!(got[0].header("webhook-id").starts_with("msg_"));
    // A form (as Slack's and Twilio's are): posted as it came, with its media type.
    let form = "token=abc&text=%2Fdeploy+now";
    let resp = server
        .client
        .post(server.url(&format!("/in/{source}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got[1].body, form.as_bytes());
    assert_eq!(got[1].header("content-type"), "application/x-www-form-urlencoded");
}

/// A page holds about 8 MiB of payloads at most, whatever its `limit`: a read of large
/// payloads ends early, not `done`, its iterator at its last message, and reading on brings
/// the rest, each message once. Without content, no payload is read, and nothing ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_ends_early_once_its_payloads_reach_eight_mebibytes() {
    let server = Server::start("").await;
    let app = server.create_app("heavy").await;
    // 12 payloads of about 1,000,000 bytes (the default `max_body_bytes` is 1 MiB): the
    // ninth brings a page past 8 MiB (8,388,608 bytes).
    let pad = "x".repeat(1_000_000);
    let mut posted = Vec::new();
    for n in 0..12 {
        posted.push(server.send_message(&app, "big", json!({ "n": n, "pad": pad })).await);
    }
    let path = format!("/api/v1/app/{app}/events?limit=250");
    let (status, first) = server.call("GET", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(data_ids(&first), posted[..9].to_vec(), "ended after the message that passed 8 MiB");
    assert_eq!(first["done"], false);
    assert_eq!(first["data"][8]["payload"]["n"], 8);
    let it = first["iterator"].as_str().expect("iterator");
    let (status, rest) = server.call("GET", &format!("{path}&iterator={it}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(data_ids(&rest), posted[9..].to_vec(), "on from its last message");
    assert_eq!(rest["done"], true);
    // Without content: every message at once, payloads not read.
    let (status, light) = server.call("GET", &format!("{path}&with_content=false"), None).await;
    assert_eq!(status, 200);
    assert_eq!(data_ids(&light), posted);
    assert_eq!(light["done"], true);
    assert!(light["data"].as_array().expect("data").iter().all(|m| m["payload"] == json!({})), "payloads left out");
    // A subscription moves on page by page alike.
    let sub = format!("/api/v1/app/{app}/events/subscription/heavy?limit=250");
    let (_, page) = server.call("GET", &sub, None).await;
    assert_eq!((data_ids(&page).len(), &page["done"]), (9, &json!(false)));
    let (_, page) = server.call("GET", &sub, None).await;
    assert_eq!((data_ids(&page), &page["done"]), (posted[9..].to_vec(), &json!(true)));
}

/// The positions an application keeps on the server: made only by a read that succeeded (a
/// long-poll refused for want of a waiting place makes none), and never made again by a read
/// that was under way when its endpoint or application was deleted. Counted in the store
/// itself (the server on PostgreSQL, read beside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_made_by_reads_that_succeed_and_not_again_once_deleted() {
    let db = hooklane_store::postgres::testing::TestDatabase::create().await;
    let server = Server::start(&format!("database_url = \"{}\"", db.url())).await;
    let beside = hooklane_store::postgres::PgStore::open(db.url()).await.expect("the store");
    let store: &dyn hooklane_store::Store = &beside;
    let count = |app: String| async move { store.count_events_subscriptions(&app, "").await.expect("count") };
    let client = reqwest::Client::new();
    let get = |path: String| client.get(server.url(&path)).bearer_auth(ADMIN).send();

    // A read under way (a long-poll) when its endpoint, then its application, is deleted.
    let app = server.create_app("deleted").await;
    let (status, ep) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "polling": true }))).await;
    assert_eq!(status, 201, "{ep}");
    let ep = ep["id"].as_str().expect("id").to_string();
    let consumer = format!("/api/v1/app/{app}/poller/{ep}/consumer/c");
    let subscription = format!("/api/v1/app/{app}/events/subscription/s");
    for path in [&consumer, &subscription] {
        let (status, body) = server.call("GET", path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(count(app.clone()).await, 3, "the endpoint's start, its consumer, the subscription");
    let mut answers = Vec::new();
    let deletes = [format!("/api/v1/app/{app}/endpoint/{ep}"), format!("/api/v1/app/{app}")];
    for (path, delete) in [consumer, subscription].into_iter().zip(deletes) {
        let started = Instant::now();
        let poll = tokio::spawn(get(format!("{path}?wait=4")));
        // (Well after the poll found its position, well before its wait is over.)
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (status, body) = server.call("DELETE", &delete, None).await;
        assert_eq!(status, 204, "{delete}: {body}");
        let (status, body) = read(poll.await.expect("poll").expect("answer")).await;
        assert!(started.elapsed() >= Duration::from_secs(3), "{path} did not wait: {status} {body}");
        answers.push((path, status, body));
    }
    assert_eq!(count(app.clone()).await, 0, "nothing made again");
    // (Their positions gone, the reads say so.)
    for (path, status, body) in answers {
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{path}: {body}");
    }

    // Long-polls refused (429: the application holds every waiting place of its share) make
    // no subscription and no consumer.
    let app = server.create_app("refused").await;
    let (status, body) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "polling": true, "uid": "p" }))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(count(app.clone()).await, 1, "the endpoint's start");
    let mut held = Vec::new();
    for _ in 0..100 {
        let resp = get(format!("/api/v1/app/{app}/events/stream")).await.expect("stream");
        assert_eq!(resp.status(), 200);
        held.push(resp);
    }
    for path in [
        format!("/api/v1/app/{app}/events/subscription/new?wait=30"),
        format!("/api/v1/app/{app}/poller/p/consumer/new?wait=30"),
    ] {
        let (status, body) = read(get(path.clone()).await.expect("answer")).await;
        assert_eq!((status, body["code"].as_str()), (429, Some("too_many_waiting")), "{path}: {body}");
    }
    assert_eq!(count(app.clone()).await, 1, "no position made by a refused read");
    drop(held);
    // Read without waiting, they are made.
    for path in
        [format!("/api/v1/app/{app}/events/subscription/new"), format!("/api/v1/app/{app}/poller/p/consumer/new")]
    {
        let (status, body) = read(get(path.clone()).await.expect("answer")).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(count(app.clone()).await, 3);
}
