//! Svix's endpoint OAuth (`PUT`/`DELETE …/endpoint/{id}/oauth`): each request to the
//! endpoint carries an access token from the receiver's authorization server
//! ([`hooklane_core::oauth`] says how it is asked for). hooklane also answers `GET`, with
//! the settings but none of their secrets.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use hooklane_core::oauth::{AuthMethod, EndpointOauth, GrantType, JwtAlgorithm, JwtParams};
use serde::{Deserialize, Serialize};

use super::endpoint::{check_url, find, find_sent_to, remove_credentials, save_credentials, Credentials};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Tenant};
use crate::openapi::{EndpointPath, ErrorBody, InvalidJson, Unauthorized};
use crate::state::AppState;

/// Svix's `EndpointOauthConfigIn`. `null` is taken as left out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointOauthConfigIn {
    /// The authorization server's token endpoint (http or https; its address is checked as
    /// receivers' are when a token is asked for).
    token_url: String,
    client_id: String,
    /// For `clientSecretBasic` and `clientSecretPost`. Never shown again.
    #[serde(default)]
    client_secret: Option<String>,
    /// `clientSecretBasic` (default), `clientSecretPost` or `clientSecretJwt`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "clientSecretBasic")]
    auth_method: Option<AuthMethod>,
    /// `clientCredentials` (default) or `refreshToken`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "clientCredentials")]
    grant_type: Option<GrantType>,
    /// Sent as `scope`, space-separated (at most 50).
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// More form fields of the token request, e.g. `audience` (at most 20).
    #[serde(default)]
    extra_params: Option<BTreeMap<String, String>>,
    /// For the `refreshToken` grant. A new one the server answers with replaces it (saved).
    /// Never shown again.
    #[serde(default)]
    refresh_token: Option<String>,
    /// For `clientSecretJwt`.
    #[serde(default)]
    jwt_params: Option<JwtParamsIn>,
}

/// Svix's `ClientSecretJwtParamsIn`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtParamsIn {
    /// The shared secret the assertion is signed with, base64. Never shown again.
    secret_base64: String,
    /// The assertion's `kid`.
    #[serde(default)]
    secret_id: Option<String>,
    /// `HS256` (default), `HS384` or `HS512`: the assertion is signed with the shared
    /// secret (RFC 7523's client_secret_jwt). Svix's `RS256` (a private key) is refused.
    #[serde(default)]
    #[schema(example = "HS256")]
    signing_algorithm: Option<String>,
    /// The assertion's lifetime in seconds, 1 to 3600; default 300.
    #[serde(default)]
    token_expiry_secs: Option<u64>,
}

/// hooklane's own: the settings as they are shown, without the client secret, the refresh
/// token and the JWT secret.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOauthConfigOut {
    token_url: String,
    client_id: String,
    #[schema(value_type = String, example = "clientSecretBasic")]
    auth_method: AuthMethod,
    #[schema(value_type = String, example = "clientCredentials")]
    grant_type: GrantType,
    scopes: Option<Vec<String>>,
    extra_params: Option<BTreeMap<String, String>>,
    /// For `clientSecretJwt`: the assertion's `kid`, algorithm and lifetime.
    #[schema(value_type = Option<Object>)]
    jwt_params: Option<serde_json::Value>,
}

impl EndpointOauthConfigIn {
    /// The settings the body asks for (their values are checked by [`check`]).
    fn settings(self) -> ApiResult<EndpointOauth> {
        let jwt_params = match self.jwt_params {
            None => None,
            Some(j) => {
                let signing_algorithm = match j.signing_algorithm.as_deref() {
                    None | Some("HS256") => JwtAlgorithm::HS256,
                    Some("HS384") => JwtAlgorithm::HS384,
                    Some("HS512") => JwtAlgorithm::HS512,
                    Some(other) => {
                        return Err(ApiError::validation(
                            "jwtParams.signingAlgorithm",
                            format!("{other} is not supported: assertions are signed with the shared secret, HS256, HS384 or HS512"),
                        ))
                    }
                };
                Some(JwtParams {
                    secret_base64: j.secret_base64,
                    secret_id: j.secret_id,
                    signing_algorithm,
                    token_expiry_secs: j.token_expiry_secs,
                })
            }
        };
        Ok(EndpointOauth {
            token_url: self.token_url,
            client_id: self.client_id,
            client_secret: self.client_secret,
            auth_method: self.auth_method.unwrap_or_default(),
            grant_type: self.grant_type.unwrap_or_default(),
            scopes: self.scopes,
            extra_params: self.extra_params,
            refresh_token: self.refresh_token,
            jwt_params,
            // Bound when saved, to the endpoint's URL then.
            endpoint_origin: String::new(),
        })
    }
}

