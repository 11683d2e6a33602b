//! Small helpers every backend needs.

use std::time::Duration;

use hooklane_core::{DateTime, Utc};

/// `now + d`, saturating instead of overflowing on absurd durations.
pub fn lease_end(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the earliest representable time.
pub fn ago(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Milliseconds between two sends at `rate` per second (at least 1).
pub fn rate_interval_ms(rate: u32) -> i64 {
    (1000 / i64::from(rate.max(1))).max(1)
}

/// How far back an idle endpoint's bucket reaches: one second's worth of sends.
pub const RATE_BURST_MS: i64 = 1000;

// --- statistics

/// SQL (the same for every backend) numbering the latency bucket of `col`, a duration in
/// milliseconds: 0 for the first of [`LATENCY_BOUNDS_MS`](crate::LATENCY_BOUNDS_MS), …, one
/// past the last for slower ones.
pub fn latency_bucket_sql(col: &str) -> String {
    let mut sql = String::from("CASE");
    for (i, bound) in crate::LATENCY_BOUNDS_MS.iter().enumerate() {
        sql.push_str(&format!(" WHEN {col} <= {bound} THEN {i}"));
    }
    sql.push_str(&format!(" ELSE {} END", crate::LATENCY_BOUNDS_MS.len()));
    sql
}

/// A condition on `messages` (the same SQL for every backend) keeping messages in `state`.
pub fn message_state_sql(state: crate::MessageState) -> &'static str {
    use crate::MessageState::*;
    match state {
        Failed => "EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status = 2)",
        Pending => {
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status IN (1, 3)) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status = 2)"
        }
        Succeeded => {
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status = 0) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status IN (1, 2, 3))"
        }
    }
}

/// One row of a statistics query over attempts: attempts grouped by a key (an endpoint id
/// or the start of a time slice), outcome and latency bucket.
pub struct AttemptGroup<K> {
    pub key: K,
    /// The attempt status code (0 succeeded; anything else failed).
    pub status: i64,
    pub bucket: i64,
    pub count: i64,
    /// Latest `created_at` (unix ms) in the group.
    pub last_at: i64,
    pub max_ms: i64,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Folds attempt groups keyed by endpoint id into one [`EndpointHealth`](crate::EndpointHealth)
/// per endpoint of `endpoints` (with its pending count), in that order.
pub fn fold_health(
    endpoints: Vec<(String, u64)>,
    groups: impl IntoIterator<Item = AttemptGroup<String>>,
) -> Vec<crate::EndpointHealth> {
    let mut out: Vec<crate::EndpointHealth> = endpoints
        .into_iter()
        .map(|(endpoint_id, pending)| crate::EndpointHealth { endpoint_id, pending, ..Default::default() })
        .collect();
    let index: std::collections::HashMap<String, usize> =
        out.iter().enumerate().map(|(i, h)| (h.endpoint_id.clone(), i)).collect();
    for g in groups {
        let Some(&i) = index.get(&g.key) else { continue };
        let h = &mut out[i];
        let n = u64::try_from(g.count).unwrap_or(0);
        let at = Some(time(g.last_at));
        if g.status == 0 {
            h.succeeded += n;
        } else {
            h.failed += n;
            h.last_failure_at = h.last_failure_at.max(at);
        }
        h.last_attempt_at = h.last_attempt_at.max(at);
        h.latency.add(usize::try_from(g.bucket).unwrap_or(0), n, g.max_ms);
    }
    out
}

/// Folds attempt groups keyed by slice start (unix ms) into time-ordered slices.
pub fn fold_timeline(groups: impl IntoIterator<Item = AttemptGroup<i64>>) -> Vec<crate::TimelineBucket> {
    let mut slices: std::collections::BTreeMap<i64, crate::TimelineBucket> = std::collections::BTreeMap::new();
    for g in groups {
        let s = slices.entry(g.key).or_insert_with(|| crate::TimelineBucket {
            start: time(g.key),
            succeeded: 0,
            failed: 0,
            latency: Default::default(),
        });
        let n = u64::try_from(g.count).unwrap_or(0);
        if g.status == 0 {
            s.succeeded += n;
        } else {
            s.failed += n;
        }
        s.latency.add(usize::try_from(g.bucket).unwrap_or(0), n, g.max_ms);
    }
    slices.into_values().collect()
}

/// Milliseconds in a timeline slice (at least one).
pub fn bucket_ms(bucket: Duration) -> i64 {
    i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX).max(1)
}
