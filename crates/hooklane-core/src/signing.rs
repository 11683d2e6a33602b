//! Standard Webhooks signatures (the scheme Svix uses), symmetric and asymmetric.
//!
//! signed content = `{webhook-id}.{webhook-timestamp}.{body}`. A symmetric secret
//! (`whsec_` + base64 key) signs it as `v1,` + base64(HMAC-SHA256(key, content)); an
//! asymmetric one (`whsk_` + base64 Ed25519 key pair) as `v1a,` + base64(Ed25519
//! signature), checked by whoever holds its public key (`whpk_` + base64), which cannot
//! sign: the spec's advice where the consumer's copy of the key should not be able to forge
//! webhooks. During secret rotation several signatures are sent, space-separated, and a
//! receiver accepts the request if any of them matches one of its keys.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const SECRET_PREFIX: &str = "whsec_";
/// An asymmetric signing key: Standard Webhooks' prefix for an Ed25519 secret key.
pub const SIGNING_KEY_PREFIX: &str = "whsk_";
/// An asymmetric verifying key: Standard Webhooks' prefix for an Ed25519 public key.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// Bytes of key material in a generated secret (Svix uses 24: 32 base64 characters).
const GENERATED_SECRET_BYTES: usize = 24;
/// Default tolerance between `webhook-timestamp` and the receiver's clock.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;
/// Signatures of a `webhook-signature` header that are looked at; the rest are ignored.
/// hooklane sends at most six (the current secret and five rotated out); the bound keeps a
/// forged header of thousands of `v1a` entries, each an Ed25519 check hashing the whole
/// body, from costing seconds of CPU.
pub const MAX_SIGNATURES_CHECKED: usize = 8;

/// Which kind of secret a new endpoint gets when none is given (Svix's
/// `default_signature_type`, with its names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureType {
    /// `whsec_` secrets, `v1` signatures: what every Standard Webhooks verifier checks.
    #[default]
    Hmac256,
    /// `whsk_` key pairs, `v1a` signatures, the public key (`whpk_`) given to consumers.
    Ed25519,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("secret must be base64, optionally prefixed with whsec_ (or an Ed25519 key pair prefixed with whsk_)")]
    NotBase64,
    #[error("secret must decode to between 24 and 75 bytes")]
    BadLength,
    #[error("a whsk_ key must be base64 of a 32-byte Ed25519 seed or a 64-byte key pair (seed, then its public key)")]
    BadSigningKey,
    #[error("a whpk_ key must be base64 of a 32-byte Ed25519 public key")]
    BadPublicKey,
    #[error("a whpk_ key is a public key, which only verifies: signing needs the whsk_ key of the pair (or a whsec_ secret)")]
    PublicKeyCannotSign,
    #[error("a whsk_ key is the sender's secret key: a receiver checks with its whpk_ public key (hooklane keygen prints both)")]
    SecretKeyToVerify,
}

#[derive(Clone, PartialEq, Eq)]
enum SigningMaterial {
    Hmac(Vec<u8>),
    Ed25519(Box<SigningKey>),
}

