//! The PostgreSQL store, for running several hooklane nodes against one database.
//!
//! Same tables and the same semantics as the SQLite store (times are BIGINT unix
//! milliseconds, a delivery's lease is `due_at` + `leased`), with what sharing the tables
//! between nodes needs:
//!
//! * `claim_due` takes due rows with `FOR UPDATE SKIP LOCKED`, so concurrent pollers on
//!   different nodes never lease the same delivery and never wait for each other.
//! * Every store operation is one transaction of its own (often a single statement): a
//!   failed operation leaves nothing behind, exactly like the SQLite store's
//!   savepoint-per-job. (`claim_due` is one statement; deleting the rare claimed rows whose
//!   message or endpoint is gone is a second one.) `create_message` is one statement that inserts the message and all
//!   its deliveries (one multi-row insert over `UNNEST`).
//! * Unique (and other integrity) violations map to [`StoreError::Conflict`], as SQLite's
//!   constraint violations do.
//! * No group commit of our own: each operation commits on its own pooled connection, and
//!   PostgreSQL already flushes the WAL once for all commits waiting at the same time
//!   (tunable with `commit_delay` / `commit_siblings`; `synchronous_commit` is left on, so
//!   an acknowledged write is durable, as with SQLite's `synchronous = FULL`).
//! * `release_all_leases` releases the leases of every node sharing the database: a
//!   multi-node deployment must not call it at start-up (see the method's docs).
//! * An application's stream of messages (for consumers that pull) is ordered by the
//!   writing transaction's id, then a sequence number, and read only below the reading
//!   snapshot's xmin, so a write still in flight is never passed over; every transaction that
//!   wrote messages notifies `hooklane_messages` at commit, which every node listens to.
//! * Schema migrations are versioned in `schema_migrations` and run at open under an
//!   advisory lock, so nodes starting together do not race.
//!
//! The connection URL is a libpq-style `postgres://` / `postgresql://` URL. `sslmode` and
//! `sslrootcert` choose TLS (see [`tls`]: `require` and stricter always verify the server's
//! certificate); one hooklane-specific query parameter is understood too: `pool_max_size=N`,
//! the most connections this store keeps open (default [`DEFAULT_POOL_SIZE`]). These are
//! taken off the URL before the driver parses the rest.
//!
//! The pool's connections run on the Tokio runtime that opened the store: open it on the
//! runtime that will use it.

mod inbound;
mod ingest;
mod integrations;
mod lanes;
mod queries;
mod rows;
mod schema;
mod store_impl;
mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Transaction,
};
use tokio::sync::Notify;
use tokio_postgres::error::SqlState;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use self::tls::PgTls;
use crate::signals::StreamSignals;
use crate::{StoreError, StoreResult};

/// Connections kept by default; each node needs a few per concurrent request plus the
/// dispatcher's pollers and recorders.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long an operation waits for a free pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How long opening one new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection's TCP waits, unless the URL says otherwise, for the database to
/// acknowledge what was sent, and how soon an idle one is probed (then every
/// `KEEPALIVE_IDLE / 3`, three times). The system's defaults (two hours idle; fifteen
/// minutes of retransmissions) left a pooled connection whose database failed over, or
/// whose flow a NAT dropped, waiting that long on a query: the node's poller, recorder and
/// ingest each wait on one such query at a time, and so stopped for that long.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// tokio-postgres's own default for `keepalives_idle`, which a URL that sets none leaves.
const DRIVER_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Planner settings of every connection hooklane opens: no hash joins and no merge joins.
///
/// hooklane's statements look rows up by key, a batch of at most a thousand keys at a time,
/// or read index-ordered pages. PostgreSQL plans a prepared statement generically after its
/// fifth run, with the table sizes of that moment, and keeps the plan until the table is next
/// analysed: on a new or fast-growing table it planned "update these deliveries by key" as a
/// hash join over a sequential scan of the whole table. Recording a batch of attempts then
/// read every delivery ever written (`auto_explain`: 40,000 rows scanned for a batch of 13,
/// up to 23 ms a statement), and a node's share of the database's CPU per message nearly
/// doubled (BENCHMARKS.md, session 8). With these joins off, a batch of keys is joined by a
/// nested loop over the primary key's index, unless the plan was made while the table held
/// only a few pages (see [`REPLAN_EVERY`] for that case).
const PLANNER_SETTINGS: &str = "-c enable_hashjoin=off -c enable_mergejoin=off";

/// A pooled connection forgets its cached plans (`DISCARD PLANS`) every this many times it
/// is taken from the pool. A generic plan keeps the table sizes of the moment it was made
/// until the table is next analysed, which autovacuum may leave for a minute or more: one made
/// while a table held a few hundred rows scans it whole (a nested loop over all of it, for
/// every key of a batch), however large it has grown since. Made again, a plan reads the
/// table's present size, and a busy connection, the kind whose tables grow, is taken from the
/// pool hundreds of times a minute; the cost is a round trip and a few plans every so often.
const REPLAN_EVERY: usize = 256;

