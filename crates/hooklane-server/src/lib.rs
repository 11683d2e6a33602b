//! hooklane's HTTP API: the Svix-compatible `/api/v1`.
#![forbid(unsafe_code)]

pub mod api;
mod body_limit;
mod cache;
mod capability;
mod content_encoding;
pub mod dashboard;
pub mod error;
mod extract;
mod idempotency;
pub mod inbound;
mod inbound_budget;
mod message_rate;
pub use message_rate::MAX_MESSAGE_RATE;
pub mod openapi;
pub mod operational;
pub mod ops;
mod request_body;
pub mod state;
pub mod tasks;
mod unread_body;
pub mod waiting;

use std::future::Future;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{middleware, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
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
        .route(
            "/{app_id}/endpoint/{endpoint_id}/mtls",
            get(api::endpoint_mtls::get).put(api::endpoint_mtls::put).delete(api::endpoint_mtls::delete),
        )
        .route(
            "/{app_id}/endpoint/{endpoint_id}/oauth",
            get(api::endpoint_oauth::get).put(api::endpoint_oauth::put).delete(api::endpoint_oauth::delete),
        )
        .route(
            "/{app_id}/endpoint/{endpoint_id}/transformation",
            get(api::transformation::get).patch(api::transformation::patch),
        )
        .route("/{app_id}/endpoint/{endpoint_id}/recover", post(endpoint::recover))
        .route("/{app_id}/endpoint/{endpoint_id}/replay-missing", post(endpoint::replay_missing))
        .route("/{app_id}/endpoint/{endpoint_id}/bulk-replay", post(api::bulk::bulk_replay))
        .route("/{app_id}/endpoint/{endpoint_id}/stats", get(endpoint::stats))
        .route("/{app_id}/endpoint/{endpoint_id}/attempt-stats", get(endpoint::attempt_stats))
        .route("/{app_id}/endpoint/{endpoint_id}/preview", post(api::preview::preview))
        .route("/{app_id}/endpoint/{endpoint_id}/send-example", post(api::example::send_example))
        .route("/{app_id}/endpoint/{endpoint_id}/msg", get(attempt::endpoint_messages))
        .route("/{app_id}/msg", get(message::list).post(message::create))
        .route("/{app_id}/msg/precheck/active", post(message::precheck))
        .route("/{app_id}/msg/bulk-expunge", post(api::bulk::bulk_expunge))
        .route("/{app_id}/msg/expunge-all-contents", post(api::bulk::expunge_all_contents))
        .route("/{app_id}/msg/{msg_id}", get(message::get))
        .route("/{app_id}/msg/{msg_id}/content", delete(message::expunge_content))
        .route("/{app_id}/msg/{msg_id}/endpoint", get(message::destinations))
        .route("/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend", post(message::resend))
        .route("/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/attempt", get(attempt::by_message_and_endpoint))
        .route("/{app_id}/msg/{msg_id}/attempt", get(attempt::by_message))
        .route("/{app_id}/msg/{msg_id}/attempt/{attempt_id}", get(attempt::get))
        .route("/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content", delete(attempt::expunge_content))
        .route("/{app_id}/attempt/msg/{msg_id}", get(attempt::list_by_msg))
        .route("/{app_id}/attempt/endpoint/{endpoint_id}", get(attempt::by_endpoint))
        // --- integrations: named keys of an application, for third parties
        .route("/{app_id}/integration", get(api::integration::list).post(api::integration::create))
        .route(
            "/{app_id}/integration/{integ_id}",
            get(api::integration::get).put(api::integration::update).delete(api::integration::delete),
        )
        .route("/{app_id}/integration/{integ_id}/key/rotate", post(api::integration::rotate_key))
        // --- pulling instead of pushes: polling, long-polling, Server-Sent Events
        .route("/{app_id}/events", get(events::poll))
        .route("/{app_id}/events/stream", get(events::stream))
        .route("/{app_id}/events/subscription/{subscription_id}", get(events::subscription).head(no_head))
        // --- polling endpoints (Svix's message poller)
        .route("/{app_id}/poller/{endpoint_id}", get(api::poller::poll))
        .route("/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}", get(api::poller::consumer_poll).head(no_head))
        .route("/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek", post(api::poller::consumer_seek));
    let v1 = Router::new()
        .route("/health", get(openapi::health))
        .route("/openapi.json", get(openapi::openapi_json))
        .nest("/app", app_routes)
        .nest("/source", api::source::routes())
        .route("/event-type", get(event_type::list).post(event_type::create))
        .route(
            "/event-type/import/openapi",
            post(api::event_type_import::import_openapi).layer(body_limit::for_imports(max_body)),
        )
        .route(
            "/event-type/{name}",
            get(event_type::get).put(event_type::put).patch(event_type::patch).delete(event_type::delete),
        )
        .route("/auth/app-portal-access/{app_id}", post(auth::app_portal_access))
        .route("/auth/dashboard-access/{app_id}", post(auth::dashboard_access))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/whoami", get(auth::whoami))
        .route(
            "/operational-webhook/endpoint",
            get(api::operational_endpoint::list).post(api::operational_endpoint::create),
        )
        .route(
            "/operational-webhook/endpoint/{endpoint_id}",
            get(api::operational_endpoint::get)
                .put(api::operational_endpoint::put)
                .delete(api::operational_endpoint::delete),
        )
        .route("/operational-webhook/endpoint/{endpoint_id}/secret", get(api::operational_endpoint::get_secret))
        .route(
            "/operational-webhook/endpoint/{endpoint_id}/secret/rotate",
            post(api::operational_endpoint::rotate_secret),
        )
        .route(
            "/operational-webhook/endpoint/{endpoint_id}/headers",
            get(api::operational_endpoint::get_headers).put(api::operational_endpoint::put_headers),
        )
        .route("/environment/export", post(api::environment::export))
        .route("/environment/import", post(api::environment::import).layer(body_limit::for_imports(max_body)))
        .route("/background-task", get(api::background_task::list))
        .route("/background-task/{task_id}", get(api::background_task::get))
        .route("/auth/app/{app_id}/expire-all", post(auth::expire_all))
        .route("/auth/app/{app_id}/poller/{endpoint_id}/token/rotate", post(api::poller::rotate_key))
        .route("/stats/usage/app", post(api::usage::aggregate_app_stats))
        .route("/stats/usage/event-types", put(api::usage::aggregate_event_types))
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
        .layer(middleware::from_fn_with_state(state.clone(), refuse_own_deliveries))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal("handler panicked".into()).into_response()))
        // Bodies watched, decoded and checked here, outside every reader of a body and the
        // answer to a panic (see the module).
        .layer(middleware::from_fn_with_state(state.clone(), request_body::prepare))
        // A request id on every call: the caller's `x-request-id`, or a new one; in the log
        // span of the request and echoed in the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        // (No failure logger of its own: `LogResponse` logs a server error once, at `warn`;
        // tower-http's default wrote it again at `error`.)
        .layer(
            TraceLayer::new_for_http().make_span_with(ops::request_span).on_response(ops::LogResponse).on_failure(()),
        )
        .layer(SetRequestIdLayer::x_request_id(ops::MakeId))
        .with_state(state)
}

