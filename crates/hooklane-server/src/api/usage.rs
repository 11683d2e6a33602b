//! `/api/v1/stats/usage`: Svix's usage statistics, for billing an application's owner by
//! what was sent to it, and for seeing which event types applications listen to.
//!
//! Both are background tasks (see [`crate::tasks`]), as in Svix: the answer names the task,
//! `finished` unless the work outlasts the server's `task_wait`, and
//! `GET /background-task/{id}` gives its figures in `data`. These tasks belong to the whole
//! environment, not to one application, so only the admin token sees them.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use hooklane_core::model::Application;
use hooklane_core::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Json};
use crate::openapi::{InvalidBody, InvalidJson, NotAdmin, Unauthorized};
use crate::state::AppState;

/// The application a task of the whole environment is recorded under: none matches it, so
/// application tokens never see these tasks.
const ENVIRONMENT_TASK: &str = "";
/// Most applications one request may name.
const MAX_APP_IDS: usize = 1_000;
const APP_STATS: &str = "application.stats";
const EVENT_TYPE_AGGREGATE: &str = "event-type.aggregate";

/// Svix's `AppUsageStatsIn`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppUsageStatsIn {
    /// Start of the window: messages created at or after it are counted.
    since: DateTime<Utc>,
    /// End of the window: messages created before it are counted.
    until: DateTime<Utc>,
    /// Only these applications (ids or uids, at most 1000); when absent, every application
    /// but those that inbound sources own. Those not found are answered in
    /// `unresolvedAppIds`; 422 when none is found.
    #[serde(default)]
    app_ids: Option<BTreeSet<String>>,
}

/// Svix's `AppUsageStatsOut`: the task, and the applications asked for that do not exist.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppUsageStatsOut {
    #[schema(example = "qtask_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    id: String,
    /// `finished`, or `running` when the work outlasts the server's `task_wait`.
    #[schema(example = "finished")]
    status: String,
    #[schema(example = "application.stats")]
    task: String,
    updated_at: DateTime<Utc>,
    /// Ids or uids of `appIds` that name no application; the others are counted.
    unresolved_app_ids: BTreeSet<String>,
}

/// Svix's `AggregateEventTypesOut`: the task.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregateEventTypesOut {
    #[schema(example = "qtask_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    id: String,
    /// `finished`, or `running` when the work outlasts the server's `task_wait`.
    #[schema(example = "finished")]
    status: String,
    #[schema(example = "event-type.aggregate")]
    task: String,
    updated_at: DateTime<Utc>,
}

