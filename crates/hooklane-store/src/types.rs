//! Inputs and outputs of store operations that are not domain records.

use std::sync::Arc;

use hooklane_core::model::{Attempt, Delivery, DeliveryStatus, Endpoint, Message};
use hooklane_core::{DateTime, Utc};

/// Cursor pagination as in the Svix API: `iterator` is the id of the last item seen.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: usize,
    pub iterator: Option<String>,
    /// Newest first when true.
    pub descending: bool,
    /// The page before `iterator` rather than after it (Svix's `-`-prefixed `prevIterator`):
    /// the `limit` items nearest it on the other side, still in the `descending` order;
    /// `done` then says that nothing lies before them.
    pub backwards: bool,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest { limit: 50, iterator: None, descending: false, backwards: false }
    }
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// No item lies beyond this page.
    pub done: bool,
}

/// Which background tasks a list holds: `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this application's (an application token's view).
    pub app_id: Option<String>,
    pub status: Option<String>,
    pub task: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub tag: Option<String>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
    /// Read the messages without their payload (`payload` left empty): for callers that
    /// need only their ids, times and deliveries (a bulk replay, a purge), which would
    /// otherwise read a page of 250 payloads of up to `max_body_bytes` each.
    pub without_payload: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub msg_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
    /// Only attempts answered with a status of this class (Svix's `StatusCodeClass`: 100,
    /// 200, 300, 400 or 500 for `1xx`…`5xx`; 0 for no answer at all).
    pub status_code_class: Option<u16>,
    /// Only attempts of messages of these event types, on this channel, with this tag.
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub tag: Option<String>,
}

impl AttemptFilter {
    /// The `[low, high)` range of answer statuses its `status_code_class` stands for.
    pub fn status_code_range(&self) -> Option<(i32, i32)> {
        self.status_code_class.map(|class| match class {
            0 => (i32::MIN, 100),
            c => (i32::from(c), i32::from(c) + 100),
        })
    }
}

/// What [`crate::Store::record_attempts`] did beyond recording the attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Endpoints this batch's failures disabled, each with the version (`updated_at`) the
    /// disabling wrote: a delivery read from that version of the endpoint or an earlier one
    /// is not sent.
    pub disabled: Vec<(String, DateTime<Utc>)>,
    /// Deliveries whose outcome was set aside: queued again while the attempt was on the
    /// wire (a resend), or gone. Nothing should be told about their outcome.
    pub set_aside: Vec<DeliveryKey>,
}

/// When a new message's deliveries are first due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSend {
    /// At once, for a poller to claim.
    Now,
    /// Leased to the writer until then: it sends them itself, without waiting for a poll
    /// (but those to endpoints that are FIFO at the write, which join their lane).
    LeasedUntil(DateTime<Utc>),
    /// At this time, for a poller to claim then (a scheduled message).
    At(DateTime<Utc>),
}

impl FirstSend {
    /// What `create_message`'s `leased_until` asks for.
    pub fn leased(leased_until: Option<DateTime<Utc>>) -> FirstSend {
        leased_until.map_or(FirstSend::Now, FirstSend::LeasedUntil)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryKey {
    pub msg_id: String,
    pub endpoint_id: String,
}

impl DeliveryKey {
    pub fn new(msg_id: &str, endpoint_id: &str) -> Self {
        DeliveryKey { msg_id: msg_id.to_string(), endpoint_id: endpoint_id.to_string() }
    }
}

/// A claimed delivery handed back unsent or given up: its key, and the lease its claim (or
/// its ingest) wrote, the job's [`Delivery::next_attempt_at`]. Written back only while the
/// delivery is still leased under that lease, as an attempt's outcome is: a node whose
/// lease ran out (a long wait for a turn, a slow store) changes nothing that another
/// node's claim holds now. `None` asks for no such check (tools, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKey {
    pub key: DeliveryKey,
    pub lease: Option<DateTime<Utc>>,
}

impl ClaimedKey {
    /// A key with no lease to check.
    pub fn unchecked(key: DeliveryKey) -> Self {
        ClaimedKey { key, lease: None }
    }
}

/// Which applications a listing leaves out (Svix's application list options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppListFilter {
    /// Those with no endpoint.
    pub without_endpoints: bool,
    /// Those with endpoints, every one of them disabled.
    pub only_disabled_endpoints: bool,
}

