//! The SQL behind each store operation, as functions over a pooled connection or an open
//! transaction alike. Statements are prepared once per connection (`prepare_cached`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use deadpool_postgres::GenericClient;
use hooklane_core::model::{Application, Attempt, Delivery, DeliveryStatus, Endpoint, EventType, Message};
use hooklane_core::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::db_err;
use super::lanes;
use super::rows::{self, ms, opt_json, opt_u32, to_json};
use crate::queries_shared::{
    ago, delivery_cols_seen, endpoint_delivery_sql, fold_health, fold_timeline, latency_bucket_sql, message_state_sql,
    qualified_delivery_cols_seen, AttemptGroup,
};
use crate::queries_shared::{
    lane_key_sql, lane_seq_sql, prune_floor, qualified, queued_again_sql, FairClaim, EXPUNGED, RECOVERABLE,
};
use crate::{
    AttemptFilter, AttemptOutcome, ClaimedKey, DeliveryKey, EndpointStats, EventPosition, EventsPage, EventsQuery, Job,
    MessageFilter, NextStep, Page, PageRequest, Recorded, StoreError, StoreResult,
};

type Param = Box<dyn ToSql + Sync + Send>;

async fn prepare<C: GenericClient>(c: &C, sql: &str) -> StoreResult<Statement> {
    c.prepare_cached(sql).await.map_err(db_err)
}

pub(super) async fn execute<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
    let stmt = prepare(c, sql).await?;
    c.execute(&stmt, params).await.map_err(db_err)
}

pub(super) async fn query<C: GenericClient>(c: &C, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
    let stmt = prepare(c, sql).await?;
    c.query(&stmt, params).await.map_err(db_err)
}

pub(super) async fn query_opt<C: GenericClient>(
    c: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Option<Row>> {
    let stmt = prepare(c, sql).await?;
    c.query_opt(&stmt, params).await.map_err(db_err)
}

/// Expects at least one changed row; zero means the record was not there.
pub(super) fn one_row(changed: u64) -> StoreResult<()> {
    if changed == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

fn limit_param(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A SELECT under construction: conditions joined with AND, `?` placeholders numbered in
/// order (`$1`, `$2`…) as conditions are added.
pub struct Select {
    base: String,
    conditions: Vec<String>,
    params: Vec<Param>,
}

impl Select {
    pub fn new(cols: &str, table: &str) -> Self {
        Select { base: format!("SELECT {cols} FROM {table}"), conditions: Vec::new(), params: Vec::new() }
    }

    /// Adds `condition`, whose `?` marks stand for `values` in order.
    pub fn and(mut self, condition: &str, values: impl IntoIterator<Item = Param>) -> Self {
        let mut values = values.into_iter();
        let mut numbered = String::with_capacity(condition.len() + 4);
        for ch in condition.chars() {
            if ch == '?' {
                self.params.push(values.next().expect("a value for every placeholder"));
                numbered.push_str(&format!("${}", self.params.len()));
            } else {
                numbered.push(ch);
            }
        }
        debug_assert!(values.next().is_none(), "more values than placeholders in {condition:?}");
        self.conditions.push(numbered);
        self
    }

    pub fn and_if<T>(self, value: Option<T>, condition: &str, to_param: impl FnOnce(T) -> Param) -> Self {
        match value {
            Some(v) => self.and(condition, [to_param(v)]),
            None => self,
        }
    }

    /// The statement so far: the SELECT with its conditions.
    fn sql(&self) -> String {
        if self.conditions.is_empty() {
            self.base.clone()
        } else {
            format!("{} WHERE {}", self.base, self.conditions.join(" AND "))
        }
    }

    /// Runs the query as one page ordered by `key` (a unique column, so the order is stable).
    pub async fn page<C: GenericClient, T>(
        mut self,
        c: &C,
        key: &str,
        page: &PageRequest,
        map: impl Fn(&Row, usize) -> StoreResult<T>,
    ) -> StoreResult<Page<T>> {
        // Read away from the iterator: the page's own order, or backwards the other way.
        let read_descending = page.descending != page.backwards;
        if let Some(it) = &page.iterator {
            let op = if read_descending { "<" } else { ">" };
            self = self.and(&format!("{key} {op} ?"), [text(it)]);
        }
        let limit = page.limit.max(1);
        let mut sql = self.sql();
        let dir = if read_descending { "DESC" } else { "ASC" };
        self.params.push(Box::new(limit_param(limit + 1)));
        sql.push_str(&format!(" ORDER BY {key} {dir} LIMIT ${}", self.params.len()));
        let params: Vec<&(dyn ToSql + Sync)> = self.params.iter().map(|p| p.as_ref() as _).collect();
        let found = query(c, &sql, &params).await?;
        let mut items = found.iter().map(|r| map(r, 0)).collect::<StoreResult<Vec<T>>>()?;
        let done = items.len() <= limit;
        items.truncate(limit);
        if page.backwards {
            items.reverse();
        }
        Ok(Page { items, done })
    }
}

pub fn text(s: impl Into<String>) -> Param {
    Box::new(s.into())
}

fn int(i: i64) -> Param {
    Box::new(i)
}

// --- applications

pub async fn insert_app<C: GenericClient>(c: &C, a: &Application) -> StoreResult<()> {
    execute(
        c,
        "INSERT INTO applications (id, uid, name, rate_limit, metadata, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&a.id, &a.uid, &a.name, &opt_u32(a.rate_limit), &to_json(&a.metadata), &ms(a.created_at), &ms(a.updated_at)],
    )
    .await?;
    Ok(())
}

pub async fn update_app<C: GenericClient>(c: &C, a: &Application) -> StoreResult<()> {
    let n = execute(
        c,
        "UPDATE applications SET uid = $2, name = $3, rate_limit = $4, metadata = $5, updated_at = $6 WHERE id = $1",
        &[&a.id, &a.uid, &a.name, &opt_u32(a.rate_limit), &to_json(&a.metadata), &ms(a.updated_at)],
    )
    .await?;
    one_row(n)
}

pub async fn get_app<C: GenericClient>(c: &C, id_or_uid: &str) -> StoreResult<Option<Application>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {} FROM applications WHERE id = $1 OR uid = $1 ORDER BY id = $1 DESC LIMIT 1", rows::APP_COLS)
    });
    query_opt(c, &SQL, &[&id_or_uid]).await?.map(|r| rows::app(&r, 0)).transpose()
}

/// Deletes the application and everything under it; to run inside a transaction.
pub async fn delete_app<C: GenericClient>(c: &C, app_id: &str) -> StoreResult<()> {
    one_row(execute(c, "DELETE FROM applications WHERE id = $1", &[&app_id]).await?)?;
    for sql in crate::queries_shared::delete_app_sql("$1") {
        execute(c, &sql, &[&app_id]).await?;
    }
    Ok(())
}

// --- event types

const INSERT_EVENT_TYPE: &str = "INSERT INTO event_types (name, description, archived, deprecated, feature_flag, \
     schemas, created_at, updated_at, feature_flags, group_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

pub async fn insert_event_type<C: GenericClient>(c: &C, e: &EventType) -> StoreResult<()> {
    write_event_type(c, INSERT_EVENT_TYPE, e).await
}

/// Runs `sql` ([`INSERT_EVENT_TYPE`], maybe with an `ON CONFLICT` clause) for `e`.
async fn write_event_type<C: GenericClient>(c: &C, sql: &str, e: &EventType) -> StoreResult<()> {
    let (flag, flags) = crate::queries_shared::flag_columns(&e.feature_flags);
    execute(
        c,
        sql,
        &[
            &e.name,
            &e.description,
            &e.archived,
            &e.deprecated,
            &flag,
            &opt_json(&e.schemas),
            &ms(e.created_at),
            &ms(e.updated_at),
            &flags,
            &e.group_name,
        ],
    )
    .await?;
    Ok(())
}

pub async fn update_event_type<C: GenericClient>(c: &C, e: &EventType) -> StoreResult<()> {
    let (flag, flags) = crate::queries_shared::flag_columns(&e.feature_flags);
    let n = execute(
        c,
        "UPDATE event_types SET description = $2, archived = $3, deprecated = $4, feature_flag = $5, schemas = $6, \
         updated_at = $7, feature_flags = $8, group_name = $9 WHERE name = $1",
        &[
            &e.name,
            &e.description,
            &e.archived,
            &e.deprecated,
            &flag,
            &opt_json(&e.schemas),
            &ms(e.updated_at),
            &flags,
            &e.group_name,
        ],
    )
    .await?;
    one_row(n)
}

/// See `Store::import_event_types`; in the caller's transaction.
pub async fn import_event_types<C: GenericClient>(
    c: &C,
    upserts: &[EventType],
    archive: &[String],
    at: i64,
    keep_flags: bool,
) -> StoreResult<()> {
    // (An upsert: one created meanwhile by another request is replaced all the same.)
    static UPSERT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{INSERT_EVENT_TYPE} ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, \
             archived = EXCLUDED.archived, deprecated = EXCLUDED.deprecated, feature_flag = EXCLUDED.feature_flag, \
             feature_flags = EXCLUDED.feature_flags, group_name = EXCLUDED.group_name, \
             schemas = EXCLUDED.schemas, updated_at = EXCLUDED.updated_at"
        )
    });
    // (The same, but an existing one keeps its flags and group as they stand.)
    static UPSERT_KEEPING_FLAGS: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{INSERT_EVENT_TYPE} ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, \
             archived = EXCLUDED.archived, deprecated = EXCLUDED.deprecated, \
             schemas = EXCLUDED.schemas, updated_at = EXCLUDED.updated_at"
        )
    });
    let upsert: &str = if keep_flags { &UPSERT_KEEPING_FLAGS } else { &UPSERT };
    // Rows written (and locked) in name order, upserts and archivings together, whatever
    // order the import gave them in: two imports of the same names in other orders had
    // deadlocked (one answered 500). (A stable sort: of a name given twice, the later
    // still wins.)
    let mut writes: Vec<(&str, Option<&EventType>)> = upserts
        .iter()
        .map(|e| (e.name.as_str(), Some(e)))
        .chain(archive.iter().map(|name| (name.as_str(), None)))
        .collect();
    writes.sort_by(|a, b| a.0.cmp(b.0));
    for (name, upserted) in writes {
        match upserted {
            Some(e) => write_event_type(c, upsert, e).await?,
            None => {
                execute(c, "UPDATE event_types SET archived = true, updated_at = $2 WHERE name = $1", &[&name, &at])
                    .await?;
            }
        }
    }
    Ok(())
}

pub async fn get_event_type<C: GenericClient>(c: &C, name: &str) -> StoreResult<Option<EventType>> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {} FROM event_types WHERE name = $1", rows::EVENT_TYPE_COLS));
    query_opt(c, &SQL, &[&name]).await?.map(|r| rows::event_type(&r, 0)).transpose()
}

pub async fn delete_event_type<C: GenericClient>(c: &C, name: &str) -> StoreResult<()> {
    one_row(execute(c, "DELETE FROM event_types WHERE name = $1", &[&name]).await?)
}

// --- endpoints

pub async fn insert_endpoint<C: GenericClient>(c: &C, e: &Endpoint) -> StoreResult<()> {
    execute(
        c,
        "INSERT INTO endpoints (id, app_id, uid, url, description, version, filter_types, channels, disabled, \
         rate_limit, metadata, headers, secret, previous_secrets, failing_since, created_at, updated_at, \
         payload_filter, transform, fifo, transformation, retry_schedule, oauth, paused, mtls, polling) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
         $23, $24, $25, $26)",
        &[
            &e.id,
            &e.app_id,
            &e.uid,
            &e.url,
            &e.description,
            &e.version,
            &opt_json(&e.filter_types),
            &opt_json(&e.channels),
            &e.disabled,
            &opt_u32(e.rate_limit),
            &to_json(&e.metadata),
            &to_json(&e.headers),
            &e.secret,
            &to_json(&e.previous_secrets),
            &e.failing_since.map(ms),
            &ms(e.created_at),
            &ms(e.updated_at),
            &opt_json(&e.payload_filter),
            &opt_json(&e.transform),
            &e.order.is_fifo(),
            &opt_json(&e.transformation),
            &crate::queries_shared::schedule_json(&e.retry_schedule),
            &opt_json(&e.oauth),
            &e.paused,
            &opt_json(&e.mtls),
            &e.polling,
        ],
    )
    .await?;
    Ok(())
}

