//! The official Svix SDK (the `svix` crate from crates.io), pointed at a real hooklane: every
//! call below goes through the SDK's own request building and response parsing, so a field
//! hooklane names, shapes or omits differently from Svix fails here. The webhook the
//! receiver gets is checked with the SDK's own Standard Webhooks verifier.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use svix::api::{
    ApplicationListOptions, EndpointListOptions, EventTypeListOptions, IntegrationListOptions,
    MessageAttemptListByEndpointOptions, MessageAttemptListByMsgOptions, MessageCreateOptions, MessageListOptions,
    Svix, SvixOptions, V1MessageEventsParams,
};
use svix::models::{
    AppPortalAccessIn, AppPortalCapability, AppUsageStatsIn, ApplicationIn, ApplicationPatch, ApplicationTokenExpireIn,
    AuthenticationSource, BackgroundTaskStatus, BackgroundTaskType, BulkExpungeContentsIn, BulkExpungeStatus,
    BulkReplayIn, EndpointHeadersIn, EndpointHeadersPatchIn, EndpointIn, EndpointPatch, EndpointSecretRotateIn,
    EndpointTransformationPatch, EndpointUpsertIn, EnvironmentIn, EventExampleIn, EventTypeImportOpenApiIn,
    EventTypeIn, EventTypePatch, IntegrationIn, IntegrationUpdate, MessageIn, MessagePrecheckIn, MessageStatus,
    OperationalWebhookEndpointHeadersIn, OperationalWebhookEndpointIn, OperationalWebhookEndpointSecretIn,
    OperationalWebhookEndpointUpsertIn, RecoverIn, ReplayIn, StatusCodeClass,
};

fn sdk(server: &Server) -> Svix {
    sdk_with(server, ADMIN.to_string())
}

