//! The work of background tasks (recover, replays, purges, usage statistics), run apart
//! from the request that started it.
//!
//! The task is recorded `running` first, then its work runs on a task of its own, so a
//! client that gives up waiting (or drops the connection) does not cut the work short. The
//! request waits for it up to `task_wait` and answers the task as it then stands: `finished`
//! (with what it did), or still `running`, to be followed through
//! `GET /background-task/{id}`, as Svix's clients do; work that fails within the wait is
//! answered with its error. A node works on [`AT_ONCE`] tasks at a time; the others wait
//! their turn, `running`.
//!
//! While it runs, the work's node writes the task's `updated_at` every [`HEARTBEAT`]; a task
//! left `running` with no beat for [`INTERRUPTED_AFTER`] (its node crashed) is marked
//! `failed` by the housekeeping of any node ([`fail_interrupted`]), and a node shutting down
//! marks those it still runs ([`fail_unfinished`]). The work itself is not taken over: a
//! replay cut short has queued part of its messages, and running it again from the start
//! is the caller's choice. When a late beat lost that race, the real end is still recorded.
//!
//! Work that goes page by page asks [`go_on`] before each page, so that a task called
//! interrupted meanwhile stops at its next page rather than at its next heartbeat: a client
//! told it failed may run it again at once, and a bulk replay must not then overlap it.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use hooklane_core::ids::{self, new_id};
use hooklane_core::model::BackgroundTask;
use hooklane_store::{DynStore, StoreResult};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How often a running task's `updated_at` is written.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long without a beat before a running task counts as interrupted.
pub const INTERRUPTED_AFTER: Duration = Duration::from_secs(60);
/// Tasks one node works on at once; later ones wait (`running`, beating) for a turn, so
/// no caller can load the store with unbounded replays and purges.
pub const AT_ONCE: usize = 4;
/// Tasks one application may have running or waiting on a node, and tasks a node keeps in
/// all: beyond them a new one is refused (429), so that one application cannot queue its
/// replays ahead of every other's, nor make each node beat for thousands of tasks.
pub const PER_APPLICATION: usize = 16;
pub const PER_NODE: usize = 256;
/// Tasks of one application a node works on at once: its others wait behind them, not in
/// the node's queue, so that an application with many long replays does not hold every
/// turn, nor queue ahead of the tasks other applications start after it.
pub const RUNNING_PER_APPLICATION: usize = 2;
/// Tries at recording how a task ended, a second apart.
const END_TRIES: u32 = 5;
/// The `error` of a task whose node stopped while it ran.
const INTERRUPTED: &str = "interrupted: the node running this task stopped before it finished";
/// The `error` of a task still running when its node shut down.
const SHUT_DOWN: &str = "interrupted: the node running this task shut down before it finished";

/// The tasks this node works on, by id, each with its application.
pub(crate) struct Running {
    turns: Arc<Semaphore>,
    /// Each application's turns ([`RUNNING_PER_APPLICATION`]), while it has tasks.
    app_turns: Mutex<HashMap<String, Arc<Semaphore>>>,
    ids: Mutex<HashMap<String, String>>,
}

impl Default for Running {
    fn default() -> Self {
        Running { turns: Arc::new(Semaphore::new(AT_ONCE)), app_turns: Mutex::default(), ids: Mutex::default() }
    }
}

/// A task's turn to work: its application's, then the node's.
struct Turn {
    _app: tokio::sync::OwnedSemaphorePermit,
    _node: tokio::sync::OwnedSemaphorePermit,
}

/// A task's place on the node, given back when dropped (see [`run`]).
struct Place<'a> {
    running: &'a Running,
    id: &'a str,
    /// Handed over to the task's driver, which gives it back when the task ends.
    kept: bool,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.running.ids().remove(self.id);
        }
    }
}