/// Saves the endpoint, and moves its pending deliveries into or out of a FIFO lane when its
/// ordering changed; to run inside a transaction (the old ordering is read under the
/// endpoint's row lock).
pub async fn update_endpoint<C: GenericClient>(c: &C, e: &Endpoint, read_at: Option<i64>) -> StoreResult<()> {
    let stored = query_opt(
        c,
        "SELECT fifo, updated_at FROM endpoints WHERE id = $1 AND app_id = $2 FOR UPDATE",
        &[&e.id, &e.app_id],
    )
    .await?
    .map(|r| Ok::<_, StoreError>((rows::get::<bool>(&r, 0)?, rows::get::<i64>(&r, 1)?)))
    .transpose()?;
    if let (Some((_, updated_at)), Some(read_at)) = (stored, read_at) {
        if updated_at != read_at {
            return Err(StoreError::Changed);
        }
    }
    let was_fifo = stored.map(|(fifo, _)| fifo);
    // The failure streak is the engine's (a value read before an attempt recorded since
    // would write back a streak that attempt ended): only a re-enabling or a new address
    // (its failures were another receiver's) ends it here.
    let n = execute(
        c,
        "UPDATE endpoints SET uid = $3, url = $4, description = $5, version = $6, filter_types = $7, channels = $8, \
         disabled = $9, rate_limit = $10, metadata = $11, headers = $12, secret = $13, previous_secrets = $14, \
         failing_since = CASE WHEN (disabled AND NOT $9) OR url <> $4 THEN NULL ELSE failing_since END, updated_at = $15, \
         payload_filter = $16, transform = $17, fifo = $18, transformation = $19, retry_schedule = $20, paused = $21 \
         WHERE id = $1 AND app_id = $2",
        &[
            &e.id,
            &e.app_id,
            &e.uid,
            &e.url,
            &e.description,
            &e.version,
            &opt_json(&e.filter_types),
            &opt_json(&e.channels),
            &e.disabled,
            &opt_u32(e.rate_limit),
            &to_json(&e.metadata),
            &to_json(&e.headers),
            &e.secret,
            &to_json(&e.previous_secrets),
            &ms(e.updated_at),
            &opt_json(&e.payload_filter),
            &opt_json(&e.transform),
            &e.order.is_fifo(),
            &opt_json(&e.transformation),
            &crate::queries_shared::schedule_json(&e.retry_schedule),
            &e.paused,
        ],
    )
    .await?;
    one_row(n)?;
    if was_fifo.is_some_and(|was| was != e.order.is_fifo()) {
        super::lanes::reorder(c, &e.id, e.order.is_fifo(), ms(e.updated_at)).await?;
    }
    Ok(())
}

pub async fn get_endpoint<C: GenericClient>(c: &C, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {} FROM endpoints WHERE app_id = $1 AND (id = $2 OR uid = $2) ORDER BY id = $2 DESC LIMIT 1",
            rows::ENDPOINT_COLS
        )
    });
    query_opt(c, &SQL, &[&app_id, &id_or_uid]).await?.map(|r| rows::endpoint(&r, 0)).transpose()
}

pub async fn app_endpoints<C: GenericClient>(c: &C, app_id: &str) -> StoreResult<Vec<Endpoint>> {
    static SQL: LazyLock<String> =
        LazyLock::new(|| format!("SELECT {} FROM endpoints WHERE app_id = $1 ORDER BY id", rows::ENDPOINT_COLS));
    query(c, &SQL, &[&app_id]).await?.iter().map(|r| rows::endpoint(r, 0)).collect()
}

/// Deletes the endpoint with its deliveries and attempts; to run inside a transaction, which
/// the caller retries whole on a deadlock ([`super::is_transient`]).
///
/// Its deliveries first, then its attempts, then its row: the order of recording attempts
/// (a delivery's update, then the endpoint's failure streak), by far the likeliest writer of
/// the endpoint at the same moment, which then finishes before the delete instead of meeting
/// it in a deadlock that PostgreSQL may end by failing either (the delete taking the endpoint
/// row first waited for the recorder's delivery while the recorder waited for the row). The
/// attempts after the deliveries: a recorder the delete waited for has committed its
/// attempts by then, and they go too. Writers of the other order (a change of the ordering,
/// a FIFO lane's claim: the endpoint row, then its deliveries) can still deadlock with it,
/// hence the retry.
pub async fn delete_endpoint<C: GenericClient>(c: &C, app_id: &str, endpoint_id: &str) -> StoreResult<()> {
    for sql in [
        "DELETE FROM deliveries WHERE app_id = $1 AND endpoint_id = $2",
        "DELETE FROM attempts WHERE app_id = $1 AND endpoint_id = $2",
    ] {
        execute(c, sql, &[&app_id, &endpoint_id]).await?;
    }
    one_row(execute(c, "DELETE FROM endpoints WHERE app_id = $1 AND id = $2", &[&app_id, &endpoint_id]).await?)?;
    for sql in [
        // The positions of a polling endpoint's consumers: events subscriptions named
        // `{endpoint_id}/{consumer_id}` (a name no other subscription can have).
        "DELETE FROM events_subscriptions WHERE app_id = $1 AND starts_with(id, $2::text || '/')",
        // Its keys (a polling endpoint's).
        "DELETE FROM tokens WHERE app_id = $1 AND endpoint_id = $2",
    ] {
        execute(c, sql, &[&app_id, &endpoint_id]).await?;
    }
    // Its rate bucket (kept by endpoint id only; the endpoint was the application's).
    execute(c, "DELETE FROM endpoint_rate WHERE endpoint_id = $1", &[&endpoint_id]).await?;
    Ok(())
}

// --- messages and deliveries

pub async fn get_message<C: GenericClient>(c: &C, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {} FROM messages WHERE app_id = $1 AND (id = $2 OR event_id = $2) ORDER BY id = $2 DESC LIMIT 1",
            rows::MESSAGE_COLS
        )
    });
    query_opt(c, &SQL, &[&app_id, &id_or_event_id]).await?.map(|r| rows::message(&r, 0)).transpose()
}

pub async fn list_messages<C: GenericClient>(
    c: &C,
    app_id: &str,
    f: &MessageFilter,
    page: &PageRequest,
) -> StoreResult<Page<Message>> {
    message_select(app_id, f).page(c, "id", page, rows::message).await
}

/// The messages of an application that pass a filter (shared with the message log).
fn message_select(app_id: &str, f: &MessageFilter) -> Select {
    let cols = crate::queries_shared::message_cols_for(rows::MESSAGE_COLS, None, f);
    let mut q = Select::new(&cols, "messages").and("app_id = ?", [text(app_id)]);
    if let Some(types) = f.event_types.as_ref().filter(|t| !t.is_empty()) {
        q = q.and("event_type = ANY(?)", [Box::new(types.clone()) as Param]);
    }
    q.and_if(f.channel.clone(), "? = ANY(channels)", text)
        .and_if(f.tag.clone(), "? = ANY(tags)", text)
        .and_if(f.before, "created_at < ?", |t| int(ms(t)))
        .and_if(f.after, "created_at > ?", |t| int(ms(t)))
}

pub async fn message_deliveries<C: GenericClient>(
    c: &C,
    app_id: &str,
    msg_id: &str,
) -> StoreResult<Vec<(Delivery, Endpoint)>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {}, {} FROM deliveries d JOIN endpoints e ON e.app_id = d.app_id AND e.id = d.endpoint_id \
             WHERE d.app_id = $1 AND d.msg_id = $2 ORDER BY d.endpoint_id",
            qualified_delivery_cols_seen(rows::DELIVERY_COLS, "d"),
            qualified(rows::ENDPOINT_COLS, "e")
        )
    });
    query(c, &SQL, &[&app_id, &msg_id])
        .await?
        .iter()
        .map(|r| Ok((rows::delivery(r, 0)?, rows::endpoint(r, rows::DELIVERY_NCOLS)?)))
        .collect()
}

/// Leases up to `limit` due deliveries in one statement and returns them with their
/// message and endpoint. `FOR UPDATE SKIP LOCKED` lets pollers on several nodes claim
/// concurrently: each takes rows no other transaction holds, without waiting.
/// Endpoints with pending deliveries, except `skip_endpoints`, each with the earliest
/// `due_at` of its pending deliveries.
///
/// A loose index scan (recursive CTE) over `deliveries_pending (endpoint_id, due_at) WHERE
/// status = 1`: one index seek per endpoint finds the next endpoint id and its earliest due
/// time together. The cost grows with the number of endpoints with pending deliveries,
/// never with how many deliveries one of them has.
/// Endpoints with something pending that may fall due (parked rows of FIFO lanes do not),
/// each with its earliest due time and whether it is FIFO.
/// Endpoints with pending deliveries: each with its earliest due time, whether it is FIFO,
/// and, for a FIFO one with `beside_due_by`, whether it has a delivery due by then in none of
/// its lanes (a scheduled message's, which joins none): the claim's shared statement, a
/// round trip of its own, is only for those of them.
pub async fn pending_endpoints<C: GenericClient>(
    c: &C,
    skip_endpoints: &[String],
    beside_due_by: Option<i64>,
) -> StoreResult<Vec<(String, i64, bool, bool)>> {
    // Ordered by (endpoint_id, due_at), which only the partial index gives without a sort:
    // `deliveries_by_endpoint_msg (endpoint_id, status, msg_id)` would step over every finished
    // delivery of an endpoint before reaching its pending ones.
    // (`beside` only for a claim, among the rows due by its time: the index range of the
    // endpoint's due rows; a row due later, scheduled or in flight, costs no round trip.)
    static SQL: LazyLock<[String; 2]> = LazyLock::new(|| {
        let eps = "WITH RECURSIVE eps(id, due) AS ( \
             (SELECT endpoint_id, due_at FROM deliveries WHERE status = 1 ORDER BY endpoint_id, due_at LIMIT 1) \
             UNION ALL \
             SELECT n.endpoint_id, n.due_at FROM eps CROSS JOIN LATERAL ( \
                 SELECT d.endpoint_id, d.due_at FROM deliveries d WHERE d.status = 1 AND d.endpoint_id > eps.id \
                 ORDER BY d.endpoint_id, d.due_at LIMIT 1 \
             ) n \
         ) ";
        let fifo = "CROSS JOIN LATERAL \
             (SELECT coalesce((SELECT fifo FROM endpoints WHERE endpoints.id = eps.id), false) AS fifo) f \
             WHERE NOT (id = ANY($1::text[]))";
        [
            format!(
                "{eps} SELECT id, due, f.fifo, f.fifo AND EXISTS (SELECT 1 FROM deliveries d WHERE d.status = 1 \
                 AND d.endpoint_id = eps.id AND d.due_at <= $2 AND d.lane_seq IS NULL) FROM eps {fifo}"
            ),
            format!("{eps} SELECT id, due, f.fifo, false FROM eps {fifo}"),
        ]
    });
    let found = match beside_due_by {
        Some(at) => query(c, &SQL[0], &[&skip_endpoints, &at]).await?,
        None => query(c, &SQL[1], &[&skip_endpoints]).await?,
    };
    let mut out = Vec::with_capacity(found.len());
    for row in &found {
        if let Some(due) = rows::get::<Option<i64>>(row, 1)? {
            out.push((rows::get::<String>(row, 0)?, due, rows::get::<bool>(row, 2)?, rows::get::<bool>(row, 3)?));
        }
    }
    Ok(out)
}

/// The end of a claim statement: a CTE `claimed` running `update` (an UPDATE of deliveries
/// aliased `d` that leases rows), and the leased rows with their message's and endpoint's
/// columns, as [`claim_due`] reads them into jobs.
pub(super) fn claimed_jobs_sql(update: &str) -> String {
    format!(
        "claimed AS ({update} RETURNING {}) \
         SELECT {}, {}, {} FROM claimed c \
         LEFT JOIN messages m ON m.app_id = c.app_id AND m.id = c.msg_id \
         LEFT JOIN endpoints e ON e.app_id = c.app_id AND e.id = c.endpoint_id",
        qualified(rows::DELIVERY_COLS, "d"),
        qualified(rows::DELIVERY_COLS, "c"),
        qualified(rows::MESSAGE_COLS, "m"),
        qualified(rows::ENDPOINT_COLS, "e"),
    )
}

