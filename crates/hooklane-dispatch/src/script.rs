//! Svix's endpoint transformations: an endpoint's JavaScript, which declares
//! `function handler(webhook)`, run before each attempt on the request about to be made.
//!
//! The handler gets an object with `method` (`"POST"`), `url`, `eventType`, `payload` (the
//! JSON body: the message's payload, or what the endpoint's `transform` template made of
//! it; `null` for a body that is not JSON), `headers` (`{}`), `cancel` (`false`) and
//! `variables` (the transformation's, read-only by convention). It returns that object,
//! changed: `method` may be `"POST"` or `"PUT"`, `url` any `http`/`https` URL (which then
//! goes through the same address checks as an endpoint's own), `payload` any JSON,
//! `headers` string values that take precedence over the endpoint's custom headers (not
//! over those hooklane sets itself), and `cancel: true` sends nothing.
//!
//! Each run gets a fresh QuickJS runtime (about 60 µs in a release build), so nothing
//! survives from one message to the next, and its own limits: [`MEMORY_LIMIT`],
//! [`STACK_LIMIT`] and [`TIME_LIMIT`]. The code has no I/O of any kind: QuickJS's
//! standard library (files, timers, `os`) is not loaded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, CaughtError, Context, Function, Runtime};

use crate::sender;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest code accepted, in bytes.
pub const MAX_CODE_BYTES: usize = 64 << 10;
/// Memory one run may allocate, for the engine, the code, the webhook and what it makes.
pub const MEMORY_LIMIT: usize = 32 << 20;
/// Native stack one run may use (deep recursion fails with a `RangeError`).
pub const STACK_LIMIT: usize = 256 << 10;
/// Time one run may take, compiling the code included: CPU time of the thread it runs on
/// where it can be read (Linux), wall time elsewhere ([`run_clock`]).
pub const TIME_LIMIT: Duration = Duration::from_millis(250);

/// What went wrong with a transformation, as the attempt's log will say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{0}")]
pub struct ScriptError(pub String);

/// What the handler is given: the webhook about to be sent (`method` is `POST`, `headers`
/// empty and `cancel` false to begin with).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub url: String,
    pub event_type: String,
    /// The body so far, as text: JSON (parsed by QuickJS, never by serde, so that no
    /// nesting depth of a payload is refused), or anything else, which the code sees as
    /// `null`.
    pub payload: String,
    pub variables: BTreeMap<String, String>,
}

impl Webhook {
    pub fn new(url: String, event_type: String, payload: String, variables: BTreeMap<String, String>) -> Self {
        Webhook { url, event_type, payload, variables }
    }
}

/// The request the handler asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Send(Request),
    /// `cancel` was set: nothing is sent.
    Cancel,
}

/// A request as the handler left it, checked: `method` is `POST` or `PUT`, `url` an
/// `http`/`https` URL without credentials, `headers` valid and not ones that control the
/// connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    pub url: String,
    /// The payload the code made, as JSON text; `None`: it left the payload as it was given
    /// (JSON it did not change, or a body that was not JSON left `null`), so the body goes
    /// as it came: its bytes (a JSON number past 2^53 would lose digits written again) and
    /// its content type (a body the code did not make is not made `application/json`).
    pub body: Option<String>,
    pub headers: BTreeMap<String, String>,
}

/// Longest error text kept: an exception's message is the code's to make, and it is stored
/// with every attempt.
const MAX_ERROR_BYTES: usize = 1024;
/// Most bytes of the webhook returned, beside its payload, as JSON (URL, headers…).
const MAX_REST_BYTES: usize = 64 << 10;

/// Longest URL a transformation may make.
const MAX_URL: usize = 4096;

/// Checks code before it is saved: it must compile, run its top level within the limits
/// and declare a function `handler`.
pub fn check(code: &str) -> Result<(), ScriptError> {
    within_limits(code, |_ctx, _handler| Ok(()))
}

