//! Conformance cases of inbound sources: sources with the application they own, request
//! records, and the media type and headers messages forwarded from a source carry.

use std::collections::BTreeMap;

use hooklane_core::ids::{self, new_id};
use hooklane_core::inbound::{Deduplication, PreviousVerification, Verification};
use hooklane_core::model::{EventDestination, InboundRequest, InboundStatus, Metadata, Source, SourceResponse};
use hooklane_store::{DestinationChanges, DynStore};

use super::*;

pub fn new_source(name: &str) -> (Source, Application) {
    let t = now_ms();
    let id = new_id(ids::SOURCE);
    let mut app = new_app(&format!("source {name}"), Some(&id));
    app.created_at = t;
    let source = Source {
        id,
        app_id: app.id.clone(),
        name: name.to_string(),
        verification: Verification::Github { secret: "gh-secret".into() },
        previous_verification: None,
        deduplication: Some(Deduplication::Header { header: "x-github-delivery".into() }),
        allow_networks: vec!["10.0.0.0/8".into()],
        max_body_bytes: Some(65536),
        event_destinations: vec![EventDestination { app_id: "app_x".into(), event_type: "github.push".into() }],
        ordering_key: Some("{{ repository.full_name }}".into()),
        response: Some(SourceResponse {
            status: 202,
            body: "<Response/>".into(),
            content_type: Some("text/xml".into()),
        }),
        metadata: Metadata::from([("team".to_string(), "infra".to_string())]),
        created_at: t,
        updated_at: t,
    };
    (source, app)
}

pub fn new_request(source_id: &str, status: InboundStatus, at: DateTime<Utc>) -> InboundRequest {
    InboundRequest {
        id: new_id(ids::INBOUND_REQUEST),
        source_id: source_id.to_string(),
        status,
        http_status: match status {
            InboundStatus::Rejected => 401,
            _ => 200,
        },
        reason: (status == InboundStatus::Rejected).then(|| "signature does not match".to_string()),
        remote_addr: Some("192.0.2.7".into()),
        headers: BTreeMap::from([("x-github-event".to_string(), "push".to_string())]),
        body: b"{\"ref\":\"main\"}".to_vec(),
        body_size: 14,
        dedup_key: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
        msg_id: (status != InboundStatus::Rejected).then(|| new_id(ids::MESSAGE)),
        received_at: at,
    }
}

