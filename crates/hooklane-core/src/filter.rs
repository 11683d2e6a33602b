//! Which endpoints receive which messages.

/// Svix semantics: an endpoint with `filterTypes` receives only those event types; an
/// endpoint with `channels` receives only messages that share at least one channel with it;
/// an endpoint with neither receives everything.
pub fn endpoint_wants(
    filter_types: Option<&[String]>,
    endpoint_channels: Option<&[String]>,
    event_type: &str,
    message_channels: Option<&[String]>,
) -> bool {
    if let Some(types) = filter_types {
        if !types.iter().any(|t| t == event_type) {
            return false;
        }
    }
    if let Some(wanted) = endpoint_channels {
        let Some(given) = message_channels else { return false };
        if !given.iter().any(|c| wanted.contains(c)) {
            return false;
        }
    }
    true
}

/// A message's payload, parsed on first use: most endpoints have no payload filter, and
/// the ones that do share one parse.
pub struct LazyPayload<'a> {
    text: &'a str,
    parsed: Option<serde_json::Value>,
    /// [`LazyPayload::unreadable`], once asked.
    unreadable: Option<bool>,
    /// Steps its payload filters may still take (see
    /// [`crate::rules::payload_filter::MAX_STEPS_PER_PAYLOAD`]).
    filter_steps: usize,
}

impl<'a> LazyPayload<'a> {
    pub fn new(text: &'a str) -> Self {
        LazyPayload {
            text,
            parsed: None,
            unreadable: None,
            filter_steps: crate::rules::payload_filter::MAX_STEPS_PER_PAYLOAD,
        }
    }

    /// Whether its filters have spent the steps they share: those evaluated since matched
    /// nothing.
    pub fn filters_spent(&self) -> bool {
        self.filter_steps == 0
    }

    /// The payload as JSON (see [`payload_json`]).
    pub fn json(&mut self) -> &serde_json::Value {
        self.json_and_filter_steps().0
    }

    /// The payload as JSON, and the steps its filters may still take, borrowed together.
    fn json_and_filter_steps(&mut self) -> (&serde_json::Value, &mut usize) {
        (self.parsed.get_or_insert_with(|| payload_json(self.text)), &mut self.filter_steps)
    }

    /// Whether the payload is JSON that cannot be read as a value (read as `null`): nested
    /// deeper than the reader goes, or holding what JSON's grammar allows and a value cannot
    /// hold (a number past `f64`, `1e400`; a lone surrogate, `"\ud800"`). Only then: a body
    /// that is not JSON at all is `null` with no fields, as ever.
    pub fn unreadable(&mut self) -> bool {
        if let Some(known) = self.unreadable {
            return known;
        }
        let unreadable = self.json().is_null()
            && match serde_json::from_str::<serde_json::Value>(self.text) {
                Ok(_) => false, // `null` itself
                Err(e) if e.to_string().starts_with("recursion limit exceeded") => true,
                // JSON by its grammar (which skipping a value checks, and no more), not as a value.
                Err(_) => serde_json::from_str::<serde::de::IgnoredAny>(self.text).is_ok(),
            };
        self.unreadable = Some(unreadable);
        unreadable
    }
}

/// A message's payload as JSON for payload filters and transforms: `null` for a body that
/// is not JSON (a forwarded form or text), which has no fields to match or copy.
pub fn payload_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// Whether an endpoint's payload filter, if it has one, lets the payload through (see
/// [`crate::rules::payload_filter`]). A body that is JSON but cannot be read as a value
/// ([`LazyPayload::unreadable`]) is let through by none: read as `null`, it would pass
/// every negative condition (`$neq`, `$nin`, `$exists: false`).
///
/// The filters evaluated against one `payload` share its budget of steps: once spent, a
/// filter does not match.
pub fn payload_wanted(filter: Option<&serde_json::Value>, payload: &mut LazyPayload) -> bool {
    let Some(filter) = filter else { return true };
    if payload.unreadable() {
        return false;
    }
    let (json, steps) = payload.json_and_filter_steps();
    crate::rules::payload_filter::matches_within(filter, json, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_payload_too_deep_to_read_passes_no_filter() {
        let not = serde_json::json!({ "kind": { "$neq": "secret" } });
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(300), "]".repeat(300));
        assert!(!payload_wanted(Some(&not), &mut LazyPayload::new(&deep)));
        assert!(payload_wanted(None, &mut LazyPayload::new(&deep)), "no filter: sent");
        // A body that is not JSON at all (a form) is `null`, as before.
        assert!(payload_wanted(Some(&not), &mut LazyPayload::new("kind=secret")));
        // Text that merely starts like JSON is not JSON either.
        assert!(payload_wanted(Some(&not), &mut LazyPayload::new("[INFO] disk full")));
        assert!(payload_wanted(Some(&not), &mut LazyPayload::new("{\"a\": 1}\n{\"a\": 2}")));
        assert!(payload_wanted(Some(&not), &mut LazyPayload::new(r#"{"kind": "open"}"#)));
    }

    #[test]
    fn a_payload_a_value_cannot_hold_passes_no_filter() {
        let not = serde_json::json!({ "kind": { "$neq": "internal" } });
        for body in [r#"{"kind": "internal", "n": 1e400}"#, r#"{"kind": "internal", "note": "\ud800"}"#] {
            assert!(!payload_wanted(Some(&not), &mut LazyPayload::new(body)), "{body}");
            assert!(payload_wanted(None, &mut LazyPayload::new(body)), "no filter: sent");
        }
        assert!(payload_wanted(Some(&not), &mut LazyPayload::new("null")), "null is read");
    }

    #[test]
    fn filters() {
        let types = v(&["user.created"]);
        let chans = v(&["eu"]);
        assert!(endpoint_wants(None, None, "x", None));
        assert!(endpoint_wants(Some(&types), None, "user.created", None));
        assert!(!endpoint_wants(Some(&types), None, "user.deleted", None));
        assert!(!endpoint_wants(None, Some(&chans), "x", None));
        assert!(endpoint_wants(None, Some(&chans), "x", Some(&v(&["us", "eu"]))));
        assert!(!endpoint_wants(None, Some(&chans), "x", Some(&v(&["us"]))));
        assert!(endpoint_wants(None, None, "x", Some(&v(&["us"]))));
    }
}
