//! `hooklane forward`: an application's messages, read from a hooklane server's event stream
//! (Server-Sent Events), or a polling endpoint's (long-polling its poller), posted to a local
//! URL as deliveries, signed. What a developer runs to receive webhooks on a laptop that no
//! server can reach: the laptop connects out, as with Svix's and Hookdeck's CLIs, and needs
//! no public URL or tunnel.
//!
//! The stream is resumed from the last message handled (`Last-Event-ID`) whenever the
//! connection drops or the server restarts (a poller, from the last page handled); each line
//! printed carries that position, to go on from later (`--iterator`). Messages are posted at
//! least once: a local receiver that answers too late gets the message again, and one that
//! keeps failing has it skipped after `--tries`, said so on its line.

use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use hooklane_core::signing::{signature_header, Secret};
use hooklane_dispatch::sender::without_credentials;
use hooklane_server::api::attempt::REDACTED;

use crate::output::say;
use crate::sign_tools::SET_BY_SEND;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(clap::Args)]
pub struct ForwardArgs {
    /// Where each message is posted, e.g. http://localhost:3000/webhooks.
    to: String,
    /// The hooklane server's base URL.
    // Its value from the environment is not shown by `--help`: a URL may carry a user and
    // password by mistake (`https://user:password@…`), which `run` refuses without showing.
    #[arg(long, default_value = "http://127.0.0.1:8071", env = "HOOKLANE_URL", hide_env_values = true)]
    server: String,
    /// The application (id or uid) whose messages are forwarded.
    #[arg(long)]
    app: String,
    /// A polling endpoint (id or uid) of the application: what it gets is forwarded, read
    /// from its poller, for which the endpoint's own key (`sk_poll_…`) is enough.
    #[arg(long)]
    endpoint: Option<String>,
    /// An API token that may read the application (the admin token, or an application's), or
    /// with `--endpoint` that endpoint's key.
    #[arg(long, env = "HOOKLANE_TOKEN", hide_env_values = true, allow_hyphen_values = true)]
    token: String,
    /// Signs each request as hooklane signs deliveries (`whsec_…`, or a `whsk_…` key pair),
    /// for a receiver that checks signatures; without it requests go unsigned.
    #[arg(long, env = "HOOKLANE_FORWARD_SECRET", hide_env_values = true, allow_hyphen_values = true)]
    secret: Option<String>,
    /// Only messages of these event types (repeatable; with `--endpoint`, one).
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// Only messages on these channels (repeatable; with `--endpoint`, one).
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Start after this position (the `iterator` a line printed, or a poll's), instead of
    /// with the messages posted from now on. Positions are base64url, so one may start with
    /// `-`: it is taken as the value, not as an option.
    #[arg(long, allow_hyphen_values = true)]
    iterator: Option<String>,
    /// Start with the messages created after this time (RFC 3339, as a line's `after=`
    /// prints it: the messages of a poller's first page are known by no iterator until the
    /// page's last one), instead of with those posted from now on.
    #[arg(long, conflicts_with = "iterator", value_parser = rfc3339)]
    after: Option<String>,
    /// Tries of each message at the local URL (a connection refused, a timeout or an answer
    /// other than 2xx, a redirect too, which is not followed, fails one), waiting 0.5 s,
    /// then 1 s, 2 s… between them; then it is skipped, and said so.
    #[arg(long, default_value_t = 4)]
    tries: u32,
}

/// One event of the stream: a message as the API answers it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamedMessage {
    id: String,
    event_type: String,
    /// Byte for byte as the stream carried it.
    payload: Box<RawValue>,
    /// A forwarded inbound request's media type (absent: JSON posted through the API).
    #[serde(default)]
    content_type: Option<String>,
    /// `"string"`: the payload is a JSON string of a body that was not JSON.
    #[serde(default)]
    payload_encoding: Option<String>,
    /// A forwarded inbound request's informative headers (`x-github-event`…), posted with it.
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

impl StreamedMessage {
    /// The body to post and its media type: the payload as it was posted. A forwarded body
    /// that is not JSON (a form, text) travels in the stream as a JSON string (the server
    /// says so): it is posted as that string's text, with its own media type.
    fn body(&self) -> (Vec<u8>, String) {
        let content_type = self.content_type.clone().unwrap_or_else(|| "application/json".into());
        if self.payload_encoding.as_deref() == Some("string") {
            if let Ok(text) = serde_json::from_str::<String>(self.payload.get()) {
                return (text.into_bytes(), content_type);
            }
        }
        (self.payload.get().as_bytes().to_vec(), content_type)
    }
}

/// Whether an answer says it is a Server-Sent Events stream.
fn is_event_stream(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"))
}

/// One Server-Sent Event, once its blank line has come.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    id: Option<String>,
    data: String,
    /// It was longer than the parser holds: its data was dropped as it came, and the event
    /// is to be skipped (its id still moves the position past it, so that a reconnection
    /// does not bring it back, and again, for ever).
    too_long: bool,
}

