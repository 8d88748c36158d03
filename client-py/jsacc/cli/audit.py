"""``jsctl audit``: the audit trail — who changed agent tokens and operator accounts, when,
from where (the Redis stream ``audit``, written by ``jsacc token`` and ``jsacc user``)."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from ..client import Client
from .args import nonneg_int
from .exits import EXIT_OK
from .output import err, table


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "audit", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show who changed agent tokens and accounts",
        description="Show the newest entries of the audit trail (the Redis stream `audit`): "
                    "when, who (an account, or cli:<user> for `jsacc token`/`jsacc user` on a "
                    "command line), what, to what, and from where. Newest first.",
        epilog="examples:\n  jsctl audit\n  jsctl audit --limit 500 --json | jq "
               "'.[] | select(.what == \"token add\")'\n\n"
               "exit codes: 0 shown (also when empty), 6 cannot reach Redis.\n")
    p.add_argument("--limit", type=nonneg_int, default=50, metavar="N",
                   help="show the newest N entries (default 50)")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(func=run)


def when(ms: int) -> str:
    """``ms`` since the epoch as local ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def run(client: Client, a: argparse.Namespace) -> int:
    entries = client.audit(count=max(a.limit, 1))
    if a.json:
        print(json.dumps(entries, indent=2))
        return EXIT_OK
    if not entries:
        err("the audit trail is empty")
        return EXIT_OK
    rows = [("WHEN", "WHO", "WHAT", "TARGET", "FROM")]
    for e in entries:
        rows.append((when(e["time"]), e.get("who", "-"), e.get("what", "-"),
                     e.get("target", "-"), e.get("from", "-")))
    print("\n".join(table(rows)))
    return EXIT_OK