/// The isolation of every transaction hooklane runs, whatever the database's or role's
/// default (`ALTER DATABASE … SET default_transaction_isolation`, which the connection's
/// own settings override): READ COMMITTED, which its statements are written for. A FIFO
/// lane's claim reads, in a statement of its own, what the lane's previous claimer committed
/// after its own transaction began; an UPDATE meeting a row another transaction changed
/// meanwhile re-checks the row's new version (`FOR UPDATE SKIP LOCKED`, the lease's and the
/// lanes' re-checks) instead of failing. Under REPEATABLE READ or SERIALIZABLE a claim racing
/// another node's failed with `could not serialize access due to concurrent update`.
/// (The space in the value is escaped: `options` is split at unescaped spaces.)
const ISOLATION_SETTING: &str = r"-c default_transaction_isolation=read\ committed";

/// The connection's `options`: [`PLANNER_SETTINGS`] first, as PostgreSQL applies the last
/// of a repeated setting and `options` given in the URL should have the last word on them,
/// but [`ISOLATION_SETTING`] last, as hooklane is not correct under another isolation.
fn connection_options(given: Option<&str>) -> String {
    match given.map(str::trim).filter(|o| !o.is_empty()) {
        Some(given) => format!("{PLANNER_SETTINGS} {given} {ISOLATION_SETTING}"),
        None => format!("{PLANNER_SETTINGS} {ISOLATION_SETTING}"),
    }
}

/// Bounds how long a connection waits on a database that no longer answers at the TCP
/// level ([`TCP_USER_TIMEOUT`], [`KEEPALIVE_IDLE`]), unless the URL set its own.
fn with_dead_peer_limits(config: &mut tokio_postgres::Config) {
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_keepalives_idle() == DRIVER_KEEPALIVE_IDLE {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_IDLE / 3);
    }
    if config.get_keepalives_retries().is_none() {
        config.keepalives_retries(3);
    }
}

/// Tuning for [`PgStore::open_with`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The most connections this store opens at once.
    pub max_connections: usize,
    /// Whether connections use TLS.
    pub tls: PgTls,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { max_connections: DEFAULT_POOL_SIZE, tls: PgTls::Off }
    }
}

pub struct PgStore {
    pool: Pool,
    /// Ingest queue, written in batches (see [`ingest`]).
    ingest: tokio::sync::mpsc::UnboundedSender<ingest::IngestJob>,
    /// The messages queued for the ingest workers (see [`crate::backlog`]).
    backlog: std::sync::Arc<crate::backlog::Backlog>,
    /// Signalled on every `NOTIFY hooklane_due` from any node (see [`listen_for_due`]).
    wakeups: Arc<Notify>,
    /// Raised by every `NOTIFY hooklane_messages` from any node, for the applications it
    /// names (see [`listen_for_due`]): what [`crate::Store::message_events_signal`] hands out.
    events: Arc<StreamSignals>,
    /// See [`crate::Store::instance_secret`].
    instance_secret: [u8; 32],
    /// Every `NOTIFY hooklane_circuits` from another node: what
    /// [`crate::Store::circuit_resets`] hands out.
    circuit_resets: tokio::sync::broadcast::Sender<String>,
    /// Every `NOTIFY hooklane_tenants` from another node: what
    /// [`crate::Store::tenant_changes`] hands out.
    tenant_changes: tokio::sync::broadcast::Sender<()>,
    /// Every `NOTIFY hooklane_stops` from another node: what [`crate::Store::stops`] hands
    /// out.
    stops: tokio::sync::broadcast::Sender<crate::Stop>,
    /// Tags this process's announcements, so that it does not hear its own: by the time a
    /// circuit reset came back, the circuit may have opened again, for good reason.
    node_tag: String,
}

/// The channel nodes use to tell each other that work may be due now.
const DUE_CHANNEL: &str = "hooklane_due";
/// The channel nodes announce circuit resets on, with the endpoint id as payload.
const CIRCUITS_CHANNEL: &str = "hooklane_circuits";
/// The channel nodes announce changes to applications, endpoints and sources on.
pub(crate) const TENANTS_CHANNEL: &str = "hooklane_tenants";
/// The channel nodes announce deleted content and disabled or paused endpoints on
/// ([`crate::Stop::to_wire`]).
pub(crate) const STOPS_CHANNEL: &str = "hooklane_stops";
/// Circuit resets a slow dispatcher may fall behind by before it misses some (each one
/// missed only leaves that node's circuit to its cool-down).
const CIRCUIT_RESETS_BACKLOG: usize = 1024;

