//! Square: `x-square-hmacsha256-signature: <base64 HMAC-SHA256(signature key, notification
//! URL + body)>`. The URL is the subscription's notification URL, which hooklane rebuilds
//! from `public_url` and the path it received, as for Twilio (with or without a trailing
//! slash or the default port). Square signs no timestamp; its events carry an `event_id`
//! in the signed body.

use super::hmac_body::{mac, matches};
use super::twilio::any_url_variant;
use super::{header, Encoding, Headers, HmacAlgorithm, Rejection};

pub const HEADER: &str = "x-square-hmacsha256-signature";

pub fn verify(signature_key: &str, headers: &Headers, body: &[u8], url: &str) -> Result<(), Rejection> {
    let given = header(headers, HEADER).ok_or_else(|| Rejection::MissingHeader(HEADER.into()))?;
    let signed = |url: &str| {
        let expected = mac(HmacAlgorithm::Sha256, signature_key.as_bytes(), &[url.as_bytes(), body]);
        matches(given, Encoding::Base64, &expected)
    };
    if any_url_variant(url, signed) {
        Ok(())
    } else {
        Err(Rejection::SignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const KEY: &str = "square-signature-key-9Zq";
    const URL: &str = "https://hooks.example.com/in/src_01SQUARE";
    const BODY: &[u8] = br#"{"merchant_id":"6SSW7HV8K2ST5","type":"payment.created","event_id":"13b867cf-db3d-4b1c-90b6-2f32a9d78124","created_at":"2023-11-14T22:13:20Z","data":{"type":"payment","id":"KkAkhdMs"}}"#;
    // python3: base64.b64encode(hmac.new(KEY, URL + BODY, hashlib.sha256).digest())
    const SIG: &str = "hPHHl4UwB/cmkknJiyziOHiAzEuFymTWyAq80kKLoP4=";

    #[test]
    fn signed_with_the_notification_url() {
        let h = headers(&[("x-square-hmacsha256-signature", SIG)]);
        assert_eq!(verify(KEY, &h, BODY, URL), Ok(()));
        assert_eq!(verify(KEY, &h, BODY, "https://hooks.example.com:443/in/src_01SQUARE"), Ok(()));
        assert_eq!(
            verify(KEY, &h, BODY, "https://hooks.example.com/in/src_01OTHER"),
            Err(Rejection::SignatureMismatch)
        );
        assert_eq!(verify("another-key", &h, BODY, URL), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(KEY, &h, b"{}", URL), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(KEY, &headers(&[]), BODY, URL), Err(Rejection::MissingHeader(HEADER.into())));
    }
}
