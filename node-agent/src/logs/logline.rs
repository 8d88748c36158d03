//! The line protocol of DESIGN §6.1, as a pure parser over the raw bytes of one output stream.
//!
//! - `N::text` is one message of level `N` (a level of DESIGN §6: 1–10, 20–23, 30).
//! - `N:::` starts a block (so a one-line text cannot start with `:`) of level `N`: every following line belongs to it until a line that
//!   starts with `:::`; the text is the lines joined by `\n`. Text after `N:::` on the opening
//!   line is the block's first line; text after `:::` on the closing line is its last line.
//! - Anything else (an unknown level included) is a plain message: level 1 on stdout, 2 on
//!   stderr, with the line as it was. Empty lines are messages too: nothing is dropped.
//! - A block still open when the stream ends is flushed as it is.
//! - A line (or block) over [`MAX_MESSAGE`] bytes is cut at a character boundary and ends with
//!   [`CUT_MARK`]; bytes that are not UTF-8 are replaced by U+FFFD and the text ends with
//!   [`LOSSY_MARK`].
//! - One `\r` before the `\n` is dropped, so Windows line ends read like Unix ones.
//!
//! Fed chunks as they are read (a line may span chunks); memory stays bounded by
//! [`MAX_MESSAGE`] per stream whatever the input.
//!
//! For live output ([`crate::live`]) a parser made [`LineParser::with_lines`] also keeps each
//! line as printed ([`Line`]: without its line break; a line longer than the controller's
//! [`MAX_LINE`] is cut so that it ends with [`LINE_CUT_MARK`] within [`MAX_LINE`] bytes) with
//! the level the protocol gave it: 1 or 2 for a plain line, `N` for `N::text`, and the block's
//! `N` for every line of an `N:::` block, its opening and closing lines included.

pub use schemas::output::MAX_LINE;

/// Longest message kept, in bytes (before marks).
pub const MAX_MESSAGE: usize = 1 << 20;
/// Appended to a message that was cut at [`MAX_MESSAGE`].
pub const CUT_MARK: &str = " [cut: over 1 MiB]";
/// Appended to a message whose invalid UTF-8 was replaced by U+FFFD.
pub const LOSSY_MARK: &str = " [invalid UTF-8 replaced]";

/// Ends a line of live output cut to fit [`MAX_LINE`] (the mark included).
pub const LINE_CUT_MARK: &str = " [cut: over 64 KiB]";

/// Which stream a parser reads: it sets the level of plain lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The file descriptor: 1 stdout, 2 stderr.
    pub(crate) fn fd(self) -> u8 {
        self.plain_level()
    }

    /// The level of a plain line: 1 on stdout, 2 on stderr.
    pub(crate) fn plain_level(self) -> u8 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }
}

/// Whether `level` is one of the levels of DESIGN §6.
pub(crate) fn is_level(level: u8) -> bool {
    matches!(level, 1..=10 | 20..=23 | 30)
}

/// One message: its level and its text (with the marks, when it was cut or lossy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub level: u8,
    pub text: String,
    /// Cut at [`MAX_MESSAGE`].
    pub cut: bool,
    /// Invalid UTF-8 was replaced.
    pub lossy: bool,
}

/// One line as printed (live output), with its level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: u8,
    pub text: String,
}

/// An open `N:::` block.
#[derive(Debug)]
struct Block {
    level: u8,
    text: Vec<u8>,
    lines: usize,
    /// A line of it was cut, or it reached [`MAX_MESSAGE`].
    cut: bool,
    /// It reached [`MAX_MESSAGE`]: further lines are dropped.
    full: bool,
}

/// The parser of one stream: [`LineParser::feed`] chunks, then [`LineParser::finish`].
#[derive(Debug)]
pub struct LineParser {
    plain: u8,
    /// The line read so far (no newline yet), at most [`MAX_MESSAGE`] bytes.
    line: Vec<u8>,
    line_cut: bool,
    block: Option<Block>,
    ready: Vec<Parsed>,
    /// Whether [`Line`]s are kept, and those not taken yet.
    keep_lines: bool,
    lines: Vec<Line>,
    /// Lines ended while not kept, not taken yet (see [`LineParser::take_skipped`]).
    skipped: usize,
}

