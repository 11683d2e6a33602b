//! `/api/v1/app/{app_id}/endpoint`: where an application's messages go.

use super::retry_waits::RetryWaits;
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hooklane_core::filter::{endpoint_wants, payload_wanted, LazyPayload};
use hooklane_core::ids;
use hooklane_core::model::{
    Application, BackgroundTask, Capability, DeliveryOrder, Endpoint, ExpiringSecret, Metadata, Principal,
};
use hooklane_core::signing::{published_key, Secret};
use hooklane_core::{DateTime, Utc};
use hooklane_store::Stop;
use serde::{Deserialize, Serialize};

use super::{check_len, check_metadata, check_name, check_names, check_rate_limit, page_request, ListResponse, Patch};
use crate::error::{conflict, missing, ApiError, ApiResult};
use crate::extract::{Json, OptionalJson, Path, Query, Tenant};
use crate::openapi::{
    AppPath, EndpointPath, ErrorBody, InvalidBody, InvalidJson, InvalidQuery, PageOldestFirst, Unauthorized,
};
use crate::operational;
use crate::state::AppState;

/// How long a rotated-out secret keeps signing, so receivers can switch over.
const ROTATION_OVERLAP_HOURS: i64 = 24;
/// Longest grace period a rotation may give the old secret (Svix's: a week).
const MAX_GRACE_SECONDS: u32 = 7 * 24 * 3600;
/// Rotated-away secrets still signing at most (each adds a signature to every delivery).
const MAX_PREVIOUS_SECRETS: usize = 5;
const MAX_URL_LEN: usize = 4096;
const UID_TAKEN: &str = "an endpoint with this uid already exists in this application";

/// Svix's `EndpointIn`: a new endpoint (`POST`), or all of one (`PUT`).
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointIn {
    /// Where messages are posted: an absolute `http` or `https` URL. Required, except for a
    /// polling endpoint, which has none (a `PUT` to one may repeat the `url` it answers).
    #[serde(default)]
    #[schema(format = "uri", max_length = 4096, example = "https://example.com/webhook")]
    url: Option<String>,
    #[serde(default)]
    #[schema(max_length = 4096)]
    description: String,
    // Svix's newer names (`eventTypes`, `throttleRate`; the SDKs since v1.7x send them) are
    // the same settings as the older `filterTypes` and `rateLimit`.
    /// The event types the endpoint gets (all when absent or `null`). Also accepted under
    /// Svix's newer name `eventTypes`.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 256)]
    filter_types: Option<Vec<String>>,
    /// `filterTypes` under Svix's newer name (used when `filterTypes` is not given: an
    /// endpoint read back carries both).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 256)]
    event_types: Option<Vec<String>>,
    /// The channels the endpoint gets (all when absent or `null`).
    #[serde(default)]
    #[schema(min_items = 1, max_items = 10)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    disabled: bool,
    /// Most deliveries per second to this endpoint (no limit when absent). Also accepted
    /// under Svix's newer name `throttleRate`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    rate_limit: Option<u32>,
    /// `rateLimit` under Svix's newer name (used when `rateLimit` is not given).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    throttle_rate: Option<u32>,
    /// Up to 64 string entries.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: Metadata,
    /// A unique name of the endpoint within its application, usable instead of its id
    /// (1–256 of `[a-zA-Z0-9-_.]`, not shaped like an endpoint id). On `PUT` to the endpoint
    /// addressed by its uid, leaving it out keeps it; otherwise leaving it out clears it.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256, pattern = r"^[a-zA-Z0-9\-_.]+$")]
    uid: Option<String>,
    /// At least 1; 1 on creation when absent, unchanged by a `PUT` without it.
    #[serde(default)]
    #[schema(minimum = 1)]
    version: Option<i32>,
    /// The signing secret: `whsec_` and the base64 of 24 to 75 bytes (HMAC-SHA256, `v1`
    /// signatures), or `whsk_` and the base64 of an Ed25519 seed or key pair (`v1a`
    /// signatures); generated, of the server's `default_signature_type`, when absent.
    /// Only read on creation: a `PUT` ignores it (use the rotate operation to change it).
    #[serde(default)]
    #[schema(example = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")]
    secret: Option<String>,
    /// Custom headers sent with every delivery (at most 32). A `PUT` without them keeps them.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    // hooklane's own (see [`hooklane_core::rules`]). A `PUT` without them keeps them, as
    // it keeps `headers`: Svix's SDKs know nothing of them and would clear them otherwise;
    // `null` clears one.
    /// hooklane extension: which messages the endpoint gets, by their payload, as a JSON
    /// object in a subset of MongoDB's query language (e.g. `{"type": {"$in": ["a", "b"]}}`;
    /// operators `$eq`, `$neq`, `$in`, `$nin`, `$exists`, `$gt`, `$gte`, `$lt`, `$lte`,
    /// `$startsWith`, `$endsWith`, `$contains`, `$not`, `$and`, `$or`); at most 64 KiB.
    /// Left out, it is kept (on `PUT`); `null` removes it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload_filter: Patch<serde_json::Value>,
    /// hooklane extension: the body the endpoint is sent instead of the payload, a JSON
    /// template whose strings may hold `{{ path }}` placeholders read from the payload
    /// (`{{ $ }}` is all of it); at most 64 KiB. Left out, it is kept (on `PUT`); `null`
    /// removes it.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    transform: Patch<serde_json::Value>,
    // hooklane's own, kept by a `PUT` without it like the two above ([`DeliveryOrder`]).
    /// hooklane extension: how deliveries are sent, `concurrent` (the default) or `fifo`.
    /// Left out, it is kept (on `PUT`); `null` sets `concurrent`.
    #[serde(default)]
    #[schema(value_type = Option<EndpointOrdering>)]
    ordering: Patch<DeliveryOrder>,
    /// hooklane extension: the waits between this endpoint's attempts (`["30s", "5m",
    /// "1h"]`: three retries after the first attempt; `[]`: none), instead of the server's
    /// `retry_schedule`; at most 20, each 1s to 7days, moved by the server's
    /// `retry_jitter`. Left out, it is kept (on `PUT`); `null`: the server's.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["30s", "5m", "1h"]))]
    retry_schedule: Patch<RetryWaits>,
    /// hooklane extension: `true` holds the endpoint's deliveries (made, not sent) until it
    /// is set back to `false`, when they go at once; unlike `disabled`, nothing is dropped.
    /// Left out, it is kept (on `PUT`); `false` on creation.
    #[serde(default)]
    paused: Option<bool>,
    /// hooklane extension (Svix's polling endpoints): `true` makes a polling endpoint, given
    /// no `url`: nothing is sent to it; its messages (those its `filterTypes` and `channels`
    /// let through, created since it was) are read through `GET …/poller/{endpoint_id}`. Set
    /// on creation only; a later `PUT` or `PATCH` may repeat it, not change it.
    #[serde(default)]
    polling: Option<bool>,
}

/// How an endpoint's deliveries are sent (hooklane extension): `concurrent`, several at once
/// in no promised order, or `fifo`, in strict order per ordering key, one at a time, a
/// failing message holding up those behind it until it succeeds or its retries run out.
// Describes `DeliveryOrder` (hooklane-core, which has no schema) in the document; never built.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub(crate) enum EndpointOrdering {
    Concurrent,
    Fifo,
}

impl EndpointIn {
    /// Takes Svix's newer names (`eventTypes`, `throttleRate`) where the older ones are not
    /// given. (Both may come: an endpoint read back carries both, as Svix's SDKs copy it.)
    fn with_svix_names(mut self) -> Self {
        self.filter_types = self.filter_types.or(self.event_types.take());
        self.rate_limit = self.rate_limit.or(self.throttle_rate.take());
        self
    }
}

