//! Access tokens of endpoints with OAuth settings ([`EndpointOauth`]): asked of the
//! receiver's authorization server when an attempt needs one, kept until shortly before
//! they expire, and asked for by one attempt at a time per endpoint (the others wait for
//! its answer, so a burst of deliveries makes one token request, not hundreds).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hooklane_core::oauth::{read_token_answer, EndpointOauth, GrantType, TokenRequest};

/// How long a token is used when its server does not say how long it lasts.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// How much earlier than its expiry a token is replaced: at most this, at least a tenth of
/// its lifetime (so a request does not arrive with a token that expired on the way).
const EARLY: Duration = Duration::from_secs(60);
/// How long a failed token request answers for the attempts that waited on it, and for
/// those that come right after: a server that is down is not asked once per delivery.
const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// Rotated refresh tokens remembered per endpoint, to tell the settings an attempt brings
/// (read from the store, perhaps before the newest rotation reached it) from new ones an
/// operator set.
const ROTATIONS_KEPT: usize = 4;

/// A token to send, and the settings to save when getting it rotated the refresh token.
pub struct Bearer {
    pub token: Arc<str>,
    /// `(as they were stored, with the new refresh token)`: to be saved by the caller.
    pub rotated: Option<(EndpointOauth, EndpointOauth)>,
}

#[derive(Default)]
pub struct Tokens {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

struct Entry {
    /// The settings the entry was made for, with the refresh token as first stored.
    settings: EndpointOauth,
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    token: Option<(Arc<str>, Instant)>,
    failed: Option<(String, Instant)>,
    /// The settings as last saved (a rotated refresh token is saved in them).
    stored: Option<EndpointOauth>,
    /// Refresh tokens this node rotated to, newest last.
    rotations: VecDeque<String>,
}

impl Tokens {
    /// The token for `endpoint_id` with `settings`, asked for with `fetch` (which POSTs a
    /// token request and answers its status and body) when none is held or it expires soon.
    pub async fn bearer<F, Fut>(&self, endpoint_id: &str, settings: &EndpointOauth, fetch: F) -> Result<Bearer, String>
    where
        F: FnOnce(TokenRequest) -> Fut,
        Fut: Future<Output = Result<(u16, Vec<u8>), String>>,
    {
        let entry = self.entry(endpoint_id, settings).await;
        let mut slot = entry.slot.lock().await;
        let now = Instant::now();
        if let Some((token, good_until)) = &slot.token {
            if now < *good_until {
                return Ok(Bearer { token: token.clone(), rotated: None });
            }
        }
        if let Some((why, until)) = &slot.failed {
            if now < *until {
                return Err(why.clone());
            }
        }
        let stored = slot.stored.clone().unwrap_or_else(|| entry.settings.clone());
        let refresh = slot.rotations.back().cloned();
        let jti = hooklane_core::ids::new_id("jti");
        let request = stored.token_request(refresh.as_deref(), hooklane_core::Utc::now().timestamp(), &jti);
        let answer = fetch(request).await.and_then(|(status, body)| read_token_answer(status, &body));
        let issued = match answer {
            Ok(issued) => issued,
            Err(why) => {
                slot.token = None;
                slot.failed = Some((why.clone(), Instant::now() + FAILURE_HOLD));
                return Err(why);
            }
        };
        slot.failed = None;
        let lifetime = issued.expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let good_until = Instant::now() + lifetime.saturating_sub(EARLY.min(lifetime / 10));
        let token: Arc<str> = issued.access_token.into();
        slot.token = Some((token.clone(), good_until));
        let rotated = match (stored.grant_type, issued.refresh_token) {
            (GrantType::RefreshToken, Some(new)) if Some(&new) != stored.refresh_token.as_ref() => {
                if slot.rotations.len() == ROTATIONS_KEPT {
                    slot.rotations.pop_front();
                }
                slot.rotations.push_back(new.clone());
                let saved = EndpointOauth { refresh_token: Some(new), ..stored.clone() };
                slot.stored = Some(saved.clone());
                Some((stored, saved))
            }
            _ => None,
        };
        Ok(Bearer { token, rotated })
    }

    /// The receiver refused `token` (401): the next attempt asks for a new one.
    pub async fn forget(&self, endpoint_id: &str, token: &str) {
        let entry = self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(endpoint_id).cloned();
        if let Some(entry) = entry {
            let mut slot = entry.slot.lock().await;
            if slot.token.as_ref().is_some_and(|(held, _)| &**held == token) {
                slot.token = None;
            }
        }
    }

    /// The endpoint's entry, made afresh when its settings changed: other than by a refresh
    /// token this node rotated to (which the store may or may not have caught up with).
    async fn entry(&self, endpoint_id: &str, settings: &EndpointOauth) -> Arc<Entry> {
        let held = self.entries.lock().unwrap_or_else(|p| p.into_inner()).get(endpoint_id).cloned();
        if let Some(entry) = held {
            if entry.settings == *settings {
                return entry;
            }
            let same_but_refresh = EndpointOauth { refresh_token: None, ..entry.settings.clone() }
                == EndpointOauth { refresh_token: None, ..settings.clone() };
            if same_but_refresh {
                let slot = entry.slot.lock().await;
                if settings.refresh_token.as_ref().is_some_and(|r| slot.rotations.contains(r)) {
                    drop(slot);
                    return entry;
                }
            }
        }
        let fresh = Arc::new(Entry { settings: settings.clone(), slot: Default::default() });
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).insert(endpoint_id.to_string(), fresh.clone());
        fresh
    }
}

