//! Wake-ups for readers of the message stream, one per application: a long-poll or an
//! event stream waits on its own application's signal, so a write wakes the readers of the
//! applications it wrote to and no others (one signal for all made every waiting reader of
//! every application read again after each write).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Default)]
pub(crate) struct StreamSignals {
    apps: Mutex<Apps>,
}

#[derive(Default)]
struct Apps {
    signals: HashMap<String, watch::Sender<u64>>,
    /// How many times every reader was woken: a signal made afterwards starts there, so a
    /// reader that subscribed late can still tell that such a wake-up happened.
    all_raised: u64,
    /// Size of `signals` after the last sweep of signals nobody waits on any more.
    swept: usize,
}

impl StreamSignals {
    /// Changes whenever messages of `app_id` may have become readable.
    pub(crate) fn subscribe(&self, app_id: &str) -> watch::Receiver<u64> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = apps.signals.get(app_id) {
            return signal.subscribe();
        }
        // Signals of applications whose readers have all gone are dropped once the map has
        // doubled since the last sweep: a sweep costs the map's size, paid for by as many
        // new applications.
        if apps.signals.len() >= 2 * apps.swept.max(64) {
            apps.signals.retain(|_, s| s.receiver_count() > 0);
            apps.swept = apps.signals.len();
        }
        let (signal, receiver) = watch::channel(apps.all_raised);
        apps.signals.insert(app_id.to_string(), signal);
        receiver
    }

    /// Whether any reader waits on a signal now (dropping the signals nobody waits on): a
    /// writer need not find out which applications it wrote to when nobody would be told.
    pub(crate) fn watched(&self) -> bool {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.signals.retain(|_, s| s.receiver_count() > 0);
        apps.swept = apps.signals.len();
        !apps.signals.is_empty()
    }

    /// Wakes the readers of these applications.
    pub(crate) fn raise<'a>(&self, app_ids: impl IntoIterator<Item = &'a str>) {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        for id in app_ids {
            if let Some(signal) = apps.signals.get(id) {
                signal.send_modify(|n| *n += 1);
            }
        }
    }

    /// Wakes every reader: when which applications were written is not known.
    pub(crate) fn raise_all(&self) {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.all_raised += 1;
        for signal in apps.signals.values() {
            signal.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_only_the_applications_written() {
        let signals = StreamSignals::default();
        let mut a = signals.subscribe("a");
        let mut a2 = signals.subscribe("a");
        let b = signals.subscribe("b");
        signals.raise(["a", "c"]);
        assert!(a.has_changed().unwrap() && a2.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.borrow_and_update();
        a2.borrow_and_update();
        signals.raise_all();
        assert!(a.has_changed().unwrap() && a2.has_changed().unwrap() && b.has_changed().unwrap());
        assert_eq!(*signals.subscribe("late").borrow(), 1, "a late reader sees that every reader was woken");
        assert!(signals.watched());
        drop((a, a2, b));
        assert!(!signals.watched(), "nobody waits once every reader is gone");
    }

    #[test]
    fn forgets_applications_nobody_waits_on() {
        let signals = StreamSignals::default();
        let kept = signals.subscribe("kept");
        for i in 0..1000 {
            drop(signals.subscribe(&format!("gone-{i}")));
        }
        let size = signals.apps.lock().unwrap().signals.len();
        assert!(size <= 130, "{size} signals kept for 1 waiting reader");
        signals.raise(["kept"]);
        assert!(kept.has_changed().unwrap(), "a sweep keeps signals with readers");
    }
}
