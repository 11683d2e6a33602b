//! `hooklane bench` end to end on a small run: every message must arrive, exactly once.
//! No timing is asserted: CI machines are too noisy for that.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn bench_delivers_every_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["bench", "--messages", "300", "--concurrency", "8", "--timeout", "60"])
        .env_remove("HOOKLANE_CONFIG")
        .env_remove("HOOKLANE_DATABASE_URL")
        .output()
        .expect("run hooklane bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "hooklane bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).expect("a JSON line");
    let report: Value = serde_json::from_str(line).expect("valid JSON");
    assert_eq!(report["messages"], 300, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!((report["duplicates"].as_u64(), report["unexpected"].as_u64()), (Some(0), Some(0)), "{report}");
    // Latency from the 202 too (each message's is at most its latency from the POST, so
    // the percentiles keep that order: a swap of the two times shows here), and how many
    // arrived before their client read it.
    let (acked, sent) = (report["ack_to_delivery_p99_ms"].as_f64(), report["e2e_p99_ms"].as_f64());
    assert!(acked.zip(sent).is_some_and(|(acked, sent)| acked <= sent), "{report}");
    let early = report["delivered_before_ack"].as_u64().unwrap_or_else(|| panic!("delivered_before_ack: {report}"));
    assert!(early <= report["delivered"].as_u64().unwrap_or(0), "{report}");
    assert_eq!(report["delivered"], report["messages"], "{report}");
    assert_eq!(report["ingest_errors"], 0, "{report}");
    for key in [
        "delivered_msgs_per_s",
        "e2e_p99_ms",
        "raw_posts_per_s",
        "ratio_delivered_to_raw",
        "server_cpu_us_per_msg",
        "bench_cpu_us_per_msg",
        "machine_busy_pct",
    ] {
        assert!(report[key].is_number(), "{key} missing: {report}");
    }
    // One node: the largest node's peak memory is every node's together.
    let peak = report["server_peak_rss_mib"].as_f64().unwrap_or_else(|| panic!("peak RSS missing: {report}"));
    assert!(peak > 0.0, "{report}");
    assert_eq!(report["server_peak_rss_total_mib"].as_f64(), Some(peak), "{report}");
}

/// A database that already holds applications (an earlier run's) is refused: its deliveries,
/// backlog and rows would be counted in this run's figures.
#[test]
fn bench_refuses_a_database_that_is_not_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("bench.db").display());
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .args([
                "bench",
                "--messages",
                "20",
                "--concurrency",
                "2",
                "--skip-raw",
                "--timeout",
                "60",
                "--database-url",
                &url,
            ])
            .env_remove("HOOKLANE_CONFIG")
            .env_remove("HOOKLANE_DATABASE_URL")
            .output()
            .expect("run hooklane bench")
    };
    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "an empty database is measured: {stderr}");
    let second = run();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a database holding the first run's application is measured again: {stderr}");
    assert!(stderr.contains("already holds applications"), "{stderr}");
    assert!(!String::from_utf8_lossy(&second.stdout).contains('{'), "no figures are printed");
}

#[test]
fn bench_with_a_slow_receiver_still_delivers_every_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args([
            "bench",
            "--messages",
            "100",
            "--concurrency",
            "4",
            "--receiver-delay-ms",
            "20",
            "--skip-raw",
            "--timeout",
            "60",
        ])
        .env_remove("HOOKLANE_CONFIG")
        .env_remove("HOOKLANE_DATABASE_URL")
        .output()
        .expect("run hooklane bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hooklane bench failed: {stdout}
{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).expect("a JSON line");
    let report: Value = serde_json::from_str(line).expect("valid JSON");
    assert_eq!((report["delivered"].as_u64(), report["lost"].as_u64()), (Some(100), Some(0)), "{report}");
    assert_eq!(report["receiver_delay_ms"], 20, "{report}");
    assert!(report["raw_posts_per_s"].is_null(), "--skip-raw: {report}");
}

