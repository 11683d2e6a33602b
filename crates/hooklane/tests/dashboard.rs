//! End-to-end tests of the web dashboard and the application portal in a real browser:
//! headless Chromium (the system's, Debian package `chromium`; `scripts/ensure-chromium.sh`
//! installs it) driven over the DevTools protocol, against the real `hooklane` binary.
//!
//! There is no skipping: without Chromium these tests fail with a message saying how to
//! install it. Set `CHROMIUM_BIN` to use another Chromium binary.
//!
//! `DASHBOARD_SCREENSHOTS=docs/screenshots cargo test -p hooklane --test dashboard` also
//! writes PNGs of the main pages into that directory (relative to the workspace root):
//! how the README's screenshots are made.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WIDTH: u32 = 1360;
const HEIGHT: u32 = 900;

// --- a small DevTools protocol client

const INSTALL_HINT: &str = "Install it with scripts/ensure-chromium.sh (apt-get install chromium chromium-driver); \
     scripts/test.sh and CI do that themselves.";

fn chromium_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.exists(), "CHROMIUM_BIN names {}, which does not exist. {INSTALL_HINT}", p.display());
        return p;
    }
    for candidate in
        ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"]
    {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "headless Chromium is required by the dashboard tests and was not found (looked for /usr/bin/chromium, \
         chromium-browser, google-chrome; or set CHROMIUM_BIN). {INSTALL_HINT}"
    );
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with one page, killed (with its profile removed) on drop.
struct Browser {
    // (Dropped first: the process ends before its profile is removed.)
    _child: Killed,
    _profile: tempfile::TempDir,
    ws: Ws,
    session: String,
    next_id: u64,
}

