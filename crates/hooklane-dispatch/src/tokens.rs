//! Access tokens of endpoints with OAuth settings ([`EndpointOauth`]): asked of the
//! receiver's authorization server when an attempt needs one, kept until shortly before
//! they expire, and asked for by one request at a time per endpoint (the attempts that
//! need it meanwhile wait for its answer: a burst of deliveries makes one token request).
//!
//! A token request runs in a task of its own, which holds the endpoint's turn until its
//! answer is recorded (and a rotated refresh token saved): an attempt that gives up waiting
//! (its timeout) cannot let a second request start with a refresh token the first one is
//! exchanging, which authorization servers that detect reuse answer by revoking the grant.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hooklane_core::model::Endpoint;
use hooklane_core::oauth::{read_token_answer, EndpointOauth, GrantType, TokenRequest};
use hooklane_core::{DateTime, Utc};
use hooklane_store::DynStore;

/// How long a token is used when its server does not say how long it lasts.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest a token is used, whatever its server says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How much earlier than its expiry a token is replaced: this, or half its lifetime when
/// that is shorter.
const EARLY: Duration = Duration::from_secs(60);
/// How long a failed token request answers for the attempts that waited on it, and for
/// those that come right after: a server that is down is not asked once per delivery.
const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// Older refresh tokens remembered per endpoint, to tell the settings an attempt brings
/// (read from the store before a rotation reached it) from new ones.
const KNOWN_KEPT: usize = 64;
/// An endpoint's entry unused this long is dropped (with its token) when entries are added.
const IDLE: Duration = Duration::from_secs(3600);

pub struct Tokens {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    /// Where rotated refresh tokens are saved (none in unit tests).
    store: Option<DynStore>,
    /// Bounds a token request, and the saving of a rotated refresh token.
    timeout: Duration,
}

struct Entry {
    app_id: String,
    endpoint_id: String,
    /// The settings the entry was made for (with the refresh token as then stored).
    settings: EndpointOauth,
    /// Held by the task of the one token request allowed at a time.
    turn: Arc<tokio::sync::Mutex<()>>,
    state: Mutex<State>,
}

struct State {
    /// The newest `updated_at` of the endpoint seen with the entry's settings: an older
    /// snapshot never replaces them, and a rotation (which leaves it as it is) is told from
    /// an operator's new refresh token (which moves it on).
    version: DateTime<Utc>,
    token: Option<(Arc<str>, Instant)>,
    failed: Option<(String, Instant)>,
    /// The settings as now (with the newest refresh token).
    stored: EndpointOauth,
    /// The settings as the store has them, as far as this node knows: what saving a
    /// rotation expects to replace (a save that failed leaves it behind `stored`).
    persisted: EndpointOauth,
    /// Refresh tokens older than (or as old as) `stored`'s: the ones this node rotated
    /// from, and those of the entries this one replaced.
    known: VecDeque<String>,
    used: Instant,
}

/// Why an attempt read before its endpoint's OAuth settings moved gets no token (the
/// sender hands such a delivery back rather than recording an attempt).
pub(crate) const STALE_SETTINGS: &str = "the endpoint's OAuth settings changed after this attempt was read";

impl Tokens {
    pub fn new(store: Option<DynStore>, timeout: Duration) -> Tokens {
        Tokens { entries: Mutex::default(), store, timeout }
    }

    /// The endpoint's access token under `settings`, asked for with `fetch` (which POSTs a
    /// token request and answers its status and body) when none is held or it expires soon.
    pub async fn bearer<F, Fut>(
        &self,
        endpoint: &Endpoint,
        settings: &EndpointOauth,
        fetch: F,
    ) -> Result<Arc<str>, String>
    where
        F: FnOnce(TokenRequest) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(u16, Vec<u8>), String>> + Send + 'static,
    {
        let entry = self.entry(endpoint, settings)?;
        if let Some(ready) = entry.ready() {
            return ready;
        }
        let turn = entry.turn.clone().lock_owned().await;
        // Whoever had the turn may have got it meanwhile.
        if let Some(ready) = entry.ready() {
            return ready;
        }
        let ask = ask(entry, self.store.clone(), self.timeout, fetch, turn);
        tokio::spawn(ask).await.unwrap_or_else(|e| Err(format!("the token request failed: {e}")))
    }

