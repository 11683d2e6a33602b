//! Receivers that misbehave: each fault ends in a recorded failed attempt (and a retry), the
//! engine never stalls, and a healthy endpoint next to the faulty one keeps receiving.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Reads the request, then resets the connection.
    Reset,
    /// Accepts and reads, never answers (holds the connection until the client closes it,
    /// or for [`FAULT_LASTS`]).
    Hang,
    /// Answers 500 with a body that trickles in one byte every 100 ms (for 100 s).
    Trickle,
    /// Answers with a 10 MB body.
    Huge(u16),
    /// Answers a redirect to another (healthy) receiver.
    Redirect,
    /// Answers bytes that are not HTTP.
    Garbage,
}

/// The request timeout the faults are tested with: long enough for a loaded machine to
/// deliver the healthy endpoint's messages while the faulty endpoint's requests still hang
/// (a healthy endpoint waiting for them to time out would be served only after that).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a hanging fault holds its connection at most: well past [`REQUEST_TIMEOUT`], so
/// that only the timeout ends its attempts.
const FAULT_LASTS: Duration = Duration::from_secs(60);

/// A raw TCP server that misbehaves the same way on every connection: its URL, and how many
/// of its hanging connections the client has given up on (closed) so far.
async fn faulty(fault: Fault, redirect_to: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicUsize::new(0));
    let counted = cut.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (redirect_to, cut) = (redirect_to.clone(), counted.clone());
            tokio::spawn(async move { misbehave(socket, fault, &redirect_to, &cut).await });
        }
    });
    (format!("http://{addr}/hook"), cut)
}

