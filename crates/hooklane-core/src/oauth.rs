//! An endpoint's OAuth 2.0 settings (Svix's `EndpointOauthConfigIn`): before sending to
//! such an endpoint, hooklane gets an access token from the receiver's authorization server
//! and sends it as `Authorization: Bearer …`, for receivers behind an API gateway that
//! accepts nothing else.
//!
//! What is here is pure: the settings and their checks, the token request's form (RFC 6749
//! 4.4 and 6, with the client authenticated by HTTP basic, by form fields, or by a JWT
//! signed with a shared secret, RFC 7523 2.2), and the reading of the answer. The requests
//! themselves are made by the dispatcher, which caches the tokens.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::Hmac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::inbound::hmac_body::run as mac_of;

/// How the client authenticates to the authorization server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthMethod {
    /// `Authorization: Basic base64(client_id:client_secret)` (RFC 6749 2.3.1), the usual one.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` as form fields.
    ClientSecretPost,
    /// A JWT signed with a shared secret as `client_assertion` (RFC 7523); the secret is
    /// never sent.
    ClientSecretJwt,
}

/// What the token is asked for with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GrantType {
    /// The client's own credentials (RFC 6749 4.4).
    #[default]
    ClientCredentials,
    /// A refresh token the receiver issued (RFC 6749 6); a new one in an answer replaces it.
    RefreshToken,
}

/// The HMAC a `clientSecretJwt` assertion is signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    #[default]
    HS256,
    HS384,
    HS512,
}

/// Svix's `ClientSecretJwtParamsIn`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtParams {
    /// The shared secret, base64.
    pub secret_base64: String,
    /// Sent as the JWT's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_id: Option<String>,
    #[serde(default)]
    pub signing_algorithm: JwtAlgorithm,
    /// How long an assertion is valid (its `exp`); default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expiry_secs: Option<u64>,
}

/// An endpoint's OAuth settings.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointOauth {
    /// The authorization server's token endpoint.
    pub token_url: String,
    pub client_id: String,
    /// For `clientSecretBasic` and `clientSecretPost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub auth_method: AuthMethod,
    #[serde(default)]
    pub grant_type: GrantType,
    /// Sent as `scope`, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// More form fields of the token request (`audience`, `resource`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_params: Option<BTreeMap<String, String>>,
    /// For the `refreshToken` grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// For `clientSecretJwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_params: Option<JwtParams>,
    /// hooklane's own, not part of the API: the origin (`scheme://host[:port]`) of the
    /// endpoint's URL when the settings were set. Tokens go there only: not where a
    /// transformation sends a request, nor to a URL moved elsewhere (empty, in settings
    /// stored before this field: the origin of the endpoint's URL as it is).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_origin: String,
}

// Secrets never reach a log line through `{:?}`.
impl std::fmt::Debug for EndpointOauth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointOauth")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("auth_method", &self.auth_method)
            .field("grant_type", &self.grant_type)
            .field("scopes", &self.scopes)
            .field("endpoint_origin", &self.endpoint_origin)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for JwtParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtParams").field("signing_algorithm", &self.signing_algorithm).finish_non_exhaustive()
    }
}

/// Form fields hooklane sets itself, which `extraParams` may not replace.
const RESERVED_PARAMS: [&str; 7] =
    ["grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type", "scope", "refresh_token"];
const MAX_SCOPES: usize = 50;
const MAX_EXTRA_PARAMS: usize = 20;
/// Longest client id, secret, refresh token, scope or parameter value.
const MAX_VALUE: usize = 4096;
/// Longest lifetime of a JWT assertion.
const MAX_ASSERTION_SECS: u64 = 3600;
const DEFAULT_ASSERTION_SECS: u64 = 300;

