//! PostgreSQL queries of inbound sources and their request records.

use deadpool_postgres::GenericClient;
use hooklane_core::model::{Application, Endpoint, InboundRequest, InboundStatus, Source};
use serde::de::DeserializeOwned;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::queries::{self, execute, query_opt, Select};
use super::rows::{get, ms, time, to_json};
use crate::queries_shared::gone_is_changed;
use crate::{DestinationChanges, Page, PageRequest, StoreError, StoreResult};

pub const SOURCE_COLS: &str = "id, app_id, name, verification, deduplication, allow_networks, max_body_bytes, \
     event_destinations, metadata, created_at, updated_at, ordering_key, response, previous_verification";

use crate::queries_shared::UNFINISHED_FAN_OUT as UNFINISHED;

pub const REQUEST_COLS: &str = "id, source_id, status, http_status, reason, remote_addr, headers, body, body_size, \
     dedup_key, msg_id, received_at";

fn json<T: DeserializeOwned>(row: &Row, idx: usize) -> StoreResult<T> {
    let text: &str = get(row, idx)?;
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

pub fn source(row: &Row, at: usize) -> StoreResult<Source> {
    let dedup: Option<&str> = get(row, at + 4)?;
    let max_body: Option<i64> = get(row, at + 6)?;
    Ok(Source {
        id: get(row, at)?,
        app_id: get(row, at + 1)?,
        name: get(row, at + 2)?,
        verification: json(row, at + 3)?,
        deduplication: dedup
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("column {}: {e}", at + 4)))?,
        allow_networks: json(row, at + 5)?,
        max_body_bytes: max_body.map(|v| v.max(0) as u64),
        event_destinations: json(row, at + 7)?,
        metadata: json(row, at + 8)?,
        created_at: time(get(row, at + 9)?),
        updated_at: time(get(row, at + 10)?),
        ordering_key: get(row, at + 11)?,
        response: get::<Option<&str>>(row, at + 12)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("column {}: {e}", at + 12)))?,
        previous_verification: get::<Option<&str>>(row, at + 13)?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("column {}: {e}", at + 13)))?,
    })
}

pub fn request(row: &Row, at: usize) -> StoreResult<InboundRequest> {
    let status: i32 = get(row, at + 2)?;
    let http_status: i32 = get(row, at + 3)?;
    let body_size: i64 = get(row, at + 8)?;
    Ok(InboundRequest {
        id: get(row, at)?,
        source_id: get(row, at + 1)?,
        status: InboundStatus::from_code(status.into()).unwrap_or(InboundStatus::Rejected),
        http_status: u16::try_from(http_status).unwrap_or(0),
        reason: get(row, at + 4)?,
        remote_addr: get(row, at + 5)?,
        headers: json(row, at + 6)?,
        body: get(row, at + 7)?,
        body_size: body_size.max(0) as u64,
        dedup_key: get(row, at + 9)?,
        msg_id: get(row, at + 10)?,
        received_at: time(get(row, at + 11)?),
    })
}

