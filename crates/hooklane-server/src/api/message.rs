//! `/api/v1/app/{app_id}/msg`: posting and reading messages.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hooklane_core::filter::{endpoint_wants, payload_wanted, LazyPayload};
use hooklane_core::ids::{self, new_id};
use hooklane_core::model::{Capability, Delivery, DeliveryStatus, Endpoint, Message, Principal, TriggerType};
use hooklane_core::{DateTime, Utc};
use hooklane_store::{Job, MessageFilter};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::app::ApplicationIn;
use super::endpoint::find as find_endpoint;
use super::{check_len, check_name, check_names, page_of, page_request, query_names, ListResponse};
use crate::error::{conflict, ApiError, ApiResult};
use crate::extract::{AppRef, Json, Path, Query, Tenant};
use crate::idempotency::IdempotentMessageId;
use crate::openapi::{
    AppPath, ErrorBody, ExpandedStatuses, InvalidBody, InvalidJson, InvalidQuery, MessageEndpointPath, MessageFilters,
    MessagePath, PageNewestFirst, PageOldestFirst, Unauthorized,
};
use crate::state::AppState;

/// Svix's `MessageIn`: a message to post.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageIn {
    /// The event type: 1–256 of `[a-zA-Z0-9-_.]`.
    #[schema(example = "invoice.paid")]
    event_type: String,
    /// The JSON object to deliver. Kept as the exact bytes received: that is what gets
    /// signed and delivered. At most 100 levels of nesting.
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    /// Unique within the application: a second message with the same `eventId` is refused
    /// (409). 1–256 of `[a-zA-Z0-9-_.]`, and not shaped like a message id (`msg_…`).
    #[serde(default)]
    #[schema(example = "unique-msg-identifier")]
    event_id: Option<String>,
    /// Only endpoints listening on one of these channels (or on none) receive it; 1–10 names.
    #[serde(default)]
    channels: Option<Vec<String>>,
    /// 1–5 names, for filtering message lists.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// hooklane's own: the message's lane at FIFO endpoints (`ordering: "fifo"`, see
    /// `DeliveryOrder::Fifo`): one message of a lane is sent at a time, in order; 1–256
    /// characters.
    #[serde(default)]
    ordering_key: Option<String>,
    /// Accepted for Svix compatibility and ignored: payloads are kept until the message is deleted.
    #[serde(default, rename = "payloadRetentionPeriod")]
    _retention_days: Option<serde_json::Value>,
    /// Accepted for Svix compatibility and ignored.
    #[serde(default, rename = "payloadRetentionHours")]
    _retention_hours: Option<serde_json::Value>,
    /// When to send the message: its deliveries wait until then (at most 30 days ahead; a
    /// time already past sends at once). Not for messages to FIFO endpoints, whose order
    /// comes first. The message is stored, listed and pulled at once.
    #[serde(default)]
    deliver_at: Option<DateTime<Utc>>,
    /// Svix's raw payloads (its SDKs' `new_raw_payload`, `with_content_type`):
    /// `rawPayload`, a string, is the body delivered instead of `payload` (which is then not
    /// read: the SDKs send `{}` or `""`), byte for byte, and signed as sent;
    /// `headers.content-type` is the media type deliveries carry (default
    /// `application/json`), with a raw payload or without. Other keys, and other headers, are
    /// accepted and ignored, as Svix keeps them for transformations to come.
    #[serde(default, rename = "transformationsParams")]
    #[schema(value_type = Option<Object>, example = json!({"rawPayload": "a=1&b=2",
        "headers": {"content-type": "application/x-www-form-urlencoded"}}))]
    transformations_params: Option<serde_json::Value>,
    /// Creates the application named in the path, with this as its body and the path's
    /// key as its `uid`, when none exists (admin token only); ignored when it exists.
    #[serde(default)]
    application: Option<ApplicationIn>,
}

impl MessageIn {
    /// Parses and validates a request body as the ingest handler does (also the entry
    /// point of the `payload` fuzz target).
    pub fn parse(body: &[u8]) -> ApiResult<MessageIn> {
        let input: MessageIn = serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        input.validate()?;
        Ok(input)
    }

