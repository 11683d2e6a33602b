#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken (duplicate uid, eventId, name…).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot take the request now, through no fault of the request: it cannot
    /// be reached, has no connection free, is out of space, or (SQLite) failed a flush and
    /// takes no writes until restarted. The same request may succeed later or on another
    /// node, so the API answers 503 with `Retry-After` rather than 500.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("store is shut down")]
    Closed,
    /// A stream position past anything this store has handed out: it came from another
    /// database, or from this one before it was restored from a backup. Reading from it
    /// would pass over every message until the stream caught up, so it is refused.
    #[error("position {0} is ahead of the stream")]
    PositionAhead(crate::EventPosition),
    /// The record changed (another request, or the dispatcher) since the caller read the
    /// version it wanted to write back.
    #[error("changed since it was read")]
    Changed,
    /// A value the database cannot hold, which reached it unchecked (PostgreSQL: text with
    /// a NUL character): the request's fault, not the store's.
    #[error("{0}")]
    Refused(String),
}
