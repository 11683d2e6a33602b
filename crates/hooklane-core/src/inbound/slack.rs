//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{ts}:{body}")>` with
//! `X-Slack-Request-Timestamp: {ts}`, refused when the timestamp is more than five minutes
//! away (replays).

use super::hmac_body::{mac, matches};
use super::{fresh, header, Encoding, Headers, HmacAlgorithm, Rejection};

pub const SIGNATURE: &str = "x-slack-signature";
pub const TIMESTAMP: &str = "x-slack-request-timestamp";

pub fn verify(signing_secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    let ts = header(headers, TIMESTAMP).ok_or_else(|| Rejection::MissingHeader(TIMESTAMP.into()))?.trim();
    let sig = header(headers, SIGNATURE).ok_or_else(|| Rejection::MissingHeader(SIGNATURE.into()))?;
    let given = sig.trim().strip_prefix("v0=").ok_or_else(|| Rejection::Malformed("X-Slack-Signature".into()))?;
    let expected = mac(HmacAlgorithm::Sha256, signing_secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
    if !matches(given, Encoding::Hex, &expected) {
        return Err(Rejection::SignatureMismatch);
    }
    fresh(ts, "X-Slack-Request-Timestamp", now).map(|_| ())
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
}
