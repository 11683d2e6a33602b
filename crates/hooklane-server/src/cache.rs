//! A short-lived cache of applications and their endpoints for the ingest path, so posting a
//! message does not read them from the store every time.
//!
//! Entries live for `ttl` (`tenant_cache_ttl`, one second by default). Changes made through
//! this process's API, and endpoints its dispatcher disables, clear the cache at once and
//! are announced to the other nodes sharing the store, whose caches clear too (see
//! [`clear_after_writes`], [`follow_disablings`], [`follow_other_nodes`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hooklane_core::model::{Application, Endpoint};
use hooklane_store::{DynStore, StoreResult};

use crate::state::AppState;

/// An application's endpoints, shared by every message that fans out to them.
type Endpoints = Arc<Vec<Arc<Endpoint>>>;

pub struct TenantCache {
    ttl: Duration,
    apps: Mutex<HashMap<String, (Instant, Application)>>,
    endpoints: Mutex<HashMap<String, (Instant, Endpoints)>>,
    /// Bumped by every clearing: a read from the store that a clearing overtook (it may
    /// hold what the write that cleared changed) is answered but not kept.
    generation: AtomicU64,
}

/// Entries kept at most; past that the cache starts afresh (cheap, and bounds memory).
const MAX_ENTRIES: usize = 10_000;

