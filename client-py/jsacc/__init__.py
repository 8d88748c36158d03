"""Python client of jsacc, the job-controller cluster.

    >>> import jsacc
    >>> c = jsacc.Client("redis://127.0.0.1:6379")
    >>> job = c.execute("/bin/echo", ["hi"], gid=1, nid=1)
    >>> job.result(timeout=30)["streams"][0]
    'hi\\n'

See README.md for the API and the ``jsctl`` command line.
"""

from .client import (
    DEFAULT_URL,
    DEFAULT_WAIT_MS,
    FINAL_STATES,
    INFO_COMMANDS,
    STATES,
    Client,
    Job,
    agent_key,
    build_command,
    build_execute_args,
    job_key,
    result_key,
    stats_key,
    stats_latest_key,
)
from .errors import JsaccError, PushUnconfirmed, RedisUnavailable, Timeout
from .target import RedisTarget, parse_target

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Job",
    "JsaccError",
    "Timeout",
    "RedisUnavailable",
    "PushUnconfirmed",
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
]