/// What [`crate::Store::take_rate_slot`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSlot {
    /// Reserved: send at this time (in the past or now: at once).
    Taken(DateTime<Utc>),
    /// Not taken, as it would start after the time the sender gave: the endpoint's next
    /// free slot starts then (read in passing: a hint, which other senders may move on).
    Busy(DateTime<Utc>),
}

impl RateSlot {
    /// The slot's time, when it was taken.
    pub fn taken(self) -> Option<DateTime<Utc>> {
        match self {
            RateSlot::Taken(at) => Some(at),
            RateSlot::Busy(_) => None,
        }
    }
}

/// A delivery that is due, with what is needed to send it.
#[derive(Debug, Clone)]
pub struct Job {
    pub delivery: Delivery,
    pub message: Arc<Message>,
    pub endpoint: Arc<Endpoint>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    Succeeded,
    RetryAt(DateTime<Utc>),
    /// No attempt left: the delivery has failed for good.
    GiveUp,
    /// The endpoint's transformation cancelled the request, which was not sent: the
    /// delivery is over (Svix's status 4, canceled), and it says nothing of the endpoint's
    /// health (its failure streak is neither ended nor extended).
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub attempt: Attempt,
    pub next: NextStep,
    /// The lease the attempt was made under: the end its claim wrote (the delivery's
    /// `next_attempt_at` in the job). A delivery leased again meanwhile under another (this
    /// one ran out and another claim took it) keeps that newer state; `None`: not checked.
    pub lease: Option<DateTime<Utc>>,
    /// The receiver asked for its endpoint to be disabled (`webhook-delivery: disable`):
    /// it is, whatever its failure streak, and reported with those the streak disabled.
    pub disable_endpoint: bool,
    /// Nothing was sent, through no fault of the endpoint's (hooklane could not make the
    /// request of this message): a failure that leaves its failure streak as it was, as a
    /// cancelled attempt does.
    pub untried: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyState {
    /// First use of the key, or the first since its holder's lease ran out: the caller does
    /// the work, then finishes or aborts the key. `resumes`: the lease end of the same
    /// request's earlier hold that this take replaced, one that never finished (its process
    /// died, perhaps after the work was done): the caller may find that work by it.
    Started { resumes: Option<DateTime<Utc>> },
    /// The work was done before: replay this response.
    Completed(StoredResponse),
    /// The same request holds the key right now, until `held_until` (its lease end; `None`
    /// when the key changed hands under the look).
    InFlight { held_until: Option<DateTime<Utc>> },
    /// The key was used for a request with another fingerprint (another body).
    Mismatch,
}

// --- statistics (operators' view: metrics, health, dashboard)

/// Upper bounds, in milliseconds, of the latency buckets statistics count attempts in; one
/// more bucket holds everything slower than the last bound.
pub const LATENCY_BOUNDS_MS: &[i64] = &[10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];

/// Attempts counted per latency bucket ([`LATENCY_BOUNDS_MS`], plus the overflow bucket),
/// with the slowest one seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyCounts {
    pub counts: Vec<u64>,
    pub max_ms: i64,
}

impl Default for LatencyCounts {
    fn default() -> Self {
        LatencyCounts { counts: vec![0; LATENCY_BOUNDS_MS.len() + 1], max_ms: 0 }
    }
}

impl LatencyCounts {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `count` attempts in bucket `bucket` whose slowest took `max_ms`.
    pub fn add(&mut self, bucket: usize, count: u64, max_ms: i64) {
        let last = self.counts.len() - 1;
        self.counts[bucket.min(last)] += count;
        self.max_ms = self.max_ms.max(max_ms);
    }

    pub fn merge(&mut self, other: &LatencyCounts) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    /// The `q` quantile (0–1) in milliseconds, interpolated linearly inside its bucket (the
    /// overflow bucket reaches up to the slowest attempt); `None` without attempts.
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (seen + n) as f64 >= rank {
                let low = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
                let high = LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(self.max_ms).min(self.max_ms.max(low));
                let within = (rank - seen as f64) / n as f64;
                return Some(low + ((high - low) as f64 * within).round() as i64);
            }
            seen += n;
        }
        Some(self.max_ms)
    }
}