/// Svix's `EndpointPatch`: only the fields given change; `null` clears a field that may be
/// unset and is refused for the others.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPatch {
    #[serde(default)]
    #[schema(value_type = String, format = "uri", max_length = 4096)]
    url: Patch<String>,
    #[serde(default)]
    #[schema(value_type = String, max_length = 4096)]
    description: Patch<String>,
    /// Also accepted as `eventTypes`; `null`: all event types.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 256)]
    filter_types: Patch<Vec<String>>,
    /// `filterTypes` under Svix's newer name (used when `filterTypes` is absent).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 256)]
    event_types: Patch<Vec<String>>,
    /// `null`: all channels.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 10)]
    channels: Patch<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = bool)]
    disabled: Patch<bool>,
    /// Also accepted as `throttleRate`; `null`: no limit.
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 65535)]
    rate_limit: Patch<u32>,
    /// `rateLimit` under Svix's newer name (used when `rateLimit` is absent).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 65535)]
    throttle_rate: Patch<u32>,
    /// Svix's deprecated field, still in its SDKs' `EndpointPatch`: refused with a pointer
    /// to `…/secret/rotate`, rather than as an unknown field.
    #[serde(default)]
    #[schema(ignore)]
    secret: Patch<serde::de::IgnoredAny>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: Patch<Metadata>,
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 256, pattern = r"^[a-zA-Z0-9\-_.]+$")]
    uid: Patch<String>,
    #[serde(default)]
    #[schema(value_type = i32, minimum = 1)]
    version: Patch<i32>,
    /// Replaces all custom headers.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    headers: Patch<BTreeMap<String, String>>,
    /// hooklane extension, as in `EndpointIn`; `null` removes it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload_filter: Patch<serde_json::Value>,
    /// hooklane extension, as in `EndpointIn`; `null` removes it.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    transform: Patch<serde_json::Value>,
    /// hooklane extension, as in `EndpointIn`; `null` sets `concurrent`.
    #[serde(default)]
    #[schema(value_type = Option<EndpointOrdering>)]
    ordering: Patch<DeliveryOrder>,
    /// hooklane extension, as in `EndpointIn`; `null`: the server's schedule.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    retry_schedule: Patch<RetryWaits>,
    /// hooklane extension, as in `EndpointIn`.
    #[serde(default)]
    #[schema(value_type = bool)]
    paused: Patch<bool>,
    /// hooklane extension, as in `EndpointIn`: may repeat the endpoint's, not change it.
    #[serde(default)]
    polling: Option<bool>,
}

impl EndpointPatch {
    /// As [`EndpointIn::with_svix_names`]: the newer names count where the older are absent.
    fn with_svix_names(mut self) -> Self {
        if matches!(self.filter_types, Patch::Absent) {
            self.filter_types = std::mem::take(&mut self.event_types);
        }
        if matches!(self.rate_limit, Patch::Absent) {
            self.rate_limit = std::mem::take(&mut self.throttle_rate);
        }
        self
    }
}

/// Svix's `EndpointOut`. The signing secret is never part of it: it is read with the
/// get-secret operation.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOut {
    #[schema(example = "ep_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    id: String,
    /// Where messages are posted; for a polling endpoint, where they are read
    /// (`{public_url}/api/v1/app/{app_id}/poller/{endpoint_id}`).
    url: String,
    description: String,
    /// The event types the endpoint gets (`null`: all).
    filter_types: Option<Vec<String>>,
    /// `filterTypes` under Svix's newer name, which newer SDKs read.
    event_types: Option<Vec<String>>,
    /// The channels the endpoint gets (`null`: all).
    channels: Option<Vec<String>>,
    disabled: bool,
    /// Most deliveries per second (`null`: no limit).
    rate_limit: Option<u32>,
    /// `rateLimit` under Svix's newer name (a 16-bit number in the SDKs: left out above that).
    #[serde(skip_serializing_if = "Option::is_none")]
    throttle_rate: Option<u16>,
    #[schema(value_type = BTreeMap<String, String>)]
    metadata: Metadata,
    uid: Option<String>,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    // hooklane's own; left out when unset, so that answers stay Svix's.
    /// hooklane extension: the payload filter (see `EndpointIn`); left out when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    payload_filter: Option<serde_json::Value>,
    /// hooklane extension: the transform template (see `EndpointIn`); left out when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    transform: Option<serde_json::Value>,
    // Left out when concurrent (the default), for the same reason.
    /// hooklane extension: `fifo` when set so; left out when `concurrent` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<EndpointOrdering>)]
    ordering: Option<DeliveryOrder>,
    /// hooklane extension: the endpoint's own retry schedule; left out when it has none
    /// (the server's applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    retry_schedule: Option<RetryWaits>,
    /// hooklane extension: `true` while its deliveries are held; left out otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    paused: bool,
    /// hooklane extension: `true` for a polling endpoint; left out otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    polling: bool,
}

impl EndpointOut {
    /// The endpoint as `principal` may see it (see [`url_seen_by`]).
    pub(crate) fn new(s: &AppState, mut e: Endpoint, principal: &Principal) -> Self {
        EndpointOut {
            url: url_seen_by(answered_url(s, &mut e), principal),
            id: e.id,
            description: e.description,
            event_types: e.filter_types.clone(),
            filter_types: e.filter_types,
            channels: e.channels,
            disabled: e.disabled,
            throttle_rate: e.rate_limit.and_then(|r| u16::try_from(r).ok()),
            rate_limit: e.rate_limit,
            metadata: e.metadata,
            uid: e.uid,
            version: e.version,
            created_at: e.created_at,
            updated_at: e.updated_at,
            payload_filter: e.payload_filter,
            transform: e.transform,
            ordering: e.order.is_fifo().then_some(e.order),
            retry_schedule: e.retry_schedule.map(RetryWaits),
            paused: e.paused,
            polling: e.polling,
        }
    }
}

/// `url` as `principal` may see it: its user information (basic authentication the receiver
/// asks for) is a credential, shown only to a token with `ViewEndpointSecret`, as custom
/// headers are.
pub(crate) fn url_seen_by(url: String, principal: &Principal) -> String {
    if principal.allows(Some(Capability::ViewEndpointSecret)) {
        return url;
    }
    without_credentials(url)
}

/// `url` with the password it holds, if any, replaced by `redacted`, and a user name
/// without a password too (a key sent as the Basic user name is as secret as a password).
pub(crate) fn without_credentials(url: String) -> String {
    let Ok(mut parsed) = url::Url::parse(&url) else { return url };
    let replaced = if parsed.password().is_some() {
        parsed.set_password(Some("redacted"))
    } else if !parsed.username().is_empty() {
        parsed.set_username("redacted")
    } else {
        return url;
    };
    match replaced {
        Ok(()) => parsed.to_string(),
        Err(()) => url,
    }
}

/// The `url` an endpoint is answered with (taken out of it): its own, or for a polling
/// endpoint, which has none, where it is read.
pub(crate) fn answered_url(s: &AppState, e: &mut Endpoint) -> String {
    if e.polling {
        poller_url(s, e)
    } else {
        std::mem::take(&mut e.url)
    }
}

/// Where a polling endpoint's messages are read: the `url` it answers.
fn poller_url(s: &AppState, e: &Endpoint) -> String {
    format!("{}/api/v1/app/{}/poller/{}", s.0.public_url.trim_end_matches('/'), e.app_id, e.id)
}

/// The settings of deliveries, which a polling endpoint (sent nothing) does not take.
const NOT_FOR_POLLING: &str = "does not apply to a polling endpoint: nothing is sent to it";

/// What a polling endpoint may not hold: whatever only a delivery would use.
fn check_polling(e: &Endpoint) -> ApiResult<()> {
    let refused = [
        ("rateLimit", e.rate_limit.is_some()),
        ("headers", !e.headers.is_empty()),
        ("payloadFilter", e.payload_filter.is_some()),
        ("transform", e.transform.is_some()),
        ("ordering", e.order.is_fifo()),
        ("retrySchedule", e.retry_schedule.is_some()),
        ("paused", e.paused),
        ("transformation", e.transformation.as_ref().is_some_and(|t| t.code.is_some())),
    ];
    match refused.into_iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(ApiError::validation(field, NOT_FOR_POLLING)),
        None => Ok(()),
    }
}

/// Refuses what only sending uses (OAuth or mTLS settings, a preview of a request) for a
/// polling endpoint.
pub(crate) fn require_sent_to(ep: &Endpoint) -> ApiResult<()> {
    if ep.polling {
        return Err(ApiError::Conflict(format!("endpoint {} is a polling endpoint: nothing is sent to it", ep.id)));
    }
    Ok(())
}

/// The `url` of a create or a `PUT`: required unless the endpoint polls; a polling endpoint
/// has none, but may be sent the one it answers (an SDK's read-modify-write does so), as
/// another node (another `public_url`) or its uid may have written it.
fn given_url(ep: &Endpoint, url: Option<String>, principal: &Principal) -> ApiResult<String> {
    let redacted = !principal.allows(Some(Capability::ViewEndpointSecret));
    match url {
        // Sent back as a token without `ViewEndpointSecret` read it: the password is kept.
        Some(url) if redacted && !ep.polling && url != ep.url && url == without_credentials(ep.url.clone()) => {
            Ok(ep.url.clone())
        }
        Some(url) if !ep.polling => Ok(url),
        None if !ep.polling => Err(ApiError::validation("url", "is required (unless `polling` is true)")),
        Some(url) if !is_poller_url(ep, &url) => Err(ApiError::validation(
            "url",
            "a polling endpoint has no URL: its messages are read through …/poller/{endpoint_id}",
        )),
        _ => Ok(String::new()),
    }
}

