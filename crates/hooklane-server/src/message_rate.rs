//! How many messages each application may post a second, on this node (the server's
//! `message_rate_limit`): one noisy tenant (or a leaked application token) cannot take the
//! store's whole write rate from the others.
//!
//! Each application has a generic cell rate (GCRA) record: the instant its next message is
//! due were they evenly spaced. A message is taken while that instant is less than a second
//! ahead (a second's worth of burst), and moves it one interval on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Applications remembered at most; past it, those that could burst in full again are
/// forgotten (they lose nothing by it).
const TRACKED: usize = 100_000;

pub struct MessageRate {
    /// Between two messages of one application at the limit; `None`: no limit.
    interval: Option<Duration>,
    burst: Duration,
    due: Mutex<HashMap<String, Instant>>,
}

impl MessageRate {
    /// `per_second` messages a second per application (0: no limit).
    pub fn new(per_second: u32) -> Self {
        let interval = (per_second > 0).then(|| Duration::from_secs(1) / per_second);
        MessageRate { interval, burst: Duration::from_secs(1), due: Mutex::default() }
    }

    /// Takes one message of `app_id`, or says how long until one may be taken.
    pub fn take(&self, app_id: &str, now: Instant) -> Result<(), Duration> {
        let Some(interval) = self.interval else { return Ok(()) };
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        if due.len() >= TRACKED && !due.contains_key(app_id) {
            due.retain(|_, at| *at > now);
        }
        let at = due.get(app_id).copied().unwrap_or(now).max(now);
        let ahead = at - now;
        if ahead + interval > self.burst {
            return Err(ahead + interval - self.burst);
        }
        due.insert(app_id.to_string(), at + interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let rate = MessageRate::new(10);
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(rate.take("app_a", t0), Ok(()), "message {i} of the burst");
        }
        let wait = rate.take("app_a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another application has its own.
        assert_eq!(rate.take("app_b", t0), Ok(()));
        // One interval later, one more.
        assert_eq!(rate.take("app_a", t0 + Duration::from_millis(100)), Ok(()));
        assert!(rate.take("app_a", t0 + Duration::from_millis(100)).is_err());
        // A quiet second refills the burst.
        let later = t0 + Duration::from_secs(3);
        for _ in 0..10 {
            assert_eq!(rate.take("app_a", later), Ok(()));
        }
        assert!(rate.take("app_a", later).is_err());
        // No limit.
        let free = MessageRate::new(0);
        assert!((0..10_000).all(|_| free.take("app_a", t0).is_ok()));
    }
}