/// The channel every transaction that wrote messages notifies at commit (see [`ingest`]),
/// for readers of the messages' stream waiting for more.
const MESSAGES_CHANNEL: &str = "hooklane_messages";
/// Wait before re-opening a dropped `LISTEN` connection.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// How long the LISTEN connection has to answer a query before it is taken for dead.
const LISTEN_PING_WAIT: Duration = Duration::from_secs(10);
/// The `application_name` of the LISTEN connection.
pub const LISTEN_APPLICATION_NAME: &str = "hooklane-listen";

impl PgStore {
    /// Connects to the database named by `url`, brings its schema up to date and returns
    /// the store. `url` may carry `pool_max_size=N`, `sslmode` and `sslrootcert` (see the
    /// module docs).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let (url, options) = take_own_params(url)?;
        Self::open_with(&url, options).await
    }

    /// Like [`PgStore::open`] with explicit options (`url` must not carry `pool_max_size`,
    /// `sslmode` or `sslrootcert`: they are in `options`).
    pub async fn open_with(url: &str, options: PgOptions) -> StoreResult<Self> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::Database(format!("invalid PostgreSQL URL: {e}")))?;
        Self::open_config(config, options).await
    }

    async fn open_config(mut config: tokio_postgres::Config, options: PgOptions) -> StoreResult<Self> {
        if config.get_application_name().is_none() {
            config.application_name("hooklane");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        with_dead_peer_limits(&mut config);
        let startup = connection_options(config.get_options());
        config.options(&startup);
        // `sslmode` belongs in `options` (see `open_with`); one left in the URL would be
        // overridden here, and TLS must never be switched off silently.
        if config.get_ssl_mode() != tokio_postgres::config::SslMode::Prefer {
            return Err(StoreError::Database(
                "give sslmode through the store's options (PgStore::open takes it from the URL)".into(),
            ));
        }
        config.ssl_mode(options.tls.ssl_mode());
        let tls = options.tls.connector()?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .post_recycle(Hook::async_fn(|client, metrics| {
                // `recycle_count` counts the takes before this one.
                let due = (metrics.recycle_count + 1) % REPLAN_EVERY == 0;
                Box::pin(async move {
                    if due {
                        client.batch_execute("DISCARD PLANS").await.map_err(HookError::Backend)?;
                    }
                    Ok(())
                })
            }))
            .build()
            .map_err(|e| StoreError::Database(format!("cannot build the connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(pool_err)?;
        let applied = schema::migrate(&mut client).await?;
        if applied > 0 {
            tracing::info!(applied, "postgres schema migrated");
        }
        if schema::follow_restore(&mut client).await? == schema::Restore::MovedInOrder {
            tracing::info!("this database was moved to another cluster; its stream positions hold there");
        }
        let instance_secret = schema::instance_secret(&client).await?;
        let wakeups = Arc::new(Notify::new());
        let events = Arc::new(StreamSignals::default());
        let (circuit_resets, _) = tokio::sync::broadcast::channel(CIRCUIT_RESETS_BACKLOG);
        // A reader that falls behind has missed some ticks; it clears its cache all the same.
        let (tenant_changes, _) = tokio::sync::broadcast::channel(16);
        let (stops, _) = tokio::sync::broadcast::channel(CIRCUIT_RESETS_BACKLOG);
        let node_tag: String = hooklane_core::signing::random_bytes::<8>().iter().map(|b| format!("{b:02x}")).collect();
        let listen = Listening {
            wakeups: Arc::downgrade(&wakeups),
            events: Arc::downgrade(&events),
            circuit_resets: circuit_resets.clone(),
            tenant_changes: tenant_changes.clone(),
            stops: stops.clone(),
            node_tag: node_tag.clone(),
        };
        tokio::spawn(listen_for_due(config, tls, listen));
        let ingest = ingest::start(pool.clone());
        let backlog = crate::backlog::Backlog::new("postgres");
        Ok(PgStore {
            pool,
            ingest,
            backlog,
            wakeups,
            events,
            instance_secret,
            circuit_resets,
            tenant_changes,
            stops,
            node_tag,
        })
    }

    /// Tells every node listening (this one included) that deliveries may be due now. A
    /// lost notification only delays work until the next poll, so failures are logged.
    pub(crate) async fn announce_due(&self) {
        let sent = match self.client().await {
            Ok(c) => c.batch_execute(&format!("NOTIFY {DUE_CHANNEL}")).await.map_err(db_err),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "NOTIFY failed; pollers will find the work on their next round");
        }
    }

    /// Announces a circuit reset to every node (see [`crate::Store::announce_circuit_reset`]).
    pub(crate) async fn announce_circuit_reset(&self, endpoint_id: &str) {
        self.announce(CIRCUITS_CHANNEL, endpoint_id.to_string()).await;
    }

    /// `NOTIFY channel, '<node tag> <detail>'`: best effort (a lost announcement leaves the
    /// other nodes to find out later: a cool-down, a cache's time to live).
    pub(crate) async fn announce(&self, channel: &str, detail: String) {
        let sent = match self.client().await {
            Ok(c) => {
                let payload = format!("{} {detail}", self.node_tag);
                c.execute("SELECT pg_notify($1, $2)", &[&channel, &payload]).await.map_err(db_err)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, channel, %detail, "not announced to the other nodes");
        }
    }

    /// A pooled connection.
    async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.pool.get().await.map_err(pool_err)
    }
}

/// Where [`listen_for_due`] passes on what it hears.
struct Listening {
    wakeups: Weak<Notify>,
    events: Weak<StreamSignals>,
    circuit_resets: tokio::sync::broadcast::Sender<String>,
    tenant_changes: tokio::sync::broadcast::Sender<()>,
    stops: tokio::sync::broadcast::Sender<crate::Stop>,
    /// This process's announcements carry it (`<tag> <detail>`): they are not passed on.
    node_tag: String,
}

/// Holds one connection that `LISTEN`s on [`DUE_CHANNEL`], [`MESSAGES_CHANNEL`],
/// [`CIRCUITS_CHANNEL`], [`TENANTS_CHANNEL`] and [`STOPS_CHANNEL`]: signals `wakeups` for
/// each notification on the first, raises `events` for the applications each one on the
/// second names (and every application's once the connection is listening, for messages
/// written while it was down), passes what another node announced on the last three to
/// `circuit_resets` (endpoint ids), `tenant_changes` (which also ticks once the connection
/// is listening, for changes made while it was down) and `stops`, and reconnects when
/// the connection drops. Ends when the store is dropped.
async fn listen_for_due(mut config: tokio_postgres::Config, tls: MakeRustlsConnect, listen: Listening) {
    let Listening { wakeups, events, circuit_resets, tenant_changes, stops, node_tag } = listen;
    // Named, so that an operator (or a test) tells it from the pool's connections.
    config.application_name(LISTEN_APPLICATION_NAME);
    // Another node's announcement on a tagged channel: its detail.
    let foreign = |payload: &str| -> Option<String> {
        let (tag, detail) = payload.split_once(' ')?;
        (tag != node_tag).then(|| detail.to_string())
    };
    use futures::StreamExt;
    // An empty payload stands for every application (see `ingest::announce_messages`).
    let bump = |events: &Weak<StreamSignals>, apps: &str| match events.upgrade() {
        Some(e) if apps.is_empty() => {
            e.raise_all();
            true
        }
        Some(e) => {
            e.raise(apps.split(','));
            true
        }
        None => false,
    };
    loop {
        if wakeups.strong_count() == 0 {
            return;
        }
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let statement = format!(
                    "LISTEN {DUE_CHANNEL}; LISTEN {MESSAGES_CHANNEL}; LISTEN {CIRCUITS_CHANNEL}; \
                     LISTEN {TENANTS_CHANNEL}; LISTEN {STOPS_CHANNEL}"
                );
                let listen = client.batch_execute(&statement);
                // The connection must be driven for LISTEN itself to complete.
                let mut listen = std::pin::pin!(listen);
                let mut listening = false;
                // A connection that stopped answering without closing (a half-open TCP
                // connection behind a load balancer) reports no error for hours: a query
                // every few seconds must come back, or the connection is made again.
                type Ping<'c> = std::pin::Pin<
                    Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'c>,
                >;
                let mut ping: Option<(Ping<'_>, tokio::time::Instant)> = None;
                let connected = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        done = &mut listen, if !listening => {
                            if let Err(e) = done {
                                tracing::warn!(error = %db_err(e), "LISTEN failed");
                                break;
                            }
                            listening = true;
                            if !bump(&events, "") {
                                return;
                            }
                            // Changes announced while the connection was down went unheard:
                            // whatever was cached then is dropped, and work others wrote
                            // meanwhile is looked for.
                            let _ = tenant_changes.send(());
                            match wakeups.upgrade() {
                                Some(w) => w.notify_one(),
                                None => return,
                            }
                        }
                        answered = async {
                            match ping.as_mut() {
                                Some((query, _)) => query.as_mut().await,
                                None => std::future::pending().await,
                            }
                        }, if ping.is_some() => {
                            ping = None;
                            if let Err(e) = answered {
                                tracing::warn!(error = %db_err(e), "LISTEN connection lost");
                                break;
                            }
                        }
                        message = messages.next() => match message {
                            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == MESSAGES_CHANNEL => {
                                if !bump(&events, n.payload()) {
                                    return;
                                }
                            }
                            // Nobody subscribed (yet) to what these carry: nobody to tell.
                            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CIRCUITS_CHANNEL => {
                                if let Some(endpoint_id) = foreign(n.payload()) {
                                    let _ = circuit_resets.send(endpoint_id);
                                }
                            }
                            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == STOPS_CHANNEL => {
                                if let Some(what) = foreign(n.payload()).and_then(|d| crate::Stop::from_wire(&d)) {
                                    let _ = stops.send(what);
                                }
                            }
                            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == TENANTS_CHANNEL => {
                                if foreign(n.payload()).is_some() {
                                    let _ = tenant_changes.send(());
                                }
                            }
                            Some(Ok(AsyncMessage::Notification(_))) => match wakeups.upgrade() {
                                Some(w) => w.notify_one(),
                                None => return,
                            },
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %db_err(e), "LISTEN connection lost");
                                break;
                            }
                            None => break,
                        },
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {
                            if wakeups.strong_count() == 0 {
                                return;
                            }
                            match &ping {
                                Some((_, sent)) if sent.elapsed() > LISTEN_PING_WAIT => {
                                    tracing::warn!(waited = ?LISTEN_PING_WAIT, "LISTEN connection stopped answering");
                                    break;
                                }
                                Some(_) => {}
                                None if listening => {
                                    ping = Some((Box::pin(client.execute("SELECT 1", &[])), tokio::time::Instant::now()));
                                }
                                // LISTEN itself not answered: the same wait.
                                None if connected.elapsed() > LISTEN_PING_WAIT => {
                                    tracing::warn!(waited = ?LISTEN_PING_WAIT, "LISTEN was not answered");
                                    break;
                                }
                                None => {}
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %db_err(e), "cannot open the LISTEN connection"),
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// Splits the parameters this store handles itself (`pool_max_size`, `sslmode`,
/// `sslrootcert`) off a connection URL; the driver gets the rest.
fn take_own_params(url: &str) -> StoreResult<(String, PgOptions)> {
    let mut options = PgOptions::default();
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), options)) };
    let (mut sslmode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("pool_max_size", v)) => {
                options.max_connections = v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    StoreError::Database(format!("pool_max_size must be a positive integer, not {v:?}"))
                })?;
            }
            Some(("sslmode", v)) => sslmode = Some(percent_decode(v)),
            Some(("sslrootcert", v)) => root_cert = Some(std::path::PathBuf::from(percent_decode(v))),
            _ => kept.push(pair),
        }
    }
    options.tls = PgTls::from_sslmode(sslmode.as_deref(), root_cert)?;
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, options))
}

