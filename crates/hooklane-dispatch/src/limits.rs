//! Per-endpoint limits held in memory: how much work an endpoint has in this process, how
//! many requests it may have in flight, and its rate limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

pub struct Gate {
    pub endpoint_id: String,
    /// Jobs of this endpoint held in memory (waiting or in flight).
    pub outstanding: AtomicUsize,
    /// Due work of this endpoint may have been left in the store for its being full (jobs
    /// handed back past its cap, or claims that passed it over): worth claiming again as
    /// soon as it has room, not a deferral or a poll interval later.
    pub overflowed: AtomicBool,
    /// When those handed-back jobs fall due (one instant per batch handed back), so that
    /// exactly they, and no retry, are made due early.
    pub handed_back: Mutex<Vec<chrono::DateTime<chrono::Utc>>>,
    /// Most jobs this endpoint may hold in memory (set from its rate limit when admitted).
    pub cap: AtomicUsize,
    /// Payload bytes its jobs in memory hold, and the most they may (its share of the
    /// node's): one slow endpoint's large payloads do not take the room of every other's.
    pub bytes: AtomicUsize,
    pub byte_cap: usize,
    /// The payload size of the last job let in or handed back: the endpoint counts as full
    /// while one more of that size would not fit, so that claims do not take jobs only to
    /// hand them back.
    pub last_payload: AtomicUsize,
    pub in_flight: Semaphore,
    bucket: Mutex<Bucket>,
}

/// A token bucket that may go into debt: each send reserves a slot and learns how long to
/// wait for it, so waiting sends queue up in order without polling.
struct Bucket {
    /// Earliest instant the next send may start.
    next_free: Instant,
}

impl Gate {
    /// Notes that jobs were handed back for being full, due at `due`.
    pub fn handed_back_at(&self, due: chrono::DateTime<chrono::Utc>) {
        let mut at = self.handed_back.lock().unwrap_or_else(|p| p.into_inner());
        // Instants already past need no making due: an endpoint that never drains does not
        // gather one per claim round.
        let now = chrono::Utc::now();
        at.retain(|t| *t > now);
        if at.last() != Some(&due) {
            at.push(due);
        }
        self.overflowed.store(true, Ordering::Release);
    }

    /// When it has left work in the store for being full and has since drained to a quarter
    /// of what it may hold ([`drained`]): the instants the jobs it handed back fall due at
    /// (then forgotten; none when claims only passed it over), to be made due now before
    /// claiming again.
    pub fn drained_after_overflow(&self) -> Option<Vec<chrono::DateTime<chrono::Utc>>> {
        // SeqCst, paired with the poller's in `Gates::saturated` and the recorder's decrement:
        // of a drain and a pass-over racing, one side sees the other.
        let drained = self.overflowed.load(Ordering::SeqCst)
            && drained(
                (self.outstanding.load(Ordering::SeqCst), self.cap.load(Ordering::Relaxed)),
                (self.bytes.load(Ordering::SeqCst), self.byte_cap),
                self.last_payload.load(Ordering::Relaxed),
            )
            && self.overflowed.swap(false, Ordering::AcqRel);
        drained.then(|| std::mem::take(&mut *self.handed_back.lock().unwrap_or_else(|p| p.into_inner())))
    }

    fn saturated(&self) -> bool {
        self.full(Ordering::Relaxed)
    }

    /// Holds as many jobs as it may, or as many payload bytes as leave no room for another
    /// of the last one's size ([`fits`]).
    fn full(&self, order: Ordering) -> bool {
        self.outstanding.load(order) >= self.cap.load(Ordering::Relaxed)
            || !fits(self.bytes.load(order), self.last_payload.load(Ordering::Relaxed), self.byte_cap)
    }

