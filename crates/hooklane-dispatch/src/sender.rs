//! One signed HTTP attempt.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hooklane_core::filter::LazyPayload;
use hooklane_core::model::{Endpoint, Message, Transformation};
use hooklane_core::oauth::EndpointOauth;
use hooklane_core::retry::parse_retry_after;
use hooklane_core::rules::transform;
use hooklane_core::signing::{signature_header, Secret};
use hooklane_core::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

use crate::address::{check_via_proxy, AddressPolicy, GuardedResolver};
use crate::clients::Clients;
use crate::script;
use crate::scripts::{ScriptFailure, Scripts};
use crate::tokens::Tokens;
use crate::DispatchConfig;

/// Headers hooklane sets itself; an endpoint's custom headers cannot override them.
pub const RESERVED: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    hooklane_core::signing::ORIGIN_HEADER,
];

/// Hop-by-hop and connection-control headers: they speak to the connection, not the
/// receiver (HTTP/2 refuses them), and a stray `Expect` or `Upgrade` changes how the
/// request is exchanged. Neither an endpoint nor its transformation may set them.
pub const CONNECTION_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// Most custom headers an endpoint (or its transformation) may set, and the longest value.
pub const MAX_CUSTOM_HEADERS: usize = 32;
pub const MAX_HEADER_VALUE: usize = 4096;

/// Why a custom header cannot be sent as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFault {
    /// Not a header name.
    Name,
    /// A value a header cannot carry (control characters).
    Value,
    /// More than [`MAX_HEADER_VALUE`] bytes of value.
    TooLong,
    /// One of hooklane's own ([`RESERVED`]).
    Reserved,
    /// One of [`CONNECTION_HEADERS`].
    Connection,
}

/// What is wrong with a custom header (an endpoint's, or its transformation's), if anything.
pub fn custom_header_fault(name: &str, value: &str) -> Option<HeaderFault> {
    if HeaderName::try_from(name).is_err() {
        return Some(HeaderFault::Name);
    }
    if value.len() > MAX_HEADER_VALUE {
        return Some(HeaderFault::TooLong);
    }
    if HeaderValue::try_from(value).is_err() {
        return Some(HeaderFault::Value);
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED.contains(&lower.as_str()) {
        return Some(HeaderFault::Reserved);
    }
    CONNECTION_HEADERS.contains(&lower.as_str()).then_some(HeaderFault::Connection)
}

/// Parsed endpoint URLs and secrets kept at most, each; past this a cache starts again
/// (endpoints are few next to attempts, so it rarely fills).
const PARSED_MAX: usize = 10_000;

/// Values made from strings, each distinct string parsed once (until the cache fills and
/// starts again).
struct Parsed<T> {
    map: Mutex<HashMap<String, T>>,
}

impl<T> Default for Parsed<T> {
    fn default() -> Self {
        Parsed { map: Mutex::default() }
    }
}

impl<T: Clone> Parsed<T> {
    fn get<E>(&self, raw: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<T, E> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(value) = map.get(raw) {
            return Ok(value.clone());
        }
        let value = parse(raw)?;
        if map.len() >= PARSED_MAX {
            map.clear();
        }
        map.insert(raw.to_string(), value.clone());
        Ok(value)
    }
}

/// What came of one attempt.
#[derive(Debug, Clone)]
pub struct SendResult {
    /// HTTP status when a response arrived.
    pub status: Option<u16>,
    /// The response body (capped) or a description of what went wrong.
    pub body: String,
    pub duration: Duration,
    pub retry_after: Option<Duration>,
    /// The headers of the request sent (`None` when none was: invalid or refused URL).
    pub request_headers: Option<BTreeMap<String, String>>,
    /// hooklane could not make this message's request (the endpoint's transform makes too
    /// large a body of it, or its transformation fails): no retry can do better, and the
    /// endpoint is not at fault.
    pub unsendable: bool,
    /// The endpoint's transformation cancelled the request: nothing was sent, on purpose.
    pub cancelled: bool,
    /// Where the request went when the endpoint's transformation changed the URL.
    pub url: Option<String>,
    /// Nothing was sent: the endpoint as the delivery was claimed with is older than its
    /// OAuth settings in force, which moved to another token endpoint or origin. No
    /// attempt: the delivery is handed back, to be claimed again with them.
    pub stale: bool,
    /// What the receiver asked of hooklane in its answer (`webhook-delivery`).
    pub control: DeliveryControl,
}

/// What a receiver may ask in its answer's `webhook-delivery` header (Svix's delivery
/// control): `abort-message` stops the retries of the message just sent (a success needs
/// none), `disable` disables the endpoint; both may be given, comma-separated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryControl {
    pub abort_message: bool,
    pub disable_endpoint: bool,
}

