"""Unit tests (no Redis, no binaries) of how a job's live output is shown: the display rules of
jsacc.display, the stream entry parser, and jsctl's line printer."""

from __future__ import annotations

import pytest

from jsacc.cli.watch import LinePrinter
from jsacc.display import LineDisplay, is_marker
from jsacc.records import output_line


def line(text, level=1, fd=1, agent="1:1"):
    return {"agent": agent, "fd": fd, "level": level, "line": text, "time": 0, "id": "1-0"}


def shown(lines, raw=False):
    d = LineDisplay(raw=raw)
    return [d.text(x) for x in lines]


# -- display rules ----------------------------------------------------------------------------

def test_plain_lines_are_shown_as_printed():
    assert shown([line("hello"), line("oops", 2, 2), line("")]) == ["hello", "oops", ""]


@pytest.mark.parametrize("text, level, want", [
    ("3::for the user", 3, "for the user"),
    ("7::careful", 7, "careful"),
    ("20::{\"a\": 1}", 20, "{\"a\": 1}"),
    ("10::x.count:1|c", 10, "x.count:1|c"),
    ("3::", 3, ""),
])
def test_message_lines_show_their_text(text, level, want):
    assert shown([line(text, level)]) == [want]


@pytest.mark.parametrize("text, level", [
    ("1::not stripped below level 3", 1),
    ("2::on stderr", 2),
    ("99::unknown level, parsed as plain", 1),
    ("3::level says otherwise", 1),   # the parser did not take it as a message
    ("::no level", 1),
    ("a3::text", 1),
])
def test_other_lines_are_shown_as_printed(text, level):
    assert shown([line(text, level)]) == [text]


def test_block_opener_and_closer_are_hidden_and_its_lines_shown_as_they_are():
    lines = [line("before"), line("20:::", 20), line("{", 20), line("3::inside", 20),
             line("}", 20), line(":::", 20), line("after")]
    assert shown(lines) == ["before", None, "{", "3::inside", "}", None, "after"]


def test_text_on_a_block_opener_or_closer_belongs_to_the_block():
    lines = [line("5:::first", 5), line("middle", 5), line(":::last", 5)]
    assert shown(lines) == ["first", "middle", "last"]


def test_blocks_are_tracked_per_agent_and_stream():
    lines = [line("4:::", 4, agent="1:1"), line("4::not in a block", 4, agent="1:2"),
             line(":::", 1, agent="1:2"), line(":::", 4, agent="1:1"),
             line("8:::", 8, fd=2), line("plain out"), line("err in block", 8, fd=2),
             line(":::", 8, fd=2)]
    assert shown(lines) == [None, "not in a block", ":::", None, None, "plain out",
                            "err in block", None]


def test_raw_shows_every_line_unchanged():
    lines = [line("3::x", 3), line("20:::", 20), line("y", 20), line(":::", 20)]
    assert shown(lines, raw=True) == ["3::x", "20:::", "y", ":::"]


def test_a_marker_is_shown_and_recognised():
    marker = line("[jsacc] output capped at 10000 lines", level=0, fd=2)
    assert shown([marker]) == ["[jsacc] output capped at 10000 lines"]
    assert is_marker(marker) and not is_marker(line("x"))


def test_a_line_without_fields_does_not_fail():
    assert LineDisplay().text({}) == ""


# -- stream entries ---------------------------------------------------------------------------

def test_output_line_from_a_stream_entry():
    got = output_line(b"1700-3", {b"agent": b"1:2", b"fd": b"2", b"level": b"7",
                                  b"line": b"7::hot", b"time": b"1700"})
    assert got == {"id": "1700-3", "agent": "1:2", "fd": 2, "level": 7, "line": "7::hot",
                   "time": 1700}


def test_output_line_with_missing_or_bad_fields_is_not_an_error():
    got = output_line("1-0", {"fd": "x", "line": "\udcff"[:0] + "t"})
    assert got == {"id": "1-0", "agent": "", "fd": 0, "level": 0, "line": "t", "time": 0}


# -- jsctl's printer --------------------------------------------------------------------------

def test_printer_separates_stdout_and_stderr_and_notes_markers(capsys):
    p = LinePrinter()
    p.print_lines([line("out"), line("err", 2, 2), line("3::msg", 3),
                   line("[jsacc] output capped at 10 lines", 0, 2)])
    out, err = capsys.readouterr()
    assert out == "out\nmsg\n"
    assert err == "err\njsctl: note: 1:1: [jsacc] output capped at 10 lines\n"


def test_printer_prefixes_agents_with_fanout(capsys):
    p = LinePrinter(prefix=True)
    p.print_lines([line("a", agent="1:1"), line("b", agent="1:2"), line("c", 2, 2, "1:2")])
    out, err = capsys.readouterr()
    assert out == "1:1: a\n1:2: b\n" and err == "1:2: c\n"


def test_printer_prints_result_tails_only_for_agents_without_lines(capsys):
    p = LinePrinter()
    p.print_lines([line("live", agent="1:1")])
    p.print_tails({"gid": 1, "nid": 1, "streams": ["live\n", ""]})
    p.print_tails({"gid": 1, "nid": 2, "streams": ["tail 1\ntail 2\n", "warn\n"]})
    out, err = capsys.readouterr()
    assert out == "live\ntail 1\ntail 2\n" and err == "warn\n"