/// What one round of housekeeping deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub idempotency_keys: u64,
    pub inbound_requests: u64,
    /// Messages deleted, each with its deliveries and attempts.
    pub messages: u64,
    /// Application tokens past their expiry.
    pub tokens: u64,
    /// Background tasks recorded more than [`TASK_RETENTION`] ago.
    pub tasks: u64,
    /// Where the next round goes on looking for old messages (a [`PruneMessages::after`]),
    /// when this one left some it may delete; `None` when it looked at every old message.
    pub messages_resume: Option<String>,
    /// Whether the round stopped short of its count for the bytes it freed
    /// ([`PRUNE_BYTES`]), leaving idempotency keys or inbound requests it may delete: the
    /// next round is due at once.
    pub more: bool,
}

/// Payload bytes one round of housekeeping frees at most in each table, about (it stops
/// after the record that passes it). On SQLite a record's large body is freed page by page,
/// on the one writer ingest waits for: a thousand expired answers of a megabyte each would
/// hold it for seconds.
pub const PRUNE_BYTES: i64 = 32 * 1024 * 1024;

/// Which messages a round of housekeeping may delete: those created before `before`, with
/// no pending delivery, looked for in id order (their creation order) after the id `after`
/// (`""`: from the oldest). A round looks at a bounded window of messages, so messages
/// still waiting for a delivery cannot keep it from the old messages after them: it says
/// where to go on (`Pruned::messages_resume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneMessages {
    pub before: DateTime<Utc>,
    pub after: String,
}

/// How long background tasks are kept (Svix lists those of the past 90 days).
pub const TASK_RETENTION: std::time::Duration = std::time::Duration::from_secs(90 * 24 * 3600);

/// The delivery queue and endpoint health, for the gauges of `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Pending deliveries due now that nobody holds.
    pub due: u64,
    /// Pending deliveries waiting for a later time (retries), or for the one before them in
    /// their FIFO lane.
    pub scheduled: u64,
    /// Pending deliveries leased to a dispatcher (being sent).
    pub leased: u64,
    /// Enabled endpoints whose last attempts failed, longest-failing first (at most
    /// [`MAX_FAILING_REPORTED`]).
    pub failing: Vec<FailingEndpoint>,
    /// How many enabled endpoints are failing: all of them, where `failing` lists the first.
    pub failing_endpoints: u64,
    pub disabled_endpoints: u64,
}

/// Most failing endpoints [`QueueStats`] lists (each is one time series per gauge).
pub const MAX_FAILING_REPORTED: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub struct FailingEndpoint {
    pub app_id: String,
    pub endpoint_id: String,
    pub failing_since: DateTime<Utc>,
    /// Attempts made since `failing_since` (all failed: a success ends the streak).
    pub failed_attempts: u64,
}

/// Delivery health of one endpoint over a window of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointHealth {
    pub endpoint_id: String,
    pub succeeded: u64,
    pub failed: u64,
    pub latency: LatencyCounts,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Deliveries waiting to be sent or retried now (whatever the window).
    pub pending: u64,
}

/// Attempts that finished within one slice of time.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineBucket {
    pub start: DateTime<Utc>,
    pub succeeded: u64,
    pub failed: u64,
    /// Cancelled by the endpoint's transformation: not sent, so not in `latency`.
    pub canceled: u64,
    pub latency: LatencyCounts,
}

/// Where a message stands over all its deliveries: failed when any delivery failed, else
/// pending when any is still pending, else succeeded (when it had any delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    Succeeded,
    Pending,
    Failed,
    /// Every delivery was cancelled by its endpoint's transformation (Svix's status 4).
    Canceled,
}

/// A message with how its deliveries stand.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageSummary {
    pub message: Message,
    pub succeeded: u64,
    pub pending: u64,
    pub failed: u64,
    /// Deliveries the endpoints' transformations cancelled.
    pub canceled: u64,
    pub attempts: u64,
}