/// A webhook signing secret: symmetric (`whsec_`) or an Ed25519 key pair (`whsk_`). `Debug`
/// never prints the key material, so a secret that ends up in a log line or an error stays
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: SigningMaterial,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A new random secret of the given type.
    pub fn generate(kind: SignatureType) -> Self {
        let key = match kind {
            SignatureType::Hmac256 => SigningMaterial::Hmac(random_bytes::<GENERATED_SECRET_BYTES>().to_vec()),
            SignatureType::Ed25519 => SigningMaterial::Ed25519(Box::new(SigningKey::from_bytes(&random_bytes::<32>()))),
        };
        Secret { key }
    }

    /// Parses `whsec_<base64>` (or bare base64), or `whsk_<base64>`: an Ed25519 seed (32
    /// bytes) or key pair (64 bytes: the seed, then its public key, as Svix and libsodium
    /// write it; a public key that is not the seed's is refused).
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        if let Some(b64) = s.strip_prefix(SIGNING_KEY_PREFIX) {
            let bytes = B64.decode(b64).map_err(|_| SecretError::BadSigningKey)?;
            let key = if let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) {
                SigningKey::from_bytes(&seed)
            } else if let Ok(pair) = <[u8; 64]>::try_from(bytes.as_slice()) {
                SigningKey::from_keypair_bytes(&pair).map_err(|_| SecretError::BadSigningKey)?
            } else {
                return Err(SecretError::BadSigningKey);
            };
            return Ok(Secret { key: SigningMaterial::Ed25519(Box::new(key)) });
        }
        if s.starts_with(PUBLIC_KEY_PREFIX) {
            return Err(SecretError::PublicKeyCannotSign);
        }
        let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        let key = B64.decode(b64).map_err(|_| SecretError::NotBase64)?;
        // Svix's bounds, so that any secret it takes (an endpoint migrated from it) is taken.
        if !(24..=75).contains(&key.len()) {
            return Err(SecretError::BadLength);
        }
        Ok(Secret { key: SigningMaterial::Hmac(key) })
    }

    pub fn signature_type(&self) -> SignatureType {
        match self.key {
            SigningMaterial::Hmac(_) => SignatureType::Hmac256,
            SigningMaterial::Ed25519(_) => SignatureType::Ed25519,
        }
    }

    /// The whole secret (`whsec_…`, or the `whsk_…` key pair): what is stored, and what
    /// signs.
    pub fn expose(&self) -> String {
        match &self.key {
            SigningMaterial::Hmac(key) => format!("{SECRET_PREFIX}{}", B64.encode(key)),
            SigningMaterial::Ed25519(key) => format!("{SIGNING_KEY_PREFIX}{}", B64.encode(key.to_keypair_bytes())),
        }
    }

    /// What a receiver needs to check this secret's signatures: the `whsec_` secret itself,
    /// or the `whpk_` public key of a key pair (which cannot sign).
    pub fn verification_key(&self) -> String {
        match &self.key {
            SigningMaterial::Hmac(_) => self.expose(),
            SigningMaterial::Ed25519(key) => {
                format!("{PUBLIC_KEY_PREFIX}{}", B64.encode(key.verifying_key().as_bytes()))
            }
        }
    }

    /// `v1,<base64 signature>` (or `v1a,…`) for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, payload: &[u8]) -> String {
        match &self.key {
            SigningMaterial::Hmac(key) => {
                let mut mac = hmac_sha256(key);
                feed(&mut mac, msg_id, timestamp, payload);
                format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
            }
            SigningMaterial::Ed25519(key) => {
                let signature = key.sign(&signed_content(msg_id, timestamp, payload));
                format!("v1a,{}", B64.encode(signature.to_bytes()))
            }
        }
    }
}

/// The stored secret `stored` as receivers are shown it ([`Secret::verification_key`]);
/// a stored value that does not parse (only a hand-edited database holds one) is shown as
/// it is.
pub fn published_key(stored: &str) -> String {
    Secret::parse(stored).map_or_else(|_| stored.to_string(), |s| s.verification_key())
}

fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

fn feed(mac: &mut HmacSha256, msg_id: &str, timestamp: i64, payload: &[u8]) {
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
}

/// The content an Ed25519 signature covers, in one piece (the signature hashes it twice).
fn signed_content(msg_id: &str, timestamp: i64, payload: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(msg_id.len() + 22 + payload.len());
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(payload);
    content
}

/// The header every delivery carries with [`origin_marker`]: a request that arrives with this
/// server's own marker is one of its deliveries, sent back to it by an endpoint or a
/// destination pointing at its own API or sources, and could post a message per delivery
/// for ever. A delivery of a message that itself came from one of the server's deliveries
/// (through one of its sources) adds [`RELAYED`] to the marker.
pub const ORIGIN_HEADER: &str = "hooklane-origin";

