//! FIFO lanes on PostgreSQL: the rules of `sqlite::lanes` (read them there), with nodes
//! claiming at once. A lane is `(endpoint_id, lane_key)`.
//!
//! * A lane's claim runs in its own transaction under `pg_try_advisory_xact_lock` of the
//!   lane, taken in a statement of its own so that the claim's snapshot sees everything
//!   the previous claimer of the lane committed. A node that finds the lock taken leaves the
//!   lane to the node holding it.
//! * The claim then reads, under a share lock of the endpoint's row, whether the endpoint
//!   is FIFO still, and claims nothing when not: its caller read that earlier, and a change
//!   to concurrent committed since leaves the lanes' rows to the concurrent claim, which
//!   parking any of them would strand.
//! * The claim is one statement: which row heads the lane, whether one is in flight, the
//!   lease and the parking are all read from one snapshot, and a row leased meanwhile by a
//!   commit the snapshot missed fails the update's re-check instead of being leased twice.
//! * A finishing lane row wakes its lane's new head in the very statement that records it
//!   ([`advance_cte`]), and once more afterwards under the lane's lock ([`settle`]): a claim
//!   whose snapshot was taken before the record committed saw the row still in flight and
//!   may have held the new head back until that row's lease end, which the second wake-up,
//!   reading after that claim committed, undoes. (Were it lost, in a crash, the lease's end
//!   still moves the lane on.)
//! * The one row such a statement picked (a lane's head) is updated by its `ctid`, the row
//!   version that statement read: a TID scan whatever the table's statistics say. Keyed by
//!   `(endpoint_id, msg_id)` it was planned, while the statistics still described a small
//!   table (a new database, or one whose backlog just grew), as a walk over the endpoint's
//!   whole backlog, at every message of a lane (35 ms a message with 4,300 waiting). A row
//!   another transaction updated meanwhile no longer matches and keeps what that one wrote:
//!   a claim then leases nothing this time, and a lost wake-up is what [`settle`] redoes.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::db_err;
use super::queries::{claimed_jobs_sql, execute, query};
use crate::queries_shared::lane_key_sql;
use crate::StoreResult;

/// The advisory lock key of the lane `($1, $2)`: a hash of the endpoint id and lane key (a
/// collision only makes two lanes take turns).
const LANE_KEY: &str = "hashtextextended('hooklane.lane:' || $1::text || ':' || $2::text, 0)";

/// Lanes of one endpoint looked at by one claim at most (as on SQLite).
const MAX_LANES_PER_CLAIM: i64 = 1000;

/// A data-modifying CTE named `lanes` that wakes the new head of every lane a row of
/// `finished` (a CTE returning `msg_id, endpoint_id, status, lane_seq, lane_key` of updated
/// deliveries, `status` the new one) left, due at `now` (a parameter). The rows `finished`
/// updated still read as pending in this statement's snapshot, so they are passed over.
pub fn advance_cte(finished: &str, now: &str) -> String {
    format!(
        "lanes AS ( \
             UPDATE deliveries w SET due_at = {now} FROM ( \
                 SELECT nx.ctid \
                 FROM (SELECT DISTINCT endpoint_id, lane_key FROM {finished} \
                       WHERE lane_seq IS NOT NULL AND status <> 1) l \
                 CROSS JOIN LATERAL ( \
                     SELECT x.ctid FROM deliveries x \
                     WHERE x.endpoint_id = l.endpoint_id AND x.lane_key = l.lane_key AND x.status = 1 \
                       AND x.lane_seq IS NOT NULL AND NOT (x.leased AND x.due_at > {now}) \
                       AND NOT EXISTS (SELECT 1 FROM {finished} f \
                           WHERE f.msg_id = x.msg_id AND f.endpoint_id = x.endpoint_id AND f.status <> 1) \
                     ORDER BY x.lane_seq LIMIT 1 \
                 ) nx \
             ) h \
             WHERE w.ctid = h.ctid AND w.status = 1 AND NOT w.leased \
               AND (w.due_at IS NULL OR w.due_at > {now}) \
         )"
    )
}

