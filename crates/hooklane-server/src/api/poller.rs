//! `/api/v1/app/{app_id}/poller/{endpoint_id}`: polling endpoints (Svix's `message.poller`).
//!
//! A polling endpoint (`"polling": true` when created) is sent nothing: its consumer reads
//! the application's messages that the endpoint's `filterTypes` and `channels` let
//! through, created since the endpoint was, in the order of the application's stream (see
//! [`super::events`], whose reads these are):
//!
//! - `GET …/poller/{endpoint_id}`: a poll, with the consumer's own `iterator` (`limit`,
//!   `event_type`, `channel`, `after`, and hooklane's `wait` and `with_content`);
//! - `GET …/poller/{endpoint_id}/consumer/{consumer_id}`: the same with the position kept
//!   by the server, per consumer of the endpoint;
//! - `POST …/poller/{endpoint_id}/consumer/{consumer_id}/seek`: moves a consumer to the
//!   first message created after a time.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::TimeDelta;
use hooklane_core::model::{Endpoint, Principal};
use hooklane_core::{DateTime, Utc};
use hooklane_store::{EventPosition, EventsPage, EventsQuery, ReadFrom};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::check_name;
use super::events::{no_place, waited_token_works, waiting_place, Follower, MessageEventsOut, Pull};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Json, OptionalJson, Path, Query, Tenant};
use crate::openapi::{ErrorBody, InvalidBody, InvalidJson, NotAdmin, Unauthorized};
use crate::state::{hex, token_hash, AppState};
use hooklane_core::ids;

/// `…/poller/{endpoint_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
struct PollerPath {
    /// The application's id or uid
    app_id: String,
    /// The polling endpoint's id or uid
    endpoint_id: String,
}

/// `…/poller/{endpoint_id}/consumer/{consumer_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
struct ConsumerPath {
    /// The application's id or uid
    app_id: String,
    /// The polling endpoint's id or uid
    endpoint_id: String,
    #[doc = "The consumer's name, chosen by it: 1–256 of `[a-zA-Z0-9-_.]`. A new name starts with the first \
             message the endpoint gets"]
    consumer_id: String,
}

/// Svix's `PollingEndpointConsumerSeekIn`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekIn {
    /// The consumer reads on from the first message created after this time (RFC 3339).
    after: DateTime<Utc>,
}

/// Svix's `PollingEndpointConsumerSeekOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SeekOut {
    /// Where the consumer now stands, as an `iterator` to read from.
    iterator: String,
}

/// `{endpoint_id}` of the tenant's application, which must be an enabled polling endpoint
/// (and, for a polling endpoint's key, its own: another answers 404, as a missing one).
async fn polling_endpoint(s: &AppState, t: &Tenant, key: &str) -> ApiResult<Endpoint> {
    let ep = match &t.principal {
        // A key reads its own endpoint, and learns nothing of the others: whatever else the
        // path names is not found alike.
        Principal::Poller { endpoint_id, .. } => {
            let own = s.0.store.get_endpoint(&t.app.id, endpoint_id).await?;
            own.filter(|ep| ep.id == key || ep.uid.as_deref() == Some(key))
        }
        _ => s.0.store.get_endpoint(&t.app.id, key).await?,
    };
    let Some(ep) = ep.filter(|ep| ep.polling) else { return Err(ApiError::NotFound("polling endpoint")) };
    super::endpoint::refuse_disabled(&ep)?;
    Ok(ep)
}

/// Where a polling endpoint's reads start: its own position, kept as an events
/// subscription named `{endpoint_id}/` (consumer names are never empty), so that a read
/// from it skips every message that was durable when the endpoint was created without
/// reading them.
fn start_key(ep: &Endpoint) -> String {
    format!("{}/", ep.id)
}

/// The stream's end before a polling endpoint is written: where its reads will start
/// (taken before, so that no message created after the endpoint can lie before it).
pub(crate) async fn start_to_record(s: &AppState) -> Option<EventPosition> {
    match s.0.store.message_events_end().await {
        Ok(end) => Some(end),
        Err(e) => {
            tracing::warn!(error = %e, "the stream's end was not read: a new polling endpoint reads from the start");
            None
        }
    }
}

