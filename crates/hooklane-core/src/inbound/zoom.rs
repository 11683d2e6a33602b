//! Zoom: `x-zm-signature: v0=<hex HMAC-SHA256(secret token, "v0:{ts}:{body}")>` with
//! `x-zm-request-timestamp: {ts}` (Slack's scheme under other names).
//!
//! When an event subscription's endpoint URL is validated, Zoom sends a signed
//! `{"event": "endpoint.url_validation", "payload": {"plainToken": …}}` and expects
//! `{"plainToken": …, "encryptedToken": <hex HMAC-SHA256(secret token, plainToken)>}` back
//! ([`handshake`]); it validates again from time to time.

use super::hmac_body::mac;
use super::slack::verify_v0;
use super::{header, lower_hex_after, Headers, HmacAlgorithm, Rejection};

pub const SIGNATURE: &str = "x-zm-signature";
pub const TIMESTAMP: &str = "x-zm-request-timestamp";

pub fn verify(secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    // Exactly as Zoom writes it (`v0=` and 64 lower-case hex digits): the header is the
    // deduplication key.
    if header(headers, SIGNATURE).is_some_and(|value| !lower_hex_after(value, "v0=", 64)) {
        return Err(Rejection::Malformed("x-zm-signature".into()));
    }
    verify_v0(("x-zm-signature", SIGNATURE), ("x-zm-request-timestamp", TIMESTAMP), secret, headers, body, now)
}

/// The answer to Zoom's URL validation, when `json` is one.
pub fn handshake(secret: &str, json: &serde_json::Value) -> Option<serde_json::Value> {
    if json.get("event")?.as_str()? != "endpoint.url_validation" {
        return None;
    }
    let plain = json.get("payload")?.get("plainToken")?.as_str()?;
    let encrypted = mac(HmacAlgorithm::Sha256, secret.as_bytes(), &[plain.as_bytes()]);
    let encrypted: String = encrypted.iter().map(|b| format!("{b:02x}")).collect();
    Some(serde_json::json!({ "plainToken": plain, "encryptedToken": encrypted }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const SECRET: &str = "zm_secret_token_test";
    const BODY: &[u8] =
        br#"{"event":"meeting.started","event_ts":1700000000123,"payload":{"account_id":"AAAAAABBBB"}}"#;
    // python3: hmac.new(b"zm_secret_token_test", b"v0:1700000000:" + BODY, hashlib.sha256).hexdigest()
    const SIG: &str = "v0=319550ca84c626bdba15dc58f7bbaebb119407e1489887263f719fa5f9b8cbef";

    #[test]
    fn signed_events_within_tolerance() {
        let h = headers(&[("x-zm-request-timestamp", "1700000000"), ("x-zm-signature", SIG)]);
        assert_eq!(verify(SECRET, &h, BODY, 1_700_000_000 + 60), Ok(()));
        assert_eq!(verify("other", &h, BODY, 1_700_000_000), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(SECRET, &h, BODY, 1_700_000_000 + 301), Err(Rejection::TimestampTooOld));
        let slack_named = headers(&[("X-Slack-Request-Timestamp", "1700000000"), ("X-Slack-Signature", SIG)]);
        assert_eq!(verify(SECRET, &slack_named, BODY, 1_700_000_000), Err(Rejection::MissingHeader(TIMESTAMP.into())));
    }

    /// The signature is the deduplication key: written another way (upper case, a space
    /// after `v0=`) it is refused, or a captured request would pass again as new.
    #[test]
    fn only_the_signature_as_zoom_writes_it() {
        let hex = SIG.trim_start_matches("v0=");
        for other in [format!("v0={}", hex.to_ascii_uppercase()), format!("v0= {hex}"), format!("V0={hex}")] {
            let h = headers(&[("x-zm-request-timestamp", "1700000000"), ("x-zm-signature", &other)]);
            assert_eq!(verify(SECRET, &h, BODY, 1_700_000_000), Err(Rejection::Malformed(SIGNATURE.into())), "{other}");
        }
        let h = headers(&[("x-zm-request-timestamp", "1700000000"), ("x-zm-signature", SIG)]);
        assert_eq!(verify(SECRET, &h, BODY, 1_700_000_000), Ok(()));
    }

    #[test]
    fn url_validation_is_answered_with_the_encrypted_token() {
        let validation = serde_json::json!({
            "event": "endpoint.url_validation",
            "payload": { "plainToken": "qgg8vlvZRS6UYooatFL8Aw" },
            "event_ts": 1654503849680u64,
        });
        // python3: hmac.new(b"zm_secret_token_test", b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
        let want = serde_json::json!({
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": "4b24e48529eb0d5a56df3ecc9330291b094dee47c19352eb1f3fe743614d9853",
        });
        assert_eq!(handshake(SECRET, &validation), Some(want));
        assert_eq!(handshake(SECRET, &serde_json::json!({ "event": "meeting.started", "payload": {} })), None);
    }
}