pub async fn source_lifecycle_and_hidden_application(store: &DynStore) {
    let plain = setup_app(store, "Plain").await;
    let (mut source, app) = new_source("github");
    let ep1 = new_endpoint(&app.id, None);
    let ep2 = new_endpoint(&app.id, None);
    store.create_source(source.clone(), app.clone(), vec![ep1.clone(), ep2.clone()]).await.unwrap();

    assert_eq!(store.get_source(&source.id).await.unwrap(), Some(source.clone()));
    assert_eq!(store.get_source(&new_id(ids::SOURCE)).await.unwrap(), None);
    // The application is there, by id and by uid (the source id), with its endpoints…
    assert_eq!(store.get_app(&app.id).await.unwrap(), Some(app.clone()));
    assert_eq!(store.get_app(&source.id).await.unwrap(), Some(app.clone()));
    let eps: Vec<String> = store.app_endpoints(&app.id).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(eps, vec![ep1.id.clone(), ep2.id.clone()]);
    // …but not listed among the applications.
    let listed: Vec<String> =
        store.list_apps(&PageRequest::default()).await.unwrap().items.into_iter().map(|a| a.id).collect();
    assert_eq!(listed, vec![plain.id.clone()]);

    // Several sources paginate like everything else.
    let mut ids = vec![source.id.clone()];
    for i in 0..4 {
        let (s, a) = new_source(&format!("s{i}"));
        store.create_source(s.clone(), a, Vec::new()).await.unwrap();
        ids.push(s.id);
    }
    let got = all_pages(
        2,
        false,
        |s: &Source| s.id.clone(),
        |p| {
            let st = store.clone();
            async move { st.list_sources(&p).await }
        },
    )
    .await;
    assert_eq!(got.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), ids);
    let newest = store.list_sources(&page_req(1, None, true)).await.unwrap();
    assert_eq!(newest.items[0].id, ids[4]);

    // Update: every setting round-trips, secrets included (the store needs them).
    source.name = "GitHub (org)".into();
    source.verification = Verification::Stripe { secret: "whsec_new".into() };
    source.previous_verification = Some(PreviousVerification {
        verification: Verification::Stripe { secret: "whsec_old".into() },
        until: source.updated_at + secs(3600),
    });
    source.deduplication = None;
    source.allow_networks.clear();
    source.max_body_bytes = None;
    source.event_destinations.clear();
    source.response = None;
    source.metadata.clear();
    source.updated_at += secs(5);
    store.update_source(source.clone(), DestinationChanges::default()).await.unwrap();
    assert_eq!(store.get_source(&source.id).await.unwrap(), Some(source.clone()));
    // The verification kept from a rotation goes when it is cleared; a deduplication on a
    // field or else a header (Slack's) round-trips too.
    source.previous_verification = None;
    source.deduplication =
        Some(Deduplication::JsonFieldOrHeader { path: "event_id".into(), header: "x-slack-signature".into() });
    store.update_source(source.clone(), DestinationChanges::default()).await.unwrap();
    assert_eq!(store.get_source(&source.id).await.unwrap(), Some(source.clone()));
    let (ghost, _) = new_source("ghost");
    assert_not_found(store.update_source(ghost, DestinationChanges::default()).await, "update of a missing source");

    // Delete: the source, its application with its endpoints, messages and deliveries, and
    // its request records all go; other applications stay.
    let msg = post(store, &app.id, &[&ep1], now_ms()).await;
    store.record_inbound_request(new_request(&source.id, InboundStatus::Accepted, now_ms())).await.unwrap();
    store.delete_source(&source.id).await.unwrap();
    assert_eq!(store.get_source(&source.id).await.unwrap(), None);
    assert_eq!(store.get_app(&app.id).await.unwrap(), None);
    assert!(store.app_endpoints(&app.id).await.unwrap().is_empty());
    assert_eq!(store.get_message(&app.id, &msg.id).await.unwrap(), None);
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "the deleted message's delivery is gone");
    let left = store.list_inbound_requests(&source.id, None, &PageRequest::default()).await.unwrap();
    assert!(left.items.is_empty());
    assert_eq!(store.get_app(&plain.id).await.unwrap(), Some(plain));
    assert_not_found(store.delete_source(&source.id).await, "second delete");
}

pub async fn source_create_is_atomic(store: &DynStore) {
    let (source, app) = new_source("first");
    let ep = new_endpoint(&app.id, None);
    store.create_source(source, app, vec![ep.clone()]).await.unwrap();

    // A second source whose endpoint id is taken: nothing of it may be left behind.
    let (second, second_app) = new_source("second");
    let mut clash = new_endpoint(&second_app.id, None);
    clash.id = ep.id.clone();
    let r = store.create_source(second.clone(), second_app.clone(), vec![clash]).await;
    assert_conflict(r, "endpoint id taken");
    assert_eq!(store.get_source(&second.id).await.unwrap(), None);
    assert_eq!(store.get_app(&second_app.id).await.unwrap(), None);

    // Two sources cannot own the same application.
    let (mut third, _) = new_source("third");
    let first_app_id = store.list_sources(&PageRequest::default()).await.unwrap().items[0].app_id.clone();
    third.app_id = first_app_id;
    let other_app = new_app("other", None);
    assert_conflict(store.create_source(third.clone(), other_app.clone(), Vec::new()).await, "app owned twice");
    assert_eq!(store.get_app(&other_app.id).await.unwrap(), None);
}