/// Runs the code's handler on `webhook`, within the limits; the payload it returns may weigh
/// at most `max_output` bytes as JSON (checked before hooklane reads it, so a small object
/// that stringifies large cannot make hooklane allocate much).
pub fn run(code: &str, webhook: &Webhook, max_output: usize) -> Result<Outcome, ScriptError> {
    let start = serde_json::json!({
        "method": "POST",
        "url": webhook.url,
        "eventType": webhook.event_type,
        "headers": {},
        "cancel": false,
        "variables": webhook.variables,
    })
    .to_string();
    let (made, rest) = within_limits(code, |ctx, handler| {
        let Some(arg) = ctx.json_parse(start).catch(ctx)?.into_object() else { return Ok(None) };
        // A body that is not JSON is `null` to the code (and its syntax error is no error).
        // A parse that fails otherwise (a body nested past the stack, or past the memory)
        // fails the run: taken for "not JSON", it would go out as it came, unseen by code
        // that may have cancelled it.
        let (payload, was_json) = match ctx.json_parse(webhook.payload.as_str()).catch(ctx) {
            Ok(v) => (v, true),
            Err(CaughtError::Exception(ex)) if ex.get::<_, String>("name").ok().as_deref() == Some("SyntaxError") => {
                (rquickjs::Value::new_null(ctx.clone()), false)
            }
            Err(other) => return Err(other),
        };
        // The payload as JSON would write it unchanged: a payload the code leaves as it was
        // is sent as it came (JSON's numbers lose digits past 2^53 when read and written).
        // A body that was not JSON is `null` to the code, which leaves it so by making `null`.
        let given = match was_json {
            true => ctx.json_stringify(payload.clone()).catch(ctx)?.map(|s| s.to_string()).transpose().catch(ctx)?,
            false => Some("null".to_string()),
        };
        arg.set("payload", payload).catch(ctx)?;
        let returned: rquickjs::Value = handler.call((arg,)).catch(ctx)?;
        let Some(returned) = returned.as_object().filter(|_| !returned.is_function() && !returned.is_promise()) else {
            return Ok(None);
        };
        if !returned.contains_key("payload").catch(ctx)? {
            return Ok(Some((Made::Missing, None)));
        }
        let payload: rquickjs::Value = returned.get("payload").catch(ctx)?;
        let payload_text = ctx.json_stringify(payload).catch(ctx)?.map(|s| s.to_string()).transpose().catch(ctx)?;
        // (`undefined`, a function: no JSON, sent as `null`.)
        let made = match (payload_text.unwrap_or_else(|| "null".into()), given) {
            (made, Some(given)) if made == given => Made::Unchanged,
            (made, _) => Made::Text(made),
        };
        // The rest is small: read by serde. What the code was given to read (its variables,
        // the event type) is no part of the request, and not weighed with it.
        returned.set("payload", rquickjs::Value::new_null(ctx.clone())).catch(ctx)?;
        for given_only in ["variables", "eventType"] {
            returned.remove(given_only).catch(ctx)?;
        }
        let rest = ctx.json_stringify(returned.clone()).catch(ctx)?.map(|s| s.to_string()).transpose().catch(ctx)?;
        Ok(Some((made, rest)))
    })?
    .ok_or_else(|| ScriptError("handler must return the webhook object".into()))?;
    let body = match made {
        Made::Missing => return Err(ScriptError("the webhook returned is not valid: it has no payload".into())),
        Made::Unchanged => None,
        Made::Text(text) if text.len() > max_output => {
            return Err(ScriptError(format!("the payload returned is larger than {max_output} bytes")))
        }
        Made::Text(text) => Some(text),
    };
    let rest = rest.unwrap_or_default();
    if rest.len() > MAX_REST_BYTES {
        return Err(ScriptError(format!(
            "the webhook returned is larger than {} KiB beside its payload",
            MAX_REST_BYTES >> 10
        )));
    }
    let returned: serde_json::Map<String, Value> =
        serde_json::from_str(&rest).map_err(|e| ScriptError(format!("the webhook returned is not valid: {e}")))?;
    read_returned(returned, webhook, body)
}

/// What the code did with the payload.
enum Made {
    /// The webhook returned has none.
    Missing,
    /// Left as it was given (JSON it did not change, or a body that was not JSON left
    /// `null`): the body goes as it came, with its content type.
    Unchanged,
    /// A payload of its own, as JSON text.
    Text(String),
}

