"""``jsctl``: the jsacc client from a shell (run ``jsctl --help``).

One module per command, each holding its parser (``add_parser(subparsers)``) beside its
handler (``run(client, args) -> exit code``) and, when argparse cannot check everything,
``check_args(args) -> problem``:

* :mod:`.execute` ``exec``, :mod:`.job` ``job`` (and ``job follow``), :mod:`.jobs` ``jobs``,
  :mod:`.ping` ``ping``, :mod:`.agents` ``agents``, :mod:`.ps` ``ps``, :mod:`.kill` ``kill``,
  :mod:`.logs` ``logs``, :mod:`.stats` ``stats``, :mod:`.info` ``info``, :mod:`.audit` ``audit``,
  :mod:`.cp` ``cp``.

Shared by them: :mod:`.args` (argument types, ``--gid``/``--nid``/``--role`` options),
:mod:`.output` (error line, tables, result summaries), :mod:`.exits` (exit codes),
:mod:`.watch` (printing a job's live lines while its results come). This module
assembles the parser (global ``--redis*`` options) and runs the chosen command.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from redis.exceptions import NoPermissionError

from ..client import DEFAULT_URL, DEFAULT_WAIT_MS, Client
from ..errors import JsaccError, RedisUnavailable
from ..target import mask_url
from . import agents, audit, cp, execute, info, job, jobs, kill, logs, ping, ps, stats
from .args import nonneg_int
from .exits import (EXIT_CODES_HELP, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_REDIS, EXIT_USAGE,
                    exit_code_for_results, exit_code_for_state)
from .output import err

__all__ = ["main", "build_parser", "exit_code_for_state", "exit_code_for_results"]

#: The commands, in the order `jsctl --help` lists them.
COMMANDS = (execute, job, jobs, ping, agents, ps, kill, logs, stats, info, audit, cp)

_EPILOG = f"""\
examples:
  jsctl agents
  jsctl ping --gid 1 --nid 5
  jsctl exec --gid 1 --nid 5 -- /bin/ls -l /opt
  jsctl exec --gid 1 --nid 5 --max-time 60 --timeout 90 -- sh -c 'df -h | tail -1'
  jsctl exec --gid 1 --role web --fanout --json -- uptime
  id=$(jsctl exec --nid 5 --detach -- ./backup.sh); jsctl job follow "$id"
  jsctl jobs --agent 1:5 --state ERROR --since 1h
  jsctl job 6f1c...
  jsctl stats --gid 1 --nid 5
  jsctl info --gid 1 --nid 5 mem
  echo hello | jsctl exec --gid 1 --nid 5 --data-file - -- cat
  jsctl exec --gid 1 --nid 5 --max-time -1 --max-restart 5 --domain ops --name web -- ./server
  jsctl ps --gid 1 --nid 5
  jsctl kill --gid 1 --nid 5 6f1c...
  jsctl logs ops backup -f
  jsctl cp ./app.toml 1:5:/etc/app/app.toml --mode 0640
  jsctl cp 1:5:/var/log/app.log ./
  JSACC_REDIS=redis://:secret@redis.example:6379 jsctl agents --json
  jsctl -r redis+sentinel://s1:26379,s2:26379,s3:26379/jsacc agents
  jsctl -r rediss+cluster://:secret@r1:6379,r2:6379 --redis-ca ca.pem ping --nid 5

Put `--` before the command so that its own options are not read as jsctl's.

{EXIT_CODES_HELP}"""


def _add_redis_options(parser: argparse.ArgumentParser) -> None:
    """-r/--redis and the other options of the connection to the cluster's Redis."""
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
        "--redis-wait-replicas", metavar="N", type=nonneg_int,
        default=os.environ.get("JSACC_REDIS_WAIT_REPLICAS") or None,
        help="a command counts as submitted once N replicas hold a copy (WAIT N after the "
             "LPUSH, on the same connection; pushed again, up to 8 times, until they do, else "
             "exit 6 naming the job id). Default 1 for redis+sentinel and redis+cluster, 0 (no "
             "WAIT) for a single Redis (env JSACC_REDIS_WAIT_REPLICAS)")
    parser.add_argument(
        "--redis-wait-ms", metavar="MS", type=nonneg_int,
        default=os.environ.get("JSACC_REDIS_WAIT_MS") or DEFAULT_WAIT_MS,
        help="how long each WAIT waits for the replicas, in ms (env JSACC_REDIS_WAIT_MS; "
             "default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """jsctl's whole command line: the Redis options and one subcommand per command module.
    (argparse exits 2 on usage errors: that is our documented code.)"""
    parser = argparse.ArgumentParser(
        prog="jsctl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run commands on jsacc agents and list them, through the cluster's Redis.",
        epilog=_EPILOG)
    _add_redis_options(parser)
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _parse(parser: argparse.ArgumentParser,
           argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The command line, checked (exits 2 with a usage message when wrong)."""
    a = parser.parse_args(argv)
    if getattr(a, "fanout", False) and a.role is None:
        parser.error("--fanout needs --role")
    check_args = getattr(a, "check_args", None)
    problem = check_args(a) if check_args is not None else None
    if problem:
        parser.error(problem)
    return a


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``jsctl`` with ``argv`` (default: ``sys.argv[1:]``); returns its exit code."""
    parser = build_parser()
    a = _parse(parser, argv)
    try:
        client = Client(a.redis, ca=a.redis_ca, wait_replicas=a.redis_wait_replicas,
                        wait_ms=a.redis_wait_ms)
    except ValueError as e:
        parser.error(str(e))
    try:
        return a.func(client, a)
    except RedisUnavailable as e:
        err(str(e))
        return EXIT_REDIS
    except NoPermissionError as e:
        # A Redis user whose ACL lacks a key or command this needs (deploy/redis/users.acl).
        err(f"Redis at {mask_url(a.redis)} refused: {e}")
        return EXIT_ERROR
    except ValueError as e:
        # Caught by the client's validation before anything was sent.
        err(f"error: {e}")
        return EXIT_USAGE
    except JsaccError as e:
        err(str(e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        err("interrupted (a submitted job goes on running)")
        return EXIT_INTERRUPTED
    except OSError as e:  # e.g. --data-file not readable
        err(str(e))
        return EXIT_USAGE
    finally:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing must not hide the real outcome
            pass
