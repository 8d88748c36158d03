"""Python client of jsacc, the job-controller cluster.

    >>> import jsacc
    >>> c = jsacc.Client("redis://127.0.0.1:6379")
    >>> job = c.execute("/bin/echo", ["hi"], gid=1, nid=1)
    >>> job.result(timeout=30)["streams"][0]
    'hi\\n'

See README.md for the API and the ``jsctl`` command line.

Modules, one noun each: :mod:`jsacc.client` (``Client``: submitting, reading), :mod:`jsacc.job`
(``Job``: a submitted command's record, results and live output), :mod:`jsacc.history` (the job
history behind ``Client.jobs``), :mod:`jsacc.display` (how live output lines are shown),
:mod:`jsacc.command` (building commands), :mod:`jsacc.files` (file transfer in chunks),
:mod:`jsacc.validate` (checks of caller values), :mod:`jsacc.keys` (every Redis key name),
:mod:`jsacc.records` (Redis replies as dicts), :mod:`jsacc.connection` (redis-py clients and the
failover policy), :mod:`jsacc.target` (Redis target URLs), :mod:`jsacc.errors` (exceptions),
:mod:`jsacc.cli` (``jsctl``, one module per command).
"""

from .client import DEFAULT_URL, DEFAULT_WAIT_MS, Client
from .command import INFO_COMMANDS, build_command, build_execute_args
from .errors import (FileTransferError, JsaccError, PushUnconfirmed, RedisUnavailable, Timeout,
                     UnknownJob)
from .job import FINAL_STATES, STATES, Job
from .display import LineDisplay
from .keys import agent_key, job_key, output_key, result_key, stats_key, stats_latest_key
from .target import RedisTarget, parse_target

#: The package's version, the only place it is written (pyproject.toml reads it via hatch).
__version__ = "0.1.0"

__all__ = [
    "Client",
    "Job",
    "JsaccError",
    "Timeout",
    "UnknownJob",
    "RedisUnavailable",
    "PushUnconfirmed",
    "FileTransferError",
    "RedisTarget",
    "parse_target",
    "DEFAULT_WAIT_MS",
    "DEFAULT_URL",
    "STATES",
    "FINAL_STATES",
    "build_command",
    "build_execute_args",
    "result_key",
    "job_key",
    "agent_key",
    "stats_key",
    "stats_latest_key",
    "INFO_COMMANDS",
    "LineDisplay",
    "output_key",
]
