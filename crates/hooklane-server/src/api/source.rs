//! `/api/v1/source`: inbound sources (admin token only).
//!
//! A source is a webhook sender hooklane receives from. It owns an application (uid = the
//! source id) whose endpoints are the source's URL destinations: forwarding reuses the
//! outbound machinery (retries, Standard Webhooks signing with each destination's secret,
//! attempt log under `/api/v1/app/{source_id}/…`). Event-type destinations post the JSON
//! body into another application as a message of that type.
//!
//! Verification secrets are write-only: answers show the kind of check and its non-secret
//! settings only. Destination secrets (hooklane's own signing secrets) are shown, as
//! `GET …/endpoint/{id}/secret` does.

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use base64::Engine;
use hooklane_core::ids;
use hooklane_core::inbound::{Deduplication, PreviousVerification, Verification};
use hooklane_core::model::{
    Application, DeliveryOrder, Endpoint, EventDestination, InboundRequest, InboundStatus, Metadata, Source,
    SourceResponse,
};
use hooklane_core::signing::{published_key, Secret, SignatureType};
use hooklane_core::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::endpoint::{
    after_update, apply_waits, check_header_sizes, drop_credentials_if_moved, forget_credentials, parse_secret, touch,
    validate as validate_endpoint, Before,
};
use super::retry_waits::RetryWaits;
use super::transformation::{
    apply as apply_transformation_patch, Editor, Fresh, TransformationOut, TransformationPatch,
};
use super::{check_len, check_metadata, check_name, page_request, ListResponse, Patch};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Json, Path, Query};
use crate::openapi::{
    ErrorBody, InvalidBody, InvalidJson, InvalidQuery, NotAdmin, PageNewestFirst, PageOldestFirst, SourcePath,
    SourceRequestPath, Unauthorized,
};
use crate::operational;
use crate::state::AppState;
use hooklane_store::{DestinationChanges, StoreError};

/// Largest body a source may be configured to accept.
pub const MAX_SOURCE_BODY_BYTES: u64 = 10 * 1024 * 1024;
const MAX_DESTINATIONS: usize = 20;
const MAX_NETWORKS: usize = 64;

/// The routes under `/api/v1/source`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list).post(create))
        .route("/{source_id}", get(get_one).put(put).patch(patch).delete(delete))
        .route("/{source_id}/request", get(list_requests))
        .route("/{source_id}/request/{request_id}", get(get_request))
}

/// Whether an application belongs to an inbound source (its uid is the source id): such an
/// application is changed and deleted through its source only.
pub fn owned_by_source(app: &Application) -> bool {
    app.uid.as_deref().is_some_and(|uid| ids::has_prefix(uid, ids::SOURCE))
}

/// An inbound source, as created or replaced (PUT).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceIn {
    /// 1–256 characters.
    #[schema(example = "GitHub")]
    name: String,
    /// How the source's requests prove where they come from: `{"type": …}` with `none`,
    /// `github` (`secret`), `gitlab` (`secretToken`), `stripe` (`secret`), `paddle` (`secret`), `mailgun` (`signingKey`), `shopify` (`secret`), `slack`
    /// (`signingSecret`), `zoom` (`secret`), `telegram` (`secretToken`), `twilio` (`authToken`), `twitch` (`secret`), `discord` (`publicKey`), `calendly` (`signingKey`), `square` (`signatureKey`), `meta` (`appSecret`, `verifyToken`), `hubspot` (`appSecret`), `standardWebhooks` (`secret`: `whsec_…`, or the sender's Ed25519 public key `whpk_…`),
    /// `hmac` (`header`, `algorithm`: `sha1`|`sha256`|`sha512`, `encoding`: `hex`|`base64`,
    /// `prefix`?, `secret`) or `basicAuth` (`username`, `password`).
    /// Secrets are write-only: answers leave them out.
    #[schema(value_type = Object)]
    verification: Verification,
    /// Rotation of the provider's secret: with a `verification` that replaces the source's
    /// (of the same type), the one replaced stays accepted this many more seconds (at most
    /// 604800, a week), so that requests signed with either pass while the provider changes
    /// over; `0` or left out: the replaced one is refused at once. Without a new
    /// `verification`, it sets how long the one replaced before stays accepted (`0` ends
    /// that now). Not for a new source (POST).
    #[serde(default)]
    #[schema(maximum = 604800, example = 86400)]
    keep_previous_verification: Option<u64>,
    /// Where the provider's delivery id is, so that a retried delivery is not forwarded twice:
    /// `{"type": "header", "header": …}`, `{"type": "jsonField", "path": "data.id"}` (a
    /// dot-separated path into the JSON body), `{"type": "jsonFieldOrHeader", "path": …,
    /// "header": …}` (the field, or the header for a request without it) or `{"type":
    /// "none"}`. Default: where the provider puts it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    deduplication: Option<Deduplication>,
    /// Only requests from these networks (CIDR, or single addresses) are accepted; none: any
    /// address. At most 64.
    #[serde(default)]
    #[schema(example = json!(["192.30.252.0/22"]))]
    allow_networks: Vec<String>,
    /// The largest body accepted, 1–10485760 bytes (default: the server's body limit).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10485760)]
    max_body_bytes: Option<u64>,
    /// Where accepted requests are forwarded; at most 20.
    #[serde(default)]
    destinations: Vec<DestinationIn>,
    /// hooklane's own: a template of the ordering key of each request's message.
    #[serde(default)]
    ordering_key: Option<String>,
    /// hooklane's own: the answer to an accepted (or duplicate) request instead of
    /// hooklane's JSON: `{"status"?: 200–299, "body"?: up to 4096 bytes, "contentType"?}`,
    /// e.g. `{"body": "<Response/>", "contentType": "text/xml"}` for Twilio. Providers'
    /// handshakes and refusals are answered as always.
    #[serde(default)]
    #[schema(value_type = Option<SourceAnswer>)]
    response: Option<SourceResponse>,
    /// Up to 64 entries (keys up to 256, values up to 4096 characters).
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: Metadata,
}

