//! One named test per rule of DESIGN §6.1 and per kind of garbage, then properties.

use super::*;
use proptest::prelude::*;

fn msg(level: u8, text: &str) -> Parsed {
    Parsed {
        level,
        text: text.to_owned(),
        cut: false,
        lossy: false,
    }
}

fn out(bytes: &str) -> Vec<Parsed> {
    parse_all(Stream::Stdout, bytes.as_bytes())
}

fn levels_texts(parsed: &[Parsed]) -> Vec<(u8, &str)> {
    parsed.iter().map(|p| (p.level, p.text.as_str())).collect()
}

#[test]
fn level_prefix_makes_one_message_of_that_level() {
    assert_eq!(out("3::hello users\n"), [msg(3, "hello users")]);
    assert_eq!(out("30::{\"a\":1}\n"), [msg(30, "{\"a\":1}")]);
    assert_eq!(out("9::\n"), [msg(9, "")]);
    // The text keeps its own colons.
    assert_eq!(out("4::a::b\n"), [msg(4, "a::b")]);
}

#[test]
fn plain_stdout_lines_are_level_1_and_stderr_level_2() {
    assert_eq!(out("hello\n"), [msg(1, "hello")]);
    assert_eq!(parse_all(Stream::Stderr, b"oops\n"), [msg(2, "oops")]);
}

#[test]
fn empty_lines_are_messages_too() {
    assert_eq!(levels_texts(&out("\n\na\n")), [(1, ""), (1, ""), (1, "a")]);
}

#[test]
fn a_block_joins_its_lines_until_the_closing_colons() {
    let parsed = out("20:::\n{\n  \"a\": 1\n}\n:::\nafter\n");
    assert_eq!(
        levels_texts(&parsed),
        [(20, "{\n  \"a\": 1\n}"), (1, "after")]
    );
}

#[test]
fn a_block_may_start_and_end_with_text_on_its_marker_lines() {
    let parsed = out("5:::first\nmiddle\n:::last\n");
    assert_eq!(levels_texts(&parsed), [(5, "first\nmiddle\nlast")]);
}

#[test]
fn an_empty_block_is_an_empty_message() {
    assert_eq!(out("7:::\n:::\n"), [msg(7, "")]);
}

#[test]
fn level_prefixes_inside_a_block_are_text() {
    let parsed = out("4:::\n3::not a message\n:::\n");
    assert_eq!(levels_texts(&parsed), [(4, "3::not a message")]);
}

#[test]
fn a_closing_line_outside_a_block_is_plain_text() {
    assert_eq!(out(":::\n"), [msg(1, ":::")]);
}

#[test]
fn unknown_levels_are_kept_as_plain_text() {
    for line in [
        "11::x", "0::x", "99::x", "31::x", "123::x", "x3::y", "3:x", "-3::x", " 3::x",
    ] {
        assert_eq!(out(&format!("{line}\n")), [msg(1, line)], "{line}");
    }
    assert_eq!(parse_all(Stream::Stderr, b"12:::\n"), [msg(2, "12:::")]);
}

#[test]
fn leading_zero_levels_are_levels() {
    assert_eq!(out("03::x\n"), [msg(3, "x")]);
}

#[test]
fn an_unterminated_block_is_flushed_at_the_end_of_the_stream() {
    assert_eq!(
        levels_texts(&out("8:::\nline 1\nline 2\n")),
        [(8, "line 1\nline 2")]
    );
    assert_eq!(
        levels_texts(&out("8:::\nline 1\npartial")),
        [(8, "line 1\npartial")]
    );
}

#[test]
fn a_last_line_without_newline_is_flushed() {
    assert_eq!(out("a\nb"), [msg(1, "a"), msg(1, "b")]);
    assert_eq!(out("3::x"), [msg(3, "x")]);
    assert!(out("").is_empty());
}

