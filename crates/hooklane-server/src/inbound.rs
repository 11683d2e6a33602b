//! `POST /in/{source_id}`: the public ingest URL of an inbound source.
//!
//! No bearer token: the source's verification is the authentication. In order, a request
//! is checked against the source's address allow-list, its body size limit, its
//! verification and its format; a refused request is answered with a 4xx and recorded as
//! rejected (up to a budget per source: [`crate::inbound_budget`]), and nothing of it is
//! forwarded. An accepted request becomes one message of the
//! source's application (the provider's delivery id as its `eventId`, so a retried
//! delivery is a duplicate that is acknowledged and not forwarded again), written durably
//! before the 200, then forwarded by the dispatcher like any outbound message. Every
//! request is recorded (`GET /api/v1/source/{id}/request`), refusals within a budget.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use hooklane_core::ids::{self, new_id};
use hooklane_core::inbound::{forwarded_headers, is_sensitive_header, Handshake, Headers, Rejection, Verification};
use hooklane_core::model::{InboundRequest, InboundStatus, Message, Source, SourceResponse};
use hooklane_core::{DateTime, Utc};
use hooklane_store::StoreError;
use ipnet::IpNet;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::message::{nesting_depth, store_and_dispatch, MAX_PAYLOAD_DEPTH};
use crate::api::source::body_limit;
use crate::error::ApiError;
use crate::extract::Path;
use crate::openapi::{ErrorBody, SourcePath};
use crate::state::{hex, AppState};

/// Bytes of a request body kept in its record (the forwarded message keeps all of it).
const RECORDED_BODY_BYTES: usize = 64 * 1024;
/// What a record kept within a source's budget (a refusal, a duplicate, a URL check) keeps
/// of the body, and of the headers in all: enough to see what was sent and why it was
/// refused, while a loop of forged posts with a megabyte of body and of headers each fills
/// the request log by a few kilobytes a record, not half a megabyte.
const BUDGETED_BODY_BYTES: usize = 2 * 1024;
const BUDGETED_HEADER_BYTES: usize = 4 * 1024;

/// `headers`, in their order, as many as fit in `most` bytes (names and values).
fn headers_within(headers: &BTreeMap<String, String>, most: usize) -> BTreeMap<String, String> {
    let mut left = most;
    let mut kept = BTreeMap::new();
    for (name, value) in headers {
        let Some(rest) = left.checked_sub(name.len() + value.len()) else { continue };
        left = rest;
        kept.insert(name.clone(), value.clone());
    }
    kept
}
/// Event type of a forwarded request whose provider does not name one.
const DEFAULT_EVENT_TYPE: &str = "inbound";

/// The public ingest route. It is served outside the API's idempotency layer: providers
/// retry with the same delivery id, which is deduplicated here.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/in/{source_id}", post(ingest).get(url_check).fallback(|| async { ApiError::MethodNotAllowed }))
        // Refusals are logged here, within each source's budget: not again per request.
        .layer(axum::middleware::map_response(|mut response: Response| async move {
            response.extensions_mut().insert(crate::ops::Logged);
            response
        }))
}

/// What is known of a request so far, to record it whatever becomes of it.
struct Record<'a> {
    s: &'a AppState,
    source: &'a Source,
    id: String,
    received_at: DateTime<Utc>,
    remote_addr: Option<String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    body_size: u64,
    dedup_key: Option<String>,
}

