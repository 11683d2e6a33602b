//! The yardstick: a plain keep-alive HTTP client posting the same payloads straight to the
//! receiver, with as many concurrent clients as the hooklane run. It is the most this
//! machine's loopback, HTTP stack and receiver can carry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use bytes::Bytes;

/// Times the N requests are sent; the median rate is kept. One round of a few tenths of a
/// second is at the mercy of a single scheduling hiccup on a shared machine.
const ROUNDS: usize = 3;

pub struct RawRun {
    /// Median over the rounds.
    pub posts_per_s: f64,
}

pub async fn run(url: &str, payloads: &[Bytes], concurrency: usize) -> anyhow::Result<RawRun> {
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(concurrency).tcp_nodelay(true).build()?;
    let payloads: Arc<[Bytes]> = payloads.into();
    warm_up(&client, url, &payloads, concurrency).await;
    let mut rates = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        rates.push(one_round(&client, url, &payloads, concurrency, round).await?);
    }
    rates.sort_by(f64::total_cmp);
    Ok(RawRun { posts_per_s: rates[ROUNDS / 2] })
}

/// Posts every payload once with `concurrency` clients; returns requests per second.
async fn one_round(
    client: &reqwest::Client,
    url: &str,
    payloads: &Arc<[Bytes]>,
    concurrency: usize,
    round: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, payloads, next, url) = (client.clone(), payloads.clone(), next.clone(), url.to_string());
            tokio::spawn(async move {
                let mut errors = 0usize;
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let Some(payload) = payloads.get(seq) else { break };
                    // The same headers a delivery carries, so the receiver does the same work.
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("webhook-id", format!("raw_{round}_{seq}"))
                        .body(payload.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                        }
                        _ => errors += 1,
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        errors += t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if errors > 0 {
        bail!("raw client: {errors} of {} requests failed", payloads.len());
    }
    Ok(payloads.len() as f64 / elapsed)
}

/// Opens the keep-alive connections before the clock starts (a few requests per client,
/// not counted): the measured run is short, and connection setup would weigh on it.
async fn warm_up(client: &reqwest::Client, url: &str, payloads: &[Bytes], concurrency: usize) {
    let Some(payload) = payloads.first() else { return };
    for round in 0..4 {
        let requests = (0..concurrency).map(|i| {
            client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", format!("warmup_{round}_{i}"))
                .body(payload.clone())
                .send()
        });
        for r in futures::future::join_all(requests).await.into_iter().flatten() {
            let _ = r.bytes().await;
        }
    }
}
