//! Whatever an agent posts to `…/logs`, parsing must not panic, a refusal must be a 4xx, every
//! rejected item must be counted with a reason, accepted messages must have domains and names
//! fit for a stream key, and cutting their data to the limit (the first byte chooses it) must
//! leave each at most that long, at a character boundary, with its start kept.
#![no_main]

mod common;

use controller::logs::{cut_all, parse_batch, MAX_NAME, MIN_MESSAGE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, body)) = data.split_first() else {
        return;
    };
    let max = MIN_MESSAGE + usize::from(limit) * 4;
    match parse_batch(body) {
        Ok((mut messages, answer)) => {
            assert_eq!(answer.rejected > 0, answer.reason.is_some());
            assert!(answer.reason.as_deref().is_none_or(|r| !r.is_empty()));
            for m in &messages {
                for part in [&m.domain, &m.name] {
                    assert!(part.len() <= MAX_NAME && !part.contains(['{', '}']));
                }
            }
            let before: Vec<String> = messages.iter().map(|m| m.data.clone()).collect();
            let over = before.iter().filter(|d| d.len() > max).count();
            assert_eq!(cut_all(&mut messages, max), over);
            for (m, old) in messages.iter().zip(&before) {
                assert!(
                    m.data.len() <= max,
                    "{} bytes after a cut to {max}",
                    m.data.len()
                );
                if m.data != *old {
                    let kept = m.data.find("… [cut: ").expect("a cut is marked");
                    assert!(old.starts_with(&m.data[..kept]));
                }
            }
        }
        Err(e) => common::refused(e),
    }
});
