"""The jsacc client: push commands into Redis, wait for their results.

Everything here follows the Redis contract of DESIGN.md §4 exactly (no key prefix):

* ``LPUSH cmds_queue <command JSON>`` submits a command (DESIGN §3);
* ``BLPOP cmds_queue_<id>`` takes the results, one per target agent;
* ``job:<id>`` (hash) holds ``state``, ``targets`` (JSON list of ``"gid:nid"``), ``result:<g>:<n>``;
* ``agents`` (sorted set, score = last seen ms) and ``agent:{<gid>:<nid>}`` (hash) describe agents;
* ``log.<domain>.<name>`` (stream) holds the log messages agents forwarded (``loglevels_ac``).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    TypeVar, Union)

import redis as _redis
from redis import exceptions as _redis_errors
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from .errors import JsaccError, PushUnconfirmed, RedisUnavailable, Timeout
from .target import CLUSTER, SENTINEL, STANDALONE, UNIX, RedisTarget, mask_url, parse_target

_T = TypeVar("_T")

DEFAULT_URL = "redis://127.0.0.1:6379"

#: Redis keys of DESIGN.md §4.
CMDS_QUEUE = "cmds_queue"
AGENTS_KEY = "agents"

#: States a job record can be in; the last four are final (and the only ones a result carries).
STATES = ("QUEUED", "RUNNING", "OK", "ERROR", "TIMEOUT", "KILLED")
FINAL_STATES = ("OK", "ERROR", "TIMEOUT", "KILLED")

#: Longest single blocking Redis call, in seconds. redis-py 8 defaults ``socket_timeout`` to 5 s:
#: a ``BLPOP`` that blocks longer than the socket timeout dies with a ``TimeoutError`` (and the
#: connection is dropped). So instead of one long ``BLPOP`` we block in chunks of at most this
#: many seconds until the caller's deadline. This keeps working whatever ``socket_timeout`` the
#: caller configures (the chunk is shrunk below it, see ``Client._chunk``), costs one round trip
#: every 2 s of waiting, and needs no second connection with different settings.
MAX_BLOCK_CHUNK = 2.0

#: A push waits (``WAIT``) this long for replicas by default, in ms.
DEFAULT_WAIT_MS = 500
#: How many times an operation is retried after a failover-type error (connection lost,
#: ``READONLY``, ``CLUSTERDOWN``, ``TRYAGAIN``, ``MOVED``...) on a Sentinel or Cluster target,
#: and the first pause (doubling, at most ``MAX_RETRY_BACKOFF``). 8 retries from 0.2 s wait
#: 0.2+0.4+0.8+1.6+2+2+2+2 = 11 s: measured, a Sentinel failover with
#: ``down-after-milliseconds 1000`` under a running controller takes 3-6 s until the promoted
#: primary's replica confirms a WAIT again; short enough that a Redis that is really gone is
#: reported within seconds. A longer ``down-after-milliseconds`` needs more ``retries``.
DEFAULT_RETRIES = 8
DEFAULT_RETRY_BACKOFF = 0.2
MAX_RETRY_BACKOFF = 2.0

#: Errors after which the same operation may succeed a moment later: the primary is gone or
#: being replaced (connection errors, a demoted primary's READONLY, a Sentinel that names no
#: primary yet, a cluster whose slots are moving). Authentication errors are ConnectionErrors
#: too in redis-py, but retrying a wrong password only delays its message: they are excluded.
_RETRYABLE = (
    _redis_errors.ConnectionError,
    _redis_errors.TimeoutError,
    _redis_errors.ReadOnlyError,
    _redis_errors.ClusterDownError,
    _redis_errors.TryAgainError,
    _redis_errors.MovedError,
    _redis_errors.AskError,
    _redis_errors.ClusterError,
    _redis_errors.RedisClusterException,
)
_NOT_RETRYABLE = (_redis_errors.AuthenticationError, _redis_errors.AuthorizationError)

# Job ids travel in URLs (`ack=<id>,<id>`) and Redis keys: no commas, whitespace or control chars.
_ID_BAD = re.compile(r"[,\s\x00-\x1f\x7f-\x9f]")


def result_key(job_id: str) -> str:
    """``cmds_queue_<id>``: the list the results of job ``job_id`` are pushed onto."""
    return f"cmds_queue_{job_id}"


def job_key(job_id: str) -> str:
    """``job:<id>``: the controller's record of job ``job_id``."""
    return f"job:{job_id}"


def log_key(domain: str, name: str) -> str:
    """``log.<domain>.<name>``: the stream of forwarded log messages of that process."""
    return f"log.{domain}.{name}"


#: Fields of a stream entry that are integers (DESIGN §3 log message, plus gid and nid).
_LOG_INT_FIELDS = ("id", "epoch", "level", "gid", "nid")


def _log_entry(stream_id: Any, fields: Mapping[Any, Any]) -> Dict[str, Any]:
    """A stream entry as a dict: the message's fields (integers as ints) and ``stream_id``."""
    msg: Dict[str, Any] = {_decode(k): _decode(v) for k, v in fields.items()}
    for field in _LOG_INT_FIELDS:
        value = msg.get(field)
        if isinstance(value, str) and value.lstrip("-").isdigit():
            msg[field] = int(value)
    msg["stream_id"] = _decode(stream_id)
    return msg


def agent_key(gid: int, nid: int) -> str:
    """``agent:{<gid>:<nid>}``: the hash describing one agent (braces = Redis Cluster hash tag)."""
    return f"agent:{{{gid}:{nid}}}"


def stats_key(gid: int, nid: int) -> str:
    """``stats:{<gid>:<nid>}``: the stream of the agent's flushed stats batches (field ``batch``)."""
    return f"stats:{{{gid}:{nid}}}"


def stats_latest_key(gid: int, nid: int) -> str:
    """``stats:{<gid>:<nid>}:latest``: metric key → JSON of its latest aggregated values."""
    return f"stats:{{{gid}:{nid}}}:latest"


#: The host-fact internal commands (DESIGN §6.2) by short name, as ``jsctl info`` takes them.
INFO_COMMANDS = {"os": "get_os_info", "cpu": "get_cpu_info", "mem": "get_mem_info",
                 "disk": "get_disk_info", "nic": "get_nic_info"}


