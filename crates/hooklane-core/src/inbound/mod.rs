//! Inbound webhooks: checking that a request really comes from its provider, finding the
//! provider's delivery id (for deduplication) and event type, and choosing which of its
//! headers travel on. No I/O: the server hands in the headers and the raw body.
//!
//! One module per provider family: [`hmac_body`] (an HMAC of the body in a header: GitHub,
//! Shopify, generic) and [`meta`] (the same, with Meta's `GET` check of the URL);
//! [`stripe`], [`paddle`], [`calendly`], [`slack`] and [`zoom`] (an HMAC of a timestamp and
//! the body, with a freshness window); [`twitch`] (of an id, a timestamp and the body);
//! [`standard`] (Standard Webhooks); [`mailgun`] (a signature in the body); [`twilio`],
//! [`square`] and [`hubspot`] (an HMAC over the URL called); [`discord`] (Ed25519); [`token`] (a shared
//! secret sent as is: GitLab's and Telegram's tokens, HTTP basic auth). Every comparison of
//! secret material is constant-time.

pub mod calendly;
pub mod discord;
pub mod hmac_body;
pub mod hubspot;
pub mod mailgun;
pub mod meta;
pub mod paddle;
pub mod slack;
pub mod square;
pub mod standard;
pub mod stripe;
pub mod token;
pub mod twilio;
pub mod twitch;
pub mod zoom;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Request headers as the checks see them: names in lower case (repeated headers joined
/// with `", "`).
pub type Headers = BTreeMap<String, String>;

/// How long a signed timestamp stays acceptable, either way (Stripe, Paddle, Calendly, Slack,
/// Zoom, Mailgun, Discord, HubSpot, Standard Webhooks; Twitch has its own, [`twitch::TOLERANCE_SECS`]).
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// The value of header `name` (any case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    match headers.get(name) {
        Some(v) => Some(v.as_str()),
        None => headers.get(&name.to_ascii_lowercase()).map(String::as_str),
    }
}

