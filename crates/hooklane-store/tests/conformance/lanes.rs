//! Conformance cases of FIFO lanes: an endpoint whose ordering is FIFO has one delivery in
//! flight at a time, the oldest message first, and a failing one holds the lane.

use hooklane_core::model::DeliveryOrder;

use super::*;

async fn setup_fifo_endpoint(store: &DynStore, app_id: &str) -> Endpoint {
    let mut ep = new_endpoint(app_id, None);
    ep.order = DeliveryOrder::Fifo;
    store.create_endpoint(ep.clone()).await.expect("create endpoint");
    ep
}

/// Posts `n` messages to `eps`, one millisecond apart from `t`.
async fn post_many(store: &DynStore, app_id: &str, eps: &[&Endpoint], t: DateTime<Utc>, n: i64) -> Vec<Message> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(post(store, app_id, eps, t + millis(i)).await);
    }
    out
}

/// The messages of the claimed jobs to `ep`, in claim order.
fn to(jobs: &[Job], ep: &Endpoint) -> Vec<String> {
    jobs.iter().filter(|j| j.endpoint.id == ep.id).map(|j| j.message.id.clone()).collect()
}

fn ids(msgs: &[&Message]) -> Vec<String> {
    msgs.iter().map(|m| m.id.clone()).collect()
}

async fn record(store: &DynStore, msg: &Message, ep: &Endpoint, at: DateTime<Utc>, next: NextStep) {
    store.record_attempts(vec![outcome(&msg.id, ep, at, next)], HOUR).await.expect("record");
}

pub async fn fifo_lane_sends_one_at_a_time_in_order(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let side = setup_endpoint(store, &app.id).await;
    let m = post_many(store, &app.id, &[&fifo, &side], t, 4).await;
    assert_eq!(endpoint_now(store, &fifo).await.order, DeliveryOrder::Fifo, "the ordering is kept");

    let now = t + secs(1);
    let jobs = claim(store, now).await;
    assert_eq!(to(&jobs, &fifo), ids(&[&m[0]]), "only the oldest of the lane");
    assert_eq!(to(&jobs, &side).len(), 4, "a concurrent endpoint gets everything at once");
    for msg in &m {
        record(store, msg, &side, now, NextStep::Succeeded).await;
    }
    assert!(claim(store, now).await.is_empty(), "nothing while the head is in flight");
    let next = store.next_due_at(&[]).await.unwrap().expect("the head's lease ends");
    assert!(next > now, "rows waiting behind the head are not due (a poller would spin): {next} <= {now}");

    record(store, &m[0], &fifo, now, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&m[1]]), "the next one once the head succeeded");

    // A failing head holds the lane until its retry, then until it is given up.
    let retry = now + secs(10);
    record(store, &m[1], &fifo, now, NextStep::RetryAt(retry)).await;
    assert!(claim(store, now).await.is_empty(), "nothing passes a failing head");
    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(retry), "the poller sleeps until the retry");
    let later = retry + secs(1);
    assert_eq!(to(&claim(store, later).await, &fifo), ids(&[&m[1]]), "the retry of the head");
    record(store, &m[1], &fifo, later, NextStep::GiveUp).await;
    assert_eq!(delivery(store, &app.id, &m[1].id, &fifo.id).await.status, DeliveryStatus::Fail);
    assert_eq!(to(&claim(store, later).await, &fifo), ids(&[&m[2]]), "a head given up lets the next go");

    // The lease of a node that died ends: the same head again, not the one behind it.
    let expired = later + secs(61);
    assert_eq!(to(&claim(store, expired).await, &fifo), ids(&[&m[2]]), "an expired head is taken over");
    record(store, &m[2], &fifo, expired, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, expired).await, &fifo), ids(&[&m[3]]));
    record(store, &m[3], &fifo, expired, NextStep::Succeeded).await;
    assert!(claim(store, expired).await.is_empty());
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "the lane is empty");
    for (msg, status) in m.iter().zip([DeliveryStatus::Success, DeliveryStatus::Fail]) {
        assert_eq!(delivery(store, &app.id, &msg.id, &fifo.id).await.status, status);
    }
}

