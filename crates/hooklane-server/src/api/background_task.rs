//! `/api/v1/background-task`: the tasks of recoveries, replays, purges and usage statistics
//! (Svix's background tasks; see [`crate::tasks`] for how they run): `running` while their
//! work goes on, then `finished` or `failed`. They are kept 90 days, so that clients
//! following Svix's flow (start a recovery, then look its task up) find them. The admin
//! token sees every task, an application token its own application's (not those of the
//! whole environment).

use axum::extract::State;
use hooklane_core::model::{BackgroundTask, Principal};
use hooklane_core::{DateTime, Utc};
use hooklane_store::TaskFilter;
use serde::Serialize;

use super::{page_request, ListResponse};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Path, Query};
use crate::openapi::{ErrorBody, InvalidQuery, PageNewestFirst, TaskPath, Unauthorized};
use crate::state::AppState;

/// Svix's `BackgroundTaskOut`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackgroundTaskOut {
    #[schema(example = "qtask_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    id: String,
    /// `running`, `finished`, or `failed` (with the `error` in `data`; a task whose node
    /// stopped before it ended fails as "interrupted").
    #[schema(example = "finished")]
    status: String,
    /// `endpoint.recover`, `endpoint.replay`, `endpoint.bulk-replay`,
    /// `application.purge_content`, `application.stats` or `event-type.aggregate`.
    #[schema(example = "endpoint.recover")]
    task: String,
    /// What the task did: `endpointId` (an endpoint's task), and `recovered` or `replayed`
    /// (deliveries queued) or `expunged` (messages emptied); `appStats` (an
    /// `application.stats` task) or `event_types` (an `event-type.aggregate` task).
    #[schema(value_type = Object)]
    data: serde_json::Value,
    updated_at: DateTime<Utc>,
}

impl From<BackgroundTask> for BackgroundTaskOut {
    fn from(t: BackgroundTask) -> Self {
        BackgroundTaskOut { id: t.id, status: t.status, task: t.task, data: t.data, updated_at: t.updated_at }
    }
}

/// The application a caller may see the tasks of: all for the admin token.
fn scope(principal: Principal) -> ApiResult<Option<String>> {
    match principal {
        Principal::Admin => Ok(None),
        Principal::App { app_id, .. } => Ok(Some(app_id)),
        // (Refused before it gets here: see `crate::capability::poller_key_may`.)
        Principal::Poller { .. } => Err(ApiError::Forbidden("a polling endpoint's key may only read its poller")),
    }
}

/// List background tasks of the past 90 days, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/background-task",
    tag = "Background Task",
    operation_id = "v1.background-task.list",
    params(
        PageNewestFirst,
        ("status" = Option<String>, Query, description = "Only tasks in this state: `running`, `finished` or `failed`"),
        ("task" = Option<String>, Query, description = "Only tasks of this type: `endpoint.recover`, `endpoint.replay`, `endpoint.bulk-replay`, `application.purge_content`, `application.stats` or `event-type.aggregate`"),
    ),
    responses(
        (status = 200, description = "A page of tasks", body = ListResponse<BackgroundTaskOut>),
        (status = 401, response = Unauthorized),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Auth(principal): Auth,
    q: Query,
) -> ApiResult<axum::Json<ListResponse<BackgroundTaskOut>>> {
    let page = page_request(&q, true)?;
    let status = match q.get("status") {
        None => None,
        Some(v @ ("running" | "finished" | "failed")) => Some(v.to_string()),
        Some(_) => return Err(ApiError::bad_query("status", "must be running, finished or failed")),
    };
    let filter = TaskFilter { app_id: scope(principal)?, status, task: q.get("task").map(String::from) };
    let tasks = s.0.store.list_tasks(&filter, &page).await?;
    Ok(axum::Json(ListResponse::from_page(tasks, |t| t.id.clone(), BackgroundTaskOut::from)))
}

/// Get a background task by id.
#[utoipa::path(
    get,
    path = "/api/v1/background-task/{task_id}",
    tag = "Background Task",
    operation_id = "v1.background-task.get",
    params(TaskPath),
    responses(
        (status = 200, description = "The task", body = BackgroundTaskOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such task (or not the token's application's)", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<BackgroundTaskOut>> {
    let app_id = scope(principal)?;
    let task = s.0.store.get_task(app_id.as_deref(), &id).await?.ok_or(ApiError::NotFound("background task"))?;
    Ok(axum::Json(task.into()))
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, get), components(schemas(BackgroundTaskOut)))]
pub(crate) struct Doc;
