//! The tail of an output stream: the last lines a process printed, for a result's `streams`
//! (DESIGN §3: the last 1000 lines, each at most 64 KiB). Fed raw chunks as they are read, so a
//! line without a newline can never grow past its limit in memory. A line cut at the limit ends
//! in ` … [N bytes cut]`.

use std::collections::VecDeque;

pub(crate) const MAX_LINES: usize = 1000;
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Tail {
    lines: VecDeque<String>,
    max_lines: usize,
    max_line_bytes: usize,
    /// The line being read (no newline yet), already cut to `max_line_bytes`.
    current: Vec<u8>,
    /// Bytes of the line being read that were over `max_line_bytes`.
    cut: usize,
    /// Whether the last byte seen was a newline.
    ended_with_newline: bool,
}

impl Default for Tail {
    fn default() -> Self {
        Tail::new(MAX_LINES, MAX_LINE_BYTES)
    }
}

impl Tail {
    pub(crate) fn new(max_lines: usize, max_line_bytes: usize) -> Tail {
        Tail {
            lines: VecDeque::new(),
            max_lines,
            max_line_bytes,
            current: Vec::new(),
            cut: 0,
            ended_with_newline: false,
        }
    }

    /// Adds bytes as read from the stream.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let (part, rest, newline) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            let room = self.max_line_bytes.saturating_sub(self.current.len());
            let kept = part.len().min(room);
            self.current.extend_from_slice(&part[..kept]);
            self.cut += part.len() - kept;
            if newline {
                self.end_line();
            }
            self.ended_with_newline = newline;
            chunk = rest;
        }
    }

    fn end_line(&mut self) {
        let mut line = String::from_utf8_lossy(&self.current).into_owned();
        if self.cut > 0 {
            line.push_str(&format!(" … [{} bytes cut]", self.cut));
        }
        self.current.clear();
        self.cut = 0;
        if self.lines.len() == self.max_lines {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The kept lines joined with `\n`, ending with `\n` when the output did.
    pub(crate) fn into_text(mut self) -> String {
        if !self.current.is_empty() || self.cut > 0 {
            self.end_line();
        }
        let mut text = Vec::from(self.lines).join("\n");
        if self.ended_with_newline {
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(max_lines: usize, max_bytes: usize, chunks: &[&str]) -> String {
        let mut t = Tail::new(max_lines, max_bytes);
        for c in chunks {
            t.feed(c.as_bytes());
        }
        t.into_text()
    }

    #[test]
    fn short_output_is_kept_as_is() {
        assert_eq!(tail_of(10, 100, &["hello\nworld\n"]), "hello\nworld\n");
        assert_eq!(tail_of(10, 100, &["no newline"]), "no newline");
        assert_eq!(tail_of(10, 100, &[]), "");
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        assert_eq!(
            tail_of(10, 100, &["hel", "lo\nwo", "rld\n"]),
            "hello\nworld\n"
        );
    }

    #[test]
    fn only_the_last_lines_are_kept() {
        let input: String = (1..=5).map(|i| format!("{i}\n")).collect();
        assert_eq!(tail_of(2, 100, &[&input]), "4\n5\n");
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        assert_eq!(
            tail_of(10, 4, &["abcdefgh\nxy\n"]),
            "abcd … [4 bytes cut]\nxy\n"
        );
        assert_eq!(
            tail_of(10, 4, &["ab", "cd", "ef", "\n"]),
            "abcd … [2 bytes cut]\n"
        );
        assert_eq!(tail_of(10, 4, &["abcd", "e"]), "abcd … [1 bytes cut]");
        assert_eq!(tail_of(10, 4, &["abcd\n"]), "abcd\n");
    }

    #[test]
    fn empty_lines_count() {
        assert_eq!(tail_of(10, 100, &["\n\n"]), "\n\n");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_a_panic() {
        let mut t = Tail::new(10, 100);
        t.feed(&[0xff, b'a', b'\n']);
        assert_eq!(t.into_text(), "\u{fffd}a\n");
    }
}
