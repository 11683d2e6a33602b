//! Group commit for ingest on PostgreSQL. Concurrent `create_message` calls are queued and
//! written together: each batch is one statement (so one transaction and one WAL flush)
//! that inserts every message and every delivery of the batch as multi-row inserts.
//! A few workers write batches in parallel, so one slow commit does not hold up the next.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Pool;
use hooklane_core::model::Message;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::rows::{ms, opt_json, to_json};
use super::{db_err, pool_err, DUE_CHANNEL, MESSAGES_CHANNEL};
use crate::backlog::Place;
use crate::{FirstSend, StoreError, StoreResult};

/// Messages written together at most.
const MAX_BATCH: usize = 256;
/// Batches being written at the same time. Fewer writers make larger batches (fewer
/// statements and commits per message); two keep one slow commit from holding up all
/// ingest. Measured on 2 cores (BENCHMARKS.md): 4 writers 4,350 msg/s, 2 writers 4,727,
/// 1 writer about the same as 2 with less CPU but every commit in series.
const WORKERS: usize = 2;

pub(super) struct IngestJob {
    pub msg: Message,
    pub endpoint_ids: Vec<String>,
    pub start: FirstSend,
    /// Answered with the endpoints whose deliveries were written leased.
    pub reply: oneshot::Sender<StoreResult<Vec<String>>>,
    /// The message's place in the ingest backlog, given back with the job (once answered).
    pub _place: Place,
}

/// Starts the workers and their announcer; they stop when the returned sender (the store)
/// is dropped.
pub(super) fn start(pool: Pool) -> mpsc::UnboundedSender<IngestJob> {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(rx));
    let announcer = Announcer::default();
    for _ in 0..WORKERS {
        tokio::spawn(worker(pool.clone(), rx.clone(), announcer.clone()));
    }
    tokio::spawn(announce_messages(pool, announcer));
    tx
}

/// The applications written since the last announcement, and a wake-up for the task that
/// announces them.
#[derive(Clone, Default)]
struct Announcer {
    written: Arc<std::sync::Mutex<HashSet<String>>>,
    wake: Arc<tokio::sync::Notify>,
}

impl Announcer {
    fn written<'a>(&self, apps: impl IntoIterator<Item = &'a str>) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        for app in apps {
            if !written.contains(app) {
                written.insert(app.to_string());
            }
        }
        // Stored if the announcer is busy: it announces these on its next round.
        self.wake.notify_one();
    }

    /// The payload announcing what was written since the last call, if anything was: the
    /// applications' ids, comma-separated, or nothing (every application) past what a
    /// notification holds.
    fn take_payload(&self) -> Option<String> {
        let written = std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()));
        if written.is_empty() {
            return None;
        }
        let payload = written.into_iter().collect::<Vec<_>>().join(",");
        Some(if payload.len() > MAX_PAYLOAD { String::new() } else { payload })
    }
}

/// PostgreSQL refuses notification payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_000;

/// Tells every node (this one included) which applications messages were written to, for
/// readers of their streams waiting for more: at most once per [`ANNOUNCE_EVERY`], covering
/// every write made meanwhile (a busy node writes a batch every few milliseconds; announcing
/// each would cost a round trip and a transaction per batch). A `NOTIFY` inside the ingest transaction
/// would serialise every ingest commit of the database server (PostgreSQL holds a global
/// lock from a notifying transaction's pre-commit until its commit is flushed), so it goes
/// in a transaction of its own after the commit, not waiting for its own flush: a lost
/// announcement only delays readers until their next periodic look.
async fn announce_messages(pool: Pool, announcer: Announcer) {
    // One statement, so its own transaction: nothing can be left open on a pooled connection
    // if it fails. `set_config(…, true)` holds until that transaction's commit.
    let statement =
        format!("SELECT set_config('synchronous_commit', 'off', true), pg_notify('{MESSAGES_CHANNEL}', $1)");
    // Ends with the store: the workers, the only other holders, stop when it is dropped.
    while Arc::strong_count(&announcer.wake) > 1 {
        if tokio::time::timeout(ANNOUNCER_IDLE_CHECK, announcer.wake.notified()).await.is_err() {
            continue;
        }
        // A wake-up whose writes the last announcement already covered.
        let Some(payload) = announcer.take_payload() else { continue };
        let sent = match pool.get().await {
            Ok(c) => match c.prepare_cached(&statement).await {
                Ok(s) => c.execute(&s, &[&payload]).await.map(|_| ()).map_err(db_err),
                Err(e) => Err(db_err(e)),
            },
            Err(e) => Err(pool_err(e)),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "NOTIFY of new messages failed; readers find them on their next look");
        }
        tokio::time::sleep(ANNOUNCE_EVERY).await;
    }
}

/// Least time between two announcements of new messages by one node.
const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// How often an idle announcer looks whether its store is gone.
const ANNOUNCER_IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

