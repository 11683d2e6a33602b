//! `/api/v1/app/{app_id}/events`: an application's messages for consumers that pull them
//! instead of receiving pushes (a consumer behind a firewall, a batch job, a browser).
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

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use hooklane_core::model::Message;
use hooklane_core::Utc;
use hooklane_store::{DynStore, EventPosition, EventsPage, EventsQuery, StoreResult};
use serde::Serialize;
use tokio::sync::watch;

use super::message::MessageOut;
use super::{check_name, query_names};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Query, Tenant};
use crate::state::AppState;

/// Longest `wait` a long-poll may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Messages read per store query (polls: at most 250, as every list of the API).
const MAX_LIMIT: usize = 250;
const DEFAULT_LIMIT: usize = 50;
/// A waiting reader reads again at least this often even without a signal: on PostgreSQL
/// a message becomes readable only once every older transaction has finished, which no
/// notification announces.
const RECHECK: Duration = Duration::from_secs(1);

/// Svix's `MessageEventsOut`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageEventsOut {
    data: Vec<MessageOut>,
    iterator: String,
    done: bool,
}

impl MessageEventsOut {
    fn new(page: EventsPage, with_content: bool) -> Self {
        MessageEventsOut {
            data: page.messages.into_iter().map(|(_, m)| MessageOut::new(m, with_content)).collect(),
            iterator: page.next.to_string(),
            done: page.done,
        }
    }
}

/// What a pull asks for, from the query string.
struct Pull {
    query: EventsQuery,
    wait: Duration,
    with_content: bool,
}

