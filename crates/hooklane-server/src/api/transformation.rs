//! Svix's endpoint transformation: JavaScript run before each attempt to the endpoint
//! (`hooklane_dispatch::script` says what it may change). Read and set on its own route,
//! as Svix does; the code is checked (compiled and run to find `handler`) when it is set.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use hooklane_core::model::{Capability, Transformation};
use hooklane_dispatch::scripts::ScriptFailure;
use serde::{Deserialize, Serialize};

use super::attempt::REDACTED;
use super::endpoint::{find, save, Before};
use super::Patch;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Tenant};
use crate::openapi::{EndpointPath, ErrorBody, InvalidJson, Unauthorized};
use crate::state::AppState;

/// Most variables a transformation may have.
const MAX_VARIABLES: usize = 32;
/// Longest variable value, in bytes.
const MAX_VARIABLE_BYTES: usize = 4096;

/// Svix's `EndpointTransformationOut`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformationOut {
    /// The JavaScript, which declares `function handler(webhook)`; `null` when none is set.
    code: Option<String>,
    /// Whether the code runs before each attempt.
    enabled: bool,
    /// Values the code reads as `webhook.variables`. Shown as `[redacted]` to a token
    /// without `ViewEndpointSecret`: they often hold a credential.
    variables: BTreeMap<String, String>,
    /// When the transformation last changed; `null` when it never was set.
    updated_at: Option<DateTime<Utc>>,
}

/// Svix's `EndpointTransformationPatch` (and the older `EndpointTransformationIn`): what is
/// left out is kept. Also an inbound destination's `transformation`, where it has the shape
/// [`TransformationOut`] answers, so that an answer can be sent back as it is.
#[derive(Deserialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransformationPatch {
    /// The JavaScript (at most 64 KiB); `null` removes it. It must declare a function
    /// `handler`, and compile and run its top level within the limits.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    code: Patch<String>,
    #[serde(default)]
    enabled: Option<bool>,
    /// Replaces all variables (at most 32; names of letters, digits and `_`); `null`
    /// removes them. A value `[redacted]` keeps the stored one, unless the code changes and
    /// the token may not see the values (no `ViewEndpointSecret`): new code from such a
    /// token gives every value again, or removes them.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    variables: Patch<BTreeMap<String, String>>,
    /// Ignored: answers carry it.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    updated_at: Option<serde_json::Value>,
}

/// How a transformation starts when there is none yet.
#[derive(Clone, Copy)]
pub(crate) enum Fresh {
    /// Svix's: off until `enabled` says otherwise, code optional.
    Off,
    /// An inbound destination's: on unless `enabled: false`, and it needs its code.
    OnWithCode,
}