/// The endpoints of a source's application as stored: (id, url) in id order.
async fn destinations(store: &DynStore, app_id: &str) -> Vec<(String, String)> {
    let mut eps: Vec<_> = store.app_endpoints(app_id).await.unwrap().into_iter().map(|e| (e.id, e.url)).collect();
    eps.sort();
    eps
}

pub async fn source_update_saves_destinations_in_one_transaction(store: &DynStore) {
    let (mut source, app) = new_source("github");
    let (ep1, ep2) = (new_endpoint(&app.id, None), new_endpoint(&app.id, Some("second")));
    store.create_source(source.clone(), app.clone(), vec![ep1.clone(), ep2.clone()]).await.unwrap();

    // One update: ep1 changed, ep2 deleted (with its deliveries), ep3 created, the source renamed.
    let msg = post(store, &app.id, &[&ep2], now_ms()).await;
    let mut ep1_new = ep1.clone();
    ep1_new.url = "https://example.com/changed".into();
    ep1_new.updated_at = ep1.updated_at + millis(1);
    let ep3 = new_endpoint(&app.id, None);
    source.name = "renamed".into();
    let changes = DestinationChanges {
        updated: vec![(ep1_new.clone(), ep1.updated_at)],
        deleted: vec![ep2.id.clone()],
        created: vec![ep3.clone()],
    };
    store.update_source(source.clone(), changes).await.unwrap();
    assert_eq!(store.get_source(&source.id).await.unwrap(), Some(source.clone()));
    let mut want = vec![(ep1.id.clone(), ep1_new.url.clone()), (ep3.id.clone(), ep3.url.clone())];
    want.sort();
    assert_eq!(destinations(store, &app.id).await, want);
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "the deleted endpoint's delivery is gone");
    assert!(store.get_message(&app.id, &msg.id).await.unwrap().is_some(), "the message stays");

    // Each way one change can be refused leaves the source and every other change unsaved.
    let mut renamed = source.clone();
    renamed.name = "never saved".into();
    let mut stale = ep1_new.clone();
    stale.url = "https://example.com/stale".into();
    let mut taken = new_endpoint(&app.id, None);
    taken.id = ep3.id.clone();
    type Refusal = fn(&StoreResult<()>) -> bool;
    let refused: [(&str, DestinationChanges, Refusal); 4] = [
        (
            "an endpoint changed since it was read",
            DestinationChanges {
                updated: vec![(stale.clone(), ep1.updated_at)],
                deleted: vec![ep3.id.clone()],
                created: vec![new_endpoint(&app.id, None)],
            },
            |r| matches!(r, Err(StoreError::Changed)),
        ),
        (
            "an endpoint deleted since it was read",
            DestinationChanges {
                updated: vec![(stale.clone(), ep1_new.updated_at)],
                deleted: vec![ep2.id.clone()],
                created: Vec::new(),
            },
            |r| matches!(r, Err(StoreError::Changed)),
        ),
        (
            "an endpoint updated after its deletion",
            DestinationChanges {
                updated: vec![(ep2.clone(), ep2.updated_at)],
                deleted: vec![ep3.id.clone()],
                created: Vec::new(),
            },
            |r| matches!(r, Err(StoreError::Changed)),
        ),
        (
            "an endpoint id taken",
            DestinationChanges {
                updated: vec![(stale.clone(), ep1_new.updated_at)],
                deleted: Vec::new(),
                created: vec![taken.clone()],
            },
            |r| matches!(r, Err(StoreError::Conflict(_))),
        ),
    ];
    for (what, changes, expected) in refused {
        let r = store.update_source(renamed.clone(), changes).await;
        assert!(expected(&r), "{what}: {r:?}");
        assert_eq!(store.get_source(&source.id).await.unwrap(), Some(source.clone()), "{what}: source");
        assert_eq!(destinations(store, &app.id).await, want, "{what}: endpoints");
    }

    // A missing source saves none of its changes either.
    let (ghost, _) = new_source("ghost");
    let mut ghost = ghost;
    ghost.app_id = app.id.clone();
    let r = store
        .update_source(
            ghost,
            DestinationChanges { updated: Vec::new(), deleted: vec![ep3.id.clone()], created: Vec::new() },
        )
        .await;
    assert_not_found(r, "update of a missing source");
    assert_eq!(destinations(store, &app.id).await, want);
}

