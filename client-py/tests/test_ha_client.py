"""The client against a real Redis Cluster and a real Sentinel set (no controller, no agent):
data is written by hand to the keys of DESIGN §4 and read through the client; pushes are read
back from `cmds_queue`. Also the durable push (LPUSH + WAIT) and its retries on a standalone
redis-server, and a Sentinel failover under a live Client.

The Sentinel failover test runs last in this module: it leaves a new primary behind.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry

import jsacc
from jsacc.client import _SentinelConnection, build_command

from conftest import Proc, free_port, run_jsctl

TOPOLOGIES = ["redis_cluster", "redis_sentinel"]


@pytest.fixture(params=TOPOLOGIES)
def ha(request):
    """Each test runs on both topologies; the keys it wrote are deleted after it."""
    topo = request.getfixturevalue(request.param)
    c = jsacc.Client(topo.url)
    written = []
    yield topo, c, written
    c.redis.delete("cmds_queue")
    for key in written:
        c.redis.delete(key)
    c.close()


def _in_background(delay, fn):
    t = threading.Timer(delay, fn)
    t.start()
    return t


def test_push_lands_in_cmds_queue_once_after_wait(ha):
    topo, c, _ = ha
    assert c.wait_replicas == 1
    # A loaded machine (CI builds on the same 2 cores) can take longer than the default 500 ms
    # for a replica's ack; a short WAIT would rightly make the client push again.
    c.wait_ms = 10_000
    c.redis.delete("cmds_queue")
    job = c.ping(gid=1, nid=1)
    queued = c.redis.lrange("cmds_queue", 0, -1)
    assert [json.loads(x) for x in queued] == [job.command]
    # WAIT 1 said a replica has it: the node that holds cmds_queue was asked, on the same
    # connection (a cluster's other primaries never see the key).
    if isinstance(c.redis, redis_py.cluster.RedisCluster):
        node = c.redis.get_node_from_key("cmds_queue")
        direct = redis_py.Redis(host=node.host, port=node.port, decode_responses=True)
        assert direct.llen("cmds_queue") == 1
        assert int(direct.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)) >= 1


def test_job_reads_a_record_and_results_written_by_hand(ha):
    _, c, written = ha
    job_id = jsacc.client.new_id()
    written += [f"job:{job_id}", f"cmds_queue_{job_id}"]
    result = {"id": job_id, "gid": 1, "nid": 1, "cmd": "ping", "args": {}, "data": "pong",
              "level": 0, "state": "OK", "time": 1, "starttime": 1, "exit_code": None,
              "streams": ["", ""], "critical": ""}
    c.redis.hset(f"job:{job_id}", mapping={"state": "OK", "targets": '["1:1","1:2"]',
                                           "result:1:1": json.dumps(result)})
    c.redis.rpush(f"cmds_queue_{job_id}", json.dumps(result))
    job = c.job(job_id)
    assert job.state == "OK" and job.targets == ["1:1", "1:2"]
    assert job.stored_results() == {"1:1": result}
    assert job.result(timeout=5) == result
    # The second result comes later than one blocking chunk (2 s): BLPOP waits across chunks.
    second = dict(result, nid=2)
    t = _in_background(2.5, lambda: c.redis.rpush(f"cmds_queue_{job_id}", json.dumps(second)))
    assert job.results(timeout=10) == [result, second]
    t.join()
    assert c.job(jsacc.client.new_id()).state is None


def test_agents_stats_logs_written_by_hand(ha):
    topo, c, written = ha
    now = int(time.time() * 1000)
    agents = {(1, 1): ["storage"], (1, 2): ["web"], (7, 42): []}  # three slots
    written.append("agents")
    for (g, n), roles in agents.items():
        c.redis.zadd("agents", {f"{g}:{n}": now})
        c.redis.hset(f"agent:{{{g}:{n}}}", mapping={"hostname": f"h{n}", "os": "linux",
                                                    "roles": json.dumps(roles),
                                                    "started": str(now)})
        written.append(f"agent:{{{g}:{n}}}")
    listed = c.agents()
    assert [(a["gid"], a["nid"], a["roles"], a["online"]) for a in listed] == \
        [(g, n, r, True) for (g, n), r in sorted(agents.items())]
    assert listed[2]["hostname"] == "h42" and listed[2]["started"] == now

    written += ["stats:{7:42}:latest", "stats:{7:42}"]
    metric = {"type": "counter", "epoch": now, "interval": 10, "sum": 3, "rate": 0.3}
    c.redis.hset("stats:{7:42}:latest", "ops.web.hits", json.dumps(metric))
    batch = {"gid": 7, "nid": 42, "epoch": now, "interval": 10,
             "metrics": [dict(metric, key="ops.web.hits")]}
    sid = c.redis.xadd("stats:{7:42}", {"batch": json.dumps(batch)})
    assert c.stats(7, 42) == {"ops.web.hits": metric}
    assert c.stats_batches(7, 42) == [dict(batch, stream_id=sid)]

    written.append("log.ha.test")
    for i in range(3):
        c.redis.xadd("log.ha.test", {"id": i, "jobid": "j", "domain": "ha", "name": "test",
                                     "epoch": now + i, "level": 7, "data": f"line {i}",
                                     "gid": 7, "nid": 42})
    logs = c.logs("ha", "test", count=2)
    assert [m["data"] for m in logs] == ["line 1", "line 2"] and logs[0]["gid"] == 7
    assert [m["data"] for m in c.logs("ha", "test", since="0")] == ["line 0", "line 1", "line 2"]
    t = _in_background(0.3, lambda: c.redis.xadd("log.ha.test", {"data": "new", "level": 7}))
    followed = next(iter(c.follow_logs("ha", "test", timeout=10)))
    t.join()
    assert followed["data"] == "new"

    # The same through jsctl, with -r.
    cp = run_jsctl("agents", "--json", redis_url=topo.url)
    assert cp.returncode == 0, cp.stderr
    assert [a["agent"] for a in json.loads(cp.stdout)] == ["1:1", "1:2", "7:42"]
    cp = run_jsctl("stats", "7", "42", "--json", redis_url=topo.url)
    assert cp.returncode == 0 and json.loads(cp.stdout) == {"ops.web.hits": metric}, cp.stderr
    cp = run_jsctl("logs", "ha", "test", "-n", "1", "--json", redis_url=topo.url)
    assert cp.returncode == 0 and json.loads(cp.stdout)["data"] == "new", cp.stderr


def test_jsctl_push_waits_and_times_out_on_no_result(ha):
    topo, c, _ = ha
    c.redis.delete("cmds_queue")
    cp = run_jsctl("-r", topo.url, "ping", "--nid", "3", "--timeout", "0.2", redis_url=None)
    assert cp.returncode == 5, cp.stderr  # pushed (WAIT ok), nobody answered
    assert c.redis.llen("cmds_queue") == 1


# -- the durable push on a standalone redis-server (no replica) -----------------------------

@pytest.fixture(scope="module")
def lone_redis(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lone-redis")
    port = free_port()
    p = Proc("redis-server", [shutil.which("redis-server") or "redis-server", "--port", str(port),
                              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--dir", str(tmp)], tmp)
    r = redis_py.Redis(host="127.0.0.1", port=port, decode_responses=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            r.ping()
            break
        except redis_py.ConnectionError:
            assert time.monotonic() < deadline, p.tail()
            time.sleep(0.05)
    yield port, r
    p.stop()


def _wait_calls(r) -> int:
    return int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def test_wait_shortfall_pushes_the_same_bytes_again_then_raises(lone_redis):
    port, r = lone_redis
    r.delete("cmds_queue")
    c = jsacc.Client(f"127.0.0.1:{port}", wait_replicas=1, wait_ms=20, retries=3,
                     retry_backoff=0.01)
    before = _wait_calls(r)
    command = build_command("ping", gid=1, nid=1)
    with pytest.raises(jsacc.PushUnconfirmed) as e:
        c.push(command)
    msg = str(e.value)
    assert command["id"] in msg and "may or may not have been queued" in msg, msg
    assert "4 attempt(s)" in msg and "only 0 replica(s)" in msg, msg
    assert e.value.job_id == command["id"]
    assert isinstance(e.value, jsacc.RedisUnavailable)
    queued = r.lrange("cmds_queue", 0, -1)
    assert len(queued) == 4 and len(set(queued)) == 1 and queued[0] == e.value.payload
    assert json.loads(queued[0]) == command
    assert _wait_calls(r) - before == 4


def test_no_wait_without_wait_replicas(lone_redis):
    port, r = lone_redis
    r.delete("cmds_queue")
    before = _wait_calls(r)
    for c in (jsacc.Client(f"redis://127.0.0.1:{port}"),
              jsacc.Client(f"127.0.0.1:{port}", wait_replicas=0, retries=3)):
        assert c.wait_replicas == 0
        c.ping(gid=1, nid=1)
    assert r.llen("cmds_queue") == 2 and _wait_calls(r) == before


def test_sentinel_connection_sends_credentials_only_when_wanted(lone_redis):
    # A Sentinel without users: the URL's user and password (for the data nodes) are dropped.
    port, _ = lone_redis
    creds = {"username": "jsacc", "password": "for-the-data-nodes"}
    pool = redis_py.ConnectionPool(connection_class=_SentinelConnection, host="127.0.0.1",
                                   port=port, **creds)
    assert redis_py.Redis(connection_pool=pool).ping()
    # A plain connection with them fails: the fallback is what made it work.
    with pytest.raises(redis_py.AuthenticationError):
        redis_py.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0),
                       **creds).ping()


# -- Sentinel failover (last: it leaves a new primary behind) --------------------------------

def test_sentinel_failover_push_goes_to_the_new_primary(redis_sentinel):
    s = redis_sentinel
    s.wait_healthy()  # an earlier test may have failed it over already
    # 20 retries wait up to ~35 s: on a loaded machine a Sentinel election can fail once, and
    # the Sentinels try again only after 2 x failover-timeout (10 s). This test is about where
    # the push lands, not how fast; the default budget is documented in client.py.
    c = jsacc.Client(s.url, retries=20)
    c.redis.delete("cmds_queue")
    # WAIT 2: both replicas hold the first command, so whichever is promoted keeps it.
    first = jsacc.Client(s.url, wait_replicas=2).ping(gid=1, nid=1)
    c.ping(gid=1, nid=2)  # the client's pool is connected to the primary now
    old = s.kill_primary()
    try:
        started = time.monotonic()
        second = c.ping(gid=1, nid=3)  # same Client: waits out the failover, then WAIT 1 again
        took = time.monotonic() - started
        new = s.primary_port()
        assert new != old
        on_new = redis_py.Redis(host="127.0.0.1", port=new, decode_responses=True)
        queued = [json.loads(x)["id"] for x in on_new.lrange("cmds_queue", 0, -1)]
        assert first.id in queued and second.id in queued, (queued, took)
        assert queued.count(second.id) >= 1
        assert c.job(second.id).state is None  # reads follow the new primary too
    finally:
        s.restart(old)  # the Sentinels make it a replica of the new primary
        s.wait_healthy()  # so a failure here does not leave the next module a dead primary
        c.redis.delete("cmds_queue")
        c.close()
