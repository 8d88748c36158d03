//! Whatever a stranger posts to `POST /v1/enroll` (the one body read without a token), parsing
//! must not panic, a refusal must be a 4xx, and an accepted body must have a code of 1 to
//! `MAX_CODE` bytes and a hostname, if any, of at most `MAX_HOSTNAME` printable characters.
#![no_main]

mod common;

use controller::http::{parse_enroll, MAX_CODE, MAX_HOSTNAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_enroll(data) {
        Ok(asked) => {
            assert!((1..=MAX_CODE).contains(&asked.code.len()));
            if let Some(h) = &asked.hostname {
                assert!(h.len() <= MAX_HOSTNAME && !h.chars().any(char::is_control));
            }
        }
        Err(e) => common::refused(e),
    }
});
