//! Storage for hooklane: the [`Store`] trait every backend implements, and the embedded
//! SQLite backend. The store is both the system of record and the delivery queue: pending
//! retries live here, not in memory, so a backlog costs disk rather than RAM and survives
//! a crash.
#![forbid(unsafe_code)]

mod backlog;
mod error;
pub mod postgres;
pub mod private_files;
mod queries_shared;
mod signals;
pub mod sqlite;
mod types;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hooklane_core::model::{Application, Attempt, Delivery, Endpoint, EndpointMtls, EventType, Message, Principal};
use hooklane_core::oauth::EndpointOauth;
use hooklane_core::{DateTime, Utc};

pub use error::StoreError;
pub use queries_shared::{FAN_OUT_KEPT, UNFINISHED_KEY_KEPT};
pub use types::*;

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything hooklane persists. Every method that touches tenant data takes the
/// application id, so no query can reach across applications by forgetting a filter.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- applications
    async fn create_app(&self, app: Application) -> StoreResult<()>;
    /// By id or by `uid`.
    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<Application>>;
    async fn list_apps(&self, page: &PageRequest) -> StoreResult<Page<Application>> {
        self.list_apps_where(page, AppListFilter::default()).await
    }
    /// A page of the applications (those of inbound sources left out), narrowed by `filter`.
    async fn list_apps_where(&self, page: &PageRequest, filter: AppListFilter) -> StoreResult<Page<Application>>;
    async fn update_app(&self, app: Application) -> StoreResult<()>;
    /// Deletes the application and everything under it.
    async fn delete_app(&self, app_id: &str) -> StoreResult<()>;

    // --- event types
    async fn create_event_type(&self, et: EventType) -> StoreResult<()>;
    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>>;
    async fn list_event_types(&self, page: &PageRequest, include_archived: bool) -> StoreResult<Page<EventType>>;
    async fn update_event_type(&self, et: EventType) -> StoreResult<()>;
    async fn delete_event_type(&self, name: &str) -> StoreResult<()>;
    /// An import's writes, in one transaction: each of `upserts` created, or replaced but
    /// for its creation time (and, when `keep_flags`, its feature flags and group as they
    /// stand at this write: an OpenAPI document says nothing of them, and a change made
    /// while the import ran must not be written back); each event type named in `archive`
    /// archived at `at` (one missing stays missing). An error leaves everything as it was.
    async fn import_event_types(
        &self,
        upserts: Vec<EventType>,
        archive: Vec<String>,
        at: DateTime<Utc>,
        keep_flags: bool,
    ) -> StoreResult<()>;

    // --- endpoints
    async fn create_endpoint(&self, ep: Endpoint) -> StoreResult<()>;
    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>>;
    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>>;
    /// Every endpoint of the application, for fan-out.
    async fn app_endpoints(&self, app_id: &str) -> StoreResult<Vec<Endpoint>>;
    /// Saves the endpoint, but for its OAuth and mTLS settings ([`Store::set_endpoint_oauth`],
    /// [`Store::set_endpoint_mtls`]): a change read before one of those (or before a rotated
    /// refresh token was saved) must not write the old one back. With `read_at` (the
    /// `updated_at` of the version the change was made to), an endpoint changed since
    /// (a secret rotated, the dispatcher disabling it) is left alone: [`StoreError::Changed`].
    async fn update_endpoint(&self, ep: Endpoint, read_at: Option<DateTime<Utc>>) -> StoreResult<()>;
    /// Sets (or with `None` removes) the endpoint's OAuth settings, as of `updated_at`.
    async fn set_endpoint_oauth(
        &self,
        app_id: &str,
        endpoint_id: &str,
        oauth: Option<&EndpointOauth>,
        updated_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Deletes an endpoint with its deliveries, its attempts and, for a polling endpoint,
    /// its consumers' positions (the events subscriptions named `{endpoint_id}/…`) and its
    /// keys.
    async fn delete_endpoint(&self, app_id: &str, endpoint_id: &str) -> StoreResult<()>;
    /// Sets (or with `None` removes) the endpoint's mTLS settings, as of `updated_at`; like
    /// its OAuth settings, never written by [`Store::update_endpoint`].
    async fn set_endpoint_mtls(
        &self,
        app_id: &str,
        endpoint_id: &str,
        mtls: Option<&EndpointMtls>,
        updated_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Removes the endpoint's OAuth and mTLS settings that are not bound to `origin` (the
    /// origin of its URL now: it moved). Settings bound to it (set after the move) stay.
    async fn forget_endpoint_credentials(&self, app_id: &str, endpoint_id: &str, origin: &str) -> StoreResult<()>;
    /// Replaces the endpoint's OAuth settings by `new` if they are still `expected` (a
    /// refresh token its authorization server rotated); false when they changed meanwhile
    /// (or the endpoint is gone). Nothing else of the endpoint changes.
    async fn replace_endpoint_oauth(
        &self,
        app_id: &str,
        endpoint_id: &str,
        expected: &EndpointOauth,
        new: &EndpointOauth,
    ) -> StoreResult<bool>;

    // --- messages and deliveries
    /// Writes the message and one pending delivery per endpoint in one transaction; returns
    /// once that is durable. When `leased_until` is given the deliveries are created already
    /// leased to the caller, which will send them itself without waiting for a poll, except
    /// those to endpoints that are FIFO at this write (they join their lane for a claim to
    /// take). Returns the endpoints whose deliveries were written leased.
    async fn create_message(
        &self,
        msg: Message,
        endpoint_ids: Vec<String>,
        leased_until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<String>>;
    /// Writes the message as [`Store::create_message`] does, with its deliveries first due
    /// at `due_at` (none leased) and never sent before it (a resend excepted): Svix's
    /// `deliverAt`. They join no FIFO lane, whose order would hold them or hurry them. The
    /// message keeps the time (read back as [`Message::deliver_at`]): deliveries added to it
    /// later, before then, wait for it too ([`Store::add_deliveries`], [`Store::recover`]).
    async fn schedule_message(&self, msg: Message, endpoint_ids: Vec<String>, due_at: DateTime<Utc>)
        -> StoreResult<()>;
    /// By id or by `eventId`.
    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>>;
    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>>;
    /// Deletes a message's content (Svix's `expunge_content`: sent by mistake with data it
    /// should not hold): its payload becomes `{}`, its extra headers go, its pending
    /// deliveries fail, and it can no longer be resent, recovered or replayed.
    /// [`StoreError::NotFound`] when the application has no such message.
    async fn expunge_message_content(&self, app_id: &str, msg_id: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Every delivery of a message, with its endpoint.
    async fn message_deliveries(&self, app_id: &str, msg_id: &str) -> StoreResult<Vec<(Delivery, Endpoint)>>;
    /// The messages with a delivery to the endpoint that pass `filter` (and whose delivery
    /// is in `status`, when given), paged as [`Store::list_messages`], each with that delivery.
    async fn endpoint_messages(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &MessageFilter,
        status: Option<hooklane_core::model::DeliveryStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<(Message, Delivery)>>;
    /// The endpoint's deliveries counted by how they stand, only those last changed in
    /// `[since, until)` when given.
    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<EndpointStats>;

    /// Leases up to `limit` deliveries whose next attempt is due at `now` and that nobody
    /// holds (or whose lease has expired), until `now + lease`, leaving out deliveries to
    /// `room.skip` (endpoints that already have as much work in the caller's memory as
    /// they can take, or whose circuit is open: claiming more for them would only churn),
    /// and taking no more than `room.most` says of the endpoints it names.
    ///
    /// The limit is shared between endpoints with deliveries due (the oldest due of each
    /// first), so one endpoint's backlog cannot fill every claim. A skipped endpoint costs
    /// the same whatever its backlog: claims walk endpoints, not the due rows of all of them.
    /// A FIFO endpoint's lanes go first, the lanes due longest first (whatever their keys),
    /// and its deliveries in no lane (a scheduled message's) go beside them.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
        room: &ClaimRoom,
    ) -> StoreResult<Vec<Job>>;
    /// When the store next has something for a poller: the earliest due time of a
    /// waiting delivery or lease expiry of a leased one, if any delivery is pending, leaving
    /// out deliveries to `skip_endpoints` (those the poller would not claim, so that their
    /// backlog does not keep it awake).
    async fn next_due_at(&self, skip_endpoints: &[String]) -> StoreResult<Option<DateTime<Utc>>>;
    /// Records finished attempts and moves their deliveries on, in one transaction. An
    /// endpoint failing continuously for `disable_after` is disabled (not by a failure its
    /// success later in the batch ends the streak of); the answer names the endpoints this
    /// call disabled, and the deliveries whose outcome it set aside.
    ///
    /// An attempt's outcome moves its delivery on only while the delivery is still leased
    /// under the outcome's lease (without a lease given: leased, or already finished): a
    /// delivery found pending and not leased was queued again while the attempt was on the
    /// wire (a resend, or its lease handed back), and one leased under another lease, or
    /// succeeded or cancelled, was taken by another claim after this one ran out (another
    /// node may be sending it, or sent it); each keeps that newer state. The attempt itself
    /// is logged whatever became of its delivery, as long as its endpoint and its message
    /// still exist (one deleted while the request was on the wire would leave an attempt
    /// nothing deletes).
    async fn record_attempts(&self, outcomes: Vec<AttemptOutcome>, disable_after: Duration) -> StoreResult<Recorded>;
    /// Notes that a failure of these deliveries was reported (operational
    /// `message.attempt.failing` or `exhausted`), so that the next success of each is
    /// reported as recovered, even after a resend or a recovery started its attempts over.
    async fn note_failure_told(&self, keys: Vec<DeliveryKey>) -> StoreResult<()>;
    /// Forgets that a failure of the delivery was reported; answers whether one was (once:
    /// a second call answers `false`).
    async fn take_failure_told(&self, key: DeliveryKey) -> StoreResult<bool>;
    /// Marks pending deliveries failed without an attempt (their endpoint was disabled or
    /// deleted); each only while still leased under its key's lease, when one is given
    /// ([`ClaimedKey`]).
    async fn abandon_deliveries(&self, keys: Vec<ClaimedKey>) -> StoreResult<()>;
    /// Hands leased deliveries back unsent, to be taken again at `due_at` (an endpoint with
    /// more work in memory than it can absorb, a circuit open, no rate slot or no
    /// transformation worker in time); each only while still leased under its key's lease,
    /// when one is given ([`ClaimedKey`]).
    async fn defer_deliveries(&self, keys: Vec<ClaimedKey>, due_at: DateTime<Utc>) -> StoreResult<()>;
    /// Makes the endpoint's waiting (not leased) pending deliveries that fall due after
    /// `now` but no later than `until` due at `now`; returns how many. Used when an
    /// endpoint's circuit is reset by someone who changed the endpoint or asked for its
    /// deliveries: those paused for its cool-down need not wait it out. A scheduled delivery
    /// is not made due before its time ([`Store::schedule_message`]).
    async fn hasten_deliveries(&self, endpoint_id: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Makes the endpoint's waiting (not leased) pending deliveries due exactly at one of
    /// `due_at` due at `now`; returns how many. Used by a node for the deliveries it handed
    /// back ([`Store::defer_deliveries`]) for having more of the endpoint's work in memory
    /// than it may, once it has room again: nothing else, such as a retry after a
    /// `Retry-After`, is made due early (one due at the very same millisecond aside).
    async fn undefer_deliveries(
        &self,
        endpoint_id: &str,
        due_at: Vec<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Queues one message for one endpoint again (manual trigger), returning the job.
    async fn resend(&self, app_id: &str, msg_id: &str, endpoint_id: &str, now: DateTime<Utc>) -> StoreResult<()>;
    /// Queues again up to `limit` failed deliveries of the endpoint whose message was created
    /// in `[since, until)`, in message id order after `after` (`""`: from the first); returns
    /// how many, and where the next round goes on: the last message id the round looked at
    /// when it looked at `limit` of them (some may have changed meanwhile and not been
    /// queued), `None` when none are left. Callers go on in rounds, so that no statement
    /// holds the store long.
    async fn recover(
        &self,
        app_id: &str,
        endpoint_id: &str,
        (since, until): (DateTime<Utc>, Option<DateTime<Utc>>),
        now: DateTime<Utc>,
        (after, limit): (&str, usize),
    ) -> StoreResult<(u64, Option<String>)>;
    /// Up to `limit` messages of the application created in `[since, until)` that have no
    /// delivery to the endpoint, in id order after `after_id` (a replay of what an
    /// endpoint missed: created before it was, or filtered out then); with their payloads
    /// only when `with_payload` (a payload filter reads them), else with `""`: a batch of
    /// megabyte payloads is not read to be thrown away.
    #[allow(clippy::too_many_arguments)]
    async fn messages_without_delivery(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: Option<&str>,
        limit: usize,
        with_payload: bool,
    ) -> StoreResult<Vec<Message>>;
    /// Queues the application's messages `msg_ids` for the endpoint (a manual trigger, due
    /// at `now`), leaving any that already have a delivery to it; returns how many were
    /// queued. Messages or an endpoint of another application are never touched.
    async fn add_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        msg_ids: Vec<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Drops every lease: used at start-up by a single-node store, where any lease left
    /// over belongs to a previous run of this same process.
    async fn release_all_leases(&self) -> StoreResult<u64>;

    /// Reserves the next send slot of a rate-limited endpoint, shared by every node using
    /// this store: returns when the slot starts (in the past or now: send at once). Slots
    /// are `1/rate` seconds apart; an endpoint idle for a second may burst `rate` sends at
    /// once, no more (so at one a second, two sends are never less than a second apart).
    /// A slot that would start after `not_after` is not taken ([`RateSlot::Busy`], with
    /// when the next one starts): a sender that could not use it would push every later
    /// one back.
    async fn take_rate_slot(
        &self,
        endpoint_id: &str,
        rate: u32,
        now: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> StoreResult<RateSlot>;

    /// Signalled when another process sharing this store wrote work that may be due now
    /// (PostgreSQL `LISTEN/NOTIFY`). `None` for a store only one process uses.
    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// Tells every other process sharing this store (through [`Store::circuit_resets`]) that
    /// an endpoint's circuit should start over: the endpoint
    /// was changed or recovered, or a delivery to it was asked for by hand. Best effort (a
    /// lost announcement leaves another node's circuit to its cool-down). A store only one
    /// process uses has nobody to tell.
    async fn announce_circuit_reset(&self, _endpoint_id: &str) {}

    /// The endpoint ids of circuit resets announced by other processes
    /// ([`Store::announce_circuit_reset`]); `None` for a store only one process uses.
    fn circuit_resets(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    /// Tells every other process sharing this store (through [`Store::stops`]) that content
    /// was deleted, or an endpoint disabled or paused, so that the jobs they hold for it are
    /// not sent. Best effort, as [`Store::announce_circuit_reset`]: a lost announcement leaves
    /// a job already held by another node (for at most its lease) to be sent.
    async fn announce_stop(&self, _what: &Stop) {}

    /// What other processes announced through [`Store::announce_stop`]; `None` for a store
    /// only one process uses.
    fn stops(&self) -> Option<tokio::sync::broadcast::Receiver<Stop>> {
        None
    }

    /// Tells every other process sharing this store (through [`Store::tenant_changes`])
    /// that applications, endpoints or sources may have changed, so that they drop what
    /// they cached of them. Best effort, as [`Store::announce_circuit_reset`].
    async fn announce_tenant_change(&self) {}

    /// A tick for each [`Store::announce_tenant_change`] of another process; `None` for a
    /// store only one process uses.
    fn tenant_changes(&self) -> Option<tokio::sync::broadcast::Receiver<()>> {
        None
    }

    /// A random secret made when the database was created: the same for every node that
    /// shares the database, kept across restarts, never logged nor sent anywhere. The API
    /// derives from it the key that makes stream positions opaque to clients.
    fn instance_secret(&self) -> [u8; 32];

    // --- pulling: the stream of an application's messages, for consumers that poll,
    // long-poll or listen to Server-Sent Events instead of receiving pushes.
    /// Up to `query.limit` messages of the application after `query.after`, in the order
    /// they became durable: a message is never read before it is durable, and a reader
    /// that carries `next` from one read to the next sees every message once, whatever
    /// the order in which concurrent writes committed. A `query.after` past every position
    /// the store can have handed out is [`StoreError::PositionAhead`].
    async fn read_message_events(&self, app_id: &str, query: &EventsQuery) -> StoreResult<EventsPage>;
    /// The stream's durable end as it stands (the same for every application): a read from
    /// it reads none of the messages before it, and finds those that become durable later
    /// (on PostgreSQL also those already committed behind an older transaction that is
    /// still open, which become readable only when it ends).
    async fn message_events_end(&self) -> StoreResult<EventPosition>;
    /// Changes whenever messages of the application may have joined its stream (on a shared
    /// store, written by any node): long-polls and streams wait on it, then read again.
    /// Writes to other applications leave it alone, as far as the store can tell.
    fn message_events_signal(&self, app_id: &str) -> tokio::sync::watch::Receiver<u64>;
    /// How often a waiting reader should read again without a signal: `None` when the
    /// signal announces every message (a store one process writes), a period when messages
    /// can become readable unannounced (PostgreSQL: when an older transaction ends).
    fn message_events_recheck(&self) -> Option<Duration>;
    /// The position a server-side subscription (`GET .../events/subscription/{id}`) reached.
    async fn get_events_subscription(&self, app_id: &str, id: &str) -> StoreResult<Option<EventPosition>>;
    /// The subscription's position and how many times it was sought: where a read of it
    /// starts ([`ReadFrom`]).
    async fn events_subscription_read(&self, app_id: &str, id: &str) -> StoreResult<Option<ReadFrom>>;
    /// Creates the subscription `id` at `position`, unless the application's subscriptions
    /// whose names begin with `prefix` are `most` already (a polling endpoint's consumers:
    /// `{endpoint_id}/`), or the application is gone, or, for a name `{endpoint_id}/…` (a
    /// polling endpoint's start and its consumers), that endpoint is: answers whether it
    /// exists now (created, or there before). Checked and written as one, so concurrent
    /// creations cannot pass the count together, and a creation racing the deletion of
    /// the application or the endpoint leaves no position behind it. The only way a
    /// subscription comes to exist.
    async fn add_events_subscription(
        &self,
        app_id: &str,
        id: &str,
        position: EventPosition,
        (prefix, most): (&str, u64),
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// How many of the application's subscriptions have names that begin with `prefix` (a
    /// polling endpoint's consumers: `{endpoint_id}/`).
    async fn count_events_subscriptions(&self, app_id: &str, prefix: &str) -> StoreResult<u64>;
    /// Moves a server-side subscription that exists ([`Store::add_events_subscription`]
    /// made it): answers whether it was there. One that is not (deleted with its
    /// application or its endpoint while a read of it was under way, a long-poll) is not
    /// made again, so that nothing is left behind that nobody can delete. With `read_from`
    /// (where the read that reached `position` started), it moves forward only: a position
    /// before the stored one leaves it where it is (two readers of one subscription
    /// answering out of order must not move it back), and so does any seek since the read
    /// started (the seek's position stands, wherever it is). Without, it is set: a seek,
    /// counted.
    async fn set_events_subscription(
        &self,
        app_id: &str,
        id: &str,
        position: EventPosition,
        read_from: Option<ReadFrom>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;

    // --- inbound sources
    /// Creates a source together with the application it owns and that application's
    /// first endpoints (the source's URL destinations), in one transaction. Applications
    /// owned by sources are left out of [`Store::list_apps`].
    async fn create_source(
        &self,
        source: hooklane_core::model::Source,
        app: Application,
        endpoints: Vec<Endpoint>,
    ) -> StoreResult<()>;
    async fn get_source(&self, id: &str) -> StoreResult<Option<hooklane_core::model::Source>>;
    async fn list_sources(&self, page: &PageRequest) -> StoreResult<Page<hooklane_core::model::Source>>;
    /// Saves the source's settings and the changes to its application's endpoints (its URL
    /// destinations) in one transaction: nothing is saved when the source is missing
    /// (`NotFound`) or any endpoint change is refused (`Changed`, `Conflict`).
    async fn update_source(
        &self,
        source: hooklane_core::model::Source,
        destinations: DestinationChanges,
    ) -> StoreResult<()>;
    /// Deletes the source, its request records, and its application with everything under it.
    async fn delete_source(&self, id: &str) -> StoreResult<()>;
    async fn record_inbound_request(&self, request: hooklane_core::model::InboundRequest) -> StoreResult<()>;
    async fn list_inbound_requests(
        &self,
        source_id: &str,
        status: Option<hooklane_core::model::InboundStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::InboundRequest>>;
    async fn get_inbound_request(
        &self,
        source_id: &str,
        id: &str,
    ) -> StoreResult<Option<hooklane_core::model::InboundRequest>>;
    /// Accepted requests whose fan-out to the source's event-type destinations is still to
    /// be done (recorded `Accepted` with a `reason` and a message), received at or after
    /// `received.0` and before `received.1`, oldest first, at most `limit`.
    async fn unfinished_fan_outs(
        &self,
        received: (DateTime<Utc>, DateTime<Utc>),
        limit: usize,
    ) -> StoreResult<Vec<hooklane_core::model::InboundRequest>>;
    /// The request's fan-out is done: its `reason` goes (it reads as any accepted request).
    async fn finish_fan_out(&self, source_id: &str, id: &str) -> StoreResult<()>;
    /// The record of the accepted request of source `source_id` that became message
    /// `msg_id`, if it is recorded (one at most: the provider's retries of it are duplicates),
    /// to tell whether its fan-out is finished.
    async fn accepted_request_of(
        &self,
        source_id: &str,
        msg_id: &str,
    ) -> StoreResult<Option<hooklane_core::model::InboundRequest>>;

    // --- background tasks
    async fn record_task(&self, task: hooklane_core::model::BackgroundTask) -> StoreResult<()>;
    /// The task, if it exists and (when `app_id` is given) is that application's.
    async fn get_task(
        &self,
        app_id: Option<&str>,
        id: &str,
    ) -> StoreResult<Option<hooklane_core::model::BackgroundTask>>;
    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::BackgroundTask>>;
    /// Saves a task's status, data and `updated_at` (its end) while it is `running`;
    /// [`StoreError::NotFound`] when there is no such task, or it ended already (called
    /// interrupted, failed at a shutdown): an end once told stays.
    async fn update_task(&self, task: hooklane_core::model::BackgroundTask) -> StoreResult<()>;
    /// A running task's heartbeat: moves its `updated_at` to `at` if it is still `running`
    /// (a task another node already called interrupted stays as it is); answers whether it was.
    async fn beat_task(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Marks `failed`, with `reason` as the `error` of its data, every task still `running`
    /// whose `updated_at` is before `before` (its node stopped beating for it); returns how
    /// many.
    async fn fail_stale_tasks(&self, before: DateTime<Utc>, reason: &str, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Marks the task `failed`, with `reason` as the `error` of its data, if it is still
    /// `running` (one that ended meanwhile keeps its end); answers whether it was.
    async fn fail_task(&self, id: &str, reason: &str, now: DateTime<Utc>) -> StoreResult<bool>;

    // --- attempts
    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>>;
    async fn get_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<Option<Attempt>>;
    /// Deletes what the endpoint answered to an attempt (its response body, which may hold
    /// data the customer's endpoint should not have echoed); [`StoreError::NotFound`] when
    /// the application has no such attempt.
    async fn expunge_attempt_content(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()>;

    // --- auth tokens (stored as SHA-256 hashes, never in clear)
    /// Stores a token's hash for `holder` (the admin, or an application with the token's
    /// feature flags and capabilities); from `expires_at` on (when given) it is no longer
    /// found. `session`: the session it was issued for (see [`Store::expire_app_tokens`]).
    async fn create_token(
        &self,
        token_hash: String,
        holder: Principal,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        session: Option<String>,
    ) -> StoreResult<()>;
    /// Who holds the token, if it exists and has not expired at `now`.
    async fn find_token(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Principal>>;
    /// Forgets a token (a logout); false when there was none.
    async fn delete_token(&self, token_hash: &str) -> StoreResult<bool>;
    /// Makes every token of the application expire at `at` at the latest, or (`sessions`
    /// given) those issued for one of these sessions only; returns how many it changed.
    async fn expire_app_tokens(
        &self,
        app_id: &str,
        at: DateTime<Utc>,
        sessions: Option<Vec<String>>,
    ) -> StoreResult<u64>;
    /// Makes every key of the polling endpoint ([`Principal::Poller`]) expire at `at` at the
    /// latest (a rotation); returns how many it had.
    async fn expire_poller_tokens(&self, app_id: &str, endpoint_id: &str, at: DateTime<Utc>) -> StoreResult<u64>;

    // --- integrations (Svix's: named credentials of an application for third parties)
    /// Stores a new integration; [`StoreError::NotFound`] when its application does not
    /// exist (a deletion of the application never leaves one behind).
    async fn create_integration(&self, integration: hooklane_core::model::Integration) -> StoreResult<()>;
    /// The integration, if it exists and is that application's.
    async fn get_integration(&self, app_id: &str, id: &str) -> StoreResult<Option<hooklane_core::model::Integration>>;
    async fn list_integrations(
        &self,
        app_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::Integration>>;
    /// Saves the integration's name, feature flags and `updated_at`, and gives its key the
    /// new flags; [`StoreError::NotFound`] when the application has no such integration.
    async fn update_integration(&self, integration: hooklane_core::model::Integration) -> StoreResult<()>;
    /// Deletes the integration and its key; [`StoreError::NotFound`] when the application
    /// has no such integration.
    async fn delete_integration(&self, app_id: &str, id: &str) -> StoreResult<()>;
    /// Makes the token of hash `key_hash` the integration's key, an application token that
    /// does not expire, with the integration's feature flags; the key it had stops working
    /// in the same write. Moves `updated_at`
    /// to `now`. [`StoreError::NotFound`] when the application has no such integration.
    async fn set_integration_key(
        &self,
        app_id: &str,
        id: &str,
        key_hash: String,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;

    // --- idempotency keys
    /// Takes `key` for a request identified by `fingerprint` (the same request sent again has
    /// the same one) for at most `ttl` (a key whose holder never finishes is free again
    /// then), or says who holds it; a key taken for another fingerprint is
    /// [`IdempotencyState::Mismatch`]. A take that replaces the same request's hold that ran
    /// out unfinished tells that hold's lease end (kept for [`UNFINISHED_KEY_KEPT`] past it).
    async fn idempotency_begin(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<IdempotencyState>;
    /// Whether a request still holds `key` at `now` (taken, neither finished, aborted nor
    /// past its hold): a read, for a request waiting on the same request's answer to look
    /// at without a write each time.
    async fn idempotency_held(&self, key: &str, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Keeps the answer of the request holding `key` since `begun` (the `now` of its
    /// [`Store::idempotency_begin`], with the same `ttl`), to be replayed until
    /// `expires_at`. A key no longer held so (its hold ran out, and a retry took it) is
    /// left to its new holder.
    async fn idempotency_finish(
        &self,
        key: &str,
        (begun, ttl): (DateTime<Utc>, Duration),
        response: StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Frees `key` held since `begun` (as for [`Store::idempotency_finish`]) for a new
    /// attempt; a key completed, or held by another request since, is left as it is.
    async fn idempotency_abort(&self, key: &str, held: (DateTime<Utc>, Duration)) -> StoreResult<()>;

    // --- housekeeping
    /// Deletes at most `limit` idempotency keys (an unfinished one [`UNFINISHED_KEY_KEPT`]
    /// after its lease end) and at most `limit` tokens that expired by `now`, at most `limit`
    /// inbound request records received before `inbound_before` (but none whose fan-out is unfinished within [`FAN_OUT_KEPT`]: it is still to be done),
    /// at most `limit` of the `messages` it may (with their deliveries and attempts; `None`:
    /// keep them all), looking at no more than `2 × limit` of them and deleting a bounded
    /// number of rows, and at most `limit` background tasks older than [`TASK_RETENTION`].
    /// Callers repeat while a count reaches `limit` or `messages_resume` says where to go on,
    /// so no single statement holds the store long.
    async fn prune(
        &self,
        now: DateTime<Utc>,
        inbound_before: Option<DateTime<Utc>>,
        messages: Option<PruneMessages>,
        limit: usize,
    ) -> StoreResult<Pruned>;

    // --- statistics (operators' view: `/ready`, `/metrics`, the dashboard)
    /// Succeeds when the store answers a trivial read.
    async fn ping(&self) -> StoreResult<()>;
    /// The delivery queue and endpoint health at `now`, for the gauges of `/metrics`.
    async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<QueueStats>;
    /// Attempts per endpoint of the application made since `since`, with each endpoint's
    /// pending deliveries; one entry per endpoint of the application, in id order.
    async fn endpoint_health(&self, app_id: &str, since: DateTime<Utc>) -> StoreResult<Vec<EndpointHealth>>;
    /// Attempts of the application (to one endpoint when `endpoint_id` is given) made in
    /// `[since, until)`, counted per slice of `bucket` (slices aligned on multiples of
    /// `bucket` since the epoch); only slices with attempts appear, oldest first.
    async fn attempt_timeline(
        &self,
        app_id: &str,
        endpoint_id: Option<&str>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        bucket: Duration,
    ) -> StoreResult<Vec<TimelineBucket>>;
    /// How many deliveries (one message to one endpoint: Svix's "message destinations",
    /// what usage is billed by) the application's messages created in `[since, until)`
    /// have, however they went. Messages already pruned, and deliveries to endpoints since
    /// deleted (which go with them), are not counted. Reads every message the application
    /// has kept (no index by time: it would cost every ingest), for an operator's occasional
    /// question, not for a hot path.
    async fn count_message_destinations(
        &self,
        app_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Messages as [`Store::list_messages`] lists them, each with how its deliveries stand,
    /// optionally only those in `state`.
    async fn message_log(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        state: Option<MessageState>,
        page: &PageRequest,
    ) -> StoreResult<Page<MessageSummary>>;
}

pub type DynStore = Arc<dyn Store>;

/// Opens the store named by a URL-ish string: a `postgres://` or `postgresql://` URL (see
/// [`postgres`]), `sqlite:PATH`, or a plain file path.
pub async fn open(location: &str) -> StoreResult<DynStore> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PgStore::open(location).await?));
    }
    Ok(Arc::new(sqlite::SqliteStore::open(sqlite_path(location)).await?))
}

/// The file of a `sqlite:PATH` (or `sqlite://PATH`, or plain path) location.
fn sqlite_path(location: &str) -> &str {
    location.strip_prefix("sqlite://").or_else(|| location.strip_prefix("sqlite:")).unwrap_or(location)
}

/// Copies the embedded database at `location` into the new file `to`, while a server may
/// be using it (see [`sqlite::backup`]). PostgreSQL has its own tools (`pg_dump`), and is
/// refused here.
pub async fn backup(location: &str, to: &std::path::Path) -> StoreResult<sqlite::backup::BackupReport> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        return Err(StoreError::Database(
            "hooklane backup copies the embedded SQLite database; back PostgreSQL up with its own tools (pg_dump, or a base backup)"
                .into(),
        ));
    }
    let from = std::path::PathBuf::from(sqlite_path(location));
    let to = to.to_path_buf();
    tokio::task::spawn_blocking(move || sqlite::backup::backup(&from, &to))
        .await
        .map_err(|e| StoreError::Database(format!("backup task failed: {e}")))?
}
