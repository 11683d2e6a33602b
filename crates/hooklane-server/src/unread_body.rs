//! `Connection: close` on an answer given before its request's body was read to its end.
//!
//! Many answers come before the body is read: a wrong token (401), an unknown application
//! (404), a rate limit (429), a refused coding (415), a body past its limit (413). hyper then
//! closes the connection, as the rest of the body would be read as the next request; but
//! without this header the client does not know it will, keeps the connection in its pool,
//! and sees its next request on it fail ("connection closed before message completed"),
//! a request it may not send again by itself (a POST). (When the whole body came with the
//! head, hyper could have dropped it and kept the connection; which it will do is not told
//! here, so such a connection is closed too: a new connection, after a refusal, is the cost.)

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Version};
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// What tells, once the request is answered, whether its body was read to its end.
pub struct Watch {
    ended: Arc<AtomicBool>,
    version: Version,
}

/// The request with its body watched; no watch for a request without a body, or over
/// HTTP/2, where an unread body ends its stream only (and where `Connection` is no header
/// to send).
pub fn watch(req: Request) -> (Request, Option<Watch>) {
    if !has_body_on_http1(&req) {
        return (req, None);
    }
    let ended = Arc::new(AtomicBool::new(false));
    let watch = Watch { ended: ended.clone(), version: req.version() };
    (req.map(|body| Body::new(Watched { inner: body, ended })), Some(watch))
}

/// The answer, marked `Connection: close` when the watched body was not read to its end.
pub fn close_if_unread(watch: Option<Watch>, mut response: Response) -> Response {
    let Some(watch) = watch.filter(|w| !w.ended.load(Ordering::Acquire)) else {
        return response;
    };
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    if watch.version == Version::HTTP_10 {
        // hyper answers an HTTP/1.0 keep-alive request with `keep-alive` added to the
        // `Connection` of an HTTP/1.1 answer; of an HTTP/1.0 one, it ends keep-alive.
        *response.version_mut() = Version::HTTP_10;
    }
    response
}

/// Whether the request is HTTP/1 with a body. Read from the headers, as the body may be
/// wrapped in ways that do not tell it has ended before it is read.
fn has_body_on_http1(req: &Request) -> bool {
    req.version() < Version::HTTP_2 && declares_body(req.headers())
}

/// Whether an HTTP/1.1 request's headers announce a body: a length other than 0, or chunks
/// (a request with neither has none).
pub fn declares_body(headers: &HeaderMap) -> bool {
    match headers.contains_key(header::CONTENT_LENGTH) {
        // (`00` is a length of 0 too.)
        true => crate::body_limit::announced_length(headers) != Some(0),
        false => headers.contains_key(header::TRANSFER_ENCODING),
    }
}

/// A body that notes when it has been read to its end.
struct Watched {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