/// Reads one whole request: headers and the `content-length` body. Closing a socket with
/// unread bytes makes the kernel send a reset, which can destroy a response already written
/// before the client reads it, so every byte the client sent is consumed first.
async fn read_request(socket: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = Vec::new();
    let header_end = loop {
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&seen[..header_end]).to_ascii_lowercase();
    let body_len = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while seen.len() < header_end + body_len {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// Reads until the client closes the connection (nothing more comes from it once its
/// request is read: a read ends only then).
async fn until_closed(from_client: &mut (impl AsyncReadExt + Unpin)) {
    let mut buf = [0u8; 1024];
    while matches!(from_client.read(&mut buf).await, Ok(n) if n > 0) {}
}

async fn misbehave(mut socket: TcpStream, fault: Fault, redirect_to: &str, cut: &AtomicUsize) {
    read_request(&mut socket).await;
    match fault {
        Fault::Reset => {
            let _ = socket.set_zero_linger();
            drop(socket);
        }
        Fault::Hang => {
            if tokio::time::timeout(FAULT_LASTS, until_closed(&mut socket)).await.is_ok() {
                cut.fetch_add(1, Ordering::SeqCst);
            }
        }
        Fault::Trickle => {
            let (mut from_client, mut to_client) = socket.split();
            let trickle = async {
                // (A failing answer: one of 200 stands however its body ends, see delivery.rs.)
                let head = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1000\r\n\r\n";
                let _ = to_client.write_all(head).await;
                for _ in 0..1000 {
                    if to_client.write_all(b"x").await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // (Over, all written: the client was not cut off.)
                std::future::pending::<()>().await;
            };
            tokio::select! {
                _ = until_closed(&mut from_client) => {}
                _ = trickle => {}
            }
            cut.fetch_add(1, Ordering::SeqCst);
        }
        Fault::Huge(status) => {
            let size = 10 * 1024 * 1024;
            let head = format!("HTTP/1.1 {status} X\r\ncontent-length: {size}\r\n\r\n");
            let _ = socket.write_all(head.as_bytes()).await;
            let chunk = vec![b'z'; 64 * 1024];
            for _ in 0..(size / chunk.len()) {
                if socket.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        }
        Fault::Redirect => {
            let head = format!(
                "HTTP/1.1 302 Found\r\nlocation: {redirect_to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = socket.write_all(head.as_bytes()).await;
        }
        Fault::Garbage => {
            let _ = socket.write_all(b"this is not http at all\r\n\r\n").await;
        }
    }
}

/// Runs one fault against a server with a [`REQUEST_TIMEOUT`] and a one-retry schedule;
/// returns the attempts recorded for the faulty endpoint (newest first).
async fn run(fault: Fault) -> Vec<Value> {
    let server = Server::start(&format!(
        "[delivery]\nrequest_timeout = \"{}s\"\nconnect_timeout = \"5s\"\nlease = \"40s\"\nretry_schedule = [\"300ms\"]",
        REQUEST_TIMEOUT.as_secs()
    ))
    .await;
    let healthy = Receiver::start().await;
    let (bad_url, cut) = faulty(fault, format!("{}/redirected", healthy.url)).await;
    let app = server.create_app("faults").await;
    let (bad, _) = server.create_endpoint(&app, json!({ "url": bad_url, "filterTypes": ["bad"] })).await;
    server.create_endpoint(&app, json!({ "url": healthy.url, "filterTypes": ["good"] })).await;

    for i in 0..3 {
        server.send_message(&app, "bad", json!({ "i": i })).await;
    }
    // The healthy endpoint is served while the faulty one misbehaves: a hanging fault's
    // requests are all still open (none timed out yet) when its messages have arrived.
    for i in 0..20 {
        server.send_message(&app, "good", json!({ "i": i })).await;
    }
    healthy.wait_for(20, Duration::from_secs(30)).await;
    if matches!(fault, Fault::Hang | Fault::Trickle) {
        let cut = cut.load(Ordering::SeqCst);
        assert_eq!(cut, 0, "{fault:?} held up a healthy endpoint: served once {cut} hanging requests had timed out");
    }

    // Three messages, two attempts each, then given up.
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/endpoint/{bad}?limit=250"), Duration::from_secs(90), |b| {
            b["data"].as_array().unwrap().len() >= 6
        })
        .await;
    let list = server.call("GET", &format!("/api/v1/app/{app}/msg/?event_types=bad"), None).await.1;
    for m in list["data"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        server
            .wait_until(&format!("/api/v1/app/{app}/msg/{id}/endpoint"), Duration::from_secs(10), |b| {
                b["data"][0]["status"] == 2
            })
            .await;
    }
    assert!(healthy.received().iter().all(|r| r.path != "/redirected"), "{fault:?}: a redirect was followed");
    attempts["data"].as_array().unwrap().clone()
}

fn assert_all(attempts: &[Value], what: &str, check: impl Fn(&Value) -> bool) {
    assert_eq!(attempts.len(), 6, "{what}: {attempts:?}");
    for a in attempts {
        assert_eq!(a["status"], 2, "{what}: {a}");
        assert!(check(a), "{what}: {a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset() {
    let attempts = run(Fault::Reset).await;
    assert_all(&attempts, "reset", |a| a["responseStatusCode"] == 0 && !a["response"].as_str().unwrap().is_empty());
}

/// A hanging fault's attempt was cut at its timeout ([`REQUEST_TIMEOUT`]): it took well less
/// than the fault lasts ([`FAULT_LASTS`], or the trickle's 100 s).
const CUT_BEFORE_MS: i64 = 30_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_then_hang() {
    let attempts = run(Fault::Hang).await;
    assert_all(&attempts, "hang", |a| {
        a["responseStatusCode"] == 0
            && a["response"].as_str().unwrap().contains("timed out")
            && a["responseDurationMs"].as_i64().unwrap() < CUT_BEFORE_MS
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_trickle_body() {
    let attempts = run(Fault::Trickle).await;
    // Cut at the request's deadline, its status kept.
    assert_all(&attempts, "trickle", |a| {
        a["responseStatusCode"] == 500
            && a["response"].as_str().unwrap().contains("timed out")
            && a["responseDurationMs"].as_i64().unwrap() < CUT_BEFORE_MS
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_response_is_capped() {
    let attempts = run(Fault::Huge(500)).await;
    assert_all(&attempts, "huge", |a| {
        a["responseStatusCode"] == 500 && a["response"].as_str().unwrap().len() == 16 * 1024
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_is_not_followed() {
    let attempts = run(Fault::Redirect).await;
    assert_all(&attempts, "redirect", |a| a["responseStatusCode"] == 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_http_response() {
    let attempts = run(Fault::Garbage).await;
    assert_all(&attempts, "garbage", |a| a["responseStatusCode"] == 0);
}