/// Records where a new polling endpoint's reads start. Without it (a failure is only
/// logged) its reads start at the beginning of the stream, and the endpoint's creation
/// time still leaves out what came before it. Made as its consumers are, so that an
/// endpoint deleted meanwhile is left no position (and not bounded: one per endpoint).
pub(crate) async fn record_start(s: &AppState, ep: &Endpoint, start: Option<EventPosition>) {
    let Some(start) = start else { return };
    let key = start_key(ep);
    match s.0.store.add_events_subscription(&ep.app_id, &key, start, (&key, u64::MAX), Utc::now()).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(endpoint_id = %ep.id, "a polling endpoint deleted as it was created has no start"),
        Err(e) => tracing::warn!(endpoint_id = %ep.id, error = %e, "a polling endpoint's start was not recorded"),
    }
}

/// Where reads of `ep` start without an iterator or a consumer's position.
async fn start(s: &AppState, ep: &Endpoint) -> ApiResult<Option<EventPosition>> {
    Ok(s.0.store.get_events_subscription(&ep.app_id, &start_key(ep)).await?)
}

/// The earliest a polling endpoint's messages are created: when it was (to the
/// millisecond, as stored; `since` bounds are exclusive), less `CLOCK_SKEW` when its start
/// was recorded (`started`), which then bounds reads too.
fn endpoint_since(ep: &Endpoint, asked: Option<DateTime<Utc>>, started: bool) -> DateTime<Utc> {
    let skew = if started { CLOCK_SKEW } else { TimeDelta::zero() };
    let created = ep.created_at - TimeDelta::milliseconds(1) - skew;
    asked.map_or(created, |t| t.max(created))
}

/// How far behind the clock that timed a polling endpoint's creation another node's clock
/// may be, for its messages to still count as the endpoint's. The recorded start is the main
/// bound; on PostgreSQL it is where the oldest transaction still open stood, so a long one
/// left open elsewhere would let in the messages committed during it, and the creation time
/// less this keeps those out.
const CLOCK_SKEW: TimeDelta = TimeDelta::seconds(1);

/// A poll's event types and channels: the endpoint's, narrowed by the query's
/// `event_type` and `channel` (Svix's poll filters, one name each).
struct Filters {
    event_types: Option<Vec<String>>,
    channels: Option<Vec<String>>,
    /// Channels a message must also be on one of (the endpoint's, when the query asked
    /// for another channel): checked after the read.
    also_on: Option<Vec<String>>,
}

impl Filters {
    /// The endpoint's own filters (a consumer's read, which takes none of its own).
    fn own(ep: &Endpoint) -> Filters {
        Filters { event_types: ep.filter_types.clone(), channels: ep.channels.clone(), also_on: None }
    }

    /// The endpoint's filters narrowed by the query's; `None` when the query asks for what
    /// the endpoint never gets.
    fn of(ep: &Endpoint, q: &Query) -> ApiResult<Option<Filters>> {
        let name = |field: &str| -> ApiResult<Option<String>> {
            let Some(value) = q.get(field).filter(|v| !v.is_empty()) else { return Ok(None) };
            check_name(field, value).map_err(|_| ApiError::bad_query(field, "is not a valid name"))?;
            Ok(Some(value.to_string()))
        };
        let event_types = match (name("event_type")?, &ep.filter_types) {
            (Some(asked), Some(types)) if !types.contains(&asked) => return Ok(None),
            (Some(asked), _) => Some(vec![asked]),
            (None, types) => types.clone(),
        };
        let (channels, also_on) = match (name("channel")?, &ep.channels) {
            (Some(asked), Some(own)) if !own.contains(&asked) => (Some(vec![asked]), Some(own.clone())),
            (Some(asked), _) => (Some(vec![asked]), None),
            (None, own) => (own.clone(), None),
        };
        Ok(Some(Filters { event_types, channels, also_on }))
    }

