//! HubSpot (signature v3): `X-HubSpot-Signature-v3: <base64 HMAC-SHA256(app secret,
//! "POST" + URL + body + timestamp)>` with `X-HubSpot-Request-Timestamp` in milliseconds,
//! within 5 minutes. The URL is the one HubSpot called, which hooklane rebuilds from
//! `public_url` and the path and query it received, as for Twilio; HubSpot signs it with a
//! few escaped characters unescaped (`%3A` as `:`…), so that form is tried too.

use super::hmac_body::{mac, matches};
use super::twilio::any_url_variant;
use super::{fresh, header, Encoding, Headers, HmacAlgorithm, Rejection};

pub const SIGNATURE: &str = "x-hubspot-signature-v3";
pub const TIMESTAMP: &str = "x-hubspot-request-timestamp";

pub fn verify(app_secret: &str, headers: &Headers, body: &[u8], url: &str, now: i64) -> Result<(), Rejection> {
    let get = |name: &str| header(headers, name).ok_or_else(|| Rejection::MissingHeader(name.to_string()));
    let (given, timestamp) = (get(SIGNATURE)?, get(TIMESTAMP)?.trim());
    let millis: i64 = timestamp.parse().map_err(|_| Rejection::Malformed(TIMESTAMP.to_string()))?;
    let signed_as = |url: &str| {
        let parts: [&[u8]; 4] = [b"POST", url.as_bytes(), body, timestamp.as_bytes()];
        matches(given, Encoding::Base64, &mac(HmacAlgorithm::Sha256, app_secret.as_bytes(), &parts))
    };
    let signed = |url: &str| signed_as(url) || unescaped(url).is_some_and(|u| signed_as(&u));
    // The MAC is checked first, so a forged request never learns about the clock.
    if !any_url_variant(url, signed) {
        return Err(Rejection::SignatureMismatch);
    }
    fresh(&millis.div_euclid(1000).to_string(), TIMESTAMP, now).map(|_| ())
}

/// The characters HubSpot unescapes in the URL before it signs it.
const UNESCAPED: [(&str, char); 12] = [
    ("%3A", ':'),
    ("%2F", '/'),
    ("%3F", '?'),
    ("%40", '@'),
    ("%21", '!'),
    ("%24", '$'),
    ("%27", '\''),
    ("%28", '('),
    ("%29", ')'),
    ("%2A", '*'),
    ("%2C", ','),
    ("%3B", ';'),
];

/// `url` with those characters unescaped (either case of hex), when it has any.
fn unescaped(url: &str) -> Option<String> {
    if !url.contains('%') {
        return None;
    }
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    let mut changed = false;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape.and_then(|e| UNESCAPED.iter().find(|(code, _)| code.eq_ignore_ascii_case(e))) {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[at + 3..];
                changed = true;
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const SECRET: &str = "hubspot-app-secret-5e";
    const URL: &str = "https://hooks.example.com/in/src_01HUBSPOT";
    const BODY: &[u8] = br#"[{"eventId":1763432271,"subscriptionId":2510010,"portalId":62515,"appId":1160452,"occurredAt":1700000000000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeFlag":"CREATED","changeSource":"CRM"}]"#;
    // python3: base64.b64encode(hmac.new(SECRET, b"POST" + URL + BODY + b"1700000000123", hashlib.sha256).digest())
    const SIG: &str = "yQ7yYMbRlm9mZoIpC0+cSJXJesLO0swaGzNN7dJa/Fs=";

    fn signed(ts: &str) -> Headers {
        headers(&[("X-HubSpot-Signature-v3", SIG), ("X-HubSpot-Request-Timestamp", ts)])
    }

    #[test]
    fn signed_with_method_url_body_and_timestamp() {
        assert_eq!(verify(SECRET, &signed("1700000000123"), BODY, URL, 1_700_000_000 + 299), Ok(()));
        assert_eq!(
            verify(SECRET, &signed("1700000000123"), BODY, URL, 1_700_000_000 + 301),
            Err(Rejection::TimestampTooOld)
        );
        // The timestamp is signed: another one does not verify.
        assert_eq!(
            verify(SECRET, &signed("1700000000124"), BODY, URL, 1_700_000_000),
            Err(Rejection::SignatureMismatch)
        );
        assert_eq!(
            verify(SECRET, &signed("1700000000123"), BODY, "https://hooks.example.com/in/other", 1_700_000_000),
            Err(Rejection::SignatureMismatch)
        );
        assert_eq!(
            verify("another", &signed("1700000000123"), BODY, URL, 1_700_000_000),
            Err(Rejection::SignatureMismatch)
        );
        assert!(matches!(verify(SECRET, &signed("soon"), BODY, URL, 0), Err(Rejection::Malformed(_))));
        assert_eq!(verify(SECRET, &headers(&[]), BODY, URL, 0), Err(Rejection::MissingHeader(SIGNATURE.into())));
    }

    #[test]
    fn escaped_characters_are_signed_unescaped() {
        assert_eq!(
            unescaped("https://h.example/in/s?at=12%3A30&x=%2f%20%"),
            Some("https://h.example/in/s?at=12:30&x=/%20%".into())
        );
        assert_eq!(unescaped("https://h.example/in/s?x=%20"), None);
        assert_eq!(unescaped(URL), None);
    }
}
