//! `/api/v1/event-type`: the catalogue of event types.

use std::future::Future;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hooklane_core::model::{EventType, Principal};
use hooklane_core::{DateTime, Utc};
use hooklane_store::{Page, PageRequest, StoreResult};
use serde::{Deserialize, Serialize};

use super::{check_len, check_name, page_request_forward, ListResponse, Patch};
use crate::error::{conflict, missing, ApiError, ApiResult};
use crate::extract::{Admin, Auth, Json, Path, Query};
use crate::openapi::{ErrorBody, EventTypePath, InvalidBody, InvalidQuery, NotAdmin, PageOldestFirst, Unauthorized};
use crate::state::AppState;

/// A new event type.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTypeIn {
    /// 1–256 of `[a-zA-Z0-9-_.]`; the event type's key, unique.
    #[schema(example = "invoice.paid")]
    name: String,
    /// Up to 4096 characters.
    #[serde(default)]
    description: String,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    deprecated: bool,
    /// Svix's older form of `featureFlags`: one flag (1–256 of `[a-zA-Z0-9-_.]`).
    #[serde(default)]
    feature_flag: Option<String>,
    /// The flags the event type is hidden behind: a token sees it when it holds one of
    /// them (at most 64, each 1–256 of `[a-zA-Z0-9-_.]`; with `featureFlag`, both count).
    #[serde(default)]
    feature_flags: Option<Vec<String>>,
    /// JSON Schemas of the payload, by version (an object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    schemas: Option<serde_json::Value>,
    /// The group the event type is shown in (1–256 characters).
    #[serde(default)]
    #[schema(example = "billing")]
    group_name: Option<String>,
}

impl EventTypeIn {
    /// The event type this describes, validated, as created at `now`.
    pub(crate) fn build(self, now: DateTime<Utc>) -> ApiResult<EventType> {
        let feature_flags = flags_of(self.feature_flag, self.feature_flags)?;
        let et = EventType {
            name: self.name,
            description: self.description,
            archived: self.archived,
            deprecated: self.deprecated,
            feature_flags,
            group_name: self.group_name,
            schemas: self.schemas,
            created_at: now,
            updated_at: now,
        };
        validate(&et)?;
        check_schemas_depth(et.schemas.as_ref())?;
        Ok(et)
    }
}

/// The whole of an event type but its name, which the path gives (PUT).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTypeUpdate {
    /// Up to 4096 characters.
    #[serde(default)]
    description: String,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    deprecated: bool,
    /// As in `EventTypeIn`.
    #[serde(default)]
    feature_flag: Option<String>,
    /// As in `EventTypeIn`.
    #[serde(default)]
    feature_flags: Option<Vec<String>>,
    /// JSON Schemas of the payload, by version (an object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    schemas: Option<serde_json::Value>,
    /// As in `EventTypeIn`.
    #[serde(default)]
    group_name: Option<String>,
}

/// Most feature flags one event type is behind.
const MAX_FLAGS: usize = 64;

/// The flags an event type is behind, from `featureFlag` and Svix's list form
/// `featureFlags` (both count), sorted, each once.
fn flags_of(flag: Option<String>, flags: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let mut all: Vec<String> = flags.unwrap_or_default().into_iter().chain(flag).collect();
    all.sort();
    all.dedup();
    if all.len() > MAX_FLAGS {
        return Err(ApiError::validation("featureFlags", format!("at most {MAX_FLAGS} flags")));
    }
    Ok(all)
}