impl From<EndpointOauth> for EndpointOauthConfigOut {
    fn from(o: EndpointOauth) -> Self {
        let o = o.redacted();
        EndpointOauthConfigOut {
            token_url: o.token_url,
            client_id: o.client_id,
            auth_method: o.auth_method,
            grant_type: o.grant_type,
            scopes: o.scopes,
            extra_params: o.extra_params,
            jwt_params: o.jwt_params.map(|j| {
                serde_json::json!({
                    "secretId": j.secret_id,
                    "signingAlgorithm": j.signing_algorithm,
                    "tokenExpirySecs": j.token_expiry_secs,
                })
            }),
        }
    }
}

/// The settings' faults, named as in the request body.
fn check(oauth: &EndpointOauth) -> ApiResult<()> {
    check_url("tokenUrl", &oauth.token_url)?;
    // reqwest would send these as a second Authorization header, and GET would show them.
    if url::Url::parse(&oauth.token_url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some()) {
        return Err(ApiError::validation(
            "tokenUrl",
            "must not hold credentials: give them as clientId and clientSecret",
        ));
    }
    oauth.check().map_err(|(field, msg)| ApiError::validation(field, msg))
}

/// Get the endpoint's OAuth settings, without their secrets.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/oauth",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-oauth",
    params(EndpointPath),
    responses(
        (status = 200, description = "The OAuth settings", body = EndpointOauthConfigOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint, or it has no OAuth settings", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<EndpointOauthConfigOut>> {
    let oauth = find(&s, &t, &key).await?.oauth.ok_or(ApiError::NotFound("OAuth settings"))?;
    Ok(axum::Json(oauth.into()))
}

/// Set the endpoint's OAuth settings, replacing any.
///
/// From the next attempt on, each request to the endpoint carries
/// `Authorization: Bearer <access token>`, asked of `tokenUrl` when none is held (or it
/// expires within a minute), and asked again after the endpoint answers 401.
#[utoipa::path(
    put,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/oauth",
    tag = "Endpoint",
    operation_id = "v1.endpoint.update-oauth",
    params(EndpointPath),
    request_body = EndpointOauthConfigIn,
    responses(
        (status = 204, description = "Settings saved"),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 409, description = "A polling endpoint: nothing is sent to it", body = ErrorBody),
        (status = 422, description = "A setting is not valid, or one its method or grant needs is missing", body = ErrorBody),
    )
)]
pub async fn put(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<EndpointOauthConfigIn>,
) -> ApiResult<StatusCode> {
    let mut oauth = input.settings()?;
    check(&oauth)?;
    let ep = find_sent_to(&s, &t, &key).await?;
    oauth.endpoint_origin = super::endpoint::origin(&ep.url).unwrap_or_default();
    save_credentials(&s, &t, ep, Credentials::Oauth(Some(oauth))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove the endpoint's OAuth settings: its requests carry no access token any more.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/oauth",
    tag = "Endpoint",
    operation_id = "v1.endpoint.delete-oauth",
    params(EndpointPath),
    responses(
        (status = 204, description = "Settings removed (or there were none)"),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    remove_credentials(&s, &t, &key, Credentials::Oauth(None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(get, put, delete), components(schemas(EndpointOauthConfigIn, JwtParamsIn, EndpointOauthConfigOut)))]
pub(crate) struct Doc;
