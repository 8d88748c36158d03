"""``jsctl exec``: run a program on an agent (or every agent of a role) and print its output as
it comes (the live lines of ``output:<id>``, see :mod:`.watch`), then exit with the job's code.
Ctrl-C asks whether to kill the job or leave it running."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence

from ..client import Client
from ..errors import Timeout
from ..job import Job
from ..keys import parse_agent_id
from ..validate import check_rollout
from .args import add_target_options, nonneg_float
from .exits import (EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_NO_RESULT, EXIT_OK,
                    exit_code_for_results)
from .kill import kill_job
from .output import agent_of, err, missing_targets, reason, write_text
from .watch import LinePrinter, Watch


#: After Ctrl-C answered with a kill, how long ``jsctl exec`` waits for the job to end (s)
#: before it says the job did not and exits 5.
KILL_WAIT = 60.0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "exec", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a program on an agent and print its output",
        description="Run CMD with ARGS (no shell: use `sh -c '...'` for one) on an agent and "
                    "print its lines as it prints them: stdout on stdout, stderr on stderr "
                    "(line-protocol messages as their text: `3::hi` shows `hi`; --raw shows "
                    "them as printed; with --fanout each line starts with its agent `G:N: `). "
                    "Then exit with the job's code. The job's live output holds at most the "
                    "controller's --output-maxlen lines (a note says when it was capped). "
                    "Ctrl-C asks whether to kill the job (then it waits up to 60 s for the job "
                    "to end, else exits 5) or leave it running (without a terminal on stdin it "
                    "leaves it running, says how to follow or kill it and exits 130). --detach "
                    "prints the job id and returns at once. --json prints the whole result "
                    "instead (and --no-output the tails the result carries).",
        epilog=f"""\
examples:
  jsctl exec --gid 1 --nid 5 -- /bin/echo hi
  jsctl exec --nid 5 -- sh -c 'echo first; sleep 3; echo second'   # lines as they come
  jsctl exec --nid 5 --max-time 10 -- sleep 30          # ends TIMEOUT, exit code 3
  jsctl exec --gid 1 --role web --fanout -- systemctl is-active nginx   # "1:2: active"
  jsctl exec --role web --fanout --batch 2 --batch-wait 5 --max-failures 1 -- ./upgrade.sh
  jsctl exec --role web --fanout --batch 25% -- ./upgrade.sh    # a quarter of them at a time
  jsctl exec --nid 5 --cron '*/5 * * * *' --tz Europe/Paris -- ./report.sh
  jsctl exec --nid 5 --raw -- sh -c 'echo 3::to the user'               # "3::to the user"
  jsctl exec --nid 5 --detach -- ./backup.sh            # prints the id; then:
  jsctl job follow <id>
  jsctl exec --nid 5 --env LANG=C --workingdir '$tmp' --data 'stdin text' -- cat