/// The SDK pointed at `server`, calling with `token`.
fn sdk_with(server: &Server, token: String) -> Svix {
    let options = SvixOptions { server_url: Some(server.base.clone()), ..SvixOptions::default() };
    Svix::new(token, Some(options))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_svix_sdk_works_unchanged() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);

    // Event types and applications.
    let et = svix
        .event_type()
        .create(EventTypeIn::new("invoice.paid".into(), "An invoice was paid".into()), None)
        .await
        .expect("event type create");
    assert_eq!(et.name, "invoice.paid");
    assert_eq!(svix.event_type().get("invoice.paid".into()).await.expect("event type get").description, et.description);
    let app = svix
        .application()
        .create(ApplicationIn { uid: Some("customer-1".into()), ..ApplicationIn::new("Customer 1".into()) }, None)
        .await
        .expect("application create");
    assert_eq!(app.uid.as_deref(), Some("customer-1"));
    let got = svix.application().get("customer-1".into()).await.expect("application get by uid");
    assert_eq!(got.id, app.id);
    let again = svix
        .application()
        .get_or_create(ApplicationIn { uid: Some("customer-1".into()), ..ApplicationIn::new("ignored".into()) }, None)
        .await
        .expect("application get_or_create");
    assert_eq!(again.id, app.id);
    let patched = svix
        .application()
        .patch(app.id.clone(), ApplicationPatch { name: Some("Customer One".into()), ..ApplicationPatch::default() })
        .await
        .expect("application patch");
    assert_eq!(patched.name, "Customer One");
    let apps = svix.application().list(Some(ApplicationListOptions::default())).await.expect("application list");
    assert!(apps.data.iter().any(|a| a.id == app.id));

    // An endpoint, and its secret.
    let ep = svix
        .endpoint()
        .create(
            app.id.clone(),
            EndpointIn {
                event_types: Some(["invoice.paid".to_string()].into()),
                throttle_rate: Some(50),
                ..EndpointIn::new(rx.url.clone())
            },
            None,
        )
        .await
        .expect("endpoint create");
    assert_eq!(ep.url, rx.url);
    assert_eq!(ep.event_types, Some(["invoice.paid".to_string()].into()));
    assert_eq!(ep.throttle_rate, Some(50));
    let secret = svix.endpoint().get_secret(app.id.clone(), ep.id.clone()).await.expect("endpoint secret").key;
    assert!(secret.starts_with("whsec_"));
    let eps = svix.endpoint().list(app.id.clone(), Some(EndpointListOptions::default())).await.expect("endpoint list");
    assert_eq!(eps.data.len(), 1);
    let ep = svix
        .endpoint()
        .patch(
            app.id.clone(),
            ep.id.clone(),
            EndpointPatch { description: Some("billing".into()), ..EndpointPatch::default() },
        )
        .await
        .expect("endpoint patch");
    assert_eq!(ep.description, "billing");

    // hooklane's own endpoint fields: the SDK reads an endpoint that has them, and its
    // upsert (a PUT that knows nothing of them) keeps them.
    let (status, out) = server
        .call(
            "PATCH",
            &format!("/api/v1/app/{}/endpoint/{}", app.id, ep.id),
            Some(json!({ "payloadFilter": {}, "transform": "{{ $ }}" })),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(svix.endpoint().get(app.id.clone(), ep.id.clone()).await.expect("endpoint get").description, "billing");
    let upserted = svix
        .endpoint()
        .upsert(
            app.id.clone(),
            ep.id.clone(),
            EndpointUpsertIn {
                description: Some("billing".into()),
                event_types: Some(["invoice.paid".to_string()].into()),
                ..EndpointUpsertIn::new(rx.url.clone())
            },
        )
        .await
        .expect("endpoint upsert");
    assert_eq!(upserted.id, ep.id);
    let (_, out) = server.call("GET", &format!("/api/v1/app/{}/endpoint/{}", app.id, ep.id), None).await;
    assert_eq!((out["payloadFilter"].clone(), out["transform"].clone()), (json!({}), json!("{{ $ }}")), "{out}");
    // An upsert of a uid that names no endpoint creates it (then deleted: the rest of the
    // test expects one endpoint).
    let created = svix
        .endpoint()
        .upsert(app.id.clone(), "ledger".into(), EndpointUpsertIn::new(format!("{}/ledger", rx.url)))
        .await
        .expect("endpoint upsert that creates");
    assert_eq!((created.uid.as_deref(), created.url.as_str()), (Some("ledger"), format!("{}/ledger", rx.url).as_str()));
    assert_ne!(created.id, ep.id);
    let endpoints = svix.endpoint();
    let again = endpoints.upsert(app.id.clone(), "ledger".into(), EndpointUpsertIn::new(rx.url.clone()));
    assert_eq!(again.await.expect("the same uid again").id, created.id, "updated, not created twice");
    svix.endpoint().delete(app.id.clone(), created.id.clone()).await.expect("delete");

    // A message, as the SDK sends it by default (v2 asks for no content back).
    let msg = svix
        .message()
        .create(
            app.id.clone(),
            MessageIn {
                event_id: Some("evt-1".into()),
                ..MessageIn::new("invoice.paid".into(), json!({ "invoice": 42 }))
            },
            None,
        )
        .await
        .expect("message create");
    assert_eq!(msg.event_type, "invoice.paid");
    let delivered = rx.wait_for(1, Duration::from_secs(10)).await;
    let received = &delivered[0];
    assert_eq!(received.header("webhook-id"), msg.id);
    // The SDK's own verifier accepts hooklane's signature.
    let verifier = svix::webhooks::Webhook::new(&secret).expect("secret parses");
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, received.header(name).parse().unwrap());
    }
    verifier.verify(&received.body, &headers).expect("the SDK verifies hooklane's signature");

    let got = svix.message().get(app.id.clone(), "evt-1".into(), None).await.expect("message get by eventId");
    assert_eq!(got.id, msg.id);
    let with_content = svix
        .message()
        .get(app.id.clone(), msg.id.clone(), Some(svix::api::MessageGetOptions { with_content: Some(true) }))
        .await
        .expect("message get with content");
    assert_eq!(with_content.payload, json!({ "invoice": 42 }));
    let list = svix.message().list(app.id.clone(), Some(MessageListOptions::default())).await.expect("message list");
    assert_eq!(list.data.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), vec![msg.id.clone()]);

    // Attempts, once recorded.
    let mut attempts = None;
    for _ in 0..100 {
        let page = svix
            .message_attempt()
            .list_by_msg(app.id.clone(), msg.id.clone(), Some(MessageAttemptListByMsgOptions::default()))
            .await
            .expect("attempts by message");
        if !page.data.is_empty() {
            attempts = Some(page);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let attempts = attempts.expect("an attempt is recorded");
    assert_eq!(attempts.data[0].status, MessageStatus::Success);
    assert_eq!(attempts.data[0].response_status_code, 200);
    let by_endpoint = svix
        .message_attempt()
        .list_by_endpoint(app.id.clone(), ep.id.clone(), Some(MessageAttemptListByEndpointOptions::default()))
        .await
        .expect("attempts by endpoint");
    assert_eq!(by_endpoint.data[0].id, attempts.data[0].id);
    assert_eq!(by_endpoint.data[0].msg, None, "without with_msg");
    // The SDK asks for no content unless told: the response body is left out, as Svix
    // answers it (`{}`; the receiver answered an empty body).
    assert_eq!((attempts.data[0].response.as_str(), by_endpoint.data[0].response.as_str()), ("{}", "{}"));
    // The SDK's filters are applied; with_msg brings each attempt's message, never with its
    // payload (the SDK says so), and with_content the attempt's response.
    let options = |class: StatusCodeClass| MessageAttemptListByEndpointOptions {
        status_code_class: Some(class),
        with_msg: Some(true),
        with_content: Some(true),
        ..MessageAttemptListByEndpointOptions::default()
    };
    let attempts_api = svix.message_attempt();
    let ok = attempts_api.list_by_endpoint(app.id.clone(), ep.id.clone(), Some(options(StatusCodeClass::Code2xx)));
    let ok = ok.await.expect("2xx attempts");
    assert_eq!(ok.data.len(), 1);
    let shown = ok.data[0].msg.as_ref().map(|m| (m.id.clone(), m.payload.clone()));
    assert_eq!(shown, Some((msg.id.clone(), json!({}))));
    assert_eq!(ok.data[0].response, "", "the receiver's empty body, shown with_content");
    let failed = attempts_api.list_by_endpoint(app.id.clone(), ep.id.clone(), Some(options(StatusCodeClass::Code5xx)));
    assert!(failed.await.expect("5xx attempts").data.is_empty());
    let other_type = MessageAttemptListByMsgOptions {
        event_types: Some(["nothing.sent".to_string()].into()),
        ..MessageAttemptListByMsgOptions::default()
    };
    let none = attempts_api.list_by_msg(app.id.clone(), msg.id.clone(), Some(other_type));
    assert!(none.await.expect("attempts of another event type").data.is_empty());

    let attempt = svix
        .message_attempt()
        .get(app.id.clone(), msg.id.clone(), attempts.data[0].id.clone(), None)
        .await
        .expect("attempt get");
    assert_eq!(attempt.msg_id, msg.id);
    svix.message_attempt()
        .expunge_content(app.id.clone(), msg.id.clone(), attempt.id.clone())
        .await
        .expect("attempt content expunged");
    let expunged =
        svix.message_attempt().get(app.id.clone(), msg.id.clone(), attempt.id.clone(), None).await.expect("get");
    assert_eq!(expunged.response, "");
    svix.message_attempt().resend(app.id.clone(), msg.id.clone(), ep.id.clone(), None).await.expect("resend");
    rx.wait_for(2, Duration::from_secs(10)).await;
    let recovery = svix
        .endpoint()
        .recover(app.id.clone(), ep.id.clone(), RecoverIn::new(chrono::Utc::now() - chrono::Duration::hours(1)), None)
        .await
        .expect("recover");
    // Svix's flow: look the recovery's task up until it is finished (it is at once here).
    let task = svix.background_task().get(recovery.id.clone()).await.expect("background task get");
    assert_eq!((task.id.as_str(), task.status), (recovery.id.as_str(), BackgroundTaskStatus::Finished));
    assert_eq!(task.task, BackgroundTaskType::EndpointRecover);

    // The rest of an endpoint's life.
    assert_eq!(svix.endpoint().get(app.id.clone(), ep.id.clone()).await.expect("endpoint get").id, ep.id);
    svix.endpoint()
        .set_headers(app.id.clone(), ep.id.clone(), EndpointHeadersIn::new([("x-tenant".into(), "1".into())].into()))
        .await
        .expect("set headers");
    let headers = svix.endpoint().get_headers(app.id.clone(), ep.id.clone()).await.expect("get headers");
    assert_eq!(headers.headers.get("x-tenant").map(String::as_str), Some("1"));
    // Patched: one added, one removed by name (in another case) with deleteHeaders.
    let patch = EndpointHeadersPatchIn {
        delete_headers: Some(vec!["X-Tenant".into()]),
        ..EndpointHeadersPatchIn::new([("x-region".into(), "eu".into())].into())
    };
    svix.endpoint().patch_headers(app.id.clone(), ep.id.clone(), patch).await.expect("patch headers");
    let headers = svix.endpoint().get_headers(app.id.clone(), ep.id.clone()).await.expect("get headers");
    assert_eq!(headers.headers, [("x-region".to_string(), "eu".to_string())].into());
    svix.endpoint()
        .rotate_secret(app.id.clone(), ep.id.clone(), EndpointSecretRotateIn::new(), None)
        .await
        .expect("rotate secret");
    let rotated = svix.endpoint().get_secret(app.id.clone(), ep.id.clone()).await.expect("new secret").key;
    assert_ne!(rotated, secret);

    // Event types: list and patch; an application replaced with PUT.
    let types = svix.event_type().list(None).await.expect("event type list");
    assert!(types.data.iter().any(|t| t.name == "invoice.paid"));
    let et = svix
        .event_type()
        .patch("invoice.paid".into(), EventTypePatch { description: Some("Paid".into()), ..EventTypePatch::new() })
        .await
        .expect("event type patch");
    assert_eq!(et.description, "Paid");
    let replaced = svix
        .application()
        .upsert(
            app.id.clone(),
            ApplicationIn { uid: Some("customer-1".into()), throttle_rate: Some(7), ..ApplicationIn::new("C1".into()) },
        )
        .await
        .expect("application upsert");
    assert_eq!((replaced.name.as_str(), replaced.throttle_rate), ("C1", Some(7)));
    let patch = ApplicationPatch { throttle_rate: js_option::JsOption::Null, ..ApplicationPatch::new() };
    let patched = svix.application().patch(app.id.clone(), patch).await.expect("application patch");
    assert_eq!(patched.throttle_rate, None);

    // Event types from an OpenAPI document: a dry run answers what would change, then the
    // import (of the same document as YAML) makes it so.
    let pet_schemas = json!({ "1": {
        "type": "object",
        "properties": { "id": { "type": "integer" } },
        "examples": [{ "id": 1 }],
    } });
    let spec = json!({
        "openapi": "3.1.0",
        "webhooks": { "pet.new": { "post": {
            "description": "A new pet",
            "requestBody": { "content": { "application/json": {
                "schema": { "type": "object", "properties": { "id": { "type": "integer" } } },
                "example": { "id": 1 },
            } } },
        } } },
    });
    let dry = svix
        .event_type()
        .import_openapi(
            EventTypeImportOpenApiIn { spec: Some(spec), dry_run: Some(true), ..EventTypeImportOpenApiIn::new() },
            None,
        )
        .await
        .expect("event type import, dry run");
    assert_eq!(dry.data.modified, ["pet.new"]);
    let to_modify = dry.data.to_modify.expect("a dry run lists what would change");
    assert_eq!(to_modify.len(), 1);
    assert_eq!((to_modify[0].name.as_str(), to_modify[0].description.as_str()), ("pet.new", "A new pet"));
    assert_eq!(to_modify[0].schemas, Some(pet_schemas.clone()));
    assert!(!to_modify[0].deprecated);
    assert!(svix.event_type().get("pet.new".into()).await.is_err(), "a dry run creates nothing");
    let yaml = r#"openapi: 3.1.0
webhooks:
  pet.new:
    post:
      description: A new pet
      requestBody:
        content:
          application/json:
            schema: { type: object, properties: { id: { type: integer } } }
            example: { id: 1 }
"#;
    let imported = svix
        .event_type()
        .import_openapi(
            EventTypeImportOpenApiIn { spec_raw: Some(yaml.into()), ..EventTypeImportOpenApiIn::new() },
            None,
        )
        .await
        .expect("event type import");
    assert_eq!((imported.data.modified, imported.data.to_modify), (vec!["pet.new".to_string()], None));
    let pet = svix.event_type().get("pet.new".into()).await.expect("the imported event type");
    assert_eq!((pet.description.as_str(), pet.schemas), ("A new pet", Some(pet_schemas)));
    let neither = svix.event_type().import_openapi(EventTypeImportOpenApiIn::new(), None).await;
    assert!(format!("{neither:?}").contains("400"), "{neither:?}");

    // Which messages went to the endpoint, how its deliveries stand, and whether anyone
    // listens for an event type.
    let sent = svix
        .message_attempt()
        .list_attempted_messages(app.id.clone(), ep.id.clone(), None)
        .await
        .expect("attempted messages");
    assert_eq!(sent.data.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), vec![msg.id.clone()]);
    assert_eq!(sent.data[0].status, MessageStatus::Success);
    let destinations = svix
        .message_attempt()
        .list_attempted_destinations(app.id.clone(), msg.id.clone(), None)
        .await
        .expect("attempted destinations");
    assert_eq!(destinations.data.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), vec![ep.id.clone()]);
    assert_eq!(destinations.data[0].status, MessageStatus::Success);
    assert_eq!(destinations.data[0].status_text, svix::models::MessageStatusText::Success);
    let stats = svix.endpoint().get_stats(app.id.clone(), ep.id.clone(), None).await.expect("endpoint stats");
    assert_eq!((stats.success, stats.fail, stats.pending), (1, 0, 0));
    let wanted = svix
        .message()
        .precheck(app.id.clone(), MessagePrecheckIn::new("invoice.paid".into()), None)
        .await
        .expect("precheck");
    assert!(wanted.active);
    let unwanted = svix
        .message()
        .precheck(app.id.clone(), MessagePrecheckIn::new("user.created".into()), None)
        .await
        .expect("precheck, unwanted");
    assert!(!unwanted.active, "the only endpoint filters user.created out");

    // Pulling (Svix's message.events), with the SDK's comma-joined filter.
    let second = svix
        .message()
        .create(app.id.clone(), MessageIn::new("user.created".into(), json!({ "user": 1 })), None)
        .await
        .expect("second message");
    let events = svix
        .message()
        .events(V1MessageEventsParams {
            app_id: app.id.clone(),
            limit: Some(10),
            iterator: None,
            event_types: Some(vec!["invoice.paid".into(), "user.created".into()]),
            channels: None,
            after: None,
        })
        .await
        .expect("message events");
    assert_eq!(events.data.len(), 2);
    assert!(events.done);
    let only_invoices = svix
        .message()
        .events(V1MessageEventsParams {
            app_id: app.id.clone(),
            limit: Some(10),
            iterator: None,
            event_types: Some(vec!["invoice.paid".into()]),
            channels: None,
            after: None,
        })
        .await
        .expect("message events, filtered");
    assert_eq!(only_invoices.data.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), vec![msg.id.clone()]);
    // The endpoint's `eventTypes` kept the `user.created` message from it: it got the
    // invoice and its resend only.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.received().iter().all(|r| r.header("webhook-id") == msg.id), "only the invoice was delivered");

    // An endpoint created afterwards gets what it missed, once.
    let late_rx = Receiver::start().await;
    let late = svix.endpoint().create(app.id.clone(), EndpointIn::new(late_rx.url.clone()), None).await.expect("late");
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    for _ in 0..2 {
        svix.endpoint()
            .replay_missing(app.id.clone(), late.id.clone(), ReplayIn::new(hour_ago), None)
            .await
            .expect("replay missing");
    }
    let got = late_rx.wait_for(2, Duration::from_secs(10)).await;
    let mut ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    ids.sort();
    let mut want = vec![msg.id.as_str(), second.id.as_str()];
    want.sort();
    assert_eq!(ids, want);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(late_rx.received().len(), 2, "replayed once, not twice");

    // An application-scoped token, used through the SDK.
    let access = svix
        .authentication()
        .app_portal_access(app.id.clone(), AppPortalAccessIn::new(), None)
        .await
        .expect("app portal access");
    let scoped = sdk_with(&server, access.token);
    assert_eq!(scoped.application().get(app.id.clone()).await.expect("scoped get").id, app.id);
    scoped.authentication().logout(None).await.expect("logout");
    assert!(scoped.application().get(app.id.clone()).await.is_err(), "a logged-out token is refused");
    let access = svix
        .authentication()
        .app_portal_access(app.id.clone(), AppPortalAccessIn { expiry: Some(3600), ..AppPortalAccessIn::new() }, None)
        .await
        .expect("app portal access with an expiry");
    let scoped = sdk_with(&server, access.token);
    assert!(scoped.application().get(app.id.clone()).await.is_ok());
    svix.authentication().expire_all(app.id.clone(), ApplicationTokenExpireIn::new(), None).await.expect("expire all");
    assert!(scoped.application().get(app.id.clone()).await.is_err(), "expired with all of the application's");

    // Errors come back as the SDK's typed errors.
    let missing = svix.application().get("no-such-app".into()).await.expect_err("unknown app");
    assert!(format!("{missing:?}").contains("404"), "{missing:?}");

    // A message's content deleted: answered as `{}`, and not sent again.
    svix.message().expunge_content(app.id.clone(), second.id.clone()).await.expect("message content expunged");
    let emptied = svix
        .message()
        .get(app.id.clone(), second.id.clone(), Some(svix::api::MessageGetOptions { with_content: Some(true) }))
        .await
        .expect("get after expunge");
    assert_eq!(emptied.payload, json!({}));
    let refused = svix.message_attempt().resend(app.id.clone(), second.id.clone(), late.id.clone(), None).await;
    assert!(format!("{refused:?}").contains("409"), "{refused:?}");

    // An example sent to the late endpoint only.
    let example = svix
        .endpoint()
        .send_example(app.id.clone(), late.id.clone(), EventExampleIn::new("invoice.paid".into()), None)
        .await
        .expect("send example");
    assert_eq!(example.event_type, "invoice.paid");
    let got = late_rx.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got[2].header("webhook-id"), example.id, "the example was delivered");

    svix.endpoint().delete(app.id.clone(), ep.id.clone()).await.expect("endpoint delete");
    svix.application().delete(app.id.clone()).await.expect("application delete");
    assert!(svix.application().get(app.id.clone()).await.is_err());
}

