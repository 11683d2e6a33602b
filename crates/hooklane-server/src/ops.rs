//! The operators' view outside `/api/v1`: liveness (`/health`), readiness (`/ready`), the
//! Prometheus scrape (`/metrics`) and request ids.
//!
//! Counters and histograms are emitted where things happen (ingest, the dispatcher's
//! attempts, store commits) through the `metrics` facade; [`install_recorder`] installs the
//! Prometheus recorder that collects them. Gauges describing the store (queue depth,
//! failing and disabled endpoints) are read from the store at scrape time, so they are
//! exact for every node sharing it and no stale series outlives an endpoint's recovery.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hooklane_core::Utc;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::error::ApiError;
use crate::extract::Admin;
use crate::state::AppState;

/// Settings of the operators' endpoints.
#[derive(Debug, Clone)]
pub struct OpsSettings {
    /// The installed Prometheus recorder; without one `/metrics` shows only the gauges
    /// read from the store.
    pub metrics: Option<PrometheusHandle>,
    /// Whether `/metrics` needs the admin token (default: it does; it names failing
    /// applications and endpoints of every tenant, on the port the portal is served from).
    pub metrics_require_token: bool,
}

impl Default for OpsSettings {
    fn default() -> Self {
        OpsSettings { metrics: None, metrics_require_token: true }
    }
}

/// Histogram buckets, in seconds, of the latencies hooklane records.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];

/// Installs the process-wide Prometheus recorder (once: a second call, or another recorder
/// installed first, answers `None` with a warning) and keeps its histograms drained.
pub fn install_recorder() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map(|b| b.upkeep_timeout(Duration::from_secs(5)));
    let handle = match builder.and_then(|b| b.install_recorder()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics shows store gauges only");
            return None;
        }
    };
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Some(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!("hooklane_messages_ingested_total", "Messages accepted (POST …/msg and inbound sources)");
    describe_counter!("hooklane_attempts_total", "Delivery attempts by outcome and HTTP status class");
    describe_histogram!("hooklane_attempt_duration_seconds", Unit::Seconds, "Duration of one delivery attempt");
    describe_histogram!(
        "hooklane_delivery_latency_seconds",
        Unit::Seconds,
        "From a message's acceptance to its successful delivery to an endpoint"
    );
    describe_histogram!("hooklane_store_commit_seconds", Unit::Seconds, "Duration of a store commit");
}

/// `GET /health`: 200 while the process serves.
pub async fn health() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 when the store answers, 503 otherwise.
pub async fn ready(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(5), s.0.store.ping()).await {
        Ok(Ok(())) => axum::Json(json!({ "status": "ready" })).into_response(),
        Ok(Err(e)) => not_ready(&e.to_string(), "the store did not answer"),
        Err(_) => not_ready("timed out", "the store did not answer within 5 s"),
    }
}

/// The error goes to the log only: `/ready` needs no token, and a store's error can name
/// its host and user.
fn not_ready(error: &str, detail: &str) -> Response {
    tracing::warn!(%error, "not ready: store unreachable");
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "status": "unavailable", "detail": detail }))).into_response()
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    if s.0.ops.metrics_require_token {
        let (mut parts, _) = req.into_parts();
        Admin::from_request_parts(&mut parts, &s).await?;
    }
    let mut out = match &s.0.ops.metrics {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    };
    // Within 5 s, as `/ready`: a scrape over a slow store answers without the store's gauges
    // rather than piling up reads.
    match tokio::time::timeout(Duration::from_secs(5), s.0.store.queue_stats(Utc::now())).await {
        Ok(Ok(q)) => render_store_gauges(&mut out, &q, Utc::now()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot read queue statistics");
            out.push_str("# store statistics unavailable\nhooklane_store_up 0\n");
        }
        Err(_) => {
            tracing::warn!("metrics: the queue statistics took more than 5 s");
            out.push_str("# store statistics unavailable\nhooklane_store_up 0\n");
        }
    }
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], out)
        .into_response())
}