/// Whether `url` is one a polling endpoint answers: its poller's path (by its id or uid),
/// under whatever path `public_url` has.
fn is_poller_url(ep: &Endpoint, url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else { return false };
    let Some(segments) = url.path_segments() else { return false };
    let segments: Vec<&str> = segments.collect();
    match segments.as_slice() {
        [.., "api", "v1", "app", _, "poller", last] => *last == ep.id || ep.uid.as_deref() == Some(*last),
        _ => false,
    }
}

/// `polling` in a change: the endpoint's own, repeated, or nothing.
fn same_polling(ep: &Endpoint, given: Option<bool>) -> ApiResult<()> {
    match given {
        Some(p) if p != ep.polling => {
            Err(ApiError::validation("polling", "cannot be changed: create another endpoint instead"))
        }
        _ => Ok(()),
    }
}

pub fn check_url(field: &str, raw: &str) -> ApiResult<()> {
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::validation(field, format!("must be at most {MAX_URL_LEN} characters")));
    }
    // The URL parser drops surrounding spaces and inner tabs and newlines, and reads
    // `http:/x` as `http://x/`: the URL stored must be the one that is called. (A space
    // inside is sent percent-encoded, which is the same URL.)
    if raw.trim() != raw || raw.chars().any(char::is_control) {
        return Err(ApiError::validation(field, "must not start or end with spaces, nor contain control characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| ApiError::validation(field, format!("not a valid URL: {e}")))?;
    let absolute = raw.get(url.scheme().len()..).is_some_and(|rest| rest.starts_with("://"));
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) || !absolute {
        return Err(ApiError::validation(field, "must be an absolute http or https URL"));
    }
    if url.port() == Some(0) {
        return Err(ApiError::validation(field, "port 0 cannot be called"));
    }
    Ok(())
}

/// Longest custom header name, and most bytes of all custom headers (names and values) an
/// endpoint has: receivers refuse long headers (431), which would fail every delivery.
const MAX_HEADER_NAME_BYTES: usize = 256;
const MAX_HEADERS_BYTES: usize = 16 * 1024;

/// The sizes of custom headers being set: `headers` replacing `old` (none: all are new).
/// Names kept from `old`, and a total no larger than `old`'s, are let be: an endpoint's
/// headers may predate the limits, and removing some must stay possible.
pub(crate) fn check_header_sizes(
    old: Option<&BTreeMap<String, String>>,
    headers: &BTreeMap<String, String>,
) -> ApiResult<()> {
    let is_new = |name: &String| old.is_none_or(|old| !old.contains_key(name));
    if let Some(long) = headers.keys().filter(|name| is_new(name)).find(|name| name.len() > MAX_HEADER_NAME_BYTES) {
        let shown: String = long.chars().take(40).collect();
        return Err(ApiError::validation(
            "headers",
            format!("header names are at most {MAX_HEADER_NAME_BYTES} bytes ({shown:?}… is longer)"),
        ));
    }
    let total = |h: &BTreeMap<String, String>| h.iter().map(|(name, value)| name.len() + value.len()).sum::<usize>();
    let (now, before) = (total(headers), old.map_or(0, total));
    if now > MAX_HEADERS_BYTES && now > before {
        return Err(ApiError::validation("headers", format!("at most {MAX_HEADERS_BYTES} bytes of headers in all")));
    }
    Ok(())
}

fn check_headers(headers: &BTreeMap<String, String>) -> ApiResult<()> {
    use hooklane_dispatch::sender::{custom_header_fault, HeaderFault, MAX_CUSTOM_HEADERS, MAX_HEADER_VALUE};
    if headers.len() > MAX_CUSTOM_HEADERS {
        return Err(ApiError::validation("headers", format!("at most {MAX_CUSTOM_HEADERS} headers")));
    }
    let mut seen = std::collections::HashSet::with_capacity(headers.len());
    for (name, value) in headers {
        // Header names are case-insensitive: `X-A` and `x-a` are one header, sent once.
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(ApiError::validation("headers", format!("header {name:?} is given twice (names ignore case)")));
        }
        let why = match custom_header_fault(name, value) {
            None => continue,
            Some(HeaderFault::Name) => format!("invalid header {name:?}"),
            Some(HeaderFault::Value) => format!("invalid value for header {name:?}"),
            Some(HeaderFault::TooLong) => {
                format!("the value of header {name:?} is longer than {MAX_HEADER_VALUE} bytes")
            }
            Some(HeaderFault::Reserved | HeaderFault::Connection) => {
                format!("header {name:?} cannot be set: hooklane sets it, or it controls the connection")
            }
        };
        return Err(ApiError::validation("headers", why));
    }
    Ok(())
}

pub(crate) fn validate(e: &Endpoint) -> ApiResult<()> {
    if e.polling {
        check_polling(e)?;
    } else {
        check_url("url", &e.url)?;
    }
    check_len("description", &e.description, 4096)?;
    check_names("filterTypes", &e.filter_types, 256)?;
    check_names("channels", &e.channels, 10)?;
    check_rate_limit("rateLimit", e.rate_limit)?;
    check_metadata("metadata", &e.metadata)?;
    check_headers(&e.headers)?;
    check_rules(e.payload_filter.as_ref(), e.transform.as_ref())?;
    if let Some(waits) = &e.retry_schedule {
        hooklane_core::retry::check_endpoint_schedule(waits)
            .map_err(|msg| ApiError::validation("retrySchedule", msg))?;
    }
    if let Some(uid) = &e.uid {
        check_name("uid", uid)?;
        if ids::has_prefix(uid, ids::ENDPOINT) {
            return Err(ApiError::validation("uid", "must not look like an endpoint id"));
        }
    }
    if e.version < 1 {
        return Err(ApiError::validation("version", "must be at least 1"));
    }
    Ok(())
}

/// Largest payload filter or transform, as JSON text: both are read for every message that
/// fans out to the endpoint (or is sent to it), so they stay small.
const MAX_RULE_BYTES: usize = 64 * 1024;

/// An endpoint's (or a destination's) payload filter and transform, checked when set.
pub(crate) fn check_rules(filter: Option<&serde_json::Value>, transform: Option<&serde_json::Value>) -> ApiResult<()> {
    use hooklane_core::rules::{payload_filter, transform, RuleError};
    let at = |field: &str, e: RuleError| {
        let place = if e.path.is_empty() { field.to_string() } else { format!("{field}.{}", e.path) };
        ApiError::validation(place, e.msg)
    };
    let documents = [
        ("payloadFilter", filter, payload_filter::validate as fn(&serde_json::Value) -> Result<(), RuleError>),
        ("transform", transform, transform::validate),
    ];
    for (field, document, validate) in documents {
        let Some(document) = document else { continue };
        if serde_json::to_string(document).map_or(0, |text| text.len()) > MAX_RULE_BYTES {
            return Err(ApiError::validation(field, format!("at most {} KiB of JSON", MAX_RULE_BYTES / 1024)));
        }
        validate(document).map_err(|e| at(field, e))?;
    }
    Ok(())
}

/// Sets (or with `null` clears) an endpoint's own retry schedule; left out, it is kept.
pub(crate) fn apply_waits(given: Patch<RetryWaits>, schedule: &mut Option<Vec<std::time::Duration>>) {
    let mut waits = schedule.take().map(RetryWaits);
    given.apply_opt(&mut waits);
    *schedule = waits.map(|w| w.0);
}

/// A `whsec_` secret or `whsk_` key pair given in the body's `field`.
pub(crate) fn parse_secret(field: &str, raw: &str) -> ApiResult<Secret> {
    Secret::parse(raw).map_err(|e| ApiError::validation(field, e.to_string()))
}