    /// The receiver refused `token` (401): the next attempt asks for a new one.
    pub fn forget(&self, endpoint_id: &str, token: &str) {
        let entry = lock(&self.entries).get(endpoint_id).cloned();
        if let Some(entry) = entry {
            let mut state = lock(&entry.state);
            if state.token.as_ref().is_some_and(|(held, _)| &**held == token) {
                state.token = None;
            }
        }
    }

    /// The endpoint's entry, decided and (when new) added under one lock. An attempt read
    /// before the settings moved to another token endpoint or receiver origin gets none:
    /// the newer settings' token (or secret) must not go where the older ones pointed.
    fn entry(&self, endpoint: &Endpoint, settings: &EndpointOauth) -> Result<Arc<Entry>, String> {
        let mut entries = lock(&self.entries);
        if let Some(held) = entries.get(&endpoint.id) {
            let moved = held.settings.token_url != settings.token_url
                || held.settings.endpoint_origin != settings.endpoint_origin;
            if endpoint.updated_at < lock(&held.state).version && moved {
                return Err(STALE_SETTINGS.into());
            }
            if held.fits(endpoint.updated_at, settings) {
                return Ok(held.clone());
            }
        }
        // The endpoint keeps its turn: a request of the entry replaced may still be on its
        // way, and two must not exchange one refresh token at once.
        let turn = entries.get(&endpoint.id).map(|held| held.turn.clone()).unwrap_or_default();
        // A refresh token from elsewhere (another node's rotation) supersedes the ones the
        // entry it replaces knew: snapshots that still bring those must not come back to them.
        // The access token held is still good: only the next exchange takes the new refresh
        // token. (Dropping it made each node's rotation cost the other nodes a token
        // request, and those requests rotations of their own, in turn, for ever.)
        // (Only a rotation, which leaves the endpoint's version as it was: an operator's new
        // refresh token is a new grant, whose token is asked for.)
        let (known, token) = match entries.get(&endpoint.id) {
            Some(held) if same_but_refresh(&held.settings, settings) => {
                let state = lock(&held.state);
                let mut known = state.known.clone();
                known.extend(state.stored.refresh_token.clone());
                while known.len() > KNOWN_KEPT {
                    known.pop_front();
                }
                let rotated = endpoint.updated_at == state.version;
                (known, state.token.clone().filter(|_| rotated))
            }
            _ => (VecDeque::new(), None),
        };
        let now = Instant::now();
        // (An entry whose rotated refresh token is not saved yet is the only copy of it:
        // kept, however idle.)
        entries.retain(|_, e| {
            let state = lock(&e.state);
            now.duration_since(state.used) < IDLE || state.stored != state.persisted
        });
        let fresh = Arc::new(Entry {
            app_id: endpoint.app_id.clone(),
            endpoint_id: endpoint.id.clone(),
            settings: settings.clone(),
            turn,
            state: Mutex::new(State {
                version: endpoint.updated_at,
                token,
                failed: None,
                stored: settings.clone(),
                persisted: settings.clone(),
                known,
                used: now,
            }),
        });
        entries.insert(endpoint.id.clone(), fresh.clone());
        Ok(fresh)
    }
}

impl Entry {
    /// Whether an attempt that brings `settings`, of the endpoint as it was at `version`,
    /// goes by this entry: the same settings; an older snapshot (the entry's are newer); or
    /// the same but for a refresh token the entry holds or knows to be older. Otherwise
    /// they are new (an operator's, or another node's rotation).
    fn fits(&self, version: DateTime<Utc>, settings: &EndpointOauth) -> bool {
        let mut state = lock(&self.state);
        if self.settings == *settings {
            // (The endpoint changed otherwise since: its settings are still these.)
            state.version = state.version.max(version);
            return true;
        }
        if version < state.version {
            return true;
        }
        same_but_refresh(&self.settings, settings)
            && settings
                .refresh_token
                .as_ref()
                .is_some_and(|r| state.stored.refresh_token.as_ref() == Some(r) || state.known.contains(r))
    }

