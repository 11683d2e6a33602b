//! Conversions between SQLite rows and domain records.

use hooklane_core::model::{
    Application, Attempt, Delivery, DeliveryOrder, DeliveryStatus, Endpoint, EventType, Message, TriggerType,
};
use hooklane_core::{DateTime, Utc};
use rusqlite::Row;
use serde::de::DeserializeOwned;
use serde::Serialize;

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

fn from_json<T: DeserializeOwned>(idx: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e)))
}

fn json_col<T: DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    from_json(idx, &text)
}

fn opt_json_col<T: DeserializeOwned>(row: &Row, idx: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| from_json(idx, &t)).transpose()
}

fn status(code: i64) -> DeliveryStatus {
    DeliveryStatus::from_code(code).unwrap_or(DeliveryStatus::Pending)
}

pub const APP_COLS: &str = "id, uid, name, rate_limit, metadata, created_at, updated_at";

pub fn app(row: &Row) -> rusqlite::Result<Application> {
    Ok(Application {
        id: row.get(0)?,
        uid: row.get(1)?,
        name: row.get(2)?,
        rate_limit: row.get(3)?,
        metadata: json_col(row, 4)?,
        created_at: time(row.get(5)?),
        updated_at: time(row.get(6)?),
    })
}

pub const EVENT_TYPE_COLS: &str =
    "name, description, archived, deprecated, feature_flags, schemas, created_at, updated_at, group_name, feature_flag";

pub fn event_type(row: &Row) -> rusqlite::Result<EventType> {
    Ok(EventType {
        name: row.get(0)?,
        description: row.get(1)?,
        archived: row.get(2)?,
        deprecated: row.get(3)?,
        feature_flags: crate::queries_shared::flags_read(row.get(9)?, opt_json_col(row, 4)?),
        schemas: opt_json_col(row, 5)?,
        created_at: time(row.get(6)?),
        updated_at: time(row.get(7)?),
        group_name: row.get(8)?,
    })
}

pub const ENDPOINT_COLS: &str = "id, app_id, uid, url, description, version, filter_types, channels, disabled, \
     rate_limit, metadata, headers, secret, previous_secrets, failing_since, created_at, updated_at, payload_filter, \
     transform, fifo, transformation, retry_schedule, oauth, paused, mtls, polling";

pub fn endpoint(row: &Row) -> rusqlite::Result<Endpoint> {
    Ok(Endpoint {
        id: row.get(0)?,
        app_id: row.get(1)?,
        uid: row.get(2)?,
        url: row.get(3)?,
        description: row.get(4)?,
        version: row.get(5)?,
        filter_types: opt_json_col(row, 6)?,
        channels: opt_json_col(row, 7)?,
        disabled: row.get(8)?,
        rate_limit: row.get(9)?,
        metadata: json_col(row, 10)?,
        headers: json_col(row, 11)?,
        secret: row.get(12)?,
        previous_secrets: json_col(row, 13)?,
        failing_since: row.get::<_, Option<i64>>(14)?.map(time),
        created_at: time(row.get(15)?),
        updated_at: time(row.get(16)?),
        payload_filter: opt_json_col(row, 17)?,
        transform: opt_json_col(row, 18)?,
        order: if row.get(19)? { DeliveryOrder::Fifo } else { DeliveryOrder::Concurrent },
        transformation: opt_json_col(row, 20)?,
        retry_schedule: crate::queries_shared::schedule_from_ms(opt_json_col(row, 21)?),
        oauth: opt_json_col(row, 22)?,
        paused: row.get(23)?,
        mtls: opt_json_col(row, 24)?,
        polling: row.get(25)?,
    })
}

pub const MESSAGE_COLS: &str =
    "id, app_id, event_type, event_id, payload, channels, tags, created_at, content_type, headers, ordering_key, \
     deliver_at";
/// How many columns [`MESSAGE_COLS`] holds: where the columns that follow them start.
pub const MESSAGE_NCOLS: usize = 12;

pub fn message(row: &Row) -> rusqlite::Result<Message> {
    Ok(Message {
        id: row.get(0)?,
        app_id: row.get(1)?,
        event_type: row.get(2)?,
        event_id: row.get(3)?,
        payload: row.get(4)?,
        channels: opt_json_col(row, 5)?,
        tags: opt_json_col(row, 6)?,
        created_at: time(row.get(7)?),
        content_type: row.get(8)?,
        headers: opt_json_col(row, 9)?.unwrap_or_default(),
        ordering_key: row.get(10)?,
        deliver_at: row.get::<_, Option<i64>>(11)?.map(time),
    })
}

pub const DELIVERY_COLS: &str = "msg_id, endpoint_id, app_id, status, attempts, due_at, trigger_type, updated_at";

pub fn delivery(row: &Row) -> rusqlite::Result<Delivery> {
    let status = status(row.get(3)?);
    Ok(Delivery {
        msg_id: row.get(0)?,
        endpoint_id: row.get(1)?,
        app_id: row.get(2)?,
        status,
        attempts: row.get(4)?,
        next_attempt_at: if status == DeliveryStatus::Pending { row.get::<_, Option<i64>>(5)?.map(time) } else { None },
        trigger: TriggerType::from_code(row.get(6)?),
        updated_at: time(row.get(7)?),
    })
}

pub const ATTEMPT_COLS: &str = "id, msg_id, endpoint_id, app_id, url, status, response_status, response, \
     duration_ms, trigger_type, created_at, request_headers";

pub fn attempt(row: &Row) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: row.get(0)?,
        msg_id: row.get(1)?,
        endpoint_id: row.get(2)?,
        app_id: row.get(3)?,
        url: row.get(4)?,
        status: status(row.get(5)?),
        response_status: row.get(6)?,
        response: row.get(7)?,
        duration_ms: row.get(8)?,
        trigger: TriggerType::from_code(row.get(9)?),
        created_at: time(row.get(10)?),
        request_headers: opt_json_col(row, 11)?,
    })
}
