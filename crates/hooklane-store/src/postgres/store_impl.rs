//! [`Store`] for [`PgStore`]: each method takes a pooled connection and runs its query,
//! in an explicit transaction where it needs more than one statement.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use hooklane_core::model::{Application, Attempt, Delivery, Endpoint, EventType, Message, Principal};
use hooklane_core::{DateTime, Utc};

use super::rows::{self, ms};
use super::{db_err, finish, is_transient, queries, PgStore, TENANTS_CHANNEL};
use crate::queries_shared::{from_micros, lease_end, micros, rate_burst_us, rate_interval_us};
use crate::*;

/// Whole-transaction retries after a deadlock or serialization failure: of `record_attempts`
/// (two nodes recording attempts for the same endpoints in different orders), and of the
/// writes of an endpoint's row and its deliveries ([`in_retried_transaction`]).
const TRANSIENT_RETRIES: usize = 5;

/// Runs `$body` (an expression using the transaction `$tx`, of type
/// `StoreResult<T>` once awaited) in a transaction on a connection of `$store`, committed
/// when it succeeds, and run again whole (at most [`TRANSIENT_RETRIES`] times in all) when
/// it fails on a deadlock or a serialization failure.
///
/// For the writes that lock an endpoint's row and its deliveries (changing, deleting it, or
/// its application): other writers take those locks in the other order (recording attempts:
/// a delivery, then its endpoint's failure streak; a change of the ordering and a FIFO
/// lane's claim: the endpoint, then its deliveries, where a delete takes the deliveries
/// first), and PostgreSQL ends the deadlock by failing whichever waiter's check runs first,
/// this one as likely as the other. Nothing was written then, and running it again once the
/// other committed succeeds; failing instead would answer a plain API call with a server
/// error.
macro_rules! in_retried_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut c = $store.client().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            let $tx = c.transaction().await.map_err(db_err)?;
            let result = $body.await;
            match finish($tx, result).await {
                Err(e) if is_transient(&e) && tries < TRANSIENT_RETRIES => {
                    tracing::debug!(error = %e, tries, "a transaction hit a deadlock or serialization failure; retrying");
                }
                done => break done,
            }
        }
    }};
}

impl PgStore {
    /// Writes one of an endpoint's JSON settings columns (`oauth`, `mtls`: they have
    /// writes of their own, apart from the endpoint's), as of `updated_at`.
    async fn set_endpoint_json(
        &self,
        app_id: &str,
        endpoint_id: &str,
        column: &'static str,
        json: Option<String>,
        updated_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        // (Never back: a version read since must see this write as later.)
        let sql = format!(
            "UPDATE endpoints SET {column} = $3, updated_at = GREATEST(updated_at + 1, $4) WHERE app_id = $1 AND id = $2"
        );
        let n = queries::execute(&c, &sql, &[&app_id, &endpoint_id, &json, &ms(updated_at)]).await?;
        queries::one_row(n)
    }