#[test]
fn lines_split_across_chunks_are_joined() {
    let mut parser = LineParser::new(Stream::Stdout);
    let mut got: Vec<Parsed> = Vec::new();
    for chunk in ["2", "0:", "::\n{", "}\n::", ":\nhel", "lo", "\n"] {
        got.extend(parser.feed(chunk.as_bytes()));
    }
    got.extend(parser.finish());
    assert_eq!(levels_texts(&got), [(20, "{}"), (1, "hello")]);
}

#[test]
fn windows_line_ends_are_read_like_unix_ones() {
    assert_eq!(out("3::x\r\ny\r\n"), [msg(3, "x"), msg(1, "y")]);
    assert_eq!(levels_texts(&out("4:::\r\na\r\n:::\r\n")), [(4, "a")]);
}

#[test]
fn invalid_utf8_is_replaced_and_marked_not_dropped() {
    let parsed = parse_all(Stream::Stdout, b"a\xffb\n3::\xc3\n");
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].text, format!("a\u{fffd}b{LOSSY_MARK}"));
    assert!(parsed[0].lossy && !parsed[0].cut);
    assert_eq!((parsed[1].level, parsed[1].lossy), (3, true));
}

#[test]
fn nul_bytes_and_control_characters_are_text() {
    let parsed = parse_all(Stream::Stdout, b"a\0b\x1b[31m\n");
    assert_eq!(parsed, [msg(1, "a\0b\x1b[31m")]);
}

#[test]
fn a_line_over_1_mib_is_cut_and_marked() {
    let long = "x".repeat(MAX_MESSAGE + 10);
    let parsed = out(&format!("{long}\nnext\n"));
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].text.len(), MAX_MESSAGE + CUT_MARK.len());
    assert!(parsed[0].text.ends_with(CUT_MARK) && parsed[0].cut);
    assert_eq!(parsed[1], msg(1, "next"));
}

#[test]
fn a_long_line_fed_in_small_chunks_stays_bounded() {
    let mut parser = LineParser::new(Stream::Stdout);
    let chunk = vec![b'y'; 64 * 1024];
    for _ in 0..40 {
        assert_eq!(parser.feed(&chunk).count(), 0);
        assert!(parser.line.len() <= MAX_MESSAGE);
    }
    let parsed: Vec<Parsed> = parser.feed(b"\n").collect();
    assert_eq!(parsed[0].text.len(), MAX_MESSAGE + CUT_MARK.len());
}

#[test]
fn a_cut_never_splits_a_character() {
    // 'é' is two bytes: one byte too many for an exact fit.
    let long = format!("{}é", "x".repeat(MAX_MESSAGE - 1));
    let parsed = out(&format!("{long}\n"));
    assert!(!parsed[0].lossy, "a cut must not produce U+FFFD");
    assert_eq!(
        parsed[0].text,
        format!("{}{CUT_MARK}", "x".repeat(MAX_MESSAGE - 1))
    );
}

#[test]
fn a_block_over_1_mib_is_cut_and_marked_and_the_stream_goes_on() {
    let line = "z".repeat(600 * 1024);
    let parsed = out(&format!("5:::\n{line}\n{line}\n{line}\n:::\nafter\n"));
    assert_eq!(parsed.len(), 2);
    assert!(parsed[0].cut && parsed[0].text.ends_with(CUT_MARK));
    assert_eq!(parsed[0].text.len(), MAX_MESSAGE + CUT_MARK.len());
    assert_eq!(parsed[1], msg(1, "after"));
}

#[test]
fn binary_garbage_is_not_a_panic() {
    let garbage: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let parsed = parse_all(Stream::Stderr, &garbage);
    assert!(!parsed.is_empty());
}

fn render(messages: &[(u8, String, bool)]) -> String {
    let mut s = String::new();
    for (level, text, block) in messages {
        if *block {
            s.push_str(&format!("{level}:::\n{text}\n:::\n"));
        } else {
            s.push_str(&format!("{level}::{text}\n"));
        }
    }
    s
}

