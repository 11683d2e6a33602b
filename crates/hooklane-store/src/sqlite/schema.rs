//! Schema migrations for the SQLite store. Each entry runs once, in order, inside a
//! transaction; `schema_migrations` remembers which ones ran.

use rusqlite::Connection;

use crate::StoreError;

/// Times are unix milliseconds. JSON-valued columns hold JSON text.
///
/// `deliveries.due_at` is when a poller may next take the row: the next attempt time for a
/// waiting row, the lease expiry for a leased one (`leased = 1`). One partial index over
/// pending rows then serves both "what is due" and "whose lease ran out" (since migration 5
/// `deliveries_pending`, by endpoint then due time).
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE applications (
    id TEXT PRIMARY KEY,
    uid TEXT UNIQUE,
    name TEXT NOT NULL,
    rate_limit INTEGER,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE event_types (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    archived INTEGER NOT NULL,
    deprecated INTEGER NOT NULL,
    feature_flag TEXT,
    schemas TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE endpoints (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    uid TEXT,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    version INTEGER NOT NULL,
    filter_types TEXT,
    channels TEXT,
    disabled INTEGER NOT NULL,
    rate_limit INTEGER,
    metadata TEXT NOT NULL,
    headers TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secrets TEXT NOT NULL,
    failing_since INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (app_id, uid)
);
CREATE INDEX endpoints_by_app ON endpoints (app_id, id);
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_id TEXT,
    payload TEXT NOT NULL,
    channels TEXT,
    tags TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX messages_by_app ON messages (app_id, id);
-- Partial: most messages have no eventId, and each index entry costs the writer time.
CREATE UNIQUE INDEX messages_by_event_id ON messages (app_id, event_id) WHERE event_id IS NOT NULL;
CREATE TABLE deliveries (
    msg_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    due_at INTEGER,
    leased INTEGER NOT NULL DEFAULT 0,
    trigger_type INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (msg_id, endpoint_id)
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE status = 1;
-- Without status: a delivery changing state then leaves this index alone.
CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id);
CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    msg_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    url TEXT NOT NULL,
    status INTEGER NOT NULL,
    response_status INTEGER NOT NULL,
    response TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    trigger_type INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX attempts_by_msg ON attempts (msg_id, id);
CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    app_id TEXT,
    created_at INTEGER NOT NULL
);
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    done INTEGER NOT NULL,
    status INTEGER,
    body BLOB,
    expires_at INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE endpoint_rate (
    endpoint_id TEXT PRIMARY KEY,
    next_free INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // --- inbound sources: the media type and extra headers of forwarded messages, the
    // sources, and the record of every request to their ingest URLs.
    r#"
ALTER TABLE messages ADD COLUMN content_type TEXT;
ALTER TABLE messages ADD COLUMN headers TEXT;
CREATE TABLE sources (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    verification TEXT NOT NULL,
    deduplication TEXT,
    allow_networks TEXT NOT NULL,
    max_body_bytes INTEGER,
    event_destinations TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE inbound_requests (
    id TEXT PRIMARY KEY,
    source_id TEXT NOT NULL,
    status INTEGER NOT NULL,
    http_status INTEGER NOT NULL,
    reason TEXT,
    remote_addr TEXT,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    body_size INTEGER NOT NULL,
    dedup_key TEXT,
    msg_id TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX inbound_requests_by_source ON inbound_requests (source_id, id);
"#,
    // Operators' view: the headers each attempt was sent with (JSON object, NULL for
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
    // messages in the order they were written, which ids do not give (an id is made before
    // its write, and writes can land out of id order). The table is rebuilt so that its
    // rowid becomes `seq INTEGER PRIMARY KEY AUTOINCREMENT`: a plain rowid is given again
    // after the newest rows are deleted (a deleted application, retention), and a reader
    // holding that position would then pass over the new messages. The single writer gives
    // sequence numbers in commit order. `messages_events (app_id)` is `(app_id, seq)`: every
    // index ends with the rowid. Server-side subscriptions keep their position.
    r#"
CREATE TABLE messages_seq (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    app_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_id TEXT,
    payload TEXT NOT NULL,
    channels TEXT,
    tags TEXT,
    created_at INTEGER NOT NULL,
    content_type TEXT,
    headers TEXT
);
INSERT INTO messages_seq (id, app_id, event_type, event_id, payload, channels, tags, created_at, content_type, headers)
    SELECT id, app_id, event_type, event_id, payload, channels, tags, created_at, content_type, headers
    FROM messages ORDER BY rowid;
DROP TABLE messages;
ALTER TABLE messages_seq RENAME TO messages;
CREATE INDEX messages_by_app ON messages (app_id, id);
CREATE UNIQUE INDEX messages_by_event_id ON messages (app_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX messages_events ON messages (app_id);
CREATE TABLE events_subscriptions (
    app_id TEXT NOT NULL,
    id TEXT NOT NULL,
    position INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, id)
) WITHOUT ROWID;
"#,
    // Application tokens expire (Svix's app-portal `expiry`, 7 days by default) and can be
    // revoked; tokens made before have none and stay valid until revoked.
    r#"
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
"#,
    // A message whose content was deleted (`DELETE …/msg/{id}/content`) is never sent again.
    r#"
ALTER TABLE messages ADD COLUMN expunged INTEGER NOT NULL DEFAULT 0;
"#,
    // An idempotency key remembers the request it was first used for (a SHA-256 of its
    // body): the same key with another body is refused rather than answered with the first
    // request's response. Keys taken before have none and are not checked.
    r#"
ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT;
"#,
    // The database's instance secret (see `instance_secret`).
    r#"
CREATE TABLE instance_secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"#,
    // An endpoint's payload filter and transform (JSON documents).
    r#"
ALTER TABLE endpoints ADD COLUMN payload_filter TEXT;
ALTER TABLE endpoints ADD COLUMN transform TEXT;
"#,
    // FIFO lanes (`crate::sqlite::lanes`): an endpoint's ordering, a message's ordering key,
    // and each delivery's lane (its message's key) and place in it (its message's `seq`;
    // NULL outside lanes). Both indexes hold lane rows only, so concurrent endpoints'
    // deliveries pay nothing for them: the first finds a lane's head, the second its rows
    // not parked (heads, new arrivals, those in flight), which stay few however long the
    // lanes grow.
    r#"
ALTER TABLE endpoints ADD COLUMN fifo INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN ordering_key TEXT;
ALTER TABLE sources ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN lane_seq INTEGER;
ALTER TABLE deliveries ADD COLUMN lane_key TEXT NOT NULL DEFAULT '';
CREATE INDEX deliveries_lane ON deliveries (endpoint_id, lane_key, lane_seq) WHERE status = 1 AND lane_seq IS NOT NULL;
CREATE INDEX deliveries_lane_awake ON deliveries (endpoint_id, lane_key, lane_seq)
    WHERE status = 1 AND lane_seq IS NOT NULL AND due_at IS NOT NULL;
"#,
    // Background tasks (Svix's `/background-task`): what a recovery or a replay did, listed
    // by id (which begins with the time), per application for application tokens, and
    // deleted by age.
    r#"
CREATE TABLE background_tasks (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX background_tasks_by_app ON background_tasks (app_id, id);
CREATE INDEX background_tasks_by_time ON background_tasks (updated_at);
"#,
    // Scheduled messages (Svix's `deliverAt`): a delivery is not sent before `not_before`.
    // Kept apart from `due_at`, which pauses, retries and lanes move: making paused
    // deliveries due at once (a fixed endpoint) must not send a scheduled one early. NULL
    // for every delivery not scheduled.
    r#"
ALTER TABLE deliveries ADD COLUMN not_before INTEGER;
"#,
    // Integrations (Svix's): named credentials of an application for third parties. An
    // integration's key is a row of `tokens` that names it, so every token lookup finds it
    // and rotating the key replaces that row.
    r#"
CREATE TABLE integrations (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    name TEXT NOT NULL,
    feature_flags TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX integrations_by_app ON integrations (app_id, id);
ALTER TABLE tokens ADD COLUMN integration_id TEXT;
CREATE INDEX tokens_by_integration ON tokens (integration_id) WHERE integration_id IS NOT NULL;
"#,
    // Svix's feature flags of application tokens (app-portal tokens, integration keys): a
    // JSON list of the flags whose event types the token sees; NULL for none.
    r#"
ALTER TABLE tokens ADD COLUMN feature_flags TEXT;
"#,
    // Svix's app-portal capabilities of application tokens: a JSON list of what the token
    // may do; NULL for a token that may do everything in its application.
    r#"
ALTER TABLE tokens ADD COLUMN capabilities TEXT;
"#,
    // Background tasks still running, for the housekeeping that looks for those whose node
    // stopped beating for them (every node, every minute) among 90 days of finished ones.
    r#"
CREATE INDEX background_tasks_running ON background_tasks (updated_at) WHERE status = 'running';
"#,
    // An endpoint's JavaScript transformation (Svix's): code, enabled, variables, as JSON.
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
ALTER TABLE endpoints ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
"#,
    // An endpoint's TLS client identity and server CA (JSON); NULL: none.
    r#"
ALTER TABLE endpoints ADD COLUMN mtls TEXT;
"#,
    // Whether an endpoint is a polling endpoint: read through the poller, never sent to.
    r#"
ALTER TABLE endpoints ADD COLUMN polling INTEGER NOT NULL DEFAULT 0;
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
ALTER TABLE endpoint_rate ADD COLUMN next_free_us INTEGER;
"#, // Accepted inbound requests whose fan-out to event types is still to be done (recorded
    // with a reason and a message): found by the sweep that completes them.
    r#"
CREATE INDEX inbound_requests_unfinished ON inbound_requests (received_at)
    WHERE status = 0 AND reason IS NOT NULL AND msg_id IS NOT NULL;
"#, // How many times each server-side subscription was sought (set without a read): a read
    // that started before a seek does not move the subscription past it.
    r#"
ALTER TABLE events_subscriptions ADD COLUMN seeks INTEGER NOT NULL DEFAULT 0;
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
UPDATE event_types SET feature_flags = json_array(feature_flag) WHERE feature_flag IS NOT NULL;
"#,
    // The inbound request records of a message, found when its content is deleted (their
    // body and headers are that content as the provider sent it).
    r#"
CREATE INDEX inbound_requests_by_msg ON inbound_requests (msg_id) WHERE msg_id IS NOT NULL;
"#,
    // A scheduled message's time (Svix's `deliverAt`), so that a delivery added to it later
    // (a replay, a recovery) waits for it too, and reads show it. NULL for the others.
    r#"
ALTER TABLE messages ADD COLUMN deliver_at INTEGER;
"#,
    // Whether a failure of the delivery was reported to operational webhooks (`failing`,
    // `exhausted`), so that its next success is reported as `recovered` even after a resend
    // or a recovery started its attempts over.
    r#"
ALTER TABLE deliveries ADD COLUMN failure_told INTEGER NOT NULL DEFAULT 0;
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
];

/// The row of `instance_secrets` that [`crate::Store::instance_secret`] answers.
const INSTANCE_SECRET: &str = "instance";

/// The database's instance secret, made (from the operating system's randomness) the first
/// time it is asked for. The caller makes the write durable before handing anything out
/// that depends on it: a secret lost in a crash would invalidate what was handed out.
pub fn instance_secret(conn: &Connection) -> Result<[u8; 32], StoreError> {
    let db = |e: rusqlite::Error| StoreError::Database(e.to_string());
    let fresh = hooklane_core::signing::random_bytes::<32>();
    conn.execute(
        "INSERT OR IGNORE INTO instance_secrets (name, value) VALUES (?1, ?2)",
        rusqlite::params![INSTANCE_SECRET, &fresh[..]],
    )
    .map_err(db)?;
    let value: Vec<u8> = conn
        .query_row("SELECT value FROM instance_secrets WHERE name = ?1", [INSTANCE_SECRET], |r| r.get(0))
        .map_err(db)?;
    value.try_into().map_err(|_| StoreError::Database("the instance secret is not 32 bytes long".into()))
}

pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    let db = |e: rusqlite::Error| StoreError::Database(e.to_string());
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(db)?;
    let done: i64 =
        conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| r.get(0)).map_err(db)?;
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= done {
            continue;
        }
        let tx = conn.transaction().map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, hooklane_core::Utc::now().timestamp_millis()],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory database migrated as a version of hooklane with the first `n`
    /// migrations left it.
    fn migrated_to(n: usize) -> Connection {
        let conn = Connection::open_in_memory().expect("database");
        conn.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .expect("migrations table");
        for (i, sql) in MIGRATIONS[..n].iter().enumerate() {
            conn.execute_batch(sql).expect("old migration");
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [i as i64 + 1]).expect("record");
        }
        conn
    }

    /// A database made before the pull stream (migrations 1–6) with messages in it: the
    /// messages table is rebuilt with sequence numbers in the old rowid order, and keeps
    /// its rows, its uniqueness rules and its indexes.
    #[test]
    fn messages_of_an_older_database_get_sequence_numbers() {
        let mut conn = migrated_to(6);
        for (id, app, event_id) in [("msg_b", "app_1", Some("e1")), ("msg_a", "app_1", None), ("msg_c", "app_2", None)]
        {
            conn.execute(
                "INSERT INTO messages (id, app_id, event_type, event_id, payload, created_at) \
                 VALUES (?1, ?2, 't', ?3, '{}', 0)",
                rusqlite::params![id, app, event_id],
            )
            .expect("old message");
        }
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 6);
        let rows: Vec<(i64, String)> = conn
            .prepare("SELECT seq, id FROM messages ORDER BY seq")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("rows");
        assert_eq!(rows, vec![(1, "msg_b".into()), (2, "msg_a".into()), (3, "msg_c".into())]);
        // Uniqueness of ids and of event ids per application survives the rebuild.
        let dup_id = conn.execute(
            "INSERT INTO messages (id, app_id, event_type, payload, created_at) VALUES ('msg_a', 'x', 't', '{}', 0)",
            [],
        );
        assert!(dup_id.is_err());
        let dup_event = conn.execute(
            "INSERT INTO messages (id, app_id, event_type, event_id, payload, created_at) \
             VALUES ('msg_d', 'app_1', 't', 'e1', '{}', 0)",
            [],
        );
        assert!(dup_event.is_err());
        // New messages continue the sequence; a deleted newest number is never given again.
        conn.execute("DELETE FROM messages WHERE id = 'msg_c'", []).expect("delete");
        conn.execute(
            "INSERT INTO messages (id, app_id, event_type, payload, created_at) VALUES ('msg_e', 'app_1', 't', '{}', 0)",
            [],
        )
        .expect("new message");
        let seq: i64 = conn.query_row("SELECT seq FROM messages WHERE id = 'msg_e'", [], |r| r.get(0)).expect("seq");
        assert_eq!(seq, 4);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("indexes");
        for wanted in ["messages_by_app", "messages_by_event_id", "messages_events"] {
            assert!(indexes.iter().any(|i| i == wanted), "{wanted} missing: {indexes:?}");
        }
    }

    /// An event type of a database made before several flags (migrations 1–32): its one
    /// flag becomes the list of its flags.
    #[test]
    fn rate_limits_past_16_bits_are_brought_within_them() {
        let mut conn = migrated_to(36);
        for (id, rate) in [("app_1", Some(100_000)), ("app_2", Some(10)), ("app_3", None)] {
            conn.execute(
                "INSERT INTO applications (id, name, rate_limit, metadata, created_at, updated_at) \
                 VALUES (?1, 'a', ?2, '{}', 0, 0)",
                rusqlite::params![id, rate],
            )
            .expect("old application");
        }
        migrate(&mut conn).expect("migrate");
        let rates: Vec<Option<i64>> = conn
            .prepare("SELECT rate_limit FROM applications ORDER BY id")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("rows");
        assert_eq!(rates, vec![Some(65_535), Some(10), None]);
    }

    #[test]
    fn the_flag_of_an_older_event_type_becomes_its_list_of_flags() {
        let mut conn = migrated_to(32);
        for (name, flag) in [("flagged", Some("beta")), ("open", None)] {
            conn.execute(
                "INSERT INTO event_types (name, description, archived, deprecated, feature_flag, created_at, updated_at) \
                 VALUES (?1, '', 0, 0, ?2, 0, 0)",
                rusqlite::params![name, flag],
            )
            .expect("old event type");
        }
        assert_eq!(migrate(&mut conn).expect("migrate"), MIGRATIONS.len() - 32);
        let flags: Vec<(String, Option<String>)> = conn
            .prepare("SELECT name, feature_flags FROM event_types ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("rows");
        assert_eq!(flags, vec![("flagged".into(), Some(r#"["beta"]"#.into())), ("open".into(), None)]);
    }
}