    /// Queues a message for the ingest workers; answers once its batch is committed.
    async fn queue_ingest(
        &self,
        msg: Message,
        endpoint_ids: Vec<String>,
        start: FirstSend,
    ) -> StoreResult<Vec<String>> {
        // PostgreSQL text cannot hold NUL; refused here so it cannot fail a whole batch.
        if msg.payload.contains('\0') {
            return Err(StoreError::Refused(
                "the payload contains a NUL character, which PostgreSQL cannot store".into(),
            ));
        }
        // Within one message each endpoint gets one delivery (the same rule the primary key
        // enforces on SQLite); checked here so a bad call cannot fail a whole batch.
        let mut seen = std::collections::HashSet::new();
        if !endpoint_ids.iter().all(|e| seen.insert(e.as_str())) {
            return Err(StoreError::Conflict("the same endpoint appears twice for one message".into()));
        }
        // Group-committed with concurrent calls; answers once the batch is committed.
        let place = self.backlog.admit(crate::backlog::message_bytes(&msg))?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = super::ingest::IngestJob { msg, endpoint_ids, start, reply, _place: place };
        self.ingest.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_app(&self, app: Application) -> StoreResult<()> {
        queries::insert_app(&self.client().await?, &app).await
    }

    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<Application>> {
        queries::get_app(&self.client().await?, id_or_uid).await
    }

    async fn list_apps_where(&self, page: &PageRequest, filter: AppListFilter) -> StoreResult<Page<Application>> {
        let c = self.client().await?;
        // Applications owned by inbound sources are managed through their source.
        let mut select =
            queries::Select::new(rows::APP_COLS, "applications").and("id NOT IN (SELECT app_id FROM sources)", []);
        for condition in crate::queries_shared::app_list_conditions(filter, "NOT e.disabled") {
            select = select.and(&condition, []);
        }
        select.page(&c, "id", page, rows::app).await
    }

    async fn update_app(&self, app: Application) -> StoreResult<()> {
        queries::update_app(&self.client().await?, &app).await
    }

    async fn delete_app(&self, app_id: &str) -> StoreResult<()> {
        in_retried_transaction!(self, |tx| queries::delete_app(&tx, app_id))
    }

    async fn create_event_type(&self, et: EventType) -> StoreResult<()> {
        queries::insert_event_type(&self.client().await?, &et).await
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        queries::get_event_type(&self.client().await?, name).await
    }

    async fn list_event_types(&self, page: &PageRequest, include_archived: bool) -> StoreResult<Page<EventType>> {
        let c = self.client().await?;
        let q = queries::Select::new(rows::EVENT_TYPE_COLS, "event_types");
        let q = if include_archived { q } else { q.and("NOT archived", []) };
        q.page(&c, "name", page, rows::event_type).await
    }

    async fn update_event_type(&self, et: EventType) -> StoreResult<()> {
        queries::update_event_type(&self.client().await?, &et).await
    }

    async fn import_event_types(
        &self,
        upserts: Vec<EventType>,
        archive: Vec<String>,
        at: DateTime<Utc>,
        keep_flags: bool,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let result = queries::import_event_types(&tx, &upserts, &archive, ms(at), keep_flags).await;
        finish(tx, result).await
    }

    async fn delete_event_type(&self, name: &str) -> StoreResult<()> {
        queries::delete_event_type(&self.client().await?, name).await
    }

    async fn create_endpoint(&self, ep: Endpoint) -> StoreResult<()> {
        queries::insert_endpoint(&self.client().await?, &ep).await
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        queries::get_endpoint(&self.client().await?, app_id, id_or_uid).await
    }

    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>> {
        let c = self.client().await?;
        queries::Select::new(rows::ENDPOINT_COLS, "endpoints")
            .and("app_id = ?", [queries::text(app_id)])
            .page(&c, "id", page, rows::endpoint)
            .await
    }

    async fn app_endpoints(&self, app_id: &str) -> StoreResult<Vec<Endpoint>> {
        queries::app_endpoints(&self.client().await?, app_id).await
    }

    async fn update_endpoint(&self, ep: Endpoint, read_at: Option<DateTime<Utc>>) -> StoreResult<()> {
        in_retried_transaction!(self, |tx| queries::update_endpoint(&tx, &ep, read_at.map(ms)))
    }

    async fn delete_endpoint(&self, app_id: &str, endpoint_id: &str) -> StoreResult<()> {
        in_retried_transaction!(self, |tx| queries::delete_endpoint(&tx, app_id, endpoint_id))
    }

    async fn set_endpoint_oauth(
        &self,
        app_id: &str,
        endpoint_id: &str,
        oauth: Option<&EndpointOauth>,
        updated_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.set_endpoint_json(app_id, endpoint_id, "oauth", oauth.map(rows::to_json), updated_at).await
    }

    async fn set_endpoint_mtls(
        &self,
        app_id: &str,
        endpoint_id: &str,
        mtls: Option<&EndpointMtls>,
        updated_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.set_endpoint_json(app_id, endpoint_id, "mtls", mtls.map(rows::to_json), updated_at).await
    }

    async fn forget_endpoint_credentials(&self, app_id: &str, endpoint_id: &str, origin: &str) -> StoreResult<()> {
        let c = self.client().await?;
        let unbound = |col: &str| {
            format!("CASE WHEN COALESCE({col}::jsonb ->> 'endpointOrigin', '') <> $3 THEN NULL ELSE {col} END")
        };
        let sql = format!(
            "UPDATE endpoints SET oauth = {}, mtls = {} WHERE app_id = $1 AND id = $2",
            unbound("oauth"),
            unbound("mtls")
        );
        queries::execute(&c, &sql, &[&app_id, &endpoint_id, &origin]).await.map(drop)
    }

    async fn replace_endpoint_oauth(
        &self,
        app_id: &str,
        endpoint_id: &str,
        expected: &EndpointOauth,
        new: &EndpointOauth,
    ) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = queries::execute(
            &c,
            "UPDATE endpoints SET oauth = $3 WHERE app_id = $1 AND id = $2 AND oauth = $4",
            &[&app_id, &endpoint_id, &rows::to_json(new), &rows::to_json(expected)],
        )
        .await?;
        Ok(n == 1)
    }