impl<'a> Record<'a> {
    /// Writes the request log's record. `budgeted`: a record kept within a source's budget
    /// (a refusal, a duplicate, a URL check), which anyone may send in a loop, keeps less of
    /// the request (see [`BUDGETED_BODY_BYTES`]).
    async fn save(
        &self,
        status: InboundStatus,
        http_status: StatusCode,
        reason: Option<String>,
        msg_id: Option<String>,
        budgeted: bool,
    ) -> bool {
        self.count(status.as_str());
        tracing::info!(
            source_id = %shown_source_id(&self.source.id),
            request_id = %self.id,
            status = status.as_str(),
            http_status = http_status.as_u16(),
            reason = reason.as_deref().unwrap_or(""),
            msg_id = msg_id.as_deref().unwrap_or(""),
            "inbound request"
        );
        let record = InboundRequest {
            id: self.id.clone(),
            source_id: self.source.id.clone(),
            status,
            http_status: http_status.as_u16(),
            reason,
            remote_addr: self.remote_addr.clone(),
            headers: if budgeted { headers_within(&self.headers, BUDGETED_HEADER_BYTES) } else { self.headers.clone() },
            // (Held to `RECORDED_BODY_BYTES` already, as it was kept.)
            body: if budgeted {
                self.body[..self.body.len().min(BUDGETED_BODY_BYTES)].to_vec()
            } else {
                self.body.clone()
            },
            body_size: self.body_size,
            dedup_key: self.dedup_key.clone(),
            msg_id,
            received_at: self.received_at,
        };
        // The record is a log: failing to write it changes the answer only where it is what
        // keeps work still to be done ([`Record::acknowledge`]).
        match self.s.0.store.record_inbound_request(record).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, source_id = %shown_source_id(&self.source.id), "could not record an inbound request");
                false
            }
        }
    }

    /// Answers a request hooklane could not take (the provider sends it again).
    fn failed(&self, error: ApiError) -> Response {
        self.count("error");
        error.into_response()
    }

    /// Records a refusal (within the source's budget, see [`crate::inbound_budget`]) and
    /// turns it into the answer.
    async fn reject(&self, error: ApiError) -> Response {
        let status = error.status();
        if self.within_budget(&self.s.0.rejections, "rejected", "hooklane_inbound_rejections_unrecorded_total") {
            self.save(InboundStatus::Rejected, status, Some(error.to_string()), None, true).await;
        } else {
            tracing::debug!(source_id = %shown_source_id(&self.source.id), http_status = status.as_u16(), "inbound request refused, not recorded: over the source's budget");
        }
        let basic = matches!(self.source.verification, Verification::BasicAuth { .. });
        let mut response = error.into_response();
        if basic && status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"hooklane\""));
        }
        response
    }

    /// Records a provider's check of the URL, answered with `http_status` and not forwarded,
    /// within the source's budget of them (as duplicates are): it changes nothing, and a loop
    /// of them (Meta's needs only the verify token, which sits in the URL; a signed one can be
    /// replayed within its tolerance) must not fill the request log.
    async fn url_check(&self, http_status: StatusCode) {
        if self.within_budget(&self.s.0.url_checks, "accepted", "hooklane_inbound_url_checks_unrecorded_total") {
            let why = "the provider's URL check, answered; not forwarded".to_string();
            self.save(InboundStatus::Accepted, http_status, Some(why), None, true).await;
        }
    }

    /// Whether a request of a kind the source records within a budget (refusals,
    /// duplicates, URL checks: see [`crate::inbound_budget`]) may be recorded now; if not, it
    /// is only counted, as `counted` and in the `unrecorded` metric.
    fn within_budget(
        &self,
        budget: &crate::inbound_budget::RejectionBudget,
        counted: &'static str,
        unrecorded: &'static str,
    ) -> bool {
        if budget.take(&self.source.id) {
            return true;
        }
        self.count(counted);
        metrics::counter!(unrecorded).increment(1);
        false
    }

    /// Records an accepted (or duplicate) request, which is message `msg_id`, and answers it:
    /// as its provider asks (`acknowledgement`), else as the source says (its `response`),
    /// else with hooklane's own answer.
    async fn acknowledge(
        &self,
        status: InboundStatus,
        reason: Option<String>,
        msg_id: &str,
        acknowledgement: Option<Handshake>,
    ) -> Response {
        let custom = self.source.response.as_ref().filter(|_| acknowledgement.is_none());
        let http_status = match (&acknowledgement, custom) {
            (Some(reply), _) => answer_status(reply),
            (None, Some(own)) => StatusCode::from_u16(own.status).unwrap_or(StatusCode::OK),
            (None, None) => StatusCode::OK,
        };
        // Accepted with a reason: its fan-out is still to be done, and this record is what
        // the sweep ([`finish_fan_outs`]) completes it from. Without it, the request is not
        // acknowledged: the provider's retry may forward it twice, but it is not lost.
        let unfinished = status == InboundStatus::Accepted && reason.is_some();
        // A duplicate changes nothing (its original is stored): it is recorded within a
        // budget, as refusals are, so that a valid request replayed in a loop (a signature
        // without a timestamp stays valid) cannot fill the request log.
        let duplicate = status == InboundStatus::Duplicate;
        let recorded = !duplicate
            || self.within_budget(&self.s.0.duplicates, "duplicate", "hooklane_inbound_duplicates_unrecorded_total");
        if recorded && !self.save(status, http_status, reason, Some(msg_id.to_string()), duplicate).await && unfinished
        {
            return self.failed(ApiError::Unavailable("the request could not be recorded; send it again".into()));
        }
        match (acknowledgement, custom) {
            (Some(reply), _) => provider_answer(reply),
            (None, Some(own)) => source_answer(http_status, own),
            (None, None) if status == InboundStatus::Duplicate => answer("duplicate", &self.id, msg_id),
            (None, None) => answer("accepted", &self.id, msg_id),
        }
    }

    /// `hooklane_inbound_requests_total`, by source and outcome (sources are few: the admin's):
    /// each request once, as recorded (`accepted`, `duplicate`, `rejected`), or `error` when
    /// hooklane could not take it (its store failing). The source goes by its application's
    /// id: its own id is in its public URL, and `/metrics` may be open to whoever reaches it.
    fn count(&self, status: &'static str) {
        metrics::counter!("hooklane_inbound_requests_total", "app_id" => self.source.app_id.clone(), "status" => status)
            .increment(1);
    }

    fn new(
        s: &'a AppState,
        source: &'a Source,
        received_at: DateTime<Utc>,
        client: Option<IpAddr>,
        headers: &Headers,
    ) -> Self {
        Record {
            s,
            source,
            id: new_id(ids::INBOUND_REQUEST),
            received_at,
            remote_addr: client.map(|ip| ip.to_string()),
            headers: headers.iter().map(|(k, v)| (k.clone(), mask(k, v))).collect(),
            body: Vec::new(),
            body_size: 0,
            dedup_key: None,
        }
    }

    fn keep_body(&mut self, body: &[u8]) {
        self.body_size = body.len() as u64;
        self.body = body[..body.len().min(RECORDED_BODY_BYTES)].to_vec();
    }
}

