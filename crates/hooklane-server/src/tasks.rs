//! The work of background tasks (recover, replays, purges, usage statistics), run apart
//! from the request that started it.
//!
//! The task is recorded `running` first, then its work runs on a task of its own, so a
//! client that gives up waiting (or drops the connection) does not cut the work short. The
//! request waits for it up to `task_wait` and answers the task as it then stands: `finished`
//! (with what it did), `failed` (with the error), or still `running`, to be followed through
//! `GET /background-task/{id}`, as Svix's clients do.
//!
//! While it runs, the work's node writes the task's `updated_at` every [`HEARTBEAT`]; a task
//! left `running` with no beat for [`INTERRUPTED_AFTER`] (its node stopped or crashed) is
//! marked `failed` by the housekeeping of any node ([`fail_interrupted`]). The work itself
//! is not taken over: a replay cut short has queued part of its messages, and running it
//! again from the start is the caller's choice.

use std::future::Future;
use std::time::Duration;

use hooklane_core::ids::{self, new_id};
use hooklane_core::model::BackgroundTask;
use hooklane_store::{DynStore, StoreResult};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How often a running task's `updated_at` is written.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long without a beat before a running task counts as interrupted.
pub const INTERRUPTED_AFTER: Duration = Duration::from_secs(60);
/// The `error` of a task whose node stopped while it ran.
const INTERRUPTED: &str = "interrupted: the node running this task stopped before it finished";

/// Records a `running` task of `kind` with `data`, runs `work` apart from the request, and
/// answers the task as it stands after at most the server's `task_wait`. What `work`
/// answers joins the task's data when it finishes; its error becomes the data's `error`.
pub(crate) async fn run<F>(
    s: &AppState,
    app_id: &str,
    kind: &str,
    data: Map<String, Value>,
    work: F,
) -> ApiResult<BackgroundTask>
where
    F: Future<Output = ApiResult<Map<String, Value>>> + Send + 'static,
{
    let task = BackgroundTask {
        id: new_id(ids::TASK),
        app_id: app_id.to_string(),
        task: kind.to_string(),
        status: "running".to_string(),
        data: Value::Object(data),
        updated_at: crate::api::now(),
    };
    s.0.store.record_task(task.clone()).await?;
    let handle = tokio::spawn(drive(s.0.store.clone(), task.clone(), work));
    match tokio::time::timeout(s.0.task_wait, handle).await {
        Ok(Ok(ended)) => Ok(ended),
        Ok(Err(e)) => Err(ApiError::Internal(format!("background task {} panicked: {e}", task.id))),
        // Still running: the work goes on, and the answer says so.
        Err(_) => Ok(task),
    }
}

/// Runs `work` to its end, beating for the task meanwhile, and records how it ended.
async fn drive<F>(store: DynStore, mut task: BackgroundTask, work: F) -> BackgroundTask
where
    F: Future<Output = ApiResult<Map<String, Value>>>,
{
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = beat.tick() => {
                task.updated_at = crate::api::now();
                if let Err(e) = store.update_task(task.clone()).await {
                    tracing::warn!(task = %task.id, error = %e, "could not record a background task's heartbeat");
                }
            }
        }
    };
    let (status, found) = match outcome {
        Ok(found) => ("finished", found),
        Err(e) => {
            tracing::warn!(task = %task.id, kind = %task.task, error = %e, "a background task failed");
            ("failed", Map::from_iter([("error".to_string(), Value::String(e.to_string()))]))
        }
    };
    task.status = status.to_string();
    if let Some(data) = task.data.as_object_mut() {
        data.extend(found);
    }
    task.updated_at = crate::api::now();
    // Unrecorded, the task would read `running` until housekeeping calls it interrupted.
    if let Err(e) = store.update_task(task.clone()).await {
        tracing::warn!(task = %task.id, error = %e, "could not record the end of a background task");
    }
    task
}

/// Marks `failed` the tasks left `running` by a node that stopped beating for them.
pub async fn fail_interrupted(store: &DynStore) -> StoreResult<u64> {
    let now = hooklane_core::Utc::now();
    let before = now - chrono::Duration::from_std(INTERRUPTED_AFTER).unwrap_or(chrono::Duration::minutes(1));
    store.fail_stale_tasks(before, INTERRUPTED, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (DynStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = hooklane_store::open(&dir.path().join("tasks.db").display().to_string()).await.expect("store");
        (store, dir)
    }

    async fn running(store: &DynStore, age: chrono::Duration) -> BackgroundTask {
        let mut data = Map::new();
        data.insert("endpointId".into(), "ep_1".into());
        let task = BackgroundTask {
            id: new_id(ids::TASK),
            app_id: "app_1".into(),
            task: "endpoint.replay".into(),
            status: "running".into(),
            data: Value::Object(data),
            updated_at: crate::api::now() - age,
        };
        store.record_task(task.clone()).await.expect("record");
        task
    }

    async fn stored(store: &DynStore, task: &BackgroundTask) -> BackgroundTask {
        store.get_task(None, &task.id).await.expect("get").expect("the task")
    }

    #[tokio::test]
    async fn finished_work_joins_its_data_and_failed_work_its_error() {
        let (store, _dir) = store().await;
        let task = running(&store, chrono::Duration::zero()).await;
        let done =
            drive(store.clone(), task.clone(), async { Ok(Map::from_iter([("replayed".into(), 7.into())])) }).await;
        assert_eq!(done.status, "finished");
        assert_eq!(done.data, serde_json::json!({ "endpointId": "ep_1", "replayed": 7 }));
        assert_eq!(stored(&store, &task).await, done);

        let task = running(&store, chrono::Duration::zero()).await;
        let failed =
            drive(store.clone(), task.clone(), async { Err(ApiError::Conflict("the endpoint is gone".into())) });
        let failed = failed.await;
        assert_eq!(failed.status, "failed");
        assert_eq!(failed.data, serde_json::json!({ "endpointId": "ep_1", "error": "the endpoint is gone" }));
        assert_eq!(stored(&store, &task).await, failed);
    }

    #[tokio::test(start_paused = true)]
    async fn long_work_beats_for_its_task() {
        let (store, _dir) = store().await;
        let task = running(&store, chrono::Duration::hours(1)).await;
        let (reader, seen) = (store.clone(), task.clone());
        // The work sees its task's `updated_at` after two heartbeats' time.
        let work = async move {
            tokio::time::sleep(HEARTBEAT * 2 + Duration::from_secs(1)).await;
            let now = reader.get_task(None, &seen.id).await.expect("get").expect("task");
            Ok(Map::from_iter([("beat".into(), (now.updated_at > seen.updated_at).into())]))
        };
        let done = drive(store.clone(), task, work).await;
        assert_eq!(done.data["beat"], true, "no heartbeat was written while the work ran");
    }

    #[tokio::test]
    async fn tasks_left_running_without_a_beat_are_interrupted() {
        let (store, _dir) = store().await;
        let orphan = running(&store, chrono::Duration::minutes(5)).await;
        let live = running(&store, chrono::Duration::seconds(5)).await;
        assert_eq!(fail_interrupted(&store).await.expect("fail"), 1);
        let failed = stored(&store, &orphan).await;
        assert_eq!((failed.status.as_str(), failed.data["error"].as_str()), ("failed", Some(INTERRUPTED)));
        assert_eq!(stored(&store, &live).await.status, "running");
    }
}
