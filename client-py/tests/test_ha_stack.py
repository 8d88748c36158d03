"""The whole stack (target/debug/jsacc + two jsagents) on a Redis Cluster and on a Sentinel
set: the controller gets the same `-r redis+cluster://...` / `-r redis+sentinel://.../jsacc`
target as the client and `jsacc token add`. One stack per topology, stopped at the end of this
module (so no controller consumes `cmds_queue` while other modules write it by hand)."""

from __future__ import annotations

import json

import pytest

import jsacc

from conftest import Stack, run_jsctl

WAIT = 30


@pytest.fixture(scope="module", params=["redis_cluster", "redis_sentinel"])
def ha_stack(request, tmp_path_factory):
    topo = request.getfixturevalue(request.param)
    if hasattr(topo, "wait_healthy"):
        topo.wait_healthy()  # an earlier module may have failed the Sentinel set over
    # Leftovers of the client-only tests must not be routed by this controller.
    with jsacc.Client(topo.url) as c:
        c.redis.delete("cmds_queue")
    s = Stack(tmp_path_factory.mktemp(f"stack-{request.param}"), redis_target=topo.url)
    try:
        s.up()
        yield s
    finally:
        s.down()


@pytest.fixture
def ha_client(ha_stack):
    c = jsacc.Client(ha_stack.redis_url)
    yield c
    c.close()


def test_execute_round_trip(ha_stack, ha_client):
    assert ha_client.wait_replicas == 1
    job = ha_client.execute("/bin/echo", ["hi", "ha"], gid=1, nid=1, domain="ha", name="echo")
    result = job.result(timeout=WAIT)
    assert result["state"] == "OK", result
    assert result["streams"][0] == "hi ha\n"
    assert job.targets == ["1:1"]
    assert job.stored_results()["1:1"]["state"] == "OK"


def test_fanout_and_role_routing(ha_stack, ha_client):
    results = ha_client.ping(gid=1, role="storage", fanout=True).results(timeout=WAIT)
    assert sorted((r["gid"], r["nid"], r["data"]) for r in results) == \
        [(1, 1, "pong"), (1, 2, "pong")]
    assert ha_client.ping(gid=1, role="web").result(timeout=WAIT)["nid"] == 2


def test_agents_listed(ha_stack, ha_client):
    agents = ha_client.agents()
    assert [(a["agent"], a["online"]) for a in agents] == [("1:1", True), ("1:2", True)]
    assert "web" in agents[1]["roles"]


def test_jsctl_exec_and_ping(ha_stack):
    cp = run_jsctl("exec", "--gid", "1", "--nid", "2", "--timeout", str(WAIT), "--json", "--",
                   "sh", "-c", "echo from-jsctl", redis_url=ha_stack.redis_url)
    assert cp.returncode == 0, cp.stderr
    result = json.loads(cp.stdout)
    assert result["state"] == "OK" and result["streams"][0] == "from-jsctl\n"
    cp = run_jsctl("ping", "--gid", "1", "--nid", "1", redis_url=ha_stack.redis_url)
    assert cp.returncode == 0 and "pong from 1:1" in cp.stdout, cp.stderr


def test_sentinel_failover_under_the_stack(request, ha_stack, ha_client):
    """Last: SIGKILL the primary under a running controller; a job submitted right after is
    still run and answered, through the same Client, once the Sentinels promoted a replica."""
    if "redis_sentinel" not in request.node.callspec.id:
        pytest.skip("Sentinel only (a cluster fails over by itself, tested by the client)")
    sentinel = request.getfixturevalue("redis_sentinel")
    sentinel.wait_healthy()  # an earlier test may have failed it over already
    before = ha_client.execute("/bin/echo", ["before"], gid=1, nid=1).result(timeout=WAIT)
    assert before["state"] == "OK", before
    old = sentinel.kill_primary()
    try:
        job = ha_client.execute("/bin/echo", ["after"], gid=1, nid=2)
        result = job.result(timeout=WAIT)
        assert result["state"] == "OK" and result["streams"][0] == "after\n", result
        assert sentinel.primary_port() != old
    finally:
        sentinel.restart(old)
