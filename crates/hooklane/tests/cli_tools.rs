//! The command-line tools around the server, run as the real binary: `forward` against a
//! local receiver that redirects and a poller that answers something else than a page,
//! `--help` with secrets in the environment, `listen` with a large body, one over its
//! `--max-body` and one with terminal escape sequences, `migrate` beside a running `serve`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

const WAIT: Duration = Duration::from_secs(15);

/// A local receiver answering 302 towards another one: the redirect is not followed (a
/// redirected POST would arrive there as a GET without its body, and signed headers would go
/// to another host), and the message counts as failed, tried again, then skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_does_not_follow_a_redirect() {
    let server = Server::start("").await;
    let app = server.create_app("laptop").await;
    let elsewhere = Receiver::start().await;
    let location = format!("{}/elsewhere", elsewhere.url);
    let local = Receiver::scripted(move |_, _| Reply::WithHeader(302, "location", location.clone())).await;
    let to = format!("{}/local", local.url);
    let base = server.base.clone();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let forward = Forwarder::start(&[
        to.as_str(),
        "--server",
        &base,
        "--app",
        &app,
        "--token",
        ADMIN,
        "--secret",
        secret,
        "--tries",
        "2",
    ]);
    forward.wait_for_line("saying it is connected", |l| l.contains("connected to")).await;
    let msg = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    let skipped =
        forward.wait_for_line("saying the message was skipped", |l| l.contains(&msg) && l.contains("skipped")).await;
    assert!(skipped.starts_with("302 a.b"), "{skipped}");
    let got = local.received();
    assert_eq!(got.len(), 2, "tried twice at the local URL: {:?}", forward.lines());
    assert!(got.iter().all(|r| r.method == "POST" && signature_valid(secret, r)), "{got:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(elsewhere.received().is_empty(), "the redirect was followed: {:?}", elsewhere.received());
    let lines = forward.lines();
    assert!(!lines.iter().any(|l| l.starts_with("200 ")), "nothing counts as delivered: {lines:?}");
}