pub async fn claim_due(
    c: &mut deadpool_postgres::Client,
    now: DateTime<Utc>,
    limit: usize,
    lease_end: DateTime<Utc>,
    room_of: &crate::ClaimRoom,
) -> StoreResult<Vec<Job>> {
    // Each endpoint's share is taken by its own LATERAL subquery on `deliveries_pending`,
    // so one statement claims for every endpoint of a round; SKIP LOCKED leaves rows another
    // node is claiming at this moment to that node. At a FIFO endpoint (as the statement's
    // own snapshot reads it: one made FIFO since the round's endpoints were read included),
    // rows in lanes are left to their lanes' claim; its rows in none (a scheduled message's,
    // which joins none) go beside the lanes, as on SQLite. At a concurrent one every due row
    // is taken, in a lane or not: a row given a lane by a write that raced a change back to
    // concurrent too.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH due AS ( \
                 SELECT t.msg_id, t.endpoint_id \
                 FROM UNNEST($3::text[], $4::bigint[]) AS s(endpoint_id, share) \
                 CROSS JOIN LATERAL ( \
                     SELECT d.msg_id, d.endpoint_id FROM deliveries d \
                     WHERE d.status = 1 AND d.endpoint_id = s.endpoint_id AND d.due_at <= $2 \
                     AND (d.lane_seq IS NULL \
                          OR NOT EXISTS (SELECT 1 FROM endpoints e WHERE e.id = s.endpoint_id AND e.fifo)) \
                     ORDER BY d.due_at LIMIT s.share \
                     FOR UPDATE SKIP LOCKED \
                 ) t \
             ), {}",
            claimed_jobs_sql(
                "UPDATE deliveries d SET due_at = $1, leased = true FROM due \
                 WHERE d.msg_id = due.msg_id AND d.endpoint_id = due.endpoint_id"
            ),
        )
    });
    if limit == 0 {
        return Ok(Vec::new());
    }
    let at = ms(now);
    let candidates: Vec<(String, i64, bool, bool)> =
        pending_endpoints(&*c, &room_of.skip, Some(at)).await?.into_iter().filter(|(_, due, ..)| *due <= at).collect();
    // FIFO lanes first (the longest due first), each its head at most; then every endpoint
    // shares the rest (at a FIFO one, what is in no lane).
    let mut found = Vec::new();
    let mut lanes_first: Vec<&(String, i64, bool, bool)> = candidates.iter().filter(|(_, _, fifo, _)| *fifo).collect();
    lanes_first.sort_by_key(|(_, due, ..)| *due);
    let mut heads_of: HashMap<&str, usize> = HashMap::new();
    for (endpoint_id, ..) in lanes_first {
        if found.len() >= limit {
            break;
        }
        let room = limit - found.len();
        match lanes::claim(c, endpoint_id, at, ms(lease_end), room.min(room_of.most_of(endpoint_id))).await {
            Ok(heads) => {
                heads_of.insert(endpoint_id, heads.len());
                found.extend(heads);
            }
            // Heads already claimed stay claimed (their transactions committed): hand them
            // over rather than strand them until their lease ends.
            Err(e) if !found.is_empty() => {
                tracing::warn!(error = %e, %endpoint_id, "claiming a FIFO lane failed");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let c = &*c;
    let room_left = room_of.less(&heads_of);
    let candidates =
        candidates.into_iter().filter(|(_, _, fifo, beside)| !fifo || *beside).map(|(id, due, ..)| (id, due)).collect();
    let mut fair = FairClaim::new(candidates, limit - found.len(), &room_left);
    while let Some(round) = fair.next_round() {
        let ids: Vec<&str> = round.iter().map(|(id, _)| id.as_str()).collect();
        let shares: Vec<i64> = round.iter().map(|(_, n)| limit_param(*n)).collect();
        let rows = match query(c, &SQL, &[&ms(lease_end), &at, &ids, &shares]).await {
            Ok(rows) => rows,
            Err(e) if !found.is_empty() => {
                tracing::warn!(error = %e, "claiming due deliveries failed after some were claimed");
                break;
            }
            Err(e) => return Err(e),
        };
        let mut taken = vec![0usize; round.len()];
        for row in &rows {
            let endpoint_id = rows::get::<&str>(row, 1)?;
            if let Some(i) = ids.iter().position(|id| *id == endpoint_id) {
                taken[i] += 1;
            }
        }
        fair.took(&taken);
        found.extend(rows);
    }
    let (msg_at, ep_at) = (rows::DELIVERY_NCOLS, rows::DELIVERY_NCOLS + rows::MESSAGE_NCOLS);
    let mut messages: HashMap<String, Arc<Message>> = HashMap::new();
    let mut endpoints: HashMap<String, Arc<Endpoint>> = HashMap::new();
    let mut jobs = Vec::with_capacity(found.len());
    let mut orphans: (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    for row in &found {
        let mut delivery = rows::delivery(row, 0)?;
        // Pending, leased until its lease's end (as stored, to the millisecond): the lease
        // its attempt's outcome names.
        delivery.next_attempt_at = Some(rows::time(ms(lease_end)));
        let has_message = rows::get::<Option<&str>>(row, msg_at)?.is_some();
        let has_endpoint = rows::get::<Option<&str>>(row, ep_at)?.is_some();
        if !(has_message && has_endpoint) {
            // Endpoint or message deleted under us: nothing to send, drop the row.
            orphans.0.push(delivery.msg_id);
            orphans.1.push(delivery.endpoint_id);
            continue;
        }
        let message = match messages.get(&delivery.msg_id) {
            Some(m) => m.clone(),
            None => {
                let m = Arc::new(rows::message(row, msg_at)?);
                messages.insert(delivery.msg_id.clone(), m.clone());
                m
            }
        };
        let endpoint = match endpoints.get(&delivery.endpoint_id) {
            Some(e) => e.clone(),
            None => {
                let e = Arc::new(rows::endpoint(row, ep_at)?);
                endpoints.insert(delivery.endpoint_id.clone(), e.clone());
                e
            }
        };
        jobs.push(Job { delivery, message, endpoint });
    }
    if !orphans.0.is_empty() {
        // The claim has committed: failing here would strand the claimed jobs until their
        // lease ends. The orphans stay leased instead, and the next claim after the lease
        // finds and deletes them again.
        let deleted = execute(
            c,
            "DELETE FROM deliveries d USING UNNEST($1::text[], $2::text[]) AS k(msg_id, endpoint_id) \
             WHERE d.msg_id = k.msg_id AND d.endpoint_id = k.endpoint_id",
            &[&orphans.0, &orphans.1],
        )
        .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, count = orphans.0.len(), "cannot delete deliveries of deleted messages or endpoints");
        }
    }
    Ok(jobs)
}

pub async fn next_due_at<C: GenericClient>(c: &C, skip_endpoints: &[String]) -> StoreResult<Option<DateTime<Utc>>> {
    let pending = pending_endpoints(c, skip_endpoints, None).await?;
    Ok(pending.into_iter().map(|(_, due, ..)| due).min().map(rows::time))
}

/// Records a batch of outcomes with a fixed number of statements, whatever the batch size
/// (one round trip per statement, not per attempt); to run inside a transaction. The end
/// state is the one recording the outcomes one by one, in order, would leave, but that a
/// failure followed by a success of its endpoint in the batch disables nothing (the streak
/// ends at the success; SQLite's record does the same). Returns the
/// endpoints this disabled, the deliveries it set aside, and the FIFO lanes it moved on
/// (for [`lanes::settle`]).
pub async fn record_attempts<C: GenericClient>(
    c: &C,
    outcomes: &[AttemptOutcome],
    disable_after: Duration,
) -> StoreResult<(Recorded, Vec<(String, String)>)> {
    // The deliveries first, their rows locked, then the attempts (see `attempts_insert_sql`).
    let deliveries = DeliveryColumns::new(outcomes);
    let now = latest_attempt(outcomes);
    let mut params: Vec<&(dyn ToSql + Sync)> = deliveries.params().to_vec();
    params.push(&now);
    let (moved, set_aside) = lanes_and_set_aside(&query(c, &UPDATE_DELIVERIES, &params).await?)?;
    let attempts = AttemptColumns::new(outcomes);
    execute(c, &INSERT_ATTEMPTS, &attempts.params()).await?;
    let disabled = update_endpoint_streaks(c, outcomes, disable_after).await?;
    Ok((Recorded { disabled, set_aside }, moved))
}

/// Records a batch in which every attempt succeeded, in one statement (its own transaction):
/// the attempts, their deliveries, and the end of their endpoints' failure streaks. A
/// healthy system records almost only such batches; one round trip instead of the five of
/// [`record_attempts`] in a transaction cut the database's CPU per message (BENCHMARKS.md).
/// Returns the FIFO lanes it moved on, and the deliveries it set aside.
pub async fn record_successes<C: GenericClient>(c: &C, outcomes: &[AttemptOutcome]) -> StoreResult<LanesAndSetAside> {
    let attempts = AttemptColumns::new(outcomes);
    let deliveries = DeliveryColumns::new(outcomes);
    let now = latest_attempt(outcomes);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(ATTEMPT_PARAMS + DELIVERY_PARAMS + 1);
    params.extend(attempts.params());
    params.extend(deliveries.params());
    params.push(&now);
    lanes_and_set_aside(&query(c, &RECORD_SUCCESSES, &params).await?)
}

/// The end of a statement recording outcomes, after its deliveries' update `d`: one row per
/// FIFO lane a finished row left (`lane`, endpoint, lane key, as
/// [`lanes::select_finished_lanes`] gives them), and one per delivery of `outcomes` (a
/// relation `o(msg_id, endpoint_id)`) that `d` left alone (`aside`, message, endpoint):
/// queued again while its attempt was on the wire, or gone. Usually none of the latter.
fn select_lanes_and_set_aside(outcomes: &str) -> String {
    format!(
        "SELECT 'lane' AS kind, l.* FROM ({}) l \
         UNION ALL SELECT DISTINCT 'aside', o.msg_id, o.endpoint_id FROM {outcomes} \
         WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.msg_id = o.msg_id AND d.endpoint_id = o.endpoint_id)",
        lanes::select_finished_lanes("d")
    )
}

/// The FIFO lanes a statement recording outcomes moved on (endpoint, lane key), and the
/// deliveries it set aside.
type LanesAndSetAside = (Vec<(String, String)>, Vec<DeliveryKey>);

/// The rows of [`select_lanes_and_set_aside`].
fn lanes_and_set_aside(rows: &[tokio_postgres::Row]) -> StoreResult<LanesAndSetAside> {
    let (mut lanes, mut set_aside) = (Vec::new(), Vec::new());
    for r in rows {
        let (kind, a, b): (String, String, String) = (rows::get(r, 0)?, rows::get(r, 1)?, rows::get(r, 2)?);
        if kind == "lane" {
            lanes.push((a, b));
        } else {
            set_aside.push(DeliveryKey { msg_id: a, endpoint_id: b });
        }
    }
    Ok((lanes, set_aside))
}

/// When the last attempt of a batch was made: the time a lane it moves on is due again.
fn latest_attempt(outcomes: &[AttemptOutcome]) -> i64 {
    outcomes.iter().map(|o| ms(o.attempt.created_at)).max().unwrap_or_else(|| ms(Utc::now()))
}

/// The statement of [`record_successes`]. The endpoints' update reads the deliveries'
/// update, so it runs after it: rows are locked deliveries first, then endpoints, as in
/// [`record_attempts`] (data-modifying CTEs nobody reads run in no set order). It ends the
/// streaks of the attempts' endpoints, also of those whose delivery the update left alone
/// (queued again meanwhile): the attempt succeeded all the same.
pub(super) static RECORD_SUCCESSES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH d AS ({} {FINISHED}), a AS ({} RETURNING msg_id, endpoint_id), {}, streaks AS ( \
             UPDATE endpoints SET failing_since = NULL \
             WHERE id IN (SELECT endpoint_id FROM d UNION SELECT endpoint_id FROM a) \
             AND failing_since IS NOT NULL \
         ) {}",
        deliveries_update_sql(1 + ATTEMPT_PARAMS),
        attempts_insert_sql(1, Some("d")),
        lanes::advance_cte("d", &format!("${}::bigint", 1 + ATTEMPT_PARAMS + DELIVERY_PARAMS)),
        // Every outcome's delivery (the deliveries' keys): one whose attempt was not kept
        // (its endpoint or message gone) is set aside too.
        select_lanes_and_set_aside(&format!(
            "UNNEST(${}::text[], ${}::text[]) AS o(msg_id, endpoint_id)",
            1 + ATTEMPT_PARAMS,
            2 + ATTEMPT_PARAMS
        )),
    )
});

/// PostgreSQL text cannot hold NUL, which a receiver's response body might contain.
fn no_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_string()
    }
}

const ATTEMPT_PARAMS: usize = 12;
const DELIVERY_PARAMS: usize = 7;

