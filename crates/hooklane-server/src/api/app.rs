//! `/api/v1/app`: applications.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hooklane_core::ids;
use hooklane_core::model::{Application, Metadata, Principal};
use hooklane_core::{DateTime, Utc};
use hooklane_store::{AppListFilter, StoreError};
use serde::{Deserialize, Serialize};

use super::{check_len, check_metadata, check_name, check_rate_limit, page_request, ListResponse, Patch};
use crate::error::{conflict, ApiError, ApiResult};
use crate::extract::{Admin, AppRef, Auth, Json, Path, Query, Tenant};
use crate::openapi::{AppPath, ErrorBody, InvalidBody, InvalidQuery, NotAdmin, PageOldestFirst, Unauthorized};
use crate::state::AppState;

const UID_TAKEN: &str = "an application with this uid already exists";

/// A new application, or the whole of an existing one (PUT).
#[derive(Deserialize, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationIn {
    /// Up to 256 characters, not blank.
    #[schema(example = "Acme Inc.")]
    name: String,
    /// Your own unique key for the application, usable wherever its id is: 1–256 of
    /// `[a-zA-Z0-9-_.]`, not shaped like an application id.
    #[serde(default)]
    #[schema(example = "customer-42")]
    pub(super) uid: Option<String>,
    /// 1–65535; stored and answered for Svix compatibility, not enforced: deliveries are
    /// limited per endpoint, by the endpoint's `rateLimit`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65_535)]
    rate_limit: Option<u32>,
    /// Up to 64 entries of your own.
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    metadata: Metadata,
    /// `rateLimit` under the name Svix's SDKs send (used when `rateLimit` is not given).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65_535)]
    throttle_rate: Option<u32>,
}

impl ApplicationIn {
    /// `rateLimit`, or Svix's `throttleRate`.
    fn rate(&self) -> Option<u32> {
        self.rate_limit.or(self.throttle_rate)
    }
}