/// A poller (`--endpoint`) whose first answer is a 200 that is no page (a captive portal's,
/// a proxy's): read again after a pause, as any passing failure, and the command goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_reads_a_poller_again_after_an_answer_that_is_no_page() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let poller = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            use axum::response::IntoResponse;
            let page = |data: serde_json::Value| {
                (
                    [("content-type", "application/json")],
                    json!({ "data": data, "iterator": "it1", "done": true }).to_string(),
                )
            };
            match n {
                0 => ([("content-type", "text/html")], "<html>Sign in to the Wi-Fi</html>".to_string()).into_response(),
                1 => page(json!([{ "id": "msg_fake1", "eventType": "a.b", "payload": { "n": 1 } }])).into_response(),
                _ => page(json!([])).into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, poller).await });
    let rx = Receiver::start().await;
    let to = format!("{}/local", rx.url);
    let mut forward = Forwarder::start(&[
        to.as_str(),
        "--server",
        &base,
        "--app",
        "app_x",
        "--endpoint",
        "ep",
        "--token",
        "sk_poll_x",
    ]);
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!((got[0].header("webhook-id"), got[0].body.as_slice()), ("msg_fake1", &br#"{"n":1}"#[..]));
    assert!(forward.child.try_wait().expect("wait").is_none(), "it stopped: {:?}", forward.lines());
    forward
        .wait_for_line("saying the page was none", |l| l.contains("not a poller's page") && l.contains("trying again"))
        .await;
    assert!(asked.load(Ordering::SeqCst) >= 2);
}

/// A stream answered by something that is no event stream (a captive portal's page) is not
/// taken for a connection: `forward` says so and asks again, and reads the stream that comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_reads_a_stream_again_after_an_answer_that_is_no_stream() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let server = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            use axum::response::IntoResponse;
            let event = r#"{"id":"msg_fake2","eventType":"a.b","payload":{"n":2}}"#;
            match n {
                0 => ([("content-type", "text/html")], "<html>Sign in to the Wi-Fi</html>".to_string()).into_response(),
                1 => ([("content-type", "text/event-stream")], format!("id: p1\ndata: {event}\n\n")).into_response(),
                _ => ([("content-type", "text/event-stream")], ": quiet\n\n".to_string()).into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, server).await });
    let rx = Receiver::start().await;
    let to = format!("{}/local", rx.url);
    let forward = Forwarder::start(&[to.as_str(), "--server", &base, "--app", "app_x", "--token", "sk_x"]);
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!((got[0].header("webhook-id"), got[0].body.as_slice()), ("msg_fake2", &br#"{"n":2}"#[..]));
    // The command prints its lines before it forwards, but the test reads them on its own
    // task, which may lag behind the receiver: wait for the line before comparing the order.
    forward.connected(1).await;
    let lines = forward.lines();
    assert!(lines.iter().any(|l| l.contains("not an event stream") && l.contains("trying again")), "{lines:?}");
    let connected = lines.iter().position(|l| l.contains("connected to"));
    let refused = lines.iter().position(|l| l.contains("not an event stream"));
    assert!(refused < connected, "the page was not taken for a connection: {lines:?}");
    assert!(asked.load(Ordering::SeqCst) >= 2);
}

/// A server URL with a user name and password is refused before anything is sent, without
/// printing the password: reqwest would send them as `Authorization: Basic` beside the
/// token's `Authorization: Bearer`, which hooklane (reading the first) answers 401 and a
/// proxy refuses. Without them exactly one `Authorization: Bearer <token>` goes out, checked
/// on a loopback server that records the headers of every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_refuses_credentials_in_its_server_url_and_sends_one_authorization() {
    let seen: Arc<std::sync::Mutex<Vec<Vec<String>>>> = Arc::default();
    let record = seen.clone();
    let server = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            let values = headers
                .get_all(axum::http::header::AUTHORIZATION)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            record.lock().expect("lock").push(values);
            (axum::http::StatusCode::UNAUTHORIZED, "no")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, server).await });
    let forward = |server: String, endpoint: Option<&str>| {
        let mut args = vec![
            "forward".to_string(),
            "http://127.0.0.1:9/local".into(),
            "--server".into(),
            server,
            "--app".into(),
            "app_x".into(),
            "--token".into(),
            "sk_x".into(),
        ];
        if let Some(ep) = endpoint {
            args.extend(["--endpoint".to_string(), ep.to_string()]);
        }
        async move {
            let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
                .args(&args)
                .env_remove("HOOKLANE_CONFIG")
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(WAIT, run).await.expect("forward ended").expect("run forward");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
    };
    for endpoint in [None, Some("ep")] {
        let (ok, text) = forward(format!("http://ops:s3cretPw@127.0.0.1:{port}"), endpoint).await;
        assert!(!ok, "{endpoint:?}: {text}");
        assert!(text.contains("--server") && text.contains("user name or password"), "{endpoint:?}: {text}");
        assert!(!text.contains("s3cretPw"), "{endpoint:?} shows the password: {text}");
        assert!(seen.lock().expect("lock").is_empty(), "{endpoint:?}: a request was sent: {seen:?}");

        let (ok, text) = forward(format!("http://127.0.0.1:{port}"), endpoint).await;
        assert!(!ok && text.contains("401"), "{endpoint:?}: a refusal ends the command: {text}");
        let got = std::mem::take(&mut *seen.lock().expect("lock"));
        assert!(!got.is_empty(), "{endpoint:?}: nothing was asked");
        for headers in got {
            assert_eq!(headers, vec!["Bearer sk_x".to_string()], "{endpoint:?}");
        }
    }
}