pub async fn fifo_lane_replays_keep_message_order_and_ordering_can_change(store: &DynStore) {
    let t = now_ms() - mins(1);
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let m = post_many(store, &app.id, &[&fifo], t, 3).await;
    let now = t + secs(1);
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&m[0]]));
    record(store, &m[0], &fifo, now, NextStep::GiveUp).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&m[1]]));

    // A recovered old message waits for the one in flight, then goes before newer ones.
    assert_eq!(store.recover(&app.id, &fifo.id, (t - mins(1), None), now, ("", 1000)).await.unwrap().0, 1);
    assert!(claim(store, now).await.is_empty(), "the one in flight finishes first");
    record(store, &m[1], &fifo, now, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&m[0]]), "the recovered message takes its place");
    record(store, &m[0], &fifo, now, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&m[2]]));
    record(store, &m[2], &fifo, now, NextStep::Succeeded).await;

    // A resend of a delivered message is a lane row like the others.
    store.resend(&app.id, &m[1].id, &fifo.id, now).await.unwrap();
    let more = post_many(store, &app.id, &[&fifo], t + millis(100), 3).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&m[1]]), "the resent (older) message first");
    record(store, &m[1], &fifo, now, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&more[0]]));

    // Concurrent again: what waited in the lane is due at once, beside the one in flight.
    let mut ep = endpoint_now(store, &fifo).await;
    ep.order = DeliveryOrder::Concurrent;
    ep.updated_at = now;
    store.update_endpoint(ep.clone(), None).await.unwrap();
    let rest: BTreeSet<String> = to(&claim(store, now).await, &fifo).into_iter().collect();
    assert_eq!(rest, ids(&[&more[1], &more[2]]).into_iter().collect(), "parked rows are due again");

    // FIFO again, with three in flight: the lane waits for all of them.
    ep.order = DeliveryOrder::Fifo;
    store.update_endpoint(ep.clone(), None).await.unwrap();
    let last = post_many(store, &app.id, &[&fifo], t + millis(200), 2).await;
    assert!(claim(store, now).await.is_empty(), "deliveries in flight at the change hold the new lane");
    for msg in &more {
        record(store, msg, &fifo, now, NextStep::Succeeded).await;
    }
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&last[0]]));

    // A head abandoned (its endpoint was disabled) or whose message's content was deleted
    // moves the lane on too (abandoning happens at the clock's time).
    store.abandon_deliveries(vec![unleased(&last[0].id, &fifo.id)]).await.unwrap();
    let now = now_ms() + secs(1);
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&last[1]]));
    let tail = post_many(store, &app.id, &[&fifo], t + millis(300), 2).await;
    // Its content deleted while it is on the wire: the next waits for its attempt's record.
    store.expunge_message_content(&app.id, &last[1].id, now).await.unwrap();
    assert!(claim(store, now).await.is_empty(), "the next does not go beside the one on the wire");
    record(store, &last[1], &fifo, now, NextStep::RetryAt(now + secs(10))).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&tail[0]]), "an expunged head lets the next go");
    // And when no attempt is ever recorded (the send never started, its node died), the
    // lease's end moves the lane on.
    store.expunge_message_content(&app.id, &tail[0].id, now).await.unwrap();
    assert!(claim(store, now).await.is_empty(), "held while the lease runs");
    let later = now + LEASE + secs(1);
    assert_eq!(to(&claim(store, later).await, &fifo), ids(&[&tail[1]]), "the lease's end moved the lane on");
}

/// Posts a message with an ordering key (`None`: the endpoint's keyless lane).
async fn post_keyed(store: &DynStore, app_id: &str, ep: &Endpoint, at: DateTime<Utc>, key: Option<&str>) -> Message {
    let mut msg = new_message(app_id, "order.updated", at);
    msg.ordering_key = key.map(String::from);
    store.create_message(msg.clone(), vec![ep.id.clone()], None).await.expect("create message");
    msg
}