/// The SDK's bulk operations, attempt statistics and `whoami`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_bulk_operations_work_unchanged() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);
    let me = svix.authentication().whoami().await.expect("whoami");
    assert_eq!((me.app_id, me.permission_source), (None, AuthenticationSource::GlobalAuthToken));
    // The application created by its first message (Svix's `MessageIn.application`).
    let first =
        MessageIn { application: Some(ApplicationIn::new("Bulk".into())), ..MessageIn::new("a.b".into(), json!({})) };
    svix.message().create("bulk-customer".into(), first, None).await.expect("message creating its application");
    let app = svix.application().get("bulk-customer".into()).await.expect("the application the message created");
    assert_eq!((app.name.as_str(), app.uid.as_deref()), ("Bulk", Some("bulk-customer")));
    let ep = svix.endpoint().create(app.id.clone(), EndpointIn::new(rx.url.clone()), None).await.expect("endpoint");
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut sent = Vec::new();
    for n in 0..2 {
        let msg = MessageIn::new("invoice.paid".into(), json!({ "n": n }));
        sent.push(svix.message().create(app.id.clone(), msg, None).await.expect("message create").id);
    }
    rx.wait_for(2, Duration::from_secs(10)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats =
            svix.endpoint().get_attempt_stats(app.id.clone(), ep.id.clone(), None).await.expect("attempt stats");
        if stats.success == 2 {
            assert_eq!((stats.fail, stats.canceled), (0, 0));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "attempts never counted: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let replay = svix
        .endpoint()
        .bulk_replay(
            app.id.clone(),
            ep.id.clone(),
            BulkReplayIn { status: Some(MessageStatus::Success), ..BulkReplayIn::new(since) },
            None,
        )
        .await
        .expect("bulk replay");
    assert_eq!((replay.status, replay.task), (BackgroundTaskStatus::Finished, BackgroundTaskType::EndpointBulkReplay));
    assert_eq!(rx.wait_for(4, Duration::from_secs(10)).await.len(), 4, "both sent again");

    let expunge = BulkExpungeContentsIn { ids: Some([sent[0].clone(), "msg_missing".to_string()].into()) };
    let out = svix.message().bulk_expunge_content(app.id.clone(), expunge, None).await.expect("bulk expunge");
    assert_eq!(out.results.get(&sent[0]), Some(&BulkExpungeStatus::Expunged));
    assert_eq!(out.results.get("msg_missing"), Some(&BulkExpungeStatus::NotFound));
    let purge = svix.message().expunge_all_contents(app.id.clone(), None).await.expect("expunge all");
    assert_eq!(
        (purge.status, purge.task),
        (BackgroundTaskStatus::Finished, BackgroundTaskType::ApplicationPurgeContent)
    );
    let last = svix.message().get(app.id.clone(), sent[1].clone(), None).await.expect("message get");
    assert_eq!(last.payload, json!({}), "purged");

    // A scheduled message (`deliverAt`).
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(800);
    let later = MessageIn { deliver_at: Some(at), ..MessageIn::new("invoice.paid".into(), json!({ "n": 9 })) };
    let later = svix.message().create(app.id.clone(), later, None).await.expect("scheduled message");
    let due = later.deliver_at.expect("the answer says when it is due");
    assert!(due >= at && due - at < chrono::Duration::milliseconds(1), "{due} for {at}");
    let read = svix.message().get(app.id.clone(), later.id.clone(), None).await.expect("scheduled message get");
    assert_eq!(read.deliver_at, Some(due), "a read says so too");
    let got = rx.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(got[4].header("webhook-id"), later.id);
    assert!(chrono::Utc::now() >= at, "sent before its time");

    // The environment: event types imported, then exported.
    let flagged =
        EventTypeIn { feature_flags: Some(["beta".to_string()].into()), ..EventTypeIn::new("a.b".into(), "A".into()) };
    let env = EnvironmentIn { event_types: Some(vec![flagged]), ..EnvironmentIn::new() };
    svix.environment().import(env, None).await.expect("environment import");
    let export = svix.environment().export(None).await.expect("environment export");
    let imported = export.event_types.iter().find(|e| e.name == "a.b").expect("imported event type exported");
    assert_eq!((imported.description.as_str(), imported.feature_flag.as_deref()), ("A", Some("beta")));
    assert!(export.connectors.is_empty());
}

/// Operational webhook endpoints through the SDK: the endpoints of the operational
/// application, created with it, and hearing about another application's endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_manages_operational_webhook_endpoints() {
    let server = Server::start("operational_app = \"ops-hooks\"").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);
    let ops = svix.operational_webhook().endpoint();
    // Reads create nothing: before any endpoint, none are listed, none found, and the
    // application does not exist.
    assert!(ops.list(None).await.expect("list before any").data.is_empty());
    let missing = ops.get("pager".into()).await.expect_err("no endpoint yet");
    assert!(format!("{missing:?}").contains("404"), "{missing:?}");
    assert!(svix.application().get("ops-hooks".into()).await.is_err(), "a read made the application");
    let created = ops
        .create(
            OperationalWebhookEndpointIn {
                uid: Some("pager".into()),
                ..OperationalWebhookEndpointIn::new(rx.url.clone())
            },
            None,
        )
        .await
        .expect("operational endpoint create");
    assert_eq!(
        svix.application().get("ops-hooks".into()).await.expect("the operational application made").name,
        "Operational webhooks"
    );
    let listed = ops.list(None).await.expect("list");
    assert_eq!(listed.data.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), [created.id.as_str()]);
    assert_eq!(ops.get("pager".into()).await.expect("get by uid").id, created.id);
    let updated = ops
        .upsert(
            created.id.clone(),
            OperationalWebhookEndpointUpsertIn {
                description: Some("pager duty".into()),
                ..OperationalWebhookEndpointUpsertIn::new(rx.url.clone())
            },
        )
        .await
        .expect("update");
    assert_eq!(updated.description, "pager duty");
    ops.set_headers(
        created.id.clone(),
        OperationalWebhookEndpointHeadersIn::new([("x-team".into(), "ops".into())].into()),
    )
    .await
    .expect("set headers");
    assert_eq!(
        ops.get_headers(created.id.clone()).await.expect("get headers").headers.get("x-team").map(String::as_str),
        Some("ops")
    );
    let old = ops.get_secret(created.id.clone()).await.expect("get secret").key;
    ops.rotate_secret(created.id.clone(), OperationalWebhookEndpointSecretIn::new(), None).await.expect("rotate");
    let secret = ops.get_secret(created.id.clone()).await.expect("new secret").key;
    assert_ne!(secret, old);

    // An endpoint created in a customer's application is announced to it, signed.
    let customer = svix.application().create(ApplicationIn::new("Customer".into()), None).await.expect("app");
    svix.endpoint()
        .create(customer.id.clone(), EndpointIn::new("https://example.com/hook".into()), None)
        .await
        .expect("endpoint");
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["type"], "endpoint.created");
    assert_eq!(got[0].header("x-team"), "ops");
    let verifier = svix::webhooks::Webhook::new(&secret).expect("secret parses");
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, got[0].header(name).parse().expect("header"));
    }
    verifier.verify(&got[0].body, &headers).expect("signed with the rotated secret");

    ops.delete(created.id.clone()).await.expect("delete");
    assert!(ops.get(created.id.clone()).await.is_err(), "deleted");

    // Without `operational_app`, the operations are refused (409), not silently kept.
    let plain = Server::start("").await;
    let refused = sdk(&plain).operational_webhook().endpoint().list(None).await;
    assert!(format!("{refused:?}").contains("409"), "{refused:?}");
}

