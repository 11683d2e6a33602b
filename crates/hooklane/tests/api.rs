//! Integration tests of the HTTP API (`/api/v1`), run against the real binary: resource
//! CRUD, validation, idempotency, authentication, tenant isolation and error handling.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

// --- helpers

/// A response read as text, with its headers, for checks `Server::call` cannot make
/// (byte-exact bodies, response headers).
struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii header"))
    }
}

/// A request builder with the given token (or none).
fn request(server: &Server, token: Option<&str>, method: &str, path: &str) -> reqwest::RequestBuilder {
    let rb = server.client.request(method.parse().expect("method"), server.url(path));
    match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    }
}

async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let resp = rb.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Resp { status, headers, text }
}

/// POSTs `body` exactly as given, as JSON, with the admin token.
async fn post_text(server: &Server, path: &str, body: &str) -> Resp {
    send(request(server, Some(ADMIN), "POST", path).header("content-type", "application/json").body(body.to_string()))
        .await
}

/// Asserts an error answer: the status, and a body `{"code": <code>, "detail": …}`.
#[track_caller]
fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "unexpected status; body {body}");
    assert!(body["code"].is_string(), "error body without a string code: {body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(body.get("detail").is_some(), "error body without detail: {body}");
}

/// Asserts a 422 whose detail names `field` in the body, in Svix's shape.
#[track_caller]
fn assert_invalid(status: u16, body: &Value, field: &str) {
    assert_error(status, body, 422, "validation");
    let detail = body["detail"].as_array().unwrap_or_else(|| panic!("detail is not a list: {body}"));
    assert_eq!(detail.len(), 1, "{body}");
    assert_eq!(detail[0]["loc"], json!(["body", field]), "{body}");
    assert!(detail[0]["msg"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(detail[0]["type"], "value_error", "{body}");
}

fn ids(list: &Value) -> Vec<String> {
    list["data"].as_array().unwrap_or_else(|| panic!("not a list: {list}")).iter().map(id_of).collect()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn secret_of(byte: u8, len: usize) -> String {
    format!("whsec_{}", B64.encode(vec![byte; len]))
}

async fn create_app_with(server: &Server, body: Value) -> Value {
    let (status, out) = server.call("POST", "/api/v1/app", Some(body)).await;
    assert_eq!(status, 201, "{out}");
    out
}

async fn list_all(server: &Server, path: &str) -> Value {
    let (status, out) = server.call("GET", path, None).await;
    assert_eq!(status, 200, "{out}");
    out
}

fn parse_time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("bad time {v}: {e}"))
        .to_utc()
}

// --- 1. applications

/// Uids are one namespace for the whole server, by which the admin's requests find
/// applications: an application's own token cannot take or drop one (it would have the
/// admin's `PUT /app/{uid}`, or the operational application, find its application).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_changes_an_applications_uid() {
    let server = Server::start("operational_app = \"ops-events\"").await;
    let (status, app) = server.call("POST", "/api/v1/app", Some(json!({"name": "Mine", "uid": "mine"}))).await;
    assert_eq!(status, 201, "{app}");
    let id = app["id"].as_str().expect("id").to_string();
    let token = server.app_token(&id).await;
    let path = format!("/api/v1/app/{id}");
    for (method, body) in [
        ("PATCH", json!({"uid": "ops-events"})),
        ("PATCH", json!({"uid": null})),
        ("PUT", json!({"name": "Mine", "uid": "customer-43"})),
    ] {
        let (status, out) = server.call_as(&token, method, &path, Some(body.clone())).await;
        assert_eq!((status, &out["code"]), (403, &json!("forbidden")), "{method} {body}: {out}");
    }
    // What it may change it still does; a PUT without the uid keeps it.
    let (status, out) = server.call_as(&token, "PUT", &path, Some(json!({"name": "Renamed"}))).await;
    assert_eq!((status, &out["uid"], &out["name"]), (200, &json!("mine"), &json!("Renamed")), "{out}");
    let (status, out) = server.call_as(&token, "PATCH", &path, Some(json!({"uid": "mine", "name": "Again"}))).await;
    assert_eq!((status, &out["uid"]), (200, &json!("mine")), "{out}");
    // The admin may.
    let (status, out) = server.call("PATCH", &path, Some(json!({"uid": "renamed"}))).await;
    assert_eq!((status, &out["uid"]), (200, &json!("renamed")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_create_has_svix_shape() {
    let server = Server::start("").await;
    let before = chrono::Utc::now();
    let (status, app) = server
        .call(
            "POST",
            "/api/v1/app",
            Some(json!({"name": "Acme", "uid": "acme-1", "rateLimit": 10, "metadata": {"tier": "gold"}})),
        )
        .await;
    assert_eq!(status, 201, "{app}");
    assert_eq!(
        keys(&app),
        set(&["id", "uid", "name", "rateLimit", "throttleRate", "metadata", "createdAt", "updatedAt"])
    );
    assert_eq!(app["throttleRate"], 10, "Svix's name for it");
    let id = app["id"].as_str().unwrap();
    assert!(id.starts_with("app_") && id.len() == 30, "{id}");
    assert_eq!(app["name"], "Acme");
    assert_eq!(app["uid"], "acme-1");
    assert_eq!(app["rateLimit"], 10);
    assert_eq!(app["metadata"], json!({"tier": "gold"}));
    let created = parse_time(&app["createdAt"]);
    assert!(created >= before - chrono::Duration::seconds(5) && created <= chrono::Utc::now());
    assert_eq!(app["createdAt"], app["updatedAt"]);

    // Optional fields default to null / {}.
    let (status, bare) = server.call("POST", "/api/v1/app/", Some(json!({"name": "Bare"}))).await;
    assert_eq!(status, 201, "{bare}");
    assert_eq!(bare["uid"], Value::Null);
    assert_eq!(bare["rateLimit"], Value::Null);
    assert_eq!(bare["metadata"], json!({}));
    assert_ne!(bare["id"], app["id"]);

    // An empty name is refused.
    let (status, body) = server.call("POST", "/api/v1/app", Some(json!({"name": "  "}))).await;
    assert_invalid(status, &body, "name");
    // NUL cannot be stored by PostgreSQL: refused on every store, in names and metadata.
    let (status, body) = server.call("POST", "/api/v1/app", Some(json!({"name": "a\u{0}b"}))).await;
    assert_invalid(status, &body, "name");
    let (status, body) =
        server.call("POST", "/api/v1/app", Some(json!({"name": "x", "metadata": {"k": "v\u{0}"}}))).await;
    assert_invalid(status, &body, "metadata");
    // Lengths count characters, not bytes: 256 three-byte characters make a valid name.
    let (status, wide) = server.call("POST", "/api/v1/app", Some(json!({"name": "名".repeat(256)}))).await;
    assert_eq!(status, 201, "{wide}");
    let (status, body) = server.call("POST", "/api/v1/app", Some(json!({"name": "名".repeat(257)}))).await;
    assert_invalid(status, &body, "name");
    // A uid that looks like an application id is refused.
    let (status, body) = server.call("POST", "/api/v1/app", Some(json!({"name": "x", "uid": id}))).await;
    assert_invalid(status, &body, "uid");
    // Nor may a session's id hold a NUL, when a token is issued for it or its tokens end.
    let (status, body) = server
        .call("POST", &format!("/api/v1/auth/app-portal-access/{id}"), Some(json!({"sessionId": "a\u{0}"})))
        .await;
    assert_invalid(status, &body, "sessionId");
    let path = format!("/api/v1/auth/app/{id}/expire-all");
    let (status, body) = server.call("POST", &path, Some(json!({"sessionIds": ["a\u{0}"]}))).await;
    assert_invalid(status, &body, "sessionIds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_get_by_id_and_uid_with_and_without_trailing_slash() {
    let server = Server::start("").await;
    let app = create_app_with(&server, json!({"name": "Getter", "uid": "getter"})).await;
    let id = id_of(&app);
    for path in [
        format!("/api/v1/app/{id}"),
        format!("/api/v1/app/{id}/"),
        "/api/v1/app/getter".to_string(),
        "/api/v1/app/getter/".to_string(),
    ] {
        let (status, got) = server.call("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {got}");
        assert_eq!(got, app, "{path}");
    }
    let (status, body) = server.call("GET", "/api/v1/app/no-such-app", None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.call("GET", "/api/v1/app/app_01ARZ3NDEKTSV4RRFFQ69G5FAV", None).await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_list_paginates_with_cursor_both_orders() {
    let server = Server::start("").await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(server.create_app(&format!("app-{i}")).await);
    }

    // Ascending (the default for applications), two at a time.
    let mut seen = Vec::new();
    let mut path = "/api/v1/app?limit=2".to_string();
    let mut pages = Vec::new();
    loop {
        let page = list_all(&server, &path).await;
        let page_ids = ids(&page);
        assert!(page_ids.len() <= 2, "{page}");
        pages.push((page_ids.len(), page["done"].as_bool().expect("done")));
        seen.extend(page_ids.clone());
        if page["done"] == true {
            break;
        }
        assert_eq!(page["iterator"], json!(page_ids.last().unwrap()), "{page}");
        path = format!("/api/v1/app/?limit=2&iterator={}", page["iterator"].as_str().unwrap());
        assert!(pages.len() < 10, "pagination does not end");
    }
    assert_eq!(pages, vec![(2, false), (2, false), (1, true)]);
    assert_eq!(seen, created);

    // Descending: newest first, same cursor mechanics.
    let first = list_all(&server, "/api/v1/app?limit=2&order=descending").await;
    assert_eq!(ids(&first), vec![created[4].clone(), created[3].clone()]);
    assert_eq!(first["done"], false);
    let it = first["iterator"].as_str().unwrap();
    let second = list_all(&server, &format!("/api/v1/app?limit=2&order=descending&iterator={it}")).await;
    assert_eq!(ids(&second), vec![created[2].clone(), created[1].clone()]);
    let it = second["iterator"].as_str().unwrap();
    let third = list_all(&server, &format!("/api/v1/app?limit=2&order=descending&iterator={it}")).await;
    assert_eq!(ids(&third), vec![created[0].clone()]);
    assert_eq!(third["done"], true);
    // Back again with each page's prevIterator (Svix's `-` and the first id): the page before.
    assert_eq!(third["prevIterator"], json!(format!("-{}", created[0])));
    let prev = third["prevIterator"].as_str().unwrap();
    let back = list_all(&server, &format!("/api/v1/app?limit=2&order=descending&iterator={prev}")).await;
    assert_eq!(ids(&back), ids(&second));
    assert_eq!(back["done"], false, "the first page lies before it");
    let prev = back["prevIterator"].as_str().unwrap();
    let back = list_all(&server, &format!("/api/v1/app?limit=2&order=descending&iterator={prev}")).await;
    assert_eq!((ids(&back), &back["done"]), (ids(&first), &json!(true)));
    let prev = first["prevIterator"].as_str().unwrap();
    let before_first = list_all(&server, &format!("/api/v1/app?limit=2&order=descending&iterator={prev}")).await;
    assert_eq!((ids(&before_first), &before_first["done"]), (vec![], &json!(true)));

    // Everything in one page.
    let all = list_all(&server, "/api/v1/app").await;
    assert_eq!(ids(&all), created);
    assert_eq!(all["done"], true);

    // Bad paging parameters are query validation errors.
    let (status, body) = server.call("GET", "/api/v1/app?limit=0", None).await;
    assert_error(status, &body, 422, "validation");
    assert_eq!(body["detail"][0]["loc"], json!(["query", "limit"]));
    let (status, body) = server.call("GET", "/api/v1/app?order=sideways", None).await;
    assert_error(status, &body, 422, "validation");
    assert_eq!(body["detail"][0]["loc"], json!(["query", "order"]));

    // Svix's options: applications without endpoints, or with disabled ones only, left out.
    let rx = Receiver::start().await;
    server.create_endpoint(&created[0], json!({"url": rx.url})).await;
    server.create_endpoint(&created[1], json!({"url": rx.url, "disabled": true})).await;
    let listed = |query: &'static str| {
        let server = &server;
        async move { ids(&list_all(server, &format!("/api/v1/app?limit=250&{query}")).await) }
    };
    assert_eq!(listed("exclude_apps_with_no_endpoints=true").await, created[..2].to_vec());
    let mut kept = created.clone();
    kept.remove(1);
    assert_eq!(listed("exclude_apps_with_disabled_endpoints=true").await, kept);
    assert_eq!(
        listed("exclude_apps_with_no_endpoints=true&exclude_apps_with_disabled_endpoints=true").await,
        created[..1].to_vec()
    );
    assert_eq!(listed("exclude_apps_with_svix_play_endpoints=true").await, created);
    let (status, body) = server.call("GET", "/api/v1/app?exclude_apps_with_no_endpoints=maybe", None).await;
    assert_error(status, &body, 422, "validation");
    // An application token's list (its own application) follows the options too.
    for (app, query, listed) in [
        (&created[2], "exclude_apps_with_no_endpoints=true", 0),
        (&created[2], "exclude_apps_with_disabled_endpoints=true", 1),
        (&created[1], "exclude_apps_with_disabled_endpoints=true", 0),
        (&created[0], "exclude_apps_with_no_endpoints=true&exclude_apps_with_disabled_endpoints=true", 1),
    ] {
        let token = server.app_token(app).await;
        let (status, page) = server.call_as(&token, "GET", &format!("/api/v1/app?{query}"), None).await;
        assert_eq!((status, ids(&page).len()), (200, listed), "{app} {query}: {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_put_updates_and_creates_unknown_uid() {
    let server = Server::start("").await;
    let app = create_app_with(&server, json!({"name": "Old", "uid": "old-uid", "metadata": {"a": "1"}})).await;
    let id = id_of(&app);

    let (status, put) = server
        .call("PUT", &format!("/api/v1/app/{id}"), Some(json!({"name": "New", "uid": "new-uid", "rateLimit": 5})))
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["id"], json!(id));
    assert_eq!(put["name"], "New");
    assert_eq!(put["uid"], "new-uid");
    assert_eq!(put["rateLimit"], 5);
    assert_eq!(put["metadata"], json!({}), "PUT replaces the whole application");
    assert_eq!(put["createdAt"], app["createdAt"]);
    assert!(parse_time(&put["updatedAt"]) >= parse_time(&app["updatedAt"]));

    let (status, got) = server.call("GET", "/api/v1/app/new-uid", None).await;
    assert_eq!(status, 200);
    assert_eq!(got["id"], json!(id));
    assert_eq!(got["name"], "New");
    let (status, _) = server.call("GET", "/api/v1/app/old-uid", None).await;
    assert_eq!(status, 404);

    // PUT by uid, with a trailing slash.
    let (status, put) =
        server.call("PUT", "/api/v1/app/new-uid/", Some(json!({"name": "Newer", "uid": "new-uid"}))).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["id"], json!(id));
    assert_eq!(put["name"], "Newer");

    // PUT on an unknown uid creates the application under that uid.
    let (status, fresh) = server.call("PUT", "/api/v1/app/fresh-uid", Some(json!({"name": "Fresh"}))).await;
    assert_eq!(status, 201, "{fresh}");
    assert!(fresh["id"].as_str().unwrap().starts_with("app_"));
    assert_eq!(fresh["uid"], "fresh-uid");
    assert_eq!(fresh["name"], "Fresh");
    let (status, got) = server.call("GET", "/api/v1/app/fresh-uid", None).await;
    assert_eq!(status, 200);
    assert_eq!(got, fresh);
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await).len(), 2);
    // The same PUT again updates that application and keeps its uid (a body without a uid
    // does not clear the uid it was addressed by), however often it is repeated, and also
    // when several arrive at once.
    for _ in 0..2 {
        let (status, again) = server.call("PUT", "/api/v1/app/fresh-uid", Some(json!({"name": "Fresh"}))).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!((&again["id"], &again["uid"]), (&fresh["id"], &json!("fresh-uid")));
    }
    let racing = (0..8).map(|_| server.call("PUT", "/api/v1/app/racer", Some(json!({"name": "Racer"}))));
    let answers = futures::future::join_all(racing).await;
    assert_eq!(answers.iter().filter(|(status, _)| *status == 201).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|(status, body)| (*status == 201 || *status == 200) && body["uid"] == "racer"));
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await).len(), 3, "one application per uid");
    let (_, racer) = server.call("DELETE", "/api/v1/app/racer", None).await;
    assert!(racer.is_null() || racer == json!({}), "{racer}");

    // PUT on an unknown *id* does not create anything.
    let (status, body) =
        server.call("PUT", "/api/v1/app/app_01ARZ3NDEKTSV4RRFFQ69G5FAV", Some(json!({"name": "Ghost"}))).await;
    assert_error(status, &body, 404, "not_found");
    // PUT taking another application's uid conflicts.
    let (status, body) =
        server.call("PUT", &format!("/api/v1/app/{id}"), Some(json!({"name": "x", "uid": "fresh-uid"}))).await;
    assert_error(status, &body, 409, "conflict");
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await).len(), 2);
    // A PUT that renames: the application now has the body's uid, and the same PUT again
    // finds it. Naming no application, another uid in the body than the path's is refused:
    // it was overridden, and a retry of the renaming made a second application.
    let (status, renamed) =
        server.call("PUT", "/api/v1/app/fresh-uid", Some(json!({"name": "Fresh", "uid": "renamed"}))).await;
    assert_eq!((status, &renamed["uid"]), (200, &json!("renamed")), "{renamed}");
    let (status, body) =
        server.call("PUT", "/api/v1/app/fresh-uid", Some(json!({"name": "Fresh", "uid": "renamed"}))).await;
    assert_error(status, &body, 422, "validation");
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await).len(), 2, "no second application");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_patch_leaves_absent_fields_and_null_clears() {
    let server = Server::start("").await;
    let app =
        create_app_with(&server, json!({"name": "P", "uid": "p-uid", "rateLimit": 7, "metadata": {"k": "v"}})).await;
    let id = id_of(&app);
    let path = format!("/api/v1/app/{id}");

    let (status, patched) = server.call("PATCH", &path, Some(json!({"name": "P2"}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "P2");
    assert_eq!(patched["uid"], "p-uid");
    assert_eq!(patched["rateLimit"], 7);
    assert_eq!(patched["metadata"], json!({"k": "v"}));

    let (status, patched) = server.call("PATCH", "/api/v1/app/p-uid/", Some(json!({"uid": null}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["uid"], Value::Null);
    assert_eq!(patched["name"], "P2");
    assert_eq!(patched["rateLimit"], 7);

    let (status, got) = server.call("GET", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(got["uid"], Value::Null);
    assert_eq!(got["name"], "P2");
    assert_eq!(got["metadata"], json!({"k": "v"}));
    let (status, _) = server.call("GET", "/api/v1/app/p-uid", None).await;
    assert_eq!(status, 404, "the cleared uid no longer names the application");

    let (status, patched) = server.call("PATCH", &path, Some(json!({"rateLimit": null, "metadata": {}}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["rateLimit"], Value::Null);
    assert_eq!(patched["metadata"], json!({}));

    // A required field cannot be cleared, and a failed PATCH changes nothing.
    let (status, body) = server.call("PATCH", &path, Some(json!({"name": null}))).await;
    assert_invalid(status, &body, "name");
    let (status, body) = server.call("PATCH", &path, Some(json!({"rateLimit": 0, "name": "Z"}))).await;
    assert_invalid(status, &body, "rateLimit");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got["name"], "P2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_delete_then_404() {
    let server = Server::start("").await;
    let keep = server.create_app("keep").await;
    let gone = server.create_app("gone").await;
    server.create_endpoint(&gone, json!({"url": "https://example.com/"})).await;

    let (status, body) = server.call("DELETE", &format!("/api/v1/app/{gone}/"), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(body, Value::Null);
    let (status, body) = server.call("GET", &format!("/api/v1/app/{gone}"), None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.call("GET", &format!("/api/v1/app/{gone}/endpoint"), None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.call("DELETE", &format!("/api/v1/app/{gone}"), None).await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await), vec![keep.clone()]);
    let (status, _) = server.call("GET", &format!("/api/v1/app/{keep}"), None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_get_if_exists_and_duplicate_uid() {
    let server = Server::start("").await;
    let first = create_app_with(&server, json!({"name": "First", "uid": "dup"})).await;

    let (status, again) =
        server.call("POST", "/api/v1/app?get_if_exists=true", Some(json!({"name": "Second", "uid": "dup"}))).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "the existing application is returned unchanged");

    let (status, body) = server.call("POST", "/api/v1/app/", Some(json!({"name": "Second", "uid": "dup"}))).await;
    assert_error(status, &body, 409, "conflict");

    let (status, other) =
        server.call("POST", "/api/v1/app/?get_if_exists=true", Some(json!({"name": "Other", "uid": "other"}))).await;
    assert_eq!(status, 201, "{other}");
    assert_eq!(other["uid"], "other");

    let all = list_all(&server, "/api/v1/app").await;
    assert_eq!(ids(&all), vec![id_of(&first), id_of(&other)]);
    assert_eq!(all["data"][0]["name"], "First");

    // A uid shaped as an application id is refused, not taken for that application's id.
    let by_id = json!({"name": "Third", "uid": id_of(&first)});
    let (status, body) = server.call("POST", "/api/v1/app?get_if_exists=true", Some(by_id)).await;
    assert_invalid(status, &body, "uid");

    // Workers getting or creating one application side by side all get it.
    let racing = (0..16)
        .map(|_| server.call("POST", "/api/v1/app?get_if_exists=true", Some(json!({"name": "Raced", "uid": "raced"}))));
    let answers = futures::future::join_all(racing).await;
    let made: HashSet<String> = answers
        .iter()
        .map(|(status, app)| {
            assert!(*status == 200 || *status == 201, "{status}: {app}");
            id_of(app)
        })
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
}

// --- 2. event types

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_type_lifecycle() {
    let server = Server::start("").await;
    let schemas = json!({"1": {"type": "object", "properties": {"id": {"type": "string"}}}});
    let (status, et) = server
        .call(
            "POST",
            "/api/v1/event-type",
            Some(json!({"name": "user.created", "description": "A user was created", "schemas": schemas})),
        )
        .await;
    assert_eq!(status, 201, "{et}");
    assert_eq!(et["name"], "user.created");
    assert_eq!(et["description"], "A user was created");
    assert_eq!(et["archived"], false);
    assert_eq!(et["deprecated"], false);
    assert_eq!(et["featureFlag"], Value::Null);
    assert_eq!(et["schemas"], schemas);
    parse_time(&et["createdAt"]);
    parse_time(&et["updatedAt"]);

    let (status, body) =
        server.call("POST", "/api/v1/event-type/", Some(json!({"name": "user.created", "description": "again"}))).await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = server.call("POST", "/api/v1/event-type", Some(json!({"name": "bad name"}))).await;
    assert_invalid(status, &body, "name");

    let (status, _) = server.call("POST", "/api/v1/event-type", Some(json!({"name": "user.deleted"}))).await;
    assert_eq!(status, 201);
    let (status, archived) =
        server.call("POST", "/api/v1/event-type", Some(json!({"name": "old.thing", "archived": true}))).await;
    assert_eq!(status, 201, "{archived}");

    let names = |list: &Value| -> Vec<String> {
        list["data"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
    };
    let list = list_all(&server, "/api/v1/event-type").await;
    assert_eq!(names(&list), vec!["user.created", "user.deleted"]);
    assert!(list["data"][0].get("schemas").is_none(), "schemas only with with_content: {list}");
    let list = list_all(&server, "/api/v1/event-type?with_content=true").await;
    assert_eq!(list["data"][0]["schemas"], schemas);
    let list = list_all(&server, "/api/v1/event-type?include_archived=true").await;
    assert_eq!(names(&list), vec!["old.thing", "user.created", "user.deleted"]);

    let (status, got) = server.call("GET", "/api/v1/event-type/user.created/", None).await;
    assert_eq!(status, 200);
    assert_eq!(got, et);
    let (status, body) = server.call("GET", "/api/v1/event-type/nope", None).await;
    assert_error(status, &body, 404, "not_found");

    // Concurrent PUTs of a new event type: one creates it, the others update it.
    let racing = (0..8).map(|_| server.call("PUT", "/api/v1/event-type/race.et", Some(json!({"description": "R"}))));
    let answers = futures::future::join_all(racing).await;
    assert_eq!(answers.iter().filter(|(status, _)| *status == 201).count(), 1, "{answers:?}");
    assert!(answers.iter().all(|(status, _)| *status == 201 || *status == 200), "{answers:?}");
    let (status, _) = server.call("DELETE", "/api/v1/event-type/race.et?expunge=true", None).await;
    assert_eq!(status, 204);

    // A PUT's name is the path's: a bad one is told there.
    let (status, body) = server.call("PUT", "/api/v1/event-type/bad%20name", Some(json!({"description": "B"}))).await;
    assert_error(status, &body, 422, "validation");
    assert_eq!(body["detail"][0]["loc"], json!(["path", "name"]), "{body}");
    // PUT creates, then replaces.
    let (status, put) = server.call("PUT", "/api/v1/event-type/order.paid", Some(json!({"description": "Paid"}))).await;
    assert_eq!(status, 201, "{put}");
    assert_eq!(put["name"], "order.paid");
    assert_eq!(put["description"], "Paid");
    let (status, put2) = server
        .call("PUT", "/api/v1/event-type/order.paid", Some(json!({"description": "Paid v2", "deprecated": true})))
        .await;
    assert_eq!(status, 200, "{put2}");
    assert_eq!(put2["description"], "Paid v2");
    assert_eq!(put2["deprecated"], true);
    assert_eq!(put2["createdAt"], put["createdAt"]);
    let (_, got) = server.call("GET", "/api/v1/event-type/order.paid", None).await;
    assert_eq!(got["description"], "Paid v2");

    // PATCH changes only what it names.
    let (status, patched) =
        server.call("PATCH", "/api/v1/event-type/user.created", Some(json!({"featureFlag": "beta"}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["featureFlag"], "beta");
    assert_eq!(patched["featureFlags"], json!(["beta"]), "Svix's list form too");
    assert_eq!(patched["description"], "A user was created");
    assert_eq!(patched["schemas"], schemas);
    let (status, patched) = server
        .call("PATCH", "/api/v1/event-type/user.created", Some(json!({"description": "changed", "featureFlag": null})))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "changed");
    assert_eq!(patched["featureFlag"], Value::Null);
    assert_eq!(patched["featureFlags"], Value::Null);
    // Svix's list form, on PATCH and PUT: the list replaces every flag (sorted, each once),
    // an empty one clears them; given both forms, both count. `groupName` is kept.
    for (method, body, want) in [
        ("PATCH", json!({"featureFlags": ["gamma"]}), json!(["gamma"])),
        ("PATCH", json!({"featureFlags": ["b", "a", "b"]}), json!(["a", "b"])),
        ("PATCH", json!({"featureFlag": "c", "featureFlags": ["a"]}), json!(["a", "c"])),
        ("PATCH", json!({"featureFlags": []}), Value::Null),
        ("PUT", json!({"description": "put", "featureFlags": ["delta"], "groupName": "users"}), json!(["delta"])),
    ] {
        let (status, out) = server.call(method, "/api/v1/event-type/user.created", Some(body)).await;
        assert_eq!((status, &out["featureFlags"]), (200, &want), "{method}: {out}");
        assert_eq!(out["featureFlag"], want.get(0).cloned().unwrap_or(Value::Null), "the first, in the older form");
    }
    let (_, got) = server.call("GET", "/api/v1/event-type/user.created", None).await;
    assert_eq!(got["groupName"], "users", "{got}");
    let (status, out) = server.call("PATCH", "/api/v1/event-type/user.created", Some(json!({"groupName": null}))).await;
    assert_eq!((status, &out["groupName"], &out["featureFlags"]), (200, &Value::Null, &json!(["delta"])), "{out}");
    let many: Vec<String> = (0..65).map(|i| format!("f{i}")).collect();
    let (status, err) =
        server.call("PATCH", "/api/v1/event-type/user.created", Some(json!({"featureFlags": many}))).await;
    assert_invalid(status, &err, "featureFlags");
    let (status, err) =
        server.call("PATCH", "/api/v1/event-type/user.created", Some(json!({"featureFlags": ["bad flag"]}))).await;
    assert_invalid(status, &err, "featureFlags");
    // Schemas nested past what clients read back in a list are refused; 102 levels (what
    // an OpenAPI import can make) are fine, and other changes of such an event type too.
    let nested = |levels: usize| -> Value {
        let text = format!("{{\"1\":{}1{}}}", "[".repeat(levels - 1), "]".repeat(levels - 1));
        serde_json::from_str(&text).expect("nested")
    };
    let (status, err) =
        server.call("PATCH", "/api/v1/event-type/user.created", Some(json!({"schemas": nested(103)}))).await;
    assert_invalid(status, &err, "schemas");
    let (status, ok) =
        server.call("PATCH", "/api/v1/event-type/user.created", Some(json!({"schemas": nested(102)}))).await;
    assert_eq!(status, 200, "{ok}");
    let (status, ok) =
        server.call("PATCH", "/api/v1/event-type/user.created", Some(json!({"description": "deep"}))).await;
    assert_eq!(status, 200, "{ok}");
    let list = list_all(&server, "/api/v1/event-type?with_content=true").await;
    assert!(list["data"].as_array().is_some_and(|d| !d.is_empty()), "the list reads back");
    let (status, body) = server.call("PATCH", "/api/v1/event-type/nope", Some(json!({"description": "x"}))).await;
    assert_error(status, &body, 404, "not_found");

    // DELETE archives: gone from the default list, still there with include_archived.
    let (status, body) = server.call("DELETE", "/api/v1/event-type/user.deleted", None).await;
    assert_eq!(status, 204, "{body}");
    let (status, got) = server.call("GET", "/api/v1/event-type/user.deleted", None).await;
    assert_eq!(status, 200);
    assert_eq!(got["archived"], true);
    assert_eq!(names(&list_all(&server, "/api/v1/event-type").await), vec!["order.paid", "user.created"]);
    assert_eq!(
        names(&list_all(&server, "/api/v1/event-type?include_archived=true").await),
        vec!["old.thing", "order.paid", "user.created", "user.deleted"]
    );
    // Creating an archived one brings it back (Svix: "create new or unarchive existing"),
    // as sent, with its first creation time; an active one is still a conflict.
    let created_at = got["createdAt"].clone();
    let body = json!({"name": "user.deleted", "description": "back again"});
    let (status, back) = server.call("POST", "/api/v1/event-type", Some(body.clone())).await;
    assert_eq!(status, 201, "{back}");
    assert_eq!(
        (&back["archived"], &back["description"], &back["createdAt"]),
        (&json!(false), &json!("back again"), &created_at)
    );
    let (status, err) = server.call("POST", "/api/v1/event-type", Some(body)).await;
    assert_error(status, &err, 409, "conflict");
    let (status, body) = server.call("DELETE", "/api/v1/event-type/user.deleted", None).await;
    assert_eq!(status, 204, "{body}");

    // expunge removes it for good.
    let (status, body) = server.call("DELETE", "/api/v1/event-type/user.deleted?expunge=true", None).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.call("GET", "/api/v1/event-type/user.deleted", None).await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(
        names(&list_all(&server, "/api/v1/event-type?include_archived=true").await),
        vec!["old.thing", "order.paid", "user.created"]
    );
    let (status, body) = server.call("DELETE", "/api/v1/event-type/user.deleted?expunge=true", None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.call("DELETE", "/api/v1/event-type/never.was", None).await;
    assert_error(status, &body, 404, "not_found");
}

// --- 3. endpoints

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_create_with_every_field() {
    let server = Server::start("").await;
    let app = server.create_app("eps").await;
    let secret = secret_of(7, 32);
    let (status, ep) = server
        .call(
            "POST",
            &format!("/api/v1/app/{app}/endpoint"),
            Some(json!({
                "url": "https://example.com/hook",
                "description": "main endpoint",
                "filterTypes": ["user.created", "user.deleted"],
                "channels": ["project_1"],
                "rateLimit": 100,
                "metadata": {"team": "core"},
                "uid": "main-ep",
                "headers": {"X-Custom": "abc"},
                "secret": secret,
            })),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    assert_eq!(
        keys(&ep),
        set(&[
            "id",
            "url",
            "description",
            "filterTypes",
            "eventTypes",
            "channels",
            "disabled",
            "rateLimit",
            "throttleRate",
            "metadata",
            "uid",
            "version",
            "createdAt",
            "updatedAt"
        ]),
        "the secret is never part of the endpoint body"
    );
    // Svix's newer names carry the same settings.
    assert_eq!(ep["eventTypes"], ep["filterTypes"]);
    assert_eq!(ep["throttleRate"], ep["rateLimit"]);
    // Both names may come in one body (an endpoint read back, copied into a change, as
    // Svix's SDKs models carry both): the older counts, the newer where it is absent.
    let both = json!({ "url": "https://example.com/both", "filterTypes": ["a.b"], "eventTypes": ["c.d"],
                       "rateLimit": 7, "throttleRate": 9 });
    let (status, made) = server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(both)).await;
    assert_eq!((status, &made["filterTypes"], &made["rateLimit"]), (201, &json!(["a.b"]), &json!(7)), "{made}");
    let path = format!("/api/v1/app/{app}/endpoint/{}", id_of(&made));
    let newer = json!({ "url": "https://example.com/both", "eventTypes": ["e.f"], "throttleRate": 3 });
    let (status, put) = server.call("PUT", &path, Some(newer)).await;
    assert_eq!((status, &put["filterTypes"], &put["rateLimit"]), (200, &json!(["e.f"]), &json!(3)), "{put}");
    let patch = json!({ "filterTypes": ["g.h"], "eventTypes": ["i.j"], "rateLimit": 4, "throttleRate": 5 });
    let (status, patched) = server.call("PATCH", &path, Some(patch)).await;
    assert_eq!((status, &patched["filterTypes"], &patched["rateLimit"]), (200, &json!(["g.h"]), &json!(4)));
    let (status, patched) = server.call("PATCH", &path, Some(json!({ "throttleRate": null }))).await;
    assert_eq!((status, &patched["rateLimit"]), (200, &Value::Null), "{patched}");
    server.call("DELETE", &path, None).await;
    let id = id_of(&ep);
    assert!(id.starts_with("ep_") && id.len() == 29, "{id}");
    assert_eq!(ep["url"], "https://example.com/hook");
    assert_eq!(ep["description"], "main endpoint");
    assert_eq!(ep["filterTypes"], json!(["user.created", "user.deleted"]));
    assert_eq!(ep["channels"], json!(["project_1"]));
    assert_eq!(ep["disabled"], false);
    assert_eq!(ep["rateLimit"], 100);
    assert_eq!(ep["metadata"], json!({"team": "core"}));
    assert_eq!(ep["uid"], "main-ep");
    assert_eq!(ep["version"], 1);

    let (status, key) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{id}/secret"), None).await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key, json!({"key": secret}));
    let (status, headers) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/main-ep/headers"), None).await;
    assert_eq!(status, 200, "{headers}");
    assert_eq!(headers["headers"], json!({"X-Custom": "abc"}));

    // Without a secret one is generated: whsec_ + base64 of 24 random bytes.
    let (id2, generated) = server.create_endpoint(&app, json!({"url": "http://example.org"})).await;
    let (id3, generated2) = server.create_endpoint(&app, json!({"url": "http://example.org"})).await;
    for g in [&generated, &generated2] {
        let b64 = g.strip_prefix("whsec_").unwrap_or_else(|| panic!("{g}"));
        assert_eq!(B64.decode(b64).expect("base64").len(), 24, "{g}");
    }
    assert_ne!(generated, generated2);
    let (_, ep2) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{id2}"), None).await;
    assert_eq!(ep2["description"], "");
    assert_eq!(ep2["filterTypes"], Value::Null);
    assert_eq!(ep2["channels"], Value::Null);
    assert_eq!(ep2["uid"], Value::Null);
    assert_eq!(ep2["metadata"], json!({}));

    let list = list_all(&server, &format!("/api/v1/app/{app}/endpoint/")).await;
    assert_eq!(ids(&list), vec![id.clone(), id2, id3]);
    assert_eq!(list["data"][0], ep);

    // A duplicate uid in the same application conflicts; in another application it is fine.
    let (status, body) = server
        .call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({"url": "https://a.b/", "uid": "main-ep"})))
        .await;
    assert_error(status, &body, 409, "conflict");
    let other = server.create_app("other").await;
    let (status, body) = server
        .call("POST", &format!("/api/v1/app/{other}/endpoint"), Some(json!({"url": "https://a.b/", "uid": "main-ep"})))
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_get_put_patch_delete() {
    let server = Server::start("").await;
    let app = server.create_app("eps").await;
    let base = format!("/api/v1/app/{app}/endpoint");
    let (status, ep) = server
        .call(
            "POST",
            &base,
            Some(json!({
                "url": "https://example.com/hook",
                "description": "d1",
                "filterTypes": ["a.b"],
                "channels": ["c1"],
                "rateLimit": 10,
                "metadata": {"m": "1"},
                "uid": "ep-uid",
                "headers": {"X-Keep": "yes"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    let id = id_of(&ep);

    let (status, by_id) = server.call("GET", &format!("{base}/{id}"), None).await;
    assert_eq!(status, 200);
    let (status, by_uid) = server.call("GET", &format!("{base}/ep-uid/"), None).await;
    assert_eq!(status, 200);
    assert_eq!(by_id, ep);
    assert_eq!(by_uid, ep);
    let (status, body) = server.call("GET", &format!("{base}/nope"), None).await;
    assert_error(status, &body, 404, "not_found");
    // Svix's deprecated `secret` of a patch, still in its SDKs: pointed to the rotation.
    let secret = json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" });
    let (status, body) = server.call("PATCH", &format!("{base}/{id}"), Some(secret)).await;
    assert_invalid(status, &body, "secret");
    assert!(body["detail"][0]["msg"].as_str().is_some_and(|m| m.contains("secret/rotate")), "{body}");

    // PUT replaces every field it carries; optional ones left out are cleared.
    let (status, put) = server
        .call(
            "PUT",
            &format!("{base}/ep-uid"),
            Some(json!({"url": "https://example.org/new", "description": "d2", "uid": "ep-uid", "version": 2})),
        )
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["id"], json!(id));
    assert_eq!(put["url"], "https://example.org/new");
    assert_eq!(put["description"], "d2");
    assert_eq!(put["filterTypes"], Value::Null);
    assert_eq!(put["channels"], Value::Null);
    assert_eq!(put["rateLimit"], Value::Null);
    assert_eq!(put["metadata"], json!({}));
    assert_eq!(put["version"], 2);
    assert_eq!(put["createdAt"], ep["createdAt"]);
    let (_, got) = server.call("GET", &format!("{base}/{id}"), None).await;
    assert_eq!(got, put);
    let (_, headers) = server.call("GET", &format!("{base}/{id}/headers"), None).await;
    assert_eq!(headers["headers"], json!({"X-Keep": "yes"}), "PUT without headers keeps them");
    // A PUT to a uid that names no endpoint creates it (Svix's upsert); to an id, 404; a
    // body's other uid is refused.
    let (status, body) = server.call("PUT", &format!("{base}/nope"), Some(json!({"url": "https://a.b/"}))).await;
    assert_eq!((status, &body["uid"]), (201, &json!("nope")), "{body}");
    let (status, body) = server.call("DELETE", &format!("{base}/nope"), None).await;
    assert_eq!(status, 204, "{body}");
    // Upserts of one new uid at once: one creates it, the others update it; none is refused.
    let raced = format!("{base}/raced");
    let puts = (0..8).map(|n| {
        let (server, raced) = (&server, raced.clone());
        async move { server.call("PUT", &raced, Some(json!({"url": format!("https://a.b/{n}")}))).await }
    });
    let answers = futures::future::join_all(puts).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 201), "{answers:?}");
    assert!(statuses.contains(&201), "{statuses:?}");
    let made: std::collections::HashSet<&Value> = answers.iter().map(|(_, body)| &body["id"]).collect();
    assert_eq!(made.len(), 1, "one endpoint: {answers:?}");
    // Changes of one endpoint at once are each applied to the others' result: headers
    // added by eight concurrent PATCHes are all kept.
    let patches = (0..8).map(|n| {
        let (server, path) = (&server, format!("{raced}/headers"));
        async move { server.call("PATCH", &path, Some(json!({"headers": {format!("X-Part-{n}"): "yes"}}))).await }
    });
    let answers = futures::future::join_all(patches).await;
    assert!(answers.iter().all(|(status, _)| *status == 204), "{answers:?}");
    let (_, headers) = server.call("GET", &format!("{raced}/headers"), None).await;
    assert_eq!(headers["headers"].as_object().map(|h| h.len()), Some(8), "{headers}");
    let (status, body) = server.call("DELETE", &raced, None).await;
    assert_eq!(status, 204, "{body}");
    let missing_id = format!("{base}/ep_01M96T8KSYHGHP2ZNG3JSFRSMV");
    let (status, body) = server.call("PUT", &missing_id, Some(json!({"url": "https://a.b/"}))).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) =
        server.call("PUT", &format!("{base}/nope"), Some(json!({"url": "https://a.b/", "uid": "other"}))).await;
    assert_error(status, &body, 422, "validation");
    // Addressed by its uid, a PUT without one keeps it, so the same PUT can be repeated;
    // addressed by id, it clears it.
    for _ in 0..2 {
        let (status, again) =
            server.call("PUT", &format!("{base}/ep-uid"), Some(json!({"url": "https://example.org/new"}))).await;
        assert_eq!((status, &again["uid"]), (200, &json!("ep-uid")), "{again}");
    }
    let (status, cleared) =
        server.call("PUT", &format!("{base}/{id}"), Some(json!({"url": "https://example.org/new"}))).await;
    assert_eq!((status, &cleared["uid"]), (200, &Value::Null), "{cleared}");
    let body = json!({"url": "https://example.org/new", "description": "d2", "uid": "ep-uid", "version": 2});
    let (status, mut restored) = server.call("PUT", &format!("{base}/{id}"), Some(body)).await;
    restored["updatedAt"] = put["updatedAt"].clone();
    assert_eq!((status, restored), (200, put.clone()));

    // PATCH: absent fields untouched, null clears, values set.
    let (status, patched) = server
        .call(
            "PATCH",
            &format!("{base}/{id}"),
            Some(json!({"description": "patched", "filterTypes": ["x.y"], "rateLimit": 3})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "patched");
    assert_eq!(patched["filterTypes"], json!(["x.y"]));
    assert_eq!(patched["rateLimit"], 3);
    assert_eq!(patched["url"], "https://example.org/new");
    assert_eq!(patched["uid"], "ep-uid");
    let (status, patched) =
        server.call("PATCH", &format!("{base}/ep-uid"), Some(json!({"rateLimit": null, "disabled": true}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["rateLimit"], Value::Null);
    assert_eq!(patched["disabled"], true);
    assert_eq!(patched["filterTypes"], json!(["x.y"]));
    let (status, body) = server.call("PATCH", &format!("{base}/{id}"), Some(json!({"url": null}))).await;
    assert_invalid(status, &body, "url");
    let (status, body) = server.call("PATCH", &format!("{base}/{id}"), Some(json!({"url": "ftp://x"}))).await;
    assert_invalid(status, &body, "url");
    let (_, got) = server.call("GET", &format!("{base}/{id}"), None).await;
    assert_eq!(got["url"], "https://example.org/new", "a refused PATCH changes nothing");
    assert_eq!(got["description"], "patched");

    // DELETE by uid, then it is gone.
    let (status, body) = server.call("DELETE", &format!("{base}/ep-uid/"), None).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = server.call("GET", &format!("{base}/{id}"), None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.call("DELETE", &format!("{base}/{id}"), None).await;
    assert_error(status, &body, 404, "not_found");
    assert_eq!(ids(&list_all(&server, &base).await), Vec::<String>::new());
}

/// An endpoint keeps five earlier secrets at most, all signing; past them, the one whose
/// grace ends soonest goes, not the one rotated first: a week's grace given first outlives
/// the hours given after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_past_five_secrets_drops_the_one_ending_soonest() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("grace").await;
    let first = secret_of(1, 32);
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url, "secret": first })).await;
    let rotate = |key: String, grace: u32| {
        let (server, path) = (&server, format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate"));
        async move {
            let (status, out) =
                server.call("POST", &path, Some(json!({ "key": key, "gracePeriodSeconds": grace }))).await;
            assert_eq!(status, 200, "{out}");
        }
    };
    // The first secret kept a week; then five more rotations kept an hour each.
    let keys: Vec<String> = (2..=7).map(|n| secret_of(n, 32)).collect();
    rotate(keys[0].clone(), 7 * 24 * 3600).await;
    for key in &keys[1..] {
        rotate(key.clone(), 3600).await;
    }
    server.send_message(&app, "a.b", json!({})).await;
    let got = &rx.wait_for(1, Duration::from_secs(15)).await[0];
    assert!(signature_valid(&first, got), "the week's secret went before the hours'");
    assert!(!signature_valid(&keys[0], got), "the hour's secret ending soonest is the one gone");
    for key in &keys[1..] {
        assert!(signature_valid(key, got), "{key} signs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_secret_get_and_rotate() {
    let server = Server::start("").await;
    let app = server.create_app("secrets").await;
    let (id, old) = server.create_endpoint(&app, json!({"url": "https://example.com/", "uid": "sec"})).await;
    let path = format!("/api/v1/app/{app}/endpoint/{id}/secret");

    let (status, body) = server.call("POST", &format!("{path}/rotate"), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, got) = server.call("GET", &path, None).await;
    assert_eq!(status, 200);
    let new = got["key"].as_str().unwrap().to_string();
    assert!(new.starts_with("whsec_"), "{new}");
    assert_ne!(new, old);
    assert_eq!(body, got, "the rotation answers the new secret");

    // Rotating to a given key, by uid and with a trailing slash.
    let given = secret_of(9, 40);
    let (status, body) = server
        .call("POST", &format!("/api/v1/app/{app}/endpoint/sec/secret/rotate/"), Some(json!({"key": given})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, got) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/sec/secret/"), None).await;
    assert_eq!(got, json!({"key": given}));

    // A grace period beyond a week is refused.
    let (status, body) =
        server.call("POST", &format!("{path}/rotate"), Some(json!({"gracePeriodSeconds": 604801}))).await;
    assert_invalid(status, &body, "gracePeriodSeconds");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got, json!({"key": given}));

    // A bad key is refused and changes nothing.
    let (status, body) = server.call("POST", &format!("{path}/rotate"), Some(json!({"key": "whsec_short"}))).await;
    assert_invalid(status, &body, "key");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got, json!({"key": given}));
    let (status, body) = server.call("POST", &format!("/api/v1/app/{app}/endpoint/nope/secret/rotate"), None).await;
    assert_error(status, &body, 404, "not_found");

    // A key sent with another content type is refused, not silently replaced by a random
    // one; without a content type it is read as JSON (as Svix does: its Kotlin SDK sends none).
    let other = secret_of(5, 32);
    let r = send(
        request(&server, Some(ADMIN), "POST", &format!("{path}/rotate"))
            .header("content-type", "text/plain")
            .body(json!({ "key": other }).to_string()),
    )
    .await;
    assert_error(r.status, &r.json(), 415, "unsupported_media_type");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got, json!({"key": given}));
    let r = send(
        request(&server, Some(ADMIN), "POST", &format!("{path}/rotate")).body(json!({ "key": other }).to_string()),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"key": other})), "{}", r.text);
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got, json!({"key": other}));
    // An empty body with a content length of zero rotates to a generated key.
    let r = send(request(&server, Some(ADMIN), "POST", &format!("{path}/rotate")).header("content-length", "0")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (_, got) = server.call("GET", &path, None).await;
    assert_ne!(got, json!({"key": other}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_custom_headers() {
    let server = Server::start("").await;
    let app = server.create_app("headers").await;
    let (id, _) = server.create_endpoint(&app, json!({"url": "https://example.com/", "headers": {"X-A": "0"}})).await;
    let path = format!("/api/v1/app/{app}/endpoint/{id}/headers");

    let (status, got) = server.call("GET", &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(got, json!({"headers": {"X-A": "0"}, "sensitive": []}));

    let (status, body) = server.call("PUT", &path, Some(json!({"headers": {"X-A": "1", "X-B": "2"}}))).await;
    assert_eq!(status, 204, "{body}");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got["headers"], json!({"X-A": "1", "X-B": "2"}));

    let (status, body) =
        server.call("PATCH", &format!("{path}/"), Some(json!({"headers": {"X-A": null, "X-C": "3"}}))).await;
    assert_eq!(status, 204, "{body}");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got["headers"], json!({"X-B": "2", "X-C": "3"}));

    // Names ignore case: a PATCH naming `x-b` replaces `X-B`, and `x-c: null` removes `X-C`.
    let (status, body) = server.call("PATCH", &path, Some(json!({"headers": {"x-b": "5", "x-c": null}}))).await;
    assert_eq!(status, 204, "{body}");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got["headers"], json!({"x-b": "5"}));
    // One name twice in different cases is refused.
    let (status, body) = server.call("PUT", &path, Some(json!({"headers": {"X-F": "1", "x-f": "2"}}))).await;
    assert_invalid(status, &body, "headers");

    // PUT replaces everything (a null value is simply left out).
    let (status, _) = server.call("PUT", &path, Some(json!({"headers": {"X-D": "4", "X-E": null}}))).await;
    assert_eq!(status, 204);
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got["headers"], json!({"X-D": "4"}));

    // Headers hooklane sets itself, and invalid names, are refused; nothing changes.
    for bad in [
        json!({"webhook-id": "x"}),
        json!({"Webhook-Signature": "x"}),
        json!({"bad header": "x"}),
        // Hop-by-hop and connection-control headers.
        json!({"TE": "trailers"}),
        json!({"Upgrade": "h2c"}),
        json!({"Keep-Alive": "timeout=5"}),
        json!({"Expect": "100-continue"}),
        json!({"Proxy-Authorization": "Basic eDp5"}),
        // Too long a name, or too many bytes in all (each value within its 4 KiB).
        json!({ "x-".repeat(200): "x" }),
        Value::Object((0..5).map(|i| (format!("x-{i}"), json!("v".repeat(4000)))).collect()),
    ] {
        let (status, body) = server.call("PUT", &path, Some(json!({ "headers": bad }))).await;
        assert_invalid(status, &body, "headers");
        let (status, body) = server.call("PATCH", &path, Some(json!({ "headers": bad }))).await;
        assert_invalid(status, &body, "headers");
    }
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got["headers"], json!({"X-D": "4"}));
    // deleteHeaders (Svix's PATCH) removes by name, in any case; a PUT does not take it.
    let (status, body) = server.call("PATCH", &path, Some(json!({"headers": {}, "deleteHeaders": ["x-d"]}))).await;
    assert_eq!(status, 204, "{body}");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!(got["headers"], json!({}));
    let (status, body) = server.call("PUT", &path, Some(json!({"headers": {}, "deleteHeaders": ["x-d"]}))).await;
    assert_invalid(status, &body, "deleteHeaders");
}

/// A password in an endpoint's URL (basic authentication for the receiver) is a credential:
/// a token without `ViewEndpointSecret` reads the URL with it redacted, as custom headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_an_endpoint_url_is_shown_with_secrets_only() {
    let server = Server::start("").await;
    let app = server.create_app("basic").await;
    let url = "https://hooks:s3cret@example.com/in";
    let (id, _) = server.create_endpoint(&app, json!({ "url": url })).await;
    let (_, got) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{id}"), None).await;
    assert_eq!(got["url"], url, "the admin sees it");
    let (status, access) =
        server.call("POST", &format!("/api/v1/auth/app-portal-access/{app}"), Some(json!({ "readOnly": true }))).await;
    assert_eq!(status, 200, "{access}");
    let token = access["token"].as_str().expect("token");
    let reads = [
        ("GET", format!("/api/v1/app/{app}/endpoint/{id}"), None),
        ("GET", format!("/api/v1/app/{app}/endpoint"), None),
        ("GET", format!("/api/v1/stats/app/{app}/endpoint"), None),
        // A preview, and one whose code would hand the URL back in the body.
        ("POST", format!("/api/v1/app/{app}/endpoint/{id}/preview"), Some(json!({ "payload": {} }))),
        (
            "POST",
            format!("/api/v1/app/{app}/endpoint/{id}/preview"),
            Some(
                json!({ "payload": {}, "transformation": "function handler(w) { w.payload = { u: w.url }; return w }" }),
            ),
        ),
    ];
    for (method, path, body) in reads {
        let (status, out) = server.call_as(token, method, &path, body).await;
        assert_eq!(status, 200, "{out}");
        let text = out.to_string();
        assert!(!text.contains("s3cret") && text.contains("https://hooks:redacted@example.com/in"), "{path}: {out}");
    }
    // The code never sees the credentials, whoever previews it (as when it runs for a
    // delivery); the answer shows the admin the URL the request goes to.
    let code = "function handler(w) { w.payload = { u: w.url }; return w }";
    let preview = format!("/api/v1/app/{app}/endpoint/{id}/preview");
    let (status, out) = server.call("POST", &preview, Some(json!({ "payload": {}, "transformation": code }))).await;
    assert_eq!((status, &out["body"]["u"], &out["url"]), (200, &json!("https://example.com/in"), &json!(url)), "{out}");
    // Written back as it was read (a read-modify-write by a token that may change endpoints
    // but not see secrets), the password is kept.
    let (status, access) = server
        .call(
            "POST",
            &format!("/api/v1/auth/app-portal-access/{app}"),
            Some(json!({ "capabilities": ["ViewBase", "ManageEndpoint"] })),
        )
        .await;
    assert_eq!(status, 200, "{access}");
    let editor = access["token"].as_str().expect("token");
    let path = format!("/api/v1/app/{app}/endpoint/{id}");
    let (_, seen) = server.call_as(editor, "GET", &path, None).await;
    let (status, out) =
        server.call_as(editor, "PUT", &path, Some(json!({ "url": seen["url"], "description": "edited" }))).await;
    assert_eq!(status, 200, "{out}");
    let (_, got) = server.call("GET", &path, None).await;
    assert_eq!((&got["url"], &got["description"]), (&json!(url), &json!("edited")));
    // A token that sees secrets sets what it sends, even that.
    let literal = "https://hooks:redacted@example.com/in";
    let (status, out) = server.call("PATCH", &path, Some(json!({ "url": literal }))).await;
    assert_eq!((status, &out["url"]), (200, &json!(literal)), "{out}");
    // A key sent as the user name, without a password, is as secret.
    let keyed = "https://sk_live_51key@example.com/in";
    let (status, out) = server.call("PATCH", &path, Some(json!({ "url": keyed }))).await;
    assert_eq!((status, &out["url"]), (200, &json!(keyed)), "{out}");
    let (_, seen) = server.call_as(token, "GET", &path, None).await;
    assert_eq!(seen["url"], "https://redacted@example.com/in", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_validation_names_the_field() {
    let server = Server::start("").await;
    let app = server.create_app("validation").await;
    let path = format!("/api/v1/app/{app}/endpoint");
    let long_url = format!("https://example.com/{}", "a".repeat(4096));
    let cases = [
        (json!({"url": "ftp://x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "https://"}), "url"),
        // What the URL parser would quietly change: the URL stored must be the one called.
        (json!({"url": " https://example.com/"}), "url"),
        (json!({"url": "https://example.com/\n"}), "url"),
        (json!({"url": "https://exa\tmple.com/"}), "url"),
        (json!({"url": "http:/example.com"}), "url"),
        (json!({"url": "http://example.com:0/"}), "url"),
        (json!({ "url": long_url }), "url"),
        (json!({"url": "https://example.com/", "secret": "whsec_!!!notbase64"}), "secret"),
        (json!({"url": "https://example.com/", "secret": secret_of(1, 8)}), "secret"),
        (json!({"url": "https://example.com/", "filterTypes": []}), "filterTypes"),
        (json!({"url": "https://example.com/", "filterTypes": ["has space"]}), "filterTypes"),
        (json!({"url": "https://example.com/", "channels": []}), "channels"),
        (json!({"url": "https://example.com/", "headers": {"webhook-id": "x"}}), "headers"),
        (json!({"url": "https://example.com/", "rateLimit": 0}), "rateLimit"),
        // Svix's SDKs read it in 16 bits: a larger one would fail every list holding it.
        (json!({"url": "https://example.com/", "rateLimit": 65536}), "rateLimit"),
        (json!({"url": "https://example.com/", "uid": "no spaces allowed"}), "uid"),
        (json!({"url": "https://example.com/", "version": 0}), "version"),
    ];
    for (body, field) in cases {
        let (status, out) = server.call("POST", &path, Some(body.clone())).await;
        assert_invalid(status, &out, field);
    }
    // The long URL itself is fine just under the limit.
    let ok_url = format!("https://example.com/{}", "a".repeat(4096 - "https://example.com/".len()));
    assert_eq!(ok_url.len(), 4096);
    let (status, out) = server.call("POST", &path, Some(json!({ "url": ok_url }))).await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(ids(&list_all(&server, &path).await).len(), 1, "no refused endpoint was stored");
}

// --- 4. messages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_payload_is_echoed_byte_exact() {
    let server = Server::start("").await;
    let app = server.create_app("msgs").await;
    let payload = r#"{"b": 2,  "a":1, "s":"\u00e9\n", "n": 1.50}"#;
    let body = format!(r#"{{"eventType":"user.created","eventId":"evt-1","payload":{payload}}}"#);
    let resp = post_text(&server, &format!("/api/v1/app/{app}/msg"), &body).await;
    assert_eq!(resp.status, 202, "{}", resp.text);
    assert!(resp.text.contains(&format!(r#""payload":{payload}"#)), "payload not byte-exact: {}", resp.text);
    let msg = resp.json();
    let id = id_of(&msg);
    assert!(id.starts_with("msg_") && id.len() == 30, "{id}");
    assert_eq!(msg["eventType"], "user.created");
    assert_eq!(msg["eventId"], "evt-1");
    assert_eq!(msg["channels"], Value::Null);
    assert_eq!(msg["payload"], json!({"b": 2, "a": 1, "s": "é\n", "n": 1.5}));
    parse_time(&msg["timestamp"]);

    for key in [id.as_str(), "evt-1"] {
        let got = send(request(&server, Some(ADMIN), "GET", &format!("/api/v1/app/{app}/msg/{key}"))).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert!(got.text.contains(&format!(r#""payload":{payload}"#)), "GET {key}: {}", got.text);
        assert_eq!(got.json()["id"], json!(id));
    }
    let list = send(request(&server, Some(ADMIN), "GET", &format!("/api/v1/app/{app}/msg"))).await;
    assert!(list.text.contains(&format!(r#""payload":{payload}"#)), "{}", list.text);

    // The receiver gets the same bytes.
    let rx = Receiver::start().await;
    server.create_endpoint(&app, json!({"url": rx.url})).await;
    let body = format!(r#"{{"eventType":"user.created","payload":{payload}}}"#);
    let resp = post_text(&server, &format!("/api/v1/app/{app}/msg"), &body).await;
    assert_eq!(resp.status, 202, "{}", resp.text);
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(String::from_utf8_lossy(&got[0].body), payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_event_id_is_unique_per_app() {
    let server = Server::start("").await;
    let app = server.create_app("a").await;
    let other = server.create_app("b").await;
    let body = json!({"eventType": "user.created", "eventId": "evt-42", "payload": {"x": 1}});
    let (status, first) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body.clone())).await;
    assert_eq!(status, 202, "{first}");
    let (status, dup) = server
        .call(
            "POST",
            &format!("/api/v1/app/{app}/msg/"),
            Some(json!({"eventType": "user.created", "eventId": "evt-42", "payload": {"x": 2}})),
        )
        .await;
    assert_error(status, &dup, 409, "conflict");
    let list = list_all(&server, &format!("/api/v1/app/{app}/msg")).await;
    assert_eq!(ids(&list), vec![id_of(&first)]);
    assert_eq!(list["data"][0]["payload"], json!({"x": 1}));

    let (status, elsewhere) = server.call("POST", &format!("/api/v1/app/{other}/msg"), Some(body)).await;
    assert_eq!(status, 202, "{elsewhere}");
    assert_ne!(elsewhere["id"], first["id"]);
    let (status, got) = server.call("GET", &format!("/api/v1/app/{other}/msg/evt-42"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["id"], elsewhere["id"]);
    let (status, got) = server.call("GET", &format!("/api/v1/app/{app}/msg/evt-42"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["id"], first["id"]);
    let (status, body) = server.call("GET", &format!("/api/v1/app/{app}/msg/evt-43"), None).await;
    assert_error(status, &body, 404, "not_found");
    // One application's message is not found through the other.
    let (status, body) = server.call("GET", &format!("/api/v1/app/{other}/msg/{}", id_of(&first)), None).await;
    assert_error(status, &body, 404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_list_filters() {
    let server = Server::start("").await;
    let app = server.create_app("filters").await;
    let base = format!("/api/v1/app/{app}/msg");
    let mut sent = Vec::new();
    for (event_type, channels) in
        [("a.one", json!(["c1"])), ("a.two", json!(["c2", "c3"])), ("a.three", Value::Null), ("a.one", json!(["c3"]))]
    {
        let mut body = json!({"eventType": event_type, "payload": {"t": event_type}});
        if !channels.is_null() {
            body["channels"] = channels;
        }
        let (status, out) = server.call("POST", &base, Some(body)).await;
        assert_eq!(status, 202, "{out}");
        sent.push(id_of(&out));
        // Distinct milliseconds, so before/after can split them.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let (m1, m2, m3, m4) = (&sent[0], &sent[1], &sent[2], &sent[3]);
    let newest_first = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let all = list_all(&server, &base).await;
    assert_eq!(ids(&all), newest_first(&[m4, m3, m2, m1]), "messages list newest first");
    assert_eq!(all["data"][3]["payload"], json!({"t": "a.one"}));
    let asc = list_all(&server, &format!("{base}?order=ascending")).await;
    assert_eq!(ids(&asc), newest_first(&[m1, m2, m3, m4]));

    let q = list_all(&server, &format!("{base}?event_types=a.one&event_types=a.three")).await;
    assert_eq!(ids(&q), newest_first(&[m4, m3, m1]));
    let q = list_all(&server, &format!("{base}?event_types=a.two")).await;
    assert_eq!(ids(&q), newest_first(&[m2]));
    let q = list_all(&server, &format!("{base}?event_types[]=a.two&event_types[]=a.three")).await;
    assert_eq!(ids(&q), newest_first(&[m3, m2]));
    let q = list_all(&server, &format!("{base}?event_types=nothing.here")).await;
    assert_eq!(ids(&q), Vec::<String>::new());

    let q = list_all(&server, &format!("{base}?channel=c3")).await;
    assert_eq!(ids(&q), newest_first(&[m4, m2]));
    let q = list_all(&server, &format!("{base}?channel=c1")).await;
    assert_eq!(ids(&q), newest_first(&[m1]));
    let q = list_all(&server, &format!("{base}?channel=c3&event_types=a.one")).await;
    assert_eq!(ids(&q), newest_first(&[m4]));

    let t2 = all["data"][2]["timestamp"].as_str().unwrap().to_string();
    let t3 = all["data"][1]["timestamp"].as_str().unwrap().to_string();
    assert_eq!(all["data"][2]["id"], json!(m2));
    let q = list_all(&server, &format!("{base}?after={t2}")).await;
    assert_eq!(ids(&q), newest_first(&[m4, m3]));
    let q = list_all(&server, &format!("{base}?before={t2}")).await;
    assert_eq!(ids(&q), newest_first(&[m1]));
    let q = list_all(&server, &format!("{base}?after={t2}&before={t3}")).await;
    assert_eq!(ids(&q), Vec::<String>::new());
    let (status, body) = server.call("GET", &format!("{base}?before=yesterday"), None).await;
    assert_error(status, &body, 422, "validation");
    assert_eq!(body["detail"][0]["loc"], json!(["query", "before"]));
    // A time finer than the millisecond splits the messages exactly: one of `.123` is
    // before `.1235`, and not after it.
    let finer =
        chrono::DateTime::parse_from_rfc3339(&t2).expect("a time").to_utc() + chrono::Duration::microseconds(500);
    let finer = finer.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let q = list_all(&server, &format!("{base}?before={finer}")).await;
    assert_eq!(ids(&q), newest_first(&[m2, m1]), "before {finer}");
    let q = list_all(&server, &format!("{base}?after={finer}")).await;
    assert_eq!(ids(&q), newest_first(&[m4, m3]), "after {finer}");
    // A channel or a tag no message can have is refused, on every store alike.
    for name in ["channel", "tag"] {
        let (status, body) = server.call("GET", &format!("{base}?{name}=a%00b"), None).await;
        assert_error(status, &body, 422, "validation");
        assert_eq!(body["detail"][0]["loc"], json!(["query", name]), "{body}");
    }

    // Paging through messages.
    let page = list_all(&server, &format!("{base}?limit=3")).await;
    assert_eq!(ids(&page), newest_first(&[m4, m3, m2]));
    assert_eq!(page["done"], false);
    let page = list_all(&server, &format!("{base}?limit=3&iterator={}", page["iterator"].as_str().unwrap())).await;
    assert_eq!(ids(&page), newest_first(&[m1]));
    assert_eq!(page["done"], true);

    // with_content=false answers an empty payload (as Svix: its SDKs require the field).
    let q = list_all(&server, &format!("{base}?with_content=false")).await;
    assert_eq!(ids(&q).len(), 4);
    for m in q["data"].as_array().unwrap() {
        assert_eq!(m["payload"], json!({}), "{m}");
        assert!(m["eventType"].is_string());
    }
    let (_, one) = server.call("GET", &format!("{base}/{m1}?with_content=false"), None).await;
    assert_eq!(one["payload"], json!({}), "{one}");
    assert_eq!(one["id"], json!(m1));
    let (_, one) = server.call("GET", &format!("{base}/{m1}"), None).await;
    assert_eq!(one["payload"], json!({"t": "a.one"}));
    assert_eq!(one["channels"], json!(["c1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_validation() {
    let server = Server::start("").await;
    let app = server.create_app("v").await;
    let base = format!("/api/v1/app/{app}/msg");
    let cases = [
        (json!({"eventType": "user.created", "payload": [1, 2]}), "payload"),
        (json!({"eventType": "user.created", "payload": "text"}), "payload"),
        (json!({"eventType": "user.created", "payload": 5}), "payload"),
        (json!({"eventType": "user.created", "payload": null}), "payload"),
        (json!({"eventType": "user created", "payload": {}}), "eventType"),
        (json!({"eventType": "", "payload": {}}), "eventType"),
        (json!({"eventType": "x".repeat(257), "payload": {}}), "eventType"),
        (json!({"eventType": "ok", "eventId": "has space", "payload": {}}), "eventId"),
        (json!({"eventType": "ok", "eventId": "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV", "payload": {}}), "eventId"),
        (json!({"eventType": "ok", "channels": [], "payload": {}}), "channels"),
        (json!({"eventType": "ok", "tags": ["a", "b", "c", "d", "e", "f"], "payload": {}}), "tags"),
        (json!({"eventType": "ok", "tags": ["has space"], "payload": {}}), "tags"),
        (json!({"eventType": "ok", "tags": ["x".repeat(129)], "payload": {}}), "tags"),
    ];
    for (body, field) in cases {
        let (status, out) = server.call("POST", &base, Some(body.clone())).await;
        assert_invalid(status, &out, field);
    }
    let (status, out) = server.call("POST", &base, Some(json!({"eventType": "user.created"}))).await;
    assert_error(status, &out, 422, "validation");
    assert!(out["detail"][0]["msg"].as_str().unwrap().contains("payload"), "{out}");
    assert_eq!(ids(&list_all(&server, &base).await), Vec::<String>::new(), "nothing stored");
}

/// Tags take Svix's rule, wider than names' (`order/42`, `#vip`, a backslash): a message
/// carries them, and lists of messages and of attempts filter by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_take_slashes_hashes_and_backslashes() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("tags").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let body = json!({ "eventType": "a.b", "payload": {}, "tags": ["order/42", "#vip", "a\\b"] });
    let (status, tagged) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body)).await;
    assert_eq!(status, 202, "{tagged}");
    let other = server.send_message(&app, "a.b", json!({})).await;
    rx.wait_for(2, Duration::from_secs(15)).await;
    for tag in ["order%2F42", "%23vip", "a%5Cb"] {
        let page =
            server.wait_until(&format!("/api/v1/app/{app}/msg?tag={tag}"), Duration::from_secs(15), |_| true).await;
        assert_eq!(ids(&page), vec![tagged["id"].as_str().unwrap().to_string()], "{tag}: {page}");
        let path = format!("/api/v1/app/{app}/attempt/endpoint/{ep}?tag={tag}");
        let attempts = server
            .wait_until(&path, Duration::from_secs(15), |b| b["data"].as_array().is_some_and(|d| !d.is_empty()))
            .await;
        assert!(attempts["data"].as_array().unwrap().iter().all(|a| a["msgId"] == tagged["id"]), "{tag}: {attempts}");
    }
    assert_ne!(tagged["id"].as_str(), Some(other.as_str()));
    let (status, out) = server.call("GET", &format!("/api/v1/app/{app}/msg?tag=has%20space"), None).await;
    assert_eq!(status, 422, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_destinations_list_matching_endpoints() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("dest").await;
    let (all, _) = server.create_endpoint(&app, json!({"url": format!("{}/all", rx.url), "uid": "all"})).await;
    let (typed, _) = server
        .create_endpoint(&app, json!({"url": format!("{}/typed", rx.url), "filterTypes": ["user.created"]}))
        .await;
    let (_other, _) =
        server.create_endpoint(&app, json!({"url": format!("{}/other", rx.url), "filterTypes": ["other.type"]})).await;
    let (_off, _) = server.create_endpoint(&app, json!({"url": format!("{}/off", rx.url), "disabled": true})).await;
    let (_chan, _) =
        server.create_endpoint(&app, json!({"url": format!("{}/chan", rx.url), "channels": ["only-this"]})).await;

    let msg = server.send_message(&app, "user.created", json!({"hello": "world"})).await;
    let path = format!("/api/v1/app/{app}/msg/{msg}/endpoint");
    let dest = server
        .wait_until(&path, Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| d.len() == 2 && d.iter().all(|e| e["status"] == 0))
        })
        .await;
    assert_eq!(ids(&dest), vec![all.clone(), typed.clone()]);
    assert_eq!(dest["data"][0]["url"], json!(format!("{}/all", rx.url)));
    assert_eq!(dest["data"][0]["uid"], "all");
    assert_eq!(dest["data"][1]["filterTypes"], json!(["user.created"]));
    assert_eq!(dest["done"], true);
    let mut paths: Vec<String> = rx.wait_for(2, Duration::from_secs(10)).await.into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(paths, vec!["/all", "/typed"]);

    // Attempts are visible by message, by endpoint and one by one.
    let attempts = list_all(&server, &format!("/api/v1/app/{app}/attempt/msg/{msg}")).await;
    assert_eq!(attempts["data"].as_array().unwrap().len(), 2, "{attempts}");
    let a = &attempts["data"][0];
    assert_eq!(a["msgId"], json!(msg));
    assert_eq!(a["responseStatusCode"], 200);
    assert_eq!(a["status"], 0);
    let by_ep = list_all(&server, &format!("/api/v1/app/{app}/attempt/endpoint/{all}")).await;
    assert_eq!(by_ep["data"].as_array().unwrap().len(), 1, "{by_ep}");
    assert_eq!(by_ep["data"][0]["endpointId"], json!(all));
    let att = by_ep["data"][0]["id"].as_str().unwrap();
    let (status, one) = server.call("GET", &format!("/api/v1/app/{app}/msg/{msg}/attempt/{att}"), None).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one, by_ep["data"][0]);

    let (status, body) = server.call("GET", &format!("/api/v1/app/{app}/msg/msg_nope/endpoint"), None).await;
    assert_error(status, &body, 404, "not_found");
}

/// Svix's raw payloads (`transformationsParams.rawPayload`, `headers.content-type`): checked
/// field by field, then sent byte for byte with their content type, signed as sent, and
/// answered as the text they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_payloads_are_checked_then_sent_as_they_are() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("raw").await;
    let (_, secret) = server.create_endpoint(&app, json!({"url": rx.url})).await;
    let path = format!("/api/v1/app/{app}/msg");
    const TYPE: &str = "transformationsParams.headers.content-type";
    let raw_with = |content_type: Value| json!({"rawPayload": "x", "headers": {"content-type": content_type}});
    let cases = [
        (json!("x"), "transformationsParams"),
        (json!({"rawPayload": 5}), "transformationsParams.rawPayload"),
        (json!({"rawPayload": {"a": 1}}), "transformationsParams.rawPayload"),
        (json!({"rawPayload": "a\u{0}b"}), "transformationsParams.rawPayload"),
        // JSON nested deeper than a payload may be (answers would show it as JSON).
        (json!({"rawPayload": format!("{}{}", "[".repeat(110), "]".repeat(110))}), "transformationsParams.rawPayload"),
        (json!({"rawPayload": "x", "headers": ["content-type"]}), "transformationsParams.headers"),
        (raw_with(json!(7)), TYPE),
        (raw_with(json!("")), TYPE),
        (raw_with(json!("plain")), TYPE),
        (raw_with(json!("text/plain\r\nx-injected: 1")), TYPE),
        (raw_with(json!(format!("text/{}", "x".repeat(300)))), TYPE),
        // A content type without a raw payload is checked as well.
        (json!({"headers": {"content-type": "text/plain; charset=\u{e9}"}}), TYPE),
    ];
    for (params, field) in cases {
        let body = json!({"eventType": "raw.text", "payload": {}, "transformationsParams": params});
        let (status, out) = server.call("POST", &path, Some(body)).await;
        assert_invalid(status, &out, field);
    }
    // Without a raw payload, `payload` is the body, and must be an object.
    let no_raw = json!({"eventType": "raw.text", "payload": "", "transformationsParams": {"headers": {}}});
    let (status, out) = server.call("POST", &path, Some(no_raw)).await;
    assert_invalid(status, &out, "payload");
    assert_eq!(ids(&list_all(&server, &path).await), Vec::<String>::new(), "nothing stored");

    // A form, as Svix's Java SDK posts a raw payload (`payload: ""`), its header named in
    // another case: sent as it is, with its type.
    let form = "a=1&b=%20two&c=\u{e9}";
    let body = json!({
        "eventType": "raw.form",
        "payload": "",
        "transformationsParams": {"rawPayload": form, "headers": {"Content-Type": " application/x-www-form-urlencoded "}},
    });
    let (status, posted) = server.call("POST", &path, Some(body)).await;
    assert_eq!(status, 202, "{posted}");
    let form_id = id_of(&posted);
    // A JSON payload with a content type of its own.
    let body = json!({
        "eventType": "raw.vnd",
        "payload": {"k": 1},
        "transformationsParams": {"headers": {"content-type": "application/vnd.acme+json"}},
    });
    let (status, vnd) = server.call("POST", &path, Some(body)).await;
    assert_eq!(status, 202, "{vnd}");
    let vnd_id = id_of(&vnd);

    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    let by_id = |id: &str| got.iter().find(|r| r.header("webhook-id") == id).unwrap_or_else(|| panic!("{id} not sent"));
    let sent = by_id(&form_id);
    assert_eq!(String::from_utf8_lossy(&sent.body), form, "the exact text");
    assert_eq!(sent.header("content-type"), "application/x-www-form-urlencoded");
    assert!(signature_valid(&secret, sent), "signed over the bytes sent");
    let sent = by_id(&vnd_id);
    assert_eq!(String::from_utf8_lossy(&sent.body), r#"{"k":1}"#);
    assert_eq!(sent.header("content-type"), "application/vnd.acme+json");
    assert!(signature_valid(&secret, sent));

    // Answered (when posted, and read) as the text it is, with its type.
    for shown in [posted, list_all(&server, &format!("{path}/{form_id}")).await] {
        assert_eq!(shown["payload"], json!(form), "{shown}");
        assert_eq!(shown["payloadEncoding"], "string", "{shown}");
        assert_eq!(shown["contentType"], "application/x-www-form-urlencoded", "{shown}");
    }
    for shown in [vnd, list_all(&server, &format!("{path}/{vnd_id}")).await] {
        assert_eq!(shown["payload"], json!({"k": 1}), "{shown}");
        assert!(shown.get("payloadEncoding").is_none(), "{shown}");
        assert_eq!(shown["contentType"], "application/vnd.acme+json", "{shown}");
    }
    // Text that is no JSON may hold any brackets.
    let brackets = json!({"rawPayload": format!("{}x", "[".repeat(110))});
    let body = json!({"eventType": "raw.text", "payload": {}, "transformationsParams": brackets});
    assert_eq!(server.call("POST", &path, Some(body)).await.0, 202);
}

/// Where an answer shows the item a test looks at (given the endpoint it is about).
type ShownItem = fn(&Value, &str) -> Value;

/// What a transformation cancelled reads as canceled (4) only where asked with Svix's
/// `expanded_statuses=true`, and as a success (0) otherwise, on every read that shows a
/// status; attempt lists show the response unless asked `with_content=false` (`{}` then),
/// and `with_msg` never shows the message's payload. Svix's older path for a message's
/// attempts to one endpoint lists those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_reads_show_canceled_when_asked_and_responses_unless_told() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("statuses").await;
    let (cancel, _) = server.create_endpoint(&app, json!({"url": format!("{}/c", rx.url), "uid": "cancel"})).await;
    let code = json!({"code": "function handler(w) { w.cancel = true; return w }", "enabled": true});
    let a = format!("/api/v1/app/{app}");
    let (status, out) = server.call("PATCH", &format!("{a}/endpoint/{cancel}/transformation"), Some(code)).await;
    assert_eq!(status, 204, "{out}");
    let (plain, _) = server.create_endpoint(&app, json!({"url": format!("{}/p", rx.url), "uid": "plain"})).await;
    let msg = server.send_message(&app, "order.paid", json!({"order": 7})).await;
    rx.wait_for(1, Duration::from_secs(10)).await;
    let attempts = server
        .wait_until(&format!("{a}/attempt/msg/{msg}?expanded_statuses=true"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| d.len() == 2 && d.iter().any(|a| a["status"] == 4))
        })
        .await;
    let cancelled = attempts["data"].as_array().unwrap().iter().find(|a| a["endpointId"] == json!(cancel)).unwrap();
    let att = cancelled["id"].as_str().unwrap().to_string();

    // Each read that shows the canceled delivery or attempt, and where in its answer.
    let reads: Vec<(String, ShownItem)> = vec![
        (format!("{a}/attempt/msg/{msg}?endpoint_id=cancel"), |b, _| b["data"][0].clone()),
        (format!("{a}/attempt/endpoint/cancel"), |b, _| b["data"][0].clone()),
        (format!("{a}/msg/{msg}/attempt?endpoint_id=cancel"), |b, _| b["data"][0].clone()),
        (format!("{a}/msg/{msg}/endpoint/cancel/attempt"), |b, _| b["data"][0].clone()),
        (format!("{a}/msg/{msg}/attempt/{att}"), |b, _| b.clone()),
        (format!("{a}/endpoint/cancel/msg"), |b, _| b["data"][0].clone()),
        (format!("{a}/msg/{msg}/endpoint"), |b, ep| {
            b["data"].as_array().unwrap().iter().find(|d| d["id"] == ep).cloned().unwrap_or_default()
        }),
    ];
    for (path, item) in &reads {
        let sep = if path.contains('?') { '&' } else { '?' };
        for (query, want) in [
            ("", (0, "success")),
            ("expanded_statuses=false", (0, "success")),
            ("expanded_statuses=true", (4, "canceled")),
        ] {
            let url = if query.is_empty() { path.clone() } else { format!("{path}{sep}{query}") };
            let body = list_all(&server, &url).await;
            let shown = item(&body, &cancel);
            assert_eq!((&shown["status"], &shown["statusText"]), (&json!(want.0), &json!(want.1)), "{url}: {body}");
        }
        let (status, body) = server.call("GET", &format!("{path}{sep}expanded_statuses=maybe"), None).await;
        assert_error(status, &body, 422, "validation");
        assert_eq!(body["detail"][0]["loc"], json!(["query", "expanded_statuses"]), "{path}");
    }
    // The status filter reads what the delivery is, whichever way it is shown.
    let filtered = list_all(&server, &format!("{a}/attempt/endpoint/cancel?status=4")).await;
    assert_eq!(ids(&filtered), vec![att.clone()]);

    // Responses: shown unless asked `with_content=false`, in every attempt list; one attempt
    // always shows it.
    for path in [
        format!("{a}/attempt/msg/{msg}?endpoint_id=cancel"),
        format!("{a}/attempt/endpoint/cancel"),
        format!("{a}/msg/{msg}/attempt?endpoint_id=cancel"),
        format!("{a}/msg/{msg}/endpoint/cancel/attempt"),
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        for query in ["", "with_content=true"] {
            let url = if query.is_empty() { path.clone() } else { format!("{path}{sep}{query}") };
            let body = list_all(&server, &url).await;
            let response = body["data"][0]["response"].as_str().unwrap_or_default();
            assert!(response.contains("cancelled"), "{url}: {body}");
        }
        let body = list_all(&server, &format!("{path}{sep}with_content=false")).await;
        assert_eq!(body["data"][0]["response"], "{}", "{path}: {body}");
    }
    let one = list_all(&server, &format!("{a}/msg/{msg}/attempt/{att}?with_content=false")).await;
    assert!(one["response"].as_str().is_some_and(|r| r.contains("cancelled")), "{one}");
    // `with_msg`: the message, never its payload, whatever `with_content` asks.
    for query in ["with_msg=true", "with_msg=true&with_content=true", "with_msg=true&with_content=false"] {
        let body = list_all(&server, &format!("{a}/attempt/endpoint/cancel?{query}")).await;
        let shown = &body["data"][0]["msg"];
        assert_eq!((&shown["id"], &shown["payload"]), (&json!(msg), &json!({})), "{query}: {body}");
    }
    // Message reads keep their `with_content`: the payload unless asked not to.
    for path in [format!("{a}/msg"), format!("{a}/endpoint/cancel/msg")] {
        let body = list_all(&server, &path).await;
        assert_eq!(body["data"][0]["payload"], json!({"order": 7}), "{path}: {body}");
        let body = list_all(&server, &format!("{path}?with_content=false")).await;
        assert_eq!(body["data"][0]["payload"], json!({}), "{path}: {body}");
    }

    // The older path lists the message's attempts to the endpoint it names (id or uid), in
    // the shape of the newer one's.
    for (key, id, code) in [("cancel", &cancel, 0), (plain.as_str(), &plain, 200)] {
        let body = list_all(&server, &format!("{a}/msg/{msg}/endpoint/{key}/attempt")).await;
        let items = body["data"].as_array().unwrap_or_else(|| panic!("{body}"));
        assert_eq!(items.len(), 1, "{key}: {body}");
        assert_eq!((&items[0]["endpointId"], &items[0]["responseStatusCode"]), (&json!(id), &json!(code)), "{body}");
        assert_eq!(body["done"], true);
        let newer = list_all(&server, &format!("{a}/attempt/msg/{msg}?endpoint_id={key}")).await;
        assert_eq!(body["data"], newer["data"], "{key}");
    }
    let (status, body) = server.call("GET", &format!("{a}/msg/{msg}/endpoint/ep_nope/attempt"), None).await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = server.call("GET", &format!("{a}/msg/msg_nope/endpoint/cancel/attempt"), None).await;
    assert_error(status, &body, 404, "not_found");
}

/// A message's destinations are paged like every list: by endpoint id, oldest first, with
/// `limit` and `iterator` (and `prevIterator`, and `order`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempted_destinations_are_paged() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("paged").await;
    let mut endpoints = Vec::new();
    for n in 0..3 {
        endpoints.push(server.create_endpoint(&app, json!({"url": format!("{}/{n}", rx.url)})).await.0);
    }
    endpoints.sort();
    let msg = server.send_message(&app, "order.paid", json!({"order": 1})).await;
    let path = format!("/api/v1/app/{app}/msg/{msg}/endpoint");
    let all =
        server.wait_until(&path, Duration::from_secs(10), |b| b["data"].as_array().is_some_and(|d| d.len() == 3)).await;
    assert_eq!((ids(&all), &all["done"]), (endpoints.clone(), &json!(true)));

    let first = list_all(&server, &format!("{path}?limit=2")).await;
    assert_eq!((ids(&first), &first["done"]), (endpoints[..2].to_vec(), &json!(false)), "{first}");
    assert_eq!(first["iterator"], json!(endpoints[1]));
    let second = list_all(&server, &format!("{path}?limit=2&iterator={}", endpoints[1])).await;
    assert_eq!((ids(&second), &second["done"]), (endpoints[2..].to_vec(), &json!(true)), "{second}");
    let prev = second["prevIterator"].as_str().expect("a prevIterator");
    let back = list_all(&server, &format!("{path}?limit=2&iterator={prev}")).await;
    assert_eq!((ids(&back), &back["done"]), (endpoints[..2].to_vec(), &json!(true)), "{back}");
    let newest = list_all(&server, &format!("{path}?limit=2&order=descending")).await;
    assert_eq!(ids(&newest), vec![endpoints[2].clone(), endpoints[1].clone()]);
    let (status, body) = server.call("GET", &format!("{path}?limit=0"), None).await;
    assert_error(status, &body, 422, "validation");
}

// --- 5. idempotency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_first_answer() {
    let server = Server::start("").await;
    let app = server.create_app("idem").await;
    let path = format!("/api/v1/app/{app}/msg");
    let post = |key: &str, token: &str, payload: Value| {
        request(&server, Some(token), "POST", &path)
            .header("idempotency-key", key.to_string())
            .json(&json!({"eventType": "order.paid", "payload": payload}))
    };

    let first = send(post("key-1", ADMIN, json!({"n": 1}))).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let second = send(post("key-1", ADMIN, json!({"n": 1}))).await;
    assert_eq!(second.status, 202, "{}", second.text);
    assert_eq!(second.text, first.text, "the replay is the first answer, byte for byte");
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.header("content-type"), Some("application/json"));
    // Another body under the same key is another request: refused, not answered with the
    // first response (which would tell the client its new request was done).
    let third = send(post("key-1", ADMIN, json!({"n": 99}))).await;
    assert_error(third.status, &third.json(), 422, "idempotency_mismatch");
    // In the shape of every 422 (Svix's validation error), so that SDKs parse it.
    assert_eq!(third.json()["detail"][0]["loc"], json!(["header", "idempotency-key"]), "{}", third.text);
    assert!(third.json()["detail"][0]["msg"].as_str().is_some_and(|m| m.contains("another body")), "{}", third.text);
    // The trailing slash does not make it another request.
    let slash = send(
        request(&server, Some(ADMIN), "POST", &format!("{path}/"))
            .header("idempotency-key", "key-1")
            .json(&json!({"eventType": "order.paid", "payload": {"n": 1}})),
    )
    .await;
    assert_eq!(slash.text, first.text);
    let list = list_all(&server, &path).await;
    assert_eq!(ids(&list), vec![id_of(&first.json())], "only one message was created");

    // Another key is another request.
    let other = send(post("key-2", ADMIN, json!({"n": 2}))).await;
    assert_eq!(other.status, 202, "{}", other.text);
    assert_eq!(other.header("idempotent-replayed"), None);
    assert_ne!(other.json()["id"], first.json()["id"]);

    // The same key from another credential is its own scope.
    let token = server.app_token(&app).await;
    let scoped = send(post("key-1", &token, json!({"n": 3}))).await;
    assert_eq!(scoped.status, 202, "{}", scoped.text);
    assert_eq!(scoped.header("idempotent-replayed"), None);
    assert_ne!(scoped.json()["id"], first.json()["id"]);
    let scoped_again = send(post("key-1", &token, json!({"n": 3}))).await;
    assert_eq!(scoped_again.text, scoped.text);
    assert_eq!(scoped_again.header("idempotent-replayed"), Some("true"));
    assert_eq!(ids(&list_all(&server, &path).await).len(), 3);

    // Keys longer than 256 characters are refused; 256 is fine.
    let long = send(post(&"k".repeat(257), ADMIN, json!({"n": 4}))).await;
    assert_error(long.status, &long.json(), 400, "bad_request");
    // Visible characters only: a space or a tab is refused, as the error says.
    for spaced in ["a b", "a\tb"] {
        let refused = send(post(spaced, ADMIN, json!({"n": 4}))).await;
        assert_error(refused.status, &refused.json(), 400, "bad_request");
    }
    let max = send(post(&"k".repeat(256), ADMIN, json!({"n": 5}))).await;
    assert_eq!(max.status, 202, "{}", max.text);
    assert_eq!(ids(&list_all(&server, &path).await).len(), 4);

    // Keys work on other POSTs too: creating an application twice makes one.
    let create = || {
        request(&server, Some(ADMIN), "POST", "/api/v1/app")
            .header("idempotency-key", "app-key")
            .json(&json!({"name": "once"}))
    };
    let a = send(create()).await;
    let b = send(create()).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(b.status, 201);
    assert_eq!(a.text, b.text);
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await).len(), 2);
    // A refusal is not kept: the corrected retry with the same key runs.
    let refused = send(
        request(&server, Some(ADMIN), "POST", &path)
            .header("idempotency-key", "key-fix")
            .json(&json!({"eventType": "bad type!", "payload": {}})),
    )
    .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    let fixed = send(post("key-fix", ADMIN, json!({"n": 0}))).await;
    assert_eq!((fixed.status, fixed.header("idempotent-replayed")), (202, None), "{}", fixed.text);
    let again = send(post("key-fix", ADMIN, json!({"n": 0}))).await;
    assert_eq!((&again.text, again.header("idempotent-replayed")), (&fixed.text, Some("true")));
}

/// A created message's kept answer holds no copy of its payload: a replay after the
/// message's content was expunged answers it without, as reading the message does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expunged_payload_is_not_replayed() {
    let server = Server::start("").await;
    let app = server.create_app("idem-expunge").await;
    let path = format!("/api/v1/app/{app}/msg");
    let post = |query: &str| {
        request(&server, Some(ADMIN), "POST", &format!("{path}{query}"))
            .header("idempotency-key", "card")
            .json(&json!({"eventType": "card.added", "payload": {"card": "4242-4242", "n": 1e3}}))
    };
    let first = send(post("")).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert!(first.text.contains("4242-4242"), "{}", first.text);
    let replayed = send(post("")).await;
    assert_eq!((&replayed.text, replayed.header("idempotent-replayed")), (&first.text, Some("true")));
    // The application named with a percent-encoded character (`%61` is `a`): the message is
    // still found for the replay, which is the first answer.
    let encoded = || {
        let path = format!("/api/v1/app/%61{}/msg", app.strip_prefix('a').expect("app_…"));
        request(&server, Some(ADMIN), "POST", &path)
            .header("idempotency-key", "card-encoded")
            .json(&json!({"eventType": "card.added", "payload": {"card": "4242-4242"}}))
    };
    let (once, twice) = (send(encoded()).await, send(encoded()).await);
    assert_eq!(once.status, 202, "{}", once.text);
    assert_eq!((&twice.text, twice.header("idempotent-replayed")), (&once.text, Some("true")));
    let id = id_of(&first.json());
    let (status, body) = server.call("DELETE", &format!("{path}/{id}/content"), None).await;
    assert_eq!(status, 204, "{body}");
    let after = send(post("")).await;
    assert_eq!((after.status, after.header("idempotent-replayed")), (202, Some("true")), "{}", after.text);
    assert!(!after.text.contains("4242"), "{}", after.text);
    assert_eq!((&after.json()["id"], &after.json()["payload"]), (&json!(id), &json!({})), "{}", after.text);
    assert_eq!(after.json()["eventType"], "card.added");
    // Asked without content, the answer is made as asked, replayed alike.
    let without = send(post("?with_content=false")).await;
    assert_eq!((without.status, &without.json()["payload"]), (202, &json!({})), "{}", without.text);
    let again = send(post("?with_content=false")).await;
    assert_eq!((&again.text, again.header("idempotent-replayed")), (&without.text, Some("true")));

    // An endpoint's example message given its own payload: alike.
    let (ep, _) = server.create_endpoint(&app, json!({ "url": "https://example.com/hook" })).await;
    let example = || {
        request(&server, Some(ADMIN), "POST", &format!("/api/v1/app/{app}/endpoint/{ep}/send-example"))
            .header("idempotency-key", "example")
            .json(&json!({"eventType": "svix.ping", "payload": {"card": "5555-4444"}}))
    };
    let first = send(example()).await;
    assert_eq!(first.status, 202, "{}", first.text);
    assert!(first.text.contains("5555-4444"), "{}", first.text);
    let replayed = send(example()).await;
    assert_eq!((&replayed.text, replayed.header("idempotent-replayed")), (&first.text, Some("true")));
    let id = id_of(&first.json());
    assert_eq!(server.call("DELETE", &format!("{path}/{id}/content"), None).await.0, 204);
    let after = send(example()).await;
    assert_eq!((after.status, after.header("idempotent-replayed")), (202, Some("true")), "{}", after.text);
    assert_eq!((&after.json()["id"], &after.json()["payload"]), (&json!(id), &json!({})), "{}", after.text);
}

/// A request runs to its end when its client stops waiting, and a retry sent while it runs
/// waits for it and gets its answer (as Svix's server does, for its SDKs' retries after a
/// timeout) instead of 409: it never runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keeps_the_answer_of_a_request_whose_client_left() {
    let server = Server::start("").await;
    let app = server.create_app("idem").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": "https://example.com/hook" })).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/preview");
    // A preview whose transformation takes 200 ms (previews allow 250).
    let code = "function handler(w) { const t = Date.now(); while (Date.now() - t < 200) {} return w }";
    let body = json!({ "payload": { "n": 1 }, "transformation": code }).to_string();
    // Sent by hand, and the connection dropped while the request runs. A retry that came
    // first and took the key itself proves nothing: the round is played again with a new key.
    use tokio::io::AsyncWriteExt;
    let addr = server.base.trim_start_matches("http://").to_string();
    // (A busy machine may take either order in a round: rounds are cheap.)
    for round in 0..20 {
        let key = format!("left-{round}");
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\n\
             idempotency-key: {key}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.expect("write");
        // Its head start: the retry coming first proves nothing.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let retry = || {
            request(&server, Some(ADMIN), "POST", &path)
                .header("idempotency-key", key.as_str())
                .header("content-type", "application/json")
                .body(body.clone())
        };
        // The first request is running (a 200 ms transformation): its client goes away, and
        // the retry comes while it runs.
        drop(tcp);
        let started = std::time::Instant::now();
        let again = send(retry()).await;
        assert_eq!(again.status, 200, "{}", again.text);
        if again.header("idempotent-replayed") == Some("true") {
            assert!(started.elapsed() < Duration::from_secs(10), "the retry waited past the first request's end");
            return;
        }
        // The retry took the key first (the machine was slow to read the first request):
        // another round.
    }
    panic!("no round's retry met the first request running");
}

/// A created message's answer is kept without its payload, so a message whose answer is
/// over the 1 MiB kept at most is replayed all the same (made again from the message, in
/// full). An answer too large to keep as it is (an event type echoing its schemas) is still
/// given in full; its retries are refused rather than run again. The query is part of the
/// request a key names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_never_runs_a_request_twice_whose_answer_was_too_large_to_keep() {
    let server = Server::start("max_body_bytes = 3145728").await;
    let app = server.create_app("idem").await;
    let path = format!("/api/v1/app/{app}/msg");
    let body = json!({ "eventType": "big", "payload": { "blob": "x".repeat(1_100_000) } });
    let post = |path: String| request(&server, Some(ADMIN), "POST", &path).header("idempotency-key", "big").json(&body);
    let first = send(post(path.clone())).await;
    assert_eq!(first.status, 202, "{}", &first.text[..first.text.len().min(300)]);
    assert_eq!(first.json()["payload"]["blob"].as_str().map(str::len), Some(1_100_000), "the whole answer");
    let again = send(post(path.clone())).await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (202, Some("true")),
        "{}",
        &again.text[..again.text.len().min(300)]
    );
    assert!(again.text == first.text, "the replay is not the first answer, byte for byte");
    assert_eq!(ids(&list_all(&server, &path).await).len(), 1, "one message");
    // Without the content: another request, kept and replayed.
    let lean = format!("{path}?with_content=false");
    let first = send(post(lean.clone())).await;
    assert_eq!((first.status, first.header("idempotent-replayed")), (202, None), "{}", first.text);
    let again = send(post(lean)).await;
    assert_eq!((&again.text, again.header("idempotent-replayed")), (&first.text, Some("true")));
    assert_eq!(ids(&list_all(&server, &path).await).len(), 2);

    // An event type is kept as it is answered, with its schemas: over 1 MiB, it is not.
    let schemas = json!({ "1": { "type": "object", "description": "x".repeat(1_100_000) } });
    let event_type = json!({ "name": "big.schema", "description": "big", "schemas": schemas });
    let create = || {
        request(&server, Some(ADMIN), "POST", "/api/v1/event-type").header("idempotency-key", "big").json(&event_type)
    };
    let first = send(create()).await;
    assert_eq!(first.status, 201, "{}", &first.text[..first.text.len().min(300)]);
    assert_eq!(first.json()["schemas"], schemas, "the whole answer");
    let again = send(create()).await;
    assert_error(again.status, &again.json(), 409, "idempotency_answer_not_kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_does_not_store_auth_failures() {
    let server = Server::start("").await;
    let app = server.create_app("idem").await;
    let path = format!("/api/v1/app/{app}/msg");
    let body = json!({"eventType": "order.paid", "payload": {}});
    let denied = send(request(&server, Some("wrong"), "POST", &path).header("idempotency-key", "k").json(&body)).await;
    assert_error(denied.status, &denied.json(), 401, "authentication_failed");
    let again = send(request(&server, Some("wrong"), "POST", &path).header("idempotency-key", "k").json(&body)).await;
    assert_eq!(again.status, 401);
    assert_eq!(again.header("idempotent-replayed"), None);
    assert_eq!(ids(&list_all(&server, &path).await), Vec::<String>::new());

    // A kept answer is not replayed to its token once that token no longer works.
    let (_, portal) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{app}"), None).await;
    let token = portal["token"].as_str().expect("token").to_string();
    let post = || request(&server, Some(&token), "POST", &path).header("idempotency-key", "t").json(&body);
    let first = send(post()).await;
    assert_eq!(first.status, 202, "{}", first.json());
    let replayed = send(post()).await;
    assert_eq!((replayed.status, replayed.header("idempotent-replayed")), (202, Some("true")));
    let (status, out) = server.call("POST", &format!("/api/v1/auth/app/{app}/expire-all"), Some(json!({}))).await;
    assert!(status < 300, "{status} {out}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = send(post()).await;
    assert_error(refused.status, &refused.json(), 401, "authentication_failed");
    assert_eq!(refused.header("idempotent-replayed"), None);
}

/// A request with an `Idempotency-Key` but no working token is refused before its body is
/// read or its key written: a client that announced 2 MiB and sent 10 bytes is answered
/// 401 at once (not after `request_read_timeout`, 30 s), and the key is free for the
/// real request afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_checks_the_token_before_reading_anything() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start("").await;
    let app = server.create_app("idem").await;
    let path = format!("/api/v1/app/{app}/msg");
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer wrong\r\ncontent-type: application/json\r\n\
         idempotency-key: k\r\ncontent-length: 2097152\r\n\r\n{{\"eventType\""
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .expect("answered before the body came")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("authentication_failed"), "{answer}");
    let body = json!({"eventType": "order.paid", "payload": {}});
    let first = send(request(&server, Some(ADMIN), "POST", &path).header("idempotency-key", "k").json(&body)).await;
    assert_eq!(first.status, 202, "{}", first.json());
    assert_eq!(first.header("idempotent-replayed"), None);
}

/// A message stored by a request whose answer was not kept (here the store refuses to keep
/// it; in life, the process died between the two writes) is answered to the retry, as a
/// replay of the first answer: neither a 409 while the key stays held nor, after its lease,
/// a second message, which receivers could not tell from the first (another id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_answers_the_message_of_a_request_whose_answer_was_not_kept_sqlite() {
    let server = Server::start("").await;
    let path = server.data_dir().join("data").join("hooklane.db");
    let db = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE).expect("open");
    db.execute_batch(
        "CREATE TRIGGER refuse BEFORE UPDATE ON idempotency_keys FOR EACH ROW WHEN NEW.done \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .expect("trigger");
    the_message_of_a_request_whose_answer_was_not_kept_is_answered(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_answers_the_message_of_a_request_whose_answer_was_not_kept_postgres() {
    let db = hooklane_store::postgres::testing::TestDatabase::create().await;
    let server = Server::start(&format!("database_url = \"{}\"", db.url())).await;
    let (pg, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    pg.batch_execute(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'refused by the test'; END $$; \
         CREATE TRIGGER refuse BEFORE UPDATE ON idempotency_keys FOR EACH ROW WHEN (NEW.done) \
           EXECUTE FUNCTION refuse();",
    )
    .await
    .expect("trigger");
    the_message_of_a_request_whose_answer_was_not_kept_is_answered(&server).await;
}

async fn the_message_of_a_request_whose_answer_was_not_kept_is_answered(server: &Server) {
    let app = server.create_app("idem").await;
    let path = format!("/api/v1/app/{app}/msg");
    let body = json!({"eventType": "order.paid", "payload": {"n": 1}});
    let post = || request(server, Some(ADMIN), "POST", &path).header("idempotency-key", "once").json(&body);
    let first = send(post()).await;
    assert_eq!(first.status, 202, "{}", first.json());
    assert_eq!(first.header("idempotent-replayed"), None);
    for _ in 0..2 {
        let again = send(post()).await;
        assert_eq!(again.status, 202, "{}", again.json());
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
        assert_eq!(again.json(), first.json(), "the first answer");
    }
    assert_eq!(ids(&list_all(server, &path).await), vec![first.json()["id"].as_str().unwrap().to_string()]);
    // Another key is another message.
    let other = send(request(server, Some(ADMIN), "POST", &path).header("idempotency-key", "twice").json(&body)).await;
    assert_eq!(other.status, 202, "{}", other.json());
    assert_ne!(other.json()["id"], first.json()["id"]);
}

/// A change whose client left before its answer still clears the tenant cache once it is
/// made: the next message fans out to the new endpoint, not to the endpoints cached before
/// (for `tenant_cache_ttl`, ten minutes here). The request went on without its client: by
/// itself with an `Idempotency-Key`, and without one because the store goes on with the
/// write it was handed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_created_by_a_request_whose_client_left_gets_messages() {
    endpoint_created_by_a_request_whose_client_left_gets_messages(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_created_by_an_idempotent_request_whose_client_left_gets_messages() {
    endpoint_created_by_a_request_whose_client_left_gets_messages(Some("left")).await;
}

async fn endpoint_created_by_a_request_whose_client_left_gets_messages(key: Option<&str>) {
    use tokio::io::AsyncWriteExt;
    let db = hooklane_store::postgres::testing::TestDatabase::create().await;
    let server = Server::start(&format!("tenant_cache_ttl = \"10m\"\ndatabase_url = \"{}\"", db.url())).await;
    let app = server.create_app("left").await;
    let (old, _) = server.create_endpoint(&app, json!({ "url": "https://example.com/old" })).await;
    // The cache now holds the application's one endpoint.
    let first = server.send_message(&app, "order.created", json!({ "n": 1 })).await;
    let server = &server;
    let destinations = |msg: String| {
        let path = format!("/api/v1/app/{app}/msg/{msg}/endpoint");
        async move { ids(&list_all(server, &path).await) }
    };
    assert_eq!(destinations(first).await, vec![old.clone()]);

    // Inserting an endpoint now takes a second: its client leaves while it runs.
    let (pg, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    pg.batch_execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           PERFORM pg_sleep(1); RETURN NEW; END $$; \
         CREATE TRIGGER slow BEFORE INSERT ON endpoints FOR EACH ROW EXECUTE FUNCTION slow();",
    )
    .await
    .expect("trigger");
    let addr = server.base.trim_start_matches("http://").to_string();
    let body = json!({ "url": "https://example.com/new" }).to_string();
    let key = key.map(|k| format!("idempotency-key: {k}\r\n")).unwrap_or_default();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/app/{app}/endpoint HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN}\r\n\
         content-type: application/json\r\n{key}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let inserting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND state = 'active' AND query LIKE 'INSERT INTO endpoints%'";
    while pg.query_one(inserting, &[]).await.expect("activity").get::<_, i64>(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "the endpoint was never being inserted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(tcp);

    // The endpoint is created all the same…
    let path = format!("/api/v1/app/{app}/endpoint");
    let listed = server.wait_until(&path, Duration::from_secs(10), |list| ids(list).len() == 2).await;
    let new = listed["data"]
        .as_array()
        .and_then(|eps| eps.iter().find(|ep| ep["url"] == "https://example.com/new"))
        .map(id_of)
        .unwrap_or_else(|| panic!("the endpoint was not created: {listed}"));
    // …and the cache cleared once it was: a message posted after it is sent to it. (The
    // handler clears just after its insert shows, so a message may come in between: it is
    // posted again for a moment, far shorter than the cache's ten minutes.)
    let mut want = vec![old, new];
    want.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = server.send_message(&app, "order.created", json!({ "n": 2 })).await;
        let mut got = destinations(msg).await;
        got.sort();
        if got == want || std::time::Instant::now() > deadline {
            assert_eq!(got, want, "a message posted after the endpoint was created is not sent to it");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- 6. authentication and tenant isolation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_401() {
    let server = Server::start("").await;
    let app = server.create_app("auth").await;
    for (method, path) in [
        ("GET", "/api/v1/app".to_string()),
        ("POST", "/api/v1/app".to_string()),
        ("GET", format!("/api/v1/app/{app}")),
        ("GET", format!("/api/v1/app/{app}/endpoint")),
        ("POST", format!("/api/v1/app/{app}/msg")),
        ("GET", "/api/v1/event-type".to_string()),
        ("POST", format!("/api/v1/auth/app-portal-access/{app}")),
    ] {
        let body = json!({"name": "x", "eventType": "x", "payload": {}});
        let none = send(request(&server, None, method, &path).json(&body)).await;
        assert_error(none.status, &none.json(), 401, "authentication_failed");
        for auth in ["Bearer wrong-token", "Bearer ", "Basic dGVzdA==", ADMIN, &format!("Token {ADMIN}")] {
            let resp = send(request(&server, None, method, &path).header("authorization", auth).json(&body)).await;
            assert_error(resp.status, &resp.json(), 401, "authentication_failed");
        }
    }
    // The lowercase scheme is accepted; health needs no token.
    let ok =
        send(request(&server, None, "GET", "/api/v1/app").header("authorization", format!("bearer {ADMIN}"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let health = send(request(&server, None, "GET", "/api/v1/health")).await;
    assert_eq!(health.status, 204);
    // Nothing was created by the refused requests.
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await), vec![app.clone()]);
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{app}/msg")).await), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_token_works_on_its_own_app() {
    let server = Server::start("").await;
    let own = create_app_with(&server, json!({"name": "Own", "uid": "own"})).await;
    let own_id = id_of(&own);
    let _other = server.create_app("other").await;
    server.call("POST", "/api/v1/event-type", Some(json!({"name": "user.created"}))).await;

    let (status, access) = server.call("POST", "/api/v1/auth/app-portal-access/own", None).await;
    assert_eq!(status, 200, "{access}");
    assert_eq!(keys(&access), set(&["url", "token"]));
    let token = access["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("appsk_") && token.len() > 30, "{token}");
    assert!(access["url"].as_str().unwrap().ends_with(&format!("#token={token}")), "{access}");
    let (status, body) = server.call("POST", "/api/v1/auth/app-portal-access/no-such-app", None).await;
    assert_error(status, &body, 404, "not_found");
    // With `application`, a missing application is created under the path's uid (Svix's
    // behaviour); an existing one is left as it is.
    let (status, access) = server
        .call("POST", "/api/v1/auth/app-portal-access/new-app", Some(json!({"application": {"name": "New"}})))
        .await;
    assert_eq!(status, 200, "{access}");
    let (status, created) = server.call("GET", "/api/v1/app/new-app", None).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!((&created["name"], &created["uid"]), (&json!("New"), &json!("new-app")));
    let new_token = access["token"].as_str().unwrap();
    let (status, got) = server.call_as(new_token, "GET", "/api/v1/app/new-app", None).await;
    assert_eq!((status, &got["id"]), (200, &created["id"]));
    let (status, access) = server
        .call("POST", "/api/v1/auth/app-portal-access/own", Some(json!({"application": {"name": "Ignored"}})))
        .await;
    assert_eq!(status, 200, "{access}");
    assert_eq!(server.call("GET", "/api/v1/app/own", None).await.1["name"], "Own");
    let (status, body) =
        server.call("POST", "/api/v1/auth/app-portal-access/bad", Some(json!({"application": {"name": ""}}))).await;
    assert_error(status, &body, 422, "validation");

    let (status, got) = server.call_as(&token, "GET", &format!("/api/v1/app/{own_id}"), None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, own);
    let (status, got) = server.call_as(&token, "GET", "/api/v1/app/own", None).await;
    assert_eq!(status, 200);
    assert_eq!(got["id"], json!(own_id));
    let (status, list) = server.call_as(&token, "GET", "/api/v1/app", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(&list), vec![own_id.clone()]);
    assert_eq!(list["done"], true);

    let (status, ep) = server
        .call_as(&token, "POST", &format!("/api/v1/app/{own_id}/endpoint"), Some(json!({"url": "https://a.example/"})))
        .await;
    assert_eq!(status, 201, "{ep}");
    let (status, list) = server.call_as(&token, "GET", &format!("/api/v1/app/{own_id}/endpoint"), None).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list), vec![id_of(&ep)]);
    let (status, secret) =
        server.call_as(&token, "GET", &format!("/api/v1/app/own/endpoint/{}/secret", id_of(&ep)), None).await;
    assert_eq!(status, 200);
    assert!(secret["key"].as_str().unwrap().starts_with("whsec_"));
    let (status, msg) = server
        .call_as(
            &token,
            "POST",
            &format!("/api/v1/app/{own_id}/msg"),
            Some(json!({"eventType": "user.created", "payload": {"p": 1}})),
        )
        .await;
    assert_eq!(status, 202, "{msg}");
    let (status, got) = server.call_as(&token, "GET", &format!("/api/v1/app/own/msg/{}", id_of(&msg)), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["payload"], json!({"p": 1}));
    let (status, patched) =
        server.call_as(&token, "PATCH", &format!("/api/v1/app/{own_id}"), Some(json!({"name": "Renamed"}))).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Renamed");

    // Event types are readable.
    let (status, list) = server.call_as(&token, "GET", "/api/v1/event-type", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["name"], "user.created");
    let (status, et) = server.call_as(&token, "GET", "/api/v1/event-type/user.created", None).await;
    assert_eq!(status, 200, "{et}");
    assert_eq!(et["name"], "user.created");

    // The admin token sees the token's changes.
    let (_, got) = server.call("GET", &format!("/api/v1/app/{own_id}"), None).await;
    assert_eq!(got["name"], "Renamed");
}

/// Everything the admin can read about an application, to compare before and after.
async fn snapshot(server: &Server, app: &str, ep: &str, msg: &str, attempt: &str) -> Vec<(String, u16, Value)> {
    let mut out = Vec::new();
    for path in [
        "/api/v1/app".to_string(),
        format!("/api/v1/app/{app}"),
        format!("/api/v1/app/{app}/endpoint"),
        format!("/api/v1/app/{app}/endpoint/{ep}"),
        format!("/api/v1/app/{app}/endpoint/{ep}/secret"),
        format!("/api/v1/app/{app}/endpoint/{ep}/headers"),
        format!("/api/v1/app/{app}/msg"),
        format!("/api/v1/app/{app}/msg/{msg}"),
        format!("/api/v1/app/{app}/msg/{msg}/endpoint"),
        format!("/api/v1/app/{app}/attempt/msg/{msg}"),
        format!("/api/v1/app/{app}/attempt/endpoint/{ep}"),
        format!("/api/v1/app/{app}/msg/{msg}/attempt/{attempt}"),
    ] {
        let (status, body) = server.call("GET", &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        out.push((path, status, body));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_token_cannot_reach_another_app() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let own = create_app_with(&server, json!({"name": "Own", "uid": "own"})).await;
    let own_id = id_of(&own);
    let victim = create_app_with(&server, json!({"name": "Victim", "uid": "victim"})).await;
    let vid = id_of(&victim);
    let (vep, _) = server
        .create_endpoint(&vid, json!({"url": format!("{}/victim", rx.url), "uid": "vep", "headers": {"X-V": "1"}}))
        .await;
    let vmsg = server.send_message(&vid, "user.created", json!({"secret": "data"})).await;
    let attempts = server
        .wait_until(&format!("/api/v1/app/{vid}/attempt/msg/{vmsg}"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| d.len() == 1)
        })
        .await;
    let vatt = attempts["data"][0]["id"].as_str().unwrap().to_string();
    server
        .wait_until(&format!("/api/v1/app/{vid}/msg/{vmsg}/endpoint"), Duration::from_secs(10), |b| {
            b["data"][0]["status"] == 0
        })
        .await;
    let (own_ep, _) = server.create_endpoint(&own_id, json!({"url": format!("{}/own", rx.url)})).await;
    let own_msg = server.send_message(&own_id, "user.created", json!({"mine": true})).await;
    rx.wait_for(2, Duration::from_secs(10)).await;

    let before = snapshot(&server, &vid, &vep, &vmsg, &vatt).await;
    let token = server.app_token(&own_id).await;

    let since = json!({"since": "2000-01-01T00:00:00Z"});
    let ep_body = json!({"url": "https://evil.example/"});
    let msg_body = json!({"eventType": "user.created", "payload": {"evil": true}});
    let headers = json!({"headers": {"X-Evil": "1"}});
    let mut routes: Vec<(&str, String, Option<Value>)> = Vec::new();
    for app in [vid.as_str(), "victim"] {
        let a = format!("/api/v1/app/{app}");
        for ep in [vep.as_str(), "vep"] {
            let e = format!("{a}/endpoint/{ep}");
            routes.extend([
                ("GET", e.clone(), None),
                ("PUT", e.clone(), Some(ep_body.clone())),
                ("PATCH", e.clone(), Some(json!({"description": "pwned"}))),
                ("GET", format!("{e}/secret"), None),
                ("POST", format!("{e}/secret/rotate"), None),
                ("POST", format!("{e}/secret/rotate"), Some(json!({"key": secret_of(3, 32)}))),
                ("GET", format!("{e}/headers"), None),
                ("PUT", format!("{e}/headers"), Some(headers.clone())),
                ("PATCH", format!("{e}/headers"), Some(headers.clone())),
                ("POST", format!("{e}/recover"), Some(since.clone())),
                ("GET", format!("{a}/attempt/endpoint/{ep}"), None),
                ("GET", format!("{a}/msg/{vmsg}/endpoint/{ep}/attempt"), None),
                ("POST", format!("{a}/msg/{vmsg}/endpoint/{ep}/resend"), None),
                ("DELETE", e.clone(), None),
            ]);
        }
        routes.extend([
            ("GET", a.clone(), None),
            ("PUT", a.clone(), Some(json!({"name": "pwned"}))),
            ("PATCH", a.clone(), Some(json!({"name": "pwned"}))),
            ("GET", format!("{a}/endpoint"), None),
            ("POST", format!("{a}/endpoint"), Some(ep_body.clone())),
            ("GET", format!("{a}/msg"), None),
            ("POST", format!("{a}/msg"), Some(msg_body.clone())),
            ("GET", format!("{a}/msg/{vmsg}"), None),
            ("GET", format!("{a}/msg/{vmsg}/endpoint"), None),
            ("GET", format!("{a}/msg/{vmsg}/attempt"), None),
            ("GET", format!("{a}/msg/{vmsg}/attempt/{vatt}"), None),
            ("GET", format!("{a}/attempt/msg/{vmsg}"), None),
            ("DELETE", a.clone(), None),
        ]);
    }
    // The victim's objects named under the token's own application are not found either.
    let o = format!("/api/v1/app/{own_id}");
    routes.extend([
        ("GET", format!("{o}/endpoint/{vep}"), None),
        ("GET", format!("{o}/endpoint/vep/secret"), None),
        ("PATCH", format!("{o}/endpoint/{vep}"), Some(json!({"description": "pwned"}))),
        ("DELETE", format!("{o}/endpoint/{vep}"), None),
        ("GET", format!("{o}/msg/{vmsg}"), None),
        ("GET", format!("{o}/msg/{vmsg}/endpoint"), None),
        ("GET", format!("{o}/attempt/msg/{vmsg}"), None),
        ("GET", format!("{o}/attempt/endpoint/{vep}"), None),
        ("GET", format!("{o}/msg/{vmsg}/endpoint/{vep}/attempt"), None),
        ("GET", format!("{o}/msg/{vmsg}/attempt/{vatt}"), None),
        ("POST", format!("{o}/msg/{vmsg}/endpoint/{own_ep}/resend"), None),
        ("POST", format!("{o}/msg/{own_msg}/endpoint/{vep}/resend"), None),
    ]);

    // A foreign application answers exactly as a missing one.
    let (_, missing) = server.call_as(&token, "GET", "/api/v1/app/app_01ARZ3NDEKTSV4RRFFQ69G5FAV", None).await;
    for (method, path, body) in &routes {
        let (status, out) = server.call_as(&token, method, path, body.clone()).await;
        assert_error(status, &out, 404, "not_found");
        if !path.starts_with(&o) {
            assert_eq!(out, missing, "{method} {path}");
        }
    }
    // Also with an Idempotency-Key, and the admin still gets the real answer afterwards.
    let resp = send(
        request(&server, Some(&token), "POST", &format!("/api/v1/app/{vid}/msg"))
            .header("idempotency-key", "probe")
            .json(&msg_body),
    )
    .await;
    assert_eq!(resp.status, 404);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = snapshot(&server, &vid, &vep, &vmsg, &vatt).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "{} changed", b.0);
    }
    let got = rx.received();
    assert_eq!(got.iter().filter(|r| r.path == "/victim").count(), 1, "no resend reached the victim's endpoint");
    assert!(!got.iter().any(|r| r.path != "/victim" && r.path != "/own"), "no delivery to an evil endpoint");
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await), vec![own_id.clone(), vid.clone()]);
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{own_id}/endpoint")).await), vec![own_ep]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_token_is_refused_admin_routes() {
    let server = Server::start("").await;
    let own = server.create_app("own").await;
    let (status, et) =
        server.call("POST", "/api/v1/event-type", Some(json!({"name": "user.created", "description": "orig"}))).await;
    assert_eq!(status, 201);
    let token = server.app_token(&own).await;

    for (method, path, body) in [
        ("POST", "/api/v1/app".to_string(), Some(json!({"name": "new"}))),
        ("POST", "/api/v1/app?get_if_exists=true".to_string(), Some(json!({"name": "new", "uid": "new"}))),
        ("POST", "/api/v1/event-type".to_string(), Some(json!({"name": "new.type"}))),
        ("PUT", "/api/v1/event-type/user.created".to_string(), Some(json!({"description": "changed"}))),
        ("PUT", "/api/v1/event-type/brand.new".to_string(), Some(json!({"description": "changed"}))),
        ("PATCH", "/api/v1/event-type/user.created".to_string(), Some(json!({"description": "changed"}))),
        ("DELETE", "/api/v1/event-type/user.created".to_string(), None),
        ("DELETE", "/api/v1/event-type/user.created?expunge=true".to_string(), None),
        ("POST", format!("/api/v1/auth/app-portal-access/{own}"), None),
        ("POST", format!("/api/v1/auth/dashboard-access/{own}"), None),
        ("DELETE", format!("/api/v1/app/{own}"), None),
    ] {
        let (status, out) = server.call_as(&token, method, &path, body).await;
        assert_error(status, &out, 403, "forbidden");
    }
    // PUT on an unknown uid would create an application: not with an application token.
    let (status, out) = server.call_as(&token, "PUT", "/api/v1/app/brand-new", Some(json!({"name": "x"}))).await;
    assert_error(status, &out, 404, "not_found");

    // Nothing changed.
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await), vec![own.clone()]);
    let (status, got) = server.call("GET", "/api/v1/event-type/user.created", None).await;
    assert_eq!(status, 200);
    assert_eq!(got, et);
    let list = list_all(&server, "/api/v1/event-type?include_archived=true").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    // Reading event types is allowed.
    let (status, _) = server.call_as(&token, "GET", "/api/v1/event-type", None).await;
    assert_eq!(status, 200);
    let (status, _) = server.call_as(&token, "GET", "/api/v1/event-type/user.created", None).await;
    assert_eq!(status, 200);
}

// --- 7. errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_precise_errors() {
    let server = Server::start("").await;
    let app = server.create_app("errors").await;

    let r = post_text(&server, "/api/v1/app", r#"{"name": "#).await;
    assert_error(r.status, &r.json(), 400, "invalid_json");
    let r = post_text(&server, "/api/v1/app", r#"{"name": "x",}"#).await;
    assert_error(r.status, &r.json(), 400, "invalid_json");
    let r = post_text(&server, "/api/v1/app", "").await;
    assert!(r.status == 400 || r.status == 422, "{}: {}", r.status, r.text);
    assert!(r.json()["code"].is_string());

    let r = post_text(&server, "/api/v1/app", r#"{"name": 5}"#).await;
    assert_invalid(r.status, &r.json(), "name");
    let r = post_text(&server, "/api/v1/app", r#"{"name": "x", "rateLimit": "fast"}"#).await;
    assert_invalid(r.status, &r.json(), "rateLimit");
    let r = post_text(&server, "/api/v1/app", r#"{"name": "x", "rateLimit": -1}"#).await;
    assert_invalid(r.status, &r.json(), "rateLimit");
    let r = post_text(&server, "/api/v1/app", r#"{"name": "x", "metadata": {"k": 1}}"#).await;
    assert_error(r.status, &r.json(), 422, "validation");
    // Bodies are objects; serde alone would fill the struct from an array.
    for body in [r#"["x"]"#, r#""x""#, "5", "null", r#"[{"name": "x"}]"#] {
        let r = post_text(&server, "/api/v1/app", body).await;
        assert_invalid(r.status, &r.json(), "body");
    }
    let r = post_text(&server, &format!("/api/v1/app/{app}/msg"), r#"["user.created", {"a": 1}]"#).await;
    assert_invalid(r.status, &r.json(), "body");

    // Unknown fields are refused, in every body.
    let r = post_text(&server, "/api/v1/app", r#"{"name": "x", "bogus": 1}"#).await;
    assert_invalid(r.status, &r.json(), "bogus");
    // A missing or repeated field is named where it belongs too.
    let r = post_text(&server, "/api/v1/app", r#"{"uid": "x"}"#).await;
    assert_invalid(r.status, &r.json(), "name");
    let r = post_text(&server, "/api/v1/app", r#"{"name": "x", "name": "y"}"#).await;
    assert_invalid(r.status, &r.json(), "name");
    let r = post_text(&server, &format!("/api/v1/app/{app}/endpoint"), r#"{"url": "https://a.b/", "URL": "x"}"#).await;
    assert_error(r.status, &r.json(), 422, "validation");
    let r =
        post_text(&server, &format!("/api/v1/app/{app}/msg"), r#"{"eventType": "a", "payload": {}, "extra": 1}"#).await;
    assert_error(r.status, &r.json(), 422, "validation");
    let (status, out) = server.call("PATCH", &format!("/api/v1/app/{app}"), Some(json!({"nmae": "typo"}))).await;
    assert_error(status, &out, 422, "validation");

    // Content type: none is read as JSON (as Svix reads every body: its Kotlin SDK sends
    // none), another than JSON is refused.
    let body = r#"{"name": "x"}"#;
    let r = send(request(&server, Some(ADMIN), "POST", "/api/v1/app").body(body)).await;
    assert_eq!((r.status, r.json()["name"].as_str()), (201, Some("x")), "{}", r.text);
    let r = send(request(&server, Some(ADMIN), "POST", "/api/v1/app").header("content-type", "text/plain").body(body))
        .await;
    assert_error(r.status, &r.json(), 415, "unsupported_media_type");
    let r = send(
        request(&server, Some(ADMIN), "POST", "/api/v1/app")
            .header("content-type", "application/json; charset=utf-8")
            .body(body),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Invalid UTF-8, at the top level and inside the payload.
    let r = send(
        request(&server, Some(ADMIN), "POST", "/api/v1/app")
            .header("content-type", "application/json")
            .body(b"{\"name\": \"\xff\xfe\"}".to_vec()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.json()["code"].is_string());
    let r = send(
        request(&server, Some(ADMIN), "POST", &format!("/api/v1/app/{app}/msg"))
            .header("content-type", "application/json")
            .body(b"{\"eventType\": \"a\", \"payload\": {\"k\": \"\xc3\x28\"}}".to_vec()),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.json()["code"].is_string());

    // Only the good applications were created (one with JSON read without a content
    // type); no message was.
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await).len(), 3);
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{app}/msg")).await), Vec::<String>::new());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Bodies in `Content-Encoding: gzip` or `deflate` are decoded, with the size limit on the
/// decoded bytes; other codings, and a body that is not what its coding says, are refused
/// with JSON errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_bodies_are_decoded_within_the_limit() {
    let server = Server::start("max_body_bytes = 2048").await;
    let app = server.create_app("compressed").await;
    let path = format!("/api/v1/app/{app}/msg");
    let post = |coding: &str, body: Vec<u8>| {
        send(
            request(&server, Some(ADMIN), "POST", &path)
                .header("content-type", "application/json")
                .header("content-encoding", coding)
                .body(body),
        )
    };
    let message = |n: u32| format!(r#"{{"eventType": "zipped", "payload": {{"n": {n}, "text": "hello"}}}}"#);
    for (n, (coding, body)) in [
        ("gzip", gzip(message(0).as_bytes())),
        ("deflate", zlib(message(1).as_bytes())),
        (" GZip ", gzip(message(2).as_bytes())),
        ("x-gzip", gzip(message(3).as_bytes())),
        ("identity", message(4).into_bytes()),
    ]
    .into_iter()
    .enumerate()
    {
        let r = post(coding, body).await;
        assert_eq!(r.status, 202, "{coding}: {}", r.text);
        let id = r.json()["id"].as_str().unwrap().to_string();
        let (status, got) = server.call("GET", &format!("{path}/{id}"), None).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["payload"], json!({"n": n, "text": "hello"}), "{coding}");
    }

    // Small when compressed, over the limit once decoded: refused, chunked or not.
    let bomb = format!(r#"{{"eventType": "zipped", "payload": {{"pad": "{}"}}}}"#, " ".repeat(200_000));
    let compressed = gzip(bomb.as_bytes());
    assert!(compressed.len() < 2048, "{} bytes", compressed.len());
    let r = post("gzip", compressed.clone()).await;
    assert_error(r.status, &r.json(), 413, "payload_too_large");
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(compressed)]);
    let r = send(
        request(&server, Some(ADMIN), "POST", &path)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(reqwest::Body::wrap_stream(stream)),
    )
    .await;
    assert_error(r.status, &r.json(), 413, "payload_too_large");

    // Codings hooklane does not decode, several codings, or a body that is not gzip.
    for coding in ["br", "zstd", "compress", "gzip, br", "gzip,gzip"] {
        let r = post(coding, gzip(message(9).as_bytes())).await;
        assert_error(r.status, &r.json(), 415, "unsupported_content_encoding");
        assert_eq!(r.header("connection"), Some("close"), "{coding}: the body was left unread");
    }
    let r = send(
        request(&server, Some(ADMIN), "POST", &path)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .header("content-encoding", "gzip")
            .body(gzip(&gzip(message(9).as_bytes()))),
    )
    .await;
    assert_error(r.status, &r.json(), 415, "unsupported_content_encoding");
    let r = post("gzip", message(9).into_bytes()).await;
    assert_error(r.status, &r.json(), 400, "bad_request");
    let truncated = gzip(message(9).as_bytes());
    let r = post("gzip", truncated[..truncated.len() / 2].to_vec()).await;
    assert_error(r.status, &r.json(), 400, "bad_request");
    // Bytes after the coded body's end are no part of it: refused, not passed over.
    for (coding, mut body) in [("gzip", gzip(message(9).as_bytes())), ("deflate", zlib(message(9).as_bytes()))] {
        body.extend_from_slice(b"TRAILING");
        let r = post(coding, body).await;
        assert_error(r.status, &r.json(), 400, "bad_request");
    }
    // A body of empty members, which decode to nothing, is not read on and on: refused once
    // it is far larger than what it decoded to.
    let empty_members: Vec<u8> = std::iter::repeat_n(gzip(b""), 5_000).flatten().collect();
    let r = post("gzip", [empty_members, gzip(message(9).as_bytes())].concat()).await;
    assert_error(r.status, &r.json(), 400, "bad_request");
    assert!(r.text.contains("far larger than what it decodes to"), "{}", r.text);
    // Members joined end to end (RFC 1952, as `cat a.gz b.gz` makes) are one body: all of it.
    let whole = message(5);
    let (head, tail) = whole.split_at(whole.len() / 2);
    let r = post("gzip", [gzip(head.as_bytes()), gzip(tail.as_bytes())].concat()).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["payload"], json!({"n": 5, "text": "hello"}));

    // A compressed body is a body, even without a length: sent to a route whose body is
    // optional, it is read (without a content type, as JSON, as Svix reads every body) or
    // refused for another type (415), never taken for no body at all (a rotation would then
    // make up a key); an empty one is no body, whatever its coding.
    let (ep, _) = server.create_endpoint(&app, json!({ "url": "https://example.com/hook" })).await;
    let rotate = format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate");
    let secret = || async { server.call("GET", &format!("/api/v1/app/{app}/endpoint/{ep}/secret"), None).await.1 };
    let before = secret().await;
    let key = json!({ "key": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }).to_string();
    let r = send(
        request(&server, Some(ADMIN), "POST", &rotate)
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .body(gzip(key.as_bytes())),
    )
    .await;
    assert_error(r.status, &r.json(), 415, "unsupported_media_type");
    assert_eq!(secret().await, before, "nothing rotated");
    let r = send(
        request(&server, Some(ADMIN), "POST", &rotate).header("content-encoding", "gzip").body(gzip(key.as_bytes())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(secret().await["key"], "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "the decoded key was used");
    let other = json!({ "key": "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ=" }).to_string();
    let r = send(
        request(&server, Some(ADMIN), "POST", &rotate)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(gzip(other.as_bytes())),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(secret().await["key"], "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ=");
    let r =
        send(request(&server, Some(ADMIN), "POST", &rotate).header("content-encoding", "gzip").body(Vec::new())).await;
    assert_eq!(r.status, 200, "an empty body is no body: {}", r.text);
    // So is one sent in chunks, with none (`curl -T -` of nothing), and a length of `00`.
    let no_chunks = futures::stream::iter(Vec::<Result<Vec<u8>, std::io::Error>>::new());
    let r = send(
        request(&server, Some(ADMIN), "POST", &rotate)
            .header("content-encoding", "gzip")
            .body(reqwest::Body::wrap_stream(no_chunks)),
    )
    .await;
    assert_eq!(r.status, 200, "no chunks: {}", r.text);
    let head = format!(
        "POST {rotate} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-encoding: deflate\r\n\
         content-length: 00\r\nconnection: close\r\n\r\n"
    );
    let (status, body) = raw_exchange(&server, &head).await;
    assert_eq!(status, 200, "a length of 00: {body}");

    // Nothing refused was stored: the six accepted messages only.
    let (status, list) = server.call("GET", &format!("{path}?limit=50"), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 6, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let server = Server::start("max_body_bytes = 2048").await;
    let app = server.create_app("limits").await;

    let r = send(request(&server, Some(ADMIN), "POST", "/api/v1/app").json(&json!({"name": "x".repeat(3000)}))).await;
    assert_error(r.status, &r.json(), 413, "payload_too_large");
    assert_eq!(r.header("connection"), Some("close"), "the unread body makes the connection unusable");
    let (status, out) = server
        .call(
            "POST",
            &format!("/api/v1/app/{app}/msg"),
            Some(json!({"eventType": "big", "payload": {"blob": "y".repeat(4000)}})),
        )
        .await;
    assert_error(status, &out, 413, "payload_too_large");
    let (status, out) =
        server.call("PATCH", &format!("/api/v1/app/{app}"), Some(json!({"metadata": {"k": "z".repeat(2100)}}))).await;
    assert_error(status, &out, 413, "payload_too_large");
    // A raw payload is held to the same limit as `payload`.
    let raw = json!({"eventType": "big", "payload": {}, "transformationsParams": {"rawPayload": "r".repeat(3000)}});
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(raw)).await;
    assert_error(status, &out, 413, "payload_too_large");

    // Chunked, without a Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(br#"{"eventType": "big", "payload": {"blob": ""#.to_vec()),
        Ok(vec![b'q'; 3000]),
        Ok(br#""}}"#.to_vec()),
    ];
    let r = send(
        request(&server, Some(ADMIN), "POST", &format!("/api/v1/app/{app}/msg"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await;
    assert_error(r.status, &r.json(), 413, "payload_too_large");
    assert_eq!(r.header("connection"), Some("close"));

    // An announced length past the limit is refused before any of the body is read: a
    // client that waits for `100 Continue` is not invited to send it.
    let head = format!(
        "POST /api/v1/app/{app}/msg HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n\
         content-type: application/json\r\nexpect: 100-continue\r\ncontent-length: 99999999\r\n\r\n"
    );
    let (status, body) = raw_exchange(&server, &head).await;
    assert_error(status, &body, 413, "payload_too_large");

    // A refused upload does not use up its Idempotency-Key.
    let post = |payload: Value| {
        request(&server, Some(ADMIN), "POST", &format!("/api/v1/app/{app}/msg"))
            .header("idempotency-key", "big-then-small")
            .json(&json!({"eventType": "big", "payload": payload}))
    };
    let r = send(post(json!({"blob": "y".repeat(4000)}))).await;
    assert_error(r.status, &r.json(), 413, "payload_too_large");
    let r = send(post(json!({"blob": "small"}))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.header("idempotent-replayed"), None);
    let small = id_of(&r.json());
    let list = list_all(&server, &format!("/api/v1/app/{app}/msg")).await;
    assert_eq!(ids(&list), vec![small.clone()]);

    // Nothing else was stored, and bodies under the limit still work.
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await), vec![app.clone()]);
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{app}/msg")).await), vec![small]);
    let (_, got) = server.call("GET", &format!("/api/v1/app/{app}"), None).await;
    assert_eq!(got["metadata"], json!({}));
    let msg = server.send_message(&app, "small", json!({"blob": "y".repeat(1500)})).await;
    assert!(msg.starts_with("msg_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let server = Server::start("").await;
    let app = server.create_app("routes").await;
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/app",
        &format!("/api/v1/app/{app}/nope"),
        &format!("/api/v1/app/{app}/msg/x/y/z"),
    ] {
        let (status, out) = server.call("GET", path, None).await;
        assert_error(status, &out, 404, "not_found");
    }
    for (method, path) in [
        ("DELETE", "/api/v1/app".to_string()),
        ("PUT", "/api/v1/app/".to_string()),
        ("POST", format!("/api/v1/app/{app}")),
        ("PATCH", format!("/api/v1/app/{app}/msg")),
        ("DELETE", format!("/api/v1/app/{app}/msg")),
        ("GET", format!("/api/v1/app/{app}/endpoint/x/secret/rotate")),
        ("GET", format!("/api/v1/auth/app-portal-access/{app}")),
        ("POST", "/api/v1/health".to_string()),
        ("DELETE", "/api/v1/event-type".to_string()),
    ] {
        let (status, out) = server.call(method, &path, None).await;
        assert_error(status, &out, 405, "method_not_allowed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_and_server_survives() {
    let server = Server::start("").await;
    let app = server.create_app("deep").await;
    let depth = 10_000;
    let nested_obj = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let nested_arr = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let bodies = [
        (format!("/api/v1/app/{app}/msg"), format!(r#"{{"eventType": "deep", "payload": {nested_obj}}}"#)),
        (format!("/api/v1/app/{app}/msg"), format!(r#"{{"eventType": "deep", "payload": {{"a": {nested_arr}}}}}"#)),
        (format!("/api/v1/app/{app}/msg"), nested_arr.clone()),
        ("/api/v1/app".to_string(), format!(r#"{{"name": "x", "metadata": {nested_obj}}}"#)),
        ("/api/v1/app".to_string(), format!(r#"{{"name": "x", "throttleRate": {nested_arr}}}"#)),
        ("/api/v1/event-type".to_string(), format!(r#"{{"name": "deep", "schemas": {nested_obj}}}"#)),
        (format!("/api/v1/app/{app}/endpoint"), format!(r#"{{"url": "https://a.b/", "throttleRate": {nested_obj}}}"#)),
    ];
    for (path, body) in &bodies {
        let r = post_text(&server, path, body).await;
        let short: String = r.text.chars().take(300).collect();
        assert!((400..500).contains(&r.status), "{path}: {} {short}", r.status);
        assert!(r.json()["code"].is_string(), "{path}: {short}");
    }
    let health = send(request(&server, None, "GET", "/api/v1/health")).await;
    assert_eq!(health.status, 204);
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{app}/msg")).await), Vec::<String>::new());
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await), vec![app.clone()]);
    let (status, _) = server.call("GET", "/api/v1/event-type/deep", None).await;
    assert_eq!(status, 404);
    // The limit is 100 levels; brackets inside strings do not count.
    let nest = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
    let brackets = "[{".repeat(200);
    let ok = format!(r#"{{"eventType":"ok","payload":{{"s":"{brackets}\"{brackets}","n":{}}}}}"#, nest(99));
    let r = post_text(&server, &format!("/api/v1/app/{app}/msg"), &ok).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let too_deep = format!(r#"{{"eventType":"ok","payload":{}}}"#, nest(101));
    let r = post_text(&server, &format!("/api/v1/app/{app}/msg"), &too_deep).await;
    assert_invalid(r.status, &r.json(), "payload");
    let r = post_text(
        &server,
        &format!("/api/v1/app/{app}/msg"),
        &format!(r#"{{"eventType":"ok","payload":{}}}"#, nest(100)),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{app}/msg")).await).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_looking_strings_are_stored_verbatim() {
    let server = Server::start("").await;
    let evil = "Robert'); DROP TABLE applications;-- \" OR 1=1 /* %_ \\";
    let app = create_app_with(&server, json!({"name": evil, "metadata": {"q": "' OR '1'='1", evil: evil}})).await;
    let id = id_of(&app);
    let (status, got) = server.call("GET", &format!("/api/v1/app/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], evil);
    assert_eq!(got["metadata"], json!({"q": "' OR '1'='1", evil: evil}));

    let (status, ep) = server
        .call(
            "POST",
            &format!("/api/v1/app/{id}/endpoint"),
            Some(json!({"url": "https://example.com/?q=';DROP TABLE endpoints;--", "description": evil})),
        )
        .await;
    assert_eq!(status, 201, "{ep}");
    let (_, got) = server.call("GET", &format!("/api/v1/app/{id}/endpoint/{}", id_of(&ep)), None).await;
    assert_eq!(got["description"], evil);
    assert_eq!(got["url"], "https://example.com/?q=';DROP TABLE endpoints;--");

    let (status, et) =
        server.call("POST", "/api/v1/event-type", Some(json!({"name": "sql.test", "description": evil}))).await;
    assert_eq!(status, 201, "{et}");
    let (_, got) = server.call("GET", "/api/v1/event-type/sql.test", None).await;
    assert_eq!(got["description"], evil);

    let msg = server.send_message(&id, "sql.test", json!({"q": evil, "k": "'; DELETE FROM messages; --"})).await;
    let (_, got) = server.call("GET", &format!("/api/v1/app/{id}/msg/{msg}"), None).await;
    assert_eq!(got["payload"], json!({"q": evil, "k": "'; DELETE FROM messages; --"}));

    // SQL in path and query parameters matches nothing rather than everything.
    let (status, out) = server.call("GET", "/api/v1/app/'%20OR%20'1'='1", None).await;
    assert_error(status, &out, 404, "not_found");
    let (status, out) = server.call("GET", &format!("/api/v1/app/{id}/msg/'%20OR%201=1%20--"), None).await;
    assert_error(status, &out, 404, "not_found");
    // (Neither a channel nor an event type name can hold those characters: refused as a bad
    // filter.)
    let (status, out) = server.call("GET", &format!("/api/v1/app/{id}/msg?channel='%20OR%20'1'='1"), None).await;
    assert_error(status, &out, 422, "validation");
    let (status, out) = server.call("GET", &format!("/api/v1/app/{id}/msg?event_types=x')%20OR%20('1'='1"), None).await;
    assert_error(status, &out, 422, "validation");
    let q = list_all(&server, &format!("/api/v1/app/{id}/msg?iterator='%20OR%201=1%20--")).await;
    assert!(q["data"].is_array());

    // Everything is still there.
    assert_eq!(ids(&list_all(&server, "/api/v1/app").await), vec![id.clone()]);
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{id}/msg")).await), vec![msg]);
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{id}/endpoint")).await), vec![id_of(&ep)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_survives_a_dropped_upload() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start("").await;
    let app = server.create_app("idem").await;
    let path = format!("/api/v1/app/{app}/msg");
    let body = json!({"eventType": "order.paid", "payload": {"n": 1}}).to_string();
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\n\
         idempotency-key: dropped\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let retry = send(
        request(&server, Some(ADMIN), "POST", &path)
            .header("idempotency-key", "dropped")
            .header("content-type", "application/json")
            .body(body.clone()),
    )
    .await;
    assert_eq!(retry.status, 202, "{}", retry.text);
    assert_eq!(ids(&list_all(&server, &path).await).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_path_segments_get_json_errors() {
    let server = Server::start("").await;
    let app = server.create_app("paths").await;
    for (method, path) in [
        ("GET", "/api/v1/event-type/%FF".to_string()),
        ("GET", "/api/v1/app/%FF".to_string()),
        ("PUT", "/api/v1/app/%FF".to_string()),
        ("GET", format!("/api/v1/app/{app}/endpoint/%FF")),
        ("GET", format!("/api/v1/app/{app}/msg/%FF")),
        ("POST", "/api/v1/auth/app-portal-access/%FF".to_string()),
    ] {
        let r = send(request(&server, Some(ADMIN), method, &path).json(&json!({"name": "x"}))).await;
        assert_eq!(r.header("content-type"), Some("application/json"), "{method} {path}: {}", r.text);
        assert_error(r.status, &r.json(), 400, "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_tokens_expire_and_can_be_revoked() {
    let server = Server::start("").await;
    let app = server.create_app("tokens").await;
    let other = server.create_app("others").await;
    let server = &server;
    let access = |app: &str, body: Option<Value>| {
        let path = format!("/api/v1/auth/app-portal-access/{app}");
        async move { server.call("POST", &path, body).await }
    };
    let (status, body) = access(&app, Some(json!({ "expiry": 30 }))).await;
    assert_invalid(status, &body, "expiry");
    let (status, body) = access(&app, Some(json!({ "expiry": 8 * 24 * 3600 }))).await;
    assert_invalid(status, &body, "expiry");
    // Capabilities hold ViewBase, name only known ones, and a read-only token only reads.
    for body in [
        json!({ "capabilities": ["CreateAttempts"] }),
        json!({ "capabilities": [] }),
        json!({ "readOnly": true, "capabilities": ["ViewBase", "ManageEndpoint"] }),
    ] {
        let (status, answer) = access(&app, Some(body.clone())).await;
        assert_invalid(status, &answer, "capabilities");
    }
    let (status, body) = access(&app, Some(json!({ "capabilities": ["ViewBase", "Everything"] }))).await;
    assert_eq!(status, 422, "an unknown capability: {body}");
    // A token is a secret: its answer is never stored for an Idempotency-Key replay.
    let with_key = || {
        send(
            request(server, Some(ADMIN), "POST", &format!("/api/v1/auth/app-portal-access/{app}"))
                .header("idempotency-key", "same-key"),
        )
    };
    let (one, two) = (with_key().await, with_key().await);
    assert_eq!((one.status, two.status), (200, 200));
    assert_ne!(one.json()["token"], two.json()["token"], "not a replay of the first answer");
    assert!(two.headers.get("idempotent-replayed").is_none());
    let token = |out: &Value| out["token"].as_str().expect("token").to_string();
    let (status, out) = access(&app, Some(json!({ "expiry": 3600, "featureFlags": [] }))).await;
    assert_eq!(status, 200, "{out}");
    let first = token(&out);
    let get_app = |token: String, app: String| async move {
        server.call_as(&token, "GET", &format!("/api/v1/app/{app}"), None).await.0
    };
    assert_eq!(get_app(first.clone(), app.clone()).await, 200);

    // Logout: that token stops working; the admin token cannot log out.
    let (status, body) = server.call_as(&first, "POST", "/api/v1/auth/logout", None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(get_app(first.clone(), app.clone()).await, 401);
    let (status, body) = server.call("POST", "/api/v1/auth/logout", None).await;
    assert_error(status, &body, 403, "forbidden");

    // Expire all of an application's tokens: another application's keep working.
    let (second, third) = (token(&access(&app, None).await.1), token(&access(&app, None).await.1));
    let others = token(&access(&other, None).await.1);
    let (status, body) = server.call_as(&second, "POST", &format!("/api/v1/auth/app/{app}/expire-all"), None).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = server.call("POST", &format!("/api/v1/auth/app/{app}/expire-all"), Some(json!({}))).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(get_app(second, app.clone()).await, 401);
    assert_eq!(get_app(third, app.clone()).await, 401);
    assert_eq!(get_app(others, other.clone()).await, 200);
    let (status, body) = server.call("POST", "/api/v1/auth/app/no-such-app/expire-all", None).await;
    assert_error(status, &body, 404, "not_found");
}

// --- the OpenAPI document

/// The schema a documented answer has, `$ref`s followed.
fn answer_schema<'a>(doc: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    let schema = &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{method} {path} documents no JSON answer for {status}");
    resolve(doc, schema)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("a components $ref");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// A real answer has the properties its schema documents: none that is not documented,
/// and every one documented as required.
fn assert_matches(schema: &Value, answer: &Value, what: &str) {
    let documented: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no properties in {schema}"))
        .keys()
        .map(String::as_str)
        .collect();
    let required: BTreeSet<&str> =
        schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let present: BTreeSet<&str> = answer.as_object().expect("an object").keys().map(String::as_str).collect();
    let undocumented: Vec<_> = present.difference(&documented).collect();
    let absent: Vec<_> = required.difference(&present).collect();
    assert!(undocumented.is_empty(), "{what}: answered but not documented: {undocumented:?}");
    assert!(absent.is_empty(), "{what}: documented as required but not answered: {absent:?}");
}

/// A documented path with each `{parameter}` replaced by `value(parameter)`.
fn fill_path(path: &str, value: impl Fn(&str) -> String) -> String {
    path.split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => value(name),
            None => segment.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `/api/v1/openapi.json` is served without a token; every operation it lists reaches a
/// route of the server (an authenticated one answers 401 without a token, never the
/// router's 404 or 405), and the answers of the main resources have the documented shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_served_and_matches_the_server() {
    let server = Server::start("").await;
    let resp = send(request(&server, None, "GET", "/api/v1/openapi.json")).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let doc = resp.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);

    let paths = doc["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = fill_path(path, |_| "x".to_string());
        for (method, op) in item.as_object().expect("path item") {
            operations += 1;
            let public = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty())));
            let resp = send(request(&server, None, &method.to_uppercase(), &concrete)).await;
            assert_ne!(resp.status, 405, "{method} {path} is documented but not routed: {}", resp.text);
            if resp.status == 404 {
                assert_ne!(resp.json()["detail"], "route not found", "{method} {path} is documented but not routed");
            }
            if !public {
                assert_eq!(resp.status, 401, "{method} {path} answered without a token: {}", resp.text);
            }
        }
    }
    assert!(operations > 60, "only {operations} operations documented");

    // The main resources, answered for real, against their documented schemas.
    let receiver = Receiver::start().await;
    let app = create_app_with(&server, json!({ "name": "OpenAPI", "uid": "openapi-app" })).await;
    assert_matches(answer_schema(&doc, "post", "/api/v1/app", "201"), &app, "ApplicationOut");
    let (status, endpoint) = server
        .call("POST", "/api/v1/app/openapi-app/endpoint", Some(json!({ "url": receiver.url, "uid": "ep" })))
        .await;
    assert_eq!(status, 201, "{endpoint}");
    assert_matches(answer_schema(&doc, "post", "/api/v1/app/{app_id}/endpoint", "201"), &endpoint, "EndpointOut");
    let (status, msg) = server
        .call("POST", "/api/v1/app/openapi-app/msg", Some(json!({ "eventType": "a.b", "payload": { "n": 1 } })))
        .await;
    assert_eq!(status, 202, "{msg}");
    assert_matches(answer_schema(&doc, "post", "/api/v1/app/{app_id}/msg", "202"), &msg, "MessageOut");
    let msg_id = msg["id"].as_str().expect("msg id");
    let attempts = server
        .wait_until(&format!("/api/v1/app/openapi-app/attempt/msg/{msg_id}"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let list = answer_schema(&doc, "get", "/api/v1/app/{app_id}/attempt/msg/{msg_id}", "200");
    assert_matches(list, &attempts, "ListResponse of attempts");
    let item = resolve(&doc, &list["properties"]["data"]["items"]);
    assert_matches(item, &attempts["data"][0], "MessageAttemptOut");
}

/// A request body to try, and its name.
type BadBody = (&'static str, Vec<u8>);

/// Bodies no handler should take: broken or mistyped JSON, absurd sizes and depths, bytes that
/// are not UTF-8.
fn bad_bodies() -> Vec<BadBody> {
    let deep = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let long = format!(
        r#"{{"name": "{}", "url": "http://127.0.0.1/{}", "eventType": "a"}}"#,
        "n".repeat(70_000),
        "p".repeat(70_000)
    );
    vec![
        ("empty", Vec::new()),
        ("truncated", b"{\"name\": ".to_vec()),
        ("null", b"null".to_vec()),
        ("array", b"[1, 2]".to_vec()),
        ("string", b"\"x\"".to_vec()),
        ("empty object", b"{}".to_vec()),
        (
            "mistyped fields",
            br#"{"name": 5, "url": [], "eventType": {}, "payload": "x", "uid": 7, "verification": 3, "rateLimit": -1, "version": "v", "filterTypes": "a", "channels": 5, "secret": 1, "headers": [], "expiry": -5, "since": "yesterday", "destinations": {}, "archived": "no", "schemas": 5, "orderingKey": 9}"#.to_vec(),
        ),
        (
            "huge numbers",
            br#"{"name": "n", "url": "http://127.0.0.1/", "eventType": "a", "payload": {}, "rateLimit": 1e400, "version": 99999999999999999999, "expiry": 18446744073709551616}"#.to_vec(),
        ),
        ("deep nesting", deep.into_bytes()),
        ("long strings", long.into_bytes()),
        ("not UTF-8", vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
        ("NUL inside", b"{\"name\": \"a\\u0000b\", \"eventType\": \"a\\u0000\", \"payload\": {\"k\": \"\\u0000\"}}".to_vec()),
        (
            "NUL in lists and names",
            br#"{"channel": "a\u0000", "tag": "\u0000", "ids": ["\u0000"], "appIds": ["\u0000"], "since": "2020-01-01T00:00:00Z", "description": "d\u0000", "eventType": "a.b", "payload": {}}"#.to_vec(),
        ),
    ]
}

/// Every documented operation that takes a body or a query answers bad input with a 4xx and
/// a JSON error carrying a `code`, never a 5xx or a dropped connection, and the server stays up.
/// (DELETEs are left out: they would remove what the others need.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_refuses_bad_input_cleanly() {
    refuses_bad_input_cleanly(Server::start("").await).await;
}

/// The same on PostgreSQL, whose text holds no NUL character: one reaching it unchecked (a
/// `%00` in a path or a query, a `\u0000` in a body) is bad input too, not a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_refuses_bad_input_cleanly_on_postgres() {
    let db = hooklane_store::postgres::testing::TestDatabase::create().await;
    refuses_bad_input_cleanly(Server::start(&format!("database_url = \"{}\"", db.url())).await).await;
}

async fn refuses_bad_input_cleanly(server: Server) {
    let doc = send(request(&server, None, "GET", "/api/v1/openapi.json")).await.json();
    let receiver = Receiver::start().await;
    // Real resources, so that path parameters resolve and handlers get as far as the body.
    create_app_with(&server, json!({ "name": "Fuzz", "uid": "fz" })).await;
    let (status, _) =
        server.call("POST", "/api/v1/event-type", Some(json!({ "name": "a.b", "description": "d" }))).await;
    assert_eq!(status, 201);
    let (status, _) =
        server.call("POST", "/api/v1/app/fz/endpoint", Some(json!({ "url": receiver.url, "uid": "ep" }))).await;
    assert_eq!(status, 201);
    let msg_id = server.send_message("fz", "a.b", json!({ "n": 1 })).await;
    let attempts = server
        .wait_until(&format!("/api/v1/app/fz/attempt/msg/{msg_id}"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let attempt_id = attempts["data"][0]["id"].as_str().expect("attempt id").to_string();
    let (status, source) = server
        .call(
            "POST",
            "/api/v1/source",
            Some(json!({ "name": "s", "verification": { "type": "github", "secret": "s3cret" }, "destinations": [{ "url": receiver.url }] })),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    let source_id = source["id"].as_str().expect("source id").to_string();
    let value = |name: &str| -> String {
        match name {
            "app_id" => "fz".to_string(),
            "endpoint_id" => "ep".to_string(),
            "msg_id" => msg_id.clone(),
            "attempt_id" => attempt_id.clone(),
            "name" => "a.b".to_string(),
            "source_id" => source_id.clone(),
            _ => "x".to_string(),
        }
    };
    let bad_query = "?limit=-1&iterator=%FF%FE&order=sideways&before=notadate&after=1e999&since=x&until=&status=9&\
                     event_types=%00&channel=&with_content=maybe&with_msg=perhaps&status_code_class=7&wait=-3&get_if_exists=2&expunge=x&\
                     expanded_statuses=nope";
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let filled = fill_path(path, value);
        for (method, op) in item.as_object().expect("path item") {
            if method == "delete" || path.ends_with("/events/stream") {
                continue;
            }
            let takes_body = !op["requestBody"].is_null();
            let mut tries: Vec<(String, Option<BadBody>)> = vec![(format!("{filled}{bad_query}"), None)];
            if path.contains('{') {
                tries.push((fill_path(path, |_| "a%00b".to_string()), None));
            }
            // A segment that is not UTF-8, each parameter in turn with the others real: the
            // first that a route reads is the one refused, by whichever extractor reads it.
            for param in path.split('{').skip(1).filter_map(|p| p.split_once('}')).map(|(name, _)| name) {
                let url = fill_path(path, |name| if name == param { "a%FFb".to_string() } else { value(name) });
                tries.push((url, None));
            }
            if takes_body {
                tries.extend(bad_bodies().into_iter().map(|b| (filled.clone(), Some(b))));
            }
            for (url, body) in tries {
                let mut rb = request(&server, Some(ADMIN), &method.to_uppercase(), &url);
                let what = match &body {
                    Some((name, bytes)) => {
                        rb = rb.header("content-type", "application/json").body(bytes.clone());
                        format!("{method} {path} with {name}")
                    }
                    None => format!("{method} {url}"),
                };
                let resp = rb.send().await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_else(|e| panic!("{what}: body cut off: {e}"));
                assert!(status < 500, "{what}: answered {status}: {text}");
                if status >= 400 {
                    let error: Value =
                        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {status} not JSON: {text}"));
                    assert!(
                        error["code"].as_str().is_some_and(|c| !c.is_empty()),
                        "{what}: {status} without a code: {text}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "only {checked} requests made");
    let (status, _) = server.call("GET", "/api/v1/health", None).await;
    assert_eq!(status, 204, "the server is still up");
}

/// `send-example` sends the event type's example (from its latest schema version) to that
/// endpoint alone, whatever its filters, signed like any delivery; `svix.ping` needs no event
/// type; an unknown event type, a missing example and a disabled endpoint are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_example_goes_to_that_endpoint_only() {
    let server = Server::start("").await;
    let (tried, other) = (Receiver::start().await, Receiver::start().await);
    let schemas = json!({
        "1": { "type": "object", "examples": [{ "old": true }] },
        "2": { "type": "object", "examples": [{ "id": "in_1", "amount": 5 }, { "id": "in_2", "amount": 7 }] },
    });
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/event-type",
            Some(json!({ "name": "invoice.paid", "description": "d", "schemas": schemas })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    create_app_with(&server, json!({ "name": "Examples", "uid": "ex" })).await;
    // The tried endpoint's filter does not let this event type through: an example goes all the same.
    let (ep, secret) = server
        .create_endpoint("ex", json!({ "url": tried.url, "uid": "tried", "filterTypes": ["user.created"] }))
        .await;
    server.create_endpoint("ex", json!({ "url": other.url })).await;

    let path = "/api/v1/app/ex/endpoint/tried/send-example";
    let (status, msg) =
        server.call("POST", path, Some(json!({ "eventType": "invoice.paid", "exampleIndex": 1 }))).await;
    assert_eq!(status, 202, "{msg}");
    assert_eq!(msg["eventType"], "invoice.paid");
    assert_eq!(msg["payload"], json!({ "id": "in_2", "amount": 7 }));
    let got = tried.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json(), json!({ "id": "in_2", "amount": 7 }));
    assert_eq!(got[0].header("webhook-id"), msg["id"].as_str().expect("msg id"));
    assert!(signature_valid(&secret, &got[0]), "signed with the endpoint's secret");

    let (status, ping) = server.call("POST", path, Some(json!({ "eventType": "svix.ping" }))).await;
    assert_eq!(status, 202, "{ping}");
    assert_eq!(tried.wait_for(2, Duration::from_secs(10)).await[1].json(), json!({ "success": true }));
    // The message log has them, each delivered to the tried endpoint only.
    let destinations = list_all(&server, &format!("/api/v1/app/ex/msg/{}/endpoint", msg["id"].as_str().unwrap())).await;
    let ids: Vec<&str> = destinations["data"].as_array().unwrap().iter().filter_map(|d| d["id"].as_str()).collect();
    assert_eq!(ids, [ep.as_str()]);

    // A token that may only create attempts sends examples, not payloads of its own making.
    let (_, portal) = server
        .call(
            "POST",
            "/api/v1/auth/app-portal-access/ex",
            Some(json!({ "capabilities": ["ViewBase", "CreateAttempts"] })),
        )
        .await;
    let limited = portal["token"].as_str().expect("token").to_string();
    let own = json!({ "eventType": "invoice.paid", "payload": { "id": "in_forged", "amount": 1 } });
    let (status, err) = server.call_as(&limited, "POST", path, Some(own)).await;
    assert_error(status, &err, 403, "forbidden");
    let (status, sent) = server.call_as(&limited, "POST", path, Some(json!({ "eventType": "invoice.paid" }))).await;
    assert_eq!(status, 202, "an example it may send: {sent}");
    // An index with no examples to choose from is ignored, as Svix documents.
    let (status, sent) = server.call("POST", path, Some(json!({ "eventType": "svix.ping", "exampleIndex": 3 }))).await;
    assert_eq!((status, &sent["payload"]), (202, &json!({ "success": true })), "{sent}");
    assert_eq!(tried.wait_for(4, Duration::from_secs(10)).await.len(), 4);
    for (body, code, why) in [
        (json!({ "eventType": "no.such" }), 404, "an unknown event type"),
        (json!({ "eventType": "invoice.paid", "exampleIndex": 2 }), 422, "an example past the last"),
        (json!({ "eventType": "invoice.paid", "payload": [1] }), 422, "a payload that is not an object"),
        (json!({ "eventType": "bad type!" }), 422, "an invalid event type name"),
    ] {
        let (status, err) = server.call("POST", path, Some(body)).await;
        assert_eq!(status, code, "{why}: {err}");
    }
    let (status, _) = server.call("PATCH", "/api/v1/app/ex/endpoint/tried", Some(json!({ "disabled": true }))).await;
    assert_eq!(status, 200);
    let (status, err) = server.call("POST", path, Some(json!({ "eventType": "svix.ping" }))).await;
    assert_eq!(status, 409, "a disabled endpoint: {err}");

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(other.received().is_empty(), "the other endpoint got nothing: {:?}", other.received());
    assert_eq!(tried.received().len(), 4);
}

/// `POST /event-type/import/openapi` (Svix's `import_openapi`): a YAML document's webhooks
/// become event types named by their keys, with their `$ref`s inlined and the document's
/// example, which `send-example` then sends; a dry run changes nothing and says what would
/// change; an import creates, updates and unarchives, and names only what it changed;
/// `replaceAll` archives the rest; only the admin token may import; bad input is refused
/// with a JSON error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_import_from_an_openapi_document() {
    let server = Server::start("").await;
    let path = "/api/v1/event-type/import/openapi";
    for body in [
        json!({ "name": "pet.sold", "description": "old words" }),
        json!({ "name": "pet.gone", "description": "A pet left", "archived": true }),
        json!({ "name": "legacy.thing", "description": "not in the document" }),
    ] {
        let (status, out) = server.call("POST", "/api/v1/event-type", Some(body)).await;
        assert_eq!(status, 201, "{out}");
    }
    let yaml = r#"
openapi: 3.1.0
info: { title: Pets, version: "1" }
webhooks:
  pet.new:
    post:
      operationId: petAdded
      summary: A pet was added
      requestBody:
        content:
          application/json:
            schema: { $ref: '#/components/schemas/Pet' }
            examples:
              rex: { value: { id: 7, name: Rex } }
      responses:
        200: { description: ok }
  pet.sold:
    post: { description: A pet was sold, deprecated: true }
  pet.gone:
    post: { description: A pet left }
components:
  schemas:
    Pet:
      type: object
      required: [id]
      properties:
        id: { type: integer }
        name: { type: string }
"#;
    let pet_schemas = json!({ "1": {
        "type": "object",
        "required": ["id"],
        "properties": { "id": { "type": "integer" }, "name": { "type": "string" } },
        "examples": [{ "id": 7, "name": "Rex" }],
    } });
    let everything = || async {
        let list = list_all(&server, "/api/v1/event-type?include_archived=true&with_content=true").await;
        list["data"].as_array().expect("a list").clone()
    };
    let before = everything().await;

    // A dry run: what would change, and nothing changed.
    let (status, dry) =
        server.call("POST", path, Some(json!({ "specRaw": yaml, "dryRun": true, "replaceAll": true }))).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["data"]["modified"], json!(["legacy.thing", "pet.gone", "pet.new", "pet.sold"]), "{dry}");
    let to_modify = dry["data"]["to_modify"].as_array().unwrap_or_else(|| panic!("to_modify, snake_case: {dry}"));
    let names: Vec<&str> = to_modify.iter().map(|t| t["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["pet.gone", "pet.new", "pet.sold"], "the archived one is not the document's");
    let new = &to_modify[1];
    assert_eq!(new["description"], "A pet was added");
    assert_eq!(new["deprecated"], false);
    assert_eq!(new["schemas"], pet_schemas);
    assert_eq!(to_modify[2]["deprecated"], true);
    assert_eq!(everything().await, before, "a dry run changes nothing");
    // The answer is as documented, Svix's snake_case `to_modify` included.
    let doc = send(request(&server, None, "GET", "/api/v1/openapi.json")).await.json();
    let out = answer_schema(&doc, "post", path, "200");
    assert_matches(out, &dry, "EventTypeImportOpenApiOut");
    let data = resolve(&doc, &out["properties"]["data"]);
    assert_matches(data, &dry["data"], "EventTypeImportOpenApiOutData");
    assert_matches(resolve(&doc, &data["properties"]["to_modify"]["items"]), new, "EventTypeFromOpenApi");

    // The import: created, updated, unarchived; the one outside the document kept.
    let (status, out) = server.call("POST", path, Some(json!({ "specRaw": yaml }))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out, json!({ "data": { "modified": ["pet.gone", "pet.new", "pet.sold"] } }));
    let (status, pet) = server.call("GET", "/api/v1/event-type/pet.new", None).await;
    assert_eq!(status, 200, "{pet}");
    assert_eq!(
        (&pet["description"], &pet["archived"], &pet["schemas"]),
        (&json!("A pet was added"), &json!(false), &pet_schemas)
    );
    let (_, sold) = server.call("GET", "/api/v1/event-type/pet.sold", None).await;
    assert_eq!((&sold["description"], &sold["deprecated"]), (&json!("A pet was sold"), &json!(true)));
    let (_, gone) = server.call("GET", "/api/v1/event-type/pet.gone", None).await;
    assert_eq!(gone["archived"], false, "unarchived: {gone}");
    let active = list_all(&server, "/api/v1/event-type").await;
    let names: Vec<&str> = active["data"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["legacy.thing", "pet.gone", "pet.new", "pet.sold"]);

    // The same document again, as a parsed object: nothing to change.
    let spec: Value = {
        let (status, dry) = server.call("POST", path, Some(json!({ "specRaw": yaml, "dryRun": true }))).await;
        assert_eq!((status, &dry["data"]["modified"]), (200, &json!([])), "{dry}");
        json!({
            "openapi": "3.1.0",
            "webhooks": {
                "pet.new": { "post": { "summary": "A pet was added", "requestBody": { "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Pet" },
                    "examples": { "rex": { "value": { "id": 7, "name": "Rex" } } },
                } } } } },
                "pet.sold": { "post": { "description": "A pet was sold", "deprecated": true } },
                "pet.gone": { "post": { "description": "A pet left" } },
            },
            "components": { "schemas": { "Pet": {
                "type": "object",
                "required": ["id"],
                "properties": { "id": { "type": "integer" }, "name": { "type": "string" } },
            } } },
        })
    };
    let (status, out) = server.call("POST", path, Some(json!({ "spec": spec }))).await;
    assert_eq!((status, &out), (200, &json!({ "data": { "modified": [] } })));

    // replaceAll: the event type outside the document is archived.
    let (status, out) = server.call("POST", path, Some(json!({ "spec": spec, "replaceAll": true }))).await;
    assert_eq!((status, &out), (200, &json!({ "data": { "modified": ["legacy.thing"] } })));
    let (_, legacy) = server.call("GET", "/api/v1/event-type/legacy.thing", None).await;
    assert_eq!(legacy["archived"], true, "{legacy}");

    // send-example sends the imported example.
    let receiver = Receiver::start().await;
    create_app_with(&server, json!({ "name": "Pets", "uid": "pets" })).await;
    server.create_endpoint("pets", json!({ "url": receiver.url, "uid": "hook" })).await;
    let (status, msg) = server
        .call("POST", "/api/v1/app/pets/endpoint/hook/send-example", Some(json!({ "eventType": "pet.new" })))
        .await;
    assert_eq!(status, 202, "{msg}");
    assert_eq!(msg["payload"], json!({ "id": 7, "name": "Rex" }));
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).await[0].json(), json!({ "id": 7, "name": "Rex" }));

    // Only the admin token imports.
    let token = server.app_token("pets").await;
    let (status, body) = server.call_as(&token, "POST", path, Some(json!({ "spec": spec }))).await;
    assert_error(status, &body, 403, "forbidden");
    let resp = send(request(&server, None, "POST", path).json(&json!({ "spec": spec }))).await;
    assert_error(resp.status, &resp.json(), 401, "authentication_failed");

    // Bad input: a JSON error, and nothing changed.
    let before = everything().await;
    for (body, want_status, want_code, why) in [
        (json!({}), 400, "bad_request", "neither spec nor specRaw"),
        (json!({ "spec": spec, "specRaw": yaml }), 400, "bad_request", "both"),
        (json!({ "spec": null, "specRaw": null }), 400, "bad_request", "both null"),
        (json!({ "spec": spec, "replace_all": true }), 422, "validation", "an unknown field"),
    ] {
        let (status, err) = server.call("POST", path, Some(body)).await;
        assert_error(status, &err, want_status, want_code);
        assert!(err["detail"].to_string().len() > 10, "{why}: {err}");
    }
    let bad_name = json!({ "webhooks": { "pet.new": { "post": {} }, "pet new!": { "post": {} } } });
    for (body, field, says) in [
        (json!({ "specRaw": "webhooks: [unclosed" }), "specRaw", "neither valid JSON nor valid YAML"),
        (json!({ "specRaw": "just words" }), "specRaw", "must be an OpenAPI document"),
        (json!({ "spec": [1, 2] }), "spec", "must be an OpenAPI document"),
        (json!({ "spec": { "openapi": "3.1.0", "paths": {} } }), "spec", "has no webhooks"),
        (json!({ "spec": bad_name, "replaceAll": true }), "spec", "webhook \"pet new!\""),
        (json!({ "specRaw": bad_name.to_string() }), "specRaw", "webhook \"pet new!\""),
        (
            json!({ "spec": { "webhooks": { "x": { "post": { "requestBody": { "$ref": "#/nope" } } } } } }),
            "spec",
            "#/nope",
        ),
    ] {
        let (status, err) = server.call("POST", path, Some(body)).await;
        assert_invalid(status, &err, field);
        let msg = err["detail"][0]["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{msg:?} should say {says:?}");
    }
    assert_eq!(everything().await, before, "refused imports change nothing");
}

/// Recoveries and replays are recorded as background tasks (Svix's flow: start one, then
/// look its task up): found by the id they answered, `finished`, with what they did; lists
/// filter by type and state; an application token sees its own application's tasks only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recoveries_and_replays_are_found_as_background_tasks() {
    let server = Server::start("").await;
    let receiver = Receiver::start().await;
    for app in ["bt1", "bt2"] {
        create_app_with(&server, json!({ "name": app, "uid": app })).await;
        server.create_endpoint(app, json!({ "url": receiver.url, "uid": "ep" })).await;
    }
    let since = "2020-01-01T00:00:00Z";
    let (status, recovery) =
        server.call("POST", "/api/v1/app/bt1/endpoint/ep/recover", Some(json!({ "since": since }))).await;
    assert_eq!(status, 202, "{recovery}");
    let (status, replay) =
        server.call("POST", "/api/v1/app/bt2/endpoint/ep/replay-missing", Some(json!({ "since": since }))).await;
    assert_eq!(status, 202, "{replay}");

    let (status, task) =
        server.call("GET", &format!("/api/v1/background-task/{}", recovery["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["id"], recovery["id"]);
    assert_eq!(task["status"], "finished");
    assert_eq!(task["task"], "endpoint.recover");
    assert_eq!(task["updatedAt"], recovery["updatedAt"]);
    let (_, ep) = server.call("GET", "/api/v1/app/bt1/endpoint/ep", None).await;
    assert_eq!(task["data"], json!({ "endpointId": ep["id"], "recovered": 0, "messagesSent": 0 }));

    let all = list_all(&server, "/api/v1/background-task").await;
    let ids: Vec<&Value> = all["data"].as_array().unwrap().iter().map(|t| &t["id"]).collect();
    assert_eq!(ids, [&replay["id"], &recovery["id"]], "newest first");
    let replays = list_all(&server, "/api/v1/background-task?task=endpoint.replay").await;
    assert_eq!(replays["data"].as_array().unwrap().len(), 1);
    assert_eq!(replays["data"][0]["data"]["replayed"], 0);
    let running = list_all(&server, "/api/v1/background-task?status=running").await;
    assert!(running["data"].as_array().unwrap().is_empty());
    let (status, _) = server.call("GET", "/api/v1/background-task?status=lost", None).await;
    assert_eq!(status, 422);

    // An application token: its own application's tasks only.
    let token = server.app_token("bt1").await;
    let (status, own) = server.call_as(&token, "GET", "/api/v1/background-task", None).await;
    assert_eq!(status, 200, "{own}");
    let ids: Vec<&Value> = own["data"].as_array().unwrap().iter().map(|t| &t["id"]).collect();
    assert_eq!(ids, [&recovery["id"]]);
    let (status, _) = server
        .call_as(&token, "GET", &format!("/api/v1/background-task/{}", replay["id"].as_str().unwrap()), None)
        .await;
    assert_eq!(status, 404, "another application's task");
    let (status, _) = server.call("GET", "/api/v1/background-task/qtask_nope", None).await;
    assert_eq!(status, 404);
}

/// Svix's bulk expunge and expunge-all-contents: payloads emptied, other applications'
/// messages untouched, unknown ids reported, and the purge recorded as a task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_expunged_in_bulk_and_all_at_once() {
    let server = Server::start("").await;
    let app = server.create_app("purge").await;
    let other = server.create_app("kept").await;
    let mut sent = Vec::new();
    for n in 0..3 {
        let body = json!({ "eventType": "a.b", "eventId": format!("evt-{n}"), "payload": { "secret": n } });
        let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body)).await;
        assert_eq!(status, 202, "{out}");
        sent.push(id_of(&out));
    }
    let theirs = server.send_message(&other, "a.b", json!({ "secret": "theirs" })).await;
    let payload = |app: String, msg: String| {
        let server = &server;
        async move {
            let (status, out) = server.call("GET", &format!("/api/v1/app/{app}/msg/{msg}"), None).await;
            assert_eq!(status, 200, "{out}");
            out["payload"].clone()
        }
    };

    // By id and by eventId; another application's message is not found through this one.
    let ids = json!({ "ids": [sent[0], "evt-1", theirs, "msg_nothing"] });
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg/bulk-expunge"), Some(ids)).await;
    assert_eq!(status, 200, "{out}");
    let want = json!({ sent[0].clone(): "expunged", "evt-1": "expunged", theirs.clone(): "not-found", "msg_nothing": "not-found" });
    assert_eq!(out["results"], want);
    assert_eq!(payload(app.clone(), sent[0].clone()).await, json!({}));
    assert_eq!(payload(app.clone(), sent[1].clone()).await, json!({}));
    assert_eq!(payload(app.clone(), sent[2].clone()).await, json!({ "secret": 2 }), "not named, kept");
    assert_eq!(payload(other.clone(), theirs.clone()).await, json!({ "secret": "theirs" }));
    for body in [json!({ "ids": [] }), json!({ "ids": (0..1001).map(|i| format!("msg_{i}")).collect::<Vec<_>>() })] {
        let (status, err) = server.call("POST", &format!("/api/v1/app/{app}/msg/bulk-expunge"), Some(body)).await;
        assert_invalid(status, &err, "ids");
    }
    // An id no store can hold refuses the whole request, before any is expunged.
    let body = json!({ "ids": [sent[2], "a\u{0}b"] });
    let (status, err) = server.call("POST", &format!("/api/v1/app/{app}/msg/bulk-expunge"), Some(body)).await;
    assert_invalid(status, &err, "ids");
    assert_eq!(payload(app.clone(), sent[2].clone()).await, json!({ "secret": 2 }), "refused: nothing expunged");
    let (status, err) = server.call("POST", &format!("/api/v1/app/{app}/msg/bulk-expunge"), Some(json!({}))).await;
    assert_eq!(status, 422, "ids are required: {err}");

    // Everything, through an application token: its own application only.
    let token = server.app_token(&app).await;
    let (status, err) =
        server.call_as(&token, "POST", &format!("/api/v1/app/{other}/msg/expunge-all-contents"), None).await;
    assert!(matches!(status, 403 | 404), "another application's purge: {status} {err}");
    let (status, task) =
        server.call_as(&token, "POST", &format!("/api/v1/app/{app}/msg/expunge-all-contents"), None).await;
    assert_eq!(status, 202, "{task}");
    assert_eq!((task["task"].as_str(), task["status"].as_str()), (Some("application.purge_content"), Some("finished")));
    assert_eq!(task["expunged"], 3);
    assert_eq!(payload(app.clone(), sent[2].clone()).await, json!({}));
    assert_eq!(
        payload(other.clone(), theirs.clone()).await,
        json!({ "secret": "theirs" }),
        "another application's kept"
    );
    let (status, found) = server
        .call_as(&token, "GET", &format!("/api/v1/background-task/{}", task["id"].as_str().unwrap_or("")), None)
        .await;
    assert_eq!((status, &found["task"]), (200, &json!("application.purge_content")), "{found}");
    assert_eq!(found["data"]["expunged"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_names_the_principal() {
    let server = Server::start("").await;
    let app = server.create_app("me").await;
    let (status, me) = server.call("GET", "/api/v1/auth/whoami", None).await;
    assert_eq!((status, me), (200, json!({ "permissionSource": "GlobalAuthToken" })));
    let token = server.app_token(&app).await;
    let (status, me) = server.call_as(&token, "GET", "/api/v1/auth/whoami", None).await;
    assert_eq!((status, me), (200, json!({ "appId": app, "permissionSource": "SvixJwt" })));
    let (status, err) = server.call_as("sk_wrong", "GET", "/api/v1/auth/whoami", None).await;
    assert_error(status, &err, 401, "authentication_failed");
}

/// Svix's `application` in a message body: the application named in the path is created
/// with it when none exists (once, even by concurrent posts), and it is ignored otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_can_create_its_application() {
    let server = Server::start("").await;
    let post = |key: &str, body: Value| {
        let (server, path) = (&server, format!("/api/v1/app/{key}/msg"));
        async move { server.call("POST", &path, Some(body)).await }
    };
    let msg = |app: Value| json!({ "eventType": "a.b", "payload": { "k": 1 }, "application": app });

    let (status, out) = post("customer-7", msg(json!({ "name": "Customer 7", "metadata": { "tier": "gold" } }))).await;
    assert_eq!(status, 202, "{out}");
    let (status, app) = server.call("GET", "/api/v1/app/customer-7", None).await;
    assert_eq!(status, 200, "{app}");
    assert_eq!(
        (&app["uid"], &app["name"], &app["metadata"]["tier"]),
        (&json!("customer-7"), &json!("Customer 7"), &json!("gold"))
    );
    let (status, got) = server.call("GET", &format!("/api/v1/app/customer-7/msg/{}", id_of(&out)), None).await;
    assert_eq!((status, &got["payload"]), (200, &json!({ "k": 1 })), "{got}");

    // Once it exists, the body's application is ignored.
    let (status, _) = post("customer-7", msg(json!({ "name": "Renamed" }))).await;
    assert_eq!(status, 202);
    assert_eq!(server.call("GET", "/api/v1/app/customer-7", None).await.1["name"], "Customer 7");

    // Without one, or with a uid other than the path's, nothing is created.
    let (status, err) = post("customer-8", json!({ "eventType": "a.b", "payload": {} })).await;
    assert_error(status, &err, 404, "not_found");
    let (status, err) = post("customer-8", msg(json!({ "name": "C8", "uid": "customer-9" }))).await;
    assert_invalid(status, &err, "application.uid");
    let (status, err) = post("customer-8", msg(json!({ "name": "" }))).await;
    assert_eq!(status, 422, "an invalid application: {err}");
    assert_eq!(server.call("GET", "/api/v1/app/customer-8", None).await.0, 404);

    // An application token cannot create applications.
    let token = server.app_token("customer-7").await;
    let (status, err) =
        server.call_as(&token, "POST", "/api/v1/app/customer-10/msg", Some(msg(json!({ "name": "C10" })))).await;
    assert_error(status, &err, 404, "not_found");
    assert_eq!(server.call("GET", "/api/v1/app/customer-10", None).await.0, 404);

    // Concurrent first messages create one application and keep every message.
    let posts = (0..8).map(|_| post("customer-11", msg(json!({ "name": "C11" }))));
    for (status, out) in futures::future::join_all(posts).await {
        assert_eq!(status, 202, "{out}");
    }
    let apps = list_all(&server, "/api/v1/app?limit=250").await;
    let named: Vec<_> = apps["data"].as_array().into_iter().flatten().filter(|a| a["uid"] == "customer-11").collect();
    assert_eq!(named.len(), 1, "{apps}");
    let msgs = list_all(&server, "/api/v1/app/customer-11/msg").await;
    assert_eq!(msgs["data"].as_array().map(Vec::len), Some(8));
}

/// A token without a flag pages through the event types it sees, one at a time, past
/// hundreds hidden from it between them (more than one internal read of the most a page
/// holds): exactly those, in order, each page full but the last, each iterator where the
/// next page starts; either way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_behind_flags_are_skipped_when_paging() {
    let server = Server::start("").await;
    let mut types = Vec::new();
    for (shown, hidden) in [("a.shown", "b"), ("c.shown", "d"), ("e.shown", "f")] {
        types.push(json!({ "name": shown }));
        types.extend((0..300).map(|i| json!({ "name": format!("{hidden}.{i:03}"), "featureFlags": ["beta"] })));
    }
    let (status, out) = server.call("POST", "/api/v1/environment/import", Some(json!({ "eventTypes": types }))).await;
    assert_eq!(status, 204, "{out}");
    let app = server.create_app("flags").await;
    let (status, access) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{app}"), None).await;
    assert_eq!(status, 200, "{access}");
    let token = access["token"].as_str().expect("token").to_string();
    let page_through = |query: &'static str, limit: usize| {
        let (server, token) = (&server, &token);
        async move {
            let (mut names, mut iterator) = (Vec::new(), String::new());
            for _ in 0..1000 {
                let path = format!("/api/v1/event-type?limit={limit}{query}&iterator={iterator}");
                let (status, page) = server.call_as(token, "GET", &path, None).await;
                assert_eq!(status, 200, "{page}");
                let got = ids_by_name(&page);
                if page["done"] == true {
                    names.extend(got);
                    return names;
                }
                assert_eq!(got.len(), limit, "a short page that is not the last: {page}");
                assert_eq!(page["iterator"].as_str(), got.last().map(String::as_str), "{page}");
                iterator = got.last().cloned().unwrap_or_default();
                names.extend(got);
            }
            panic!("paging does not end: {names:?}");
        }
    };
    assert_eq!(page_through("", 1).await, ["a.shown", "c.shown", "e.shown"]);
    assert_eq!(page_through("&order=descending", 2).await, ["e.shown", "c.shown", "a.shown"]);
    // The admin sees them all, 250 a page.
    let (status, page) = server.call("GET", "/api/v1/event-type?limit=250&iterator=c.shown", None).await;
    assert_eq!(status, 200, "{page}");
    let got = ids_by_name(&page);
    assert_eq!((got.len(), got.first().map(String::as_str), page["done"].as_bool()), (250, Some("d.000"), Some(false)));
}

fn ids_by_name(page: &Value) -> Vec<String> {
    let data = page["data"].as_array().unwrap_or_else(|| panic!("not a list: {page}"));
    data.iter().map(|e| e["name"].as_str().unwrap_or_else(|| panic!("no name in {e}")).to_string()).collect()
}

/// Svix's environment export and import: one installation's event catalogue copied to
/// another as it stands (archived types, schemas and flags included); an invalid import
/// writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_export_imports_into_another_installation() {
    let source = Server::start("").await;
    let target = Server::start("").await;
    let schemas = json!({ "1": { "type": "object", "examples": [{ "id": 1 }] } });
    for body in [
        json!({ "name": "invoice.paid", "description": "Paid", "schemas": schemas, "featureFlags": ["beta"] }),
        json!({ "name": "user.old", "description": "Old", "archived": true }),
        json!({ "name": "user.new", "deprecated": true }),
    ] {
        let (status, out) = source.call("POST", "/api/v1/event-type", Some(body)).await;
        assert_eq!(status, 201, "{out}");
    }
    assert_eq!(source.call("GET", "/api/v1/event-type/invoice.paid", None).await.1["featureFlag"], "beta");

    let (status, export) = source.call("POST", "/api/v1/environment/export", None).await;
    assert_eq!(status, 200, "{export}");
    assert_eq!((&export["version"], &export["settings"], &export["connectors"]), (&json!(1), &Value::Null, &json!([])));
    let names: Vec<&str> =
        export["eventTypes"].as_array().into_iter().flatten().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["invoice.paid", "user.new", "user.old"], "every one, archived too: {export}");

    // The export, as it stands, is the import.
    let (status, out) = target.call("POST", "/api/v1/environment/import", Some(export.clone())).await;
    assert_eq!(status, 204, "{out}");
    let fields = |e: &Value| {
        json!([e["name"], e["description"], e["archived"], e["deprecated"], e["featureFlag"], e["schemas"]])
    };
    for original in export["eventTypes"].as_array().into_iter().flatten() {
        let name = original["name"].as_str().unwrap_or_default();
        let (status, copy) = target.call("GET", &format!("/api/v1/event-type/{name}"), None).await;
        assert_eq!(status, 200, "{copy}");
        assert_eq!(fields(&copy), fields(original));
    }

    // An import replaces the types it names; one invalid type and nothing is written.
    let changed = json!({ "eventTypes": [{ "name": "user.new", "description": "Now documented" }] });
    assert_eq!(target.call("POST", "/api/v1/environment/import", Some(changed)).await.0, 204);
    let (_, now) = target.call("GET", "/api/v1/event-type/user.new", None).await;
    assert_eq!((&now["description"], &now["deprecated"]), (&json!("Now documented"), &json!(false)));
    let mixed = json!({ "eventTypes": [{ "name": "brand.new" }, { "name": "bad name" }] });
    let (status, err) = target.call("POST", "/api/v1/environment/import", Some(mixed)).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(target.call("GET", "/api/v1/event-type/brand.new", None).await.0, 404, "nothing written");
    let (status, err) = target
        .call("POST", "/api/v1/environment/import", Some(json!({ "eventTypes": [{ "name": "x.y", "color": 1 }] })))
        .await;
    assert_invalid(status, &err, "eventTypes[0]");
    let bad_flag = json!({ "name": "flagged", "featureFlags": ["a", "not a flag"] });
    let (status, err) = target.call("POST", "/api/v1/event-type", Some(bad_flag)).await;
    assert_invalid(status, &err, "featureFlags");

    // Admin only.
    let app = target.create_app("env").await;
    let token = target.app_token(&app).await;
    let (status, _) = target.call_as(&token, "POST", "/api/v1/environment/export", None).await;
    assert_eq!(status, 403);
    let (status, _) = target.call_as(&token, "POST", "/api/v1/environment/import", Some(json!({}))).await;
    assert_eq!(status, 403);
}

/// An export larger than `max_body_bytes` (40 event types with 40 KB schemas) imports as it
/// stands, with an `Idempotency-Key` too (whose layer reads the body first): the imports
/// take bodies up to 32 MiB, every other route up to `max_body_bytes`, and each refusal
/// names its own limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_past_the_body_limit_imports_as_it_stands() {
    let source = Server::start("").await;
    let target = Server::start("").await;
    let text = "x".repeat(40_000);
    for n in 0..40 {
        let schemas = json!({ "1": { "type": "object", "description": text } });
        let (status, out) = source
            .call("POST", "/api/v1/event-type", Some(json!({ "name": format!("big.{n}"), "schemas": schemas })))
            .await;
        assert_eq!(status, 201, "{out}");
    }
    let (status, export) = source.call("POST", "/api/v1/environment/export", None).await;
    assert_eq!(status, 200);
    let body = export.to_string();
    assert!(body.len() > 1 << 20, "the export is {} bytes", body.len());
    let import = |body: String, key: Option<&str>| {
        let mut rb = request(&target, Some(ADMIN), "POST", "/api/v1/environment/import")
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            rb = rb.header("idempotency-key", key);
        }
        send(rb)
    };
    for key in [None, Some("import-1")] {
        let done = import(body.clone(), key).await;
        assert_eq!(done.status, 204, "{key:?}: {}", done.text);
    }
    let (status, copy) = target.call("GET", "/api/v1/event-type/big.39", None).await;
    assert_eq!((status, copy["schemas"]["1"]["description"].as_str().map(str::len)), (200, Some(40_000)));
    // Past 32 MiB, refused and said so.
    let huge = format!("{{\"eventTypes\": [], \"pad\": \"{}\"}}", "y".repeat(33 << 20));
    for key in [None, Some("import-2")] {
        let refused = import(huge.clone(), key).await;
        assert_error(refused.status, &refused.json(), 413, "payload_too_large");
        assert!(refused.text.contains(&(32usize << 20).to_string()), "{key:?}: {}", refused.text);
    }
    // The OpenAPI import takes as much.
    let spec = json!({ "openapi": "3.1.0", "info": { "title": "t", "version": "1" }, "webhooks": {},
                       "x-pad": "p".repeat(2 << 20) });
    let (status, out) = target.call("POST", "/api/v1/event-type/import/openapi", Some(json!({ "spec": spec }))).await;
    assert_eq!(status, 200, "{out}");
    // Another route keeps the server's limit.
    let app = target.create_app("limits").await;
    let pad = "z".repeat(1 << 20);
    let message = json!({ "eventType": "big.1", "payload": { "pad": pad } }).to_string();
    let refused = post_text(&target, &format!("/api/v1/app/{app}/msg/"), &message).await;
    assert_error(refused.status, &refused.json(), 413, "payload_too_large");
    assert!(refused.text.contains(&(1usize << 20).to_string()), "{}", refused.text);
}

/// A read-only token (`readOnly: true`, i.e. `ViewBase`) goes through every documented
/// operation of its application: it reads everything but endpoint secrets, and whatever
/// would change something answers 403 before doing anything, so no route escapes the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_reads_and_changes_nothing() {
    let server = Server::start("").await;
    let doc = send(request(&server, None, "GET", "/api/v1/openapi.json")).await.json();
    let receiver = Receiver::start().await;
    create_app_with(&server, json!({ "name": "Read only", "uid": "ro" })).await;
    // A custom header carrying the receiver's credential, which a read-only token must not see.
    let endpoint = json!({ "url": receiver.url, "uid": "ep", "headers": { "X-Api-Key": "s3cr3t-key" } });
    let (status, _) = server.call("POST", "/api/v1/app/ro/endpoint", Some(endpoint)).await;
    assert_eq!(status, 201);
    // And a transformation variable carrying it, which the transformation puts in the URL it
    // sends to (so in the attempt's URL).
    let code = "function handler(w) { w.url = w.url + '?key=' + w.variables.apiKey; return w }";
    let transformation = json!({ "code": code, "enabled": true, "variables": { "apiKey": "s3cr3t-key" } });
    let (status, _) = server.call("PATCH", "/api/v1/app/ro/endpoint/ep/transformation", Some(transformation)).await;
    assert_eq!(status, 204);
    let msg_id = server.send_message("ro", "a.b", json!({ "n": 1 })).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let (status, access) =
        server.call("POST", "/api/v1/auth/app-portal-access/ro", Some(json!({ "readOnly": true }))).await;
    assert_eq!(status, 200, "{access}");
    let token = access["token"].as_str().expect("token").to_string();
    let (status, me) = server.call_as(&token, "GET", "/api/v1/auth/whoami", None).await;
    assert_eq!((status, &me["capabilities"]), (200, &json!(["ViewBase"])), "{me}");
    let (_, admin) = server.call("GET", "/api/v1/auth/whoami", None).await;
    assert!(admin.get("capabilities").is_none(), "the admin token may do everything: {admin}");
    // The attempt is logged once its answer was read, after the receiver had the request.
    let attempts = server
        .wait_until(&format!("/api/v1/app/ro/attempt/msg/{msg_id}"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let attempt_id = attempts["data"][0]["id"].as_str().expect("attempt id").to_string();
    let value = |name: &str| -> String {
        match name {
            "app_id" => "ro".to_string(),
            "endpoint_id" => "ep".to_string(),
            "msg_id" => msg_id.clone(),
            "attempt_id" => attempt_id.clone(),
            _ => "x".to_string(),
        }
    };
    let mut refused = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !(path.starts_with("/api/v1/app/{app_id}") || path.starts_with("/api/v1/stats/app/{app_id}"))
            || path.ends_with("/events/stream")
        {
            continue;
        }
        for method in item.as_object().expect("path item").keys() {
            let url = fill_path(path, value);
            let mut rb = request(&server, Some(&token), &method.to_uppercase(), &url);
            if method != "get" {
                rb = rb.header("content-type", "application/json").body("{}");
            }
            let resp = send(rb).await;
            // Integrations are the admin token's only, reads included; secrets, custom
            // headers and OAuth settings need ViewEndpointSecret; reading a named
            // subscription, or a polling endpoint's consumer, moves its position.
            let reads = (method == "get" || path.ends_with("/preview") || path.ends_with("/precheck/active"))
                && !path.contains("/integration")
                && !path.ends_with("/secret")
                && !path.ends_with("/headers")
                && !path.ends_with("/oauth")
                && !path.ends_with("/mtls")
                && !path.contains("/events/subscription/")
                && !path.contains("/consumer/");
            assert!(!resp.text.contains("s3cr3t-key"), "{method} {path} shows a credential: {}", resp.text);
            if reads {
                assert_ne!(resp.status, 403, "{method} {path} is a read: {}", resp.text);
            } else {
                assert_eq!(resp.status, 403, "{method} {path} with a read-only token: {}", resp.text);
                assert_eq!(resp.json()["code"], "forbidden", "{method} {path}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 20, "only {refused} operations tried");
    // The attempt's custom header is shown redacted to it, and as sent to the admin.
    let path = format!("/api/v1/app/ro/attempt/msg/{msg_id}");
    let (status, seen) = server.call_as(&token, "GET", &path, None).await;
    assert_eq!((status, &seen["data"][0]["requestHeaders"]["x-api-key"]), (200, &json!("[redacted]")), "{seen}");
    // The signature too: with the payload, which it reads, it would sign a replay that
    // the receiver takes within its tolerance. The id and timestamp hold no secret.
    assert_eq!(seen["data"][0]["requestHeaders"]["webhook-signature"], "[redacted]", "{seen}");
    assert!(seen["data"][0]["requestHeaders"]["webhook-id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    let (_, full) = server.call("GET", &path, None).await;
    assert_eq!(full["data"][0]["requestHeaders"]["x-api-key"], "s3cr3t-key", "{full}");
    assert!(full["data"][0]["requestHeaders"]["webhook-signature"].as_str().is_some_and(|s| s.starts_with("v1,")));
    // The URL the transformation made is recorded without the variable it put there, for
    // every reader, as a response echoing it is.
    assert!(full["data"][0]["url"].as_str().is_some_and(|u| u.ends_with("?key=[redacted]")), "{full}");
    assert!(seen["data"][0]["url"].as_str().is_some_and(|u| u.contains("?key=")), "only its value hidden: {seen}");
    // Nothing changed: the application, its endpoint and its one message are as they were.
    let (status, ep) = server.call("GET", "/api/v1/app/ro/endpoint/ep", None).await;
    assert_eq!((status, ep["disabled"].as_bool()), (200, Some(false)), "{ep}");
    let messages = server.call("GET", "/api/v1/app/ro/msg", None).await.1;
    assert_eq!(messages["data"].as_array().map(Vec::len), Some(1), "{messages}");
    assert_eq!(receiver.received().len(), 1, "nothing was sent again");
}

/// With `task_wait = "0s"` a bulk replay answers its task `running` at once; the work goes
/// on apart from the request, and the task ends `finished` with what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_task_work_goes_on_after_its_answer() {
    let server = Server::start("task_wait = \"0s\"").await;
    let receiver = Receiver::start().await;
    create_app_with(&server, json!({ "name": "Tasks", "uid": "tasks" })).await;
    let (status, _) =
        server.call("POST", "/api/v1/app/tasks/endpoint", Some(json!({ "url": receiver.url, "uid": "ep" }))).await;
    assert_eq!(status, 201);
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    const N: usize = 300;
    for n in 0..N {
        server.send_message("tasks", "a.b", json!({ "n": n })).await;
    }
    receiver.wait_for(N, Duration::from_secs(30)).await;
    // Narrowed by the class of each message's last answer: one lookup per message, so the
    // work takes far longer than the answer.
    let body = json!({ "since": since, "statusCodeClass": 200 });
    let (status, task) = server.call("POST", "/api/v1/app/tasks/endpoint/ep/bulk-replay", Some(body)).await;
    assert_eq!((status, task["status"].as_str()), (202, Some("running")), "{task}");
    assert!(task.get("replayed").is_none(), "no count before the end: {task}");
    let id = task["id"].as_str().expect("task id");
    let done = server
        .wait_until(&format!("/api/v1/background-task/{id}"), Duration::from_secs(30), |t| t["status"] != "running")
        .await;
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(done["data"]["replayed"], N, "{done}");
    assert_eq!(done["data"]["messagesSent"], N, "as Svix's clients read it: {done}");
    assert_eq!(done["data"]["endpointId"].as_str().map(|e| e.starts_with("ep_")), Some(true), "{done}");
    assert_eq!(receiver.wait_for(2 * N, Duration::from_secs(30)).await.len(), 2 * N, "every message sent again");

    // A `since` at the calendar's first day is a window from the beginning, not a panic.
    let body = json!({ "since": "-262143-01-01T00:00:00Z", "statusCodeClass": 500 });
    let (status, task) = server.call("POST", "/api/v1/app/tasks/endpoint/ep/bulk-replay", Some(body)).await;
    assert_eq!(status, 202, "{task}");
    // Nor one ending in the calendar's last millisecond, which has no next one to round to.
    let body = json!({ "since": "2020-01-01T00:00:00Z", "until": "+262142-12-31T23:59:59.9995Z" });
    let (status, task) = server.call("POST", "/api/v1/app/tasks/endpoint/ep/recover", Some(body)).await;
    assert_eq!(status, 202, "{task}");
    // A `since` ahead of the server's clock (a client's clock ahead of it) is a window with
    // nothing in it, as for a recovery, not an error.
    let ahead = chrono::Utc::now() + chrono::Duration::seconds(5);
    let (status, task) =
        server.call("POST", "/api/v1/app/tasks/endpoint/ep/bulk-replay", Some(json!({ "since": ahead }))).await;
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_str().expect("task id");
    let done = server
        .wait_until(&format!("/api/v1/background-task/{id}"), Duration::from_secs(30), |t| t["status"] != "running")
        .await;
    assert_eq!((done["status"].as_str(), &done["data"]["replayed"]), (Some("finished"), &json!(0)), "{done}");
}

/// `message_rate_limit`: an application past it is refused with 429 and `Retry-After`, the
/// refused messages are not stored, other applications are not held back, and a retry of a
/// refused request (its `Idempotency-Key` too) goes through once the wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_posting_too_fast_is_asked_to_wait() {
    let server = Server::start("message_rate_limit = 5").await;
    let noisy = server.create_app("noisy").await;
    let quiet = server.create_app("quiet").await;
    let post = |app: &str, key: &str| {
        let body = json!({ "eventType": "a.b", "payload": { "k": key } });
        request(&server, Some(ADMIN), "POST", &format!("/api/v1/app/{app}/msg"))
            .header("idempotency-key", key)
            .json(&body)
    };
    // Twenty at once: however slow the machine, they arrive within the burst's second.
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..20).map(|i| send(post(&noisy, &format!("n-{i}"))))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut accepted = 0;
    let mut refused = None;
    for (i, r) in answers.into_iter().enumerate() {
        match r.status {
            202 => accepted += 1,
            429 => refused = Some((i, r)),
            other => panic!("{other}: {}", r.text),
        }
    }
    // A second's worth at once, then five a second.
    let most = 5 + (elapsed * 5.0).ceil() as usize;
    assert!((5..=most).contains(&accepted), "{accepted} accepted in {elapsed} s");
    let (last_refused, r) = refused.expect("some were refused");
    assert_eq!(r.headers["retry-after"], "1");
    let body: Value = serde_json::from_str(&r.text).unwrap();
    assert_error(429, &body, 429, "rate_limited");
    let stored = list_all(&server, &format!("/api/v1/app/{noisy}/msg?limit=250")).await;
    assert_eq!(stored["data"].as_array().unwrap().len(), accepted, "refused messages are not stored");
    // Another application is not held back.
    for i in 0..5 {
        assert_eq!(send(post(&quiet, &format!("q-{i}"))).await.status, 202);
    }
    // After the wait, the refused request goes through with its own key.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = send(post(&noisy, &format!("n-{last_refused}"))).await;
    assert_eq!(again.status, 202, "{}", again.text);
    assert!(again.headers.get("idempotent-replayed").is_none(), "a refusal is not stored under its key");

    // Sending an example is posting a message: one a second here, so the example right
    // after a message waits.
    let strict = Server::start("message_rate_limit = 1").await;
    let app = strict.create_app("strict").await;
    let (ep, _) = strict.create_endpoint(&app, json!({ "url": "http://127.0.0.1:9/unused" })).await;
    strict.send_message(&app, "a.b", json!({})).await;
    let example = format!("/api/v1/app/{app}/endpoint/{ep}/send-example");
    let (status, body) = strict.call("POST", &example, Some(json!({ "eventType": "svix.ping" }))).await;
    assert_eq!((status, &body["code"]), (429, &json!("rate_limited")), "{body}");
}

/// Sends `head` on a connection of its own, as [`raw_exchange`] does, and reads everything
/// the server sends until it ends the connection, within 10 s.
async fn raw_answer(server: &Server, head: impl AsRef<[u8]>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(head.as_ref()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("answered, and the connection ended, before a long timeout")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `head` (a request's head, ended by a blank line, asking `connection: close`) on a
/// connection of its own, with whatever part of a body follows it, and reads the answer:
/// its status and JSON body.
async fn raw_exchange(server: &Server, head: impl AsRef<[u8]>) -> (u16, Value) {
    let answer = raw_answer(server, head).await;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {answer}"));
    let (_, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no body: {answer}"));
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}")))
}

/// An answer given before its request's body was read (a wrong token, an application that
/// does not exist, where the route looks it up first) says `Connection: close`: the server does not read the rest, so the
/// connection cannot carry another request, and a client must not keep it in its pool. One
/// whose body was read, or that had none, keeps its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_was_read_closes_the_connection() {
    let server = Server::start("").await;
    let app = server.create_app("unread").await;
    let body = json!({ "eventType": "a.b", "payload": { "pad": "x".repeat(4000) } });
    let post =
        |token: &str, app: &str| request(&server, Some(token), "POST", &format!("/api/v1/app/{app}/msg")).json(&body);
    let wrong = send(post("sk_wrong_token_wrong_token", &app)).await;
    assert_eq!((wrong.status, wrong.header("connection")), (401, Some("close")), "{}", wrong.text);
    let precheck = request(&server, Some(ADMIN), "POST", "/api/v1/app/no-such-app/msg/precheck/active");
    let unknown = send(precheck.json(&json!({ "eventType": "a.b", "channels": ["x".repeat(4000)] }))).await;
    assert_eq!((unknown.status, unknown.header("connection")), (404, Some("close")), "{}", unknown.text);
    let read = send(post(ADMIN, &app)).await;
    assert_eq!((read.status, read.header("connection")), (202, None), "{}", read.text);
    let refused = send(request(&server, Some(ADMIN), "POST", &format!("/api/v1/app/{app}/msg")).json(&json!({}))).await;
    assert_eq!((refused.status, refused.header("connection")), (422, None), "read, then refused: {}", refused.text);
    let get = send(request(&server, Some("sk_wrong_token_wrong_token"), "GET", "/api/v1/app")).await;
    assert_eq!((get.status, get.header("connection")), (401, None), "no body to read");

    // An HTTP/1.0 client asking for keep-alive is told `close` alone (hyper would add
    // `keep-alive` to the `Connection` of an HTTP/1.1 answer), and the connection ends.
    let head = format!(
        "POST /api/v1/app/{app}/msg HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\nauthorization: Bearer wrong\r\n\
         content-type: application/json\r\ncontent-length: 20\r\n\r\n"
    );
    let answer = raw_answer(&server, &head).await.to_ascii_lowercase();
    let (head, _) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{answer}"));
    assert!(head.starts_with("http/1.0 401") && head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
}

/// A route whose body may be left out takes a request that announces a JSON content type
/// but sends nothing (`curl -X POST -H 'Content-Type: application/json'` without data: no
/// length at all), or a compressed body that decodes to nothing, as a request without a
/// body; a body that is there and is not JSON is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_body_announced_but_empty_is_no_body() {
    let server = Server::start("").await;
    let app = server.create_app("empty").await;
    let (ep, first) = server.create_endpoint(&app, json!({ "url": "https://example.com/hook" })).await;
    let secret = format!("/api/v1/app/{app}/endpoint/{ep}/secret");
    let curl_like = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\n\
             connection: close\r\n\r\n"
        )
    };
    let (status, rotated) = raw_exchange(&server, &curl_like(&format!("{secret}/rotate"))).await;
    assert_eq!(status, 200, "{rotated}");
    let (_, now) = server.call("GET", &secret, None).await;
    assert_eq!(rotated, now, "rotated to a generated key");
    assert_ne!(now["key"], json!(first));
    let (status, access) = raw_exchange(&server, &curl_like(&format!("/api/v1/auth/app-portal-access/{app}"))).await;
    assert_eq!(status, 200, "{access}");
    assert!(access["token"].is_string(), "{access}");

    // A gzip body that decodes to nothing: no body either.
    let r = send(
        request(&server, Some(ADMIN), "POST", &format!("{secret}/rotate"))
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(gzip(b"")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (_, later) = server.call("GET", &secret, None).await;
    assert_ne!(later, now);

    // A body that is there is read, and malformed it is refused, changing nothing.
    for bad in ["{", " "] {
        let r = post_text(&server, &format!("{secret}/rotate"), bad).await;
        assert_error(r.status, &r.json(), 400, "invalid_json");
        let (_, unchanged) = server.call("GET", &secret, None).await;
        assert_eq!(unchanged, later, "{bad:?}");
    }
}

/// A body that stops arriving for longer than `request_read_timeout` is answered 408
/// `request_timeout` (not a 400), wherever it is read: by the JSON extractor, an optional
/// body's, the idempotency layer and an inbound source, compressed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_a_request_timeout() {
    let server = Server::start("request_read_timeout = \"1s\"").await;
    let app = server.create_app("slow").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": "https://example.com/hook" })).await;
    let spec = json!({
        "name": "slow", "verification": { "type": "none" },
        "destinations": [{ "url": "https://example.com/hook" }],
    });
    let (status, source) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!(status, 201, "{source}");
    let source = source["id"].as_str().expect("source id");
    let api = format!("authorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\n");
    let stalls = [
        (format!("/api/v1/app/{app}/msg"), api.clone()),
        (format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate"), api.clone()),
        (format!("/api/v1/app/{app}/msg"), format!("{api}idempotency-key: slow\r\n")),
        (format!("/in/{source}"), "content-type: application/json\r\n".to_string()),
    ];
    for (path, headers) in stalls {
        // A few of the 100 bytes announced, then nothing.
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\n{headers}content-length: 100\r\n\r\n{{\"eventType");
        let (status, body) = raw_exchange(&server, &head).await;
        assert_error(status, &body, 408, "request_timeout");
    }
    // A compressed body, whose decoder was waiting for the rest.
    let gzipped = gzip(json!({ "eventType": "a.b", "payload": { "pad": "x".repeat(200) } }).to_string().as_bytes());
    let mut head = format!(
        "POST /api/v1/app/{app}/msg HTTP/1.1\r\nhost: x\r\n{api}content-encoding: gzip\r\ncontent-length: {}\r\n\r\n",
        gzipped.len()
    )
    .into_bytes();
    head.extend_from_slice(&gzipped[..gzipped.len() / 2]);
    let (status, body) = raw_exchange(&server, head).await;
    assert_error(status, &body, 408, "request_timeout");
    // Nothing was taken: no message, and the key is free for the whole request.
    assert_eq!(ids(&list_all(&server, &format!("/api/v1/app/{app}/msg")).await), Vec::<String>::new());
    let r = send(
        request(&server, Some(ADMIN), "POST", &format!("/api/v1/app/{app}/msg"))
            .header("idempotency-key", "slow")
            .json(&json!({ "eventType": "a.b", "payload": {} })),
    )
    .await;
    assert_eq!((r.status, r.header("idempotent-replayed")), (202, None), "{}", r.text);
}

/// A HEAD of a read that moves a stored position (a subscription's, a polling endpoint
/// consumer's), such as a monitor's probe, is refused: run as the GET it would have moved
/// the position past messages nobody received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_does_not_move_a_stored_read_position() {
    let server = Server::start("").await;
    let app = server.create_app("probed").await;
    let (poller, _) = server.create_endpoint(&app, json!({ "polling": true })).await;
    let msg = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    for path in
        [format!("/api/v1/app/{app}/events/subscription/s1"), format!("/api/v1/app/{app}/poller/{poller}/consumer/c1")]
    {
        let head = server.client.head(server.url(&path)).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(head.status(), 405, "{path}");
        assert_eq!(head.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET"), "{path}");
        let (status, page) = server.call("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let ids: Vec<&str> = page["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
        assert_eq!(ids, [msg.as_str()], "{path}: the message is still to be read");
    }
}
