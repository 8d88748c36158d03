"""The process manager through the client and jsctl (issue 3), against the real stack."""

from __future__ import annotations

import time
import uuid

import pytest

from conftest import run_jsctl, wait_file
from jsacc.cli.ps import ps_table

WAIT = 30


def jsctl(stack, *args, **kw):
    return run_jsctl(*args, redis_url=stack.redis_url, **kw)


def test_execute_py_reads_json_data_on_stdin(client):
    script = "import json, sys\nprint(json.load(sys.stdin)['x'] * 2)\n"
    result = client.execute_py(script, gid=1, nid=1, data={"x": 21}).result(timeout=WAIT)
    assert result["state"] == "OK", result
    assert result["streams"][0] == "42\n"


def test_execute_lua_reads_text_data_on_stdin(client):
    result = client.execute_lua('io.write(string.upper(io.read("a")))', gid=1, nid=1,
                                data="hi lua").result(timeout=WAIT)
    assert result["state"] == "OK", result
    assert result["streams"][0] == "HI LUA"


def test_a_missing_jumpscript_is_an_error_that_names_it(client):
    result = client.execute_py(domain="nope", name="missing", gid=1, nid=1).result(timeout=WAIT)
    assert result["state"] == "ERROR"
    assert "missing.py" in result["data"], result


def test_process_stats_of_a_running_job(client, tmp_path):
    marker = tmp_path / "started"
    domain = f"d{uuid.uuid4().hex[:8]}"
    job = client.execute("sh", ["-c", f'touch "{marker}"; sleep 30 & wait'], gid=1, nid=1,
                         domain=domain, name="sleeper")
    wait_file(marker)
    one = client.get_process_stats(job.id, gid=1, nid=1).result(timeout=WAIT)
    assert one["state"] == "OK", one
    assert (one["data"]["id"], one["data"]["domain"]) == (job.id, domain)
    assert one["data"]["processes"] == 2 and one["data"]["rss"] > 0, one["data"]
    groups = client.get_processes_stats(gid=1, nid=1, domain=domain).result(timeout=WAIT)
    assert [(g["domain"], g["name"], g["jobs"]) for g in groups["data"]] == \
        [(domain, "sleeper", [job.id])]
    job.kill()
    assert job.result(timeout=WAIT)["state"] == "KILLED"
    gone = client.get_process_stats(job.id, gid=1, nid=1).result(timeout=WAIT)
    assert gone["state"] == "ERROR" and "no running job" in gone["data"]


def test_recurring_job_posts_each_run_until_killed(client):
    job = client.execute("echo", ["tick"], gid=1, nid=2, recurring_period=1)
    first, second = job.next_result(timeout=WAIT), job.next_result(timeout=WAIT)
    assert [(r["run"], r["final"], r["state"]) for r in (first, second)] == \
        [(1, False, "OK"), (2, False, "OK")]
    assert job.state == "RUNNING"
    job.kill()
    deadline = time.monotonic() + WAIT
    last = job.next_result(timeout=WAIT)
    while last.get("final") is False and time.monotonic() < deadline:
        last = job.next_result(timeout=WAIT)
    assert last["state"] == "KILLED", last


def test_killall_keeps_remembered_jobs(client, tmp_path):
    marker = tmp_path / "daemon"
    daemon = client.execute("sh", ["-c", f'echo x >> "{marker}"; exec sleep 60'], gid=1, nid=2,
                            max_time=-1)
    wait_file(marker)
    answer = client.killall(gid=1, nid=2).result(timeout=WAIT)
    assert answer["state"] == "OK", answer
    assert daemon.id in answer["data"]["killed"]
    assert answer["data"]["remembered"] == [daemon.id]
    deadline = time.monotonic() + WAIT
    while marker.read_text().count("x") < 2:
        assert time.monotonic() < deadline, "the daemon did not come back"
        time.sleep(0.05)
    assert daemon.state == "RUNNING"
    kill = client.kill(daemon.id, gid=1, nid=2).result(timeout=WAIT)
    assert kill["state"] == "OK", kill