/// Svix's usage statistics through the SDK: the tasks it starts and the figures their
/// `data` holds, for every application and for some, and who may see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_aggregates_usage_statistics() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);
    let endpoint = |types: Option<&[&str]>| EndpointIn {
        event_types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
        ..EndpointIn::new(rx.url.clone())
    };
    let billed = ApplicationIn { uid: Some("billed".into()), ..ApplicationIn::new("Billed".into()) };
    let billed = svix.application().create(billed, None).await.expect("application");
    let quiet = svix.application().create(ApplicationIn::new("Quiet".into()), None).await.expect("application");
    let idle = svix.application().create(ApplicationIn::new("Idle".into()), None).await.expect("application");
    for ep in [endpoint(Some(&["invoice.paid", "user.created"])), endpoint(None)] {
        svix.endpoint().create(billed.id.clone(), ep, None).await.expect("endpoint");
    }
    svix.endpoint().create(quiet.id.clone(), endpoint(Some(&["invoice.paid"])), None).await.expect("endpoint");

    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    // To "billed": two messages to both endpoints and one to the catch-all only (5); to
    // "quiet": one message to its endpoint and one that none subscribes to (1).
    for (app, event_type) in [
        (&billed, "invoice.paid"),
        (&billed, "invoice.paid"),
        (&billed, "user.deleted"),
        (&quiet, "invoice.paid"),
        (&quiet, "user.deleted"),
    ] {
        let msg = MessageIn::new(event_type.into(), json!({}));
        svix.message().create(app.id.clone(), msg, None).await.expect("message");
    }
    let until = chrono::Utc::now() + chrono::Duration::seconds(1);
    let counts = |data: &serde_json::Value| -> Vec<(String, Option<String>, u64)> {
        let stats = data["appStats"].as_array().expect("appStats");
        let mut all: Vec<_> = stats
            .iter()
            .map(|s| {
                let uid = s["appUid"].as_str().map(String::from);
                (s["appId"].as_str().expect("appId").to_string(), uid, s["messageDestinations"].as_u64().expect("n"))
            })
            .collect();
        all.sort();
        all
    };

    let every = svix.statistics().aggregate_app_stats(AppUsageStatsIn::new(since, until), None).await.expect("stats");
    assert_eq!((every.status, every.task), (BackgroundTaskStatus::Finished, BackgroundTaskType::ApplicationStats));
    assert!(every.unresolved_app_ids.is_empty());
    let task = svix.background_task().get(every.id.clone()).await.expect("the stats task");
    assert_eq!((task.status, task.task), (BackgroundTaskStatus::Finished, BackgroundTaskType::ApplicationStats));
    let mut want = vec![
        (billed.id.clone(), Some("billed".to_string()), 5),
        (quiet.id.clone(), None, 1),
        (idle.id.clone(), None, 0),
    ];
    want.sort();
    assert_eq!(counts(&task.data), want);

    // Some applications, by uid and by id, one named twice, one missing.
    let some = AppUsageStatsIn {
        app_ids: Some(["billed".to_string(), billed.id.clone(), quiet.id.clone(), "app_missing".to_string()].into()),
        ..AppUsageStatsIn::new(since, until)
    };
    let some = svix.statistics().aggregate_app_stats(some, None).await.expect("stats of some");
    assert_eq!(some.unresolved_app_ids, ["app_missing".to_string()].into());
    let task = svix.background_task().get(some.id.clone()).await.expect("the stats task");
    let mut want = vec![(billed.id.clone(), Some("billed".to_string()), 5), (quiet.id.clone(), None, 1)];
    want.sort();
    assert_eq!(counts(&task.data), want);
    // A window before the messages counts none of them.
    let before = AppUsageStatsIn::new(since - chrono::Duration::hours(1), since);
    let before = svix.statistics().aggregate_app_stats(before, None).await.expect("stats of the hour before");
    let task = svix.background_task().get(before.id.clone()).await.expect("the stats task");
    assert!(counts(&task.data).iter().all(|(_, _, n)| *n == 0), "{:?}", task.data);
    // Nothing found, or a window that ends before it starts: 422.
    let none = AppUsageStatsIn { app_ids: Some(["nope".to_string()].into()), ..AppUsageStatsIn::new(since, until) };
    let err = svix.statistics().aggregate_app_stats(none, None).await.expect_err("no application found");
    assert!(format!("{err:?}").contains("422"), "{err:?}");
    let err =
        svix.statistics().aggregate_app_stats(AppUsageStatsIn::new(until, since), None).await.expect_err("backwards");
    assert!(format!("{err:?}").contains("422"), "{err:?}");

    let aggregate = svix.statistics().aggregate_event_types().await.expect("aggregate event types");
    assert_eq!(
        (aggregate.status, aggregate.task),
        (BackgroundTaskStatus::Finished, BackgroundTaskType::EventTypeAggregate)
    );
    let task = svix.background_task().get(aggregate.id.clone()).await.expect("the aggregate task");
    let per_app = task.data["event_types"].as_array().expect("event_types").clone();
    let of = |id: &str| per_app.iter().find(|a| a["appId"] == id).cloned().expect("the application's entry");
    assert_eq!(of(&billed.id)["explicitlySubscribedEventTypes"], json!(["invoice.paid", "user.created"]));
    assert_eq!(of(&billed.id)["hasCatchAllEndpoint"], json!(true));
    assert_eq!(of(&quiet.id)["explicitlySubscribedEventTypes"], json!(["invoice.paid"]));
    assert_eq!(of(&quiet.id)["hasCatchAllEndpoint"], json!(false));
    assert_eq!(of(&idle.id)["explicitlySubscribedEventTypes"], json!([]));

    // The tasks are the environment's: an application token neither starts nor sees them.
    let access = svix.authentication().app_portal_access(billed.id.clone(), AppPortalAccessIn::new(), None).await;
    let scoped = sdk_with(&server, access.expect("app portal access").token);
    let err = scoped.statistics().aggregate_event_types().await.expect_err("an application token");
    assert!(format!("{err:?}").contains("403"), "{err:?}");
    assert!(scoped.background_task().get(aggregate.id.clone()).await.is_err(), "not the application's task");
    let listed = scoped.background_task().list(None).await.expect("the application's tasks");
    assert!(listed.data.iter().all(|t| t.id != aggregate.id && t.id != every.id));
}