/// The longest event the parser holds (a message is at most the server's `max_body_bytes`,
/// 1 MiB by default, and some escaping); a longer one is skipped.
const MAX_EVENT: usize = 16 << 20;

/// Splits a Server-Sent Events byte stream into events (the subset hooklane sends: `id:`
/// and `data:` lines, comments, a blank line ending each event).
struct SseParser {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no newline.
    scanned: usize,
    current: SseEvent,
    has_data: bool,
    /// The line being read went past `limit`: its bytes are dropped up to its newline.
    dropping: bool,
    /// The most one line, or one event's data, may hold.
    limit: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limit(MAX_EVENT)
    }
}

impl SseParser {
    fn with_limit(limit: usize) -> Self {
        SseParser {
            buffer: Vec::new(),
            scanned: 0,
            current: SseEvent::default(),
            has_data: false,
            dropping: false,
            limit,
        }
    }

    /// The current event is too long: what it held goes, and so will the rest of its data.
    fn drop_current(&mut self) {
        self.current.too_long = true;
        self.current.data = String::new();
        // So that it is reported at its blank line, even without a data line of its own.
        self.has_data = true;
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Vec<SseEvent> {
        if self.dropping {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    bytes = &bytes[end + 1..];
                    self.dropping = false;
                }
                None => return Vec::new(),
            }
        }
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        // Lines end with `\n`, `\r\n` or a lone `\r`, as the format has it: the server splits
        // a body's raw line breaks (a posted JSON body's `\r\n` whitespace) into data lines at
        // either character.
        loop {
            let from = start + self.scanned;
            let Some(found) = self.buffer[from..].iter().position(|b| matches!(b, b'\n' | b'\r')) else { break };
            let end = from + found;
            let next = match (self.buffer[end], self.buffer.get(end + 1)) {
                // Perhaps the first half of a `\r\n`: looked at again with what comes next.
                (b'\r', None) => break,
                (b'\r', Some(b'\n')) => end + 2,
                _ => end + 1,
            };
            self.scanned = 0;
            let line = String::from_utf8_lossy(&self.buffer[start..end]).into_owned();
            start = next;
            let line = line.as_str();
            if line.is_empty() {
                if self.has_data {
                    events.push(std::mem::take(&mut self.current));
                }
                self.current = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                // An empty id would resume from nowhere: kept as none.
                "id" => self.current.id = Some(value.to_string()).filter(|id| !id.is_empty() && !id.contains('\0')),
                "data" if self.current.too_long => {}
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                    if self.current.data.len() > self.limit {
                        self.drop_current();
                    }
                }
                _ => {}
            }
        }
        self.buffer.drain(..start);
        // (A `\r` last is not scanned past: the byte after it decides where its line ends.)
        self.scanned = self.buffer.len() - usize::from(self.buffer.last() == Some(&b'\r'));
        if self.buffer.len() > self.limit {
            // A line without end past the limit: dropped, and its event with it, rather than
            // held (memory) or the stream dropped (read again from the same position, it
            // would bring the same event back for ever).
            self.buffer = Vec::new();
            self.scanned = 0;
            self.dropping = true;
            self.drop_current();
        }
        events
    }
}

