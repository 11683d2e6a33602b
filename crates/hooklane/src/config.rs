//! Configuration: defaults, then a TOML file, then `HOOKLANE_*` environment variables
//! (nested keys with a double underscore: `HOOKLANE_DELIVERY__REQUEST_TIMEOUT=10s`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use hooklane_core::retry::RetrySchedule;
use hooklane_dispatch::{DispatchConfig, ProxyConfig};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// Longest request timeout allowed: a worker must not be tied up for minutes.
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bounds of `[delivery]`'s counts.
const MAX_IN_FLIGHT: usize = 65_536;
const MAX_OUTSTANDING: usize = 1_000_000;
const MAX_OUTSTANDING_BYTES: usize = 1 << 40;
const MAX_SCRIPT_WORKERS: usize = 256;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

// No `Debug`: it holds the admin token and the database URL (its password) in clear, and a
// `{:?}` of it in a log line would print them. What is shown goes through
// `database_url_for_display`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the API listens on. Port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// `sqlite:PATH` (the default, embedded) or a file path.
    pub database_url: String,
    /// The admin token. When unset, one is generated on first start and kept in
    /// `admin_token_file`.
    pub admin_token: Option<String>,
    /// Where a generated admin token is kept (default: beside the SQLite file).
    pub admin_token_file: Option<String>,
    /// Base URL of this server as clients see it (used in portal links).
    pub public_url: Option<String>,
    /// The pages that may show the portal (`/portal`) in a frame: its CSP's
    /// `frame-ancestors`, origins (`https://app.example.com`), schemes or `'self'`; empty
    /// (the default): any page. (A TOML array, or one comma-separated string, as in an
    /// environment variable.)
    #[serde(deserialize_with = "items")]
    pub portal_frame_ancestors: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Time a client gets to send a request's headers, and between two pieces of its body:
    /// a connection that trickles bytes is closed.
    #[serde(with = "humantime_serde")]
    pub request_read_timeout: Duration,
    /// How long the ingest path trusts what it cached of an application and its endpoints.
    /// Changes through this node's API, or (on PostgreSQL) another node's, clear the cache
    /// at once; this bounds how late other changes (the dispatcher disabling an endpoint,
    /// an announcement lost) are seen.
    #[serde(with = "humantime_serde")]
    pub tenant_cache_ttl: Duration,
    /// `text` or `json`.
    pub log_format: String,
    /// A `tracing` filter, e.g. `info` or `hooklane=debug,info`.
    pub log_level: String,
    /// Whether `GET /metrics` needs the admin token (default: yes: it is served on the API's
    /// port, and names the applications and endpoints that fail; `false` for a scraper on a
    /// private network that sends no token).
    pub metrics_require_token: bool,
    /// How long a request that starts a background task (a recovery, a replay, a purge,
    /// usage statistics) waits for its work before answering the task `running`; the work
    /// goes on either way, and `GET /api/v1/background-task/{id}` follows it. `0s` answers
    /// at once; at most 10 s, to stay under clients' timeouts (Svix's SDKs give up after 15 s).
    #[serde(with = "humantime_serde")]
    pub task_wait: Duration,
    /// How often expired idempotency keys, old inbound request records and old messages are
    /// deleted, and tasks whose node stopped while they ran are marked failed.
    #[serde(with = "humantime_serde")]
    pub housekeeping_interval: Duration,
    /// How long a message (its payload, deliveries and attempt log) is kept once none of its
    /// deliveries is pending; `0s` keeps them forever. Svix's default is 90 days too.
    #[serde(with = "humantime_serde")]
    pub message_retention: Duration,
    /// Threads serving the API and making deliveries; `0` (the default) means one fewer
    /// than the CPUs, at least one. The spare core is for the store's writer and flush
    /// threads (SQLite) or the database, and the kernel's network work: on 2 cores one
    /// worker delivered 15-20 % more than two, each message costing less CPU (fewer thread
    /// wake-ups and cross-core hand-offs). See BENCHMARKS.md.
    pub worker_threads: usize,
    /// The application (id or uid) hooklane posts its operational webhooks into
    /// (`endpoint.created`/`updated`/`deleted`/`disabled`, `message.attempt.failing`/
    /// `exhausted`/`recovered`); unset: none are posted.
    pub operational_app: Option<String>,
    /// The kind of secret an endpoint gets when it is created without one (Svix's setting of
    /// the same name): `hmac256` (`whsec_`, `v1` signatures) or `ed25519` (a `whsk_` key
    /// pair signing `v1a`, whose `whpk_` public key is what `GET …/secret` shows).
    pub default_signature_type: hooklane_core::signing::SignatureType,
    /// Messages each application may post a second through the API, on each node (a
    /// second's worth at once); past it `POST …/msg` answers 429 with `Retry-After`. 0: no
    /// limit. Inbound sources are not limited (a provider retries a refusal, and would
    /// only send more).
    pub message_rate_limit: u32,
    pub delivery: DeliveryConfig,
    pub inbound: InboundConfig,
}

