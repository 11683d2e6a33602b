//! The message payloads: JSON objects of a chosen size, each carrying its sequence number.

use bytes::Bytes;

const PREFIX: &str = r#"{"seq":"#;
const MIDDLE: &str = r#","pad":""#;
const SUFFIX: &str = r#""}"#;

/// `{"seq":N,"pad":"xxxx"}` padded to `size` bytes (or as small as it gets with no padding).
pub fn build(seq: usize, size: usize) -> Bytes {
    let seq = seq.to_string();
    let fixed = PREFIX.len() + seq.len() + MIDDLE.len() + SUFFIX.len();
    let pad = size.saturating_sub(fixed);
    let mut s = String::with_capacity(fixed + pad);
    s.push_str(PREFIX);
    s.push_str(&seq);
    s.push_str(MIDDLE);
    s.push_str(&"x".repeat(pad));
    s.push_str(SUFFIX);
    Bytes::from(s)
}

pub fn build_all(n: usize, size: usize) -> Vec<Bytes> {
    (0..n).map(|seq| build(seq, size)).collect()
}

/// Event type of the measured messages.
pub const MEASURED: &str = "bench.event";
/// Event type of the backlog messages (sent to an endpoint that is down).
pub const BACKLOG: &str = "bench.backlog";

/// The body of `POST /api/v1/app/{app}/msg/` carrying `payload` as a message of `event_type`.
pub fn typed_message_body(event_type: &str, payload: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(payload.len() + 48);
    body.extend_from_slice(br#"{"eventType":""#);
    body.extend_from_slice(event_type.as_bytes());
    body.extend_from_slice(br#"","payload":"#);
    body.extend_from_slice(payload);
    body.push(b'}');
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size_and_is_json() {
        for (seq, size) in [(0, 256), (12345, 256), (7, 1024), (99, 10)] {
            let p = build(seq, size);
            if size >= 30 {
                assert_eq!(p.len(), size);
            }
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["seq"], seq);
            let body: serde_json::Value = serde_json::from_slice(&typed_message_body(MEASURED, &p)).unwrap();
            assert_eq!(body["eventType"], MEASURED);
            assert_eq!(body["payload"]["seq"], seq);
        }
    }
}