/// `--help` names the environment variables that give secrets, never their values (a
/// terminal shared on a call, a help text pasted into an issue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_does_not_show_secrets_from_the_environment() {
    const MARKER: &str = "whsec_MarkerMarkerMarkerMarker0123";
    for (command, variable) in [
        ("listen", "HOOKLANE_LISTEN_SECRET"),
        ("send", "HOOKLANE_SEND_SECRET"),
        ("verify", "HOOKLANE_VERIFY_SECRET"),
        ("forward", "HOOKLANE_FORWARD_SECRET"),
        ("forward", "HOOKLANE_TOKEN"),
        ("forward", "HOOKLANE_URL"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .args([command, "--help"])
            .env_remove("HOOKLANE_CONFIG")
            .env(variable, MARKER)
            .output()
            .await
            .expect("run hooklane");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{command} --help: {text}");
        assert!(text.contains(variable), "{command} --help names {variable}: {text}");
        assert!(!text.contains(MARKER), "{command} --help shows {variable}'s value: {text}");
    }
}

/// `listen` takes a body larger than axum's default limit (2 MiB): hooklane may deliver
/// larger ones (`max_body_bytes` has no ceiling; a transform adds up to 4 MiB), and the
/// receiver for trying deliveries must show them, not answer 413 and print nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_a_body_over_two_mib() {
    let (_child, base, mut out) = start_listen(&[]).await;
    // Read while the request is answered: the line is printed before the answer, and a
    // 3 MiB line fills the pipe.
    let printed = tokio::spawn(async move {
        while let Ok(Some(line)) = out.next_line().await {
            if line.contains("webhook-id=msg_big") {
                return line;
            }
        }
        panic!("listen printed no line for the request");
    });
    let body = format!("{{\"big\":\"{}\"}}", "x".repeat(3 << 20));
    let post = reqwest::Client::new()
        .post(format!("{base}/hook"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_big")
        .body(body.clone())
        .send();
    let resp = tokio::time::timeout(WAIT, post).await.expect("answered in time").expect("post");
    assert!(resp.status().is_success(), "{}", resp.status());
    let line = tokio::time::timeout(WAIT, printed).await.expect("a line printed").expect("the reader");
    assert!(line.ends_with(&format!("body={body}")), "the whole body is printed ({} bytes)", line.len());
}

/// `migrate` takes the lock a `serve` holds on its SQLite file: beside a running server it
/// refuses, saying why (the server migrated the schema at its start); without one it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_database_a_server_is_serving() {
    let mut server = Server::start("").await;
    let config = server.config_file().to_path_buf();
    let (ok, stdout, stderr) = migrate(&config).await;
    assert!(!ok, "migrate ran beside the server: {stdout}{stderr}");
    assert!(stderr.contains("another hooklane process") && stderr.contains("stop it first to run migrate"), "{stderr}");
    assert!(!stdout.contains("up to date"), "{stdout}");
    let (status, _) = server.call("GET", "/api/v1/app", None).await;
    assert_eq!(status, 200, "the server serves on");
    server.kill9();
    let (ok, stdout, stderr) = migrate(&config).await;
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("database schema is up to date"), "{stdout}");
}

/// Runs `hooklane migrate --config config`: whether it succeeded, its stdout and stderr.
async fn migrate(config: &std::path::Path) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .arg("migrate")
            .arg("--config")
            .arg(config)
            .env_remove("HOOKLANE_CONFIG")
            .env_remove("HOOKLANE_DATABASE_URL")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("migrate ended")
    .expect("migrate ran");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Starts `hooklane listen --port 0` with `args`: the process, its base URL and its output,
/// line by line.
async fn start_listen(
    args: &[&str],
) -> (tokio::process::Child, String, tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["listen", "--port", "0"])
        .args(args)
        .env_remove("HOOKLANE_LISTEN_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hooklane listen");
    let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let out = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = err.next_line().await {
            if let Some(addr) = line.split("receiving on ").nth(1) {
                return addr.trim().to_string();
            }
        }
        panic!("listen ended without saying where it listens");
    })
    .await
    .expect("listen started");
    (child, base, out)
}

/// The next line `listen` prints that contains `what`.
async fn next_line_with(
    out: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    what: &str,
) -> String {
    let found = async {
        while let Ok(Some(line)) = out.next_line().await {
            if line.contains(what) {
                return line;
            }
        }
        panic!("listen printed no line with {what}");
    };
    tokio::time::timeout(WAIT, found).await.expect("a line printed")
}