/// Integrations through the SDK: created without a key, given one by rotating, the key
/// working as a token of its application only, and revoked by rotating again or deleting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_manages_integrations_and_their_keys() {
    let server = Server::start("").await;
    let svix = sdk(&server);
    let app = svix.application().create(ApplicationIn::new("Integrated".into()), None).await.expect("application");
    let other = svix.application().create(ApplicationIn::new("Other".into()), None).await.expect("application");
    let input =
        IntegrationIn { feature_flags: Some(["beta".to_string()].into()), ..IntegrationIn::new("Zapier".into()) };
    let zapier = svix.integration().create(app.id.clone(), input, None).await.expect("integration create");
    assert_eq!((zapier.name.as_str(), zapier.feature_flags.clone()), ("Zapier", Some(["beta".to_string()].into())));
    let make =
        svix.integration().create(app.id.clone(), IntegrationIn::new("Make".into()), None).await.expect("second");
    let page = IntegrationListOptions { limit: Some(1), ..Default::default() };
    let first = svix.integration().list(app.id.clone(), Some(page)).await.expect("integration list");
    assert_eq!((first.data.len(), first.done), (1, false));
    let rest = IntegrationListOptions { limit: Some(1), iterator: first.iterator.clone(), ..Default::default() };
    let second = svix.integration().list(app.id.clone(), Some(rest)).await.expect("second page");
    let mut listed = vec![first.data[0].id.clone(), second.data[0].id.clone()];
    listed.sort();
    let mut want = vec![zapier.id.clone(), make.id.clone()];
    want.sort();
    assert_eq!(listed, want);
    let none = svix.integration().list(other.id.clone(), None).await.expect("another application's");
    assert!(none.data.is_empty(), "another application's integrations are its own");
    let err = svix.integration().get(other.id.clone(), zapier.id.clone()).await.expect_err("wrong application");
    assert!(format!("{err:?}").contains("404"), "{err:?}");

    let update = IntegrationUpdate { feature_flags: None, ..IntegrationUpdate::new("Zapier EU".into()) };
    let updated = svix.integration().update(app.id.clone(), zapier.id.clone(), update).await.expect("update");
    assert_eq!(updated.name, "Zapier EU");
    assert_eq!(svix.integration().get(app.id.clone(), zapier.id.clone()).await.expect("get").name, "Zapier EU");

    // The key is a token of the application, and of that application only.
    let key = svix.integration().rotate_key(app.id.clone(), zapier.id.clone(), None).await.expect("rotate").key;
    assert!(key.starts_with("integsk_"), "{key}");
    let as_zapier = sdk_with(&server, key.clone());
    let me = as_zapier.authentication().whoami().await.expect("whoami with the key");
    assert_eq!(me.app_id.as_deref(), Some(app.id.as_str()));
    as_zapier.endpoint().list(app.id.clone(), None).await.expect("its application's endpoints");
    assert!(as_zapier.application().get(other.id.clone()).await.is_err(), "not another application");
    let err = as_zapier.integration().rotate_key(app.id.clone(), zapier.id.clone(), None).await.expect_err("mint");
    assert!(format!("{err:?}").contains("403"), "a key cannot mint keys: {err:?}");

    // Rotating again: the old key stops working, the new one works.
    let newer = svix.integration().rotate_key(app.id.clone(), zapier.id.clone(), None).await.expect("rotate").key;
    assert_ne!(newer, key);
    assert!(as_zapier.authentication().whoami().await.is_err(), "the old key is revoked");
    let as_zapier = sdk_with(&server, newer);
    as_zapier.authentication().whoami().await.expect("the new key works");

    // Deleting the integration revokes its key.
    svix.integration().delete(app.id.clone(), zapier.id.clone()).await.expect("delete");
    assert!(as_zapier.authentication().whoami().await.is_err(), "revoked with its integration");
    assert!(svix.integration().get(app.id.clone(), zapier.id.clone()).await.is_err());
    let err = svix.integration().rotate_key(app.id.clone(), zapier.id.clone(), None).await.expect_err("gone");
    assert!(format!("{err:?}").contains("404"), "{err:?}");
}

/// Svix's feature flags through the SDK: an event type behind a flag is listed, read and
/// sent as an example only by tokens given that flag, whether app-portal tokens or
/// integration keys (whose flags follow their integration's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_sees_flagged_event_types_only_with_their_flag() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);
    for (name, flags) in [
        ("beta.b", &["beta"][..]),
        ("either.e", &["beta", "internal"][..]),
        ("internal.c", &["internal"][..]),
        ("public.a", &[][..]),
        ("public.d", &[][..]),
    ] {
        let flags = (!flags.is_empty()).then(|| flags.iter().map(|f| f.to_string()).collect());
        let et = EventTypeIn {
            feature_flags: flags.clone(),
            group_name: Some("flags".into()),
            ..EventTypeIn::new(name.into(), "d".into())
        };
        let created = svix.event_type().create(et, None).await.expect("event type create");
        assert_eq!((created.feature_flags, created.group_name.as_deref()), (flags, Some("flags")), "{name}");
    }
    let app = svix.application().create(ApplicationIn::new("Flags".into()), None).await.expect("application");
    let ep = svix.endpoint().create(app.id.clone(), EndpointIn::new(rx.url.clone()), None).await.expect("endpoint");
    let names = |svix: Svix, limit: Option<u64>| async move {
        let mut names = Vec::new();
        let mut iterator = None;
        loop {
            let options = EventTypeListOptions { limit, iterator: iterator.clone(), ..Default::default() };
            let page = svix.event_type().list(Some(options)).await.expect("event type list");
            if let Some(limit) = limit {
                assert!(page.done || page.data.len() as u64 == limit, "a short page that is not the last");
            }
            names.extend(page.data.into_iter().map(|e| e.name));
            if page.done {
                return names;
            }
            iterator = page.iterator;
        }
    };
    let token = |flags: &[&str]| {
        let input = AppPortalAccessIn {
            feature_flags: Some(flags.iter().map(|f| f.to_string()).collect()),
            ..AppPortalAccessIn::new()
        };
        let svix = &svix;
        let app_id = app.id.clone();
        async move { svix.authentication().app_portal_access(app_id, input, None).await.expect("token").token }
    };

    assert_eq!(
        names(sdk(&server), None).await,
        ["beta.b", "either.e", "internal.c", "public.a", "public.d"],
        "the admin"
    );
    let plain = sdk_with(&server, token(&[]).await);
    assert_eq!(names(sdk_with(&server, token(&[]).await), Some(1)).await, ["public.a", "public.d"]);
    assert!(plain.event_type().get("beta.b".into()).await.is_err(), "hidden without its flag");
    let example = EventExampleIn::new("beta.b".into());
    let err = plain.endpoint().send_example(app.id.clone(), ep.id.clone(), example, None).await.expect_err("hidden");
    assert!(format!("{err:?}").contains("404"), "{err:?}");
    // With a payload of its own too (hooklane's `payload`), it is not there for that token.
    let path = format!("/api/v1/app/{}/endpoint/{}/send-example", app.id, ep.id);
    let own = json!({ "eventType": "beta.b", "payload": { "x": 1 } });
    let (status, body) = server.call_as(&token(&[]).await, "POST", &path, Some(own)).await;
    assert_eq!(status, 404, "{body}");
    let beta = sdk_with(&server, token(&["beta"]).await);
    assert_eq!(
        names(sdk_with(&server, token(&["beta"]).await), Some(1)).await,
        ["beta.b", "either.e", "public.a", "public.d"],
        "one of its flags is enough"
    );
    assert_eq!(beta.event_type().get("beta.b".into()).await.expect("seen with its flag").name, "beta.b");
    assert!(beta.event_type().get("internal.c".into()).await.is_err());
    let example = EventExampleIn::new("beta.b".into());
    beta.endpoint().send_example(app.id.clone(), ep.id.clone(), example, None).await.expect("example with its flag");
    rx.wait_for(1, Duration::from_secs(10)).await;

    // An integration key has its integration's flags, and follows them.
    let input =
        IntegrationIn { feature_flags: Some(["internal".to_string()].into()), ..IntegrationIn::new("I".into()) };
    let integ = svix.integration().create(app.id.clone(), input, None).await.expect("integration");
    let key = svix.integration().rotate_key(app.id.clone(), integ.id.clone(), None).await.expect("key").key;
    assert_eq!(
        names(sdk_with(&server, key.clone()), Some(2)).await,
        ["either.e", "internal.c", "public.a", "public.d"]
    );
    svix.integration()
        .update(app.id.clone(), integ.id.clone(), IntegrationUpdate::new("I".into()))
        .await
        .expect("integration update");
    assert_eq!(names(sdk_with(&server, key), Some(2)).await, ["public.a", "public.d"], "its flags taken away");
}

