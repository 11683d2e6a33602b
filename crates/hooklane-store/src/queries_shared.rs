//! Small helpers every backend needs.

use std::time::Duration;

use hooklane_core::{DateTime, Utc};

/// `now + d`, saturating instead of overflowing on absurd durations.
pub fn lease_end(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the earliest representable time.
pub fn ago(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// An endpoint's own retry schedule as stored: the waits in milliseconds, as JSON.
pub fn schedule_json(schedule: &Option<Vec<Duration>>) -> Option<String> {
    let ms: Option<Vec<u64>> =
        schedule.as_ref().map(|d| d.iter().map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)).collect());
    ms.map(|v| serde_json::to_string(&v).unwrap_or_else(|_| "[]".into()))
}

/// [`schedule_json`] read back.
pub fn schedule_from_ms(ms: Option<Vec<u64>>) -> Option<Vec<Duration>> {
    ms.map(|v| v.into_iter().map(Duration::from_millis).collect())
}

/// Microseconds between two sends at `rate` per second (at least 1): in milliseconds, rates
/// above 333 a second were rounded to 500 or 1,000, and those above 1,000 held to 1,000.
pub fn rate_interval_us(rate: u32) -> i64 {
    (1_000_000 / i64::from(rate.max(1))).max(1)
}

/// How long an accepted inbound request whose fan-out is unfinished stays to be done: the
/// sweep completes such fan-outs for this long, and housekeeping keeps their records that
/// long whatever the request retention.
pub const FAN_OUT_KEPT: chrono::Duration = chrono::Duration::days(1);

/// How long an idempotency key's hold that never finished (its process died) is kept past
/// its lease end, as long as a finished key's answer is replayed: a retry of the same
/// request within it is told the hold it replaces ([`crate::IdempotencyState::Started`]), by
/// which it finds the work that hold may have done rather than doing it again.
pub const UNFINISHED_KEY_KEPT: chrono::Duration = chrono::Duration::days(1);

/// An accepted inbound request whose fan-out is still to be done (the partial index's
/// condition).
pub const UNFINISHED_FAN_OUT: &str = "status = 0 AND reason IS NOT NULL AND msg_id IS NOT NULL";

/// A message id below every message created at `since` (ms) or later, for an index range
/// by `(app_id, id)` instead of a scan of the application's whole history: ids begin with
/// the time they were made, which is the message's creation (an hour of margin for a
/// clock that went back).
pub fn message_id_floor(since_ms: i64) -> String {
    let since = chrono::DateTime::from_timestamp_millis(since_ms).unwrap_or_default();
    hooklane_core::ids::floor(hooklane_core::ids::MESSAGE, since - chrono::Duration::hours(1))
}

/// A message id below that of every message created after `since`: a message's id and its
/// `created_at` are read from one clock (the node's that wrote it), the id first, a moment
/// before (an inbound request's message: after its arrival, its `created_at`). A minute
/// of margin, where `message_id_floor` has an hour for times from elsewhere.
pub fn since_id_floor(since: chrono::DateTime<chrono::Utc>) -> String {
    hooklane_core::ids::floor(hooklane_core::ids::MESSAGE, since - chrono::TimeDelta::minutes(1))
}

/// What deleting an application deletes, in order (SQL with `{app}` for the application's
/// id, the same for both stores). Deliveries have no index by application: they are found
/// through the application's endpoints and messages, both indexed, rather than by a scan of
/// every application's deliveries (on SQLite, with the single writer held).
pub fn delete_app_sql(app: &str) -> Vec<String> {
    // Deliveries before attempts: on PostgreSQL an attempt is recorded only while its
    // delivery's row exists, locked; the attempts' delete, after the deliveries', sees those
    // of every recorder the deliveries' delete waited for.
    let mut sql = vec![
        format!("DELETE FROM endpoint_rate WHERE endpoint_id IN (SELECT id FROM endpoints WHERE app_id = {app})"),
        format!("DELETE FROM deliveries WHERE endpoint_id IN (SELECT id FROM endpoints WHERE app_id = {app})"),
        format!("DELETE FROM deliveries WHERE msg_id IN (SELECT id FROM messages WHERE app_id = {app})"),
        format!("DELETE FROM attempts WHERE app_id = {app}"),
    ];
    // Integrations before tokens: deleting an integration waits for a rotation of its key
    // under way (PostgreSQL), whose new key the tokens statement then sees and deletes.
    for table in ["messages", "endpoints", "integrations", "tokens", "events_subscriptions", "background_tasks"] {
        sql.push(format!("DELETE FROM {table} WHERE app_id = {app}"));
    }
    sql
}