/// A source's own answer to the requests it accepts (hooklane's `SourceResponse`).
// Describes `SourceResponse` (hooklane-core, which has no schema) in the document; never built.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct SourceAnswer {
    /// 200–299; default 200. A 204 or 205 has no body nor content type.
    #[schema(minimum = 200, maximum = 299, example = 200)]
    status: Option<u16>,
    /// Up to 4096 bytes; default empty.
    #[schema(max_length = 4096, example = "<Response/>")]
    body: Option<String>,
    /// The body's media type; default `text/plain; charset=utf-8` for a body, none without.
    #[schema(example = "text/xml")]
    content_type: Option<String>,
}

/// Changes to a source: a field left out stays as it is; `null` resets `deduplication`,
/// `maxBodyBytes`, `orderingKey` and `response` to their defaults and removes every
/// destination, and is refused for the other fields.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourcePatch {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    name: Patch<String>,
    /// As in `SourceIn`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    verification: Patch<Verification>,
    /// As in `SourceIn`.
    #[serde(default)]
    #[schema(maximum = 604800, example = 86400)]
    keep_previous_verification: Option<u64>,
    /// As in `SourceIn`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    deduplication: Patch<Deduplication>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    allow_networks: Patch<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 10485760)]
    max_body_bytes: Patch<u64>,
    /// Replaces every destination, as in PUT.
    #[serde(default)]
    #[schema(value_type = Option<Vec<DestinationIn>>)]
    destinations: Patch<Vec<DestinationIn>>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    ordering_key: Patch<String>,
    /// As in `SourceIn`.
    #[serde(default)]
    #[schema(value_type = Option<SourceAnswer>)]
    response: Patch<SourceResponse>,
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    metadata: Patch<Metadata>,
}

/// One destination: a URL (`url`, optional `headers`, `secret`, `disabled`, `paused`, `payloadFilter`,
/// `transform`, `ordering`, `transformation`, `rateLimit`, `filterTypes`; `id` to keep an
/// existing one, whose settings left out stay as they are, and `null` clears a payload
/// filter, transform, transformation, rate limit or event-type filter) or an event type of an application (`appId`
/// + `eventType`). `type` is optional (answers carry it, so an answer can be sent back as is).
#[derive(Deserialize, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationIn {
    /// `url` or `eventType`.
    #[serde(default, rename = "type")]
    #[schema(example = "url")]
    kind: Option<String>,
    /// A URL destination's id, to keep that destination (PUT and PATCH).
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    #[schema(example = "https://example.com/hooks/github")]
    url: Option<String>,
    /// Headers added to each forwarded request.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// The secret forwarded requests are signed with (Standard Webhooks): `whsec_…`, or a
    /// `whsk_…` Ed25519 key pair; default: a new one of the server's `default_signature_type`.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
    /// `true` holds the requests forwarded here until it is set back to `false` (Hookdeck's
    /// paused connection); kept when left out.
    #[serde(default)]
    paused: Option<bool>,
    /// An event-type destination's application (id or uid).
    #[serde(default)]
    app_id: Option<String>,
    /// An event-type destination's event type.
    #[serde(default)]
    event_type: Option<String>,
    /// Forwards only requests whose JSON body matches, as an endpoint's `payloadFilter`.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    payload_filter: Patch<serde_json::Value>,
    /// Rewrites the forwarded body, as an endpoint's `transform`.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    transform: Patch<serde_json::Value>,
    /// `"fifo"` forwards the source's requests one at a time, in the order they came in;
    /// `"concurrent"` (the default) several at once.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "fifo")]
    ordering: Patch<DeliveryOrder>,
    /// JavaScript run before each forwarded request, as an endpoint's transformation
    /// (`{"code": "function handler(webhook) {…}", "enabled"?, "variables"?}`); `null`
    /// removes it.
    #[serde(default)]
    #[schema(value_type = Option<TransformationPatch>)]
    transformation: Patch<TransformationPatch>,
    /// Most requests forwarded a second (1 to 65,535), across every node; `null`: no
    /// limit. Requests beyond it wait in the store, as an endpoint's.
    #[serde(default)]
    #[schema(value_type = Option<u32>, example = 10)]
    rate_limit: Patch<u32>,
    /// Forwards only requests of these event types (the provider's: `push`,
    /// `invoice.paid`…; at most 256); `null`: all.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["push"]))]
    filter_types: Patch<Vec<String>>,
    /// The waits between forwarding attempts (`["10s", "1m"]`; `[]`: no retry), as an
    /// endpoint's `retrySchedule`; `null`: the server's.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["10s", "1m", "10m"]))]
    retry_schedule: Patch<RetryWaits>,
}