/// The request the returned webhook asks for, checked.
fn read_returned(
    mut returned: serde_json::Map<String, Value>,
    sent: &Webhook,
    body: Option<String>,
) -> Result<Outcome, ScriptError> {
    let invalid = |what: String| Err(ScriptError(format!("the webhook returned is not valid: {what}")));
    match returned.get("cancel") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => return Ok(Outcome::Cancel),
        Some(_) => return invalid("cancel must be true or false".into()),
    }
    let method = match returned.get("method") {
        None | Some(Value::Null) => "POST".to_string(),
        Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") || m.eq_ignore_ascii_case("PUT") => {
            m.to_ascii_uppercase()
        }
        Some(_) => return Err(ScriptError("method must be POST or PUT".into())),
    };
    let url = match returned.remove("url") {
        None | Some(Value::Null) => sent.url.clone(),
        Some(Value::String(u)) => u,
        Some(_) => return invalid("url must be a string".into()),
    };
    if url != sent.url {
        check_url(&url)?;
    }
    let headers = match returned.remove("headers") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(h)) => {
            let mut headers = BTreeMap::new();
            for (name, value) in h {
                let Value::String(value) = value else { return invalid(format!("header {name:.64?} is not a string")) };
                headers.insert(name, value);
            }
            headers
        }
        Some(_) => return invalid("headers must be an object".into()),
    };
    check_headers(&headers)?;
    Ok(Outcome::Send(Request { method, url, body, headers }))
}

fn check_url(url: &str) -> Result<(), ScriptError> {
    let refuse = |why: String| Err(ScriptError(format!("the transformation's URL {why}")));
    if url.len() > MAX_URL {
        return refuse(format!("is longer than {MAX_URL} bytes"));
    }
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return refuse(format!("is not valid: {e}")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return refuse(format!("must be http or https, not {}", parsed.scheme()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse("may not carry credentials before the host".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return refuse("has no host".into());
    }
    Ok(())
}

/// The same rules as an endpoint's custom headers ([`sender::custom_header_fault`]), but
/// that hooklane's own (`webhook-*`, content headers) are left out when sent, not refused.
fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), ScriptError> {
    if headers.len() > sender::MAX_CUSTOM_HEADERS {
        return Err(ScriptError(format!("the transformation sets more than {} headers", sender::MAX_CUSTOM_HEADERS)));
    }
    for (name, value) in headers {
        match sender::custom_header_fault(name, value) {
            None | Some(sender::HeaderFault::Reserved) => {}
            Some(_) => {
                return Err(ScriptError(format!("the transformation's header {name:.64?} is not one it may set")))
            }
        }
    }
    Ok(())
}

/// One request to a script worker: check `code`, or run it on `webhook`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub code: String,
    /// `None`: only check the code ([`check`]).
    pub webhook: Option<Webhook>,
    pub max_output: usize,
}

impl Job {
    /// Does the job here, in this thread; an error's text is cut to [`MAX_ERROR_BYTES`].
    pub fn answer(&self) -> Result<Option<Outcome>, ScriptError> {
        let answer = match &self.webhook {
            None => check(&self.code).map(|()| None),
            Some(webhook) => run(&self.code, webhook, self.max_output).map(Some),
        };
        answer.map_err(|mut e| {
            if e.0.len() > MAX_ERROR_BYTES {
                let mut end = MAX_ERROR_BYTES;
                while !e.0.is_char_boundary(end) {
                    end -= 1;
                }
                e.0.truncate(end);
                e.0.push('…');
            }
            e
        })
    }
}

/// The script worker process (`hooklane script-worker`): says [`READY`] on stdout, then
/// reads one [`Job`] per line on stdin and answers each with one line of JSON on stdout,
/// until stdin closes. The parent
/// kills it when a job outlives its deadline, which code can make it do through built-in
/// functions QuickJS does not interrupt (a search in a long string); should the parent be
/// gone, the worker ends itself a little later ([`WORKER_WATCHDOG`]).
pub fn serve_worker() -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    // When the job under way started, in milliseconds since the worker did; 0: none.
    let busy_since = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let watched = busy_since.clone();
    let (running, started) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let _ = running.send(());
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let since = watched.load(Ordering::Relaxed);
            let now = began.elapsed().as_millis() as u64;
            if since != 0 && now.saturating_sub(since) > WORKER_WATCHDOG.as_millis() as u64 {
                std::process::exit(2);
            }
        }
    });
    // Confined once the watchdog runs: a thread still starting (its signal stack mapped,
    // its registrations made) when the system calls are filtered failed its start, and
    // took the worker down with it.
    let _ = started.recv();
    confine_worker();
    let stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    // Said once started: the server counts its first job's time from here, not from when
    // it started a process a busy machine may take a while to load.
    stdout.write_all(READY)?;
    stdout.flush()?;
    for line in stdin.lines() {
        let line = line?;
        busy_since.store((began.elapsed().as_millis() as u64).max(1), Ordering::Relaxed);
        let answer = match serde_json::from_str::<Job>(&line) {
            Ok(job) => job.answer(),
            Err(e) => Err(ScriptError(format!("the worker could not read its job: {e}"))),
        };
        busy_since.store(0, Ordering::Relaxed);
        let mut out = serde_json::to_vec(&answer).unwrap_or_else(|_| b"{\"Err\":\"unanswerable\"}".to_vec());
        out.push(b'\n');
        stdout.write_all(&out)?;
        stdout.flush()?;
    }
    Ok(())
}