/// Leases the heads of the endpoint's lanes that have something due at `now`, at most
/// `room`, returning their rows with their message's and endpoint's columns as
/// `queries::claim_due` reads them (see [`claim_lane`]). Nothing when the endpoint is no
/// longer FIFO (its rows are the concurrent claim's, lanes or not).
pub async fn claim(
    client: &mut deadpool_postgres::Client,
    endpoint_id: &str,
    now: i64,
    lease_end: i64,
    room: usize,
) -> StoreResult<Vec<Row>> {
    // The lanes with something due, after taking into its lane any due row of the endpoint
    // outside one (`strays`): written for it while a change to FIFO was committing, by an
    // ingest or a resend whose snapshot still read it as concurrent. Its first try may have
    // gone beside the lane; its retries wait their turn. (The rows taken in read as they
    // were in this statement's snapshot, hence the union.) Only while the endpoint is FIFO:
    // the caller read that before this statement, and a change back to concurrent committed
    // since has just taken every row out of its lane, which must not be put back (they would
    // be parked below, and nothing wakes parked rows of a concurrent endpoint). Nor a
    // scheduled message's delivery (`not_before`): it joins no lane, and goes beside them
    // (`queries::claim_due`).
    // The lanes come longest due first, so that a claim with room for fewer than there are
    // takes those that waited longest, not those first by key, whose later lanes a busy
    // endpoint would starve.
    // (Subqueries rather than a join with `messages`: PostgreSQL then settles on one plan for
    // the prepared statement instead of planning it again at every claim.)
    static KEYS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH strays AS ( \
                 UPDATE deliveries d SET lane_seq = (SELECT seq FROM messages WHERE id = d.msg_id), lane_key = {} \
                 WHERE d.endpoint_id = $1 AND d.status = 1 AND d.lane_seq IS NULL AND d.due_at <= $2 \
                   AND d.not_before IS NULL AND EXISTS (SELECT 1 FROM endpoints e WHERE e.id = $1 AND e.fifo) \
                 RETURNING d.lane_key, d.due_at \
             ), awake AS ( \
                 SELECT lane_key, due_at FROM strays \
                 UNION ALL \
                 SELECT lane_key, due_at FROM deliveries WHERE endpoint_id = $1 AND status = 1 \
                   AND lane_seq IS NOT NULL AND due_at IS NOT NULL AND due_at <= $2 \
             ) SELECT lane_key FROM awake GROUP BY lane_key ORDER BY min(due_at), lane_key LIMIT $3",
            lane_key_sql("d.msg_id")
        )
    });
    let keys = query(&*client, &KEYS, &[&endpoint_id, &now, &MAX_LANES_PER_CLAIM]).await?;
    let mut heads = Vec::new();
    for key in &keys {
        if heads.len() >= room {
            break;
        }
        let key: &str = super::rows::get(key, 0)?;
        match claim_lane(client, endpoint_id, key, now, lease_end).await {
            Ok(Lane::Claimed(head)) => heads.extend(head),
            Ok(Lane::NotFifo) => break,
            // Its rows (or its endpoint's) held by a long transaction: the endpoint's lanes
            // are left for a later claim, rather than each waited for in turn, while the
            // other endpoints' deliveries go on being claimed.
            Err(e) if super::is_lock_wait(&e) => {
                tracing::warn!(%endpoint_id, "a FIFO lane's rows are held by another transaction; its lanes wait for a later claim");
                break;
            }
            // A deadlock with a transaction that took the endpoint's row after its deliveries
            // (recording an attempt that changed the endpoint's failure streak, deleting the
            // endpoint) rolled this lane's claim back whole: left to the next claim, as a lane
            // another node is claiming is.
            Err(e) if super::is_transient(&e) => {
                tracing::debug!(error = %e, %endpoint_id, "claiming a FIFO lane met a deadlock; left for the next claim");
            }
            // Heads of lanes claimed before stay claimed (each lane's claim committed):
            // handed over, rather than stranded with their lanes until their lease ends.
            Err(e) if !heads.is_empty() => {
                tracing::warn!(error = %e, %endpoint_id, "claiming a FIFO lane failed; the lanes claimed before go");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(heads)
}

/// What [`claim_lane`] found.
enum Lane {
    /// The lane's head when leased (nothing when another node is claiming the lane, or the
    /// lane must wait).
    Claimed(Vec<Row>),
    /// The endpoint is FIFO no longer (or is gone): none of its lanes is to be claimed.
    NotFifo,
}

/// Leases the head of the lane `(endpoint_id, lane_key)` (see `sqlite::lanes`); nothing
/// when another node is claiming the lane right now.
async fn claim_lane(
    client: &mut deadpool_postgres::Client,
    endpoint_id: &str,
    lane_key: &str,
    now: i64,
    lease_end: i64,
) -> StoreResult<Lane> {
    // Three updates of the head, at most one of which matches: lease it (nothing in flight,
    // due), hold it back until the lease in flight ends, or leave it (a scheduled retry).
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH flight AS ( \
                 SELECT MAX(due_at) AS until FROM deliveries WHERE endpoint_id = $1 AND lane_key = $4 AND status = 1 \
                     AND lane_seq IS NOT NULL AND due_at IS NOT NULL AND leased AND due_at > $2 \
             ), head AS ( \
                 SELECT ctid, msg_id FROM deliveries \
                 WHERE endpoint_id = $1 AND lane_key = $4 AND status = 1 AND lane_seq IS NOT NULL \
                   AND NOT (leased AND due_at > $2) \
                 ORDER BY lane_seq LIMIT 1 \
             ), parked AS ( \
                 UPDATE deliveries d SET due_at = NULL \
                 WHERE d.endpoint_id = $1 AND d.lane_key = $4 AND d.status = 1 AND d.lane_seq IS NOT NULL \
                   AND d.due_at IS NOT NULL AND NOT d.leased AND d.msg_id <> (SELECT msg_id FROM head) \
             ), held AS ( \
                 UPDATE deliveries d SET due_at = GREATEST(COALESCE(d.due_at, 0), flight.until), leased = false \
                 FROM flight \
                 WHERE flight.until IS NOT NULL AND d.ctid = (SELECT ctid FROM head) AND d.status = 1 \
             ), {}",
            claimed_jobs_sql(
                "UPDATE deliveries d SET due_at = $3, leased = true FROM flight \
                 WHERE flight.until IS NULL AND d.ctid = (SELECT ctid FROM head) AND d.status = 1 \
                   AND (d.due_at IS NULL OR d.due_at <= $2)"
            )
        )
    });
    // With the lane's lock, whether the endpoint is FIFO now: the caller read it before, and
    // a change back to concurrent may have committed since (its rows then left their lanes,
    // and the claim below would park those put back in one by a write that raced the change,
    // for good: nothing wakes a concurrent endpoint's parked rows). The share lock waits for
    // a change being committed right now, and keeps one from committing until this claim
    // has: the change's move out of the lanes then reads what this claim wrote, parked rows
    // included. (One statement for both: a round trip less for every head of every lane.)
    static LOCK: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT pg_try_advisory_xact_lock({LANE_KEY}), \
                 (SELECT fifo FROM endpoints WHERE id = $1 FOR SHARE)"
        )
    });
    let tx = client.transaction().await.map_err(db_err)?;
    // (The setting pipelined with the lock's statement: no round trip of its own.)
    let lock_params: [&(dyn ToSql + Sync); 2] = [&endpoint_id, &lane_key];
    let rows = super::with_lock_wait(&tx, super::SET_SHORT_LOCK_WAIT, query(&tx, &LOCK, &lock_params)).await?;
    let (locked, fifo): (bool, Option<bool>) = match rows.first() {
        Some(row) => (super::rows::get(row, 0)?, super::rows::get(row, 1)?),
        None => (false, None),
    };
    if !locked {
        return Ok(Lane::Claimed(Vec::new())); // the transaction rolls back on drop
    }
    if fifo != Some(true) {
        return Ok(Lane::NotFifo); // the transaction rolls back on drop
    }
    let params: [&(dyn ToSql + Sync); 4] = [&endpoint_id, &now, &lease_end, &lane_key];
    let found = query(&tx, &SQL, &params).await?;
    tx.commit().await.map_err(db_err)?;
    Ok(Lane::Claimed(found))
}