/// Create an endpoint.
///
/// Its signing secret is the one given, or a new one; the answer does not hold it.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/endpoint",
    tag = "Endpoint",
    operation_id = "v1.endpoint.create",
    params(AppPath),
    request_body = EndpointIn,
    responses(
        (status = 201, description = "The endpoint created", body = EndpointOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application", body = ErrorBody),
        (status = 409, description = "An endpoint with this uid already exists in this application", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    t: Tenant,
    Json(input): Json<EndpointIn>,
) -> ApiResult<impl IntoResponse> {
    let input = input.with_svix_names();
    let secret = match &input.secret {
        Some(raw) => parse_secret("secret", raw)?,
        None => Secret::generate(s.0.default_signature_type),
    };
    let now = super::now();
    let polling = input.polling.unwrap_or(false);
    if polling && super::source::owned_by_source(&t.app) {
        return Err(ApiError::validation("polling", "an inbound source's application takes URL destinations only"));
    }
    let mut ep = Endpoint {
        uid: input.uid,
        description: input.description,
        version: input.version.unwrap_or(1),
        filter_types: input.filter_types,
        channels: input.channels,
        disabled: input.disabled,
        rate_limit: input.rate_limit,
        metadata: input.metadata,
        headers: input.headers.unwrap_or_default(),
        paused: input.paused.unwrap_or(false),
        polling,
        ..Endpoint::new(t.app.id.clone(), String::new(), secret.expose(), now)
    };
    ep.url = given_url(&ep, input.url, &t.principal)?;
    input.payload_filter.apply_opt(&mut ep.payload_filter);
    input.transform.apply_opt(&mut ep.transform);
    input.ordering.apply_or_default(&mut ep.order);
    apply_waits(input.retry_schedule, &mut ep.retry_schedule);
    validate(&ep)?;
    check_header_sizes(None, &ep.headers)?;
    let start = if ep.polling { super::poller::start_to_record(&s).await } else { None };
    s.0.store.create_endpoint(ep.clone()).await.map_err(conflict(UID_TAKEN))?;
    super::poller::record_start(&s, &ep, start).await;
    operational::endpoint_changed(&s, operational::ENDPOINT_CREATED, &t.app, &ep);
    Ok((StatusCode::CREATED, axum::Json(EndpointOut::new(&s, ep, &t.principal))))
}

/// List the application's endpoints, oldest first unless asked otherwise.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint",
    tag = "Endpoint",
    operation_id = "v1.endpoint.list",
    params(
        AppPath,
        PageOldestFirst,
    ),
    responses(
        (status = 200, description = "A page of endpoints", body = ListResponse<EndpointOut>),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list(State(s): State<AppState>, t: Tenant, q: Query) -> ApiResult<axum::Json<ListResponse<EndpointOut>>> {
    let page = page_request(&q, false)?;
    let page = s.0.store.list_endpoints(&t.app.id, &page).await?;
    Ok(axum::Json(ListResponse::from_page(page, |e| e.id.clone(), |e| EndpointOut::new(&s, e, &t.principal))))
}

/// An endpoint that takes deliveries: a resend, recovery or replay to a disabled one would
/// be given up at once and recorded failed (a delivered message then showing as failed).
pub fn require_enabled(ep: &Endpoint) -> ApiResult<()> {
    require_sent_to(ep)?;
    refuse_disabled(ep)
}

/// A disabled endpoint takes nothing, nor is it read (a polling one): 409.
pub(crate) fn refuse_disabled(ep: &Endpoint) -> ApiResult<()> {
    if ep.disabled {
        return Err(ApiError::Conflict("the endpoint is disabled: enable it first".into()));
    }
    Ok(())
}

/// Loads `{endpoint_id}` (id or uid) within the tenant's application.
pub async fn find(s: &AppState, t: &Tenant, key: &str) -> ApiResult<Endpoint> {
    s.0.store.get_endpoint(&t.app.id, key).await?.ok_or(ApiError::NotFound("endpoint"))
}

/// Loads `{endpoint_id}` as [`find`] does, for an operation on what is sent to it: refused
/// (409) for a polling endpoint.
pub async fn find_sent_to(s: &AppState, t: &Tenant, key: &str) -> ApiResult<Endpoint> {
    let ep = find(s, t, key).await?;
    require_sent_to(&ep)?;
    Ok(ep)
}

/// Get an endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get",
    params(EndpointPath),
    responses(
        (status = 200, description = "The endpoint", body = EndpointOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, ep)): Path<(String, String)>,
) -> ApiResult<axum::Json<EndpointOut>> {
    Ok(axum::Json(EndpointOut::new(&s, find(&s, &t, &ep).await?, &t.principal)))
}

/// What a change to an endpoint is compared with: what it was before.
#[derive(Clone)]
pub(crate) struct Before {
    pub disabled: bool,
    pub paused: bool,
    /// The version changed: saved only if the endpoint is still that version.
    pub updated_at: DateTime<Utc>,
    /// What deliveries held in memory send of it (see [`as_sent`]): its URL and headers
    /// among them.
    pub sent: Endpoint,
}

impl Before {
    pub(crate) fn of(ep: &Endpoint) -> Before {
        Before { disabled: ep.disabled, paused: ep.paused, updated_at: ep.updated_at, sent: as_sent(ep) }
    }
}

/// The endpoint as the deliveries held in memory use it to send (its URL, headers,
/// secrets, transform and transformation, OAuth and mTLS settings, rate and order): a
/// change to any of these reaches them ([`Stop::Changed`]); one to its description,
/// metadata, filters (applied when a message fans out) or uid does not need to, nor does a
/// `PUT` of the same settings (each would hand back every delivery held, to be claimed and
/// transformed again).
fn as_sent(ep: &Endpoint) -> Endpoint {
    Endpoint {
        uid: None,
        description: String::new(),
        version: 0,
        filter_types: None,
        channels: None,
        disabled: false,
        paused: false,
        metadata: Default::default(),
        failing_since: None,
        updated_at: ep.created_at,
        payload_filter: None,
        ..ep.clone()
    }
}

/// Why a change read from one version of an endpoint is not saved over another.
pub(crate) const CHANGED_MEANWHILE: &str =
    "the endpoint changed while this request was made (its secret rotated, or it was disabled): send it again";

/// Maps a store error of an endpoint's save: a taken uid, or a version changed meanwhile.
pub(crate) fn save_error(e: hooklane_store::StoreError) -> ApiError {
    match e {
        hooklane_store::StoreError::Changed => ApiError::Conflict(CHANGED_MEANWHILE.into()),
        other => conflict(UID_TAKEN)(other),
    }
}

/// The `updated_at` of a change written at `now` to the version `read_at`: later than it
/// even within its millisecond, so that a change read from that version sees it changed.
pub(crate) fn next_version(now: DateTime<Utc>, read_at: DateTime<Utc>) -> DateTime<Utc> {
    now.max(read_at + chrono::TimeDelta::milliseconds(1))
}

/// Saves an endpoint after a change; re-enabling it starts its failure streak afresh.
pub(crate) async fn save(s: &AppState, t: &Tenant, mut ep: Endpoint, before: Before) -> ApiResult<Endpoint> {
    touch(&mut ep, before.disabled, next_version(super::now(), before.updated_at));
    let moved = drop_credentials_if_moved(&mut ep, &before);
    validate(&ep)?;
    if ep.headers != before.sent.headers {
        check_header_sizes(Some(&before.sent.headers), &ep.headers)?;
    }
    s.0.store.update_endpoint(ep.clone(), Some(before.updated_at)).await.map_err(save_error)?;
    forget_credentials(s, &ep, moved).await;
    after_update(s, Some(&t.app), &ep, before);
    Ok(ep)
}

/// A URL's origin as `scheme://host[:port]` (the port when not the scheme's own).
pub(crate) fn origin(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|u| u.origin().ascii_serialization())
}

/// Which credentials an endpoint lost by moving.
#[derive(Clone, Copy, Default)]
pub(crate) struct Moved {
    oauth: bool,
    mtls: bool,
}

/// An endpoint moved to another origin (scheme, host, port) loses its OAuth and mTLS
/// settings: whoever may change its URL may not see them. (They no longer apply anyway:
/// they are bound to the origin they were set for.) Their store writes are
/// [`forget_credentials`], after the endpoint's own.
pub(crate) fn drop_credentials_if_moved(ep: &mut Endpoint, before: &Before) -> Moved {
    if origin(&ep.url) == origin(&before.sent.url) {
        return Moved::default();
    }
    Moved { oauth: ep.oauth.take().is_some(), mtls: ep.mtls.take().is_some() }
}

/// Removes from the store the credentials a moved endpoint lost (not those set for its new
/// origin meanwhile). A failure is only logged: they no longer apply (they are bound to
/// the origin they were set for), and the endpoint itself is saved.
pub(crate) async fn forget_credentials(s: &AppState, ep: &Endpoint, moved: Moved) {
    if !moved.oauth && !moved.mtls {
        return;
    }
    let here = origin(&ep.url).unwrap_or_default();
    if let Err(e) = s.0.store.forget_endpoint_credentials(&ep.app_id, &ep.id, &here).await {
        tracing::warn!(endpoint_id = %ep.id, error = %e, "a moved endpoint's credentials were not removed");
    }
}

/// An endpoint's credentials, which have writes of their own.
pub(crate) enum Credentials {
    Oauth(Option<hooklane_core::oauth::EndpointOauth>),
    Mtls(Option<hooklane_core::model::EndpointMtls>),
}

/// Saves `ep`'s OAuth or mTLS settings by their own write (nothing else of the endpoint is
/// written back: a change read before it must not undo it), and tells of the change as any
/// endpoint change is told.
pub(crate) async fn save_credentials(s: &AppState, t: &Tenant, mut ep: Endpoint, set: Credentials) -> ApiResult<()> {
    let before = Before::of(&ep);
    ep.updated_at = next_version(super::now(), before.updated_at);
    match set {
        Credentials::Oauth(oauth) => {
            s.0.store.set_endpoint_oauth(&ep.app_id, &ep.id, oauth.as_ref(), ep.updated_at).await?;
            ep.oauth = oauth;
        }
        Credentials::Mtls(mtls) => {
            s.0.store.set_endpoint_mtls(&ep.app_id, &ep.id, mtls.as_ref(), ep.updated_at).await?;
            ep.mtls = mtls;
        }
    }
    after_update(s, Some(&t.app), &ep, before);
    Ok(())
}

/// Removes the endpoint's settings of `kind`'s kind (`kind` holds `None`), if it has them.
pub(crate) async fn remove_credentials(s: &AppState, t: &Tenant, key: &str, kind: Credentials) -> ApiResult<()> {
    let ep = find(s, t, key).await?;
    let held = match &kind {
        Credentials::Oauth(_) => ep.oauth.is_some(),
        Credentials::Mtls(_) => ep.mtls.is_some(),
    };
    if held {
        save_credentials(s, t, ep, kind).await?;
    }
    Ok(())
}

/// Readies a changed endpoint to be saved: re-enabling it forgets since when it failed.
pub(crate) fn touch(ep: &mut Endpoint, was_disabled: bool, now: DateTime<Utc>) {
    if was_disabled && !ep.disabled {
        ep.failing_since = None;
    }
    ep.updated_at = now;
}

/// What follows every saved change to an endpoint (through its own routes, or as an
/// inbound source's destination): its waiting deliveries are worth trying at once (a fixed
/// URL, re-enabled), and operational webhooks of `app` tell of the change.
pub(crate) fn after_update(s: &AppState, app: Option<&Application>, ep: &Endpoint, before: Before) {
    s.0.dispatcher.endpoint_fixed(&ep.id);
    if before.paused && !ep.paused {
        s.0.dispatcher.endpoint_resumed(&ep.id);
    } else if ep.paused && !before.paused {
        s.0.dispatcher.stop_soon(Stop::Paused { endpoint_id: ep.id.clone(), version: ep.updated_at });
    }
    // Disabled through the API: what any node holds for it, read before, is not sent.
    if ep.disabled && !before.disabled {
        s.0.dispatcher.stop_soon(Stop::Disabled { endpoint_id: ep.id.clone(), version: ep.updated_at });
    } else if ep.updated_at != before.updated_at && as_sent(ep) != before.sent {
        // Any other change (a URL given up, headers, credentials, a transformation): what
        // any node holds for it, read before, is read again as it now stands.
        s.0.dispatcher.stop_soon(Stop::Changed { endpoint_id: ep.id.clone(), version: ep.updated_at });
    }
    let Some(app) = app else { return };
    operational::endpoint_changed(s, operational::ENDPOINT_UPDATED, app, ep);
    if ep.disabled && !before.disabled {
        operational::endpoint_changed(s, operational::ENDPOINT_DISABLED, app, ep);
    } else if before.disabled && !ep.disabled {
        operational::endpoint_changed(s, operational::ENDPOINT_ENABLED, app, ep);
    }
}

/// Update an endpoint: replace its settings with the body's, or create it.
///
/// `headers`, `version`, `payloadFilter`, `transform` and `ordering` left out are kept, and
/// so is `uid` when the endpoint is addressed by it; `secret` is ignored. A path naming no
/// endpoint by a uid (not an endpoint id) creates one with that uid, answered 201, as Svix's
/// `upsert` does; a `uid` in the body must then be the same.
#[utoipa::path(
    put,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    tag = "Endpoint",
    operation_id = "v1.endpoint.update",
    params(EndpointPath),
    request_body = EndpointIn,
    responses(
        (status = 200, description = "The endpoint updated", body = EndpointOut),
        (status = 201, description = "Created under the uid of the path", body = EndpointOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, or no such endpoint and the path is an endpoint id", body = ErrorBody),
        (status = 409, description = "An endpoint with this uid already exists in this application", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn put(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<EndpointIn>,
) -> ApiResult<axum::response::Response> {
    let input = input.with_svix_names();
    // Two PUTs creating one uid at once: the one whose creation finds the uid taken updates
    // what the other created, as a PUT finding it would have.
    let mut exists = false;
    for _ in 0..2 {
        if s.0.store.get_endpoint(&t.app.id, &key).await?.is_some() {
            exists = true;
            break;
        }
        // (An endpoint id cannot be chosen: it is not found.)
        if ids::has_prefix(&key, ids::ENDPOINT) {
            return Err(ApiError::NotFound("endpoint"));
        }
        if input.uid.as_deref().is_some_and(|uid| uid != key) {
            return Err(ApiError::validation("uid", "must be the endpoint's uid named in the path"));
        }
        let new = EndpointIn { uid: Some(key.clone()), ..input.clone() };
        match create(State(s.clone()), t.clone(), Json(new)).await {
            Err(ApiError::Conflict(why)) if why == UID_TAKEN => continue,
            created => return created.map(IntoResponse::into_response),
        }
    }
    if !exists {
        return Err(ApiError::Conflict(UID_TAKEN.into()));
    }
    let principal = t.principal.clone();
    let saved = change_and_save(&s, &t, &key, |ep| {
        let input = input.clone();
        same_polling(ep, input.polling)?;
        ep.url = given_url(ep, input.url, &principal)?;
        ep.description = input.description;
        ep.filter_types = input.filter_types;
        ep.channels = input.channels;
        ep.disabled = input.disabled;
        ep.rate_limit = input.rate_limit;
        ep.metadata = input.metadata;
        // Addressed by its uid, a body without one keeps it (PUT stays repeatable).
        if input.uid.is_some() || ep.uid.as_deref() != Some(key.as_str()) {
            ep.uid = input.uid;
        }
        if let Some(v) = input.version {
            ep.version = v;
        }
        if let Some(h) = input.headers {
            ep.headers = h;
        }
        input.payload_filter.apply_opt(&mut ep.payload_filter);
        input.transform.apply_opt(&mut ep.transform);
        input.ordering.apply_or_default(&mut ep.order);
        apply_waits(input.retry_schedule, &mut ep.retry_schedule);
        if let Some(paused) = input.paused {
            ep.paused = paused;
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(EndpointOut::new(&s, saved, &t.principal)).into_response())
}

/// How many times a PUT or PATCH reads, changes and saves an endpoint that other changes
/// keep overtaking (see [`change_and_save`]) before it answers 409.
const SAVE_ROUNDS: usize = 10;

/// Reads the endpoint `key`, applies `change` and saves it over the version read. When
/// another change overtook it meanwhile (a secret rotated, the dispatcher disabled it,
/// another request saved it), the request is applied again to what is stored now: what it
/// sets wins, what it leaves alone is the latest, and nothing read before the other change
/// is written back over it.
async fn change_and_save(
    s: &AppState,
    t: &Tenant,
    key: &str,
    change: impl Fn(&mut Endpoint) -> ApiResult<()>,
) -> ApiResult<Endpoint> {
    let mut round = 1;
    loop {
        let mut ep = find(s, t, key).await?;
        let before = Before::of(&ep);
        change(&mut ep)?;
        match save(s, t, ep, before).await {
            Err(ApiError::Conflict(why)) if why == CHANGED_MEANWHILE && round < SAVE_ROUNDS => round += 1,
            saved => return saved,
        }
    }
}

/// Partially update an endpoint: change only the fields given.
#[utoipa::path(
    patch,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    tag = "Endpoint",
    operation_id = "v1.endpoint.patch",
    params(EndpointPath),
    request_body = EndpointPatch,
    responses(
        (status = 200, description = "The endpoint updated", body = EndpointOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 409, description = "An endpoint with this uid already exists in this application", body = ErrorBody),
        (status = 422, description = "A field is not valid, or `null` for one that cannot be unset", body = ErrorBody),
    )
)]
pub async fn patch(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(p): Json<EndpointPatch>,
) -> ApiResult<axum::Json<EndpointOut>> {
    let p = p.with_svix_names();
    if !matches!(p.secret, Patch::Absent) {
        return Err(ApiError::validation("secret", "is changed with POST …/secret/rotate (its `key`), not by a patch"));
    }
    let principal = t.principal.clone();
    let saved = change_and_save(&s, &t, &key, |ep| {
        let p = p.clone();
        same_polling(ep, p.polling)?;
        match p.url {
            Patch::Set(url) => ep.url = given_url(ep, Some(url), &principal)?,
            other => other.apply("url", &mut ep.url)?,
        }
        p.description.apply("description", &mut ep.description)?;
        p.filter_types.apply_opt(&mut ep.filter_types);
        p.channels.apply_opt(&mut ep.channels);
        p.disabled.apply("disabled", &mut ep.disabled)?;
        p.rate_limit.apply_opt(&mut ep.rate_limit);
        p.metadata.apply("metadata", &mut ep.metadata)?;
        p.uid.apply_opt(&mut ep.uid);
        p.version.apply("version", &mut ep.version)?;
        p.headers.apply("headers", &mut ep.headers)?;
        p.payload_filter.apply_opt(&mut ep.payload_filter);
        p.transform.apply_opt(&mut ep.transform);
        p.ordering.apply_or_default(&mut ep.order);
        apply_waits(p.retry_schedule, &mut ep.retry_schedule);
        p.paused.apply("paused", &mut ep.paused)?;
        Ok(())
    })
    .await?;
    Ok(axum::Json(EndpointOut::new(&s, saved, &t.principal)))
}

/// Delete an endpoint.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    tag = "Endpoint",
    operation_id = "v1.endpoint.delete",
    params(EndpointPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let ep = find(&s, &t, &key).await?;
    s.0.store.delete_endpoint(&t.app.id, &ep.id).await.map_err(missing("endpoint"))?;
    // What any node holds for it in memory is not sent after the answer.
    s.0.dispatcher.stop(Stop::Deleted(ep.id.clone())).await;
    operational::endpoint_changed(&s, operational::ENDPOINT_DELETED, &t.app, &ep);
    Ok(StatusCode::NO_CONTENT)
}

/// Svix's `EndpointSecretOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SecretOut {
    /// What the endpoint's receiver checks signatures with: its `whsec_` secret, or for an
    /// Ed25519 endpoint the `whpk_` public key of its key pair (the `whsk_` key never
    /// leaves hooklane).
    #[schema(example = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")]
    key: String,
}

/// Get the key the endpoint's deliveries are checked with: its signing secret (`whsec_…`),
/// or the public key (`whpk_…`) of an Ed25519 endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-secret",
    params(EndpointPath),
    responses(
        (status = 200, description = "The current secret (the `whpk_` public key of an Ed25519 endpoint)", body = SecretOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
    )
)]
pub async fn get_secret(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<SecretOut>> {
    Ok(axum::Json(SecretOut { key: published_key(&find(&s, &t, &key).await?.secret) }))
}

/// Svix's `EndpointStats`: the endpoint's deliveries by how they stand.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointStatsOut {
    success: u64,
    pending: u64,
    sending: u64,
    fail: u64,
    /// Not sent on purpose: cancelled by the endpoint's transformation.
    canceled: u64,
}

/// Get the endpoint's delivery statistics: its deliveries counted by status.
///
/// Only deliveries last changed in `[since, until)` are counted when those are given.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/stats",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-stats",
    params(
        EndpointPath,
        ("since" = Option<DateTime<Utc>>, Query, description = "Count only deliveries last changed at or after this time (RFC 3339)"),
        ("until" = Option<DateTime<Utc>>, Query, description = "Count only deliveries last changed before this time (RFC 3339)"),
    ),
    responses(
        (status = 200, description = "The counts", body = EndpointStatsOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 422, description = "`since` or `until` is not an RFC 3339 time", body = ErrorBody),
    )
)]
pub async fn stats(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<EndpointStatsOut>> {
    let ep = find(&s, &t, &key).await?;
    // (Both bounds rounded up to the stored millisecond: `since` is inclusive, `until` not.)
    let ceil = super::message::ceil_to_millis;
    let (since, until) = (q.time("since")?.map(ceil), q.time("until")?.map(ceil));
    let st = s.0.store.endpoint_stats(&t.app.id, &ep.id, since, until).await?;
    Ok(axum::Json(EndpointStatsOut {
        success: st.success,
        pending: st.pending,
        sending: st.sending,
        fail: st.fail,
        canceled: st.canceled,
    }))
}

/// Svix's `EndpointAttemptStats`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptStatsOut {
    success: u64,
    fail: u64,
    /// Cancelled by the endpoint's transformation (nothing was sent).
    canceled: u64,
}

