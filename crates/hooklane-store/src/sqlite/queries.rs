//! The SQL behind each store operation, as plain functions over a connection so they can
//! run on the writer thread or a read connection alike.

use std::collections::HashMap;
use std::sync::Arc;

use hooklane_core::model::{Application, Attempt, Delivery, DeliveryStatus, Endpoint, EventType, Message};
use hooklane_core::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};

use super::rows::{self, ms, opt_json, to_json};
use super::{db_err, lanes};
use crate::queries_shared::{
    delivery_cols_seen, delivery_status_sql, fold_health, fold_timeline, lane_key_sql, lane_seq_sql,
    latency_bucket_sql, message_state_sql, queued_again_sql, AttemptGroup, FairClaim, EXPUNGED, RECOVERABLE,
};
use crate::{
    AttemptFilter, AttemptOutcome, ClaimedKey, EndpointStats, EventPosition, EventsPage, EventsQuery, FirstSend, Job,
    MessageFilter, NextStep, Page, PageRequest, StoreError, StoreResult,
};

/// A SELECT under construction: conditions joined with AND, positional parameters.
pub struct Select {
    base: String,
    conditions: Vec<String>,
    params: Vec<Value>,
}

impl Select {
    pub fn new(cols: &str, table: &str) -> Self {
        Select { base: format!("SELECT {cols} FROM {table}"), conditions: Vec::new(), params: Vec::new() }
    }

    pub fn and(mut self, condition: &str, values: impl IntoIterator<Item = Value>) -> Self {
        self.conditions.push(condition.to_string());
        self.params.extend(values);
        self
    }

    pub fn and_if<T>(self, value: Option<T>, condition: &str, to_value: impl FnOnce(T) -> Value) -> Self {
        match value {
            Some(v) => self.and(condition, [to_value(v)]),
            None => self,
        }
    }

    /// The statement so far (`SELECT … WHERE …`), without order or limit.
    pub fn sql(&self) -> String {
        let mut sql = self.base.clone();
        if !self.conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.conditions.join(" AND "));
        }
        sql
    }

    /// Runs the query as one page ordered by `key` (an id column, so the order is stable).
    pub fn page<T>(
        mut self,
        conn: &Connection,
        key: &str,
        page: &PageRequest,
        map: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Page<T>> {
        // Read away from the iterator: the page's own order, or backwards the other way.
        let read_descending = page.descending != page.backwards;
        if let Some(it) = &page.iterator {
            let op = if read_descending { "<" } else { ">" };
            self = self.and(&format!("{key} {op} ?"), [Value::Text(it.clone())]);
        }
        let limit = page.limit.max(1);
        let mut sql = self.sql();
        let dir = if read_descending { "DESC" } else { "ASC" };
        sql.push_str(&format!(" ORDER BY {key} {dir} LIMIT {}", limit + 1));
        let mut items = query_all(conn, &sql, params_from_iter(self.params), map)?;
        let done = items.len() <= limit;
        items.truncate(limit);
        if page.backwards {
            items.reverse();
        }
        Ok(Page { items, done })
    }
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

fn int(i: i64) -> Value {
    Value::Integer(i)
}

/// Runs a statement through the statement cache; returns the rows it changed (the twin of
/// the PostgreSQL store's `execute`).
pub(super) fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<usize> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).map_err(db_err)
}

/// Runs a cached query expected to return at most one row (the twin of the PostgreSQL
/// store's `query_opt`).
pub(super) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    conn.prepare_cached(sql).and_then(|mut s| s.query_row(params, f).optional()).map_err(db_err)
}

/// Runs a cached query and collects every row it returns.
pub(super) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    conn.prepare_cached(sql).and_then(|mut s| s.query_map(params, f)?.collect()).map_err(db_err)
}

/// Expects exactly one changed row; zero means the record was not there.
pub(super) fn one_row(changed: usize) -> StoreResult<()> {
    if changed == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

// --- applications

pub fn insert_app(conn: &Connection, a: &Application) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO applications (id, uid, name, rate_limit, metadata, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![a.id, a.uid, a.name, a.rate_limit, to_json(&a.metadata), ms(a.created_at), ms(a.updated_at)],
    )?;
    Ok(())
}

pub fn update_app(conn: &Connection, a: &Application) -> StoreResult<()> {
    let n = execute(
        conn,
        "UPDATE applications SET uid = ?2, name = ?3, rate_limit = ?4, metadata = ?5, updated_at = ?6 WHERE id = ?1",
        params![a.id, a.uid, a.name, a.rate_limit, to_json(&a.metadata), ms(a.updated_at)],
    )?;
    one_row(n)
}

pub fn get_app(conn: &Connection, id_or_uid: &str) -> StoreResult<Option<Application>> {
    let sql =
        format!("SELECT {} FROM applications WHERE id = ?1 OR uid = ?1 ORDER BY id = ?1 DESC LIMIT 1", rows::APP_COLS);
    query_opt(conn, &sql, [id_or_uid], rows::app)
}

pub fn delete_app(conn: &Connection, app_id: &str) -> StoreResult<()> {
    for sql in crate::queries_shared::delete_app_sql("?1") {
        execute(conn, &sql, [app_id])?;
    }
    one_row(execute(conn, "DELETE FROM applications WHERE id = ?1", [app_id])?)
}

// --- event types

/// An event type's columns, as `?1`…`?10` of the statements below.
fn event_type_values(e: &EventType) -> [Box<dyn ToSql + '_>; 10] {
    let (flag, flags) = crate::queries_shared::flag_columns(&e.feature_flags);
    [
        Box::new(&e.name),
        Box::new(&e.description),
        Box::new(e.archived),
        Box::new(e.deprecated),
        Box::new(flag),
        Box::new(flags),
        Box::new(opt_json(&e.schemas)),
        Box::new(ms(e.created_at)),
        Box::new(ms(e.updated_at)),
        Box::new(&e.group_name),
    ]
}

pub fn insert_event_type(conn: &Connection, e: &EventType) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO event_types (name, description, archived, deprecated, feature_flag, feature_flags, schemas, \
         created_at, updated_at, group_name) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params_from_iter(event_type_values(e)),
    )?;
    Ok(())
}

pub fn update_event_type(conn: &Connection, e: &EventType) -> StoreResult<()> {
    // (?8, created_at, is bound but not used: it never changes.)
    let n = execute(
        conn,
        "UPDATE event_types SET description = ?2, archived = ?3, deprecated = ?4, feature_flag = ?5, \
         feature_flags = ?6, schemas = ?7, updated_at = ?9, group_name = ?10 WHERE name = ?1",
        params_from_iter(event_type_values(e)),
    )?;
    one_row(n)
}

/// See `Store::import_event_types`; in the caller's savepoint.
pub fn import_event_types(
    conn: &Connection,
    upserts: &[EventType],
    archive: &[String],
    at: i64,
    keep_flags: bool,
) -> StoreResult<()> {
    for et in upserts {
        let updated = if keep_flags {
            one_row(execute(
                conn,
                "UPDATE event_types SET description = ?2, archived = ?3, deprecated = ?4, schemas = ?5, \
                 updated_at = ?6 WHERE name = ?1",
                params![et.name, et.description, et.archived, et.deprecated, opt_json(&et.schemas), ms(et.updated_at)],
            )?)
        } else {
            update_event_type(conn, et)
        };
        match updated {
            Err(StoreError::NotFound) => insert_event_type(conn, et)?,
            other => other?,
        }
    }
    for name in archive {
        execute(conn, "UPDATE event_types SET archived = 1, updated_at = ?2 WHERE name = ?1", params![name, at])?;
    }
    Ok(())
}

pub fn get_event_type(conn: &Connection, name: &str) -> StoreResult<Option<EventType>> {
    let sql = format!("SELECT {} FROM event_types WHERE name = ?1", rows::EVENT_TYPE_COLS);
    query_opt(conn, &sql, [name], rows::event_type)
}

// --- endpoints

/// An endpoint's columns in table order, as `?1`…`?26` of the statements below (each uses
/// the ones it needs).
fn endpoint_values(e: &Endpoint) -> [Box<dyn ToSql + '_>; 26] {
    [
        Box::new(&e.id),
        Box::new(&e.app_id),
        Box::new(&e.uid),
        Box::new(&e.url),
        Box::new(&e.description),
        Box::new(e.version),
        Box::new(opt_json(&e.filter_types)),
        Box::new(opt_json(&e.channels)),
        Box::new(e.disabled),
        Box::new(e.rate_limit),
        Box::new(to_json(&e.metadata)),
        Box::new(to_json(&e.headers)),
        Box::new(&e.secret),
        Box::new(to_json(&e.previous_secrets)),
        Box::new(e.failing_since.map(ms)),
        Box::new(ms(e.created_at)),
        Box::new(ms(e.updated_at)),
        Box::new(opt_json(&e.payload_filter)),
        Box::new(opt_json(&e.transform)),
        Box::new(e.order.is_fifo()),
        Box::new(opt_json(&e.transformation)),
        Box::new(crate::queries_shared::schedule_json(&e.retry_schedule)),
        Box::new(opt_json(&e.oauth)),
        Box::new(e.paused),
        Box::new(opt_json(&e.mtls)),
        Box::new(e.polling),
    ]
}

pub fn insert_endpoint(conn: &Connection, e: &Endpoint) -> StoreResult<()> {
    execute(
        conn,
        "INSERT INTO endpoints (id, app_id, uid, url, description, version, filter_types, channels, disabled, rate_limit, \
         metadata, headers, secret, previous_secrets, failing_since, created_at, updated_at, payload_filter, \
         transform, fifo, transformation, retry_schedule, oauth, paused, mtls, polling) VALUES (?1, ?2, ?3, ?4, ?5, \
         ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
        params_from_iter(endpoint_values(e)),
    )?;
    Ok(())
}

