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

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use hooklane_core::signing::{signature_header, Secret};
use hooklane_server::api::attempt::REDACTED;

use crate::sign_tools::SET_BY_SEND;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(clap::Args)]
pub struct ForwardArgs {
    /// Where each message is posted, e.g. http://localhost:3000/webhooks.
    to: String,
    /// The hooklane server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8071", env = "HOOKLANE_URL")]
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
    /// Tries of each message at the local URL (a connection refused, a timeout or an answer
    /// other than 2xx fails one), waiting 0.5 s, then 1 s, 2 s… between them; then it is
    /// skipped, and said so.
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

/// One Server-Sent Event, once its blank line has come.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    id: Option<String>,
    data: String,
}

/// The longest line the parser holds (a message is at most the server's `max_body_bytes`,
/// 1 MiB by default, and some escaping); past it the stream is dropped and read again.
const MAX_LINE: usize = 16 << 20;

/// Splits a Server-Sent Events byte stream into events (the subset hooklane sends: `id:`
/// and `data:` lines, comments, a blank line ending each event).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no newline.
    scanned: usize,
    current: SseEvent,
    has_data: bool,
}

#[derive(Debug, PartialEq)]
struct LineTooLong;

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(found) = self.buffer[start + self.scanned..].iter().position(|b| *b == b'\n') {
            let end = start + self.scanned + found;
            self.scanned = 0;
            let line = String::from_utf8_lossy(&self.buffer[start..end]).into_owned();
            start = end + 1;
            let line = line.strip_suffix('\r').unwrap_or(&line);
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
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        self.buffer.drain(..start);
        self.scanned = self.buffer.len();
        if self.buffer.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(events)
    }
}

/// What both readers share: the arguments, the signing secret, the two HTTP clients.
struct Forwarding {
    args: ForwardArgs,
    secret: Option<Secret>,
    base: String,
    /// The server's: no overall timeout (a stream stays open, a long-poll waits), but the
    /// server writes at least every 15 s (a keep-alive comment) and a long-poll answers
    /// within 30 s: silence for 45 s is a dead connection (a laptop that slept, a NAT that
    /// forgot it), read again from where it was.
    client: reqwest::Client,
    /// The local receiver's.
    local: reqwest::Client,
}

/// Runs until interrupted, or until the server refuses the token or the application.
pub async fn run(args: ForwardArgs) -> anyhow::Result<()> {
    let secret = args.secret.as_deref().map(Secret::parse).transpose().map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let base = args.server.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(45))
        .tcp_keepalive(Duration::from_secs(30))
        .build()?;
    let local = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
    eprintln!("hooklane forward: {} → {}", args.endpoint.as_deref().unwrap_or(&args.app), args.to);
    let f = Forwarding { args, secret, base, client, local };
    match f.args.endpoint.clone() {
        Some(endpoint) => f.poll(&endpoint).await,
        None => f.stream().await,
    }
}

