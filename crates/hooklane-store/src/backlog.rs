//! A bound on the messages waiting for the database to take them.
//!
//! Ingest is queued: SQLite's writer thread takes one write at a time, PostgreSQL's ingest
//! workers a batch at a time. When clients post faster than the disk commits, the queue
//! grows with every request, and so does the memory holding their payloads, without end
//! (a request given up by its client leaves its write queued). Past [`MAX_JOBS`] messages
//! or [`MAX_BYTES`] of their payloads waiting, a new one is refused as
//! [`StoreError::Unavailable`] (the API answers 503 with `Retry-After`), counted in
//! `hooklane_store_backlog_refused_total`. Other writes (claims, attempts, settings) are
//! not counted nor refused: they are few, small, and the dispatcher's own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{StoreError, StoreResult};

/// Messages waiting at most: about a second and a half of commits on 2 cores.
pub const MAX_JOBS: usize = 20_000;
/// Payload bytes waiting at most (128 MiB): 128 messages of the API's largest body.
pub const MAX_BYTES: usize = 128 << 20;

/// What one store's queue holds now.
pub(crate) struct Backlog {
    store: &'static str,
    jobs: AtomicUsize,
    bytes: AtomicUsize,
    max_jobs: usize,
    max_bytes: usize,
}

/// One message's place in the queue, given back when dropped: when the writer has taken the
/// message out of the queue (its payload then is the database's).
pub(crate) struct Place {
    backlog: Arc<Backlog>,
    bytes: usize,
}

impl Backlog {
    /// A backlog of `store` ("sqlite", "postgres") with the default bounds.
    pub(crate) fn new(store: &'static str) -> Arc<Backlog> {
        Backlog::bounded(store, MAX_JOBS, MAX_BYTES)
    }

    pub(crate) fn bounded(store: &'static str, max_jobs: usize, max_bytes: usize) -> Arc<Backlog> {
        Arc::new(Backlog { store, jobs: AtomicUsize::new(0), bytes: AtomicUsize::new(0), max_jobs, max_bytes })
    }

    /// A place for a message of `bytes`, or the refusal when the queue is full. A message
    /// larger than the whole byte bound is let in alone, into an empty queue.
    pub(crate) fn admit(self: &Arc<Self>, bytes: usize) -> StoreResult<Place> {
        let jobs = self.jobs.fetch_add(1, Ordering::AcqRel);
        let held = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        let place = Place { backlog: self.clone(), bytes };
        if jobs < self.max_jobs && (held == 0 || held + bytes <= self.max_bytes) {
            return Ok(place);
        }
        drop(place);
        metrics::counter!("hooklane_store_backlog_refused_total", "store" => self.store).increment(1);
        Err(StoreError::Unavailable(format!(
            "{jobs} messages ({} KiB) are waiting for the database already; refused at {} or {} MiB",
            held >> 10,
            self.max_jobs,
            self.max_bytes >> 20
        )))
    }

    /// Messages waiting now.
    #[cfg(test)]
    pub(crate) fn jobs(&self) -> usize {
        self.jobs.load(Ordering::Acquire)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.backlog.jobs.fetch_sub(1, Ordering::AcqRel);
        self.backlog.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The bytes a message holds while it waits: its payload and headers.
pub(crate) fn message_bytes(msg: &hooklane_core::model::Message) -> usize {
    msg.payload.len() + msg.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

/// For the stores' tests: posts each of `messages` on a task of its own while the store's
/// writes are held, waits (up to 10 s) until all of them wait in `backlog`, then checks that
/// `one_more` is refused as unavailable, holding no place. Answers the waiting posts.
#[cfg(test)]
pub(crate) async fn fill_then_refuse(
    store: crate::DynStore,
    backlog: &Backlog,
    messages: Vec<hooklane_core::model::Message>,
    one_more: hooklane_core::model::Message,
) -> Vec<tokio::task::JoinHandle<StoreResult<Vec<String>>>> {
    let count = messages.len();
    let waiting: Vec<_> = messages
        .into_iter()
        .map(|msg| {
            let store = store.clone();
            tokio::spawn(async move { store.create_message(msg, Vec::new(), None).await })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while backlog.jobs() < count {
        assert!(std::time::Instant::now() < deadline, "the messages did not queue");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = store.create_message(one_more, Vec::new(), None).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    assert_eq!(backlog.jobs(), count, "the refused one holds no place");
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_either_bound_and_takes_again_as_places_are_given_back() {
        let backlog = Backlog::bounded("test", 3, 100);
        let a = backlog.admit(40).expect("first");
        let b = backlog.admit(40).expect("second");
        assert!(matches!(backlog.admit(40), Err(StoreError::Unavailable(_))), "past the bytes");
        let c = backlog.admit(10).expect("within both");
        assert!(matches!(backlog.admit(0), Err(StoreError::Unavailable(_))), "past the count");
        assert_eq!(backlog.jobs(), 3, "a refusal holds no place");
        drop(a);
        let d = backlog.admit(40).expect("a place given back");
        drop((b, c, d));
        assert_eq!((backlog.jobs(), backlog.bytes.load(Ordering::Acquire)), (0, 0));
        let huge = backlog.admit(1_000).expect("larger than the bound, alone");
        assert!(backlog.admit(1).is_err(), "nothing beside it");
        drop(huge);
    }
}
