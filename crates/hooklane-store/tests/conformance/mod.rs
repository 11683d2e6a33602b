//! Store conformance suite: behaviour every [`Store`] backend must show, written only
//! against the trait so each backend runs the very same cases.
//!
//! A backend's test file declares this module as `conformance` and hands the macro an
//! async factory returning a fresh, empty store plus whatever must stay alive while it is
//! used (a temporary directory, a throw-away database…):
//!
//! ```ignore
//! #[macro_use]
//! mod conformance;
//!
//! async fn fresh_store() -> (hooklane_store::DynStore, tempfile::TempDir) { … }
//!
//! store_conformance_tests!(fresh_store);
//! ```
//!
//! Every case gets a store of its own, so cases may make assertions about global state
//! (every app, every due delivery) without seeing each other's records.
//!
//! Times are whole milliseconds (the coarsest precision a backend may keep) so records
//! compare equal after a round trip.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::time::Duration;

use hooklane_core::ids::{self, new_id};
use hooklane_core::model::{
    Application, Attempt, Capability, Delivery, DeliveryStatus, Endpoint, EventType, ExpiringSecret, Message,
    Principal, Transformation, TriggerType,
};
use hooklane_core::{DateTime, Utc};
use hooklane_store::{
    AppListFilter, AttemptFilter, AttemptOutcome, ClaimedKey, DeliveryKey, DynStore, EventPosition, EventsQuery,
    IdempotencyState, Job, MessageFilter, NextStep, Page, PageRequest, PruneMessages, Pruned, RateSlot, StoreError,
    StoreResult, StoredResponse,
};
use hooklane_store::{ClaimRoom, MessageState, ReadFrom, LATENCY_BOUNDS_MS};

/// Generates one `#[tokio::test]` per conformance case, each on a fresh store made by
/// `$factory().await`, which returns `(DynStore, guard)`; the guard is kept alive for the
/// duration of the case. The module holding the cases must be in scope as `conformance`.
macro_rules! store_conformance_tests {
    ($factory:path) => {
        store_conformance_tests!(@cases $factory;
            app_create_and_get_by_id_and_uid,
            app_duplicate_uid_or_id_conflicts,
            app_list_pagination,
            app_update,
            app_delete_cascades,
            event_type_crud,
            event_type_import_writes_all_at_once,
            an_import_keeping_flags_leaves_them_as_they_stand,
            event_type_list_archived_and_pagination,
            endpoint_crud_and_pagination,
            endpoint_tenant_isolation,
            endpoint_uid_unique_per_app,
            endpoint_delete_cascades,
            message_create_and_get,
            a_claim_shares_one_copy_of_a_message,
            message_duplicate_event_id_conflicts_atomically,
            list_messages_filters,
            message_events_follow_write_order,
            endpoint_messages_and_stats,
            pages_go_backwards_from_an_iterator,
            replay_missing_building_blocks,
            attempt_content_can_be_expunged,
            message_content_can_be_expunged,
            message_events_subscriptions,
            events_subscriptions_are_not_made_again_once_deleted,
            message_events_pages_are_bounded_by_bytes,
            list_messages_pagination,
            claim_due_leases_deliveries,
            claim_due_respects_initial_lease,
            scheduled_message_is_due_at_its_time,
            scheduled_message_joins_no_lane,
            a_scheduled_message_replayed_or_recovered_waits_for_its_time,
            record_attempts_moves_deliveries,
            next_due_at_reports_earliest,
            endpoint_failing_since_and_disable,
            a_batch_ending_in_a_success_disables_nothing,
            an_endpoint_is_disabled_when_its_receiver_asks,
            untried_failures_leave_failure_streaks,
            a_quiet_endpoint_starts_its_failure_streak_afresh,
            cancelled_attempts_end_deliveries_and_leave_streaks,
            list_apps_leaves_out_apps_by_their_endpoints,
            abandon_deliveries_marks_failed,
            defer_deliveries_hands_back,
            hasten_deliveries_makes_paused_ones_due,
            undefer_deliveries_takes_back_only_what_was_handed_back,
            resend_requeues_and_is_scoped,
            resend_during_an_attempt_survives_its_outcome,
            recover_requeues_failed_in_window,
            release_all_leases_frees_leased_only,
            an_outcome_under_a_lost_lease_is_set_aside,
            a_hand_back_under_a_lost_lease_changes_nothing,
            attempts_list_filters_and_get,
            tokens_map_to_principals,
            idempotency_lifecycle,
            idempotency_unfinished_holds_are_kept_a_day,
            rate_slots_are_spaced_after_a_burst,
            rate_buckets_go_with_their_endpoint,
            a_reported_failure_is_noted_until_taken,
            claim_due_skips_saturated_endpoints,
            claim_due_skips_a_backlog_and_shares_fairly,
            next_due_at_ignores_skipped_endpoints,
            one_batch_records_in_order,
            concurrent_create_message_all_durable,
            concurrent_duplicate_event_id_single_winner,
            // --- FIFO lanes
            fifo_lane_sends_one_at_a_time_in_order,
            fifo_lane_replays_keep_message_order_and_ordering_can_change,
            fifo_lanes_by_ordering_key_go_side_by_side,
            fifo_lane_head_held_back_is_not_due,
            fifo_deliveries_are_never_handed_over_leased,
            fifo_lane_parked_rows_are_counted,
            fifo_lane_resend_of_head_in_flight_is_not_sent_twice,
            fifo_concurrent_leased_posts_hand_over_their_own_concurrent_deliveries,
            fifo_scheduled_delivery_goes_beside_a_lane_head_in_flight,
            fifo_lanes_due_longest_are_claimed_first,
            // --- inbound sources
            source_lifecycle_and_hidden_application,
            source_create_is_atomic,
            source_update_saves_destinations_in_one_transaction,
            inbound_requests_record_list_get,
            unfinished_fan_outs_are_found_until_finished,
            the_accepted_request_of_a_message_is_found,
            a_message_with_an_unfinished_fan_out_is_kept,
            prune_deletes_expired_keys_and_old_requests,
            prune_keeps_unfinished_fan_outs_while_they_are_to_be_done,
            deleting_a_message_content_empties_its_inbound_records,
            prune_deletes_old_finished_messages,
            prune_goes_past_messages_that_wait,
            message_content_type_and_headers_round_trip,
            // --- background tasks
            background_tasks_record_get_list_isolate_and_prune,
            background_tasks_progress_and_stale_ones_fail,
            // --- integrations
            integrations_keep_one_key_each_within_their_application,
            // --- statistics
            stats_ping_and_queue,
            stats_count_every_failing_endpoint,
            stats_endpoint_health,
            stats_attempt_timeline,
            stats_message_destinations,
            stats_message_log_states,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $factory().await;
                conformance::$case(&store).await;
            }
        )*
    };
}

// --- inbound sources, FIFO lanes, background tasks and integrations: cases in their own files.
mod inbound;
mod integrations;
mod lanes;
mod tasks;
pub use inbound::*;
pub use integrations::*;
pub use lanes::*;
pub use tasks::*;

// ---------------------------------------------------------------------------------------
// helpers

/// The current time, truncated to whole milliseconds.
pub fn now_ms() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("time in range")
}

pub fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

pub fn mins(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

pub fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

pub fn millis(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

const LEASE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

pub fn new_app(name: &str, uid: Option<&str>) -> Application {
    Application { uid: uid.map(str::to_string), ..Application::new(name, now_ms()) }
}

pub fn new_event_type(name: &str) -> EventType {
    let t = now_ms();
    EventType {
        name: name.to_string(),
        description: format!("{name} happened"),
        archived: false,
        deprecated: false,
        feature_flags: Vec::new(),
        group_name: None,
        schemas: None,
        created_at: t,
        updated_at: t,
    }
}

pub fn new_endpoint(app_id: &str, uid: Option<&str>) -> Endpoint {
    let mut ep = Endpoint::new(app_id, "", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", now_ms());
    ep.url = format!("https://example.com/hooks/{}", ep.id);
    ep.uid = uid.map(str::to_string);
    ep
}

/// A message created at `created_at`, its id made then too, as the server makes them (ids
/// begin with their creation time, which retention goes by); ids of one time rise in the
/// order they are made.
pub fn new_message(app_id: &str, event_type: &str, created_at: DateTime<Utc>) -> Message {
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let at = u64::try_from(created_at.timestamp_millis()).unwrap_or(0);
    let id = format!("{}_{}", ids::MESSAGE, ulid::Ulid::from_parts(at, u128::from(n)));
    let payload = format!(r#"{{"type":"{event_type}","msg":"{id}"}}"#);
    Message { id, ..Message::new(app_id, event_type, payload, created_at) }
}

pub fn attempt(msg_id: &str, ep: &Endpoint, status: DeliveryStatus, at: DateTime<Utc>) -> Attempt {
    let ok = status == DeliveryStatus::Success;
    Attempt {
        id: new_id(ids::ATTEMPT),
        msg_id: msg_id.to_string(),
        endpoint_id: ep.id.clone(),
        app_id: ep.app_id.clone(),
        url: ep.url.clone(),
        status,
        response_status: if ok { 200 } else { 503 },
        response: if ok { "ok".into() } else { "unavailable".into() },
        duration_ms: 17,
        trigger: TriggerType::Scheduled,
        created_at: at,
        request_headers: Some(BTreeMap::from([
            ("content-type".to_string(), "application/json".to_string()),
            ("webhook-id".to_string(), msg_id.to_string()),
        ])),
    }
}

/// An attempt of `msg_id` to `ep` made at `at`, successful exactly when `next` is.
pub fn outcome(msg_id: &str, ep: &Endpoint, at: DateTime<Utc>, next: NextStep) -> AttemptOutcome {
    let status = if next == NextStep::Succeeded { DeliveryStatus::Success } else { DeliveryStatus::Fail };
    AttemptOutcome {
        attempt: attempt(msg_id, ep, status, at),
        next,
        lease: None,
        disable_endpoint: false,
        untried: false,
    }
}

pub fn key(msg_id: &str, endpoint_id: &str) -> DeliveryKey {
    DeliveryKey { msg_id: msg_id.to_string(), endpoint_id: endpoint_id.to_string() }
}

/// A key handed back or abandoned with no lease to check.
pub fn unleased(msg_id: &str, endpoint_id: &str) -> ClaimedKey {
    ClaimedKey::unchecked(key(msg_id, endpoint_id))
}

pub fn job_keys(jobs: &[Job]) -> BTreeSet<(String, String)> {
    jobs.iter().map(|j| (j.delivery.msg_id.clone(), j.delivery.endpoint_id.clone())).collect()
}

pub fn pair(msg: &Message, ep: &Endpoint) -> (String, String) {
    (msg.id.clone(), ep.id.clone())
}

pub fn set<const N: usize>(pairs: [(String, String); N]) -> BTreeSet<(String, String)> {
    pairs.into_iter().collect()
}

pub fn page_req(limit: usize, iterator: Option<String>, descending: bool) -> PageRequest {
    PageRequest { limit, iterator, descending, backwards: false }
}

#[track_caller]
pub fn assert_conflict<T: std::fmt::Debug>(r: StoreResult<T>, what: &str) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected StoreError::Conflict, got {other:?}"),
    }
}

#[track_caller]
pub fn assert_not_found<T: std::fmt::Debug>(r: StoreResult<T>, what: &str) {
    match r {
        Err(StoreError::NotFound) => {}
        other => panic!("{what}: expected StoreError::NotFound, got {other:?}"),
    }
}

/// The deliveries of one message to several endpoints, claimed together, hold one copy of
/// it (a fan-out to many endpoints held as many copies of its payload in memory).
pub async fn a_claim_shares_one_copy_of_a_message(store: &DynStore) {
    let app = setup_app(store, "fan-out").await;
    let eps = [
        setup_endpoint(store, &app.id).await,
        setup_endpoint(store, &app.id).await,
        setup_endpoint(store, &app.id).await,
    ];
    let at = Utc::now() - chrono::Duration::seconds(5);
    let msg = post(store, &app.id, &eps.iter().collect::<Vec<_>>(), at).await;
    let jobs = claim(store, Utc::now()).await;
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.message.id == msg.id && std::sync::Arc::ptr_eq(&j.message, &jobs[0].message)));
}

pub async fn setup_app(store: &DynStore, name: &str) -> Application {
    let app = new_app(name, None);
    store.create_app(app.clone()).await.expect("create app");
    app
}

pub async fn setup_endpoint(store: &DynStore, app_id: &str) -> Endpoint {
    let ep = new_endpoint(app_id, None);
    store.create_endpoint(ep.clone()).await.expect("create endpoint");
    ep
}

/// Posts a message created at `at` to `eps` (not leased).
pub async fn post(store: &DynStore, app_id: &str, eps: &[&Endpoint], at: DateTime<Utc>) -> Message {
    let msg = new_message(app_id, "user.created", at);
    let ids = eps.iter().map(|e| e.id.clone()).collect();
    store.create_message(msg.clone(), ids, None).await.expect("create message");
    msg
}

pub async fn delivery(store: &DynStore, app_id: &str, msg_id: &str, endpoint_id: &str) -> Delivery {
    let all = store.message_deliveries(app_id, msg_id).await.expect("message_deliveries");
    all.into_iter()
        .map(|(d, _)| d)
        .find(|d| d.endpoint_id == endpoint_id)
        .unwrap_or_else(|| panic!("no delivery of {msg_id} to {endpoint_id}"))
}

pub async fn endpoint_now(store: &DynStore, ep: &Endpoint) -> Endpoint {
    store.get_endpoint(&ep.app_id, &ep.id).await.expect("get endpoint").expect("endpoint exists")
}

pub async fn claim(store: &DynStore, at: DateTime<Utc>) -> Vec<Job> {
    store.claim_due(at, 1000, LEASE, &ClaimRoom::default()).await.expect("claim_due")
}

/// Follows `iterator` from the first page to the last, checking that no page is larger than
/// `limit`, that only the last page says `done`, and that items never repeat.
pub async fn all_pages<T, K, F, Fut>(limit: usize, descending: bool, key: K, mut fetch: F) -> Vec<T>
where
    K: Fn(&T) -> String,
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = StoreResult<Page<T>>>,
{
    let mut out = Vec::new();
    let mut iterator = None;
    for _ in 0..10_000 {
        let page = fetch(page_req(limit, iterator.clone(), descending)).await.expect("list page");
        assert!(page.items.len() <= limit, "page of {} items for limit {limit}", page.items.len());
        if !page.done {
            assert_eq!(page.items.len(), limit, "a page that is not the last must be full");
        }
        iterator = page.items.last().map(&key);
        out.extend(page.items);
        if page.done {
            let keys: Vec<String> = out.iter().map(&key).collect();
            let unique: HashSet<&String> = keys.iter().collect();
            assert_eq!(unique.len(), keys.len(), "pagination repeated items: {keys:?}");
            return out;
        }
        assert!(iterator.is_some(), "empty page that is not done");
    }
    panic!("pagination never finished");
}

// ---------------------------------------------------------------------------------------
// applications

pub async fn app_create_and_get_by_id_and_uid(store: &DynStore) {
    let mut app = new_app("Acme", Some("acme"));
    app.rate_limit = Some(25);
    app.metadata.insert("plan".into(), "gold".into());
    store.create_app(app.clone()).await.unwrap();

    assert_eq!(store.get_app(&app.id).await.unwrap(), Some(app.clone()), "get by id");
    assert_eq!(store.get_app("acme").await.unwrap(), Some(app.clone()), "get by uid");
    assert_eq!(store.get_app("nope").await.unwrap(), None);
    assert_eq!(store.get_app(&new_id(ids::APP)).await.unwrap(), None);

    // Apps without uid do not collide with each other.
    let a = new_app("No uid 1", None);
    let b = new_app("No uid 2", None);
    store.create_app(a.clone()).await.unwrap();
    store.create_app(b.clone()).await.unwrap();
    assert_eq!(store.get_app(&a.id).await.unwrap(), Some(a));
    assert_eq!(store.get_app(&b.id).await.unwrap(), Some(b));
}

pub async fn app_duplicate_uid_or_id_conflicts(store: &DynStore) {
    let first = new_app("First", Some("same"));
    store.create_app(first.clone()).await.unwrap();

    let dup = new_app("Second", Some("same"));
    assert_conflict(store.create_app(dup.clone()).await, "duplicate app uid");
    assert_eq!(store.get_app(&dup.id).await.unwrap(), None, "the conflicting app must not exist");
    assert_eq!(store.get_app("same").await.unwrap(), Some(first.clone()));

    let mut same_id = new_app("Third", Some("other"));
    same_id.id = first.id.clone();
    assert_conflict(store.create_app(same_id).await, "duplicate app id");
    assert_eq!(store.get_app("other").await.unwrap(), None);

    // Taking another app's uid by update conflicts too and changes nothing.
    let mut second = new_app("Second", Some("second"));
    store.create_app(second.clone()).await.unwrap();
    let before = second.clone();
    second.uid = Some("same".into());
    second.name = "Renamed".into();
    assert_conflict(store.update_app(second).await, "update to a taken uid");
    assert_eq!(store.get_app(&before.id).await.unwrap(), Some(before));
    assert_eq!(store.get_app("same").await.unwrap(), Some(first));
}

pub async fn app_list_pagination(store: &DynStore) {
    let empty = store.list_apps(&PageRequest::default()).await.unwrap();
    assert!(empty.items.is_empty() && empty.done, "a new store has no apps");

    let mut apps = Vec::new();
    for i in 0..7 {
        let app = new_app(&format!("app {i}"), Some(&format!("uid-{i}")));
        store.create_app(app.clone()).await.unwrap();
        apps.push(app);
    }
    let asc_ids: Vec<String> = apps.iter().map(|a| a.id.clone()).collect();
    let desc_ids: Vec<String> = asc_ids.iter().rev().cloned().collect();

    // Explicit pages: 3 + 3 + 1.
    let p1 = store.list_apps(&page_req(3, None, false)).await.unwrap();
    assert_eq!(p1.items.iter().map(|a| a.id.clone()).collect::<Vec<_>>(), asc_ids[0..3]);
    assert!(!p1.done);
    let p2 = store.list_apps(&page_req(3, Some(asc_ids[2].clone()), false)).await.unwrap();
    assert_eq!(p2.items.iter().map(|a| a.id.clone()).collect::<Vec<_>>(), asc_ids[3..6]);
    assert!(!p2.done);
    let p3 = store.list_apps(&page_req(3, Some(asc_ids[5].clone()), false)).await.unwrap();
    assert_eq!(p3.items, vec![apps[6].clone()], "items come back whole");
    assert!(p3.done);

    // Exactly `limit` items left: done, and nothing beyond.
    let exact = store.list_apps(&page_req(7, None, false)).await.unwrap();
    assert_eq!(exact.items.len(), 7);
    assert!(exact.done, "a page holding the last item is done");
    let past_end = store.list_apps(&page_req(3, Some(asc_ids[6].clone()), false)).await.unwrap();
    assert!(past_end.items.is_empty() && past_end.done);

    // Descending: newest first, iterator moves towards older ones.
    let d1 = store.list_apps(&page_req(3, None, true)).await.unwrap();
    assert_eq!(d1.items.iter().map(|a| a.id.clone()).collect::<Vec<_>>(), desc_ids[0..3]);
    assert!(!d1.done);
    let d2 = store.list_apps(&page_req(3, Some(desc_ids[2].clone()), true)).await.unwrap();
    assert_eq!(d2.items.iter().map(|a| a.id.clone()).collect::<Vec<_>>(), desc_ids[3..6]);

    for (limit, descending, want) in [(2, false, &asc_ids), (2, true, &desc_ids), (50, false, &asc_ids)] {
        let got = all_pages(
            limit,
            descending,
            |a: &Application| a.id.clone(),
            |p| {
                let s = store.clone();
                async move { s.list_apps(&p).await }
            },
        )
        .await;
        assert_eq!(&got.iter().map(|a| a.id.clone()).collect::<Vec<_>>(), want, "limit {limit} desc {descending}");
    }
}

pub async fn app_update(store: &DynStore) {
    let mut app = new_app("Before", Some("before"));
    store.create_app(app.clone()).await.unwrap();

    app.name = "After".into();
    app.uid = Some("after".into());
    app.rate_limit = Some(5);
    app.metadata.insert("k".into(), "v".into());
    app.updated_at += secs(10);
    store.update_app(app.clone()).await.unwrap();

    assert_eq!(store.get_app(&app.id).await.unwrap(), Some(app.clone()));
    assert_eq!(store.get_app("after").await.unwrap(), Some(app.clone()));
    assert_eq!(store.get_app("before").await.unwrap(), None, "the old uid no longer resolves");

    // Dropping the uid.
    app.uid = None;
    store.update_app(app.clone()).await.unwrap();
    assert_eq!(store.get_app("after").await.unwrap(), None);
    assert_eq!(store.get_app(&app.id).await.unwrap(), Some(app));

    assert_not_found(store.update_app(new_app("Ghost", None)).await, "update of a missing app");
}

