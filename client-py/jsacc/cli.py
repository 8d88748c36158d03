"""``jsctl``: the jsacc client from a shell (run ``jsctl --help``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from .client import DEFAULT_URL, Client, Job
from .errors import JsaccError, RedisUnavailable, Timeout

# Exit codes (documented in --help and README.md).
EXIT_OK = 0          # the job ended OK (every target, with --fanout)
EXIT_ERROR = 1       # the job ended ERROR: it failed or could not run (reason on stderr)
EXIT_USAGE = 2       # bad command line (argparse)
EXIT_TIMEOUT = 3     # the job ended TIMEOUT: its --max-time was hit
EXIT_KILLED = 4      # the job ended KILLED
EXIT_NO_RESULT = 5   # no result within --timeout (client-side wait)
EXIT_REDIS = 6       # cannot reach Redis
EXIT_INTERRUPTED = 130

_STATE_EXIT = {"OK": EXIT_OK, "ERROR": EXIT_ERROR, "TIMEOUT": EXIT_TIMEOUT, "KILLED": EXIT_KILLED}

EXIT_CODES_HELP = """\
exit codes:
  0  OK: the job ended OK (with --fanout: every agent's did)
  1  ERROR: the job failed or could not run (the reason, from the result's data, is on stderr)
  2  usage error (bad command line)
  3  TIMEOUT: the job was killed after its --max-time
  4  KILLED: the job was killed
  5  no result within --timeout (a client-side wait; the job may still run)
  6  cannot reach Redis (the message names the URL)
  With --fanout the code is that of the first agent whose job did not end OK, else 5 if some
  agents did not answer within --timeout, else 0.
"""


def exit_code_for_state(state: Optional[str]) -> int:
    """The jsctl exit code for a result's ``state`` (unknown states count as ERROR)."""
    return _STATE_EXIT.get(state or "", EXIT_ERROR)


def exit_code_for_results(results: Sequence[Dict[str, Any]], expected: Optional[int] = None) -> int:
    """The exit code for a job's results: the first non-OK state's code; else
    ``EXIT_NO_RESULT`` when fewer than ``expected`` arrived (or none); else 0."""
    for result in results:
        code = exit_code_for_state(result.get("state"))
        if code != EXIT_OK:
            return code
    if not results or (expected is not None and len(results) < expected):
        return EXIT_NO_RESULT
    return EXIT_OK


def _reason(result: Dict[str, Any]) -> str:
    data = result.get("data")
    if data in (None, ""):
        text = ""
    elif isinstance(data, str):
        text = data.strip()
    else:
        text = json.dumps(data)
    state = result.get("state")
    exit_code = result.get("exit_code")
    if exit_code is not None and state != "OK":
        text = f"{text} (exit code {exit_code})" if text else f"exit code {exit_code}"
    return text or "no reason given"


def _agent(result: Dict[str, Any]) -> str:
    return f"{result.get('gid')}:{result.get('nid')}"


def _write(stream: Any, text: str) -> None:
    if text:
        stream.write(text)
        if not text.endswith("\n"):
            stream.write("\n")
        stream.flush()


def _err(msg: str) -> None:
    print(f"jsctl: {msg}", file=sys.stderr, flush=True)


def _wait(job: Job, fanout: bool, timeout: Optional[float]) -> List[Dict[str, Any]]:
    """The results to report (raises Timeout when none arrived)."""
    if fanout:
        return job.results(timeout=timeout)
    return [job.result(timeout=timeout)]


def _missing(job: Job, results: Sequence[Dict[str, Any]], fanout: bool) -> List[str]:
    if not fanout:
        return []
    got = {_agent(r) for r in results}
    return [t for t in (job.targets or []) if t not in got]


# -- commands ---------------------------------------------------------------------------------

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


def cmd_exec(client: Client, a: argparse.Namespace) -> int:
    data: Optional[str] = a.data
    if a.data_file is not None:
        if a.data_file == "-":
            data = sys.stdin.read()
        else:
            with open(a.data_file, encoding="utf-8") as f:
                data = f.read()
    command = list(a.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ValueError("no command given: jsctl exec [options] -- CMD [ARGS...]")
    job = client.execute(command[0], command[1:], gid=a.gid, nid=a.nid, role=a.role,
                         fanout=a.fanout, domain=a.domain, name=a.name, workingdir=a.workingdir,
                         env=_parse_env(a.env), data=data, max_time=a.max_time, id=a.id)
    try:
        results = _wait(job, a.fanout, a.timeout)
    except Timeout as e:
        _err(str(e))
        return EXIT_NO_RESULT
    missing = _missing(job, results, a.fanout)
    if a.json:
        print(json.dumps(results if a.fanout else results[0], indent=2))
    for result in results:
        if a.fanout and not a.json:
            print(f"=== {_agent(result)} {result.get('state')}", flush=True)
        if not a.json:
            streams = result.get("streams") or ["", ""]
            _write(sys.stdout, streams[0] if len(streams) > 0 else "")
            _write(sys.stderr, streams[1] if len(streams) > 1 else "")
        if result.get("critical"):
            _err(f"job {job.id} on {_agent(result)}: critical: {result['critical']}")
        if result.get("state") != "OK":
            _err(f"job {job.id} on {_agent(result)} ended {result.get('state')}: {_reason(result)}")
    for target in missing:
        _err(f"job {job.id}: no result from {target} within {a.timeout} s")
    expected = len(job.targets or []) if a.fanout else 1
    return exit_code_for_results(results, expected if a.fanout and job.targets else None)


def cmd_ping(client: Client, a: argparse.Namespace) -> int:
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
                print(f"{result.get('data')} from {_agent(result)} in {ms:.1f} ms", flush=True)
            else:
                _err(f"ping {_agent(result)} ended {result.get('state')}: {_reason(result)}")
            if not a.fanout:
                break
    except Timeout as e:
        _err(str(e))
        return EXIT_NO_RESULT
    for target in _missing(job, results, a.fanout):
        _err(f"no pong from {target} within {a.timeout} s")
    expected = len(job.targets or []) if a.fanout else None
    return exit_code_for_results(results, expected or None)


def _ago(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h ago"
    return f"{seconds / 86400:.1f}d ago"


def cmd_agents(client: Client, a: argparse.Namespace) -> int:
    agents = client.agents(online_within=a.online_within)
    if a.json:
        print(json.dumps(agents, indent=2))
        return EXIT_OK
    if not agents:
        _err("no agents registered")
        return EXIT_OK
    rows = [("AGENT", "HOSTNAME", "OS", "ROLES", "LAST SEEN", "ONLINE")]
    for ag in agents:
        rows.append((ag["agent"], str(ag.get("hostname") or "-"), str(ag.get("os") or "-"),
                     ",".join(ag.get("roles") or []) or "-", _ago(ag["last_seen_ago"]),
                     "yes" if ag["online"] else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return EXIT_OK


# -- argument parsing -------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors: keep that, it is our documented code."""


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gid", type=int, default=0, metavar="G", help="grid id (default 0)")
    t = p.add_mutually_exclusive_group(required=True)
    t.add_argument("--nid", type=int, metavar="N", help="node id of the target agent")
    t.add_argument("--role", metavar="R",
                   help="instead of --nid: any live agent of role R in the grid")
    p.add_argument("--fanout", action="store_true",
                   help="with --role: every live agent of that role (one result each)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="jsctl",
        formatter_class=fmt,
        description="Run commands on jsacc agents and list them, through the cluster's Redis.",
        epilog=f"""\
examples:
  jsctl agents
  jsctl ping --gid 1 --nid 5
  jsctl exec --gid 1 --nid 5 -- /bin/ls -l /opt
  jsctl exec --gid 1 --nid 5 --max-time 60 --timeout 90 -- sh -c 'df -h | tail -1'
  jsctl exec --gid 1 --role web --fanout --json -- uptime
  echo hello | jsctl exec --gid 1 --nid 5 --data-file - -- cat
  JSACC_REDIS=redis://:secret@redis.example:6379 jsctl agents --json

Put `--` before the command so that its own options are not read as jsctl's.

{EXIT_CODES_HELP}""")
    parser.add_argument("--redis", metavar="URL", default=os.environ.get("JSACC_REDIS", DEFAULT_URL),
                        help="Redis of the cluster: redis://[user:pass@]host:port[/db], rediss://..., "
                             f"unix://path (env JSACC_REDIS; default {DEFAULT_URL})")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "exec", formatter_class=fmt, help="run a program on an agent and print its output",
        description="Run CMD with ARGS (no shell: use `sh -c '...'` for one) on an agent and wait "
                    "for the result. Prints the tail of the program's stdout on stdout and of its "
                    "stderr on stderr (the agent keeps the last 1000 lines of each), or the whole "
                    "result with --json; the exit code says how the job ended.",
        epilog=f"""\
examples:
  jsctl exec --gid 1 --nid 5 -- /bin/echo hi
  jsctl exec --nid 5 --max-time 10 -- sleep 30          # ends TIMEOUT, exit code 3
  jsctl exec --gid 1 --role web --fanout -- systemctl is-active nginx
  jsctl exec --nid 5 --env LANG=C --workingdir '$tmp' --data 'stdin text' -- cat

{EXIT_CODES_HELP}""")
    _target_args(p)
    p.add_argument("--timeout", type=_nonneg_float, default=None, metavar="S",
                   help="seconds to wait for the result (client side; default: as long as it "
                        "takes); when it passes, exit 5 and the job goes on")
    p.add_argument("--max-time", type=int, default=0, metavar="S",
                   help="seconds the job may run before the agent kills it (state TIMEOUT, exit 3); "
                        "0 = no limit (default), -1 = long-running (restarted by the agent)")
    p.add_argument("--domain", default="", help="domain of the process (groups stats and logs)")
    p.add_argument("--name", default="", help="name of the process (groups stats and logs)")
    p.add_argument("--workingdir", metavar="DIR",
                   help="working directory ($agentroot, $root, $tmp are replaced by the agent)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable (repeatable)")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--data", metavar="TEXT", help="text passed to the program on stdin")
    d.add_argument("--data-file", metavar="PATH", help="file passed on stdin ('-' = jsctl's stdin)")
    p.add_argument("--id", metavar="ID", help="job id (default: a new UUID4)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON "
                   "(a list with --fanout) instead of the program's output")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]",
                   help="the program and its arguments")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser(
        "ping", formatter_class=fmt, help="check that an agent answers",
        description="Send the internal command `ping` and print `pong from G:N in X ms` "
                    "(X: the round trip client → Redis → controller → agent and back).",
        epilog=f"""\
examples:
  jsctl ping --gid 1 --nid 5
  jsctl ping --gid 1 --role web --fanout --timeout 5

{EXIT_CODES_HELP}""")
    _target_args(p)
    p.add_argument("--timeout", type=_nonneg_float, default=10.0, metavar="S",
                   help="seconds to wait for the pong (default 10); then exit 5")
    p.add_argument("--json", action="store_true", help="print each result as a JSON line")
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser(
        "agents", formatter_class=fmt, help="list the agents the controller knows",
        description="List agents: gid:nid, hostname, os, roles, when last seen and whether "
                    "online (seen within --online-within seconds).",
        epilog="examples:\n  jsctl agents\n  jsctl agents --json | jq '.[] | select(.online)'\n\n"
               "exit codes: 0 listed (also when empty), 6 cannot reach Redis.\n")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--online-within", type=_nonneg_float, default=60.0, metavar="S",
                   help="an agent is online when seen within S seconds (default 60)")
    p.set_defaults(func=cmd_agents)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if getattr(a, "fanout", False) and a.role is None:
        parser.error("--fanout needs --role")
    if a.func is cmd_exec and not [c for c in a.command if c != "--"]:
        parser.error("exec: no command given: jsctl exec [options] -- CMD [ARGS...]")
    try:
        client = Client(a.redis)
    except ValueError as e:
        parser.error(str(e))
    try:
        return a.func(client, a)
    except RedisUnavailable as e:
        _err(str(e))
        return EXIT_REDIS
    except ValueError as e:
        # Caught by the client's validation before anything was sent.
        _err(f"error: {e}")
        return EXIT_USAGE
    except JsaccError as e:
        _err(str(e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _err("interrupted (a submitted job goes on running)")
        return EXIT_INTERRUPTED
    except OSError as e:  # e.g. --data-file not readable
        _err(str(e))
        return EXIT_USAGE
    finally:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing must not hide the real outcome
            pass


if __name__ == "__main__":
    sys.exit(main())
