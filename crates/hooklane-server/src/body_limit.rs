//! How large a request's body may be: the server's `max_body_bytes` (1 MiB by default),
//! except for the two imports, which carry a whole environment or OpenAPI document: an
//! export of a few hundred event types with their schemas passes a megabyte, and must be
//! importable as it stands. (Inbound sources hold their bodies to limits of their own.)

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Extensions;
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};

use crate::state::AppState;

/// The imports' limit (unless `max_body_bytes` is larger): 10,000 event types (the most
/// one import takes) of about 3 KiB each.
pub const IMPORT_MAX_BYTES: usize = 32 << 20;

/// Paths whose bodies may reach [`IMPORT_MAX_BYTES`].
const IMPORTS: [&str; 2] = ["/api/v1/environment/import", "/api/v1/event-type/import/openapi"];

/// The limit a request's body is held to, for the errors of those that read it.
#[derive(Clone, Copy, Debug)]
struct BodyLimit(usize);

/// The limit of a body sent to `path`.
fn limit_for(path: &str, max_body: usize) -> usize {
    if IMPORTS.contains(&path.trim_end_matches('/')) {
        max_body.max(IMPORT_MAX_BYTES)
    } else {
        max_body
    }
}

/// Holds the request's body to its limit (axum's `DefaultBodyLimit`, which every reader of
/// a body obeys), and notes the limit for their errors ([`of`]).
pub async fn layer(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let limit = limit_for(req.uri().path(), s.0.max_body_bytes);
    req.extensions_mut().insert(BodyLimit(limit));
    match DefaultBodyLimit::max(limit).layer(next).oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The limit of the request with these extensions: the server's `max_body_bytes` outside
/// the layer.
pub fn of(extensions: &Extensions, s: &AppState) -> usize {
    extensions.get::<BodyLimit>().map_or(s.0.max_body_bytes, |l| l.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_take_larger_bodies_than_the_rest() {
        assert_eq!(limit_for("/api/v1/environment/import", 1 << 20), IMPORT_MAX_BYTES);
        assert_eq!(limit_for("/api/v1/event-type/import/openapi/", 1 << 20), IMPORT_MAX_BYTES);
        assert_eq!(limit_for("/api/v1/environment/import", 64 << 20), 64 << 20, "never below max_body_bytes");
        assert_eq!(limit_for("/api/v1/app/app_1/msg", 1 << 20), 1 << 20);
        assert_eq!(limit_for("/api/v1/environment/export", 1 << 20), 1 << 20);
    }
}