pub async fn fifo_lanes_by_ordering_key_go_side_by_side(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let a0 = post_keyed(store, &app.id, &fifo, t, Some("order-a")).await;
    let b0 = post_keyed(store, &app.id, &fifo, t, Some("order-b")).await;
    let a1 = post_keyed(store, &app.id, &fifo, t, Some("order-a")).await;
    let none = post_keyed(store, &app.id, &fifo, t, None).await;
    let b1 = post_keyed(store, &app.id, &fifo, t, Some("order-b")).await;
    let read = store.get_message(&app.id, &a0.id).await.unwrap().expect("stored");
    assert_eq!(read.ordering_key.as_deref(), Some("order-a"), "the key is kept");

    let now = t + secs(1);
    let heads: BTreeSet<String> = to(&claim(store, now).await, &fifo).into_iter().collect();
    assert_eq!(heads, ids(&[&a0, &b0, &none]).into_iter().collect(), "the head of each lane at once");
    assert!(claim(store, now).await.is_empty(), "every lane has its head in flight");

    // A failing head holds its own lane only.
    let retry = now + secs(10);
    record(store, &a0, &fifo, now, NextStep::RetryAt(retry)).await;
    record(store, &b0, &fifo, now, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&b1]), "lane b moves on past lane a's failure");
    record(store, &b1, &fifo, now, NextStep::Succeeded).await;
    record(store, &none, &fifo, now, NextStep::Succeeded).await;
    assert!(claim(store, now).await.is_empty(), "a1 waits behind a0");
    let later = retry + secs(1);
    assert_eq!(to(&claim(store, later).await, &fifo), ids(&[&a0]));
    record(store, &a0, &fifo, later, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, later).await, &fifo), ids(&[&a1]));
}

// --- REVIEW cases

/// A replayed older message heads the lane while a newer one is in flight: it may not be
/// sent yet, so it must not read as due either (a poller would claim in a loop, every
/// `idle_pause` minimum of 5 ms, until the attempt in flight ends).
pub async fn fifo_lane_head_held_back_is_not_due(store: &DynStore) {
    let t = now_ms() - mins(1);
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let m = post_many(store, &app.id, &[&fifo], t, 2).await;
    let now = t + secs(1);
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&m[0]]));
    record(store, &m[0], &fifo, now, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&m[1]]));
    store.resend(&app.id, &m[0].id, &fifo.id, now).await.unwrap();
    for _ in 0..3 {
        assert!(claim(store, now).await.is_empty(), "m1 is in flight");
        let next = store.next_due_at(&[]).await.unwrap();
        assert!(next.is_some_and(|n| n > now), "the blocked head reads as due: {next:?} <= {now}");
    }
}

/// Rows parked behind a lane's head are pending: the queue gauges must count them.
pub async fn fifo_lane_parked_rows_are_counted(store: &DynStore) {
    let t = now_ms() - mins(1);
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    post_many(store, &app.id, &[&fifo], t, 3).await;
    let now = t + secs(1);
    assert_eq!(claim(store, now).await.len(), 1);
    let q = store.queue_stats(now).await.unwrap();
    assert_eq!((q.leased, q.due + q.scheduled), (1, 2), "two wait behind the head: {q:?}");
}

/// A resend of the lane's head while it is in flight: not sent beside the attempt on the
/// wire, nor lost when that attempt succeeds: sent again once its lease has ended, and the
/// lane goes on after it.
pub async fn fifo_lane_resend_of_head_in_flight_is_not_sent_twice(store: &DynStore) {
    let t = now_ms() - mins(1);
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let m = post_many(store, &app.id, &[&fifo], t, 2).await;
    let now = t + secs(1);
    let first = claim(store, now).await;
    assert_eq!(to(&first, &fifo), ids(&[&m[0]]));
    store.resend(&app.id, &m[0].id, &fifo.id, now).await.unwrap();
    assert!(claim(store, now).await.is_empty(), "m0 is not sent a second time beside the first");
    // The first attempt's outcome, under the lease it was sent with.
    let mut outcome = super::outcome(&m[0].id, &fifo, now, NextStep::Succeeded);
    outcome.lease = first[0].delivery.next_attempt_at;
    store.record_attempts(vec![outcome], HOUR).await.unwrap();
    assert!(claim(store, now).await.is_empty(), "m1 does not overtake the resend");
    let later = now + LEASE + secs(1);
    assert_eq!(to(&claim(store, later).await, &fifo), ids(&[&m[0]]), "the resend goes once that lease is over");
    record(store, &m[0], &fifo, later, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, later).await, &fifo), ids(&[&m[1]]));
}