/// A source's id as logs show it: its last four characters. The id is the secret part of
/// its public URL (for a source without verification, its only credential), and logs are
/// read by more people than the API's tokens.
pub fn shown_source_id(id: &str) -> String {
    let start = id.char_indices().rev().nth(3).map_or(0, |(at, _)| at);
    format!("…{}", &id[start..])
}

/// The source a request is for, or the answer when there is none.
async fn find_source(s: &AppState, source_id: &str) -> Result<Source, Box<Response>> {
    match s.0.store.get_source(source_id).await {
        Ok(Some(source)) => Ok(source),
        Ok(None) => {
            // (At debug: a scan of made-up source URLs must not write a line per request.)
            tracing::debug!(source_id = %shown_source_id(source_id), "inbound request for an unknown source");
            Err(Box::new(ApiError::NotFound("source").into_response()))
        }
        Err(e) => Err(Box::new(ApiError::from(e).into_response())),
    }
}

/// The client's address: the peer's, or behind a trusted proxy the one it names.
fn client_of(s: &AppState, req: &Request) -> Option<IpAddr> {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    client_addr(peer, req.headers(), &s.0.inbound.trusted_proxies)
}

/// Answers a provider's check of the URL made with a `GET` (Meta's: `hub.mode=subscribe`,
/// `hub.verify_token`, `hub.challenge`), recorded like any request and never forwarded.
/// Sources of other providers take no `GET` (405).
#[utoipa::path(
    get,
    path = "/in/{source_id}",
    tag = "Source",
    operation_id = "v1.source.url-check",
    security(()),
    params(SourcePath),
    responses(
        (status = 200, description = "The challenge, as the whole body (text/plain)", body = String),
        (status = 400, description = "Not Meta's check of the URL: `hub.mode` is not `subscribe`, or the challenge or \
            token is missing", body = ErrorBody),
        (status = 403, description = "The token is not the source's, or the address is not in its allow-list", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 405, description = "This source's provider makes no such check", body = ErrorBody),
    )
)]
pub async fn url_check(State(s): State<AppState>, Path(source_id): Path<String>, req: Request) -> Response {
    let received_at = crate::api::now();
    let source = match find_source(&s, &source_id).await {
        Ok(source) => source,
        Err(answer) => return *answer,
    };
    // (axum also routes HEAD here: a check with nothing to read the answer is none.)
    let check = match source.verification.url_check(req.uri().query().unwrap_or_default()) {
        Some(check) if req.method() == axum::http::Method::GET => check,
        _ => return ApiError::MethodNotAllowed.into_response(),
    };
    let client = client_of(&s, &req);
    let headers = header_map(req.headers());
    let record = Record::new(&s, &source, received_at, client, &headers);
    if !address_allowed(client, &source.allow_networks) {
        return record.reject(ApiError::Forbidden("this address may not send to this source")).await;
    }
    match check {
        Ok(challenge) => {
            record.url_check(StatusCode::OK).await;
            provider_answer(Handshake::Text(challenge))
        }
        Err(Rejection::BadCredentials) => {
            record.reject(ApiError::Forbidden("the verify token is not this source's")).await
        }
        Err(why) => record.reject(ApiError::BadRequest(format!("not Meta's check of the URL: {why}"))).await,
    }
}

