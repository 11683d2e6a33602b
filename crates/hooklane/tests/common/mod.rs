//! Test harness: starts the real `hooklane` binary on 127.0.0.1 and real HTTP receivers on
//! loopback, and talks to both over HTTP.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Notify;

pub const ADMIN: &str = "test-admin-token-0123456789";

/// Settings every test server gets: loopback allowed, quick retries.
const BASE_CONFIG: &str = r#"
listen = "127.0.0.1:0"
admin_token = "test-admin-token-0123456789"
log_level = "info"
[delivery]
allow_networks = ["127.0.0.0/8"]
retry_schedule = ["200ms", "400ms", "800ms"]
retry_jitter = 0.0
request_timeout = "5s"
connect_timeout = "2s"
lease = "30s"
poll_interval = "100ms"
"#;

/// A running `hooklane serve` process with its own data directory.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub dir: Arc<tempfile::TempDir>,
    config_path: PathBuf,
    pub client: reqwest::Client,
    stderr_path: PathBuf,
    /// Environment variables the process is started with, beside the test's own.
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server; `extra` is TOML merged over the base config (top-level keys first,
    /// then `[delivery]` keys under a `[delivery]` header of its own, if any).
    pub async fn start(extra: &str) -> Server {
        Server::start_with_env(extra, &[]).await
    }

    /// Starts a server with these environment variables set.
    pub async fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Server {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut server = Server::prepare(dir, extra);
        server.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        server.spawn();
        server
    }

    /// Starts a server on an existing data directory (to restart after a kill).
    pub async fn start_in(dir: Arc<tempfile::TempDir>, extra: &str) -> Server {
        let mut server = Server::prepare(dir, extra);
        server.spawn();
        server
    }

    /// Writes the configuration; the process is not started yet.
    fn prepare(dir: Arc<tempfile::TempDir>, extra: &str) -> Server {
        let config_path = dir.path().join("hooklane.toml");
        let db = dir.path().join("data").join("hooklane.db");
        let config = merge_config(&format!("database_url = \"sqlite:{}\"\n{BASE_CONFIG}", db.display()), extra);
        std::fs::write(&config_path, config).expect("write config");
        let stderr_path = dir.path().join(format!("stderr-{}.log", Instant::now().elapsed().as_nanos()));
        Server {
            child: None,
            base: String::new(),
            dir,
            config_path,
            client: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            stderr_path,
            env: Vec::new(),
        }
    }

    fn spawn(&mut self) {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        self.stderr_path = self.dir.path().join(format!("stderr-{n}.log"));
        let stderr = std::fs::File::create(&self.stderr_path).expect("stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("HOOKLANE_CONFIG")
            .env_remove("HOOKLANE_DATABASE_URL")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn hooklane");
        // Read in a thread of its own (a read would block past any deadline), which keeps
        // draining stdout to its end so that the child never blocks on a full pipe.
        let stdout = child.stdout.take().expect("stdout");
        let (sent, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sent.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut base = None;
        while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if let Some(rest) = line.strip_prefix("hooklane listening on ") {
                base = Some(rest.trim().to_string());
                break;
            }
        }
        let Some(base) = base else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hooklane did not start within 30 s; stderr:\n{}",
                std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
            )
        };
        self.base = base;
        self.child = Some(child);
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        self.child.is_none() || self.wait_exit_status(timeout).is_some()
    }

    /// Waits up to `timeout` for the running process to exit by itself: how it exited, or
    /// `None` if it is still running (or was not).
    pub fn wait_exit_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.as_mut()?.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                _ if Instant::now() >= deadline => return None,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// SIGKILL then start again on the same data directory and configuration.
    pub fn restart_after_kill(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// From now on the server listens where it listens now, across restarts (a client that
    /// reconnects finds it again): its configuration names the port it was given.
    pub fn keep_address(&self) {
        let addr = self.base.trim_start_matches("http://");
        let config = std::fs::read_to_string(&self.config_path).expect("config");
        let kept: Vec<String> = config
            .lines()
            .map(|l| if l.starts_with("listen") { format!("listen = \"{addr}\"") } else { l.to_string() })
            .collect();
        std::fs::write(&self.config_path, kept.join("\n")).expect("write config");
    }

    /// Everything the server wrote to stderr so far (its log).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("stderr-") {
                    out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    /// The configuration file the server was started with.
    pub fn config_file(&self) -> &Path {
        &self.config_path
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with the admin token; returns status and JSON body (Null if empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(ADMIN, method, path, body).await
    }

    pub async fn call_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().expect("method"), self.url(path))
            .header("authorization", format!("Bearer {token}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        read(resp).await
    }

    /// A full-access application token for `app`, as its portal link carries it.
    pub async fn app_token(&self, app: &str) -> String {
        let (status, out) = self.call("POST", &format!("/api/v1/auth/app-portal-access/{app}"), None).await;
        assert_eq!(status, 200, "{out}");
        out["token"].as_str().expect("token").to_string()
    }

    /// Creates a polling endpoint of `app` with the uid `uid`; answers its id.
    pub async fn create_polling_endpoint(&self, app: &str, uid: &str) -> String {
        let spec = json!({ "polling": true, "uid": uid });
        let (status, ep) = self.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(spec)).await;
        assert_eq!(status, 201, "{ep}");
        ep["id"].as_str().expect("endpoint id").to_string()
    }

    /// Rotates the key of `app`'s polling endpoint `ep` (id or uid) with `body`; answers
    /// the new key.
    pub async fn rotate_poller_key(&self, app: &str, ep: &str, body: Value) -> String {
        let path = format!("/api/v1/auth/app/{app}/poller/{ep}/token/rotate");
        let (status, out) = self.call("POST", &path, Some(body)).await;
        assert_eq!(status, 200, "{out}");
        out["token"].as_str().expect("token").to_string()
    }

    pub async fn create_app(&self, name: &str) -> String {
        let (status, body) = self.call("POST", "/api/v1/app/", Some(json!({ "name": name }))).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("app id").to_string()
    }

    /// Creates an endpoint; returns (endpoint id, secret).
    pub async fn create_endpoint(&self, app: &str, spec: Value) -> (String, String) {
        let (status, body) = self.call("POST", &format!("/api/v1/app/{app}/endpoint/"), Some(spec)).await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().expect("endpoint id").to_string();
        let (status, secret) = self.call("GET", &format!("/api/v1/app/{app}/endpoint/{id}/secret/"), None).await;
        assert_eq!(status, 200, "{secret}");
        (id, secret["key"].as_str().expect("secret").to_string())
    }

    /// The server's `/metrics` text (read with the admin token).
    pub async fn metrics(&self) -> String {
        let resp = self.client.get(self.url("/metrics")).bearer_auth(ADMIN).send().await.expect("GET /metrics");
        resp.text().await.expect("metrics body")
    }

    pub async fn send_message(&self, app: &str, event_type: &str, payload: Value) -> String {
        let body = json!({ "eventType": event_type, "payload": payload });
        let (status, out) = self.call("POST", &format!("/api/v1/app/{app}/msg/"), Some(body)).await;
        assert_eq!(status, 202, "{out}");
        out["id"].as_str().expect("msg id").to_string()
    }

    /// Polls `GET path` until `done(body)` or the timeout; returns the last body.
    pub async fn wait_until(&self, path: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.call("GET", path, None).await;
            if status == 200 && done(&body) {
                return body;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting on {path}; last answer {status}: {body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Takes the first whole Server-Sent Event with an `id` off the front of `buffer` (what was
/// read of a stream so far; a blank line ends an event): its id and its `data` as JSON.
/// Comments (keep-alives) before it are taken off too; `None` until a whole event is there.
pub fn take_sse_event(buffer: &mut String) -> Option<(String, Value)> {
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let (mut id, mut data) = (None, String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if let Some(id) = id {
            return Some((id, serde_json::from_str(&data).expect("data is JSON")));
        }
    }
    None
}

pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, body)
}

/// Places `extra`'s top-level keys before the base's tables and its `[delivery]` keys in
/// the base's `[delivery]` table, so TOML sees each table once.
fn merge_config(base: &str, extra: &str) -> String {
    let (extra_top, extra_delivery) = match extra.split_once("[delivery]") {
        Some((top, delivery)) => (top, delivery),
        None => (extra, ""),
    };
    let (base_top, base_delivery) = base.split_once("[delivery]").expect("base has [delivery]");
    let override_keys = |over: &str, base: &str| -> String {
        let keys: Vec<&str> =
            over.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k.trim())).filter(|k| !k.is_empty()).collect();
        base.lines()
            .filter(|l| l.split_once('=').map(|(k, _)| !keys.contains(&k.trim())).unwrap_or(true))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "{}\n{}\n[delivery]\n{}\n{}\n",
        override_keys(extra_top, base_top),
        extra_top,
        override_keys(extra_delivery, base_delivery),
        extra_delivery
    )
}

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// What a receiver answers.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Status with one extra header (e.g. `Retry-After`).
    WithHeader(u16, &'static str, String),
    /// Wait this long before answering 200.
    Hang(Duration),
    /// Status with a body (an echo of what was received, say).
    WithBody(u16, String),
    /// Wait this long, then answer 503 with a `Retry-After` date this many seconds after
    /// the answer.
    LateRetryAt(Duration, i64),
    /// Hold the request until the gate is opened, then answer with this status.
    Held(Gate, u16),
}

/// Where requests answered [`Reply::Held`] wait until the test opens it (once open, it
/// stays open: requests arriving later go through at once).
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }

    pub fn open(&self) {
        self.0.close();
    }

    pub fn is_open(&self) -> bool {
        self.0.is_closed()
    }

    async fn pass(&self) {
        // (No permit is ever added: an acquire ends when the semaphore is closed.)
        let _ = self.0.acquire().await;
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

type Script = Box<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

struct ReceiverState {
    log: Mutex<Vec<Received>>,
    script: Mutex<Script>,
    arrived: Notify,
}

/// An HTTP receiver on 127.0.0.1 that records every request and answers by script.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> Receiver {
        Receiver::scripted(|_, _| Reply::Status(200)).await
    }

    /// A receiver that answers `script(n, request)` to its n-th request (0-based).
    pub async fn scripted(script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        Receiver::serve(listener, script)
    }

    /// A receiver answering 200 on a socket bound but not listening yet: e.g. one holding the
    /// port an endpoint pointed at while nothing listened there (connections to it were
    /// refused, and no other socket could take the port meanwhile).
    pub async fn start_on_socket(socket: tokio::net::TcpSocket) -> Receiver {
        let listener = socket.listen(1024).expect("listen on the socket held");
        Receiver::serve(listener, |_, _| Reply::Status(200))
    }

    fn serve(
        listener: tokio::net::TcpListener,
        script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let state = Arc::new(ReceiverState {
            log: Mutex::new(Vec::new()),
            script: Mutex::new(Box::new(script)),
            arrived: Notify::new(),
        });
        let app = axum::Router::new().fallback(receive).with_state(state.clone());
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url: format!("http://{addr}"), state }
    }

    pub fn set_script(&self, script: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) {
        *self.state.script.lock().unwrap() = Box::new(script);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// Waits until every id in `acked` arrived as a `webhook-id` (panics after `timeout`);
    /// returns (requests received, duplicates among them).
    pub async fn wait_for_ids(&self, acked: &[String], timeout: Duration) -> (usize, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for r in &got {
                *seen.entry(r.header("webhook-id")).or_default() += 1;
            }
            let missing = acked.iter().filter(|id| !seen.contains_key(id.as_str())).count();
            if missing == 0 {
                let duplicates: usize = seen.values().map(|n| n - 1).sum();
                return (got.len(), duplicates);
            }
            assert!(Instant::now() < deadline, "{missing} of {} acknowledged messages never arrived", acked.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until at least `n` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("receiver got {} requests, expected {n}", got.len());
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }
}

async fn receive(
    State(s): State<Arc<ReceiverState>>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rec = Received {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    let reply = {
        let mut log = s.log.lock().unwrap();
        let n = log.len();
        let reply = (s.script.lock().unwrap())(n, &rec);
        log.push(rec);
        reply
    };
    s.arrived.notify_waiters();
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::WithHeader(code, name, value) => {
            (StatusCode::from_u16(code).unwrap(), [(name, value)], "").into_response()
        }
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
        Reply::WithBody(code, body) => (StatusCode::from_u16(code).unwrap(), body).into_response(),
        Reply::Held(gate, code) => {
            gate.pass().await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
        Reply::LateRetryAt(d, secs) => {
            tokio::time::sleep(d).await;
            let at = hooklane_core::Utc::now() + chrono::Duration::seconds(secs);
            let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", date)], "").into_response()
        }
    }
}

/// An implementation of the Standard Webhooks check written from the spec, independent of
/// hooklane's own code: HMAC-SHA256 over `id.timestamp.body` with the base64 key after
/// `whsec_`; the header holds space-separated `v1,<base64>` signatures.
pub fn signature_valid(secret: &str, received: &Received) -> bool {
    let key = B64.decode(secret.trim_start_matches("whsec_")).expect("secret base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(received.header("webhook-id").as_bytes());
    mac.update(b".");
    mac.update(received.header("webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&received.body);
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    received.header("webhook-signature").split(' ').any(|s| s == expected)
}

/// The asymmetric check of the same spec, independent of hooklane's code too: an Ed25519
/// signature of `id.timestamp.body` under the public key after `whpk_`, given in the header
/// as `v1a,<base64>`.
pub fn ed25519_signature_valid(public_key: &str, received: &Received) -> bool {
    let key = B64.decode(public_key.strip_prefix("whpk_").expect("a whpk_ key")).expect("public key base64");
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key.try_into().expect("32 bytes")).expect("public key");
    let mut content =
        format!("{}.{}.", received.header("webhook-id"), received.header("webhook-timestamp")).into_bytes();
    content.extend_from_slice(&received.body);
    received.header("webhook-signature").split(' ').any(|s| {
        let Some(b64) = s.strip_prefix("v1a,") else { return false };
        let Ok(Ok(bytes)) = B64.decode(b64).map(<[u8; 64]>::try_from) else { return false };
        key.verify_strict(&content, &ed25519_dalek::Signature::from_bytes(&bytes)).is_ok()
    })
}

// --- FIFO lanes

/// How long [`lane_receiver`] takes to answer a request it accepts.
pub const LANE_HANG: Duration = Duration::from_millis(40);

/// A receiver for ordering tests: it fails the first two attempts of the message whose
/// payload has `"n": 2` at once, and takes [`LANE_HANG`] to accept every other request.
pub async fn lane_receiver() -> Receiver {
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Receiver::scripted(move |_, r| {
        if r.json()["n"] == 2 && failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            Reply::Status(500)
        } else {
            Reply::Hang(LANE_HANG)
        }
    })
    .await
}

/// Posts messages `{"n": 0}` … `{"n": count-1}` one after the other (each acknowledged
/// before the next is posted), to the nodes in turn.
pub async fn post_in_turn(nodes: &[&Server], app: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        ids.push(nodes[n % nodes.len()].send_message(app, "order.updated", json!({ "n": n })).await);
    }
    ids
}

/// What a [`lane_receiver`] saw: the payloads' `n` in arrival order, and how many requests
/// arrived before the one before them was answered.
pub fn lane_log(received: &[Received]) -> (Vec<i64>, usize) {
    let order: Vec<i64> = received.iter().map(|r| r.json()["n"].as_i64().unwrap_or(-1)).collect();
    let mut failures_seen = 0;
    let mut overlaps = 0;
    for (i, pair) in received.windows(2).enumerate() {
        let failed = order[i] == 2 && failures_seen < 2;
        failures_seen += usize::from(order[i] == 2);
        // An accepted request is answered LANE_HANG after it arrived (a little slack for
        // timer granularity); the next one may only come after that.
        if !failed && pair[1].at.duration_since(pair[0].at) < LANE_HANG - Duration::from_millis(3) {
            overlaps += 1;
        }
    }
    (order, overlaps)
}

/// How long a [`Forwarder`] is waited for.
const FORWARD_WAIT: Duration = Duration::from_secs(15);

/// A running `hooklane forward`, its printed lines (standard output and error) collected.
pub struct Forwarder {
    pub child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Forwarder {
    /// `hooklane forward` with `args`, none of its settings taken from the environment.
    pub fn start(args: &[&str]) -> Forwarder {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .arg("forward")
            .args(args)
            .env_remove("HOOKLANE_TOKEN")
            .env_remove("HOOKLANE_URL")
            .env_remove("HOOKLANE_FORWARD_SECRET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn hooklane forward");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (sink, err_sink) = (lines.clone(), lines.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                err_sink.lock().unwrap().push(line);
            }
        });
        Forwarder { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a printed line satisfies `found`; panics after 15 s.
    pub async fn wait_for_line(&self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + FORWARD_WAIT;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| found(l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "no line {what}: {:?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the command says it is connected `n` times; panics after 15 s.
    pub async fn connected(&self, n: usize) {
        let deadline = Instant::now() + FORWARD_WAIT;
        while self.lines().iter().filter(|l| l.contains("connected to")).count() < n {
            assert!(Instant::now() < deadline, "not connected: {:?}", self.lines());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The value of an unlabelled metric in a `/metrics` text, if it is there.
pub fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until `n` readers wait on `server`: its `hooklane_waiting_readers` gauge, which
/// counts the long-polls (with a `wait`) and event streams holding a place on that node (in
/// a cluster, ask the node the reader is on); panics after 15 s. A long-poll takes its place
/// once it has read where its consumer or subscription stands, just before its first read
/// of the stream: a seek made after this moves nothing under it, and a message posted after
/// this is one it waits for (but for that one read, a few milliseconds, still racing it).
pub async fn waiting_readers(server: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = server.metrics().await;
        if metric_value(&metrics, "hooklane_waiting_readers") == Some(n as f64) {
            return;
        }
        assert!(Instant::now() < deadline, "not {n} readers waiting: {metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
