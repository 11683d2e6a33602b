//! The operators' view over HTTP, against the real binary: `/health`, `/ready`,
//! `/metrics`, request ids, the request headers kept with each attempt, and the
//! `/api/v1/stats` endpoints with their tenant scoping.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn text(server: &Server, path: &str, token: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = server.client.get(server.url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let resp = rb.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

/// The value of a sample line `name{labels} value` in a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_request_ids() {
    let server = Server::start("log_level = \"info,hooklane_dispatch=debug\"").await;
    let (status, _, body) = text(&server, "/health", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, _, body) = text(&server, "/ready", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));

    let ok = Receiver::start().await;
    let failing = Receiver::scripted(|_, _| Reply::Status(503)).await;
    let app = server.create_app("Metrics").await;
    let (good, _) = server
        .create_endpoint(&app, json!({ "url": format!("{}/ok", ok.url), "headers": { "x-tenant": "acme" } }))
        .await;
    let (bad, _) = server.create_endpoint(&app, json!({ "url": format!("{}/fail", failing.url) })).await;

    // A request id given by the caller is kept and echoed; one is made up otherwise.
    let resp = server
        .client
        .post(server.url(&format!("/api/v1/app/{app}/msg/")))
        .bearer_auth(ADMIN)
        .header("x-request-id", "trace-me-42")
        .json(&json!({ "eventType": "invoice.paid", "payload": { "n": 1 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    let msg = resp.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let (_, headers, _) = text(&server, "/api/v1/app/", Some(ADMIN)).await;
    assert!(headers["x-request-id"].to_str().unwrap().starts_with("rid_"), "{headers:?}");
    // A refused request is logged at info with its request id and status.
    let refused = server
        .client
        .get(server.url("/api/v1/app/app_doesnotexist/"))
        .bearer_auth(ADMIN)
        .header("x-request-id", "refused-7")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 404);

    ok.wait_for(1, Duration::from_secs(10)).await;
    failing.wait_for(2, Duration::from_secs(10)).await;
    // (Counted once the answer is read and the attempt recorded, after the receiver saw it.)
    server
        .wait_until(&format!("/api/v1/app/{app}/attempt/endpoint/{bad}"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| d.len() >= 2)
        })
        .await;
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/endpoint/{good}"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let sent = &attempts["data"][0]["requestHeaders"];
    let got = &ok.received()[0];
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "x-tenant"] {
        assert_eq!(sent[name], got.header(name), "{name} as sent: {sent}");
    }
    assert_eq!(sent["webhook-id"], msg.as_str());

    let (status, headers, page) = text(&server, "/metrics", Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(sample(&page, "hooklane_messages_ingested_total"), Some(1.0), "{page}");
    assert_eq!(sample(&page, r#"hooklane_attempts_total{outcome="success",status_class="2xx"}"#), Some(1.0), "{page}");
    assert!(sample(&page, r#"hooklane_attempts_total{outcome="failure",status_class="5xx"}"#).unwrap_or(0.0) >= 2.0);
    assert_eq!(sample(&page, "hooklane_delivery_latency_seconds_count"), Some(1.0), "{page}");
    assert!(sample(&page, r#"hooklane_attempt_duration_seconds_count{outcome="failure"}"#).unwrap_or(0.0) >= 2.0);
    assert!(sample(&page, r#"hooklane_store_commit_seconds_count{store="sqlite"}"#).unwrap_or(0.0) >= 1.0, "{page}");
    assert_eq!(sample(&page, "hooklane_store_up"), Some(1.0));
    for state in ["due", "scheduled", "leased"] {
        assert!(sample(&page, &format!("hooklane_queue_depth{{state=\"{state}\"}}")).is_some(), "{page}");
    }
    assert_eq!(sample(&page, "hooklane_endpoints_failing"), Some(1.0), "{page}");
    assert_eq!(sample(&page, "hooklane_endpoints_disabled"), Some(0.0));
    assert!(page.contains("hooklane_endpoint_failure_streak{app_id=\""), "{page}");
    assert!(page.contains("hooklane_endpoint_failing_seconds{app_id=\""), "{page}");

    let logs = server.logs();
    let refused_line = logs.lines().find(|l| l.contains("request_id=refused-7")).unwrap_or_default();
    assert!(refused_line.contains("request refused") && refused_line.contains("status=404"), "{logs}");
    // Successes are logged at debug only (one line per accepted message would cost ~5 % CPU).
    assert!(!logs.contains("request_id=trace-me-42"), "a 202 is not logged at info");
    assert!(logs.contains("delivery attempt") && logs.contains("attempt_id=atmpt_"), "failed attempts are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_require_the_admin_token_unless_told_otherwise() {
    let open = Server::start("metrics_require_token = false").await;
    let (status, _, page) = text(&open, "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("hooklane_queue_depth"));
    drop(open);
    // By default: it names the applications and endpoints that fail.
    let server = Server::start("").await;
    assert_eq!(text(&server, "/metrics", None).await.0, 401);
    let (status, _, page) = text(&server, "/metrics", Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert!(page.contains("hooklane_queue_depth"));
    let app = server.create_app("A").await;
    let (_, portal) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{app}"), None).await;
    assert_eq!(text(&server, "/metrics", portal["token"].as_str()).await.0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_endpoints_are_tenant_scoped() {
    let server = Server::start("").await;
    let receiver = Receiver::start().await;
    let a = server.create_app("A").await;
    let b = server.create_app("B").await;
    let (ep, _) = server.create_endpoint(&a, json!({ "url": format!("{}/a", receiver.url) })).await;
    server.send_message(&a, "invoice.paid", json!({ "n": 1 })).await;
    server.send_message(&a, "user.created", json!({ "n": 2 })).await;
    receiver.wait_for(2, Duration::from_secs(10)).await;

    let health = server
        .wait_until(&format!("/api/v1/stats/app/{a}/endpoint"), Duration::from_secs(10), |b| {
            b["data"][0]["succeeded"] == 2
        })
        .await;
    let h = &health["data"][0];
    assert_eq!(
        (h["id"].as_str(), h["failed"].as_u64(), h["successRate"].as_f64()),
        (Some(ep.as_str()), Some(0), Some(1.0))
    );
    assert!(h["p50Ms"].is_i64() && h["p95Ms"].is_i64(), "{h}");

    let (status, log) =
        server.call("GET", &format!("/api/v1/stats/app/{a}/msg?status=success&event_types=invoice.paid"), None).await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["data"].as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log["data"][0]["eventType"], "invoice.paid");
    assert_eq!(log["data"][0]["status"], "success");
    let (_, failed) = server.call("GET", &format!("/api/v1/stats/app/{a}/msg?status=fail"), None).await;
    assert_eq!(failed["data"], json!([]));
    let (status, _) = server.call("GET", &format!("/api/v1/stats/app/{a}/msg?status=bogus"), None).await;
    assert_eq!(status, 422);

    let (status, tl) = server.call("GET", &format!("/api/v1/stats/app/{a}/timeline?minutes=5"), None).await;
    assert_eq!(status, 200);
    let slices = tl["data"].as_array().unwrap();
    assert_eq!(slices.len(), 5, "{tl}");
    let total: u64 = slices.iter().map(|s| s["succeeded"].as_u64().unwrap()).sum();
    assert_eq!(total, 2);

    // An application token sees its own application's statistics, and nobody else's.
    let (_, portal) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{b}"), None).await;
    let token = portal["token"].as_str().unwrap();
    for path in ["endpoint", "msg", "timeline"] {
        let (status, _) = server.call_as(token, "GET", &format!("/api/v1/stats/app/{a}/{path}"), None).await;
        assert_eq!(status, 404, "{path}");
        let (status, _) = server.call_as(token, "GET", &format!("/api/v1/stats/app/{b}/{path}"), None).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _) = server.call_as("nope", "GET", &format!("/api/v1/stats/app/{a}/msg"), None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn worker_threads_follow_the_configuration() {
    // The count the runtime reports at start (its blocking-pool threads carry the same
    // thread name, so `/proc` cannot tell workers apart).
    async fn workers(server: &Server) -> (Option<usize>, String) {
        let mut line = String::new();
        for _ in 0..100 {
            let logs = server.logs();
            if let Some(l) = logs.lines().find(|l| l.contains("hooklane started")) {
                line = l.to_string();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let n = line.split("workers=").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok());
        (n, line)
    }
    let three = Server::start("worker_threads = 3").await;
    let (n, line) = workers(&three).await;
    assert_eq!(n, Some(3), "start line: {line}");
    // The default leaves one CPU to the store's writer: one fewer worker than CPUs.
    let default = Server::start("").await;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (n, line) = workers(&default).await;
    assert_eq!(n, Some(cpus.saturating_sub(1).max(1)), "start line: {line}");
}

#[tokio::test]
async fn the_environment_overrides_settings_as_written_and_other_variables_are_left_alone() {
    // A token of digits with leading zeros stays the text it is (not the number 71234…),
    // without the line end a secret file leaves, under a name in any case.
    let token = "0071234500712345";
    let env = [
        ("hooklane_admin_token", "0071234500712345\n"),
        // A setting misspelt changes nothing, and says so in the log.
        ("HOOKLANE_ADMINTOKEN", "never-read-as-the-token"),
        ("HOOKLANE_DELIVERY_LEASE", "10s"),
        // The CLI's own variables, and those Kubernetes gives a service named `hooklane`:
        // not settings, and no reason to refuse to start.
        ("HOOKLANE_CONFIG", "/nonexistent/hooklane.toml"),
        ("HOOKLANE_TOKEN", "sk_for_the_cli"),
        ("HOOKLANE_PORT", "tcp://10.0.0.1:8071"),
        ("HOOKLANE_SERVICE_HOST", "10.0.0.1"),
    ];
    let server = Server::start_with_env("", &env).await;
    let (status, body) = server.call_as(token, "GET", "/api/v1/app", None).await;
    assert_eq!(status, 200, "the environment's token: {body}");
    let (status, _) = server.call("GET", "/api/v1/app", None).await;
    assert_eq!(status, 401, "the file's token is overridden");
    let logs = server.logs();
    let warned = |name: &str| logs.lines().any(|l| l.contains("is no setting") && l.contains(name));
    assert!(warned("HOOKLANE_ADMINTOKEN") && warned("HOOKLANE_DELIVERY_LEASE"), "{logs}");
    for quiet in ["HOOKLANE_CONFIG", "HOOKLANE_TOKEN", "HOOKLANE_PORT", "HOOKLANE_SERVICE_HOST", "hooklane_admin_token"]
    {
        assert!(!warned(quiet), "{quiet}: {logs}");
    }
    assert!(!logs.contains("never-read-as-the-token"), "values are not logged: {logs}");
    drop(server);

    // Within a section an unknown name is still a mistake; a libpq connection string is
    // refused without being echoed.
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, value, expected) in [
        ("HOOKLANE_DELIVERY__REQUEST_TIMOUT", "10s", "unknown field"),
        ("HOOKLANE_DATABASE_URL", "host=db user=u password=s3cret dbname=h", "database_url"),
    ] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"));
        command.arg("serve").current_dir(dir.path()).env_remove("HOOKLANE_CONFIG").env(name, value);
        let out = refused_at_start(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{name}: {stderr}");
    }
}

/// A second `serve` on the same SQLite file stops before it touches anything: it would
/// otherwise take back the first one's leases and send their deliveries a second time.
#[tokio::test]
async fn a_second_process_on_the_same_sqlite_file_is_refused() {
    let server = Server::start("").await;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"));
    command.arg("serve").arg("--config").arg(server.config_file()).env_remove("HOOKLANE_CONFIG");
    let out = refused_at_start(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another hooklane process"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "it never listened");
    let (status, _) = server.call("GET", "/api/v1/app", None).await;
    assert_eq!(status, 200, "the first one serves on");
    // The same file by another name (a symbolic link to it) is the same database.
    #[cfg(unix)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("other-name.db");
        std::os::unix::fs::symlink(server.data_dir().join("data").join("hooklane.db"), &link).expect("link");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"));
        command
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("HOOKLANE_CONFIG")
            .env("HOOKLANE_DATABASE_URL", format!("sqlite:{}", link.display()))
            .env("HOOKLANE_LISTEN", "127.0.0.1:0");
        let out = refused_at_start(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("another hooklane process"), "{stderr}");
    }
}

/// Runs `command` (a `serve`), which must stop by itself with a failure within 20 s; one
/// that serves instead is killed and the test fails.
fn refused_at_start(mut command: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    // Some refusals come after the listener is bound: on the default port the test would
    // depend on nothing else listening there (and be refused for that instead).
    if !command.get_envs().any(|(name, _)| name == "HOOKLANE_LISTEN") {
        command.env("HOOKLANE_LISTEN", "127.0.0.1:0");
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run hooklane");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("it started: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The dashboard may not be framed (CSP `frame-ancestors 'none'`, and `X-Frame-Options`
/// for older browsers); the portal may, by the SaaS that embeds it: any page unless
/// `portal_frame_ancestors` lists some. Both run only their own scripts and say no referrer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_say_where_they_may_be_shown() {
    let server = Server::start("").await;
    let (status, headers, page) = text(&server, "/dashboard", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("<script"), "{page}");
    let csp = headers["content-security-policy"].to_str().unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("require-trusted-types-for 'script'; trusted-types 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
    let (status, headers, _) = text(&server, "/portal", None).await;
    assert_eq!(status, 200);
    assert!(headers.get("cross-origin-opener-policy").is_none(), "a SaaS may open the portal in a popup");
    let csp = headers["content-security-policy"].to_str().unwrap_or_default();
    assert!(csp.ends_with("; frame-ancestors *") && csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("require-trusted-types-for 'script'"), "{csp}");
    assert!(headers.get("x-frame-options").is_none(), "the portal is embedded by the SaaS");
    drop(server);

    // `portal_frame_ancestors` names the pages that may frame the portal, and only those;
    // the dashboard is framed by none still.
    let server = Server::start(r#"portal_frame_ancestors = ["https://app.example.com", "'self'"]"#).await;
    let (status, headers, _) = text(&server, "/portal", None).await;
    assert_eq!(status, 200);
    let csp = headers["content-security-policy"].to_str().unwrap_or_default();
    assert!(csp.ends_with("; frame-ancestors https://app.example.com 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(headers.get("x-frame-options").is_none());
    let (_, headers, _) = text(&server, "/dashboard", None).await;
    let csp = headers["content-security-policy"].to_str().unwrap_or_default();
    assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    drop(server);

    // A value that is no source (here one that would add a directive) stops the start.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hooklane.toml");
    std::fs::write(&config, "portal_frame_ancestors = [\"https://a.example; script-src *\"]\n").expect("config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"));
    command.arg("serve").arg("--config").arg(&config).current_dir(dir.path()).env_remove("HOOKLANE_CONFIG");
    let out = refused_at_start(command);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("portal_frame_ancestors"), "{stderr}");
}

/// A process killed when dropped: a test that fails leaves no server behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `hooklane serve` in `dir` without a configuration file, on a free port, with
/// `env`: the process and its stdout's lines up to the one showing its admin token.
fn serve_bare(dir: &std::path::Path, env: &[(&str, &str)]) -> (Killed, Vec<String>) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("HOOKLANE_CONFIG")
        .env_remove("HOOKLANE_DATABASE_URL")
        .env_remove("HOOKLANE_ADMIN_TOKEN")
        .env("HOOKLANE_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve-stderr.log")).expect("a log file"))
        .spawn()
        .expect("run hooklane");
    let stdout = child.stdout.take().expect("stdout");
    let (sent, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sent.send(line);
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
        // (Printed right after where it listens.)
        let told = line.starts_with("admin token:");
        seen.push(line);
        if told {
            return (Killed(child), seen);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("hooklane did not start: {seen:?}");
}

/// The database's `-wal` left readable by others by a killed process, the database itself
/// owner-only: the start warns of it, as of the database (SQLite reuses it as it is).
#[cfg(unix)]
#[tokio::test]
async fn a_write_ahead_log_readable_by_others_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (killed, _) = serve_bare(dir.path(), &[]);
    drop(killed); // (SIGKILL: the -wal stays)
    let wal = dir.path().join("data").join("hooklane.db-wal");
    assert_eq!(mode(&dir.path().join("data").join("hooklane.db")), 0o600);
    std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (_running, _) = serve_bare(dir.path(), &[]);
    let log = std::fs::read_to_string(dir.path().join("serve-stderr.log")).expect("the log");
    assert!(log.contains("can be read by other users") && log.contains("hooklane.db-wal"), "{log}");
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// The database holds every secret (SQLite gives its `-wal` and `-shm` files the database
/// file's mode), and the admin token opens everything: a first start makes them, their
/// folder and a backup for their owner alone, whatever the umask lets others read.
#[cfg(unix)]
#[tokio::test]
async fn the_files_a_server_makes_are_its_owners_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, lines) = serve_bare(dir.path(), &[]);
    assert!(lines.iter().any(|l| l.contains("generated, kept in")), "{lines:?}");
    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700, "the data folder");
    for file in ["hooklane.db", "hooklane.db-wal", "hooklane.db-shm", "hooklane.db.lock", "admin-token"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    drop(child);
    // A lock file left readable by others (as earlier versions made it) is made owner-only.
    {
        use std::os::unix::fs::PermissionsExt;
        let lock = data.join("hooklane.db.lock");
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (child, _) = serve_bare(dir.path(), &[]);
        drop(child);
        assert_eq!(mode(&lock), 0o600, "an existing lock file");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["backup", "--to", "copy.db"])
        .current_dir(dir.path())
        .env_remove("HOOKLANE_CONFIG")
        .env_remove("HOOKLANE_DATABASE_URL")
        .output()
        .expect("backup");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&dir.path().join("copy.db")), 0o600, "the backup");
}

/// A token file that cannot be read, or holds a token too short to be one, stops the start
/// and is left as it is (it may hold the token every client uses); an empty one, made
/// ready by provisioning with the umask's mode, is replaced by a generated token that only
/// its owner may read.
#[cfg(unix)]
#[tokio::test]
async fn an_admin_token_file_is_never_replaced_unless_empty() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data");
    let token = data.join("admin-token");
    for (kept, said) in [(&b"short\n"[..], "shorter than 16 characters"), (&[0xff, 0xfe, 0x41][..], "cannot read")] {
        std::fs::write(&token, kept).expect("write");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"));
        command.arg("serve").current_dir(dir.path()).env_remove("HOOKLANE_CONFIG").env_remove("HOOKLANE_ADMIN_TOKEN");
        let out = refused_at_start(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(said), "{said}: {stderr}");
        assert_eq!(std::fs::read(&token).expect("read"), kept, "left as it was");
    }
    std::fs::write(&token, "").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (child, lines) = serve_bare(dir.path(), &[]);
    drop(child);
    let generated = std::fs::read_to_string(&token).expect("read");
    assert!(generated.starts_with("sk_") && lines.iter().any(|l| l.contains(&generated)), "{lines:?}");
    assert_eq!(mode(&token), 0o600);
}

/// A variable set to nothing, as a compose file leaves one whose value was left out, is
/// taken as not set: an empty log filter logged nothing (errors included), and an empty
/// token file name stopped the start.
#[tokio::test]
async fn an_empty_variable_is_no_setting() {
    let env =
        [("HOOKLANE_LOG_LEVEL", ""), ("HOOKLANE_ADMIN_TOKEN_FILE", " "), ("HOOKLANE_DELIVERY__RETRY_SCHEDULE", "")];
    let server = Server::start_with_env("", &env).await;
    let (status, body) = server.call("GET", "/api/v1/app", None).await;
    assert_eq!(status, 200, "{body}");
    let logs = server.logs();
    assert!(logs.contains("hooklane started"), "the default level logs: {logs}");
}

/// A configuration file that cannot be read as one (a folder here) stops the command:
/// figment took it for an empty file, and the defaults were used without a word.
#[tokio::test]
async fn a_configuration_that_is_no_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["migrate", "--config", "."])
        .current_dir(dir.path())
        .env_remove("HOOKLANE_CONFIG")
        .env_remove("HOOKLANE_DATABASE_URL")
        .output()
        .expect("migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cannot read the configuration file"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "no database was made with the defaults");
}

/// A store that cannot write (a flush of its write-ahead log failed: the log was moved away,
/// as a failing disk refuses one) refuses writes with 503 `unavailable` and `Retry-After`,
/// the cause in the log and not in the answer, rather than 500 `internal`: a client's retry
/// may succeed on another node or after a restart. Reads go on; `/ready` answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_write_answers_503_with_retry_after() {
    let server = Server::start("").await;
    let app = server.create_app("Disk").await;
    let wal = server.dir.path().join("data").join("hooklane.db-wal");
    std::fs::rename(&wal, server.dir.path().join("moved-wal")).expect("move the write-ahead log away");
    for n in 0..2 {
        let resp = server
            .client
            .post(server.url(&format!("/api/v1/app/{app}/msg/")))
            .bearer_auth(ADMIN)
            .json(&json!({ "eventType": "a.b", "payload": { "n": n } }))
            .send()
            .await
            .expect("post");
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body: serde_json::Value = resp.json().await.expect("a JSON answer");
        assert_eq!(
            (status, retry_after.as_deref(), body["code"].as_str()),
            (503, Some("5"), Some("unavailable")),
            "{body}"
        );
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(!detail.contains("flush") && !detail.contains("hooklane.db"), "the cause is not answered: {detail}");
    }
    let (status, got) = server.call("GET", &format!("/api/v1/app/{app}/"), None).await;
    assert_eq!((status, got["id"].as_str()), (200, Some(app.as_str())), "reads go on: {got}");
    let (status, _, _) = text(&server, "/ready", None).await;
    assert_eq!(status, 503, "not ready");
    let logs = server.logs();
    assert!(logs.contains("the store is unavailable") && logs.contains("flush"), "the cause is logged: {logs}");
}
