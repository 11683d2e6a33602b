//! `/api/v1/app/{app_id}/events`: an application's messages for consumers that pull them
//! instead of receiving pushes (a consumer behind a firewall, a batch job).
//!
//! - `GET /events`: polling, as Svix's `message.events` (`limit`, `iterator`, `event_types`,
//!   `channels`, `after`), answering `{data, iterator, done}`. With hooklane's `wait=N`
//!   (seconds, at most [`MAX_WAIT`]) a caught-up read waits for the next message: long-polling.
//! - `GET /events/subscription/{subscription_id}`: the same, with the position kept by the
//!   server (Svix's `message.events_subscription`); each answer moves it on.
//! - `GET /events/stream`: Server-Sent Events, one event per message with the message as
//!   `data` and its position as `id`, so a reconnecting client (`Last-Event-ID`) resumes
//!   where it stopped.
//!
//! Messages come in the order they became durable (see
//! [`hooklane_store::Store::read_message_events`]): a reader carrying the iterator from one
//! read to the next sees every message of the application once, whether or not it has
//! endpoints, and whatever their deliveries did.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use hooklane_core::model::{Message, Principal};
use hooklane_core::Utc;
use hooklane_store::{DynStore, EventPosition, EventsPage, EventsQuery, StoreError, StoreResult};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::message::MessageOut;
use super::position_tokens::PositionTokens;
use super::{check_name, query_names};
use crate::error::{ApiError, ApiResult, POSITION_AHEAD};
use crate::extract::{Path, Query, Tenant};
use crate::openapi::{AppPath, ErrorBody, EventsRead, SubscriptionPath, Unauthorized};
use crate::state::AppState;
use crate::waiting::{NoPlace, WaitingPlace, MAX_WAITING_PER_APP};

/// Longest `wait` a long-poll may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// A stream ends after this long (the client reconnects with `Last-Event-ID`), so a
/// stream does not outlive its token's access, or its application, for long.
const STREAM_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Messages read per store query (polls: at most 250, as every list of the API).
const MAX_LIMIT: usize = 250;
const DEFAULT_LIMIT: usize = 50;
/// Payload bytes one read holds, about (see [`EventsQuery::max_bytes`]): a page ends early,
/// not `done`, after the message that brings its payloads to this, so that `limit` messages
/// of `max_body_bytes` each (250 MiB at 1 MiB), times the concurrent reads of one tenant,
/// cannot make the node hold gigabytes. A reader goes on from the page's iterator.
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;
/// The same for a stream's reads: a stream sends one message at a time, and holds what it
/// read ahead for as long as its client takes to read it (a client that stops reading, up
/// to the stream's lifetime), so it reads ahead little.
const STREAM_PAGE_BYTES: usize = 1024 * 1024;

/// Svix's `MessageEventsOut`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageEventsOut {
    /// The messages, in the order they became durable.
    data: Vec<MessageOut>,
    /// Where this read stopped: the next read's `iterator`. An opaque token, valid for this
    /// application only.
    iterator: String,
    /// Whether this read reached the end of the stream (for now).
    done: bool,
}

impl MessageEventsOut {
    pub(super) fn new(s: &AppState, t: &Tenant, page: EventsPage, with_content: bool) -> Self {
        let app_id = &t.app.id;
        MessageEventsOut {
            data: page.messages.into_iter().map(|(_, m)| MessageOut::seen_by(m, with_content, &t.principal)).collect(),
            iterator: s.0.position_tokens.encode(app_id, page.next),
            done: page.done,
        }
    }
}

/// What a pull asks for, from the query string.
pub(super) struct Pull {
    /// (With `with_content`: whether the answer shows payloads, and so whether they are read.)
    pub(super) query: EventsQuery,
    pub(super) wait: Duration,
    /// The query named its own `iterator`.
    pub(super) seek: bool,
}

impl Pull {
    /// `position` is where to start when the query names no `iterator`.
    fn parse(s: &AppState, app_id: &str, q: &Query, position: Option<EventPosition>) -> ApiResult<Pull> {
        let (event_types, channels) = (query_names(q, "event_types")?, query_names(q, "channels")?);
        Pull::parse_filtered(s, app_id, q, position, event_types, channels)
    }