def test_jsctl_ps_and_kill(stack, client, tmp_path):
    marker = tmp_path / "started"
    domain = f"d{uuid.uuid4().hex[:8]}"
    job = client.execute("sh", ["-c", f'touch "{marker}"; exec sleep 30'], gid=1, nid=1,
                         domain=domain, name="web")
    wait_file(marker)
    cp = jsctl(stack, "ps", "--gid", "1", "--nid", "1", "--domain", domain)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].split()[:3] == ["DOMAIN", "NAME", "JOBS"]
    assert lines[1].split()[:3] == [domain, "web", "1"], cp.stdout
    cp = jsctl(stack, "ps", "--gid", "1", "--nid", "1", "--job", job.id, "--json")
    assert cp.returncode == 0 and f'"{job.id}"' in cp.stdout, cp.stderr
    cp = jsctl(stack, "kill", "--gid", "1", "--nid", "1", job.id)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == f"killed {job.id} (was running)"
    cp = jsctl(stack, "kill", "--gid", "1", "--nid", "1", job.id)
    assert cp.returncode == 1 and "no running or queued job" in cp.stderr, cp.stderr
    cp = jsctl(stack, "kill", "--gid", "1", "--nid", "1")
    assert cp.returncode == 2 and "give a JOB id, or --all" in cp.stderr


def test_ps_table_lines_up_and_humanizes():
    lines = ps_table([{"domain": "ops", "name": "web", "jobs": ["a", "b"], "cpu_percent": 12.345,
                       "rss": 3 * 1024 * 1024, "vms": 2048, "swap": 0, "threads": 4,
                       "processes": 2}])
    assert lines[0].split() == ["DOMAIN", "NAME", "JOBS", "CPU%", "RSS", "VMS", "SWAP",
                                "THREADS", "PROCS"]
    assert lines[1].split() == ["ops", "web", "2", "12.3", "3.0", "MiB", "2.0", "KiB", "0", "B",
                                "4", "2"]


@pytest.mark.parametrize("bad", [{"max_restart": -1}, {"recurring_period": -5}])
def test_garbage_process_args_end_error(client, bad):
    result = client.execute("true", gid=1, nid=1, **bad).result(timeout=WAIT)
    assert result["state"] == "ERROR"
    assert next(iter(bad)) in result["data"], result


def test_jsctl_ps_lists_config_file_jobs(stack, tmp_path):
    """A `[[job]]` of an agent's config runs under the supervisor like any job: `jsctl ps`
    shows it (issue 14)."""
    marker = tmp_path / "cfg-started"
    domain = f"cfg{uuid.uuid4().hex[:8]}"
    token = stack.token_add(1, 9)
    config = tmp_path / "agent.toml"
    config.write_text(
        f'controller = "{stack.controller_url}"\ngid = 1\nnid = 9\n'
        f'token_file = "{token}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[[job]]\nid = "daemon"\ncmd = "sh"\nargs = ["-c", \'touch "{marker}"; exec sleep 60\']\n'
        f'domain = "{domain}"\nname = "daemon"\n')
    agent = stack.start("jsagent-1-9", [stack.exe("jsagent"), "--config", str(config)])
    try:
        wait_file(marker)
        cp = jsctl(stack, "ps", "--gid", "1", "--nid", "9", "--domain", domain, "--json")
        assert cp.returncode == 0, cp.stderr + stack.report()
        assert '"cfg:1:9:daemon"' in cp.stdout, cp.stdout
        cp = jsctl(stack, "ps", "--gid", "1", "--nid", "9", "--domain", domain)
        assert cp.stdout.splitlines()[1].split()[:3] == [domain, "daemon", "1"], cp.stdout
    finally:
        agent.stop()
        stack.procs.remove(agent)
