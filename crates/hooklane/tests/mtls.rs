//! Endpoint mTLS (Svix's `…/endpoint/{id}/mtls`): the real binary delivers to a real TLS
//! receiver on loopback that asks for a client certificate of its own CA, with
//! certificates made here (rcgen).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

/// A CA, and what it signs.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (IP addresses become IP names) and its key, as PEM.
    fn sign(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// An HTTPS receiver on 127.0.0.1 whose certificate `server_ca` signed, and which takes only
/// clients with a certificate `client_ca` signed.
struct TlsReceiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    refused_handshakes: Arc<AtomicUsize>,
}

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    refused: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl TlsReceiver {
    async fn start(server_ca: &Ca, client_ca: &Ca) -> TlsReceiver {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(client_ca.pem().as_bytes()).unwrap()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let (cert, key) = server_ca.sign(&["127.0.0.1"]);
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let listener =
            TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), refused: refused.clone() };
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "ok"
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TlsReceiver { url: format!("https://127.0.0.1:{}/hook", addr.port()), bodies, refused_handshakes: refused }
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let got = self.bodies.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the TLS receiver got {} requests, expected {n}", self.bodies.lock().unwrap().len());
    }
}

async fn last_attempt(server: &Server, app: &str, msg: &str) -> Value {
    let body = server
        .wait_until(&format!("/api/v1/app/{app}/attempt/msg/{msg}/"), Duration::from_secs(10), |b| {
            b["data"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    body["data"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_an_identity_passes_a_receiver_that_asks_for_one() {
    let (server_ca, client_ca, rogue_ca) = (Ca::new("receiver CA"), Ca::new("client CA"), Ca::new("rogue CA"));
    let receiver = TlsReceiver::start(&server_ca, &client_ca).await;
    let server = Server::start("[delivery]\nretry_schedule = []").await;
    let app = server.create_app("mtls").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": receiver.url })).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/mtls");
    let (status, _) = server.call("GET", &path, None).await;
    assert_eq!(status, 404, "none yet");

    // Without settings: the receiver's CA is nobody's root, so hooklane refuses it.
    let msg = server.send_message(&app, "user.created", json!({"n": 0})).await;
    let attempt = last_attempt(&server, &app, &msg).await;
    assert_eq!(attempt["responseStatusCode"], 0, "{attempt}");
    assert!(attempt["response"].as_str().unwrap().contains("certificate"), "{attempt}");

    // The receiver's CA, but no identity of its client CA: the receiver refuses the handshake.
    let (cert, key) = rogue_ca.sign(&["hooklane"]);
    let rogue = json!({ "identity": format!("{key}{cert}"), "serverCaCert": server_ca.pem() });
    let (status, body) = server.call("PUT", &path, Some(rogue)).await;
    assert_eq!(status, 204, "{body}");
    let msg = server.send_message(&app, "user.created", json!({"n": 1})).await;
    let attempt = last_attempt(&server, &app, &msg).await;
    assert_eq!(attempt["responseStatusCode"], 0, "{attempt}");
    assert!(receiver.refused_handshakes.load(Ordering::SeqCst) >= 1);
    assert!(receiver.bodies.lock().unwrap().is_empty());

    // The client CA's identity: delivered. Certificate first, key after, as some tools write it.
    let (cert, key) = client_ca.sign(&["hooklane"]);
    let identity = format!("{cert}{key}");
    let good = json!({ "identity": identity, "serverCaCert": server_ca.pem() });
    let (status, body) = server.call("PUT", &path, Some(good)).await;
    assert_eq!(status, 204, "{body}");
    let msg = server.send_message(&app, "user.created", json!({"n": 2})).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got, vec![json!({"n": 2})]);
    assert_eq!(last_attempt(&server, &app, &msg).await["responseStatusCode"], 200);

    // Shown without the private key; never in the log.
    let (status, shown) = server.call("GET", &path, None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["certificate"].as_str().unwrap().trim(), cert.trim());
    assert_eq!(shown["serverCaCert"].as_str().unwrap(), server_ca.pem());
    assert!(!shown.to_string().contains("PRIVATE KEY"), "{shown}");
    let key_body = key.lines().nth(1).unwrap();
    assert!(!server.logs().contains(key_body), "the private key in the log");

    // Removed: back to the public roots, which do not know the receiver's CA.
    let (status, _) = server.call("DELETE", &path, None).await;
    assert_eq!(status, 204);
    let msg = server.send_message(&app, "user.created", json!({"n": 3})).await;
    let attempt = last_attempt(&server, &app, &msg).await;
    assert_eq!(attempt["responseStatusCode"], 0);
    assert!(attempt["response"].as_str().unwrap().contains("certificate"), "{attempt}");
    assert_eq!(receiver.bodies.lock().unwrap().len(), 1);

    // Set again, then the endpoint moves to another origin: the settings go with the move.
    let good = json!({ "identity": identity, "serverCaCert": server_ca.pem() });
    let (status, _) = server.call("PUT", &path, Some(good)).await;
    assert_eq!(status, 204);
    let elsewhere = receiver.url.replace("127.0.0.1", "localhost");
    let (status, _) =
        server.call("PATCH", &format!("/api/v1/app/{app}/endpoint/{ep}"), Some(json!({"url": elsewhere}))).await;
    assert_eq!(status, 200);
    assert_eq!(server.call("GET", &path, None).await.0, 404, "dropped by the move");
}

#[tokio::test]
async fn unusable_settings_are_refused() {
    let server = Server::start("").await;
    let app = server.create_app("mtls").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": "https://example.com/hook" })).await;
    let path = format!("/api/v1/app/{app}/endpoint/{ep}/mtls");
    let ca = Ca::new("a CA");
    let (cert, key) = ca.sign(&["hooklane"]);
    let (other_cert, other_key) = ca.sign(&["someone else"]);
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n";
    for (body, field) in [
        (json!({ "identity": cert.clone() }), "identity"),
        (json!({ "identity": format!("{other_key}{cert}") }), "identity"),
        (json!({ "identity": format!("{key}{other_key}{cert}") }), "identity"),
        (json!({ "identity": format!("{encrypted}{cert}") }), "identity"),
        (json!({ "identity": format!("{key}{other_cert}{cert}") }), "identity"),
        (json!({ "identity": key.clone() }), "identity"),
        (json!({ "identity": "not PEM at all" }), "identity"),
        (json!({ "identity": format!("{key}{cert}"), "serverCaCert": "not a certificate" }), "serverCaCert"),
        (json!({ "identity": "x".repeat(70_000) }), "identity"),
    ] {
        let (status, out) = server.call("PUT", &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {out}");
        assert_eq!(out["code"], "validation");
        assert!(out.to_string().contains(field), "{field}: {out}");
        assert!(!out.to_string().contains("PRIVATE KEY"), "{out}");
    }
    let (status, _) = server.call("GET", &path, None).await;
    assert_eq!(status, 404, "nothing was saved");

    // Only for https endpoints.
    let (plain, _) = server.create_endpoint(&app, json!({ "url": "http://example.com/hook" })).await;
    let (status, out) = server
        .call(
            "PUT",
            &format!("/api/v1/app/{app}/endpoint/{plain}/mtls"),
            Some(json!({ "identity": format!("{key}{cert}") })),
        )
        .await;
    assert_eq!(status, 422, "{out}");
    assert!(out.to_string().contains("https"), "{out}");
}
