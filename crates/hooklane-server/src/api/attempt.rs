//! Attempts: the log of every HTTP try.

use axum::extract::State;
use axum::http::StatusCode;
use hooklane_core::model::{Attempt, Capability, DeliveryStatus, Principal};
use hooklane_core::{DateTime, Utc};
use hooklane_store::AttemptFilter;
use serde::Serialize;

use super::endpoint::find as find_endpoint;
use super::message::{find as find_message, message_filter, MessageOut};
use super::ListResponse;
use crate::error::{missing, ApiError, ApiResult};
use crate::extract::{Path, Query, Tenant};
use crate::openapi::{
    AttemptFilters, AttemptPath, EndpointPath, ErrorBody, ExpandedStatuses, InvalidQuery, MessageEndpointPath,
    MessageFilters, MessagePath, PageNewestFirst, Unauthorized,
};
use crate::state::AppState;

/// Svix's `MessageAttemptOut`: one HTTP try of a message to an endpoint.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptOut {
    #[schema(example = "atmpt_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    id: String,
    /// The URL the request was sent to.
    url: String,
    /// The response body (cut short when long), or what went wrong when there was no
    /// response; empty once expunged; `{}` in a list asked `with_content=false` (as Svix
    /// answers it: its SDKs ask so unless told otherwise).
    response: String,
    /// The HTTP status of the response; 0 when none was received (timeout, refused, blocked).
    response_status_code: i32,
    response_duration_ms: i64,
    /// 0 success, 1 pending, 2 fail, 3 sending, 4 canceled (Svix's `MessageStatus`); a canceled
    /// attempt is 4 only when asked `expanded_statuses=true`, 0 otherwise, as Svix answers it.
    #[schema(minimum = 0, maximum = 4)]
    status: i32,
    /// `status` as a word (`success`, `pending`, `fail`, `sending`, `canceled`), as Svix answers it.
    #[schema(value_type = String, example = "success")]
    status_text: &'static str,
    /// 0 scheduled, 1 manual (a resend).
    #[schema(minimum = 0, maximum = 1)]
    trigger_type: i32,
    #[schema(example = "msg_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    msg_id: String,
    #[schema(example = "ep_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    endpoint_id: String,
    /// When the attempt was made.
    timestamp: DateTime<Utc>,
    /// hooklane extension: the headers the request was sent with (absent for attempts
    /// recorded before hooklane kept them, and when no request could be sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_headers: Option<std::collections::BTreeMap<String, String>>,
    /// The attempt's message, without its payload (`{}`, whatever `with_content` says, as
    /// Svix answers it), when the list was asked `with_msg=true` (and it is still kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    msg: Option<MessageOut>,
}

/// What a token without `ViewEndpointSecret` sees of a custom header (an endpoint's, or a
/// forwarded request's).
pub const REDACTED: &str = "[redacted]";

/// An attempt's `response` in a list asked `with_content=false`: what Svix answers there.
const OMITTED_RESPONSE: &str = "{}";

/// How attempts are shown, as the query asks.
#[derive(Clone, Copy)]
struct AttemptView {
    /// Svix's `expanded_statuses`: see [`shown_status`].
    expanded: bool,
    /// Svix's `with_content` of attempt lists: whether `response` is shown.
    with_content: bool,
}

impl AttemptView {
    /// The view a list of attempts is asked for: `with_content` is true unless the query says
    /// otherwise, as on Svix's server (its SDKs say `false` unless told otherwise).
    fn of_list(q: &Query) -> ApiResult<AttemptView> {
        Ok(AttemptView { expanded: expanded_statuses(q)?, with_content: q.flag("with_content")?.unwrap_or(true) })
    }
}

/// Svix's `expanded_statuses` from the query: whether a canceled delivery or attempt may be
/// shown as such (false unless asked; see [`shown_status`]).
pub(super) fn expanded_statuses(q: &Query) -> ApiResult<bool> {
    Ok(q.flag("expanded_statuses")?.unwrap_or(false))
}

/// A status as shown to a caller that did (`expanded`) or did not ask for expanded statuses.
/// Canceled (4) came after Svix's first clients, whose status enums do not know it and fail
/// to read an answer that holds it: Svix shows it only to callers that ask
/// (`expanded_statuses=true`, which its current SDKs send), and to the others as the success
/// it is closest to (the delivery is over and counts against nothing).
pub(super) fn shown_status(status: DeliveryStatus, expanded: bool) -> DeliveryStatus {
    match status {
        DeliveryStatus::Canceled if !expanded => DeliveryStatus::Success,
        other => other,
    }
}

