//! When to try a failed delivery again.

use std::time::Duration;

use rand::Rng;

/// Delays between attempts. The first attempt is always immediate; `delays[i]` is the wait
/// after the (i+1)-th failed attempt. When the list is exhausted the delivery has failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
    /// Fraction of each delay (0.0..=1.0) by which it is randomly moved up or down, so that
    /// many deliveries that failed together do not all come back at the same instant.
    pub jitter: f64,
}

impl Default for RetrySchedule {
    /// Svix's published schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
    /// (eight attempts over about 28 hours).
    fn default() -> Self {
        let s = Duration::from_secs;
        RetrySchedule { delays: vec![s(5), s(300), s(1800), s(7200), s(18000), s(36000), s(36000)], jitter: 0.2 }
    }
}

impl RetrySchedule {
    /// Total number of attempts a delivery gets.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The wait before the next attempt, given how many attempts have been made so far, or
    /// `None` when no attempt is left.
    pub fn next_delay(&self, attempts_made: u32) -> Option<Duration> {
        self.next_delay_in(&self.delays, attempts_made)
    }

    /// [`RetrySchedule::next_delay`] along `delays` instead of this schedule's own (an
    /// endpoint's), moved by this schedule's jitter.
    pub fn next_delay_in(&self, delays: &[Duration], attempts_made: u32) -> Option<Duration> {
        let base = *delays.get(attempts_made.checked_sub(1)? as usize)?;
        if self.jitter <= 0.0 || base.is_zero() {
            return Some(base);
        }
        let factor = rand::thread_rng().gen_range((1.0 - self.jitter)..=(1.0 + self.jitter));
        Some(base.mul_f64(factor))
    }
}

/// Most waits in an endpoint's own schedule (attempts after the first).
pub const MAX_ENDPOINT_RETRIES: usize = 20;
/// Longest wait in an endpoint's own schedule.
pub const MAX_ENDPOINT_RETRY_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// What is wrong with an endpoint's own schedule, if anything.
pub fn check_endpoint_schedule(delays: &[Duration]) -> Result<(), String> {
    if delays.len() > MAX_ENDPOINT_RETRIES {
        return Err(format!("at most {MAX_ENDPOINT_RETRIES} waits"));
    }
    if delays.iter().any(|d| *d < Duration::from_secs(1) || *d > MAX_ENDPOINT_RETRY_WAIT) {
        return Err("each wait must be between 1s and 7days".into());
    }
    // Kept in milliseconds: a finer wait would not read back as it was given.
    if delays.iter().any(|d| d.subsec_nanos() % 1_000_000 != 0) {
        return Err("each wait must be whole milliseconds".into());
    }
    Ok(())
}

/// Parses a `Retry-After` value: delta-seconds, or an HTTP date relative to `now_unix`.
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Seconds past what 64 bits hold: as long as can be (capped by the caller), not no
    // answer at all.
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(u64::MAX));
    }
    // IMF-fixdate, and the obsolete RFC 850 and asctime forms RFC 9110 has recipients
    // accept too; then any RFC 2822 date (another zone than GMT, say).
    let at = match httpdate::parse_http_date(value) {
        Ok(at) => at.duration_since(std::time::UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_secs()).ok())?,
        Err(_) => chrono::DateTime::parse_from_rfc2822(value).ok()?.timestamp(),
    };
    Some(Duration::from_secs(u64::try_from(at.saturating_sub(now_unix)).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_past_64_bits_is_as_long_as_can_be() {
        assert_eq!(parse_retry_after("99999999999999999999", 0), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(parse_retry_after(" 20 ", 0), Some(Duration::from_secs(20)));
        assert_eq!(parse_retry_after("-5", 0), None);
        assert_eq!(parse_retry_after("1.5", 0), None);
    }

    #[test]
    fn default_schedule_is_svix_like() {
        let s = RetrySchedule { jitter: 0.0, ..RetrySchedule::default() };
        assert_eq!(s.max_attempts(), 8);
        assert_eq!(s.next_delay(0), None);
        assert_eq!(s.next_delay(1), Some(Duration::from_secs(5)));
        assert_eq!(s.next_delay(7), Some(Duration::from_secs(36000)));
        assert_eq!(s.next_delay(8), None);
        let total: Duration = s.delays.iter().sum();
        assert!(total > Duration::from_secs(24 * 3600));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let s = RetrySchedule::default();
        for _ in 0..100 {
            let d = s.next_delay(2).unwrap().as_secs_f64();
            assert!((240.0..=360.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470), Some(Duration::from_secs(10)));
        // The obsolete forms RFC 9110 has recipients accept: RFC 850 and asctime.
        assert_eq!(parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", 1445412470), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:00 2015", 1445412470), Some(Duration::from_secs(10)));
        // Another zone, as RFC 2822 writes it; a date past is no wait.
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 09:28:00 +0200", 1445412470), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