/// Refuses (508) a request that is one of this server's own deliveries sent back to it, by
/// an endpoint or destination pointing at its API or its sources, where it could make a
/// message delivered back again without end, filling the store for every tenant: every
/// one to the API, and to a source the second turn (a delivery of a message a source made
/// from one of this server's deliveries). One turn through a source is let through: an
/// application's endpoint feeding one of the server's own sources, forwarded on to
/// destinations, is no loop. The marker is in every delivery, and no endpoint, header or
/// transformation can change it.
async fn refuse_own_deliveries(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use hooklane_core::signing::{ORIGIN_HEADER, RELAYED};
    let Some(value) = req.headers().get(ORIGIN_HEADER).and_then(|v| v.to_str().ok()) else {
        return next.run(req).await;
    };
    let (marker, relayed) = match value.strip_suffix(RELAYED) {
        Some(marker) => (marker, true),
        None => (value, false),
    };
    let to_a_source = req.uri().path().starts_with("/in/");
    if marker == s.0.origin_marker && (relayed || !to_a_source) {
        let webhook_id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        // (The path is the request span's, where a source's id is shortened: it is the
        // secret part of the source's URL.)
        tracing::warn!(webhook_id, "refused a delivery of this server sent back to it");
        return ApiError::DeliveryLoop.into_response();
    }
    next.run(req).await
}

/// The answer to a HEAD of a read that moves a stored position (a subscription's, a polling
/// endpoint consumer's): axum would run the GET for it and drop the body, and a monitor
/// probing the URL would move the position past messages nobody got.
async fn no_head() -> axum::response::Response {
    let mut response = ApiError::MethodNotAllowed.into_response();
    response.headers_mut().insert(axum::http::header::ALLOW, axum::http::HeaderValue::from_static("GET"));
    response
}

/// Serves the API on `listener` until `shutdown` resolves. Paths are matched with or
/// without a trailing slash, as Svix's SDKs use both. A client gets `read_timeout` to send
/// a request's headers, and as long again between two pieces of its body: a connection
/// that trickles bytes (slowloris) is closed instead of being held open for ever.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.0.closing.clone();
    cache::follow_other_nodes(&state);
    cache::follow_disablings(&state);
    let app = NormalizePathLayer::trim_trailing_slash()
        .layer(router(state).layer(RequestBodyTimeoutLayer::new(read_timeout)));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(read_timeout);
    // Every connection holds a receiver: once all are dropped, every connection has ended.
    let (connections, connection) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait for some to be given back.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // No Nagle delay: a response, an event-stream frame, goes out as soon as it is written.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an API connection");
        }
        let app = app.clone();
        // With the peer address, which inbound sources' address allow-lists check.
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let conn = http1.serve_connection(TokioIo::new(tcp), service);
        let (mut stopping, held) = (closing.subscribe(), connection.clone());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // The `Ref` the wait gives is dropped at once: it must not live across an await.
            let stop = async move {
                let _ = stopping.wait_for(|c| *c).await.map(drop);
            };
            let served = tokio::select! {
                served = conn.as_mut() => served,
                () = stop => {
                    // Answers what it is doing, then closes (an idle connection at once).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %peer, "API connection ended with an error");
            }
            drop(held);
        });
    }
    // New connections are refused from now on (not queued by the kernel, unanswered, until
    // the process ends); and a replacement process can bind the port.
    drop(listener);
    closing.send_replace(true);
    drop(connection);
    // Requests in flight get a while to finish; a connection still open after that (an
    // event stream whose client stopped reading, which never sees the shutdown) is no
    // longer waited for: serving returns, and the process goes on to stop.
    if tokio::time::timeout(SHUTDOWN_DEADLINE, connections.closed()).await.is_err() {
        tracing::warn!(after = ?SHUTDOWN_DEADLINE, "connections still open at shutdown; no longer waiting for them");
    }
    Ok(())
}

/// Wait before accepting again after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long open connections get to finish once shutdown begins.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