pub fn update_endpoint(conn: &Connection, e: &Endpoint, read_at: Option<i64>) -> StoreResult<()> {
    let stored: Option<(bool, i64)> = query_opt(
        conn,
        "SELECT fifo, updated_at FROM endpoints WHERE id = ?1 AND app_id = ?2",
        [&e.id, &e.app_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if let (Some((_, updated_at)), Some(read_at)) = (stored, read_at) {
        if updated_at != read_at {
            return Err(StoreError::Changed);
        }
    }
    let was_fifo = stored.map(|(fifo, _)| fifo);
    // ?15 (failing_since), ?16 (created_at) and ?23 (oauth) are bound but not used: the
    // failure streak is the engine's (a value read before an attempt recorded since would
    // write back a streak that attempt ended), and only a re-enabling or a new address (its
    // failures were another receiver's) ends it here; the
    // creation time never changes; OAuth has its own write (`set_endpoint_oauth`), as mTLS
    // settings do.
    let n = execute(
        conn,
        "UPDATE endpoints SET uid = ?3, url = ?4, description = ?5, version = ?6, filter_types = ?7, channels = ?8, \
         disabled = ?9, rate_limit = ?10, metadata = ?11, headers = ?12, secret = ?13, previous_secrets = ?14, \
         failing_since = CASE WHEN (disabled <> 0 AND ?9 = 0) OR url <> ?4 THEN NULL ELSE failing_since END, \
         updated_at = ?17, payload_filter = ?18, transform = ?19, fifo = ?20, \
         transformation = ?21, retry_schedule = ?22, paused = ?24 WHERE id = ?1 AND app_id = ?2",
        // (Without ?25, mtls, and ?26, polling, which never changes: the statement takes 24.)
        params_from_iter(endpoint_values(e).into_iter().take(24)),
    )?;
    one_row(n)?;
    if was_fifo.is_some_and(|was| was != e.order.is_fifo()) {
        super::lanes::reorder(conn, &e.id, e.order.is_fifo(), ms(e.updated_at))?;
    }
    Ok(())
}

pub fn get_endpoint(conn: &Connection, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
    let sql = format!(
        "SELECT {} FROM endpoints WHERE app_id = ?1 AND (id = ?2 OR uid = ?2) ORDER BY id = ?2 DESC LIMIT 1",
        rows::ENDPOINT_COLS
    );
    query_opt(conn, &sql, [app_id, id_or_uid], rows::endpoint)
}

pub fn app_endpoints(conn: &Connection, app_id: &str) -> StoreResult<Vec<Endpoint>> {
    let sql = format!("SELECT {} FROM endpoints WHERE app_id = ?1 ORDER BY id", rows::ENDPOINT_COLS);
    query_all(conn, &sql, [app_id], rows::endpoint)
}

/// Deletes the positions of a polling endpoint's consumers: events subscriptions named
/// `{endpoint_id}/{consumer_id}` (a name no other subscription can have).
const CONSUMERS_OF_ENDPOINT: &str =
    "DELETE FROM events_subscriptions WHERE app_id = ?1 AND substr(id, 1, length(?2) + 1) = ?2 || '/'";

pub fn delete_endpoint(conn: &Connection, app_id: &str, endpoint_id: &str) -> StoreResult<()> {
    for table in ["attempts", "deliveries"] {
        execute(conn, &format!("DELETE FROM {table} WHERE app_id = ?1 AND endpoint_id = ?2"), [app_id, endpoint_id])?;
    }
    execute(conn, CONSUMERS_OF_ENDPOINT, [app_id, endpoint_id])?;
    execute(conn, "DELETE FROM tokens WHERE app_id = ?1 AND endpoint_id = ?2", [app_id, endpoint_id])?;
    // Its rate bucket (kept by endpoint id only: the endpoint must be the application's).
    execute(
        conn,
        "DELETE FROM endpoint_rate WHERE endpoint_id = ?2 AND EXISTS \
         (SELECT 1 FROM endpoints WHERE app_id = ?1 AND id = ?2)",
        [app_id, endpoint_id],
    )?;
    one_row(execute(conn, "DELETE FROM endpoints WHERE app_id = ?1 AND id = ?2", [app_id, endpoint_id])?)
}

// --- messages and deliveries

pub fn insert_message(
    conn: &Connection,
    m: &Message,
    endpoint_ids: &[String],
    start: FirstSend,
) -> StoreResult<Vec<String>> {
    // (A scheduled message keeps its time: deliveries added to it later wait for it too.)
    let deliver_at = match start {
        FirstSend::At(at) => Some(ms(at)),
        FirstSend::Now | FirstSend::LeasedUntil(_) => None,
    };
    conn.prepare_cached(
        "INSERT INTO messages (id, app_id, event_type, event_id, payload, channels, tags, created_at, content_type, \
         headers, ordering_key, deliver_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            m.id,
            m.app_id,
            m.event_type,
            m.event_id,
            m.payload,
            opt_json(&m.channels),
            opt_json(&m.tags),
            ms(m.created_at),
            m.content_type,
            (!m.headers.is_empty()).then(|| to_json(&m.headers)),
            m.ordering_key,
            deliver_at
        ])
    })
    .map_err(|e| match db_err(e) {
        StoreError::Conflict(_) => StoreError::Conflict("a message with this eventId already exists".into()),
        other => other,
    })?;
    let now = ms(m.created_at);
    // The message's `seq` (its rowid) is its place in the lane of a FIFO endpoint. Whether
    // the endpoint is FIFO is read here, in the writer, not taken from the caller's cached
    // endpoint: a delivery joins a lane (and is not leased) exactly when its endpoint is FIFO
    // at this write.
    let seq = conn.last_insert_rowid();
    // ?4: the lease's end when leasing is asked (a FIFO endpoint's delivery is due now
    // instead), else when the deliveries are first due: later than now for a scheduled
    // message, whose deliveries are not sent before then and join no lane (its order would
    // hold the lane up, or the lane send it early).
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, leased, trigger_type, \
             updated_at, lane_seq, lane_key, not_before) \
             SELECT ?1, ?2, ?3, 1, 0, CASE WHEN l.leased OR NOT ?8 THEN ?4 ELSE ?5 END, l.leased, 0, ?5, \
                 CASE WHEN l.fifo AND NOT l.scheduled THEN ?6 END, ?7, CASE WHEN l.scheduled THEN ?4 END \
             FROM (SELECT f.fifo, ?8 AND NOT f.fifo AS leased, NOT ?8 AND ?4 > ?5 AS scheduled \
                   FROM (SELECT COALESCE((SELECT fifo FROM endpoints WHERE id = ?2), 0) AS fifo) f) l \
             RETURNING leased",
        )
        .map_err(db_err)?;
    let lane_key = m.ordering_key.as_deref().unwrap_or_default();
    let (due, lease) = match start {
        FirstSend::Now => (now, false),
        FirstSend::LeasedUntil(end) => (ms(end), true),
        FirstSend::At(at) => (ms(at), false),
    };
    let mut leased = Vec::new();
    for ep in endpoint_ids {
        let was_leased: bool = stmt
            .query_row(params![m.id, ep, m.app_id, due, now, seq, lane_key, lease], |r| r.get(0))
            .map_err(db_err)?;
        if was_leased {
            leased.push(ep.clone());
        }
    }
    Ok(leased)
}

pub fn get_message(conn: &Connection, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
    let sql = format!(
        "SELECT {} FROM messages WHERE app_id = ?1 AND (id = ?2 OR event_id = ?2) ORDER BY id = ?2 DESC LIMIT 1",
        rows::MESSAGE_COLS
    );
    query_opt(conn, &sql, [app_id, id_or_event_id], rows::message)
}

pub fn list_messages(
    conn: &Connection,
    app_id: &str,
    f: &MessageFilter,
    page: &PageRequest,
) -> StoreResult<Page<Message>> {
    message_select(app_id, f).page(conn, "id", page, rows::message)
}

/// The messages of an application that pass a filter (shared with the message log).
fn message_select(app_id: &str, f: &MessageFilter) -> Select {
    let cols = crate::queries_shared::message_cols_for(rows::MESSAGE_COLS, None, f);
    let q = Select::new(&cols, "messages").and("app_id = ?", [text(app_id)]);
    message_filter(q, f)
}

/// The messages with a delivery to the endpoint, driven by the endpoint's deliveries in
/// message id order (`deliveries_by_endpoint` ends with the primary key), not by the
/// application's messages: an endpoint that receives few of a large application's messages
/// made a page scan all of them. `CROSS JOIN` holds SQLite's planner to that order.
fn endpoint_message_select(
    app_id: &str,
    endpoint_id: &str,
    f: &MessageFilter,
    status: Option<DeliveryStatus>,
) -> Select {
    let from = "deliveries d CROSS JOIN messages ON messages.id = d.msg_id";
    let cols = crate::queries_shared::message_cols_for(rows::MESSAGE_COLS, Some("messages"), f);
    let q = Select::new(&cols, from).and("d.endpoint_id = ?", [text(endpoint_id)]).and("d.app_id = ?", [text(app_id)]);
    let q = match delivery_status_sql(status) {
        Some(condition) => q.and(condition, []),
        None => q,
    };
    message_filter(q, f)
}

/// Adds the conditions of `f` on the `messages` table.
fn message_filter(q: Select, f: &MessageFilter) -> Select {
    event_types_in(q, f.event_types.as_deref())
        .and_if(f.channel.clone(), "EXISTS (SELECT 1 FROM json_each(messages.channels) WHERE value = ?)", text)
        .and_if(f.tag.clone(), "EXISTS (SELECT 1 FROM json_each(messages.tags) WHERE value = ?)", text)
        .and_if(f.before, "created_at < ?", |t| int(ms(t)))
        .and_if(f.after, "created_at > ?", |t| int(ms(t)))
}