/// The line a worker writes once it has started, before it reads its first job.
pub const READY: &[u8] = b"ready\n";

/// Address space a worker may map: the program (about 100 MiB), QuickJS's 32 MiB heap and
/// stack, with room to spare; an allocation past it fails instead of taking the machine's
/// memory (an engine fault outside QuickJS's own accounting).
pub const WORKER_ADDRESS_SPACE: u64 = 1 << 30;

/// What a worker process may do beyond running code, taken away before it reads its first
/// job (Linux). The code itself has no I/O; this is for a fault of the engine that let it
/// run more than JavaScript: the worker writes no file (`RLIMIT_FSIZE` 0: not the
/// database, not the configuration), opens few (`RLIMIT_NOFILE`), starts no process
/// (`RLIMIT_NPROC` 0, for users it applies to), dumps no core, maps at most
/// [`WORKER_ADDRESS_SPACE`], gains no privilege through an executable it might run
/// (`no_new_privs`), and makes no system call but those a worker needs (a seccomp filter:
/// no file opened, no socket, no process). Each that cannot be set is logged to stderr (the
/// server logs that) and the worker runs on: the limits are a second wall, not the first.
fn confine_worker() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{setrlimit, Resource, Rlimit};
        let limit = |n: u64| Rlimit { current: Some(n), maximum: Some(n) };
        let limits = [
            ("fsize", Resource::Fsize, limit(0)),
            ("core", Resource::Core, limit(0)),
            ("nofile", Resource::Nofile, limit(16)),
            ("as", Resource::As, limit(WORKER_ADDRESS_SPACE)),
            ("nproc", Resource::Nproc, limit(0)),
        ];
        for (name, resource, value) in limits {
            if let Err(e) = setrlimit(resource, value) {
                eprintln!("hooklane script-worker: cannot set RLIMIT_{}: {e}", name.to_uppercase());
            }
        }
        if let Err(e) = rustix::thread::set_no_new_privs(true) {
            eprintln!("hooklane script-worker: cannot set no_new_privs: {e}");
        }
        if let Err(e) = allow_only_the_calls_a_worker_makes() {
            eprintln!("hooklane script-worker: cannot filter its system calls: {e}");
        }
    }
}

/// Lets the worker's threads make only the system calls a worker needs from now on (read
/// its jobs, write its answers, manage memory, read clocks, sleep, end): any other fails
/// with `EPERM`. A fault of the engine that let code run more than JavaScript could
/// otherwise open the server's files (its database, its configuration, the server's own
/// `/proc/…/environ`, the same user's) or connect to internal addresses, past the delivery
/// address policy.
#[cfg(target_os = "linux")]
fn allow_only_the_calls_a_worker_makes() -> Result<(), String> {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let calls = [
        // Its jobs in, its answers out, on the descriptors it has.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_close,
        // Memory (the engine's heap, its stack, the allocator's arenas).
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        // Time (a run's CPU clock, `Date.now`), the watchdog's sleep, threads' waits.
        libc::SYS_clock_gettime,
        libc::SYS_gettimeofday,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_getrandom,
        // Signals: their returns; a fault's handler putting the default back (refused, the
        // fault would repeat for ever rather than end the worker); a sleep interrupted by a
        // stop and a continue (the process group's Ctrl-Z) resumed; an abort's (a panic's)
        // own signal to itself.
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigaction,
        libc::SYS_restart_syscall,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_tgkill,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ];
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let rules = calls.into_iter().map(|call| (call, Vec::new())).collect();
    let refused = SeccompAction::Errno(libc::EPERM as u32);
    let filter = SeccompFilter::new(rules, refused, SeccompAction::Allow, arch).map_err(|e| e.to_string())?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
    // Every thread: the watchdog's too.
    seccompiler::apply_filter_all_threads(&program).map_err(|e| e.to_string())
}

