"""Checks of the values a caller hands the client, each raising ``ValueError`` that names the
problem before anything is sent to Redis. Pure functions, no Redis needed."""

from __future__ import annotations

import os
import re
from typing import Any

#: Longest client-chosen job id.
MAX_ID_LEN = 200

# Job ids travel in URLs (`ack=<id>,<id>`) and Redis keys: no commas, whitespace or control chars.
_ID_BAD = re.compile(r"[,\s\x00-\x1f\x7f-\x9f]")


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_id(job_id: Any) -> str:
    """Validate a client-chosen job id (non-empty string, at most 200 chars, no comma,
    whitespace or control character) and return it."""
    if not isinstance(job_id, str) or not job_id:
        raise ValueError(f"id must be a non-empty string, got {job_id!r}")
    if len(job_id) > MAX_ID_LEN:
        raise ValueError(f"id is longer than {MAX_ID_LEN} characters ({len(job_id)})")
    if _ID_BAD.search(job_id):
        raise ValueError("id must not contain commas, whitespace or control characters: "
                         f"{job_id!r}")
    return job_id


def check_text(name: str, value: Any) -> str:
    """A command-line word (executable, argument, directory, env value) as a string: paths
    and numbers are turned into strings; bytes, bools and other objects are refused."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        raise ValueError(f"{name} must be text, not bytes: {value!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return str(value)
