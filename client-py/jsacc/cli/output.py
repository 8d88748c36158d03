"""How ``jsctl`` writes: its ``jsctl: …`` error line, aligned tables, ages, and the one-line
summaries of a result (which agent it came from, why it is not OK, who did not answer)."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Sequence

from ..job import Job


def err(msg: str) -> None:
    """One ``jsctl: …`` line on stderr."""
    print(f"jsctl: {msg}", file=sys.stderr, flush=True)


def write_text(stream: Any, text: str) -> None:
    """``text`` (a program's output) on ``stream``, ending with a newline; nothing if empty."""
    if text:
        stream.write(text)
        if not text.endswith("\n"):
            stream.write("\n")
        stream.flush()


def table(rows: Sequence[Sequence[str]]) -> List[str]:
    """Rows (the first one the header) as lines with their columns lined up."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def ago(seconds: float) -> str:
    """An age in seconds as ``12s ago``, ``5m ago``, ``1.5h ago`` or ``2.0d ago``."""
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


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


def missing_targets(job: Job, results: Sequence[Dict[str, Any]], fanout: bool) -> List[str]:
    """The ``gid:nid`` targets of a fanout job that sent none of ``results``."""
    if not fanout:
        return []
    got = {agent_of(r) for r in results}
    return [t for t in (job.targets or []) if t not in got]
