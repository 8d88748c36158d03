"""Live output and job history against the real stack (redis-server + jsacc + jsagent 1:1 and
1:2, see conftest.py): `jsctl exec` streaming, `Job.output`, the output cap under a flood,
`jsctl job`, `jsctl job follow`, `jsctl jobs` and `Client.jobs`."""

from __future__ import annotations

import datetime as dt
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time
import uuid

import pytest

import jsacc
from jsacc.display import LineDisplay

from conftest import run_jsctl, wait_file

WAIT = 60  # generous: the machine is shared and debug builds are slow
#: The controller's default --output-maxlen (the fixture does not set it).
OUTPUT_MAXLEN = 10_000
PRINT_SLEEP_PRINT = ["sh", "-c", "echo first; sleep 4; echo second"]


def jsctl(stack, *args, **kw):
    return run_jsctl(*args, redis_url=stack.redis_url, **kw)


def jsctl_popen(stack, *args, **kw):
    argv = [sys.executable, "-m", "jsacc.cli", "--redis", stack.redis_url, *args]
    env = {k: v for k, v in os.environ.items() if k != "JSACC_REDIS"}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **kw)


def read_line(stream, timeout):
    """One line of a child's pipe within ``timeout`` s, or ``None``."""
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return None
        return stream.readline()
    finally:
        sel.close()