/// Receives a provider's webhook at a source's public ingest URL.
///
/// No bearer token: the source's verification is the authentication. Checked in order
/// against the source's address allow-list, its body size limit, its verification and its
/// format; an accepted request is stored durably as a message of the source's application
/// before the 200, then forwarded to the destinations. A delivery id seen before is
/// acknowledged (200, `duplicate`) and not forwarded again.
#[utoipa::path(
    post,
    path = "/in/{source_id}",
    tag = "Source",
    operation_id = "v1.source.ingest",
    security(()),
    params(SourcePath),
    request_body(
        content = inline(RawBody),
        content_type = "*/*",
        description = "The provider's request as it sends it, in any content type (JSON, a form, text…), \
                       with the headers its signature scheme uses; gzip and deflate `Content-Encoding` are \
                       decoded first. Forwarded as received; a source with event-type destinations takes \
                       JSON objects only."
    ),
    responses(
        (status = 200, description = "Accepted, or a duplicate of a delivery accepted before; or, for providers \
            that ask for an answer of their own, that answer: the challenge of Slack's, Zoom's (JSON) or Twitch's \
            (plain text) URL check, Discord's interaction responses. A source with a `response` of its own \
            answers what it says instead (any 2xx, any content type)", body = IngestOut),
        (status = 204, description = "Discord webhook events (and their PING): accepted, answered as Discord asks; \
            or a source's own `response` of 204"),
        (status = "2XX", description = "A source's own `response`: the status, body and content type it was given",
            content_type = "*/*", body = String),
        (status = 400, description = "The body could not be read, is not UTF-8 text or holds NUL characters, or is not \
            the JSON object a source with event-type destinations needs (or nests more than 100 deep)",
            body = ErrorBody),
        (status = 401, description = "The request failed the source's verification (`verification_failed`): a missing \
            or wrong signature, a stale timestamp, wrong credentials. A `basicAuth` source also answers \
            `WWW-Authenticate: Basic realm=\"hooklane\"`", body = ErrorBody),
        (status = 403, description = "The client's address is not in the source's allow-list", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 413, description = "The body (decoded) is larger than the source's `maxBodyBytes`", body = ErrorBody),
        (status = 415, description = "A `Content-Encoding` other than gzip, deflate or identity", body = ErrorBody),
        (status = 500, description = "The request could not be stored", body = ErrorBody),
        (status = 503, description = "The server is shutting down, or the first delivery with this id is still being \
            written: retry", body = ErrorBody),
    )
)]
pub async fn ingest(State(s): State<AppState>, Path(source_id): Path<String>, req: Request) -> Response {
    let received_at = crate::api::now();
    let source = match find_source(&s, &source_id).await {
        Ok(source) => source,
        Err(answer) => return *answer,
    };
    let client = client_of(&s, &req);
    let headers = header_map(req.headers());
    // The URL as the provider called it (Twilio and Square sign it): where hooklane is reachable
    // (`public_url`), and the path and query received.
    let called_url = format!(
        "{}{}",
        s.0.public_url.trim_end_matches('/'),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or_default()
    );
    let mut record = Record::new(&s, &source, received_at, client, &headers);

    // 1. Where it comes from.
    if !address_allowed(client, &source.allow_networks) {
        return record.reject(ApiError::Forbidden("this address may not send to this source")).await;
    }

    // 2. How big it is (refused before reading when the length is announced).
    let limit = body_limit(&s, &source);
    if let Some(n) = crate::body_limit::announced_length(req.headers()).filter(|n| *n > limit) {
        record.body_size = n;
        return record.reject(too_large(limit)).await;
    }
    let body = match read_body(req.into_body(), limit).await {
        Ok(body) => body,
        Err(BodyError::TooLarge(seen)) => {
            record.body_size = seen;
            return record.reject(too_large(limit)).await;
        }
        Err(BodyError::TimedOut) => return record.reject(ApiError::RequestTimeout).await,
        Err(BodyError::Broken(why)) => {
            return record.reject(ApiError::BadRequest(format!("could not read the body: {why}"))).await
        }
    };
    record.keep_body(&body);

    // 3. Who sent it.
    if let Err(why) = source.verify(&headers, &body, &called_url, received_at) {
        return record.reject(ApiError::VerificationFailed(why.to_string())).await;
    }

    // 4. What it is.
    let Ok(text) = String::from_utf8(body) else {
        return record.reject(ApiError::BadRequest("the body must be UTF-8 text".into())).await;
    };
    // Stores keep bodies as text, and PostgreSQL text cannot hold NUL.
    if text.contains('\0') {
        return record.reject(ApiError::BadRequest("the body must not contain NUL characters".into())).await;
    }
    let looks_json = matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
    let json: Option<serde_json::Value> = if looks_json { serde_json::from_str(&text).ok() } else { None };
    if !source.event_destinations.is_empty() && !json.as_ref().is_some_and(|j| j.is_object()) {
        return record
            .reject(ApiError::BadRequest("this source forwards to event types, which need a JSON object body".into()))
            .await;
    }
    // Forwarded to event types, the body becomes a message's payload: the API's limit holds.
    if !source.event_destinations.is_empty() && nesting_depth(&text) > MAX_PAYLOAD_DEPTH {
        let why = format!("this source forwards to event types, whose payloads nest at most {MAX_PAYLOAD_DEPTH} deep");
        return record.reject(ApiError::BadRequest(why)).await;
    }
    // The provider checking the URL (Slack, Zoom, Twitch): answered as it asks, not forwarded.
    if let Some(reply) = source.verification.handshake(json.as_ref()) {
        record.url_check(answer_status(&reply)).await;
        return provider_answer(reply);
    }
    // Some providers want their own answer to what is forwarded (Discord).
    let acknowledgement = source.verification.acknowledgement(json.as_ref());
    let dedup = source.deduplication.clone().unwrap_or_else(|| source.verification.default_deduplication());
    record.dedup_key = source.verification.dedup_key(&dedup, &headers, json.as_ref());

    // 5. Durable, then forwarded.
    let msg = Message {
        id: new_id(ids::MESSAGE),
        app_id: source.app_id.clone(),
        event_type: source
            .verification
            .event_type(&headers, json.as_ref())
            .unwrap_or_else(|| DEFAULT_EVENT_TYPE.to_string()),
        event_id: record.dedup_key.as_deref().map(event_id),
        payload: text,
        channels: None,
        tags: None,
        created_at: received_at,
        content_type: Some(headers.get("content-type").cloned().unwrap_or_else(|| "application/octet-stream".into())),
        headers: forwarded_headers(&source.verification, &headers),
        ordering_key: source
            .ordering_key
            .as_deref()
            .zip(json.as_ref())
            .and_then(|(template, body)| hooklane_core::rules::transform::ordering_key(template, body)),
        deliver_at: None,
    };
    let event_id = msg.event_id.clone();
    match store_and_dispatch(&s, msg).await {
        Ok(msg) => {
            if let Err(e) = fan_out(&s, &source, &msg).await {
                let error = ApiError::from(e);
                // A provider whose sending again would not be recognised as a duplicate (its
                // delivery id is in the signature, which a retry renews: Mailgun, Calendly, Slack
                // without `event_id`; or this request has none), or which never sends again (Discord), would have its
                // request forwarded twice, or not completed: it is answered, and the fan-out is
                // tried again here. A deduplication set to the provider's own default (a
                // source's answer sent back) says no more than the provider does.
                let chosen =
                    source.deduplication.as_ref().is_some_and(|d| *d != source.verification.default_deduplication());
                let recognised =
                    record.dedup_key.is_some() && (chosen || source.verification.redelivery_recognised(json.as_ref()));
                if acknowledgement.is_some() || !recognised {
                    let why = format!("fan-out failed: {error}; tried again in the background");
                    retry_fan_out(s.clone(), source.id.clone(), msg.id.clone(), record.id.clone());
                    return record.acknowledge(InboundStatus::Accepted, Some(why), &msg.id, acknowledgement).await;
                }
                // The request is stored; the provider's retry (a duplicate) completes it.
                record
                    .save(
                        InboundStatus::Accepted,
                        error.status(),
                        Some(format!("fan-out failed: {error}")),
                        Some(msg.id),
                        false,
                    )
                    .await;
                return error.into_response();
            }
            record.acknowledge(InboundStatus::Accepted, None, &msg.id, acknowledgement).await
        }
        Err(StoreError::Conflict(_)) => {
            let Some(event_id) = event_id else {
                return record.failed(ApiError::Internal("conflict on a message without event id".into()));
            };
            let original = match s.0.store.get_message(&source.app_id, &event_id).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    return record.failed(ApiError::Unavailable("the original delivery is being written; retry".into()))
                }
                Err(e) => return record.failed(ApiError::from(e)),
            };
            // Finishes a fan-out that an earlier attempt may have left half done; not that of a
            // request whose content was deleted since (as the sweep does not): it would post
            // `{}` to the destinations left.
            if original.content_type.is_some() {
                if let Err(e) = finish_original_fan_out(&s, &source, &original, received_at).await {
                    return record.failed(ApiError::from(e));
                }
            } else {
                // Nor is what was deleted written back through the retry's own record.
                record.body.clear();
                record.headers.clear();
            }
            let reason = format!("delivery id seen before (message {})", original.id);
            record.acknowledge(InboundStatus::Duplicate, Some(reason), &original.id, acknowledgement).await
        }
        Err(e) => {
            let error = ApiError::from(e);
            tracing::error!(source_id = %shown_source_id(&source.id), error = %error, "could not store an inbound request");
            record.failed(error)
        }
    }
}

