"""``jsctl``: the jsacc client from a shell (run ``jsctl --help``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from . import cli_procs
from .client import DEFAULT_URL, DEFAULT_WAIT_MS, INFO_COMMANDS, Client, Job
from .errors import JsaccError, RedisUnavailable, Timeout

from .cli_common import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_KILLED, EXIT_NO_RESULT, EXIT_OK,
                         EXIT_REDIS, EXIT_TIMEOUT, EXIT_USAGE, table)
from .cli_common import agent_of as _agent
from .cli_common import nonneg_float as _nonneg_float
from .cli_common import nonneg_int as _nonneg_int
from .cli_common import reason as _reason
from .cli_common import err as _err

_STATE_EXIT = {"OK": EXIT_OK, "ERROR": EXIT_ERROR, "TIMEOUT": EXIT_TIMEOUT, "KILLED": EXIT_KILLED}

EXIT_CODES_HELP = """\
exit codes:
  0  OK: the job ended OK (with --fanout: every agent's did)
  1  ERROR: the job failed or could not run (the reason, from the result's data, is on stderr)
  2  usage error (bad command line)
  3  TIMEOUT: the job was killed after its --max-time
  4  KILLED: the job was killed
  5  no result within --timeout (a client-side wait; the job may still run)
  6  cannot reach Redis (the message names the URL), or Redis did not confirm the command
     (the message names its job id: it may or may not have been queued)
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


def _write(stream: Any, text: str) -> None:
    if text:
        stream.write(text)
        if not text.endswith("\n"):
            stream.write("\n")
        stream.flush()


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
                         env=_parse_env(a.env), data=data, max_time=a.max_time, id=a.id,
                         max_restart=a.max_restart, recurring_period=a.every, queue=a.queue)
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
    print("\n".join(table(rows)))
    return EXIT_OK


def _format_log(m: Dict[str, Any]) -> str:
    epoch = m.get("epoch")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch / 1000.0))
            + f".{epoch % 1000:03d}") if isinstance(epoch, int) else "?"
    return f"{when} {m.get('gid')}:{m.get('nid')} L{m.get('level')} {m.get('jobid')} {m.get('data')}"


def cmd_logs(client: Client, a: argparse.Namespace) -> int:
    out = (lambda m: json.dumps(m)) if a.json else _format_log
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


def format_values(values: Dict[str, Any]) -> str:
    """A metric's values as ``k=v`` pairs in a fixed order (type and times left out), numbers
    kept short."""
    order = ["value", "sum", "rate", "count", "min", "max", "mean", "p50", "p90", "p99"]
    parts = []
    for k, v in sorted(values.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                       else len(order), kv[0])):
        if k in ("type", "epoch", "interval"):
            continue
        if isinstance(v, float):
            v = f"{v:.6g}"
        parts.append(f"{k}={v}")
    return " ".join(parts)


def cmd_stats(client: Client, a: argparse.Namespace) -> int:
    if a.history:
        batches = client.stats_batches(a.gid, a.nid, count=a.history)
        print(json.dumps(batches, indent=2))
        return EXIT_OK
    stats = {k: v for k, v in client.stats(a.gid, a.nid).items() if k.startswith(a.prefix)}
    if a.json:
        print(json.dumps(stats, indent=2))
        return EXIT_OK
    if not stats:
        _err(f"no stats from agent {a.gid}:{a.nid}" + (f" under {a.prefix!r}" if a.prefix else ""))
        return EXIT_OK
    now_ms = time.time() * 1000.0
    rows = [("KEY", "TYPE", "AGE", "VALUES")]
    for key, values in stats.items():
        age = _ago(max(0.0, (now_ms - float(values.get("epoch") or 0)) / 1000.0))
        rows.append((key, str(values.get("type", "?")), age, format_values(values)))
    print("\n".join(table(rows)))
    return EXIT_OK


