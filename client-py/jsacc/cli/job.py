"""``jsctl job ID``: one job's record (command, submitter, targets, state per agent, times, exit
code and result), read without consuming its results; ``jsctl job follow ID``: its output from
the start, following it until it ends."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from typing import Any, Dict, List, Optional

from ..client import Client
from ..errors import Timeout, UnknownJob
from .args import nonneg_float
from .exits import EXIT_ERROR, EXIT_NO_RESULT, EXIT_OK, exit_code_for_results
from .output import err, reason, table
from .watch import LinePrinter


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "job", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show one job (or follow its output)",
        usage="jsctl job [-h] [--json] ID\n       jsctl job follow [--raw] [--timeout S] ID",
        description="`jsctl job ID` shows job ID's record (the Redis hash job:ID): command, "
                    "submitter, targets, state, created/started/ended, duration, and per "
                    "agent its state, exit code and result data. It consumes nothing: a client "
                    "waiting for the job's results still gets them.\n\n"
                    "`jsctl job follow ID` prints the job's output from its start (the stream "
                    "output:ID: stdout lines on stdout, stderr lines on stderr, line-protocol "
                    "messages as their text unless --raw) and follows it until the job ends; "
                    "for a finished job it prints its output and returns. It waits up to 10 s "
                    "for a job not routed yet; an id with no record by then is unknown. A "
                    "job's record and output expire after the controller's --result-ttl "
                    "(default 1 day); a record that expires while followed ends the follow "
                    "(exit 1).",
        epilog="""\
examples:
  jsctl job 6f1c2a...
  jsctl job 6f1c2a... --json | jq .agents
  jsctl job follow 6f1c2a...
  jsctl job follow 6f1c2a... --raw --timeout 60

exit codes: `job ID`: 0 shown, 1 unknown job (never routed, or expired), 6 cannot reach Redis.
  `job follow ID`: that of the job's state as for `jsctl exec` (0 OK, 1 ERROR, 3 TIMEOUT,
  4 KILLED), 1 unknown job (or its record expired), 5 not ended within --timeout, 6 cannot
  reach Redis, 130 Ctrl-C.
""")
    p.add_argument("words", nargs="+", metavar="[follow] ID",
                   help="the job id, after `follow` to follow its output")
    p.add_argument("--json", action="store_true", help="print the record as JSON (`job ID`)")
    p.add_argument("--raw", action="store_true",
                   help="`job follow`: print line-protocol lines as printed")
    p.add_argument("--timeout", type=nonneg_float, default=None, metavar="S",
                   help="`job follow`: stop after S seconds if the job has not ended (exit 5)")
    p.set_defaults(func=run, check_args=check_args)


def check_args(a: argparse.Namespace) -> Optional[str]:
    """``ID`` or ``follow ID``; the options of the other form are refused."""
    words = a.words
    a.follow = len(words) == 2 and words[0] == "follow"
    if len(words) > 2 or (len(words) == 2 and not a.follow):
        return f"job: want `jsctl job ID` or `jsctl job follow ID`, got {' '.join(words)!r}"
    a.id = words[-1]
    if a.follow and a.json:
        return "job: --json is for `jsctl job ID`, not `job follow`"
    if not a.follow and (a.raw or a.timeout is not None):
        return "job: --raw and --timeout are for `jsctl job follow ID`"
    return None


def _when(ms: Optional[int]) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000.0)) + f".{ms % 1000:03d}"


def format_duration(seconds: Optional[float]) -> str:
    """A duration as ``850ms``, ``12.3s``, ``5m07s`` or ``2h05m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def format_command(record: Dict[str, Any]) -> str:
    """The command in one line: an execute's program and arguments (shell-quoted), else the
    command's name and its args as JSON; `-` while it is not known (a config-file daemon's
    record learns its command from its first result)."""
    command = record.get("command") or {}
    args = command.get("args") if isinstance(command.get("args"), dict) else {}
    if record.get("cmd") == "execute" and args.get("cmd"):
        return shlex.join([str(args["cmd"])] + [str(x) for x in args.get("args") or []])
    rest = {k: v for k, v in args.items() if k not in ("domain", "name") or v}
    return f"{record.get('cmd') or '?'} {json.dumps(rest)}" if rest else record.get("cmd") or "-"


