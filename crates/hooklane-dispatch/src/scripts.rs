//! Where transformations run: in worker processes (`hooklane script-worker`) that are
//! killed when a run outlives its deadline, a few at a time.
//!
//! QuickJS checks its interrupt handler in its interpreter loop, not inside built-in
//! functions, and some of those are quadratic (`indexOf` of a long needle in a long
//! string, sorting many long equal strings): a few lines of code can keep a thread busy
//! for minutes, and a thread cannot be stopped from outside. A process can. So every run
//! goes to a worker process with a hard deadline ([`HARD_LIMIT`]); one that misses it is
//! killed, and a new one takes the jobs it had not started. The kill is the code's fault
//! (its delivery fails for good) only when the job had the CPU time to run past its own
//! limit ([`CODE_CPU`]); a job the machine kept from the CPU is tried again later. At most `workers` runs go at once, so
//! transformations never take more than that many CPUs from deliveries and the API.
//!
//! One application's deliveries queue up, and whoever takes a worker for the application
//! sends it up to [`PIPELINE`] of them at once: the worker runs one after another without
//! waiting for the server to read each answer and write the next job, which took longer
//! than the run itself on a busy machine. The worker still runs one job at a time, each
//! with its own deadline, counted from when the server read the previous answer.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;

use crate::script::{Job, Outcome, ScriptError, TIME_LIMIT};

/// How long a run may take, as the caller sees it (the worker's own limit, [`TIME_LIMIT`],
/// stops ordinary runaway code well before).
pub const HARD_LIMIT: Duration = Duration::from_secs(2);
/// CPU time a job killed at [`HARD_LIMIT`] must have had for the kill to be the code's fault:
/// twice its own limit ([`TIME_LIMIT`], counted on its thread's CPU time), which only code
/// inside a built-in QuickJS does not interrupt can use. A job killed with less was kept from
/// the CPU (the machine busy, a VM paused): tried again later, not failed for good.
const CODE_CPU: Duration = TIME_LIMIT.saturating_mul(2);
/// How long a job runs before its worker's CPU time is read, for the verdict on a kill.
const CPU_READ_AFTER: Duration = Duration::from_millis(100);
/// How long a job kept from the CPU (it had less than [`CODE_CPU`] by [`HARD_LIMIT`]) is
/// waited for in all: a worker given a tenth of a CPU (a container's limit) reaches its
/// own limit ([`TIME_LIMIT`] of CPU time) in 2.5 s, and answers its error itself. Killed
/// at [`HARD_LIMIT`], it would be tried again every time and never be the code's fault.
const STARVED_LIMIT: Duration = Duration::from_secs(6);
/// How often a job kept from the CPU past [`HARD_LIMIT`] has its CPU time read again.
const STARVED_CHECK: Duration = Duration::from_millis(250);
/// How long a new worker may take to say it is ready; one that does not is no fault of the
/// code (nothing was run), and its jobs are tried again later.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How long a delivery's job may wait in its application's queue before it is retried later
/// instead (once a run has taken it, it waits for its turn in that run's batch).
const DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// How long an API call (a preview, or the check of code being set) waits for the API's
/// own worker.
const API_WAIT: Duration = Duration::from_secs(5);
/// Bytes of an answer beyond its payload allowance (URL, headers, error text, framing).
const ANSWER_MARGIN: usize = 256 << 10;
/// Most jobs of one application sent to a worker at once. Small, as a batch holds its worker
/// until each job is answered: slow code keeps it at most this many runs.
pub const PIPELINE: usize = 4;

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

/// Runs transformation jobs: deliveries' at most `workers` at once, and one application's
/// at most `workers - 1` (at least one) of those, so that an application with slow code (on
/// any number of its endpoints) cannot keep every other application's transformations
/// waiting; the API's one at a time on top,
/// so that neither can hold up the other: previews (any token that may read an endpoint
/// may try code) on one worker, checks of code being saved on another, so that a stream of
/// slow previews cannot keep code from being saved.
pub struct Scripts {
    isolation: Isolation,
    delivery_slots: Semaphore,
    per_app: usize,
    lanes: Mutex<HashMap<String, Lane>>,
    api_slots: Semaphore,
    check_slots: Semaphore,
    idle: Mutex<Vec<Worker>>,
    /// Numbers queued jobs, so that one given up on can be found and taken out.
    next_job: AtomicU64,
}

