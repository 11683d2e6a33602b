//! Compressed request bodies: `Content-Encoding: gzip` or `deflate` bodies are decoded
//! before any handler reads them, on the API and on inbound sources alike, and every limit
//! on a body's size holds for the decoded bytes, so a small compressed body cannot grow past
//! it (a "zip bomb" is refused with 413). Any other coding is refused with 415
//! `unsupported_content_encoding` before the body is read: a body hooklane cannot decode
//! would otherwise be taken for plain bytes.
//!
//! (Not tower-http's decoder: it decodes a gzip body's first member only, and passes over
//! whatever follows it, so two members joined, which RFC 1952 allows, lost the second one
//! and a body with bytes after its end was taken as whole.)

use async_compression::tokio::bufread::{GzipDecoder, ZlibDecoder};
use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::error::ApiError;

/// How each coding decoded is spelled, and the coding it is.
const DECODED: &[(&str, Coding)] = &[("gzip", Coding::Gzip), ("x-gzip", Coding::Gzip), ("deflate", Coding::Deflate)];

#[derive(Clone, Copy)]
enum Coding {
    Gzip,
    /// HTTP's `deflate` is the zlib format (RFC 9110 8.4.1.2).
    Deflate,
}

/// Decodes the body of a request with no coding, `identity`, or one coding of [`DECODED`]
/// (case and surrounding spaces do not count), before anything reads it; refuses the rest.
pub async fn decode(mut req: Request, next: Next) -> Response {
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
    let empty = !crate::unread_body::declares_body(req.headers());
    match DECODED.iter().find(|(spelled, _)| *spelled == name) {
        // Nothing to decode: the body is empty, whatever its coding says.
        Some(_) if empty => {
            req.headers_mut().remove(header::CONTENT_ENCODING);
            next.run(req).await
        }
        Some((_, coding)) => next.run(decoded(req, *coding)).await,
        None => ApiError::UnsupportedContentEncoding(joined(&req)).into_response(),
    }
}

/// The request with its body decoded as it is read, and without the headers that described
/// the coded body. Every member of the coding is decoded, one after another; bytes after
/// the last that do not begin another are an error of the body, which its reader answers
/// 400 (as it does a body cut short or corrupt).
fn decoded(req: Request, coding: Coding) -> Request {
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    // (Its errors carried whole, so that a read timeout is still told apart.)
    let coded = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let body = match coding {
        Coding::Gzip => {
            let mut decoder = GzipDecoder::new(coded);
            decoder.multiple_members(true);
            Body::from_stream(ReaderStream::new(decoder))
        }
        Coding::Deflate => {
            let mut decoder = ZlibDecoder::new(coded);
            decoder.multiple_members(true);
            Body::from_stream(ReaderStream::new(decoder))
        }
    };
    Request::from_parts(parts, body)
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