    /// The token held, or the failure that still answers; `None`: one must be asked for.
    fn ready(&self) -> Option<Result<Arc<str>, String>> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        state.used = now;
        if let Some((token, good_until)) = &state.token {
            if now < *good_until {
                return Some(Ok(token.clone()));
            }
        }
        match &state.failed {
            Some((why, until)) if now < *until => Some(Err(why.clone())),
            _ => None,
        }
    }
}

/// One token request, with the endpoint's turn: asks, saves a rotated refresh token, and
/// records the answer (or the failure) for the attempts that wait.
async fn ask<F, Fut>(
    entry: Arc<Entry>,
    store: Option<DynStore>,
    timeout: Duration,
    fetch: F,
    _turn: tokio::sync::OwnedMutexGuard<()>,
) -> Result<Arc<str>, String>
where
    F: FnOnce(TokenRequest) -> Fut,
    Fut: Future<Output = Result<(u16, Vec<u8>), String>>,
{
    let (mut stored, persisted_before) = {
        let state = lock(&entry.state);
        (state.stored.clone(), state.persisted.clone())
    };
    // A rotation this node could not save yet is saved before another is asked for; one
    // of another node's found instead is the refresh token to exchange.
    if stored != persisted_before {
        if let Some(store) = &store {
            let saved = save_rotation(store, &entry, &persisted_before, &stored, timeout).await;
            let mut state = lock(&entry.state);
            match saved {
                Saved::Yes | Saved::Never => state.persisted = stored.clone(),
                Saved::Newer(there) => {
                    if state.known.len() == KNOWN_KEPT {
                        state.known.pop_front();
                    }
                    state.known.extend(stored.refresh_token.clone());
                    state.stored = (*there).clone();
                    state.persisted = (*there).clone();
                    stored = *there;
                }
                Saved::Later => {}
            }
        }
    }
    // A token's life counts from when it was asked for: a slow answer has used part of it.
    let asked_at = Instant::now();
    let jti = hooklane_core::ids::new_id("jti");
    let request = stored.token_request(None, Utc::now().timestamp(), &jti);
    let answer = match tokio::time::timeout(timeout, fetch(request)).await {
        Ok(answer) => answer.and_then(|(status, body)| read_token_answer(status, &body)),
        Err(_) => Err(format!("the token endpoint did not answer within {} ms", timeout.as_millis())),
    };
    let outcome = if answer.is_ok() { "success" } else { "failure" };
    metrics::counter!("hooklane_oauth_token_requests_total", "outcome" => outcome).increment(1);
    let issued = match answer {
        Ok(issued) => issued,
        Err(why) => {
            let mut state = lock(&entry.state);
            state.token = None;
            state.failed = Some((why.clone(), Instant::now() + FAILURE_HOLD));
            return Err(why);
        }
    };
    let lifetime = issued.expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs).min(MAX_LIFETIME);
    let good_until =
        asked_at.checked_add(lifetime.saturating_sub(EARLY.min(lifetime / 2))).unwrap_or_else(Instant::now);
    let token: Arc<str> = issued.access_token.into();
    let rotated = match (stored.grant_type, issued.refresh_token) {
        (GrantType::RefreshToken, Some(new)) if Some(&new) != stored.refresh_token.as_ref() => {
            Some(EndpointOauth { refresh_token: Some(new), ..stored.clone() })
        }
        _ => None,
    };
    if let Some(saved) = &rotated {
        // The old refresh token may no longer be honoured: the next request uses the new
        // one whatever becomes of the save.
        let persisted = {
            let mut state = lock(&entry.state);
            if state.known.len() == KNOWN_KEPT {
                state.known.pop_front();
            }
            state.known.extend(stored.refresh_token.clone());
            state.stored = saved.clone();
            state.persisted.clone()
        };
        // Saved before the token is handed out and the turn given up: saves are in the
        // order of the rotations, and a restart (or another node) finds the newest.
        if let Some(store) = store {
            match save_rotation(&store, &entry, &persisted, saved, timeout).await {
                // (Never: nothing to keep trying; the entry goes with the settings it was for.)
                Saved::Yes | Saved::Never => lock(&entry.state).persisted = saved.clone(),
                Saved::Newer(_) => tracing::warn!(
                    endpoint_id = %entry.endpoint_id,
                    "another node exchanged the same OAuth refresh token; the newer one stays saved"
                ),
                Saved::Later => {}
            }
        }
    }
    let mut state = lock(&entry.state);
    state.failed = None;
    state.token = Some((token.clone(), good_until));
    Ok(token)
}

