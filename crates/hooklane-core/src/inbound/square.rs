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
    if !any_url_variant(url, signed) {
        return Err(Rejection::SignatureMismatch);
    }
    // The URL and the body are signed with nothing between them: the end of a notification
    // URL with a trailing slash or a query could be moved to the start of the body and the
    // signature would still hold. A notification is a JSON object with its `event_id` (the
    // deduplication key), which such a body never is.
    let event_id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("event_id").and_then(|id| id.as_str()).map(str::to_owned));
    match event_id {
        Some(id) if !id.is_empty() => Ok(()),
        _ => Err(Rejection::Malformed("body (a Square notification is a JSON object with an event_id)".into())),
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

    #[test]
    fn the_end_of_the_url_cannot_be_moved_into_the_body() {
        // Square set to call the URL with a trailing slash signs `URL/` + body; the same bytes
        // are `URL` + `/body`, which hooklane also tries (it routes without the slash).
        let signed = mac(HmacAlgorithm::Sha256, KEY.as_bytes(), &[format!("{URL}/").as_bytes(), BODY]);
        let signature = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signed);
        let h = headers(&[("x-square-hmacsha256-signature", &signature)]);
        assert_eq!(verify(KEY, &h, BODY, URL), Ok(()), "the genuine notification");
        let moved = [b"/".as_slice(), BODY].concat();
        assert!(matches!(verify(KEY, &h, &moved, URL), Err(Rejection::Malformed(_))));
    }
}