# --------------------------------------------------------------------------------------------
# Building commands (pure functions: no Redis needed, unit-tested on their own)
# --------------------------------------------------------------------------------------------

def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def new_id() -> str:
    """A fresh job id: a UUID4 as 32 hex digits."""
    return uuid.uuid4().hex


def check_id(job_id: Any) -> str:
    """Validate a client-chosen job id (non-empty string, at most 200 chars, no comma,
    whitespace or control character) and return it."""
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"id must be a non-empty string, got {job_id!r}")
    if len(job_id) > 200:
        raise ValueError(f"id is longer than 200 characters ({len(job_id)})")
    if _ID_BAD.search(job_id):
        raise ValueError(f"id must not contain commas, whitespace or control characters: {job_id!r}")
    return job_id


def build_command(
    cmd: str,
    args: Optional[Mapping[str, Any]] = None,
    data: Any = None,
    gid: int = 0,
    nid: Optional[int] = None,
    role: Optional[str] = None,
    fanout: bool = False,
    id: Optional[str] = None,  # noqa: A002 - the contract's field name
) -> Dict[str, Any]:
    """Build a command dict (DESIGN §3) and validate what is obviously wrong.

    Exactly one of ``nid`` (one node) and ``role`` (any live agent of that role in grid
    ``gid``; with ``fanout=True`` every one of them) must be given. ``data`` is omitted when
    ``None``. Raises ``ValueError`` naming the problem.
    """
    if not isinstance(cmd, str) or not cmd:
        raise ValueError(f"cmd must be a non-empty string, got {cmd!r}")
    _check_int("gid", gid, 0)
    if nid is None and role is None:
        raise ValueError("no target: give nid (one node) or role (agents of that role)")
    if nid is not None and role is not None:
        raise ValueError("give either nid or role, not both")
    if nid is not None:
        _check_int("nid", nid, 0)
    if role is not None and (not isinstance(role, str) or not role):
        raise ValueError(f"role must be a non-empty string, got {role!r}")
    if not isinstance(fanout, bool):
        raise ValueError(f"fanout must be True or False, got {fanout!r}")
    if fanout and role is None:
        raise ValueError("fanout needs role (fanout=True sends to every agent of that role)")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise ValueError(f"args must be a dict, got {type(args).__name__}")
    job_id = new_id() if id is None else check_id(id)

    command: Dict[str, Any] = {"id": job_id, "gid": gid}
    if nid is not None:
        command["nid"] = nid
    else:
        command["role"] = role
        if fanout:
            command["fanout"] = True
    command["cmd"] = cmd
    command["args"] = dict(args)
    if data is not None:
        command["data"] = data
    try:
        json.dumps(command)
    except (TypeError, ValueError) as e:
        raise ValueError(f"command is not JSON-serializable (args or data): {e}") from None
    return command