/// `[inbound]`: sources' public ingest URLs (`POST /in/{source_id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboundConfig {
    /// Reverse proxies (CIDRs) whose `X-Forwarded-For` is believed when checking a source's
    /// address allow-list, e.g. `["127.0.0.1/32"]` behind a local nginx.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
    /// How long the record of each request to a source URL (headers and raw body) is kept;
    /// `0s` keeps them forever. The messages they became are not affected.
    #[serde(with = "humantime_serde")]
    pub request_retention: Duration,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig { trusted_proxies: Vec::new(), request_retention: Duration::from_secs(30 * 24 * 3600) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Waits after each failed attempt; the first attempt is immediate.
    #[serde(deserialize_with = "durations", serialize_with = "ser_durations")]
    pub retry_schedule: Vec<Duration>,
    /// Fraction by which each wait is randomly moved (0 to 1).
    pub retry_jitter: f64,
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// An endpoint failing continuously for this long is disabled.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
    /// Non-public networks deliveries may reach (CIDRs), e.g. `["127.0.0.0/8"]`.
    #[serde(deserialize_with = "networks")]
    pub allow_networks: Vec<IpNet>,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub max_in_flight: usize,
    pub per_endpoint_in_flight: usize,
    pub max_outstanding: usize,
    /// Payload bytes those deliveries may hold at most (each counts its message's whole
    /// payload): with large payloads, fewer are held in memory.
    pub max_outstanding_bytes: usize,
    /// Unreachable attempts in a row (connection failed, timeout, 5xx) that open an
    /// endpoint's circuit; 0 turns circuit breaking off.
    pub circuit_failures: u32,
    /// First cool-down of an open circuit, doubled after each failed probe.
    #[serde(with = "humantime_serde")]
    pub circuit_cooldown: Duration,
    /// Longest cool-down of an open circuit.
    #[serde(with = "humantime_serde")]
    pub circuit_max_cooldown: Duration,
    /// Endpoints' JavaScript transformations run at once at most, each in a worker process.
    pub script_workers: usize,
    /// An HTTP proxy every delivery goes through (`http://[user:password@]host:port` or
    /// `https://…`); unset or empty: none, whatever the environment's `HTTP_PROXY` says.
    pub proxy: Option<Redacted>,
    /// Whether a receiver's name that does not resolve here is left to the proxy to resolve
    /// (split DNS); by default it is refused.
    pub proxy_resolves_names: bool,
}

/// A setting that may hold a password: read and written as the text it is, never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8071)),
            database_url: "sqlite:./data/hooklane.db".into(),
            admin_token: None,
            admin_token_file: None,
            public_url: None,
            portal_frame_ancestors: Vec::new(),
            max_body_bytes: 1024 * 1024,
            request_read_timeout: Duration::from_secs(30),
            tenant_cache_ttl: Duration::from_secs(1),
            log_format: "text".into(),
            log_level: "info".into(),
            metrics_require_token: true,
            task_wait: Duration::from_secs(5),
            housekeeping_interval: Duration::from_secs(60),
            message_retention: Duration::from_secs(90 * 24 * 3600),
            worker_threads: 0,
            operational_app: None,
            default_signature_type: Default::default(),
            message_rate_limit: 0,
            delivery: DeliveryConfig::default(),
            inbound: InboundConfig::default(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let d = DispatchConfig::default();
        DeliveryConfig {
            connect_timeout: d.connect_timeout,
            request_timeout: d.request_timeout,
            retry_schedule: d.retry.delays,
            retry_jitter: d.retry.jitter,
            max_retry_after: d.max_retry_after,
            disable_after: d.disable_after,
            allow_networks: Vec::new(),
            lease: d.lease,
            poll_interval: d.poll_interval,
            max_in_flight: d.max_in_flight,
            per_endpoint_in_flight: d.per_endpoint_in_flight,
            max_outstanding: d.max_outstanding,
            max_outstanding_bytes: d.max_outstanding_bytes,
            circuit_failures: d.circuit_failures,
            circuit_cooldown: d.circuit_cooldown,
            circuit_max_cooldown: d.circuit_max_cooldown,
            script_workers: d.script_workers,
            proxy: None,
            proxy_resolves_names: false,
        }
    }
}

