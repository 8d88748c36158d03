"""What every ``jsctl`` command shares: its exit codes, its error line, its table layout,
its argument types."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Sequence

# Exit codes (documented in --help and README.md).
EXIT_OK = 0          # the job ended OK (every target, with --fanout)
EXIT_ERROR = 1       # the job ended ERROR: it failed or could not run (reason on stderr)
EXIT_USAGE = 2       # bad command line (argparse)
EXIT_TIMEOUT = 3     # the job ended TIMEOUT: its --max-time was hit
EXIT_KILLED = 4      # the job ended KILLED
EXIT_NO_RESULT = 5   # no result within --timeout (client-side wait)
EXIT_REDIS = 6       # cannot reach Redis
EXIT_INTERRUPTED = 130


def err(msg: str) -> None:
    """One ``jsctl: …`` line on stderr."""
    print(f"jsctl: {msg}", file=sys.stderr, flush=True)


def agent_of(result: Dict[str, Any]) -> str:
    """``gid:nid`` of the agent a result comes from."""
    return f"{result.get('gid')}:{result.get('nid')}"


def reason(result: Dict[str, Any]) -> str:
    """Why a result is not OK, in one line: its data, and its exit code if it has one."""
    data = result.get("data")
    if data in (None, ""):
        text = ""
    elif isinstance(data, str):
        text = data.strip()
    else:
        text = json.dumps(data)
    exit_code = result.get("exit_code")
    if exit_code is not None and result.get("state") != "OK":
        text = f"{text} (exit code {exit_code})" if text else f"exit code {exit_code}"
    return text or "no reason given"


def table(rows: Sequence[Sequence[str]]) -> List[str]:
    """Rows (the first one the header) as lines with their columns lined up."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def nonneg_float(text: str) -> float:
    """An argparse type: a number >= 0 (seconds), with a clear message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def nonneg_int(text: str) -> int:
    """An argparse type: an integer >= 0, with a clear message otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value
