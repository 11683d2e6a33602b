//! SQLite queries of inbound sources and their request records.

use hooklane_core::inbound::{Deduplication, Verification};
use hooklane_core::model::{Application, Endpoint, InboundRequest, InboundStatus, Source};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, Row, ToSql};
use serde::de::DeserializeOwned;

use super::queries::{self, execute, query_opt, Select};
use super::rows::{ms, time, to_json};
use crate::queries_shared::gone_is_changed;
use crate::{DestinationChanges, Page, PageRequest, StoreError, StoreResult};

pub const SOURCE_COLS: &str = "id, app_id, name, verification, deduplication, allow_networks, max_body_bytes, \
     event_destinations, metadata, created_at, updated_at, ordering_key, response, previous_verification";

fn json<T: DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))
}

pub fn source(row: &Row) -> rusqlite::Result<Source> {
    let dedup: Option<String> = row.get(4)?;
    let deduplication: Option<Deduplication> = dedup
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?;
    let verification: Verification = json(row, 3)?;
    Ok(Source {
        id: row.get(0)?,
        app_id: row.get(1)?,
        name: row.get(2)?,
        verification,
        deduplication,
        allow_networks: json(row, 5)?,
        max_body_bytes: row.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
        event_destinations: json(row, 7)?,
        metadata: json(row, 8)?,
        created_at: time(row.get(9)?),
        updated_at: time(row.get(10)?),
        ordering_key: row.get(11)?,
        response: row
            .get::<_, Option<String>>(12)?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(12, rusqlite::types::Type::Text, Box::new(e)))?,
        previous_verification: row
            .get::<_, Option<String>>(13)?
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(13, rusqlite::types::Type::Text, Box::new(e)))?,
    })
}

use crate::queries_shared::UNFINISHED_FAN_OUT as UNFINISHED;

pub const REQUEST_COLS: &str = "id, source_id, status, http_status, reason, remote_addr, headers, body, body_size, \
     dedup_key, msg_id, received_at";

pub fn request(row: &Row) -> rusqlite::Result<InboundRequest> {
    Ok(InboundRequest {
        id: row.get(0)?,
        source_id: row.get(1)?,
        status: InboundStatus::from_code(row.get(2)?).unwrap_or(InboundStatus::Rejected),
        http_status: row.get(3)?,
        reason: row.get(4)?,
        remote_addr: row.get(5)?,
        headers: json(row, 6)?,
        body: row.get(7)?,
        body_size: row.get::<_, i64>(8)?.max(0) as u64,
        dedup_key: row.get(9)?,
        msg_id: row.get(10)?,
        received_at: time(row.get(11)?),
    })
}

/// A source's columns in [`SOURCE_COLS`] order, as `?1`…`?14` of the statements below.
fn source_values(s: &Source) -> [Box<dyn ToSql + '_>; 14] {
    [
        Box::new(&s.id),
        Box::new(&s.app_id),
        Box::new(&s.name),
        Box::new(to_json(&s.verification)),
        Box::new(s.deduplication.as_ref().map(to_json)),
        Box::new(to_json(&s.allow_networks)),
        Box::new(s.max_body_bytes.map(|v| i64::try_from(v).unwrap_or(i64::MAX))),
        Box::new(to_json(&s.event_destinations)),
        Box::new(to_json(&s.metadata)),
        Box::new(ms(s.created_at)),
        Box::new(ms(s.updated_at)),
        Box::new(&s.ordering_key),
        Box::new(s.response.as_ref().map(to_json)),
        Box::new(s.previous_verification.as_ref().map(to_json)),
    ]
}

