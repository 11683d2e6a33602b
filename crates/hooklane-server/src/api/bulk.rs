//! Svix's bulk operations: replaying an endpoint's messages in a time window
//! (`…/endpoint/{endpoint_id}/bulk-replay`), and deleting the content of many messages
//! (`…/msg/bulk-expunge`) or of all of them (`…/msg/expunge-all-contents`). Like recover
//! and replay-missing, the replay and the purge are background tasks (see
//! [`crate::tasks`]): answered `finished` unless their work outlasts the server's
//! `task_wait`, and followed through `/background-task` either way.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use axum::extract::State;
use axum::response::IntoResponse;
use futures::{StreamExt, TryStreamExt};
use hooklane_core::model::DeliveryStatus;
use hooklane_core::{DateTime, Utc};
use hooklane_store::{AttemptFilter, DynStore, MessageFilter, PageRequest, StoreError, StoreResult};
use serde::{Deserialize, Serialize};

use super::check_names;
use super::endpoint::{find, require_enabled, TaskOut};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Tenant};
use crate::openapi::{AppPath, EndpointPath, ErrorBody, InvalidJson, Unauthorized};
use crate::state::AppState;

/// Messages read per page while walking an application's or an endpoint's messages.
const CHUNK: usize = 250;
/// Store writes a bulk operation keeps in flight: enough for the embedded store to commit
/// them in groups, few enough to leave the writer to everyone else.
const IN_FLIGHT: usize = 16;
/// Most messages one `bulk-expunge` names.
const MAX_EXPUNGE_IDS: usize = 1000;

/// Svix's `BulkReplayIn`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkReplayIn {
    /// Messages created at or after this time.
    since: DateTime<Utc>,
    /// Messages created before this time; now when left out. Must be after `since`.
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    /// Only messages of these event types.
    #[serde(default)]
    event_types: Option<Vec<String>>,
    /// Only messages sent on this channel.
    #[serde(default)]
    channel: Option<String>,
    /// Only messages with this tag.
    #[serde(default)]
    tag: Option<String>,
    /// Only messages whose delivery to the endpoint is in this state: 0 success, 1 pending,
    /// 2 fail, 3 sending, 4 canceled (by the endpoint's transformation).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 4)]
    status: Option<i64>,
    /// Only messages whose last attempt to the endpoint got an answer of this class: 100,
    /// 200, 300, 400 or 500, or 0 for none (a timeout or a refused connection).
    #[serde(default)]
    status_code_class: Option<i32>,
}

