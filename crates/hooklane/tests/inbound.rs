//! Inbound webhooks end to end: the real server receiving provider requests signed as each
//! provider documents it (signatures computed here, independently of hooklane's code) and
//! forwarding them to real loopback receivers.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

const WAIT: Duration = Duration::from_secs(15);

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lets in-flight deliveries land, so "nothing more arrived" means something.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

/// Creates a source; returns its id and the answer.
async fn create_source(server: &Server, spec: Value) -> (String, Value) {
    let (status, body) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    (body["id"].as_str().unwrap().to_string(), body)
}

/// A raw POST to a source's ingest URL.
async fn ingest(server: &Server, source: &str, headers: &[(String, String)], body: &[u8]) -> (u16, Value) {
    let mut req = server.client.post(server.url(&format!("/in/{source}"))).body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    read(req.send().await.expect("ingest request")).await
}

/// The source's request records, newest first.
async fn requests(server: &Server, source: &str) -> Vec<Value> {
    let (status, body) = server.call("GET", &format!("/api/v1/source/{source}/request?limit=250"), None).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// How one provider signs, and where it puts its delivery id.
#[derive(Clone, Copy, Debug)]
enum Provider {
    Github,
    Gitlab,
    Stripe,
    Paddle,
    Mailgun,
    Shopify,
    Slack,
    Zoom,
    Telegram,
    Twilio,
    Twitch,
    Calendly,
    Square,
    Meta,
    Hubspot,
    StandardWebhooks,
    /// A Standard Webhooks source fed by a provider that sends through Svix (Clerk, Resend…):
    /// the same signature under `svix-id`, `svix-timestamp` and `svix-signature`.
    SvixSent,
    Hmac,
    BasicAuth,
}

const GH_SECRET: &str = "It's a Secret to Everybody";
const GITLAB_TOKEN: &str = "glwht-secret-token-7";
const STRIPE_SECRET: &str = "whsec_test_5f2b7c0a9d";
const PADDLE_SECRET: &str = "pdl_ntfset_01h8bkrwk9_secret";
const MAILGUN_KEY: &str = "key-mailgun-signing-0a1b2c";
const SHOPIFY_SECRET: &str = "shpss_0123456789abcdef";
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const TG_TOKEN: &str = "tg-secret_token-42";
const TWILIO_TOKEN: &str = "twilio-auth-token-9f8e";
const TWITCH_SECRET: &str = "twitch-eventsub-secret-5c";
const CALENDLY_KEY: &str = "calendly-signing-key-77";
const SQUARE_KEY: &str = "square-signature-key-Qx";
const META_SECRET: &str = "meta-app-secret-31";
const META_TOKEN: &str = "meta-verify-token-77";
const HUBSPOT_SECRET: &str = "hubspot-app-secret-c4";
const ZOOM_SECRET: &str = "zoom-secret-token-qvC2";
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HMAC_SECRET: &str = "generic-hmac-secret";
const BASIC_PASSWORD: &str = "correct horse battery staple";

impl Provider {
    /// The source's configuration (verification, and deduplication where the provider has
    /// no delivery id of its own).
    fn spec(self, receiver: &str) -> Value {
        let verification = match self {
            Provider::Github => json!({ "type": "github", "secret": GH_SECRET }),
            Provider::Gitlab => json!({ "type": "gitlab", "secretToken": GITLAB_TOKEN }),
            Provider::Stripe => json!({ "type": "stripe", "secret": STRIPE_SECRET }),
            Provider::Paddle => json!({ "type": "paddle", "secret": PADDLE_SECRET }),
            Provider::Mailgun => json!({ "type": "mailgun", "signingKey": MAILGUN_KEY }),
            Provider::Shopify => json!({ "type": "shopify", "secret": SHOPIFY_SECRET }),
            Provider::Slack => json!({ "type": "slack", "signingSecret": SLACK_SECRET }),
            Provider::Telegram => json!({ "type": "telegram", "secretToken": TG_TOKEN }),
            Provider::Twilio => json!({ "type": "twilio", "authToken": TWILIO_TOKEN }),
            Provider::Twitch => json!({ "type": "twitch", "secret": TWITCH_SECRET }),
            Provider::Calendly => json!({ "type": "calendly", "signingKey": CALENDLY_KEY }),
            Provider::Square => json!({ "type": "square", "signatureKey": SQUARE_KEY }),
            Provider::Meta => json!({ "type": "meta", "appSecret": META_SECRET, "verifyToken": META_TOKEN }),
            Provider::Hubspot => json!({ "type": "hubspot", "appSecret": HUBSPOT_SECRET }),
            Provider::Zoom => json!({ "type": "zoom", "secret": ZOOM_SECRET }),
            Provider::StandardWebhooks | Provider::SvixSent => {
                json!({ "type": "standardWebhooks", "secret": SW_SECRET })
            }
            Provider::Hmac => json!({
                "type": "hmac", "header": "X-Signature", "algorithm": "sha512", "encoding": "base64",
                "prefix": "sha512=", "secret": HMAC_SECRET
            }),
            Provider::BasicAuth => json!({ "type": "basicAuth", "username": "hooks", "password": BASIC_PASSWORD }),
        };
        let mut spec = json!({
            "name": format!("{self:?}"),
            "verification": verification,
            "destinations": [{ "url": format!("{receiver}/internal/hook"), "headers": { "X-Internal": "yes" } }],
        });
        match self {
            Provider::Hmac => spec["deduplication"] = json!({ "type": "header", "header": "X-Request-Id" }),
            Provider::BasicAuth => spec["deduplication"] = json!({ "type": "jsonField", "path": "data.id" }),
            // Zoom's events carry no delivery id; the payload's own object id serves.
            Provider::Zoom => spec["deduplication"] = json!({ "type": "jsonField", "path": "payload.object.uuid" }),
            _ => {}
        }
        spec
    }

    /// A request as the provider sends it: delivery `id`, signed at `ts`, with the right
    /// secret when `genuine`. Returns headers, body and its content type.
    fn request(self, id: &str, ts: i64, genuine: bool) -> (Vec<(String, String)>, Vec<u8>, &'static str) {
        self.request_to("", id, ts, genuine)
    }

    /// [`Provider::request`] to the source URL `url` (Twilio signs it).
    fn request_to(self, url: &str, id: &str, ts: i64, genuine: bool) -> (Vec<(String, String)>, Vec<u8>, &'static str) {
        let ts_s = ts.to_string();
        let json_ct = "application/json";
        match self {
            Provider::Github => {
                let body =
                    format!(r#"{{"ref": "refs/heads/main", "after": "6113728f", "delivery": "{id}"}}"#).into_bytes();
                let secret = if genuine { GH_SECRET } else { "wrong" };
                let sig = format!("sha256={}", hex(&hmac256(secret.as_bytes(), &[&body])));
                let headers = h(&[
                    ("X-GitHub-Delivery", id),
                    ("X-GitHub-Event", "push"),
                    ("X-Hub-Signature-256", &sig),
                    ("content-type", json_ct),
                ]);
                (headers, body, json_ct)
            }
            Provider::Gitlab => {
                let body =
                    format!(r#"{{"object_kind":"push","event_name":"push","checkout_sha":"{id}"}}"#).into_bytes();
                let token = if genuine { GITLAB_TOKEN } else { "not-the-token" };
                let headers = h(&[
                    ("X-Gitlab-Event", "Push Hook"),
                    ("X-Gitlab-Token", token),
                    ("Idempotency-Key", id),
                    ("content-type", json_ct),
                ]);
                (headers, body, json_ct)
            }
            Provider::Stripe => {
                let body = format!(r#"{{"id":"{id}","object":"event","type":"invoice.paid"}}"#).into_bytes();
                let secret = if genuine { STRIPE_SECRET } else { "whsec_wrong" };
                let sig = hex(&hmac256(secret.as_bytes(), &[ts_s.as_bytes(), b".", &body]));
                let headers = h(&[
                    ("Stripe-Signature", &format!("t={ts},v1={sig}")),
                    ("content-type", "application/json; charset=utf-8"),
                ]);
                (headers, body, "application/json; charset=utf-8")
            }
            Provider::Paddle => {
                let body = format!(
                    r#"{{"event_id":"evt_{id}","event_type":"transaction.completed","notification_id":"{id}","data":{{}}}}"#
                )
                .into_bytes();
                let secret = if genuine { PADDLE_SECRET } else { "pdl_ntfset_wrong" };
                let sig = hex(&hmac256(secret.as_bytes(), &[ts_s.as_bytes(), b":", &body]));
                (h(&[("Paddle-Signature", &format!("ts={ts};h1={sig}")), ("content-type", json_ct)]), body, json_ct)
            }
            Provider::Mailgun => {
                // The signature is in the body; each delivery has its own token.
                let key = if genuine { MAILGUN_KEY } else { "key-wrong" };
                let token = format!("tok-{id}-{ts}");
                let sig = hex(&hmac256(key.as_bytes(), &[ts_s.as_bytes(), token.as_bytes()]));
                let body = format!(
                    r#"{{"signature":{{"timestamp":"{ts}","token":"{token}","signature":"{sig}"}},"event-data":{{"event":"delivered","id":"{id}"}}}}"#
                )
                .into_bytes();
                (h(&[("content-type", json_ct)]), body, json_ct)
            }
            Provider::Shopify => {
                let body = format!(r#"{{"id":820982911946154508,"note":"{id}"}}"#).into_bytes();
                let secret = if genuine { SHOPIFY_SECRET } else { "wrong" };
                let sig = B64.encode(hmac256(secret.as_bytes(), &[&body]));
                let headers = h(&[
                    ("X-Shopify-Hmac-Sha256", &sig),
                    ("X-Shopify-Webhook-Id", id),
                    ("X-Shopify-Topic", "orders/create"),
                    ("content-type", json_ct),
                ]);
                (headers, body, json_ct)
            }
            Provider::Slack => {
                let body = format!(r#"{{"type":"event_callback","event_id":"{id}","event":{{"type":"app_mention"}}}}"#)
                    .into_bytes();
                let secret = if genuine { SLACK_SECRET } else { "wrong" };
                let sig = format!("v0={}", hex(&hmac256(secret.as_bytes(), &[b"v0:", ts_s.as_bytes(), b":", &body])));
                let headers =
                    h(&[("X-Slack-Request-Timestamp", &ts_s), ("X-Slack-Signature", &sig), ("content-type", json_ct)]);
                (headers, body, json_ct)
            }
            Provider::Zoom => {
                let body =
                    format!(r#"{{"event":"meeting.started","payload":{{"object":{{"uuid":"{id}"}}}}}}"#).into_bytes();
                let secret = if genuine { ZOOM_SECRET } else { "wrong" };
                let sig = format!("v0={}", hex(&hmac256(secret.as_bytes(), &[b"v0:", ts_s.as_bytes(), b":", &body])));
                let headers =
                    h(&[("x-zm-request-timestamp", &ts_s), ("x-zm-signature", &sig), ("content-type", json_ct)]);
                (headers, body, json_ct)
            }
            Provider::Telegram => {
                let update: u64 = id.bytes().map(u64::from).sum::<u64>() + 100_000;
                let body = format!(r#"{{"update_id":{update},"message":{{"text":"/start {id}"}}}}"#).into_bytes();
                let token = if genuine { TG_TOKEN } else { "not-the-token" };
                (h(&[("X-Telegram-Bot-Api-Secret-Token", token), ("content-type", json_ct)]), body, json_ct)
            }
            Provider::Twilio => {
                // A form, signed with the URL and its parameters sorted by name.
                let body = format!("MessageSid=SM{id}&Body=hello+{id}&From=%2B15005550006").into_bytes();
                let token = if genuine { TWILIO_TOKEN } else { "wrong" };
                let signed = format!("{url}Bodyhello {id}From+15005550006MessageSidSM{id}");
                let mut m = Hmac::<Sha1>::new_from_slice(token.as_bytes()).unwrap();
                m.update(signed.as_bytes());
                let sig = B64.encode(m.finalize().into_bytes());
                let form = "application/x-www-form-urlencoded";
                (
                    h(&[("X-Twilio-Signature", &sig), ("I-Twilio-Idempotency-Token", id), ("content-type", form)]),
                    body,
                    form,
                )
            }
            Provider::Twitch => {
                let body = format!(
                    r#"{{"subscription":{{"id":"sub-1","type":"channel.follow","version":"2"}},"event":{{"user_login":"{id}"}}}}"#
                )
                .into_bytes();
                let at = chrono::DateTime::from_timestamp(ts, 123_456_789).unwrap();
                let at = at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                let secret = if genuine { TWITCH_SECRET } else { "wrong-secret-0123" };
                let sig =
                    format!("sha256={}", hex(&hmac256(secret.as_bytes(), &[id.as_bytes(), at.as_bytes(), &body])));
                let headers = h(&[
                    ("Twitch-Eventsub-Message-Id", id),
                    ("Twitch-Eventsub-Message-Retry", "0"),
                    ("Twitch-Eventsub-Message-Type", "notification"),
                    ("Twitch-Eventsub-Message-Signature", &sig),
                    ("Twitch-Eventsub-Message-Timestamp", &at),
                    ("Twitch-Eventsub-Subscription-Type", "channel.follow"),
                    ("Twitch-Eventsub-Subscription-Version", "2"),
                    ("content-type", json_ct),
                ]);
                (headers, body, json_ct)
            }
            Provider::Calendly => {
                // No delivery id: the signature serves once, so a redelivery is the same request.
                let body = format!(
                    r#"{{"event":"invitee.created","created_at":"2023-11-14T22:13:20Z","payload":{{"uri":"https://api.calendly.com/invitees/{id}"}}}}"#
                )
                .into_bytes();
                let key = if genuine { CALENDLY_KEY } else { "calendly-wrong" };
                let sig = hex(&hmac256(key.as_bytes(), &[ts_s.as_bytes(), b".", &body]));
                (
                    h(&[("Calendly-Webhook-Signature", &format!("t={ts},v1={sig}")), ("content-type", json_ct)]),
                    body,
                    json_ct,
                )
            }
            Provider::Square => {
                let body = format!(
                    r#"{{"merchant_id":"6SSW7HV8K2ST5","type":"payment.created","event_id":"{id}","data":{{}}}}"#
                )
                .into_bytes();
                let key = if genuine { SQUARE_KEY } else { "square-wrong" };
                let sig = B64.encode(hmac256(key.as_bytes(), &[url.as_bytes(), &body]));
                (h(&[("x-square-hmacsha256-signature", &sig), ("content-type", json_ct)]), body, json_ct)
            }
            Provider::Meta => {
                // No delivery id: the signature, an HMAC of the body alone, is the same for a retry.
                let body = format!(
                    r#"{{"object":"whatsapp_business_account","entry":[{{"id":"1022","changes":[{{"value":{{"messages":[{{"id":"wamid.{id}"}}]}},"field":"messages"}}]}}]}}"#
                )
                .into_bytes();
                let secret = if genuine { META_SECRET } else { "meta-wrong" };
                let sig = format!("sha256={}", hex(&hmac256(secret.as_bytes(), &[&body])));
                (h(&[("X-Hub-Signature-256", &sig), ("content-type", json_ct)]), body, json_ct)
            }
            Provider::Hubspot => {
                // A batch of events; the URL, the body and a millisecond timestamp are signed.
                let event: u64 = id.bytes().map(u64::from).sum::<u64>() + 1_000_000;
                let body = format!(
                    r#"[{{"eventId":{event},"subscriptionType":"contact.creation","portalId":62515,"objectId":123}}]"#
                )
                .into_bytes();
                let millis = (ts * 1000 + 123).to_string();
                let secret = if genuine { HUBSPOT_SECRET } else { "hubspot-wrong" };
                let sig = B64.encode(hmac256(secret.as_bytes(), &[b"POST", url.as_bytes(), &body, millis.as_bytes()]));
                let headers = h(&[
                    ("X-HubSpot-Signature-v3", &sig),
                    ("X-HubSpot-Request-Timestamp", &millis),
                    ("content-type", json_ct),
                ]);
                (headers, body, json_ct)
            }
            Provider::StandardWebhooks | Provider::SvixSent => {
                let body = format!(r#"{{"type":"user.created","id":"{id}"}}"#).into_bytes();
                let secret = if genuine { SW_SECRET } else { "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" };
                let key = B64.decode(secret.trim_start_matches("whsec_")).unwrap();
                let sig =
                    format!("v1,{}", B64.encode(hmac256(&key, &[id.as_bytes(), b".", ts_s.as_bytes(), b".", &body])));
                let prefix = if matches!(self, Provider::SvixSent) { "svix" } else { "webhook" };
                let (id_h, ts_h, sig_h) =
                    (format!("{prefix}-id"), format!("{prefix}-timestamp"), format!("{prefix}-signature"));
                let headers = h(&[(&id_h, id), (&ts_h, &ts_s), (&sig_h, &sig), ("content-type", json_ct)]);
                (headers, body, json_ct)
            }
            Provider::Hmac => {
                let body = format!("plain text event {id}\n").into_bytes();
                let secret = if genuine { HMAC_SECRET } else { "wrong" };
                let mut m = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).unwrap();
                m.update(&body);
                let sig = format!("sha512={}", B64.encode(m.finalize().into_bytes()));
                (h(&[("X-Signature", &sig), ("X-Request-Id", id), ("content-type", "text/plain")]), body, "text/plain")
            }
            Provider::BasicAuth => {
                let body = format!(r#"{{"data":{{"id":"{id}"}}}}"#).into_bytes();
                let password = if genuine { BASIC_PASSWORD } else { "wrong" };
                let auth = format!("Basic {}", B64.encode(format!("hooks:{password}")));
                (h(&[("Authorization", &auth), ("content-type", json_ct)]), body, json_ct)
            }
        }
    }

    /// The event type the forwarded message gets: the provider's name for what happened.
    fn event_type(self) -> &'static str {
        match self {
            Provider::Github | Provider::Gitlab => "push",
            Provider::Stripe => "invoice.paid",
            Provider::Paddle => "transaction.completed",
            Provider::Mailgun => "delivered",
            Provider::Shopify => "orders.create",
            Provider::Slack => "app_mention",
            Provider::Zoom => "meeting.started",
            Provider::Telegram => "message",
            Provider::Twitch => "channel.follow",
            Provider::Calendly => "invitee.created",
            Provider::Square => "payment.created",
            Provider::Meta => "whatsapp_business_account.messages",
            Provider::Hubspot => "contact.creation",
            Provider::StandardWebhooks | Provider::SvixSent => "user.created",
            Provider::Hmac | Provider::BasicAuth | Provider::Twilio => "inbound",
        }
    }

    /// Whether the provider signs a timestamp that goes stale.
    fn timestamped(self) -> bool {
        matches!(
            self,
            Provider::Stripe
                | Provider::Paddle
                | Provider::Mailgun
                | Provider::Slack
                | Provider::Zoom
                | Provider::StandardWebhooks
                | Provider::SvixSent
                | Provider::Twitch
                | Provider::Calendly
                | Provider::Hubspot
        )
    }

    /// How old a request must be to be stale: Twitch allows 10 minutes, the others 5.
    fn stale_age(self) -> i64 {
        if matches!(self, Provider::Twitch) {
            11 * 60
        } else {
            10 * 60
        }
    }
}

/// The per-provider contract: a genuine request is forwarded once (byte-exact, same content
/// type, hooklane's own signature), a forged or stale one is refused with 401 and recorded,
/// and a redelivery of the same id is acknowledged but not forwarded again.
async fn provider_contract(p: Provider) {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, created) = create_source(&server, p.spec(&rx.url)).await;
    let dest_secret = created["destinations"][0]["secret"].as_str().unwrap().to_string();
    let url = server.url(&format!("/in/{source}"));
    assert_eq!(created["ingestUrl"], json!(url));

    // Genuine: 200 once durable, then forwarded.
    let (headers, body, content_type) = p.request_to(&url, "dlv-0001", now(), true);
    let first = (headers.clone(), body.clone());
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 200, "{p:?}: {out}");
    assert_eq!(out["status"], "accepted", "{out}");
    let msg_id = out["msgId"].as_str().unwrap().to_string();
    let got = rx.wait_for(1, WAIT).await;
    let r = &got[0];
    assert_eq!(r.path, "/internal/hook");
    assert_eq!(r.body, body, "{p:?}: the body is forwarded byte for byte");
    assert_eq!(r.header("content-type"), content_type);
    assert_eq!(r.header("webhook-id"), msg_id);
    assert_eq!(r.header("x-internal"), "yes");
    assert!(signature_valid(&dest_secret, r), "{p:?}: destinations get hooklane's own signature");
    // The official Svix library, given every header the destination got, checks it too
    // (a Svix-sent provider's own `svix-id` and `svix-timestamp` would have misled it).
    let mut all = http::HeaderMap::new();
    for (name, value) in &r.headers {
        if let (Ok(n), Ok(v)) = (http::HeaderName::try_from(name.as_str()), http::HeaderValue::try_from(value.as_str()))
        {
            all.insert(n, v);
        }
    }
    svix::webhooks::Webhook::new(&dest_secret)
        .expect("secret")
        .verify(&r.body, &all)
        .unwrap_or_else(|e| panic!("{p:?}: the Svix library refuses the forwarded request: {e:?} {:?}", r.headers));
    for (name, _) in &headers {
        let lower = name.to_ascii_lowercase();
        // (`webhook-signature` is hooklane's own, checked above; Twilio's idempotency token
        // is its delivery id, informative like `X-GitHub-Delivery`, not a credential.)
        if lower.starts_with("webhook-") || lower == "i-twilio-idempotency-token" {
            continue;
        }
        if lower.contains("signature")
            || lower.contains("secret")
            || lower.contains("token")
            || lower == "authorization"
            || lower.contains("hmac")
        {
            assert!(!r.headers.contains_key(&lower), "{p:?}: {lower} must not be forwarded");
        }
    }

    // Forged: 401, recorded, never forwarded.
    let (headers, body, _) = p.request_to(&url, "dlv-0002", now(), false);
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 401, "{p:?}: {out}");
    assert_eq!(out["code"], "verification_failed", "{out}");

    // Stale: 401 as well.
    if p.timestamped() {
        let (headers, body, _) = p.request_to(&url, "dlv-0003", now() - p.stale_age(), true);
        let (status, out) = ingest(&server, &source, &headers, &body).await;
        assert_eq!(status, 401, "{p:?}: {out}");
        assert!(out["detail"].as_str().unwrap().contains("timestamp"), "{out}");
    }

    // Redelivered (the provider retries, a fresh signature for the same id; where the
    // signature is the delivery id, the same request again): acknowledged, not forwarded again.
    let (headers, body) = match p {
        Provider::Calendly | Provider::Hubspot => first,
        _ => {
            let (headers, body, _) = p.request_to(&url, "dlv-0001", now(), true);
            (headers, body)
        }
    };
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 200, "{p:?}: {out}");
    assert_eq!(out["status"], "duplicate", "{out}");
    assert_eq!(out["msgId"], json!(msg_id));
    settle().await;
    assert_eq!(rx.received().len(), 1, "{p:?}: forwarded exactly once");

    // Every request is in the log.
    let log = requests(&server, &source).await;
    let statuses: Vec<&str> = log.iter().rev().map(|r| r["status"].as_str().unwrap()).collect();
    let mut want = vec!["accepted", "rejected"];
    if p.timestamped() {
        want.push("rejected");
    }
    want.push("duplicate");
    assert_eq!(statuses, want, "{p:?}: {log:?}");
    let accepted = log.last().unwrap();
    assert_eq!(accepted["msgId"], json!(msg_id));
    assert_eq!(accepted["body"].as_str().unwrap().as_bytes(), &body[..]);
    assert_eq!(accepted["httpStatus"], 200);
    let rejected = &log[log.len() - 2];
    assert_eq!(rejected["httpStatus"], 401);
    assert!(rejected["msgId"].is_null());
    assert!(!rejected["reason"].as_str().unwrap().is_empty());
    // The forwarded message is in the source's application, by id and by delivery id.
    let (status, msg) = server.call("GET", &format!("/api/v1/app/{source}/msg/{msg_id}"), None).await;
    assert_eq!(status, 200, "{msg}");
    assert_eq!(msg["eventType"], p.event_type(), "{p:?}: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github() {
    provider_contract(Provider::Github).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab() {
    provider_contract(Provider::Gitlab).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe() {
    provider_contract(Provider::Stripe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddle() {
    provider_contract(Provider::Paddle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun() {
    provider_contract(Provider::Mailgun).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify() {
    provider_contract(Provider::Shopify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack() {
    provider_contract(Provider::Slack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zoom() {
    provider_contract(Provider::Zoom).await;
}

/// Slack's, Zoom's, Twitch's and Meta's checks of a new URL are answered as they ask, once
/// verified, and not forwarded; a forged one is refused like any forged request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_url_checks_are_answered_not_forwarded() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let ts = now().to_string();
    let v0 = |secret: &str, body: &[u8]| {
        format!("v0={}", hex(&hmac256(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body])))
    };

    let (slack, _) = create_source(&server, Provider::Slack.spec(&rx.url)).await;
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let signed = h(&[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &v0(SLACK_SECRET, body))]);
    let (status, answer) = ingest(&server, &slack, &signed, body).await;
    assert_eq!((status, answer), (200, json!({ "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" })));
    let forged = h(&[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &v0("wrong", body))]);
    let (status, answer) = ingest(&server, &slack, &forged, body).await;
    assert_eq!(status, 401, "{answer}");

    let (zoom, _) = create_source(&server, Provider::Zoom.spec(&rx.url)).await;
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let signed = h(&[("x-zm-request-timestamp", &ts), ("x-zm-signature", &v0(ZOOM_SECRET, body))]);
    let (status, answer) = ingest(&server, &zoom, &signed, body).await;
    let encrypted = hex(&hmac256(ZOOM_SECRET.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"]));
    assert_eq!((status, answer), (200, json!({ "plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": encrypted })));

    // Twitch's check of a new subscription: its challenge back, as the whole body, in text.
    let (twitch, _) = create_source(&server, Provider::Twitch.spec(&rx.url)).await;
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"sub-1","status":"webhook_callback_verification_pending","type":"channel.follow","version":"2"}}"#;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let sig = format!("sha256={}", hex(&hmac256(TWITCH_SECRET.as_bytes(), &[b"msg-v1", at.as_bytes(), body])));
    let resp = server
        .client
        .post(server.url(&format!("/in/{twitch}")))
        .header("Twitch-Eventsub-Message-Id", "msg-v1")
        .header("Twitch-Eventsub-Message-Type", "webhook_callback_verification")
        .header("Twitch-Eventsub-Message-Timestamp", &at)
        .header("Twitch-Eventsub-Message-Signature", sig)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(resp.text().await.unwrap(), "pogchamp-kappa-360noscope-vohiyo");

    // Meta's check is a GET with its verify token: the challenge back, in text.
    let (meta, created) = create_source(&server, Provider::Meta.spec(&rx.url)).await;
    assert_eq!(created["verification"], json!({ "type": "meta" }), "the app secret and verify token are not shown");
    let check = |token: &str| {
        let query = format!("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={token}");
        server.client.get(server.url(&format!("/in/{meta}?{query}"))).send()
    };
    let resp = check(META_TOKEN).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(resp.text().await.unwrap(), "1158201444");
    assert_eq!(check("not-the-token").await.unwrap().status(), 403);
    let not_a_check = server.client.get(server.url(&format!("/in/{meta}"))).send().await.unwrap();
    assert_eq!(not_a_check.status(), 400);
    let query = format!("hub.mode=subscribe&hub.challenge=1&hub.verify_token={META_TOKEN}");
    let head = server.client.head(server.url(&format!("/in/{meta}?{query}"))).send().await.unwrap();
    assert_eq!(head.status(), 405, "a HEAD is not the check");
    // A source of another provider takes no GET.
    let resp = server.client.get(server.url(&format!("/in/{slack}?hub.mode=subscribe"))).send().await.unwrap();
    assert_eq!(resp.status(), 405);

    settle().await;
    assert!(rx.received().is_empty(), "a URL check is not forwarded");
    for source in [&slack, &zoom, &twitch, &meta] {
        let log = requests(&server, source).await;
        let first = log.last().expect("the check is in the log");
        assert_eq!((first["status"].as_str(), first["httpStatus"].as_u64()), (Some("accepted"), Some(200)), "{first}");
        assert!(first["msgId"].is_null(), "{first}");
        let (status, messages) = server.call("GET", &format!("/api/v1/app/{source}/msg"), None).await;
        assert_eq!((status, messages["data"].as_array().map(Vec::len)), (200, Some(0)), "{messages}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram() {
    provider_contract(Provider::Telegram).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twitch() {
    provider_contract(Provider::Twitch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendly() {
    provider_contract(Provider::Calendly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn square() {
    provider_contract(Provider::Square).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta() {
    provider_contract(Provider::Meta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot() {
    provider_contract(Provider::Hubspot).await;
}

/// Discord signs with Ed25519, and wants each kind of request answered its own way: an
/// interaction's PING with `{"type": 1}`, a slash command with a deferred response (and
/// forwarded), a webhook event (or its PING) with 204. Forged, stale and replayed requests
/// are refused or acknowledged without being forwarded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord() {
    use ed25519_dalek::{Signer, SigningKey};
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let key = SigningKey::from_bytes(&[7; 32]);
    let spec = json!({
        "name": "discord",
        "verification": { "type": "discord", "publicKey": hex(key.verifying_key().as_bytes()) },
        "destinations": [{ "url": format!("{}/bot", rx.url) }],
    });
    let (source, created) = create_source(&server, spec).await;
    assert_eq!(created["verification"]["publicKey"], json!(hex(key.verifying_key().as_bytes())));
    let sign = |signer: &SigningKey, ts: i64, body: &str| {
        let sig = signer.sign(&[ts.to_string().as_bytes(), body.as_bytes()].concat());
        h(&[
            ("X-Signature-Ed25519", &hex(&sig.to_bytes())),
            ("X-Signature-Timestamp", &ts.to_string()),
            ("content-type", "application/json"),
        ])
    };
    let ping = r#"{"application_id":"11","id":"21","token":"cGluZw","type":1,"version":1}"#;
    assert_eq!(ingest(&server, &source, &sign(&key, now(), ping), ping.as_bytes()).await, (200, json!({ "type": 1 })));
    let command =
        r#"{"application_id":"11","id":"22","token":"Y29tbWFuZA","type":2,"data":{"name":"deploy"},"version":1}"#;
    let signed = sign(&key, now(), command);
    assert_eq!(ingest(&server, &source, &signed, command.as_bytes()).await, (200, json!({ "type": 5 })));
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].body, command.as_bytes());
    assert!(!got[0].headers.contains_key("x-signature-ed25519"));
    // The same request again: answered, not forwarded again.
    assert_eq!(ingest(&server, &source, &signed, command.as_bytes()).await, (200, json!({ "type": 5 })));
    // An autocomplete can be answered only at once: with no choices, and not forwarded.
    let autocomplete =
        r#"{"application_id":"11","id":"23","token":"YXV0bw","type":4,"data":{"name":"deploy"},"version":1}"#;
    let (status, answer) = ingest(&server, &source, &sign(&key, now(), autocomplete), autocomplete.as_bytes()).await;
    assert_eq!((status, answer), (200, json!({ "type": 8, "data": { "choices": [] } })));
    // Webhook events: the PING and an event, both 204; the event is forwarded.
    let event_ping = r#"{"version":1,"application_id":"11","type":0}"#;
    let (status, _) = ingest(&server, &source, &sign(&key, now(), event_ping), event_ping.as_bytes()).await;
    assert_eq!(status, 204);
    let event = r#"{"version":1,"application_id":"11","type":1,"event":{"type":"APPLICATION_AUTHORIZED","data":{"user":{"id":"31"}}}}"#;
    let (status, _) = ingest(&server, &source, &sign(&key, now(), event), event.as_bytes()).await;
    assert_eq!(status, 204);
    rx.wait_for(2, WAIT).await;
    // Signed by another key, or too old: refused.
    let other = SigningKey::from_bytes(&[8; 32]);
    let (status, out) = ingest(&server, &source, &sign(&other, now(), command), command.as_bytes()).await;
    assert_eq!((status, out["code"].as_str()), (401, Some("verification_failed")), "{out}");
    let (status, _) = ingest(&server, &source, &sign(&key, now() - 600, command), command.as_bytes()).await;
    assert_eq!(status, 401);
    settle().await;
    assert_eq!(rx.received().len(), 2, "the command and the event, once each");

    let log = requests(&server, &source).await;
    let statuses: Vec<&str> = log.iter().rev().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["accepted", "accepted", "duplicate", "accepted", "accepted", "accepted", "rejected", "rejected"]
    );
    // Each as answered: the webhook event and its PING with 204.
    let answered: Vec<u64> = log.iter().rev().map(|r| r["httpStatus"].as_u64().unwrap()).collect();
    assert_eq!(answered, [200, 200, 200, 200, 204, 204, 401, 401]);
    let mut types = Vec::new();
    for r in log.iter().filter(|r| !r["msgId"].is_null() && r["status"] == "accepted") {
        let path = format!("/api/v1/app/{source}/msg/{}", r["msgId"].as_str().unwrap());
        let (_, msg) = server.call("GET", &path, None).await;
        types.push(msg["eventType"].as_str().unwrap().to_string());
    }
    types.sort();
    assert_eq!(types, ["APPLICATION_AUTHORIZED", "application_command"]);
    // A key that is not one is refused when the source is saved.
    let bad = json!({ "name": "d", "verification": { "type": "discord", "publicKey": "abcd" } });
    let (status, out) = server.call("POST", "/api/v1/source", Some(bad)).await;
    assert_eq!(status, 422, "{out}");
}

/// A server on PostgreSQL with a source (no verification, no delivery id) forwarding to an
/// event type of `target`, whose messages the database refuses (a trigger, `refuse`, on
/// `messages`) until the test drops it through `pg`.
struct FanOutRefused {
    db: hooklane_store::postgres::testing::TestDatabase,
    server: Server,
    target: String,
    source: String,
    pg: tokio_postgres::Client,
}

impl FanOutRefused {
    async fn start(extra: &str) -> FanOutRefused {
        let db = hooklane_store::postgres::testing::TestDatabase::create().await;
        let server = Server::start(&format!("database_url = \"{}\"\n{extra}", db.url())).await;
        let target = server.create_app("Fan-out target").await;
        let spec = json!({
            "name": "unrecognised retries",
            "verification": { "type": "none" },
            "destinations": [{ "appId": target, "eventType": "inbound.forwarded" }],
        });
        let (source, _) = create_source(&server, spec).await;
        let (pg, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        let refuse = format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.app_id = '{target}' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse();"
        );
        pg.batch_execute(&refuse).await.expect("trigger");
        FanOutRefused { db, server, target, source, pg }
    }
}

/// A fan-out to an event type that fails, for a source whose provider's sending again
/// would not be recognised (here: no delivery id), is answered and finished in the
/// background. PostgreSQL refuses the write (a trigger) until the test lets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fan_out_is_finished_in_the_background() {
    let FanOutRefused { db: _db, server, target, source, pg } = FanOutRefused::start("").await;

    let (status, out) = ingest(&server, &source, &h(&[("content-type", "application/json")]), br#"{"n": 1}"#).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    let log = requests(&server, &source).await;
    assert!(log[0]["reason"].as_str().unwrap().contains("fan-out failed"), "{log:?}");
    let (_, messages) = server.call("GET", &format!("/api/v1/app/{target}/msg"), None).await;
    assert_eq!(messages["data"].as_array().map(Vec::len), Some(0), "{messages}");

    // Discord, which sends nothing twice, gets its own answer on that path too.
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let spec = json!({
        "name": "discord to an event type",
        "verification": { "type": "discord", "publicKey": hex(key.verifying_key().as_bytes()) },
        "destinations": [{ "appId": target, "eventType": "inbound.forwarded" }],
    });
    let (discord, _) = create_source(&server, spec).await;
    let command = r#"{"application_id":"11","id":"41","token":"dA","type":2,"data":{"name":"deploy"},"version":1}"#;
    let ts = now().to_string();
    let sig = ed25519_dalek::Signer::sign(&key, &[ts.as_bytes(), command.as_bytes()].concat());
    let headers = h(&[
        ("X-Signature-Ed25519", &hex(&sig.to_bytes())),
        ("X-Signature-Timestamp", &ts),
        ("content-type", "application/json"),
    ]);
    assert_eq!(ingest(&server, &discord, &headers, command.as_bytes()).await, (200, json!({ "type": 5 })));

    // A deduplication written out as the provider's own (a source's GET sent back) is no
    // reason to count on a recognised retry: Mailgun's retries carry new tokens. Nor is one
    // that reads nothing (`none`) for GitHub.
    for (provider, dedup) in [
        (Provider::Mailgun, json!({ "type": "jsonField", "path": "signature.token" })),
        (Provider::Github, json!({ "type": "none" })),
    ] {
        let mut spec = provider.spec("http://127.0.0.1:9");
        spec["destinations"] = json!([{ "appId": target, "eventType": "inbound.forwarded" }]);
        spec["deduplication"] = dedup;
        let (source, _) = create_source(&server, spec).await;
        let (headers, body, _) = provider.request("fan-1", now(), true);
        let (status, out) = ingest(&server, &source, &headers, &body).await;
        assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{provider:?}: {out}");
    }

    pg.batch_execute("DROP TRIGGER refuse ON messages").await.expect("drop trigger");
    let path = format!("/api/v1/app/{target}/msg");
    let done = server.wait_until(&path, WAIT, |b| b["data"].as_array().is_some_and(|d| d.len() == 4)).await;
    let payloads: Vec<&Value> = done["data"].as_array().unwrap().iter().map(|m| &m["payload"]).collect();
    let command: Value = serde_json::from_str(command).unwrap();
    assert!(payloads.contains(&&command) && payloads.contains(&&json!({ "n": 1 })), "{done}");
    assert!(done["data"].as_array().unwrap().iter().all(|m| m["eventType"] == "inbound.forwarded"), "{done}");
}

/// A provider's retry of a request whose fan-out failed, recognised as a duplicate, does not
/// finish that fan-out once the request's content was deleted: the destinations would get
/// `{}`. (Its first fan-out failed: PostgreSQL refused the write, a trigger.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_does_not_fan_out_a_deleted_content() {
    let FanOutRefused { db: _db, server, target, source: _, pg } = FanOutRefused::start("").await;
    let spec = json!({
        "name": "recognised retries",
        "verification": { "type": "none" },
        "deduplication": { "type": "header", "header": "x-delivery" },
        "destinations": [{ "appId": target, "eventType": "inbound.forwarded" }],
    });
    let (source, created) = create_source(&server, spec).await;
    let app = created["appId"].as_str().unwrap().to_string();
    let headers = h(&[("content-type", "application/json"), ("x-delivery", "d-1")]);
    let (status, out) = ingest(&server, &source, &headers, br#"{"secret": "data"}"#).await;
    assert!(status >= 500, "the provider is asked to send it again: {status} {out}");
    let msg = requests(&server, &source).await[0]["msgId"].as_str().expect("its message").to_string();
    let (status, _) = server.call("DELETE", &format!("/api/v1/app/{app}/msg/{msg}/content"), None).await;
    assert_eq!(status, 204);
    pg.batch_execute("DROP TRIGGER refuse ON messages").await.expect("drop trigger");
    let (status, out) = ingest(&server, &source, &headers, br#"{"secret": "data"}"#).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("duplicate")), "{out}");
    // Nor is the content back in the request log through the retry's record.
    let (_, log) = server.call("GET", &format!("/api/v1/source/{source}/request"), None).await;
    assert!(!log.to_string().contains("secret"), "{log}");
    settle().await;
    let (_, messages) = server.call("GET", &format!("/api/v1/app/{target}/msg"), None).await;
    assert_eq!(messages["data"].as_array().map(Vec::len), Some(0), "{messages}");
}

/// A provider's retry of a request whose fan-out failed (it was asked to send it again)
/// completes that fan-out at once, and marks the request's record done. (PostgreSQL refused
/// the first fan-out's write: a trigger.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_completes_an_unfinished_fan_out() {
    let FanOutRefused { db: _db, server, target, source: _, pg } = FanOutRefused::start("").await;
    let spec = json!({
        "name": "recognised retries",
        "verification": { "type": "none" },
        "deduplication": { "type": "header", "header": "x-delivery" },
        "destinations": [{ "appId": target, "eventType": "inbound.forwarded" }],
    });
    let (source, _) = create_source(&server, spec).await;
    let headers = h(&[("content-type", "application/json"), ("x-delivery", "d-1")]);
    let (status, out) = ingest(&server, &source, &headers, br#"{"n": 1}"#).await;
    assert!(status >= 500, "the provider is asked to send it again: {status} {out}");
    let first = requests(&server, &source).await[0]["id"].as_str().expect("its record").to_string();
    pg.batch_execute("DROP TRIGGER refuse ON messages").await.expect("drop trigger");
    let (status, out) = ingest(&server, &source, &headers, br#"{"n": 1}"#).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("duplicate")), "{out}");
    let (_, messages) = server.call("GET", &format!("/api/v1/app/{target}/msg"), None).await;
    assert_eq!(messages["data"][0]["payload"], json!({ "n": 1 }), "{messages}");
    let (_, record) = server.call("GET", &format!("/api/v1/source/{source}/request/{first}"), None).await;
    assert_eq!((record["status"].as_str(), &record["reason"]), (Some("accepted"), &Value::Null), "{record}");
}

/// A request acknowledged while its fan-out to an event type failed is not lost when the
/// node that took it is killed before its own retries succeed: the fan-out is recorded as
/// unfinished, and a sweep (any node's, here the restarted one's) completes it once the
/// store takes it, once, and marks the record done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_fan_out_survives_a_crash() {
    let FanOutRefused { db: _db, mut server, target, source, pg } =
        FanOutRefused::start("housekeeping_interval = \"200ms\"").await;

    // While even its record cannot be written, nothing would keep the fan-out still to be
    // done: the request is not acknowledged (the provider sends it again).
    let refuse_records = "CREATE FUNCTION refuse_records() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse_records BEFORE INSERT ON inbound_requests FOR EACH ROW \
           EXECUTE FUNCTION refuse_records();";
    pg.batch_execute(refuse_records).await.expect("trigger");
    let (status, out) = ingest(&server, &source, &h(&[("content-type", "application/json")]), br#"{"n": 6}"#).await;
    assert_eq!((status, out["code"].as_str()), (503, Some("unavailable")), "{out}");
    pg.batch_execute("DROP TRIGGER refuse_records ON inbound_requests").await.expect("drop trigger");

    let (status, out) = ingest(&server, &source, &h(&[("content-type", "application/json")]), br#"{"n": 7}"#).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    let request_id = out["requestId"].as_str().expect("request id").to_string();
    // Killed before its own retries (1 s, 2 s, 3 s later) could succeed: they die with it.
    server.kill9();
    pg.batch_execute("DROP TRIGGER refuse ON messages").await.expect("drop trigger");
    server.restart_after_kill();

    let path = format!("/api/v1/app/{target}/msg");
    let done = server
        .wait_until(&path, Duration::from_secs(30), |b| b["data"].as_array().is_some_and(|d| !d.is_empty()))
        .await;
    // (The unrecorded request's fan-out died with the node: only the acknowledged one.)
    assert_eq!(done["data"][0]["payload"], json!({ "n": 7 }), "{done}");
    assert_eq!(done["data"][0]["eventType"], "inbound.forwarded", "{done}");
    let record_path = format!("/api/v1/source/{source}/request/{request_id}");
    let record = server.wait_until(&record_path, WAIT, |r| r["reason"].is_null()).await;
    assert_eq!(record["status"], "accepted", "{record}");
    // Later sweeps add nothing: the fan-out is done, and marked so.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, again) = server.call("GET", &path, None).await;
    assert_eq!(again["data"].as_array().map(Vec::len), Some(1), "{again}");
}

/// A sweep completes every unfinished fan-out it finds, not one batch of 100 a
/// `housekeeping_interval` (an hour here): 150 acknowledged while the store refused their
/// messages, their node killed, are all forwarded by the restarted node's first sweep (the
/// next would come 30 s later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_completes_more_than_a_batch_of_fan_outs() {
    let FanOutRefused { db: _db, mut server, target, source, pg } =
        FanOutRefused::start("housekeeping_interval = \"1h\"").await;
    let json = h(&[("content-type", "application/json")]);
    for n in 0..150 {
        let (status, out) = ingest(&server, &source, &json, format!("{{\"n\": {n}}}").as_bytes()).await;
        assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    }
    server.kill9();
    pg.batch_execute("DROP TRIGGER refuse ON messages").await.expect("drop trigger");
    // Past the 10 s a request's own retries are left, so that the first sweep takes them.
    tokio::time::sleep(Duration::from_secs(11)).await;
    server.restart_after_kill();
    let path = format!("/api/v1/app/{target}/msg?limit=250");
    let done = server
        .wait_until(&path, Duration::from_secs(20), |b| b["data"].as_array().is_some_and(|d| d.len() == 150))
        .await;
    assert_eq!(done["data"].as_array().map(Vec::len), Some(150), "{done}");
}

/// Where the signature does not cover the whole request (Mailgun's covers a timestamp and
/// a token, not the body; Twilio's carries no timestamp), a signature serves once: a seen
/// one carrying another event is acknowledged as a duplicate and never forwarded. Zoom's
/// serves once too: its events carry no id to tell a replay by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seen_signature_cannot_carry_another_event() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (mailgun, _) = create_source(&server, Provider::Mailgun.spec(&rx.url)).await;
    let (headers, body, _) = Provider::Mailgun.request("ev-1", now(), true);
    let (status, out) = ingest(&server, &mailgun, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    let forged = String::from_utf8(body).unwrap().replace("\"ev-1\"", "\"ev-2\"").replace("delivered", "complained");
    let (status, out) = ingest(&server, &mailgun, &headers, forged.as_bytes()).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("duplicate")), "{out}");
    // Which is why a mailgun source keeps that key: another is refused.
    let by_id = json!({ "type": "jsonField", "path": "event-data.id" });
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{mailgun}"), Some(json!({ "deduplication": by_id }))).await;
    assert_eq!((status, out["code"].as_str()), (422, Some("validation")), "{out}");
    assert!(out.to_string().contains("deduplication"), "{out}");
    let mut spec = Provider::Mailgun.spec(&rx.url);
    spec["deduplication"] = by_id;
    let (status, out) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!(status, 422, "{out}");

    let (twilio, _) = create_source(&server, Provider::Twilio.spec(&rx.url)).await;
    let url = server.url(&format!("/in/{twilio}"));
    let (headers, body, _) = Provider::Twilio.request_to(&url, "SM1", now(), true);
    let (status, out) = ingest(&server, &twilio, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    // The same parameters in another order verify too: still the same request.
    let reordered = body.split(|b| *b == b'&').rev().collect::<Vec<_>>().join(&b'&');
    assert_ne!(reordered, body);
    let mut headers = headers.clone();
    headers.retain(|(k, _)| k != "I-Twilio-Idempotency-Token");
    let (status, out) = ingest(&server, &twilio, &headers, &reordered).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("duplicate")), "{out}");

    // Zoom's events carry no delivery id, and its signature covers a timestamp: by default
    // a signature serves once, so a captured request is not forwarded again in its window.
    let mut spec = Provider::Zoom.spec(&rx.url);
    spec.as_object_mut().expect("spec").remove("deduplication");
    let (zoom, _) = create_source(&server, spec).await;
    let (headers, body, _) = Provider::Zoom.request("zm-1", now(), true);
    let (status, out) = ingest(&server, &zoom, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    let (status, out) = ingest(&server, &zoom, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("duplicate")), "{out}");

    rx.wait_for(3, WAIT).await;
    settle().await;
    assert_eq!(rx.received().len(), 3, "only the three genuine requests were forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio() {
    provider_contract(Provider::Twilio).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks() {
    provider_contract(Provider::StandardWebhooks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_sent_through_svix() {
    provider_contract(Provider::SvixSent).await;
}

/// hooklane sending to hooklane with an Ed25519 key pair: the sending endpoint holds the
/// `whsk_` key, the source only its `whpk_` public key, which can check but never sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_checks_ed25519_signatures_with_only_the_public_key() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let sender = server.create_app("sender").await;
    let pair = "whsk_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB5tVYuj+ZU+UB4sRLoqYunkB+FOuaVvtfg45ELrQSWZA==";
    let public = "whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=";
    let (source, created) = create_source(
        &server,
        json!({
            "name": "from another hooklane",
            "verification": { "type": "standardWebhooks", "secret": public },
            // The destination is signed with a key pair of its own.
            "destinations": [{ "url": format!("{}/internal", rx.url), "secret": format!("whsk_{}", B64.encode([3u8; 32])) }],
        }),
    )
    .await;
    assert!(!created.to_string().contains(public), "verification keys are not answered: {created}");
    assert!(!created.to_string().contains("whsk_"), "nor secret keys: {created}");
    let dest_secret = created["destinations"][0]["secret"].as_str().unwrap().to_string();
    server.create_endpoint(&sender, json!({ "url": created["ingestUrl"], "secret": pair })).await;

    let msg = server.send_message(&sender, "order.paid", json!({"order": 7})).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].json(), json!({"order": 7}));
    assert!(ed25519_signature_valid(&dest_secret, &got[0]), "re-signed for the destination");
    let log = requests(&server, &source).await;
    assert_eq!(log[0]["status"], "accepted", "{log:?}");
    assert_eq!(log[0]["headers"]["webhook-id"], json!(msg), "{log:?}");

    // Signed by the right pair but for another request, by another pair, with an HMAC, or
    // with thousands of entries: refused (the last, quickly: only the first few entries
    // are checked, each an Ed25519 check of the whole body).
    let body = br#"{"order": 8}"#;
    let ts = now().to_string();
    let content = format!("msg_x.{ts}.{}", std::str::from_utf8(body).unwrap());
    let ed25519 = |seed: [u8; 32]| {
        use ed25519_dalek::Signer;
        format!("v1a,{}", B64.encode(ed25519_dalek::SigningKey::from_bytes(&seed).sign(content.as_bytes()).to_bytes()))
    };
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    let genuine = ed25519(seed);
    let forged = [
        "v1a,OVJuLC0iOuaBuQulpz9A/zDgvqV8z8miLUJk2j15ZMONwDNhOvPJ3rO4owAHFyjFq80+pUUjrNfTHAZs1RQnDw==".to_string(),
        ed25519([9; 32]),
        format!("v1,{}", B64.encode(hmac256(b"0123456789abcdef01234567", &[content.as_bytes()]))),
        format!("{}{genuine}", format!("{} ", ed25519([9; 32])).repeat(3000)),
    ];
    for signature in forged {
        let headers = h(&[("webhook-id", "msg_x"), ("webhook-timestamp", &ts), ("webhook-signature", &signature)]);
        let (status, out) = ingest(&server, &source, &headers, body).await;
        assert_eq!(status, 401, "{}: {out}", &signature[..100.min(signature.len())]);
    }
    // The same request, signed by the pair: accepted (so the refusals above were for
    // their signatures alone).
    let headers = h(&[("webhook-id", "msg_x"), ("webhook-timestamp", &ts), ("webhook-signature", &genuine)]);
    assert_eq!(ingest(&server, &source, &headers, body).await.0, 200);
    rx.wait_for(2, WAIT).await;
    settle().await;
    assert_eq!(rx.received().len(), 2);

    // The destinations as `GET` answers them, sent back: the destination keeps its key
    // (answered as the public key, which is no secret to sign with).
    let (status, got) = server.call("GET", &format!("/api/v1/source/{source}"), None).await;
    assert_eq!(status, 200, "{got}");
    let path = format!("/api/v1/source/{source}");
    let (status, kept) = server.call("PATCH", &path, Some(json!({ "destinations": got["destinations"] }))).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["destinations"][0]["secret"], json!(dest_secret), "{kept}");
    server.send_message(&sender, "order.paid", json!({"order": 9})).await;
    let got = rx.wait_for(3, WAIT).await;
    assert!(got.iter().all(|r| ed25519_signature_valid(&dest_secret, r)));
    // A source is not given the sender's secret key to check with.
    let wrong = json!({ "verification": { "type": "standardWebhooks", "secret": pair } });
    let (status, body) = server.call("PATCH", &path, Some(wrong)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("whpk_ public key"), "{body}");
    // A source's key is checked when it is set.
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/source",
            Some(json!({ "name": "bad key", "verification": { "type": "standardWebhooks", "secret": "whpk_AAAA" } })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "verification.secret"]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_hmac() {
    provider_contract(Provider::Hmac).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth() {
    provider_contract(Provider::BasicAuth).await;
    // A refused basic-auth request says how to authenticate.
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, _) = create_source(&server, Provider::BasicAuth.spec(&rx.url)).await;
    let resp = server.client.post(server.url(&format!("/in/{source}"))).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"hooklane\"");
}

/// A push signed with `secret`, as GitHub sends it.
fn github_push_signed(secret: &str, id: &str) -> (Vec<(String, String)>, String) {
    let body = format!(r#"{{"ref": "main", "delivery": "{id}"}}"#);
    let sig = format!("sha256={}", hex(&hmac256(secret.as_bytes(), &[body.as_bytes()])));
    let headers = h(&[("X-GitHub-Delivery", id), ("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)]);
    (headers, body)
}

/// A rotation of a source's secret: the verification replaced with `keepPreviousVerification`
/// is accepted beside the new one until it ends (or is ended), answers show it without its
/// secret, and a keep that cannot be one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_source_secret_is_accepted_until_its_overlap_ends() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, created) = create_source(
        &server,
        json!({"name": "gh", "verification": {"type": "github", "secret": "old-secret-0001"},
               "destinations": [{"url": rx.url}]}),
    )
    .await;
    assert!(created.get("previousVerification").is_none(), "{created}");
    let path = format!("/api/v1/source/{source}");
    let send = |secret: &'static str, id: &'static str| {
        let (headers, body) = github_push_signed(secret, id);
        let (server, source) = (&server, source.clone());
        async move { ingest(server, &source, &headers, body.as_bytes()).await.0 }
    };
    assert_eq!(send("old-secret-0001", "d-1").await, 200);

    // Rotated with a day's overlap: both secrets pass, a third does not.
    let (status, rotated) = server
        .call(
            "PATCH",
            &path,
            Some(json!({"verification": {"type": "github", "secret": "new-secret-0002"},
                        "keepPreviousVerification": 86400})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let previous = &rotated["previousVerification"];
    assert_eq!(previous["type"], "github", "{rotated}");
    assert!(previous.get("secret").is_none() && !rotated.to_string().contains("secret-000"), "{rotated}");
    let expires: hooklane_core::DateTime<hooklane_core::Utc> =
        serde_json::from_value(previous["expiresAt"].clone()).expect("expiresAt");
    let left = (expires - hooklane_core::Utc::now()).num_seconds();
    assert!((86000..=86400).contains(&left), "{left}");
    assert_eq!(send("old-secret-0001", "d-2").await, 200, "the old secret still passes");
    assert_eq!(send("new-secret-0002", "d-3").await, 200, "the new secret passes");
    assert_eq!(send("other-secret-03", "d-4").await, 401, "another secret does not");
    // A PATCH of something else keeps the overlap as it is.
    let (status, renamed) = server.call("PATCH", &path, Some(json!({"name": "GitHub"}))).await;
    assert_eq!((status, &renamed["previousVerification"]), (200, previous), "{renamed}");

    // Ended: the old secret is refused at once, the new one still passes.
    let (status, ended) = server.call("PATCH", &path, Some(json!({"keepPreviousVerification": 0}))).await;
    assert_eq!(status, 200, "{ended}");
    assert!(ended.get("previousVerification").is_none(), "{ended}");
    assert_eq!(send("old-secret-0001", "d-5").await, 401);
    assert_eq!(send("new-secret-0002", "d-6").await, 200);

    // Refused: nothing replaced to keep, another type, beyond a week, on a new source.
    let (status, body) = server.call("PATCH", &path, Some(json!({"keepPreviousVerification": 60}))).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("validation")), "{body}");
    let other_type = json!({"verification": {"type": "shopify", "secret": "shop-secret-004"},
                            "keepPreviousVerification": 60});
    let (status, body) = server.call("PATCH", &path, Some(other_type)).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("validation")), "{body}");
    let too_long = json!({"verification": {"type": "github", "secret": "newer-secret-05"},
                          "keepPreviousVerification": 604801});
    let (status, body) = server.call("PATCH", &path, Some(too_long)).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("validation")), "{body}");
    let fresh = json!({"name": "n", "verification": {"type": "github", "secret": "x-secret-00006"},
                       "keepPreviousVerification": 60});
    let (status, body) = server.call("POST", "/api/v1/source", Some(fresh)).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("validation")), "{body}");
    assert_eq!(send("new-secret-0002", "d-7").await, 200, "refused changes changed nothing");

    // A replacement (PUT) without a keep refuses the one replaced at once; one with a
    // short keep lets it pass only until then.
    let replace = |secret: &str, keep: Option<u64>| {
        let mut spec = json!({"name": "GitHub", "verification": {"type": "github", "secret": secret},
                              "destinations": [{"id": created["destinations"][0]["id"], "url": rx.url}]});
        if let Some(keep) = keep {
            spec["keepPreviousVerification"] = json!(keep);
        }
        spec
    };
    let (status, body) = server.call("PUT", &path, Some(replace("put-secret-0007", None))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(send("new-secret-0002", "d-8").await, 401);
    let (status, body) = server.call("PUT", &path, Some(replace("put-secret-0008", Some(1)))).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(send("put-secret-0007", "d-9").await, 401, "the overlap has ended");
    assert_eq!(send("put-secret-0008", "d-10").await, 200);
    let (_, shown) = server.call("GET", &path, None).await;
    assert!(shown.get("previousVerification").is_none(), "{shown}");

    // Exactly the requests accepted were forwarded.
    let got = rx.wait_for(6, WAIT).await;
    settle().await;
    let mut delivered: Vec<String> =
        rx.received().iter().map(|r| r.json()["delivery"].as_str().unwrap().to_string()).collect();
    delivered.sort();
    assert_eq!(got.len(), 6);
    assert_eq!(delivered, ["d-1", "d-10", "d-2", "d-3", "d-6", "d-7"]);
}

/// A Slack slash command is form-encoded: forwarded as it came, with its content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_form_body_is_forwarded_as_is() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, _) = create_source(&server, Provider::Slack.spec(&rx.url)).await;
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather&text=94070".to_vec();
    let ts = now().to_string();
    let sig = format!("v0={}", hex(&hmac256(SLACK_SECRET.as_bytes(), &[b"v0:", ts.as_bytes(), b":", &body])));
    let form = "application/x-www-form-urlencoded";
    let headers = h(&[("X-Slack-Request-Timestamp", &ts), ("X-Slack-Signature", &sig), ("content-type", form)]);
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 200, "{out}");
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].header("content-type"), form);
    // The message API shows a body that is not JSON as a string.
    let msg_id = out["msgId"].as_str().unwrap();
    let (_, msg) = server.call("GET", &format!("/api/v1/app/{source}/msg/{msg_id}"), None).await;
    assert_eq!(msg["payload"], json!(String::from_utf8(body).unwrap()));
}

/// Slack's slash commands and interactivity are forms without an `event_id`: their signature
/// serves once, so a captured one is not forwarded again within its five minutes, and it is
/// taken only as Slack writes it (or each other spelling would pass once more). Events are
/// still told by their `event_id`: a retry, signed again, is a duplicate. The deduplication
/// the source shows can be sent back as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_form_is_forwarded_once() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, created) = create_source(&server, Provider::Slack.spec(&rx.url)).await;
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fdeploy&text=prod".to_vec();
    let ts = now().to_string();
    let hex_sig = hex(&hmac256(SLACK_SECRET.as_bytes(), &[b"v0:", ts.as_bytes(), b":", &body]));
    let signed = |sig: &str| {
        h(&[
            ("X-Slack-Request-Timestamp", &ts),
            ("X-Slack-Signature", sig),
            ("content-type", "application/x-www-form-urlencoded"),
        ])
    };
    let (status, out) = ingest(&server, &source, &signed(&format!("v0={hex_sig}")), &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    let (status, again) = ingest(&server, &source, &signed(&format!("v0={hex_sig}")), &body).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")), "{again}");
    assert_eq!(again["msgId"], out["msgId"]);
    let upper = format!("v0={}", hex_sig.to_ascii_uppercase());
    let (status, refused) = ingest(&server, &source, &signed(&upper), &body).await;
    assert_eq!((status, refused["code"].as_str()), (401, Some("verification_failed")), "{refused}");
    assert!(refused["detail"].as_str().unwrap_or_default().contains("malformed X-Slack-Signature"), "{refused}");

    // An event and Slack's retry of it (a new timestamp, so a new signature).
    let (headers, body, _) = Provider::Slack.request("Ev08MFMKH6", now(), true);
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    let (retry, body, _) = Provider::Slack.request("Ev08MFMKH6", now() + 1, true);
    assert_ne!(retry, headers);
    let (status, out) = ingest(&server, &source, &retry, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("duplicate")), "{out}");

    rx.wait_for(2, WAIT).await;
    settle().await;
    assert_eq!(rx.received().len(), 2, "the form and the event, once each");

    let shown = json!({ "type": "jsonFieldOrHeader", "path": "event_id", "header": "x-slack-signature" });
    assert_eq!(created["deduplication"], shown);
    let patch = json!({ "deduplication": shown });
    let (status, out) = server.call("PATCH", &format!("/api/v1/source/{source}"), Some(patch)).await;
    assert_eq!((status, &out["deduplication"]), (200, &shown), "{out}");
    let (_, out) = server.call("GET", &format!("/api/v1/source/{source}"), None).await;
    assert_eq!(out["deduplication"], shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_allow_list_and_body_limit() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let mut spec = Provider::Telegram.spec(&rx.url);
    spec["allowNetworks"] = json!(["10.0.0.0/8"]);
    spec["maxBodyBytes"] = json!(1024);
    let (source, created) = create_source(&server, spec).await;
    assert_eq!(created["allowNetworks"], json!(["10.0.0.0/8"]));
    let (headers, body, _) = Provider::Telegram.request("a", now(), true);
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 403, "{out}");
    assert_eq!(out["code"], "forbidden");

    // Allow loopback: accepted; then a body over the limit is refused, announced or not.
    let (status, out) = server
        .call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "allowNetworks": ["127.0.0.0/8"] })))
        .await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 200, "{out}");
    let big = format!(r#"{{"update_id":7,"message":{{"text":"{}"}}}}"#, "x".repeat(2000));
    let (status, out) = ingest(&server, &source, &headers, big.as_bytes()).await;
    assert_eq!(status, 413, "{out}");
    assert_eq!(out["code"], "payload_too_large");
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(big.clone().into_bytes())]);
    let resp = server
        .client
        .post(server.url(&format!("/in/{source}")))
        .header("X-Telegram-Bot-Api-Secret-Token", TG_TOKEN)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413, "chunked body over the limit");

    settle().await;
    assert_eq!(rx.received().len(), 1);
    let log = requests(&server, &source).await;
    let got: Vec<(&str, u64)> =
        log.iter().rev().map(|r| (r["status"].as_str().unwrap(), r["httpStatus"].as_u64().unwrap())).collect();
    assert_eq!(got, vec![("rejected", 403), ("accepted", 200), ("rejected", 413), ("rejected", 413)]);
    assert_eq!(log[0]["remoteAddr"], "127.0.0.1");
    // The secret token never appears in the record.
    assert_eq!(log[1]["headers"]["x-telegram-bot-api-secret-token"], "<redacted>");
}

/// Filtered and transformed: a GitHub source whose destinations each take only some
/// pushes (`payloadFilter`) and get a body of their own (`transform`), e.g. a chat message
/// for pushes to main; the request record keeps the provider's body as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_filter_and_transform_what_they_are_sent() {
    let server = Server::start("").await;
    let (chat, all) = (Receiver::start().await, Receiver::start().await);
    let spec = json!({
        "name": "github to chat",
        "verification": { "type": "github", "secret": GH_SECRET },
        "destinations": [
            { "url": format!("{}/chat", chat.url),
              "payloadFilter": { "ref": "refs/heads/main" },
              "transform": { "text": "{{ pusher }} pushed {{ after }} to {{ ref }}", "delivery": "{{ delivery }}" } },
            { "url": format!("{}/all", all.url) },
        ],
    });
    let (source, created) = create_source(&server, spec).await;
    assert_eq!(created["destinations"][0]["payloadFilter"], json!({ "ref": "refs/heads/main" }), "{created}");
    assert!(created["destinations"][1].get("transform").is_none(), "{created}");
    for (id, git_ref) in [("d-main", "refs/heads/main"), ("d-topic", "refs/heads/topic")] {
        let (headers, body) = github_push(id, git_ref);
        let (status, out) = ingest(&server, &source, &headers, body.as_bytes()).await;
        assert_eq!(status, 200, "{out}");
    }
    let to_chat = chat.wait_for(1, WAIT).await;
    all.wait_for(2, WAIT).await;
    settle().await;
    assert_eq!(chat.received().len(), 1, "only the push to main reaches the chat");
    assert_eq!(
        to_chat[0].json(),
        json!({ "text": "octocat pushed 6113728f to refs/heads/main", "delivery": "d-main" })
    );
    let raw: Vec<Value> = all.received().iter().map(|r| r.json()).collect();
    assert!(raw.iter().any(|b| b["ref"] == "refs/heads/topic"), "{raw:?}");
    assert!(raw.iter().all(|b| b.get("text").is_none()), "the other destination gets the body as it came");

    // Sent back as answered, the source keeps its rules; `null` clears one.
    let mut dests = created["destinations"].clone();
    dests[0]["transform"] = Value::Null;
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": dests }))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["destinations"][0]["payloadFilter"], json!({ "ref": "refs/heads/main" }), "{out}");
    assert!(out["destinations"][0].get("transform").is_none(), "{out}");
    // A bad filter on a destination is refused with its place.
    let mut bad = out["destinations"].clone();
    bad[0]["payloadFilter"] = json!({ "ref": { "$startsWith": 7 } });
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": bad }))).await;
    assert_eq!((status, out["code"].as_str()), (422, Some("validation")), "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "destinations.payloadFilter.ref.$startsWith"]), "{out}");
    // On an event-type destination (which fans out to its application's own endpoints): refused.
    let with_filter = json!([{ "appId": "nope", "eventType": "x", "payloadFilter": {} }]);
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": with_filter }))).await;
    assert_eq!((status, out["code"].as_str()), (422, Some("validation")), "{out}");
    // Refused for its shape, before its application is looked up.
    assert_eq!(out["detail"][0]["loc"], json!(["body", "destinations"]), "{out}");
}

/// A push as GitHub signs and sends it.
fn github_push(id: &str, git_ref: &str) -> (Vec<(String, String)>, String) {
    let body = format!(r#"{{"ref": "{git_ref}", "after": "6113728f", "pusher": "octocat", "delivery": "{id}"}}"#);
    let sig = format!("sha256={}", hex(&hmac256(GH_SECRET.as_bytes(), &[body.as_bytes()])));
    let headers = h(&[
        ("X-GitHub-Delivery", id),
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", &sig),
        ("content-type", "application/json"),
    ]);
    (headers, body)
}

/// A destination's JavaScript transformation (what Hookdeck calls a transformation): the
/// code reshapes a GitHub push, adds a header from its variables and cancels pushes to
/// other branches; the answer can be sent back as it is; bad code is refused with its
/// place; `null` removes the transformation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_runs_its_javascript_transformation() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let code = "function handler(webhook) {
        if (webhook.payload.ref !== 'refs/heads/main') { webhook.cancel = true; return webhook; }
        webhook.payload = { text: webhook.payload.pusher + ' pushed to main', event: webhook.eventType };
        webhook.headers['x-chat-token'] = webhook.variables.token;
        return webhook;
    }";
    let spec = json!({
        "name": "github to chat",
        "verification": { "type": "github", "secret": GH_SECRET },
        "destinations": [{ "url": rx.url, "transformation": { "code": code, "variables": { "token": "t0k" } } }],
    });
    let (source, created) = create_source(&server, spec).await;
    let tr = &created["destinations"][0]["transformation"];
    assert_eq!(
        (tr["code"].as_str(), &tr["enabled"], &tr["variables"]),
        (Some(code), &json!(true), &json!({"token": "t0k"}))
    );
    assert!(tr["updatedAt"].is_string(), "{created}");

    for (id, git_ref) in [("d-topic", "refs/heads/topic"), ("d-main", "refs/heads/main")] {
        let (headers, body) = github_push(id, git_ref);
        let (status, out) = ingest(&server, &source, &headers, body.as_bytes()).await;
        assert_eq!(status, 200, "{out}");
    }
    let got = rx.wait_for(1, WAIT).await;
    settle().await;
    assert_eq!(rx.received().len(), 1, "the push to another branch is cancelled");
    assert_eq!(got[0].json(), json!({ "text": "octocat pushed to main", "event": "push" }));
    assert_eq!(got[0].header("x-chat-token"), "t0k");
    assert!(got[0].header("webhook-signature").starts_with("v1,"));
    // The cancelled one is on record as Svix's status 4, canceled (shown as such when asked,
    // as Svix's SDKs ask).
    let endpoint = created["destinations"][0]["id"].as_str().unwrap();
    let path = format!("/api/v1/app/{source}/attempt/endpoint/{endpoint}?expanded_statuses=true");
    let (_, attempts) = server.call("GET", &path, None).await;
    let mut statuses: Vec<u64> =
        attempts["data"].as_array().unwrap().iter().map(|a| a["status"].as_u64().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, vec![0, 4], "{attempts}");
    // In the message log the cancelled message is `canceled`, not among those that succeeded.
    let (_, log) = server.call("GET", &format!("/api/v1/stats/app/{source}/msg?status=canceled"), None).await;
    let canceled: Vec<&str> = log["data"].as_array().unwrap().iter().map(|m| m["eventId"].as_str().unwrap()).collect();
    assert_eq!(canceled, ["d-topic"], "{log}");
    assert_eq!(log["data"][0]["status"], "canceled");
    let (_, log) = server.call("GET", &format!("/api/v1/stats/app/{source}/msg?status=success"), None).await;
    let succeeded: Vec<&str> = log["data"].as_array().unwrap().iter().map(|m| m["eventId"].as_str().unwrap()).collect();
    assert_eq!(succeeded, ["d-main"], "{log}");

    // Sent back as answered, the transformation stays as it was.
    let (status, out) = server
        .call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": created["destinations"] })))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["destinations"][0]["transformation"], *tr, "{out}");
    // Code that does not compile is refused with its place, and changes nothing.
    let mut bad = out["destinations"].clone();
    bad[0]["transformation"] = json!({ "code": "function handler( {" });
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": bad }))).await;
    assert_eq!((status, out["code"].as_str()), (422, Some("validation")), "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "destinations.transformation.code"]), "{out}");
    let (_, kept) = server.call("GET", &format!("/api/v1/source/{source}"), None).await;
    assert_eq!(kept["destinations"][0]["transformation"], *tr, "{kept}");
    // So are variables that are not valid.
    let mut bad = kept["destinations"].clone();
    bad[0]["transformation"] = json!({ "variables": { "not a name": "x" } });
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": bad }))).await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "destinations.transformation.variables"]), "{out}");
    // An event-type destination has none of its own (refused by the shape of the
    // destination, before its application is looked up).
    let on_event = json!([{ "appId": "nope", "eventType": "x", "transformation": { "code": code } }]);
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": on_event }))).await;
    assert_eq!((status, out["code"].as_str()), (422, Some("validation")), "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "destinations"]), "{out}");

    // What is left out stays: a PUT of the destination without its transformation keeps
    // it, and `{"enabled": false}` switches it off and keeps its code and variables.
    let dest = json!({ "id": endpoint, "url": rx.url });
    let put = json!({ "name": "github to chat", "verification": { "type": "github", "secret": GH_SECRET },
                      "destinations": [dest] });
    let (status, out) = server.call("PUT", &format!("/api/v1/source/{source}"), Some(put)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["destinations"][0]["transformation"], *tr, "{out}");
    let off = json!([{ "id": endpoint, "url": rx.url, "transformation": { "enabled": false } }]);
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": off }))).await;
    assert_eq!(status, 200, "{out}");
    let now_off = &out["destinations"][0]["transformation"];
    assert_eq!(
        (now_off["code"].as_str(), &now_off["enabled"], &now_off["variables"]),
        (Some(code), &json!(false), &tr["variables"])
    );
    // A new destination's transformation needs its code.
    let no_code = json!([{ "url": rx.url, "transformation": { "enabled": true } }]);
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": no_code }))).await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "destinations.transformation.code"]), "{out}");

    // Switched off, the next push goes as it came; so with the transformation removed (`null`).
    let (headers, body) = github_push("d-main-off", "refs/heads/main");
    let (status, out) = ingest(&server, &source, &headers, body.as_bytes()).await;
    assert_eq!(status, 200, "{out}");
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got[1].body, body.as_bytes());
    let mut cleared = kept["destinations"].clone();
    cleared[0]["transformation"] = Value::Null;
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": cleared }))).await;
    assert_eq!(status, 200, "{out}");
    assert!(out["destinations"][0].get("transformation").is_none(), "{out}");
    let (headers, body) = github_push("d-main-2", "refs/heads/main");
    let (status, out) = ingest(&server, &source, &headers, body.as_bytes()).await;
    assert_eq!(status, 200, "{out}");
    let got = rx.wait_for(3, WAIT).await;
    assert_eq!(got[2].body, body.as_bytes());
}

/// A destination's `rateLimit` is its endpoint's: shown, kept when left out, checked with
/// its place, cleared by `null`. So is its `filterTypes`, which forwards only the provider's
/// events of those types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_has_a_rate_limit() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let spec = json!({
        "name": "limited",
        "verification": { "type": "none" },
        "destinations": [{ "url": rx.url, "rateLimit": 5 }],
    });
    let (source, created) = create_source(&server, spec).await;
    assert_eq!(created["destinations"][0]["rateLimit"], 5, "{created}");
    let id = created["destinations"][0]["id"].as_str().unwrap().to_string();
    let endpoint_limit = || async {
        let (status, ep) = server.call("GET", &format!("/api/v1/app/{source}/endpoint/{id}"), None).await;
        assert_eq!(status, 200, "{ep}");
        ep["rateLimit"].clone()
    };
    assert_eq!(endpoint_limit().await, 5);
    let path = format!("/api/v1/source/{source}");
    let patch = |dest: Value| server.call("PATCH", &path, Some(json!({ "destinations": [dest] })));
    let (status, out) = patch(json!({ "id": id, "url": rx.url })).await;
    assert_eq!((status, &out["destinations"][0]["rateLimit"]), (200, &json!(5)), "{out}");
    let (status, out) = patch(json!({ "id": id, "url": rx.url, "rateLimit": 0 })).await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "destinations.rateLimit"]), "{out}");
    let (status, out) = patch(json!({ "id": id, "url": rx.url, "rateLimit": null })).await;
    assert_eq!(status, 200, "{out}");
    assert!(out["destinations"][0].get("rateLimit").is_none(), "{out}");
    assert_eq!(endpoint_limit().await, Value::Null);
    let (status, out) = ingest(&server, &source, &[], br#"{"n": 1}"#).await;
    assert_eq!(status, 200, "{out}");
    rx.wait_for(1, WAIT).await;

    // Only pushes: a GitHub source whose destination takes `push` and not `issues`.
    let spec = json!({
        "name": "pushes only",
        "verification": { "type": "github", "secret": GH_SECRET },
        "destinations": [{ "url": format!("{}/pushes", rx.url), "filterTypes": ["push"] }],
    });
    let (github, created) = create_source(&server, spec).await;
    assert_eq!(created["destinations"][0]["filterTypes"], json!(["push"]), "{created}");
    let (headers, body) = github_push("p-1", "refs/heads/main");
    let issue: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.clone(), if k == "X-GitHub-Event" { "issues".to_string() } else { v.replace("p-1", "i-1") }))
        .collect();
    for h in [&issue, &headers] {
        let (status, out) = ingest(&server, &github, h, body.as_bytes()).await;
        assert_eq!(status, 200, "{out}");
    }
    let got = rx.wait_for(2, WAIT).await;
    settle().await;
    let to_pushes: Vec<_> = rx.received().into_iter().filter(|r| r.path == "/pushes").collect();
    assert_eq!(to_pushes.len(), 1, "only the push: {got:?}");
    assert_eq!(to_pushes[0].header("x-github-event"), "push");
    let id = &created["destinations"][0]["id"];
    let path = format!("/api/v1/source/{github}");
    let kept = json!({ "destinations": [{ "id": id, "url": format!("{}/pushes", rx.url) }] });
    let (status, out) = server.call("PATCH", &path, Some(kept)).await;
    assert_eq!((status, &out["destinations"][0]["filterTypes"]), (200, &json!(["push"])), "kept: {out}");
    let cleared = json!({ "destinations": [{ "id": id, "url": format!("{}/pushes", rx.url), "filterTypes": null }] });
    let (status, out) = server.call("PATCH", &path, Some(cleared)).await;
    assert_eq!(status, 200, "{out}");
    assert!(out["destinations"][0].get("filterTypes").is_none(), "cleared: {out}");
    let bad = json!({ "destinations": [{ "id": id, "url": rx.url, "filterTypes": ["not a name"] }] });
    let (status, out) = server.call("PATCH", &format!("/api/v1/source/{github}"), Some(bad)).await;
    assert_eq!(status, 422, "{out}");
    assert_eq!(out["detail"][0]["loc"], json!(["body", "destinations.filterTypes"]), "{out}");
}

