"""``jsctl ps`` and ``jsctl kill``: the process manager of an agent, from a shell."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

from .cli_common import (EXIT_ERROR, EXIT_NO_RESULT, EXIT_OK, agent_of, err, nonneg_float, reason,
                         table)
from .client import Client
from .errors import Timeout


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


def cmd_ps(client: Client, a: argparse.Namespace) -> int:
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
        for key in ("id", "domain", "name", "pid", "cpu_percent", "rss", "vms", "swap",
                    "threads", "processes"):
            print(f"{key:12} {data.get(key)}")
    elif not data:
        print("no running jobs")
    else:
        print("\n".join(ps_table(data)))
    return EXIT_OK


def cmd_kill(client: Client, a: argparse.Namespace) -> int:
    if a.all == bool(a.job):
        raise ValueError("give a JOB id, or --all (not both)")
    job = (client.killall(gid=a.gid, nid=a.nid) if a.all
           else client.kill(a.job, gid=a.gid, nid=a.nid))
    try:
        result = job.result(a.timeout)
    except Timeout as e:
        err(str(e))
        return EXIT_NO_RESULT
    data = result.get("data")
    if result.get("state") != "OK":
        what = "killall" if a.all else f"kill {a.job}"
        err(f"{what} on {agent_of(result)} ended {result.get('state')}: {reason(result)}")
        return EXIT_ERROR
    if a.json:
        print(json.dumps(data))
    elif a.all:
        killed, remembered = data.get("killed", []), set(data.get("remembered", []))
        print(f"killed {len(killed)} job(s)" + (f": {', '.join(killed)}" if killed else ""))
        if remembered:
            print(f"remembered (they come back): {', '.join(sorted(remembered))}")
    else:
        print(f"killed {data.get('killed')} (was {data.get('was')})")
    return EXIT_OK


def add_parsers(sub: Any, fmt: Any) -> None:
    """Adds `ps` and `kill` to jsctl's subcommands."""
    p = sub.add_parser(
        "ps", formatter_class=fmt, help="show the processes an agent runs (cpu, memory)",
        description="Sample the running jobs of agent GID:NID now: cpu %% (of one core), rss, "
                    "vms, swap, threads and processes of each job's whole process tree, summed "
                    "by domain/name; or one job's with --job.",
        epilog="examples:\n  jsctl ps --gid 1 --nid 5\n  jsctl ps --nid 5 --domain ops\n"
               "  jsctl ps --nid 5 --job 6f1c... --json\n\n"
               "exit codes: 0 shown, 1 the agent answered ERROR (e.g. no such running job), "
               "5 no answer within --timeout, 6 cannot reach Redis.\n")
    _agent_args(p)
    p.add_argument("--domain", help="only jobs of this domain")
    p.add_argument("--name", help="only jobs of this name")
    p.add_argument("--job", metavar="ID", help="one job's process tree instead of the sums")
    p.add_argument("--timeout", type=nonneg_float, default=10.0, metavar="S",
                   help="seconds to wait for the agent's answer (default 10)")
    p.add_argument("--json", action="store_true", help="print the agent's answer as JSON")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser(
        "kill", formatter_class=fmt, help="kill a job (or every job) on an agent",
        description="Kill job JOB on agent GID:NID: its whole process tree gets SIGTERM, then "
                    "SIGKILL after 5 s (Windows: its Job Object is terminated); it ends KILLED "
                    "and, if it was long-running or recurring, is forgotten. With --all, kill "
                    "every process; long-running and recurring jobs stay registered and come back.",
        epilog="examples:\n  jsctl kill --gid 1 --nid 5 6f1c...\n  jsctl kill --nid 5 --all\n\n"
               "exit codes: 0 killed, 1 the agent refused (unknown job, already ended), "
               "5 no answer within --timeout, 6 cannot reach Redis.\n")
    _agent_args(p)
    p.add_argument("--all", action="store_true", help="killall: every process of the agent")
    p.add_argument("job", nargs="?", metavar="JOB", help="id of the job to kill")
    p.add_argument("--timeout", type=nonneg_float, default=30.0, metavar="S",
                   help="seconds to wait for the kill's answer (default 30; a kill waits for "
                        "the tree to exit)")
    p.add_argument("--json", action="store_true", help="print the agent's answer as JSON")
    p.set_defaults(func=cmd_kill)


def _agent_args(p: argparse.ArgumentParser) -> None:
    """--gid and --nid: the one agent a command goes to."""
    p.add_argument("--gid", type=int, default=0, metavar="G", help="grid id (default 0)")
    p.add_argument("--nid", type=int, required=True, metavar="N", help="node id of the agent")
