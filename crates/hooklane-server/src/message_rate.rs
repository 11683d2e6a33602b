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
/// forgotten (they lose nothing by it), at most once a second (each sweep reads them all);
/// while it is still full, new applications are not limited.
const TRACKED: usize = 100_000;

/// The highest limit: past it the interval between two messages would round to nothing.
pub const MAX_MESSAGE_RATE: u32 = 1_000_000;

pub struct MessageRate {
    /// Between two messages of one application at the limit; `None`: no limit.
    interval: Option<Duration>,
    burst: Duration,
    due: Mutex<Due>,
}

#[derive(Default)]
struct Due {
    by_app: HashMap<String, Instant>,
    last_sweep: Option<Instant>,
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
        if let Some(at) = due.by_app.get_mut(app_id) {
            let ahead = at.saturating_duration_since(now);
            if ahead + interval > self.burst {
                return Err(ahead + interval - self.burst);
            }
            *at = (*at).max(now) + interval;
            return Ok(());
        }
        if due.by_app.len() >= TRACKED {
            if due.last_sweep.is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(1)) {
                due.by_app.retain(|_, at| *at > now);
                due.last_sweep = Some(now);
            }
            if due.by_app.len() >= TRACKED {
                return Ok(());
            }
        }
        due.by_app.insert(app_id.to_string(), now + interval);
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

    #[test]
    fn memory_is_bounded_and_swept_at_most_once_a_second() {
        let rate = MessageRate::new(1);
        let t0 = Instant::now();
        for i in 0..TRACKED {
            assert!(rate.take(&format!("app_{i}"), t0).is_ok());
        }
        // Full of applications still within their second: a new one is let through, not
        // remembered.
        assert!(rate.take("late", t0).is_ok());
        assert!(rate.take("late", t0).is_ok(), "untracked while full");
        assert_eq!(rate.due.lock().unwrap().by_app.len(), TRACKED);
        // A second on, the sweep forgets them all; the new one is limited again.
        let t1 = t0 + Duration::from_secs(2);
        assert!(rate.take("late", t1).is_ok());
        assert_eq!(rate.due.lock().unwrap().by_app.len(), 1);
        assert!(rate.take("late", t1).is_err());
    }
}