/// How requests of a source prove where they come from. Secrets are kept as given.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum Verification {
    /// No check at all (only for trusted networks: pair it with an address allow-list).
    None,
    /// `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
    Github { secret: String },
    /// `X-Gitlab-Token: <secret token>` (GitLab sends the webhook's secret token as it is).
    Gitlab { secret_token: String },
    /// `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>`.
    Stripe { secret: String },
    /// `Paddle-Signature: ts=<unix>;h1=<hex HMAC-SHA256(secret, "ts:body")>` (Paddle Billing).
    Paddle { secret: String },
    /// Mailgun: `signature.signature` of the JSON body is the hex HMAC-SHA256 of
    /// `signature.timestamp` followed by `signature.token`, keyed with the signing key.
    Mailgun { signing_key: String },
    /// `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`.
    Shopify { secret: String },
    /// `X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:ts:body")>` with
    /// `X-Slack-Request-Timestamp: ts`.
    Slack { signing_secret: String },
    /// `x-zm-signature: v0=<hex HMAC-SHA256(secret, "v0:ts:body")>` with
    /// `x-zm-request-timestamp: ts` (Zoom's secret token).
    Zoom { secret: String },
    /// `X-Telegram-Bot-Api-Secret-Token: <secret_token>` (the `secret_token` given to
    /// `setWebhook`).
    Telegram { secret_token: String },
    /// `X-Twilio-Signature: <base64 HMAC-SHA1(auth token, URL + sorted form parameters)>`.
    Twilio { auth_token: String },
    /// Twitch EventSub: `Twitch-Eventsub-Message-Signature: sha256=<hex HMAC-SHA256(secret,
    /// id + timestamp + body)>`.
    Twitch { secret: String },
    /// Discord: `X-Signature-Ed25519: <hex Ed25519 signature of timestamp + body>` with
    /// `X-Signature-Timestamp`, checked with the application's public key (hex).
    Discord { public_key: String },
    /// `Calendly-Webhook-Signature: t=<unix>,v1=<hex HMAC-SHA256(signing key, "t.body")>`.
    Calendly { signing_key: String },
    /// `x-square-hmacsha256-signature: <base64 HMAC-SHA256(signature key, URL + body)>`.
    Square { signature_key: String },
    /// Meta (WhatsApp, Messenger, Instagram): `X-Hub-Signature-256: sha256=<hex
    /// HMAC-SHA256(app secret, body)>`; `verify_token` answers its `GET` check of the URL.
    Meta { app_secret: String, verify_token: String },
    /// HubSpot (v3): `X-HubSpot-Signature-v3: <base64 HMAC-SHA256(app secret, "POST" + URL +
    /// body + timestamp)>` with `X-HubSpot-Request-Timestamp` (milliseconds).
    Hubspot { app_secret: String },
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` with a `whsec_` secret (`v1`
    /// signatures), or the sender's Ed25519 public key, `whpk_` (`v1a`).
    StandardWebhooks { secret: String },
    /// `<header>: <prefix><hex or base64 HMAC(secret, body)>`.
    Hmac {
        header: String,
        algorithm: HmacAlgorithm,
        encoding: Encoding,
        #[serde(default)]
        prefix: Option<String>,
        secret: String,
    },
    /// `Authorization: Basic base64(username:password)`.
    BasicAuth { username: String, password: String },
}

/// Never prints secrets: only the kind of check.
impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verification::{}(<redacted>)", self.kind())
    }
}

/// A source's verification replaced by a rotation of its secret, still accepted until
/// `until`: requests the provider signed with the old secret (sent before the secret was
/// changed on its side, or retried since) keep passing while both are in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviousVerification {
    pub verification: Verification,
    pub until: chrono::DateTime<chrono::Utc>,
}

impl PreviousVerification {
    /// Longest a replaced verification may stay accepted: a week (Stripe's longest
    /// overlap when a signing secret is rolled).
    pub const MAX_KEEP_SECS: u64 = 7 * 24 * 3600;

    /// Whether it is still accepted at `now`.
    pub fn lasts_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        now < self.until
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

/// Where the provider's delivery id is. A request whose id was seen before is acknowledged
/// and not forwarded again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Deduplication {
    /// A request header.
    Header { header: String },
    /// A field of the JSON body, as a dot-separated path (`data.object.id`).
    JsonField { path: String },
    /// The field `path` of the JSON body, or, for a request without it (a form, a body
    /// without that field), the request header `header`. Slack's default: its events carry an
    /// `event_id`, which its retries keep, but its slash commands and interactivity
    /// (form-encoded) carry no id, and their signature then serves once.
    JsonFieldOrHeader { path: String, header: String },
    /// No deduplication.
    None,
}

/// The answer to a provider's check of the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    /// A JSON document.
    Json(serde_json::Value),
    /// Plain text, the whole body.
    Text(String),
    /// 204, no body.
    NoContent,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("malformed {0}")]
    Malformed(String),
    #[error("timestamp is too old")]
    TimestampTooOld,
    #[error("timestamp is too far in the future")]
    TimestampTooNew,
    #[error("signature does not match")]
    SignatureMismatch,
    #[error("wrong credentials")]
    BadCredentials,
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {msg}")]
pub struct ConfigError {
    pub field: &'static str,
    pub msg: String,
}

fn config_err(field: &'static str, msg: impl Into<String>) -> ConfigError {
    ConfigError { field, msg: msg.into() }
}

/// Checks that `t` (unix seconds, as text) is within [`TOLERANCE_SECS`] of `now`.
pub(crate) fn fresh(t: &str, what: &str, now: i64) -> Result<i64, Rejection> {
    let ts: i64 = t.trim().parse().map_err(|_| Rejection::Malformed(what.to_string()))?;
    if ts < now - TOLERANCE_SECS {
        return Err(Rejection::TimestampTooOld);
    }
    if ts > now + TOLERANCE_SECS {
        return Err(Rejection::TimestampTooNew);
    }
    Ok(ts)
}

/// Whether `value` is `prefix` then `digits` lower-case hex digits, nothing else: a
/// signature header that is its source's deduplication key must be written one way only,
/// or one signature written two ways (upper case, a space after the prefix) would pass
/// twice.
pub(crate) fn lower_hex_after(value: &str, prefix: &str, digits: usize) -> bool {
    value
        .trim()
        .strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == digits && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// Hex (either case) to bytes; `None` if not hex.
pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    // (`from_str_radix` alone would also take a sign: "+a".)
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}

impl Verification {
    /// The check's name as in the API (`github`, `stripe`…).
    pub fn kind(&self) -> &'static str {
        match self {
            Verification::None => "none",
            Verification::Github { .. } => "github",
            Verification::Gitlab { .. } => "gitlab",
            Verification::Stripe { .. } => "stripe",
            Verification::Paddle { .. } => "paddle",
            Verification::Mailgun { .. } => "mailgun",
            Verification::Shopify { .. } => "shopify",
            Verification::Slack { .. } => "slack",
            Verification::Zoom { .. } => "zoom",
            Verification::Telegram { .. } => "telegram",
            Verification::Twilio { .. } => "twilio",
            Verification::Twitch { .. } => "twitch",
            Verification::Discord { .. } => "discord",
            Verification::Calendly { .. } => "calendly",
            Verification::Square { .. } => "square",
            Verification::Meta { .. } => "meta",
            Verification::Hubspot { .. } => "hubspot",
            Verification::StandardWebhooks { .. } => "standardWebhooks",
            Verification::Hmac { .. } => "hmac",
            Verification::BasicAuth { .. } => "basicAuth",
        }
    }

    /// The delivery id `dedup` finds in a request, as it is compared with those seen: a
    /// generic `hmac` source deduplicating on its own hex signature header (as the README
    /// advises for providers whose signature has no timestamp) compares it without case, so
    /// that one signature written in lower and in upper case (both verify) is one key. Other
    /// keys are compared as they are.
    pub fn dedup_key(
        &self,
        dedup: &Deduplication,
        headers: &Headers,
        json: Option<&serde_json::Value>,
    ) -> Option<String> {
        let (key, from) = dedup.found(headers, json)?;
        match self {
            Verification::Hmac { header, encoding: Encoding::Hex, .. }
                if from.is_some_and(|by| header.eq_ignore_ascii_case(by)) =>
            {
                Some(key.to_ascii_lowercase())
            }
            _ => Some(key),
        }
    }

    /// Checks a request's headers and raw body at `now` (unix seconds); `url` is the URL
    /// as the provider called it (Twilio signs it).
    pub fn verify(&self, headers: &Headers, body: &[u8], url: &str, now: i64) -> Result<(), Rejection> {
        match self {
            Verification::None => Ok(()),
            Verification::Github { secret } => hmac_body::github(secret, headers, body),
            Verification::Gitlab { secret_token } => token::gitlab(secret_token, headers),
            Verification::Stripe { secret } => stripe::verify(secret, headers, body, now),
            Verification::Paddle { secret } => paddle::verify(secret, headers, body, now),
            Verification::Mailgun { signing_key } => mailgun::verify(signing_key, body, now),
            Verification::Shopify { secret } => hmac_body::shopify(secret, headers, body),
            Verification::Slack { signing_secret } => slack::verify(signing_secret, headers, body, now),
            Verification::Zoom { secret } => zoom::verify(secret, headers, body, now),
            Verification::Telegram { secret_token } => token::telegram(secret_token, headers),
            Verification::Twilio { auth_token } => twilio::verify(auth_token, headers, body, url),
            Verification::Twitch { secret } => twitch::verify(secret, headers, body, now),
            Verification::Discord { public_key } => discord::verify(public_key, headers, body, now),
            Verification::Calendly { signing_key } => calendly::verify(signing_key, headers, body, now),
            Verification::Square { signature_key } => square::verify(signature_key, headers, body, url),
            Verification::Meta { app_secret, .. } => meta::verify(app_secret, headers, body),
            Verification::Hubspot { app_secret } => hubspot::verify(app_secret, headers, body, url, now),
            Verification::StandardWebhooks { secret } => standard::verify(secret, headers, body, now),
            Verification::Hmac { header: name, algorithm, encoding, prefix, secret } => {
                let spec = hmac_body::Spec {
                    header: name,
                    algorithm: *algorithm,
                    encoding: *encoding,
                    prefix: prefix.as_deref().unwrap_or(""),
                };
                hmac_body::verify(&spec, secret.as_bytes(), headers, body)
            }
            Verification::BasicAuth { username, password } => token::basic(username, password, headers),
        }
    }

    /// Refuses configurations that could never verify anything (or would be trivially weak).
    pub fn check(&self) -> Result<(), ConfigError> {
        let secret = |field: &'static str, s: &str| {
            if s.is_empty() || s.len() > 1024 {
                return Err(config_err(field, "must be between 1 and 1024 characters"));
            }
            Ok(())
        };
        match self {
            Verification::None => Ok(()),
            Verification::Github { secret: s }
            | Verification::Stripe { secret: s }
            | Verification::Paddle { secret: s }
            | Verification::Zoom { secret: s }
            | Verification::Shopify { secret: s } => secret("verification.secret", s),
            Verification::Slack { signing_secret } => secret("verification.signingSecret", signing_secret),
            Verification::Mailgun { signing_key } | Verification::Calendly { signing_key } => {
                secret("verification.signingKey", signing_key)
            }
            Verification::Square { signature_key } => secret("verification.signatureKey", signature_key),
            Verification::Hubspot { app_secret } => secret("verification.appSecret", app_secret),
            Verification::Meta { app_secret, verify_token } => {
                secret("verification.appSecret", app_secret)?;
                secret("verification.verifyToken", verify_token)
            }
            Verification::Twilio { auth_token } => secret("verification.authToken", auth_token),
            // Twitch's own rule for a subscription's secret.
            Verification::Twitch { secret: s } if !(10..=100).contains(&s.len()) || !s.is_ascii() => {
                Err(config_err("verification.secret", "must be 10-100 ASCII characters"))
            }
            Verification::Twitch { .. } => Ok(()),
            Verification::Discord { public_key } => match discord::public_key(public_key) {
                Some(_) => Ok(()),
                None => Err(config_err("verification.publicKey", "must be an Ed25519 public key in 64 hex characters")),
            },
            Verification::Gitlab { secret_token } => secret("verification.secretToken", secret_token),
            Verification::Telegram { secret_token } => {
                // Telegram's own rule for `secret_token`.
                let ok = (1..=256).contains(&secret_token.len())
                    && secret_token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if ok {
                    Ok(())
                } else {
                    Err(config_err("verification.secretToken", "must be 1-256 characters of A-Z, a-z, 0-9, _ and -"))
                }
            }
            Verification::StandardWebhooks { secret } => crate::signing::VerifyKey::parse(secret)
                .map(|_| ())
                .map_err(|e| config_err("verification.secret", e.to_string())),
            Verification::Hmac { header, prefix, secret: s, .. } => {
                if header.is_empty() || header.len() > 256 || !header.bytes().all(is_token_char) {
                    return Err(config_err("verification.header", "must be a valid header name"));
                }
                if prefix.as_ref().is_some_and(|p| p.len() > 64) {
                    return Err(config_err("verification.prefix", "must be at most 64 characters"));
                }
                secret("verification.secret", s)
            }
            Verification::BasicAuth { username, password } => {
                if username.is_empty() || username.len() > 256 || username.contains(':') {
                    return Err(config_err("verification.username", "must be 1-256 characters without ':'"));
                }
                secret("verification.password", password)
            }
        }
    }

    /// The configuration without its secrets, for API answers.
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(map) = v.as_object_mut() {
            for key in [
                "secret",
                "signingSecret",
                "signingKey",
                "signatureKey",
                "secretToken",
                "authToken",
                "password",
                "appSecret",
                "verifyToken",
            ] {
                map.remove(key);
            }
        }
        v
    }

    /// Headers this check reads: they are not forwarded to destinations.
    pub fn headers_used(&self) -> Vec<String> {
        let names: &[&str] = match self {
            Verification::None => &[],
            Verification::Github { .. } => &["x-hub-signature-256", "x-hub-signature"],
            Verification::Gitlab { .. } => &[token::GITLAB_HEADER],
            Verification::Stripe { .. } => &[stripe::HEADER],
            Verification::Paddle { .. } => &[paddle::HEADER],
            // Its signature is in the body, which goes as it came.
            Verification::Mailgun { .. } => &[],
            Verification::Shopify { .. } => &["x-shopify-hmac-sha256"],
            Verification::Slack { .. } => &[slack::SIGNATURE, slack::TIMESTAMP],
            Verification::Zoom { .. } => &[zoom::SIGNATURE, zoom::TIMESTAMP],
            Verification::Telegram { .. } => &[token::TELEGRAM_HEADER],
            Verification::Twilio { .. } => &[twilio::HEADER],
            Verification::Twitch { .. } => &[twitch::SIGNATURE],
            Verification::Discord { .. } => &[discord::SIGNATURE, discord::TIMESTAMP],
            Verification::Calendly { .. } => &[calendly::HEADER],
            // (and the SHA-1 signature Square sent before, should it still come)
            Verification::Square { .. } => &[square::HEADER, "x-square-signature"],
            Verification::Meta { .. } => &[meta::SIGNATURE, "x-hub-signature"],
            Verification::Hubspot { .. } => &[hubspot::SIGNATURE, "x-hubspot-signature"],
            Verification::StandardWebhooks { .. } => &["webhook-signature", "svix-signature"],
            Verification::Hmac { header, .. } => return vec![header.to_ascii_lowercase()],
            Verification::BasicAuth { .. } => &["authorization"],
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Where this provider puts its delivery id, when it has one.
    pub fn default_deduplication(&self) -> Deduplication {
        let header = |h: &str| Deduplication::Header { header: h.to_string() };
        let field = |p: &str| Deduplication::JsonField { path: p.to_string() };
        match self {
            Verification::Github { .. } => header("x-github-delivery"),
            // The same for every retry of one delivery (GitLab 17.4 and later; older ones
            // send none, and their retries are not recognised).
            Verification::Gitlab { .. } => header("idempotency-key"),
            Verification::Stripe { .. } => field("id"),
            // A notification retried keeps its id; the same event sent to another
            // destination would have its own.
            Verification::Paddle { .. } => field("notification_id"),
            // The signature covers the timestamp and token, not the body: a token may serve
            // once, or a seen delivery's signature would carry any other event for five
            // minutes (Mailgun's retries carry new tokens, and are forwarded again).
            Verification::Mailgun { .. } => field("signature.token"),
            Verification::Shopify { .. } => header("x-shopify-webhook-id"),
            // Events carry an `event_id`, the same in Slack's retries (signed again). Slash
            // commands and interactivity (forms) carry no id: their signature (over its
            // timestamp) serves once, or a captured one could be replayed for five minutes.
            Verification::Slack { .. } => {
                Deduplication::JsonFieldOrHeader { path: "event_id".to_string(), header: slack::SIGNATURE.to_string() }
            }
            Verification::Telegram { .. } => field("update_id"),
            // Twilio signs no timestamp: a signature may serve once, or a seen request could
            // be sent again forever. A retry carries the same signature (the same URL and
            // parameters), so it is recognised too.
            Verification::Twilio { .. } => header(twilio::HEADER),
            // A retry keeps its message id.
            Verification::Twitch { .. } => header(twitch::ID),
            // Webhook events carry no id: a signature serves once (interactions are never
            // sent twice).
            Verification::Discord { .. } => header(discord::SIGNATURE),
            // In the signed body.
            Verification::Square { .. } => field("event_id"),
            // Meta's notifications carry no delivery id; the signature is an HMAC of the body
            // alone, so a retry (the same body) has the same one, and a replay is recognised.
            Verification::Meta { .. } => header(meta::SIGNATURE),
            // HubSpot's event ids are not unique, and a retry may batch events otherwise: a
            // signature (over a timestamp) serves once, which refuses replays.
            Verification::Hubspot { .. } => header(hubspot::SIGNATURE),
            Verification::StandardWebhooks { .. } => header("webhook-id"),
            // Zoom's events carry no delivery id: a signature (its timestamp and MAC) serves
            // once, so a captured request cannot be sent again within the window (Zoom's
            // retries are signed again, and are forwarded again).
            Verification::Zoom { .. } => header(zoom::SIGNATURE),
            Verification::None | Verification::Hmac { .. } | Verification::BasicAuth { .. } => Deduplication::None,
            // Calendly's events carry no delivery id: a signature (its timestamp and MAC)
            // serves once, so a captured request cannot be sent again within the window.
            Verification::Calendly { .. } => header(calendly::HEADER),
        }
    }

    /// What to answer, instead of forwarding it, to a verified request that is the
    /// provider's check of the URL (Slack's `url_verification`, Zoom's
    /// `endpoint.url_validation`, Twitch's `webhook_callback_verification`, Discord's
    /// `PING`s and autocompletes); `None` for every other request.
    pub fn handshake(&self, json: Option<&serde_json::Value>) -> Option<Handshake> {
        let json = json?;
        match self {
            Verification::Slack { .. } => slack::handshake(json).map(Handshake::Json),
            Verification::Zoom { secret } => zoom::handshake(secret, json).map(Handshake::Json),
            Verification::Twitch { .. } => twitch::handshake(json).map(Handshake::Text),
            Verification::Discord { .. } => discord::handshake(json),
            _ => None,
        }
    }

    /// The answer to a provider's check of the URL made with a `GET` (Meta's): `Some(Ok)`
    /// with the challenge to send back, `Some(Err)` when the check fails (a wrong token),
    /// `None` when this provider makes no such check.
    pub fn url_check(&self, query: &str) -> Option<Result<String, Rejection>> {
        match self {
            Verification::Meta { verify_token, .. } => Some(meta::subscription_challenge(verify_token, query)),
            _ => None,
        }
    }

    /// Whether the provider's sending this request (its JSON body `json`) again is
    /// recognised as a duplicate by the default deduplication: not where the delivery id is
    /// part of a signature that a retry renews (Mailgun's token, Calendly's signature), nor
    /// where there is none.
    pub fn redelivery_recognised(&self, json: Option<&serde_json::Value>) -> bool {
        // Slack's retry keeps an event's `event_id`; a request without one goes by its
        // signature, which the retry renews.
        if let Verification::Slack { .. } = self {
            return json.and_then(|j| json_path(j, "event_id")).is_some_and(|id| !id.is_empty());
        }
        !matches!(
            self,
            Verification::Mailgun { .. }
                | Verification::Calendly { .. }
                | Verification::Discord { .. }
                // A retry is recognised only when it is the same bytes, which Meta, batching
                // notifications, does not promise.
                | Verification::Meta { .. }
                | Verification::Hubspot { .. }
                | Verification::None
                | Verification::Hmac { .. }
                | Verification::BasicAuth { .. }
                | Verification::Zoom { .. }
        )
    }

    /// What to answer a request that is forwarded, when the provider wants something
    /// other than hooklane's own answer (Discord: a deferred interaction response, or 204).
    pub fn acknowledgement(&self, json: Option<&serde_json::Value>) -> Option<Handshake> {
        match self {
            Verification::Discord { .. } => discord::acknowledgement(json?),
            _ => None,
        }
    }

    /// The provider's name for what happened (`push`, `invoice.paid`, `message`…), made
    /// into a valid event type name; `None` when the provider does not say.
    pub fn event_type(&self, headers: &Headers, json: Option<&serde_json::Value>) -> Option<String> {
        let field = |path: &str| json.and_then(|j| json_path(j, path));
        let raw = match self {
            Verification::Github { .. } => header(headers, "x-github-event").map(str::to_string),
            // `push`, `merge_request`… (the header's `Push Hook` is for people).
            Verification::Gitlab { .. } => field("object_kind").or_else(|| field("event_name")),
            Verification::Shopify { .. } => header(headers, "x-shopify-topic").map(str::to_string),
            Verification::Stripe { .. } | Verification::StandardWebhooks { .. } => field("type"),
            Verification::Paddle { .. } => field("event_type"),
            Verification::Mailgun { .. } => field("event-data.event"),
            Verification::Slack { .. } => field("event.type").or_else(|| field("type")),
            Verification::Zoom { .. } => field("event"),
            Verification::Twitch { .. } => json.and_then(twitch::event_type),
            Verification::Discord { .. } => json.and_then(discord::event_type),
            Verification::Calendly { .. } => field("event"),
            Verification::Square { .. } => field("type"),
            Verification::Meta { .. } => json.and_then(meta::event_type),
            Verification::Hubspot { .. } => field("0.subscriptionType"),
            // An update carries `update_id` and exactly one other field, which says what it is.
            Verification::Telegram { .. } => {
                json.and_then(|j| j.as_object()).and_then(|o| o.keys().find(|k| k.as_str() != "update_id").cloned())
            }
            // Twilio's requests say what they are in fields that differ by product.
            Verification::None
            | Verification::Hmac { .. }
            | Verification::BasicAuth { .. }
            | Verification::Twilio { .. } => None,
        }?;
        let name: String = raw
            .chars()
            .take(256)
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '.' })
            .collect();
        (!name.is_empty()).then_some(name)
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Deduplication {
    pub fn check(&self) -> Result<(), ConfigError> {
        let (header, path) = match self {
            Deduplication::Header { header } => (Some(header), None),
            Deduplication::JsonField { path } => (None, Some(path)),
            Deduplication::JsonFieldOrHeader { path, header } => (Some(header), Some(path)),
            Deduplication::None => (None, None),
        };
        if header.is_some_and(|h| h.is_empty() || !h.bytes().all(is_token_char)) {
            return Err(config_err("deduplication.header", "must be a valid header name"));
        }
        if path.is_some_and(|p| p.is_empty() || p.len() > 256 || p.split('.').any(str::is_empty)) {
            return Err(config_err("deduplication.path", "must be a dot-separated path such as data.id"));
        }
        Ok(())
    }

    /// The delivery id of a request, if it carries one.
    pub fn key(&self, headers: &Headers, json: Option<&serde_json::Value>) -> Option<String> {
        self.found(headers, json).map(|(key, _)| key)
    }

    /// The delivery id of a request, if it carries one, and the header it was read from
    /// (`None` when it is a field of the body).
    fn found<'a>(&'a self, headers: &Headers, json: Option<&serde_json::Value>) -> Option<(String, Option<&'a str>)> {
        // `webhook-id` (the Standard Webhooks default) is `svix-id` on a Svix-sent request.
        let in_header = |name: &'a str| {
            let key = standard::standard_header(headers, name).map(|v| v.trim().to_string());
            key.filter(|k| !k.is_empty()).map(|k| (k, Some(name)))
        };
        let in_body = |path: &str| json.and_then(|j| json_path(j, path)).filter(|k| !k.is_empty()).map(|k| (k, None));
        match self {
            Deduplication::Header { header } => in_header(header),
            Deduplication::JsonField { path } => in_body(path),
            Deduplication::JsonFieldOrHeader { path, header } => in_body(path).or_else(|| in_header(header)),
            Deduplication::None => None,
        }
    }
}

/// A string or number at a dot-separated path of a JSON document, as text.
pub fn json_path(doc: &serde_json::Value, path: &str) -> Option<String> {
    let mut at = doc;
    for part in path.split('.') {
        at = match at {
            serde_json::Value::Object(o) => o.get(part)?,
            serde_json::Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match at {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Headers that carry credentials: masked in request records, never forwarded. Beside the
/// standard ones, any whose name says it holds a token, a secret, a password, a key or a
/// signed assertion (`x-gitlab-token`, `x-api-key`, `x-functions-key`,
/// `ocp-apim-subscription-key`, access proxies' `cf-access-jwt-assertion` and
/// `x-goog-iap-jwt-assertion`…), but for idempotency keys and tokens, which are delivery ids
/// (Twilio's). Signatures are not credentials: they stay readable in the request log.
pub fn is_sensitive_header(name: &str) -> bool {
    const CREDENTIAL_WORDS: [&str; 7] = ["token", "secret", "password", "apikey", "x-auth", "jwt", "assertion"];
    let names_a_key = name.split(['-', '_']).any(|segment| segment == "key");
    matches!(name, "authorization" | "proxy-authorization" | "cookie" | "set-cookie" | token::TELEGRAM_HEADER)
        || ((names_a_key || CREDENTIAL_WORDS.iter().any(|w| name.contains(w))) && !name.contains("idempotency"))
}

/// Headers that belong to one HTTP hop (or that hooklane sets itself): never forwarded.
/// Those naming the client's address or the URL it called are among them: a framework behind
/// a destination may trust them from its own proxy, and take a provider's (or a forger's)
/// for the truth.
fn is_hop_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "accept-encoding"
            | "content-encoding"
            | "user-agent"
            | "forwarded"
            | "forwarded-for"
            | "x-original-forwarded-for"
            | "x-real-ip"
            | "client-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "cf-connecting-ipv6"
            | "fastly-client-ip"
            | "fly-client-ip"
            | "x-azure-clientip"
            | "x-azure-socketip"
            | "x-appengine-user-ip"
            | "x-original-host"
            | "via"
            // Would make a framework behind the destination treat the request as another.
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-url"
            | "x-original-uri"
            | "x-rewrite-url"
    ) || name.starts_with("proxy-")
        // `x-forwarded-for`, `-proto`, `-host`, `-port`, `-prefix`, `-uri`, `-scheme`, `-ssl`…:
        // every one is a proxy's word on the client or the URL. So are Envoy's own
        // (`x-envoy-original-path`, `x-envoy-external-address`…).
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-envoy-")
        // Vercel's (`x-vercel-forwarded-for`, `x-vercel-ip-country`…).
        || name.starts_with("x-vercel-")
        // The provider's own Standard Webhooks metadata (Svix-sent providers: Clerk,
        // Resend…): a destination's Svix library would read `svix-id` and `svix-timestamp`
        // before hooklane's `webhook-*` and check hooklane's signature against them.
        || name.starts_with("webhook-")
        || name.starts_with("svix-")
}

/// Most headers forwarded, and longest value, so a request cannot make every delivery huge.
const MAX_FORWARDED: usize = 32;
const MAX_FORWARDED_VALUE: usize = 1024;

/// The request headers destinations receive with the body: the provider's informative
/// headers (`x-github-event`, `x-shopify-topic`…), without credentials, without what the
/// check read (signatures, secret tokens) and without per-hop headers.
pub fn forwarded_headers(verification: &Verification, headers: &Headers) -> BTreeMap<String, String> {
    let used = verification.headers_used();
    headers
        .iter()
        .filter(|(name, value)| {
            !is_sensitive_header(name)
                && !is_hop_header(name)
                && !used.contains(name)
                && value.len() <= MAX_FORWARDED_VALUE
        })
        .take(MAX_FORWARDED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generic hmac source deduplicating on its own hex signature header compares the key
    /// without case (both cases verify); any other key is compared as it is.
    #[test]
    fn a_hex_signature_key_is_compared_without_case() {
        let hmac = |encoding| Verification::Hmac {
            header: "X-Signature".into(),
            algorithm: HmacAlgorithm::Sha256,
            encoding,
            prefix: Some("sha256=".into()),
            secret: "s".into(),
        };
        let by = |header: &str| Deduplication::Header { header: header.into() };
        let key = "sha256=AB12".to_string();
        let h = headers(&[("X-Signature", &key), ("X-Request-Id", &key), ("X-Hub-Signature-256", &key)]);
        let lower = Some("sha256=ab12".to_string());
        assert_eq!(hmac(Encoding::Hex).dedup_key(&by("x-signature"), &h, None), lower);
        assert_eq!(hmac(Encoding::Base64).dedup_key(&by("x-signature"), &h, None), Some(key.clone()));
        assert_eq!(hmac(Encoding::Hex).dedup_key(&by("x-request-id"), &h, None), Some(key.clone()));
        let github = Verification::Github { secret: "s".into() };
        assert_eq!(github.dedup_key(&by("x-hub-signature-256"), &h, None), Some(key.clone()), "one case only there");
        // Falling back on the signature header, the same; a body field is compared as it is.
        let or_header = Deduplication::JsonFieldOrHeader { path: "id".into(), header: "X-Signature".into() };
        assert_eq!(hmac(Encoding::Hex).dedup_key(&or_header, &h, None), lower);
        let json = serde_json::json!({ "id": "EV-1" });
        assert_eq!(hmac(Encoding::Hex).dedup_key(&or_header, &h, Some(&json)), Some("EV-1".into()));
    }

    /// Slack's events are told by their `event_id` (a retry is signed again); its forms
    /// (slash commands, interactivity) and any body without one by their signature, which
    /// then serves once.
    #[test]
    fn slack_deduplicates_on_the_event_id_else_the_signature() {
        let slack = Verification::Slack { signing_secret: "s".into() };
        let dedup = slack.default_deduplication();
        let h = headers(&[("X-Slack-Signature", "v0=ab12"), ("X-Slack-Request-Timestamp", "1")]);
        let event = serde_json::json!({ "type": "event_callback", "event_id": "Ev08MFMKH6" });
        assert_eq!(slack.dedup_key(&dedup, &h, Some(&event)), Some("Ev08MFMKH6".into()));
        assert_eq!(slack.dedup_key(&dedup, &h, None), Some("v0=ab12".into()), "a form");
        let other = serde_json::json!({ "type": "app_rate_limited" });
        assert_eq!(slack.dedup_key(&dedup, &h, Some(&other)), Some("v0=ab12".into()));
        assert_eq!(slack.dedup_key(&dedup, &Headers::new(), None), None);
        // A retry is recognised by its `event_id` only: Slack signs it again.
        assert!(slack.redelivery_recognised(Some(&event)));
        assert!(!slack.redelivery_recognised(Some(&other)) && !slack.redelivery_recognised(None));
    }

    pub(crate) fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect()
    }

    #[test]
    fn configuration_round_trips_and_hides_secrets() {
        let v: Verification = serde_json::from_str(
            r#"{"type":"hmac","header":"X-Signature","algorithm":"sha512","encoding":"base64","prefix":"sha512=","secret":"s3cr3t"}"#,
        )
        .unwrap();
        assert_eq!(v.kind(), "hmac");
        assert!(v.check().is_ok());
        let shown = v.redacted().to_string();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("X-Signature"));
        assert_eq!(format!("{v:?}"), "Verification::hmac(<redacted>)");
        let slack: Verification = serde_json::from_str(r#"{"type":"slack","signingSecret":"abc"}"#).unwrap();
        assert_eq!(slack, Verification::Slack { signing_secret: "abc".into() });
        assert_eq!(slack.redacted(), serde_json::json!({"type": "slack"}));
        assert!(serde_json::from_str::<Verification>(r#"{"type":"github","secret":"a","extra":1}"#).is_err());
        assert!(serde_json::from_str::<Verification>(r#"{"type":"nope"}"#).is_err());
        let basic: Verification =
            serde_json::from_str(r#"{"type":"basicAuth","username":"u","password":"p"}"#).unwrap();
        assert_eq!(basic.redacted(), serde_json::json!({"type": "basicAuth", "username": "u"}));
        let mailgun: Verification = serde_json::from_str(r#"{"type":"mailgun","signingKey":"k"}"#).unwrap();
        assert_eq!(mailgun, Verification::Mailgun { signing_key: "k".into() });
        assert_eq!(mailgun.redacted(), serde_json::json!({"type": "mailgun"}));
        assert!(Verification::Mailgun { signing_key: String::new() }.check().is_err());
    }

    #[test]
    fn weak_or_broken_configurations_are_refused() {
        assert!(Verification::Github { secret: String::new() }.check().is_err());
        assert!(Verification::Telegram { secret_token: "has space".into() }.check().is_err());
        assert!(Verification::Telegram { secret_token: "ok_token-1".into() }.check().is_ok());
        assert!(Verification::StandardWebhooks { secret: "whsec_short".into() }.check().is_err());
        assert!(Verification::BasicAuth { username: "a:b".into(), password: "p".into() }.check().is_err());
        assert!(Deduplication::JsonField { path: "a..b".into() }.check().is_err());
        assert!(Deduplication::Header { header: "bad header".into() }.check().is_err());
        let either =
            |path: &str, header: &str| Deduplication::JsonFieldOrHeader { path: path.into(), header: header.into() };
        assert!(either("event_id", "x-slack-signature").check().is_ok());
        assert!(either("a..b", "x-slack-signature").check().is_err());
        assert!(either("event_id", "").check().is_err());
    }

    /// The field-or-header deduplication is kept (stores, API) as JSON: it reads back the same.
    #[test]
    fn deduplication_round_trips() {
        let slack = Verification::Slack { signing_secret: "s".into() }.default_deduplication();
        let shown = serde_json::to_value(&slack).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({ "type": "jsonFieldOrHeader", "path": "event_id", "header": "x-slack-signature" })
        );
        assert_eq!(serde_json::from_value::<Deduplication>(shown).unwrap(), slack);
        let incomplete = serde_json::json!({ "type": "jsonFieldOrHeader", "path": "event_id" });
        assert!(serde_json::from_value::<Deduplication>(incomplete).is_err());
    }

    #[test]
    fn delivery_ids_and_event_types() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"update_id": 10000, "message": {"text": "hi"}, "data": {"items": [{"id": "x"}]}}"#,
        )
        .unwrap();
        let tg = Verification::Telegram { secret_token: "t".into() };
        assert_eq!(tg.default_deduplication().key(&Headers::new(), Some(&json)), Some("10000".into()));
        assert_eq!(json_path(&json, "data.items.0.id"), Some("x".into()));
        assert_eq!(json_path(&json, "message"), None);
        let gh = Verification::Github { secret: "s".into() };
        let h = headers(&[("X-GitHub-Delivery", "72d3162e"), ("X-GitHub-Event", "pull_request")]);
        assert_eq!(gh.default_deduplication().key(&h, None), Some("72d3162e".into()));
        assert_eq!(gh.event_type(&h, None), Some("pull_request".into()));
        let shop = Verification::Shopify { secret: "s".into() };
        assert_eq!(
            shop.event_type(&headers(&[("X-Shopify-Topic", "orders/create")]), None),
            Some("orders.create".into())
        );
        assert_eq!(Deduplication::None.key(&h, Some(&json)), None);
    }

    #[test]
    fn forwarded_headers_leave_out_secrets_signatures_and_hop_headers() {
        let gh = Verification::Github { secret: "s".into() };
        let h = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=00"),
            ("Authorization", "Bearer x"),
            ("Content-Type", "application/json"),
            ("Host", "hooks.example.com"),
            ("webhook-id", "msg_1"),
        ]);
        let f = forwarded_headers(&gh, &h);
        assert_eq!(f.keys().collect::<Vec<_>>(), vec!["x-github-event"]);
        let tg = Verification::Telegram { secret_token: "t".into() };
        let h = headers(&[("X-Telegram-Bot-Api-Secret-Token", "t")]);
        assert!(forwarded_headers(&tg, &h).is_empty());
        // With no check reading them: credentials by their names, a Svix-sent provider's
        // metadata, and what would make the request another are left out too.
        let none = Verification::None;
        let h = headers(&[
            ("X-Gitlab-Token", "t"),
            ("X-Api-Key", "k"),
            ("X-Amz-Security-Token", "t"),
            ("X-Client-Secret", "s"),
            ("Set-Cookie", "a=b"),
            ("svix-id", "msg_provider"),
            ("svix-timestamp", "1"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-Forwarded-Port", "443"),
            ("I-Twilio-Idempotency-Token", "abc-1"),
            ("X-Slack-Signature", "v0=00"),
            ("X-Request-Id", "r-1"),
        ]);
        let f = forwarded_headers(&none, &h);
        assert_eq!(
            f.keys().collect::<Vec<_>>(),
            vec!["i-twilio-idempotency-token", "x-request-id", "x-slack-signature"],
            "a delivery id, a request id, and a signature (no credential) remain"
        );
        // Nor a proxy's word on the client's address or the URL it called, which a framework
        // behind the destination may trust, nor an access proxy's signed assertion.
        let proxied = [
            "True-Client-IP",
            "CF-Connecting-IP",
            "CF-Connecting-IPv6",
            "Client-IP",
            "X-Client-IP",
            "X-Cluster-Client-IP",
            "Fastly-Client-IP",
            "X-Original-Forwarded-For",
            "Forwarded-For",
            "X-Forwarded-Uri",
            "X-Forwarded-Scheme",
            "X-Forwarded-Ssl",
            "X-Forwarded-Client-Cert",
            "X-Original-URI",
            "X-Envoy-Original-Path",
            "X-Envoy-External-Address",
            "Cf-Access-Jwt-Assertion",
            "X-Goog-IAP-JWT-Assertion",
            "Fly-Client-IP",
            "X-Azure-ClientIP",
            "X-Azure-SocketIP",
            "X-AppEngine-User-IP",
            "X-Vercel-Forwarded-For",
            "X-Vercel-IP-Country",
            "X-Original-Host",
            "Via",
        ];
        let mut h: Vec<(&str, &str)> = proxied.iter().map(|name| (*name, "203.0.113.9")).collect();
        h.push(("X-GitHub-Event", "push"));
        let f = forwarded_headers(&none, &headers(&h));
        assert_eq!(f.keys().collect::<Vec<_>>(), vec!["x-github-event"], "{f:?}");
        assert!(is_sensitive_header("x-gitlab-token") && !is_sensitive_header("x-github-event"));
        for name in [
            "x-api-key",
            "x-functions-key",
            "ocp-apim-subscription-key",
            "x-access-key",
            "x_signing_key",
            "apikey",
            "cf-access-jwt-assertion",
            "x-goog-iap-jwt-assertion",
            "x-jwt",
        ] {
            assert!(is_sensitive_header(name), "{name}");
        }
        for name in ["idempotency-key", "x-keyboard", "x-monkey", "x-hub-signature-256"] {
            assert!(!is_sensitive_header(name), "{name}");
        }
    }
}
