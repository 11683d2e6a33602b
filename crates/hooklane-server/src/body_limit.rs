//! How large a request's body may be: the server's `max_body_bytes` (1 MiB by default),
//! except for the two imports, which carry a whole environment or OpenAPI document: an
//! export of a few hundred event types with their schemas passes a megabyte, and must be
//! importable as it stands. (Inbound sources hold their bodies to limits of their own.)

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{header, Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use tower::layer::util::{Identity, Stack};
use tower::{Layer, ServiceBuilder, ServiceExt};

use crate::error::ApiError;
use crate::state::AppState;

/// The imports' limit (unless `max_body_bytes` is larger): 10,000 event types (the most
/// one import takes) of about 3 KiB each.
pub const IMPORT_MAX_BYTES: usize = 32 << 20;

/// Paths whose bodies may reach [`IMPORT_MAX_BYTES`].
const IMPORTS: [&str; 2] = ["/api/v1/environment/import", "/api/v1/event-type/import/openapi"];

/// The limit a route holds its body to, when not the server's `max_body_bytes`: for the
/// errors of those that read it.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(usize);

/// The layers of an import's route (see [`IMPORT_MAX_BYTES`]): axum's `DefaultBodyLimit`,
/// which every reader of a body obeys, over the server's, and the limit noted for the
/// errors ([`of`]). Only these routes pay for them.
pub fn for_imports(
    max_body: usize,
) -> ServiceBuilder<Stack<axum::Extension<BodyLimit>, Stack<DefaultBodyLimit, Identity>>> {
    let limit = import_limit(max_body);
    ServiceBuilder::new().layer(DefaultBodyLimit::max(limit)).layer(axum::Extension(BodyLimit(limit)))
}

/// The imports' limit on a server whose other bodies are held to `max_body`.
fn import_limit(max_body: usize) -> usize {
    max_body.max(IMPORT_MAX_BYTES)
}

/// The limit of a body sent to `path`.
fn limit_for(path: &str, max_body: usize) -> usize {
    if IMPORTS.contains(&path.trim_end_matches('/')) {
        import_limit(max_body)
    } else {
        max_body
    }
}

/// The limit of the request with these extensions, within its route: the server's
/// `max_body_bytes` but for the imports.
pub fn of(extensions: &Extensions, s: &AppState) -> usize {
    extensions.get::<BodyLimit>().map_or(s.0.max_body_bytes, |l| l.0)
}

/// Reads a request's whole body before its route is known (the idempotency layer, which
/// fingerprints it), held to the limit of the route its path leads to; answers the limit
/// with the body or the refusal.
pub async fn read_before_routing(req: Request, s: &AppState) -> (usize, Result<Bytes, BytesRejection>) {
    let limit = limit_for(req.uri().path(), s.0.max_body_bytes);
    if limit == s.0.max_body_bytes {
        return (limit, Bytes::from_request(req, s).await);
    }
    let read = tower::service_fn(|req: Request| async move {
        Ok::<_, std::convert::Infallible>(Bytes::from_request(req, s).await)
    });
    match DefaultBodyLimit::max(limit).layer(read).oneshot(req).await {
        Ok(read) => (limit, read),
        Err(never) => match never {},
    }
}

/// Refuses (413) an API request that waits on `Expect: 100-continue` and announces a length
/// past its route's limit, rather than inviting it to send what will be refused. A client
/// that sends its body at once is read up to the limit as before: answered while it still
/// writes megabytes, it would see the connection reset, not the 413 (and the Svix SDKs send
/// again a request that failed so). (A coded body's length is not the decoded one's: the
/// decoder has removed it by then. Inbound sources check their own limits.)
pub fn refused_as_announced(req: &Request, max_body: usize) -> Option<Response> {
    let path = req.uri().path();
    let waits = req.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits && path.starts_with("/api/") {
        let limit = limit_for(path, max_body);
        if announced_length(req.headers()).is_some_and(|n| n > limit as u64) {
            return Some(ApiError::PayloadTooLarge(limit).into_response());
        }
    }
    None
}

/// The length a request's `Content-Length` announces, if it is one.
pub fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok())
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
