//! `/api/v1/auth`: application-scoped tokens (Svix's app-portal access): issued with an
//! expiry, revoked one by one (logout) or all of an application's at once.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hooklane_core::model::{Capability, Principal};
use hooklane_core::Utc;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::app::ApplicationIn;
use crate::error::{ApiError, ApiResult};
use crate::extract::{bearer_token, Admin, Auth, OptionalJson, Path};
use crate::openapi::{AppPath, ErrorBody, InvalidBody, NotAdmin, Unauthorized};
use crate::state::{hex, token_hash, AppState};

/// Prefix of application-scoped tokens, so they are recognisable in a secret scanner.
const APP_TOKEN_PREFIX: &str = "appsk_";
/// A token's life unless asked otherwise, and the range one may ask for (Svix's: an hour
/// to a week, a week by default).
const DEFAULT_EXPIRY_SECONDS: u64 = 7 * 24 * 3600;
const MIN_EXPIRY_SECONDS: u64 = 3600;
const MAX_EXPIRY_SECONDS: u64 = 7 * 24 * 3600;

/// Svix's `AppPortalAccessIn`: hooklane reads `expiry`, `application` (created when the
/// path names no application, as Svix does), `featureFlags`, `readOnly`, `capabilities`
/// and `sessionId`; the portal's display options are accepted and ignored.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppPortalAccessIn {
    /// Seconds the token works, 3600 to 604800 (a week, the default).
    #[serde(default)]
    #[schema(minimum = 3600, maximum = 604800)]
    expiry: Option<u64>,
    /// Created, under the uid of the path, when the path names no application.
    #[serde(default)]
    application: Option<ApplicationIn>,
    /// A token that only reads (capabilities `ViewBase`, plus `ViewEndpointSecret` when
    /// `capabilities` names it); `capabilities` naming anything more is refused.
    #[serde(default)]
    read_only: Option<bool>,
    /// What the token may do: `ViewBase` (always needed: read everything but endpoint
    /// secrets), `ViewEndpointSecret`, `ManageEndpointSecret` (read and rotate secrets),
    /// `ManageTransformations` (set endpoints' JavaScript transformations; hooklane's
    /// `transform` templates are part of the endpoint, changed with `ManageEndpoint`),
    /// `CreateAttempts` (recover, replay, resend, send examples),
    /// `ManageEndpoint` (create, change and delete endpoints, their headers and secrets).
    /// Without it the token may do everything in its application, posting messages and
    /// changing the application included, which no capability grants.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>, example = json!(["ViewBase", "CreateAttempts"]))]
    capabilities: Option<BTreeSet<Capability>>,
    /// The flags whose event types the token sees: an event type behind a feature flag is
    /// hidden from tokens without it. At most 64, each 1–256 of `[a-zA-Z0-9-_.]`.
    #[serde(default)]
    feature_flags: Option<std::collections::BTreeSet<String>>,
    /// The session the token is for (1–256 characters): `expire-all` with `sessionIds`
    /// ends the tokens of those sessions only.
    #[serde(default)]
    #[schema(max_length = 256, example = "sess_42")]
    session_id: Option<String>,
}

/// The longest session id, and the most sessions one `expire-all` names.
const MAX_SESSION_ID_LEN: usize = 256;
const MAX_SESSION_IDS: usize = 1000;

