//! Twitch EventSub: `Twitch-Eventsub-Message-Signature: sha256=<hex HMAC-SHA256(secret,
//! message id + timestamp + body)>`, with `Twitch-Eventsub-Message-Id` and
//! `Twitch-Eventsub-Message-Timestamp` (RFC 3339). Twitch asks receivers to refuse messages
//! more than 10 minutes old, and ids seen before (a retry keeps its id).
//!
//! When a subscription is created, Twitch sends a signed `webhook_callback_verification`
//! message and expects its `challenge` back, as the whole body, in plain text
//! ([`handshake`]).

use chrono::DateTime;

use super::hmac_body::{mac, matches};
use super::{header, Encoding, Headers, HmacAlgorithm, Rejection};

pub const SIGNATURE: &str = "twitch-eventsub-message-signature";
pub const ID: &str = "twitch-eventsub-message-id";
pub const TIMESTAMP: &str = "twitch-eventsub-message-timestamp";
pub const MESSAGE_TYPE: &str = "twitch-eventsub-message-type";
pub const SUBSCRIPTION_TYPE: &str = "twitch-eventsub-subscription-type";
/// How far a message's timestamp may be from now, either way (Twitch's own advice).
pub const TOLERANCE_SECS: i64 = 10 * 60;

pub fn verify(secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    let get = |name: &str| header(headers, name).ok_or_else(|| Rejection::MissingHeader(name.to_string()));
    let (signature, id, timestamp) = (get(SIGNATURE)?, get(ID)?, get(TIMESTAMP)?);
    let at = DateTime::parse_from_rfc3339(timestamp.trim())
        .map_err(|_| Rejection::Malformed(TIMESTAMP.to_string()))?
        .timestamp();
    if at < now - TOLERANCE_SECS {
        return Err(Rejection::TimestampTooOld);
    }
    if at > now + TOLERANCE_SECS {
        return Err(Rejection::TimestampTooNew);
    }
    let given = signature.trim().strip_prefix("sha256=").ok_or_else(|| Rejection::Malformed(SIGNATURE.to_string()))?;
    let expected = mac(HmacAlgorithm::Sha256, secret.as_bytes(), &[id.as_bytes(), timestamp.as_bytes(), body]);
    if matches(given, Encoding::Hex, &expected) {
        Ok(())
    } else {
        Err(Rejection::SignatureMismatch)
    }
}

/// The challenge to answer, when the (verified) request is Twitch's check of a new
/// subscription. Told by the signed body (a `challenge`, and no `event`), not by
/// `Twitch-Eventsub-Message-Type`, which the signature does not cover: a captured check
/// sent again labelled a notification (its id never stored, as a check's is not) would
/// otherwise be forwarded as one.
pub fn handshake(json: &serde_json::Value) -> Option<String> {
    if json.get("event").is_some() {
        return None;
    }
    json.get("challenge")?.as_str().map(str::to_string)
}

/// A notification's subscription type (`channel.follow`…), or `revocation` for Twitch's
/// word that a subscription ended: from the signed body (a notification carries an `event`,
/// a revocation only its `subscription`), not from the headers naming them, which the
/// signature does not cover.
pub fn event_type(json: &serde_json::Value) -> Option<String> {
    if json.get("event").is_some() {
        return json.get("subscription")?.get("type")?.as_str().map(str::to_string);
    }
    (json.get("challenge").is_none() && json.get("subscription").is_some()).then(|| "revocation".to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    const SECRET: &str = "twitch_eventsub_secret_0123";
    const ID_VALUE: &str = "befa7b53-d79d-478f-86b9-120f112b044e";
    const TS: &str = "2023-11-16T10:11:12.634234626Z";
    const AT: i64 = 1_700_129_472;
    const BODY: &[u8] = br#"{"subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","type":"channel.follow","version":"2","status":"enabled"},"event":{"user_id":"1337","user_login":"awesome_user","broadcaster_user_id":"12826"}}"#;
    // python3: hmac.new(SECRET, ID + TS + BODY, hashlib.sha256).hexdigest()
    const SIG: &str = "sha256=94966469bbb8f5607f6f3f4c9971ccdfda637983e575e0715529c25a21263313";

    fn signed(sig: &str, ts: &str) -> Headers {
        headers(&[
            ("Twitch-Eventsub-Message-Id", ID_VALUE),
            ("Twitch-Eventsub-Message-Timestamp", ts),
            ("Twitch-Eventsub-Message-Signature", sig),
            ("Twitch-Eventsub-Message-Type", "notification"),
            ("Twitch-Eventsub-Subscription-Type", "channel.follow"),
        ])
    }

    #[test]
    fn signed_messages_within_ten_minutes() {
        assert_eq!(verify(SECRET, &signed(SIG, TS), BODY, AT + 599), Ok(()));
        assert_eq!(verify(SECRET, &signed(SIG, TS), BODY, AT - 599), Ok(()));
        assert_eq!(verify(SECRET, &signed(SIG, TS), BODY, AT + 601), Err(Rejection::TimestampTooOld));
        assert_eq!(verify(SECRET, &signed(SIG, TS), BODY, AT - 601), Err(Rejection::TimestampTooNew));
        let json: serde_json::Value = serde_json::from_slice(BODY).expect("json");
        assert_eq!(event_type(&json), Some("channel.follow".into()));
    }

    #[test]
    fn forged_or_malformed() {
        assert_eq!(verify("another_secret_0123", &signed(SIG, TS), BODY, AT), Err(Rejection::SignatureMismatch));
        // The id is signed: the same signature under another id does not verify.
        let mut other_id = signed(SIG, TS);
        other_id.insert(ID.into(), "another-id".into());
        assert_eq!(verify(SECRET, &other_id, BODY, AT), Err(Rejection::SignatureMismatch));
        assert!(matches!(verify(SECRET, &signed(&SIG[7..], TS), BODY, AT), Err(Rejection::Malformed(_))));
        assert!(matches!(verify(SECRET, &signed(SIG, "1700129472"), BODY, AT), Err(Rejection::Malformed(_))));
        assert_eq!(verify(SECRET, &headers(&[]), BODY, AT), Err(Rejection::MissingHeader(SIGNATURE.into())));
    }

    #[test]
    fn a_subscriptions_check_is_answered_with_its_challenge() {
        let check = serde_json::json!({ "challenge": "pogchamp-kappa-360noscope-vohiyo", "subscription": {} });
        // Told by the body, whatever the (unsigned) message type says: a check relabelled a
        // notification is still only answered, never forwarded.
        assert_eq!(handshake(&check), Some("pogchamp-kappa-360noscope-vohiyo".into()));
        assert_eq!(event_type(&check), None);
        let notification: serde_json::Value = serde_json::from_slice(BODY).expect("json");
        assert_eq!(handshake(&notification), None, "a notification is forwarded");
        let revocation =
            serde_json::json!({ "subscription": { "type": "channel.follow", "status": "authorization_revoked" } });
        assert_eq!((handshake(&revocation), event_type(&revocation)), (None, Some("revocation".into())));
    }
}