/// Get the endpoint's transformation.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/transformation",
    tag = "Endpoint",
    operation_id = "v1.endpoint.transformation-get",
    params(EndpointPath),
    responses(
        (status = 200, description = "The transformation", body = TransformationOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<TransformationOut>> {
    let ep = find(&s, &t, &key).await?;
    let secrets = t.principal.allows(Some(Capability::ViewEndpointSecret));
    Ok(axum::Json(TransformationOut::of(ep.transformation, secrets)))
}

impl TransformationOut {
    /// The answer for an endpoint's transformation (`None`: never set); `secrets`: whether
    /// the variables may be shown.
    pub(crate) fn of(tr: Option<Transformation>, secrets: bool) -> Self {
        match tr {
            None => TransformationOut { code: None, enabled: false, variables: BTreeMap::new(), updated_at: None },
            Some(tr) => TransformationOut {
                code: tr.code,
                enabled: tr.enabled,
                variables: if secrets {
                    tr.variables
                } else {
                    tr.variables.into_keys().map(|k| (k, REDACTED.to_string())).collect()
                },
                updated_at: Some(tr.updated_at),
            },
        }
    }
}

/// Who changes a transformation.
#[derive(Clone, Copy)]
pub(crate) struct Editor<'a> {
    /// The application of the endpoint: one check of its code runs at a time.
    pub app_id: &'a str,
    /// Whether the caller may see the variables' values (`ViewEndpointSecret`).
    pub sees_secrets: bool,
}

/// Applies `input` to `current` (starting as `fresh` says when there is none). New code is
/// checked (compiled and run to find `handler`); given back unchanged, the transformation
/// keeps its `updatedAt` and is not run again. `within` is where `input` is in the request
/// body (empty: it is the body), for errors.
pub(crate) async fn apply(
    s: &AppState,
    current: &mut Option<Transformation>,
    input: TransformationPatch,
    (within, fresh): (&str, Fresh),
    editor: Editor<'_>,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    let field = |name: &str| if within.is_empty() { name.to_string() } else { format!("{within}.{name}") };
    if current.is_none() && matches!(fresh, Fresh::OnWithCode) && input.code == Patch::Absent {
        return Err(ApiError::validation(field("code"), "a new transformation needs its code"));
    }
    let mut tr = current.clone().unwrap_or(Transformation {
        code: None,
        enabled: matches!(fresh, Fresh::OnWithCode),
        variables: BTreeMap::new(),
        updated_at: now,
    });
    let new_code = match &input.code {
        Patch::Set(code) if tr.code.as_ref() != Some(code) => Some(code.clone()),
        _ => None,
    };
    let before = std::mem::take(&mut tr.variables);
    tr.variables = before.clone();
    // The stored values the transformation keeps without the request giving them: all of
    // them when it names no variables, and each sent back as `[redacted]`.
    let mut kept: Vec<&str> = match &input.variables {
        Patch::Absent => before.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    input.variables.apply_or_default(&mut tr.variables);
    // A value sent back as it was shown to a token that may not see it keeps the value: a
    // read-modify-write of the transformation must not store the placeholder.
    for (name, value) in tr.variables.iter_mut() {
        if value == REDACTED {
            if let Some((stored_name, stored)) = before.get_key_value(name) {
                value.clone_from(stored);
                kept.push(stored_name);
            }
        }
    }
    // New code may send the variables anywhere (a header, the URL): a token that may not
    // see their values would get them through code of its own. So it gives them all again
    // (values it knows) or drops them; only code it does not change keeps values it never saw.
    if new_code.is_some() && !editor.sees_secrets && !kept.is_empty() {
        kept.sort_unstable();
        kept.dedup();
        return Err(ApiError::validation(
            field("variables"),
            format!(
                "new code reads the variables, whose values this token may not see: to change the code, give every \
                 variable's value again (not {REDACTED}) or remove them (null); kept as stored: {}",
                kept.join(", ")
            ),
        ));
    }
    if let Some(code) = new_code {
        // One check of an application's code at a time: the checks share one worker, which
        // one application saving slow code from many requests would otherwise keep from
        // every other application's saves (they would wait past their time, 503).
        let _checking = s.0.checks.begin(editor.app_id).ok_or_else(|| {
            ApiError::Busy(
                "the check of this application's code being saved is running already; try again once it has answered"
                    .into(),
            )
        })?;
        let checked = s.0.dispatcher.scripts().check(code).await;
        checked.map_err(|e| script_error(&field("code"), e))?;
    }
    input.code.apply_opt(&mut tr.code);
    check_variables(&field("variables"), &tr.variables)?;
    if let Some(enabled) = input.enabled {
        tr.enabled = enabled;
    }
    let unchanged = current
        .as_ref()
        .is_some_and(|old| old.code == tr.code && old.enabled == tr.enabled && old.variables == tr.variables);
    if !unchanged {
        tr.updated_at = now;
        *current = Some(tr);
    }
    Ok(())
}

/// Set or change the endpoint's transformation.
///
/// The JavaScript declares `function handler(webhook)`, which gets `method`, `url`,
/// `eventType`, `payload`, `headers`, `cancel` and `variables`, and returns the webhook
/// with `method` (`POST` or `PUT`), `url`, `payload` and `headers` changed as it likes, or
/// `cancel: true` to send nothing. Each run has 250 ms of CPU time and 32 MiB, and no I/O.
#[utoipa::path(
    patch,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/transformation",
    tag = "Endpoint",
    operation_id = "v1.endpoint.patch-transformation",
    params(EndpointPath),
    request_body = TransformationPatch,
    responses(
        (status = 204, description = "Transformation changed"),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 422, description = "The code does not compile, fails, or declares no handler; or a variable is not valid; \
            or the code changes while a token without `ViewEndpointSecret` leaves a variable's value as stored", body = ErrorBody),
        (status = 429, description = "A check of this application's code is running already (`busy`): try again after \
            `Retry-After`", body = ErrorBody),
        (status = 503, description = "No worker could check the code now", body = ErrorBody),
    )
)]
pub async fn patch(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<TransformationPatch>,
) -> ApiResult<StatusCode> {
    let mut ep = find(&s, &t, &key).await?;
    let editor = Editor { app_id: &t.app.id, sees_secrets: t.principal.allows(Some(Capability::ViewEndpointSecret)) };
    // (What it was, before the change: the change is what deliveries held in memory must see.)
    let before = Before::of(&ep);
    apply(&s, &mut ep.transformation, input, ("", Fresh::Off), editor, super::now()).await?;
    save(&s, &t, ep, before).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the API answers when code could not be run: 422 for the code's own failure, 503
/// when no worker could run it now.
pub(crate) fn script_error(field: &str, failure: ScriptFailure) -> ApiError {
    match failure {
        ScriptFailure::Code(e) => ApiError::validation(field, e.to_string()),
        ScriptFailure::Unavailable(why) => ApiError::Unavailable(why),
    }
}

fn check_variables(field: &str, variables: &BTreeMap<String, String>) -> ApiResult<()> {
    if variables.len() > MAX_VARIABLES {
        return Err(ApiError::validation(field, format!("at most {MAX_VARIABLES} variables")));
    }
    for (name, value) in variables {
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ApiError::validation(
                field,
                format!("variable name {name:?} must be 1 to 64 letters, digits or _"),
            ));
        }
        if value.len() > MAX_VARIABLE_BYTES {
            return Err(ApiError::validation(
                field,
                format!("variable {name:?} is longer than {MAX_VARIABLE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(get, patch), components(schemas(TransformationOut, TransformationPatch)))]
pub struct Doc;