/// Checks a session id given to a token or to `expire-all` (`field` names it).
fn check_session_id(field: &str, id: &str) -> ApiResult<()> {
    if id.is_empty() || id.chars().count() > MAX_SESSION_ID_LEN {
        return Err(ApiError::validation(field, format!("must be 1 to {MAX_SESSION_ID_LEN} characters")));
    }
    super::no_nul(field, id)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AppPortalAccessOut {
    /// The consumer portal, logged in with the token.
    url: String,
    /// The application token (`appsk_…`), shown only this once.
    token: String,
}

/// Get a token for the consumer portal of an application.
///
/// Issues a token that can see and change only this application (only what its
/// `capabilities` or `readOnly` allow, when given; the event types behind its
/// `featureFlags`), for `expiry` seconds (a week unless given). The token is shown once;
/// only its hash is stored.
#[utoipa::path(
    post,
    path = "/api/v1/auth/app-portal-access/{app_id}",
    tag = "Authentication",
    operation_id = "v1.authentication.app-portal-access",
    params(AppPath),
    request_body(content = AppPortalAccessIn, description = "Optional: without it, a token for a week, for an existing application."),
    responses(
        (status = 200, description = "The token, and the portal's URL", body = AppPortalAccessOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application, and no `application` to create", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn app_portal_access(
    State(s): State<AppState>,
    _: Admin,
    Path(app_key): Path<String>,
    OptionalJson(input): OptionalJson<AppPortalAccessIn>,
) -> ApiResult<axum::Json<AppPortalAccessOut>> {
    let input = input.unwrap_or_default();
    let capabilities = capabilities(input.read_only.unwrap_or(false), input.capabilities)?;
    let feature_flags = super::feature_flags(input.feature_flags)?;
    if let Some(session) = &input.session_id {
        check_session_id("sessionId", session)?;
    }
    let expiry = input.expiry.unwrap_or(DEFAULT_EXPIRY_SECONDS);
    if !(MIN_EXPIRY_SECONDS..=MAX_EXPIRY_SECONDS).contains(&expiry) {
        return Err(ApiError::validation(
            "expiry",
            format!("must be between {MIN_EXPIRY_SECONDS} and {MAX_EXPIRY_SECONDS} seconds"),
        ));
    }
    use crate::operational::NO_TOKEN as OPERATIONAL;
    if s.0.operational_app.as_deref() == Some(app_key.as_str()) {
        return Err(ApiError::Forbidden(OPERATIONAL));
    }
    let app = match (s.0.store.get_app(&app_key).await?, input.application) {
        (Some(app), _) => app,
        // (Created under the path's uid: one the body names must be that one, as when a
        // message creates its application.)
        (None, Some(application)) if application.uid.as_ref().is_some_and(|uid| *uid != app_key) => {
            return Err(ApiError::validation("application.uid", "must be the application named in the path"));
        }
        (None, Some(application)) => super::app::create_under_uid(&s, &app_key, application).await?.0,
        (None, None) => return Err(ApiError::NotFound("application")),
    };
    if crate::operational::is_operational_app(&s, &app) {
        return Err(ApiError::Forbidden(OPERATIONAL));
    }
    let token = random_token(APP_TOKEN_PREFIX);
    let now = Utc::now();
    let expires_at = now + chrono::Duration::seconds(expiry as i64);
    let holder = Principal::App { app_id: app.id, feature_flags, capabilities };
    s.0.store.create_token(hex(&token_hash(&token)), holder, now, Some(expires_at), input.session_id).await?;
    let url = format!("{}/portal#token={token}", s.0.public_url.trim_end_matches('/'));
    Ok(axum::Json(AppPortalAccessOut { url, token }))
}

/// The capabilities of a new token (`None`: everything), from `readOnly` and `capabilities`.
fn capabilities(read_only: bool, given: Option<BTreeSet<Capability>>) -> ApiResult<Option<Vec<Capability>>> {
    let given = match (read_only, given) {
        (false, None) => return Ok(None),
        (true, None) => return Ok(Some(vec![Capability::ViewBase])),
        (_, Some(given)) => given,
    };
    if !given.contains(&Capability::ViewBase) {
        return Err(ApiError::validation("capabilities", "must hold ViewBase"));
    }
    if read_only && given.iter().any(|c| !matches!(c, Capability::ViewBase | Capability::ViewEndpointSecret)) {
        return Err(ApiError::validation(
            "capabilities",
            "a read-only token may hold only ViewBase and ViewEndpointSecret",
        ));
    }
    Ok(Some(given.into_iter().collect()))
}

/// A new token: `prefix` then 256 random bits, base64url.
pub(crate) fn random_token(prefix: &str) -> String {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw))
}

