//! Compressed request bodies: `Content-Encoding: gzip` or `deflate` bodies are decoded
//! before any handler reads them (tower-http's decompression), on the API and on inbound
//! sources alike, and every limit on a body's size holds for the decoded bytes, so a small
//! compressed body cannot grow past it (a "zip bomb" is refused with 413). Any other
//! coding is refused with 415 `unsupported_content_encoding` before the body is read: a
//! body hooklane cannot decode would otherwise be taken for plain bytes.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::decompression::RequestDecompressionLayer;

use crate::error::ApiError;

/// The codings decoded, as tower-http's decoder spells them.
const DECODED: &[(&str, &str)] = &[("gzip", "gzip"), ("x-gzip", "gzip"), ("deflate", "deflate")];

/// The decoder: gzip and deflate (`check_coding` refuses the rest first).
pub fn decoder() -> RequestDecompressionLayer {
    RequestDecompressionLayer::new().gzip(true).deflate(true)
}

/// Lets through requests with no coding, `identity`, or one coding the decoder takes
/// (spelled as the decoder matches it: case and surrounding spaces do not count); refuses
/// the rest. Runs in front of [`decoder`].
pub async fn check_coding(mut req: Request, next: Next) -> Response {
    let mut codings = req.headers().get_all(header::CONTENT_ENCODING).iter();
    let (Some(coding), None) = (codings.next(), codings.next()) else {
        return match req.headers().contains_key(header::CONTENT_ENCODING) {
            // More than one header: several codings applied in turn, which is not decoded.
            true => ApiError::UnsupportedContentEncoding(joined(&req)).into_response(),
            false => next.run(req).await,
        };
    };
    let name = coding.to_str().unwrap_or_default().trim().to_ascii_lowercase();
    if name == "identity" {
        req.headers_mut().remove(header::CONTENT_ENCODING);
        return next.run(req).await;
    }
    // HTTP/1.1: a request with neither a length nor chunks has no body.
    let headers = req.headers();
    let empty = match headers.get(header::CONTENT_LENGTH) {
        Some(length) => length == "0",
        None => !headers.contains_key(header::TRANSFER_ENCODING),
    };
    match DECODED.iter().find(|(spelled, _)| *spelled == name) {
        // Nothing to decode: the body is empty, whatever its coding says.
        Some(_) if empty => {
            req.headers_mut().remove(header::CONTENT_ENCODING);
            next.run(req).await
        }
        Some((_, canonical)) => {
            req.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static(canonical));
            next.run(req).await
        }
        None => ApiError::UnsupportedContentEncoding(joined(&req)).into_response(),
    }
}

/// Every `Content-Encoding` value of the request, for the error message.
fn joined(req: &Request) -> String {
    let values: Vec<String> = req
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(64).collect())
        .collect();
    values.join(", ")
}
