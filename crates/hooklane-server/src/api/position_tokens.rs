//! Stream positions as clients carry them (a pull's `iterator`, an event stream's `id`):
//! opaque tokens.
//!
//! A store's position grows with every message written to the database, whichever
//! application it belongs to. Handed out as it is, two iterators of one application would
//! tell how many messages every other tenant posted in between (and, on PostgreSQL, how
//! many transactions the database ran). Clients get the position encrypted instead, with
//! AES-256-GCM-SIV under a key derived from the database's instance secret and the
//! application's id as associated data, so that a token
//! - reveals nothing of the position,
//! - cannot be made up or altered (the cipher authenticates it),
//! - is refused by another application, and by another database.
//!
//! The encryption is deterministic (one fixed nonce, which GCM-SIV is built to tolerate:
//! it then reveals only that two tokens hold the same position): a caught-up reader is
//! answered the very iterator it sent.

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hooklane_store::EventPosition;
use sha2::{Digest, Sha256};

/// What the key is derived for (a new purpose of the instance secret takes another label).
const KEY_LABEL: &[u8] = b"hooklane stream position tokens v1";
/// A position's two numbers, 8 bytes each.
const PLAIN: usize = 16;
const TAG: usize = 16;

/// Encrypts and decrypts the positions of one database.
#[derive(Clone)]
pub struct PositionTokens {
    cipher: Aes256GcmSiv,
}

impl PositionTokens {
    pub fn new(instance_secret: &[u8; 32]) -> Self {
        let key = Sha256::new().chain_update(KEY_LABEL).chain_update(instance_secret).finalize();
        PositionTokens { cipher: Aes256GcmSiv::new(&key) }
    }

    /// The token for `position` in the stream of application `app_id` (base64url: it goes
    /// into query strings and SSE ids as it is).
    pub fn encode(&self, app_id: &str, position: EventPosition) -> String {
        let mut sealed = [0u8; PLAIN + TAG];
        let (plain, tag) = sealed.split_at_mut(PLAIN);
        plain[..8].copy_from_slice(&position.major.to_be_bytes());
        plain[8..].copy_from_slice(&position.minor.to_be_bytes());
        // Fails only for messages longer than the cipher's limit (2^36 bytes).
        let sealed_tag = self
            .cipher
            .encrypt_in_place_detached(&Nonce::default(), app_id.as_bytes(), plain)
            .expect("16 bytes are within AES-GCM-SIV's message limit");
        tag.copy_from_slice(&sealed_tag);
        URL_SAFE_NO_PAD.encode(sealed)
    }

    /// The position a token of this application's stream holds; `None` for anything that is
    /// not such a token (malformed, altered, another application's or another database's).
    pub fn decode(&self, app_id: &str, token: &str) -> Option<EventPosition> {
        let mut sealed = [0u8; PLAIN + TAG];
        // A longer token does not fit: decoding into the array fails.
        if URL_SAFE_NO_PAD.decode_slice(token, &mut sealed).ok()? != sealed.len() {
            return None;
        }
        let (plain, tag) = sealed.split_at_mut(PLAIN);
        let tag = Tag::clone_from_slice(tag);
        self.cipher.decrypt_in_place_detached(&Nonce::default(), app_id.as_bytes(), plain, &tag).ok()?;
        let number = |bytes: &[u8]| i64::from_be_bytes(bytes.try_into().unwrap_or_default());
        let position = EventPosition { major: number(&plain[..8]), minor: number(&plain[8..]) };
        (position.major >= 0 && position.minor >= 0).then_some(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(seed: u8) -> PositionTokens {
        PositionTokens::new(&[seed; 32])
    }

    const P: EventPosition = EventPosition { major: 17, minor: 123_456_789 };

    #[test]
    fn a_token_gives_back_its_position_and_is_the_same_each_time() {
        let t = tokens(1);
        let token = t.encode("app_1", P);
        assert_eq!(t.decode("app_1", &token), Some(P));
        assert_eq!(t.encode("app_1", P), token, "deterministic: a caught-up reader keeps its iterator");
        assert_eq!(t.decode("app_1", &t.encode("app_1", EventPosition::START)), Some(EventPosition::START));
    }

    #[test]
    fn a_token_shows_nothing_of_its_position() {
        let t = tokens(1);
        let token = t.encode("app_1", P);
        assert_eq!(token.len(), 43);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
        assert!(!token.contains("123456789") && !token.contains('.'), "{token}");
        // Neighbouring positions give unrelated tokens: no shared prefix to count on.
        let next = t.encode("app_1", EventPosition { minor: P.minor + 1, ..P });
        let shared = token.bytes().zip(next.bytes()).take_while(|(a, b)| a == b).count();
        assert!(shared < 4, "{token} / {next}");
    }

    #[test]
    fn other_applications_databases_and_altered_tokens_are_refused() {
        let t = tokens(1);
        let token = t.encode("app_1", P);
        assert_eq!(t.decode("app_2", &token), None, "another application's");
        assert_eq!(tokens(2).decode("app_1", &token), None, "another database's");
        for i in 0..token.len() {
            let mut altered = token.clone().into_bytes();
            altered[i] = if altered[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(altered).expect("ascii");
            assert_eq!(t.decode("app_1", &altered), None, "altered at {i}: {altered}");
        }
        for bad in ["", "0.5", "nonsense", &token[1..], &format!("{token}A"), &format!("{token}AAAA"), "€"] {
            assert_eq!(t.decode("app_1", bad), None, "{bad}");
        }
    }
}
