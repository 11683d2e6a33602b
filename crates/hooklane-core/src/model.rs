//! The records hooklane keeps. Field names follow the Svix vocabulary; the JSON shapes of
//! the public API live in the server crate, so storage can evolve without breaking clients.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub type Metadata = BTreeMap<String, String>;

/// One customer of the sending SaaS.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    pub rate_limit: Option<u32>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Application {
    /// A new application named `name`, made at `at`: no uid, rate limit or metadata.
    pub fn new(name: impl Into<String>, at: DateTime<Utc>) -> Self {
        Application {
            id: crate::ids::new_id(crate::ids::APP),
            uid: None,
            name: name.into(),
            rate_limit: None,
            metadata: Metadata::new(),
            created_at: at,
            updated_at: at,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    /// The flags behind which the event type is hidden (sorted, each once): a token sees it
    /// when it holds one of them. Empty: everyone sees it.
    pub feature_flags: Vec<String>,
    /// The group the event type is shown in (Svix's `groupName`).
    pub group_name: Option<String>,
    pub schemas: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A secret that still signs until `expires_at` (after a rotation).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiringSecret {
    pub key: String,
    pub expires_at: DateTime<Utc>,
}

/// What a `{:?}` of a value holding secrets shows in their place.
const HIDDEN: &str = "<hidden>";

// The key never reaches a log line through `{:?}`.
impl std::fmt::Debug for ExpiringSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpiringSecret").field("key", &HIDDEN).field("expires_at", &self.expires_at).finish()
    }
}

/// A URL of an application with its secret, filters and limits.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub app_id: String,
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub version: i32,
    pub filter_types: Option<Vec<String>>,
    pub channels: Option<Vec<String>>,
    pub disabled: bool,
    pub rate_limit: Option<u32>,
    pub metadata: Metadata,
    pub headers: BTreeMap<String, String>,
    /// `whsec_…`, or a `whsk_…` Ed25519 key pair (shown as its `whpk_…` public key). Kept as
    /// text so the store does not need the signing code.
    pub secret: String,
    pub previous_secrets: Vec<ExpiringSecret>,
    /// Start of the current run of failed attempts; cleared by a success.
    pub failing_since: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// hooklane's own: conditions on the JSON payload that a message must meet to be sent
    /// here, beside `filter_types` and `channels` ([`crate::rules::payload_filter`]).
    pub payload_filter: Option<serde_json::Value>,
    /// hooklane's own: the body sent here instead of the payload, made from it
    /// ([`crate::rules::transform`]).
    pub transform: Option<serde_json::Value>,
    /// hooklane's own: whether messages may be sent here side by side, or one after the
    /// other in the order they were created ([`DeliveryOrder`]).
    pub order: DeliveryOrder,
    /// Svix's endpoint transformation: JavaScript that may change each request's method,
    /// URL, body and headers, or cancel it; `None` until one is set.
    pub transformation: Option<Transformation>,
    /// hooklane's own: the waits between this endpoint's attempts, instead of the server's
    /// `retry_schedule` (`Some(vec![])`: no retry); `None`: the server's.
    pub retry_schedule: Option<Vec<std::time::Duration>>,
    /// Svix's endpoint OAuth: each request carries an access token from the receiver's
    /// authorization server; `None`: none.
    pub oauth: Option<crate::oauth::EndpointOauth>,
    /// hooklane's own: deliveries are made and held, not sent, until it is resumed (then
    /// they go at once, in order); unlike `disabled`, nothing is dropped or failed.
    pub paused: bool,
    /// Svix's endpoint mTLS: the client certificate hooklane presents to the endpoint, and
    /// the CA its certificate must chain to; `None`: none.
    pub mtls: Option<EndpointMtls>,
    /// hooklane's own (Svix's polling endpoints): nothing is sent to it; its messages are
    /// read through `/app/{app_id}/poller/{endpoint_id}`. Its `url` is empty. Set when it
    /// is created, never changed.
    pub polling: bool,
}