/// A process killed when dropped, from its spawn on: a launch that fails leaves no browser
/// behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Browser {
    async fn launch() -> Browser {
        let binary = chromium_binary();
        let profile = tempfile::tempdir().expect("profile dir");
        let spawned = Command::new(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={WIDTH},{HEIGHT}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut child = Killed(spawned);
        // Chromium prints its DevTools endpoint on stderr.
        let stderr = child.0.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.split("DevTools listening on ").nth(1) {
                        let _ = tx.send(url.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{} started but never announced its DevTools endpoint", binary.display()));
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect to DevTools");
        let mut browser = Browser { _child: child, _profile: profile, ws, session: String::new(), next_id: 0 };
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" })).await;
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached =
            browser.call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true })).await;
        browser.session = attached["sessionId"].as_str().expect("sessionId").to_string();
        browser.page("Page.enable", json!({})).await;
        browser.page("Runtime.enable", json!({})).await;
        browser
            .page(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        browser
    }

    /// Sends one command and waits for its answer (events arriving meanwhile are dropped).
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(WsMessage::Text(msg.to_string().into())).await.expect("send to DevTools");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools connection closed")
                .expect("DevTools read");
            let WsMessage::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"].as_u64() == Some(id) {
                if let Some(err) = v.get("error") {
                    panic!("{method} failed: {err}");
                }
                return v["result"].clone();
            }
        }
    }

    async fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params).await
    }

    async fn goto(&mut self, url: &str) {
        self.page("Page.navigate", json!({ "url": url })).await;
        self.wait_for("document.readyState === 'complete'", "the page to load").await;
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .page("Runtime.evaluate", json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }))
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("page script failed: {expr}\n{e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `cond` (a JS expression) is true in the page.
    async fn wait_for(&mut self, cond: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.eval(&format!("!!({cond})")).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self.eval("document.body ? document.body.innerText : ''").await;
                panic!("timed out waiting for {what} ({cond}); the page shows:\n{}", body.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the centre of the element `selector` finds, with real mouse events.
    async fn click(&mut self, selector: &str) {
        let sel = serde_json::to_string(selector).unwrap();
        self.wait_for(&format!("document.querySelector({sel})"), selector).await;
        let rect = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); e.scrollIntoView({{block: 'center'}}); \
                 const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (rect[0].as_f64().unwrap(), rect[1].as_f64().unwrap());
        for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.page(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Types `text` into the field `selector` finds, replacing what it held.
    async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(selector).await;
        let sel = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelector({sel}).select()")).await;
        self.page("Input.insertText", json!({ "text": text })).await;
    }

    /// Puts `HOLD_FETCH` in the page now and, with `on_new_pages`, in every page loaded
    /// after (before its own scripts run).
    async fn hold_fetches(&mut self, on_new_pages: bool) {
        if on_new_pages {
            self.page("Page.addScriptToEvaluateOnNewDocument", json!({ "source": HOLD_FETCH })).await;
        }
        self.eval(HOLD_FETCH).await;
    }

    /// Sets `HOLD_FETCH`'s rules (a JS array).
    async fn hold_rules(&mut self, rules: &str) {
        self.eval(&format!("window.__hold.rules = {rules}")).await;
    }

    /// Lets the held answers through, and waits a moment for the page to take them in.
    async fn release_held(&mut self) {
        self.eval("Promise.all(window.__hold.held.splice(0).map((h) => h.release()))").await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }

    async fn text(&mut self) -> String {
        self.eval("document.body.innerText").await.as_str().unwrap_or("").to_string()
    }

    async fn count(&mut self, selector: &str) -> usize {
        let sel = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelectorAll({sel}).length")).await.as_u64().unwrap_or(0) as usize
    }

    /// Saves a PNG of the page (up to 1800 px tall) when `DASHBOARD_SCREENSHOTS` names a
    /// directory; always checks a screenshot can be taken.
    async fn screenshot(&mut self, name: &str) {
        let height = self.eval("document.documentElement.scrollHeight").await.as_f64().unwrap_or(HEIGHT as f64);
        let height = height.clamp(HEIGHT as f64, 1800.0);
        let shot = self
            .page(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true,
                        "clip": { "x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1 } }),
            )
            .await;
        let png = B64.decode(shot["data"].as_str().expect("png data")).expect("base64 png");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Some(dir) = std::env::var_os("DASHBOARD_SCREENSHOTS") {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(dir);
            std::fs::create_dir_all(&dir).expect("screenshot dir");
            std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
        }
    }
}

/// A slow or failing server, as the page sees it: the page's `fetch` wrapped so that a
/// request a rule matches (`url`: a part of its URL; `method`; `auth`: how its bearer token
/// ends) is either answered `status` with `body` at once, without reaching the server, or
/// sent at once but its answer held (in `window.__hold.held`) until the test releases it.
/// The page's own code is not changed.
const HOLD_FETCH: &str = r#"(() => {
  if (window.__hold) return;
  const real = window.fetch.bind(window);
  const hold = window.__hold = { rules: [], held: [] };
  window.fetch = (url, opts) => {
    const auth = String((opts && opts.headers && opts.headers.authorization) || "");
    const method = (opts && opts.method) || "GET";
    const rule = hold.rules.find((r) => String(url).includes(r.url) && (!r.auth || auth.endsWith(r.auth))
      && (!r.method || r.method === method));
    if (!rule) return real(url, opts);
    if (rule.status) {
      return Promise.resolve(new Response(JSON.stringify(rule.body || {}),
        { status: rule.status, headers: { "content-type": "application/json" } }));
    }
    const answer = real(url, opts);
    return new Promise((resolve, reject) =>
      hold.held.push({ url: String(url), release: () => answer.then(resolve, reject) }));
  };
})()"#;

// --- the flows

/// Posts a message with an `eventId`, so it reads well in screenshots.
async fn post(server: &Server, app: &str, event_type: &str, event_id: &str, payload: Value) -> String {
    let body = json!({ "eventType": event_type, "eventId": event_id, "payload": payload });
    let (status, out) = server.call("POST", &format!("/api/v1/app/{app}/msg/"), Some(body)).await;
    assert_eq!(status, 202, "{out}");
    out["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_portal_main_flows() {
    let mut browser = Browser::launch().await;
    // No circuit: the failing endpoint's 12 attempts come without its cool-downs.
    let server = Server::start("[delivery]\ncircuit_failures = 0").await;

    // Two applications with traffic: Acme has a healthy endpoint and one that always fails.
    let ok = Receiver::start().await;
    let broken = Receiver::scripted(|_, _| Reply::Status(503)).await;
    let acme = {
        let (status, body) =
            server.call("POST", "/api/v1/app/", Some(json!({ "name": "Acme Corp", "uid": "acme" }))).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    };
    let globex = server.create_app("Globex Industries").await;
    let (good, _) = server
        .create_endpoint(
            &acme,
            json!({ "url": format!("{}/webhooks/acme", ok.url), "description": "Billing service",
                    "headers": { "x-acme-tenant": "eu-1" }, "ordering": "fifo", "payloadFilter": {} }),
        )
        .await;
    let (bad, _) = server
        .create_endpoint(
            &acme,
            json!({ "url": format!("{}/hooks/legacy", broken.url), "description": "Legacy CRM (down)",
                    "filterTypes": ["order.shipped", "user.created"], "transform": { "event": "{{ $ }}" } }),
        )
        .await;
    server
        .create_endpoint(&globex, json!({ "url": format!("{}/globex", ok.url), "description": "Globex intake" }))
        .await;
    let mut invoices = Vec::new();
    for i in 0..3 {
        invoices.push(
            post(
                &server,
                &acme,
                "invoice.paid",
                &format!("inv_{i}"),
                json!({ "invoice": format!("in_{i}"), "amount": 4200 + i }),
            )
            .await,
        );
    }
    for i in 0..2 {
        post(&server, &acme, "user.created", &format!("usr_{i}"), json!({ "user": format!("u_{i}") })).await;
    }
    post(&server, &acme, "order.shipped", "ord_1", json!({ "order": "o_1", "carrier": "DHL" })).await;
    post(&server, &globex, "invoice.paid", "gx_1", json!({ "invoice": "gx" })).await;
    // 3 + 2 + 1 to the healthy endpoint and Globex's one; 3 messages × 4 attempts fail.
    ok.wait_for(7, Duration::from_secs(20)).await;
    broken.wait_for(12, Duration::from_secs(20)).await;
    server
        .wait_until(&format!("/api/v1/stats/app/{acme}/msg?status=pending"), Duration::from_secs(20), |b| {
            b["data"].as_array().is_some_and(|d| d.is_empty())
        })
        .await;

    // Sign in with the admin token; the applications are listed.
    browser.goto(&server.url("/dashboard")).await;
    browser.wait_for("document.querySelector('[data-testid=token-input]')", "the sign-in form").await;
    browser.screenshot("login").await;
    browser.type_into("[data-testid=token-input]", "wrong-token").await;
    browser.click("[data-testid=login]").await;
    browser.wait_for("document.querySelector('[data-testid=login-error]')", "a refused sign-in").await;
    browser.type_into("[data-testid=token-input]", ADMIN).await;
    browser.click("[data-testid=login]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=app-row]').length === 2", "both applications").await;
    let text = browser.text().await;
    assert!(text.contains("Acme Corp") && text.contains("Globex Industries"), "{text}");
    browser.screenshot("applications").await;

    // An application: endpoints with their health, the charts.
    browser.click("[data-testid=app-row]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=endpoint-row]').length === 2", "Acme's endpoints").await;
    let good_row = format!("[data-endpoint='{good}']");
    let bad_row = format!("[data-endpoint='{bad}']");
    let good_text = browser.eval(&format!("document.querySelector(\"{good_row}\").innerText")).await;
    let good_text = good_text.as_str().unwrap();
    assert!(good_text.contains("100 %") && good_text.contains("6 ok") && good_text.contains("p50"), "{good_text}");
    let bad_text = browser.eval(&format!("document.querySelector(\"{bad_row}\").innerText")).await;
    let bad_text = bad_text.as_str().unwrap();
    assert!(bad_text.contains("0 %") && bad_text.contains("12 failed") && bad_text.contains("failing"), "{bad_text}");
    assert!(bad_text.contains("503"), "the last failures are shown: {bad_text}");
    // hooklane's own settings, shown on each endpoint that has them.
    assert!(good_text.contains("FIFO") && good_text.contains("filtered"), "{good_text}");
    assert!(bad_text.contains("transformed") && !bad_text.contains("FIFO"), "{bad_text}");
    assert!(browser.count("[data-testid=deliveries-chart] rect[data-kind=success]").await >= 1);
    assert!(browser.count("[data-testid=deliveries-chart] rect[data-kind=failure]").await >= 1);
    assert!(browser.count("[data-testid=latency-chart] path").await >= 1);
    browser.screenshot("endpoints").await;

    // The message log, searched by event type.
    browser.click("[data-testid=tab-messages]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=message-row]').length === 6", "the message log").await;
    browser.type_into("[data-testid=filter-event]", "invoice.paid").await;
    browser.click("[data-testid=search]").await;
    browser
        .wait_for(
            "(() => { const r = [...document.querySelectorAll('[data-testid=event-type]')]; \
             return r.length === 3 && r.every(e => e.innerText === 'invoice.paid'); })()",
            "only invoice.paid messages",
        )
        .await;
    browser.screenshot("messages").await;
    // …and by status: the failed ones are those the broken endpoint wanted.
    browser.eval("document.querySelector('[data-testid=filter-status]').value = 'fail'").await;
    browser.eval("document.querySelector('[data-testid=filter-event]').value = ''").await;
    browser.click("[data-testid=search]").await;
    browser
        .wait_for(
            "(() => { const r = [...document.querySelectorAll('[data-testid=event-type]')]; \
             return r.length === 3 && r.every(e => e.innerText !== 'invoice.paid'); })()",
            "the three failed messages",
        )
        .await;

    // One message: its attempts with request headers, response status, body and duration.
    let first = invoices[0].clone();
    browser.goto(&server.url(&format!("/dashboard#/app/{acme}/msg/{first}"))).await;
    browser.wait_for("document.querySelectorAll('[data-testid=attempt]').length === 1", "the attempt").await;
    let attempt = browser.eval("document.querySelector('[data-testid=attempt]').innerText").await;
    let attempt = attempt.as_str().unwrap();
    for want in ["HTTP 200", "webhook-signature", "webhook-id", &first, "x-acme-tenant", "eu-1", " ms"] {
        assert!(attempt.contains(want), "attempt view lacks {want:?}: {attempt}");
    }
    browser.screenshot("message").await;

    // Resend: a new attempt appears.
    let before = ok.received().len();
    browser.click("[data-testid=resend]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=attempt]').length === 2", "the resent attempt").await;
    assert_eq!(ok.received().len(), before + 1);
    assert_eq!(ok.received().last().unwrap().header("webhook-id"), first);

    // Disable, then enable, the healthy endpoint.
    browser.goto(&server.url(&format!("/dashboard#/app/{acme}"))).await;
    browser.click(&format!("{good_row} [data-testid=disable]")).await;
    browser
        .wait_for(&format!("document.querySelector(\"{good_row} [data-testid=enable]\")"), "the Enable button")
        .await;
    let (_, ep) = server.call("GET", &format!("/api/v1/app/{acme}/endpoint/{good}"), None).await;
    assert_eq!(ep["disabled"], true);
    browser.click(&format!("{good_row} [data-testid=enable]")).await;
    browser
        .wait_for(&format!("document.querySelector(\"{good_row} [data-testid=disable]\")"), "the Disable button")
        .await;
    let (_, ep) = server.call("GET", &format!("/api/v1/app/{acme}/endpoint/{good}"), None).await;
    assert_eq!(ep["disabled"], false);

    // Pause, then resume, it: a message posted while paused waits, and arrives on resume.
    browser.click(&format!("{good_row} [data-testid=pause]")).await;
    browser
        .wait_for(&format!("document.querySelector(\"{good_row} [data-testid=resume]\")"), "the Resume button")
        .await;
    browser
        .wait_for(
            &format!("document.querySelector(\"{good_row} [data-testid=badge]\").textContent === 'paused'"),
            "paused",
        )
        .await;
    let before = ok.received().len();
    server.send_message(&acme, "invoice.paid", json!({"held": true})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ok.received().len(), before, "held while paused");
    browser.click(&format!("{good_row} [data-testid=resume]")).await;
    browser.wait_for(&format!("document.querySelector(\"{good_row} [data-testid=pause]\")"), "the Pause button").await;
    let got = ok.wait_for(before + 1, Duration::from_secs(10)).await;
    assert_eq!(got[before].json(), json!({"held": true}));

    // Send test: a signed `svix.ping` reaches the healthy endpoint at once.
    let before = ok.received().len();
    browser.click(&format!("{good_row} [data-testid=send-test]")).await;
    let got = ok.wait_for(before + 1, Duration::from_secs(10)).await;
    assert_eq!(got[before].json(), json!({ "success": true }));
    browser
        .wait_for(
            &format!("document.querySelector(\"{good_row} [data-testid=send-test]\").textContent === 'Test sent'"),
            "the test sent",
        )
        .await;

    // Recover: the broken endpoint's failed deliveries are queued again.
    let broken_before = broken.received().len();
    browser.click(&format!("{bad_row} [data-testid=recover]")).await;
    broken.wait_for(broken_before + 3, Duration::from_secs(20)).await;

    // Credentials show as tags: OAuth on the broken endpoint, mTLS on a new https one (which
    // takes no message).
    let oauth = json!({"tokenUrl": "https://auth.example/token", "clientId": "c", "clientSecret": "s",
        "extraParams": {"audience": "https://api.acme.example"}});
    let (status, body) = server.call("PUT", &format!("/api/v1/app/{acme}/endpoint/{bad}/oauth"), Some(oauth)).await;
    assert_eq!(status, 204, "{body}");
    let (secure, _) = server
        .create_endpoint(&acme, json!({ "url": "https://127.0.0.1:9/secure", "filterTypes": ["never.sent"] }))
        .await;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["hooklane".to_string()]).unwrap().self_signed(&key).unwrap();
    let identity = json!({ "identity": format!("{}{}", cert.pem(), key.serialize_pem()) });
    let (status, body) =
        server.call("PUT", &format!("/api/v1/app/{acme}/endpoint/{secure}/mtls"), Some(identity)).await;
    assert_eq!(status, 204, "{body}");
    browser.goto(&server.url(&format!("/dashboard#/app/{acme}"))).await;
    let tags = |row: &str| {
        format!("(document.querySelector(\"{row} [data-testid=endpoint-settings]\") || {{}}).innerText || ''")
    };
    let secure_row = format!("[data-endpoint='{secure}']");
    browser
        .wait_for(
            &format!("{}.includes('OAuth') && {}.includes('mTLS')", tags(&bad_row), tags(&secure_row)),
            "the OAuth and mTLS tags",
        )
        .await;
    assert!(!browser.eval(&tags(&good_row)).await.as_str().unwrap_or("").contains("OAuth"));

    // The Authentication page: the broken endpoint's OAuth settings shown and changed (the
    // secret given again, never shown), the secure one's certificate shown and removed.
    browser.click(&format!("{bad_row} [data-testid=authentication-link]")).await;
    let oauth_now = "((document.querySelector('[data-testid=oauth-current]') || {}).textContent || '')";
    browser.wait_for(&format!("{oauth_now}.includes('https://auth.example/token')"), "the OAuth settings").await;
    browser
        .eval("document.querySelector('[data-testid=oauth-token-url]').value = 'https://auth.example/v2/token'")
        .await;
    browser.eval("document.querySelector('[data-testid=oauth-client-secret]').value = 'an0ther-s3cret'").await;
    browser.click("[data-testid=oauth-save]").await;
    browser
        .wait_for(
            &format!("{oauth_now}.includes('/v2/token') && document.querySelector('[data-testid=oauth-status]').textContent === 'Saved.'"),
            "the changed settings",
        )
        .await;
    let (_, oauth) = server.call("GET", &format!("/api/v1/app/{acme}/endpoint/{bad}/oauth"), None).await;
    assert_eq!(oauth["tokenUrl"], "https://auth.example/v2/token", "{oauth}");
    assert_eq!(oauth["extraParams"], json!({"audience": "https://api.acme.example"}), "kept by the form");
    let secret_field = browser.eval("document.querySelector('[data-testid=oauth-client-secret]').value").await;
    assert_eq!(secret_field, json!(""), "the secret field is emptied once saved");
    let html = browser.eval("document.documentElement.outerHTML").await;
    assert!(!html.as_str().unwrap().contains("an0ther-s3cret"), "the secret is nowhere in the page");
    browser.screenshot("authentication").await;
    browser.goto(&server.url(&format!("/dashboard#/app/{acme}/endpoint/{secure}/authentication"))).await;
    let mtls_now = "((document.querySelector('[data-testid=mtls-current]') || {}).textContent || '')";
    browser.wait_for(&format!("{mtls_now}.includes('BEGIN CERTIFICATE')"), "the certificate").await;
    assert!(!browser.eval(mtls_now).await.as_str().unwrap().contains("PRIVATE KEY"));
    browser.click("[data-testid=mtls-remove]").await;
    browser.wait_for(&format!("{mtls_now} === 'None set.'"), "the removal").await;
    let (status, _) = server.call("GET", &format!("/api/v1/app/{acme}/endpoint/{secure}/mtls"), None).await;
    assert_eq!(status, 404);
    browser.goto(&server.url(&format!("/dashboard#/app/{acme}"))).await;

    // An endpoint's JavaScript transformation: tried on a sample payload, then saved and
    // enabled; the next message reaches the endpoint as the code made it.
    browser.goto(&server.url(&format!("/dashboard#/app/{acme}"))).await;
    browser.click(&format!("{good_row} [data-testid=transformation-link]")).await;
    browser.wait_for("document.querySelector('[data-testid=transformation-code]')", "the transformation page").await;
    let status = "document.querySelector('[data-testid=transformation-status]').textContent";
    assert!(browser.eval(status).await.as_str().unwrap().contains("No transformation is set"));
    // Code that does not compile is refused with the reason; the page stays usable.
    browser.eval("document.querySelector('[data-testid=transformation-code]').value = 'function handler(w) {'").await;
    browser.click("[data-testid=transformation-save]").await;
    browser.wait_for(&format!("{status}.startsWith('Not saved')"), "the refusal").await;
    assert!(browser.eval(status).await.as_str().unwrap().contains("SyntaxError"));
    let code =
        "function handler(w) { w.method = 'PUT'; w.payload = { wrapped: w.payload, type: w.eventType }; return w }";
    browser.eval(&format!("document.querySelector('[data-testid=transformation-code]').value = {}", json!(code))).await;
    browser.click("[data-testid=transformation-test]").await;
    browser
        .wait_for(
            "document.querySelector('[data-testid=transformation-result]').textContent.includes('\"wrapped\"')",
            "the tried transformation",
        )
        .await;
    let tried = browser.eval("document.querySelector('[data-testid=transformation-result]').textContent").await;
    let tried = tried.as_str().unwrap();
    assert!(
        tried.starts_with("PUT ") && tried.contains("\"type\": \"invoice.paid\"") && tried.contains("evt_1"),
        "{tried}"
    );
    browser.screenshot("transformation").await;
    browser.click("[data-testid=transformation-enabled]").await;
    browser.click("[data-testid=transformation-save]").await;
    browser.wait_for(&format!("{status} === 'Saved and enabled.'"), "saved").await;
    let (_, saved) = server.call("GET", &format!("/api/v1/app/{acme}/endpoint/{good}/transformation"), None).await;
    assert_eq!((saved["code"].as_str(), saved["enabled"].as_bool()), (Some(code), Some(true)), "{saved}");
    let before = ok.received().len();
    post(&server, &acme, "user.created", "usr_js", json!({ "user": "u_js" })).await;
    let got = ok.wait_for(before + 1, Duration::from_secs(10)).await;
    assert_eq!(
        (got[before].method.as_str(), got[before].json()),
        ("PUT", json!({ "wrapped": { "user": "u_js" }, "type": "user.created" }))
    );
    let off = json!({ "enabled": false });
    let (status, _) =
        server.call("PATCH", &format!("/api/v1/app/{acme}/endpoint/{good}/transformation"), Some(off)).await;
    assert_eq!(status, 204);

    // A polling endpoint: shown with the URL it is read at, and no action that sends.
    let initech = server.create_app("Initech").await;
    let (status, poll) = server
        .call(
            "POST",
            &format!("/api/v1/app/{initech}/endpoint"),
            Some(json!({"polling": true, "description": "ledger"})),
        )
        .await;
    assert_eq!(status, 201, "{poll}");
    browser.goto(&server.url(&format!("/dashboard#/app/{initech}"))).await;
    browser.wait_for("document.querySelector('[data-testid=polling-tag]')", "the polling endpoint").await;
    let row = browser.eval("document.querySelector('[data-testid=endpoint-row]').innerText").await;
    let row = row.as_str().unwrap();
    assert!(row.contains(poll["url"].as_str().unwrap()) && row.contains("/poller/"), "{row}");
    for action in ["pause", "recover", "send-test", "transformation-link"] {
        assert_eq!(browser.count(&format!("[data-testid=endpoint-row] [data-testid={action}]")).await, 0, "{action}");
    }
    assert_eq!(browser.count("[data-testid=endpoint-row] [data-testid=disable]").await, 1);
    // A key for its consumer, shown once, that reads its poller.
    // (A click dispatched while the freshly drawn page still moves can miss the button: it is
    // clicked again while it is there, unanswered; once answered it is gone. CI once saw the
    // row drawn with neither the button nor a key: the page is then drawn again, once.)
    for round in 0..2 {
        for _ in 0..20 {
            if browser.count("[data-testid=poller-key-value]").await > 0 {
                break;
            }
            if browser.count("[data-testid=poller-key]:not([disabled])").await > 0 {
                browser.click("[data-testid=poller-key]").await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if round == 0 && browser.count("[data-testid=poller-key-value]").await == 0 {
            let row = browser.eval("document.querySelector('[data-testid=endpoint-row]').innerHTML").await;
            eprintln!("no key after the clicks; the row was: {row}");
            browser.goto(&server.url(&format!("/dashboard#/app/{initech}?again"))).await;
            browser.wait_for("document.querySelector('[data-testid=polling-tag]')", "the polling endpoint").await;
        }
    }
    browser.wait_for("document.querySelector('[data-testid=poller-key-value]')", "the new key").await;
    let key = browser.eval("document.querySelector('[data-testid=poller-key-value]').textContent").await;
    let key = key.as_str().unwrap();
    assert!(key.starts_with("sk_poll_"), "{key}");
    let poll_id = poll["id"].as_str().unwrap();
    let (status, page) = server.call_as(key, "GET", &format!("/api/v1/app/{initech}/poller/{poll_id}"), None).await;
    assert_eq!(status, 200, "{page}");

    // The portal, through the link the API hands out: Globex only.
    let (status, access) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{globex}"), None).await;
    assert_eq!(status, 200, "{access}");
    let url = access["url"].as_str().unwrap();
    assert!(url.starts_with(&server.url("/portal#token=")), "{url}");
    browser.goto(url).await;
    browser.wait_for("document.querySelectorAll('[data-testid=endpoint-row]').length === 1", "Globex's endpoint").await;
    let text = browser.text().await;
    assert!(text.contains("Globex Industries") && text.contains("Globex intake"), "{text}");
    assert!(!text.contains("Acme") && !text.contains("Applications"), "the portal shows one application: {text}");
    let address = browser.eval("location.href").await;
    assert!(!address.as_str().unwrap().contains("token="), "the token leaves the address bar: {address}");
    browser.screenshot("portal").await;
    // Another application's pages lead back to its own; its API answers 404.
    browser.eval(&format!("location.hash = '#/app/{acme}/messages'")).await;
    browser.wait_for(&format!("location.hash === '#/app/{globex}'"), "a redirect to its own application").await;
    let status = browser
        .eval(&format!(
            "fetch('/api/v1/app/{acme}/msg', {{headers: {{authorization: 'Bearer ' + \
             sessionStorage.getItem('hooklane.portal.token')}}}}).then(r => r.status)"
        ))
        .await;
    assert_eq!(status, json!(404));
    browser.click("[data-testid=tab-messages]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=message-row]').length === 1", "Globex's message").await;

    // Signing out forgets the token, and the portal's token stops working.
    let portal_token = browser.eval("sessionStorage.getItem('hooklane.portal.token')").await;
    let portal_token = portal_token.as_str().expect("the portal's token").to_string();
    browser.click("[data-testid=logout]").await;
    browser.wait_for("document.querySelector('[data-testid=login-error]')", "the signed-out portal").await;
    assert_eq!(browser.eval("sessionStorage.getItem('hooklane.portal.token')").await, Value::Null);
    let (status, _) = server.call_as(&portal_token, "GET", &format!("/api/v1/app/{globex}/msg"), None).await;
    assert_eq!(status, 401, "the portal's sign-out logs its token out");

    // A portal link opened in the same tab takes its new token. A read-only portal shows
    // everything but offers no action; one that may send attempts offers those only.
    for (body, actions) in [
        (json!({ "readOnly": true }), vec![]),
        (json!({ "capabilities": ["ViewBase", "CreateAttempts"] }), vec!["recover", "send-test"]),
    ] {
        let path = format!("/api/v1/auth/app-portal-access/{globex}");
        let (status, access) = server.call("POST", &path, Some(body.clone())).await;
        assert_eq!(status, 200, "{access}");
        browser.goto(access["url"].as_str().unwrap()).await;
        // The tab is signed in after the first link: the next one is taken once agreed to.
        if body != json!({ "readOnly": true }) {
            browser.click("[data-testid=switch-accept]").await;
        }
        // Rendered for this token: the row, with as many of each action as it may take.
        let rendered = ["disable", "recover", "send-test"]
            .iter()
            .map(|a| {
                let n = usize::from(actions.contains(a));
                format!("document.querySelectorAll('[data-testid=endpoint-row] [data-testid={a}]').length === {n}")
            })
            .collect::<Vec<_>>()
            .join(" && ");
        let row = "document.querySelectorAll('[data-testid=endpoint-row]').length === 1";
        browser.wait_for(&format!("{row} && {rendered}"), &format!("the portal for {body}")).await;
        for action in ["disable", "recover", "send-test"] {
            let shown = browser.count(&format!("[data-testid=endpoint-row] [data-testid={action}]")).await;
            assert_eq!(shown, usize::from(actions.contains(&action)), "{action} with {body}");
        }
        // The transformation can be seen and tried, but not saved, without ManageTransformations.
        browser.click("[data-testid=transformation-link]").await;
        browser
            .wait_for("document.querySelector('[data-testid=transformation-code]')", "the transformation page")
            .await;
        assert_eq!(browser.count("[data-testid=transformation-save]").await, 0, "{body}");
        assert_eq!(
            browser.eval("document.querySelector('[data-testid=transformation-code]').readOnly").await,
            json!(true)
        );
    }

    // A portal token that may only view sees that there are credentials it may not read,
    // and no way to change them.
    let (status, access) = server
        .call("POST", &format!("/api/v1/auth/app-portal-access/{acme}"), Some(json!({"capabilities": ["ViewBase"]})))
        .await;
    assert_eq!(status, 200, "{access}");
    browser.goto(access["url"].as_str().unwrap()).await;
    browser.click("[data-testid=switch-accept]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=endpoint-row]').length > 0", "the portal").await;
    browser.click(&format!("{bad_row} [data-testid=authentication-link]")).await;
    browser.wait_for(&format!("{oauth_now} === 'This token may not see them.'"), "the refusal, said").await;
    for control in ["oauth-save", "oauth-remove", "mtls-save", "oauth-token-url"] {
        assert_eq!(browser.count(&format!("[data-testid={control}]")).await, 0, "{control} offered");
    }
}

/// The inbound side in the admin dashboard: the sources, and for one its destinations and
/// the requests providers sent (accepted, duplicate, refused), with headers, body and the
/// message each became.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_inbound_sources_and_their_requests() {
    use hmac::{Hmac, Mac};
    let mut browser = Browser::launch().await;
    let server = Server::start("").await;
    let rx = Receiver::start().await;
    let secret = "gh-webhook-secret";
    let spec = json!({
        "name": "GitHub pushes",
        "verification": { "type": "github", "secret": secret },
        "destinations": [{
            "url": format!("{}/ci", rx.url), "payloadFilter": { "ref": "refs/heads/main" }, "rateLimit": 20,
            "retrySchedule": ["10s", "1m"],
        }],
        // Markup in the answer is shown as text, like everything a source holds.
        "response": { "body": "<b id=answered>ok</b>", "contentType": "text/html" },
    });
    let (status, source) = server.call("POST", "/api/v1/source", Some(spec)).await;
    assert_eq!(status, 201, "{source}");
    let source_id = source["id"].as_str().unwrap().to_string();
    let push = |delivery: &str, key: &str| {
        let body =
            json!({ "ref": "refs/heads/main", "after": "6113728f", "pusher": { "name": "octocat" } }).to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        server
            .client
            .post(server.url(&format!("/in/{source_id}")))
            .header("X-GitHub-Delivery", delivery)
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", format!("sha256={sig}"))
            .header("content-type", "application/json")
            .body(body)
    };
    for (delivery, key, want) in [("d-1", secret, 200), ("d-1", secret, 200), ("d-2", "forged", 401)] {
        let resp = push(delivery, key).send().await.unwrap();
        assert_eq!(resp.status(), want);
    }
    // What anyone may post: markup in a header, a body that is not UTF-8 (and markup).
    let hostile = "<img src=x onerror=window.pwned=1>";
    let resp = push("d-3", "forged")
        .header("X-GitHub-Event", hostile)
        .body(b"\xff\xfe<script>window.pwned=2</script>".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    rx.wait_for(1, Duration::from_secs(10)).await;

    browser.goto(&server.url("/dashboard")).await;
    browser.type_into("[data-testid=token-input]", ADMIN).await;
    browser.click("[data-testid=login]").await;
    browser.click("[data-testid=tab-sources]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=source-row]').length === 1", "the source").await;
    let text = browser.text().await;
    assert!(text.contains("GitHub pushes") && text.contains(&format!("/in/{source_id}")), "{text}");
    browser.click("[data-testid=source-row]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=request-row]').length === 4", "four requests").await;
    let statuses = browser
        .eval("[...document.querySelectorAll('[data-testid=request-row]')].map(r => r.dataset.status).join(' ')")
        .await;
    assert_eq!(statuses, json!("rejected rejected duplicate accepted"), "newest first");
    let destination = browser.eval("document.querySelector('[data-testid=source-destination]').innerText").await;
    let destination = destination.as_str().unwrap();
    assert!(
        destination.contains("/ci")
            && destination.contains("filtered")
            && destination.contains("20/s")
            && destination.contains("retries after 10s, 1m"),
        "{destination}"
    );
    let answer = browser.eval("document.querySelector('[data-testid=source-answer]').innerText").await;
    assert_eq!(answer, json!("200 text/html <b id=answered>ok</b>"));
    assert_eq!(browser.eval("document.getElementById('answered') === null").await, json!(true));
    // The refused one says why; each shows its headers and body.
    let reason =
        browser.eval("document.querySelector('[data-status=rejected] [data-testid=request-reason]').innerText").await;
    assert!(reason.as_str().unwrap().contains("signature"), "{reason}");
    browser.eval("document.querySelectorAll('[data-testid=request-detail]').forEach(d => d.open = true)").await;
    let text = browser.text().await;
    assert!(text.contains("x-github-event") && text.contains("octocat"), "{text}");
    // Shown as text, never as markup; the bytes that are not UTF-8 also as base64.
    assert!(text.contains(hostile) && text.contains("<script>window.pwned=2</script>"), "{text}");
    assert_eq!(browser.count("#main img, #main script").await, 0);
    assert_eq!(browser.eval("typeof window.pwned").await, json!("undefined"));
    let raw = browser.eval("document.querySelector('[data-testid=request-body-base64]').innerText").await;
    assert_eq!(B64.decode(raw.as_str().unwrap().trim()).unwrap(), b"\xff\xfe<script>window.pwned=2</script>");
    browser.eval("document.querySelectorAll('[data-testid=request-detail]').forEach((d, i) => d.open = i === 1)").await;
    browser.screenshot("source").await;

    // Only the refused ones.
    browser.eval("(() => { const f = document.querySelector('[data-testid=request-status]'); f.value = 'rejected'; f.dispatchEvent(new Event('change')); })()").await;
    browser
        .wait_for(
            "(() => { const r = [...document.querySelectorAll('[data-testid=request-row]')]; \
             return r.length === 2 && r.every(e => e.dataset.status === 'rejected'); })()",
            "the refused requests only",
        )
        .await;
    // The accepted one leads to the message it became, delivered to the destination.
    browser.eval(&format!("location.hash = '#/source/{source_id}'")).await;
    browser.click("[data-status=accepted] [data-testid=request-message]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=attempt]').length === 1", "the forwarded attempt").await;
    let payload = browser.eval("document.querySelector('[data-testid=payload]').innerText").await;
    assert!(payload.as_str().unwrap().contains("octocat"), "{payload}");

    // The portal (an application's token) has no sources: no tab, and the route leads back.
    let app = server.create_app("Portal app").await;
    let (status, access) = server.call("POST", &format!("/api/v1/auth/app-portal-access/{app}"), None).await;
    assert_eq!(status, 200, "{access}");
    browser.goto(access["url"].as_str().unwrap()).await;
    browser.wait_for("document.querySelector('[data-testid=tab-messages]')", "the portal").await;
    assert_eq!(browser.count("[data-testid=tab-sources]").await, 0);
    browser.eval("location.hash = '#/sources'").await;
    browser.wait_for(&format!("location.hash === '#/app/{app}'"), "a redirect to its own application").await;
}

/// Signs in to the admin dashboard.
async fn sign_in(browser: &mut Browser, server: &Server) {
    browser.goto(&server.url("/dashboard")).await;
    browser.type_into("[data-testid=token-input]", ADMIN).await;
    browser.click("[data-testid=login]").await;
    browser.wait_for("document.querySelector('[data-testid=app-row], [data-testid=tab-apps]')", "the dashboard").await;
}

/// Marks what the page shows now, so that a test can wait for it to be drawn again.
const MARK_PAGE: &str = "document.querySelector('#main > *').dataset.old = '1'";
const REDRAWN: &str = "document.querySelector('#main > *') && !document.querySelector('#main > [data-old]')";

/// A browser, and a server with two applications (Globex's, then Acme's), an endpoint each.
async fn two_applications() -> (Browser, Server, String, String) {
    let browser = Browser::launch().await;
    let server = Server::start("").await;
    let globex = server.create_app("Globex Industries").await;
    let acme = server.create_app("Acme Corp").await;
    server.create_endpoint(&globex, json!({ "url": "http://127.0.0.1:9/globex" })).await;
    server.create_endpoint(&acme, json!({ "url": "http://127.0.0.1:9/acme" })).await;
    (browser, server, globex, acme)
}

/// A portal link's token is taken from a fragment that starts `#token=` only, and a tab
/// signed in keeps its token until the user, told which application the link opens, agrees
/// to switch: a link (or a page framing the portal) cannot change it unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_link_asks_before_replacing_the_token() {
    let (mut browser, server, globex, acme) = two_applications().await;
    let globex_token = server.app_token(&globex).await;
    let acme_token = server.app_token(&acme).await;
    let held = "sessionStorage.getItem('hooklane.portal.token')";
    let app_name = "(document.querySelector('[data-testid=app-name]') || {}).textContent";

    browser.goto(&server.url(&format!("/portal#token={globex_token}"))).await;
    browser.wait_for(&format!("{app_name} === 'Globex Industries'"), "Globex's portal").await;

    // `token=` after the fragment's start is no token: the page stays Globex's.
    browser.eval(MARK_PAGE).await;
    browser.eval(&format!("location.hash = '#/x?y&token={acme_token}'")).await;
    browser.wait_for(&format!("location.hash === '#/app/{globex}' && {REDRAWN}"), "Globex's page drawn again").await;
    assert_eq!(browser.eval(app_name).await, json!("Globex Industries"));
    assert_eq!(browser.eval(held).await, json!(globex_token));

    // A link for another application asks, naming both; staying keeps the token.
    browser.eval(&format!("location.hash = '#token={acme_token}'")).await;
    browser.wait_for("document.querySelector('[data-testid=switch-offer]')", "the question").await;
    let offer = browser.eval("document.querySelector('[data-testid=switch-offer]').innerText").await;
    let offer = offer.as_str().unwrap();
    assert!(offer.contains("Acme Corp") && offer.contains("Globex Industries"), "{offer}");
    assert_eq!(browser.eval(held).await, json!(globex_token), "kept while asking");
    assert!(!browser.eval("location.href").await.as_str().unwrap().contains("token="), "out of the address bar");
    browser.click("[data-testid=switch-stay]").await;
    browser.wait_for(&format!("{app_name} === 'Globex Industries'"), "Globex's portal again").await;
    assert_eq!(browser.eval(held).await, json!(globex_token));

    // A link whose token does not work says so; the tab stays signed in.
    browser.eval("location.hash = '#token=appsk_not-a-token'").await;
    browser.wait_for("document.querySelector('[data-testid=switch-refused]')", "the refused link").await;
    assert_eq!(browser.eval(held).await, json!(globex_token));
    browser.click("[data-testid=switch-stay]").await;
    browser.wait_for(&format!("{app_name} === 'Globex Industries'"), "Globex's portal again").await;

    // Agreed to, the link's token is taken.
    browser.eval(&format!("location.hash = '#token={acme_token}'")).await;
    browser.click("[data-testid=switch-accept]").await;
    browser.wait_for(&format!("{app_name} === 'Acme Corp' && location.hash === '#/app/{acme}'"), "Acme's portal").await;
    assert_eq!(browser.eval(held).await, json!(acme_token));

    // The same holds when the link loads the page anew in the tab.
    browser.goto("about:blank").await;
    browser.goto(&server.url(&format!("/portal#token={globex_token}"))).await;
    browser.wait_for("document.querySelector('[data-testid=switch-offer]')", "the question on a page load").await;
    assert_eq!(browser.eval(held).await, json!(acme_token));
}

/// Answers that come late are dropped: a slow page never covers the one navigated to since,
/// and a portal token replaced while its first answers were under way does not leave the
/// tab with the old token's application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_answers_never_draw_over_a_newer_page() {
    let (mut browser, server, globex, acme) = two_applications().await;

    // The message log's answer is slow; the user goes back to the endpoints meanwhile.
    sign_in(&mut browser, &server).await;
    browser.eval(&format!("location.hash = '#/app/{acme}'")).await;
    browser.wait_for("document.querySelector('[data-testid=endpoint-row]')", "Acme's endpoints").await;
    browser.hold_fetches(false).await;
    browser.hold_rules("[{ url: '/msg?limit=50' }]").await;
    browser.click("[data-testid=tab-messages]").await;
    browser.wait_for("window.__hold.held.length === 1", "the message log asked for").await;
    browser.eval(MARK_PAGE).await;
    browser.click("[data-testid=tab-overview]").await;
    browser.wait_for(&format!("location.hash === '#/app/{acme}' && {REDRAWN}"), "the endpoints again").await;
    browser.release_held().await;
    assert_eq!(browser.count("[data-testid=endpoint-row]").await, 1, "{}", browser.text().await);
    assert_eq!(browser.count("[data-testid=message-search]").await, 0, "the late message log is not drawn");
    let crumbs = browser.eval("document.getElementById('crumbs').innerText").await;
    assert!(!crumbs.as_str().unwrap().contains("Message log"), "{crumbs}");

    // A recovery answers late (it waits for its task), and its page refreshes 1.5 s after:
    // by then the user is on the message log, which is not drawn again.
    browser.hold_rules("[{ url: '/recover' }]").await;
    browser.click("[data-testid=recover]").await;
    browser.wait_for("window.__hold.held.length === 1", "the recovery asked for").await;
    browser.click("[data-testid=tab-messages]").await;
    browser.wait_for("document.querySelector('[data-testid=message-search]')", "the message log").await;
    browser.eval(MARK_PAGE).await;
    browser.release_held().await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(browser.eval(REDRAWN).await, json!(false), "the message log was drawn again");
    assert_eq!(browser.count("[data-testid=message-search]").await, 1, "{}", browser.text().await);

    // The portal: Globex's link, whose whoami answers late, then Acme's, agreed to.
    let globex_token = server.app_token(&globex).await;
    let acme_token = server.app_token(&acme).await;
    browser.hold_fetches(true).await;
    browser.goto("about:blank").await;
    let rules = format!("window.__hold.rules = [{{ url: '/auth/whoami', auth: '{globex_token}' }}]");
    browser.page("Page.addScriptToEvaluateOnNewDocument", json!({ "source": rules })).await;
    browser.goto(&server.url(&format!("/portal#token={globex_token}"))).await;
    browser.wait_for("window.__hold.held.length === 1", "Globex's whoami asked for").await;
    browser.eval(&format!("location.hash = '#token={acme_token}'")).await;
    browser.click("[data-testid=switch-accept]").await;
    let acme_shown = format!(
        "location.hash === '#/app/{acme}' && (document.querySelector('[data-testid=app-name]') || {{}}).textContent === 'Acme Corp'"
    );
    browser.wait_for(&acme_shown, "Acme's portal").await;
    browser.release_held().await;
    assert_eq!(browser.eval(&acme_shown).await, json!(true), "{}", browser.text().await);
    assert_eq!(browser.count("[data-testid=error]").await, 0, "{}", browser.text().await);
    assert_eq!(browser.count("[data-testid=endpoint-row]").await, 1);
}

/// The admin dashboard's sign-in takes the admin token only: an application's (its portal
/// link's) is refused with a word on where it belongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sign_in_refuses_an_application_token() {
    let mut browser = Browser::launch().await;
    let server = Server::start("").await;
    let app = server.create_app("Globex Industries").await;
    let token = server.app_token(&app).await;
    browser.goto(&server.url("/dashboard")).await;
    browser.type_into("[data-testid=token-input]", &token).await;
    browser.click("[data-testid=login]").await;
    browser.wait_for("document.querySelector('[data-testid=login-error]')", "the refusal").await;
    let said = browser.eval("document.querySelector('[data-testid=login-error]').textContent").await;
    assert!(said.as_str().unwrap().contains("portal link"), "{said}");
    assert_eq!(browser.eval("sessionStorage.getItem('hooklane.admin.token')").await, Value::Null);
    // No string becomes markup in these pages (Trusted Types): a slip fails, not a hole.
    let sink = "(() => { try { document.createElement('div').innerHTML = '<b>x</b>'; return 'allowed' } \
                catch (e) { return e.name } })()";
    assert_eq!(browser.eval(sink).await, json!("TypeError"));
    assert_eq!(browser.count("[data-testid=app-row]").await, 0);
    // The admin token still signs in.
    browser.type_into("[data-testid=token-input]", ADMIN).await;
    browser.click("[data-testid=login]").await;
    browser.wait_for("document.querySelectorAll('[data-testid=app-row]').length === 1", "the applications").await;
}

