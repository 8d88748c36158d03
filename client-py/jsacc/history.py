"""Job history: listing the jobs the controller indexed when it routed them (DESIGN §11).

The indexes are sorted sets (score = when the controller routed the job, ms; member = job id):
``jobs:all``, ``jobs:agent:<gid>:<nid>`` and ``jobs:name:<domain>/<name>``. The controller
trims entries older than its ``--result-ttl``; a member whose ``job:<id>`` expired meanwhile is
skipped.

:func:`list_jobs` reads one index newest first, a page of ids at a time, reads the summary
fields of the page's records in one pipeline (``HMGET``, one key per command, so a cluster
splits it by node), keeps those that match the filters and stops at ``limit``, at the end of the
index, or after ``SCAN_BUDGET`` ids (the result then says so). Pages follow each other by
score, not by offset, so a deep scan costs Redis O(N log N), not O(N²). The agents' states of
the jobs kept are read in a second pipeline; the results (which can be large) are not read:
:meth:`jsacc.Job.record` has them.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import (TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple,
                    Union)

from .job import STATES as _STATES
from .keys import JOBS_ALL, job_key, jobs_agent_key, jobs_name_key, parse_agent_id
from .records import JOB_SUMMARY_FIELDS, STATE_FIELD_PREFIX, decode, job_record
from .validate import check_int

if TYPE_CHECKING:
    from .client import Client

#: Most ids read from an index at a time (pages grow from ``max(limit, 100)`` to this).
MAX_PAGE = 1000

#: Most ids one listing reads from an index: a filter that matches few jobs of a large index
#: stops here instead of reading all of it (:attr:`JobList.truncated` then says so).
SCAN_BUDGET = 100_000

Since = Union[int, float, _dt.datetime, None]


class JobList(List[Dict[str, Any]]):
    """The records a listing found (a list), with how much of the index it read."""

    def __init__(self, records: List[Dict[str, Any]], scanned: int, truncated: bool):
        super().__init__(records)
        #: How many ids of the index were read.
        self.scanned = scanned
        #: True when the listing stopped at ``SCAN_BUDGET`` ids, before ``limit`` matched and
        #: before the index ended: older matches may exist (narrow with ``since``, ``agent``
        #: or ``name``).
        self.truncated = truncated


def check_agent(agent: Union[str, Tuple[int, int], None]) -> Optional[str]:
    """An agent filter (``"gid:nid"`` or ``(gid, nid)``) as ``"gid:nid"``."""
    if agent is None:
        return None
    if isinstance(agent, tuple):
        agent = ":".join(str(x) for x in agent)
    try:
        gid, nid = parse_agent_id(str(agent))
    except ValueError:
        raise ValueError(f"agent must be GID:NID (two integers), got {agent!r}") from None
    if gid < 0 or nid < 0:
        raise ValueError(f"agent must be GID:NID with ids >= 0, got {agent!r}")
    return f"{gid}:{nid}"


def check_states(state: Union[str, Sequence[str], None]) -> Optional[Tuple[str, ...]]:
    """A state filter (one state or several, any case) as a tuple of upper-case states."""
    if state is None:
        return None
    states = (state,) if isinstance(state, str) else tuple(state)
    out = tuple(str(s).upper() for s in states)
    bad = [s for s in out if s not in _STATES]
    if bad or not out:
        raise ValueError(f"unknown job state {', '.join(bad) or '(none)'}: one of "
                         f"{', '.join(_STATES)}")
    return out


def check_name(name: Optional[str]) -> Optional[str]:
    """A name filter: ``"domain/name"`` (the index ``jobs:name:<domain>/<name>``)."""
    if name is None:
        return None
    if not isinstance(name, str) or "/" not in name or name.endswith("/"):
        raise ValueError(f"name must be DOMAIN/NAME, got {name!r}")
    return name


def since_ms(since: Since, now: Optional[float] = None) -> Optional[int]:
    """The oldest ``created`` (ms since the epoch) a listing keeps: ``since`` seconds before
    ``now`` (default: this machine's clock), or a ``datetime`` (naive = local time)."""
    if since is None:
        return None
    if isinstance(since, _dt.datetime):
        return int(since.timestamp() * 1000)
    if isinstance(since, bool) or not isinstance(since, (int, float)) or since < 0:
        raise ValueError(f"since must be seconds >= 0 or a datetime, got {since!r}")
    return int(((time.time() if now is None else now) - since) * 1000)


def matches(record: Dict[str, Any], agent: Optional[str], states: Optional[Tuple[str, ...]],
            name: Optional[str]) -> bool:
    """Whether a job record passes the filters (the index read covers one of them already)."""
    if states is not None and record.get("state") not in states:
        return False
    if agent is not None and agent not in record.get("targets", []):
        return False
    return name is None or f"{record.get('domain')}/{record.get('name')}" == name


def _summaries(client: Client, ids: List[str]) -> List[Optional[Dict[str, Any]]]:
    """The summary records of ``ids`` (``None`` for an expired one), one pipeline."""
    def read() -> List[Any]:
        pipe = client.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), list(JOB_SUMMARY_FIELDS))
        return pipe.execute()

    rows = client._call(read) if ids else []
    return [job_record(job_id, dict(zip(JOB_SUMMARY_FIELDS, row)))
            for job_id, row in zip(ids, rows)]


