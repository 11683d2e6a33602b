//! Operational webhooks, end to end: hooklane posts Svix's operational events into the
//! application named by `operational_app`, whose endpoints receive them signed like any
//! other webhook.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// The operational events a receiver got so far, as `(type, data)`, each checked to be
/// signed with `secret`.
fn events(rx: &Receiver, secret: &str) -> Vec<(String, Value)> {
    rx.received()
        .iter()
        .map(|r| {
            assert!(signature_valid(secret, r), "unsigned operational webhook: {:?}", r.headers);
            let body = r.json();
            (body["type"].as_str().unwrap_or_default().to_string(), body["data"].clone())
        })
        .collect()
}

/// A server posting operational events into the application with uid `ops` (created here,
/// with one endpoint at `ops_url`), its circuit breaker off so that every retry is made;
/// `delivery` adds `[delivery]` settings. Returns the server, the application's id, and
/// the endpoint's id and secret.
async fn with_operations(delivery: &str, ops_url: &str) -> (Server, String, String, String) {
    let server =
        Server::start(&format!("operational_app = \"ops\"\n[delivery]\ncircuit_failures = 0\n{delivery}")).await;
    let (status, ops) = server.call("POST", "/api/v1/app/", Some(json!({ "name": "operations", "uid": "ops" }))).await;
    assert_eq!(status, 201, "{ops}");
    let ops_app = ops["id"].as_str().expect("ops app id").to_string();
    let (ops_ep, secret) = server.create_endpoint(&ops_app, json!({ "url": ops_url })).await;
    (server, ops_app, ops_ep, secret)
}

async fn wait_for_event(rx: &Receiver, secret: &str, event_type: &str) -> Value {
    wait_for_matching(rx, secret, event_type, |_| true).await
}

