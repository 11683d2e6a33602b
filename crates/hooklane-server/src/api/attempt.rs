//! Attempts: the log of every HTTP try.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hooklane_core::model::{Attempt, DeliveryStatus};
use hooklane_core::{DateTime, Utc};
use hooklane_store::AttemptFilter;
use serde::Serialize;

use super::endpoint::find as find_endpoint;
use super::message::{find as find_message, message_filter, MessageOut};
use super::{page_request, ListResponse};
use crate::error::{missing, ApiError, ApiResult};
use crate::extract::{Query, Tenant};
use crate::state::AppState;

/// Svix's `MessageAttemptOut`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptOut {
    id: String,
    url: String,
    response: String,
    response_status_code: i32,
    response_duration_ms: i64,
    status: i32,
    /// `status` as a word (`success`, `pending`, `fail`, `sending`), as Svix answers it.
    status_text: &'static str,
    trigger_type: i32,
    msg_id: String,
    endpoint_id: String,
    timestamp: DateTime<Utc>,
    /// hooklane extension: the headers the request was sent with (absent for attempts
    /// recorded before hooklane kept them, and when no request could be sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_headers: Option<std::collections::BTreeMap<String, String>>,
}

impl From<Attempt> for AttemptOut {
    fn from(a: Attempt) -> Self {
        AttemptOut {
            id: a.id,
            url: a.url,
            response: a.response,
            response_status_code: a.response_status,
            response_duration_ms: a.duration_ms,
            status: a.status as i32,
            status_text: status_text(a.status),
            trigger_type: a.trigger as i32,
            msg_id: a.msg_id,
            endpoint_id: a.endpoint_id,
            timestamp: a.created_at,
            request_headers: a.request_headers,
        }
    }
}

/// A status as Svix writes it out beside its number.
fn status_text(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Success => "success",
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Fail => "fail",
        DeliveryStatus::Sending => "sending",
    }
}

/// The `status` filter (0 success, 1 pending, 2 fail, 3 sending).
fn status_filter(q: &Query) -> ApiResult<Option<DeliveryStatus>> {
    q.parse::<i64>("status")?
        .map(|code| {
            DeliveryStatus::from_code(code).ok_or_else(|| ApiError::bad_query("status", "must be 0, 1, 2 or 3"))
        })
        .transpose()
}

fn filter(q: &Query) -> ApiResult<AttemptFilter> {
    let status = status_filter(q)?;
    Ok(AttemptFilter { status, before: q.time("before")?, after: q.time("after")?, ..AttemptFilter::default() })
}

/// Svix's `EndpointMessageOut`: a message with how its delivery to one endpoint stands.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMessageOut {
    #[serde(flatten)]
    message: MessageOut,
    status: i32,
    status_text: &'static str,
    next_attempt: Option<DateTime<Utc>>,
}

/// `GET /app/{app}/endpoint/{endpoint}/msg` (Svix's `list_attempted_messages`): the
/// messages sent (or to be sent) to the endpoint, newest first, each with its delivery's
/// status; the filters of message lists, and `status`.
pub async fn endpoint_messages(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, ep_key)): Path<(String, String)>,
) -> ApiResult<axum::Json<ListResponse<EndpointMessageOut>>> {
    let ep = find_endpoint(&s, &t, &ep_key).await?;
    let page = page_request(&q, true)?;
    let with_content = q.flag("with_content")?.unwrap_or(true);
    let (filter, status) = (message_filter(&q)?, status_filter(&q)?);
    let page = s.0.store.endpoint_messages(&t.app.id, &ep.id, &filter, status, &page).await?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |(m, _)| m.id.clone(),
        |(m, d)| EndpointMessageOut {
            message: MessageOut::new(m, with_content),
            status: d.status as i32,
            status_text: status_text(d.status),
            next_attempt: d.next_attempt_at.filter(|_| d.status == DeliveryStatus::Pending),
        },
    )))
}

async fn list(
    s: &AppState,
    t: &Tenant,
    q: &Query,
    f: AttemptFilter,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    let page = page_request(q, true)?;
    let page = s.0.store.list_attempts(&t.app.id, &f, &page).await?;
    Ok(axum::Json(ListResponse::from_page(page, |a| a.id.clone(), AttemptOut::from)))
}

/// `GET /app/{app}/attempt/msg/{msg}` (and the older `/app/{app}/msg/{msg}/attempt`).
pub async fn by_message(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, msg_key)): Path<(String, String)>,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    let msg = find_message(&s, &t, &msg_key).await?;
    let mut f = filter(&q)?;
    f.msg_id = Some(msg.id);
    if let Some(ep) = q.get("endpoint_id") {
        f.endpoint_id = Some(find_endpoint(&s, &t, ep).await?.id);
    }
    list(&s, &t, &q, f).await
}

/// `GET /app/{app}/attempt/endpoint/{endpoint}`.
pub async fn by_endpoint(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, ep_key)): Path<(String, String)>,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    let ep = find_endpoint(&s, &t, &ep_key).await?;
    let mut f = filter(&q)?;
    f.endpoint_id = Some(ep.id);
    list(&s, &t, &q, f).await
}

/// `DELETE /app/{app}/msg/{msg}/attempt/{attempt}/content` (Svix's
/// `message_attempt.expunge_content`): forgets what the endpoint answered.
pub async fn expunge_content(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, msg_key, attempt_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let msg = find_message(&s, &t, &msg_key).await?;
    s.0.store.expunge_attempt_content(&t.app.id, &msg.id, &attempt_id).await.map_err(missing("attempt"))?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, msg_key, attempt_id)): Path<(String, String, String)>,
) -> ApiResult<axum::Json<AttemptOut>> {
    let msg = find_message(&s, &t, &msg_key).await?;
    let a = s.0.store.get_attempt(&t.app.id, &msg.id, &attempt_id).await?.ok_or(ApiError::NotFound("attempt"))?;
    Ok(axum::Json(a.into()))
}