    async fn create_message(
        &self,
        msg: Message,
        endpoint_ids: Vec<String>,
        leased_until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<String>> {
        self.queue_ingest(msg, endpoint_ids, FirstSend::leased(leased_until)).await
    }

    async fn schedule_message(
        &self,
        msg: Message,
        endpoint_ids: Vec<String>,
        due_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.queue_ingest(msg, endpoint_ids, FirstSend::At(due_at)).await.map(drop)
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
        queries::get_message(&self.client().await?, app_id, id_or_event_id).await
    }

    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        queries::list_messages(&self.client().await?, app_id, filter, page).await
    }

    async fn message_deliveries(&self, app_id: &str, msg_id: &str) -> StoreResult<Vec<(Delivery, Endpoint)>> {
        queries::message_deliveries(&self.client().await?, app_id, msg_id).await
    }

    async fn expunge_message_content(&self, app_id: &str, msg_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let mut c = self.client().await?;
        // One transaction, under the locks of the message's lanes: no claim leases one of its
        // deliveries between the content's deletion and the deliveries' (it would send `{}`),
        // nor between the read of what is in flight and the write (a lane would move on
        // beside a delivery on the wire), as on SQLite, whose writer does it all at once.
        let tx = c.transaction().await.map_err(super::db_err)?;
        super::lanes::lock_message_lanes(&tx, app_id, msg_id).await?;
        let moved = queries::expunge_message_content(&tx, app_id, msg_id, ms(now)).await?;
        tx.commit().await.map_err(super::db_err)?;
        settle_lanes(&mut c, moved, ms(now)).await;
        Ok(())
    }

    async fn endpoint_messages(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &MessageFilter,
        status: Option<hooklane_core::model::DeliveryStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<(Message, Delivery)>> {
        queries::endpoint_messages(&self.client().await?, app_id, endpoint_id, filter, status, page).await
    }

    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<EndpointStats> {
        queries::endpoint_stats(&self.client().await?, app_id, endpoint_id, since, until).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
        room: &crate::ClaimRoom,
    ) -> StoreResult<Vec<Job>> {
        // No BEGIN/COMMIT: a read of which endpoints have work due, then one statement per
        // round of the fair claim (usually one), and a short transaction per FIFO lane. Rows
        // it finds orphaned are deleted by a further statement; they stay leased meanwhile.
        queries::claim_due(&mut self.client().await?, now, limit, lease_end(now, lease), room).await
    }

    async fn next_due_at(&self, skip_endpoints: &[String]) -> StoreResult<Option<DateTime<Utc>>> {
        queries::next_due_at(&self.client().await?, skip_endpoints).await
    }

    async fn record_attempts(&self, outcomes: Vec<AttemptOutcome>, disable_after: Duration) -> StoreResult<Recorded> {
        if outcomes.is_empty() {
            return Ok(Recorded::default());
        }
        let mut c = self.client().await?;
        match record_batch(&mut c, &outcomes, disable_after, super::SET_LOCK_WAIT).await {
            Err(e) if super::is_lock_wait(&e) => {}
            done => return done,
        }
        // A row of the batch is held by a long transaction (an endpoint or application
        // being deleted with its deliveries, a backlog moved out of its lanes): the batch
        // goes again endpoint by endpoint, each waiting only a moment (an application's
        // endpoints held together would otherwise cost the wait each, in turn), so that the
        // others' outcomes are recorded, not left for their leases to run out and be sent
        // again. Those not recorded (held still, most likely being deleted) are set aside:
        // nothing is told of them, and they are sent again once their leases end.
        let mut by_endpoint: HashMap<&str, Vec<AttemptOutcome>> = HashMap::new();
        for o in &outcomes {
            by_endpoint.entry(o.attempt.endpoint_id.as_str()).or_default().push(o.clone());
        }
        let mut recorded = Recorded::default();
        for (endpoint_id, outcomes) in by_endpoint {
            match record_batch(&mut c, &outcomes, disable_after, super::SET_SHORT_LOCK_WAIT).await {
                Ok(done) => {
                    recorded.disabled.extend(done.disabled);
                    recorded.set_aside.extend(done.set_aside);
                }
                Err(e) => {
                    // (What the other endpoints' records committed stands, and is told.)
                    tracing::warn!(%endpoint_id, outcomes = outcomes.len(), error = %e, "attempts not recorded; sent again once their leases end");
                    recorded.set_aside.extend(outcomes.iter().map(|o| DeliveryKey {
                        msg_id: o.attempt.msg_id.clone(),
                        endpoint_id: o.attempt.endpoint_id.clone(),
                    }));
                }
            }
        }
        Ok(recorded)
    }

    async fn note_failure_told(&self, keys: Vec<DeliveryKey>) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (msgs, eps): (Vec<&str>, Vec<&str>) =
            keys.iter().map(|k| (k.msg_id.as_str(), k.endpoint_id.as_str())).unzip();
        queries::execute(
            &self.client().await?,
            "UPDATE deliveries d SET failure_told = true FROM UNNEST($1::text[], $2::text[]) AS k(msg_id, endpoint_id) \
             WHERE d.msg_id = k.msg_id AND d.endpoint_id = k.endpoint_id",
            &[&msgs, &eps],
        )
        .await
        .map(drop)
    }