/// A message posted with its deliveries leased to the poster (ingest's hand-over) leases
/// those to concurrent endpoints only: the FIFO one joins its lane, whatever the poster's
/// cache believed, and is claimed from it.
pub async fn fifo_deliveries_are_never_handed_over_leased(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let side = setup_endpoint(store, &app.id).await;
    let first = post(store, &app.id, &[&fifo], t).await;
    let msg = new_message(&app.id, "user.created", t);
    let leased =
        store.create_message(msg.clone(), vec![fifo.id.clone(), side.id.clone()], Some(t + mins(1))).await.unwrap();
    assert_eq!(leased, vec![side.id.clone()], "only the concurrent endpoint's delivery is handed over");
    let now = t + secs(1);
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&first]), "the lane's head; the new one waits behind it");
    record(store, &first, &fifo, now, NextStep::Succeeded).await;
    assert_eq!(to(&claim(store, now).await, &fifo), ids(&[&msg]), "then the message posted leased");
}

/// Many leased posts at once (batched together where the store batches ingest), to a FIFO
/// endpoint and two concurrent ones, half of them duplicating another's `eventId`: each
/// accepted message answers exactly its concurrent endpoints as handed over, each duplicate
/// is refused, and the lane still gets every accepted message in turn.
pub async fn fifo_concurrent_leased_posts_hand_over_their_own_concurrent_deliveries(store: &DynStore) {
    const N: usize = 40;
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let (a, b) = (setup_endpoint(store, &app.id).await, setup_endpoint(store, &app.id).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (s, app_id) = (store.clone(), app.id.clone());
        let eps = vec![fifo.id.clone(), a.id.clone(), b.id.clone()];
        tasks.spawn(async move {
            let mut msg = new_message(&app_id, "user.created", t);
            msg.event_id = Some(format!("evt-{}", i / 2));
            (msg.id.clone(), s.create_message(msg, eps, Some(t + mins(1))).await)
        });
    }
    let mut accepted = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            (id, Ok(handed)) => {
                let handed: BTreeSet<String> = handed.into_iter().collect();
                assert_eq!(handed, BTreeSet::from([a.id.clone(), b.id.clone()]), "{id}");
                accepted.push(id);
            }
            (_, Err(StoreError::Conflict(_))) => {}
            (_, Err(e)) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(accepted.len(), N / 2, "one message per eventId");
    let mut sent = Vec::new();
    let mut now = t + secs(1);
    while let Some(job) = claim(store, now).await.into_iter().next() {
        assert_eq!(job.endpoint.id, fifo.id, "the concurrent deliveries stay leased to their writer");
        sent.push(job.message.id.clone());
        record(store, &job.message, &fifo, now, NextStep::Succeeded).await;
        now += millis(1);
        assert!(sent.len() <= N / 2, "{sent:?}");
    }
    sent.sort();
    accepted.sort();
    assert_eq!(sent, accepted, "the lane sends each accepted message once");
}

/// A scheduled message's delivery to a FIFO endpoint (the API refuses one; an endpoint made
/// FIFO meanwhile can get one) joins no lane: the lane neither waits for it nor sends it early.
pub async fn scheduled_message_joins_no_lane(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let head = post(store, &app.id, &[&fifo], t).await;
    let at = t + mins(10);
    let msg = new_message(&app.id, "user.created", t + millis(1));
    store.schedule_message(msg.clone(), vec![fifo.id.clone()], at).await.unwrap();
    let behind = post(store, &app.id, &[&fifo], t + millis(2)).await;
    assert_eq!(job_keys(&claim(store, t + secs(1)).await), set([pair(&head, &fifo)]), "the lane's head only");
    record(store, &head, &fifo, t + secs(1), NextStep::Succeeded).await;
    assert_eq!(
        job_keys(&claim(store, t + secs(2)).await),
        set([pair(&behind, &fifo)]),
        "the lane does not wait for it"
    );
    record(store, &behind, &fifo, t + secs(2), NextStep::Succeeded).await;
    assert!(claim(store, at - millis(1)).await.is_empty(), "nor sends it early");
    assert_eq!(job_keys(&claim(store, at).await), set([pair(&msg, &fifo)]), "at its time");
}

