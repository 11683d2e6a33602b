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
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest code accepted, in bytes.
pub const MAX_CODE_BYTES: usize = 64 << 10;
/// Memory one run may allocate, for the engine, the code, the webhook and what it makes.
pub const MEMORY_LIMIT: usize = 32 << 20;
/// Native stack one run may use (deep recursion fails with a `RangeError`).
pub const STACK_LIMIT: usize = 256 << 10;
/// Wall time one run may take, compiling the code included.
pub const TIME_LIMIT: Duration = Duration::from_millis(250);

/// What went wrong with a transformation, as the attempt's log will say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScriptError(pub String);

/// What the handler is given.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub event_type: &'a str,
    pub payload: &'a Value,
    pub headers: BTreeMap<String, String>,
    pub cancel: bool,
    pub variables: &'a BTreeMap<String, String>,
}

/// The request the handler asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Send(Request),
    /// `cancel` was set: nothing is sent.
    Cancel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub body: Value,
    pub headers: BTreeMap<String, String>,
}

/// The object the handler returned, as far as hooklane reads it.
#[derive(Deserialize)]
struct Returned {
    method: Option<String>,
    url: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    cancel: bool,
}

/// One run's code and what its handler is given, owned, to be moved to a blocking thread.
#[derive(Debug, Clone)]
pub struct Input {
    pub code: String,
    pub variables: BTreeMap<String, String>,
    pub url: String,
    pub event_type: String,
    pub payload: Value,
}

impl Input {
    /// [`run`] on a blocking thread: a run may take up to [`TIME_LIMIT`] of CPU, which
    /// must not hold up the async workers.
    pub async fn run_blocking(self) -> Result<Outcome, ScriptError> {
        let run = tokio::task::spawn_blocking(move || {
            let webhook = Webhook {
                method: "POST",
                url: &self.url,
                event_type: &self.event_type,
                payload: &self.payload,
                headers: BTreeMap::new(),
                cancel: false,
                variables: &self.variables,
            };
            run(&self.code, &webhook)
        });
        run.await.map_err(|e| ScriptError(format!("the run was lost: {e}")))?
    }
}

/// Checks code before it is saved: it must compile, run its top level within the limits
/// and declare a function `handler`.
pub fn check(code: &str) -> Result<(), ScriptError> {
    within_limits(code, |_ctx, _handler| Ok(()))
}

/// Runs the code's handler on `webhook`, within the limits.
pub fn run(code: &str, webhook: &Webhook<'_>) -> Result<Outcome, ScriptError> {
    let input = serde_json::to_string(webhook).map_err(|e| ScriptError(e.to_string()))?;
    let output = within_limits(code, |ctx, handler| {
        let arg = ctx.json_parse(input).catch(ctx)?;
        let returned: rquickjs::Value = handler.call((arg,)).catch(ctx)?;
        if !returned.is_object() {
            return Ok(None);
        }
        ctx.json_stringify(returned).catch(ctx)?.map(|s| s.to_string()).transpose().catch(ctx)
    })?;
    let Some(output) = output else {
        return Err(ScriptError("handler must return the webhook object".into()));
    };
    let returned: Returned =
        serde_json::from_str(&output).map_err(|e| ScriptError(format!("the webhook returned is not valid: {e}")))?;
    if returned.cancel {
        return Ok(Outcome::Cancel);
    }
    let method = match returned.method.as_deref().unwrap_or("POST").to_ascii_uppercase().as_str() {
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        other => return Err(ScriptError(format!("method must be POST or PUT, not {other:?}"))),
    };
    let url = returned.url.unwrap_or_else(|| webhook.url.to_string());
    Ok(Outcome::Send(Request { method, url, body: returned.payload, headers: returned.headers }))
}

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
    let deadline = Instant::now() + TIME_LIMIT;
    runtime.set_interrupt_handler(Some(Box::new(move || Instant::now() > deadline)));
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
        match result {
            Ok(done) => done,
            Err(_) if Instant::now() > deadline => {
                Err(ScriptError(format!("the transformation ran longer than {} ms", TIME_LIMIT.as_millis())))
            }
            Err(e) => Err(ScriptError(describe(&e))),
        }
    })
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

    fn webhook<'a>(payload: &'a Value, variables: &'a BTreeMap<String, String>) -> Webhook<'a> {
        Webhook {
            method: "POST",
            url: "https://example.com/hook",
            event_type: "invoice.paid",
            payload,
            headers: BTreeMap::new(),
            cancel: false,
            variables,
        }
    }

    fn run_on(code: &str, payload: Value) -> Result<Outcome, ScriptError> {
        let vars = BTreeMap::from([("token".to_string(), "t0k".to_string())]);
        run(code, &webhook(&payload, &vars))
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
        assert_eq!(req.method, reqwest::Method::PUT);
        assert_eq!(req.url, "https://example.com/hook?type=invoice.paid");
        assert_eq!(req.body, json!({"text": "paid 12", "was": {"amount": 12}}));
        assert_eq!(req.headers, BTreeMap::from([("Authorization".to_string(), "Bearer t0k".to_string())]));
    }

    #[test]
    fn an_unchanged_webhook_is_sent_as_it_came() {
        let outcome = run_on("function handler(w) { return w }", json!({"a": [1, 2]})).expect("runs");
        assert_eq!(
            outcome,
            Outcome::Send(Request {
                method: reqwest::Method::POST,
                url: "https://example.com/hook".into(),
                body: json!({"a": [1, 2]}),
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
        assert_eq!(
            err("function handler(w) { w.method = 'DELETE'; return w }"),
            "method must be POST or PUT, not \"DELETE\""
        );
        assert!(err("function handler(w) { w.headers = {a: 1}; return w }")
            .starts_with("the webhook returned is not valid"));
        assert!(err("function handler(w) { throw 'text' }").contains("not an Error"));
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

    #[test]
    fn no_state_survives_between_runs() {
        let code = "var n = (typeof n === 'number' ? n : 0) + 1; function handler(w) { w.payload = n; return w }";
        for _ in 0..2 {
            let Ok(Outcome::Send(req)) = run_on(code, Value::Null) else { panic!("runs") };
            assert_eq!(req.body, json!(1));
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