    /// As [`Pull::parse`], with the event types and channels given rather than read from
    /// the query (a polling endpoint's own, narrowed by the query's).
    pub(super) fn parse_filtered(
        s: &AppState,
        app_id: &str,
        q: &Query,
        position: Option<EventPosition>,
        event_types: Option<Vec<String>>,
        channels: Option<Vec<String>>,
    ) -> ApiResult<Pull> {
        let limit = q.parse::<usize>("limit")?.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_query("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let wait = Duration::from_secs(q.parse::<u64>("wait")?.unwrap_or(0));
        if wait > MAX_WAIT {
            return Err(ApiError::bad_query("wait", format!("must be at most {} seconds", MAX_WAIT.as_secs())));
        }
        let iterator = q.get("iterator").filter(|s| !s.is_empty());
        let after = match iterator {
            Some(it) => parse_position(s, app_id, it).ok_or_else(|| ApiError::bad_query("iterator", NOT_A_POSITION))?,
            None => position.unwrap_or(EventPosition::START),
        };
        let with_content = q.flag("with_content")?.unwrap_or(true);
        let since = q.time("after")?;
        let query = EventsQuery { after, since, event_types, channels, limit, with_content, max_bytes: MAX_PAGE_BYTES };
        Ok(Pull { query, wait, seek: iterator.is_some() })
    }
}

/// How soon a waiting reader first looks again when its application's messages are held
/// back; each further look that finds them still held back waits twice as long, up to
/// `HELD_BACK_RECHECK_MAX` (a transaction left open elsewhere on the database must not make
/// every waiting reader query fifty times a second).
const HELD_BACK_RECHECK: Duration = Duration::from_millis(20);
const HELD_BACK_RECHECK_MAX: Duration = Duration::from_millis(640);

/// The pause before the next look while messages stay held back, after `previous`.
fn held_back_pause(previous: Option<Duration>) -> Duration {
    previous.map_or(HELD_BACK_RECHECK, |p| (p * 2).min(HELD_BACK_RECHECK_MAX))
}

pub(super) const NOT_A_POSITION: &str = "is not a position this server gave out for this application";

/// The position an iterator (or `Last-Event-ID`) of this application's stream holds (see
/// [`super::position_tokens`]).
fn parse_position(s: &AppState, app_id: &str, text: &str) -> Option<EventPosition> {
    s.0.position_tokens.decode(app_id, text)
}

/// Reads an application's stream from a position, waiting for messages when asked to.
pub(super) struct Follower {
    store: DynStore,
    app_id: String,
    query: EventsQuery,
    signal: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    recheck: Option<Duration>,
    /// The last pause taken while messages were held back (`None`: they were not).
    held_back: Option<Duration>,
}

impl Follower {
    /// Whether the server is shutting down (a waiting read then answers at once).
    pub(super) fn closing(&self) -> bool {
        *self.closing.borrow()
    }

    pub(super) fn new(s: &AppState, app_id: &str, query: EventsQuery) -> Follower {
        Follower {
            store: s.0.store.clone(),
            app_id: app_id.to_string(),
            query,
            signal: s.0.store.message_events_signal(app_id),
            closing: s.0.closing.subscribe(),
            recheck: s.0.store.message_events_recheck(),
            held_back: None,
        }
    }

