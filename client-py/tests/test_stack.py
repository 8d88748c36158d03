"""Tests against the real stack: redis-server + jsacc controller + jsagent 1:1 and 1:2.

Agent 1:1 has role "storage"; agent 1:2 has roles "web" and "storage" (see conftest.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid

import jsonschema
import pytest

import jsacc

from conftest import SCHEMAS_DIR, run_jsctl, wait_file

RESULT_FIELDS = {"id", "gid", "nid", "cmd", "args", "data", "level", "state", "time", "starttime",
                 "exit_code", "streams", "critical"}
WAIT = 30  # generous: the machine is shared and debug builds are slow


@pytest.fixture(scope="module")
def result_schema():
    schema = json.loads((SCHEMAS_DIR / "result.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def check_result(result, schema, job, gid, nid, cmd):
    assert set(result) == RESULT_FIELDS, result
    jsonschema.validate(result, schema, cls=jsonschema.Draft202012Validator)
    assert result["id"] == job.id
    assert (result["gid"], result["nid"], result["cmd"]) == (gid, nid, cmd)


def final_state(job, timeout=10.0):
    """The job record's state once final (the record is updated around the result push)."""
    deadline = time.monotonic() + timeout
    state = job.state
    while state not in jsacc.FINAL_STATES and time.monotonic() < deadline:
        time.sleep(0.05)
        state = job.state
    return state


def wait_state(job, wanted, timeout=15.0):
    deadline = time.monotonic() + timeout
    while job.state != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return job.state


# -- library ----------------------------------------------------------------------------------

def test_ping_round_trip(client, result_schema):
    job = client.ping(gid=1, nid=1)
    result = job.result(timeout=WAIT)
    check_result(result, result_schema, job, 1, 1, "ping")
    assert result["state"] == "OK"
    assert result["data"] == "pong"
    assert final_state(job) == "OK"
    assert job.targets == ["1:1"]


def test_execute_echo(client, result_schema):
    job = client.execute("/bin/echo", ["hi"], gid=1, nid=1, domain="test", name="echo")
    result = job.result(timeout=WAIT)
    check_result(result, result_schema, job, 1, 1, "execute")
    assert result["state"] == "OK", result
    assert result["exit_code"] == 0
    assert "hi" in result["streams"][0]
    assert result["args"]["cmd"] == "/bin/echo"
    # Cached: results() returns the same result without waiting again.
    assert job.results(timeout=0) == [result]
    assert final_state(job) == "OK"
    assert job.stored_results()["1:1"]["state"] == "OK"


def test_execute_exit_code_3_is_error(client, result_schema):
    job = client.execute("sh", ["-c", "echo oops >&2; exit 3"], gid=1, nid=1)
    result = job.result(timeout=WAIT)
    check_result(result, result_schema, job, 1, 1, "execute")
    assert result["state"] == "ERROR", result
    assert result["exit_code"] == 3
    assert "oops" in result["streams"][1]
    assert final_state(job) == "ERROR"


def test_max_time_ends_timeout(client, result_schema):
    start = time.monotonic()
    job = client.execute("sleep", ["30"], gid=1, nid=1, max_time=1)
    result = job.result(timeout=WAIT)
    check_result(result, result_schema, job, 1, 1, "execute")
    assert result["state"] == "TIMEOUT", result
    assert time.monotonic() - start < 20
    assert final_state(job) == "TIMEOUT"


def test_stdin_data_reaches_cat(client):
    job = client.execute("cat", gid=1, nid=1, data="hello through stdin\n")
    result = job.result(timeout=WAIT)
    assert result["state"] == "OK", result
    assert "hello through stdin" in result["streams"][0]


def test_env_and_workingdir(client, tmp_path):
    job = client.execute("sh", ["-c", 'echo "foo=$FOO"; pwd'], gid=1, nid=1,
                         env={"FOO": "bar"}, workingdir=str(tmp_path))
    result = job.result(timeout=WAIT)
    assert result["state"] == "OK", result
    assert "foo=bar" in result["streams"][0]
    assert str(tmp_path) in result["streams"][0]


def test_executable_not_found_is_error_with_reason(client):
    result = client.execute("/nonexistent/program", gid=1, nid=1).result(timeout=WAIT)
    assert result["state"] == "ERROR"
    assert result["data"], "a command that cannot run carries the reason in data"


def test_unknown_agent_is_answered_error_at_once(client, result_schema):
    start = time.monotonic()
    job = client.ping(gid=1, nid=99)
    results = job.results(timeout=WAIT)
    assert time.monotonic() - start < 10
    assert len(results) == 1
    check_result(results[0], result_schema, job, 1, 99, "ping")
    assert results[0]["state"] == "ERROR"
    assert "1:99" in results[0]["data"]


def test_role_routing_reaches_the_web_agent(client):
    for _ in range(3):
        result = client.ping(gid=1, role="web").result(timeout=WAIT)
        assert result["state"] == "OK", result
        assert (result["gid"], result["nid"]) == (1, 2)


