//! From an attempt's result to what happens next.

use std::time::Duration;

use hooklane_core::{DateTime, Utc};
use hooklane_store::NextStep;

use crate::sender::SendResult;
use crate::DispatchConfig;

/// The shortest wait a `Retry-After` may ask for.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Decides the next step after attempt number `attempts_made` (1 for the first), along the
/// endpoint's own schedule when it has one (`schedule`), else the server's.
pub fn next_step(
    cfg: &DispatchConfig,
    schedule: Option<&[Duration]>,
    result: &SendResult,
    attempts_made: u32,
    now: DateTime<Utc>,
) -> NextStep {
    if result.succeeded() {
        return NextStep::Succeeded;
    }
    if result.cancelled {
        return NextStep::Cancelled;
    }
    // (A receiver asking that the message be sent no more is no fault of it: `GiveUp`
    // all the same, the delivery failed.)
    if result.unsendable || result.control.abort_message {
        return NextStep::GiveUp;
    }
    let Some(mut delay) = cfg.retry.next_delay_in(schedule.unwrap_or(&cfg.retry.delays), attempts_made) else {
        return NextStep::GiveUp;
    };
    if matches!(result.status, Some(429 | 503)) {
        if let Some(asked) = result.retry_after {
            // A receiver's wait lengthens the schedule's, never shortens it: each retry is
            // one of the schedule's attempts, and a throttled receiver answering
            // `Retry-After: 1` to a burst would otherwise see every message spend its
            // attempts within seconds and fail for good.
            delay = delay.max(asked.max(MIN_RETRY_AFTER).min(cfg.max_retry_after));
        }
    }
    NextStep::RetryAt(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(24)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hooklane_core::retry::RetrySchedule;

    fn result(status: Option<u16>, retry_after: Option<u64>) -> SendResult {
        SendResult {
            status,
            body: String::new(),
            duration: Duration::ZERO,
            retry_after: retry_after.map(Duration::from_secs),
            request_headers: None,
            unsendable: false,
            cancelled: false,
            url: None,
            stale: false,
            control: Default::default(),
        }
    }

    #[test]
    fn steps() {
        let cfg = DispatchConfig {
            retry: RetrySchedule { delays: vec![Duration::from_secs(10)], jitter: 0.0 },
            max_retry_after: Duration::from_secs(60),
            ..DispatchConfig::default()
        };
        let now = Utc::now();
        let s = |d: i64| NextStep::RetryAt(now + chrono::Duration::seconds(d));
        assert_eq!(next_step(&cfg, None, &result(Some(204), None), 1, now), NextStep::Succeeded);
        assert_eq!(next_step(&cfg, None, &result(Some(500), None), 1, now), s(10));
        assert_eq!(next_step(&cfg, None, &result(None, None), 1, now), s(10));
        assert_eq!(next_step(&cfg, None, &result(Some(500), None), 2, now), NextStep::GiveUp);
        assert_eq!(next_step(&cfg, None, &result(Some(429), Some(30)), 1, now), s(30));
        assert_eq!(next_step(&cfg, None, &result(Some(503), Some(3600)), 1, now), s(60), "at most max_retry_after");
        // A shorter wait than the schedule's does not shorten it (`0` included).
        assert_eq!(next_step(&cfg, None, &result(Some(429), Some(3)), 1, now), s(10));
        assert_eq!(next_step(&cfg, None, &result(Some(429), Some(0)), 1, now), s(10));
        let quick = [Duration::from_millis(200)];
        assert_eq!(next_step(&cfg, Some(&quick), &result(Some(429), Some(0)), 1, now), s(1), "at least a second");
        // Retry-After only counts on 429 and 503.
        assert_eq!(next_step(&cfg, None, &result(Some(500), Some(3)), 1, now), s(10));
        // A redirect is not followed and counts as a failure.
        assert_eq!(next_step(&cfg, None, &result(Some(302), None), 1, now), s(10));
        // A request that cannot be made for this message: no retry.
        let unsendable = SendResult { unsendable: true, ..result(None, None) };
        assert_eq!(next_step(&cfg, None, &unsendable, 1, now), NextStep::GiveUp);
        // `webhook-delivery: abort-message`: no retry of a failure; a success is one.
        let abort = crate::sender::DeliveryControl { abort_message: true, disable_endpoint: false };
        assert_eq!(
            next_step(&cfg, None, &SendResult { control: abort, ..result(Some(500), None) }, 1, now),
            NextStep::GiveUp
        );
        assert_eq!(
            next_step(&cfg, None, &SendResult { control: abort, ..result(Some(200), None) }, 1, now),
            NextStep::Succeeded
        );
        // An endpoint's own schedule instead of the server's: longer, or none at all.
        let own = [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)];
        assert_eq!(next_step(&cfg, Some(&own), &result(Some(500), None), 1, now), s(1));
        assert_eq!(next_step(&cfg, Some(&own), &result(Some(500), None), 3, now), s(4));
        assert_eq!(next_step(&cfg, Some(&own), &result(Some(500), None), 4, now), NextStep::GiveUp);
        assert_eq!(next_step(&cfg, Some(&[]), &result(Some(500), None), 1, now), NextStep::GiveUp);
        // No retry is no retry, whatever a 429 asks.
        assert_eq!(next_step(&cfg, Some(&[]), &result(Some(429), Some(3)), 1, now), NextStep::GiveUp);
        assert_eq!(
            next_step(&cfg, Some(&own), &result(Some(429), Some(30)), 1, now),
            s(30),
            "Retry-After still counts"
        );
        let cancelled = SendResult { cancelled: true, ..result(None, None) };
        assert_eq!(next_step(&cfg, None, &cancelled, 1, now), NextStep::Cancelled);
    }
}
