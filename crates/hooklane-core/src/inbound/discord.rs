//! Discord: `X-Signature-Ed25519: <hex Ed25519 signature of timestamp + body>` with
//! `X-Signature-Timestamp: <unix seconds>`, checked with the application's public key (the
//! only provider here that signs with a key pair: nothing secret is configured).
//!
//! Two kinds of requests arrive this way, and Discord wants each answered its own way
//! within 3 seconds:
//! - **Interactions** (slash commands, buttons, modals): a `PING` (type 1) is answered
//!   `{"type": 1}` and not forwarded ([`handshake`]), as is an autocomplete (with no
//!   choices: it can be answered only at once); commands, components and modals are
//!   forwarded and answered with a deferred response ([`acknowledgement`]): Discord shows
//!   the user that the app is working, and the service that receives the interaction
//!   answers through Discord's API with the interaction's token (valid 15 minutes).
//! - **Webhook events** (`APPLICATION_AUTHORIZED`, `ENTITLEMENT_CREATE`…): a `PING` (type 0)
//!   is answered 204 and not forwarded; an event (type 1, with `event`) is forwarded and
//!   answered 204.

use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{json, Value};

use super::{decode_hex, fresh, header, Handshake, Headers, Rejection};

pub const SIGNATURE: &str = "x-signature-ed25519";
pub const TIMESTAMP: &str = "x-signature-timestamp";

/// The application's public key, from its 64 hex characters.
pub fn public_key(hex: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = decode_hex(hex)?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

pub fn verify(key: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), Rejection> {
    let get = |name: &str| header(headers, name).ok_or_else(|| Rejection::MissingHeader(name.to_string()));
    let (signature, timestamp) = (get(SIGNATURE)?, get(TIMESTAMP)?);
    fresh(timestamp, TIMESTAMP, now)?;
    // Lower-case only, as Discord writes it: the header is the deduplication key, and one
    // signature written two ways would pass twice.
    if signature.trim().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(Rejection::Malformed(SIGNATURE.to_string()));
    }
    let signature: [u8; 64] = decode_hex(signature)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Rejection::Malformed(SIGNATURE.to_string()))?;
    // Checked when the source was saved; a key that no longer parses verifies nothing.
    let key = public_key(key).ok_or(Rejection::SignatureMismatch)?;
    let signed = [timestamp.as_bytes(), body].concat();
    // Strict: no signature a second encoding of which would also verify.
    key.verify_strict(&signed, &Signature::from_bytes(&signature)).map_err(|_| Rejection::SignatureMismatch)
}

/// Whether the body is a webhook event (or its `PING`) rather than an interaction.
fn is_webhook_event(json: &Value) -> bool {
    json.get("type").and_then(Value::as_u64) == Some(0) || json.get("event").is_some()
}

/// The answer to a request that is not forwarded: a `PING`, or an autocomplete (which can
/// be answered only at once, so no service could answer it later): no choices.
pub fn handshake(json: &Value) -> Option<Handshake> {
    match json.get("type")?.as_u64()? {
        0 if is_webhook_event(json) => Some(Handshake::NoContent),
        1 if !is_webhook_event(json) => Some(Handshake::Json(json!({ "type": 1 }))),
        4 if !is_webhook_event(json) => Some(Handshake::Json(json!({ "type": 8, "data": { "choices": [] } }))),
        _ => None,
    }
}

/// What Discord is answered for a request that is forwarded (see the module's comment).
pub fn acknowledgement(json: &Value) -> Option<Handshake> {
    if is_webhook_event(json) {
        return Some(Handshake::NoContent);
    }
    let answer = match json.get("type")?.as_u64()? {
        // A command or a modal: "thinking…" until the service answers.
        2 | 5 => json!({ "type": 5 }),
        // A button or a select menu: the message is left as it is until the service edits it.
        3 => json!({ "type": 6 }),
        _ => return None,
    };
    Some(Handshake::Json(answer))
}

