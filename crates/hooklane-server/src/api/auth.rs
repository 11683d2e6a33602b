//! `/api/v1/auth`: application-scoped tokens (Svix's app-portal access).

use axum::extract::State;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hooklane_core::Utc;
use rand::RngCore;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{Admin, Path};
use crate::state::{hex, token_hash, AppState};

/// Prefix of application-scoped tokens, so they are recognisable in a secret scanner.
const APP_TOKEN_PREFIX: &str = "appsk_";

#[derive(Serialize)]
pub struct AppPortalAccessOut {
    url: String,
    token: String,
}

/// Issues a token that can see and change only this application. The token is shown once;
/// only its hash is stored.
pub async fn app_portal_access(
    State(s): State<AppState>,
    _: Admin,
    Path(app_key): Path<String>,
) -> ApiResult<axum::Json<AppPortalAccessOut>> {
    let app = s.0.store.get_app(&app_key).await?.ok_or(ApiError::NotFound("application"))?;
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("{APP_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw));
    s.0.store.create_token(hex(&token_hash(&token)), Some(app.id), Utc::now()).await?;
    let url = format!("{}/portal#token={token}", s.0.public_url.trim_end_matches('/'));
    Ok(axum::Json(AppPortalAccessOut { url, token }))
}