/// What both readers share: the arguments, the signing secret, the two HTTP clients.
struct Forwarding {
    args: ForwardArgs,
    secret: Option<Secret>,
    base: String,
    /// `base` as printed: without a user name and password it may carry.
    shown: String,
    /// The server's: no overall timeout (a stream stays open, a long-poll waits), but the
    /// server writes at least every 15 s (a keep-alive comment) and a long-poll answers
    /// within 30 s: silence for 45 s is a dead connection (a laptop that slept, a NAT that
    /// forgot it), read again from where it was.
    client: reqwest::Client,
    /// The local receiver's.
    local: reqwest::Client,
}

/// Whether nothing listens at the local URL (the connection refused): waited for, as a dev
/// server restarting; not a name that does not resolve or a certificate refused, which do
/// not mend themselves.
fn nothing_listens(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        source = s.source();
    }
    false
}

/// Refuses `url` unless it is an `http://` or `https://` URL with a host; `shown` names it.
fn http_url(what: &str, shown: &str, url: &str) -> anyhow::Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        _ => bail!("{what} {shown} is not an http:// or https:// URL (write it whole: http://localhost:3000/webhooks)"),
    }
}

/// Runs until interrupted, or until the server refuses the token or the application.
pub async fn run(args: ForwardArgs) -> anyhow::Result<()> {
    let secret = args.secret.as_deref().map(Secret::parse).transpose().map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let base = args.server.trim_end_matches('/').to_string();
    // Checked before anything is read: a URL without its scheme (`localhost:3000/hooks`)
    // failed only as each message was posted, and every message was skipped after its
    // tries; a server's (`localhost:8071` reads as the scheme `localhost`) was tried again
    // for ever.
    http_url("--server", &without_credentials(&base), &base)?;
    http_url("the local URL", &args.to, &args.to)?;
    // reqwest would send a URL's user and password as `Authorization: Basic …` beside the
    // token's `Authorization: Bearer …`: hooklane reads the first and answers 401, a proxy
    // doing basic authentication refuses the pair (nginx: 400). One header cannot carry
    // both, so such a URL is refused before anything is sent.
    if let Ok(url) = reqwest::Url::parse(&base) {
        if !url.username().is_empty() || url.password().is_some() {
            bail!(
                "--server {} carries a user name or password: hooklane authenticates forward by --token alone (a bearer token), and one Authorization header cannot carry both; give the URL without them",
                without_credentials(&base)
            );
        }
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(45))
        .tcp_keepalive(Duration::from_secs(30))
        .build()?;
    // Redirects are not followed, as deliveries do not follow them: a redirected POST would
    // go on as a GET without its body (and its signed headers to another host), and the
    // answer there would count as the message's.
    let local = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    eprintln!("hooklane forward: {} → {}", args.endpoint.as_deref().unwrap_or(&args.app), args.to);
    let shown = without_credentials(&base);
    let f = Forwarding { args, secret, base, shown, client, local };
    match f.args.endpoint.clone() {
        Some(endpoint) => f.poll(&endpoint).await,
        None => f.stream().await,
    }
}

/// Where reading starts: after `--iterator`, or `--after`'s time, else with what is
/// posted from now on.
fn start(args: &ForwardArgs) -> (&'static str, String) {
    match (&args.iterator, &args.after) {
        (Some(iterator), _) => ("iterator", iterator.clone()),
        (None, Some(after)) => ("after", after.clone()),
        (None, None) => ("after", Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
    }
}

/// `--after`: a time in RFC 3339, passed on in UTC with milliseconds.
fn rfc3339(text: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Millis, true))
        .map_err(|e| format!("not an RFC 3339 time such as 2026-01-31T12:00:00.000Z ({e})"))
}