/// Completes, for a duplicate, the fan-out of the request it repeats (message `original`)
/// when that may be unfinished: its request recorded so (its fan-out failed), or not
/// recorded at all (still being written, or its node stopped before it could record it),
/// and only while such fan-outs are completed ([`FAN_OUT_SWEEP_FOR`], as the sweep does).
/// Not one recorded as done: a replay of an old request (Meta's and Twilio's signatures,
/// its keys, carry no timestamp) would post it, however old, to the event-type
/// destinations added since.
async fn finish_original_fan_out(
    s: &AppState,
    source: &Source,
    original: &Message,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if now - original.created_at >= FAN_OUT_SWEEP_FOR {
        return Ok(());
    }
    match s.0.store.accepted_request_of(&source.id, &original.id).await? {
        Some(request) if request.reason.is_none() => Ok(()),
        Some(request) => {
            fan_out(s, source, original).await?;
            s.0.store.finish_fan_out(&source.id, &request.id).await
        }
        // Not recorded: unfinished, unless its record may have been deleted for being old
        // (a `request_retention` shorter than the sweep's day), done.
        None if record_may_be_pruned(s, original, now) => Ok(()),
        None => fan_out(s, source, original).await,
    }
}

/// Whether the record of `original`'s request may have been deleted by housekeeping.
fn record_may_be_pruned(s: &AppState, original: &Message, now: DateTime<Utc>) -> bool {
    let kept = s.0.inbound.request_retention;
    !kept.is_zero() && chrono::Duration::from_std(kept).is_ok_and(|kept| now - original.created_at >= kept)
}

