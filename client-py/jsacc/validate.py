"""Checks of the values a caller hands the client, each raising ``ValueError`` that names the
problem before anything is sent to Redis. Pure functions, no Redis needed."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Union

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


#: Longest ``batch_wait`` (s), as the controller's ``schemas::args::MAX_SECONDS`` (10 years).
MAX_SECONDS = 10 * 365 * 24 * 3600

_AMOUNT = re.compile(r"^\s*(\d+)\s*(%?)\s*$")


def check_amount(name: str, value: Any, minimum: int) -> Union[int, str]:
    """A rollout amount (``batch``, ``max_failures``): an integer ``>= minimum``, or a
    percentage string ``"25%"`` (``minimum`` to 100), as the controller checks it. A string
    holding a plain count (``"3"``, from a command line) becomes the integer."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{name}: {value!r} is neither a count nor a percentage like \"25%\"")
    if isinstance(value, int):
        number, percent = value, False
    else:
        m = _AMOUNT.match(value)
        if not m:
            raise ValueError(f"{name}: `{value}` is neither a count nor a percentage "
                             "like \"25%\"")
        number, percent = int(m.group(1)), bool(m.group(2))
    if number < minimum:
        raise ValueError(f"{name}: must be at least {minimum}{'%' if percent else ''}, "
                         f"got {value!r}")
    if percent:
        if number > 100:
            raise ValueError(f"{name}: {number}% is over 100%")
        return f"{number}%"
    return number


def check_rollout_ends(args: Mapping[str, Any]) -> None:
    """A rollout waits for each batch's final results: a job that never ends (recurring, cron,
    long-running) would hold the rest back for ever; refused as the controller refuses it."""
    period = args.get("recurring_period")
    if isinstance(period, (int, float)) and not isinstance(period, bool) and period > 0:
        raise ValueError("batch: a job with args.recurring_period never ends; "
                         "a rollout waits for each batch to end")
    if args.get("cron"):
        raise ValueError("batch: a job with args.cron never ends; "
                         "a rollout waits for each batch to end")
    if args.get("max_time") == -1:
        raise ValueError("batch: a job with args.max_time -1 (long-running) never ends; "
                         "a rollout waits for each batch to end")


def check_rollout(fanout: bool, batch: Any, batch_wait: Any,
                  max_failures: Any) -> Dict[str, Any]:
    """The rollout fields of a command (``batch``, ``batch_wait``, ``max_failures``; ``None``
    left out), checked as the controller checks them: only with ``fanout``, and
    ``batch_wait``/``max_failures`` only with ``batch``."""
    given = {k: v for k, v in (("batch", batch), ("batch_wait", batch_wait),
                               ("max_failures", max_failures)) if v is not None}
    for name in given:
        if not fanout:
            raise ValueError(f"{name}: only a fanout command (fanout=True, jsctl --fanout) "
                             "rolls out in batches")
    if batch is None:
        for name in given:
            raise ValueError(f"{name}: needs batch (the size of each batch)")
        return {}
    out: Dict[str, Any] = {"batch": check_amount("batch", batch, 1)}
    if batch_wait is not None:
        if isinstance(batch_wait, bool) or not isinstance(batch_wait, int) or batch_wait < 0:
            raise ValueError(f"batch_wait: {batch_wait!r} is not a number of seconds >= 0")
        if batch_wait > MAX_SECONDS:
            raise ValueError(f"batch_wait: {batch_wait} is too long: at most {MAX_SECONDS} "
                             "seconds (10 years)")
        out["batch_wait"] = batch_wait
    if max_failures is not None:
        out["max_failures"] = check_amount("max_failures", max_failures, 0)
    return out
