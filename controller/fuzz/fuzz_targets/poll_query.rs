//! Whatever query string a long-poll carries (`?wait=…&ack=…&max=…`), parsing it as axum's
//! `Query` does and checking its acknowledgements must not panic; a refusal must be a 4xx, and
//! accepted acks must be bounded: at most `MAX_ACKS` ids, none empty, none with a comma.
#![no_main]

mod common;

use controller::http::{PollParams, MAX_ACKS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // axum's Query extractor: serde_urlencoded on the URI's query (bytes here: a URI may carry
    // any percent-encoded bytes).
    let Ok(params) = serde_urlencoded::from_bytes::<PollParams>(data) else {
        return;
    };
    match params.acks() {
        Ok(acks) => {
            assert!(acks.len() <= MAX_ACKS);
            for id in &acks {
                assert!(!id.is_empty() && !id.contains(','));
                assert!(id.len() <= 256, "an ack id of {} bytes", id.len());
            }
        }
        Err(e) => common::refused(e),
    }
});
