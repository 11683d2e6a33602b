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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
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
