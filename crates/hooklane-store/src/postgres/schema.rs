//! Schema migrations for the PostgreSQL store. Pending entries run in order, in one
//! transaction, under an advisory lock (several nodes may start at once);
//! `schema_migrations` remembers which ones ran.

use deadpool_postgres::Client;

use super::db_err;
use crate::{StoreError, StoreResult};

/// `pg_advisory_xact_lock` key serializing migrations ("hooklane" in ASCII).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6c61_6e65;

/// The same tables as the SQLite store. Times are unix milliseconds (BIGINT);
/// JSON-valued columns hold JSON text, except the message channels and tags that filters
/// search, which are `TEXT[]`.
///
/// Identifier and name columns use the "C" collation: pagination orders and compares them
/// byte-wise, as SQLite does, whatever the database's locale.
///
/// `deliveries.due_at` is when a poller may next take the row: the next attempt time for a
/// waiting row, the lease expiry for a leased one (`leased`). One partial index over
/// pending rows serves both "what is due" and "whose lease ran out" (since migration 5
/// `deliveries_pending`, by endpoint then due time).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE applications (
    id TEXT COLLATE "C" PRIMARY KEY,
    uid TEXT COLLATE "C" UNIQUE,
    name TEXT NOT NULL,
    rate_limit BIGINT,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE event_types (
    name TEXT COLLATE "C" PRIMARY KEY,
    description TEXT NOT NULL,
    archived BOOLEAN NOT NULL,
    deprecated BOOLEAN NOT NULL,
    feature_flag TEXT,
    schemas TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE endpoints (
    id TEXT COLLATE "C" PRIMARY KEY,
    app_id TEXT COLLATE "C" NOT NULL,
    uid TEXT COLLATE "C",
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    version INTEGER NOT NULL,
    filter_types TEXT,
    channels TEXT,
    disabled BOOLEAN NOT NULL,
    rate_limit BIGINT,
    metadata TEXT NOT NULL,
    headers TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secrets TEXT NOT NULL,
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT endpoints_app_uid_key UNIQUE (app_id, uid)
);
CREATE INDEX endpoints_by_app ON endpoints (app_id, id);
CREATE TABLE messages (
    id TEXT COLLATE "C" PRIMARY KEY,
    app_id TEXT COLLATE "C" NOT NULL,
    event_type TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C",
    payload TEXT NOT NULL,
    channels TEXT[],
    tags TEXT[],
    created_at BIGINT NOT NULL,
    CONSTRAINT messages_app_event_id_key UNIQUE (app_id, event_id)
);
CREATE INDEX messages_by_app ON messages (app_id, id);
CREATE TABLE deliveries (
    msg_id TEXT COLLATE "C" NOT NULL,
    endpoint_id TEXT COLLATE "C" NOT NULL,
    app_id TEXT COLLATE "C" NOT NULL,
    status INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    due_at BIGINT,
    leased BOOLEAN NOT NULL DEFAULT false,
    trigger_type INTEGER NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (msg_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE status = 1;
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, status);
CREATE TABLE attempts (
    id TEXT COLLATE "C" PRIMARY KEY,
    msg_id TEXT COLLATE "C" NOT NULL,
    endpoint_id TEXT COLLATE "C" NOT NULL,
    app_id TEXT COLLATE "C" NOT NULL,
    url TEXT NOT NULL,
    status INTEGER NOT NULL,
    response_status INTEGER NOT NULL,
    response TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    trigger_type INTEGER NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX attempts_by_msg ON attempts (msg_id, id);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
CREATE TABLE tokens (
    hash TEXT COLLATE "C" PRIMARY KEY,
    app_id TEXT COLLATE "C",
    created_at BIGINT NOT NULL
);
CREATE TABLE idempotency_keys (
    key TEXT COLLATE "C" PRIMARY KEY,
    done BOOLEAN NOT NULL,
    status INTEGER,
    body BYTEA,
    expires_at BIGINT NOT NULL
);
"#,
    r#"
CREATE TABLE endpoint_rate (
    endpoint_id TEXT COLLATE "C" PRIMARY KEY,
    next_free BIGINT NOT NULL
);
"#,
    // --- inbound sources: the media type and extra headers of forwarded messages, the
    // sources, and the record of every request to their ingest URLs.
    r#"
ALTER TABLE messages ADD COLUMN content_type TEXT;
ALTER TABLE messages ADD COLUMN headers TEXT;
CREATE TABLE sources (
    id TEXT COLLATE "C" PRIMARY KEY,
    app_id TEXT COLLATE "C" NOT NULL UNIQUE,
    name TEXT NOT NULL,
    verification TEXT NOT NULL,
    deduplication TEXT,
    allow_networks TEXT NOT NULL,
    max_body_bytes BIGINT,
    event_destinations TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE inbound_requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    source_id TEXT COLLATE "C" NOT NULL,
    status INTEGER NOT NULL,
    http_status INTEGER NOT NULL,
    reason TEXT,
    remote_addr TEXT,
    headers TEXT NOT NULL,
    body BYTEA NOT NULL,
    body_size BIGINT NOT NULL,
    dedup_key TEXT,
    msg_id TEXT COLLATE "C",
    received_at BIGINT NOT NULL
);
CREATE INDEX inbound_requests_by_source ON inbound_requests (source_id, id);
"#,
    // Operators' view: the headers each attempt was sent with (JSON text, NULL for
    // attempts recorded before), and attempts by time for the dashboard's statistics.
    r#"
ALTER TABLE attempts ADD COLUMN request_headers TEXT;
CREATE INDEX attempts_by_app_time ON attempts (app_id, created_at);
"#,
    // Pending deliveries by endpoint, then due time, replacing `deliveries_due (due_at)`:
    // claims and the poller's "when next" walk it endpoint by endpoint (a loose index scan),
    // so an endpoint the poller skips (saturated, or its circuit open) costs one seek however
    // many deliveries it has waiting, where the scan in due order had to step over all of
    // them. Replaced rather than added: every index is one more write per delivery.
    r#"
CREATE INDEX deliveries_pending ON deliveries (endpoint_id, due_at) WHERE status = 1;
DROP INDEX deliveries_due;
"#,
    // Housekeeping: expired idempotency keys and old inbound request records are deleted
    // in time order (Svix SDKs send a key with every POST: without this the table only grew).
    r#"
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
CREATE INDEX inbound_requests_by_time ON inbound_requests (received_at);
"#,
    // Pulling (polling, long-polling, Server-Sent Events): consumers walk an application's
    // messages in the order they became durable, which ids do not give (an id is made before
    // its write, and writes can commit out of id order). A message's place is `(xid, seq)`:
    // the id of the transaction that wrote it, then a sequence number (in write order within
    // that transaction). Sequence numbers alone would not do either: they are taken at
    // insert, not at commit, so a smaller one can commit after a larger one is read. Readers
    // take only rows whose `xid` lies below their snapshot's xmin: every transaction below it
    // has finished, so nothing can ever appear there later (see `read_message_events`).
    // `xid8` (64 bits, epoch included) never wraps around; existing messages all get this
    // migration's transaction id, in `seq` order. Server-side subscriptions keep their
    // position.
    r#"
ALTER TABLE messages ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX messages_events ON messages (app_id, xid, seq);
CREATE TABLE events_subscriptions (
    app_id TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    major BIGINT NOT NULL,
    minor BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, id)
);
"#,
    // Application tokens expire (Svix's app-portal `expiry`, 7 days by default) and can be
    // revoked; tokens made before have none and stay valid until revoked.
    r#"
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
"#,
    // A message whose content was deleted (`DELETE …/msg/{id}/content`) is never sent again.
    r#"
ALTER TABLE messages ADD COLUMN expunged BOOLEAN NOT NULL DEFAULT false;
"#,
    // An idempotency key remembers the request it was first used for (a SHA-256 of its
    // body): the same key with another body is refused rather than answered with the first
    // request's response. Keys taken before have none and are not checked.
    r#"
ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT;
"#,
    // The database's instance secret, shared by every node (see `instance_secret`).
    r#"
CREATE TABLE instance_secrets (
    name TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);
"#,
    // An endpoint's payload filter and transform (JSON text, as the other JSON columns).
    r#"
ALTER TABLE endpoints ADD COLUMN payload_filter TEXT, ADD COLUMN transform TEXT;
"#,
    // FIFO lanes (`postgres::lanes`; the SQLite migration says why these indexes).
    r#"
ALTER TABLE endpoints ADD COLUMN fifo BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN ordering_key TEXT;
ALTER TABLE sources ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN lane_seq BIGINT;
ALTER TABLE deliveries ADD COLUMN lane_key TEXT NOT NULL DEFAULT '';
CREATE INDEX deliveries_lane ON deliveries (endpoint_id, lane_key, lane_seq) WHERE status = 1 AND lane_seq IS NOT NULL;
CREATE INDEX deliveries_lane_awake ON deliveries (endpoint_id, lane_key, lane_seq)
    WHERE status = 1 AND lane_seq IS NOT NULL AND due_at IS NOT NULL;
"#,
    // Background tasks (the SQLite migration says what for).
    r#"
CREATE TABLE background_tasks (
    id TEXT COLLATE "C" PRIMARY KEY,
    app_id TEXT COLLATE "C" NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX background_tasks_by_app ON background_tasks (app_id, id);
CREATE INDEX background_tasks_by_time ON background_tasks (updated_at);
"#,
    // Scheduled messages (the SQLite migration says what for).
    r#"
ALTER TABLE deliveries ADD COLUMN not_before BIGINT;
"#,
    // Integrations (the SQLite migration says what for).
    r#"
CREATE TABLE integrations (
    id TEXT COLLATE "C" PRIMARY KEY,
    app_id TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    feature_flags TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX integrations_by_app ON integrations (app_id, id);
ALTER TABLE tokens ADD COLUMN integration_id TEXT COLLATE "C";
CREATE INDEX tokens_by_integration ON tokens (integration_id) WHERE integration_id IS NOT NULL;
"#,
    // Feature flags of application tokens (the SQLite migration says what for).
    r#"
ALTER TABLE tokens ADD COLUMN feature_flags TEXT;
"#,
    // Capabilities of application tokens (the SQLite migration says what for).
    r#"
ALTER TABLE tokens ADD COLUMN capabilities TEXT;
"#,
    // Running background tasks (the SQLite migration says what for).
    r#"
CREATE INDEX background_tasks_running ON background_tasks (updated_at) WHERE status = 'running';
"#,
    // An endpoint's JavaScript transformation (JSON text, as the other JSON columns).
    r#"
ALTER TABLE endpoints ADD COLUMN transformation TEXT;
"#,
    // A source's own answer to accepted requests (JSON); NULL: hooklane's.
    r#"
ALTER TABLE sources ADD COLUMN response TEXT;
"#,
    // An endpoint's own retry schedule: its waits in milliseconds (JSON); NULL: the server's.
    r#"
ALTER TABLE endpoints ADD COLUMN retry_schedule TEXT;
"#,
    // An endpoint's OAuth settings (JSON); NULL: none.
    r#"
ALTER TABLE endpoints ADD COLUMN oauth TEXT;
"#,
    // Whether an endpoint's deliveries are held (paused) rather than sent.
    r#"
ALTER TABLE endpoints ADD COLUMN paused BOOLEAN NOT NULL DEFAULT FALSE;
"#,
    // An endpoint's TLS client identity and server CA (JSON); NULL: none.
    r#"
ALTER TABLE endpoints ADD COLUMN mtls TEXT;
"#,
    // Whether an endpoint is a polling endpoint: read through the poller, never sent to.
    r#"
ALTER TABLE endpoints ADD COLUMN polling BOOLEAN NOT NULL DEFAULT FALSE;
"#,
    // The polling endpoint a token is the key of (it may read that endpoint's poller only);
    // NULL for every other token.
    r#"
ALTER TABLE tokens ADD COLUMN endpoint_id TEXT;
CREATE INDEX tokens_by_polling_endpoint ON tokens (app_id, endpoint_id) WHERE endpoint_id IS NOT NULL;
"#,
    // Rate buckets in microseconds (a rate above 333 a second does not divide a
    // millisecond): an endpoint's next free send slot.
    r#"
ALTER TABLE endpoint_rate ADD COLUMN next_free_us BIGINT;
"#, // Accepted inbound requests whose fan-out to event types is still to be done (recorded
    // with a reason and a message): found by the sweep that completes them.
    r#"
CREATE INDEX inbound_requests_unfinished ON inbound_requests (received_at)
    WHERE status = 0 AND reason IS NOT NULL AND msg_id IS NOT NULL;
"#, // How many times each server-side subscription was sought (set without a read): a read
    // that started before a seek does not move the subscription past it.
    r#"
ALTER TABLE events_subscriptions ADD COLUMN seeks BIGINT NOT NULL DEFAULT 0;
"#,
    // A source's verification replaced by a rotation, accepted until it ends (JSON of
    // `PreviousVerification`); NULL: none.
    r#"
ALTER TABLE sources ADD COLUMN previous_verification TEXT;
"#,
    // The session an application token was issued for (Svix's `sessionId`), so that
    // expiring an application's tokens can name the sessions to end; NULL: none.
    r#"
ALTER TABLE tokens ADD COLUMN session_id TEXT;
"#,
    // Event types behind several feature flags (a JSON array; `feature_flag` keeps the
    // first, for nodes of an older version), and their group (Svix's `groupName`).
    r#"
ALTER TABLE event_types ADD COLUMN feature_flags TEXT;
ALTER TABLE event_types ADD COLUMN group_name TEXT;
UPDATE event_types SET feature_flags = json_build_array(feature_flag)::text WHERE feature_flag IS NOT NULL;
"#,
    // The inbound request records of a message, found when its content is deleted (their
    // body and headers are that content as the provider sent it).
    r#"
CREATE INDEX inbound_requests_by_msg ON inbound_requests (msg_id) WHERE msg_id IS NOT NULL;
"#,
    // A scheduled message's time (Svix's `deliverAt`), so that a delivery added to it later
    // (a replay, a recovery) waits for it too, and reads show it. NULL for the others.
    r#"
ALTER TABLE messages ADD COLUMN deliver_at BIGINT;
"#,
    // Whether a failure of the delivery was reported to operational webhooks (`failing`,
    // `exhausted`), so that its next success is reported as `recovered` even after a resend
    // or a recovery started its attempts over.
    r#"
ALTER TABLE deliveries ADD COLUMN failure_told BOOLEAN NOT NULL DEFAULT false;
"#,
    // Rate limits within what Svix's SDKs read (16 bits): the API took up to 1,000,000,
    // and one such value failed every SDK read of a list holding it.
    r#"
UPDATE applications SET rate_limit = 65535 WHERE rate_limit > 65535;
UPDATE endpoints SET rate_limit = 65535 WHERE rate_limit > 65535;
"#,
    // Expired tokens are found by their expiry: housekeeping looks for them every round, and
    // every portal login adds one that lives a week.
    r#"
CREATE INDEX tokens_by_expiry ON tokens (expires_at);
"#,
    // An endpoint's deliveries of one status in message order: a recovery walks its failed
    // ones from where its last round stopped, which `(endpoint_id, status)` could only give
    // by reading every one left at every round (a recovery of a million, half a billion rows).
    // It serves every use of the index it replaces.
    r#"
CREATE INDEX deliveries_by_endpoint_msg ON deliveries (endpoint_id, status, msg_id);
DROP INDEX deliveries_by_endpoint;
"#,
];

/// The row of `instance_secrets` that [`crate::Store::instance_secret`] answers.
const INSTANCE_SECRET: &str = "instance";

/// The database's instance secret, made (from the operating system's randomness) by the
/// first node that asks for it; nodes starting at once all read the one that won.
pub async fn instance_secret(client: &Client) -> StoreResult<[u8; 32]> {
    let fresh = hooklane_core::signing::random_bytes::<32>();
    client
        .execute(
            "INSERT INTO instance_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&INSTANCE_SECRET, &&fresh[..]],
        )
        .await
        .map_err(db_err)?;
    let row = client
        .query_one("SELECT value FROM instance_secrets WHERE name = $1", &[&INSTANCE_SECRET])
        .await
        .map_err(db_err)?;
    let value: Vec<u8> = row.try_get(0).map_err(db_err)?;
    value.try_into().map_err(|_| StoreError::Database("the instance secret is not 32 bytes long".into()))
}

/// The row of `instance_secrets` that holds the system identifier of the cluster the
/// database was last opened on (8 bytes, big-endian): not a secret, kept beside it.
const CLUSTER: &str = "cluster";

/// What [`follow_restore`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// The database is on the cluster it was on (or is opened for the first time).
    SameCluster,
    /// It was moved to another cluster (a dump loaded, `pg_upgrade`) whose transaction
    /// ids go on from where the old one's stood: nothing needed changing.
    MovedInOrder,
    /// It was moved to a cluster whose transaction ids are behind those its messages were
    /// written under: they were renumbered, and so were the positions kept for readers.
    Renumbered,
}

/// Keeps the stream readable when the database was restored into another cluster.
///
/// Stream positions are built on transaction ids (`messages.xid`, see the migration that
/// made it), which a `pg_dump` loaded into another cluster carries over as they were,
/// while that cluster's own ids may be far behind them: its readers, which take only rows
/// below their snapshot's xmin, would find none of the old messages until its ids caught up
/// (possibly months later), then get them all at once, out of order. So the cluster's
/// system identifier is kept, and when it changes and some message's id lies at or above
/// the current one, every message is renumbered to this transaction's id, in its `seq`
/// order, and the positions kept for readers (subscriptions, polling endpoints' consumers
/// and starts) are moved to just before the first message they had not read: nothing is
/// skipped, though a reader may get again what it read in the same moments. Iterators that
/// clients hold no longer decode (the instance secret that keys them is made anew) and are
/// answered 422: such a client reads afresh.
/// One transaction, under the migration lock (nodes starting together do it once); a
/// cluster that does not tell its identifier (a restricted managed service) is left as it
/// is, with a warning.
pub async fn follow_restore(client: &mut Client) -> StoreResult<Restore> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db_err)?;
    let cluster: i64 = match tx.query_one("SELECT system_identifier FROM pg_control_system()", &[]).await {
        Ok(row) => row.try_get(0).map_err(db_err)?,
        Err(e) => {
            tracing::warn!(error = %db_err(e), "the cluster's identifier cannot be read: a restore into another \
                cluster will not be detected (see the README's backups)");
            return Ok(Restore::SameCluster);
        }
    };
    let known =
        tx.query_opt("SELECT value FROM instance_secrets WHERE name = $1", &[&CLUSTER]).await.map_err(db_err)?;
    let known: Option<Vec<u8>> = known.map(|row| row.try_get(0)).transpose().map_err(db_err)?;
    if known.as_deref() == Some(&cluster.to_be_bytes()[..]) {
        return Ok(Restore::SameCluster);
    }
    let outcome = match known {
        None => Restore::SameCluster,
        Some(_) => renumber_if_ahead(&tx).await?,
    };
    tx.execute(
        "INSERT INTO instance_secrets (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        &[&CLUSTER, &&cluster.to_be_bytes()[..]],
    )
    .await
    .map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    Ok(outcome)
}

