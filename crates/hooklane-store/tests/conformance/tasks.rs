//! Conformance case of background tasks: recorded, found by id within an application or
//! across all, listed with filters and pages, deleted with their application and by age.

use hooklane_core::model::BackgroundTask;
use hooklane_store::{DynStore, TaskFilter, TASK_RETENTION};
use serde_json::json;

use super::*;

fn new_task(app_id: &str, task: &str, data: serde_json::Value, at: DateTime<Utc>) -> BackgroundTask {
    BackgroundTask {
        id: new_id(ids::TASK),
        app_id: app_id.to_string(),
        task: task.to_string(),
        status: "finished".to_string(),
        data,
        updated_at: at,
    }
}

fn ids_of(page: &Page<BackgroundTask>) -> Vec<String> {
    page.items.iter().map(|t| t.id.clone()).collect()
}

pub async fn background_tasks_record_get_list_isolate_and_prune(store: &DynStore) {
    let t = now_ms();
    let (a, b) = (new_app("A", None), new_app("B", None));
    store.create_app(a.clone()).await.unwrap();
    store.create_app(b.clone()).await.unwrap();
    let mut of_a = vec![
        new_task(&a.id, "endpoint.recover", json!({ "recovered": 3 }), t),
        new_task(&a.id, "endpoint.replay", json!({ "replayed": 1 }), t + secs(1)),
        new_task(&a.id, "endpoint.recover", json!({ "recovered": 0 }), t + secs(2)),
    ];
    let of_b = new_task(&b.id, "endpoint.replay", json!({ "replayed": 9 }), t);
    for task in of_a.iter().chain([&of_b]) {
        store.record_task(task.clone()).await.unwrap();
    }
    of_a.sort_by(|x, y| x.id.cmp(&y.id));

    // By id: as recorded; within an application, only its own.
    assert_eq!(store.get_task(None, &of_b.id).await.unwrap().as_ref(), Some(&of_b));
    assert_eq!(store.get_task(Some(&b.id), &of_b.id).await.unwrap().as_ref(), Some(&of_b));
    assert_eq!(store.get_task(Some(&a.id), &of_b.id).await.unwrap(), None, "another application's task");
    assert_eq!(store.get_task(None, "qtask_nope").await.unwrap(), None);

    // Lists: everything, one application's, filtered by type and status, in id order.
    let all = store.list_tasks(&TaskFilter::default(), &PageRequest::default()).await.unwrap();
    assert_eq!(all.items.len(), 4);
    let only_a = TaskFilter { app_id: Some(a.id.clone()), ..TaskFilter::default() };
    let listed = store.list_tasks(&only_a, &PageRequest::default()).await.unwrap();
    assert_eq!(listed.items, of_a);
    assert!(listed.done);
    let recoveries = TaskFilter { task: Some("endpoint.recover".into()), ..only_a.clone() };
    let listed = store.list_tasks(&recoveries, &PageRequest::default()).await.unwrap();
    assert!(listed.items.iter().all(|t| t.task == "endpoint.recover") && listed.items.len() == 2, "{listed:?}");
    let running = TaskFilter { status: Some("running".into()), ..TaskFilter::default() };
    assert!(store.list_tasks(&running, &PageRequest::default()).await.unwrap().items.is_empty());
    // Pages of two, newest first, through the iterator.
    let first = PageRequest { limit: 2, descending: true, ..PageRequest::default() };
    let page1 = store.list_tasks(&only_a, &first).await.unwrap();
    assert_eq!(ids_of(&page1), [of_a[2].id.clone(), of_a[1].id.clone()]);
    assert!(!page1.done);
    let next = PageRequest { iterator: page1.items.last().map(|t| t.id.clone()), ..first };
    let page2 = store.list_tasks(&only_a, &next).await.unwrap();
    assert_eq!(ids_of(&page2), [of_a[0].id.clone()]);
    assert!(page2.done);

    // Deleting an application deletes its tasks.
    store.delete_app(&b.id).await.unwrap();
    assert_eq!(store.get_task(None, &of_b.id).await.unwrap(), None);

    // Housekeeping deletes tasks older than the retention, not younger ones.
    let retention = chrono::Duration::from_std(TASK_RETENTION).unwrap();
    let old = new_task(&a.id, "endpoint.recover", json!({}), t - retention - secs(60));
    let kept = new_task(&a.id, "endpoint.recover", json!({}), t - retention + secs(60));
    store.record_task(old.clone()).await.unwrap();
    store.record_task(kept.clone()).await.unwrap();
    let pruned = store.prune(t, None, None, 100).await.unwrap();
    assert_eq!(pruned, Pruned { tasks: 1, ..Pruned::default() });
    assert_eq!(store.get_task(None, &old.id).await.unwrap(), None);
    assert_eq!(store.get_task(None, &kept.id).await.unwrap(), Some(kept));
}

