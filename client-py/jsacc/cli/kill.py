"""``jsctl kill``: end a job (or, with ``--all``, every process) on an agent."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Tuple

from ..client import Client
from ..errors import Timeout
from ..job import Job
from .args import add_agent_options, nonneg_float
from .exits import EXIT_ERROR, EXIT_NO_RESULT, EXIT_OK
from .output import agent_of, err, reason


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "kill", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="kill a job (or every job) on an agent",
        description="Kill job JOB on agent GID:NID: its whole process tree gets SIGTERM, then "
                    "SIGKILL after 5 s (Windows: its Job Object is terminated); it ends KILLED "
                    "and, if it was long-running or recurring, is forgotten. With --all, kill "
                    "every process; long-running and recurring jobs stay registered and come "
                    "back.",
        epilog="examples:\n  jsctl kill --gid 1 --nid 5 6f1c...\n  jsctl kill --nid 5 --all\n\n"
               "exit codes: 0 killed, 1 the agent refused (unknown job, already ended), "
               "5 no answer within --timeout, 6 cannot reach Redis.\n")
    add_agent_options(p)
    p.add_argument("--all", action="store_true", help="killall: every process of the agent")
    p.add_argument("job", nargs="?", metavar="JOB", help="id of the job to kill")
    p.add_argument("--timeout", type=nonneg_float, default=30.0, metavar="S",
                   help="seconds to wait for the kill's answer (default 30; a kill waits for "
                        "the tree to exit)")
    p.add_argument("--json", action="store_true", help="print the agent's answer as JSON")
    p.set_defaults(func=run)


def _answer(job: Job, what: str, timeout: Optional[float]) -> Tuple[Any, int]:
    """The ``data`` of the agent's answer to a ``kill``/``killall`` and ``EXIT_OK``; or, after
    a line on stderr saying why, ``None`` and the exit code (no answer, or not OK)."""
    try:
        result = job.result(timeout)
    except Timeout as e:
        err(str(e))
        return None, EXIT_NO_RESULT
    if result.get("state") != "OK":
        err(f"{what} on {agent_of(result)} ended {result.get('state')}: {reason(result)}")
        return None, EXIT_ERROR
    return result.get("data"), EXIT_OK


def kill_job(client: Client, job_id: str, gid: int, nid: int, timeout: Optional[float],
             as_json: bool = False, stream: Any = None) -> int:
    """Kill job ``job_id`` on agent ``gid:nid`` (internal ``kill``) and say how it went: the
    path of ``jsctl kill JOB``, also taken by ``jsctl exec`` when Ctrl-C is answered yes.
    Returns the exit code; what was killed is printed on ``stream`` (default stdout)."""
    data, code = _answer(client.kill(job_id, gid=gid, nid=nid), f"kill {job_id}", timeout)
    if code != EXIT_OK:
        return code
    text = json.dumps(data) if as_json else f"killed {data.get('killed')} (was {data.get('was')})"
    print(text, file=stream or sys.stdout, flush=True)
    return EXIT_OK


def run(client: Client, a: argparse.Namespace) -> int:
    if a.all == bool(a.job):
        raise ValueError("give a JOB id, or --all (not both)")
    if not a.all:
        return kill_job(client, a.job, a.gid, a.nid, a.timeout, a.json)
    data, code = _answer(client.killall(gid=a.gid, nid=a.nid), "killall", a.timeout)
    if code != EXIT_OK:
        return code
    if a.json:
        print(json.dumps(data))
        return EXIT_OK
    killed, remembered = data.get("killed", []), set(data.get("remembered", []))
    print(f"killed {len(killed)} job(s)" + (f": {', '.join(killed)}" if killed else ""))
    if remembered:
        print(f"remembered (they come back): {', '.join(sorted(remembered))}")
    return EXIT_OK
