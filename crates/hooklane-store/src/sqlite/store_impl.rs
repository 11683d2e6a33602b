//! [`Store`] for [`SqliteStore`]: each method sends its query to the writer thread (writes)
//! or a read connection (reads).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use hooklane_core::model::{Application, Attempt, Delivery, Endpoint, EventType, Message, Principal};
use hooklane_core::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::rows::{self, ms};
use super::{db_err, queries, SqliteStore};
use crate::backlog::message_bytes;
use crate::queries_shared::{ago, from_micros, lease_end, micros, rate_burst_us, rate_interval_us, HolderColumns};
use crate::*;

fn owned(s: &str) -> String {
    s.to_string()
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_app(&self, app: Application) -> StoreResult<()> {
        self.write(move |c| queries::insert_app(c, &app)).await
    }

    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<Application>> {
        let key = owned(id_or_uid);
        self.read(move |c| queries::get_app(c, &key)).await
    }

    async fn list_apps_where(&self, page: &PageRequest, filter: AppListFilter) -> StoreResult<Page<Application>> {
        let page = page.clone();
        self.read(move |c| {
            // Applications owned by inbound sources are managed through their source.
            let mut select =
                queries::Select::new(rows::APP_COLS, "applications").and("id NOT IN (SELECT app_id FROM sources)", []);
            for condition in crate::queries_shared::app_list_conditions(filter, "e.disabled = 0") {
                select = select.and(&condition, []);
            }
            select.page(c, "id", &page, rows::app)
        })
        .await
    }

    async fn update_app(&self, app: Application) -> StoreResult<()> {
        self.write(move |c| queries::update_app(c, &app)).await
    }

    async fn delete_app(&self, app_id: &str) -> StoreResult<()> {
        let id = owned(app_id);
        self.write(move |c| queries::delete_app(c, &id)).await
    }

    async fn create_event_type(&self, et: EventType) -> StoreResult<()> {
        self.write(move |c| queries::insert_event_type(c, &et)).await
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        let name = owned(name);
        self.read(move |c| queries::get_event_type(c, &name)).await
    }

    async fn list_event_types(&self, page: &PageRequest, include_archived: bool) -> StoreResult<Page<EventType>> {
        let page = page.clone();
        self.read(move |c| {
            let q = queries::Select::new(rows::EVENT_TYPE_COLS, "event_types");
            let q = if include_archived { q } else { q.and("archived = 0", []) };
            q.page(c, "name", &page, rows::event_type)
        })
        .await
    }

    async fn update_event_type(&self, et: EventType) -> StoreResult<()> {
        self.write(move |c| queries::update_event_type(c, &et)).await
    }

    async fn import_event_types(
        &self,
        upserts: Vec<EventType>,
        archive: Vec<String>,
        at: DateTime<Utc>,
        keep_flags: bool,
    ) -> StoreResult<()> {
        self.write(move |c| queries::import_event_types(c, &upserts, &archive, ms(at), keep_flags)).await
    }

    async fn delete_event_type(&self, name: &str) -> StoreResult<()> {
        let name = owned(name);
        self.write(move |c| {
            let n = c.execute("DELETE FROM event_types WHERE name = ?1", [&name]).map_err(db_err)?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn create_endpoint(&self, ep: Endpoint) -> StoreResult<()> {
        self.write(move |c| queries::insert_endpoint(c, &ep)).await
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        let (app, key) = (owned(app_id), owned(id_or_uid));
        self.read(move |c| queries::get_endpoint(c, &app, &key)).await
    }

    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>> {
        let (app, page) = (owned(app_id), page.clone());
        self.read(move |c| {
            queries::Select::new(rows::ENDPOINT_COLS, "endpoints")
                .and("app_id = ?", [rusqlite::types::Value::Text(app)])
                .page(c, "id", &page, rows::endpoint)
        })
        .await
    }

    async fn app_endpoints(&self, app_id: &str) -> StoreResult<Vec<Endpoint>> {
        let app = owned(app_id);
        self.read(move |c| queries::app_endpoints(c, &app)).await
    }

    async fn update_endpoint(&self, ep: Endpoint, read_at: Option<DateTime<Utc>>) -> StoreResult<()> {
        self.write(move |c| queries::update_endpoint(c, &ep, read_at.map(ms))).await
    }

    async fn delete_endpoint(&self, app_id: &str, endpoint_id: &str) -> StoreResult<()> {
        let (app, ep) = (owned(app_id), owned(endpoint_id));
        self.write(move |c| queries::delete_endpoint(c, &app, &ep)).await
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
        let (app, ep, origin) = (owned(app_id), owned(endpoint_id), owned(origin));
        self.write(move |c| {
            let unbound = |col: &str| {
                format!(
                    "CASE WHEN COALESCE(json_extract({col}, '$.endpointOrigin'), '') <> ?3 THEN NULL ELSE {col} END"
                )
            };
            let sql = format!(
                "UPDATE endpoints SET oauth = {}, mtls = {} WHERE app_id = ?1 AND id = ?2",
                unbound("oauth"),
                unbound("mtls")
            );
            queries::execute(c, &sql, rusqlite::params![app, ep, origin]).map(drop)
        })
        .await
    }

    async fn replace_endpoint_oauth(
        &self,
        app_id: &str,
        endpoint_id: &str,
        expected: &EndpointOauth,
        new: &EndpointOauth,
    ) -> StoreResult<bool> {
        let (app, ep) = (owned(app_id), owned(endpoint_id));
        let (expected, new) = (rows::to_json(expected), rows::to_json(new));
        self.write(move |c| {
            let n = queries::execute(
                c,
                "UPDATE endpoints SET oauth = ?3 WHERE app_id = ?1 AND id = ?2 AND oauth = ?4",
                rusqlite::params![app, ep, new, expected],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn create_message(
        &self,
        msg: Message,
        endpoint_ids: Vec<String>,
        leased_until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<String>> {
        let start = FirstSend::leased(leased_until);
        let bytes = message_bytes(&msg);
        self.write_message(bytes, move |c| queries::insert_message(c, &msg, &endpoint_ids, start)).await
    }

    async fn schedule_message(
        &self,
        msg: Message,
        endpoint_ids: Vec<String>,
        due_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let start = FirstSend::At(due_at);
        let bytes = message_bytes(&msg);
        self.write_message(bytes, move |c| queries::insert_message(c, &msg, &endpoint_ids, start).map(drop)).await
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
        let (app, key) = (owned(app_id), owned(id_or_event_id));
        self.read(move |c| queries::get_message(c, &app, &key)).await
    }

    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        let (app, filter, page) = (owned(app_id), filter.clone(), page.clone());
        self.read(move |c| queries::list_messages(c, &app, &filter, &page)).await
    }

    async fn message_deliveries(&self, app_id: &str, msg_id: &str) -> StoreResult<Vec<(Delivery, Endpoint)>> {
        let (app, msg) = (owned(app_id), owned(msg_id));
        self.read(move |c| queries::message_deliveries(c, &app, &msg)).await
    }

    async fn expunge_message_content(&self, app_id: &str, msg_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let (app, msg) = (owned(app_id), owned(msg_id));
        self.write(move |c| queries::expunge_message_content(c, &app, &msg, ms(now))).await
    }

    async fn endpoint_messages(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &MessageFilter,
        status: Option<hooklane_core::model::DeliveryStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<(Message, Delivery)>> {
        let (app, ep, filter, page) = (owned(app_id), owned(endpoint_id), filter.clone(), page.clone());
        self.read(move |c| queries::endpoint_messages(c, &app, &ep, &filter, status, &page)).await
    }

    async fn endpoint_stats(
        &self,
        app_id: &str,
        endpoint_id: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<EndpointStats> {
        let (app, ep) = (owned(app_id), owned(endpoint_id));
        self.read(move |c| queries::endpoint_stats(c, &app, &ep, since, until)).await
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        lease: Duration,
        room: &crate::ClaimRoom,
    ) -> StoreResult<Vec<Job>> {
        // Which endpoints have something due is found on a read connection, so the single
        // writer (which also commits ingest) only takes rows; an idle poll does not reach
        // it at all. A candidate whose rows another write took meanwhile just yields none:
        // the claim itself checks status and due time again.
        let skip = rows::to_json(&room.skip);
        let at = ms(now);
        let candidates: Vec<(String, i64)> = self
            .read(move |c| queries::pending_endpoints(c, &skip))
            .await?
            .into_iter()
            .filter(|(_, due)| *due <= at)
            .collect();
        if candidates.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let end = lease_end(now, lease);
        // Leases lost with the machine before they reached the disk only mean those
        // deliveries are sent again (a lease expiring does the same), so the claim does not
        // wait for its flush: a FIFO lane, whose every message is claimed, moves that much
        // sooner.
        let room = room.clone();
        self.write_unflushed(move |c| queries::claim_due(c, now, limit, end, candidates, &room)).await
    }

    async fn next_due_at(&self, skip_endpoints: &[String]) -> StoreResult<Option<DateTime<Utc>>> {
        let skip = rows::to_json(&skip_endpoints);
        self.read(move |c| {
            let pending = queries::pending_endpoints(c, &skip)?;
            Ok(pending.into_iter().map(|(_, due)| due).min().map(rows::time))
        })
        .await
    }

    async fn record_attempts(&self, outcomes: Vec<AttemptOutcome>, disable_after: Duration) -> StoreResult<Recorded> {
        self.write_unguarded(move |c| {
            let mut out = Recorded::default();
            // The deliveries this batch has already moved on: their later outcomes in the
            // batch follow unguarded, as PostgreSQL applies a batch per delivery at once.
            let mut moved: HashSet<(&str, &str)> = HashSet::new();
            let mut set_aside: HashSet<(&str, &str)> = HashSet::new();
            // Each endpoint's last success in the batch: a failure before it disables
            // nothing, the streak ending at the success (as PostgreSQL applies a batch per
            // endpoint at once).
            let last_success: HashMap<&str, usize> = outcomes
                .iter()
                .enumerate()
                .filter(|(_, o)| o.next == NextStep::Succeeded && !o.untried)
                .map(|(i, o)| (o.attempt.endpoint_id.as_str(), i))
                .collect();
            for (i, o) in outcomes.iter().enumerate() {
                let before = ago(o.attempt.created_at, disable_after);
                let key = (o.attempt.msg_id.as_str(), o.attempt.endpoint_id.as_str());
                let guard = (!moved.contains(&key), o.lease.map(ms));
                let may_disable = last_success.get(key.1).is_none_or(|s| *s < i);
                let recorded = queries::record_attempt(c, o, (before, may_disable), guard)?;
                if recorded.moved_delivery {
                    moved.insert(key);
                } else {
                    set_aside.insert(key);
                }
                out.disabled.extend(recorded.disabled);
                if o.disable_endpoint {
                    let asked = queries::disable_endpoint_asked(c, &o.attempt.endpoint_id, ms(o.attempt.created_at))?;
                    out.disabled.extend(asked);
                }
            }
            out.set_aside = set_aside.into_iter().map(|(m, e)| DeliveryKey::new(m, e)).collect();
            Ok(out)
        })
        .await
    }

    async fn note_failure_told(&self, keys: Vec<DeliveryKey>) -> StoreResult<()> {
        self.write(move |c| {
            for k in &keys {
                queries::execute(
                    c,
                    "UPDATE deliveries SET failure_told = 1 WHERE msg_id = ?1 AND endpoint_id = ?2",
                    [&k.msg_id, &k.endpoint_id],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn take_failure_told(&self, key: DeliveryKey) -> StoreResult<bool> {
        self.write(move |c| {
            let n = queries::execute(
                c,
                "UPDATE deliveries SET failure_told = 0 WHERE msg_id = ?1 AND endpoint_id = ?2 AND failure_told = 1",
                [&key.msg_id, &key.endpoint_id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn abandon_deliveries(&self, keys: Vec<ClaimedKey>) -> StoreResult<()> {
        let now = ms(Utc::now());
        self.write_unguarded(move |c| {
            for k in &keys {
                queries::abandon_delivery(c, k, now)?;
            }
            Ok(())
        })
        .await
    }

    async fn defer_deliveries(&self, keys: Vec<ClaimedKey>, due_at: DateTime<Utc>) -> StoreResult<()> {
        let due = ms(due_at);
        self.write_unguarded(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "UPDATE deliveries SET due_at = ?3, leased = 0 WHERE msg_id = ?1 AND endpoint_id = ?2 AND status = 1 \
                     AND (?4 IS NULL OR (leased = 1 AND due_at = ?4))",
                )
                .map_err(db_err)?;
            for k in &keys {
                stmt.execute(params![k.key.msg_id, k.key.endpoint_id, due, k.lease.map(ms)]).map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    async fn hasten_deliveries(&self, endpoint_id: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> StoreResult<u64> {
        let ep = owned(endpoint_id);
        self.write_unguarded(move |c| queries::hasten_deliveries(c, &ep, ms(until), ms(now))).await
    }

    async fn undefer_deliveries(
        &self,
        endpoint_id: &str,
        due_at: Vec<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let ep = owned(endpoint_id);
        let due: Vec<i64> = due_at.into_iter().map(ms).collect();
        // A lost write costs only the wait it would have saved: not flushed on its own.
        self.write_unflushed(move |c| queries::undefer_deliveries(c, &ep, &due, ms(now))).await
    }

    async fn resend(&self, app_id: &str, msg_id: &str, endpoint_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        let (app, msg, ep) = (owned(app_id), owned(msg_id), owned(endpoint_id));
        self.write(move |c| queries::resend(c, &app, &msg, &ep, ms(now))).await
    }

    async fn recover(
        &self,
        app_id: &str,
        endpoint_id: &str,
        (since, until): (DateTime<Utc>, Option<DateTime<Utc>>),
        now: DateTime<Utc>,
        (after, limit): (&str, usize),
    ) -> StoreResult<(u64, Option<String>)> {
        let (app, ep, after) = (owned(app_id), owned(endpoint_id), owned(after));
        let until = until.map(ms).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |c| queries::recover(c, &app, &ep, (ms(since), until), ms(now), (&after, limit))).await
    }

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
        let (app, ep, after) = (owned(app_id), owned(endpoint_id), after_id.unwrap_or_default().to_string());
        self.read(move |c| {
            let page = (after.as_str(), limit, with_payload);
            queries::messages_without_delivery(c, &app, &ep, (ms(since), ms(until)), page)
        })
        .await
    }

    async fn add_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        msg_ids: Vec<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let (app, ep) = (owned(app_id), owned(endpoint_id));
        self.write(move |c| queries::add_deliveries(c, &app, &ep, &msg_ids, ms(now))).await
    }

    async fn release_all_leases(&self) -> StoreResult<u64> {
        let now = ms(Utc::now());
        self.write(move |c| {
            let n = c
                .execute("UPDATE deliveries SET leased = 0, due_at = ?1 WHERE status = 1 AND leased = 1", [now])
                .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn take_rate_slot(
        &self,
        endpoint_id: &str,
        rate: u32,
        now: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> StoreResult<RateSlot> {
        let (ep, interval, now, last) = (owned(endpoint_id), rate_interval_us(rate), micros(now), micros(not_after));
        self.write(move |c| {
            // (`next_free`, in milliseconds, is the column of older versions.) A new row's
            // slot is in the past: always taken.
            let slot: Option<i64> = c
                .prepare_cached(
                    "INSERT INTO endpoint_rate (endpoint_id, next_free, next_free_us) VALUES (?1, 0, ?2 - ?4 + ?3) \
                     ON CONFLICT (endpoint_id) DO UPDATE \
                     SET next_free_us = MAX(COALESCE(next_free_us, 0), ?2 - ?4) + ?3 \
                     WHERE MAX(COALESCE(next_free_us, 0), ?2 - ?4) <= ?5 \
                     RETURNING next_free_us - ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![ep, now, interval, rate_burst_us(interval), last], |r| r.get(0)).optional()
                })
                .map_err(db_err)?;
            if let Some(slot) = slot {
                return Ok(RateSlot::Taken(from_micros(slot)));
            }
            // Refused: the row exists, its next slot after `not_after`.
            let next: Option<i64> = c
                .prepare_cached("SELECT next_free_us FROM endpoint_rate WHERE endpoint_id = ?1")
                .and_then(|mut s| s.query_row(params![ep], |r| r.get(0)))
                .map_err(db_err)?;
            Ok(RateSlot::Busy(from_micros(next.unwrap_or(last).max(last))))
        })
        .await
    }

    // --- inbound sources
    async fn create_source(
        &self,
        source: hooklane_core::model::Source,
        app: Application,
        endpoints: Vec<Endpoint>,
    ) -> StoreResult<()> {
        self.write(move |c| super::inbound::create_source(c, &source, &app, &endpoints)).await
    }

    async fn get_source(&self, id: &str) -> StoreResult<Option<hooklane_core::model::Source>> {
        let id = owned(id);
        self.read(move |c| super::inbound::get_source(c, &id)).await
    }

    async fn list_sources(&self, page: &PageRequest) -> StoreResult<Page<hooklane_core::model::Source>> {
        let page = page.clone();
        self.read(move |c| super::inbound::list_sources(c, &page)).await
    }

    async fn update_source(
        &self,
        source: hooklane_core::model::Source,
        destinations: DestinationChanges,
    ) -> StoreResult<()> {
        self.write(move |c| super::inbound::update_source(c, &source, &destinations)).await
    }

    async fn delete_source(&self, id: &str) -> StoreResult<()> {
        let id = owned(id);
        self.write(move |c| super::inbound::delete_source(c, &id)).await
    }

    async fn record_inbound_request(&self, request: hooklane_core::model::InboundRequest) -> StoreResult<()> {
        // Not held to the ingest backlog: a record follows its message (already admitted),
        // and holds at most 64 KiB of the body.
        self.write(move |c| super::inbound::insert_request(c, &request)).await
    }

    async fn list_inbound_requests(
        &self,
        source_id: &str,
        status: Option<hooklane_core::model::InboundStatus>,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::InboundRequest>> {
        let (id, page) = (owned(source_id), page.clone());
        self.read(move |c| super::inbound::list_requests(c, &id, status, &page)).await
    }

    async fn get_inbound_request(
        &self,
        source_id: &str,
        id: &str,
    ) -> StoreResult<Option<hooklane_core::model::InboundRequest>> {
        let (source, id) = (owned(source_id), owned(id));
        self.read(move |c| super::inbound::get_request(c, &source, &id)).await
    }

    async fn unfinished_fan_outs(
        &self,
        (from, until): (DateTime<Utc>, DateTime<Utc>),
        limit: usize,
    ) -> StoreResult<Vec<hooklane_core::model::InboundRequest>> {
        let received = (ms(from), ms(until));
        self.read(move |c| super::inbound::unfinished_fan_outs(c, received, limit)).await
    }

    async fn finish_fan_out(&self, source_id: &str, id: &str) -> StoreResult<()> {
        let (source, id) = (owned(source_id), owned(id));
        self.write(move |c| super::inbound::finish_fan_out(c, &source, &id)).await
    }

    async fn accepted_request_of(
        &self,
        source_id: &str,
        msg_id: &str,
    ) -> StoreResult<Option<hooklane_core::model::InboundRequest>> {
        let (source, msg) = (owned(source_id), owned(msg_id));
        self.read(move |c| super::inbound::accepted_request_of(c, &source, &msg)).await
    }

    async fn record_task(&self, task: hooklane_core::model::BackgroundTask) -> StoreResult<()> {
        self.write(move |c| super::tasks::insert(c, &task)).await
    }

    async fn get_task(
        &self,
        app_id: Option<&str>,
        id: &str,
    ) -> StoreResult<Option<hooklane_core::model::BackgroundTask>> {
        let (app_id, id) = (app_id.map(owned), owned(id));
        self.read(move |c| super::tasks::get(c, app_id.as_deref(), &id)).await
    }

    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::BackgroundTask>> {
        let (filter, page) = (filter.clone(), page.clone());
        self.read(move |c| super::tasks::list(c, &filter, &page)).await
    }

    async fn update_task(&self, task: hooklane_core::model::BackgroundTask) -> StoreResult<()> {
        self.write(move |c| super::tasks::update(c, &task)).await
    }

    async fn beat_task(&self, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let id = owned(id);
        // A beat lost in a crash of the machine costs nothing: the task's node is gone too.
        self.write_unflushed(move |c| super::tasks::beat(c, &id, ms(at))).await
    }

    async fn fail_stale_tasks(&self, before: DateTime<Utc>, reason: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let reason = owned(reason);
        self.write(move |c| super::tasks::fail_stale(c, None, ms(before), &reason, ms(now))).await
    }

    async fn fail_task(&self, id: &str, reason: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let (id, reason) = (owned(id), owned(reason));
        self.write(move |c| super::tasks::fail_stale(c, Some(&id), i64::MAX, &reason, ms(now))).await.map(|n| n > 0)
    }

    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        let (app, filter, page) = (owned(app_id), filter.clone(), page.clone());
        self.read(move |c| queries::list_attempts(c, &app, &filter, &page)).await
    }

    async fn get_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<Option<Attempt>> {
        let (app, msg, id) = (owned(app_id), owned(msg_id), owned(attempt_id));
        self.read(move |c| queries::get_attempt(c, &app, &msg, &id)).await
    }

    async fn expunge_attempt_content(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()> {
        let (app, msg, id) = (owned(app_id), owned(msg_id), owned(attempt_id));
        self.write(move |c| {
            let n = queries::execute(
                c,
                "UPDATE attempts SET response = '' WHERE app_id = ?1 AND msg_id = ?2 AND id = ?3",
                [&app, &msg, &id],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    async fn create_token(
        &self,
        token_hash: String,
        holder: Principal,
        now: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        session: Option<String>,
    ) -> StoreResult<()> {
        let h = crate::queries_shared::HolderColumns::of(&holder);
        self.write(move |c| {
            c.execute(
                "INSERT INTO tokens (hash, app_id, created_at, expires_at, feature_flags, capabilities, endpoint_id, \
                 session_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    token_hash,
                    h.app_id,
                    ms(now),
                    expires_at.map(ms),
                    h.feature_flags,
                    h.capabilities,
                    h.endpoint_id,
                    session
                ],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn create_integration(&self, integration: hooklane_core::model::Integration) -> StoreResult<()> {
        self.write(move |c| super::integrations::insert(c, &integration)).await
    }

    async fn get_integration(&self, app_id: &str, id: &str) -> StoreResult<Option<hooklane_core::model::Integration>> {
        let (app_id, id) = (owned(app_id), owned(id));
        self.read(move |c| super::integrations::get(c, &app_id, &id)).await
    }

    async fn list_integrations(
        &self,
        app_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<hooklane_core::model::Integration>> {
        let (app_id, page) = (owned(app_id), page.clone());
        self.read(move |c| super::integrations::list(c, &app_id, &page)).await
    }

    async fn update_integration(&self, integration: hooklane_core::model::Integration) -> StoreResult<()> {
        self.write(move |c| super::integrations::update(c, &integration)).await
    }

    async fn delete_integration(&self, app_id: &str, id: &str) -> StoreResult<()> {
        let (app_id, id) = (owned(app_id), owned(id));
        self.write(move |c| super::integrations::delete(c, &app_id, &id)).await
    }

    async fn set_integration_key(
        &self,
        app_id: &str,
        id: &str,
        key_hash: String,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (app_id, id) = (owned(app_id), owned(id));
        self.write(move |c| super::integrations::set_key(c, &app_id, &id, &key_hash, ms(now))).await
    }

    async fn find_token(&self, token_hash: &str, now: DateTime<Utc>) -> StoreResult<Option<Principal>> {
        let hash = owned(token_hash);
        self.read(move |c| {
            let row = queries::query_opt(
                c,
                "SELECT app_id, feature_flags, capabilities, endpoint_id FROM tokens \
                 WHERE hash = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![hash, ms(now)],
                |r| {
                    Ok(HolderColumns {
                        app_id: r.get(0)?,
                        feature_flags: r.get(1)?,
                        capabilities: r.get(2)?,
                        endpoint_id: r.get(3)?,
                    })
                },
            )?;
            Ok(row.and_then(HolderColumns::principal))
        })
        .await
    }

    async fn delete_token(&self, token_hash: &str) -> StoreResult<bool> {
        let hash = owned(token_hash);
        self.write(move |c| Ok(queries::execute(c, "DELETE FROM tokens WHERE hash = ?1", [&hash])? > 0)).await
    }

    async fn expire_app_tokens(
        &self,
        app_id: &str,
        at: DateTime<Utc>,
        sessions: Option<Vec<String>>,
    ) -> StoreResult<u64> {
        let app = owned(app_id);
        // (The sessions as a JSON array: one parameter however many there are.)
        let sessions = sessions.map(|s| serde_json::Value::from(s).to_string());
        self.write(move |c| {
            let n = queries::execute(
                c,
                "UPDATE tokens SET expires_at = min(coalesce(expires_at, ?2), ?2) WHERE app_id = ?1 \
                 AND (?3 IS NULL OR session_id IN (SELECT value FROM json_each(?3)))",
                params![app, ms(at), sessions],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn expire_poller_tokens(&self, app_id: &str, endpoint_id: &str, at: DateTime<Utc>) -> StoreResult<u64> {
        let (app, ep) = (owned(app_id), owned(endpoint_id));
        self.write(move |c| {
            let n = queries::execute(
                c,
                "UPDATE tokens SET expires_at = min(coalesce(expires_at, ?3), ?3) WHERE app_id = ?1 AND endpoint_id = ?2",
                params![app, ep, ms(at)],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn idempotency_held(&self, key: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let (key, now) = (owned(key), ms(now));
        self.read(move |c| {
            let sql = "SELECT 1 FROM idempotency_keys WHERE key = ?1 AND done = 0 AND expires_at > ?2";
            Ok(queries::query_opt(c, sql, params![key, now], |_| Ok(()))?.is_some())
        })
        .await
    }

    async fn idempotency_begin(
        &self,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<IdempotencyState> {
        let (key, fingerprint) = (owned(key), owned(fingerprint));
        let (now, expires) = (ms(now), ms(lease_end(now, ttl)));
        self.write_unguarded(move |c| {
            // (One row at most: the key is the table's key.)
            let replaced = queries::query_opt(
                c,
                "DELETE FROM idempotency_keys WHERE key = ?1 AND expires_at <= ?2 RETURNING done, expires_at, fingerprint",
                params![key, now],
                |r| Ok((r.get::<_, bool>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<String>>(2)?)),
            )?;
            let inserted = queries::execute(
                c,
                "INSERT OR IGNORE INTO idempotency_keys (key, done, expires_at, fingerprint) VALUES (?1, 0, ?2, ?3)",
                params![key, expires, fingerprint],
            )?;
            if inserted == 1 {
                let resumes = replaced
                    .filter(|(done, _, held_for)| !done && held_for.as_deref() == Some(fingerprint.as_str()))
                    .map(|(_, lease_end, _)| rows::time(lease_end));
                return Ok(IdempotencyState::Started { resumes });
            }
            let (done, status, body, held_for, lease_end): (bool, Option<u16>, Option<Vec<u8>>, Option<String>, i64) = c
                .prepare_cached("SELECT done, status, body, fingerprint, expires_at FROM idempotency_keys WHERE key = ?1")
                .and_then(|mut s| s.query_row([&key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))))
                .map_err(db_err)?;
            if held_for.is_some_and(|f| f != fingerprint) {
                return Ok(IdempotencyState::Mismatch);
            }
            Ok(match (done, status) {
                (true, Some(status)) => {
                    IdempotencyState::Completed(StoredResponse { status, body: body.unwrap_or_default() })
                }
                _ => IdempotencyState::InFlight { held_until: Some(rows::time(lease_end)) },
            })
        })
        .await
    }

    async fn idempotency_finish(
        &self,
        key: &str,
        (begun, ttl): (DateTime<Utc>, Duration),
        response: StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (key, held) = (owned(key), ms(lease_end(begun, ttl)));
        self.write_unguarded(move |c| {
            queries::execute(
                c,
                "UPDATE idempotency_keys SET done = 1, status = ?2, body = ?3, expires_at = ?4 \
                 WHERE key = ?1 AND done = 0 AND expires_at = ?5",
                params![key, response.status, response.body, ms(expires_at), held],
            )?;
            Ok(())
        })
        .await
    }

    async fn idempotency_abort(&self, key: &str, (begun, ttl): (DateTime<Utc>, Duration)) -> StoreResult<()> {
        let (key, held) = (owned(key), ms(lease_end(begun, ttl)));
        self.write_unguarded(move |c| {
            queries::execute(
                c,
                "DELETE FROM idempotency_keys WHERE key = ?1 AND done = 0 AND expires_at = ?2",
                params![key, held],
            )?;
            Ok(())
        })
        .await
    }

    // --- housekeeping

    async fn prune(
        &self,
        now: DateTime<Utc>,
        inbound_before: Option<DateTime<Utc>>,
        messages: Option<PruneMessages>,
        limit: usize,
    ) -> StoreResult<Pruned> {
        let (now, inbound_before) = (ms(now), inbound_before.map(ms));
        self.write(move |c| queries::prune(c, now, inbound_before, messages.as_ref(), limit as i64)).await
    }

    // --- statistics

    /// Waits for a job of the writer, not only for its queue to take one: a writer held by a
    /// long job, or by a disk that stopped answering, leaves every write waiting, and the
    /// node is not ready then (`/ready` gives it 5 s). The job fails when the writer thread
    /// is gone (it stops only if it panicked), or refuses every job once a flush of the
    /// write-ahead log failed.
    async fn ping(&self) -> StoreResult<()> {
        self.write_unflushed(|_| Ok(())).await?;
        self.read(|c| c.query_row("SELECT COUNT(*) FROM schema_migrations", [], |_| Ok(())).map_err(db_err)).await
    }

    async fn queue_stats(&self, now: DateTime<Utc>) -> StoreResult<QueueStats> {
        self.read(move |c| queries::queue_stats(c, ms(now))).await
    }

    async fn endpoint_health(&self, app_id: &str, since: DateTime<Utc>) -> StoreResult<Vec<EndpointHealth>> {
        let app = owned(app_id);
        self.read(move |c| queries::endpoint_health(c, &app, ms(since))).await
    }

    async fn attempt_timeline(
        &self,
        app_id: &str,
        endpoint_id: Option<&str>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        bucket: Duration,
    ) -> StoreResult<Vec<TimelineBucket>> {
        let (app, ep) = (owned(app_id), endpoint_id.map(owned));
        let bucket = crate::queries_shared::bucket_ms(bucket);
        self.read(move |c| queries::attempt_timeline(c, &app, ep.as_deref(), ms(since), ms(until), bucket)).await
    }

    async fn count_message_destinations(
        &self,
        app_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let app = owned(app_id);
        self.read(move |c| queries::count_message_destinations(c, &app, ms(since), ms(until))).await
    }

    async fn read_message_events(&self, app_id: &str, query: &EventsQuery) -> StoreResult<EventsPage> {
        let (app, query) = (owned(app_id), query.clone());
        // Read before the query: a message made durable meanwhile waits for the next read.
        let durable = i64::try_from(*self.durable_seq.borrow()).unwrap_or(i64::MAX);
        // Every position handed out is at most the durable end, which never goes back (it
        // starts, at open, from the highest sequence number ever given).
        if query.after.minor > durable {
            return Err(StoreError::PositionAhead(query.after));
        }
        self.read(move |c| queries::read_message_events(c, &app, &query, durable)).await
    }

    fn instance_secret(&self) -> [u8; 32] {
        self.instance_secret
    }

    fn message_events_signal(&self, app_id: &str) -> tokio::sync::watch::Receiver<u64> {
        self.signals.subscribe(app_id)
    }

    async fn message_events_end(&self) -> StoreResult<EventPosition> {
        Ok(EventPosition { major: 0, minor: i64::try_from(*self.durable_seq.borrow()).unwrap_or(i64::MAX) })
    }

    fn message_events_recheck(&self) -> Option<Duration> {
        // The sync thread raises the signal for every flushed batch.
        None
    }

    async fn get_events_subscription(&self, app_id: &str, id: &str) -> StoreResult<Option<EventPosition>> {
        let (app, id) = (owned(app_id), owned(id));
        self.read(move |c| queries::get_events_subscription(c, &app, &id)).await
    }

    async fn events_subscription_read(&self, app_id: &str, id: &str) -> StoreResult<Option<crate::ReadFrom>> {
        let (app, id) = (owned(app_id), owned(id));
        self.read(move |c| queries::events_subscription_read(c, &app, &id)).await
    }

    async fn add_events_subscription(
        &self,
        app_id: &str,
        id: &str,
        position: EventPosition,
        (prefix, most): (&str, u64),
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (app, id, prefix) = (owned(app_id), owned(id), owned(prefix));
        self.write(move |c| queries::add_events_subscription(c, &app, &id, position, (&prefix, most), now)).await
    }

    async fn count_events_subscriptions(&self, app_id: &str, prefix: &str) -> StoreResult<u64> {
        let (app, prefix) = (owned(app_id), owned(prefix));
        self.read(move |c| queries::count_events_subscriptions(c, &app, &prefix)).await
    }

    async fn set_events_subscription(
        &self,
        app_id: &str,
        id: &str,
        position: EventPosition,
        read_from: Option<crate::ReadFrom>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (app, id) = (owned(app_id), owned(id));
        self.write(move |c| queries::set_events_subscription(c, &app, &id, position, read_from, now)).await
    }

    async fn message_log(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        state: Option<MessageState>,
        page: &PageRequest,
    ) -> StoreResult<Page<MessageSummary>> {
        let (app, filter, page) = (owned(app_id), filter.clone(), page.clone());
        self.read(move |c| queries::message_log(c, &app, &filter, state, &page)).await
    }
}

impl SqliteStore {
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
        let (app, ep) = (owned(app_id), owned(endpoint_id));
        self.write(move |c| {
            // (Never back: a version read since must see this write as later.)
            let sql = format!(
                "UPDATE endpoints SET {column} = ?3, updated_at = MAX(updated_at + 1, ?4) WHERE app_id = ?1 AND id = ?2"
            );
            queries::one_row(queries::execute(c, &sql, rusqlite::params![app, ep, json, ms(updated_at)])?)
        })
        .await
    }
}
