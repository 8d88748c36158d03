//! Whatever an admin posts to `POST /v1/tokens`, parsing must not panic, a refusal must be a
//! 4xx, and every role of an accepted request must be one `jsacc token add --roles` would take.
#![no_main]

mod common;

use controller::http::parse_new_token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_new_token(data) {
        Ok(new) => {
            for role in &new.roles {
                assert!(controller::auth::check_role(role).is_ok(), "role {role:?}");
            }
        }
        Err(e) => common::refused(e),
    }
});
