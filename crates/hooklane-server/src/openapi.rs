//! The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json` and printed by
//! `hooklane openapi`. Each API module describes its own operations and types (its `Doc`);
//! this module puts them together with what they share: the bearer token, the error body, the
//! path parameters, the query parameters several operations read alike, the error answers most
//! operations give and the tags.

use std::sync::LazyLock;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use hooklane_core::{DateTime, Utc};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

use crate::api;

/// Every error answer of the API: a stable `code` and a human-readable `detail` (for
/// `validation` errors, a list of what was wrong where, as Svix's `HTTPValidationError`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes what `ApiError::into_response` writes; never built.
pub struct ErrorBody {
    /// Stable machine-readable code, such as `not_found`, `validation` or `conflict`.
    #[schema(example = "not_found")]
    code: String,
    /// A sentence, or for `validation` a list of `{loc, msg, type}` objects.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

// The path parameters of the operations, one struct per combination, in the order of the
// path: `params(EndpointPath, …)` in `#[utoipa::path]` describes them all alike.

/// `{app_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths; the handlers read them with `Path` or `Tenant`.
pub struct AppPath {
    /// The application's id or uid
    app_id: String,
}

/// `{app_id}/…/{endpoint_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct EndpointPath {
    /// The application's id or uid
    app_id: String,
    /// The endpoint's id or uid
    endpoint_id: String,
}

/// `{app_id}/…/{msg_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct MessagePath {
    /// The application's id or uid
    app_id: String,
    /// The message's id or its `eventId`
    msg_id: String,
}

/// `{app_id}/msg/{msg_id}/attempt/{attempt_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct AttemptPath {
    /// The application's id or uid
    app_id: String,
    /// The message's id or its `eventId`
    msg_id: String,
    /// The attempt's id
    attempt_id: String,
}

/// `{app_id}/msg/{msg_id}/endpoint/{endpoint_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct MessageEndpointPath {
    /// The application's id or uid
    app_id: String,
    /// The message's id or its `eventId`
    msg_id: String,
    /// The endpoint's id or uid
    endpoint_id: String,
}

/// `{app_id}/events/subscription/{subscription_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct SubscriptionPath {
    /// The application's id or uid
    app_id: String,
    #[doc = "The subscription's name, chosen by the consumer: 1–256 of `[a-zA-Z0-9-_.]`. A new name starts at \
             the beginning of the stream"]
    subscription_id: String,
}

/// `/event-type/{name}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct EventTypePath {
    /// The event type's name
    name: String,
}

/// `/source/{source_id}` and `/in/{source_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct SourcePath {
    /// The source's id
    source_id: String,
}

/// `/background-task/{task_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct TaskPath {
    /// The task's id (`qtask_…`), as a recovery or a replay answered it
    task_id: String,
}

/// `/source/{source_id}/request/{request_id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only describes paths.
pub struct SourceRequestPath {
    /// The source's id
    source_id: String,
    /// The request record's id
    request_id: String,
}

// The query parameters that several operations read alike, one struct per set, named in
// `params(…)` after the path struct: `params(AppPath, PageNewestFirst, MessageFilters, …)`.
// Each set is what one function reads (`api::page_request`, `api::message::message_filter`,
// the attempt filter, `Pull::parse` of the events); an operation's own parameters stay inline.

/// `limit`, `iterator`, `order` of a list whose default order is newest first.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only describes queries; the handlers read them with `page_request`.
pub struct PageNewestFirst {
    /// Most items in the page, 1 to 250 (default 50)
    #[param(minimum = 1, maximum = 250)]
    limit: Option<u32>,
    /// The `iterator` of the previous page: this page goes on after it (absent or empty: the first page)
    iterator: Option<String>,
    /// `descending` (the default: newest first) or `ascending`
    order: Option<String>,
}