impl TenantCache {
    pub fn new(ttl: Duration) -> Self {
        TenantCache {
            ttl,
            apps: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The application with this id or uid.
    pub async fn app(&self, store: &DynStore, key: &str) -> StoreResult<Option<Application>> {
        if let Some((at, app)) = self.apps.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            if at.elapsed() < self.ttl {
                return Ok(Some(app.clone()));
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        let found = store.get_app(key).await?;
        if let Some(app) = &found {
            let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
            if self.generation.load(Ordering::Acquire) != generation {
                return Ok(found);
            }
            if apps.len() >= MAX_ENTRIES {
                apps.clear();
            }
            apps.insert(key.to_string(), (Instant::now(), app.clone()));
        }
        Ok(found)
    }

    /// Every endpoint of the application.
    pub async fn endpoints(&self, store: &DynStore, app_id: &str) -> StoreResult<Endpoints> {
        if let Some((at, eps)) = self.endpoints.lock().unwrap_or_else(|p| p.into_inner()).get(app_id) {
            if at.elapsed() < self.ttl {
                return Ok(eps.clone());
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        let eps: Endpoints = Arc::new(store.app_endpoints(app_id).await?.into_iter().map(Arc::new).collect());
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return Ok(eps);
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(app_id.to_string(), (Instant::now(), eps.clone()));
        Ok(eps)
    }

    pub fn clear(&self) {
        // (Bumped with the maps' locks held, so that a read checking it under the same lock
        // sees either the bump or the cleared map.)
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        apps.clear();
        endpoints.clear();
    }
}

/// Clears the cache after every request that may have changed an application, an endpoint
/// or a source: any API call other than a read, posting a message, asking what one would
/// do (a precheck, a preview), acting on messages and deliveries (expunges, resends,
/// recoveries, replays, examples), tokens and usage statistics, or moving a polling
/// endpoint's consumer, unless it was refused (a 4xx answer: refused before anything was
/// written). What is left is rare next to messages, so starting the cache afresh costs
/// little and cannot miss a case; but the calls left out are made routinely (a portal
/// session's token, a resend by any application token), and each clear empties every
/// node's cache for every tenant.
///
/// The request runs on a task of its own, which clears once it has ended: a client that
/// stops waiting (a timeout, a dropped connection) drops this future, but not the write it
/// started (the store goes on with a write it was handed; a request with an
/// `Idempotency-Key` runs on by itself), and a clear dropped with it would leave every
/// node's cache without the change for `tenant_cache_ttl`: a new endpoint sent nothing, a
/// disabled one still sent messages. Clearing when the future is dropped would not do: it
/// would come before a write still queued in the store, and a message posted in between
/// would cache what was there before.
pub async fn clear_after_writes(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if !may_change_tenants(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let run = async move {
        // Clears when dropped, so also after a handler that panicked (a spurious clear
        // costs little; a missed one, stale endpoints).
        let mut clear = ClearOnDrop(Some(s));
        let response = next.run(req).await;
        if response.status().is_client_error() {
            // Refused before anything was written.
            clear.0 = None;
        }
        response
        // (`clear` is dropped here, before the answer goes out: a client that posts a
        // message once it has the answer finds the change.)
    };
    match tokio::spawn(tracing::Instrument::in_current_span(run)).await {
        Ok(response) => response,
        // Given back to the panic layer above, which answers it as it always has.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => crate::error::ApiError::Internal(format!("the request's handler stopped: {e}")).into_response(),
    }
}

/// Clears the cache, and announces it to the other nodes, when dropped (unless emptied).
struct ClearOnDrop(Option<AppState>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        let Some(s) = self.0.take() else { return };
        metrics::counter!("hooklane_tenant_cache_clears_total").increment(1);
        s.0.cache.clear();
        let store = s.0.store.clone();
        // (Dropped on the request's task, so within the runtime; the announcement waits
        // for the store, which a drop cannot.)
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { store.announce_tenant_change().await });
        }
    }
}

fn may_change_tenants(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    // Matched by the route's shape, not by how the path ends: an endpoint or application
    // whose uid is `msg` or `preview` is written to like any other.
    let post = *method == Method::POST;
    let leaves_tenants = match segments.as_slice() {
        ["", "api", "v1", "app", _, "msg"]
        | ["", "api", "v1", "app", _, "msg", "precheck", "active"]
        | ["", "api", "v1", "app", _, "msg", "bulk-expunge" | "expunge-all-contents"]
        | ["", "api", "v1", "app", _, "msg", _, "endpoint", _, "resend"]
        | ["", "api", "v1", "app", _, "endpoint", _, "preview" | "recover" | "replay-missing" | "bulk-replay" | "send-example"]
        | ["", "api", "v1", "app", _, "poller", _, "consumer", _, "seek"]
        // (A portal token may create its application: one never read is not cached.)
        | ["", "api", "v1", "auth", "app-portal-access" | "dashboard-access", _]
        | ["", "api", "v1", "auth", "logout"]
        | ["", "api", "v1", "auth", "app", _, "expire-all"]
        | ["", "api", "v1", "stats", "usage", "app"] => post,
        ["", "api", "v1", "stats", "usage", "event-types"] => *method == Method::PUT,
        ["", "api", "v1", "app", _, "msg", _, "content"] | ["", "api", "v1", "app", _, "msg", _, "attempt", _, "content"] => {
            *method == Method::DELETE
        }
        _ => false,
    };
    method != Method::GET && method != Method::HEAD && path.starts_with("/api/") && !leaves_tenants
}

/// Clears the cache whenever this process's dispatcher disables endpoints (it announces
/// that to the other nodes itself). Ends with the state.
pub fn follow_disablings(s: &AppState) {
    let mut disablings = s.0.dispatcher.disablings();
    let shared = std::sync::Arc::downgrade(&s.0);
    tokio::spawn(async move {
        while disablings.changed().await.is_ok() {
            match shared.upgrade() {
                Some(shared) => shared.cache.clear(),
                None => return,
            }
        }
    });
}

/// Clears the cache whenever another node sharing the store announces a change (a store
/// only this process uses has none to announce). Ends with the state.
pub fn follow_other_nodes(s: &AppState) {
    let Some(mut changes) = s.0.store.tenant_changes() else { return };
    let shared = std::sync::Arc::downgrade(&s.0);
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            // Lagged: some announcements were missed, which one clearing covers.
            if let Err(RecvError::Closed) = changes.recv().await {
                return;
            }
            match shared.upgrade() {
                Some(shared) => shared.cache.clear(),
                None => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_to_tenants_clear_the_cache() {
        for (method, path) in [
            (Method::POST, "/api/v1/app/app_1/endpoint"),
            (Method::PATCH, "/api/v1/app/app_1/endpoint/ep_1"),
            (Method::DELETE, "/api/v1/app/app_1"),
            (Method::POST, "/api/v1/source/src_1"),
            // Uids that look like the routes that only ask.
            (Method::PATCH, "/api/v1/app/app_1/endpoint/msg"),
            (Method::DELETE, "/api/v1/app/app_1/endpoint/preview"),
            (Method::DELETE, "/api/v1/app/preview"),
            (Method::PUT, "/api/v1/app/msg"),
            (Method::DELETE, "/api/v1/app/app_1/endpoint/seek"),
            (Method::PATCH, "/api/v1/app/app_1/endpoint/recover"),
            (Method::DELETE, "/api/v1/app/resend"),
            // Changes to endpoints under their own routes.
            (Method::POST, "/api/v1/app/app_1/endpoint/ep_1/secret/rotate"),
            (Method::PUT, "/api/v1/app/app_1/endpoint/ep_1/headers"),
            (Method::PATCH, "/api/v1/app/app_1/endpoint/ep_1/transformation"),
            (Method::PUT, "/api/v1/app/app_1/endpoint/ep_1/oauth"),
            (Method::POST, "/api/v1/environment/import"),
        ] {
            assert!(may_change_tenants(&method, path), "{method} {path}");
        }
        for (method, path) in [
            (Method::GET, "/api/v1/app/app_1/endpoint"),
            (Method::POST, "/api/v1/app/app_1/msg"),
            (Method::POST, "/api/v1/app/app_1/msg/"),
            (Method::POST, "/api/v1/app/app_1/msg/precheck/active"),
            (Method::POST, "/api/v1/app/app_1/endpoint/ep_1/preview"),
            (Method::POST, "/api/v1/app/app_1/poller/ep_1/consumer/c/seek"),
            (Method::POST, "/in/src_1"),
            // Made routinely (a portal session's token, a resend by any application token):
            // they change no application or endpoint.
            (Method::POST, "/api/v1/auth/app-portal-access/app_1"),
            (Method::POST, "/api/v1/auth/logout"),
            (Method::POST, "/api/v1/auth/app/app_1/expire-all"),
            (Method::POST, "/api/v1/app/app_1/msg/msg_1/endpoint/ep_1/resend"),
            (Method::POST, "/api/v1/app/app_1/msg/bulk-expunge"),
            (Method::DELETE, "/api/v1/app/app_1/msg/msg_1/content"),
            (Method::DELETE, "/api/v1/app/app_1/msg/msg_1/attempt/atmpt_1/content"),
            (Method::POST, "/api/v1/app/app_1/endpoint/ep_1/recover"),
            (Method::POST, "/api/v1/app/app_1/endpoint/ep_1/send-example"),
            (Method::POST, "/api/v1/stats/usage/app"),
            (Method::PUT, "/api/v1/stats/usage/event-types"),
        ] {
            assert!(!may_change_tenants(&method, path), "{method} {path}");
        }
    }
}
