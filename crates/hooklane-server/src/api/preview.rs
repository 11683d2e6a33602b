//! `POST /api/v1/app/{app_id}/endpoint/{endpoint_id}/preview`: what an endpoint's payload
//! filter, transform and JavaScript transformation make of a payload, without posting
//! anything, so that rules can be tried before they meet real messages. A rule given in the
//! body is tried instead of the endpoint's own (`null`: none), and is checked as it would be
//! when set.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use hooklane_core::filter::{payload_wanted, LazyPayload};
use hooklane_core::model::Capability;
use hooklane_core::rules::transform;
use hooklane_dispatch::script;
use hooklane_dispatch::sender::RESERVED;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::attempt::REDACTED;
use super::endpoint::{check_rules, find_sent_to};
use super::Patch;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Tenant};
use crate::openapi::{EndpointPath, ErrorBody, InvalidJson, Unauthorized};
use crate::state::AppState;

/// A payload to try an endpoint's rules on, and optionally rules to try instead of its own.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviewIn {
    /// A message payload, as it would be posted.
    #[schema(value_type = serde_json::Value)]
    payload: Box<RawValue>,
    /// A payload filter to try instead of the endpoint's (as `payloadFilter` in
    /// `EndpointIn`); `null`: none. Left out, the endpoint's own is used.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload_filter: Patch<serde_json::Value>,
    /// A transform to try instead of the endpoint's (as `transform` in `EndpointIn`);
    /// `null`: none. Left out, the endpoint's own is used.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    transform: Patch<serde_json::Value>,
    /// JavaScript to try instead of the endpoint's transformation (as `code` of its
    /// transformation), whether that is enabled or not; `null`: none. Left out, the
    /// endpoint's own runs if it is enabled. It reads the endpoint's variables.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    transformation: Patch<String>,
    /// The event type the transformation sees (`webhook.eventType`); empty when left out.
    #[serde(default)]
    event_type: String,
}

/// What the endpoint would make of the payload.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PreviewOut {
    /// Whether the filter lets the payload through (with no filter: true).
    wanted: bool,
    /// What the endpoint would be sent (whether or not the filter lets the payload through):
    /// with no rule that makes a body, the payload as posted, byte for byte, as a delivery
    /// sends it.
    #[schema(value_type = serde_json::Value)]
    body: Box<RawValue>,
    /// Whether the transformation cancels the request (`body` is then what it was given).
    cancelled: bool,
    /// The request's method: `POST`, or what the transformation asks for.
    method: String,
    /// Where the request would go: the endpoint's URL, or what the transformation makes.
    url: String,
    /// Headers the transformation adds (beside the endpoint's own and hooklane's), as a
    /// delivery sends them: without those hooklane sets itself.
    headers: BTreeMap<String, String>,
    /// Headers the transformation sets that a delivery leaves out, as hooklane sets them
    /// itself (`content-type`, `content-length`, `host`, `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`), by the names the code gave.
    #[serde(rename = "droppedHeaders")]
    dropped_headers: Vec<String>,
}

