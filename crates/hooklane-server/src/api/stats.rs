//! `/api/v1/stats/app/{app_id}/…`: hooklane's own read endpoints for the dashboard and the
//! application portal (not part of the Svix API). Tenant-scoped like every other route
//! under an application: an application token sees only its own.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use hooklane_core::model::DeliveryStatus;
use hooklane_core::{DateTime, Utc};
use hooklane_store::{AttemptFilter, EndpointHealth, LatencyCounts, MessageState, PageRequest};
use serde::Serialize;

use super::message::MessageOut;
use super::{page_request, ListResponse};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Query, Tenant};
use crate::state::AppState;

/// Failed attempts shown per endpoint.
const LAST_FAILURES: usize = 3;
/// Longest window the statistics look back over.
const MAX_HOURS: i64 = 24 * 31;
/// Most slices a timeline is cut into.
const MAX_SLICES: i64 = 360;

fn quantiles(l: &LatencyCounts) -> (Option<i64>, Option<i64>) {
    (l.quantile(0.5), l.quantile(0.95))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureOut {
    attempt_id: String,
    msg_id: String,
    timestamp: DateTime<Utc>,
    response_status_code: i32,
    response: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHealthOut {
    id: String,
    uid: Option<String>,
    url: String,
    description: String,
    disabled: bool,
    /// Start of the current run of failures, if the last attempt failed.
    failing_since: Option<DateTime<Utc>>,
    succeeded: u64,
    failed: u64,
    /// Succeeded attempts over all attempts of the window (0–1), `null` without attempts.
    success_rate: Option<f64>,
    p50_ms: Option<i64>,
    p95_ms: Option<i64>,
    max_ms: Option<i64>,
    last_attempt_at: Option<DateTime<Utc>>,
    last_failure_at: Option<DateTime<Utc>>,
    pending: u64,
    last_failures: Vec<FailureOut>,
    /// hooklane's own settings the dashboard shows: a FIFO endpoint, one with a payload
    /// filter, one with a transform.
    fifo: bool,
    filtered: bool,
    transformed: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthListOut {
    since: DateTime<Utc>,
    data: Vec<EndpointHealthOut>,
}

fn hours(q: &Query) -> ApiResult<i64> {
    let h = q.parse::<i64>("hours")?.unwrap_or(24);
    if !(1..=MAX_HOURS).contains(&h) {
        return Err(ApiError::bad_query("hours", format!("must be between 1 and {MAX_HOURS}")));
    }
    Ok(h)
}

/// `GET /stats/app/{app}/endpoint?hours=24`: every endpoint with its delivery health.
pub async fn endpoints(State(s): State<AppState>, t: Tenant, q: Query) -> ApiResult<axum::Json<HealthListOut>> {
    let since = super::now() - chrono::Duration::hours(hours(&q)?);
    let endpoints = s.0.store.app_endpoints(&t.app.id).await?;
    let health: BTreeMap<String, EndpointHealth> =
        s.0.store.endpoint_health(&t.app.id, since).await?.into_iter().map(|h| (h.endpoint_id.clone(), h)).collect();
    let mut data = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        let h = health.get(&e.id).cloned().unwrap_or_default();
        let last_failures = if h.failed > 0 {
            let filter = AttemptFilter {
                endpoint_id: Some(e.id.clone()),
                status: Some(DeliveryStatus::Fail),
                after: Some(since),
                ..AttemptFilter::default()
            };
            let page = PageRequest { limit: LAST_FAILURES, iterator: None, descending: true };
            s.0.store
                .list_attempts(&t.app.id, &filter, &page)
                .await?
                .items
                .into_iter()
                .map(|a| FailureOut {
                    attempt_id: a.id,
                    msg_id: a.msg_id,
                    timestamp: a.created_at,
                    response_status_code: a.response_status,
                    response: a.response.chars().take(300).collect(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let total = h.succeeded + h.failed;
        let (p50_ms, p95_ms) = quantiles(&h.latency);
        data.push(EndpointHealthOut {
            fifo: e.order.is_fifo(),
            filtered: e.payload_filter.is_some(),
            transformed: e.transform.is_some(),
            id: e.id,
            uid: e.uid,
            url: e.url,
            description: e.description,
            disabled: e.disabled,
            failing_since: e.failing_since,
            succeeded: h.succeeded,
            failed: h.failed,
            success_rate: (total > 0).then(|| h.succeeded as f64 / total as f64),
            p50_ms,
            p95_ms,
            max_ms: (total > 0).then_some(h.latency.max_ms),
            last_attempt_at: h.last_attempt_at,
            last_failure_at: h.last_failure_at,
            pending: h.pending,
            last_failures,
        });
    }
    Ok(axum::Json(HealthListOut { since, data }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SliceOut {
    start: DateTime<Utc>,
    succeeded: u64,
    failed: u64,
    p50_ms: Option<i64>,
    p95_ms: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineOut {
    bucket_seconds: i64,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    /// One entry per slice of the window, empty slices included, oldest first.
    data: Vec<SliceOut>,
}

/// `GET /stats/app/{app}/timeline?minutes=60`: attempts per slice of time (one minute, or
/// longer for windows over six hours) by outcome, with latency quantiles.
pub async fn timeline(State(s): State<AppState>, t: Tenant, q: Query) -> ApiResult<axum::Json<TimelineOut>> {
    let minutes = q.parse::<i64>("minutes")?.unwrap_or(60);
    if !(1..=MAX_HOURS * 60).contains(&minutes) {
        return Err(ApiError::bad_query("minutes", format!("must be between 1 and {}", MAX_HOURS * 60)));
    }
    let bucket_seconds = ((minutes + MAX_SLICES - 1) / MAX_SLICES).max(1) * 60;
    let bucket_ms = bucket_seconds * 1000;
    let now = super::now();
    let until_ms = (now.timestamp_millis() / bucket_ms + 1) * bucket_ms;
    let since_ms = until_ms - ((minutes * 60_000 + bucket_ms - 1) / bucket_ms) * bucket_ms;
    let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let (since, until) = (at(since_ms), at(until_ms));
    let slices =
        s.0.store.attempt_timeline(&t.app.id, since, until, Duration::from_secs(bucket_seconds as u64)).await?;
    let mut by_start: BTreeMap<i64, _> = slices.into_iter().map(|b| (b.start.timestamp_millis(), b)).collect();
    let mut data = Vec::new();
    let mut start = since_ms;
    while start < until_ms {
        data.push(match by_start.remove(&start) {
            Some(b) => {
                let (p50_ms, p95_ms) = quantiles(&b.latency);
                SliceOut { start: b.start, succeeded: b.succeeded, failed: b.failed, p50_ms, p95_ms }
            }
            None => SliceOut { start: at(start), succeeded: 0, failed: 0, p50_ms: None, p95_ms: None },
        });
        start += bucket_ms;
    }
    Ok(axum::Json(TimelineOut { bucket_seconds, since, until, data }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageLogOut {
    #[serde(flatten)]
    message: MessageOut,
    /// `success`, `pending`, `fail`, or `null` when no endpoint wanted the message.
    status: Option<&'static str>,
    succeeded: u64,
    pending: u64,
    failed: u64,
    attempts: u64,
}

/// `GET /stats/app/{app}/msg`: the message log, with the filters of `GET …/msg`
/// (`event_types`, `channel`, `tag`, `before`, `after`, pagination) and `status`
/// (`success`, `pending` or `fail`: how the message's deliveries stand).
pub async fn messages(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
) -> ApiResult<axum::Json<ListResponse<MessageLogOut>>> {
    let page = page_request(&q, true)?;
    let filter = super::message::message_filter(&q)?;
    let state = match q.get("status").filter(|v| !v.is_empty()) {
        None => None,
        Some("success" | "0") => Some(MessageState::Succeeded),
        Some("pending" | "1") => Some(MessageState::Pending),
        Some("fail" | "2") => Some(MessageState::Failed),
        Some(_) => return Err(ApiError::bad_query("status", "must be success, pending or fail")),
    };
    let page = s.0.store.message_log(&t.app.id, &filter, state, &page).await?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |m| m.message.id.clone(),
        |m| {
            let status = m.state().map(|s| match s {
                MessageState::Succeeded => "success",
                MessageState::Pending => "pending",
                MessageState::Failed => "fail",
            });
            MessageLogOut {
                status,
                succeeded: m.succeeded,
                pending: m.pending,
                failed: m.failed,
                attempts: m.attempts,
                message: MessageOut::new(m.message, false),
            }
        },
    )))
}