    pub fn validate(&self) -> ApiResult<()> {
        check_name("eventType", &self.event_type)?;
        if let Some(id) = &self.event_id {
            check_name("eventId", id)?;
            // A message is fetched by id or eventId: one shaped like a message id would hide
            // the message it names, or be hidden by it.
            if ids::has_prefix(id, ids::MESSAGE) {
                return Err(ApiError::validation("eventId", "must not look like a message id"));
            }
        }
        check_names("channels", &self.channels, 10)?;
        if let Some(tags) = &self.tags {
            if tags.is_empty() || tags.len() > 5 {
                return Err(ApiError::validation("tags", "must hold between 1 and 5 items"));
            }
            if let Some(msg) = tags.iter().find_map(|t| super::tag_problem(t)) {
                return Err(ApiError::validation("tags", msg));
            }
        }
        if let Some(key) = &self.ordering_key {
            if key.is_empty() {
                return Err(ApiError::validation("orderingKey", "must not be empty (leave it out for none)"));
            }
            check_len("orderingKey", key, 256)?;
        }
        if self.deliver_at.is_some_and(|at| at > Utc::now() + chrono::Duration::days(MAX_SCHEDULE_DAYS)) {
            return Err(ApiError::validation("deliverAt", format!("must be at most {MAX_SCHEDULE_DAYS} days ahead")));
        }
        if self.body()?.raw {
            // The body is the raw text; `payload` is a placeholder nothing reads.
            return Ok(());
        }
        check_payload(self.payload.get())
    }

    /// The `payload` field exactly as received (not what is sent when the message has a
    /// raw payload: see [`MessageIn::body`]).
    pub fn payload(&self) -> &str {
        self.payload.get()
    }

    /// What the message delivers, from `payload` and `transformationsParams`, checked.
    pub fn body(&self) -> ApiResult<MessageBody<'_>> {
        use serde_json::Value;
        const PARAMS: &str = "transformationsParams";
        let json = MessageBody { text: self.payload.get(), content_type: None, raw: false };
        let params = match &self.transformations_params {
            None | Some(Value::Null) => return Ok(json),
            Some(Value::Object(params)) => params,
            Some(_) => return Err(ApiError::validation(PARAMS, "must be an object")),
        };
        let raw = match params.get("rawPayload") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => {
                // Stores keep bodies as text, and PostgreSQL text cannot hold NUL. (Its
                // size needs no check of its own: unescaped, it is shorter than the request
                // body that carried it, which `max_body_bytes` bounds, as it bounds `payload`.)
                if text.contains('\0') {
                    return Err(ApiError::validation(
                        "transformationsParams.rawPayload",
                        "must not contain NUL characters",
                    ));
                }
                // JSON text is shown as JSON in answers, lists and streams: nested past what
                // readers (Svix's SDKs included) take, it would make every page holding it
                // unreadable.
                if nesting_depth(text) > MAX_PAYLOAD_DEPTH && serde_json::from_str::<&RawValue>(text).is_ok() {
                    return Err(ApiError::validation(
                        "transformationsParams.rawPayload",
                        format!("as JSON, must not nest objects and arrays more than {MAX_PAYLOAD_DEPTH} deep"),
                    ));
                }
                Some(text.as_str())
            }
            Some(_) => {
                return Err(ApiError::validation(
                    "transformationsParams.rawPayload",
                    "must be a string: the body to send, as it is",
                ))
            }
        };
        let content_type = match params.get("headers") {
            None | Some(Value::Null) => None,
            Some(Value::Object(headers)) => {
                match headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("content-type")).map(|(_, v)| v) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(media_type)) => Some(check_content_type(media_type)?),
                    Some(_) => return Err(ApiError::validation(CONTENT_TYPE_FIELD, "must be a string")),
                }
            }
            Some(_) => return Err(ApiError::validation("transformationsParams.headers", "must be an object")),
        };
        Ok(match raw {
            // A raw body always says what it is, `application/json` included: answers show
            // it as text (`payloadEncoding: "string"`) when it is not JSON, as they show a
            // forwarded inbound body.
            Some(text) => MessageBody { text, content_type: Some(content_type.unwrap_or(JSON)), raw: true },
            None => MessageBody { content_type, ..json },
        })
    }
}

/// What a posted message delivers.
pub struct MessageBody<'a> {
    /// The body, byte for byte.
    pub text: &'a str,
    /// The media type its deliveries carry; `None`: `application/json`.
    pub content_type: Option<&'a str>,
    /// Whether `text` is Svix's `transformationsParams.rawPayload` (any text) rather than
    /// the `payload` field (a JSON object).
    pub raw: bool,
}

/// The media type of every message posted without one.
const JSON: &str = "application/json";

/// Where a message's content type is given.
const CONTENT_TYPE_FIELD: &str = "transformationsParams.headers.content-type";