pub async fn app_delete_cascades(store: &DynStore) {
    let t = now_ms();
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let a1 = setup_endpoint(store, &a.id).await;
    let a2 = setup_endpoint(store, &a.id).await;
    let b1 = setup_endpoint(store, &b.id).await;
    let ma = post(store, &a.id, &[&a1, &a2], t).await;
    let ma2 = post(store, &a.id, &[&a1], t).await;
    let mb = post(store, &b.id, &[&b1], t).await;

    let jobs = claim(store, t + secs(1)).await;
    assert_eq!(jobs.len(), 4);
    let oa = outcome(&ma.id, &a1, t + secs(1), NextStep::Succeeded);
    let ob = outcome(&mb.id, &b1, t + secs(1), NextStep::Succeeded);
    let (atmpt_a, atmpt_b) = (oa.attempt.clone(), ob.attempt.clone());
    store.record_attempts(vec![oa, ob], HOUR).await.unwrap();
    store.create_token("hash-a".into(), Principal::app(a.id.clone()), t, None, None).await.unwrap();
    store.create_token("hash-b".into(), Principal::app(b.id.clone()), t, None, None).await.unwrap();

    store.delete_app(&a.id).await.unwrap();

    assert_eq!(store.get_app(&a.id).await.unwrap(), None);
    assert_eq!(store.get_endpoint(&a.id, &a1.id).await.unwrap(), None);
    assert_eq!(store.get_endpoint(&a.id, &a2.id).await.unwrap(), None);
    assert!(store.app_endpoints(&a.id).await.unwrap().is_empty());
    assert!(store.list_endpoints(&a.id, &PageRequest::default()).await.unwrap().items.is_empty());
    assert_eq!(store.get_message(&a.id, &ma.id).await.unwrap(), None);
    assert_eq!(store.get_message(&a.id, &ma2.id).await.unwrap(), None);
    assert!(store
        .list_messages(&a.id, &MessageFilter::default(), &PageRequest::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(store.message_deliveries(&a.id, &ma.id).await.unwrap().is_empty());
    assert!(store
        .list_attempts(&a.id, &AttemptFilter::default(), &PageRequest::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(store.get_attempt(&a.id, &ma.id, &atmpt_a.id).await.unwrap(), None);
    assert_eq!(store.find_token("hash-a", now_ms()).await.unwrap(), None, "the app's tokens go with it");

    // A's leftover pending (leased) deliveries are gone from the queue; B's only one succeeded.
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "the deleted app's deliveries are still queued");
    let later = claim(store, t + hours(1)).await;
    assert!(later.is_empty(), "deleted app's deliveries still claimable: {later:?}");

    // B is untouched.
    assert_eq!(store.get_app(&b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(store.get_endpoint(&b.id, &b1.id).await.unwrap(), Some(b1.clone()));
    assert_eq!(store.get_message(&b.id, &mb.id).await.unwrap(), Some(mb.clone()));
    assert_eq!(delivery(store, &b.id, &mb.id, &b1.id).await.status, DeliveryStatus::Success);
    assert_eq!(store.get_attempt(&b.id, &mb.id, &atmpt_b.id).await.unwrap(), Some(atmpt_b));
    assert_eq!(store.find_token("hash-b", now_ms()).await.unwrap(), Some(Principal::app(b.id.clone())));

    assert_not_found(store.delete_app(&a.id).await, "second delete");
}

// ---------------------------------------------------------------------------------------
// event types

pub async fn event_type_crud(store: &DynStore) {
    let mut et = new_event_type("invoice.paid");
    et.feature_flags = vec!["beta".into(), "internal".into()];
    et.group_name = Some("billing".into());
    et.schemas = Some(serde_json::json!({"1": {"type": "object", "properties": {"id": {"type": "string"}}}}));
    store.create_event_type(et.clone()).await.unwrap();
    assert_eq!(store.get_event_type("invoice.paid").await.unwrap(), Some(et.clone()));
    assert_eq!(store.get_event_type("invoice.unpaid").await.unwrap(), None);

    let mut dup = new_event_type("invoice.paid");
    dup.description = "other".into();
    assert_conflict(store.create_event_type(dup).await, "duplicate event type name");
    assert_eq!(store.get_event_type("invoice.paid").await.unwrap(), Some(et.clone()), "unchanged by the conflict");

    et.description = "An invoice was paid".into();
    et.archived = true;
    et.deprecated = true;
    et.feature_flags.clear();
    et.group_name = None;
    et.schemas = None;
    et.updated_at += secs(5);
    store.update_event_type(et.clone()).await.unwrap();
    assert_eq!(store.get_event_type("invoice.paid").await.unwrap(), Some(et.clone()));

    assert_not_found(store.update_event_type(new_event_type("nope")).await, "update of a missing event type");
    assert_eq!(store.get_event_type("nope").await.unwrap(), None, "update must not create");

    store.delete_event_type("invoice.paid").await.unwrap();
    assert_eq!(store.get_event_type("invoice.paid").await.unwrap(), None);
    assert_not_found(store.delete_event_type("invoice.paid").await, "second delete");
}

pub async fn event_type_import_writes_all_at_once(store: &DynStore) {
    let t = now_ms();
    let mut kept = new_event_type("kept");
    kept.created_at = t - hours(5);
    store.create_event_type(kept.clone()).await.unwrap();
    let gone = new_event_type("gone");
    store.create_event_type(gone.clone()).await.unwrap();

    // `kept` replaced (but for its creation time), `new` created, `gone` archived; a name
    // to archive that is not there stays missing.
    let mut replaced = new_event_type("kept");
    replaced.description = "replaced".into();
    replaced.created_at = t;
    replaced.updated_at = t + secs(1);
    let mut created = new_event_type("new");
    created.feature_flags = vec!["beta".into()];
    created.group_name = Some("new ones".into());
    let at = t + secs(2);
    let archive = vec!["gone".to_string(), "never.was".to_string()];
    store.import_event_types(vec![replaced.clone(), created.clone()], archive, at, false).await.unwrap();
    let got = store.get_event_type("kept").await.unwrap().expect("kept");
    assert_eq!((got.description.as_str(), got.created_at, got.updated_at), ("replaced", kept.created_at, t + secs(1)));
    assert_eq!(store.get_event_type("new").await.unwrap(), Some(created));
    let archived = store.get_event_type("gone").await.unwrap().expect("gone");
    assert_eq!((archived.archived, archived.updated_at), (true, at));
    assert_eq!(store.get_event_type("never.was").await.unwrap(), None);
}

/// An OpenAPI import (`keep_flags`) replaces what the document says of an event type and
/// keeps its feature flags and group as they stand when it writes: one set while the import
/// ran (after it read the event type) is not written back. A new one is created whole.
pub async fn an_import_keeping_flags_leaves_them_as_they_stand(store: &DynStore) {
    let t = now_ms();
    let mut flagged = new_event_type("flagged");
    store.create_event_type(flagged.clone()).await.unwrap();
    // What the import read and made of it, before the flags were set.
    let mut imported = flagged.clone();
    imported.description = "from the document".into();
    imported.updated_at = t + secs(2);
    flagged.feature_flags = vec!["beta".into()];
    flagged.group_name = Some("hidden ones".into());
    flagged.updated_at = t + secs(1);
    store.update_event_type(flagged.clone()).await.unwrap();
    let created = new_event_type("created");
    store.import_event_types(vec![imported, created.clone()], Vec::new(), t + secs(2), true).await.unwrap();
    let got = store.get_event_type("flagged").await.unwrap().expect("flagged");
    assert_eq!((got.description.as_str(), got.updated_at), ("from the document", t + secs(2)));
    assert_eq!((got.feature_flags, got.group_name), (vec!["beta".to_string()], Some("hidden ones".into())));
    assert_eq!(store.get_event_type("created").await.unwrap(), Some(created));
}

pub async fn event_type_list_archived_and_pagination(store: &DynStore) {
    let names = ["a.one", "b.two", "c.three", "d.four", "e.five"];
    for (i, name) in names.iter().enumerate() {
        let mut et = new_event_type(name);
        et.archived = i == 1 || i == 3;
        store.create_event_type(et).await.unwrap();
    }
    let names_of = |p: &Page<EventType>| p.items.iter().map(|e| e.name.clone()).collect::<Vec<_>>();

    let live = store.list_event_types(&page_req(50, None, false), false).await.unwrap();
    assert_eq!(names_of(&live), ["a.one", "c.three", "e.five"]);
    assert!(live.done);
    assert!(live.items.iter().all(|e| !e.archived));

    let all = store.list_event_types(&page_req(50, None, false), true).await.unwrap();
    assert_eq!(names_of(&all), names);
    assert!(all.done);

    let p1 = store.list_event_types(&page_req(2, None, false), true).await.unwrap();
    assert_eq!(names_of(&p1), ["a.one", "b.two"]);
    assert!(!p1.done);
    let p2 = store.list_event_types(&page_req(2, Some("b.two".into()), false), true).await.unwrap();
    assert_eq!(names_of(&p2), ["c.three", "d.four"]);
    assert!(!p2.done);
    let p3 = store.list_event_types(&page_req(2, Some("d.four".into()), false), true).await.unwrap();
    assert_eq!(names_of(&p3), ["e.five"]);
    assert!(p3.done);

    let live_p = store.list_event_types(&page_req(2, None, false), false).await.unwrap();
    assert_eq!(names_of(&live_p), ["a.one", "c.three"]);
    assert!(!live_p.done);

    let desc = store.list_event_types(&page_req(2, None, true), false).await.unwrap();
    assert_eq!(names_of(&desc), ["e.five", "c.three"]);
    assert!(!desc.done);
    let desc2 = store.list_event_types(&page_req(2, Some("c.three".into()), true), false).await.unwrap();
    assert_eq!(names_of(&desc2), ["a.one"]);
    assert!(desc2.done);

    // Archiving by update takes it out of the default listing; deleting takes it out of both.
    let mut e5 = store.get_event_type("e.five").await.unwrap().unwrap();
    e5.archived = true;
    store.update_event_type(e5).await.unwrap();
    store.delete_event_type("b.two").await.unwrap();
    let live = store.list_event_types(&page_req(50, None, false), false).await.unwrap();
    assert_eq!(names_of(&live), ["a.one", "c.three"]);
    let all = store.list_event_types(&page_req(50, None, false), true).await.unwrap();
    assert_eq!(names_of(&all), ["a.one", "c.three", "d.four", "e.five"]);
}

// ---------------------------------------------------------------------------------------
// endpoints

pub async fn endpoint_crud_and_pagination(store: &DynStore) {
    let app = setup_app(store, "A").await;
    let t = now_ms();
    let mut ep = new_endpoint(&app.id, Some("primary"));
    ep.description = "main receiver".into();
    ep.version = 3;
    ep.filter_types = Some(vec!["user.created".into(), "user.deleted".into()]);
    ep.channels = Some(vec!["eu".into()]);
    ep.rate_limit = Some(100);
    ep.metadata.insert("team".into(), "billing".into());
    ep.headers.insert("X-Custom".into(), "1".into());
    ep.previous_secrets =
        vec![ExpiringSecret { key: "whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xk".into(), expires_at: t + hours(1) }];
    ep.failing_since = Some(t - mins(5));
    ep.payload_filter = Some(serde_json::json!({"ref": "refs/heads/main", "n": {"$gt": 1.5}}));
    ep.transform = Some(serde_json::json!({"text": "{{ head_commit.message }}", "list": [1, null]}));
    ep.transformation = Some(Transformation {
        code: Some("function handler(webhook) { return webhook }".into()),
        enabled: true,
        variables: [("token".to_string(), "s3cret".to_string())].into(),
        updated_at: t,
    });
    ep.retry_schedule = Some(vec![std::time::Duration::from_millis(1500), std::time::Duration::from_secs(600)]);
    let oauth = hooklane_core::oauth::EndpointOauth {
        token_url: "https://auth.example.com/token".into(),
        client_id: "client".into(),
        client_secret: None,
        auth_method: hooklane_core::oauth::AuthMethod::ClientSecretJwt,
        grant_type: hooklane_core::oauth::GrantType::RefreshToken,
        scopes: Some(vec!["a".into(), "b".into()]),
        extra_params: Some([("audience".to_string(), "api".to_string())].into()),
        refresh_token: Some("r1".into()),
        jwt_params: Some(hooklane_core::oauth::JwtParams {
            secret_base64: "c2VjcmV0".into(),
            secret_id: Some("k1".into()),
            signing_algorithm: hooklane_core::oauth::JwtAlgorithm::HS512,
            token_expiry_secs: Some(60),
        }),
        endpoint_origin: "https://example.com".into(),
    };
    ep.oauth = Some(oauth.clone());
    ep.paused = true;
    ep.mtls = Some(hooklane_core::model::EndpointMtls {
        identity: "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n".into(),
        server_ca_cert: Some("-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into()),
        endpoint_origin: "https://example.com".into(),
    });
    ep.polling = true;
    store.create_endpoint(ep.clone()).await.unwrap();

    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "by id, all fields");
    assert_eq!(store.get_endpoint(&app.id, "primary").await.unwrap(), Some(ep.clone()), "by uid");
    assert_eq!(store.get_endpoint(&app.id, "secondary").await.unwrap(), None);

    ep.url = "https://example.org/new".into();
    ep.uid = Some("renamed".into());
    ep.disabled = true;
    ep.filter_types = None;
    ep.channels = None;
    ep.rate_limit = None;
    ep.headers.clear();
    ep.previous_secrets.clear();
    ep.secret = "whsec_bmV3bmV3bmV3bmV3bmV3bmV3bmV3bmV3".into();
    // (The failure streak is the engine's: an update leaves it but for a new url, which
    // ends it, as `endpoint_failing_since_and_disable` shows.)
    ep.failing_since = None;
    ep.payload_filter = None;
    ep.transform = Some(serde_json::json!("{{ $ }}"));
    ep.transformation =
        Some(Transformation { code: None, enabled: false, variables: Default::default(), updated_at: t });
    ep.retry_schedule = Some(Vec::new());
    ep.paused = false;
    ep.version = 4;
    ep.updated_at += secs(3);
    store.update_endpoint(Endpoint { polling: false, ..ep.clone() }, None).await.unwrap();
    assert_eq!(
        store.get_endpoint(&app.id, &ep.id).await.unwrap(),
        Some(ep.clone()),
        "polling is set once, never changed"
    );

    // A rotated refresh token replaces the settings only while they are the ones it came from.
    let rotated = hooklane_core::oauth::EndpointOauth { refresh_token: Some("r2".into()), ..oauth.clone() };
    assert!(store.replace_endpoint_oauth(&app.id, &ep.id, &oauth, &rotated).await.unwrap());
    assert!(!store.replace_endpoint_oauth(&app.id, &ep.id, &oauth, &rotated).await.unwrap(), "changed meanwhile");
    assert!(!store.replace_endpoint_oauth("app_other", &ep.id, &rotated, &oauth).await.unwrap(), "another tenant's");
    ep.oauth = Some(rotated.clone());
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "nothing else changed");
    // An update read before the rotation does not write the old settings back: they have
    // their own write.
    let mut stale = ep.clone();
    stale.oauth = Some(oauth.clone());
    stale.description = "changed".into();
    store.update_endpoint(stale, None).await.unwrap();
    ep.description = "changed".into();
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "rotated settings kept");
    ep.updated_at += secs(1);
    ep.oauth = None;
    store.set_endpoint_oauth(&app.id, &ep.id, None, ep.updated_at).await.unwrap();
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "removed, as of then");
    ep.oauth = Some(rotated);
    store.set_endpoint_oauth(&app.id, &ep.id, ep.oauth.as_ref(), ep.updated_at).await.unwrap();
    // A second write of the same time moves the version on all the same (never back, nor
    // left where a version read before it stands).
    ep.updated_at += millis(1);
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()));
    assert_not_found(
        store.set_endpoint_oauth("app_other", &ep.id, None, ep.updated_at).await,
        "another tenant's endpoint",
    );
    // mTLS settings have their own write too.
    let mtls = ep.mtls.take();
    ep.updated_at += secs(1);
    store.set_endpoint_mtls(&app.id, &ep.id, None, ep.updated_at).await.unwrap();
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "mTLS removed");
    let mut stale = ep.clone();
    stale.mtls = mtls.clone();
    store.update_endpoint(stale, None).await.unwrap();
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "not written back by an update");
    ep.mtls = mtls;
    store.set_endpoint_mtls(&app.id, &ep.id, ep.mtls.as_ref(), ep.updated_at).await.unwrap();
    ep.updated_at += millis(1);
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()));
    assert_not_found(store.set_endpoint_mtls("app_other", &ep.id, None, ep.updated_at).await, "another tenant's");
    // A move forgets the settings bound elsewhere, and keeps those bound where it went.
    store.forget_endpoint_credentials(&app.id, &ep.id, "https://example.com").await.unwrap();
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "both bound there: kept");
    store.forget_endpoint_credentials("app_other", &ep.id, "https://elsewhere.example").await.unwrap();
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "another tenant's call");
    store.forget_endpoint_credentials(&app.id, &ep.id, "https://elsewhere.example").await.unwrap();
    ep.oauth = None;
    ep.mtls = None;
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(ep.clone()), "both forgotten");
    assert_eq!(store.get_endpoint(&app.id, "renamed").await.unwrap(), Some(ep.clone()));
    assert_eq!(store.get_endpoint(&app.id, "primary").await.unwrap(), None);

    assert_not_found(store.update_endpoint(new_endpoint(&app.id, None), None).await, "update of a missing endpoint");
    // With the version it was read at: saved while it is still that one; once another write
    // came between (a rotated secret), refused and nothing written.
    let read = ep.clone();
    let mut rotated = read.clone();
    rotated.secret = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into();
    rotated.updated_at = read.updated_at + secs(1);
    store.update_endpoint(rotated.clone(), Some(read.updated_at)).await.unwrap();
    let mut stale = read.clone();
    stale.description = "from before the rotation".into();
    stale.updated_at = read.updated_at + secs(2);
    match store.update_endpoint(stale, Some(read.updated_at)).await {
        Err(StoreError::Changed) => {}
        other => panic!("a stale update: {other:?}"),
    }
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), Some(rotated.clone()), "the rotation kept");
    ep = rotated;

    let mut all = vec![ep.clone()];
    for _ in 0..4 {
        all.push(setup_endpoint(store, &app.id).await);
    }
    let ids: Vec<String> = all.iter().map(|e| e.id.clone()).collect();
    let listed = store.app_endpoints(&app.id).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id.clone()).collect::<BTreeSet<_>>(), ids.iter().cloned().collect());

    let p1 = store.list_endpoints(&app.id, &page_req(2, None, false)).await.unwrap();
    assert_eq!(p1.items, all[0..2].to_vec());
    assert!(!p1.done);
    let rev: Vec<String> = ids.iter().rev().cloned().collect();
    for (desc, want) in [(false, &ids), (true, &rev)] {
        let got = all_pages(
            2,
            desc,
            |e: &Endpoint| e.id.clone(),
            |p| {
                let (s, app_id) = (store.clone(), app.id.clone());
                async move { s.list_endpoints(&app_id, &p).await }
            },
        )
        .await;
        assert_eq!(&got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), want);
    }

    // Its consumers' positions (a polling endpoint's) go with it; others' stay, those of
    // endpoints whose ids its own begins or differs from in case alone among them (a
    // position is made only for an endpoint that exists).
    let at = hooklane_store::EventPosition { major: 0, minor: 0 };
    for id in [format!("{}x", ep.id), ep.id.to_uppercase()] {
        store.create_endpoint(Endpoint { id, ..new_endpoint(&app.id, None) }).await.unwrap();
    }
    let kept = [format!("{}x/c", ep.id), format!("{}/c", ep.id.to_uppercase()), "sub".to_string()];
    for id in kept.iter().chain([&format!("{}/c", ep.id), &format!("{}/d", ep.id)]) {
        assert!(store.add_events_subscription(&app.id, id, at, ("", u64::MAX), now_ms()).await.unwrap(), "{id}");
    }
    // Counted by the prefix of their names, in this application only.
    let prefix = format!("{}/", ep.id);
    assert_eq!(store.count_events_subscriptions(&app.id, &prefix).await.unwrap(), 2);
    // Created within a bound on that count: concurrent creations of twelve new names under a
    // bound of five make three more (two there), and one already there is there.
    let added = futures::future::join_all((0..12).map(|i| {
        let (store, app_id, prefix) = (store.clone(), app.id.clone(), prefix.clone());
        let id = format!("{prefix}n{i}");
        async move { store.add_events_subscription(&app_id, &id, at, (&prefix, 5), now_ms()).await.unwrap() }
    }))
    .await;
    assert_eq!(added.iter().filter(|a| **a).count(), 3, "{added:?}");
    assert_eq!(store.count_events_subscriptions(&app.id, &prefix).await.unwrap(), 5);
    let there = format!("{}/c", ep.id);
    assert!(store.add_events_subscription(&app.id, &there, at, (&prefix, 5), now_ms()).await.unwrap());
    assert!(!store
        .add_events_subscription(&app.id, &format!("{prefix}late"), at, (&prefix, 5), now_ms())
        .await
        .unwrap());
    assert_eq!(store.count_events_subscriptions(&app.id, "").await.unwrap(), 8);
    assert_eq!(store.count_events_subscriptions(&app.id, "%").await.unwrap(), 0, "no pattern");
    assert_eq!(store.count_events_subscriptions("app_other", &prefix).await.unwrap(), 0);
    store.delete_endpoint(&app.id, &ep.id).await.unwrap();
    assert_eq!(store.count_events_subscriptions(&app.id, &prefix).await.unwrap(), 0);
    assert_eq!(store.get_events_subscription(&app.id, &format!("{}/c", ep.id)).await.unwrap(), None);
    assert_eq!(store.get_events_subscription(&app.id, &format!("{}/d", ep.id)).await.unwrap(), None);
    for id in &kept {
        assert_eq!(store.get_events_subscription(&app.id, id).await.unwrap(), Some(at), "{id}");
    }
    assert_eq!(store.get_endpoint(&app.id, &ep.id).await.unwrap(), None);
    assert_eq!(store.get_endpoint(&app.id, "renamed").await.unwrap(), None);
    assert_eq!(store.app_endpoints(&app.id).await.unwrap().len(), 6);
    assert_not_found(store.delete_endpoint(&app.id, &ep.id).await, "second delete");
}

pub async fn endpoint_tenant_isolation(store: &DynStore) {
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let ep = new_endpoint(&a.id, Some("hook"));
    store.create_endpoint(ep.clone()).await.unwrap();

    assert_eq!(store.get_endpoint(&b.id, &ep.id).await.unwrap(), None, "another app's endpoint by id");
    assert_eq!(store.get_endpoint(&b.id, "hook").await.unwrap(), None, "another app's endpoint by uid");
    assert!(store.app_endpoints(&b.id).await.unwrap().is_empty());
    assert!(store.list_endpoints(&b.id, &PageRequest::default()).await.unwrap().items.is_empty());

    let mut hijack = ep.clone();
    hijack.app_id = b.id.clone();
    hijack.url = "https://attacker.example/".into();
    assert_not_found(store.update_endpoint(hijack, None).await, "update through another app");
    assert_not_found(store.delete_endpoint(&b.id, &ep.id).await, "delete through another app");
    assert_eq!(store.get_endpoint(&a.id, &ep.id).await.unwrap(), Some(ep.clone()), "untouched");
    assert!(store.get_endpoint(&b.id, &ep.id).await.unwrap().is_none(), "not moved to B");
}

pub async fn endpoint_uid_unique_per_app(store: &DynStore) {
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let first = new_endpoint(&a.id, Some("hook"));
    store.create_endpoint(first.clone()).await.unwrap();

    let dup = new_endpoint(&a.id, Some("hook"));
    assert_conflict(store.create_endpoint(dup.clone()).await, "duplicate endpoint uid in one app");
    assert_eq!(store.get_endpoint(&a.id, &dup.id).await.unwrap(), None);

    let in_b = new_endpoint(&b.id, Some("hook"));
    store.create_endpoint(in_b.clone()).await.expect("the same uid in another app is fine");
    assert_eq!(store.get_endpoint(&a.id, "hook").await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_endpoint(&b.id, "hook").await.unwrap(), Some(in_b));

    // Endpoints without uid never collide.
    setup_endpoint(store, &a.id).await;
    setup_endpoint(store, &a.id).await;
    assert_eq!(store.app_endpoints(&a.id).await.unwrap().len(), 3);

    // Renaming onto a taken uid conflicts.
    let mut other = new_endpoint(&a.id, Some("other"));
    store.create_endpoint(other.clone()).await.unwrap();
    other.uid = Some("hook".into());
    assert_conflict(store.update_endpoint(other, None).await, "update to a taken endpoint uid");
    assert_eq!(store.get_endpoint(&a.id, "hook").await.unwrap(), Some(first));
}

pub async fn endpoint_delete_cascades(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let gone = setup_endpoint(store, &app.id).await;
    let kept = setup_endpoint(store, &app.id).await;
    let msg = post(store, &app.id, &[&gone, &kept], t).await;
    let msg2 = post(store, &app.id, &[&gone], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 3);
    let o1 = outcome(&msg.id, &gone, t + secs(1), NextStep::RetryAt(t + mins(5)));
    let o2 = outcome(&msg.id, &kept, t + secs(1), NextStep::Succeeded);
    let (a1, a2) = (o1.attempt.clone(), o2.attempt.clone());
    store.record_attempts(vec![o1, o2], HOUR).await.unwrap();

    store.delete_endpoint(&app.id, &gone.id).await.unwrap();

    let left = store.message_deliveries(&app.id, &msg.id).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, kept);
    assert!(store.message_deliveries(&app.id, &msg2.id).await.unwrap().is_empty());
    assert_eq!(store.get_message(&app.id, &msg.id).await.unwrap(), Some(msg.clone()), "messages stay");
    assert_eq!(store.get_attempt(&app.id, &msg.id, &a1.id).await.unwrap(), None);
    assert_eq!(store.get_attempt(&app.id, &msg.id, &a2.id).await.unwrap(), Some(a2));
    let by_ep = AttemptFilter { endpoint_id: Some(gone.id.clone()), ..Default::default() };
    assert!(store.list_attempts(&app.id, &by_ep, &PageRequest::default()).await.unwrap().items.is_empty());
    // msg2's request was on the wire when the endpoint was deleted: its outcome, recorded
    // after, leaves no attempt behind (nothing would delete it).
    let late = outcome(&msg2.id, &gone, t + secs(2), NextStep::Succeeded);
    let late_attempt = late.attempt.clone();
    let recorded = store.record_attempts(vec![late], HOUR).await.unwrap();
    // Its delivery is gone: set aside, nothing to tell of it (a success as a failure).
    assert_eq!(recorded.set_aside, vec![key(&msg2.id, &gone.id)]);
    assert_eq!(store.get_attempt(&app.id, &msg2.id, &late_attempt.id).await.unwrap(), None);
    assert!(store.list_attempts(&app.id, &by_ep, &PageRequest::default()).await.unwrap().items.is_empty());
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "the deleted endpoint's deliveries are still queued");
    assert!(claim(store, t + hours(1)).await.is_empty(), "the deleted endpoint's retries are gone");
}

// ---------------------------------------------------------------------------------------
// messages

pub async fn message_create_and_get(store: &DynStore) {
    let t = now_ms();
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let e1 = setup_endpoint(store, &a.id).await;
    let e2 = setup_endpoint(store, &a.id).await;
    let mut msg = new_message(&a.id, "user.created", t);
    msg.event_id = Some("evt-1".into());
    msg.channels = Some(vec!["eu".into(), "vip".into()]);
    msg.tags = Some(vec!["t1".into()]);
    msg.payload = r#"{"z":1,  "a":"ünïcödé"}"#.into();
    store.create_message(msg.clone(), vec![e1.id.clone(), e2.id.clone()], None).await.unwrap();

    assert_eq!(store.get_message(&a.id, &msg.id).await.unwrap(), Some(msg.clone()), "by id, payload byte for byte");
    assert_eq!(store.get_message(&a.id, "evt-1").await.unwrap(), Some(msg.clone()), "by eventId");
    assert_eq!(store.get_message(&a.id, "evt-2").await.unwrap(), None);
    assert_eq!(store.get_message(&b.id, &msg.id).await.unwrap(), None, "another app cannot read it by id");
    assert_eq!(store.get_message(&b.id, "evt-1").await.unwrap(), None, "nor by eventId");
    assert!(store.message_deliveries(&b.id, &msg.id).await.unwrap().is_empty());

    let deliveries = store.message_deliveries(&a.id, &msg.id).await.unwrap();
    assert_eq!(deliveries.len(), 2);
    let by_ep: BTreeMap<String, (Delivery, Endpoint)> =
        deliveries.into_iter().map(|(d, e)| (d.endpoint_id.clone(), (d, e))).collect();
    for ep in [&e1, &e2] {
        let (d, e) = &by_ep[&ep.id];
        assert_eq!(e, ep, "delivery comes with its endpoint");
        assert_eq!(d.msg_id, msg.id);
        assert_eq!(d.app_id, a.id);
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.trigger, TriggerType::Scheduled);
    }

    // A message with no endpoint at all is still stored.
    let lonely = post(store, &a.id, &[], t).await;
    assert_eq!(store.get_message(&a.id, &lonely.id).await.unwrap(), Some(lonely.clone()));
    assert!(store.message_deliveries(&a.id, &lonely.id).await.unwrap().is_empty());
}

pub async fn message_duplicate_event_id_conflicts_atomically(store: &DynStore) {
    let t = now_ms();
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let e1 = setup_endpoint(store, &a.id).await;
    let e2 = setup_endpoint(store, &a.id).await;
    let eb = setup_endpoint(store, &b.id).await;

    let mut first = new_message(&a.id, "user.created", t);
    first.event_id = Some("order-42".into());
    store.create_message(first.clone(), vec![e1.id.clone()], None).await.unwrap();

    let mut second = new_message(&a.id, "user.created", t);
    second.event_id = Some("order-42".into());
    assert_conflict(
        store.create_message(second.clone(), vec![e1.id.clone(), e2.id.clone()], None).await,
        "duplicate eventId in one app",
    );
    assert_eq!(store.get_message(&a.id, &second.id).await.unwrap(), None, "the rejected message does not exist");
    assert!(store.message_deliveries(&a.id, &second.id).await.unwrap().is_empty(), "nor do its deliveries");
    assert_eq!(store.get_message(&a.id, "order-42").await.unwrap(), Some(first.clone()));
    let queued = claim(store, t + secs(1)).await;
    assert_eq!(job_keys(&queued), set([pair(&first, &e1)]), "only the first message's delivery is queued");

    let mut in_b = new_message(&b.id, "user.created", t);
    in_b.event_id = Some("order-42".into());
    store.create_message(in_b.clone(), vec![eb.id.clone()], None).await.expect("same eventId in another app");
    assert_eq!(store.get_message(&b.id, "order-42").await.unwrap(), Some(in_b));
    assert_eq!(store.get_message(&a.id, "order-42").await.unwrap(), Some(first));

    // Messages without eventId never collide.
    post(store, &a.id, &[&e1], t).await;
    post(store, &a.id, &[&e1], t).await;
    let all = store.list_messages(&a.id, &MessageFilter::default(), &PageRequest::default()).await.unwrap();
    assert_eq!(all.items.len(), 3);
}

