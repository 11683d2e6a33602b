//! The HTTP clients deliveries go through: one shared by every endpoint, and one per
//! distinct mTLS identity ([`EndpointMtls`]): a TLS client certificate (and the CA a
//! receiver's certificate must chain to) belongs to a client, not to a request. Every
//! client is built alike: the address policy's resolver, no redirects, the proxy if any.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hooklane_core::model::EndpointMtls;

use crate::address::GuardedResolver;
use crate::DispatchConfig;

/// A client for an identity unused this long is dropped (with its connections) when
/// another is made.
const IDLE: Duration = Duration::from_secs(3600);

pub(crate) struct Clients {
    recipe: Recipe,
    shared: reqwest::Client,
    by_identity: Mutex<HashMap<EndpointMtls, (reqwest::Client, Instant)>>,
}

/// What every client is built with.
struct Recipe {
    connect_timeout: Duration,
    pool_per_host: usize,
    user_agent: String,
    proxy: Option<String>,
    resolver: Arc<GuardedResolver>,
}

impl Recipe {
    fn builder(&self) -> Result<reqwest::ClientBuilder, reqwest::Error> {
        let builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(self.resolver.clone())
            // (Pooled by receiver, through a proxy too.)
            .pool_max_idle_per_host(self.pool_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(self.user_agent.clone());
        // Never the environment's `HTTP_PROXY` and the like: a proxy the operator did not
        // name here would resolve receivers' names beyond the address policy.
        Ok(match &self.proxy {
            Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy.as_str())?),
            None => builder.no_proxy(),
        })
    }
}

impl Clients {
    pub(crate) fn new(cfg: &DispatchConfig, resolver: Arc<GuardedResolver>) -> Result<Clients, reqwest::Error> {
        let recipe = Recipe {
            connect_timeout: cfg.connect_timeout,
            pool_per_host: cfg.per_endpoint_in_flight,
            user_agent: cfg.user_agent.clone(),
            proxy: cfg.proxy.as_ref().map(|p| p.url.clone()),
            resolver,
        };
        let shared = recipe.builder()?.build()?;
        Ok(Clients { recipe, shared, by_identity: Mutex::default() })
    }

    /// The client without a client certificate.
    pub(crate) fn shared(&self) -> &reqwest::Client {
        &self.shared
    }

    /// The client for an endpoint: its identity's, made the first time it is needed.
    pub(crate) fn for_identity(&self, mtls: Option<&EndpointMtls>) -> Result<reqwest::Client, String> {
        let Some(mtls) = mtls else { return Ok(self.shared.clone()) };
        let now = Instant::now();
        let mut held = self.by_identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((client, used)) = held.get_mut(mtls) {
            *used = now;
            return Ok(client.clone());
        }
        let client = with_identity(self.recipe.builder().map_err(|e| e.to_string())?, mtls)?;
        held.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
        held.insert(mtls.clone(), (client.clone(), now));
        Ok(client)
    }
}

/// `builder` with the identity (and the CA, then the only one trusted).
fn with_identity(builder: reqwest::ClientBuilder, mtls: &EndpointMtls) -> Result<reqwest::Client, String> {
    let identity = reqwest::Identity::from_pem(mtls.identity.as_bytes())
        .map_err(|e| format!("the identity is not a PEM private key with its certificate: {e}"))?;
    let mut builder = builder.use_rustls_tls().identity(identity);
    if let Some(ca) = &mtls.server_ca_cert {
        let roots = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
            .ok()
            .filter(|roots| !roots.is_empty())
            .ok_or("the server CA is not a PEM certificate")?;
        builder = builder.tls_built_in_root_certs(false);
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder.build().map_err(|e| format!("the identity cannot be used: {}", describe_chain(&e)))
}

/// Whether mTLS settings can be used: their identity's key and certificate parse, and a
/// client can be made with them (with the CA, if any).
pub fn check_mtls(mtls: &EndpointMtls) -> Result<(), String> {
    with_identity(reqwest::Client::builder(), mtls).map(drop)
}

fn describe_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