/// Where a source forwards accepted requests.
// Built only to be serialised into an answer, a few per request: the size of the larger
// variant costs nothing worth boxing it for.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum DestinationOut {
    /// An endpoint of the source's application.
    #[serde(rename = "url", rename_all = "camelCase")]
    Url {
        #[schema(example = "ep_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
        id: String,
        url: String,
        headers: BTreeMap<String, String>,
        /// What forwarded requests are checked with: the `whsec_…` secret they are signed
        /// with, or the `whpk_…` public key of an Ed25519 key pair.
        secret: String,
        disabled: bool,
        /// `true` while forwarded requests are held here; left out otherwise.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        paused: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload_filter: Option<serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        transform: Option<serde_json::Value>,
        /// `"fifo"` when set; left out for the default, `"concurrent"`.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<String>, example = "fifo")]
        ordering: Option<DeliveryOrder>,
        /// The JavaScript run before each forwarded request; left out when none is set.
        #[serde(skip_serializing_if = "Option::is_none")]
        transformation: Option<TransformationOut>,
        /// Most requests forwarded a second; left out when there is no limit.
        #[serde(skip_serializing_if = "Option::is_none")]
        rate_limit: Option<u32>,
        /// The event types forwarded; left out when all are.
        #[serde(skip_serializing_if = "Option::is_none")]
        filter_types: Option<Vec<String>>,
        /// The waits between forwarding attempts; left out when the server's apply.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(value_type = Option<Vec<String>>)]
        retry_schedule: Option<RetryWaits>,
    },
    /// An event type of another application: the JSON body is posted there as a message.
    #[serde(rename = "eventType", rename_all = "camelCase")]
    EventType { app_id: String, event_type: String },
}

/// An inbound source.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceOut {
    #[schema(example = "src_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
    id: String,
    name: String,
    /// Where the provider sends its webhooks.
    #[schema(example = "https://hooks.example.com/in/src_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
    ingest_url: String,
    /// The source's application: its messages and attempts are under `/api/v1/app/{id}`.
    app_id: String,
    /// The kind of check (`type`) and its settings, without its secrets.
    #[schema(value_type = Object)]
    verification: serde_json::Value,
    /// The verification a rotation replaced, still accepted until `expiresAt`: its `type`,
    /// its settings without secrets, and `expiresAt`. Left out when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    previous_verification: Option<serde_json::Value>,
    /// Where the delivery id is looked for (the provider's usual place unless configured):
    /// `{"type": "header", "header": …}`, `{"type": "jsonField", "path": "data.id"}` (a
    /// dot-separated path into the JSON body), `{"type": "jsonFieldOrHeader", "path": …,
    /// "header": …}` (the field, or the header for a request without it: Slack's) or
    /// `{"type": "none"}`.
    #[schema(value_type = Object)]
    deduplication: Deduplication,
    allow_networks: Vec<String>,
    /// The largest body accepted.
    max_body_bytes: u64,
    destinations: Vec<DestinationOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ordering_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<SourceAnswer>)]
    response: Option<SourceResponse>,
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: Metadata,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

async fn source_out(s: &AppState, src: Source) -> ApiResult<SourceOut> {
    let endpoints = s.0.store.app_endpoints(&src.app_id).await?;
    let mut destinations: Vec<DestinationOut> = endpoints
        .into_iter()
        .map(|e| DestinationOut::Url {
            id: e.id,
            url: e.url,
            headers: e.headers,
            secret: published_key(&e.secret),
            disabled: e.disabled,
            paused: e.paused,
            payload_filter: e.payload_filter,
            transform: e.transform,
            ordering: e.order.is_fifo().then_some(e.order),
            // The source API is the admin's: variables are shown as secrets are.
            transformation: e.transformation.map(|tr| TransformationOut::of(Some(tr), true)),
            rate_limit: e.rate_limit,
            filter_types: e.filter_types,
            retry_schedule: e.retry_schedule.map(RetryWaits),
        })
        .collect();
    destinations.extend(
        src.event_destinations
            .iter()
            .map(|d| DestinationOut::EventType { app_id: d.app_id.clone(), event_type: d.event_type.clone() }),
    );
    Ok(SourceOut {
        ingest_url: format!("{}/in/{}", s.0.public_url.trim_end_matches('/'), src.id),
        deduplication: src.deduplication.clone().unwrap_or_else(|| src.verification.default_deduplication()),
        max_body_bytes: body_limit(s, &src),
        verification: src.verification.redacted(),
        previous_verification: previous_out(src.previous_verification.as_ref(), super::now()),
        id: src.id,
        name: src.name,
        app_id: src.app_id,
        allow_networks: src.allow_networks,
        destinations,
        ordering_key: src.ordering_key,
        response: src.response,
        metadata: src.metadata,
        created_at: src.created_at,
        updated_at: src.updated_at,
    })
}

/// A kept verification as answers show it, while it lasts.
fn previous_out(previous: Option<&PreviousVerification>, now: DateTime<Utc>) -> Option<serde_json::Value> {
    let previous = previous.filter(|p| p.lasts_at(now))?;
    let mut shown = previous.verification.redacted();
    if let Some(fields) = shown.as_object_mut() {
        fields.insert("expiresAt".into(), serde_json::json!(previous.until));
    }
    Some(shown)
}

