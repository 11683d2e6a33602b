//! Operational webhooks: hooklane telling the operator's own systems what happened to
//! their customers' endpoints, with Svix's event types and payloads
//! (`endpoint.created`, `endpoint.updated`, `endpoint.deleted`, `endpoint.disabled`, `endpoint.enabled`,
//! `message.attempt.failing`, `message.attempt.exhausted`, `message.attempt.recovered`).
//!
//! The events are ordinary messages posted into one application the operator names
//! (`operational_app`, by id or uid), so its endpoints receive them signed, retried and
//! logged like any other webhook, and can filter them by event type. Nothing is posted
//! while the setting is unset. Events about that application itself are not posted: one of
//! its own endpoints failing would otherwise feed on itself.

use std::sync::atomic::{AtomicI64, Ordering};

use hooklane_core::model::{Application, Endpoint, Message};
use hooklane_core::{DateTime, Utc};
use hooklane_dispatch::{AttemptNews, EngineEvent};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::state::AppState;

/// Event types hooklane posts.
pub const ENDPOINT_CREATED: &str = "endpoint.created";
pub const ENDPOINT_UPDATED: &str = "endpoint.updated";
pub const ENDPOINT_DELETED: &str = "endpoint.deleted";
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";
pub const ENDPOINT_ENABLED: &str = "endpoint.enabled";
pub const ATTEMPT_FAILING: &str = "message.attempt.failing";
pub const ATTEMPT_EXHAUSTED: &str = "message.attempt.exhausted";
pub const ATTEMPT_RECOVERED: &str = "message.attempt.recovered";

/// Posts the delivery engine's events (endpoints disabled; deliveries failing, out of
/// retries or recovered) until the engine stops sending them.
pub async fn forward_engine_events(state: AppState, mut events: mpsc::Receiver<EngineEvent>) {
    while let Some(event) = events.recv().await {
        let Some(ops) = operational_app(&state).await else { continue };
        let subject = match &event {
            EngineEvent::EndpointDisabled { app_id, .. } | EngineEvent::Attempt { app_id, .. } => app_id,
        };
        if *subject == ops.id {
            continue; // about the operational application itself: never posted
        }
        match engine_event_data(&state, event).await {
            Ok(Some((event_type, data))) => post(&state, &ops, event_type, data).await,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "operational webhook: cannot read what the event is about; not posted")
            }
        }
    }
}

/// Posts `endpoint.created`/`updated`/`deleted`/`disabled`/`enabled` about `endpoint` of `app`, in the
/// background (the API answer does not wait for it), after the changes made before it on
/// this node ([`EndpointNews`]).
pub(crate) fn endpoint_changed(state: &AppState, event_type: &'static str, app: &Application, endpoint: &Endpoint) {
    if state.0.operational_app.is_none() {
        return;
    }
    let data = match event_type {
        ENDPOINT_DISABLED => disabled_data(app, endpoint, "manual"),
        _ => endpoint_data(app, endpoint),
    };
    state.0.endpoint_news.send(state, (event_type, app.id.clone(), data));
}

/// An endpoint change to post: its event type, its application's id, its `data`.
type EndpointChange = (&'static str, String, Value);

/// Endpoint changes waiting to be posted, in the order this node made them, by one task
/// (a task each let a quick create-then-update post `updated` before `created`); at most
/// [`hooklane_dispatch::EVENT_BACKLOG`] wait, past which they are dropped with a warning,
/// as the engine's are.
pub struct EndpointNews {
    tx: mpsc::Sender<EndpointChange>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<EndpointChange>>>,
}

impl Default for EndpointNews {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(hooklane_dispatch::EVENT_BACKLOG);
        EndpointNews { tx, rx: std::sync::Mutex::new(Some(rx)) }
    }
}

impl EndpointNews {
    fn send(&self, state: &AppState, change: EndpointChange) {
        // The poster starts with the first change, on the runtime that serves requests (one
        // there is, in a request's handler; without, the change waits for one that has).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if let Some(rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() {
                runtime.spawn(post_endpoint_news(std::sync::Arc::downgrade(&state.0), rx));
            }
        }
        match self.tx.try_send(change) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("hooklane_operational_events_dropped_total").increment(1);
                tracing::warn!("operational webhook: too many endpoint changes waiting to be posted; one is dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!("hooklane_operational_events_dropped_total").increment(1);
                tracing::error!("operational webhook: the poster of endpoint changes has stopped; one is dropped");
            }
        }
    }
}

/// Posts the endpoint changes one after another until the state is gone (it holds the
/// sender: held here weakly, the poster does not keep it alive).
async fn post_endpoint_news(state: std::sync::Weak<crate::state::Shared>, mut rx: mpsc::Receiver<EndpointChange>) {
    while let Some((event_type, app_id, data)) = rx.recv().await {
        let Some(shared) = state.upgrade() else { return };
        let state = AppState(shared);
        match operational_app(&state).await {
            Some(ops) if ops.id != app_id => post(&state, &ops, event_type, data).await,
            _ => {}
        }
    }
}