fn level() -> impl Strategy<Value = u8> {
    prop::sample::select(vec![1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20, 21, 22, 23, 30])
}

/// Text of one line, of a block line (never starting with `:::`), and without `\r` ends.
fn line_text() -> impl Strategy<Value = String> {
    "[^\n\r]{0,40}".prop_filter("not a closing line", |s| !s.starts_with(":::"))
}

fn lines_of(stream: Stream, bytes: &[u8]) -> Vec<(u8, String)> {
    let mut parser = LineParser::with_lines(stream);
    parser.feed(bytes).for_each(drop);
    parser.finish().for_each(drop);
    parser
        .take_lines()
        .into_iter()
        .map(|l| (l.level, l.text))
        .collect()
}

fn owned(lines: &[(u8, &str)]) -> Vec<(u8, String)> {
    lines.iter().map(|(l, t)| (*l, (*t).to_owned())).collect()
}

#[test]
fn live_lines_keep_the_text_as_printed_with_its_level() {
    let got = lines_of(
        Stream::Stdout,
        b"plain\n3::for users\n42::unknown\n\r\nlast",
    );
    let want = [
        (1, "plain"),
        (3, "3::for users"),
        (1, "42::unknown"),
        (1, ""),
        (1, "last"),
    ];
    assert_eq!(got, owned(&want));
    assert_eq!(lines_of(Stream::Stderr, b"oops\n"), owned(&[(2, "oops")]));
}

#[test]
fn every_line_of_a_block_has_the_block_level_opener_and_closer_included() {
    let got = lines_of(Stream::Stderr, b"before\n20:::\n{\"a\":\n1}\n:::\nafter\n");
    let want = [
        (2, "before"),
        (20, "20:::"),
        (20, "{\"a\":"),
        (20, "1}"),
        (20, ":::"),
        (2, "after"),
    ];
    assert_eq!(got, owned(&want));
}

/// Bytes of a cut line's text before its mark.
const ROOM: usize = MAX_LINE - LINE_CUT_MARK.len();

#[test]
fn a_long_live_line_is_cut_at_a_char_boundary_and_marked() {
    let mut bytes = "a".repeat(ROOM - 1).into_bytes();
    bytes.extend("é".repeat(MAX_LINE).as_bytes());
    bytes.push(b'\n');
    let got = lines_of(Stream::Stdout, &bytes);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, format!("{}{LINE_CUT_MARK}", "a".repeat(ROOM - 1)));
    // Over the message limit too: still one line, cut and marked once.
    let huge = vec![b'x'; MAX_MESSAGE + 10];
    let got = lines_of(Stream::Stdout, &huge);
    assert_eq!(got, [(1, format!("{}{LINE_CUT_MARK}", "x".repeat(ROOM)))]);
}

/// Review finding: the agent cut at 64 KiB and then added its mark, so the controller cut the
/// line again. A cut line, its mark included, now fits the controller's `MAX_LINE`.
#[test]
fn a_70000_byte_line_and_its_mark_fit_the_controllers_max_line() {
    let got = lines_of(Stream::Stdout, &[b'y'; 70_000]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), MAX_LINE);
    assert!(got[0].1.ends_with(LINE_CUT_MARK));
    // A line that fits is kept whole, however close to the limit.
    let whole = "z".repeat(MAX_LINE);
    assert_eq!(lines_of(Stream::Stdout, whole.as_bytes()), [(1, whole)]);
}

/// Invalid bytes become U+FFFD (3 bytes each): the line is cut after that, so it still fits.
#[test]
fn a_line_lengthened_by_replaced_bytes_still_fits() {
    let got = lines_of(Stream::Stdout, &[0xff; 30_000]);
    assert!(got[0].1.len() <= MAX_LINE, "{}", got[0].1.len());
    assert!(got[0].1.ends_with(LINE_CUT_MARK));
}