    /// Drops what the read could not filter out itself; the page's `next` stays where the
    /// read stopped, past what is dropped.
    fn apply(&self, mut page: EventsPage) -> EventsPage {
        if let Some(wanted) = &self.also_on {
            page.messages.retain(|(_, m)| m.channels.as_ref().is_some_and(|c| c.iter().any(|c| wanted.contains(c))));
        }
        page
    }
}

/// Reads a polling endpoint's messages from `position` (or the query's `iterator`), never
/// from before the endpoint's recorded start `floor` (an iterator of the application's
/// stream from earlier reads no history), nor messages created more than `CLOCK_SKEW`
/// before the endpoint: a message's creation time comes from the clock of the node that
/// took it, which may be behind the clock that timed the endpoint's creation. Without a
/// recorded start, the creation time alone bounds it.
async fn read(
    s: &AppState,
    t: &Tenant,
    q: &Query,
    ep: &Endpoint,
    (position, floor): (Option<EventPosition>, Option<EventPosition>),
    filters: Filters,
) -> ApiResult<(Pull, EventsPage)> {
    let mut pull =
        Pull::parse_filtered(s, &t.app.id, q, position, filters.event_types.clone(), filters.channels.clone())?;
    if let Some(floor) = floor {
        pull.query.after = pull.query.after.max(floor);
    }
    pull.query.since = Some(endpoint_since(ep, pull.query.since, floor.is_some()));
    // One place among the waiting readers for the whole poll; without one it waits not at
    // all, and is refused if it finds nothing.
    let place = if pull.wait.is_zero() { None } else { Some(waiting_place(s, &t.app.id)) };
    let deadline = Instant::now() + if let Some(Ok(_)) = place { pull.wait } else { Duration::ZERO };
    let mut follower = Follower::new(s, &t.app.id, pull.query.clone());
    let mut reads = 0;
    // Whether every read found nothing at all (not even messages the filter then dropped).
    let mut found_nothing = true;
    loop {
        let read = follower.read(deadline).await?;
        found_nothing &= read.messages.is_empty();
        let page = filters.apply(read);
        reads += 1;
        // A page whose every message the filter dropped reads on from where it stopped: at
        // once while there is more (a few pages per request at most), else waiting out what
        // is left of a long-poll's `wait`.
        let over = Instant::now() >= deadline || follower.closing();
        if !page.messages.is_empty() || reads >= MAX_FILTERED_READS || (page.done && over) {
            // Refused only when it found nothing at all: a page the filter emptied still moves
            // the reader on.
            if let (true, Some(Err(no))) = (found_nothing && page.done, place) {
                return Err(no_place(no));
            }
            return Ok((pull, page));
        }
    }
}

/// Waits out a long-poll's `wait` that can find nothing (it asks for an event type the
/// endpoint never gets), as a poll finding nothing would, so that a client polling in a
/// loop does not spin; only with a place among the waiting readers, as any long-poll.
async fn wait_for_nothing(s: &AppState, app_id: &str, wait: Duration) -> ApiResult<()> {
    if wait.is_zero() {
        return Ok(());
    }
    let _place = waiting_place(s, app_id).map_err(no_place)?;
    let mut closing = s.0.closing.subscribe();
    if *closing.borrow_and_update() {
        return Ok(());
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = closing.changed() => {}
    }
    Ok(())
}

/// Most store reads one poll makes while a filter applied after the read drops everything.
const MAX_FILTERED_READS: usize = 16;

/// The answer to a poll that can find nothing: no messages, and the position it was
/// asked from, after its `wait`.
async fn nothing(s: &AppState, t: &Tenant, q: &Query, position: Option<EventPosition>) -> ApiResult<MessageEventsOut> {
    let pull = Pull::parse_filtered(s, &t.app.id, q, position, None, None)?;
    wait_for_nothing(s, &t.app.id, pull.wait).await?;
    let page = EventsPage { messages: Vec::new(), next: pull.query.after, done: true, held_back: false };
    Ok(MessageEventsOut::new(s, t, page, pull.query.with_content))
}