/// `url` with the password of its user information, if any, hidden; a user name without a
/// password is hidden whole (a key sent as the Basic user name is a credential too).
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    // (More slashes, or backslashes, after the scheme are skipped by URL parsers, too.)
    let slashes = &rest[..rest.len() - rest.trim_start_matches(['/', '\\']).len()];
    let rest = &rest[slashes.len()..];
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len()));
    match authority.rsplit_once('@').map(|(info, host)| (info.split_once(':').map(|(user, _)| user), host)) {
        Some((Some(user), host)) => format!("{scheme}://{slashes}{user}:{HIDDEN}@{host}{tail}"),
        Some((None, host)) => format!("{scheme}://{slashes}{HIDDEN}@{host}{tail}"),
        None => url.to_string(),
    }
}

// The secret, the values of custom headers (often credentials) and the URL's password never
// reach a log line through `{:?}`; the rest is shown as derived.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&String> = self.headers.keys().collect();
        let url = without_password(&self.url);
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("app_id", &self.app_id)
            .field("uid", &self.uid)
            .field("url", &url)
            .field("description", &self.description)
            .field("version", &self.version)
            .field("filter_types", &self.filter_types)
            .field("channels", &self.channels)
            .field("disabled", &self.disabled)
            .field("rate_limit", &self.rate_limit)
            .field("metadata", &self.metadata)
            .field("header_names", &headers)
            .field("secret", &HIDDEN)
            .field("previous_secrets", &self.previous_secrets)
            .field("failing_since", &self.failing_since)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("payload_filter", &self.payload_filter)
            .field("transform", &self.transform)
            .field("order", &self.order)
            .field("transformation", &self.transformation)
            .field("retry_schedule", &self.retry_schedule)
            .field("oauth", &self.oauth)
            .field("paused", &self.paused)
            .field("mtls", &self.mtls)
            .field("polling", &self.polling)
            .finish()
    }
}

/// Svix's `EndpointMtlsConfigIn`: TLS client authentication to an endpoint.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMtls {
    /// A PEM private key and the X.509 certificate (chain) that goes with it.
    pub identity: String,
    /// A PEM X.509 CA certificate the endpoint's certificate must chain to (instead of the
    /// public roots): for receivers with certificates of their own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ca_cert: Option<String>,
    /// hooklane's own, not part of the API: the origin (`scheme://host[:port]`) of the
    /// endpoint's URL when the settings were set. The identity is presented there only
    /// (not where a transformation sends a request, nor at a URL moved elsewhere).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_origin: String,
}

// The private key never reaches a log line through `{:?}`.
impl std::fmt::Debug for EndpointMtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointMtls").field("server_ca_cert", &self.server_ca_cert.is_some()).finish_non_exhaustive()
    }
}

/// An endpoint's JavaScript transformation (Svix's `EndpointTransformationOut`): a
/// `handler(webhook)` function run before each attempt. Stored as one JSON document.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transformation {
    pub code: Option<String>,
    pub enabled: bool,
    /// Values the code reads as `webhook.variables`, so that a credential need not be
    /// written into the code.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    pub updated_at: DateTime<Utc>,
}

// The variables' values (credentials, often) never reach a log line through `{:?}`.
impl std::fmt::Debug for Transformation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let variables: Vec<&String> = self.variables.keys().collect();
        f.debug_struct("Transformation")
            .field("code", &self.code)
            .field("enabled", &self.enabled)
            .field("variable_names", &variables)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl Transformation {
    /// The code to run before each attempt: set and enabled.
    pub fn active_code(&self) -> Option<&str> {
        self.code.as_deref().filter(|_| self.enabled)
    }
}

/// How an endpoint's deliveries are sent (hooklane's own `ordering` setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryOrder {
    /// Several at once, in no promised order (what Svix and every peer do): a slow or
    /// failing message holds up nothing behind it.
    #[default]
    Concurrent,
    /// Strict FIFO lanes: a message is not sent before every message created before it for
    /// this endpoint with the same ordering key ([`Message::ordering_key`]; messages without
    /// one share a lane) has succeeded or been given up. One per lane is in flight at a time,
    /// and a failing one holds its lane until it succeeds or its retries run out.
    Fifo,
}

impl DeliveryOrder {
    pub fn is_fifo(self) -> bool {
        self == DeliveryOrder::Fifo
    }
}