/// `limit`, `iterator`, `order` of a list whose default order is oldest first.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only describes queries.
pub struct PageOldestFirst {
    /// Most items in the page, 1 to 250 (default 50)
    #[param(minimum = 1, maximum = 250)]
    limit: Option<u32>,
    /// The `iterator` of the previous page: this page goes on after it (absent or empty: the first page)
    iterator: Option<String>,
    /// `ascending` (the default: oldest first; event types by name) or `descending`
    order: Option<String>,
}

/// The filters of message lists, as `message_filter` reads them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only describes queries.
pub struct MessageFilters {
    #[doc = "Only messages of these event types: repeat the parameter, use `event_types[]`, or join names with \
             commas (at most 100 names)"]
    event_types: Option<Vec<String>>,
    /// Only messages on this channel
    channel: Option<String>,
    /// Only messages with this tag
    tag: Option<String>,
    /// Only messages created before this time (RFC 3339)
    before: Option<DateTime<Utc>>,
    /// Only messages created after this time (RFC 3339)
    after: Option<DateTime<Utc>>,
}

/// The filters of attempt lists (`status`, `before`, `after`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only describes queries.
pub struct AttemptFilters {
    /// Only attempts with this status: 0 success, 1 pending, 2 fail, 3 sending, 4 canceled (whatever
    /// `expanded_statuses` says of how they are shown)
    #[param(minimum = 0, maximum = 4)]
    status: Option<u8>,
    /// Only attempts made before this time (RFC 3339)
    before: Option<DateTime<Utc>>,
    /// Only attempts made after this time (RFC 3339)
    after: Option<DateTime<Utc>>,
    /// Only attempts answered with a status of this class: 100, 200, 300, 400, 500 (`1xx`…`5xx`),
    /// or 0 for no answer at all
    status_code_class: Option<u16>,
    #[doc = "Only attempts of messages of these event types (repeat the parameter, use `event_types[]`, or join \
             names with commas)"]
    event_types: Option<Vec<String>>,
    /// Only attempts of messages on this channel
    channel: Option<String>,
    /// Only attempts of messages with this tag
    tag: Option<String>,
}

/// Svix's `expanded_statuses`, which every answer showing how a delivery or an attempt stands
/// reads, as `api::attempt::expanded_statuses` does.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only describes queries.
pub struct ExpandedStatuses {
    #[doc = "Whether what a transformation cancelled is shown as canceled (status 4, `canceled`), as Svix's \
             SDKs ask; without it, or `false`, it is shown as a success (0, `success`), as Svix answers the \
             clients that came before that status"]
    expanded_statuses: Option<bool>,
}

/// What every read of an application's events takes, besides where it starts (`iterator`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Only describes queries.
pub struct EventsRead {
    #[doc = "Most messages in one read, 1 to 250 (default 50); fewer, with `done: false`, once their payloads reach \
             8 MiB"]
    #[param(minimum = 1, maximum = 250)]
    limit: Option<u32>,
    #[doc = "Only messages of these event types: repeat the parameter, use `event_types[]`, or join names with \
             commas (at most 100 names)"]
    event_types: Option<Vec<String>>,
    #[doc = "Only messages on one of these channels: repeat the parameter, use `channels[]`, or join names with \
             commas (at most 100 names)"]
    channels: Option<Vec<String>>,
    /// Only messages created after this time (RFC 3339)
    after: Option<DateTime<Utc>>,
    /// Whether messages carry their payloads (default true; `false` answers `payload: {}`, and reads none)
    with_content: Option<bool>,
}

// The error answers most operations share, as `#/components/responses/…`:
// `(status = 401, response = Unauthorized)` in `#[utoipa::path]`. An operation whose error
// means something of its own (which resource is missing, which field) says so inline.

/// 401 of every operation that needs a token.
#[derive(utoipa::ToResponse)]
#[response(description = "Missing or invalid bearer token")]
#[allow(dead_code)] // Only describes answers, as `ErrorBody` does.
pub struct Unauthorized(ErrorBody);

/// 403 of the operations only the admin token may use.
#[derive(utoipa::ToResponse)]
#[response(description = "Not the admin token")]
#[allow(dead_code)]
pub struct NotAdmin(ErrorBody);

