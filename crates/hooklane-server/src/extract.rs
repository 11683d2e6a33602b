//! Request extractors that turn every kind of bad input into an [`ApiError`], and the
//! authentication extractors. Tenant scoping lives here: handlers under
//! `/api/v1/app/{app_id}` take a [`Tenant`], which loads the application and checks the
//! caller may see it before the handler runs, so no handler can forget the check.

use std::collections::HashMap;
use std::str::FromStr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use hooklane_core::model::{Application, Principal};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::state::{hex, token_hash, AppState};

/// `axum::Json` with hooklane's error bodies.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection, state.0.max_body_bytes)),
        }
    }
}

fn json_rejection(r: JsonRejection, limit: usize) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            // axum reports "Failed to deserialize ...: <path>: <serde message>".
            let text = e.body_text();
            let detail = text.split_once("target type: ").map(|(_, d)| d).unwrap_or(&text);
            match detail.split_once(": ") {
                Some((field, msg)) if !field.contains(' ') => ApiError::validation(field, msg),
                _ => ApiError::validation("body", detail),
            }
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(limit)
        }
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// A JSON body that may be left out entirely (an empty body gives `None`).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let empty = req.headers().get(axum::http::header::CONTENT_LENGTH).is_some_and(|v| v == "0")
            || (!req.headers().contains_key(axum::http::header::CONTENT_TYPE)
                && !req.headers().contains_key(axum::http::header::TRANSFER_ENCODING));
        if empty {
            return Ok(OptionalJson(None));
        }
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
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or(ApiError::Unauthorized)?;
        let value = header.to_str().map_err(|_| ApiError::Unauthorized)?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::Unauthorized),
        };
        if token.is_empty() {
            return Err(ApiError::Unauthorized);
        }
        let hash = token_hash(token);
        if bool::from(hash.ct_eq(&state.0.admin_token_hash)) {
            return Ok(Auth(Principal::Admin));
        }
        match state.0.store.find_token(&hex(&hash)).await? {
            Some(p) => Ok(Auth(p)),
            None => Err(ApiError::Unauthorized),
        }
    }
}

/// A caller with the admin token; application tokens get 403.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Auth::from_request_parts(parts, state).await?.0 {
            Principal::Admin => Ok(Admin),
            Principal::App(_) => Err(ApiError::Forbidden("this operation needs the admin token")),
        }
    }
}

/// The application named by `{app_id}` (id or uid) in the path, once the caller is known
/// to have access to it. Another tenant's application answers 404, exactly as a missing
/// one, so ids cannot be probed.
pub struct Tenant {
    pub principal: Principal,
    pub app: Application,
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let key = params.get("app_id").ok_or(ApiError::NotFound("application"))?;
        let app = state.0.store.get_app(key).await?.ok_or(ApiError::NotFound("application"))?;
        if !principal.can_access(&app.id) {
            return Err(ApiError::NotFound("application"));
        }
        Ok(Tenant { principal, app })
    }
}
