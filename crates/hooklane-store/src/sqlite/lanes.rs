//! FIFO lanes (an endpoint's `DeliveryOrder::Fifo`): its deliveries with one ordering key
//! (`lane_key`, the message's; `''` for none) are sent one at a time, in the order their
//! messages were stored; deliveries with different keys go side by side.
//!
//! A delivery is in a lane when it has a `lane_seq`: its message's `seq`, given when the
//! delivery becomes pending for an endpoint that is FIFO then (so a replayed old message
//! takes its place before newer ones). A lane is `(endpoint_id, lane_key)`. The writer is
//! the only one to touch lanes, so every function here runs inside one of its transactions
//! and needs no lock.
//!
//! A lane's *head* is its lowest row not in flight (leased, lease not over). It is leased
//! only while nothing of the lane is in flight. The claim that finds rows waiting *parks*
//! every other one (`due_at` NULL), so pollers do not see a blocked backlog as due and spin
//! on it; a head held back by a row in flight is made due when that row's lease ends, not
//! parked: when a lane row finishes, [`advance`] makes the new head due at once, and should
//! that wake-up be lost (on PostgreSQL, a claim racing the record; a crash between them)
//! the lane still moves on at the lease's end. A parked head is claimable as it is.

use hooklane_core::model::Delivery;
use rusqlite::{params, Connection};

use super::queries::{execute, query_all, query_opt};
use super::rows;
use crate::queries_shared::lane_key_sql;
use crate::StoreResult;

/// Keys of one endpoint's lanes looked at by one claim at most (the others wait for the
/// next claim, which a short claim is followed by at once).
const MAX_LANES_PER_CLAIM: i64 = 1000;

/// Leases the heads of the endpoint's lanes that have something due at `now`, at most
/// `room` of them, until `lease_end` (see [`claim_lane`]).
pub fn claim(
    conn: &Connection,
    endpoint_id: &str,
    now: i64,
    lease_end: i64,
    room: usize,
) -> StoreResult<Vec<Delivery>> {
    // Longest due first: a claim with room for fewer lanes than there are takes those that
    // waited longest, not those first by key, whose later lanes a busy endpoint would starve.
    let keys: Vec<String> = query_all(
        conn,
        "SELECT lane_key FROM deliveries WHERE endpoint_id = ?1 AND status = 1 AND lane_seq IS NOT NULL \
         AND due_at IS NOT NULL AND due_at <= ?2 GROUP BY lane_key ORDER BY MIN(due_at), lane_key LIMIT ?3",
        params![endpoint_id, now, MAX_LANES_PER_CLAIM],
        |r| r.get(0),
    )?;
    let mut heads = Vec::new();
    for key in keys {
        if heads.len() >= room {
            break;
        }
        heads.extend(claim_lane(conn, endpoint_id, &key, now, lease_end)?);
    }
    Ok(heads)
}