/// A message's content can be deleted: its payload is `{}`, its pending deliveries fail,
/// and neither a resend, a recovery nor a replay sends it again.
pub async fn message_content_can_be_expunged(store: &DynStore) {
    let t = now_ms() - mins(5);
    let a = setup_app(store, "A").await;
    let (e1, e2) = (setup_endpoint(store, &a.id).await, setup_endpoint(store, &a.id).await);
    let m = post(store, &a.id, &[&e1], t).await;
    let kept = post(store, &a.id, &[&e1], t).await;
    let b = setup_app(store, "B").await;
    assert!(matches!(store.expunge_message_content(&b.id, &m.id, now_ms()).await, Err(StoreError::NotFound)));
    store.expunge_message_content(&a.id, &m.id, now_ms()).await.unwrap();
    let got = store.get_message(&a.id, &m.id).await.unwrap().unwrap();
    assert_eq!((got.payload.as_str(), &got.event_type), ("{}", &m.event_type));
    assert_eq!(delivery(store, &a.id, &m.id, &e1.id).await.status, DeliveryStatus::Fail);
    assert_eq!(delivery(store, &a.id, &kept.id, &e1.id).await.status, DeliveryStatus::Pending, "only that message");
    assert_conflict(store.resend(&a.id, &m.id, &e1.id, now_ms()).await, "resend of deleted content");
    assert_eq!(store.recover(&a.id, &e1.id, (t - mins(1), None), now_ms(), ("", 1000)).await.unwrap().0, 0);
    assert_eq!(delivery(store, &a.id, &m.id, &e1.id).await.status, DeliveryStatus::Fail);
    let missing = store.messages_without_delivery(&a.id, &e2.id, t - mins(1), now_ms(), None, 10, true).await.unwrap();
    assert_eq!(missing.into_iter().map(|m| m.id).collect::<Vec<_>>(), vec![kept.id.clone()], "not replayed");
    assert_eq!(store.add_deliveries(&a.id, &e2.id, vec![m.id.clone()], now_ms()).await.unwrap(), 0);

    // A delivery under way when the content goes stays failed even if its attempt asks for
    // a retry.
    let in_flight = new_message(&a.id, "user.created", t);
    store.create_message(in_flight.clone(), vec![e1.id.clone()], Some(now_ms() + mins(1))).await.unwrap();
    store.expunge_message_content(&a.id, &in_flight.id, now_ms()).await.unwrap();
    let retry = outcome(&in_flight.id, &e1, now_ms(), NextStep::RetryAt(now_ms() + mins(1)));
    store.record_attempts(vec![retry], Duration::from_secs(3600)).await.unwrap();
    let d = delivery(store, &a.id, &in_flight.id, &e1.id).await;
    assert_eq!((d.status, d.next_attempt_at), (DeliveryStatus::Fail, None));
    // Other retries still schedule as ever.
    let retry = outcome(&kept.id, &e1, now_ms(), NextStep::RetryAt(now_ms() + mins(1)));
    store.record_attempts(vec![retry], Duration::from_secs(3600)).await.unwrap();
    assert_eq!(delivery(store, &a.id, &kept.id, &e1.id).await.status, DeliveryStatus::Pending);
}

/// An attempt's response body can be deleted; the rest of the attempt stays; another
/// application's attempt cannot be reached.
pub async fn attempt_content_can_be_expunged(store: &DynStore) {
    let t = now_ms();
    let a = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &a.id).await;
    let m = post(store, &a.id, &[&ep], t).await;
    let o = outcome(&m.id, &ep, t, NextStep::Succeeded);
    let id = o.attempt.id.clone();
    store.record_attempts(vec![o], Duration::from_secs(3600)).await.unwrap();
    let b = setup_app(store, "B").await;
    assert!(matches!(store.expunge_attempt_content(&b.id, &m.id, &id).await, Err(StoreError::NotFound)));
    assert_eq!(store.get_attempt(&a.id, &m.id, &id).await.unwrap().unwrap().response, "ok");
    store.expunge_attempt_content(&a.id, &m.id, &id).await.unwrap();
    let after = store.get_attempt(&a.id, &m.id, &id).await.unwrap().unwrap();
    assert_eq!((after.response.as_str(), after.response_status, after.status), ("", 200, DeliveryStatus::Success));
    assert!(matches!(store.expunge_attempt_content(&a.id, &m.id, "atmpt_nope").await, Err(StoreError::NotFound)));
}

/// What a replay of an endpoint's missed messages uses: the messages without a delivery
/// to it, and queuing deliveries for some of them.
pub async fn replay_missing_building_blocks(store: &DynStore) {
    let t = now_ms() - hours(1);
    let a = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &a.id).await;
    let m1 = post(store, &a.id, &[], t).await;
    let m2 = post(store, &a.id, &[&e1], t + mins(1)).await;
    let m3 = post(store, &a.id, &[], t + mins(2)).await;
    post(store, &a.id, &[], t + mins(10)).await;
    let b = setup_app(store, "B").await;
    let eb = setup_endpoint(store, &b.id).await;
    let mb = post(store, &b.id, &[], t).await;

    let missing = |after: Option<String>, limit: usize| {
        let (store, app, ep) = (store.clone(), a.id.clone(), e1.id.clone());
        async move {
            let found = store
                .messages_without_delivery(&app, &ep, t - mins(1), t + mins(5), after.as_deref(), limit, true)
                .await;
            found.unwrap().into_iter().map(|m| m.id).collect::<Vec<_>>()
        }
    };
    // Payloads read only when asked for; everything else as it is.
    let (window, page) = ((t - mins(1), t + mins(5)), (None, 10));
    let with = store.messages_without_delivery(&a.id, &e1.id, window.0, window.1, page.0, page.1, true).await.unwrap();
    let without =
        store.messages_without_delivery(&a.id, &e1.id, window.0, window.1, page.0, page.1, false).await.unwrap();
    assert_eq!(with.iter().map(|m| m.payload.as_str()).collect::<Vec<_>>(), [m1.payload.as_str(), m3.payload.as_str()]);
    assert!(without.iter().all(|m| m.payload.is_empty()), "{without:?}");
    let blanked: Vec<Message> = with.iter().map(|m| Message { payload: String::new(), ..m.clone() }).collect();
    assert_eq!(without, blanked);
    assert_eq!(missing(None, 10).await, vec![m1.id.clone(), m3.id.clone()], "m2 has one; the last is too late");
    assert_eq!(missing(None, 1).await, vec![m1.id.clone()]);
    assert_eq!(missing(Some(m1.id.clone()), 10).await, vec![m3.id.clone()]);

    let ids = vec![m1.id.clone(), m2.id.clone(), m3.id.clone(), mb.id.clone()];
    let now = now_ms();
    assert_eq!(store.add_deliveries(&a.id, &e1.id, ids, now).await.unwrap(), 2, "m2 had one; mb is not A's");
    assert!(missing(None, 10).await.is_empty());
    let d = delivery(store, &a.id, &m1.id, &e1.id).await;
    assert_eq!((d.status, d.trigger, d.attempts), (DeliveryStatus::Pending, TriggerType::Manual, 0));
    assert_eq!(d.next_attempt_at, Some(now));
    // Not through another application's endpoint, nor onto it.
    assert_eq!(store.add_deliveries(&b.id, &e1.id, vec![mb.id.clone()], now).await.unwrap(), 0);
    assert_eq!(store.add_deliveries(&a.id, &eb.id, vec![m1.id.clone()], now).await.unwrap(), 0);
    // Queued for the poller, due now (beside m2's own delivery, due since it was posted).
    let jobs = store.claim_due(now, 10, Duration::from_secs(30), &ClaimRoom::default()).await.unwrap();
    let queued = [&m1, &m2, &m3].map(|m| (m.id.clone(), e1.id.clone()));
    assert_eq!(job_keys(&jobs), queued.into());
}

/// A backwards page (Svix's `prevIterator`): the items nearest the iterator on the other
/// side, in the page's own order; `done` once nothing lies before them. Either order.
pub async fn pages_go_backwards_from_an_iterator(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(post(store, &app.id, &[], t + secs(i)).await.id);
    }
    let list = |iterator: Option<&String>, descending: bool, backwards: bool| {
        let page = PageRequest { limit: 2, iterator: iterator.cloned(), descending, backwards };
        let (store, app) = (store.clone(), app.id.clone());
        async move {
            let page = store.list_messages(&app, &MessageFilter::default(), &page).await.unwrap();
            (page.items.into_iter().map(|m| m.id).collect::<Vec<_>>(), page.done)
        }
    };
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| ids[i].clone());
    // Newest first: e d | c b | a. Back from c: e d, with nothing before them.
    assert_eq!(list(Some(&d), true, false).await, (vec![c.clone(), b.clone()], false));
    assert_eq!(list(Some(&c), true, true).await, (vec![e.clone(), d.clone()], true));
    assert_eq!(list(Some(&b), true, true).await, (vec![d.clone(), c.clone()], false));
    assert_eq!(list(Some(&e), true, true).await, (vec![], true));
    // Oldest first: a b | c d | e. Back from e: c d, then a b.
    assert_eq!(list(Some(&e), false, true).await, (vec![c.clone(), d.clone()], false));
    assert_eq!(list(Some(&c), false, true).await, (vec![a.clone(), b.clone()], true));
    assert_eq!(list(Some(&a), false, true).await, (vec![], true));
}

/// An endpoint's messages (each with its delivery) and its delivery counts.
pub async fn endpoint_messages_and_stats(store: &DynStore) {
    let t = now_ms() - hours(1);
    let a = setup_app(store, "A").await;
    let (e1, e2) = (setup_endpoint(store, &a.id).await, setup_endpoint(store, &a.id).await);
    let m1 = post(store, &a.id, &[&e1, &e2], t).await;
    let mut m2 = new_message(&a.id, "invoice.paid", t + mins(1));
    m2.channels = Some(vec!["billing".into()]);
    store.create_message(m2.clone(), vec![e1.id.clone()], None).await.unwrap();
    let m3 = post(store, &a.id, &[&e2], t + mins(2)).await;
    // Leased at ingest: being sent.
    let m4 = new_message(&a.id, "user.created", t + mins(3));
    store.create_message(m4.clone(), vec![e1.id.clone()], Some(now_ms() + mins(1))).await.unwrap();
    store.abandon_deliveries(vec![unleased(&m2.id, &e1.id)]).await.unwrap();
    let b = setup_app(store, "B").await;
    let eb = setup_endpoint(store, &b.id).await;
    post(store, &b.id, &[&eb], t).await;

    let list = |ep: &Endpoint, filter: MessageFilter, status: Option<DeliveryStatus>| {
        let (store, app, ep) = (store.clone(), a.id.clone(), ep.id.clone());
        async move {
            let page = store.endpoint_messages(&app, &ep, &filter, status, &page_req(50, None, true)).await.unwrap();
            assert!(page.done);
            assert!(page.items.iter().all(|(m, d)| d.msg_id == m.id && d.endpoint_id == ep));
            page.items.into_iter().map(|(m, d)| (m.id, d.status)).collect::<Vec<_>>()
        }
    };
    use DeliveryStatus::*;
    // m4's delivery is leased: being sent.
    assert_eq!(
        list(&e1, MessageFilter::default(), None).await,
        vec![(m4.id.clone(), Sending), (m2.id.clone(), Fail), (m1.id.clone(), Pending)]
    );
    assert_eq!(list(&e1, MessageFilter::default(), Some(Sending)).await, vec![(m4.id.clone(), Sending)]);
    // The message's destinations see it so too.
    let destinations = store.message_deliveries(&a.id, &m4.id).await.unwrap();
    assert_eq!(
        destinations.iter().map(|(d, e)| (d.status, e.id.clone())).collect::<Vec<_>>(),
        [(Sending, e1.id.clone())]
    );
    assert_eq!(list(&e1, MessageFilter::default(), Some(Pending)).await, vec![(m1.id.clone(), Pending)]);
    assert!(list(&e1, MessageFilter::default(), Some(Success)).await.is_empty());
    assert_eq!(
        list(&e2, MessageFilter::default(), None).await,
        vec![(m3.id.clone(), Pending), (m1.id.clone(), Pending)]
    );
    assert_eq!(list(&e1, MessageFilter::default(), Some(Fail)).await, vec![(m2.id.clone(), Fail)]);
    let billing = MessageFilter { channel: Some("billing".into()), ..MessageFilter::default() };
    assert_eq!(list(&e1, billing, None).await, vec![(m2.id.clone(), Fail)]);
    // Paging, oldest first.
    let none = MessageFilter::default();
    let first = store.endpoint_messages(&a.id, &e1.id, &none, None, &page_req(2, None, false)).await.unwrap();
    assert_eq!(first.items.iter().map(|(m, _)| m.id.clone()).collect::<Vec<_>>(), vec![m1.id.clone(), m2.id.clone()]);
    assert!(!first.done);
    // Without payloads: the same messages and deliveries, the payloads left empty.
    let bare = MessageFilter { without_payload: true, ..MessageFilter::default() };
    let page = store.endpoint_messages(&a.id, &e1.id, &bare, None, &page_req(2, None, false)).await.unwrap();
    let with = first.items.iter().map(|(m, d)| (Message { payload: String::new(), ..m.clone() }, d.clone()));
    assert_eq!(page.items, with.collect::<Vec<_>>());
    assert!(first.items.iter().all(|(m, _)| !m.payload.is_empty()), "the payloads were read");
    let listed = store.list_messages(&a.id, &bare, &page_req(50, None, true)).await.unwrap();
    assert_eq!(listed.items.len(), 4);
    assert!(listed.items.iter().all(|m| m.payload.is_empty()), "{:?}", listed.items);
    // Another application's endpoint is not reachable through this one.
    let other = store.endpoint_messages(&a.id, &eb.id, &none, None, &page_req(50, None, true)).await.unwrap();
    assert!(other.items.is_empty());

    let stats = store.endpoint_stats(&a.id, &e1.id, None, None).await.unwrap();
    assert_eq!(stats, hooklane_store::EndpointStats { success: 0, pending: 1, sending: 1, fail: 1, canceled: 0 });
    let stats = store.endpoint_stats(&a.id, &e2.id, None, None).await.unwrap();
    assert_eq!(stats.pending, 2);
    let later = store.endpoint_stats(&a.id, &e1.id, Some(now_ms() + hours(1)), None).await.unwrap();
    assert_eq!(later, hooklane_store::EndpointStats::default(), "nothing changed after `since`");
    assert_eq!(store.endpoint_stats(&a.id, &eb.id, None, None).await.unwrap(), Default::default(), "per application");
}

/// The pull stream: write order (not id order), paging with `next`, filters, tenants, the
/// durable end as `next` once done, and the signal.
pub async fn message_events_follow_write_order(store: &DynStore) {
    let t = now_ms() - hours(1);
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let mk = |et: &str, ch: Option<&[&str]>, at| {
        let mut m = new_message(&a.id, et, at);
        m.channels = ch.map(|c| c.iter().map(|s| s.to_string()).collect());
        m
    };
    // Ids are made in time order; `written_first` gets the later id but is written first.
    let written_second = mk("user.created", Some(&["x"]), t);
    let written_first = mk("user.deleted", None, t + mins(1));
    assert!(written_second.id < written_first.id);
    let third = mk("user.created", Some(&["x", "y"]), t + mins(2));
    let mut signal = store.message_events_signal(&a.id);
    signal.borrow_and_update();
    for m in [&written_first, &written_second] {
        store.create_message(m.clone(), vec![], None).await.unwrap();
    }
    store.create_message(new_message(&b.id, "user.created", t), vec![], None).await.unwrap();
    store.create_message(third.clone(), vec![], None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), signal.changed())
        .await
        .expect("the signal changes when messages are written")
        .unwrap();

    let query = |after: EventPosition, limit: usize| EventsQuery::after(after, limit);
    let ids = |page: &hooklane_store::EventsPage| page.messages.iter().map(|(_, m)| m.id.clone()).collect::<Vec<_>>();

    // PostgreSQL shows a message once every older transaction of the cluster has finished
    // (another test's `CREATE DATABASE` holds that up for a moment): read until all are there.
    let mut all = store.read_message_events(&a.id, &query(EventPosition::START, 10)).await.unwrap();
    for _ in 0..250 {
        if all.messages.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        all = store.read_message_events(&a.id, &query(EventPosition::START, 10)).await.unwrap();
    }
    assert_eq!(ids(&all), vec![written_first.id.clone(), written_second.id.clone(), third.id.clone()]);
    assert!(all.done);
    let positions: Vec<EventPosition> = all.messages.iter().map(|(p, _)| *p).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions rise: {positions:?}");
    assert!(all.next >= positions[2]);
    assert_eq!(all.messages[2].1, third, "messages come back whole");

    // Paging: `next` is the last message read until the stream is done.
    let first_two = store.read_message_events(&a.id, &query(EventPosition::START, 2)).await.unwrap();
    assert_eq!(ids(&first_two), ids(&all)[..2].to_vec());
    assert!(!first_two.done);
    assert_eq!(first_two.next, positions[1]);
    let rest = store.read_message_events(&a.id, &query(first_two.next, 2)).await.unwrap();
    assert_eq!(ids(&rest), vec![third.id.clone()]);
    assert!(rest.done);
    // A position past every one the store handed out (from another database, or from this
    // one before a restore) is refused: reading from it would pass over messages.
    let ahead = EventPosition { major: rest.next.major + 1_000_000_000, minor: rest.next.minor + 1_000_000_000 };
    let refused = store.read_message_events(&a.id, &query(ahead, 2)).await;
    assert!(matches!(refused, Err(hooklane_store::StoreError::PositionAhead(p)) if p == ahead), "{refused:?}");
    assert!(store.read_message_events(&a.id, &query(rest.next, 2)).await.is_ok(), "the end itself is a position");

    // Caught up: nothing more, and the position stays put.
    let empty = store.read_message_events(&a.id, &query(all.next, 10)).await.unwrap();
    assert!(empty.messages.is_empty() && empty.done);
    // (PostgreSQL's end of the stream moves on with the cluster's oldest open transaction.)
    assert!(empty.next >= all.next);

    // Filters; a filtered read that is done still moves past what it skipped.
    let mut q = query(EventPosition::START, 10);
    q.event_types = Some(vec!["user.created".into()]);
    let created = store.read_message_events(&a.id, &q).await.unwrap();
    assert_eq!(ids(&created), vec![written_second.id.clone(), third.id.clone()]);
    let mut q = query(EventPosition::START, 10);
    q.channels = Some(vec!["y".into(), "z".into()]);
    let on_y = store.read_message_events(&a.id, &q).await.unwrap();
    assert_eq!(ids(&on_y), vec![third.id.clone()]);
    assert!(on_y.done && on_y.next >= positions[2]);
    let mut q = query(EventPosition::START, 10);
    q.since = Some(t + mins(1) - chrono::Duration::milliseconds(1));
    let recent = store.read_message_events(&a.id, &q).await.unwrap();
    assert_eq!(ids(&recent), vec![written_first.id.clone(), third.id.clone()]);
    // A time past every message: none, and the read is done past them all.
    q.since = Some(t + mins(10));
    let none = store.read_message_events(&a.id, &q).await.unwrap();
    assert!(none.messages.is_empty() && none.done, "{:?}", ids(&none));
    assert!(none.next >= all.next);
    // A position past the time's first message is where the read starts.
    let mut q = query(first_two.next, 10);
    q.since = Some(t - mins(1));
    let later = store.read_message_events(&a.id, &q).await.unwrap();
    assert_eq!(ids(&later), vec![third.id.clone()]);

    // Another tenant's stream holds only its own message.
    let other = store.read_message_events(&b.id, &query(EventPosition::START, 10)).await.unwrap();
    assert_eq!(other.messages.len(), 1);
    assert!(other.messages.iter().all(|(_, m)| m.app_id == b.id));

    // The end as it stands: nothing written before lies after it.
    let end = store.message_events_end().await.unwrap();
    assert!(end >= all.next, "{end} before {}", all.next);
    let from_end = store.read_message_events(&a.id, &query(end, 10)).await.unwrap();
    assert!(from_end.messages.is_empty(), "{:?}", ids(&from_end));

    // A message written later comes after everything read so far, and after that end.
    let fourth = mk("user.created", None, t + mins(3));
    store.create_message(fourth.clone(), vec![], None).await.unwrap();
    for start in [all.next, end] {
        let mut after = query(start, 10);
        let mut found = Vec::new();
        for _ in 0..100 {
            let page = store.read_message_events(&a.id, &after).await.unwrap();
            found.extend(ids(&page));
            after.after = page.next;
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(found, vec![fourth.id.clone()], "from {start}");
    }
}

pub async fn message_events_subscriptions(store: &DynStore) {
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), None);
    assert_eq!(store.events_subscription_read(&a.id, "sub").await.unwrap(), None);
    let p1 = EventPosition { major: 0, minor: 7 };
    let p0 = EventPosition { major: 0, minor: 3 };
    // Where a read starts: what `events_subscription_read` answers.
    let from = |s: &DynStore| {
        let (s, app) = (s.clone(), a.id.clone());
        async move { s.events_subscription_read(&app, "sub").await.unwrap() }
    };
    let at = |position, seeks| Some(ReadFrom { position, seeks });
    let made = |app: &str, id: &str| {
        let (s, app, id) = (store.clone(), app.to_string(), id.to_string());
        async move { s.add_events_subscription(&app, &id, EventPosition::START, ("", u64::MAX), now_ms()).await.unwrap() }
    };
    assert!(made(&a.id, "sub").await);
    assert_eq!(from(store).await, at(EventPosition::START, 0), "made where it was asked, no seek");
    assert!(store.set_events_subscription(&a.id, "sub", p1, at(EventPosition::START, 0), now_ms()).await.unwrap());
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), Some(p1));
    assert_eq!(from(store).await, at(p1, 0), "a read is no seek");
    // Forward only: an earlier position (a reader answering late) leaves it; a seek moves it.
    store.set_events_subscription(&a.id, "sub", p0, at(EventPosition::START, 0), now_ms()).await.unwrap();
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), Some(p1));
    store.set_events_subscription(&a.id, "sub", p0, None, now_ms()).await.unwrap();
    assert_eq!(from(store).await, at(p0, 1), "a seek, counted");
    store.set_events_subscription(&a.id, "sub", p1, at(p0, 1), now_ms()).await.unwrap();
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), Some(p1));
    // A read that started at p1 answers after a seek back to p0: the seek's position stands.
    store.set_events_subscription(&a.id, "sub", p0, None, now_ms()).await.unwrap();
    let p2 = EventPosition { major: 0, minor: 9 };
    store.set_events_subscription(&a.id, "sub", p2, at(p1, 1), now_ms()).await.unwrap();
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), Some(p0), "the seek stands");
    store.set_events_subscription(&a.id, "sub", p2, at(p0, 2), now_ms()).await.unwrap();
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), Some(p2), "a read from there moves it");
    // A read that started at p0, before another read stored p2 and a seek went back to p1
    // (between the two): its answer past p2 leaves the seek standing too.
    let started = from(store).await.expect("stored");
    assert_eq!(started, ReadFrom { position: p2, seeks: 2 });
    store.set_events_subscription(&a.id, "sub", p1, None, now_ms()).await.unwrap();
    let p3 = EventPosition { major: 0, minor: 12 };
    store.set_events_subscription(&a.id, "sub", p3, at(p0, 2), now_ms()).await.unwrap();
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), Some(p1), "the seek between stands");
    // A seek of a subscription just made counts: a read that started before it finds it.
    assert!(made(&a.id, "new").await);
    store.set_events_subscription(&a.id, "new", p1, None, now_ms()).await.unwrap();
    let started_before = Some(ReadFrom::default());
    store.set_events_subscription(&a.id, "new", p3, started_before, now_ms()).await.unwrap();
    assert_eq!(store.get_events_subscription(&a.id, "new").await.unwrap(), Some(p1));
    assert_eq!(store.get_events_subscription(&b.id, "sub").await.unwrap(), None, "per application");
    assert!(made(&b.id, "sub").await);
    store.set_events_subscription(&b.id, "sub", p1, None, now_ms()).await.unwrap();
    // Positions are the store's own: only those it hands out need to round-trip.
    let next = store.read_message_events(&a.id, &EventsQuery::after(EventPosition::START, 1)).await.unwrap().next;
    store.set_events_subscription(&a.id, "sub", next, None, now_ms()).await.unwrap();
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), Some(next));
    store.delete_app(&a.id).await.unwrap();
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), None, "deleted with the application");
    assert_eq!(store.get_events_subscription(&b.id, "sub").await.unwrap(), Some(p1));
}