/// Applies a request's `verification` (`new`: what it says the verification is, the
/// current one when it says nothing) and `keepPreviousVerification` (`keep`, seconds).
/// A verification replaced with a keep is accepted beside the new one until it ends: the
/// provider's secret is rotated without a request refused in between.
fn rotate_verification(src: &mut Source, new: Verification, keep: Option<u64>, now: DateTime<Utc>) -> ApiResult<()> {
    const FIELD: &str = "keepPreviousVerification";
    let until = match keep {
        Some(secs) if secs > PreviousVerification::MAX_KEEP_SECS => {
            let msg = format!("at most {} seconds (a week)", PreviousVerification::MAX_KEEP_SECS);
            return Err(ApiError::validation(FIELD, msg));
        }
        // (At most a week: the addition cannot overflow.)
        Some(secs) => Some(now + chrono::Duration::seconds(secs as i64)),
        None => None,
    };
    // One that has ended is forgotten whatever the request says.
    src.previous_verification = src.previous_verification.take().filter(|p| p.lasts_at(now));
    if new == src.verification {
        match (until, src.previous_verification.as_mut()) {
            (None, _) => {}
            (Some(until), Some(previous)) => previous.until = until,
            (Some(_), None) => {
                let msg = "no verification was replaced: give the new `verification` with it";
                return Err(ApiError::validation(FIELD, msg));
            }
        }
    } else {
        let old = std::mem::replace(&mut src.verification, new);
        src.previous_verification = match until {
            None => None,
            Some(_) if old == Verification::None => {
                return Err(ApiError::validation(FIELD, "the source had no verification to keep"));
            }
            Some(_) if old.kind() != src.verification.kind() => {
                let msg = "only a verification of the same type is kept (a rotation of its secret)";
                return Err(ApiError::validation(FIELD, msg));
            }
            Some(until) => Some(PreviousVerification { verification: old, until }),
        };
    }
    src.previous_verification = src.previous_verification.take().filter(|p| p.lasts_at(now));
    Ok(())
}

/// The largest body the source accepts.
pub fn body_limit(s: &AppState, src: &Source) -> u64 {
    src.max_body_bytes.unwrap_or(s.0.max_body_bytes as u64)
}

/// Checks the source's own settings (not its destinations).
fn validate(src: &mut Source) -> ApiResult<()> {
    if src.name.trim().is_empty() {
        return Err(ApiError::validation("name", "must not be empty"));
    }
    check_len("name", &src.name, 256)?;
    src.verification.check().map_err(|e| ApiError::validation(e.field, e.msg))?;
    if let Some(d) = &src.deduplication {
        d.check().map_err(|e| ApiError::validation(e.field, e.msg))?;
        // Mailgun signs a timestamp and a token, not the body: the token serving once is all
        // that keeps a captured signature from carrying a body of someone else's making
        // within its 5 minutes. Another key would let it.
        if matches!(src.verification, Verification::Mailgun { .. }) && *d != src.verification.default_deduplication() {
            return Err(ApiError::validation(
                "deduplication",
                "a mailgun source deduplicates on signature.token: its signature does not cover the body, and \
                 only a token serving once keeps a captured signature from carrying another body",
            ));
        }
    }
    // The provider's own is kept as none: the source follows it should it change, and a
    // setting a node of an older version may not know of (Slack's event id or signature) is
    // written only when asked for, not when a client sends back what it read.
    if src.deduplication.as_ref() == Some(&src.verification.default_deduplication()) {
        src.deduplication = None;
    }
    if src.allow_networks.len() > MAX_NETWORKS {
        return Err(ApiError::validation("allowNetworks", format!("at most {MAX_NETWORKS} networks")));
    }
    for net in src.allow_networks.iter_mut() {
        let parsed = net
            .trim()
            .parse::<ipnet::IpNet>()
            .or_else(|_| net.trim().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| ApiError::validation("allowNetworks", format!("{net:?} is not a CIDR network")))?;
        *net = parsed.trunc().to_string();
    }
    if let Some(n) = src.max_body_bytes {
        if !(1..=MAX_SOURCE_BODY_BYTES).contains(&n) {
            return Err(ApiError::validation("maxBodyBytes", format!("must be between 1 and {MAX_SOURCE_BODY_BYTES}")));
        }
    }
    if let Some(template) = &src.ordering_key {
        check_len("orderingKey", template, 1024)?;
        let as_template = serde_json::Value::String(template.clone());
        hooklane_core::rules::transform::validate(&as_template)
            .map_err(|e| ApiError::validation("orderingKey", e.msg))?;
    }
    if let Some(response) = &src.response {
        response.check().map_err(|(field, msg)| ApiError::validation(field, msg))?;
        if matches!(src.verification, Verification::Discord { .. }) {
            return Err(ApiError::validation("response", "Discord's requests are answered as Discord requires"));
        }
    }
    check_metadata("metadata", &src.metadata)
}

/// Checks destinations and splits them into URL destinations (endpoints to create or
/// update) and event-type destinations, whose application is resolved to its id.
async fn check_destinations(
    s: &AppState,
    input: Vec<DestinationIn>,
) -> ApiResult<(Vec<DestinationIn>, Vec<EventDestination>)> {
    if input.len() > MAX_DESTINATIONS {
        return Err(ApiError::validation("destinations", format!("at most {MAX_DESTINATIONS} destinations")));
    }
    let (mut urls, mut events) = (Vec::new(), Vec::new());
    let mut seen_events = HashSet::new();
    for d in input {
        match (&d.url, &d.app_id, &d.event_type) {
            (Some(_), None, None) if matches!(d.kind.as_deref(), None | Some("url")) => urls.push(d),
            (None, Some(app_key), Some(event_type))
                if matches!(d.kind.as_deref(), None | Some("eventType"))
                    && d.id.is_none()
                    && d.headers.is_none()
                    && d.secret.is_none()
                    && d.disabled.is_none()
                    && d.paused.is_none()
                    && d.payload_filter == Patch::Absent
                    && d.transform == Patch::Absent
                    && d.ordering == Patch::Absent
                    && d.transformation == Patch::Absent
                    && d.rate_limit == Patch::Absent
                    && d.filter_types == Patch::Absent
                    && d.retry_schedule == Patch::Absent =>
            {
                check_name("destinations.eventType", event_type)?;
                let app =
                    s.0.store.get_app(app_key).await?.ok_or_else(|| {
                        ApiError::validation("destinations.appId", format!("no application {app_key:?}"))
                    })?;
                if owned_by_source(&app) {
                    return Err(ApiError::validation(
                        "destinations.appId",
                        "an application of an inbound source cannot be a destination",
                    ));
                }
                if !seen_events.insert((app.id.clone(), event_type.clone())) {
                    return Err(ApiError::validation("destinations", "the same event type of an application twice"));
                }
                events.push(EventDestination { app_id: app.id, event_type: event_type.clone() });
            }
            _ => return Err(ApiError::validation(
                "destinations",
                "each destination is either {\"url\", \"headers\"?, \"secret\"?, \"disabled\"?, \"paused\"?, \"payloadFilter\"?, \
                     \"transform\"?, \"ordering\"?, \"transformation\"?, \"rateLimit\"?, \"filterTypes\"?, \"retrySchedule\"?} or \
                     {\"appId\", \"eventType\"}",
            )),
        }
    }
    Ok((urls, events))
}

