//! Per-endpoint rules on a message's JSON payload: which messages an endpoint gets
//! ([`payload_filter`]) and what body it is sent ([`transform`]). Both are plain JSON
//! documents, stored as given, checked when they are set ([`payload_filter::validate`],
//! [`transform::validate`]) and read directly when used (a filter is checked again then,
//! which costs no allocation, so that one that is not valid lets nothing through).

pub mod payload_filter;
pub mod transform;

/// What is wrong with a filter or a template, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct RuleError {
    /// Where in the document, as dot-separated keys and indices from its root (empty for
    /// the root itself), e.g. `action.$in` or `blocks.0.text`.
    pub path: String,
    pub msg: String,
}