def wait_final(job, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while job.state not in jsacc.FINAL_STATES:
        assert time.monotonic() < deadline, f"job {job.id} not final within {timeout} s"
        time.sleep(0.05)
    return job.state


def agent_proc(stack, agent):
    return next(p for p in stack.procs if p.name == f"jsagent-{agent.replace(':', '-')}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# -- live output ------------------------------------------------------------------------------

def test_jsctl_exec_prints_the_first_line_before_the_job_ends(stack, client):
    job_id = uuid.uuid4().hex
    proc = jsctl_popen(stack, "exec", "--gid", "1", "--nid", "1", "--id", job_id,
                       "--timeout", str(WAIT), "--", *PRINT_SLEEP_PRINT)
    try:
        start = time.monotonic()
        first = read_line(proc.stdout, WAIT)
        first_at = time.monotonic() - start
        state_then = client.job(job_id).state
        rest, err = proc.communicate(timeout=WAIT)
        ended_at = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert first == "first\n", (first, proc.stderr.read() if proc.stderr else "")
    assert state_then == "RUNNING", state_then   # the job had not ended when the line came
    assert rest == "second\n" and proc.returncode == 0, (rest, err)
    assert ended_at - first_at > 2, (first_at, ended_at)   # it sleeps 4 s between the lines
    print(f"first line after {first_at:.2f} s, exit after {ended_at:.2f} s")


def test_job_output_follows_lines_before_the_job_ends(client):
    job = client.execute(PRINT_SLEEP_PRINT[0], PRINT_SLEEP_PRINT[1:], gid=1, nid=2)
    seen = []
    for line in job.output(follow=True, timeout=WAIT):
        seen.append((line["line"], job.state))
    assert [text for text, _ in seen] == ["first", "second"]
    assert seen[0][1] == "RUNNING", seen        # the first line came while the job ran
    assert job.state in jsacc.FINAL_STATES      # follow ends when the job is final...
    line = next(job.output())
    assert (line["agent"], line["fd"], line["level"]) == ("1:2", 1, 1)
    assert isinstance(line["time"], int) and line["id"]
    assert job.result(timeout=5)["state"] == "OK"   # ...and consumed no result


def test_output_separates_streams_and_levels(stack, client):
    script = "echo out; echo err >&2; echo 3::to the user; printf '20:::\\n{}\\n:::\\n'"
    job = client.execute("sh", ["-c", script], gid=1, nid=1)
    lines = list(job.output(follow=True, timeout=WAIT))
    got = sorted((x["fd"], x["level"], x["line"]) for x in lines)
    assert got == sorted([(1, 1, "out"), (2, 2, "err"), (1, 3, "3::to the user"),
                          (1, 20, "20:::"), (1, 20, "{}"), (1, 20, ":::")]), got
    d = LineDisplay()
    assert [d.text(x) for x in lines if x["fd"] == 1] == ["out", "to the user", None, "{}",
                                                          None]
    cp = jsctl(stack, "job", "follow", job.id)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "out\nto the user\n{}\n" and cp.stderr == "err\n"
    cp = jsctl(stack, "job", "follow", job.id, "--raw")
    assert cp.stdout == "out\n3::to the user\n20:::\n{}\n:::\n", cp.stdout


def test_jsctl_exec_fanout_prefixes_each_line_with_its_agent(stack):
    cp = jsctl(stack, "exec", "--gid", "1", "--role", "storage", "--fanout", "--timeout",
               str(WAIT), "--", "sh", "-c", "echo hi; echo ho >&2")
    assert cp.returncode == 0, cp.stderr
    assert sorted(cp.stdout.splitlines()) == ["1:1: hi", "1:2: hi"]
    assert sorted(cp.stderr.splitlines()) == ["1:1: ho", "1:2: ho"]


def test_jsctl_exec_no_output_prints_the_result_tails(stack, client):
    job_id = uuid.uuid4().hex
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "1", "--no-output", "--id", job_id,
               "--timeout", str(WAIT), "--", "sh", "-c", "echo quiet; echo loud >&2")
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "quiet\n" and "loud" in cp.stderr
    assert list(client.job(job_id).output()) == []


def test_jsctl_exec_detach_then_follow(stack, client):
    cp = jsctl(stack, "exec", "--gid", "1", "--nid", "2", "--detach", "--",
               "sh", "-c", "echo one; sleep 1; echo two; exit 3")
    assert cp.returncode == 0, cp.stderr
    job_id = cp.stdout.strip()
    assert len(job_id) == 32, cp.stdout
    cp = jsctl(stack, "job", "follow", job_id, timeout=WAIT + 10)
    assert cp.stdout == "one\ntwo\n", cp.stdout
    assert cp.returncode == 1 and "exit code 3" in cp.stderr, cp.stderr   # the job's code


def test_jsctl_exec_ctrl_c_without_a_terminal_leaves_the_job_running(stack, client, tmp_path):
    job_id = uuid.uuid4().hex
    marker = tmp_path / "started"
    proc = jsctl_popen(stack, "exec", "--gid", "1", "--nid", "1", "--id", job_id, "--",
                       "sh", "-c", f'touch "{marker}"; echo started; exec sleep 60',
                       stdin=subprocess.DEVNULL)
    job = client.job(job_id)
    try:
        wait_file(marker)
        assert read_line(proc.stdout, WAIT) == "started\n"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == 130, err
        assert f"jsctl job follow {job_id}" in err and f"--nid 1 {job_id}" in err, err
        assert job.state == "RUNNING"
    finally:
        job.kill()[0].result(timeout=WAIT)
    assert job.result(timeout=WAIT)["state"] == "KILLED"


def read_until(stream, text, timeout):
    """What a child wrote on ``stream`` (a pipe, read unbuffered) up to and including
    ``text``; fails after ``timeout`` s."""
    got, deadline = b"", time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        while text.encode() not in got:
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"no {text!r} within {timeout} s: {got!r}"
            chunk = os.read(stream.fileno(), 4096)
            assert chunk, f"closed before {text!r}: {got!r}"
            got += chunk
    finally:
        sel.close()
    return got.decode()


@pytest.mark.parametrize("answer, code, state", [("y", 4, "KILLED"), ("n", 130, "RUNNING")])
def test_jsctl_exec_ctrl_c_on_a_terminal_asks_whether_to_kill(
        stack, client, tmp_path, answer, code, state):
    job_id = uuid.uuid4().hex
    marker = tmp_path / "started"
    master, slave = os.openpty()
    argv = [sys.executable, "-m", "jsacc.cli", "--redis", stack.redis_url, "exec", "--gid", "1",
            "--nid", "2", "--id", job_id, "--", "sh", "-c", f'touch "{marker}"; exec sleep 60']
    env = {k: v for k, v in os.environ.items() if k != "JSACC_REDIS"}
    proc = subprocess.Popen(argv, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    os.close(slave)
    job = client.job(job_id)
    try:
        wait_file(marker)
        time.sleep(0.5)  # jsctl is in its watch loop (the job is running)
        proc.send_signal(signal.SIGINT)
        prompt = read_until(proc.stderr, "[y/N] ", WAIT)
        assert f"kill job {job_id} on 1:2?" in prompt
        os.write(master, f"{answer}\n".encode())
        proc.wait(timeout=WAIT)
        err = prompt + proc.stderr.read().decode()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == code, err
        assert job.state == state
        if answer == "y":
            assert "killed" in err and "KILLED" in err, err
        else:
            assert f"jsctl job follow {job_id}" in err
    finally:
        if job.state == "RUNNING":
            job.kill()[0].result(timeout=WAIT)


def test_job_follow_of_an_unknown_job_exits_1(stack):
    # After the grace period (10 s) a job just pushed gets to be routed.
    job_id = uuid.uuid4().hex
    cp = jsctl(stack, "job", "follow", job_id)
    assert cp.returncode == 1
    assert f"no job {job_id} (never routed, or expired)" in cp.stderr, cp.stderr


def test_a_million_lines_are_capped_and_the_agent_stays_responsive(stack, client):
    agent = agent_proc(stack, "1:1")
    rss_before = rss_kib(agent.popen.pid)
    baseline = []
    for _ in range(3):
        start = time.monotonic()
        assert client.ping(gid=1, nid=1).result(timeout=WAIT)["state"] == "OK"
        baseline.append(time.monotonic() - start)
    started = time.monotonic()
    job = client.execute("seq", ["1000000"], gid=1, nid=1, domain="test", name="flood")
    pings, rss_max = [], rss_before
    while True:
        start = time.monotonic()
        assert client.ping(gid=1, nid=1).result(timeout=WAIT)["state"] == "OK"
        pings.append(time.monotonic() - start)
        rss_max = max(rss_max, rss_kib(agent.popen.pid))
        if job.state in jsacc.FINAL_STATES or time.monotonic() - started > 300:
            break
    result = job.result(timeout=WAIT)
    took = time.monotonic() - started
    assert result["state"] == "OK" and result["exit_code"] == 0, result
    assert result["streams"][0].endswith("1000000\n")   # the result keeps the tail
    length = stack.r.xlen(f"output:{job.id}")
    lines = list(job.output())
    assert len(lines) == length
    # At most the cap and its marker (the agent may also have dropped lines it could not hand
    # over in time: they are counted in its own marker lines, within the cap).
    assert 3 <= length <= OUTPUT_MAXLEN + 5, length
    assert [x["line"] for x in lines[:3]] == ["1", "2", "3"]
    markers = [x for x in lines if x["level"] == 0]
    assert markers, lines[-3:]
    print(f"\n1e6 lines: job {took:.1f} s, stream {length} entries, markers "
          f"{[m['line'] for m in markers]}; ping baseline median "
          f"{statistics.median(baseline) * 1000:.0f} ms, during the flood median "
          f"{statistics.median(pings) * 1000:.0f} ms max {max(pings) * 1000:.0f} ms "
          f"({len(pings)} pings); agent RSS {rss_before // 1024} MiB before, "
          f"{rss_max // 1024} MiB max")
    # Generous bounds (a shared machine, a debug build): the agent kept answering, its memory
    # stayed bounded.
    assert max(pings) < 10, pings
    assert rss_max < rss_before + 256 * 1024, (rss_before, rss_max)
    # And jsctl's follow of it ends, printing the marker as a note.
    cp = jsctl(stack, "job", "follow", job.id, timeout=WAIT)
    assert cp.returncode == 0, cp.stderr[-500:]
    assert cp.stdout.count("\n") == length - len(markers)
    assert "jsctl: note: 1:1: [" in cp.stderr


# -- job records and history ------------------------------------------------------------------

def test_jsctl_job_shows_the_record_without_consuming_the_result(stack, client):
    job = client.execute("sh", ["-c", "echo done; exit 2"], gid=1, nid=2, domain="test",
                         name="record")
    wait_final(job)
    record = client.job(job.id).record()
    assert record["state"] == "ERROR" and record["targets"] == ["1:2"]
    assert record["submitted_by"] == "redis" and record["cmd"] == "execute"
    assert (record["domain"], record["name"]) == ("test", "record")
    assert record["created"] <= record["started"] <= record["ended"]
    assert record["duration"] is not None and record["duration"] >= 0
    a = record["agents"]["1:2"]
    assert a["state"] == "ERROR" and a["exit_code"] == 2 and a["result"]["streams"][0] == "done\n"
    cp = jsctl(stack, "job", job.id)
    assert cp.returncode == 0, cp.stderr
    for part in (job.id, "sh -c 'echo done; exit 2'", "test/record", "submitted by  redis",
                 "ERROR"):
        assert part in cp.stdout, cp.stdout
    cp = jsctl(stack, "job", job.id, "--json")
    assert json.loads(cp.stdout)["agents"]["1:2"]["exit_code"] == 2
    # Nothing was consumed: the result is still there for the submitter.
    assert stack.r.llen(f"cmds_queue_{job.id}") == 1
    assert job.result(timeout=5)["exit_code"] == 2


def test_jsctl_job_of_an_unknown_job_exits_1(stack, client):
    assert client.job("nosuchjob" + uuid.uuid4().hex).record() is None
    cp = jsctl(stack, "job", uuid.uuid4().hex)
    assert cp.returncode == 1 and "unknown" in cp.stderr


@pytest.fixture(scope="module")
def history(stack):
    """Three jobs of a fresh name, one after the other: ok on 1:1, failed on 1:2, ok on 1:2;
    and a ping of 1:1 last."""
    name = "h" + uuid.uuid4().hex[:12]
    c = jsacc.Client(stack.redis_url)
    jobs = []
    for nid, script in ((1, "true"), (2, "exit 3"), (2, "true")):
        job = c.execute("sh", ["-c", script], gid=1, nid=nid, domain="hist", name=name)
        job.result(timeout=WAIT)
        wait_final(job)
        jobs.append(job.id)
    ping = c.ping(gid=1, nid=1)
    ping.result(timeout=WAIT)
    wait_final(ping)
    yield {"name": f"hist/{name}", "ids": jobs, "ping": ping.id, "client": c}
    c.close()


def ids(records):
    return [r["id"] for r in records]


def test_client_jobs_filters(history):
    c, name, (ok1, failed, ok2) = history["client"], history["name"], history["ids"]
    assert ids(c.jobs(name=name)) == [ok2, failed, ok1]                # newest first
    assert ids(c.jobs(name=name, state="ERROR")) == [failed]
    assert ids(c.jobs(name=name, state=["OK"])) == [ok2, ok1]
    assert ids(c.jobs(name=name, agent="1:2")) == [ok2, failed]
    assert ids(c.jobs(name=name, agent=(1, 1))) == [ok1]
    assert ids(c.jobs(name=name, limit=2)) == [ok2, failed]
    assert ids(c.jobs(name=name, since=3600)) == [ok2, failed, ok1]
    assert c.jobs(name=name, since=dt.datetime.now() + dt.timedelta(hours=1)) == []
    assert c.jobs(name=name + "x") == []
    assert ids(c.jobs(agent="1:1", limit=1)) == [history["ping"]]
    assert history["ping"] in ids(c.jobs(limit=5))
    assert ids(c.jobs(agent="1:2", state="ERROR", since=3600, limit=100))[0] == failed
    r = c.jobs(name=name, state="ERROR")[0]
    assert r["agents"] == {"1:2": {"state": "ERROR", "exit_code": None, "starttime": None,
                                   "time": None, "endtime": None, "result": None}}
    assert r["submitted_by"] == "redis" and r["duration"] is not None
    with pytest.raises(ValueError):
        c.jobs(state="DONE")


def test_client_jobs_skips_expired_records(stack, history):
    c, name = history["client"], history["name"]
    ghost = "ghost" + uuid.uuid4().hex
    key = f"jobs:name:{name}"
    stack.r.zadd(key, {ghost: int(time.time() * 1000)})   # indexed, its job:<id> gone
    try:
        assert ghost not in ids(c.jobs(name=name))
        assert len(c.jobs(name=name)) == 3
    finally:
        stack.r.zrem(key, ghost)


def test_jsctl_jobs(stack, history):
    name, (ok1, failed, ok2) = history["name"], history["ids"]
    cp = jsctl(stack, "jobs", "--name", name)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "CREATED", "CMD"]
    assert [ln.split()[0] for ln in lines[1:]] == [ok2, failed, ok1]
    assert all(name in ln and "execute" in ln and "redis" in ln for ln in lines[1:])
    cp = jsctl(stack, "jobs", "--name", name, "--state", "error", "--since", "1h", "--json")
    assert cp.returncode == 0, cp.stderr
    assert ids(json.loads(cp.stdout)) == [failed]
    cp = jsctl(stack, "jobs", "--agent", "1:1", "--name", name, "--limit", "1")
    assert [ln.split()[0] for ln in cp.stdout.splitlines()[1:]] == [ok1]
    cp = jsctl(stack, "jobs", "--name", name, "--since", "10m")
    assert len(cp.stdout.splitlines()) == 4, cp.stdout
    cp = jsctl(stack, "jobs", "--name", name + "x")
    assert cp.returncode == 0 and cp.stdout == "" and "no jobs" in cp.stderr


def test_jsctl_exec_as_a_redis_user_without_output_access_prints_the_tails(stack):
    # An ACL written before live output existed (no ~output:* pattern): exec still works.
    user, password = "noout" + uuid.uuid4().hex[:6], "pw-" + uuid.uuid4().hex
    stack.r.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~cmds_queue",
                            "~cmds_queue_*", "%R~job:*", "+@all")
    try:
        url = stack.redis_url.replace("redis://", f"redis://{user}:{password}@")
        cp = run_jsctl("exec", "--gid", "1", "--nid", "1", "--timeout", str(WAIT), "--",
                       "sh", "-c", "echo out; echo err >&2", redis_url=url)
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout == "out\n" and "err" in cp.stderr
        assert "cannot read the live output" in cp.stderr
        cp = run_jsctl("jobs", redis_url=url)
        assert cp.returncode == 1 and "refused" in cp.stderr, cp.stderr
    finally:
        stack.r.execute_command("ACL", "DELUSER", user)
