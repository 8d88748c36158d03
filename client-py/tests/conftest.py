"""Fixtures: the real stack (redis-server, target/debug/jsacc, two target/debug/jsagent).

Tests that use the ``stack`` fixture are marked ``stack`` automatically; run only the unit
tests with ``pytest -m "not stack"``. The binaries come from ``<repo>/target/debug`` or from
``$JSACC_BIN_DIR``; when they are missing the stack tests FAIL (they are not skipped) and say to
run ``cargo build --bins``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMAS_DIR = REPO_ROOT / "schemas"
START_TIMEOUT = 20.0


def bin_dir() -> Path:
    return Path(os.environ.get("JSACC_BIN_DIR") or REPO_ROOT / "target" / "debug")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process whose stdout/stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, name: str, argv: List[str], logdir: Path):
        self.name = name
        self.argv = argv
        self.out_path = logdir / f"{name}.stdout"
        self.err_path = logdir / f"{name}.stderr"
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        # Flags are given explicitly; keep the environment of the developer out of it.
        for key in list(env):
            if key.startswith(("JSACC_", "JSAGENT_")) and key != "JSACC_BIN_DIR":
                del env[key]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                          env=env)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 40) -> str:
        parts = []
        for path in (self.out_path, self.err_path):
            try:
                lines = path.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                lines = []
            if lines:
                head = f"--- {self.name} {path.suffix[1:]} (last {len(lines)} lines) ---"
                parts.append(head + "\n" + "\n".join(lines))
        status = "running" if self.alive() else f"exited with {self.popen.returncode}"
        return f"=== {self.name} ({status}): {' '.join(self.argv)}\n" + "\n".join(parts)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


class Stack:
    """redis-server (or, with ``redis_target``, an existing Redis target such as a
    ``redis+cluster://`` or ``redis+sentinel://`` URL), jsacc and two jsagents."""

    def __init__(self, tmp: Path, redis_target: Optional[str] = None):
        self.tmp = tmp
        self.bin = bin_dir()
        self.procs: List[Proc] = []
        self.redis_port = free_port()
        self.http_port = free_port()
        self.redis_url = redis_target or f"redis://127.0.0.1:{self.redis_port}"
        # What jsacc and `jsacc token` are given with -r.
        self.redis_arg = redis_target or f"127.0.0.1:{self.redis_port}"
        self.external_redis = redis_target is not None
        self.controller_url = f"http://127.0.0.1:{self.http_port}"
        self.tokens: Dict[str, Path] = {}

    # -- helpers ------------------------------------------------------------------------------
    def exe(self, name: str) -> str:
        return str(self.bin / name)

    def report(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def fail(self, msg: str) -> None:
        pytest.fail(f"{msg}\n{self.report()}", pytrace=False)

    def start(self, name: str, argv: List[str]) -> Proc:
        p = Proc(name, argv, self.tmp)
        self.procs.append(p)
        return p

    def token_add(self, gid: int, nid: int, roles: Optional[str] = None) -> Path:
        """``jsacc token add``: the token is the last line of stdout; written to a file.
        An agent's roles are its token's (``--roles``)."""
        argv = [self.exe("jsacc"), "token", "add", "--gid", str(gid), "--nid", str(nid),
                "-r", self.redis_arg, "--data-dir", str(self.tmp / "token-data")]
        if roles:
            argv += ["--roles", roles]
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            self.fail(f"`{' '.join(argv)}` did not finish within 30 s")
        lines = [ln.strip() for ln in cp.stdout.splitlines() if ln.strip()]
        if cp.returncode != 0 or not lines:
            self.fail(f"`{' '.join(argv)}` failed (exit {cp.returncode}):\n"
                      f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
        path = self.tmp / f"token-{gid}-{nid}"
        path.write_text(lines[-1] + "\n")
        path.chmod(0o600)
        self.tokens[f"{gid}:{nid}"] = path
        return path

    def start_agent(self, gid: int, nid: int, roles: Optional[str] = None) -> Proc:
        token = self.tokens.get(f"{gid}:{nid}") or self.token_add(gid, nid, roles)
        data_dir = self.tmp / f"agent-{gid}-{nid}"
        data_dir.mkdir(exist_ok=True)
        argv = [self.exe("jsagent"), "--controller", self.controller_url, "--gid", str(gid),
                "--nid", str(nid), "--token-file", str(token), "--data-dir", str(data_dir)]
        if roles:
            argv += ["--roles", roles]
        return self.start(f"jsagent-{gid}-{nid}", argv)

    def wait_until(self, what: str, check, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if not p.alive()]
            if dead:
                self.fail(f"while waiting for {what}: {', '.join(p.name for p in dead)} exited")
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.1)
        self.fail(f"{what}: not within {timeout:.0f} s")

    def readyz(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.controller_url}/readyz", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    # -- lifecycle ----------------------------------------------------------------------------
    def up(self) -> None:
        import redis

        missing = [n for n in ("jsacc", "jsagent") if not (self.bin / n).is_file()]
        if missing:
            pytest.fail(f"missing binaries {missing} in {self.bin}: run `cargo build --bins` in "
                        f"{REPO_ROOT} (or point JSACC_BIN_DIR at a directory holding them)",
                        pytrace=False)
        if self.external_redis:
            import jsacc

            # The test's own view of the data, through the same target parser as the client.
            self.r = jsacc.Client(self.redis_url).redis
        else:
            redis_server = shutil.which("redis-server")
            if not redis_server:
                pytest.fail("redis-server not found on PATH (apt-get install redis-server)",
                            pytrace=False)
            self.start("redis-server", [redis_server, "--port", str(self.redis_port), "--bind",
                                        "127.0.0.1", "--save", "", "--appendonly", "no",
                                        "--dir", str(self.tmp)])
            self.r = redis.Redis(port=self.redis_port, decode_responses=True)
        self.wait_until("redis answering PING", self.r.ping, 10)

        ctl_data = self.tmp / "controller-data"
        ctl_data.mkdir()
        self.start("jsacc", [self.exe("jsacc"), "--bind", "127.0.0.1", "-p", str(self.http_port),
                             "-r", self.redis_arg, "--insecure-http",
                             "--data-dir", str(ctl_data)])
        self.wait_until(f"the controller's {self.controller_url}/readyz answering 200", self.readyz)

        # An agent's roles are its token's.
        self.token_add(1, 1, "storage")
        self.token_add(1, 2, "web,storage")
        # Roles: only 1:2 has "web" (role routing must reach it); both have "storage" (fanout).
        self.start_agent(1, 1, roles="storage")
        self.start_agent(1, 2, roles="web,storage")
        self.wait_until("agents 1:1 and 1:2 in the `agents` sorted set",
                        lambda: self.r.zscore("agents", "1:1") is not None
                        and self.r.zscore("agents", "1:2") is not None)
        # Role routing needs the roles: wait until both agents said hello with them.
        self.wait_until("agent hashes with roles",
                        lambda: "web" in (self.r.hget("agent:{1:2}", "roles") or "")
                        and "storage" in (self.r.hget("agent:{1:1}", "roles") or ""))

    def down(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001 - stop the others anyway
                pass


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.up()
        yield s
    finally:
        s.down()


@pytest.fixture(scope="session")
def bare_redis(tmp_path_factory):
    """A redis-server of its own, with no controller or agent: for tests that write job records
    and indexes by hand. Yields its URL; each test flushes it first."""
    import redis

    redis_server = shutil.which("redis-server")
    if not redis_server:
        pytest.fail("redis-server not found on PATH (apt-get install redis-server)",
                    pytrace=False)
    tmp = tmp_path_factory.mktemp("bare-redis")
    port = free_port()
    p = Proc("redis-server", [redis_server, "--port", str(port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(tmp)], tmp)
    r = redis.Redis(port=port, decode_responses=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            r.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, p.tail()
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        r.close()
        p.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A Redis Cluster of 6 redis-servers (3 primaries, 3 replicas); ``.url`` is its
    ``redis+cluster://`` target."""
    from topologies import RedisClusterSet

    c = RedisClusterSet(tmp_path_factory.mktemp("redis-cluster"))
    try:
        c.up()
        yield c
    finally:
        c.down()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory):
    """A primary, 2 replicas and 3 Sentinels monitoring it as ``jsacc``; ``.url`` is its
    ``redis+sentinel://.../jsacc`` target."""
    from topologies import SentinelSet

    s = SentinelSet(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        s.up()
        yield s
    finally:
        s.down()


@pytest.fixture
def client(stack):
    import jsacc

    c = jsacc.Client(stack.redis_url)
    yield c
    c.close()


def pytest_collection_modifyitems(items):
    for item in items:
        if {"stack", "ha_stack"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)


def run_jsctl(*args: str, redis_url: Optional[str] = None, timeout: float = 60,
              input: Optional[str] = None) -> subprocess.CompletedProcess:
    """``python -m jsacc.cli ARGS`` with the given Redis URL (via --redis)."""
    argv = [sys.executable, "-m", "jsacc.cli"]
    if redis_url is not None:
        argv += ["--redis", redis_url]
    env = {k: v for k, v in os.environ.items() if k != "JSACC_REDIS"}
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout,
                          input=input, env=env)


def wait_file(path: Path, timeout: float = 30) -> None:
    """Wait until the job's process created ``path`` (the agents run on this machine)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the job did not start within {timeout} s"
        time.sleep(0.05)