impl Pull {
    /// `position` is where to start when the query names no `iterator`.
    fn parse(q: &Query, position: Option<EventPosition>) -> ApiResult<Pull> {
        let limit = q.parse::<usize>("limit")?.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_query("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let wait = Duration::from_secs(q.parse::<u64>("wait")?.unwrap_or(0));
        if wait > MAX_WAIT {
            return Err(ApiError::bad_query("wait", format!("must be at most {} seconds", MAX_WAIT.as_secs())));
        }
        let after = match q.get("iterator").filter(|s| !s.is_empty()) {
            Some(it) => parse_position("iterator", it)?,
            None => position.unwrap_or(EventPosition::START),
        };
        let query = EventsQuery {
            after,
            since: q.time("after")?,
            event_types: query_names(q, "event_types")?,
            channels: query_names(q, "channels")?,
            limit,
        };
        Ok(Pull { query, wait, with_content: q.flag("with_content")?.unwrap_or(true) })
    }
}

fn parse_position(field: &str, text: &str) -> ApiResult<EventPosition> {
    text.parse().map_err(|_| ApiError::bad_query(field, "is not a position this server gave out"))
}

/// Reads once; when that finds nothing and `wait` is set, waits for new messages (or the
/// server's shutdown) up to `wait`, reading again on every signal.
async fn read_waiting(s: &AppState, app_id: &str, mut query: EventsQuery, wait: Duration) -> StoreResult<EventsPage> {
    let store = &s.0.store;
    let deadline = tokio::time::Instant::now() + wait;
    let mut signal = store.message_events_signal();
    let mut closing = s.0.closing.subscribe();
    loop {
        // Marked seen before the read, so a message arriving during it is not waited past.
        signal.borrow_and_update();
        let page = store.read_message_events(app_id, &query).await?;
        let now = tokio::time::Instant::now();
        if !page.messages.is_empty() || now >= deadline || *closing.borrow() {
            return Ok(page);
        }
        query.after = page.next;
        let pause = (deadline - now).min(RECHECK);
        wait_for_news(&mut signal, &mut closing, pause).await;
    }
}

/// Returns when the store signals new messages, the server starts shutting down, or after
/// `pause`, whichever comes first.
async fn wait_for_news(signal: &mut watch::Receiver<u64>, closing: &mut watch::Receiver<bool>, pause: Duration) {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    tokio::select! {
        // A signal whose sender is gone (the store is closing) would answer at once for
        // ever: the pause is then waited out instead.
        Ok(()) = signal.changed() => {}
        Ok(()) = closing.changed() => {}
        _ = &mut sleep => {}
    }
}

/// `GET /api/v1/app/{app_id}/events`
pub async fn poll(State(s): State<AppState>, t: Tenant, q: Query) -> ApiResult<axum::Json<MessageEventsOut>> {
    let pull = Pull::parse(&q, None)?;
    let page = read_waiting(&s, &t.app.id, pull.query, pull.wait).await?;
    Ok(axum::Json(MessageEventsOut::new(page, pull.with_content)))
}

/// `GET /api/v1/app/{app_id}/events/subscription/{subscription_id}`: reads from where the
/// subscription stands (or from `iterator`, which moves it) and moves it past what it
/// answers. The position moves before the answer reaches the consumer: a consumer that
/// must not miss a message it failed to receive keeps its own iterator instead.
pub async fn subscription(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, subscription_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<MessageEventsOut>> {
    check_name("subscription_id", &subscription_id)?;
    let stored = s.0.store.get_events_subscription(&t.app.id, &subscription_id).await?;
    let pull = Pull::parse(&q, stored)?;
    let page = read_waiting(&s, &t.app.id, pull.query, pull.wait).await?;
    s.0.store.set_events_subscription(&t.app.id, &subscription_id, page.next, Utc::now()).await?;
    Ok(axum::Json(MessageEventsOut::new(page, pull.with_content)))
}

/// `GET /api/v1/app/{app_id}/events/stream`: Server-Sent Events from `Last-Event-ID` (a
/// reconnecting `EventSource` sends it), else `iterator`, else the start of the stream. The
/// filters of a poll apply; a comment every 15 s keeps proxies from closing a quiet stream.
pub async fn stream(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let resume = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(id)) if !id.is_empty() => Some(id.parse().map_err(|_| bad_last_event_id())?),
        Some(Err(_)) => return Err(bad_last_event_id()),
        _ => None,
    };
    let mut pull = Pull::parse(&q, None)?;
    if let Some(position) = resume {
        pull.query.after = position;
    }
    let reader = StreamReader {
        store: s.0.store.clone(),
        app_id: t.app.id.clone(),
        query: pull.query,
        with_content: pull.with_content,
        signal: s.0.store.message_events_signal(),
        closing: s.0.closing.subscribe(),
        ready: VecDeque::new(),
    };
    let events = futures::stream::unfold(reader, |mut reader| async move {
        let (position, message) = reader.next().await?;
        let event = Event::default().id(position.to_string()).json_data(MessageOut::new(message, reader.with_content));
        // Serializing a message cannot fail (its payload is JSON text already); should it,
        // the stream ends and the client resumes from the last id it got.
        Some((Ok(event.ok()?), reader))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn bad_last_event_id() -> ApiError {
    ApiError::BadRequest("the Last-Event-ID header is not a position this server gave out".into())
}

/// The state of one Server-Sent Events stream between two events.
struct StreamReader {
    store: DynStore,
    app_id: String,
    query: EventsQuery,
    with_content: bool,
    signal: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    /// Read from the store and not yet sent.
    ready: VecDeque<(EventPosition, Message)>,
}

impl StreamReader {
    /// The next message, waiting for one as long as it takes; `None` ends the stream (the
    /// server is shutting down, or the store failed: the client reconnects and resumes).
    async fn next(&mut self) -> Option<(EventPosition, Message)> {
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Some(next);
            }
            if *self.closing.borrow() {
                return None;
            }
            self.signal.borrow_and_update();
            match self.store.read_message_events(&self.app_id, &self.query).await {
                Ok(page) => {
                    self.query.after = page.next;
                    self.ready.extend(page.messages);
                }
                Err(e) => {
                    tracing::warn!(error = %e, app_id = %self.app_id, "event stream read failed; closing the stream");
                    return None;
                }
            }
            if self.ready.is_empty() {
                wait_for_news(&mut self.signal, &mut self.closing, RECHECK).await;
            }
        }
    }
}