def test_fanout_gives_one_result_per_agent(client, result_schema):
    job = client.ping(gid=1, role="storage", fanout=True)
    results = job.results(timeout=WAIT)
    assert sorted(job.targets) == ["1:1", "1:2"]
    assert sorted((r["gid"], r["nid"]) for r in results) == [(1, 1), (1, 2)]
    for r in results:
        jsonschema.validate(r, result_schema, cls=jsonschema.Draft202012Validator)
        assert r["state"] == "OK" and r["data"] == "pong"
    assert final_state(job) == "OK"


def test_fanout_execute(client):
    job = client.execute("/bin/echo", ["fan"], gid=1, role="storage", fanout=True)
    results = job.results(timeout=WAIT)
    assert len(results) == 2
    assert all(r["state"] == "OK" and "fan" in r["streams"][0] for r in results)


def test_state_ends_in_the_final_state(client):
    job = client.execute("sleep", ["2"], gid=1, nid=1)
    seen = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        state = job.state
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in jsacc.FINAL_STATES:
            break
        time.sleep(0.05)
    assert seen[-1] == "OK", seen
    # Before the end only None (not routed yet), QUEUED, RUNNING, in that order.
    order = [None, "QUEUED", "RUNNING", "OK"]
    assert all(s in order for s in seen), seen
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen), seen
    assert job.result(timeout=WAIT)["state"] == "OK"


def test_state_is_running_while_the_process_runs(client, tmp_path):
    # DESIGN §3: "In the job record a job is also QUEUED then RUNNING before it ends."
    marker = tmp_path / "started"
    job = client.execute("sh", ["-c", f'touch "{marker}"; exec sleep 3'], gid=1, nid=1)
    wait_file(marker)
    assert wait_state(job, "RUNNING", timeout=2) == "RUNNING"
    assert job.result(timeout=WAIT)["state"] == "OK"


def test_wait_longer_than_socket_timeout(client):
    # redis-py 8 defaults socket_timeout to 5 s: a 7 s wait must still work (chunked BLPOP).
    job = client.execute("sleep", ["7"], gid=1, nid=1)
    assert job.result(timeout=WAIT)["state"] == "OK"


def test_kill(client, tmp_path):
    marker = tmp_path / "started"
    job = client.execute("sh", ["-c", f'touch "{marker}"; exec sleep 30'], gid=1, nid=2)
    wait_file(marker)
    kills = job.kill()
    assert len(kills) == 1
    answer = kills[0].result(timeout=WAIT)
    assert answer["state"] == "OK", answer
    result = job.result(timeout=WAIT)
    assert result["state"] == "KILLED", result
    assert final_state(job) == "KILLED"


def test_timeout_when_agent_is_offline(stack, client):
    stack.token_add(1, 3)  # known agent, but no jsagent runs for it
    job = client.ping(gid=1, nid=3)
    start = time.monotonic()
    with pytest.raises(jsacc.Timeout, match=job.id):
        job.result(timeout=1)
    assert 0.9 <= time.monotonic() - start < 4
    assert job.state == "QUEUED"
    with pytest.raises(jsacc.Timeout):
        job.results(timeout=0)


def test_duplicate_id_leaves_the_first_job_alone(client):
    job_id = uuid.uuid4().hex
    first = client.execute("/bin/echo", ["first"], gid=1, nid=1, id=job_id)
    assert first.result(timeout=WAIT)["state"] == "OK"
    assert final_state(first) == "OK"
    second = client.execute("/bin/echo", ["second"], gid=1, nid=1, id=job_id)
    result = second.result(timeout=WAIT)
    assert result["state"] == "ERROR" and "duplicate" in str(result["data"])
    assert first.state == "OK"
    assert first.stored_results()["1:1"]["state"] == "OK"


def test_agents(client):
    agents = {a["agent"]: a for a in client.agents()}
    assert {"1:1", "1:2"} <= set(agents)
    a2 = agents["1:2"]
    assert a2["gid"] == 1 and a2["nid"] == 2
    assert sorted(a2["roles"]) == ["storage", "web"]
    assert agents["1:1"]["roles"] == ["storage"]
    assert a2["online"] is True and a2["last_seen_ago"] < 60
    assert isinstance(a2["last_seen"], int) and a2["hostname"]
    assert all(not a["online"] for a in client.agents(online_within=-1))


# -- jsctl ------------------------------------------------------------------------------------

def jsctl(stack, *args, **kw):
    return run_jsctl(*args, redis_url=stack.redis_url, **kw)


def test_jsctl_exec_ok(stack):
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "1", "--",
               "sh", "-c", "echo out; echo err >&2")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "out"
    assert "err" in cp.stderr