/// One application's share of the workers, and its jobs waiting for one.
struct Lane {
    share: Arc<Semaphore>,
    queue: VecDeque<Queued>,
}

/// What a run answers: an outcome, `None` for a check, or why there is none.
type Answer = Result<Option<Outcome>, ScriptFailure>;

/// A delivery's job waiting for a worker of its application.
struct Queued {
    id: u64,
    /// The job as the worker reads it, newline included.
    line: Vec<u8>,
    /// The longest answer read for it.
    limit: usize,
    reply: oneshot::Sender<Answer>,
}

/// A run's use of its application's lane, given up however the run ends (cancelled too): its
/// job taken out of the queue if still there, and the lane removed once nobody holds,
/// waits for or queued in it.
struct LaneUse<'a> {
    scripts: &'a Scripts,
    app_id: &'a str,
    share: Option<Arc<Semaphore>>,
    queued: Option<u64>,
}

impl LaneUse<'_> {
    /// Takes the run's job out of the queue; false when a run had taken it already.
    fn take_out_queued(&mut self) -> bool {
        let Some(id) = self.queued.take() else { return false };
        let mut lanes = self.scripts.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lane) = lanes.get_mut(self.app_id) else { return false };
        let at = lane.queue.iter().position(|q| q.id == id);
        at.and_then(|at| lane.queue.remove(at)).is_some()
    }
}

impl Drop for LaneUse<'_> {
    fn drop(&mut self) {
        self.take_out_queued();
        // The share is let go under the lock, so that of two runs ending together the last
        // removes the lane.
        let mut lanes = self.scripts.lanes.lock().unwrap_or_else(|p| p.into_inner());
        self.share = None;
        if lanes.get(self.app_id).is_some_and(|l| Arc::strong_count(&l.share) == 1 && l.queue.is_empty()) {
            lanes.remove(self.app_id);
        }
    }
}

/// Why a worker stopped before answering every job sent to it.
enum Stopped {
    /// The job under way missed its deadline, having had this much CPU time (`None`: it
    /// could not be read).
    Deadline(Option<Duration>),
    /// The pipes failed, or the worker's answer could not be read.
    Broken(std::io::Error),
}