/// A new endpoint of the source's application for a URL destination.
fn new_endpoint(app_id: &str, d: DestinationIn, kind: SignatureType, now: DateTime<Utc>) -> ApiResult<Endpoint> {
    let secret = match &d.secret {
        Some(raw) => parse_secret("destinations.secret", raw)?,
        None => Secret::generate(kind),
    };
    let mut ep = Endpoint {
        disabled: d.disabled.unwrap_or(false),
        headers: d.headers.clone().unwrap_or_default(),
        paused: d.paused.unwrap_or(false),
        ..Endpoint::new(app_id, d.url.clone().unwrap_or_default(), secret.expose(), now)
    };
    apply_rules(&d, &mut ep);
    validate_destination(&ep, None)?;
    Ok(ep)
}

/// Applies what a destination says of its endpoint's delivery rules (left out: kept; `null`:
/// cleared), for a new endpoint and a kept one alike.
fn apply_rules(d: &DestinationIn, ep: &mut Endpoint) {
    d.payload_filter.clone().apply_opt(&mut ep.payload_filter);
    d.transform.clone().apply_opt(&mut ep.transform);
    d.ordering.clone().apply_or_default(&mut ep.order);
    d.rate_limit.clone().apply_opt(&mut ep.rate_limit);
    d.filter_types.clone().apply_opt(&mut ep.filter_types);
    apply_waits(d.retry_schedule.clone(), &mut ep.retry_schedule);
}

/// Applies a destination's `transformation` to its endpoint (the code checked when new).
async fn apply_transformation(
    s: &AppState,
    ep: &mut Endpoint,
    transformation: Patch<TransformationPatch>,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    match transformation {
        Patch::Absent => Ok(()),
        Patch::Null => {
            ep.transformation = None;
            Ok(())
        }
        Patch::Set(input) => {
            let within = ("destinations.transformation", Fresh::OnWithCode);
            // Sources are the admin's, who sees every value.
            let editor = Editor { app_id: &ep.app_id, sees_secrets: true };
            apply_transformation_patch(s, &mut ep.transformation, input, within, editor, now).await
        }
    }
}

/// Checks a URL destination as the endpoint it is, naming a bad field as the body does
/// (`destinations.<field>`).
/// Checks a destination (`was`: the headers it had, whose sizes are not checked again).
fn validate_destination(ep: &Endpoint, was: Option<&BTreeMap<String, String>>) -> ApiResult<()> {
    validate_endpoint(ep).and_then(|()| check_header_sizes(was, &ep.headers)).map_err(|e| match e {
        ApiError::Validation { field, msg, .. } => ApiError::validation(format!("destinations.{field}"), msg),
        other => other,
    })
}

/// Creates an inbound source, with its application and its destinations (admin token only).
#[utoipa::path(
    post,
    path = "/api/v1/source",
    tag = "Source",
    operation_id = "v1.source.create",
    params(super::message::IdempotencyKey),
    request_body = SourceIn,
    responses(
        (status = 201, description = "The new source", body = SourceOut),
        (status = 400, description = "Malformed JSON, or an invalid `idempotency-key`", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 409, description = "A request with this `idempotency-key` is still being processed",
            body = ErrorBody),
        (status = 422, description = "A field is invalid, or the `idempotency-key` was used with another body",
            body = ErrorBody),
    )
)]
pub async fn create(State(s): State<AppState>, _: Admin, Json(input): Json<SourceIn>) -> ApiResult<impl IntoResponse> {
    let now = super::now();
    let id = ids::new_secret_id(ids::SOURCE);
    let app = Application {
        uid: Some(id.clone()),
        metadata: Metadata::from([("hooklane.source".to_string(), id.clone())]),
        ..Application::new(format!("inbound source {id}"), now)
    };
    if input.keep_previous_verification.is_some() {
        return Err(ApiError::validation("keepPreviousVerification", "a new source has no verification to keep"));
    }
    let (urls, events) = check_destinations(&s, input.destinations).await?;
    let mut src = Source {
        id,
        app_id: app.id.clone(),
        name: input.name,
        verification: input.verification,
        previous_verification: None,
        deduplication: input.deduplication,
        allow_networks: input.allow_networks,
        max_body_bytes: input.max_body_bytes,
        event_destinations: events,
        ordering_key: input.ordering_key,
        response: input.response,
        metadata: input.metadata,
        created_at: now,
        updated_at: now,
    };
    validate(&mut src)?;
    let mut endpoints = Vec::with_capacity(urls.len());
    for mut d in urls {
        if d.id.is_some() {
            return Err(ApiError::validation("destinations.id", "a new source has no destination to keep"));
        }
        let transformation = std::mem::take(&mut d.transformation);
        let mut ep = new_endpoint(&app.id, d, s.0.default_signature_type, now)?;
        apply_transformation(&s, &mut ep, transformation, now).await?;
        endpoints.push(ep);
    }
    s.0.store.create_source(src.clone(), app.clone(), endpoints.clone()).await?;
    tracing::info!(source_id = %crate::inbound::shown_source_id(&src.id), verification = src.verification.kind(), "inbound source created");
    // Destinations are endpoints: operational webhooks tell of them as of any other.
    for ep in &endpoints {
        operational::endpoint_changed(&s, operational::ENDPOINT_CREATED, &app, ep);
    }
    Ok((StatusCode::CREATED, axum::Json(source_out(&s, src).await?)))
}

