//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{ts}:{body}")>` with
//! `X-Slack-Request-Timestamp: {ts}`, refused when the timestamp is more than five minutes
//! away (replays). Zoom signs the same way under other header names (see [`super::zoom`]);
//! both go through [`verify_v0`].
//!
//! When a Request URL is set in Slack, Slack first sends a signed
//! `{"type": "url_verification", "challenge": …}` and expects the challenge back
//! ([`handshake`]).

use super::hmac_body::{mac, matches};
use super::{fresh, header, lower_hex_after, Encoding, Headers, HmacAlgorithm, Rejection};

pub const SIGNATURE: &str = "x-slack-signature";
pub const TIMESTAMP: &str = "x-slack-request-timestamp";

pub fn verify(signing_secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    // Exactly as Slack writes it (`v0=` and 64 lower-case hex digits): the header is the
    // deduplication key of a request without `event_id` (a form), and one signature written
    // another way (upper case, a space after `v0=`) would pass once more.
    if header(headers, SIGNATURE).is_some_and(|value| !lower_hex_after(value, "v0=", 64)) {
        return Err(Rejection::Malformed("X-Slack-Signature".into()));
    }
    verify_v0(
        ("X-Slack-Signature", SIGNATURE),
        ("X-Slack-Request-Timestamp", TIMESTAMP),
        signing_secret,
        headers,
        body,
        now,
    )
}

/// Checks `signature: v0=<hex HMAC-SHA256(secret, "v0:{ts}:{body}")>` with `timestamp: ts`
/// within the tolerance; each header is given as (name to show, name in lower case).
pub(crate) fn verify_v0(
    signature: (&str, &str),
    timestamp: (&str, &str),
    secret: &str,
    headers: &Headers,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let ts = header(headers, timestamp.1).ok_or_else(|| Rejection::MissingHeader(timestamp.1.into()))?.trim();
    let sig = header(headers, signature.1).ok_or_else(|| Rejection::MissingHeader(signature.1.into()))?;
    let given = sig.trim().strip_prefix("v0=").ok_or_else(|| Rejection::Malformed(signature.0.into()))?;
    let expected = mac(HmacAlgorithm::Sha256, secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
    if !matches(given, Encoding::Hex, &expected) {
        return Err(Rejection::SignatureMismatch);
    }
    fresh(ts, timestamp.0, now).map(|_| ())
}

/// The answer to Slack's URL verification: its challenge, when `json` is one.
pub fn handshake(json: &serde_json::Value) -> Option<serde_json::Value> {
    if json.get("type")?.as_str()? != "url_verification" {
        return None;
    }
    let challenge = json.get("challenge")?.as_str()?;
    Some(serde_json::json!({ "challenge": challenge }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&command=%2Fweather&text=94070";
    // python3: "v0=" + hmac.new(b"8f742231b10e8888abcd99yyyzzz85a5",
    //   b"v0:1531420618:" + BODY, hashlib.sha256).hexdigest()
    const SIG: &str = "v0=a45771c0f181b7fb1752e9a26cc1ffb2c428f52ac8ab774ffa4adf8cf2874576";

    fn h(ts: &str, sig: &str) -> Headers {
        headers(&[("X-Slack-Request-Timestamp", ts), ("X-Slack-Signature", sig)])
    }

    #[test]
    fn form_encoded_command() {
        assert_eq!(verify(SECRET, &h("1531420618", SIG), BODY, 1_531_420_618 + 10), Ok(()));
        assert_eq!(
            verify(SECRET, &h("1531420618", SIG), b"token=other", 1_531_420_618),
            Err(Rejection::SignatureMismatch)
        );
        assert_eq!(verify(SECRET, &h("1531420619", SIG), BODY, 1_531_420_618), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(SECRET, &h("1531420618", SIG), BODY, 1_531_420_618 + 301), Err(Rejection::TimestampTooOld));
        assert!(matches!(verify(SECRET, &h("1531420618", "a45771c0"), BODY, 0), Err(Rejection::Malformed(_))));
        let no_ts = headers(&[("X-Slack-Signature", SIG)]);
        assert_eq!(verify(SECRET, &no_ts, BODY, 0), Err(Rejection::MissingHeader(TIMESTAMP.into())));
    }

    /// The signature is the deduplication key of a form: written another way (upper case, a
    /// space after `v0=`) it is refused, or a captured request would pass again as new.
    #[test]
    fn only_the_signature_as_slack_writes_it() {
        let hex = SIG.trim_start_matches("v0=");
        for other in [format!("v0={}", hex.to_ascii_uppercase()), format!("v0= {hex}"), format!("V0={hex}")] {
            assert_eq!(
                verify(SECRET, &h("1531420618", &other), BODY, 1_531_420_618),
                Err(Rejection::Malformed("X-Slack-Signature".into())),
                "{other}"
            );
        }
        assert_eq!(verify(SECRET, &h("1531420618", SIG), BODY, 1_531_420_618), Ok(()));
    }

    #[test]
    fn url_verification_is_answered_with_its_challenge() {
        let challenge = serde_json::json!({ "token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification" });
        let answer = handshake(&challenge).expect("a handshake");
        assert_eq!(answer, serde_json::json!({ "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" }));
        assert_eq!(handshake(&serde_json::json!({ "type": "event_callback", "challenge": "c" })), None);
        assert_eq!(handshake(&serde_json::json!({ "type": "url_verification" })), None);
    }
}