impl DeliveryControl {
    /// The header's value read (words in any case; others are ignored, for instructions
    /// of later versions).
    pub fn parse(value: &str) -> DeliveryControl {
        let mut control = DeliveryControl::default();
        for word in value.split(',').map(str::trim) {
            if word.eq_ignore_ascii_case("abort-message") {
                control.abort_message = true;
            } else if word.eq_ignore_ascii_case("disable") {
                control.disable_endpoint = true;
            }
        }
        control
    }
}

impl SendResult {
    pub fn succeeded(&self) -> bool {
        matches!(self.status, Some(200..=299))
    }

    fn failed(why: String, started: Instant) -> Self {
        SendResult {
            status: None,
            body: why,
            duration: started.elapsed(),
            retry_after: None,
            request_headers: None,
            unsendable: false,
            cancelled: false,
            url: None,
            stale: false,
            control: DeliveryControl::default(),
        }
    }

    fn unsendable(why: String, started: Instant) -> Self {
        SendResult { unsendable: true, ..SendResult::failed(why, started) }
    }
}

/// A receiver's answer, as [`Sender::read_answer`] read it.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    control: DeliveryControl,
    body: Vec<u8>,
    /// Why the body was not read to its end (nor to the limit), if it was not.
    body_cut_by: Option<String>,
}

/// What [`Sender::prepare`] made.
pub enum Prepared {
    /// The request to send ([`Sender::send`]).
    Ready(Ready),
    /// Nothing to send: the attempt's result already (cancelled, or unsendable).
    Done(SendResult),
    /// The endpoint's transformation could not run now (no worker free, or one failed):
    /// nothing was tried, so the delivery is handed back unsent, as a paused one is.
    Later(String),
}

/// The request to make, once the endpoint's rules have had their say: ready to be sent.
pub struct Ready {
    method: reqwest::Method,
    /// `None`: the endpoint's own URL.
    url: Option<String>,
    /// `None`: the message's payload as it is, read from the message when the request is
    /// made. A job waits its turn with its request ready: a copy of the payload made for
    /// each held job cost a payload per delivery held in memory (thousands of them).
    body: Option<String>,
    /// The transformation's headers, which win over the endpoint's.
    headers: BTreeMap<String, String>,
    /// The body is JSON made by a transformation (not the message's own content).
    json: bool,
}

impl Ready {
    /// Bytes the request holds of its own beyond the message's payload (which it reads
    /// when it is made): a transformation's body, URL and headers.
    pub fn held_bytes(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.body.as_ref().map_or(0, String::len) + self.url.as_ref().map_or(0, String::len) + headers
    }
}

/// What the sender needs to know of the configured proxy.
#[derive(Clone, Copy)]
struct ViaProxy {
    resolves_names: bool,
    /// How long a receiver's name may take to resolve here before it is refused.
    lookup_within: Duration,
}

#[derive(Clone)]
pub struct Sender {
    /// The shared client, and one per endpoint mTLS identity.
    clients: Arc<Clients>,
    /// How deliveries go through the configured proxy, if one is.
    proxy: Option<ViaProxy>,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
    body_limit: usize,
    /// Endpoint URLs already parsed: parsing one on every attempt was about 2 % of the
    /// server's CPU at full rate.
    urls: Arc<Parsed<reqwest::Url>>,
    /// Endpoint secrets already parsed: making an Ed25519 key from its bytes derives its
    /// public key, which cost as much as the signature itself.
    secrets: Arc<Parsed<Arc<Secret>>>,
    scripts: Arc<Scripts>,
    /// Access tokens of endpoints with OAuth settings.
    tokens: Arc<Tokens>,
    /// This server's [`hooklane_core::signing::origin_marker`], sent with every delivery
    /// (none without a store: a sender of tests and tools); and the same marked
    /// [`hooklane_core::signing::RELAYED`], for a message that came from one of them.
    origin: Option<(String, HeaderValue, HeaderValue)>,
}