/// Positions are made only by `add_events_subscription`, for an application and (for a
/// name `{endpoint_id}/…`) an endpoint that exist; moving one that is gone makes nothing:
/// a read that was under way when its endpoint or application was deleted (a long-poll)
/// must not leave a position behind that nothing deletes and that counts against the
/// application's bound for ever.
pub async fn events_subscriptions_are_not_made_again_once_deleted(store: &DynStore) {
    let (a, b) = (setup_app(store, "A").await, setup_app(store, "B").await);
    let (ep, other) = (setup_endpoint(store, &a.id).await, setup_endpoint(store, &b.id).await);
    let p1 = EventPosition { major: 0, minor: 7 };
    let p2 = EventPosition { major: 0, minor: 9 };
    let add = |app: &str, id: String| {
        let (s, app) = (store.clone(), app.to_string());
        async move { s.add_events_subscription(&app, &id, p1, ("", u64::MAX), now_ms()).await.unwrap() }
    };
    let (start, consumer) = (format!("{}/", ep.id), format!("{}/c", ep.id));
    for id in [&start, &consumer, &"sub".to_string()] {
        assert!(add(&a.id, id.clone()).await, "{id}");
    }
    // Nothing for an application or an endpoint that does not exist, nor for another
    // application's endpoint.
    assert!(!add("app_missing", "sub".into()).await);
    assert!(!add(&a.id, "ep_missing/c".into()).await);
    assert!(!add(&a.id, format!("{}/c", other.id)).await, "another application's endpoint");
    assert_eq!(store.get_events_subscription("app_missing", "sub").await.unwrap(), None);
    assert_eq!(store.get_events_subscription(&a.id, "ep_missing/c").await.unwrap(), None);
    assert_eq!(store.count_events_subscriptions(&a.id, "").await.unwrap(), 3);

    // Moving one that is there: answered true, both ways (a read's answer, a seek).
    let read = Some(ReadFrom { position: p1, seeks: 0 });
    assert!(store.set_events_subscription(&a.id, &consumer, p2, read, now_ms()).await.unwrap());
    assert_eq!(store.get_events_subscription(&a.id, &consumer).await.unwrap(), Some(p2));
    assert!(store.set_events_subscription(&a.id, &consumer, p1, None, now_ms()).await.unwrap());
    // One never made is not made by a move.
    assert!(!store.set_events_subscription(&a.id, "never", p2, read, now_ms()).await.unwrap());
    assert!(!store.set_events_subscription(&a.id, "never", p2, None, now_ms()).await.unwrap());
    assert_eq!(store.get_events_subscription(&a.id, "never").await.unwrap(), None);

    // The endpoint is deleted while its consumer is read: the read's answer, a seek, a new
    // consumer's creation and the endpoint's start (recorded late) make nothing again.
    store.delete_endpoint(&a.id, &ep.id).await.unwrap();
    let read = Some(ReadFrom { position: p1, seeks: 1 });
    assert!(!store.set_events_subscription(&a.id, &consumer, p2, read, now_ms()).await.unwrap());
    assert!(!store.set_events_subscription(&a.id, &consumer, p2, None, now_ms()).await.unwrap());
    assert!(!add(&a.id, format!("{}/new", ep.id)).await);
    assert!(!add(&a.id, start.clone()).await);
    assert_eq!(store.count_events_subscriptions(&a.id, &start).await.unwrap(), 0);
    assert_eq!(store.get_events_subscription(&a.id, &consumer).await.unwrap(), None);

    // Likewise the application and its subscriptions.
    store.delete_app(&a.id).await.unwrap();
    let read = Some(ReadFrom { position: p1, seeks: 0 });
    assert!(!store.set_events_subscription(&a.id, "sub", p2, read, now_ms()).await.unwrap());
    assert!(!store.set_events_subscription(&a.id, "sub", p2, None, now_ms()).await.unwrap());
    assert!(!add(&a.id, "another".into()).await);
    assert_eq!(store.count_events_subscriptions(&a.id, "").await.unwrap(), 0);
    assert_eq!(store.get_events_subscription(&a.id, "sub").await.unwrap(), None);

    // A creation racing the endpoint's deletion leaves nothing either way.
    for i in 0..10 {
        let ep = setup_endpoint(store, &b.id).await;
        let id = format!("{}/c{i}", ep.id);
        let (made, deleted) = tokio::join!(
            {
                let (s, app, id) = (store.clone(), b.id.clone(), id.clone());
                async move { s.add_events_subscription(&app, &id, p1, ("", u64::MAX), now_ms()).await.unwrap() }
            },
            store.delete_endpoint(&b.id, &ep.id)
        );
        deleted.unwrap();
        let _ = made;
        assert_eq!(store.get_events_subscription(&b.id, &id).await.unwrap(), None, "race {i}");
    }
}

/// A read of the stream stops early once the payloads it read reach `max_bytes` (always
/// bringing one message at least): such a page is not done, its `next` is its last message,
/// and reading on from there sees every message once. Without `with_content`, payloads are
/// not read at all (`""`), and count for nothing.
pub async fn message_events_pages_are_bounded_by_bytes(store: &DynStore) {
    let t = now_ms() - hours(1);
    let a = setup_app(store, "A").await;
    let mut posted = Vec::new();
    for i in 0..5 {
        let mut m = new_message(&a.id, "big.payload", t + secs(i));
        // 600 bytes each.
        m.payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(590));
        assert_eq!(m.payload.len(), 600);
        store.create_message(m.clone(), vec![], None).await.unwrap();
        posted.push(m);
    }
    let query = |after: EventPosition, limit: usize, with_content: bool, max_bytes: usize| EventsQuery {
        after,
        since: None,
        event_types: None,
        channels: None,
        limit,
        with_content,
        max_bytes,
    };
    let ids = |page: &hooklane_store::EventsPage| page.messages.iter().map(|(_, m)| m.id.clone()).collect::<Vec<_>>();
    let all_ids: Vec<String> = posted.iter().map(|m| m.id.clone()).collect();
    // (PostgreSQL shows messages once every older transaction of the cluster has ended.)
    let mut light = store.read_message_events(&a.id, &query(EventPosition::START, 10, false, 1500)).await.unwrap();
    for _ in 0..250 {
        if light.messages.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        light = store.read_message_events(&a.id, &query(EventPosition::START, 10, false, 1500)).await.unwrap();
    }
    // Without content: every message, no payload read, and the budget never reached.
    assert_eq!(ids(&light), all_ids);
    assert!(light.messages.iter().all(|(_, m)| m.payload.is_empty()), "{:?}", light.messages);
    assert!(light.done);
    assert_eq!(light.messages[4].1, Message { payload: String::new(), ..posted[4].clone() }, "the rest as stored");

    // With content, 1,500 bytes: the third message brings the sum to 1,800 and ends the page,
    // which is not done and goes on from that message.
    let first = store.read_message_events(&a.id, &query(EventPosition::START, 10, true, 1500)).await.unwrap();
    assert_eq!(ids(&first), all_ids[..3].to_vec());
    assert_eq!(first.messages[0].1, posted[0], "payloads read");
    assert!(!first.done, "cut short by its bytes, not at the end");
    assert_eq!(first.next, first.messages[2].0, "next is its last message");
    let rest = store.read_message_events(&a.id, &query(first.next, 10, true, 1500)).await.unwrap();
    assert_eq!(ids(&rest), all_ids[3..].to_vec(), "nothing passed over, nothing read twice");
    assert!(rest.done, "1,200 bytes: under the budget, and short of the limit");
    assert!(rest.next >= rest.messages[1].0);

    // A message larger than the budget is read all the same, alone.
    let mut after = EventPosition::START;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let page = store.read_message_events(&a.id, &query(after, 10, true, 100)).await.unwrap();
        assert_eq!(page.messages.len(), 1, "{:?}", ids(&page));
        assert!(!page.done);
        assert_eq!(page.next, page.messages[0].0);
        seen.extend(ids(&page));
        after = page.next;
    }
    assert_eq!(seen, all_ids);
    let end = store.read_message_events(&a.id, &query(after, 10, true, 100)).await.unwrap();
    assert!(end.messages.is_empty() && end.done);
    // Exactly at the budget: the page ends with the message that reaches it.
    let two = store.read_message_events(&a.id, &query(EventPosition::START, 10, true, 1200)).await.unwrap();
    assert_eq!((ids(&two), two.done, two.next), (all_ids[..2].to_vec(), false, two.messages[1].0));
    // The limit still ends a page first.
    let limited = store.read_message_events(&a.id, &query(EventPosition::START, 2, true, usize::MAX)).await.unwrap();
    assert_eq!((ids(&limited), limited.done), (all_ids[..2].to_vec(), false));
}

pub async fn list_messages_filters(store: &DynStore) {
    let t = now_ms() - hours(1);
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let mk = |et: &str, ch: Option<&[&str]>, tags: Option<&[&str]>, at| {
        let mut m = new_message(&a.id, et, at);
        m.channels = ch.map(|c| c.iter().map(|s| s.to_string()).collect());
        m.tags = tags.map(|c| c.iter().map(|s| s.to_string()).collect());
        m
    };
    let m1 = mk("user.created", Some(&["a"]), Some(&["x"]), t);
    let m2 = mk("user.deleted", Some(&["a", "b"]), None, t + mins(1));
    let m3 = mk("invoice.paid", None, Some(&["x", "y"]), t + mins(2));
    let m4 = mk("user.created", Some(&["b"]), Some(&["y"]), t + mins(3));
    for m in [&m1, &m2, &m3, &m4] {
        store.create_message(m.clone(), vec![], None).await.unwrap();
    }
    let mut other = new_message(&b.id, "user.created", t + mins(1));
    other.channels = Some(vec!["a".into()]);
    other.tags = Some(vec!["x".into()]);
    store.create_message(other, vec![], None).await.unwrap();

    let list = |f: MessageFilter| {
        let (s, app_id) = (store.clone(), a.id.clone());
        async move {
            let page = s.list_messages(&app_id, &f, &page_req(50, None, false)).await.unwrap();
            assert!(page.done);
            page.items
        }
    };
    let ids = |ms: &[&Message]| ms.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    let got = |v: Vec<Message>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    let types = |ts: &[&str]| Some(ts.iter().map(|s| s.to_string()).collect::<Vec<_>>());

    assert_eq!(list(MessageFilter::default()).await, vec![m1.clone(), m2.clone(), m3.clone(), m4.clone()]);
    let cases: Vec<(&str, MessageFilter, Vec<String>)> = vec![
        ("one type", MessageFilter { event_types: types(&["user.created"]), ..Default::default() }, ids(&[&m1, &m4])),
        (
            "two types",
            MessageFilter { event_types: types(&["user.created", "invoice.paid"]), ..Default::default() },
            ids(&[&m1, &m3, &m4]),
        ),
        ("unknown type", MessageFilter { event_types: types(&["nope"]), ..Default::default() }, vec![]),
        ("channel a", MessageFilter { channel: Some("a".into()), ..Default::default() }, ids(&[&m1, &m2])),
        ("channel b", MessageFilter { channel: Some("b".into()), ..Default::default() }, ids(&[&m2, &m4])),
        ("unknown channel", MessageFilter { channel: Some("zz".into()), ..Default::default() }, vec![]),
        ("tag x", MessageFilter { tag: Some("x".into()), ..Default::default() }, ids(&[&m1, &m3])),
        ("tag y", MessageFilter { tag: Some("y".into()), ..Default::default() }, ids(&[&m3, &m4])),
        ("after", MessageFilter { after: Some(t + secs(30)), ..Default::default() }, ids(&[&m2, &m3, &m4])),
        ("before", MessageFilter { before: Some(t + secs(150)), ..Default::default() }, ids(&[&m1, &m2, &m3])),
        (
            "window",
            MessageFilter { after: Some(t + secs(30)), before: Some(t + secs(150)), ..Default::default() },
            ids(&[&m2, &m3]),
        ),
        (
            "type and channel",
            MessageFilter { event_types: types(&["user.created"]), channel: Some("b".into()), ..Default::default() },
            ids(&[&m4]),
        ),
        (
            "tag and before",
            MessageFilter { tag: Some("x".into()), before: Some(t + secs(90)), ..Default::default() },
            ids(&[&m1]),
        ),
    ];
    for (name, filter, want) in cases {
        assert_eq!(got(list(filter).await), want, "filter: {name}");
    }

    // Filters and pagination together.
    let f = MessageFilter { event_types: types(&["user.created"]), ..Default::default() };
    let p1 = store.list_messages(&a.id, &f, &page_req(1, None, false)).await.unwrap();
    assert_eq!(got(p1.items), ids(&[&m1]));
    assert!(!p1.done);
    let p2 = store.list_messages(&a.id, &f, &page_req(1, Some(m1.id.clone()), false)).await.unwrap();
    assert_eq!(got(p2.items), ids(&[&m4]));
    assert!(p2.done);
}

pub async fn list_messages_pagination(store: &DynStore) {
    let t = now_ms();
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let mut msgs = Vec::new();
    for i in 0..5 {
        msgs.push(post(store, &a.id, &[], t + secs(i)).await);
        post(store, &b.id, &[], t + secs(i)).await;
    }
    let ids: Vec<String> = msgs.iter().map(|m| m.id.clone()).collect();
    let rev: Vec<String> = ids.iter().rev().cloned().collect();

    let p1 = store.list_messages(&a.id, &MessageFilter::default(), &page_req(2, None, true)).await.unwrap();
    assert_eq!(p1.items.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), rev[0..2]);
    assert!(!p1.done);
    let p2 =
        store.list_messages(&a.id, &MessageFilter::default(), &page_req(2, Some(rev[1].clone()), true)).await.unwrap();
    assert_eq!(p2.items.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), rev[2..4]);
    assert!(!p2.done);

    for (limit, desc, want) in [(2, false, &ids), (2, true, &rev), (5, false, &ids), (1, true, &rev)] {
        let got = all_pages(
            limit,
            desc,
            |m: &Message| m.id.clone(),
            |p| {
                let (s, app_id) = (store.clone(), a.id.clone());
                async move { s.list_messages(&app_id, &MessageFilter::default(), &p).await }
            },
        )
        .await;
        assert_eq!(&got.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), want, "limit {limit} desc {desc}");
    }
}

// ---------------------------------------------------------------------------------------
// the delivery queue

pub async fn claim_due_leases_deliveries(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let m1 = post(store, &app.id, &[&e1, &e2], t).await;
    let m2 = post(store, &app.id, &[&e1], t).await;
    let all = set([pair(&m1, &e1), pair(&m1, &e2), pair(&m2, &e1)]);

    assert!(
        store.claim_due(t - mins(1), 10, LEASE, &ClaimRoom::default()).await.unwrap().is_empty(),
        "nothing is due before its time"
    );

    let now = t + secs(1);
    let first = store.claim_due(now, 2, LEASE, &ClaimRoom::default()).await.unwrap();
    assert_eq!(first.len(), 2, "limit is respected");
    let second = store.claim_due(now, 2, LEASE, &ClaimRoom::default()).await.unwrap();
    assert_eq!(second.len(), 1, "only what was not leased yet");
    let third = store.claim_due(now, 2, LEASE, &ClaimRoom::default()).await.unwrap();
    assert!(third.is_empty(), "everything is leased");
    let mut got = job_keys(&first);
    got.extend(job_keys(&second));
    assert_eq!(got, all);

    for job in first.iter().chain(&second) {
        let msg = if job.delivery.msg_id == m1.id { &m1 } else { &m2 };
        let ep = if job.delivery.endpoint_id == e1.id { &e1 } else { &e2 };
        assert_eq!(*job.message, *msg, "job carries its message");
        assert_eq!(*job.endpoint, *ep, "job carries its endpoint");
        assert_eq!(job.delivery.app_id, app.id);
        assert_eq!(job.delivery.status, DeliveryStatus::Pending);
        assert_eq!(job.delivery.attempts, 0);
    }

    // Still leased just before the lease ends, claimable again after.
    assert!(claim(store, now + secs(59)).await.is_empty(), "lease still held");
    let again = claim(store, now + secs(61)).await;
    assert_eq!(job_keys(&again), all, "an expired lease makes the delivery claimable again");
    assert!(claim(store, now + secs(62)).await.is_empty(), "and claiming leases it anew");
    let far = store.claim_due(t + chrono::Duration::days(365), 1000, LEASE, &ClaimRoom::default()).await.unwrap();
    assert_eq!(job_keys(&far), all);
}

/// A scheduled message (Svix's `deliverAt`): stored at once, its deliveries due at their time.
pub async fn scheduled_message_is_due_at_its_time(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let (e1, e2) = (setup_endpoint(store, &app.id).await, setup_endpoint(store, &app.id).await);
    let at = t + mins(10);
    // (The store keeps the time it is given, which the message then reads with.)
    let msg = new_message(&app.id, "user.created", t);
    store.schedule_message(msg.clone(), vec![e1.id.clone(), e2.id.clone()], at).await.unwrap();
    let msg = Message { deliver_at: Some(at), ..msg };
    assert_eq!(store.get_message(&app.id, &msg.id).await.unwrap().as_ref(), Some(&msg), "stored at once");
    let d = delivery(store, &app.id, &msg.id, &e1.id).await;
    assert_eq!((d.status, d.next_attempt_at, d.attempts), (DeliveryStatus::Pending, Some(at), 0));
    assert!(claim(store, t + secs(1)).await.is_empty(), "not due before its time");
    // Making an endpoint's paused deliveries due at once (it was fixed) leaves the schedule.
    assert_eq!(store.hasten_deliveries(&e1.id, at + hours(1), t + secs(1)).await.unwrap(), 0);
    assert!(claim(store, at - millis(1)).await.is_empty());
    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(at));
    let jobs = claim(store, at).await;
    assert_eq!(job_keys(&jobs), set([pair(&msg, &e1), pair(&msg, &e2)]));
    assert!(jobs.iter().all(|j| j.delivery.trigger == TriggerType::Scheduled && *j.message == msg));
    // Scheduled and immediate messages keep their order in the application's message list.
    let now = new_message(&app.id, "user.created", t + millis(1));
    store.create_message(now.clone(), vec![e1.id.clone()], None).await.unwrap();
    let listed = store.list_messages(&app.id, &MessageFilter::default(), &page_req(10, None, false)).await.unwrap();
    assert_eq!(listed.items.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), [msg.id.as_str(), now.id.as_str()]);
}

pub async fn claim_due_respects_initial_lease(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let leased = new_message(&app.id, "user.created", t);
    let handed =
        store.create_message(leased.clone(), vec![e1.id.clone(), e2.id.clone()], Some(t + mins(2))).await.unwrap();
    // Answered so that the caller sends them itself: left out, they would wait for the lease.
    assert_eq!(handed.into_iter().collect::<BTreeSet<_>>(), BTreeSet::from([e1.id.clone(), e2.id.clone()]));

    let ds = store.message_deliveries(&app.id, &leased.id).await.unwrap();
    assert_eq!(ds.len(), 2);
    // (Pending and leased: read as being sent.)
    assert!(ds.iter().all(|(d, _)| d.status == DeliveryStatus::Sending && d.attempts == 0));

    assert!(claim(store, t + secs(1)).await.is_empty(), "leased at creation: not claimable");
    assert!(claim(store, t + mins(2) - secs(1)).await.is_empty(), "not before the lease ends");
    // A poller is told of the leased deliveries when their lease ends, not before.
    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(t + mins(2)), "next_due_at of the creation lease");

    // A message created without lease next to it is claimable at once (leased here for
    // long enough to stay out of the way below).
    let free = post(store, &app.id, &[&e1], t).await;
    let jobs = store.claim_due(t + secs(1), 100, HOUR, &ClaimRoom::default()).await.unwrap();
    assert_eq!(job_keys(&jobs), set([pair(&free, &e1)]));

    let after = claim(store, t + mins(2) + secs(1)).await;
    assert_eq!(job_keys(&after), set([pair(&leased, &e1), pair(&leased, &e2)]), "claimable once the lease ran out");
}

pub async fn prune_deletes_old_finished_messages(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "Retained").await;
    let ep = setup_endpoint(store, &app.id).await;
    let old_done = post(store, &app.id, &[&ep], t - hours(3)).await;
    let old_pending = post(store, &app.id, &[&ep], t - hours(2)).await;
    let recent = post(store, &app.id, &[&ep], t).await;
    // The first old message and the recent one are delivered; the other old one waits.
    assert_eq!(claim(store, t + secs(1)).await.len(), 3);
    let outcomes = vec![
        outcome(&old_done.id, &ep, t + secs(2), NextStep::Succeeded),
        outcome(&old_pending.id, &ep, t + secs(2), NextStep::RetryAt(t + hours(1))),
        outcome(&recent.id, &ep, t + secs(2), NextStep::Succeeded),
    ];
    store.record_attempts(outcomes, Duration::from_secs(24 * 3600)).await.unwrap();

    let pruned = store.prune(t, None, old_before(t - hours(1)), 100).await.unwrap();
    assert_eq!(pruned, Pruned { messages: 1, ..Pruned::default() });
    assert_eq!(store.get_message(&app.id, &old_done.id).await.unwrap(), None, "the old delivered message is gone");
    assert!(store.message_deliveries(&app.id, &old_done.id).await.unwrap().is_empty(), "with its deliveries");
    let filter = AttemptFilter { msg_id: Some(old_done.id.clone()), ..AttemptFilter::default() };
    let left = store.list_attempts(&app.id, &filter, &PageRequest::default()).await.unwrap();
    assert!(left.items.is_empty(), "and its attempts: {:?}", left.items);
    // A message still waiting for a delivery, and a recent one, stay whole.
    for kept in [&old_pending, &recent] {
        assert_eq!(store.get_message(&app.id, &kept.id).await.unwrap().as_ref(), Some(kept));
        assert_eq!(store.message_deliveries(&app.id, &kept.id).await.unwrap().len(), 1);
    }
    assert_eq!(store.prune(t, None, old_before(t - hours(1)), 100).await.unwrap(), Pruned::default(), "nothing more");

    // An old message whose content is deleted while its delivery is on the wire goes, and
    // the attempt's outcome, recorded after, leaves no attempt behind (nothing would delete
    // it: retention deletes attempts with their message).
    let on_wire = post(store, &app.id, &[&ep], t - hours(3)).await;
    assert_eq!(claim(store, t + secs(3)).await.len(), 1);
    store.expunge_message_content(&app.id, &on_wire.id, t + secs(3)).await.unwrap();
    assert_eq!(store.prune(t + secs(4), None, old_before(t - hours(1)), 100).await.unwrap().messages, 1);
    let late = outcome(&on_wire.id, &ep, t + secs(5), NextStep::Succeeded);
    store.record_attempts(vec![late], HOUR).await.unwrap();
    let filter = AttemptFilter { msg_id: Some(on_wire.id.clone()), ..AttemptFilter::default() };
    let left = store.list_attempts(&app.id, &filter, &PageRequest::default()).await.unwrap();
    assert!(left.items.is_empty(), "an attempt of a deleted message: {:?}", left.items);
}

/// Messages created before `before`, looked for from the oldest.
fn old_before(before: DateTime<Utc>) -> Option<PruneMessages> {
    Some(PruneMessages { before, after: String::new() })
}

/// Old messages that wait for a delivery do not keep a round from the old ones after them:
/// it says where to go on. A message with many rows makes a round stop early.
pub async fn prune_goes_past_messages_that_wait(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "Retained").await;
    let ep = setup_endpoint(store, &app.id).await;
    // Four old messages whose deliveries wait (a paused endpoint's), then an old one sent
    // nowhere, then a recent one. With a limit of 2 a round looks at 4 messages.
    let mut waiting = Vec::new();
    for _ in 0..4 {
        waiting.push(post(store, &app.id, &[&ep], t - hours(3)).await);
    }
    let old = post(store, &app.id, &[], t - hours(3)).await;
    let recent = post(store, &app.id, &[], t).await;
    let first = store.prune(t, None, old_before(t - hours(1)), 2).await.unwrap();
    assert_eq!(first, Pruned { messages_resume: Some(waiting[3].id.clone()), ..Pruned::default() });
    let from = PruneMessages { before: t - hours(1), after: waiting[3].id.clone() };
    let second = store.prune(t, None, Some(from), 2).await.unwrap();
    assert_eq!(second, Pruned { messages: 1, ..Pruned::default() }, "looked at every old message");
    assert_eq!(store.get_message(&app.id, &old.id).await.unwrap(), None);
    for kept in waiting.iter().chain([&recent]) {
        assert!(store.get_message(&app.id, &kept.id).await.unwrap().is_some());
    }
    assert_eq!(store.prune(t, None, old_before(t - hours(1)), 2).await.unwrap().messages, 0);

    // A message sent to 8 endpoints (17 rows with its attempts) fills a round's budget of
    // 2 × 8 rows: the round deletes it alone and says to go on from where it began.
    let eps: Vec<Endpoint> = setup_endpoints(store, &app.id, 8).await;
    let wide = post(store, &app.id, &eps.iter().collect::<Vec<_>>(), t - hours(2)).await;
    let narrow = post(store, &app.id, &[&eps[0]], t - hours(2)).await;
    let jobs = claim(store, t + secs(1)).await;
    let mut outcomes = Vec::new();
    for job in &jobs {
        if job.delivery.msg_id == wide.id || job.delivery.msg_id == narrow.id {
            let e = eps.iter().find(|e| e.id == job.delivery.endpoint_id).expect("one of the 8");
            outcomes.push(outcome(&job.delivery.msg_id, e, t + secs(2), NextStep::Succeeded));
        }
    }
    assert_eq!(outcomes.len(), 9);
    store.record_attempts(outcomes, Duration::from_secs(24 * 3600)).await.unwrap();
    let from = PruneMessages { before: t - hours(1), after: waiting[3].id.clone() };
    let cut = store.prune(t, None, Some(from.clone()), 2).await.unwrap();
    assert_eq!(cut, Pruned { messages: 1, messages_resume: Some(waiting[3].id.clone()), ..Pruned::default() });
    assert_eq!(store.get_message(&app.id, &wide.id).await.unwrap(), None);
    assert!(store.message_deliveries(&app.id, &wide.id).await.unwrap().is_empty());
    let rest = store.prune(t, None, Some(from), 2).await.unwrap();
    assert_eq!(rest, Pruned { messages: 1, ..Pruned::default() });
    assert_eq!(store.get_message(&app.id, &narrow.id).await.unwrap(), None);
}

async fn setup_endpoints(store: &DynStore, app_id: &str, n: usize) -> Vec<Endpoint> {
    let mut eps = Vec::new();
    for _ in 0..n {
        eps.push(setup_endpoint(store, app_id).await);
    }
    eps
}

pub async fn record_attempts_moves_deliveries(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let ok = setup_endpoint(store, &app.id).await;
    let retry = setup_endpoint(store, &app.id).await;
    let dead = setup_endpoint(store, &app.id).await;
    let msg = post(store, &app.id, &[&ok, &retry, &dead], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 3);

    let at = t + secs(2);
    let retry_at = t + mins(10);
    let outcomes = vec![
        outcome(&msg.id, &ok, at, NextStep::Succeeded),
        outcome(&msg.id, &retry, at, NextStep::RetryAt(retry_at)),
        outcome(&msg.id, &dead, at, NextStep::GiveUp),
    ];
    let attempts: Vec<Attempt> = outcomes.iter().map(|o| o.attempt.clone()).collect();
    let disabled = store.record_attempts(outcomes, Duration::from_secs(24 * 3600)).await.unwrap();
    assert_eq!(
        disabled,
        hooklane_store::Recorded::default(),
        "nothing fails long enough to be disabled, nothing set aside"
    );

    let d = delivery(store, &app.id, &msg.id, &ok.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Success, 1));
    assert_eq!(d.next_attempt_at, None);
    let d = delivery(store, &app.id, &msg.id, &retry.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 1));
    assert_eq!(d.next_attempt_at, Some(retry_at));
    let d = delivery(store, &app.id, &msg.id, &dead.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Fail, 1));
    assert_eq!(d.next_attempt_at, None);

    for a in &attempts {
        assert_eq!(store.get_attempt(&app.id, &msg.id, &a.id).await.unwrap().as_ref(), Some(a), "attempt stored");
    }

    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(retry_at));
    assert!(claim(store, t + mins(9)).await.is_empty(), "the retry is not due before its time");
    let jobs = claim(store, retry_at).await;
    assert_eq!(job_keys(&jobs), set([pair(&msg, &retry)]), "only the retry comes back, at its time");
    assert_eq!(jobs[0].delivery.attempts, 1);

    store
        .record_attempts(vec![outcome(&msg.id, &retry, retry_at, NextStep::RetryAt(retry_at + mins(10)))], HOUR)
        .await
        .unwrap();
    assert_eq!(delivery(store, &app.id, &msg.id, &retry.id).await.attempts, 2);
    let jobs = claim(store, retry_at + mins(10)).await;
    assert_eq!(job_keys(&jobs), set([pair(&msg, &retry)]));
    store
        .record_attempts(vec![outcome(&msg.id, &retry, retry_at + mins(10), NextStep::Succeeded)], HOUR)
        .await
        .unwrap();
    let d = delivery(store, &app.id, &msg.id, &retry.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Success, 3));

    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "nothing pending any more");
    assert!(claim(store, t + chrono::Duration::days(30)).await.is_empty(), "finished deliveries never come back");
    let listed = store
        .list_attempts(
            &app.id,
            &AttemptFilter { msg_id: Some(msg.id.clone()), ..Default::default() },
            &page_req(50, None, false),
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 5);
}

