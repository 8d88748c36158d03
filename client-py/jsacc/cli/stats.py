"""``jsctl stats``: an agent's latest aggregated stats (or its last flushed batches)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, Optional

from ..client import Client
from .args import add_agent_options, resolve_agent
from .exits import EXIT_OK
from .output import ago, err, table

#: The order `format_values` prints a metric's values in; others follow, sorted.
_VALUE_ORDER = ["value", "sum", "rate", "count", "min", "max", "mean", "p50", "p90", "p99"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "stats", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show an agent's latest aggregated stats",
        description="Show the latest aggregated stats of agent GID:NID (the Redis hash "
                    "stats:{GID:NID}:latest): one line per metric with its type, the age of its "
                    "last flush and its values (counter: sum, rate/s; gauge: value; timer and "
                    "histogram: count, sum, min, max, mean, p50, p90, p99; set: count). "
                    "The positional form `jsctl stats GID NID` is deprecated.",
        epilog="examples:\n  jsctl stats --gid 1 --nid 5\n"
               "  jsctl stats --gid 1 --nid 5 --prefix ops.web.\n"
               "  jsctl stats --gid 1 --nid 5 --history 3      # the last 3 flushed batches as "
               "JSON\n\n"
               "exit codes: 0 shown (also when empty), 6 cannot reach Redis.\n")
    add_agent_options(p, positional_alias=True)
    # Deprecated: `jsctl stats GID NID` (settled by check_args, with a warning on stderr).
    p.add_argument("legacy_ids", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--prefix", default="", metavar="P",
                   help="only metrics whose key starts with P")
    p.add_argument("--json", action="store_true", help="print the metrics as a JSON object")
    p.add_argument("--history", type=int, default=0, metavar="N",
                   help="print the last N batches of the stream stats:{GID:NID} as JSON instead")
    p.set_defaults(func=run, check_args=check_args)


def check_args(a: argparse.Namespace) -> Optional[str]:
    """Settles the agent (--gid/--nid, or the deprecated positional GID NID)."""
    problem, rest = resolve_agent(a, a.legacy_ids, "stats")
    if problem is None and rest:
        problem = f"stats: unrecognized arguments: {' '.join(rest)}"
    return problem


def format_values(values: Dict[str, Any]) -> str:
    """A metric's values as ``k=v`` pairs in a fixed order (type and times left out), numbers
    kept short."""
    parts = []
    for k, v in sorted(values.items(), key=lambda kv: (_VALUE_ORDER.index(kv[0])
                                                       if kv[0] in _VALUE_ORDER
                                                       else len(_VALUE_ORDER), kv[0])):
        if k in ("type", "epoch", "interval"):
            continue
        if isinstance(v, float):
            v = f"{v:.6g}"
        parts.append(f"{k}={v}")
    return " ".join(parts)


def run(client: Client, a: argparse.Namespace) -> int:
    if a.history:
        batches = client.stats_batches(a.gid, a.nid, count=a.history)
        print(json.dumps(batches, indent=2))
        return EXIT_OK
    stats = {k: v for k, v in client.stats(a.gid, a.nid).items() if k.startswith(a.prefix)}
    if a.json:
        print(json.dumps(stats, indent=2))
        return EXIT_OK
    if not stats:
        err(f"no stats from agent {a.gid}:{a.nid}"
            + (f" under {a.prefix!r}" if a.prefix else ""))
        return EXIT_OK
    now_ms = time.time() * 1000.0
    rows = [("KEY", "TYPE", "AGE", "VALUES")]
    for key, values in stats.items():
        age = ago(max(0.0, (now_ms - float(values.get("epoch") or 0)) / 1000.0))
        rows.append((key, str(values.get("type", "?")), age, format_values(values)))
    print("\n".join(table(rows)))
    return EXIT_OK
