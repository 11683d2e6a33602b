//! `/api/v1/app/{app_id}/integration`: Svix's integrations, named credentials of one
//! application that its owner hands to a third party (a no-code automation tool, say),
//! each revocable on its own.
//!
//! An integration's key is an application token that does not expire: it sees and changes
//! that application only, as an app-portal token does, until the key is rotated, the
//! integration deleted, or the application's tokens expired (`expire-all`). Like every
//! token it is stored only as a hash, so it is shown once, when made: `POST …/key/rotate`
//! makes the first key and every later one (Svix's older `GET …/key`, which shows a stored
//! key again, is not served). Only the admin token manages integrations: a key outlives
//! any application token, so letting one mint keys would let a week-long token make
//! itself permanent.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use hooklane_core::ids::{self, new_id};
use hooklane_core::model::Integration;
use hooklane_core::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{check_len, feature_flags, page_request, ListResponse};
use crate::error::{missing, ApiError, ApiResult};
use crate::extract::{Admin, Json, Path, Query, Tenant};
use crate::openapi::{
    AppPath, ErrorBody, InvalidBody, InvalidJson, InvalidQuery, NotAdmin, PageOldestFirst, Unauthorized,
};
use crate::state::{hex, token_hash, AppState};

/// Prefix of integration keys, so a secret scanner recognises them.
const KEY_PREFIX: &str = "integsk_";
const MAX_NAME: usize = 256;

/// Svix's `IntegrationIn` (and `IntegrationUpdate`, the same fields).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntegrationIn {
    /// 1–256 characters.
    #[schema(example = "Zapier")]
    name: String,
    /// The flags whose event types the integration's key sees (an event type behind a
    /// feature flag is hidden from tokens without it); at most 64, each 1–256 of
    /// `[a-zA-Z0-9-_.]`.
    #[serde(default)]
    feature_flags: Option<BTreeSet<String>>,
}