/// Count the messages sent to each application's endpoints in a window.
///
/// For each application, `messageDestinations` is the number of deliveries (one message to
/// one endpoint, however it went, retries not counted) of the messages created in
/// `[since, until)`. The figures are in the `data.appStats` of the `application.stats` task
/// answered, once it is finished. Messages removed by the retention period, and
/// deliveries to endpoints deleted since, are not counted. Without `appIds`, every
/// application is counted but those that inbound sources own (`appIds` may name them).
#[utoipa::path(
    post,
    path = "/api/v1/stats/usage/app",
    tag = "Statistics",
    operation_id = "v1.statistics.aggregate-app-stats",
    request_body = AppUsageStatsIn,
    responses(
        (status = 202, description = "The task; its figures are in `GET /background-task/{task_id}` once it is finished", body = AppUsageStatsOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn aggregate_app_stats(
    State(s): State<AppState>,
    _: Admin,
    Json(input): Json<AppUsageStatsIn>,
) -> ApiResult<(axum::http::StatusCode, axum::Json<AppUsageStatsOut>)> {
    if input.until <= input.since {
        return Err(ApiError::validation("until", "must be after since"));
    }
    let mut unresolved = BTreeSet::new();
    // `None`: every application, listed by the work.
    let named = match input.app_ids {
        None => None,
        Some(keys) => {
            if keys.len() > MAX_APP_IDS {
                return Err(ApiError::validation("appIds", format!("must hold at most {MAX_APP_IDS} ids")));
            }
            keys.iter().try_for_each(|key| super::no_nul("appIds", key))?;
            // An application named twice (by id and by uid) is counted once.
            let mut found = BTreeMap::new();
            for key in keys {
                match s.0.store.get_app(&key).await? {
                    Some(app) => {
                        found.insert(app.id.clone(), app);
                    }
                    None => {
                        unresolved.insert(key);
                    }
                }
            }
            if found.is_empty() {
                return Err(ApiError::validation("appIds", "none of these applications exists"));
            }
            Some(found.into_values().collect())
        }
    };
    let state = s.clone();
    let work = async move {
        let apps = match named {
            Some(apps) => apps,
            None => all_apps(&state).await?,
        };
        let mut app_stats = Vec::with_capacity(apps.len());
        for app in apps {
            let n = state.0.store.count_message_destinations(&app.id, input.since, input.until).await?;
            app_stats.push(serde_json::json!({ "messageDestinations": n, "appId": app.id, "appUid": app.uid }));
        }
        Ok(Map::from_iter([("appStats".to_string(), app_stats.into())]))
    };
    let task = crate::tasks::run(&s, ENVIRONMENT_TASK, APP_STATS, Map::new(), work).await?;
    let out = AppUsageStatsOut {
        id: task.id,
        status: task.status,
        task: task.task,
        updated_at: task.updated_at,
        unresolved_app_ids: unresolved,
    };
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(out)))
}

/// List the event types each application's endpoints subscribe to.
///
/// For each application: `explicitlySubscribedEventTypes`, the event types its endpoints
/// (enabled or not) name in `filterTypes`, and `hasCatchAllEndpoint`, whether one of them
/// takes every event type. The figures are in the `data.event_types` of the
/// `event-type.aggregate` task answered, once it is finished.
#[utoipa::path(
    put,
    path = "/api/v1/stats/usage/event-types",
    tag = "Statistics",
    operation_id = "v1.statistics.aggregate-event-types",
    responses(
        (status = 202, description = "The task; its figures are in `GET /background-task/{task_id}` once it is finished", body = AggregateEventTypesOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
    )
)]
pub async fn aggregate_event_types(
    State(s): State<AppState>,
    _: Admin,
) -> ApiResult<(axum::http::StatusCode, axum::Json<AggregateEventTypesOut>)> {
    let state = s.clone();
    let work = async move {
        let mut per_app = Vec::new();
        for app in all_apps(&state).await? {
            let mut names = BTreeSet::new();
            let mut catch_all = false;
            for ep in state.0.store.app_endpoints(&app.id).await? {
                match ep.filter_types {
                    Some(types) if !types.is_empty() => names.extend(types),
                    _ => catch_all = true,
                }
            }
            per_app.push(serde_json::json!({
                "appId": app.id,
                "explicitlySubscribedEventTypes": names,
                "hasCatchAllEndpoint": catch_all,
            }));
        }
        // Svix's name for this list is in snake case, unlike the rest of its API.
        Ok(Map::from_iter([("event_types".to_string(), per_app.into())]))
    };
    let task = crate::tasks::run(&s, ENVIRONMENT_TASK, EVENT_TYPE_AGGREGATE, Map::new(), work).await?;
    let out = AggregateEventTypesOut { id: task.id, status: task.status, task: task.task, updated_at: task.updated_at };
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(out)))
}

/// Every application, oldest first (those that inbound sources own are not listed).
async fn all_apps(s: &AppState) -> ApiResult<Vec<Application>> {
    super::every(|a: &Application| a.id.clone(), |page| async move { s.0.store.list_apps(&page).await }).await
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(aggregate_app_stats, aggregate_event_types),
    components(schemas(AppUsageStatsIn, AppUsageStatsOut, AggregateEventTypesOut))
)]
pub(crate) struct Doc;
