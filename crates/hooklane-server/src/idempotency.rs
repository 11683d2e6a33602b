//! `Idempotency-Key` on POST: the first successful response for a key is stored for 24
//! hours and replayed for every later request with the same key, so a client retrying after a lost
//! answer never creates anything twice. Keys are scoped by the caller's credentials and the
//! path, so two tenants cannot collide or read each other's responses.
//!
//! A message create's message id is made from its key's hold ([`message_id`]): when the
//! process dies between storing the message and keeping the answer, the retry finds that
//! message by the id and answers it, rather than refusing the retry for the key's lease and
//! then making a second message.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hooklane_core::Utc;
use hooklane_store::{DynStore, IdempotencyState, StoredResponse};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::api::message::MessageOut;
use crate::error::ApiError;
use crate::extract::{Auth, Query};
use crate::state::{hex, AppState};

/// How long an answer is replayed.
const KEY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How long a key stays taken by a request that never finishes (its process died): past
/// it, a retry runs. Far longer than any request's handler runs.
const IN_FLIGHT_LEASE: Duration = Duration::from_secs(5 * 60);
const MAX_KEY_LEN: usize = 256;
/// How long a request whose key the same request still holds (running on this node or
/// another) waits for that one's answer before it is told 409 `idempotency_in_flight`, as
/// Svix's server waits: its SDKs send every `POST` with a key, and send it again with the
/// same key after their own timeout (15 s) or a broken connection, while the first may still
/// be running; told 409, they hand the caller an error for a request that then succeeds.
/// Under the SDKs' timeout, so that the wait itself does not make them give up.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(10);
/// Answers larger than this as kept are not kept (API answers are far smaller; an event
/// type echoing large schemas or a large environment export can be larger; a created
/// message's is kept without its payload). The key keeps a refusal in their place: the
/// request is not run a second time.
const MAX_STORED_BODY: usize = 1 << 20;

/// Requests whose answer holds a secret (a new token, an integration's new key, a rotated
/// endpoint secret): their answers are never stored (the store keeps tokens as hashes
/// only), so a retry with the same key makes another token or rotation rather than
/// replaying the first.
fn answers_a_secret(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path.starts_with("/api/v1/auth/") || path.ends_with("/secret/rotate") || path.ends_with("/key/rotate")
}

pub async fn layer(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || answers_a_secret(req.uri().path()) {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic()) => k.to_owned(),
        _ => {
            return ApiError::BadRequest(format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"))
                .into_response()
        }
    };
    // Who asks, before anything of the request is read or written: without a working
    // token it costs what it costs without the key (one lookup), not a body read and two
    // writes of the key; and no state of anyone's key is told to it.
    let (mut parts, body) = req.into_parts();
    if let Err(e) = Auth::from_request_parts(&mut parts, &s).await {
        return e.into_response();
    }
    let req = Request::from_parts(parts, body);
    let mut scope = Sha256::new();
    scope.update(req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default());
    scope.update([0]);
    // The query too: `?with_content=false` asks for another answer.
    scope.update(req.uri().path_and_query().map_or(req.uri().path(), |p| p.as_str()).as_bytes());
    scope.update([0]);
    scope.update(key.as_bytes());
    let scope = hex(&scope.finalize());
    // Receive the whole body before claiming the key: a request that never fully arrived
    // (the client went away mid-upload) was not processed, and its retry must not be
    // answered with the upload error for the next 24 hours.
    let (parts, body) = req.into_parts();
    let body = match crate::body_limit::read_before_routing(Request::from_parts(parts.clone(), body), &s).await {
        (_, Ok(bytes)) => bytes,
        (limit, Err(e)) => return crate::extract::bytes_rejection(e, limit).into_response(),
    };
    // The same request sent again has the same body; another body is another request.
    let fingerprint = hex(&Sha256::digest(&body));
    let mut req = Request::from_parts(parts, Body::from(body));
    let store = &s.0.store;
    // A message create finds what an earlier hold of its key did by the message id that
    // hold gave it ([`message_id`]).
    let creates = creates_message(req.uri().path()).filter(|(_, asked)| *asked).and_then(|(app, _)| decoded(app));
    let done_by = |held: Hold| {
        let (s, scope, app) = (&s, &scope, creates.as_deref());
        async move { kept_answer_of(s, app?, &message_id(scope, held)).await }
    };
    match begin(store, &scope, &fingerprint, done_by).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok((IdempotencyState::InFlight { .. }, _)) => ApiError::IdempotencyInFlight.into_response(),
        Ok((IdempotencyState::Mismatch, _)) => ApiError::IdempotencyMismatch.into_response(),
        // Kept answers go only to the token that got them (its hash is in the scope), and
        // only while it still works (checked above).
        Ok((IdempotencyState::Completed(stored), _)) => {
            let (mut parts, _) = req.into_parts();
            replay(kept_message_answer(&s, &mut parts, stored).await)
        }
        // On a task of its own: a client that stops waiting (a timeout, a dropped
        // connection) does not stop the request half-way, after its write was queued but
        // before its answer was kept; its retry then finds the answer.
        Ok((IdempotencyState::Started { .. }, hold)) => {
            if creates.is_some() {
                req.extensions_mut().insert(IdempotentMessageId(message_id(&scope, hold)));
            }
            match tokio::spawn(run_and_keep(store.clone(), (scope, hold), req, next)).await {
                Ok(response) => response,
                Err(e) => ApiError::Internal(format!("the request's handler stopped: {e}")).into_response(),
            }
        }
    }
}