/// A provider's gzip-compressed request: its signature (over the body, as providers sign
/// before their HTTP client compresses) is checked against the decoded body, and the
/// decoded body is what is recorded and forwarded. The source's size limit holds for the
/// decoded bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_are_decoded_before_verification() {
    use std::io::Write;
    let gzip = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let mut spec = Provider::Github.spec(&rx.url);
    spec["maxBodyBytes"] = json!(4096);
    let (source, _) = create_source(&server, spec).await;
    let (mut headers, body, _) = Provider::Github.request("gz-1", now(), true);
    headers.push(("content-encoding".into(), "gzip".into()));
    let (status, out) = ingest(&server, &source, &headers, &gzip(&body)).await;
    assert_eq!(status, 200, "{out}");
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].body, body, "the decoded body is forwarded");
    assert!(!got[0].headers.contains_key("content-encoding"), "{:?}", got[0].headers);

    // Over the source's limit once decoded (however small compressed): 413, recorded.
    let big = format!(r#"{{"zen":"{}"}}"#, "z".repeat(50_000));
    let sig = format!("sha256={}", hex(&hmac256(GH_SECRET.as_bytes(), &[big.as_bytes()])));
    let big_headers = h(&[
        ("X-GitHub-Delivery", "gz-2"),
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", &sig),
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ]);
    let (status, out) = ingest(&server, &source, &big_headers, &gzip(big.as_bytes())).await;
    assert_eq!((status, out["code"].as_str()), (413, Some("payload_too_large")), "{out}");
    // A coding hooklane does not decode: refused before anything is read.
    let mut br = headers.clone();
    br.retain(|(k, _)| k != "content-encoding");
    br.push(("content-encoding".into(), "br".into()));
    let (status, out) = ingest(&server, &source, &br, &body).await;
    assert_eq!((status, out["code"].as_str()), (415, Some("unsupported_content_encoding")), "{out}");
    settle().await;
    assert_eq!(rx.received().len(), 1);
    let log = requests(&server, &source).await;
    let got: Vec<(&str, u64)> =
        log.iter().rev().map(|r| (r["status"].as_str().unwrap(), r["httpStatus"].as_u64().unwrap())).collect();
    assert_eq!(got, vec![("accepted", 200), ("rejected", 413)]);
}