pub fn create_source(conn: &Connection, s: &Source, app: &Application, endpoints: &[Endpoint]) -> StoreResult<()> {
    queries::insert_app(conn, app)?;
    for ep in endpoints {
        queries::insert_endpoint(conn, ep)?;
    }
    execute(
        conn,
        &format!(
            "INSERT INTO sources ({SOURCE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params_from_iter(source_values(s)),
    )?;
    Ok(())
}

pub fn get_source(conn: &Connection, id: &str) -> StoreResult<Option<Source>> {
    let sql = format!("SELECT {SOURCE_COLS} FROM sources WHERE id = ?1");
    query_opt(conn, &sql, [id], source)
}

pub fn list_sources(conn: &Connection, page: &PageRequest) -> StoreResult<Page<Source>> {
    Select::new(SOURCE_COLS, "sources").page(conn, "id", page, source)
}

/// Saves the source, then its destinations' changes, in the caller's savepoint: an error
/// anywhere leaves all of it unsaved.
pub fn update_source(conn: &Connection, s: &Source, destinations: &DestinationChanges) -> StoreResult<()> {
    update_source_row(conn, s)?;
    for (ep, read_at) in &destinations.updated {
        queries::update_endpoint(conn, ep, Some(ms(*read_at))).map_err(gone_is_changed)?;
    }
    for id in &destinations.deleted {
        queries::delete_endpoint(conn, &s.app_id, id).map_err(gone_is_changed)?;
    }
    for ep in &destinations.created {
        queries::insert_endpoint(conn, ep)?;
    }
    Ok(())
}

fn update_source_row(conn: &Connection, s: &Source) -> StoreResult<()> {
    // ?2 (app_id) and ?10 (created_at) are bound but not used: they never change.
    let n = execute(
        conn,
        "UPDATE sources SET name = ?3, verification = ?4, deduplication = ?5, allow_networks = ?6, \
         max_body_bytes = ?7, event_destinations = ?8, metadata = ?9, updated_at = ?11, ordering_key = ?12, \
         response = ?13, previous_verification = ?14 WHERE id = ?1",
        params_from_iter(source_values(s)),
    )?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub fn delete_source(conn: &Connection, id: &str) -> StoreResult<()> {
    let app_id: Option<String> =
        query_opt(conn, "DELETE FROM sources WHERE id = ?1 RETURNING app_id", [id], |r| r.get(0))?;
    let Some(app_id) = app_id else { return Err(StoreError::NotFound) };
    execute(conn, "DELETE FROM inbound_requests WHERE source_id = ?1", [id])?;
    match queries::delete_app(conn, &app_id) {
        // The application is already gone: nothing else to remove.
        Ok(()) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn insert_request(conn: &Connection, r: &InboundRequest) -> StoreResult<()> {
    execute(
        conn,
        &format!(
            "INSERT INTO inbound_requests ({REQUEST_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ),
        params![
            r.id,
            r.source_id,
            r.status as i64,
            r.http_status,
            r.reason,
            r.remote_addr,
            to_json(&r.headers),
            r.body,
            i64::try_from(r.body_size).unwrap_or(i64::MAX),
            r.dedup_key,
            r.msg_id,
            ms(r.received_at)
        ],
    )?;
    Ok(())
}

pub fn list_requests(
    conn: &Connection,
    source_id: &str,
    status: Option<InboundStatus>,
    page: &PageRequest,
) -> StoreResult<Page<InboundRequest>> {
    Select::new(REQUEST_COLS, "inbound_requests")
        .and("source_id = ?", [Value::Text(source_id.to_string())])
        .and_if(status, "status = ?", |s| Value::Integer(s as i64))
        .page(conn, "id", page, request)
}

pub fn get_request(conn: &Connection, source_id: &str, id: &str) -> StoreResult<Option<InboundRequest>> {
    let sql = format!("SELECT {REQUEST_COLS} FROM inbound_requests WHERE source_id = ?1 AND id = ?2");
    query_opt(conn, &sql, [source_id, id], request)
}

/// See `Store::unfinished_fan_outs`.
pub fn unfinished_fan_outs(
    conn: &Connection,
    (from, until): (i64, i64),
    limit: usize,
) -> StoreResult<Vec<InboundRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM inbound_requests WHERE {UNFINISHED} AND received_at >= ?1 AND received_at < ?2 \
         ORDER BY received_at LIMIT ?3"
    );
    queries::query_all(conn, &sql, params![from, until, i64::try_from(limit).unwrap_or(i64::MAX)], request)
}

/// See `Store::accepted_request_of` (by `inbound_requests_by_msg`).
pub fn accepted_request_of(conn: &Connection, source_id: &str, msg_id: &str) -> StoreResult<Option<InboundRequest>> {
    let accepted = InboundStatus::Accepted as i64;
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM inbound_requests WHERE msg_id = ?1 AND source_id = ?2 AND status = {accepted} LIMIT 1"
    );
    query_opt(conn, &sql, [msg_id, source_id], request)
}

/// See `Store::finish_fan_out`.
pub fn finish_fan_out(conn: &Connection, source_id: &str, id: &str) -> StoreResult<()> {
    let sql = format!("UPDATE inbound_requests SET reason = NULL WHERE source_id = ?1 AND id = ?2 AND {UNFINISHED}");
    execute(conn, &sql, [source_id, id]).map(drop)
}