/// A message's content type as given (surrounding blanks dropped), if it can be sent as one.
/// Checked here because the sender cannot refuse it: a value that is no valid header would
/// be replaced by `application/json` at every delivery, without a word.
fn check_content_type(given: &str) -> ApiResult<&str> {
    let media_type = given.trim_matches([' ', '\t']);
    check_len(CONTENT_TYPE_FIELD, media_type, 256)?;
    let header_text = media_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t');
    if !header_text || !media_type.contains('/') {
        return Err(ApiError::validation(
            CONTENT_TYPE_FIELD,
            "must be a media type of visible ASCII characters, such as `text/plain; charset=utf-8`",
        ));
    }
    Ok(media_type)
}

/// Furthest ahead a message may be scheduled (`deliverAt`).
const MAX_SCHEDULE_DAYS: i64 = 30;

/// Deepest nesting of objects and arrays accepted in a payload. The payload is kept as raw
/// text, which serde parses without a depth limit; receivers and API clients do have one
/// (serde_json's is 128, counting the envelope of list answers), so deeper payloads could
/// be accepted here and then be unreadable everywhere else.
pub(crate) const MAX_PAYLOAD_DEPTH: usize = 100;

/// A message's payload (valid JSON text) must be an object no deeper than [`MAX_PAYLOAD_DEPTH`].
pub(crate) fn check_payload(json: &str) -> ApiResult<()> {
    if !json.trim_start().starts_with('{') {
        return Err(ApiError::validation("payload", "must be a JSON object"));
    }
    if nesting_depth(json) > MAX_PAYLOAD_DEPTH {
        return Err(ApiError::validation(
            "payload",
            format!("must not nest objects and arrays more than {MAX_PAYLOAD_DEPTH} deep"),
        ));
    }
    Ok(())
}

/// How deeply objects and arrays nest in a JSON text (brackets inside strings not counted).
pub(crate) fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Svix's `MessageOut`.
#[derive(Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut {
    #[schema(example = "msg_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
    id: String,
    event_type: String,
    /// The payload as posted; `{}` when asked for without content (`with_content=false`) or
    /// once expunged; a string for a body that is not JSON (a forwarded inbound body, or a
    /// raw payload posted in `transformationsParams.rawPayload`).
    #[schema(value_type = serde_json::Value)]
    payload: PayloadOut,
    event_id: Option<String>,
    channels: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    /// When the message was created.
    timestamp: DateTime<Utc>,
    /// When its deliveries are first due, for a message posted with a `deliverAt` in the
    /// future (rounded up to the millisecond); left out for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliver_at: Option<DateTime<Utc>>,
    /// hooklane's own; left out when unset, so that answers stay Svix's.
    #[serde(skip_serializing_if = "Option::is_none")]
    ordering_key: Option<String>,
    /// hooklane's own: the media type the message's deliveries carry, for a message forwarded
    /// from an inbound source, or posted with a raw payload or a content type
    /// (`transformationsParams`); left out for the others (JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    /// hooklane's own: `"string"` when `payload` is a body that is not JSON (forwarded, or a
    /// raw payload), given as a JSON string of its text; left out otherwise (the payload is
    /// the JSON posted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "string")]
    payload_encoding: Option<&'static str>,
    /// hooklane's own: the headers a message forwarded from an inbound source carries to its
    /// deliveries (the provider's informative ones, e.g. `x-github-event`), their values
    /// `[redacted]` for a token without `ViewEndpointSecret`, as in attempts; left out when
    /// none (every message posted through the API), and in the answers of other operations
    /// than reading messages and the stream.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
}

/// A message's payload as answered: `{}` when the caller asked for no content
/// (`with_content=false`), as Svix answers: its SDKs require the field, and since v2 ask
/// for no content by default.
#[derive(Clone, Serialize)]
#[serde(untagged)]
enum PayloadOut {
    Raw(Box<RawValue>),
    Omitted(serde_json::Map<String, serde_json::Value>),
}

impl MessageOut {
    pub fn new(m: Message, with_content: bool) -> Self {
        let mut payload_encoding = None;
        let payload = if !with_content {
            None
        } else if m.content_type.is_some() && serde_json::from_str::<&RawValue>(&m.payload).is_err() {
            // A body that is not JSON (a forwarded form, a raw text payload): shown as a string.
            payload_encoding = Some("string");
            serde_json::value::to_raw_value(&m.payload).ok()
        } else {
            RawValue::from_string(m.payload).ok()
        };
        let payload = payload.map_or(PayloadOut::Omitted(serde_json::Map::new()), PayloadOut::Raw);
        MessageOut {
            id: m.id,
            event_type: m.event_type,
            payload,
            event_id: m.event_id,
            channels: m.channels,
            tags: m.tags,
            timestamp: m.created_at,
            deliver_at: m.deliver_at,
            ordering_key: m.ordering_key,
            content_type: m.content_type,
            payload_encoding,
            // Only as a reader may see them: `seen_by`.
            headers: BTreeMap::new(),
        }
    }