impl EndpointOauth {
    /// What is wrong with it, as (field within the settings, message). The token URL is
    /// checked by the caller, as endpoint URLs are.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let value = |field: &'static str, v: &str| {
            if v.is_empty() || v.len() > MAX_VALUE || v.chars().any(char::is_control) {
                Err((field, format!("must be 1 to {MAX_VALUE} characters, none of them control characters")))
            } else {
                Ok(())
            }
        };
        value("clientId", &self.client_id)?;
        match self.auth_method {
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => match &self.client_secret {
                Some(secret) => value("clientSecret", secret)?,
                None => return Err(("clientSecret", "is required for clientSecretBasic and clientSecretPost".into())),
            },
            AuthMethod::ClientSecretJwt => {
                let Some(jwt) = &self.jwt_params else {
                    return Err(("jwtParams", "is required for clientSecretJwt".into()));
                };
                match STANDARD.decode(jwt.secret_base64.trim()) {
                    Ok(key) if !key.is_empty() && key.len() <= MAX_VALUE => {}
                    _ => {
                        return Err(("jwtParams.secretBase64", "must be a secret of 1 to 4096 bytes, in base64".into()))
                    }
                }
                if let Some(kid) = &jwt.secret_id {
                    value("jwtParams.secretId", kid)?;
                }
                if jwt.token_expiry_secs.is_some_and(|s| s == 0 || s > MAX_ASSERTION_SECS) {
                    return Err(("jwtParams.tokenExpirySecs", format!("must be 1 to {MAX_ASSERTION_SECS}")));
                }
            }
        }
        match (self.grant_type, &self.refresh_token) {
            (GrantType::RefreshToken, Some(token)) => value("refreshToken", token)?,
            (GrantType::RefreshToken, None) => {
                return Err(("refreshToken", "is required for the refreshToken grant".into()));
            }
            (GrantType::ClientCredentials, _) => {}
        }
        if let Some(scopes) = &self.scopes {
            if scopes.len() > MAX_SCOPES {
                return Err(("scopes", format!("at most {MAX_SCOPES}")));
            }
            // RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            let token = |s: &str| {
                !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\')
            };
            if !scopes.iter().all(|s| token(s)) {
                return Err((
                    "scopes",
                    "each must be 1 to 256 printable ASCII characters, no spaces, quotes or backslashes".into(),
                ));
            }
        }
        if let Some(extra) = &self.extra_params {
            if extra.len() > MAX_EXTRA_PARAMS {
                return Err(("extraParams", format!("at most {MAX_EXTRA_PARAMS}")));
            }
            for (name, v) in extra {
                value("extraParams", name)?;
                value("extraParams", v)?;
                if RESERVED_PARAMS.contains(&name.as_str()) {
                    return Err(("extraParams", format!("{name} is set by hooklane")));
                }
            }
        }
        Ok(())
    }

    /// The settings as they may be shown: without the client secret, the refresh token and
    /// the JWT secret.
    pub fn redacted(&self) -> EndpointOauth {
        EndpointOauth {
            client_secret: None,
            refresh_token: None,
            jwt_params: self.jwt_params.as_ref().map(|j| JwtParams { secret_base64: String::new(), ..j.clone() }),
            ..self.clone()
        }
    }

    /// The credentials these settings hold, as they are sent: the client secret (and the
    /// Basic credentials it goes in), the refresh token and the JWT secret. Kept out of
    /// what an authorization server or a receiver echoes into the attempt log.
    pub fn credentials(&self) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(secret) = &self.client_secret {
            found.push(secret.clone());
            let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            found.push(STANDARD.encode(format!("{}:{}", encode(&self.client_id), encode(secret))));
            found.push(STANDARD.encode(format!("{}:{secret}", self.client_id)));
        }
        found.extend(self.refresh_token.iter().cloned());
        found.extend(self.jwt_params.iter().map(|j| j.secret_base64.clone()));
        found
    }

    /// The token request: its form body (`application/x-www-form-urlencoded`) and, for
    /// `clientSecretBasic`, its `Authorization` header. `refresh_token` is the one to use
    /// (a rotated one may have replaced the configured one); `now` (Unix seconds) and `jti`
    /// go into a JWT assertion.
    pub fn token_request(&self, refresh_token: Option<&str>, now: i64, jti: &str) -> TokenRequest {
        let mut form = form_urlencoded::Serializer::new(String::new());
        match self.grant_type {
            GrantType::ClientCredentials => {
                form.append_pair("grant_type", "client_credentials");
            }
            GrantType::RefreshToken => {
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("refresh_token", refresh_token.or(self.refresh_token.as_deref()).unwrap_or(""));
            }
        }
        if let Some(scopes) = self.scopes.as_ref().filter(|s| !s.is_empty()) {
            form.append_pair("scope", &scopes.join(" "));
        }
        let secret = self.client_secret.as_deref().unwrap_or("");
        let mut authorization = None;
        match self.auth_method {
            AuthMethod::ClientSecretBasic => {
                // RFC 6749 2.3.1: both are form-encoded before they are joined.
                let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", encode(&self.client_id), encode(secret));
                authorization = Some(format!("Basic {}", STANDARD.encode(pair)));
            }
            AuthMethod::ClientSecretPost => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", secret);
            }
            AuthMethod::ClientSecretJwt => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
                form.append_pair("client_assertion", &self.assertion(now, jti));
            }
        }
        for (name, v) in self.extra_params.iter().flatten() {
            form.append_pair(name, v);
        }
        TokenRequest { form: form.finish(), authorization }
    }

    /// RFC 7523 2.2: a JWT with the client as issuer and subject, the token URL as audience.
    fn assertion(&self, now: i64, jti: &str) -> String {
        let Some(params) = &self.jwt_params else { return String::new() };
        let key = STANDARD.decode(params.secret_base64.trim()).unwrap_or_default();
        let mut header = serde_json::json!({"alg": params.signing_algorithm, "typ": "JWT"});
        if let Some(kid) = &params.secret_id {
            header["kid"] = kid.clone().into();
        }
        let lifetime = params.token_expiry_secs.unwrap_or(DEFAULT_ASSERTION_SECS) as i64;
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "jti": jti,
            "iat": now,
            "exp": now + lifetime,
        });
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = match params.signing_algorithm {
            JwtAlgorithm::HS256 => mac_of::<Hmac<sha2::Sha256>>(&key, &[signed.as_bytes()]),
            JwtAlgorithm::HS384 => mac_of::<Hmac<sha2::Sha384>>(&key, &[signed.as_bytes()]),
            JwtAlgorithm::HS512 => mac_of::<Hmac<sha2::Sha512>>(&key, &[signed.as_bytes()]),
        };
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// A token request to make: POST `form` to the token URL, with `authorization` if any.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub form: String,
    pub authorization: Option<String>,
}