/// A list given either as a TOML array or as one comma-separated string (handy in env vars).
#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrString {
    List(Vec<String>),
    One(String),
}

fn items<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::One(s) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
    })
}

fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    items(d)?.iter().map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom)).collect()
}

fn ser_durations<S: serde::Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
}

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    items(d)?
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a CIDR network")))
        })
        .collect()
}

/// Settings whose environment value is taken as written: figment's parser reads `007` as
/// the number 7, `true` as a boolean and `[a]` as a list, which a token or a URL may be.
const VERBATIM: &[&str] = &[
    "database_url",
    "admin_token",
    "admin_token_file",
    "public_url",
    "log_format",
    "log_level",
    "operational_app",
    "delivery.proxy",
];

/// The `HOOKLANE_*` variables that name a setting. Others are not settings and are left
/// alone: the CLI's own (`HOOKLANE_CONFIG`, `HOOKLANE_TOKEN`, `HOOKLANE_URL`, the commands'
/// secrets) and those an orchestrator adds (Kubernetes gives a service named `hooklane`
/// `HOOKLANE_PORT`, `HOOKLANE_SERVICE_HOST`…). Within a section (`HOOKLANE_DELIVERY__…`)
/// an unknown name is still refused, as in the file.
fn environment() -> Figment {
    let sections: Vec<String> = match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    };
    // As figment reads names (in any case) and values (without the spaces and line ends
    // around them, which an env file or a secret mount may add).
    let vars: Vec<(String, String)> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    // A variable set to nothing (`HOOKLANE_LOG_LEVEL=` in a compose file or an env file
    // whose value was left out) is taken as not set, for every setting alike: the file's
    // value or the default stands. (Read as written, it made an empty retry schedule, an
    // empty file name, or a log filter that silences everything.)
    let empty: Vec<String> = vars
        .iter()
        .filter(|(_, v)| v.trim().is_empty())
        .filter(|(k, _)| k.get(..9).is_some_and(|p| p.eq_ignore_ascii_case("HOOKLANE_")))
        .map(|(k, _)| k[9..].to_ascii_lowercase().replace("__", "."))
        .collect();
    // (The filter sees the names before figment lowercases them.)
    let parsed = Env::prefixed("HOOKLANE_").split("__").filter(move |key| {
        let key = key.as_str().to_ascii_lowercase();
        let top = key.split('.').next().unwrap_or(&key);
        sections.iter().any(|s| s == top) && !VERBATIM.contains(&key.as_str()) && !empty.contains(&key)
    });
    let mut figment = Figment::from(parsed);
    for key in VERBATIM {
        let name = format!("HOOKLANE_{}", key.replace('.', "__"));
        if let Some((_, value)) = vars.iter().find(|(k, v)| k.eq_ignore_ascii_case(&name) && !v.trim().is_empty()) {
            figment = figment.merge(Serialized::default(key, value.trim()));
        }
    }
    figment
}

/// The `HOOKLANE_*` variables the commands read themselves (not settings).
pub(crate) const COMMAND_VARIABLES: &[&str] = &[
    "HOOKLANE_CONFIG",
    "HOOKLANE_TOKEN",
    "HOOKLANE_URL",
    "HOOKLANE_LISTEN_SECRET",
    "HOOKLANE_SEND_SECRET",
    "HOOKLANE_VERIFY_SECRET",
    "HOOKLANE_FORWARD_SECRET",
];

/// What is said of a `HOOKLANE_*` variable that is no setting (`Config::unknown_environment`).
pub(crate) const UNKNOWN_VARIABLE: &str =
    "this HOOKLANE_ variable is no setting and is ignored (a section's settings take two underscores: HOOKLANE_DELIVERY__LEASE)";

/// The warning about the variable `name`, for stderr.
pub(crate) fn unknown_variable_warning(name: &str) -> String {
    format!("{name}: {UNKNOWN_VARIABLE}")
}

