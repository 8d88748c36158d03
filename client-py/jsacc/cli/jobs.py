"""``jsctl jobs``: the job history, newest first, filtered by agent, state, name and age."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List

from ..client import Client
from ..history import check_name
from ..job import STATES
from .args import agent_id, duration
from .exits import EXIT_OK
from .job import format_duration
from .output import err, table

#: Targets shown in the table before the rest is counted (`1:1,1:2,+3`).
_TARGETS_SHOWN = 3


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "jobs", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list recent jobs (newest first)",
        description="List the jobs the controller routed, newest first, from its history "
                    "indexes (jobs:all, jobs:agent:G:N, jobs:name:D/N; kept for its "
                    "--result-ttl, default 1 day): id, created, command, name, targets, state, "
                    "duration and who submitted it. `jsctl job ID` shows one in full.",
        epilog="""\
examples:
  jsctl jobs
  jsctl jobs --agent 1:5 --since 1h
  jsctl jobs --state ERROR --since 2d --limit 200
  jsctl jobs --name ops/backup --json | jq -r '.[].id'

exit codes: 0 listed (also when none matched), 2 bad filter, 6 cannot reach Redis.
""")
    p.add_argument("--agent", type=agent_id, metavar="G:N", help="only jobs sent to agent G:N")
    p.add_argument("--state", type=str.upper, metavar="S", choices=STATES,
                   help=f"only jobs in state S: {' '.join(STATES)}")
    p.add_argument("--name", metavar="D/N", help="only jobs of process DOMAIN/NAME")
    p.add_argument("--since", type=duration, metavar="AGE",
                   help="only jobs created within AGE: 30s, 15m, 1h, 2d")
    p.add_argument("--limit", type=int, default=50, metavar="N",
                   help="at most N jobs (default 50)")
    p.add_argument("--json", action="store_true",
                   help="print the records as a JSON list (as Client.jobs returns them)")
    p.set_defaults(func=run, check_args=check_args)


def check_args(a: argparse.Namespace) -> Any:
    if a.limit < 1:
        return f"jobs: --limit must be >= 1, got {a.limit}"
    try:
        check_name(a.name)
    except ValueError as e:
        return f"jobs: --{e}"
    return None


def _targets(targets: List[str]) -> str:
    if len(targets) <= _TARGETS_SHOWN:
        return ",".join(targets) or "-"
    return ",".join(targets[:_TARGETS_SHOWN]) + f",+{len(targets) - _TARGETS_SHOWN}"


def _duration(record: Dict[str, Any], now_ms: float) -> str:
    if record.get("duration") is not None:
        return format_duration(record["duration"])
    if record.get("started") and record.get("state") == "RUNNING":
        return format_duration((now_ms - record["started"]) / 1000.0) + "+"
    return "-"


def jobs_table(records: List[Dict[str, Any]], now_ms: float) -> List[str]:
    """The lines `jsctl jobs` prints."""
    rows = [("ID", "CREATED", "CMD", "NAME", "TARGETS", "STATE", "DURATION", "SUBMITTER")]
    for r in records:
        created = r.get("created")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created / 1000.0)) \
            if created else "-"
        rows.append((r["id"], when, r.get("cmd") or "?",
                     f"{r['domain']}/{r['name']}" if r.get("name") else "-",
                     _targets(r.get("targets") or []), r.get("state") or "?",
                     _duration(r, now_ms), r.get("submitted_by") or "-"))
    return table(rows)


def run(client: Client, a: argparse.Namespace) -> int:
    records = client.jobs(agent=a.agent, state=a.state, name=a.name, since=a.since,
                          limit=a.limit)
    if records.truncated:
        err(f"note: scanned the newest {records.scanned} jobs; narrow with "
            "--since/--agent/--name")
    if a.json:
        print(json.dumps(records, indent=2))
    elif not records:
        err("no jobs" + (" match" if any((a.agent, a.state, a.name, a.since)) else ""))
    else:
        print("\n".join(jobs_table(records, time.time() * 1000.0)))
    return EXIT_OK