impl Running {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A panic elsewhere while holding it leaves a map that is still valid.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a task of `app_id` to have its turn: one of its application's (taken
    /// first: a task waiting for it holds no turn of the node's), then one of the node's.
    fn turn(&self, app_id: &str) -> impl Future<Output = Option<Turn>> + Send + 'static {
        let app = {
            let mut turns = self.app_turns.lock().unwrap_or_else(|p| p.into_inner());
            // Those no task holds any more (the map's is their only reference) go.
            turns.retain(|_, s| Arc::strong_count(s) > 1);
            turns.entry(app_id.to_string()).or_insert_with(|| Arc::new(Semaphore::new(RUNNING_PER_APPLICATION))).clone()
        };
        let node = self.turns.clone();
        async move {
            let app = app.acquire_owned().await.ok()?;
            let node = node.acquire_owned().await.ok()?;
            Some(Turn { _app: app, _node: node })
        }
    }

    /// Takes a place for a task of `app_id`, unless the application or the node has as
    /// many as they may.
    fn admit(&self, task_id: &str, app_id: &str) -> ApiResult<()> {
        let mut ids = self.ids();
        if ids.len() >= PER_NODE {
            return Err(ApiError::TooManyTasks(format!(
                "this node runs {PER_NODE} background tasks already; try again when some have finished"
            )));
        }
        if ids.values().filter(|a| *a == app_id).count() >= PER_APPLICATION {
            return Err(ApiError::TooManyTasks(format!(
                "this application has {PER_APPLICATION} background tasks running or waiting; try again when some \
                 have finished"
            )));
        }
        ids.insert(task_id.to_string(), app_id.to_string());
        Ok(())
    }
}

/// How a task's work ended: the task as recorded, and the error when the work failed.
type Ended = (BackgroundTask, Option<ApiError>);

/// Records a `running` task of `kind` with `data`, runs `work` apart from the request, and
/// answers the task as it stands after at most the server's `task_wait`. What `work`
/// answers joins the task's data when it finishes. Work that failed within the wait is
/// answered with its error (a retry with the same `Idempotency-Key` then runs again); work
/// that fails later leaves the error in the task's data.
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
    s.0.tasks.admit(&task.id, app_id)?;
    // Its place goes back if the task is not recorded, and if this request is dropped (its
    // client gone) before the driver takes the place over: a place left behind would count
    // against the application until the node restarts.
    let mut place = Place { running: &s.0.tasks, id: &task.id, kept: false };
    s.0.store.record_task(task.clone()).await?;
    let turn = s.0.tasks.turn(app_id);
    let (state, running) = (s.clone(), task.clone());
    let handle = tokio::spawn(async move {
        let ended = drive(state.0.store.clone(), running, turn, work).await;
        state.0.tasks.ids().remove(&ended.0.id);
        ended
    });
    // The driver gives the place back now.
    place.kept = true;
    drop(place);
    match tokio::time::timeout(s.0.task_wait, handle).await {
        Ok(Ok((_, Some(error)))) => Err(error),
        Ok(Ok((ended, None))) => Ok(ended),
        Ok(Err(e)) => Err(ApiError::Internal(format!("the driver of background task {} ended: {e}", task.id))),
        // Still running: the work goes on, and the answer says so.
        Err(_) => Ok(task),
    }
}

/// Waits for the task's `turn`, then runs `work` to its end, beating for the task all the
/// while, and records how it ended. A panic in the work ends the task `failed` too.
///
/// A task the store no longer has running (housekeeping called it interrupted when its
/// beats went unwritten for a minute: the database away, the node paused; or it was
/// deleted with its application) is not started, or stops where it is, and its end is not
/// recorded: a client told it failed may run it again, and must not find it run twice.
async fn drive<T, F>(store: DynStore, mut task: BackgroundTask, turn: T, work: F) -> Ended
where
    T: Future,
    F: Future<Output = ApiResult<Map<String, Value>>>,
{
    let working = Arc::new(Working { store: store.clone(), id: task.id.clone(), stopped: AtomicBool::new(false) });
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Waiting for a turn counts as running: the task beats meanwhile.
    tokio::pin!(turn);
    let _turn = loop {
        tokio::select! {
            turn = &mut turn => break turn,
            _ = beat.tick() => if !still_running(&store, &task.id).await { return interrupted(task) },
        }
    };
    if !still_running(&store, &task.id).await {
        return interrupted(task);
    }
    let work = WORKING.scope(working.clone(), AssertUnwindSafe(work).catch_unwind());
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = beat.tick() => if !still_running(&store, &task.id).await { return interrupted(task) },
        }
    };
    // Work that stopped at a page because its task is no longer running ends as the store has it.
    if working.stopped.load(Ordering::SeqCst) {
        return interrupted(task);
    }
    let (status, found, error) = match outcome {
        Ok(Ok(found)) => ("finished", found, None),
        Ok(Err(e)) => {
            tracing::warn!(task = %task.id, kind = %task.task, error = %e, "a background task failed");
            ("failed", error_data(&e.to_string()), Some(e))
        }
        Err(_) => {
            tracing::error!(task = %task.id, kind = %task.task, "a background task's work panicked");
            let e = ApiError::Internal(format!("background task {} panicked", task.id));
            ("failed", error_data("the task's work failed unexpectedly"), Some(e))
        }
    };
    task.status = status.to_string();
    if let Some(data) = task.data.as_object_mut() {
        data.extend(found);
    }
    task.updated_at = crate::api::now();
    record_end(&store, &task).await;
    (task, error)
}

