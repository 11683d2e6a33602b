//! Standard Webhooks signatures (the scheme Svix uses).
//!
//! signed content = `{webhook-id}.{webhook-timestamp}.{body}`; key = base64-decoded secret
//! (after the `whsec_` prefix); signature = `v1,` + base64(HMAC-SHA256(key, content)).
//! During secret rotation several signatures are sent, space-separated, and a receiver
//! accepts the request if any of them matches one of its secrets.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of key material in a generated secret (Svix uses 24: 32 base64 characters).
const GENERATED_SECRET_BYTES: usize = 24;
/// Default tolerance between `webhook-timestamp` and the receiver's clock.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret must be base64 (optionally prefixed with whsec_)")]
    NotBase64,
    #[error("secret must decode to between 24 and 64 bytes")]
    BadLength,
}

/// A webhook signing secret. `Debug` never prints the key material, so a secret that ends
/// up in a log line or an error stays secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        Secret { key: random_bytes::<GENERATED_SECRET_BYTES>().to_vec() }
    }

    /// Parses `whsec_<base64>` (or bare base64).
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        let key = B64.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::BadLength);
        }
        Ok(Secret { key })
    }

    /// The `whsec_…` form shown to users.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.key))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    /// `v1,<base64 signature>` for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
        let mut mac = self.mac();
        feed(&mut mac, msg_id, timestamp, payload);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

fn feed(mac: &mut HmacSha256, msg_id: &str, timestamp: i64, payload: &[u8]) {
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
}

/// `N` bytes from a cryptographically secure generator (the thread's ChaCha generator,
/// seeded by the operating system): for secrets and keys.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// The `webhook-signature` header value: one signature per currently valid secret.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    msg_id: &str,
    timestamp: i64,
    payload: &[u8],
) -> String {
    let mut out = String::new();
    for secret in secrets {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&secret.sign(msg_id, timestamp, payload));
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not an integer")]
    BadTimestamp,
    #[error("webhook-timestamp is too old")]
    TimestampTooOld,
    #[error("webhook-timestamp is too far in the future")]
    TimestampTooNew,
    #[error("no signature matches")]
    NoMatch,
}

/// Checks a received webhook against one or more secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
    tolerance_secs: i64,
}

impl Verifier {
    pub fn new(secrets: Vec<Secret>) -> Self {
        Verifier { secrets, tolerance_secs: DEFAULT_TOLERANCE_SECS }
    }

    pub fn with_tolerance(mut self, secs: i64) -> Self {
        self.tolerance_secs = secs;
        self
    }

    /// Verifies the three Standard Webhooks headers against the raw body, with `now` in
    /// unix seconds. Signatures are compared in constant time.
    pub fn verify(
        &self,
        msg_id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        payload: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let msg_id = msg_id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
        let timestamp = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
        let signature = signature.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
        let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
        if ts < now - self.tolerance_secs {
            return Err(VerifyError::TimestampTooOld);
        }
        if ts > now + self.tolerance_secs {
            return Err(VerifyError::TimestampTooNew);
        }
        for secret in &self.secrets {
            let mut mac = secret.mac();
            feed(&mut mac, msg_id, ts, payload);
            let expected = mac.finalize().into_bytes();
            for candidate in signature.split(' ') {
                let Some(("v1", b64)) = candidate.split_once(',') else { continue };
                let Ok(given) = B64.decode(b64) else { continue };
                if bool::from(given.as_slice().ct_eq(expected.as_slice())) {
                    return Ok(());
                }
            }
        }
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published Standard Webhooks / Svix example (also in shared/vectors).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const PAYLOAD: &str = "{\"test\": 2432232314}";
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_published_vector() {
        let s = Secret::parse(SECRET).unwrap();
        assert_eq!(s.sign(MSG_ID, TS, PAYLOAD.as_bytes()), SIG);
        assert_eq!(s.expose(), SECRET);
    }

    #[test]
    fn verifies_and_rejects() {
        let v = Verifier::new(vec![Secret::parse(SECRET).unwrap()]);
        let ok = v.verify(Some(MSG_ID), Some("1614265330"), Some(SIG), PAYLOAD.as_bytes(), TS);
        assert_eq!(ok, Ok(()));
        // Rotation: a header with an unknown signature first still matches.
        let rotated = format!("v1,AAAA {SIG}");
        assert_eq!(v.verify(Some(MSG_ID), Some("1614265330"), Some(&rotated), PAYLOAD.as_bytes(), TS), Ok(()));
        assert_eq!(
            v.verify(Some(MSG_ID), Some("1614265330"), Some(SIG), b"{\"test\": 1}", TS),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            v.verify(Some(MSG_ID), Some("1614265330"), Some(SIG), PAYLOAD.as_bytes(), TS + 301),
            Err(VerifyError::TimestampTooOld)
        );
        assert_eq!(
            v.verify(Some(MSG_ID), Some("1614265330"), Some(SIG), PAYLOAD.as_bytes(), TS - 301),
            Err(VerifyError::TimestampTooNew)
        );
        assert_eq!(
            v.verify(None, Some("1"), Some(SIG), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            v.verify(Some(MSG_ID), Some("abc"), Some(SIG), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::BadTimestamp)
        );
    }

    #[test]
    fn secrets_parse_and_hide() {
        assert_eq!(Secret::parse("whsec_!!!"), Err(SecretError::NotBase64));
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::BadLength));
        let g = Secret::generate();
        assert!(g.expose().starts_with("whsec_"));
        assert_eq!(Secret::parse(&g.expose()).unwrap(), g);
        assert_eq!(format!("{g:?}"), "Secret(<redacted>)");
        let header = signature_header([&g, &Secret::parse(SECRET).unwrap()], MSG_ID, TS, PAYLOAD.as_bytes());
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.ends_with(SIG));
    }
}

#[cfg(test)]
mod shared_vectors {
    use super::*;

    /// The project's shared test vectors (`shared/vectors/standard-webhooks.json`, beside
    /// the repository): every vector must sign and verify exactly as given.
    #[test]
    fn shared_standard_webhooks_vectors() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/standard-webhooks.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            // Outside the project's workspace layout (a crate published alone) the file is
            // not there; in CI it must be.
            assert!(std::env::var_os("CI").is_none(), "{} is missing", path.display());
            return;
        };
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).expect("vectors are JSON");
        assert!(!vectors.is_empty());
        for v in vectors {
            let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("vector field {k}")).to_string();
            let secret = Secret::parse(&field("secret")).expect("vector secret");
            let ts = v["timestamp"].as_i64().expect("vector timestamp");
            let (id, payload, sig) = (field("msg_id"), field("payload"), field("signature"));
            assert_eq!(secret.sign(&id, ts, payload.as_bytes()), sig);
            let verifier = Verifier::new(vec![secret]);
            assert_eq!(verifier.verify(Some(&id), Some(&ts.to_string()), Some(&sig), payload.as_bytes(), ts), Ok(()));
        }
    }
}