/// Changes to an application: absent fields stay as they are, `null` clears one.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationPatch {
    // `Patch<T>` is not a schema: absent or set for required fields (null is refused),
    // nullable for the ones `null` clears.
    #[serde(default)]
    #[schema(value_type = String)]
    name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    uid: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 65_535)]
    rate_limit: Patch<u32>,
    /// `rateLimit` under the name Svix's SDKs send (used when `rateLimit` is not given).
    #[serde(default)]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 65_535)]
    throttle_rate: Patch<u32>,
    #[serde(default)]
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    metadata: Patch<Metadata>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationOut {
    #[schema(example = "app_01JQ8Z3K5W6X7Y8Z9A0B1C2D3E")]
    id: String,
    uid: Option<String>,
    name: String,
    rate_limit: Option<u32>,
    /// `rateLimit` as Svix's SDKs read it (a 16-bit number; absent when larger).
    throttle_rate: Option<u16>,
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    metadata: Metadata,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Application> for ApplicationOut {
    fn from(a: Application) -> Self {
        ApplicationOut {
            id: a.id,
            uid: a.uid,
            name: a.name,
            throttle_rate: a.rate_limit.and_then(|r| u16::try_from(r).ok()),
            rate_limit: a.rate_limit,
            metadata: a.metadata,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

fn validate(a: &Application) -> ApiResult<()> {
    if a.name.trim().is_empty() {
        return Err(ApiError::validation("name", "must not be empty"));
    }
    check_len("name", &a.name, 256)?;
    if let Some(uid) = &a.uid {
        check_name("uid", uid)?;
        if ids::has_prefix(uid, ids::APP) {
            return Err(ApiError::validation("uid", "must not look like an application id"));
        }
        // Inbound sources: the uid of a source's own application is the source id.
        if ids::has_prefix(uid, ids::SOURCE) {
            return Err(ApiError::validation("uid", "must not look like a source id"));
        }
    }
    check_rate_limit("rateLimit", a.rate_limit)?;
    check_metadata("metadata", &a.metadata)
}

fn build(input: ApplicationIn) -> ApiResult<Application> {
    let now = super::now();
    let rate_limit = input.rate();
    let app = Application { uid: input.uid, rate_limit, metadata: input.metadata, ..Application::new(input.name, now) };
    validate(&app)?;
    Ok(app)
}

/// The application a message is posted with (Svix's `MessageIn.application`) when the
/// path names none: created under the path's key as its uid. A uid in the body must be
/// that key. Two messages creating the same application at once get the same one.
pub(crate) async fn create_for_message(s: &AppState, key: &str, mut input: ApplicationIn) -> ApiResult<Application> {
    match &input.uid {
        Some(uid) if uid != key => {
            return Err(ApiError::validation("application.uid", "must be the application named in the path"))
        }
        _ => input.uid = Some(key.to_string()),
    }
    let app = build(input)?;
    match s.0.store.create_app(app.clone()).await {
        Ok(()) => Ok(app),
        // Created meanwhile by another request.
        Err(StoreError::Conflict(_)) => s.0.store.get_app(key).await?.ok_or(ApiError::NotFound("application")),
        Err(e) => Err(e.into()),
    }
}

/// The application of uid `key`, named `name`, created as [`create_for_message`] does (for
/// one hooklane needs, such as the operational webhooks' own).
pub(crate) async fn create_named(s: &AppState, key: &str, name: &str) -> ApiResult<Application> {
    let input = ApplicationIn {
        name: name.to_string(),
        uid: Some(key.to_string()),
        rate_limit: None,
        metadata: Metadata::default(),
        throttle_rate: None,
    };
    create_for_message(s, key, input).await
}

/// Create an application.
///
/// With `get_if_exists=true` and a `uid` that is taken, answers 200 with that application
/// instead of 409.
#[utoipa::path(
    post,
    path = "/api/v1/app",
    tag = "Application",
    operation_id = "v1.application.create",
    params(("get_if_exists" = Option<bool>, Query, description = "Answer the existing application of this `uid`, if any, instead of 409.")),
    request_body = ApplicationIn,
    responses(
        (status = 201, description = "Created", body = ApplicationOut),
        (status = 200, description = "`get_if_exists=true`: the existing application of this `uid`", body = ApplicationOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 409, description = "The `uid` is taken", body = ErrorBody),
        (status = 422, description = "Invalid body or query", body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    _: Admin,
    q: Query,
    Json(input): Json<ApplicationIn>,
) -> ApiResult<Response> {
    // Checked first: a uid shaped as an id (another application's, an inbound source's
    // hidden one) must not find that application below.
    let app = build(input)?;
    // `get_if_exists=true`: answer 200 with the existing application of this uid, one
    // created by another request meanwhile too (Svix's SDKs' `get_or_create`, called by
    // workers side by side).
    let existing = |uid: Option<String>| async {
        match uid {
            Some(uid) => s.0.store.get_app(&uid).await,
            None => Ok(None),
        }
    };
    let get_if_exists = q.flag("get_if_exists")?.unwrap_or(false);
    if get_if_exists {
        if let Some(found) = existing(app.uid.clone()).await? {
            return Ok((StatusCode::OK, axum::Json(ApplicationOut::from(found))).into_response());
        }
    }
    match s.0.store.create_app(app.clone()).await {
        Ok(()) => Ok((StatusCode::CREATED, axum::Json(ApplicationOut::from(app))).into_response()),
        Err(StoreError::Conflict(_)) if get_if_exists => match existing(app.uid.clone()).await? {
            Some(found) => Ok((StatusCode::OK, axum::Json(ApplicationOut::from(found))).into_response()),
            None => Err(ApiError::Conflict(UID_TAKEN.into())),
        },
        Err(e) => Err(conflict(UID_TAKEN)(e)),
    }
}

/// List applications.
///
/// The admin token lists them all (but inbound sources' own applications), narrowed by
/// Svix's `exclude_apps_with_no_endpoints` and `exclude_apps_with_disabled_endpoints`; an
/// application token, its own application only, in one page.
#[utoipa::path(
    get,
    path = "/api/v1/app",
    tag = "Application",
    operation_id = "v1.application.list",
    params(
        PageOldestFirst,
        ("exclude_apps_with_no_endpoints" = Option<bool>, Query,
            description = "Leave out the applications with no endpoint"),
        ("exclude_apps_with_disabled_endpoints" = Option<bool>, Query,
            description = "Leave out the applications whose endpoints are all disabled (those with none stay)"),
        ("exclude_apps_with_svix_play_endpoints" = Option<bool>, Query,
            description = "Svix's; taken, with nothing to leave out"),
    ),
    responses(
        (status = 200, description = "A page of applications", body = ListResponse<ApplicationOut>),
        (status = 401, response = Unauthorized),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Auth(principal): Auth,
    q: Query,
) -> ApiResult<axum::Json<ListResponse<ApplicationOut>>> {
    let page = page_request(&q, false)?;
    // Svix's options; `exclude_apps_with_svix_play_endpoints` is taken and has nothing to
    // leave out (no endpoint here is a Svix Play one).
    let filter = AppListFilter {
        without_endpoints: q.flag("exclude_apps_with_no_endpoints")?.unwrap_or(false),
        only_disabled_endpoints: q.flag("exclude_apps_with_disabled_endpoints")?.unwrap_or(false),
    };
    q.flag("exclude_apps_with_svix_play_endpoints")?;
    match principal {
        Principal::Admin => {
            let page = s.0.store.list_apps_where(&page, filter).await?;
            Ok(axum::Json(ListResponse::from_page(page, |a| a.id.clone(), ApplicationOut::from)))
        }
        // An application token sees its own application only (if the options keep it).
        Principal::App { app_id: id, .. } => {
            let app = s.0.store.get_app(&id).await?.ok_or(ApiError::NotFound("application"))?;
            let endpoints =
                if filter == AppListFilter::default() { Vec::new() } else { s.0.store.app_endpoints(&id).await? };
            let left_out = (filter.without_endpoints && endpoints.is_empty())
                || (filter.only_disabled_endpoints && !endpoints.is_empty() && endpoints.iter().all(|e| e.disabled));
            let data = if left_out { Vec::new() } else { vec![app.into()] };
            Ok(axum::Json(ListResponse { data, iterator: None, prev_iterator: None, done: true }))
        }
        // (Refused before it gets here: see `crate::capability::poller_key_may`.)
        Principal::Poller { .. } => Err(ApiError::Forbidden("a polling endpoint's key may only read its poller")),
    }
}

/// Get an application.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}",
    tag = "Application",
    operation_id = "v1.application.get",
    params(AppPath),
    responses(
        (status = 200, description = "The application", body = ApplicationOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, or not this token's", body = ErrorBody),
    )
)]
pub async fn get(t: Tenant) -> axum::Json<ApplicationOut> {
    axum::Json(t.app.into())
}

/// Update an application, or create it.
///
/// PUT: full update; creates the application when the path names a uid that does not exist
/// (admin token only).
#[utoipa::path(
    put,
    path = "/api/v1/app/{app_id}",
    tag = "Application",
    operation_id = "v1.application.update",
    params(AppPath),
    request_body = ApplicationIn,
    responses(
        (status = 200, description = "Updated", body = ApplicationOut),
        (status = 201, description = "Created under the uid of the path", body = ApplicationOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application (or not this token's) and none can be created", body = ErrorBody),
        (status = 409, description = "The `uid` is taken, or the application belongs to an inbound source", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn put(
    State(s): State<AppState>,
    app: AppRef,
    Path(key): Path<String>,
    Json(input): Json<ApplicationIn>,
) -> ApiResult<Response> {
    let (mut app, admin) = match app {
        AppRef::Found(t) => (t.app, matches!(t.principal, Principal::Admin)),
        AppRef::Missing { principal: Principal::Admin, .. } => match create_under_uid(&s, &key, input.clone()).await? {
            (app, true) => return Ok((StatusCode::CREATED, axum::Json(ApplicationOut::from(app))).into_response()),
            // A concurrent PUT created it first: this one updates it, as if it came second.
            (app, false) => (app, true),
        },
        AppRef::Missing { .. } => return Err(ApiError::NotFound("application")),
    };
    if super::source::owned_by_source(&app) {
        return Err(source_owned(&app));
    }
    app.name = input.name.clone();
    app.rate_limit = input.rate();
    // Addressed by its uid, a body without one keeps it: PUT stays repeatable, where
    // clearing it would make the same request create a second application next time.
    // An application's token, which may not change the uid, keeps it by leaving it out.
    if input.uid.is_some() || (admin && app.uid.as_deref() != Some(key.as_str())) {
        uid_change_allowed(admin, &app, &input.uid)?;
        app.uid = input.uid;
    }
    app.metadata = input.metadata;
    save(&s, app).await.map(IntoResponse::into_response)
}

/// Creates the application `input` describes with the uid `key`, a path that named no
/// application (an application id cannot be chosen: it is not found); true when this call
/// created it. When a concurrent caller created it first, that application, and false.
pub(super) async fn create_under_uid(s: &AppState, key: &str, input: ApplicationIn) -> ApiResult<(Application, bool)> {
    if ids::has_prefix(key, ids::APP) {
        return Err(ApiError::NotFound("application"));
    }
    // Another uid in the body was overridden by the path's: the same PUT, sent again (an
    // SDK retries one that timed out), then made a second application instead of finding
    // the first.
    if input.uid.as_deref().is_some_and(|uid| uid != key) {
        return Err(ApiError::validation("uid", "must be the application's uid named in the path"));
    }
    let mut app = build(input)?;
    app.uid = Some(key.to_string());
    validate(&app)?;
    match s.0.store.create_app(app.clone()).await {
        Ok(()) => Ok((app, true)),
        Err(StoreError::Conflict(_)) => match s.0.store.get_app(key).await? {
            Some(winner) => Ok((winner, false)),
            None => Err(ApiError::Conflict(UID_TAKEN.into())),
        },
        Err(e) => Err(e.into()),
    }
}

/// Partly update an application.
#[utoipa::path(
    patch,
    path = "/api/v1/app/{app_id}",
    tag = "Application",
    operation_id = "v1.application.patch",
    params(AppPath),
    request_body = ApplicationPatch,
    responses(
        (status = 200, description = "Updated", body = ApplicationOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, or not this token's", body = ErrorBody),
        (status = 409, description = "The `uid` is taken, or the application belongs to an inbound source", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn patch(
    State(s): State<AppState>,
    t: Tenant,
    Json(p): Json<ApplicationPatch>,
) -> ApiResult<axum::Json<ApplicationOut>> {
    if super::source::owned_by_source(&t.app) {
        return Err(source_owned(&t.app));
    }
    let mut app = t.app;
    p.name.apply("name", &mut app.name)?;
    let mut uid = app.uid.clone();
    p.uid.apply_opt(&mut uid);
    uid_change_allowed(matches!(t.principal, Principal::Admin), &app, &uid)?;
    app.uid = uid;
    match p.rate_limit {
        Patch::Absent => p.throttle_rate.apply_opt(&mut app.rate_limit),
        given => given.apply_opt(&mut app.rate_limit),
    }
    p.metadata.apply("metadata", &mut app.metadata)?;
    save(&s, app).await
}

/// Only the admin token changes an application's `uid`: uids are one namespace for the whole
/// server, through which the admin's requests (a `PUT`, a message with `application`, the
/// operational application) find applications, so an application's token taking a uid
/// would have them find its application.
fn uid_change_allowed(admin: bool, app: &Application, uid: &Option<String>) -> ApiResult<()> {
    if admin || app.uid == *uid {
        return Ok(());
    }
    Err(ApiError::Forbidden("only the admin token may change an application's uid"))
}

async fn save(s: &AppState, mut app: Application) -> ApiResult<axum::Json<ApplicationOut>> {
    app.updated_at = super::now();
    validate(&app)?;
    s.0.store.update_app(app.clone()).await.map_err(conflict(UID_TAKEN))?;
    Ok(axum::Json(app.into()))
}

/// Delete an application, with its endpoints, messages and attempts.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app_id}",
    tag = "Application",
    operation_id = "v1.application.delete",
    params(AppPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application, or not this token's", body = ErrorBody),
        (status = 409, description = "The application belongs to an inbound source: delete the source", body = ErrorBody),
    )
)]
pub async fn delete(State(s): State<AppState>, t: Tenant) -> ApiResult<StatusCode> {
    if t.principal != Principal::Admin {
        return Err(ApiError::Forbidden("only the admin token may delete an application"));
    }
    if super::source::owned_by_source(&t.app) {
        return Err(source_owned(&t.app));
    }
    s.0.store.delete_app(&t.app.id).await?;
    // What any node holds in memory for its endpoints is not sent after the answer.
    s.0.dispatcher.stop(hooklane_store::Stop::Deleted(t.app.id.clone())).await;
    Ok(StatusCode::NO_CONTENT)
}

/// An inbound source's own application is changed through the source.
fn source_owned(app: &Application) -> ApiError {
    let source = app.uid.clone().unwrap_or_default();
    ApiError::Conflict(format!(
        "this application belongs to inbound source {source}: change or delete it through /api/v1/source/{source}"
    ))
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get, put, patch, delete),
    components(schemas(ApplicationIn, ApplicationPatch, ApplicationOut))
)]
pub(crate) struct Doc;