def _add_agent_states(client: Client, records: List[Dict[str, Any]]) -> None:
    """Fill in each record's per-agent states (``state:<gid>:<nid>``), one pipeline."""
    asked = [r for r in records if r["targets"]]

    def read() -> List[Any]:
        pipe = client.redis.pipeline(transaction=False)
        for r in asked:
            pipe.hmget(job_key(r["id"]), [STATE_FIELD_PREFIX + t for t in r["targets"]])
        return pipe.execute()

    for r, states in zip(asked, client._call(read) if asked else []):
        for target, state in zip(r["targets"], states):
            r["agents"][target]["state"] = decode(state)


def _pages(client: Client, key: str, low: Any, first: int,
           budget: int) -> Iterator[List[str]]:
    """The ids of index ``key`` with a score >= ``low``, newest first, a page at a time (the
    first ``first`` long, then doubling up to ``MAX_PAGE``), at most ``budget`` in all.

    Each page starts at the score where the last one ended (``ZRANGE … BYSCORE REV`` from that
    score, inclusive), skipping the ids of that score it already returned with ``LIMIT`` —
    so Redis walks only the ties, not every id before the page. ``ZRANGE … BYSCORE REV LIMIT``
    (Redis 6.2, as the controller's BLMOVE) is a command a read-only client ACL already grants
    (+zrange; deploy/redis/users.acl). A job routed meanwhile scores higher: not seen, never a
    cause of a repeat or a miss."""
    high: Any = "+inf"
    tied: Set[str] = set()  # the ids returned so far whose score is ``high``
    page, read = first, 0
    while read < budget:
        num = min(page, budget - read)
        rows = client._call(lambda: client.redis.zrange(
            key, high, low, desc=True, byscore=True, offset=len(tied), num=num,
            withscores=True))
        read += len(rows)
        ids = [i for i in (decode(m) for m, _ in rows) if i not in tied]
        if ids:
            yield ids
        if len(rows) < num:
            return
        last = rows[-1][1]
        if last != high:
            high, tied = last, set()
        tied.update(decode(m) for m, score in rows if score == last)
        page = min(page * 2, MAX_PAGE)


def list_jobs(client: Client, agent: Union[str, Tuple[int, int], None] = None,
              state: Union[str, Sequence[str], None] = None, name: Optional[str] = None,
              since: Since = None, limit: int = 50) -> JobList:
    """The newest ``limit`` jobs that match, newest first (see :meth:`jsacc.Client.jobs`)."""
    agent, states, name = check_agent(agent), check_states(state), check_name(name)
    limit = check_int("limit", limit, 1)
    oldest = since_ms(since)
    # The name index is usually the smaller one; the other filters are checked on the records.
    key = (jobs_name_key(*name.split("/", 1)) if name else jobs_agent_key(agent) if agent
           else JOBS_ALL)
    low: Any = "-inf" if oldest is None else oldest
    out: List[Dict[str, Any]] = []
    scanned, budget = 0, SCAN_BUDGET
    for ids in _pages(client, key, low, min(max(limit, 100), MAX_PAGE), budget):
        scanned += len(ids)
        for record in _summaries(client, ids):
            if record is not None and matches(record, agent, states, name):
                out.append(record)
        if len(out) >= limit:
            break
    out = out[:limit]
    _add_agent_states(client, out)
    return JobList(out, scanned, truncated=len(out) < limit and scanned >= budget)