    async fn take_failure_told(&self, key: DeliveryKey) -> StoreResult<bool> {
        let n = queries::execute(
            &self.client().await?,
            "UPDATE deliveries SET failure_told = false WHERE msg_id = $1 AND endpoint_id = $2 AND failure_told",
            &[&key.msg_id, &key.endpoint_id],
        )
        .await?;
        Ok(n > 0)
    }

    async fn abandon_deliveries(&self, keys: Vec<ClaimedKey>) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (mut c, now) = (self.client().await?, ms(Utc::now()));
        // Waiting a moment at most for rows a long transaction holds (see `record_batch`):
        // left leased, they are taken again once their lease ends.
        let tx = c.transaction().await.map_err(db_err)?;
        let abandon = queries::abandon_deliveries(&tx, &keys, now);
        let moved = super::with_lock_wait(&tx, super::SET_SHORT_LOCK_WAIT, abandon).await?;
        tx.commit().await.map_err(db_err)?;
        settle_lanes(&mut c, moved, now).await;
        Ok(())
    }

    async fn defer_deliveries(&self, keys: Vec<ClaimedKey>, due_at: DateTime<Utc>) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        // As `abandon_deliveries`: a moment's wait at most for rows held.
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let defer = queries::defer_deliveries(&tx, &keys, ms(due_at));
        super::with_lock_wait(&tx, super::SET_SHORT_LOCK_WAIT, defer).await?;
        tx.commit().await.map_err(db_err)?;
        self.announce_due().await;
        Ok(())
    }

    async fn hasten_deliveries(&self, endpoint_id: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
        let n = queries::hasten_deliveries(&self.client().await?, endpoint_id, ms(until), ms(now)).await?;
        if n > 0 {
            self.announce_due().await;
        }
        Ok(n)
    }

    async fn undefer_deliveries(
        &self,
        endpoint_id: &str,
        due_at: Vec<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let due: Vec<i64> = due_at.into_iter().map(ms).collect();
        let n = queries::undefer_deliveries(&self.client().await?, endpoint_id, &due, ms(now)).await?;
        if n > 0 {
            self.announce_due().await;
        }
        Ok(n)
    }

    async fn resend(&self, app_id: &str, msg_id: &str, endpoint_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        queries::resend(&self.client().await?, app_id, msg_id, endpoint_id, ms(now)).await?;
        self.announce_due().await;
        Ok(())
    }

    async fn recover(
        &self,
        app_id: &str,
        endpoint_id: &str,
        (since, until): (DateTime<Utc>, Option<DateTime<Utc>>),
        now: DateTime<Utc>,
        (after, limit): (&str, usize),
    ) -> StoreResult<(u64, Option<String>)> {
        let until = until.map(ms).unwrap_or(i64::MAX);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        tx.batch_execute(queries::RECOVERY_PLANNER).await.map_err(db_err)?;
        let (n, last) = queries::recover(&tx, app_id, endpoint_id, (ms(since), until), ms(now), (after, limit)).await?;
        tx.commit().await.map_err(db_err)?;
        if n > 0 {
            self.announce_due().await;
        }
        Ok((n, last))
    }

    /// Drops every lease in the database, including those held right now by other nodes
    /// sharing it: their deliveries become due at once and may be sent twice. Only safe
    /// when no other node is running (a single-node setup at start-up, or after stopping
    /// them all); a multi-node deployment must not call this at start-up and should rely
    /// on leases expiring instead. The caller decides.
    async fn messages_without_delivery(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: Option<&str>,
        limit: usize,
        with_payload: bool,
    ) -> StoreResult<Vec<Message>> {
        let c = self.client().await?;
        let page = (after_id.unwrap_or_default(), limit, with_payload);
        queries::messages_without_delivery(&c, app_id, endpoint_id, (ms(since), ms(until)), page).await
    }

    async fn add_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        msg_ids: Vec<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let added = queries::add_deliveries(&self.client().await?, app_id, endpoint_id, &msg_ids, ms(now)).await?;
        if added > 0 {
            self.announce_due().await;
        }
        Ok(added)
    }

    async fn release_all_leases(&self) -> StoreResult<u64> {
        queries::release_all_leases(&self.client().await?, ms(Utc::now())).await
    }

    async fn take_rate_slot(
        &self,
        endpoint_id: &str,
        rate: u32,
        now: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> StoreResult<RateSlot> {
        let (interval, last) = (rate_interval_us(rate), micros(not_after));
        // (`next_free`, in milliseconds, is the column of older versions.) A new row's slot
        // is in the past: always taken. The outer read sees the row as it was before the
        // upsert (the statement's snapshot): when the slot is refused, the row unchanged.
        let row = self
            .client()
            .await?
            .query_one(
                "WITH up AS (INSERT INTO endpoint_rate (endpoint_id, next_free, next_free_us) \
                 VALUES ($1, 0, $2::BIGINT - $4::BIGINT + $3::BIGINT) \
                 ON CONFLICT (endpoint_id) DO UPDATE \
                 SET next_free_us = GREATEST(COALESCE(endpoint_rate.next_free_us, 0), $2::BIGINT - $4::BIGINT) \
                     + $3::BIGINT \
                 WHERE GREATEST(COALESCE(endpoint_rate.next_free_us, 0), $2::BIGINT - $4::BIGINT) <= $5::BIGINT \
                 RETURNING next_free_us - $3::BIGINT AS slot) \
                 SELECT (SELECT slot FROM up), (SELECT next_free_us FROM endpoint_rate WHERE endpoint_id = $1)",
                &[&endpoint_id, &micros(now), &interval, &rate_burst_us(interval), &last],
            )
            .await
            .map_err(db_err)?;
        Ok(match row.get::<_, Option<i64>>(0) {
            Some(slot) => RateSlot::Taken(from_micros(slot)),
            None => RateSlot::Busy(from_micros(row.get::<_, Option<i64>>(1).unwrap_or(last).max(last))),
        })
    }

    async fn announce_circuit_reset(&self, endpoint_id: &str) {
        self.announce_circuit_reset(endpoint_id).await;
    }

    fn circuit_resets(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.circuit_resets.subscribe())
    }

    async fn announce_stop(&self, what: &crate::Stop) {
        self.announce(super::STOPS_CHANNEL, what.to_wire()).await;
    }

    fn stops(&self) -> Option<tokio::sync::broadcast::Receiver<crate::Stop>> {
        Some(self.stops.subscribe())
    }

    async fn announce_tenant_change(&self) {
        self.announce(TENANTS_CHANNEL, String::new()).await;
    }

    fn tenant_changes(&self) -> Option<tokio::sync::broadcast::Receiver<()>> {
        Some(self.tenant_changes.subscribe())
    }

    fn wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.wakeups.clone())
    }

    // --- pulling
    async fn read_message_events(&self, app_id: &str, query: &EventsQuery) -> StoreResult<EventsPage> {
        queries::read_message_events(&self.client().await?, app_id, query).await
    }

    fn instance_secret(&self) -> [u8; 32] {
        self.instance_secret
    }

    fn message_events_signal(&self, app_id: &str) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe(app_id)
    }

    async fn message_events_end(&self) -> StoreResult<EventPosition> {
        queries::message_events_end(&self.client().await?).await
    }

    fn message_events_recheck(&self) -> Option<Duration> {
        // A message committed behind an older transaction becomes readable when that one
        // ends, which nothing announces.
        Some(Duration::from_millis(500))
    }

    async fn get_events_subscription(&self, app_id: &str, id: &str) -> StoreResult<Option<EventPosition>> {
        queries::get_events_subscription(&self.client().await?, app_id, id).await
    }

    async fn events_subscription_read(&self, app_id: &str, id: &str) -> StoreResult<Option<crate::ReadFrom>> {
        queries::events_subscription_read(&self.client().await?, app_id, id).await
    }

    async fn add_events_subscription(
        &self,
        app_id: &str,
        id: &str,
        position: EventPosition,
        bound: (&str, u64),
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let result = queries::add_events_subscription(&tx, app_id, id, position, bound, ms(now)).await;
        finish(tx, result).await
    }

    async fn count_events_subscriptions(&self, app_id: &str, prefix: &str) -> StoreResult<u64> {
        queries::count_events_subscriptions(&self.client().await?, app_id, prefix).await
    }

    async fn set_events_subscription(
        &self,
        app_id: &str,
        id: &str,
        position: EventPosition,
        read_from: Option<crate::ReadFrom>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        queries::set_events_subscription(&self.client().await?, app_id, id, position, read_from, ms(now)).await
    }

    // --- inbound sources
    async fn create_source(
        &self,
        source: hooklane_core::model::Source,
        app: Application,
        endpoints: Vec<Endpoint>,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let result = super::inbound::create_source(&tx, &source, &app, &endpoints).await;
        finish(tx, result).await
    }

    async fn get_source(&self, id: &str) -> StoreResult<Option<hooklane_core::model::Source>> {
        super::inbound::get_source(&self.client().await?, id).await
    }

    async fn list_sources(&self, page: &PageRequest) -> StoreResult<Page<hooklane_core::model::Source>> {
        super::inbound::list_sources(&self.client().await?, page).await
    }

    async fn update_source(
        &self,
        source: hooklane_core::model::Source,
        destinations: DestinationChanges,
    ) -> StoreResult<()> {
        in_retried_transaction!(self, |tx| super::inbound::update_source(&tx, &source, &destinations))
    }

    async fn delete_source(&self, id: &str) -> StoreResult<()> {
        in_retried_transaction!(self, |tx| super::inbound::delete_source(&tx, id))
    }

    async fn record_inbound_request(&self, request: hooklane_core::model::InboundRequest) -> StoreResult<()> {
        super::inbound::insert_request(&self.client().await?, &request).await
    }

    async fn list_inbound_requests(
        &self,
        source_id: &str,
        status: Option<hooklane_core::model::InboundStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::InboundRequest>> {
        super::inbound::list_requests(&self.client().await?, source_id, status, page).await
    }

    async fn get_inbound_request(
        &self,
        source_id: &str,
        id: &str,
    ) -> StoreResult<Option<hooklane_core::model::InboundRequest>> {
        super::inbound::get_request(&self.client().await?, source_id, id).await
    }

    async fn unfinished_fan_outs(
        &self,
        (from, until): (DateTime<Utc>, DateTime<Utc>),
        limit: usize,
    ) -> StoreResult<Vec<hooklane_core::model::InboundRequest>> {
        super::inbound::unfinished_fan_outs(&self.client().await?, (ms(from), ms(until)), limit).await
    }

    async fn finish_fan_out(&self, source_id: &str, id: &str) -> StoreResult<()> {
        super::inbound::finish_fan_out(&self.client().await?, source_id, id).await
    }

    async fn accepted_request_of(
        &self,
        source_id: &str,
        msg_id: &str,
    ) -> StoreResult<Option<hooklane_core::model::InboundRequest>> {
        super::inbound::accepted_request_of(&self.client().await?, source_id, msg_id).await
    }

    async fn record_task(&self, task: hooklane_core::model::BackgroundTask) -> StoreResult<()> {
        super::tasks::insert(&self.client().await?, &task).await
    }

    async fn get_task(
        &self,
        app_id: Option<&str>,
        id: &str,
    ) -> StoreResult<Option<hooklane_core::model::BackgroundTask>> {
        super::tasks::get_task(&self.client().await?, app_id, id).await
    }

    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::BackgroundTask>> {
        super::tasks::list(&self.client().await?, filter, page).await
    }

    async fn update_task(&self, task: hooklane_core::model::BackgroundTask) -> StoreResult<()> {
        super::tasks::update(&self.client().await?, &task).await
    }

    async fn beat_task(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        super::tasks::beat(&self.client().await?, id, ms(at)).await
    }

    async fn fail_stale_tasks(&self, before: DateTime<Utc>, reason: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        super::tasks::fail_stale(&self.client().await?, None, ms(before), reason, ms(now)).await
    }

    async fn fail_task(&self, id: &str, reason: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        Ok(super::tasks::fail_stale(&self.client().await?, Some(id), i64::MAX, reason, ms(now)).await? > 0)
    }

    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        queries::list_attempts(&self.client().await?, app_id, filter, page).await
    }

    async fn get_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<Option<Attempt>> {
        queries::get_attempt(&self.client().await?, app_id, msg_id, attempt_id).await
    }

    async fn expunge_attempt_content(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()> {
        let c = self.client().await?;
        let n = queries::execute(
            &c,
            "UPDATE attempts SET response = '' WHERE app_id = $1 AND msg_id = $2 AND id = $3",
            &[&app_id, &msg_id, &attempt_id],
        )
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn create_token(
        &self,
        token_hash: String,
        holder: Principal,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        session: Option<String>,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        queries::insert_token(&c, &token_hash, &holder, (ms(now), expires_at.map(ms)), session.as_deref()).await
    }

    async fn create_integration(&self, integration: hooklane_core::model::Integration) -> StoreResult<()> {
        super::integrations::insert(&self.client().await?, &integration).await
    }

    async fn get_integration(&self, app_id: &str, id: &str) -> StoreResult<Option<hooklane_core::model::Integration>> {
        super::integrations::get_integration(&self.client().await?, app_id, id).await
    }

    async fn list_integrations(
        &self,
        app_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::Integration>> {
        super::integrations::list(&self.client().await?, app_id, page).await
    }

    async fn update_integration(&self, integration: hooklane_core::model::Integration) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let result = super::integrations::update(&tx, &integration).await;
        finish(tx, result).await
    }

    async fn delete_integration(&self, app_id: &str, id: &str) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let result = super::integrations::delete(&tx, app_id, id).await;
        finish(tx, result).await
    }

    async fn set_integration_key(
        &self,
        app_id: &str,
        id: &str,
        key_hash: String,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db_err)?;
        let result = super::integrations::set_key(&tx, app_id, id, &key_hash, ms(now)).await;
        finish(tx, result).await
    }

    async fn find_token(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Principal>> {
        queries::find_token(&self.client().await?, token_hash, ms(now)).await
    }

    async fn delete_token(&self, token_hash: &str) -> StoreResult<bool> {
        queries::delete_token(&self.client().await?, token_hash).await
    }

    async fn expire_app_tokens(
        &self,
        app_id: &str,
        at: DateTime<Utc>,
        sessions: Option<Vec<String>>,
    ) -> StoreResult<u64> {
        queries::expire_app_tokens(&self.client().await?, app_id, ms(at), sessions.as_deref()).await
    }

    async fn expire_poller_tokens(&self, app_id: &str, endpoint_id: &str, at: DateTime<Utc>) -> StoreResult<u64> {
        queries::expire_poller_tokens(&self.client().await?, app_id, endpoint_id, ms(at)).await
    }

    async fn idempotency_begin(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<IdempotencyState> {
        let (now, expires) = (ms(now), ms(lease_end(now, ttl)));
        let c = self.client().await?;
        // Taking the key and reading who holds it are two statements: if the holder aborts
        // in between, the key is free again and the next round takes it.
        for _ in 0..3 {
            if let Some(resumes) = queries::idempotency_take(&c, key, fingerprint, now, expires).await? {
                return Ok(IdempotencyState::Started { resumes: resumes.map(rows::time) });
            }
            match queries::idempotency_get(&c, key).await? {
                Some((_, _, _, Some(held_for), _)) if held_for != fingerprint => return Ok(IdempotencyState::Mismatch),
                Some((true, Some(status), body, _, _)) => {
                    let status = u16::try_from(status)
                        .map_err(|_| StoreError::Corrupt(format!("idempotency key {key}: status {status}")))?;
                    return Ok(IdempotencyState::Completed(StoredResponse { status, body: body.unwrap_or_default() }));
                }
                Some((.., lease_end)) => {
                    return Ok(IdempotencyState::InFlight { held_until: Some(rows::time(lease_end)) })
                }
                None => continue,
            }
        }
        Ok(IdempotencyState::InFlight { held_until: None })
    }

    async fn idempotency_held(&self, key: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let sql = "SELECT 1 FROM idempotency_keys WHERE key = $1 AND NOT done AND expires_at > $2";
        Ok(queries::query_opt(&self.client().await?, sql, &[&key, &ms(now)]).await?.is_some())
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        (begun, ttl): (DateTime<Utc>, Duration),
        response: StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (status, expires_at, held) = (i32::from(response.status), ms(expires_at), ms(lease_end(begun, ttl)));
        queries::idempotency_finish(&self.client().await?, key, held, status, &response.body, expires_at).await
    }

    async fn idempotency_abort(&self, key: &str, (begun, ttl): (DateTime<Utc>, Duration)) -> StoreResult<()> {
        queries::idempotency_abort(&self.client().await?, key, ms(lease_end(begun, ttl))).await
    }

    // --- statistics

    async fn prune(
        &self,
        now: DateTime<Utc>,
        inbound_before: Option<DateTime<Utc>>,
        messages: Option<PruneMessages>,
        limit: usize,
    ) -> StoreResult<Pruned> {
        let mut c = self.client().await?;
        let mut pruned = queries::prune(&c, now, inbound_before, limit).await?;
        if let Some(m) = messages.as_ref() {
            let tx = c.transaction().await.map_err(db_err)?;
            let result = queries::prune_messages(&tx, m, now, limit).await;
            (pruned.messages, pruned.messages_resume) = finish(tx, result).await?;
        }
        Ok(pruned)
    }

    async fn ping(&self) -> StoreResult<()> {
        queries::ping(&self.client().await?).await
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<QueueStats> {
        queries::queue_stats(&self.client().await?, ms(now)).await
    }

    async fn endpoint_health(&self, app_id: &str, since: DateTime<Utc>) -> StoreResult<Vec<EndpointHealth>> {
        queries::endpoint_health(&self.client().await?, app_id, ms(since)).await
    }

    async fn attempt_timeline(
        &self,
        app_id: &str,
        endpoint_id: Option<&str>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        bucket: Duration,
    ) -> StoreResult<Vec<TimelineBucket>> {
        let bucket = crate::queries_shared::bucket_ms(bucket);
        queries::attempt_timeline(&self.client().await?, app_id, endpoint_id, ms(since), ms(until), bucket).await
    }

    async fn count_message_destinations(
        &self,
        app_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<u64> {
        queries::count_message_destinations(&self.client().await?, app_id, ms(since), ms(until)).await
    }

    async fn message_log(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        state: Option<MessageState>,
        page: &PageRequest,
    ) -> StoreResult<Page<MessageSummary>> {
        queries::message_log(&self.client().await?, app_id, filter, state, page).await
    }
}

/// Records `outcomes` in one transaction that waits [`super::SET_LOCK_WAIT`] at most for a
/// row another holds, run again after a deadlock; then wakes the FIFO lanes it moved on.
async fn record_batch(
    c: &mut deadpool_postgres::Client,
    outcomes: &[AttemptOutcome],
    disable_after: Duration,
    lock_wait: &str,
) -> StoreResult<Recorded> {
    // (The one-statement path knows nothing of disabling: a receiver asking for it takes
    // the other.)
    let all_succeeded = outcomes.iter().all(|o| o.next == NextStep::Succeeded && !o.disable_endpoint);
    let mut tries = 0;
    loop {
        tries += 1;
        let tx = c.transaction().await.map_err(db_err)?;
        let result = if all_succeeded {
            let record = async {
                queries::record_successes(&tx, outcomes)
                    .await
                    .map(|(moved, set_aside)| (Recorded { disabled: Vec::new(), set_aside }, moved))
            };
            super::with_lock_wait(&tx, lock_wait, record).await
        } else {
            super::with_lock_wait(&tx, lock_wait, queries::record_attempts(&tx, outcomes, disable_after)).await
        };
        match finish(tx, result).await {
            Err(e) if is_transient(&e) && tries < TRANSIENT_RETRIES => {
                tracing::debug!(error = %e, tries, "record_attempts hit a deadlock or serialization failure; retrying");
            }
            Err(e) => return Err(e),
            Ok((recorded, moved)) => {
                let at = outcomes.iter().map(|o| ms(o.attempt.created_at)).max().unwrap_or_default();
                settle_lanes(c, moved, at).await;
                return Ok(recorded);
            }
        }
    }
}

/// Wakes the FIFO lanes a committed write moved on once more, under their locks
/// ([`super::lanes::settle`]). The write stands whatever happens here: a failure leaves a
/// lane to its in-flight lease's end, so it is only logged.
async fn settle_lanes(c: &mut deadpool_postgres::Client, moved: Vec<(String, String)>, now: i64) {
    if moved.is_empty() {
        return;
    }
    if let Err(e) = super::lanes::settle(c, moved, now).await {
        tracing::warn!(error = %e, "FIFO lanes not woken again; they move on when their lease ends");
    }
}
