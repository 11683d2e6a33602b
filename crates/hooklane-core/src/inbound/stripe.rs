//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, where each `v1` is
//! HMAC-SHA256 of `"{t}.{body}"` keyed with the endpoint's signing secret (the whole
//! `whsec_…` string, as text). Several `v1` appear while a secret is being rolled.

use super::hmac_body::{mac, matches};
use super::{fresh, header, Encoding, Headers, HmacAlgorithm, Rejection};

pub const HEADER: &str = "stripe-signature";

pub fn verify(secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    let value = header(headers, HEADER).ok_or_else(|| Rejection::MissingHeader(HEADER.into()))?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| Rejection::Malformed("Stripe-Signature (no t=)".into()))?;
    if signatures.is_empty() {
        return Err(Rejection::Malformed("Stripe-Signature (no v1=)".into()));
    }
    // The MAC is checked first, so a forged request never learns about the clock.
    let expected = mac(HmacAlgorithm::Sha256, secret.as_bytes(), &[t.as_bytes(), b".", body]);
    if !signatures.iter().any(|s| matches(s, Encoding::Hex, &expected)) {
        return Err(Rejection::SignatureMismatch);
    }
    fresh(t, "Stripe-Signature timestamp", now).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const BODY: &[u8] = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","type":"invoice.paid"}"#;
    // python3: hmac.new(b"whsec_test_secret",
    //   b'1700000000.{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","type":"invoice.paid"}',
    //   hashlib.sha256).hexdigest()
    const SIG: &str = "4b8a0a6de71311a71972e8fab9c67b099ab9735199b0e8204e1a598fdda8815b";

    #[test]
    fn signed_request_within_tolerance() {
        let h = headers(&[("Stripe-Signature", &format!("t=1700000000,v1={SIG},v0=ignored"))]);
        assert_eq!(verify("whsec_test_secret", &h, BODY, 1_700_000_000), Ok(()));
        assert_eq!(verify("whsec_test_secret", &h, BODY, 1_700_000_000 + 300), Ok(()));
        // Rolling secrets: any v1 may match.
        let h2 = headers(&[("Stripe-Signature", &format!("t=1700000000,v1=00ff,v1={SIG}"))]);
        assert_eq!(verify("whsec_test_secret", &h2, BODY, 1_700_000_000), Ok(()));
    }

    #[test]
    fn stale_forged_or_malformed() {
        let h = headers(&[("Stripe-Signature", &format!("t=1700000000,v1={SIG}"))]);
        assert_eq!(verify("whsec_test_secret", &h, BODY, 1_700_000_000 + 301), Err(Rejection::TimestampTooOld));
        assert_eq!(verify("whsec_test_secret", &h, BODY, 1_700_000_000 - 301), Err(Rejection::TimestampTooNew));
        assert_eq!(verify("whsec_other", &h, BODY, 1_700_000_000), Err(Rejection::SignatureMismatch));
        // The timestamp is signed: moving it breaks the signature.
        let moved = headers(&[("Stripe-Signature", &format!("t=1700000001,v1={SIG}"))]);
        assert_eq!(verify("whsec_test_secret", &moved, BODY, 1_700_000_000), Err(Rejection::SignatureMismatch));
        let no_t = headers(&[("Stripe-Signature", &format!("v1={SIG}"))]);
        assert!(matches!(verify("whsec_test_secret", &no_t, BODY, 0), Err(Rejection::Malformed(_))));
        assert_eq!(
            verify("whsec_test_secret", &headers(&[]), BODY, 0),
            Err(Rejection::MissingHeader("stripe-signature".into()))
        );
    }
}