/// A sender cannot drive the developer's terminal through `listen`: the escape sequences
/// of a body (an OSC retitling the window, an ANSI screen clear) are printed visibly, not
/// as the bytes a terminal obeys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_control_characters_escaped() {
    let (_child, base, mut out) = start_listen(&[]).await;
    let body = "hi \x1b]0;pwned\x07 \x1b[2J\r there\tok";
    let post = reqwest::Client::new().post(format!("{base}/hook")).header("webhook-id", "msg_esc").body(body).send();
    let resp = tokio::time::timeout(WAIT, post).await.expect("answered in time").expect("post");
    assert!(resp.status().is_success(), "{}", resp.status());
    let line = next_line_with(&mut out, "webhook-id=msg_esc").await;
    assert!(!line.contains(['\x1b', '\x07', '\r']), "a raw control character was printed: {line:?}");
    assert!(line.ends_with("body=hi \\u{1b}]0;pwned\\u{7} \\u{1b}[2J\\u{d} there\tok"), "{line:?}");
}

/// `--max-body` bounds what a sender can make `listen` hold (it may listen on 0.0.0.0): a
/// body announced larger is refused at once, a chunked one once it goes past the limit,
/// both answered 413 and reported; a body within it is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_refuses_a_body_over_max_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_child, base, mut out) = start_listen(&["--max-body", "1000"]).await;
    // Announced: answered before any of it is sent.
    let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.expect("connect");
    let head = "POST /hook HTTP/1.1\r\nhost: x\r\nwebhook-id: msg_announced\r\ncontent-length: 5000000000\r\n\r\n";
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer)).await.expect("answered and closed in time").expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let line = next_line_with(&mut out, "webhook-id=msg_announced").await;
    assert!(line.contains("refused: body larger than --max-body (1000 bytes), answered 413"), "{line}");

    // Chunked, no length said: refused once past the limit.
    let chunks = futures::stream::iter([vec![b'x'; 600], vec![b'y'; 600]].map(Ok::<_, std::io::Error>));
    let post = reqwest::Client::new()
        .post(format!("{base}/hook"))
        .header("webhook-id", "msg_chunked")
        .body(reqwest::Body::wrap_stream(chunks))
        .send();
    let resp = tokio::time::timeout(WAIT, post).await.expect("answered in time").expect("post");
    assert_eq!(resp.status(), 413);
    let line = next_line_with(&mut out, "webhook-id=msg_chunked").await;
    assert!(line.contains("refused: body larger than --max-body"), "{line}");

    // At the limit: taken and printed.
    let body = "z".repeat(1000);
    let post = reqwest::Client::new().post(format!("{base}/hook")).header("webhook-id", "msg_fits").body(body.clone());
    let resp = tokio::time::timeout(WAIT, post.send()).await.expect("answered in time").expect("post");
    assert_eq!(resp.status(), 200);
    let line = next_line_with(&mut out, "webhook-id=msg_fits").await;
    assert!(line.ends_with(&format!("body={body}")), "{line}");
}

/// `listen --status` is the answer to a delivery: a final status. An informational one
/// (100 was answered 500, 101 switched protocols with no upgrade) is refused at once, as is
/// a negative tolerance.
#[tokio::test]
async fn listen_refuses_a_status_that_is_no_answer() {
    for args in [&["--status", "100"][..], &["--status", "101"], &["--status", "600"], &["--tolerance=-1"]] {
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
                .args(["listen", "--port", "0"])
                .args(args)
                .env_remove("HOOKLANE_LISTEN_SECRET")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{args:?}: listen started"))
        .expect("listen ran");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("not in"), "{args:?}: {stderr}");
    }
}

