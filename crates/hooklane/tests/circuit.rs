//! The circuit breaker, end to end: an endpoint refusing connections with many deliveries
//! waiting is paused after a few failures, while another endpoint gets every message; once
//! it listens again, every paused delivery reaches it.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);
const DEAD_MESSAGES: usize = 300;

/// Every attempt made to the endpoint, following the pages of the attempts API.
async fn attempts(server: &Server, app: &str, ep: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut path = format!("/api/v1/app/{app}/attempt/endpoint/{ep}?limit=250");
    loop {
        let (status, page) = server.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        all.extend(page["data"].as_array().expect("data").iter().cloned());
        if page["done"] == true {
            return all;
        }
        let it = page["iterator"].as_str().expect("iterator");
        path = format!("/api/v1/app/{app}/attempt/endpoint/{ep}?limit=250&iterator={it}");
    }
}

async fn wait_for_log(server: &Server, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !server.logs().contains(needle) {
        assert!(Instant::now() < deadline, "no log line with {needle:?}:\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_paused_and_resumes_when_it_comes_back() {
    // A port nobody listens on: held by a socket bound to it but not listening, so that
    // connections to it are refused and nothing else takes the port before the endpoint
    // comes back on it (released, another test's listener or connection could).
    let held = tokio::net::TcpSocket::new_v4().expect("socket");
    held.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let port = held.local_addr().expect("addr").port();
    // Short cool-downs so probes come often; retries plentiful and quick, so a delivery
    // picked as probe again and again does not run out of attempts (and, without the
    // circuit, every delivery would be attempted over and over within the test).
    let retries = vec!["\"100ms\""; 30].join(", ");
    let server = Server::start(&format!(
        "[delivery]\ncircuit_failures = 3\ncircuit_cooldown = \"200ms\"\ncircuit_max_cooldown = \"1s\"\n\
         per_endpoint_in_flight = 4\nretry_schedule = [{retries}]\n"
    ))
    .await;
    let dead_app = server.create_app("Down").await;
    let (dead, _) = server.create_endpoint(&dead_app, json!({ "url": format!("http://127.0.0.1:{port}/hook") })).await;
    let live_app = server.create_app("Up").await;
    let rx = Receiver::start().await;
    let (_live, _) = server.create_endpoint(&live_app, json!({ "url": format!("{}/hook", rx.url) })).await;

    let mut dead_msgs = Vec::new();
    for i in 0..DEAD_MESSAGES {
        dead_msgs.push(server.send_message(&dead_app, "order.created", json!({ "n": i })).await);
    }
    wait_for_log(&server, "circuit open").await;
    assert!(server.logs().contains(&dead), "the circuit's log line names the endpoint:\n{}", server.logs());

    // The live endpoint gets everything while the dead one's deliveries wait.
    let mut live_msgs = Vec::new();
    for i in 0..100 {
        live_msgs.push(server.send_message(&live_app, "order.created", json!({ "n": i })).await);
    }
    let (got, _) = rx.wait_for_ids(&live_msgs, WAIT).await;
    assert!(got >= live_msgs.len());

    // Let a few cool-downs and probes go by: attempts to the dead endpoint stay few (the
    // failures that opened the circuit, the requests already in flight then, one probe per
    // cool-down), far below one per waiting delivery.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed = attempts(&server, &dead_app, &dead).await;
    assert!(failed.len() >= 3, "the circuit opened after 3 failures, got {} attempts", failed.len());
    assert!(
        failed.len() < DEAD_MESSAGES / 5,
        "{} attempts for {DEAD_MESSAGES} deliveries: the dead endpoint was not paused",
        failed.len()
    );
    assert!(failed.iter().all(|a| a["status"] == 2), "only failures so far");
    let (_, metrics) = {
        let resp = server.client.get(server.url("/metrics")).bearer_auth(ADMIN).send().await.expect("metrics");
        (resp.status(), resp.text().await.expect("metrics body"))
    };
    assert!(metrics.contains("hooklane_circuit_transitions_total"), "{metrics}");
    assert!(metrics.contains("hooklane_deliveries_paused_total"), "{metrics}");

    // The endpoint comes back on the same port: the next probe closes the circuit and
    // every paused delivery follows.
    let back = Receiver::start_on_socket(held).await;
    back.wait_for_ids(&dead_msgs, WAIT).await;
    wait_for_log(&server, "circuit closed").await;
    let all = attempts(&server, &dead_app, &dead).await;
    let delivered: HashSet<&str> =
        all.iter().filter(|a| a["status"] == 0).map(|a| a["msgId"].as_str().expect("msgId")).collect();
    assert_eq!(delivered.len(), DEAD_MESSAGES, "every paused delivery was delivered once it came back");
    let failures = all.iter().filter(|a| a["status"] == 2).count();
    assert!(failures < DEAD_MESSAGES / 5, "{failures} failed attempts: paused deliveries were attempted");
    // Pausing burns no retries: a delivery never probed succeeds on its first attempt.
    let first_try = dead_msgs.iter().filter(|m| all.iter().filter(|a| a["msgId"] == m.as_str()).count() == 1).count();
    assert!(first_try >= DEAD_MESSAGES - failures, "{first_try} delivered on their first attempt");
}

/// A server whose circuits open after 3 failures and whose cool-downs and retries last an
/// hour (nothing but the test's own action can reach the endpoint again within the test),
/// an endpoint answering 503, and `n` messages posted to it; returns once its circuit is
/// open. `extra` adds `[delivery]` settings.
async fn open_circuit(extra: &str, n: usize) -> (Server, Receiver, String, String, Vec<String>) {
    let server = Server::start(&format!(
        "[delivery]\ncircuit_failures = 3\ncircuit_cooldown = \"1h\"\ncircuit_max_cooldown = \"1h\"\n\
         retry_schedule = [\"1h\"]\n{extra}"
    ))
    .await;
    let failing = Receiver::scripted(|_, _| Reply::Status(503)).await;
    let app = server.create_app("Flaky").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": format!("{}/hook", failing.url) })).await;
    let mut msgs = Vec::new();
    for i in 0..n {
        msgs.push(server.send_message(&app, "order.created", json!({ "n": i })).await);
    }
    failing.wait_for(3, WAIT).await;
    wait_for_log(&server, "circuit open").await;
    (server, failing, app, ep, msgs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_tries_an_endpoint_with_an_open_circuit_at_once() {
    let (server, failing, app, ep, msgs) = open_circuit("", 3).await;

    // Held: a new message waits in the store instead of failing on its own.
    server.send_message(&app, "order.created", json!({ "n": 3 })).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(failing.received().len(), 3, "a message went out while the circuit was open");

    // A resend by hand says "try now": it goes out without waiting for the cool-down, and
    // so does the held message (the circuit starts over).
    let path = format!("/api/v1/app/{app}/msg/{}/endpoint/{ep}/resend", msgs[0]);
    let (status, body) = server.call("POST", &path, None).await;
    assert_eq!(status, 202, "{body}");
    let got = failing.wait_for(5, WAIT).await;
    assert!(got.iter().skip(3).any(|r| r.header("webhook-id") == msgs[0]), "the resent message was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_an_endpoint_sends_what_its_open_circuit_paused_at_once() {
    // One request at a time, so that the deliveries queued behind the first failures are
    // still in memory when the circuit opens: they are paused, due again after the
    // cool-down (an hour), and the failed ones are due for their retry in an hour too.
    let (server, rx, app, ep, msgs) = open_circuit("per_endpoint_in_flight = 1\n", 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let failed = rx.received().len();
    assert!(failed < msgs.len(), "{failed} attempts: nothing was paused");

    // The owner fixes the endpoint and says so with an update: everything waiting for it
    // goes out now, not in an hour.
    rx.set_script(|_, _| Reply::Status(200));
    let (status, body) = server
        .call("PATCH", &format!("/api/v1/app/{app}/endpoint/{ep}"), Some(json!({ "description": "fixed" })))
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let after: HashSet<String> =
            rx.received().iter().skip(failed).map(|r| r.header("webhook-id").to_string()).collect();
        if msgs.iter().all(|m| after.contains(m)) {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of {} delivered after the fix", after.len(), msgs.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_log(&server, "paused deliveries due now").await;
}