struct Worker {
    // Held so that dropping the worker kills the process (`kill_on_drop`).
    _child: Child,
    pid: Option<u32>,
    /// It has said it is ready ([`crate::script::READY`]).
    ready: bool,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Scripts {
    pub fn new(isolation: Isolation, workers: usize) -> Self {
        let workers = workers.max(1);
        Scripts {
            isolation,
            delivery_slots: Semaphore::new(workers),
            per_app: (workers - 1).max(1),
            lanes: Mutex::new(HashMap::new()),
            api_slots: Semaphore::new(1),
            check_slots: Semaphore::new(1),
            idle: Mutex::new(Vec::new()),
            next_job: AtomicU64::new(0),
        }
    }

    /// Checks code before it is saved ([`crate::script::check`]), on a worker of its own.
    pub async fn check(&self, code: String) -> Result<(), ScriptFailure> {
        self.call(Job { code, webhook: None, max_output: 0 }, &self.check_slots, API_WAIT).await.map(drop)
    }

    /// Runs a transformation for a delivery to an endpoint of `app_id`
    /// ([`crate::script::run`]).
    pub async fn run(&self, app_id: &str, job: Job) -> Result<Outcome, ScriptFailure> {
        let mut lane = LaneUse { scripts: self, app_id, share: None, queued: None };
        let share = lane.share.insert(self.lane(app_id, |lane| lane.share.clone())).clone();
        let answer = match &self.isolation {
            Isolation::Workers { .. } => self.run_queued(&mut lane, &share, job).await,
            Isolation::InProcess => {
                let waited = Instant::now();
                match tokio::time::timeout(DELIVERY_WAIT, share.acquire()).await {
                    Ok(Ok(_own)) => {
                        let left = DELIVERY_WAIT.saturating_sub(waited.elapsed());
                        self.call(job, &self.delivery_slots, left).await
                    }
                    _ => Err(kept_busy()),
                }
            }
        };
        Self::outcome(answer)
    }

    /// Reads or changes the application's lane, made if it has none.
    fn lane<T>(&self, app_id: &str, f: impl FnOnce(&mut Lane) -> T) -> T {
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let lane = lanes
            .entry(app_id.to_string())
            .or_insert_with(|| Lane { share: Arc::new(Semaphore::new(self.per_app)), queue: VecDeque::new() });
        f(lane)
    }

    /// Queues the job in its application's lane, then waits for its answer, or for a share of
    /// the workers to run the lane's queued jobs itself (its own among them, unless another
    /// run took it first).
    async fn run_queued(&self, lane: &mut LaneUse<'_>, share: &Semaphore, job: Job) -> Answer {
        let Isolation::Workers { program, args } = &self.isolation else {
            return Err(ScriptFailure::Unavailable("no transformation workers".into()));
        };
        // Serialised before it is queued: a job that cannot be written costs no worker, and
        // the queue holds one copy of it.
        let (line, limit) = wire(&job)?;
        drop(job);
        let id = self.next_job.fetch_add(1, Ordering::Relaxed);
        let (reply, mut answer) = oneshot::channel();
        self.lane(lane.app_id, |l| l.queue.push_back(Queued { id, line, limit, reply }));
        lane.queued = Some(id);
        let given_up = Instant::now() + DELIVERY_WAIT;
        let lost = || Err(ScriptFailure::Unavailable("the run was lost".into()));
        loop {
            tokio::select! {
                biased;
                got = &mut answer => return got.unwrap_or_else(|_| lost()),
                own = share.acquire() => {
                    let Ok(own) = own else { return Err(shutting_down()) };
                    // Nothing queued: another run took this job, and answers every job it takes.
                    if self.lane(lane.app_id, |l| l.queue.is_empty()) {
                        drop(own);
                        return answer.await.unwrap_or_else(|_| lost());
                    }
                    let slot = tokio::select! {
                        biased;
                        got = &mut answer => return got.unwrap_or_else(|_| lost()),
                        slot = tokio::time::timeout_at(given_up, self.delivery_slots.acquire()) => slot,
                    };
                    let Ok(Ok(slot)) = slot else { break };
                    let batch: VecDeque<Queued> = self.lane(lane.app_id, |l| {
                        let n = l.queue.len().min(PIPELINE);
                        l.queue.drain(..n).collect()
                    });
                    if batch.is_empty() {
                        drop((slot, own));
                        return answer.await.unwrap_or_else(|_| lost());
                    }
                    self.drive(batch, program, args).await;
                }
                _ = tokio::time::sleep_until(given_up) => break,
            }
        }
        // Given up: taken out unless a run has it already (the guard would take it out too,
        // but the caller is to hear why).
        if lane.take_out_queued() {
            return Err(kept_busy());
        }
        answer.await.unwrap_or_else(|_| lost())
    }

    /// Runs every job of `batch` on workers and answers each: sent to one worker together,
    /// answered in order; after a worker is killed or breaks, the jobs it had not started go
    /// to a new one. Should the caller be cancelled meanwhile (at shutdown), the jobs not
    /// yet answered are dropped, and their runs told the run was lost.
    async fn drive(&self, mut batch: VecDeque<Queued>, program: &PathBuf, args: &[String]) {
        let mut retried = false;
        while !batch.is_empty() {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let reused = idle.is_some();
            let mut worker = match idle.map(Ok).unwrap_or_else(|| Worker::start(program, args)) {
                Ok(worker) => worker,
                Err(e) => {
                    let why = format!("could not start a transformation worker: {e}");
                    batch.into_iter().for_each(|q| drop(q.reply.send(Err(ScriptFailure::Unavailable(why.clone())))));
                    return;
                }
            };
            let before = batch.len();
            let stopped = match worker.pipeline(&mut batch).await {
                Ok(()) => {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(worker);
                    continue;
                }
                Err(stopped) => stopped,
            };
            // The worker is dropped, which kills it. An idle worker may have died since its
            // last job (killed from outside): then its jobs go once more to a new one.
            drop(worker);
            let failure = match stopped {
                Stopped::Broken(_) if reused && !retried && batch.len() == before => {
                    retried = true;
                    continue;
                }
                Stopped::Broken(e) => ScriptFailure::Unavailable(format!("the transformation worker failed: {e}")),
                Stopped::Deadline(cpu) => {
                    metrics::counter!("hooklane_transformation_workers_killed_total").increment(1);
                    match cpu {
                        // Where the CPU time cannot be read, the kill is the code's, as ever.
                        Some(had) if had < CODE_CPU => ScriptFailure::Unavailable(held_up(had)),
                        _ => ScriptFailure::Code(too_long()),
                    }
                }
            };
            // The job under way gets the failure; those behind it were not started.
            if let Some(q) = batch.pop_front() {
                let _ = q.reply.send(Err(failure));
            }
        }
    }

    /// Runs a transformation for the API (a preview), on the API's worker.
    pub async fn run_for_api(&self, job: Job) -> Result<Outcome, ScriptFailure> {
        Self::outcome(self.call(job, &self.api_slots, API_WAIT).await)
    }

    fn outcome(answer: Result<Option<Outcome>, ScriptFailure>) -> Result<Outcome, ScriptFailure> {
        answer?.ok_or_else(|| ScriptFailure::Unavailable("the worker answered a run as a check".into()))
    }

    async fn call(&self, job: Job, slots: &Semaphore, wait: Duration) -> Answer {
        let _slot = match tokio::time::timeout(wait, slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(shutting_down()),
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
        // A batch of one, on the workers deliveries use (the slot taken above keeps the
        // API's runs to its own share).
        let (line, limit) = wire(&job)?;
        let (reply, answer) = oneshot::channel();
        self.drive(VecDeque::from([Queued { id: 0, line, limit, reply }]), program, args).await;
        answer.await.unwrap_or_else(|_| Err(ScriptFailure::Unavailable("the run was lost".into())))
    }
}

/// A job as a worker reads it (one line, newline included), and the longest answer read
/// for it: the payload travels as a JSON string inside the answer, where every `"` and `\`
/// doubles.
fn wire(job: &Job) -> Result<(Vec<u8>, usize), ScriptFailure> {
    let mut line = serde_json::to_vec(job).map_err(|e| ScriptFailure::Unavailable(e.to_string()))?;
    line.push(b'\n');
    Ok((line, job.max_output.saturating_mul(2).saturating_add(ANSWER_MARGIN)))
}

fn kept_busy() -> ScriptFailure {
    ScriptFailure::Unavailable(format!(
        "this application's earlier transformations kept its workers busy for {} s",
        DELIVERY_WAIT.as_secs()
    ))
}

fn shutting_down() -> ScriptFailure {
    ScriptFailure::Unavailable("scripts are shutting down".into())
}

fn held_up(had: Duration) -> String {
    format!(
        "the transformation's worker was kept from the CPU: it had {} ms of CPU time in {} s (the machine busy, or \
         paused)",
        had.as_millis(),
        STARVED_LIMIT.as_secs()
    )
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
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the worker's pipes are missing"));
        };
        let pid = child.id();
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(stderr, pid));
        }
        Ok(Worker { _child: child, pid, ready: false, stdin, stdout: BufReader::new(stdout) })
    }

    /// Sends every job of `batch` at once and answers them in order as the worker does,
    /// taking each off `batch`; each has [`HARD_LIMIT`] from when the previous answer was
    /// read (the first, from when sending began, or from when a new worker said it was
    /// ready: starting a process is no part of a job's time). Jobs left in `batch` when it
    /// stops were not answered (the first of them was under way).
    async fn pipeline(&mut self, batch: &mut VecDeque<Queued>) -> Result<(), Stopped> {
        let lines: Vec<u8> = batch.iter().flat_map(|q| q.line.iter().copied()).collect();
        let limits: Vec<usize> = batch.iter().map(|q| q.limit).collect();
        let Worker { stdin, stdout, pid, ready, .. } = self;
        let pid = *pid;
        // Written while answers are read: a worker blocked on a full answer pipe would
        // otherwise never read the rest of its jobs.
        let write = async {
            stdin.write_all(&lines).await?;
            stdin.flush().await
        };
        let read = async {
            if !*ready {
                match tokio::time::timeout(START_LIMIT, read_ready(stdout)).await {
                    Err(_) => {
                        let why = format!("the worker did not start within {} s", START_LIMIT.as_secs());
                        return Err(Stopped::Broken(std::io::Error::other(why)));
                    }
                    Ok(Err(e)) => return Err(Stopped::Broken(e)),
                    Ok(Ok(())) => *ready = true,
                }
            }
            for limit in limits {
                let deadline = Instant::now() + HARD_LIMIT;
                let answer = read_answer(stdout, limit);
                tokio::pin!(answer);
                // The worker's CPU time is read only for a job still running after a moment:
                // a read is a file's, too dear for each of thousands of jobs a second. What
                // the job had before is not counted, which leaves a runaway one well past
                // CODE_CPU by the deadline.
                let answered = match tokio::time::timeout(CPU_READ_AFTER, &mut answer).await {
                    Ok(answered) => answered,
                    Err(_) => {
                        let cpu_before = cpu_time(pid);
                        let had = || cpu_before.zip(cpu_time(pid)).map(|(before, now)| now.saturating_sub(before));
                        let mut until = deadline;
                        loop {
                            match tokio::time::timeout_at(until, &mut answer).await {
                                Ok(answered) => break answered,
                                Err(_) => {
                                    // Past the deadline with less CPU time than the code's
                                    // limit: waited for longer, up to STARVED_LIMIT, while it
                                    // stays short of CODE_CPU.
                                    let had = had();
                                    let starved = had.is_some_and(|h| h < CODE_CPU);
                                    let given_up = Instant::now() >= deadline - HARD_LIMIT + STARVED_LIMIT;
                                    if !starved || given_up {
                                        return Err(Stopped::Deadline(had));
                                    }
                                    until = Instant::now() + STARVED_CHECK;
                                }
                            }
                        }
                    }
                };
                let answer = match answered {
                    Err(e) => return Err(Stopped::Broken(e)),
                    Ok(answer) => answer,
                };
                if let Some(q) = batch.pop_front() {
                    let _ = q.reply.send(answer.map_err(ScriptFailure::Code));
                }
            }
            Ok(())
        };
        tokio::pin!(write, read);
        let mut written = false;
        loop {
            tokio::select! {
                // A write that fails (the worker died) ends nothing by itself: the answers
                // it gave before are read first, so that the job it died on is the one that
                // fails.
                _ = &mut write, if !written => written = true,
                answered = &mut read => return answered,
            }
        }
    }
}

