"""The jsacc client: :class:`Client` pushes commands into Redis and reads what the cluster
wrote there (agents, logs, stats); each submitted command is a :class:`jsacc.job.Job`.

Everything here follows the Redis contract of DESIGN.md §4 exactly (no key prefix), with the
key names of :mod:`jsacc.keys`: ``LPUSH cmds_queue <command JSON>`` submits a command (DESIGN
§3), ``BLPOP cmds_queue_<id>`` takes its results. Building and validating commands is
:mod:`jsacc.command`; connecting and the failover policy are :mod:`jsacc.connection`.
"""

from __future__ import annotations

import json
import os
import time
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple,
                    TypeVar, Union)

import redis as _redis
from redis import exceptions as _redis_errors
from redis.cluster import RedisCluster
from redis.sentinel import SentinelConnectionPool

from . import files, history, records
from .command import INFO_COMMANDS, build_command, build_execute_args
from .connection import (DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF, MAX_RETRY_BACKOFF,
                         NOT_RETRYABLE, RETRYABLE, check_ca, chunk_for, connect)
from .errors import JsaccError, PushUnconfirmed, RedisUnavailable
from .job import Job
from .keys import (AGENTS_KEY, AUDIT_KEY, CMDS_QUEUE, agent_key, log_key, parse_agent_id,
                   stats_key, stats_latest_key)
from .target import CLUSTER, SENTINEL, STANDALONE, RedisTarget, mask_url, parse_target
from .validate import check_id, check_int

# Importable from jsacc.client before the package was split by noun (issue #11): kept so that
# `from jsacc.client import build_command` and the like go on working.
from .command import new_id  # noqa: F401 - re-export
from .connection import MAX_BLOCK_CHUNK, _SentinelConnection  # noqa: F401 - re-export
from .job import FINAL_STATES, STATES  # noqa: F401 - re-export
from .keys import job_key, result_key  # noqa: F401 - re-export
from .records import log_entry as _log_entry  # noqa: F401 - re-export

_T = TypeVar("_T")

DEFAULT_URL = "redis://127.0.0.1:6379"