pub async fn inbound_requests_record_list_get(store: &DynStore) {
    let (a, a_app) = new_source("a");
    let (b, b_app) = new_source("b");
    store.create_source(a.clone(), a_app, Vec::new()).await.unwrap();
    store.create_source(b.clone(), b_app, Vec::new()).await.unwrap();
    let t = now_ms();
    let mut recorded = Vec::new();
    for (i, status) in [
        InboundStatus::Accepted,
        InboundStatus::Rejected,
        InboundStatus::Duplicate,
        InboundStatus::Rejected,
        InboundStatus::Accepted,
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = new_request(&a.id, status, t + millis(i as i64));
        if i == 1 {
            // Bodies are kept byte for byte, whatever they hold.
            r.body = vec![0xff, 0x00, 0xfe, b'{'];
            r.body_size = 1_000_000;
            r.remote_addr = None;
            r.dedup_key = None;
        }
        store.record_inbound_request(r.clone()).await.unwrap();
        recorded.push(r);
    }
    store.record_inbound_request(new_request(&b.id, InboundStatus::Accepted, t)).await.unwrap();

    let all = store.list_inbound_requests(&a.id, None, &page_req(50, None, false)).await.unwrap();
    assert_eq!(all.items, recorded, "records come back whole, in order, only the source's own");
    assert!(all.done);
    let newest_first = all_pages(
        2,
        true,
        |r: &InboundRequest| r.id.clone(),
        |p| {
            let (st, id) = (store.clone(), a.id.clone());
            async move { st.list_inbound_requests(&id, None, &p).await }
        },
    )
    .await;
    assert_eq!(newest_first, recorded.iter().rev().cloned().collect::<Vec<_>>());
    let rejected =
        store.list_inbound_requests(&a.id, Some(InboundStatus::Rejected), &PageRequest::default()).await.unwrap();
    assert_eq!(rejected.items, vec![recorded[1].clone(), recorded[3].clone()]);
    let dup =
        store.list_inbound_requests(&a.id, Some(InboundStatus::Duplicate), &PageRequest::default()).await.unwrap();
    assert_eq!(dup.items, vec![recorded[2].clone()]);

    assert_eq!(store.get_inbound_request(&a.id, &recorded[1].id).await.unwrap(), Some(recorded[1].clone()));
    assert_eq!(store.get_inbound_request(&b.id, &recorded[1].id).await.unwrap(), None, "scoped to its source");
    assert_conflict(store.record_inbound_request(recorded[0].clone()).await, "same request id twice");
}

/// A message's accepted request is found by the message: not a duplicate of it, nor another
/// source's.
pub async fn the_accepted_request_of_a_message_is_found(store: &DynStore) {
    let (a, a_app) = new_source("first");
    store.create_source(a.clone(), a_app, Vec::new()).await.unwrap();
    let (b, b_app) = new_source("second");
    store.create_source(b.clone(), b_app, Vec::new()).await.unwrap();
    let t = now_ms();
    let accepted = new_request(&a.id, InboundStatus::Accepted, t);
    let msg = accepted.msg_id.clone().expect("a message");
    let mut duplicate = new_request(&a.id, InboundStatus::Duplicate, t + secs(1));
    duplicate.msg_id = Some(msg.clone());
    let mut lone_duplicate = new_request(&a.id, InboundStatus::Duplicate, t);
    let lone = lone_duplicate.msg_id.clone().expect("a message");
    lone_duplicate.reason = Some("seen before".into());
    for r in [&duplicate, &accepted, &lone_duplicate] {
        store.record_inbound_request(r.clone()).await.unwrap();
    }
    assert_eq!(store.accepted_request_of(&a.id, &msg).await.unwrap(), Some(accepted));
    assert_eq!(store.accepted_request_of(&b.id, &msg).await.unwrap(), None, "scoped to its source");
    assert_eq!(store.accepted_request_of(&a.id, &lone).await.unwrap(), None, "a duplicate is not it");
    assert_eq!(store.accepted_request_of(&a.id, &new_id(ids::MESSAGE)).await.unwrap(), None);
}

