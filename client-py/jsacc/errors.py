"""Exceptions raised by the jsacc client."""

from __future__ import annotations


class JsaccError(Exception):
    """Base class of every error raised by this package."""


class Timeout(JsaccError, TimeoutError):
    """No result arrived within the caller's timeout (a client-side wait).

    This is not the job's ``TIMEOUT`` state (the job's ``max_time`` was hit): that one is a
    normal result with ``state == "TIMEOUT"``.
    """


class UnknownJob(JsaccError, LookupError):
    """No record ``job:<id>`` for a job id: never routed (a mistyped id, no controller
    running) or expired after the controller's ``--result-ttl``."""


class RedisUnavailable(JsaccError, ConnectionError):
    """Redis could not be reached (connection refused, DNS, authentication, ...).

    The message names the Redis URL (with any password masked).
    """


class PushUnconfirmed(RedisUnavailable):
    """Redis did not confirm a pushed command, after the client's retries: the connection failed
    during ``LPUSH``/``WAIT`` (e.g. in a failover), or ``WAIT`` answered that fewer replicas than
    asked hold a copy. The command may or may not have been queued.

    ``job_id`` is its id (``Client.job(job_id)`` watches it) and ``payload`` the exact bytes
    pushed: pushing them again is safe, because the controller drops an identical re-push of a
    command it already routed.
    """

    def __init__(self, message: str, job_id: str, payload: str):
        super().__init__(message)
        self.job_id = job_id
        self.payload = payload


class FileTransferError(JsaccError):
    """A ``put_file`` or ``get_file`` transfer failed: a chunk ended otherwise than ``OK`` (the
    agent's reason is in the message: a path that is not absolute, a file over the agent's
    ``max_file_size``, a SHA-256 mismatch...), or what arrived does not match its SHA-256."""
