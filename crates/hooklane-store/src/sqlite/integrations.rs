//! SQLite queries of integrations and their keys.

use hooklane_core::model::Integration;
use rusqlite::types::Value;
use rusqlite::{params, Connection, Row};

use super::queries::{execute, one_row, query_opt, Select};
use super::rows::{ms, time};
use crate::queries_shared::{feature_flags_column, flags_json};
use crate::{Page, PageRequest, StoreResult};

const COLS: &str = "id, app_id, name, feature_flags, created_at, updated_at";

fn integration(row: &Row) -> rusqlite::Result<Integration> {
    let flags: String = row.get(3)?;
    Ok(Integration {
        id: row.get(0)?,
        app_id: row.get(1)?,
        name: row.get(2)?,
        feature_flags: serde_json::from_str(&flags)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e)))?,
        created_at: time(row.get(4)?),
        updated_at: time(row.get(5)?),
    })
}

/// Stores a new integration of an existing application ([`crate::StoreError::NotFound`]
/// when the application is gone).
pub fn insert(conn: &Connection, i: &Integration) -> StoreResult<()> {
    let inserted = execute(
        conn,
        &format!("INSERT INTO integrations ({COLS}) SELECT ?1, id, ?3, ?4, ?5, ?6 FROM applications WHERE id = ?2"),
        params![i.id, i.app_id, i.name, flags_json(&i.feature_flags), ms(i.created_at), ms(i.updated_at)],
    )?;
    one_row(inserted)
}

pub fn get(conn: &Connection, app_id: &str, id: &str) -> StoreResult<Option<Integration>> {
    let sql = format!("SELECT {COLS} FROM integrations WHERE id = ?1 AND app_id = ?2");
    query_opt(conn, &sql, params![id, app_id], integration)
}

pub fn list(conn: &Connection, app_id: &str, page: &PageRequest) -> StoreResult<Page<Integration>> {
    Select::new(COLS, "integrations").and("app_id = ?", [Value::Text(app_id.to_string())]).page(
        conn,
        "id",
        page,
        integration,
    )
}

/// Saves the name and the feature flags (the rest never changes); its key gets the flags.
pub fn update(conn: &Connection, i: &Integration) -> StoreResult<()> {
    let changed = execute(
        conn,
        "UPDATE integrations SET name = ?3, feature_flags = ?4, updated_at = ?5 WHERE id = ?1 AND app_id = ?2",
        params![i.id, i.app_id, i.name, flags_json(&i.feature_flags), ms(i.updated_at)],
    )?;
    one_row(changed)?;
    execute(
        conn,
        "UPDATE tokens SET feature_flags = ?2 WHERE integration_id = ?1",
        params![i.id, feature_flags_column(&i.feature_flags)],
    )?;
    Ok(())
}

/// Deletes the integration and its key.
pub fn delete(conn: &Connection, app_id: &str, id: &str) -> StoreResult<()> {
    one_row(execute(conn, "DELETE FROM integrations WHERE id = ?1 AND app_id = ?2", params![id, app_id])?)?;
    execute(conn, "DELETE FROM tokens WHERE integration_id = ?1", [id])?;
    Ok(())
}

/// Makes `key_hash` the integration's only key: the one it had stops working at once.
pub fn set_key(conn: &Connection, app_id: &str, id: &str, key_hash: &str, now: i64) -> StoreResult<()> {
    one_row(execute(
        conn,
        "UPDATE integrations SET updated_at = ?3 WHERE id = ?1 AND app_id = ?2",
        params![id, app_id, now],
    )?)?;
    execute(conn, "DELETE FROM tokens WHERE integration_id = ?1", [id])?;
    // The key has the integration's flags.
    execute(
        conn,
        "INSERT INTO tokens (hash, app_id, created_at, expires_at, integration_id, feature_flags) \
         SELECT ?1, app_id, ?3, NULL, id, feature_flags \
         FROM integrations WHERE id = ?4 AND app_id = ?2",
        params![key_hash, app_id, now, id],
    )?;
    Ok(())
}
