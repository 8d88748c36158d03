"""Host facts and stats through the client and jsctl: unit tests, and tests against the real
stack (conftest.py) for the info commands and ``stats(gid, nid)``."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import jsonschema
import pytest

import jsacc
from jsacc.cli.info import format_info
from jsacc.cli.stats import format_values

from conftest import SCHEMAS_DIR, run_jsctl

WAIT = 30


def schema(what):
    doc = json.loads((SCHEMAS_DIR / f"{what}_info.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return doc


def validate(doc, what):
    jsonschema.validate(doc, schema(what), cls=jsonschema.Draft202012Validator)


# -- unit ---------------------------------------------------------------------------------------

def test_stats_keys_are_the_contract():
    assert jsacc.stats_key(1, 5) == "stats:{1:5}"
    assert jsacc.stats_latest_key(1, 5) == "stats:{1:5}:latest"
    assert set(jsacc.INFO_COMMANDS) == {"os", "cpu", "mem", "disk", "nic"}


@pytest.mark.parametrize("what", ["os", "cpu", "mem", "disk", "nic"])
def test_examples_validate_against_the_info_schemas(what):
    validate(json.loads((SCHEMAS_DIR / "examples" / f"{what}_info.json").read_text()), what)


def test_info_refuses_unknown_facts_before_touching_redis():
    c = jsacc.Client("redis://127.0.0.1:1")
    with pytest.raises(ValueError, match="unknown host fact"):
        c.info("gpu", 1, 1)
    with pytest.raises(ValueError):
        c.stats(-1, 1)


def test_format_values_leaves_out_times():
    line = format_values({"type": "timer", "epoch": 1, "interval": 10.0, "p99": 12.345678901,
                          "count": 3.0, "min": 1, "zz": 0})
    assert line == "count=3 min=1 p99=12.3457 zz=0"


def test_format_info_nests_lists_of_objects():
    lines = format_info({"hostname": "h", "name": None, "per_core": [1.0, 2.0],
                         "nics": [{"name": "eth0", "mtu": 1500}]})
    assert lines == ["hostname: h", "name: -", "per_core: 1.0, 2.0", "nics:", "  - name: eth0",
                     "    mtu: 1500"]


# -- against the stack --------------------------------------------------------------------------

@pytest.mark.parametrize("what", ["os", "cpu", "mem", "disk", "nic"])
def test_info_answers_validate_against_their_schemas(client, what):
    validate(client.info(what, 1, 1, timeout=WAIT), what)


def test_info_methods_return_jobs(client):
    job = client.get_mem_info(gid=1, nid=2)
    result = job.result(timeout=WAIT)
    assert result["state"] == "OK", result
    assert result["data"]["total"] > 0


def post_stats(stack, gid, nid, batches):
    token = stack.tokens[f"{gid}:{nid}"].read_text().strip()
    req = urllib.request.Request(
        f"{stack.controller_url}/v1/agents/{gid}/{nid}/stats", method="POST",
        data=json.dumps(batches).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_stats_reads_what_the_controller_recorded(stack, client):
    key = f"py.{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    batch = {"gid": 1, "nid": 1, "epoch": now, "interval": 10.0, "metrics": [
        {"key": f"{key}.temp", "type": "gauge", "value": 21.5},
        {"key": f"{key}.req", "type": "counter", "sum": 30.0, "rate": 3.0}]}
    assert post_stats(stack, 1, 1, [batch]) == {"recorded": 1, "duplicates": 0, "rejected": []}
    stats = client.stats(1, 1)
    assert stats[f"{key}.temp"] == {"type": "gauge", "epoch": now, "interval": 10.0, "value": 21.5}
    assert stats[f"{key}.req"]["rate"] == 3.0
    # The agent 1:1 flushes into the same stream: look for this batch among the newest.
    ours = [b for b in client.stats_batches(1, 1, count=20) if b["metrics"] == batch["metrics"]]
    assert len(ours) == 1 and ours[0]["stream_id"]
    # Posted again (an agent whose answer was lost): not appended a second time.
    assert post_stats(stack, 1, 1, [batch]) == {"recorded": 0, "duplicates": 1, "rejected": []}
    again = [b for b in client.stats_batches(1, 1, count=20) if b["metrics"] == batch["metrics"]]
    assert again == ours

    cp = run_jsctl("stats", "--gid", "1", "--nid", "1", "--prefix", key, redis_url=stack.redis_url)
    assert cp.returncode == 0, cp.stderr
    assert f"{key}.temp" in cp.stdout and "value=21.5" in cp.stdout
    assert f"{key}.req" in cp.stdout and "sum=30 rate=3" in cp.stdout
    cp = run_jsctl("stats", "--gid", "1", "--nid", "1", "--prefix", key, "--json",
                   redis_url=stack.redis_url)
    assert set(json.loads(cp.stdout)) == {f"{key}.temp", f"{key}.req"}


def test_jsctl_stats_of_a_silent_agent_is_empty_not_an_error(stack):
    cp = run_jsctl("stats", "--gid", "9", "--nid", "9", redis_url=stack.redis_url)
    assert cp.returncode == 0 and "no stats from agent 9:9" in cp.stderr


def test_jsctl_info(stack):
    cp = run_jsctl("info", "--gid", "1", "--nid", "1", "mem", "--json", redis_url=stack.redis_url)
    assert cp.returncode == 0, cp.stderr
    validate(json.loads(cp.stdout), "mem")
    cp = run_jsctl("info", "--gid", "1", "--nid", "1", redis_url=stack.redis_url)
    assert cp.returncode == 0, cp.stderr
    for what in ("os", "cpu", "mem", "disk", "nic"):
        assert f"== {what}" in cp.stdout
    assert "hostname:" in cp.stdout


def test_jsctl_info_of_an_unknown_agent_exits_1(stack):
    cp = run_jsctl("info", "--gid", "1", "--nid", "99", "os", redis_url=stack.redis_url)
    assert cp.returncode == 1 and "ERROR" in cp.stderr