fn endpoint_data(app: &Application, endpoint: &Endpoint) -> Value {
    json!({ "appId": app.id, "appUid": shown_uid(app), "endpointId": endpoint.id, "endpointUid": endpoint.uid })
}

/// An application's uid as operational events give it: none for an inbound source's own
/// application, whose uid is the source's id, the secret part of its URL (and, for a source
/// that checks no signature, its only credential), which a receiver of these events, an
/// alerting service say, has no need of.
fn shown_uid(app: &Application) -> Option<&str> {
    app.uid.as_deref().filter(|_| !crate::api::source::owned_by_source(app))
}

/// `endpoint.disabled`'s data: the endpoint's, with since when it failed and what disabled
/// it (`automatic` or `manual`).
fn disabled_data(app: &Application, endpoint: &Endpoint, trigger: &str) -> Value {
    let mut data = endpoint_data(app, endpoint);
    data["failSince"] = json!(endpoint.failing_since);
    data["trigger"] = json!(trigger);
    data
}

/// The event type, subject application and `data` of an engine event; `None` when what it
/// is about is gone already.
async fn engine_event_data(
    state: &AppState,
    event: EngineEvent,
) -> hooklane_store::StoreResult<Option<(&'static str, Value)>> {
    let store = &state.0.store;
    match event {
        EngineEvent::EndpointDisabled { app_id, endpoint_id } => {
            let (Some(app), Some(endpoint)) =
                (store.get_app(&app_id).await?, store.get_endpoint(&app_id, &endpoint_id).await?)
            else {
                return Ok(None);
            };
            Ok(Some((ENDPOINT_DISABLED, disabled_data(&app, &endpoint, "automatic"))))
        }
        EngineEvent::Attempt { news, app_id, msg_id, endpoint_id, attempt_id, attempted_at, response_status } => {
            let Some(app) = store.get_app(&app_id).await? else { return Ok(None) };
            let event_id = store.get_message(&app_id, &msg_id).await?.and_then(|m| m.event_id);
            let data = json!({
                "appId": app.id,
                "appUid": shown_uid(&app),
                "msgId": msg_id,
                "msgEventId": event_id,
                "endpointId": endpoint_id,
                "lastAttempt": last_attempt(&attempt_id, attempted_at, response_status),
            });
            let event_type = match news {
                AttemptNews::Failing => ATTEMPT_FAILING,
                AttemptNews::Exhausted => ATTEMPT_EXHAUSTED,
                AttemptNews::Recovered => ATTEMPT_RECOVERED,
            };
            Ok(Some((event_type, data)))
        }
    }
}

fn last_attempt(id: &str, at: DateTime<Utc>, status: i32) -> Value {
    json!({ "id": id, "timestamp": at, "responseStatusCode": status })
}

/// Why no application token (a portal token, an integration's key, a poller's key) is
/// issued for the operational application.
pub const NO_TOKEN: &str = "the operational webhooks' application holds every application's ids and failures: \
                            no application token is issued for it";

/// Whether `app` is the operational application (named by its id or its uid): it holds
/// every application's ids and failures, so no application token is issued for it, and
/// only the admin token reaches it.
pub fn is_operational_app(state: &AppState, app: &Application) -> bool {
    state.0.operational_app.as_deref().is_some_and(|key| app.id == key || app.uid.as_deref() == Some(key))
}

/// Whether a minute has passed since the last warning that the operational application
/// is missing (this process's).
fn missing_warning_due() -> bool {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = Utc::now().timestamp();
    let last = LAST.load(Ordering::Relaxed);
    now.saturating_sub(last) >= 60 && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

/// The operational application, looked up by id or uid each time (it may be created,
/// or replaced, while hooklane runs); `None`, with a warning, when unset or missing.
async fn operational_app(state: &AppState) -> Option<Application> {
    let key = state.0.operational_app.as_deref()?;
    match state.0.store.get_app(key).await {
        Ok(Some(app)) => Some(app),
        Ok(None) => {
            // Once a minute at most: during a mass failure every event comes here.
            if missing_warning_due() {
                tracing::warn!(operational_app = %key, "operational webhook: no such application; events not posted");
            }
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "operational webhook: cannot read the operational application");
            None
        }
    }
}

/// Posts `{"type": event_type, "data": data}` into the operational application `ops`.
/// Failures are logged: an operational webhook never fails the operation it reports.
async fn post(state: &AppState, ops: &Application, event_type: &'static str, data: Value) {
    let payload = json!({ "type": event_type, "data": data }).to_string();
    let msg = Message::new(ops.id.clone(), event_type, payload, crate::api::now());
    if let Err(e) = crate::api::message::store_and_dispatch(state, msg).await {
        tracing::warn!(error = %e, event_type, "operational webhook: cannot post the event");
    }
}