/// Most bytes of a worker's stderr logged: enough for a panic's message and place.
const STDERR_LOGGED: u64 = 2048;

/// Logs what a worker writes to stderr (nothing, unless it panics: the code it runs has no
/// way to write there), as warnings, up to [`STDERR_LOGGED`] bytes; the rest is read and
/// dropped, so the worker never blocks on a full pipe.
async fn log_stderr(stderr: tokio::process::ChildStderr, pid: Option<u32>) {
    let mut stderr = BufReader::new(stderr);
    let mut head = Vec::new();
    if (&mut stderr).take(STDERR_LOGGED).read_to_end(&mut head).await.is_err() {
        return;
    }
    for line in String::from_utf8_lossy(&head).lines().filter(|l| !l.trim().is_empty()) {
        tracing::warn!(pid = pid.unwrap_or_default(), line = %line, "transformation worker wrote to stderr");
    }
    let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
}

/// Reads the line a new worker writes once it has started ([`crate::script::READY`]).
async fn read_ready(stdout: &mut BufReader<ChildStdout>) -> std::io::Result<()> {
    let mut line = Vec::new();
    stdout.take(crate::script::READY.len() as u64).read_until(b'\n', &mut line).await?;
    match line.as_slice() {
        l if l == crate::script::READY => Ok(()),
        [] => Err(std::io::Error::other("the worker exited")),
        _ => Err(std::io::Error::other("the worker did not say it was ready")),
    }
}