/// The data of the first `event_type` event whose data passes `wanted`.
async fn wait_for_matching(rx: &Receiver, secret: &str, event_type: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((_, data)) = events(rx, secret).into_iter().find(|(t, d)| t == event_type && wanted(d)) {
            return data;
        }
        assert!(Instant::now() < deadline, "no such {event_type} event; got {:?}", events(rx, secret));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_exhausted_deliveries_and_disabling_are_reported() {
    // Two attempts (the first and one retry), disabled at the second failure; the circuit
    // breaker off so that the retry is attempted rather than paused.
    let ops_rx = Receiver::start().await;
    let (server, ops_app, ops_ep, ops_secret) =
        with_operations("disable_after = \"1ms\"\nretry_schedule = [\"100ms\"]", &ops_rx.url).await;

    let customer = server.create_app("customer").await;
    let failing = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let (ep, _) = server.create_endpoint(&customer, json!({ "url": failing.url, "uid": "their-ep" })).await;
    let created = wait_for_event(&ops_rx, &ops_secret, "endpoint.created").await;
    assert_eq!(created, json!({ "appId": customer, "appUid": null, "endpointId": ep, "endpointUid": "their-ep" }));

    let msg = server.send_message(&customer, "invoice.paid", json!({ "n": 1 })).await;
    let exhausted = wait_for_event(&ops_rx, &ops_secret, "message.attempt.exhausted").await;
    assert_eq!(exhausted["appId"], customer.as_str());
    assert_eq!(exhausted["msgId"], msg.as_str());
    assert_eq!(exhausted["endpointId"], ep.as_str());
    assert_eq!(exhausted["lastAttempt"]["responseStatusCode"], 500);
    let attempt_id = exhausted["lastAttempt"]["id"].as_str().expect("attempt id");
    let (status, attempt) =
        server.call("GET", &format!("/api/v1/app/{customer}/msg/{msg}/attempt/{attempt_id}"), None).await;
    assert_eq!(status, 200, "the reported attempt is in the log: {attempt}");
    assert_eq!(failing.received().len(), 2, "two attempts, then no retry left");

    let disabled = wait_for_event(&ops_rx, &ops_secret, "endpoint.disabled").await;
    assert_eq!(disabled["endpointId"], ep.as_str());
    assert_eq!(disabled["trigger"], "automatic");
    assert!(disabled["failSince"].is_string(), "{disabled}");

    let (status, _) = server
        .call("PATCH", &format!("/api/v1/app/{customer}/endpoint/{ep}"), Some(json!({ "disabled": false })))
        .await;
    assert_eq!(status, 200);
    assert_eq!(wait_for_event(&ops_rx, &ops_secret, "endpoint.updated").await["endpointId"], ep.as_str());
    // Re-enabled: reported as such too, as Svix does.
    let enabled = wait_for_event(&ops_rx, &ops_secret, "endpoint.enabled").await;
    assert_eq!(enabled, json!({ "appId": customer, "appUid": null, "endpointId": ep, "endpointUid": "their-ep" }));
    // Disabled by hand: reported as such, besides the update.
    let (status, _) =
        server.call("PATCH", &format!("/api/v1/app/{customer}/endpoint/{ep}"), Some(json!({ "disabled": true }))).await;
    assert_eq!(status, 200);
    let manual = wait_for_matching(&ops_rx, &ops_secret, "endpoint.disabled", |d| d["trigger"] == "manual").await;
    assert_eq!(manual["endpointId"], ep.as_str());
    let (status, _) = server.call("DELETE", &format!("/api/v1/app/{customer}/endpoint/{ep}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(wait_for_event(&ops_rx, &ops_secret, "endpoint.deleted").await["endpointId"], ep.as_str());

    // Nothing about the operational application itself (its own endpoint's creation).
    let about_ops: Vec<_> =
        events(&ops_rx, &ops_secret).into_iter().filter(|(_, d)| d["endpointId"] == ops_ep.as_str()).collect();
    assert!(about_ops.is_empty(), "{about_ops:?}");
    // The events are messages of the operational application, listed like any other.
    let (status, list) = server.call("GET", &format!("/api/v1/app/{ops_app}/msg/"), None).await;
    assert_eq!(status, 200);
    let types: Vec<&str> =
        list["data"].as_array().expect("messages").iter().filter_map(|m| m["eventType"].as_str()).collect();
    for t in
        ["endpoint.created", "message.attempt.exhausted", "endpoint.disabled", "endpoint.updated", "endpoint.deleted"]
    {
        assert!(types.contains(&t), "{t} not in {types:?}");
    }
}

/// Changes of one endpoint made one after another are posted in that order: created, each
/// update (a manual disabling's `disabled` after its `updated`, a re-enabling's `enabled`),
/// then deleted (each was posted by a task of its own, in whatever order they ran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_are_posted_in_the_order_they_were_made() {
    let ops_rx = Receiver::start().await;
    let (server, ops_app, _, _) = with_operations("", &ops_rx.url).await;
    let customer = server.create_app("customer").await;
    let (ep, _) = server.create_endpoint(&customer, json!({ "url": "https://example.com/hook" })).await;
    let path = format!("/api/v1/app/{customer}/endpoint/{ep}");
    // Disabling by hand makes two events at once (updated, then disabled), re-enabling two
    // (updated, then enabled).
    for n in 0..10 {
        for disabled in [true, false] {
            let change = json!({ "disabled": disabled, "description": format!("change {n}") });
            let (status, body) = server.call("PATCH", &path, Some(change)).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let (status, _) = server.call("DELETE", &path, None).await;
    assert_eq!(status, 204);
    let list = format!("/api/v1/app/{ops_app}/msg/?limit=100");
    let posted = server.wait_until(&list, WAIT, |b| b["data"].as_array().is_some_and(|d| d.len() >= 42)).await;
    // Newest first, as Svix lists them.
    let mut types: Vec<&str> =
        posted["data"].as_array().expect("messages").iter().filter_map(|m| m["eventType"].as_str()).collect();
    types.reverse();
    let mut want = vec!["endpoint.created"];
    for _ in 0..10 {
        want.extend(["endpoint.updated", "endpoint.disabled", "endpoint.updated", "endpoint.enabled"]);
    }
    want.push("endpoint.deleted");
    assert_eq!(types, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_delivery_and_its_recovery_are_reported() {
    let ops_rx = Receiver::start().await;
    let retries = "retry_schedule = [\"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]";
    let (server, _, _, ops_secret) = with_operations(retries, &ops_rx.url).await;
    let customer = server.create_app("customer").await;
    // Four failures, then the endpoint answers.
    let flaky = Receiver::scripted(|n, _| Reply::Status(if n < 4 { 500 } else { 200 })).await;
    let (ep, _) = server.create_endpoint(&customer, json!({ "url": flaky.url })).await;
    let msg = server.send_message(&customer, "invoice.paid", json!({})).await;

    let failing = wait_for_event(&ops_rx, &ops_secret, "message.attempt.failing").await;
    assert_eq!((failing["msgId"].as_str(), failing["endpointId"].as_str()), (Some(msg.as_str()), Some(ep.as_str())));
    assert_eq!(failing["lastAttempt"]["responseStatusCode"], 500);
    let recovered = wait_for_event(&ops_rx, &ops_secret, "message.attempt.recovered").await;
    assert_eq!(recovered["msgId"], msg.as_str());
    assert_eq!(recovered["lastAttempt"]["responseStatusCode"], 200);
    assert_eq!(flaky.received().len(), 5);
    let types: Vec<String> = events(&ops_rx, &ops_secret).into_iter().map(|(t, _)| t).collect();
    assert_eq!(types.iter().filter(|t| t.starts_with("message.attempt.")).count(), 2, "{types:?}");
}

/// A delivery whose failure was reported (`exhausted`) and that is then sent again by hand
/// and gets through is reported as recovered, though the resend started its attempts over;
/// a resend of a delivery whose failure was never reported is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_delivery_that_gets_through_after_a_reported_failure_is_reported_recovered() {
    let ops_rx = Receiver::start().await;
    let retries = "retry_schedule = [\"50ms\", \"50ms\"]";
    let (server, _, _, ops_secret) = with_operations(retries, &ops_rx.url).await;
    let customer = server.create_app("customer").await;
    // Three failures (all its attempts), then the endpoint answers.
    let flaky = Receiver::scripted(|n, _| Reply::Status(if n < 3 { 500 } else { 200 })).await;
    let (ep, _) = server.create_endpoint(&customer, json!({ "url": flaky.url })).await;
    let msg = server.send_message(&customer, "invoice.paid", json!({})).await;
    wait_for_event(&ops_rx, &ops_secret, "message.attempt.exhausted").await;
    let resend = format!("/api/v1/app/{customer}/msg/{msg}/endpoint/{ep}/resend");
    let (status, body) = server.call("POST", &resend, None).await;
    assert_eq!(status, 202, "{body}");
    let recovered = wait_for_event(&ops_rx, &ops_secret, "message.attempt.recovered").await;
    assert_eq!(
        (recovered["msgId"].as_str(), recovered["endpointId"].as_str()),
        (Some(msg.as_str()), Some(ep.as_str()))
    );
    // Sent by hand again, with nothing reported in between: no second recovery.
    let (status, body) = server.call("POST", &resend, None).await;
    assert_eq!(status, 202, "{body}");
    flaky.wait_for(5, WAIT).await;
    // (Time for a recovery, were one told, to be posted.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let recoveries = events(&ops_rx, &ops_secret).into_iter().filter(|(t, _)| t == "message.attempt.recovered").count();
    assert_eq!(recoveries, 1);
}

/// A receiver that asks to be disabled (`webhook-delivery: disable`) with a 2xx answer is
/// reported as disabled, as one that fails is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_disabled_at_its_receivers_request_is_reported() {
    let ops_rx = Receiver::start().await;
    let (server, _, _, ops_secret) = with_operations("", &ops_rx.url).await;
    let customer = server.create_app("customer").await;
    let asking = Receiver::scripted(|_, _| Reply::WithHeader(200, "webhook-delivery", "disable".into())).await;
    let (ep, _) = server.create_endpoint(&customer, json!({ "url": asking.url })).await;
    server.send_message(&customer, "invoice.paid", json!({})).await;
    let disabled = wait_for_event(&ops_rx, &ops_secret, "endpoint.disabled").await;
    assert_eq!(
        (disabled["endpointId"].as_str(), disabled["appId"].as_str()),
        (Some(ep.as_str()), Some(customer.as_str()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operational_apps_own_failures_are_not_reported_to_it() {
    // The operator's own endpoint is down: its deliveries of operational events fail, run
    // out of retries and get it disabled, none of which may become an event of its own.
    let down = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let (server, ops_app, ops_ep, _) =
        with_operations("disable_after = \"1ms\"\nretry_schedule = [\"50ms\"]", &down.url).await;
    let customer = server.create_app("customer").await;
    let rx = Receiver::start().await;
    server.create_endpoint(&customer, json!({ "url": rx.url })).await;
    server.wait_until(&format!("/api/v1/app/{ops_app}/endpoint/{ops_ep}"), WAIT, |e| e["disabled"] == true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, list) = server.call("GET", &format!("/api/v1/app/{ops_app}/msg/"), None).await;
    let types: Vec<&str> =
        list["data"].as_array().expect("messages").iter().filter_map(|m| m["eventType"].as_str()).collect();
    assert_eq!(types, ["endpoint.created"], "only the customer's endpoint creation");
    assert_eq!(down.received().len(), 2, "the one event, tried twice");
    // It holds every application's ids and failures: no application token is issued for it,
    // by its uid or its id (nor is it created by asking for one).
    for key in ["ops", ops_app.as_str()] {
        let (status, body) =
            server.call("POST", &format!("/api/v1/auth/app-portal-access/{key}"), Some(json!({}))).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{key}: {body}");
    }
    let (status, _) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{customer}"), None).await;
    assert_eq!(status, 200, "other applications' tokens are issued as ever");
}

/// An integration's key and a poller's key are application tokens too: none is issued for
/// the operational application, and those issued before it was named the operational one
/// are refused, whatever they ask (its listing and its tasks too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operational_app_answers_only_the_admin_token() {
    let mut server = Server::start("").await;
    let (status, app) = server.call("POST", "/api/v1/app/", Some(json!({ "name": "operations", "uid": "ops" }))).await;
    assert_eq!(status, 201, "{app}");
    let (status, integration) =
        server.call("POST", "/api/v1/app/ops/integration", Some(json!({ "name": "books" }))).await;
    assert_eq!(status, 201, "{integration}");
    let rotate_key = format!("/api/v1/app/ops/integration/{}/key/rotate", integration["id"].as_str().expect("id"));
    let (status, out) = server.call("POST", &rotate_key, None).await;
    assert_eq!(status, 200, "{out}");
    let integration_key = out["key"].as_str().expect("key").to_string();
    let (poller, _) = server.create_endpoint("ops", json!({ "polling": true })).await;
    let rotate_token = format!("/api/v1/auth/app/ops/poller/{poller}/token/rotate");
    let (status, out) = server.call("POST", &rotate_token, Some(json!({}))).await;
    assert_eq!(status, 200, "{out}");
    let poller_key = out["token"].as_str().expect("token").to_string();
    let (status, _) = server.call_as(&integration_key, "GET", "/api/v1/app/ops/msg", None).await;
    assert_eq!(status, 200, "an ordinary application's key reaches it");

    server.kill9();
    let server = Server::start_in(server.dir.clone(), "operational_app = \"ops\"").await;
    for (key, path) in [
        (&integration_key, "/api/v1/app/ops/msg".to_string()),
        (&integration_key, "/api/v1/app".to_string()),
        (&integration_key, "/api/v1/background-task".to_string()),
        (&poller_key, format!("/api/v1/app/ops/poller/{poller}")),
    ] {
        let (status, body) = server.call_as(key, "GET", &path, None).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{path}: {body}");
    }
    let (status, _) = server.call("GET", "/api/v1/app/ops/msg", None).await;
    assert_eq!(status, 200, "the admin token reaches it");
    for (path, body) in [
        ("/api/v1/app/ops/integration".to_string(), Some(json!({ "name": "more" }))),
        (rotate_key, None),
        (rotate_token, Some(json!({}))),
    ] {
        let (status, out) = server.call("POST", &path, body).await;
        assert_eq!((status, out["code"].as_str()), (403, Some("forbidden")), "{path}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_posted_without_an_operational_app() {
    let server = Server::start("").await;
    let app = server.create_app("watcher").await;
    let rx = Receiver::start().await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let other = server.create_app("other").await;
    server.create_endpoint(&other, json!({ "url": rx.url })).await;
    let (status, _) = server.call("DELETE", &format!("/api/v1/app/{app}/endpoint/{ep}"), None).await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.received().is_empty(), "posted: {:?}", rx.received().iter().map(Received::json).collect::<Vec<_>>());
    for a in [&app, &other] {
        let (_, list) = server.call("GET", &format!("/api/v1/app/{a}/msg/"), None).await;
        assert_eq!(list["data"], json!([]), "{list}");
    }
}

/// An inbound source's URL destinations are endpoints of its application: their creation,
/// change, disabling and removal through the source API are reported like any endpoint's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_source_destination_changes_are_reported() {
    let ops_rx = Receiver::start().await;
    let (server, _, _, ops_secret) = with_operations("", &ops_rx.url).await;
    let spec = json!({
        "name": "github",
        "verification": { "type": "none" },
        "destinations": [{ "url": "https://a.example/hook" }],
    });
    let (status, created) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!(status, 201, "{created}");
    let (source, app) = (created["id"].as_str().unwrap(), created["appId"].as_str().unwrap());
    let first = created["destinations"][0]["id"].as_str().unwrap().to_string();
    let about = |ep: &str| {
        let ep = ep.to_string();
        move |d: &Value| d["endpointId"] == ep.as_str()
    };
    let data = wait_for_matching(&ops_rx, &ops_secret, "endpoint.created", about(&first)).await;
    assert_eq!(data["appId"], app);

    // The first destination disabled, a second one added.
    let mut kept = created["destinations"][0].clone();
    kept["disabled"] = json!(true);
    let patch = json!({ "destinations": [kept, { "url": "https://b.example/hook" }] });
    let (status, out) = server.call("PATCH", &format!("/api/v1/source/{source}"), Some(patch)).await;
    assert_eq!(status, 200, "{out}");
    let second = out["destinations"][1]["id"].as_str().unwrap().to_string();
    wait_for_matching(&ops_rx, &ops_secret, "endpoint.updated", about(&first)).await;
    let disabled = wait_for_matching(&ops_rx, &ops_secret, "endpoint.disabled", about(&first)).await;
    assert_eq!(disabled["trigger"], "manual");
    wait_for_matching(&ops_rx, &ops_secret, "endpoint.created", about(&second)).await;

    // Left out of the list: deleted.
    let only_second = json!({ "destinations": [out["destinations"][1].clone()] });
    let (status, out) = server.call("PATCH", &format!("/api/v1/source/{source}"), Some(only_second)).await;
    assert_eq!(status, 200, "{out}");
    wait_for_matching(&ops_rx, &ops_secret, "endpoint.deleted", about(&first)).await;

    // The source deleted: its last destination goes with it, and is reported so.
    let (status, _) = server.call("DELETE", &format!("/api/v1/source/{source}"), None).await;
    assert_eq!(status, 204);
    let data = wait_for_matching(&ops_rx, &ops_secret, "endpoint.deleted", about(&second)).await;
    assert_eq!(data["appId"], app);
    // The source's id is the secret part of its URL (for a `none` source, its only
    // credential): its application's uid, which it is, is not sent out.
    assert_eq!(data["appUid"], Value::Null, "{data}");
    for r in ops_rx.received() {
        assert!(!String::from_utf8_lossy(&r.body).contains(source), "{}", String::from_utf8_lossy(&r.body));
    }
}