def _str_arg(name: str, value: Any) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        raise ValueError(f"{name} must be text, not bytes: {value!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return str(value)


def build_execute_args(
    cmd: Optional[Union[str, "os.PathLike[str]"]] = None,
    args: Iterable[Any] = (),
    domain: str = "",
    name: str = "",
    workingdir: Optional[str] = None,
    env: Optional[Mapping[str, Any]] = None,
    max_time: int = 0,
    **more_args: Any,
) -> Dict[str, Any]:
    """The ``args`` object of the execute family (DESIGN §3 table).

    ``cmd`` is the executable (full path or on PATH; no shell unless it is one), ``args`` its
    argument list (numbers and paths are turned into strings). ``more_args`` adds any other
    field of the table (``max_restart``, ``recurring_period``, ``queue``, ``loglevels``,
    ``max_wait``, ``script``, ...); ``None`` values are left out.
    """
    out: Dict[str, Any] = {"domain": domain, "name": name}
    if not isinstance(domain, str) or not isinstance(name, str):
        raise ValueError("domain and name must be strings")
    if cmd is not None:
        cmd = _str_arg("cmd", cmd)
        if not cmd:
            raise ValueError("cmd (the executable) must not be empty")
        out["cmd"] = cmd
    if isinstance(args, (str, bytes)):
        raise ValueError(f"args must be a list of strings, not one string: {args!r}")
    try:
        arg_list = [_str_arg(f"args[{i}]", a) for i, a in enumerate(args)]
    except TypeError:
        raise ValueError(f"args must be a list of strings, got {args!r}") from None
    if cmd is not None or arg_list:
        out["args"] = arg_list
    if workingdir is not None:
        out["workingdir"] = _str_arg("workingdir", workingdir)
    if env is not None:
        if not isinstance(env, Mapping):
            raise ValueError(f"env must be a dict of strings, got {type(env).__name__}")
        out["env"] = {str(k): _str_arg(f"env[{k!r}]", v) for k, v in env.items()}
    out["max_time"] = _check_int("max_time", max_time, -1)
    for key, value in more_args.items():
        if value is not None:
            out[key] = value
    return out


def _decode(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# --------------------------------------------------------------------------------------------
# Job
# --------------------------------------------------------------------------------------------

class Job:
    """A submitted command. Results are taken with :meth:`result` / :meth:`results`.

    ``BLPOP`` consumes a result from ``cmds_queue_<id>``: the results this object has taken are
    cached in it, so ``result()`` followed by ``results()`` returns the first one again. Another
    ``Job`` object (or another process) waiting on the same id competes for the same results;
    :meth:`stored_results` reads the copies kept in ``job:<id>`` without consuming anything.
    """

    def __init__(self, client: "Client", id: str, command: Optional[Dict[str, Any]] = None):  # noqa: A002
        self.client = client
        self.id = id
        #: The command as pushed (``None`` for a handle made with :meth:`Client.job`).
        self.command = command
        self._results: List[Dict[str, Any]] = []
        self._targets: Optional[List[str]] = None

    def __repr__(self) -> str:
        return f"<jsacc.Job {self.id} results={len(self._results)}>"

    # -- job record ---------------------------------------------------------------------------
    @property
    def state(self) -> Optional[str]:
        """``HGET job:<id> state``: QUEUED, RUNNING, OK, ERROR, TIMEOUT, KILLED, or ``None``
        while the controller has not routed the command yet (or the record expired)."""
        return _decode(self.client._call(lambda: self.client.redis.hget(job_key(self.id),
                                                                        "state")))

    @property
    def targets(self) -> Optional[List[str]]:
        """The ``"gid:nid"`` agents the controller routed the job to, ``None`` while unknown."""
        if self._targets is None:
            raw = _decode(self.client._call(lambda: self.client.redis.hget(job_key(self.id),
                                                                           "targets")))
            if raw:
                try:
                    targets = json.loads(raw)
                except ValueError:
                    raise JsaccError(f"job:{self.id} has invalid targets: {raw!r}") from None
                if isinstance(targets, list):
                    self._targets = [str(t) for t in targets]
        return self._targets

    def stored_results(self) -> Dict[str, Dict[str, Any]]:
        """The results recorded in ``job:<id>`` (``"gid:nid"`` → result), without consuming
        ``cmds_queue_<id>``; empty while none arrived."""
        record = self.client._call(lambda: self.client.redis.hgetall(job_key(self.id)))
        out = {}
        for field, value in record.items():
            field = _decode(field)
            if field.startswith("result:"):
                out[field[len("result:"):]] = json.loads(_decode(value))
        return out

    # -- results ------------------------------------------------------------------------------
    def _pop_one(self, deadline: Optional[float]) -> Optional[Dict[str, Any]]:
        """Take one result off ``cmds_queue_<id>``, waiting until ``deadline`` (monotonic
        seconds; ``None`` = forever) in chunks (see ``MAX_BLOCK_CHUNK``). ``None`` if none."""
        key = result_key(self.id)
        chunk = self.client._chunk

        def take() -> Any:
            # One key per call: on a cluster, BLPOP routes to that key's node.
            r = self.client.redis
            if deadline is None:
                return r.blpop([key], timeout=chunk)
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                # Deadline reached (or timeout=0): one last look without blocking.
                raw = r.lpop(key)
                return (key, raw) if raw is not None else False
            return r.blpop([key], timeout=min(remaining, chunk))

        while True:
            item = self.client._call(take)
            if item is False:
                return None
            if item is not None:
                raw = _decode(item[1])
                try:
                    result = json.loads(raw)
                except ValueError:
                    raise JsaccError(f"invalid result on {key}: {raw[:200]!r}") from None
                self._results.append(result)
                return result

    def _expected(self) -> Optional[int]:
        """How many results make the job complete: one per target; ``None`` while unknown."""
        targets = self.targets
        if targets is not None:
            return max(len(targets), 1)
        if self._results:
            # A command that could not be routed (unknown agent, bad JSON, ...) is answered with
            # one ERROR result, possibly without a job record carrying targets.
            return len(self._results)
        return None

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
        return time.monotonic() + timeout

    def _timeout(self, timeout: Optional[float]) -> Timeout:
        try:
            state = self.state
        except JsaccError:
            state = None
        hint = {None: "not routed yet: is a controller running?",
                "QUEUED": "queued: is the agent online?"}.get(state, "")
        return Timeout(f"no result for job {self.id} within {timeout} s "
                       f"(job state: {state or 'unknown'}{'; ' + hint if hint else ''})")

    def result(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The first result (a dict exactly as DESIGN §3: id, gid, nid, cmd, args, data,
        level, state, time, starttime, exit_code, streams, critical).

        Waits up to ``timeout`` seconds (``None`` = forever, ``0`` = just look) and raises
        :class:`jsacc.Timeout` if nothing arrived. The job's own outcome is in
        ``result["state"]``: a failed job is a normal result, not an exception.
        """
        if not self._results:
            if self._pop_one(self._deadline(timeout)) is None:
                raise self._timeout(timeout)
        return self._results[0]

    def next_result(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Take the next result off ``cmds_queue_<id>`` (waiting like :meth:`result`), for jobs
        that post more than one: each run of a recurring job posts its own result (``run`` = its
        number, ``final`` = False) until the job is killed, whose last result has no ``final``
        field. The list keeps the last 100."""
        result = self._pop_one(self._deadline(timeout))
        if result is None:
            raise self._timeout(timeout)
        return result

    def results(self, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """All results: one per target agent (the count is ``len(job:<id>.targets)``).

        Waits until every target answered or ``timeout`` seconds passed (``None`` = forever).
        On timeout it returns the results that did arrive (fewer than the targets: compare with
        :attr:`targets`), and raises :class:`jsacc.Timeout` only if none arrived at all.
        """
        return list(self.iter_results(timeout))

    def iter_results(self, timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Like :meth:`results`, but yields each result as soon as it arrives (those already
        taken first). Same rules: stops when every target answered or at ``timeout``; raises
        :class:`jsacc.Timeout` only if no result arrived at all."""
        deadline = self._deadline(timeout)
        yielded = 0
        while True:
            while yielded < len(self._results):
                yielded += 1
                yield self._results[yielded - 1]
            expected = self._expected()
            if expected is not None and len(self._results) >= expected:
                return
            if self._pop_one(deadline) is None:
                if self._results:
                    return
                raise self._timeout(timeout)

    def kill(self, timeout: Optional[float] = None) -> List["Job"]:
        """Send the internal command ``kill`` (``args.id`` = this job) to each agent running
        it; returns those kill jobs (their results say whether the kill worked). This job then
        ends ``KILLED`` with its own result."""
        targets = self.targets
        if targets is None and self.command is not None and "nid" in self.command:
            targets = [f"{self.command['gid']}:{self.command['nid']}"]
        if not targets:
            raise JsaccError(f"job {self.id}: targets unknown (not routed yet)")
        jobs = []
        for target in targets:
            g, n = (int(x) for x in target.split(":", 1))
            jobs.append(self.client.kill(self.id, gid=g, nid=n))
        return jobs


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------

class _SentinelConnection(Connection):
    """A connection to a Sentinel that sends the URL's credentials only if the Sentinel wants
    them.

    One URL carries one user/password: the data nodes need it; Sentinels are often run without
    a password (then ``AUTH`` is an error), sometimes with the same one. So: try with the
    credentials, and on an authentication error try once more without them. A Sentinel that
    does need other credentials then answers ``NOAUTH``, which names the problem.
    """

    def on_connect_check_health(self, check_health: bool = True) -> None:
        try:
            super().on_connect_check_health(check_health=check_health)
            return
        except _redis_errors.AuthenticationError:
            if not (self.username or self.password):
                raise
        self.username = self.password = None
        super().on_connect_check_health(check_health=check_health)


class _SentinelSSLConnection(_SentinelConnection, SSLConnection):
    """:class:`_SentinelConnection` over TLS (``rediss+sentinel://``)."""


def _chunk_for(socket_timeout: Any) -> float:
    """The longest blocking call (see ``MAX_BLOCK_CHUNK``) for this ``socket_timeout``."""
    if socket_timeout:
        return max(0.05, min(MAX_BLOCK_CHUNK, float(socket_timeout) / 2))
    return MAX_BLOCK_CHUNK


def _check_ca(target: RedisTarget, ca: Optional[str]) -> None:
    if ca is None:
        return
    if not target.tls:
        raise ValueError(f"a Redis CA file ({ca}) is only used with the TLS targets "
                         "(rediss://, rediss+sentinel://, rediss+cluster://)")
    if not os.path.isfile(ca):
        raise ValueError(f"Redis CA file not found: {ca}")


def connect(target: RedisTarget, ca: Optional[str] = None,
            **redis_kwargs: Any) -> Union[_redis.Redis, RedisCluster]:
    """The redis-py client for ``target`` (see :func:`jsacc.target.parse_target`).

    Standalone and Unix: ``redis.Redis``. Sentinel: ``Sentinel(...).master_for(master)``, whose
    pool asks the Sentinels for the primary on every new connection, so a failover is followed
    without a new client. Cluster: ``RedisCluster`` (which connects at once to read the slot
    map). ``ca`` is the PEM file of the CA that signed the servers' certificates (TLS forms
    only; without it the system's trust store is used). ``redis_kwargs`` go to redis-py.
    """
    _check_ca(target, ca)
    kw = dict(redis_kwargs)
    kw.setdefault("decode_responses", True)
    # Fail fast when Redis is down instead of hanging on connect.
    kw.setdefault("socket_connect_timeout", 5)
    if target.username is not None:
        kw.setdefault("username", target.username)
    if target.password is not None:
        kw.setdefault("password", target.password)
    tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": ca} if target.tls else {}
    if target.kind in (UNIX, STANDALONE):
        # No redis-py retry loop (as with Redis.from_url, which this replaces): a Redis that is
        # down is reported at once (jsctl exits 6 without waiting seconds); a failover has its
        # own retries (`retries`), and a single server has none to wait out.
        kw.setdefault("retry", Retry(NoBackoff(), 0))
    if target.kind == UNIX:
        return _redis.Redis(unix_socket_path=target.path, db=target.db, **kw)
    if target.kind == STANDALONE:
        (host, port), = target.hosts
        return _redis.Redis(host=host, port=port, db=target.db, ssl=target.tls, **tls, **kw)
    if target.kind == CLUSTER:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.hosts],
                            ssl=target.tls, **tls, **kw)
    assert target.kind == SENTINEL, target.kind
    sentinel = Sentinel(list(target.hosts), db=target.db, ssl=target.tls, **tls, **kw)
    # Our own Sentinel clients: TLS like the data nodes, and credentials only when wanted.
    skw = {k: v for k, v in kw.items() if k.startswith("socket_") or k in ("username", "password")}
    skw.update(tls)
    cls = _SentinelSSLConnection if target.tls else _SentinelConnection
    sentinel.sentinels = [_redis.Redis(connection_pool=ConnectionPool(
        connection_class=cls, host=h, port=p, **skw)) for h, p in target.hosts]
    return sentinel.master_for(target.master)


class Client:
    """A connection to a jsacc cluster through its Redis.

    ``url`` is any Redis target of DESIGN §11 (see :mod:`jsacc.target`): ``host:port``,
    ``redis://[user:pass@]host:port[/db]``, ``rediss://...``, ``unix:///path``,
    ``redis+sentinel://h:p[,h:p...]/<master>[/db]``, ``redis+cluster://h:p[,h:p...]`` (and
    ``rediss+...``). ``ca``: PEM CA file for the TLS forms. Extra keyword arguments go to
    redis-py; or pass a ready ``redis=`` client (``Redis`` or ``RedisCluster``; then ``url`` is
    only used in messages). Keys are exactly those of DESIGN.md §4 (no prefix), and every
    operation touches one key, or one slot, at a time, so it works on a Redis Cluster.

    Durable push: with ``wait_replicas`` N > 0 (default 1 on Sentinel and Cluster targets, 0
    on a standalone Redis) :meth:`push` sends ``LPUSH cmds_queue`` and ``WAIT N wait_ms`` on
    the same connection to the primary holding ``cmds_queue`` and pushes the same bytes again
    until N replicas confirmed (the controller drops identical re-pushes).

    Failover: on Sentinel and Cluster targets each operation is retried ``retries`` times
    (default 8; 0 on a standalone Redis, where there is no failover to wait out) after an error
    that a failover causes (connection lost, ``READONLY``, ``CLUSTERDOWN``, ``MOVED``...), with
    a pause of ``retry_backoff`` seconds doubling up to 2 s. Methods raise
    :class:`jsacc.RedisUnavailable` when Redis cannot be reached (:class:`jsacc.PushUnconfirmed`
    when a push was not confirmed), ``ValueError`` for an obviously wrong command.
    """

    def __init__(self, url: str = DEFAULT_URL, *,
                 redis: Optional[Union[_redis.Redis, RedisCluster]] = None,
                 ca: Optional[str] = None, wait_replicas: Optional[int] = None,
                 wait_ms: int = DEFAULT_WAIT_MS, retries: Optional[int] = None,
                 retry_backoff: float = DEFAULT_RETRY_BACKOFF, **redis_kwargs: Any):
        self.url = url
        self._redis = redis
        self._redis_kwargs = redis_kwargs
        self._ca = ca
        if redis is None:
            self.target = parse_target(url)
        elif isinstance(redis, RedisCluster):
            self.target = RedisTarget(CLUSTER)
        elif isinstance(getattr(redis, "connection_pool", None), SentinelConnectionPool):
            self.target = RedisTarget(SENTINEL)
        else:
            self.target = RedisTarget(STANDALONE)
        replicated = self.target.replicated
        if wait_replicas is None:
            wait_replicas = 1 if replicated else 0
        self.wait_replicas = _check_int("wait_replicas", wait_replicas, 0)
        self.wait_ms = _check_int("wait_ms", wait_ms, 0)
        if retries is None:
            retries = DEFAULT_RETRIES if replicated or self.wait_replicas else 0
        self.retries = _check_int("retries", retries, 0)
        if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)) \
                or retry_backoff < 0:
            raise ValueError(f"retry_backoff must be a number >= 0, got {retry_backoff!r}")
        self.retry_backoff = float(retry_backoff)
        if redis is None:
            _check_ca(self.target, ca)
            if self.target.kind != CLUSTER:
                # No I/O yet: only RedisCluster connects in its constructor (see `redis`).
                self._redis = connect(self.target, ca, **redis_kwargs)
        # Blocking calls must end before the socket times out (see MAX_BLOCK_CHUNK).
        if "socket_timeout" in redis_kwargs:
            socket_timeout = redis_kwargs["socket_timeout"]
        else:
            socket_timeout = None
            pool = getattr(self._redis, "connection_pool", None)
            if pool is not None:
                socket_timeout = pool.connection_kwargs.get("socket_timeout")
        self._chunk = _chunk_for(socket_timeout)

    @property
    def redis(self) -> Union[_redis.Redis, RedisCluster]:
        """The redis-py client (``RedisCluster`` for a cluster target, made on first use: it
        reads the slot map from the startup nodes)."""
        if self._redis is None:
            try:
                self._redis = connect(self.target, self._ca, **self._redis_kwargs)
            except (_redis_errors.RedisError, _redis_errors.RedisClusterException) as e:
                raise RedisUnavailable(f"cannot reach Redis at {mask_url(self.url)}: {e}") from e
        return self._redis

    @property
    def is_cluster(self) -> bool:
        """Whether the target is a Redis Cluster."""
        return self.target.kind == CLUSTER

    def __repr__(self) -> str:
        return f"<jsacc.Client {mask_url(self.url)}>"

    def close(self) -> None:
        if self._redis is None:
            return
        self._redis.close()
        manager = getattr(getattr(self._redis, "connection_pool", None), "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", []):
            sentinel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _after_error(self, error: BaseException) -> None:
        """Prepare the next attempt after a failover-type error: a cluster re-reads its slot
        map (a direct node connection, as :meth:`push` uses, does not follow MOVED by itself).
        A Sentinel pool needs nothing: its next connection asks the Sentinels again."""
        if self.is_cluster and self._redis is not None:
            try:
                self._redis.nodes_manager.initialize()
            except Exception:  # noqa: BLE001 - the next attempt reports what is wrong
                pass

    def _backoffs(self) -> Iterator[float]:
        delay = self.retry_backoff
        for _ in range(self.retries):
            yield delay
            delay = min(delay * 2, MAX_RETRY_BACKOFF)

    def _call(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` (one Redis operation), retried after failover-type errors (``retries``
        times, pausing ``retry_backoff`` s doubling); then :class:`RedisUnavailable` saying how
        long it tried. Only for operations that are safe to repeat (reads, BLPOP of a result)."""
        started = time.monotonic()
        pauses = self._backoffs()
        attempts = 0
        while True:
            attempts += 1
            try:
                return fn()
            except _NOT_RETRYABLE as e:
                raise RedisUnavailable(f"cannot reach Redis at {mask_url(self.url)}: {e}") from e
            except _RETRYABLE as e:
                pause = next(pauses, None)
                if pause is None:
                    tried = (f" (tried {attempts} times in {time.monotonic() - started:.1f} s)"
                             if attempts > 1 else "")
                    raise RedisUnavailable(
                        f"cannot reach Redis at {mask_url(self.url)}{tried}: {e}") from e
                self._after_error(e)
                time.sleep(pause)

    # -- submitting ---------------------------------------------------------------------------
    def _lpush_wait(self, payload: str) -> Optional[int]:
        """One ``LPUSH cmds_queue`` and, with ``wait_replicas``, ``WAIT`` right after it on
        the same connection (WAIT counts the replicas that acknowledged that connection's
        writes: on another connection it would say nothing about this push). Returns WAIT's
        answer, ``None`` without WAIT."""
        r = self.redis
        if self.wait_replicas <= 0:
            r.lpush(CMDS_QUEUE, payload)
            return None
        if isinstance(r, RedisCluster):
            # The primary of cmds_queue's slot, as a plain client: a cluster pipeline would
            # not keep LPUSH and WAIT on one connection (WAIT has no key to route by).
            r = r.get_redis_connection(r.get_node_from_key(CMDS_QUEUE))
        pipe = r.pipeline(transaction=False)
        pipe.lpush(CMDS_QUEUE, payload)
        pipe.wait(self.wait_replicas, self.wait_ms)
        _length, acked = pipe.execute()
        return int(acked)

    def push_payload(self, payload: str, job_id: str) -> None:
        """Push ``payload`` (a command's JSON) onto ``cmds_queue`` durably (see
        :meth:`push`); raises :class:`jsacc.PushUnconfirmed` when Redis never confirmed it."""
        started = time.monotonic()
        pauses = self._backoffs()
        attempts = 0
        while True:
            attempts += 1
            try:
                acked = self._lpush_wait(payload)
                if acked is None or acked >= self.wait_replicas:
                    return
                problem = (f"WAIT {self.wait_replicas} {self.wait_ms}: only {acked} replica(s) "
                           f"confirmed the copy")
                error: Optional[BaseException] = None
            except _NOT_RETRYABLE as e:
                # Refused at connect (before anything was sent): nothing was queued.
                raise RedisUnavailable(f"cannot reach Redis at {mask_url(self.url)}: {e}") from e
            except _RETRYABLE as e:
                problem, error = f"{type(e).__name__}: {e}", e
                self._after_error(e)
            pause = next(pauses, None)
            if pause is None:
                break
            time.sleep(pause)
        where = mask_url(self.url)
        head = (f"cannot reach Redis at {where}" if error is not None
                else f"Redis at {where} did not confirm the push")
        raise PushUnconfirmed(
            f"{head} after {attempts} attempt(s) in {time.monotonic() - started:.1f} s "
            f"(last: {problem}): command {job_id} may or may not have been queued; pushing "
            f"the same command again is safe (an identical re-push is dropped)",
            job_id, payload) from error

    def push(self, command: Mapping[str, Any]) -> Job:
        """Queue a command built elsewhere (not validated): ``LPUSH cmds_queue <JSON>``.

        With ``wait_replicas`` N > 0, ``WAIT N wait_ms`` follows on the same connection; when
        fewer than N replicas confirmed, or the connection failed (a failover), the same bytes
        are pushed again, up to ``retries`` times. So once ``push`` returns, the command is on
        the primary and N replicas: a failover to one of them does not lose it. A repeated push
        can leave two identical copies in ``cmds_queue``; the controller routes one and drops
        the other. Raises :class:`jsacc.PushUnconfirmed` (with the job id) when it never got
        the confirmation: then the command may or may not be queued.
        """
        payload = json.dumps(command, separators=(",", ":"))
        self.push_payload(payload, command["id"])
        return Job(self, command["id"], dict(command))

    def cmd(self, cmd: str, args: Optional[Mapping[str, Any]] = None, data: Any = None,
            gid: int = 0, nid: Optional[int] = None, role: Optional[str] = None,
            fanout: bool = False, id: Optional[str] = None) -> Job:  # noqa: A002
        """Submit any command (see :func:`build_command`); returns its :class:`Job`."""
        return self.push(build_command(cmd, args=args, data=data, gid=gid, nid=nid, role=role,
                                       fanout=fanout, id=id))

    def execute(self, cmd: Union[str, "os.PathLike[str]"], args: Sequence[Any] = (),
                gid: int = 0, nid: Optional[int] = None, *, role: Optional[str] = None,
                fanout: bool = False, domain: str = "", name: str = "",
                workingdir: Optional[str] = None, env: Optional[Mapping[str, Any]] = None,
                data: Any = None, max_time: int = 0, id: Optional[str] = None,  # noqa: A002
                **more_args: Any) -> Job:
        """Run executable ``cmd`` with ``args`` (no shell) on agent ``gid:nid`` (or a ``role``).

        ``data`` goes to the process's stdin (JSON-encoded when not a string). ``max_time``:
        seconds before the job is killed and ends ``TIMEOUT`` (0 = no limit, -1 = long-running,
        remembered and restarted). ``more_args``: other execute fields (``max_restart``,
        ``recurring_period``, ``queue``, ``loglevels``, ``max_wait``, ...).
        """
        args_obj = build_execute_args(cmd, args, domain=domain, name=name, workingdir=workingdir,
                                      env=env, max_time=max_time, **more_args)
        return self.cmd("execute", args_obj, data=data, gid=gid, nid=nid, role=role,
                        fanout=fanout, id=id)

    def _execute_script(self, cmd: str, script: Optional[str], domain: str, name: str,
                        gid: int, nid: Optional[int], role: Optional[str], fanout: bool,
                        data: Any, max_time: int, id: Optional[str],  # noqa: A002
                        more_args: Dict[str, Any]) -> Job:
        if script is None and not (domain and name):
            raise ValueError("give script (inline source) or domain and name "
                             "(the script <jumpscripts_dir>/<domain>/<name>)")
        args_obj = build_execute_args(None, (), domain=domain, name=name, max_time=max_time,
                                      script=script, **more_args)
        return self.cmd(cmd, args_obj, data=data, gid=gid, nid=nid, role=role, fanout=fanout,
                        id=id)

    def execute_py(self, script: Optional[str] = None, gid: int = 0, nid: Optional[int] = None,
                   *, role: Optional[str] = None, fanout: bool = False, domain: str = "",
                   name: str = "", data: Any = None, max_time: int = 0,
                   id: Optional[str] = None, **more_args: Any) -> Job:  # noqa: A002
        """``execute_js_py``: run Python ``script`` (inline source) or, without it, the
        jumpscript ``<jumpscripts_dir>/<domain>/<name>.py``."""
        return self._execute_script("execute_js_py", script, domain, name, gid, nid, role,
                                    fanout, data, max_time, id, more_args)

    def execute_lua(self, script: Optional[str] = None, gid: int = 0, nid: Optional[int] = None,
                    *, role: Optional[str] = None, fanout: bool = False, domain: str = "",
                    name: str = "", data: Any = None, max_time: int = 0,
                    id: Optional[str] = None, **more_args: Any) -> Job:  # noqa: A002
        """``execute_js_lua``: like :meth:`execute_py` for Lua (``.lua``)."""
        return self._execute_script("execute_js_lua", script, domain, name, gid, nid, role,
                                    fanout, data, max_time, id, more_args)

    # -- internal commands (DESIGN §6.2) --------------------------------------------------------
    def _internal(self, name: str, *, gid: int = 0, nid: Optional[int] = None,
                  role: Optional[str] = None, fanout: bool = False, data: Any = None,
                  id: Optional[str] = None, **args: Any) -> Job:  # noqa: A002
        """Submit internal command ``name`` with ``args`` (``None`` values left out).

        Adding a method for another internal command is one line, e.g.::

            def get_os_info(self, gid=0, nid=None, **kw):
                return self._internal("get_os_info", gid=gid, nid=nid, **kw)
        """
        return self.cmd(name, {k: v for k, v in args.items() if v is not None}, data=data,
                        gid=gid, nid=nid, role=role, fanout=fanout, id=id)

    def ping(self, gid: int = 0, nid: Optional[int] = None, *, role: Optional[str] = None,
             fanout: bool = False, id: Optional[str] = None) -> Job:  # noqa: A002
        """Internal ``ping``: the agent answers ``data == "pong"`` without running anything."""
        return self._internal("ping", gid=gid, nid=nid, role=role, fanout=fanout, id=id)

    def kill(self, job_id: str, gid: int = 0, nid: Optional[int] = None, *,
             id: Optional[str] = None) -> Job:  # noqa: A002
        """Internal ``kill``: end job ``job_id`` on agent ``gid:nid`` (and forget it if it was
        remembered). See also :meth:`Job.kill`."""
        # Not via _internal: its `id` keyword is the kill job's own id, the target is args.id.
        return self.cmd("kill", {"id": check_id(job_id)}, gid=gid, nid=nid, id=id)

    def killall(self, gid: int = 0, nid: Optional[int] = None, *, role: Optional[str] = None,
                fanout: bool = False, id: Optional[str] = None) -> Job:  # noqa: A002
        """Internal ``killall``: kill every process the agent runs. Its result's ``data`` is
        ``{"killed": [ids], "remembered": [ids]}``: remembered jobs (long-running, recurring)
        stay registered and come back."""
        return self._internal("killall", gid=gid, nid=nid, role=role, fanout=fanout, id=id)

    def get_processes_stats(self, gid: int = 0, nid: Optional[int] = None, *,
                            domain: Optional[str] = None, name: Optional[str] = None,
                            role: Optional[str] = None, fanout: bool = False,
                            id: Optional[str] = None) -> Job:  # noqa: A002
        """Internal ``get_processes_stats``: the agent's running jobs, sampled now and summed by
        domain/name (optionally only ``domain`` and/or ``name``). ``data`` is a list of
        ``{"domain", "name", "jobs": [ids], "cpu_percent", "rss", "vms", "swap", "threads",
        "processes"}`` (bytes; cpu in percent of one core)."""
        # Not via _internal: its first parameter is called `name` too.
        args = {k: v for k, v in (("domain", domain), ("name", name)) if v is not None}
        return self.cmd("get_processes_stats", args, gid=gid, nid=nid, role=role,
                        fanout=fanout, id=id)

    def get_process_stats(self, job_id: str, gid: int = 0, nid: Optional[int] = None, *,
                          id: Optional[str] = None) -> Job:  # noqa: A002
        """Internal ``get_process_stats``: running job ``job_id``'s process tree sampled now:
        ``{"id", "domain", "name", "pid", "cpu_percent", "rss", "vms", "swap", "threads",
        "processes"}``; ``ERROR`` when the job is not running there."""
        # Not via _internal: its `id` keyword is this job's own id, the target is args.id.
        return self.cmd("get_process_stats", {"id": check_id(job_id)}, gid=gid, nid=nid, id=id)
    def get_msgs(self, gid: int = 0, nid: Optional[int] = None, *, jobid: Optional[str] = None,
                 timefrom: Optional[int] = None, timeto: Optional[int] = None,
                 levels: Optional[str] = None, role: Optional[str] = None, fanout: bool = False,
                 id: Optional[str] = None) -> Job:  # noqa: A002
        """Internal ``get_msgs``: messages the agent stored (DESIGN §6.2), filtered by ``jobid``,
        ``timefrom``/``timeto`` (ms since the epoch, inclusive) and ``levels`` (``"*"``,
        ``"1,3-5"``...). The result's ``data`` is a list of messages (``id``, ``jobid``,
        ``domain``, ``name``, ``epoch``, ``level``, ``data``): the newest 1000 matches, oldest first.
        """
        return self._internal("get_msgs", gid=gid, nid=nid, role=role, fanout=fanout, id=id,
                              jobid=jobid, timefrom=timefrom, timeto=timeto, levels=levels)

    def del_msgs(self, gid: int = 0, nid: Optional[int] = None, *, jobid: Optional[str] = None,
                 timefrom: Optional[int] = None, timeto: Optional[int] = None,
                 levels: Optional[str] = None, role: Optional[str] = None, fanout: bool = False,
                 id: Optional[str] = None) -> Job:  # noqa: A002
        """Internal ``del_msgs``: deletes the stored messages :meth:`get_msgs` would match (all
        of them, not only 1000); the result's ``data`` is how many were deleted."""
        return self._internal("del_msgs", gid=gid, nid=nid, role=role, fanout=fanout, id=id,
                              jobid=jobid, timefrom=timefrom, timeto=timeto, levels=levels)

    # -- reading ------------------------------------------------------------------------------
    def logs(self, domain: str, name: str, since: Optional[str] = None,
             count: int = 100) -> List[Dict[str, Any]]:
        """Forwarded log messages of process ``domain``/``name`` from ``log.<domain>.<name>``.

        Without ``since``: the last ``count`` messages. With ``since`` (a ``stream_id`` from an
        earlier answer, or ``"0"``): up to ``count`` messages after it. Oldest first; each a dict
        with ``id``, ``jobid``, ``domain``, ``name``, ``epoch``, ``level``, ``data``, ``gid``,
        ``nid`` and ``stream_id``.
        """
        key = log_key(domain, name)
        count = _check_int("count", count, 1)
        if since is None:
            entries = list(reversed(self._call(lambda: self.redis.xrevrange(key, count=count))))
        else:
            start = f"({since}" if since != "0" else "-"
            entries = self._call(lambda: self.redis.xrange(key, min=start, count=count))
        return [_log_entry(sid, fields) for sid, fields in entries]

    def follow_logs(self, domain: str, name: str, since: str = "$",
                    timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Yields messages of ``log.<domain>.<name>`` as they arrive (``XREAD BLOCK``), after
        ``since`` (default ``"$"``: only new ones), until ``timeout`` seconds pass (default:
        forever). Blocks in chunks shorter than the socket timeout (see ``MAX_BLOCK_CHUNK``)."""
        key = log_key(domain, name)
        last = since
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            chunk = self._chunk
            if deadline is not None:
                chunk = max(0.001, min(chunk, deadline - time.monotonic()))
            if last == "$":
                # Pin "$" to the current last id once, so nothing between reads is missed.
                info = self._call(lambda: self.redis.xrevrange(key, count=1))
                last = _decode(info[0][0]) if info else "0-0"
            block_ms = max(1, int(chunk * 1000))
            # One stream per XREAD: on a cluster it goes to that stream's node.
            got = self._call(lambda: self.redis.xread({key: last}, count=1000, block=block_ms))
            for _stream, entries in got or []:
                for sid, fields in entries:
                    last = _decode(sid)
                    yield _log_entry(sid, fields)
    # Host facts: each answers ``data`` as the document of ``schemas/<what>_info.schema.json``.
    def get_os_info(self, gid: int = 0, nid: Optional[int] = None, **kw: Any) -> Job:
        """``get_os_info``: hostname, os, name, version, kernel, arch, uptime, boot_time."""
        return self._internal("get_os_info", gid=gid, nid=nid, **kw)

    def get_cpu_info(self, gid: int = 0, nid: Optional[int] = None, **kw: Any) -> Job:
        """``get_cpu_info``: cores, physical_cores, model, vendor, frequency_mhz, usage (%),
        per_core (%)."""
        return self._internal("get_cpu_info", gid=gid, nid=nid, **kw)

    def get_mem_info(self, gid: int = 0, nid: Optional[int] = None, **kw: Any) -> Job:
        """``get_mem_info``: total, available, free, used and swap_* in bytes."""
        return self._internal("get_mem_info", gid=gid, nid=nid, **kw)

    def get_disk_info(self, gid: int = 0, nid: Optional[int] = None, **kw: Any) -> Job:
        """``get_disk_info``: ``disks`` (block devices and their partitions) and ``partitions``
        (mounted file systems with mount point, fs, total and available bytes)."""
        return self._internal("get_disk_info", gid=gid, nid=nid, **kw)

    def get_nic_info(self, gid: int = 0, nid: Optional[int] = None, **kw: Any) -> Job:
        """``get_nic_info``: ``nics``, each with name, mac, mtu, addresses, byte counters."""
        return self._internal("get_nic_info", gid=gid, nid=nid, **kw)

    def info(self, what: str, gid: int, nid: int, timeout: Optional[float] = 30.0) -> Any:
        """The ``data`` of host fact ``what`` (``os``, ``cpu``, ``mem``, ``disk`` or ``nic``)
        of agent ``gid:nid``; raises :class:`JsaccError` when the command ended otherwise than
        ``OK``, :class:`Timeout` when no answer came within ``timeout`` seconds."""
        if what not in INFO_COMMANDS:
            raise ValueError(f"unknown host fact {what!r}: one of {', '.join(INFO_COMMANDS)}")
        result = self._internal(INFO_COMMANDS[what], gid=gid, nid=nid).result(timeout)
        if result.get("state") != "OK":
            raise JsaccError(f"{INFO_COMMANDS[what]} on {gid}:{nid} ended "
                             f"{result.get('state')}: {result.get('data')}")
        return result.get("data")

    # -- reading ------------------------------------------------------------------------------
    def stats(self, gid: int, nid: int) -> Dict[str, Dict[str, Any]]:
        """The latest aggregated stats of agent ``gid:nid`` (``HGETALL stats:{gid:nid}:latest``):
        metric key → dict with ``type`` (counter, gauge, timer, histogram, set), ``epoch`` (ms,
        end of its flush interval), ``interval`` (s) and its values (counter: ``sum``, ``rate``;
        gauge: ``value``; timer/histogram: ``count``, ``sum``, ``min``, ``max``, ``mean``,
        ``p50``, ``p90``, ``p99``; set: ``count``). Empty when the agent sent none."""
        _check_int("gid", gid, 0)
        _check_int("nid", nid, 0)
        raw = self._call(lambda: self.redis.hgetall(stats_latest_key(gid, nid)))
        out = {}
        for key, value in raw.items():
            try:
                out[_decode(key)] = json.loads(_decode(value))
            except ValueError:
                continue  # not written by jsacc: skip rather than fail the reading
        return dict(sorted(out.items()))

    def stats_batches(self, gid: int, nid: int, count: int = 10) -> List[Dict[str, Any]]:
        """The last ``count`` stats batches of agent ``gid:nid`` from the stream
        ``stats:{gid:nid}``, oldest first (each as DESIGN §7: gid, nid, epoch, interval,
        metrics), with the stream entry id as ``stream_id``."""
        _check_int("count", count, 1)
        entries = self._call(lambda: self.redis.xrevrange(stats_key(gid, nid), count=count))
        out = []
        for entry_id, fields in reversed(entries):
            fields = {_decode(k): _decode(v) for k, v in fields.items()}
            try:
                batch = json.loads(fields.get("batch", ""))
            except ValueError:
                continue
            batch["stream_id"] = _decode(entry_id)
            out.append(batch)
        return out

    def job(self, job_id: str) -> Job:
        """A :class:`Job` handle for an id submitted earlier (possibly by someone else)."""
        return Job(self, check_id(job_id))

    def agents(self, online_within: float = 60.0) -> List[Dict[str, Any]]:
        """Known agents, sorted by (gid, nid): the ``agents`` sorted set joined with each
        ``agent:{gid:nid}`` hash.

        Each dict has ``agent`` ("gid:nid"), ``gid``, ``nid``, ``hostname``, ``os``, ``arch``,
        ``version``, ``roles`` (list), ``started`` and ``last_seen`` (ms since the epoch;
        ``last_seen`` is the sorted-set score), ``last_seen_ago`` (seconds, by Redis's clock)
        and ``online`` (seen within ``online_within`` seconds), plus any other hash field.
        """
        def read() -> Any:
            r = self.redis
            # TIME from the node that holds `agents` (a cluster would otherwise pick any node,
            # or ask all of them and answer a dict).
            clock = (r.get_redis_connection(r.get_node_from_key(AGENTS_KEY))
                     if isinstance(r, RedisCluster) else r)
            sec, usec = clock.time()
            now_ms = int(sec) * 1000 + int(usec) // 1000
            members = r.zrange(AGENTS_KEY, 0, -1, withscores=True)
            # Not transactional: each agent hash lives in its own slot; on a cluster the
            # pipeline is split by node.
            pipe = r.pipeline(transaction=False)
            parsed = []
            for member, score in members:
                member = _decode(member)
                try:
                    g, n = (int(x) for x in member.split(":", 1))
                except ValueError:
                    continue  # not an agent key: ignore rather than fail the listing
                parsed.append((g, n, member, int(score)))
                pipe.hgetall(agent_key(g, n))
            return now_ms, parsed, (pipe.execute() if parsed else [])

        now_ms, parsed, hashes = self._call(read)
        out = []
        for (g, n, member, last_seen), record in zip(parsed, hashes):
            info: Dict[str, Any] = {_decode(k): _decode(v) for k, v in (record or {}).items()}
            roles = info.get("roles")
            if isinstance(roles, str):
                try:
                    roles = json.loads(roles) if roles else []
                except ValueError:
                    roles = [x.strip() for x in roles.split(",") if x.strip()]
            info["roles"] = roles if isinstance(roles, list) else []
            for field in ("started",):
                if isinstance(info.get(field), str) and info[field].lstrip("-").isdigit():
                    info[field] = int(info[field])
            for field in ("hostname", "os", "arch", "version"):
                info.setdefault(field, "")
            info.setdefault("started", None)
            ago = max(0.0, (now_ms - last_seen) / 1000.0)
            info.update(agent=member, gid=g, nid=n, last_seen=last_seen, last_seen_ago=ago,
                        online=ago <= online_within)
            out.append(info)
        out.sort(key=lambda a: (a["gid"], a["nid"]))
        return out

