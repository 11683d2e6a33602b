//! Moves deliveries from the store (or from ingest) to the network and back.
//!
//! Work in memory is bounded by `max_outstanding` permits: a permit is taken when a job
//! is claimed or handed over by ingest, and given back once its result is committed. The
//! poller only claims what it has permits for, so a backlog of millions stays on disk.
//! The payloads they hold are bounded too (`max_outstanding_bytes`): jobs past it are
//! handed back, and the poller claims nothing while it is reached.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hooklane_core::ids::{self, new_id};
use hooklane_core::model::{Attempt, DeliveryStatus, Endpoint, TriggerType};
use hooklane_core::{DateTime, Utc};
use hooklane_store::{AttemptOutcome, ClaimedKey, DeliveryKey, DynStore, Job, NextStep, RateSlot, Recorded, Stop};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::circuit::{Circuits, Health, Verdict};
use crate::limits::{fits, Gate, Gates};
use crate::marks::Marks;
use crate::policy::next_step;
use crate::sender::{Prepared, Sender};
use crate::DispatchConfig;

/// Engine events waiting to be read at most (see [`Dispatcher::events`]).
pub const EVENT_BACKLOG: usize = 10_000;
/// Results committed together at most.
const RECORD_BATCH: usize = 1024;
/// How long a deferred delivery waits before it may be claimed again.
const DEFER_FOR: Duration = Duration::from_secs(1);
/// How long a delivery whose transformation found no worker waits before it is tried again.
const SCRIPT_RETRY: chrono::Duration = chrono::Duration::seconds(10);
/// How long the deliveries of a paused endpoint are put back for when claimed: resuming it
/// makes them due at once ([`Dispatcher::endpoint_resumed`]), so this only bounds how often
/// a long pause has them claimed again (a backlog of millions, once an hour).
const PAUSE_HOLD: Duration = Duration::from_secs(3600);

/// Handle to the running delivery engine. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: DynStore,
    cfg: DispatchConfig,
    sender: Sender,
    outstanding: Semaphore,
    /// Payload bytes of the jobs started and not yet finished ([`HeldBytes`]).
    held_bytes: AtomicUsize,
    /// The largest payload of the deliveries the last claim that found any read (0: none
    /// yet).
    claimed_payload: AtomicUsize,
    in_flight: Semaphore,
    gates: Gates,
    circuits: Circuits,
    wake: Notify,
    finished: mpsc::UnboundedSender<Finished>,
    /// Endpoints this process disabled, with the version (`updated_at`) the disabling wrote:
    /// jobs already in memory whose endpoint snapshot is that version or an older one stop at
    /// once; a later version (re-enabled) goes on. Deleted endpoints and applications (by
    /// their id) are marked here for every version.
    disabled: Marks,
    /// Endpoints changed, with the version before the change's: jobs already in memory with
    /// an older snapshot are handed back, to be read again as the endpoint stands.
    changed: Marks,
    /// Endpoints paused through this process, with when (their `updated_at`): jobs already
    /// in memory for them are held rather than sent, as the disabled ones stop.
    paused: Marks,
    /// Messages whose content was deleted through this process: jobs already in memory hold
    /// a copy of the content, which must not go out after its deletion.
    expunged: Marks,
    /// Applications being emptied by a purge, with the highest message id it reached and
    /// when: one mark per application, however many messages (ids are time-ordered, and a
    /// purge goes through them in id order).
    expunged_through: std::sync::Mutex<HashMap<String, (String, Instant)>>,
    stopping: AtomicBool,
    /// Told once the engine shuts down: jobs still waiting their turn, a rate slot or the
    /// node's permit then go back to the store at once, rather than be sent during the
    /// grace (which is for requests already on the wire) or keep their lease to its end.
    shut_down: tokio::sync::watch::Sender<bool>,
    /// Where [`EngineEvent`]s go, once someone asked for them ([`Dispatcher::events`]).
    events: Mutex<Option<mpsc::Sender<EngineEvent>>>,
    /// Counts the batches in which this process disabled endpoints ([`Dispatcher::disablings`]).
    disablings: tokio::sync::watch::Sender<u64>,
}

/// Something the engine did that operators may want to be told about (hooklane's
/// operational webhooks). Sent once the store has recorded it, by the node that did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// The endpoint kept failing for `disable_after` and this node disabled it.
    EndpointDisabled { app_id: String, endpoint_id: String },
    /// An attempt worth telling about (which one: [`AttemptNews`]).
    Attempt {
        news: AttemptNews,
        app_id: String,
        msg_id: String,
        endpoint_id: String,
        attempt_id: String,
        attempted_at: DateTime<Utc>,
        /// The attempt's HTTP status, 0 when no response arrived.
        response_status: i32,
    },
}

/// Which attempts of a delivery are news (Svix's `message.attempt.*` operational events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptNews {
    /// The [`FAILING_AT`]th attempt in a row failed, and retries are left.
    Failing,
    /// The last attempt failed: no retry is left.
    Exhausted,
    /// Delivered after [`AttemptNews::Failing`] was told.
    Recovered,
}

/// The failed attempt that makes a delivery "failing" (Svix: the fourth).
pub const FAILING_AT: u32 = 4;

impl AttemptNews {
    /// What attempt number `attempts_made` of a delivery, leading to `next`, is news of.
    fn of(next: &NextStep, attempts_made: u32) -> Option<AttemptNews> {
        match next {
            NextStep::GiveUp => Some(AttemptNews::Exhausted),
            NextStep::RetryAt(_) if attempts_made == FAILING_AT => Some(AttemptNews::Failing),
            NextStep::Succeeded if attempts_made > FAILING_AT => Some(AttemptNews::Recovered),
            _ => None,
        }
    }
}

