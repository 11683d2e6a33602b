use std::time::Duration;

use hooklane_core::retry::RetrySchedule;
use ipnet::IpNet;

/// How deliveries are made. `Default` gives production values.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    pub connect_timeout: Duration,
    /// Whole attempt, from connect to the last byte of the (capped) response body.
    pub request_timeout: Duration,
    pub retry: RetrySchedule,
    /// Longest `Retry-After` honoured; longer values are cut to this.
    pub max_retry_after: Duration,
    /// An endpoint failing continuously for this long is disabled.
    pub disable_after: Duration,
    /// Deliveries held in memory (queued or in flight) at most, across all endpoints.
    pub max_outstanding: usize,
    /// Payload bytes those deliveries may hold at most (each counts its message's payload,
    /// shared or not): with large payloads, fewer are held. One endpoint's hold a quarter of
    /// it at most, and ingest hands deliveries over straight only while they hold less than
    /// half. One delivery is always let in, however large its payload.
    pub max_outstanding_bytes: usize,
    /// Requests in flight at most, across all endpoints.
    pub max_in_flight: usize,
    /// Requests in flight at most to one endpoint.
    pub per_endpoint_in_flight: usize,
    /// Deliveries held in memory for one endpoint before further ones are handed back to
    /// the store; keeps one slow endpoint from filling memory and starving the others.
    pub per_endpoint_outstanding: usize,
    /// How long a claimed delivery stays reserved to this node.
    pub lease: Duration,
    /// Longest sleep between looks at the store when nothing wakes the poller.
    pub poll_interval: Duration,
    pub claim_batch: usize,
    /// Networks that may be contacted although they are not public (loopback, private…).
    pub allow_networks: Vec<IpNet>,
    /// Unreachable attempts in a row (connection failed, timeout, 5xx) after which an
    /// endpoint's circuit opens: nothing is sent to it for a cool-down, then one probe.
    /// 0 turns circuit breaking off.
    pub circuit_failures: u32,
    /// First cool-down of an open circuit; doubled after each failed probe.
    pub circuit_cooldown: Duration,
    /// Longest cool-down.
    pub circuit_max_cooldown: Duration,
    /// Bytes of response body kept in the attempt log.
    pub response_body_limit: usize,
    pub user_agent: String,
    /// Where endpoints' JavaScript transformations run ([`crate::scripts`]); the `hooklane`
    /// binary runs them in worker processes of its own.
    pub scripts: crate::scripts::Isolation,
    /// Transformations run at once at most (each in its own worker).
    pub script_workers: usize,
    /// An HTTP proxy every delivery goes through: e.g. an egress proxy with the addresses
    /// receivers allow-list, or Smokescreen. `None`: straight to the receiver (the
    /// environment's `HTTP_PROXY` and the like are not followed either way).
    pub proxy: Option<ProxyConfig>,
}

/// Where deliveries go through, and how far hooklane trusts it with names.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `http://[user:password@]host:port` or `https://…`.
    pub url: String,
    /// Whether a receiver's name that does not resolve here is left to the proxy (split
    /// DNS, where only the proxy knows it); refused otherwise.
    pub resolves_names: bool,
}

/// Never the URL itself: it may hold a password.
impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig").field("url", &"<redacted>").field("resolves_names", &self.resolves_names).finish()
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            retry: RetrySchedule::default(),
            max_retry_after: Duration::from_secs(3600),
            disable_after: Duration::from_secs(5 * 24 * 3600),
            max_outstanding: 8192,
            max_outstanding_bytes: 256 * 1024 * 1024,
            max_in_flight: 512,
            per_endpoint_in_flight: 64,
            per_endpoint_outstanding: 1024,
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            claim_batch: 512,
            allow_networks: Vec::new(),
            circuit_failures: 10,
            circuit_cooldown: Duration::from_secs(5),
            circuit_max_cooldown: Duration::from_secs(300),
            response_body_limit: 16 * 1024,
            user_agent: concat!("hooklane/", env!("CARGO_PKG_VERSION")).to_string(),
            scripts: crate::scripts::Isolation::InProcess,
            script_workers: 2,
            proxy: None,
        }
    }
}