/// The fewest characters a configured admin token may have.
pub(crate) const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Checks a `log_level` (tracing's filter syntax: `info`, `hooklane=debug,tower_http=warn`).
/// The filter itself takes a lone word that is not a level for a target's name, which turns
/// every other log off: `warning` would silence even the errors.
fn check_log_level(filter: &str) -> anyhow::Result<()> {
    const LEVELS: &str = "error, warn, info, debug, trace or off";
    // A filter of no directive logs nothing at all, errors included.
    if filter.split(',').all(|d| d.trim().is_empty()) {
        bail!("log_level is empty ({LEVELS}; or target=level, e.g. hooklane=debug)");
    }
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = match directive.rsplit_once('=') {
            Some((_, level)) => level.trim(),
            None => directive,
        };
        if level.parse::<tracing::level_filters::LevelFilter>().is_err() {
            bail!("log_level: `{level}` is not a level ({LEVELS}; or target=level, e.g. hooklane=debug)");
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| anyhow::anyhow!("log_level: {e}"))?;
    Ok(())
}

/// Checks `public_url`: the address providers and clients reach this server at, the base
/// of the URLs it hands out and the URL some providers sign (Twilio, Square).
fn check_public_url(url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("public_url is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("public_url must be an http:// or https:// URL with a host (e.g. https://hooks.example.com)");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || !parsed.username().is_empty() {
        bail!("public_url is the server's address: scheme, host, port and path, no credentials, query or fragment");
    }
    Ok(())
}

/// A TOML syntax error as its message and where it is (line and column, counted from 1),
/// without the text of the line: it may hold a secret.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message: Vec<&str> = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let message = message.join("; ");
    let Some(mut at) = e.span().map(|s| s.start.min(text.len())) else { return message };
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or(before).chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

/// Figment's errors, each with its setting and where it came from, but without the value
/// found: figment shows it (`found signed int `1234567890123456789``), and an admin token
/// of digits left unquoted, or a value in the wrong setting, may be a secret.
fn settings_error(e: figment::Error) -> String {
    use figment::error::{Actual, Kind};
    let what = |found: &Actual| match found {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        _ => "a value of another kind",
    };
    let errors: Vec<String> = e
        .into_iter()
        .map(|e| {
            let kind = match &e.kind {
                Kind::InvalidType(found, expected) => format!("found {}, expected {expected}", what(found)),
                Kind::InvalidValue(found, expected) => format!("{} that is not {expected}", what(found)),
                Kind::Unsupported(found) | Kind::UnsupportedKey(found, _) => {
                    format!("{} is not supported", what(found))
                }
                kind => kind.to_string(),
            };
            let from = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
            match e.path.is_empty() {
                true => format!("{kind}{from}"),
                false => format!("{}: {kind}{from}", e.path.join(".").to_ascii_lowercase()),
            }
        })
        .collect();
    errors.join("; ")
}

impl Config {
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // Read here rather than by figment, which takes a path that is not a regular
            // file (a folder, or `<(…)` in a shell) for an empty file, silently.
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
            // Syntax first, told by message and position only: toml's own error shows the
            // line it stopped on, which may be `admin_token = s3cret…` or a database URL
            // with its password, left unquoted (and sent to the start log).
            if let Err(e) = toml::from_str::<toml::Table>(&text) {
                bail!("invalid configuration file {}: {}", path.display(), syntax_error(&text, &e));
            }
            let toml = Toml::string(&text);
            if figment::Provider::data(&toml).is_err() {
                // (Not shown either: figment's error is toml's, line and all.)
                bail!("invalid configuration file {}: it cannot be read as settings", path.display());
            }
            figment = figment.merge(toml);
        }
        let config: Config = figment
            .merge(environment())
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {}", settings_error(e)))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        let d = &self.delivery;
        if d.request_timeout.is_zero() || d.request_timeout > MAX_REQUEST_TIMEOUT {
            bail!("delivery.request_timeout must be between 1ms and 30s");
        }
        if d.connect_timeout.is_zero() || d.connect_timeout > d.request_timeout {
            bail!("delivery.connect_timeout must be positive and at most delivery.request_timeout");
        }
        if !(0.0..=1.0).contains(&d.retry_jitter) {
            bail!("delivery.retry_jitter must be between 0 and 1");
        }
        // First, so that the rule below multiplies no lease past what a Duration holds
        // (humantime reads up to u64::MAX seconds): `lease * 3` panicked.
        if d.lease > HOUR {
            bail!("delivery.lease must be at most 1h");
        }
        // A delivery starts its request only if the request (its connection and a second
        // more included) ends within the delivery's lease, and may wait up to what is left
        // of the lease for its turn: at least a quarter of it. A shorter lease let a request
        // run past it, and the delivery be claimed and sent again meanwhile.
        let request = d.request_timeout + d.connect_timeout + Duration::from_secs(1);
        if d.lease * 3 < request * 4 {
            bail!(
                "delivery.lease must be at least 4/3 of request_timeout + connect_timeout + 1s ({})",
                humantime::format_duration(request * 4 / 3)
            );
        }
        // The poller sleeps at least 5 ms between looks; a shorter interval is no interval.
        if d.poll_interval < Duration::from_millis(5) {
            bail!("delivery.poll_interval must be at least 5ms");
        }
        // A probe at least this often keeps a dead endpoint's failure streak going (a day
        // without an attempt ends a streak), so that it is still disabled.
        if d.circuit_max_cooldown > Duration::from_secs(12 * 3600) {
            bail!("delivery.circuit_max_cooldown must be at most 12h");
        }
        if d.circuit_cooldown > d.circuit_max_cooldown {
            bail!("delivery.circuit_cooldown must be at most delivery.circuit_max_cooldown");
        }
        // Bounds on the other durations, so that no deadline or cut-off they make falls
        // past the calendar's end, and the settings mean what they say.
        if d.retry_schedule.iter().any(|w| *w > WEEK) {
            bail!("delivery.retry_schedule waits must be at most 7 days each");
        }
        if d.max_retry_after > WEEK {
            bail!("delivery.max_retry_after must be at most 7 days");
        }
        // (Zero would disable an endpoint at its first failure, where elsewhere in this file
        // `0s` means "for ever".)
        if d.disable_after.is_zero() || d.disable_after > 365 * DAY {
            bail!("delivery.disable_after must be more than 0s and at most 365 days");
        }
        if d.poll_interval > Duration::from_secs(60) {
            bail!("delivery.poll_interval must be at most 1m");
        }
        // Counts the engine makes semaphores and pools of: past tokio's limit a semaphore
        // panics (at start, or at an endpoint's first delivery), and past u32 the wait for
        // in-flight deliveries at shutdown was cut short. Far above any machine's need.
        for (name, value, most) in [
            ("delivery.max_in_flight", d.max_in_flight, MAX_IN_FLIGHT),
            ("delivery.per_endpoint_in_flight", d.per_endpoint_in_flight, MAX_IN_FLIGHT),
            ("delivery.max_outstanding", d.max_outstanding, MAX_OUTSTANDING),
            ("delivery.max_outstanding_bytes", d.max_outstanding_bytes, MAX_OUTSTANDING_BYTES),
            ("delivery.script_workers", d.script_workers, MAX_SCRIPT_WORKERS),
        ] {
            if value > most {
                bail!("{name} must be at most {most}");
            }
        }
        // (Tests run it every 100 ms; below that it would only keep the writer busy.)
        if self.housekeeping_interval < Duration::from_millis(100) || self.housekeeping_interval > DAY {
            bail!("housekeeping_interval must be between 100ms and 1day");
        }
        for (name, keep) in [
            ("message_retention", self.message_retention),
            ("inbound.request_retention", self.inbound.request_retention),
        ] {
            if keep > 100 * 365 * DAY {
                bail!("{name} must be at most 100 years (0s keeps everything)");
            }
        }
        // `host=db password=…` is a libpq connection string, which would otherwise be taken
        // for a SQLite file name (and shown, password and all, in the start-up log line).
        let u = &self.database_url;
        if !u.contains("://") && !u.starts_with("sqlite:") && u.contains('=') {
            bail!("database_url must be a postgres:// URL, or sqlite:PATH for a file whose name holds a '='");
        }
        // Another scheme (`POSTGRES://`, `postgress://`) would be taken for a SQLite file
        // name too, with its password in the file's path and in the log line naming it.
        if let Some((scheme, _)) = u.split_once("://") {
            if !["postgres", "postgresql", "sqlite"].contains(&scheme) {
                let scheme: String = scheme.chars().take(32).collect();
                bail!("database_url: unknown scheme `{scheme}://` (postgres://, postgresql:// or sqlite:)");
            }
        }
        if let Some(path) = self.sqlite_path() {
            // `SQLITE:x.db` would be a folder named `SQLITE:.`, and `x.db?mode=rwc` (sqlx's
            // style) a file of that name: neither is what was meant.
            if u.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("sqlite:") && p != "sqlite:") {
                bail!("database_url: write the scheme `sqlite:` in lower case");
            }
            if path.contains('?') {
                bail!("database_url: sqlite:PATH takes no options (`?…`); the file is created if missing");
            }
            if path.is_empty() || path.starts_with(":memory:") {
                bail!("database_url: the embedded store needs a file (sqlite:./data/hooklane.db); a message kept in memory only is not durable");
            }
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        if self.request_read_timeout.is_zero() {
            bail!("request_read_timeout must be more than 0s");
        }
        // Longer than a client's timeout, the request would be given up and retried with
        // its Idempotency-Key while the first task still runs.
        // (Svix's SDKs give up on a request after 15 s and retry it with the same key,
        // which the first one, still waiting, holds: 409.)
        if self.task_wait > Duration::from_secs(10) {
            bail!("task_wait must be at most 10s");
        }
        if self.tenant_cache_ttl > Duration::from_secs(3600) {
            bail!("tenant_cache_ttl must be at most 1h");
        }
        if self.message_rate_limit > hooklane_server::MAX_MESSAGE_RATE {
            bail!("message_rate_limit must be at most {} (0: no limit)", hooklane_server::MAX_MESSAGE_RATE);
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be text or json");
        }
        check_log_level(&self.log_level)?;
        hooklane_server::dashboard::check_frame_ancestors(&self.portal_frame_ancestors)
            .map_err(|why| anyhow::anyhow!("portal_frame_ancestors: {why}"))?;
        if let Some(url) = self.public_url.as_deref() {
            check_public_url(url)?;
        }
        // A configured token is shown by its last four characters: a short one would be
        // shown whole, and guessed.
        // (An empty one is none: the generated token is used, as before.)
        let configured = self.admin_token.as_deref().filter(|t| !t.is_empty());
        if let Some(token) = configured.filter(|t| t.chars().count() < MIN_ADMIN_TOKEN_CHARS) {
            bail!("admin_token must be at least {MIN_ADMIN_TOKEN_CHARS} characters (it has {})", token.chars().count());
        }
        if let Some(Redacted(proxy)) = d.proxy.as_ref().filter(|p| !p.0.is_empty()) {
            // The value may hold a password: the errors name the problem, never the value.
            let url = reqwest::Url::parse(proxy).map_err(|e| anyhow::anyhow!("delivery.proxy is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                bail!(
                    "delivery.proxy must be an http:// or https:// URL with a host (e.g. http://proxy.internal:3128)"
                );
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                bail!("delivery.proxy is a proxy's address: scheme, credentials, host and port, no path");
            }
        }
        Ok(())
    }

    /// The `HOOKLANE_*` variables set that are neither a setting, nor one of the commands'
    /// own, nor an orchestrator's (Kubernetes' `HOOKLANE_PORT…`, `HOOKLANE_SERVICE_…`):
    /// most likely a setting misspelt (`HOOKLANE_ADMINTOKEN`, or one underscore where a
    /// section needs two), which would otherwise change nothing without a word.
    pub fn unknown_environment() -> Vec<String> {
        let settings: Vec<String> = match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
            _ => return Vec::new(),
        };
        let mut unknown: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|name| {
                let upper = name.to_ascii_uppercase();
                let Some(rest) = upper.strip_prefix("HOOKLANE_") else { return false };
                let top = rest.split("__").next().unwrap_or(rest).to_ascii_lowercase();
                !settings.contains(&top)
                    && !COMMAND_VARIABLES.contains(&upper.as_str())
                    && upper != "HOOKLANE_PORT"
                    && !upper.starts_with("HOOKLANE_PORT_")
                    && !upper.starts_with("HOOKLANE_SERVICE_")
            })
            .collect();
        unknown.sort();
        unknown
    }

    pub fn dispatch(&self) -> DispatchConfig {
        let d = &self.delivery;
        DispatchConfig {
            connect_timeout: d.connect_timeout,
            request_timeout: d.request_timeout,
            retry: RetrySchedule { delays: d.retry_schedule.clone(), jitter: d.retry_jitter },
            max_retry_after: d.max_retry_after,
            disable_after: d.disable_after,
            allow_networks: d.allow_networks.clone(),
            lease: d.lease,
            poll_interval: d.poll_interval,
            max_in_flight: d.max_in_flight.max(1),
            per_endpoint_in_flight: d.per_endpoint_in_flight.max(1),
            max_outstanding: d.max_outstanding.max(1),
            max_outstanding_bytes: d.max_outstanding_bytes.max(1),
            circuit_failures: d.circuit_failures,
            circuit_cooldown: d.circuit_cooldown,
            circuit_max_cooldown: d.circuit_max_cooldown.max(d.circuit_cooldown),
            scripts: script_isolation(),
            script_workers: d.script_workers.max(1),
            proxy: d
                .proxy
                .as_ref()
                .filter(|p| !p.0.is_empty())
                .map(|p| ProxyConfig { url: p.0.clone(), resolves_names: d.proxy_resolves_names }),
            ..DispatchConfig::default()
        }
    }

    /// How many runtime worker threads `serve` runs: `worker_threads`, or one fewer than
    /// the CPUs (at least one) when it is 0.
    pub fn workers(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        cpus.saturating_sub(1).max(1)
    }

    /// The database URL without its password (in the user part or a `password=`
    /// parameter), for logs and messages.
    pub fn database_url_for_display(&self) -> String {
        let url = self.database_url.as_str();
        let url = match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let user = url[scheme + 3..at].split(':').next().unwrap_or_default();
                format!("{}://{user}@{}", &url[..scheme], &url[at + 1..])
            }
            _ => url.to_string(),
        };
        match url.split_once('?') {
            Some((base, query)) => {
                let params: Vec<&str> = query
                    .split('&')
                    .map(|p| if p.to_ascii_lowercase().starts_with("password=") { "password=…" } else { p })
                    .collect();
                format!("{base}?{}", params.join("&"))
            }
            None => url,
        }
    }

    /// The SQLite file the database URL names, if it names one.
    pub fn sqlite_path(&self) -> Option<&str> {
        let u = self.database_url.as_str();
        if u.starts_with("postgres://") || u.starts_with("postgresql://") {
            return None;
        }
        Some(u.strip_prefix("sqlite://").or_else(|| u.strip_prefix("sqlite:")).unwrap_or(u))
    }
}