/// Runs `hooklane ARGS --config config` with `env` set: its exit code (None: a signal),
/// stdout and stderr.
async fn run_with_config(
    args: &[&str],
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("HOOKLANE_CONFIG")
            .env_remove("HOOKLANE_DATABASE_URL")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("hooklane ended")
    .expect("hooklane ran");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A configuration file with a syntax error is refused naming the line and column, never
/// showing the line: the commonest mistake, a value left unquoted, is a token or a database
/// URL with its password, and stderr goes to the start log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syntax_error_in_the_configuration_does_not_show_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hooklane.toml");
    for (text, secret, line) in [
        ("admin_token = s3cretTokenValue0123\n", "s3cretTokenValue0123", "line 1"),
        ("log_level = \"info\"\ndatabase_url = postgres://u:S3cretPw@db/h\n", "S3cretPw", "line 2"),
        // A key given twice: its line is shown the same way.
        (
            "admin_token = \"s3cretTokenValue0123\"\nadmin_token = \"s3cretTokenValue0123\"\n",
            "s3cretTokenValue0123",
            "line 2",
        ),
    ] {
        std::fs::write(&config, text).expect("write config");
        let (code, stdout, stderr) = run_with_config(&["migrate"], &config, &[]).await;
        assert_eq!(code, Some(1), "{text:?}: {stdout}{stderr}");
        assert!(stderr.contains("invalid configuration file") && stderr.contains(line), "{text:?}: {stderr}");
        assert!(!stderr.contains(secret) && !stdout.contains(secret), "{text:?} shows the value: {stderr}");
    }
}

/// `[delivery]` settings past what the engine can hold are refused at start, naming the
/// setting, with exit 1: not a panic (a lease past what `lease * 3` holds, a semaphore
/// past tokio's limit), nor a shutdown that does not wait (max_outstanding past u32).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_settings_past_their_bounds_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hooklane.toml");
    let db = dir.path().join("data").join("hooklane.db");
    std::fs::write(&config, format!("database_url = \"sqlite:{}\"\n", db.display())).expect("write config");
    for (variable, value, setting) in [
        ("HOOKLANE_DELIVERY__LEASE", "7000000000000000000s", "delivery.lease"),
        ("HOOKLANE_DELIVERY__MAX_IN_FLIGHT", "9000000000000000000", "delivery.max_in_flight"),
        ("HOOKLANE_DELIVERY__PER_ENDPOINT_IN_FLIGHT", "9000000000000000000", "delivery.per_endpoint_in_flight"),
        ("HOOKLANE_DELIVERY__MAX_OUTSTANDING", "4294967296", "delivery.max_outstanding"),
        ("HOOKLANE_DELIVERY__MAX_OUTSTANDING_BYTES", "18446744073709551615", "delivery.max_outstanding_bytes"),
        ("HOOKLANE_DELIVERY__SCRIPT_WORKERS", "9000000000000000000", "delivery.script_workers"),
    ] {
        let (code, stdout, stderr) = run_with_config(&["migrate"], &config, &[(variable, value)]).await;
        assert_eq!(code, Some(1), "{variable}={value}: {stdout}{stderr}");
        assert!(stderr.contains(setting) && stderr.contains("at most"), "{variable}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{variable}={value}: {stderr}");
    }
    assert!(!db.exists(), "a refused configuration made the database");
}

/// `portal_frame_ancestors` from the environment as one comma-separated string, as other
/// lists are given there: taken, and checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_frame_ancestors_come_from_a_variable_as_a_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hooklane.toml");
    let db = dir.path().join("data").join("hooklane.db");
    std::fs::write(&config, format!("database_url = \"sqlite:{}\"\n", db.display())).expect("write config");
    let variable = "HOOKLANE_PORTAL_FRAME_ANCESTORS";
    let (code, stdout, stderr) =
        run_with_config(&["migrate"], &config, &[(variable, "https://app.example.com, 'self'")]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, stdout, stderr) =
        run_with_config(&["migrate"], &config, &[(variable, "https://app.example.com, <x>")]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("portal_frame_ancestors"), "{stderr}");
}