/// CPU time (user and system) the process `pid` has had, as Linux's `/proc/<pid>/stat`
/// counts it; `None` where it cannot be read.
fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
        // After the command's name, which is in parentheses and may hold anything: the
        // state (field 3 of the line), … `utime` (14) and `stime` (15), in clock ticks.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<u64>().ok()?.checked_add(fields.get(12)?.parse::<u64>().ok()?)?;
        let per_second = rustix::param::clock_ticks_per_second().max(1);
        Some(Duration::from_millis(ticks.saturating_mul(1000) / per_second))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// Reads one answer line of at most `limit` bytes.
async fn read_answer(
    stdout: &mut BufReader<ChildStdout>,
    limit: usize,
) -> std::io::Result<Result<Option<Outcome>, ScriptError>> {
    let mut answer = Vec::new();
    stdout.take(limit as u64).read_until(b'\n', &mut answer).await?;
    if answer.last() != Some(&b'\n') {
        let why = if answer.is_empty() { "the worker exited" } else { "the worker's answer is too long" };
        return Err(std::io::Error::other(why));
    }
    serde_json::from_slice(&answer).map_err(std::io::Error::other)
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

    /// A worker that never answers, busy on the CPU all along, is killed at the deadline:
    /// the code's fault. (At HARD_LIMIT once it had CODE_CPU; on a machine too busy to give
    /// it that by then, up to STARVED_LIMIT. Its time starts once the process said it was
    /// ready, after a start that may be slow too.)
    #[tokio::test]
    async fn a_worker_that_misses_its_deadline_is_killed() {
        let scripts = shell_workers(&format!("{READY_SH} IFS= read -r l; while :; do :; done"));
        let started = std::time::Instant::now();
        let err = scripts.run("ep", job("function handler(w) { return w }")).await.expect_err("no answer");
        assert!(matches!(&err, ScriptFailure::Code(e) if e.0.contains("ran longer")), "{err}");
        assert!(started.elapsed() < STARVED_LIMIT + START_SLACK, "{:?}", started.elapsed());
        assert!(scripts.idle.lock().unwrap().is_empty(), "the worker was not kept");
    }

    /// A worker killed at the deadline that had little CPU time meanwhile (played by one
    /// asleep: a machine busy elsewhere, a VM paused) did not run the code past its limit:
    /// the run is tried again later, not failed for good.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_worker_kept_from_the_cpu_is_unavailable_not_the_codes_fault() {
        let scripts = shell_workers(&format!("{READY_SH} IFS= read -r l; exec sleep 30"));
        let started = std::time::Instant::now();
        let err = scripts.run("ep", job("function handler(w) { return w }")).await.expect_err("no answer");
        assert!(matches!(&err, ScriptFailure::Unavailable(e) if e.contains("kept from the CPU")), "{err}");
        assert!(started.elapsed() < STARVED_LIMIT + START_SLACK, "killed in the end all the same");
        assert!(scripts.idle.lock().unwrap().is_empty(), "the worker was not kept");
    }

    /// A job kept from the CPU past the deadline (played by a worker asleep, answering after
    /// 2.5 s: a tenth of a CPU gives the code its own limit in that time) is waited for, and
    /// its answer taken, rather than killed and tried again for ever.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_job_kept_from_the_cpu_is_waited_for_past_the_deadline() {
        let scripts = shell_workers(&format!("{READY_SH} IFS= read -r l; sleep 2.5; echo '{{\"Ok\":\"Cancel\"}}'"));
        let answer = scripts.run("ep", job("function handler(w) { return w }")).await;
        assert!(matches!(answer, Ok(Outcome::Cancel)), "{answer:?}");
    }

    /// A new worker's first job has its whole time from when the worker says it is ready:
    /// a process slow to start (a busy machine, a binary read from a cold disk) costs the
    /// job none of it.
    #[tokio::test]
    async fn a_new_workers_start_is_no_part_of_its_first_jobs_time() {
        let scripts = shell_workers(&format!(
            "sleep 1.5; {READY_SH} while IFS= read -r l; do sleep 1; echo '{{\"Ok\":\"Cancel\"}}'; done"
        ));
        assert_eq!(scripts.run("ep", job("function handler(w) { return w }")).await, Ok(Outcome::Cancel));
    }

    /// A worker that does not say it is ready in time has run nothing: not the code's fault.
    #[tokio::test]
    async fn a_worker_that_never_says_it_is_ready_is_unavailable() {
        let scripts = shell_workers(r#"while IFS= read -r l; do echo '{"Ok":"Cancel"}'; done"#);
        let err = scripts.run("ep", job("function handler(w) { return w }")).await.expect_err("not ready");
        assert!(matches!(&err, ScriptFailure::Unavailable(e) if e.contains("ready")), "{err}");
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
    /// deliveries. Nor do previews hold up the checks of code being saved.
    #[tokio::test]
    async fn the_api_has_its_own_slot() {
        let scripts = Scripts::new(Isolation::InProcess, 1);
        let _api_busy = scripts.api_slots.acquire().await.unwrap();
        let ran = scripts.run("ep", job("function handler(w) { return w }")).await;
        assert!(matches!(ran, Ok(Outcome::Send(_))), "{ran:?}");
        let checked = scripts.check("function handler(w) { return w }".into()).await;
        assert!(checked.is_ok(), "{checked:?}");
    }

    /// With two workers, one application holds at most one: another application's run
    /// goes on while the first one's next one waits.
    #[tokio::test]
    async fn one_application_cannot_take_every_worker() {
        let scripts = Scripts::new(Isolation::InProcess, 2);
        let busy = scripts.lane("slow", |lane| lane.share.clone());
        let held = busy.acquire().await.unwrap();
        let other = scripts.run("other", job("function handler(w) { return w }")).await;
        assert!(matches!(other, Ok(Outcome::Send(_))), "{other:?}");
        let waiting = scripts.run("slow", job("function handler(w) { return w }"));
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(Duration::from_millis(200), &mut waiting).await.is_err(), "it waits its turn");
        drop(held);
        assert!(matches!(waiting.await, Ok(Outcome::Send(_))));
        assert!(scripts.lanes.lock().unwrap().get("other").is_none(), "entries do not pile up");
    }

    /// What a worker played by `sh` says first, as a worker does once started.
    const READY_SH: &str = "echo ready;";

    /// Time a test's bound gives beyond a job's limit for starting `sh` and reading what it
    /// says, on a loaded machine.
    const START_SLACK: Duration = Duration::from_secs(3);

    /// Workers played by `sh`, running `script` (which reads job lines from stdin, after
    /// saying it is ready: [`READY_SH`]).
    fn shell_workers(script: &str) -> Scripts {
        let args = vec!["-c".to_string(), script.to_string()];
        Scripts::new(Isolation::Workers { program: "sh".into(), args }, 2)
    }

    /// Queues `codes` as jobs of application `ep` while its share is held, so that they go to
    /// a worker together, then answers them.
    async fn run_together(scripts: &Scripts, codes: &[&str]) -> Vec<Result<Outcome, ScriptFailure>> {
        // Owned: the share goes with the permit, as a run's does, so the lane can go.
        let held = scripts.lane("ep", |lane| lane.share.clone()).acquire_owned().await.unwrap();
        let runs = futures::future::join_all(codes.iter().map(|code| scripts.run("ep", job(code))));
        tokio::pin!(runs);
        while scripts.lane("ep", |lane| lane.queue.len()) < codes.len() {
            assert!(tokio::time::timeout(Duration::from_millis(5), &mut runs).await.is_err());
        }
        drop(held);
        runs.await
    }

    /// Jobs queued for one application reach one worker together: this one reads two job
    /// lines before it answers the first, which one job at a time would never give it.
    #[tokio::test]
    async fn an_applications_queued_jobs_go_to_a_worker_together() {
        let scripts = shell_workers(&format!(
            r#"{READY_SH} while IFS= read -r a && IFS= read -r b; do echo '{{"Ok":"Cancel"}}'; echo '{{"Err":"second"}}'; done"#,
        ));
        let started = std::time::Instant::now();
        let answers = run_together(&scripts, &["one", "two"]).await;
        assert_eq!(answers[0], Ok(Outcome::Cancel));
        assert_eq!(answers[1], Err(ScriptFailure::Code(ScriptError("second".into()))));
        // A job of this worker (reading, using no CPU) that missed its deadline would be
        // waited for till STARVED_LIMIT from the worker's start, then killed; the start
        // itself (a process, on a machine that may be loaded) takes what is left.
        assert!(started.elapsed() < STARVED_LIMIT, "answered without a deadline passing");
        assert_eq!(scripts.idle.lock().unwrap().len(), 1, "the worker is kept");
        assert!(scripts.lanes.lock().unwrap().is_empty(), "lanes do not pile up");
    }

    /// A job that outlives its deadline is the only one that fails: the worker is killed,
    /// and the jobs sent with it that it had not started run on a new one.
    #[tokio::test]
    async fn jobs_behind_a_killed_one_run_on_a_new_worker() {
        let scripts = shell_workers(&format!(
            r#"{READY_SH} while IFS= read -r l; do case "$l" in *hang*) while :; do :; done;; esac; echo '{{"Ok":"Cancel"}}'; done"#,
        ));
        let answers = run_together(&scripts, &["first", "hang", "third", "fourth"]).await;
        assert_eq!(answers[0], Ok(Outcome::Cancel));
        assert!(matches!(&answers[1], Err(ScriptFailure::Code(e)) if e.0.contains("ran longer")), "{answers:?}");
        assert_eq!(answers[2..], [Ok(Outcome::Cancel), Ok(Outcome::Cancel)]);
    }

    /// A worker that dies after answering fails only the job it died on; the job before
    /// keeps its answer, and the one after runs on a new worker.
    #[tokio::test]
    async fn a_worker_that_dies_fails_only_the_job_it_died_on() {
        let scripts = shell_workers(&format!(r#"{READY_SH} IFS= read -r l; echo '{{"Ok":"Cancel"}}'; exit 1"#));
        let answers = run_together(&scripts, &["first", "second", "third"]).await;
        assert_eq!(answers[0], Ok(Outcome::Cancel));
        assert!(matches!(&answers[1], Err(ScriptFailure::Unavailable(e)) if e.contains("exited")), "{answers:?}");
        assert_eq!(answers[2], Ok(Outcome::Cancel));
    }

    /// What a worker writes to stderr (a panic's message) is logged, and a worker that
    /// writes much there is not held up by a full pipe.
    #[tokio::test]
    async fn a_workers_stderr_is_logged_and_never_blocks_it() {
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let dies =
            shell_workers(&format!(r#"{READY_SH} IFS= read -r l; echo "panicked at worker.rs:7: boom" >&2; exit 101"#));
        let err = dies.run("ep", job("function handler(w) { return w }")).await.expect_err("it died");
        assert!(matches!(&err, ScriptFailure::Unavailable(_)), "{err}");
        // 1 MiB on stderr before answering: far more than a pipe holds.
        let loud = shell_workers(&format!(
            r#"{READY_SH} head -c 1048576 /dev/zero | tr '\0' x >&2; while IFS= read -r l; do echo '{{"Ok":"Cancel"}}'; done"#,
        ));
        assert_eq!(loud.run("ep", job("function handler(w) { return w }")).await, Ok(Outcome::Cancel));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("panicked at worker.rs:7: boom"), "{logged}");
        assert!(logged.len() < 8 << 10, "at most {STDERR_LOGGED} bytes of a worker's stderr are logged");
    }

    /// A run given up by its caller while queued takes its job out of the queue: no later
    /// run sends it to a worker for nobody.
    #[tokio::test]
    async fn a_cancelled_run_leaves_nothing_queued() {
        let scripts = shell_workers(&format!(r#"{READY_SH} while IFS= read -r l; do echo '{{"Ok":"Cancel"}}'; done"#));
        let held = scripts.lane("ep", |lane| lane.share.clone()).acquire_owned().await.unwrap();
        let run = scripts.run("ep", job("function handler(w) { return w }"));
        assert!(tokio::time::timeout(Duration::from_millis(50), run).await.is_err(), "waits for the held share");
        let queued = scripts.lanes.lock().unwrap().get("ep").map(|lane| lane.queue.len());
        assert_eq!(queued, Some(0), "its job is gone (the lane stays while the test holds its share)");
        drop(held);
    }
}