/// How long a worker lets one job run before it ends itself: past the parent's own
/// deadline (2 s), for when the parent is gone and cannot kill it.
const WORKER_WATCHDOG: Duration = Duration::from_secs(10);

/// Compiles and runs `code` in a fresh runtime with the limits set, then calls `then` with
/// its `handler` function; every JavaScript error becomes a [`ScriptError`] that says what
/// was thrown, and where.
fn within_limits<T>(
    code: &str,
    then: impl for<'js> FnOnce(&rquickjs::Ctx<'js>, Function<'js>) -> Result<T, CaughtError<'js>>,
) -> Result<T, ScriptError> {
    if code.len() > MAX_CODE_BYTES {
        return Err(ScriptError(format!("the code is longer than {} KiB", MAX_CODE_BYTES >> 10)));
    }
    let engine = |e: rquickjs::Error| ScriptError(format!("the JavaScript engine could not start: {e}"));
    let runtime = Runtime::new().map_err(engine)?;
    runtime.set_memory_limit(MEMORY_LIMIT);
    runtime.set_max_stack_size(STACK_LIMIT);
    let deadline = run_clock() + TIME_LIMIT;
    runtime.set_interrupt_handler(Some(Box::new(move || run_clock() > deadline)));
    let context = Context::full(&runtime).map_err(engine)?;
    context.with(|ctx| {
        let result = (|| {
            ctx.eval::<(), _>(code).catch(&ctx)?;
            // Read as an expression, not from the global object, so that `const handler =`
            // and `let handler =` count as well as a function declaration.
            let handler: rquickjs::Value =
                ctx.eval("typeof handler === 'function' ? handler : undefined").catch(&ctx)?;
            let Some(handler) = handler.into_function() else {
                return Ok(Err(ScriptError("the code must declare a function named handler".into())));
            };
            then(&ctx, handler).map(Ok)
        })();
        // Past its time whether it failed or not: the engine asks whether to stop only now
        // and then between its own steps, never inside a built-in, so one long call (a
        // search of a long string, a sort) ran to its end and the run was taken as it was,
        // up to the worker's hard limit, eight times the time a run is given.
        match result {
            _ if run_clock() > deadline => {
                Err(ScriptError(format!("the transformation ran longer than {} ms", TIME_LIMIT.as_millis())))
            }
            Ok(done) => done,
            Err(e) => Err(ScriptError(describe(&e))),
        }
    })
}

/// The clock a run's [`TIME_LIMIT`] is counted on: the CPU time of this thread (which runs
/// the whole run) where it can be read, so that a run the machine keeps from the CPU (other
/// processes busy, a VM paused) is not stopped, and its delivery failed for good, for time
/// it never had; elsewhere, the wall clock since the first reading.
fn run_clock() -> Duration {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        static FIRST: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        FIRST.get_or_init(Instant::now).elapsed()
    }
}