/// Runs `hooklane bench` with `args`; its exit status and its JSON line.
fn bench(args: &[&str]) -> (bool, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .arg("bench")
        .args(args)
        .env_remove("HOOKLANE_CONFIG")
        .env_remove("HOOKLANE_DATABASE_URL")
        .output()
        .expect("run hooklane bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_else(|| {
        panic!("no JSON line: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.success(), serde_json::from_str(line).expect("valid JSON"))
}

/// `--transform` and `--payload-filter` reach the measured endpoint: a filter every payload
/// passes loses nothing, one that half of them fail loses that half (and the run fails); a
/// FIFO endpoint (`--ordering fifo`) gets everything too.
#[test]
fn bench_measures_an_endpoint_with_a_transform_and_a_filter() {
    let common = ["--messages", "100", "--concurrency", "4", "--skip-raw", "--transform", r#"{"n":"{{ seq }}"}"#];
    let (ok, report) = bench(&[&common[..], &["--payload-filter", r#"{"seq":{"$gte":0}}"#]].concat());
    assert!(ok, "{report}");
    assert_eq!((report["delivered"].as_u64(), report["lost"].as_u64()), (Some(100), Some(0)), "{report}");
    assert_eq!((report["transform"].as_bool(), report["payload_filter"].as_bool()), (Some(true), Some(true)));
    // A JavaScript transformation (in the server's script workers) loses nothing either.
    let code = "function handler(w) { w.payload = { n: w.payload.seq }; w.method = 'PUT'; return w }";
    let (ok, report) = bench(&["--messages", "100", "--concurrency", "4", "--skip-raw", "--transformation", code]);
    assert!(ok, "{report}");
    assert_eq!((report["delivered"].as_u64(), report["transformation"].as_bool()), (Some(100), Some(true)), "{report}");
    let (ok, report) = bench(&["--messages", "50", "--concurrency", "4", "--skip-raw", "--ordering", "fifo"]);
    assert!(ok, "{report}");
    assert_eq!((report["delivered"].as_u64(), report["ordering"].as_str()), (Some(50), Some("fifo")), "{report}");
    // The bench waits its whole timeout for the 50 kept out, which never come: long enough
    // for the 50 let in to arrive on a loaded machine.
    let (ok, report) =
        bench(&[&common[..], &["--payload-filter", r#"{"seq":{"$lt":50}}"#, "--timeout", "10"]].concat());
    assert!(!ok, "messages the filter kept out count as lost: {report}");
    assert_eq!((report["delivered"].as_u64(), report["lost"].as_u64()), (Some(50), Some(50)), "{report}");
}

/// A bench stopped half-way (SIGTERM: a job's timeout, Ctrl-C) stops its server and removes
/// its directory (the database, the admin token) instead of leaving them behind.
#[test]
fn an_interrupted_bench_leaves_nothing_behind() {
    use std::io::{BufRead, BufReader};
    let spawned = Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["bench", "--messages", "200000", "--concurrency", "8", "--skip-raw", "--timeout", "600"])
        .env_remove("HOOKLANE_CONFIG")
        .env_remove("HOOKLANE_DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hooklane bench");
    let mut bench = Stopped(spawned);
    let pid = bench.0.id();
    // Read in a thread of its own, so that every wait below has a deadline.
    let stderr = bench.0.stderr.take().expect("stderr");
    let (sent, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sent.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut before = Vec::new();
    let base = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("the bench never said where its server is ({e}): {before:?}"));
        if let Some(rest) = line.strip_prefix("bench: hooklane at ") {
            break rest.split([',', ' ']).next().expect("a URL").to_string();
        }
        before.push(line);
    };
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    assert!(status.success());
    // Its stderr to its end (the bench, and its server, gone), then how it exited.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rest = Vec::new();
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => rest.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("the bench still runs 60 s after SIGTERM ({e}): {rest:?}"),
        }
    }
    let exit = loop {
        if let Some(exit) = bench.0.try_wait().expect("the bench's status") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the bench still runs 60 s after SIGTERM: {rest:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success(), "{exit}");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    let prefix = format!("hooklane-bench-{pid}-");
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("temp dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    assert!(std::net::TcpStream::connect(addr).is_err(), "the server at {addr} still answers");
}

/// A bench stopped when dropped: SIGTERM, so that it stops the server it started too, then,
/// should it still run after a while, SIGKILL. A test that fails leaves nothing running.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