/// An access token the authorization server gave.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    /// Its lifetime in seconds, when the server said.
    pub expires_in: Option<u64>,
    /// A new refresh token, replacing the one used.
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Longest access token taken (it goes into a header of every request).
pub const MAX_ACCESS_TOKEN: usize = 8192;

/// Reads the token endpoint's answer (RFC 6749 5.1 and 5.2). An error names the status and
/// the server's `error` and `error_description`, never the rest of its body.
pub fn read_token_answer(status: u16, body: &[u8]) -> Result<IssuedToken, String> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if !(200..=299).contains(&status) {
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get(name)?.as_str().map(str::to_string))
                .map(|s| s.chars().filter(|c| !c.is_control()).take(200).collect::<String>())
        };
        return Err(match (field("error"), field("error_description")) {
            (Some(e), Some(d)) => format!("the token endpoint answered {status}: {e} ({d})"),
            (Some(e), None) => format!("the token endpoint answered {status}: {e}"),
            _ => format!("the token endpoint answered {status}"),
        });
    }
    let Some(serde_json::Value::Object(answer)) = json else {
        return Err("the token endpoint's answer is not a JSON object".into());
    };
    let access_token = match answer.get("access_token") {
        Some(serde_json::Value::String(t))
            if !t.is_empty() && t.len() <= MAX_ACCESS_TOKEN && t.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            t.clone()
        }
        _ => {
            return Err(format!(
                "the token endpoint's answer has no access_token of 1 to {MAX_ACCESS_TOKEN} printable characters"
            ))
        }
    };
    match answer.get("token_type") {
        None => {}
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            let kind: String = other.to_string().chars().filter(|c| !c.is_control()).take(40).collect();
            return Err(format!("the token endpoint gave a token of type {kind}, not Bearer"));
        }
    }
    // Some servers write the number as a string.
    let expires_in = match answer.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let refresh_token = answer
        .get("refresh_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty() && t.len() <= MAX_VALUE)
        .map(str::to_string);
    Ok(IssuedToken { access_token, expires_in, refresh_token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;

    fn basic() -> EndpointOauth {
        EndpointOauth {
            token_url: "https://auth.example.com/token".into(),
            client_id: "hook lane".into(),
            client_secret: Some("s3cr:t&".into()),
            auth_method: AuthMethod::ClientSecretBasic,
            grant_type: GrantType::ClientCredentials,
            scopes: Some(vec!["webhooks:write".into(), "read".into()]),
            extra_params: Some([("audience".to_string(), "https://api.example.com".to_string())].into()),
            refresh_token: None,
            jwt_params: None,
            endpoint_origin: String::new(),
        }
    }

    #[test]
    fn basic_credentials_are_form_encoded_then_joined() {
        let req = basic().token_request(None, 0, "j");
        // base64("hook+lane:s3cr%3At%26")
        assert_eq!(req.authorization.as_deref(), Some("Basic aG9vaytsYW5lOnMzY3IlM0F0JTI2"));
        assert_eq!(
            req.form,
            "grant_type=client_credentials&scope=webhooks%3Awrite+read&audience=https%3A%2F%2Fapi.example.com"
        );
    }

    #[test]
    fn post_credentials_are_form_fields() {
        let oauth =
            EndpointOauth { auth_method: AuthMethod::ClientSecretPost, scopes: None, extra_params: None, ..basic() };
        let req = oauth.token_request(None, 0, "j");
        assert_eq!(req.authorization, None);
        assert_eq!(req.form, "grant_type=client_credentials&client_id=hook+lane&client_secret=s3cr%3At%26");
    }

    #[test]
    fn a_refresh_grant_sends_the_latest_token() {
        let oauth = EndpointOauth {
            grant_type: GrantType::RefreshToken,
            refresh_token: Some("r1".into()),
            scopes: None,
            extra_params: None,
            ..basic()
        };
        assert!(oauth.token_request(None, 0, "j").form.starts_with("grant_type=refresh_token&refresh_token=r1"));
        assert!(oauth.token_request(Some("r2"), 0, "j").form.starts_with("grant_type=refresh_token&refresh_token=r2"));
    }

    #[test]
    fn a_jwt_assertion_is_signed_with_the_shared_secret() {
        let oauth = EndpointOauth {
            auth_method: AuthMethod::ClientSecretJwt,
            client_secret: None,
            jwt_params: Some(JwtParams {
                secret_base64: STANDARD.encode(b"0123456789abcdef0123456789abcdef"),
                secret_id: Some("k1".into()),
                signing_algorithm: JwtAlgorithm::HS256,
                token_expiry_secs: Some(60),
            }),
            scopes: None,
            extra_params: None,
            ..basic()
        };
        assert_eq!(oauth.check(), Ok(()));
        let req = oauth.token_request(None, 1_700_000_000, "id-1");
        assert_eq!(req.authorization, None);
        let fields: BTreeMap<String, String> = form_urlencoded::parse(req.form.as_bytes()).into_owned().collect();
        assert_eq!(fields["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        let jwt = &fields["client_assertion"];
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}));
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iss": "hook lane", "sub": "hook lane", "aud": "https://auth.example.com/token",
                "jti": "id-1", "iat": 1_700_000_000, "exp": 1_700_000_060})
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).expect("signed with the secret");
    }

    #[test]
    fn checks_name_the_field() {
        let field = |o: EndpointOauth| o.check().err().map(|(f, _)| f);
        assert_eq!(field(basic()), None);
        assert_eq!(field(EndpointOauth { client_secret: None, ..basic() }), Some("clientSecret"));
        assert_eq!(field(EndpointOauth { client_id: String::new(), ..basic() }), Some("clientId"));
        assert_eq!(field(EndpointOauth { auth_method: AuthMethod::ClientSecretJwt, ..basic() }), Some("jwtParams"));
        assert_eq!(field(EndpointOauth { grant_type: GrantType::RefreshToken, ..basic() }), Some("refreshToken"));
        assert_eq!(field(EndpointOauth { scopes: Some(vec!["a b".into()]), ..basic() }), Some("scopes"));
        let reserved = Some([("client_id".to_string(), "x".to_string())].into());
        assert_eq!(field(EndpointOauth { extra_params: reserved, ..basic() }), Some("extraParams"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let oauth = EndpointOauth { refresh_token: Some("refresh-me".into()), ..basic() };
        let shown = format!("{oauth:?}");
        assert!(!shown.contains("s3cr") && !shown.contains("refresh-me"), "{shown}");
        assert!(format!("{:?}", oauth.redacted()).contains("hook lane"));
        assert_eq!(oauth.redacted().client_secret, None);
    }

    #[test]
    fn answers_are_read() {
        let ok = read_token_answer(200, br#"{"access_token":"abc","token_type":"bearer","expires_in":"60"}"#).unwrap();
        assert_eq!((ok.access_token.as_str(), ok.expires_in, ok.refresh_token), ("abc", Some(60), None));
        let rotated =
            read_token_answer(200, br#"{"access_token":"abc","expires_in":3600,"refresh_token":"r2"}"#).unwrap();
        assert_eq!(rotated.refresh_token.as_deref(), Some("r2"));
        assert_eq!(
            read_token_answer(401, br#"{"error":"invalid_client","error_description":"bad","secret":"x"}"#)
                .unwrap_err(),
            "the token endpoint answered 401: invalid_client (bad)"
        );
        assert_eq!(read_token_answer(502, b"<html>secret page</html>").unwrap_err(), "the token endpoint answered 502");
        assert!(read_token_answer(200, br#"{"access_token":"abc","token_type":"mac"}"#).is_err());
        assert!(read_token_answer(200, br#"{"access_token":"a b"}"#).is_err());
        assert!(read_token_answer(200, b"[]").is_err());
    }
}
