//! Secrets stay secret; the development receiver rejects stale or forged deliveries.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_reach_the_logs() {
    let server = Server::start("log_level = \"trace\"\n[delivery]\nretry_schedule = [\"100ms\"]").await;
    let ok = Receiver::start().await;
    let failing = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let app = server.create_app("secrets").await;
    let secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMw==";
    let (ep, _) = server.create_endpoint(&app, json!({ "url": ok.url, "secret": secret })).await;
    server.create_endpoint(&app, json!({ "url": failing.url })).await;
    let rotated = "whsec_cm90YXRlZC1yb3RhdGVkLXJvdGF0ZWQtcm90YXRlZA==";
    let (status, _) = server
        .call("POST", &format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate"), Some(json!({ "key": rotated })))
        .await;
    assert_eq!(status, 200);
    // A transformation variable is a credential too: it goes into a header sent, never a log.
    let variable = "var-secret-var-secret-var-secret";
    let transformation = json!({
        "code": "function handler(w) { w.headers['X-Token'] = w.variables.token; return w }",
        "enabled": true,
        "variables": { "token": variable },
    });
    let (status, _) =
        server.call("PATCH", &format!("/api/v1/app/{app}/endpoint/{ep}/transformation"), Some(transformation)).await;
    assert_eq!(status, 204);
    let (status, portal) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{app}"), None).await;
    assert_eq!(status, 200);
    let app_token = portal["token"].as_str().unwrap().to_string();
    let (status, _) = server.call_as(&app_token, "GET", &format!("/api/v1/app/{app}/endpoint/{ep}/secret"), None).await;
    assert_eq!(status, 200);
    // A wrong token and a bad secret go through the error paths.
    let (status, _) = server.call_as("not-a-real-token-but-secret", "GET", "/api/v1/app/", None).await;
    assert_eq!(status, 401);
    let bad = "whsec_***this-secret-is-invalid***";
    let (status, body) = server
        .call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "url": ok.url, "secret": bad })))
        .await;
    assert_eq!(status, 422);
    assert!(!body.to_string().contains("this-secret-is-invalid"), "error echoes the secret: {body}");
    for i in 0..5 {
        server.send_message(&app, "a.b", json!({ "i": i })).await;
    }
    let got = ok.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("x-token"), variable, "the transformation ran");
    failing.wait_for(10, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let logs = server.logs();
    assert!(logs.len() > 1000, "expected trace logs, got {} bytes", logs.len());
    let b64 = |s: &str| s.trim_start_matches("whsec_").to_string();
    for needle in [
        ADMIN.to_string(),
        secret.into(),
        b64(secret),
        rotated.into(),
        b64(rotated),
        app_token,
        "not-a-real-token-but-secret".into(),
        "this-secret-is-invalid".into(),
        variable.into(),
    ] {
        assert!(!logs.contains(&needle), "the log contains a secret ({needle})");
    }
}

fn sign(secret: &str, id: &str, ts: i64, body: &str) -> String {
    let key = B64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_rejects_stale_and_forged_deliveries() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // On a port of its choosing (one picked here and released could be taken meanwhile),
    // which it says once it listens there.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        // A symmetric secret and an Ed25519 public key (of the seed 1..=32), as during a
        // rotation from one to the other.
        .args([
            "listen",
            "--port",
            "0",
            "--secret",
            secret,
            "--secret",
            "whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=",
            "--json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let base = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if let Some(addr) = line.split("receiving on ").nth(1) {
                return addr.trim().to_string();
            }
        }
        panic!("hooklane listen ended without saying where it listens");
    })
    .await
    .expect("hooklane listen did not start");
    // The rest of what it says is read, so that it never waits on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let client = reqwest::Client::new();
    let url = format!("{base}/hook");
    let body = r#"{"hello":"world"}"#;
    let now = chrono::Utc::now().timestamp();
    let post = |ts: i64, sig: String| {
        client
            .post(&url)
            .header("webhook-id", "msg_test")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
    };
    assert_eq!(post(now, sign(secret, "msg_test", now, body)).await.unwrap().status(), 200);
    // Older than the 5-minute tolerance, correctly signed: refused.
    assert_eq!(post(now - 400, sign(secret, "msg_test", now - 400, body)).await.unwrap().status(), 401);
    assert_eq!(post(now + 400, sign(secret, "msg_test", now + 400, body)).await.unwrap().status(), 401);
    // Signed with another secret: refused.
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(post(now, sign(other, "msg_test", now, body)).await.unwrap().status(), 401);
    // No signature at all: refused.
    assert_eq!(client.post(&url).body(body).send().await.unwrap().status(), 401);
    // `v1a`: signed by the key pair of the public key given, accepted; by another, refused.
    let ed25519 = |seed: [u8; 32], ts: i64| {
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        format!("v1a,{}", B64.encode(key.sign(format!("msg_test.{ts}.{body}").as_bytes()).to_bytes()))
    };
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    assert_eq!(post(now, ed25519(seed, now)).await.unwrap().status(), 200);
    assert_eq!(post(now - 400, ed25519(seed, now - 400)).await.unwrap().status(), 401);
    assert_eq!(post(now, ed25519([7; 32], now)).await.unwrap().status(), 401);
    // The same signature labelled `v1` is not taken.
    assert_eq!(post(now, ed25519(seed, now).replacen("v1a,", "v1,", 1)).await.unwrap().status(), 401);
    let _ = child.kill().await;
}