/// Leases the head of the lane `(endpoint_id, lane_key)` until `lease_end` if nothing of the
/// lane is in flight and the head is due at `now`, and parks every other waiting row of it.
fn claim_lane(
    conn: &Connection,
    endpoint_id: &str,
    lane_key: &str,
    now: i64,
    lease_end: i64,
) -> StoreResult<Option<Delivery>> {
    let in_flight_until: Option<i64> = query_opt(
        conn,
        "SELECT MAX(due_at) FROM deliveries WHERE endpoint_id = ?1 AND lane_key = ?2 AND status = 1 \
         AND lane_seq IS NOT NULL AND due_at IS NOT NULL AND leased = 1 AND due_at > ?3",
        params![endpoint_id, lane_key, now],
        |r| r.get(0),
    )?
    .flatten();
    let head: Option<(String, Option<i64>)> = query_opt(
        conn,
        "SELECT msg_id, due_at FROM deliveries WHERE endpoint_id = ?1 AND lane_key = ?2 AND status = 1 \
         AND lane_seq IS NOT NULL AND NOT (leased = 1 AND due_at > ?3) ORDER BY lane_seq LIMIT 1",
        params![endpoint_id, lane_key, now],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let Some((head_id, head_due)) = head else { return Ok(None) };
    // Whatever else waits is behind the head: asleep until the lane moves on.
    execute(
        conn,
        "UPDATE deliveries SET due_at = NULL WHERE endpoint_id = ?1 AND lane_key = ?2 AND status = 1 \
         AND lane_seq IS NOT NULL AND due_at IS NOT NULL AND leased = 0 AND msg_id <> ?3",
        params![endpoint_id, lane_key, head_id],
    )?;
    if let Some(until) = in_flight_until {
        // The head waits for what is in flight: due when that lease ends at the latest (or
        // at its own retry, if later), so it is neither due meanwhile nor forgotten.
        execute(
            conn,
            "UPDATE deliveries SET due_at = MAX(COALESCE(due_at, 0), ?3), leased = 0 \
             WHERE msg_id = ?1 AND endpoint_id = ?2 AND status = 1",
            params![head_id, endpoint_id, until],
        )?;
        return Ok(None);
    }
    if head_due.is_some_and(|due| due > now) {
        return Ok(None); // a scheduled retry stays scheduled
    }
    query_opt(
        conn,
        &format!(
            "UPDATE deliveries SET due_at = ?3, leased = 1 WHERE msg_id = ?1 AND endpoint_id = ?2 AND status = 1 \
             RETURNING {}",
            rows::DELIVERY_COLS
        ),
        params![head_id, endpoint_id, lease_end],
        rows::delivery,
    )
}

/// A row of the lane `(endpoint_id, lane_key)` finished (or left it): the new head is due at
/// `now`, if it was parked or held back.
pub fn advance(conn: &Connection, endpoint_id: &str, lane_key: &str, now: i64) -> StoreResult<()> {
    execute(
        conn,
        "UPDATE deliveries SET due_at = ?3 WHERE endpoint_id = ?1 AND lane_key = ?2 AND status = 1 AND leased = 0 \
         AND (due_at IS NULL OR due_at > ?3) AND msg_id = (SELECT msg_id FROM deliveries \
         WHERE endpoint_id = ?1 AND lane_key = ?2 AND status = 1 AND lane_seq IS NOT NULL \
         AND NOT (leased = 1 AND due_at > ?3) ORDER BY lane_seq LIMIT 1)",
        params![endpoint_id, lane_key, now],
    )?;
    Ok(())
}

/// A row of the lane `(endpoint_id, lane_key)` on the wire until `until` left it without
/// its attempt being recorded (its message's content was deleted): the new head is due when
/// that lease ends at the latest (or at its own retry, if later). It goes neither beside the
/// row on the wire nor never: the attempt's record, when there is one, moves it to at once
/// ([`advance`]), and when there is none (the send never started, the node died) the lease's
/// end does.
pub fn hold_head(conn: &Connection, endpoint_id: &str, lane_key: &str, until: i64, now: i64) -> StoreResult<()> {
    execute(
        conn,
        "UPDATE deliveries SET due_at = MAX(COALESCE(due_at, 0), ?3), leased = 0          WHERE endpoint_id = ?1 AND lane_key = ?2 AND status = 1 AND leased = 0 AND msg_id = (SELECT msg_id          FROM deliveries WHERE endpoint_id = ?1 AND lane_key = ?2 AND status = 1 AND lane_seq IS NOT NULL          AND NOT (leased = 1 AND due_at > ?4) ORDER BY lane_seq LIMIT 1)",
        params![endpoint_id, lane_key, until, now],
    )?;
    Ok(())
}

/// The endpoint's ordering changed: its pending deliveries join lanes in message order, or
/// leave them (parked ones due at `now`). Deliveries in flight at the change finish as they
/// were sent; a new lane's head waits for those of its lane.
pub fn reorder(conn: &Connection, endpoint_id: &str, fifo: bool, now: i64) -> StoreResult<()> {
    if fifo {
        execute(
            conn,
            &format!(
                "UPDATE deliveries SET lane_seq = (SELECT seq FROM messages WHERE id = deliveries.msg_id), \
                 lane_key = {} WHERE endpoint_id = ?1 AND status = 1 AND (not_before IS NULL OR not_before <= ?2)",
                lane_key_sql("deliveries.msg_id")
            ),
            params![endpoint_id, now],
        )?;
    } else {
        execute(
            conn,
            "UPDATE deliveries SET lane_seq = NULL, due_at = COALESCE(due_at, ?2) \
             WHERE endpoint_id = ?1 AND status = 1 AND lane_seq IS NOT NULL",
            params![endpoint_id, now],
        )?;
    }
    Ok(())
}