pub async fn next_due_at_reports_earliest(store: &DynStore) {
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "empty store");
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let msg = post(store, &app.id, &[&e1, &e2], t).await;

    let due = store.next_due_at(&[]).await.unwrap().expect("a fresh delivery is due");
    assert!(due <= now_ms() + secs(1), "a fresh delivery is due now, not at {due}");

    assert_eq!(claim(store, t + secs(1)).await.len(), 2);
    store
        .record_attempts(
            vec![
                outcome(&msg.id, &e1, t + secs(1), NextStep::RetryAt(t + mins(20))),
                outcome(&msg.id, &e2, t + secs(1), NextStep::RetryAt(t + mins(7))),
            ],
            HOUR,
        )
        .await
        .unwrap();
    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(t + mins(7)));

    assert_eq!(job_keys(&claim(store, t + mins(7)).await), set([pair(&msg, &e2)]));
    store.record_attempts(vec![outcome(&msg.id, &e2, t + mins(7), NextStep::Succeeded)], HOUR).await.unwrap();
    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(t + mins(20)));

    assert_eq!(claim(store, t + mins(20)).await.len(), 1);
    store.record_attempts(vec![outcome(&msg.id, &e1, t + mins(20), NextStep::GiveUp)], HOUR).await.unwrap();
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None);
}

/// Outcomes of one batch leave the state recording them one by one, in order, would.
pub async fn one_batch_records_in_order(store: &DynStore) {
    let t0 = now_ms();
    let app = setup_app(store, "Batch").await;
    let a = setup_endpoint(store, &app.id).await;
    let b = setup_endpoint(store, &app.id).await;
    let m1 = post(store, &app.id, &[&a, &b], t0).await;
    let m2 = post(store, &app.id, &[&a, &b], t0).await;
    assert_eq!(claim(store, t0 + secs(1)).await.len(), 4);
    let retry = NextStep::RetryAt(t0 + mins(5));
    // a: fail, success, fail → a run that starts at the last failure.
    // b: fail, success → no run.
    let off = store
        .record_attempts(
            vec![
                outcome(&m1.id, &a, t0 + secs(1), retry.clone()),
                outcome(&m1.id, &b, t0 + secs(1), retry.clone()),
                outcome(&m2.id, &a, t0 + secs(2), NextStep::Succeeded),
                outcome(&m2.id, &b, t0 + secs(2), NextStep::Succeeded),
                outcome(&m1.id, &a, t0 + secs(3), retry.clone()),
            ],
            HOUR,
        )
        .await
        .unwrap();
    assert_eq!(off, hooklane_store::Recorded::default());
    assert_eq!(endpoint_now(store, &a).await.failing_since, Some(t0 + secs(3)));
    assert_eq!(endpoint_now(store, &b).await.failing_since, None);
    // m1 to a was attempted twice in the batch and is still pending.
    let d = delivery(store, &app.id, &m1.id, &a.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 2));
    let d = delivery(store, &app.id, &m2.id, &b.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Success, 1));
}

pub async fn endpoint_failing_since_and_disable(store: &DynStore) {
    let t0 = now_ms();
    let disable_after = HOUR;
    let app = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &app.id).await;
    let healthy = setup_endpoint(store, &app.id).await;
    let m1 = post(store, &app.id, &[&ep], t0).await;

    // First failure starts the failing run.
    assert_eq!(job_keys(&claim(store, t0 + secs(1)).await), set([pair(&m1, &ep)]));
    let off = store.record_attempts(vec![outcome(&m1.id, &ep, t0, NextStep::RetryAt(t0 + mins(30)))], disable_after);
    assert!(off.await.unwrap().disabled.is_empty());
    let e = endpoint_now(store, &ep).await;
    assert_eq!(e.failing_since, Some(t0));
    assert!(!e.disabled);

    // Failing again within disable_after: the run keeps its start, nothing is disabled.
    assert_eq!(claim(store, t0 + mins(30)).await.len(), 1);
    let off = store
        .record_attempts(vec![outcome(&m1.id, &ep, t0 + mins(30), NextStep::RetryAt(t0 + mins(40)))], disable_after);
    assert!(off.await.unwrap().disabled.is_empty());
    let e = endpoint_now(store, &ep).await;
    assert_eq!(e.failing_since, Some(t0), "a later failure does not move the start of the run");
    assert!(!e.disabled);

    // A success ends the run; a change read before it does not bring the run back.
    let read_while_failing = endpoint_now(store, &ep).await;
    assert_eq!(claim(store, t0 + mins(40)).await.len(), 1);
    let off = store.record_attempts(vec![outcome(&m1.id, &ep, t0 + mins(40), NextStep::Succeeded)], disable_after);
    assert!(off.await.unwrap().disabled.is_empty());
    assert_eq!(endpoint_now(store, &ep).await.failing_since, None, "success clears failing_since");
    let renamed = Endpoint { description: "renamed".into(), ..read_while_failing };
    store.update_endpoint(renamed, None).await.unwrap();
    assert_eq!(endpoint_now(store, &ep).await.failing_since, None, "an update leaves the streak as the engine left it");

    // A new run starts at the next failure; the healthy endpoint succeeds alongside.
    let m2 = post(store, &app.id, &[&ep, &healthy], t0).await;
    let t1 = t0 + mins(50);
    assert_eq!(job_keys(&claim(store, t1).await), set([pair(&m2, &ep), pair(&m2, &healthy)]));
    let off = store.record_attempts(
        vec![
            outcome(&m2.id, &ep, t1, NextStep::RetryAt(t0 + mins(120))),
            outcome(&m2.id, &healthy, t1, NextStep::Succeeded),
        ],
        disable_after,
    );
    assert!(off.await.unwrap().disabled.is_empty());
    assert_eq!(endpoint_now(store, &ep).await.failing_since, Some(t1), "the run restarted after the success");

    // Still failing more than disable_after after the run began: disabled, and reported.
    let t2 = t0 + mins(120);
    assert_eq!(job_keys(&claim(store, t2).await), set([pair(&m2, &ep)]));
    // A change saved after the attempt's time (a clock ahead, or the same moment): the
    // disabling's version still comes after it.
    let saved = Endpoint { updated_at: t2 + mins(1), ..endpoint_now(store, &ep).await };
    store.update_endpoint(saved.clone(), None).await.unwrap();
    let off = store.record_attempts(vec![outcome(&m2.id, &ep, t2, NextStep::RetryAt(t0 + mins(180)))], disable_after);
    let disabled = off.await.unwrap().disabled;
    let e = endpoint_now(store, &ep).await;
    // Reported with the version it wrote, one past the saved one.
    assert_eq!(disabled, vec![(ep.id.clone(), saved.updated_at + millis(1))]);
    assert_eq!(e.updated_at, saved.updated_at + millis(1));
    assert!(e.disabled, "endpoint failing for longer than disable_after is disabled");
    assert_eq!(e.failing_since, Some(t1));

    // Already disabled: not reported again.
    assert_eq!(claim(store, t0 + mins(180)).await.len(), 1);
    let off = store.record_attempts(vec![outcome(&m2.id, &ep, t0 + mins(180), NextStep::GiveUp)], disable_after);
    assert!(off.await.unwrap().disabled.is_empty(), "an endpoint is reported disabled once");

    let h = endpoint_now(store, &healthy).await;
    assert!(!h.disabled);
    assert_eq!(h.failing_since, None);

    // Enabled again: the streak ends with the disabling it led to.
    let enabled = Endpoint { disabled: false, updated_at: e.updated_at + secs(1), ..endpoint_now(store, &ep).await };
    store.update_endpoint(enabled, None).await.unwrap();
    let e = endpoint_now(store, &ep).await;
    assert_eq!((e.disabled, e.failing_since), (false, None));

    // Failing again, then moved to a new address: the streak ends, its failures were another
    // receiver's; a change of anything else leaves it.
    let m3 = post(store, &app.id, &[&ep], t0).await;
    let t3 = t0 + mins(200);
    assert_eq!(job_keys(&claim(store, t3).await), set([pair(&m3, &ep)]));
    let off = store.record_attempts(vec![outcome(&m3.id, &ep, t3, NextStep::RetryAt(t0 + mins(300)))], disable_after);
    assert!(off.await.unwrap().disabled.is_empty());
    let e = endpoint_now(store, &ep).await;
    assert_eq!(e.failing_since, Some(t3));
    let described = Endpoint { description: "still failing".into(), ..e };
    store.update_endpoint(described, None).await.unwrap();
    let e = endpoint_now(store, &ep).await;
    assert_eq!(e.failing_since, Some(t3), "a new description leaves the streak");
    let moved = Endpoint { url: format!("{}/moved", e.url), ..e };
    store.update_endpoint(moved, None).await.unwrap();
    assert_eq!(endpoint_now(store, &ep).await.failing_since, None, "a new address ends the streak");
}

/// A batch of outcomes whose last for an endpoint is a success (a receiver back after an
/// outage: concurrent requests, one timing out, the next answered) disables it for none of
/// the failures before, on every store: the streak ends at the success.
pub async fn a_batch_ending_in_a_success_disables_nothing(store: &DynStore) {
    let t0 = now_ms();
    let app = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &app.id).await;
    let (m1, m2, m3) = (
        post(store, &app.id, &[&ep], t0).await,
        post(store, &app.id, &[&ep], t0).await,
        post(store, &app.id, &[&ep], t0).await,
    );
    assert_eq!(claim(store, t0 + secs(1)).await.len(), 3);
    // A streak two hours old…
    let off = store.record_attempts(vec![outcome(&m1.id, &ep, t0, NextStep::RetryAt(t0 + hours(3)))], HOUR);
    assert!(off.await.unwrap().disabled.is_empty());
    // …then a failure past `disable_after`, and a success after it, recorded together.
    let t1 = t0 + hours(2);
    let batch = vec![
        outcome(&m2.id, &ep, t1, NextStep::RetryAt(t1 + hours(1))),
        outcome(&m3.id, &ep, t1 + secs(1), NextStep::Succeeded),
    ];
    assert!(store.record_attempts(batch, HOUR).await.unwrap().disabled.is_empty());
    let e = endpoint_now(store, &ep).await;
    assert_eq!((e.disabled, e.failing_since), (false, None));
}

/// An endpoint that failed, then had no attempt for a day or more, is not disabled by its
/// next failure as though it had failed all along: its streak starts afresh. One failing
/// without such a gap for longer than `disable_after` is disabled.
pub async fn a_quiet_endpoint_starts_its_failure_streak_afresh(store: &DynStore) {
    let t0 = now_ms();
    let disable_after = Duration::from_secs(5 * 24 * 3600);
    let app = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &app.id).await;
    let m = post(store, &app.id, &[&ep], t0).await;
    let fail_at = |at: DateTime<Utc>, next_at: DateTime<Utc>| {
        let (store, m, ep) = (store.clone(), m.clone(), ep.clone());
        async move {
            assert_eq!(claim(&store, at).await.len(), 1, "due at {at}");
            let recorded =
                store.record_attempts(vec![outcome(&m.id, &ep, at, NextStep::RetryAt(next_at))], disable_after);
            recorded.await.unwrap().disabled
        }
    };
    assert!(fail_at(t0, t0 + hours(7 * 24)).await.is_empty());
    assert_eq!(endpoint_now(store, &ep).await.failing_since, Some(t0));
    // A week later, after no attempt at all: a new streak, not a disabling.
    let t1 = t0 + hours(7 * 24);
    assert!(fail_at(t1, t1 + hours(23)).await.is_empty(), "a quiet endpoint is not disabled");
    let e = endpoint_now(store, &ep).await;
    assert_eq!((e.failing_since, e.disabled), (Some(t1), false));
    // Failing every 23 hours from then on: disabled once the streak is 5 days old.
    let mut at = t1 + hours(23);
    while at - t1 < chrono::Duration::from_std(disable_after).unwrap() {
        assert!(fail_at(at, at + hours(23)).await.is_empty(), "{}", at - t1);
        at += hours(23);
    }
    let disabled: Vec<String> = fail_at(at, at + hours(23)).await.into_iter().map(|(id, _)| id).collect();
    assert_eq!(disabled, vec![ep.id.clone()]);
    let e = endpoint_now(store, &ep).await;
    assert_eq!((e.failing_since, e.disabled), (Some(t1), true));

    // A gap ends a streak even when the failure after it would not yet disable.
    let short = setup_endpoint(store, &app.id).await;
    let m2 = post(store, &app.id, &[&short], t0).await;
    for (at, next_at) in [(t0, t0 + hours(96)), (t0 + hours(96), t0 + hours(106))] {
        assert_eq!(job_keys(&claim(store, at).await), set([pair(&m2, &short)]));
        let out = store.record_attempts(vec![outcome(&m2.id, &short, at, NextStep::RetryAt(next_at))], disable_after);
        assert!(out.await.unwrap().disabled.is_empty());
    }
    assert_eq!(endpoint_now(store, &short).await.failing_since, Some(t0 + hours(96)), "four quiet days");

    // A cancelled attempt (nothing was sent) is no sign of the endpoint's health.
    let cancelling = setup_endpoint(store, &app.id).await;
    let (m3, m4) = (post(store, &app.id, &[&cancelling], t0).await, post(store, &app.id, &[&cancelling], t0).await);
    let t2 = t0 + hours(7 * 24);
    // (The claims take the other endpoints' deliveries due by then too.)
    let claimed = job_keys(&claim(store, t0).await);
    assert!(claimed.contains(&pair(&m3, &cancelling)) && claimed.contains(&pair(&m4, &cancelling)));
    let fail = outcome(&m3.id, &cancelling, t0, NextStep::RetryAt(t2));
    let put_off = outcome(&m4.id, &cancelling, t0, NextStep::RetryAt(t2 - hours(1)));
    store.record_attempts(vec![fail, put_off], disable_after).await.unwrap();
    assert!(job_keys(&claim(store, t2 - hours(1)).await).contains(&pair(&m4, &cancelling)));
    let cancelled = AttemptOutcome {
        attempt: attempt(&m4.id, &cancelling, DeliveryStatus::Canceled, t2 - hours(1)),
        next: NextStep::Cancelled,
        lease: None,
        disable_endpoint: false,
        untried: false,
    };
    store.record_attempts(vec![cancelled], disable_after).await.unwrap();
    assert!(job_keys(&claim(store, t2).await).contains(&pair(&m3, &cancelling)));
    let out =
        store.record_attempts(vec![outcome(&m3.id, &cancelling, t2, NextStep::RetryAt(t2 + hours(1)))], disable_after);
    assert!(out.await.unwrap().disabled.is_empty(), "quiet but for a cancelled attempt");
    assert_eq!(endpoint_now(store, &cancelling).await.failing_since, Some(t2));
}

/// An attempt its endpoint's transformation cancelled ends the delivery (canceled, Svix's
/// status 4), and leaves the endpoint's failure streak as it was: running, or not.
pub async fn cancelled_attempts_end_deliveries_and_leave_streaks(store: &DynStore) {
    let t0 = now_ms();
    let app = setup_app(store, "A").await;
    let (failing, healthy) = (setup_endpoint(store, &app.id).await, setup_endpoint(store, &app.id).await);
    let m1 = post(store, &app.id, &[&failing], t0).await;
    assert_eq!(claim(store, t0 + secs(1)).await.len(), 1);
    let retry = NextStep::RetryAt(t0 + mins(30));
    store.record_attempts(vec![outcome(&m1.id, &failing, t0, retry)], HOUR).await.unwrap();
    assert_eq!(endpoint_now(store, &failing).await.failing_since, Some(t0));

    let m2 = post(store, &app.id, &[&failing, &healthy], t0).await;
    assert_eq!(job_keys(&claim(store, t0 + secs(2)).await), set([pair(&m2, &failing), pair(&m2, &healthy)]));
    let cancelled = |ep: &Endpoint| AttemptOutcome {
        attempt: attempt(&m2.id, ep, DeliveryStatus::Canceled, t0 + secs(2)),
        next: NextStep::Cancelled,
        lease: None,
        disable_endpoint: false,
        untried: false,
    };
    let off = store.record_attempts(vec![cancelled(&failing), cancelled(&healthy)], HOUR).await.unwrap();
    assert!(off.disabled.is_empty());
    for ep in [&failing, &healthy] {
        let d = delivery(store, &app.id, &m2.id, &ep.id).await;
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Canceled, 1), "the delivery is over");
    }
    let stats = store.endpoint_stats(&app.id, &healthy.id, None, None).await.unwrap();
    assert_eq!((stats.success, stats.fail, stats.canceled), (0, 0, 1));
    let canceled = AttemptFilter { status: Some(DeliveryStatus::Canceled), ..Default::default() };
    let listed = store.list_attempts(&app.id, &canceled, &PageRequest::default()).await.unwrap();
    assert_eq!(listed.items.len(), 2, "attempts keep their status");
    let t = store.attempt_timeline(&app.id, Some(&healthy.id), t0, t0 + hours(1), HOUR).await.unwrap();
    assert_eq!(t.iter().map(|b| (b.succeeded, b.failed, b.canceled)).collect::<Vec<_>>(), vec![(0, 0, 1)]);
    // A message whose deliveries were all cancelled is over without failing: canceled, and
    // not among the messages that succeeded.
    let done = Some(hooklane_store::MessageState::Canceled);
    let log = store.message_log(&app.id, &Default::default(), done, &PageRequest::default()).await.unwrap();
    let ids: Vec<&str> = log.items.iter().map(|m| m.message.id.as_str()).collect();
    assert_eq!(ids, vec![m2.id.as_str()]);
    assert_eq!((log.items[0].canceled, log.items[0].state()), (2, done));
    let succeeded = Some(hooklane_store::MessageState::Succeeded);
    let log = store.message_log(&app.id, &Default::default(), succeeded, &PageRequest::default()).await.unwrap();
    assert!(log.items.iter().all(|m| m.message.id != m2.id), "a cancelled message did not succeed");
    assert_eq!(endpoint_now(store, &failing).await.failing_since, Some(t0), "the streak still runs");
    assert_eq!(endpoint_now(store, &healthy).await.failing_since, None, "and none was started");
}

/// Svix's application list options: without endpoints, and with only disabled ones.
pub async fn list_apps_leaves_out_apps_by_their_endpoints(store: &DynStore) {
    setup_app(store, "None").await;
    let off = setup_app(store, "Off").await;
    let live = setup_app(store, "Live").await;
    let disabled = |app: &str| Endpoint { disabled: true, ..new_endpoint(app, None) };
    store.create_endpoint(disabled(&off.id)).await.unwrap();
    store.create_endpoint(disabled(&live.id)).await.unwrap();
    setup_endpoint(store, &live.id).await;
    let listed = |filter: AppListFilter| async move {
        let page = store.list_apps_where(&PageRequest::default(), filter).await.unwrap();
        page.items.into_iter().map(|a| a.name).collect::<BTreeSet<_>>()
    };
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(listed(AppListFilter::default()).await, names(&["None", "Off", "Live"]));
    let without = AppListFilter { without_endpoints: true, ..Default::default() };
    assert_eq!(listed(without).await, names(&["Off", "Live"]));
    let only_disabled = AppListFilter { only_disabled_endpoints: true, ..Default::default() };
    assert_eq!(listed(only_disabled).await, names(&["None", "Live"]));
    let both = AppListFilter { without_endpoints: true, only_disabled_endpoints: true };
    assert_eq!(listed(both).await, names(&["Live"]));
}

pub async fn abandon_deliveries_marks_failed(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let m1 = post(store, &app.id, &[&e1, &e2], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 2);
    let m2 = post(store, &app.id, &[&e1], t).await;

    // One leased delivery and one that was never claimed.
    store.abandon_deliveries(vec![unleased(&m1.id, &e1.id), unleased(&m2.id, &e1.id)]).await.unwrap();

    for m in [&m1, &m2] {
        let d = delivery(store, &app.id, &m.id, &e1.id).await;
        assert_eq!(d.status, DeliveryStatus::Fail);
        assert_eq!(d.attempts, 0, "abandoning makes no attempt");
        assert_eq!(d.next_attempt_at, None);
    }
    // (Still pending, and leased: read as being sent.)
    assert_eq!(delivery(store, &app.id, &m1.id, &e2.id).await.status, DeliveryStatus::Sending, "others untouched");
    let atts = store.list_attempts(&app.id, &AttemptFilter::default(), &PageRequest::default()).await.unwrap();
    assert!(atts.items.is_empty(), "no attempt is recorded");

    let later = claim(store, t + hours(1)).await;
    assert_eq!(job_keys(&later), set([pair(&m1, &e2)]), "abandoned deliveries are never claimed");
    store.abandon_deliveries(vec![]).await.expect("an empty batch is fine");

    // A delivery that already finished keeps its outcome: abandoning only fails pending ones.
    store.record_attempts(vec![outcome(&m1.id, &e2, t + hours(1), NextStep::Succeeded)], HOUR).await.unwrap();
    store.abandon_deliveries(vec![unleased(&m1.id, &e2.id)]).await.unwrap();
    let d = delivery(store, &app.id, &m1.id, &e2.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Success, 1), "a succeeded delivery must not turn failed");
    // Unknown keys are ignored.
    store.abandon_deliveries(vec![unleased(&new_id(ids::MESSAGE), &e1.id)]).await.unwrap();
}

pub async fn defer_deliveries_hands_back(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let msg = post(store, &app.id, &[&e1, &e2], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 2);
    store.record_attempts(vec![outcome(&msg.id, &e2, t + secs(1), NextStep::Succeeded)], HOUR).await.unwrap();

    // e1 is leased for LEASE; hand it back for later than the lease would have run.
    let due = t + mins(5);
    store.defer_deliveries(vec![unleased(&msg.id, &e1.id), unleased(&msg.id, &e2.id)], due).await.unwrap();

    let d = delivery(store, &app.id, &msg.id, &e1.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0), "deferring makes no attempt");
    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(due));
    assert!(claim(store, t + mins(2)).await.is_empty(), "not claimable before the deferred time");
    assert_eq!(job_keys(&claim(store, due).await), set([pair(&msg, &e1)]));
    let d = delivery(store, &app.id, &msg.id, &e2.id).await;
    assert_eq!(d.status, DeliveryStatus::Success, "a finished delivery is not revived by defer");
}

pub async fn hasten_deliveries_makes_paused_ones_due(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let soon = post(store, &app.id, &[&e1], t).await;
    let late = post(store, &app.id, &[&e1], t).await;
    let leased = post(store, &app.id, &[&e1], t).await;
    let other = post(store, &app.id, &[&e2], t).await;
    let done = post(store, &app.id, &[&e1], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 5);
    store.record_attempts(vec![outcome(&done.id, &e1, t + secs(1), NextStep::Succeeded)], HOUR).await.unwrap();
    // Paused: `soon` and `other` until t+2m, `late` until t+10m; `leased` stays leased.
    let keys = |m: &[(&Message, &Endpoint)]| m.iter().map(|(m, e)| unleased(&m.id, &e.id)).collect::<Vec<_>>();
    store.defer_deliveries(keys(&[(&soon, &e1), (&other, &e2)]), t + mins(2)).await.unwrap();
    store.defer_deliveries(keys(&[(&late, &e1)]), t + mins(10)).await.unwrap();

    let now = t + secs(2);
    assert_eq!(store.hasten_deliveries(&e1.id, t + mins(5), now).await.unwrap(), 1, "only `soon`");
    assert_eq!(job_keys(&claim(store, now).await), set([pair(&soon, &e1)]), "due now; the rest keep their times");
    assert_eq!(delivery(store, &app.id, &late.id, &e1.id).await.next_attempt_at, Some(t + mins(10)));
    assert_eq!(delivery(store, &app.id, &other.id, &e2.id).await.next_attempt_at, Some(t + mins(2)));
    let d = delivery(store, &app.id, &leased.id, &e1.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Sending, 0), "a leased delivery is left to its lease");
    assert_eq!(store.hasten_deliveries(&e1.id, t + mins(5), now).await.unwrap(), 0, "nothing left to hasten");
    let d = delivery(store, &app.id, &done.id, &e1.id).await;
    assert_eq!((d.status, d.next_attempt_at), (DeliveryStatus::Success, None), "a finished delivery stays finished");
}