/// Svix's older name for app-portal-access: the same operation.
///
/// Issues a token that can see and change only this application, for `expiry` seconds
/// (a week unless given).
#[utoipa::path(
    post,
    path = "/api/v1/auth/dashboard-access/{app_id}",
    tag = "Authentication",
    operation_id = "v1.authentication.dashboard-access",
    params(AppPath),
    request_body(content = AppPortalAccessIn, description = "Optional: without it, a token for a week, for an existing application."),
    responses(
        (status = 200, description = "The token, and the portal's URL", body = AppPortalAccessOut),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application, and no `application` to create", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn dashboard_access(
    state: State<AppState>,
    admin: Admin,
    path: Path<String>,
    body: OptionalJson<AppPortalAccessIn>,
) -> ApiResult<axum::Json<AppPortalAccessOut>> {
    app_portal_access(state, admin, path, body).await
}

/// Log out: the application token that calls it stops working.
///
/// `POST /auth/logout`: the application token that calls it stops working. (The admin
/// token comes from the configuration: change it there.)
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "Authentication",
    operation_id = "v1.authentication.logout",
    responses(
        (status = 204, description = "The token no longer works"),
        (status = 401, response = Unauthorized),
        (status = 403, description = "The admin token cannot log out", body = ErrorBody),
    )
)]
pub async fn logout(State(s): State<AppState>, Auth(principal): Auth, headers: HeaderMap) -> ApiResult<StatusCode> {
    if principal == Principal::Admin {
        return Err(ApiError::Forbidden("the admin token is set in the configuration; it cannot log out"));
    }
    // `Auth` accepted the header, so it holds a bearer token.
    let token = bearer_token(&headers).ok_or(ApiError::Unauthorized)?;
    s.0.store.delete_token(&hex(&token_hash(token))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Svix's `WhoamiOut`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoamiOut {
    /// The application an application token speaks for; absent for the admin token.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "app_1srOrx2ZWZBpBUvZwXKQmoEYga2")]
    app_id: Option<String>,
    /// `GlobalAuthToken` for the admin token, `SvixJwt` for an application token (Svix's
    /// name for the tokens its app portal uses; hooklane's are opaque, not JWTs).
    #[schema(example = "GlobalAuthToken")]
    permission_source: &'static str,
    /// hooklane extension: what an application token issued with `capabilities` (or
    /// `readOnly`) may do, the capabilities they imply included (`ManageEndpoint` gives
    /// `ViewEndpointSecret`…); absent for a token that may do everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>, example = json!(["ViewBase"]))]
    capabilities: Option<Vec<Capability>>,
    /// hooklane extension: the feature flags of an application token; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    feature_flags: Vec<String>,
    /// hooklane extension: the polling endpoint a polling endpoint's key reads (it may do
    /// nothing else); absent for other tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_id: Option<String>,
}

/// Who the token speaks for.
///
/// The admin token, or the application an application token was issued for.
#[utoipa::path(
    get,
    path = "/api/v1/auth/whoami",
    tag = "Authentication",
    operation_id = "v1.authentication.whoami",
    responses(
        (status = 200, description = "The token's principal", body = WhoamiOut),
        (status = 401, response = Unauthorized),
    )
)]
pub async fn whoami(Auth(principal): Auth) -> axum::Json<WhoamiOut> {
    axum::Json(match principal {
        Principal::Admin => WhoamiOut {
            app_id: None,
            permission_source: "GlobalAuthToken",
            capabilities: None,
            feature_flags: Vec::new(),
            endpoint_id: None,
        },
        Principal::App { app_id, feature_flags, capabilities } => {
            let capabilities = capabilities.map(|held| Capability::expanded(&held));
            WhoamiOut {
                app_id: Some(app_id),
                permission_source: "SvixJwt",
                capabilities,
                feature_flags,
                endpoint_id: None,
            }
        }
        Principal::Poller { app_id, endpoint_id } => WhoamiOut {
            app_id: Some(app_id),
            // Not a source Svix names: its clients read any other as a failure.
            permission_source: "Unknown",
            capabilities: Some(Vec::new()),
            feature_flags: Vec::new(),
            endpoint_id: Some(endpoint_id),
        },
    })
}