impl Sender {
    /// `store`: where endpoints' rotated OAuth refresh tokens are saved.
    pub fn new(cfg: &DispatchConfig, store: Option<hooklane_store::DynStore>) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(AddressPolicy::new(cfg.allow_networks.clone()));
        let proxy_host =
            cfg.proxy.as_ref().and_then(|p| reqwest::Url::parse(&p.url).ok()?.host_str().map(str::to_string));
        let resolver = Arc::new(GuardedResolver::new(policy.clone(), proxy_host));
        let origin = store.as_ref().and_then(|s| {
            let marker = hooklane_core::signing::origin_marker(&s.instance_secret());
            let first = HeaderValue::try_from(marker.as_str()).ok()?;
            let relayed = HeaderValue::try_from(format!("{marker}{}", hooklane_core::signing::RELAYED)).ok()?;
            Some((marker, first, relayed))
        });
        Ok(Sender {
            origin,
            clients: Arc::new(Clients::new(cfg, resolver)?),
            proxy: cfg
                .proxy
                .as_ref()
                .map(|p| ViaProxy { resolves_names: p.resolves_names, lookup_within: cfg.connect_timeout }),
            policy,
            timeout: cfg.request_timeout,
            body_limit: cfg.response_body_limit,
            urls: Arc::default(),
            secrets: Arc::default(),
            tokens: Arc::new(Tokens::new(store, cfg.request_timeout)),
            scripts: Arc::new(Scripts::new(cfg.scripts.clone(), cfg.script_workers)),
        })
    }

    /// Where this sender runs transformations; the API checks and previews code there too.
    pub fn scripts(&self) -> Arc<Scripts> {
        self.scripts.clone()
    }

    /// The endpoint's URL, parsed (once per distinct URL).
    fn url(&self, raw: &str) -> Result<reqwest::Url, String> {
        self.urls.get(raw, |raw| reqwest::Url::parse(raw).map_err(|e| e.to_string()))
    }

    /// The endpoint's secrets that sign a delivery made at `now`, parsed (once per distinct
    /// secret). Secrets that fail to parse are skipped (they were validated on the way in, so
    /// this only guards against a hand-edited database).
    fn signing_secrets(&self, endpoint: &Endpoint, now: chrono::DateTime<Utc>) -> Vec<Arc<Secret>> {
        endpoint
            .live_secrets(now)
            .filter_map(|raw| self.secrets.get(raw, |raw| Secret::parse(raw).map(Arc::new)).ok())
            .collect()
    }

    /// Makes the request the endpoint is to get: its body (the endpoint's transform), and
    /// what its transformation makes of it, which may take a while (a worker to wait for),
    /// so the engine does it before it takes a place among the requests in flight. Or
    /// the attempt's result already, when there is nothing to send.
    pub async fn prepare(&self, message: &Message, endpoint: &Endpoint) -> Prepared {
        let started = Instant::now();
        let body = match request_body(message, endpoint) {
            Ok(body) => body,
            Err(unmade) => return Prepared::Done(SendResult::unsendable(unmade, started)),
        };
        let scripted = endpoint.transformation.as_ref().and_then(|t| t.active_code().map(|code| (t, code)));
        let Some((t, code)) = scripted else {
            return Prepared::Ready(Ready {
                method: reqwest::Method::POST,
                url: None,
                body,
                headers: BTreeMap::new(),
                json: false,
            });
        };
        match transformed(&self.scripts, message, endpoint, t, code, body).await {
            Ok(Some(ready)) => Prepared::Ready(ready),
            Ok(None) => Prepared::Done(SendResult {
                cancelled: true,
                ..SendResult::failed("not sent: the endpoint's transformation cancelled it".into(), started)
            }),
            Err(ScriptFailure::Code(e)) => {
                // The error's text may hold what the code made of its variables; one cut at its
                // length limit (by the worker, which marks it `…`) may end in the start of one.
                let mut why = format!("the endpoint's transformation failed: {e}");
                let cut = why.ends_with('…');
                if cut {
                    why.pop();
                }
                crate::redact::redact(&mut why, endpoint, None, cut);
                if cut {
                    why.push('…');
                }
                Prepared::Done(SendResult::unsendable(why, started))
            }
            Err(ScriptFailure::Unavailable(why)) => Prepared::Later(why),
        }
    }

    /// Signs and sends the prepared request to the endpoint (a POST, unless its
    /// transformation asks for PUT). Never fails: transport errors are reported in the
    /// result, like HTTP errors.
    pub async fn send(&self, message: &Message, endpoint: &Endpoint, ready: Ready) -> SendResult {
        let mut result = self.send_as_made(message, endpoint, ready).await;
        // The URL a transformation made may hold its variables (a Slack-style URL keeps its
        // secret in its path), whatever became of the attempt.
        if let Some(url) = result.url.as_mut() {
            crate::redact::redact(url, endpoint, None, false);
        }
        result
    }

    /// [`Sender::send`], the URL of its result as the transformation made it.
    async fn send_as_made(&self, message: &Message, endpoint: &Endpoint, ready: Ready) -> SendResult {
        let started = Instant::now();
        // A failure from here on names the URL it was about, the transformation's included.
        let failed = |why: String| SendResult { url: ready.url.clone(), ..SendResult::failed(why, started) };
        let url = match &ready.url {
            None => self.url(&endpoint.url).map_err(|e| format!("invalid endpoint URL: {e}")),
            // Checked by the script already (scheme, length, no credentials).
            Some(changed) => {
                reqwest::Url::parse(changed).map_err(|e| format!("the transformation's URL is not valid: {e}"))
            }
        };
        let url = match url {
            Ok(u) => u,
            Err(e) => return failed(e),
        };
        if let Err(refused) = check_destination(&self.policy, self.proxy, &url).await {
            return failed(refused);
        }
        // The whole attempt, its access token included, takes at most the request timeout.
        // An access token or a client certificate goes only to the origin it was set for:
        // not to another one a transformation sends the request to, nor to a URL moved
        // elsewhere (whoever may change the code or the URL may not see the credentials).
        // Settings stored before they were bound go to the endpoint's own origin.
        let deadline = tokio::time::Instant::now() + self.timeout;
        // (Only for an endpoint with such settings: the origin's text is made for the check.)
        let bound = |origin: &str| {
            let here = url.origin().ascii_serialization();
            match origin {
                "" => self.url(&endpoint.url).is_ok_and(|own| own.origin().ascii_serialization() == here),
                origin => origin == here,
            }
        };
        let oauth = endpoint.oauth.as_ref().filter(|o| bound(&o.endpoint_origin));
        let mtls = endpoint.mtls.as_ref().filter(|m| bound(&m.endpoint_origin));
        let bearer = match oauth {
            None => None,
            Some(oauth) => match tokio::time::timeout_at(deadline, self.bearer(endpoint, oauth)).await {
                Ok(Ok(token)) => Some(token),
                Ok(Err(why)) if why == crate::tokens::STALE_SETTINGS => {
                    return SendResult { stale: true, ..failed(why) }
                }
                Ok(Err(why)) => {
                    // An authorization server may echo what it got (its `error_description`).
                    let mut why = format!("no OAuth access token: {why}");
                    crate::redact::redact(&mut why, endpoint, None, false);
                    return failed(why);
                }
                Err(_) => {
                    return failed(format!("no OAuth access token: timed out after {} ms", self.timeout.as_millis()))
                }
            },
        };
        let now = Utc::now();
        let timestamp = now.timestamp();
        let Ready { method, url: changed_url, body, headers: scripted_headers, json } = ready;
        let body = body.unwrap_or_else(|| message.payload.clone());
        let secrets = self.signing_secrets(endpoint, now);
        let signature = signature_header(secrets.iter().map(|s| &**s), &message.id, timestamp, body.as_bytes());
        let mut headers = HeaderMap::with_capacity(4 + message.headers.len() + endpoint.headers.len());
        // The endpoint's custom headers (credentials, often) go only to its own origin, as
        // its access token and client certificate: not to another one a transformation
        // sends the request to.
        let foreign = changed_url.is_some() && !bound("");
        let custom = if foreign { None } else { Some(&endpoint.headers) };
        // A forwarded inbound request's headers first, so the endpoint's own win over them,
        // and the transformation's over both.
        for (name, value) in message.headers.iter().chain(custom.into_iter().flatten()).chain(&scripted_headers) {
            if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
                continue;
            }
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
                headers.insert(n, v);
            }
        }
        // A body made by a transform or a transformation is JSON, whatever the message's own
        // content type was; one a transformation left as it was keeps it.
        let content_type = match (&endpoint.transform, json) {
            (None, false) => message.content_type.as_deref().and_then(|t| HeaderValue::try_from(t).ok()),
            _ => None,
        };
        headers.insert(CONTENT_TYPE, content_type.unwrap_or(HeaderValue::from_static("application/json")));
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::try_from(value) {
                headers.insert(name, v);
            }
        };
        put("webhook-id", &message.id);
        put("webhook-timestamp", &timestamp.to_string());
        put("webhook-signature", &signature);
        let mut sent: BTreeMap<String, String> = headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        if let Some((marker, first, relayed)) = &self.origin {
            // (Not in the attempt log's headers: the same on every request.) A message an
            // inbound source made from one of this server's deliveries keeps the request's
            // marker among its headers.
            let came_from_here = message
                .headers
                .get(hooklane_core::signing::ORIGIN_HEADER)
                .is_some_and(|m| m.split(';').next() == Some(marker.as_str()));
            headers.insert(hooklane_core::signing::ORIGIN_HEADER, if came_from_here { relayed } else { first }.clone());
        }
        // The OAuth token wins over any other authorization; the attempt log never holds it.
        if let Some(token) = &bearer {
            match HeaderValue::try_from(format!("Bearer {token}")) {
                Ok(v) => headers.insert(AUTHORIZATION, v),
                Err(_) => {
                    let why = "the OAuth access token cannot be sent in a header".to_string();
                    return SendResult { url: changed_url, ..SendResult::failed(why, started) };
                }
            };
            sent.insert(AUTHORIZATION.as_str().to_string(), "Bearer [redacted]".into());
        }
        let client =
            match mtls.map(|m| self.clients.for_identity(m)).unwrap_or_else(|| Ok(self.clients.shared().clone())) {
                Ok(client) => client,
                Err(why) => {
                    let why = format!("the endpoint's mTLS settings cannot be used: {why}");
                    return SendResult { url: changed_url, ..SendResult::failed(why, started) };
                }
            };
        let request = client.request(method, url).headers(headers).body(body).send();
        // Whether the body was cut at its limit, or by an error or the deadline, where a
        // credential may have been cut in two.
        let mut cut = false;
        let mut cut_by = None;
        let mut result = match tokio::time::timeout_at(deadline, request).await {
            // The proxy's own refusal of hooklane's credentials is no answer of the
            // receiver's (nor is its page worth keeping).
            Ok(Ok(response)) if response.status().as_u16() == 407 && self.proxy.is_some() => {
                SendResult::failed("the proxy refused hooklane's credentials (407)".into(), started)
            }
            Ok(Ok(response)) => {
                let answer = self.read_answer(response, deadline).await;
                cut = answer.body.len() >= self.body_limit || answer.body_cut_by.is_some();
                cut_by = answer.body_cut_by;
                SendResult {
                    status: Some(answer.status),
                    body: String::from_utf8_lossy(&answer.body).into_owned(),
                    duration: started.elapsed(),
                    retry_after: answer.retry_after,
                    request_headers: None,
                    unsendable: false,
                    cancelled: false,
                    url: None,
                    stale: false,
                    control: answer.control,
                }
            }
            // `without_url`: the URL may carry credentials in its query string.
            Ok(Err(e)) => SendResult::failed(describe(e.without_url()), started),
            Err(_) => SendResult::failed(format!("timed out after {} ms", self.timeout.as_millis()), started),
        };
        // A receiver that echoes what it got (a debugging endpoint, an error page) would put
        // the endpoint's credentials in the attempt log, which tokens that may not see them
        // read.
        crate::redact::redact(&mut result.body, endpoint, bearer.as_deref(), cut);
        if let Some(why) = cut_by {
            result.body.push_str(&format!("\n(the response body was not read to its end: {why})"));
        }
        result.request_headers = Some(sent);
        result.url = changed_url;
        // A refused token is not sent again: the next attempt asks for a new one.
        if let (Some(token), Some(401)) = (&bearer, result.status) {
            self.tokens.forget(&endpoint.id, token);
        }
        result
    }

    /// The receiver's answer once its status has come: its status and instructions, and its
    /// body up to the limit. The answer stands when the body then fails or outlasts
    /// `deadline` (a receiver that answers 200 and closes early, or trickles its body): the
    /// receiver has taken the message, which must not be sent again for its body.
    async fn read_answer(&self, mut response: reqwest::Response, deadline: tokio::time::Instant) -> Answer {
        let status = response.status().as_u16();
        // A date is measured from when the answer came, not from when the request was
        // signed (up to the attempt's whole timeout before).
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now().timestamp()));
        let control = response
            .headers()
            .get_all("webhook-delivery")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(DeliveryControl::parse)
            .fold(DeliveryControl::default(), |a, b| DeliveryControl {
                abort_message: a.abort_message || b.abort_message,
                disable_endpoint: a.disable_endpoint || b.disable_endpoint,
            });
        let mut body = Vec::new();
        let read = async {
            while let Some(chunk) = response.chunk().await? {
                let room = self.body_limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= self.body_limit {
                    break; // the rest is dropped with the connection
                }
            }
            Ok::<_, reqwest::Error>(())
        };
        let body_cut_by = match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(describe(e.without_url())),
            Err(_) => Some(format!("timed out after {} ms", self.timeout.as_millis())),
        };
        Answer { status, retry_after, control, body, body_cut_by }
    }

    /// The endpoint's OAuth access token: held, or asked of its token URL (through the
    /// same client, so under the same address policy and proxy as deliveries; the address
    /// is checked when a token is asked for, not for each attempt).
    async fn bearer(&self, endpoint: &Endpoint, oauth: &EndpointOauth) -> Result<Arc<str>, String> {
        let url = self.url(&oauth.token_url).map_err(|e| format!("invalid token URL: {e}"))?;
        let (client, policy, proxy) = (self.clients.shared().clone(), self.policy.clone(), self.proxy);
        self.tokens
            .bearer(endpoint, oauth, move |request| async move {
                check_destination(&policy, proxy, &url).await?;
                let mut post = client
                    .post(url)
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(ACCEPT, "application/json")
                    .body(request.form);
                if let Some(authorization) = request.authorization {
                    post = post.header(AUTHORIZATION, authorization);
                }
                let mut response = post.send().await.map_err(|e| describe(e.without_url()))?;
                let status = response.status().as_u16();
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| describe(e.without_url()))? {
                    if body.len() + chunk.len() > TOKEN_ANSWER_LIMIT {
                        return Err(format!("the token endpoint's answer is over {TOKEN_ANSWER_LIMIT} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok((status, body))
            })
            .await
    }
}

/// Largest answer taken from a token endpoint.
const TOKEN_ANSWER_LIMIT: usize = 64 * 1024;

/// Refuses a destination the address policy does not allow, where the resolver cannot see
/// it: IP literals skip DNS, and through a proxy no receiver's name is resolved here.
async fn check_destination(policy: &AddressPolicy, proxy: Option<ViaProxy>, url: &reqwest::Url) -> Result<(), String> {
    let Some(host) = url.host_str() else { return Ok(()) };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if !policy.permits(ip) {
            return Err(format!("destination address {ip} is not allowed (private, loopback or reserved)"));
        }
    } else if let Some(proxy) = proxy {
        check_via_proxy(policy, bare, proxy.resolves_names, proxy.lookup_within)
            .await
            .map_err(|refused| refused.to_string())?;
    }
    Ok(())
}

/// Runs the endpoint's transformation on the request about to be made (in a script
/// worker: it may take up to [`crate::scripts::HARD_LIMIT`]); `None` when it cancels it.
async fn transformed(
    scripts: &Scripts,
    message: &Message,
    endpoint: &Endpoint,
    transformation: &Transformation,
    code: &str,
    body: Option<String>,
) -> Result<Option<Ready>, ScriptFailure> {
    let limit = transform::body_limit(message.payload.len());
    // The code sees the URL without its credentials (a password for the receiver's basic
    // authentication), which whoever may change the code may not see.
    let shown = without_credentials(&endpoint.url);
    let job = script::Job {
        code: code.to_string(),
        webhook: Some(script::Webhook::new(
            shown.clone(),
            message.event_type.clone(),
            body.clone().unwrap_or_else(|| message.payload.clone()),
            transformation.variables.clone(),
        )),
        max_output: limit,
    };
    let request = match scripts.run(&endpoint.app_id, job).await? {
        script::Outcome::Send(request) => request,
        script::Outcome::Cancel => return Ok(None),
    };
    let url = (request.url != shown).then(|| with_credentials_of(request.url, &endpoint.url));
    let method = if request.method == "PUT" { reqwest::Method::PUT } else { reqwest::Method::POST };
    // `None`: the payload left as it was given (a body that was not JSON left `null`, or
    // JSON the code did not change): sent as it came, and with its content type, which only
    // a body the code made replaces.
    let (body, json) = match request.body {
        Some(made) => (Some(made), true),
        None => (body, false),
    };
    Ok(Some(Ready { method, url, body, headers: request.headers, json }))
}

/// `url` without the user name and password before its host, if it is a URL: what a
/// transformation's code sees of its endpoint's URL.
pub fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // (Both only fail for URLs that cannot have credentials.)
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.into()
        }
        _ => url.to_string(),
    }
}

