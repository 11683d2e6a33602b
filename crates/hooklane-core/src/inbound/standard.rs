//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), as hooklane
//! itself signs: the check is [`crate::signing::Verifier`]. Providers that send through
//! Svix (Clerk, Resend and others) name the same headers `svix-id`, `svix-timestamp` and
//! `svix-signature`, which Svix's own libraries accept in their place: so does this.

use super::{header, Headers, Rejection};
use crate::signing::{Verifier, VerifyError, VerifyKey};

/// The Standard Webhooks header `name` (`webhook-…`), or its `svix-…` twin when the
/// request has no `webhook-…` headers at all (one scheme per request, never a mix).
pub fn standard_header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    let scheme_of = |prefix: &str| header(headers, &format!("{prefix}id")).is_some();
    match name.strip_prefix("webhook-") {
        Some(rest) if !scheme_of("webhook-") && scheme_of("svix-") => header(headers, &format!("svix-{rest}")),
        _ => header(headers, name),
    }
}

pub fn verify(secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    let key = VerifyKey::parse(secret).map_err(|_| Rejection::SignatureMismatch)?;
    let verifier = Verifier::new(vec![key]).with_tolerance(super::TOLERANCE_SECS);
    verifier
        .verify(
            standard_header(headers, "webhook-id"),
            standard_header(headers, "webhook-timestamp"),
            standard_header(headers, "webhook-signature"),
            body,
            now,
        )
        .map_err(|e| match e {
            VerifyError::MissingHeader(h) => Rejection::MissingHeader(h.into()),
            VerifyError::BadTimestamp => Rejection::Malformed("webhook-timestamp".into()),
            VerifyError::TimestampTooOld => Rejection::TimestampTooOld,
            VerifyError::TimestampTooNew => Rejection::TimestampTooNew,
            VerifyError::NoMatch => Rejection::SignatureMismatch,
        })
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    #[test]
    fn published_vector() {
        // The Standard Webhooks specification's example.
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ]);
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(verify(secret, &h, body, 1_614_265_330), Ok(()));
        assert_eq!(verify(secret, &h, b"{}", 1_614_265_330), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(secret, &h, body, 1_614_265_330 + 301), Err(Rejection::TimestampTooOld));
        let mut missing = h.clone();
        missing.remove("webhook-id");
        assert_eq!(verify(secret, &missing, body, 1_614_265_330), Err(Rejection::MissingHeader("webhook-id".into())));
    }

    #[test]
    fn svix_headers_stand_in_for_the_standard_ones() {
        let svix = headers(&[
            ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("svix-timestamp", "1614265330"),
            ("svix-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
        ]);
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(verify(secret, &svix, body, 1_614_265_330), Ok(()));
        assert_eq!(verify(secret, &svix, b"{}", 1_614_265_330), Err(Rejection::SignatureMismatch));
        assert_eq!(standard_header(&svix, "webhook-id"), Some("msg_p5jXN8AQM9LWM0D4loKWxJek"));
        // One scheme per request: a `webhook-id` makes the `svix-` headers irrelevant.
        let mut mixed = svix.clone();
        mixed.insert("webhook-id".into(), "msg_p5jXN8AQM9LWM0D4loKWxJek".into());
        assert_eq!(
            verify(secret, &mixed, body, 1_614_265_330),
            Err(Rejection::MissingHeader("webhook-timestamp".into()))
        );
    }

    #[test]
    fn a_public_key_checks_asymmetric_signatures() {
        // The signing module's Ed25519 vector (made with Python's `cryptography`).
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1a,OVJuLC0iOuaBuQulpz9A/zDgvqV8z8miLUJk2j15ZMONwDNhOvPJ3rO4owAHFyjFq80+pUUjrNfTHAZs1RQnDw==",
            ),
        ]);
        let public = "whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(verify(public, &h, body, 1_614_265_330), Ok(()));
        assert_eq!(verify(public, &h, b"{}", 1_614_265_330), Err(Rejection::SignatureMismatch));
        assert_eq!(
            verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &h, body, 1_614_265_330),
            Err(Rejection::SignatureMismatch)
        );
        assert!(super::super::Verification::StandardWebhooks { secret: public.into() }.check().is_ok());
        assert!(super::super::Verification::StandardWebhooks { secret: "whpk_AAAA".into() }.check().is_err());
    }
}
