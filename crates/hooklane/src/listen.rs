//! `hooklane listen`: a development receiver. It accepts every request (with a body up to
//! `--max-body`), checks the Standard Webhooks signature when given a secret, prints one
//! line per delivery and answers with a chosen status (to try retries).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hooklane_core::signing::Verifier;
use hooklane_core::Utc;
use serde_json::json;

/// `--max-body` unless given: far above what hooklane delivers by default (`max_body_bytes`,
/// 1 MiB, plus at most 4 MiB a transform adds), yet a bound on the memory a sender can take.
const DEFAULT_MAX_BODY: u64 = 64 << 20;

#[derive(clap::Args)]
pub struct ListenArgs {
    #[arg(long, default_value_t = 9000)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Endpoint secret (`whsec_…`) or Ed25519 public key (`whpk_…`); repeat during a
    /// rotation. Without it signatures are not checked.
    #[arg(long, env = "HOOKLANE_LISTEN_SECRET", hide_env_values = true)]
    secret: Vec<String>,
    /// Status to answer with when the signature is valid (or not checked): a final one,
    /// 200 to 599 (an informational 1xx is no answer to a delivery).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..=599))]
    status: u16,
    /// Seconds a `webhook-timestamp` may differ from this clock.
    #[arg(long, default_value_t = hooklane_core::signing::DEFAULT_TOLERANCE_SECS,
          value_parser = clap::value_parser!(i64).range(0..))]
    tolerance: i64,
    /// Print one JSON object per delivery instead of text.
    #[arg(long)]
    json: bool,
    /// Largest request body taken, in bytes; a larger one is answered 413 and reported in
    /// one line, unread.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    max_body: u64,
}

struct Listener {
    verifier: Option<Verifier>,
    status: StatusCode,
    json: bool,
    max_body: u64,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let secrets = crate::sign_tools::parse_verify_keys(&args.secret)?;
    let status = StatusCode::from_u16(args.status).context("--status must be an HTTP status code")?;
    let state = Arc::new(Listener {
        verifier: (!secrets.is_empty()).then(|| Verifier::new(secrets).with_tolerance(args.tolerance)),
        status,
        json: args.json,
        max_body: args.max_body,
    });
    // The body is read by `receive` itself, up to `--max-body` rather than axum's 2 MiB:
    // hooklane's own `max_body_bytes` has no ceiling and a transform may add 4 MiB to a
    // payload, so the limit is the user's to raise; and a refused body is reported, where
    // axum's 413 would print nothing.
    let app = axum::Router::new().fallback(receive).with_state(state);
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    eprintln!("hooklane listen: receiving on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(State(l): State<Arc<Listener>>, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let body = match read_body(body, &headers, l.max_body).await {
        Ok(body) => body,
        Err(unread) => {
            let (status, why) = match unread {
                Unread::TooLarge => {
                    (StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than --max-body ({} bytes)", l.max_body))
                }
                Unread::Broken(e) => (StatusCode::BAD_REQUEST, format!("body not received: {e}")),
            };
            if l.json {
                let line = json!({
                    "time": Utc::now(),
                    "method": method.as_str(),
                    "path": uri.path(),
                    "webhookId": header("webhook-id"),
                    "refused": why,
                    "status": status.as_u16(),
                });
                crate::output::say(format_args!("{line}"));
            } else {
                let line = format!(
                    "{} {} {} webhook-id={} refused: {why}, answered {}",
                    Utc::now().format("%H:%M:%S%.3f"),
                    method,
                    uri.path(),
                    header("webhook-id").unwrap_or("-"),
                    status.as_u16()
                );
                crate::output::say(format_args!("{}", printable(&line)));
            }
            // The rest of the body is not read: the connection cannot carry another request.
            return (status, [(CONNECTION, "close")]).into_response();
        }
    };
    let check = l.verifier.as_ref().map(|v| {
        v.verify(
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &body,
            Utc::now().timestamp(),
        )
    });
    let verdict = match &check {
        None => "unchecked".to_string(),
        Some(Ok(())) => "valid".to_string(),
        Some(Err(e)) => format!("invalid ({e})"),
    };
    let text = String::from_utf8_lossy(&body);
    if l.json {
        let body_json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!(text));
        let line = json!({
            "time": Utc::now(),
            "method": method.as_str(),
            "path": uri.path(),
            "webhookId": header("webhook-id"),
            "webhookTimestamp": header("webhook-timestamp"),
            "signature": verdict,
            "body": body_json,
        });
        crate::output::say(format_args!("{}", printable_json(&line.to_string())));
    } else {
        let line = format!(
            "{} {} {} webhook-id={} signature={} body={}",
            Utc::now().format("%H:%M:%S%.3f"),
            method,
            uri.path(),
            header("webhook-id").unwrap_or("-"),
            verdict,
            text
        );
        crate::output::say(format_args!("{}", printable(&line)));
    }
    match check {
        Some(Err(_)) => StatusCode::UNAUTHORIZED,
        _ => l.status,
    }
    .into_response()
}

/// Why a body was not taken.
enum Unread {
    TooLarge,
    Broken(axum::Error),
}

/// Reads the whole body, refusing more than `max` bytes: at once when its length says so,
/// else as soon as the bytes received go past it (a chunked body says no length).
async fn read_body(body: Body, headers: &HeaderMap, max: u64) -> Result<Vec<u8>, Unread> {
    let announced = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > max) {
        return Err(Unread::TooLarge);
    }
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Unread::Broken)?;
        if (out.len() + chunk.len()) as u64 > max {
            return Err(Unread::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `text` as it may be written to a terminal: a sender's control characters (ESC starting
/// an ANSI or OSC sequence, which can retitle the window, rewrite the screen or worse; BEL,
/// CR, DEL, the C1 set) are shown as `\u{1b}` rather than obeyed. Newlines and tabs stay, so
/// a pretty-printed body still reads as one.
fn printable(text: &str) -> Cow<'_, str> {
    shown(text, |out, c| {
        // Writing to a String cannot fail.
        let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
    })
}

/// A JSON line as [`printable`] shows text: serde escapes only U+0000–U+001F, so DEL, the
/// C1 set and the bidirectional controls are written `\u…` here (they can only be inside
/// strings, where that is the same character).
fn printable_json(line: &str) -> Cow<'_, str> {
    shown(line, |out, c| {
        let _ = write!(out, "\\u{:04x}", u32::from(c));
    })
}

/// Whether `c` is shown escaped: a control character (but newline and tab), or one that
/// reorders what follows on screen (bidirectional overrides and isolates).
fn hidden(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every [`hidden`] character written by `escape`.
fn shown(text: &str, escape: impl Fn(&mut String, char)) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("{\"a\": 1}\n\tb"), "{\"a\": 1}\n\tb");
        assert_eq!(printable("\x1b]0;pwned\x07"), "\\u{1b}]0;pwned\\u{7}");
        assert_eq!(printable("a\rb\x7f\u{9b}31m\0"), "a\\u{d}b\\u{7f}\\u{9b}31m\\u{0}");
        assert_eq!(printable("safe\u{202e}txt.exe"), "safe\\u{202e}txt.exe", "a bidi override");
        let line = serde_json::json!({ "body": "a\u{7f}\u{9b}\u{202e}\n" }).to_string();
        let shown = super::printable_json(&line);
        assert_eq!(shown, r#"{"body":"a\u007f\u009b\u202e\n"}"#);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&shown).unwrap(),
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            "the same JSON"
        );
        assert_eq!(printable("é ✓ \u{fffd}"), "é ✓ \u{fffd}");
    }
}