tokio::task_local! {
    /// The task whose work runs on this (tokio) task, for [`go_on`].
    static WORKING: Arc<Working>;
}

/// The running task a piece of work is done for.
struct Working {
    store: DynStore,
    id: String,
    /// Set once [`go_on`] found the task no longer running.
    stopped: AtomicBool,
}

/// Asked by a task's work before each page: false once the store no longer has the task
/// running (called interrupted, or deleted), and the work should stop where it is; its
/// end is then not recorded (see [`drive`]). It beats for the task too. Work run outside a
/// task (a unit test's) always goes on.
pub(crate) async fn go_on() -> bool {
    let Ok(working) = WORKING.try_with(Arc::clone) else { return true };
    if working.stopped.load(Ordering::SeqCst) || !still_running(&working.store, &working.id).await {
        working.stopped.store(true, Ordering::SeqCst);
        return false;
    }
    true
}

/// Beats for the task `id`: false once the store no longer has it running. A beat that could not
/// be written leaves it running (the store is away; housekeeping may call it interrupted,
/// which the next beat then finds).
async fn still_running(store: &DynStore, id: &str) -> bool {
    match store.beat_task(id, hooklane_core::Utc::now()).await {
        Ok(running) => running,
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "could not record a background task's heartbeat");
            true
        }
    }
}

/// `task` as the store has it once called interrupted: its work stopped or never started.
fn interrupted(mut task: BackgroundTask) -> Ended {
    tracing::warn!(task = %task.id, kind = %task.task, "a background task is no longer running in the store (called interrupted, or deleted): its work stops");
    task.status = "failed".to_string();
    if let Some(data) = task.data.as_object_mut() {
        data.extend(error_data(INTERRUPTED));
    }
    (task, None)
}

fn error_data(message: &str) -> Map<String, Value> {
    Map::from_iter([("error".to_string(), Value::String(message.to_string()))])
}

