//! Per-endpoint circuit breakers, held in memory by each node.
//!
//! An endpoint that cannot be reached (connection refused, timeouts, 5xx) for
//! `circuit_failures` attempts in a row is not sent to for a cool-down: its deliveries wait
//! in the store, untouched and without burning their retries, instead of each failing on
//! its own (every failure is a write on the store, which live endpoints share). When the
//! cool-down ends one delivery goes out as a probe; success closes the circuit, failure
//! opens it again for twice as long (up to `circuit_max_cooldown`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hooklane_core::{DateTime, Utc};

use crate::sender::SendResult;

/// What to do with a delivery to an endpoint, decided just before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The circuit is closed: send.
    Send,
    /// The cool-down is over and this delivery is the one probe: send it, and report its
    /// result with `probe = true`.
    Probe,
    /// Do not send: hand the delivery back to the store, due at this time.
    Hold(DateTime<Utc>),
}

/// Whether an attempt showed the endpoint up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered something other than a 5xx: whatever became of the delivery, sending
    /// to it is not wasted.
    Reached,
    /// Connection failed, timed out, or a 5xx.
    Unreachable,
    /// Nothing was sent, through no fault of the endpoint's (see [`SendResult::unsendable`]),
    /// or its transformation cancelled the request: it tells nothing of the endpoint.
    Untried,
}

impl Health {
    pub fn of(result: &SendResult) -> Self {
        match result.status {
            _ if result.unsendable || result.cancelled => Health::Untried,
            None | Some(500..=599) => Health::Unreachable,
            Some(_) => Health::Reached,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: DateTime<Utc>,
    },
    /// The cool-down ended and a probe went out at `since`.
    HalfOpen {
        since: DateTime<Utc>,
    },
}

#[derive(Debug)]
struct Circuit {
    /// Unreachable attempts in a row.
    failures: u32,
    state: State,
    /// Length of the last cool-down (the next one, after a failed probe, is twice this).
    cooldown: Duration,
    /// When the last unreachable attempt was recorded.
    last_failure: DateTime<Utc>,
}

/// How long a circuit nothing happens to is kept: failures in a row further apart than this
/// count afresh, and the circuit of an endpoint no longer sent to (deleted, disabled by
/// another node, quiet) is forgotten rather than kept, and counted as open, for ever.
const STALE_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// Endpoints whose circuit is not closed, or that failed lately; an endpoint missing from
/// the map is closed with no failures.
pub struct Circuits {
    threshold: u32,
    cooldown: Duration,
    max_cooldown: Duration,
    /// A probe not reported after this long is taken as lost, so another may go.
    probe_timeout: Duration,
    map: Mutex<HashMap<String, Circuit>>,
}

/// How long deliveries that arrive while a probe is out are put off: past the probe's
/// answer in most cases, and the endpoint is skipped by claims until then anyway.
const HOLD_WHILE_PROBING: Duration = Duration::from_secs(1);

fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(1))
}