impl AttemptOut {
    fn new(a: Attempt, view: AttemptView) -> Self {
        let status = shown_status(a.status, view.expanded);
        AttemptOut {
            id: a.id,
            url: a.url,
            response: if view.with_content { a.response } else { OMITTED_RESPONSE.to_string() },
            response_status_code: a.response_status,
            response_duration_ms: a.duration_ms,
            status: status as i32,
            status_text: status_text(status),
            trigger_type: a.trigger as i32,
            msg_id: a.msg_id,
            endpoint_id: a.endpoint_id,
            timestamp: a.created_at,
            request_headers: a.request_headers,
            msg: None,
        }
    }

    /// Attempts as `principal` may see them: the values of custom headers (an endpoint's,
    /// or a forwarded request's), which often carry a credential, only with
    /// `ViewEndpointSecret` (as `GET …/headers` needs it), and the signature; the other
    /// headers hooklane sets itself hold none.
    fn seen_by(principal: &Principal, view: AttemptView) -> impl Fn(Attempt) -> AttemptOut {
        let secrets = principal.allows(Some(Capability::ViewEndpointSecret));
        move |a| {
            let mut out = AttemptOut::new(a, view);
            if !secrets {
                // The values of its query too: a transformation may have put its `variables`
                // there, which need ManageTransformations to be read.
                out.url = without_query_values(super::endpoint::without_credentials(std::mem::take(&mut out.url)));
            }
            if let (false, Some(headers)) = (secrets, out.request_headers.as_mut()) {
                // The signature too: with the payload, which such a token reads, it signs a
                // replay the receiver takes within its timestamp tolerance.
                for (name, value) in headers.iter_mut() {
                    if !hooklane_dispatch::sender::RESERVED.contains(&name.as_str()) || name == "webhook-signature" {
                        *value = REDACTED.to_string();
                    }
                }
            }
            out
        }
    }
}

/// A status as Svix writes it out beside its number.
pub(super) fn status_text(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Success => "success",
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Fail => "fail",
        DeliveryStatus::Sending => "sending",
        DeliveryStatus::Canceled => "canceled",
    }
}

/// The `status` filter (0 success, 1 pending, 2 fail, 3 sending, 4 canceled).
fn status_filter(q: &Query) -> ApiResult<Option<DeliveryStatus>> {
    q.parse::<i64>("status")?
        .map(|code| {
            DeliveryStatus::from_code(code).ok_or_else(|| ApiError::bad_query("status", "must be 0, 1, 2, 3 or 4"))
        })
        .transpose()
}

/// The filters of attempt lists: `status`, `before`, `after`, Svix's `status_code_class`,
/// and those of the attempts' messages (`event_types`, `channel`, `tag`).
fn filter(q: &Query) -> ApiResult<AttemptFilter> {
    let status = status_filter(q)?;
    let status_code_class = match q.parse::<u16>("status_code_class") {
        Ok(None) => None,
        Ok(Some(class)) if [0, 100, 200, 300, 400, 500].contains(&class) => Some(class),
        _ => return Err(ApiError::bad_query("status_code_class", "must be 0, 100, 200, 300, 400 or 500")),
    };
    let messages = message_filter(q)?;
    Ok(AttemptFilter {
        status,
        before: messages.before,
        after: messages.after,
        status_code_class,
        event_types: messages.event_types,
        channel: messages.channel,
        tag: messages.tag,
        ..AttemptFilter::default()
    })
}

/// Svix's `EndpointMessageOut`: a message with how its delivery to one endpoint stands.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMessageOut {
    #[serde(flatten)]
    message: MessageOut,
    /// The delivery's status: 0 success, 1 pending, 2 fail, 3 sending, 4 canceled (with
    /// `expanded_statuses=true`; 0 otherwise, as Svix answers older clients).
    #[schema(minimum = 0, maximum = 4)]
    status: i32,
    /// `status` as a word (`success`, `pending`, `fail`, `sending`, `canceled`).
    #[schema(value_type = String, example = "pending")]
    status_text: &'static str,
    /// When the next try is due; only for a pending delivery.
    next_attempt: Option<DateTime<Utc>>,
}