/// The messages with a delivery to the endpoint (in `status`, when given) that pass the
/// filter, each with that delivery.
pub fn endpoint_messages(
    conn: &Connection,
    app_id: &str,
    endpoint_id: &str,
    f: &MessageFilter,
    status: Option<DeliveryStatus>,
    page: &PageRequest,
) -> StoreResult<Page<(Message, Delivery)>> {
    let messages =
        endpoint_message_select(app_id, endpoint_id, f, status).page(conn, "d.msg_id", page, rows::message)?;
    // The page's deliveries in one query (the ids as a JSON array).
    let sql = format!(
        "SELECT {} FROM deliveries WHERE app_id = ?1 AND endpoint_id = ?2 AND msg_id IN (SELECT value FROM json_each(?3))",
        delivery_cols_seen(rows::DELIVERY_COLS)
    );
    let ids = to_json(&messages.items.iter().map(|m| m.id.as_str()).collect::<Vec<_>>());
    let mut deliveries: HashMap<String, Delivery> =
        query_all(conn, &sql, params![app_id, endpoint_id, ids], rows::delivery)?
            .into_iter()
            .map(|d| (d.msg_id.clone(), d))
            .collect();
    let items = messages.items.into_iter().filter_map(|m| deliveries.remove(&m.id).map(|d| (m, d))).collect();
    Ok(Page { items, done: messages.done })
}

pub fn endpoint_stats(
    conn: &Connection,
    app_id: &str,
    endpoint_id: &str,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> StoreResult<EndpointStats> {
    let groups: Vec<(i64, bool, i64)> = query_all(
        conn,
        "SELECT status, leased, COUNT(*) FROM deliveries WHERE app_id = ?1 AND endpoint_id = ?2 \
         AND updated_at >= ?3 AND updated_at < ?4 GROUP BY status, leased",
        params![app_id, endpoint_id, since.map_or(i64::MIN, ms), until.map_or(i64::MAX, ms)],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut stats = EndpointStats::default();
    for (status, leased, n) in groups {
        stats.add(status, leased, n.max(0) as u64);
    }
    Ok(stats)
}

/// The application's messages after `q.after` up to sequence number `durable_seq`, in
/// sequence order (the writer's commit order). Positions are `(0, seq)`.
pub fn read_message_events(
    conn: &Connection,
    app_id: &str,
    q: &EventsQuery,
    durable_seq: i64,
) -> StoreResult<EventsPage> {
    let select = events_select(app_id, q, durable_seq);
    let limit = q.limit.max(1);
    let sql = format!("{} ORDER BY seq LIMIT {limit}", select.sql());
    // The byte budget is kept here, in the loop, rather than in SQL: SQLite hands rows over
    // one step at a time in `seq` order (the `(app_id, seq)` index gives the order), and a
    // row's payload is read only when it is stepped to, so stopping the steps bounds what
    // is read. (A window function's running sum would have SQLite copy every row, payloads
    // and all, into a temporary table first.)
    let (budget, mut bytes) = (q.byte_budget(), 0usize);
    let mut messages: Vec<(EventPosition, Message)> = Vec::new();
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let mut found = stmt.query(params_from_iter(select.params)).map_err(db_err)?;
    while let Some(r) = found.next().map_err(db_err)? {
        // (`seq` follows the message's columns.)
        let position = EventPosition { major: 0, minor: r.get(rows::MESSAGE_NCOLS).map_err(db_err)? };
        let message = rows::message(r).map_err(db_err)?;
        bytes += message.payload.len();
        messages.push((position, message));
        if bytes >= budget {
            break;
        }
    }
    Ok(EventsPage::new(q, messages, EventPosition { major: 0, minor: durable_seq }))
}

/// Ids a read since a time from a position looks at, at most, to find where its walk
/// starts (see [`events_select`]).
const SINCE_SEARCH: i64 = 10_000;
/// The same from the start: index entries cost less than the rows a walk reads, but a time
/// far back (a client asking for a month) would have every read count millions.
const SINCE_SEARCH_FROM_START: i64 = 1_000_000;

/// How many ids `q`'s search for its start may look at.
fn since_search(q: &EventsQuery) -> i64 {
    if q.after.minor > 0 {
        SINCE_SEARCH
    } else {
        SINCE_SEARCH_FROM_START
    }
}

/// The read of [`read_message_events`], but for its order and limit.
fn events_select(app_id: &str, q: &EventsQuery, durable_seq: i64) -> Select {
    // (A literal, not a parameter: `Select` numbers its parameters from the conditions.)
    let flag = if q.with_content { "1" } else { "0" };
    let cols = crate::queries_shared::message_cols_payload_if(rows::MESSAGE_COLS, flag);
    let mut select = Select::new(&format!("{cols}, seq"), "messages").and("app_id = ?", [text(app_id)]).and_if(
        q.since,
        "created_at > ?",
        |t| int(ms(t)),
    );
    select = match q.since {
        None => select.and("seq > ? AND seq <= ?", [int(q.after.minor), int(durable_seq)]),
        // Messages created after `since` have ids made no earlier than a moment before it
        // (a message's id and its time come from one clock, a moment apart), and none comes
        // earlier in the stream than the least `seq` among those: the walk starts there,
        // found through the index by (application, id), rather than at the application's
        // first message, each one read to look at its time (a Svix client's first read,
        // `after` now, walked the whole history to find nothing). None: none up to
        // `durable_seq` qualifies. A read from a position (an iterator's, a poller's) searches
        // `SINCE_SEARCH` ids at most: past them (a polling endpoint's creation, given at every
        // poll of a busy application) the search costs more than it saves, and the walk
        // starts at the position. A read from the start searches many more
        // (`SINCE_SEARCH_FROM_START`): the index's entries cost less than the rows of the
        // history the walk would read. (The index is named: with statistics, the planner
        // might look for the least `seq` by walking the stream.)
        Some(since) => select.and(
            &format!(
                "seq > MAX(?, (SELECT CASE WHEN COUNT(*) = 0 THEN ? WHEN COUNT(*) < {} THEN MIN(seq) - 1 \
                 ELSE 0 END FROM (SELECT seq FROM messages INDEXED BY messages_by_app WHERE app_id = ? AND id > ? \
                 ORDER BY id LIMIT {}))) AND seq <= ?",
                since_search(q),
                since_search(q)
            ),
            [
                int(q.after.minor),
                int(durable_seq),
                text(app_id),
                text(crate::queries_shared::since_id_floor(since)),
                int(durable_seq),
            ],
        ),
    };
    select = event_types_in(select, q.event_types.as_deref());
    if let Some(channels) = q.channels.as_ref().filter(|c| !c.is_empty()) {
        let marks = vec!["?"; channels.len()].join(", ");
        select = select.and(
            &format!("EXISTS (SELECT 1 FROM json_each(messages.channels) WHERE value IN ({marks}))"),
            channels.iter().map(|c| text(c.as_str())),
        );
    }
    select
}

/// `event_type IN (…)` when `types` names any.
fn event_types_in(select: Select, types: Option<&[String]>) -> Select {
    match types.filter(|t| !t.is_empty()) {
        Some(types) => {
            let marks = vec!["?"; types.len()].join(", ");
            select.and(&format!("event_type IN ({marks})"), types.iter().map(|t| text(t.as_str())))
        }
        None => select,
    }
}

pub fn get_events_subscription(conn: &Connection, app_id: &str, id: &str) -> StoreResult<Option<EventPosition>> {
    query_opt(conn, "SELECT position FROM events_subscriptions WHERE app_id = ?1 AND id = ?2", [app_id, id], |r| {
        Ok(EventPosition { major: 0, minor: r.get(0)? })
    })
}

pub fn events_subscription_read(conn: &Connection, app_id: &str, id: &str) -> StoreResult<Option<crate::ReadFrom>> {
    query_opt(
        conn,
        "SELECT position, seeks FROM events_subscriptions WHERE app_id = ?1 AND id = ?2",
        [app_id, id],
        |r| Ok(crate::ReadFrom { position: EventPosition { major: 0, minor: r.get(0)? }, seeks: r.get(1)? }),
    )
}

pub fn count_events_subscriptions(conn: &Connection, app_id: &str, prefix: &str) -> StoreResult<u64> {
    conn.prepare_cached(
        "SELECT COUNT(*) FROM events_subscriptions WHERE app_id = ?1 AND substr(id, 1, length(?2)) = ?2",
    )
    .and_then(|mut s| s.query_row([app_id, prefix], |r| r.get::<_, i64>(0)))
    .map(|n| n.max(0) as u64)
    .map_err(db_err)
}

/// See [`crate::Store::add_events_subscription`] (on the one writer: the count, the look
/// at the application and the endpoint, and the insert cannot be overtaken).
pub fn add_events_subscription(
    conn: &Connection,
    app_id: &str,
    id: &str,
    position: EventPosition,
    (prefix, most): (&str, u64),
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    execute(
        conn,
        "INSERT INTO events_subscriptions (app_id, id, position, updated_at) \
         SELECT ?1, ?2, ?3, ?4 WHERE (SELECT COUNT(*) FROM events_subscriptions \
             WHERE app_id = ?1 AND substr(id, 1, length(?5)) = ?5) < ?6 \
         AND EXISTS (SELECT 1 FROM applications WHERE id = ?1) \
         AND (instr(?2, '/') = 0 OR EXISTS (SELECT 1 FROM endpoints \
             WHERE app_id = ?1 AND id = substr(?2, 1, instr(?2, '/') - 1))) \
         ON CONFLICT (app_id, id) DO NOTHING",
        params![app_id, id, position.minor, ms(now), prefix, i64::try_from(most).unwrap_or(i64::MAX)],
    )?;
    Ok(get_events_subscription(conn, app_id, id)?.is_some())
}

pub fn set_events_subscription(
    conn: &Connection,
    app_id: &str,
    id: &str,
    position: EventPosition,
    read_from: Option<crate::ReadFrom>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    // See the trait: a read's answer stands only if no seek came since it started; only a
    // position that is there moves.
    let moved = execute(
        conn,
        "UPDATE events_subscriptions SET \
             position = CASE WHEN ?5 IS NULL THEN ?3 \
                 WHEN seeks <> ?6 OR position < ?5 THEN position ELSE max(position, ?3) END, \
             seeks = CASE WHEN ?5 IS NULL THEN seeks + 1 ELSE seeks END, \
             updated_at = ?4 \
         WHERE app_id = ?1 AND id = ?2",
        params![app_id, id, position.minor, ms(now), read_from.map(|r| r.position.minor), read_from.map(|r| r.seeks)],
    )?;
    Ok(moved > 0)
}

pub fn message_deliveries(conn: &Connection, app_id: &str, msg_id: &str) -> StoreResult<Vec<(Delivery, Endpoint)>> {
    let sql = format!(
        "SELECT {} FROM deliveries WHERE app_id = ?1 AND msg_id = ?2 ORDER BY endpoint_id",
        delivery_cols_seen(rows::DELIVERY_COLS)
    );
    let deliveries: Vec<Delivery> = query_all(conn, &sql, [app_id, msg_id], rows::delivery)?;
    let mut out = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        if let Some(ep) = get_endpoint(conn, app_id, &d.endpoint_id)? {
            out.push((d, ep));
        }
    }
    Ok(out)
}

/// Endpoints with pending deliveries, except `skip_endpoints_json` (a JSON array), each
/// with the earliest `due_at` of its pending deliveries.
///
/// A loose index scan over `deliveries_pending (endpoint_id, due_at) WHERE status = 1`: one
/// index seek per endpoint to find the next endpoint id, one to read its earliest due time.
/// The cost grows with the number of endpoints with pending deliveries, never with how many
/// deliveries one of them has, so a dead endpoint with a million waiting costs two seeks.
/// Endpoints with something pending that may fall due (parked rows of FIFO lanes do not),
/// each with its earliest due time and whether it is FIFO.
pub fn pending_endpoints(conn: &Connection, skip_endpoints_json: &str) -> StoreResult<Vec<(String, i64)>> {
    conn.prepare_cached(
        "WITH RECURSIVE eps(id) AS ( \
             SELECT (SELECT MIN(endpoint_id) FROM deliveries WHERE status = 1) \
             UNION ALL \
             SELECT (SELECT MIN(endpoint_id) FROM deliveries WHERE status = 1 AND endpoint_id > eps.id) \
             FROM eps WHERE eps.id IS NOT NULL \
         ) \
         SELECT id, (SELECT MIN(due_at) FROM deliveries WHERE status = 1 AND endpoint_id = eps.id) FROM eps \
         WHERE id IS NOT NULL AND id NOT IN (SELECT value FROM json_each(?1))",
    )
    .and_then(|mut s| {
        s.query_map([skip_endpoints_json], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))?
            .filter_map(|r| r.map(|(id, due)| due.map(|d| (id, d))).transpose())
            .collect()
    })
    .map_err(db_err)
}

