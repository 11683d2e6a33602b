//! Prefixed, time-sortable identifiers (`app_…`, `ep_…`, `msg_…`, `atmpt_…`).
//!
//! The part after the prefix is a ULID: 48 bits of milliseconds then 80 random bits, in
//! Crockford base32. A monotonic generator makes ids created by one process strictly
//! increasing, so "order by id" is "order by creation" and ids double as pagination cursors
//! (an id made of given parts, [`made_of`], keeps its time: it sorts among those of its
//! millisecond).

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

/// A fresh id with the given prefix whose 80 random bits are drawn anew (from the thread's
/// cryptographically secure generator), for ids that are credentials: an inbound source's id
/// is the secret part of its URL. [`new_id`]'s monotonic ids made within one millisecond
/// differ by one, so one id logged or sent out in full (a request id, the source's own
/// application's) would give away the source's made beside it.
pub fn new_secret_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// An id of this prefix below every one made at `at` or later: ids begin with the time they
/// were made, so `id > floor(prefix, t)` bounds an index scan by id to what was made since
/// `t` (a generator whose clock went back keeps its later time, so ids are never earlier
/// than the clock that made them).
pub fn floor(prefix: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    format!("{prefix}_{}", ulid::Ulid::from_parts(ms, 0))
}

/// The id of this prefix made at `at` (to the millisecond) whose 80 random bits are the low
/// ones of `bits`: an id another process can make again from what it knows (an
/// idempotency key's hold), to find what the first one made with it.
pub fn made_of(prefix: &str, at: chrono::DateTime<chrono::Utc>, bits: u128) -> String {
    let ms = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    format!("{prefix}_{}", ulid::Ulid::from_parts(ms, bits & ((1 << 80) - 1)))
}

/// Whether `s` looks like an id of this prefix (as opposed to a user-chosen `uid`).
pub fn has_prefix(s: &str, prefix: &str) -> bool {
    s.len() == prefix.len() + 1 + 26 && s.starts_with(prefix) && s.as_bytes()[prefix.len()] == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_made_of_its_parts_is_made_again_from_them() {
        let at = chrono::DateTime::from_timestamp_millis(1_765_000_000_123).unwrap();
        let id = made_of(MESSAGE, at, u128::MAX);
        assert_eq!(id, made_of(MESSAGE, at + chrono::TimeDelta::microseconds(999), u128::MAX), "to the millisecond");
        assert!(has_prefix(&id, MESSAGE), "{id}");
        let ulid: ulid::Ulid = id[MESSAGE.len() + 1..].parse().unwrap();
        assert_eq!((ulid.timestamp_ms(), ulid.random()), (1_765_000_000_123, (1 << 80) - 1));
        assert_ne!(id, made_of(MESSAGE, at, 1), "other bits");
        assert!(floor(MESSAGE, at) <= id && id < floor(MESSAGE, at + chrono::TimeDelta::milliseconds(1)));
    }

    #[test]
    fn an_id_floor_is_below_the_ids_made_since_and_above_older_ones() {
        let before = new_id(ATTEMPT);
        std::thread::sleep(std::time::Duration::from_millis(3));
        let now = chrono::Utc::now();
        let floor = floor(ATTEMPT, now);
        let after = new_id(ATTEMPT);
        assert!(before < floor, "{before} < {floor}");
        assert!(floor < after, "{floor} < {after}");
        assert!(has_prefix(&floor, ATTEMPT));
        assert_eq!(super::floor(ATTEMPT, chrono::DateTime::UNIX_EPOCH), format!("{ATTEMPT}_{}", "0".repeat(26)));
    }

    /// Secret ids made together share nothing past their time: each one's random part is
    /// drawn anew, where monotonic ones made in one millisecond count up by one.
    #[test]
    fn secret_ids_are_not_next_to_each_other() {
        let random_part = |id: &str| u128::from(id[4..].parse::<ulid::Ulid>().expect("a ULID")) & ((1u128 << 80) - 1);
        for _ in 0..100 {
            let (before, secret, after) = (new_id(SOURCE), new_secret_id(SOURCE), new_id(SOURCE));
            assert!(has_prefix(&secret, SOURCE), "{secret}");
            let near = |a: &str, b: &str| random_part(a).abs_diff(random_part(b)) < 1 << 40;
            assert!(!near(&before, &secret) && !near(&secret, &after), "{before} {secret} {after}");
        }
    }

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