/// Svix's `IntegrationOut`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntegrationOut {
    #[schema(example = "integ_01J8ZK6X4Q9M2V7T3B5N8R1W0C")]
    id: String,
    name: String,
    feature_flags: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Integration> for IntegrationOut {
    fn from(i: Integration) -> Self {
        IntegrationOut {
            id: i.id,
            name: i.name,
            feature_flags: i.feature_flags,
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

/// Svix's `IntegrationKeyOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IntegrationKeyOut {
    /// The key (`integsk_…`), an application token; shown only this once.
    key: String,
}

/// `{app_id}/integration/{integ_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct IntegrationPath {
    /// The application's id or uid
    app_id: String,
    /// The integration's id
    integ_id: String,
}

impl IntegrationIn {
    /// The checked name and flags.
    fn checked(self) -> ApiResult<(String, Vec<String>)> {
        if self.name.is_empty() {
            return Err(ApiError::validation("name", "may not be empty"));
        }
        check_len("name", &self.name, MAX_NAME)?;
        Ok((self.name, feature_flags(self.feature_flags)?))
    }
}

/// The application's integration `id`, or 404.
async fn find(s: &AppState, t: &Tenant, id: &str) -> ApiResult<Integration> {
    s.0.store.get_integration(&t.app.id, id).await?.ok_or(ApiError::NotFound("integration"))
}

/// List an application's integrations.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/integration",
    tag = "Integration",
    operation_id = "v1.integration.list",
    params(AppPath, PageOldestFirst),
    responses(
        (status = 200, description = "A page of integrations", body = ListResponse<IntegrationOut>),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    _: Admin,
    t: Tenant,
    q: Query,
) -> ApiResult<axum::Json<ListResponse<IntegrationOut>>> {
    let page = page_request(&q, false)?;
    let found = s.0.store.list_integrations(&t.app.id, &page).await?;
    Ok(axum::Json(ListResponse::from_page(found, |i| i.id.clone(), IntegrationOut::from)))
}

/// Create an integration.
///
/// It has no key yet: rotate its key (`POST …/key/rotate`) to make one.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/integration",
    tag = "Integration",
    operation_id = "v1.integration.create",
    params(AppPath),
    request_body = IntegrationIn,
    responses(
        (status = 201, description = "The integration", body = IntegrationOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    _: Admin,
    t: Tenant,
    Json(input): Json<IntegrationIn>,
) -> ApiResult<(StatusCode, axum::Json<IntegrationOut>)> {
    let (name, feature_flags) = input.checked()?;
    refuse_operational(&s, &t)?;
    let now = super::now();
    let integration = Integration {
        id: new_id(ids::INTEGRATION),
        app_id: t.app.id.clone(),
        name,
        feature_flags,
        created_at: now,
        updated_at: now,
    };
    // The application may have been deleted since the path was read.
    s.0.store.create_integration(integration.clone()).await.map_err(missing("application"))?;
    Ok((StatusCode::CREATED, axum::Json(integration.into())))
}

/// Get an integration.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/integration/{integ_id}",
    tag = "Integration",
    operation_id = "v1.integration.get",
    params(IntegrationPath),
    responses(
        (status = 200, description = "The integration", body = IntegrationOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application or integration", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    _: Admin,
    t: Tenant,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<IntegrationOut>> {
    Ok(axum::Json(find(&s, &t, &id).await?.into()))
}

/// Update an integration's name and feature flags.
#[utoipa::path(
    put,
    path = "/api/v1/app/{app_id}/integration/{integ_id}",
    tag = "Integration",
    operation_id = "v1.integration.update",
    params(IntegrationPath),
    request_body = IntegrationIn,
    responses(
        (status = 200, description = "The integration", body = IntegrationOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application or integration", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn update(
    State(s): State<AppState>,
    _: Admin,
    t: Tenant,
    Path((_, id)): Path<(String, String)>,
    Json(input): Json<IntegrationIn>,
) -> ApiResult<axum::Json<IntegrationOut>> {
    let (name, feature_flags) = input.checked()?;
    let integration = Integration { name, feature_flags, updated_at: super::now(), ..find(&s, &t, &id).await? };
    s.0.store.update_integration(integration.clone()).await.map_err(missing("integration"))?;
    Ok(axum::Json(integration.into()))
}

/// Delete an integration; its key stops working.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app_id}/integration/{integ_id}",
    tag = "Integration",
    operation_id = "v1.integration.delete",
    params(IntegrationPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application or integration", body = ErrorBody),
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    _: Admin,
    t: Tenant,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.0.store.delete_integration(&t.app.id, &id).await.map_err(missing("integration"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Make a new key for an integration.
///
/// The key it had, if any, stops working at once. The new key is shown only in this answer.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/integration/{integ_id}/key/rotate",
    tag = "Integration",
    operation_id = "v1.integration.rotate-key",
    params(IntegrationPath),
    responses(
        (status = 200, description = "The new key", body = IntegrationKeyOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application or integration", body = ErrorBody),
    )
)]
pub async fn rotate_key(
    State(s): State<AppState>,
    _: Admin,
    t: Tenant,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<IntegrationKeyOut>> {
    refuse_operational(&s, &t)?;
    let key = super::auth::random_token(KEY_PREFIX);
    let now = super::now();
    s.0.store.set_integration_key(&t.app.id, &id, hex(&token_hash(&key)), now).await.map_err(missing("integration"))?;
    Ok(axum::Json(IntegrationKeyOut { key }))
}

/// An integration's key is an application token: none for the operational application.
fn refuse_operational(s: &AppState, t: &Tenant) -> ApiResult<()> {
    match crate::operational::is_operational_app(s, &t.app) {
        true => Err(ApiError::Forbidden(crate::operational::NO_TOKEN)),
        false => Ok(()),
    }
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get, update, delete, rotate_key),
    components(schemas(IntegrationIn, IntegrationOut, IntegrationKeyOut))
)]
pub(crate) struct Doc;