/// Tries a failed fan-out again a few times, a second apart and more (it finishes what is
/// left: messages already posted are not posted twice).
fn retry_fan_out(s: AppState, source_id: String, msg_id: String, request_id: String) {
    tokio::spawn(async move {
        for attempt in 1..=3u64 {
            tokio::time::sleep(std::time::Duration::from_secs(attempt)).await;
            match complete_fan_out(&s, &source_id, &request_id, Some(&msg_id)).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(source_id = %shown_source_id(&source_id), %msg_id, error = %e, attempt, "fan-out failed again")
                }
            }
        }
        tracing::warn!(source_id = %shown_source_id(&source_id), %msg_id, "fan-out failed; left to the sweep of unfinished ones");
    });
}

/// How long after its request an unfinished fan-out is left to the request's own retries
/// ([`retry_fan_out`]: 6 s) before the sweep takes it.
const FAN_OUT_SWEEP_AFTER: chrono::Duration = chrono::Duration::seconds(10);
/// How long an unfinished fan-out is tried (housekeeping keeps its record that long): past
/// a day the sweep no longer takes it (a store refusing for a day; and records written
/// unfinished by versions before the sweep, which never marked their fan-outs done, are
/// not replayed from their history).
const FAN_OUT_SWEEP_FOR: chrono::Duration = hooklane_store::FAN_OUT_KEPT;
/// Unfinished fan-outs one read of a sweep takes at most (a sweep reads again while every
/// one of a full batch was completed).
const FAN_OUT_SWEEP_BATCH: usize = 100;
/// How often unfinished fan-outs are swept at least, whatever `housekeeping_interval` is:
/// at its longest (a day) the requests of the sweep's last 10 s fell out of the next one's
/// window, and a batch of 100 an hour could not keep up with a provider's burst.
pub const FAN_OUT_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Completes, every `every`, the fan-outs of accepted requests that are still to be done:
/// a request acknowledged while its fan-out failed is recorded so (accepted, with its
/// reason), and is completed here even when the node that took it stopped, was killed, or
/// gave up its own retries. A fan-out is idempotent (each destination's message has the
/// `eventId` `{message}.{event type}`), so nodes sweeping at once, or a sweep after a
/// retry that succeeded, add nothing twice.
pub async fn finish_fan_outs(s: AppState, every: std::time::Duration) {
    let mut closing = s.0.closing.subscribe();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = closing.changed() => return,
        }
        match sweep_fan_outs(&s).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(requests = n, "unfinished inbound fan-outs completed"),
            Err(e) => tracing::warn!(error = %e, "could not complete unfinished inbound fan-outs; will try again"),
        }
    }
}

/// One sweep: the fan-outs it completed. Those that fail again wait for the next sweep
/// (the batch is of those received in the last day, oldest first: a batch that keeps
/// failing holds back the newer ones for that day at most).
async fn sweep_fan_outs(s: &AppState) -> Result<usize, StoreError> {
    let now = crate::api::now();
    let window = (now - FAN_OUT_SWEEP_FOR, now - FAN_OUT_SWEEP_AFTER);
    let mut done = 0;
    loop {
        let batch = s.0.store.unfinished_fan_outs(window, FAN_OUT_SWEEP_BATCH).await?;
        let (read, before) = (batch.len(), done);
        for request in batch {
            match complete_fan_out(s, &request.source_id, &request.id, request.msg_id.as_deref()).await {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::warn!(source_id = %shown_source_id(&request.source_id), request_id = %request.id, error = %e, "fan-out failed again")
                }
            }
        }
        // Done when the batch was not full, or one of it failed again (read again, it
        // would come first once more).
        if read < FAN_OUT_SWEEP_BATCH || done - before < read {
            return Ok(done);
        }
    }
}

