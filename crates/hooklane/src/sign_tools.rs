//! `hooklane send` and `hooklane verify`: Standard Webhooks from the command line, for
//! building and debugging receivers. `send` signs a payload as hooklane signs deliveries and
//! POSTs it to a URL; `verify` checks a signature the way a receiver must (constant-time
//! comparison, timestamp tolerance), so a receiver's mistake can be told from the sender's.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use hooklane_core::ids::{self, new_id};
use hooklane_core::signing::{signature_header, Secret, SignatureType, Verifier, VerifyKey, DEFAULT_TOLERANCE_SECS};
use hooklane_core::Utc;
use hooklane_dispatch::sender::without_credentials;

/// Where a payload comes from: `--payload`, `--payload-file` (`-` is standard input).
#[derive(clap::Args)]
pub struct PayloadArgs {
    /// The payload, as text (which may start with `-`: `-1` is JSON).
    #[arg(long, conflicts_with = "payload_file", allow_hyphen_values = true)]
    payload: Option<String>,
    /// A file holding the payload (`-`: standard input), read byte for byte.
    #[arg(long)]
    payload_file: Option<PathBuf>,
}

impl PayloadArgs {
    fn read(&self, default: Option<&str>) -> anyhow::Result<Vec<u8>> {
        match (&self.payload, &self.payload_file) {
            (Some(text), _) => Ok(text.clone().into_bytes()),
            (None, Some(path)) if path.as_os_str() == "-" => {
                let mut bytes = Vec::new();
                std::io::stdin().read_to_end(&mut bytes).context("cannot read the payload from standard input")?;
                Ok(bytes)
            }
            (None, Some(path)) => std::fs::read(path).with_context(|| format!("cannot read {}", path.display())),
            (None, None) => match default {
                Some(d) => Ok(d.as_bytes().to_vec()),
                None => bail!("give the payload with --payload or --payload-file"),
            },
        }
    }
}

#[derive(clap::Args)]
pub struct SendArgs {
    /// Where to POST the webhook.
    url: String,
    /// The endpoint's secret (`whsec_…`, or a `whsk_…` Ed25519 key pair, which signs `v1a`);
    /// repeat to sign with several, as during a rotation.
    #[arg(long, required = true, env = "HOOKLANE_SEND_SECRET", hide_env_values = true)]
    secret: Vec<String>,
    #[command(flatten)]
    payload: PayloadArgs,
    /// The `webhook-id` (default: a new `msg_…` id); send the same one twice to try a
    /// receiver's deduplication.
    #[arg(long, allow_hyphen_values = true)]
    id: Option<String>,
    /// The `webhook-timestamp` in unix seconds (default: now); an old one tries a receiver's
    /// tolerance.
    #[arg(long)]
    timestamp: Option<i64>,
    /// The request's content type.
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// An extra header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 15)]
    timeout: u64,
}

/// Headers `send` (and `forward`) set themselves; `--header` (a forwarded message's own
/// headers) may not add a second one.
pub(crate) const SET_BY_SEND: &[&str] = &["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"];

/// The payload `send` posts when given none.
const TEST_PAYLOAD: &str = r#"{"type":"hooklane.test","data":{"hello":"world"}}"#;

/// Signs and posts; the exit status says whether the receiver answered 2xx.
pub async fn send(args: SendArgs) -> anyhow::Result<bool> {
    let secrets = parse_secrets(&args.secret)?;
    let body = args.payload.read(Some(TEST_PAYLOAD))?;
    let id = args.id.unwrap_or_else(|| new_id(ids::MESSAGE));
    let timestamp = args.timestamp.unwrap_or_else(|| Utc::now().timestamp());
    let mut request = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .post(&args.url)
        .header("content-type", &args.content_type)
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature_header(&secrets, &id, timestamp, &body));
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("--header {header:?}: write it as `Name: value`")
        };
        let name = name.trim();
        if SET_BY_SEND.contains(&name.to_ascii_lowercase().as_str()) {
            bail!("--header {name}: send sets it (use --id, --timestamp or --content-type)");
        }
        request = request.header(name, value.trim());
    }
    let response = request
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot POST to {}", without_credentials(&args.url)))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{} webhook-id={id} webhook-timestamp={timestamp}", status.as_u16());
    if !text.is_empty() {
        println!("{text}");
    }
    Ok(status.is_success())
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The endpoint's secret (`whsec_…`) or Ed25519 public key (`whpk_…`); repeat to accept
    /// any of several.
    #[arg(long, required = true, env = "HOOKLANE_VERIFY_SECRET", hide_env_values = true)]
    secret: Vec<String>,
    /// The `webhook-id` header.
    #[arg(long, allow_hyphen_values = true)]
    id: String,
    /// The `webhook-timestamp` header (as received, even `-1`, which is then refused).
    #[arg(long, allow_hyphen_values = true)]
    timestamp: String,
    /// The `webhook-signature` header (one or more space-separated `v1,…` or `v1a,…`).
    #[arg(long)]
    signature: String,
    #[command(flatten)]
    payload: PayloadArgs,
    /// Seconds the timestamp may be away from now.
    #[arg(long, default_value_t = DEFAULT_TOLERANCE_SECS)]
    tolerance: i64,
    /// Check as if it were this unix time (to check a recorded request; default: now).
    #[arg(long)]
    now: Option<i64>,
}

/// Checks; prints `valid`, or why not; the exit status says which.
pub fn verify(args: VerifyArgs) -> anyhow::Result<bool> {
    let keys = parse_verify_keys(&args.secret)?;
    let body = args.payload.read(None)?;
    let now = args.now.unwrap_or_else(|| Utc::now().timestamp());
    let verdict = Verifier::new(keys).with_tolerance(args.tolerance).verify(
        Some(&args.id),
        Some(&args.timestamp),
        Some(&args.signature),
        &body,
        now,
    );
    match &verdict {
        Ok(()) => println!("valid"),
        Err(e) => println!("invalid: {e}"),
    }
    Ok(verdict.is_ok())
}

fn parse_secrets(raw: &[String]) -> anyhow::Result<Vec<Secret>> {
    raw.iter().map(|s| Secret::parse(s).map_err(|e| anyhow::anyhow!("--secret: {e}"))).collect()
}

/// `--secret` values a receiver checks with: `whsec_` secrets or `whpk_` public keys.
pub(crate) fn parse_verify_keys(raw: &[String]) -> anyhow::Result<Vec<VerifyKey>> {
    raw.iter().map(|s| VerifyKey::parse(s).map_err(|e| anyhow::anyhow!("--secret: {e}"))).collect()
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// `hmac256` (a `whsec_` secret) or `ed25519` (a `whsk_` key pair and its `whpk_`
    /// public key).
    #[arg(long = "type", default_value = "hmac256", value_parser = parse_signature_type)]
    kind: SignatureType,
}

fn parse_signature_type(s: &str) -> Result<SignatureType, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| "hmac256 or ed25519".to_string())
}

/// Prints a new secret to give an endpoint (`secret`, or a rotation's `key`), and for a key
/// pair the public key its receiver verifies with.
pub fn keygen(args: KeygenArgs) {
    let secret = Secret::generate(args.kind);
    println!("secret: {}", secret.expose());
    if args.kind == SignatureType::Ed25519 {
        println!("public key: {}", secret.verification_key());
    }
}
