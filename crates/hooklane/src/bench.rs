//! `hooklane bench`: a benchmark anyone can run on one machine.
//!
//! It starts a loopback receiver in this process, a `hooklane serve` child process on a
//! fresh data directory (durability on: SQLite's write-ahead log flushed before every answer), posts messages
//! through the public API with concurrent clients and waits until the receiver has every
//! one of them. For scale it also measures a plain HTTP client posting the same payloads
//! straight to the same receiver. The result is one JSON line on stdout; progress and
//! problems go to stderr. The exit status is non-zero when a message was lost.

mod child;
mod ingest;
mod payload;
mod raw;
mod receiver;
mod report;

use std::time::Duration;

use anyhow::bail;

use self::child::ChildServer;
use self::receiver::Receiver;
use self::report::{HooklaneRun, Report};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Messages to post; the raw client sends as many requests, three times over, and keeps
    /// the median rate.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Clients posting at the same time.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Size of each message payload (the JSON object delivered), in bytes.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Database of the server under test; default: an embedded SQLite file in a temporary
    /// directory, removed afterwards.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Only measure the raw HTTP client (no hooklane server).
    #[arg(long, conflicts_with = "skip_raw")]
    pub raw_only: bool,
    /// Do not measure the raw HTTP client.
    #[arg(long)]
    pub skip_raw: bool,
    /// Server processes sharing the database (needs `--database-url` to a PostgreSQL
    /// database); clients spread their posts over them round-robin.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Messages posted first to a second endpoint that is down (connection refused), so
    /// that they wait in the store and retry while the measured messages flow: shows
    /// memory with a backlog and whether a dead endpoint slows a live one.
    #[arg(long, default_value_t = 0)]
    pub backlog: usize,
    /// Seconds to wait for every message to be delivered once all are posted.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The receiver answers each request after this many milliseconds, like a real
    /// endpoint doing work: deliveries are then bound by how many requests are in flight
    /// (per node and per endpoint), not by CPU, which is what more nodes add.
    #[arg(long, default_value_t = 0)]
    pub receiver_delay_ms: u64,
    /// The measured endpoint's `transform` (a JSON template): what a transform costs.
    #[arg(long, value_parser = parse_json)]
    pub transform: Option<serde_json::Value>,
    /// The measured endpoint's JavaScript transformation (code declaring `handler(webhook)`;
    /// it must not cancel, or those messages count as lost): what a transformation costs,
    /// worker processes included.
    #[arg(long)]
    pub transformation: Option<String>,
    /// The measured endpoint's `payloadFilter` (JSON; it must let the bench's payloads,
    /// `{"seq": n, "pad": "…"}`, through, or they count as lost): what a filter costs.
    #[arg(long, value_parser = parse_json)]
    pub payload_filter: Option<serde_json::Value>,
    /// The measured endpoint's kind of secret, `hmac256` or `ed25519`: what asymmetric
    /// signatures cost.
    #[arg(long, default_value = "hmac256", value_parser = ["hmac256", "ed25519"])]
    pub signature_type: String,
    /// The measured endpoint's `ordering` (`concurrent` or `fifo`): what a FIFO lane
    /// delivers (one message in flight at a time).
    #[arg(long, default_value = "concurrent", value_parser = ["concurrent", "fifo"])]
    pub ordering: String,
    /// Runs this hooklane executable as the server instead of this one: compares two
    /// builds with the same clients and receiver.
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Interrupted (Ctrl-C, a job's timeout), the run is dropped: its servers are stopped and
    // their directories (database, admin token) removed, as on any other way out.
    // The handlers are in place before anything starts (a signal meanwhile is kept for the
    // first look), and the signal is looked at first.
    let interrupted = crate::serve::shutdown_signal();
    tokio::pin!(interrupted);
    let _ = futures::poll!(&mut interrupted);
    tokio::select! {
        biased;
        _ = &mut interrupted => bail!("interrupted: servers stopped, their files removed"),
        done = measure(args) => done,
    }
}