/// Completes the fan-out of the request `request_id` of `source_id`, which became message
/// `msg_id`, from the source and message as they are now, and marks it done.
async fn complete_fan_out(
    s: &AppState,
    source_id: &str,
    request_id: &str,
    msg_id: Option<&str>,
) -> Result<(), StoreError> {
    let message = match (s.0.store.get_source(source_id).await?, msg_id) {
        (Some(source), Some(msg_id)) => s.0.store.get_message(&source.app_id, msg_id).await?.map(|m| (source, m)),
        _ => None,
    };
    // A source deleted, or its message gone (pruned), leaves nothing to fan out; so does a
    // message whose content was deleted (a source's message always has a content type,
    // which deleting the content takes away with it).
    if let Some((source, msg)) = message.filter(|(_, m)| m.content_type.is_some()) {
        fan_out(s, &source, &msg).await?;
    }
    s.0.store.finish_fan_out(source_id, request_id).await
}

/// The status of an answer in the provider's form.
fn answer_status(reply: &Handshake) -> StatusCode {
    match reply {
        Handshake::NoContent => StatusCode::NO_CONTENT,
        Handshake::Json(_) | Handshake::Text(_) => StatusCode::OK,
    }
}

/// An answer in the form the provider asks for.
fn provider_answer(reply: Handshake) -> Response {
    match reply {
        Handshake::Json(doc) => (StatusCode::OK, axum::Json(doc)).into_response(),
        // The provider's own text echoed (a challenge): never taken for another type.
        Handshake::Text(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")],
            text,
        )
            .into_response(),
        Handshake::NoContent => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The answer to an accepted request, or to a duplicate of one.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)] // Describes what `answer` writes; never built.
pub(crate) struct IngestOut {
    /// `accepted`, or `duplicate` for a delivery id seen before (not forwarded again).
    #[schema(example = "accepted")]
    status: String,
    /// The request's record (`GET /api/v1/source/{source_id}/request/{request_id}`).
    #[schema(example = "req_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
    request_id: String,
    /// The message the request became (for a duplicate, the first delivery's), in the
    /// source's application.
    #[schema(example = "msg_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
    msg_id: String,
}

/// A provider's request body: bytes of any content type.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Describes the body `ingest` reads as bytes; never built.
struct RawBody(Vec<u8>);