/// App-portal tokens with `readOnly` or `capabilities` through the SDK: each does what its
/// capabilities allow in its application and is refused (403) the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_limits_tokens_to_their_capabilities() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);
    let app = svix.application().create(ApplicationIn::new("Caps".into()), None).await.expect("application");
    let ep = svix.endpoint().create(app.id.clone(), EndpointIn::new(rx.url.clone()), None).await.expect("endpoint");
    let keyed = || MessageCreateOptions { idempotency_key: Some("key-1".into()), ..Default::default() };
    let msg = svix.message().create(app.id.clone(), MessageIn::new("a.b".into(), json!({})), Some(keyed())).await;
    let msg = msg.expect("msg");
    rx.wait_for(1, Duration::from_secs(10)).await;
    // The same key with another body: a validation error the SDK reads, with its message.
    let another = MessageIn::new("a.b".into(), json!({"n": 1}));
    match svix.message().create(app.id.clone(), another, Some(keyed())).await {
        Err(svix::error::Error::Validation(e)) => {
            let detail = e.payload.map(|p| p.detail).unwrap_or_default();
            assert!(detail.iter().any(|d| d.msg.contains("Idempotency-Key")), "{detail:?}");
        }
        other => panic!("a reused key with another body: {other:?}"),
    }
    // `readOnly` is deprecated in the SDK (for `capabilities`), and still served.
    #[allow(deprecated)]
    let issue = |read_only: Option<bool>, caps: Option<&[AppPortalCapability]>| {
        let input = AppPortalAccessIn {
            read_only,
            capabilities: caps.map(|c| c.iter().copied().collect()),
            ..AppPortalAccessIn::new()
        };
        let (svix, app_id) = (&svix, app.id.clone());
        async move { svix.authentication().app_portal_access(app_id, input, None).await }
    };
    let forbidden = |result: Result<(), svix::error::Error>, what: &str| {
        let err = result.expect_err(what);
        assert!(format!("{err:?}").contains("403"), "{what}: {err:?}");
    };
    use AppPortalCapability::*;

    let read_only = sdk_with(&server, issue(Some(true), None).await.expect("read-only token").token);
    read_only.endpoint().get(app.id.clone(), ep.id.clone()).await.expect("reads endpoints");
    read_only.message().list(app.id.clone(), None).await.expect("reads messages");
    forbidden(read_only.endpoint().get_secret(app.id.clone(), ep.id.clone()).await.map(drop), "no secrets");
    let new_ep = EndpointIn::new(rx.url.clone());
    forbidden(read_only.endpoint().create(app.id.clone(), new_ep, None).await.map(drop), "no new endpoint");
    let post = MessageIn::new("a.b".into(), json!({}));
    forbidden(read_only.message().create(app.id.clone(), post, None).await.map(drop), "no message");
    let resend = read_only.message_attempt().resend(app.id.clone(), msg.id.clone(), ep.id.clone(), None).await;
    forbidden(resend.map(drop), "no resend");

    let secrets = sdk_with(&server, issue(None, Some(&[ViewBase, ViewEndpointSecret])).await.expect("token").token);
    secrets.endpoint().get_secret(app.id.clone(), ep.id.clone()).await.expect("reads the secret");
    let rotate =
        secrets.endpoint().rotate_secret(app.id.clone(), ep.id.clone(), EndpointSecretRotateIn::new(), None).await;
    forbidden(rotate.map(drop), "no rotation");

    let attempts = sdk_with(&server, issue(None, Some(&[ViewBase, CreateAttempts])).await.expect("token").token);
    attempts.message_attempt().resend(app.id.clone(), msg.id.clone(), ep.id.clone(), None).await.expect("resends");
    assert_eq!(rx.wait_for(2, Duration::from_secs(10)).await.len(), 2, "sent again");
    let patch = EndpointPatch { description: Some("changed".into()), ..EndpointPatch::new() };
    forbidden(attempts.endpoint().patch(app.id.clone(), ep.id.clone(), patch).await.map(drop), "no patch");

    let manage = sdk_with(&server, issue(None, Some(&[ViewBase, ManageEndpoint])).await.expect("token").token);
    let made = manage.endpoint().create(app.id.clone(), EndpointIn::new(rx.url.clone()), None).await.expect("creates");
    let rotate =
        manage.endpoint().rotate_secret(app.id.clone(), made.id.clone(), EndpointSecretRotateIn::new(), None).await;
    rotate.expect("rotates the secret");
    let post = MessageIn::new("a.b".into(), json!({}));
    forbidden(manage.message().create(app.id.clone(), post, None).await.map(drop), "no message either");
    let change = ApplicationPatch { name: Some("Renamed".into()), ..ApplicationPatch::new() };
    forbidden(manage.application().patch(app.id.clone(), change).await.map(drop), "nor the application");

    // Capabilities without ViewBase, or more than reading for a read-only token: 422.
    for (read_only, caps) in [(None, &[CreateAttempts][..]), (Some(true), &[ViewBase, ManageEndpoint][..])] {
        let err = issue(read_only, Some(caps)).await.expect_err("refused");
        assert!(format!("{err:?}").contains("422"), "{err:?}");
    }
}