    /// How long the caller must wait before sending at `rate` per second.
    pub fn rate_wait(&self, rate: Option<u32>) -> Duration {
        let Some(rate) = rate.filter(|r| *r > 0) else { return Duration::ZERO };
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let now = Instant::now();
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        // Allow a burst of up to one second's worth after idling: `rate` sends, the one now
        // and those reaching back (as the store's shared buckets do).
        let reach = Duration::from_secs(1).saturating_sub(interval);
        let earliest = now.checked_sub(reach).unwrap_or(now);
        let slot = b.next_free.max(earliest);
        b.next_free = slot + interval;
        slot.saturating_duration_since(now)
    }
}

/// Whether a payload of `n` bytes may be let in beside `held` bytes, with `most` at most:
/// when it fits, or when nothing is held, or, one larger than half of `most`, once less
/// than half is held (so that it is not kept out for ever by smaller ones coming and
/// going).
pub fn fits(held: usize, n: usize, most: usize) -> bool {
    held == 0 || held.saturating_add(n) <= most || (n > most / 2 && held < most / 2)
}

/// Whether an endpoint holding `jobs` of the `cap` it may, and `bytes` of its `byte_cap`,
/// has room again for three quarters of what it may hold, counted in jobs of the last
/// payload's size (`last`): by the count when that binds, by the bytes when payloads are
/// large. An endpoint full on bytes is claimed again once its bytes drain, though it holds
/// more than a quarter of its count, and not at every job it ends while its bytes are full.
fn drained((jobs, cap): (usize, usize), (bytes, byte_cap): (usize, usize), last: usize) -> bool {
    let last = last.max(1);
    // `fits` lets one payload in whatever its size, so there is room for one at least.
    let capacity = cap.min((byte_cap / last).max(1));
    let byte_room = if fits(bytes, last, byte_cap) { (byte_cap.saturating_sub(bytes) / last).max(1) } else { 0 };
    let room = cap.saturating_sub(jobs).min(byte_room);
    room.saturating_mul(4) >= capacity.saturating_mul(3)
}

pub struct Gates {
    per_endpoint_in_flight: usize,
    per_endpoint_bytes: usize,
    map: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Gates {
    pub fn new(per_endpoint_in_flight: usize, per_endpoint_bytes: usize) -> Self {
        Gates { per_endpoint_in_flight, per_endpoint_bytes, map: Mutex::new(HashMap::new()) }
    }

    pub fn get(&self, endpoint_id: &str) -> Arc<Gate> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = map.get(endpoint_id) {
            return g.clone();
        }
        let gate = Arc::new(Gate {
            endpoint_id: endpoint_id.to_string(),
            outstanding: AtomicUsize::new(0),
            overflowed: AtomicBool::new(false),
            handed_back: Mutex::new(Vec::new()),
            cap: AtomicUsize::new(usize::MAX),
            bytes: AtomicUsize::new(0),
            byte_cap: self.per_endpoint_bytes,
            last_payload: AtomicUsize::new(0),
            in_flight: Semaphore::new(self.per_endpoint_in_flight.max(1)),
            // A new gate counts as idle: it may start with a burst.
            bucket: Mutex::new(Bucket {
                next_free: Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or_else(Instant::now),
            }),
        });
        map.insert(endpoint_id.to_string(), gate.clone());
        gate
    }

    /// Whether this endpoint holds as much work in memory as it may.
    pub fn is_saturated(&self, endpoint_id: &str) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(endpoint_id).is_some_and(|g| g.saturated())
    }

    /// Endpoints holding as much work in memory as they may: the poller does not claim
    /// more for them. Marks them passed over, so that they ask to be claimed again when
    /// they drain (see [`Gate::drained_after_overflow`]).
    pub fn saturated(&self) -> Vec<String> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(_, g)| g.saturated())
            .filter(|(_, g)| {
                // Marked first, then looked at again (both SeqCst, as the recorder's decrement
                // and its look at the mark): either this sees a drain that raced it and the
                // endpoint is claimed now, or the recorder sees the mark and wakes the poller.
                g.overflowed.store(true, Ordering::SeqCst);
                g.full(Ordering::SeqCst)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many more jobs each endpoint this process knows the cap of may take (those at or
    /// over their cap are [`Gates::saturated`]; one that drained keeps its gate, and its cap,
    /// until [`Gates::prune`]): a claim asks no more of them, so that what could not start is
    /// not claimed only to be handed back.
    pub fn room(&self) -> HashMap<String, usize> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter_map(|(id, g)| {
                let cap = g.cap.load(Ordering::Relaxed);
                let outstanding = g.outstanding.load(Ordering::Relaxed);
                (cap != usize::MAX).then(|| (id.clone(), cap.saturating_sub(outstanding)))
            })
            .collect()
    }

    /// Forgets endpoints with nothing in memory, so the map does not grow without bound.
    pub fn prune(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, g| Arc::strong_count(g) > 1 || g.outstanding.load(Ordering::Relaxed) > 0);
    }
}