impl Endpoint {
    /// A new endpoint of `app_id` to `url`, signing with `secret`, made at `at`: enabled,
    /// every event type and channel, no limit, filter, transformation or credentials.
    pub fn new(
        app_id: impl Into<String>,
        url: impl Into<String>,
        secret: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Endpoint {
            id: crate::ids::new_id(crate::ids::ENDPOINT),
            app_id: app_id.into(),
            uid: None,
            url: url.into(),
            description: String::new(),
            version: 1,
            filter_types: None,
            channels: None,
            disabled: false,
            rate_limit: None,
            metadata: Metadata::new(),
            headers: BTreeMap::new(),
            secret: secret.into(),
            previous_secrets: Vec::new(),
            failing_since: None,
            created_at: at,
            updated_at: at,
            payload_filter: None,
            transform: None,
            order: DeliveryOrder::default(),
            transformation: None,
            retry_schedule: None,
            oauth: None,
            paused: false,
            mtls: None,
            polling: false,
        }
    }

    /// Every secret that signs a delivery made at `now`, as stored: the current one, then
    /// rotated-out ones that have not expired yet.
    pub fn live_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &str> {
        std::iter::once(self.secret.as_str())
            .chain(self.previous_secrets.iter().filter(move |s| s.expires_at > now).map(|s| s.key.as_str()))
    }
}

/// One event posted once by the SaaS.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub app_id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    /// The JSON payload exactly as received (signed byte for byte).
    pub payload: String,
    pub channels: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    /// The payload's media type; `None` is `application/json` (every message posted through
    /// the API). Messages forwarded from an inbound source keep the type they arrived with.
    pub content_type: Option<String>,
    /// Headers sent with every delivery of this message (a forwarded inbound request's
    /// informative headers, e.g. `x-github-event`); an endpoint's own headers win over them
    /// and hooklane's (`webhook-*`, `content-type`) over both. Empty for API messages.
    pub headers: BTreeMap<String, String>,
    /// hooklane's own: the message's FIFO lane within each FIFO endpoint. Messages with
    /// different keys are sent to such an endpoint side by side, those with the same key
    /// (or none) one after the other ([`DeliveryOrder::Fifo`]).
    pub ordering_key: Option<String>,
    /// When the message's deliveries were first due, for a message scheduled ahead (Svix's
    /// `deliverAt`): a delivery added to it later (a replay to an endpoint that missed it, a
    /// recovery) is not sent before then either. Written by the store from
    /// `Store::schedule_message`'s time, not from this field; `None` for every other message.
    pub deliver_at: Option<DateTime<Utc>>,
}

impl Message {
    /// A new message of `app_id`, of `event_type`, with the JSON `payload`, made at `at`:
    /// no event id, channels, tags or headers, sent as soon as it is stored.
    pub fn new(
        app_id: impl Into<String>,
        event_type: impl Into<String>,
        payload: impl Into<String>,
        at: DateTime<Utc>,
    ) -> Self {
        Message {
            id: crate::ids::new_id(crate::ids::MESSAGE),
            app_id: app_id.into(),
            event_type: event_type.into(),
            event_id: None,
            payload: payload.into(),
            channels: None,
            tags: None,
            created_at: at,
            content_type: None,
            headers: BTreeMap::new(),
            ordering_key: None,
            deliver_at: None,
        }
    }
}

/// Status codes as in the Svix API (`MessageStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Success = 0,
    Pending = 1,
    Fail = 2,
    Sending = 3,
    /// Not sent on purpose: the endpoint's transformation cancelled it.
    Canceled = 4,
}

impl DeliveryStatus {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Success,
            1 => Self::Pending,
            2 => Self::Fail,
            3 => Self::Sending,
            4 => Self::Canceled,
            _ => return None,
        })
    }
}

/// Why an attempt was made (Svix `MessageAttemptTriggerType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerType {
    Scheduled = 0,
    Manual = 1,
}

impl TriggerType {
    pub fn from_code(code: i64) -> Self {
        if code == 1 {
            Self::Manual
        } else {
            Self::Scheduled
        }
    }
}

/// The state of one message for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub msg_id: String,
    pub endpoint_id: String,
    pub app_id: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub trigger: TriggerType,
    pub updated_at: DateTime<Utc>,
}