def test_jsctl_exec_json(stack, result_schema):
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "1", "--json", "--", "/bin/echo", "hi")
    assert cp.returncode == 0, cp.stderr
    result = json.loads(cp.stdout)
    jsonschema.validate(result, result_schema, cls=jsonschema.Draft202012Validator)
    assert result["state"] == "OK" and "hi" in result["streams"][0]


def test_jsctl_exec_error_exit_1(stack):
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "1", "--", "sh", "-c", "echo oops >&2; exit 3")
    assert cp.returncode == 1
    assert "oops" in cp.stderr and "ERROR" in cp.stderr and "exit code 3" in cp.stderr


def test_jsctl_exec_unknown_agent_exit_1_with_reason(stack):
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "99", "--", "/bin/true")
    assert cp.returncode == 1
    assert "1:99" in cp.stderr and "ERROR" in cp.stderr


def test_jsctl_exec_max_time_exit_3(stack):
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "1", "--max-time", "1", "--", "sleep", "30")
    assert cp.returncode == 3, cp.stderr
    assert "TIMEOUT" in cp.stderr


def test_jsctl_exec_killed_exit_4(stack, client, tmp_path):
    job_id = uuid.uuid4().hex
    marker = tmp_path / "started"
    argv = [sys.executable, "-m", "jsacc.cli", "--redis", stack.redis_url, "exec", "--gid", "1",
            "--nid", "2", "--id", job_id, "--timeout", str(WAIT), "--",
            "sh", "-c", f'touch "{marker}"; exec sleep 30']
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = client.job(job_id)
        wait_file(marker)
        answer = job.kill()[0].result(timeout=WAIT)
        assert answer["state"] == "OK", answer
        out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, err
    assert "KILLED" in err


def test_jsctl_exec_no_result_exit_5(stack):
    stack.tokens.get("1:3") or stack.token_add(1, 3)
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "3", "--timeout", "1", "--", "/bin/true")
    assert cp.returncode == 5
    assert "no result" in cp.stderr


def test_jsctl_exec_stdin(stack):
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "1", "--data-file", "-", "--", "cat",
               input="piped in\n")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "piped in"


def test_jsctl_exec_fanout(stack):
    cp = jsctl(stack, "exec", "--gid", "1", "--role", "storage", "--fanout", "--json", "--",
               "/bin/echo", "x")
    assert cp.returncode == 0, cp.stderr
    assert sorted(r["nid"] for r in json.loads(cp.stdout)) == [1, 2]


def test_jsctl_ping(stack):
    cp = jsctl(stack, "ping", "--gid", "1", "--nid", "1")
    assert cp.returncode == 0, cp.stderr
    assert re.fullmatch(r"pong from 1:1 in \d+(\.\d+)? ms\n", cp.stdout), cp.stdout
    cp = jsctl(stack, "ping", "--gid", "1", "--role", "storage", "--fanout")
    assert cp.returncode == 0, cp.stderr
    assert sorted(re.findall(r"pong from (1:\d)", cp.stdout)) == ["1:1", "1:2"]


def test_jsctl_ping_errors(stack):
    stack.tokens.get("1:3") or stack.token_add(1, 3)
    cp = jsctl(stack, "ping", "--gid", "1", "--nid", "3", "--timeout", "1")
    assert cp.returncode == 5
    cp = jsctl(stack, "ping", "--gid", "1", "--nid", "99")
    assert cp.returncode == 1 and "1:99" in cp.stderr


def test_jsctl_agents(stack):
    cp = jsctl(stack, "agents")
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].split()[:3] == ["AGENT", "HOSTNAME", "OS"]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert {"1:1", "1:2"} <= set(rows)
    assert "web" in rows["1:2"] and rows["1:2"].rstrip().endswith("yes")
    cp = jsctl(stack, "agents", "--json")
    assert cp.returncode == 0
    assert {"1:1", "1:2"} <= {a["agent"] for a in json.loads(cp.stdout)}


def test_a_rollout_stops_when_too_many_fail(stack, client):
    """Issue 14: batch 1, max_failures 0 over the two `storage` agents: the first fails, so
    the second is never sent the job and ends ERROR "rollout stopped"; one result each."""
    cp = jsctl(stack, "exec", "--gid", "1", "--role", "storage", "--fanout", "--batch", "1",
               "--max-failures", "0", "--json", "--", "/bin/sh", "-c", "exit 3")
    assert cp.returncode != 0, cp.stdout
    results = sorted(json.loads(cp.stdout), key=lambda r: r["nid"])
    assert [(r["nid"], r["state"]) for r in results] == [(1, "ERROR"), (2, "ERROR")]
    assert results[1]["data"] == "rollout stopped: 1 of 1 failed (max_failures 0)"
    job = client.execute("/bin/true", gid=1, role="storage", fanout=True, batch="50%",
                         batch_wait=0)
    assert [r["state"] for r in job.results(timeout=WAIT)] == ["OK", "OK"]
    record = job.record()
    assert record["rollout"]["batch"] == 1 and record["rollout"]["released"] == 2, record