/// Takes the key `scope` for a request whose body's digest is `fingerprint`, or tells how it
/// stands; while the same request holds it, waits up to [`IN_FLIGHT_WAIT`] for it to end
/// (its answer kept, or the key released for this one to run). Answers the state with what
/// the key is held by: the time it was taken, with its lease (a request that outlived the
/// lease, whose retry took the key, finishes or frees nothing of it).
///
/// The work of the same request's hold, still on or run out unfinished (its process died
/// between doing the work and keeping its answer), is looked for with `done_by`: when found,
/// its answer is kept in the key's place, and is the state answered.
async fn begin<F, Fut>(
    store: &DynStore,
    scope: &str,
    fingerprint: &str,
    done_by: F,
) -> hooklane_store::StoreResult<(IdempotencyState, Hold)>
where
    F: Fn(Hold) -> Fut,
    Fut: std::future::Future<Output = Option<StoredResponse>>,
{
    let until = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    let mut pause = Duration::from_millis(50);
    loop {
        let hold = (Utc::now(), IN_FLIGHT_LEASE);
        // The lease end of the hold whose work to look for, and whether this take holds the
        // key now (in place of that hold, which ran out) or that hold still does.
        let (lease_end, taken) = match store.idempotency_begin(scope, fingerprint, hold.0, hold.1).await? {
            IdempotencyState::InFlight { held_until } => (held_until, false),
            IdempotencyState::Started { resumes: Some(end) } => (Some(end), true),
            state => return Ok((state, hold)),
        };
        if let Some(earlier) = lease_end.and_then(held_since) {
            if let Some(answer) = done_by(earlier).await {
                let keeper = if taken { hold } else { earlier };
                let expires_at = Utc::now() + KEY_TTL;
                if let Err(e) = store.idempotency_finish(scope, keeper, answer.clone(), expires_at).await {
                    tracing::warn!(error = %e, "could not keep an idempotent answer found again");
                }
                return Ok((IdempotencyState::Completed(answer), keeper));
            }
        }
        if taken {
            return Ok((IdempotencyState::Started { resumes: None }, hold));
        }
        // Looked at with reads (a take is a write: on SQLite, a turn of the one writer)
        // until its holder is done, then taken again: its answer, or the key it freed.
        loop {
            if tokio::time::Instant::now() + pause >= until {
                return Ok((IdempotencyState::InFlight { held_until: None }, hold));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            if !store.idempotency_held(scope, Utc::now()).await? {
                break;
            }
        }
    }
}

/// The hold whose lease ends at `lease_end`: holds are all taken for [`IN_FLIGHT_LEASE`].
fn held_since(lease_end: hooklane_core::DateTime<Utc>) -> Option<Hold> {
    let lease = chrono::TimeDelta::from_std(IN_FLIGHT_LEASE).ok()?;
    Some((lease_end.checked_sub_signed(lease)?, IN_FLIGHT_LEASE))
}

/// The id of the message that a create holding its key `scope` so makes: the hold's time,
/// and bits of the scope's (a digest of the credentials, path and key; the id gives none of
/// them away). A retry finding that hold unfinished makes the same id, and looks the
/// message up by it: the first request's process may have died after storing the message
/// and before keeping its answer, and the retry must answer that message, not make another
/// (the receivers tell messages apart by id). A later hold, after a failure or the key's
/// expiry, makes another id.
fn message_id(scope: &str, (taken, _): Hold) -> String {
    let digest = Sha256::new().chain_update(b"hooklane idempotent message id\0").chain_update(scope).finalize();
    let mut bits = [0u8; 16];
    bits.copy_from_slice(&digest[..16]);
    hooklane_core::ids::made_of(hooklane_core::ids::MESSAGE, taken, u128::from_be_bytes(bits))
}

/// The message id a keyed create (`/api/v1/app/{app}/msg`) gives its message, from
/// [`message_id`]: a request extension for its handler.
#[derive(Clone)]
pub struct IdempotentMessageId(pub String);

/// The answer kept for a create of message `id` in application `app` (its id or uid, as in
/// the path) when the message exists (payload `{}`, as [`without_payload`] keeps it).
async fn kept_answer_of(s: &AppState, app: &str, id: &str) -> Option<StoredResponse> {
    let message = stored_message(s, app, id).await?;
    let body = serde_json::to_vec(&MessageOut::new(message, false)).ok()?;
    Some(StoredResponse { status: StatusCode::ACCEPTED.as_u16(), body: without_payload(&body)? })
}

/// Message `id` of application `app` (its id or uid, as in the path), if it is stored.
async fn stored_message(s: &AppState, app: &str, id: &str) -> Option<hooklane_core::model::Message> {
    let app = s.0.cache.app(&s.0.store, app).await.ok()??;
    // (The store finds a message by its `eventId` too: the id must be the message's.)
    s.0.store.get_message(&app.id, id).await.ok()?.filter(|m| m.id == id)
}

/// A path's segment decoded (the path as sent: the router, not this, decodes its segments).
fn decoded(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment).decode_utf8().ok().map(|s| s.into_owned())
}