/// OAuth settings that could not be read (the store busy, a proxy's 502) are not offered
/// for editing, where a save would drop what the form could not show (their extra
/// parameters); once read they are. A refused save says which field, and why, in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_settings_unread_are_not_offered_for_editing() {
    let mut browser = Browser::launch().await;
    let server = Server::start("").await;
    let app = server.create_app("Acme Corp").await;
    let (ep, _) = server.create_endpoint(&app, json!({ "url": "http://127.0.0.1:9/acme" })).await;
    let oauth = json!({"tokenUrl": "https://auth.example/token", "clientId": "c", "clientSecret": "s",
        "extraParams": {"audience": "https://api.acme.example"}});
    let (status, body) = server.call("PUT", &format!("/api/v1/app/{app}/endpoint/{ep}/oauth"), Some(oauth)).await;
    assert_eq!(status, 204, "{body}");

    sign_in(&mut browser, &server).await;
    browser.hold_fetches(false).await;
    browser
        .hold_rules(
            "[{ url: '/oauth', method: 'GET', status: 503, body: { code: 'unavailable', detail: 'the store is busy' } }]",
        )
        .await;
    browser.eval(&format!("location.hash = '#/app/{app}/endpoint/{ep}/authentication'")).await;
    let oauth_now = "((document.querySelector('[data-testid=oauth-current]') || {}).textContent || '')";
    browser.wait_for(&format!("{oauth_now}.includes('the store is busy')"), "the failed read, said").await;
    for control in ["oauth-save", "oauth-token-url", "oauth-client-secret", "oauth-remove"] {
        assert_eq!(browser.count(&format!("[data-testid={control}]")).await, 0, "{control} offered");
    }
    // (The mTLS card, read, is offered as ever.)
    assert_eq!(browser.count("[data-testid=mtls-save]").await, 1);

    // Read again once the server answers: the form, filled.
    browser.hold_rules("[]").await;
    browser.click("[data-testid=oauth-reload]").await;
    browser.wait_for("document.querySelector('[data-testid=oauth-save]')", "the form").await;
    let url = browser.eval("document.querySelector('[data-testid=oauth-token-url]').value").await;
    assert_eq!(url, json!("https://auth.example/token"));

    // Saved without the secret: refused, the field named, no JSON shown.
    browser.click("[data-testid=oauth-save]").await;
    let status = "document.querySelector('[data-testid=oauth-status]').textContent";
    browser.wait_for(&format!("{status}.startsWith('Not saved')"), "the refusal").await;
    let said = browser.eval(status).await;
    let said = said.as_str().unwrap();
    assert!(said.starts_with("Not saved: clientSecret: ") && !said.contains("[{") && !said.contains("loc"), "{said}");
    let (_, now) = server.call("GET", &format!("/api/v1/app/{app}/endpoint/{ep}/oauth"), None).await;
    assert_eq!(now["extraParams"], json!({"audience": "https://api.acme.example"}), "{now}");
}

