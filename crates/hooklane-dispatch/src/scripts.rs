//! Where transformations run: in worker processes (`hooklane script-worker`) that are
//! killed when a run outlives its deadline, a few at a time.
//!
//! QuickJS checks its interrupt handler in its interpreter loop, not inside built-in
//! functions, and some of those are quadratic (`indexOf` of a long needle in a long
//! string, sorting many long equal strings): a few lines of code can keep a thread busy
//! for minutes, and a thread cannot be stopped from outside. A process can. So every run
//! goes to a worker process with a hard deadline ([`HARD_LIMIT`]); one that misses it is
//! killed, and the next run starts a new one. At most `workers` runs go at once, so
//! transformations never take more than that many CPUs from deliveries and the API.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::script::{Job, Outcome, ScriptError, TIME_LIMIT};

/// How long a run may take, as the caller sees it (the worker's own limit, [`TIME_LIMIT`],
/// stops ordinary runaway code well before).
pub const HARD_LIMIT: Duration = Duration::from_secs(2);
/// How long a delivery waits for a free worker before it is retried later instead.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// How long an API call (a preview, or the check of code being set) waits for the API's
/// own worker.
const API_WAIT: Duration = Duration::from_secs(5);
/// Bytes of an answer beyond its payload allowance (URL, headers, error text, framing).
const ANSWER_MARGIN: usize = 256 << 10;

/// How transformations are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// In worker processes started as `program args…`.
    Workers { program: PathBuf, args: Vec<String> },
    /// On a thread of this process: for tests of this crate, which have no worker
    /// program. A run the interrupt handler cannot stop keeps its thread.
    InProcess,
}

/// Why a run gave no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptFailure {
    /// The code failed (an exception, a limit, what it returned): running it again on the
    /// same message would fail again.
    #[error("{0}")]
    Code(ScriptError),
    /// No worker could run it now (none free in time, or one could not be started or
    /// died): worth trying again later, and no fault of the code or the endpoint.
    #[error("{0}")]
    Unavailable(String),
}

/// Runs transformation jobs: deliveries' at most `workers` at once, and one endpoint's at
/// most `workers - 1` (at least one) of those, so that an endpoint with slow code cannot
/// keep every other endpoint's transformations waiting; the API's (previews, checks of
/// code being set) one at a time on top, so that neither can hold up the other.
pub struct Scripts {
    isolation: Isolation,
    delivery_slots: Semaphore,
    per_endpoint: usize,
    endpoints: Mutex<HashMap<String, Arc<Semaphore>>>,
    api_slots: Semaphore,
    idle: Mutex<Vec<Worker>>,
}

