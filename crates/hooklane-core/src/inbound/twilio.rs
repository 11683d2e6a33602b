//! Twilio: `X-Twilio-Signature: <base64 HMAC-SHA1(auth token, data)>`, where `data` is the
//! full URL Twilio called (scheme, host, path, query) followed, for a form-encoded body, by
//! every parameter's name and value, names sorted (each name's distinct values sorted too),
//! with nothing between them. For a JSON body the URL carries `bodySHA256` (the hex SHA-256
//! of the body) and the signature covers the URL alone. Twilio signs the URL with or
//! without the default port (`:443`) depending on the product, so both are tried, as its
//! own libraries do.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::hmac_body::{mac, matches};
use super::{header, Encoding, Headers, HmacAlgorithm, Rejection};

pub const HEADER: &str = "x-twilio-signature";

/// `url` is the URL as Twilio called it: hooklane's `public_url`, the path and the query.
pub fn verify(auth_token: &str, headers: &Headers, body: &[u8], url: &str) -> Result<(), Rejection> {
    let given = header(headers, HEADER).ok_or_else(|| Rejection::MissingHeader(HEADER.into()))?;
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let body_sha = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "bodySHA256").map(|(_, v)| v);
    let signed_params = match body_sha {
        // A JSON body: the URL is signed alone, and the body is pinned by its hash.
        Some(expected) => {
            let actual: String = Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect();
            if !actual.eq_ignore_ascii_case(&expected) {
                return Err(Rejection::SignatureMismatch);
            }
            String::new()
        }
        None => sorted_params(body),
    };
    let signed = |url: &str| {
        let expected = mac(HmacAlgorithm::Sha1, auth_token.as_bytes(), &[url.as_bytes(), signed_params.as_bytes()]);
        matches(given, Encoding::Base64, &expected)
    };
    if any_url_variant(url, signed) {
        Ok(())
    } else {
        Err(Rejection::SignatureMismatch)
    }
}

/// Whether `signed` holds for the URL as hooklane rebuilt it or as the provider may have
/// written it: hooklane takes a trailing slash off paths before it routes them, and a
/// provider signs the URL as configured, with or without one, and with or without the
/// default port.
pub(crate) fn any_url_variant(url: &str, signed: impl Fn(&str) -> bool) -> bool {
    let variants = [Some(url.to_string()), slash_variant(url)];
    variants.iter().flatten().any(|u| signed(u) || port_variant(u).is_some_and(|other| signed(&other)))
}

/// The URL with a `/` at the end of its path, when it has none.
fn slash_variant(url: &str) -> Option<String> {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    if path.ends_with('/') {
        return None;
    }
    Some(match query {
        Some(q) => format!("{path}/?{q}"),
        None => format!("{path}/"),
    })
}

/// A form body's parameters as Twilio signs them: names sorted, each name's distinct values
/// sorted, every name and value appended with nothing between. Empty for anything else.
fn sorted_params(body: &[u8]) -> String {
    let mut params: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        params.entry(k.into_owned()).or_default().insert(v.into_owned());
    }
    let mut out = String::new();
    for (name, values) in params {
        for value in values {
            out.push_str(&name);
            out.push_str(&value);
        }
    }
    out
}