impl Circuits {
    /// `threshold` 0 turns circuit breaking off.
    pub fn new(threshold: u32, cooldown: Duration, max_cooldown: Duration, probe_timeout: Duration) -> Self {
        Circuits {
            threshold,
            cooldown: cooldown.max(Duration::from_millis(1)),
            max_cooldown: max_cooldown.max(cooldown),
            probe_timeout,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Circuit>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether nothing happened to the circuit for [`STALE_AFTER`]: no failure since, no
    /// delivery since its cool-down ended, or a probe never reported.
    fn stale(&self, c: &Circuit, now: DateTime<Utc>) -> bool {
        let since = match c.state {
            State::Closed => c.last_failure,
            State::Open { until } => until,
            State::HalfOpen { since } => later(since, self.probe_timeout),
        };
        now - since > STALE_AFTER
    }

    /// Sets the gauge of circuits not closed (after a transition: not on every attempt).
    fn count_open(map: &HashMap<String, Circuit>) {
        let open = map.values().filter(|c| c.state != State::Closed).count();
        metrics::gauge!("hooklane_circuits_open").set(open as f64);
    }

    /// When deliveries to this endpoint must wait until, without taking the probe: `None`
    /// when one may be sent (closed, or a cool-down over and no probe out).
    pub fn held_until(&self, endpoint_id: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.lock().get(endpoint_id).map(|c| c.state) {
            Some(State::Open { until }) if now < until => Some(until),
            Some(State::HalfOpen { since }) if now < later(since, self.probe_timeout) => {
                Some(later(now, HOLD_WHILE_PROBING))
            }
            _ => None,
        }
    }

    /// Whether ingest may hand deliveries to this endpoint straight to memory.
    pub fn is_closed(&self, endpoint_id: &str) -> bool {
        self.lock().get(endpoint_id).is_none_or(|c| c.state == State::Closed)
    }

    /// Decides about one delivery about to be sent; a `Probe` must be reported to
    /// [`Circuits::record`].
    pub fn verdict(&self, endpoint_id: &str, now: DateTime<Utc>) -> Verdict {
        let mut map = self.lock();
        let Some(c) = map.get_mut(endpoint_id) else { return Verdict::Send };
        match c.state {
            State::Closed => Verdict::Send,
            State::Open { until } if now < until => Verdict::Hold(until),
            State::HalfOpen { since } if now < later(since, self.probe_timeout) => {
                Verdict::Hold(later(now, HOLD_WHILE_PROBING))
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                c.state = State::HalfOpen { since: now };
                tracing::debug!(endpoint_id, "circuit half-open: sending a probe");
                Verdict::Probe
            }
        }
    }

    /// Takes the result of an attempt into account.
    pub fn record(&self, endpoint_id: &str, health: Health, probe: bool, now: DateTime<Utc>) {
        if self.threshold == 0 {
            return;
        }
        let mut map = self.lock();
        match health {
            Health::Untried => {}
            Health::Reached => {
                // Any answer, even one from a request sent before the circuit opened,
                // shows the endpoint is back.
                if let Some(c) = map.remove(endpoint_id) {
                    if c.state != State::Closed {
                        tracing::info!(endpoint_id, "circuit closed: endpoint answering again");
                        metrics::counter!("hooklane_circuit_transitions_total", "to" => "closed").increment(1);
                        Self::count_open(&map);
                    }
                }
            }
            Health::Unreachable => {
                let fresh = Circuit { failures: 0, state: State::Closed, cooldown: Duration::ZERO, last_failure: now };
                let c = map.entry(endpoint_id.to_string()).or_insert(fresh);
                // Failures further apart than the staleness window do not add up.
                if c.state == State::Closed && now - c.last_failure > STALE_AFTER {
                    c.failures = 0;
                }
                c.last_failure = now;
                c.failures = c.failures.saturating_add(1);
                let cooldown = match c.state {
                    State::Closed if c.failures >= self.threshold => self.cooldown,
                    State::HalfOpen { .. } if probe => (c.cooldown * 2).min(self.max_cooldown),
                    // Already open, or a request sent before the probe: changes nothing.
                    _ => return,
                };
                c.cooldown = cooldown;
                c.state = State::Open { until: later(now, cooldown) };
                tracing::info!(
                    endpoint_id,
                    failures = c.failures,
                    cooldown_ms = cooldown.as_millis() as u64,
                    "circuit open: endpoint unreachable, deliveries paused"
                );
                metrics::counter!("hooklane_circuit_transitions_total", "to" => "open").increment(1);
                Self::count_open(&map);
            }
        }
    }

    /// A probe ended without being sent (its endpoint's settings changed as it went): the
    /// cool-down stays over, so that the next delivery is the probe, at once.
    pub fn probe_abandoned(&self, endpoint_id: &str, now: DateTime<Utc>) {
        if let Some(c) = self.lock().get_mut(endpoint_id) {
            if matches!(c.state, State::HalfOpen { .. }) {
                c.state = State::Open { until: now };
            }
        }
    }

    /// Forgets the endpoint's circuit (it was disabled: its deliveries must be claimed to be
    /// marked failed, not skipped; or it was reset). Returns whether it was open (or
    /// probing).
    pub fn forget(&self, endpoint_id: &str) -> bool {
        let mut map = self.lock();
        let was_open = map.remove(endpoint_id).is_some_and(|c| c.state != State::Closed);
        if was_open {
            Self::count_open(&map);
        }
        was_open
    }

    /// Endpoints whose deliveries claims must leave in the store now. (Called for every
    /// poll: stale circuits are forgotten here.)
    pub fn blocked(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, c| !self.stale(c, now));
        if map.len() < before {
            Self::count_open(&map);
        }
        map.iter()
            .filter(|(_, c)| match c.state {
                State::Closed => false,
                State::Open { until } => now < until,
                State::HalfOpen { since } => now < later(since, self.probe_timeout),
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The earliest end of a running cool-down: the poller wakes then to claim a probe.
    pub fn next_reopen(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let map = self.lock();
        map.values()
            .filter_map(|c| match c.state {
                State::Open { until } if now < until => Some(until),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn circuits() -> Circuits {
        Circuits::new(3, 5 * SEC, 12 * SEC, 30 * SEC)
    }

    fn at(t0: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
        t0 + chrono::Duration::seconds(secs)
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_cooldown() {
        let c = circuits();
        let t0 = Utc::now();
        c.record("ep", Health::Unreachable, false, t0);
        c.record("ep", Health::Unreachable, false, t0);
        // A success in between starts the count over.
        c.record("ep", Health::Reached, false, t0);
        c.record("ep", Health::Unreachable, false, t0);
        c.record("ep", Health::Unreachable, false, t0);
        assert_eq!(c.verdict("ep", t0), Verdict::Send);
        assert!(c.is_closed("ep"));
        c.record("ep", Health::Unreachable, false, t0);
        assert!(!c.is_closed("ep"));
        assert_eq!(c.verdict("ep", at(t0, 1)), Verdict::Hold(at(t0, 5)));
        assert_eq!(c.held_until("ep", at(t0, 1)), Some(at(t0, 5)));
        assert_eq!(c.blocked(at(t0, 1)), vec!["ep".to_string()]);
        assert_eq!(c.next_reopen(at(t0, 1)), Some(at(t0, 5)));
        // Late failures of requests already in flight do not extend the cool-down.
        c.record("ep", Health::Unreachable, false, at(t0, 2));
        assert_eq!(c.verdict("ep", at(t0, 2)), Verdict::Hold(at(t0, 5)));
        // Other endpoints are not affected.
        assert_eq!(c.verdict("other", t0), Verdict::Send);

        // Cool-down over: not blocked; exactly one probe, the rest held while it is out.
        assert_eq!(c.held_until("ep", at(t0, 5)), None);
        assert!(c.blocked(at(t0, 5)).is_empty());
        assert_eq!(c.verdict("ep", at(t0, 5)), Verdict::Probe);
        assert_eq!(c.verdict("ep", at(t0, 5)), Verdict::Hold(at(t0, 6)));
        assert_eq!(c.blocked(at(t0, 5)), vec!["ep".to_string()]);

        // The probe fails: open again for twice as long, then capped.
        c.record("ep", Health::Unreachable, true, at(t0, 6));
        assert_eq!(c.verdict("ep", at(t0, 7)), Verdict::Hold(at(t0, 16)));
        assert_eq!(c.verdict("ep", at(t0, 16)), Verdict::Probe);
        c.record("ep", Health::Unreachable, true, at(t0, 16));
        assert_eq!(c.verdict("ep", at(t0, 17)), Verdict::Hold(at(t0, 28)), "capped at 12 s");

        // A successful probe closes it; the next opening starts from the base cool-down.
        assert_eq!(c.verdict("ep", at(t0, 28)), Verdict::Probe);
        c.record("ep", Health::Reached, true, at(t0, 28));
        assert!(c.is_closed("ep"));
        assert_eq!(c.verdict("ep", at(t0, 28)), Verdict::Send);
        for _ in 0..3 {
            c.record("ep", Health::Unreachable, false, at(t0, 30));
        }
        assert_eq!(c.verdict("ep", at(t0, 31)), Verdict::Hold(at(t0, 35)));
    }

    #[test]
    fn a_lost_probe_is_replaced() {
        let c = circuits();
        let t0 = Utc::now();
        for _ in 0..3 {
            c.record("ep", Health::Unreachable, false, t0);
        }
        assert_eq!(c.verdict("ep", at(t0, 5)), Verdict::Probe);
        assert!(matches!(c.verdict("ep", at(t0, 34)), Verdict::Hold(_)));
        assert_eq!(c.verdict("ep", at(t0, 35)), Verdict::Probe, "30 s without an answer: the probe is lost");
    }

    /// A probe that went unsent (its endpoint's settings changed as it went) lets the next
    /// delivery probe at once, not after the probe's time runs out; the cool-down it ended
    /// stays as it was.
    #[test]
    fn an_abandoned_probe_is_replaced_at_once() {
        let c = circuits();
        let t0 = Utc::now();
        for _ in 0..3 {
            c.record("ep", Health::Unreachable, false, t0);
        }
        assert_eq!(c.verdict("ep", at(t0, 5)), Verdict::Probe);
        c.probe_abandoned("ep", at(t0, 6));
        assert_eq!(c.held_until("ep", at(t0, 6)), None);
        assert_eq!(c.verdict("ep", at(t0, 6)), Verdict::Probe);
        // It fails: twice the cool-down, as for any failed probe.
        c.record("ep", Health::Unreachable, true, at(t0, 7));
        assert_eq!(c.verdict("ep", at(t0, 8)), Verdict::Hold(at(t0, 17)));
        // Abandoning changes nothing of a circuit not probing.
        c.probe_abandoned("ep", at(t0, 8));
        assert_eq!(c.verdict("ep", at(t0, 8)), Verdict::Hold(at(t0, 17)));
    }

    /// Failures more than an hour apart do not add up, and a circuit nothing happens to
    /// for an hour (an endpoint no longer sent to) is forgotten.
    #[test]
    fn stale_circuits_are_forgotten() {
        let c = circuits();
        let t0 = Utc::now();
        for i in 0..2 {
            c.record("ep", Health::Unreachable, false, at(t0, i));
        }
        c.blocked(at(t0, 2));
        c.record("ep", Health::Unreachable, false, at(t0, 3 + 3600));
        assert!(c.is_closed("ep"), "the third failure, an hour after the others, does not open it");
        c.record("ep", Health::Unreachable, false, at(t0, 3 + 3601));
        c.record("ep", Health::Unreachable, false, at(t0, 3 + 3602));
        assert!(!c.is_closed("ep"), "three in a row do");
        assert!(c.lock().contains_key("ep"));
        assert_eq!(c.blocked(at(t0, 3 + 3603)), ["ep"]);
        // Its cool-down over, no delivery comes for an hour: forgotten.
        assert!(c.blocked(at(t0, 3 + 3602 + 10 + 3601)).is_empty());
        assert!(c.lock().is_empty() && c.is_closed("ep"));
        // A closed circuit with a failure or two goes too.
        c.record("quiet", Health::Unreachable, false, t0);
        c.blocked(at(t0, 3601));
        assert!(c.lock().is_empty());
    }

    #[test]
    fn zero_threshold_never_opens() {
        let c = Circuits::new(0, 5 * SEC, 12 * SEC, 30 * SEC);
        let t0 = Utc::now();
        for _ in 0..100 {
            c.record("ep", Health::Unreachable, false, t0);
        }
        assert_eq!(c.verdict("ep", t0), Verdict::Send);
        assert!(c.blocked(t0).is_empty());
    }

    #[test]
    fn health_of_results() {
        let r = |status| SendResult {
            status,
            body: String::new(),
            duration: SEC,
            retry_after: None,
            request_headers: None,
            unsendable: false,
            cancelled: false,
            url: None,
            stale: false,
            control: Default::default(),
        };
        assert_eq!(Health::of(&r(None)), Health::Unreachable);
        assert_eq!(Health::of(&r(Some(503))), Health::Unreachable);
        assert_eq!(Health::of(&r(Some(404))), Health::Reached);
        assert_eq!(Health::of(&SendResult { unsendable: true, ..r(None) }), Health::Untried);
        assert_eq!(Health::of(&SendResult { cancelled: true, ..r(None) }), Health::Untried);
        assert_eq!(Health::of(&r(Some(429))), Health::Reached);
        assert_eq!(Health::of(&r(Some(204))), Health::Reached);
    }
}
