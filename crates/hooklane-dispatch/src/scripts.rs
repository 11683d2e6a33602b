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

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::script::{Job, Outcome, ScriptError, TIME_LIMIT};

/// How long a run may take, as the caller sees it (the worker's own limit, [`TIME_LIMIT`],
/// stops ordinary runaway code well before).
pub const HARD_LIMIT: Duration = Duration::from_secs(2);

/// How transformations are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// In worker processes started as `program args…`.
    Workers { program: PathBuf, args: Vec<String> },
    /// On a thread of this process: for tests of this crate, which have no worker
    /// program. A run the interrupt handler cannot stop keeps its thread.
    InProcess,
}

/// Runs transformation jobs, at most `workers` at once.
pub struct Scripts {
    isolation: Isolation,
    slots: Semaphore,
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
        Scripts { isolation, slots: Semaphore::new(workers.max(1)), idle: Mutex::new(Vec::new()) }
    }

    /// Checks code before it is saved ([`crate::script::check`]).
    pub async fn check(&self, code: String) -> Result<(), ScriptError> {
        self.call(Job { code, webhook: None, max_output: 0 }).await.map(drop)
    }

    /// Runs a transformation ([`crate::script::run`]).
    pub async fn run(&self, job: Job) -> Result<Outcome, ScriptError> {
        match self.call(job).await? {
            Some(outcome) => Ok(outcome),
            None => Err(ScriptError("the worker answered a run as a check".into())),
        }
    }

    async fn call(&self, job: Job) -> Result<Option<Outcome>, ScriptError> {
        let _slot = self.slots.acquire().await.map_err(|_| ScriptError("scripts are shutting down".into()))?;
        match &self.isolation {
            Isolation::InProcess => {
                let run = tokio::task::spawn_blocking(move || job.answer());
                match tokio::time::timeout(HARD_LIMIT, run).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(e)) => Err(ScriptError(format!("the run was lost: {e}"))),
                    Err(_) => Err(too_long()),
                }
            }
            Isolation::Workers { program, args } => {
                let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let mut worker = match idle {
                    Some(w) => w,
                    None => Worker::start(program, args)
                        .map_err(|e| ScriptError(format!("could not start a script worker: {e}")))?,
                };
                let line = serde_json::to_string(&job).map_err(|e| ScriptError(e.to_string()))?;
                match tokio::time::timeout(HARD_LIMIT, worker.exchange(line)).await {
                    Ok(Ok(answer)) => {
                        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(worker);
                        answer
                    }
                    // The worker is dropped, which kills it.
                    Ok(Err(e)) => Err(ScriptError(format!("the script worker failed: {e}"))),
                    Err(_) => {
                        metrics::counter!("hooklane_transformation_workers_killed_total").increment(1);
                        Err(too_long())
                    }
                }
            }
        }
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

    /// Sends one job line and reads its answer line.
    async fn exchange(&mut self, mut line: String) -> std::io::Result<Result<Option<Outcome>, ScriptError>> {
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        let mut answer = String::new();
        if self.stdout.read_line(&mut answer).await? == 0 {
            return Err(std::io::Error::other("the worker exited"));
        }
        serde_json::from_str(&answer).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Webhook;
    use std::collections::BTreeMap;

    fn job(code: &str) -> Job {
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), serde_json::json!({}), BTreeMap::new());
        Job { code: code.into(), webhook: Some(webhook), max_output: 1 << 20 }
    }

    #[tokio::test]
    async fn in_process_runs_and_checks() {
        let scripts = Scripts::new(Isolation::InProcess, 1);
        assert_eq!(scripts.run(job("function handler(w) { w.cancel = true; return w }")).await, Ok(Outcome::Cancel));
        assert!(scripts.check("function handler(w) { return w }".into()).await.is_ok());
        assert!(scripts.check("nothing here".into()).await.is_err());
    }

    /// A worker that never answers (`sleep`) is killed at the deadline and replaced.
    #[tokio::test]
    async fn a_worker_that_misses_its_deadline_is_killed() {
        let scripts = Scripts::new(Isolation::Workers { program: "sleep".into(), args: vec!["30".into()] }, 1);
        let started = std::time::Instant::now();
        let err = scripts.run(job("function handler(w) { return w }")).await.expect_err("no answer");
        assert!(err.0.contains("ran longer"), "{err}");
        assert!(started.elapsed() < HARD_LIMIT + Duration::from_secs(2));
        assert!(scripts.idle.lock().unwrap().is_empty(), "the worker was not kept");
        // A program that exits at once fails the run, and is not kept either.
        let scripts = Scripts::new(Isolation::Workers { program: "true".into(), args: Vec::new() }, 1);
        let err = scripts.run(job("function handler(w) { return w }")).await.expect_err("exited");
        assert!(err.0.contains("worker"), "{err}");
    }
}