/// What [`ORIGIN_HEADER`] adds to the marker on a delivery of a message made from one of
/// the same server's deliveries: the second turn of what may be a loop.
pub const RELAYED: &str = ";relayed";

/// The value of [`ORIGIN_HEADER`] for the server (or cluster) whose instance secret is
/// `instance_secret`: derived from it one way, so that it tells nothing of the secret, and
/// the same on every node of one database.
pub fn origin_marker(instance_secret: &[u8; 32]) -> String {
    use sha2::Digest;
    let digest = Sha256::new().chain_update(b"hooklane origin marker\0").chain_update(instance_secret).finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
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

/// A key a receiver checks signatures with: a `whsec_` secret (`v1` signatures) or an
/// Ed25519 public key (`v1a`), given as `whpk_`, or derived from a `whsk_` key pair.
#[derive(Clone, PartialEq, Eq)]
pub enum VerifyKey {
    Hmac(Vec<u8>),
    Ed25519(VerifyingKey),
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyKey::Hmac(_) => f.write_str("VerifyKey::Hmac(<redacted>)"),
            VerifyKey::Ed25519(key) => {
                write!(f, "VerifyKey::Ed25519({PUBLIC_KEY_PREFIX}{})", B64.encode(key.as_bytes()))
            }
        }
    }
}

impl VerifyKey {
    /// Parses `whpk_<base64>`, or a `whsec_` secret. A `whsk_` key is refused: a receiver
    /// holding the sender's secret key is what asymmetric signatures exist to avoid.
    pub fn parse(s: &str) -> Result<Self, SecretError> {
        if s.starts_with(SIGNING_KEY_PREFIX) {
            return Err(SecretError::SecretKeyToVerify);
        }
        match s.strip_prefix(PUBLIC_KEY_PREFIX) {
            Some(b64) => {
                let bytes = B64.decode(b64).map_err(|_| SecretError::BadPublicKey)?;
                let bytes = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| SecretError::BadPublicKey)?;
                // Small-order points are no keys anyone signs with; `verify_strict` would
                // refuse every signature under them anyway.
                let key = VerifyingKey::from_bytes(&bytes).map_err(|_| SecretError::BadPublicKey)?;
                if key.is_weak() {
                    return Err(SecretError::BadPublicKey);
                }
                Ok(VerifyKey::Ed25519(key))
            }
            None => Secret::parse(s).map(|secret| VerifyKey::from(&secret)),
        }
    }
}

impl From<&Secret> for VerifyKey {
    fn from(secret: &Secret) -> Self {
        match &secret.key {
            SigningMaterial::Hmac(key) => VerifyKey::Hmac(key.clone()),
            SigningMaterial::Ed25519(key) => VerifyKey::Ed25519(key.verifying_key()),
        }
    }
}

/// Checks a received webhook against one or more keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<VerifyKey>,
    tolerance_secs: i64,
}

impl Verifier {
    pub fn new(keys: Vec<VerifyKey>) -> Self {
        Verifier { keys, tolerance_secs: DEFAULT_TOLERANCE_SECS }
    }

    pub fn with_tolerance(mut self, secs: i64) -> Self {
        self.tolerance_secs = secs;
        self
    }