#[cfg(test)]
mod tests {
    /// A payload fits beside what is held up to the bound; one larger than half the bound
    /// is let in once less than half is held, however large, so smaller ones cannot keep
    /// it out for ever.
    #[test]
    fn payloads_fit_within_the_bound_and_large_ones_once_half_is_free() {
        assert!(fits(0, 20, 50) && fits(30, 20, 50));
        assert!(!fits(31, 20, 50));
        assert!(fits(0, 100, 50) && fits(24, 100, 50) && fits(24, 30, 50));
        assert!(!fits(25, 100, 50) && !fits(25, 30, 50));
        // A bound too small for any payload still lets one in at a time.
        assert!(fits(0, 5, 1) && fits(0, 5, 0) && !fits(1, 5, 1));
    }

    use super::*;

    /// A gate that handed work back asks for it again once, when down to a quarter of its cap.
    #[test]
    fn a_gate_that_overflowed_asks_for_its_work_back_once_drained() {
        let g = Gates::new(4, usize::MAX).get("ep");
        g.cap.store(8, Ordering::Relaxed);
        g.outstanding.store(3, Ordering::Relaxed);
        assert_eq!(g.drained_after_overflow(), None, "it never overflowed");
        let now = chrono::Utc::now();
        let (t1, t2) = (now + chrono::Duration::seconds(1), now + chrono::Duration::seconds(2));
        // An instant already past is dropped when another comes: nothing to make due.
        g.handed_back_at(now - chrono::Duration::seconds(1));
        g.handed_back_at(t1);
        g.handed_back_at(t1);
        g.handed_back_at(t2);
        assert_eq!(g.drained_after_overflow(), None, "3 of 8 is more than a quarter");
        g.outstanding.store(2, Ordering::Relaxed);
        assert_eq!(g.drained_after_overflow(), Some(vec![t1, t2]));
        assert_eq!(g.drained_after_overflow(), None, "once per overflow");
        assert_eq!(g.endpoint_id, "ep");
    }

    /// A full gate that claims passed over (its due work left in the store) asks to be
    /// claimed again once drained, with nothing to make due.
    #[test]
    fn a_gate_passed_over_asks_to_be_claimed_once_drained() {
        let gates = Gates::new(4, usize::MAX);
        let (full, idle) = (gates.get("full"), gates.get("idle"));
        for g in [&full, &idle] {
            g.cap.store(8, Ordering::Relaxed);
        }
        full.outstanding.store(8, Ordering::Relaxed);
        idle.outstanding.store(1, Ordering::Relaxed);
        assert_eq!(gates.saturated(), vec!["full".to_string()]);
        assert_eq!(full.drained_after_overflow(), None, "still full");
        assert_eq!(idle.drained_after_overflow(), None, "never passed over");
        full.outstanding.store(2, Ordering::Relaxed);
        assert_eq!(full.drained_after_overflow(), Some(vec![]));
        assert_eq!(full.drained_after_overflow(), None, "once per time passed over");
    }

