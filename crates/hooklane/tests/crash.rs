//! Durability: a message acknowledged with 202 survives `kill -9` of the server and is
//! delivered after the restart.

mod common;

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
    rx.wait_for_ids(&acked, Duration::from_secs(30)).await;
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

    let (received, duplicates) = rx.wait_for_ids(&acked, Duration::from_secs(60)).await;
    eprintln!("acknowledged {}, received {received}, duplicates {duplicates}", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kill9_under_continuous_load_loses_nothing() {
    use rand::Rng;
    use std::sync::RwLock;

    let mut server = Server::start("").await;
    let rx = Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(5))).await;
    let app = server.create_app("chaos").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;

    // Clients read the current address each time: it changes with every restart.
    let base = Arc::new(RwLock::new(server.base.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (base, stop, app) = (base.clone(), stop.clone(), app.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let url = format!("{}/api/v1/app/{app}/msg/", base.read().unwrap());
                let resp = client
                    .post(url)
                    .header("authorization", format!("Bearer {ADMIN}"))
                    .json(&json!({ "eventType": "chaos", "payload": { "client": c, "i": i } }))
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 202 => {
                        if let Ok(body) = r.json::<serde_json::Value>().await {
                            acked.push(body["id"].as_str().unwrap_or_default().to_string());
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            acked
        }));
    }

    let kills = 4;
    for _ in 0..kills {
        let pause = rand::thread_rng().gen_range(300..1200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.restart_after_kill();
        *base.write().unwrap() = server.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    assert!(acked.len() > 100, "only {} messages acknowledged", acked.len());

    let (received, duplicates) = rx.wait_for_ids(&acked, Duration::from_secs(60)).await;
    eprintln!("{kills} kills: acknowledged {}, received {received}, duplicates {duplicates}", acked.len());
}

/// Every message id of `app`, page by page.
async fn message_ids(server: &Server, app: &str) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let mut iterator: Option<String> = None;
    loop {
        let path = match &iterator {
            Some(it) => format!("/api/v1/app/{app}/msg?limit=250&iterator={it}"),
            None => format!("/api/v1/app/{app}/msg?limit=250"),
        };
        let (status, page) = server.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        for m in page["data"].as_array().expect("data") {
            ids.insert(m["id"].as_str().expect("id").to_string());
        }
        if page["done"] == true {
            return ids;
        }
        iterator = page["iterator"].as_str().map(str::to_string);
    }
}

/// `hooklane backup` while the server takes messages: the copy holds every message
/// acknowledged before it started, and a server started on the copy serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_what_was_acknowledged() {
    let server = Server::start("").await;
    let app = server.create_app("backed-up").await;
    let before = post_many(&server, &app, 150, 4).await;
    assert_eq!(before.len(), 150);
    let copy = server.data_dir().join("backup.db");
    let config = server.data_dir().join("hooklane.toml");
    let backup = |to: std::path::PathBuf| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
                .arg("--config")
                .arg(&config)
                .arg("backup")
                .arg("--to")
                .arg(&to)
                .env_remove("HOOKLANE_DATABASE_URL")
                .output()
                .expect("run backup")
        })
    };
    // Messages keep coming until the copy is taken (the first batch before it starts).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (base, posting_app, stop) = (server.base.clone(), app.clone(), done.clone());
    let (started, first_batch) = tokio::sync::oneshot::channel();
    let during = tokio::spawn(async move {
        let mut acked = post_to(base.clone(), &posting_app, 20, 4).await;
        let _ = started.send(());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            acked.extend(post_to(base.clone(), &posting_app, 20, 4).await);
        }
        acked
    });
    first_batch.await.unwrap();
    let out = backup(copy.clone()).await.unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = during.await.unwrap();
    assert!(!during.is_empty());
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    let copied: usize = said
        .strip_prefix("backed up ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!((170..=150 + during.len()).contains(&copied), "{said}");

    // A server on the copy: everything acknowledged before the backup, and nothing that
    // was not acknowledged at all.
    let restored = Server::start(&format!("database_url = \"sqlite:{}\"", copy.display())).await;
    let ids = message_ids(&restored, &app).await;
    assert_eq!(ids.len(), copied);
    assert!(before.iter().all(|id| ids.contains(id)), "a message acknowledged before the backup is missing");
    let acked: std::collections::HashSet<&String> = before.iter().chain(&during).collect();
    assert!(ids.iter().all(|id| acked.contains(id)), "the copy holds only acknowledged messages");
    // The live server lost nothing either.
    assert_eq!(message_ids(&server, &app).await.len(), 150 + during.len());

    // A consumer that read the live server past the copy's end reads on from the restored
    // server's new messages: none of them is passed over.
    let (status, page) = server.call("GET", &format!("/api/v1/app/{app}/events?limit=250"), None).await;
    assert_eq!(status, 200);
    let mut iterator = page["iterator"].as_str().unwrap().to_string();
    let mut done_reading = page["done"] == true;
    while !done_reading {
        let (_, page) =
            server.call("GET", &format!("/api/v1/app/{app}/events?limit=250&iterator={iterator}"), None).await;
        iterator = page["iterator"].as_str().unwrap().to_string();
        done_reading = page["done"] == true;
    }
    let fresh = post_to(restored.base.clone(), &app, 3, 1).await;
    let (status, page) = restored.call("GET", &format!("/api/v1/app/{app}/events?iterator={iterator}"), None).await;
    assert_eq!(status, 200, "{page}");
    let read: Vec<&str> = page["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(read, fresh.iter().map(String::as_str).collect::<Vec<_>>(), "{page}");

    // A backup never overwrites; a missing database is an error, not an empty copy; and
    // PostgreSQL is left to its own tools.
    let again = backup(copy.clone()).await.unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["backup", "--to"])
        .arg(server.data_dir().join("other.db"))
        .env("HOOKLANE_DATABASE_URL", format!("sqlite:{}", server.data_dir().join("nothing-here.db").display()))
        .env_remove("HOOKLANE_CONFIG")
        .output()
        .unwrap();
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("no database at"));
    assert!(!server.data_dir().join("nothing-here.db").exists(), "no empty database was made");
    let pg = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["backup", "--to"])
        .arg(server.data_dir().join("pg.db"))
        .env("HOOKLANE_DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .env_remove("HOOKLANE_CONFIG")
        .output()
        .unwrap();
    assert!(!pg.status.success() && String::from_utf8_lossy(&pg.stderr).contains("pg_dump"));
}