/// Whether message `m` is still needed by housekeeping's reckoning (SQL, the same for both
/// stores): a delivery of it is pending, or an inbound request acknowledged with it has its
/// fan-out still to be done (received since `{since}`: a fan-out is completed within
/// [`FAN_OUT_KEPT`]), which reads the message to fan it out. A `message_retention` shorter
/// than a fan-out's retries would otherwise drop a webhook its provider was told was taken.
pub fn message_needed_sql(since: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.status = 1) \
         OR EXISTS (SELECT 1 FROM inbound_requests r WHERE r.msg_id = m.id AND r.status = 0 \
                    AND r.reason IS NOT NULL AND r.received_at >= {since}))"
    )
}

/// An event type's flags as stored: the first alone in `feature_flag` (what nodes of an
/// older version read), all of them as a JSON array in `feature_flags`; both NULL without.
pub fn flag_columns(flags: &[String]) -> (Option<&str>, Option<String>) {
    match flags.first() {
        None => (None, None),
        Some(first) => (Some(first.as_str()), serde_json::to_string(flags).ok()),
    }
}

/// An event type's flags read back from its two columns: the list, unless a node of an
/// older version wrote the type since (it writes `feature_flag` alone, leaving the list as
/// it was): then the one flag it wrote, or none.
pub fn flags_read(flag: Option<String>, flags: Option<Vec<String>>) -> Vec<String> {
    match (flag, flags) {
        (None, _) => Vec::new(),
        (Some(first), Some(list)) if list.first() == Some(&first) => list,
        (Some(only), _) => vec![only],
    }
}

/// A message's columns (`cols`) with its payload read only when the boolean parameter
/// `flag` is true, `''` otherwise.
/// A message's columns `cols` as a [`crate::MessageFilter`] asks for them, qualified by
/// `alias` when given: without the payload (an empty text in its place) when it says so.
pub fn message_cols_for(cols: &str, alias: Option<&str>, f: &crate::MessageFilter) -> String {
    let (cols, payload) = match alias {
        Some(alias) => (qualified(cols, alias), format!("{alias}.payload")),
        None => (cols.to_string(), "payload".to_string()),
    };
    if f.without_payload {
        cols.replacen(&payload, "''", 1)
    } else {
        cols
    }
}

pub fn message_cols_payload_if(cols: &str, flag: &str) -> String {
    cols.replacen("payload", &format!("CASE WHEN {flag} THEN payload ELSE '' END"), 1)
}

/// A failing endpoint with no attempt for this long before a new failure starts its failure
/// streak afresh: a quiet endpoint that failed a week ago is not disabled by its next
/// failure as though it had failed all week.
pub const QUIET_GAP_MS: i64 = 24 * 3600 * 1000;

/// The conditions an [`crate::AppListFilter`] adds to a listing of `applications`, for a
/// store whose enabled endpoints `e` are those where `enabled` holds.
pub fn app_list_conditions(filter: crate::AppListFilter, enabled: &str) -> Vec<String> {
    let has = "EXISTS (SELECT 1 FROM endpoints e WHERE e.app_id = applications.id";
    let mut conditions = Vec::new();
    if filter.without_endpoints {
        conditions.push(format!("{has})"));
    }
    if filter.only_disabled_endpoints {
        conditions.push(format!("(NOT {has}) OR {has} AND {enabled}))"));
    }
    conditions
}

/// How far back an idle endpoint's bucket reaches: one second's worth of sends.
pub const RATE_BURST_US: i64 = 1_000_000;

