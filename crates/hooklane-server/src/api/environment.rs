//! `/api/v1/environment`: Svix's export and import of an environment's configuration, for
//! copying an event catalogue from one installation (or from Svix) to another. hooklane's
//! environment is its event types: it has no environment settings and no connectors, so
//! an export carries none, and an import accepts them (a Svix export has them) and leaves
//! them aside.

use axum::extract::State;
use axum::http::StatusCode;
use hooklane_core::model::EventType;
use hooklane_core::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event_type::{EventTypeIn, EventTypeOut};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Json};
use crate::openapi::{InvalidBody, InvalidJson, NotAdmin, Unauthorized};
use crate::state::AppState;

/// The format of an export.
const VERSION: i64 = 1;
/// Most event types one import holds.
pub(crate) const MAX_EVENT_TYPES: usize = 10_000;

/// Svix's `EnvironmentOut`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentOut {
    #[schema(example = 1)]
    version: i64,
    created_at: DateTime<Utc>,
    /// Every event type, archived ones too, with its schemas.
    event_types: Vec<EventTypeOut>,
    /// Always `null`: hooklane has no environment settings.
    #[schema(value_type = Option<Object>)]
    settings: Option<serde_json::Value>,
    /// Always empty: hooklane has no connectors.
    #[schema(value_type = Vec<Object>)]
    connectors: Vec<serde_json::Value>,
}

/// Svix's `EnvironmentIn`. An export is a valid import as it stands: its `version` and
/// `createdAt`, and its event types' `createdAt` and `updatedAt`, are accepted and left aside.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentIn {
    /// Event types to create, or to replace when one of the same name exists (as in
    /// `POST /event-type`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventTypeIn>>)]
    event_types: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// An export's; left aside.
    #[serde(default)]
    #[schema(value_type = Option<i64>)]
    version: Option<serde_json::Value>,
    /// An export's; left aside.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    created_at: Option<serde_json::Value>,
    /// Accepted and left aside: hooklane has no environment settings.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    settings: Option<serde_json::Value>,
    /// Accepted and left aside: hooklane has no connectors.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    connectors: Option<serde_json::Value>,
}

/// Export the environment: every event type with its schemas.
#[utoipa::path(
    post,
    path = "/api/v1/environment/export",
    tag = "Environment",
    operation_id = "v1.environment.export",
    responses(
        (status = 200, description = "The environment", body = EnvironmentOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
    )
)]
pub async fn export(State(s): State<AppState>, _: Admin) -> ApiResult<axum::Json<EnvironmentOut>> {
    let event_types = super::event_type::all(&s, true).await?.into_iter().map(|e| EventTypeOut::new(e, true)).collect();
    Ok(axum::Json(EnvironmentOut {
        version: VERSION,
        created_at: super::now(),
        event_types,
        settings: None,
        connectors: Vec::new(),
    }))
}

/// Import an environment: create or replace its event types.
///
/// Each event type is created, or replaces the one of its name (as `PUT` does); event types
/// it does not name are left as they are. Every one is checked before any is written, so
/// an import with an invalid one changes nothing. `settings` and `connectors` are accepted
/// and left aside.
#[utoipa::path(
    post,
    path = "/api/v1/environment/import",
    tag = "Environment",
    operation_id = "v1.environment.import",
    request_body = EnvironmentIn,
    responses(
        (status = 204, description = "Imported"),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn import(State(s): State<AppState>, _: Admin, Json(input): Json<EnvironmentIn>) -> ApiResult<StatusCode> {
    let _ = (input.settings, input.connectors, input.version, input.created_at);
    let given = input.event_types.unwrap_or_default();
    if given.len() > MAX_EVENT_TYPES {
        return Err(ApiError::validation("eventTypes", format!("must hold at most {MAX_EVENT_TYPES} event types")));
    }
    let now = super::now();
    let event_types = given
        .into_iter()
        .enumerate()
        .map(|(i, mut fields)| {
            // What an export adds to an event type: the times are those of this installation.
            fields.remove("createdAt");
            fields.remove("updatedAt");
            let one: EventTypeIn = serde_json::from_value(fields.into())
                .map_err(|e| ApiError::validation(format!("eventTypes[{i}]"), e.to_string()))?;
            one.build(now)
        })
        .collect::<ApiResult<Vec<EventType>>>()?;
    // In one store transaction (all of it or nothing), on a task of its own: a client that
    // stops waiting does not stop it either. An event type there already is replaced but
    // for its creation time.
    let state = s.clone();
    let written =
        tokio::spawn(async move { state.0.store.import_event_types(event_types, Vec::new(), now, false).await });
    written.await.map_err(|e| ApiError::Internal(format!("the import's writer ended: {e}")))??;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(export, import), components(schemas(EnvironmentOut, EnvironmentIn)))]
pub(crate) struct Doc;
