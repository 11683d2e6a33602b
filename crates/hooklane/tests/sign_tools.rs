//! `hooklane send` and `hooklane verify`, run as the real binary: `verify` against the
//! shared Standard Webhooks vectors and altered copies of them, `send` against a loopback
//! receiver that checks its signature with an implementation independent of hooklane's.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Runs `hooklane args…` with `stdin`; its exit code and standard output.
async fn hooklane(args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hooklane"))
        .args(args)
        .env_remove("HOOKLANE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hooklane");
    let mut input = child.stdin.take().expect("stdin");
    // A command that refuses its arguments exits without reading: a broken pipe is no error.
    if let Err(e) = input.write_all(stdin).await {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    drop(input);
    let out = child.wait_with_output().await.expect("hooklane ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout + &String::from_utf8_lossy(&out.stderr))
}

/// The shared vectors: the repository's copy (`hooklane-core/testdata`), always, and those
/// in the shared folder beside the repository when it is there.
fn vectors() -> Vec<Value> {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let kept = here.join("../hooklane-core/testdata/standard-webhooks.json");
    let mut texts = vec![std::fs::read_to_string(&kept).unwrap_or_else(|e| panic!("{}: {e}", kept.display()))];
    texts.extend(std::fs::read_to_string(here.join("../../../shared/vectors/standard-webhooks.json")).ok());
    texts.iter().flat_map(|t| serde_json::from_str::<Vec<Value>>(t).expect("vectors are JSON")).collect()
}

/// `hooklane verify` of a vector's headers (the payload on standard input), checked at `now`.
async fn verify(secret: &str, id: &str, ts: i64, signature: &str, now: i64, payload: &[u8]) -> (i32, String) {
    let (ts, now) = (ts.to_string(), now.to_string());
    let args = [
        "verify",
        "--secret",
        secret,
        "--id",
        id,
        "--timestamp",
        &ts,
        "--signature",
        signature,
        "--payload-file",
        "-",
        "--now",
        &now,
    ];
    let (code, out) = hooklane(&args, payload).await;
    (code, out.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_signatures_as_a_receiver_must() {
    let mut checked = 0;
    for v in vectors() {
        let field = |k: &str| v[k].as_str().unwrap().to_string();
        let (secret, id, payload, signature) = (field("secret"), field("msg_id"), field("payload"), field("signature"));
        let ts = v["timestamp"].as_i64().unwrap();
        let body = payload.as_bytes();
        assert_eq!(verify(&secret, &id, ts, &signature, ts, body).await, (0, "valid".into()));
        // One byte changed in the body: no signature matches.
        let mut altered = body.to_vec();
        altered[0] ^= 1;
        assert_eq!(
            verify(&secret, &id, ts, &signature, ts, &altered).await,
            (1, "invalid: no signature matches".into())
        );
        // Checked 10 minutes later: stale, however well signed.
        let stale = verify(&secret, &id, ts, &signature, ts + 600, body).await;
        assert_eq!(stale, (1, "invalid: webhook-timestamp is too old".into()));
        // Another secret fails; one right signature among several passes.
        let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(verify(other, &id, ts, &signature, ts, body).await.0, 1);
        let both = format!("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {signature}");
        assert_eq!(verify(&secret, &id, ts, &both, ts, body).await, (0, "valid".into()));
        checked += 1;
    }
    assert!(checked > 0, "no vector checked");
    // Not a secret at all: a clear error, not a verdict.
    let (code, out) = verify("nope!", "m", 1, "v1,x", 1, b"{}").await;
    assert_eq!(code, 1);
    assert!(out.contains("--secret"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_as_deliveries_are_signed() {
    let rx = Receiver::start().await;
    let url = format!("{}/hooks/test", rx.url);
    let body = r#"{"type": "invoice.paid",  "id": 7}"#;
    let (code, out) = hooklane(
        &["send", &url, "--secret", SECRET, "--payload", body, "--id", "msg_fixed", "-H", "X-Trace: abc"],
        b"",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("200 webhook-id=msg_fixed"), "{out}");
    let got = rx.wait_for(1, std::time::Duration::from_secs(10)).await;
    let r = &got[0];
    assert_eq!(r.path, "/hooks/test");
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), body, "byte for byte");
    assert_eq!(r.header("webhook-id"), "msg_fixed");
    assert_eq!(r.header("x-trace"), "abc");
    assert_eq!(r.header("content-type"), "application/json");
    assert!(signature_valid(SECRET, r), "{:?}", r.headers);
    assert!(!signature_valid("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", r));

    // The headers send sets itself cannot be given twice.
    let (code, out) = hooklane(&["send", &url, "--secret", SECRET, "-H", "Webhook-Id: other"], b"").await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--id"), "{out}");
    assert_eq!(rx.received().len(), 1, "nothing was sent");

    // From standard input, with a default id; a receiver answering non-2xx makes it exit 1.
    rx.set_script(|_, _| Reply::Status(500));
    let (code, out) =
        hooklane(&["send", &url, "--secret", SECRET, "--payload-file", "-"], b"{\"from\":\"stdin\"}").await;
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("500 webhook-id=msg_"), "{out}");
    let got = rx.wait_for(2, std::time::Duration::from_secs(10)).await;
    assert_eq!(got[1].body, b"{\"from\":\"stdin\"}");
    assert!(signature_valid(SECRET, &got[1]));
    // Values may start with `-` (`-1` is a JSON payload), taken as values, not as options.
    rx.set_script(|_, _| Reply::Status(204));
    let (code, out) = hooklane(&["send", &url, "--secret", SECRET, "--payload", "-1", "--id", "-dash"], b"").await;
    assert_eq!(code, 0, "{out}");
    let got = rx.wait_for(3, std::time::Duration::from_secs(10)).await;
    assert_eq!((got[2].body.as_slice(), got[2].header("webhook-id")), (&b"-1"[..], "-dash"));
    assert!(signature_valid(SECRET, &got[2]));
}

/// The Ed25519 vector of the signing module (made with Python's `cryptography`): the key
/// pair of the seed 1..=32, and its signature of the published example.
const KEY_PAIR: &str = "whsk_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB5tVYuj+ZU+UB4sRLoqYunkB+FOuaVvtfg45ELrQSWZA==";
const PUBLIC_KEY: &str = "whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=";
const SIG_V1A: &str = "v1a,OVJuLC0iOuaBuQulpz9A/zDgvqV8z8miLUJk2j15ZMONwDNhOvPJ3rO4owAHFyjFq80+pUUjrNfTHAZs1RQnDw==";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_keys_are_made_sign_and_verify() {
    let (id, ts, body) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
    assert_eq!(verify(PUBLIC_KEY, id, ts, SIG_V1A, ts, body).await, (0, "valid".into()));
    // A symmetric secret does not check it; the key pair is not taken to check with (a
    // receiver has no business holding it).
    assert_eq!(verify(SECRET, id, ts, SIG_V1A, ts, body).await.0, 1);
    let (code, out) = verify(KEY_PAIR, id, ts, SIG_V1A, ts, body).await;
    assert_eq!(code, 1);
    assert!(out.contains("whpk_ public key"), "{out}");
    assert_eq!(verify(PUBLIC_KEY, id, ts, SIG_V1A, ts, b"{}").await, (1, "invalid: no signature matches".into()));

    // keygen: a key pair and its public key, which checks what send signs with the pair.
    let (code, out) = hooklane(&["keygen", "--type", "ed25519"], b"").await;
    assert_eq!(code, 0, "{out}");
    let line = |prefix: &str| {
        out.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("{prefix} in {out}")).to_string()
    };
    let (pair, public) = (line("secret: "), line("public key: "));
    assert!(pair.starts_with("whsk_") && public.starts_with("whpk_"), "{out}");
    let rx = Receiver::start().await;
    let (code, out) = hooklane(&["send", &rx.url, "--secret", &pair, "--payload", "{\"k\":1}"], b"").await;
    assert_eq!(code, 0, "{out}");
    let got = rx.wait_for(1, std::time::Duration::from_secs(10)).await;
    assert!(ed25519_signature_valid(&public, &got[0]), "{:?}", got[0].headers);
    assert!(!ed25519_signature_valid(PUBLIC_KEY, &got[0]));
    // The default is a symmetric secret, with nothing public to print.
    let (code, out) = hooklane(&["keygen"], b"").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("secret: whsec_") && !out.contains("public key"), "{out}");
    let (code, out) = hooklane(&["keygen", "--type", "rsa"], b"").await;
    assert_ne!(code, 0, "{out}");
    // A public key cannot sign.
    let (code, out) = hooklane(&["send", &rx.url, "--secret", PUBLIC_KEY], b"").await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("public key"), "{out}");
}