/// How far before now an idle endpoint's next slot may start, for slots `interval_us`
/// apart: the slot taken at once plus those reaching back make `rate` sends at most (a
/// whole second back would allow `rate + 1`: two sends at once at one a second).
pub fn rate_burst_us(interval_us: i64) -> i64 {
    (RATE_BURST_US - interval_us).max(0)
}

/// A time as the microseconds since the epoch the rate buckets keep.
pub fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

/// [`micros`] read back.
pub fn from_micros(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}

// --- claims

/// Most rounds of a fair claim: each round either fills the claim or finds at least one
/// endpoint with nothing more due, so few are ever needed; the bound only caps the worst
/// case (many endpoints running dry one per round) at a partly filled claim.
pub const MAX_CLAIM_ROUNDS: usize = 4;

/// Splits a claim of `limit` deliveries between endpoints that have some due, in rounds, so
/// that an endpoint with a large backlog cannot crowd the others out of a claim: each round
/// gives every endpoint still in the running an equal share of what is left (endpoints
/// waiting longest get the remainder), and an endpoint that hands over less than its share
/// has nothing more due and drops out.
pub struct FairClaim {
    /// Endpoints still in the running, longest waiting first, with what the current round
    /// asked of each and how many more may be taken of it at most.
    active: Vec<(String, usize, usize)>,
    left: usize,
    rounds: usize,
}

impl FairClaim {
    /// `candidates`: endpoints with deliveries due, with the due time of their oldest one;
    /// `room`: at most how many of some of them may be taken.
    pub fn new(mut candidates: Vec<(String, i64)>, limit: usize, room: &crate::ClaimRoom) -> Self {
        candidates.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let active = candidates
            .into_iter()
            .map(|(id, _)| {
                let most = room.most_of(&id);
                (id, 0, most)
            })
            .filter(|(_, _, most)| *most > 0)
            .collect();
        FairClaim { active, left: limit, rounds: 0 }
    }

    /// The next round: (endpoint, how many to take from it), or `None` when done. An
    /// endpoint with less room than its equal share is asked for its room only; what it
    /// leaves goes to the others in the next round.
    pub fn next_round(&mut self) -> Option<Vec<(String, usize)>> {
        if self.left == 0 || self.active.is_empty() || self.rounds >= MAX_CLAIM_ROUNDS {
            return None;
        }
        self.rounds += 1;
        let n = self.active.len();
        let (base, extra) = (self.left / n, self.left % n);
        for (i, (_, share, most)) in self.active.iter_mut().enumerate() {
            *share = (base + usize::from(i < extra)).min(*most);
        }
        self.active.retain(|(_, share, _)| *share > 0);
        Some(self.active.iter().map(|(id, share, _)| (id.clone(), *share)).collect())
    }

    /// What the last round took from each endpoint, in the order `next_round` gave them.
    pub fn took(&mut self, taken: &[usize]) {
        let mut i = 0;
        self.active.retain_mut(|(_, share, most)| {
            let got = taken.get(i).copied().unwrap_or(0);
            i += 1;
            *most = most.saturating_sub(got);
            got >= *share && *most > 0
        });
        self.left = self.left.saturating_sub(taken.iter().sum());
    }
}

/// The `lane_seq` of a delivery of message `{msg}` to endpoint `{ep}` (SQL expressions) that
/// becomes pending: its message's place when the endpoint is FIFO at this write, else NULL
/// (FIFO lanes: `sqlite::lanes`, `postgres::lanes`). The same SQL on both stores.
pub fn lane_seq_sql(ep: &str, msg: &str) -> String {
    format!(
        "CASE WHEN (SELECT fifo FROM endpoints WHERE id = {ep}) THEN (SELECT seq FROM messages WHERE id = {msg}) END"
    )
}