static INSERT_ATTEMPTS: LazyLock<String> = LazyLock::new(|| attempts_insert_sql(1, None));
/// The deliveries' update of [`record_attempts`], which also moves FIFO lanes on (the time
/// now is the last parameter).
pub(super) static UPDATE_DELIVERIES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH d AS ({} {FINISHED}), {} {}",
        deliveries_update_sql(1),
        lanes::advance_cte("d", &format!("${}::bigint", DELIVERY_PARAMS + 1)),
        select_lanes_and_set_aside("UNNEST($1::text[], $2::text[]) AS o(msg_id, endpoint_id)"),
    )
});

/// What an update of deliveries returns for [`lanes::advance_cte`].
const FINISHED: &str = "RETURNING d.msg_id, d.endpoint_id, d.status, d.lane_seq, d.lane_key";

/// `$first`, `$first+1`, … as the statement's parameter names.
fn numbered(first: usize, sql: &str) -> String {
    let mut out = sql.to_string();
    // Highest first, so `$1` does not also rewrite the start of `$12`.
    for n in (1..=ATTEMPT_PARAMS.max(DELIVERY_PARAMS)).rev() {
        out = out.replace(&format!("${n}:"), &format!("${}::", first + n - 1));
    }
    out
}

/// The attempts of deliveries that still exist: one deleted while its request was on the
/// wire (with its endpoint, its application, or its message by retention) leaves no attempt
/// behind it, which nothing would delete (its response body and request headers among
/// them). The delivery's row is locked (by the deliveries' update, run first: `updated`,
/// the relation of the rows the same statement updated, when there is one, as PostgreSQL
/// does not lock a row again that its own statement changed; else here): a delete of its
/// endpoint, application or message deletes the row, then the attempts, so either it waits
/// for this transaction and deletes its attempts, or this one waits for it and finds the row
/// gone. (Without the lock, an attempt inserted while the delete ran, unseen by its
/// statement, outlived it.)
fn attempts_insert_sql(first: usize, updated: Option<&str>) -> String {
    let updated = updated.map_or(String::new(), |d| {
        format!(
            "EXISTS (SELECT 1 FROM {d} WHERE {d}.msg_id = given.msg_id AND {d}.endpoint_id = given.endpoint_id) OR "
        )
    });
    numbered(
        first,
        &format!(
            "INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, response_status, response, \
             duration_ms, trigger_type, created_at, request_headers) \
             SELECT given.* FROM UNNEST($1:text[], $2:text[], $3:text[], $4:text[], $5:text[], $6:int[], $7:int[], \
             $8:text[], $9:bigint[], $10:int[], $11:bigint[], $12:text[]) \
             AS given(id, msg_id, endpoint_id, app_id, url, status, response_status, response, duration_ms, \
             trigger_type, created_at, request_headers) \
             WHERE {updated}EXISTS (SELECT 1 FROM deliveries k WHERE k.msg_id = given.msg_id \
             AND k.endpoint_id = given.endpoint_id FOR KEY SHARE)"
        ),
    )
}

/// One row per delivery: its last outcome in the batch decides its state, and every
/// attempt in the batch counts. A retry does not bring back a delivery failed while its
/// attempt was under way (its message's content was deleted meanwhile): it stays failed.
/// A delivery pending and no longer leased was queued again while its attempt was under
/// way (a resend), and one leased under another lease than the attempt's, or finished
/// (succeeded, cancelled), was taken by another claim since (the attempt's ran out): each
/// is left as it is (`Store::record_attempts`).
fn deliveries_update_sql(first: usize) -> String {
    numbered(
        first,
        "UPDATE deliveries d SET status = CASE WHEN k.status = 1 AND d.status = 2 THEN 2 ELSE k.status END, \
         attempts = d.attempts + k.n, due_at = CASE WHEN k.status = 1 AND d.status = 2 THEN NULL ELSE k.due END, \
         leased = false, updated_at = k.at \
         FROM UNNEST($1:text[], $2:text[], $3:int[], $4:int[], $5:bigint[], $6:bigint[], $7:bigint[]) \
         AS k(msg_id, endpoint_id, n, status, due, at, lease) \
         WHERE d.msg_id = k.msg_id AND d.endpoint_id = k.endpoint_id AND NOT (d.status = 1 AND NOT d.leased) \
         AND NOT (k.lease IS NOT NULL AND ((d.status = 1 AND d.leased AND d.due_at IS DISTINCT FROM k.lease) \
                  OR d.status IN (0, 4)))",
    )
}

/// A success ends its endpoint's failure streak.
fn streak_clear_sql(first: usize) -> String {
    numbered(first, "UPDATE endpoints SET failing_since = NULL WHERE id = ANY($1:text[]) AND failing_since IS NOT NULL")
}

/// The attempts of a batch as one array per column.
struct AttemptColumns {
    text: [Vec<String>; 6],
    statuses: Vec<i32>,
    codes: Vec<i32>,
    durations: Vec<i64>,
    triggers: Vec<i32>,
    times: Vec<i64>,
    headers: Vec<Option<String>>,
}

impl AttemptColumns {
    fn new(outcomes: &[AttemptOutcome]) -> Self {
        // In the deliveries' order (`DeliveryColumns`): the insert locks their rows in it.
        let mut sorted: Vec<&AttemptOutcome> = outcomes.iter().collect();
        sorted.sort_by(|a, b| {
            (a.attempt.msg_id.as_str(), a.attempt.endpoint_id.as_str())
                .cmp(&(b.attempt.msg_id.as_str(), b.attempt.endpoint_id.as_str()))
        });
        let outcomes = sorted;
        let a = |f: &dyn Fn(&Attempt) -> String| outcomes.iter().map(|o| f(&o.attempt)).collect::<Vec<String>>();
        let ints = |f: fn(&Attempt) -> i32| outcomes.iter().map(|o| f(&o.attempt)).collect::<Vec<i32>>();
        let longs = |f: fn(&Attempt) -> i64| outcomes.iter().map(|o| f(&o.attempt)).collect::<Vec<i64>>();
        AttemptColumns {
            text: [
                a(&|a| a.id.clone()),
                a(&|a| a.msg_id.clone()),
                a(&|a| a.endpoint_id.clone()),
                a(&|a| a.app_id.clone()),
                a(&|a| a.url.clone()),
                a(&|a| no_nul(&a.response)),
            ],
            statuses: ints(|a| a.status as i32),
            codes: ints(|a| a.response_status),
            durations: longs(|a| a.duration_ms),
            triggers: ints(|a| a.trigger as i32),
            times: longs(|a| ms(a.created_at)),
            headers: outcomes.iter().map(|o| opt_json(&o.attempt.request_headers).map(|h| no_nul(&h))).collect(),
        }
    }

    /// In the order of [`attempts_insert_sql`].
    fn params(&self) -> [&(dyn ToSql + Sync); ATTEMPT_PARAMS] {
        let [ids, msgs, eps, apps, urls, responses] = &self.text;
        [
            ids,
            msgs,
            eps,
            apps,
            urls,
            &self.statuses,
            &self.codes,
            responses,
            &self.durations,
            &self.triggers,
            &self.times,
            &self.headers,
        ]
    }
}

/// The deliveries of a batch, one row each, as one array per column.
struct DeliveryColumns<'a> {
    msgs: Vec<&'a str>,
    eps: Vec<&'a str>,
    counts: Vec<i32>,
    statuses: Vec<i32>,
    dues: Vec<Option<i64>>,
    times: Vec<i64>,
    leases: Vec<Option<i64>>,
}

impl<'a> DeliveryColumns<'a> {
    fn new(outcomes: &'a [AttemptOutcome]) -> Self {
        let mut last: HashMap<(&str, &str), (usize, &AttemptOutcome)> = HashMap::new();
        for o in outcomes {
            let entry = last.entry((o.attempt.msg_id.as_str(), o.attempt.endpoint_id.as_str())).or_insert((0, o));
            *entry = (entry.0 + 1, o);
        }
        let mut rows: Vec<_> = last.into_iter().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0)); // a stable lock order across nodes
        let mut cols = DeliveryColumns {
            msgs: Vec::with_capacity(rows.len()),
            eps: Vec::with_capacity(rows.len()),
            counts: Vec::with_capacity(rows.len()),
            statuses: Vec::with_capacity(rows.len()),
            dues: Vec::with_capacity(rows.len()),
            times: Vec::with_capacity(rows.len()),
            leases: Vec::with_capacity(rows.len()),
        };
        for ((msg, ep), (n, o)) in rows {
            let (status, due): (i32, Option<i64>) = match o.next {
                NextStep::Succeeded => (0, None),
                NextStep::Cancelled => (4, None),
                NextStep::RetryAt(t) => (1, Some(ms(t))),
                NextStep::GiveUp => (2, None),
            };
            cols.msgs.push(msg);
            cols.eps.push(ep);
            cols.counts.push(n as i32);
            cols.statuses.push(status);
            cols.dues.push(due);
            cols.times.push(ms(o.attempt.created_at));
            cols.leases.push(o.lease.map(ms));
        }
        cols
    }

    /// In the order of [`deliveries_update_sql`].
    fn params(&self) -> [&(dyn ToSql + Sync); DELIVERY_PARAMS] {
        [&self.msgs, &self.eps, &self.counts, &self.statuses, &self.dues, &self.times, &self.leases]
    }
}

/// No attempt of endpoint `k.id` for `$4` ms before attempt `{attempt}` made at `{at}` (by
/// the attempts' time-ordered ids; a cancelled one aside).
fn quiet_before(attempt: &str, at: &str) -> String {
    format!(
        "COALESCE((SELECT a.created_at FROM attempts a WHERE a.endpoint_id = k.id AND a.id < {attempt} \
         AND a.status <> 4 ORDER BY a.id DESC LIMIT 1), 0) < {at} - $4::BIGINT"
    )
}

