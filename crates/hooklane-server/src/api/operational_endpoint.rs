//! `/api/v1/operational-webhook/endpoint`: Svix's API for the endpoints that receive
//! operational webhooks. In hooklane those are the endpoints of the operational application
//! (`operational_app`, see `crate::operational`), so each operation here is the endpoint
//! operation of the same name on that application, with the admin token. The application is
//! created (its `uid` the configured value) the first time it is needed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hooklane_core::ids;
use hooklane_core::model::Principal;

use super::endpoint::{self, EndpointIn, EndpointOut, HeadersIn, HeadersOut, RotateIn, SecretOut};
use super::ListResponse;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Json, OptionalJson, Path, Query, Tenant};
use crate::openapi::{ErrorBody, InvalidBody, InvalidJson, NotAdmin, PageOldestFirst, Unauthorized};
use crate::state::AppState;

/// `/operational-webhook/endpoint/{endpoint_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
struct OperationalEndpointPath {
    /// The endpoint's id or uid
    endpoint_id: String,
}

/// 409 of every operation here while `operational_app` is unset.
#[derive(utoipa::ToResponse)]
#[response(description = "`operational_app` is not configured")]
#[allow(dead_code)] // Only describes answers.
struct OperationalOff(ErrorBody);

/// The operational application, as the tenant its endpoints belong to, created (under
/// its uid) by the first request that makes an endpoint.
async fn operational(s: &AppState) -> ApiResult<Tenant> {
    let key = operational_key(s)?;
    let app = match s.0.store.get_app(key).await? {
        Some(app) => app,
        None if ids::has_prefix(key, ids::APP) => {
            return Err(ApiError::Conflict(format!("the operational application {key} does not exist")))
        }
        None => super::app::create_named(s, key, "Operational webhooks").await?,
    };
    Ok(Tenant { principal: Principal::Admin, app })
}

/// The operational application when it exists, for requests that read or change what is
/// there: they create nothing (a `GET` made the application).
async fn operational_existing(s: &AppState) -> ApiResult<Option<Tenant>> {
    let key = operational_key(s)?;
    match s.0.store.get_app(key).await? {
        Some(app) => Ok(Some(Tenant { principal: Principal::Admin, app })),
        // (Named by an id, it is never made: a misconfiguration, said as writes say it.)
        None if ids::has_prefix(key, ids::APP) => {
            Err(ApiError::Conflict(format!("the operational application {key} does not exist")))
        }
        None => Ok(None),
    }
}

/// An endpoint operation's tenant: without the application there is no such endpoint.
async fn operational_of_endpoint(s: &AppState) -> ApiResult<Tenant> {
    operational_existing(s).await?.ok_or(ApiError::NotFound("endpoint"))
}

fn operational_key(s: &AppState) -> ApiResult<&str> {
    s.0.operational_app.as_deref().ok_or_else(|| {
        ApiError::Conflict(
            "operational webhooks are off: name their application in the configuration (`operational_app`)".into(),
        )
    })
}

/// The path of the endpoint operation an operational one stands for.
fn endpoint_path(endpoint_id: String) -> Path<(String, String)> {
    Path((String::new(), endpoint_id))
}

/// List the operational webhook endpoints.
#[utoipa::path(
    get,
    path = "/api/v1/operational-webhook/endpoint",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.list",
    params(PageOldestFirst),
    responses(
        (status = 200, description = "A page of endpoints", body = ListResponse<EndpointOut>),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 409, response = OperationalOff),
    )
)]
pub async fn list(State(s): State<AppState>, _: Admin, q: Query) -> ApiResult<axum::Json<ListResponse<EndpointOut>>> {
    let Some(t) = operational_existing(&s).await? else {
        // (The query is still checked, as a list's.)
        super::page_request(&q, false)?;
        return Ok(axum::Json(ListResponse { data: Vec::new(), iterator: None, prev_iterator: None, done: true }));
    };
    endpoint::list(State(s), t, q).await
}

