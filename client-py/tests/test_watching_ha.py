"""Live output and job history on a real Redis Cluster and a real Sentinel set (no controller,
no agent): the keys of DESIGN §11 are written by hand and read through the client, one key per
call (a cluster spreads job records, indexes and streams over its slots)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

import jsacc

from conftest import run_jsctl

TOPOLOGIES = ["redis_cluster", "redis_sentinel"]


@pytest.fixture(params=TOPOLOGIES)
def ha(request):
    topo = request.getfixturevalue(request.param)
    c = jsacc.Client(topo.url)
    written = []
    yield topo, c, written
    for key in written:
        c.redis.delete(key)
    c.close()


def write_job(c, written, job_id, created, state, agent="1:1", name="ha/t"):
    domain, short = name.split("/")
    command = {"id": job_id, "gid": 1, "nid": int(agent.split(":")[1]), "cmd": "execute",
               "args": {"domain": domain, "name": short, "cmd": "echo", "args": ["x"]}}
    fields = {"cmd": json.dumps(command), "state": state, "created": created,
              "targets": json.dumps([agent]), "submitted_by": "redis"}
    if state not in ("QUEUED", "RUNNING"):
        result = {"id": job_id, "gid": 1, "nid": 1, "state": state, "exit_code": 0,
                  "time": 5, "starttime": created + 1, "streams": ["x\n", ""], "data": ""}
        fields.update({f"state:{agent}": state, f"result:{agent}": json.dumps(result),
                       "started": created + 1, "ended": created + 10})
    c.redis.hset(f"job:{job_id}", mapping=fields)
    for key in ("jobs:all", f"jobs:agent:{agent}", f"jobs:name:{name}"):
        c.redis.zadd(key, {job_id: created})
    written += [f"job:{job_id}", "jobs:all", f"jobs:agent:{agent}", f"jobs:name:{name}"]


def test_history_and_records(ha):
    topo, c, written = ha
    name = f"ha/{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    ids = [uuid.uuid4().hex for _ in range(5)]
    for i, job_id in enumerate(ids):
        write_job(c, written, job_id, now - 10_000 * (5 - i), ["OK", "ERROR"][i % 2],
                  agent=f"1:{1 + i % 2}", name=name)
    c.redis.zadd(f"jobs:name:{name}", {"expired": now})   # its record is gone
    newest_first = list(reversed(ids))
    assert [r["id"] for r in c.jobs(name=name)] == newest_first
    assert [r["id"] for r in c.jobs(name=name, state="ERROR")] == [ids[3], ids[1]]
    assert [r["id"] for r in c.jobs(name=name, agent="1:1", limit=2)] == [ids[4], ids[2]]
    assert [r["id"] for r in c.jobs(name=name, since=25)] == newest_first[:2]
    r = c.jobs(name=name, limit=1)[0]
    assert r["agents"]["1:1"]["state"] == "OK" and r["agents"]["1:1"]["result"] is None
    record = c.job(ids[0]).record()
    assert record["agents"]["1:1"]["result"]["streams"] == ["x\n", ""]
    assert record["duration"] == 0.009
    cp = run_jsctl("jobs", "--name", name, "--state", "ok", "--json", redis_url=topo.url)
    assert cp.returncode == 0, cp.stderr
    assert [x["id"] for x in json.loads(cp.stdout)] == [ids[4], ids[2], ids[0]]
    cp = run_jsctl("job", ids[1], redis_url=topo.url)
    assert cp.returncode == 0 and "ERROR" in cp.stdout, cp.stderr


def test_output_follow(ha):
    topo, c, written = ha
    job_id = uuid.uuid4().hex
    write_job(c, written, job_id, int(time.time() * 1000), "RUNNING")
    key = f"output:{job_id}"
    written.append(key)
    c.redis.xadd(key, {"agent": "1:1", "fd": 1, "level": 1, "line": "first", "time": 1})

    def finish():
        c.redis.xadd(key, {"agent": "1:1", "fd": 2, "level": 3, "line": "3::second", "time": 2})
        c.redis.hset(f"job:{job_id}", "state", "OK")

    timer = threading.Timer(1.5, finish)
    timer.start()
    try:
        seen = [(x["line"], x["fd"], x["level"]) for x in
                c.job(job_id).output(follow=True, timeout=20)]
    finally:
        timer.join()
    assert seen == [("first", 1, 1), ("3::second", 2, 3)]
    assert len(list(c.job(job_id).output())) == 2
    cp = run_jsctl("job", "follow", job_id, redis_url=topo.url)
    assert cp.returncode == 0, cp.stderr   # no result in the record: judged by its state
    assert cp.stdout == "first\n" and cp.stderr.startswith("second\n"), cp.stderr