/// Failure streaks and automatic disabling, per endpoint, as the outcomes in order imply:
/// a success ends the streak; the first failure after it (or the first failure at all,
/// when the streak was not already running) starts one; an endpoint whose streak is older
/// than `disable_after` at its last failure is disabled.
async fn update_endpoint_streaks<C: GenericClient>(
    c: &C,
    outcomes: &[AttemptOutcome],
    disable_after: Duration,
) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
    #[derive(Default)]
    struct Streak<'a> {
        succeeded: bool,
        first_failure_after_success: Option<i64>,
        /// The earliest of those failures by attempt id (ids are time-ordered), and its time.
        first_failure_id: Option<(&'a str, i64)>,
        last_failure: Option<i64>,
    }
    // Those whose receivers asked for it first: disabled whatever their streaks.
    let mut asked: Vec<&str> =
        outcomes.iter().filter(|o| o.disable_endpoint).map(|o| o.attempt.endpoint_id.as_str()).collect();
    let mut disabled = Vec::new();
    if !asked.is_empty() {
        asked.sort_unstable();
        asked.dedup();
        let now = outcomes.iter().map(|o| ms(o.attempt.created_at)).max().unwrap_or_default();
        let rows = query(
            c,
            "UPDATE endpoints SET disabled = true, updated_at = GREATEST(updated_at + 1, $2) \
             WHERE id = ANY($1) AND NOT disabled RETURNING id, updated_at",
            &[&asked, &now],
        )
        .await?;
        for r in &rows {
            disabled.push((rows::get::<String>(r, 0)?, rows::time(rows::get::<i64>(r, 1)?)));
        }
    }
    // Untried failures are nothing of their endpoints', but still no attempt of them: a
    // streak gone quiet for a day before one ends there, as it would have at its next
    // failure, which the untried record must not make look recent. (First, so that a
    // failure after it in this batch starts a streak afresh.)
    let untried: Vec<&AttemptOutcome> = outcomes.iter().filter(|o| o.untried).collect();
    if !untried.is_empty() {
        let ids: Vec<&str> = untried.iter().map(|o| o.attempt.endpoint_id.as_str()).collect();
        let attempts: Vec<&str> = untried.iter().map(|o| o.attempt.id.as_str()).collect();
        let times: Vec<i64> = untried.iter().map(|o| ms(o.attempt.created_at)).collect();
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE endpoints e SET failing_since = NULL \
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS k(id, attempt_id, at) \
                 WHERE e.id = k.id AND NOT e.disabled AND e.failing_since <= k.at - $4::BIGINT AND {}",
                quiet_before("k.attempt_id", "k.at")
            )
        });
        execute(c, &SQL, &[&ids, &attempts, &times, &crate::queries_shared::QUIET_GAP_MS]).await?;
    }
    let mut per_endpoint: std::collections::BTreeMap<&str, Streak> = std::collections::BTreeMap::new();
    for o in outcomes {
        if o.next == NextStep::Cancelled || o.untried {
            continue; // nothing was sent: no news of the endpoint
        }
        let s = per_endpoint.entry(o.attempt.endpoint_id.as_str()).or_default();
        let at = ms(o.attempt.created_at);
        if o.next == NextStep::Succeeded {
            s.succeeded = true;
            s.first_failure_after_success = None;
            s.first_failure_id = None;
            s.last_failure = None;
        } else {
            s.first_failure_after_success.get_or_insert(at);
            let id = o.attempt.id.as_str();
            if s.first_failure_id.is_none_or(|(f, _)| id < f) {
                s.first_failure_id = Some((id, at));
            }
            s.last_failure = Some(at);
        }
    }
    let (mut cleared, mut restarted, mut restarted_at, mut continued, mut continued_at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut failing, mut failing_before, mut failing_last) = (Vec::new(), Vec::new(), Vec::new());
    let (mut failing_first, mut failing_first_id) = (Vec::new(), Vec::new());
    for (id, s) in &per_endpoint {
        match (s.succeeded, s.first_failure_after_success) {
            (true, None) => cleared.push(*id),
            (true, Some(t)) => {
                restarted.push(*id);
                restarted_at.push(t);
            }
            (false, Some(t)) => {
                continued.push(*id);
                continued_at.push(t);
            }
            (false, None) => {}
        }
        if let (Some(last), Some((first_id, first))) = (s.last_failure, s.first_failure_id) {
            failing.push(*id);
            failing_before.push(ms(ago(rows::time(last), disable_after)));
            failing_last.push(last);
            failing_first.push(first);
            failing_first_id.push(first_id);
        }
    }
    if !cleared.is_empty() {
        static CLEAR: LazyLock<String> = LazyLock::new(|| streak_clear_sql(1));
        execute(c, &CLEAR, &[&cleared]).await?;
    }
    if !restarted.is_empty() {
        execute(
            c,
            "UPDATE endpoints e SET failing_since = k.t FROM UNNEST($1::text[], $2::bigint[]) AS k(id, t) WHERE e.id = k.id",
            &[&restarted, &restarted_at],
        )
        .await?;
    }
    if !continued.is_empty() {
        execute(
            c,
            "UPDATE endpoints e SET failing_since = k.t FROM UNNEST($1::text[], $2::bigint[]) AS k(id, t) \
             WHERE e.id = k.id AND e.failing_since IS NULL",
            &[&continued, &continued_at],
        )
        .await?;
    }
    if failing.is_empty() {
        return Ok(disabled);
    }
    // A streak a day old or more, but no attempt for a day before these failures (its
    // attempt before the first of them by the attempts' time-ordered ids, a cancelled one
    // aside): the streak starts afresh, as after a success.
    static RESTART: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE endpoints e SET failing_since = k.first \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS k(id, first, first_id) \
             WHERE e.id = k.id AND NOT e.disabled AND e.failing_since <= k.first - $4::BIGINT AND {}",
            quiet_before("k.first_id", "k.first")
        )
    });
    execute(c, &RESTART, &[&failing, &failing_first, &failing_first_id, &crate::queries_shared::QUIET_GAP_MS]).await?;
    let by_streak = query(
        c,
        "UPDATE endpoints e SET disabled = true, updated_at = GREATEST(e.updated_at + 1, k.last) \
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS k(id, before, last) \
         WHERE e.id = k.id AND NOT e.disabled AND e.failing_since <= k.before RETURNING e.id, e.updated_at",
        &[&failing, &failing_before, &failing_last],
    )
    .await?;
    for r in &by_streak {
        disabled.push((rows::get::<String>(r, 0)?, rows::time(rows::get::<i64>(r, 1)?)));
    }
    Ok(disabled)
}

/// The keys' columns with their leases' ends (`None`: not checked), for `UNNEST`.
fn claimed_columns(keys: &[ClaimedKey]) -> (Vec<&str>, Vec<&str>, Vec<Option<i64>>) {
    let mut cols = (Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()));
    for k in keys {
        cols.0.push(k.key.msg_id.as_str());
        cols.1.push(k.key.endpoint_id.as_str());
        cols.2.push(k.lease.map(ms));
    }
    cols
}

/// Of a pending delivery `d` matched with `k`: still leased under `k.lease`, when given.
const UNDER_LEASE: &str = "(k.lease IS NULL OR (d.leased AND d.due_at = k.lease))";

/// Fails the pending ones among `keys` without an attempt (those still under their lease,
/// when given); one statement. Returns the FIFO lanes it moved on.
pub async fn abandon_deliveries<C: GenericClient>(
    c: &C,
    keys: &[ClaimedKey],
    now: i64,
) -> StoreResult<Vec<(String, String)>> {
    // Only a pending delivery can be abandoned: one that already finished keeps its outcome.
    let (msgs, eps, leases) = claimed_columns(keys);
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH d AS (UPDATE deliveries d SET status = 2, due_at = NULL, leased = false, updated_at = $3 \
             FROM UNNEST($1::text[], $2::text[], $4::bigint[]) AS k(msg_id, endpoint_id, lease) \
             WHERE d.msg_id = k.msg_id AND d.endpoint_id = k.endpoint_id AND d.status = 1 AND {UNDER_LEASE} \
             {FINISHED}), {} {}",
            lanes::advance_cte("d", "$3"),
            lanes::select_finished_lanes("d"),
        )
    });
    lanes::finished_lanes(&query(c, &SQL, &[&msgs, &eps, &now, &leases]).await?)
}

/// Hands the pending ones among `keys` back (those still under their lease, when given),
/// due at `due`; one statement.
pub async fn defer_deliveries<C: GenericClient>(c: &C, keys: &[ClaimedKey], due: i64) -> StoreResult<()> {
    let (msgs, eps, leases) = claimed_columns(keys);
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE deliveries d SET due_at = $3, leased = false \
             FROM UNNEST($1::text[], $2::text[], $4::bigint[]) AS k(msg_id, endpoint_id, lease) \
             WHERE d.msg_id = k.msg_id AND d.endpoint_id = k.endpoint_id AND d.status = 1 AND {UNDER_LEASE}"
        )
    });
    execute(c, &SQL, &[&msgs, &eps, &due, &leases]).await?;
    Ok(())
}

/// See [`crate::Store::hasten_deliveries`].
pub async fn hasten_deliveries<C: GenericClient>(c: &C, endpoint_id: &str, until: i64, now: i64) -> StoreResult<u64> {
    execute(
        c,
        "UPDATE deliveries SET due_at = $3 \
         WHERE endpoint_id = $1 AND status = 1 AND NOT leased AND due_at > $3 AND due_at <= $2 \
         AND (not_before IS NULL OR not_before <= $3)",
        &[&endpoint_id, &until, &now],
    )
    .await
}

/// See [`crate::Store::undefer_deliveries`].
pub async fn undefer_deliveries<C: GenericClient>(c: &C, endpoint_id: &str, due: &[i64], now: i64) -> StoreResult<u64> {
    execute(
        c,
        "UPDATE deliveries SET due_at = $3 \
         WHERE endpoint_id = $1 AND status = 1 AND NOT leased AND due_at = ANY($2::bigint[])",
        &[&endpoint_id, &due, &now],
    )
    .await
}

/// Queues the message for the endpoint again, both of which must belong to the app; one
/// statement.
pub async fn resend<C: GenericClient>(
    c: &C,
    app_id: &str,
    msg_id: &str,
    endpoint_id: &str,
    now: i64,
) -> StoreResult<()> {
    let n = execute(
        c,
        &format!(
            "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, leased, trigger_type, \
                 updated_at, lane_seq, lane_key) \
             SELECT $1::text, $2::text, $3::text, 1, 0, $4::bigint, false, 1, $4::bigint, {}, {} \
             WHERE EXISTS (SELECT 1 FROM messages WHERE app_id = $3 AND id = $1 AND NOT expunged FOR SHARE) \
               AND EXISTS (SELECT 1 FROM endpoints WHERE app_id = $3 AND id = $2) \
             ON CONFLICT (msg_id, endpoint_id) DO UPDATE SET status = 1, attempts = 0, \
                 due_at = CASE WHEN {in_flight} THEN deliveries.due_at + 1 ELSE EXCLUDED.due_at END, \
                 leased = {in_flight}, trigger_type = 1, updated_at = EXCLUDED.updated_at, \
                 lane_seq = EXCLUDED.lane_seq, lane_key = EXCLUDED.lane_key, not_before = NULL",
            lane_seq_sql("$2::text", "$1::text"),
            lane_key_sql("$1::text"),
            // A lane's delivery being sent right now is not sent a second time beside it,
            // but once that lease has ended: its lease moves on by a millisecond, so the
            // attempt on the wire is set aside (see `sqlite::queries::resend`).
            in_flight = "(deliveries.lane_seq IS NOT NULL AND deliveries.leased AND deliveries.due_at > $4::bigint)",
        ),
        &[&msg_id, &endpoint_id, &app_id, &now],
    )
    .await?;
    if n == 0 {
        // Nothing queued: tell a deleted content from a missing message or endpoint.
        let expunged =
            query_opt(c, "SELECT 1 FROM messages WHERE app_id = $1 AND id = $2 AND expunged", &[&app_id, &msg_id])
                .await?;
        if expunged.is_some() {
            return Err(StoreError::Conflict(EXPUNGED.into()));
        }
    }
    one_row(n)
}

/// See `Store::expunge_message_content`. Returns the FIFO lanes it moved on: not those of
/// deliveries being sent right now, which move their lane on when their attempt is recorded
/// (the next one of the lane must not go while this one is still on the wire).
pub async fn expunge_message_content<C: GenericClient>(
    c: &C,
    app_id: &str,
    msg_id: &str,
    now: i64,
) -> StoreResult<Vec<(String, String)>> {
    one_row(
        execute(
            c,
            "UPDATE messages SET payload = '{}', headers = NULL, content_type = NULL, expunged = true \
             WHERE app_id = $1 AND id = $2",
            &[&app_id, &msg_id],
        )
        .await?,
    )?;
    // The request an inbound source took it from (and its duplicates) held it too.
    execute(c, "UPDATE inbound_requests SET body = ''::bytea, headers = '{}' WHERE msg_id = $1", &[&msg_id]).await?;
    // (`held`: the lanes of the deliveries on the wire hold their new head until that lease
    // ends, as `sqlite::lanes::hold_head` does; this statement's snapshot still reads those
    // deliveries as in flight, so the head it picks is the one after them.)
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH flying AS ( \
                 SELECT endpoint_id, lane_key, lane_seq, due_at FROM deliveries WHERE app_id = $1 AND msg_id = $2 \
                 AND status = 1 AND leased AND due_at > $3 \
             ), d AS (UPDATE deliveries d SET status = 2, due_at = NULL, leased = false, updated_at = $3 \
             WHERE d.app_id = $1 AND d.msg_id = $2 AND d.status = 1 {FINISHED}), \
             held AS ( \
                 UPDATE deliveries w SET due_at = GREATEST(COALESCE(w.due_at, 0), h.until), leased = false FROM ( \
                     SELECT nx.ctid, fl.due_at AS until FROM flying fl CROSS JOIN LATERAL ( \
                         SELECT x.ctid FROM deliveries x \
                         WHERE x.endpoint_id = fl.endpoint_id AND x.lane_key = fl.lane_key AND x.status = 1 \
                           AND x.lane_seq IS NOT NULL AND NOT (x.leased AND x.due_at > $3) \
                         ORDER BY x.lane_seq LIMIT 1 \
                     ) nx WHERE fl.lane_seq IS NOT NULL \
                 ) h WHERE w.ctid = h.ctid AND w.status = 1 AND NOT w.leased \
             ), \
             f AS (SELECT * FROM d WHERE endpoint_id NOT IN (SELECT endpoint_id FROM flying)), {} {}",
            lanes::advance_cte("f", "$3"),
            lanes::select_finished_lanes("f"),
        )
    });
    lanes::finished_lanes(&query(c, &SQL, &[&app_id, &msg_id, &now]).await?)
}

/// The planner settings of a recovery round's transaction: its endpoint's failed deliveries
/// walked in message order through `deliveries_by_endpoint_msg` from where the last round
/// stopped, to the round's end (`LIMIT`). A generic plan made from average statistics may
/// read every one left and sort them (a bitmap scan), or walk every application's messages;
/// at every round, a recovery of a million failures read half a billion rows.
pub const RECOVERY_PLANNER: &str = "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off";

