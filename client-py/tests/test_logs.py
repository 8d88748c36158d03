"""Logs through the client (issue 4): get_msgs/del_msgs on an agent, the forwarded stream
``log.<domain>.<name>`` read and followed, and ``jsctl logs [-f]``. Stack tests run against the
real redis-server, jsacc and jsagent of conftest.py."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

from jsacc.keys import log_key
from jsacc.records import log_entry

from conftest import run_jsctl

WAIT = 30


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def wait_logs(client, domain, name, n, timeout=WAIT):
    deadline = time.monotonic() + timeout
    got = client.logs(domain, name, count=1000)
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.1)
        got = client.logs(domain, name, count=1000)
    return got


# -- unit -------------------------------------------------------------------------------------

def test_log_key_is_the_contracts():
    assert log_key("ops", "backup") == "log.ops.backup"


def test_stream_entries_become_messages_with_integers():
    m = log_entry(b"1-0", {b"id": b"17", b"level": b"8", b"data": b"x", b"gid": b"1",
                           b"nid": b"2", b"epoch": b"5", b"jobid": b"j"})
    assert m == {"id": 17, "level": 8, "data": "x", "gid": 1, "nid": 2, "epoch": 5, "jobid": "j",
                 "stream_id": "1-0"}


# -- stack ------------------------------------------------------------------------------------

def test_get_msgs_and_del_msgs(client):
    job = client.execute("sh", ["-c", "echo out; echo 3::users; echo 7::careful >&2"], gid=1, nid=1,
                         domain="pytest", name="msgs")
    assert job.result(timeout=WAIT)["state"] == "OK"
    got = client.get_msgs(gid=1, nid=1, jobid=job.id).result(timeout=WAIT)
    assert got["state"] == "OK", got
    # stdout and stderr are read apart: their relative order is not kept.
    assert sorted((m["level"], m["data"]) for m in got["data"]) == [
        (1, "out"), (3, "users"), (7, "careful")]
    only = client.get_msgs(gid=1, nid=1, jobid=job.id, levels="3").result(timeout=WAIT)
    assert [m["data"] for m in only["data"]] == ["users"]
    deleted = client.del_msgs(gid=1, nid=1, jobid=job.id, levels="1-3").result(timeout=WAIT)
    assert deleted["data"] == 2
    left = client.get_msgs(gid=1, nid=1, jobid=job.id).result(timeout=WAIT)
    assert [m["data"] for m in left["data"]] == ["careful"]


def test_logs_reads_the_forwarded_stream(client):
    name = unique("fwd")
    job = client.execute("sh", ["-c", "echo 3::not forwarded; echo 8::first; echo 9::second"],
                         gid=1, nid=1, domain="pytest", name=name)
    result = job.result(timeout=WAIT)
    assert result["critical"] == "second"
    got = wait_logs(client, "pytest", name, 2)
    assert [(m["level"], m["data"], m["gid"], m["nid"]) for m in got] == [
        (8, "first", 1, 1), (9, "second", 1, 1)]
    assert all(m["jobid"] == job.id for m in got)
    assert [m["data"] for m in client.logs("pytest", name, count=1)] == ["second"]
    assert [m["data"] for m in client.logs("pytest", name, since=got[0]["stream_id"])] == ["second"]
    assert [m["data"] for m in client.logs("pytest", name, since="0")] == ["first", "second"]


def test_follow_logs_waits_longer_than_the_socket_timeout(client):
    name = unique("follow")
    job = client.execute("sh", ["-c", "sleep 6; echo 8::late"], gid=1, nid=1, domain="pytest",
                         name=name)
    got = next(client.follow_logs("pytest", name, since="0", timeout=WAIT), None)
    assert got is not None and got["data"] == "late"
    assert job.result(timeout=WAIT)["state"] == "OK"


def test_jsctl_logs_prints_and_follows(stack, client):
    name = unique("cli")
    client.execute("sh", ["-c", "echo 8::before"], gid=1, nid=1, domain="pytest",
                   name=name).result(timeout=WAIT)
    wait_logs(client, "pytest", name, 1)
    cp = run_jsctl("logs", "pytest", name, redis_url=stack.redis_url)
    assert cp.returncode == 0, cp.stderr
    out = cp.stdout.rstrip()
    assert " 1:1 L8 " in out and out.endswith(" before"), out
    argv = [sys.executable, "-m", "jsacc.cli", "--redis", stack.redis_url, "logs", "pytest", name,
            "-f", "-n", "1"]
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        # It prints "before", then follows from it: nothing after it can be missed.
        assert follower.stdout.readline().rstrip().endswith(" before")
        client.execute("sh", ["-c", "echo 9::after"], gid=1, nid=1, domain="pytest",
                       name=name).result(timeout=WAIT)
        line = follower.stdout.readline()
        assert line.rstrip().endswith("after") and " L9 " in line, line
    finally:
        follower.terminate()
        follower.wait(timeout=10)