/// The same URL with the scheme's default port written out, or taken out when it is.
fn port_variant(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let with_default = format!(":{default}");
    Some(match authority.strip_suffix(&with_default) {
        Some(host) => format!("{scheme}://{host}{tail}"),
        None if authority.contains(':') => return None,
        None => format!("{scheme}://{authority}{with_default}{tail}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine;

    // Twilio's published example (its request-validation snippets): the auth token, the URL,
    // the parameters, and the `X-Twilio-Signature` Twilio sends for them.
    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const FORM: &[u8] =
        b"CallSid=CA1234567890ABCDE&Caller=%2B14158675310&Digits=1234&From=%2B14158675310&To=%2B18005551212";
    const PUBLISHED: &str = "GvWf1cFY/Q7PnoempGyD5oXAezc=";

    fn sign(url: &str, params: &str) -> String {
        B64.encode(mac(HmacAlgorithm::Sha1, TOKEN.as_bytes(), &[url.as_bytes(), params.as_bytes()]))
    }

    /// More of Twilio's libraries' test vectors: repeated parameters, and a JSON body.
    #[test]
    fn library_vectors_verify() {
        let other =
            b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
        let h = headers(&[("X-Twilio-Signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")]);
        assert_eq!(verify(TOKEN, &h, other, URL), Ok(()));
        let repeated = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234";
        let h = headers(&[("X-Twilio-Signature", "IK+Dwps556ElfBT0I3Rgjkr1wJU=")]);
        assert_eq!(verify(TOKEN, &h, repeated, URL), Ok(()));
        let body = br#"{"property": "value", "boolean": true}"#;
        let sha: String = Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect();
        let url = format!("{URL}&bodySHA256={sha}");
        let h = headers(&[("X-Twilio-Signature", "a9nBmqA0ju/hNViExpshrM61xv4=")]);
        assert_eq!(verify(TOKEN, &h, body, &url), Ok(()));
    }

    #[test]
    fn a_trailing_slash_taken_off_by_routing_still_verifies() {
        let configured = "https://mycompany.com/in/src_1/";
        let h = headers(&[("X-Twilio-Signature", &sign(configured, &sorted_params(FORM)))]);
        assert_eq!(verify(TOKEN, &h, FORM, "https://mycompany.com/in/src_1"), Ok(()));
        assert_eq!(slash_variant("https://h/a?x=1").as_deref(), Some("https://h/a/?x=1"));
        assert_eq!(slash_variant("https://h/a/"), None);
    }

    #[test]
    fn the_published_example_verifies() {
        let h = headers(&[("X-Twilio-Signature", PUBLISHED)]);
        assert_eq!(verify(TOKEN, &h, FORM, URL), Ok(()));
        // The order of the parameters in the body does not matter; their values do.
        let shuffled =
            b"To=%2B18005551212&Digits=1234&CallSid=CA1234567890ABCDE&From=%2B14158675310&Caller=%2B14158675310";
        assert_eq!(verify(TOKEN, &h, shuffled, URL), Ok(()));
        let other_caller =
            b"CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675310&To=%2B18005551212";
        assert_eq!(verify(TOKEN, &h, other_caller, URL), Err(Rejection::SignatureMismatch));
    }

    #[test]
    fn form_bodies_are_signed_with_their_sorted_parameters() {
        let params = "CallSidCA1234567890ABCDECaller+14158675310Digits1234From+14158675310To+18005551212";
        assert_eq!(sorted_params(FORM), params);
        let h = headers(&[("X-Twilio-Signature", &sign(URL, params))]);
        assert_eq!(verify(TOKEN, &h, FORM, URL), Ok(()));
        assert_eq!(verify("other", &h, FORM, URL), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(TOKEN, &h, b"CallSid=CA1&Digits=9", URL), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(TOKEN, &h, FORM, "https://mycompany.com/other"), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(TOKEN, &headers(&[]), FORM, URL), Err(Rejection::MissingHeader(HEADER.into())));
    }

    #[test]
    fn the_default_port_may_be_written_or_not() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let params = sorted_params(FORM);
        let h = headers(&[("X-Twilio-Signature", &sign(with_port, &params))]);
        assert_eq!(verify(TOKEN, &h, FORM, URL), Ok(()));
        let h = headers(&[("X-Twilio-Signature", &sign(URL, &params))]);
        assert_eq!(verify(TOKEN, &h, FORM, with_port), Ok(()));
        assert_eq!(port_variant("http://h:8080/x"), None);
        assert_eq!(port_variant("http://h/x").as_deref(), Some("http://h:80/x"));
    }

    #[test]
    fn json_bodies_are_pinned_by_their_hash() {
        let body = br#"{"type":"com.twilio.messaging.message.delivered"}"#;
        let sha: String = Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect();
        let url = format!("https://mycompany.com/in/src_1?bodySHA256={sha}");
        let h = headers(&[("X-Twilio-Signature", &sign(&url, ""))]);
        assert_eq!(verify(TOKEN, &h, body, &url), Ok(()));
        assert_eq!(verify(TOKEN, &h, br#"{"type":"other"}"#, &url), Err(Rejection::SignatureMismatch));
    }
}
