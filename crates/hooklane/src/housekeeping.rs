//! Deletes what the store need not keep: idempotency keys past their expiry (Svix SDKs
//! send one with every POST, so the table would otherwise only grow), inbound request
//! records older than `[inbound] request_retention`, and messages older than
//! `message_retention` (with their deliveries and attempts) once none is pending; and
//! marks failed the background tasks whose node stopped while they ran.

use std::time::Duration;

use hooklane_core::Utc;
use hooklane_store::{DynStore, PruneMessages, Pruned};

/// Rows deleted per statement, so that no single delete holds the store's writer long.
const CHUNK: usize = 1000;
/// Rounds of one run that only step over old messages waiting for a delivery (each looks at
/// `2 × CHUNK`): past those, the next run goes on from there, so that a million of them (a
/// paused endpoint's) are not read again every minute.
const MAX_STEPS_PER_RUN: usize = 50;

/// How long records are kept; zero keeps them forever.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub inbound_requests: Duration,
    pub messages: Duration,
}

/// How often tasks whose node stopped are looked for, whatever `housekeeping_interval` is:
/// they are to be told failed about a minute after their last beat
/// ([`hooklane_server::tasks::INTERRUPTED_AFTER`]), not an interval of a day later.
pub const TASKS_EVERY: Duration = Duration::from_secs(30);

/// Rounds every `every`, and a look for interrupted tasks every `tasks_every`
/// ([`TASKS_EVERY`]), side by side: a run of deletions may last long (a retention lowered
/// over millions of messages), and tasks must not wait for it to be told failed.
pub async fn run(store: DynStore, (every, tasks_every): (Duration, Duration), retention: Retention) {
    tokio::join!(look_for_interrupted_tasks(&store, tasks_every), delete_expired(&store, every, retention));
}

async fn look_for_interrupted_tasks(store: &DynStore, every: Duration) {
    let mut tasks = tokio::time::interval(every);
    tasks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tasks.tick().await;
        match hooklane_server::tasks::fail_interrupted(store).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(tasks = n, "background tasks whose node stopped while they ran are marked failed"),
            Err(e) => tracing::warn!(error = %e, "could not mark interrupted background tasks; will try again"),
        }
    }
}

async fn delete_expired(store: &DynStore, every: Duration, retention: Retention) {
    // Where the next run looks for old messages (`""`: from the oldest).
    let mut after = String::new();
    let mut rounds = tokio::time::interval(every);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        match prune_all(store, retention, &mut after, CHUNK).await {
            Ok(total) if total != Pruned::default() => tracing::info!(
                idempotency_keys = total.idempotency_keys,
                inbound_requests = total.inbound_requests,
                messages = total.messages,
                tokens = total.tokens,
                background_tasks = total.tasks,
                "housekeeping deleted expired records"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; it will try again"),
        }
    }
}

/// `now - keep`, or `None` to keep everything (also when that is before the calendar's
/// start: nothing is that old).
fn cutoff(now: hooklane_core::DateTime<Utc>, keep: Duration) -> Option<hooklane_core::DateTime<Utc>> {
    if keep.is_zero() {
        return None;
    }
    chrono::Duration::from_std(keep).ok().and_then(|d| now.checked_sub_signed(d))
}