    /// [`MessageOut::new`] with the headers a forwarded message carries, as `principal` may
    /// see them: their values only given `ViewEndpointSecret` (they may carry a credential,
    /// as an endpoint's headers may), as in attempts.
    pub fn seen_by(mut m: Message, with_content: bool, principal: &Principal) -> Self {
        let mut headers = std::mem::take(&mut m.headers);
        if !principal.allows(Some(Capability::ViewEndpointSecret)) {
            for value in headers.values_mut() {
                *value = super::attempt::REDACTED.to_string();
            }
        }
        let mut out = MessageOut::new(m, with_content);
        out.headers = headers;
        out
    }
}

/// Posts a message to the application's endpoints.
///
/// Stores it with one delivery per matching endpoint, durably, then hands the deliveries
/// straight to the dispatcher (no poll in between) and answers 202.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/msg",
    tag = "Message",
    operation_id = "v1.message.create",
    params(
        AppPath,
        ("with_content" = Option<bool>, Query, description = "Whether the answer carries the payload (default true; \
            `false` answers `payload: {}`)"),
        IdempotencyKey,
    ),
    request_body = MessageIn,
    responses(
        (status = 202, description = "Stored durably and queued for every enabled endpoint that wants it",
            body = MessageOut,
         headers(("idempotent-replayed" = String, description = "`true` when this is the stored answer to an earlier \
             request with the same `idempotency-key`"))),
        (status = 400, description = "Malformed JSON, or an invalid `idempotency-key`", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application (or not the token's)", body = ErrorBody),
        (status = 409, description = "A message with this `eventId` exists in the application, or a request with this \
            `idempotency-key` is still being processed", body = ErrorBody),
        (status = 413, description = "The body is larger than the server's limit", body = ErrorBody),
        (status = 429, description = "The application posted more messages a second than the server's \
            `message_rate_limit` (`rate_limited`); `Retry-After` says in how many seconds to try again",
            body = ErrorBody),
        (status = 422, description = "A field is invalid, or the `idempotency-key` was used with another body",
            body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    app: AppRef,
    q: Query,
    keyed: Option<axum::Extension<IdempotentMessageId>>,
    Json(mut input): Json<MessageIn>,
) -> ApiResult<impl IntoResponse> {
    input.validate()?;
    let with_content = q.flag("with_content")?.unwrap_or(true);
    let app_id = match (app, input.application.take()) {
        // A source's application: its event ids are its provider's delivery ids, by which
        // the source tells a provider's retry from a new event. One posted here first would
        // be taken for the provider's event when it came: dropped as a duplicate, and the
        // posted message fanned out in its place.
        (AppRef::Found(t), _) if input.event_id.is_some() && super::source::owned_by_source(&t.app) => {
            return Err(ApiError::validation(
                "eventId",
                "is not taken by an inbound source's application: its event ids are its provider's delivery ids",
            ));
        }
        (AppRef::Found(t), _) => t.app.id,
        (AppRef::Missing { principal: Principal::Admin, key }, Some(body)) => {
            super::app::create_for_message(&s, &key, body).await?.id
        }
        (AppRef::Missing { .. }, _) => return Err(ApiError::NotFound("application")),
    };
    s.0.message_rate.take(&app_id, std::time::Instant::now()).map_err(ApiError::RateLimited)?;
    let body = input.body()?;
    let (payload, content_type) = (body.text.to_string(), body.content_type.map(String::from));
    let msg = Message {
        // A keyed create's id is its key's: a retry after a crash finds the message by it.
        id: keyed.map_or_else(|| new_id(ids::MESSAGE), |axum::Extension(id)| id.0),
        app_id,
        event_type: input.event_type,
        event_id: input.event_id,
        payload,
        channels: input.channels,
        tags: input.tags,
        created_at: super::now(),
        content_type,
        headers: Default::default(),
        ordering_key: input.ordering_key,
        deliver_at: None,
    };
    // (Up to the next whole millisecond, the store's precision: never sent before its time.)
    let deliver_at = input.deliver_at.filter(|at| *at > msg.created_at).map(ceil_to_millis);
    let msg = match deliver_at {
        None => store_and_dispatch(&s, msg).await,
        Some(at) => schedule(&s, Message { deliver_at: Some(at), ..msg }, at).await?,
    }
    .map_err(conflict("a message with this eventId already exists in this application"))?;
    let out = MessageOut::new(msg, with_content);
    Ok((StatusCode::ACCEPTED, axum::Json(out)))
}

/// `at`, rounded up to a whole millisecond: times are stored to the millisecond, and a
/// bound finer than that compares as its next one (a message of `.123` is before
/// `.1235`, and not after it).
pub(super) fn ceil_to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{DurationRound, TimeDelta};
    // (At the calendar's very end there is no next millisecond: `at` as it is.)
    at.duration_trunc(TimeDelta::milliseconds(1)).map_or(at, |down| {
        if down < at {
            down.checked_add_signed(TimeDelta::milliseconds(1)).unwrap_or(at)
        } else {
            down
        }
    })
}

/// Stores a message whose deliveries are first due at `at` (Svix's `deliverAt`): nothing is
/// handed to the dispatcher now; its poller claims them when they fall due.
async fn schedule(s: &AppState, msg: Message, at: DateTime<Utc>) -> ApiResult<hooklane_store::StoreResult<Message>> {
    let endpoints = endpoints_to_send(s, &msg).await?;
    // A lane's order comes before any schedule: a scheduled message would hold up the lane
    // behind it, or be sent as soon as its turn comes, before its time.
    if let Some(fifo) = endpoints.iter().find(|e| e.order.is_fifo()) {
        return Err(ApiError::validation(
            "deliverAt",
            format!("cannot be used for a message to a FIFO endpoint ({}): their order comes first", fifo.id),
        ));
    }
    let ids = endpoints.iter().map(|e| e.id.clone()).collect();
    let written = s.0.store.schedule_message(msg.clone(), ids, at).await;
    if written.is_ok() {
        metrics::counter!("hooklane_messages_ingested_total").increment(1);
        // The poller looks again for the earliest due time, which may now be this one.
        s.0.dispatcher.wake();
    }
    Ok(written.map(|()| msg))
}

/// The endpoints a message is sent to: those that want it, but polling endpoints.
async fn endpoints_to_send(s: &AppState, msg: &Message) -> hooklane_store::StoreResult<Vec<Arc<Endpoint>>> {
    let mut endpoints =
        wanting_endpoints(s, &msg.app_id, &msg.event_type, msg.channels.as_deref(), Some(&msg.payload)).await?;
    endpoints.retain(|e| !e.polling);
    Ok(endpoints)
}

/// The enabled endpoints of the application that want a message of `event_type` on
/// `channels` with this `payload`, polling endpoints (which read it, and are sent nothing)
/// included. Without a payload (a precheck, which has none), an endpoint with a payload
/// filter counts as wanting it: it may.
async fn wanting_endpoints(
    s: &AppState,
    app_id: &str,
    event_type: &str,
    channels: Option<&[String]>,
    payload: Option<&str>,
) -> hooklane_store::StoreResult<Vec<Arc<Endpoint>>> {
    let endpoints = s.0.cache.endpoints(&s.0.store, app_id).await?;
    let mut payload = payload.map(LazyPayload::new);
    let wanting = endpoints
        .iter()
        .filter(|e| {
            !e.disabled
                && endpoint_wants(e.filter_types.as_deref(), e.channels.as_deref(), event_type, channels)
                && payload.as_mut().is_none_or(|p| payload_wanted(e.payload_filter.as_ref(), p))
        })
        .cloned()
        .collect();
    if payload.is_some_and(|p| p.filters_spent()) {
        // The endpoints whose filters were evaluated past the budget were not sent it.
        tracing::warn!(
            app_id,
            "the payload filters of a message's endpoints ran past their budget: the rest matched nothing"
        );
        metrics::counter!("hooklane_payload_filter_budget_spent_total").increment(1);
    }
    Ok(wanting)
}

/// Svix's `MessagePrecheckIn`: the message that would be posted, without its payload.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrecheckIn {
    #[schema(example = "invoice.paid")]
    event_type: String,
    /// 1–10 channel names.
    #[serde(default)]
    channels: Option<Vec<String>>,
}

/// Svix's `MessagePrecheckOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PrecheckOut {
    /// Whether any enabled endpoint would receive the message now (an endpoint with a
    /// payload filter counts, as the payload is not known).
    active: bool,
}

