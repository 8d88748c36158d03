"""Unit tests (no Redis, no binaries) of job history: record parsing, filters, --since and the
tables of `jsctl job` and `jsctl jobs`."""

from __future__ import annotations

import argparse
import datetime as dt
import json

import pytest

from jsacc import build_execute_args
from jsacc.cli.args import agent_id, duration
from jsacc.cli.job import format_command, format_duration, record_lines
from jsacc.cli.jobs import jobs_table
from jsacc.history import check_agent, check_name, check_states, matches, since_ms
from jsacc.records import job_record

from conftest import run_jsctl

COMMAND = {"id": "j1", "gid": 1, "nid": 2, "cmd": "execute",
           "args": {"domain": "ops", "name": "backup", "cmd": "sh", "args": ["-c", "echo 'a b'"],
                    "max_time": 0}}
RESULT = {"id": "j1", "gid": 1, "nid": 2, "cmd": "execute", "args": {}, "data": "done",
          "level": 0, "state": "ERROR", "time": 1500, "starttime": 1700000001000,
          "exit_code": 3, "streams": ["", "oops\n"], "critical": ""}


def full_hash():
    return {"cmd": json.dumps(COMMAND), "state": "ERROR", "created": "1700000000000",
            "started": "1700000000500", "ended": "1700000003000", "targets": '["1:2"]',
            "submitted_by": "redis", "state:1:2": "ERROR", "result:1:2": json.dumps(RESULT)}


# -- record parsing ---------------------------------------------------------------------------

def test_job_record_of_a_finished_job():
    r = job_record("j1", full_hash())
    assert r["id"] == "j1" and r["state"] == "ERROR" and r["cmd"] == "execute"
    assert (r["domain"], r["name"], r["submitted_by"]) == ("ops", "backup", "redis")
    assert r["targets"] == ["1:2"] and r["command"] == COMMAND
    assert (r["created"], r["started"], r["ended"]) == (1700000000000, 1700000000500,
                                                        1700000003000)
    assert r["duration"] == 2.5
    a = r["agents"]["1:2"]
    assert a["state"] == "ERROR" and a["exit_code"] == 3 and a["result"] == RESULT
    assert (a["starttime"], a["time"], a["endtime"]) == (1700000001000, 1500, 1700000002500)
    json.dumps(r)  # what `jsctl job --json` prints


def test_job_record_of_an_unknown_or_expired_job_is_none():
    assert job_record("j1", {}) is None
    assert job_record("j1", {"cmd": None, "state": None}) is None  # HMGET of a missing key


def test_job_record_of_a_running_job():
    raw = {k: v for k, v in full_hash().items() if not k.startswith(("result:", "state:"))}
    raw.update(state="RUNNING", ended=None)
    r = job_record("j1", {k: v for k, v in raw.items()})
    assert r["ended"] is None and r["duration"] is None
    assert r["agents"] == {"1:2": {"state": None, "exit_code": None, "starttime": None,
                                   "time": None, "endtime": None, "result": None}}


def test_job_record_never_delivered_has_a_duration_from_created():
    r = job_record("j1", {"cmd": json.dumps(COMMAND), "state": "ERROR",
                          "created": "1000", "ended": "1250", "targets": "[]"})
    assert r["started"] is None and r["duration"] == 0.25 and r["agents"] == {}


def test_job_record_with_malformed_fields_is_not_an_error():
    r = job_record("j1", {b"cmd": b"not json", b"state": b"OK", b"targets": b"{",
                          b"created": b"soon", b"result:1:1": b"[1"})
    assert r["command"] is None and r["cmd"] is None and r["targets"] == []
    assert r["created"] is None and r["agents"]["1:1"]["result"] is None


# -- filters ----------------------------------------------------------------------------------

def test_filter_checks():
    assert check_agent("1:5") == "1:5" and check_agent((1, 5)) == "1:5"
    assert check_agent(None) is None
    assert check_states("ok") == ("OK",)
    assert check_states(["error", "KILLED"]) == ("ERROR", "KILLED")
    assert check_name("ops/backup") == "ops/backup" and check_name("/x") == "/x"
    for bad in ("1", "a:b", "1:2:3", "-1:2"):
        with pytest.raises(ValueError):
            check_agent(bad)
    for bad in ("DONE", [], ["OK", "nope"]):
        with pytest.raises(ValueError):
            check_states(bad)
    for bad in ("backup", "ops/", 5):
        with pytest.raises(ValueError):
            check_name(bad)


def test_matches():
    r = job_record("j1", full_hash())
    assert matches(r, None, None, None)
    assert matches(r, "1:2", ("ERROR", "OK"), "ops/backup")
    assert not matches(r, "1:1", None, None)
    assert not matches(r, None, ("OK",), None)
    assert not matches(r, None, None, "ops/other")