/// Get the endpoint's attempt statistics: its attempts that succeeded and failed.
///
/// Counts the attempts made in `[since, until)`: by default the 28 days up to now. Unlike
/// Svix, hooklane does not round the window to whole hours.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/attempt-stats",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-attempt-stats",
    params(
        EndpointPath,
        ("since" = Option<DateTime<Utc>>, Query, description = "Count attempts made at or after this time (RFC 3339); 28 days before `until` by default"),
        ("until" = Option<DateTime<Utc>>, Query, description = "Count attempts made before this time (RFC 3339); now by default"),
    ),
    responses(
        (status = 200, description = "The counts", body = AttemptStatsOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 422, description = "`since` or `until` is not an RFC 3339 time, or `until` is not after `since`", body = ErrorBody),
    )
)]
pub async fn attempt_stats(
    State(s): State<AppState>,
    t: Tenant,
    q: Query,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<AttemptStatsOut>> {
    let ep = find(&s, &t, &key).await?;
    let until = q.time("until")?.unwrap_or_else(Utc::now);
    let since = q.time("since")?.unwrap_or(until - chrono::Duration::days(28));
    let window = (until - since).to_std().ok().filter(|w| !w.is_zero());
    let Some(window) = window else { return Err(ApiError::bad_query("until", "must be after since")) };
    // One slice as long as the window: at most two slices, whatever their alignment.
    let slices = s.0.store.attempt_timeline(&t.app.id, Some(&ep.id), since, until, window).await?;
    Ok(axum::Json(AttemptStatsOut {
        success: slices.iter().map(|b| b.succeeded).sum(),
        fail: slices.iter().map(|b| b.failed).sum(),
        canceled: slices.iter().map(|b| b.canceled).sum(),
    }))
}

/// Svix's `EndpointSecretRotateIn`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateIn {
    /// The new secret (`whsec_`, or a `whsk_` Ed25519 key pair, as on creation); when absent,
    /// a new one of the same kind as the current one.
    #[serde(default)]
    key: Option<String>,
    /// How long the old secret keeps signing beside the new one (default 24 hours; 0: not
    /// at all).
    #[serde(default, rename = "gracePeriodSeconds")]
    #[schema(maximum = 604800)]
    grace_period_seconds: Option<u32>,
}