/// Slow clients (slowloris) cannot hold connections open: a request whose headers, or
/// whose body, stop arriving is cut off after `request_read_timeout`, on the API and on
/// the public inbound route alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start("request_read_timeout = \"1s\"").await;
    let addr = server.base.trim_start_matches("http://").to_string();
    let spec = json!({
        "name": "slow", "verification": { "type": "none" },
        "destinations": [{ "url": "https://example.com/hook" }],
    });
    let (status, source) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!(status, 201, "{source}");
    let source = source["id"].as_str().unwrap();
    let stalls = [
        // Headers that never end.
        "POST /api/v1/app HTTP/1.1\r\nhost: x\r\nx-slow: ".to_string(),
        // A body that stops after one of its 100 bytes, on the API and on an inbound source.
        format!("POST /api/v1/app HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"),
        format!("POST /in/{source} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{"),
    ];
    for stall in stalls {
        let started = Instant::now();
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(stall.as_bytes()).await.unwrap();
        // Whatever the server says before closing (a 408 or a 400), it closes: the read
        // reaches the end of the stream.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{stall:?}: the connection was still open after 10 s");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "{stall:?}: cut off before its time: {took:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{stall:?}: {answer}");
    }
    // A client that sends its request in time is served as usual.
    let (status, _) = server.call("GET", "/api/v1/app", None).await;
    assert_eq!(status, 200);
}

/// A transformation worker gives up, before its first job, what running JavaScript never
/// needs: it writes no file, opens few, starts no process, maps at most 1 GiB, dumps no
/// core, gains no privilege through what it runs and makes only the system calls a worker
/// needs (a second wall behind QuickJS, for a
/// fault of the engine). Read from the kernel's own view of the running worker.
#[test]
#[cfg(target_os = "linux")]
fn a_transformation_worker_runs_confined() {
    let mut worker = Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .arg("script-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a worker");
    let pid = worker.id();
    let read = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    let limit = |limits: &str, name: &str| -> Option<String> {
        let line = limits.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next().map(str::to_string)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut limits = read("limits");
    while limit(&limits, "Max file size").as_deref() != Some("0") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        limits = read("limits");
    }
    let status = read("status");
    // The worker waits on its stdin: closing it ends it.
    drop(worker.stdin.take());
    let _ = worker.wait();
    assert_eq!(limit(&limits, "Max file size").as_deref(), Some("0"), "{limits}");
    assert_eq!(limit(&limits, "Max core file size").as_deref(), Some("0"), "{limits}");
    assert_eq!(limit(&limits, "Max open files").as_deref(), Some("16"), "{limits}");
    assert_eq!(limit(&limits, "Max processes").as_deref(), Some("0"), "{limits}");
    assert_eq!(limit(&limits, "Max address space").as_deref(), Some("1073741824"), "{limits}");
    assert!(status.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])), "{status}");
    // Its system calls filtered (mode 2: a seccomp filter), on every thread.
    assert!(status.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "2"])), "{status}");
}

