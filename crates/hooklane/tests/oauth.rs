//! Endpoint OAuth (Svix's `…/endpoint/{id}/oauth`): the real binary asks a real
//! authorization server on loopback for access tokens and sends them to a real receiver.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// One token request as the authorization server saw it.
#[derive(Clone, Debug)]
struct Asked {
    authorization: String,
    form: HashMap<String, String>,
}

type Answer = Box<dyn Fn(usize, &Asked) -> (u16, Value) + Send + Sync>;

struct AuthState {
    asked: Mutex<Vec<Asked>>,
    answer: Answer,
}

/// An OAuth authorization server on 127.0.0.1 that answers token requests by script.
struct AuthServer {
    url: String,
    state: Arc<AuthState>,
}

impl AuthServer {
    async fn start(answer: impl Fn(usize, &Asked) -> (u16, Value) + Send + Sync + 'static) -> AuthServer {
        let state = Arc::new(AuthState { asked: Mutex::new(Vec::new()), answer: Box::new(answer) });
        let app = axum::Router::new().route("/token", axum::routing::post(token)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AuthServer { url: format!("http://{addr}/token"), state }
    }

    fn asked(&self) -> Vec<Asked> {
        self.state.asked.lock().unwrap().clone()
    }
}

async fn token(
    State(s): State<Arc<AuthState>>,
    headers: HeaderMap,
    // (Refuses any other content type than a form's.)
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    let asked = Asked {
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
        form,
    };
    let (status, answer) = {
        let mut log = s.asked.lock().unwrap();
        let n = log.len();
        let answer = (s.answer)(n, &asked);
        log.push(asked);
        answer
    };
    (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(answer))
}

fn bearer(token: &str) -> (u16, Value) {
    (200, json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))
}

