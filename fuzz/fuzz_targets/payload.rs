//! Message bodies as the ingest API parses them: no input may panic, and an accepted
//! payload is an object kept byte for byte (unless a raw payload, any text, replaces it).
#![no_main]

use hooklane_server::api::message::MessageIn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = MessageIn::parse(data) {
        let payload = msg.payload();
        let raw = msg.body().expect("a parsed message's body was checked").raw;
        assert!(raw || payload.trim_start().starts_with('{'));
        assert!(std::str::from_utf8(data).map(|s| s.contains(payload)).unwrap_or(true));
    }
});