/// Svix's `ApplicationTokenExpireIn`: `expiry`, seconds the tokens still work (0 unless
/// given), and `sessionIds`, the sessions whose tokens expire (all of them unless given).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpireAllIn {
    /// Seconds the tokens still work (0, the default: at once). Over 604800 (a week, the
    /// longest an app-portal token lives) counts as 604800, integration keys included.
    #[serde(default)]
    expiry: Option<u64>,
    /// Only the tokens issued with one of these `sessionId`s expire (at most 1000); left
    /// out or empty: every token of the application, integration keys included.
    #[serde(default)]
    #[schema(example = json!(["sess_42"]))]
    session_ids: Option<Vec<String>>,
}

/// Expire all of an application's tokens.
///
/// `POST /auth/app/{app_id}/expire-all`: every token of the application stops working,
/// at once or after `expiry` seconds (never later than it would have).
#[utoipa::path(
    post,
    path = "/api/v1/auth/app/{app_id}/expire-all",
    tag = "Authentication",
    operation_id = "v1.authentication.expire-all",
    params(AppPath),
    request_body(content = ExpireAllIn, description = "Optional: without it, the tokens stop working at once."),
    responses(
        (status = 204, description = "The tokens expire"),
        (status = 401, response = Unauthorized),
        (status = 403, response = NotAdmin),
        (status = 404, description = "No such application", body = ErrorBody),
        (status = 422, response = InvalidBody),
    )
)]
pub async fn expire_all(
    State(s): State<AppState>,
    _: Admin,
    Path(app_key): Path<String>,
    OptionalJson(input): OptionalJson<ExpireAllIn>,
) -> ApiResult<StatusCode> {
    // A grace is at most MAX_EXPIRY_SECONDS, the longest an app-portal token lives;
    // integration keys, which do not expire otherwise, get no more than that either.
    let mut input = input.unwrap_or_default();
    // As Svix reads it: only sessions named narrow it ("if any session ids are specified"),
    // so an empty list (a collection that happened to be empty) expires every token.
    input.session_ids = input.session_ids.filter(|ids| !ids.is_empty());
    let expiry = input.expiry.unwrap_or(0).min(MAX_EXPIRY_SECONDS);
    if let Some(sessions) = &input.session_ids {
        if sessions.len() > MAX_SESSION_IDS {
            return Err(ApiError::validation("sessionIds", format!("at most {MAX_SESSION_IDS} sessions")));
        }
        for session in sessions {
            check_session_id("sessionIds", session)?;
        }
    }
    let app = s.0.store.get_app(&app_key).await?.ok_or(ApiError::NotFound("application"))?;
    let until = Utc::now() + chrono::Duration::seconds(expiry as i64);
    s.0.store.expire_app_tokens(&app.id, until, input.session_ids).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This module's part of the OpenAPI document (see `crate::openapi`).
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(app_portal_access, dashboard_access, logout, whoami, expire_all),
    components(schemas(AppPortalAccessIn, AppPortalAccessOut, WhoamiOut, ExpireAllIn)),
    modifiers(&Adjust)
)]
pub(crate) struct Doc;

/// What `#[utoipa::path]` cannot say here.
struct Adjust;

impl utoipa::Modify for Adjust {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, deprecated) in [
            ("/api/v1/auth/app-portal-access/{app_id}", false),
            // Deprecated as in Svix's document. `#[deprecated]` on the handler would say so
            // too, but would warn where the router uses it.
            ("/api/v1/auth/dashboard-access/{app_id}", true),
            ("/api/v1/auth/app/{app_id}/expire-all", false),
        ] {
            let Some(op) = doc.paths.paths.get_mut(path).and_then(|item| item.post.as_mut()) else { continue };
            if deprecated {
                op.deprecated = Some(utoipa::openapi::Deprecated::True);
            }
            // `OptionalJson`: the body may be left out, but not sent as `null` (which
            // `request_body = Option<…>` would allow), so it is an object, not required.
            if let Some(body) = op.request_body.as_mut() {
                body.required = Some(utoipa::openapi::Required::False);
            }
        }
    }
}