/// The commands' own variables set to nothing (`HOOKLANE_CONFIG=`, as a compose file's
/// `${HOOKLANE_CONFIG:-}` leaves it) are taken as not set, as the README says of every
/// variable: no command stops on them, and forward's server is its default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_variables_set_to_nothing_are_not_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("hooklane.db");
    let database_url = format!("sqlite:{}", db.display());
    let run = |args: &'static [&'static str], env: Vec<(&'static str, String)>| {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .args(args)
            .env_remove("HOOKLANE_CONFIG")
            .env_remove("HOOKLANE_DATABASE_URL")
            .envs(env)
            .kill_on_drop(true)
            .output();
        async move {
            let out = tokio::time::timeout(WAIT, run).await.expect("ended").expect("ran");
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
    };
    let (ok, text) = run(&["keygen"], vec![("HOOKLANE_CONFIG", String::new())]).await;
    assert!(ok && text.contains("whsec_"), "keygen: {text}");
    let (ok, text) =
        run(&["migrate"], vec![("HOOKLANE_CONFIG", " ".into()), ("HOOKLANE_DATABASE_URL", database_url.clone())]).await;
    assert!(ok && text.contains("up to date"), "migrate: {text}");

    // listen with HOOKLANE_LISTEN_SECRET= checks no signature, as without it.
    let mut listen = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"));
    listen.args(["listen", "--port", "0"]).env("HOOKLANE_LISTEN_SECRET", "").env("HOOKLANE_CONFIG", "");
    let (started, seen) = stderr_says(listen, "receiving on").await;
    assert!(started, "listen did not start: {seen:?}");

    // forward with HOOKLANE_URL= goes to the default server (nothing listens there in
    // this test, or something does: either way it names that address).
    let mut forward = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"));
    forward
        .args(["forward", "http://127.0.0.1:9/local", "--app", "app_x", "--token", "sk_x"])
        .env_remove("HOOKLANE_CONFIG")
        .env("HOOKLANE_URL", "");
    let (named, seen) = stderr_says(forward, "http://127.0.0.1:8071").await;
    assert!(named, "forward did not go to the default server: {seen:?}");
}

/// Runs `command` until a line of its stderr holds `marker` (within `WAIT`), then kills it:
/// whether one did, and the lines it wrote.
async fn stderr_says(mut command: tokio::process::Command, marker: &str) -> (bool, Vec<String>) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hooklane");
    let mut err = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let said = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = err.next_line().await {
            let found = line.contains(marker);
            seen.push(line);
            if found {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let _ = child.kill().await;
    (said, seen)
}

/// `migrate` and `backup` warn of a `HOOKLANE_*` variable that is no setting, as `serve`
/// does: a misspelt database variable would otherwise migrate, or back up, the default
/// database without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_backup_warn_of_a_misspelt_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hooklane.toml");
    let db = dir.path().join("data").join("hooklane.db");
    std::fs::write(&config, format!("database_url = \"sqlite:{}\"\n", db.display())).expect("write config");
    let misspelt = [("HOOKLANE_DATABASE_ULR", "postgres://u@db/h")];
    let (code, stdout, stderr) = run_with_config(&["migrate"], &config, &misspelt).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("HOOKLANE_DATABASE_ULR") && stderr.contains("no setting"), "migrate: {stderr}");
    let to = dir.path().join("backup.db");
    let to = to.to_str().expect("a UTF-8 path");
    let (code, stdout, stderr) = run_with_config(&["backup", "--to", to], &config, &misspelt).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("HOOKLANE_DATABASE_ULR") && stderr.contains("no setting"), "backup: {stderr}");
}