fn max_body(s: &Source) -> Option<i64> {
    s.max_body_bytes.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The source, its application and endpoints; to run inside a transaction.
pub async fn create_source<C: GenericClient>(
    c: &C,
    s: &Source,
    app: &Application,
    endpoints: &[Endpoint],
) -> StoreResult<()> {
    queries::insert_app(c, app).await?;
    for ep in endpoints {
        queries::insert_endpoint(c, ep).await?;
    }
    execute(
        c,
        &format!(
            "INSERT INTO sources ({SOURCE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ),
        &[
            &s.id,
            &s.app_id,
            &s.name,
            &to_json(&s.verification),
            &s.deduplication.as_ref().map(to_json),
            &to_json(&s.allow_networks),
            &max_body(s),
            &to_json(&s.event_destinations),
            &to_json(&s.metadata),
            &ms(s.created_at),
            &ms(s.updated_at),
            &s.ordering_key,
            &s.response.as_ref().map(to_json),
            &s.previous_verification.as_ref().map(to_json),
        ],
    )
    .await?;
    Ok(())
}

pub async fn get_source<C: GenericClient>(c: &C, id: &str) -> StoreResult<Option<Source>> {
    query_opt(c, &format!("SELECT {SOURCE_COLS} FROM sources WHERE id = $1"), &[&id])
        .await?
        .map(|r| source(&r, 0))
        .transpose()
}

pub async fn list_sources<C: GenericClient>(c: &C, page: &PageRequest) -> StoreResult<Page<Source>> {
    Select::new(SOURCE_COLS, "sources").page(c, "id", page, source).await
}

/// Saves the source, then its destinations' changes, in the caller's transaction: an error
/// anywhere leaves all of it unsaved.
pub async fn update_source<C: GenericClient>(c: &C, s: &Source, destinations: &DestinationChanges) -> StoreResult<()> {
    update_source_row(c, s).await?;
    for (ep, read_at) in &destinations.updated {
        queries::update_endpoint(c, ep, Some(ms(*read_at))).await.map_err(gone_is_changed)?;
    }
    for id in &destinations.deleted {
        queries::delete_endpoint(c, &s.app_id, id).await.map_err(gone_is_changed)?;
    }
    for ep in &destinations.created {
        queries::insert_endpoint(c, ep).await?;
    }
    Ok(())
}

async fn update_source_row<C: GenericClient>(c: &C, s: &Source) -> StoreResult<()> {
    let n = execute(
        c,
        "UPDATE sources SET name = $2, verification = $3, deduplication = $4, allow_networks = $5, \
         max_body_bytes = $6, event_destinations = $7, metadata = $8, updated_at = $9, ordering_key = $10, \
         response = $11, previous_verification = $12 WHERE id = $1",
        &[
            &s.id,
            &s.name,
            &to_json(&s.verification),
            &s.deduplication.as_ref().map(to_json),
            &to_json(&s.allow_networks),
            &max_body(s),
            &to_json(&s.event_destinations),
            &to_json(&s.metadata),
            &ms(s.updated_at),
            &s.ordering_key,
            &s.response.as_ref().map(to_json),
            &s.previous_verification.as_ref().map(to_json),
        ],
    )
    .await?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The source, its requests and its application with everything under it; to run inside
/// a transaction.
pub async fn delete_source<C: GenericClient>(c: &C, id: &str) -> StoreResult<()> {
    let row = query_opt(c, "DELETE FROM sources WHERE id = $1 RETURNING app_id", &[&id]).await?;
    let Some(row) = row else { return Err(StoreError::NotFound) };
    let app_id: String = get(&row, 0)?;
    execute(c, "DELETE FROM inbound_requests WHERE source_id = $1", &[&id]).await?;
    match queries::delete_app(c, &app_id).await {
        // The application is already gone: nothing else to remove.
        Ok(()) | Err(StoreError::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

pub async fn insert_request<C: GenericClient>(c: &C, r: &InboundRequest) -> StoreResult<()> {
    // PostgreSQL text cannot hold NUL: the reason and headers are ours or already checked
    // header values, but be safe.
    let clean = |s: &str| s.replace('\0', "\u{FFFD}");
    execute(
        c,
        &format!(
            "INSERT INTO inbound_requests ({REQUEST_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ),
        &[
            &r.id,
            &r.source_id,
            &(r.status as i32),
            &i32::from(r.http_status),
            &r.reason.as_deref().map(clean),
            &r.remote_addr,
            &clean(&to_json(&r.headers)),
            &r.body,
            &i64::try_from(r.body_size).unwrap_or(i64::MAX),
            &r.dedup_key.as_deref().map(clean),
            &r.msg_id,
            &ms(r.received_at),
        ],
    )
    .await?;
    Ok(())
}

pub async fn list_requests<C: GenericClient>(
    c: &C,
    source_id: &str,
    status: Option<InboundStatus>,
    page: &PageRequest,
) -> StoreResult<Page<InboundRequest>> {
    Select::new(REQUEST_COLS, "inbound_requests")
        .and("source_id = ?", [queries::text(source_id)])
        .and_if(status, "status = ?", |s| Box::new(s as i32) as Box<dyn ToSql + Sync + Send>)
        .page(c, "id", page, request)
        .await
}

/// See `Store::unfinished_fan_outs`.
pub async fn unfinished_fan_outs<C: GenericClient>(
    c: &C,
    (from, until): (i64, i64),
    limit: usize,
) -> StoreResult<Vec<InboundRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM inbound_requests WHERE {UNFINISHED} AND received_at >= $1 AND received_at < $2 \
         ORDER BY received_at LIMIT $3"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    queries::query(c, &sql, &[&from, &until, &limit]).await?.iter().map(|r| request(r, 0)).collect()
}

/// See `Store::accepted_request_of` (by `inbound_requests_by_msg`).
pub async fn accepted_request_of<C: GenericClient>(
    c: &C,
    source_id: &str,
    msg_id: &str,
) -> StoreResult<Option<InboundRequest>> {
    let accepted = InboundStatus::Accepted as i32;
    let sql = format!(
        "SELECT {REQUEST_COLS} FROM inbound_requests WHERE msg_id = $1 AND source_id = $2 AND status = {accepted} LIMIT 1"
    );
    query_opt(c, &sql, &[&msg_id, &source_id]).await?.map(|r| request(&r, 0)).transpose()
}

/// See `Store::finish_fan_out`.
pub async fn finish_fan_out<C: GenericClient>(c: &C, source_id: &str, id: &str) -> StoreResult<()> {
    let sql = format!("UPDATE inbound_requests SET reason = NULL WHERE source_id = $1 AND id = $2 AND {UNFINISHED}");
    execute(c, &sql, &[&source_id, &id]).await.map(drop)
}

pub async fn get_request<C: GenericClient>(c: &C, source_id: &str, id: &str) -> StoreResult<Option<InboundRequest>> {
    query_opt(
        c,
        &format!("SELECT {REQUEST_COLS} FROM inbound_requests WHERE source_id = $1 AND id = $2"),
        &[&source_id, &id],
    )
    .await?
    .map(|r| request(&r, 0))
    .transpose()
}