/// A failing destination is retried like an outbound endpoint, and the attempts are in the
/// source's application's attempt log. The provider got its 200 before forwarding finished:
/// while the destination still holds the first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_destination_is_retried() {
    // (A request timeout past WAIT: the held request is not ended by hooklane meanwhile.)
    let server = Server::start("[delivery]\nrequest_timeout = \"30s\"\nlease = \"60s\"").await;
    let first = Gate::new();
    let rx = Receiver::scripted({
        let first = first.clone();
        move |n, _| match n {
            0 => Reply::Held(first.clone(), 503),
            1 => Reply::Status(503),
            _ => Reply::Status(200),
        }
    })
    .await;
    let (source, _) = create_source(&server, Provider::Github.spec(&rx.url)).await;
    let (headers, body, _) = Provider::Github.request("retry-1", now(), true);
    let answered = tokio::time::timeout(WAIT, ingest(&server, &source, &headers, &body)).await;
    let (status, out) = answered.expect("the provider's answer waited for the forwarding");
    assert_eq!(status, 200, "{out}");
    // (Answered while forwarding could not have finished: its first request is held until
    // the gate opens.)
    rx.wait_for(1, WAIT).await;
    first.open();
    let msg_id = out["msgId"].as_str().unwrap().to_string();
    let got = rx.wait_for(3, WAIT).await;
    assert!(got.iter().all(|r| r.header("webhook-id") == msg_id && r.body == body));
    let attempts = server
        .wait_until(&format!("/api/v1/app/{source}/attempt/msg/{msg_id}"), WAIT, |b| {
            b["data"].as_array().is_some_and(|a| a.len() == 3)
        })
        .await;
    let codes: Vec<u64> =
        attempts["data"].as_array().unwrap().iter().map(|a| a["responseStatusCode"].as_u64().unwrap()).collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(sorted, vec![200, 503, 503], "{attempts}");
}