/// Decodes `%XX` escapes of a URL query value (a path may need them); anything malformed
/// is kept as written.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex()) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A connection that could not be had, whatever the reason (the server down or refusing
/// connections, the pool's wait over), makes the store unavailable, not the request wrong.
fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Closed => StoreError::Closed,
        PoolError::Backend(e) => match db_err(e) {
            StoreError::Database(why) => StoreError::Unavailable(format!("no database connection: {why}")),
            other => other,
        },
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

/// Maps a driver error: integrity violations (SQLSTATE class 23: unique, not-null, check…)
/// become [`StoreError::Conflict`], like SQLite's constraint violations.
pub(crate) fn db_err(e: tokio_postgres::Error) -> StoreError {
    db_error(&e)
}

/// [`db_err`] for a borrowed error.
pub(crate) fn db_error(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        // PostgreSQL's text holds no NUL character: a value with one is bad input.
        Some(db) if *db.code() == SqlState::CHARACTER_NOT_IN_REPERTOIRE => {
            StoreError::Refused("a text holds a NUL character, which the database cannot store".into())
        }
        Some(db) if db.code().code().starts_with("23") => StoreError::Conflict(match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        }),
        Some(db) => {
            let why = format!("{}: {} [{}]", db.severity(), db.message(), db.code().code());
            if is_unavailability(db.code().code()) {
                StoreError::Unavailable(why)
            } else {
                StoreError::Database(why)
            }
        }
        None => {
            let mut msg = e.to_string();
            let mut io = false;
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                io |= s.is::<std::io::Error>();
                source = s.source();
            }
            // No answer of the server's because the connection broke or timed out; other
            // errors of the driver's own (a value it could not encode, a row count) are ours.
            if e.is_closed() || io {
                StoreError::Unavailable(msg)
            } else {
                StoreError::Database(msg)
            }
        }
    }
}