/// Create an operational webhook endpoint: it receives `endpoint.*` and `message.attempt.*`
/// events (its `filterTypes` narrow them).
#[utoipa::path(
    post,
    path = "/api/v1/operational-webhook/endpoint",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.create",
    request_body = EndpointIn,
    responses(
        (status = 201, description = "Created", body = EndpointOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 409, description = "`operational_app` is not configured, or the uid is taken", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn create(State(s): State<AppState>, _: Admin, body: Json<EndpointIn>) -> ApiResult<impl IntoResponse> {
    let t = operational(&s).await?;
    endpoint::create(State(s), t, body).await
}

/// Get an operational webhook endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.get",
    params(OperationalEndpointPath),
    responses(
        (status = 200, description = "The endpoint", body = EndpointOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, response = OperationalOff),
    )
)]
pub async fn get(State(s): State<AppState>, _: Admin, Path(id): Path<String>) -> ApiResult<axum::Json<EndpointOut>> {
    let t = operational_of_endpoint(&s).await?;
    endpoint::get(State(s), t, endpoint_path(id)).await
}

/// Update an operational webhook endpoint (all of it).
#[utoipa::path(
    put,
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.update",
    params(OperationalEndpointPath),
    request_body = EndpointIn,
    responses(
        (status = 200, description = "Updated", body = EndpointOut),
        (status = 201, description = "Created under the uid of the path", body = EndpointOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such endpoint, and the path is an endpoint id", body = ErrorBody),
        (status = 409, response = OperationalOff),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn put(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: Json<EndpointIn>,
) -> ApiResult<axum::response::Response> {
    let t = operational(&s).await?;
    endpoint::put(State(s), t, endpoint_path(id), body).await
}

/// Delete an operational webhook endpoint.
#[utoipa::path(
    delete,
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.delete",
    params(OperationalEndpointPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, response = OperationalOff),
    )
)]
pub async fn delete(State(s): State<AppState>, _: Admin, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let t = operational_of_endpoint(&s).await?;
    endpoint::delete(State(s), t, endpoint_path(id)).await
}

/// Get an operational webhook endpoint's signing secret.
#[utoipa::path(
    get,
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.get-secret",
    params(OperationalEndpointPath),
    responses(
        (status = 200, description = "The secret", body = SecretOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, response = OperationalOff),
    )
)]
pub async fn get_secret(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SecretOut>> {
    let t = operational_of_endpoint(&s).await?;
    endpoint::get_secret(State(s), t, endpoint_path(id)).await
}

/// Rotate an operational webhook endpoint's signing secret.
#[utoipa::path(
    post,
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret/rotate",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.rotate-secret",
    params(OperationalEndpointPath),
    request_body(content = RotateIn, description = "Optional: without it, a new secret of the endpoint's kind is generated."),
    responses(
        (status = 200, description = "The new secret (the `whpk_` public key of an Ed25519 one)", body = SecretOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, response = OperationalOff),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn rotate_secret(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: OptionalJson<RotateIn>,
) -> ApiResult<axum::Json<SecretOut>> {
    let t = operational_of_endpoint(&s).await?;
    endpoint::rotate_secret(State(s), t, endpoint_path(id), body).await
}

/// Get an operational webhook endpoint's custom headers.
#[utoipa::path(
    get,
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}/headers",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.get-headers",
    params(OperationalEndpointPath),
    responses(
        (status = 200, description = "The custom headers", body = HeadersOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, response = OperationalOff),
    )
)]
pub async fn get_headers(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<HeadersOut>> {
    let t = operational_of_endpoint(&s).await?;
    endpoint::get_headers(State(s), t, endpoint_path(id)).await
}

/// Set an operational webhook endpoint's custom headers, replacing all of them.
#[utoipa::path(
    put,
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}/headers",
    tag = "Operational Webhook",
    operation_id = "v1.operational-webhook.endpoint.update-headers",
    params(OperationalEndpointPath),
    request_body = HeadersIn,
    responses(
        (status = 204, description = "Headers replaced"),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 409, response = OperationalOff),
        (status = 422, description = "A header is not valid, or is one hooklane sets itself", body = ErrorBody),
    )
)]
pub async fn put_headers(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: Json<HeadersIn>,
) -> ApiResult<StatusCode> {
    let t = operational_of_endpoint(&s).await?;
    endpoint::put_headers(State(s), t, endpoint_path(id), body).await
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get, put, delete, get_secret, rotate_secret, get_headers, put_headers),
    components(responses(OperationalOff))
)]
pub(crate) struct Doc;
