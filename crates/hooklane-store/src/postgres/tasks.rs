//! PostgreSQL queries of background tasks.

use deadpool_postgres::GenericClient;
use hooklane_core::model::BackgroundTask;
use tokio_postgres::Row;

use super::queries::{self, execute, one_row, query_opt, Select};
use super::rows::{get, ms, time};
use crate::{Page, PageRequest, StoreError, StoreResult, TaskFilter};

const TASK_COLS: &str = "id, app_id, task, status, data, updated_at";

fn task(row: &Row, at: usize) -> StoreResult<BackgroundTask> {
    let data: &str = get(row, at + 4)?;
    Ok(BackgroundTask {
        id: get(row, at)?,
        app_id: get(row, at + 1)?,
        task: get(row, at + 2)?,
        status: get(row, at + 3)?,
        data: serde_json::from_str(data).map_err(|e| StoreError::Corrupt(format!("background task data: {e}")))?,
        updated_at: time(get(row, at + 5)?),
    })
}

pub async fn insert<C: GenericClient>(c: &C, t: &BackgroundTask) -> StoreResult<()> {
    execute(
        c,
        &format!("INSERT INTO background_tasks ({TASK_COLS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[&t.id, &t.app_id, &t.task, &t.status, &t.data.to_string(), &ms(t.updated_at)],
    )
    .await?;
    Ok(())
}

pub async fn update<C: GenericClient>(c: &C, t: &BackgroundTask) -> StoreResult<()> {
    let changed = execute(
        c,
        "UPDATE background_tasks SET status = $2, data = $3, updated_at = $4 WHERE id = $1 AND status = 'running'",
        &[&t.id, &t.status, &t.data.to_string(), &ms(t.updated_at)],
    )
    .await?;
    one_row(changed)
}

pub async fn beat<C: GenericClient>(c: &C, id: &str, at: i64) -> StoreResult<bool> {
    let sql = "UPDATE background_tasks SET updated_at = $2 WHERE id = $1 AND status = 'running'";
    Ok(execute(c, sql, &[&id, &at]).await? > 0)
}

/// Fails the running tasks not updated since `before` (only `id`, when given).
pub async fn fail_stale<C: GenericClient>(
    c: &C,
    id: Option<&str>,
    before: i64,
    reason: &str,
    now: i64,
) -> StoreResult<u64> {
    execute(
        c,
        "UPDATE background_tasks SET status = 'failed', \
         data = (data::jsonb || jsonb_build_object('error', $2::text))::text, updated_at = $3 \
         WHERE status = 'running' AND updated_at < $1 AND ($4::text IS NULL OR id = $4)",
        &[&before, &reason, &now, &id],
    )
    .await
}

pub async fn get_task<C: GenericClient>(c: &C, app_id: Option<&str>, id: &str) -> StoreResult<Option<BackgroundTask>> {
    query_opt(
        c,
        &format!("SELECT {TASK_COLS} FROM background_tasks WHERE id = $1 AND ($2::text IS NULL OR app_id = $2)"),
        &[&id, &app_id],
    )
    .await?
    .map(|r| task(&r, 0))
    .transpose()
}

pub async fn list<C: GenericClient>(
    c: &C,
    filter: &TaskFilter,
    page: &PageRequest,
) -> StoreResult<Page<BackgroundTask>> {
    Select::new(TASK_COLS, "background_tasks")
        .and_if(filter.app_id.clone(), "app_id = ?", queries::text)
        .and_if(filter.status.clone(), "status = ?", queries::text)
        .and_if(filter.task.clone(), "task = ?", queries::text)
        .page(c, "id", page, task)
        .await
}