/// Reads a polling endpoint's messages.
///
/// `GET /api/v1/app/{app_id}/poller/{endpoint_id}` (Svix's `message.poller.poll`): the
/// application's messages that the endpoint's event types and channels let through,
/// created since the endpoint was, in stream order; pass each answer's `iterator` to the
/// next read. With `wait`, a long-poll.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/poller/{endpoint_id}",
    tag = "Message Poller",
    operation_id = "v1.message.poller.poll",
    params(
        PollerPath,
        ("limit" = Option<u32>, Query, description = "Most messages in one read, 1 to 250 (default 50); fewer, \
            with `done: false`, once their payloads reach 8 MiB",
            minimum = 1, maximum = 250),
        ("iterator" = Option<String>, Query, description = "The `iterator` of the previous read (default: the \
            endpoint's first message)"),
        ("event_type" = Option<String>, Query, description = "Only messages of this event type (among the \
            endpoint's)"),
        ("channel" = Option<String>, Query, description = "Only messages on this channel (and on one of the \
            endpoint's)"),
        ("after" = Option<DateTime<Utc>>, Query, description = "Only messages created after this time (RFC 3339)"),
        ("wait" = Option<u64>, Query, description = "hooklane's own long-polling: when nothing is there to read, wait \
            up to this many seconds (at most 60, default 0) for a message", maximum = 60),
        ("with_content" = Option<bool>, Query, description = "Whether messages carry their payloads (default true)"),
    ),
    responses(
        (status = 200, description = "The next messages, and the iterator to read on from", body = MessageEventsOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or polling endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid, or `iterator` is not a position of this \
            application's stream", body = ErrorBody),
        (status = 429, description = "A long-poll (`wait`) that found nothing, and this application already holds \
            its share of the node's waiting readers: try again after `Retry-After`", body = ErrorBody),
        (status = 503, description = "A long-poll (`wait`) that found nothing, with every waiting place of the node \
            taken", body = ErrorBody),
    )
)]
pub async fn poll(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<MessageEventsOut>> {
    let ep = polling_endpoint(&s, &t, &key).await?;
    let from = start(&s, &ep).await?;
    let Some(filters) = Filters::of(&ep, &q)? else { return Ok(axum::Json(nothing(&s, &t, &q, from).await?)) };
    let (pull, page) = read(&s, &t, &q, &ep, (from, from), filters).await?;
    waited_token_works(&s, &t, &pull, &headers).await?;
    Ok(axum::Json(MessageEventsOut::new(&s, &t, page, pull.query.with_content)))
}

/// Most consumers one polling endpoint keeps positions for: its key (meant for a third
/// party) must not be able to fill the store with them.
pub const MAX_CONSUMERS: u64 = 100;

/// Most consumers of `ep` counted under its prefix: its `MAX_CONSUMERS`, and its start
/// (`start`) when recorded, which is kept among them.
fn most_consumers(start: Option<EventPosition>) -> u64 {
    MAX_CONSUMERS + u64::from(start.is_some())
}

/// Refuses a new consumer of `ep` when there is no room for it, as far as the counts tell
/// now: before a read, so that one that would be refused is not read for (nor waited for,
/// a long-poll). [`admit_consumer`] keeps the bounds.
async fn room_for_consumer(s: &AppState, ep: &Endpoint, start: Option<EventPosition>) -> ApiResult<()> {
    app_has_room(s, ep).await?;
    if s.0.store.count_events_subscriptions(&ep.app_id, &start_key(ep)).await? >= most_consumers(start) {
        return Err(too_many_consumers());
    }
    Ok(())
}

/// The application's positions in all count too (its subscriptions, its other endpoints'
/// consumers): looked at before a consumer is made, so past them by the few made at the
/// very same moment.
async fn app_has_room(s: &AppState, ep: &Endpoint) -> ApiResult<()> {
    if s.0.store.count_events_subscriptions(&ep.app_id, "").await? >= super::events::MAX_SUBSCRIPTIONS {
        return Err(ApiError::Conflict(format!(
            "the application keeps {} positions already (its subscriptions and its polling endpoints' consumers)",
            super::events::MAX_SUBSCRIPTIONS
        )));
    }
    Ok(())
}

fn too_many_consumers() -> ApiError {
    ApiError::Conflict(format!(
        "the polling endpoint has {MAX_CONSUMERS} consumers already (a consumer's position is deleted with the \
         endpoint)"
    ))
}

/// Creates the consumer `id` of `ep` at the endpoint's start (`start`, kept among them
/// under the same prefix when recorded), or refuses it when the endpoint has
/// `MAX_CONSUMERS` already: counted and created as one, so that concurrent first reads of
/// new consumers cannot pass the count together. Called once the request's read
/// succeeded, so that a request refused for another reason makes none; an endpoint deleted
/// meanwhile is not found, and gets no consumer.
async fn admit_consumer(s: &AppState, ep: &Endpoint, id: &str, start: Option<EventPosition>) -> ApiResult<()> {
    app_has_room(s, ep).await?;
    let at = start.unwrap_or(EventPosition::START);
    let bound = (start_key(ep), most_consumers(start));
    if !s.0.store.add_events_subscription(&ep.app_id, id, at, (&bound.0, bound.1), Utc::now()).await? {
        return Err(match s.0.store.get_endpoint(&ep.app_id, &ep.id).await? {
            None => ApiError::NotFound("polling endpoint"),
            Some(_) => too_many_consumers(),
        });
    }
    Ok(())
}

/// Where a consumer's position is kept: among the application's events subscriptions,
/// under a name no subscription can have (names hold no `/`), bound to the endpoint's id
/// (so that a new uid keeps it).
fn consumer_key(ep: &Endpoint, consumer_id: &str) -> ApiResult<String> {
    check_name("consumer_id", consumer_id).map_err(ApiError::in_path)?;
    Ok(format!("{}/{consumer_id}", ep.id))
}

/// Reads a polling endpoint's messages from where a consumer stands.
///
/// `GET /api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}` (Svix's
/// `message.poller.consumer-poll`): reads from where the consumer stands (a new one: the
/// endpoint's first message; an `iterator` given moves it there) and moves it past what it
/// answers. The position moves before the answer reaches the consumer.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}",
    tag = "Message Poller",
    operation_id = "v1.message.poller.consumer-poll",
    params(
        ConsumerPath,
        ("limit" = Option<u32>, Query, description = "Most messages in one read, 1 to 250 (default 50); fewer, \
            with `done: false`, once their payloads reach 8 MiB",
            minimum = 1, maximum = 250),
        ("iterator" = Option<String>, Query, description = "Read from here instead of where the consumer stands (an \
            `iterator` of an earlier answer); the consumer moves there"),
        ("wait" = Option<u64>, Query, description = "hooklane's own long-polling, as for a poll", maximum = 60),
    ),
    responses(
        (status = 200, description = "The next messages; the consumer now stands past them", body = MessageEventsOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or polling endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled, or a new consumer would be one more than the \
            endpoint's 100", body = ErrorBody),
        (status = 422, description = "The consumer id or a query parameter is invalid", body = ErrorBody),
        (status = 429, description = "A long-poll (`wait`) that found nothing, and this application already holds \
            its share of the node's waiting readers: try again after `Retry-After`", body = ErrorBody),
        (status = 503, description = "A long-poll (`wait`) that found nothing, with every waiting place of the node \
            taken", body = ErrorBody),
    )
)]
pub async fn consumer_poll(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, key, consumer_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<MessageEventsOut>> {
    // A consumer reads with its endpoint's filters from where it stands: a parameter that
    // narrows or moves the read (one a poll takes) is refused rather than ignored, or left
    // to move the shared position.
    for name in ["after", "event_type", "channel"] {
        if q.get(name).is_some() {
            return Err(ApiError::bad_query(name, "a consumer's poll takes only `limit`, `iterator` and `wait`"));
        }
    }
    let ep = polling_endpoint(&s, &t, &key).await?;
    let id = consumer_key(&ep, &consumer_id)?;
    let floor = start(&s, &ep).await?;
    let current = s.0.store.events_subscription_read(&t.app.id, &id).await?;
    if current.is_none() {
        room_for_consumer(&s, &ep, floor).await?;
    }
    let stored = current.map(|c| c.position).or(floor);
    let (pull, page) = read(&s, &t, &q, &ep, (stored, floor), Filters::own(&ep)).await?;
    waited_token_works(&s, &t, &pull, &headers).await?;
    if current.is_none() {
        // Made once the read succeeded: a refused one (no waiting place, a store failure)
        // or one dropped while it waited makes none.
        admit_consumer(&s, &ep, &id, floor).await?;
    }
    // (Forward only from where it was read, unless a seek came meanwhile; an `iterator`
    // given sets it.)
    let read_from = (!pull.seek)
        .then(|| ReadFrom { position: stored.unwrap_or(EventPosition::START), seeks: current.map_or(0, |c| c.seeks) });
    if !s.0.store.set_events_subscription(&t.app.id, &id, page.next, read_from, Utc::now()).await? {
        // Deleted with its endpoint while it was read (a long-poll): not made again.
        return Err(ApiError::NotFound("polling endpoint"));
    }
    Ok(axum::Json(MessageEventsOut::new(&s, &t, page, pull.query.with_content)))
}

/// Moves a polling endpoint's consumer to a time.
///
/// `POST /api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek` (Svix's
/// `message.poller.consumer-seek`): the consumer's next read starts with the first message
/// of the stream created after `after` (or, when there is none yet, with the next message
/// to come), backwards or forwards. A time before the endpoint's creation is its creation.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek",
    tag = "Message Poller",
    operation_id = "v1.message.poller.consumer-seek",
    params(ConsumerPath),
    request_body = SeekIn,
    responses(
        (status = 200, description = "Where the consumer now stands", body = SeekOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or polling endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled, or a new consumer would be one more than the \
            endpoint's 100", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn consumer_seek(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key, consumer_id)): Path<(String, String, String)>,
    Json(input): Json<SeekIn>,
) -> ApiResult<axum::Json<SeekOut>> {
    let ep = polling_endpoint(&s, &t, &key).await?;
    let id = consumer_key(&ep, &consumer_id)?;
    // The stream's first message created after the time, whatever its type, from the
    // endpoint's start (what was durable when it was created is not its): the consumer
    // stands just before it. None yet: at the stream's end as it stands.
    let recorded = start(&s, &ep).await?;
    let new = s.0.store.get_events_subscription(&t.app.id, &id).await?.is_none();
    if new {
        room_for_consumer(&s, &ep, recorded).await?;
    }
    let from = recorded.unwrap_or(EventPosition::START);
    let first = EventsQuery {
        after: from,
        // (Bounded as reads are.)
        since: Some(endpoint_since(&ep, Some(input.after), recorded.is_some())),
        event_types: None,
        channels: None,
        limit: 1,
        // Only its position is wanted.
        with_content: false,
        max_bytes: 1,
    };
    let page = s.0.store.read_message_events(&t.app.id, &first).await?;
    // (A message found lies after `from`, so just before it is never before `from`.)
    let position = page.messages.first().map_or(page.next, |(p, _)| p.just_before()).max(from);
    // (Made once the read succeeded, as by a consumer's read.)
    if new {
        admit_consumer(&s, &ep, &id, recorded).await?;
    }
    if !s.0.store.set_events_subscription(&t.app.id, &id, position, None, Utc::now()).await? {
        // Deleted with its endpoint meanwhile: not made again.
        return Err(ApiError::NotFound("polling endpoint"));
    }
    Ok(axum::Json(SeekOut { iterator: s.0.position_tokens.encode(&t.app.id, position) }))
}

/// Svix's `RotatePollerTokenIn`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateKeyIn {
    /// Seconds the new key works, 1 to 31,536,000 (a year); without it, until it is rotated
    /// away, its application's tokens are expired, or the endpoint is deleted.
    #[schema(minimum = 1, maximum = 31536000)]
    expiry: Option<i64>,
    /// Seconds the endpoint's earlier keys still work, 0 (at once) to 86,400 (a day); 300
    /// unless given.
    #[schema(minimum = 0, maximum = 86400)]
    old_token_expiry: Option<i64>,
}

/// Svix's `ApiTokenOut`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyOut {
    /// The key (`sk_poll_…`), shown only this once: only its hash is kept.
    token: String,
    /// A name for the key, made from its hash (the key itself is never shown again).
    id: String,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
}