/// SQLSTATEs that say the server cannot serve now, not that the statement is wrong: class
/// 08 (connection exception), 53 (insufficient resources: disk full, out of memory, too
/// many connections), 57P01–57P03 (shut down by an administrator, crashed, starting up) and
/// class 40 (a deadlock or serialization failure, retried by the store until it gives up).
fn is_unavailability(sqlstate: &str) -> bool {
    ["08", "53", "40", "57P01", "57P02", "57P03"].iter().any(|prefix| sqlstate.starts_with(prefix))
}

/// Whether retrying the whole transaction may succeed: it failed on a deadlock or a
/// serialization failure (the SQLSTATE that [`db_error`] puts at the end of the message).
pub(crate) fn is_transient(e: &StoreError) -> bool {
    let codes = [SqlState::T_R_DEADLOCK_DETECTED, SqlState::T_R_SERIALIZATION_FAILURE];
    matches!(e, StoreError::Unavailable(m) if codes.iter().any(|c| m.ends_with(&format!("[{}]", c.code()))))
}

/// Set first in the transactions of the dispatcher's claims of FIFO lanes and its records
/// of attempts: how long they wait for a row another transaction holds. A long one (an
/// application or endpoint deleted with a million deliveries, a backlog moved out of its
/// lanes) held every node's claims and records for as long as it ran: nothing else was
/// claimed, and the leases of what was on the wire ran out meanwhile, to be sent again.
/// Past the wait a lane is left for the next claim, and a record goes endpoint by endpoint
/// (see `record_attempts`).
pub(crate) const SET_LOCK_WAIT: &str = "SET LOCAL lock_timeout = '3s'";
/// The wait of the records made again endpoint by endpoint after one met a held row, and of
/// a FIFO lane's claim: a moment, as several endpoints (an application's) may be held
/// together, and each is waited for in turn.
pub(crate) const SET_SHORT_LOCK_WAIT: &str = "SET LOCAL lock_timeout = '300ms'";