#[test]
fn lines_not_kept_are_counted() {
    let mut parser = LineParser::with_lines(Stream::Stdout);
    parser.feed(b"a\n").for_each(drop);
    parser.keep_lines(false);
    parser.feed(b"b\n5::c\nd").for_each(drop);
    parser.finish().for_each(drop);
    assert_eq!(parser.take_lines().len(), 0);
    assert_eq!(parser.take_skipped(), 3);
    assert_eq!(parser.take_skipped(), 0);
}

#[test]
fn a_parser_without_lines_keeps_none() {
    let mut parser = LineParser::new(Stream::Stdout);
    parser.feed(b"a\nb\n").for_each(drop);
    assert_eq!(parser.take_lines().len(), 0);
    let mut parser = LineParser::with_lines(Stream::Stdout);
    parser.keep_lines(false);
    parser.feed(b"a\n").for_each(drop);
    assert_eq!(parser.take_lines().len(), 0);
}

proptest! {
    #[test]
    fn live_lines_are_one_per_line_break_whatever_the_chunks(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cut in any::<usize>(),
    ) {
        let cut = cut % (bytes.len() + 1);
        let mut parser = LineParser::with_lines(Stream::Stdout);
        parser.feed(&bytes[..cut]).for_each(drop);
        parser.feed(&bytes[cut..]).for_each(drop);
        parser.finish().for_each(drop);
        let lines: Vec<Line> = parser.take_lines();
        let breaks = bytes.iter().filter(|&&b| b == b'\n').count();
        let unfinished = usize::from(bytes.last().is_some_and(|&b| b != b'\n'));
        prop_assert_eq!(lines.len(), breaks + unfinished);
        prop_assert_eq!(lines, {
            let mut whole = LineParser::with_lines(Stream::Stdout);
            whole.feed(&bytes).for_each(drop);
            whole.finish().for_each(drop);
            whole.take_lines()
        });
    }
}

proptest! {
    #[test]
    fn never_panics_whatever_the_bytes_and_chunks(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = parse_all(Stream::Stdout, &bytes);
        // Chunk boundaries do not change the result.
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut parser = LineParser::new(Stream::Stdout);
        let mut chunked: Vec<Parsed> = Vec::new();
        let mut from = 0;
        for c in cuts.into_iter().chain([bytes.len()]) {
            chunked.extend(parser.feed(&bytes[from..c]));
            from = c;
        }
        chunked.extend(parser.finish());
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn plain_lines_come_out_as_they_went_in(lines in prop::collection::vec("[^\n\r]{0,40}", 0..20)) {
        let lines: Vec<String> = lines.into_iter().filter(|l| header(l.as_bytes()).is_none()).collect();
        let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let parsed = parse_all(Stream::Stderr, input.as_bytes());
        let got: Vec<(u8, String)> = parsed.into_iter().map(|p| (p.level, p.text)).collect();
        let want: Vec<(u8, String)> = lines.into_iter().map(|l| (2, l)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn rendered_messages_parse_back(messages in prop::collection::vec(
        (level(), prop::collection::vec(line_text(), 1..4), any::<bool>()), 0..20)
    ) {
        // A one-line message is one line; a block may hold several.
        let messages: Vec<(u8, String, bool)> = messages
            .into_iter()
            .map(|(level, lines, block)| {
                // `N:::` opens a block: a one-line text cannot start with `:`.
                if block || lines[0].starts_with(':') {
                    (level, lines.join("\n"), true)
                } else {
                    (level, lines[0].clone(), false)
                }
            })
            .collect();
        let parsed = parse_all(Stream::Stdout, render(&messages).as_bytes());
        let got: Vec<(u8, String)> = parsed.into_iter().map(|p| (p.level, p.text)).collect();
        let want: Vec<(u8, String)> = messages.into_iter().map(|(l, t, _)| (l, t)).collect();
        prop_assert_eq!(got, want);
    }
}