/// Hands each announcement of another process (a circuit reset, a stop) to `apply` until
/// the engine or the store ends; `lagged` tells the log how many a slow reader missed.
async fn follow<T: Clone>(
    inner: std::sync::Weak<Inner>,
    mut announced: tokio::sync::broadcast::Receiver<T>,
    lagged: fn(u64),
    apply: fn(&Inner, T),
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let what = match announced.recv().await {
            Ok(what) => what,
            Err(RecvError::Lagged(missed)) => {
                lagged(missed);
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else { return };
        apply(&inner, what);
    }
}

/// Starts over the circuit whose reset another node announced.
fn reset_circuit(inner: &Inner, endpoint_id: String) {
    if inner.circuits.forget(&endpoint_id) {
        tracing::info!(%endpoint_id, "circuit reset by another node");
    }
    inner.wake.notify_one();
}

/// Marks what was stopped (see [`Dispatcher::stop`]) for the jobs this process holds.
fn mark_stopped(inner: &Inner, what: &Stop) {
    match what {
        Stop::Message(msg_id) => inner.expunged.set(msg_id, DateTime::<Utc>::MAX_UTC),
        Stop::MessagesThrough { app_id, last_id } => {
            let keep = marks_kept(&inner.cfg);
            let mut marks = inner.expunged_through.lock().unwrap_or_else(|p| p.into_inner());
            marks.retain(|_, (_, at)| at.elapsed() < keep);
            let mark = marks.entry(app_id.clone()).or_insert_with(|| (String::new(), Instant::now()));
            if *last_id > mark.0 {
                *mark = (last_id.clone(), Instant::now());
            }
        }
        // Deliveries read from this version of the endpoint or an older one are given up
        // (a later change, re-enabling it, is a later version); claims no longer skip it, so
        // that its pending deliveries are failed when claimed.
        Stop::Disabled { endpoint_id, version } => {
            inner.circuits.forget(endpoint_id);
            inner.disabled.set(endpoint_id, *version);
        }
        Stop::Paused { endpoint_id, version } => inner.paused.set(endpoint_id, *version),
        // Jobs read from an older version than the change's (a mark covers its own version).
        Stop::Changed { endpoint_id, version } => {
            inner.changed.set(endpoint_id, *version - chrono::Duration::microseconds(1))
        }
        // Every snapshot of the endpoint, or of any endpoint of the application.
        Stop::Deleted(id) => {
            inner.circuits.forget(id);
            inner.disabled.set(id, DateTime::<Utc>::MAX_UTC);
        }
    }
}

enum Finished {
    /// With the number of attempts made so far, this one included, and whether its endpoint
    /// is FIFO (the next of its lane may be due once this is recorded).
    Attempted(AttemptOutcome, u32, Arc<Gate>, bool),
    Abandoned(ClaimedKey, Arc<Gate>, bool),
    /// Not sent (its endpoint's circuit is open): back to the store, due at the end of the
    /// cool-down, or at once if the circuit closed meanwhile ([`defer_paused`]).
    Paused(ClaimedKey, DateTime<Utc>, Arc<Gate>),
    /// Not sent, for a reason of its own (no transformation worker, no rate slot in time,
    /// no turn in time, settings gone stale): back to the store, due at this time.
    HandedBack(ClaimedKey, DateTime<Utc>, Arc<Gate>),
    /// Not sent: its endpoint was paused after the job was taken (with its application).
    Held(ClaimedKey, String, Arc<Gate>),
    /// Not sent: it waited its turn so long that its lease would end before a request could
    /// (a slow endpoint with a long queue). Nothing is written: the lease's end makes it due
    /// again, for this node or another, and sending it now could send it twice.
    Expired(Arc<Gate>),
}

/// Room for `n` deliveries in memory, taken by ingest before it writes them as leased.
pub struct Reservation {
    inner: Arc<Inner>,
    count: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.outstanding.add_permits(self.count);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct StartError(#[from] reqwest::Error);

impl Dispatcher {
    /// Starts the poller and the result recorder on the current tokio runtime.
    pub fn start(store: DynStore, cfg: DispatchConfig) -> Result<Self, StartError> {
        let sender = Sender::new(&cfg, Some(store.clone()))?;
        let (finished, results) = mpsc::unbounded_channel();
        // A job claimed before a change may still be in memory for its lease, or on the
        // wire for a request's time after it: marks are kept twice that.
        let marks_kept = marks_kept(&cfg);
        let inner = Arc::new(Inner {
            store,
            outstanding: Semaphore::new(cfg.max_outstanding),
            held_bytes: AtomicUsize::new(0),
            claimed_payload: AtomicUsize::new(0),
            in_flight: Semaphore::new(cfg.max_in_flight),
            // A quarter of the node's payload bytes to each endpoint at most.
            gates: Gates::new(cfg.per_endpoint_in_flight, (cfg.max_outstanding_bytes / 4).max(1)),
            // A probe is taken as lost once it has had twice the time an attempt may take.
            circuits: Circuits::new(
                cfg.circuit_failures,
                cfg.circuit_cooldown,
                cfg.circuit_max_cooldown,
                (cfg.request_timeout + cfg.connect_timeout) * 2,
            ),
            cfg,
            sender,
            wake: Notify::new(),
            finished,
            disabled: Marks::new(marks_kept),
            paused: Marks::new(marks_kept),
            changed: Marks::new(marks_kept),
            expunged: Marks::new(marks_kept),
            expunged_through: Default::default(),
            stopping: AtomicBool::new(false),
            shut_down: tokio::sync::watch::Sender::new(false),
            events: Mutex::new(None),
            disablings: tokio::sync::watch::channel(0).0,
        });
        tokio::spawn(record_loop(inner.clone(), results));
        tokio::spawn(poll_loop(inner.clone()));
        if let Some(resets) = inner.store.circuit_resets() {
            // Resets missed leave those circuits to their cool-down.
            let lagged = |missed| tracing::debug!(missed, "circuit resets missed");
            tokio::spawn(follow(Arc::downgrade(&inner), resets, lagged, reset_circuit));
        }
        if let Some(stops) = inner.store.stops() {
            // Stops missed (thousands at once) are left to the store, which failed the
            // deliveries of deleted content and which claims read endpoints from; a job
            // already held may still be sent.
            let lagged = |missed| tracing::warn!(missed, "stops announced by other nodes were missed");
            let apply = |inner: &Inner, what: Stop| mark_stopped(inner, &what);
            tokio::spawn(follow(Arc::downgrade(&inner), stops, lagged, apply));
        }
        Ok(Dispatcher { inner })
    }

    /// How long a delivery written as leased by ingest stays reserved to this process.
    pub fn lease(&self) -> Duration {
        self.inner.cfg.lease
    }

    /// Reserves room for deliveries to these endpoints, or `None` when memory is full or
    /// one of them is saturated or its circuit is not closed (the deliveries are then
    /// written unleased and a poller takes them when there is room, or the circuit closes).
    /// (Deliveries to FIFO endpoints are then still written unleased by the store, which
    /// alone knows whether the one before has finished; their room is given back.)
    pub fn reserve(&self, endpoints: &[Arc<Endpoint>]) -> Option<Reservation> {
        if self.inner.stopping.load(Ordering::Relaxed)
            || ingest_bytes_full(&self.inner)
            || endpoints.iter().any(|e| self.inner.gates.is_saturated(&e.id) || !self.inner.circuits.is_closed(&e.id))
        {
            return None;
        }
        let n = endpoints.len();
        let permit = self.inner.outstanding.try_acquire_many(u32::try_from(n).ok()?).ok()?;
        permit.forget();
        Some(Reservation { inner: self.inner.clone(), count: n })
    }

    /// Starts deliveries that ingest wrote as leased to this process.
    pub fn submit(&self, jobs: Vec<Job>, mut reservation: Reservation) {
        let n = jobs.len().min(reservation.count);
        reservation.count -= n; // the rest is given back when the reservation drops
        admit(&self.inner, jobs);
    }

    /// The engine's events from now on (a later call takes them over from an earlier one).
    /// Until this is called none are produced. At most [`EVENT_BACKLOG`] wait unread; past
    /// that, new ones are dropped and counted (`hooklane_engine_events_dropped_total`)
    /// rather than grow memory without bound during a mass failure.
    pub fn events(&self) -> mpsc::Receiver<EngineEvent> {
        let (tx, rx) = mpsc::channel(EVENT_BACKLOG);
        *self.inner.events.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Changes each time this process disables endpoints that kept failing, so that what
    /// caches endpoints drops them at once (other nodes are told through the store).
    pub fn disablings(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.disablings.subscribe()
    }

    /// Where transformations run (see [`crate::scripts`]).
    pub fn scripts(&self) -> Arc<crate::scripts::Scripts> {
        self.inner.sender.scripts()
    }

    /// Makes the poller look at the store now (after a resend, a recover…).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Sends to this endpoint again without waiting for its circuit's cool-down: someone
    /// asked for one of its deliveries by hand (a resend), which says it is worth trying
    /// now. Every node sharing the store resets its circuit too (announced through the
    /// store: [`hooklane_store::Store::announce_circuit_reset`]).
    pub fn retry_endpoint_now(&self, endpoint_id: &str) {
        self.inner.circuits.forget(endpoint_id);
        self.inner.wake.notify_one();
        // Other nodes sharing the store start the endpoint's circuit over too.
        let (store, endpoint_id) = (self.inner.store.clone(), endpoint_id.to_string());
        tokio::spawn(async move { store.announce_circuit_reset(&endpoint_id).await });
    }

    /// The endpoint was changed (a new URL, re-enabled…) or its failed deliveries recovered:
    /// as [`Dispatcher::retry_endpoint_now`], and the deliveries waiting in the store that
    /// fall due within the longest cool-down (those paused by any node's circuit among
    /// them, and retries due that soon) are made due now, rather than wait out a pause
    /// that the fix made pointless.
    pub fn endpoint_fixed(&self, endpoint_id: &str) {
        let now = Utc::now();
        self.retry_endpoint_now(endpoint_id);
        let window = chrono::Duration::from_std(self.inner.cfg.circuit_max_cooldown).unwrap_or_default();
        let (inner, endpoint_id) = (self.inner.clone(), endpoint_id.to_string());
        tokio::spawn(async move {
            match inner.store.hasten_deliveries(&endpoint_id, now + window, now).await {
                Ok(n) if n > 0 => tracing::info!(%endpoint_id, deliveries = n, "paused deliveries due now"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, %endpoint_id, "paused deliveries keep their cool-down"),
            }
            inner.wake.notify_one();
        });
    }

    /// The endpoint was resumed: its held deliveries (and its retries due within the hold)
    /// are due now, wherever they were held. Those a claim was putting back at that moment
    /// are seen by that claim's look at the endpoint after it ([`hold`]).
    pub fn endpoint_resumed(&self, endpoint_id: &str) {
        self.inner.paused.remove(endpoint_id);
        let (inner, endpoint_id) = (self.inner.clone(), endpoint_id.to_string());
        // A few minutes beyond the hold: nodes' clocks differ.
        let hold = chrono::Duration::from_std(PAUSE_HOLD).unwrap_or_default() + chrono::Duration::minutes(5);
        tokio::spawn(async move {
            let now = Utc::now();
            match inner.store.hasten_deliveries(&endpoint_id, now + hold, now).await {
                Ok(n) if n > 0 => tracing::info!(%endpoint_id, deliveries = n, "resumed: held deliveries due now"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, %endpoint_id, "resumed, but held deliveries keep their time"),
            }
            inner.wake.notify_one();
        });
    }

    /// Content was deleted (a message's, or an application's messages up to an id, in id
    /// order: one mark for a purge's chunk), or an endpoint disabled or paused: the jobs this
    /// process already holds for it, read before the change, are not sent (dropped, or held
    /// for a paused endpoint), and neither are those of the other processes sharing the
    /// store once told (this returns when the announcement is made; best effort, see
    /// [`hooklane_store::Store::announce_stop`]).
    pub async fn stop(&self, what: Stop) {
        mark_stopped(&self.inner, &what);
        self.inner.store.announce_stop(&what).await;
    }

    /// [`Dispatcher::stop`] from code that cannot wait: marked here at once, announced by a
    /// task of its own.
    pub fn stop_soon(&self, what: Stop) {
        mark_stopped(&self.inner, &what);
        let store = self.inner.store.clone();
        tokio::spawn(async move { store.announce_stop(&what).await });
    }

    /// Stops claiming work and waits (up to `grace`) for what is in flight to be recorded.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        self.inner.shut_down.send_replace(true);
        self.inner.wake.notify_one();
        let all = u32::try_from(self.inner.cfg.max_outstanding).unwrap_or(u32::MAX);
        let drained = self.inner.outstanding.acquire_many(all);
        if let Ok(Ok(permit)) = tokio::time::timeout(grace, drained).await {
            drop(permit);
        } else {
            tracing::warn!("shutdown: deliveries still in flight; their leases will expire and they will be retried");
        }
    }
}

/// Starts jobs that already hold outstanding permits, deferring those whose endpoint
/// already has as much work in memory as it may, or whose circuit is open.
fn admit(inner: &Arc<Inner>, jobs: Vec<Job>) {
    let now = Utc::now();
    let soon = now + chrono::Duration::from_std(DEFER_FOR).unwrap_or_default();
    let mut deferred: HashMap<DateTime<Utc>, Vec<ClaimedKey>> = HashMap::new();
    let mut paused: HashMap<DateTime<Utc>, Vec<ClaimedKey>> = HashMap::new();
    let mut held: Vec<(ClaimedKey, String)> = Vec::new();
    let mut n_past_bytes = 0u64;
    for job in jobs {
        let key = || claimed_key(&job);
        // Held, not tried (a disabled endpoint's deliveries are failed, paused or not).
        if job.endpoint.paused && !job.endpoint.disabled {
            held.push((key(), job.endpoint.app_id.clone()));
            continue;
        }
        if let Some(until) = inner.circuits.held_until(&job.endpoint.id, now) {
            paused.entry(until).or_default().push(key());
            continue;
        }
        let gate = inner.gates.get(&job.endpoint.id);
        let cap = endpoint_cap(&inner.cfg, job.endpoint.rate_limit);
        gate.cap.store(cap, Ordering::Relaxed);
        if gate.outstanding.fetch_add(1, Ordering::AcqRel) >= cap {
            gate.outstanding.fetch_sub(1, Ordering::AcqRel);
            gate.handed_back_at(soon);
            deferred.entry(soon).or_default().push(key());
            continue;
        }
        let Some(bytes) = HeldBytes::take(inner, &gate, job.message.payload.len()) else {
            gate.outstanding.fetch_sub(1, Ordering::AcqRel);
            gate.handed_back_at(soon);
            deferred.entry(soon).or_default().push(key());
            n_past_bytes += 1;
            continue;
        };
        let send_by = send_by(&inner.cfg, job.delivery.next_attempt_at, Utc::now(), Instant::now());
        tokio::spawn(run_job(inner.clone(), job, gate, send_by, bytes));
    }
    let n_paused: usize = paused.values().map(Vec::len).sum();
    if n_paused > 0 {
        metrics::counter!("hooklane_deliveries_paused_total").increment(n_paused as u64);
    }
    let n_full = deferred.values().map(Vec::len).sum::<usize>() as u64 - n_past_bytes;
    if n_full > 0 {
        metrics::counter!("hooklane_claimed_past_room_total").increment(n_full);
    }
    if n_past_bytes > 0 {
        metrics::counter!("hooklane_claimed_past_payload_bytes_total").increment(n_past_bytes);
    }
    if !deferred.is_empty() || n_paused > 0 || !held.is_empty() {
        let inner = inner.clone();
        tokio::spawn(async move {
            let n = deferred.values().map(Vec::len).sum::<usize>() + n_paused + held.len();
            defer_paused(&inner, paused).await;
            defer_all(&inner, deferred).await;
            hold(&inner, held).await;
            inner.outstanding.add_permits(n);
        });
    }
}

/// Hands the deliveries of paused endpoints back for [`PAUSE_HOLD`], then looks at each
/// endpoint again: one resumed meanwhile (its resumption may have looked for held
/// deliveries while these were still leased) gets them due now.
async fn hold(inner: &Inner, held: Vec<(ClaimedKey, String)>) {
    if held.is_empty() {
        return;
    }
    let until = Utc::now() + chrono::Duration::from_std(PAUSE_HOLD).unwrap_or_default();
    let mut by_endpoint: HashMap<(String, String), Vec<ClaimedKey>> = HashMap::new();
    for (key, app_id) in held {
        by_endpoint.entry((app_id, key.key.endpoint_id.clone())).or_default().push(key);
    }
    defer_all(inner, HashMap::from([(until, by_endpoint.values().flatten().cloned().collect())])).await;
    for (app_id, endpoint_id) in by_endpoint.into_keys() {
        // This node's mark as it was before the read: a pause through this node after the
        // read marks it anew, and that mark stays.
        let mark = inner.paused.get(&endpoint_id);
        let (resumed, gone) = match inner.store.get_endpoint(&app_id, &endpoint_id).await {
            Ok(Some(ep)) => (!ep.paused, false),
            Ok(None) => (false, true),
            Err(e) => {
                tracing::warn!(error = %e, %endpoint_id, "could not look whether a paused endpoint was resumed");
                (false, false)
            }
        };
        if resumed || gone {
            // Resumed through another node (or this one's mark outlived its clock), or
            // deleted: this node's mark goes, or it would hold what it claims again and again.
            if let Some(mark) = mark {
                inner.paused.remove_if(&endpoint_id, mark);
            }
        }
        if resumed {
            // Those handed back just now, no longer leased: a claim since (the resumption
            // made them due) is left alone.
            undefer(inner, &endpoint_id, vec![until]).await;
            inner.wake.notify_one();
        }
    }
}

/// Hands paused deliveries back, due at the end of their circuit's cool-down, or now for
/// an endpoint whose circuit was reset meanwhile ([`Dispatcher::endpoint_fixed`] racing
/// the pause): looked at before the write and again after it, so a reset that
/// hastened the store's rows just before this write is not undone by it.
async fn defer_paused(inner: &Inner, groups: HashMap<DateTime<Utc>, Vec<ClaimedKey>>) {
    if groups.is_empty() {
        return;
    }
    let now = Utc::now();
    let mut by_due: HashMap<DateTime<Utc>, Vec<ClaimedKey>> = HashMap::new();
    // The cool-down ends each endpoint's deliveries were handed back until.
    let mut held: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
    for (until, keys) in groups {
        for key in keys {
            if inner.circuits.is_closed(&key.key.endpoint_id) {
                by_due.entry(now).or_default().push(key);
            } else {
                held.entry(key.key.endpoint_id.clone()).or_default().push(until);
                by_due.entry(until).or_default().push(key);
            }
        }
    }
    defer_all(inner, by_due).await;
    let mut reset = false;
    for (endpoint_id, mut until) in held {
        if inner.circuits.is_closed(&endpoint_id) {
            until.sort();
            until.dedup();
            // Only those still as this wrote them (not leased): a claim since is left alone.
            undefer(inner, &endpoint_id, until).await;
            reset = true;
        }
    }
    if reset {
        inner.wake.notify_one();
    }
}

/// Hands deliveries back to the store, one write per due time.
async fn defer_all(inner: &Inner, groups: HashMap<DateTime<Utc>, Vec<ClaimedKey>>) {
    for (due, keys) in groups {
        if let Err(e) = inner.store.defer_deliveries(keys, due).await {
            tracing::warn!(error = %e, "could not defer deliveries; their leases will expire instead");
        }
    }
}

/// Makes the endpoint's deliveries this node handed back due at one of `due_at` (and
/// not claimed since) due now.
async fn undefer(inner: &Inner, endpoint_id: &str, due_at: Vec<DateTime<Utc>>) {
    if let Err(e) = inner.store.undefer_deliveries(endpoint_id, due_at, Utc::now()).await {
        tracing::warn!(error = %e, %endpoint_id, "handed-back deliveries keep their time");
    }
}

/// The time a hand-back due at `due` is written with, so that the batch's hand-backs share
/// a few writes rather than one each: those already due at `now`, the others rounded up to
/// the next tenth of a second (never made due sooner).
fn hand_back_batch(due: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    if due <= now {
        return now;
    }
    let step = 100_000; // µs
    let at = due.timestamp_micros();
    DateTime::from_timestamp_micros(at + (step - at.rem_euclid(step)) % step).unwrap_or(due)
}

/// A job's key, with the lease its claim (or ingest) wrote.
fn claimed_key(job: &Job) -> ClaimedKey {
    ClaimedKey {
        key: DeliveryKey { msg_id: job.message.id.clone(), endpoint_id: job.endpoint.id.clone() },
        lease: job.delivery.next_attempt_at,
    }
}

/// Hands a job back unsent, due at `due`, counted by `reason`.
fn hand_back(inner: &Inner, key: ClaimedKey, due: DateTime<Utc>, gate: Arc<Gate>, reason: &'static str) {
    metrics::counter!("hooklane_deliveries_handed_back_total", "reason" => reason).increment(1);
    let _ = inner.finished.send(Finished::HandedBack(key, due, gate));
}

/// Most jobs one endpoint may hold in memory: for a rate-limited endpoint no more than it
/// can send in a quarter of a lease, so a queued job is never still waiting when its lease
/// ends even when a few nodes share the endpoint's rate.
fn endpoint_cap(cfg: &DispatchConfig, rate: Option<u32>) -> usize {
    let by_rate =
        rate.filter(|r| *r > 0).map(|r| (f64::from(r) * cfg.lease.as_secs_f64() / 4.0) as usize).unwrap_or(usize::MAX);
    cfg.per_endpoint_outstanding.min(by_rate).max(1)
}

/// How long after it is admitted a delivery may still start its request: its lease runs
/// from the claim (or ingest's write), a moment before, and the request, its connection
/// and an egress proxy's address check included, must end within it (the configuration
/// keeps a quarter of the lease, at least, for this).
fn send_budget(cfg: &DispatchConfig) -> Duration {
    let request = cfg.request_timeout + cfg.connect_timeout + Duration::from_secs(1);
    cfg.lease.saturating_sub(request)
}

/// The latest a delivery admitted `now` may start its request: [`send_budget`] counted
/// from its claim rather than its admission, the claim's time read from the lease's end it
/// wrote (`lease_end`, by this node's clock, which timed it): a claim or an ingest that
/// took long (a busy pool, a queue of writes) leaves less.
fn send_by(cfg: &DispatchConfig, lease_end: Option<DateTime<Utc>>, now: DateTime<Utc>, at: Instant) -> Instant {
    let budget = send_budget(cfg);
    // (A lease already over leaves nothing.)
    let Some(left) = lease_end.map(|end| (end - now).to_std().unwrap_or(Duration::ZERO)) else { return at + budget };
    let since_claim = cfg.lease.saturating_sub(left);
    at + budget.saturating_sub(since_claim)
}

/// Payload bytes a started job holds, of the node's and of its endpoint's, given back when
/// it ends (whatever way it ends).
struct HeldBytes {
    inner: Arc<Inner>,
    gate: Arc<Gate>,
    n: usize,
}

impl HeldBytes {
    /// Room for a payload of `n` bytes; `None` when it would pass `max_outstanding_bytes`,
    /// or its endpoint's share ([`Gate::byte_cap`]), but as [`fits`] lets a large one in.
    fn take(inner: &Arc<Inner>, gate: &Arc<Gate>, n: usize) -> Option<HeldBytes> {
        gate.last_payload.store(n, Ordering::Relaxed);
        let mut held = HeldBytes { inner: inner.clone(), gate: gate.clone(), n: 0 };
        held.grow(n).then_some(held)
    }

    /// Room for `extra` bytes more, which the job holds beyond its payload while it waits
    /// its turn (a transformation's body): false, and nothing more held, when they do not
    /// fit as [`take`](Self::take) tells, the job's own bytes counted as one with them.
    fn grow(&mut self, extra: usize) -> bool {
        if extra == 0 {
            return true;
        }
        let (own, total) = (self.n, self.n.saturating_add(extra));
        let room = |most: usize| {
            move |held: usize| fits(held.saturating_sub(own), total, most).then(|| held.saturating_add(extra))
        };
        if self.gate.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, room(self.gate.byte_cap)).is_err() {
            return false;
        }
        let node = room(self.inner.cfg.max_outstanding_bytes);
        if self.inner.held_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, node).is_err() {
            self.gate.bytes.fetch_sub(extra, Ordering::AcqRel);
            return false;
        }
        self.n = total;
        true
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.gate.bytes.fetch_sub(self.n, Ordering::AcqRel);
        self.inner.held_bytes.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// Whether ingest should write its deliveries for a poller to claim rather than hand them
/// over: half the payload bytes are left to claims, so that ingest alone never keeps the
/// node full, and the poller out (retries, lanes, deliveries handed back wait on it).
fn ingest_bytes_full(inner: &Inner) -> bool {
    inner.held_bytes.load(Ordering::Acquire) >= inner.cfg.max_outstanding_bytes / 2
}

/// Most deliveries the next claim asks for, for their payloads to fit the bytes left if
/// none is larger than the largest of the last claim's: a claim reads its payloads before
/// any is let in (512 of a megabyte would be half a gigabyte for a moment), and those past
/// the room would only be handed back. One before any claim has told a size; 0 while not
/// one more [`fits`].
fn claim_for_bytes(inner: &Inner) -> usize {
    let (held, most) = (inner.held_bytes.load(Ordering::Acquire), inner.cfg.max_outstanding_bytes);
    match inner.claimed_payload.load(Ordering::Relaxed) {
        0 => 1,
        each => match most.saturating_sub(held) / each {
            0 => usize::from(fits(held, each, most)),
            n => n,
        },
    }
}

/// Sends one delivery, if it can start by `send_by` (so that the request ends within the
/// delivery's lease), and hands its outcome to the record loop. `bytes` is held to the
/// end, whichever return ends it.
async fn run_job(inner: Arc<Inner>, job: Job, gate: Arc<Gate>, send_by: Instant, mut bytes: HeldBytes) {
    let endpoint = &job.endpoint;
    let key = claimed_key(&job);
    if settled_unsent(&inner, &job, &key, &gate) {
        return;
    }
    // Before the permits: a transformation may wait for a worker.
    let prepared = inner.sender.prepare(&job.message, endpoint).await;
    // Its transformation waited for a worker past the lease's budget: back, due now, as a
    // job that waited its turn, rather than left to wait out the rest of its lease (its
    // FIFO lane with it). The store takes it back only under the lease it claimed: one that
    // ran out and was claimed again meanwhile is left to that claim.
    // (One no worker could run keeps its later time, below.)
    if Instant::now() > send_by && !matches!(prepared, Prepared::Later(_)) {
        metrics::counter!("hooklane_deliveries_lease_expired_total").increment(1);
        hand_back(&inner, key, Utc::now(), gate, "turn");
        return;
    }
    let sent = match prepared {
        // Paused while its transformation ran: held, no attempt recorded.
        Prepared::Done(_) if paused_here(&inner, endpoint) => {
            let _ = inner.finished.send(Finished::Held(key, endpoint.app_id.clone(), gate));
            return;
        }
        // Its transformation failed, or cancelled it, as the endpoint stood when it was
        // read; changed since (a fix of the code saved while it queued for a worker), it is
        // read and run again as the endpoint now stands rather than failed for good.
        Prepared::Done(_) if settled_unsent(&inner, &job, &key, &gate) => return,
        // Nothing to send: no permit, and no circuit verdict (it could be a probe that
        // this result would tell nothing).
        Prepared::Done(result) => Ok((result, false)),
        Prepared::Later(why) => {
            // Not an attempt: no worker could run the transformation (nothing was tried).
            tracing::warn!(endpoint_id = %endpoint.id, why = %why, "transformation could not run; delivery handed back");
            metrics::counter!("hooklane_transformations_unavailable_total").increment(1);
            hand_back(&inner, key, Utc::now() + SCRIPT_RETRY, gate, "transformation");
            return;
        }
        Prepared::Ready(ready) => {
            // A transformation's body is held while the job waits its turn, as its payload
            // is: counted with it, or a template copying its payload many times (or a script
            // answering megabytes) would hold up to 4 MiB more per job, uncounted, for each of
            // the thousand jobs an endpoint may have waiting. Past the room: back, for later.
            if !bytes.grow(ready.held_bytes()) {
                let due = Utc::now() + chrono::Duration::from_std(DEFER_FOR).unwrap_or_default();
                gate.handed_back_at(due);
                return hand_back(&inner, key, due, gate, "bytes");
            }
            // The endpoint's permit, then its rate slot, then the node's permit: a slot is
            // taken only once the endpoint may send (a slot taken before a long wait for a
            // permit would be used late, together with others: a burst), and the node's
            // permit is not held while the slot comes. Queued behind a slow endpoint until
            // the lease's budget is spent, the delivery goes back due now (the lease is still
            // this node's), rather than wait for the lease to run out.
            let turn = tokio::time::timeout_at(send_by.into(), gate.in_flight.acquire());
            let Some(turn) = unless_shut_down(&inner, turn).await else {
                return hand_back(&inner, key, Utc::now(), gate.clone(), "shutdown");
            };
            let Ok(Ok(_endpoint_permit)) = turn else {
                metrics::counter!("hooklane_deliveries_lease_expired_total").increment(1);
                hand_back(&inner, key, Utc::now(), gate.clone(), "turn");
                return;
            };
            // What changed while it waited for its turn is looked at before a rate slot is
            // spent on it: a slot taken for a job that is then not sent is lost to the
            // endpoint, and held back by its circuit, a whole turn's worth of jobs would be.
            if settled_unsent(&inner, &job, &key, &gate) {
                return;
            }
            // The rate slot, then the node's permit; a slot whose time passed while the
            // permit was awaited (the node busy with other endpoints' requests) is not used
            // late, together with the others that waited: that would be a burst the rate
            // does not allow. One fresh slot is taken instead, the permit in hand: used if it
            // comes within the slack, else the delivery goes back to the store for it (the
            // late slot is lost: the endpoint gets a little less, never more; and no permit
            // is held through a long wait).
            let slot_at = match rate_wait(&inner, &gate, endpoint, send_by).await {
                // (No timer for no wait: a zero sleep still waits for the timer's next tick, a
                // millisecond on every delivery.)
                Ok(wait) if wait.is_zero() => Instant::now(),
                Ok(wait) => {
                    if unless_shut_down(&inner, tokio::time::sleep(wait)).await.is_none() {
                        return hand_back(&inner, key, Utc::now(), gate.clone(), "shutdown");
                    }
                    Instant::now()
                }
                // Its slots are taken past the lease's budget (other nodes send to it too):
                // back, no slot taken, for when the next free one is within a claim's reach.
                Err(next_free) => {
                    hand_back(&inner, key, rate_retry_at(&inner.cfg, next_free, Utc::now()), gate.clone(), "rate");
                    return;
                }
            };
            let Some(permit) = unless_shut_down(&inner, inner.in_flight.acquire()).await else {
                return hand_back(&inner, key, Utc::now(), gate.clone(), "shutdown");
            };
            let Ok(_permit) = permit else { return };
            if let Some(rate) = endpoint.rate_limit.filter(|r| *r > 0 && slot_at.elapsed() > slot_slack(*r)) {
                metrics::counter!("hooklane_rate_slots_retaken_total").increment(1);
                match rate_wait(&inner, &gate, endpoint, send_by).await {
                    Ok(wait) if wait.is_zero() => {}
                    Ok(wait) if wait <= slot_slack(rate) => tokio::time::sleep(wait).await,
                    Ok(wait) => {
                        let due = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                        hand_back(&inner, key, due, gate.clone(), "rate");
                        return;
                    }
                    Err(next_free) => {
                        hand_back(&inner, key, rate_retry_at(&inner.cfg, next_free, Utc::now()), gate.clone(), "rate");
                        return;
                    }
                }
            }
            if Instant::now() > send_by {
                tracing::debug!(msg_id = %key.key.msg_id, endpoint_id = %key.key.endpoint_id, "lease ran out while queued");
                let _ = inner.finished.send(Finished::Expired(gate.clone()));
                return;
            }
            // Its content deleted, its endpoint disabled, deleted, changed or paused while
            // this waited: not sent as it was read (see `settled_unsent`).
            if settled_unsent(&inner, &job, &key, &gate) {
                return;
            }
            // Decided again at the last moment: jobs queued behind the failures that opened
            // the circuit go back to the store instead of failing one by one.
            match inner.circuits.verdict(&endpoint.id, Utc::now()) {
                Verdict::Send => Ok((inner.sender.send(&job.message, endpoint, ready).await, false)),
                Verdict::Probe => Ok((inner.sender.send(&job.message, endpoint, ready).await, true)),
                Verdict::Hold(until) => Err(until),
            }
        }
    };
    let (result, probe) = match sent {
        Ok(sent) => sent,
        Err(until) => {
            pause(&inner, key, until, gate);
            return;
        }
    };
    let now = Utc::now();
    if result.stale {
        // Not an attempt: sent nothing, for settings that are no longer the endpoint's.
        // Claimed again, it is read with the ones in force. A probe that ends so tells the
        // circuit nothing: it lets another probe go at once, rather than hold every delivery
        // until this one's time runs out.
        if probe {
            inner.circuits.probe_abandoned(&endpoint.id, now);
        }
        hand_back(&inner, key, now, gate, "stale");
        return;
    }
    let health = Health::of(&result);
    inner.circuits.record(&endpoint.id, health, probe, now);
    if probe && health == Health::Reached {
        // The circuit closed: its paused deliveries are due, claim them now.
        inner.wake.notify_one();
    }
    let attempts_made = job.delivery.attempts + 1;
    let next = next_step(&inner.cfg, endpoint.retry_schedule.as_deref(), &result, attempts_made, now);
    let attempt_id = new_id(ids::ATTEMPT);
    crate::telemetry::log_attempt(&attempt_id, &job, &result, attempts_made);
    let attempt = Attempt {
        id: attempt_id,
        msg_id: job.message.id.clone(),
        endpoint_id: endpoint.id.clone(),
        app_id: job.message.app_id.clone(),
        url: result.url.clone().unwrap_or_else(|| endpoint.url.clone()),
        status: if result.succeeded() {
            DeliveryStatus::Success
        } else if result.cancelled {
            DeliveryStatus::Canceled
        } else {
            DeliveryStatus::Fail
        },
        response_status: result.status.map(i32::from).unwrap_or(0),
        response: result.body,
        duration_ms: result.duration.as_millis() as i64,
        trigger: job.delivery.trigger,
        created_at: now,
        request_headers: result.request_headers,
    };
    crate::telemetry::observe_attempt(&attempt, job.message.created_at);
    let lane = endpoint.order.is_fifo();
    // The lease it was sent under: the end its claim (or its ingest) wrote.
    let lease = job.delivery.next_attempt_at;
    let outcome = AttemptOutcome {
        attempt,
        next,
        lease,
        disable_endpoint: result.control.disable_endpoint,
        untried: result.unsendable,
    };
    let _ = inner.finished.send(Finished::Attempted(outcome, attempts_made, gate, lane));
}

/// How long a mark is kept: as long as a job it is for can live in memory, and then some.
fn marks_kept(cfg: &DispatchConfig) -> Duration {
    (cfg.lease + cfg.request_timeout + cfg.connect_timeout) * 2
}

/// Whether the message's content was deleted through this process after the job read it.
fn expunged(inner: &Inner, message: &hooklane_core::model::Message) -> bool {
    if inner.expunged.get(&message.id).is_some() {
        return true;
    }
    let through = inner.expunged_through.lock().unwrap_or_else(|p| p.into_inner());
    through
        .get(&message.app_id)
        .is_some_and(|(last, at)| at.elapsed() < marks_kept(&inner.cfg) && message.id.as_str() <= last.as_str())
}

/// What `wait` gives, unless the engine shuts down first, or has already (see
/// `Inner::shut_down`): then `None`, and not even a permit free at once is taken. (`biased`:
/// `wait` first, so that one ready at once costs no look at the shutdown.)
async fn unless_shut_down<T>(inner: &Inner, wait: impl std::future::Future<Output = T>) -> Option<T> {
    if inner.stopping.load(Ordering::Relaxed) {
        return None;
    }
    // (Subscribed only when looked at.)
    let shut_down = async {
        let _ = inner.shut_down.subscribe().wait_for(|down| *down).await;
    };
    tokio::select! {
        biased;
        done = wait => Some(done),
        () = shut_down => None,
    }
}

/// Settles a job that must not be sent now; whether it did. Given up when its content was
/// deleted or its endpoint disabled (in the job's snapshot, or marked since; a polling
/// endpoint, sent nothing, as a node of an older version may have made a delivery to one
/// during a rolling upgrade); held when its endpoint was paused since; handed back for the
/// end of the cool-down when its endpoint's circuit is open.
fn settled_unsent(inner: &Inner, job: &Job, key: &ClaimedKey, gate: &Arc<Gate>) -> bool {
    let endpoint = &job.endpoint;
    let disabled = endpoint.disabled || endpoint.polling || disabled_here(inner, endpoint);
    let finished = if disabled || expunged(inner, &job.message) {
        Finished::Abandoned(key.clone(), gate.clone(), endpoint.order.is_fifo())
    } else if inner.changed.covers(&endpoint.id, endpoint.updated_at) {
        // Read again as the endpoint now stands (its URL, headers, transformation…).
        hand_back(inner, key.clone(), Utc::now(), gate.clone(), "stale");
        return true;
    } else if paused_here(inner, endpoint) {
        Finished::Held(key.clone(), endpoint.app_id.clone(), gate.clone())
    } else if let Some(until) = inner.circuits.held_until(&endpoint.id, Utc::now()) {
        pause(inner, key.clone(), until, gate.clone());
        return true;
    } else {
        return false;
    };
    let _ = inner.finished.send(finished);
    true
}

/// Whether the endpoint was disabled (by this process, or another that announced it) after
/// the job's snapshot of it, or deleted, or its application deleted.
fn disabled_here(inner: &Inner, endpoint: &Endpoint) -> bool {
    inner.disabled.covers_any(&[&endpoint.id, &endpoint.app_id], endpoint.updated_at)
}

/// Whether the endpoint was paused through this process after the job's snapshot of it.
fn paused_here(inner: &Inner, endpoint: &Endpoint) -> bool {
    inner.paused.covers(&endpoint.id, endpoint.updated_at)
}

/// Hands a job back unsent, to be due again at `until` (its endpoint's circuit is open).
fn pause(inner: &Inner, key: ClaimedKey, until: DateTime<Utc>, gate: Arc<Gate>) {
    metrics::counter!("hooklane_deliveries_paused_total").increment(1);
    let _ = inner.finished.send(Finished::Paused(key, until, gate));
}

/// How long to wait for the endpoint's next send slot, taken now; `Err` with when the next
/// free slot starts when that is after `send_by` (not taken then). Slots come from the
/// store so that the limit holds across every node sharing it; if the store cannot answer,
/// this process's own bucket keeps the endpoint within its rate at least locally.
async fn rate_wait(
    inner: &Inner,
    gate: &Gate,
    endpoint: &Endpoint,
    send_by: Instant,
) -> Result<Duration, DateTime<Utc>> {
    let Some(rate) = endpoint.rate_limit.filter(|r| *r > 0) else { return Ok(Duration::ZERO) };
    let now = Utc::now();
    let not_after =
        now + chrono::Duration::from_std(send_by.saturating_duration_since(Instant::now())).unwrap_or_default();
    match inner.store.take_rate_slot(&endpoint.id, rate, now, not_after).await {
        Ok(RateSlot::Taken(slot)) => Ok((slot - Utc::now()).to_std().unwrap_or(Duration::ZERO)),
        Ok(RateSlot::Busy(next_free)) => Err(next_free),
        Err(e) => {
            tracing::warn!(error = %e, endpoint_id = %endpoint.id, "shared rate limit unavailable; limiting locally");
            Ok(gate.rate_wait(Some(rate)))
        }
    }
}

/// How late a rate slot may be used (its time passed while the node's permit was
/// awaited) before a fresh one is taken: one slot's interval, and at least 50 ms, so that an
/// endpoint of a high rate does not take a slot again for every moment's wait.
fn slot_slack(rate: u32) -> Duration {
    Duration::from_secs_f64(1.0 / f64::from(rate.max(1))).max(Duration::from_millis(50))
}

/// When a delivery that found no rate slot within its send budget (the next free one
/// starts at `next_free`) is due again: once that slot is within half a budget of its
/// claim, so that the claim can take it (or the one after it, if another node took it
/// meanwhile); never sooner than [`DEFER_FOR`] from now, so that no claim loops on it.
fn rate_retry_at(cfg: &DispatchConfig, next_free: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let half_budget = chrono::Duration::from_std(send_budget(cfg) / 2).unwrap_or_default();
    let soonest = now + chrono::Duration::from_std(DEFER_FOR).unwrap_or_default();
    (next_free - half_budget).max(soonest)
}

/// Commits results in batches and gives their permits back.
async fn record_loop(inner: Arc<Inner>, mut results: mpsc::UnboundedReceiver<Finished>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while results.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let mut outcomes = Vec::new();
        let mut attempts_made = Vec::new();
        let mut abandoned = Vec::new();
        let mut paused: HashMap<DateTime<Utc>, Vec<ClaimedKey>> = HashMap::new();
        let mut handed_back: HashMap<DateTime<Utc>, Vec<ClaimedKey>> = HashMap::new();
        let batch_at = Utc::now();
        let mut held = Vec::new();
        let mut held_gates = Vec::new();
        let mut gates = Vec::with_capacity(batch.len());
        // A FIFO lane's next delivery becomes due when this batch is recorded: claim it then.
        let mut lane_moved = false;
        for f in batch.drain(..) {
            match f {
                Finished::Attempted(o, n, g, lane) => {
                    lane_moved |= lane && !matches!(o.next, NextStep::RetryAt(_));
                    outcomes.push(o);
                    attempts_made.push(n);
                    gates.push(g);
                }
                Finished::Abandoned(k, g, lane) => {
                    lane_moved |= lane;
                    abandoned.push(k);
                    gates.push(g);
                }
                Finished::Paused(k, until, g) => {
                    paused.entry(until).or_default().push(k);
                    gates.push(g);
                }
                Finished::HandedBack(k, due, g) => {
                    handed_back.entry(hand_back_batch(due, batch_at)).or_default().push(k);
                    gates.push(g);
                }
                Finished::Held(k, app_id, g) => {
                    held.push((k, app_id));
                    held_gates.push(g);
                }
                Finished::Expired(g) => {
                    metrics::counter!("hooklane_deliveries_lease_expired_total").increment(1);
                    gates.push(g);
                }
            }
        }
        let soon = Utc::now() + chrono::Duration::from_std(inner.cfg.poll_interval).unwrap_or_default();
        let retry_soon = outcomes.iter().any(|o| matches!(o.next, NextStep::RetryAt(t) if t <= soon));
        if !outcomes.is_empty() {
            let mut events = EventsOf::new(&inner, &outcomes, &attempts_made);
            let asked: HashSet<String> =
                outcomes.iter().filter(|o| o.disable_endpoint).map(|o| o.attempt.endpoint_id.clone()).collect();
            match inner.store.record_attempts(outcomes, inner.cfg.disable_after).await {
                Ok(Recorded { disabled, set_aside }) => {
                    // An outcome the store set aside (its delivery was queued again while the
                    // attempt was on the wire) tells nothing about the delivery any more.
                    events.forget(&set_aside);
                    if !disabled.is_empty() {
                        // Caches drop the endpoint at once rather than fan out to it for their
                        // lifetime: this process's through `disablings`, other nodes' through
                        // the store.
                        inner.disablings.send_modify(|n| *n += 1);
                        let store = inner.store.clone();
                        tokio::spawn(async move { store.announce_tenant_change().await });
                    }
                    for (id, version) in disabled {
                        if asked.contains(&id) {
                            tracing::warn!(endpoint_id = %id, "endpoint disabled: its receiver asked (webhook-delivery: disable)");
                        } else {
                            tracing::warn!(endpoint_id = %id, "endpoint disabled after failing continuously");
                        }
                        events.disabled(&id);
                        // Given up here and, once told, on the other nodes: deliveries read
                        // from this version of the endpoint or an older one.
                        let stop = Stop::Disabled { endpoint_id: id, version };
                        mark_stopped(&inner, &stop);
                        let store = inner.store.clone();
                        tokio::spawn(async move { store.announce_stop(&stop).await });
                    }
                    events.send(&inner);
                }
                Err(e) => tracing::error!(error = %e, "could not record attempts; they will be retried"),
            }
        }
        if !abandoned.is_empty() {
            if let Err(e) = inner.store.abandon_deliveries(abandoned).await {
                tracing::error!(error = %e, "could not mark deliveries of disabled endpoints failed");
            }
        }
        defer_paused(&inner, paused).await;
        defer_all(&inner, handed_back).await;
        if !held.is_empty() {
            // Its store read for each endpoint need not hold up the recording. (The
            // deliveries stay leased until handed back: nothing claims them meanwhile.) Their
            // permits come back once they are, so that a shutdown waits for it.
            let inner = inner.clone();
            tokio::spawn(async move {
                hold(&inner, held).await;
                for g in &held_gates {
                    g.outstanding.fetch_sub(1, Ordering::SeqCst);
                }
                inner.outstanding.add_permits(held_gates.len());
            });
        }
        for g in &gates {
            // SeqCst: see `Gates::saturated`.
            g.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
        inner.outstanding.add_permits(gates.len());
        // An endpoint slower than what arrives for it, but faster than its cap a deferral
        // or a poll interval (a transformation, a receiver taking tens of milliseconds),
        // would otherwise sit idle between draining what it holds and the poller's next
        // look at it.
        let refill: Vec<(String, Vec<DateTime<Utc>>)> =
            gates.iter().filter_map(|g| Some((g.endpoint_id.clone(), g.drained_after_overflow()?))).collect();
        if !refill.is_empty() {
            let inner = inner.clone();
            // Woken at once for what is due already, and again once handed-back work is.
            inner.wake.notify_one();
            tokio::spawn(async move {
                for (endpoint_id, due_at) in refill.into_iter().filter(|(_, due_at)| !due_at.is_empty()) {
                    if let Err(e) = inner.store.undefer_deliveries(&endpoint_id, due_at, Utc::now()).await {
                        tracing::debug!(error = %e, %endpoint_id, "handed-back deliveries keep their deferral");
                    }
                }
                inner.wake.notify_one();
            });
        }
        if retry_soon || lane_moved {
            inner.wake.notify_one();
        }
    }
}

/// The [`EngineEvent`]s of one batch of results, gathered before the batch goes to the
/// store and sent once it is recorded. Nothing is gathered while no one listens.
struct EventsOf {
    ready: Vec<EngineEvent>,
    /// Application of each endpoint with a failed attempt in the batch (only those can
    /// have been disabled).
    apps: HashMap<String, String>,
    /// Deliveries whose failure this batch reports (`failing`, `exhausted`): noted in the
    /// store, so that their next success is reported as recovered whatever starts their
    /// attempts over meanwhile (a resend, a recovery).
    told: Vec<DeliveryKey>,
    /// Successes whose delivery may have had its failure reported before its attempts were
    /// started over (sent by hand, and not past [`FAILING_AT`] attempts since): recovered if
    /// the store says so. Those past it are recovered at once and only clear the note.
    check: Vec<(EngineEvent, bool)>,
}

impl EventsOf {
    fn new(inner: &Inner, outcomes: &[AttemptOutcome], attempts_made: &[u32]) -> Self {
        let mut events = EventsOf { ready: Vec::new(), apps: HashMap::new(), told: Vec::new(), check: Vec::new() };
        if inner.events.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
            return events;
        }
        for (o, n) in outcomes.iter().zip(attempts_made) {
            let a = &o.attempt;
            // (Endpoints that may be disabled by this batch: failing, or whose receiver asked,
            // whatever its answer's status.)
            if o.disable_endpoint || !matches!(o.next, NextStep::Succeeded | NextStep::Cancelled) {
                events.apps.insert(a.endpoint_id.clone(), a.app_id.clone());
            }
            let event = |news| EngineEvent::Attempt {
                news,
                app_id: a.app_id.clone(),
                msg_id: a.msg_id.clone(),
                endpoint_id: a.endpoint_id.clone(),
                attempt_id: a.id.clone(),
                attempted_at: a.created_at,
                response_status: a.response_status,
            };
            match AttemptNews::of(&o.next, *n) {
                Some(news @ (AttemptNews::Failing | AttemptNews::Exhausted)) => {
                    events.told.push(DeliveryKey::new(&a.msg_id, &a.endpoint_id));
                    events.ready.push(event(news));
                }
                // Reported now; the note of the failure goes.
                Some(AttemptNews::Recovered) => {
                    events.ready.push(event(AttemptNews::Recovered));
                    events.check.push((event(AttemptNews::Recovered), true));
                }
                None if o.next == NextStep::Succeeded && a.trigger == TriggerType::Manual => {
                    events.check.push((event(AttemptNews::Recovered), false));
                }
                None => {}
            }
        }
        events
    }

    /// Drops the attempt events of these deliveries (and what their failure or success
    /// would note).
    fn forget(&mut self, keys: &[DeliveryKey]) {
        if keys.is_empty() {
            return;
        }
        let kept =
            |msg_id: &str, endpoint_id: &str| !keys.iter().any(|k| k.msg_id == msg_id && k.endpoint_id == endpoint_id);
        let event_kept = |e: &EngineEvent| match e {
            EngineEvent::Attempt { msg_id, endpoint_id, .. } => kept(msg_id, endpoint_id),
            EngineEvent::EndpointDisabled { .. } => true,
        };
        self.ready.retain(event_kept);
        self.told.retain(|k| kept(&k.msg_id, &k.endpoint_id));
        self.check.retain(|(e, _)| event_kept(e));
    }

    fn disabled(&mut self, endpoint_id: &str) {
        if let Some(app_id) = self.apps.get(endpoint_id) {
            self.ready.push(EngineEvent::EndpointDisabled { app_id: app_id.clone(), endpoint_id: endpoint_id.into() });
        }
    }

    fn send(self, inner: &Arc<Inner>) {
        if !self.ready.is_empty() {
            send_events(&inner.events, self.ready);
        }
        if self.told.is_empty() && self.check.is_empty() {
            return;
        }
        // (Rare: failures reported, and successes after them or sent by hand. Off the
        // recorder's way.)
        let (inner, told, check) = (inner.clone(), self.told, self.check);
        tokio::spawn(async move {
            if let Err(e) = inner.store.note_failure_told(told).await {
                tracing::warn!(error = %e, "a reported failure was not noted: a recovery after a resend may go unreported");
            }
            for (event, reported) in check {
                let EngineEvent::Attempt { msg_id, endpoint_id, .. } = &event else { continue };
                let was_told = inner.store.take_failure_told(DeliveryKey::new(msg_id, endpoint_id)).await;
                match was_told {
                    Ok(true) if !reported => send_events(&inner.events, vec![event]),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "whether a failure was reported is unknown: no recovery told"),
                }
            }
        });
    }
}

/// Hands `events` to their reader. Attempt events are dropped (counted) when the reader is
/// behind, so that the engine never waits for it; an endpoint's disabling, rare and the
/// one that matters most, waits for room on a task of its own instead.
fn send_events(sink: &Mutex<Option<mpsc::Sender<EngineEvent>>>, events: Vec<EngineEvent>) {
    let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tx) = sink.as_ref() else { return };
    let mut dropped = 0u64;
    for event in events {
        match tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event @ EngineEvent::EndpointDisabled { .. })) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        let tx = tx.clone();
                        runtime.spawn(async move { tx.send(event).await });
                    }
                    Err(_) => dropped += 1,
                }
            }
            Err(mpsc::error::TrySendError::Full(_)) => dropped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                *sink = None; // the listener is gone
                break;
            }
        }
    }
    if dropped > 0 {
        metrics::counter!("hooklane_engine_events_dropped_total").increment(dropped);
        tracing::warn!(dropped, "engine events dropped: their reader is behind");
    }
}