pub async fn background_tasks_progress_and_stale_ones_fail(store: &DynStore) {
    let t = now_ms();
    let app = setup_app(store, "A").await;
    let running =
        |data, at| BackgroundTask { status: "running".into(), ..new_task(&app.id, "endpoint.replay", data, at) };
    let mut live = running(json!({ "endpointId": "ep_1" }), t - secs(120));
    let stale = running(json!({ "endpointId": "ep_2" }), t - secs(120));
    let done = new_task(&app.id, "endpoint.replay", json!({ "replayed": 3 }), t - secs(120));
    for task in [&live, &stale, &done] {
        store.record_task(task.clone()).await.unwrap();
    }
    // A heartbeat moves `updated_at`; the end sets the status and data.
    live.updated_at = t - secs(5);
    assert!(store.beat_task(&live.id, live.updated_at).await.expect("heartbeat"));
    assert_eq!(store.get_task(None, &live.id).await.unwrap().as_ref(), Some(&live));
    assert!(!store.beat_task("qtask_missing", t).await.unwrap());
    let missing = new_task(&app.id, "endpoint.replay", json!({}), t);
    assert!(matches!(store.update_task(missing).await, Err(hooklane_store::StoreError::NotFound)));

    // Only running tasks not updated since `before` fail, keeping their data beside the error.
    let n = store.fail_stale_tasks(t - secs(60), "interrupted", t).await.unwrap();
    assert_eq!(n, 1);
    let failed = store.get_task(None, &stale.id).await.unwrap().expect("task");
    assert_eq!((failed.status.as_str(), failed.updated_at), ("failed", t));
    assert_eq!(failed.data, json!({ "endpointId": "ep_2", "error": "interrupted" }));
    assert_eq!(store.get_task(None, &live.id).await.unwrap().map(|x| x.status), Some("running".to_string()));
    assert_eq!(store.get_task(None, &done.id).await.unwrap(), Some(done.clone()), "a finished task stays finished");
    assert_eq!(store.fail_stale_tasks(t - secs(60), "interrupted", t).await.unwrap(), 0, "once");
    // A late beat of the failed task leaves it failed.
    assert!(!store.beat_task(&stale.id, t + secs(1)).await.unwrap());
    assert_eq!(store.get_task(None, &stale.id).await.unwrap(), Some(failed.clone()));
    // Nor does a late end: only a running task's end is recorded.
    let late = BackgroundTask { status: "finished".into(), updated_at: t + secs(1), ..stale.clone() };
    assert!(matches!(store.update_task(late).await, Err(hooklane_store::StoreError::NotFound)));
    assert_eq!(store.get_task(None, &stale.id).await.unwrap(), Some(failed.clone()));
    // One task failed by its id, only while it runs: a finished or failed one keeps its end.
    assert!(!store.fail_task(&done.id, "shut down", t).await.unwrap());
    assert!(!store.fail_task(&stale.id, "shut down", t + secs(2)).await.unwrap());
    assert_eq!(store.get_task(None, &done.id).await.unwrap(), Some(done.clone()));
    assert_eq!(store.get_task(None, &stale.id).await.unwrap(), Some(failed));
    assert!(!store.fail_task("qtask_missing", "shut down", t).await.unwrap());
    let ending = running(json!({ "endpointId": "ep_3" }), t);
    store.record_task(ending.clone()).await.unwrap();
    assert!(store.fail_task(&ending.id, "shut down", t).await.unwrap());
    let got = store.get_task(None, &ending.id).await.unwrap().expect("task");
    assert_eq!((got.status.as_str(), got.data["error"].as_str()), ("failed", Some("shut down")));

    live.status = "finished".into();
    live.data = json!({ "endpointId": "ep_1", "replayed": 7 });
    live.updated_at = t;
    store.update_task(live.clone()).await.expect("end");
    assert_eq!(store.get_task(Some(&app.id), &live.id).await.unwrap(), Some(live));
}