impl MessageSummary {
    /// `None` when the message had no delivery (no endpoint wanted it). Deliveries that
    /// were cancelled are over without failing: a message some of whose deliveries
    /// succeeded and the rest were cancelled has succeeded; one all of whose deliveries
    /// were cancelled is canceled.
    pub fn state(&self) -> Option<MessageState> {
        if self.failed > 0 {
            Some(MessageState::Failed)
        } else if self.pending > 0 {
            Some(MessageState::Pending)
        } else if self.succeeded > 0 {
            Some(MessageState::Succeeded)
        } else if self.canceled > 0 {
            Some(MessageState::Canceled)
        } else {
            None
        }
    }
}

/// A place in an application's stream of messages (what consumers pulling instead of
/// receiving pushes read). Positions follow the order in which messages became durable,
/// not their ids: ids are made before the write, and two writes can commit out of id
/// order, so a reader walking ids could pass over one committed a moment later.
///
/// What the two numbers hold is the store's business (SQLite: `0` and the message's
/// sequence number; PostgreSQL: the writing transaction's id and the sequence number).
/// Positions are ordered; [`EventPosition::START`] lies before every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventPosition {
    pub major: i64,
    pub minor: i64,
}

impl EventPosition {
    pub const START: EventPosition = EventPosition { major: 0, minor: 0 };

    /// A position just before this one, which a read from it starts with this one's
    /// message: on both stores each message has its own `minor` (a sequence number), so
    /// nothing else lies between the two.
    pub fn just_before(self) -> EventPosition {
        EventPosition { major: self.major, minor: self.minor.saturating_sub(1) }
    }
}

/// Where a read of a server-side subscription started: its stored position then, and how
/// many times it had been sought (set without a read) by then. A read's answer moves the
/// subscription only if no seek came in between ([`crate::Store::set_events_subscription`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadFrom {
    pub position: EventPosition,
    pub seeks: i64,
}

/// Shown as `major.minor` (in logs and tests; clients get positions as opaque tokens, see
/// `hooklane_server::api::position_tokens`).
impl std::fmt::Display for EventPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What [`crate::Store::read_message_events`] reads.
#[derive(Debug, Clone)]
pub struct EventsQuery {
    /// Messages after this position.
    pub after: EventPosition,
    /// Only messages created after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only messages of these event types.
    pub event_types: Option<Vec<String>>,
    /// Only messages on at least one of these channels.
    pub channels: Option<Vec<String>>,
    pub limit: usize,
    /// Whether to read the messages' payloads: without, each comes back with `""` as its
    /// payload, and none is loaded (a reader asking for ids and types only does not make the
    /// node hold megabytes of payloads it throws away).
    pub with_content: bool,
    /// Most bytes of payloads one read holds, about: the read stops after the message whose
    /// payload brings the sum to this (see [`EventsQuery::byte_budget`]), so a page of
    /// `limit` large payloads does not have to be held at once. Such a page is not `done`,
    /// and its `next` is its last message: nothing is passed over.
    pub max_bytes: usize,
}

impl EventsQuery {
    /// Up to `limit` of every message after `after`, with their payloads, however large.
    pub fn after(after: EventPosition, limit: usize) -> Self {
        EventsQuery {
            after,
            since: None,
            event_types: None,
            channels: None,
            limit,
            with_content: true,
            max_bytes: usize::MAX,
        }
    }

