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


def _int_or_none(value: Any) -> Optional[int]:
    value = decode(value)
    if isinstance(value, int):
        return value
    return int(value) if _is_int_text(value) else None


def output_line(stream_id: Any, fields: Mapping[Any, Any]) -> Dict[str, Any]:
    """An ``output:<id>`` stream entry as a line dict: ``agent`` ("gid:nid"), ``fd`` (1 stdout,
    2 stderr), ``level`` (the line protocol's level; 0 for a line jsacc added, such as the cap
    marker), ``line`` (as printed, no line break), ``time`` (ms) and ``id`` (the stream id).
    Integers that are missing or not numbers are 0."""
    f = {decode(k): decode(v) for k, v in fields.items()}
    return {"id": decode(stream_id), "agent": f.get("agent") or "",
            "fd": _int_or_none(f.get("fd")) or 0, "level": _int_or_none(f.get("level")) or 0,
            "line": f.get("line") or "", "time": _int_or_none(f.get("time")) or 0}


#: ``job:<id>`` fields a job listing reads (``HMGET``): all but the results.
JOB_SUMMARY_FIELDS = ("cmd", "state", "created", "started", "ended", "targets", "submitted_by",
                      "rollout", "released", "failed", "stopped")

#: Prefix of the ``job:<id>`` fields that hold one agent's final state (``state:<gid>:<nid>``).
STATE_FIELD_PREFIX = "state:"


def _json_or(raw: Any, default: Any) -> Any:
    try:
        return json.loads(raw) if isinstance(raw, str) and raw else default
    except ValueError:
        return default


def _agent_entry(state: Any, result: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """One target of a job record: its final state (``None`` while it has not answered) and,
    from its result, exit code, start, run time, end (ms) and the result itself."""
    result = result if isinstance(result, dict) else None
    get = (result or {}).get
    start, ran = get("starttime"), get("time")
    end = start + ran if isinstance(start, int) and isinstance(ran, int) and start else None
    return {"state": decode(state) or get("state"), "exit_code": get("exit_code"),
            "starttime": start or None, "time": ran, "endtime": end, "result": result}


def job_record(job_id: str, raw: Mapping[Any, Any]) -> Optional[Dict[str, Any]]:
    """A ``job:<id>`` hash (all of it, or the ``JOB_SUMMARY_FIELDS`` and ``state:<g:n>`` fields
    of a listing) as the dict :meth:`jsacc.Job.record` returns; ``None`` when the hash is empty
    (an unknown or expired job).

    Keys: ``id``, ``state``, ``command`` (the command as pushed, a dict; ``None`` if not JSON),
    ``cmd`` (its name: ``execute``, ``ping``...), ``domain``, ``name``, ``submitted_by``,
    ``targets`` (list of "gid:nid"), ``created``, ``started`` (first delivery), ``ended`` (ms
    since the epoch, ``None`` until then), ``duration`` (s from ``started``, else ``created``,
    to ``ended``; ``None`` while it runs), and ``agents``: "gid:nid" → ``{"state",
    "exit_code", "starttime", "time", "endtime", "result"}`` (``result`` is the agent's final
    result, ``None`` until it answered or when the listing did not read it)."""
    f = {decode(k): decode(v) for k, v in raw.items() if v is not None}
    if not f:
        return None
    command = _json_or(f.get("cmd"), None)
    command = command if isinstance(command, dict) else None
    args = command.get("args") if command else None
    args = args if isinstance(args, dict) else {}
    targets = _json_or(f.get("targets"), [])
    targets = [str(t) for t in targets] if isinstance(targets, list) else []
    created, started, ended = (_int_or_none(f.get(k)) for k in ("created", "started", "ended"))
    begin = started or created
    results = {}
    for field, value in f.items():
        if field.startswith(RESULT_FIELD_PREFIX):
            results[field[len(RESULT_FIELD_PREFIX):]] = _json_or(value, None)
    agents = {t: _agent_entry(f.get(STATE_FIELD_PREFIX + t), results.get(t))
              for t in targets + sorted(set(results) - set(targets))}
    rollout = _rollout(f)
    if rollout is not None:
        for t in targets[rollout["released"]:]:
            if agents[t]["state"] is None:
                agents[t]["state"] = "PENDING"
    return {"id": job_id, "state": f.get("state"), "command": command,
            "cmd": command.get("cmd") if command else None,
            "domain": str(args.get("domain") or ""), "name": str(args.get("name") or ""),
            "submitted_by": f.get("submitted_by"), "targets": targets, "created": created,
            "started": started, "ended": ended,
            "duration": (ended - begin) / 1000.0 if ended and begin else None,
            "agents": agents, "rollout": rollout}


def _rollout(f: Mapping[str, str]) -> Optional[Dict[str, Any]]:
    """A rollout's progress (issue 14) from its job record: ``batch``, ``batch_wait``,
    ``max_failures`` (``None``: no limit), ``released`` (targets sent the job so far, the first
    ones of ``targets``), ``failed`` (of those, how many ended other than OK), ``stopped`` (why
    the rest ended, once it stopped); ``None`` for a job that is not a rollout."""
    plan = _json_or(f.get("rollout"), None)
    if not isinstance(plan, dict):
        return None
    return {"batch": plan.get("batch"), "batch_wait": plan.get("batch_wait"),
            "max_failures": plan.get("max_failures"),
            "released": _int_or_none(f.get("released")) or 0,
            "failed": _int_or_none(f.get("failed")) or 0, "stopped": f.get("stopped")}
