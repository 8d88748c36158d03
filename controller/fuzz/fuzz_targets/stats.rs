//! Whatever an agent posts to `…/stats`, parsing must not panic, a refusal must be a 4xx, and
//! every accepted batch must name the posting agent, have a positive finite interval and
//! metrics of a known type with keys of 1 to `MAX_KEY` bytes. The first byte chooses the
//! posting agent's gid and nid.
#![no_main]

mod common;

use controller::stats::{parse_batch, MAX_KEY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((gid, nid, body)) = common::agent_of(data) else {
        return;
    };
    match parse_batch(body, gid, nid) {
        Ok((valid, answer)) => {
            for batch in &valid {
                assert_eq!(
                    (batch.gid, batch.nid),
                    (gid, nid),
                    "accepted another agent's batch"
                );
                assert!(batch.interval.is_finite() && batch.interval > 0.0);
                for m in &batch.metrics {
                    assert!(!m.key.is_empty() && m.key.len() <= MAX_KEY);
                    let known = ["counter", "gauge", "timer", "histogram", "set"];
                    assert!(known.contains(&m.kind.as_str()), "type {}", m.kind);
                }
            }
            for r in &answer.rejected {
                assert!(!r.message.is_empty() && !r.error.is_empty());
            }
            assert_eq!(
                answer.recorded + answer.duplicates,
                0,
                "nothing is recorded yet"
            );
        }
        Err(e) => common::refused(e),
    }
});
