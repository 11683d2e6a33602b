//! What the engine tells operators about each attempt: one log event (in a consistent set
//! of fields, the attempt id standing as the delivery's request id) and the metrics
//! rendered on `/metrics`.

use hooklane_core::model::{Attempt, DeliveryStatus};
use hooklane_core::{DateTime, Utc};
use hooklane_store::Job;

use crate::sender::SendResult;

/// Logs one finished attempt: failures at `info`, successes at `debug`.
pub(crate) fn log_attempt(attempt_id: &str, job: &Job, result: &SendResult, attempt: u32) {
    macro_rules! event {
        ($level:expr, $outcome:expr) => {
            tracing::event!(
                $level,
                request_id = %attempt_id,
                attempt_id = %attempt_id,
                msg_id = %job.message.id,
                endpoint_id = %job.endpoint.id,
                app_id = %job.message.app_id,
                attempt,
                status = result.status.unwrap_or(0),
                ms = result.duration.as_millis() as u64,
                outcome = $outcome,
                "delivery attempt"
            )
        };
    }
    // Both at debug: a dead endpoint with a large backlog fails thousands of attempts a
    // second, which at info would flood the log. Failures are counted in /metrics, listed in
    // the attempt log, and an endpoint being disabled is logged at warn.
    if result.succeeded() {
        event!(tracing::Level::DEBUG, "success");
    } else if result.cancelled {
        event!(tracing::Level::DEBUG, "canceled");
    } else {
        event!(tracing::Level::DEBUG, "failure");
    }
}

/// Counts the attempt by outcome and status class, and records how long it took and (when
/// it delivered) how long after its message was accepted.
pub(crate) fn observe_attempt(a: &Attempt, message_created: DateTime<Utc>) {
    let outcome = match a.status {
        DeliveryStatus::Success => "success",
        DeliveryStatus::Canceled => "canceled",
        _ => "failure",
    };
    let class = match a.response_status {
        0 => "none",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    metrics::counter!("hooklane_attempts_total", "outcome" => outcome, "status_class" => class).increment(1);
    metrics::histogram!("hooklane_attempt_duration_seconds", "outcome" => outcome)
        .record(a.duration_ms as f64 / 1000.0);
    if a.status == DeliveryStatus::Success {
        let latency = (a.created_at - message_created).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("hooklane_delivery_latency_seconds").record(latency);
    }
}