/// A flood of forged requests is refused one by one, but only a budget of them is written
/// to the request log (it would otherwise fill the disk), each with a few kilobytes of the
/// request however large it was; genuine requests are still accepted and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_requests_is_refused_without_filling_the_log() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, _) = create_source(&server, Provider::Github.spec(&rx.url)).await;
    // A forged post with 200 KB of body and 20 KB of headers: its record keeps 2 KiB of the
    // body (with its full size) and 4 KiB of the headers.
    let (mut headers, _, _) = Provider::Github.request("forged-large", now(), false);
    for n in 0..20 {
        headers.push((format!("x-pad-{n:02}"), "p".repeat(1000)));
    }
    let large = vec![b'j'; 200_000];
    let (status, out) = ingest(&server, &source, &headers, &large).await;
    assert_eq!(status, 401, "{out}");
    let record = requests(&server, &source).await.remove(0);
    assert_eq!((record["bodySize"].as_u64(), record["bodyTruncated"].as_bool()), (Some(200_000), Some(true)));
    assert_eq!(record["body"].as_str().map(str::len), Some(2048), "{record}");
    let kept = record["headers"].as_object().expect("headers");
    let bytes: usize = kept.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
    assert!(bytes <= 4096 && kept.contains_key("x-hub-signature-256"), "{bytes} bytes: {kept:?}");
    let started = std::time::Instant::now();
    for i in 1..100 {
        let (headers, body, _) = Provider::Github.request(&format!("forged-{i}"), now(), false);
        let (status, out) = ingest(&server, &source, &headers, &body).await;
        assert_eq!(status, 401, "{out}");
    }
    let seconds = started.elapsed().as_secs();
    let recorded = requests(&server, &source).await.len() as u64;
    // 60 at once, then ten a minute.
    assert!(recorded >= 60 && recorded <= 61 + seconds / 6, "{recorded} refusals recorded in {seconds} s");
    let (headers, body, _) = Provider::Github.request("genuine", now(), true);
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 200, "{out}");
    let log = requests(&server, &source).await;
    assert_eq!(log[0]["status"], "accepted", "{}", log[0]);
    let metrics = server.metrics().await;
    let unrecorded = metric_value(&metrics, "hooklane_inbound_rejections_unrecorded_total");
    assert_eq!(unrecorded, Some((100 - recorded) as f64), "{metrics}");
    // Every request is counted by its outcome, recorded or not, under the source's
    // application id (its own id, the secret part of its URL, is not shown).
    let (_, got) = server.call("GET", &format!("/api/v1/source/{source}"), None).await;
    let app = got["appId"].as_str().unwrap().to_string();
    assert!(!metrics.contains(&source), "{metrics}");
    let counted = |status: &str| {
        let prefix = format!("hooklane_inbound_requests_total{{app_id=\"{app}\",status=\"{status}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse::<f64>().ok())
    };
    assert_eq!(
        (counted("rejected"), counted("accepted"), counted("duplicate")),
        (Some(100.0), Some(1.0), None),
        "{metrics}"
    );
}