/// A receiver that takes only `Authorization: Bearer <wanted>` and answers 401 otherwise.
fn accepting(wanted: &'static str) -> impl Fn(usize, &Received) -> Reply + Send + Sync + 'static {
    move |_, r| {
        if r.header("authorization") == format!("Bearer {wanted}") {
            Reply::Status(200)
        } else {
            Reply::Status(401)
        }
    }
}

async fn endpoint_to(server: &Server, receiver: &Receiver) -> (String, String) {
    let app = server.create_app("oauth").await;
    let (ep, _) = server.create_endpoint(&app, json!({"url": receiver.url})).await;
    (app, ep)
}

/// The message's attempts (newest first), once `done` says they are all there: the receiver
/// has a request before its answer is read and the attempt committed, so a read right after
/// it arrived may not show it yet.
async fn attempts_when(server: &Server, app: &str, msg: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let path = format!("/api/v1/app/{app}/attempt/msg/{msg}/");
    let body =
        server.wait_until(&path, Duration::from_secs(10), |b| b["data"].as_array().is_some_and(|d| done(d))).await;
    body["data"].as_array().expect("attempts").clone()
}

/// Whether the attempts hold one the receiver answered 200: the tests wait for the attempt
/// of the request they saw arrive.
fn delivered(attempts: &[Value]) -> bool {
    attempts.iter().any(|a| a["responseStatusCode"] == 200)
}

#[tokio::test]
async fn client_credentials_tokens_are_asked_once_sent_and_renewed_after_a_401() {
    let server = Server::start("[delivery]\nretry_schedule = [\"100ms\", \"100ms\"]").await;
    let auth = AuthServer::start(|n, asked| {
        // Client authentication as RFC 6749 2.3.1 writes it, decoded here independently.
        let basic = asked.authorization.strip_prefix("Basic ").map(|b| B64.decode(b).unwrap_or_default());
        if basic.as_deref() != Some(b"client+one:s%3Ccret".as_slice()) {
            return (401, json!({"error": "invalid_client"}));
        }
        bearer(&format!("tok-{}", n + 1))
    })
    .await;
    let receiver = Receiver::scripted(accepting("tok-1")).await;
    let (app, ep) = endpoint_to(&server, &receiver).await;
    let settings = json!({
        "tokenUrl": auth.url,
        "clientId": "client one",
        "clientSecret": "s<cret",
        "authMethod": "clientSecretBasic",
        "grantType": "clientCredentials",
        "scopes": ["webhooks:write", "events"],
        "extraParams": {"audience": "https://api.example.com"},
        "refreshToken": null,
        "jwtParams": null,
    });
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/oauth");
    let (status, body) = server.call("PUT", &path, Some(settings)).await;
    assert_eq!(status, 204, "{body}");
    let (status, shown) = server.call("GET", &path, None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["clientId"], "client one");
    assert_eq!(shown["authMethod"], "clientSecretBasic");
    assert_eq!(shown["scopes"], json!(["webhooks:write", "events"]));
    assert!(!shown.to_string().contains("s<cret"), "the secret is never shown: {shown}");

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(server.send_message(&app, "user.created", json!({"i": i})).await);
    }
    let (got, _) = receiver.wait_for_ids(&sent, Duration::from_secs(10)).await;
    assert_eq!(got, 5, "every message delivered at the first attempt");
    assert!(receiver.received().iter().all(|r| r.header("authorization") == "Bearer tok-1"));
    let asked = auth.asked();
    assert_eq!(asked.len(), 1, "one token for all of them: {asked:?}");
    assert_eq!(asked[0].form["grant_type"], "client_credentials");
    assert_eq!(asked[0].form["scope"], "webhooks:write events");
    assert_eq!(asked[0].form["audience"], "https://api.example.com");
    assert!(!asked[0].form.contains_key("client_secret"), "basic sends no secret in the form");

    // The attempt log never holds the token.
    let logged = attempts_when(&server, &app, &sent[0], delivered).await;
    assert_eq!(logged[0]["requestHeaders"]["authorization"], "Bearer [redacted]", "{logged:?}");

    // The receiver stops taking the old token: the attempt that gets 401 makes the next
    // one ask for a new token.
    receiver.set_script(accepting("tok-2"));
    let msg = server.send_message(&app, "user.created", json!({"i": "renewed"})).await;
    receiver.wait_for_ids(std::slice::from_ref(&msg), Duration::from_secs(10)).await;
    let by_status = |a: &Value| a["responseStatusCode"].as_i64().unwrap_or(-1);
    let done = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}/"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| d.iter().any(|a| by_status(a) == 200))
        })
        .await;
    let statuses: Vec<i64> = done["data"].as_array().unwrap().iter().map(by_status).collect();
    assert!(statuses.contains(&401) && statuses.contains(&200), "{statuses:?}");
    assert_eq!(auth.asked().len(), 2);

    let metrics = server.metrics().await;
    assert!(metrics.contains("hooklane_oauth_token_requests_total{outcome=\"success\"} 2"), "{metrics}");
    let logs = server.logs();
    for secret in ["s<cret", "tok-1", "tok-2"] {
        assert!(!logs.contains(secret), "{secret} in the log");
    }

    // Without the settings, requests carry no token.
    let (status, _) = server.call("DELETE", &path, None).await;
    assert_eq!(status, 204);
    let (status, _) = server.call("GET", &path, None).await;
    assert_eq!(status, 404);
    receiver.set_script(|_, _| Reply::Status(200));
    let plain = server.send_message(&app, "user.created", json!({"i": "plain"})).await;
    receiver.wait_for_ids(std::slice::from_ref(&plain), Duration::from_secs(10)).await;
    let last = receiver.received().into_iter().rev().find(|r| r.header("webhook-id") == plain).unwrap();
    assert_eq!(last.header("authorization"), "");
}

