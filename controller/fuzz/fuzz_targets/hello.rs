//! Whatever an agent posts to `…/hello`, parsing must not panic and a refusal must be a 4xx.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = controller::agents::parse_hello(data) {
        common::refused(e);
    }
});