/// A message posted through the API into a source's application cannot take an event id:
/// those are the provider's delivery ids, and one planted ahead of the provider's delivery
/// would have the real event dropped as its duplicate and the planted one fanned out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_event_ids_are_its_providers_alone() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, _) = create_source(&server, Provider::Github.spec(&rx.url)).await;
    let (headers, body, _) = Provider::Github.request("delivery-7", now(), true);
    let planted = json!({ "eventType": "push", "eventId": "delivery-7", "payload": { "planted": true } });
    let (status, out) = server.call("POST", &format!("/api/v1/app/{source}/msg"), Some(planted)).await;
    assert_eq!((status, &out["detail"][0]["loc"]), (422, &json!(["body", "eventId"])), "{out}");
    let (status, out) = server
        .call("POST", &format!("/api/v1/app/{source}/msg"), Some(json!({ "eventType": "push", "payload": {} })))
        .await;
    assert_eq!(status, 202, "without an event id, as any message: {out}");
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
}

/// A genuine request replayed in a loop (GitHub's signature has no timestamp: it stays
/// valid) is answered as a duplicate each time and forwarded once, but recorded only within
/// the source's budget of duplicates: the log does not fill with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_request_does_not_fill_the_log() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, _) = create_source(&server, Provider::Github.spec(&rx.url)).await;
    let (headers, body, _) = Provider::Github.request("replayed", now(), true);
    let started = std::time::Instant::now();
    for i in 0..101 {
        let (status, out) = ingest(&server, &source, &headers, &body).await;
        assert_eq!((status, out["status"].as_str()), (200, Some(if i == 0 { "accepted" } else { "duplicate" })));
    }
    let seconds = started.elapsed().as_secs();
    let log = requests(&server, &source).await;
    let duplicates = log.iter().filter(|r| r["status"] == "duplicate").count() as u64;
    assert_eq!(log.iter().filter(|r| r["status"] == "accepted").count(), 1);
    // 60 at once, then ten a minute.
    assert!(duplicates >= 60 && duplicates <= 61 + seconds / 6, "{duplicates} duplicates recorded in {seconds} s");
    let metrics = server.metrics().await;
    let unrecorded = metric_value(&metrics, "hooklane_inbound_duplicates_unrecorded_total");
    assert_eq!(unrecorded, Some((100 - duplicates) as f64), "{metrics}");
    rx.wait_for(1, WAIT).await;
    settle().await;
    assert_eq!(rx.received().len(), 1, "forwarded once");
}

