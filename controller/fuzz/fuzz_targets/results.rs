//! Whatever an agent posts to `…/result`, parsing must not panic, a refusal must be a 4xx, and
//! every accepted result must name the posting agent, be final in state, and carry a run number
//! when it is one run's result. The first byte chooses the posting agent's gid and nid.
#![no_main]

mod common;

use controller::results::{parse_results, ResultPost};
use libfuzzer_sys::fuzz_target;
use schemas::JobResult;

fn check(r: &JobResult, gid: u64, nid: u64) {
    assert_eq!(
        (r.gid, r.nid),
        (gid, nid),
        "accepted a result of another agent"
    );
    assert!(
        r.state.is_final(),
        "accepted a result in state {:?}",
        r.state
    );
    assert!(
        r.is_final || r.run > 0,
        "accepted a run's result without its run"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((gid, nid, body)) = common::agent_of(data) else {
        return;
    };
    match parse_results(body, gid, nid) {
        Ok(ResultPost::One(r)) => check(&r, gid, nid),
        Ok(ResultPost::Batch(valid, answer)) => {
            valid.iter().for_each(|r| check(r, gid, nid));
            for rejected in &answer.rejected {
                assert!(!rejected.message.is_empty() && !rejected.error.is_empty());
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