/// Lists the inbound sources (admin token only).
///
/// Oldest first unless `order=descending`.
#[utoipa::path(
    get,
    path = "/api/v1/source",
    tag = "Source",
    operation_id = "v1.source.list",
    params(PageOldestFirst),
    responses(
        (status = 200, description = "A page of sources", body = ListResponse<SourceOut>),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list(State(s): State<AppState>, _: Admin, q: Query) -> ApiResult<axum::Json<ListResponse<SourceOut>>> {
    let page = page_request(&q, false)?;
    let page = s.0.store.list_sources(&page).await?;
    let iterator = page.items.last().map(|x| x.id.clone());
    let prev_iterator = page.items.first().map(|x| format!("-{}", x.id));
    let mut data = Vec::with_capacity(page.items.len());
    for src in page.items {
        data.push(source_out(&s, src).await?);
    }
    Ok(axum::Json(ListResponse { data, iterator, prev_iterator, done: page.done }))
}

pub async fn find(s: &AppState, id: &str) -> ApiResult<Source> {
    s.0.store.get_source(id).await?.ok_or(ApiError::NotFound("source"))
}

/// Gets an inbound source (admin token only).
#[utoipa::path(
    get,
    path = "/api/v1/source/{source_id}",
    tag = "Source",
    operation_id = "v1.source.get",
    params(SourcePath),
    responses(
        (status = 200, description = "The source", body = SourceOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such source", body = ErrorBody),
    )
)]
pub async fn get_one(State(s): State<AppState>, _: Admin, Path(id): Path<String>) -> ApiResult<axum::Json<SourceOut>> {
    let src = find(&s, &id).await?;
    Ok(axum::Json(source_out(&s, src).await?))
}

/// Saves a changed source; `destinations`, when given, replaces them all: URL destinations
/// with an `id` update that endpoint, those without are created, endpoints left out are
/// deleted (with their delivery history).
async fn save(s: &AppState, mut src: Source, destinations: Option<Vec<DestinationIn>>) -> ApiResult<SourceOut> {
    let now = super::now();
    src.updated_at = now;
    let mut plan = None;
    if let Some(input) = destinations {
        let (urls, events) = check_destinations(s, input).await?;
        src.event_destinations = events;
        plan = Some(urls);
    }
    validate(&mut src)?;
    // Every destination is checked before anything is written. Each change: the endpoint,
    // and what it was before (`None`: it is new). `news`: endpoints created or
    // deleted, for operational webhooks.
    let mut changes: Vec<(Endpoint, Option<Before>)> = Vec::new();
    let mut news: Vec<(&'static str, Endpoint)> = Vec::new();
    let mut dropped: Vec<Endpoint> = Vec::new();
    if let Some(urls) = plan {
        let existing = s.0.store.app_endpoints(&src.app_id).await?;
        let mut kept = HashSet::new();
        for mut d in urls {
            let transformation = std::mem::take(&mut d.transformation);
            let (mut ep, before) = match &d.id {
                Some(ep_id) => {
                    let mut ep = existing.iter().find(|e| &e.id == ep_id).cloned().ok_or_else(|| {
                        ApiError::validation("destinations.id", format!("{ep_id} is not a destination of this source"))
                    })?;
                    if !kept.insert(ep.id.clone()) {
                        return Err(ApiError::validation("destinations.id", format!("{ep_id} appears twice")));
                    }
                    // What it was, before anything of it changes.
                    let was = Before::of(&ep);
                    ep.url = d.url.clone().unwrap_or_default();
                    if let Some(h) = &d.headers {
                        ep.headers = h.clone();
                    }
                    // A secret sent back as `GET` showed it (an Ed25519 key pair's public key)
                    // leaves it as it is.
                    if let Some(raw) = d.secret.as_ref().filter(|raw| **raw != published_key(&ep.secret)) {
                        ep.secret = parse_secret("destinations.secret", raw)?.expose();
                    }
                    if let Some(disabled) = d.disabled {
                        ep.disabled = disabled;
                    }
                    if let Some(paused) = d.paused {
                        ep.paused = paused;
                    }
                    apply_rules(&d, &mut ep);
                    touch(&mut ep, was.disabled, super::endpoint::next_version(now, was.updated_at));
                    validate_destination(&ep, Some(&was.sent.headers))?;
                    (ep, Some(was))
                }
                None => (new_endpoint(&src.app_id, d, s.0.default_signature_type, now)?, None),
            };
            apply_transformation(s, &mut ep, transformation, now).await?;
            changes.push((ep, before));
        }
        dropped.extend(existing.into_iter().filter(|e| !kept.contains(&e.id)));
    }
    // Destinations are endpoints: changed, they are handled as any endpoint changed through
    // its own routes. The application is read only for operational webhooks, when there
    // are any to post.
    let reported = s.0.operational_app.is_some() && !(changes.is_empty() && dropped.is_empty());
    let app = if reported { s.0.store.get_app(&src.app_id).await? } else { None };
    // The source and its destinations' changes are saved in one transaction: a destination
    // changed since it was read (409) or a uid taken leaves everything as it was.
    let (updates, creations): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, before)| before.is_some());
    let mut updated = Vec::new();
    let mut plan = DestinationChanges::default();
    for (mut ep, was) in updates.into_iter().filter_map(|(ep, was)| was.map(|was| (ep, was))) {
        let moved = drop_credentials_if_moved(&mut ep, &was);
        plan.updated.push((ep.clone(), was.updated_at));
        updated.push((ep, was, moved));
    }
    plan.deleted = dropped.iter().map(|ep| ep.id.clone()).collect();
    plan.created = creations.into_iter().map(|(ep, _)| ep).collect();
    let created = plan.created.clone();
    s.0.store.update_source(src.clone(), plan).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::NotFound("source"),
        other => super::endpoint::save_error(other),
    })?;
    for (ep, was, moved) in updated {
        forget_credentials(s, &ep, moved).await;
        after_update(s, app.as_ref(), &ep, was);
    }
    for ep in &dropped {
        s.0.dispatcher.stop(hooklane_store::Stop::Deleted(ep.id.clone())).await;
    }
    news.extend(dropped.into_iter().map(|ep| (operational::ENDPOINT_DELETED, ep)));
    news.extend(created.into_iter().map(|ep| (operational::ENDPOINT_CREATED, ep)));
    if let Some(app) = &app {
        for (event_type, ep) in &news {
            operational::endpoint_changed(s, event_type, app, ep);
        }
    }
    source_out(s, src).await
}

