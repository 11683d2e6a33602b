//! The delivery engine: takes due deliveries from the store (or straight from ingest),
//! signs and sends them, records every attempt and schedules retries.
//!
//! Each concern is its own module: `address` decides which IPs may be contacted, `clients`
//! holds the HTTP clients (one per mTLS identity), `sender` makes one signed HTTP request (running the endpoint's JavaScript transformation, `script`,
//! in a worker process, `scripts`), `policy` turns a response into the next step, `limits`
//! holds per-endpoint rate and concurrency, `circuit` stops sending to endpoints that are
//! down, `tokens` holds endpoints' OAuth access tokens, `engine` moves jobs between them.
#![forbid(unsafe_code)]

pub mod address;
mod circuit;
pub mod clients;
mod config;
mod engine;
mod limits;
mod marks;
mod policy;
mod redact;
pub mod script;
pub mod scripts;
pub mod sender;
mod telemetry;
mod tokens;

pub use config::{DispatchConfig, ProxyConfig};
pub use engine::{AttemptNews, Dispatcher, EngineEvent, Reservation, EVENT_BACKLOG, FAILING_AT};