/// List the messages sent (or to be sent) to an endpoint, each with its delivery's status.
///
/// Newest first unless asked otherwise; filtered as message lists are, and by the
/// delivery's `status`.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-attempted-messages",
    params(
        EndpointPath,
        PageNewestFirst,
        MessageFilters,
        ("with_content" = Option<bool>, Query, description = "Whether messages carry their payloads (default true; \
            `false` answers `payload: {}`)"),
        ("status" = Option<u8>, Query, minimum = 0, maximum = 4, description = "Only messages whose delivery has this \
            status: 0 success, 1 pending, 2 fail, 3 sending, 4 canceled"),
        ExpandedStatuses,
    ),
    responses(
        (status = 200, description = "A page of messages", body = ListResponse<EndpointMessageOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn endpoint_messages(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, ep_key)): Path<(String, String)>,
) -> ApiResult<axum::Json<ListResponse<EndpointMessageOut>>> {
    let ep = find_endpoint(&s, &t, &ep_key).await?;
    let page = super::page_request_from(&q, hooklane_core::ids::MESSAGE)?;
    let with_content = q.flag("with_content")?.unwrap_or(true);
    let expanded = expanded_statuses(&q)?;
    let (filter, status) = (message_filter(&q)?, status_filter(&q)?);
    let page = s.0.store.endpoint_messages(&t.app.id, &ep.id, &filter, status, &page).await?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |(m, _)| m.id.clone(),
        |(m, d)| {
            let shown = shown_status(d.status, expanded);
            EndpointMessageOut {
                message: MessageOut::seen_by(m, with_content, &t.principal),
                status: shown as i32,
                status_text: status_text(shown),
                next_attempt: d.next_attempt_at.filter(|_| d.status == DeliveryStatus::Pending),
            }
        },
    )))
}

async fn list(
    s: &AppState,
    t: &Tenant,
    q: &Query,
    f: AttemptFilter,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    let page = super::page_request_from(q, hooklane_core::ids::ATTEMPT)?;
    let view = AttemptView::of_list(q)?;
    let page = s.0.store.list_attempts(&t.app.id, &f, &page).await?;
    Ok(axum::Json(ListResponse::from_page(page, |a| a.id.clone(), AttemptOut::seen_by(&t.principal, view))))
}

/// The attempts of the message `msg_key`, to the endpoint `endpoint_key` only when given
/// (id or uid; 404 when the application has no such endpoint).
async fn message_attempts(
    s: &AppState,
    t: &Tenant,
    q: &Query,
    msg_key: &str,
    endpoint_key: Option<&str>,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    let msg = find_message(s, t, msg_key).await?;
    let mut f = filter(q)?;
    f.msg_id = Some(msg.id);
    if let Some(ep) = endpoint_key {
        f.endpoint_id = Some(find_endpoint(s, t, ep).await?.id);
    }
    list(s, t, q, f).await
}