/// Records how a task ended, trying again a few times: unrecorded, the task would read
/// `running` until housekeeping called it interrupted.
async fn record_end(store: &DynStore, task: &BackgroundTask) {
    for attempt in 1..=END_TRIES {
        match store.update_task(task.clone()).await {
            Ok(()) => return,
            // Deleted meanwhile, with its application, or no longer running (called
            // interrupted, or failed at a shutdown): its end as the store has it stands.
            Err(hooklane_store::StoreError::NotFound) => return,
            Err(e) if attempt == END_TRIES => {
                tracing::error!(task = %task.id, error = %e, "could not record the end of a background task");
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Marks `failed` the tasks left `running` by a node that stopped beating for them.
pub async fn fail_interrupted(store: &DynStore) -> StoreResult<u64> {
    let now = hooklane_core::Utc::now();
    let before = now - chrono::Duration::from_std(INTERRUPTED_AFTER).unwrap_or(chrono::Duration::minutes(1));
    store.fail_stale_tasks(before, INTERRUPTED, now).await
}

/// At shutdown: marks `failed` the tasks this node still works on (their work stops with
/// the process), rather than leaving them to look alive until housekeeping notices.
pub async fn fail_unfinished(s: &AppState) {
    mark_unfinished(&s.0.store, &s.0.tasks).await;
}

async fn mark_unfinished(store: &DynStore, running: &Running) {
    let ids: Vec<String> = running.ids().drain().map(|(id, _)| id).collect();
    for id in ids {
        // Only if still running, in one write: one whose work ends meanwhile keeps its end.
        if let Err(e) = store.fail_task(&id, SHUT_DOWN, crate::api::now()).await {
            tracing::warn!(task = %id, error = %e, "could not mark an unfinished background task at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {

    /// An application with more tasks than its turns holds only its own: a task of another
    /// application started after them works at once, while the first one's others wait.
    #[tokio::test]
    async fn an_application_holds_its_own_turns_only() {
        let running = Running::default();
        let mut held = Vec::new();
        for _ in 0..RUNNING_PER_APPLICATION {
            held.push(running.turn("app_a").await.expect("a turn"));
        }
        // As many more as the node has turns, all waiting (given time to ask).
        let waiting: Vec<_> = (0..AT_ONCE).map(|_| tokio::spawn(running.turn("app_a"))).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let other = tokio::time::timeout(Duration::from_secs(5), running.turn("app_b")).await;
        assert!(other.is_ok_and(|t| t.is_some()), "another application's task waited behind the first one's");
        assert!(waiting.iter().all(|w| !w.is_finished()), "the application worked on more than its turns");
        drop(held.pop());
        let next = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if waiting.iter().any(|w| w.is_finished()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(next.await.is_ok(), "a turn given back goes to one waiting");
    }
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
        let (done, error) =
            drive(store.clone(), task.clone(), async {}, async { Ok(Map::from_iter([("replayed".into(), 7.into())])) })
                .await;
        assert!(error.is_none());
        assert_eq!(done.status, "finished");
        assert_eq!(done.data, serde_json::json!({ "endpointId": "ep_1", "replayed": 7 }));
        assert_eq!(stored(&store, &task).await, done);

        let task = running(&store, chrono::Duration::zero()).await;
        let failed = drive(store.clone(), task.clone(), async {}, async {
            Err(ApiError::Conflict("the endpoint is gone".into()))
        });
        let (failed, error) = failed.await;
        assert!(matches!(error, Some(ApiError::Conflict(_))), "{error:?}");
        assert_eq!(failed.status, "failed");
        assert_eq!(failed.data, serde_json::json!({ "endpointId": "ep_1", "error": "the endpoint is gone" }));
        assert_eq!(stored(&store, &task).await, failed);
    }

    /// Calls `task` interrupted, as housekeeping does when its beats went unwritten.
    async fn interrupt(store: DynStore, id: String) {
        assert!(store.fail_task(&id, INTERRUPTED, crate::api::now()).await.expect("fail"));
    }

    /// Work that counts its start, then its end three heartbeats later.
    async fn counted_work(
        started: Arc<std::sync::atomic::AtomicUsize>,
        ran: Arc<std::sync::atomic::AtomicUsize>,
    ) -> ApiResult<Map<String, Value>> {
        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(HEARTBEAT * 3).await;
        ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Map::from_iter([("replayed".into(), 7.into())]))
    }

    /// A task called interrupted (its beats unwritten for a minute) while it waited for its
    /// turn is not started when the turn comes, and records no end over `failed`: a client
    /// told it failed runs it again. (Real time: the turn comes long before a heartbeat.)
    #[tokio::test]
    async fn a_task_called_interrupted_while_it_waited_is_not_started() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (store, _dir) = store().await;
        let (started, ran) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let waited = running(&store, chrono::Duration::zero()).await;
        let turn = interrupt(store.clone(), waited.id.clone());
        let (ended, error) = drive(store.clone(), waited.clone(), turn, counted_work(started.clone(), ran)).await;
        assert!(error.is_none());
        assert_eq!((ended.status.as_str(), ended.data["error"].as_str()), ("failed", Some(INTERRUPTED)));
        assert_eq!(started.load(SeqCst), 0, "the work started after its task was called interrupted");
        let kept = stored(&store, &waited).await;
        assert_eq!((kept.status.as_str(), kept.data["error"].as_str()), ("failed", Some(INTERRUPTED)));
    }

    /// One called interrupted while it runs stops at its next beat, its end unrecorded.
    #[tokio::test(start_paused = true)]
    async fn a_task_called_interrupted_while_it_runs_stops() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (store, _dir) = store().await;
        let (started, ran) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let task = running(&store, chrono::Duration::zero()).await;
        let (store2, id) = (store.clone(), task.id.clone());
        let inner = counted_work(started, ran.clone());
        let work = async move {
            interrupt(store2, id).await;
            inner.await
        };
        let (ended, _) = drive(store.clone(), task.clone(), async {}, work).await;
        assert_eq!(ended.status, "failed");
        assert_eq!(ran.load(SeqCst), 0, "the work ran to its end");
        let kept = stored(&store, &task).await;
        assert_eq!((kept.status.as_str(), kept.data["error"].as_str()), ("failed", Some(INTERRUPTED)));
    }

    /// Work going page by page stops at its next page once its task is called interrupted,
    /// long before its next heartbeat (real time: one is 10 s away), and its end is not
    /// recorded over `failed`.
    #[tokio::test]
    async fn work_called_interrupted_stops_at_its_next_page() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (store, _dir) = store().await;
        let task = running(&store, chrono::Duration::zero()).await;
        let pages = Arc::new(AtomicUsize::new(0));
        let (store2, id, counted) = (store.clone(), task.id.clone(), pages.clone());
        let work = async move {
            while go_on().await {
                if counted.fetch_add(1, SeqCst) == 2 {
                    interrupt(store2.clone(), id.clone()).await;
                }
                if counted.load(SeqCst) >= 100 {
                    break;
                }
            }
            Ok(Map::from_iter([("replayed".into(), counted.load(SeqCst).into())]))
        };
        let driven = tokio::time::timeout(HEARTBEAT / 2, drive(store.clone(), task.clone(), async {}, work));
        let (ended, error) = driven.await.expect("the work went on past its task's interruption until a heartbeat");
        assert!(error.is_none());
        assert_eq!(pages.load(SeqCst), 3, "pages were worked after the task was called interrupted");
        assert_eq!((ended.status.as_str(), ended.data["error"].as_str()), ("failed", Some(INTERRUPTED)));
        let kept = stored(&store, &task).await;
        assert_eq!((kept.status.as_str(), kept.data["error"].as_str()), ("failed", Some(INTERRUPTED)));
        // Outside a task's driver, work goes on.
        assert!(go_on().await);
    }

    #[tokio::test]
    async fn panicking_work_fails_its_task() {
        let (store, _dir) = store().await;
        let task = running(&store, chrono::Duration::zero()).await;
        let (failed, error) = drive(store.clone(), task.clone(), async {}, async { panic!("a bug in the work") }).await;
        assert!(matches!(error, Some(ApiError::Internal(_))), "{error:?}");
        assert_eq!(
            (failed.status.as_str(), failed.data["error"].as_str()),
            ("failed", Some("the task's work failed unexpectedly"))
        );
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
        let (done, _) = drive(store.clone(), task, async {}, work).await;
        assert_eq!(done.data["beat"], true, "no heartbeat was written while the work ran");
    }

    #[test]
    fn an_application_and_a_node_keep_so_many_tasks() {
        let tasks = Running::default();
        for i in 0..PER_APPLICATION {
            tasks.admit(&format!("a{i}"), "app_a").expect("within the application's");
        }
        let refused = tasks.admit("a-more", "app_a").expect_err("one too many for the application");
        assert_eq!(refused.code(), "too_many_tasks");
        tasks.admit("b0", "app_b").expect("another application's");
        // A place comes back when a task ends.
        tasks.ids().remove("a0");
        tasks.admit("a-again", "app_a").expect("a place again");
        let kept = tasks.ids().len();
        for i in kept..PER_NODE {
            tasks.admit(&format!("n{i}"), &format!("app_{i}")).expect("within the node's");
        }
        assert_eq!(tasks.admit("last", "app_new").expect_err("the node is full").status(), 429);
    }

    #[test]
    fn a_place_goes_back_unless_its_driver_keeps_it() {
        let tasks = Running::default();
        tasks.admit("dropped", "app_a").expect("a place");
        // A request dropped while its task was being recorded: the place goes back.
        drop(Place { running: &tasks, id: "dropped", kept: false });
        assert!(tasks.ids().is_empty());
        tasks.admit("driven", "app_a").expect("a place");
        drop(Place { running: &tasks, id: "driven", kept: true });
        assert!(tasks.ids().contains_key("driven"), "the driver gives it back when the task ends");
    }

    #[tokio::test]
    async fn a_node_shutting_down_fails_the_tasks_it_still_runs() {
        let (store, _dir) = store().await;
        let (mine, ended, elsewhere) = (
            running(&store, chrono::Duration::zero()).await,
            running(&store, chrono::Duration::zero()).await,
            running(&store, chrono::Duration::zero()).await,
        );
        let done = BackgroundTask { status: "finished".into(), ..ended.clone() };
        store.update_task(done.clone()).await.expect("ended meanwhile");
        let tasks = Running::default();
        tasks.ids().extend([(mine.id.clone(), mine.app_id.clone()), (ended.id.clone(), ended.app_id.clone())]);
        mark_unfinished(&store, &tasks).await;
        let failed = stored(&store, &mine).await;
        assert_eq!((failed.status.as_str(), failed.data["error"].as_str()), ("failed", Some(SHUT_DOWN)));
        assert_eq!(stored(&store, &ended).await, done, "a task that ended keeps its end");
        assert_eq!(stored(&store, &elsewhere).await.status, "running", "another node's task is its own");
        assert!(tasks.ids().is_empty());
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
