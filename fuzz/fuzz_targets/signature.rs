//! Signature parsing and verification must never panic, whatever the headers hold, and a
//! signature hooklane made must always verify.
#![no_main]

use hooklane_core::signing::{Secret, Verifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (id, ts, sig, body) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(""));
    let _ = Secret::parse(id.unwrap_or(""));
    let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("fixed secret");
    let verifier = Verifier::new(vec![secret.clone()]);
    let _ = verifier.verify(id, ts, sig, body.as_bytes(), 1_700_000_000);
    let id = id.unwrap_or("msg");
    let good = secret.sign(id, 1_700_000_000, body.as_bytes());
    assert!(verifier.verify(Some(id), Some("1700000000"), Some(&good), body.as_bytes(), 1_700_000_000).is_ok());
});
