"""The client against a bare redis-server (no controller, no agent): job records, output streams
and history indexes written by hand (docs/protocol.md), to pin down what the client does when
they are missing, disappear, or are large. Regression tests of review findings:

- following a job whose record never appears, or expires mid-follow, ends (it polled forever);
- a deep history scan pages by score, not by offset (it was O(N²)), within a scan budget;
- Ctrl-C in `jsctl exec` that lands after BLPOP took a result loses nothing, and the wait after
  the kill is bounded.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

import pytest
import redis

import jsacc
from jsacc import history
from jsacc import job as job_module
from jsacc.cli import execute, main

T0 = 1_700_000_000_000  # a routing time (ms)


@pytest.fixture
def bare(bare_redis):
    """A client and a raw redis connection on the bare redis-server, emptied."""
    r = redis.Redis.from_url(bare_redis, decode_responses=True)
    r.flushall()
    c = jsacc.Client(bare_redis)
    yield c, r, bare_redis
    c.close()
    r.close()


def new_id() -> str:
    return uuid.uuid4().hex


def result_of(job_id, state="OK", stdout="hi\n", gid=1, nid=2):
    return {"id": job_id, "gid": gid, "nid": nid, "cmd": "execute", "args": {}, "data": "",
            "level": 0, "state": state, "time": 10, "starttime": T0, "exit_code": 0,
            "streams": [stdout, ""], "critical": ""}


def write_job(r, job_id, state="RUNNING", targets=("1:2",), result=None, score=T0):
    """``job:<id>`` as the controller writes it, indexed in ``jobs:all``."""
    fields = {"cmd": json.dumps({"id": job_id, "gid": 1, "cmd": "execute",
                                 "args": {"cmd": "true"}}),
              "state": state, "created": str(score), "targets": json.dumps(list(targets)),
              "submitted_by": "redis"}
    if result is not None:
        agent = f"{result['gid']}:{result['nid']}"
        fields[f"result:{agent}"] = json.dumps(result)
        fields[f"state:{agent}"] = result["state"]
    r.hset(f"job:{job_id}", mapping=fields)
    r.zadd("jobs:all", {job_id: score})


def add_line(r, job_id, text, agent="1:2"):
    r.xadd(f"output:{job_id}", {"agent": agent, "fd": 1, "level": 1, "line": text, "time": T0})


def hget_calls(r) -> int:
    return int(r.info("commandstats").get("cmdstat_hget", {}).get("calls", 0))


def after_hgets(r, n, action):
    """Run ``action`` in a thread once the server counted ``n`` more HGETs (the follower looked
    at the job's state that many times): no guess at how long that takes."""
    start = hget_calls(r)

    def run():
        deadline = time.monotonic() + 30
        while hget_calls(r) < start + n and time.monotonic() < deadline:
            time.sleep(0.01)
        action()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# -- following a job whose record is missing --------------------------------------------------

def test_follow_ends_when_the_record_expires_mid_follow(bare):
    c, r, _ = bare
    job_id = new_id()
    write_job(r, job_id)
    add_line(r, job_id, "one")
    got = []
    for batch in c.job(job_id).output_batches(follow=True, timeout=20):
        got.append([line["line"] for line in batch])
        if len(got) == 1:
            add_line(r, job_id, "two")       # printed just before the record went
            r.delete(f"job:{job_id}")        # expired
    assert got == [["one"], ["two"]]         # the stream read to its end, then the follow ends


def test_follow_ends_when_a_record_seen_without_lines_disappears(bare):
    c, r, _ = bare
    job_id = new_id()
    write_job(r, job_id)
    t = after_hgets(r, 2, lambda: r.delete(f"job:{job_id}"))
    start = time.monotonic()
    assert list(c.job(job_id).output(follow=True, timeout=20)) == []
    t.join()
    assert time.monotonic() - start < 10


def test_follow_of_an_unknown_id_stops_after_the_grace_period(bare, monkeypatch):
    c, _r, _ = bare
    monkeypatch.setattr(job_module, "ROUTING_GRACE", 0.5)
    job_id = new_id()
    with pytest.raises(jsacc.UnknownJob, match=f"no job {job_id} \\(never routed, or expired\\)"):
        list(c.job(job_id).output(follow=True))


def test_follow_waits_for_a_job_routed_within_the_grace_period(bare):
    c, r, _ = bare
    job_id = new_id()

    def route_and_end():
        add_line(r, job_id, "late")
        write_job(r, job_id, state="OK", result=result_of(job_id))

    t = after_hgets(r, 2, route_and_end)
    assert [x["line"] for x in c.job(job_id).output(follow=True, timeout=20)] == ["late"]
    t.join()


def test_jsctl_job_follow_of_an_unknown_id_exits_1(bare, monkeypatch, capsys):
    _c, _r, url = bare
    monkeypatch.setattr(job_module, "ROUTING_GRACE", 0.5)
    job_id = new_id()
    assert main(["--redis", url, "job", "follow", job_id]) == 1
    assert f"no job {job_id} (never routed, or expired)" in capsys.readouterr().err


def test_jsctl_job_follow_of_a_record_expired_mid_follow_exits_1(bare, capsys):
    _c, r, url = bare
    job_id = new_id()
    write_job(r, job_id)
    add_line(r, job_id, "one")
    t = after_hgets(r, 2, lambda: r.delete(f"job:{job_id}"))
    assert main(["--redis", url, "job", "follow", job_id, "--timeout", "20"]) == 1
    t.join()
    out = capsys.readouterr()
    assert out.out == "one\n"
    assert "record expired while it was followed" in out.err, out.err


def test_jsctl_job_follow_prints_a_read_as_one_batch(bare, capsys):
    c, r, url = bare
    job_id = new_id()
    write_job(r, job_id, state="OK", result=result_of(job_id))
    for i in range(3):
        add_line(r, job_id, f"l{i}")
    assert len(list(c.job(job_id).output_batches())) == 1
    assert main(["--redis", url, "job", "follow", job_id]) == 0
    assert capsys.readouterr().out == "l0\nl1\nl2\n"


# -- history: paging by score -----------------------------------------------------------------

def write_history(r, n):
    """``n`` finished jobs in ``jobs:all``: runs of 3 ids per score, and one run of 1500 ids on
    a single score (more than a page). Every 7th is KILLED. Returns all ids newest first, as
    ``ZRANGE … REV`` orders them (score, then id, descending)."""
    entries = []
    for i in range(n):
        score = T0 + (1000 if 2000 <= i < 3500 else i // 3)
        entries.append((score, f"{i:08x}" + uuid.uuid4().hex[:8], "KILLED" if i % 7 == 0 else "OK"))
    pipe = r.pipeline(transaction=False)
    for score, job_id, state in entries:
        pipe.hset(f"job:{job_id}", mapping={"cmd": json.dumps({"cmd": "ping", "args": {}}),
                                            "state": state, "created": str(score),
                                            "targets": "[]"})
        pipe.zadd("jobs:all", {job_id: score})
    pipe.execute()
    entries.sort(reverse=True)
    return [(job_id, state) for _score, job_id, state in entries]


def count_zranges(c):
    """Wrap the client's ZRANGE: the (offset, num) of each call."""
    calls = []
    real = c.redis.zrange

    def zrange(*args, **kw):
        calls.append((kw.get("offset"), kw.get("num")))
        return real(*args, **kw)

    c.redis.zrange = zrange
    return calls


def test_a_deep_history_scan_pages_by_score_not_by_offset(bare):
    c, r, _ = bare
    newest_first = write_history(r, 6000)
    calls = count_zranges(c)
    killed = c.jobs(state="KILLED", limit=10_000)
    assert [x["id"] for x in killed] == [i for i, s in newest_first if s == "KILLED"]
    assert not killed.truncated and killed.scanned == 6000
    # Pages of 100, 200, 400, 800, then 1000: a handful of reads, each starting at the score
    # where the last one stopped; an offset only to step over the ids of that score already
    # read (at most the 1500 of the long run), never over the whole index before the page.
    assert len(calls) <= 10, calls
    assert all(offset <= 1500 for offset, _ in calls), calls
    assert sum(offset for offset, _ in calls) <= 3000, calls

    calls.clear()
    assert [x["id"] for x in c.jobs(limit=50)] == [i for i, _ in newest_first[:50]]
    assert calls == [(0, 100)]


def test_a_history_scan_stops_at_its_budget(bare, monkeypatch, capsys):
    c, r, url = bare
    newest_first = write_history(r, 3000)
    monkeypatch.setattr(history, "SCAN_BUDGET", 1000)
    killed = c.jobs(state="KILLED", limit=10_000)
    assert killed.truncated and killed.scanned == 1000
    assert [x["id"] for x in killed] == [i for i, s in newest_first[:1000] if s == "KILLED"]
    assert not c.jobs(limit=5).truncated                # limit reached: nothing to say
    assert main(["--redis", url, "jobs", "--state", "killed", "--json"]) == 0
    out = capsys.readouterr()
    assert len(json.loads(out.out)) == 50
    assert "scanned the newest" not in out.err
    assert main(["--redis", url, "jobs", "--state", "killed", "--limit", "1000"]) == 0
    err = capsys.readouterr().err
    assert "scanned the newest 1000 jobs; narrow with --since/--agent/--name" in err, err


# -- Ctrl-C in jsctl exec ---------------------------------------------------------------------

class Terminal:
    """A stdin that is a terminal on which the user answers ``answer``."""

    def __init__(self, answer):
        self.answer = answer

    def isatty(self):
        return True

    def readline(self):
        return self.answer


def interrupt_once(monkeypatch, take_first):
    """The next ``Job.poll_result`` is interrupted by a Ctrl-C: after it took a result off
    the list (``take_first``: the result is lost) or before."""
    real = jsacc.Job.poll_result
    state = {"done": False}

    def poll_result(self):
        if state["done"]:
            return real(self)
        state["done"] = True
        if take_first:
            assert real(self) is not None
        raise KeyboardInterrupt

    monkeypatch.setattr(jsacc.Job, "poll_result", poll_result)


def exec_args():
    return argparse.Namespace(raw=False, fanout=False, timeout=None, json=False)


def test_ctrl_c_after_blpop_took_the_result_reads_it_from_the_record(bare, monkeypatch, capsys):
    c, r, _ = bare
    job_id = new_id()
    result = result_of(job_id, stdout="done\n")
    write_job(r, job_id, state="OK", result=result)
    r.rpush(f"cmds_queue_{job_id}", json.dumps(result))
    interrupt_once(monkeypatch, take_first=True)
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    kills = []
    # The agent refuses the kill: the job already ended.
    monkeypatch.setattr(execute, "kill_job", lambda *a, **kw: kills.append(a[1:4]) or 1)
    monkeypatch.setattr(execute, "KILL_WAIT", 10.0)
    code = execute._stream(c, c.job(job_id), exec_args())
    out = capsys.readouterr()
    assert code == 0, out.err
    assert kills == [(job_id, 1, 2)]
    assert "not killed on 1:2" in out.err, out.err
    assert out.out == "done\n"                          # the record's copy of the lost result


def test_ctrl_c_then_a_kill_that_does_not_end_the_job_exits_5(bare, monkeypatch, capsys):
    c, r, _ = bare
    job_id = new_id()
    write_job(r, job_id, state="RUNNING")
    interrupt_once(monkeypatch, take_first=False)
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    monkeypatch.setattr(execute, "kill_job", lambda *a, **kw: 0)
    monkeypatch.setattr(execute, "KILL_WAIT", 1.0)
    start = time.monotonic()
    assert execute._stream(c, c.job(job_id), exec_args()) == 5
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert f"job {job_id} did not end within 1 s of the kill (job state: RUNNING)" in err, err


def test_ctrl_c_answered_no_leaves_the_job_running(bare, monkeypatch, capsys):
    c, r, _ = bare
    job_id = new_id()
    write_job(r, job_id, state="RUNNING")
    interrupt_once(monkeypatch, take_first=False)
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    monkeypatch.setattr(execute, "kill_job", lambda *a, **kw: pytest.fail("killed"))
    assert execute._stream(c, c.job(job_id), exec_args()) == 130
    assert f"jsctl job follow {job_id}" in capsys.readouterr().err