/// One HTTP try of one message to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: String,
    pub msg_id: String,
    pub endpoint_id: String,
    pub app_id: String,
    pub url: String,
    pub status: DeliveryStatus,
    /// HTTP status, or 0 when no response was received (timeout, refused, blocked).
    pub response_status: i32,
    /// Response body (capped), or a description of the transport error.
    pub response: String,
    pub duration_ms: i64,
    pub trigger: TriggerType,
    pub created_at: DateTime<Utc>,
    /// The request headers hooklane sent (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`, `content-type`, custom headers…; never a secret), when known:
    /// attempts recorded before hooklane kept them have none.
    pub request_headers: Option<BTreeMap<String, String>>,
}

/// Who a bearer token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    /// A token of one application (an app-portal token or an integration key).
    App {
        app_id: String,
        /// Svix's feature flags of the token: an event type behind a flag (its
        /// `feature_flag`) is visible to the tokens that have that flag only.
        feature_flags: Vec<String>,
        /// What the token may do in its application; `None`: everything.
        capabilities: Option<Vec<Capability>>,
    },
    /// A polling endpoint's key (Svix's poller tokens): it may read that endpoint's messages
    /// through its poller and move its consumers, and nothing else.
    Poller {
        app_id: String,
        endpoint_id: String,
    },
}

/// What an application token may do in its application (Svix's app-portal capabilities).
/// A token issued without any list of them may do everything there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Capability {
    /// Read everything but endpoint secrets. Every list of capabilities holds it.
    ViewBase,
    /// Read endpoint secrets.
    ViewEndpointSecret,
    /// Read and rotate endpoint secrets.
    ManageEndpointSecret,
    /// Change endpoints' JavaScript transformations (hooklane's `transform` templates are
    /// part of the endpoint: `ManageEndpoint`).
    ManageTransformations,
    /// Send messages again: recover, replay, resend, send an example.
    CreateAttempts,
    /// Create, change and delete endpoints, their headers and secrets.
    ManageEndpoint,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::ViewBase,
        Capability::ViewEndpointSecret,
        Capability::ManageEndpointSecret,
        Capability::ManageTransformations,
        Capability::CreateAttempts,
        Capability::ManageEndpoint,
    ];

    /// Every capability that holding `held` gives, those they imply included, in order.
    pub fn expanded(held: &[Capability]) -> Vec<Capability> {
        Capability::ALL.into_iter().filter(|need| held.iter().any(|c| c.implies(*need))).collect()
    }

    /// Whether holding `self` gives what `need` asks for.
    pub fn implies(self, need: Capability) -> bool {
        use Capability::*;
        self == need
            || matches!(
                (self, need),
                (ManageEndpointSecret, ViewEndpointSecret)
                    | (ManageEndpoint, ViewEndpointSecret | ManageEndpointSecret | ManageTransformations)
            )
    }
}

impl Principal {
    /// A token of the application, with no feature flags, that may do everything there.
    pub fn app(app_id: impl Into<String>) -> Principal {
        Principal::App { app_id: app_id.into(), feature_flags: Vec::new(), capabilities: None }
    }

    /// Whether this principal may do an operation that needs `need`; `None` names an
    /// operation outside every capability (posting a message, say), which only the admin
    /// and tokens that may do everything may do.
    pub fn allows(&self, need: Option<Capability>) -> bool {
        match self {
            Principal::Admin | Principal::App { capabilities: None, .. } => true,
            Principal::App { capabilities: Some(held), .. } => {
                need.is_some_and(|need| held.iter().any(|c| c.implies(need)))
            }
            // Its poller's routes are let through by the route itself, not by a capability.
            Principal::Poller { .. } => false,
        }
    }

    /// Whether this principal may touch the application with this id.
    pub fn can_access(&self, app_id: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::App { app_id: id, .. } | Principal::Poller { app_id: id, .. } => id == app_id,
        }
    }

    /// Whether this principal may see an event type behind `flags`: one of them held, or
    /// none to hold (an event type without a flag, which everyone sees). The admin token
    /// sees them all.
    pub fn sees_flags(&self, flags: &[String]) -> bool {
        match self {
            _ if flags.is_empty() => true,
            Principal::Admin => true,
            Principal::App { feature_flags, .. } => feature_flags.iter().any(|held| flags.contains(held)),
            Principal::Poller { .. } => false,
        }
    }
}