/// See [`follow_restore`]: renumbers the messages and moves the readers' positions when any
/// message's transaction id is at or above this transaction's.
async fn renumber_if_ahead(tx: &tokio_postgres::Transaction<'_>) -> StoreResult<Restore> {
    // Positions kept for readers count too: a caught-up reader's stands at a snapshot's
    // xmin, beyond every message (all of them pruned, say).
    let ahead: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE xid >= pg_current_xact_id()) \
             OR EXISTS (SELECT 1 FROM events_subscriptions WHERE major >= pg_current_xact_id()::text::bigint)",
            &[],
        )
        .await
        .map_err(db_err)?
        .try_get(0)
        .map_err(db_err)?;
    if !ahead {
        return Ok(Restore::MovedInOrder);
    }
    // Positions first, while the messages still carry the ids they were read under: each
    // goes to just before the first message (by `seq`) it had not read, or past all of its
    // application's when it had read them all.
    let positions = tx
        .execute(
            "UPDATE events_subscriptions s SET major = pg_current_xact_id()::text::bigint, minor = COALESCE( \
                 (SELECT min(m.seq) - 1 FROM messages m WHERE m.app_id = s.app_id \
                  AND (m.xid, m.seq) > (s.major::text::xid8, s.minor)), \
                 (SELECT max(m.seq) FROM messages m WHERE m.app_id = s.app_id), 0)",
            &[],
        )
        .await
        .map_err(db_err)?;
    let messages = tx.execute("UPDATE messages SET xid = pg_current_xact_id()", &[]).await.map_err(db_err)?;
    // Iterators clients hold from before name positions of the old numbering, which the new
    // one would reach one day and read on from, past messages written since. A new instance
    // secret (it keys position tokens alone) makes them fail to decode for good: 422.
    let fresh = hooklane_core::signing::random_bytes::<32>();
    tx.execute("UPDATE instance_secrets SET value = $2 WHERE name = $1", &[&INSTANCE_SECRET, &&fresh[..]])
        .await
        .map_err(db_err)?;
    tracing::warn!(
        messages,
        positions,
        "this database was restored into another cluster, whose transaction ids are behind its messages': \
         they were renumbered so that readers find them; iterators held by clients are refused (422): read afresh"
    );
    Ok(Restore::Renumbered)
}

/// Brings the schema up to date; returns how many migrations ran.
pub async fn migrate(client: &mut Client) -> StoreResult<usize> {
    let tx = client.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await
    .map_err(db_err)?;
    let done: i32 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await.map_err(db_err)?.get(0);
    if done as usize > MIGRATIONS.len() {
        tracing::warn!(
            database = done,
            known = MIGRATIONS.len(),
            "the database schema is newer than this hooklane; running anyway"
        );
    }
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= done {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Database(format!("migration {version} failed: {}", db_err(e))))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &hooklane_core::Utc::now().timestamp_millis()],
        )
        .await
        .map_err(db_err)?;
        applied += 1;
    }
    tx.commit().await.map_err(db_err)?;
    Ok(applied)
}
