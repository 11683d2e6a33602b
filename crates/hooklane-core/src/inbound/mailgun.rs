//! Mailgun: the signature is in the JSON body, not a header:
//! `{"signature": {"timestamp": "…", "token": "…", "signature": "<hex>"}, "event-data": {…}}`,
//! where `signature` is HMAC-SHA256 of `"{timestamp}{token}"` keyed with the account's
//! HTTP webhook signing key. The timestamp must be within five minutes (replays).

use super::hmac_body::{mac, matches};
use super::{fresh, Encoding, HmacAlgorithm, Rejection};

pub fn verify(signing_key: &str, body: &[u8], now: i64) -> Result<(), Rejection> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| Rejection::Malformed("body (Mailgun signs a JSON body)".into()))?;
    let field = |name: &str| {
        json.get("signature")
            .and_then(|s| s.get(name))
            .and_then(|v| v.as_str())
            .ok_or_else(|| Rejection::Malformed(format!("signature.{name}")))
    };
    let (timestamp, token, given) = (field("timestamp")?, field("token")?, field("signature")?);
    let expected = mac(HmacAlgorithm::Sha256, signing_key.as_bytes(), &[timestamp.as_bytes(), token.as_bytes()]);
    if !matches(given, Encoding::Hex, &expected) {
        return Err(Rejection::SignatureMismatch);
    }
    fresh(timestamp, "signature.timestamp", now).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "key-mailgun-signing-7f3a";
    // Well-formed, but not the signature of this timestamp and token.
    const SIG: &str = "0d8a3b1e6a5e4a1d0fbfd7e3a0f4cba9fd1a3c3b75e3c1fb40a3b2f3e8d8c9a0";

    fn body(sig: &str, ts: &str) -> Vec<u8> {
        format!(
            r#"{{"signature":{{"timestamp":"{ts}","token":"tok-5e1d","signature":"{sig}"}},"event-data":{{"event":"delivered","id":"ev-1"}}}}"#
        )
        .into_bytes()
    }

    fn signed(ts: &str) -> String {
        let tag = mac(HmacAlgorithm::Sha256, KEY.as_bytes(), &[ts.as_bytes(), b"tok-5e1d"]);
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn signed_body_within_tolerance() {
        assert_eq!(verify(KEY, &body(&signed("1700000000"), "1700000000"), 1_700_000_000 + 300), Ok(()));
    }

    #[test]
    fn forged_stale_or_malformed() {
        assert_eq!(verify(KEY, &body(SIG, "1700000000"), 1_700_000_000), Err(Rejection::SignatureMismatch));
        assert_eq!(
            verify("other-key", &body(&signed("1700000000"), "1700000000"), 1_700_000_000),
            Err(Rejection::SignatureMismatch)
        );
        assert_eq!(
            verify(KEY, &body(&signed("1700000000"), "1700000000"), 1_700_000_000 + 301),
            Err(Rejection::TimestampTooOld)
        );
        assert!(matches!(verify(KEY, b"timestamp=1&token=2", 0), Err(Rejection::Malformed(_))));
        assert!(
            matches!(verify(KEY, br#"{"event-data":{}}"#, 0), Err(Rejection::Malformed(m)) if m == "signature.timestamp")
        );
    }
}
