"""Redis targets: the one parser of the ``-r`` / ``JSACC_REDIS`` / ``jsacc.Client(url)`` forms.

DESIGN.md §11 fixes the forms (the controller accepts the same ones, so one URL works for
``jsacc``, ``jsacc token`` and ``jsctl``)::

    host:port                                           a standalone Redis
    redis://[user:pass@]host[:port][/db]                the same (rediss:// = TLS)
    unix://[user:pass@]/path/to/redis.sock[?db=N]       a standalone Redis on a Unix socket
    redis+sentinel://[user:pass@]h:p[,h:p...]/<master>[/db]   the primary Sentinel names <master>
    redis+cluster://[user:pass@]h:p[,h:p...]            a Redis Cluster (db 0 only)

``rediss+sentinel://`` and ``rediss+cluster://`` are the TLS forms. User and password are
percent-decoded (write ``%40`` for ``@``, ``%2C`` for ``,``, ``%2F`` for ``/``, ``%3A`` for ``:``
in a user name). An IPv6 host is written in brackets: ``[::1]:6379``.

:func:`parse_target` is a pure function (URL → :class:`RedisTarget`), unit-tested on its own;
:mod:`jsacc.client` builds the redis-py client from its answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple
from urllib.parse import unquote

STANDALONE = "standalone"
UNIX = "unix"
SENTINEL = "sentinel"
CLUSTER = "cluster"

#: Port assumed when a host has none: Sentinels listen on 26379 by convention, data nodes 6379.
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

_SCHEMES = {
    "redis": (STANDALONE, False),
    "rediss": (STANDALONE, True),
    "unix": (UNIX, False),
    "redis+sentinel": (SENTINEL, False),
    "rediss+sentinel": (SENTINEL, True),
    "redis+cluster": (CLUSTER, False),
    "rediss+cluster": (CLUSTER, True),
}

_FORMS = ("host:port, redis://[user:pass@]host:port[/db], rediss://..., unix:///path[?db=N], "
          "redis+sentinel://[user:pass@]host:port[,host:port...]/MASTER[/db], "
          "redis+cluster://[user:pass@]host:port[,host:port...] (rediss+... for TLS)")

# A host name or IPv4 address: no brackets, spaces, slashes, '@', ',' or ':'.
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis target URL says, and nothing more (no connection is made).

    ``kind`` is ``"standalone"``, ``"unix"``, ``"sentinel"`` or ``"cluster"``; ``hosts`` the
    ``(host, port)`` pairs (the Sentinels for ``sentinel``, the startup nodes for ``cluster``,
    empty for ``unix``; an IPv6 host without its brackets); ``master`` the Sentinel service
    name; ``path`` the Unix socket; ``tls`` whether to speak TLS.
    """

    kind: str
    hosts: Tuple[Tuple[str, int], ...] = ()
    tls: bool = False
    username: Optional[str] = None
    password: Optional[str] = None
    db: int = 0
    master: Optional[str] = None
    path: Optional[str] = None

    @property
    def replicated(self) -> bool:
        """Whether the target fails over to replicas (Sentinel, Cluster): then a push waits
        for a replica's copy by default, and operations retry across a failover."""
        return self.kind in (SENTINEL, CLUSTER)


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"bad Redis target {mask_url(url)!r}: {why} (forms: {_FORMS})")