#[tokio::test]
async fn a_token_refused_fails_the_attempt_with_the_reason_and_is_retried() {
    let retries = vec!["200ms"; 20];
    let server = Server::start(&format!("[delivery]\nretry_schedule = {retries:?}")).await;
    let refusing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let refuses = refusing.clone();
    let auth = AuthServer::start(move |_, _| {
        if refuses.load(std::sync::atomic::Ordering::SeqCst) {
            (400, json!({"error": "invalid_client", "error_description": "unknown client", "trace": "internal"}))
        } else {
            bearer("good")
        }
    })
    .await;
    let receiver = Receiver::scripted(accepting("good")).await;
    let (app, ep) = endpoint_to(&server, &receiver).await;
    let settings =
        json!({"tokenUrl": auth.url, "clientId": "c", "clientSecret": "s", "authMethod": "clientSecretPost"});
    let (status, body) = server.call("PUT", &format!("/api/v1/app/{app}/endpoint/{ep}/oauth"), Some(settings)).await;
    assert_eq!(status, 204, "{body}");
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(server.send_message(&app, "user.created", json!({"i": i})).await);
    }
    // Every message fails at least twice, while the server refuses.
    for msg in &sent {
        server
            .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}/"), Duration::from_secs(20), |b| {
                b["data"].as_array().is_some_and(|d| d.len() >= 2)
            })
            .await;
    }
    refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    let asked_while_refusing = auth.asked().len();
    receiver.wait_for_ids(&sent, Duration::from_secs(20)).await;
    let mut failed = 0;
    for msg in &sent {
        let logged = attempts_when(&server, &app, msg, delivered).await;
        assert_eq!(logged[0]["responseStatusCode"], 200, "delivered at last: {logged:?}");
        for attempt in &logged[1..] {
            assert_eq!(
                attempt["response"],
                "no OAuth access token: the token endpoint answered 400: invalid_client (unknown client)",
                "the server's error and description, not the rest of its answer"
            );
            failed += 1;
        }
    }
    // A failure answers for a second and attempts wait for the one request in progress:
    // far fewer token requests than failed attempts.
    assert!(
        failed >= 10 && asked_while_refusing * 2 <= failed,
        "{asked_while_refusing} token requests for {failed} failed attempts"
    );
    let asked = auth.asked();
    assert_eq!((asked[0].form["client_id"].as_str(), asked[0].form["client_secret"].as_str()), ("c", "s"));
    assert_eq!(asked[0].authorization, "", "post sends no basic header");
    assert!(receiver.received().iter().all(|r| r.header("authorization") == "Bearer good"), "nothing sent untokened");
}

#[tokio::test]
async fn a_jwt_assertion_authenticates_the_client() {
    let server = Server::start("").await;
    let key = b"a shared secret of thirty-two by".to_vec();
    let auth_key = key.clone();
    let token_url = Arc::new(Mutex::new(String::new()));
    let audience = token_url.clone();
    let auth = AuthServer::start(move |_, asked| {
        // RFC 7523: checked here with hmac directly, not with hooklane's code.
        let assertion = &asked.form["client_assertion"];
        let (signed, signature) = assertion.rsplit_once('.').expect("three parts");
        let mut mac = Hmac::<Sha256>::new_from_slice(&auth_key).unwrap();
        mac.update(signed.as_bytes());
        if mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap_or_default()).is_err() {
            return (401, json!({"error": "invalid_client"}));
        }
        let (header, claims) = signed.split_once('.').unwrap();
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["kid"], "key-1");
        assert_eq!(claims["iss"], "jwt-client");
        assert_eq!(claims["sub"], "jwt-client");
        assert_eq!(claims["aud"], *audience.lock().unwrap(), "the token URL");
        let now = chrono::Utc::now().timestamp();
        let exp = claims["exp"].as_i64().unwrap();
        assert!(exp > now && exp <= now + 61, "{claims}");
        assert_eq!(asked.form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        bearer("jwt-token")
    })
    .await;
    *token_url.lock().unwrap() = auth.url.clone();
    let receiver = Receiver::scripted(accepting("jwt-token")).await;
    let (app, ep) = endpoint_to(&server, &receiver).await;
    let settings = json!({
        "tokenUrl": auth.url,
        "clientId": "jwt-client",
        "authMethod": "clientSecretJwt",
        "jwtParams": {"secretBase64": B64.encode(&key), "secretId": "key-1", "signingAlgorithm": "HS256", "tokenExpirySecs": 60},
    });
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/oauth");
    let (status, body) = server.call("PUT", &path, Some(settings)).await;
    assert_eq!(status, 204, "{body}");
    let (_, shown) = server.call("GET", &path, None).await;
    assert_eq!(shown["jwtParams"], json!({"secretId": "key-1", "signingAlgorithm": "HS256", "tokenExpirySecs": 60}));
    let msg = server.send_message(&app, "user.created", json!({})).await;
    receiver.wait_for_ids(std::slice::from_ref(&msg), Duration::from_secs(10)).await;
    let logged = attempts_when(&server, &app, &msg, delivered).await;
    assert_eq!(logged.len(), 1, "accepted at once: {logged:?}");
    assert_eq!(logged[0]["responseStatusCode"], 200);
    assert_eq!(auth.asked()[0].form["client_id"], "jwt-client");
}