async fn poll_loop(inner: Arc<Inner>) {
    // Other nodes sharing the store announce work they wrote (PostgreSQL LISTEN/NOTIFY).
    let external = inner.store.wakeups();
    let mut rounds: u64 = 0;
    while !inner.stopping.load(Ordering::Relaxed) {
        rounds += 1;
        if rounds.is_multiple_of(64) {
            inner.gates.prune();
        }
        let free = inner.outstanding.available_permits().min(inner.cfg.claim_batch).min(claim_for_bytes(&inner));
        if free == 0 {
            // Memory is full; results coming back free permits (and bytes).
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Ok(permits) = inner.outstanding.try_acquire_many(free as u32) else { continue };
        permits.forget();
        let now = Utc::now();
        let mut skip = inner.gates.saturated();
        skip.extend(inner.circuits.blocked(now));
        let room = hooklane_store::ClaimRoom { skip, most: inner.gates.room() };
        let skip = &room.skip;
        match inner.store.claim_due(now, free, inner.cfg.lease, &room).await {
            Ok(jobs) => {
                let got = jobs.len();
                if let Some(largest) = jobs.iter().map(|j| j.message.payload.len().max(1)).max() {
                    inner.claimed_payload.store(largest, Ordering::Relaxed);
                }
                inner.outstanding.add_permits(free - got);
                admit(&inner, jobs);
                if got == free {
                    continue; // more may be due right now
                }
            }
            Err(e) => {
                inner.outstanding.add_permits(free);
                tracing::error!(error = %e, "claiming due deliveries failed");
            }
        }
        let pause = idle_pause(&inner, now, skip).await;
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = async {
                match &external {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Sleep until the next delivery falls due or a circuit's cool-down ends, but never longer
/// than the poll interval. Deliveries of skipped endpoints do not count: a backlog the
/// poller would not claim must not keep it awake.
async fn idle_pause(inner: &Inner, now: DateTime<Utc>, skip: &[String]) -> Duration {
    let next = match inner.store.next_due_at(skip).await {
        Ok(t) => t,
        Err(_) => Some(now + chrono::Duration::from_std(inner.cfg.poll_interval).unwrap_or_default()),
    };
    let next = match (next, inner.circuits.next_reopen(now)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let until_due = match next {
        Some(t) => (t - now).to_std().unwrap_or(Duration::ZERO),
        None => inner.cfg.poll_interval,
    };
    until_due.clamp(Duration::from_millis(5), inner.cfg.poll_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_starts_only_if_it_can_end_within_its_lease() {
        let cfg = DispatchConfig::default();
        let request = cfg.request_timeout + cfg.connect_timeout + Duration::from_secs(1);
        let (now, at) = (Utc::now(), Instant::now());
        let lease = chrono::Duration::from_std(cfg.lease).expect("lease");
        // Admitted as soon as claimed: the budget counted from admission.
        assert_eq!(send_by(&cfg, Some(now + lease), now, at), at + send_budget(&cfg));
        assert_eq!(send_by(&cfg, None, now, at), at + send_budget(&cfg));
        // Claimed 30 s ago (a slow claim, a long queue): 30 s less; 100 s ago: none left.
        let late = now + lease - chrono::Duration::seconds(30);
        assert_eq!(send_by(&cfg, Some(late), now, at), at + send_budget(&cfg) - Duration::from_secs(30));
        let later = now + lease - chrono::Duration::seconds(100);
        assert_eq!(
            send_by(&cfg, Some(later), now, at),
            at + (cfg.lease - Duration::from_secs(100)).saturating_sub(request)
        );
        // A short lease (3 s, for requests of 1 s with 250 ms to connect): what is left of it,
        // a quarter.
        let short = DispatchConfig {
            lease: Duration::from_secs(3),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(250),
            ..cfg.clone()
        };
        assert_eq!(send_budget(&short), Duration::from_millis(750));
        let fresh = now + chrono::Duration::seconds(3);
        assert_eq!(send_by(&short, Some(fresh), now, at), at + send_budget(&short));
        assert!(send_budget(&short) > Duration::ZERO);
        // A lease already over: not after now.
        assert_eq!(send_by(&cfg, Some(now - chrono::Duration::seconds(1)), now, at), at);
    }

    #[test]
    fn hand_backs_of_a_batch_share_their_times() {
        let now = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let ms = |n| chrono::Duration::milliseconds(n);
        assert_eq!(hand_back_batch(now - ms(5), now), now, "due already: now");
        assert_eq!(hand_back_batch(now, now), now);
        let later = hand_back_batch(now + ms(10), now);
        assert_eq!(later, DateTime::from_timestamp_micros(1_700_000_000_200_000).expect("time"));
        assert_eq!(hand_back_batch(now + ms(70), now), later, "one write for both");
        let round = DateTime::from_timestamp_micros(1_700_000_001_000_000).expect("time");
        assert_eq!(hand_back_batch(round, now), round, "never later than needed");
    }

    #[test]
    fn a_delivery_with_no_rate_slot_comes_back_when_the_next_one_is_within_reach() {
        let cfg = DispatchConfig {
            lease: Duration::from_secs(3),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_millis(250),
            ..DispatchConfig::default()
        };
        let now = Utc::now();
        let half = chrono::Duration::from_std(send_budget(&cfg) / 2).expect("budget");
        // The next free slot far ahead: back half a send budget before it, so that the
        // claim then can take it.
        let far = now + chrono::Duration::seconds(30);
        assert_eq!(rate_retry_at(&cfg, far, now), far - half);
        // Just out of reach: not before a second from now, however close the slot.
        let near = now + chrono::Duration::milliseconds(200);
        assert_eq!(rate_retry_at(&cfg, near, now), now + chrono::Duration::seconds(1));
    }

    #[tokio::test]
    async fn a_disabling_waits_for_a_reader_that_is_behind_where_attempts_are_dropped() {
        let (tx, mut rx) = mpsc::channel(1);
        let sink = Mutex::new(Some(tx));
        let attempt = |n: &str| EngineEvent::Attempt {
            news: AttemptNews::Failing,
            app_id: "app_1".into(),
            msg_id: format!("msg_{n}"),
            endpoint_id: "ep_1".into(),
            attempt_id: format!("atmpt_{n}"),
            attempted_at: Utc::now(),
            response_status: 500,
        };
        let disabled = EngineEvent::EndpointDisabled { app_id: "app_1".into(), endpoint_id: "ep_1".into() };
        send_events(&sink, vec![attempt("1"), attempt("2"), disabled]);
        let first = rx.recv().await.expect("the first attempt");
        assert!(matches!(first, EngineEvent::Attempt { ref msg_id, .. } if msg_id == "msg_1"), "{first:?}");
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("in time").expect("an event");
        assert!(matches!(next, EngineEvent::EndpointDisabled { .. }), "the second attempt was dropped: {next:?}");
    }

    #[test]
    fn attempt_news_follows_svix() {
        let retry = NextStep::RetryAt(Utc::now());
        let news = |next: &NextStep, n| AttemptNews::of(next, n);
        assert_eq!(news(&retry, 1), None);
        assert_eq!(news(&retry, FAILING_AT - 1), None);
        assert_eq!(news(&retry, FAILING_AT), Some(AttemptNews::Failing));
        assert_eq!(news(&retry, FAILING_AT + 1), None, "told once");
        assert_eq!(news(&NextStep::GiveUp, 2), Some(AttemptNews::Exhausted));
        assert_eq!(news(&NextStep::Succeeded, 1), None);
        assert_eq!(news(&NextStep::Succeeded, FAILING_AT), None, "no failing event was sent");
        assert_eq!(news(&NextStep::Succeeded, FAILING_AT + 1), Some(AttemptNews::Recovered));
    }

    /// The news of an outcome the store set aside (a resend raced its attempt) is not told.
    #[test]
    fn set_aside_outcomes_tell_nothing() {
        let event = |msg: &str, ep: &str| EngineEvent::Attempt {
            news: AttemptNews::Exhausted,
            app_id: "app".into(),
            msg_id: msg.into(),
            endpoint_id: ep.into(),
            attempt_id: "atmpt".into(),
            attempted_at: Utc::now(),
            response_status: 500,
        };
        let disabled = EngineEvent::EndpointDisabled { app_id: "app".into(), endpoint_id: "e1".into() };
        let mut events = EventsOf {
            ready: vec![event("m1", "e1"), event("m1", "e2"), event("m2", "e1"), disabled],
            apps: HashMap::new(),
            told: vec![DeliveryKey::new("m1", "e1"), DeliveryKey::new("m2", "e1")],
            check: vec![(event("m1", "e1"), false)],
        };
        events.forget(&[DeliveryKey::new("m1", "e1")]);
        let left: Vec<(String, String)> = events
            .ready
            .iter()
            .map(|e| match e {
                EngineEvent::Attempt { msg_id, endpoint_id, .. } => (msg_id.clone(), endpoint_id.clone()),
                EngineEvent::EndpointDisabled { endpoint_id, .. } => ("disabled".into(), endpoint_id.clone()),
            })
            .collect();
        let want = [("m1", "e2"), ("m2", "e1"), ("disabled", "e1")].map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(left, want);
        assert_eq!(events.told, [DeliveryKey::new("m2", "e1")], "nor is its failure noted");
        assert!(events.check.is_empty(), "nor its success checked");
    }
}
