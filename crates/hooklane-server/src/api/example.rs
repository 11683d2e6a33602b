//! `POST …/endpoint/{endpoint_id}/send-example`: Svix's "send an example message", for
//! trying an endpoint (the portal's "Testing" tab) with an event type's example payload.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use hooklane_core::model::Message;
use serde::Deserialize;
use serde_json::Value;

use super::check_name;
use super::endpoint::{find, require_enabled};
use super::message::{check_payload, store_and_dispatch_to, MessageOut};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Tenant};
use crate::openapi::{EndpointPath, ErrorBody, InvalidJson, Unauthorized};
use crate::state::AppState;

/// The event type Svix's portal sends when no other exists; it needs no event type.
const PING: &str = "svix.ping";

/// Svix's `EventExampleIn`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventExampleIn {
    /// The event type whose example is sent (`svix.ping` sends `{"success": true}` and needs
    /// no event type).
    #[schema(example = "invoice.paid")]
    event_type: String,
    /// Which of the examples of the event type's latest schema version (its `examples`
    /// array) to send; the first by default.
    #[serde(default)]
    example_index: Option<usize>,
    /// A payload to send instead of the event type's example (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload: Option<Value>,
}

/// Send an example message to this endpoint only.
///
/// The message has the event type's example payload (from the `examples` of its latest
/// schema version; `{}` when it has none) and is delivered, signed and retried like any
/// other, to this endpoint alone whatever its filters; it is in the message log.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/send-example",
    tag = "Endpoint",
    operation_id = "v1.endpoint.send-example",
    params(EndpointPath),
    request_body = EventExampleIn,
    responses(
        (status = 202, description = "The example message, stored and queued for the endpoint", body = MessageOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application, endpoint or event type", body = ErrorBody),
        (status = 409, description = "The endpoint is disabled", body = ErrorBody),
        (status = 422, description = "`eventType` is invalid, `exampleIndex` names no example, or the example or \
            `payload` is not a JSON object", body = ErrorBody),
        (status = 429, description = "The application posted more messages a second than the server's \
            `message_rate_limit` (`rate_limited`)", body = ErrorBody),
    )
)]
pub async fn send_example(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<EventExampleIn>,
) -> ApiResult<(StatusCode, axum::Json<MessageOut>)> {
    check_name("eventType", &input.event_type)?;
    let endpoint = find(&s, &t, &key).await?;
    require_enabled(&endpoint)?;
    let payload = match input.payload {
        // A payload of the caller's own is a message of the caller's making, which only a
        // token that may post messages may send (`CreateAttempts`, enough for examples,
        // would otherwise post any event, signed, to the endpoint).
        Some(_) if !t.principal.allows(None) => {
            return Err(ApiError::Forbidden("sending a payload of one's own needs a token that may post messages"))
        }
        // It needs no event type, but one behind a feature flag the caller lacks is not
        // there for it, here either.
        Some(payload) => match s.0.store.get_event_type(&input.event_type).await? {
            Some(et) if !t.principal.sees_flags(&et.feature_flags) => {
                return Err(crate::error::ApiError::NotFound("event type"))
            }
            _ => payload,
        },
        None if input.event_type == PING => serde_json::json!({ "success": true }),
        None => {
            let event_type = super::event_type::visible(&s, &t.principal, &input.event_type).await?;
            example(event_type.schemas.as_ref(), input.example_index)?
        }
    };
    let payload = payload.to_string();
    check_payload(&payload)?;
    s.0.message_rate.take(&t.app.id, std::time::Instant::now()).map_err(crate::error::ApiError::RateLimited)?;
    let msg = Message::new(t.app.id.clone(), input.event_type, payload, super::now());
    let msg = store_and_dispatch_to(&s, msg, vec![Arc::new(endpoint)]).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(MessageOut::new(msg, true))))
}

/// Example `index` (or the first) of the latest schema version of `schemas` (Svix's shape:
/// `{"1": {…JSON Schema…, "examples": […]}}`, versions numbered); `{}` when that version has
/// no examples or there is no schema (whatever `index`). Asking for an example past the last
/// of those there are is an error.
fn example(schemas: Option<&Value>, index: Option<usize>) -> ApiResult<Value> {
    let latest = schemas
        .and_then(Value::as_object)
        .and_then(|versions| {
            versions.iter().filter_map(|(v, s)| Some((v.parse::<u64>().ok()?, s))).max_by_key(|(v, _)| *v)
        })
        .map(|(_, schema)| schema);
    let examples = latest.and_then(|s| s.get("examples")).and_then(Value::as_array);
    match (examples, index) {
        (Some(examples), index) if !examples.is_empty() => {
            let i = index.unwrap_or(0);
            examples.get(i).cloned().ok_or_else(|| {
                ApiError::validation("exampleIndex", format!("the event type has {} examples", examples.len()))
            })
        }
        // No examples: the index is ignored, as Svix documents.
        _ => Ok(Value::Object(Default::default())),
    }
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(send_example), components(schemas(EventExampleIn)))]
pub(crate) struct Doc;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::example;

    #[test]
    fn the_example_comes_from_the_latest_version() {
        let schemas = json!({
            "1": { "type": "object", "examples": [{ "v": 1 }] },
            "10": { "type": "object", "examples": [{ "v": 10 }, { "v": 10, "second": true }] },
            "2": { "type": "object", "examples": [{ "v": 2 }] },
        });
        assert_eq!(example(Some(&schemas), None).unwrap(), json!({ "v": 10 }));
        assert_eq!(example(Some(&schemas), Some(1)).unwrap(), json!({ "v": 10, "second": true }));
        assert!(example(Some(&schemas), Some(2)).is_err(), "past the last example");
    }

    #[test]
    fn without_examples_the_payload_is_empty() {
        assert_eq!(example(None, None).unwrap(), json!({}));
        assert_eq!(example(Some(&json!({ "1": { "type": "object" } })), None).unwrap(), json!({}));
        assert_eq!(example(Some(&json!({ "1": { "examples": [] } })), Some(0)).unwrap(), json!({}));
        // Without examples the index is ignored (Svix's documented behaviour).
        assert_eq!(example(None, Some(1)).unwrap(), json!({}));
    }
}