/// Runs the request that took the key `scope` (held so), and keeps its answer for replay.
async fn run_and_keep(store: DynStore, (scope, hold): (String, Hold), req: Request, next: Next) -> Response {
    // Until the handler has answered, the key is released if it panics: a key left in
    // flight would refuse every retry until its lease ends.
    let mut guard = AbortOnDrop { store: Some(store.clone()), scope: scope.clone(), hold };
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let status = response.status();
    // Only a success is final. A refusal (bad input, not found, a conflict) changed
    // nothing, and a server error may be passing: the key is released, so that the
    // corrected or later retry runs instead of replaying the refusal for 24 hours.
    if !status.is_success() {
        let _ = store.idempotency_abort(&scope, hold).await;
        guard.disarm();
        return response;
    }
    let (parts, body) = response.into_parts();
    // The handler built the answer whole; reading it cannot fail but for a streamed body.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::Internal(format!("cannot read the answer: {e}")).into_response(),
    };
    // The cap is on what is kept: a created message's answer is kept without its payload,
    // and replayed whatever the size of the payload it is made again with.
    let kept = if creates_message(&path).is_some() { without_payload(&bytes) } else { None };
    let kept = kept.unwrap_or_else(|| bytes.to_vec());
    let stored = if kept.len() <= MAX_STORED_BODY {
        StoredResponse { status: status.as_u16(), body: kept }
    } else {
        too_large_to_replay()
    };
    let expires_at = Utc::now() + KEY_TTL;
    // The request succeeded: its key must not be released, or a retry would run it again.
    // Keeping the answer is tried a few times; when it still fails, the key is left in
    // flight, and retries are refused (409) until its lease ends rather than run twice.
    guard.disarm();
    let mut failure = None;
    for wait_ms in [0, 50, 250, 1000] {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        match store.idempotency_finish(&scope, hold, stored.clone(), expires_at).await {
            Ok(()) => {
                failure = None;
                break;
            }
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        tracing::warn!(error = %e, "could not keep an idempotent answer: its key stays taken until its lease ends");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The application (its id or uid) of a path that creates a message, answered with it:
/// `/api/v1/app/{app}/msg` (a trailing slash is the same route), whose answer is as its
/// `with_content` asks (`true`), and `/api/v1/app/{app}/endpoint/{endpoint}/send-example`,
/// always with its payload (`false`).
fn creates_message(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/api/v1/app/")?.trim_end_matches('/');
    if let Some(app) = rest.strip_suffix("/msg") {
        return (!app.is_empty() && !app.contains('/')).then_some((app, true));
    }
    let (app, endpoint) = rest.strip_suffix("/send-example")?.split_once("/endpoint/")?;
    (!app.is_empty() && !app.contains('/') && !endpoint.is_empty() && !endpoint.contains('/')).then_some((app, false))
}

/// A created message's answer as kept: its payload `{}`. The payload is the message's, and
/// deleting it (an expunge of its content, or the message's retention) must leave no copy
/// of it here for the day the answer is kept; a replay reads the message again
/// ([`kept_message_answer`]). `None` for an answer that is no message.
fn without_payload(body: &[u8]) -> Option<Vec<u8>> {
    let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).ok()?;
    *fields.get_mut("payload")? = RawValue::from_string("{}".into()).ok()?;
    serde_json::to_vec(&fields).ok()
}

/// The answer to replay: a created message's made again from the message as it is now
/// (byte for byte the first answer, or its payload `{}` once expunged), as the request
/// asked for it (`with_content`); when it is gone, or for any other answer, as kept.
async fn kept_message_answer(s: &AppState, parts: &mut Parts, mut stored: StoredResponse) -> StoredResponse {
    let Some((app, asked)) = creates_message(parts.uri.path()).and_then(|(app, asked)| Some((decoded(app)?, asked)))
    else {
        return stored;
    };
    if !StatusCode::from_u16(stored.status).is_ok_and(|status| status.is_success()) {
        return stored;
    }
    let message = async {
        let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(&stored.body).ok()?;
        let id: String = serde_json::from_str(fields.get("id")?.get()).ok()?;
        let message = stored_message(s, &app, &id).await?;
        let with_content =
            !asked || Query::from_request_parts(parts, s).await.ok()?.flag("with_content").ok()?.unwrap_or(true);
        Some(MessageOut::new(message, with_content))
    };
    if let Some(body) = message.await.and_then(|out| serde_json::to_vec(&out).ok()) {
        stored.body = body;
    }
    stored
}

/// What a retry of a request whose answer was too large to keep gets: a refusal saying it
/// succeeded, rather than a second run.
fn too_large_to_replay() -> StoredResponse {
    let body = serde_json::json!({
        "code": "idempotency_answer_not_kept",
        "detail": "the first request with this Idempotency-Key succeeded; its answer was too large to keep for replay",
    });
    StoredResponse { status: StatusCode::CONFLICT.as_u16(), body: body.to_string().into_bytes() }
}

/// When a key was taken, and for how long: what holds it.
type Hold = (hooklane_core::DateTime<Utc>, Duration);

/// Releases an idempotency key in flight when dropped, unless disarmed.
struct AbortOnDrop {
    store: Option<DynStore>,
    scope: String,
    hold: Hold,
}

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.store = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let (Some(store), Ok(rt)) = (self.store.take(), tokio::runtime::Handle::try_current()) {
            let (scope, hold) = (std::mem::take(&mut self.scope), self.hold);
            rt.spawn(async move {
                let _ = store.idempotency_abort(&scope, hold).await;
            });
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    if !response_is_empty(status) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

fn response_is_empty(status: StatusCode) -> bool {
    status == StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use hooklane_store::sqlite::SqliteStore;

    use super::*;

    async fn store() -> (DynStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).await.expect("open");
        (Arc::new(store), dir)
    }

    /// `begin` with a `done_by` that notes the holds it is asked about and answers `found`.
    async fn begin_finding(
        store: &DynStore,
        scope: &str,
        found: Option<StoredResponse>,
    ) -> ((IdempotencyState, Hold), Vec<Hold>) {
        let asked = Mutex::new(Vec::new());
        let done_by = |held: Hold| {
            asked.lock().unwrap().push(held);
            let found = found.clone();
            async move { found }
        };
        let begun = begin(store, scope, "f", done_by).await.expect("begin");
        (begun, asked.into_inner().unwrap())
    }

    fn answer() -> StoredResponse {
        StoredResponse { status: 202, body: br#"{"id":"msg_1","payload":{}}"#.to_vec() }
    }

    /// A hold as the store keeps it: to the millisecond.
    fn to_the_ms((taken, lease): Hold) -> Hold {
        (hooklane_core::DateTime::from_timestamp_millis(taken.timestamp_millis()).unwrap(), lease)
    }

    #[tokio::test]
    async fn the_work_of_a_hold_that_ran_out_is_answered_and_kept() {
        let (store, _dir) = store().await;
        // A request took the key ten minutes ago and never finished: its process died.
        let died = (Utc::now() - chrono::TimeDelta::minutes(10), IN_FLIGHT_LEASE);
        store.idempotency_begin("scope", "f", died.0, died.1).await.unwrap();
        let ((state, keeper), asked) = begin_finding(&store, "scope", Some(answer())).await;
        assert_eq!(asked, vec![to_the_ms(died)], "the dead hold's work is looked for");
        assert_eq!(state, IdempotencyState::Completed(answer()));
        assert_ne!(keeper, to_the_ms(died), "kept under this take's hold");
        // The answer is kept: the next retry replays it without looking again.
        let ((state, _), asked) = begin_finding(&store, "scope", None).await;
        assert_eq!((state, asked), (IdempotencyState::Completed(answer()), vec![]));
        // The same id is made again from the hold as the store tells it.
        assert_eq!(message_id("scope", died), message_id("scope", to_the_ms(died)));
        assert_ne!(message_id("scope", died), message_id("other scope", died));
    }

    #[tokio::test]
    async fn a_hold_that_ran_out_without_its_work_done_is_run_again() {
        let (store, _dir) = store().await;
        let died = (Utc::now() - chrono::TimeDelta::minutes(10), IN_FLIGHT_LEASE);
        store.idempotency_begin("scope", "f", died.0, died.1).await.unwrap();
        let ((state, hold), asked) = begin_finding(&store, "scope", None).await;
        assert_eq!(asked, vec![to_the_ms(died)]);
        assert_eq!(state, IdempotencyState::Started { resumes: None });
        assert_ne!(message_id("scope", hold), message_id("scope", died), "another message");
        assert!(store.idempotency_held("scope", Utc::now()).await.unwrap(), "held by this take");
    }

    #[tokio::test]
    async fn the_work_of_a_hold_still_on_is_answered_at_once() {
        let (store, _dir) = store().await;
        let holder = (Utc::now() - chrono::TimeDelta::seconds(30), IN_FLIGHT_LEASE);
        store.idempotency_begin("scope", "f", holder.0, holder.1).await.unwrap();
        let started = tokio::time::Instant::now();
        let ((state, keeper), asked) = begin_finding(&store, "scope", Some(answer())).await;
        assert!(started.elapsed() < IN_FLIGHT_WAIT, "not after waiting");
        assert_eq!(
            (state, keeper, asked),
            (IdempotencyState::Completed(answer()), to_the_ms(holder), vec![to_the_ms(holder)])
        );
        // Kept under the holder's hold: its own finish then changes nothing.
        assert!(!store.idempotency_held("scope", Utc::now()).await.unwrap());
        let late = StoredResponse { status: 202, body: b"late".to_vec() };
        store.idempotency_finish("scope", holder, late, Utc::now() + KEY_TTL).await.unwrap();
        let ((state, _), _) = begin_finding(&store, "scope", None).await;
        assert_eq!(state, IdempotencyState::Completed(answer()));
    }

    /// The holder stores its message after the first look, and its lease runs out while
    /// the retry waits: the retry, taking the key in its place, looks again.
    #[tokio::test]
    async fn a_hold_that_runs_out_while_waited_for_is_looked_for_again() {
        let (store, _dir) = store().await;
        let lease = chrono::TimeDelta::from_std(IN_FLIGHT_LEASE).unwrap();
        let holder = (Utc::now() - lease + chrono::TimeDelta::seconds(1), IN_FLIGHT_LEASE);
        store.idempotency_begin("scope", "f", holder.0, holder.1).await.unwrap();
        let asked = Mutex::new(Vec::new());
        let done_by = |held: Hold| {
            let mut asked = asked.lock().unwrap();
            asked.push(held);
            let found = (asked.len() > 1).then(answer);
            async move { found }
        };
        let (state, keeper) = begin(&store, "scope", "f", done_by).await.expect("begin");
        assert_eq!(asked.into_inner().unwrap(), vec![to_the_ms(holder); 2]);
        assert_eq!(state, IdempotencyState::Completed(answer()));
        assert_ne!(keeper, to_the_ms(holder), "kept under the retry's own hold");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_still_on_without_its_work_done_is_waited_for() {
        let (store, _dir) = store().await;
        let holder = (Utc::now(), IN_FLIGHT_LEASE);
        store.idempotency_begin("scope", "f", holder.0, holder.1).await.unwrap();
        let ((state, _), asked) = begin_finding(&store, "scope", None).await;
        assert_eq!(asked, vec![to_the_ms(holder)], "looked for once");
        assert_eq!(state, IdempotencyState::InFlight { held_until: None });
    }

    #[test]
    fn paths_that_create_a_message_are_known() {
        assert_eq!(creates_message("/api/v1/app/app_1/msg"), Some(("app_1", true)));
        assert_eq!(creates_message("/api/v1/app/my-uid/msg/"), Some(("my-uid", true)));
        assert_eq!(creates_message("/api/v1/app/app_1/endpoint/ep_1/send-example"), Some(("app_1", false)));
        for other in [
            "/api/v1/app/app_1/msg/msg_1/content",
            "/api/v1/app/app_1/endpoint",
            "/api/v1/app//msg",
            "/api/v1/app/app_1/endpoint//send-example",
            "/api/v1/app/app_1/x/endpoint/ep_1/send-example",
        ] {
            assert_eq!(creates_message(other), None, "{other}");
        }
    }

    #[test]
    fn answers_holding_a_secret_are_not_kept() {
        for path in [
            "/api/v1/auth/app-portal-access/app_1",
            "/api/v1/auth/app/app_1/poller/ep_1/token/rotate",
            "/api/v1/app/app_1/endpoint/ep_1/secret/rotate",
            "/api/v1/app/app_1/endpoint/ep_1/secret/rotate/",
            "/api/v1/app/app_1/integration/integ_1/key/rotate",
            "/api/v1/operational-webhook/endpoint/ep_1/secret/rotate",
        ] {
            assert!(answers_a_secret(path), "{path}");
        }
        for path in ["/api/v1/app/app_1/msg", "/api/v1/app/app_1/endpoint", "/api/v1/app/app_1/integration"] {
            assert!(!answers_a_secret(path), "{path}");
        }
    }
}
