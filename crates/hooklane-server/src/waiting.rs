//! Places for pull readers that wait (long-polls and event streams): a bounded number per
//! node, of which one application may hold only a share, so that one tenant opening
//! streams by the thousand cannot leave every other tenant's readers without a place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Readers waiting at once on one node.
pub const MAX_WAITING_READERS: usize = 1000;
/// Of which one application may hold at most this many.
pub const MAX_WAITING_PER_APP: usize = MAX_WAITING_READERS / 10;

#[derive(Default)]
pub struct WaitingPlaces {
    /// Places taken, in all and per application.
    taken: Mutex<(usize, HashMap<String, usize>)>,
}

/// Why no place was given.
#[derive(Debug, PartialEq, Eq)]
pub enum NoPlace {
    Node,
    Application,
}

/// A place held; given back when dropped.
pub struct WaitingPlace {
    places: Arc<WaitingPlaces>,
    app_id: String,
}

impl WaitingPlaces {
    pub fn take(self: &Arc<Self>, app_id: &str) -> Result<WaitingPlace, NoPlace> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let (all, per_app) = &mut *taken;
        if *all >= MAX_WAITING_READERS {
            return Err(NoPlace::Node);
        }
        let mine = per_app.entry(app_id.to_string()).or_default();
        if *mine >= MAX_WAITING_PER_APP {
            return Err(NoPlace::Application);
        }
        *mine += 1;
        *all += 1;
        metrics::gauge!("hooklane_waiting_readers").set(*all as f64);
        Ok(WaitingPlace { places: self.clone(), app_id: app_id.to_string() })
    }
}

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        let mut taken = self.places.taken.lock().unwrap_or_else(|p| p.into_inner());
        let (all, per_app) = &mut *taken;
        *all = all.saturating_sub(1);
        metrics::gauge!("hooklane_waiting_readers").set(*all as f64);
        if let Some(mine) = per_app.get_mut(&self.app_id) {
            *mine -= 1;
            if *mine == 0 {
                per_app.remove(&self.app_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_application_holds_at_most_its_share() {
        let places = Arc::new(WaitingPlaces::default());
        let greedy: Vec<_> = (0..MAX_WAITING_PER_APP).map(|_| places.take("greedy").expect("a place")).collect();
        assert_eq!(places.take("greedy").err(), Some(NoPlace::Application));
        let other = places.take("other").expect("another application still gets a place");
        drop(greedy);
        assert!(places.take("greedy").is_ok(), "places come back when dropped");
        drop(other);
        let mut held = Vec::new();
        for i in 0..MAX_WAITING_READERS {
            held.push(places.take(&format!("app-{}", i % 20)).expect("room on the node"));
        }
        assert_eq!(places.take("late").err(), Some(NoPlace::Node));
        held.clear();
        assert!(places.taken.lock().unwrap().1.is_empty(), "no bookkeeping left for gone readers");
    }
}