pub async fn recover<C: GenericClient>(
    c: &C,
    app_id: &str,
    endpoint_id: &str,
    (since, until): (i64, i64),
    now: i64,
    (after, limit): (&str, usize),
) -> StoreResult<(u64, Option<String>)> {
    let recoverable = RECOVERABLE.replace('?', "$");
    let [due, lane, not_before] = queued_again_sql("$2", "deliveries.msg_id", "$5::bigint");
    // The next round goes on after the last delivery selected, queued or not: one changed
    // by another transaction meanwhile fails the update's own status test, and a round
    // whose every selected delivery did so must not end the recovery. The messages are
    // read under a share lock: an expunge (which holds its message for update) either
    // waits for this round, then fails what it queued, or is seen by it (read again once
    // it commits) and nothing of its message is queued to go out as `{}`.
    let row = query_opt(
        c,
        &format!(
            "WITH picked AS ({recoverable} LIMIT $7 FOR SHARE OF m), \
             queued AS (UPDATE deliveries SET status = 1, attempts = 0, due_at = {due}, leased = false, trigger_type = 1, \
             updated_at = $5, lane_seq = {lane}, lane_key = {key}, not_before = {not_before} \
             WHERE app_id = $1 AND endpoint_id = $2 AND status = 2 AND msg_id IN (SELECT msg_id FROM picked) \
             RETURNING msg_id) \
             SELECT (SELECT count(*) FROM queued), (SELECT count(*) FROM picked), (SELECT max(msg_id) FROM picked)",
            key = lane_key_sql("deliveries.msg_id")
        ),
        &[&app_id, &endpoint_id, &since, &until, &now, &after, &limit_param(limit)],
    )
    .await?
    .ok_or_else(|| StoreError::Corrupt("a recovery round answered no row".into()))?;
    let (queued, picked, last): (i64, i64, Option<String>) =
        (rows::get(&row, 0)?, rows::get(&row, 1)?, rows::get(&row, 2)?);
    let more = usize::try_from(picked).is_ok_and(|p| p == limit);
    Ok((u64::try_from(queued).unwrap_or(0), last.filter(|_| more)))
}

pub async fn messages_without_delivery<C: GenericClient>(
    c: &C,
    app_id: &str,
    endpoint_id: &str,
    (since, until): (i64, i64),
    (after_id, limit, with_payload): (&str, usize, bool),
) -> StoreResult<Vec<Message>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {} FROM messages WHERE app_id = $1 AND id > $2 AND created_at >= $3 AND created_at < $4 \
             AND NOT expunged AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.endpoint_id = $5) \
             ORDER BY id LIMIT $6",
            crate::queries_shared::message_cols_payload_if(rows::MESSAGE_COLS, "$7")
        )
    });
    query(c, &SQL, &[&app_id, &after_id, &since, &until, &endpoint_id, &limit_param(limit), &with_payload])
        .await?
        .iter()
        .map(|r| rows::message(r, 0))
        .collect()
}

/// One statement for the whole list: the messages must be the application's, as must the
/// endpoint; those with a delivery to it already are left as they are.
pub async fn add_deliveries<C: GenericClient>(
    c: &C,
    app_id: &str,
    endpoint_id: &str,
    msg_ids: &[String],
    now: i64,
) -> StoreResult<u64> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let [due, lane, not_before] = queued_again_sql("$2", "m.id", "$4::bigint");
        format!(
            "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, leased, trigger_type, \
                 updated_at, lane_seq, lane_key, not_before) \
             SELECT m.id, $2::text, $3::text, 1, 0, {due}, false, 1, $4::bigint, {lane}, COALESCE(m.ordering_key, ''), \
                 {not_before} \
             FROM messages m \
             WHERE m.app_id = $3 AND m.id = ANY($1) AND NOT m.expunged \
               AND EXISTS (SELECT 1 FROM endpoints WHERE app_id = $3 AND id = $2) \
             FOR SHARE OF m \
             ON CONFLICT (msg_id, endpoint_id) DO NOTHING"
        )
    });
    execute(c, &SQL, &[&msg_ids, &endpoint_id, &app_id, &now]).await
}

pub async fn release_all_leases<C: GenericClient>(c: &C, now: i64) -> StoreResult<u64> {
    execute(c, "UPDATE deliveries SET leased = false, due_at = $1 WHERE status = 1 AND leased", &[&now]).await
}

/// The messages with a delivery to the endpoint (in `status`, when given) that pass the
/// filter, each with that delivery.
pub async fn endpoint_messages<C: GenericClient>(
    c: &C,
    app_id: &str,
    endpoint_id: &str,
    f: &MessageFilter,
    status: Option<DeliveryStatus>,
    page: &PageRequest,
) -> StoreResult<Page<(Message, Delivery)>> {
    let q = message_select(app_id, f).and(&endpoint_delivery_sql(status), [text(endpoint_id)]);
    let messages = q.page(c, "id", page, rows::message).await?;
    let ids: Vec<&str> = messages.items.iter().map(|m| m.id.as_str()).collect();
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {} FROM deliveries WHERE app_id = $1 AND endpoint_id = $2 AND msg_id = ANY($3)",
            delivery_cols_seen(rows::DELIVERY_COLS)
        )
    });
    let mut deliveries: HashMap<String, Delivery> = HashMap::new();
    for row in query(c, &SQL, &[&app_id, &endpoint_id, &ids]).await? {
        let d = rows::delivery(&row, 0)?;
        deliveries.insert(d.msg_id.clone(), d);
    }
    let items = messages.items.into_iter().filter_map(|m| deliveries.remove(&m.id).map(|d| (m, d))).collect();
    Ok(Page { items, done: messages.done })
}

pub async fn endpoint_stats<C: GenericClient>(
    c: &C,
    app_id: &str,
    endpoint_id: &str,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> StoreResult<EndpointStats> {
    let (since, until) = (since.map_or(i64::MIN, ms), until.map_or(i64::MAX, ms));
    let groups = query(
        c,
        "SELECT status, leased, COUNT(*) FROM deliveries WHERE app_id = $1 AND endpoint_id = $2 \
         AND updated_at >= $3 AND updated_at < $4 GROUP BY status, leased",
        &[&app_id, &endpoint_id, &since, &until],
    )
    .await?;
    let mut stats = EndpointStats::default();
    for row in &groups {
        let n = rows::get::<i64>(row, 2)?.max(0) as u64;
        stats.add(i64::from(rows::get::<i32>(row, 0)?), rows::get(row, 1)?, n);
    }
    Ok(stats)
}

// --- pulling

/// Up to `q.limit` messages of the application after `q.after`, in stream order: by
/// `(xid, seq)`, the writing transaction's id then the sequence number (see the schema's
/// pulling migration). Only rows written by transactions below the statement's snapshot
/// xmin are read: every transaction below it has finished, so no message can appear there
/// later, and a reader carrying `next` passes over none whatever the order in which
/// concurrent writes commit. The xmin and the rows come from one snapshot (one statement);
/// the lateral join still yields the xmin when no row does. `xid8` values travel as text
/// (the driver has no binary mapping for them).
///
/// The byte budget is kept in SQL: each row carries the running sum of the payload bytes up
/// to it (`octet_length` of a stored value reads its size, not the value), and the join
/// keeps the rows that start below the budget, so the payloads after it are neither read
/// from storage nor sent. (Stopping in Rust would not do: the driver takes every row of a
/// statement off the connection whatever is done with them, and the server reads and sends
/// each payload.)
pub async fn read_message_events<C: GenericClient>(c: &C, app_id: &str, q: &EventsQuery) -> StoreResult<EventsPage> {
    let limit = q.limit.max(1);
    // (Literals, not parameters: `Select` numbers its parameters from the conditions.)
    let (flag, size) = if q.with_content { ("true", "octet_length(payload)") } else { ("false", "0") };
    let cols = crate::queries_shared::message_cols_payload_if(rows::MESSAGE_COLS, flag);
    // Named apart from the columns: `ORDER BY xid` must sort the xid8 column, not its text.
    // (`ROWS`: the sum up to this row, not up to its peers; there are none, but the default
    // frame would make the server look for them.)
    let cols = format!(
        "xid::text AS major, seq AS minor, {cols}, {size}::bigint AS size, \
         SUM({size}) OVER (ORDER BY xid, seq ROWS UNBOUNDED PRECEDING)::bigint AS upto"
    );
    let mut select = Select::new(&cols, "messages")
        .and("app_id = ?", [text(app_id)])
        .and("(xid, seq) > (?::text::xid8, ?)", [text(q.after.major.to_string()), int(q.after.minor)])
        .and("xid < h.xmin", [])
        .and_if(q.since, "created_at > ?", |t| int(ms(t)))
        // Implied by the time (`message_id_floor`), and what makes the read of a recent
        // time find its messages through an index on ids, rather than walk the whole
        // history (or the whole table: the planner, seeing few rows past the time, had
        // chosen a scan and a sort) to look at each one's time.
        .and_if(q.since, "id > ?", |t| text(crate::queries_shared::since_id_floor(t)));
    if let Some(types) = q.event_types.as_ref().filter(|t| !t.is_empty()) {
        select = select.and("event_type = ANY(?)", [Box::new(types.clone()) as Param]);
    }
    if let Some(channels) = q.channels.as_ref().filter(|c| !c.is_empty()) {
        select = select.and("channels && ?::text[]", [Box::new(channels.clone()) as Param]);
    }
    select.params.push(int(limit_param(limit)));
    select.params.push(int(limit_param(q.byte_budget())));
    let sql = format!(
        "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
         SELECT h.xmin::text, EXISTS (SELECT 1 FROM messages WHERE app_id = $1 AND xid >= h.xmin), m.* \
         FROM h LEFT JOIN LATERAL ({} ORDER BY xid, seq LIMIT ${}) m ON m.upto - m.size < ${}",
        select.sql(),
        select.params.len() - 1,
        select.params.len()
    );
    let params: Vec<&(dyn ToSql + Sync)> = select.params.iter().map(|p| p.as_ref() as _).collect();
    let found = query(c, &sql, &params).await?;
    let xid = |row: &Row, idx: usize| -> StoreResult<Option<i64>> {
        let v: Option<&str> = rows::get(row, idx)?;
        v.map(|v| v.parse().map_err(|_| StoreError::Corrupt(format!("column {idx}: transaction id {v}")))).transpose()
    };
    let (mut xmin, mut held_back) = (0, false);
    let mut messages = Vec::with_capacity(found.len());
    for row in &found {
        xmin = xid(row, 0)?.unwrap_or_default();
        held_back = rows::get(row, 1)?;
        if let Some(major) = xid(row, 2)? {
            let position = EventPosition { major, minor: rows::get(row, 3)? };
            messages.push((position, rows::message(row, 4)?));
        }
    }
    // In stream order whatever the plan: the order is the lateral subquery's, which no
    // rule carries to the outer query's rows.
    messages.sort_by_key(|(p, _)| (p.major, p.minor));
    // Every position handed out lies below the snapshot's xmin of its read (or is that
    // xmin), and xmin never goes back in a cluster.
    if q.after.major > xmin {
        return Err(StoreError::PositionAhead(q.after));
    }
    let mut page = EventsPage::new(q, messages, EventPosition { major: xmin, minor: 0 });
    page.held_back = held_back;
    Ok(page)
}

/// The snapshot's xmin as a position: every message below it is readable, every one that
/// becomes readable later lies above it (as a read that finds nothing more answers).
pub async fn message_events_end<C: GenericClient>(c: &C) -> StoreResult<EventPosition> {
    let row = query_opt(c, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text", &[]).await?;
    let row = row.ok_or_else(|| StoreError::Corrupt("no snapshot".into()))?;
    let xmin: &str = rows::get(&row, 0)?;
    let major = xmin.parse().map_err(|_| StoreError::Corrupt(format!("transaction id {xmin}")))?;
    Ok(EventPosition { major, minor: 0 })
}

pub async fn get_events_subscription<C: GenericClient>(
    c: &C,
    app_id: &str,
    id: &str,
) -> StoreResult<Option<EventPosition>> {
    let row =
        query_opt(c, "SELECT major, minor FROM events_subscriptions WHERE app_id = $1 AND id = $2", &[&app_id, &id])
            .await?;
    row.map(|r| Ok(EventPosition { major: rows::get(&r, 0)?, minor: rows::get(&r, 1)? })).transpose()
}

pub async fn events_subscription_read<C: GenericClient>(
    c: &C,
    app_id: &str,
    id: &str,
) -> StoreResult<Option<crate::ReadFrom>> {
    let row = query_opt(
        c,
        "SELECT major, minor, seeks FROM events_subscriptions WHERE app_id = $1 AND id = $2",
        &[&app_id, &id],
    )
    .await?;
    row.map(|r| {
        let position = EventPosition { major: rows::get(&r, 0)?, minor: rows::get(&r, 1)? };
        Ok(crate::ReadFrom { position, seeks: rows::get(&r, 2)? })
    })
    .transpose()
}

/// See [`crate::Store::add_events_subscription`]; in a transaction, whose lock on the
/// application's prefix makes concurrent creations count one after the other. The rows of
/// the application and of the endpoint the name belongs to (`{endpoint_id}/…`) are locked
/// while the position is made: a deletion of either under way is waited for, and its
/// row is then gone; one that comes after waits for this transaction, and its later
/// statement deleting the positions sees this one (both deletions delete the row first).
pub async fn add_events_subscription<C: GenericClient>(
    c: &C,
    app_id: &str,
    id: &str,
    position: EventPosition,
    (prefix, most): (&str, u64),
    now: i64,
) -> StoreResult<bool> {
    query(c, "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7))", &[&app_id, &prefix]).await?;
    execute(
        c,
        "INSERT INTO events_subscriptions (app_id, id, major, minor, updated_at) \
         SELECT $1, $2, $3, $4, $5 WHERE (SELECT COUNT(*) FROM events_subscriptions \
             WHERE app_id = $1 AND left(id, char_length($6)) = $6) < $7 \
         AND EXISTS (SELECT 1 FROM applications WHERE id = $1 FOR KEY SHARE) \
         AND (strpos($2, '/') = 0 OR EXISTS (SELECT 1 FROM endpoints \
             WHERE app_id = $1 AND id = split_part($2, '/', 1) FOR KEY SHARE)) \
         ON CONFLICT (app_id, id) DO NOTHING",
        &[&app_id, &id, &position.major, &position.minor, &now, &prefix, &i64::try_from(most).unwrap_or(i64::MAX)],
    )
    .await?;
    Ok(get_events_subscription(c, app_id, id).await?.is_some())
}

pub async fn count_events_subscriptions<C: GenericClient>(c: &C, app_id: &str, prefix: &str) -> StoreResult<u64> {
    let row = query_opt(
        c,
        "SELECT COUNT(*) FROM events_subscriptions WHERE app_id = $1 AND left(id, char_length($2)) = $2",
        &[&app_id, &prefix],
    )
    .await?;
    Ok(row.map(|r| rows::get::<i64>(&r, 0)).transpose()?.unwrap_or(0).max(0) as u64)
}

pub async fn set_events_subscription<C: GenericClient>(
    c: &C,
    app_id: &str,
    id: &str,
    position: EventPosition,
    read_from: Option<crate::ReadFrom>,
    now: i64,
) -> StoreResult<bool> {
    // With `read_from`, the stored position stays when it is after the new one (a late
    // reader), before where the read started, or was sought since it started; see the
    // trait. Only a position that is there moves: see the trait.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let keep = "$6::bigint IS NOT NULL AND ((s.major, s.minor) > ($3::bigint, $4::bigint) \
                    OR (s.major, s.minor) < ($6::bigint, $7::bigint) OR s.seeks <> $8::bigint)";
        format!(
            "UPDATE events_subscriptions AS s SET \
                 major = CASE WHEN {keep} THEN s.major ELSE $3::bigint END, \
                 minor = CASE WHEN {keep} THEN s.minor ELSE $4::bigint END, \
                 seeks = CASE WHEN $6::bigint IS NULL THEN s.seeks + 1 ELSE s.seeks END, \
                 updated_at = $5 \
             WHERE s.app_id = $1 AND s.id = $2"
        )
    });
    let (from_major, from_minor) = (read_from.map(|r| r.position.major), read_from.map(|r| r.position.minor));
    let seeks = read_from.map(|r| r.seeks);
    let params: [&(dyn ToSql + Sync); 8] =
        [&app_id, &id, &position.major, &position.minor, &now, &from_major, &from_minor, &seeks];
    Ok(execute(c, &SQL, &params).await? > 0)
}

