//! Calendly: `Calendly-Webhook-Signature: t=<unix>,v1=<hex>`, where `v1` is HMAC-SHA256 of
//! `"{t}.{body}"` keyed with the webhook signing key: Stripe's scheme under another name.

use super::stripe::{verify_pairs, PairsScheme};
use super::{header, Headers, Rejection};

pub const HEADER: &str = "calendly-webhook-signature";

const CALENDLY: PairsScheme = PairsScheme {
    header: HEADER,
    display: "Calendly-Webhook-Signature",
    separator: ',',
    timestamp_key: "t",
    signature_key: "v1",
    joiner: b".",
};

pub fn verify(signing_key: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    // Only as Calendly writes it (`t=<digits>,v1=<64 lower-case hex>`): the header is the
    // deduplication key, and one signature written two ways would pass twice.
    if let Some(value) = header(headers, HEADER) {
        if !canonical(value) {
            return Err(Rejection::Malformed(CALENDLY.display.to_string()));
        }
    }
    verify_pairs(&CALENDLY, signing_key, headers, body, now)
}

fn canonical(value: &str) -> bool {
    let Some((t, v1)) = value.strip_prefix("t=").and_then(|rest| rest.split_once(",v1=")) else { return false };
    !t.is_empty()
        && t.bytes().all(|b| b.is_ascii_digit())
        && v1.len() == 64
        && v1.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const KEY: &str = "calendly-signing-key-0a1b";
    const BODY: &[u8] = br#"{"created_at":"2023-11-14T22:13:20.000000Z","event":"invitee.created","payload":{"uri":"https://api.calendly.com/scheduled_events/GBGBDCAADAEDCRZ2/invitees/AAAAAAAAAAAAAAAA"}}"#;
    // python3: hmac.new(KEY, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    const SIG: &str = "691b69a848f6c6c8074e7809703d30726ebf415030dc205a8dd7209c87649fa2";

    #[test]
    fn signed_within_tolerance() {
        let h = headers(&[("Calendly-Webhook-Signature", &format!("t=1700000000,v1={SIG}"))]);
        assert_eq!(verify(KEY, &h, BODY, 1_700_000_000 + 299), Ok(()));
        assert_eq!(verify(KEY, &h, BODY, 1_700_000_000 + 301), Err(Rejection::TimestampTooOld));
        assert_eq!(verify("another-key", &h, BODY, 1_700_000_000), Err(Rejection::SignatureMismatch));
        // One spelling only: reordered, spaced, upper-case or padded forms are refused.
        for other in [
            format!("v1={SIG},t=1700000000"),
            format!("t=1700000000, v1={SIG}"),
            format!("t=1700000000,v1={}", SIG.to_ascii_uppercase()),
            format!("t=1700000000,v1={SIG},v0=00"),
        ] {
            let h = headers(&[("Calendly-Webhook-Signature", &other)]);
            assert!(matches!(verify(KEY, &h, BODY, 1_700_000_000), Err(Rejection::Malformed(_))), "{other}");
        }
        let stripe_named = headers(&[("Stripe-Signature", &format!("t=1700000000,v1={SIG}"))]);
        assert_eq!(verify(KEY, &stripe_named, BODY, 1_700_000_000), Err(Rejection::MissingHeader(HEADER.into())));
    }
}
