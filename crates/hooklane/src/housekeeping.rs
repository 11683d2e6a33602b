//! Deletes what the store need not keep: idempotency keys past their expiry (Svix SDKs
//! send one with every POST, so the table would otherwise only grow) and inbound request
//! records older than `[inbound] request_retention`.

use std::time::Duration;

use hooklane_core::Utc;
use hooklane_store::{DynStore, Pruned};

/// Rows deleted per statement, so that no single delete holds the store's writer long.
const CHUNK: usize = 1000;

pub async fn run(store: DynStore, every: Duration, request_retention: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match prune_all(&store, request_retention).await {
            Ok(total) if total != Pruned::default() => tracing::info!(
                idempotency_keys = total.idempotency_keys,
                inbound_requests = total.inbound_requests,
                "housekeeping deleted expired records"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; it will try again"),
        }
    }
}

/// Deletes chunk after chunk until a round finds less than a chunk of either kind.
async fn prune_all(store: &DynStore, request_retention: Duration) -> hooklane_store::StoreResult<Pruned> {
    let mut total = Pruned::default();
    loop {
        let now = Utc::now();
        let before = (!request_retention.is_zero())
            .then(|| chrono::Duration::from_std(request_retention).ok().map(|d| now - d))
            .flatten();
        let round = store.prune(now, before, CHUNK).await?;
        total.idempotency_keys += round.idempotency_keys;
        total.inbound_requests += round.inbound_requests;
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "idempotency_key")
            .increment(round.idempotency_keys);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "inbound_request")
            .increment(round.inbound_requests);
        if round.idempotency_keys < CHUNK as u64 && round.inbound_requests < CHUNK as u64 {
            return Ok(total);
        }
        // Let other writes through between chunks.
        tokio::task::yield_now().await;
    }
}