/// Where reading starts: after `--iterator`, else with what is posted from now on.
fn start(args: &ForwardArgs) -> (&'static str, String) {
    match &args.iterator {
        Some(iterator) => ("iterator", iterator.clone()),
        None => ("after", Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
    }
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
            _ => String::new(),
        };
        bail!("{url} answered {status}: {text}{hint}");
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
                // an answer that is no page stops the command.
                Ok(response) if response.status().is_success() => match response.bytes().await {
                    Ok(body) => {
                        let page: PollerPage = serde_json::from_slice(&body).context("the poller's answer")?;
                        // A caught-up read that did not wait (the server's waiting readers were
                        // all taken) is not repeated at once.
                        if connected && page.data.is_empty() && asked.elapsed() < Duration::from_secs(1) {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        backoff = Duration::from_millis(500);
                        if !connected {
                            eprintln!("hooklane forward: connected to {}", self.base);
                            connected = true;
                        }
                        // Each line's position is the one to go on from: the page's start until
                        // its last message is handled (what follows it would be posted again).
                        let from = if position.0 == "iterator" { position.1.clone() } else { "-".into() };
                        let last = page.data.len();
                        for (i, message) in page.data.iter().enumerate() {
                            let at = if i + 1 == last { &page.iterator } else { &from };
                            self.forward_one(message, at).await;
                        }
                        position = ("iterator", page.iterator);
                        continue;
                    }
                    Err(e) => eprintln!("hooklane forward: the answer was cut off ({e}); trying again in {backoff:?}"),
                },
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let last = (position.0 == "iterator").then_some(position.1.as_str());
                    refused(&url, status, &text, last)?;
                    eprintln!("hooklane forward: {status} from the server; trying again in {backoff:?}");
                }
                Err(e) => eprintln!("hooklane forward: cannot reach {} ({e}); trying again in {backoff:?}", self.base),
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
                Ok(response) if response.status().is_success() => {
                    backoff = Duration::from_millis(500);
                    eprintln!("hooklane forward: connected to {base}");
                    let mut body = response.bytes_stream();
                    let mut parser = SseParser::default();
                    let ended = loop {
                        let chunk = match body.next().await {
                            Some(Ok(chunk)) => chunk,
                            Some(Err(e)) => break format!("the stream broke ({e})"),
                            None => break "the server ended the stream".to_string(),
                        };
                        let Ok(events) = parser.feed(&chunk) else {
                            break format!("a line of the stream is longer than {MAX_LINE} bytes");
                        };
                        for event in events {
                            let position = event.id.as_deref().unwrap_or("-");
                            match serde_json::from_str::<StreamedMessage>(&event.data) {
                                Ok(message) => self.forward_one(&message, position).await,
                                Err(e) => eprintln!(
                                    "hooklane forward: an event that is not a message ({e}), at {position}: skipped"
                                ),
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
                Err(e) => eprintln!("hooklane forward: cannot reach {base} ({e}); trying again in {backoff:?}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Posts one message to the local URL, trying again as `--tries` says; prints how it went,
    /// with `position`, where to go on from.
    async fn forward_one(&self, message: &StreamedMessage, position: &str) {
        let (args, local, secret) = (&self.args, &self.local, self.secret.as_ref());
        let (body, content_type) = message.body();
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=args.tries.max(1) {
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
                Err(e) => Err(format!("error: {e}")),
            };
            let took = started.elapsed().as_millis();
            match outcome {
                Ok(status) => {
                    say(format_args!("{status} {} {} ({took} ms) iterator={position}", message.event_type, message.id));
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
                        "{why} {} {} ({took} ms): skipped after {attempt} tries iterator={position}",
                        message.event_type, message.id
                    ));
                }
            }
        }
    }
}

/// One line on standard output; a closed output (`| head`) is no reason to stop.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_wherever_the_bytes_break() {
        let text =
            b": keep-alive\n\nid: a1\ndata: {\"x\":1}\n\nid: b2\r\ndata: line one\r\ndata: line two\r\n\r\n:\n\n";
        let whole = SseParser::default().feed(text).unwrap();
        let want = vec![
            SseEvent { id: Some("a1".into()), data: "{\"x\":1}".into() },
            SseEvent { id: Some("b2".into()), data: "line one\nline two".into() },
        ];
        assert_eq!(whole, want);
        // Fed a byte at a time, the same events come out.
        let mut parser = SseParser::default();
        let bytewise: Vec<SseEvent> = text.iter().flat_map(|b| parser.feed(&[*b]).unwrap()).collect();
        assert_eq!(bytewise, want);
        // An event without data (an id alone) is none; an empty id is no id.
        assert!(SseParser::default().feed(b"id: only\n\n").unwrap().is_empty());
        assert_eq!(
            SseParser::default().feed(b"id:\ndata: x\n\n").unwrap(),
            vec![SseEvent { id: None, data: "x".into() }]
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
        // A line without end is held up to a limit.
        let mut parser = SseParser::default();
        let chunk = vec![b'x'; 1 << 20];
        let results: Vec<_> = (0..17).map(|_| parser.feed(&chunk)).collect();
        assert!(results[..15].iter().all(|r| r.as_ref().is_ok_and(Vec::is_empty)));
        assert_eq!(results[16], Err(LineTooLong));
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