    /// Verifies the three Standard Webhooks headers against the raw body, with `now` in
    /// unix seconds. `v1` signatures are checked against the `whsec_` keys, compared in
    /// constant time; `v1a` ones against the Ed25519 keys, with strict verification (no
    /// malleable or small-order signatures). Only the first [`MAX_SIGNATURES_CHECKED`]
    /// signatures of the header are looked at.
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
        // (Saturating: `now` and the tolerance may come from a command line.)
        let tolerance = self.tolerance_secs.max(0);
        if ts < now.saturating_sub(tolerance) {
            return Err(VerifyError::TimestampTooOld);
        }
        if ts > now.saturating_add(tolerance) {
            return Err(VerifyError::TimestampTooNew);
        }
        let mut content = None;
        for key in &self.keys {
            let matches = |version: &str, check: &mut dyn FnMut(&[u8]) -> bool| {
                signature.split(' ').take(MAX_SIGNATURES_CHECKED).any(|candidate| match candidate.split_once(',') {
                    Some((v, b64)) if v == version => B64.decode(b64).is_ok_and(|given| check(&given)),
                    _ => false,
                })
            };
            let matched = match key {
                VerifyKey::Hmac(secret) => {
                    let mut mac = hmac_sha256(secret);
                    feed(&mut mac, msg_id, ts, payload);
                    let expected = mac.finalize().into_bytes();
                    matches("v1", &mut |given| bool::from(given.ct_eq(expected.as_slice())))
                }
                VerifyKey::Ed25519(public) => {
                    let content = content.get_or_insert_with(|| signed_content(msg_id, ts, payload));
                    matches("v1a", &mut |given| {
                        <[u8; 64]>::try_from(given).is_ok_and(|bytes| {
                            public.verify_strict(content, &ed25519_dalek::Signature::from_bytes(&bytes)).is_ok()
                        })
                    })
                }
            };
            if matched {
                return Ok(());
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
        let v = Verifier::new(vec![VerifyKey::parse(SECRET).unwrap()]);
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
        // Extreme clocks and tolerances (a command line's) answer, and do not overflow.
        let wide = Verifier::new(vec![VerifyKey::parse(SECRET).unwrap()]).with_tolerance(i64::MAX);
        assert_eq!(wide.verify(Some(MSG_ID), Some("1614265330"), Some(SIG), PAYLOAD.as_bytes(), 0), Ok(()));
        assert_eq!(
            wide.verify(Some(MSG_ID), Some("1614265330"), Some(SIG), PAYLOAD.as_bytes(), i64::MIN),
            Err(VerifyError::TimestampTooNew)
        );
        assert_eq!(
            v.verify(Some(MSG_ID), Some("1614265330"), Some(SIG), PAYLOAD.as_bytes(), i64::MAX),
            Err(VerifyError::TimestampTooOld)
        );
        let negative = Verifier::new(vec![VerifyKey::parse(SECRET).unwrap()]).with_tolerance(-5);
        assert_eq!(negative.verify(Some(MSG_ID), Some("1614265330"), Some(SIG), PAYLOAD.as_bytes(), TS), Ok(()));
    }

    #[test]
    fn secrets_parse_and_hide() {
        assert_eq!(Secret::parse("whsec_!!!"), Err(SecretError::NotBase64));
        assert_eq!(Secret::parse("whsec_AAAA"), Err(SecretError::BadLength));
        // Svix takes 24 to 75 bytes.
        for (bytes, taken) in [(23, false), (24, true), (64, true), (75, true), (76, false)] {
            let secret = format!("whsec_{}", B64.encode(vec![7u8; bytes]));
            assert_eq!(Secret::parse(&secret).is_ok(), taken, "{bytes} bytes");
        }
        let g = Secret::generate(SignatureType::Hmac256);
        assert!(g.expose().starts_with("whsec_"));
        assert_eq!(Secret::parse(&g.expose()).unwrap(), g);
        assert_eq!(format!("{g:?}"), "Secret(<redacted>)");
        let header = signature_header([&g, &Secret::parse(SECRET).unwrap()], MSG_ID, TS, PAYLOAD.as_bytes());
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.ends_with(SIG));
    }