/// List a message's attempts (the older path of the list-by-msg operation).
///
/// Newest first unless asked otherwise. The same as `GET /api/v1/app/{app_id}/attempt/msg/{msg_id}`.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-by-msg-deprecated",
    params(
        MessagePath,
        PageNewestFirst,
        AttemptFilters,
        ("endpoint_id" = Option<String>, Query, description = "Only attempts to this endpoint (its id or uid)"),
        ("with_content" = Option<bool>, Query, description = WITH_CONTENT),
        ExpandedStatuses,
    ),
    responses(
        (status = 200, description = "A page of attempts", body = ListResponse<AttemptOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, message, or endpoint given in `endpoint_id`", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn by_message(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, msg_key)): Path<(String, String)>,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    message_attempts(&s, &t, &q, &msg_key, q.get("endpoint_id")).await
}

/// What `with_content` does in attempt lists.
const WITH_CONTENT: &str = "Whether attempts show the endpoint's response body (default true; `false` answers \
    `response: \"{}\"`, as Svix does; its SDKs send `false` unless told otherwise)";

/// List a message's attempts to one endpoint (Svix's deprecated path for it).
///
/// Newest first unless asked otherwise. The same as
/// `GET /api/v1/app/{app_id}/attempt/msg/{msg_id}?endpoint_id={endpoint_id}`, which Svix's
/// SDKs call now; older ones call this path.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/attempt",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-by-endpoint-deprecated",
    params(
        MessageEndpointPath,
        PageNewestFirst,
        AttemptFilters,
        ("with_content" = Option<bool>, Query, description = WITH_CONTENT),
        ExpandedStatuses,
    ),
    responses(
        (status = 200, description = "A page of attempts", body = ListResponse<AttemptOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, message or endpoint", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn by_message_and_endpoint(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, msg_key, ep_key)): Path<(String, String, String)>,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    message_attempts(&s, &t, &q, &msg_key, Some(&ep_key)).await
}

/// List a message's attempts, newest first unless asked otherwise.
///
/// Svix's `v1.message-attempt.list-by-msg` path; answered by the same code as the older
/// `GET /api/v1/app/{app_id}/msg/{msg_id}/attempt`.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/attempt/msg/{msg_id}",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-by-msg",
    params(
        MessagePath,
        PageNewestFirst,
        AttemptFilters,
        ("endpoint_id" = Option<String>, Query, description = "Only attempts to this endpoint (its id or uid)"),
        ("with_content" = Option<bool>, Query, description = WITH_CONTENT),
        ExpandedStatuses,
    ),
    responses(
        (status = 200, description = "A page of attempts", body = ListResponse<AttemptOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, message, or endpoint given in `endpoint_id`", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list_by_msg(
    state: State<AppState>,
    t: Tenant,
    q: Query,
    path: Path<(String, String)>,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    by_message(state, t, q, path).await
}

/// List the attempts made to an endpoint, newest first unless asked otherwise.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.list-by-endpoint",
    params(
        EndpointPath,
        PageNewestFirst,
        AttemptFilters,
        ("with_msg" = Option<bool>, Query, description = "Whether each attempt carries its message (`msg`; default \
            false), without its payload (`payload: {}`), as Svix answers it"),
        ("with_content" = Option<bool>, Query, description = WITH_CONTENT),
        ExpandedStatuses,
    ),
    responses(
        (status = 200, description = "A page of attempts", body = ListResponse<AttemptOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn by_endpoint(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, ep_key)): Path<(String, String)>,
) -> ApiResult<axum::Json<ListResponse<AttemptOut>>> {
    let ep = find_endpoint(&s, &t, &ep_key).await?;
    let mut f = filter(&q)?;
    f.endpoint_id = Some(ep.id);
    let with_msg = q.flag("with_msg")?.unwrap_or(false);
    let axum::Json(mut out) = list(&s, &t, &q, f).await?;
    if with_msg {
        // One read per message of the page (attempts of one message often come together).
        let mut messages: std::collections::HashMap<String, Option<MessageOut>> = Default::default();
        for attempt in &mut out.data {
            if !messages.contains_key(&attempt.msg_id) {
                let found = s.0.store.get_message(&t.app.id, &attempt.msg_id).await?;
                // Never with its payload: Svix's SDKs say so, whatever `with_content` (which
                // is about the attempts' responses here) asks.
                let shown = found.map(|m| MessageOut::seen_by(m, false, &t.principal));
                messages.insert(attempt.msg_id.clone(), shown);
            }
            attempt.msg = messages.get(&attempt.msg_id).cloned().flatten();
        }
    }
    Ok(axum::Json(out))
}

/// Delete an attempt's response body: forget what the endpoint answered.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.expunge-content",
    params(AttemptPath),
    responses(
        (status = 204, description = "Expunged"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, message or attempt", body = ErrorBody),
    )
)]
pub async fn expunge_content(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, msg_key, attempt_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let msg = find_message(&s, &t, &msg_key).await?;
    s.0.store.expunge_attempt_content(&t.app.id, &msg.id, &attempt_id).await.map_err(missing("attempt"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get one attempt of a message.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.get",
    params(AttemptPath, ExpandedStatuses),
    responses(
        (status = 200, description = "The attempt", body = AttemptOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, message or attempt", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, msg_key, attempt_id)): Path<(String, String, String)>,
) -> ApiResult<axum::Json<AttemptOut>> {
    // (One attempt always shows its response: Svix's `with_content` is the lists'.)
    let view = AttemptView { expanded: expanded_statuses(&q)?, with_content: true };
    let msg = find_message(&s, &t, &msg_key).await?;
    let a = s.0.store.get_attempt(&t.app.id, &msg.id, &attempt_id).await?.ok_or(ApiError::NotFound("attempt"))?;
    Ok(axum::Json(AttemptOut::seen_by(&t.principal, view)(a)))
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(endpoint_messages, by_message, by_message_and_endpoint, list_by_msg, get, expunge_content, by_endpoint),
    components(schemas(AttemptOut, EndpointMessageOut))
)]
pub(crate) struct Doc;

/// `url` with the value of each query parameter replaced by `redacted`.
fn without_query_values(url: String) -> String {
    match url::Url::parse(&url) {
        Ok(mut parsed) if parsed.query().is_some() => {
            let names: Vec<String> = parsed.query_pairs().map(|(name, _)| name.into_owned()).collect();
            parsed.query_pairs_mut().clear().extend_pairs(names.iter().map(|n| (n.as_str(), "redacted")));
            parsed.to_string()
        }
        _ => url,
    }
}
