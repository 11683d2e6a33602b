//! Request extractors that turn every kind of bad input into an [`ApiError`], and the
//! authentication extractors. Tenant scoping lives here: handlers under
//! `/api/v1/app/{app_id}` take a [`Tenant`], which loads the application and checks the
//! caller may see it before the handler runs, so no handler can forget the check; it also
//! checks that the caller's token has the capability the route needs
//! ([`crate::capability`]).

use std::collections::HashMap;
use std::str::FromStr;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use hooklane_core::model::{Application, Principal};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::state::{hex, token_hash, AppState};

/// `axum::Json` with hooklane's error bodies. Every body of the API is a JSON object: serde
/// would also fill a struct from an array (`["name"]`), which is refused here.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(mut req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = crate::body_limit::of(req.extensions(), state);
        // A body without a `Content-Type` is read as JSON, as Svix reads every body: its
        // Kotlin SDK sends none. One that names another type is still refused (415).
        if !req.headers().contains_key(axum::http::header::CONTENT_TYPE) {
            let json = axum::http::HeaderValue::from_static("application/json");
            req.headers_mut().insert(axum::http::header::CONTENT_TYPE, json);
        }
        let raw = match axum::Json::<Box<serde_json::value::RawValue>>::from_request(req, state).await {
            Ok(axum::Json(raw)) => raw,
            Err(rejection) => return Err(json_rejection(rejection, limit)),
        };
        if !raw.get().starts_with('{') {
            return Err(ApiError::validation("body", "must be a JSON object"));
        }
        match axum::Json::<T>::from_bytes(raw.get().as_bytes()) {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection, limit)),
        }
    }
}

/// The field a serde message names between backticks after "field", if any.
fn named_field(msg: &str) -> Option<&str> {
    let (_, rest) = msg.split_once("field `")?;
    let (field, _) = rest.split_once('`')?;
    (!field.is_empty()).then_some(field)
}

fn json_rejection(r: JsonRejection, limit: usize) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            // axum reports "Failed to deserialize ...: <path>: <serde message>".
            let text = e.body_text();
            let detail = text.split_once("target type: ").map(|(_, d)| d).unwrap_or(&text);
            match detail.split_once(": ") {
                Some((field, msg)) if !field.contains(' ') => ApiError::validation(field, msg),
                // serde names a missing, duplicate or unknown field in its message:
                // "missing field `url` at line 1 column 2".
                _ => ApiError::validation(named_field(detail).unwrap_or("body"), detail),
            }
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::BytesRejection(e) => bytes_rejection(e, limit),
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// A body that could not be read: too large, stopped arriving, or cut off.
pub(crate) fn bytes_rejection(r: BytesRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(limit)
    } else if crate::error::is_body_timeout(&r) {
        ApiError::RequestTimeout
    } else {
        ApiError::BadRequest(r.body_text())
    }
}

/// `axum::extract::Path` with hooklane's error bodies (a segment that is not valid UTF-8
/// after percent-decoding would otherwise get axum's plain-text 400).
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// A JSON body that may be left out entirely: an empty body gives `None`.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        // Whether a body was sent is told by its bytes, not by its headers: `curl -X POST -H
        // 'Content-Type: application/json'` without data announces a type for no body, and a
        // compressed body says nothing of its length until it is decoded (an empty one decodes
        // to nothing). The body is read once here (held to the same limit) and handed on.
        let (parts, body) = req.into_parts();
        let limit = crate::body_limit::of(&parts.extensions, state);
        let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), state).await {
            Ok(bytes) => bytes,
            Err(rejection) => return Err(bytes_rejection(rejection, limit)),
        };
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        // A body without a JSON content type is not "no body": the JSON extractor answers it
        // 415 rather than ignoring it.
        let req = Request::from_parts(parts, Body::from(bytes));
        Json::<T>::from_request(req, state).await.map(|Json(v)| OptionalJson(Some(v)))
    }
}

/// The query string as name/value pairs, repeated names kept (`event_types=a&event_types=b`).
pub struct Query(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        Ok(Query(url::form_urlencoded::parse(raw.as_bytes()).into_owned().collect()))
    }
}

impl Query {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    pub fn parse<T: FromStr>(&self, name: &str) -> ApiResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name).map(|v| v.parse::<T>().map_err(|e| ApiError::bad_query(name, e.to_string()))).transpose()
    }

    pub fn flag(&self, name: &str) -> ApiResult<Option<bool>> {
        self.parse::<bool>(name)
    }

    pub fn time(&self, name: &str) -> ApiResult<Option<hooklane_core::DateTime<hooklane_core::Utc>>> {
        self.get(name)
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|t| t.to_utc())
                    .map_err(|e| ApiError::bad_query(name, format!("expected an RFC 3339 time: {e}")))
            })
            .transpose()
    }
}