/// The message's attempts, once there are `n` (panics after 10 s).
async fn attempts_of(svix: &Svix, app_id: &str, msg_id: &str, n: usize) -> Vec<svix::models::MessageAttemptOut> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // With their responses, which the SDK leaves out unless asked.
        let options = MessageAttemptListByMsgOptions { with_content: Some(true), ..Default::default() };
        let list = svix
            .message_attempt()
            .list_by_msg(app_id.to_string(), msg_id.to_string(), Some(options))
            .await
            .expect("attempts of the message");
        if list.data.len() >= n {
            return list.data;
        }
        assert!(std::time::Instant::now() < deadline, "{msg_id} has {} attempts, expected {n}", list.data.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_sets_endpoint_transformations_that_run_before_each_attempt() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);
    let app = svix.application().create(ApplicationIn::new("Scripted".into()), None).await.expect("application");
    let ep = svix.endpoint().create(app.id.clone(), EndpointIn::new(rx.url.clone()), None).await.expect("endpoint");
    let (app_id, ep_id) = (app.id.clone(), ep.id.clone());
    let none = svix.endpoint().transformation().get(app_id.clone(), ep_id.clone()).await.expect("get, none set");
    assert_eq!((none.code, none.enabled, none.updated_at), (None, Some(false), None));

    let code = r#"
        function handler(webhook) {
            if (webhook.payload.internal) { webhook.cancel = true; return webhook; }
            webhook.method = "PUT";
            webhook.url = webhook.url + "/moved";
            webhook.payload = { type: webhook.eventType, wrapped: webhook.payload };
            webhook.headers["X-Api-Key"] = webhook.variables.apiKey;
            return webhook;
        }"#;
    let patch = EndpointTransformationPatch {
        code: js_option::JsOption::Some(code.to_string()),
        enabled: Some(true),
        variables: js_option::JsOption::Some([("apiKey".to_string(), "k-123".to_string())].into()),
    };
    svix.endpoint().transformation().patch(app_id.clone(), ep_id.clone(), patch).await.expect("set");
    let set = svix.endpoint().transformation().get(app_id.clone(), ep_id.clone()).await.expect("get");
    assert_eq!((set.code.as_deref(), set.enabled), (Some(code), Some(true)));
    assert_eq!(set.variables, Some([("apiKey".to_string(), "k-123".to_string())].into()));
    assert!(set.updated_at.is_some());

    // Sent as the handler made it, and signed as sent: the SDK's verifier accepts it.
    let msg = svix
        .message()
        .create(app_id.clone(), MessageIn::new("invoice.paid".into(), json!({"amount": 7})), None)
        .await
        .expect("message");
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let received = &got[0];
    assert_eq!((received.method.as_str(), received.path.as_str()), ("PUT", "/moved"));
    assert_eq!(received.json(), json!({"type": "invoice.paid", "wrapped": {"amount": 7}}));
    assert_eq!(received.header("x-api-key"), "k-123");
    let secret = svix.endpoint().get_secret(app_id.clone(), ep_id.clone()).await.expect("secret").key;
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, received.header(name).parse().unwrap());
    }
    svix::webhooks::Webhook::new(&secret).unwrap().verify(&received.body, &headers).expect("signed as sent");
    let attempt = &attempts_of(&svix, &app_id, &msg.id, 1).await[0];
    assert_eq!((attempt.url.clone(), attempt.status), (format!("{}/moved", rx.url), MessageStatus::Success));

    // Cancelled: nothing is sent, and the delivery is over without counting as a failure.
    let internal = svix
        .message()
        .create(app_id.clone(), MessageIn::new("invoice.paid".into(), json!({"internal": true})), None)
        .await
        .expect("message");
    let attempt = &attempts_of(&svix, &app_id, &internal.id, 1).await[0];
    assert_eq!((attempt.status, attempt.response_status_code), (MessageStatus::Canceled, 0));
    assert_eq!(attempt.status_text, svix::models::MessageStatusText::Canceled);
    assert!(attempt.response.contains("cancelled"), "{}", attempt.response);
    // Every read the SDK asks `expanded_statuses` of shows it canceled.
    let one = svix.message_attempt().get(app_id.clone(), internal.id.clone(), attempt.id.clone(), None).await;
    assert_eq!(one.expect("attempt get").status, MessageStatus::Canceled);
    let sent = svix.message_attempt().list_attempted_messages(app_id.clone(), ep_id.clone(), None).await;
    let sent = sent.expect("attempted messages");
    let shown = sent.data.iter().find(|m| m.id == internal.id).map(|m| m.status);
    assert_eq!(shown, Some(MessageStatus::Canceled));
    assert_eq!(rx.received().len(), 1, "nothing was sent for the cancelled message");
    let stats = svix.endpoint().get_stats(app_id.clone(), ep_id.clone(), None).await.expect("stats");
    assert_eq!((stats.success, stats.fail, stats.canceled), (1, 0, 1));

    // Code that fails at run time fails the attempt, once: no retry can do better.
    let failing = EndpointTransformationPatch {
        code: js_option::JsOption::Some("function handler(w) { return w.payload.missing.field }".into()),
        ..EndpointTransformationPatch::new()
    };
    svix.endpoint().transformation().patch(app_id.clone(), ep_id.clone(), failing).await.expect("set failing code");
    let broken = svix
        .message()
        .create(app_id.clone(), MessageIn::new("invoice.paid".into(), json!({})), None)
        .await
        .expect("message");
    let attempts = attempts_of(&svix, &app_id, &broken.id, 1).await;
    assert_eq!(attempts[0].status, MessageStatus::Fail);
    assert!(attempts[0].response.contains("TypeError"), "{}", attempts[0].response);
    let out = svix.message().get(app_id.clone(), broken.id.clone(), None).await.expect("message");
    assert_eq!(out.id, broken.id);
    let dest = server.call("GET", &format!("/api/v1/app/{app_id}/msg/{}/endpoint", broken.id), None).await;
    assert_eq!(dest.1["data"][0]["status"], json!(2), "failed for good, no retry: {}", dest.1);

    // Code that does not compile, or declares no handler, is refused when set: 422.
    for bad in ["function handler(w) {", "function other(w) { return w }"] {
        let patch = EndpointTransformationPatch {
            code: js_option::JsOption::Some(bad.into()),
            ..EndpointTransformationPatch::new()
        };
        let err = svix.endpoint().transformation().patch(app_id.clone(), ep_id.clone(), patch).await.expect_err(bad);
        assert!(format!("{err:?}").contains("422"), "{bad}: {err:?}");
    }

    // Disabled, the endpoint gets the message as posted.
    let off = EndpointTransformationPatch { enabled: Some(false), ..EndpointTransformationPatch::new() };
    svix.endpoint().transformation().patch(app_id.clone(), ep_id.clone(), off).await.expect("disable");
    svix.message()
        .create(app_id.clone(), MessageIn::new("invoice.paid".into(), json!({"plain": true})), None)
        .await
        .expect("message");
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!((got[1].method.as_str(), got[1].path.as_str(), got[1].json()), ("POST", "/", json!({"plain": true})));

    // A token that may only read sees the variables' names, not their values, and cannot
    // change the code; `ManageTransformations` can.
    let issue = |caps: std::collections::BTreeSet<AppPortalCapability>| {
        let input = AppPortalAccessIn { capabilities: Some(caps), ..AppPortalAccessIn::new() };
        let (svix, app_id) = (&svix, app_id.clone());
        async move { svix.authentication().app_portal_access(app_id, input, None).await.expect("token").token }
    };
    let viewer_token = issue([AppPortalCapability::ViewBase].into()).await;
    let viewer = sdk_with(&server, viewer_token.clone());
    let seen = viewer.endpoint().transformation().get(app_id.clone(), ep_id.clone()).await.expect("reads");
    assert_eq!(seen.variables, Some([("apiKey".to_string(), "[redacted]".to_string())].into()));
    // Nor can it get them back through a preview's output, of its own code or the endpoint's.
    let preview = format!("/api/v1/app/{app_id}/endpoint/{ep_id}/preview");
    let leak = json!({ "payload": {}, "transformation": "function handler(w) { w.payload = w.variables; return w }" });
    let (status, out) = server.call_as(&viewer_token, "POST", &preview, Some(leak.clone())).await;
    assert_eq!((status, &out["body"]), (200, &json!({ "apiKey": "[redacted]" })), "{out}");
    let (status, out) = server.call("POST", &preview, Some(leak)).await;
    assert_eq!((status, &out["body"]), (200, &json!({ "apiKey": "k-123" })), "the admin sees them: {out}");
    let patch = EndpointTransformationPatch { enabled: Some(true), ..EndpointTransformationPatch::new() };
    let err = viewer.endpoint().transformation().patch(app_id.clone(), ep_id.clone(), patch.clone()).await;
    assert!(format!("{:?}", err.expect_err("refused")).contains("403"));
    let editor = sdk_with(
        &server,
        issue([AppPortalCapability::ViewBase, AppPortalCapability::ManageTransformations].into()).await,
    );
    editor.endpoint().transformation().patch(app_id.clone(), ep_id.clone(), patch).await.expect("may change it");
    assert_eq!(
        svix.endpoint().transformation().get(app_id.clone(), ep_id.clone()).await.expect("get").enabled,
        Some(true)
    );
    // Its read-modify-write sends the placeholder back: the value is kept, a new one is set.
    let shown = editor.endpoint().transformation().get(app_id.clone(), ep_id.clone()).await.expect("reads");
    let mut variables = shown.variables.expect("variables");
    assert_eq!(variables["apiKey"], "[redacted]");
    variables.insert("region".into(), "eu".into());
    let back = EndpointTransformationPatch {
        variables: js_option::JsOption::Some(variables),
        ..EndpointTransformationPatch::new()
    };
    editor.endpoint().transformation().patch(app_id.clone(), ep_id.clone(), back).await.expect("written back");
    let stored = svix.endpoint().transformation().get(app_id, ep_id).await.expect("get").variables;
    assert_eq!(stored, Some([("apiKey".into(), "k-123".into()), ("region".into(), "eu".into())].into()));
}

/// The SDK's raw payloads (`MessageIn::new_raw_payload`, `with_content_type`): the receiver
/// gets the text exactly as given, with the content type given (`application/json` when
/// none), signed as sent; the message is answered with that text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_sends_raw_payloads_as_they_are() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);
    let app = svix.application().create(ApplicationIn::new("Raw".into()), None).await.expect("application");
    let ep = svix.endpoint().create(app.id.clone(), EndpointIn::new(rx.url.clone()), None).await.expect("endpoint");
    let secret = svix.endpoint().get_secret(app.id.clone(), ep.id.clone()).await.expect("secret").key;
    let verifier = svix::webhooks::Webhook::new(&secret).expect("secret parses");
    let verify = |received: &Received| {
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(name, received.header(name).parse().unwrap());
        }
        verifier.verify(&received.body, &headers)
    };

    // Plain text, not JSON, with its own content type.
    let text = "Invoice 42 paid.\n  {not JSON} \u{e9}\t";
    let msg = svix
        .message()
        .create(
            app.id.clone(),
            MessageIn::new_raw_payload("invoice.paid".into(), text.into()).with_content_type("text/plain".into()),
            None,
        )
        .await
        .expect("raw message");
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("webhook-id"), msg.id);
    assert_eq!(got[0].body, text.as_bytes(), "the exact bytes given");
    assert_eq!(got[0].header("content-type"), "text/plain");
    verify(&got[0]).expect("the SDK verifies the signature over the bytes sent");
    let shown = svix
        .message()
        .get(app.id.clone(), msg.id.clone(), Some(svix::api::MessageGetOptions { with_content: Some(true) }))
        .await
        .expect("message get");
    assert_eq!(shown.payload, json!(text), "answered as the text it is");

    // JSON text as it was written (Svix would otherwise send it minified), as JSON.
    let written = "{\"b\":  2,\n \"a\": 1.50}";
    let msg = svix
        .message()
        .create(app.id.clone(), MessageIn::new_raw_payload("invoice.paid".into(), written.into()), None)
        .await
        .expect("raw JSON message");
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].header("webhook-id"), msg.id);
    assert_eq!(got[1].body, written.as_bytes(), "not minified");
    assert_eq!(got[1].header("content-type"), "application/json");
    verify(&got[1]).expect("signed as sent");
    let shown = svix
        .message()
        .get(app.id.clone(), msg.id.clone(), Some(svix::api::MessageGetOptions { with_content: Some(true) }))
        .await
        .expect("message get");
    assert_eq!(shown.payload, json!({ "b": 2, "a": 1.5 }));
}

