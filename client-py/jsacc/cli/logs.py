"""``jsctl logs``: the log messages agents forwarded for one process, and (``-f``) new ones as
they arrive."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict

from ..client import Client
from .exits import EXIT_OK


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "logs", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show (and follow) the forwarded logs of a process",
        description="Print the last messages agents forwarded for process DOMAIN/NAME (the Redis "
                    "stream log.DOMAIN.NAME: the levels each job's loglevels_ac selects, by "
                    "default 7-9), one per line: time, agent, level, job id, text. With -f, keep "
                    "printing new ones as they arrive (Ctrl-C to stop).",
        epilog="examples:\n  jsctl logs ops backup\n  jsctl logs ops backup -f -n 0\n"
               "  jsctl logs ops backup --json | jq -r .data\n\n"
               "exit codes: 0 printed, 6 cannot reach Redis, 130 interrupted (-f).\n")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true", help="follow new messages")
    p.add_argument("-n", "--count", type=int, default=20, metavar="N",
                   help="how many of the last messages to print first (default 20)")
    p.add_argument("--json", action="store_true", help="print each message as a JSON line")
    p.set_defaults(func=run)


def format_log(m: Dict[str, Any]) -> str:
    """One log message as a line: local time, agent, level, job id, text."""
    epoch = m.get("epoch")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch / 1000.0))
            + f".{epoch % 1000:03d}") if isinstance(epoch, int) else "?"
    return (f"{when} {m.get('gid')}:{m.get('nid')} L{m.get('level')} {m.get('jobid')} "
            f"{m.get('data')}")


def run(client: Client, a: argparse.Namespace) -> int:
    out = (lambda m: json.dumps(m)) if a.json else format_log
    last = None
    for m in client.logs(a.domain, a.name, count=a.count) if a.count > 0 else []:
        print(out(m), flush=True)
        last = m["stream_id"]
    if not a.follow:
        return EXIT_OK
    # After -n N: from the last one printed, or, if there was none, from the stream's start (what
    # comes now is new). With -n 0: from the stream's end.
    since = last or ("0" if a.count > 0 else "$")
    for m in client.follow_logs(a.domain, a.name, since=since):
        print(out(m), flush=True)
    return EXIT_OK