/// Handed back at two instants for the endpoint's cap, and a retry due between them: only
/// the handed-back ones are made due; the retry keeps its time.
pub async fn undefer_deliveries_takes_back_only_what_was_handed_back(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let (e1, e2) = (setup_endpoint(store, &app.id).await, setup_endpoint(store, &app.id).await);
    let a = post(store, &app.id, &[&e1], t).await;
    let b = post(store, &app.id, &[&e1], t).await;
    let retry = post(store, &app.id, &[&e1], t).await;
    let other = post(store, &app.id, &[&e2], t).await;
    let leased = post(store, &app.id, &[&e1], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 5);
    let (first, second) = (t + secs(2), t + secs(2) + chrono::Duration::milliseconds(300));
    store.defer_deliveries(vec![unleased(&a.id, &e1.id), unleased(&other.id, &e2.id)], first).await.unwrap();
    store.defer_deliveries(vec![unleased(&b.id, &e1.id)], second).await.unwrap();
    let between = t + secs(2) + chrono::Duration::milliseconds(100);
    store.record_attempts(vec![outcome(&retry.id, &e1, t + secs(1), NextStep::RetryAt(between))], HOUR).await.unwrap();

    let now = t + secs(1) + chrono::Duration::milliseconds(500);
    assert_eq!(store.undefer_deliveries(&e1.id, vec![first, second], now).await.unwrap(), 2);
    assert_eq!(job_keys(&claim(store, now).await), set([pair(&a, &e1), pair(&b, &e1)]));
    assert_eq!(
        delivery(store, &app.id, &retry.id, &e1.id).await.next_attempt_at,
        Some(between),
        "the retry keeps its time"
    );
    assert_eq!(delivery(store, &app.id, &other.id, &e2.id).await.next_attempt_at, Some(first), "another endpoint's");
    let d = delivery(store, &app.id, &leased.id, &e1.id).await;
    assert_eq!(d.status, DeliveryStatus::Sending, "a leased one is left to its lease (read as being sent)");
    assert_eq!(store.undefer_deliveries(&e1.id, vec![first, second], now).await.unwrap(), 0);
}

pub async fn resend_requeues_and_is_scoped(store: &DynStore) {
    let t = now_ms();
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let e1 = setup_endpoint(store, &a.id).await;
    let eb = setup_endpoint(store, &b.id).await;
    let msg = post(store, &a.id, &[&e1], t).await;
    let mb = post(store, &b.id, &[&eb], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 2);
    store
        .record_attempts(
            vec![
                outcome(&msg.id, &e1, t + secs(1), NextStep::GiveUp),
                outcome(&mb.id, &eb, t + secs(1), NextStep::Succeeded),
            ],
            HOUR,
        )
        .await
        .unwrap();
    assert_eq!(delivery(store, &a.id, &msg.id, &e1.id).await.status, DeliveryStatus::Fail);

    // Resending a failed delivery queues it again, as a manual one.
    let now = t + mins(1);
    store.resend(&a.id, &msg.id, &e1.id, now).await.unwrap();
    let d = delivery(store, &a.id, &msg.id, &e1.id).await;
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.trigger, TriggerType::Manual);
    let jobs = claim(store, now).await;
    assert_eq!(job_keys(&jobs), set([pair(&msg, &e1)]));
    assert_eq!(jobs[0].delivery.trigger, TriggerType::Manual);
    assert_eq!(*jobs[0].message, msg);

    // Resending to an endpoint created after the message creates the delivery.
    let late = setup_endpoint(store, &a.id).await;
    store.resend(&a.id, &msg.id, &late.id, now).await.unwrap();
    assert_eq!(store.message_deliveries(&a.id, &msg.id).await.unwrap().len(), 2);
    let d = delivery(store, &a.id, &msg.id, &late.id).await;
    assert_eq!((d.status, d.trigger), (DeliveryStatus::Pending, TriggerType::Manual));
    assert_eq!(job_keys(&claim(store, now).await), set([pair(&msg, &late)]));

    // Nothing crosses applications, and unknown ids are not found.
    assert_not_found(store.resend(&b.id, &msg.id, &eb.id, now).await, "A's message through B");
    assert_not_found(store.resend(&a.id, &msg.id, &eb.id, now).await, "B's endpoint through A");
    assert_not_found(store.resend(&b.id, &mb.id, &e1.id, now).await, "A's endpoint through B");
    assert_not_found(store.resend(&b.id, &msg.id, &e1.id, now).await, "A's message and endpoint through B");
    assert_not_found(store.resend(&a.id, &new_id(ids::MESSAGE), &e1.id, now).await, "unknown message");
    assert_not_found(store.resend(&a.id, &msg.id, &new_id(ids::ENDPOINT), now).await, "unknown endpoint");
    assert_eq!(store.message_deliveries(&a.id, &msg.id).await.unwrap().len(), 2);
    let only_b = store.message_deliveries(&b.id, &mb.id).await.unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].0.status, DeliveryStatus::Success, "B's delivery untouched");
    assert_eq!(claim(store, now + hours(2)).await.len(), 2, "only the two resends are queued");
}

/// A resend made while the delivery's attempt is on the wire: the late outcome of that
/// attempt is logged but must not finish the delivery, or the resend would never be sent.
pub async fn resend_during_an_attempt_survives_its_outcome(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let (e1, e2, e3) = (
        setup_endpoint(store, &app.id).await,
        setup_endpoint(store, &app.id).await,
        setup_endpoint(store, &app.id).await,
    );
    // e1 starts out failing: the late success ends its streak, whatever happens to the delivery.
    let earlier = post(store, &app.id, &[&e1], t - secs(10)).await;
    assert_eq!(claim(store, t - secs(9)).await.len(), 1);
    store.record_attempts(vec![outcome(&earlier.id, &e1, t - secs(9), NextStep::GiveUp)], HOUR).await.unwrap();
    assert_eq!(endpoint_now(store, &e1).await.failing_since, Some(t - secs(9)));
    let msg = post(store, &app.id, &[&e1, &e2, &e3], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 3, "all three on the wire");
    let resent_at = t + secs(2);
    store.resend(&app.id, &msg.id, &e1.id, resent_at).await.unwrap();
    store.resend(&app.id, &msg.id, &e2.id, resent_at).await.unwrap();

    // Successes only (PostgreSQL records these with its one-statement path), then a failure.
    let late = [
        outcome(&msg.id, &e1, t + secs(3), NextStep::Succeeded),
        outcome(&msg.id, &e3, t + secs(3), NextStep::Succeeded),
    ];
    let recorded = store.record_attempts(late.to_vec(), HOUR).await.unwrap();
    assert_eq!(recorded.set_aside, vec![key(&msg.id, &e1.id)], "e1's outcome is set aside, e3's is not");
    let failed = outcome(&msg.id, &e2, t + secs(3), NextStep::RetryAt(t + hours(1)));
    let recorded = store.record_attempts(vec![failed.clone()], HOUR).await.unwrap();
    assert_eq!(recorded.set_aside, vec![key(&msg.id, &e2.id)], "on the path that records failures too");

    for ep in [&e1, &e2] {
        let d = delivery(store, &app.id, &msg.id, &ep.id).await;
        assert_eq!(
            (d.status, d.attempts, d.trigger, d.next_attempt_at),
            (DeliveryStatus::Pending, 0, TriggerType::Manual, Some(resent_at)),
            "the resend stands after the late outcome"
        );
    }
    let d = delivery(store, &app.id, &msg.id, &e3.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Success, 1), "a delivery not resent is recorded as ever");
    assert_eq!(endpoint_now(store, &e1).await.failing_since, None, "the late success still counts for its endpoint");
    for a in late.iter().chain([&failed]) {
        let logged = store.get_attempt(&app.id, &msg.id, &a.attempt.id).await.unwrap();
        assert_eq!(logged.as_ref(), Some(&a.attempt), "the late attempt is still logged");
    }

    // The resends go out, and their own outcomes finish the deliveries.
    let jobs = claim(store, t + secs(3)).await;
    assert_eq!(job_keys(&jobs), set([pair(&msg, &e1), pair(&msg, &e2)]));
    assert!(jobs.iter().all(|j| j.delivery.trigger == TriggerType::Manual));
    let sent = vec![
        outcome(&msg.id, &e1, t + secs(4), NextStep::Succeeded),
        outcome(&msg.id, &e2, t + secs(4), NextStep::GiveUp),
    ];
    store.record_attempts(sent, HOUR).await.unwrap();
    let d = delivery(store, &app.id, &msg.id, &e1.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Success, 1));
    let d = delivery(store, &app.id, &msg.id, &e2.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Fail, 1));
    assert!(claim(store, t + hours(2)).await.is_empty(), "nothing left to send");
}

pub async fn recover_requeues_failed_in_window(store: &DynStore) {
    let t = now_ms();
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let ep = setup_endpoint(store, &a.id).await;
    let other = setup_endpoint(store, &a.id).await;
    let m1 = post(store, &a.id, &[&ep], t - mins(180)).await; // before the window
    let m2 = post(store, &a.id, &[&ep], t - mins(120)).await; // exactly at `since`: in
    let m3 = post(store, &a.id, &[&ep], t - mins(60)).await; // in
    let m4 = post(store, &a.id, &[&ep], t - mins(50)).await; // in, but succeeded
    let m5 = post(store, &a.id, &[&ep], t - mins(40)).await; // exactly at `until`: out
    let m6 = post(store, &a.id, &[&other], t - mins(60)).await; // in, other endpoint
    let jobs = claim(store, t + secs(1)).await;
    assert_eq!(jobs.len(), 6);
    let outcomes = jobs
        .iter()
        .map(|j| {
            let e = if j.delivery.endpoint_id == ep.id { &ep } else { &other };
            let next = if j.delivery.msg_id == m4.id { NextStep::Succeeded } else { NextStep::GiveUp };
            outcome(&j.delivery.msg_id, e, t, next)
        })
        .collect();
    store.record_attempts(outcomes, Duration::from_secs(365 * 24 * 3600)).await.unwrap();
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None);

    // Another application cannot recover A's endpoint.
    match store.recover(&b.id, &ep.id, (t - mins(500), None), t, ("", 1000)).await {
        Ok((0, None)) | Err(StoreError::NotFound) => {}
        r => panic!("recover through another app: {r:?}"),
    }
    assert_eq!(store.next_due_at(&[]).await.unwrap(), None, "nothing re-queued through B");

    let n = store.recover(&a.id, &ep.id, (t - mins(120), Some(t - mins(40))), t, ("", 1000)).await.unwrap();
    assert_eq!(n, (2, None), "m2 and m3, and no more to look at");
    let status = |m: &Message, e: &Endpoint| {
        let (s, app, m, e) = (store.clone(), a.id.clone(), m.id.clone(), e.id.clone());
        async move { delivery(&s, &app, &m, &e).await.status }
    };
    assert_eq!(status(&m1, &ep).await, DeliveryStatus::Fail);
    assert_eq!(status(&m2, &ep).await, DeliveryStatus::Pending);
    assert_eq!(status(&m3, &ep).await, DeliveryStatus::Pending);
    assert_eq!(status(&m4, &ep).await, DeliveryStatus::Success);
    assert_eq!(status(&m5, &ep).await, DeliveryStatus::Fail);
    assert_eq!(status(&m6, &other).await, DeliveryStatus::Fail);
    assert_eq!(job_keys(&claim(store, t + secs(1)).await), set([pair(&m2, &ep), pair(&m3, &ep)]));

    // Open-ended: everything failed since, and only failed ones (m2, m3 are pending now); in
    // rounds of one, in the order the messages were stored.
    let n = store.recover(&a.id, &ep.id, (t - mins(240), None), t, ("", 1)).await.unwrap();
    assert_eq!((n, status(&m1, &ep).await), ((1, Some(m1.id.clone())), DeliveryStatus::Pending));
    assert_eq!(status(&m5, &ep).await, DeliveryStatus::Fail, "not in the first round");
    let then = store.recover(&a.id, &ep.id, (t - mins(240), None), t, (&m1.id, 1)).await.unwrap();
    assert_eq!(then, (1, Some(m5.id.clone())), "then m5, after m1");
    let after_m5 = store.recover(&a.id, &ep.id, (t - mins(240), None), t, (&m5.id, 1)).await.unwrap();
    assert_eq!(after_m5, (0, None));
    // With nothing failed left to look at, a round ends the recovery. (A round whose
    // selected deliveries all changed meanwhile, which only concurrent PostgreSQL
    // transactions can make, goes on after them: the store answers the last it looked at.)
    let (queued, next) = store.recover(&a.id, &ep.id, (t - mins(240), None), t, ("", 2)).await.unwrap();
    assert_eq!((queued, next), (0, None), "nothing failed is left to look at");
    assert_eq!(job_keys(&claim(store, t + secs(1)).await), set([pair(&m1, &ep), pair(&m5, &ep)]));
    assert_eq!(status(&m4, &ep).await, DeliveryStatus::Success);
    assert_eq!(status(&m6, &other).await, DeliveryStatus::Fail);
    assert_eq!(
        store.recover(&a.id, &ep.id, (t - mins(240), None), t, ("", 1000)).await.unwrap(),
        (0, None),
        "nothing failed is left"
    );
}

/// An outcome made under a lease that ran out, recorded after another claim took the
/// delivery under a lease of its own, leaves that claim's state (another node may be
/// sending it): it is set aside, its attempt kept; the newer lease's outcome moves it on.
pub async fn an_outcome_under_a_lost_lease_is_set_aside(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &app.id).await;
    let msg = post(store, &app.id, &[&ep], t).await;
    let first = claim(store, t + secs(1)).await;
    assert_eq!(first.len(), 1);
    let lease = |job: &Job| job.delivery.next_attempt_at.expect("a claimed job names its lease");
    let lost = lease(&first[0]);
    assert_eq!(lost, t + secs(1) + chrono::Duration::from_std(LEASE).unwrap(), "the lease's end");
    let second = claim(store, lost + secs(1)).await;
    assert_eq!(job_keys(&second), set([pair(&msg, &ep)]), "taken over once the lease ran out");
    let held = lease(&second[0]);
    assert_ne!(held, lost);

    let mut late = outcome(&msg.id, &ep, lost + secs(2), NextStep::GiveUp);
    late.lease = Some(lost);
    let recorded = store.record_attempts(vec![late], HOUR).await.unwrap();
    assert_eq!(recorded.set_aside, vec![key(&msg.id, &ep.id)]);
    let d = delivery(store, &app.id, &msg.id, &ep.id).await;
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Sending, 0), "the second claim's, untouched");
    assert!(claim(store, held - secs(1)).await.is_empty(), "still leased to the second claim");
    let by_ep = AttemptFilter { endpoint_id: Some(ep.id.clone()), ..Default::default() };
    let logged = store.list_attempts(&app.id, &by_ep, &PageRequest::default()).await.unwrap().items;
    assert_eq!(logged.len(), 1, "the late attempt is logged");

    let mut current = outcome(&msg.id, &ep, lost + secs(3), NextStep::Succeeded);
    current.lease = Some(held);
    let recorded = store.record_attempts(vec![current], HOUR).await.unwrap();
    assert!(recorded.set_aside.is_empty());
    assert_eq!(delivery(store, &app.id, &msg.id, &ep.id).await.status, DeliveryStatus::Success);

    // Later still, the first claim's outcome finds the delivery finished by the second: it
    // neither fails it nor queues it again.
    for next in [NextStep::GiveUp, NextStep::RetryAt(lost + mins(1))] {
        let mut later = outcome(&msg.id, &ep, lost + secs(4), next.clone());
        later.lease = Some(lost);
        let recorded = store.record_attempts(vec![later], HOUR).await.unwrap();
        assert_eq!(recorded.set_aside, vec![key(&msg.id, &ep.id)], "{next:?}");
        assert_eq!(delivery(store, &app.id, &msg.id, &ep.id).await.status, DeliveryStatus::Success, "{next:?}");
    }
}

/// A hand-back or an abandonment under a lease that ran out (another claim holds the
/// delivery now) changes nothing; under the lease in force it does.
pub async fn a_hand_back_under_a_lost_lease_changes_nothing(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &app.id).await;
    let msg = post(store, &app.id, &[&ep], t).await;
    let lease = |jobs: &[Job]| {
        assert_eq!(jobs.len(), 1);
        jobs[0].delivery.next_attempt_at.expect("a claimed job names its lease")
    };
    let lost = lease(&claim(store, t + secs(1)).await);
    let held = lease(&claim(store, lost + secs(1)).await);
    let claimed = |lease| ClaimedKey { key: key(&msg.id, &ep.id), lease: Some(lease) };

    store.defer_deliveries(vec![claimed(lost)], t + mins(30)).await.unwrap();
    store.abandon_deliveries(vec![claimed(lost)]).await.unwrap();
    let d = delivery(store, &app.id, &msg.id, &ep.id).await;
    // (Leased: read as being sent, with no time of its own.)
    assert_eq!((d.status, d.next_attempt_at), (DeliveryStatus::Sending, None), "the second claim's, untouched");
    assert!(claim(store, held - secs(1)).await.is_empty(), "still leased to the second claim");

    // Under the lease in force: handed back, due then.
    store.defer_deliveries(vec![claimed(held)], held + mins(5)).await.unwrap();
    let d = delivery(store, &app.id, &msg.id, &ep.id).await;
    assert_eq!((d.status, d.next_attempt_at), (DeliveryStatus::Pending, Some(held + mins(5))));
    // Handed back, it is no longer under that lease: a second hand-back of the same job
    // changes nothing either.
    store.defer_deliveries(vec![claimed(held)], held + mins(1)).await.unwrap();
    store.abandon_deliveries(vec![claimed(held)]).await.unwrap();
    let d = delivery(store, &app.id, &msg.id, &ep.id).await;
    assert_eq!((d.status, d.next_attempt_at), (DeliveryStatus::Pending, Some(held + mins(5))));

    // Claimed again and abandoned under that claim's lease: failed.
    let third = lease(&claim(store, held + mins(5)).await);
    store.abandon_deliveries(vec![claimed(third)]).await.unwrap();
    assert_eq!(delivery(store, &app.id, &msg.id, &ep.id).await.status, DeliveryStatus::Fail);
}

pub async fn release_all_leases_frees_leased_only(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let e3 = setup_endpoint(store, &app.id).await;
    let done = setup_endpoint(store, &app.id).await;
    let later = setup_endpoint(store, &app.id).await;
    let msg = post(store, &app.id, &[&e1, &e2, &e3, &done, &later], t).await;
    assert_eq!(store.claim_due(t + secs(1), 100, HOUR, &ClaimRoom::default()).await.unwrap().len(), 5);
    let retry_at = t + chrono::Duration::days(1);
    store
        .record_attempts(
            vec![
                outcome(&msg.id, &done, t + secs(1), NextStep::Succeeded),
                outcome(&msg.id, &later, t + secs(1), NextStep::RetryAt(retry_at)),
            ],
            Duration::from_secs(7 * 24 * 3600),
        )
        .await
        .unwrap();
    // Leased for an hour, so nothing is claimable soon.
    assert!(claim(store, now_ms() + secs(2)).await.is_empty());
    // Created already leased: released too.
    let pre = new_message(&app.id, "user.created", t);
    store.create_message(pre.clone(), vec![e1.id.clone()], Some(t + hours(1))).await.unwrap();

    assert_eq!(store.release_all_leases().await.unwrap(), 4, "three claimed plus one created leased");

    // Claimed for two days, so that only `later` comes back at its retry time.
    let freed = store
        .claim_due(now_ms() + secs(2), 100, Duration::from_secs(2 * 24 * 3600), &ClaimRoom::default())
        .await
        .unwrap();
    assert_eq!(
        job_keys(&freed),
        set([pair(&msg, &e1), pair(&msg, &e2), pair(&msg, &e3), pair(&pre, &e1)]),
        "released deliveries are due at once; waiting and finished ones are not touched"
    );
    assert_eq!(delivery(store, &app.id, &msg.id, &done.id).await.status, DeliveryStatus::Success);
    let d = delivery(store, &app.id, &msg.id, &later.id).await;
    assert_eq!((d.status, d.next_attempt_at), (DeliveryStatus::Pending, Some(retry_at)));
    assert_eq!(job_keys(&claim(store, retry_at).await), set([pair(&msg, &later)]));
    // All five pending deliveries are leased again by the two claims above.
    assert_eq!(store.release_all_leases().await.unwrap(), 5);
    store
        .record_attempts(
            [&e1, &e2, &e3, &later].iter().map(|e| outcome(&msg.id, e, t, NextStep::Succeeded)).collect(),
            HOUR,
        )
        .await
        .unwrap();
    store.record_attempts(vec![outcome(&pre.id, &e1, t, NextStep::Succeeded)], HOUR).await.unwrap();
    assert_eq!(store.release_all_leases().await.unwrap(), 0, "no lease left");
}

// ---------------------------------------------------------------------------------------
// attempts