def test_since_ms():
    assert since_ms(None) is None
    assert since_ms(3600, now=10000.0) == (10000 - 3600) * 1000
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert since_ms(when) == int(when.timestamp() * 1000)
    for bad in (-1, "1h", True):
        with pytest.raises(ValueError):
            since_ms(bad)


# -- jsctl arguments and output ---------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("30s", 30), ("15m", 900), ("1h", 3600),
                                           ("2d", 172800), ("90", 90), ("1.5h", 5400),
                                           (" 2D ", 172800)])
def test_since_durations(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1w", "-1h", "1 h", "1h30m", "abc"])
def test_bad_since_durations(text):
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_agent_id_type():
    assert agent_id("01:5") == "1:5"
    for bad in ("1", "1:x", ":5", "1:-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            agent_id(bad)


def test_format_duration():
    assert [format_duration(s) for s in (None, 0.25, 12.34, 307, 7500)] == [
        "-", "250ms", "12.3s", "5m07s", "2h05m"]


def test_format_command():
    r = job_record("j1", full_hash())
    assert format_command(r) == "sh -c 'echo '\"'\"'a b'\"'\"''"
    ping = job_record("j2", {"cmd": json.dumps({"cmd": "ping", "args": {}}), "state": "OK"})
    assert format_command(ping) == "ping"
    kill = job_record("j3", {"cmd": json.dumps({"cmd": "kill", "args": {"id": "j1"}})})
    assert format_command(kill) == 'kill {"id": "j1"}'
    # A config-file daemon's record before its first result: the hello gave only its id.
    daemon = job_record("cfg:1:2:d", {"cmd": json.dumps({"id": "cfg:1:2:d", "gid": 1, "nid": 2}),
                                      "state": "RUNNING", "submitted_by": "config"})
    assert format_command(daemon) == "-"


def test_record_lines_show_command_agents_and_result():
    text = "\n".join(record_lines(job_record("j1", full_hash())))
    for part in ("job           j1", "ops/backup", "submitted by  redis", "targets       1:2",
                 "state         ERROR", "duration      2.5s", "result 1:2: done"):
        assert part in text, text
    assert any(ln.split()[:3] == ["1:2", "ERROR", "3"] for ln in text.splitlines()), text


def test_jobs_table():
    running = job_record("j2", {"cmd": json.dumps({"cmd": "ping", "args": {}}),
                                "state": "RUNNING", "created": "1700000000000",
                                "started": "1700000000000",
                                "targets": '["1:1","1:2","1:3","1:4"]'})
    lines = jobs_table([job_record("j1", full_hash()), running], now_ms=1700000010000)
    assert lines[0].split() == ["ID", "CREATED", "CMD", "NAME", "TARGETS", "STATE", "DURATION",
                                "SUBMITTER"]
    assert lines[1].split()[0] == "j1" and "ops/backup" in lines[1] and "2.5s" in lines[1]
    assert "1:1,1:2,1:3,+1" in lines[2] and "10.0s+" in lines[2] and "RUNNING" in lines[2]


def test_execute_args_output_flag():
    assert "output" not in build_execute_args("ls")
    assert build_execute_args("ls", output=False)["output"] is False
    with pytest.raises(ValueError):
        build_execute_args("ls", output="no")


@pytest.mark.parametrize("argv", [
    ["job"], ["job", "a", "b"], ["job", "follow", "a", "b"], ["job", "follow", "x", "--json"],
    ["job", "x", "--raw"], ["jobs", "--since", "1w"], ["jobs", "--agent", "5"],
    ["jobs", "--state", "DONE"], ["jobs", "--limit", "0"], ["jobs", "--name", "backup"],
    ["exec", "--nid", "1", "--detach"],
])
def test_jsctl_job_and_jobs_usage_errors_exit_2(argv):
    cp = run_jsctl(*argv, redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 2, cp.stderr
    assert "usage" in cp.stderr


@pytest.mark.parametrize("argv", [["job", "abc"], ["job", "follow", "abc", "--raw"],
                                  ["jobs", "--agent", "1:5", "--state", "error", "--since", "2d"]])
def test_jsctl_job_and_jobs_parse_then_need_redis(argv):
    cp = run_jsctl(*argv, redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 6, cp.stderr


def test_jsctl_help_of_the_new_commands_has_examples():
    for argv, want in ((["job"], "jsctl job follow"), (["jobs"], "--since 1h"),
                       (["exec"], "--detach")):
        cp = run_jsctl(*argv, "--help")
        assert cp.returncode == 0 and "examples:" in cp.stdout and want in cp.stdout, argv
