//! Turns what the clients and the receiver observed into the figures, and the figures
//! into the one JSON line the command prints.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::ingest::Post;
use super::raw::RawRun;
use super::receiver::Arrival;
use super::BenchArgs;

/// The figures of the run through hooklane.
#[derive(Debug, Default)]
pub struct HooklaneRun {
    pub accepted: usize,
    pub ingest_errors: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Arrivals of messages whose post failed on the client side (accepted anyway).
    pub unexpected: usize,
    pub ingest_msgs_per_s: f64,
    pub delivered_msgs_per_s: f64,
    pub ingest_ms: Percentiles,
    /// From the moment each POST was sent to the first arrival of its message: the whole
    /// path a sender's event takes.
    pub e2e_ms: Percentiles,
    /// From the moment each POST's 202 was read to the first arrival of its message (0 for
    /// those that arrived first: the server hands a message over right after its commit,
    /// before the answer reaches the client).
    pub ack_to_delivery_ms: Percentiles,
    /// Messages that reached the receiver before their client had read the 202.
    pub delivered_before_ack: usize,
    /// The largest server's peak resident memory.
    pub peak_rss_mib: Option<f64>,
    /// Every server's peak resident memory, summed (the same as `peak_rss_mib` with one).
    pub peak_rss_total_mib: Option<f64>,
    /// CPU the hooklane server(s) used per delivered message while the measured messages
    /// were posted and delivered; steadier across runs than rates on a shared machine.
    pub server_cpu_us_per_msg: Option<f64>,
    /// The same for this process: the API clients and the receiver.
    pub bench_cpu_us_per_msg: Option<f64>,
    /// Share of all cores in use on the machine meanwhile: near 100 means the run was
    /// bound by CPU, not by waiting (commits, network).
    pub machine_busy_pct: Option<f64>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(mut samples: Vec<Duration>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        // Nearest rank.
        let at = |p: f64| {
            let rank = (p * samples.len() as f64).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        Percentiles { p50: at(0.50), p99: at(0.99), max: ms(samples[samples.len() - 1]) }
    }
}

impl HooklaneRun {
    pub fn from_observations(posts: Vec<Post>, arrivals: HashMap<String, Arrival>) -> HooklaneRun {
        let mut run = HooklaneRun::default();
        let Some(first_sent) = posts.iter().map(|p| p.sent).min() else { return run };
        let mut last_ack = first_sent;
        let mut last_arrival = first_sent;
        let mut ingest = Vec::with_capacity(posts.len());
        let mut e2e = Vec::with_capacity(posts.len());
        let mut after_ack = Vec::with_capacity(posts.len());
        let mut known = HashSet::with_capacity(posts.len());
        for post in &posts {
            let Some((acked, id)) = &post.accepted else {
                run.ingest_errors += 1;
                continue;
            };
            run.accepted += 1;
            known.insert(id.as_str());
            last_ack = last_ack.max(*acked);
            ingest.push(acked.saturating_duration_since(post.sent));
            match arrivals.get(id) {
                Some(a) => {
                    run.delivered += 1;
                    run.duplicates += a.count.saturating_sub(1) as usize;
                    last_arrival = last_arrival.max(a.first);
                    e2e.push(a.first.saturating_duration_since(post.sent));
                    after_ack.push(a.first.saturating_duration_since(*acked));
                    if a.first < *acked {
                        run.delivered_before_ack += 1;
                    }
                }
                None => run.lost += 1,
            }
        }
        run.unexpected = arrivals.keys().filter(|id| !known.contains(id.as_str())).count();
        run.ingest_msgs_per_s = rate(run.accepted, first_sent, last_ack);
        run.delivered_msgs_per_s = rate(run.delivered, first_sent, last_arrival);
        run.ingest_ms = Percentiles::of(ingest);
        run.e2e_ms = Percentiles::of(e2e);
        run.ack_to_delivery_ms = Percentiles::of(after_ack);
        run
    }
}

fn rate(n: usize, from: Instant, to: Instant) -> f64 {
    let secs = to.saturating_duration_since(from).as_secs_f64();
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// The JSON line, fields in this order. Figures of a part that was not run are null.
#[derive(Serialize)]
pub struct Report {
    messages: usize,
    concurrency: usize,
    payload_bytes: usize,
    ingest_msgs_per_s: Option<f64>,
    delivered_msgs_per_s: Option<f64>,
    ingest_p50_ms: Option<f64>,
    ingest_p99_ms: Option<f64>,
    e2e_p50_ms: Option<f64>,
    e2e_p99_ms: Option<f64>,
    e2e_max_ms: Option<f64>,
    ack_to_delivery_p50_ms: Option<f64>,
    ack_to_delivery_p99_ms: Option<f64>,
    delivered_before_ack: Option<usize>,
    /// The largest node's peak RSS (what one machine has to fit).
    server_peak_rss_mib: Option<f64>,
    /// Every node's peak RSS, summed: with `--nodes` above 1, beside the CPU time, which is
    /// summed over the nodes too.
    server_peak_rss_total_mib: Option<f64>,
    server_cpu_us_per_msg: Option<f64>,
    bench_cpu_us_per_msg: Option<f64>,
    machine_busy_pct: Option<f64>,
    accepted: Option<usize>,
    delivered: Option<usize>,
    duplicates: Option<usize>,
    lost: Option<usize>,
    ingest_errors: Option<usize>,
    unexpected: Option<usize>,
    raw_posts_per_s: Option<f64>,
    ratio_delivered_to_raw: Option<f64>,
    store: &'static str,
    nodes: usize,
    backlog: usize,
    receiver_delay_ms: u64,
    /// Whether the measured endpoint had a transform, and a payload filter.
    transform: bool,
    payload_filter: bool,
    /// Whether the measured endpoint had a JavaScript transformation.
    transformation: bool,
    /// The measured endpoint's ordering.
    ordering: String,
    /// The measured endpoint's kind of secret.
    signature_type: String,
}

impl Report {
    pub fn new(args: &BenchArgs, h: Option<&HooklaneRun>, raw: Option<&RawRun>) -> Report {
        let raw_rate = raw.map(|r| r.posts_per_s);
        let ratio = match (h, raw_rate) {
            (Some(h), Some(r)) if r > 0.0 => Some(round(h.delivered_msgs_per_s / r, 3)),
            _ => None,
        };
        Report {
            messages: args.messages,
            concurrency: args.concurrency,
            payload_bytes: args.payload_bytes,
            ingest_msgs_per_s: h.map(|h| round(h.ingest_msgs_per_s, 1)),
            delivered_msgs_per_s: h.map(|h| round(h.delivered_msgs_per_s, 1)),
            ingest_p50_ms: h.map(|h| round(h.ingest_ms.p50, 3)),
            ingest_p99_ms: h.map(|h| round(h.ingest_ms.p99, 3)),
            e2e_p50_ms: h.map(|h| round(h.e2e_ms.p50, 3)),
            e2e_p99_ms: h.map(|h| round(h.e2e_ms.p99, 3)),
            e2e_max_ms: h.map(|h| round(h.e2e_ms.max, 3)),
            ack_to_delivery_p50_ms: h.map(|h| round(h.ack_to_delivery_ms.p50, 3)),
            ack_to_delivery_p99_ms: h.map(|h| round(h.ack_to_delivery_ms.p99, 3)),
            delivered_before_ack: h.map(|h| h.delivered_before_ack),
            server_peak_rss_mib: h.and_then(|h| h.peak_rss_mib).map(|m| round(m, 1)),
            server_peak_rss_total_mib: h.and_then(|h| h.peak_rss_total_mib).map(|m| round(m, 1)),
            server_cpu_us_per_msg: h.and_then(|h| h.server_cpu_us_per_msg).map(|c| round(c, 1)),
            bench_cpu_us_per_msg: h.and_then(|h| h.bench_cpu_us_per_msg).map(|c| round(c, 1)),
            machine_busy_pct: h.and_then(|h| h.machine_busy_pct).map(|c| round(c, 1)),
            accepted: h.map(|h| h.accepted),
            delivered: h.map(|h| h.delivered),
            duplicates: h.map(|h| h.duplicates),
            lost: h.map(|h| h.lost),
            ingest_errors: h.map(|h| h.ingest_errors),
            unexpected: h.map(|h| h.unexpected),
            raw_posts_per_s: raw_rate.map(|r| round(r, 1)),
            ratio_delivered_to_raw: ratio,
            store: match (h, args.database_url.is_some()) {
                (None, _) => "none",
                (Some(_), false) => "sqlite-tempdir",
                (Some(_), true) => "database-url",
            },
            nodes: args.nodes,
            backlog: args.backlog,
            receiver_delay_ms: args.receiver_delay_ms,
            transform: args.transform.is_some(),
            payload_filter: args.payload_filter.is_some(),
            transformation: args.transformation.is_some(),
            ordering: args.ordering.clone(),
            signature_type: args.signature_type.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(samples);
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        let one = Percentiles::of(vec![Duration::from_millis(7)]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn lost_duplicates_and_unexpected_are_counted() {
        let t0 = Instant::now();
        let post = |ms: u64, id: Option<&str>| Post {
            sent: t0 + Duration::from_millis(ms),
            accepted: id.map(|id| (t0 + Duration::from_millis(ms + 1), id.to_string())),
        };
        let posts = vec![post(0, Some("a")), post(1, Some("b")), post(2, None), post(3, Some("c"))];
        let arrive = |ms: u64, count: u32| Arrival { first: t0 + Duration::from_millis(ms), count };
        let arrivals = HashMap::from([
            ("a".to_string(), arrive(10, 1)),
            ("b".to_string(), arrive(20, 3)),
            ("zz".to_string(), arrive(30, 1)),
        ]);
        let run = HooklaneRun::from_observations(posts, arrivals);
        assert_eq!(
            (run.accepted, run.delivered, run.lost, run.duplicates, run.ingest_errors, run.unexpected),
            (3, 2, 1, 2, 1, 1)
        );
        // From the POST sent (b: 1 ms) to its first arrival (20 ms); from its 202 (2 ms).
        assert_eq!(run.e2e_ms.max, 19.0);
        assert_eq!(run.ack_to_delivery_ms.max, 18.0);
        assert_eq!(run.delivered_before_ack, 0);
        assert!((run.delivered_msgs_per_s - 100.0).abs() < 1e-6);
        let early = vec![post(0, Some("a"))];
        let run = HooklaneRun::from_observations(early, HashMap::from([("a".to_string(), arrive(0, 1))]));
        assert_eq!((run.delivered_before_ack, run.ack_to_delivery_ms.max), (1, 0.0), "arrived before its 202");
    }
}
