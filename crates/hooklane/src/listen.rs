//! `hooklane listen`: a development receiver. It accepts every request, checks the
//! Standard Webhooks signature when given a secret, prints one line per delivery and
//! answers with a chosen status (to try retries).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use hooklane_core::signing::Verifier;
use hooklane_core::Utc;
use serde_json::json;

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
    /// Status to answer with when the signature is valid (or not checked).
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// Seconds a `webhook-timestamp` may differ from this clock.
    #[arg(long, default_value_t = hooklane_core::signing::DEFAULT_TOLERANCE_SECS)]
    tolerance: i64,
    /// Print one JSON object per delivery instead of text.
    #[arg(long)]
    json: bool,
}

struct Listener {
    verifier: Option<Verifier>,
    status: StatusCode,
    json: bool,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let secrets = crate::sign_tools::parse_verify_keys(&args.secret)?;
    let status = StatusCode::from_u16(args.status).context("--status must be an HTTP status code")?;
    let state = Arc::new(Listener {
        verifier: (!secrets.is_empty()).then(|| Verifier::new(secrets).with_tolerance(args.tolerance)),
        status,
        json: args.json,
    });
    // No body limit (axum's default is 2 MiB): hooklane's own `max_body_bytes` has no
    // ceiling and a transform may add 4 MiB to a payload, and a receiver for trying
    // deliveries must show whatever it is sent, not refuse it with a 413 and print nothing.
    let app = axum::Router::new().fallback(receive).layer(DefaultBodyLimit::disable()).with_state(state);
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    eprintln!("hooklane listen: receiving on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(
    State(l): State<Arc<Listener>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
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
        println!("{line}");
    } else {
        println!(
            "{} {} {} webhook-id={} signature={} body={}",
            Utc::now().format("%H:%M:%S%.3f"),
            method,
            uri.path(),
            header("webhook-id").unwrap_or("-"),
            verdict,
            text
        );
    }
    match check {
        Some(Err(_)) => StatusCode::UNAUTHORIZED,
        _ => l.status,
    }
}