/// Leases due deliveries of `candidates` (endpoints with something due, with their
/// earliest due time), at most `limit`: the heads of FIFO lanes first, then the rest
/// shared fairly between the endpoints.
pub fn claim_due(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
    lease_end: DateTime<Utc>,
    candidates: Vec<(String, i64)>,
    most: &crate::ClaimRoom,
) -> StoreResult<Vec<Job>> {
    // At a FIFO endpoint, rows in lanes are left to their lane's own claim (at most its
    // head). Whether an endpoint is FIFO is read now, not from the row: a row given a lane
    // by a write that raced the endpoint's change back to concurrent is taken like the rest.
    let mut take = conn
        .prepare_cached(&format!(
            "UPDATE deliveries SET due_at = ?1, leased = 1 WHERE endpoint_id = ?3 AND msg_id IN \
             (SELECT msg_id FROM deliveries WHERE status = 1 AND endpoint_id = ?3 AND due_at <= ?2 \
              AND (?5 = 0 OR lane_seq IS NULL) ORDER BY due_at LIMIT ?4) \
             RETURNING {}",
            rows::DELIVERY_COLS
        ))
        .map_err(db_err)?;
    // Whether each is FIFO, read here on the writer (not with the candidates, on a read
    // connection): a change of its ordering (and the lanes it made) committed since the
    // candidates were found is seen.
    let candidates = candidates
        .into_iter()
        .map(|(id, due)| {
            let fifo = query_opt(conn, "SELECT fifo FROM endpoints WHERE id = ?1", [&id], |r| r.get(0))?;
            Ok((id, due, fifo.unwrap_or(false)))
        })
        .collect::<StoreResult<Vec<(String, i64, bool)>>>()?;
    let mut claimed: Vec<Delivery> = Vec::new();
    let mut room = limit;
    let fifo: std::collections::HashSet<String> =
        candidates.iter().filter(|(_, _, fifo)| *fifo).map(|(id, _, _)| id.clone()).collect();
    let mut lanes_first: Vec<&(String, i64, bool)> = candidates.iter().filter(|(_, _, fifo)| *fifo).collect();
    lanes_first.sort_by_key(|(_, due, _)| *due);
    let mut heads_of: HashMap<&str, usize> = HashMap::new();
    for (endpoint_id, _, _) in lanes_first {
        if room == 0 {
            break;
        }
        let heads = lanes::claim(conn, endpoint_id, ms(now), ms(lease_end), room.min(most.most_of(endpoint_id)))?;
        room -= heads.len();
        heads_of.insert(endpoint_id, heads.len());
        claimed.extend(heads);
    }
    let most_left = most.less(&heads_of);
    let candidates = candidates.iter().map(|(id, due, _)| (id.clone(), *due)).collect();
    let mut fair = FairClaim::new(candidates, room, &most_left);
    while let Some(round) = fair.next_round() {
        let mut taken = Vec::with_capacity(round.len());
        for (endpoint_id, share) in &round {
            let before = claimed.len();
            let rows = take
                .query_map(
                    params![ms(lease_end), ms(now), endpoint_id, *share as i64, fifo.contains(endpoint_id)],
                    rows::delivery,
                )
                .map_err(db_err)?;
            for row in rows {
                claimed.push(row.map_err(db_err)?);
            }
            taken.push(claimed.len() - before);
        }
        fair.took(&taken);
    }
    let mut endpoints: HashMap<String, Option<Arc<Endpoint>>> = HashMap::new();
    let mut messages: HashMap<String, Option<Arc<Message>>> = HashMap::new();
    let mut jobs = Vec::with_capacity(claimed.len());
    for mut delivery in claimed {
        // Pending, leased until its lease's end (as stored, to the millisecond): the lease
        // its attempt's outcome names.
        delivery.next_attempt_at = Some(rows::time(ms(lease_end)));
        let endpoint = match endpoints.get(&delivery.endpoint_id) {
            Some(e) => e.clone(),
            None => {
                let e = get_endpoint(conn, &delivery.app_id, &delivery.endpoint_id)?.map(Arc::new);
                endpoints.insert(delivery.endpoint_id.clone(), e.clone());
                e
            }
        };
        // One copy of a message for all its deliveries of the claim (a fan-out to many
        // endpoints held as many copies of its payload in memory), and one read.
        let message = match messages.get(&delivery.msg_id) {
            Some(m) => m.clone(),
            None => {
                let m = get_message(conn, &delivery.app_id, &delivery.msg_id)?.map(Arc::new);
                messages.insert(delivery.msg_id.clone(), m.clone());
                m
            }
        };
        match (endpoint, message) {
            (Some(endpoint), Some(message)) => jobs.push(Job { delivery, message, endpoint }),
            // Endpoint or message deleted under us: nothing to send, drop the row.
            _ => {
                execute(
                    conn,
                    "DELETE FROM deliveries WHERE msg_id = ?1 AND endpoint_id = ?2",
                    [&delivery.msg_id, &delivery.endpoint_id],
                )?;
            }
        }
    }
    Ok(jobs)
}

/// What [`record_attempt`] did.
pub struct AttemptRecorded {
    /// The attempt's outcome moved its delivery on (it had not been queued again meanwhile).
    pub moved_delivery: bool,
    /// The endpoint this failure disabled, and the version that wrote.
    pub disabled: Option<(String, DateTime<Utc>)>,
}

/// Disables the endpoint at its receiver's request, as of `now` (its version moves on,
/// never back); `None` when it already was.
pub fn disable_endpoint_asked(
    conn: &Connection,
    endpoint_id: &str,
    now: i64,
) -> StoreResult<Option<(String, DateTime<Utc>)>> {
    let disabled = query_opt(
        conn,
        "UPDATE endpoints SET disabled = 1, updated_at = MAX(updated_at + 1, ?2) \
         WHERE id = ?1 AND disabled = 0 RETURNING id, updated_at",
        params![endpoint_id, now],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
    )?;
    Ok(disabled.map(|(id, at)| (id, rows::time(at))))
}

/// No attempt of endpoint `?1` for `?4` ms before attempt `?2` made at `?3` (by the
/// attempts' time-ordered ids; a cancelled one aside).
const QUIET_BEFORE: &str = "COALESCE((SELECT created_at FROM attempts WHERE endpoint_id = ?1 AND id < ?2 \
     AND status <> 4 ORDER BY id DESC LIMIT 1), 0) < ?3 - ?4";