// --- inbound sources

/// A webhook sender hooklane receives from (GitHub, Stripe, a Telegram bot…): requests to
/// its public ingest URL `POST /in/{id}` are verified, deduplicated and forwarded.
///
/// Each source owns an application (`app_id`, whose `uid` is the source id): its URL
/// destinations are that application's endpoints, and each accepted request becomes one
/// message of it, so forwarding has the outbound retries, signing and attempt log.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub id: String,
    pub app_id: String,
    pub name: String,
    pub verification: crate::inbound::Verification,
    /// The verification this one replaced, accepted too until it ends (a rotation of the
    /// provider's secret); `None`: only `verification`.
    pub previous_verification: Option<crate::inbound::PreviousVerification>,
    /// Where the provider's delivery id is; `None`: the provider's usual place.
    pub deduplication: Option<crate::inbound::Deduplication>,
    /// Networks (CIDRs) requests may come from; empty: any.
    pub allow_networks: Vec<String>,
    /// Largest request body accepted; `None`: the server's default.
    pub max_body_bytes: Option<u64>,
    /// Applications the request's JSON body is also posted to, as a message of an event type.
    pub event_destinations: Vec<EventDestination>,
    /// hooklane's own: a template (a transform's syntax, e.g. `{{ repository.full_name }}`)
    /// made from the request's JSON body into the ordering key of its message
    /// ([`Message::ordering_key`]), so that FIFO destinations keep order per key.
    pub ordering_key: Option<String>,
    /// hooklane's own: the answer to an accepted (or duplicate) request, instead of
    /// hooklane's JSON; `None`: hooklane's.
    pub response: Option<SourceResponse>,
    pub metadata: Metadata,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Source {
    /// Checks a request against the source's verification and, when that fails, against
    /// the one it replaced while that lasts. The answer is the current verification's.
    pub fn verify(
        &self,
        headers: &crate::inbound::Headers,
        body: &[u8],
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<(), crate::inbound::Rejection> {
        let current = self.verification.verify(headers, body, url, now.timestamp());
        match &self.previous_verification {
            Some(previous)
                if current.is_err()
                    && previous.lasts_at(now)
                    && previous.verification.verify(headers, body, url, now.timestamp()).is_ok() =>
            {
                Ok(())
            }
            _ => current,
        }
    }
}

/// What a source answers a provider for a request it accepted (or recognised as a
/// duplicate), for providers that read the answer: e.g. Twilio's empty TwiML
/// (`<Response/>`, `text/xml`). A provider's own handshakes (Slack's, Discord's, Meta's…)
/// are answered as the provider needs whatever this says; a refusal is hooklane's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceResponse {
    /// 200–299 (a provider retries anything else); default 200.
    #[serde(default = "SourceResponse::default_status")]
    pub status: u16,
    /// Up to [`SourceResponse::MAX_BODY`] bytes; default empty.
    #[serde(default)]
    pub body: String,
    /// The body's media type; default `text/plain; charset=utf-8` (none for an empty body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

impl SourceResponse {
    pub const MAX_BODY: usize = 4096;

    fn default_status() -> u16 {
        200
    }

    /// What is wrong with it, as (field, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(200..=299).contains(&self.status) {
            return Err(("response.status", "must be 200-299: a provider retries any other answer".into()));
        }
        // HTTP gives these no content (RFC 9110 15.3.5, 15.3.6).
        if matches!(self.status, 204 | 205) && (!self.body.is_empty() || self.content_type.is_some()) {
            return Err(("response.body", format!("a {} answer has no body nor content type", self.status)));
        }
        if self.body.len() > Self::MAX_BODY {
            return Err(("response.body", format!("at most {} bytes", Self::MAX_BODY)));
        }
        if let Some(t) = &self.content_type {
            let printable = t.bytes().all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b));
            if t.trim().is_empty() || t.len() > 256 || !printable || !t.contains('/') {
                return Err((
                    "response.contentType",
                    "must be a media type, e.g. text/xml, up to 256 characters".into(),
                ));
            }
        }
        Ok(())
    }
}

/// "Post the body into this application as a message of this event type."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDestination {
    pub app_id: String,
    pub event_type: String,
}