/// Appends the gauges that describe the store, in the Prometheus text format.
pub fn render_store_gauges(out: &mut String, q: &hooklane_store::QueueStats, now: hooklane_core::DateTime<Utc>) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge("hooklane_store_up", "1 when the store answered this scrape", &[(String::new(), 1.0)]);
    gauge(
        "hooklane_queue_depth",
        "Pending deliveries: due now, scheduled for a retry, or leased (being sent)",
        &[
            ("{state=\"due\"}".into(), q.due as f64),
            ("{state=\"scheduled\"}".into(), q.scheduled as f64),
            ("{state=\"leased\"}".into(), q.leased as f64),
        ],
    );
    gauge(
        "hooklane_endpoints_disabled",
        "Endpoints disabled (by failing or by hand)",
        &[(String::new(), q.disabled_endpoints as f64)],
    );
    gauge(
        "hooklane_endpoints_failing",
        "Enabled endpoints whose last attempt failed",
        &[(String::new(), q.failing_endpoints as f64)],
    );
    let labels = |f: &hooklane_store::FailingEndpoint| {
        format!("{{app_id=\"{}\",endpoint_id=\"{}\"}}", escape(&f.app_id), escape(&f.endpoint_id))
    };
    let streak: Vec<(String, f64)> = q
        .failing
        .iter()
        .map(|f| (labels(f), (now - f.failing_since).num_milliseconds().max(0) as f64 / 1000.0))
        .collect();
    gauge("hooklane_endpoint_failing_seconds", "How long an endpoint has been failing without a success", &streak);
    let attempts: Vec<(String, f64)> = q.failing.iter().map(|f| (labels(f), f.failed_attempts as f64)).collect();
    gauge("hooklane_endpoint_failure_streak", "Failed attempts in a row of a failing endpoint", &attempts);
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Request ids for requests that arrive without `x-request-id`: `rid_` + a ULID.
#[derive(Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&hooklane_core::ids::new_id("rid")).ok().map(RequestId::new)
    }
}

/// The tracing span of one API request, carrying its request id, and its path with an
/// inbound source's id shortened (see [`crate::inbound::shown_source_id`]).
pub fn request_span<B>(req: &http::Request<B>) -> tracing::Span {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    let path = req.uri().path();
    let shown = match path.strip_prefix("/in/") {
        Some(rest) => match rest.split_once('/') {
            Some((source, tail)) => format!("/in/{}/{tail}", crate::inbound::shown_source_id(source)),
            None => format!("/in/{}", crate::inbound::shown_source_id(rest)),
        },
        None => path.to_string(),
    };
    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %shown)
}

/// Marks a response whose refusal its handler has logged (or, past a budget, chose not
/// to): an inbound source's, which a sender of forged requests could otherwise turn into
/// a line per request.
#[derive(Clone, Copy)]
pub struct Logged;

/// Logs each API response: failures at `info` (client errors) or `warn` (server errors),
/// successes only at `debug`. An access line per accepted message cost about 5 % of the
/// server's CPU at full ingest rate and buried the lines worth reading.
#[derive(Clone, Copy, Default)]
pub struct LogResponse;

impl<B> tower_http::trace::OnResponse<B> for LogResponse {
    fn on_response(self, response: &http::Response<B>, latency: Duration, _: &tracing::Span) {
        let status = response.status().as_u16();
        let latency_ms = latency.as_secs_f64() * 1000.0;
        match status {
            500.. => tracing::warn!(status, latency_ms, "request failed"),
            400..500 if response.extensions().get::<Logged>().is_some() => {
                tracing::debug!(status, latency_ms, "request refused")
            }
            400..500 => tracing::info!(status, latency_ms, "request refused"),
            _ => tracing::debug!(status, latency_ms, "request done"),
        }
    }
}