struct Worker {
    // Held so that dropping the worker kills the process (`kill_on_drop`).
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Scripts {
    pub fn new(isolation: Isolation, workers: usize) -> Self {
        let workers = workers.max(1);
        Scripts {
            isolation,
            delivery_slots: Semaphore::new(workers),
            per_endpoint: (workers - 1).max(1),
            endpoints: Mutex::new(HashMap::new()),
            api_slots: Semaphore::new(1),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Checks code before it is saved ([`crate::script::check`]), on the API's worker.
    pub async fn check(&self, code: String) -> Result<(), ScriptFailure> {
        self.call(Job { code, webhook: None, max_output: 0 }, &self.api_slots, API_WAIT).await.map(drop)
    }

    /// Runs a transformation for a delivery to `endpoint_id` ([`crate::script::run`]).
    pub async fn run(&self, endpoint_id: &str, job: Job) -> Result<Outcome, ScriptFailure> {
        let endpoint = {
            let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
            endpoints
                .entry(endpoint_id.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_endpoint)))
                .clone()
        };
        let waited = tokio::time::Instant::now();
        let answer = match tokio::time::timeout(DELIVERY_WAIT, endpoint.acquire()).await {
            Ok(Ok(_own)) => {
                let left = DELIVERY_WAIT.saturating_sub(waited.elapsed());
                self.call(job, &self.delivery_slots, left).await
            }
            _ => Err(ScriptFailure::Unavailable(format!(
                "this endpoint's earlier transformations kept its workers busy for {} s",
                DELIVERY_WAIT.as_secs()
            ))),
        };
        // The endpoint's entry goes once nobody holds or waits for it (this run's share is
        // let go under the lock, so that of two runs ending together the last removes it).
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        drop(endpoint);
        if endpoints.get(endpoint_id).is_some_and(|e| Arc::strong_count(e) == 1) {
            endpoints.remove(endpoint_id);
        }
        Self::outcome(answer)
    }

    /// Runs a transformation for the API (a preview), on the API's worker.
    pub async fn run_for_api(&self, job: Job) -> Result<Outcome, ScriptFailure> {
        Self::outcome(self.call(job, &self.api_slots, API_WAIT).await)
    }

    fn outcome(answer: Result<Option<Outcome>, ScriptFailure>) -> Result<Outcome, ScriptFailure> {
        answer?.ok_or_else(|| ScriptFailure::Unavailable("the worker answered a run as a check".into()))
    }

    async fn call(&self, job: Job, slots: &Semaphore, wait: Duration) -> Result<Option<Outcome>, ScriptFailure> {
        let _slot = match tokio::time::timeout(wait, slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(ScriptFailure::Unavailable("scripts are shutting down".into())),
            Err(_) => return Err(ScriptFailure::Unavailable("no transformation worker was free in time".into())),
        };
        let (program, args) = match &self.isolation {
            Isolation::Workers { program, args } => (program, args),
            Isolation::InProcess => {
                let run = tokio::task::spawn_blocking(move || job.answer());
                return match tokio::time::timeout(HARD_LIMIT, run).await {
                    Ok(Ok(answer)) => answer.map_err(ScriptFailure::Code),
                    Ok(Err(e)) => Err(ScriptFailure::Unavailable(format!("the run was lost: {e}"))),
                    Err(_) => Err(ScriptFailure::Code(too_long())),
                };
            }
        };
        // Serialised before a worker is taken: a job that cannot be written costs none.
        let line = serde_json::to_string(&job).map_err(|e| ScriptFailure::Unavailable(e.to_string()))?;
        // The payload travels as a JSON string inside the answer, where every `"` and `\`
        // doubles.
        let answer_limit = job.max_output.saturating_mul(2).saturating_add(ANSWER_MARGIN);
        // An idle worker may have died since its last job (killed from outside): then the
        // job goes once more to a new one.
        for attempt in 0..2 {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let reused = idle.is_some();
            let mut worker = match idle {
                Some(w) => w,
                None => Worker::start(program, args)
                    .map_err(|e| ScriptFailure::Unavailable(format!("could not start a transformation worker: {e}")))?,
            };
            match tokio::time::timeout(HARD_LIMIT, worker.exchange(&line, answer_limit)).await {
                Ok(Ok(answer)) => {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(worker);
                    return answer.map_err(ScriptFailure::Code);
                }
                // The worker is dropped, which kills it.
                Ok(Err(_)) if reused && attempt == 0 => continue,
                Ok(Err(e)) => return Err(ScriptFailure::Unavailable(format!("the transformation worker failed: {e}"))),
                Err(_) => {
                    metrics::counter!("hooklane_transformation_workers_killed_total").increment(1);
                    return Err(ScriptFailure::Code(too_long()));
                }
            }
        }
        Err(ScriptFailure::Unavailable("the transformation worker failed twice".into()))
    }
}

fn too_long() -> ScriptError {
    ScriptError(format!(
        "the transformation ran longer than {} ms (stopped after {} s)",
        TIME_LIMIT.as_millis(),
        HARD_LIMIT.as_secs()
    ))
}

impl Worker {
    fn start(program: &PathBuf, args: &[String]) -> std::io::Result<Worker> {
        let mut child = Command::new(program)
            .args(args)
            // Nothing of the server's environment (its configuration, credentials) is
            // the worker's business.
            .env_clear()
            // Its own process group: a Ctrl-C or a service manager's stop signal meant for
            // the server does not end the workers of the deliveries it is finishing.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the worker's pipes are missing"));
        };
        Ok(Worker { _child: child, stdin, stdout: BufReader::new(stdout) })
    }