/// Preview what an endpoint's payload filter, transform and transformation make of a payload.
///
/// Nothing is sent. Rules given in the body are tried instead of the endpoint's own and
/// checked as they would be when set; the endpoint is not changed.
#[utoipa::path(
    post,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/preview",
    tag = "Endpoint",
    operation_id = "v1.endpoint.preview",
    params(EndpointPath),
    request_body = PreviewIn,
    responses(
        (status = 200, description = "Whether the payload passes the filter, and the body that would be sent", body = PreviewOut),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 409, description = "A polling endpoint: nothing is sent to it", body = ErrorBody),
        (status = 422, description = "A rule is not valid, the transform makes too large a body or cannot read the payload \
            (`1e400`, a lone surrogate, nesting too deep: a delivery would fail), or the transformation fails", body = ErrorBody),
        (status = 429, description = "A preview of this application's code is running already (`busy`): try again after \
            `Retry-After`", body = ErrorBody),
    )
)]
pub async fn preview(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<PreviewIn>,
) -> ApiResult<axum::Json<PreviewOut>> {
    let mut ep = find_sent_to(&s, &t, &key).await?;
    input.payload_filter.apply_opt(&mut ep.payload_filter);
    input.transform.apply_opt(&mut ep.transform);
    check_rules(ep.payload_filter.as_ref(), ep.transform.as_ref())?;
    let text = input.payload.get();
    let mut payload = LazyPayload::new(text);
    let wanted = payload_wanted(ep.payload_filter.as_ref(), &mut payload);
    let body = match &ep.transform {
        // As posted: a delivery sends the payload's text, which serde may not read (`1e400`).
        None => input.payload.clone(),
        // A delivery makes no body of a payload the transform cannot read: it fails.
        Some(_) if payload.unreadable() => {
            return Err(ApiError::validation("payload", transform::Unreadable.to_string()))
        }
        Some(template) => {
            let made = transform::apply(template, payload.json(), transform::body_limit(text.len()))
                .map_err(|too_large| ApiError::validation("transform", too_large.to_string()))?;
            serde_json::value::to_raw_value(&made).map_err(|e| ApiError::Internal(e.to_string()))?
        }
    };
    let (code, mut variables) = match ep.transformation {
        Some(tr) => (tr.active_code().map(str::to_string), tr.variables),
        None => (None, BTreeMap::new()),
    };
    // The code runs on the endpoint's variables and URL, which a token that may not see
    // secrets must not get back through what the code makes of them (or through code of its
    // own): the variables' values and the URL's password are redacted.
    let url = super::endpoint::url_seen_by(ep.url.clone(), &t.principal);
    if !t.principal.allows(Some(Capability::ViewEndpointSecret)) {
        variables.values_mut().for_each(|v| *v = REDACTED.to_string());
    }
    let mut code = code;
    input.transformation.apply_opt(&mut code);
    let mut out = PreviewOut {
        wanted,
        body,
        cancelled: false,
        method: "POST".into(),
        url: url.clone(),
        headers: BTreeMap::new(),
        dropped_headers: Vec::new(),
    };
    let Some(code) = code else { return Ok(axum::Json(out)) };
    // The body as the endpoint would get it: the payload as posted, or the transform's.
    let body_text = out.body.get().to_string();
    // The code sees the URL without credentials, as when it runs for a delivery (and gives
    // back the URL shown to this caller when it leaves it as it was).
    let given = hooklane_dispatch::sender::without_credentials(&ep.url);
    let webhook = script::Webhook::new(given.clone(), input.event_type, body_text, variables);
    let max_output = transform::body_limit(text.len());
    // One at a time per application: the server's previews share one worker, which one
    // application's token previewing slow code in a loop would otherwise keep from the others.
    let _running = s.0.previews.begin(&t.app.id).ok_or_else(|| {
        ApiError::Busy("a preview of this application's code is running already; try again once it has answered".into())
    })?;
    let ran = s.0.dispatcher.scripts().run_for_api(script::Job { code, webhook: Some(webhook), max_output }).await;
    match ran.map_err(|e| super::transformation::script_error("transformation", e))? {
        script::Outcome::Cancel => out.cancelled = true,
        script::Outcome::Send(request) => {
            // JSON the code made, as it made it (`None`: it left the body as it was). Shown
            // as a string should it not be JSON after all.
            if let Some(made) = request.body {
                out.body = match RawValue::from_string(made.clone()) {
                    Ok(raw) => raw,
                    Err(_) => serde_json::value::to_raw_value(&made).map_err(|e| ApiError::Internal(e.to_string()))?,
                };
            }
            out.method = request.method;
            if request.url != given {
                out.url = request.url;
            }
            // What a delivery sends: hooklane's own headers are its own, whatever the code
            // sets (`Sender::send` leaves the code's out).
            for (name, value) in request.headers {
                if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
                    out.dropped_headers.push(name);
                } else {
                    out.headers.insert(name, value);
                }
            }
        }
    }
    Ok(axum::Json(out))
}

/// The applications with a run of their code under way on this node, of one kind (a
/// preview, or the check of code being saved): one each at a time.
#[derive(Default)]
pub struct Running(Arc<Mutex<HashSet<String>>>);

/// An application's run under way; over when dropped.
pub struct Preview {
    running: Arc<Mutex<HashSet<String>>>,
    app_id: String,
}

impl Running {
    /// The application's run, unless one is under way already.
    pub fn begin(&self, app_id: &str) -> Option<Preview> {
        let mut running = self.0.lock().unwrap_or_else(|p| p.into_inner());
        running.insert(app_id.to_string()).then(|| Preview { running: self.0.clone(), app_id: app_id.to_string() })
    }
}

impl Drop for Preview {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.app_id);
    }
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(preview), components(schemas(PreviewIn, PreviewOut)))]
pub(crate) struct Doc;
