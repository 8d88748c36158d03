"""Every Redis key the client reads or writes, built (and parsed) only here.

The names are the contract of DESIGN.md §4 (no key prefix):

* ``cmds_queue`` (list): submitted commands, ``LPUSH``-ed by clients;
* ``cmds_queue_<id>`` (list): the results of job ``<id>``, one per target agent;
* ``job:<id>`` (hash): the controller's record of a job: ``state``, ``targets`` (JSON list of
  ``"gid:nid"``), ``result:<gid>:<nid>``;
* ``agents`` (sorted set, member ``"gid:nid"``, score = last seen ms) and ``agent:{<gid>:<nid>}``
  (hash) describe agents;
* ``log.<domain>.<name>`` (stream): log messages agents forwarded (``loglevels_ac``);
* ``stats:{<gid>:<nid>}`` (stream) and ``stats:{<gid>:<nid>}:latest`` (hash): aggregated stats;
* ``output:<id>`` (stream): the lines job ``<id>`` prints, as they come (DESIGN §11);
* ``jobs:all``, ``jobs:agent:<gid>:<nid>``, ``jobs:name:<domain>/<name>`` (sorted sets, score =
  the job's ``created`` ms, member = job id): the job history the controller indexes when it
  routes a command.

The braces are Redis Cluster hash tags: the keys of one agent live in one slot.
"""

from __future__ import annotations

from typing import Tuple

CMDS_QUEUE = "cmds_queue"
AGENTS_KEY = "agents"
#: The audit trail (stream): who changed agent tokens and accounts, when, from where.
AUDIT_KEY = "audit"

#: The history of every job (sorted set: member job id, score its ``created`` ms).
JOBS_ALL = "jobs:all"

#: Prefix of the ``job:<id>`` fields that hold one agent's result (``result:<gid>:<nid>``).
RESULT_FIELD_PREFIX = "result:"


def result_key(job_id: str) -> str:
    """``cmds_queue_<id>``: the list the results of job ``job_id`` are pushed onto."""
    return f"cmds_queue_{job_id}"


def job_key(job_id: str) -> str:
    """``job:<id>``: the controller's record of job ``job_id``."""
    return f"job:{job_id}"


def output_key(job_id: str) -> str:
    """``output:<id>``: the stream of the lines job ``job_id`` printed (fields ``agent``, ``fd``,
    ``level``, ``line``, ``time``)."""
    return f"output:{job_id}"


def jobs_agent_key(agent: str) -> str:
    """``jobs:agent:<gid>:<nid>``: the history of the jobs sent to agent ``agent``
    (``"gid:nid"``)."""
    return f"jobs:agent:{agent}"


def jobs_name_key(domain: str, name: str) -> str:
    """``jobs:name:<domain>/<name>``: the history of the jobs of process ``domain``/``name``."""
    return f"jobs:name:{domain}/{name}"


def log_key(domain: str, name: str) -> str:
    """``log.<domain>.<name>``: the stream of forwarded log messages of that process."""
    return f"log.{domain}.{name}"


def agent_key(gid: int, nid: int) -> str:
    """``agent:{<gid>:<nid>}``: the hash describing one agent (braces = Redis Cluster hash tag)."""
    return f"agent:{{{gid}:{nid}}}"


def stats_key(gid: int, nid: int) -> str:
    """``stats:{<gid>:<nid>}``: the stream of the agent's flushed stats batches (field
    ``batch``)."""
    return f"stats:{{{gid}:{nid}}}"


def stats_latest_key(gid: int, nid: int) -> str:
    """``stats:{<gid>:<nid>}:latest``: metric key → JSON of its latest aggregated values."""
    return f"stats:{{{gid}:{nid}}}:latest"


def parse_agent_id(text: str) -> Tuple[int, int]:
    """``"gid:nid"`` (a member of ``agents``, an entry of a job's ``targets``) as
    ``(gid, nid)``; ``ValueError`` when it is not two integers."""
    gid, nid = (int(x) for x in text.split(":", 1))
    return gid, nid