    /// Sends one job line and reads its answer line, of at most `limit` bytes.
    async fn exchange(&mut self, line: &str, limit: usize) -> std::io::Result<Result<Option<Outcome>, ScriptError>> {
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        let mut answer = Vec::new();
        (&mut self.stdout).take(limit as u64).read_until(b'\n', &mut answer).await?;
        if answer.last() != Some(&b'\n') {
            let why = if answer.is_empty() { "the worker exited" } else { "the worker's answer is too long" };
            return Err(std::io::Error::other(why));
        }
        serde_json::from_slice(&answer).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Webhook;
    use std::collections::BTreeMap;

    fn job(code: &str) -> Job {
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), "{}".into(), BTreeMap::new());
        Job { code: code.into(), webhook: Some(webhook), max_output: 1 << 20 }
    }

    #[tokio::test]
    async fn in_process_runs_and_checks() {
        let scripts = Scripts::new(Isolation::InProcess, 1);
        assert_eq!(
            scripts.run("ep", job("function handler(w) { w.cancel = true; return w }")).await,
            Ok(Outcome::Cancel)
        );
        assert!(scripts.check("function handler(w) { return w }".into()).await.is_ok());
        let failed = scripts.check("nothing here".into()).await;
        assert!(matches!(failed, Err(ScriptFailure::Code(_))), "{failed:?}");
    }

    /// A worker that never answers (`sleep`) is killed at the deadline: the code's fault.
    #[tokio::test]
    async fn a_worker_that_misses_its_deadline_is_killed() {
        let scripts = Scripts::new(Isolation::Workers { program: "sleep".into(), args: vec!["30".into()] }, 1);
        let started = std::time::Instant::now();
        let err = scripts.run("ep", job("function handler(w) { return w }")).await.expect_err("no answer");
        assert!(matches!(&err, ScriptFailure::Code(e) if e.0.contains("ran longer")), "{err}");
        assert!(started.elapsed() < HARD_LIMIT + Duration::from_secs(2));
        assert!(scripts.idle.lock().unwrap().is_empty(), "the worker was not kept");
    }

    /// A worker that cannot run (exits at once, or cannot be started) is nobody's fault:
    /// the delivery is worth trying again.
    #[tokio::test]
    async fn a_worker_that_cannot_run_is_unavailable_not_the_codes_fault() {
        for program in ["true", "/nonexistent/hooklane"] {
            let scripts = Scripts::new(Isolation::Workers { program: program.into(), args: Vec::new() }, 1);
            let err = scripts.run("ep", job("function handler(w) { return w }")).await.expect_err("no worker");
            assert!(matches!(&err, ScriptFailure::Unavailable(e) if e.contains("worker")), "{program}: {err}");
        }
    }

    /// Deliveries wait for their slots, previews for theirs: a busy API does not hold up
    /// deliveries.
    #[tokio::test]
    async fn the_api_has_its_own_slot() {
        let scripts = Scripts::new(Isolation::InProcess, 1);
        let _api_busy = scripts.api_slots.acquire().await.unwrap();
        let ran = scripts.run("ep", job("function handler(w) { return w }")).await;
        assert!(matches!(ran, Ok(Outcome::Send(_))), "{ran:?}");
    }

    /// With two workers, one endpoint holds at most one: another endpoint's run goes on
    /// while the first endpoint's next one waits.
    #[tokio::test]
    async fn one_endpoint_cannot_take_every_worker() {
        let scripts = Scripts::new(Isolation::InProcess, 2);
        let busy = scripts
            .endpoints
            .lock()
            .unwrap()
            .entry("slow".into())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let held = busy.acquire().await.unwrap();
        let other = scripts.run("other", job("function handler(w) { return w }")).await;
        assert!(matches!(other, Ok(Outcome::Send(_))), "{other:?}");
        let waiting = scripts.run("slow", job("function handler(w) { return w }"));
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(Duration::from_millis(200), &mut waiting).await.is_err(), "it waits its turn");
        drop(held);
        assert!(matches!(waiting.await, Ok(Outcome::Send(_))));
        assert!(scripts.endpoints.lock().unwrap().get("other").is_none(), "entries do not pile up");
    }
}
