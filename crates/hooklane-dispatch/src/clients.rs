//! The HTTP clients deliveries go through: one shared by every endpoint, and one per
//! distinct mTLS identity ([`EndpointMtls`]): a TLS client certificate (and the CA a
//! receiver's certificate must chain to) belongs to a client, not to a request. Every
//! client is built alike: the address policy's resolver, no redirects, the proxy if any.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hooklane_core::model::EndpointMtls;
use rustls::pki_types::pem::{PemObject, SectionKind};

use crate::address::GuardedResolver;
use crate::DispatchConfig;

/// A client for an identity unused this long is dropped (with its connections) when
/// another is made.
const IDLE: Duration = Duration::from_secs(3600);
/// Most identities' clients held at once; past it, the least recently used goes.
const MAX_CLIENTS: usize = 10_000;

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

    /// The client for an identity, made the first time it is needed (outside the lock:
    /// making one takes a while).
    pub(crate) fn for_identity(&self, mtls: &EndpointMtls) -> Result<reqwest::Client, String> {
        // reqwest talks to an https proxy with the same TLS settings: the proxy would be
        // shown the client certificate and have to chain to the endpoint's CA.
        if self.recipe.proxy.as_deref().and_then(|p| reqwest::Url::parse(p).ok()).is_some_and(|p| p.scheme() == "https")
        {
            return Err("mTLS does not go through an https:// proxy (it would get the client certificate)".into());
        }
        if let Some((client, used)) = self.lock().get_mut(mtls) {
            *used = Instant::now();
            return Ok(client.clone());
        }
        let client = with_identity(self.recipe.builder().map_err(|e| e.to_string())?, mtls)?;
        let now = Instant::now();
        let mut held = self.lock();
        held.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
        if held.len() >= MAX_CLIENTS {
            let oldest = held.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                held.remove(&oldest);
            }
        }
        held.insert(mtls.clone(), (client.clone(), now));
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointMtls, (reqwest::Client, Instant)>> {
        self.by_identity.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `builder` with the identity (and the CA, then the only one trusted).
fn with_identity(builder: reqwest::ClientBuilder, mtls: &EndpointMtls) -> Result<reqwest::Client, String> {
    let identity = reqwest::Identity::from_pem(mtls.identity.as_bytes())
        .map_err(|e| format!("the identity is not a PEM private key with its certificate: {}", describe_chain(&e)))?;
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

/// Whether mTLS settings can be used: one unencrypted private key, certificates (the one
/// of that key first), and a client can be made with them (with the CA, if any). The
/// messages never quote the PEM.
pub fn check_mtls(mtls: &EndpointMtls) -> Result<(), String> {
    if mtls.identity.contains("ENCRYPTED PRIVATE KEY") || mtls.identity.contains("Proc-Type: 4,ENCRYPTED") {
        return Err("the identity's private key is encrypted: give it unencrypted".into());
    }
    let sections = sections(&mtls.identity)?;
    let keys = sections
        .iter()
        .filter(|(kind, _)| {
            matches!(kind, SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey)
        })
        .count();
    if keys != 1 {
        return Err(format!("the identity must hold one private key (PKCS#8, PKCS#1 or SEC1), not {keys}"));
    }
    if !sections.iter().any(|(kind, _)| *kind == SectionKind::Certificate) {
        return Err("the identity holds no certificate".into());
    }
    with_identity(reqwest::Client::builder(), mtls).map(drop)
}

/// The identity's certificates as PEM, read as rustls reads them (the private key never
/// among them): what may be shown of it.
pub fn certificates_pem(identity: &str) -> String {
    let mut out = String::new();
    for (_, der) in sections(identity).unwrap_or_default().into_iter().filter(|(k, _)| *k == SectionKind::Certificate) {
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let text = STANDARD.encode(der);
        for line in text.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// The PEM sections rustls recognises (others are skipped, as it skips them).
fn sections(pem: &str) -> Result<Vec<(SectionKind, Vec<u8>)>, String> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the identity is not valid PEM".to_string())
}

fn describe_chain(e: &dyn std::error::Error) -> String {
    crate::sender::with_causes(e.to_string(), e)
}