const MAX_KEY_SECONDS: i64 = 365 * 24 * 3600;
const MAX_OLD_KEY_SECONDS: i64 = 24 * 3600;
const DEFAULT_OLD_KEY_SECONDS: i64 = 300;

/// Makes a new key for a polling endpoint.
///
/// `POST /api/v1/auth/app/{app_id}/poller/{endpoint_id}/token/rotate` (Svix's poller
/// token rotation, here for an application's polling endpoint): a key (`sk_poll_…`) that
/// may read this endpoint's poller and move its consumers, and nothing else, for a consumer
/// who should have no other access. The endpoint's earlier keys stop working after
/// `oldTokenExpiry`. Admin token only.
#[utoipa::path(
    post,
    path = "/api/v1/auth/app/{app_id}/poller/{endpoint_id}/token/rotate",
    tag = "Message Poller",
    operation_id = "v1.message.poller.rotate-token",
    params(PollerPath),
    request_body(content = RotateKeyIn, description = "Optional: without it, a key that does not expire, and the \
        earlier ones stop working in 5 minutes."),
    responses(
        (status = 200, description = "The new key, shown this once", body = KeyOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application or polling endpoint", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn rotate_key(
    State(s): State<AppState>,
    _: Admin,
    Path((app_key, ep_key)): Path<(String, String)>,
    OptionalJson(input): OptionalJson<RotateKeyIn>,
) -> ApiResult<axum::Json<KeyOut>> {
    let input = input.unwrap_or_default();
    if input.expiry.is_some_and(|e| !(1..=MAX_KEY_SECONDS).contains(&e)) {
        return Err(ApiError::validation("expiry", format!("must be between 1 and {MAX_KEY_SECONDS} seconds")));
    }
    let old = input.old_token_expiry.unwrap_or(DEFAULT_OLD_KEY_SECONDS);
    if !(0..=MAX_OLD_KEY_SECONDS).contains(&old) {
        return Err(ApiError::validation(
            "oldTokenExpiry",
            format!("must be between 0 and {MAX_OLD_KEY_SECONDS} seconds"),
        ));
    }
    let app = s.0.store.get_app(&app_key).await?.ok_or(ApiError::NotFound("application"))?;
    if crate::operational::is_operational_app(&s, &app) {
        return Err(ApiError::Forbidden(crate::operational::NO_TOKEN));
    }
    let ep = s.0.store.get_endpoint(&app.id, &ep_key).await?.filter(|e| e.polling);
    let ep = ep.ok_or(ApiError::NotFound("polling endpoint"))?;
    let now = super::now();
    s.0.store.expire_poller_tokens(&app.id, &ep.id, now + TimeDelta::seconds(old)).await?;
    let token = super::auth::random_token(POLLER_KEY_PREFIX);
    let hash = hex(&token_hash(&token));
    let expires_at = input.expiry.map(|e| now + TimeDelta::seconds(e));
    let holder = Principal::Poller { app_id: app.id.clone(), endpoint_id: ep.id.clone() };
    s.0.store.create_token(hash.clone(), holder, now, expires_at, None).await?;
    // An endpoint deleted meanwhile took its keys with it, but perhaps not this one.
    if s.0.store.get_endpoint(&app.id, &ep.id).await?.is_none() {
        s.0.store.delete_token(&hash).await?;
        return Err(ApiError::NotFound("polling endpoint"));
    }
    Ok(axum::Json(KeyOut { token, id: format!("{}_{}", ids::TOKEN, &hash[..24]), created_at: now, expires_at }))
}

/// A polling endpoint key's prefix, as Svix's.
const POLLER_KEY_PREFIX: &str = "sk_poll_";

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(poll, consumer_poll, consumer_seek, rotate_key),
    components(schemas(SeekIn, SeekOut, RotateKeyIn, KeyOut))
)]
pub(crate) struct Doc;