/// Runs `statement` (on `tx`) with the lock wait `set` ([`SET_LOCK_WAIT`] or
/// [`SET_SHORT_LOCK_WAIT`]) set first in the transaction, both sent together, pipelined:
/// one round trip for the two (requests go out in the order their futures are first
/// polled).
pub(crate) async fn with_lock_wait<T>(
    tx: &Transaction<'_>,
    set: &str,
    statement: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let set = async { tx.batch_execute(set).await.map_err(db_err) };
    tokio::try_join!(set, statement).map(|((), done)| done)
}

/// Whether `e` is a statement that gave up waiting for a lock ([`SET_LOCK_WAIT`]).
pub(crate) fn is_lock_wait(e: &StoreError) -> bool {
    let code = SqlState::LOCK_NOT_AVAILABLE.code();
    matches!(e, StoreError::Database(m) | StoreError::Unavailable(m) if m.ends_with(&format!("[{code}]")))
}

/// Commits when `result` is a success, rolls back otherwise; returns `result`.
async fn finish<T>(tx: Transaction<'_>, result: StoreResult<T>) -> StoreResult<T> {
    match result {
        Ok(v) => {
            let started = std::time::Instant::now();
            tx.commit().await.map_err(db_err)?;
            metrics::histogram!("hooklane_store_commit_seconds", "store" => "postgres").record(started.elapsed());
            Ok(v)
        }
        Err(e) => {
            // Dropping the transaction would roll back too; saying so keeps the connection's
            // state obvious before it goes back to the pool.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_parameters_are_taken_off_the_url() {
        let (url, o) = take_own_params("postgres://u@h/db?pool_max_size=4&application_name=x").unwrap();
        assert_eq!((url.as_str(), o.max_connections, o.tls), ("postgres://u@h/db?application_name=x", 4, PgTls::Off));
        let (url, o) = take_own_params("postgres://u@h/db?pool_max_size=4").unwrap();
        assert_eq!((url.as_str(), o.max_connections), ("postgres://u@h/db", 4));
        let (url, o) = take_own_params("postgres://u@h/db").unwrap();
        assert_eq!((url.as_str(), o.max_connections, o.tls), ("postgres://u@h/db", DEFAULT_POOL_SIZE, PgTls::Off));
        assert!(take_own_params("postgres://u@h/db?pool_max_size=0").is_err());
        assert!(take_own_params("postgres://u@h/db?pool_max_size=x").is_err());
        let (url, o) =
            take_own_params("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20certs.pem").unwrap();
        let root = Some(std::path::PathBuf::from("/etc/ca certs.pem"));
        assert_eq!((url.as_str(), o.tls), ("postgres://u@h/db", PgTls::Verified { root_cert: root }));
        let (_, o) = take_own_params("postgres://u@h/db?sslmode=disable&sslrootcert=/ca.pem").unwrap();
        assert_eq!(o.tls, PgTls::Off);
        assert!(take_own_params("postgres://u@h/db?sslmode=bogus").is_err());
    }

    #[test]
    fn a_dead_database_is_given_up_on_within_a_minute_unless_the_url_says_otherwise() {
        let mut config = tokio_postgres::Config::from_str("postgres://u@h/db").unwrap();
        with_dead_peer_limits(&mut config);
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(config.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(
            (config.get_keepalives_interval(), config.get_keepalives_retries()),
            (Some(KEEPALIVE_IDLE / 3), Some(3))
        );
        let url =
            "postgres://u@h/db?keepalives_idle=600&tcp_user_timeout=90&keepalives_interval=20&keepalives_retries=9";
        let mut config = tokio_postgres::Config::from_str(url).unwrap();
        with_dead_peer_limits(&mut config);
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(90)));
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(600));
        assert_eq!(
            (config.get_keepalives_interval(), config.get_keepalives_retries()),
            (Some(Duration::from_secs(20)), Some(9))
        );
    }
}

