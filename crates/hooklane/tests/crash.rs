//! Durability: a message acknowledged with 202 survives `kill -9` of the server and is
//! delivered after the restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Posts `n` messages with `clients` concurrent clients; returns the acknowledged ids.
async fn post_many(server: &Server, app: &str, n: usize, clients: usize) -> Vec<String> {
    post_to(server.base.clone(), app, n, clients).await
}

struct ServerView {
    base: String,
    _dir: Arc<tempfile::TempDir>,
}

impl ServerView {
    async fn post(&self, app: &str, n: usize, clients: usize) -> Vec<String> {
        post_to(self.base.clone(), app, n, clients).await
    }
}

async fn post_to(base: String, app: &str, n: usize, clients: usize) -> Vec<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (base, client, next, app) = (base.clone(), client.clone(), next.clone(), app.to_string());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return acked;
                }
                let resp = client
                    .post(format!("{base}/api/v1/app/{app}/msg/"))
                    .header("authorization", format!("Bearer {ADMIN}"))
                    .json(&json!({ "eventType": "crash.test", "payload": { "i": i } }))
                    .send()
                    .await;
                // Only a 202 is an acknowledgement; anything else promises nothing.
                if let Ok(resp) = resp {
                    if resp.status().as_u16() == 202 {
                        if let Ok(body) = resp.json::<serde_json::Value>().await {
                            acked.push(body["id"].as_str().unwrap_or_default().to_string());
                        }
                    }
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_ack_loses_no_message() {
    let mut server = Server::start("").await;
    // The receiver refuses everything at first, so every delivery is still pending when
    // the server dies.
    let rx = Receiver::scripted(|_, _| Reply::Status(503)).await;
    let app = server.create_app("crash").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;

    let acked = post_many(&server, &app, 300, 16).await;
    assert_eq!(acked.len(), 300);
    server.restart_after_kill();

    rx.set_script(|_, _| Reply::Status(200));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let want: HashSet<&String> = acked.iter().collect();
    loop {
        let got = rx.received();
        let ok: HashSet<String> = got.iter().map(|r| r.header("webhook-id").to_string()).collect();
        let missing = want.iter().filter(|id| !ok.contains(id.as_str())).count();
        if missing == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{missing} acknowledged messages never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_delivery_resumes_every_pending_delivery() {
    let mut server = Server::start("").await;
    // Slow enough that the kill lands while deliveries are in flight.
    let rx = Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(200))).await;
    let app = server.create_app("crash2").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;

    let poster = {
        let (base, dir) = (server.base.clone(), server.dir.clone());
        let app = app.clone();
        tokio::spawn(async move {
            // A client of its own: the server handle stays with the test, which kills it.
            let view = ServerView { base, _dir: dir };
            view.post(&app, 2000, 8).await
        })
    };
    rx.wait_for(150, Duration::from_secs(30)).await;
    server.kill9();
    let acked = poster.await.unwrap();
    assert!(!acked.is_empty());
    server.restart_after_kill();

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = rx.received();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in &got {
            *seen.entry(r.header("webhook-id").to_string()).or_default() += 1;
        }
        let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
        if missing == 0 {
            let duplicates: usize = seen.values().map(|n| n - 1).sum();
            eprintln!("acknowledged {}, received {}, duplicates {duplicates}", acked.len(), got.len());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} of {} acknowledged messages never arrived",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