def format_info(value: Any, indent: str = "") -> List[str]:
    """A host-facts document as indented ``key: value`` lines."""
    lines: List[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v and not all(
                    isinstance(x, (int, float, str)) for x in (v if isinstance(v, list) else [{}])):
                lines.append(f"{indent}{k}:")
                lines.extend(format_info(v, indent + "  "))
            elif isinstance(v, list):
                lines.append(f"{indent}{k}: {', '.join(str(x) for x in v)}")
            else:
                lines.append(f"{indent}{k}: {'-' if v is None else v}")
    elif isinstance(value, list):
        for item in value:
            sub = format_info(item, indent + "  ")
            if sub:
                lines.append(f"{indent}- {sub[0].strip()}")
                lines.extend(sub[1:])
    else:
        lines.append(f"{indent}{value}")
    return lines


def cmd_info(client: Client, a: argparse.Namespace) -> int:
    wanted = a.what or list(INFO_COMMANDS)
    docs: Dict[str, Any] = {}
    code = EXIT_OK
    # Submitted together, awaited one by one: the answers come in parallel.
    jobs = {w: client.cmd(INFO_COMMANDS[w], gid=a.gid, nid=a.nid) for w in wanted}
    for what, job in jobs.items():
        try:
            result = job.result(timeout=a.timeout)
        except Timeout as e:
            _err(str(e))
            code = EXIT_NO_RESULT
            continue
        if result.get("state") != "OK":
            _err(f"{INFO_COMMANDS[what]} on {_agent(result)} ended {result.get('state')}: "
                 f"{_reason(result)}")
            code = code or exit_code_for_state(result.get("state"))
            continue
        docs[what] = result.get("data")
    if a.json:
        print(json.dumps(docs if len(wanted) > 1 else docs.get(wanted[0]), indent=2))
    else:
        for what, doc in docs.items():
            if len(wanted) > 1:
                print(f"== {what}")
            print("\n".join(format_info(doc)))
    return code


# -- argument parsing -------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors: keep that, it is our documented code."""


def _info_what(text: str) -> str:
    if text not in INFO_COMMANDS:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(INFO_COMMANDS)})")
    return text


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
  jsctl stats 1 5
  jsctl info 1 5 mem
  echo hello | jsctl exec --gid 1 --nid 5 --data-file - -- cat
  jsctl exec --gid 1 --nid 5 --max-time -1 --max-restart 5 --domain ops --name web -- ./server
  jsctl ps --gid 1 --nid 5
  jsctl kill --gid 1 --nid 5 6f1c...
  jsctl logs ops backup -f
  JSACC_REDIS=redis://:secret@redis.example:6379 jsctl agents --json
  jsctl -r redis+sentinel://s1:26379,s2:26379,s3:26379/jsacc agents
  jsctl -r rediss+cluster://:secret@r1:6379,r2:6379 --redis-ca ca.pem ping --nid 5

Put `--` before the command so that its own options are not read as jsctl's.