    /// The sum of payload bytes at which a read stops: `max_bytes`, and at least 1 so that a
    /// read always brings one message at least (a message larger than the budget is still
    /// read, alone).
    pub fn byte_budget(&self) -> usize {
        self.max_bytes.max(1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventsPage {
    /// In stream order, each with its position.
    pub messages: Vec<(EventPosition, Message)>,
    /// Where the next read starts: the last message's position, or, when `done`, the
    /// stream's durable end as of this read (so filtered-out messages are not read again).
    pub next: EventPosition,
    /// Nothing that passes the filter lies between the last message and `next`.
    pub done: bool,
    /// The application has messages written but not readable yet (PostgreSQL: committed
    /// behind an older transaction still open, of any application): a waiting reader
    /// should look again soon, as no announcement of its own application may come when they
    /// become readable.
    pub held_back: bool,
}

impl EventsPage {
    /// The answer to `query` from the messages a store read after `query.after` (at most
    /// `query.limit`, in stream order, stopping after the one whose payload brought their
    /// sum to [`EventsQuery::byte_budget`]) and `end`, the stream's durable end as of that
    /// read: once a read comes back short of both bounds, a reader may move past everything
    /// before `end`. A read cut short by the bytes is not done: its `next` is its last
    /// message, as for a full page, since more may lie after it. Positions never move
    /// backwards.
    pub fn new(query: &EventsQuery, messages: Vec<(EventPosition, Message)>, end: EventPosition) -> EventsPage {
        let bytes: usize = messages.iter().map(|(_, m)| m.payload.len()).sum();
        let done = messages.len() < query.limit.max(1) && bytes < query.byte_budget();
        let next = match messages.last() {
            Some((last, _)) if !done => *last,
            _ => query.after.max(end),
        };
        EventsPage { messages, next, done, held_back: false }
    }
}

/// How an endpoint's deliveries stand (Svix's `EndpointStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub success: u64,
    /// Waiting for their next attempt.
    pub pending: u64,
    /// Leased by a node that is sending them.
    pub sending: u64,
    pub fail: u64,
    /// Cancelled by the endpoint's transformation.
    pub canceled: u64,
}

impl EndpointStats {
    /// Counts one group of deliveries: their status code, whether they are leased, how many.
    pub fn add(&mut self, status: i64, leased: bool, n: u64) {
        match status {
            0 => self.success += n,
            2 => self.fail += n,
            4 => self.canceled += n,
            1 if !leased => self.pending += n,
            _ => self.sending += n,
        }
    }
}

/// What a source's update does to its application's endpoints (its URL destinations),
/// saved with the source in one transaction: one change refused leaves everything as it was.
#[derive(Debug, Clone, Default)]
pub struct DestinationChanges {
    /// Endpoints changed, each with the version (`updated_at`) it was read at: one changed
    /// or deleted since answers [`crate::StoreError::Changed`].
    pub updated: Vec<(Endpoint, DateTime<Utc>)>,
    /// Ids of endpoints deleted with their deliveries and attempts; one already gone
    /// answers [`crate::StoreError::Changed`].
    pub deleted: Vec<String>,
    pub created: Vec<Endpoint>,
}

/// What one process stopped sending, announced to the others sharing the store
/// ([`crate::Store::announce_stop`]): the jobs they hold in memory for it, read before the
/// change, are not sent (dropped for deleted content and a disabled endpoint, held for a
/// paused one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A message's content was deleted (by id).
    Message(String),
    /// The content of every message of the application up to this id, in id order, was
    /// deleted (a purge's chunk).
    MessagesThrough { app_id: String, last_id: String },
    /// The endpoint was disabled; jobs read from this version of it or an older one are
    /// given up.
    Disabled { endpoint_id: String, version: DateTime<Utc> },
    /// The endpoint was paused; jobs read from this version of it or an older one are held.
    Paused { endpoint_id: String, version: DateTime<Utc> },
    /// The endpoint was changed (its URL, headers, credentials, transformation…) to this
    /// version: jobs read from an older one are handed back unsent, to be read again as it
    /// stands (a job read from a URL given up must not go there).
    Changed { endpoint_id: String, version: DateTime<Utc> },
    /// The endpoint, or the application (every endpoint of it), was deleted, by id: its
    /// jobs are given up.
    Deleted(String),
}

impl Stop {
    /// As announced: `m <msg_id>`, `t <app_id> <last_id>`, `d <endpoint_id> <version, µs>`,
    /// `p <endpoint_id> <version, µs>`, `c <endpoint_id> <version, µs>` or `x <id>` (ids hold
    /// no spaces).
    pub fn to_wire(&self) -> String {
        match self {
            Stop::Message(id) => format!("m {id}"),
            Stop::MessagesThrough { app_id, last_id } => format!("t {app_id} {last_id}"),
            Stop::Disabled { endpoint_id, version } => format!("d {endpoint_id} {}", version.timestamp_micros()),
            Stop::Paused { endpoint_id, version } => format!("p {endpoint_id} {}", version.timestamp_micros()),
            Stop::Changed { endpoint_id, version } => format!("c {endpoint_id} {}", version.timestamp_micros()),
            Stop::Deleted(id) => format!("x {id}"),
        }
    }