pub async fn unfinished_fan_outs_are_found_until_finished(store: &DynStore) {
    let (a, a_app) = new_source("fan");
    store.create_source(a.clone(), a_app, Vec::new()).await.unwrap();
    let t = now_ms() - mins(5);
    let with_reason = |status, at, reason: Option<&str>, msg: bool| {
        let mut r = new_request(&a.id, status, at);
        r.reason = reason.map(String::from);
        if !msg {
            r.msg_id = None;
        }
        r
    };
    let pending = [
        with_reason(InboundStatus::Accepted, t + secs(2), Some("fan-out failed: store"), true),
        with_reason(InboundStatus::Accepted, t + secs(1), Some("fan-out failed: store"), true),
    ];
    let others = [
        with_reason(InboundStatus::Accepted, t, None, true), // forwarded whole
        with_reason(InboundStatus::Accepted, t, Some("the provider's URL check, answered"), false),
        with_reason(InboundStatus::Duplicate, t, Some("seen before"), true),
        with_reason(InboundStatus::Rejected, t, Some("signature does not match"), false),
        with_reason(InboundStatus::Accepted, now_ms() + mins(1), Some("fan-out failed: store"), true), // too recent
    ];
    for r in pending.iter().chain(&others) {
        store.record_inbound_request(r.clone()).await.unwrap();
    }
    let found = store.unfinished_fan_outs((t, now_ms()), 10).await.unwrap();
    assert_eq!(found, vec![pending[1].clone(), pending[0].clone()], "oldest first, only the unfinished");
    assert_eq!(store.unfinished_fan_outs((t, now_ms()), 1).await.unwrap(), vec![pending[1].clone()]);
    let window = (t + millis(1500), now_ms());
    assert_eq!(
        store.unfinished_fan_outs(window, 10).await.unwrap(),
        vec![pending[0].clone()],
        "received in the window"
    );

    store.finish_fan_out(&a.id, &pending[1].id).await.unwrap();
    store.finish_fan_out("src_other", &pending[0].id).await.unwrap(); // another source's: nothing
    assert_eq!(store.unfinished_fan_outs((t, now_ms()), 10).await.unwrap(), vec![pending[0].clone()]);
    let finished = store.get_inbound_request(&a.id, &pending[1].id).await.unwrap().expect("kept");
    assert_eq!(
        (finished.status, finished.reason, finished.msg_id),
        (InboundStatus::Accepted, None, pending[1].msg_id.clone())
    );
    // Finishing a request that is not unfinished changes nothing.
    store.finish_fan_out(&a.id, &others[2].id).await.unwrap();
    let duplicate = store.get_inbound_request(&a.id, &others[2].id).await.unwrap().expect("kept");
    assert_eq!(duplicate.reason.as_deref(), Some("seen before"));
}

pub async fn message_content_type_and_headers_round_trip(store: &DynStore) {
    let app = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &app.id).await;
    let t = now_ms();
    let mut msg = new_message(&app.id, "slash.command", t);
    msg.payload = "token=abc&text=hello+world".into();
    msg.content_type = Some("application/x-www-form-urlencoded".into());
    msg.headers = BTreeMap::from([
        ("x-slack-retry-num".to_string(), "1".to_string()),
        ("x-github-event".to_string(), "push".to_string()),
    ]);
    msg.event_id = Some("delivery-1".into());
    store.create_message(msg.clone(), vec![ep.id.clone()], None).await.unwrap();
    assert_eq!(store.get_message(&app.id, &msg.id).await.unwrap(), Some(msg.clone()));
    assert_eq!(store.get_message(&app.id, "delivery-1").await.unwrap(), Some(msg.clone()));
    let listed = store.list_messages(&app.id, &MessageFilter::default(), &PageRequest::default()).await.unwrap();
    assert_eq!(listed.items, vec![msg.clone()]);
    let jobs = claim(store, t + secs(1)).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(*jobs[0].message, msg, "the dispatcher gets the media type and headers");

    // A message posted through the API has neither.
    let plain = post(store, &app.id, &[&ep], t).await;
    let got = store.get_message(&app.id, &plain.id).await.unwrap().unwrap();
    assert_eq!(got.content_type, None);
    assert!(got.headers.is_empty());
}

