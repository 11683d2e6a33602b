//! Meta (WhatsApp Business, Messenger, Instagram): `X-Hub-Signature-256: sha256=<hex
//! HMAC-SHA256(app secret, body)>`, GitHub's scheme keyed with the app secret.
//!
//! When a webhook is set up, Meta first sends `GET ?hub.mode=subscribe&hub.verify_token=…
//! &hub.challenge=…` and expects the challenge back, as the whole body, when the token is
//! the one configured ([`subscription_challenge`]).

use super::hmac_body::github;
use super::{header, json_path, lower_hex_after, Headers, Rejection};

pub const SIGNATURE: &str = "x-hub-signature-256";

pub fn verify(app_secret: &str, headers: &Headers, body: &[u8]) -> Result<(), Rejection> {
    let value = header(headers, SIGNATURE).ok_or_else(|| Rejection::MissingHeader(SIGNATURE.into()))?;
    // Exactly as Meta writes it (`sha256=` and 64 lower-case hex digits, nothing between):
    // the header is the deduplication key.
    if !lower_hex_after(value, "sha256=", 64) {
        return Err(Rejection::Malformed(SIGNATURE.into()));
    }
    // Otherwise GitHub's scheme, keyed with the app secret.
    github(app_secret, headers, body)
}

/// The challenge to answer to Meta's check of a new webhook (the query of a `GET`), when
/// its token is `verify_token`.
pub fn subscription_challenge(verify_token: &str, query: &str) -> Result<String, Rejection> {
    let (mut mode, mut token, mut challenge) = (None, None, None);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "hub.mode" => mode = Some(v),
            "hub.verify_token" => token = Some(v),
            "hub.challenge" => challenge = Some(v),
            _ => {}
        }
    }
    if mode.as_deref() != Some("subscribe") {
        return Err(Rejection::Malformed("hub.mode (not subscribe)".into()));
    }
    let challenge = challenge.ok_or_else(|| Rejection::Malformed("hub.challenge (missing)".into()))?;
    let token = token.ok_or_else(|| Rejection::Malformed("hub.verify_token (missing)".into()))?;
    // Compared by digests: the token's length is not told by the time of the answer either.
    if super::token::same(token.as_bytes(), verify_token.as_bytes()) {
        Ok(challenge.into_owned())
    } else {
        Err(Rejection::BadCredentials)
    }
}

/// `whatsapp_business_account.messages`, `page.feed`…: the object and the field of its
/// first change; the object alone when there is none (Messenger's `messaging`).
pub fn event_type(json: &serde_json::Value) -> Option<String> {
    let object = json_path(json, "object")?;
    Some(match json_path(json, "entry.0.changes.0.field") {
        Some(field) => format!("{object}.{field}"),
        None => object,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const SECRET: &str = "meta-app-secret-0f9e";
    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"value":{"messaging_product":"whatsapp","messages":[{"id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","text":{"body":"hi"},"type":"text"}]},"field":"messages"}]}]}"#;
    // python3: hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    const SIG: &str = "66473fa93b7c17370285370dc9679abc28bbb327cfae2249dba52ad864dc5bbb";

    #[test]
    fn signed_with_the_app_secret() {
        let h = headers(&[("X-Hub-Signature-256", &format!("sha256={SIG}"))]);
        assert_eq!(verify(SECRET, &h, BODY), Ok(()));
        assert_eq!(verify("another-secret", &h, BODY), Err(Rejection::SignatureMismatch));
        // Written any other way, the same signature would be another deduplication key.
        for other in
            [format!("sha256={}", SIG.to_ascii_uppercase()), format!("sha256= {SIG}"), format!("sha256=\t{SIG}")]
        {
            let h = headers(&[("X-Hub-Signature-256", &other)]);
            assert!(matches!(verify(SECRET, &h, BODY), Err(Rejection::Malformed(_))), "{other:?}");
        }
        assert_eq!(verify(SECRET, &headers(&[]), BODY), Err(Rejection::MissingHeader(SIGNATURE.into())));
        let json: serde_json::Value = serde_json::from_slice(BODY).unwrap();
        assert_eq!(event_type(&json), Some("whatsapp_business_account.messages".into()));
        assert_eq!(
            event_type(&serde_json::json!({ "object": "page", "entry": [{ "messaging": [] }] })),
            Some("page".into())
        );
    }

    #[test]
    fn the_subscription_check_needs_the_token() {
        let q = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock";
        assert_eq!(subscription_challenge("meatyhamhock", q), Ok("1158201444".into()));
        assert_eq!(subscription_challenge("another-token", q), Err(Rejection::BadCredentials));
        let malformed = |q: &str| matches!(subscription_challenge("meatyhamhock", q), Err(Rejection::Malformed(_)));
        assert!(malformed("hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=meatyhamhock"));
        assert!(malformed("hub.mode=subscribe&hub.verify_token=meatyhamhock"));
        assert!(malformed("hub.mode=subscribe&hub.challenge=1"));
        assert!(malformed(""));
    }
}
