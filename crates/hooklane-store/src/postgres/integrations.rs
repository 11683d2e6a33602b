//! PostgreSQL queries of integrations and their keys.

use deadpool_postgres::GenericClient;
use hooklane_core::model::Integration;
use tokio_postgres::Row;

use super::queries::{self, execute, one_row, query_opt, Select};
use super::rows::{get, ms, time};
use crate::queries_shared::{feature_flags_column, flags_json};
use crate::{Page, PageRequest, StoreError, StoreResult};

const COLS: &str = "id, app_id, name, feature_flags, created_at, updated_at";

fn integration(row: &Row, at: usize) -> StoreResult<Integration> {
    let flags: &str = get(row, at + 3)?;
    Ok(Integration {
        id: get(row, at)?,
        app_id: get(row, at + 1)?,
        name: get(row, at + 2)?,
        feature_flags: serde_json::from_str(flags)
            .map_err(|e| StoreError::Corrupt(format!("integration feature flags: {e}")))?,
        created_at: time(get(row, at + 4)?),
        updated_at: time(get(row, at + 5)?),
    })
}

/// Stores a new integration of an existing application ([`StoreError::NotFound`] when the
/// application is gone). The application's row is share-locked until the insert commits, so
/// a deletion of the application waits for it, and then deletes the integration too.
pub async fn insert<C: GenericClient>(c: &C, i: &Integration) -> StoreResult<()> {
    let inserted = execute(
        c,
        &format!(
            "INSERT INTO integrations ({COLS}) \
             SELECT $1, id, $3, $4, $5, $6 FROM applications WHERE id = $2 FOR SHARE"
        ),
        &[&i.id, &i.app_id, &i.name, &flags_json(&i.feature_flags), &ms(i.created_at), &ms(i.updated_at)],
    )
    .await?;
    one_row(inserted)
}

pub async fn get_integration<C: GenericClient>(c: &C, app_id: &str, id: &str) -> StoreResult<Option<Integration>> {
    query_opt(c, &format!("SELECT {COLS} FROM integrations WHERE id = $1 AND app_id = $2"), &[&id, &app_id])
        .await?
        .map(|r| integration(&r, 0))
        .transpose()
}

pub async fn list<C: GenericClient>(c: &C, app_id: &str, page: &PageRequest) -> StoreResult<Page<Integration>> {
    Select::new(COLS, "integrations").and("app_id = ?", [queries::text(app_id)]).page(c, "id", page, integration).await
}

/// Saves the name and the feature flags (the rest never changes); its key gets the flags
/// (in the caller's transaction).
pub async fn update<C: GenericClient>(c: &C, i: &Integration) -> StoreResult<()> {
    let changed = execute(
        c,
        "UPDATE integrations SET name = $3, feature_flags = $4, updated_at = $5 WHERE id = $1 AND app_id = $2",
        &[&i.id, &i.app_id, &i.name, &flags_json(&i.feature_flags), &ms(i.updated_at)],
    )
    .await?;
    one_row(changed)?;
    execute(
        c,
        "UPDATE tokens SET feature_flags = $2 WHERE integration_id = $1",
        &[&i.id, &feature_flags_column(&i.feature_flags)],
    )
    .await?;
    Ok(())
}

/// Deletes the integration and its key (in the caller's transaction).
pub async fn delete<C: GenericClient>(c: &C, app_id: &str, id: &str) -> StoreResult<()> {
    one_row(execute(c, "DELETE FROM integrations WHERE id = $1 AND app_id = $2", &[&id, &app_id]).await?)?;
    execute(c, "DELETE FROM tokens WHERE integration_id = $1", &[&id]).await?;
    Ok(())
}

/// Makes `key_hash` the integration's only key (in the caller's transaction): the one it
/// had stops working at once. Locks the integration's row first, so two rotations at once
/// leave one key, the later one's.
pub async fn set_key<C: GenericClient>(c: &C, app_id: &str, id: &str, key_hash: &str, now: i64) -> StoreResult<()> {
    let changed =
        execute(c, "UPDATE integrations SET updated_at = $3 WHERE id = $1 AND app_id = $2", &[&id, &app_id, &now])
            .await?;
    one_row(changed)?;
    execute(c, "DELETE FROM tokens WHERE integration_id = $1", &[&id]).await?;
    // The key has the integration's flags.
    execute(
        c,
        "INSERT INTO tokens (hash, app_id, created_at, expires_at, integration_id, feature_flags) \
         SELECT $1, app_id, $3, NULL, id, feature_flags \
         FROM integrations WHERE id = $4 AND app_id = $2",
        &[&key_hash, &app_id, &now, &id],
    )
    .await?;
    Ok(())
}
