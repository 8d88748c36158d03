"""Operator accounts and the audit trail on the real stack: `jsacc user add|list|revoke`
store only a token's hash, and every change of accounts and agent tokens is in the stream
`audit`, which `jsctl audit` and `Client.audit()` show."""

from __future__ import annotations

import json
import subprocess

import jsacc

from conftest import run_jsctl


def jsacc_cli(stack, *args: str) -> subprocess.CompletedProcess:
    argv = [stack.exe("jsacc"), *args, "-r", stack.redis_arg,
            "--data-dir", str(stack.tmp / "token-data")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_accounts_are_added_listed_and_revoked_and_each_change_is_audited(stack):
    added = jsacc_cli(stack, "user", "add", "alice", "--role", "operator")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("jso_") and len(token) == 4 + 64
    c = jsacc.Client(stack.redis_url)
    assert token not in json.dumps(c.redis.hgetall("auth:users"))  # only its hash is kept

    again = jsacc_cli(stack, "user", "add", "alice", "--role", "admin")
    assert again.returncode == 1 and "exists" in again.stderr
    listed = jsacc_cli(stack, "user", "list")
    assert listed.returncode == 0 and "alice" in listed.stdout and "operator" in listed.stdout

    bad = jsacc_cli(stack, "user", "add", "bob smith", "--role", "viewer")
    assert bad.returncode == 2 and "account name" in bad.stderr
    role = jsacc_cli(stack, "user", "add", "bob", "--role", "root")
    assert role.returncode == 2 and "admin, operator, viewer" in role.stderr

    revoked = jsacc_cli(stack, "user", "revoke", "alice")
    assert revoked.returncode == 0, revoked.stderr
    gone = jsacc_cli(stack, "user", "revoke", "alice")
    assert gone.returncode == 1 and "no account" in gone.stderr

    trail = c.audit(count=100)
    whats = [(e["what"], e["target"]) for e in trail]
    assert ("user revoke", "account alice") in whats
    assert ("user add", "account alice (operator)") in whats
    assert any(w == "token add" for w, _ in whats)  # the stack's agents got tokens
    assert all(e["who"].startswith("cli:") and e["from"] and e["time"] > 0 for e in trail)
    assert trail[0]["what"] == "user revoke"  # newest first

    shown = run_jsctl("audit", "--limit", "5", redis_url=stack.redis_url)
    assert shown.returncode == 0, shown.stderr
    assert "user revoke" in shown.stdout and "WHO" in shown.stdout
    as_json = json.loads(run_jsctl("audit", "--json", redis_url=stack.redis_url).stdout)
    assert as_json[0]["what"] == "user revoke"
    c.close()
