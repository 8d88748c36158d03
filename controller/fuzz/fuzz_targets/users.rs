//! Whatever an admin posts to `POST /v1/users`, parsing must not panic, a refusal must be a
//! 4xx, and an accepted account must have a name `jsacc user add` would take.
#![no_main]

mod common;

use controller::http::parse_new_user;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_new_user(data) {
        Ok(new) => assert!(controller::users::check_name(&new.name).is_ok()),
        Err(e) => common::refused(e),
    }
});
