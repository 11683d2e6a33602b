//! Marks this process keeps on endpoints it disabled or paused, and on messages whose
//! content it deleted, for the jobs it already holds in memory with an older snapshot of
//! them: those stop (disabled, deleted) or are held (paused) instead of being sent.
//!
//! A mark is only needed while such jobs can exist: a job lives in memory for at most its
//! lease (and the request it may have on the wire), and a claim made after the change
//! reads the endpoint as changed. So marks are dropped once they are older than `keep`,
//! and the maps do not grow with every endpoint ever disabled or paused.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hooklane_core::{DateTime, Utc};

/// Most marks kept at once: past it the oldest go first (a purge of many messages marks
/// each; jobs of the oldest ones are the likeliest to be gone already).
const MAX_MARKS: usize = 100_000;

pub(crate) struct Marks {
    keep: Duration,
    cap: usize,
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// Key (an endpoint's or a message's id) → the version the change wrote, and when the
    /// mark was set here.
    map: HashMap<String, (DateTime<Utc>, Instant)>,
    /// The keys in the order they were marked, with when: the oldest are found, and
    /// dropped, without a look at every mark. (A key marked again, or removed, leaves an
    /// entry behind, which drops nothing when its turn comes.)
    order: VecDeque<(String, Instant)>,
}

/// The clock marks are aged by: the monotonic one, which this module's tests move on
/// (`tests::advance`) instead of sleeping.
#[cfg(not(test))]
fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
fn now() -> Instant {
    Instant::now() + tests::AHEAD.with(std::cell::Cell::get)
}

/// How old a mark set `at` is.
fn age(at: Instant) -> Duration {
    now().saturating_duration_since(at)
}

impl Kept {
    /// Drops the oldest entry, and its mark if it is still the one that entry made.
    fn drop_oldest(&mut self) {
        if let Some((key, at)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|(_, marked)| *marked == at) {
                self.map.remove(&key);
            }
        }
    }
}

impl Marks {
    pub(crate) fn new(keep: Duration) -> Self {
        Self::with_cap(keep, MAX_MARKS)
    }

    fn with_cap(keep: Duration, cap: usize) -> Self {
        Marks { keep, cap, inner: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the key as changed at `version`, dropping marks that outlived `keep` (the
    /// oldest first, as many as have: each is dropped once) and, past the cap, the oldest.
    pub(crate) fn set(&self, key: &str, version: DateTime<Utc>) {
        let now = now();
        let mut kept = self.lock();
        while kept.order.front().is_some_and(|(_, at)| now.duration_since(*at) >= self.keep) {
            kept.drop_oldest();
        }
        // A later change's mark stays, whichever announcement comes last (each is sent
        // from a task of its own).
        let version = kept.map.get(key).map_or(version, |(marked, _)| version.max(*marked));
        kept.map.insert(key.to_string(), (version, now));
        kept.order.push_back((key.to_string(), now));
        while kept.map.len() > self.cap || kept.order.len() > 2 * self.cap {
            kept.drop_oldest();
        }
    }

    /// The version of the key's mark, if it has one still kept.
    pub(crate) fn get(&self, key: &str) -> Option<DateTime<Utc>> {
        let kept = self.lock();
        let (version, at) = kept.map.get(key)?;
        (age(*at) < self.keep).then_some(*version)
    }

    /// Whether a snapshot at `version` predates (or is) the key's mark.
    pub(crate) fn covers(&self, key: &str, version: DateTime<Utc>) -> bool {
        self.covers_any(&[key], version)
    }

    /// Whether a snapshot at `version` predates (or is) the mark of any of `keys` (one look,
    /// under one lock).
    pub(crate) fn covers_any(&self, keys: &[&str], version: DateTime<Utc>) -> bool {
        let kept = self.lock();
        keys.iter().any(|key| kept.map.get(*key).is_some_and(|(marked, at)| age(*at) < self.keep && version <= *marked))
    }

    pub(crate) fn remove(&self, key: &str) {
        self.lock().map.remove(key);
    }

    /// Removes the key's mark if it is still `version` (a newer mark stays).
    pub(crate) fn remove_if(&self, key: &str, version: DateTime<Utc>) {
        let mut kept = self.lock();
        if kept.map.get(key).is_some_and(|(marked, _)| *marked == version) {
            kept.map.remove(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    #[test]
    fn a_mark_covers_its_version_and_older_ones() {
        let marks = Marks::new(Duration::from_secs(60));
        marks.set("ep", at(100));
        assert!(marks.covers("ep", at(99)));
        assert!(marks.covers("ep", at(100)));
        assert!(!marks.covers("ep", at(101)), "a later version (re-enabled, resumed) goes on");
        assert!(!marks.covers("other", at(1)));
    }

    #[test]
    fn removing_if_unchanged_keeps_a_newer_mark() {
        let marks = Marks::new(Duration::from_secs(60));
        marks.set("ep", at(100));
        marks.set("ep", at(200));
        marks.remove_if("ep", at(100));
        assert_eq!(marks.get("ep"), Some(at(200)));
        marks.remove_if("ep", at(200));
        assert_eq!(marks.get("ep"), None);
    }

    /// Announcements of two changes may arrive in either order: the later change's mark
    /// stays.
    #[test]
    fn an_earlier_mark_set_last_keeps_the_later_one() {
        let marks = Marks::new(Duration::from_secs(60));
        marks.set("ep", at(200));
        marks.set("ep", at(100));
        assert_eq!(marks.get("ep"), Some(at(200)));
        assert!(marks.covers("ep", at(150)));
    }

    thread_local! {
        /// How far this test's clock is ahead of the monotonic one (see `super::now`).
        pub(super) static AHEAD: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
    }

    /// Moves this test's clock on.
    pub(super) fn advance(by: Duration) {
        AHEAD.with(|ahead| ahead.set(ahead.get() + by));
    }

    #[test]
    fn marks_older_than_keep_are_dropped() {
        let keep = Duration::from_secs(60);
        let marks = Marks::new(keep);
        for i in 0..100 {
            marks.set(&format!("old{i}"), at(i));
        }
        advance(keep / 2);
        assert_eq!(marks.get("old1"), Some(at(1)), "a mark is read while it is kept");
        marks.set("mid", at(1));
        assert_eq!(marks.len(), 101, "nothing expired is swept");
        advance(keep / 2);
        assert_eq!(marks.get("old1"), None, "an expired mark is not read");
        assert!(!marks.covers("old1", at(1)));
        marks.set("new", at(1));
        assert_eq!(marks.len(), 2, "setting a mark sweeps the expired ones");
        assert!(marks.covers("mid", at(1)) && marks.covers("new", at(1)), "fresh marks stay");
    }

    #[test]
    fn past_the_cap_the_oldest_marks_go() {
        let marks = Marks::with_cap(Duration::from_secs(60), 3);
        for i in 0..5 {
            marks.set(&format!("m{i}"), at(i));
        }
        assert_eq!(marks.len(), 3);
        assert_eq!((marks.get("m0"), marks.get("m1")), (None, None));
        assert_eq!(marks.get("m4"), Some(at(4)));
        // Marked again: its newer mark is the one kept, its older entry drops nothing.
        marks.set("m2", at(20));
        marks.set("m5", at(5));
        marks.set("m6", at(6));
        assert_eq!(marks.get("m2"), Some(at(20)), "{:?}", marks.len());
    }
}