/// Svix's message poller (`svix.message().poller()`): a polling endpoint's messages, with
/// the SDK's own iterator and with server-kept consumers and their seek.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_polls_a_polling_endpoint() {
    use svix::api::{MessagePollerConsumerPollOptions, MessagePollerPollOptions};
    use svix::models::PollingEndpointConsumerSeekIn;

    let server = Server::start("").await;
    let svix = sdk(&server);
    let app = svix.application().create(ApplicationIn::new("poller".into()), None).await.expect("application");
    // A polling endpoint is hooklane's own field: created through the plain API.
    let spec = json!({ "polling": true, "uid": "books", "filterTypes": ["invoice.paid"] });
    let (status, ep) = server.call("POST", &format!("/api/v1/app/{}/endpoint", app.id), Some(spec)).await;
    assert_eq!(status, 201, "{ep}");
    let got = svix.endpoint().get(app.id.clone(), "books".into()).await.expect("the SDK reads a polling endpoint");
    assert!(got.url.ends_with(&format!("/poller/{}", got.id)), "{}", got.url);
    // A read-modify-write sends back the url it read: accepted, the endpoint still polls.
    let update = EndpointUpsertIn {
        description: Some("ledger".into()),
        event_types: got.event_types.clone(),
        uid: got.uid.clone(),
        ..EndpointUpsertIn::new(got.url.clone())
    };
    let updated = svix.endpoint().upsert(app.id.clone(), got.id.clone(), update).await.expect("upsert");
    assert_eq!((updated.description.as_str(), &updated.url), ("ledger", &got.url));

    let mut sent = Vec::new();
    for et in ["invoice.paid", "user.created", "invoice.paid"] {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let msg = MessageIn::new(et.into(), json!({ "et": et }));
        sent.push(svix.message().create(app.id.clone(), msg, None).await.expect("message"));
    }
    let poller = svix.message().poller();
    let page = poller
        .poll(app.id.clone(), "books".into(), Some(MessagePollerPollOptions { limit: Some(1), ..Default::default() }))
        .await
        .expect("poll");
    assert_eq!(page.data.iter().map(|m| &m.id).collect::<Vec<_>>(), [&sent[0].id]);
    assert_eq!(page.data[0].payload, json!({ "et": "invoice.paid" }));
    let page = poller
        .poll(
            app.id.clone(),
            "books".into(),
            Some(MessagePollerPollOptions { iterator: Some(page.iterator), ..Default::default() }),
        )
        .await
        .expect("poll on");
    assert_eq!(page.data.iter().map(|m| &m.id).collect::<Vec<_>>(), [&sent[2].id]);
    assert!(page.done);

    let consumer = |options| poller.consumer_poll(app.id.clone(), "books".into(), "ledger".into(), options);
    let read = consumer(None).await.expect("consumer poll");
    assert_eq!(read.data.len(), 2);
    assert!(consumer(None).await.expect("consumer poll again").data.is_empty(), "the server kept its position");
    let seek = PollingEndpointConsumerSeekIn::new(sent[0].timestamp);
    let out =
        poller.consumer_seek(app.id.clone(), "books".into(), "ledger".into(), seek, None).await.expect("consumer seek");
    assert!(!out.iterator.is_empty());
    let read = consumer(Some(MessagePollerConsumerPollOptions { limit: Some(10), ..Default::default() }))
        .await
        .expect("consumer poll after the seek");
    assert_eq!(read.data.iter().map(|m| &m.id).collect::<Vec<_>>(), [&sent[2].id]);
}

/// Tokens of sessions through the SDK: `sessionId` given to app-portal access, and
/// `expire-all` with `sessionIds` ending those sessions' tokens only; an application created
/// by app-portal access under another uid than the path's is refused as Svix refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_expires_the_tokens_of_the_sessions_it_names() {
    let server = Server::start("").await;
    let svix = sdk(&server);
    let app = svix.application().create(ApplicationIn::new("Sessions".into()), None).await.expect("app");
    let mut clients = Vec::new();
    for session in [Some("s1"), Some("s2"), None] {
        let input = AppPortalAccessIn { session_id: session.map(str::to_string), ..AppPortalAccessIn::new() };
        let access = svix.authentication().app_portal_access(app.id.clone(), input, None).await.expect("token");
        clients.push(sdk_with(&server, access.token));
    }
    let [first, second, plain] = <[Svix; 3]>::try_from(clients).ok().expect("three clients");
    let works = |client: &Svix| {
        let (client, app_id) = (client.clone(), app.id.clone());
        async move { client.application().get(app_id).await.is_ok() }
    };
    assert!(works(&first).await && works(&second).await && works(&plain).await);
    let only_s1 = ApplicationTokenExpireIn { session_ids: Some(vec!["s1".into()]), ..ApplicationTokenExpireIn::new() };
    svix.authentication().expire_all(app.id.clone(), only_s1, None).await.expect("expire s1");
    assert!(!works(&first).await, "the session named is ended");
    assert!(works(&second).await && works(&plain).await, "the others go on");
    let none_named = ApplicationTokenExpireIn { session_ids: Some(Vec::new()), ..ApplicationTokenExpireIn::new() };
    svix.authentication().expire_all(app.id.clone(), none_named, None).await.expect("expire all");
    assert!(!works(&second).await && !works(&plain).await, "without sessions named, every token");

    let mut other_uid = ApplicationIn::new("Elsewhere".into());
    other_uid.uid = Some("not-the-path".into());
    let input = AppPortalAccessIn { application: Some(other_uid), ..AppPortalAccessIn::new() };
    let refused = svix.authentication().app_portal_access("the-path".into(), input, None).await;
    assert!(matches!(refused, Err(svix::error::Error::Validation(_))), "{refused:?}");
    assert!(svix.application().get("the-path".into()).await.is_err(), "nothing was created");
}

/// A list with `after` alone reads as Svix's does: the first page holds the messages just
/// after that time (newest first within it), and `prevIterator` goes on forward in time
/// until `done`; so a client reading everything after a time, as it would on Svix, gets
/// each message once and none from before. The same for attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svix_sdk_reads_forward_from_after() {
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let svix = sdk(&server);
    let app = svix.application().create(ApplicationIn::new("After".into()), None).await.expect("app");
    svix.endpoint().create(app.id.clone(), EndpointIn::new(rx.url.clone()), None).await.expect("endpoint");
    let messages = svix.message();
    let send = || messages.create(app.id.clone(), MessageIn::new("a.b".into(), json!({})), None);
    let before = send().await.expect("message before").id;
    rx.wait_for(1, Duration::from_secs(10)).await;
    // Its attempt logged too (stamped once its answer was read), before the time is taken.
    attempts_of(&svix, &app.id, &before, 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = hooklane_core::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut sent = Vec::new();
    for _ in 0..5 {
        sent.push(send().await.expect("message after").id);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    rx.wait_for(6, Duration::from_secs(10)).await;

    let options = |iterator: Option<String>| MessageListOptions {
        limit: Some(2),
        after: iterator.is_none().then_some(after),
        iterator,
        ..MessageListOptions::default()
    };
    let first = svix.message().list(app.id.clone(), Some(options(None))).await.expect("first page");
    let ids = |data: &[svix::models::MessageOut]| data.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first.data), [sent[1].clone(), sent[0].clone()], "the two just after, newest first");
    assert!(!first.done, "newer ones follow");
    let mut read: Vec<String> = ids(&first.data);
    let mut prev = first.prev_iterator.clone();
    let mut pages = 0;
    loop {
        let page = svix.message().list(app.id.clone(), Some(options(prev.clone()))).await.expect("newer page");
        read.extend(ids(&page.data));
        pages += 1;
        if page.done || pages > 5 {
            break;
        }
        prev = page.prev_iterator;
    }
    read.sort();
    assert_eq!(read, sent, "each message after the time once, and {before} not at all");

    // Attempts too: the attempts just after the time first (once every one is logged, which
    // is after its request reached the receiver).
    for msg in &sent {
        attempts_of(&svix, &app.id, msg, 1).await;
    }
    let options = MessageAttemptListByEndpointOptions { limit: Some(2), after: Some(after), ..Default::default() };
    let endpoint = svix.endpoint().list(app.id.clone(), None).await.expect("endpoints").data[0].id.clone();
    let page =
        svix.message_attempt().list_by_endpoint(app.id.clone(), endpoint, Some(options)).await.expect("attempts");
    let msgs: Vec<String> = page.data.iter().map(|a| a.msg_id.clone()).collect();
    assert_eq!(msgs, [sent[1].clone(), sent[0].clone()], "{msgs:?}");
}