/// After a Resend the message's page is drawn again once the new attempt is made, also
/// when the message already had the 250 attempts (and more) the page shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_shows_the_new_attempt_past_250() {
    let mut browser = Browser::launch().await;
    let waits = vec!["\"1ms\""; 255].join(", ");
    let server = Server::start(&format!(
        "[delivery]\ncircuit_failures = 0\npoll_interval = \"5ms\"\nretry_schedule = [{waits}]"
    ))
    .await;
    let rx = Receiver::scripted(|_, _| Reply::Status(503)).await;
    let app = server.create_app("Acme Corp").await;
    server.create_endpoint(&app, json!({ "url": rx.url })).await;
    let msg = server.send_message(&app, "invoice.paid", json!({ "n": 1 })).await;
    rx.wait_for(256, Duration::from_secs(120)).await;
    server
        .wait_until(&format!("/api/v1/app/{app}/msg/{msg}/endpoint"), Duration::from_secs(20), |b| {
            b["data"][0]["status"] == json!(2)
        })
        .await;
    rx.set_script(|_, _| Reply::Status(200));

    sign_in(&mut browser, &server).await;
    browser.eval(&format!("location.hash = '#/app/{app}/msg/{msg}'")).await;
    browser.wait_for("document.querySelectorAll('[data-testid=attempt]').length === 250", "250 attempts").await;
    let newest = browser.eval("document.querySelector('[data-testid=attempt]').dataset.attempt").await;
    browser.click("[data-testid=resend]").await;
    browser
        .wait_for(
            &format!("document.querySelector('[data-testid=attempt]').dataset.attempt !== {newest}"),
            "the new attempt drawn",
        )
        .await;
    let first =
        browser.eval("document.querySelector('[data-testid=attempt] [data-testid=response-status]').textContent").await;
    assert_eq!(first, json!("HTTP 200"));
    assert_eq!(rx.received().len(), 257);
}