/// The server rotates refresh tokens and honours only the newest: hooklane saves each one,
/// so that after a crash it still holds the one that works.
#[tokio::test]
async fn a_rotated_refresh_token_is_saved_and_survives_a_crash() {
    let mut server = Server::start("").await;
    let current = Arc::new(Mutex::new("r0".to_string()));
    let held = current.clone();
    let auth = AuthServer::start(move |n, asked| {
        let mut current = held.lock().unwrap();
        if asked.form.get("grant_type").map(String::as_str) != Some("refresh_token")
            || asked.form.get("refresh_token") != Some(&*current)
        {
            return (400, json!({"error": "invalid_grant"}));
        }
        *current = format!("r{}", n + 1);
        // Tokens that expire at once: every delivery asks again.
        (200, json!({"access_token": format!("tok-{n}"), "expires_in": 0, "refresh_token": *current}))
    })
    .await;
    let receiver = Receiver::start().await;
    let (app, ep) = endpoint_to(&server, &receiver).await;
    let settings = json!({
        "tokenUrl": auth.url,
        "clientId": "c",
        "clientSecret": "s",
        "grantType": "refreshToken",
        "refreshToken": "r0",
    });
    let (status, body) = server.call("PUT", &format!("/api/v1/app/{app}/endpoint/{ep}/oauth"), Some(settings)).await;
    assert_eq!(status, 204, "{body}");
    for i in 0..3 {
        let msg = server.send_message(&app, "user.created", json!({"i": i})).await;
        receiver.wait_for_ids(std::slice::from_ref(&msg), Duration::from_secs(10)).await;
        // And its attempt logged: one the crash below cut short before that would be sent
        // again after the restart, asking for one more token.
        attempts_when(&server, &app, &msg, delivered).await;
    }
    assert_eq!(auth.asked().len(), 3);
    // Each rotation was saved before its token was used: a crash now loses none.
    server.restart_after_kill();
    let msg = server.send_message(&app, "user.created", json!({"after": "crash"})).await;
    receiver.wait_for_ids(std::slice::from_ref(&msg), Duration::from_secs(10)).await;
    let asked = auth.asked();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert_eq!(asked[3].form["refresh_token"], "r3", "the newest refresh token, from the store");
    let logged = attempts_when(&server, &app, &msg, delivered).await;
    assert_eq!(logged.len(), 1, "accepted at once: {logged:?}");
    assert!(!server.logs().contains("r3"));
}

