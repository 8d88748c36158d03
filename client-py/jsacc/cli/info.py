"""``jsctl info``: an agent's host facts (os, cpu, mem, disk, nic), asked for in parallel."""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional

from ..client import Client
from ..command import INFO_COMMANDS
from ..errors import Timeout
from .args import add_agent_options, nonneg_float, resolve_agent
from .exits import EXIT_CODES_HELP, EXIT_NO_RESULT, EXIT_OK, exit_code_for_state
from .output import agent_of, err, reason


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show an agent's host facts (os, cpu, mem, disk, nic)",
        description="Ask agent GID:NID for host facts (the internal commands get_os_info, "
                    "get_cpu_info, get_mem_info, get_disk_info, get_nic_info) and print them; "
                    "all five without WHAT. The positional form `jsctl info GID NID [WHAT...]` "
                    "is deprecated.",
        epilog=f"""\
examples:
  jsctl info --gid 1 --nid 5
  jsctl info --gid 1 --nid 5 mem disk
  jsctl info --gid 1 --nid 5 nic --json | jq '.nics[].mac'

{EXIT_CODES_HELP}""")
    add_agent_options(p, positional_alias=True)
    # Not `choices`: with nargs="*" Python < 3.12 refuses the empty default. Integers pass the
    # type too: the deprecated `jsctl info GID NID [WHAT...]` (settled by check_args).
    p.add_argument("what", nargs="*", type=_what_or_id, metavar="WHAT",
                   help="os, cpu, mem, disk or nic (several allowed; default all)")
    p.add_argument("--timeout", type=nonneg_float, default=30.0, metavar="S",
                   help="seconds to wait for each answer (default 30); then exit 5")
    p.add_argument("--json", action="store_true",
                   help="print the documents as JSON (an object by WHAT when several)")
    p.set_defaults(func=run, check_args=check_args)


def _invalid_what(text: str) -> str:
    return f"invalid choice: {text!r} (choose from {', '.join(INFO_COMMANDS)})"


def _what_or_id(text: str) -> str:
    if text not in INFO_COMMANDS and not text.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(_invalid_what(text))
    return text


def check_args(a: argparse.Namespace) -> Optional[str]:
    """Settles the agent (--gid/--nid, or the deprecated leading GID NID) and checks WHAT."""
    problem, rest = resolve_agent(a, a.what, "info")
    if problem is not None:
        return problem
    bad = [w for w in rest if w not in INFO_COMMANDS]
    if bad:
        return f"info: argument WHAT: {_invalid_what(bad[0])}"
    a.what = rest
    return None


def format_info(value: Any, indent: str = "") -> List[str]:
    """A host-facts document as indented ``key: value`` lines."""
    lines: List[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v and not all(
                    isinstance(x, (int, float, str)) for x in (v if isinstance(v, list) else [{}])):
                lines.append(f"{indent}{k}:")
                lines.extend(format_info(v, indent + "  "))
            elif isinstance(v, list):
                lines.append(f"{indent}{k}: {', '.join(str(x) for x in v)}")
            else:
                lines.append(f"{indent}{k}: {'-' if v is None else v}")
    elif isinstance(value, list):
        for item in value:
            sub = format_info(item, indent + "  ")
            if sub:
                lines.append(f"{indent}- {sub[0].strip()}")
                lines.extend(sub[1:])
    else:
        lines.append(f"{indent}{value}")
    return lines


def run(client: Client, a: argparse.Namespace) -> int:
    wanted = a.what or list(INFO_COMMANDS)
    docs: Dict[str, Any] = {}
    code = EXIT_OK
    # Submitted together, awaited one by one: the answers come in parallel.
    jobs = {w: client.cmd(INFO_COMMANDS[w], gid=a.gid, nid=a.nid) for w in wanted}
    for what, job in jobs.items():
        try:
            result = job.result(timeout=a.timeout)
        except Timeout as e:
            err(str(e))
            code = EXIT_NO_RESULT
            continue
        if result.get("state") != "OK":
            err(f"{INFO_COMMANDS[what]} on {agent_of(result)} ended {result.get('state')}: "
                f"{reason(result)}")
            code = code or exit_code_for_state(result.get("state"))
            continue
        docs[what] = result.get("data")
    if a.json:
        print(json.dumps(docs if len(wanted) > 1 else docs.get(wanted[0]), indent=2))
    else:
        for what, doc in docs.items():
            if len(wanted) > 1:
                print(f"== {what}")
            print("\n".join(format_info(doc)))
    return code
