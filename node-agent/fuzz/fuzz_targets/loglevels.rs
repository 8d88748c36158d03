//! Whatever text a client puts in `loglevels*` or `levels`, parsing must not panic, a refusal
//! must carry a reason, and an accepted filter must print back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent::logs::loglevels::LevelFilter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match LevelFilter::parse(text) {
        Ok(filter) => {
            let printed = filter.to_string();
            if !printed.is_empty() {
                assert_eq!(LevelFilter::parse(&printed), Ok(filter));
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
