//! Stopping `serve` (SIGTERM, Ctrl-C) while an API request is held open and deliveries are
//! in flight to a slow receiver: the deliveries drain while the connections do, within one
//! grace period, and none is started once the signal came; a second signal ends the process
//! at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(15);

/// Requests may take 15 s, so that one started during the shutdown would outlive it.
const SLOW: &str = "[delivery]\nrequest_timeout = \"15s\"\nlease = \"30s\"\n";

/// How long after the first delivery reached the receiver the test sends SIGTERM at most.
const SIGNAL_WITHIN: Duration = Duration::from_secs(6);

/// An API request held open: its headers and the start of a body the server waits for
/// (up to `request_read_timeout`, 30 s), which keeps the connection draining at shutdown.
async fn held_request(base: &str) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.expect("connect");
    let head = format!(
        "POST /api/v1/app HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    // Time for the server to read the headers and start waiting for the body.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tcp
}

fn sigterm(server: &Server) {
    let pid = server.pid().expect("running");
    let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}

/// A delivery in flight at SIGTERM is completed, a delivery due during the shutdown is not
/// started (it is sent after the restart), and the process exits within about the API's
/// drain (10 s), though a request holds it: the two drains ran one after the other, the
/// dispatcher claiming meanwhile, so that a delivery due then kept the process up to
/// another 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_drain_alongside_the_connections_and_none_starts_after_the_signal() {
    let mut server = Server::start(SLOW).await;
    let app = server.create_app("stopping").await;
    // The first delivery is still in flight at the signal, and the second not yet due: the
    // signal comes after a POST, a held request (300 ms) and starting `kill`, in far less
    // than SIGNAL_WITHIN even on a loaded machine. Once started, the second would outlast
    // the shutdown.
    let rx = Receiver::scripted(|_, r| {
        Reply::Hang(if r.json()["n"] == 2 { Duration::from_secs(14) } else { SIGNAL_WITHIN })
    })
    .await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let in_flight = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    rx.wait_for(1, WAIT).await;
    let due = chrono::Utc::now() + chrono::TimeDelta::from_std(SIGNAL_WITHIN).expect("a time delta");
    let body = json!({ "eventType": "a.b", "payload": { "n": 2 }, "deliverAt": due });
    let (status, scheduled) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body)).await;
    assert_eq!(status, 202, "{scheduled}");
    let _held = held_request(&server.base).await;

    let signalled = Instant::now();
    sigterm(&server);
    let exited = server.wait_exit(Duration::from_secs(30));
    let took = signalled.elapsed();
    assert!(exited, "still running 30 s after SIGTERM: {}", server.logs());
    let got = rx.received();
    assert_eq!(got.len(), 1, "a delivery was started after the signal: {got:?}");
    // About the API's drain (10 s). Drains one after the other, the second held by the
    // delivery started meanwhile (caught above however late the signal came), took 20 s
    // less the signal's delay (under a second, but for a very busy machine).
    assert!(took < Duration::from_secs(18), "it took {took:?} to stop: {}", server.logs());

    // Started again: the delivery in flight was recorded as delivered (not sent again), and
    // the one due during the shutdown is sent now.
    rx.set_script(|_, _| Reply::Status(200));
    let restarted = Server::start_in(server.dir.clone(), SLOW).await;
    let scheduled_id = scheduled["id"].as_str().expect("an id").to_string();
    rx.wait_for_ids(&[scheduled_id], WAIT).await;
    let attempts = restarted
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{in_flight}"), WAIT, |page| {
            page["data"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(attempts["data"][0]["responseStatusCode"], 200, "{attempts}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = rx.received().iter().filter(|r| r.header("webhook-id") == in_flight).count();
    assert_eq!(sent, 1, "the delivery in flight at the signal was sent again");
}

/// A second SIGTERM (or Ctrl-C) ends a shutdown that is waiting for a request held open:
/// at once (its own exit, status 130), where it was ignored and the wait went on for up to
/// 10 s more (then an exit with status 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut server = Server::start("").await;
    let _held = held_request(&server.base).await;
    sigterm(&server);
    // The first signal taken (two pending at once would be one) and the shutdown begun.
    let deadline = Instant::now() + WAIT;
    while !server.logs().contains("shutting down: letting in-flight deliveries finish") {
        assert!(Instant::now() < deadline, "the first signal did not begin the shutdown: {}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!server.wait_exit(Duration::from_millis(100)), "the request held open did not keep the shutdown waiting");
    sigterm(&server);
    let exit = server.wait_exit_status(Duration::from_secs(20));
    assert_eq!(exit.and_then(|e| e.code()), Some(130), "{exit:?}: {}", server.logs());
}