/// Tells whether a message would be sent to any endpoint.
///
/// `POST /app/{app_id}/msg/precheck/active` (Svix's `message.precheck`): whether a message
/// of this event type on these channels would go to any endpoint now, so that a sender can
/// skip building payloads nobody receives. (Pulling readers see every message whatever
/// this answers.)
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/msg/precheck/active",
    tag = "Message",
    operation_id = "v1.message.precheck",
    params(AppPath),
    request_body = PrecheckIn,
    responses(
        (status = 200, description = "Whether a message would be sent to any endpoint", body = PrecheckOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application (or not the token's)", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn precheck(
    State(s): State<AppState>,
    t: Tenant,
    Json(input): Json<PrecheckIn>,
) -> ApiResult<axum::Json<PrecheckOut>> {
    check_name("eventType", &input.event_type)?;
    check_names("channels", &input.channels, 10)?;
    let wanting = wanting_endpoints(&s, &t.app.id, &input.event_type, input.channels.as_deref(), None).await?;
    Ok(axum::Json(PrecheckOut { active: !wanting.is_empty() }))
}

/// Stores a message of `msg.app_id` with one delivery per enabled endpoint that wants it,
/// in one durable write, then hands the deliveries straight to the dispatcher (or wakes
/// it when memory is full). Every message enters here: posted through the API or
/// forwarded from an inbound source (an endpoint's example goes to that endpoint only,
/// through [`store_and_dispatch_to`]). A duplicate `event_id` is a
/// [`StoreError::Conflict`](hooklane_store::StoreError::Conflict) and writes nothing.
pub async fn store_and_dispatch(s: &AppState, msg: Message) -> hooklane_store::StoreResult<Message> {
    let endpoints = endpoints_to_send(s, &msg).await?;
    store_and_dispatch_to(s, msg, endpoints).await
}

/// Stores a message for these endpoints only (whatever their filters say) and hands its
/// deliveries to the engine as [`store_and_dispatch`] does.
pub async fn store_and_dispatch_to(
    s: &AppState,
    msg: Message,
    endpoints: Vec<Arc<Endpoint>>,
) -> hooklane_store::StoreResult<Message> {
    let ids: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
    let dispatcher = &s.0.dispatcher;
    let reservation = if ids.is_empty() { None } else { dispatcher.reserve(&endpoints) };
    // From now, not from the message's creation: an inbound request's starts before its
    // body is read, and the engine counts the lease from when it takes the job.
    let leased_until =
        reservation.as_ref().map(|_| Utc::now() + chrono::Duration::from_std(dispatcher.lease()).unwrap_or_default());
    let wanted = ids.len();
    let leased = s.0.store.create_message(msg.clone(), ids, leased_until).await?;
    metrics::counter!("hooklane_messages_ingested_total").increment(1);
    let msg = Arc::new(msg);
    // Deliveries to FIFO endpoints are written unleased even when asked (the store knows
    // whether their lane is free): they are the poller's.
    if leased.len() < wanted {
        dispatcher.wake();
    }
    if let Some(reservation) = reservation {
        let jobs = endpoints
            .into_iter()
            .filter(|endpoint| leased.contains(&endpoint.id))
            .map(|endpoint| Job {
                delivery: Delivery {
                    msg_id: msg.id.clone(),
                    endpoint_id: endpoint.id.clone(),
                    app_id: msg.app_id.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    // The lease it is sent under (its attempt's outcome names it).
                    next_attempt_at: leased_until,
                    trigger: TriggerType::Scheduled,
                    updated_at: msg.created_at,
                },
                message: msg.clone(),
                endpoint,
            })
            .collect();
        dispatcher.submit(jobs, reservation);
    }
    Ok(Arc::unwrap_or_clone(msg))
}

/// The filters of message lists (`event_types`, `channel`, `tag`, `before`, `after`).
pub fn message_filter(q: &Query) -> ApiResult<MessageFilter> {
    Ok(MessageFilter {
        event_types: query_names(q, "event_types")?,
        channel: query_name(q, "channel")?,
        tag: match q.get("tag").filter(|v| !v.is_empty()) {
            Some(tag) => match super::tag_problem(tag) {
                Some(msg) => return Err(ApiError::bad_query("tag", msg)),
                None => Some(tag.to_string()),
            },
            None => None,
        },
        // (`after` is exclusive: to the millisecond, truncated, it is right as it is.)
        before: q.time("before")?.map(ceil_to_millis),
        after: q.time("after")?,
        without_payload: false,
    })
}

/// A name (a channel, a tag) given in the query, valid as those of messages are; none when
/// empty.
fn query_name(q: &Query, name: &str) -> ApiResult<Option<String>> {
    let Some(value) = q.get(name).filter(|v| !v.is_empty()) else { return Ok(None) };
    match super::name_problem(value) {
        Some(msg) => Err(ApiError::bad_query(name, msg)),
        None => Ok(Some(value.to_string())),
    }
}

/// Lists the application's messages, newest first unless `order=ascending`.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/msg",
    tag = "Message",
    operation_id = "v1.message.list",
    params(
        AppPath,
        PageNewestFirst,
        MessageFilters,
        ("with_content" = Option<bool>, Query, description = "Whether messages carry their payloads (default true; \
            `false` answers `payload: {}`)"),
    ),
    responses(
        (status = 200, description = "A page of messages", body = ListResponse<MessageOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application (or not the token's)", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list(State(s): State<AppState>, t: Tenant, q: Query) -> ApiResult<axum::Json<ListResponse<MessageOut>>> {
    let page = super::page_request_from(&q, ids::MESSAGE)?;
    let with_content = q.flag("with_content")?.unwrap_or(true);
    // Payloads not answered are not read either.
    let filter = MessageFilter { without_payload: !with_content, ..message_filter(&q)? };
    let page = s.0.store.list_messages(&t.app.id, &filter, &page).await?;
    Ok(axum::Json(ListResponse::from_page(
        page,
        |m| m.id.clone(),
        |m| MessageOut::seen_by(m, with_content, &t.principal),
    )))
}

pub async fn find(s: &AppState, t: &Tenant, key: &str) -> ApiResult<Message> {
    s.0.store.get_message(&t.app.id, key).await?.ok_or(ApiError::NotFound("message"))
}

/// Gets a message by id or `eventId`.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/msg/{msg_id}",
    tag = "Message",
    operation_id = "v1.message.get",
    params(
        MessagePath,
        ("with_content" = Option<bool>, Query, description = "Whether the answer carries the payload (default true; \
            `false` answers `payload: {}`)"),
    ),
    responses(
        (status = 200, description = "The message", body = MessageOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or message", body = ErrorBody),
        (status = 422, description = "`with_content` is not a boolean", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<MessageOut>> {
    let with_content = q.flag("with_content")?.unwrap_or(true);
    Ok(axum::Json(MessageOut::seen_by(find(&s, &t, &key).await?, with_content, &t.principal)))
}

/// Deletes a message's payload.
///
/// `DELETE /app/{app_id}/msg/{msg_id}/content` (Svix's `message.expunge_content`): the
/// message's payload becomes `{}`, its pending deliveries fail, and it cannot be sent again.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app_id}/msg/{msg_id}/content",
    tag = "Message",
    operation_id = "v1.message.expunge-content",
    params(MessagePath),
    responses(
        (status = 204, description = "The payload is deleted"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or message", body = ErrorBody),
    )
)]
pub async fn expunge_content(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let msg = find(&s, &t, &key).await?;
    expunge(&s, &t.app.id, &msg.id, Utc::now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a message's content, and tells the engine: the jobs it holds for the message,
/// with a copy of the content, are not sent.
pub(crate) async fn expunge(
    s: &AppState,
    app_id: &str,
    msg_id: &str,
    now: DateTime<Utc>,
) -> Result<(), hooklane_store::StoreError> {
    s.0.store.expunge_message_content(app_id, msg_id, now).await?;
    s.0.dispatcher.stop(hooklane_store::Stop::Message(msg_id.to_string())).await;
    Ok(())
}

/// Svix's `MessageEndpointOut`: an endpoint with the state of this message's delivery to it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageEndpointOut {
    #[schema(example = "ep_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
    id: String,
    url: String,
    description: String,
    disabled: bool,
    uid: Option<String>,
    version: i32,
    filter_types: Option<Vec<String>>,
    /// `filterTypes` under the name Svix's generated `MessageEndpointOut` reads.
    event_types: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    rate_limit: Option<u32>,
    /// `rateLimit` as Svix's SDKs read it (a 16-bit number; absent when larger).
    throttle_rate: Option<u16>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The delivery's state, as Svix's `MessageStatus`: 0 success, 1 pending, 2 failed, 3 sending,
    /// 4 canceled (with `expanded_statuses=true`; 0 otherwise, as Svix answers older clients).
    #[schema(maximum = 4, minimum = 0)]
    status: i32,
    /// `status` as a word (`success`, `pending`, `fail`, `sending`, `canceled`); Svix's SDKs
    /// require it.
    status_text: &'static str,
    /// When the next attempt is due, while one is.
    next_attempt: Option<DateTime<Utc>>,
}

/// Lists the endpoints a message is (or was) sent to.
///
/// Each with the state of the message's delivery to it, in the order of their ids (oldest
/// endpoint first) unless `order=descending`.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint",
    tag = "Message",
    operation_id = "v1.message-attempt.list-attempted-destinations",
    params(MessagePath, PageOldestFirst, ExpandedStatuses),
    responses(
        (status = 200, description = "A page of the endpoints with a delivery of the message",
            body = ListResponse<MessageEndpointOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or message", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn destinations(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<ListResponse<MessageEndpointOut>>> {
    let page = page_request(&q, false)?;
    let expanded = super::attempt::expanded_statuses(&q)?;
    let msg = find(&s, &t, &key).await?;
    // A message has one delivery per endpoint it went to, so all of them are read and the
    // page is cut here: as many rows as the application has endpoints, not more.
    let rows = s.0.store.message_deliveries(&t.app.id, &msg.id).await?;
    let page = page_of(rows, |(_, e)| e.id.as_str(), &page);
    Ok(axum::Json(ListResponse::from_page(
        page,
        |(_, e)| e.id.clone(),
        |(d, mut e)| {
            let status = super::attempt::shown_status(d.status, expanded);
            MessageEndpointOut {
                // (A polling endpoint has deliveries only from a node of an older version.)
                url: super::endpoint::url_seen_by(super::endpoint::answered_url(&s, &mut e), &t.principal),
                id: e.id,
                description: e.description,
                disabled: e.disabled,
                uid: e.uid,
                version: e.version,
                event_types: e.filter_types.clone(),
                filter_types: e.filter_types,
                channels: e.channels,
                throttle_rate: e.rate_limit.and_then(|r| u16::try_from(r).ok()),
                rate_limit: e.rate_limit,
                created_at: e.created_at,
                updated_at: e.updated_at,
                status: status as i32,
                status_text: super::attempt::status_text(status),
                next_attempt: d.next_attempt_at,
            }
        },
    )))
}

/// Sends a message to an endpoint again.
///
/// A manual attempt, with retries on failure. Answers 202 with `{}`, as Svix does (its SDKs
/// parse the body).
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
    tag = "Message",
    operation_id = "v1.message-attempt.resend",
    params(
        MessageEndpointPath,
        IdempotencyKey,
    ),
    responses(
        (status = 202, description = "Queued for sending now", body = Object, example = json!({})),
        (status = 400, description = "An invalid `idempotency-key`", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, message or endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled, the message's content was expunged, or a request with \
            this `idempotency-key` is still being processed", body = ErrorBody),
        (status = 422, description = "The `idempotency-key` was used with another body", body = ErrorBody),
    )
)]
pub async fn resend(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, msg_key, ep_key)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    let msg = find(&s, &t, &msg_key).await?;
    let ep = find_endpoint(&s, &t, &ep_key).await?;
    super::endpoint::require_enabled(&ep)?;
    s.0.store.resend(&t.app.id, &msg.id, &ep.id, Utc::now()).await?;
    s.0.dispatcher.retry_endpoint_now(&ep.id);
    Ok((StatusCode::ACCEPTED, axum::Json(serde_json::Map::new())))
}

/// The `idempotency-key` header, which every POST of the API takes (see `crate::idempotency`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Describes a header the idempotency layer reads; never built.
pub(crate) struct IdempotencyKey {
    /// Makes a retry safe: the first successful answer for a key is stored for 24 hours and
    /// answered again to every request with the same key, path and token (a refusal is not
    /// stored, so a corrected retry runs). 1–256 visible ASCII characters.
    #[param(rename = "idempotency-key")]
    idempotency_key: Option<String>,
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, precheck, get, expunge_content, destinations, resend),
    components(schemas(MessageIn, MessageOut, PrecheckIn, PrecheckOut, MessageEndpointOut))
)]
pub(crate) struct Doc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_rounds_up_to_the_millisecond() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(ceil_to_millis(at("2030-01-01T00:00:00.123400Z")), at("2030-01-01T00:00:00.124Z"));
        assert_eq!(ceil_to_millis(at("2030-01-01T00:00:00.123Z")), at("2030-01-01T00:00:00.123Z"));
        assert_eq!(ceil_to_millis(at("2030-01-01T00:00:00.999999999Z")), at("2030-01-01T00:00:01Z"));
    }
}