/// Rotate the endpoint's signing secret.
///
/// The new secret is the one given, or a new one. The old one keeps signing every delivery
/// beside it for the grace period (24 hours by default), so that receivers can switch over.
/// Answers the new secret (the public key of an Ed25519 one), as Svix does (older SDKs ignore
/// the body). The body may be left out.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
    tag = "Endpoint",
    operation_id = "v1.endpoint.rotate-secret",
    params(EndpointPath),
    request_body(
        content = RotateIn,
        description = "May be left out: a new secret of the endpoint's kind is generated, and the old one signs for 24 hours"
    ),
    responses(
        (status = 200, description = "The new secret (the `whpk_` public key of an Ed25519 one)", body = SecretOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 422, description = "`key` is not a valid secret, or the grace period is too long", body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<RotateIn>,
) -> ApiResult<axum::Json<SecretOut>> {
    let mut ep = find(&s, &t, &key).await?;
    let (given, grace_seconds) = body.map_or((None, None), |b| (b.key, b.grace_period_seconds));
    let new = match given {
        Some(raw) => parse_secret("key", &raw)?,
        None => {
            Secret::generate(Secret::parse(&ep.secret).map_or(s.0.default_signature_type, |old| old.signature_type()))
        }
    };
    if grace_seconds.is_some_and(|g| g > MAX_GRACE_SECONDS) {
        return Err(ApiError::validation("gracePeriodSeconds", format!("must be at most {MAX_GRACE_SECONDS}")));
    }
    let grace = grace_seconds
        .map_or(chrono::Duration::hours(ROTATION_OVERLAP_HOURS), |s| chrono::Duration::seconds(i64::from(s)));
    let now = super::now();
    ep.previous_secrets.retain(|p| p.expires_at > now);
    // Every live secret signs every delivery: beyond a few, those whose grace ends soonest
    // go first (grace periods differ between rotations: a week's, given first, must not go
    // before the hour's given after it).
    while ep.previous_secrets.len() >= MAX_PREVIOUS_SECRETS {
        let soonest = (0..ep.previous_secrets.len()).min_by_key(|&i| ep.previous_secrets[i].expires_at).unwrap_or(0);
        ep.previous_secrets.remove(soonest);
    }
    let old = std::mem::replace(&mut ep.secret, new.expose());
    if grace > chrono::Duration::zero() {
        ep.previous_secrets.push(ExpiringSecret { key: old, expires_at: now + grace });
    }
    let read_at = ep.updated_at;
    ep.updated_at = next_version(now, read_at);
    let (id, version) = (ep.id.clone(), ep.updated_at);
    s.0.store.update_endpoint(ep, Some(read_at)).await.map_err(save_error)?;
    // Deliveries held in memory are signed again with the secrets as they now stand (an
    // old one given no grace, a key thought leaked, signs nothing more).
    s.0.dispatcher.stop_soon(Stop::Changed { endpoint_id: id, version });
    Ok(axum::Json(SecretOut { key: new.verification_key() }))
}

/// Svix's `EndpointHeadersOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct HeadersOut {
    headers: BTreeMap<String, String>,
    /// Svix's; hooklane hides no header, so always empty.
    sensitive: Vec<String>,
}