    /// Reads once; while that finds nothing, waits for the store's signal (or its recheck
    /// period) and reads again, until `deadline` or the server's shutdown. Moves the
    /// follower's position past what it returns.
    pub(super) async fn read(&mut self, deadline: Instant) -> StoreResult<EventsPage> {
        loop {
            // Marked seen before the read, so a message arriving during it is not waited past.
            self.signal.borrow_and_update();
            let page = self.store.read_message_events(&self.app_id, &self.query).await?;
            self.query.after = page.next;
            let now = Instant::now();
            if !page.messages.is_empty() || now >= deadline || self.closing() {
                self.held_back = None;
                return Ok(page);
            }
            // Messages of this application held back behind another's open transaction
            // become readable when that one ends, which only its own application hears of.
            self.held_back = page.held_back.then(|| held_back_pause(self.held_back));
            let recheck = match (self.held_back, self.recheck) {
                (Some(held), Some(every)) => Some(held.min(every)),
                (held, every) => held.or(every),
            };
            let pause = recheck.map_or(deadline - now, |r| r.min(deadline - now));
            tokio::select! {
                // A signal whose sender is gone (the store is closing) would answer at once
                // for ever: the pause is then waited out instead.
                Ok(()) = self.signal.changed() => {}
                Ok(()) = self.closing.changed() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// A place among the node's waiting readers, if one is free for this application. Each
/// waiting long-poll or stream holds a connection and reads the store whenever messages
/// arrive; beyond the limits (see [`crate::waiting`]) a long-poll answers what there is at
/// once, or is refused ([`no_place`]) when there is nothing, and a stream is refused, so
/// waiting readers cannot take the node down, nor one application every other's places.
pub(super) fn waiting_place(s: &AppState, app_id: &str) -> Result<WaitingPlace, NoPlace> {
    s.0.pull_waiters.take(app_id)
}

/// The refusal of a reader that would wait without a place: 429 (with `Retry-After`) when
/// its application holds its share, 503 when the node is full. A long-poll answered empty
/// at once instead would be asked again at once, by a client reading in a loop, for ever.
pub(super) fn no_place(no: NoPlace) -> ApiError {
    match no {
        NoPlace::Node => ApiError::Unavailable("too many streams and long-polls are open on this node".into()),
        NoPlace::Application => ApiError::TooManyWaiting(format!(
            "this application has {MAX_WAITING_PER_APP} streams and long-polls open on this node already"
        )),
    }
}

/// Reads for a poll: waits up to `wait` for messages when it has a place among the
/// waiting readers; without one, answers what there is at once, and is refused if that is
/// nothing ([`no_place`]).
async fn poll_once(s: &AppState, app_id: &str, pull: &Pull) -> ApiResult<EventsPage> {
    let mut follower = Follower::new(s, app_id, pull.query.clone());
    let place = if pull.wait.is_zero() { None } else { Some(waiting_place(s, app_id)) };
    let wait = if let Some(Ok(_)) = place { pull.wait } else { Duration::ZERO };
    let page = follower.read(Instant::now() + wait).await?;
    match place {
        Some(Err(no)) if page.messages.is_empty() && page.done => Err(no_place(no)),
        _ => Ok(page),
    }
}

/// After a long-poll's read: its token looked up again, since it may have been revoked while
/// the read waited (see [`crate::extract::token_still_works`]).
pub(super) async fn waited_token_works(s: &AppState, t: &Tenant, pull: &Pull, headers: &HeaderMap) -> ApiResult<()> {
    if pull.wait.is_zero() {
        return Ok(());
    }
    crate::extract::token_still_works(s, &t.principal, headers).await
}

/// Reads an application's messages in order: polling and long-polling.
///
/// `GET /api/v1/app/{app_id}/events` (Svix's `message.events`): messages come in the order
/// they became durable, and a reader that passes each answer's `iterator` to its next read
/// sees every message once, whether or not it has endpoints. With `wait`, a long-poll.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/events",
    tag = "Events",
    operation_id = "v1.message.events",
    params(
        AppPath,
        EventsRead,
        ("iterator" = Option<String>, Query, description = "The `iterator` of the previous read (default: the start of \
            the stream)"),
        ("wait" = Option<u64>, Query, description = "hooklane's own long-polling: when nothing is there to read, wait \
            up to this many seconds (at most 60, default 0) for a message. Past the node's limits on waiting readers \
            the read answers at once what there is, and 429 (the application's limit) or 503 (the node's) when that \
            is nothing", maximum = 60),
    ),
    responses(
        (status = 200, description = "The next messages, and the iterator to read on from", body = MessageEventsOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application (or not the token's)", body = ErrorBody),
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
    headers: HeaderMap,
) -> ApiResult<axum::Json<MessageEventsOut>> {
    let pull = Pull::parse(&s, &t.app.id, &q, None)?;
    let page = poll_once(&s, &t.app.id, &pull).await?;
    waited_token_works(&s, &t, &pull, &headers).await?;
    Ok(axum::Json(MessageEventsOut::new(&s, &t, page, pull.query.with_content)))
}

/// Reads an application's messages from where a server-side subscription stands.
///
/// `GET /api/v1/app/{app_id}/events/subscription/{subscription_id}`: reads from where the
/// subscription stands (or from `iterator`, which moves it there) and moves it past what it
/// answers. The position moves before the answer reaches the consumer: a consumer that
/// must not miss a message it failed to receive keeps its own iterator instead. Two readers
/// of one subscription answered out of order never move it back.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/events/subscription/{subscription_id}",
    tag = "Events",
    operation_id = "v1.message.events-subscription",
    params(
        SubscriptionPath,
        EventsRead,
        ("iterator" = Option<String>, Query, description = "Read from here instead of where the subscription stands \
            (an `iterator` of an earlier answer); the subscription moves there"),
        ("wait" = Option<u64>, Query, description = "hooklane's own long-polling: when nothing is there to read, wait \
            up to this many seconds (at most 60, default 0) for a message. Past the node's limits on waiting readers \
            the read answers at once what there is, and 429 (the application's limit) or 503 (the node's) when that \
            is nothing", maximum = 60),
    ),
    responses(
        (status = 200, description = "The next messages; the subscription now stands past them",
            body = MessageEventsOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application (or not the token's)", body = ErrorBody),
        (status = 409, description = "A new subscription, while the application keeps 10,000 positions already \
            (its subscriptions and its polling endpoints' consumers)", body = ErrorBody),
        (status = 422, description = "The subscription id or a query parameter is invalid, or `iterator` is not a \
            position of this application's stream", body = ErrorBody),
        (status = 429, description = "A long-poll (`wait`) that found nothing, and this application already holds \
            its share of the node's waiting readers: try again after `Retry-After`", body = ErrorBody),
        (status = 503, description = "A long-poll (`wait`) that found nothing, with every waiting place of the node \
            taken", body = ErrorBody),
    )
)]
pub async fn subscription(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, subscription_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<axum::Json<MessageEventsOut>> {
    check_name("subscription_id", &subscription_id).map_err(ApiError::in_path)?;
    let stored = s.0.store.events_subscription_read(&t.app.id, &subscription_id).await?;
    let pull = Pull::parse(&s, &t.app.id, &q, stored.map(|r| r.position))?;
    // A new one while the application has no room left is refused before it reads (a
    // long-poll would wait for nothing); the bound itself is kept when it is made, below.
    if stored.is_none() && s.0.store.count_events_subscriptions(&t.app.id, "").await? >= MAX_SUBSCRIPTIONS {
        return Err(too_many_subscriptions());
    }
    let page = poll_once(&s, &t.app.id, &pull).await?;
    waited_token_works(&s, &t, &pull, &headers).await?;
    if stored.is_none() {
        // Made only now that the read succeeded: a request refused by it (no waiting place,
        // a position ahead of the stream, a store failure) or dropped while it waited makes
        // none. Counted and made as one with the application's others (polling endpoints'
        // consumers among them), so that its positions cannot fill the store; nothing is
        // made for an application deleted meanwhile.
        let bound = ("", MAX_SUBSCRIPTIONS);
        let store = &s.0.store;
        if !store.add_events_subscription(&t.app.id, &subscription_id, EventPosition::START, bound, Utc::now()).await? {
            return Err(match store.get_app(&t.app.id).await? {
                None => ApiError::NotFound("application"),
                Some(_) => too_many_subscriptions(),
            });
        }
    }
    // (Forward only from where it was read; an `iterator` given sets it.)
    let read_from = (!pull.seek).then(|| stored.unwrap_or_default());
    if !s.0.store.set_events_subscription(&t.app.id, &subscription_id, page.next, read_from, Utc::now()).await? {
        // Deleted with its application while it was read.
        return Err(ApiError::NotFound("application"));
    }
    Ok(axum::Json(MessageEventsOut::new(&s, &t, page, pull.query.with_content)))
}

fn too_many_subscriptions() -> ApiError {
    ApiError::Conflict(format!(
        "the application keeps {MAX_SUBSCRIPTIONS} positions already (its subscriptions and its polling endpoints' \
         consumers): reuse a subscription id"
    ))
}

/// Positions the server keeps for one application at most: its subscriptions and its
/// polling endpoints' consumers together.
pub const MAX_SUBSCRIPTIONS: u64 = 10_000;

/// Streams an application's messages as Server-Sent Events.
///
/// `GET /api/v1/app/{app_id}/events/stream`: Server-Sent Events from `Last-Event-ID` (a
/// reconnecting client sends it), else `iterator`, else the start of the stream. The
/// filters of a poll apply; a comment every 15 s keeps proxies from closing a quiet stream.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/events/stream",
    tag = "Events",
    operation_id = "v1.message.events-stream",
    params(
        AppPath,
        EventsRead,
        ("iterator" = Option<String>, Query, description = "Where to start when no `Last-Event-ID` is sent: the \
            `iterator` of a poll or the `id` of an event (default: the start of the stream)"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last event received: the stream \
            resumes after it (browsers' `EventSource` sends it when reconnecting). Takes precedence over `iterator`"),
    ),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "Server-Sent Events, one per message, in the order messages became durable: no `event:` \
                        field (the default type, `message`), `id:` the message's position (an opaque token to \
                        resume from) and `data:` the message as JSON, a `MessageOut`. An empty comment line \
                        (`:`) every 15 s keeps a quiet stream open. The server ends a stream after 30 minutes \
                        or when it shuts down: reconnect with `Last-Event-ID` to go on.",
         example = "id: 9mQl4c6R0qz2Hbq1Wm0Gd3v9o8PBz0n1vXk3cT5YpJw\ndata: \
             {\"id\":\"msg_1srOrx2ZWZBpBUvZwXKQmoEYga2\",\
             \"eventType\":\"invoice.paid\",\"payload\":{\"amount\":100},\
             \"eventId\":null,\"channels\":null,\"tags\":null,\"timestamp\":\"2025-01-01T12:00:00.000Z\"}\n\n"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application (or not the token's)", body = ErrorBody),
        (status = 422, description = "A query parameter is invalid (`wait` applies to polls only), or `iterator` or \
            `Last-Event-ID` is not a position of this application's stream", body = ErrorBody),
        (status = 429, description = "This application already holds its share of the node's waiting readers \
            (streams and long-polls): try again after `Retry-After`", body = ErrorBody),
        (status = 503, description = "Every waiting place of the node is taken", body = ErrorBody),
    )
)]
pub async fn stream(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let resume = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok("")) | None => None,
        Some(Ok(id)) => Some(parse_position(&s, &t.app.id, id).ok_or_else(|| bad_last_event_id(NOT_A_POSITION))?),
        Some(Err(_)) => return Err(bad_last_event_id(NOT_A_POSITION)),
    };
    let mut pull = Pull::parse(&s, &t.app.id, &q, None)?;
    if !pull.wait.is_zero() {
        return Err(ApiError::bad_query("wait", "applies to polls; a stream waits for as long as it is open"));
    }
    if let Some(position) = resume {
        pull.query.after = position;
    }
    pull.query.max_bytes = STREAM_PAGE_BYTES;
    let place = waiting_place(&s, &t.app.id).map_err(no_place)?;
    let with_content = pull.query.with_content;
    let mut follower = Follower::new(&s, &t.app.id, pull.query);
    // The first read answers before the stream opens, so a position the store refuses is
    // an error response, not a stream that closes at once (and is reopened for ever).
    let first = follower.read(Instant::now()).await.map_err(|e| match e {
        StoreError::PositionAhead(_) if resume.is_some() => bad_last_event_id(POSITION_AHEAD),
        other => other.into(),
    })?;
    // The admin token is the configuration's; another token may be revoked or expire while
    // the stream is open.
    let token = match t.principal {
        Principal::Admin => None,
        _ => crate::extract::bearer_token(&headers).map(|raw| TokenCheck {
            store: s.0.store.clone(),
            hash: crate::state::hex(&crate::state::token_hash(raw)),
            next: Instant::now() + TOKEN_RECHECK,
        }),
    };
    let reader = StreamReader {
        token,
        tokens: s.0.position_tokens.clone(),
        follower,
        with_content,
        principal: t.principal.clone(),
        ready: first.messages.into(),
        ends_at: Instant::now() + STREAM_LIFETIME,
        _place: place,
    };
    // The events are read apart from the connection, one ahead of the client (see `pump`).
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(pump(reader, sender));
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Ok(event), receiver))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Reads a stream's events and hands them to its connection one at a time, apart from it:
/// the stream's ends (its lifetime, its token, the server's shutdown) come whether its
/// client reads or not. Read by the connection itself, a stream whose client stopped
/// reading, its connection open, was never asked for its next event once the socket's
/// buffers were full, and held its waiting place and what it had read ahead for as long as
/// the client kept the connection. Ends with the connection too.
async fn pump(mut reader: StreamReader, events: tokio::sync::mpsc::Sender<Event>) {
    loop {
        let next = tokio::select! {
            next = reader.next() => next,
            () = events.closed() => return,
        };
        let Some((position, message)) = next else { return };
        let id = reader.tokens.encode(&reader.follower.app_id, position);
        let event =
            Event::default().id(id).json_data(MessageOut::seen_by(message, reader.with_content, &reader.principal));
        // Serializing a message cannot fail (its payload is JSON text already); should it,
        // the stream ends and the client resumes from the last id it got.
        let Ok(event) = event else { return };
        // Waits for the client to take the last event, looking every second whether the
        // stream has ended meanwhile.
        loop {
            match tokio::time::timeout(PUMP_LOOK, events.reserve()).await {
                Ok(Ok(place)) => {
                    place.send(event);
                    break;
                }
                Ok(Err(_)) => return,
                Err(_) if reader.ended().await => return,
                Err(_) => {}
            }
        }
    }
}

/// How often a stream whose client does not take its events looks whether it has ended.
const PUMP_LOOK: Duration = Duration::from_secs(1);

fn bad_last_event_id(why: &str) -> ApiError {
    ApiError::Validation { location: "header", field: "Last-Event-ID".into(), msg: why.into() }
}

/// How often an open stream makes sure its token still works (not logged out, expired,
/// rotated or revoked with its integration): a stream ends within this of its token.
const TOKEN_RECHECK: Duration = Duration::from_secs(15);

/// A stream's token, looked up again every [`TOKEN_RECHECK`].
struct TokenCheck {
    store: DynStore,
    hash: String,
    next: Instant,
}

impl TokenCheck {
    /// Whether the token still works, looked up when the last look is old enough; a store
    /// failure counts as no (the client reconnects, and is asked again).
    async fn still_works(&mut self) -> bool {
        if Instant::now() < self.next {
            return true;
        }
        self.next = Instant::now() + TOKEN_RECHECK;
        matches!(self.store.find_token(&self.hash, Utc::now()).await, Ok(Some(_)))
    }
}

/// The state of one Server-Sent Events stream between two events.
struct StreamReader {
    /// `None` for the admin token.
    token: Option<TokenCheck>,
    /// For the events' ids.
    tokens: PositionTokens,
    follower: Follower,
    with_content: bool,
    /// Who reads: what it may see of forwarded headers.
    principal: Principal,
    /// Read from the store and not yet sent.
    ready: VecDeque<(EventPosition, Message)>,
    ends_at: Instant,
    /// Held for the stream's life.
    _place: WaitingPlace,
}

impl StreamReader {
    /// The next message, waiting for one as long as the stream lives; `None` ends the
    /// stream (its lifetime is over, its token no longer works, the server is shutting down,
    /// or the store failed: the client reconnects and resumes).
    async fn next(&mut self) -> Option<(EventPosition, Message)> {
        loop {
            if let Some(token) = &mut self.token {
                if !token.still_works().await {
                    return None;
                }
            }
            if let Some(next) = self.ready.pop_front() {
                return Some(next);
            }
            if self.ended().await {
                return None;
            }
            // Waits no longer than the token's next look.
            let until = self.token.as_ref().map_or(self.ends_at, |t| t.next.min(self.ends_at));
            match self.follower.read(until).await {
                Ok(page) => self.ready.extend(page.messages),
                Err(e) => {
                    tracing::warn!(error = %e, app_id = %self.follower.app_id, "event stream read failed; closing it");
                    return None;
                }
            }
        }
    }

    /// Whether the stream has ended: its lifetime is over, its token no longer works, or
    /// the server is shutting down.
    async fn ended(&mut self) -> bool {
        if self.follower.closing() || Instant::now() >= self.ends_at {
            return true;
        }
        match &mut self.token {
            Some(token) => !token.still_works().await,
            None => false,
        }
    }
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(poll, stream, subscription), components(schemas(MessageEventsOut)))]
pub(crate) struct Doc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_at_held_back_messages_less_and_less_often() {
        let mut pause = None;
        let pauses: Vec<u64> = (0..8)
            .map(|_| {
                pause = Some(held_back_pause(pause));
                pause.map_or(0, |p| p.as_millis() as u64)
            })
            .collect();
        assert_eq!(pauses, [20, 40, 80, 160, 320, 640, 640, 640]);
    }
}