pub async fn attempts_list_filters_and_get(store: &DynStore) {
    let t = now_ms();
    let a = setup_app(store, "A").await;
    let b = setup_app(store, "B").await;
    let e1 = setup_endpoint(store, &a.id).await;
    let e2 = setup_endpoint(store, &a.id).await;
    let eb = setup_endpoint(store, &b.id).await;
    let m1 = post(store, &a.id, &[&e1, &e2], t).await;
    let mut m2 = new_message(&a.id, "invoice.paid", t);
    (m2.channels, m2.tags) = (Some(vec!["eu".into()]), Some(vec!["vip".into()]));
    store.create_message(m2.clone(), vec![e1.id.clone()], None).await.unwrap();
    let mb = post(store, &b.id, &[&eb], t).await;
    assert_eq!(claim(store, t + secs(1)).await.len(), 4);

    // In id (creation) order, with increasing times.
    let o = [
        outcome(&m1.id, &e1, t + secs(1), NextStep::RetryAt(t + secs(10))),
        outcome(&m1.id, &e2, t + secs(2), NextStep::GiveUp),
        outcome(&m2.id, &e1, t + secs(3), NextStep::Succeeded),
        outcome(&mb.id, &eb, t + secs(4), NextStep::Succeeded),
    ];
    store.record_attempts(o.to_vec(), HOUR).await.unwrap();
    assert_eq!(claim(store, t + secs(10)).await.len(), 1);
    let o5 = outcome(&m1.id, &e1, t + secs(10), NextStep::Succeeded);
    store.record_attempts(vec![o5.clone()], HOUR).await.unwrap();
    let [a1, a2, a3, ab] = o.map(|o| o.attempt);
    let a5 = o5.attempt;

    let list = |f: AttemptFilter| {
        let (s, app_id) = (store.clone(), a.id.clone());
        async move {
            let page = s.list_attempts(&app_id, &f, &page_req(50, None, false)).await.unwrap();
            assert!(page.done);
            page.items.into_iter().map(|x| x.id).collect::<Vec<_>>()
        }
    };
    let ids = |xs: &[&Attempt]| xs.iter().map(|x| x.id.clone()).collect::<Vec<_>>();

    assert_eq!(list(AttemptFilter::default()).await, ids(&[&a1, &a2, &a3, &a5]), "only this app's attempts");
    let m1f = AttemptFilter { msg_id: Some(m1.id.clone()), ..Default::default() };
    assert_eq!(list(m1f.clone()).await, ids(&[&a1, &a2, &a5]));
    let e1f = AttemptFilter { endpoint_id: Some(e1.id.clone()), ..Default::default() };
    assert_eq!(list(e1f).await, ids(&[&a1, &a3, &a5]));
    let ok = AttemptFilter { status: Some(DeliveryStatus::Success), ..Default::default() };
    assert_eq!(list(ok).await, ids(&[&a3, &a5]));
    let fail = AttemptFilter { status: Some(DeliveryStatus::Fail), ..Default::default() };
    assert_eq!(list(fail).await, ids(&[&a1, &a2]));
    let combo = AttemptFilter {
        msg_id: Some(m1.id.clone()),
        endpoint_id: Some(e1.id.clone()),
        status: Some(DeliveryStatus::Fail),
        ..Default::default()
    };
    assert_eq!(list(combo).await, ids(&[&a1]));
    let window = AttemptFilter { after: Some(t + millis(1500)), before: Some(t + millis(3500)), ..Default::default() };
    assert_eq!(list(window).await, ids(&[&a2, &a3]));
    let none = AttemptFilter { msg_id: Some(mb.id.clone()), ..Default::default() };
    assert!(list(none).await.is_empty(), "B's message is invisible through A");
    // By the class of the answer (the failures answered 503), and by their messages.
    let class = |c: u16| AttemptFilter { status_code_class: Some(c), ..Default::default() };
    assert_eq!(list(class(500)).await, ids(&[&a1, &a2]));
    assert_eq!(list(class(200)).await, ids(&[&a3, &a5]));
    assert!(list(class(400)).await.is_empty());
    assert!(list(class(0)).await.is_empty(), "every attempt was answered");
    let types = |t: &[&str]| AttemptFilter {
        event_types: Some(t.iter().map(|t| t.to_string()).collect()),
        ..Default::default()
    };
    assert_eq!(list(types(&["invoice.paid"])).await, ids(&[&a3]));
    assert_eq!(list(types(&["invoice.paid", "user.created"])).await, ids(&[&a1, &a2, &a3, &a5]));
    assert_eq!(list(AttemptFilter { channel: Some("eu".into()), ..Default::default() }).await, ids(&[&a3]));
    assert!(list(AttemptFilter { channel: Some("us".into()), ..Default::default() }).await.is_empty());
    assert_eq!(list(AttemptFilter { tag: Some("vip".into()), ..Default::default() }).await, ids(&[&a3]));
    let both = AttemptFilter { tag: Some("vip".into()), ..class(500) };
    assert!(list(both).await.is_empty());

    // Pagination.
    let p1 = store.list_attempts(&a.id, &m1f, &page_req(2, None, false)).await.unwrap();
    assert_eq!(p1.items.iter().map(|x| x.id.clone()).collect::<Vec<_>>(), ids(&[&a1, &a2]));
    assert!(!p1.done);
    let p2 = store.list_attempts(&a.id, &m1f, &page_req(2, Some(a2.id.clone()), false)).await.unwrap();
    assert_eq!(p2.items, vec![a5.clone()]);
    assert!(p2.done);
    let desc = all_pages(
        1,
        true,
        |x: &Attempt| x.id.clone(),
        |p| {
            let (s, app_id, f) = (store.clone(), a.id.clone(), m1f.clone());
            async move { s.list_attempts(&app_id, &f, &p).await }
        },
    )
    .await;
    assert_eq!(desc, vec![a5.clone(), a2.clone(), a1.clone()]);

    // get_attempt is scoped by app and message.
    assert_eq!(store.get_attempt(&a.id, &m1.id, &a1.id).await.unwrap(), Some(a1.clone()));
    assert_eq!(store.get_attempt(&a.id, &m2.id, &a3.id).await.unwrap(), Some(a3));
    assert_eq!(store.get_attempt(&b.id, &m1.id, &a1.id).await.unwrap(), None, "through another app");
    assert_eq!(store.get_attempt(&a.id, &m2.id, &a1.id).await.unwrap(), None, "through another message");
    assert_eq!(store.get_attempt(&a.id, &mb.id, &ab.id).await.unwrap(), None, "B's attempt through A");
    assert_eq!(store.get_attempt(&b.id, &mb.id, &ab.id).await.unwrap(), Some(ab));
    assert_eq!(store.get_attempt(&a.id, &m1.id, &new_id(ids::ATTEMPT)).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// tokens and idempotency keys

pub async fn tokens_map_to_principals(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let admin_hash = "8c6976e5b5410415bde908bd4dee15dfb167a9c873fc4bb8a81f6f2ab448a918";
    let app_hash = "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3";
    store.create_token(admin_hash.into(), Principal::Admin, t, None, None).await.unwrap();
    store.create_token(app_hash.into(), Principal::app(app.id.clone()), t, None, None).await.unwrap();

    assert_eq!(store.find_token(admin_hash, now_ms()).await.unwrap(), Some(Principal::Admin));
    assert_eq!(store.find_token(app_hash, now_ms()).await.unwrap(), Some(Principal::app(app.id.clone())));
    assert_eq!(store.find_token("0000", now_ms()).await.unwrap(), None);
    assert_eq!(store.find_token(&admin_hash.to_uppercase(), now_ms()).await.unwrap(), None, "hashes match exactly");

    assert_conflict(
        store.create_token(admin_hash.into(), Principal::app(app.id.clone()), t, None, None).await,
        "duplicate token hash",
    );
    assert_eq!(
        store.find_token(admin_hash, now_ms()).await.unwrap(),
        Some(Principal::Admin),
        "unchanged by the conflict"
    );

    // Expiry, and expiring an application's tokens early (never later than they would).
    let (short, long) = ("5e5e", "7a7a");
    store.create_token(short.into(), Principal::app(app.id.clone()), t, Some(t + mins(5)), None).await.unwrap();
    store.create_token(long.into(), Principal::app(app.id.clone()), t, Some(t + hours(5)), None).await.unwrap();
    assert_eq!(store.find_token(short, t + mins(4)).await.unwrap(), Some(Principal::app(app.id.clone())));
    assert_eq!(store.find_token(short, t + mins(5)).await.unwrap(), None, "expired");
    let other = setup_app(store, "B").await;
    store.create_token("b0b0".into(), Principal::app(other.id.clone()), t, None, None).await.unwrap();
    // Feature flags and capabilities are kept with the token.
    let limited = Principal::App {
        app_id: other.id.clone(),
        feature_flags: vec!["beta".to_string(), "internal".to_string()],
        capabilities: Some(vec![Capability::ViewBase, Capability::CreateAttempts]),
    };
    store.create_token("f1a9".into(), limited.clone(), t, None, None).await.unwrap();
    assert_eq!(store.find_token("f1a9", t).await.unwrap(), Some(limited));
    let none = Principal::App { app_id: other.id.clone(), feature_flags: vec![], capabilities: Some(vec![]) };
    store.create_token("f1aa".into(), none.clone(), t, None, None).await.unwrap();
    assert_eq!(store.find_token("f1aa", t).await.unwrap(), Some(none), "no capability is not every capability");
    // Tokens of sessions: naming sessions expires theirs only (another application's token
    // of the same session is left).
    for (hash, session) in [("5e51", "s1"), ("5e52", "s2")] {
        store.create_token(hash.into(), Principal::app(app.id.clone()), t, None, Some(session.into())).await.unwrap();
    }
    store.create_token("5e53".into(), Principal::app(other.id.clone()), t, None, Some("s1".into())).await.unwrap();
    let sessions = Some(vec!["s1".to_string(), "s9".to_string()]);
    assert_eq!(store.expire_app_tokens(&app.id, t + mins(30), sessions).await.unwrap(), 1);
    assert_eq!(store.find_token("5e51", t + mins(30)).await.unwrap(), None, "its session ended");
    assert!(store.find_token("5e52", t + mins(30)).await.unwrap().is_some(), "another session");
    assert!(store.find_token("5e53", t + mins(30)).await.unwrap().is_some(), "another application");
    assert!(store.find_token(app_hash, t + mins(30)).await.unwrap().is_some(), "a token of no session");
    assert_eq!(store.expire_app_tokens(&app.id, t + hours(1), Some(Vec::new())).await.unwrap(), 0, "no session");
    assert_eq!(store.expire_app_tokens(&app.id, t + hours(1), None).await.unwrap(), 5);
    assert_eq!(store.find_token(app_hash, t + mins(59)).await.unwrap(), Some(Principal::app(app.id.clone())));
    assert_eq!(store.find_token(app_hash, t + hours(1)).await.unwrap(), None, "expired early");
    assert_eq!(store.find_token(long, t + hours(1)).await.unwrap(), None, "expired early");
    assert!(store.find_token(short, t + mins(4)).await.unwrap().is_some(), "not moved earlier than asked");
    assert_eq!(store.find_token(short, t + mins(6)).await.unwrap(), None, "not extended");
    assert_eq!(store.find_token("b0b0", t + hours(2)).await.unwrap(), Some(Principal::app(other.id.clone())));
    assert_eq!(store.find_token(admin_hash, t + hours(2)).await.unwrap(), Some(Principal::Admin));
    // Logout.
    assert!(store.delete_token("b0b0").await.unwrap());
    assert_eq!(store.find_token("b0b0", now_ms()).await.unwrap(), None);
    assert!(!store.delete_token("b0b0").await.unwrap());
    // Housekeeping deletes expired tokens, and only those.
    let pruned = store.prune(t + hours(2), None, None, 100).await.unwrap();
    assert_eq!(pruned.tokens, 5, "{pruned:?}");
    assert_eq!(store.prune(t + hours(2), None, None, 100).await.unwrap().tokens, 0);
    assert_eq!(store.find_token(admin_hash, t + hours(2)).await.unwrap(), Some(Principal::Admin));

    // A polling endpoint's keys: kept as such; rotated away (only that endpoint's, never
    // later than they would expire); gone with the endpoint.
    let (ep1, ep2) = (setup_endpoint(store, &other.id).await, setup_endpoint(store, &other.id).await);
    let key = |ep: &Endpoint| Principal::Poller { app_id: other.id.clone(), endpoint_id: ep.id.clone() };
    store.create_token("c1c1".into(), key(&ep1), t, None, None).await.unwrap();
    store.create_token("c1c2".into(), key(&ep1), t, Some(t + mins(1)), None).await.unwrap();
    store.create_token("c2c2".into(), key(&ep2), t, None, None).await.unwrap();
    assert_eq!(store.find_token("c1c1", t).await.unwrap(), Some(key(&ep1)));
    assert_eq!(store.expire_poller_tokens(&other.id, &ep1.id, t + mins(5)).await.unwrap(), 2);
    assert_eq!(store.expire_poller_tokens(&app.id, &ep1.id, t).await.unwrap(), 0, "another application's");
    assert_eq!(store.find_token("c1c1", t + mins(4)).await.unwrap(), Some(key(&ep1)));
    assert_eq!(store.find_token("c1c1", t + mins(5)).await.unwrap(), None, "rotated away");
    assert_eq!(store.find_token("c1c2", t + mins(2)).await.unwrap(), None, "not extended");
    assert_eq!(store.find_token("c2c2", t + hours(3)).await.unwrap(), Some(key(&ep2)), "another endpoint's");
    store.delete_endpoint(&other.id, &ep2.id).await.unwrap();
    assert_eq!(store.find_token("c2c2", t).await.unwrap(), None, "deleted with its endpoint");
}

pub async fn claim_due_skips_saturated_endpoints(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "Skip").await;
    let busy = setup_endpoint(store, &app.id).await;
    let free = setup_endpoint(store, &app.id).await;
    for _ in 0..3 {
        post(store, &app.id, &[&busy, &free], t).await;
    }
    let lease = Duration::from_secs(60);
    let jobs = store.claim_due(t, 100, lease, &ClaimRoom::skipping(vec![busy.id.clone()])).await.unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.endpoint.id == free.id));
    // The skipped deliveries were left alone, not leased: claimable right away.
    let rest = store.claim_due(t, 100, lease, &ClaimRoom::default()).await.unwrap();
    assert_eq!(rest.len(), 3);
    assert!(rest.iter().all(|j| j.endpoint.id == busy.id));
}

/// A claim skips a listed endpoint however many of its deliveries are due, while the
/// others are still claimed; without a skip list, one endpoint's backlog does not crowd the
/// others out of a claim, and each endpoint's deliveries come oldest first.
pub async fn claim_due_skips_a_backlog_and_shares_fairly(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "Backlog").await;
    let big = setup_endpoint(store, &app.id).await;
    let small = setup_endpoint(store, &app.id).await;
    let mut backlog = Vec::new();
    for i in 0..60 {
        backlog.push(post(store, &app.id, &[&big], t - mins(10) + secs(i)).await);
    }
    let few: Vec<Message> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(post(store, &app.id, &[&small], t).await);
        }
        v
    };
    let now = t + secs(1);
    let of = |jobs: &[Job], ep: &Endpoint| {
        jobs.iter().filter(|j| j.endpoint.id == ep.id).map(|j| j.delivery.msg_id.clone()).collect::<BTreeSet<_>>()
    };

    // The big backlog is older, yet the small endpoint gets its share of a claim.
    let first = store.claim_due(now, 10, LEASE, &ClaimRoom::default()).await.unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(of(&first, &small), few.iter().map(|m| m.id.clone()).collect(), "the small endpoint gets all it has");
    let oldest: BTreeSet<String> = backlog[..5].iter().map(|m| m.id.clone()).collect();
    assert_eq!(of(&first, &big), oldest, "an endpoint's oldest deliveries go first");

    // Skipping the endpoint with the backlog: the other endpoint's new work is claimed,
    // none of the backlog is, and it is left untouched.
    let more = [post(store, &app.id, &[&small], t).await, post(store, &app.id, &[&small], t).await];
    let skipped = store.claim_due(now, 100, LEASE, &ClaimRoom::skipping(vec![big.id.clone()])).await.unwrap();
    assert_eq!(job_keys(&skipped), set([pair(&more[0], &small), pair(&more[1], &small)]));
    assert!(store.claim_due(now, 100, LEASE, &ClaimRoom::skipping(vec![big.id.clone()])).await.unwrap().is_empty());
    let d = delivery(store, &app.id, &backlog[59].id, &big.id).await;
    assert_eq!((d.status, d.attempts, d.next_attempt_at), (DeliveryStatus::Pending, 0, Some(backlog[59].created_at)));

    // With room for 3 more only, 3 of the backlog are claimed, whatever the limit, and the
    // rest of the claim goes to the others.
    let other = post(store, &app.id, &[&small], t).await;
    let room = ClaimRoom { skip: Vec::new(), most: [(big.id.clone(), 3)].into_iter().collect() };
    let some = store.claim_due(now, 100, LEASE, &room).await.unwrap();
    assert_eq!(of(&some, &big), backlog[5..8].iter().map(|m| m.id.clone()).collect());
    assert_eq!(of(&some, &small), BTreeSet::from([other.id.clone()]));

    // Without the skip, the rest of the backlog is there to claim, a limit at a time.
    let rest = store.claim_due(now, 47, LEASE, &ClaimRoom::default()).await.unwrap();
    assert_eq!(rest.len(), 47);
    assert!(rest.iter().all(|j| j.endpoint.id == big.id));
    let last = store.claim_due(now, 50, LEASE, &ClaimRoom::default()).await.unwrap();
    assert_eq!(of(&last, &big), backlog[55..].iter().map(|m| m.id.clone()).collect());
}

/// `next_due_at` leaves out the endpoints the poller skips: their backlog must not keep an
/// idle poller awake.
pub async fn next_due_at_ignores_skipped_endpoints(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "Idle").await;
    let dead = setup_endpoint(store, &app.id).await;
    let live = setup_endpoint(store, &app.id).await;
    for i in 0..20 {
        post(store, &app.id, &[&dead], t - mins(1) + secs(i)).await;
    }
    let msg = post(store, &app.id, &[&live], t).await;
    let skip_dead = std::slice::from_ref(&dead.id);
    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(t - mins(1)));
    assert_eq!(store.next_due_at(skip_dead).await.unwrap(), Some(t));

    let jobs = store.claim_due(t + secs(1), 100, LEASE, &ClaimRoom::skipping(skip_dead.to_vec())).await.unwrap();
    assert_eq!(job_keys(&jobs), set([pair(&msg, &live)]));
    assert_eq!(
        store.next_due_at(skip_dead).await.unwrap(),
        Some(t + secs(1) + chrono::Duration::from_std(LEASE).unwrap()),
        "the lease end"
    );
    store
        .record_attempts(vec![outcome(&msg.id, &live, t + secs(1), NextStep::RetryAt(t + mins(7)))], HOUR)
        .await
        .unwrap();
    assert_eq!(store.next_due_at(skip_dead).await.unwrap(), Some(t + mins(7)));
    assert_eq!(store.next_due_at(&[]).await.unwrap(), Some(t - mins(1)));
    assert_eq!(store.next_due_at(&[dead.id.clone(), live.id.clone()]).await.unwrap(), None);
}

/// A reported failure is noted on its delivery and taken once; a resend (which starts the
/// delivery's attempts over) keeps the note, so that the success after it is told as a
/// recovery.
pub async fn a_reported_failure_is_noted_until_taken(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "Told").await;
    let ep = setup_endpoint(store, &app.id).await;
    let (told, quiet) = (post(store, &app.id, &[&ep], t).await, post(store, &app.id, &[&ep], t).await);
    let key = |m: &Message| DeliveryKey::new(&m.id, &ep.id);
    store.note_failure_told(vec![key(&told), DeliveryKey::new("msg_missing", &ep.id)]).await.unwrap();
    store.resend(&app.id, &told.id, &ep.id, t + secs(1)).await.unwrap();
    assert!(store.take_failure_told(key(&told)).await.unwrap(), "noted, through the resend");
    assert!(!store.take_failure_told(key(&told)).await.unwrap(), "taken once");
    assert!(!store.take_failure_told(key(&quiet)).await.unwrap(), "never noted");
    assert!(store.note_failure_told(Vec::new()).await.is_ok());
}

/// An endpoint's rate bucket goes with it, and with its application: it is not left
/// behind for good (an endpoint made again under the same id, as the conformance suite may,
/// starts with a full bucket).
pub async fn rate_buckets_go_with_their_endpoint(store: &DynStore) {
    let t0 = now_ms();
    let far = t0 + chrono::Duration::hours(1);
    let app = setup_app(store, "Rates").await;
    let ep = setup_endpoint(store, &app.id).await;
    for deleted_with_app in [false, true] {
        // (A minute apart: the first round's last slot is long past in the second.)
        let t = if deleted_with_app { t0 + secs(60) } else { t0 };
        let app = if deleted_with_app { setup_app(store, "Rates 2").await } else { app.clone() };
        let ep = Endpoint { app_id: app.id.clone(), ..ep.clone() };
        if deleted_with_app {
            store.create_endpoint(ep.clone()).await.unwrap();
        }
        for _ in 0..5 {
            store.take_rate_slot(&ep.id, 1, t, far).await.unwrap();
        }
        assert_eq!(store.take_rate_slot(&ep.id, 1, t, far).await.unwrap(), RateSlot::Taken(t + secs(5)));
        if deleted_with_app {
            store.delete_app(&app.id).await.unwrap();
        } else {
            store.delete_endpoint(&app.id, &ep.id).await.unwrap();
        }
        assert_eq!(store.take_rate_slot(&ep.id, 1, t, far).await.unwrap(), RateSlot::Taken(t), "a fresh bucket");
    }
}

pub async fn rate_slots_are_spaced_after_a_burst(store: &DynStore) {
    let t = now_ms();
    let far = t + chrono::Duration::hours(1);
    let taken = |slot: RateSlot| slot.taken().expect("taken");
    // 10/s: an idle endpoint may burst one second's worth (10 slots: 9 already past and
    // one now), then slots are 100 ms apart.
    let mut slots = Vec::new();
    for _ in 0..11 {
        slots.push(taken(store.take_rate_slot("ep_rate", 10, t, far).await.unwrap()));
    }
    assert!(slots[..10].iter().all(|s| *s <= t), "{slots:?}");
    assert_eq!(slots[9], t, "{slots:?}");
    assert_eq!(slots[10], t + chrono::Duration::milliseconds(100));
    assert!(slots.windows(2).all(|w| w[1] - w[0] == chrono::Duration::milliseconds(100)), "{slots:?}");
    // Another endpoint has its own bucket.
    assert!(taken(store.take_rate_slot("ep_other", 10, t, far).await.unwrap()) <= t);
    // A slot later than the sender could use is not taken, and pushes nothing back: the
    // answer names when the next one starts.
    let next = t + chrono::Duration::milliseconds(200);
    let before_it = next - chrono::Duration::milliseconds(1);
    assert_eq!(store.take_rate_slot("ep_rate", 10, t, before_it).await.unwrap(), RateSlot::Busy(next));
    assert_eq!(store.take_rate_slot("ep_rate", 10, t, before_it).await.unwrap(), RateSlot::Busy(next));
    assert_eq!(store.take_rate_slot("ep_rate", 10, t, next).await.unwrap(), RateSlot::Taken(next), "still free");
    // After a long idle period the bucket is full again.
    let later = t + chrono::Duration::seconds(60);
    assert!(taken(store.take_rate_slot("ep_rate", 10, later, far).await.unwrap()) <= later);
    // 1/s: an idle endpoint's two sends are a second apart, never both at once.
    let first = taken(store.take_rate_slot("ep_one", 1, t, far).await.unwrap());
    assert_eq!(first, t);
    assert_eq!(store.take_rate_slot("ep_one", 1, t, far).await.unwrap(), RateSlot::Taken(t + secs(1)));
    // Rates that do not divide a millisecond keep their spacing: 400/s is 2.5 ms apart, and
    // 2,000/s (over a thousand) 0.5 ms.
    for (rate, us) in [(400, 2500), (2000, 500)] {
        let ep = format!("ep_rate_{rate}");
        let mut slots = Vec::new();
        for _ in 0..(rate + 3) {
            slots.push(taken(store.take_rate_slot(&ep, rate, t, far).await.unwrap()));
        }
        let tail = &slots[rate as usize..];
        assert!(tail.windows(2).all(|w| w[1] - w[0] == chrono::Duration::microseconds(us)), "{rate}/s: {tail:?}");
    }
}

pub async fn idempotency_lifecycle(store: &DynStore) {
    let t = now_ms();
    let ttl = Duration::from_secs(60);
    let resp = StoredResponse { status: 202, body: vec![b'{', 0, 0xff, 0xfe, b'}'] };
    let started = IdempotencyState::Started { resumes: None };
    // Taken again after the same request's hold, ending then, ran out unfinished.
    let resumes = |lease_end| IdempotencyState::Started { resumes: Some(lease_end) };
    let held_until = |lease_end| IdempotencyState::InFlight { held_until: Some(lease_end) };

    assert!(!store.idempotency_held("k1", t).await.unwrap(), "never taken");
    assert_eq!(store.idempotency_begin("k1", "f1", t, ttl).await.unwrap(), started);
    assert_eq!(store.idempotency_begin("k1", "f1", t + secs(1), ttl).await.unwrap(), held_until(t + secs(60)));
    assert!(store.idempotency_held("k1", t + secs(1)).await.unwrap(), "held while in flight");
    assert!(!store.idempotency_held("k1", t + secs(61)).await.unwrap(), "not past its hold");
    assert_eq!(store.idempotency_begin("k2", "f1", t, ttl).await.unwrap(), started, "keys are independent");
    store.idempotency_finish("k1", (t, ttl), resp.clone(), t + secs(60)).await.unwrap();
    assert!(!store.idempotency_held("k1", t + secs(2)).await.unwrap(), "not once finished");
    assert_eq!(
        store.idempotency_begin("k1", "f1", t + secs(2), ttl).await.unwrap(),
        IdempotencyState::Completed(resp.clone())
    );
    assert_eq!(
        store.idempotency_begin("k1", "f1", t + secs(3), ttl).await.unwrap(),
        IdempotencyState::Completed(resp.clone()),
        "replays as often as asked"
    );
    store.idempotency_abort("k1", (t, ttl)).await.unwrap();
    assert_eq!(
        store.idempotency_begin("k1", "f1", t + secs(4), ttl).await.unwrap(),
        IdempotencyState::Completed(resp.clone()),
        "abort does not forget a completed key"
    );

    // Abort frees an in-flight key for a new attempt.
    store.idempotency_abort("k2", (t, ttl)).await.unwrap();
    assert!(!store.idempotency_held("k2", t + secs(1)).await.unwrap(), "not once aborted");
    assert_eq!(store.idempotency_begin("k2", "f1", t + secs(1), ttl).await.unwrap(), started);
    assert_eq!(store.idempotency_begin("k2", "f1", t + secs(2), ttl).await.unwrap(), held_until(t + secs(61)));

    // Expiry: in-flight and completed keys both start afresh after their ttl.
    assert_eq!(store.idempotency_begin("k2", "f1", t + secs(30), ttl).await.unwrap(), held_until(t + secs(61)));
    assert_eq!(store.idempotency_begin("k2", "f1", t + secs(62), ttl).await.unwrap(), resumes(t + secs(61)));
    assert_eq!(
        store.idempotency_begin("k1", "f1", t + secs(59), ttl).await.unwrap(),
        IdempotencyState::Completed(resp)
    );
    assert_eq!(
        store.idempotency_begin("k1", "f1", t + secs(61), ttl).await.unwrap(),
        started,
        "a finished key resumes nothing"
    );
    assert_eq!(store.idempotency_begin("k1", "f1", t + secs(62), ttl).await.unwrap(), held_until(t + secs(121)));

    let empty = StoredResponse { status: 204, body: Vec::new() };
    store.idempotency_finish("k1", (t + secs(61), ttl), empty.clone(), t + secs(121)).await.unwrap();
    assert_eq!(
        store.idempotency_begin("k1", "f1", t + secs(63), ttl).await.unwrap(),
        IdempotencyState::Completed(empty)
    );

    // A key held for one request is refused to another, done or in flight; once the key
    // expires, the other request may take it.
    assert_eq!(store.idempotency_begin("k1", "f2", t + secs(64), ttl).await.unwrap(), IdempotencyState::Mismatch);
    assert_eq!(store.idempotency_begin("k3", "f1", t, ttl).await.unwrap(), started);
    assert_eq!(store.idempotency_begin("k3", "f2", t + secs(1), ttl).await.unwrap(), IdempotencyState::Mismatch);
    assert_eq!(store.idempotency_begin("k3", "f1", t + secs(1), ttl).await.unwrap(), held_until(t + secs(60)));
    assert_eq!(
        store.idempotency_begin("k3", "f2", t + secs(61), ttl).await.unwrap(),
        started,
        "another request's hold"
    );
    assert_eq!(store.idempotency_begin("k3", "f2", t + secs(62), ttl).await.unwrap(), held_until(t + secs(121)));

    // `ttl` is how long a request may hold the key in flight (one whose process died frees
    // it then); its answer is kept until the expiry `finish` gives, however much later.
    assert_eq!(store.idempotency_begin("k4", "f1", t, ttl).await.unwrap(), started);
    let kept = StoredResponse { status: 200, body: b"{}".to_vec() };
    store.idempotency_finish("k4", (t, ttl), kept.clone(), t + secs(3600)).await.unwrap();
    assert_eq!(
        store.idempotency_begin("k4", "f1", t + secs(120), ttl).await.unwrap(),
        IdempotencyState::Completed(kept)
    );
    assert_eq!(store.idempotency_begin("k4", "f1", t + secs(3601), ttl).await.unwrap(), started);

    // A request that outlived its hold, whose retry took the key, neither finishes nor
    // frees the retry's hold.
    assert_eq!(store.idempotency_begin("k5", "f1", t, ttl).await.unwrap(), started);
    assert_eq!(store.idempotency_begin("k5", "f1", t + secs(61), ttl).await.unwrap(), resumes(t + secs(60)));
    let late = StoredResponse { status: 200, body: b"late".to_vec() };
    store.idempotency_finish("k5", (t, ttl), late, t + secs(3600)).await.unwrap();
    store.idempotency_abort("k5", (t, ttl)).await.unwrap();
    assert_eq!(store.idempotency_begin("k5", "f1", t + secs(62), ttl).await.unwrap(), held_until(t + secs(121)));
    let own = StoredResponse { status: 201, body: b"own".to_vec() };
    store.idempotency_finish("k5", (t + secs(61), ttl), own.clone(), t + secs(3600)).await.unwrap();
    assert_eq!(store.idempotency_begin("k5", "f1", t + secs(63), ttl).await.unwrap(), IdempotencyState::Completed(own));
}

/// A hold that ran out unfinished (its request's process died, perhaps after its work was
/// done) is kept for a day past its lease end, so that a retry taking the key later is
/// still told of it; a finished key goes when its answer expires.
pub async fn idempotency_unfinished_holds_are_kept_a_day(store: &DynStore) {
    let t = now_ms();
    let ttl = Duration::from_secs(60);
    let kept = |pruned: Pruned| pruned.idempotency_keys;
    for key in ["unfinished", "finished", "retried"] {
        assert_eq!(
            store.idempotency_begin(key, "f1", t, ttl).await.unwrap(),
            IdempotencyState::Started { resumes: None }
        );
    }
    let answer = StoredResponse { status: 202, body: b"{}".to_vec() };
    store.idempotency_finish("finished", (t, ttl), answer, t + secs(61)).await.unwrap();
    assert_eq!(kept(store.prune(t + secs(61), None, None, 100).await.unwrap()), 1, "the finished key, expired");
    assert_eq!(kept(store.prune(t + hours(24), None, None, 100).await.unwrap()), 0, "unfinished ones are kept");
    // A day after its lease end, a retry is still told of the hold.
    assert_eq!(
        store.idempotency_begin("retried", "f1", t + hours(24), ttl).await.unwrap(),
        IdempotencyState::Started { resumes: Some(t + secs(60)) }
    );
    assert_eq!(kept(store.prune(t + secs(60) + hours(24), None, None, 100).await.unwrap()), 1, "a day past its end");
    assert_eq!(
        store.idempotency_begin("unfinished", "f1", t + hours(25), ttl).await.unwrap(),
        IdempotencyState::Started { resumes: None },
        "forgotten"
    );
}