/// Replay the messages an endpoint was sent in a time window.
///
/// Sends the endpoint again every message created in `[since, until)` that it has a
/// delivery of (whatever became of it), narrowed by the message filters, the delivery's
/// `status` and the class of its last answer. Messages it never got are not sent (that is
/// `replay-missing`). The answer is the task, `finished` unless the work outlasts the
/// server's `task_wait` (then `running`, and it goes on); `replayed` says how many were
/// queued.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/bulk-replay",
    tag = "Endpoint",
    operation_id = "v1.endpoint.bulk-replay",
    params(EndpointPath),
    request_body = BulkReplayIn,
    responses(
        (status = 202, description = "The task: `finished` with `replayed` (messages queued again), or `running` past `task_wait`", body = TaskOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled", body = ErrorBody),
        (status = 422, description = "`since` is missing, `until` is not after it, or a filter is invalid", body = ErrorBody),
    )
)]
pub async fn bulk_replay(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<BulkReplayIn>,
) -> ApiResult<impl IntoResponse> {
    let ep = find(&s, &t, &key).await?;
    require_enabled(&ep)?;
    let now = super::now();
    let (since, until) = super::endpoint::window(input.since, input.until, now)?;
    check_names("eventTypes", &input.event_types, 256)?;
    // Checked before the task starts (PostgreSQL would refuse them half-way).
    input.channel.as_deref().map_or(Ok(()), |c| super::no_nul("channel", c))?;
    if let Some(msg) = input.tag.as_deref().filter(|t| !t.is_empty()).and_then(super::tag_problem) {
        return Err(ApiError::validation("tag", msg));
    }
    let status = match input.status {
        None => None,
        Some(code) => Some(
            DeliveryStatus::from_code(code).ok_or_else(|| ApiError::validation("status", "must be 0, 1, 2, 3 or 4"))?,
        ),
    };
    if input.status_code_class.is_some_and(|c| ![0, 100, 200, 300, 400, 500].contains(&c)) {
        return Err(ApiError::validation("statusCodeClass", "must be 0, 100, 200, 300, 400 or 500"));
    }
    let filter = MessageFilter {
        event_types: input.event_types,
        channel: input.channel.filter(|c| !c.is_empty()),
        tag: input.tag.filter(|c| !c.is_empty()),
        before: Some(until),
        // The store's `after` is exclusive; `since` is not. (A `since` at the calendar's
        // very start has nothing before it.)
        after: since.checked_sub_signed(chrono::Duration::milliseconds(1)).or(Some(since)),
        // The replay reads ids, times and deliveries; the store resends from the message.
        without_payload: true,
    };
    let chosen = Chosen { filter, status, status_code_class: input.status_code_class };
    let (state, app_id, ep_id) = (s.clone(), t.app.id.clone(), ep.id.clone());
    let work = async move {
        let replayed = replay(&state.0.store, &app_id, &ep_id, &chosen, now).await?;
        if replayed > 0 {
            state.0.dispatcher.retry_endpoint_now(&ep_id);
        }
        Ok(replayed)
    };
    TaskOut::start(&s, &t.app.id, "endpoint.bulk-replay", Some(&ep.id), "replayed", work).await
}

/// Which of an endpoint's messages a bulk replay sends again.
struct Chosen {
    filter: MessageFilter,
    status: Option<DeliveryStatus>,
    status_code_class: Option<i32>,
}