    // Ed25519 vectors made outside this code, with Python's `cryptography`: the seed is the
    // bytes 1..=32; the signature is of the published example's content above.
    const SEED: &str = "whsk_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    const PAIR: &str = "whsk_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB5tVYuj+ZU+UB4sRLoqYunkB+FOuaVvtfg45ELrQSWZA==";
    const PUBLIC: &str = "whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=";
    const SIG_V1A: &str =
        "v1a,OVJuLC0iOuaBuQulpz9A/zDgvqV8z8miLUJk2j15ZMONwDNhOvPJ3rO4owAHFyjFq80+pUUjrNfTHAZs1RQnDw==";

    #[test]
    fn ed25519_keys_sign_v1a_and_publish_their_public_key() {
        for given in [SEED, PAIR] {
            let s = Secret::parse(given).unwrap();
            assert_eq!(s.signature_type(), SignatureType::Ed25519);
            assert_eq!(s.sign(MSG_ID, TS, PAYLOAD.as_bytes()), SIG_V1A);
            // Stored as the key pair whatever form it came in; shown as the public key.
            assert_eq!(s.expose(), PAIR);
            assert_eq!(s.verification_key(), PUBLIC);
            assert_eq!(published_key(given), PUBLIC);
            assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        }
        // The symmetric secret is its own verification key.
        assert_eq!(published_key(SECRET), SECRET);
        let g = Secret::generate(SignatureType::Ed25519);
        assert!(g.expose().starts_with(SIGNING_KEY_PREFIX) && g.verification_key().starts_with(PUBLIC_KEY_PREFIX));
        assert_eq!(Secret::parse(&g.expose()).unwrap(), g);
        assert_ne!(g, Secret::generate(SignatureType::Ed25519));
    }

    #[test]
    fn ed25519_keys_are_checked_on_the_way_in() {
        assert_eq!(Secret::parse(PUBLIC), Err(SecretError::PublicKeyCannotSign));
        assert_eq!(Secret::parse("whsk_AAAA"), Err(SecretError::BadSigningKey));
        assert_eq!(Secret::parse("whsk_!!"), Err(SecretError::BadSigningKey));
        // A key pair whose second half is not the seed's public key.
        let mut pair = B64.decode(&PAIR[5..]).unwrap();
        pair[63] ^= 1;
        assert_eq!(Secret::parse(&format!("whsk_{}", B64.encode(&pair))), Err(SecretError::BadSigningKey));
        assert_eq!(VerifyKey::parse("whpk_AAAA"), Err(SecretError::BadPublicKey));
        // The identity point: a small-order key no one signs with.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(VerifyKey::parse(&format!("whpk_{}", B64.encode(identity))), Err(SecretError::BadPublicKey));
        assert_eq!(VerifyKey::parse(SEED), Err(SecretError::SecretKeyToVerify));
        assert_eq!(VerifyKey::parse(PAIR), Err(SecretError::SecretKeyToVerify));
        assert!(matches!(VerifyKey::parse(PUBLIC), Ok(VerifyKey::Ed25519(_))));
    }