/// A refusal that stays one (a token, application, endpoint or position the server
/// refuses: 4xx but 429) ends the command; anything else is tried again.
fn refused(url: &reqwest::Url, status: reqwest::StatusCode, text: &str, last: Option<&str>) -> anyhow::Result<()> {
    if matches!(status.as_u16(), 400..=499) && status.as_u16() != 429 {
        let hint = match last {
            // E.g. a database restored from a backup older than the position.
            Some(id) if status.as_u16() == 422 => format!(
                " (the last message forwarded was at {id}; start again without --iterator, or with an earlier one)"
            ),
            // A token revoked or expired meanwhile, an application deleted: where to go on
            // from once it is put right.
            Some(id) => format!(" (the last message forwarded was at {id}: start again with --iterator {id})"),
            None => String::new(),
        };
        bail!("{} answered {status}: {text}{hint}", without_credentials(url.as_str()));
    }
    Ok(())
}

/// Seconds a read of a poller waits for messages (the server answers within them).
const LONG_POLL: &str = "30";

/// A poller's answer (Svix's `PollingEndpointOut`).
#[derive(Deserialize)]
struct PollerPage {
    data: Vec<StreamedMessage>,
    iterator: String,
}

impl Forwarding {
    /// Reads a polling endpoint's poller, long-polling, from page to page.
    async fn poll(&self, endpoint: &str) -> anyhow::Result<()> {
        let args = &self.args;
        if args.event_types.len() > 1 || args.channels.len() > 1 {
            bail!("with --endpoint, at most one --event-type and one --channel (a poller takes one of each)");
        }
        let mut fixed: Vec<(&str, String)> = vec![("limit", "100".into())];
        fixed.extend(args.event_types.first().map(|t| ("event_type", t.clone())));
        fixed.extend(args.channels.first().map(|c| ("channel", c.clone())));
        let path = format!("{}/api/v1/app/{}/poller/{endpoint}", self.base, args.app);
        let mut position = start(args);
        let mut backoff = Duration::from_millis(500);
        let mut connected = false;
        loop {
            // The first read answers at once (so that a refusal, or the connection, is known
            // at once); the next ones wait for messages.
            let wait = ("wait", if connected { LONG_POLL } else { "0" }.to_string());
            let query = fixed.iter().cloned().chain([position.clone(), wait]);
            let url = reqwest::Url::parse_with_params(&path, query).context("--server is not a URL")?;
            let asked = std::time::Instant::now();
            match self.client.get(url.clone()).bearer_auth(&args.token).send().await {
                // Read whole first: a connection cut while the page is read is tried again,
                // and so is an answer that is no page (a captive portal's or a proxy's page,
                // answered 200 while the network or the server is not what it should be).
                Ok(response) if response.status().is_success() => {
                    match response.bytes().await.map(|body| serde_json::from_slice::<PollerPage>(&body)) {
                        Ok(Ok(page)) => {
                            // A caught-up read that did not wait (the server's waiting readers
                            // were all taken) is not repeated at once.
                            if connected && page.data.is_empty() && asked.elapsed() < Duration::from_secs(1) {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            backoff = Duration::from_millis(500);
                            if !connected {
                                eprintln!("hooklane forward: connected to {}", self.shown);
                                connected = true;
                            }
                            // Each line's position is the one to go on from: the page's start
                            // until its last message is handled (what follows it would be
                            // posted again). The first page's start is a time (`after=`, for
                            // `--after`), when no `--iterator` was given.
                            let from = format!("{}={}", position.0, position.1);
                            let next = format!("iterator={}", page.iterator);
                            let last = page.data.len();
                            for (i, message) in page.data.iter().enumerate() {
                                let at = if i + 1 == last { &next } else { &from };
                                self.forward_one(message, at).await;
                            }
                            position = ("iterator", page.iterator);
                            continue;
                        }
                        // JSON of another shape is a server this cannot read: no use asking
                        // again. Text that is no JSON (a captive portal's page, an answer
                        // cut short) may pass.
                        Ok(Err(e)) if e.is_data() => {
                            bail!("the server's answer is not a poller's page ({e}): is it a hooklane server?")
                        }
                        Ok(Err(e)) => eprintln!(
                            "hooklane forward: the answer is not a poller's page ({e}); trying again in {backoff:?}"
                        ),
                        Err(e) => {
                            eprintln!("hooklane forward: the answer was cut off ({e}); trying again in {backoff:?}")
                        }
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let last = (position.0 == "iterator").then_some(position.1.as_str());
                    refused(&url, status, &text, last)?;
                    eprintln!("hooklane forward: {status} from the server; trying again in {backoff:?}");
                }
                Err(e) => eprintln!("hooklane forward: cannot reach {} ({e}); trying again in {backoff:?}", self.shown),
            }
            connected = false;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Reads the application's event stream, reconnecting after the last event handled.
    async fn stream(&self) -> anyhow::Result<()> {
        let args = &self.args;
        let (base, client) = (self.base.as_str(), &self.client);
        let mut query: Vec<(&str, String)> = args.event_types.iter().map(|t| ("event_types", t.clone())).collect();
        query.extend(args.channels.iter().map(|c| ("channels", c.clone())));
        query.push(start(args));
        let stream_url =
            reqwest::Url::parse_with_params(&format!("{base}/api/v1/app/{}/events/stream", args.app), &query)
                .context("--server is not a URL")?;
        let mut last_id: Option<String> = None;
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut request = client.get(stream_url.clone()).bearer_auth(&args.token);
            if let Some(id) = &last_id {
                request = request.header("last-event-id", id);
            }
            match request.send().await {
                // A success that is no event stream (a captive portal's page): not connected,
                // tried again after the backoff rather than every half second.
                Ok(response) if response.status().is_success() && !is_event_stream(&response) => {
                    eprintln!("hooklane forward: the answer is not an event stream; trying again in {backoff:?}");
                }
                Ok(response) if response.status().is_success() => {
                    backoff = Duration::from_millis(500);
                    eprintln!("hooklane forward: connected to {}", self.shown);
                    let mut body = response.bytes_stream();
                    let mut parser = SseParser::default();
                    let ended = loop {
                        let chunk = match body.next().await {
                            Some(Ok(chunk)) => chunk,
                            Some(Err(e)) => break format!("the stream broke ({e})"),
                            None => break "the server ended the stream".to_string(),
                        };
                        for event in parser.feed(&chunk) {
                            let position = format!("iterator={}", event.id.as_deref().unwrap_or("-"));
                            if event.too_long {
                                eprintln!(
                                    "hooklane forward: an event longer than {} MiB, at {position}: skipped (too large to forward)",
                                    MAX_EVENT >> 20
                                );
                            } else {
                                match serde_json::from_str::<StreamedMessage>(&event.data) {
                                    Ok(message) => self.forward_one(&message, &position).await,
                                    Err(e) => eprintln!(
                                        "hooklane forward: an event that is not a message ({e}), at {position}: skipped"
                                    ),
                                }
                            }
                            if event.id.is_some() {
                                last_id = event.id;
                            }
                        }
                    };
                    eprintln!("hooklane forward: {ended}; reconnecting");
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    refused(&stream_url, status, &text, last_id.as_deref())?;
                    eprintln!("hooklane forward: {status} from the server; trying again in {backoff:?}");
                }
                Err(e) => eprintln!("hooklane forward: cannot reach {} ({e}); trying again in {backoff:?}", self.shown),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Posts one message to the local URL, trying again as `--tries` says; prints how it went,
    /// with `position`, where to go on from (`iterator=…` or `after=…`).
    async fn forward_one(&self, message: &StreamedMessage, position: &str) {
        let (args, local, secret) = (&self.args, &self.local, self.secret.as_ref());
        let (body, content_type) = message.body();
        let mut wait = Duration::from_millis(500);
        // Tries spent on answers; a local URL nothing listens on (a dev server restarting)
        // is waited for instead, however long, rather than its messages skipped.
        let mut attempt = 0;
        while attempt < args.tries.max(1) {
            let timestamp = Utc::now().timestamp();
            let mut request = local.post(&args.to);
            for (name, value) in &message.headers {
                // Values a token without `ViewEndpointSecret` is not shown are not posted.
                if !SET_BY_SEND.contains(&name.to_ascii_lowercase().as_str()) && value != REDACTED {
                    request = request.header(name, value);
                }
            }
            let mut request = request
                .header("content-type", &content_type)
                .header("webhook-id", &message.id)
                .header("webhook-timestamp", timestamp.to_string());
            if let Some(secret) = secret {
                request =
                    request.header("webhook-signature", signature_header([secret], &message.id, timestamp, &body));
            }
            let started = std::time::Instant::now();
            let outcome = match request.body(body.clone()).send().await {
                Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
                Ok(r) => Err(r.status().as_u16().to_string()),
                Err(e) if nothing_listens(&e) => {
                    say(format_args!(
                        "nothing answers at {} ({e}) for {} {}, trying again in {wait:?}",
                        args.to, message.event_type, message.id
                    ));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                    continue;
                }
                Err(e) => Err(format!("error: {e}")),
            };
            attempt += 1;
            let took = started.elapsed().as_millis();
            match outcome {
                Ok(status) => {
                    say(format_args!("{status} {} {} ({took} ms) {position}", message.event_type, message.id));
                    return;
                }
                Err(why) if attempt < args.tries => {
                    say(format_args!(
                        "{why} {} {} ({took} ms), trying again in {wait:?}",
                        message.event_type, message.id
                    ));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(why) => {
                    say(format_args!(
                        "{why} {} {} ({took} ms): skipped after {attempt} tries {position}",
                        message.event_type, message.id
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_wherever_the_bytes_break() {
        let text =
            b": keep-alive\n\nid: a1\ndata: {\"x\":1}\n\nid: b2\r\ndata: line one\r\ndata: line two\r\n\r\n:\n\n";
        let whole = SseParser::default().feed(text);
        let want = vec![
            SseEvent { id: Some("a1".into()), data: "{\"x\":1}".into(), too_long: false },
            SseEvent { id: Some("b2".into()), data: "line one\nline two".into(), too_long: false },
        ];
        assert_eq!(whole, want);
        // Fed a byte at a time, the same events come out.
        let mut parser = SseParser::default();
        let bytewise: Vec<SseEvent> = text.iter().flat_map(|b| parser.feed(&[*b])).collect();
        assert_eq!(bytewise, want);
        // An event without data (an id alone) is none; an empty id is no id.
        assert!(SseParser::default().feed(b"id: only\n\n").is_empty());
        assert_eq!(
            SseParser::default().feed(b"id:\ndata: x\n\n"),
            vec![SseEvent { id: None, data: "x".into(), too_long: false }]
        );
        // Bodies as posted: JSON as it came, a forwarded form as its text, with its type.
        let message = |json: &str| serde_json::from_str::<StreamedMessage>(json).unwrap().body();
        assert_eq!(
            message(r#"{"id":"m","eventType":"e","payload":{"a": 1}}"#),
            (br#"{"a": 1}"#.to_vec(), "application/json".into())
        );
        let form = r#"{"id":"m","eventType":"e","payload":"a=1&b=%2B",
            "contentType":"application/x-www-form-urlencoded","payloadEncoding":"string"}"#;
        assert_eq!(message(form), (b"a=1&b=%2B".to_vec(), "application/x-www-form-urlencoded".into()));
        // Text that is JSON (here a JSON string) is the text itself: not unquoted.
        let text = r#"{"id":"m","eventType":"e","payload":"hi","contentType":"text/plain"}"#;
        assert_eq!(message(text), (br#""hi""#.to_vec(), "text/plain".into()));
    }

    /// A lone `\r` ends a line as `\n` and `\r\n` do, wherever the chunks of the stream
    /// break: the server writes a body's `\r\n` as data lines split at both characters.
    #[test]
    fn lines_end_at_a_lone_carriage_return_too() {
        let event = |id: &str, data: &str| SseEvent { id: Some(id.into()), data: data.into(), too_long: false };
        let whole = b"id: 1\rdata: {\"a\":\rdata: \ndata: 1}\r\n\r\nid: 2\ndata: x\n\n";
        let want = vec![event("1", "{\"a\":\n\n1}"), event("2", "x")];
        assert_eq!(SseParser::default().feed(whole), want);
        // Cut at every byte: a `\r` last in a chunk waits for the next.
        for cut in 1..whole.len() {
            let mut parser = SseParser::default();
            let mut got = parser.feed(&whole[..cut]);
            got.extend(parser.feed(&whole[cut..]));
            assert_eq!(got, want, "cut at {cut}");
        }
        let data = &want[0].data;
        assert!(serde_json::from_str::<serde_json::Value>(data).is_ok(), "{data}");
    }

    /// An event past the limit is skipped, with its id (so that a reconnection goes on after
    /// it, instead of reading it again for ever), and the events after it still come.
    #[test]
    fn an_event_past_the_limit_is_skipped_and_the_stream_goes_on() {
        let event = |id: &str, data: &str| SseEvent { id: Some(id.into()), data: data.into(), too_long: false };
        let skipped = |id: &str| SseEvent { id: Some(id.into()), data: String::new(), too_long: true };
        // A data line past the limit, coming in pieces, between two events that fit.
        let mut parser = SseParser::with_limit(16);
        let mut got = parser.feed(b"id: a\ndata: short\n\nid: b\ndata: ");
        for _ in 0..10 {
            got.extend(parser.feed(b"0123456789"));
        }
        got.extend(parser.feed(b"tail\r\ndata: more\n\nid: c\ndata: next\n\n"));
        assert_eq!(got, vec![event("a", "short"), skipped("b"), event("c", "next")]);
        // Data lines that fit one by one but not together; an id after the data still counts.
        let got = SseParser::with_limit(16).feed(b"data: 0123456789\ndata: 0123456789\nid: d\n\ndata: ok\nid: e\n\n");
        assert_eq!(got, vec![skipped("d"), event("e", "ok")]);
        // By default a line is held up to 16 MiB, no more, and then dropped with its event.
        let mut parser = SseParser::default();
        assert!(parser.feed(b"id: big\ndata: ").is_empty());
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..17 {
            assert!(parser.feed(&chunk).is_empty());
            assert!(parser.buffer.len() <= MAX_EVENT);
        }
        assert_eq!(parser.feed(b"\n\nid: after\ndata: {}\n\n"), vec![skipped("big"), event("after", "{}")]);
    }

    /// Positions, keys and secrets are taken as values even where they start with `-` (a
    /// base64url position does one time in 64; CI once drew `-g…`).
    #[test]
    fn values_may_start_with_a_hyphen() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ForwardArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from([
            "forward",
            "http://localhost:3000",
            "--app",
            "a",
            "--token",
            "-tok",
            "--secret",
            "-sec",
            "--iterator",
            "-gAAAA",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.args.iterator.as_deref(), Some("-gAAAA"));
        assert_eq!(cli.args.token, "-tok");
        assert_eq!(cli.args.secret.as_deref(), Some("-sec"));
    }
}
