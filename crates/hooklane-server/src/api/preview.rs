//! `POST /api/v1/app/{app_id}/endpoint/{endpoint_id}/preview`: what an endpoint's payload
//! filter and transform make of a payload, without posting anything, so that rules can be
//! tried before they meet real messages. A rule given in the body is tried instead of the
//! endpoint's own (`null`: none), and is checked as it would be when set.

use axum::extract::State;
use hooklane_core::filter::{payload_wanted, LazyPayload};
use hooklane_core::rules::transform;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::endpoint::{check_rules, find};
use super::Patch;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Tenant};
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreviewIn {
    /// A message payload, as it would be posted.
    payload: Box<RawValue>,
    #[serde(default)]
    payload_filter: Patch<serde_json::Value>,
    #[serde(default)]
    transform: Patch<serde_json::Value>,
}

#[derive(Serialize)]
pub struct PreviewOut {
    /// Whether the filter lets the payload through (with no filter: true).
    wanted: bool,
    /// What the endpoint would be sent (whether or not the filter lets the payload through).
    body: serde_json::Value,
}

pub async fn preview(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<PreviewIn>,
) -> ApiResult<axum::Json<PreviewOut>> {
    let mut ep = find(&s, &t, &key).await?;
    input.payload_filter.apply_opt(&mut ep.payload_filter);
    input.transform.apply_opt(&mut ep.transform);
    check_rules(ep.payload_filter.as_ref(), ep.transform.as_ref())?;
    let text = input.payload.get();
    let mut payload = LazyPayload::new(text);
    let wanted = payload_wanted(ep.payload_filter.as_ref(), &mut payload);
    let body = match &ep.transform {
        None => payload.json().clone(),
        Some(template) => transform::apply(template, payload.json(), transform::body_limit(text.len()))
            .map_err(|too_large| ApiError::validation("transform", too_large.to_string()))?,
    };
    Ok(axum::Json(PreviewOut { wanted, body }))
}