/// A scheduled message's delivery to a FIFO endpoint, once due, is sent beside the lane:
/// not held behind the lane's head in flight (nor taken into the lane to wait its turn), and
/// its retries neither; the lane goes on as if it were not there.
pub async fn fifo_scheduled_delivery_goes_beside_a_lane_head_in_flight(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let head = post(store, &app.id, &[&fifo], t).await;
    let at = t + secs(10);
    let scheduled = new_message(&app.id, "user.created", t + millis(1));
    store.schedule_message(scheduled.clone(), vec![fifo.id.clone()], at).await.unwrap();
    let behind = post(store, &app.id, &[&fifo], t + millis(2)).await;
    assert_eq!(job_keys(&claim(store, t + secs(1)).await), set([pair(&head, &fifo)]), "the lane's head only");
    // The head is still on the wire (leased until t + 61 s) when the scheduled one falls due.
    assert_eq!(
        job_keys(&claim(store, at).await),
        set([pair(&scheduled, &fifo)]),
        "the scheduled delivery goes beside the head in flight"
    );
    let retry = at + secs(5);
    record(store, &scheduled, &fifo, at, NextStep::RetryAt(retry)).await;
    assert!(claim(store, at).await.is_empty(), "the row behind the head waits for it");
    assert_eq!(
        job_keys(&claim(store, retry).await),
        set([pair(&scheduled, &fifo)]),
        "its retry goes beside the head too"
    );
    record(store, &scheduled, &fifo, retry, NextStep::Succeeded).await;
    record(store, &head, &fifo, retry, NextStep::Succeeded).await;
    assert_eq!(job_keys(&claim(store, retry).await), set([pair(&behind, &fifo)]), "the lane goes on");
    record(store, &behind, &fifo, retry, NextStep::Succeeded).await;
    assert!(claim(store, retry + hours(1)).await.is_empty(), "each was sent once");

    // At most what the claim may take of the endpoint, lane heads and rows beside them together.
    let later = retry + hours(2);
    let head = post(store, &app.id, &[&fifo], later - secs(2)).await;
    let scheduled = new_message(&app.id, "user.created", later - secs(2));
    store.schedule_message(scheduled.clone(), vec![fifo.id.clone()], later - secs(1)).await.unwrap();
    let one = ClaimRoom { skip: Vec::new(), most: [(fifo.id.clone(), 1)].into_iter().collect() };
    let jobs = store.claim_due(later, 10, LEASE, &one).await.expect("claim_due");
    assert_eq!(job_keys(&jobs), set([pair(&head, &fifo)]), "the lane's head, and room for nothing beside it");
    assert_eq!(job_keys(&claim(store, later).await), set([pair(&scheduled, &fifo)]));
}

/// A claim with room for fewer lanes than an endpoint has due takes the heads due longest,
/// whatever the order of their keys: the lanes whose keys sort last are not starved by those
/// that keep getting messages.
pub async fn fifo_lanes_due_longest_are_claimed_first(store: &DynStore) {
    let (fifo, heads, now) = lanes_due_in_reverse_key_order(store).await;
    assert_lanes_are_claimed_due_longest_first(store, &fifo, &heads, now).await;
}

/// A FIFO endpoint with six lanes whose heads are due in the reverse order of their keys:
/// "k5" first, "k0" last; each lane has a second message, due after every head. Returns the
/// endpoint, the heads in due order, and a time at which all are due.
pub async fn lanes_due_in_reverse_key_order(store: &DynStore) -> (Endpoint, Vec<Message>, DateTime<Utc>) {
    const LANES: i64 = 6;
    let t = now_ms() - mins(1);
    let app = setup_app(store, "A").await;
    let fifo = setup_fifo_endpoint(store, &app.id).await;
    let mut heads = Vec::new();
    for n in 0..LANES {
        let key = format!("k{}", LANES - 1 - n);
        heads.push(post_keyed(store, &app.id, &fifo, t + millis(n), Some(&key)).await);
    }
    for n in 0..LANES {
        post_keyed(store, &app.id, &fifo, t + millis(LANES + n), Some(&format!("k{n}"))).await;
    }
    (fifo, heads, t + secs(1))
}

