//! Deletes what the store need not keep: idempotency keys past their expiry (Svix SDKs
//! send one with every POST, so the table would otherwise only grow), inbound request
//! records older than `[inbound] request_retention`, and messages older than
//! `message_retention` (with their deliveries and attempts) once none is pending; and
//! marks failed the background tasks whose node stopped while they ran.

use std::time::Duration;

use hooklane_core::Utc;
use hooklane_store::{DynStore, PruneMessages, Pruned};

/// Rows deleted per statement, so that no single delete holds the store's writer long.
const CHUNK: usize = 1000;

/// How long records are kept; zero keeps them forever.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub inbound_requests: Duration,
    pub messages: Duration,
}

pub async fn run(store: DynStore, every: Duration, retention: Retention) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match hooklane_server::tasks::fail_interrupted(&store).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(tasks = n, "background tasks whose node stopped while they ran are marked failed"),
            Err(e) => tracing::warn!(error = %e, "could not mark interrupted background tasks; will try again"),
        }
        match prune_all(&store, retention).await {
            Ok(total) if total != Pruned::default() => tracing::info!(
                idempotency_keys = total.idempotency_keys,
                inbound_requests = total.inbound_requests,
                messages = total.messages,
                tokens = total.tokens,
                background_tasks = total.tasks,
                "housekeeping deleted expired records"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; it will try again"),
        }
    }
}

/// `now - keep`, or `None` to keep everything.
fn cutoff(now: hooklane_core::DateTime<Utc>, keep: Duration) -> Option<hooklane_core::DateTime<Utc>> {
    if keep.is_zero() {
        return None;
    }
    chrono::Duration::from_std(keep).ok().map(|d| now - d)
}

/// Deletes chunk after chunk until a round finds less than a chunk of every kind and has
/// looked at every old message.
async fn prune_all(store: &DynStore, retention: Retention) -> hooklane_store::StoreResult<Pruned> {
    let mut total = Pruned::default();
    // Where the old messages are looked for: from the oldest at every call, past those
    // that wait for a delivery within it.
    let mut after = String::new();
    loop {
        let now = Utc::now();
        let messages = cutoff(now, retention.messages).map(|before| PruneMessages { before, after: after.clone() });
        let round = store.prune(now, cutoff(now, retention.inbound_requests), messages, CHUNK).await?;
        total.idempotency_keys += round.idempotency_keys;
        total.inbound_requests += round.inbound_requests;
        total.messages += round.messages;
        total.tokens += round.tokens;
        total.tasks += round.tasks;
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "idempotency_key")
            .increment(round.idempotency_keys);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "inbound_request")
            .increment(round.inbound_requests);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "message").increment(round.messages);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "token").increment(round.tokens);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "background_task").increment(round.tasks);
        let chunk = CHUNK as u64;
        let counts = [round.idempotency_keys, round.inbound_requests, round.messages, round.tokens, round.tasks];
        match round.messages_resume {
            Some(resume) => after = resume,
            None if counts.iter().all(|n| *n < chunk) => return Ok(total),
            None => {}
        }
        // Let other writes through between chunks.
        tokio::task::yield_now().await;
    }
}