{EXIT_CODES_HELP}""")
    add_target_options(p)
    p.add_argument("--timeout", type=nonneg_float, default=None, metavar="S",
                   help="seconds to wait for the result (client side; default: as long as it "
                        "takes); when it passes, exit 5 and the job goes on")
    p.add_argument("--max-time", type=int, default=0, metavar="S",
                   help="seconds the job may run before the agent kills it (state TIMEOUT, "
                        "exit 3); 0 = no limit (default), -1 = long-running (restarted by the "
                        "agent)")
    p.add_argument("--max-restart", type=int, default=None, metavar="N",
                   help="restart a process that fails within 5 min of its start up to N times "
                        "(waits 1 s, doubling); then a critical alert and ERROR")
    p.add_argument("--every", type=int, default=None, metavar="S",
                   help="recurring: run every S seconds (never overlapping) until killed; "
                        "jsctl prints the first run's result")
    p.add_argument("--cron", metavar="EXPR",
                   help="run on a cron schedule (args.cron: 5 fields, or 6 with seconds first, "
                        "e.g. '*/5 * * * *') until killed, never overlapping; jsctl prints the "
                        "first run's result")
    p.add_argument("--tz", metavar="ZONE",
                   help="IANA time zone of --cron (args.tz, e.g. Europe/Paris; default UTC)")
    r = p.add_argument_group(
        "rollout (with --fanout)",
        "Send a fanout to its agents in batches (Salt's --batch, Nomad's max_parallel): the "
        "next batch goes once every agent of the last one answered and --batch-wait seconds "
        "passed. Past --max-failures failed agents (a result other than OK) the rollout stops: "
        "the agents not reached yet end ERROR \"rollout stopped: N of M failed\". Each agent's "
        "result arrives as without batches; `jsctl job ID` shows the progress.")
    r.add_argument("--batch", metavar="N|P%",
                   help="agents per batch: a count (>= 1) or a percentage of the targets "
                        "(rounded up, at least one agent)")
    r.add_argument("--batch-wait", type=int, default=None, metavar="S",
                   help="seconds between the last result of a batch and the next batch "
                        "(default 0)")
    r.add_argument("--max-failures", metavar="N|P%",
                   help="failed agents tolerated (a count >= 0 or a percentage of the targets, "
                        "rounded down); one more stops the rollout (default: no limit)")
    p.add_argument("--queue", metavar="NAME",
                   help="serial queue: jobs naming the same queue run one at a time on the agent")
    p.add_argument("--domain", default="", help="domain of the process (groups stats and logs)")
    p.add_argument("--name", default="", help="name of the process (groups stats and logs)")
    p.add_argument("--workingdir", metavar="DIR",
                   help="working directory ($agentroot, $root, $tmp are replaced by the agent)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable (repeatable)")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--data", metavar="TEXT", help="text passed to the program on stdin")
    d.add_argument("--data-file", metavar="PATH",
                   help="file passed on stdin ('-' = jsctl's stdin)")
    p.add_argument("--id", metavar="ID", help="job id (default: a new UUID4)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON "
                   "(a list with --fanout) instead of the program's output")
    p.add_argument("--raw", action="store_true",
                   help="print line-protocol lines as printed (`3::text`, block `N:::` and "
                        "`:::` lines) instead of their text")
    p.add_argument("--detach", action="store_true",
                   help="print the job id and return at once (exit 0); follow it with "
                        "`jsctl job follow ID`")
    p.add_argument("--no-output", action="store_true",
                   help="no live output for this job (args.output false): print the tails of "
                        "stdout and stderr the result carries when it ends")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]",
                   help="the program and its arguments")
    p.set_defaults(func=run, check_args=check_args)


def check_args(a: argparse.Namespace) -> Optional[str]:
    """A usage problem argparse cannot see: no program after ``--``, rollout flags without
    ``--fanout`` or ``--batch``, a malformed amount."""
    if not [c for c in a.command if c != "--"]:
        return "exec: no command given: jsctl exec [options] -- CMD [ARGS...]"
    try:
        check_rollout(a.fanout, a.batch, a.batch_wait, a.max_failures)
    except ValueError as e:
        flag = str(e).split(":", 1)[0].replace("_", "-")
        return f"exec: --{flag}{str(e)[len(flag):]}"
    if a.tz is not None and a.cron is None:
        return "exec: --tz needs --cron (the time zone of its schedule)"
    return None


def _parse_env(items: Sequence[str]) -> Optional[Dict[str, str]]:
    if not items:
        return None
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--env wants KEY=VALUE, got {item!r}")
        env[key] = value
    return env


def _read_data(a: argparse.Namespace) -> Optional[str]:
    """What goes to the program's stdin: --data, or the file (or stdin) --data-file names."""
    if a.data_file is None:
        return a.data
    if a.data_file == "-":
        return sys.stdin.read()
    with open(a.data_file, encoding="utf-8") as f:
        return f.read()


def _wait(job: Job, fanout: bool, timeout: Optional[float]) -> List[Dict[str, Any]]:
    """The results to report (raises Timeout when none arrived)."""
    if fanout:
        return job.results(timeout=timeout)
    return [job.result(timeout=timeout)]