/// Saves the rotated refresh token in place of `persisted`, unless the settings changed
/// How saving a rotated refresh token went.
#[derive(Debug, PartialEq)]
enum Saved {
    Yes,
    /// The store holds a rotation of another node's, newer than this one's: to take up.
    Newer(Box<EndpointOauth>),
    /// The settings changed (an operator's) or are gone: never to be saved.
    Never,
    /// Not this time (the store failing): tried again before the next request.
    Later,
}

/// Saves the rotated refresh token `saved` in place of `persisted`, what this node last
/// saved. When the store holds something else: a save of this node's that timed out but
/// went through (this one then goes in its place), another node's rotation (newer: taken
/// up), or an operator's new settings, which win.
async fn save_rotation(
    store: &DynStore,
    entry: &Entry,
    persisted: &EndpointOauth,
    saved: &EndpointOauth,
    within: Duration,
) -> Saved {
    let save = store.replace_endpoint_oauth(&entry.app_id, &entry.endpoint_id, persisted, saved);
    let endpoint_id = &entry.endpoint_id;
    match tokio::time::timeout(within, save).await {
        Ok(Ok(true)) => return Saved::Yes,
        Ok(Ok(false)) => match tokio::time::timeout(within, store.get_endpoint(&entry.app_id, endpoint_id)).await {
            Ok(Ok(Some(ep))) => {
                let Some(there) = ep.oauth.filter(|o| same_but_refresh(o, saved)) else {
                    tracing::warn!(%endpoint_id, "OAuth settings changed meanwhile; rotated refresh token not saved");
                    return Saved::Never;
                };
                let ours = there
                    .refresh_token
                    .as_ref()
                    .is_some_and(|r| saved.refresh_token.as_ref() == Some(r) || lock(&entry.state).known.contains(r));
                if !ours {
                    return Saved::Newer(Box::new(there));
                }
                if there == *saved {
                    return Saved::Yes;
                }
                let again = store.replace_endpoint_oauth(&entry.app_id, endpoint_id, &there, saved);
                if let Ok(Ok(true)) = tokio::time::timeout(within, again).await {
                    return Saved::Yes;
                }
                tracing::warn!(%endpoint_id, "could not save a rotated OAuth refresh token; tried again later");
            }
            Ok(Ok(None)) => return Saved::Never,
            _ => tracing::warn!(%endpoint_id, "could not save a rotated OAuth refresh token; tried again later"),
        },
        Ok(Err(e)) => tracing::warn!(%endpoint_id, error = %e, "could not save a rotated OAuth refresh token"),
        Err(_) => tracing::warn!(%endpoint_id, "saving a rotated OAuth refresh token timed out"),
    }
    Saved::Later
}