/// 403 of an operation under an application, for a token whose capabilities (`readOnly`,
/// `capabilities` of its app-portal access) do not allow it; added to every such operation
/// by [`document`].
#[derive(utoipa::ToResponse)]
#[response(description = "The token's capabilities do not allow this operation, or it needs the admin token")]
#[allow(dead_code)]
pub struct NotAllowed(ErrorBody);

/// 400 where the body's JSON syntax is all that can be wrong before its fields are read.
#[derive(utoipa::ToResponse)]
#[response(description = "The body is not valid JSON")]
#[allow(dead_code)]
pub struct InvalidJson(ErrorBody);

/// 422 where a field of the body is all that can be wrong.
#[derive(utoipa::ToResponse)]
#[response(description = "A field is invalid")]
#[allow(dead_code)]
pub struct InvalidBody(ErrorBody);

/// 422 where a query parameter is all that can be wrong.
#[derive(utoipa::ToResponse)]
#[response(description = "A query parameter is invalid")]
#[allow(dead_code)]
pub struct InvalidQuery(ErrorBody);

/// What the document says about the API as a whole; the operations come from the modules.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hooklane",
        description = "Webhooks in and out. The outbound API (`/api/v1/app`, `/api/v1/event-type`, \
                       `/api/v1/auth`) is wire-compatible with the Svix API v1, so Svix's SDKs work unchanged.",
        license(name = "Apache-2.0")
    ),
    paths(health, openapi_json),
    components(
        schemas(ErrorBody),
        responses(Unauthorized, NotAdmin, NotAllowed, InvalidJson, InvalidBody, InvalidQuery)
    ),
    modifiers(&BearerToken),
    security(("HTTPBearer" = [])),
    tags(
        (name = "Application", description = "The sending SaaS's customers."),
        (name = "Event Type", description = "The kinds of events messages carry."),
        (name = "Endpoint", description = "An application's URLs, their secrets, filters and limits."),
        (name = "Message", description = "Events posted once and sent to every subscribed endpoint."),
        (name = "Message Attempt", description = "Each HTTP try of a message to an endpoint."),
        (name = "Events", description = "Pulling an application's messages: polling, long-polling, Server-Sent Events."),
        (name = "Message Poller", description = "Polling endpoints: what one endpoint gets, read by its consumers."),
        (name = "Authentication", description = "Application-scoped tokens for the consumer portal."),
        (name = "Integration", description = "Named keys of an application, for third parties."),
        (name = "Statistics", description = "Counts for the dashboard and the portal, and usage for billing."),
        (name = "Source", description = "Inbound: URLs that providers post to, verified and forwarded."),
        (name = "Background Task", description = "What recoveries, replays, purges and usage statistics did."),
        (name = "Environment", description = "The event catalogue, exported and imported whole."),
        (name = "Operational Webhook", description = "The endpoints that hear what happens to your customers' endpoints."),
        (name = "Health", description = "Whether the server answers."),
    )
)]
struct Base;

/// The admin token or an application token, sent as `Authorization: Bearer …`.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "HTTPBearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    for part in [
        api::app::Doc::openapi(),
        api::event_type::Doc::openapi(),
        api::event_type_import::Doc::openapi(),
        api::auth::Doc::openapi(),
        api::stats::Doc::openapi(),
        api::usage::Doc::openapi(),
        api::endpoint::Doc::openapi(),
        api::transformation::Doc::openapi(),
        api::endpoint_oauth::Doc::openapi(),
        api::endpoint_mtls::Doc::openapi(),
        api::attempt::Doc::openapi(),
        api::preview::Doc::openapi(),
        api::example::Doc::openapi(),
        api::background_task::Doc::openapi(),
        api::integration::Doc::openapi(),
        api::bulk::Doc::openapi(),
        api::environment::Doc::openapi(),
        api::operational_endpoint::Doc::openapi(),
        api::message::Doc::openapi(),
        api::events::Doc::openapi(),
        api::poller::Doc::openapi(),
        api::source::Doc::openapi(),
        crate::inbound::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    with_capability_refusals(&mut doc);
    doc
}

