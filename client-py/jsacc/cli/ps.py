"""``jsctl ps``: the processes an agent runs, sampled now (cpu, memory, threads)."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

from ..client import Client
from ..errors import Timeout
from .args import add_agent_options, nonneg_float
from .exits import EXIT_ERROR, EXIT_NO_RESULT, EXIT_OK
from .output import agent_of, err, reason, table

#: The fields `jsctl ps --job ID` prints, in this order.
_JOB_FIELDS = ("id", "domain", "name", "pid", "cpu_percent", "rss", "vms", "swap", "threads",
               "processes")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ps", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show the processes an agent runs (cpu, memory)",
        description="Sample the running jobs of agent GID:NID now: cpu %% (of one core), rss, "
                    "vms, swap, threads and processes of each job's whole process tree, summed "
                    "by domain/name; or one job's with --job.",
        epilog="examples:\n  jsctl ps --gid 1 --nid 5\n  jsctl ps --nid 5 --domain ops\n"
               "  jsctl ps --nid 5 --job 6f1c... --json\n\n"
               "exit codes: 0 shown, 1 the agent answered ERROR (e.g. no such running job), "
               "5 no answer within --timeout, 6 cannot reach Redis.\n")
    add_agent_options(p)
    p.add_argument("--domain", help="only jobs of this domain")
    p.add_argument("--name", help="only jobs of this name")
    p.add_argument("--job", metavar="ID", help="one job's process tree instead of the sums")
    p.add_argument("--timeout", type=nonneg_float, default=10.0, metavar="S",
                   help="seconds to wait for the agent's answer (default 10)")
    p.add_argument("--json", action="store_true", help="print the agent's answer as JSON")
    p.set_defaults(func=run)


def _human_bytes(n: Any) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable: the loop returns at GiB")


def ps_table(groups: List[Dict[str, Any]]) -> List[str]:
    """The lines `jsctl ps` prints for a get_processes_stats answer."""
    rows = [("DOMAIN", "NAME", "JOBS", "CPU%", "RSS", "VMS", "SWAP", "THREADS", "PROCS")]
    for g in groups:
        rows.append((g.get("domain") or "-", g.get("name") or "-", str(len(g.get("jobs") or [])),
                     f"{float(g.get('cpu_percent') or 0):.1f}", _human_bytes(g.get("rss")),
                     _human_bytes(g.get("vms")), _human_bytes(g.get("swap")),
                     str(g.get("threads", 0)), str(g.get("processes", 0))))
    return table(rows)


def run(client: Client, a: argparse.Namespace) -> int:
    if a.job:
        job = client.get_process_stats(a.job, gid=a.gid, nid=a.nid)
    else:
        job = client.get_processes_stats(gid=a.gid, nid=a.nid, domain=a.domain, name=a.name)
    try:
        result = job.result(a.timeout)
    except Timeout as e:
        err(str(e))
        return EXIT_NO_RESULT
    if result.get("state") != "OK":
        what = "get_process_stats" if a.job else "get_processes_stats"
        err(f"{what} on {agent_of(result)} ended {result.get('state')}: {reason(result)}")
        return EXIT_ERROR
    data = result.get("data")
    if a.json:
        print(json.dumps(data, indent=2))
    elif a.job:
        for key in _JOB_FIELDS:
            print(f"{key:12} {data.get(key)}")
    elif not data:
        print("no running jobs")
    else:
        print("\n".join(ps_table(data)))
    return EXIT_OK
