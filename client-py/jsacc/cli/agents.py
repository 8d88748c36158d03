"""``jsctl agents``: list the agents the controller knows and whether they are online."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..client import Client
from .args import nonneg_float
from .exits import EXIT_OK
from .output import ago, err, table


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "agents", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list the agents the controller knows",
        description="List agents: gid:nid, hostname, os, roles, when last seen and whether "
                    "online (seen within --online-within seconds).",
        epilog="examples:\n  jsctl agents\n  jsctl agents --json | jq '.[] | select(.online)'\n\n"
               "exit codes: 0 listed (also when empty), 6 cannot reach Redis.\n")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--online-within", type=nonneg_float, default=60.0, metavar="S",
                   help="an agent is online when seen within S seconds (default 60)")
    p.set_defaults(func=run)


def run(client: Client, a: argparse.Namespace) -> int:
    agents = client.agents(online_within=a.online_within)
    if a.json:
        print(json.dumps(agents, indent=2))
        return EXIT_OK
    if not agents:
        err("no agents registered")
        return EXIT_OK
    rows = [("AGENT", "HOSTNAME", "OS", "ROLES", "LAST SEEN", "ONLINE")]
    for ag in agents:
        rows.append((ag["agent"], str(ag.get("hostname") or "-"), str(ag.get("os") or "-"),
                     ",".join(ag.get("roles") or []) or "-", ago(ag["last_seen_ago"]),
                     "yes" if ag["online"] else "no"))
    print("\n".join(table(rows)))
    return EXIT_OK