/// Replaces an inbound source's settings and destinations (admin token only).
///
/// URL destinations with an `id` update that destination, those without are created, and
/// destinations left out are deleted with their delivery history.
#[utoipa::path(
    put,
    path = "/api/v1/source/{source_id}",
    tag = "Source",
    operation_id = "v1.source.update",
    params(SourcePath),
    request_body = SourceIn,
    responses(
        (status = 200, description = "The source as saved", body = SourceOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn put(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(input): Json<SourceIn>,
) -> ApiResult<axum::Json<SourceOut>> {
    let mut src = find(&s, &id).await?;
    src.name = input.name;
    rotate_verification(&mut src, input.verification, input.keep_previous_verification, super::now())?;
    src.deduplication = input.deduplication;
    src.allow_networks = input.allow_networks;
    src.max_body_bytes = input.max_body_bytes;
    src.ordering_key = input.ordering_key;
    src.response = input.response;
    src.metadata = input.metadata;
    Ok(axum::Json(save(&s, src, Some(input.destinations)).await?))
}

/// Changes some of an inbound source's settings (admin token only).
///
/// `destinations`, when given, replaces them all as PUT does.
#[utoipa::path(
    patch,
    path = "/api/v1/source/{source_id}",
    tag = "Source",
    operation_id = "v1.source.patch",
    params(SourcePath),
    request_body = SourcePatch,
    responses(
        (status = 200, description = "The source as saved", body = SourceOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 422, description = "A field is invalid, or `null` for a field that cannot be reset",
            body = ErrorBody),
    )
)]
pub async fn patch(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(p): Json<SourcePatch>,
) -> ApiResult<axum::Json<SourceOut>> {
    let mut src = find(&s, &id).await?;
    p.name.apply("name", &mut src.name)?;
    let mut verification = src.verification.clone();
    p.verification.apply("verification", &mut verification)?;
    rotate_verification(&mut src, verification, p.keep_previous_verification, super::now())?;
    p.deduplication.apply_opt(&mut src.deduplication);
    p.allow_networks.apply("allowNetworks", &mut src.allow_networks)?;
    p.max_body_bytes.apply_opt(&mut src.max_body_bytes);
    p.ordering_key.apply_opt(&mut src.ordering_key);
    p.response.apply_opt(&mut src.response);
    p.metadata.apply("metadata", &mut src.metadata)?;
    let destinations = match p.destinations {
        Patch::Absent => None,
        Patch::Null => Some(Vec::new()),
        Patch::Set(d) => Some(d),
    };
    Ok(axum::Json(save(&s, src, destinations).await?))
}

