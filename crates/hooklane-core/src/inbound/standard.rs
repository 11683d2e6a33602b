//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), as hooklane
//! itself signs: the check is [`crate::signing::Verifier`].

use super::{header, Headers, Rejection};
use crate::signing::{Secret, Verifier, VerifyError};

pub fn verify(secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    let secret = Secret::parse(secret).map_err(|_| Rejection::SignatureMismatch)?;
    let verifier = Verifier::new(vec![secret]).with_tolerance(super::TOLERANCE_SECS);
    verifier
        .verify(
            header(headers, "webhook-id"),
            header(headers, "webhook-timestamp"),
            header(headers, "webhook-signature"),
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
}
