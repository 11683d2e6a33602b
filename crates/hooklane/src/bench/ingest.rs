//! The load generator: sets up an application and an endpoint through the public API, then
//! posts messages with concurrent clients, recording when each POST left and when its 202
//! came back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::{json, Value};

use super::payload::{typed_message_body, MEASURED};

/// One message post as the client saw it.
pub struct Post {
    pub sent: Instant,
    /// When the 202 arrived, with the message id it gave; `None` if the post failed.
    pub accepted: Option<(Instant, String)>,
}

pub struct Api {
    client: reqwest::Client,
    /// One base URL per node; set-up goes to the first, posts are spread over all.
    bases: Vec<String>,
    auth: String,
}

impl Api {
    pub fn new(bases: &[&str], admin_token: &str) -> anyhow::Result<Api> {
        let client =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).tcp_nodelay(true).build()?;
        let bases = bases.iter().map(|b| b.trim_end_matches('/').to_string()).collect();
        Ok(Api { client, bases, auth: format!("Bearer {admin_token}") })
    }

    async fn post_json(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// `method` on `path` of the first server with a JSON body; its JSON answer (`null`
    /// when it has none).
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .client
            .request(method.clone(), format!("{}{path}", self.bases[0]))
            .header("authorization", &self.auth)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// What the first server's database already holds, named for a message: applications,
    /// inbound sources; `None` when it holds neither.
    pub async fn already_held(&self) -> anyhow::Result<Option<&'static str>> {
        for (path, what) in [("/api/v1/app/?limit=1", "applications"), ("/api/v1/source?limit=1", "inbound sources")] {
            let resp = self
                .client
                .get(format!("{}{path}", self.bases[0]))
                .header("authorization", &self.auth)
                .send()
                .await
                .with_context(|| format!("GET {path}"))?;
            let status = resp.status();
            // A `--server-bin` build from before inbound sources has none.
            if status == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            let text = resp.text().await?;
            if !status.is_success() {
                bail!("GET {path}: {status}: {text}");
            }
            let page: Value = serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON"))?;
            if !matches!(page["data"].as_array(), Some(data) if data.is_empty()) {
                return Ok(Some(what));
            }
        }
        Ok(None)
    }

    /// Sets and enables the endpoint's JavaScript transformation.
    pub async fn set_transformation(&self, app: &str, endpoint: &str, code: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/app/{app}/endpoint/{endpoint}/transformation");
        self.call(reqwest::Method::PATCH, &path, json!({ "code": code, "enabled": true })).await.map(drop)
    }

    /// Creates an application; returns its id.
    pub async fn create_app(&self, name: &str) -> anyhow::Result<String> {
        let out = self.post_json("/api/v1/app/", json!({ "name": name })).await?;
        Ok(out["id"].as_str().context("application id missing")?.to_string())
    }

    /// Creates an endpoint delivering messages of `event_type` to `url`; returns its id.
    pub async fn create_endpoint(&self, app: &str, url: &str, event_type: &str) -> anyhow::Result<String> {
        self.create_endpoint_with(app, url, event_type, json!({})).await
    }

    /// [`Api::create_endpoint`] with more settings (`extra`'s fields; nulls left out).
    pub async fn create_endpoint_with(
        &self,
        app: &str,
        url: &str,
        event_type: &str,
        extra: serde_json::Value,
    ) -> anyhow::Result<String> {
        let mut spec = json!({ "url": url, "description": "bench", "filterTypes": [event_type] });
        if let (Some(spec), serde_json::Value::Object(extra)) = (spec.as_object_mut(), extra) {
            spec.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
        }
        let out = self.post_json(&format!("/api/v1/app/{app}/endpoint/"), spec).await?;
        Ok(out["id"].as_str().context("endpoint id missing")?.to_string())
    }
}

#[derive(serde::Deserialize)]
struct MessageOut {
    id: String,
}

/// Posts one message per payload with `concurrency` clients; returns the posts in
/// sequence order.
pub async fn post_all(api: &Api, app: &str, payloads: &[Bytes], concurrency: usize) -> Vec<Post> {
    post_typed(api, app, payloads, concurrency, MEASURED).await
}

/// [`post_all`] with messages of another event type.
pub async fn post_typed(api: &Api, app: &str, payloads: &[Bytes], concurrency: usize, event_type: &str) -> Vec<Post> {
    let bodies: Arc<[Bytes]> = payloads.iter().map(|p| typed_message_body(event_type, p)).collect();
    let urls: Arc<[String]> = api.bases.iter().map(|b| format!("{b}/api/v1/app/{app}/msg/")).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|client_no| {
            let (client, auth) = (api.client.clone(), api.auth.clone());
            // Each client talks to one node, clients spread round-robin over the nodes.
            let url = urls[client_no % urls.len()].clone();
            let (bodies, next, failures) = (bodies.clone(), next.clone(), failures.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(seq) else { break };
                    let sent = Instant::now();
                    let result = client
                        .post(&url)
                        .header("authorization", &auth)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let accepted = match result {
                        Ok(resp) if resp.status().as_u16() == 202 => {
                            let bytes = resp.bytes().await.unwrap_or_default();
                            let acked = Instant::now();
                            let id = serde_json::from_slice::<MessageOut>(&bytes).ok().map(|m| (acked, m.id));
                            if id.is_none() && failures.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("bench: message {seq}: a 202 without a message id");
                            }
                            id
                        }
                        Ok(resp) => {
                            let status = resp.status();
                            let text = resp.text().await.unwrap_or_default();
                            if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("bench: message {seq}: {status}: {text}");
                            }
                            None
                        }
                        Err(e) => {
                            if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("bench: message {seq}: {e}");
                            }
                            None
                        }
                    };
                    mine.push((seq, Post { sent, accepted }));
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::with_capacity(bodies.len());
    for t in tasks {
        match t.await {
            Ok(mine) => all.extend(mine),
            Err(e) => eprintln!("bench: a client task failed: {e}"),
        }
    }
    all.sort_by_key(|(seq, _)| *seq);
    // The posts of a client task that failed count as failed posts, not as none at all.
    let mut posts: Vec<Post> = all.into_iter().map(|(_, p)| p).collect();
    let started = Instant::now();
    posts.resize_with(bodies.len().max(posts.len()), || Post { sent: started, accepted: None });
    posts
}