def record_lines(record: Dict[str, Any]) -> List[str]:
    """What `jsctl job ID` prints for a record."""
    name = f"{record['domain']}/{record['name']}" if record.get("name") else "-"
    lines = [f"{k:13} {v}" for k, v in (
        ("job", record["id"]), ("command", format_command(record)), ("name", name),
        ("submitted by", record.get("submitted_by") or "-"),
        ("targets", ", ".join(record["targets"]) or "-"), ("state", record.get("state")),
        ("created", _when(record.get("created"))), ("started", _when(record.get("started"))),
        ("ended", _when(record.get("ended"))),
        ("duration", format_duration(record.get("duration"))))]
    rollout = record.get("rollout")
    if rollout:
        limit = rollout["max_failures"]
        lines.append(f"{'rollout':13} batches of {rollout['batch']}, {rollout['batch_wait']} s "
                     f"apart, {'no failure limit' if limit is None else f'max_failures {limit}'}: "
                     f"{rollout['released']} of {len(record['targets'])} released, "
                     f"{rollout['failed']} failed"
                     + (f"; {rollout['stopped']}" if rollout.get("stopped") else ""))
    rows = [("AGENT", "STATE", "EXIT", "STARTED", "RUN TIME")]
    for agent, entry in record["agents"].items():
        exit_code = entry.get("exit_code")
        ran = entry.get("time")
        rows.append((agent, entry.get("state") or "(running)",
                     "-" if exit_code is None else str(exit_code), _when(entry.get("starttime")),
                     format_duration(ran / 1000.0 if isinstance(ran, int) else None)))
    if len(rows) > 1:
        lines += [""] + table(rows)
    for agent, entry in record["agents"].items():
        result = entry.get("result") or {}
        data = result.get("data")
        if data not in (None, ""):
            text = data if isinstance(data, str) else json.dumps(data)
            lines.append(f"result {agent}: {text.strip()}")
        if result.get("critical"):
            lines.append(f"critical {agent}: {result['critical']}")
    return lines


def _show(client: Client, a: argparse.Namespace) -> int:
    record = client.job(a.id).record()
    if record is None:
        err(f"job {a.id}: unknown (never routed, or its record expired)")
        return EXIT_ERROR
    print(json.dumps(record, indent=2) if a.json else "\n".join(record_lines(record)))
    return EXIT_OK


def _follow(client: Client, a: argparse.Namespace) -> int:
    job = client.job(a.id)
    printer = LinePrinter(raw=a.raw)
    try:
        for lines in job.output_batches(follow=True, timeout=a.timeout):
            # Lines come only once the job is routed: its targets are known (and cached) by then.
            printer.prefix = len(job.targets or []) > 1
            printer.print_lines(lines)
    except Timeout as e:
        err(str(e))
        return EXIT_NO_RESULT
    except UnknownJob as e:
        err(str(e))
        return EXIT_ERROR
    record = job.record()
    if record is None:
        err(f"job {job.id}: its record expired while it was followed: how it ended is unknown")
        return EXIT_ERROR
    results = [e["result"] for e in record["agents"].values() if e.get("result")]
    for result in results:
        printer.print_tails(result)
        if result.get("state") != "OK":
            err(f"job {job.id} on {result.get('gid')}:{result.get('nid')} ended "
                f"{result.get('state')}: {reason(result)}")
    if not results:
        # Final without a result (e.g. never delivered): the record's state says how it ended.
        results = [{"state": record.get("state")}]
    return exit_code_for_results(results)


def run(client: Client, a: argparse.Namespace) -> int:
    return _follow(client, a) if a.follow else _show(client, a)