/// An authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let hash = token_hash(token);
        if bool::from(hash.ct_eq(&state.0.admin_token_hash)) {
            return Ok(Auth(Principal::Admin));
        }
        let principal = match state.0.store.find_token(&hex(&hash), hooklane_core::Utc::now()).await? {
            // A polling endpoint's key reads its poller, and says who it is; nothing else.
            Some(Principal::Poller { .. })
                if !crate::capability::poller_key_may(&parts.method, matched_route(parts)) =>
            {
                return Err(ApiError::Forbidden("a polling endpoint's key may only read that endpoint's poller"));
            }
            Some(p) => p,
            None => return Err(ApiError::Unauthorized),
        };
        // None for the operational application, issued before it was named so: it holds
        // every application's ids and failures, for the admin token only.
        if of_operational_app(state, &principal).await? {
            return Err(ApiError::Forbidden(crate::operational::NO_TOKEN));
        }
        Ok(Auth(principal))
    }
}

/// Whether an application's token (or a poller's key) is one of the operational
/// application's, named in the configuration by its id or its uid.
async fn of_operational_app(state: &AppState, principal: &Principal) -> Result<bool, ApiError> {
    let Some(key) = state.0.operational_app.as_deref() else { return Ok(false) };
    let app_id = match principal {
        Principal::Admin => return Ok(false),
        Principal::App { app_id, .. } | Principal::Poller { app_id, .. } => app_id,
    };
    if app_id == key {
        return Ok(true);
    }
    // By the token's own application (cached, and there), not by the configured key: the
    // operational application may not exist yet, and a miss is not cached.
    Ok(state.0.cache.app(&state.0.store, app_id).await?.is_some_and(|app| app.uid.as_deref() == Some(key)))
}

/// The route's pattern as axum matched it (`/api/v1/app/{app_id}/…`); empty without one.
fn matched_route(parts: &Parts) -> &str {
    parts.extensions.get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or_default()
}

/// The token of an `Authorization: Bearer …` header, if there is a non-empty one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Some(token.trim())
        }
        _ => None,
    }
}

/// Looks the request's token up again, for a read that waited (a long-poll): one logged
/// out, expired, rotated away or revoked with its integration or endpoint meanwhile
/// answers 401, before the read's messages are answered or a shared position moves past
/// them. (The admin token is the configuration's, and stays.)
pub async fn token_still_works(
    state: &AppState,
    principal: &Principal,
    headers: &axum::http::HeaderMap,
) -> ApiResult<()> {
    if matches!(principal, Principal::Admin) {
        return Ok(());
    }
    let token = bearer_token(headers).ok_or(ApiError::Unauthorized)?;
    match state.0.store.find_token(&hex(&token_hash(token)), hooklane_core::Utc::now()).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::Unauthorized),
    }
}

/// A caller with the admin token; application tokens get 403.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Auth::from_request_parts(parts, state).await?.0 {
            Principal::Admin => Ok(Admin),
            Principal::App { .. } | Principal::Poller { .. } => {
                Err(ApiError::Forbidden("this operation needs the admin token"))
            }
        }
    }
}

/// The application named by `{app_id}` (id or uid) in the path, once the caller is known
/// to have access to it. Another tenant's application answers 404, exactly as a missing
/// one, so ids cannot be probed.
#[derive(Clone)]
pub struct Tenant {
    pub principal: Principal,
    pub app: Application,
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match AppRef::from_request_parts(parts, state).await? {
            AppRef::Found(tenant) => Ok(tenant),
            AppRef::Missing { .. } => Err(ApiError::NotFound("application")),
        }
    }
}

/// As [`Tenant`], but an application that does not exist is not a rejection: for the one
/// route that may create it (a message posted with Svix's `application` body).
pub enum AppRef {
    Found(Tenant),
    /// No application has this id or uid (`key`, from the path).
    Missing {
        principal: Principal,
        key: String,
    },
}

impl FromRequestParts<AppState> for AppRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, state).await?;
        let key = params.remove("app_id").ok_or(ApiError::NotFound("application"))?;
        let Some(app) = state.0.cache.app(&state.0.store, &key).await? else {
            return Ok(AppRef::Missing { principal, key });
        };
        if !principal.can_access(&app.id) {
            return Err(ApiError::NotFound("application"));
        }
        // Without a matched route (none here) nothing but full access passes.
        let route = matched_route(parts);
        let allowed = match &principal {
            // (Its own endpoint only: the poller checks which endpoint it names.)
            Principal::Poller { .. } => crate::capability::poller_key_may(&parts.method, route),
            other => other.allows(crate::capability::required(&parts.method, route)),
        };
        if !allowed {
            return Err(ApiError::Forbidden("this token's capabilities do not allow this operation"));
        }
        Ok(AppRef::Found(Tenant { principal, app }))
    }
}