    /// A gate full on payload bytes asks for its work back once its bytes drain, though it
    /// still holds more than a quarter of its count, and not before.
    #[test]
    fn a_gate_full_on_bytes_asks_for_its_work_back_once_its_bytes_drain() {
        let g = Gates::new(4, 64).get("ep");
        g.cap.store(100, Ordering::Relaxed);
        g.last_payload.store(16, Ordering::Relaxed);
        g.outstanding.store(4, Ordering::Relaxed);
        g.bytes.store(64, Ordering::Relaxed);
        assert!(g.saturated());
        g.handed_back_at(chrono::Utc::now() + chrono::Duration::seconds(1));
        // Few jobs, but room for one payload only: not yet (it used to ask at every job ended).
        g.outstanding.store(3, Ordering::Relaxed);
        g.bytes.store(48, Ordering::Relaxed);
        assert_eq!(g.drained_after_overflow(), None, "its bytes are still full");
        // Room for three of the four payloads its share holds, with 30 of its 100 jobs held.
        g.outstanding.store(30, Ordering::Relaxed);
        g.bytes.store(16, Ordering::Relaxed);
        assert!(g.drained_after_overflow().is_some(), "its bytes drained");
        // A payload larger than the whole share: asked for again once it fits.
        g.last_payload.store(1_000, Ordering::Relaxed);
        g.handed_back_at(chrono::Utc::now() + chrono::Duration::seconds(1));
        g.bytes.store(40, Ordering::Relaxed);
        assert_eq!(g.drained_after_overflow(), None, "more than half held");
        g.bytes.store(0, Ordering::Relaxed);
        g.outstanding.store(0, Ordering::Relaxed);
        assert!(g.drained_after_overflow().is_some(), "nothing held");
    }

    /// `rate_wait` reads the clock itself: a test preempted between two calls sees the
    /// second wait shorter by that much. So each wait is checked as the time it points at
    /// (the call's time plus the wait), against the first call's time plus the spacing
    /// expected, the calls' times known to within the instants read around them.
    #[test]
    fn rate_spreads_sends() {
        /// A wait, with the instants read just before and just after the call.
        struct Timed {
            before: Instant,
            wait: Duration,
            after: Instant,
        }
        fn timed(g: &Gate, rate: u32) -> Timed {
            let before = Instant::now();
            let wait = g.rate_wait(Some(rate));
            Timed { before, wait, after: Instant::now() }
        }
        /// Whether `t` points at `spacing` after the first call's time (`first`), within
        /// 10 ms. A wait of zero only says that time had come by the call.
        fn points_at(t: &Timed, first: &Timed, spacing: Duration) -> bool {
            let slack = Duration::from_millis(10);
            let not_early = t.after + t.wait + slack >= first.before + spacing;
            let not_late = t.wait.is_zero() || t.before + t.wait <= first.after + spacing + slack;
            not_early && not_late
        }
        let gates = Gates::new(4, usize::MAX);
        let g = gates.get("ep");
        assert_eq!(g.rate_wait(None), Duration::ZERO);
        // 10/s: a one-second burst passes at once, then sends are 100 ms apart.
        let waits: Vec<Timed> = (0..15).map(|_| timed(&g, 10)).collect();
        let shown: Vec<Duration> = waits.iter().map(|t| t.wait).collect();
        assert!(waits[..10].iter().all(|t| t.wait < Duration::from_millis(5)), "{shown:?}");
        // Ten, not eleven: the eleventh waits its interval, and each after it one more.
        for (i, t) in waits.iter().enumerate().skip(10) {
            let spacing = Duration::from_millis(100) * (i as u32 - 9);
            assert!(points_at(t, &waits[0], spacing), "send {i} not {spacing:?} after the first: {shown:?}");
        }
        // 1/s: two sends of an idle endpoint are a second apart, never both at once.
        let g = gates.get("slow");
        let first = timed(&g, 1);
        assert_eq!(first.wait, Duration::ZERO);
        let second = timed(&g, 1);
        assert!(points_at(&second, &first, Duration::from_secs(1)), "{:?}", second.wait);
    }
}