#[cfg(test)]
mod tests {
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
        }
    }

    fn answer(body: &str) -> impl Future<Output = Result<(u16, Vec<u8>), String>> {
        std::future::ready(Ok((200, body.as_bytes().to_vec())))
    }

    #[tokio::test]
    async fn concurrent_attempts_share_one_token_request() {
        let tokens = Arc::new(Tokens::default());
        let asked = Arc::new(AtomicUsize::new(0));
        let s = settings(GrantType::ClientCredentials);
        let mut all = Vec::new();
        for _ in 0..20 {
            let (tokens, asked, s) = (tokens.clone(), asked.clone(), s.clone());
            all.push(tokio::spawn(async move {
                tokens
                    .bearer("ep_1", &s, |_| async move {
                        asked.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok((200, br#"{"access_token":"t1","expires_in":3600}"#.to_vec()))
                    })
                    .await
                    .map(|b| b.token.to_string())
            }));
        }
        for task in all {
            assert_eq!(task.await.unwrap().unwrap(), "t1");
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // A refused token is asked for again; a changed setting makes a new entry.
        tokens.forget("ep_1", "t1").await;
        let again = tokens.bearer("ep_1", &s, |_| answer(r#"{"access_token":"t2"}"#)).await.unwrap();
        assert_eq!(&*again.token, "t2");
        let changed = EndpointOauth { client_id: "d".into(), ..s };
        let new = tokens.bearer("ep_1", &changed, |_| answer(r#"{"access_token":"t3"}"#)).await.unwrap();
        assert_eq!(&*new.token, "t3");
    }

    #[tokio::test]
    async fn a_failure_is_held_briefly_and_short_tokens_are_renewed() {
        let tokens = Tokens::default();
        let s = settings(GrantType::ClientCredentials);
        let refused = tokens
            .bearer("ep_1", &s, |_| std::future::ready(Ok((401, br#"{"error":"invalid_client"}"#.to_vec()))))
            .await;
        assert_eq!(refused.err().as_deref(), Some("the token endpoint answered 401: invalid_client"));
        let held = tokens.bearer("ep_1", &s, |_| answer(r#"{"access_token":"t1"}"#)).await;
        assert_eq!(
            held.err().as_deref(),
            Some("the token endpoint answered 401: invalid_client"),
            "not asked again at once"
        );
        // A token that lasts no time is asked for again at once.
        let other = tokens.bearer("ep_2", &s, |_| answer(r#"{"access_token":"t1","expires_in":0}"#)).await.unwrap();
        assert_eq!(&*other.token, "t1");
        let renewed =
            tokens.bearer("ep_2", &s, |_| answer(r#"{"access_token":"t2","expires_in":3600}"#)).await.unwrap();
        assert_eq!(&*renewed.token, "t2");
    }

    #[tokio::test]
    async fn a_rotated_refresh_token_is_used_next_and_handed_back_to_save() {
        let tokens = Tokens::default();
        let s = settings(GrantType::RefreshToken);
        let first = tokens
            .bearer("ep_1", &s, |req| {
                assert!(req.form.contains("refresh_token=r0"), "{}", req.form);
                answer(r#"{"access_token":"t1","expires_in":0,"refresh_token":"r1"}"#)
            })
            .await
            .unwrap();
        let (was, now) = first.rotated.expect("rotated");
        assert_eq!((was.refresh_token.as_deref(), now.refresh_token.as_deref()), (Some("r0"), Some("r1")));
        // The store has not caught up (the attempt brings r0): the newest, r1, is used.
        let second = tokens
            .bearer("ep_1", &s, |req| {
                assert!(req.form.contains("refresh_token=r1"), "{}", req.form);
                answer(r#"{"access_token":"t2","expires_in":0,"refresh_token":"r2"}"#)
            })
            .await
            .unwrap();
        let (was, now) = second.rotated.expect("rotated again");
        assert_eq!((was.refresh_token.as_deref(), now.refresh_token.as_deref()), (Some("r1"), Some("r2")));
        // It has (the attempt brings r1): still this node's newest.
        let caught_up = EndpointOauth { refresh_token: Some("r1".into()), ..s.clone() };
        tokens
            .bearer("ep_1", &caught_up, |req| {
                assert!(req.form.contains("refresh_token=r2"), "{}", req.form);
                answer(r#"{"access_token":"t3","expires_in":3600}"#)
            })
            .await
            .unwrap();
        // An operator's new refresh token starts afresh.
        let set_anew = EndpointOauth { refresh_token: Some("fresh".into()), ..s };
        tokens
            .bearer("ep_1", &set_anew, |req| {
                assert!(req.form.contains("refresh_token=fresh"), "{}", req.form);
                answer(r#"{"access_token":"t4"}"#)
            })
            .await
            .unwrap();
    }
}
