"""Real replicated Redis topologies for the tests: a Redis Cluster and a Sentinel set.

Both are made of redis-server processes on free ports of 127.0.0.1, each in its own temporary
directory, without persistence (fast; the tests need replication, not durability on disk).
conftest.py starts each once per pytest run (session fixtures) and kills them at the end.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, List, Optional

import pytest
import redis

from conftest import Proc, free_port

START_TIMEOUT = 30.0


def _redis_bin(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} not found on PATH (apt-get install redis-server)", pytrace=False)
    return path


def _info(port: int, section: str) -> dict:
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)
    return r.info(section)


def _cluster_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free (and exists) too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _cluster_state_ok(port: int) -> bool:
    raw = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).execute_command("CLUSTER INFO")
    if isinstance(raw, dict):
        return raw.get("cluster_state") == "ok"
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return "cluster_state:ok" in text


class _Topology:
    """Shared process bookkeeping: start, wait with a report on failure, stop."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: List[Proc] = []

    def start(self, name: str, argv: List[str]) -> Proc:
        p = Proc(name, argv, self.tmp)
        self.procs.append(p)
        return p

    def report(self) -> str:
        return "\n".join(p.tail(20) for p in self.procs)

    def wait_until(self, what: str, check: Callable[[], bool],
                   timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last: Optional[BaseException] = None
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except Exception as e:  # noqa: BLE001 - not up yet
                last = e
            time.sleep(0.1)
        pytest.fail(f"{what}: not within {timeout:.0f} s (last error: {last})\n{self.report()}",
                    pytrace=False)

    def redis_server(self, name: str, port: int, *extra: str) -> Proc:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        return self.start(name, [_redis_bin("redis-server"), "--port", str(port), "--bind",
                                 "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", str(d), *extra])

    def down(self) -> None:
        for p in reversed(self.procs):
            if p.alive():
                p.popen.kill()
                p.popen.wait(timeout=5)


class RedisClusterSet(_Topology):
    """6 nodes: 3 primaries + 3 replicas (``redis-cli --cluster create --cluster-replicas 1``)."""

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.ports = [_cluster_port() for _ in range(6)]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    def up(self) -> None:
        for i, port in enumerate(self.ports):
            self.redis_server(f"cluster-{i}", port, "--cluster-enabled", "yes",
                              "--cluster-config-file", "nodes.conf",
                              "--cluster-node-timeout", "2000")
        for port in self.ports:
            self.wait_until(f"cluster node {port} answering PING",
                            lambda port=port: redis.Redis(host="127.0.0.1", port=port).ping(), 10)
        cp = subprocess.run([_redis_bin("redis-cli"), "--cluster", "create",
                             *[f"127.0.0.1:{p}" for p in self.ports],
                             "--cluster-replicas", "1", "--cluster-yes"],
                            capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed:\n{cp.stdout}\n{cp.stderr}",
                        pytrace=False)

        def ready() -> bool:
            roles = [_info(p, "replication") for p in self.ports]
            ok = all(_cluster_state_ok(p) for p in self.ports)
            replicas = [r for r in roles if r["role"] == "slave"]
            # Each primary's replica online and caught up: a WAIT right after start-up then
            # answers at once instead of timing out on a replica still finishing its sync.
            primaries = [r for r in roles if r["role"] == "master"]
            caught_up = all(
                isinstance(r.get("slave0"), dict) and r["slave0"].get("state") == "online"
                and r["slave0"].get("offset") == r["master_repl_offset"] for r in primaries)
            return ok and len(replicas) == 3 and caught_up and all(
                r["master_link_status"] == "up" for r in replicas)

        self.wait_until("cluster_state:ok on every node and 3 replicas linked and caught up",
                        ready)


class SentinelSet(_Topology):
    """A primary, 2 replicas (``--replicaof``) and 3 Sentinels monitoring it as ``jsacc``."""

    MASTER = "jsacc"

    def __init__(self, tmp: Path):
        super().__init__(tmp)
        self.data_ports = [free_port() for _ in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.url = ("redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
                    + f"/{self.MASTER}")
        self.data_procs: dict = {}

    def start_data(self, i: int, replicaof: Optional[int]) -> Proc:
        extra = ["--replicaof", "127.0.0.1", str(replicaof)] if replicaof else []
        p = self.redis_server(f"sentinel-data-{i}", self.data_ports[i], *extra)
        self.data_procs[self.data_ports[i]] = p
        return p

    def up(self) -> None:
        primary = self.data_ports[0]
        self.start_data(0, None)
        self.start_data(1, primary)
        self.start_data(2, primary)
        self.wait_until("the primary with 2 linked replicas",
                        lambda: _info(primary, "replication")["connected_slaves"] == 2
                        and all(_info(p, "replication")["master_link_status"] == "up"
                                for p in self.data_ports[1:]))
        for i, port in enumerate(self.sentinel_ports):
            d = self.tmp / f"sentinel-{i}"
            d.mkdir()
            conf = d / "sentinel.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                            f"sentinel monitor {self.MASTER} 127.0.0.1 {primary} 2\n"
                            f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                            f"sentinel failover-timeout {self.MASTER} 5000\n")
            self.start(f"sentinel-{i}", [_redis_bin("redis-server"), str(conf), "--sentinel"])

        def ready() -> bool:
            for port in self.sentinel_ports:
                s = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
                if len(s.sentinel_slaves(self.MASTER)) != 2:
                    return False
                if len(s.sentinel_sentinels(self.MASTER)) != 2:
                    return False
            return True

        self.wait_until("each Sentinel knowing 2 replicas and 2 other Sentinels", ready)

    def primary_port(self) -> int:
        """The primary's port, as the Sentinels say."""
        s = redis.Redis(host="127.0.0.1", port=self.sentinel_ports[0], socket_timeout=2,
                        decode_responses=True)
        return int(s.sentinel_get_master_addr_by_name(self.MASTER)[1])

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Until every Sentinel names the same live primary and it has 2 linked replicas (after
        a failover, the old primary comes back as a replica only once restarted and converted)."""
        def healthy() -> bool:
            named = {int(redis.Redis(host="127.0.0.1", port=p, socket_timeout=2,
                                     decode_responses=True)
                         .sentinel_get_master_addr_by_name(self.MASTER)[1])
                     for p in self.sentinel_ports}
            if len(named) != 1:
                return False
            info = _info(named.pop(), "replication")
            links = [_info(p, "replication") for p in self.data_ports
                     if p in self.data_procs and self.data_procs[p].alive()]
            return info["role"] == "master" and info["connected_slaves"] == 2 and all(
                r["master_link_status"] == "up" for r in links if r["role"] == "slave")

        self.wait_until("the Sentinel set healthy (one primary, 2 linked replicas)", healthy,
                        timeout)

    def kill_primary(self) -> int:
        """SIGKILL the primary (no chance to say goodbye); returns its port."""
        port = self.primary_port()
        p = self.data_procs[port]
        p.popen.send_signal(signal.SIGKILL)
        p.popen.wait(timeout=5)
        return port

    def restart(self, port: int) -> None:
        """Start a killed data node again (as a primary: the Sentinels turn it into a replica
        of the new primary)."""
        self.start_data(self.data_ports.index(port), None)
