//! hooklane's HTTP API: the Svix-compatible `/api/v1`.
#![forbid(unsafe_code)]

pub mod api;
mod cache;
pub mod dashboard;
pub mod error;
mod extract;
mod idempotency;
pub mod inbound;
mod inbound_budget;
pub mod operational;
pub mod ops;
pub mod state;
pub mod waiting;

use std::future::Future;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::serve::ListenerExt;
use axum::{middleware, Router, ServiceExt};
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::api::{app, attempt, auth, endpoint, event_type, events, message};
use crate::error::ApiError;
pub use crate::state::{AppState, InboundSettings, ServerSettings};

/// Every route of the API.
pub fn router(state: AppState) -> Router {
    let max_body = state.0.max_body_bytes;
    let app_routes = Router::new()
        .route("/", get(app::list).post(app::create))
        .route("/{app_id}", get(app::get).put(app::put).patch(app::patch).delete(app::delete))
        .route("/{app_id}/endpoint", get(endpoint::list).post(endpoint::create))
        .route(
            "/{app_id}/endpoint/{endpoint_id}",
            get(endpoint::get).put(endpoint::put).patch(endpoint::patch).delete(endpoint::delete),
        )
        .route("/{app_id}/endpoint/{endpoint_id}/secret", get(endpoint::get_secret))
        .route("/{app_id}/endpoint/{endpoint_id}/secret/rotate", post(endpoint::rotate_secret))
        .route(
            "/{app_id}/endpoint/{endpoint_id}/headers",
            get(endpoint::get_headers).put(endpoint::put_headers).patch(endpoint::patch_headers),
        )
        .route("/{app_id}/endpoint/{endpoint_id}/recover", post(endpoint::recover))
        .route("/{app_id}/endpoint/{endpoint_id}/replay-missing", post(endpoint::replay_missing))
        .route("/{app_id}/endpoint/{endpoint_id}/stats", get(endpoint::stats))
        .route("/{app_id}/endpoint/{endpoint_id}/msg", get(attempt::endpoint_messages))
        .route("/{app_id}/msg", get(message::list).post(message::create))
        .route("/{app_id}/msg/precheck/active", post(message::precheck))
        .route("/{app_id}/msg/{msg_id}", get(message::get))
        .route("/{app_id}/msg/{msg_id}/content", delete(message::expunge_content))
        .route("/{app_id}/msg/{msg_id}/endpoint", get(message::destinations))
        .route("/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend", post(message::resend))
        .route("/{app_id}/msg/{msg_id}/attempt", get(attempt::by_message))
        .route("/{app_id}/msg/{msg_id}/attempt/{attempt_id}", get(attempt::get))
        .route("/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content", delete(attempt::expunge_content))
        .route("/{app_id}/attempt/msg/{msg_id}", get(attempt::by_message))
        .route("/{app_id}/attempt/endpoint/{endpoint_id}", get(attempt::by_endpoint))
        // --- pulling instead of pushes: polling, long-polling, Server-Sent Events
        .route("/{app_id}/events", get(events::poll))
        .route("/{app_id}/events/stream", get(events::stream))
        .route("/{app_id}/events/subscription/{subscription_id}", get(events::subscription));
    let v1 = Router::new()
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .nest("/app", app_routes)
        .nest("/source", api::source::routes())
        .route("/event-type", get(event_type::list).post(event_type::create))
        .route(
            "/event-type/{name}",
            get(event_type::get).put(event_type::put).patch(event_type::patch).delete(event_type::delete),
        )
        .route("/auth/app-portal-access/{app_id}", post(auth::app_portal_access))
        .route("/auth/dashboard-access/{app_id}", post(auth::app_portal_access))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/app/{app_id}/expire-all", post(auth::expire_all))
        // --- operators' view: hooklane's statistics for the dashboard and portal
        .route("/stats/app/{app_id}/endpoint", get(api::stats::endpoints))
        .route("/stats/app/{app_id}/timeline", get(api::stats::timeline))
        .route("/stats/app/{app_id}/msg", get(api::stats::messages));
    Router::new()
        .nest("/api/v1", v1)
        // --- operators' view: liveness, readiness, metrics, dashboard and portal
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics))
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .layer(middleware::from_fn_with_state(state.clone(), cache::clear_after_writes))
        // Public ingest URLs of inbound sources: no idempotency layer (providers' retries
        // are deduplicated by their delivery id) and a body limit per source.
        .merge(inbound::routes())
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()))
        // A request id on every call: the caller's `x-request-id`, or a new one; in the log
        // span of the request and echoed in the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(ops::request_span).on_response(ops::LogResponse))
        .layer(SetRequestIdLayer::x_request_id(ops::MakeId))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves. Paths are matched with or
/// without a trailing slash, as Svix's SDKs use both.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.0.closing.clone();
    let mut closed = closing.subscribe();
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    let app = NormalizePathLayer::trim_trailing_slash().layer(router(state));
    // With the peer address, which inbound sources' address allow-lists check.
    let service = ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(app);
    // No Nagle delay: a response, an event-stream frame, goes out as soon as it is written.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an API connection");
        }
    });
    let serving = axum::serve(listener, service).with_graceful_shutdown(shutdown);
    // Requests in flight get a while to finish; a connection still open after that (an
    // event stream whose client stopped reading, which never sees the shutdown) is no
    // longer waited for: serving returns, and the process goes on to stop.
    let deadline = async move {
        let _ = closed.wait_for(|c| *c).await;
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    };
    tokio::select! {
        served = serving => served,
        () = deadline => {
            tracing::warn!(after = ?SHUTDOWN_DEADLINE, "connections still open at shutdown; no longer waiting for them");
            Ok(())
        }
    }
}

/// How long open connections get to finish once shutdown begins.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