/// The planner settings and the periodic re-planning against the statements they are for:
/// generic plans (what a prepared statement runs after its fifth time) made on a new, empty
/// database, as a new install or a benchmark makes them, and made on a small table that grew.
#[cfg(test)]
mod planner_tests {
    use super::testing::TestDatabase;
    use super::*;

    #[test]
    fn planner_settings_come_first_so_the_url_has_the_last_word_but_on_isolation() {
        let ours = format!("{PLANNER_SETTINGS} {ISOLATION_SETTING}");
        assert_eq!(connection_options(None), ours);
        assert_eq!(connection_options(Some("  ")), ours);
        assert_eq!(
            connection_options(Some("-c enable_hashjoin=on")),
            format!("{PLANNER_SETTINGS} -c enable_hashjoin=on {ISOLATION_SETTING}")
        );
    }

    /// The test database's URL with one more query parameter.
    fn url_with(db: &TestDatabase, param: &str) -> String {
        let sep = if db.url().contains('?') { '&' } else { '?' };
        format!("{}{sep}{param}", db.url())
    }

    /// Prepares `sql` as `name` and answers its generic plan.
    async fn generic_plan(client: &tokio_postgres::Client, name: &str, sql: &str) -> String {
        client
            .batch_execute(&format!("SET plan_cache_mode = force_generic_plan; PREPARE {name} AS {sql}"))
            .await
            .unwrap_or_else(|e| panic!("{}: {sql}", db_error(&e)));
        plan_of(client, name, sql).await
    }

    /// The plan the statement `name` (prepared from `sql`) runs now, each parameter NULL (a
    /// generic plan does not look at them).
    async fn plan_of(client: &tokio_postgres::Client, name: &str, sql: &str) -> String {
        let params = (1..).take_while(|n| sql.contains(&format!("${n}::"))).count();
        let nulls = vec!["NULL"; params].join(", ");
        let rows = client.query(&format!("EXPLAIN EXECUTE {name}({nulls})"), &[]).await.expect("explain");
        rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
    }

    /// `n` pending deliveries more, written straight to the table.
    async fn add_deliveries(admin: &tokio_postgres::Client, from: usize, n: usize) {
        admin
            .execute(
                "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, trigger_type, updated_at) \
                 SELECT 'msg_01JF8Z7Q0000000000000' || i, 'ep_01JF8Z7Q000000000000000000', \
                 'app_01JF8Z7Q000000000000000000', 1, 0, 0, 0 FROM generate_series($1::bigint, $2::bigint) i",
                &[&(from as i64), &((from + n - 1) as i64)],
            )
            .await
            .expect("insert");
    }