/// What was thrown, on one line where it fits: `Error: message at handler (line:column)`.
fn describe(e: &CaughtError<'_>) -> String {
    match e {
        CaughtError::Exception(ex) => {
            let message = ex.message().unwrap_or_default();
            let kind = ex.get::<_, String>("name").unwrap_or_else(|_| "Error".into());
            let place = ex.stack().and_then(|s| s.lines().next().map(|l| l.trim().to_string()));
            match place {
                Some(place) if !place.is_empty() => format!("{kind}: {message} ({place})"),
                _ => format!("{kind}: {message}"),
            }
        }
        // QuickJS throws `null` when it cannot even allocate the error for running out of
        // memory.
        CaughtError::Value(v) if v.is_null() => {
            format!("threw null (or ran out of its {} MiB of memory)", MEMORY_LIMIT >> 20)
        }
        CaughtError::Value(v) => format!("threw a value that is not an Error ({})", v.type_name()),
        CaughtError::Error(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body_json(req: &Request) -> Value {
        serde_json::from_str(req.body.as_deref().expect("a JSON body")).expect("JSON")
    }

    #[test]
    fn a_body_that_is_not_json_is_null_to_the_code_and_kept_if_left_so() {
        let form = "a=1&b=2";
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), form.into(), BTreeMap::new());
        let keep = "function handler(w) { w.headers['X-Was'] = String(w.payload); return w }";
        let Ok(Outcome::Send(req)) = run(keep, &webhook, 1 << 20) else { panic!("runs") };
        assert_eq!((req.body, req.headers["X-Was"].as_str()), (None, "null"), "sent as it came");
        let replace = "function handler(w) { w.payload = { form: true }; return w }";
        let Ok(Outcome::Send(req)) = run(replace, &webhook, 1 << 20) else { panic!("runs") };
        assert_eq!(req.body.as_deref(), Some(r#"{"form":true}"#));
    }

    #[test]
    fn a_payload_the_engine_cannot_read_fails_the_run() {
        // Nested past the code's stack: not "not JSON" (which would go out as it came,
        // unseen by code that may have cancelled it), a failed run.
        let deep = format!("{}1{}", "[".repeat(200_000), "]".repeat(200_000));
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), deep, BTreeMap::new());
        let ran = run("function handler(w) { w.cancel = true; return w }", &webhook, 1 << 22);
        assert!(ran.is_err(), "{ran:?}");
    }

    #[test]
    fn payloads_nested_deeper_than_serde_reads_pass_through() {
        let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), deep.clone(), BTreeMap::new());
        let Ok(Outcome::Send(req)) = run("function handler(w) { return w }", &webhook, 1 << 20) else { panic!("runs") };
        assert_eq!(req.body, None, "left as it was: sent as it came");
        let Ok(Outcome::Send(req)) =
            run("function handler(w) { w.payload = [w.payload]; return w }", &webhook, 1 << 20)
        else {
            panic!("runs")
        };
        assert_eq!(req.body, Some(format!("[{deep}]")));
    }

    #[test]
    fn a_payload_left_as_it_was_is_sent_as_it_came() {
        // Past 2^53 a JSON number read and written again loses digits; spacing and `1.0`
        // would change too, and the receiver checks the signature of what is sent. `None`:
        // the body as it came, and its content type with it.
        let payload = r#"{"id": 12345678901234567891, "amount": 1.0}"#;
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), payload.into(), BTreeMap::new());
        let headers_only = "function handler(w) { w.headers['X-Seen'] = 'yes'; return w }";
        let Ok(Outcome::Send(req)) = run(headers_only, &webhook, 1 << 20) else { panic!("runs") };
        assert_eq!(req.body, None);
        // Made again by the code, equal to what it was given: unchanged too.
        let rebuilt = "function handler(w) { w.payload = JSON.parse(JSON.stringify(w.payload)); return w }";
        let Ok(Outcome::Send(req)) = run(rebuilt, &webhook, 1 << 20) else { panic!("runs") };
        assert_eq!(req.body, None);
        let changed = "function handler(w) { w.payload.amount = 2; return w }";
        let Ok(Outcome::Send(req)) = run(changed, &webhook, 1 << 20) else { panic!("runs") };
        assert_eq!(req.body.as_deref(), Some(r#"{"id":12345678901234567000,"amount":2}"#), "changed: the code's");
    }

    #[test]
    fn variables_are_not_weighed_with_the_request() {
        // 32 variables of 4 KiB, as the API allows: 128 KiB, past the 64 KiB of the rest.
        let variables = (0..32).map(|i| (format!("v{i}"), "x".repeat(4096))).collect();
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), "{}".into(), variables);
        let Ok(Outcome::Send(req)) = run("function handler(w) { return w }", &webhook, 1 << 20) else { panic!("runs") };
        assert_eq!(req.body, None);
    }

    #[test]
    fn error_text_is_cut() {
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), "{}".into(), BTreeMap::new());
        let job = Job {
            code: "function handler(w) { throw new Error('x'.repeat(100000)) }".into(),
            webhook: Some(webhook),
            max_output: 1024,
        };
        let err = job.answer().expect_err("throws");
        assert!(err.0.len() <= MAX_ERROR_BYTES + 3 && err.0.ends_with('…'), "{}", err.0.len());
    }

    fn run_on(code: &str, payload: Value) -> Result<Outcome, ScriptError> {
        let vars = BTreeMap::from([("token".to_string(), "t0k".to_string())]);
        let webhook = Webhook::new("https://example.com/hook".into(), "invoice.paid".into(), payload.to_string(), vars);
        run(code, &webhook, 1 << 20)
    }

    #[test]
    fn the_handler_changes_method_url_body_and_headers() {
        let code = r#"
            function handler(webhook) {
                webhook.method = "PUT";
                webhook.url = webhook.url + "?type=" + webhook.eventType;
                webhook.payload = { text: "paid " + webhook.payload.amount, was: webhook.payload };
                webhook.headers["Authorization"] = "Bearer " + webhook.variables.token;
                return webhook;
            }"#;
        let outcome = run_on(code, json!({"amount": 12})).expect("runs");
        let Outcome::Send(req) = outcome else { panic!("not cancelled") };
        assert_eq!(req.method, "PUT");
        assert_eq!(req.url, "https://example.com/hook?type=invoice.paid");
        assert_eq!(body_json(&req), json!({"text": "paid 12", "was": {"amount": 12}}));
        assert_eq!(req.headers, BTreeMap::from([("Authorization".to_string(), "Bearer t0k".to_string())]));
    }

    #[test]
    fn an_unchanged_webhook_is_sent_as_it_came() {
        let outcome = run_on("function handler(w) { return w }", json!({"a": [1, 2]})).expect("runs");
        assert_eq!(
            outcome,
            Outcome::Send(Request {
                method: "POST".into(),
                url: "https://example.com/hook".into(),
                body: None,
                headers: BTreeMap::new(),
            })
        );
    }

    #[test]
    fn cancel_sends_nothing() {
        let code = "function handler(w) { w.cancel = w.payload.internal === true; return w }";
        assert_eq!(run_on(code, json!({"internal": true})), Ok(Outcome::Cancel));
        assert!(matches!(run_on(code, json!({"internal": false})), Ok(Outcome::Send(_))));
    }

    #[test]
    fn errors_say_what_went_wrong() {
        let err = |code: &str| run_on(code, json!({})).expect_err(code).0;
        assert!(err("function handler(w) { throw new TypeError('no amount') }").starts_with("TypeError: no amount"));
        assert!(err("function handler(w) { return w.payload.a.b }").starts_with("TypeError"));
        assert!(err("function handler(w) {").starts_with("SyntaxError"), "{}", err("function handler(w) {"));
        assert_eq!(err("var handler = 3"), "the code must declare a function named handler");
        assert_eq!(err("function handler(w) { return 1 }"), "handler must return the webhook object");
        assert_eq!(err("function handler(w) { w.method = 'DELETE'; return w }"), "method must be POST or PUT");
        assert!(err("function handler(w) { w.headers = {a: 1}; return w }")
            .starts_with("the webhook returned is not valid"));
        assert!(err("function handler(w) { throw 'text' }").contains("not an Error"));
        assert_eq!(
            err("function handler(w) { delete w.payload; return w }"),
            "the webhook returned is not valid: it has no payload"
        );
        assert_eq!(err("async function handler(w) { return w }"), "handler must return the webhook object");
        assert!(err("function handler(w) { w.cancel = 'yes'; return w }").contains("cancel must be true or false"));
        for (url, why) in [
            ("ftp://example.com/", "must be http or https"),
            ("https://user:pw@example.com/", "credentials"),
            ("not a url", "is not valid"),
        ] {
            let code = format!("function handler(w) {{ w.url = {}; return w }}", json!(url));
            assert!(err(&code).contains(why), "{url}: {}", err(&code));
        }
        for header in ["Transfer-Encoding", "connection", "bad header"] {
            let code = format!("function handler(w) {{ w.headers[{}] = 'x'; return w }}", json!(header));
            assert!(err(&code).contains("not one it may set"), "{header}: {}", err(&code));
        }
        let many = "function handler(w) { for (let i = 0; i < 33; i++) w.headers['x-' + i] = 'v'; return w }";
        assert!(err(many).contains("more than 32 headers"));
    }

    #[test]
    fn limits_stop_runaway_code() {
        let err = |code: &str| run_on(code, json!({})).expect_err(code).0;
        let started = Instant::now();
        assert_eq!(err("function handler(w) { for (;;) {} }"), "the transformation ran longer than 250 ms");
        assert!(started.elapsed() < Duration::from_secs(5), "interrupted at its deadline");
        assert_eq!(
            err("while (true) {} function handler(w) { return w }"),
            "the transformation ran longer than 250 ms"
        );
        let memory = err("function handler(w) { let a = []; for (;;) a.push('x'.repeat(1024) + a.length) }");
        assert!(memory.contains("memory"), "{memory}");
        let stack = err("function handler(w) { return handler(w) }");
        assert!(stack.starts_with("RangeError"), "{stack}");
        assert!(err(&format!("// {}\nfunction handler(w) {{ return w }}", "x".repeat(MAX_CODE_BYTES)))
            .contains("longer than"));
    }

    /// A run whose time goes in one call of a built-in, which the engine never interrupts,
    /// fails once it is over all the same: it was taken as it was, up to the worker's hard
    /// limit.
    #[test]
    fn a_run_past_its_time_inside_a_built_in_fails() {
        let code =
            "function handler(w) { w.payload = { i: 'a'.repeat(5e4).indexOf('a'.repeat(2.5e4) + 'b') }; return w }";
        let started = Instant::now();
        let outcome = run_on(code, json!({}));
        let took = started.elapsed();
        assert!(took > TIME_LIMIT, "the search took {took:?}: not past the limit, it proves nothing");
        assert_eq!(outcome.expect_err("ran past its time").0, "the transformation ran longer than 250 ms", "{took:?}");
    }

    /// Time the run's thread is kept from the CPU (the machine busy elsewhere, a VM paused:
    /// played by a sleep, past the whole limit) is not counted against the run, whose
    /// delivery would fail for good.
    #[cfg(target_os = "linux")]
    #[test]
    fn time_a_run_is_kept_from_the_cpu_is_not_counted() {
        let code = "function handler() { let n = 0; for (let i = 0; i < 200000; i++) n += i; return n }";
        let ran = within_limits(code, |ctx, handler| {
            std::thread::sleep(TIME_LIMIT + Duration::from_millis(150));
            handler.call::<_, f64>(()).catch(ctx)
        });
        assert_eq!(ran, Ok(19_999_900_000.0));
    }

    #[test]
    fn output_is_weighed_before_it_is_read() {
        // Cheap for QuickJS (one array, referenced many times), large as JSON.
        let code = "function handler(w) { const a = [0, 0, 0, 0]; w.payload = Array(200000).fill(a); return w }";
        let vars = BTreeMap::new();
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), "null".into(), vars);
        let err = run(code, &webhook, 1 << 20).expect_err("too large");
        assert!(err.0.contains("larger than 1048576 bytes"), "{err}");
        assert!(run(code, &webhook, 8 << 20).is_ok(), "within a larger allowance");
    }

    #[test]
    fn jobs_travel_as_json_lines() {
        let webhook = Webhook::new("https://example.com/".into(), "t".into(), r#"{"a": 1}"#.into(), BTreeMap::new());
        let job = Job {
            code: "function handler(w) { w.cancel = true; return w }".into(),
            webhook: Some(webhook),
            max_output: 1024,
        };
        let line = serde_json::to_string(&job).unwrap();
        assert!(!line.contains('\n'));
        let back: Job = serde_json::from_str(&line).unwrap();
        assert_eq!(back.answer(), Ok(Some(Outcome::Cancel)));
        let check = Job { webhook: None, ..back };
        assert_eq!(check.answer(), Ok(None));
    }

    #[test]
    fn no_state_survives_between_runs() {
        let code = "var n = (typeof n === 'number' ? n : 0) + 1; function handler(w) { w.payload = n; return w }";
        for _ in 0..2 {
            let Ok(Outcome::Send(req)) = run_on(code, Value::Null) else { panic!("runs") };
            assert_eq!(body_json(&req), json!(1));
        }
    }

    #[test]
    fn check_accepts_a_handler_and_refuses_the_rest() {
        assert_eq!(check("function handler(webhook) { return webhook }"), Ok(()));
        assert_eq!(check("const handler = (w) => w;"), Ok(()));
        assert_eq!(
            check("function other(w) { return w }"),
            Err(ScriptError("the code must declare a function named handler".into()))
        );
        assert!(check("function handler(w) { return w").is_err());
        assert!(check("for (;;) {}").is_err());
    }
}