/// forward on a poller, started without `--iterator`: the messages of its first page but
/// the last are known by no iterator yet; their lines carry the time the first read asked
/// after (`after=…`, not `iterator=-`), which `--after` takes to go on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_on_a_poller_prints_a_position_for_every_message_of_its_first_page() {
    // Each run has a token of its own: the poller tells them apart by it (a read the first
    // run made just before it was killed may be answered after the second one started).
    let queries: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let record = queries.clone();
    let poller = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: axum::http::HeaderMap| {
        let n = {
            let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let mut queries = record.lock().expect("lock");
            let n = queries.iter().filter(|(t, _)| *t == token).count();
            queries.push((token, uri.query().unwrap_or_default().to_string()));
            n
        };
        async move {
            let message = |id: &str| json!({ "id": id, "eventType": "a.b", "payload": { "id": id } });
            let data = if n == 0 { json!([message("msg_a"), message("msg_b")]) } else { json!([]) };
            (
                [("content-type", "application/json")],
                json!({ "data": data, "iterator": "it1", "done": true }).to_string(),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, poller).await });
    let rx = Receiver::start().await;
    let to = format!("{}/local", rx.url);
    let args = [to.as_str(), "--server", &base, "--app", "app_x", "--endpoint", "ep"];
    // The first query a run made with `token`.
    let first_query = |token: &str| {
        let queries = queries.lock().expect("lock");
        let found = queries.iter().find(|(t, _)| *t == format!("Bearer {token}"));
        found.map(|(_, q)| q.clone()).unwrap_or_else(|| panic!("no query with {token}: {queries:?}"))
    };
    let mut once: Vec<&str> = args.to_vec();
    once.extend(["--token", "sk_poll_x"]);
    let mut forward = Forwarder::start(&once);
    let first = forward.wait_for_line("for msg_a", |l| l.contains("msg_a")).await;
    let second = forward.wait_for_line("for msg_b", |l| l.contains("msg_b")).await;
    let _ = forward.child.kill().await;
    assert!(second.ends_with("iterator=it1"), "{second}");
    let after = first.rsplit_once("after=").map(|(_, t)| t.to_string()).unwrap_or_else(|| panic!("{first}"));
    let asked = first_query("sk_poll_x");
    let asked_after: Vec<String> = url_params(&asked, "after");
    assert_eq!(asked_after, vec![after.clone()], "the line names the time the read asked after: {asked}");

    // Started again from that line: it asks after the same time.
    let mut again: Vec<&str> = args.to_vec();
    again.extend(["--token", "sk_poll_y", "--after", after.as_str()]);
    let mut forward = Forwarder::start(&again);
    forward.wait_for_line("for msg_a", |l| l.contains("msg_a")).await;
    let _ = forward.child.kill().await;
    let asked = first_query("sk_poll_y");
    assert_eq!(url_params(&asked, "after"), vec![after], "{asked}");
    assert!(url_params(&asked, "iterator").is_empty(), "{asked}");
}

/// The values of `name` in a query string, decoded.
fn url_params(query: &str, name: &str) -> Vec<String> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .expect("a query")
        .query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// A value of the wrong type is refused naming its setting and the type found, not the
/// value: an admin token of digits left unquoted is a TOML integer, and figment showed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_of_the_wrong_type_is_refused_without_its_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hooklane.toml");
    let secret = "8675309123456789012";
    for (text, env, setting) in [
        (format!("admin_token = {secret}\n"), None, "admin_token"),
        (format!("[delivery]\nproxy = {secret}\n"), None, "proxy"),
        (String::new(), Some(("HOOKLANE_MAX_BODY_BYTES", secret.to_string() + "x")), "max_body_bytes"),
    ] {
        std::fs::write(&config, &text).expect("write config");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, stdout, stderr) = run_with_config(&["migrate"], &config, &env).await;
        assert_eq!(code, Some(1), "{text:?} {env:?}: {stdout}{stderr}");
        assert!(stderr.contains("invalid configuration") && stderr.contains(setting), "{text:?} {env:?}: {stderr}");
        assert!(!stderr.contains(secret), "{text:?} {env:?} shows the value: {stderr}");
    }
}

/// A local URL or a server written without its scheme is refused at once, by name: the
/// local one failed only as each message was posted (every message skipped after its
/// tries), and `localhost:8071` (read as the scheme `localhost`) was tried for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_refuses_urls_without_their_scheme() {
    let server = Server::start("").await;
    let app = server.create_app("laptop").await;
    for (to, base, named) in [
        ("localhost:3000/webhooks", server.base.clone(), "the local URL localhost:3000/webhooks"),
        ("3000", server.base.clone(), "the local URL 3000"),
        (
            "http://127.0.0.1:9/local",
            server.base.trim_start_matches("http://").replace("127.0.0.1", "localhost"),
            "--server localhost",
        ),
    ] {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .args(["forward", to, "--server", &base, "--app", &app, "--token", ADMIN])
            .env_remove("HOOKLANE_CONFIG")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(WAIT, run).await.expect("forward ended").expect("run forward");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to} {base}: {err}");
        assert!(err.contains(named) && err.contains("http://"), "{to} {base}: {err}");
        assert!(!err.contains("connected to"), "{to} {base}: {err}");
    }
}