/// Changes to an event type: absent fields stay as they are, `null` clears one.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTypePatch {
    // `Patch<T>` is not a schema: absent or set for required fields (null is refused),
    // nullable for the ones `null` clears.
    #[serde(default)]
    #[schema(value_type = String)]
    description: Patch<String>,
    #[serde(default)]
    #[schema(value_type = bool)]
    archived: Patch<bool>,
    #[serde(default)]
    #[schema(value_type = bool)]
    deprecated: Patch<bool>,
    /// One flag in place of all (`null` clears them).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    feature_flag: Patch<String>,
    /// The flags in place of all (`[]` or `null` clears them; with `featureFlag`, both count).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    feature_flags: Patch<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    schemas: Patch<serde_json::Value>,
    /// `null` takes the event type out of its group.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    group_name: Patch<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeOut {
    #[schema(example = "invoice.paid")]
    name: String,
    description: String,
    archived: bool,
    deprecated: bool,
    /// Svix's older form of `featureFlags`: the first of them (`null` without).
    feature_flag: Option<String>,
    /// The flags the event type is hidden behind (`null` without).
    feature_flags: Option<Vec<String>>,
    /// The group the event type is shown in (`null` without).
    group_name: Option<String>,
    /// Left out of lists unless `with_content=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    schemas: Option<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl EventTypeOut {
    pub(crate) fn new(e: EventType, with_content: bool) -> Self {
        EventTypeOut {
            name: e.name,
            description: e.description,
            archived: e.archived,
            deprecated: e.deprecated,
            feature_flag: e.feature_flags.first().cloned(),
            feature_flags: (!e.feature_flags.is_empty()).then_some(e.feature_flags),
            group_name: e.group_name,
            schemas: if with_content { e.schemas } else { None },
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

fn validate(e: &EventType) -> ApiResult<()> {
    check_name("name", &e.name)?;
    check_len("description", &e.description, 4096)?;
    for flag in &e.feature_flags {
        check_name("featureFlags", flag)?;
    }
    if let Some(group) = &e.group_name {
        if group.trim().is_empty() {
            return Err(ApiError::validation("groupName", "must not be empty"));
        }
        check_len("groupName", group, 256)?;
    }
    if matches!(&e.schemas, Some(v) if !v.is_object()) {
        return Err(ApiError::validation("schemas", "must be an object"));
    }
    Ok(())
}

/// Deepest `schemas` (the versions' map included) taken: what an OpenAPI import can make
/// (a schema 100 levels deep below its root, in its version's map), which lists and
/// exports nest a few levels deeper still, short of the 128 serde-based clients (the Svix
/// SDKs') read.
pub(crate) const MAX_SCHEMAS_DEPTH: usize = 102;

/// `schemas` being set: no deeper than [`MAX_SCHEMAS_DEPTH`]. (Checked only when they are
/// set, so that an event type stored before the limit can still be changed otherwise.)
fn check_schemas_depth(schemas: Option<&serde_json::Value>) -> ApiResult<()> {
    let Some(schemas) = schemas else { return Ok(()) };
    if super::message::nesting_depth(&schemas.to_string()) > MAX_SCHEMAS_DEPTH {
        return Err(ApiError::validation(
            "schemas",
            format!("must not nest objects and arrays more than {MAX_SCHEMAS_DEPTH} deep"),
        ));
    }
    Ok(())
}

/// Create an event type.
#[utoipa::path(
    post,
    path = "/api/v1/event-type",
    tag = "Event Type",
    operation_id = "v1.event-type.create",
    request_body = EventTypeIn,
    responses(
        (status = 201, description = "Created", body = EventTypeOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 409, description = "An event type of this name exists and is not archived (an archived one is brought back)", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn create(State(s): State<AppState>, _: Admin, Json(input): Json<EventTypeIn>) -> ApiResult<Response> {
    let mut et = input.build(super::now())?;
    const TAKEN: &str = "an event type with this name already exists";
    match s.0.store.create_event_type(et.clone()).await {
        Ok(()) => {}
        // An archived one is brought back, as Svix's create does ("create new or unarchive
        // existing"): replaced by what was sent, keeping when it was first created.
        Err(hooklane_store::StoreError::Conflict(_)) => match s.0.store.get_event_type(&et.name).await? {
            Some(old) if old.archived => {
                et.created_at = old.created_at;
                s.0.store.update_event_type(et.clone()).await?;
            }
            _ => return Err(ApiError::Conflict(TAKEN.into())),
        },
        Err(e) => return Err(conflict(TAKEN)(e)),
    }
    Ok((StatusCode::CREATED, axum::Json(EventTypeOut::new(et, true))).into_response())
}

/// List event types.
///
/// Listing is open to application tokens too: the portal shows what can be subscribed to.
/// An application token does not see the event types behind a feature flag it was not
/// given (`featureFlags` of its app-portal access or integration).
#[utoipa::path(
    get,
    path = "/api/v1/event-type",
    tag = "Event Type",
    operation_id = "v1.event-type.list",
    params(
        PageOldestFirst,
        ("include_archived" = Option<bool>, Query, description = "Include archived event types (default false)."),
        ("with_content" = Option<bool>, Query, description = "Include each event type's `schemas` (default false)."),
    ),
    responses(
        (status = 200, description = "A page of event types", body = ListResponse<EventTypeOut>),
        (status = 401, response = Unauthorized),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Auth(principal): Auth,
    q: Query,
) -> ApiResult<axum::Json<ListResponse<EventTypeOut>>> {
    let page = page_request_forward(&q, false)?;
    let include_archived = q.flag("include_archived")?.unwrap_or(false);
    let with_content = q.flag("with_content")?.unwrap_or(false);
    let store = &s.0.store;
    let page = visible_page(
        page,
        |e| principal.sees_flags(&e.feature_flags),
        |page| async move { store.list_event_types(&page, include_archived).await },
    )
    .await?;
    let mut out = ListResponse::from_page(page, |e| e.name.clone(), |e| EventTypeOut::new(e, with_content));
    out.prev_iterator = None; // (names may start with `-`: no page before)
    Ok(axum::Json(out))
}

/// The first `page.limit` event types after `page.iterator` that the caller `sees`, read
/// with `read`, and whether none lies after them. Those hidden from the caller are skipped,
/// and the page filled from those after them, so a page is short only when it is the last.
/// The next page starts after the last one answered, which is what the iterator says.
async fn visible_page<R, F>(
    mut page: PageRequest,
    sees: impl Fn(&EventType) -> bool,
    read: R,
) -> StoreResult<Page<EventType>>
where
    R: Fn(PageRequest) -> F,
    F: Future<Output = StoreResult<Page<EventType>>>,
{
    let limit = page.limit;
    let mut visible = Vec::with_capacity(limit);
    let done = loop {
        let found = read(page.clone()).await?;
        let Some(last) = found.items.last().map(|e| e.name.clone()) else { break true };
        page.iterator = Some(last);
        // The first read is the caller's page (all it takes when nothing is hidden: the
        // admin's, always); the reads after it, made only when some were hidden, take as
        // many as any caller may ask for at once, whatever this one's limit: an end
        // customer's portal token asking `limit=1` past N hidden event types costs N / 250
        // reads, not N. (No read is larger than one a caller may ask for with
        // `limit=250`, so the rounds need no other bound.)
        page.limit = super::MAX_LIMIT.max(limit);
        visible.extend(found.items.into_iter().filter(&sees));
        if visible.len() > limit {
            visible.truncate(limit);
            break false;
        }
        if found.done || visible.len() == limit {
            break found.done;
        }
    };
    Ok(Page { items: visible, done })
}

/// Get an event type.
#[utoipa::path(
    get,
    path = "/api/v1/event-type/{name}",
    tag = "Event Type",
    operation_id = "v1.event-type.get",
    params(EventTypePath),
    responses(
        (status = 200, description = "The event type", body = EventTypeOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such event type (or one behind a feature flag the token lacks)", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    Auth(principal): Auth,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<EventTypeOut>> {
    Ok(axum::Json(EventTypeOut::new(visible(&s, &principal, &name).await?, true)))
}

/// The event type `name` as `principal` may see it: one behind a feature flag the caller
/// lacks is not there for it (404, as a missing one).
pub(crate) async fn visible(s: &AppState, principal: &Principal, name: &str) -> ApiResult<EventType> {
    let et = s.0.store.get_event_type(name).await?;
    et.filter(|et| principal.sees_flags(&et.feature_flags)).ok_or(ApiError::NotFound("event type"))
}

/// Update an event type, or create it.
///
/// PUT: replaces the event type, creating it when missing (as Svix does).
#[utoipa::path(
    put,
    path = "/api/v1/event-type/{name}",
    tag = "Event Type",
    operation_id = "v1.event-type.update",
    params(EventTypePath),
    request_body = EventTypeUpdate,
    responses(
        (status = 200, description = "Updated", body = EventTypeOut),
        (status = 201, description = "Created", body = EventTypeOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 422, description = "Invalid name or body", body = ErrorBody),
    )
)]
pub async fn put(
    State(s): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    Json(input): Json<EventTypeUpdate>,
) -> ApiResult<Response> {
    // (The name is the path's.)
    check_name("name", &name).map_err(ApiError::in_path)?;
    let now = super::now();
    let et = EventType {
        name,
        description: input.description,
        archived: input.archived,
        deprecated: input.deprecated,
        feature_flags: flags_of(input.feature_flag, input.feature_flags)?,
        group_name: input.group_name,
        schemas: input.schemas,
        created_at: now,
        updated_at: now,
    };
    validate(&et)?;
    check_schemas_depth(et.schemas.as_ref())?;
    let (et, created) = replace(&s, et).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(EventTypeOut::new(et, true))).into_response())
}

/// Every event type, in name order; archived ones too when `include_archived`.
pub(crate) async fn all(s: &AppState, include_archived: bool) -> ApiResult<Vec<EventType>> {
    let list =
        |page: hooklane_store::PageRequest| async move { s.0.store.list_event_types(&page, include_archived).await };
    super::every(|e: &EventType| e.name.clone(), list).await
}

/// Stores `et` in place of the event type of its name, or as a new one; answers what was
/// stored (keeping the replaced one's creation time) and whether it was created.
pub(crate) async fn replace(s: &AppState, mut et: EventType) -> ApiResult<(EventType, bool)> {
    let existing = s.0.store.get_event_type(&et.name).await?;
    if let Some(old) = existing {
        et.created_at = old.created_at;
    } else {
        match s.0.store.create_event_type(et.clone()).await {
            Ok(()) => return Ok((et, true)),
            // Created concurrently: replaced in turn, as if this request came second.
            Err(hooklane_store::StoreError::Conflict(_)) => {
                if let Some(winner) = s.0.store.get_event_type(&et.name).await? {
                    et.created_at = winner.created_at;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    s.0.store.update_event_type(et.clone()).await?;
    Ok((et, false))
}

/// Partly update an event type.
#[utoipa::path(
    patch,
    path = "/api/v1/event-type/{name}",
    tag = "Event Type",
    operation_id = "v1.event-type.patch",
    params(EventTypePath),
    request_body = EventTypePatch,
    responses(
        (status = 200, description = "Updated", body = EventTypeOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such event type", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn patch(
    State(s): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    Json(p): Json<EventTypePatch>,
) -> ApiResult<axum::Json<EventTypeOut>> {
    let mut et = s.0.store.get_event_type(&name).await?.ok_or(ApiError::NotFound("event type"))?;
    p.description.apply("description", &mut et.description)?;
    p.archived.apply("archived", &mut et.archived)?;
    p.deprecated.apply("deprecated", &mut et.deprecated)?;
    // Either form replaces every flag; given both, both count.
    let given = |p: Patch<Vec<String>>| match p {
        Patch::Absent => None,
        Patch::Null => Some(Vec::new()),
        Patch::Set(list) => Some(list),
    };
    let one = match p.feature_flag {
        Patch::Absent => None,
        Patch::Null => Some(Vec::new()),
        Patch::Set(flag) => Some(vec![flag]),
    };
    if let Some(flags) = match (one, given(p.feature_flags)) {
        (None, None) => None,
        (one, list) => Some(flags_of(None, Some(one.into_iter().chain(list).flatten().collect()))?),
    } {
        et.feature_flags = flags;
    }
    p.group_name.apply_opt(&mut et.group_name);
    if let Patch::Set(given) = &p.schemas {
        check_schemas_depth(Some(given))?;
    }
    p.schemas.apply_opt(&mut et.schemas);
    et.updated_at = super::now();
    validate(&et)?;
    s.0.store.update_event_type(et.clone()).await?;
    Ok(axum::Json(EventTypeOut::new(et, true)))
}

/// Archive an event type, or delete it.
///
/// DELETE archives the event type; `?expunge=true` removes it for good.
#[utoipa::path(
    delete,
    path = "/api/v1/event-type/{name}",
    tag = "Event Type",
    operation_id = "v1.event-type.delete",
    params(
        EventTypePath,
        ("expunge" = Option<bool>, Query, description = "Delete it for good instead of archiving it (default false)."),
    ),
    responses(
        (status = 204, description = "Archived, or deleted"),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such event type", body = ErrorBody),
        (status = 422, response = InvalidQuery),
    )
)]
pub async fn delete(State(s): State<AppState>, _: Admin, Path(name): Path<String>, q: Query) -> ApiResult<StatusCode> {
    if q.flag("expunge")?.unwrap_or(false) {
        s.0.store.delete_event_type(&name).await.map_err(missing("event type"))?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let mut et = s.0.store.get_event_type(&name).await?.ok_or(ApiError::NotFound("event type"))?;
    et.archived = true;
    et.updated_at = super::now();
    s.0.store.update_event_type(et).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get, put, patch, delete),
    components(schemas(EventTypeIn, EventTypeUpdate, EventTypePatch, EventTypeOut))
)]
pub(crate) struct Doc;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// `count` event types `t0000`…, those at `shown` without a flag, the others behind
    /// one the caller lacks.
    fn catalogue(count: usize, shown: &[usize]) -> Vec<EventType> {
        let now = Utc::now();
        (0..count)
            .map(|i| EventType {
                name: format!("t{i:04}"),
                description: String::new(),
                archived: false,
                deprecated: false,
                feature_flags: if shown.contains(&i) { vec![] } else { vec!["beta".into()] },
                group_name: None,
                schemas: None,
                created_at: now,
                updated_at: now,
            })
            .collect()
    }

    /// A store's page of `all` (sorted by name), as the stores read one: after the
    /// iterator, `limit` of them, `done` when no more lie beyond.
    fn store_page(all: &[EventType], page: &PageRequest) -> Page<EventType> {
        let mut items: Vec<EventType> = all
            .iter()
            .filter(|e| match &page.iterator {
                None => true,
                Some(it) if page.descending => e.name < *it,
                Some(it) => e.name > *it,
            })
            .cloned()
            .collect();
        if page.descending {
            items.reverse();
        }
        let done = items.len() <= page.limit;
        items.truncate(page.limit);
        Page { items, done }
    }

    /// Pages through `all` as a caller without the flag, `limit` at a time: every event
    /// type it sees, each page's, and the store reads it cost.
    async fn page_through(all: &[EventType], limit: usize, descending: bool) -> (Vec<Vec<String>>, usize) {
        let reads = AtomicUsize::new(0);
        let read = |page: PageRequest| {
            reads.fetch_add(1, Ordering::SeqCst);
            let found = store_page(all, &page);
            async move { Ok(found) }
        };
        let sees = |e: &EventType| e.feature_flags.is_empty();
        let (mut pages, mut iterator) = (Vec::new(), None);
        loop {
            let request = PageRequest { limit, iterator: iterator.clone(), descending, backwards: false };
            let page = visible_page(request, sees, read).await.expect("page");
            assert!(page.items.len() <= limit, "more than asked for");
            let names: Vec<String> = page.items.iter().map(|e| e.name.clone()).collect();
            // (The iterator is the last name answered: the next page starts after it.)
            iterator = names.last().cloned().or(iterator);
            pages.push(names);
            assert!(pages.len() <= all.len() + 1, "paging does not end");
            if page.done {
                return (pages, reads.load(Ordering::SeqCst));
            }
            assert_eq!(pages.last().map(Vec::len), Some(limit), "a short page that is not the last");
        }
    }

    /// A caller asking one event type at a time, with hundreds hidden from it between
    /// those it sees, gets exactly those, in order, and each page costs a few store reads
    /// (a page of the most a read takes at a time), not one read per hidden event type.
    #[tokio::test]
    async fn hidden_event_types_are_skipped_a_whole_page_at_a_time() {
        let shown = [0, 1, 301, 302, 900, 1199];
        let all = catalogue(1200, &shown);
        let names = |at: &[usize]| at.iter().map(|&i| format!("t{i:04}")).collect::<Vec<_>>();
        let (pages, reads) = page_through(&all, 1, false).await;
        assert_eq!(pages.concat(), names(&shown));
        assert!(pages.iter().all(|p| p.len() == 1), "{pages:?}");
        // At most each of the six pages' own read of 1, the 1200 read 250 at a time once
        // over (5), and for each page one more: the read it stopped in, which the next
        // page reads again. (One a hidden event type would be over 1000.)
        assert!(reads <= 17, "{reads} store reads for {} pages", pages.len());

        let (pages, reads) = page_through(&all, 4, true).await;
        let mut backwards = names(&shown);
        backwards.reverse();
        assert_eq!(pages, vec![backwards[..4].to_vec(), backwards[4..].to_vec()]);
        assert!(reads <= 8, "{reads} store reads");

        // Nothing hidden: one read of the caller's page each, as before.
        let all = catalogue(10, &(0..10).collect::<Vec<_>>());
        let (pages, reads) = page_through(&all, 3, false).await;
        assert_eq!(pages.concat(), names(&(0..10).collect::<Vec<_>>()));
        assert_eq!((pages.len(), reads), (4, 4));
    }
}