/// Svix's `EndpointHeadersIn` and `EndpointHeadersPatchIn`: at most 32 headers in all, none
/// of those hooklane sets itself (`webhook-*`, `content-type`, …) or that control the
/// connection.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeadersIn {
    headers: BTreeMap<String, Option<String>>,
    /// Svix's `EndpointHeadersPatchIn.deleteHeaders`: names of headers to remove (in any
    /// case), as a `null` value does; on a `PATCH` only.
    #[serde(default)]
    delete_headers: Option<Vec<String>>,
}

/// Get the custom headers sent with every delivery to the endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-headers",
    params(EndpointPath),
    responses(
        (status = 200, description = "The custom headers", body = HeadersOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
    )
)]
pub async fn get_headers(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<HeadersOut>> {
    Ok(axum::Json(HeadersOut { headers: find(&s, &t, &key).await?.headers, sensitive: Vec::new() }))
}

/// Set the endpoint's custom headers, replacing all of them.
///
/// A header whose value is `null` is left out.
#[utoipa::path(
    put,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "Endpoint",
    operation_id = "v1.endpoint.update-headers",
    params(EndpointPath),
    request_body = HeadersIn,
    responses(
        (status = 204, description = "Headers replaced"),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 422, description = "A header is not valid, or is one hooklane sets itself", body = ErrorBody),
    )
)]
pub async fn put_headers(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<HeadersIn>,
) -> ApiResult<StatusCode> {
    if input.delete_headers.is_some() {
        return Err(ApiError::validation("deleteHeaders", "is for a PATCH: a PUT sets every header"));
    }
    let headers: BTreeMap<String, String> = input.headers.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect();
    change_and_save(&s, &t, &key, |ep| {
        ep.headers = headers.clone();
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change some of the endpoint's custom headers.
///
/// Each header given replaces the one of the same name (in any case); a `null` value, or the
/// name in `deleteHeaders`, removes it. Headers not named are kept.
#[utoipa::path(
    patch,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "Endpoint",
    operation_id = "v1.endpoint.patch-headers",
    params(EndpointPath),
    request_body = HeadersIn,
    responses(
        (status = 204, description = "Headers changed"),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 422, description = "A header is not valid, or is one hooklane sets itself", body = ErrorBody),
    )
)]
pub async fn patch_headers(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<HeadersIn>,
) -> ApiResult<StatusCode> {
    let deleted = input.delete_headers.unwrap_or_default();
    change_and_save(&s, &t, &key, |ep| {
        for name in &deleted {
            ep.headers.retain(|stored, _| !stored.eq_ignore_ascii_case(name));
        }
        for (name, value) in &input.headers {
            // A header named in any case replaces (or, with null, removes) the one stored.
            ep.headers.retain(|stored, _| !stored.eq_ignore_ascii_case(name));
            if let Some(v) = value {
                ep.headers.insert(name.clone(), v.clone());
            }
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Svix's `RecoverIn` and `ReplayIn`: the messages concerned are those created in
/// `[since, until)`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverIn {
    since: DateTime<Utc>,
    /// Now when left out; must be after `since`.
    #[serde(default)]
    until: Option<DateTime<Utc>>,
}

impl RecoverIn {
    /// The window, checked: `until` left out is the request's time (`asked`), however long
    /// the task waits or runs (what fails or is posted meanwhile is not its business).
    fn window(&self, asked: DateTime<Utc>) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
        window(self.since, self.until, asked)
    }
}

/// A window of messages' times asked for as `since` (inclusive) and `until` (exclusive, the
/// request's time, `asked`, when left out), checked, each rounded up to the millisecond the
/// store keeps times to (a message of `.123` is not since `.1235`, and is before it).
pub(super) fn window(
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    asked: DateTime<Utc>,
) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let ceil = super::message::ceil_to_millis;
    match until {
        Some(until) if until <= since => Err(ApiError::validation("until", "must be after since")),
        Some(until) => Ok((ceil(since), ceil(until))),
        // (A `since` ahead of this clock: nothing to look at, no error.)
        None => Ok((ceil(since), ceil(asked.max(since)))),
    }
}

/// Svix's background-task answers (`RecoverOut`, `ReplayOut`, …): the task as it stood
/// when answered (see [`crate::tasks`]).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOut {
    #[schema(example = "qtask_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    id: String,
    /// `finished`, or `running` when the work took longer than the server waits
    /// (`task_wait`): `GET /background-task/{task_id}` then follows it. Work that fails
    /// within the wait answers its error instead.
    #[schema(example = "finished")]
    status: String,
    /// `endpoint.recover`, `endpoint.replay`, `endpoint.bulk-replay` or
    /// `application.purge_content`.
    #[schema(example = "endpoint.recover")]
    task: String,
    /// Deliveries queued again by a finished recovery (hooklane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<u64>,
    /// Deliveries queued by a finished replay (hooklane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<u64>,
    /// Messages whose content was deleted by a finished purge (hooklane extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    expunged: Option<u64>,
    updated_at: DateTime<Utc>,
}

impl From<BackgroundTask> for TaskOut {
    fn from(t: BackgroundTask) -> Self {
        let count = |key: &str| t.data.get(key).and_then(serde_json::Value::as_u64);
        TaskOut {
            recovered: count("recovered"),
            replayed: count("replayed"),
            expunged: count("expunged"),
            id: t.id,
            status: t.status,
            task: t.task,
            updated_at: t.updated_at,
        }
    }
}

impl TaskOut {
    /// Starts the application's task `kind` (on the endpoint `endpoint_id`, for an
    /// endpoint's task) doing `work`, whose count is recorded under `counted`, and answers
    /// it as it stands (see [`crate::tasks::run`]).
    pub(crate) async fn start<F>(
        s: &AppState,
        app_id: &str,
        kind: &str,
        endpoint_id: Option<&str>,
        counted: &'static str,
        work: F,
    ) -> ApiResult<(StatusCode, axum::Json<TaskOut>)>
    where
        F: std::future::Future<Output = ApiResult<u64>> + Send + 'static,
    {
        let mut data = serde_json::Map::new();
        if let Some(id) = endpoint_id {
            data.insert("endpointId".to_string(), id.into());
        }
        // An endpoint's task sends messages again: Svix's clients read how many as
        // `messagesSent`.
        let sends = endpoint_id.is_some();
        let work = async move {
            work.await.map(|n| {
                let mut counts = serde_json::Map::from_iter([(counted.to_string(), n.into())]);
                if sends {
                    counts.insert("messagesSent".to_string(), n.into());
                }
                counts
            })
        };
        let task = crate::tasks::run(s, app_id, kind, data, work).await?;
        Ok((StatusCode::ACCEPTED, axum::Json(task.into())))
    }
}

