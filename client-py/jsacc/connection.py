"""Connecting to a Redis target, and the failover policy of every operation the client makes:
which errors are worth retrying, how long to pause between tries, how long one blocking call
may block.

:func:`connect` turns a :class:`jsacc.target.RedisTarget` into a redis-py client;
:class:`jsacc.Client` applies the retry policy around each operation.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import redis as _redis
from redis import exceptions as _redis_errors
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection, ConnectionPool, SSLConnection
from redis.retry import Retry
from redis.sentinel import Sentinel

from .target import CLUSTER, SENTINEL, STANDALONE, UNIX, RedisTarget

#: Longest single blocking Redis call, in seconds. redis-py 8 defaults ``socket_timeout`` to 5 s:
#: a ``BLPOP`` that blocks longer than the socket timeout dies with a ``TimeoutError`` (and the
#: connection is dropped). So instead of one long ``BLPOP`` we block in chunks of at most this
#: many seconds until the caller's deadline. This keeps working whatever ``socket_timeout`` the
#: caller configures (the chunk is shrunk below it, see :func:`chunk_for`), costs one round trip
#: every 2 s of waiting, and needs no second connection with different settings.
MAX_BLOCK_CHUNK = 2.0

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
#: too in redis-py, but retrying a wrong password only delays its message: they are excluded
#: (``NOT_RETRYABLE`` is caught first).
RETRYABLE = (
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
NOT_RETRYABLE = (_redis_errors.AuthenticationError, _redis_errors.AuthorizationError)


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


def chunk_for(socket_timeout: Any) -> float:
    """The longest blocking call (see ``MAX_BLOCK_CHUNK``) for this ``socket_timeout``."""
    if socket_timeout:
        return max(0.05, min(MAX_BLOCK_CHUNK, float(socket_timeout) / 2))
    return MAX_BLOCK_CHUNK


def check_ca(target: RedisTarget, ca: Optional[str]) -> None:
    """``ValueError`` when a CA file is given for a target without TLS, or does not exist."""
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
    check_ca(target, ca)
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