impl LineParser {
    pub fn new(stream: Stream) -> LineParser {
        LineParser {
            plain: stream.plain_level(),
            line: Vec::new(),
            line_cut: false,
            block: None,
            ready: Vec::new(),
            keep_lines: false,
            lines: Vec::new(),
            skipped: 0,
        }
    }

    /// A parser that also keeps each line as printed, for [`LineParser::take_lines`].
    pub fn with_lines(stream: Stream) -> LineParser {
        LineParser {
            keep_lines: true,
            ..LineParser::new(stream)
        }
    }

    /// Stops (or starts) keeping lines: live output of a run that reached its cap needs no more.
    pub fn keep_lines(&mut self, keep: bool) {
        self.keep_lines = keep;
        if !keep {
            self.lines.clear();
        }
    }

    /// The lines fed since the last call, as printed (empty unless made [`LineParser::with_lines`]).
    /// The parser's own vector is handed over: no copy on the per-read path.
    pub fn take_lines(&mut self) -> Vec<Line> {
        std::mem::take(&mut self.lines)
    }

    /// How many lines ended since the last call while lines were not kept (to count the live
    /// output a run no longer forwards).
    pub fn take_skipped(&mut self) -> usize {
        std::mem::take(&mut self.skipped)
    }

    /// Parses bytes as read; returns the messages they completed.
    pub fn feed(&mut self, mut chunk: &[u8]) -> std::vec::Drain<'_, Parsed> {
        while !chunk.is_empty() {
            let Some(end) = memchr::memchr(b'\n', chunk) else {
                self.keep(chunk);
                break;
            };
            if self.line.is_empty() && !self.line_cut && end <= MAX_MESSAGE {
                // The common case: a whole line inside the chunk, parsed without a copy.
                self.end_line(&chunk[..end], false);
            } else {
                self.keep(&chunk[..end]);
                let line = std::mem::take(&mut self.line);
                let cut = std::mem::take(&mut self.line_cut);
                self.end_line(&line, cut);
                self.line = line;
                self.line.clear();
            }
            chunk = &chunk[end + 1..];
        }
        self.ready.drain(..)
    }

    /// Ends the stream: the last line without a newline, and a block left open, are flushed.
    pub fn finish(&mut self) -> std::vec::Drain<'_, Parsed> {
        if !self.line.is_empty() || self.line_cut {
            let line = std::mem::take(&mut self.line);
            let cut = std::mem::take(&mut self.line_cut);
            self.end_line(&line, cut);
        }
        if let Some(block) = self.block.take() {
            self.emit(block.level, &block.text, block.cut);
        }
        self.ready.drain(..)
    }

    /// Adds part of a line, cutting it at [`MAX_MESSAGE`].
    fn keep(&mut self, part: &[u8]) {
        if self.line_cut {
            return;
        }
        let room = MAX_MESSAGE - self.line.len();
        if part.len() <= room {
            self.line.extend_from_slice(part);
        } else {
            self.line
                .extend_from_slice(&part[..char_boundary(part, room)]);
            self.line_cut = true;
        }
    }

    fn end_line(&mut self, line: &[u8], cut: bool) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(level) = self.block.as_ref().map(|block| block.level) {
            self.keep_line(level, line, cut);
            match line.strip_prefix(b":::") {
                Some(rest) => {
                    if !rest.is_empty() {
                        self.add_to_block(rest, cut);
                    }
                    if let Some(block) = self.block.take() {
                        self.emit(block.level, &block.text, block.cut);
                    }
                }
                None => self.add_to_block(line, cut),
            }
            return;
        }
        // Parsed once, for the live line's level and for the message.
        let header = header(line);
        let level = match header {
            Some(Header::Block(level, _) | Header::Line(level, _)) => level,
            None => self.plain,
        };
        self.keep_line(level, line, cut);
        match header {
            Some(Header::Block(level, rest)) => {
                self.block = Some(Block {
                    level,
                    text: Vec::new(),
                    lines: 0,
                    cut: false,
                    full: false,
                });
                if !rest.is_empty() {
                    self.add_to_block(rest, cut);
                }
            }
            Some(Header::Line(level, text)) => self.emit(level, text, cut),
            None => self.emit(self.plain, line, cut),
        }
    }

    /// Keeps a line as printed (if lines are kept, else counts it), with the level its block
    /// or its header gives it.
    fn keep_line(&mut self, level: u8, line: &[u8], cut: bool) {
        if self.keep_lines {
            self.lines.push(Line {
                level,
                text: live_text(line, cut),
            });
        } else {
            self.skipped += 1;
        }
    }

    fn add_to_block(&mut self, line: &[u8], cut: bool) {
        let Some(block) = self.block.as_mut() else {
            return;
        };
        let sep = usize::from(block.lines > 0);
        if block.full || block.text.len() + sep > MAX_MESSAGE {
            block.full = true;
            block.cut = true;
            return;
        }
        let room = MAX_MESSAGE - block.text.len() - sep;
        if sep == 1 {
            block.text.push(b'\n');
        }
        let keep = if line.len() <= room {
            line.len()
        } else {
            block.full = true;
            char_boundary(line, room)
        };
        block.text.extend_from_slice(&line[..keep]);
        block.lines += 1;
        block.cut |= cut || keep < line.len();
    }

    fn emit(&mut self, level: u8, bytes: &[u8], cut: bool) {
        let (mut text, lossy) = match std::str::from_utf8(bytes) {
            Ok(s) => (s.to_owned(), false),
            Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
        };
        if cut {
            text.push_str(CUT_MARK);
        }
        if lossy {
            text.push_str(LOSSY_MARK);
        }
        self.ready.push(Parsed {
            level,
            text,
            cut,
            lossy,
        });
    }
}

