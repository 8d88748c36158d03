"""``jsctl ping``: check that an agent (or every agent of a role) answers, and how fast."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..client import Client
from ..errors import Timeout
from .args import add_target_options, nonneg_float
from .exits import EXIT_CODES_HELP, EXIT_NO_RESULT, exit_code_for_results
from .output import agent_of, err, missing_targets, reason


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ping", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="check that an agent answers",
        description="Send the internal command `ping` and print `pong from G:N in X ms` "
                    "(X: the round trip client → Redis → controller → agent and back).",
        epilog=f"""\
examples:
  jsctl ping --gid 1 --nid 5
  jsctl ping --gid 1 --role web --fanout --timeout 5

{EXIT_CODES_HELP}""")
    add_target_options(p)
    p.add_argument("--timeout", type=nonneg_float, default=10.0, metavar="S",
                   help="seconds to wait for the pong (default 10); then exit 5")
    p.add_argument("--json", action="store_true", help="print each result as a JSON line")
    p.set_defaults(func=run)


def run(client: Client, a: argparse.Namespace) -> int:
    start = time.monotonic()
    job = client.ping(gid=a.gid, nid=a.nid, role=a.role, fanout=a.fanout)
    results = []
    try:
        for result in job.iter_results(a.timeout):
            ms = (time.monotonic() - start) * 1000.0
            results.append(result)
            if a.json:
                print(json.dumps(result), flush=True)
            elif result.get("state") == "OK":
                print(f"{result.get('data')} from {agent_of(result)} in {ms:.1f} ms", flush=True)
            else:
                err(f"ping {agent_of(result)} ended {result.get('state')}: {reason(result)}")
            if not a.fanout:
                break
    except Timeout as e:
        err(str(e))
        return EXIT_NO_RESULT
    for target in missing_targets(job, results, a.fanout):
        err(f"no pong from {target} within {a.timeout} s")
    expected = len(job.targets or []) if a.fanout else None
    return exit_code_for_results(results, expected or None)