/// Records one attempt. With `guard`, a delivery queued again while the attempt was on
/// the wire, or leased under another lease than `lease` since, is left alone
/// (`Store::record_attempts`); a batch guards each delivery's first outcome only, since a
/// retry recorded before it in the batch leaves the row pending and not leased too.
pub fn record_attempt(
    conn: &Connection,
    AttemptOutcome { attempt: a, next, untried, .. }: &AttemptOutcome,
    (disable_before, may_disable): (DateTime<Utc>, bool),
    (guard, lease): (bool, Option<i64>),
) -> StoreResult<AttemptRecorded> {
    execute(
        conn,
        "INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, response_status, response, duration_ms, \
         trigger_type, created_at, request_headers) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
         WHERE EXISTS (SELECT 1 FROM endpoints WHERE id = ?3) AND EXISTS (SELECT 1 FROM messages WHERE id = ?2)",
        params![
            a.id,
            a.msg_id,
            a.endpoint_id,
            a.app_id,
            a.url,
            a.status as i64,
            a.response_status,
            a.response,
            a.duration_ms,
            a.trigger as i64,
            ms(a.created_at),
            opt_json(&a.request_headers)
        ],
    )?;
    let now = ms(a.created_at);
    let (status, due) = match next {
        NextStep::Succeeded => (0, None),
        NextStep::Cancelled => (4, None),
        NextStep::RetryAt(t) => (1, Some(ms(*t))),
        NextStep::GiveUp => (2, None),
    };
    // A retry does not bring back a delivery failed while its attempt was under way (its
    // message's content was deleted), as on PostgreSQL.
    let lane: Option<(Option<String>, i64)> = query_opt(
        conn,
        "UPDATE deliveries SET status = CASE WHEN ?3 = 1 AND status = 2 THEN 2 ELSE ?3 END, \
         attempts = attempts + 1, due_at = CASE WHEN ?3 = 1 AND status = 2 THEN NULL ELSE ?4 END, leased = 0, \
         updated_at = ?5 WHERE msg_id = ?1 AND endpoint_id = ?2 AND NOT (?6 AND status = 1 AND leased = 0) \
         AND NOT (?6 AND ?7 IS NOT NULL AND ((status = 1 AND leased = 1 AND due_at <> ?7) OR status IN (0, 4))) \
         RETURNING CASE WHEN lane_seq IS NOT NULL THEN lane_key END, status",
        params![a.msg_id, a.endpoint_id, status, due, now, guard, lease],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let moved_delivery = lane.is_some();
    // A retry keeps its lane's head where it is; a delivery that finished (or had failed
    // while this attempt was under way: its content was deleted) moves the lane on.
    if let Some((Some(lane_key), stored_status)) = lane {
        if stored_status != 1 {
            lanes::advance(conn, &a.endpoint_id, &lane_key, now)?;
        }
    }
    // Nothing sent: no news of the endpoint.
    if *untried {
        // Nothing of the endpoint's, but still no attempt of it: a streak that had gone
        // quiet for a day ends here as it would have at its next failure, which this
        // record must not make look recent.
        execute(
            conn,
            &format!(
                "UPDATE endpoints SET failing_since = NULL WHERE id = ?1 AND disabled = 0 AND failing_since <= ?3 - ?4 \
                 AND {QUIET_BEFORE}"
            ),
            params![a.endpoint_id, a.id, now, crate::queries_shared::QUIET_GAP_MS],
        )?;
    }
    if *next == NextStep::Cancelled || *untried {
        return Ok(AttemptRecorded { moved_delivery, disabled: None });
    }
    if *next == NextStep::Succeeded {
        execute(
            conn,
            "UPDATE endpoints SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL",
            [&a.endpoint_id],
        )?;
        return Ok(AttemptRecorded { moved_delivery, disabled: None });
    }
    execute(
        conn,
        "UPDATE endpoints SET failing_since = ?2 WHERE id = ?1 AND failing_since IS NULL",
        params![a.endpoint_id, now],
    )?;
    // A streak a day old or more, but no attempt for a day before this failure (its previous
    // attempt by the attempts' time-ordered ids, a cancelled one aside): the streak starts
    // afresh, as after a success.
    execute(
        conn,
        &format!("UPDATE endpoints SET failing_since = ?3 WHERE id = ?1 AND disabled = 0 AND failing_since <= ?3 - ?4 AND {QUIET_BEFORE}"),
        params![a.endpoint_id, a.id, now, crate::queries_shared::QUIET_GAP_MS],
    )?;
    if !may_disable {
        return Ok(AttemptRecorded { moved_delivery, disabled: None });
    }
    // (Its version moves on, never back: a change read before it must not be saved over it.)
    let disabled = query_opt(
        conn,
        "UPDATE endpoints SET disabled = 1, updated_at = MAX(updated_at + 1, ?3) \
         WHERE id = ?1 AND disabled = 0 AND failing_since <= ?2 RETURNING id, updated_at",
        params![a.endpoint_id, ms(disable_before), now],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
    )?
    .map(|(id, at)| (id, rows::time(at)));
    Ok(AttemptRecorded { moved_delivery, disabled })
}

/// See [`crate::Store::abandon_deliveries`]: one delivery.
pub fn abandon_delivery(conn: &Connection, key: &ClaimedKey, now: i64) -> StoreResult<()> {
    // Only a pending delivery can be abandoned: one that already finished keeps its outcome.
    let (msg_id, endpoint_id) = (&key.key.msg_id, &key.key.endpoint_id);
    let lane: Option<Option<String>> = query_opt(
        conn,
        "UPDATE deliveries SET status = 2, due_at = NULL, leased = 0, updated_at = ?3 \
         WHERE msg_id = ?1 AND endpoint_id = ?2 AND status = 1 AND (?4 IS NULL OR (leased = 1 AND due_at = ?4)) \
         RETURNING CASE WHEN lane_seq IS NOT NULL THEN lane_key END",
        params![msg_id, endpoint_id, now, key.lease.map(ms)],
        |r| r.get(0),
    )?;
    if let Some(Some(lane_key)) = lane {
        lanes::advance(conn, endpoint_id, &lane_key, now)?;
    }
    Ok(())
}

/// See [`crate::Store::hasten_deliveries`]; walks `deliveries_pending` (endpoint, due time).
pub fn hasten_deliveries(conn: &Connection, endpoint_id: &str, until: i64, now: i64) -> StoreResult<u64> {
    let n = execute(
        conn,
        "UPDATE deliveries SET due_at = ?3 \
         WHERE endpoint_id = ?1 AND status = 1 AND leased = 0 AND due_at > ?3 AND due_at <= ?2 \
         AND (not_before IS NULL OR not_before <= ?3)",
        params![endpoint_id, until, now],
    )?;
    Ok(n as u64)
}

/// See [`crate::Store::undefer_deliveries`]; one indexed update per instant.
pub fn undefer_deliveries(conn: &Connection, endpoint_id: &str, due: &[i64], now: i64) -> StoreResult<u64> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE deliveries SET due_at = ?3 WHERE endpoint_id = ?1 AND status = 1 AND leased = 0 AND due_at = ?2",
        )
        .map_err(db_err)?;
    let mut n = 0;
    for at in due {
        n += stmt.execute(params![endpoint_id, at, now]).map_err(db_err)? as u64;
    }
    Ok(n)
}

