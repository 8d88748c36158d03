//! Whatever bytes a process prints, cut into whatever chunks, the line parser must not panic,
//! must give the same messages as when fed at once, and must keep each message bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent::logs::logline::{parse_all, LineParser, Stream, CUT_MARK, LOSSY_MARK, MAX_MESSAGE};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses where to cut the rest into two chunks.
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = parse_all(Stream::Stderr, bytes);
    let at = usize::from(cut) * bytes.len() / 255;
    let mut parser = LineParser::new(Stream::Stderr);
    let mut chunked: Vec<_> = parser.feed(&bytes[..at]).collect();
    chunked.extend(parser.feed(&bytes[at..]));
    chunked.extend(parser.finish());
    assert_eq!(whole, chunked);
    for m in &whole {
        assert!(m.text.len() <= MAX_MESSAGE * 3 + CUT_MARK.len() + LOSSY_MARK.len());
        assert!(m.level >= 1);
    }
});
