//! Domain types and pure logic shared by every hooklane crate. Nothing here does I/O,
//! so all of it can be unit-tested and reused by receivers that only want to verify signatures.
#![forbid(unsafe_code)]

pub mod filter;
pub mod ids;
pub mod inbound;
pub mod model;
pub mod oauth;
pub mod retry;
pub mod rules;
pub mod signing;

pub use chrono::{DateTime, Utc};