/// Deletes an inbound source (admin token only).
///
/// With its request records and its application, with everything under it. Its ingest URL
/// answers 404 from then on.
#[utoipa::path(
    delete,
    path = "/api/v1/source/{source_id}",
    tag = "Source",
    operation_id = "v1.source.delete",
    params(SourcePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such source", body = ErrorBody),
    )
)]
pub async fn delete(State(s): State<AppState>, _: Admin, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let src = s.0.store.get_source(&id).await?.ok_or(ApiError::NotFound("source"))?;
    // Its destinations go with it: operational webhooks tell of them as they told of their
    // creation (read first only when there is anyone to tell).
    let told = match s.0.operational_app.is_some() {
        true => {
            let app = s.0.store.get_app(&src.app_id).await?;
            Some((app, s.0.store.app_endpoints(&src.app_id).await?))
        }
        false => None,
    };
    s.0.store.delete_source(&id).await.map_err(crate::error::missing("source"))?;
    // What any node holds in memory for its destinations is not sent after the answer.
    s.0.dispatcher.stop(hooklane_store::Stop::Deleted(src.app_id.clone())).await;
    tracing::info!(source_id = %crate::inbound::shown_source_id(&id), "inbound source deleted");
    if let Some((Some(app), endpoints)) = told {
        for ep in &endpoints {
            operational::endpoint_changed(&s, operational::ENDPOINT_DELETED, &app, ep);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// One request to a source's ingest URL, as recorded.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboundRequestOut {
    #[schema(example = "req_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
    id: String,
    source_id: String,
    /// `accepted`, `duplicate` or `rejected`.
    #[schema(value_type = String, example = "accepted")]
    status: &'static str,
    /// The status hooklane answered the provider with.
    http_status: u16,
    /// Why it was refused, or which message it duplicated.
    reason: Option<String>,
    /// The client's address (behind a trusted proxy, from `X-Forwarded-For`).
    remote_addr: Option<String>,
    /// The request's headers by lower-case name; credentials are redacted.
    headers: BTreeMap<String, String>,
    /// The body as received (cut at the record limit), as text.
    body: String,
    /// The same, base64-encoded, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    body_size: u64,
    body_truncated: bool,
    dedup_key: Option<String>,
    msg_id: Option<String>,
    received_at: DateTime<Utc>,
}

impl From<InboundRequest> for InboundRequestOut {
    fn from(r: InboundRequest) -> Self {
        let body_truncated = (r.body.len() as u64) < r.body_size;
        let (body, body_base64) = match String::from_utf8(r.body) {
            Ok(text) => (text, None),
            Err(e) => {
                let bytes = e.into_bytes();
                (
                    String::from_utf8_lossy(&bytes).into_owned(),
                    Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                )
            }
        };
        InboundRequestOut {
            body_truncated,
            id: r.id,
            source_id: r.source_id,
            status: r.status.as_str(),
            http_status: r.http_status,
            reason: r.reason,
            remote_addr: r.remote_addr,
            headers: r.headers,
            body,
            body_base64,
            body_size: r.body_size,
            dedup_key: r.dedup_key,
            msg_id: r.msg_id,
            received_at: r.received_at,
        }
    }
}

/// Lists the requests made to a source's ingest URL (admin token only).
///
/// `GET /api/v1/source/{id}/request`: every request to the source's ingest URL, newest
/// first; `status=accepted|duplicate|rejected` filters. Refused requests are recorded up to
/// a budget per source.
#[utoipa::path(
    get,
    path = "/api/v1/source/{source_id}/request",
    tag = "Source",
    operation_id = "v1.source.list-requests",
    params(
        SourcePath,
        PageNewestFirst,
        ("status" = Option<String>, Query, description = "Only requests `accepted`, `duplicate` or `rejected`"),
    ),
    responses(
        (status = 200, description = "A page of request records", body = ListResponse<InboundRequestOut>),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list_requests(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    q: Query,
) -> ApiResult<axum::Json<ListResponse<InboundRequestOut>>> {
    let page = page_request(&q, true)?;
    let status = match q.get("status") {
        None => None,
        Some("accepted") => Some(InboundStatus::Accepted),
        Some("duplicate") => Some(InboundStatus::Duplicate),
        Some("rejected") => Some(InboundStatus::Rejected),
        Some(_) => return Err(ApiError::bad_query("status", "must be accepted, duplicate or rejected")),
    };
    let src = find(&s, &id).await?;
    let page = s.0.store.list_inbound_requests(&src.id, status, &page).await?;
    Ok(axum::Json(ListResponse::from_page(page, |r| r.id.clone(), InboundRequestOut::from)))
}

/// Gets one recorded request to a source's ingest URL (admin token only).
#[utoipa::path(
    get,
    path = "/api/v1/source/{source_id}/request/{request_id}",
    tag = "Source",
    operation_id = "v1.source.get-request",
    params(SourceRequestPath),
    responses(
        (status = 200, description = "The request record", body = InboundRequestOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such source, or no such request of it", body = ErrorBody),
    )
)]
pub async fn get_request(
    State(s): State<AppState>,
    _: Admin,
    Path((id, request_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<InboundRequestOut>> {
    let src = find(&s, &id).await?;
    let r = s.0.store.get_inbound_request(&src.id, &request_id).await?.ok_or(ApiError::NotFound("request"))?;
    Ok(axum::Json(r.into()))
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, put, patch, delete, list_requests, get_request),
    components(schemas(
        SourceIn,
        SourcePatch,
        SourceAnswer,
        DestinationIn,
        DestinationOut,
        SourceOut,
        InboundRequestOut
    ))
)]
pub(crate) struct Doc;

#[cfg(test)]
mod tests {
    use super::*;
    use hooklane_core::inbound::Deduplication;

    fn slack(deduplication: Option<Deduplication>) -> Source {
        let t = hooklane_core::Utc::now();
        Source {
            id: "src_1".into(),
            app_id: "app_1".into(),
            name: "slack".into(),
            verification: Verification::Slack { signing_secret: "8f742231b10e8888abcd99yyyzzz85a5".into() },
            previous_verification: None,
            deduplication,
            allow_networks: Vec::new(),
            max_body_bytes: None,
            event_destinations: Vec::new(),
            ordering_key: None,
            response: None,
            metadata: Default::default(),
            created_at: t,
            updated_at: t,
        }
    }

    /// The provider's deduplication given back as read is stored as none; another is kept.
    #[test]
    fn the_providers_own_deduplication_is_stored_as_none() {
        let mut src = slack(None);
        src.deduplication = Some(src.verification.default_deduplication());
        validate(&mut src).expect("valid");
        assert_eq!(src.deduplication, None);
        let own = Deduplication::Header { header: "x-request-id".into() };
        let mut src = slack(Some(own.clone()));
        validate(&mut src).expect("valid");
        assert_eq!(src.deduplication, Some(own));
    }
}