/// A provider's URL check repeated in a loop (Meta's needs only the verify token, which
/// sits in the URL and so in proxies' logs) is answered each time, but recorded only within
/// the source's budget of checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_url_checks_does_not_fill_the_log() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (meta, _) = create_source(&server, Provider::Meta.spec(&rx.url)).await;
    let query = format!("hub.mode=subscribe&hub.challenge=42&hub.verify_token={META_TOKEN}");
    let started = std::time::Instant::now();
    for _ in 0..100 {
        let resp = server.client.get(server.url(&format!("/in/{meta}?{query}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "42", "answered every time");
    }
    let seconds = started.elapsed().as_secs();
    let recorded = requests(&server, &meta).await.len() as u64;
    // 60 at once, then ten a minute.
    assert!(recorded >= 60 && recorded <= 61 + seconds / 6, "{recorded} checks recorded in {seconds} s");
    let metrics = server.metrics().await;
    let unrecorded = metric_value(&metrics, "hooklane_inbound_url_checks_unrecorded_total");
    assert_eq!(unrecorded, Some((100 - recorded) as f64), "{metrics}");
}

/// A destination whose circuit opened gets its paused deliveries at once when the source
/// is updated with its new URL, not after the cool-down (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_a_destination_sends_its_paused_deliveries_at_once() {
    let server = Server::start(
        "[delivery]\ncircuit_failures = 3\ncircuit_cooldown = \"1h\"\ncircuit_max_cooldown = \"1h\"\n\
         retry_schedule = [\"1h\"]\nper_endpoint_in_flight = 1\n",
    )
    .await;
    let broken = Receiver::scripted(|_, _| Reply::Status(503)).await;
    let (source, created) = create_source(&server, Provider::Github.spec(&broken.url)).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let (headers, body, _) = Provider::Github.request(&format!("paused-{i}"), now(), true);
        let (status, out) = ingest(&server, &source, &headers, &body).await;
        assert_eq!(status, 200, "{out}");
        ids.push(out["msgId"].as_str().unwrap().to_string());
    }
    broken.wait_for(3, WAIT).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !server.logs().contains("circuit open") {
        assert!(std::time::Instant::now() < deadline, "the circuit never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fixed = Receiver::start().await;
    let mut dest = created["destinations"][0].clone();
    dest["url"] = json!(fixed.url);
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": [dest] }))).await;
    assert_eq!(status, 200, "{out}");
    let (got, _) = fixed.wait_for_ids(&ids, Duration::from_secs(20)).await;
    assert!(got >= ids.len());
}

/// An event-type destination posts the JSON body into another application, fanning out to
/// its endpoints; a redelivery does not fan out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_type_destination_fans_out() {
    let server = Server::start("").await;
    let (internal, customer) = (Receiver::start().await, Receiver::start().await);
    let app = server.create_app("customers").await;
    let (_, customer_secret) =
        server.create_endpoint(&app, json!({ "url": customer.url, "filterTypes": ["github.push"] })).await;
    let mut spec = Provider::Github.spec(&internal.url);
    spec["destinations"].as_array_mut().unwrap().push(json!({ "appId": app, "eventType": "github.push" }));
    let (source, created) = create_source(&server, spec).await;
    assert_eq!(created["destinations"][1], json!({ "type": "eventType", "appId": app, "eventType": "github.push" }));

    let (headers, body, _) = Provider::Github.request("fan-1", now(), true);
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 200, "{out}");
    internal.wait_for(1, WAIT).await;
    let got = customer.wait_for(1, WAIT).await;
    assert_eq!(got[0].body, body);
    assert!(signature_valid(&customer_secret, &got[0]));
    let (status, _) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 200);
    settle().await;
    assert_eq!((internal.received().len(), customer.received().len()), (1, 1));
    let (_, msgs) = server.call("GET", &format!("/api/v1/app/{app}/msg"), None).await;
    assert_eq!(msgs["data"].as_array().unwrap().len(), 1, "{msgs}");
    assert_eq!(msgs["data"][0]["eventType"], "github.push");

    // A body that is not a JSON object cannot go to an event type: a clear 400, recorded.
    let raw = b"not json".to_vec();
    let sig = format!("sha256={}", hex(&hmac256(GH_SECRET.as_bytes(), &[&raw])));
    let (status, out) = ingest(&server, &source, &h(&[("X-Hub-Signature-256", &sig)]), &raw).await;
    assert_eq!(status, 400, "{out}");
    // Nor one nested deeper than a message payload may be (the API's limit, 100).
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(110), "]".repeat(110)).into_bytes();
    let sig = format!("sha256={}", hex(&hmac256(GH_SECRET.as_bytes(), &[&deep])));
    let (status, out) = ingest(&server, &source, &h(&[("X-Hub-Signature-256", &sig)]), &deep).await;
    assert_eq!(status, 400, "{out}");
    let (_, msgs) = server.call("GET", &format!("/api/v1/app/{app}/msg"), None).await;
    assert_eq!(msgs["data"].as_array().unwrap().len(), 1, "nothing more reached the application: {msgs}");
}