/// Claims of two at a time at `now` take the lanes of `heads` (in due order) two by two.
pub async fn assert_lanes_are_claimed_due_longest_first(
    store: &DynStore,
    fifo: &Endpoint,
    heads: &[Message],
    now: DateTime<Utc>,
) {
    for pair_of_lanes in heads.chunks(2) {
        let jobs = store.claim_due(now, 2, LEASE, &ClaimRoom::default()).await.expect("claim_due");
        let got: BTreeSet<String> = to(&jobs, fifo).into_iter().collect();
        let want: BTreeSet<String> = pair_of_lanes.iter().map(|m| m.id.clone()).collect();
        assert_eq!(got, want, "the two lanes due longest of those left");
    }
}

/// A scheduled message (Svix's `deliverAt`) replayed to endpoints that missed it, or
/// recovered, before its time waits for it: due then, not hastened before it, and in no
/// lane of a FIFO endpoint (which it would hold up, or which would send it at its turn).
/// Replayed after its time, it is due at once as any other.
pub async fn a_scheduled_message_replayed_or_recovered_waits_for_its_time(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let first = setup_endpoint(store, &app.id).await;
    let at = t + mins(10);
    let msg = Message { deliver_at: Some(at), ..new_message(&app.id, "user.created", t) };
    store.schedule_message(msg.clone(), vec![first.id.clone()], at).await.unwrap();
    let read = store.get_message(&app.id, &msg.id).await.unwrap();
    assert_eq!(read.and_then(|m| m.deliver_at), Some(at), "the message keeps its time");
    // Two endpoints created after it, one of them FIFO, are sent what they missed.
    let (plain, fifo) = (setup_endpoint(store, &app.id).await, setup_fifo_endpoint(store, &app.id).await);
    for ep in [&plain, &fifo] {
        assert_eq!(store.add_deliveries(&app.id, &ep.id, vec![msg.id.clone()], t + secs(1)).await.unwrap(), 1);
        assert_eq!(delivery(store, &app.id, &msg.id, &ep.id).await.next_attempt_at, Some(at), "due at its time");
        assert_eq!(store.hasten_deliveries(&ep.id, at + hours(1), t + secs(2)).await.unwrap(), 0, "not hastened");
    }
    let behind = post(store, &app.id, &[&fifo], t + secs(2)).await;
    assert_eq!(job_keys(&claim(store, t + secs(3)).await), set([pair(&behind, &fifo)]), "the lane goes on");
    record(store, &behind, &fifo, t + secs(3), NextStep::Succeeded).await;
    assert!(claim(store, at - millis(1)).await.is_empty(), "none is sent before its time");
    let jobs = claim(store, at).await;
    assert_eq!(job_keys(&jobs), set([pair(&msg, &first), pair(&msg, &plain), pair(&msg, &fifo)]));
    assert!(jobs.iter().all(|j| *j.message == msg));
    // A failed delivery recovered before the time (as the store is told it) waits for it.
    record(store, &msg, &plain, at + secs(1), NextStep::GiveUp).await;
    let recovered = store.recover(&app.id, &plain.id, (t - hours(1), None), t + secs(4), ("", 10)).await.unwrap();
    assert_eq!(recovered, (1, None));
    assert_eq!(delivery(store, &app.id, &msg.id, &plain.id).await.next_attempt_at, Some(at));
    assert_eq!(store.hasten_deliveries(&plain.id, at + hours(1), t + secs(5)).await.unwrap(), 0);
    // After its time, a replay is due at once.
    let late = setup_endpoint(store, &app.id).await;
    assert_eq!(store.add_deliveries(&app.id, &late.id, vec![msg.id.clone()], at + secs(2)).await.unwrap(), 1);
    assert_eq!(delivery(store, &app.id, &msg.id, &late.id).await.next_attempt_at, Some(at + secs(2)));
}
