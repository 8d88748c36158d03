//! Whatever bytes a client pushes onto `cmds_queue`, parsing must not panic, and a refusal
//! must carry a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err((_, e)) = schemas::Command::parse(data) {
        assert!(!e.to_string().is_empty());
    }
});