pub async fn prune_deletes_expired_keys_and_old_requests(store: &DynStore) {
    let t = now_ms();
    let ttl = Duration::from_secs(60);
    // Five answers kept until t+60s, two keys held until t+120s.
    for i in 0..5 {
        store.idempotency_begin(&format!("old-{i}"), "f", t, ttl).await.unwrap();
        let answer = StoredResponse { status: 200, body: b"{}".to_vec() };
        store.idempotency_finish(&format!("old-{i}"), (t, ttl), answer, t + secs(60)).await.unwrap();
    }
    for i in 0..2 {
        store.idempotency_begin(&format!("new-{i}"), "f", t + secs(60), ttl).await.unwrap();
    }
    let (src, app) = new_source("pruned");
    store.create_source(src.clone(), app, Vec::new()).await.unwrap();
    let mut requests = Vec::new();
    for i in 0..4 {
        let r = new_request(&src.id, InboundStatus::Accepted, t + secs(i * 10));
        store.record_inbound_request(r.clone()).await.unwrap();
        requests.push(r);
    }

    // Nothing is due yet: no key expired, no retention asked for.
    assert_eq!(store.prune(t, None, None, 100).await.unwrap(), Pruned::default());
    // At t+61s the five old keys have expired; at most `limit` go per call.
    let first = store.prune(t + secs(61), Some(t + secs(15)), None, 3).await.unwrap();
    assert_eq!(first, Pruned { idempotency_keys: 3, inbound_requests: 2, ..Pruned::default() });
    let second = store.prune(t + secs(61), Some(t + secs(15)), None, 3).await.unwrap();
    assert_eq!(second, Pruned { idempotency_keys: 2, ..Pruned::default() });
    // An expired key is gone; one still alive keeps its state.
    assert_eq!(
        store.idempotency_begin("old-0", "f", t + secs(62), ttl).await.unwrap(),
        IdempotencyState::Started { resumes: None }
    );
    assert_eq!(
        store.idempotency_begin("new-0", "f", t + secs(62), ttl).await.unwrap(),
        IdempotencyState::InFlight { held_until: Some(t + secs(120)) }
    );
    // Only requests received before the cut-off were deleted.
    let left = store.list_inbound_requests(&src.id, None, &PageRequest::default()).await.unwrap();
    assert_eq!(left.items, requests[2..].to_vec());
}

/// A request record whose fan-out is still to be done outlives the request retention for as
/// long as it is to be done ([`hooklane_store::FAN_OUT_KEPT`]): it is all the sweep that
/// completes it works from. Once finished, or past that, it goes as any other.
pub async fn prune_keeps_unfinished_fan_outs_while_they_are_to_be_done(store: &DynStore) {
    let t = now_ms();
    let (src, app) = new_source("unfinished");
    store.create_source(src.clone(), app, Vec::new()).await.unwrap();
    let unfinished = |at| {
        let mut r = new_request(&src.id, InboundStatus::Accepted, at);
        r.reason = Some("fan-out failed: refused".into());
        r
    };
    let finished = new_request(&src.id, InboundStatus::Accepted, t - hours(2));
    let to_do = unfinished(t - hours(2));
    let given_up = unfinished(t - hooklane_store::FAN_OUT_KEPT - hours(1));
    for r in [&finished, &to_do, &given_up] {
        store.record_inbound_request(r.clone()).await.unwrap();
    }
    let pruned = store.prune(t, Some(t - hours(1)), None, 100).await.unwrap();
    assert_eq!(pruned, Pruned { inbound_requests: 2, ..Pruned::default() });
    let left = store.list_inbound_requests(&src.id, None, &PageRequest::default()).await.unwrap();
    assert_eq!(left.items, vec![to_do.clone()]);
    store.finish_fan_out(&src.id, &to_do.id).await.unwrap();
    let pruned = store.prune(t, Some(t - hours(1)), None, 100).await.unwrap();
    assert_eq!(pruned, Pruned { inbound_requests: 1, ..Pruned::default() });
}