def _report(job: Job, results: List[Dict[str, Any]], a: argparse.Namespace,
            printer: Optional[LinePrinter] = None) -> None:
    """Each result's output streams (or the JSON), and a line on stderr for each not OK. With
    the ``printer`` that printed the live lines, only the tails of agents that sent none."""
    if a.json:
        print(json.dumps(results if a.fanout else results[0], indent=2))
    for result in results:
        if printer is not None:
            printer.print_tails(result)
        elif a.fanout and not a.json:
            print(f"=== {agent_of(result)} {result.get('state')}", flush=True)
        if not a.json and printer is None:
            streams = result.get("streams") or ["", ""]
            write_text(sys.stdout, streams[0] if len(streams) > 0 else "")
            write_text(sys.stderr, streams[1] if len(streams) > 1 else "")
        if result.get("critical"):
            err(f"job {job.id} on {agent_of(result)}: critical: {result['critical']}")
        if result.get("state") != "OK":
            err(f"job {job.id} on {agent_of(result)} ended {result.get('state')}: "
                f"{reason(result)}")


def _kill_hints(job: Job, targets: List[str]) -> None:
    err(f"job {job.id} goes on running" + (f" on {', '.join(targets)}" if targets else ""))
    err(f"  follow it: jsctl job follow {job.id}")
    for target in targets:
        g, n = parse_agent_id(target)
        err(f"  kill it:   jsctl kill --gid {g} --nid {n} {job.id}")


def _interrupted(client: Client, job: Job) -> Optional[int]:
    """Ctrl-C while watching: ask whether to kill the job (stdin a terminal); kill it on each
    target and return ``None`` (watch on until it ends), or return 130 leaving it running."""
    targets = job.targets or []
    if not sys.stdin.isatty() or not targets:
        err("interrupted")
        _kill_hints(job, targets)
        return EXIT_INTERRUPTED
    try:
        sys.stderr.write(f"\nkill job {job.id} on {', '.join(targets)}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        answer = ""
        sys.stderr.write("\n")
    if answer.strip().lower() not in ("y", "yes"):
        _kill_hints(job, targets)
        return EXIT_INTERRUPTED
    failed = [t for t in targets
              if kill_job(client, job.id, *parse_agent_id(t), timeout=30.0,
                          stream=sys.stderr) != EXIT_OK]
    if failed:
        err(f"job {job.id}: not killed on {', '.join(failed)}: waiting up to {KILL_WAIT:g} s "
            "for it to end")
    return None


def _stream(client: Client, job: Job, a: argparse.Namespace) -> int:
    """Print the job's lines as they come until its results are in; then report as before."""
    printer = LinePrinter(raw=a.raw, prefix=a.fanout)
    watch = Watch(job, printer, a.fanout, a.timeout)
    while True:
        try:
            results = watch.run()
            break
        except Timeout as e:
            err(str(e))
            return EXIT_NO_RESULT
        except KeyboardInterrupt:
            code = _interrupted(client, job)
            if code is not None:
                return code
            watch.after_kill(KILL_WAIT)
    return _finish(job, results, a, printer)


def _finish(job: Job, results: List[Dict[str, Any]], a: argparse.Namespace,
            printer: Optional[LinePrinter] = None) -> int:
    missing = missing_targets(job, results, a.fanout)
    _report(job, results, a, printer)
    for target in missing:
        err(f"job {job.id}: no result from {target} within {a.timeout} s")
    expected = len(job.targets or []) if a.fanout else 1
    return exit_code_for_results(results, expected if a.fanout and job.targets else None)


def run(client: Client, a: argparse.Namespace) -> int:
    data = _read_data(a)
    command = list(a.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ValueError("no command given: jsctl exec [options] -- CMD [ARGS...]")
    job = client.execute(command[0], command[1:], gid=a.gid, nid=a.nid, role=a.role,
                         fanout=a.fanout, domain=a.domain, name=a.name, workingdir=a.workingdir,
                         env=_parse_env(a.env), data=data, max_time=a.max_time, id=a.id,
                         max_restart=a.max_restart, recurring_period=a.every, queue=a.queue,
                         output=False if a.no_output else None, cron=a.cron, tz=a.tz,
                         batch=a.batch, batch_wait=a.batch_wait, max_failures=a.max_failures)
    if a.detach:
        print(job.id, flush=True)
        return EXIT_OK
    if not (a.json or a.no_output):
        return _stream(client, job, a)
    try:
        results = _wait(job, a.fanout, a.timeout)
    except Timeout as e:
        err(str(e))
        return EXIT_NO_RESULT
    return _finish(job, results, a)