/// Whether two settings differ at most by their refresh token.
fn same_but_refresh(a: &EndpointOauth, b: &EndpointOauth) -> bool {
    let but_refresh = |s: &EndpointOauth| EndpointOauth { refresh_token: None, ..s.clone() };
    but_refresh(a) == but_refresh(b)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hooklane_core::oauth::AuthMethod;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn settings(grant: GrantType) -> EndpointOauth {
        EndpointOauth {
            token_url: "https://auth.example.com/token".into(),
            client_id: "c".into(),
            client_secret: Some("s".into()),
            auth_method: AuthMethod::ClientSecretPost,
            grant_type: grant,
            scopes: None,
            extra_params: None,
            refresh_token: (grant == GrantType::RefreshToken).then(|| "r0".to_string()),
            jwt_params: None,
            endpoint_origin: "https://receiver.example.com".into(),
        }
    }

    /// An endpoint with nothing set but its id and `updated_at` (at Unix second `version`).
    pub(crate) fn endpoint(id: &str, version: i64) -> Endpoint {
        let at = DateTime::from_timestamp(version, 0).unwrap();
        Endpoint { id: id.into(), ..Endpoint::new("app_1", "https://receiver.example.com/", "", at) }
    }

    fn tokens() -> Tokens {
        Tokens::new(None, Duration::from_secs(5))
    }

    fn answer(body: &'static str) -> impl Future<Output = Result<(u16, Vec<u8>), String>> + Send + 'static {
        std::future::ready(Ok((200, body.as_bytes().to_vec())))
    }

    async fn token_of(tokens: &Tokens, ep: &Endpoint, s: &EndpointOauth, body: &'static str) -> Result<String, String> {
        tokens.bearer(ep, s, move |_| answer(body)).await.map(|t| t.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_attempts_share_one_token_request() {
        let tokens = Arc::new(tokens());
        let asked = Arc::new(AtomicUsize::new(0));
        let s = settings(GrantType::ClientCredentials);
        let mut all = Vec::new();
        for _ in 0..32 {
            let (tokens, asked, s) = (tokens.clone(), asked.clone(), s.clone());
            all.push(tokio::spawn(async move {
                let ep = endpoint("ep_1", 1);
                tokens
                    .bearer(&ep, &s, move |_| async move {
                        asked.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok((200, br#"{"access_token":"t1","expires_in":3600}"#.to_vec()))
                    })
                    .await
                    .map(|t| t.to_string())
            }));
        }
        for task in all {
            assert_eq!(task.await.unwrap().unwrap(), "t1");
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1, "on a cold start too");
        // A refused token is asked for again; changed settings make a new entry, but not
        // when an older snapshot brings the old ones.
        let ep = endpoint("ep_1", 1);
        tokens.forget("ep_1", "t1");
        assert_eq!(token_of(&tokens, &ep, &s, r#"{"access_token":"t2"}"#).await.unwrap(), "t2");
        let changed = EndpointOauth { client_id: "d".into(), ..s.clone() };
        let newer = endpoint("ep_1", 2);
        assert_eq!(token_of(&tokens, &newer, &changed, r#"{"access_token":"t3"}"#).await.unwrap(), "t3");
        assert_eq!(token_of(&tokens, &ep, &s, r#"{"access_token":"t4"}"#).await.unwrap(), "t3", "older snapshot");
        // Settings moved to another token endpoint (or receiver origin): an attempt read
        // before gets neither the newer token nor a request with the newer secret.
        let elsewhere = EndpointOauth { token_url: "https://auth2.example.com/token".into(), ..changed.clone() };
        let newest = endpoint("ep_1", 3);
        assert_eq!(token_of(&tokens, &newest, &elsewhere, r#"{"access_token":"t5"}"#).await.unwrap(), "t5");
        let asked = Arc::new(AtomicUsize::new(0));
        let counted = asked.clone();
        let stale = tokens
            .bearer(&newer, &changed, move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                answer(r#"{"access_token":"t6"}"#)
            })
            .await;
        assert!(stale.as_ref().is_err_and(|e| e.contains("changed")), "{stale:?}");
        assert_eq!(asked.load(Ordering::SeqCst), 0, "nothing asked of the old token endpoint");
        assert_eq!(token_of(&tokens, &newest, &elsewhere, r#"{"access_token":"t7"}"#).await.unwrap(), "t5");
    }

    /// Two nodes on one endpoint with a refresh-token grant: each sees the other's rotation
    /// in the settings its attempts bring, takes the new refresh token for its next
    /// exchange, and keeps the access token it holds. (Each node dropped its token on
    /// seeing the other's rotation and rotated in turn: a token request per attempt.)
    #[tokio::test]
    async fn nodes_keep_their_tokens_through_each_others_rotations() {
        let asked = Arc::new(AtomicUsize::new(0));
        let (node_a, node_b) = (tokens(), tokens());
        let ep = endpoint("ep_1", 1);
        let with = |refresh: &str| EndpointOauth {
            refresh_token: Some(refresh.to_string()),
            ..settings(GrantType::RefreshToken)
        };
        // What the store holds: each exchange rotates it, as the other node then reads it.
        let stored = Arc::new(Mutex::new("r0".to_string()));
        for round in 0..10 {
            let node = if round % 2 == 0 { &node_a } else { &node_b };
            let current = with(&lock(&stored).clone());
            let (asked, stored) = (asked.clone(), stored.clone());
            let token = node
                .bearer(&ep, &current, move |_| {
                    let n = asked.fetch_add(1, Ordering::SeqCst) + 1;
                    *lock(&stored) = format!("r{n}");
                    let body = format!(r#"{{"access_token": "t{n}", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "r{n}"}}"#);
                    std::future::ready(Ok((200, body.into_bytes())))
                })
                .await
                .expect("token");
            assert!(token.starts_with('t'), "{token}");
        }
        assert_eq!(asked.load(Ordering::SeqCst), 2, "one token request per node");
    }

    /// A rotation saved while this node was not told so (its save's answer lost: a timeout)
    /// is taken up, and the next rotation saved in place of it; before, every later save
    /// expected the older token, failed, and the newest one lived in memory only.
    #[tokio::test]
    async fn a_rotation_saved_unbeknown_is_taken_up_and_the_next_saved_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("tokens.db");
        let store = hooklane_store::open(db.to_str().expect("path")).await.expect("store");
        let with = |refresh: &str| EndpointOauth {
            refresh_token: Some(refresh.to_string()),
            ..settings(GrantType::RefreshToken)
        };
        let mut ep = endpoint("ep_1", 1);
        let app = hooklane_core::model::Application {
            id: "app_1".into(),
            ..hooklane_core::model::Application::new("A", ep.created_at)
        };
        store.create_app(app).await.expect("app");
        ep.oauth = Some(with("r0"));
        store.create_endpoint(ep.clone()).await.expect("endpoint");
        let tokens = Tokens::new(Some(store.clone()), Duration::from_secs(5));
        let rotate = |to: &'static str| {
            move |_| {
                let body = format!(r#"{{"access_token": "t-{to}", "token_type": "Bearer", "refresh_token": "{to}"}}"#);
                std::future::ready(Ok((200, body.into_bytes())))
            }
        };
        let saved =
            || async { store.get_endpoint("app_1", "ep_1").await.unwrap().unwrap().oauth.unwrap().refresh_token };
        tokens.bearer(&ep, &with("r0"), rotate("r1")).await.expect("first token");
        assert_eq!(saved().await.as_deref(), Some("r1"));
        // The save went through, but this node did not hear of it.
        let entry = lock(&tokens.entries).get("ep_1").cloned().expect("entry");
        {
            let mut state = lock(&entry.state);
            state.persisted = with("r0");
            state.token = None;
        }
        tokens.bearer(&ep, &with("r1"), rotate("r2")).await.expect("second token");
        assert_eq!(saved().await.as_deref(), Some("r2"), "the newest refresh token is saved");
        assert_eq!(lock(&entry.state).persisted, with("r2"));

        // Rotated twice since its last save that it heard of (r2), the first of those saves
        // through unbeknown (r3), the second not (r4): r4 goes in place of r3.
        store.replace_endpoint_oauth("app_1", "ep_1", &with("r2"), &with("r3")).await.expect("r3 saved");
        {
            let mut state = lock(&entry.state);
            state.known.push_back("r3".into());
            state.stored = with("r4");
            state.token = None;
        }
        tokens.bearer(&ep, &with("r4"), rotate("r5")).await.expect("third token");
        assert_eq!(saved().await.as_deref(), Some("r5"));

        // Another node rotated after this one's last save (the store holds its r9): r9 is the
        // refresh token exchanged next, not this node's older one.
        store.replace_endpoint_oauth("app_1", "ep_1", &with("r5"), &with("r9")).await.expect("r9 saved");
        {
            let mut state = lock(&entry.state);
            state.persisted = with("r0");
            state.token = None;
        }
        let sent = Arc::new(Mutex::new(String::new()));
        let seen = sent.clone();
        tokens
            .bearer(&ep, &with("r5"), move |request| {
                *lock(&seen) = request.form;
                let body = r#"{"access_token": "t-r10", "token_type": "Bearer", "refresh_token": "r10"}"#;
                std::future::ready(Ok((200, body.as_bytes().to_vec())))
            })
            .await
            .expect("fourth token");
        assert!(lock(&sent).contains("refresh_token=r9"), "{}", lock(&sent));
        assert_eq!(saved().await.as_deref(), Some("r10"));
    }

    /// Another node's rotation after an unrelated change of the endpoint (its version moved
    /// on, its OAuth settings did not) is still a rotation: the token held is kept.
    #[tokio::test]
    async fn a_rotation_after_another_change_keeps_the_token() {
        let tokens = tokens();
        let asked = Arc::new(AtomicUsize::new(0));
        let with = |refresh: &str| EndpointOauth {
            refresh_token: Some(refresh.to_string()),
            ..settings(GrantType::RefreshToken)
        };
        let ask = |asked: Arc<AtomicUsize>| {
            move |_| {
                let n = asked.fetch_add(1, Ordering::SeqCst);
                let body = format!(r#"{{"access_token": "t{n}", "token_type": "Bearer", "expires_in": 3600}}"#);
                std::future::ready(Ok((200, body.into_bytes())))
            }
        };
        let first = tokens.bearer(&endpoint("ep_1", 1), &with("r0"), ask(asked.clone())).await.expect("token");
        // Renamed (version 2): the same settings.
        let again = tokens.bearer(&endpoint("ep_1", 2), &with("r0"), ask(asked.clone())).await.expect("token");
        // Another node rotates: version 2 still, a refresh token this node does not know.
        let rotated = tokens.bearer(&endpoint("ep_1", 2), &with("r1"), ask(asked.clone())).await.expect("token");
        assert_eq!((&*again, &*rotated), (&*first, &*first));
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one token request");
    }

    /// An operator's new refresh token (the endpoint's version moves on) is a new grant: its
    /// own token is asked for, where another node's rotation keeps the token held.
    #[tokio::test]
    async fn an_operators_new_refresh_token_is_a_new_grant() {
        let tokens = tokens();
        let with = |refresh: &str| EndpointOauth {
            refresh_token: Some(refresh.to_string()),
            ..settings(GrantType::RefreshToken)
        };
        let body = r#"{"access_token": "old-grant", "token_type": "Bearer", "expires_in": 3600}"#;
        assert_eq!(token_of(&tokens, &endpoint("ep_1", 1), &with("r0"), body).await.as_deref(), Ok("old-grant"));
        let body = r#"{"access_token": "new-grant", "token_type": "Bearer", "expires_in": 3600}"#;
        let got = token_of(&tokens, &endpoint("ep_1", 2), &with("pasted"), body).await;
        assert_eq!(got.as_deref(), Ok("new-grant"));
    }

    #[tokio::test]
    async fn a_cancelled_attempt_lets_its_request_finish_and_counts_it() {
        let tokens = Arc::new(tokens());
        let s = settings(GrantType::ClientCredentials);
        let ep = endpoint("ep_1", 1);
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        // The token endpoint answers once the test lets it: the attempt gives up first
        // however late its timer is served.
        let (answer_now, answer) = tokio::sync::oneshot::channel::<()>();
        let slow = tokens.bearer(&ep, &s, move |_| async move {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = answer.await;
            Ok((200, br#"{"access_token":"late","expires_in":3600}"#.to_vec()))
        });
        assert!(tokio::time::timeout(Duration::from_millis(10), slow).await.is_err(), "gave up");
        // The next attempt waits for that request rather than making its own (which would
        // answer "second" at once).
        let answer_later = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = answer_now.send(());
        };
        let (next, ()) = tokio::join!(token_of(&tokens, &ep, &s, r#"{"access_token":"second"}"#), answer_later);
        assert_eq!((next.unwrap().as_str(), asked.load(Ordering::SeqCst)), ("late", 1));
    }

    #[tokio::test]
    async fn failures_are_held_briefly_and_lifetimes_bounded() {
        let tokens = tokens();
        let s = settings(GrantType::ClientCredentials);
        let ep = endpoint("ep_1", 1);
        let refused =
            tokens.bearer(&ep, &s, |_| std::future::ready(Ok((401, br#"{"error":"invalid_client"}"#.to_vec())))).await;
        assert_eq!(refused.err().as_deref(), Some("the token endpoint answered 401: invalid_client"));
        let held = token_of(&tokens, &ep, &s, r#"{"access_token":"t1"}"#).await;
        assert_eq!(held.err().as_deref(), Some("the token endpoint answered 401: invalid_client"), "not asked again");
        // A token that lasts no time is asked for again at once; one that claims to last
        // for ever (or past what an Instant holds) is kept at most a day.
        let other = endpoint("ep_2", 1);
        assert_eq!(token_of(&tokens, &other, &s, r#"{"access_token":"t1","expires_in":0}"#).await.unwrap(), "t1");
        let huge = r#"{"access_token":"t2","expires_in":1e300}"#;
        assert_eq!(token_of(&tokens, &other, &s, huge).await.unwrap(), "t2");
        assert_eq!(token_of(&tokens, &other, &s, r#"{"access_token":"t3"}"#).await.unwrap(), "t2");
    }

    #[tokio::test]
    async fn a_rotated_refresh_token_is_used_next() {
        let tokens = tokens();
        let s = settings(GrantType::RefreshToken);
        let ep = endpoint("ep_1", 1);
        let with = |expected: &'static str, body: &'static str| {
            move |req: TokenRequest| {
                assert!(req.form.contains(&format!("refresh_token={expected}")), "{}", req.form);
                answer(body)
            }
        };
        let r1 = r#"{"access_token":"t1","expires_in":0,"refresh_token":"r1"}"#;
        tokens.bearer(&ep, &s, with("r0", r1)).await.unwrap();
        // The store has not caught up (the attempt brings r0): this node's newest, r1.
        let r2 = r#"{"access_token":"t2","expires_in":0,"refresh_token":"r2"}"#;
        tokens.bearer(&ep, &s, with("r1", r2)).await.unwrap();
        // It has (the attempt brings r1): still the newest.
        let caught_up = EndpointOauth { refresh_token: Some("r1".into()), ..s.clone() };
        tokens.bearer(&ep, &caught_up, with("r2", r#"{"access_token":"t3","expires_in":0}"#)).await.unwrap();
        // A refresh token from elsewhere (an operator's, another node's rotation) starts afresh,
        // and snapshots that still bring the older ones do not bring them back.
        let set_anew = EndpointOauth { refresh_token: Some("fresh".into()), ..s.clone() };
        tokens.bearer(&ep, &set_anew, with("fresh", r#"{"access_token":"t4","expires_in":0}"#)).await.unwrap();
        tokens.bearer(&ep, &s, with("fresh", r#"{"access_token":"t5","expires_in":0}"#)).await.unwrap();
        tokens.bearer(&ep, &caught_up, with("fresh", r#"{"access_token":"t6"}"#)).await.unwrap();
    }
}