/// A duplicate completes only a fan-out that may be unfinished: a request forwarded whole
/// and replayed later (Meta's signature, its key, carries no timestamp) is acknowledged as a
/// duplicate but not posted to an event-type destination added since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_not_fanned_out_to_destinations_added_since() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, created) = create_source(&server, Provider::Meta.spec(&rx.url)).await;
    let (headers, body, _) = Provider::Meta.request("replayed", now(), true);
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    rx.wait_for(1, WAIT).await;

    let target = server.create_app("added later").await;
    let destinations = json!([created["destinations"][0], { "appId": target, "eventType": "meta.message" }]);
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": destinations }))).await;
    assert_eq!(status, 200, "{out}");
    // A new request reaches it…
    let (fresh, fresh_body, _) = Provider::Meta.request("fresh", now(), true);
    let (status, out) = ingest(&server, &source, &fresh, &fresh_body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    // …the old one replayed does not.
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("duplicate")), "{out}");
    rx.wait_for(2, WAIT).await;
    settle().await;
    let (_, messages) = server.call("GET", &format!("/api/v1/app/{target}/msg"), None).await;
    let payloads: Vec<&Value> = messages["data"].as_array().expect("messages").iter().map(|m| &m["payload"]).collect();
    let fresh_body: Value = serde_json::from_slice(&fresh_body).expect("JSON");
    assert_eq!(payloads, vec![&fresh_body], "{messages}");
    assert_eq!(rx.received().len(), 2, "the URL destination got each once");
}

/// The same once the replayed request's record was deleted for its age (a
/// `request_retention` shorter than the day fan-outs are completed for): a request with no
/// record is taken as one whose fan-out may be unfinished only while its record would be
/// kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_record_was_deleted_is_not_fanned_out() {
    let server = Server::start("housekeeping_interval = \"100ms\"\n[inbound]\nrequest_retention = \"1s\"\n").await;
    let rx = Receiver::start().await;
    let (source, created) = create_source(&server, Provider::Meta.spec(&rx.url)).await;
    let (headers, body, _) = Provider::Meta.request("replayed", now(), true);
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("accepted")), "{out}");
    rx.wait_for(1, WAIT).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !requests(&server, &source).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the record was never deleted:\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let target = server.create_app("added later").await;
    let destinations = json!([created["destinations"][0], { "appId": target, "eventType": "meta.message" }]);
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/source/{source}"), Some(json!({ "destinations": destinations }))).await;
    assert_eq!(status, 200, "{out}");
    let (status, out) = ingest(&server, &source, &headers, &body).await;
    assert_eq!((status, out["status"].as_str()), (200, Some("duplicate")), "{out}");
    settle().await;
    let (_, messages) = server.call("GET", &format!("/api/v1/app/{target}/msg"), None).await;
    assert_eq!(messages["data"], json!([]), "{messages}");
}