/// Wakes the new head of each of `lanes` (`(endpoint_id, lane_key)`, whose rows were just
/// recorded as finished) due at `now`, under each lane's lock, taken in lane order before a
/// statement of its own: the wake-up then reads past any claim of the lane that had read
/// the finished row as still in flight (see the module).
pub async fn settle(
    client: &mut deadpool_postgres::Client,
    mut lanes: Vec<(String, String)>,
    now: i64,
) -> StoreResult<()> {
    const WAKE: &str = "UPDATE deliveries w SET due_at = $3 WHERE w.ctid = ( \
             SELECT ctid FROM deliveries x WHERE x.endpoint_id = $1 AND x.lane_key = $2 AND x.status = 1 \
               AND x.lane_seq IS NOT NULL AND NOT (x.leased AND x.due_at > $3) ORDER BY x.lane_seq LIMIT 1 \
         ) AND w.status = 1 AND NOT w.leased AND (w.due_at IS NULL OR w.due_at > $3)";
    if lanes.is_empty() {
        return Ok(());
    }
    lanes.sort();
    lanes.dedup();
    let tx = client.transaction().await.map_err(db_err)?;
    let lock = format!("SELECT pg_advisory_xact_lock({LANE_KEY})");
    for (endpoint_id, lane_key) in &lanes {
        query(&tx, &lock, &[endpoint_id, lane_key]).await?;
    }
    for (endpoint_id, lane_key) in &lanes {
        execute(&tx, WAKE, &[endpoint_id, lane_key, &now]).await?;
    }
    tx.commit().await.map_err(db_err)
}