/// Queues again, as resends, the endpoint's messages that `chosen` picks; answers how many.
async fn replay(
    store: &DynStore,
    app_id: &str,
    endpoint_id: &str,
    chosen: &Chosen,
    now: DateTime<Utc>,
) -> ApiResult<u64> {
    let mut page = PageRequest { limit: CHUNK, ..PageRequest::default() };
    let mut replayed = 0u64;
    loop {
        // Its task called interrupted meanwhile: a client told so may run it again, and
        // must not find this one still sending (see `crate::tasks::go_on`).
        if !crate::tasks::go_on().await {
            return Ok(replayed);
        }
        // The endpoint as it stands, before each page: one disabled (or deleted) meanwhile,
        // by an operator stopping the replay say, gets no more. Its messages queued again
        // would each be failed unsent, the delivered ones turned to failures.
        if store.get_endpoint(app_id, endpoint_id).await?.is_none_or(|e| e.disabled || e.polling) {
            return Ok(replayed);
        }
        let found = store.endpoint_messages(app_id, endpoint_id, &chosen.filter, chosen.status, &page).await?;
        let mut picked = Vec::with_capacity(found.items.len());
        for (m, d) in &found.items {
            // Without a status asked for, what is still to be sent is left to its course: a
            // resend would send a scheduled message before its time and start a retrying
            // delivery's attempts over.
            if chosen.status.is_none() && matches!(d.status, DeliveryStatus::Pending | DeliveryStatus::Sending) {
                continue;
            }
            // Nor is a message scheduled ahead (Svix's `deliverAt`) sent before its time by a
            // replay that asks for pending deliveries.
            if m.deliver_at.is_some_and(|at| at > now) {
                continue;
            }
            if let Some(class) = chosen.status_code_class {
                if last_answer_class(store, app_id, &m.id, endpoint_id).await? != Some(class) {
                    continue;
                }
            }
            picked.push(m.id.clone());
        }
        replayed += count_done(picked, |msg_id| async move {
            match store.resend(app_id, &msg_id, endpoint_id, now).await {
                Ok(()) => Ok(true),
                // Its content was deleted (or the message itself) since the page was read.
                Err(StoreError::Conflict(_) | StoreError::NotFound) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await?;
        match found.items.last().filter(|_| !found.done) {
            Some((last, _)) => page.iterator = Some(last.id.clone()),
            None => return Ok(replayed),
        }
    }
}

/// Does `one` for each message id, [`IN_FLIGHT`] at a time; answers how many it did
/// (`Ok(true)`), or the first error.
async fn count_done<F, Fut>(msg_ids: Vec<String>, one: F) -> StoreResult<u64>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = StoreResult<bool>>,
{
    futures::stream::iter(msg_ids)
        .map(one)
        .buffer_unordered(IN_FLIGHT)
        .try_fold(0u64, |n, done| async move { Ok(n + u64::from(done)) })
        .await
}

/// The class (100, 200, … or 0 for no answer) of the last attempt of a message to an endpoint.
async fn last_answer_class(store: &DynStore, app_id: &str, msg_id: &str, endpoint_id: &str) -> ApiResult<Option<i32>> {
    let filter = AttemptFilter {
        msg_id: Some(msg_id.to_string()),
        endpoint_id: Some(endpoint_id.to_string()),
        ..Default::default()
    };
    let last = store
        .list_attempts(app_id, &filter, &PageRequest { limit: 1, descending: true, ..PageRequest::default() })
        .await?;
    Ok(last.items.first().map(|a| a.response_status / 100 * 100))
}

/// Svix's `BulkExpungeContentsIn`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkExpungeIn {
    /// The messages (ids or `eventId`s), at most 1,000.
    ids: BTreeSet<String>,
}

/// Svix's `BulkExpungeContentsOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkExpungeOut {
    /// For each id asked for: `expunged` or `not-found`.
    #[schema(example = json!({"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W": "expunged"}))]
    results: BTreeMap<String, &'static str>,
}

/// Delete the content of several messages.
///
/// Each named message is expunged as by `DELETE …/msg/{msg_id}/content`: its payload
/// becomes `{}`, its pending deliveries fail, and it cannot be sent again.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/msg/bulk-expunge",
    tag = "Message",
    operation_id = "v1.message.bulk-expunge",
    params(AppPath),
    request_body = BulkExpungeIn,
    responses(
        (status = 200, description = "What became of each message", body = BulkExpungeOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application", body = ErrorBody),
        (status = 422, description = "No ids, or more than 1,000", body = ErrorBody),
    )
)]
pub async fn bulk_expunge(
    State(s): State<AppState>,
    t: Tenant,
    Json(input): Json<BulkExpungeIn>,
) -> ApiResult<axum::Json<BulkExpungeOut>> {
    if input.ids.is_empty() || input.ids.len() > MAX_EXPUNGE_IDS {
        return Err(ApiError::validation("ids", "must name 1 to 1000 messages"));
    }
    // All checked before any is expunged: a refusal after some were would hide that they were.
    input.ids.iter().try_for_each(|id| super::no_nul("ids", id))?;
    let now = Utc::now();
    let results = futures::stream::iter(input.ids)
        .map(|key| {
            let (s, app_id) = (&s, &t.app.id);
            async move {
                let Some(msg) = s.0.store.get_message(app_id, &key).await? else { return Ok((key, "not-found")) };
                match super::message::expunge(s, app_id, &msg.id, now).await {
                    Ok(()) => Ok((key, "expunged")),
                    Err(StoreError::NotFound) => Ok((key, "not-found")),
                    Err(e) => Err(ApiError::from(e)),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    Ok(axum::Json(BulkExpungeOut { results }))
}

/// Delete the content of every message of the application.
///
/// Every message that exists when asked is expunged as by `DELETE …/msg/{msg_id}/content`.
/// The answer is the `application.purge_content` task, `finished` unless the work
/// outlasts the server's `task_wait` (then `running`, and it goes on); `expunged` says how
/// many messages it went through.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/msg/expunge-all-contents",
    tag = "Message",
    operation_id = "v1.message.expunge-all-contents",
    params(AppPath),
    responses(
        (status = 202, description = "The task: `finished` with `expunged` (messages emptied), or `running` past `task_wait`", body = TaskOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application", body = ErrorBody),
    )
)]
pub async fn expunge_all_contents(State(s): State<AppState>, t: Tenant) -> ApiResult<impl IntoResponse> {
    let (state, app_id) = (s.clone(), t.app.id.clone());
    let now = super::now();
    let work = async move { expunge_all(&state, &app_id, now).await };
    TaskOut::start(&s, &t.app.id, "application.purge_content", None, "expunged", work).await
}

/// Expunges every message of the application created by `now`; answers how many.
async fn expunge_all(s: &AppState, app_id: &str, now: DateTime<Utc>) -> ApiResult<u64> {
    let store = &s.0.store;
    let mut page = PageRequest { limit: CHUNK, ..PageRequest::default() };
    // Only what exists now: messages posted while this runs keep their content.
    // Ids are all it needs: no payloads read.
    let filter = MessageFilter {
        before: Some(now + chrono::Duration::milliseconds(1)),
        without_payload: true,
        ..Default::default()
    };
    let mut expunged = 0u64;
    while crate::tasks::go_on().await {
        let found = store.list_messages(app_id, &filter, &page).await?;
        let ids: Vec<String> = found.items.into_iter().map(|m| m.id).collect();
        let next = ids.last().filter(|_| !found.done).cloned();
        // The engine drops what it holds of this chunk (in id order: one mark up to its last
        // id) as the store empties it; a purge that fails at a chunk has marked none after.
        if let Some(last) = ids.last() {
            let through = hooklane_store::Stop::MessagesThrough { app_id: app_id.to_string(), last_id: last.clone() };
            s.0.dispatcher.stop(through).await;
        }
        expunged += count_done(ids, |msg_id| async move {
            match store.expunge_message_content(app_id, &msg_id, now).await {
                Ok(()) => Ok(true),
                Err(StoreError::NotFound) => Ok(false), // deleted meanwhile
                Err(e) => Err(e),
            }
        })
        .await?;
        match next {
            Some(last) => page.iterator = Some(last),
            None => break,
        }
    }
    Ok(expunged)
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(bulk_replay, bulk_expunge, expunge_all_contents),
    components(schemas(BulkReplayIn, BulkExpungeIn, BulkExpungeOut))
)]
pub(crate) struct Doc;

#[cfg(test)]
mod tests {
    use super::*;
    use hooklane_core::model::{Application, Endpoint, Message};

    /// A replay stops at the next page once its endpoint is disabled (here, before its
    /// first): what it would queue again would be failed unsent, delivered messages turned
    /// to failures.
    #[tokio::test]
    async fn a_replay_queues_nothing_for_a_disabled_endpoint() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = hooklane_store::open(&dir.path().join("bulk.db").display().to_string()).await.expect("store");
        let t = Utc::now();
        let app = Application::new("a", t);
        store.create_app(app.clone()).await.expect("app");
        let ep = Endpoint::new(app.id.clone(), "https://example.com/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", t);
        store.create_endpoint(ep.clone()).await.expect("endpoint");
        let msg = Message::new(app.id.clone(), "a.b", "{}", t);
        store.create_message(msg, vec![ep.id.clone()], None).await.expect("message");
        let chosen =
            Chosen { filter: MessageFilter::default(), status: Some(DeliveryStatus::Pending), status_code_class: None };
        assert_eq!(replay(&store, &app.id, &ep.id, &chosen, t).await.expect("replay"), 1, "enabled: replayed");
        store.update_endpoint(Endpoint { disabled: true, ..ep.clone() }, None).await.expect("disable");
        assert_eq!(replay(&store, &app.id, &ep.id, &chosen, t).await.expect("replay"), 0, "disabled: nothing");
    }
}
