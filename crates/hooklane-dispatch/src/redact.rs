//! Credentials kept out of the attempt log, which tokens that may not see them read: what a
//! receiver, an authorization server or a transformation's error echoes of what it got.

use hooklane_core::model::Endpoint;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Shortest credential [`redact`] looks for: shorter values (`1`, `true`) are too likely to
/// be a response's own text.
pub(crate) const MIN_REDACTED: usize = 8;

/// The shortest start of a credential taken for one at the end of a text cut short.
const MIN_CUT: usize = 4;

const REDACTED: &str = "[redacted]";

/// What JavaScript's `encodeURIComponent` leaves as it is.
const URI_COMPONENT: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'!').remove(b'~').remove(b'*').remove(b'\'');

/// Replaces in `text` every value that is a credential the endpoint sends: its custom
/// headers' values (and what follows a scheme in them), its transformation's variables,
/// its URL's password (as written, as sent, and as the Basic credentials it is sent in),
/// its OAuth client secret, refresh token and JWT secret (and the Basic credentials of the
/// token request), and the OAuth `bearer` token sent; each of at least [`MIN_REDACTED`]
/// bytes, as written and as an echo writes it again (percent-encoded in a URL, escaped in
/// JSON). `cut`: the text was cut at a length limit, where a credential may have been cut
/// in two: a start of one ending the text is redacted too. Nothing is looked for when the
/// endpoint has none (the common case costs a few checks).
pub(crate) fn redact(text: &mut String, endpoint: &Endpoint, bearer: Option<&str>, cut: bool) {
    if text.len() < MIN_CUT {
        return;
    }
    let raw = credentials(endpoint, bearer);
    if raw.is_empty() {
        return;
    }
    let mut forms: Vec<String> =
        raw.iter().flat_map(|s| written_forms(s)).filter(|s| s.len() >= MIN_REDACTED).collect();
    // Longest first, so that a credential holding another is replaced whole.
    forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
    forms.dedup();
    for form in &forms {
        if text.contains(form.as_str()) {
            *text = text.replace(form.as_str(), REDACTED);
        }
    }
    if cut {
        redact_cut_end(text, &forms);
    }
}

/// The endpoint's credentials as it sends them (see [`redact`]).
fn credentials(endpoint: &Endpoint, bearer: Option<&str>) -> Vec<String> {
    let variables = endpoint.transformation.iter().flat_map(|t| t.variables.values().cloned());
    // A header's value, and its credential after a scheme (`Bearer abc…`: the token alone).
    let headers = endpoint
        .headers
        .values()
        .flat_map(|v| [v.clone(), v.rsplit_once(' ').map_or(String::new(), |(_, t)| t.to_string())]);
    let oauth = endpoint.oauth.iter().flat_map(|o| o.credentials());
    headers
        .chain(variables)
        .chain(url_credentials(&endpoint.url))
        .chain(oauth)
        .chain(bearer.map(str::to_string))
        .filter(|s| s.len() >= MIN_REDACTED)
        .collect()
}

/// The URL's password, as written (percent-encoded) and as sent, and the Basic credentials
/// it is sent as (reqwest decodes the user information first); without a password, the
/// user name, which is then the credential (a key sent as the Basic user name). Parsed only
/// when it may have one: this runs for every attempt.
fn url_credentials(url: &str) -> Vec<String> {
    if !url.contains('@') {
        return Vec::new();
    }
    let Ok(u) = reqwest::Url::parse(url) else { return Vec::new() };
    use base64::Engine;
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = decode(u.username());
    let (written, password) = match u.password() {
        Some(written) => (written.to_string(), decode(written)),
        None if !user.is_empty() => (u.username().to_string(), String::new()),
        None => return Vec::new(),
    };
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let secret = if password.is_empty() { user } else { password };
    vec![written, secret, basic]
}

/// `secret` as written, and as an echo may write it again: percent-encoded (every byte but
/// letters and digits, as `encodeURIComponent` does, or as a form body writes it, which is
/// how an OAuth token request sends a client secret or refresh token), and escaped inside a JSON string
/// (with or without its `/` escaped). One of letters and digits only, as most tokens are,
/// is written the same in each: itself alone (this runs for every attempt of an endpoint
/// with credentials).
fn written_forms(secret: &str) -> Vec<String> {
    if secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return vec![secret.to_string()];
    }
    let json = serde_json::to_string(secret).map(|q| q[1..q.len() - 1].to_string()).unwrap_or_default();
    vec![
        utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string(),
        utf8_percent_encode(secret, URI_COMPONENT).to_string(),
        form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        json.replace('/', "\\/"),
        json,
        secret.to_string(),
    ]
}

/// Redacts the start of a credential (of at least [`MIN_CUT`] bytes) that ends `text`.
fn redact_cut_end(text: &mut String, forms: &[String]) {
    for form in forms {
        for len in (MIN_CUT..form.len()).rev() {
            if form.is_char_boundary(len) && text.ends_with(&form[..len]) {
                text.truncate(text.len() - len);
                text.push_str(REDACTED);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint_with(variables: &[(&str, &str)]) -> Endpoint {
        let mut endpoint = crate::tokens::tests::endpoint("ep_1", 1);
        endpoint.transformation = Some(hooklane_core::model::Transformation {
            code: None,
            enabled: true,
            variables: variables.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            updated_at: endpoint.updated_at,
        });
        endpoint
    }

    /// A variable echoed percent-encoded (in a URL), JSON-escaped, or cut short at the end
    /// of a body kept up to a limit, is redacted as it is written as it is.
    #[test]
    fn credentials_are_redacted_as_echoes_write_them() {
        let endpoint = endpoint_with(&[
            ("apiKey", "sk+live/ABC=123456"),
            ("quoted", "say \"hi\" now"),
            ("clientSecret", "Xy8Q~Ab.cd-ABC 1"),
        ]);
        for echo in [
            "key=sk+live/ABC=123456",
            "/echo?key=sk%2Blive%2FABC%3D123456",
            // As a form body writes it (`~` encoded, `.` and `-` not; spaces as `+`).
            "client_secret=Xy8Q%7EAb.cd-ABC+1",
            r#"{"key":"sk+live\/ABC=123456"}"#,
            r#"{"q":"say \"hi\" now"}"#,
        ] {
            let mut text = echo.to_string();
            redact(&mut text, &endpoint, None, false);
            assert!(text.contains(REDACTED) && !text.contains("ABC") && !text.contains("hi\\\""), "{echo}: {text}");
        }
        let mut cut = "the key was sk+live/AB".to_string();
        redact(&mut cut, &endpoint, None, true);
        assert_eq!(cut, "the key was [redacted]");
        let mut whole = "the key was sk+live/AB".to_string();
        redact(&mut whole, &endpoint, None, false);
        assert_eq!(whole, "the key was sk+live/AB", "not cut: a text's own end");
    }
}