/// The due time, `lane_seq` and `not_before` (SQL expressions, in that order) of a delivery
/// of message `{msg}` to endpoint `{ep}` that a manual trigger queues at `{now}` (a replay of
/// what the endpoint missed, a recovery): due now, in the endpoint's lane when it is FIFO.
/// But a message scheduled after `{now}` (Svix's `deliverAt`) is not sent before its time
/// by being replayed: due then, never hastened before it, and in no lane, as its first
/// deliveries were ([`crate::Store::schedule_message`]). The same SQL on both stores.
pub fn queued_again_sql(ep: &str, msg: &str, now: &str) -> [String; 3] {
    let scheduled = format!("(SELECT deliver_at FROM messages WHERE id = {msg} AND deliver_at > {now})");
    [
        format!("COALESCE({scheduled}, {now})"),
        format!("CASE WHEN {scheduled} IS NULL THEN {} END", lane_seq_sql(ep, msg)),
        scheduled,
    ]
}

/// The messages of the endpoint's failed deliveries that a round of a recovery queues again
/// (`?1` the application, `?2` the endpoint, `[?3, ?4)` their creation times), in message
/// id order after `?6` (ids begin with their creation time: a FIFO lane's order, but for
/// messages taken within the same moments); the caller adds its `LIMIT`.
pub const RECOVERABLE: &str = "SELECT d.msg_id FROM deliveries d JOIN messages m ON m.id = d.msg_id \
     WHERE d.app_id = ?1 AND d.endpoint_id = ?2 AND d.status = 2 AND d.msg_id > ?6 AND m.id > ?6 AND m.app_id = ?1 \
     AND m.created_at >= ?3 AND m.created_at < ?4 AND NOT m.expunged ORDER BY d.msg_id";

/// The `lane_key` of a delivery of message `{msg}`: the message's ordering key, or `''`.
pub fn lane_key_sql(msg: &str) -> String {
    format!("COALESCE((SELECT ordering_key FROM messages WHERE id = {msg}), '')")
}

// --- statistics

/// SQL (the same for every backend) numbering the latency bucket of `col`, a duration in
/// milliseconds: 0 for the first of [`LATENCY_BOUNDS_MS`](crate::LATENCY_BOUNDS_MS), …, one
/// past the last for slower ones.
pub fn latency_bucket_sql(col: &str) -> String {
    let mut sql = String::from("CASE");
    for (i, bound) in crate::LATENCY_BOUNDS_MS.iter().enumerate() {
        sql.push_str(&format!(" WHEN {col} <= {bound} THEN {i}"));
    }
    sql.push_str(&format!(" ELSE {} END", crate::LATENCY_BOUNDS_MS.len()));
    sql
}

/// A condition on `messages` (the same SQL for every backend) keeping messages in `state`.
pub fn message_state_sql(state: crate::MessageState) -> &'static str {
    use crate::MessageState::*;
    match state {
        Failed => "EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status = 2)",
        Pending => {
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status IN (1, 3)) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status = 2)"
        }
        Succeeded => {
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status = 0) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status IN (1, 2, 3))"
        }
        Canceled => {
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status = 4) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status IN (0, 1, 2, 3))"
        }
    }
}