pub fn resend(conn: &Connection, app_id: &str, msg_id: &str, endpoint_id: &str, now: i64) -> StoreResult<()> {
    // The message's `expunged` flag (NULL: no such message of this application), and whether
    // the endpoint is the application's, in one read.
    let (expunged, endpoint_owned): (Option<bool>, bool) = conn
        .query_row(
            "SELECT (SELECT expunged FROM messages WHERE app_id = ?1 AND id = ?2), \
             EXISTS (SELECT 1 FROM endpoints WHERE app_id = ?1 AND id = ?3)",
            [app_id, msg_id, endpoint_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db_err)?;
    match expunged {
        None => return Err(StoreError::NotFound),
        _ if !endpoint_owned => return Err(StoreError::NotFound),
        Some(true) => return Err(StoreError::Conflict(EXPUNGED.into())),
        Some(false) => {}
    }
    execute(
        conn,
        &format!(
            "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, leased, trigger_type, \
             updated_at, lane_seq, lane_key) VALUES (?1, ?2, ?3, 1, 0, ?4, 0, 1, ?4, {lane}, {key}) \
             ON CONFLICT (msg_id, endpoint_id) DO UPDATE SET status = 1, attempts = 0, \
             due_at = CASE WHEN {in_flight} THEN due_at + 1 ELSE ?4 END, leased = CASE WHEN {in_flight} THEN 1 ELSE 0 END, \
             trigger_type = 1, updated_at = ?4, lane_seq = excluded.lane_seq, lane_key = excluded.lane_key, \
             not_before = NULL",
            // A lane's delivery being sent right now is not sent a second time beside it:
            // it is sent again once that lease has ended. Its lease moves on by a
            // millisecond, so the attempt on the wire no longer holds it: its outcome is set
            // aside rather than finishing the delivery (and losing the resend); no claim
            // can have made that lease (a claim's lease starts after the last one ended).
            in_flight = "(lane_seq IS NOT NULL AND leased = 1 AND due_at > ?4)",
            lane = lane_seq_sql("?2", "?1"),
            key = lane_key_sql("?1")
        ),
        params![msg_id, endpoint_id, app_id, now],
    )?;
    Ok(())
}

pub fn messages_without_delivery(
    conn: &Connection,
    app_id: &str,
    endpoint_id: &str,
    (since, until): (i64, i64),
    (after_id, limit, with_payload): (&str, usize, bool),
) -> StoreResult<Vec<Message>> {
    let sql = format!(
        "SELECT {} FROM messages WHERE app_id = ?1 AND id > ?2 AND created_at >= ?3 AND created_at < ?4 \
         AND NOT expunged AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.endpoint_id = ?5) \
         ORDER BY id LIMIT ?6",
        crate::queries_shared::message_cols_payload_if(rows::MESSAGE_COLS, "?7")
    );
    let values = params![app_id, after_id, since, until, endpoint_id, limit as i64, with_payload];
    query_all(conn, &sql, values, rows::message)
}

pub fn add_deliveries(
    conn: &Connection,
    app_id: &str,
    endpoint_id: &str,
    msg_ids: &[String],
    now: i64,
) -> StoreResult<u64> {
    let [due, lane, not_before] = queued_again_sql("?2", "?1", "?4");
    let mut added = 0;
    for msg_id in msg_ids {
        added += execute(
            conn,
            &format!(
                "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, leased, trigger_type, \
                     updated_at, lane_seq, lane_key, not_before) \
                 SELECT ?1, ?2, ?3, 1, 0, {due}, 0, 1, ?4, {lane}, {key}, {not_before} \
                 WHERE EXISTS (SELECT 1 FROM messages WHERE app_id = ?3 AND id = ?1 AND NOT expunged) \
                   AND EXISTS (SELECT 1 FROM endpoints WHERE app_id = ?3 AND id = ?2) \
                 ON CONFLICT (msg_id, endpoint_id) DO NOTHING",
                key = lane_key_sql("?1")
            ),
            params![msg_id, endpoint_id, app_id, now],
        )?;
    }
    Ok(added as u64)
}

/// See `Store::expunge_message_content`.
pub fn expunge_message_content(conn: &Connection, app_id: &str, msg_id: &str, now: i64) -> StoreResult<()> {
    one_row(execute(
        conn,
        "UPDATE messages SET payload = '{}', headers = NULL, content_type = NULL, expunged = 1 \
         WHERE app_id = ?1 AND id = ?2",
        [app_id, msg_id],
    )?)?;
    // The request an inbound source took it from (and its duplicates) held it too.
    execute(conn, "UPDATE inbound_requests SET body = x'', headers = '{}' WHERE msg_id = ?1", [msg_id])?;
    // A delivery being sent right now moves its lane on when its attempt is recorded, or
    // when its lease ends if none is (`lanes::hold_head`), not before: the next one of the
    // lane must not go while this one is still on the wire.
    let in_flight: Vec<(String, i64)> = query_all(
        conn,
        "SELECT endpoint_id, due_at FROM deliveries WHERE app_id = ?1 AND msg_id = ?2 AND status = 1 \
         AND leased = 1 AND due_at > ?3",
        params![app_id, msg_id, now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let failed: Vec<(String, String, bool)> = query_all(
        conn,
        "UPDATE deliveries SET status = 2, due_at = NULL, leased = 0, updated_at = ?3 \
         WHERE app_id = ?1 AND msg_id = ?2 AND status = 1 RETURNING endpoint_id, lane_key, lane_seq IS NOT NULL",
        params![app_id, msg_id, now],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    for (endpoint_id, lane_key, _) in failed.iter().filter(|(_, _, in_lane)| *in_lane) {
        match in_flight.iter().find(|(ep, _)| ep == endpoint_id) {
            Some((_, until)) => lanes::hold_head(conn, endpoint_id, lane_key, *until, now)?,
            None => lanes::advance(conn, endpoint_id, lane_key, now)?,
        }
    }
    Ok(())
}

pub fn recover(
    conn: &Connection,
    app_id: &str,
    endpoint_id: &str,
    (since, until): (i64, i64),
    now: i64,
    (after, limit): (&str, i64),
) -> StoreResult<(u64, Option<String>)> {
    let [due, lane, not_before] = queued_again_sql("?2", "deliveries.msg_id", "?5");
    let queued: Vec<String> = query_all(
        conn,
        &format!(
            "UPDATE deliveries SET status = 1, attempts = 0, due_at = {due}, leased = 0, trigger_type = 1, \
             updated_at = ?5, lane_seq = {lane}, lane_key = {key}, not_before = {not_before} \
             WHERE app_id = ?1 AND endpoint_id = ?2 AND status = 2 AND msg_id IN ({RECOVERABLE} LIMIT ?7) RETURNING msg_id",
            key = lane_key_sql("deliveries.msg_id")
        ),
        params![app_id, endpoint_id, since, until, now, after, limit],
        |r| r.get(0),
    )?;
    // (One statement on the one writer: every delivery selected is queued.)
    let more = queued.len() as i64 == limit;
    Ok((queued.len() as u64, queued.into_iter().max().filter(|_| more)))
}

// --- housekeeping

/// One round of housekeeping (see `Store::prune`).
pub fn prune(
    conn: &Connection,
    now: i64,
    inbound_before: Option<i64>,
    messages: Option<&crate::PruneMessages>,
    limit: i64,
) -> StoreResult<crate::Pruned> {
    let (keys, more_keys) = prune_by_bytes(
        conn,
        "idempotency_keys",
        "SELECT rowid, octet_length(body) FROM idempotency_keys WHERE expires_at <= ?1 \
         AND (done = 1 OR expires_at <= ?3) LIMIT ?2",
        params![now, limit, now - crate::queries_shared::UNFINISHED_KEY_KEPT.num_milliseconds()],
    )?;
    // (A fan-out still to be done is kept for as long as it is.)
    let unfinished_since = now - crate::FAN_OUT_KEPT.num_milliseconds();
    let (requests, more_requests) = match inbound_before {
        Some(before) => prune_by_bytes(
            conn,
            "inbound_requests",
            &format!(
                "SELECT rowid, octet_length(body) FROM inbound_requests WHERE received_at < ?1 \
                 AND NOT ({} AND received_at >= ?3) LIMIT ?2",
                crate::queries_shared::UNFINISHED_FAN_OUT
            ),
            params![before, limit, unfinished_since],
        )?,
        None => (0, false),
    };
    let (messages, messages_resume) = match messages {
        Some(m) => prune_messages(conn, m, now, limit)?,
        None => (0, None),
    };
    let tokens = execute(conn, PRUNE_TOKENS, params![now, limit])?;
    let tasks = execute(
        conn,
        "DELETE FROM background_tasks WHERE rowid IN \
         (SELECT rowid FROM background_tasks WHERE updated_at < ?1 LIMIT ?2)",
        params![now - crate::TASK_RETENTION.as_millis() as i64, limit],
    )?;
    Ok(crate::Pruned {
        idempotency_keys: keys,
        inbound_requests: requests,
        messages,
        tokens: tokens as u64,
        tasks: tasks as u64,
        messages_resume,
        more: more_keys || more_requests,
    })
}

/// Deletes from `table` the records `candidates` names (`rowid` and body bytes), as many as
/// free no more than [`crate::PRUNE_BYTES`] (at least one). Answers how many went, and
/// whether some of the candidates were left for the bytes. (A body's size is read from its
/// record's header, `octet_length`, not from the body's pages.)
fn prune_by_bytes(
    conn: &Connection,
    table: &str,
    candidates: &str,
    params: impl rusqlite::Params,
) -> StoreResult<(u64, bool)> {
    let found: Vec<(i64, Option<i64>)> = query_all(conn, candidates, params, |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut freed = 0i64;
    let doomed = found
        .iter()
        .take_while(|(_, size)| {
            let go = freed < crate::PRUNE_BYTES;
            freed = freed.saturating_add(size.unwrap_or(0));
            go
        })
        .count();
    let mut delete = conn.prepare_cached(&format!("DELETE FROM {table} WHERE rowid = ?1")).map_err(db_err)?;
    for (rowid, _) in &found[..doomed] {
        delete.execute([rowid]).map_err(db_err)?;
    }
    Ok((doomed as u64, doomed < found.len()))
}

/// Up to `?2` tokens expired by `?1`.
const PRUNE_TOKENS: &str =
    "DELETE FROM tokens WHERE rowid IN (SELECT rowid FROM tokens WHERE expires_at <= ?1 LIMIT ?2)";

/// Deletes up to `limit` of the messages `m` allows, with their deliveries and attempts, in
/// one window of at most `2 × limit` messages after `m.after` (ids begin with their creation
/// time, so the primary key's index lists the oldest first: a table of millions is not read
/// every round). Stops early once it has deleted `limit × ROWS_PER_MESSAGE` rows, so a
/// message sent to many endpoints many times cannot hold the writer long. Answers the count
/// and where the next round goes on (`crate::Pruned::messages_resume`).
fn prune_messages(
    conn: &Connection,
    m: &crate::PruneMessages,
    now: i64,
    limit: i64,
) -> StoreResult<(u64, Option<String>)> {
    let window: Vec<(String, bool, bool)> = query_all(
        conn,
        &prune_window_sql(),
        params![
            m.after,
            crate::queries_shared::prune_floor(m),
            limit.saturating_mul(2),
            now - crate::FAN_OUT_KEPT.num_milliseconds()
        ],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let plan = crate::queries_shared::PrunePlan::of(&m.after, &window, limit);
    let (mut deleted, mut rows, mut bytes) = (0, 0usize, 0i64);
    let budget = usize::try_from(limit.saturating_mul(crate::queries_shared::PRUNE_ROWS_PER_MESSAGE)).unwrap_or(0);
    for id in &plan.doomed {
        if rows >= budget || bytes >= crate::PRUNE_BYTES {
            // Cut short: the rest of the window next round, from where this one began.
            return Ok((deleted, Some(m.after.clone())));
        }
        let size: Option<i64> =
            query_opt(conn, "SELECT octet_length(payload) FROM messages WHERE id = ?1", [id], |r| r.get(0))?;
        bytes = bytes.saturating_add(size.unwrap_or(0));
        rows += execute(conn, "DELETE FROM attempts WHERE msg_id = ?1", [id])?;
        rows += execute(conn, "DELETE FROM deliveries WHERE msg_id = ?1", [id])?;
        rows += execute(conn, "DELETE FROM messages WHERE id = ?1", [id])?;
        deleted += 1;
    }
    Ok((deleted, plan.resume))
}

/// The messages a round of retention looks at: their ids, whether each is old enough to go,
/// and whether it is still needed. Its age is read from its id, as every column read here
/// is, so that the index on ids answers alone: a message's `created_at` is stored after its
/// payload, and reading it walked each large payload's overflow pages, on the writer.
fn prune_window_sql() -> String {
    format!(
        "SELECT id, id < ?2, {} FROM messages m WHERE id > ?1 ORDER BY id LIMIT ?3",
        crate::queries_shared::message_needed_sql("?4")
    )
}

/// An attempt's message is of one of the event types (a JSON array).
const ATTEMPT_OF_EVENT_TYPES: &str = "EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.msg_id \
     AND m.event_type IN (SELECT value FROM json_each(?)))";
/// An attempt's message is on the channel.
const ATTEMPT_ON_CHANNEL: &str = "EXISTS (SELECT 1 FROM messages m, json_each(m.channels) c \
     WHERE m.id = attempts.msg_id AND c.value = ?)";
/// An attempt's message has the tag.
const ATTEMPT_WITH_TAG: &str = "EXISTS (SELECT 1 FROM messages m, json_each(m.tags) c \
     WHERE m.id = attempts.msg_id AND c.value = ?)";

pub fn list_attempts(
    conn: &Connection,
    app_id: &str,
    f: &AttemptFilter,
    page: &PageRequest,
) -> StoreResult<Page<Attempt>> {
    attempt_select(app_id, f).page(conn, "id", page, rows::attempt)
}

fn attempt_select(app_id: &str, f: &AttemptFilter) -> Select {
    let mut q = Select::new(rows::ATTEMPT_COLS, "attempts")
        .and("app_id = ?", [text(app_id)])
        .and_if(f.msg_id.clone(), "msg_id = ?", text)
        .and_if(f.endpoint_id.clone(), "endpoint_id = ?", text)
        .and_if(f.status, "status = ?", |s| int(s as i64))
        .and_if(f.before, "created_at < ?", |t| int(ms(t)))
        .and_if(f.after, "created_at > ?", |t| int(ms(t)))
        // A bound on the id too, which the indexes by endpoint and by message are in: a few
        // recent failures of an endpoint with a long history do not read all of it.
        .and_if(f.after, "id > ?", |t| text(crate::queries_shared::attempt_id_floor(t)))
        .and_if(f.event_types.as_ref().filter(|t| !t.is_empty()), ATTEMPT_OF_EVENT_TYPES, |t| text(to_json(t)))
        .and_if(f.channel.clone(), ATTEMPT_ON_CHANNEL, text)
        .and_if(f.tag.clone(), ATTEMPT_WITH_TAG, text);
    if let Some((low, high)) = f.status_code_range() {
        q = q.and("response_status >= ? AND response_status < ?", [int(low.into()), int(high.into())]);
    }
    q
}

pub fn get_attempt(conn: &Connection, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<Option<Attempt>> {
    let sql = format!("SELECT {} FROM attempts WHERE app_id = ?1 AND msg_id = ?2 AND id = ?3", rows::ATTEMPT_COLS);
    query_opt(conn, &sql, [app_id, msg_id, attempt_id], rows::attempt)
}

// --- statistics

pub fn queue_stats(conn: &Connection, now: i64) -> StoreResult<crate::QueueStats> {
    let (due, scheduled, leased): (i64, i64, i64) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(leased = 0 AND due_at <= ?1), 0), COALESCE(SUM(leased = 0 AND (due_at > ?1 OR due_at IS NULL)), 0), \
             COALESCE(SUM(leased = 1), 0) FROM deliveries WHERE status = 1",
        )
        .and_then(|mut s| s.query_row([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))))
        .map_err(db_err)?;
    let failing = query_all(
        conn,
        "SELECT e.app_id, e.id, e.failing_since, \
         (SELECT COUNT(*) FROM attempts a WHERE a.endpoint_id = e.id AND a.created_at >= e.failing_since) \
         FROM endpoints e WHERE e.failing_since IS NOT NULL AND e.disabled = 0 \
         ORDER BY e.failing_since, e.id LIMIT ?1",
        [crate::MAX_FAILING_REPORTED as i64],
        |r| {
            Ok(crate::FailingEndpoint {
                app_id: r.get(0)?,
                endpoint_id: r.get(1)?,
                failing_since: rows::time(r.get(2)?),
                failed_attempts: r.get::<_, i64>(3)?.max(0) as u64,
            })
        },
    )?;
    let (disabled, failing_endpoints): (i64, i64) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(disabled = 1), 0), COALESCE(SUM(disabled = 0 AND failing_since IS NOT NULL), 0) \
             FROM endpoints",
        )
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(db_err)?;
    let n = |v: i64| v.max(0) as u64;
    Ok(crate::QueueStats {
        due: n(due),
        scheduled: n(scheduled),
        leased: n(leased),
        failing,
        failing_endpoints: n(failing_endpoints),
        disabled_endpoints: n(disabled),
    })
}

fn attempt_group<K: rusqlite::types::FromSql>(r: &rusqlite::Row) -> rusqlite::Result<AttemptGroup<K>> {
    Ok(AttemptGroup {
        key: r.get(0)?,
        status: r.get(1)?,
        bucket: r.get(2)?,
        count: r.get(3)?,
        last_at: r.get(4)?,
        max_ms: r.get(5)?,
    })
}

pub fn endpoint_health(conn: &Connection, app_id: &str, since: i64) -> StoreResult<Vec<crate::EndpointHealth>> {
    let ids: Vec<String> =
        query_all(conn, "SELECT id FROM endpoints WHERE app_id = ?1 ORDER BY id", [app_id], |r| r.get(0))?;
    let mut endpoints = Vec::with_capacity(ids.len());
    for id in ids {
        let pending: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM deliveries WHERE endpoint_id = ?1 AND status = 1")
            .and_then(|mut s| s.query_row([&id], |r| r.get(0)))
            .map_err(db_err)?;
        endpoints.push((id, pending.max(0) as u64));
    }
    let sql = format!(
        "SELECT endpoint_id, status, {} AS b, COUNT(*), MAX(created_at), MAX(duration_ms) FROM attempts \
         WHERE app_id = ?1 AND created_at >= ?2 GROUP BY endpoint_id, status, b",
        latency_bucket_sql("duration_ms")
    );
    let groups: Vec<AttemptGroup<String>> = query_all(conn, &sql, params![app_id, since], attempt_group)?;
    Ok(fold_health(endpoints, groups))
}

pub fn attempt_timeline(
    conn: &Connection,
    app_id: &str,
    endpoint_id: Option<&str>,
    since: i64,
    until: i64,
    bucket: i64,
) -> StoreResult<Vec<crate::TimelineBucket>> {
    let sql = format!(
        "SELECT (created_at / ?3) * ?3 AS t, status, {} AS b, COUNT(*), MAX(created_at), MAX(duration_ms) \
         FROM attempts WHERE app_id = ?1 AND created_at >= ?2 AND created_at < ?4 \
         AND (?5 IS NULL OR endpoint_id = ?5) GROUP BY t, status, b",
        latency_bucket_sql("duration_ms")
    );
    let groups: Vec<AttemptGroup<i64>> =
        query_all(conn, &sql, params![app_id, since, bucket, until, endpoint_id], attempt_group)?;
    Ok(fold_timeline(groups))
}

/// The deliveries of the application's messages created in `[?2, ?3)`; `?4` their id floor
/// (`queries_shared::message_id_floor`), which bounds the read to the window's messages.
const COUNT_DESTINATIONS: &str = "SELECT COUNT(*) FROM messages m JOIN deliveries d ON d.msg_id = m.id \
     WHERE m.app_id = ?1 AND m.id >= ?4 AND m.created_at >= ?2 AND m.created_at < ?3";

pub fn count_message_destinations(conn: &Connection, app_id: &str, since: i64, until: i64) -> StoreResult<u64> {
    let n: Option<i64> = query_opt(
        conn,
        COUNT_DESTINATIONS,
        params![app_id, since, until, crate::queries_shared::message_id_floor(since)],
        |r| r.get(0),
    )?;
    Ok(n.unwrap_or(0).max(0) as u64)
}

pub fn message_log(
    conn: &Connection,
    app_id: &str,
    f: &MessageFilter,
    state: Option<crate::MessageState>,
    page: &PageRequest,
) -> StoreResult<Page<crate::MessageSummary>> {
    let mut q = message_select(app_id, f);
    if let Some(state) = state {
        q = q.and(message_state_sql(state), []);
    }
    let messages = q.page(conn, "id", page, rows::message)?;
    let mut items = Vec::with_capacity(messages.items.len());
    for message in messages.items {
        let mut summary =
            crate::MessageSummary { message, succeeded: 0, pending: 0, failed: 0, canceled: 0, attempts: 0 };
        let counts: Vec<(i64, i64)> = query_all(
            conn,
            "SELECT status, COUNT(*) FROM deliveries WHERE msg_id = ?1 GROUP BY status",
            [&summary.message.id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (status, n) in counts {
            let n = n.max(0) as u64;
            match status {
                0 => summary.succeeded += n,
                2 => summary.failed += n,
                4 => summary.canceled += n,
                _ => summary.pending += n,
            }
        }
        let attempts: i64 = conn
            .prepare_cached("SELECT COUNT(*) FROM attempts WHERE msg_id = ?1")
            .and_then(|mut s| s.query_row([&summary.message.id], |r| r.get(0)))
            .map_err(db_err)?;
        summary.attempts = attempts.max(0) as u64;
        items.push(summary);
    }
    Ok(Page { items, done: messages.done })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of an endpoint's messages walks that endpoint's deliveries in message id order
    /// (no scan of the application's messages, no sort), whatever the filters.
    #[test]
    fn endpoint_messages_are_read_through_the_endpoints_deliveries() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn).expect("schema");
        let filter = MessageFilter {
            event_types: Some(vec!["user.created".into()]),
            channel: Some("eu".into()),
            ..MessageFilter::default()
        };
        for (f, status) in [(MessageFilter::default(), None), (filter, Some(DeliveryStatus::Fail))] {
            let select = endpoint_message_select("app_1", "ep_1", &f, status);
            let sql = format!("EXPLAIN QUERY PLAN {} AND d.msg_id < ? ORDER BY d.msg_id DESC LIMIT 51", select.sql());
            let mut params = select.params.clone();
            params.push(text("msg_z"));
            let plan: Vec<String> = conn
                .prepare(&sql)
                .and_then(|mut s| s.query_map(params_from_iter(params), |r| r.get::<_, String>(3))?.collect())
                .expect("plan");
            let plan = plan.join(" | ");
            assert!(plan.contains("SEARCH d USING") && plan.contains("deliveries_by_endpoint"), "{plan}");
            assert!(!plan.contains("messages_by_app") && !plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    /// An endpoint's latest failures since a time (the health statistics) read that
    /// endpoint's attempts made since then, not its whole history.
    #[test]
    fn an_endpoints_recent_attempts_are_read_from_a_bounded_range() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn).expect("schema");
        let filter = AttemptFilter {
            endpoint_id: Some("ep_1".into()),
            status: Some(DeliveryStatus::Fail),
            after: Some(Utc::now()),
            ..AttemptFilter::default()
        };
        let select = attempt_select("app_1", &filter);
        let sql = format!("EXPLAIN QUERY PLAN {} ORDER BY id DESC LIMIT 3", select.sql());
        let plan: Vec<String> = conn
            .prepare(&sql)
            .and_then(|mut s| {
                s.query_map(params_from_iter(select.params.clone()), |r| r.get::<_, String>(3))?.collect()
            })
            .expect("plan");
        let plan = plan.join(" | ");
        assert!(plan.contains("attempts_by_endpoint (endpoint_id=? AND id>?)"), "{plan}");
    }

    /// A read of the messages since a recent time starts at the first message that may be
    /// that recent, found by id: it steps over none of the application's older history
    /// (3,000 messages here), as Svix clients' first read (`after` now) had.
    #[test]
    fn a_read_since_a_time_walks_no_older_messages() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn).expect("schema");
        let now = Utc::now();
        let message =
            |id: String, created_at: DateTime<Utc>| Message { id, ..Message::new("app_1", "a.b", "{}", created_at) };
        let old = now - chrono::Duration::days(2);
        for i in 0..3_000 {
            let at = old + chrono::Duration::milliseconds(i);
            let m = message(hooklane_core::ids::floor(hooklane_core::ids::MESSAGE, at), at);
            insert_message(&conn, &m, &[], FirstSend::Now).expect("old message");
        }
        let recent = message(hooklane_core::ids::new_id(hooklane_core::ids::MESSAGE), now);
        insert_message(&conn, &recent, &[], FirstSend::Now).expect("recent message");
        let durable: i64 = conn.query_row("SELECT MAX(seq) FROM messages", [], |r| r.get(0)).expect("seq");

        let mut q = EventsQuery::after(EventPosition::START, 10);
        q.since = Some(now - chrono::Duration::minutes(1));
        let page = read_message_events(&conn, "app_1", &q, durable).expect("read");
        let ids: Vec<&str> = page.messages.iter().map(|(_, m)| m.id.as_str()).collect();
        assert_eq!(ids, [recent.id.as_str()]);
        // The statement the read ran, from the cache, with the steps it took.
        let sql = format!("{} ORDER BY seq LIMIT 10", events_select("app_1", &q, durable).sql());
        let stmt = conn.prepare_cached(&sql).expect("statement");
        let steps = stmt.get_status(rusqlite::StatementStatus::VmStep);
        assert!(steps > 0 && steps < 1_000, "{steps} steps for one message");

        // A time past every message: nothing, done.
        q.since = Some(now + chrono::Duration::minutes(10));
        let page = read_message_events(&conn, "app_1", &q, durable).expect("read");
        assert!(page.messages.is_empty() && page.done);

        // From a position, with more ids made since the time than the search looks at: the
        // walk starts at the position, and finds what follows it.
        let recent = now - chrono::Duration::seconds(20);
        for i in 0..(SINCE_SEARCH + 100) {
            let at = recent + chrono::Duration::milliseconds(i);
            let m = message(hooklane_core::ids::floor(hooklane_core::ids::MESSAGE, at), at);
            insert_message(&conn, &m, &[], FirstSend::Now).expect("recent message");
        }
        let durable: i64 = conn.query_row("SELECT MAX(seq) FROM messages", [], |r| r.get(0)).expect("seq");
        let from = durable - 50;
        let mut q = EventsQuery::after(EventPosition { major: 0, minor: from }, 10);
        q.since = Some(recent - chrono::Duration::seconds(5));
        let page = read_message_events(&conn, "app_1", &q, durable).expect("read");
        let seqs: Vec<i64> = page.messages.iter().map(|(p, _)| p.minor).collect();
        assert_eq!(seqs, (from + 1..=from + 10).collect::<Vec<_>>());
    }

    /// A round of retention reads its window of messages from the index on ids alone, never
    /// their rows (a row's payload comes before its time: reading the time read the payload).
    #[test]
    fn retention_reads_no_message_rows() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn).expect("schema");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", prune_window_sql()))
            .and_then(|mut s| s.query_map(params!["", "msg_1", 10, 0], |r| r.get::<_, String>(3))?.collect())
            .expect("plan");
        let plan = plan.join(" | ");
        assert!(plan.contains("SEARCH m USING COVERING INDEX"), "{plan}");
    }

    /// A round frees about `PRUNE_BYTES` of bodies at most: of 40 expired answers of a
    /// megabyte, it deletes 32 and says more are left; the next round deletes the rest.
    #[test]
    fn a_round_of_housekeeping_frees_a_bounded_number_of_bytes() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn).expect("schema");
        let body = vec![b'x'; 1024 * 1024];
        for i in 0..40 {
            conn.execute(
                "INSERT INTO idempotency_keys (key, done, status, body, expires_at) VALUES (?1, 1, 200, ?2, 0)",
                params![format!("k{i}"), body],
            )
            .expect("key");
        }
        let first = prune(&conn, 1, None, None, 1000).expect("prune");
        assert_eq!((first.idempotency_keys, first.more), (32, true));
        let second = prune(&conn, 1, None, None, 1000).expect("prune");
        assert_eq!((second.idempotency_keys, second.more), (8, false));

        // The same of old messages' payloads: the round goes on next time from where it began.
        let old = Utc::now() - chrono::Duration::days(2);
        for i in 0..40 {
            let at = old + chrono::Duration::milliseconds(i);
            let m = Message {
                id: hooklane_core::ids::floor(hooklane_core::ids::MESSAGE, at),
                ..Message::new("app_1", "a.b", "x".repeat(1024 * 1024), at)
            };
            insert_message(&conn, &m, &[], FirstSend::Now).expect("message");
        }
        let m = crate::PruneMessages { before: Utc::now() - chrono::Duration::days(1), after: String::new() };
        let first = prune(&conn, 1, None, Some(&m), 1000).expect("prune");
        assert_eq!((first.messages, first.messages_resume), (32, Some(String::new())));
        let second = prune(&conn, 1, None, Some(&m), 1000).expect("prune");
        assert_eq!((second.messages, second.messages_resume), (8, None));
    }

    /// Expired tokens are found through the index by expiry, not by reading every token.
    #[test]
    fn expired_tokens_are_found_by_their_expiry() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn).expect("schema");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE_TOKENS}"))
            .and_then(|mut s| s.query_map(params![0, 10], |r| r.get::<_, String>(3))?.collect())
            .expect("plan");
        let plan = plan.join(" | ");
        assert!(plan.contains("tokens_by_expiry (expires_at<?)"), "{plan}");
    }

    /// Usage counts read the application's messages of the window through the index by
    /// (application, id), not its whole history.
    #[test]
    fn usage_counts_read_a_bounded_range_of_messages() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn).expect("schema");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {COUNT_DESTINATIONS}"))
            .and_then(|mut s| s.query_map(params!["app_1", 0, 1, "msg_0"], |r| r.get::<_, String>(3))?.collect())
            .expect("plan");
        let plan = plan.join(" | ");
        assert!(plan.contains("messages_by_app (app_id=? AND id>?)"), "{plan}");
    }

    /// Deleting an application reads none of the tables that grow with traffic whole: their
    /// rows are found through an index (deliveries have none by application). (Small tables,
    /// such as tokens, may be scanned.)
    #[test]
    fn deleting_an_application_scans_no_large_table() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn).expect("schema");
        let large = ["attempts", "deliveries", "messages"];
        let statements = crate::queries_shared::delete_app_sql("?1");
        let statements =
            statements.iter().filter(|sql| large.iter().any(|t| sql.starts_with(&format!("DELETE FROM {t} "))));
        assert_eq!(statements.clone().count(), 4);
        for sql in statements {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .and_then(|mut s| s.query_map(["app_1"], |r| r.get::<_, String>(3))?.collect())
                .expect("plan");
            let plan = plan.join(" | ");
            assert!(!plan.contains("SCAN"), "{sql}: {plan}");
        }
    }
}