// ---------------------------------------------------------------------------------------
// concurrency

pub async fn concurrent_create_message_all_durable(store: &DynStore) {
    const N: usize = 200;
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (s, app_id, e1, e2) = (store.clone(), app.id.clone(), e1.id.clone(), e2.id.clone());
        tasks.spawn(async move {
            let mut msg = new_message(&app_id, "user.created", t);
            msg.event_id = Some(format!("evt-{i}"));
            let eps = if i % 2 == 0 { vec![e1, e2] } else { vec![e1] };
            s.create_message(msg.clone(), eps, None).await.map(|_| msg)
        });
    }
    let mut created = Vec::new();
    while let Some(r) = tasks.join_next().await {
        created.push(r.expect("task").expect("every concurrent create_message succeeds"));
    }
    assert_eq!(created.len(), N);

    let listed = all_pages(
        50,
        false,
        |m: &Message| m.id.clone(),
        |p| {
            let (s, app_id) = (store.clone(), app.id.clone());
            async move { s.list_messages(&app_id, &MessageFilter::default(), &p).await }
        },
    )
    .await;
    assert_eq!(
        listed.iter().map(|m| m.id.clone()).collect::<BTreeSet<_>>(),
        created.iter().map(|m| m.id.clone()).collect::<BTreeSet<_>>()
    );
    for (i, m) in created.iter().enumerate().step_by(7) {
        assert_eq!(store.get_message(&app.id, &m.id).await.unwrap().as_ref(), Some(m), "message {i}");
        let by_event = store.get_message(&app.id, m.event_id.as_deref().unwrap()).await.unwrap();
        assert_eq!(by_event.as_ref(), Some(m));
    }
    let jobs = claim(store, t + secs(1)).await;
    assert_eq!(jobs.len(), N + N / 2, "every delivery was written");
    assert!(claim(store, t + secs(1)).await.is_empty());
}

pub async fn concurrent_duplicate_event_id_single_winner(store: &DynStore) {
    const N: usize = 24;
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &app.id).await;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..N {
        let (s, app_id, ep) = (store.clone(), app.id.clone(), ep.id.clone());
        tasks.spawn(async move {
            let mut msg = new_message(&app_id, "user.created", t);
            msg.event_id = Some("same".into());
            (msg.id.clone(), s.create_message(msg, vec![ep], None).await)
        });
    }
    let (mut winners, mut losers) = (Vec::new(), Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            (id, Ok(_)) => winners.push(id),
            (id, Err(StoreError::Conflict(_))) => losers.push(id),
            (_, Err(e)) => panic!("unexpected error: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one message with a given eventId is accepted");
    assert_eq!(losers.len(), N - 1);
    let stored = store.get_message(&app.id, "same").await.unwrap().expect("winner stored");
    assert_eq!(stored.id, winners[0]);
    for id in &losers {
        assert_eq!(store.get_message(&app.id, id).await.unwrap(), None);
        assert!(store.message_deliveries(&app.id, id).await.unwrap().is_empty());
    }
    let jobs = claim(store, t + secs(1)).await;
    assert_eq!(job_keys(&jobs), BTreeSet::from([(winners[0].clone(), ep.id.clone())]));
}

// ---------------------------------------------------------------------------------------
// statistics

/// An outcome like [`outcome`] whose attempt took `ms` milliseconds.
fn timed(msg_id: &str, ep: &Endpoint, at: DateTime<Utc>, next: NextStep, ms: i64) -> AttemptOutcome {
    let mut o = outcome(msg_id, ep, at, next);
    o.attempt.duration_ms = ms;
    o
}

pub async fn stats_ping_and_queue(store: &DynStore) {
    store.ping().await.expect("ping");
    let t = now_ms();
    let empty = store.queue_stats(t).await.unwrap();
    assert_eq!(
        (empty.due, empty.scheduled, empty.leased, empty.disabled_endpoints, empty.failing_endpoints),
        (0, 0, 0, 0, 0)
    );
    assert!(empty.failing.is_empty());

    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let first = post(store, &app.id, &[&e1, &e2], t).await;
    assert_eq!(claim(store, t).await.len(), 2);
    // Two more due later than the first are waiting; one of them is put off to a retry.
    let second = post(store, &app.id, &[&e1, &e2], t + secs(1)).await;
    let retry_at = t + mins(5);
    store
        .record_attempts(
            vec![
                outcome(&first.id, &e1, t + secs(1), NextStep::RetryAt(retry_at)),
                outcome(&first.id, &e2, t + secs(1), NextStep::Succeeded),
            ],
            HOUR,
        )
        .await
        .unwrap();
    let q = store.queue_stats(t + secs(2)).await.unwrap();
    assert_eq!((q.due, q.scheduled, q.leased), (2, 1, 0), "{q:?}");
    assert_eq!((q.failing.len(), q.failing_endpoints), (1, 1), "{q:?}");
    assert_eq!(q.failing[0].endpoint_id, e1.id);
    assert_eq!(q.failing[0].app_id, app.id);
    assert_eq!(q.failing[0].failing_since, t + secs(1));
    assert_eq!(q.failing[0].failed_attempts, 1);

    let jobs = claim(store, t + secs(2)).await;
    assert_eq!(job_keys(&jobs), set([pair(&second, &e1), pair(&second, &e2)]));
    let q = store.queue_stats(t + secs(2)).await.unwrap();
    assert_eq!((q.due, q.scheduled, q.leased), (0, 1, 2), "{q:?}");
    store
        .record_attempts(
            vec![
                outcome(&second.id, &e1, t + secs(3), NextStep::GiveUp),
                outcome(&second.id, &e2, t + secs(3), NextStep::Succeeded),
            ],
            HOUR,
        )
        .await
        .unwrap();
    let q = store.queue_stats(t + secs(4)).await.unwrap();
    assert_eq!((q.due, q.scheduled, q.leased), (0, 1, 0), "{q:?}");
    assert_eq!(q.failing[0].failed_attempts, 2, "a streak counts every failed attempt since it began");
    assert_eq!(store.queue_stats(retry_at).await.unwrap().due, 1, "the retry is due at its time");

    // A success ends the streak; a disabled endpoint is counted apart.
    assert_eq!(job_keys(&claim(store, retry_at).await), set([pair(&first, &e1)]));
    store.record_attempts(vec![outcome(&first.id, &e1, t + secs(5), NextStep::Succeeded)], HOUR).await.unwrap();
    let mut off = endpoint_now(store, &e2).await;
    off.disabled = true;
    store.update_endpoint(off, None).await.unwrap();
    let q = store.queue_stats(t + secs(6)).await.unwrap();
    assert!(q.failing.is_empty(), "{q:?}");
    assert_eq!((q.disabled_endpoints, q.failing_endpoints), (1, 0));
    assert_eq!((q.due, q.scheduled, q.leased), (0, 0, 0), "{q:?}");
}

/// Past the failing endpoints listed by name, the count still holds them all: a gauge capped at
/// the list's length would read the same at 500 and at 5,000.
pub async fn stats_count_every_failing_endpoint(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let over = hooklane_store::MAX_FAILING_REPORTED + 2;
    for i in 0..over {
        let mut ep = new_endpoint(&app.id, None);
        ep.failing_since = Some(t + millis(i as i64));
        store.create_endpoint(ep).await.expect("create endpoint");
    }
    let mut off = new_endpoint(&app.id, None);
    (off.failing_since, off.disabled) = (Some(t), true);
    store.create_endpoint(off).await.expect("create endpoint");
    let q = store.queue_stats(t + secs(1)).await.unwrap();
    assert_eq!(q.failing.len(), hooklane_store::MAX_FAILING_REPORTED);
    assert_eq!((q.failing_endpoints, q.disabled_endpoints), (over as u64, 1), "the disabled one is not failing");
}

pub async fn stats_endpoint_health(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let other = setup_app(store, "B").await;
    let fast = setup_endpoint(store, &app.id).await;
    let slow = setup_endpoint(store, &app.id).await;
    let idle = setup_endpoint(store, &app.id).await;
    let foreign = setup_endpoint(store, &other.id).await;
    let mut outcomes = Vec::new();
    for i in 0..10 {
        let msg = post(store, &app.id, &[&fast, &slow], t + millis(i)).await;
        outcomes.push(timed(&msg.id, &fast, t + secs(1) + millis(i), NextStep::Succeeded, 5 + i));
        let next = if i < 8 { NextStep::Succeeded } else { NextStep::GiveUp };
        outcomes.push(timed(&msg.id, &slow, t + secs(2) + millis(i), next, 400 + 100 * i));
    }
    let foreign_msg = post(store, &other.id, &[&foreign], t).await;
    outcomes.push(timed(&foreign_msg.id, &foreign, t + secs(1), NextStep::GiveUp, 1));
    // An old attempt outside the window is not counted.
    let old = post(store, &app.id, &[&fast], t - hours(3)).await;
    outcomes.push(timed(&old.id, &fast, t - hours(3), NextStep::GiveUp, 20_000));
    assert_eq!(claim(store, t + secs(1)).await.len(), outcomes.len(), "every delivery recorded was on the wire");
    store.record_attempts(outcomes, Duration::from_secs(30 * 24 * 3600)).await.unwrap();
    // One delivery still waiting for the idle endpoint.
    post(store, &app.id, &[&idle], t + secs(3)).await;

    let health = store.endpoint_health(&app.id, t - hours(1)).await.unwrap();
    let mut want: Vec<&str> = vec![&fast.id, &slow.id, &idle.id];
    want.sort();
    assert_eq!(health.iter().map(|h| h.endpoint_id.as_str()).collect::<Vec<_>>(), want, "every endpoint, in id order");
    let get = |id: &str| health.iter().find(|h| h.endpoint_id == id).unwrap().clone();

    let f = get(&fast.id);
    assert_eq!((f.succeeded, f.failed, f.pending), (10, 0, 0));
    assert_eq!(f.latency.total(), 10);
    assert_eq!(f.latency.counts[0], 6, "5..=10 ms fall in the first bucket: {:?}", f.latency);
    assert_eq!(f.latency.counts[1], 4, "11..=14 ms in the second: {:?}", f.latency);
    assert_eq!(f.latency.max_ms, 14);
    assert_eq!(f.last_attempt_at, Some(t + secs(1) + millis(9)));
    assert_eq!(f.last_failure_at, None);
    let p50 = f.latency.quantile(0.5).unwrap();
    assert!((0..=10).contains(&p50), "p50 {p50}");
    let p95 = f.latency.quantile(0.95).unwrap();
    assert!((10..=14).contains(&p95), "p95 {p95} stays within the slowest seen");

    let s = get(&slow.id);
    assert_eq!((s.succeeded, s.failed, s.pending), (8, 2, 0));
    assert_eq!(s.last_failure_at, Some(t + secs(2) + millis(9)));
    assert_eq!(s.latency.max_ms, 1300);
    assert_eq!(s.latency.total(), 10);
    let bucket = |ms: i64| LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
    assert_eq!(s.latency.counts[bucket(400)], 2, "400 and 500 ms share a bucket: {:?}", s.latency);
    assert_eq!(s.latency.counts[bucket(1000)], 5, "600..=1000 ms: {:?}", s.latency);
    assert_eq!(s.latency.counts[bucket(1300)], 3);
    let p95 = s.latency.quantile(0.95).unwrap();
    assert!((1000..=1300).contains(&p95), "p95 {p95}");

    let i = get(&idle.id);
    assert_eq!((i.succeeded, i.failed, i.pending), (0, 0, 1));
    assert_eq!(i.latency.quantile(0.5), None);
    assert_eq!(i.last_attempt_at, None);

    let all = store.endpoint_health(&app.id, t - hours(4)).await.unwrap();
    let f = all.iter().find(|h| h.endpoint_id == fast.id).unwrap();
    assert_eq!((f.succeeded, f.failed, f.latency.max_ms), (10, 1, 20_000), "a wider window takes the old attempt in");
    assert!(store.endpoint_health("app_missing", t - hours(1)).await.unwrap().is_empty());
}

pub async fn stats_message_destinations(store: &DynStore) {
    let t0 = now_ms() - mins(30);
    let app = setup_app(store, "A").await;
    let other = setup_app(store, "B").await;
    let (one, two) = (setup_endpoint(store, &app.id).await, setup_endpoint(store, &app.id).await);
    let foreign = setup_endpoint(store, &other.id).await;
    post(store, &app.id, &[&one, &two], t0).await; // 2, at the window's first instant
    let failed = post(store, &app.id, &[&one], t0 + mins(1)).await; // 1, however it goes
    post(store, &app.id, &[&one, &two], t0 + mins(5)).await; // 2, at the window's end: out
    post(store, &app.id, &[&two], t0 - secs(1)).await; // 1, before the window
    post(store, &other.id, &[&foreign], t0 + mins(2)).await; // another application's
    assert!(!claim(store, t0 + mins(6)).await.is_empty());
    let outcome = timed(&failed.id, &one, t0 + mins(6), NextStep::GiveUp, 5);
    store.record_attempts(vec![outcome], Duration::from_secs(30 * 24 * 3600)).await.unwrap();

    let count = |app_id: String, since, until| async move {
        store.count_message_destinations(&app_id, since, until).await.expect("count_message_destinations")
    };
    assert_eq!(count(app.id.clone(), t0, t0 + mins(5)).await, 3, "since is in, until is out");
    assert_eq!(count(app.id.clone(), t0 - secs(1), t0 + mins(5) + secs(1)).await, 6);
    assert_eq!(count(app.id.clone(), t0 + mins(1), t0 + mins(2)).await, 1, "a failed delivery counts");
    assert_eq!(count(other.id.clone(), t0, t0 + mins(5)).await, 1, "only the application's own");
    assert_eq!(count(app.id.clone(), t0 + mins(10), t0 + mins(20)).await, 0);
    assert_eq!(count("app_missing".into(), t0, t0 + mins(5)).await, 0);
}

pub async fn stats_attempt_timeline(store: &DynStore) {
    // Slices of one minute, starting on a whole minute.
    let t0 = DateTime::from_timestamp_millis((now_ms().timestamp_millis() / 60_000) * 60_000).unwrap() - mins(10);
    let app = setup_app(store, "A").await;
    let other = setup_app(store, "B").await;
    let ep = setup_endpoint(store, &app.id).await;
    let foreign = setup_endpoint(store, &other.id).await;
    let mut outcomes = Vec::new();
    for (minute, ok, failed) in [(0, 3, 1), (2, 0, 2), (5, 4, 0)] {
        for k in 0..ok + failed {
            let at = t0 + mins(minute) + secs(k);
            let msg = post(store, &app.id, &[&ep], at).await;
            let next = if k < ok { NextStep::Succeeded } else { NextStep::GiveUp };
            outcomes.push(timed(&msg.id, &ep, at, next, 30 * (k + 1)));
        }
    }
    let msg = post(store, &other.id, &[&foreign], t0).await;
    outcomes.push(timed(&msg.id, &foreign, t0, NextStep::Succeeded, 1));
    // A second endpoint of the application: one failure at minute 2.
    let second = setup_endpoint(store, &app.id).await;
    let msg = post(store, &app.id, &[&second], t0 + mins(2)).await;
    outcomes.push(timed(&msg.id, &second, t0 + mins(2), NextStep::GiveUp, 1));
    assert!(!claim(store, t0 + mins(6)).await.is_empty());
    store.record_attempts(outcomes, Duration::from_secs(30 * 24 * 3600)).await.unwrap();

    let slices = store.attempt_timeline(&app.id, None, t0, t0 + mins(10), Duration::from_secs(60)).await.unwrap();
    let got: Vec<(DateTime<Utc>, u64, u64)> = slices.iter().map(|s| (s.start, s.succeeded, s.failed)).collect();
    assert_eq!(got, vec![(t0, 3, 1), (t0 + mins(2), 0, 3), (t0 + mins(5), 4, 0)]);
    let one = store.attempt_timeline(&app.id, Some(&ep.id), t0, t0 + mins(10), Duration::from_secs(60)).await.unwrap();
    let got: Vec<(DateTime<Utc>, u64, u64)> = one.iter().map(|s| (s.start, s.succeeded, s.failed)).collect();
    assert_eq!(got, vec![(t0, 3, 1), (t0 + mins(2), 0, 2), (t0 + mins(5), 4, 0)], "one endpoint's attempts only");
    let theirs = store.attempt_timeline(&app.id, Some(&foreign.id), t0, t0 + mins(10), Duration::from_secs(60));
    assert!(theirs.await.unwrap().is_empty(), "another application's endpoint is not seen through this one");
    assert_eq!(slices[0].latency.total(), 4);
    assert_eq!(slices[0].latency.max_ms, 120);
    assert_eq!(slices[2].latency.max_ms, 120);

    let narrow =
        store.attempt_timeline(&app.id, None, t0 + mins(1), t0 + mins(5), Duration::from_secs(60)).await.unwrap();
    assert_eq!(narrow.iter().map(|s| s.start).collect::<Vec<_>>(), vec![t0 + mins(2)], "until is exclusive");
    let wide = store.attempt_timeline(&app.id, None, t0, t0 + mins(10), Duration::from_secs(600)).await.unwrap();
    let total: u64 = wide.iter().map(|s| s.succeeded + s.failed).sum();
    assert_eq!(total, 11, "ten-minute slices hold every attempt: {wide:?}");
    assert!(store
        .attempt_timeline("app_missing", None, t0, t0 + mins(10), Duration::from_secs(60))
        .await
        .unwrap()
        .is_empty());
}

pub async fn stats_message_log_states(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let e1 = setup_endpoint(store, &app.id).await;
    let e2 = setup_endpoint(store, &app.id).await;
    let ok = post(store, &app.id, &[&e1, &e2], t).await;
    let failed = post(store, &app.id, &[&e1, &e2], t + millis(1)).await;
    let pending = post(store, &app.id, &[&e1, &e2], t + millis(2)).await;
    let nobody = new_message(&app.id, "invoice.paid", t + millis(3));
    store.create_message(nobody.clone(), vec![], None).await.unwrap();
    assert_eq!(claim(store, t + secs(1)).await.len(), 6);
    let mut plain = outcome(&pending.id, &e1, t + secs(1), NextStep::RetryAt(t + mins(1)));
    plain.attempt.request_headers = None;
    store
        .record_attempts(
            vec![
                outcome(&ok.id, &e1, t + secs(1), NextStep::Succeeded),
                outcome(&ok.id, &e2, t + secs(1), NextStep::Succeeded),
                outcome(&failed.id, &e1, t + secs(1), NextStep::Succeeded),
                outcome(&failed.id, &e2, t + secs(1), NextStep::GiveUp),
                plain.clone(),
                outcome(&pending.id, &e2, t + secs(1), NextStep::Succeeded),
            ],
            HOUR,
        )
        .await
        .unwrap();
    let stored = store.get_attempt(&app.id, &pending.id, &plain.attempt.id).await.unwrap();
    assert_eq!(stored.map(|a| a.request_headers), Some(None), "an attempt without headers reads back without");

    let all = store.message_log(&app.id, &MessageFilter::default(), None, &page_req(50, None, false)).await.unwrap();
    let summary: Vec<(String, u64, u64, u64, u64, Option<MessageState>)> = all
        .items
        .iter()
        .map(|s| (s.message.id.clone(), s.succeeded, s.pending, s.failed, s.attempts, s.state()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (ok.id.clone(), 2, 0, 0, 2, Some(MessageState::Succeeded)),
            (failed.id.clone(), 1, 0, 1, 2, Some(MessageState::Failed)),
            (pending.id.clone(), 1, 1, 0, 2, Some(MessageState::Pending)),
            (nobody.id.clone(), 0, 0, 0, 0, None),
        ]
    );
    assert_eq!(all.items[0].message, ok, "the message itself, as stored");

    let only = |state| {
        let store = store.clone();
        let app = app.id.clone();
        async move {
            let page = store
                .message_log(&app, &MessageFilter::default(), Some(state), &page_req(50, None, true))
                .await
                .unwrap();
            page.items.into_iter().map(|s| s.message.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(only(MessageState::Succeeded).await, vec![ok.id.clone()]);
    assert_eq!(only(MessageState::Failed).await, vec![failed.id.clone()]);
    assert_eq!(only(MessageState::Pending).await, vec![pending.id.clone()]);

    // The message filters apply too, and pagination works as for list_messages.
    let filter = MessageFilter { event_types: Some(vec!["invoice.paid".into()]), ..Default::default() };
    let page = store.message_log(&app.id, &filter, None, &page_req(50, None, false)).await.unwrap();
    assert_eq!(page.items.iter().map(|s| s.message.id.clone()).collect::<Vec<_>>(), vec![nobody.id.clone()]);
    let filter = MessageFilter { after: Some(t), before: Some(t + millis(2)), ..Default::default() };
    let page = store.message_log(&app.id, &filter, None, &page_req(50, None, false)).await.unwrap();
    assert_eq!(page.items.iter().map(|s| s.message.id.clone()).collect::<Vec<_>>(), vec![failed.id.clone()]);
    let paged = all_pages(
        1,
        true,
        |s: &hooklane_store::MessageSummary| s.message.id.clone(),
        |p| {
            let store = store.clone();
            let app = app.id.clone();
            async move { store.message_log(&app, &MessageFilter::default(), None, &p).await }
        },
    )
    .await;
    assert_eq!(paged.len(), 4);
    assert_eq!(paged[0].message.id, nobody.id, "newest first when descending");
    let other = setup_app(store, "B").await;
    let none = store.message_log(&other.id, &MessageFilter::default(), None, &page_req(50, None, false)).await.unwrap();
    assert!(none.items.is_empty() && none.done);
}

/// `webhook-delivery: disable` in a receiver's answer: its endpoint is disabled whatever its
/// failure streak (here after a success), reported once with the version it wrote; the other
/// endpoint of the batch is left alone.
pub async fn an_endpoint_is_disabled_when_its_receiver_asks(store: &DynStore) {
    let t0 = now_ms();
    let app = setup_app(store, "A").await;
    let (asking, other) = (setup_endpoint(store, &app.id).await, setup_endpoint(store, &app.id).await);
    let m = post(store, &app.id, &[&asking, &other], t0).await;
    assert_eq!(claim(store, t0 + secs(1)).await.len(), 2);
    let mut asked = outcome(&m.id, &asking, t0 + secs(1), NextStep::Succeeded);
    asked.disable_endpoint = true;
    let plain = outcome(&m.id, &other, t0 + secs(1), NextStep::Succeeded);
    let recorded = store.record_attempts(vec![asked, plain], HOUR).await.unwrap();
    let e = endpoint_now(store, &asking).await;
    assert!(e.disabled, "disabled at its receiver's request");
    assert_eq!(recorded.disabled, vec![(asking.id.clone(), e.updated_at)]);
    assert!(e.updated_at > asking.updated_at, "its version moved on");
    assert!(!endpoint_now(store, &other).await.disabled);
    assert_eq!(delivery(store, &app.id, &m.id, &asking.id).await.status, DeliveryStatus::Success);

    // Asked again (an attempt already on the wire): nothing more to report.
    let m2 = post(store, &app.id, &[&other], t0).await;
    assert_eq!(claim(store, t0 + secs(2)).await.len(), 1);
    let mut again = outcome(&m2.id, &other, t0 + secs(2), NextStep::Succeeded);
    again.attempt.endpoint_id = asking.id.clone();
    again.disable_endpoint = true;
    let recorded = store.record_attempts(vec![again], HOUR).await.unwrap();
    assert!(recorded.disabled.is_empty(), "reported once");
}

/// A failure hooklane blames on itself (nothing was sent: the message's request could not
/// be made) neither starts a failure streak nor extends one into a disabling; the
/// delivery still fails.
pub async fn untried_failures_leave_failure_streaks(store: &DynStore) {
    let t0 = now_ms();
    let app = setup_app(store, "A").await;
    let ep = setup_endpoint(store, &app.id).await;
    let untried = |msg: &Message, at| AttemptOutcome { untried: true, ..outcome(&msg.id, &ep, at, NextStep::GiveUp) };
    let m1 = post(store, &app.id, &[&ep], t0).await;
    assert_eq!(claim(store, t0 + secs(1)).await.len(), 1);
    store.record_attempts(vec![untried(&m1, t0 + secs(1))], HOUR).await.unwrap();
    assert_eq!(endpoint_now(store, &ep).await.failing_since, None, "no streak started");
    assert_eq!(delivery(store, &app.id, &m1.id, &ep.id).await.status, DeliveryStatus::Fail);

    // A streak running for two hours: an untried failure does not disable.
    let m2 = post(store, &app.id, &[&ep], t0).await;
    assert_eq!(claim(store, t0 + secs(2)).await.len(), 1);
    store
        .record_attempts(vec![outcome(&m2.id, &ep, t0 + secs(2), NextStep::RetryAt(t0 + hours(2)))], HOUR)
        .await
        .unwrap();
    assert_eq!(claim(store, t0 + hours(2)).await.len(), 1);
    let recorded = store.record_attempts(vec![untried(&m2, t0 + hours(2))], HOUR).await.unwrap();
    assert!(recorded.disabled.is_empty());
    let e = endpoint_now(store, &ep).await;
    assert_eq!((e.disabled, e.failing_since), (false, Some(t0 + secs(2))));

    // The streak then goes quiet for three days. An untried failure does not make it look
    // recent: a real failure after it, in the same batch, starts a streak afresh rather
    // than disable the endpoint for the streak of three days before.
    let (m3, m4) = (post(store, &app.id, &[&ep], t0).await, post(store, &app.id, &[&ep], t0).await);
    let later = t0 + hours(74);
    assert_eq!(claim(store, later).await.len(), 2);
    // (Made in this order: attempt ids are time-ordered.)
    let first = untried(&m3, later);
    let real = outcome(&m4.id, &ep, later + secs(1), NextStep::RetryAt(later + hours(1)));
    let recorded = store.record_attempts(vec![first, real], HOUR).await.unwrap();
    assert!(recorded.disabled.is_empty(), "disabled for a streak that had gone quiet");
    let e = endpoint_now(store, &ep).await;
    assert_eq!((e.disabled, e.failing_since), (false, Some(later + secs(1))));
}