{EXIT_CODES_HELP}""")
    parser.add_argument(
        "-r", "--redis", metavar="URL", default=os.environ.get("JSACC_REDIS", DEFAULT_URL),
        help="Redis of the cluster (env JSACC_REDIS; default %(default)s), one of: HOST:PORT; "
             "redis://[USER:PASS@]HOST:PORT[/DB]; unix:///PATH[?db=DB]; "
             "redis+sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/MASTER[/DB] (the primary "
             "the Sentinels name MASTER; followed across failovers); "
             "redis+cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...] (a Redis Cluster, any of its "
             "nodes). rediss:// rediss+sentinel:// rediss+cluster:// speak TLS (see "
             "--redis-ca). Percent-encode special characters in USER and PASS (@ is %%40); "
             "IPv6 hosts in brackets: [::1]:6379")
    parser.add_argument(
        "--redis-ca", metavar="PEM", default=os.environ.get("JSACC_REDIS_CA") or None,
        help="PEM file of the CA that signed the Redis servers' certificates, for the rediss "
             "forms when the system's trust store does not know it (env JSACC_REDIS_CA)")
    parser.add_argument(
        "--redis-wait-replicas", metavar="N", type=_nonneg_int,
        default=os.environ.get("JSACC_REDIS_WAIT_REPLICAS") or None,
        help="a command counts as submitted once N replicas hold a copy (WAIT N after the "
             "LPUSH, on the same connection; pushed again, up to 8 times, until they do, else "
             "exit 6 naming the job id). Default 1 for redis+sentinel and redis+cluster, 0 (no "
             "WAIT) for a single Redis (env JSACC_REDIS_WAIT_REPLICAS)")
    parser.add_argument(
        "--redis-wait-ms", metavar="MS", type=_nonneg_int,
        default=os.environ.get("JSACC_REDIS_WAIT_MS") or DEFAULT_WAIT_MS,
        help="how long each WAIT waits for the replicas, in ms (env JSACC_REDIS_WAIT_MS; "
             "default %(default)s)")
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
    p.add_argument("--max-restart", type=int, default=None, metavar="N",
                   help="restart a process that fails within 5 min of its start up to N times "
                        "(waits 1 s, doubling); then a critical alert and ERROR")
    p.add_argument("--every", type=int, default=None, metavar="S",
                   help="recurring: run every S seconds (never overlapping) until killed; "
                        "jsctl prints the first run's result")
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
    cli_procs.add_parsers(sub, fmt)

    p = sub.add_parser(
        "logs", formatter_class=fmt, help="show (and follow) the forwarded logs of a process",
        description="Print the last messages agents forwarded for process DOMAIN/NAME (the Redis "
                    "stream log.DOMAIN.NAME: the levels each job's loglevels_ac selects, by default "
                    "7-9), one per line: time, agent, level, job id, text. With -f, keep printing "
                    "new ones as they arrive (Ctrl-C to stop).",
        epilog="examples:\n  jsctl logs ops backup\n  jsctl logs ops backup -f -n 0\n"
               "  jsctl logs ops backup --json | jq -r .data\n\n"
               "exit codes: 0 printed, 6 cannot reach Redis, 130 interrupted (-f).\n")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true", help="follow new messages")
    p.add_argument("-n", "--count", type=int, default=20, metavar="N",
                   help="how many of the last messages to print first (default 20)")
    p.add_argument("--json", action="store_true", help="print each message as a JSON line")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "stats", formatter_class=fmt, help="show an agent's latest aggregated stats",
        description="Show the latest aggregated stats of agent GID:NID (the Redis hash "
                    "stats:{GID:NID}:latest): one line per metric with its type, the age of its "
                    "last flush and its values (counter: sum, rate/s; gauge: value; timer and "
                    "histogram: count, sum, min, max, mean, p50, p90, p99; set: count).",
        epilog="examples:\n  jsctl stats 1 5\n  jsctl stats 1 5 --prefix ops.web.\n"
               "  jsctl stats 1 5 --history 3      # the last 3 flushed batches as JSON\n\n"
               "exit codes: 0 shown (also when empty), 6 cannot reach Redis.\n")
    p.add_argument("gid", type=int, metavar="GID", help="grid id of the agent")
    p.add_argument("nid", type=int, metavar="NID", help="node id of the agent")
    p.add_argument("--prefix", default="", metavar="P", help="only metrics whose key starts with P")
    p.add_argument("--json", action="store_true", help="print the metrics as a JSON object")
    p.add_argument("--history", type=int, default=0, metavar="N",
                   help="print the last N batches of the stream stats:{GID:NID} as JSON instead")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser(
        "info", formatter_class=fmt, help="show an agent's host facts (os, cpu, mem, disk, nic)",
        description="Ask agent GID:NID for host facts (the internal commands get_os_info, "
                    "get_cpu_info, get_mem_info, get_disk_info, get_nic_info) and print them; "
                    "all five without WHAT.",
        epilog=f"""\
examples:
  jsctl info 1 5
  jsctl info 1 5 mem disk
  jsctl info 1 5 nic --json | jq '.nics[].mac'

{EXIT_CODES_HELP}""")
    p.add_argument("gid", type=int, metavar="GID", help="grid id of the agent")
    p.add_argument("nid", type=int, metavar="NID", help="node id of the agent")
    # Not `choices`: with nargs="*" Python < 3.12 refuses the empty default.
    p.add_argument("what", nargs="*", type=_info_what, metavar="WHAT",
                   help="os, cpu, mem, disk or nic (several allowed; default all)")
    p.add_argument("--timeout", type=_nonneg_float, default=30.0, metavar="S",
                   help="seconds to wait for each answer (default 30); then exit 5")
    p.add_argument("--json", action="store_true",
                   help="print the documents as JSON (an object by WHAT when several)")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if getattr(a, "fanout", False) and a.role is None:
        parser.error("--fanout needs --role")
    if a.func is cmd_exec and not [c for c in a.command if c != "--"]:
        parser.error("exec: no command given: jsctl exec [options] -- CMD [ARGS...]")
    try:
        client = Client(a.redis, ca=a.redis_ca, wait_replicas=a.redis_wait_replicas,
                        wait_ms=a.redis_wait_ms)
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