    /// Read back from [`Stop::to_wire`]; `None` for anything else.
    pub fn from_wire(wire: &str) -> Option<Self> {
        let parts: Vec<&str> = wire.split(' ').collect();
        let version = |v: &str| v.parse::<i64>().ok().and_then(DateTime::<Utc>::from_timestamp_micros);
        let read = match parts.as_slice() {
            ["m", id] if !id.is_empty() => Stop::Message(id.to_string()),
            ["t", app_id, last_id] if !app_id.is_empty() && !last_id.is_empty() => {
                Stop::MessagesThrough { app_id: app_id.to_string(), last_id: last_id.to_string() }
            }
            ["d", endpoint_id, v] if !endpoint_id.is_empty() => {
                Stop::Disabled { endpoint_id: endpoint_id.to_string(), version: version(v)? }
            }
            ["p", endpoint_id, v] if !endpoint_id.is_empty() => {
                Stop::Paused { endpoint_id: endpoint_id.to_string(), version: version(v)? }
            }
            ["c", endpoint_id, v] if !endpoint_id.is_empty() => {
                Stop::Changed { endpoint_id: endpoint_id.to_string(), version: version(v)? }
            }
            ["x", id] if !id.is_empty() => Stop::Deleted(id.to_string()),
            _ => return None,
        };
        Some(read)
    }
}

#[cfg(test)]
mod stop_tests {
    use super::Stop;

    #[test]
    fn announcements_read_back_as_written_and_nothing_else() {
        let version = chrono::DateTime::from_timestamp_micros(1_765_000_000_123_456).expect("time");
        for what in [
            Stop::Message("msg_1".into()),
            Stop::MessagesThrough { app_id: "app_1".into(), last_id: "msg_9".into() },
            Stop::Disabled { endpoint_id: "ep_1".into(), version },
            Stop::Paused { endpoint_id: "ep_2".into(), version },
            Stop::Changed { endpoint_id: "ep_3".into(), version },
            Stop::Deleted("app_1".into()),
        ] {
            assert_eq!(Stop::from_wire(&what.to_wire()), Some(what));
        }
        for junk in [
            "",
            "m",
            "m ",
            "y msg_1",
            "x",
            "c ep_1",
            "m msg_1 extra",
            "t app_1",
            "t app_1 msg_9 extra",
            "t  msg_9",
            "d ep_1",
            "d ep_1 soon",
            "p ep_1 1 2",
        ] {
            assert_eq!(Stop::from_wire(junk), None, "{junk:?}");
        }
    }
}
/// What a claim ([`crate::Store::claim_due`]) may take of particular endpoints: a poller
/// asks for no more of an endpoint than it has room for in memory, so that what it could
/// not start is not claimed to be handed straight back (a rate-limited endpoint one job
/// short of its cap would otherwise have a whole fair share claimed and returned at every
/// poll).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRoom {
    /// Endpoints of which nothing is claimed (their work in memory is all they may hold,
    /// or their circuit is open).
    pub skip: Vec<String>,
    /// Endpoints of which at most this many deliveries are claimed; the others get their
    /// fair share.
    pub most: std::collections::HashMap<String, usize>,
}

impl ClaimRoom {
    /// Nothing of `skip`, any share of the others.
    pub fn skipping(skip: Vec<String>) -> Self {
        ClaimRoom { skip, most: Default::default() }
    }

    /// At most how many of the endpoint's deliveries a claim takes.
    pub fn most_of(&self, endpoint_id: &str) -> usize {
        self.most.get(endpoint_id).copied().unwrap_or(usize::MAX)
    }

    /// The room left once `taken` (endpoint, how many) were claimed: a claim takes the heads
    /// of an endpoint's FIFO lanes, then its rows in no lane beside them, within one `most`.
    pub(crate) fn less(&self, taken: &std::collections::HashMap<&str, usize>) -> std::borrow::Cow<'_, Self> {
        if !taken.iter().any(|(id, n)| *n > 0 && self.most.contains_key(*id)) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut left = self.clone();
        for (id, n) in taken {
            if let Some(most) = left.most.get_mut(*id) {
                *most = most.saturating_sub(*n);
            }
        }
        std::borrow::Cow::Owned(left)
    }
}
