//! SQLite queries of background tasks.

use hooklane_core::model::BackgroundTask;
use rusqlite::types::Value;
use rusqlite::{params, Connection, Row};

use super::queries::{execute, one_row, query_opt, Select};
use super::rows::{ms, time};
use crate::{Page, PageRequest, StoreResult, TaskFilter};

const TASK_COLS: &str = "id, app_id, task, status, data, updated_at";

fn task(row: &Row) -> rusqlite::Result<BackgroundTask> {
    let data: String = row.get(4)?;
    Ok(BackgroundTask {
        id: row.get(0)?,
        app_id: row.get(1)?,
        task: row.get(2)?,
        status: row.get(3)?,
        data: serde_json::from_str(&data)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?,
        updated_at: time(row.get(5)?),
    })
}

pub fn insert(conn: &Connection, t: &BackgroundTask) -> StoreResult<()> {
    execute(
        conn,
        &format!("INSERT INTO background_tasks ({TASK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![t.id, t.app_id, t.task, t.status, t.data.to_string(), ms(t.updated_at)],
    )?;
    Ok(())
}

pub fn update(conn: &Connection, t: &BackgroundTask) -> StoreResult<()> {
    let changed = execute(
        conn,
        "UPDATE background_tasks SET status = ?2, data = ?3, updated_at = ?4 WHERE id = ?1 AND status = 'running'",
        params![t.id, t.status, t.data.to_string(), ms(t.updated_at)],
    )?;
    one_row(changed)
}

pub fn beat(conn: &Connection, id: &str, at: i64) -> StoreResult<bool> {
    let sql = "UPDATE background_tasks SET updated_at = ?2 WHERE id = ?1 AND status = 'running'";
    Ok(execute(conn, sql, params![id, at])? > 0)
}

/// Fails the running tasks not updated since `before` (only `id`, when given).
pub fn fail_stale(conn: &Connection, id: Option<&str>, before: i64, reason: &str, now: i64) -> StoreResult<u64> {
    let changed = execute(
        conn,
        "UPDATE background_tasks SET status = 'failed', data = json_set(data, '$.error', ?2), updated_at = ?3 \
         WHERE status = 'running' AND updated_at < ?1 AND (?4 IS NULL OR id = ?4)",
        params![before, reason, now, id],
    )?;
    Ok(changed as u64)
}

pub fn get(conn: &Connection, app_id: Option<&str>, id: &str) -> StoreResult<Option<BackgroundTask>> {
    let sql = format!("SELECT {TASK_COLS} FROM background_tasks WHERE id = ?1 AND (?2 IS NULL OR app_id = ?2)");
    query_opt(conn, &sql, params![id, app_id], task)
}

pub fn list(conn: &Connection, filter: &TaskFilter, page: &PageRequest) -> StoreResult<Page<BackgroundTask>> {
    let text = |s: &String| Value::Text(s.clone());
    Select::new(TASK_COLS, "background_tasks")
        .and_if(filter.app_id.as_ref(), "app_id = ?", text)
        .and_if(filter.status.as_ref(), "status = ?", text)
        .and_if(filter.task.as_ref(), "task = ?", text)
        .page(conn, "id", page, task)
}