/// Every operation under an application may be refused (403) to a token whose
/// capabilities do not allow it ([`crate::capability`]): says so where the operation does
/// not already document a 403.
fn with_capability_refusals(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr};
    for (path, item) in doc.paths.paths.iter_mut() {
        if !(path.starts_with("/api/v1/app/{app_id}") || path.starts_with("/api/v1/stats/app/{app_id}")) {
            continue;
        }
        let operations =
            [&mut item.get, &mut item.put, &mut item.post, &mut item.patch, &mut item.delete, &mut item.head];
        for op in operations.into_iter().flatten() {
            op.responses
                .responses
                .entry("403".to_string())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name("NotAllowed")));
        }
    }
}

/// The document as JSON, made once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    // Serialising the document does not fail; if it ever did, the answer is still JSON.
    document().to_json().unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
});

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "Health",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// Answers when the server is up (Svix's health check).
#[utoipa::path(get, path = "/api/v1/health", tag = "Health", security(()), responses((status = 204, description = "Up")))]
pub async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::document;

    /// The routes declared in a router's source: `(method, full path)` for every
    /// `.route("path", get(…).post(…))` between `start` and the end of that statement.
    fn declared(source: &str, start: &str, prefix: &str) -> BTreeSet<(String, String)> {
        let from = source.find(start).unwrap_or_else(|| panic!("{start} not found"));
        let block = &source[from..];
        let block = &block[..block.find(";\n").unwrap_or(block.len())];
        let mut routes = BTreeSet::new();
        for call in block.split(".route(").skip(1) {
            let path = call.split('"').nth(1).expect("a route's path is a string literal");
            let full = format!("{prefix}{path}");
            let full = if full.len() > 1 { full.trim_end_matches('/').to_string() } else { full };
            for method in ["get", "post", "put", "patch", "delete"] {
                // `get(handler)` or `.get(handler)`, not `get_secret` or a path segment.
                let called = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                    i == 0 || !call.as_bytes()[i - 1].is_ascii_alphanumeric() && call.as_bytes()[i - 1] != b'_'
                });
                if called {
                    routes.insert((method.to_string(), full.clone()));
                }
            }
        }
        routes
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(document()).expect("the document serialises");
        let paths = doc["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let methods = item.as_object().expect("path item").keys();
                methods
                    .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                    .map(|m| (m.clone(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every route of the API is in the document, and the document has nothing else: a route
    /// added without its description, or a description left behind, fails here.
    #[test]
    fn the_document_describes_every_route_and_nothing_else() {
        let lib = include_str!("lib.rs");
        let mut routes = declared(lib, "let app_routes = Router::new()", "/api/v1/app");
        routes.extend(declared(lib, "let v1 = Router::new()", "/api/v1"));
        routes.extend(declared(include_str!("api/source.rs"), "pub fn routes()", "/api/v1/source"));
        routes.extend(declared(include_str!("inbound.rs"), "pub fn routes()", ""));
        assert!(routes.len() > 60, "the source scan found too few routes: {routes:?}");
        let documented = documented();
        let missing: Vec<_> = routes.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routes).collect();
        assert!(missing.is_empty(), "routes without a description: {missing:?}");
        assert!(extra.is_empty(), "described but not routed: {extra:?}");
    }

    /// Every operation can be told apart by SDK generators, and every `$ref` leads somewhere.
    #[test]
    fn operation_ids_are_unique_and_references_resolve() {
        let doc = serde_json::to_value(document()).expect("the document serialises");
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                assert!(ids.insert(id.to_string()), "operationId {id} used twice");
                assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path} has no tag");
            }
        }
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = &reference[..reference.find('"').expect("a closing quote")];
            let (kind, name) = target
                .strip_prefix("#/components/")
                .and_then(|r| r.split_once('/'))
                .filter(|(kind, _)| ["schemas", "responses"].contains(kind))
                .unwrap_or_else(|| panic!("odd $ref {target}"));
            assert!(doc["components"][kind].get(name).is_some(), "$ref to a missing component: {target}");
        }
    }
}
