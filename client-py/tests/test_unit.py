"""Unit tests: no Redis, no controller, no agent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

import jsacc
from jsacc import records
from jsacc.cli.exits import exit_code_for_results, exit_code_for_state
from jsacc.command import build_command, build_execute_args
from jsacc.keys import parse_agent_id
from jsacc.target import mask_url
from jsacc.validate import check_id

from conftest import SCHEMAS_DIR, free_port, run_jsctl


def load_schema(name: str) -> dict:
    schema = json.loads((SCHEMAS_DIR / name).read_text())
    # Python's `re` (used by jsonschema for "pattern") knows no \p{..} classes: replace the
    # control-character class by its explicit ranges, the same set of characters.
    text = json.dumps(schema).replace("\\\\p{Cc}", "\\\\x00-\\\\x1f\\\\x7f-\\\\x9f")
    return json.loads(text)


@pytest.fixture(scope="module")
def command_validator():
    schema = load_schema("command.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# -- command building -------------------------------------------------------------------------

def test_command_fields_and_uuid_id():
    c = build_command("ping", gid=1, nid=5)
    assert set(c) == {"id", "gid", "nid", "cmd", "args"}
    assert c["gid"] == 1 and c["nid"] == 5 and c["cmd"] == "ping" and c["args"] == {}
    assert re.fullmatch(r"[0-9a-f]{32}", c["id"])
    assert build_command("ping", gid=1, nid=5)["id"] != c["id"]


def test_command_role_fanout_and_data():
    c = build_command("ping", gid=1, role="storage", fanout=True, id="9a7e")
    example = json.loads((SCHEMAS_DIR / "examples" / "command.role_fanout.json").read_text())
    assert c == {**example, "args": {}}
    assert "fanout" not in build_command("ping", role="web")
    d = build_command("execute", {"cmd": "cat"}, data={"a": 1}, nid=0)
    assert d["data"] == {"a": 1} and "data" not in build_command("ping", nid=0)


def test_execute_matches_the_contract_example():
    example = json.loads((SCHEMAS_DIR / "examples" / "command.execute.json").read_text())
    args = build_execute_args("/bin/ls", ["-l", "/opt"], domain="ops", name="ls", max_time=10)
    c = build_command("execute", args, data=example["data"], gid=1, nid=5, id=example["id"])
    assert c == example


def test_execute_args_conversions_and_extras():
    a = build_execute_args(Path("/bin/echo"), [1, 2.5, Path("/tmp")], env={"N": 3},
                           workingdir="$tmp", queue="serial", max_restart=None, max_wait=5)
    assert a == {"domain": "", "name": "", "cmd": "/bin/echo", "args": ["1", "2.5", "/tmp"],
                 "workingdir": "$tmp", "env": {"N": "3"}, "max_time": 0, "queue": "serial",
                 "max_wait": 5}


@pytest.mark.parametrize("kwargs, message", [
    (dict(cmd="ping"), "no target"),
    (dict(cmd="ping", nid=1, role="web"), "not both"),
    (dict(cmd="ping", nid=1, fanout=True), "fanout needs role"),
    (dict(cmd="", nid=1), "cmd"),
    (dict(cmd="ping", nid=-1), "nid"),
    (dict(cmd="ping", nid="1"), "nid"),
    (dict(cmd="ping", nid=True), "nid"),
    (dict(cmd="ping", gid=-2, nid=1), "gid"),
    (dict(cmd="ping", role=""), "role"),
    (dict(cmd="ping", nid=1, args=["x"]), "args"),
    (dict(cmd="ping", nid=1, id="a,b"), "id"),
    (dict(cmd="ping", nid=1, id="a b"), "id"),
    (dict(cmd="ping", nid=1, id=""), "id"),
    (dict(cmd="ping", nid=1, id="x" * 201), "id"),
    (dict(cmd="ping", nid=1, data=object()), "JSON"),
])
def test_command_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_command(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(cmd="/bin/echo", args="hi"), "list of strings"),
    (dict(cmd="/bin/echo", args=[{"a": 1}]), r"args\[0\]"),
    (dict(cmd="/bin/echo", args=5), "list of strings"),
    (dict(cmd=""), "must not be empty"),
    (dict(cmd="/bin/true", max_time=-2), "max_time"),
    (dict(cmd="/bin/true", max_time=1.5), "max_time"),
    (dict(cmd="/bin/true", env=["A=1"]), "env"),
])
def test_execute_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_execute_args(**kwargs)


def test_client_methods_validate_before_touching_redis():
    # Nothing listens on this port: a ValueError proves validation happens before any I/O.
    c = jsacc.Client(f"redis://127.0.0.1:{free_port()}")
    with pytest.raises(ValueError, match="no target"):
        c.execute("/bin/true", gid=1)
    with pytest.raises(ValueError, match="not both"):
        c.ping(gid=1, nid=1, role="web")
    with pytest.raises(ValueError, match="script"):
        c.execute_py(nid=1)
    with pytest.raises(jsacc.RedisUnavailable, match=r"127\.0\.0\.1"):
        c.ping(gid=1, nid=1)


def test_commands_validate_against_the_schema(command_validator):
    c = jsacc.Client("redis://127.0.0.1:1")
    built = [
        build_command("ping", gid=1, nid=5),
        build_command("ping", gid=1, role="web", fanout=True),
        build_command("execute", build_execute_args("/bin/echo", ["hi"], max_time=3,
                                                    env={"A": "b"}, workingdir="/"),
                      data="in", gid=0, nid=0),
        build_command("execute_js_py",
                      build_execute_args(None, (), domain="ops", name="x", script="print(1)",
                                         max_time=-1, recurring_period=60, queue="q"),
                      gid=0, nid=0),
        build_command("kill", {"id": "abc"}, gid=1, nid=2),
    ]
    for command in built:
        command_validator.validate(command)
    assert c  # constructing a client does not connect


def test_id_check_accepts_uuid_and_dashes():
    assert check_id("6f1c2a9e-0d4f-4b8e-9c51-2f0a7d3c9b10")
    with pytest.raises(ValueError):
        check_id("tab\tinside")


def test_keys_are_the_contract():
    assert jsacc.result_key("x") == "cmds_queue_x"
    assert jsacc.job_key("x") == "job:x"
    assert jsacc.agent_key(1, 5) == "agent:{1:5}"


def test_agent_ids_parse_or_raise_value_error():
    assert parse_agent_id("1:5") == (1, 5)
    for bad in ("1", "a:b", "1:5:x", ""):
        with pytest.raises(ValueError):
            parse_agent_id(bad)


# -- Redis replies as dicts (jsacc.records) ------------------------------------------------------

def test_agent_info_reads_roles_started_and_online():
    info = records.agent_info(1, 5, "1:5", 10_000, {b"roles": b'["web"]', b"started": b"7"},
                              now_ms=40_000, online_within=60.0)
    assert info == {"roles": ["web"], "started": 7, "hostname": "", "os": "", "arch": "",
                    "version": "", "agent": "1:5", "gid": 1, "nid": 5, "last_seen": 10_000,
                    "last_seen_ago": 30.0, "online": True}
    old = records.agent_info(1, 5, "1:5", 0, {"roles": "a, b"}, now_ms=61_000, online_within=60)
    assert old["roles"] == ["a", "b"] and old["started"] is None and not old["online"]


def test_stats_replies_skip_what_jsacc_did_not_write():
    latest = records.stats_latest({"b": '{"type": "gauge"}', "a": "not json"})
    assert latest == {"b": {"type": "gauge"}}
    batches = records.stats_batches([("1-0", {"batch": '{"gid": 1}'}), ("2-0", {"x": "y"})])
    assert batches == [{"gid": 1, "stream_id": "1-0"}]


def test_job_results_are_the_result_fields_of_the_record():
    record = {b"state": b"OK", b"result:1:5": b'{"state": "OK"}'}
    assert records.job_results(record) == {"1:5": {"state": "OK"}}


def test_mask_url():
    assert mask_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert mask_url("redis://:secret@h:1") == "redis://:***@h:1"
    assert mask_url("redis://h:1") == "redis://h:1"


def test_block_chunk_stays_below_socket_timeout():
    assert jsacc.Client("redis://127.0.0.1:1")._chunk <= 2.0
    assert jsacc.Client("redis://127.0.0.1:1", socket_timeout=1)._chunk == 0.5
    assert jsacc.Client("redis://127.0.0.1:1", socket_timeout=None)._chunk == 2.0


def test_timeout_is_a_jsacc_error():
    assert issubclass(jsacc.Timeout, jsacc.JsaccError)
    assert issubclass(jsacc.Timeout, TimeoutError)
    assert issubclass(jsacc.RedisUnavailable, jsacc.JsaccError)


# -- jsctl --------------------------------------------------------------------------------------

@pytest.mark.parametrize("state, code", [
    ("OK", 0), ("ERROR", 1), ("TIMEOUT", 3), ("KILLED", 4), ("WEIRD", 1), (None, 1)])
def test_exit_code_for_state(state, code):
    assert exit_code_for_state(state) == code


def test_exit_code_for_results():
    ok, err, to = {"state": "OK"}, {"state": "ERROR"}, {"state": "TIMEOUT"}
    assert exit_code_for_results([ok]) == 0
    assert exit_code_for_results([ok, to, err]) == 3
    assert exit_code_for_results([ok], expected=2) == 5
    assert exit_code_for_results([err], expected=2) == 1
    assert exit_code_for_results([]) == 5


@pytest.mark.parametrize("argv", [
    ["exec", "--nid", "1"],                              # no command
    ["exec", "--nid", "1", "--role", "web", "--", "ls"],  # both targets
    ["exec", "--", "ls"],                                # no target
    ["exec", "--nid", "x", "--", "ls"],                  # not a number
    ["exec", "--nid", "1", "--fanout", "--", "ls"],      # fanout without role
    ["ping"],
    ["nosuchcommand"],
    [],
])
def test_jsctl_usage_errors_exit_2(argv):
    cp = run_jsctl(*argv, redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 2, cp.stderr
    assert "usage" in cp.stderr


def test_jsctl_unreachable_redis_exits_6_naming_the_url():
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}"
    for argv in (["ping", "--gid", "1", "--nid", "1"], ["agents"],
                 ["exec", "--nid", "1", "--", "/bin/true"]):
        cp = run_jsctl(*argv, redis_url=url)
        assert cp.returncode == 6, (argv, cp.stderr)
        assert "cannot reach Redis" in cp.stderr and "127.0.0.1" in cp.stderr
        assert "hunter2" not in cp.stderr


def test_jsctl_help_documents_exit_codes():
    for argv in ([], ["exec"], ["ping"]):
        cp = run_jsctl(*argv, "--help")
        assert cp.returncode == 0
        for line in ("0  OK", "1  ERROR", "2  usage", "3  TIMEOUT", "4  KILLED", "5  no result",
                     "6  cannot reach Redis"):
            assert line in cp.stdout, (argv, line)
    assert "JSACC_REDIS" in run_jsctl("--help").stdout


@pytest.mark.parametrize("argv", [
    ["stats"],                                     # no agent
    ["stats", "--gid", "1"],                       # no --nid
    ["stats", "1"],                                # half of the deprecated GID NID
    ["stats", "--gid", "1", "--nid", "5", "1", "5"],  # both forms
    ["info", "--nid", "5", "gpu"],                 # no such host fact
    ["info", "1", "5", "gpu"],
    ["info", "--nid", "5", "1"],                   # an id where a host fact goes
])
def test_jsctl_stats_and_info_usage_errors_exit_2(argv):
    cp = run_jsctl(*argv, redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 2, cp.stderr
    assert "usage" in cp.stderr


@pytest.mark.parametrize("argv", [
    ["stats", "--gid", "1", "--nid", "5"], ["stats", "--nid", "5", "--json"],
    ["info", "--gid", "1", "--nid", "5"], ["info", "--gid", "1", "--nid", "5", "mem", "disk"]])
def test_jsctl_stats_and_info_take_gid_and_nid_flags(argv):
    # Parsed, then stopped by the unreachable Redis (exit 6): no usage error, no warning.
    cp = run_jsctl(*argv, redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 6, cp.stderr
    assert "deprecated" not in cp.stderr


@pytest.mark.parametrize("argv", [["stats", "1", "5"], ["stats", "1", "5", "--prefix", "ops."],
                                  ["info", "1", "5"], ["info", "1", "5", "mem", "--json"]])
def test_jsctl_positional_gid_nid_is_a_deprecated_alias(argv):
    cp = run_jsctl(*argv, redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 6, cp.stderr  # accepted: it got as far as Redis
    warning = f"`jsctl {argv[0]} GID NID` is deprecated, use `jsctl {argv[0]} --gid 1 --nid 5`"
    assert warning in cp.stderr


def test_result_examples_validate():
    schema = load_schema("result.schema.json")
    for path in sorted((SCHEMAS_DIR / "examples").glob("result.*.json")):
        jsonschema.validate(json.loads(path.read_text()), schema,
                            cls=jsonschema.Draft202012Validator)


# -- rollouts (issue 14): batch, batch_wait, max_failures ------------------------------------------

def test_rollout_fields_are_top_level_and_match_the_contract_example():
    example = json.loads((SCHEMAS_DIR / "examples" / "command.rollout.json").read_text())
    args = build_execute_args("/usr/local/bin/upgrade", domain="ops", name="upgrade",
                              max_time=600)
    del args["args"]
    c = build_command("execute", args, gid=1, role="web", fanout=True, id=example["id"],
                      batch="25%", batch_wait=30, max_failures=1)
    assert c == example


def test_rollout_amounts_are_normalised():
    c = build_command("ping", gid=1, role="web", fanout=True, batch=" 3 ", max_failures="10 %")
    assert (c["batch"], c["max_failures"]) == (3, "10%")
    assert "batch_wait" not in c
    assert "batch" not in build_command("ping", gid=1, role="web", fanout=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch="abc"), r'^batch: `abc` is neither a count nor a percentage like "25%"$'),
    (dict(batch=0), "batch: must be at least 1"),
    (dict(batch="0%"), "batch: must be at least 1"),
    (dict(batch="101%"), r"batch: 101% is over 100%"),
    (dict(batch=True), "batch: "),
    (dict(batch=1.5), "batch: "),
    (dict(batch=2, batch_wait=-1), "batch_wait"),
    (dict(batch=2, batch_wait=10 ** 12), "batch_wait: .* too long"),
    (dict(batch=2, max_failures=-1), "max_failures: must be at least 0"),
    (dict(batch=2, max_failures="x%"), "max_failures: "),
    (dict(batch_wait=5), "batch_wait: needs batch"),
    (dict(max_failures=1), "max_failures: needs batch"),
    (dict(batch=2, fanout=False), "batch: only a fanout"),
])
def test_rollout_value_errors(kwargs, message):
    kwargs = {"fanout": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_command("ping", gid=1, role="web", **kwargs)


@pytest.mark.parametrize("args, what", [
    ({"recurring_period": 60}, "args.recurring_period"),
    ({"cron": "* * * * *"}, "args.cron"),
    ({"max_time": -1}, "args.max_time -1"),
])
def test_a_rollout_of_a_job_that_never_ends_is_refused(args, what):
    with pytest.raises(ValueError, match=f"batch: a job with {what}"):
        build_command("execute", args=dict(args, cmd="/bin/true"), gid=1, role="web",
                      fanout=True, batch=2)


@pytest.mark.parametrize("argv, message", [
    (["--role", "web", "--batch", "2"], "--batch: only a fanout"),
    (["--role", "web", "--fanout", "--batch", "x"], "--batch: `x` is neither a count"),
    (["--role", "web", "--fanout", "--max-failures", "1"], "--max-failures: needs batch"),
    (["--role", "web", "--fanout", "--batch", "2", "--batch-wait", "-3"],
     "--batch-wait: -3 is not"),
    (["--nid", "1", "--tz", "UTC"], "--tz needs --cron"),
])
def test_jsctl_exec_rollout_usage_errors(argv, message):
    # Nothing listens on this port: the usage error comes before any connection.
    done = run_jsctl("exec", *argv, "--", "/bin/true",
                     redis_url=f"redis://127.0.0.1:{free_port()}")
    assert done.returncode == 2, done
    assert message in done.stderr, done.stderr


def test_jsctl_exec_help_explains_the_rollout_and_cron_flags():
    done = run_jsctl("exec", "--help")
    for flag in ("--batch N|P%", "--batch-wait S", "--max-failures N|P%", "--cron EXPR",
                 "--tz ZONE"):
        assert flag in done.stdout, flag


def test_a_rollout_record_shows_its_progress_and_pending_agents():
    from jsacc.cli.job import record_lines
    raw = {"cmd": json.dumps({"id": "r", "gid": 1, "role": "web", "fanout": True,
                              "cmd": "ping", "batch": 1}),
           "state": "RUNNING", "created": "1000", "targets": '["1:1","1:2","1:3"]',
           "rollout": '{"batch":1,"batch_wait":5,"max_failures":null}', "released": "2",
           "failed": "1", "state:1:1": "ERROR"}
    r = records.job_record("r", raw)
    assert r["rollout"] == {"batch": 1, "batch_wait": 5, "max_failures": None, "released": 2,
                            "failed": 1, "stopped": None}
    assert [r["agents"][a]["state"] for a in ("1:1", "1:2", "1:3")] == ["ERROR", None,
                                                                        "PENDING"]
    text = "\n".join(record_lines(r))
    assert "rollout       batches of 1, 5 s apart, no failure limit: 2 of 3 released, 1 failed" \
        in text, text
    assert records.job_record("p", {"cmd": "{}", "state": "OK"})["rollout"] is None
