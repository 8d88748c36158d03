"""Building commands (DESIGN §3): pure functions from Python values to the command dict that
is pushed onto ``cmds_queue``, validated first. No Redis needed; unit-tested on their own."""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from .validate import check_id, check_int, check_rollout, check_rollout_ends, check_text

#: The host-fact internal commands (DESIGN §6.2) by short name, as ``jsctl info`` takes them.
INFO_COMMANDS = {"os": "get_os_info", "cpu": "get_cpu_info", "mem": "get_mem_info",
                 "disk": "get_disk_info", "nic": "get_nic_info"}


def new_id() -> str:
    """A fresh job id: a UUID4 as 32 hex digits."""
    return uuid.uuid4().hex


def _check_target(gid: Any, nid: Any, role: Any, fanout: Any) -> None:
    """Exactly one of ``nid`` (one node) and ``role``; ``fanout`` only with ``role``."""
    check_int("gid", gid, 0)
    if nid is None and role is None:
        raise ValueError("no target: give nid (one node) or role (agents of that role)")
    if nid is not None and role is not None:
        raise ValueError("give either nid or role, not both")
    if nid is not None:
        check_int("nid", nid, 0)
    if role is not None and (not isinstance(role, str) or not role):
        raise ValueError(f"role must be a non-empty string, got {role!r}")
    if not isinstance(fanout, bool):
        raise ValueError(f"fanout must be True or False, got {fanout!r}")
    if fanout and role is None:
        raise ValueError("fanout needs role (fanout=True sends to every agent of that role)")


def build_command(
    cmd: str,
    args: Optional[Mapping[str, Any]] = None,
    data: Any = None,
    gid: int = 0,
    nid: Optional[int] = None,
    role: Optional[str] = None,
    fanout: bool = False,
    id: Optional[str] = None,  # noqa: A002 - the contract's field name
    batch: Union[int, str, None] = None,
    batch_wait: Optional[int] = None,
    max_failures: Union[int, str, None] = None,
) -> Dict[str, Any]:
    """Build a command dict (DESIGN §3) and validate what is obviously wrong.

    Exactly one of ``nid`` (one node) and ``role`` (any live agent of that role in grid
    ``gid``; with ``fanout=True`` every one of them) must be given. ``data`` is omitted when
    ``None``. Raises ``ValueError`` naming the problem.

    A fanout rolls out in batches with ``batch`` (a count, or ``"25%"`` of the targets rounded
    up): the next batch is sent once every agent of the last one answered and ``batch_wait``
    seconds passed; when more than ``max_failures`` (a count, or a percentage rounded down;
    default no limit) answered other than ``OK``, the agents not reached yet end ``ERROR``
    ("rollout stopped: ...").
    """
    if not isinstance(cmd, str) or not cmd:
        raise ValueError(f"cmd must be a non-empty string, got {cmd!r}")
    _check_target(gid, nid, role, fanout)
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise ValueError(f"args must be a dict, got {type(args).__name__}")
    job_id = new_id() if id is None else check_id(id)
    rollout = check_rollout(fanout, batch, batch_wait, max_failures)
    if rollout:
        check_rollout_ends(args)

    command: Dict[str, Any] = {"id": job_id, "gid": gid}
    if nid is not None:
        command["nid"] = nid
    else:
        command["role"] = role
        if fanout:
            command["fanout"] = True
    command.update(rollout)
    command["cmd"] = cmd
    command["args"] = dict(args)
    if data is not None:
        command["data"] = data
    try:
        json.dumps(command)
    except (TypeError, ValueError) as e:
        raise ValueError(f"command is not JSON-serializable (args or data): {e}") from None
    return command


def build_execute_args(
    cmd: Optional[Union[str, "os.PathLike[str]"]] = None,
    args: Iterable[Any] = (),
    domain: str = "",
    name: str = "",
    workingdir: Optional[str] = None,
    env: Optional[Mapping[str, Any]] = None,
    max_time: int = 0,
    output: Optional[bool] = None,
    **more_args: Any,
) -> Dict[str, Any]:
    """The ``args`` object of the execute family (DESIGN §3 table).

    ``cmd`` is the executable (full path or on PATH; no shell unless it is one), ``args`` its
    argument list (numbers and paths are turned into strings). ``more_args`` adds any other
    field of the table (``max_restart``, ``recurring_period``, ``queue``, ``loglevels``,
    ``max_wait``, ``script``, ...); ``None`` values are left out. ``output=False`` turns the
    job's live output (``output:<id>``) off; ``None`` leaves the agent's default (on).
    """
    out: Dict[str, Any] = {"domain": domain, "name": name}
    if not isinstance(domain, str) or not isinstance(name, str):
        raise ValueError("domain and name must be strings")
    if cmd is not None:
        cmd = check_text("cmd", cmd)
        if not cmd:
            raise ValueError("cmd (the executable) must not be empty")
        out["cmd"] = cmd
    if isinstance(args, (str, bytes)):
        raise ValueError(f"args must be a list of strings, not one string: {args!r}")
    try:
        arg_list = [check_text(f"args[{i}]", a) for i, a in enumerate(args)]
    except TypeError:
        raise ValueError(f"args must be a list of strings, got {args!r}") from None
    if cmd is not None or arg_list:
        out["args"] = arg_list
    if workingdir is not None:
        out["workingdir"] = check_text("workingdir", workingdir)
    if env is not None:
        if not isinstance(env, Mapping):
            raise ValueError(f"env must be a dict of strings, got {type(env).__name__}")
        out["env"] = {str(k): check_text(f"env[{k!r}]", v) for k, v in env.items()}
    out["max_time"] = check_int("max_time", max_time, -1)
    if output is not None:
        if not isinstance(output, bool):
            raise ValueError(f"output must be True, False or None, got {output!r}")
        out["output"] = output
    for key, value in more_args.items():
        if value is not None:
            out[key] = value
    return out
