//! How many refused requests each inbound source may have recorded.
//!
//! A source's ingest URL is public: anyone can post junk to it, and every refusal used to be
//! written to the request log with up to 64 KiB of its body, so a flood of unsigned posts
//! could fill the disk and the log. Each source gets a budget of recorded refusals
//! (a token bucket of [`BURST`], refilled at [`PER_MINUTE`] a minute, per process), each
//! keeping a few kilobytes of the request; past
//! it, refusals are still answered as before but only counted
//! (`hooklane_inbound_rejections_unrecorded_total`). Accepted requests, which passed the
//! source's verification, are always recorded; duplicates of them (a provider's retries, or
//! a captured request replayed: a signature without a timestamp stays valid) have a budget
//! of their own (`hooklane_inbound_duplicates_unrecorded_total` past it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Refusals recorded at once after a quiet spell.
pub const BURST: f64 = 60.0;
/// Refusals recorded per minute, per source, in a sustained flood: one every six seconds,
/// of a few kilobytes each (see `inbound::BUDGETED_BODY_BYTES`), so a flood kept up for a
/// month adds a few gigabytes to the request log at most, per source and node.
pub const PER_MINUTE: f64 = 10.0;
/// Sources tracked at most; past this the budgets start afresh (bounds memory).
const MAX_SOURCES: usize = 10_000;

#[derive(Default)]
pub struct RejectionBudget {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RejectionBudget {
    /// Whether a refusal for `source_id` may be recorded now (taking one from its budget).
    pub fn take(&self, source_id: &str) -> bool {
        self.take_at(source_id, Instant::now())
    }

    fn take_at(&self, source_id: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(source_id) {
            buckets.clear();
        }
        let (tokens, last) = buckets.entry(source_id.to_string()).or_insert((BURST, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * PER_MINUTE / 60.0;
        *tokens = (*tokens + refill).min(BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate_per_source() {
        let budget = RejectionBudget::default();
        let t = Instant::now();
        let taken = (0..100).filter(|_| budget.take_at("src_a", t)).count();
        assert_eq!(taken, BURST as usize);
        assert!(budget.take_at("src_b", t), "each source has its own budget");
        assert!(!budget.take_at("src_a", t + Duration::from_secs(5)));
        assert!(budget.take_at("src_a", t + Duration::from_secs(6)), "one every six seconds comes back");
        assert!(!budget.take_at("src_a", t + Duration::from_secs(6)));
        let later = t + Duration::from_secs(600);
        assert_eq!((0..100).filter(|_| budget.take_at("src_a", later)).count(), BURST as usize, "refills to the burst");
    }
}