/// Deleting a message's content empties the records of the requests an inbound source took
/// it from (body and headers: that content as the provider sent it, a duplicate's too);
/// other records are left as they are.
pub async fn deleting_a_message_content_empties_its_inbound_records(store: &DynStore) {
    let (src, app) = new_source("expunged");
    store.create_source(src.clone(), app.clone(), Vec::new()).await.unwrap();
    let t = now_ms();
    let msg = post(store, &app.id, &[], t).await;
    let mut first = new_request(&src.id, InboundStatus::Accepted, t);
    first.msg_id = Some(msg.id.clone());
    let mut retry = new_request(&src.id, InboundStatus::Duplicate, t + secs(1));
    retry.msg_id = Some(msg.id.clone());
    let other = new_request(&src.id, InboundStatus::Accepted, t + secs(2));
    for r in [&first, &retry, &other] {
        store.record_inbound_request(r.clone()).await.unwrap();
    }
    store.expunge_message_content(&app.id, &msg.id, t + secs(3)).await.unwrap();
    for r in [&first, &retry] {
        let got = store.get_inbound_request(&src.id, &r.id).await.unwrap().expect("kept");
        assert!(got.body.is_empty() && got.headers.is_empty(), "{got:?}");
        assert_eq!((got.status, got.msg_id.as_deref(), got.body_size), (r.status, Some(msg.id.as_str()), r.body_size));
    }
    assert_eq!(store.get_inbound_request(&src.id, &other.id).await.unwrap(), Some(other));
}

/// Housekeeping keeps an old message whose inbound request's fan-out is still to be done
/// (the sweep reads it to complete the fan-out), as long as a fan-out is kept; finished, or
/// given up (received more than a day ago), it goes as any other.
pub async fn a_message_with_an_unfinished_fan_out_is_kept(store: &DynStore) {
    let (src, app) = new_source("kept");
    store.create_source(src.clone(), app.clone(), Vec::new()).await.unwrap();
    let t = now_ms();
    let unfinished = |at: DateTime<Utc>, msg: &Message| {
        let mut r = new_request(&src.id, InboundStatus::Accepted, at);
        r.reason = Some("fan-out failed: store".into());
        r.msg_id = Some(msg.id.clone());
        r
    };
    let kept = post(store, &app.id, &[], t - hours(3)).await;
    let request = unfinished(t - hours(3), &kept);
    store.record_inbound_request(request.clone()).await.unwrap();
    let given_up = post(store, &app.id, &[], t - hours(50)).await;
    store.record_inbound_request(unfinished(t - hours(50), &given_up)).await.unwrap();
    let old = || Some(PruneMessages { before: t - hours(1), after: String::new() });

    assert_eq!(store.prune(t, None, old(), 100).await.unwrap().messages, 1, "the given-up one only");
    assert!(store.get_message(&app.id, &given_up.id).await.unwrap().is_none());
    assert!(store.get_message(&app.id, &kept.id).await.unwrap().is_some(), "its fan-out still reads it");
    store.finish_fan_out(&src.id, &request.id).await.unwrap();
    assert_eq!(store.prune(t, None, old(), 100).await.unwrap().messages, 1);
    assert!(store.get_message(&app.id, &kept.id).await.unwrap().is_none(), "finished, it goes");
}
