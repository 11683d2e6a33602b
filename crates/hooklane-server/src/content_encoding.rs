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
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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

/// The request with its body to be decoded as it is read, for no coding, `identity`, or one
/// coding of [`DECODED`] (case and surrounding spaces do not count); the refusal of the rest.
pub fn decode(mut req: Request) -> Result<Request, Box<Response>> {
    let mut codings = req.headers().get_all(header::CONTENT_ENCODING).iter();
    let (Some(coding), None) = (codings.next(), codings.next()) else {
        return match req.headers().contains_key(header::CONTENT_ENCODING) {
            // More than one header: several codings applied in turn, which is not decoded.
            true => Err(Box::new(ApiError::UnsupportedContentEncoding(joined(&req)).into_response())),
            false => Ok(req),
        };
    };
    let name = coding.to_str().unwrap_or_default().trim().to_ascii_lowercase();
    if name == "identity" {
        req.headers_mut().remove(header::CONTENT_ENCODING);
        return Ok(req);
    }
    let empty = !crate::unread_body::declares_body(req.headers());
    match DECODED.iter().find(|(spelled, _)| *spelled == name) {
        // Nothing to decode: the body is empty, whatever its coding says.
        Some(_) if empty => {
            req.headers_mut().remove(header::CONTENT_ENCODING);
            Ok(req)
        }
        Some((_, coding)) => Ok(decoded(req, *coding)),
        None => Err(Box::new(ApiError::UnsupportedContentEncoding(joined(&req)).into_response())),
    }
}

/// Coded bytes a body may hold past twice what they have decoded to. Size limits count
/// decoded bytes; a real body's coding adds a few bytes per 64 KiB to them, but one made of
/// empty gzip members (20 bytes each) or empty deflate blocks decodes to nothing, and would
/// be read for as long as its client sends it, never reaching a limit.
const CODED_ALLOWANCE: u64 = 64 * 1024;

/// Bytes of one body read (coded) and handed on (decoded) so far.
#[derive(Default)]
struct Tally {
    coded: AtomicU64,
    decoded: AtomicU64,
}

/// The request with its body decoded as it is read, and without the headers that described
/// the coded body. Every member of the coding is decoded, one after another; bytes after
/// the last that do not begin another are an error of the body, which its reader answers
/// 400 (as it does a body cut short or corrupt, or one far larger than what it decodes to).
/// A body that turns out to have no bytes at all (chunked with no chunk) is an empty body.
fn decoded(req: Request, coding: Coding) -> Request {
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    let tally = Arc::new(Tally::default());
    let counted = tally.clone();
    // (Its errors carried whole, so that a read timeout is still told apart.)
    let chunks = body.into_data_stream().map_err(std::io::Error::other);
    let input = chunks.flat_map(|chunk| futures::stream::iter(pieces(chunk))).map(move |chunk| {
        let chunk = chunk?;
        // What came before this piece has been decoded by now: the decoder asks for more
        // once it has used all it had.
        let before = counted.coded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if before > 2 * counted.decoded.load(Ordering::Relaxed) + CODED_ALLOWANCE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the coded body is far larger than what it decodes to",
            ));
        }
        Ok(chunk)
    });
    let coded = StreamReader::new(input);
    let body = match coding {
        Coding::Gzip => {
            let mut decoder = GzipDecoder::new(coded);
            decoder.multiple_members(true);
            Body::from_stream(handed_on(ReaderStream::new(decoder), tally))
        }
        Coding::Deflate => {
            let mut decoder = ZlibDecoder::new(coded);
            decoder.multiple_members(true);
            Body::from_stream(handed_on(ReaderStream::new(decoder), tally))
        }
    };
    Request::from_parts(parts, body)
}

/// A chunk as read, in pieces of at most [`PIECE`] bytes, so that the decoder's progress
/// is weighed against what it was given every so often, however large the chunks come.
fn pieces(chunk: std::io::Result<Bytes>) -> Vec<std::io::Result<Bytes>> {
    match chunk {
        Ok(mut bytes) => {
            let mut out = Vec::with_capacity(bytes.len() / PIECE + 1);
            while bytes.len() > PIECE {
                out.push(Ok(bytes.split_to(PIECE)));
            }
            out.push(Ok(bytes));
            out
        }
        Err(e) => vec![Err(e)],
    }
}

/// See [`pieces`].
const PIECE: usize = 16 * 1024;

/// The decoder's output, counted; its complaint that the coded body ended before it began
/// is no error when the body had no byte at all (the decoders expect at least a header).
fn handed_on(
    decoded: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    tally: Arc<Tally>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    decoded.filter_map(move |piece| {
        let piece = match piece {
            Ok(bytes) => {
                tally.decoded.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Some(Ok(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && tally.coded.load(Ordering::Relaxed) == 0 => None,
            Err(e) => Some(Err(e)),
        };
        std::future::ready(piece)
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;
    use tokio::io::AsyncReadExt;

    async fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        async_compression::tokio::bufread::GzipEncoder::new(bytes).read_to_end(&mut out).await.expect("gzip");
        out
    }

    async fn decode_all(coded: Vec<u8>) -> Result<Vec<u8>, String> {
        let req = Request::builder().header(header::CONTENT_ENCODING, "gzip").body(Body::from(coded)).expect("request");
        let body = decoded(req, Coding::Gzip).into_body();
        axum::body::to_bytes(body, usize::MAX).await.map(|b| b.to_vec()).map_err(|e| format!("{e:?}"))
    }

    /// Bodies that do not compress (larger coded than decoded, by a little) and that do,
    /// read in one chunk, are decoded whole: the weighing of coded against decoded bytes
    /// leaves them be.
    #[tokio::test]
    async fn real_bodies_pass_the_weighing_of_coded_bytes() {
        let mut noise = vec![0u8; 3 << 20];
        rand::thread_rng().fill_bytes(&mut noise);
        let coded = gzip(&noise).await;
        assert!(coded.len() > noise.len(), "random bytes do not compress");
        assert_eq!(decode_all(coded).await.expect("decoded"), noise);
        let text = "hooklane ".repeat(400_000).into_bytes();
        assert_eq!(decode_all(gzip(&text).await).await.expect("decoded"), text);
        let empties: Vec<u8> = std::iter::repeat_n(gzip(b"").await, 5_000).flatten().collect();
        let refused = decode_all([empties, gzip(b"{}").await].concat()).await.expect_err("refused");
        assert!(refused.contains("far larger"), "{refused}");
    }
}
