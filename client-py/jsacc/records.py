"""What Redis answers, as the dicts the client returns: pure functions from raw replies (stream
entries, hashes) to Python values, so they are tested without a Redis. Entries that jsacc did not
write (not JSON, not ``gid:nid``) are skipped rather than failing a whole listing."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .keys import RESULT_FIELD_PREFIX

#: Fields of a log stream entry that are integers (DESIGN §3 log message, plus gid and nid).
LOG_INT_FIELDS = ("id", "epoch", "level", "gid", "nid")


def decode(value: Any) -> Any:
    """``bytes`` as text (invalid UTF-8 replaced), anything else as it is."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _is_int_text(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip("-").isdigit()


def log_entry(stream_id: Any, fields: Mapping[Any, Any]) -> Dict[str, Any]:
    """A ``log.<domain>.<name>`` stream entry as a dict: the message's fields (integers as
    ints) and ``stream_id``."""
    msg: Dict[str, Any] = {decode(k): decode(v) for k, v in fields.items()}
    for field in LOG_INT_FIELDS:
        if _is_int_text(msg.get(field)):
            msg[field] = int(msg[field])
    msg["stream_id"] = decode(stream_id)
    return msg


def job_results(record: Mapping[Any, Any]) -> Dict[str, Dict[str, Any]]:
    """The ``result:<gid>:<nid>`` fields of a ``job:<id>`` hash as ``"gid:nid"`` → result."""
    out = {}
    for field, value in record.items():
        field = decode(field)
        if field.startswith(RESULT_FIELD_PREFIX):
            out[field[len(RESULT_FIELD_PREFIX):]] = json.loads(decode(value))
    return out


def stats_latest(raw: Mapping[Any, Any]) -> Dict[str, Dict[str, Any]]:
    """A ``stats:{gid:nid}:latest`` hash as metric key → values, sorted by key."""
    out = {}
    for key, value in raw.items():
        try:
            out[decode(key)] = json.loads(decode(value))
        except ValueError:
            continue  # not written by jsacc: skip rather than fail the reading
    return dict(sorted(out.items()))


def stats_batches(entries: Iterable[Tuple[Any, Mapping[Any, Any]]]) -> List[Dict[str, Any]]:
    """``stats:{gid:nid}`` stream entries (in the order given) as batches (DESIGN §7: gid, nid,
    epoch, interval, metrics) with the entry id as ``stream_id``."""
    out = []
    for entry_id, fields in entries:
        fields = {decode(k): decode(v) for k, v in fields.items()}
        try:
            batch = json.loads(fields.get("batch", ""))
        except ValueError:
            continue
        batch["stream_id"] = decode(entry_id)
        out.append(batch)
    return out


def _roles(roles: Any) -> List[Any]:
    """An agent hash's ``roles``: a JSON list (older controllers: comma-separated)."""
    if isinstance(roles, str):
        try:
            roles = json.loads(roles) if roles else []
        except ValueError:
            roles = [x.strip() for x in roles.split(",") if x.strip()]
    return roles if isinstance(roles, list) else []


def agent_info(gid: int, nid: int, member: str, last_seen: int,
               record: Optional[Mapping[Any, Any]], now_ms: int,
               online_within: float) -> Dict[str, Any]:
    """One agent as :meth:`jsacc.Client.agents` lists it: its ``agent:{gid:nid}`` hash
    (``record``) joined with its ``agents`` entry (``member``, score ``last_seen``), judged
    online against Redis's clock ``now_ms``."""
    info: Dict[str, Any] = {decode(k): decode(v) for k, v in (record or {}).items()}
    info["roles"] = _roles(info.get("roles"))
    if _is_int_text(info.get("started")):
        info["started"] = int(info["started"])
    for field in ("hostname", "os", "arch", "version"):
        info.setdefault(field, "")
    info.setdefault("started", None)
    ago = max(0.0, (now_ms - last_seen) / 1000.0)
    info.update(agent=member, gid=gid, nid=nid, last_seen=last_seen, last_seen_ago=ago,
                online=ago <= online_within)
    return info