/// Takes, in `tx`, the locks of the lanes the pending deliveries of message `msg_id` are
/// in, in lane order (as [`settle`] does): a claim of those lanes then waits for `tx`, and
/// `tx`'s next statements read whatever a claim committed before.
pub async fn lock_message_lanes(
    tx: &deadpool_postgres::Transaction<'_>,
    app_id: &str,
    msg_id: &str,
) -> StoreResult<()> {
    const LANES: &str = "SELECT DISTINCT endpoint_id, lane_key FROM deliveries \
         WHERE app_id = $1 AND msg_id = $2 AND status = 1 AND lane_seq IS NOT NULL ORDER BY 1, 2";
    // The message first (as a prune does): a resend, which locks it for share, then waits,
    // and cannot make a delivery pending in a lane not locked here.
    query(tx, "SELECT 1 FROM messages WHERE app_id = $1 AND id = $2 FOR UPDATE", &[&app_id, &msg_id]).await?;
    let lock = format!("SELECT pg_advisory_xact_lock({LANE_KEY})");
    for lane in query(tx, LANES, &[&app_id, &msg_id]).await? {
        let (endpoint_id, lane_key): (String, String) = (super::rows::get(&lane, 0)?, super::rows::get(&lane, 1)?);
        query(tx, &lock, &[&endpoint_id, &lane_key]).await?;
    }
    Ok(())
}

/// The lanes the rows of a finishing statement's result left (`endpoint_id, lane_key`).
pub fn finished_lanes(rows: &[Row]) -> StoreResult<Vec<(String, String)>> {
    rows.iter().map(|r| Ok((super::rows::get(r, 0)?, super::rows::get(r, 1)?))).collect()
}

/// The end of a finishing statement: the lanes its rows (the CTE `finished`, as
/// [`advance_cte`] reads it) left, for [`settle`].
pub fn select_finished_lanes(finished: &str) -> String {
    format!("SELECT DISTINCT endpoint_id, lane_key FROM {finished} WHERE lane_seq IS NOT NULL AND status <> 1")
}

/// The endpoint's ordering changed (see `sqlite::lanes::reorder`).
pub async fn reorder<C: GenericClient>(c: &C, endpoint_id: &str, fifo: bool, now: i64) -> StoreResult<()> {
    if fifo {
        execute(
            c,
            &format!(
                "UPDATE deliveries SET lane_seq = (SELECT seq FROM messages WHERE id = deliveries.msg_id), \
                 lane_key = {} WHERE endpoint_id = $1 AND status = 1 AND (not_before IS NULL OR not_before <= $2)",
                lane_key_sql("deliveries.msg_id")
            ),
            &[&endpoint_id, &now],
        )
        .await?;
    } else {
        execute(
            c,
            "UPDATE deliveries SET lane_seq = NULL, due_at = COALESCE(due_at, $2) \
             WHERE endpoint_id = $1 AND status = 1 AND lane_seq IS NOT NULL",
            &[&endpoint_id, &now],
        )
        .await?;
    }
    Ok(())
}