/// Recover failed messages: queue again every failed delivery to the endpoint.
///
/// Only deliveries of messages created in `[since, until)` (until the request when `until`
/// is left out) are queued. The answer is the task, `finished` unless the work outlasts the
/// server's `task_wait` (then `running`, and it goes on).
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/recover",
    tag = "Endpoint",
    operation_id = "v1.endpoint.recover",
    params(EndpointPath),
    request_body = RecoverIn,
    responses(
        (status = 202, description = "The task: `finished` with `recovered` (deliveries queued again), or `running` past `task_wait`", body = TaskOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled", body = ErrorBody),
        (status = 422, description = "`since` is missing, or `until` is not after it", body = ErrorBody),
    )
)]
pub async fn recover(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<RecoverIn>,
) -> ApiResult<impl IntoResponse> {
    let ep = find(&s, &t, &key).await?;
    require_enabled(&ep)?;
    let (since, until) = input.window(super::now())?;
    let (state, app_id, ep_id) = (s.clone(), t.app.id.clone(), ep.id.clone());
    let work = async move {
        // In rounds, so that other writes go between them (a year of failures is millions).
        let (mut recovered, mut after) = (0, String::new());
        while crate::tasks::go_on().await {
            let window = (since, Some(until));
            let round = (after.as_str(), RECOVER_CHUNK);
            let (n, last) = state.0.store.recover(&app_id, &ep_id, window, super::now(), round).await?;
            recovered += n;
            // (A round may queue fewer than it looked at, when some of them changed meanwhile:
            // the store says where the next goes on, whatever it queued.)
            match last {
                Some(last) => after = last,
                None => break,
            }
            tokio::task::yield_now().await;
        }
        state.0.dispatcher.endpoint_fixed(&ep_id);
        Ok(recovered)
    };
    TaskOut::start(&s, &t.app.id, "endpoint.recover", Some(&ep.id), "recovered", work).await
}

/// Messages looked at per round of a replay.
const REPLAY_CHUNK: usize = 500;
/// Deliveries queued again per round of a recovery.
const RECOVER_CHUNK: usize = 1000;

/// Replay missing messages: send the endpoint the messages it never got.
///
/// Sends every message of the application created in `[since, until)` (until the request
/// unless given) that the endpoint never got but would get now (created before the endpoint was,
/// or before its filters let it through). Messages it did get are not sent again. The answer
/// is the task, `finished` unless the work outlasts the server's `task_wait` (then
/// `running`, and it goes on).
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/replay-missing",
    tag = "Endpoint",
    operation_id = "v1.endpoint.replay-missing",
    params(EndpointPath),
    request_body = RecoverIn,
    responses(
        (status = 202, description = "The task: `finished` with `replayed` (messages queued), or `running` past `task_wait`", body = TaskOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled", body = ErrorBody),
        (status = 422, description = "`since` is missing, or `until` is not after it", body = ErrorBody),
    )
)]
pub async fn replay_missing(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<RecoverIn>,
) -> ApiResult<impl IntoResponse> {
    let ep = find(&s, &t, &key).await?;
    require_enabled(&ep)?;
    let window = input.window(super::now())?;
    let (state, app_id, endpoint_id) = (s.clone(), t.app.id.clone(), ep.id.clone());
    let work = async move { replay_missing_work(&state, &app_id, &ep.id, window).await };
    TaskOut::start(&s, &t.app.id, "endpoint.replay", Some(&endpoint_id), "replayed", work).await
}

/// Queues the messages created in `[since, until)` that the endpoint never got but would get
/// now; answers how many. The endpoint is read again for each batch: one changed while the
/// task runs (its filters narrowed, disabled, deleted) is replayed as it now is.
async fn replay_missing_work(
    s: &AppState,
    app_id: &str,
    ep_id: &str,
    (since, until): (DateTime<Utc>, DateTime<Utc>),
) -> ApiResult<u64> {
    let (mut replayed, mut after) = (0, None::<String>);
    // (Until its task stops: see `crate::tasks::go_on`.)
    while crate::tasks::go_on().await {
        let store = &s.0.store;
        let Some(ep) = store.get_endpoint(app_id, ep_id).await?.filter(|e| !e.disabled && !e.polling) else { break };
        let now = super::now();
        // (Payloads are read only for a payload filter: the rest of a replay needs none.)
        let with_payload = ep.payload_filter.is_some();
        let batch = store
            .messages_without_delivery(app_id, &ep.id, since, until, after.as_deref(), REPLAY_CHUNK, with_payload)
            .await?;
        let Some(last) = batch.last() else { break };
        after = Some(last.id.clone());
        let wanted: Vec<String> = batch
            .iter()
            .filter(|m| {
                endpoint_wants(ep.filter_types.as_deref(), ep.channels.as_deref(), &m.event_type, m.channels.as_deref())
                    && payload_wanted(ep.payload_filter.as_ref(), &mut LazyPayload::new(&m.payload))
            })
            .map(|m| m.id.clone())
            .collect();
        if !wanted.is_empty() {
            replayed += store.add_deliveries(app_id, &ep.id, wanted, now).await?;
        }
        if batch.len() < REPLAY_CHUNK {
            break;
        }
    }
    if replayed > 0 {
        s.0.dispatcher.wake();
    }
    Ok(replayed)
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list,
        create,
        get,
        put,
        patch,
        delete,
        get_secret,
        rotate_secret,
        get_headers,
        put_headers,
        patch_headers,
        recover,
        replay_missing,
        stats,
        attempt_stats
    ),
    components(schemas(
        EndpointIn,
        EndpointPatch,
        EndpointOut,
        EndpointOrdering,
        SecretOut,
        RotateIn,
        HeadersOut,
        HeadersIn,
        RecoverIn,
        TaskOut,
        EndpointStatsOut,
        AttemptStatsOut
    )),
    modifiers(&RotateBodyOptional)
)]
pub(crate) struct Doc;

/// Marks the rotate operation's body as optional, as `OptionalJson` takes it: `request_body`
/// can only say so with `Option<RotateIn>`, which also allows a JSON `null`, which is refused.
struct RotateBodyOptional;

impl utoipa::Modify for RotateBodyOptional {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let rotate = doc.paths.paths.get_mut("/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate");
        if let Some(body) = rotate.and_then(|item| item.post.as_mut()).and_then(|op| op.request_body.as_mut()) {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_window_without_until_ends_when_asked() {
        let at = |secs| DateTime::from_timestamp(secs, 0).expect("time");
        let open = RecoverIn { since: at(100), until: None };
        assert_eq!(open.window(at(500)).ok(), Some((at(100), at(500))));
        let closed = RecoverIn { since: at(100), until: Some(at(200)) };
        assert_eq!(closed.window(at(500)).ok(), Some((at(100), at(200))));
        assert!(RecoverIn { since: at(100), until: Some(at(100)) }.window(at(500)).is_err());
        assert_eq!(open.window(at(50)).ok(), Some((at(100), at(100))), "asked before since: nothing to look at");
    }
    use super::*;

    /// Headers from before the size limits (longer names, more bytes) may be kept and some
    /// removed; what is set anew is held to the limits.
    #[test]
    fn header_sizes_hold_what_is_set_not_what_was() {
        let big = |n: usize| (0..n).map(|i| (format!("x-{i}"), "v".repeat(4000))).collect::<BTreeMap<_, _>>();
        assert!(check_header_sizes(None, &big(4)).is_ok());
        assert!(check_header_sizes(None, &big(5)).is_err(), "20 KiB set anew");
        let mut old = big(8);
        let long = "x-".repeat(200);
        old.insert(long.clone(), "1".into());
        let mut fewer = old.clone();
        fewer.remove("x-0");
        assert!(check_header_sizes(Some(&old), &fewer).is_ok(), "one removed: smaller, the long name kept");
        let mut more = old.clone();
        more.insert("x-new".into(), "1".into());
        assert!(check_header_sizes(Some(&old), &more).is_err(), "grown past the limit");
        let mut renamed = fewer.clone();
        renamed.insert("y-".repeat(200), "1".into());
        renamed.remove("x-1");
        assert!(check_header_sizes(Some(&old), &renamed).is_err(), "a new name too long");
    }

    /// Each kind of bad header is named for what is wrong with it: a long value is not a bad
    /// name.
    #[test]
    fn header_faults_say_what_is_wrong() {
        let msg =
            |name: &str, value: &str| match check_headers(&BTreeMap::from([(name.to_string(), value.to_string())])) {
                Err(ApiError::Validation { msg, .. }) => msg,
                other => panic!("{name:?}: {other:?}"),
            };
        assert!(msg("x-a", &"v".repeat(4097)).contains("longer than 4096 bytes"));
        assert!(msg("x a", "v").starts_with("invalid header"));
        assert!(msg("x-a", "v\n").starts_with("invalid value for header"));
        assert!(msg("Webhook-Id", "v").contains("cannot be set"));
        assert!(check_headers(&BTreeMap::from([("x-a".to_string(), "v".repeat(4096))])).is_ok());
    }
}
