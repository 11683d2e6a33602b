//! Prefixed, time-sortable identifiers (`app_…`, `ep_…`, `msg_…`, `atmpt_…`).
//!
//! The part after the prefix is a ULID: 48 bits of milliseconds then 80 random bits, in
//! Crockford base32. A monotonic generator makes ids created by one process strictly
//! increasing, so "order by id" is "order by creation" and ids double as pagination cursors.

use std::sync::Mutex;

use ulid::Generator;

static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);

pub const APP: &str = "app";
pub const ENDPOINT: &str = "ep";
pub const MESSAGE: &str = "msg";
pub const ATTEMPT: &str = "atmpt";
pub const TASK: &str = "qtask";
pub const TOKEN: &str = "tok";
pub const INTEGRATION: &str = "integ";
// --- inbound sources
pub const SOURCE: &str = "src";
pub const INBOUND_REQUEST: &str = "req";

/// A fresh id with the given prefix, e.g. `new_id(ids::MESSAGE)` → `msg_01J…`.
pub fn new_id(prefix: &str) -> String {
    let ulid = {
        // A poisoned lock only means another thread panicked mid-generation; the generator
        // state is still a valid ULID, so keep using it.
        let mut guard = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
        let generator = guard.get_or_insert_with(Generator::new);
        // `generate` fails only when 80 random bits overflow within one millisecond.
        generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
    };
    format!("{prefix}_{ulid}")
}

/// Whether `s` looks like an id of this prefix (as opposed to a user-chosen `uid`).
pub fn has_prefix(s: &str, prefix: &str) -> bool {
    s.len() == prefix.len() + 1 + 26 && s.starts_with(prefix) && s.as_bytes()[prefix.len()] == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_and_increasing() {
        let a = new_id(MESSAGE);
        let b = new_id(MESSAGE);
        assert!(a.starts_with("msg_"));
        assert_eq!(a.len(), 4 + 26);
        assert!(b > a, "{b} should sort after {a}");
        assert!(has_prefix(&a, MESSAGE));
        assert!(!has_prefix("msg_short", MESSAGE));
        assert!(!has_prefix(&a, APP));
    }
}
