"""The command-line arguments several ``jsctl`` commands share: number types with clear
messages, the target options (``--gid``, ``--nid``/``--role``, ``--fanout``) and the agent
options (``--gid``, ``--nid``), including the deprecated positional ``GID NID`` of ``stats`` and
``info``."""

from __future__ import annotations

import argparse
import re
from typing import List, Optional, Sequence, Tuple

from .output import err


def nonneg_float(text: str) -> float:
    """An argparse type: a number >= 0 (seconds), with a clear message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0 (seconds), with a clear message otherwise."""
    value = nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
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


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """An argparse type: a duration as ``30s``, ``15m``, ``1h``, ``2d`` (or plain seconds), in
    seconds."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (a number with s, m, h or d: 30s, 15m, 1h, 2d)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def agent_id(text: str) -> str:
    """An argparse type: an agent as ``GID:NID`` (two integers >= 0)."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"not an agent: {text!r} (want GID:NID, e.g. 1:5)")
    return f"{int(parts[0])}:{int(parts[1])}"


def add_target_options(p: argparse.ArgumentParser) -> None:
    """--gid and --nid or --role (with --fanout): where a command is routed."""
    p.add_argument("--gid", type=int, default=0, metavar="G", help="grid id (default 0)")
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--nid", type=int, metavar="N", help="node id of the target agent")
    t.add_argument("--role", metavar="R",
                   help="instead of --nid: any live agent of role R in the grid")
    p.add_argument("--fanout", action="store_true",
                   help="with --role: every live agent of that role (one result each)")


def add_agent_options(p: argparse.ArgumentParser, positional_alias: bool = False) -> None:
    """--gid and --nid: the one agent a command goes to.

    With ``positional_alias`` (``stats``, ``info``) --nid is not required by argparse: the
    command also takes the deprecated positional ``GID NID``, settled by :func:`resolve_agent`
    after parsing (--gid then defaults to ``None`` so that it can tell whether it was given).
    """
    p.add_argument("--gid", type=int, default=None if positional_alias else 0, metavar="G",
                   help="grid id (default 0)")
    p.add_argument("--nid", type=int, required=not positional_alias, metavar="N",
                   help="node id of the agent" + (" (required)" if positional_alias else ""))


def _leading_ids(words: Sequence[str]) -> Optional[Tuple[int, int]]:
    """The first two words as ``(gid, nid)`` when both are integers."""
    if len(words) < 2:
        return None
    try:
        return int(words[0]), int(words[1])
    except ValueError:
        return None


def resolve_agent(a: argparse.Namespace, words: List[str],
                  command: str) -> Tuple[Optional[str], List[str]]:
    """Settle ``a.gid``/``a.nid`` of a command made with ``add_agent_options(p, True)``.

    Without --gid/--nid, two leading integers in ``words`` (the positional arguments) are the
    deprecated ``GID NID`` form: they become the agent and a deprecation warning goes to stderr.
    Returns a usage problem (``None`` when fine) and the words that are left.
    """
    if a.gid is None and a.nid is None:
        ids = _leading_ids(words)
        if ids is not None:
            a.gid, a.nid = ids
            err(f"warning: `jsctl {command} GID NID` is deprecated, use "
                f"`jsctl {command} --gid {a.gid} --nid {a.nid}`")
            words = words[2:]
    if a.gid is None:
        a.gid = 0
    if a.nid is None:
        return (f"{command}: the following arguments are required: --nid "
                f"(the agent: --gid G --nid N)"), words
    return None, words