/// One row of a statistics query over attempts: attempts grouped by a key (an endpoint id
/// or the start of a time slice), outcome and latency bucket.
pub struct AttemptGroup<K> {
    pub key: K,
    /// The attempt status code (0 succeeded, 4 cancelled by a transformation; anything else failed).
    pub status: i64,
    pub bucket: i64,
    pub count: i64,
    /// Latest `created_at` (unix ms) in the group.
    pub last_at: i64,
    pub max_ms: i64,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Folds attempt groups keyed by endpoint id into one [`EndpointHealth`](crate::EndpointHealth)
/// per endpoint of `endpoints` (with its pending count), in that order.
pub fn fold_health(
    endpoints: Vec<(String, u64)>,
    groups: impl IntoIterator<Item = AttemptGroup<String>>,
) -> Vec<crate::EndpointHealth> {
    let mut out: Vec<crate::EndpointHealth> = endpoints
        .into_iter()
        .map(|(endpoint_id, pending)| crate::EndpointHealth { endpoint_id, pending, ..Default::default() })
        .collect();
    let index: std::collections::HashMap<String, usize> =
        out.iter().enumerate().map(|(i, h)| (h.endpoint_id.clone(), i)).collect();
    for g in groups {
        let Some(&i) = index.get(&g.key) else { continue };
        let h = &mut out[i];
        let n = u64::try_from(g.count).unwrap_or(0);
        let at = Some(time(g.last_at));
        if g.status == CANCELED {
            continue; // nothing was sent: it tells nothing of the endpoint's health
        }
        if g.status == 0 {
            h.succeeded += n;
        } else {
            h.failed += n;
            h.last_failure_at = h.last_failure_at.max(at);
        }
        h.last_attempt_at = h.last_attempt_at.max(at);
        h.latency.add(usize::try_from(g.bucket).unwrap_or(0), n, g.max_ms);
    }
    out
}

/// An attempt's (and a delivery's) status when the endpoint's transformation cancelled it.
const CANCELED: i64 = hooklane_core::model::DeliveryStatus::Canceled as i64;

/// Folds attempt groups keyed by slice start (unix ms) into time-ordered slices.
pub fn fold_timeline(groups: impl IntoIterator<Item = AttemptGroup<i64>>) -> Vec<crate::TimelineBucket> {
    let mut slices: std::collections::BTreeMap<i64, crate::TimelineBucket> = std::collections::BTreeMap::new();
    for g in groups {
        let s = slices.entry(g.key).or_insert_with(|| crate::TimelineBucket {
            start: time(g.key),
            succeeded: 0,
            failed: 0,
            canceled: 0,
            latency: Default::default(),
        });
        let n = u64::try_from(g.count).unwrap_or(0);
        match g.status {
            0 => s.succeeded += n,
            CANCELED => {
                s.canceled += n;
                continue; // nothing was sent: no latency
            }
            _ => s.failed += n,
        }
        s.latency.add(usize::try_from(g.bucket).unwrap_or(0), n, g.max_ms);
    }
    slices.into_values().collect()
}

/// Milliseconds in a timeline slice (at least one).
pub fn bucket_ms(bucket: Duration) -> i64 {
    i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Why a message whose content was deleted cannot be sent again.
pub const EXPUNGED: &str = "the message's content was deleted: it cannot be sent again";

/// The columns a token's holder is stored in (`feature_flags` and `capabilities` are JSON
/// lists): no application for the admin; an application; an application and one of its
/// polling endpoints for that endpoint's key.
#[derive(Debug, Default)]
pub struct HolderColumns {
    pub app_id: Option<String>,
    pub feature_flags: Option<String>,
    pub capabilities: Option<String>,
    pub endpoint_id: Option<String>,
}

impl HolderColumns {
    /// Who a stored token belongs to. What does not parse fails closed: flags that do not
    /// parse give none (flagged event types stay hidden), and capabilities that do not parse
    /// give none (the token may do nothing); a polling endpoint's key without an
    /// application belongs to no one.
    pub fn principal(self) -> Option<hooklane_core::model::Principal> {
        use hooklane_core::model::Principal;
        Some(match (self.app_id, self.endpoint_id) {
            (Some(app_id), Some(endpoint_id)) => Principal::Poller { app_id, endpoint_id },
            (Some(app_id), None) => Principal::App {
                app_id,
                feature_flags: self.feature_flags.and_then(|f| serde_json::from_str(&f).ok()).unwrap_or_default(),
                capabilities: self.capabilities.map(|c| serde_json::from_str(&c).unwrap_or_default()),
            },
            (None, None) => Principal::Admin,
            (None, Some(_)) => return None,
        })
    }

    /// The columns of `holder`, the reverse of [`HolderColumns::principal`].
    pub fn of(holder: &hooklane_core::model::Principal) -> HolderColumns {
        use hooklane_core::model::Principal;
        match holder {
            Principal::Admin => HolderColumns::default(),
            Principal::App { app_id, feature_flags, capabilities } => HolderColumns {
                app_id: Some(app_id.clone()),
                feature_flags: feature_flags_column(feature_flags),
                capabilities: capabilities.as_ref().map(|c| serde_json::to_string(c).unwrap_or_else(|_| "[]".into())),
                endpoint_id: None,
            },
            // No capability at all: a node of an older version, which knows nothing of
            // `endpoint_id`, reads the key as an application token that may do nothing.
            Principal::Poller { app_id, endpoint_id } => HolderColumns {
                app_id: Some(app_id.clone()),
                endpoint_id: Some(endpoint_id.clone()),
                capabilities: Some("[]".into()),
                feature_flags: None,
            },
        }
    }
}

/// Feature flags as stored: a JSON list (`[]` for none).
pub fn flags_json(flags: &[String]) -> String {
    serde_json::Value::from(flags.to_vec()).to_string()
}

/// A token's feature flags as stored: a JSON list, or NULL for none (a token's `[]`, as an
/// integration key copies it from its integration, reads the same).
pub fn feature_flags_column(flags: &[String]) -> Option<String> {
    (!flags.is_empty()).then(|| flags_json(flags))
}

/// The condition that a message has a delivery to an endpoint (`?`: the endpoint id) in
/// `status` when given, for `endpoint_messages`.
pub fn endpoint_delivery_sql(status: Option<hooklane_core::model::DeliveryStatus>) -> String {
    let status = delivery_status_sql(status).map(|s| format!(" AND {s}")).unwrap_or_default();
    format!("EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.endpoint_id = ?{status})")
}

/// The condition on a delivery `d` that it is in `status` (none when not given). A pending
/// delivery a node has leased is being sent (`Sending`); one nobody holds waits (`Pending`).
pub fn delivery_status_sql(status: Option<hooklane_core::model::DeliveryStatus>) -> Option<&'static str> {
    use hooklane_core::model::DeliveryStatus::*;
    Some(match status? {
        Success => "d.status = 0",
        Fail => "d.status = 2",
        Pending => "d.status = 1 AND NOT d.leased",
        Sending => "d.status = 1 AND d.leased",
        Canceled => "d.status = 4",
    })
}

/// Rows (attempts, deliveries and the message itself) a round of message retention deletes
/// per message it may delete, before it stops and leaves the rest to the next round.
pub const PRUNE_ROWS_PER_MESSAGE: i64 = 8;

/// The id below which a message is old enough for retention: one made before `m.before`.
/// Ids begin with the time they were made, the message's creation (its `created_at` is that
/// time or, for an inbound request's message, the request's arrival a moment before), so
/// the index on ids tells a message's age without reading its row.
pub fn prune_floor(m: &crate::PruneMessages) -> String {
    hooklane_core::ids::floor(hooklane_core::ids::MESSAGE, m.before)
}

/// What a round of message retention deletes from the window it looked at.
#[derive(Debug, PartialEq, Eq)]
pub struct PrunePlan {
    /// The messages to delete, oldest first.
    pub doomed: Vec<String>,
    /// Where the next round goes on (`Pruned::messages_resume`).
    pub resume: Option<String>,
}

impl PrunePlan {
    /// `window`: the messages after `after` in id order, at most `2 × limit`, each with
    /// whether it is old enough to go and whether it has a pending delivery. The next round
    /// goes on from `after` when this one found `limit` to delete (more may follow in the
    /// window); after the window when all of it was old (the messages that stay, waiting for
    /// a delivery, must not keep the old ones after them); else it starts again from the
    /// oldest, later, when deliveries may have ended.
    pub fn of(after: &str, window: &[(String, bool, bool)], limit: i64) -> PrunePlan {
        let limit = usize::try_from(limit).unwrap_or(0);
        let doomed: Vec<String> =
            window.iter().filter(|(_, old, pending)| *old && !*pending).take(limit).map(|w| w.0.clone()).collect();
        let resume = if limit > 0 && doomed.len() >= limit {
            Some(after.to_string())
        } else if limit > 0 && window.len() >= limit.saturating_mul(2) && window.iter().all(|w| w.1) {
            window.last().map(|w| w.0.clone())
        } else {
            None
        };
        PrunePlan { doomed, resume }
    }