enum Header<'a> {
    Line(u8, &'a [u8]),
    Block(u8, &'a [u8]),
}

/// `N::` or `N:::` at the start of a line, with a known level `N` (one or two digits).
fn header(line: &[u8]) -> Option<Header<'_>> {
    let digits = line
        .iter()
        .take(3)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > 2 {
        return None;
    }
    let level = line[..digits].iter().fold(0u8, |n, d| n * 10 + (d - b'0'));
    if !is_level(level) {
        return None;
    }
    let rest = line[digits..].strip_prefix(b"::")?;
    Some(match rest.strip_prefix(b":") {
        Some(rest) => Header::Block(level, rest),
        None => Header::Line(level, rest),
    })
}

/// A line of live output as text: whole if it fits [`MAX_LINE`], else cut at a character
/// boundary so that it and [`LINE_CUT_MARK`] fit (`cut`: it was already cut at
/// [`MAX_MESSAGE`]). Invalid UTF-8 becomes U+FFFD, which may lengthen it: the cut comes after.
fn live_text(line: &[u8], cut: bool) -> String {
    let head = &line[..line.len().min(MAX_LINE)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    if cut || line.len() > MAX_LINE || text.len() > MAX_LINE {
        let mut at = text.len().min(MAX_LINE - LINE_CUT_MARK.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str(LINE_CUT_MARK);
    }
    text
}

/// The largest length ≤ `at` that does not split a UTF-8 sequence of `bytes` (`bytes.len() > at`).
fn char_boundary(bytes: &[u8], at: usize) -> usize {
    let mut at = at;
    // At most 3 continuation bytes precede a boundary in valid UTF-8; in invalid input any
    // cut is as good as another.
    for _ in 0..3 {
        if at > 0 && (bytes[at] & 0b1100_0000) == 0b1000_0000 {
            at -= 1;
        } else {
            break;
        }
    }
    at
}

/// Parses a whole stream at once (for tests, benchmarks and the fuzz target).
pub fn parse_all(stream: Stream, bytes: &[u8]) -> Vec<Parsed> {
    let mut parser = LineParser::new(stream);
    let mut out: Vec<Parsed> = parser.feed(bytes).collect();
    out.extend(parser.finish());
    out
}

#[cfg(test)]
mod tests;