// --- attempts

pub async fn list_attempts<C: GenericClient>(
    c: &C,
    app_id: &str,
    f: &AttemptFilter,
    page: &PageRequest,
) -> StoreResult<Page<Attempt>> {
    let mut q = Select::new(rows::ATTEMPT_COLS, "attempts")
        .and("app_id = ?", [text(app_id)])
        .and_if(f.msg_id.clone(), "msg_id = ?", text)
        .and_if(f.endpoint_id.clone(), "endpoint_id = ?", text)
        .and_if(f.status, "status = ?", |s| Box::new(s as i32))
        .and_if(f.before, "created_at < ?", |t| int(ms(t)))
        .and_if(f.after, "created_at > ?", |t| int(ms(t)))
        // A bound on the id too, which the indexes by endpoint and by message are in: a few
        // recent failures of an endpoint with a long history do not read all of it.
        .and_if(f.after, "id > ?", |t| text(crate::queries_shared::attempt_id_floor(t)))
        .and_if(
            f.event_types.clone().filter(|t| !t.is_empty()),
            "EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.msg_id AND m.event_type = ANY(?))",
            |t| Box::new(t) as Param,
        )
        .and_if(
            f.channel.clone(),
            "EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.msg_id AND ? = ANY(m.channels))",
            text,
        )
        .and_if(
            f.tag.clone(),
            "EXISTS (SELECT 1 FROM messages m WHERE m.id = attempts.msg_id AND ? = ANY(m.tags))",
            text,
        );
    if let Some((low, high)) = f.status_code_range() {
        q = q.and("response_status >= ? AND response_status < ?", [Box::new(low) as Param, Box::new(high)]);
    }
    q.page(c, "id", page, rows::attempt).await
}

pub async fn get_attempt<C: GenericClient>(
    c: &C,
    app_id: &str,
    msg_id: &str,
    attempt_id: &str,
) -> StoreResult<Option<Attempt>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!("SELECT {} FROM attempts WHERE app_id = $1 AND msg_id = $2 AND id = $3", rows::ATTEMPT_COLS)
    });
    query_opt(c, &SQL, &[&app_id, &msg_id, &attempt_id]).await?.map(|r| rows::attempt(&r, 0)).transpose()
}

// --- tokens

pub async fn insert_token<C: GenericClient>(
    c: &C,
    hash: &str,
    holder: &hooklane_core::model::Principal,
    (now, expires_at): (i64, Option<i64>),
    session: Option<&str>,
) -> StoreResult<()> {
    let h = crate::queries_shared::HolderColumns::of(holder);
    execute(
        c,
        "INSERT INTO tokens (hash, app_id, created_at, expires_at, feature_flags, capabilities, endpoint_id, session_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&hash, &h.app_id, &now, &expires_at, &h.feature_flags, &h.capabilities, &h.endpoint_id, &session],
    )
    .await?;
    Ok(())
}

/// Who holds the token, if it is known and not expired at `now`.
pub async fn find_token<C: GenericClient>(
    c: &C,
    hash: &str,
    now: i64,
) -> StoreResult<Option<hooklane_core::model::Principal>> {
    let row = query_opt(
        c,
        "SELECT app_id, feature_flags, capabilities, endpoint_id FROM tokens \
         WHERE hash = $1 AND (expires_at IS NULL OR expires_at > $2)",
        &[&hash, &now],
    )
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(crate::queries_shared::HolderColumns {
        app_id: rows::get(&r, 0)?,
        feature_flags: rows::get(&r, 1)?,
        capabilities: rows::get(&r, 2)?,
        endpoint_id: rows::get(&r, 3)?,
    }
    .principal())
}

pub async fn delete_token<C: GenericClient>(c: &C, hash: &str) -> StoreResult<bool> {
    Ok(execute(c, "DELETE FROM tokens WHERE hash = $1", &[&hash]).await? > 0)
}

/// Every token of the application expires at `at` at the latest.
pub async fn expire_app_tokens<C: GenericClient>(
    c: &C,
    app_id: &str,
    at: i64,
    sessions: Option<&[String]>,
) -> StoreResult<u64> {
    execute(
        c,
        "UPDATE tokens SET expires_at = LEAST(COALESCE(expires_at, $2), $2) WHERE app_id = $1 \
         AND ($3::text[] IS NULL OR session_id = ANY($3))",
        &[&app_id, &at, &sessions],
    )
    .await
}

/// Every key of the polling endpoint expires at `at` at the latest.
pub async fn expire_poller_tokens<C: GenericClient>(
    c: &C,
    app_id: &str,
    endpoint_id: &str,
    at: i64,
) -> StoreResult<u64> {
    execute(
        c,
        "UPDATE tokens SET expires_at = LEAST(COALESCE(expires_at, $3), $3) WHERE app_id = $1 AND endpoint_id = $2",
        &[&app_id, &endpoint_id, &at],
    )
    .await
}

// --- idempotency keys

/// Takes the key if it is free or expired (one statement): `None` when it is held, else
/// the lease end of the same request's (`fingerprint`'s) unfinished hold it replaced, if any.
pub async fn idempotency_take<C: GenericClient>(
    c: &C,
    key: &str,
    fingerprint: &str,
    now: i64,
    expires: i64,
) -> StoreResult<Option<Option<i64>>> {
    // (Two takes of one expired row: the second waits on the first's row lock, then finds
    // the row no longer expired, and takes nothing.)
    let taken = query_opt(
        c,
        "WITH replaced AS (SELECT done, expires_at, fingerprint FROM idempotency_keys \
                           WHERE key = $1 AND expires_at <= $2) \
         INSERT INTO idempotency_keys (key, done, status, body, expires_at, fingerprint) \
         VALUES ($1, false, NULL, NULL, $3, $4) \
         ON CONFLICT (key) DO UPDATE SET done = false, status = NULL, body = NULL, expires_at = EXCLUDED.expires_at, \
         fingerprint = EXCLUDED.fingerprint \
         WHERE idempotency_keys.expires_at <= $2 \
         RETURNING (SELECT expires_at FROM replaced WHERE NOT done AND fingerprint = $4)",
        &[&key, &now, &expires, &fingerprint],
    )
    .await?;
    taken.map(|row| rows::get::<Option<i64>>(&row, 0)).transpose()
}

/// `(done, status, body, fingerprint, expires_at)` of a key, if it exists.
#[allow(clippy::type_complexity)]
pub async fn idempotency_get<C: GenericClient>(
    c: &C,
    key: &str,
) -> StoreResult<Option<(bool, Option<i32>, Option<Vec<u8>>, Option<String>, i64)>> {
    query_opt(c, "SELECT done, status, body, fingerprint, expires_at FROM idempotency_keys WHERE key = $1", &[&key])
        .await?
        .map(|r| Ok((rows::get(&r, 0)?, rows::get(&r, 1)?, rows::get(&r, 2)?, rows::get(&r, 3)?, rows::get(&r, 4)?)))
        .transpose()
}

/// Keeps the answer of the request holding `key` (its in-flight row expiring at `held`).
pub async fn idempotency_finish<C: GenericClient>(
    c: &C,
    key: &str,
    held: i64,
    status: i32,
    body: &[u8],
    expires_at: i64,
) -> StoreResult<()> {
    execute(
        c,
        "UPDATE idempotency_keys SET done = true, status = $2, body = $3, expires_at = $4 \
         WHERE key = $1 AND NOT done AND expires_at = $5",
        &[&key, &status, &body, &expires_at, &held],
    )
    .await?;
    Ok(())
}

pub async fn idempotency_abort<C: GenericClient>(c: &C, key: &str, held: i64) -> StoreResult<()> {
    execute(c, "DELETE FROM idempotency_keys WHERE key = $1 AND NOT done AND expires_at = $2", &[&key, &held]).await?;
    Ok(())
}

// --- statistics

/// Whether the database answers and takes writes: a standby (after a failover, the URL
/// still naming the old primary) or a session read-only by default answers reads while
/// every write fails, and a node on it must not count as ready.
pub async fn ping<C: GenericClient>(c: &C) -> StoreResult<()> {
    let sql = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'";
    match query_opt(c, sql, &[]).await?.map(|row| super::rows::get::<bool>(&row, 0)).transpose()? {
        Some(true) => Ok(()),
        _ => Err(StoreError::Unavailable("the database takes no writes (a standby, or read-only)".into())),
    }
}