async fn measure(args: BenchArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.concurrency == 0 || args.nodes == 0 {
        bail!("--messages, --concurrency and --nodes must be at least 1");
    }
    // (Each client posts to one node: a node without a client would get nothing.)
    if args.nodes > args.concurrency {
        bail!("--nodes must be at most --concurrency (clients spread over the nodes)");
    }
    if args.nodes > 1 && !args.database_url.as_deref().is_some_and(|u| u.starts_with("postgres")) {
        bail!("--nodes above 1 needs --database-url to a PostgreSQL database (nodes share it)");
    }
    let receiver = Receiver::start(Duration::from_millis(args.receiver_delay_ms)).await?;
    let payloads = payload::build_all(args.messages, args.payload_bytes);

    let raw = if args.skip_raw {
        None
    } else {
        eprintln!("bench: raw client, {} requests, {} clients", args.messages, args.concurrency);
        let r = raw::run(&receiver.url("/raw"), &payloads, args.concurrency).await?;
        receiver.reset();
        Some(r)
    };

    let hooklane = if args.raw_only {
        None
    } else {
        let first = ChildServer::start(&args)?;
        let token = first.admin_token.clone();
        let mut servers = vec![first];
        for _ in 1..args.nodes {
            servers.push(ChildServer::start_with_token(&args, token.clone())?);
        }
        let bases: Vec<&str> = servers.iter().map(|s| s.base.as_str()).collect();
        eprintln!("bench: hooklane at {}, {} messages, {} clients", bases.join(", "), args.messages, args.concurrency);
        let result = measure_hooklane(&servers, &receiver, &payloads, &args).await;
        // The largest node: the figure that has to fit one machine; and every node's
        // together, which is what `--nodes` on one machine costs (as CPU time is summed).
        let peaks: Vec<Option<f64>> = servers.iter().map(ChildServer::peak_rss_mib).collect();
        let peak_rss_mib = peaks.iter().flatten().copied().reduce(f64::max);
        // Only when every node's is known: a part of the sum would pass for the whole.
        let peak_rss_total_mib = peaks.into_iter().sum::<Option<f64>>();
        for s in servers {
            s.stop();
        }
        Some(HooklaneRun { peak_rss_mib, peak_rss_total_mib, ..result? })
    };

    let report = Report::new(&args, hooklane.as_ref(), raw.as_ref());
    println!("{}", report.to_json());
    if let Some(h) = &hooklane {
        if h.lost > 0 || h.ingest_errors > 0 {
            bail!("{} messages lost, {} ingest errors", h.lost, h.ingest_errors);
        }
    }
    Ok(())
}

async fn measure_hooklane(
    servers: &[ChildServer],
    receiver: &Receiver,
    payloads: &[bytes::Bytes],
    args: &BenchArgs,
) -> anyhow::Result<HooklaneRun> {
    let bases: Vec<&str> = servers.iter().map(|s| s.base.as_str()).collect();
    let api = ingest::Api::new(&bases, &servers[0].admin_token)?;
    // Another run's applications (or anyone's) would skew every figure: their backlog is
    // retried, their deliveries made, their rows read, all counted as this run's.
    if let Some(what) = api.already_held().await? {
        bail!(
            "the database already holds {what} (from an earlier run, or in use): bench measures an empty one; \
             give --database-url a new database"
        );
    }
    let app = api.create_app("bench").await?;
    let rules = serde_json::json!({
        "transform": args.transform,
        "payloadFilter": args.payload_filter,
        // Named only when not the default, so that `--server-bin` may run a build without it.
        "ordering": (args.ordering != "concurrent").then_some(&args.ordering),
        "secret": (args.signature_type == "ed25519").then(|| {
            hooklane_core::signing::Secret::generate(hooklane_core::signing::SignatureType::Ed25519).expose()
        }),
    });
    let endpoint = api.create_endpoint_with(&app, &receiver.url("/hook"), payload::MEASURED, rules).await?;
    if let Some(code) = &args.transformation {
        api.set_transformation(&app, &endpoint, code).await?;
    }
    if args.backlog > 0 {
        // Port 9 (discard) on loopback: nothing listens, every attempt is refused.
        api.create_endpoint(&app, "http://127.0.0.1:9/down", payload::BACKLOG).await?;
        let started = std::time::Instant::now();
        let backlog = payload::build_all(args.backlog, args.payload_bytes);
        let posted = ingest::post_typed(&api, &app, &backlog, args.concurrency, payload::BACKLOG).await;
        let accepted = posted.iter().filter(|p| p.accepted.is_some()).count();
        eprintln!(
            "bench: backlog of {accepted} messages for a down endpoint posted in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    let cpu = || {
        let servers_cpu = servers.iter().filter_map(ChildServer::cpu_seconds).sum::<f64>();
        (servers_cpu, child::cpu_seconds_of("self"), child::machine_cpu_jiffies())
    };
    let cpu_before = cpu();
    let posts = ingest::post_all(&api, &app, payloads, args.concurrency).await;
    let ids: Vec<&str> = posts.iter().filter_map(|p| p.accepted.as_ref().map(|(_, id)| id.as_str())).collect();
    if !receiver.wait_for_all(&ids, Duration::from_secs(args.timeout)).await {
        eprintln!("bench: timed out after {}s waiting for deliveries; server logs:", args.timeout);
        for server in servers {
            eprintln!("{}", server.log());
        }
    }
    let cpu_after = cpu();
    // A moment for late duplicates to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut run = HooklaneRun::from_observations(posts, receiver.arrivals());
    let per_msg = |before: f64, after: f64| (run.delivered > 0).then(|| (after - before) * 1e6 / run.delivered as f64);
    run.server_cpu_us_per_msg = per_msg(cpu_before.0, cpu_after.0);
    run.bench_cpu_us_per_msg = cpu_before.1.zip(cpu_after.1).and_then(|(b, a)| per_msg(b, a));
    run.machine_busy_pct = cpu_before
        .2
        .zip(cpu_after.2)
        .and_then(|((b0, t0), (b1, t1))| (t1 > t0).then(|| b1.saturating_sub(b0) as f64 * 100.0 / (t1 - t0) as f64));
    Ok(run)
}
