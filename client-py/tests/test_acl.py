"""The Python client as the ``client`` user of deploy/redis/users.acl: a redis-server loads a
copy of the file (its password placeholders replaced by the SHA-256 of test passwords), the
stack of conftest.py (jsacc, two jsagents) runs on it as user ``jsacc``, and the client pushes,
waits and reads as ``client``, and is refused what would take over the agents."""

from __future__ import annotations

import hashlib
import shutil
import time
import uuid

import pytest
import redis

import jsacc
from conftest import REPO_ROOT, Proc, Stack, free_port, run_jsctl

pytestmark = pytest.mark.stack

JSACC_PASSWORD = "jsacc-test-password"
CLIENT_PASSWORD = "client-test-password"
WAIT = 30


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class AclStack:
    def __init__(self, stack: Stack, port: int):
        self.stack = stack
        self.port = port

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}"

    @property
    def client_url(self) -> str:
        return self.url("client", CLIENT_PASSWORD)


@pytest.fixture(scope="module")
def acl_stack(tmp_path_factory):
    redis_server = shutil.which("redis-server")
    if not redis_server:
        pytest.fail("redis-server not found on PATH (apt-get install redis-server)", pytrace=False)
    tmp = tmp_path_factory.mktemp("acl")
    acl = (REPO_ROOT / "deploy" / "redis" / "users.acl").read_text()
    acl = (acl.replace("SHA256_OF_THE_JSACC_PASSWORD", _sha256(JSACC_PASSWORD))
           .replace("SHA256_OF_THE_CLIENT_PASSWORD", _sha256(CLIENT_PASSWORD)))
    (tmp / "users.acl").write_text(acl)
    port = free_port()
    server = Proc("redis-server-acl", [redis_server, "--port", str(port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(tmp),
                                       "--aclfile", str(tmp / "users.acl")], tmp)
    (tmp / "stack").mkdir()
    # The controller, `jsacc token` and the stack's own view of Redis are user `jsacc`.
    stack = Stack(tmp / "stack", redis_target=f"redis://jsacc:{JSACC_PASSWORD}@127.0.0.1:{port}")
    try:
        stack.up()
        yield AclStack(stack, port)
    finally:
        stack.down()
        server.stop()


def test_the_client_user_pushes_waits_and_reads(acl_stack):
    with jsacc.Client(acl_stack.client_url) as c:
        name = f"t{uuid.uuid4().hex[:8]}"
        job = c.execute("sh", ["-c", "echo from-acl; echo 7::careful"], gid=1, nid=1,
                        domain="acl", name=name)
        result = job.result(timeout=WAIT)
        assert result["state"] == "OK", result
        assert "from-acl" in result["streams"][0]
        assert job.state == "OK"
        assert c.ping(gid=1, role="web").result(timeout=WAIT)["data"] == "pong"
        assert {a["agent"] for a in c.agents()} >= {"1:1", "1:2"}
        deadline = time.monotonic() + WAIT
        while not c.logs("acl", name) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [m["data"] for m in c.logs("acl", name)] == ["careful"]
        assert isinstance(c.stats(1, 1), dict)


def test_jsctl_works_as_the_client_user(acl_stack):
    cp = run_jsctl("exec", "--gid", "1", "--nid", "2", "--", "echo", "hi",
                   redis_url=acl_stack.client_url)
    assert cp.returncode == 0, cp.stderr
    assert "hi" in cp.stdout


@pytest.mark.parametrize("command", [
    ("HSET", "auth:agents", "1:1", "x"),
    ("LPUSH", "agent:{1:1}:queue", '{"id":"x","gid":1,"nid":1,"cmd":"ping"}'),
    ("FLUSHALL",),
])
def test_the_client_user_cannot_take_over_the_agents(acl_stack, command):
    with jsacc.Client(acl_stack.client_url) as c:
        with pytest.raises(redis.exceptions.NoPermissionError):
            c.redis.execute_command(*command)