    #[tokio::test]
    async fn batches_of_keys_are_looked_up_by_index_whatever_the_statistics() {
        let db = TestDatabase::create().await;
        let store = PgStore::open(db.url()).await.expect("open");
        let client = store.pool.get().await.expect("connection");
        let statements = [
            ("record_successes", queries::RECORD_SUCCESSES.as_str()),
            ("update_deliveries", queries::UPDATE_DELIVERIES.as_str()),
            ("ingest", ingest::INGEST_SQL),
        ];
        for (name, sql) in statements {
            let plan = generic_plan(&client, name, sql).await;
            for bad in ["Hash Join", "Merge Join", "Seq Scan on deliveries", "Seq Scan on messages"] {
                assert!(!plan.contains(bad), "{name} plans a {bad}:\n{plan}");
            }
            assert!(plan.contains("Nested Loop"), "{name}:\n{plan}");
        }
        // `options` in the URL still have the last word.
        let url = url_with(&db, "options=-c%20enable_hashjoin%3Don");
        let store = PgStore::open(&url).await.expect("open with options");
        let client = store.pool.get().await.expect("connection");
        let setting = |name: &'static str| {
            let client = &client;
            async move { client.query_one(&format!("SHOW {name}"), &[]).await.expect("show").get::<_, String>(0) }
        };
        assert_eq!((setting("enable_hashjoin").await, setting("enable_mergejoin").await), ("on".into(), "off".into()));
    }

    /// A recovery round reads an endpoint's failed deliveries from where the last stopped, in
    /// message order, through the index that gives them so: no sort of all those left.
    #[tokio::test]
    async fn a_recovery_round_reads_from_where_the_last_stopped() {
        let db = TestDatabase::create().await;
        let store = PgStore::open(db.url()).await.expect("open");
        let client = store.pool.get().await.expect("connection");
        client
            .batch_execute(
                "INSERT INTO messages (id, app_id, event_type, payload, created_at) \
                 SELECT 'msg_' || lpad(i::text, 26, '0'), 'app_' || (i % 50), 'a.b', '{}', i \
                 FROM generate_series(1, 50000) i; \
                 INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, trigger_type, updated_at) \
                 SELECT 'msg_' || lpad(i::text, 26, '0'), 'ep_' || (i % 500), 'app_' || (i % 50), \
                 2 - (i % 3 = 0)::int, 1, 0, 0 FROM generate_series(1, 50000) i; \
                 ANALYZE messages; ANALYZE deliveries",
            )
            .await
            .expect("fill");
        let pick = format!("{} LIMIT $7", crate::queries_shared::RECOVERABLE.replace('?', "$"));
        client
            .batch_execute(&format!(
                "BEGIN; {}; SET plan_cache_mode = force_generic_plan; \
                 PREPARE pick(text, text, bigint, bigint, bigint, text, bigint) AS {pick}",
                queries::RECOVERY_PLANNER
            ))
            .await
            .unwrap_or_else(|e| panic!("{}: {pick}", db_error(&e)));
        let rows = client
            .query("EXPLAIN EXECUTE pick('app_1', 'ep_1', 0, 99999, 0, 'msg_', 1000)", &[])
            .await
            .expect("explain");
        let plan = rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n");
        assert!(plan.contains("deliveries_by_endpoint_msg"), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
    }

    /// A database (or role) whose default isolation is SERIALIZABLE: hooklane's connections
    /// run READ COMMITTED all the same, which its claims are written for (a claim racing
    /// another node's failed with `could not serialize access due to concurrent update`),
    /// and `options` in the URL cannot change that.
    #[tokio::test]
    async fn transactions_are_read_committed_whatever_the_database_default() {
        let db = TestDatabase::create().await;
        let (admin, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        let alter = format!("ALTER DATABASE \"{}\" SET default_transaction_isolation = 'serializable'", db.name());
        admin.batch_execute(&alter).await.expect("alter database");
        async fn isolation(client: &mut tokio_postgres::Client) -> (String, String) {
            let default = client.query_one("SHOW default_transaction_isolation", &[]).await.expect("show");
            let tx = client.transaction().await.expect("begin");
            let current = tx.query_one("SHOW transaction_isolation", &[]).await.expect("show");
            (default.get(0), current.get(0))
        }
        let (mut plain, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        let serializable = ("serializable".to_string(), "serializable".to_string());
        assert_eq!(isolation(&mut plain).await, serializable, "the database's default, for other clients");
        let read_committed = ("read committed".to_string(), "read committed".to_string());
        for url in [db.url().to_string(), url_with(&db, "options=-c%20default_transaction_isolation%3Dserializable")] {
            let store = PgStore::open(&url).await.expect("open");
            let mut client = store.pool.get().await.expect("connection");
            assert_eq!(isolation(&mut client).await, read_committed, "{url}");
        }
    }

    /// A plan made while `deliveries` held a few dozen rows reads all of them for every key;
    /// after the connection has been taken from the pool `REPLAN_EVERY` times it is made
    /// again, from the table's present size, and looks each key up by the primary key.
    #[tokio::test]
    async fn plans_made_on_a_small_table_are_made_again_as_it_grows() {
        let db = TestDatabase::create().await;
        let (admin, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        // One connection, so every take is of the same one.
        let store = PgStore::open(&url_with(&db, "pool_max_size=1")).await.expect("open");
        admin.batch_execute("ALTER TABLE deliveries SET (autovacuum_enabled = false)").await.expect("alter");
        add_deliveries(&admin, 0, 60).await;
        admin.batch_execute("VACUUM ANALYZE deliveries").await.expect("analyze");
        let (name, sql) = ("update_deliveries", queries::UPDATE_DELIVERIES.as_str());
        let small = generic_plan(&store.pool.get().await.expect("connection"), name, sql).await;
        assert!(small.contains("Seq Scan on deliveries"), "a plan made on 60 rows reads them all:\n{small}");
        add_deliveries(&admin, 60, 100_000).await;
        let stale = plan_of(&store.pool.get().await.expect("connection"), name, sql).await;
        assert!(stale.contains("Seq Scan on deliveries"), "the plan is kept as the table grows:\n{stale}");
        for _ in 0..REPLAN_EVERY {
            drop(store.pool.get().await.expect("connection"));
        }
        let fresh = plan_of(&store.pool.get().await.expect("connection"), name, sql).await;
        assert!(!fresh.contains("Seq Scan on deliveries"), "made again from the present size:\n{fresh}");
        assert!(fresh.contains("Index Scan using deliveries_pkey on deliveries"), "{fresh}");
    }
}