/// What became of one request to a source's ingest URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundStatus {
    /// Verified and stored: forwarded (or being forwarded).
    Accepted = 0,
    /// Verified, but its delivery id was seen before: acknowledged, not forwarded again.
    Duplicate = 1,
    /// Refused (verification, address, size, format): never forwarded.
    Rejected = 2,
}

impl InboundStatus {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Accepted,
            1 => Self::Duplicate,
            2 => Self::Rejected,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        }
    }
}

/// The record of one request to a source's ingest URL, whatever became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRequest {
    pub id: String,
    pub source_id: String,
    pub status: InboundStatus,
    /// The HTTP status hooklane answered.
    pub http_status: u16,
    /// Why it was rejected (or what was duplicated); `None` when accepted.
    pub reason: Option<String>,
    /// The peer address the request came from (after trusted proxies).
    pub remote_addr: Option<String>,
    /// Request headers, names in lower case, with secrets (credentials, secret tokens)
    /// masked.
    pub headers: BTreeMap<String, String>,
    /// The body as received, cut to a bounded size (`body_size` is the whole size).
    pub body: Vec<u8>,
    pub body_size: u64,
    /// The provider's delivery id, when one was found.
    pub dedup_key: Option<String>,
    /// The message this request became (accepted) or was a duplicate of.
    pub msg_id: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A piece of work the API started for a request (Svix's background task:
/// `endpoint.recover`, `application.stats`…): recorded `running`, then `finished` with what
/// it did in `data`, or `failed` with an `error` there. It is kept (90 days) so that a client
/// that looks it up, as Svix's SDKs let it, finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackgroundTask {
    pub id: String,
    /// The application the task worked on; empty for a task of the whole environment (usage
    /// statistics), which no application token sees.
    pub app_id: String,
    /// Svix's task type: `endpoint.recover`, `endpoint.replay`, `application.stats`…
    pub task: String,
    /// `running`, `finished` or `failed`.
    pub status: String,
    /// What the task did (a JSON object).
    pub data: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

/// A named credential an application's owner hands to a third party (Svix's integration,
/// e.g. for a no-code automation tool). Its key is a token of the application, stored like
/// every token only as a hash; the key is made, and replaced, by rotating it.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub id: String,
    pub app_id: String,
    pub name: String,
    /// Svix's feature flags of the integration (sorted, no repeats), which its key has.
    pub feature_flags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_from_debug_output() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let ep = Endpoint {
            id: "ep_1".into(),
            app_id: "app_1".into(),
            uid: None,
            url: "https://user:pa55word@example.com/hook?x=1".into(),
            description: String::new(),
            version: 1,
            filter_types: None,
            channels: None,
            disabled: false,
            rate_limit: None,
            metadata: Default::default(),
            headers: [("x-api-key".to_string(), "k-secret-header".to_string())].into(),
            secret: "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4".into(),
            previous_secrets: vec![ExpiringSecret { key: "whsec_b2xkLXNpZ25pbmcta2V5".into(), expires_at: at }],
            failing_since: None,
            created_at: at,
            updated_at: at,
            payload_filter: None,
            transform: None,
            order: DeliveryOrder::Concurrent,
            transformation: Some(Transformation {
                code: Some("function handler(w) { return w }".into()),
                enabled: true,
                variables: [("token".to_string(), "var-secret-value".to_string())].into(),
                updated_at: at,
            }),
            retry_schedule: None,
            oauth: None,
            paused: false,
            mtls: None,
            polling: false,
        };
        let shown = format!("{ep:?}");
        for secret in ["pa55word", "k-secret-header", "c2VjcmV0", "b2xkLXNp", "var-secret-value"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for kept in ["ep_1", "https://user:<hidden>@example.com/hook?x=1", "x-api-key", "token", "handler"] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
        assert_eq!(without_password("https://example.com/a@b"), "https://example.com/a@b");
        assert_eq!(without_password("https://sk_live_1@example.com/"), "https://<hidden>@example.com/");
        assert_eq!(without_password("not a url"), "not a url");
        assert_eq!(without_password("https:///user:pw@example.com/"), "https:///user:<hidden>@example.com/");
        assert_eq!(without_password("https://u:pw@[::1]:8080/a@b"), "https://u:<hidden>@[::1]:8080/a@b");
    }
}