#: A push waits (``WAIT``) this long for replicas by default, in ms.
DEFAULT_WAIT_MS = 500


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
        self.wait_replicas = check_int("wait_replicas", wait_replicas, 0)
        self.wait_ms = check_int("wait_ms", wait_ms, 0)
        if retries is None:
            retries = DEFAULT_RETRIES if replicated or self.wait_replicas else 0
        self.retries = check_int("retries", retries, 0)
        if isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float)) \
                or retry_backoff < 0:
            raise ValueError(f"retry_backoff must be a number >= 0, got {retry_backoff!r}")
        self.retry_backoff = float(retry_backoff)
        if redis is None:
            check_ca(self.target, ca)
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
        self._chunk = chunk_for(socket_timeout)

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
            except NOT_RETRYABLE as e:
                raise RedisUnavailable(f"cannot reach Redis at {mask_url(self.url)}: {e}") from e
            except RETRYABLE as e:
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
            except NOT_RETRYABLE as e:
                # Refused at connect (before anything was sent): nothing was queued.
                raise RedisUnavailable(f"cannot reach Redis at {mask_url(self.url)}: {e}") from e
            except RETRYABLE as e:
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
            fanout: bool = False, id: Optional[str] = None,  # noqa: A002
            batch: Union[int, str, None] = None, batch_wait: Optional[int] = None,
            max_failures: Union[int, str, None] = None) -> Job:
        """Submit any command (see :func:`build_command`; ``batch``, ``batch_wait`` and
        ``max_failures`` roll a fanout out in batches); returns its :class:`Job`."""
        return self.push(build_command(cmd, args=args, data=data, gid=gid, nid=nid, role=role,
                                       fanout=fanout, id=id, batch=batch, batch_wait=batch_wait,
                                       max_failures=max_failures))

    def execute(self, cmd: Union[str, "os.PathLike[str]"], args: Sequence[Any] = (),
                gid: int = 0, nid: Optional[int] = None, *, role: Optional[str] = None,
                fanout: bool = False, domain: str = "", name: str = "",
                workingdir: Optional[str] = None, env: Optional[Mapping[str, Any]] = None,
                data: Any = None, max_time: int = 0, id: Optional[str] = None,  # noqa: A002
                batch: Union[int, str, None] = None, batch_wait: Optional[int] = None,
                max_failures: Union[int, str, None] = None, **more_args: Any) -> Job:
        """Run executable ``cmd`` with ``args`` (no shell) on agent ``gid:nid`` (or a ``role``).

        With ``fanout``, ``batch`` (``2`` or ``"25%"``), ``batch_wait`` (s) and
        ``max_failures`` roll it out in batches (see :func:`jsacc.command.build_command`).

        ``data`` goes to the process's stdin (JSON-encoded when not a string). ``max_time``:
        seconds before the job is killed and ends ``TIMEOUT`` (0 = no limit, -1 = long-running,
        remembered and restarted). ``more_args``: other execute fields (``max_restart``,
        ``recurring_period``, ``queue``, ``loglevels``, ``max_wait``, ...).
        """
        args_obj = build_execute_args(cmd, args, domain=domain, name=name, workingdir=workingdir,
                                      env=env, max_time=max_time, **more_args)
        return self.cmd("execute", args_obj, data=data, gid=gid, nid=nid, role=role,
                        fanout=fanout, id=id, batch=batch, batch_wait=batch_wait,
                        max_failures=max_failures)

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

    def get_msgs(self, gid: int = 0, nid: Optional[int] = None, *, jobid: Optional[str] = None,
                 timefrom: Optional[int] = None, timeto: Optional[int] = None,
                 levels: Optional[str] = None, role: Optional[str] = None, fanout: bool = False,
                 id: Optional[str] = None) -> Job:  # noqa: A002
        """Internal ``get_msgs``: messages the agent stored (DESIGN §6.2), filtered by ``jobid``,
        ``timefrom``/``timeto`` (ms since the epoch, inclusive) and ``levels`` (``"*"``,
        ``"1,3-5"``...). The result's ``data`` is a list of messages (``id``, ``jobid``,
        ``domain``, ``name``, ``epoch``, ``level``, ``data``): the newest 1000 matches, oldest
        first."""
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

    # -- files (DESIGN §11) ---------------------------------------------------------------------
    def put_file(self, gid: int, nid: int, local_path: Union[str, "os.PathLike[str]"],
                 remote_path: str, mode: Union[None, int, str] = None,
                 progress: Optional[files.Progress] = None,
                 chunk_size: int = files.PUT_CHUNK,
                 timeout: float = files.CHUNK_TIMEOUT) -> Dict[str, Any]:
        """Upload ``local_path`` to ``remote_path`` on agent ``gid:nid`` (internal
        ``put_file``, one command per ``chunk_size`` bytes, default 3 MiB, at most 4 MiB).

        ``remote_path`` is absolute on the agent's machine, or starts with ``$agentroot``,
        ``$root`` or ``$tmp``. ``mode``: ``"0644"`` or ``0o644`` (Unix agents; default: an
        existing file keeps its mode, a new one gets 0644). The agent writes a part file beside
        the target and renames it over the target once the whole file arrived with the right
        SHA-256: the target is never half written. ``progress(done, total)`` is called after
        each chunk; ``timeout``: seconds to wait for each chunk's answer. Returns the last
        answer (``path``, ``size``, ``sha256``, ``mode``, ``complete``). Raises
        :class:`jsacc.errors.FileTransferError` when a chunk fails (with the agent's reason),
        :class:`jsacc.Timeout` when one is not answered in time, ``OSError`` when
        ``local_path`` cannot be read, ``ValueError`` for a bad ``mode`` or ``chunk_size``."""
        return files.put_file(self, gid, nid, local_path, remote_path, mode=mode,
                              progress=progress, chunk_size=chunk_size, timeout=timeout)

    def get_file(self, gid: int, nid: int, remote_path: str,
                 local_path: Union[str, "os.PathLike[str]"],
                 progress: Optional[files.Progress] = None,
                 timeout: float = files.CHUNK_TIMEOUT) -> Dict[str, Any]:
        """Download ``remote_path`` from agent ``gid:nid`` to ``local_path`` (a directory: the
        remote file's name in it), with internal ``get_file`` commands of 704 KiB each.

        What arrives goes to a temporary file beside ``local_path``, renamed over it only
        when its SHA-256 equals the remote file's. ``progress(done, total)`` is called after
        each chunk. Returns ``{"path", "size", "sha256", "mode"}`` (``mode`` of the remote
        file; not applied locally). Raises :class:`jsacc.errors.FileTransferError` (the
        agent's reason, or a SHA-256 mismatch), :class:`jsacc.Timeout`, ``OSError``."""
        return files.get_file(self, gid, nid, remote_path, local_path, progress=progress,
                              timeout=timeout)

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
        count = check_int("count", count, 1)
        if since is None:
            entries = list(reversed(self._call(lambda: self.redis.xrevrange(key, count=count))))
        else:
            start = f"({since}" if since != "0" else "-"
            entries = self._call(lambda: self.redis.xrange(key, min=start, count=count))
        return [records.log_entry(sid, fields) for sid, fields in entries]

    def audit(self, count: int = 50) -> List[Dict[str, Any]]:
        """The newest ``count`` entries of the audit trail (the stream ``audit``), newest
        first: dicts with ``who``, ``what``, ``target``, ``from``, ``time`` (ms) and
        ``stream_id``."""
        count = check_int("count", count, 1)
        entries = self._call(lambda: self.redis.xrevrange(AUDIT_KEY, count=count))
        out = []
        for sid, fields in entries:
            entry = {records.decode(k): records.decode(v) for k, v in fields.items()}
            entry["time"] = int(entry.get("time") or 0)
            entry["stream_id"] = records.decode(sid)
            out.append(entry)
        return out

    def follow_logs(self, domain: str, name: str, since: str = "$",
                    timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Yields messages of ``log.<domain>.<name>`` as they arrive (``XREAD BLOCK``), after
        ``since`` (default ``"$"``: only new ones), until ``timeout`` seconds pass (default:
        forever). Blocks in chunks shorter than the socket timeout (see
        ``jsacc.connection.MAX_BLOCK_CHUNK``)."""
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
                last = records.decode(info[0][0]) if info else "0-0"
            block_ms = max(1, int(chunk * 1000))
            # One stream per XREAD: on a cluster it goes to that stream's node.
            got = self._call(lambda: self.redis.xread({key: last}, count=1000, block=block_ms))
            for _stream, entries in got or []:
                for sid, fields in entries:
                    last = records.decode(sid)
                    yield records.log_entry(sid, fields)

    def stats(self, gid: int, nid: int) -> Dict[str, Dict[str, Any]]:
        """The latest aggregated stats of agent ``gid:nid`` (``HGETALL stats:{gid:nid}:latest``):
        metric key → dict with ``type`` (counter, gauge, timer, histogram, set), ``epoch`` (ms,
        end of its flush interval), ``interval`` (s) and its values (counter: ``sum``, ``rate``;
        gauge: ``value``; timer/histogram: ``count``, ``sum``, ``min``, ``max``, ``mean``,
        ``p50``, ``p90``, ``p99``; set: ``count``). Empty when the agent sent none."""
        check_int("gid", gid, 0)
        check_int("nid", nid, 0)
        raw = self._call(lambda: self.redis.hgetall(stats_latest_key(gid, nid)))
        return records.stats_latest(raw)

    def stats_batches(self, gid: int, nid: int, count: int = 10) -> List[Dict[str, Any]]:
        """The last ``count`` stats batches of agent ``gid:nid`` from the stream
        ``stats:{gid:nid}``, oldest first (each as DESIGN §7: gid, nid, epoch, interval,
        metrics), with the stream entry id as ``stream_id``."""
        check_int("count", count, 1)
        entries = self._call(lambda: self.redis.xrevrange(stats_key(gid, nid), count=count))
        return records.stats_batches(reversed(entries))

    def jobs(self, agent: Union[str, Tuple[int, int], None] = None,
             state: Union[str, Sequence[str], None] = None, name: Optional[str] = None,
             since: history.Since = None, limit: int = 50) -> history.JobList:
        """The job history, newest first: at most ``limit`` job records (as
        :meth:`Job.record` returns them, without each agent's ``result``: read those with
        ``client.job(id).record()``).

        Filters: ``agent`` (``"gid:nid"`` or ``(gid, nid)``: jobs sent to it), ``state`` (one
        of QUEUED RUNNING OK ERROR TIMEOUT KILLED, or a list of them), ``name``
        (``"domain/name"``), ``since`` (seconds: created within the last ``since`` seconds;
        or a ``datetime``). Reads the controller's indexes (``jobs:all``,
        ``jobs:agent:<gid>:<nid>``, ``jobs:name:<domain>/<name>``) a page at a time and stops
        at ``limit``; jobs whose record expired are left out. ``ValueError`` for a bad filter.

        Reads at most ``jsacc.history.SCAN_BUDGET`` (100,000) ids of the index: a filter that
        matches few of a larger index returns what it found, and the returned list (a
        :class:`jsacc.history.JobList`) has ``truncated`` True (older matches may exist).
        """
        return history.list_jobs(self, agent=agent, state=state, name=name, since=since,
                                 limit=limit)

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
                member = records.decode(member)
                try:
                    g, n = parse_agent_id(member)
                except ValueError:
                    continue  # not an agent key: ignore rather than fail the listing
                parsed.append((g, n, member, int(score)))
                pipe.hgetall(agent_key(g, n))
            return now_ms, parsed, (pipe.execute() if parsed else [])

        now_ms, parsed, hashes = self._call(read)
        out = [records.agent_info(g, n, member, last_seen, record, now_ms, online_within)
               for (g, n, member, last_seen), record in zip(parsed, hashes)]
        out.sort(key=lambda a: (a["gid"], a["nid"]))
        return out
