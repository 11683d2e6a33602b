//! Shared secrets sent as they are: Telegram's `X-Telegram-Bot-Api-Secret-Token` (the
//! `secret_token` given to `setWebhook`), GitLab's `X-Gitlab-Token` (a webhook's secret
//! token) and HTTP basic auth.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{header, Headers, Rejection};

pub const TELEGRAM_HEADER: &str = "x-telegram-bot-api-secret-token";
pub const GITLAB_HEADER: &str = "x-gitlab-token";

/// Whether a secret sent as it is equals the one configured, in constant time whatever the
/// lengths: their SHA-256 digests are compared, which are always 32 bytes. Comparing the
/// values themselves answers at once when the lengths differ, which tells whoever times the
/// answers the secret's length.
pub(crate) fn same(given: &[u8], expected: &[u8]) -> bool {
    bool::from(Sha256::digest(given).as_slice().ct_eq(Sha256::digest(expected).as_slice()))
}

pub fn telegram(secret_token: &str, headers: &Headers) -> Result<(), Rejection> {
    header_equals(TELEGRAM_HEADER, secret_token, headers)
}

pub fn gitlab(secret_token: &str, headers: &Headers) -> Result<(), Rejection> {
    header_equals(GITLAB_HEADER, secret_token, headers)
}

/// Header `name` (lower case) holds exactly `expected`, compared in constant time.
fn header_equals(name: &str, expected: &str, headers: &Headers) -> Result<(), Rejection> {
    let given = header(headers, name).ok_or_else(|| Rejection::MissingHeader(name.into()))?;
    if same(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(Rejection::BadCredentials)
    }
}

pub fn basic(username: &str, password: &str, headers: &Headers) -> Result<(), Rejection> {
    let value = header(headers, "authorization").ok_or_else(|| Rejection::MissingHeader("authorization".into()))?;
    let encoded = match value.trim().split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => rest.trim(),
        _ => return Err(Rejection::Malformed("Authorization (expected Basic)".into())),
    };
    let decoded = B64.decode(encoded).map_err(|_| Rejection::Malformed("Authorization (not base64)".into()))?;
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return Err(Rejection::Malformed("Authorization (no user:password)".into()));
    };
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both compared, always, so timing does not tell which one was wrong.
    let user_ok = same(user, username.as_bytes());
    let pass_ok = same(pass, password.as_bytes());
    if user_ok & pass_ok {
        Ok(())
    } else {
        Err(Rejection::BadCredentials)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    /// Equal values match, unequal ones of any length (shorter, longer, empty) do not.
    #[test]
    fn secrets_are_compared_by_their_digests() {
        assert!(same(b"tg_secret-123", b"tg_secret-123"));
        assert!(same(b"", b""));
        assert!(!same(b"tg_secret-124", b"tg_secret-123"));
        assert!(!same(b"tg_secret-12", b"tg_secret-123"));
        assert!(!same(b"tg_secret-1234", b"tg_secret-123"));
        assert!(!same(b"", b"tg_secret-123"));
        assert!(!same(b"tg_secret-123", b""));
    }

    #[test]
    fn telegram_secret_token() {
        let h = headers(&[("X-Telegram-Bot-Api-Secret-Token", "tg_secret-123")]);
        assert_eq!(telegram("tg_secret-123", &h), Ok(()));
        assert_eq!(telegram("tg_secret-124", &h), Err(Rejection::BadCredentials));
        assert_eq!(telegram("tg_secret-12", &h), Err(Rejection::BadCredentials));
        assert_eq!(telegram("x", &headers(&[])), Err(Rejection::MissingHeader(TELEGRAM_HEADER.into())));
    }

    #[test]
    fn gitlab_token() {
        let h = headers(&[("X-Gitlab-Token", "gl-hook-secret")]);
        assert_eq!(gitlab("gl-hook-secret", &h), Ok(()));
        assert_eq!(gitlab("gl-hook-secreT", &h), Err(Rejection::BadCredentials));
        let telegram_named = headers(&[("X-Telegram-Bot-Api-Secret-Token", "gl-hook-secret")]);
        assert_eq!(gitlab("gl-hook-secret", &telegram_named), Err(Rejection::MissingHeader(GITLAB_HEADER.into())));
    }

    #[test]
    fn basic_auth() {
        // python3: base64.b64encode(b"hooklane:p@ss:word") — the password may hold ':'.
        let h = headers(&[("Authorization", "Basic aG9va2xhbmU6cEBzczp3b3Jk")]);
        assert_eq!(basic("hooklane", "p@ss:word", &h), Ok(()));
        assert_eq!(basic("hooklane", "p@ss:wore", &h), Err(Rejection::BadCredentials));
        assert_eq!(basic("other", "p@ss:word", &h), Err(Rejection::BadCredentials));
        let lower = headers(&[("authorization", "basic aG9va2xhbmU6cEBzczp3b3Jk")]);
        assert_eq!(basic("hooklane", "p@ss:word", &lower), Ok(()));
        let bearer = headers(&[("Authorization", "Bearer abc")]);
        assert!(matches!(basic("hooklane", "p", &bearer), Err(Rejection::Malformed(_))));
    }
}