async fn worker(pool: Pool, jobs: Arc<Mutex<mpsc::UnboundedReceiver<IngestJob>>>, announcer: Announcer) {
    loop {
        let mut batch = Vec::new();
        {
            // One worker gathers at a time; the others are writing meanwhile.
            let mut jobs = jobs.lock().await;
            if jobs.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let started = std::time::Instant::now();
        // No connection to be had (the pool's wait, a database refusing them): nothing was
        // sent, so the whole batch is answered at once, not each job after a wait of its own.
        let client = match pool.get().await {
            Ok(client) => client,
            Err(e) => {
                answer(&pool, batch, Err(pool_err(e)), &announcer).await;
                continue;
            }
        };
        let written = write(&client, &batch).await;
        drop(client);
        metrics::histogram!("hooklane_store_commit_seconds", "store" => "postgres").record(started.elapsed());
        if written.is_err() {
            // One bad message must not fail the others: write each on its own. (A batch of
            // one too: its statement may have committed before the connection broke.)
            for job in batch {
                let written = rewrite(&pool, &job).await;
                answer(&pool, vec![job], written, &announcer).await;
            }
            continue;
        }
        answer(&pool, batch, written, &announcer).await;
    }
}

/// Answers every job of a written batch, and has new messages announced.
async fn answer(
    pool: &Pool,
    batch: Vec<IngestJob>,
    written: StoreResult<HashMap<String, Vec<String>>>,
    announcer: &Announcer,
) {
    let inserted = match written {
        Ok(inserted) => inserted,
        Err(e) if batch.len() == 1 => {
            if let Some(job) = batch.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
            return;
        }
        Err(e) => {
            let unavailable = matches!(e, StoreError::Unavailable(_));
            let why = e.to_string();
            for job in batch {
                let why = why.clone();
                let _ = job.reply.send(Err(if unavailable {
                    StoreError::Unavailable(why)
                } else {
                    StoreError::Database(why)
                }));
            }
            return;
        }
    };
    if !inserted.is_empty() {
        announcer.written(batch.iter().filter(|j| inserted.contains_key(&j.msg.id)).map(|j| j.msg.app_id.as_str()));
    }
    let mut unleased = false;
    for job in batch {
        let answer = match inserted.get(&job.msg.id) {
            Some(leased) => {
                unleased |= leased.len() < job.endpoint_ids.len();
                Ok(leased.clone())
            }
            None => Err(StoreError::Conflict("a message with this eventId already exists".into())),
        };
        let _ = job.reply.send(answer);
    }
    // Deliveries leased at ingest are sent by the node that wrote them; others are for
    // whichever node polls first, so wake them all.
    if unleased {
        announce(pool).await;
    }
}

/// Writes the batch; returns the ids of the messages inserted (the others broke a
/// uniqueness rule: a duplicate `eventId`, also within the batch, and wrote nothing), each
/// with the endpoints whose deliveries were written leased.
async fn write(client: &deadpool_postgres::Client, batch: &[IngestJob]) -> StoreResult<HashMap<String, Vec<String>>> {
    let col = |f: &dyn Fn(&Message) -> String| batch.iter().map(|j| f(&j.msg)).collect::<Vec<String>>();
    let ids = col(&|m| m.id.clone());
    let apps = col(&|m| m.app_id.clone());
    let types = col(&|m| m.event_type.clone());
    let payloads = col(&|m| m.payload.clone());
    let event_ids: Vec<Option<&str>> = batch.iter().map(|j| j.msg.event_id.as_deref()).collect();
    let channels: Vec<Option<String>> = batch.iter().map(|j| opt_json(&j.msg.channels)).collect();
    let tags: Vec<Option<String>> = batch.iter().map(|j| opt_json(&j.msg.tags)).collect();
    let created: Vec<i64> = batch.iter().map(|j| ms(j.msg.created_at)).collect();
    let content_types: Vec<Option<&str>> = batch.iter().map(|j| j.msg.content_type.as_deref()).collect();
    let headers: Vec<Option<String>> =
        batch.iter().map(|j| (!j.msg.headers.is_empty()).then(|| to_json(&j.msg.headers))).collect();
    let ordering_keys: Vec<Option<&str>> = batch.iter().map(|j| j.msg.ordering_key.as_deref()).collect();
    // (A scheduled message keeps its time: deliveries added to it later wait for it too.)
    let deliver_at: Vec<Option<i64>> = batch
        .iter()
        .map(|j| match j.start {
            FirstSend::At(t) => Some(ms(t)),
            FirstSend::Now | FirstSend::LeasedUntil(_) => None,
        })
        .collect();
    let (mut d_msg, mut d_ep, mut d_app, mut d_due, mut d_leased, mut d_at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for j in batch {
        let now = ms(j.msg.created_at);
        let (due, leased) = match j.start {
            FirstSend::Now => (now, false),
            FirstSend::LeasedUntil(t) => (ms(t), true),
            FirstSend::At(t) => (ms(t), false),
        };
        for ep in &j.endpoint_ids {
            d_msg.push(j.msg.id.as_str());
            d_ep.push(ep.as_str());
            d_app.push(j.msg.app_id.as_str());
            d_due.push(due);
            d_leased.push(leased);
            d_at.push(now);
        }
    }
    // Prepared once per connection: parsing and analysing this statement again for every
    // batch cost the database more than running it (BENCHMARKS.md, session 5).
    let statement = client.prepare_cached(INGEST_SQL).await.map_err(db_err)?;
    let rows = client
        .query(
            &statement,
            &[
                &ids,
                &apps,
                &types,
                &event_ids,
                &payloads,
                &channels,
                &tags,
                &created,
                &content_types,
                &headers,
                &ordering_keys,
                &d_msg,
                &d_ep,
                &d_app,
                &d_due,
                &d_leased,
                &d_at,
                &deliver_at,
            ],
        )
        .await
        .map_err(db_err)?;
    // One row per message inserted (endpoint NULL), and one per delivery written leased.
    let mut inserted: HashMap<String, Vec<String>> = HashMap::new();
    for row in &rows {
        let msg_id: String = super::rows::get(row, 0)?;
        let endpoint_id: Option<String> = super::rows::get(row, 1)?;
        inserted.entry(msg_id).or_default().extend(endpoint_id);
    }
    Ok(inserted)
}

/// Writes again, on its own, a job of a batch whose statement failed (a batch of one too). That statement may
/// have committed all the same (the connection lost after the commit, before its answer):
/// a message then found under its own id (which this node made up) is this job's, answered
/// as written, with its deliveries still leased to this node, rather than as a duplicate
/// `eventId` (a 409 for a message that was stored).
async fn rewrite(pool: &Pool, job: &IngestJob) -> StoreResult<HashMap<String, Vec<String>>> {
    let client = pool.get().await.map_err(pool_err)?;
    let mut inserted = write(&client, std::slice::from_ref(job)).await?;
    if inserted.contains_key(&job.msg.id) {
        return Ok(inserted);
    }
    let found = client
        .query_opt(
            "SELECT ARRAY(SELECT endpoint_id FROM deliveries WHERE msg_id = $1 AND status = 1 AND leased) \
             FROM messages WHERE id = $1 AND app_id = $2",
            &[&job.msg.id, &job.msg.app_id],
        )
        .await
        .map_err(db_err)?;
    if let Some(row) = found {
        inserted.insert(job.msg.id.clone(), super::rows::get(&row, 0)?);
    }
    Ok(inserted)
}

/// Inserts a batch: its messages and, for each one inserted, its deliveries: leased to the
/// writing node when asked, except those to FIFO endpoints (read here, not from the node's
/// cache), which join their lane instead. Data-modifying CTEs all run to completion;
/// deliveries are written only for the messages that were (ON CONFLICT DO NOTHING skips
/// duplicates, so a duplicate in the batch costs only itself).
pub(super) const INGEST_SQL: &str = "WITH input AS ( \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::bigint[], $9::text[], $10::text[], $11::text[], $18::bigint[]) \
                 AS t(id, app_id, event_type, event_id, payload, channels, tags, created_at, content_type, headers, \
                     ordering_key, deliver_at) \
             ), m AS ( \
                 INSERT INTO messages (id, app_id, event_type, event_id, payload, channels, tags, created_at, \
                     content_type, headers, ordering_key, deliver_at) \
                 SELECT id, app_id, event_type, event_id, payload, \
                     CASE WHEN channels IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(channels::jsonb)) END, \
                     CASE WHEN tags IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)) END, \
                     created_at, content_type, headers, ordering_key, deliver_at \
                 FROM input ON CONFLICT DO NOTHING RETURNING id, seq, ordering_key \
             ), d AS ( \
                 INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, leased, trigger_type, \
                     updated_at, lane_seq, lane_key, not_before) \
                 SELECT k.msg_id, k.endpoint_id, k.app_id, 1, 0, CASE WHEN k.leased AND e.fifo IS TRUE THEN k.at ELSE k.due END, \
                     k.leased AND e.fifo IS NOT TRUE, 0, k.at, \
                     CASE WHEN e.fifo AND (k.leased OR k.due <= k.at) THEN m.seq END, COALESCE(m.ordering_key, ''), \
                     CASE WHEN NOT k.leased AND k.due > k.at THEN k.due END \
                 FROM UNNEST($12::text[], $13::text[], $14::text[], $15::bigint[], $16::boolean[], $17::bigint[]) \
                     AS k(msg_id, endpoint_id, app_id, due, leased, at) \
                 JOIN m ON m.id = k.msg_id \
                 LEFT JOIN endpoints e ON e.id = k.endpoint_id \
                 RETURNING msg_id, endpoint_id, leased \
             ) SELECT id, NULL FROM m UNION ALL SELECT msg_id, endpoint_id FROM d WHERE leased";

async fn announce(pool: &Pool) {
    let sent = match pool.get().await {
        Ok(c) => c.batch_execute(&format!("NOTIFY {DUE_CHANNEL}")).await.map_err(db_err),
        Err(e) => Err(pool_err(e)),
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "NOTIFY failed; pollers will find the work on their next round");
    }
}

#[cfg(test)]
mod tests {

    use hooklane_core::ids::{new_id, MESSAGE};
    use hooklane_core::model::{Application, Endpoint};
    use hooklane_core::{DateTime, Utc};

    use super::*;
    use crate::postgres::testing::TestDatabase;
    use crate::postgres::PgStore;
    use crate::Store;

    fn job(msg: &Message, endpoint_id: &str, leased_until: DateTime<Utc>) -> IngestJob {
        let (reply, _) = oneshot::channel();
        IngestJob {
            msg: msg.clone(),
            endpoint_ids: vec![endpoint_id.to_string()],
            start: FirstSend::LeasedUntil(leased_until),
            reply,
            _place: crate::backlog::Backlog::new("test").admit(0).expect("a place"),
        }
    }

    /// A batch committed but its answer was lost (say, the connection dropped): each of its
    /// jobs is written again alone, finds its message there, and is answered as written.
    #[tokio::test]
    async fn a_batch_committed_unanswered_is_answered_as_written() {
        let db = TestDatabase::create().await;
        let store = PgStore::open(db.url()).await.unwrap();
        let now = Utc::now();
        let app = Application::new("A", now);
        store.create_app(app.clone()).await.unwrap();
        let mut ep = Endpoint::new(app.id.clone(), "", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", now);
        ep.url = format!("https://example.com/{}", ep.id);
        store.create_endpoint(ep.clone()).await.unwrap();
        let msg = Message { event_id: Some("evt-1".into()), ..Message::new(app.id.clone(), "user.created", "{}", now) };
        let lease = now + chrono::Duration::minutes(2);

        let committed = write(&store.pool.get().await.unwrap(), &[job(&msg, &ep.id, lease)]).await.unwrap();
        assert_eq!(committed.get(&msg.id), Some(&vec![ep.id.clone()]));
        let plain = write(&store.pool.get().await.unwrap(), &[job(&msg, &ep.id, lease)]).await.unwrap();
        assert!(plain.is_empty(), "written again, the message reads as a duplicate: {plain:?}");
        let again = rewrite(&store.pool, &job(&msg, &ep.id, lease)).await.unwrap();
        assert_eq!(again.get(&msg.id), Some(&vec![ep.id.clone()]), "answered as written, still leased");

        // Another message with the same eventId is still a duplicate.
        let other = Message { id: new_id(MESSAGE), ..msg.clone() };
        let dup = rewrite(&store.pool, &job(&other, &ep.id, lease)).await.unwrap();
        assert!(dup.is_empty(), "{dup:?}");
    }

    /// Messages arriving while the database does not take them (here the messages table is
    /// locked) wait up to the backlog's bound, those being written included; past it they
    /// are refused as unavailable, and taken again once the waiting ones are written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_past_the_backlog_are_refused_until_the_workers_take_them() {
        let db = TestDatabase::create().await;
        let mut store = PgStore::open(db.url()).await.unwrap();
        store.backlog = crate::backlog::Backlog::bounded("postgres", 3, 1 << 20);
        let store = std::sync::Arc::new(store);
        let app = Application::new("Backlog", Utc::now());
        store.create_app(app.clone()).await.unwrap();
        let message = |n: u32| Message::new(app.id.clone(), "a.b", format!("{{\"n\":{n}}}"), Utc::now());
        let (mut locker, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let lock = locker.transaction().await.unwrap();
        lock.batch_execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE").await.unwrap();
        let waiting =
            crate::backlog::fill_then_refuse(store.clone(), &store.backlog, (0..3).map(message).collect(), message(3))
                .await;
        lock.commit().await.unwrap();
        for waited in waiting {
            waited.await.unwrap().expect("a message that waited is written");
        }
        store.create_message(message(4), Vec::new(), None).await.expect("taken again");
        // A job's place goes with the rest of it, just after its answer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.backlog.jobs() > 0 {
            assert!(std::time::Instant::now() < deadline, "places not given back");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let written: i64 = locker.query_one("SELECT COUNT(*) FROM messages", &[]).await.unwrap().get(0);
        assert_eq!(written, 4, "the three that waited and the one after; not the refused one");
    }
}
