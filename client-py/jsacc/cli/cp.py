"""``jsctl cp``: copy a file to an agent (``jsctl cp LOCAL G:N:/path``) or from one
(``jsctl cp G:N:/path LOCAL``), in chunks, checked end to end by SHA-256 (see
:mod:`jsacc.files`)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any, Dict, Optional, TextIO, Tuple

from ..client import Client
from ..errors import Timeout
from ..files import CHUNK_TIMEOUT, check_mode
from .args import positive_float
from .exits import EXIT_CODES_HELP, EXIT_ERROR, EXIT_NO_RESULT, EXIT_OK
from .output import err

#: What an argument that names an agent looks like: ``G:N`` then, after a colon, the path.
_REMOTE = re.compile(r"^(\d+):(\d+)(?::(.*))?$", re.DOTALL)

#: Files from this size on get a progress bar (when stderr is a terminal).
PROGRESS_FROM = 1024 * 1024

Remote = Tuple[int, int, str]


def parse_remote(text: str) -> Optional[Remote]:
    """``(gid, nid, path)`` of a ``G:N:/path`` argument; ``None`` for a local path (anything
    not starting with ``digits:digits``: write ``./1:2`` for a local file named so).
    ``ValueError`` for ``G:N`` without a path."""
    m = _REMOTE.match(text)
    if m is None:
        return None
    if not m.group(3):
        raise ValueError(f"bad remote {text!r}: expected G:N:/path (e.g. 1:5:/etc/motd)")
    return int(m.group(1)), int(m.group(2)), m.group(3)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cp", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="copy a file to or from an agent",
        description="Copy a file to an agent or from one, with the internal commands put_file "
                    "and get_file (3 MiB per upload command, 704 KiB per download answer). "
                    "The file is checked by SHA-256 end to end and appears at its destination "
                    "only when complete. Remote paths are absolute on the agent's machine or "
                    "start with $agentroot, $root or $tmp (quote the $ from the shell); a "
                    "remote path ending in / gets the local file's name. The agent refuses "
                    "files over its max_file_size (default 100 MiB).",
        epilog=f"""\
examples:
  jsctl cp ./app.toml 1:5:/etc/app/app.toml --mode 0640
  jsctl cp ./tool 1:5:'$agentroot/bin/' --mode 0755
  jsctl cp 1:5:/var/log/app.log ./logs/

{EXIT_CODES_HELP}""")
    p.add_argument("source", metavar="SRC", help="LOCAL file or G:N:/path on an agent")
    p.add_argument("dest", metavar="DST", help="G:N:/path on an agent or LOCAL path")
    p.add_argument("--mode", metavar="MODE",
                   help="upload: octal mode of the remote file, e.g. 0644 (Unix agents; "
                        "default: a replaced file keeps its mode, a new one gets 0644)")
    p.add_argument("--timeout", type=positive_float, default=CHUNK_TIMEOUT, metavar="S",
                   help=f"seconds to wait for each chunk's answer (default {CHUNK_TIMEOUT:g}); "
                        "a chunk not answered in time is sent once more, then exit 5")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (shown on stderr for files from 1 MiB when it is "
                        "a terminal)")
    p.add_argument("--json", action="store_true", help="print the final answer as JSON")
    p.set_defaults(func=run, check_args=check_args)


def check_args(a: argparse.Namespace) -> Optional[str]:
    """Exactly one remote side, well formed; ``--mode`` only for an upload."""
    try:
        src, dst = parse_remote(a.source), parse_remote(a.dest)
        if a.mode is not None:
            check_mode(a.mode)
    except ValueError as e:
        return str(e)
    if src is not None and dst is not None:
        return "cp: both SRC and DST are on agents; one of them must be a local path"
    if src is None and dst is None:
        return "cp: neither SRC nor DST is on an agent: one must be G:N:/path"
    if a.mode is not None and src is not None:
        return "cp: --mode is for uploads (LOCAL G:N:/path)"
    return None


class ProgressBar:
    """A one-line progress bar on a terminal: bytes done, percent and rate."""

    def __init__(self, stream: TextIO, label: str, started: Optional[float] = None):
        self.stream = stream
        self.label = label
        self.started = time.monotonic() if started is None else started
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        percent = 100.0 * done / total if total else 100.0
        width = 24
        filled = int(width * percent / 100)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {_mib(done)}/{_mib(total)} "
                          f"{percent:3.0f}% {_mib(done / elapsed)}/s ")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _mib(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


class LazyBar:
    """The ``progress`` callback of a copy: on the first call (when the size is known) it
    decides whether to show a :class:`ProgressBar` (a file from 1 MiB, stderr a terminal, no
    ``--no-progress``)."""

    def __init__(self, enabled: bool, label: str):
        self.enabled = enabled
        self.label = label
        self.bar: Optional[ProgressBar] = None
        self.decided = False
        # The rate counts from the start of the copy, not from the first chunk's answer.
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.decided:
            self.decided = True
            if self.enabled and total >= PROGRESS_FROM and sys.stderr.isatty():
                self.bar = ProgressBar(sys.stderr, self.label, self.started)
        if self.bar is not None:
            self.bar(done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(client: Client, a: argparse.Namespace) -> int:
    src, dst = parse_remote(a.source), parse_remote(a.dest)
    bar = LazyBar(not a.no_progress, f"{a.source} → {a.dest}")
    try:
        if dst is not None:
            answer = _upload(client, a, dst, bar)
            where = f"{dst[0]}:{dst[1]}:{answer.get('path')}"
        else:
            assert src is not None  # check_args: exactly one side is remote
            answer = _download(client, a, src, bar)
            where = str(answer.get("path"))
    except Timeout as e:
        bar.close()
        err(f"cp: {e}")
        return EXIT_NO_RESULT
    except FileNotFoundError as e:
        bar.close()
        err(f"cp: {e.strerror}: {e.filename}")
        return EXIT_ERROR
    finally:
        bar.close()  # once: close() forgets the bar
    if a.json:
        print(json.dumps(answer))
    else:
        print(f"{where}: {answer.get('size')} bytes, sha256 {answer.get('sha256')}")
    return EXIT_OK


def _upload(client: Client, a: argparse.Namespace, dst: Remote, bar: LazyBar) -> Dict[str, Any]:
    gid, nid, path = dst
    if not os.path.isfile(a.source):
        raise FileNotFoundError(2, "no such local file", a.source)
    if path.endswith(("/", "\\")):
        path += os.path.basename(a.source)
    return client.put_file(gid, nid, a.source, path, mode=a.mode, progress=bar,
                           timeout=a.timeout)


def _download(client: Client, a: argparse.Namespace, src: Remote,
              bar: LazyBar) -> Dict[str, Any]:
    gid, nid, path = src
    folder = a.dest if os.path.isdir(a.dest) else (os.path.dirname(a.dest) or ".")
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, "no such local directory", folder)
    return client.get_file(gid, nid, path, a.dest, progress=bar, timeout=a.timeout)
