//! Whatever an agent posts to `…/output`, parsing must not panic, a refusal must be a 4xx,
//! every refused batch must say why, and every accepted batch must name a job id fit for a
//! stream key, hold at most `MAX_LINES` lines of stdout or stderr, each at most `MAX_LINE` bytes.
#![no_main]

mod common;

use controller::output::{parse_batch, MAX_LINE, MAX_LINES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_batch(data) {
        Ok((batches, answer)) => {
            for r in &answer.rejected {
                assert!(!r.message.is_empty() && !r.error.is_empty());
            }
            assert_eq!(answer.appended + answer.duplicates + answer.capped, 0);
            for b in &batches {
                assert!(schemas::command::valid_id(&b.id) && !b.id.contains(['{', '}']));
                assert!(b.lines.len() <= MAX_LINES);
                for l in &b.lines {
                    assert!(matches!(l.fd, 1 | 2), "fd {}", l.fd);
                    assert!(l.line.len() <= MAX_LINE, "{} bytes", l.line.len());
                }
            }
        }
        Err(e) => common::refused(e),
    }
});
