//! Marks this process keeps on endpoints it disabled or paused, for the jobs it already
//! holds in memory with an older snapshot of the endpoint: those stop (disabled) or are
//! held (paused) instead of being sent.
//!
//! A mark is only needed while such jobs can exist: a job lives in memory for at most its
//! lease (and the request it may have on the wire), and a claim made after the change
//! reads the endpoint as changed. So marks are dropped once they are older than `keep`,
//! and the maps do not grow with every endpoint ever disabled or paused.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hooklane_core::{DateTime, Utc};

pub(crate) struct Marks {
    keep: Duration,
    /// Endpoint id → the endpoint's version (`updated_at`) the change wrote, and when the
    /// mark was set here.
    map: Mutex<HashMap<String, (DateTime<Utc>, Instant)>>,
}

impl Marks {
    pub(crate) fn new(keep: Duration) -> Self {
        Marks { keep, map: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (DateTime<Utc>, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the endpoint as changed at `version`, dropping marks that outlived `keep`
    /// (marks are set rarely, so the sweep costs nothing that matters).
    pub(crate) fn set(&self, endpoint_id: &str, version: DateTime<Utc>) {
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, (_, at)| now.duration_since(*at) < self.keep);
        map.insert(endpoint_id.to_string(), (version, now));
    }

    /// The version of the endpoint's mark, if it has one still kept.
    pub(crate) fn get(&self, endpoint_id: &str) -> Option<DateTime<Utc>> {
        let map = self.lock();
        let (version, at) = map.get(endpoint_id)?;
        (at.elapsed() < self.keep).then_some(*version)
    }

    /// Whether a snapshot of the endpoint at `version` predates (or is) its mark.
    pub(crate) fn covers(&self, endpoint_id: &str, version: DateTime<Utc>) -> bool {
        self.get(endpoint_id).is_some_and(|marked| version <= marked)
    }

    pub(crate) fn remove(&self, endpoint_id: &str) {
        self.lock().remove(endpoint_id);
    }

    /// Removes the endpoint's mark if it is still `version` (a newer mark stays).
    pub(crate) fn remove_if(&self, endpoint_id: &str, version: DateTime<Utc>) {
        let mut map = self.lock();
        if map.get(endpoint_id).is_some_and(|(marked, _)| *marked == version) {
            map.remove(endpoint_id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
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

    #[test]
    fn marks_older_than_keep_are_dropped() {
        let marks = Marks::new(Duration::from_millis(30));
        for i in 0..100 {
            marks.set(&format!("old{i}"), at(i));
        }
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(marks.get("old1"), None, "an expired mark is not read");
        marks.set("new", at(1));
        assert_eq!(marks.len(), 1, "setting a mark sweeps the expired ones");
        assert!(marks.covers("new", at(1)));
    }
}
