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
use crate::openapi::{AppPath, ErrorBody, InvalidQuery, MessageFilters, PageNewestFirst, Unauthorized};
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

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureOut {
    #[schema(example = "atmpt_01JQ8Z3K5W6X7Y8Z9A0B1C2D3E")]
    attempt_id: String,
    msg_id: String,
    timestamp: DateTime<Utc>,
    response_status_code: i32,
    /// The first 300 characters of the response body.
    response: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointHealthOut {
    id: String,
    uid: Option<String>,
    url: String,
    description: String,
    disabled: bool,
    /// Start of the current run of failures, if the last attempt failed.
    failing_since: Option<DateTime<Utc>>,
    /// Attempts of the window that succeeded.
    succeeded: u64,
    /// Attempts of the window that failed.
    failed: u64,
    /// Succeeded attempts over all attempts of the window (0–1), `null` without attempts.
    success_rate: Option<f64>,
    /// Median response time of the window's attempts, in milliseconds (estimated).
    p50_ms: Option<i64>,
    /// 95th percentile of the response times, in milliseconds (estimated).
    p95_ms: Option<i64>,
    /// Slowest attempt of the window, in milliseconds.
    max_ms: Option<i64>,
    last_attempt_at: Option<DateTime<Utc>>,
    last_failure_at: Option<DateTime<Utc>>,
    /// Deliveries waiting to be sent or retried now (whatever the window).
    pending: u64,
    /// The latest failed attempts of the window, newest first (at most 3).
    last_failures: Vec<FailureOut>,
    /// hooklane's own settings the dashboard shows: a FIFO endpoint, one with a payload
    /// filter, one with a transform, a paused one, one that sends OAuth access tokens, one
    /// that presents a TLS client certificate, a polling endpoint (its `url` is where it is
    /// read; nothing is sent to it).
    fifo: bool,
    filtered: bool,
    transformed: bool,
    paused: bool,
    oauth: bool,
    mtls: bool,
    polling: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthListOut {
    /// Start of the window the counts cover.
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

/// Get the delivery health of each endpoint of an application.
///
/// `GET /stats/app/{app}/endpoint?hours=24`: every endpoint with its delivery health.
#[utoipa::path(
    get,
    path = "/api/v1/stats/app/{app_id}/endpoint",
    tag = "Statistics",
    operation_id = "v1.statistics.endpoint-health",
    params(
        AppPath,
        ("hours" = Option<i64>, Query, minimum = 1, maximum = 744, description = "Hours the window looks back over (default 24)."),
    ),
    responses(
        (status = 200, description = "Each endpoint with its counts over the window", body = HealthListOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, or not this token's", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn endpoints(State(s): State<AppState>, t: Tenant, q: Query) -> ApiResult<axum::Json<HealthListOut>> {
    let since = super::now() - chrono::Duration::hours(hours(&q)?);
    let endpoints = s.0.store.app_endpoints(&t.app.id).await?;
    let health: BTreeMap<String, EndpointHealth> =
        s.0.store.endpoint_health(&t.app.id, since).await?.into_iter().map(|h| (h.endpoint_id.clone(), h)).collect();
    let mut data = Vec::with_capacity(endpoints.len());
    for mut e in endpoints {
        let h = health.get(&e.id).cloned().unwrap_or_default();
        let last_failures = if h.failed > 0 {
            let filter = AttemptFilter {
                endpoint_id: Some(e.id.clone()),
                status: Some(DeliveryStatus::Fail),
                after: Some(since),
                ..AttemptFilter::default()
            };
            let page = PageRequest { limit: LAST_FAILURES, descending: true, ..PageRequest::default() };
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
            paused: e.paused,
            oauth: e.oauth.is_some(),
            mtls: e.mtls.is_some(),
            polling: e.polling,
            url: super::endpoint::url_seen_by(super::endpoint::answered_url(&s, &mut e), &t.principal),
            id: e.id,
            uid: e.uid,
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

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SliceOut {
    start: DateTime<Utc>,
    /// Attempts that finished in the slice and succeeded.
    succeeded: u64,
    /// Attempts that finished in the slice and failed.
    failed: u64,
    /// Median response time of the slice's attempts, in milliseconds (estimated).
    p50_ms: Option<i64>,
    /// 95th percentile of the response times, in milliseconds (estimated).
    p95_ms: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineOut {
    /// Length of each slice.
    bucket_seconds: i64,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    /// One entry per slice of the window, empty slices included, oldest first.
    data: Vec<SliceOut>,
}

/// Get an application's delivery attempts over time.
///
/// `GET /stats/app/{app}/timeline?minutes=60`: attempts per slice of time (one minute, or
/// longer for windows over six hours) by outcome, with latency quantiles.
#[utoipa::path(
    get,
    path = "/api/v1/stats/app/{app_id}/timeline",
    tag = "Statistics",
    operation_id = "v1.statistics.timeline",
    params(
        AppPath,
        ("minutes" = Option<i64>, Query, minimum = 1, maximum = 44640, description = "Minutes the window looks back over (default 60)."),
    ),
    responses(
        (status = 200, description = "The window's slices", body = TimelineOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, or not this token's", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
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
        s.0.store.attempt_timeline(&t.app.id, None, since, until, Duration::from_secs(bucket_seconds as u64)).await?;
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

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageLogOut {
    #[serde(flatten)]
    message: MessageOut,
    /// `success`, `pending`, `fail`, or `null` when no endpoint wanted the message.
    #[schema(schema_with = message_status_schema)]
    status: Option<&'static str>,
    /// The message's deliveries that succeeded.
    succeeded: u64,
    /// The message's deliveries still to be made.
    pending: u64,
    /// The message's deliveries that failed.
    failed: u64,
    /// The message's deliveries that endpoints' transformations cancelled (not sent).
    canceled: u64,
    /// Attempts made over all its deliveries.
    attempts: u64,
}

/// `status`'s schema: a `&'static str` field says nothing of the three values it takes.
fn message_status_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{SchemaType, Type};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(
            ["success", "pending", "fail", "canceled"]
                .map(serde_json::Value::from)
                .into_iter()
                .chain([serde_json::Value::Null]),
        ))
        .description(Some(
            "`fail` when any delivery failed, else `pending` when any is pending, else `success` when any \
             succeeded, else `canceled` (every delivery cancelled by a transformation); `null` when no \
             endpoint wanted the message.",
        ))
        .build()
}

/// List an application's messages with how their deliveries stand.
///
/// `GET /stats/app/{app}/msg`: the message log, with the filters of `GET …/msg`
/// (`event_types`, `channel`, `tag`, `before`, `after`, pagination) and `status`
/// (`success`, `pending`, `fail` or `canceled`: how the message's deliveries stand).
#[utoipa::path(
    get,
    path = "/api/v1/stats/app/{app_id}/msg",
    tag = "Statistics",
    operation_id = "v1.statistics.message-log",
    params(
        AppPath,
        PageNewestFirst,
        MessageFilters,
        ("status" = Option<String>, Query, description = "Only messages whose deliveries stand so: `success`, `pending`, `fail` or `canceled` (or 0, 1, 2, 4)."),
    ),
    responses(
        (status = 200, description = "A page of messages", body = ListResponse<MessageLogOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, or not this token's", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
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
        Some("canceled" | "4") => Some(MessageState::Canceled),
        Some(_) => return Err(ApiError::bad_query("status", "must be success, pending, fail or canceled")),
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
                MessageState::Canceled => "canceled",
            });
            MessageLogOut {
                status,
                succeeded: m.succeeded,
                pending: m.pending,
                failed: m.failed,
                canceled: m.canceled,
                attempts: m.attempts,
                message: MessageOut::new(m.message, false),
            }
        },
    )))
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(endpoints, timeline, messages),
    components(schemas(HealthListOut, EndpointHealthOut, FailureOut, TimelineOut, SliceOut, MessageLogOut))
)]
pub(crate) struct Doc;