    /// Keeps the first of `doomed` (at least one) while fewer than the budget's rows
    /// (`limit × PRUNE_ROWS_PER_MESSAGE`) are deleted before each; `rows[i]` is how many the
    /// `i`th deletes. When some are left out, the next round goes on from `after`.
    pub fn keep_within(&mut self, after: &str, rows: &[i64], limit: i64) {
        let budget = limit.saturating_mul(PRUNE_ROWS_PER_MESSAGE);
        let mut total = 0i64;
        let keep = rows
            .iter()
            .take_while(|n| {
                let go = total < budget;
                total = total.saturating_add(**n);
                go
            })
            .count()
            .max(1);
        if keep < self.doomed.len() {
            self.doomed.truncate(keep);
            self.resume = Some(after.to_string());
        }
    }
}

/// `cols` (a comma-separated column list) with every column qualified by `alias`.
pub fn qualified(cols: &str, alias: &str) -> String {
    cols.split(',').map(|c| format!("{alias}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}

/// A delivery's columns as `rows::delivery` reads them (`DELIVERY_COLS`), its status as
/// an API reader sees it: a leased pending delivery is being sent.
pub fn delivery_cols_seen(delivery_cols: &str) -> String {
    delivery_cols.replacen("status", "CASE WHEN status = 1 AND leased THEN 3 ELSE status END", 1)
}

/// `delivery_cols_seen` with every column qualified by `alias` (for a join).
pub fn qualified_delivery_cols_seen(delivery_cols: &str, alias: &str) -> String {
    qualified(delivery_cols, alias).replacen(
        &format!("{alias}.status"),
        &format!("CASE WHEN {alias}.status = 1 AND {alias}.leased THEN 3 ELSE {alias}.status END"),
        1,
    )
}

/// A source's destination that is gone when its update or deletion comes was changed by
/// someone else since the source's update read it: the update as a whole is refused.
pub fn gone_is_changed(e: crate::StoreError) -> crate::StoreError {
    match e {
        crate::StoreError::NotFound => crate::StoreError::Changed,
        other => other,
    }
}

/// An attempt id below those of every attempt made after `after`. Ids begin with the time
/// they were made ([`hooklane_core::ids`]), which for an attempt is when its outcome was
/// known, as is its `created_at`: an hour's margin keeps the bound safe for any attempt
/// whose id and time were taken a request apart.
pub fn attempt_id_floor(after: DateTime<Utc>) -> String {
    hooklane_core::ids::floor(hooklane_core::ids::ATTEMPT, after - chrono::Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_written_by_an_older_node_win() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // As this version writes them.
        assert_eq!(flags_read(Some("a".into()), Some(list(&["a", "b"]))), list(&["a", "b"]));
        assert_eq!(flags_read(None, None), list(&[]));
        // An older node created the type, changed its flag, or cleared it.
        assert_eq!(flags_read(Some("beta".into()), None), list(&["beta"]));
        assert_eq!(flags_read(Some("c".into()), Some(list(&["a", "b"]))), list(&["c"]));
        assert_eq!(flags_read(None, Some(list(&["a", "b"]))), list(&[]));
    }

    #[test]
    fn a_prune_round_goes_on_where_it_should() {
        let w =
            |rows: &[(&str, bool, bool)]| rows.iter().map(|(id, o, p)| (id.to_string(), *o, *p)).collect::<Vec<_>>();
        // Two to delete of a limit of 2: again from the same place (more may follow).
        let plan = PrunePlan::of("a", &w(&[("b", true, false), ("c", true, false), ("d", true, false)]), 2);
        assert_eq!(plan, PrunePlan { doomed: vec!["b".into(), "c".into()], resume: Some("a".into()) });
        // A full window, all old, some waiting: on after it.
        let plan =
            PrunePlan::of("", &w(&[("b", true, true), ("c", true, false), ("d", true, true), ("e", true, true)]), 2);
        assert_eq!(plan, PrunePlan { doomed: vec!["c".into()], resume: Some("e".into()) });
        // A window reaching recent messages, or short: done.
        let plan =
            PrunePlan::of("", &w(&[("b", true, true), ("c", true, true), ("d", true, true), ("e", false, false)]), 2);
        assert_eq!(plan, PrunePlan { doomed: vec![], resume: None });
        assert_eq!(PrunePlan::of("x", &w(&[("y", true, true)]), 2).resume, None);
        assert_eq!(PrunePlan::of("", &[], 0), PrunePlan { doomed: vec![], resume: None });
        // The row budget (2 × 8 = 16): the first always, then while under it.
        let mut plan = PrunePlan { doomed: vec!["b".into(), "c".into()], resume: None };
        plan.keep_within("a", &[17, 3], 2);
        assert_eq!(plan, PrunePlan { doomed: vec!["b".into()], resume: Some("a".into()) });
        let mut plan = PrunePlan { doomed: vec!["b".into(), "c".into()], resume: None };
        plan.keep_within("a", &[15, 30], 2);
        assert_eq!(plan, PrunePlan { doomed: vec!["b".into(), "c".into()], resume: None });
    }

    fn run(candidates: &[(&str, i64, usize)], limit: usize) -> Vec<(String, usize)> {
        run_with(candidates, limit, &crate::ClaimRoom::default())
    }

    fn run_with(candidates: &[(&str, i64, usize)], limit: usize, room: &crate::ClaimRoom) -> Vec<(String, usize)> {
        let candidates_due = candidates.iter().map(|(id, due, _)| (id.to_string(), *due)).collect();
        let mut claim = FairClaim::new(candidates_due, limit, room);
        let available: std::collections::HashMap<&str, usize> = candidates.iter().map(|(id, _, n)| (*id, *n)).collect();
        let mut total: std::collections::BTreeMap<String, usize> = Default::default();
        while let Some(round) = claim.next_round() {
            let taken: Vec<usize> = round
                .iter()
                .map(|(id, share)| {
                    let had = total.entry(id.clone()).or_default();
                    let got = (*share).min(available[id.as_str()] - *had);
                    *had += got;
                    got
                })
                .collect();
            claim.took(&taken);
        }
        total.into_iter().filter(|(_, n)| *n > 0).collect()
    }

    #[test]
    fn shares_are_even_and_leftovers_go_round() {
        let got = |v: Vec<(String, usize)>| v.into_iter().map(|(id, n)| format!("{id}={n}")).collect::<Vec<_>>();
        // A huge backlog next to a small one: the small one gets all it has.
        assert_eq!(got(run(&[("big", 1, 100_000), ("small", 5, 3)], 10)), ["big=7", "small=3"]);
        // Both large: even split, the longest waiting gets the odd one.
        assert_eq!(got(run(&[("a", 9, 50), ("b", 1, 50)], 11)), ["a=5", "b=6"]);
        // Fewer to take than endpoints: the longest waiting first.
        assert_eq!(got(run(&[("a", 3, 5), ("b", 1, 5), ("c", 2, 5)], 2)), ["b=1", "c=1"]);
        // Not enough anywhere: everything is taken.
        assert_eq!(got(run(&[("a", 1, 2), ("b", 1, 1)], 100)), ["a=2", "b=1"]);
        assert!(run(&[], 10).is_empty());
    }

    /// An endpoint with little room in memory is asked for that much only, and what it
    /// leaves goes to the others; one with none is not asked at all.
    #[test]
    fn an_endpoint_gets_no_more_than_its_room() {
        let got = |v: Vec<(String, usize)>| v.into_iter().map(|(id, n)| format!("{id}={n}")).collect::<Vec<_>>();
        let room = crate::ClaimRoom {
            skip: Vec::new(),
            most: [("slow".to_string(), 1), ("full".to_string(), 0)].into_iter().collect(),
        };
        let backlog = [("slow", 1, 1000), ("full", 1, 1000), ("other", 2, 1000)];
        assert_eq!(got(run_with(&backlog, 512, &room)), ["other=511", "slow=1"]);
        assert_eq!(got(run_with(&backlog[..2], 512, &room)), ["slow=1"]);
    }
}