/// `APPLICATION_AUTHORIZED`… for a webhook event; `application_command`, `message_component`
/// or `modal_submit` for an interaction.
pub fn event_type(json: &Value) -> Option<String> {
    if is_webhook_event(json) {
        return json.get("event")?.get("type")?.as_str().map(str::to_string);
    }
    let name = match json.get("type")?.as_u64()? {
        2 => "application_command",
        3 => "message_component",
        5 => "modal_submit",
        _ => return None,
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::headers;
    use super::*;

    // Made with Python's `cryptography`: the key from the seed bytes 1..=32, and its
    // signatures of b"1700000000" + body.
    const KEY: &str = "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664";
    const BODY: &[u8] = br#"{"application_id":"1186035483298123456","id":"1186035490123456789","token":"aW50ZXJhY3Rpb24","type":2,"data":{"name":"deploy","type":1},"version":1}"#;
    const SIG: &str = "edfe12abb7a6a8fc8a68d47129a366505a1ddf199e76400718caccb0885afd4ae1dcb37d8ffc9373de4fac690bc8275ea118b4b4020427e1154537a986a94f0f";
    const PING: &[u8] =
        br#"{"application_id":"1186035483298123456","id":"1186035490000000001","token":"cGluZw","type":1,"version":1}"#;
    const PING_SIG: &str = "2263806b196db3e4c4895632d1d9e6d1e4ee290f07ed3dc734921a32045e7aebf7dab8d3d138ebaf305698fa1e3d5c32ab8a71f2a77855c294745fc506fdb60f";

    fn signed(sig: &str) -> Headers {
        headers(&[("X-Signature-Ed25519", sig), ("X-Signature-Timestamp", "1700000000")])
    }

    #[test]
    fn signed_by_the_applications_key() {
        assert_eq!(verify(KEY, &signed(SIG), BODY, 1_700_000_000 + 60), Ok(()));
        assert_eq!(verify(KEY, &signed(PING_SIG), PING, 1_700_000_000), Ok(()));
        assert_eq!(verify(KEY, &signed(PING_SIG), BODY, 1_700_000_000), Err(Rejection::SignatureMismatch));
        let other_key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
        assert_eq!(verify(other_key, &signed(SIG), BODY, 1_700_000_000), Err(Rejection::SignatureMismatch));
        assert_eq!(verify(KEY, &signed(SIG), BODY, 1_700_000_000 + 301), Err(Rejection::TimestampTooOld));
        assert!(matches!(verify(KEY, &signed(&SIG[2..]), BODY, 1_700_000_000), Err(Rejection::Malformed(_))));
        assert_eq!(verify(KEY, &headers(&[]), BODY, 0), Err(Rejection::MissingHeader(SIGNATURE.into())));
        // One signature has one spelling: upper case or a sign is refused, not a second key.
        let upper = SIG.to_ascii_uppercase();
        assert!(matches!(verify(KEY, &signed(&upper), BODY, 1_700_000_000), Err(Rejection::Malformed(_))));
        // "0a" written "+a" decodes to the same byte.
        let at = (0..SIG.len()).step_by(2).find(|&i| SIG.as_bytes()[i] == b'0').expect("a 0x byte");
        let signed_plus = format!("{}+{}", &SIG[..at], &SIG[at + 1..]);
        assert!(matches!(verify(KEY, &signed(&signed_plus), BODY, 1_700_000_000), Err(Rejection::Malformed(_))));
        assert!(
            public_key(KEY).is_some() && public_key("abcd").is_none() && public_key(&KEY.replace('7', "x")).is_none()
        );
    }

    #[test]
    fn each_kind_of_request_is_answered_as_discord_asks() {
        let ping: Value = serde_json::from_slice(PING).unwrap();
        assert_eq!(handshake(&ping), Some(Handshake::Json(json!({ "type": 1 }))));
        let command: Value = serde_json::from_slice(BODY).unwrap();
        assert_eq!(handshake(&command), None);
        assert_eq!(acknowledgement(&command), Some(Handshake::Json(json!({ "type": 5 }))));
        assert_eq!(event_type(&command), Some("application_command".into()));
        let button = json!({ "type": 3, "id": "1", "token": "t" });
        assert_eq!(acknowledgement(&button), Some(Handshake::Json(json!({ "type": 6 }))));
        let autocomplete = json!({ "type": 4, "id": "1", "token": "t" });
        assert_eq!(handshake(&autocomplete), Some(Handshake::Json(json!({ "type": 8, "data": { "choices": [] } }))));
        let event_ping = json!({ "version": 1, "application_id": "1", "type": 0 });
        assert_eq!(handshake(&event_ping), Some(Handshake::NoContent));
        let event = json!({ "version": 1, "application_id": "1", "type": 1,
                            "event": { "type": "APPLICATION_AUTHORIZED", "timestamp": "2024-10-18T14:42:53.064834", "data": {} } });
        assert_eq!(handshake(&event), None);
        assert_eq!(acknowledgement(&event), Some(Handshake::NoContent));
        assert_eq!(event_type(&event), Some("APPLICATION_AUTHORIZED".into()));
    }
}
