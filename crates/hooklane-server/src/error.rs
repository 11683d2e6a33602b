//! One error type for the whole API: every failure becomes `{"code": …, "detail": …}` with
//! the right status. `code` is stable and meant for programs; `detail` is for people.
//! Validation errors (422) carry Svix's shape, `detail: [{loc, msg, type}]`, so Svix SDKs
//! parse them, plus the same `code` field as every other error.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hooklane_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("a request with this Idempotency-Key is still being processed")]
    IdempotencyInFlight,
    #[error("this Idempotency-Key was used for a request with another body; use a new key for a new request")]
    IdempotencyMismatch,
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The client stopped sending the body for longer than `request_read_timeout`.
    #[error("the request body stopped arriving before its end (request_read_timeout)")]
    RequestTimeout,
    #[error("content-type must be application/json")]
    UnsupportedMediaType,
    /// A body in a `Content-Encoding` hooklane does not decode (the header's value).
    #[error("content-encoding {0:?} is not supported: send the body as it is, or gzip or deflate it")]
    UnsupportedContentEncoding(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `location` is where the bad value was: "body", "query" or "path".
    #[error("{field}: {msg}")]
    Validation { location: &'static str, field: String, msg: String },
    #[error("internal error")]
    Internal(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The store cannot take the request now (see [`StoreError::Unavailable`]); the cause
    /// goes to the log only, as an internal error's does.
    #[error("the database cannot take requests now; try again shortly")]
    StoreUnavailable(String),
    /// An inbound request that failed its source's verification.
    #[error("verification failed: {0}")]
    VerificationFailed(String),
    /// The application posted more messages than `message_rate_limit` allows; one may be
    /// posted again after this long.
    #[error("this application is posting more messages a second than this server takes from one; try again shortly")]
    RateLimited(std::time::Duration),
    /// A background task refused: the application or the node has as many as it may.
    #[error("{0}")]
    TooManyTasks(String),
    /// A long-poll or stream refused: the application already has its share of the node's
    /// waiting readers. Answered with `Retry-After`, so a client reading in a loop backs off
    /// instead of asking again at once.
    #[error("{0}")]
    TooManyWaiting(String),
    /// The application already has one of these under way (a preview running its code):
    /// answered with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    /// A delivery of this very server, sent back to it (see
    /// [`hooklane_core::signing::ORIGIN_HEADER`]).
    #[error("this request is a delivery of this hooklane server, sent back to it: an endpoint or destination points at this server's own API or sources, which would post a message per delivery without end")]
    DeliveryLoop,
}

impl ApiError {
    /// A bad field in the JSON body.
    pub fn validation(field: impl Into<String>, msg: impl Into<String>) -> Self {
        ApiError::Validation { location: "body", field: field.into(), msg: msg.into() }
    }

    /// The same validation error, about a path segment rather than the body.
    pub fn in_path(self) -> Self {
        match self {
            ApiError::Validation { field, msg, .. } => ApiError::Validation { location: "path", field, msg },
            other => other,
        }
    }

    /// A bad query parameter.
    pub fn bad_query(field: impl Into<String>, msg: impl Into<String>) -> Self {
        ApiError::Validation { location: "query", field: field.into(), msg: msg.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::IdempotencyInFlight => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedContentEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Validation { .. } | ApiError::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) | ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DeliveryLoop => StatusCode::LOOP_DETECTED,
            ApiError::VerificationFailed(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited(_) | ApiError::TooManyTasks(_) | ApiError::TooManyWaiting(_) | ApiError::Busy(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::Unauthorized => "authentication_failed",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::IdempotencyInFlight => "idempotency_in_flight",
            ApiError::IdempotencyMismatch => "idempotency_mismatch",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnsupportedContentEncoding(_) => "unsupported_content_encoding",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Validation { .. } => "validation",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) | ApiError::StoreUnavailable(_) => "unavailable",
            ApiError::VerificationFailed(_) => "verification_failed",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::TooManyTasks(_) => "too_many_tasks",
            ApiError::TooManyWaiting(_) => "too_many_waiting",
            ApiError::Busy(_) => "busy",
            ApiError::DeliveryLoop => "delivery_loop",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Validation { location, field, msg } => json!({
                "code": self.code(),
                "detail": [{ "loc": [location, field], "msg": msg, "type": "value_error" }],
            }),
            // A 422 too, so in the shape Svix's SDKs parse every 422 as (a plain `detail`
            // text reads there as a validation error without content).
            ApiError::IdempotencyMismatch => json!({
                "code": self.code(),
                "detail": [{ "loc": ["header", "idempotency-key"], "msg": self.to_string(), "type": "value_error" }],
            }),
            ApiError::Internal(why) => {
                // The cause goes to the log only: it may name internals.
                tracing::error!(error = %why, "internal error");
                json!({ "code": self.code(), "detail": self.to_string() })
            }
            ApiError::StoreUnavailable(why) => {
                tracing::warn!(error = %why, "request refused: the store is unavailable");
                json!({ "code": self.code(), "detail": self.to_string() })
            }
            _ => json!({ "code": self.code(), "detail": self.to_string() }),
        };
        let retry_after = match &self {
            ApiError::RateLimited(wait) => Some(*wait),
            // A place is given back when a reader's wait ends: in seconds at most, mostly.
            // So is a node's waiting place, and a node shutting down has others beside it.
            ApiError::TooManyWaiting(_) | ApiError::Busy(_) | ApiError::Unavailable(_) => {
                Some(std::time::Duration::from_secs(1))
            }
            // A database restarting, or a pool's connections freed, is a matter of seconds.
            ApiError::StoreUnavailable(_) => Some(STORE_RETRY_AFTER),
            _ => None,
        };
        if let Some(wait) = retry_after {
            // Whole seconds, rounded up: what `Retry-After` takes.
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return (status, [(header::RETRY_AFTER, seconds.max(1).to_string())], Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::Conflict(why) => ApiError::Conflict(why),
            StoreError::Refused(why) => ApiError::BadRequest(why),
            StoreError::Closed => ApiError::Unavailable("store is shutting down".into()),
            StoreError::Unavailable(why) => ApiError::StoreUnavailable(why),
            StoreError::PositionAhead(_) => {
                ApiError::Validation { location: "query", field: "iterator".into(), msg: POSITION_AHEAD.into() }
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// How long a client is asked to wait before trying again a request the store refused as
/// unavailable.
pub const STORE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a stream position past the stream's end is refused.
pub const POSITION_AHEAD: &str = "is ahead of this server's stream (it was given out before the database was restored \
     from a backup); read again from an earlier position";

pub type ApiResult<T> = Result<T, ApiError>;

/// Whether reading a request body failed because the client stopped sending it for longer
/// than `request_read_timeout`: tower-http's [`TimeoutError`], found by its type among the
/// causes, however many body layers (axum's, the limit's, the decoder's) wrapped it.
///
/// [`TimeoutError`]: tower_http::timeout::TimeoutError
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        // An `io::Error` does not give the error it carries as its source: look inside.
        cause = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    false
}

/// Maps a store "not found" to a 404 naming `what`; other store errors as usual.
pub fn missing(what: &'static str) -> impl FnOnce(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::NotFound(what),
        other => other.into(),
    }
}

/// Maps a store conflict to a 409 with a clearer message.
pub fn conflict(why: &'static str) -> impl FnOnce(StoreError) -> ApiError {
    move |e| match e {
        StoreError::Conflict(_) => ApiError::Conflict(why.into()),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 503 says when to try again: a client (an SDK retrying 5xx) backs off instead of
    /// asking again at once, longer for a store than for a node's waiting places.
    #[test]
    fn answers_503_with_retry_after() {
        for (error, wait) in [
            (ApiError::from(StoreError::Closed), "1"),
            (ApiError::Unavailable("too many streams".into()), "1"),
            (ApiError::from(StoreError::Unavailable("no database connection: refused".into())), "5"),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(wait.as_bytes()));
        }
    }
}