/// Deletes chunk after chunk until a round finds less than a chunk of every kind and has
/// looked at every old message, or has stepped over `MAX_STEPS_PER_RUN` windows of old
/// messages that wait for a delivery; `after` is where old messages are looked for, kept
/// from one run to the next (back to the oldest once a run reaches the newest).
async fn prune_all(
    store: &DynStore,
    retention: Retention,
    after: &mut String,
    chunk: usize,
) -> hooklane_store::StoreResult<Pruned> {
    let mut total = Pruned::default();
    let mut steps = 0;
    loop {
        let now = Utc::now();
        let messages = cutoff(now, retention.messages).map(|before| PruneMessages { before, after: after.clone() });
        let round = store.prune(now, cutoff(now, retention.inbound_requests), messages, chunk).await?;
        total.idempotency_keys += round.idempotency_keys;
        total.inbound_requests += round.inbound_requests;
        total.messages += round.messages;
        total.tokens += round.tokens;
        total.tasks += round.tasks;
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "idempotency_key")
            .increment(round.idempotency_keys);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "inbound_request")
            .increment(round.inbound_requests);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "message").increment(round.messages);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "token").increment(round.tokens);
        metrics::counter!("hooklane_housekeeping_deleted_total", "kind" => "background_task").increment(round.tasks);
        let full = chunk as u64;
        let counts = [round.idempotency_keys, round.inbound_requests, round.messages, round.tokens, round.tasks];
        let small = counts.iter().all(|n| *n < full) && !round.more;
        match round.messages_resume {
            Some(resume) => {
                // A round cut short by its budget of rows or bytes (messages sent to many
                // endpoints, large payloads) deleted what it could and goes on where it
                // began: it stepped over nothing. Counted as a step, it ended runs after 50
                // such rounds, a ceiling of a few hundred messages a second that a busy
                // server's ingest passes for good.
                let cut_short = resume == *after && round.messages > 0;
                steps += usize::from(round.messages < full && !cut_short);
                *after = resume;
                if small && steps >= MAX_STEPS_PER_RUN {
                    return Ok(total);
                }
            }
            None => {
                after.clear();
                if small {
                    return Ok(total);
                }
            }
        }
        // Let other writes through between chunks.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hooklane_core::ids::{new_id, MESSAGE};
    use hooklane_core::model::{Application, Endpoint, Message};
    use std::sync::Arc;

    #[test]
    fn a_cutoff_before_the_calendar_keeps_everything() {
        let now = Utc::now();
        assert_eq!(cutoff(now, Duration::ZERO), None);
        assert_eq!(cutoff(now, Duration::from_secs(60)), Some(now - chrono::TimeDelta::seconds(60)));
        // 300,000 years: past chrono's range, which must not panic the housekeeping task.
        assert_eq!(cutoff(now, Duration::from_secs(300_000 * 365 * 24 * 3600)), None);
    }

    async fn store_with_endpoint(dir: &tempfile::TempDir) -> (DynStore, Endpoint) {
        let store: DynStore =
            Arc::new(hooklane_store::sqlite::SqliteStore::open(dir.path().join("h.db")).await.expect("open"));
        let t = Utc::now();
        let app = Application::new("a", t);
        store.create_app(app.clone()).await.expect("app");
        let ep = Endpoint::new(app.id.clone(), "https://example.com/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", t);
        store.create_endpoint(ep.clone()).await.expect("endpoint");
        (store, ep)
    }

    /// A message of `ep`'s application created at `at` (its id made then, as the server's
    /// are: no two of one millisecond here), waiting for a delivery to `ep` or sent nowhere.
    async fn post(store: &DynStore, ep: &Endpoint, at: hooklane_core::DateTime<Utc>, waiting: bool) -> String {
        let msg =
            Message { id: hooklane_core::ids::floor(MESSAGE, at), ..Message::new(ep.app_id.clone(), "a.b", "{}", at) };
        let to = if waiting { vec![ep.id.clone()] } else { Vec::new() };
        store.create_message(msg.clone(), to, None).await.expect("message");
        msg.id
    }

    /// With a housekeeping interval of an hour, a task whose node stopped is still told
    /// failed soon after its last beat is a minute old: its look has a timer of its own
    /// (here every 100 ms).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_whose_node_stopped_are_looked_for_on_their_own_timer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = store_with_endpoint(&dir).await;
        let retention = Retention { inbound_requests: Duration::ZERO, messages: Duration::ZERO };
        let every = (Duration::from_secs(3600), Duration::from_millis(100));
        let run = tokio::spawn(run(store.clone(), every, retention));
        // After the first look: a task whose last beat was five minutes ago.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let task = hooklane_core::model::BackgroundTask {
            id: new_id(hooklane_core::ids::TASK),
            app_id: "app_1".into(),
            task: "endpoint.replay".into(),
            status: "running".into(),
            data: serde_json::json!({}),
            updated_at: Utc::now() - chrono::TimeDelta::minutes(5),
        };
        store.record_task(task.clone()).await.expect("task");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let now = store.get_task(None, &task.id).await.expect("get").expect("the task");
            if now.status == "failed" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "still {}", now.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        run.abort();
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// Rounds cut short by their budget of rows (messages sent to 16 endpoints: 17 rows
    /// each, against 8 a message) are not steps over waiting messages: one run deletes
    /// every old message, here in 60 such rounds, more than a run's 50 steps.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rounds_cut_short_by_their_budget_do_not_end_a_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, first) = store_with_endpoint(&dir).await;
        let mut endpoints = vec![first.id.clone()];
        for _ in 1..16 {
            let ep = Endpoint::new(
                first.app_id.clone(),
                "https://example.com/hook",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                Utc::now(),
            );
            store.create_endpoint(ep.clone()).await.expect("endpoint");
            endpoints.push(ep.id);
        }
        let old = Utc::now() - chrono::TimeDelta::days(2);
        let mut ids = Vec::new();
        for i in 0..120 {
            let at = old + chrono::TimeDelta::milliseconds(i);
            let msg = Message {
                id: hooklane_core::ids::floor(MESSAGE, at),
                ..Message::new(first.app_id.clone(), "a.b", "{}", at)
            };
            store.create_message(msg.clone(), endpoints.clone(), None).await.expect("message");
            // Failed for good: nothing is pending, the message may go.
            let keys = endpoints.iter().map(|ep| {
                hooklane_store::ClaimedKey::unchecked(hooklane_store::DeliveryKey {
                    msg_id: msg.id.clone(),
                    endpoint_id: ep.clone(),
                })
            });
            store.abandon_deliveries(keys.collect()).await.expect("abandon");
            ids.push(msg.id);
        }
        let retention = Retention { inbound_requests: Duration::ZERO, messages: DAY };
        // A chunk of 4: a budget of 32 rows, two of these messages a round.
        let mut after = String::new();
        let run = prune_all(&store, retention, &mut after, 4).await.expect("a run");
        assert_eq!(run.messages, 120, "a run ended before it had deleted every old message");
        for id in &ids {
            assert_eq!(store.get_message(&first.app_id, id).await.expect("get"), None);
        }
    }

    /// Old messages waiting for a delivery, more than a run steps over, then an old one that
    /// may go: a run stops after its steps and the next goes on from there, deletes it, and
    /// sends the one after back to the oldest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_step_over_waiting_messages_and_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, ep) = store_with_endpoint(&dir).await;
        let old = Utc::now() - chrono::TimeDelta::days(2);
        let at = |i: usize| old + chrono::TimeDelta::milliseconds(i as i64);
        let mut waiting = Vec::new();
        for i in 0..(2 * MAX_STEPS_PER_RUN + 20) {
            waiting.push(post(&store, &ep, at(i), true).await);
        }
        let free = post(&store, &ep, at(2 * MAX_STEPS_PER_RUN + 20), false).await;
        let recent = post(&store, &ep, Utc::now(), false).await;
        let retention = Retention { inbound_requests: Duration::ZERO, messages: DAY };
        // Windows of 2 (a chunk of 1): the first run steps over 50 of them, 100 messages.
        let mut after = String::new();
        let first = prune_all(&store, retention, &mut after, 1).await.expect("a run");
        assert_eq!((first.messages, after.as_str()), (0, waiting[2 * MAX_STEPS_PER_RUN - 1].as_str()));
        let second = prune_all(&store, retention, &mut after, 1).await.expect("a run");
        assert_eq!((second.messages, after.as_str()), (1, ""), "went on, deleted it, and reached the newest");
        assert_eq!(store.get_message(&ep.app_id, &free).await.expect("get"), None);
        for kept in waiting.iter().chain([&recent]) {
            assert!(store.get_message(&ep.app_id, kept).await.expect("get").is_some());
        }
    }
}
