//! Whatever a job prints at level 10 or a program sends to the statsd port: parsing and
//! aggregating must not panic, an accepted sample must be well formed, and the count of invalid
//! lines must match what the parser refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent::stats::statsd::{self, Value};
use node_agent::stats::Stats;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut refused = 0;
    for parsed in statsd::parse_block(&text) {
        match parsed {
            Ok(s) => {
                assert!(!s.name.is_empty() && s.name.len() <= statsd::MAX_NAME);
                assert!(s.rate > 0.0 && s.rate <= 1.0);
                match s.value {
                    Value::Number(v) | Value::Delta(v) => assert!(v.is_finite()),
                    Value::Member(m) => assert!(!m.is_empty()),
                }
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
        }
    }
    let stats = Stats::new();
    // Type conflicts within the block count too: at least the refused lines.
    assert!(stats.statsd("fuzz.", &text) >= refused);
    let _ = stats.flush(1.0);
});