    #[test]
    fn v1a_signatures_verify_only_under_their_public_key() {
        let ts = "1614265330";
        let v = Verifier::new(vec![VerifyKey::parse(PUBLIC).unwrap()]);
        assert_eq!(v.verify(Some(MSG_ID), Some(ts), Some(SIG_V1A), PAYLOAD.as_bytes(), TS), Ok(()));
        // Beside an HMAC signature of a rotated-out secret, in either order.
        let both = format!("{SIG} {SIG_V1A}");
        assert_eq!(v.verify(Some(MSG_ID), Some(ts), Some(&both), PAYLOAD.as_bytes(), TS), Ok(()));
        // A changed body, id or timestamp, or a tampered signature, fails.
        assert_eq!(v.verify(Some(MSG_ID), Some(ts), Some(SIG_V1A), b"{\"test\": 1}", TS), Err(VerifyError::NoMatch));
        assert_eq!(
            v.verify(Some("msg_other"), Some(ts), Some(SIG_V1A), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            v.verify(Some(MSG_ID), Some("1614265331"), Some(SIG_V1A), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::NoMatch)
        );
        let mut raw = B64.decode(&SIG_V1A[4..]).unwrap();
        raw[10] ^= 1;
        let tampered = format!("v1a,{}", B64.encode(&raw));
        assert_eq!(
            v.verify(Some(MSG_ID), Some(ts), Some(&tampered), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::NoMatch)
        );
        // The same bytes under the other scheme's label are not taken for it.
        let relabelled = SIG_V1A.replacen("v1a,", "v1,", 1);
        assert_eq!(
            v.verify(Some(MSG_ID), Some(ts), Some(&relabelled), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::NoMatch)
        );
        // An HMAC key does not take a v1a signature, nor another pair's public key.
        let hmac = Verifier::new(vec![VerifyKey::parse(SECRET).unwrap()]);
        assert_eq!(
            hmac.verify(Some(MSG_ID), Some(ts), Some(SIG_V1A), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::NoMatch)
        );
        let other = Secret::generate(SignatureType::Ed25519);
        let other = Verifier::new(vec![VerifyKey::from(&other)]);
        assert_eq!(
            other.verify(Some(MSG_ID), Some(ts), Some(SIG_V1A), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::NoMatch)
        );
        // A header signed by both kinds of secret verifies under either key.
        let pair = Secret::parse(PAIR).unwrap();
        let header = signature_header([&Secret::parse(SECRET).unwrap(), &pair], MSG_ID, TS, PAYLOAD.as_bytes());
        assert_eq!(header, format!("{SIG} {SIG_V1A}"));
        assert_eq!(hmac.verify(Some(MSG_ID), Some(ts), Some(&header), PAYLOAD.as_bytes(), TS), Ok(()));
        // Only the first signatures of a header are looked at: the right one past them
        // does not count.
        let padded = |n: usize| format!("{}{SIG_V1A}", "v1a,AAAA ".repeat(n));
        let checked = MAX_SIGNATURES_CHECKED - 1;
        assert_eq!(v.verify(Some(MSG_ID), Some(ts), Some(&padded(checked)), PAYLOAD.as_bytes(), TS), Ok(()));
        assert_eq!(
            v.verify(Some(MSG_ID), Some(ts), Some(&padded(checked + 1)), PAYLOAD.as_bytes(), TS),
            Err(VerifyError::NoMatch)
        );
    }
}

#[cfg(test)]
mod shared_vectors {
    use super::*;

    /// The project's shared test vectors: every vector must sign and verify exactly as given.
    /// The repository keeps a copy (`testdata/standard-webhooks.json`), read always; the
    /// shared folder beside the repository, where the project keeps them, is read too when
    /// it is there (a clone alone on another machine does not have it).
    #[test]
    fn shared_standard_webhooks_vectors() {
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let kept = here.join("testdata/standard-webhooks.json");
        let mut texts = vec![std::fs::read_to_string(&kept).unwrap_or_else(|e| panic!("{}: {e}", kept.display()))];
        texts.extend(std::fs::read_to_string(here.join("../../../shared/vectors/standard-webhooks.json")).ok());
        let vectors: Vec<serde_json::Value> =
            texts.iter().flat_map(|t| serde_json::from_str::<Vec<_>>(t).expect("vectors are JSON")).collect();
        assert!(!vectors.is_empty());
        for v in vectors {
            let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("vector field {k}")).to_string();
            let secret = Secret::parse(&field("secret")).expect("vector secret");
            let ts = v["timestamp"].as_i64().expect("vector timestamp");
            let (id, payload, sig) = (field("msg_id"), field("payload"), field("signature"));
            assert_eq!(secret.sign(&id, ts, payload.as_bytes()), sig);
            let verifier = Verifier::new(vec![VerifyKey::from(&secret)]);
            assert_eq!(verifier.verify(Some(&id), Some(&ts.to_string()), Some(&sig), payload.as_bytes(), ts), Ok(()));
        }
    }
}
