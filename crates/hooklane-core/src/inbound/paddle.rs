//! Paddle (Billing): `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>…]`, where each `h1` is
//! HMAC-SHA256 of `"{ts}:{body}"` keyed with the notification destination's secret key (as
//! text). Several `h1` appear while a secret is being rotated. The same scheme as Stripe's,
//! with other names.

use super::stripe::{verify_pairs, PairsScheme};
use super::{Headers, Rejection};

pub const HEADER: &str = "paddle-signature";

const PADDLE: PairsScheme = PairsScheme {
    header: HEADER,
    display: "Paddle-Signature",
    separator: ';',
    timestamp_key: "ts",
    signature_key: "h1",
    joiner: b":",
};

pub fn verify(secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    verify_pairs(&PADDLE, secret, headers, body, now)
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const SECRET: &str = "pdl_ntfset_01h_test_secret";
    const BODY: &[u8] = br#"{"event_id":"evt_01h","event_type":"transaction.completed","notification_id":"ntf_01h"}"#;
    // python3: hmac.new(b"pdl_ntfset_01h_test_secret", b'1700000000:' + BODY, hashlib.sha256).hexdigest()
    const SIG: &str = "8172720ac2a980795c15102c8ba1f54283841139fc5beb21999b3d13b5f6361b";

    #[test]
    fn signed_request_within_tolerance_with_any_h1() {
        let h = headers(&[("Paddle-Signature", &format!("ts=1700000000;h1={SIG}"))]);
        assert_eq!(verify(SECRET, &h, BODY, 1_700_000_000 + 300), Ok(()));
        let rotating = headers(&[("Paddle-Signature", &format!("ts=1700000000;h1=00ff;h1={SIG}"))]);
        assert_eq!(verify(SECRET, &rotating, BODY, 1_700_000_000), Ok(()));
    }

    #[test]
    fn stale_forged_or_malformed() {
        let h = headers(&[("Paddle-Signature", &format!("ts=1700000000;h1={SIG}"))]);
        assert_eq!(verify(SECRET, &h, BODY, 1_700_000_000 + 301), Err(Rejection::TimestampTooOld));
        assert_eq!(verify("pdl_ntfset_other", &h, BODY, 1_700_000_000), Err(Rejection::SignatureMismatch));
        // Stripe's separator and names are not Paddle's.
        let stripe_like = headers(&[("Paddle-Signature", &format!("t=1700000000,v1={SIG}"))]);
        assert!(matches!(verify(SECRET, &stripe_like, BODY, 1_700_000_000), Err(Rejection::Malformed(_))));
        assert_eq!(verify(SECRET, &headers(&[]), BODY, 0), Err(Rejection::MissingHeader("paddle-signature".into())));
    }
}