/// A local URL nothing listens on yet (a dev server restarting) is waited for, however long
/// its `--tries` would have lasted: the message arrives once it listens, and none is
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_waits_for_a_local_url_nothing_listens_on() {
    let server = Server::start("").await;
    let app = server.create_app("laptop").await;
    // Its port held, bound but not listening: connections are refused meanwhile.
    let held = tokio::net::TcpSocket::new_v4().expect("socket");
    held.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let to = format!("http://127.0.0.1:{}/local", held.local_addr().expect("addr").port());
    let forward =
        Forwarder::start(&[to.as_str(), "--server", &server.base, "--app", &app, "--token", ADMIN, "--tries", "2"]);
    forward.connected(1).await;
    let msg = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    // Refused three times: more than its two tries.
    let deadline = std::time::Instant::now() + WAIT;
    while forward.lines().iter().filter(|l| l.contains("nothing answers") && l.contains(&msg)).count() < 3 {
        assert!(std::time::Instant::now() < deadline, "{:?}", forward.lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let local = Receiver::start_on_socket(held).await;
    forward.wait_for_line("saying it was forwarded", |l| l.starts_with("200 a.b") && l.contains(&msg)).await;
    assert_eq!(local.received().len(), 1);
    assert!(!forward.lines().iter().any(|l| l.contains("skipped")), "{:?}", forward.lines());
}

/// `listen` whose output was closed (`| head`) goes on answering: printing into the closed
/// pipe panicked the handler, and every request was answered with a broken connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_answers_after_its_output_is_closed() {
    let (_child, base, out) = start_listen(&[]).await;
    drop(out);
    let client = reqwest::Client::new();
    for n in 0..3 {
        let sent = client.post(format!("{base}/hook")).body(format!("{{\"n\":{n}}}")).send().await;
        let status = sent.map(|r| r.status().as_u16());
        assert_eq!(status.as_ref().ok(), Some(&200), "request {n}: {status:?}");
    }
}

/// A token revoked while `forward` runs ends it with the position to go on from, as a
/// position refused does: here a polling endpoint's key rotated away at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_stopped_by_a_revoked_token_names_where_to_go_on() {
    let server = Server::start("").await;
    let app = server.create_app("laptop").await;
    server.create_polling_endpoint(&app, "books").await;
    let key = server.rotate_poller_key(&app, "books", json!({})).await;
    let local = Receiver::start().await;
    let to = format!("{}/local", local.url);
    let mut forward = Forwarder::start(&[
        to.as_str(),
        "--server",
        &server.base,
        "--app",
        &app,
        "--endpoint",
        "books",
        "--token",
        &key,
    ]);
    forward.connected(1).await;
    let msg = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    let line = forward.wait_for_line("saying it was forwarded", |l| l.starts_with("200 a.b") && l.contains(&msg)).await;
    let at = line.split("iterator=").nth(1).expect("a position").trim().to_string();
    server.rotate_poller_key(&app, "books", json!({ "oldTokenExpiry": 0 })).await;
    server.send_message(&app, "a.b", json!({ "n": 2 })).await;
    let ended = tokio::time::timeout(Duration::from_secs(40), forward.child.wait()).await;
    assert!(ended.is_ok_and(|s| s.is_ok_and(|s| !s.success())), "{:?}", forward.lines());
    let hint = format!("start again with --iterator {at}");
    forward.wait_for_line("naming where to go on", |l| l.contains("401") && l.contains(&hint)).await;
    assert_eq!(local.received().len(), 1, "the revoked key read on");
}
