//! Inputs and outputs of store operations that are not domain records.

use std::sync::Arc;

use hooklane_core::model::{Attempt, Delivery, DeliveryStatus, Endpoint, Message};
use hooklane_core::{DateTime, Utc};

/// Cursor pagination as in the Svix API: `iterator` is the id of the last item seen.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: usize,
    pub iterator: Option<String>,
    /// Newest first when true.
    pub descending: bool,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest { limit: 50, iterator: None, descending: false }
    }
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// No item lies beyond this page.
    pub done: bool,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub tag: Option<String>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub msg_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub msg_id: String,
    pub endpoint_id: String,
}

/// A delivery that is due, with what is needed to send it.
#[derive(Debug, Clone)]
pub struct Job {
    pub delivery: Delivery,
    pub message: Arc<Message>,
    pub endpoint: Arc<Endpoint>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    Succeeded,
    RetryAt(DateTime<Utc>),
    /// No attempt left: the delivery has failed for good.
    GiveUp,
}

#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub attempt: Attempt,
    pub next: NextStep,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyState {
    /// First use of the key: the caller does the work, then finishes or aborts the key.
    Started,
    /// The work was done before: replay this response.
    Completed(StoredResponse),
    /// Another request with the same key is being processed right now.
    InFlight,
}
