//! What every handler shares.

use std::sync::Arc;

use hooklane_dispatch::Dispatcher;
use hooklane_store::DynStore;
use sha2::{Digest, Sha256};

/// Server settings that handlers need. (No `Debug`: they hold the admin token.)
#[derive(Clone)]
pub struct ServerSettings {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The admin token in clear; only its hash is kept in memory once the state is built.
    pub admin_token: String,
    /// Base URL printed in app-portal links.
    pub public_url: String,
    /// Inbound sources (`POST /in/{source_id}`).
    pub inbound: InboundSettings,
    /// `/metrics`, `/health`, `/ready`.
    pub ops: crate::ops::OpsSettings,
    /// The application (id or uid) operational webhooks are posted into; none when unset
    /// (see [`crate::operational`]).
    pub operational_app: Option<String>,
    /// How long cached applications and endpoints are trusted (see [`crate::cache`]).
    pub tenant_cache_ttl: std::time::Duration,
    /// How long a request that starts a background task waits for it before answering it
    /// `running` (see [`crate::tasks`]).
    pub task_wait: std::time::Duration,
    /// The kind of secret an endpoint created without one gets.
    pub default_signature_type: hooklane_core::signing::SignatureType,
    /// Messages each application may post a second on this node (0: no limit).
    pub message_rate_limit: u32,
    /// The pages that may frame the portal (its CSP's `frame-ancestors`); none: any.
    pub portal_frame_ancestors: Vec<String>,
}

/// Settings of the inbound side.
#[derive(Debug, Clone, Default)]
pub struct InboundSettings {
    /// Reverse proxies whose `X-Forwarded-For` is believed: a request from one of these
    /// networks is taken to come from the last address in that header that is not itself
    /// a trusted proxy (for sources' address allow-lists and the request log).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long the record of a request is kept (`[inbound] request_retention`); zero:
    /// forever. A request older than this may have no record any more for being done.
    pub request_retention: std::time::Duration,
}

#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

pub(crate) struct Shared {
    pub store: DynStore,
    pub dispatcher: Dispatcher,
    pub admin_token_hash: [u8; 32],
    /// What this server's deliveries carry in [`hooklane_core::signing::ORIGIN_HEADER`].
    pub origin_marker: String,
    pub max_body_bytes: usize,
    pub public_url: String,
    pub inbound: InboundSettings,
    pub ops: crate::ops::OpsSettings,
    pub operational_app: Option<String>,
    pub cache: crate::cache::TenantCache,
    pub task_wait: std::time::Duration,
    pub default_signature_type: hooklane_core::signing::SignatureType,
    pub message_rate: crate::message_rate::MessageRate,
    /// The background tasks this node works on (see [`crate::tasks`]).
    pub tasks: crate::tasks::Running,
    pub rejections: crate::inbound_budget::RejectionBudget,
    /// How many duplicates (a provider's retries, or a captured request replayed) each
    /// inbound source may have recorded (the same budget as refusals', kept apart).
    pub duplicates: crate::inbound_budget::RejectionBudget,
    /// How many provider URL checks (answered, not forwarded) each inbound source may have
    /// recorded: a Meta check needs only its verify token, and a signed one replays within
    /// its tolerance, so a loop of them must not fill the request log either.
    pub url_checks: crate::inbound_budget::RejectionBudget,
    /// Turns true when the server starts shutting down: long-polls and event streams,
    /// which would otherwise hold the graceful shutdown up, end then.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Places for long-polls and event streams waiting at once (see [`crate::api::events`]).
    pub pull_waiters: Arc<crate::waiting::WaitingPlaces>,
    /// Turns stream positions into the opaque iterators clients carry, and back.
    pub position_tokens: crate::api::position_tokens::PositionTokens,
    /// The applications whose preview is running code (one at a time each).
    pub previews: crate::api::preview::Running,
    /// The applications whose code being saved is being checked (one at a time each): the
    /// checks share one worker, which one application saving slow code in a loop would
    /// otherwise keep from every other one's saves.
    pub checks: crate::api::preview::Running,
    /// Endpoint changes waiting to be posted as operational webhooks, in order.
    pub endpoint_news: crate::operational::EndpointNews,
    /// The portal page's `Content-Security-Policy` (see [`crate::dashboard::portal_csp`]).
    pub portal_csp: axum::http::HeaderValue,
}

impl AppState {
    pub fn new(store: DynStore, dispatcher: Dispatcher, settings: ServerSettings) -> Self {
        AppState(Arc::new(Shared {
            position_tokens: crate::api::position_tokens::PositionTokens::new(&store.instance_secret()),
            origin_marker: hooklane_core::signing::origin_marker(&store.instance_secret()),
            store,
            dispatcher,
            admin_token_hash: token_hash(&settings.admin_token),
            max_body_bytes: settings.max_body_bytes,
            public_url: settings.public_url,
            inbound: settings.inbound,
            ops: settings.ops,
            operational_app: settings.operational_app.filter(|a| !a.is_empty()),
            cache: crate::cache::TenantCache::new(settings.tenant_cache_ttl),
            task_wait: settings.task_wait,
            default_signature_type: settings.default_signature_type,
            message_rate: crate::message_rate::MessageRate::new(settings.message_rate_limit),
            tasks: Default::default(),
            rejections: Default::default(),
            duplicates: Default::default(),
            url_checks: Default::default(),
            closing: tokio::sync::watch::Sender::new(false),
            pull_waiters: Arc::default(),
            previews: Default::default(),
            checks: Default::default(),
            endpoint_news: Default::default(),
            portal_csp: crate::dashboard::portal_csp(&settings.portal_frame_ancestors),
        }))
    }
}

/// Tokens are looked up by their SHA-256, so the database never holds a usable token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