/// A transformation's URL with the endpoint URL's credentials when it stays on the
/// endpoint's origin (the code never saw them); on another origin, as it is.
fn with_credentials_of(changed: String, own: &str) -> String {
    let (Ok(mut parsed), Ok(own)) = (reqwest::Url::parse(&changed), reqwest::Url::parse(own)) else {
        return changed;
    };
    if parsed.origin() != own.origin() || (own.username().is_empty() && own.password().is_none()) {
        return changed;
    }
    let _ = parsed.set_username(own.username());
    let _ = parsed.set_password(own.password());
    parsed.into()
}

/// What the endpoint is sent: the payload, or what the endpoint's transform makes of it
/// (the same for every attempt, so a retry is the same request and its signature holds).
/// A transform stops making a body past its limit ([`transform::body_limit`]), and makes
/// none of a payload it cannot read ([`transform::Unreadable`]: the API takes `1e400` and
/// lone surrogates, which serde cannot hold): read as `null`, it would send `null`s in
/// place of every value and record a success. Either is the message's, for good.
fn request_body(message: &Message, endpoint: &Endpoint) -> Result<Option<String>, String> {
    match &endpoint.transform {
        // (Read from the message when the request is made: see `Ready::body`.)
        None => Ok(None),
        Some(template) => {
            let mut payload = LazyPayload::new(&message.payload);
            if payload.unreadable() {
                return Err(transform::Unreadable.to_string());
            }
            let limit = transform::body_limit(message.payload.len());
            let body = transform::apply(template, payload.json(), limit).map_err(|e| e.to_string())?;
            Ok(Some(serde_json::to_string(&body).unwrap_or_else(|_| "null".into())))
        }
    }
}

/// A one-line description of a transport error, with its causes.
fn describe(e: reqwest::Error) -> String {
    let head = if e.is_connect() { "connection failed".to_string() } else { e.to_string() };
    with_causes(head, &e)
}

/// `head`, then each cause of `e` after a colon.
pub(crate) fn with_causes(mut head: String, e: &dyn std::error::Error) -> String {
    let mut source = e.source();
    while let Some(s) = source {
        head.push_str(": ");
        head.push_str(&s.to_string());
        source = s.source();
    }
    head
}

#[cfg(test)]
mod delivery_control_tests {
    use super::DeliveryControl;

    #[test]
    fn the_header_is_read_word_by_word() {
        let read = |v: &str| {
            let c = DeliveryControl::parse(v);
            (c.abort_message, c.disable_endpoint)
        };
        assert_eq!(read("abort-message"), (true, false));
        assert_eq!(read("DISABLE"), (false, true));
        assert_eq!(read(" disable , abort-message "), (true, true));
        assert_eq!(read("pause, abort"), (false, false), "unknown words change nothing");
        assert_eq!(read(""), (false, false));
    }
}
