//! The loopback receiver: answers 200 to every request (at once, or after a set delay) and records, per
//! `webhook-id`, when the first copy arrived and how many copies did.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::serve::ListenerExt;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub first: Instant,
    pub count: u32,
}

#[derive(Default)]
struct Recorder {
    arrivals: Mutex<HashMap<String, Arrival>>,
    /// Distinct ids seen, readable without the lock.
    distinct: AtomicUsize,
    /// How long each answer takes after the request arrived (a slow endpoint).
    delay: Duration,
}

pub struct Receiver {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Answers after `delay` (zero: at once); arrival times are taken before the delay.
    pub async fn start(delay: Duration) -> anyhow::Result<Receiver> {
        let recorder = Arc::new(Recorder { delay, ..Recorder::default() });
        // No body limit (axum's default is 2 MiB): `--payload-bytes` and a transform may make
        // deliveries larger, which would otherwise be refused and counted as lost.
        let app = axum::Router::new().fallback(receive).layer(DefaultBodyLimit::disable()).with_state(recorder.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("bench: receiver stopped: {e}");
            }
        });
        Ok(Receiver { addr, recorder, task })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Forgets everything recorded so far.
    pub fn reset(&self) {
        let mut map = self.recorder.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        map.clear();
        self.recorder.distinct.store(0, Ordering::Relaxed);
    }

    /// Waits until every id in `ids` has arrived; false on timeout.
    pub async fn wait_for_all(&self, ids: &[&str], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.recorder.distinct.load(Ordering::Relaxed) >= ids.len() {
                let map = self.recorder.arrivals.lock().unwrap_or_else(|p| p.into_inner());
                if ids.iter().all(|id| map.contains_key(*id)) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn arrivals(&self) -> HashMap<String, Arrival> {
        self.recorder.arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(r): State<Arc<Recorder>>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    let now = Instant::now();
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        let mut map = r.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(id) {
            Some(a) => a.count += 1,
            None => {
                map.insert(id.to_string(), Arrival { first: now, count: 1 });
                r.distinct.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    StatusCode::OK
}
