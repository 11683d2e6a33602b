//! Conversions between PostgreSQL rows and domain records. Each reader takes the index of
//! the record's first column, so one row can carry several records (a claimed delivery
//! with its message and endpoint).

use hooklane_core::model::{
    Application, Attempt, Delivery, DeliveryOrder, DeliveryStatus, Endpoint, EventType, Message, TriggerType,
};
use hooklane_core::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::{StoreError, StoreResult};

pub fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub fn to_json<T: Serialize>(v: &T) -> String {
    // Serializing maps and vectors of strings cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

pub fn opt_json<T: Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(to_json)
}

/// `u32` counters and limits are kept in wider or signed columns.
pub fn opt_u32(v: Option<u32>) -> Option<i64> {
    v.map(i64::from)
}

pub fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> StoreResult<T> {
    row.try_get(idx).map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

fn json_col<T: DeserializeOwned>(row: &Row, idx: usize) -> StoreResult<T> {
    let text: &str = get(row, idx)?;
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

fn opt_json_col<T: DeserializeOwned>(row: &Row, idx: usize) -> StoreResult<Option<T>> {
    let text: Option<&str> = get(row, idx)?;
    text.map(|t| serde_json::from_str(t).map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))).transpose()
}

fn time_col(row: &Row, idx: usize) -> StoreResult<DateTime<Utc>> {
    Ok(time(get(row, idx)?))
}

fn opt_u32_col(row: &Row, idx: usize) -> StoreResult<Option<u32>> {
    let v: Option<i64> = get(row, idx)?;
    v.map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("column {idx}: {v} out of range")))).transpose()
}

fn status(code: i32) -> DeliveryStatus {
    DeliveryStatus::from_code(code.into()).unwrap_or(DeliveryStatus::Pending)
}

pub const APP_COLS: &str = "id, uid, name, rate_limit, metadata, created_at, updated_at";

pub fn app(row: &Row, at: usize) -> StoreResult<Application> {
    Ok(Application {
        id: get(row, at)?,
        uid: get(row, at + 1)?,
        name: get(row, at + 2)?,
        rate_limit: opt_u32_col(row, at + 3)?,
        metadata: json_col(row, at + 4)?,
        created_at: time_col(row, at + 5)?,
        updated_at: time_col(row, at + 6)?,
    })
}

pub const EVENT_TYPE_COLS: &str =
    "name, description, archived, deprecated, feature_flags, schemas, created_at, updated_at, group_name, feature_flag";

pub fn event_type(row: &Row, at: usize) -> StoreResult<EventType> {
    Ok(EventType {
        name: get(row, at)?,
        description: get(row, at + 1)?,
        archived: get(row, at + 2)?,
        deprecated: get(row, at + 3)?,
        feature_flags: crate::queries_shared::flags_read(get(row, at + 9)?, opt_json_col(row, at + 4)?),
        schemas: opt_json_col(row, at + 5)?,
        created_at: time_col(row, at + 6)?,
        updated_at: time_col(row, at + 7)?,
        group_name: get(row, at + 8)?,
    })
}

pub const ENDPOINT_COLS: &str = "id, app_id, uid, url, description, version, filter_types, channels, disabled, \
     rate_limit, metadata, headers, secret, previous_secrets, failing_since, created_at, updated_at, payload_filter, \
     transform, fifo, transformation, retry_schedule, oauth, paused, mtls, polling";

pub fn endpoint(row: &Row, at: usize) -> StoreResult<Endpoint> {
    Ok(Endpoint {
        id: get(row, at)?,
        app_id: get(row, at + 1)?,
        uid: get(row, at + 2)?,
        url: get(row, at + 3)?,
        description: get(row, at + 4)?,
        version: get(row, at + 5)?,
        filter_types: opt_json_col(row, at + 6)?,
        channels: opt_json_col(row, at + 7)?,
        disabled: get(row, at + 8)?,
        rate_limit: opt_u32_col(row, at + 9)?,
        metadata: json_col(row, at + 10)?,
        headers: json_col(row, at + 11)?,
        secret: get(row, at + 12)?,
        previous_secrets: json_col(row, at + 13)?,
        failing_since: get::<Option<i64>>(row, at + 14)?.map(time),
        created_at: time_col(row, at + 15)?,
        updated_at: time_col(row, at + 16)?,
        payload_filter: opt_json_col(row, at + 17)?,
        transform: opt_json_col(row, at + 18)?,
        order: if get(row, at + 19)? { DeliveryOrder::Fifo } else { DeliveryOrder::Concurrent },
        transformation: opt_json_col(row, at + 20)?,
        retry_schedule: crate::queries_shared::schedule_from_ms(opt_json_col(row, at + 21)?),
        oauth: opt_json_col(row, at + 22)?,
        paused: get(row, at + 23)?,
        mtls: opt_json_col(row, at + 24)?,
        polling: get(row, at + 25)?,
    })
}

pub const MESSAGE_COLS: &str =
    "id, app_id, event_type, event_id, payload, channels, tags, created_at, content_type, headers, ordering_key, \
     deliver_at";
pub const MESSAGE_NCOLS: usize = 12;

pub fn message(row: &Row, at: usize) -> StoreResult<Message> {
    Ok(Message {
        id: get(row, at)?,
        app_id: get(row, at + 1)?,
        event_type: get(row, at + 2)?,
        event_id: get(row, at + 3)?,
        payload: get(row, at + 4)?,
        channels: get(row, at + 5)?,
        tags: get(row, at + 6)?,
        created_at: time_col(row, at + 7)?,
        content_type: get(row, at + 8)?,
        headers: opt_json_col(row, at + 9)?.unwrap_or_default(),
        ordering_key: get(row, at + 10)?,
        deliver_at: get::<Option<i64>>(row, at + 11)?.map(time),
    })
}

pub const DELIVERY_COLS: &str = "msg_id, endpoint_id, app_id, status, attempts, due_at, trigger_type, updated_at";
pub const DELIVERY_NCOLS: usize = 8;

pub fn delivery(row: &Row, at: usize) -> StoreResult<Delivery> {
    let status = status(get(row, at + 3)?);
    let attempts: i32 = get(row, at + 4)?;
    Ok(Delivery {
        msg_id: get(row, at)?,
        endpoint_id: get(row, at + 1)?,
        app_id: get(row, at + 2)?,
        status,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at: if status == DeliveryStatus::Pending {
            get::<Option<i64>>(row, at + 5)?.map(time)
        } else {
            None
        },
        trigger: TriggerType::from_code(get::<i32>(row, at + 6)?.into()),
        updated_at: time_col(row, at + 7)?,
    })
}

pub const ATTEMPT_COLS: &str = "id, msg_id, endpoint_id, app_id, url, status, response_status, response, \
     duration_ms, trigger_type, created_at, request_headers";

pub fn attempt(row: &Row, at: usize) -> StoreResult<Attempt> {
    Ok(Attempt {
        id: get(row, at)?,
        msg_id: get(row, at + 1)?,
        endpoint_id: get(row, at + 2)?,
        app_id: get(row, at + 3)?,
        url: get(row, at + 4)?,
        status: status(get(row, at + 5)?),
        response_status: get(row, at + 6)?,
        response: get(row, at + 7)?,
        duration_ms: get(row, at + 8)?,
        trigger: TriggerType::from_code(get::<i32>(row, at + 9)?.into()),
        created_at: time_col(row, at + 10)?,
        request_headers: opt_json_col(row, at + 11)?,
    })
}
