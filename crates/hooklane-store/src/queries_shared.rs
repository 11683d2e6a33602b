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