def _port(url: str, text: str, host: str) -> int:
    if not text.isdigit():
        raise _bad(url, f"port of {host!r} is not a number: {text!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _bad(url, f"port of {host!r} out of range 1-65535: {port}")
    return port


def _host_port(url: str, item: str, default_port: int) -> Tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if not item:
        raise _bad(url, "empty host")
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise _bad(url, f"unclosed '[' in host {item!r}")
        host, rest = item[1:end], item[end + 1:]
        if not host or not re.fullmatch(r"[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?", host) \
                or ":" not in host:
            raise _bad(url, f"not an IPv6 address in brackets: {item!r}")
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise _bad(url, f"junk after ']' in host {item!r}")
        return host, _port(url, rest[1:], host)
    host, sep, port_text = item.rpartition(":")
    if not sep:
        host, port_text = item, ""
    if ":" in host:
        raise _bad(url, f"IPv6 host {item!r} must be in brackets, e.g. [::1]:6379")
    if not host:
        raise _bad(url, f"empty host in {item!r}")
    if not _HOSTNAME.fullmatch(host):
        raise _bad(url, f"invalid host name {host!r}")
    if sep and not port_text:
        raise _bad(url, f"empty port after {host!r}:")
    return host, (_port(url, port_text, host) if sep else default_port)


def _db(url: str, text: str) -> int:
    if not text.isdigit():
        raise _bad(url, f"db must be a number >= 0, got {text!r}")
    return int(text)


def _userinfo(url: str, userinfo: str) -> Tuple[Optional[str], Optional[str]]:
    """``user:pass``, ``:pass`` or ``user`` (percent-decoded); ``(None, None)`` when absent."""
    user, sep, password = userinfo.partition(":")
    try:
        user_dec = unquote(user, errors="strict") if user else None
        pass_dec = unquote(password, errors="strict") if sep else None
    except UnicodeDecodeError:
        raise _bad(url, "user or password is not valid percent-encoded UTF-8") from None
    return user_dec, pass_dec


def parse_target(url: str) -> RedisTarget:
    """Parse a Redis target (the forms of the module docstring) into a :class:`RedisTarget`.

    Raises ``ValueError`` that names what is wrong (unknown scheme, empty host list, bad port,
    missing master name, bad db, ...) and the accepted forms, with any password masked.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"empty Redis target (forms: {_FORMS})")
    url = url.strip()
    if "://" not in url:
        # host:port (the controller's historical form); the port is required here so that a
        # mistyped URL without "://" is not silently taken as a host name.
        if "/" in url or "@" in url or "," in url:
            raise _bad(url, "no scheme: only host:port may be written without one")
        host, port = _host_port(url, url, 0)
        if port == 0:
            raise _bad(url, "missing port: write host:port")
        return RedisTarget(STANDALONE, ((host, port),))
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise _bad(url, f"unknown scheme {scheme + '://'!r}")
    kind, tls = _SCHEMES[scheme]
    if "#" in rest:
        raise _bad(url, "a fragment ('#...') is not allowed")
    rest, qmark, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username, password = _userinfo(url, userinfo) if at else (None, None)

    if kind == UNIX:
        if hostlist:
            raise _bad(url, f"a unix:// URL has no host ({hostlist!r}): unix:///path/to/sock")
        if not path:
            raise _bad(url, "missing socket path: unix:///path/to/redis.sock")
        db = 0
        if qmark:
            for item in query.split("&"):
                key, eq, value = item.partition("=")
                if key != "db" or not eq:
                    raise _bad(url, f"unknown query parameter {item!r} (only db=N)")
                db = _db(url, value)
        return RedisTarget(UNIX, (), False, username, password, db, path="/" + path)

    if qmark:
        raise _bad(url, f"query parameters are not supported ({'?' + query!r})")
    default_port = DEFAULT_SENTINEL_PORT if kind == SENTINEL else DEFAULT_PORT
    if not hostlist:
        raise _bad(url, "empty host list" if kind in (SENTINEL, CLUSTER) else "missing host")
    hosts = tuple(_host_port(url, item, default_port) for item in hostlist.split(","))
    if kind == STANDALONE and len(hosts) > 1:
        raise _bad(url, f"several hosts need {'rediss' if tls else 'redis'}+sentinel:// or "
                        f"{'rediss' if tls else 'redis'}+cluster://")
    if len(set(hosts)) != len(hosts):
        raise _bad(url, "a host is listed twice")
    parts = path.split("/") if slash else []
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash is harmless
    if kind == SENTINEL:
        if not parts or not parts[0]:
            raise _bad(url, "missing master name: redis+sentinel://host:port[,...]/MASTER[/db]")
        master = unquote(parts[0])
        if len(parts) > 2:
            raise _bad(url, f"too many path parts after the master name: {'/'.join(parts[1:])!r}")
        db = _db(url, parts[1]) if len(parts) == 2 else 0
        return RedisTarget(SENTINEL, hosts, tls, username, password, db, master=master)
    if len(parts) > 1:
        raise _bad(url, f"too many path parts: {path!r} (only /db)")
    db = _db(url, parts[0]) if parts else 0
    if kind == CLUSTER and db != 0:
        raise _bad(url, f"a Redis Cluster has only db 0, got /{db}")
    return RedisTarget(kind, hosts, tls, username, password, db)


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages. Works on every
    form above (also several hosts), and on text that is not a URL at all."""
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:***@{hosts}{slash}{tail}"