/// The management API: secrets stay write-only, the source's application is hidden from
/// the application list and protected, bad input is refused, deleting a source ends its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_api_and_secrets() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let (source, created) = create_source(&server, Provider::Github.spec(&rx.url)).await;
    let app_id = created["appId"].as_str().unwrap().to_string();
    assert_eq!(created["verification"], json!({ "type": "github" }));
    assert_eq!(created["deduplication"], json!({ "type": "header", "header": "x-github-delivery" }));
    let (_, got) = server.call("GET", &format!("/api/v1/source/{source}"), None).await;
    assert!(!got.to_string().contains(GH_SECRET), "{got}");
    let (_, list) = server.call("GET", "/api/v1/source", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(GH_SECRET));

    // Hidden from the application list, reachable by the source id, protected.
    let (_, apps) = server.call("GET", "/api/v1/app", None).await;
    assert!(apps["data"].as_array().unwrap().is_empty(), "{apps}");
    let (status, app) = server.call("GET", &format!("/api/v1/app/{source}"), None).await;
    assert_eq!((status, app["id"].as_str()), (200, Some(app_id.as_str())));
    let (status, _) = server.call("DELETE", &format!("/api/v1/app/{source}"), None).await;
    assert_eq!(status, 409);
    let (status, _) = server.call("POST", "/api/v1/app", Some(json!({ "name": "x", "uid": source }))).await;
    assert_eq!(status, 422, "a uid that looks like a source id");

    // Bad configurations.
    for bad in [
        json!({ "name": "x", "verification": { "type": "nope" } }),
        json!({ "name": "x", "verification": { "type": "github", "secret": "" } }),
        json!({ "name": "x", "verification": { "type": "none" }, "allowNetworks": ["not a net"] }),
        json!({ "name": "x", "verification": { "type": "none" }, "destinations": [{ "url": "ftp://x" }] }),
        json!({ "name": "x", "verification": { "type": "none" }, "destinations": [{ "appId": "app_missing", "eventType": "a" }] }),
        json!({ "name": "x", "verification": { "type": "none" }, "maxBodyBytes": 0 }),
    ] {
        let (status, out) = server.call("POST", "/api/v1/source", Some(bad.clone())).await;
        assert!(status == 422 || status == 400, "{bad} → {status} {out}");
    }
    // Application tokens may not manage sources.
    let (_, token) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{app_id}"), Some(json!({}))).await;
    let (status, _) = server.call_as(token["token"].as_str().unwrap(), "GET", "/api/v1/source", None).await;
    assert_eq!(status, 403);

    // Replacing destinations: the kept one keeps its id and secret, a new one is added.
    let kept = created["destinations"][0].clone();
    let (status, updated) = server
        .call(
            "PATCH",
            &format!("/api/v1/source/{source}"),
            Some(json!({ "destinations": [kept, { "url": format!("{}/second", rx.url) }] })),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["destinations"][0]["id"], created["destinations"][0]["id"]);
    assert_eq!(updated["destinations"][0]["secret"], created["destinations"][0]["secret"]);
    assert_eq!(updated["destinations"][1]["url"], json!(format!("{}/second", rx.url)));

    // Unknown sources, non-UTF-8 bodies, wrong methods.
    let (status, _) = ingest(&server, "src_01JAAAAAAAAAAAAAAAAAAAAAAA", &[], b"{}").await;
    assert_eq!(status, 404);
    let raw = vec![0xff, 0xfe, 0x00];
    let sig = format!("sha256={}", hex(&hmac256(GH_SECRET.as_bytes(), &[&raw])));
    let (status, out) = ingest(&server, &source, &h(&[("X-Hub-Signature-256", &sig)]), &raw).await;
    assert_eq!(status, 400, "{out}");
    let resp = server.client.get(server.url(&format!("/in/{source}"))).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    let (_, log) = server.call("GET", &format!("/api/v1/source/{source}/request?status=rejected"), None).await;
    assert_eq!(log["data"][0]["bodyBase64"], json!(B64.encode(&raw)));
    let req_id = log["data"][0]["id"].as_str().unwrap();
    let (status, one) = server.call("GET", &format!("/api/v1/source/{source}/request/{req_id}"), None).await;
    assert_eq!((status, &one["status"]), (200, &json!("rejected")));

    // No secret in the log, whatever happened.
    let logs = server.logs();
    assert!(!logs.contains(GH_SECRET), "the verification secret leaked into the log");

    // Deleting the source ends its URL and its application.
    let (status, _) = server.call("DELETE", &format!("/api/v1/source/{source}"), None).await;
    assert_eq!(status, 204);
    let (headers, body, _) = Provider::Github.request("after-delete", now(), true);
    let (status, _) = ingest(&server, &source, &headers, &body).await;
    assert_eq!(status, 404);
    let (status, _) = server.call("GET", &format!("/api/v1/app/{app_id}"), None).await;
    assert_eq!(status, 404);
}

/// Request records older than `[inbound] request_retention` are deleted by housekeeping;
/// newer ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_request_records_are_deleted() {
    let server = Server::start("housekeeping_interval = \"100ms\"\n[inbound]\nrequest_retention = \"1s\"\n").await;
    let rx = Receiver::start().await;
    let (source, _) = create_source(&server, Provider::BasicAuth.spec(&rx.url)).await;
    let (status, _) = ingest(&server, &source, &[], b"{}").await;
    assert_eq!(status, 401);
    assert_eq!(requests(&server, &source).await.len(), 1, "the refused request is recorded");

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !requests(&server, &source).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the record was never deleted:\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.logs().contains("housekeeping deleted expired records"), "{}", server.logs());
    // A fresh record is younger than the retention: it is kept.
    ingest(&server, &source, &[], b"{}").await;
    assert_eq!(requests(&server, &source).await.len(), 1);
}

/// A destination with `"ordering": "fifo"` is forwarded the provider's requests one at a
/// time, in the order they came in, per ordering key (the source's `orderingKey` template,
/// here the repository), a failing one holding back only its repository's; the settings are
/// kept when sent back as answered, and `ordering` is refused on an event-type destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_destination_is_forwarded_requests_in_order_per_key() {
    const COUNT: i64 = 8;
    let server = Server::start("").await;
    let lane = lane_receiver().await;
    let spec = json!({
        "name": "github in order",
        "verification": { "type": "github", "secret": GH_SECRET },
        "orderingKey": "{{ repository.full_name }}",
        "destinations": [{ "url": lane.url, "ordering": "fifo" }],
    });
    let (source, created) = create_source(&server, spec).await;
    assert_eq!(created["destinations"][0]["ordering"], "fifo", "{created}");
    assert_eq!(created["orderingKey"], "{{ repository.full_name }}", "{created}");
    for n in 0..COUNT {
        let repo = if n % 2 == 0 { "octo/even" } else { "octo/odd" };
        let body = format!(r#"{{"n": {n}, "repository": {{"full_name": "{repo}"}}}}"#);
        let sig = format!("sha256={}", hex(&hmac256(GH_SECRET.as_bytes(), &[body.as_bytes()])));
        let id = format!("delivery-{n}");
        let headers = h(&[
            ("X-GitHub-Delivery", &id),
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &sig),
            ("content-type", "application/json"),
        ]);
        let (status, out) = ingest(&server, &source, &headers, body.as_bytes()).await;
        assert_eq!(status, 200, "{out}");
    }
    lane.wait_for(COUNT as usize + 2, WAIT).await;
    settle().await;
    let (order, _) = lane_log(&lane.received());
    assert_eq!(order.len(), COUNT as usize + 2, "{order:?}");
    for parity in [0, 1] {
        let mut within: Vec<i64> = order.iter().copied().filter(|n| n % 2 == parity).collect();
        within.dedup();
        assert_eq!(within, (0..COUNT).filter(|n| n % 2 == parity).collect::<Vec<_>>(), "per key: {order:?}");
    }
    let last_of_two = order.iter().rposition(|n| *n == 2).unwrap();
    assert!(order[..last_of_two].contains(&(COUNT - 1)), "the other repository waited: {order:?}");
    let (_, msgs) = server.call("GET", &format!("/api/v1/app/{source}/msg"), None).await;
    assert!(msgs["data"].as_array().unwrap().iter().any(|m| m["orderingKey"] == "octo/odd"), "{msgs}");

    let dests = created["destinations"].clone();
    let path = format!("/api/v1/source/{source}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "destinations": dests }))).await;
    assert_eq!((status, &out["destinations"][0]["ordering"]), (200, &json!("fifo")), "{out}");
    let on_event = json!([{ "appId": "nope", "eventType": "x", "ordering": "fifo" }]);
    let (status, out) = server.call("PATCH", &path, Some(json!({ "destinations": on_event }))).await;
    assert_eq!((status, out["code"].as_str()), (422, Some("validation")), "{out}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "orderingKey": "{{ a..b }}" }))).await;
    assert_eq!((status, &out["detail"][0]["loc"]), (422, &json!(["body", "orderingKey"])), "{out}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "orderingKey": null }))).await;
    assert!(status == 200 && out.get("orderingKey").is_none(), "{out}");
}

/// A source's own answer to what it accepts (Twilio's empty TwiML here), for accepted and
/// duplicate requests alike, recorded as answered; refusals and providers' handshakes are
/// answered as always; checked when set, and removed with `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_answers_as_it_is_told() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let twiml = json!({ "body": "<Response/>", "contentType": "text/xml" });
    let (source, created) = create_source(
        &server,
        json!({
            "name": "sms",
            "verification": { "type": "basicAuth", "username": "hooks", "password": BASIC_PASSWORD },
            "deduplication": { "type": "header", "header": "X-Request-Id" },
            "response": twiml,
            "destinations": [{ "url": format!("{}/sms", rx.url) }],
        }),
    )
    .await;
    assert_eq!(created["response"], json!({ "status": 200, "body": "<Response/>", "contentType": "text/xml" }));
    let url = server.url(&format!("/in/{source}"));
    let post = |id: &'static str, password: &'static str| {
        server
            .client
            .post(&url)
            .basic_auth("hooks", Some(password))
            .header("x-request-id", id)
            .body("From=%2B15551234567")
    };
    for id in ["r-1", "r-1"] {
        let resp = post(id, BASIC_PASSWORD).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/xml");
        // Served from the dashboard's origin: never run as its page, whatever its type.
        assert_eq!(resp.headers()["content-security-policy"], "default-src 'none'; sandbox");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(resp.text().await.unwrap(), "<Response/>");
    }
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].body, b"From=%2B15551234567");
    // A refusal is hooklane's JSON error.
    let refused = post("r-2", "wrong").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(read(refused).await.1["code"], "verification_failed");
    let log = requests(&server, &source).await;
    let statuses: Vec<(&str, i64)> =
        log.iter().rev().map(|r| (r["status"].as_str().unwrap(), r["httpStatus"].as_i64().unwrap())).collect();
    assert_eq!(statuses, [("accepted", 200), ("duplicate", 200), ("rejected", 401)]);

    // Another status, without a body: no content type either; recorded as answered.
    let path = format!("/api/v1/source/{source}");
    let (status, body) = server.call("PATCH", &path, Some(json!({ "response": { "status": 204 } }))).await;
    assert_eq!(status, 200, "{body}");
    let resp = post("r-3", BASIC_PASSWORD).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.headers().get("content-type").is_none(), "{:?}", resp.headers());
    assert_eq!(requests(&server, &source).await[0]["httpStatus"], 204);
    // `null`: hooklane's own answer again.
    let (status, body) = server.call("PATCH", &path, Some(json!({ "response": null }))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("response").is_none(), "{body}");
    let (status, answer) = read(post("r-4", BASIC_PASSWORD).send().await.unwrap()).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");

    // Checked where it is set.
    for (bad, field) in [
        (json!({ "status": 302 }), "response.status"),
        (json!({ "status": 500 }), "response.status"),
        (json!({ "body": "x".repeat(4097) }), "response.body"),
        (json!({ "body": "x", "contentType": "xml" }), "response.contentType"),
        (json!({ "body": "x", "contentType": "text/xml\r\nX-Evil: 1" }), "response.contentType"),
        (json!({ "status": 204, "body": "x" }), "response.body"),
        (json!({ "status": 205, "contentType": "text/xml" }), "response.body"),
    ] {
        let (status, body) = server.call("PATCH", &path, Some(json!({ "response": bad }))).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["body", field]), "{body}");
    }
    let (status, body) = server.call("PATCH", &path, Some(json!({ "response": { "stauts": 200 } }))).await;
    assert_eq!(status, 422, "an unknown field is refused: {body}");
    // Discord is answered as Discord requires: no answer of the source's own.
    let discord = json!({
        "name": "discord", "response": { "body": "x" },
        "verification": { "type": "discord", "publicKey": "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664" },
    });
    let (status, body) = server.call("POST", "/api/v1/source", Some(discord)).await;
    assert_eq!((status, &body["detail"][0]["loc"]), (422, &json!(["body", "response"])), "{body}");

    // A provider's handshake is answered as the provider needs, whatever the source says.
    let (meta, _) = create_source(
        &server,
        json!({
            "name": "meta",
            "verification": { "type": "meta", "appSecret": META_SECRET, "verifyToken": META_TOKEN },
            "response": { "body": "ignored here" },
        }),
    )
    .await;
    let check = format!("/in/{meta}?hub.mode=subscribe&hub.challenge=8812&hub.verify_token={META_TOKEN}");
    let resp = server.client.get(server.url(&check)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "8812");
}

/// Forged requests to a source's URL write no line per request (its refusals are logged,
/// within the source's budget, by the source itself), nor do requests to made-up source
/// URLs; the source's id, the secret part of its URL, is never written whole; and a server
/// error is logged once, at `warn`, not again at `error` by the HTTP layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_inbound_requests_and_server_errors_are_logged_once() {
    let server = Server::start("").await;
    let spec = json!({ "name": "gh", "verification": { "type": "github", "secret": "It's a Secret to Everybody" } });
    let (source, _) = create_source(&server, spec).await;
    for n in 0..80 {
        let (status, _) =
            ingest(&server, &source, &h(&[("content-type", "application/json")]), format!("{{\"n\":{n}}}").as_bytes())
                .await;
        assert_eq!(status, 401);
        let (status, _) = ingest(&server, &format!("src_madeup{n:04}"), &[], b"{}").await;
        assert_eq!(status, 404);
    }
    // A server error: a delivery of this server's own sent back to its API (508).
    let rx = Receiver::start().await;
    let app = server.create_app("loop").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;
    server.send_message(&app, "a.b", json!({})).await;
    let marker = rx.wait_for(1, WAIT).await[0].header("hooklane-origin").to_string();
    let looped = server
        .client
        .post(server.url("/api/v1/app/"))
        .header("hooklane-origin", marker)
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .expect("send");
    assert_eq!(looped.status().as_u16(), 508);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = server.logs();
    assert!(!logs.contains(&source), "the source's id written whole: {logs}");
    let refused_in = logs.lines().filter(|l| l.contains("request refused") && l.contains("/in/")).count();
    assert_eq!(refused_in, 0, "a line per forged request: {logs}");
    assert!(!logs.contains("unknown source"), "a line per made-up source URL");
    // The source's own lines: within its budget of recorded refusals, not one per request.
    let recorded = logs.lines().filter(|l| l.contains("inbound request") && l.contains("rejected")).count();
    assert!((1..80).contains(&recorded), "{recorded} lines for 80 forged requests");
    assert_eq!(logs.matches("status=508").count(), 1, "{logs}");
    assert!(!logs.contains("response failed"), "a server error logged twice: {logs}");
}