/// Transformations run in worker processes of this same program (`hooklane
/// script-worker`), which `serve` can kill; in this process only when the program cannot
/// be found. On Linux the program is `/proc/self/exe`: the very binary running, even once
/// an upgrade has replaced the file, so a worker always speaks its parent's protocol.
fn script_isolation() -> hooklane_dispatch::scripts::Isolation {
    use hooklane_dispatch::scripts::Isolation;
    let own = std::path::Path::new("/proc/self/exe");
    if own.exists() {
        return Isolation::Workers { program: own.to_path_buf(), args: vec!["script-worker".into()] };
    }
    match std::env::current_exe() {
        Ok(program) => Isolation::Workers { program, args: vec!["script-worker".into()] },
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this program; transformations run in process");
            Isolation::InProcess
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_for_display_hides_passwords() {
        let shown = |url: &str| Config { database_url: url.into(), ..Config::default() }.database_url_for_display();
        assert_eq!(
            shown("postgres://hooklane:s3cret@db:5432/h?sslmode=require"),
            "postgres://hooklane@db:5432/h?sslmode=require"
        );
        assert_eq!(
            shown("postgres://db/h?user=u&password=s3cret&sslmode=require"),
            "postgres://db/h?user=u&password=…&sslmode=require"
        );
        assert_eq!(shown("postgres://u@db/h"), "postgres://u@db/h");
        assert_eq!(shown("sqlite:./data/hooklane.db"), "sqlite:./data/hooklane.db");
    }

    #[test]
    fn a_database_url_of_another_scheme_is_refused_without_its_password() {
        let check = |url: &str| Config { database_url: url.into(), ..Config::default() }.check();
        for url in ["POSTGRES://u:s3cret@db/h", "postgress://u:s3cret@db/h", "mysql://u:s3cret@db/h"] {
            let e = check(url).expect_err(url).to_string();
            assert!(e.contains("unknown scheme") && !e.contains("s3cret"), "{url}: {e}");
        }
        for url in ["postgres://u:s3cret@db/h", "postgresql://db/h", "sqlite://./a.db", "sqlite:./a.db", "./a.db"] {
            check(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        // A folder `SQLITE:.`, a file named `y.db?mode=rwc`, or a database nothing is kept in.
        for (url, said) in [
            ("SQLITE:./x.db", "lower case"),
            ("sqlite:./y.db?mode=rwc", "no options"),
            ("sqlite::memory:", "needs a file"),
            ("sqlite:", "needs a file"),
        ] {
            let e = check(url).expect_err(url).to_string();
            assert!(e.contains(said), "{url}: {e}");
        }
    }

    #[test]
    fn a_poll_interval_under_five_milliseconds_is_refused() {
        let with = |interval: Duration| {
            let mut config = Config::default();
            config.delivery.poll_interval = interval;
            config.check()
        };
        assert!(with(Duration::from_millis(5)).is_ok());
        let refused = with(Duration::from_millis(1)).expect_err("1ms");
        assert!(refused.to_string().contains("poll_interval"), "{refused}");
        assert!(with(Duration::ZERO).is_err());
        let mut config = Config::default();
        config.delivery.circuit_max_cooldown = Duration::from_secs(13 * 3600);
        assert!(config.check().expect_err("13h").to_string().contains("circuit_max_cooldown"));
    }

    #[test]
    fn durations_past_their_bounds_are_refused() {
        type Change = fn(&mut Config);
        let cases: [(&str, Change); 17] = [
            // A first cool-down above the longest would make the longest its own value:
            // probes a day apart end the failure streak, and the endpoint is never disabled.
            ("circuit_cooldown", |c| c.delivery.circuit_cooldown = 2 * DAY),
            ("retry_schedule", |c| c.delivery.retry_schedule.push(8 * DAY)),
            ("max_retry_after", |c| c.delivery.max_retry_after = 8 * DAY),
            ("disable_after", |c| c.delivery.disable_after = 400 * DAY),
            // Zero disabled an endpoint at its first failure.
            ("disable_after", |c| c.delivery.disable_after = Duration::ZERO),
            ("lease", |c| c.delivery.lease = 2 * HOUR),
            // 16 s: a request of 15 s started at a quarter of it would outlive it.
            ("lease", |c| c.delivery.lease = Duration::from_secs(16)),
            ("housekeeping_interval", |c| c.housekeeping_interval = Duration::ZERO),
            ("message_retention", |c| c.message_retention = 300_000 * 365 * DAY),
            ("request_retention", |c| c.inbound.request_retention = 300_000 * 365 * DAY),
            ("task_wait", |c| c.task_wait = Duration::from_secs(11)),
            // Past what a Duration holds three times over: refused, not a panic.
            ("delivery.lease", |c| c.delivery.lease = Duration::from_secs(7_000_000_000_000_000_000)),
            ("delivery.max_in_flight", |c| c.delivery.max_in_flight = 9_000_000_000_000_000_000),
            ("delivery.per_endpoint_in_flight", |c| c.delivery.per_endpoint_in_flight = 65_537),
            ("delivery.max_outstanding", |c| c.delivery.max_outstanding = 4_294_967_296),
            ("delivery.max_outstanding_bytes", |c| c.delivery.max_outstanding_bytes = usize::MAX),
            ("delivery.script_workers", |c| c.delivery.script_workers = 257),
        ];
        assert!(Config::default().check().is_ok());
        for (name, change) in cases {
            let mut config = Config::default();
            change(&mut config);
            let refused = config.check().expect_err(name).to_string();
            assert!(refused.contains(name), "{name}: {refused}");
        }
    }

    #[test]
    fn a_log_level_that_is_not_one_is_refused() {
        let check = |level: &str| Config { log_level: level.into(), ..Config::default() }.check();
        for good in ["info", "WARN", "off", "hooklane=debug,tower_http=warn", "info,hooklane_dispatch=trace", "debug "]
        {
            check(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        // Each would have been read as a target's name, turning every other log off.
        for bad in ["warning", "err", "verbose", "info,loud", "hooklane=loud"] {
            let e = check(bad).expect_err(bad).to_string();
            assert!(e.contains("log_level") && e.contains("is not a level"), "{bad}: {e}");
        }
        // No directive at all logs nothing, errors included.
        for empty in ["", ",", " , "] {
            let e = check(empty).expect_err(empty).to_string();
            assert!(e.contains("log_level is empty"), "{empty:?}: {e}");
        }
    }

    #[test]
    fn a_public_url_and_an_admin_token_are_checked() {
        let url = |u: &str| Config { public_url: Some(u.into()), ..Config::default() }.check();
        for good in ["https://hooks.example.com", "http://127.0.0.1:8071", "https://example.com/hooklane/"] {
            url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["hooks.example.com", "ftp://example.com", "https://u:p@example.com", "https://example.com/?a=1"] {
            assert!(url(bad).expect_err(bad).to_string().contains("public_url"), "{bad}");
        }
        let token = |t: &str| Config { admin_token: Some(t.into()), ..Config::default() }.check();
        assert!(token("0123456789abcdef").is_ok());
        assert!(token("").is_ok(), "empty: not configured (HOOKLANE_ADMIN_TOKEN= in a template)");
        let e = token("s3cret").expect_err("short").to_string();
        assert!(e.contains("admin_token") && !e.contains("s3cret"), "{e}");
    }
}
