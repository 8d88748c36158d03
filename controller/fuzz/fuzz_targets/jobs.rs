//! Whatever an operator posts to `POST /v1/jobs`, parsing must not panic, a refusal must be a
//! 4xx, and an accepted command must be queued as at most the limit (the first byte chooses it)
//! of text that parses again as the same command, stamped with its submitter.
#![no_main]

mod common;

use controller::jobs::parse_submission;
use libfuzzer_sys::fuzz_target;
use schemas::Command;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, body)) = data.split_first() else {
        return;
    };
    let max = 64 + usize::from(limit) * 64;
    match parse_submission(body, "fuzz", max) {
        Ok((raw, cmd)) => {
            assert!(
                raw.len() <= max,
                "{} bytes queued (at most {max})",
                raw.len()
            );
            let (again, _) = Command::parse(&raw).expect("the queued text parses");
            assert_eq!(
                (&again.id, again.gid, again.nid),
                (&cmd.id, cmd.gid, cmd.nid)
            );
            assert_eq!(again.submitted_by.as_deref(), Some("fuzz"));
        }
        Err(e) => common::refused(e),
    }
});
