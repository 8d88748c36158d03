"""Exceptions raised by the jsacc client."""

from __future__ import annotations


class JsaccError(Exception):
    """Base class of every error raised by this package."""


class Timeout(JsaccError, TimeoutError):
    """No result arrived within the caller's timeout (a client-side wait).

    This is not the job's ``TIMEOUT`` state (the job's ``max_time`` was hit): that one is a
    normal result with ``state == "TIMEOUT"``.
    """


class RedisUnavailable(JsaccError, ConnectionError):
    """Redis could not be reached (connection refused, DNS, authentication, ...).

    The message names the Redis URL (with any password masked).
    """
