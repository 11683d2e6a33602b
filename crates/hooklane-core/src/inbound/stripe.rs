//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, where each `v1` is
//! HMAC-SHA256 of `"{t}.{body}"` keyed with the endpoint's signing secret (the whole
//! `whsec_…` string, as text). Several `v1` appear while a secret is being rolled.
//!
//! Paddle signs the same way with other names (see [`super::paddle`]); both go through
//! [`verify_pairs`].

use super::hmac_body::{mac, matches};
use super::{fresh, header, Encoding, Headers, HmacAlgorithm, Rejection};

pub const HEADER: &str = "stripe-signature";

/// A header of `key=value` pairs holding a timestamp and one or more hex HMAC-SHA256
/// signatures of `"{timestamp}{joiner}{body}"`.
pub(crate) struct PairsScheme {
    /// The header, in lower case.
    pub header: &'static str,
    /// How the header is named in errors.
    pub display: &'static str,
    pub separator: char,
    pub timestamp_key: &'static str,
    pub signature_key: &'static str,
    pub joiner: &'static [u8],
}

const STRIPE: PairsScheme = PairsScheme {
    header: HEADER,
    display: "Stripe-Signature",
    separator: ',',
    timestamp_key: "t",
    signature_key: "v1",
    joiner: b".",
};

pub fn verify(secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    verify_pairs(&STRIPE, secret, headers, body, now)
}

/// Checks a request signed as `scheme` says: any of the signatures may match (secrets being
/// rolled), and the signed timestamp must be within the tolerance.
pub(crate) fn verify_pairs(
    scheme: &PairsScheme,
    secret: &str,
    headers: &Headers,
    body: &[u8],
    now: i64,
) -> Result<(), Rejection> {
    let value = header(headers, scheme.header).ok_or_else(|| Rejection::MissingHeader(scheme.header.into()))?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(scheme.separator) {
        match item.trim().split_once('=') {
            Some((k, t)) if k == scheme.timestamp_key => timestamp = Some(t),
            Some((k, s)) if k == scheme.signature_key => signatures.push(s),
            _ => {}
        }
    }
    let (display, ts_key, sig_key) = (scheme.display, scheme.timestamp_key, scheme.signature_key);
    let t = timestamp.ok_or_else(|| Rejection::Malformed(format!("{display} (no {ts_key}=)")))?;
    if signatures.is_empty() {
        return Err(Rejection::Malformed(format!("{display} (no {sig_key}=)")));
    }
    // The MAC is checked first, so a forged request never learns about the clock.
    let expected = mac(HmacAlgorithm::Sha256, secret.as_bytes(), &[t.as_bytes(), scheme.joiner, body]);
    if !signatures.iter().any(|s| matches(s, Encoding::Hex, &expected)) {
        return Err(Rejection::SignatureMismatch);
    }
    fresh(t, &format!("{display} timestamp"), now).map(|_| ())
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
