//! Svix's endpoint mTLS (`PUT`/`DELETE …/endpoint/{id}/mtls`): hooklane presents a TLS
//! client certificate to the endpoint, and may trust only the endpoint's own CA. hooklane
//! also answers `GET`, with the certificates but never the private key.

use axum::extract::State;
use axum::http::StatusCode;
use hooklane_core::model::EndpointMtls;
use serde::{Deserialize, Serialize};

use super::endpoint::{find, find_sent_to, remove_credentials, save_credentials, Credentials};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Tenant};
use crate::openapi::{EndpointPath, ErrorBody, InvalidJson, Unauthorized};
use crate::state::AppState;

/// Largest identity or CA certificate, as PEM text.
const MAX_PEM: usize = 64 * 1024;

/// Svix's `EndpointMtlsConfigIn`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointMtlsConfigIn {
    /// A PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted) and the X.509 certificate
    /// chain that goes with it (the key's own certificate first), which hooklane presents
    /// to the endpoint. The key is never shown again.
    identity: String,
    /// A PEM X.509 CA certificate the endpoint's certificate must chain to, instead of the
    /// public roots (for a receiver with a certificate of its own CA).
    #[serde(default)]
    server_ca_cert: Option<String>,
}

/// hooklane's own: the mTLS settings as they are shown, without the private key.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointMtlsConfigOut {
    /// The identity's certificates, PEM.
    certificate: String,
    server_ca_cert: Option<String>,
}

/// Get the endpoint's mTLS settings, without the private key.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/mtls",
    tag = "Endpoint",
    operation_id = "v1.endpoint.get-mtls",
    params(EndpointPath),
    responses(
        (status = 200, description = "The mTLS settings", body = EndpointMtlsConfigOut),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint, or it has no mTLS settings", body = ErrorBody),
    )
)]
pub async fn get(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
) -> ApiResult<axum::Json<EndpointMtlsConfigOut>> {
    let mtls = find(&s, &t, &key).await?.mtls.ok_or(ApiError::NotFound("mTLS settings"))?;
    let certificate = hooklane_dispatch::clients::certificates_pem(&mtls.identity);
    Ok(axum::Json(EndpointMtlsConfigOut { certificate, server_ca_cert: mtls.server_ca_cert }))
}

/// Set the endpoint's mTLS settings, replacing any.
///
/// From the next attempt on, hooklane presents the identity's certificate when the endpoint
/// asks for one (an `https` endpoint), and with `serverCaCert` trusts only that CA for it.
#[utoipa::path(
    put,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/mtls",
    tag = "Endpoint",
    operation_id = "v1.endpoint.update-mtls",
    params(EndpointPath),
    request_body = EndpointMtlsConfigIn,
    responses(
        (status = 204, description = "Settings saved"),
        (status = 400, response = InvalidJson),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such application or endpoint", body = ErrorBody),
        (status = 409, description = "A polling endpoint: nothing is sent to it", body = ErrorBody),
        (status = 422, description = "The identity or the CA certificate cannot be used, or the endpoint's URL is not https", body = ErrorBody),
    )
)]
pub async fn put(
    State(s): State<AppState>,
    t: Tenant,
    Path((_, key)): Path<(String, String)>,
    Json(input): Json<EndpointMtlsConfigIn>,
) -> ApiResult<StatusCode> {
    let ep = find_sent_to(&s, &t, &key).await?;
    if url::Url::parse(&ep.url).map_or(true, |u| u.scheme() != "https") {
        return Err(ApiError::validation("url", "mTLS needs an https endpoint URL"));
    }
    let mtls = EndpointMtls {
        identity: input.identity,
        server_ca_cert: input.server_ca_cert,
        endpoint_origin: super::endpoint::origin(&ep.url).unwrap_or_default(),
    };
    check(&mtls)?;
    save_credentials(&s, &t, ep, Credentials::Mtls(Some(mtls))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove the endpoint's mTLS settings: no client certificate, the public roots.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/mtls",
    tag = "Endpoint",
    operation_id = "v1.endpoint.delete-mtls",
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
    remove_credentials(&s, &t, &key, Credentials::Mtls(None)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The settings' faults, named as in the request body.
fn check(mtls: &EndpointMtls) -> ApiResult<()> {
    if mtls.identity.len() > MAX_PEM {
        return Err(ApiError::validation("identity", format!("at most {} KiB of PEM", MAX_PEM / 1024)));
    }
    if mtls.server_ca_cert.as_ref().is_some_and(|ca| ca.len() > MAX_PEM) {
        return Err(ApiError::validation("serverCaCert", format!("at most {} KiB of PEM", MAX_PEM / 1024)));
    }
    hooklane_dispatch::clients::check_mtls(mtls).map_err(|why| {
        let field = if why.starts_with("the server CA") { "serverCaCert" } else { "identity" };
        ApiError::validation(field, why)
    })
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(get, put, delete), components(schemas(EndpointMtlsConfigIn, EndpointMtlsConfigOut)))]
pub(crate) struct Doc;