#[tokio::test]
async fn settings_are_checked_and_token_urls_obey_the_address_policy() {
    let server = Server::start("[delivery]\nallow_networks = [\"127.0.0.1/32\"]\nretry_schedule = []").await;
    let receiver = Receiver::start().await;
    let (app, ep) = endpoint_to(&server, &receiver).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/oauth");
    let (status, body) = server.call("GET", &path, None).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let refused = [
        (json!({"tokenUrl": "https://a.example/t", "clientId": "c"}), "clientSecret"),
        (json!({"tokenUrl": "ftp://a.example/t", "clientId": "c", "clientSecret": "s"}), "tokenUrl"),
        (json!({"tokenUrl": "https://a.example/t", "clientId": "", "clientSecret": "s"}), "clientId"),
        (json!({"tokenUrl": "https://a.example/t", "clientId": "c", "authMethod": "clientSecretJwt"}), "jwtParams"),
        (
            json!({"tokenUrl": "https://a.example/t", "clientId": "c", "authMethod": "clientSecretJwt",
                "jwtParams": {"secretBase64": "not base64!"}}),
            "jwtParams.secretBase64",
        ),
        (
            json!({"tokenUrl": "https://a.example/t", "clientId": "c", "clientSecret": "s", "grantType": "refreshToken"}),
            "refreshToken",
        ),
        (json!({"tokenUrl": "https://a.example/t", "clientId": "c", "clientSecret": "s", "scopes": ["a b"]}), "scopes"),
        (
            json!({"tokenUrl": "https://a.example/t", "clientId": "c", "clientSecret": "s",
                "extraParams": {"grant_type": "password"}}),
            "extraParams",
        ),
        (json!({"tokenUrl": "https://u:p@a.example/t", "clientId": "c", "clientSecret": "s"}), "tokenUrl"),
        (
            json!({"tokenUrl": "https://a.example/t", "clientId": "c", "authMethod": "clientSecretJwt",
                "jwtParams": {"secretBase64": "c2VjcmV0", "signingAlgorithm": "RS256"}}),
            "jwtParams.signingAlgorithm",
        ),
    ];
    for (settings, field) in refused {
        let (status, body) = server.call("PUT", &path, Some(settings.clone())).await;
        assert_eq!(status, 422, "{settings}: {body}");
        assert_eq!(body["code"], "validation");
        assert!(body.to_string().contains(field), "{settings} names {field}: {body}");
    }
    let (status, body) =
        server.call("PUT", &path, Some(json!({"tokenUrl": "https://a.example/t", "clientId": "c", "bogus": 1}))).await;
    assert_eq!(status, 422, "unknown fields are refused: {body}");

    // 127.0.0.2 is loopback but not allowed here (only 127.0.0.1 is): no token request
    // is made, and the attempt says why.
    let (status, body) = server
        .call("PUT", &path, Some(json!({"tokenUrl": "http://127.0.0.2:9/token", "clientId": "c", "clientSecret": "s"})))
        .await;
    assert_eq!(status, 204, "{body}");
    let msg = server.send_message(&app, "user.created", json!({})).await;
    let done = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}/"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let why = done["data"][0]["response"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("no OAuth access token") && why.contains("127.0.0.2 is not allowed"), "{why}");
    assert!(receiver.received().is_empty(), "nothing sent without its token");

    // Svix's SDKs send every optional field, unset ones as null.
    let (status, body) = server
        .call(
            "PUT",
            &path,
            Some(json!({"tokenUrl": "http://127.0.0.2:9/token", "clientId": "c", "clientSecret": "s",
                "authMethod": "clientSecretBasic", "grantType": "clientCredentials", "scopes": null,
                "extraParams": null, "refreshToken": null, "jwtParams": null})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    // Another path of the same origin keeps the settings; another origin drops them.
    let endpoint = format!("/api/v1/app/{app}/endpoint/{ep}");
    let (status, _) =
        server.call("PATCH", &endpoint, Some(json!({"url": format!("{}/elsewhere", receiver.url)}))).await;
    assert_eq!(status, 200);
    assert_eq!(server.call("GET", &path, None).await.0, 200, "same origin: kept");
    let moved = Receiver::start().await;
    let (status, _) = server.call("PATCH", &endpoint, Some(json!({"url": moved.url}))).await;
    assert_eq!(status, 200);
    assert_eq!(server.call("GET", &path, None).await.0, 404, "another origin: dropped");

    // An inbound source's destination too (its application goes by the source's id).
    let spec = json!({"name": "s", "verification": {"type": "none"}, "destinations": [{"url": receiver.url}]});
    let (status, src) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!(status, 201, "{src}");
    let (src_id, dest) = (src["id"].as_str().unwrap().to_string(), src["destinations"][0]["id"].clone());
    let dest_oauth = format!("/api/v1/app/{src_id}/endpoint/{}/oauth", dest.as_str().unwrap());
    let settings = json!({"tokenUrl": "https://a.example/t", "clientId": "c", "clientSecret": "s"});
    let (status, body) = server.call("PUT", &dest_oauth, Some(settings)).await;
    assert_eq!(status, 204, "{body}");
    let patch = json!({"destinations": [{"id": dest, "url": moved.url}]});
    let (status, body) = server.call("PATCH", &format!("/api/v1/source/{src_id}"), Some(patch)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.call("GET", &dest_oauth, None).await.0, 404, "a moved destination's settings dropped");
}

/// A transformation may send the request elsewhere, but the access token goes only to the
/// endpoint's own origin.
#[tokio::test]
async fn a_transformation_sending_elsewhere_sends_no_token() {
    let server = Server::start("").await;
    let auth = AuthServer::start(|_, _| bearer("tok")).await;
    let (own, elsewhere) = (Receiver::start().await, Receiver::start().await);
    let (app, ep) = endpoint_to(&server, &own).await;
    let settings = json!({"tokenUrl": auth.url, "clientId": "c", "clientSecret": "s"});
    let (status, _) = server.call("PUT", &format!("/api/v1/app/{app}/endpoint/{ep}/oauth"), Some(settings)).await;
    assert_eq!(status, 204);
    let code = format!(
        "function handler(webhook) {{ if (webhook.payload.away) {{ webhook.url = '{}'; }} return webhook; }}",
        elsewhere.url
    );
    let (status, body) = server
        .call(
            "PATCH",
            &format!("/api/v1/app/{app}/endpoint/{ep}/transformation"),
            Some(json!({"code": code, "enabled": true})),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let home = server.send_message(&app, "user.created", json!({"away": false})).await;
    let away = server.send_message(&app, "user.created", json!({"away": true})).await;
    own.wait_for_ids(std::slice::from_ref(&home), Duration::from_secs(10)).await;
    elsewhere.wait_for_ids(std::slice::from_ref(&away), Duration::from_secs(10)).await;
    assert_eq!(own.received()[0].header("authorization"), "Bearer tok");
    assert_eq!(elsewhere.received()[0].header("authorization"), "", "no token for another origin");
}

/// An authorization server echoing what it got in its `error_description` (the Basic
/// credentials, the secret itself) puts nothing of them in the attempt log, which tokens
/// that may not see the client secret read.
#[tokio::test]
async fn an_echoed_client_secret_is_kept_out_of_the_attempt_log() {
    let server = Server::start("[delivery]\nretry_schedule = []").await;
    let auth = AuthServer::start(|_, asked| {
        let said = format!("bad client {} or {}", asked.authorization, "client-secret-XYZ-987654");
        (401, json!({"error": "invalid_client", "error_description": said}))
    })
    .await;
    let receiver = Receiver::start().await;
    let (app, ep) = endpoint_to(&server, &receiver).await;
    let settings = json!({"tokenUrl": auth.url, "clientId": "cid", "clientSecret": "client-secret-XYZ-987654"});
    let (status, body) = server.call("PUT", &format!("/api/v1/app/{app}/endpoint/{ep}/oauth"), Some(settings)).await;
    assert_eq!(status, 204, "{body}");
    let msg = server.send_message(&app, "user.created", json!({})).await;
    let logged = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}/"), Duration::from_secs(20), |b| {
            b["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let response = logged["data"][0]["response"].as_str().unwrap_or_default().to_string();
    let basic = B64.encode("cid:client-secret-XYZ-987654");
    assert!(response.contains("invalid_client") && response.contains("[redacted]"), "{response}");
    assert!(!response.contains("XYZ-987654") && !response.contains(&basic), "{response}");
}