/// The source's own answer (checked when it was saved: a 2xx status, a valid media type).
fn source_answer(status: StatusCode, own: &SourceResponse) -> Response {
    let mut response = (status, own.body.clone()).into_response();
    let content_type = match &own.content_type {
        Some(t) => HeaderValue::from_str(t).ok(),
        None if own.body.is_empty() => None,
        None => Some(HeaderValue::from_static("text/plain; charset=utf-8")),
    };
    match content_type {
        Some(t) => response.headers_mut().insert(header::CONTENT_TYPE, t),
        None => response.headers_mut().remove(header::CONTENT_TYPE),
    };
    // The body is the source's, of any media type (`text/html` too), served from the
    // dashboard's origin to whoever posts, a browser's form included: a browser neither
    // runs it as that origin's page nor guesses another type for it.
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn answer(status: &str, request_id: &str, msg_id: &str) -> Response {
    (StatusCode::OK, axum::Json(json!({ "status": status, "requestId": request_id, "msgId": msg_id }))).into_response()
}

fn too_large(limit: u64) -> ApiError {
    ApiError::PayloadTooLarge(usize::try_from(limit).unwrap_or(usize::MAX))
}

/// Posts the accepted body into every event-type destination's application. Each message's
/// `eventId` is derived from the source's message, so doing it again is harmless.
async fn fan_out(s: &AppState, source: &Source, msg: &Message) -> Result<(), StoreError> {
    for d in &source.event_destinations {
        if s.0.store.get_app(&d.app_id).await?.is_none() {
            tracing::warn!(source_id = %shown_source_id(&source.id), app_id = %d.app_id, "event-type destination's application is gone");
            continue;
        }
        let fanned = Message {
            event_id: Some(format!("{}.{}", msg.id, d.event_type)),
            ordering_key: msg.ordering_key.clone(),
            ..Message::new(d.app_id.clone(), d.event_type.clone(), msg.payload.clone(), crate::api::now())
        };
        match store_and_dispatch(s, fanned).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A delivery id as a message `eventId`: as it is when it is a valid one, else a digest.
fn event_id(key: &str) -> String {
    let valid =
        !key.is_empty() && key.len() <= 256 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if valid {
        key.to_string()
    } else {
        format!("sha256.{}", hex(&Sha256::digest(key.as_bytes())))
    }
}

/// Request headers by lower-case name, repeated ones joined with ", ".
fn header_map(headers: &HeaderMap) -> Headers {
    let mut out = Headers::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.as_str().to_string())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// Credentials are never kept in records (nor logged).
fn mask(name: &str, value: &str) -> String {
    if !is_sensitive_header(name) {
        return value.to_string();
    }
    match value.split_once(' ') {
        Some((scheme, _)) if name.ends_with("authorization") => format!("{scheme} <redacted>"),
        _ => "<redacted>".into(),
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the last address
/// of `X-Forwarded-For` that is not a trusted proxy. Entries are read from the right (the
/// nearest proxy's) and may carry a port (`203.0.113.9:5123`, `[2001:db8::1]:443`); one
/// that is no address at all leaves the client unknown (`None`: no allow-list admits it),
/// for passing over it would take the entry before it, which the client itself may have
/// written.
fn client_addr(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut addr = peer?.to_canonical();
    if !is_trusted(&addr) {
        return Some(addr);
    }
    // A header line that is not text is no address either.
    let values: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().map(|v| v.to_str().ok()).collect::<Option<_>>()?;
    let entries = values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|e| !e.is_empty());
    for entry in entries.collect::<Vec<_>>().into_iter().rev() {
        let bare = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).unwrap_or(entry);
        let ip = bare.parse::<IpAddr>().or_else(|_| entry.parse::<std::net::SocketAddr>().map(|s| s.ip())).ok()?;
        addr = ip.to_canonical();
        if !is_trusted(&addr) {
            break;
        }
    }
    Some(addr)
}

/// Whether the source accepts requests from `client` (any address when it lists no network).
fn address_allowed(client: Option<IpAddr>, networks: &[String]) -> bool {
    if networks.is_empty() {
        return true;
    }
    let Some(ip) = client else { return false };
    networks.iter().filter_map(|n| n.parse::<IpNet>().ok()).any(|n| n.contains(&ip))
}

enum BodyError {
    /// Bytes seen before giving up.
    TooLarge(u64),
    /// The client stopped sending it for longer than `request_read_timeout`.
    TimedOut,
    Broken(String),
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(body: Body, limit: u64) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match crate::error::is_body_timeout(&e) {
            true => BodyError::TimedOut,
            false => BodyError::Broken(e.to_string()),
        })?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(BodyError::TooLarge((out.len() + chunk.len()) as u64));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9, 198.51.100.2, 10.1.1.1"));
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(client_addr(Some(proxy), &h, &trusted), Some("198.51.100.2".parse().unwrap()));
        // An untrusted peer's header is ignored.
        let direct: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_addr(Some(direct), &h, &trusted), Some(direct));
        assert_eq!(client_addr(Some(direct), &h, &[]), Some(direct));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(client_addr(Some(mapped), &HeaderMap::new(), &[]), Some("127.0.0.1".parse().unwrap()));
        // A proxy that writes ports: read with them.
        let with_ports = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static(v));
            client_addr(Some(proxy), &h, &trusted)
        };
        assert_eq!(with_ports("192.168.1.7, 203.0.113.9:5123"), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(with_ports("192.168.1.7, [2001:db8::1]:443"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(with_ports("192.168.1.7, [2001:db8::1]"), Some("2001:db8::1".parse().unwrap()));
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("192.168.1.7"));
        h.append("x-forwarded-for", HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap());
        assert_eq!(client_addr(Some(proxy), &h, &trusted), None, "a line that is not text is no address");
        // An entry that is no address leaves the client unknown: not the entry before it,
        // which the client wrote.
        assert_eq!(with_ports("192.168.1.7, unknown"), None);
        assert_eq!(with_ports("192.168.1.7, _hidden, 10.1.1.1"), None);
    }

    #[test]
    fn allow_lists() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(address_allowed(Some(local), &[]));
        assert!(address_allowed(Some(local), &["127.0.0.0/8".into()]));
        assert!(!address_allowed(Some(local), &["10.0.0.0/8".into()]));
        assert!(!address_allowed(None, &["10.0.0.0/8".into()]));
    }

    #[test]
    fn event_ids_and_masks() {
        assert_eq!(event_id("72d3162e-cc78-11e3-81ab-4c9367dc0958"), "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(event_id("10000"), "10000");
        let hashed = event_id("a b/c");
        assert!(hashed.starts_with("sha256.") && hashed.len() == 7 + 64, "{hashed}");
        assert_eq!(mask("authorization", "Basic dXNlcjpwYXNz"), "Basic <redacted>");
        assert_eq!(mask("x-telegram-bot-api-secret-token", "tok"), "<redacted>");
        assert_eq!(mask("x-github-event", "push"), "push");
    }
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(ingest, url_check), components(schemas(IngestOut)))]
pub(crate) struct Doc;