pub async fn queue_stats<C: GenericClient>(c: &C, now: i64) -> StoreResult<crate::QueueStats> {
    let row = query_opt(
        c,
        "SELECT COUNT(*) FILTER (WHERE NOT leased AND due_at <= $1), COUNT(*) FILTER (WHERE NOT leased AND (due_at > $1 OR due_at IS NULL)), \
         COUNT(*) FILTER (WHERE leased) FROM deliveries WHERE status = 1",
        &[&now],
    )
    .await?;
    let (due, scheduled, leased) = match row {
        Some(r) => (rows::get::<i64>(&r, 0)?, rows::get::<i64>(&r, 1)?, rows::get::<i64>(&r, 2)?),
        None => (0, 0, 0),
    };
    let limit = limit_param(crate::MAX_FAILING_REPORTED);
    let failing = query(
        c,
        "SELECT e.app_id, e.id, e.failing_since, \
         (SELECT COUNT(*) FROM attempts a WHERE a.endpoint_id = e.id AND a.created_at >= e.failing_since) \
         FROM endpoints e WHERE e.failing_since IS NOT NULL AND NOT e.disabled \
         ORDER BY e.failing_since, e.id LIMIT $1",
        &[&limit],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(crate::FailingEndpoint {
            app_id: rows::get(r, 0)?,
            endpoint_id: rows::get(r, 1)?,
            failing_since: rows::time(rows::get(r, 2)?),
            failed_attempts: rows::get::<i64>(r, 3)?.max(0) as u64,
        })
    })
    .collect::<StoreResult<Vec<_>>>()?;
    let counts = "SELECT COUNT(*) FILTER (WHERE disabled), \
                  COUNT(*) FILTER (WHERE NOT disabled AND failing_since IS NOT NULL) FROM endpoints";
    let (disabled, failing_endpoints) = match query_opt(c, counts, &[]).await? {
        Some(r) => (rows::get::<i64>(&r, 0)?, rows::get::<i64>(&r, 1)?),
        None => (0, 0),
    };
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

fn attempt_group<K>(r: &Row, key: K) -> StoreResult<AttemptGroup<K>> {
    Ok(AttemptGroup {
        key,
        status: rows::get::<i32>(r, 1)?.into(),
        bucket: rows::get::<i32>(r, 2)?.into(),
        count: rows::get(r, 3)?,
        last_at: rows::get(r, 4)?,
        max_ms: rows::get(r, 5)?,
    })
}

pub async fn endpoint_health<C: GenericClient>(
    c: &C,
    app_id: &str,
    since: i64,
) -> StoreResult<Vec<crate::EndpointHealth>> {
    let endpoints = query(
        c,
        "SELECT e.id, (SELECT COUNT(*) FROM deliveries d WHERE d.endpoint_id = e.id AND d.status = 1) \
         FROM endpoints e WHERE e.app_id = $1 ORDER BY e.id",
        &[&app_id],
    )
    .await?
    .iter()
    .map(|r| Ok((rows::get::<String>(r, 0)?, rows::get::<i64>(r, 1)?.max(0) as u64)))
    .collect::<StoreResult<Vec<_>>>()?;
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT endpoint_id, status, {} AS b, COUNT(*), MAX(created_at), MAX(duration_ms) FROM attempts \
             WHERE app_id = $1 AND created_at >= $2 GROUP BY endpoint_id, status, b",
            latency_bucket_sql("duration_ms")
        )
    });
    let groups = query(c, &SQL, &[&app_id, &since])
        .await?
        .iter()
        .map(|r| attempt_group(r, rows::get::<String>(r, 0)?))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(fold_health(endpoints, groups))
}

pub async fn attempt_timeline<C: GenericClient>(
    c: &C,
    app_id: &str,
    endpoint_id: Option<&str>,
    since: i64,
    until: i64,
    bucket: i64,
) -> StoreResult<Vec<crate::TimelineBucket>> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT (created_at / $3::BIGINT) * $3::BIGINT AS t, status, {} AS b, COUNT(*), MAX(created_at), \
             MAX(duration_ms) FROM attempts WHERE app_id = $1 AND created_at >= $2 AND created_at < $4 \
             AND ($5::text IS NULL OR endpoint_id = $5::text) GROUP BY t, status, b",
            latency_bucket_sql("duration_ms")
        )
    });
    let groups = query(c, &SQL, &[&app_id, &since, &bucket, &until, &endpoint_id])
        .await?
        .iter()
        .map(|r| attempt_group(r, rows::get::<i64>(r, 0)?))
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(fold_timeline(groups))
}

pub async fn count_message_destinations<C: GenericClient>(
    c: &C,
    app_id: &str,
    since: i64,
    until: i64,
) -> StoreResult<u64> {
    let row = query_opt(
        c,
        "SELECT COUNT(*) FROM messages m JOIN deliveries d ON d.msg_id = m.id \
         WHERE m.app_id = $1 AND m.id >= $4 AND m.created_at >= $2 AND m.created_at < $3",
        &[&app_id, &since, &until, &crate::queries_shared::message_id_floor(since)],
    )
    .await?;
    let n: i64 = match row {
        Some(r) => rows::get(&r, 0)?,
        None => 0,
    };
    Ok(n.max(0) as u64)
}

pub async fn message_log<C: GenericClient>(
    c: &C,
    app_id: &str,
    f: &MessageFilter,
    state: Option<crate::MessageState>,
    page: &PageRequest,
) -> StoreResult<Page<crate::MessageSummary>> {
    let mut q = message_select(app_id, f);
    if let Some(state) = state {
        q = q.and(message_state_sql(state), []);
    }
    let messages = q.page(c, "id", page, rows::message).await?;
    let ids: Vec<&str> = messages.items.iter().map(|m| m.id.as_str()).collect();
    let mut deliveries: HashMap<String, (u64, u64, u64, u64)> = HashMap::new();
    for r in query(
        c,
        "SELECT msg_id, status, COUNT(*) FROM deliveries WHERE msg_id = ANY($1) GROUP BY msg_id, status",
        &[&ids],
    )
    .await?
    {
        let n = rows::get::<i64>(&r, 2)?.max(0) as u64;
        let e = deliveries.entry(rows::get(&r, 0)?).or_default();
        match rows::get::<i32>(&r, 1)? {
            0 => e.0 += n,
            2 => e.2 += n,
            4 => e.3 += n,
            _ => e.1 += n,
        }
    }
    let mut attempts: HashMap<String, u64> = HashMap::new();
    for r in query(c, "SELECT msg_id, COUNT(*) FROM attempts WHERE msg_id = ANY($1) GROUP BY msg_id", &[&ids]).await? {
        attempts.insert(rows::get(&r, 0)?, rows::get::<i64>(&r, 1)?.max(0) as u64);
    }
    let items = messages
        .items
        .into_iter()
        .map(|message| {
            let (succeeded, pending, failed, canceled) = deliveries.get(&message.id).copied().unwrap_or_default();
            let attempts = attempts.get(&message.id).copied().unwrap_or(0);
            crate::MessageSummary { message, succeeded, pending, failed, canceled, attempts }
        })
        .collect();
    Ok(Page { items, done: messages.done })
}

/// One round of housekeeping (see `Store::prune`) but for messages ([`prune_messages`], in a
/// transaction of its own).
pub async fn prune<C: GenericClient>(
    c: &C,
    now: DateTime<Utc>,
    inbound_before: Option<DateTime<Utc>>,
    limit: usize,
) -> StoreResult<crate::Pruned> {
    let keys = execute(
        c,
        "DELETE FROM idempotency_keys WHERE key IN \
         (SELECT key FROM idempotency_keys WHERE expires_at <= $1 AND (done OR expires_at <= $3) LIMIT $2)",
        &[&ms(now), &limit_param(limit), &ms(now - crate::queries_shared::UNFINISHED_KEY_KEPT)],
    )
    .await?;
    // (A fan-out still to be done is kept for as long as it is.)
    let unfinished_since = ms(now - crate::FAN_OUT_KEPT);
    let requests = match inbound_before {
        Some(before) => {
            let sql = format!(
                "DELETE FROM inbound_requests WHERE id IN \
                 (SELECT id FROM inbound_requests WHERE received_at < $1 \
                  AND NOT ({} AND received_at >= $3) LIMIT $2)",
                crate::queries_shared::UNFINISHED_FAN_OUT
            );
            execute(c, &sql, &[&ms(before), &limit_param(limit), &unfinished_since]).await?
        }
        None => 0,
    };
    let tokens = execute(
        c,
        "DELETE FROM tokens WHERE hash IN (SELECT hash FROM tokens WHERE expires_at <= $1 LIMIT $2)",
        &[&ms(now), &limit_param(limit)],
    )
    .await?;
    let tasks = execute(
        c,
        "DELETE FROM background_tasks WHERE id IN \
         (SELECT id FROM background_tasks WHERE updated_at < $1 LIMIT $2)",
        &[&(ms(now) - crate::TASK_RETENTION.as_millis() as i64), &limit_param(limit)],
    )
    .await?;
    Ok(crate::Pruned { idempotency_keys: keys, inbound_requests: requests, tokens, tasks, ..Default::default() })
}

/// Deletes up to `limit` of the messages `m` allows, with their deliveries and attempts, from
/// one window of at most `2 × limit` messages after `m.after` (ids begin with their creation
/// time, so the primary key's index lists the oldest first: a table of millions is not read
/// every round). The delete checks again that no delivery became pending since the window
/// was read (a resend). Answers the count and where the next round goes on. To be run in a
/// transaction: the messages are locked before their rows are looked at again, and queuing
/// a message again (a resend, a replay) locks its row to share, so one either waits for
/// this (and finds the message gone: it queues nothing) or is seen by it.
pub(super) async fn prune_messages<C: GenericClient>(
    c: &C,
    m: &crate::PruneMessages,
    now: DateTime<Utc>,
    limit: usize,
) -> StoreResult<(u64, Option<String>)> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT id, id < $2, {} FROM messages m WHERE id > $1 ORDER BY id LIMIT $3",
            crate::queries_shared::message_needed_sql("$4")
        )
    });
    let fan_outs_since = ms(now - crate::FAN_OUT_KEPT);
    let window: Vec<(String, bool, bool)> =
        query(c, &SQL, &[&m.after, &prune_floor(m), &limit_param(limit.saturating_mul(2)), &fan_outs_since])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?, r.try_get(2).map_err(db_err)?)))
            .collect::<StoreResult<_>>()?;
    let mut plan = crate::queries_shared::PrunePlan::of(&m.after, &window, limit_param(limit));
    if plan.doomed.is_empty() {
        return Ok((0, plan.resume));
    }
    // Each message's rows, to stop within the round's budget as the SQLite store does.
    let rows: Vec<i64> = query(
        c,
        "SELECT (SELECT count(*) FROM attempts a WHERE a.msg_id = m.id) \
              + (SELECT count(*) FROM deliveries d WHERE d.msg_id = m.id) + 1 \
         FROM unnest($1::text[]) WITH ORDINALITY AS m(id, n) ORDER BY n",
        &[&plan.doomed],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0).map_err(db_err))
    .collect::<StoreResult<_>>()?;
    plan.keep_within(&m.after, &rows, limit_param(limit));
    query(c, "SELECT id FROM messages WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&plan.doomed]).await?;
    // Two statements. The deliveries first, none pending: a delivery that a resend (or a
    // recovery) queued again meanwhile, committed while this waited for its row, is looked
    // at again as it is then, and stays. (One statement deleting by message alone deleted
    // it: the condition it looks at again is only its message's id.) Then, seeing what
    // committed since, the messages left with no delivery, and their attempts: a message
    // queued again keeps its content for the delivery.
    execute(
        c,
        "DELETE FROM deliveries d WHERE d.msg_id = ANY($1) AND d.status <> 1 \
         AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.msg_id = d.msg_id AND p.status = 1)",
        &[&plan.doomed],
    )
    .await?;
    let deleted = execute(
        c,
        "WITH doomed AS ( \
             SELECT id FROM messages m WHERE id = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id) \
         ), a AS (DELETE FROM attempts WHERE msg_id IN (SELECT id FROM doomed)) \
         DELETE FROM messages WHERE id IN (SELECT id FROM doomed)",
        &[&plan.doomed],
    )
    .await?;
    Ok((deleted, plan.resume))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parameter of the combined statement is numbered once, in order, with its type.
    #[test]
    fn record_successes_numbers_every_parameter() {
        let sql = RECORD_SUCCESSES.as_str();
        // The last one is the time a FIFO lane moved on is due again, read in a few places.
        let all = ATTEMPT_PARAMS + DELIVERY_PARAMS + 1;
        for n in 1..all {
            // (The deliveries' keys are read twice: to update them, and to set aside those gone.)
            let times = if [1, 2].map(|k| k + ATTEMPT_PARAMS).contains(&n) { 2 } else { 1 };
            assert_eq!(sql.matches(&format!("${n}::")).count(), times, "${n} in {sql}");
        }
        assert!(sql.contains(&format!("${all}::")), "{sql}");
        assert!(!sql.contains(&format!("${}", all + 1)), "{sql}");
        let single_colon = sql.match_indices('$').any(|(i, _)| {
            let rest = &sql[i + 1..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            !rest[digits..].starts_with("::")
        });
        assert!(!single_colon, "a placeholder left unrewritten: {sql}");
    }
}