/// An endpoint pointing at the server's own API (with a token in its headers) would post a
/// message per delivery, each delivered back again, for ever: every delivery carries the
/// server's marker, and the API refuses it (508 `delivery_loop`), so the one message stays
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_sent_back_to_the_api_is_refused() {
    let server = Server::start("[delivery]\nretry_schedule = [\"100ms\"]").await;
    let app = server.create_app("loop").await;
    let url = server.url(&format!("/api/v1/app/{app}/msg/"));
    let headers = json!({ "Authorization": format!("Bearer {ADMIN}") });
    let transform = json!({ "eventType": "loop", "payload": { "n": 1 } });
    server.create_endpoint(&app, json!({ "url": url, "headers": headers, "transform": transform })).await;
    let msg = server.send_message(&app, "loop", json!({"n": 0})).await;
    let path = format!("/api/v1/app/{app}/attempt/msg/{msg}");
    let attempts = server.wait_until(&path, WAIT, |b| b["data"].as_array().is_some_and(|a| a.len() == 2)).await;
    for attempt in attempts["data"].as_array().unwrap() {
        assert_eq!(attempt["responseStatusCode"], 508, "{attempt}");
        assert!(attempt["response"].as_str().unwrap_or_default().contains("delivery_loop"), "{attempt}");
    }
    let (status, messages) = server.call("GET", &format!("/api/v1/app/{app}/msg/"), None).await;
    assert_eq!(status, 200);
    assert_eq!(messages["data"].as_array().map(Vec::len), Some(1), "{messages}");
}

/// A source forwarding to its own ingest URL: its first forward is taken (one turn through
/// a source is no loop: an application's endpoint may feed one of the server's sources),
/// the forward of that one is refused, and the request log stops at two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_forwarding_to_itself_stops_at_the_second_turn() {
    let server = Server::start("[delivery]\nretry_schedule = [\"100ms\"]").await;
    let placeholder = Receiver::start().await;
    let spec = json!({"name": "self", "verification": {"type": "none"}, "destinations": [{"url": placeholder.url}]});
    let (status, source) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!(status, 201, "{source}");
    let id = source["id"].as_str().unwrap().to_string();
    let ingest = source["ingestUrl"].as_str().unwrap().to_string();
    let patch = json!({"destinations": [{"id": source["destinations"][0]["id"], "url": ingest}]});
    let (status, out) = server.call("PATCH", &format!("/api/v1/source/{id}"), Some(patch)).await;
    assert_eq!(status, 200, "{out}");
    let posted = reqwest::Client::new().post(&ingest).json(&json!({"n": 0})).send().await.unwrap();
    assert_eq!(posted.status(), 200);
    let log = format!("/api/v1/source/{id}/request?limit=250");
    server.wait_until(&log, WAIT, |b| b["data"].as_array().is_some_and(|a| a.len() >= 2)).await;
    // The second message's forward and its retry are refused; nothing more comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, requests) = server.call("GET", &log, None).await;
    assert_eq!(requests["data"].as_array().map(Vec::len), Some(2), "{requests}");
    assert!(server.logs().contains("refused a delivery of this server sent back to it"));
}

/// A transformation's variable put into the path of the URL it sends to (a Slack-style URL
/// keeps its secret there) is sent, but kept out of the attempt log's URL, as it is out of
/// the log's response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_in_a_transformed_url_is_kept_out_of_the_attempt_log() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("slack").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let code =
        format!("function handler(w) {{ w.url = {} + '/services/' + w.variables.slack; return w }}", json!(rx.url));
    let transformation =
        json!({ "code": code, "enabled": true, "variables": { "slack": "T000/B000/SECRETSLACKTOKEN123" } });
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
    let (status, body) = server.call("PATCH", &path, Some(transformation)).await;
    assert_eq!(status, 204, "{body}");
    let msg = server.send_message(&app, "a.b", json!({})).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/services/T000/B000/SECRETSLACKTOKEN123", "sent where the code said");
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}"), WAIT, |b| {
            b["data"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let url = attempts["data"][0]["url"].as_str().unwrap_or_default();
    assert!(url.ends_with("/services/[redacted]"), "{url}");
    // An attempt that fails before any request (its host refused) records it so too.
    let refused = "function handler(w) { w.url = 'http://10.1.2.3/services/' + w.variables.slack; return w }";
    let transformation =
        json!({ "code": refused, "enabled": true, "variables": { "slack": "T000/B000/SECRETSLACKTOKEN123" } });
    assert_eq!(server.call("PATCH", &path, Some(transformation)).await.0, 204);
    let msg = server.send_message(&app, "a.b", json!({})).await;
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}"), WAIT, |b| {
            b["data"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let url = attempts["data"][0]["url"].as_str().unwrap_or_default();
    assert_eq!(url, "http://10.1.2.3/services/[redacted]", "{attempts}");
}
