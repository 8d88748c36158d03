"""Unit tests of the Redis target parser (jsacc.target): no Redis needed."""

from __future__ import annotations

import pytest

import jsacc
from jsacc.cli import build_parser
from jsacc.target import RedisTarget, mask_url, parse_target

GOOD = {
    "host-port": ("127.0.0.1:6379", RedisTarget("standalone", (("127.0.0.1", 6379),))),
    "hostname-port": ("redis.example:7000", RedisTarget("standalone", (("redis.example", 7000),))),
    "ipv6-host-port": ("[::1]:6380", RedisTarget("standalone", (("::1", 6380),))),
    "redis-default-port": ("redis://h", RedisTarget("standalone", (("h", 6379),))),
    "redis-port-db": ("redis://h:1234/3", RedisTarget("standalone", (("h", 1234),), db=3)),
    "redis-trailing-slash": ("redis://h:1/", RedisTarget("standalone", (("h", 1),))),
    "redis-user-pass": ("redis://alice:s3cret@h:1/0",
                        RedisTarget("standalone", (("h", 1),), username="alice",
                                    password="s3cret")),
    "redis-password-only": ("redis://:pw@h:1", RedisTarget("standalone", (("h", 1),),
                                                           password="pw")),
    "redis-user-only": ("redis://bob@h:1", RedisTarget("standalone", (("h", 1),),
                                                       username="bob")),
    "percent-encoded-password": ("redis://u:p%40ss%3Aw%2Fo%2Crd%25@h:1",
                                 RedisTarget("standalone", (("h", 1),), username="u",
                                             password="p@ss:w/o,rd%")),
    "unencoded-at-in-password": ("redis://u:a@b@h:1",
                                 RedisTarget("standalone", (("h", 1),), username="u",
                                             password="a@b")),
    "utf8-password": ("redis://u:%C3%A9t%C3%A9@h:1",
                      RedisTarget("standalone", (("h", 1),), username="u", password="été")),
    "redis-ipv6": ("redis://[::1]:6379/2", RedisTarget("standalone", (("::1", 6379),), db=2)),
    "redis-ipv6-default-port": ("redis://[fe80::1%eth0]",
                                RedisTarget("standalone", (("fe80::1%eth0", 6379),))),
    "scheme-case": ("REDIS://h:1", RedisTarget("standalone", (("h", 1),))),
    "rediss": ("rediss://:pw@h:6380",
               RedisTarget("standalone", (("h", 6380),), tls=True, password="pw")),
    "unix": ("unix:///run/redis.sock", RedisTarget("unix", path="/run/redis.sock")),
    "unix-db-pass": ("unix://:pw@/run/redis.sock?db=4",
                     RedisTarget("unix", password="pw", db=4, path="/run/redis.sock")),
    "sentinel-one": ("redis+sentinel://s1:26379/jsacc",
                     RedisTarget("sentinel", (("s1", 26379),), master="jsacc")),
    "sentinel-three-db": ("redis+sentinel://s1:1,s2:2,[::1]:3/mymaster/5",
                          RedisTarget("sentinel", (("s1", 1), ("s2", 2), ("::1", 3)), db=5,
                                      master="mymaster")),
    "sentinel-default-port": ("redis+sentinel://s1,s2/m",
                              RedisTarget("sentinel", (("s1", 26379), ("s2", 26379)),
                                          master="m")),
    "sentinel-creds": ("redis+sentinel://u:p%2Cw@s1:1,s2:2/m/",
                       RedisTarget("sentinel", (("s1", 1), ("s2", 2)), username="u",
                                   password="p,w", master="m")),
    "rediss-sentinel": ("rediss+sentinel://s1:1/m",
                        RedisTarget("sentinel", (("s1", 1),), tls=True, master="m")),
    "cluster": ("redis+cluster://n1:7000,n2:7001,n3:7002",
                RedisTarget("cluster", (("n1", 7000), ("n2", 7001), ("n3", 7002)))),
    "cluster-one-node-slash": ("redis+cluster://n1:7000/",
                               RedisTarget("cluster", (("n1", 7000),))),
    "cluster-db0": ("redis+cluster://n1:7000/0", RedisTarget("cluster", (("n1", 7000),))),
    "rediss-cluster-creds": ("rediss+cluster://:pw@[::1]:7000,n2",
                             RedisTarget("cluster", (("::1", 7000), ("n2", 6379)), tls=True,
                                         password="pw")),
}


@pytest.mark.parametrize("url,expected", list(GOOD.values()), ids=list(GOOD))
def test_parse_good(url, expected):
    assert parse_target(url) == expected


BAD = {
    "empty": ("", "empty Redis target"),
    "blank": ("   ", "empty Redis target"),
    "host-without-port": ("localhost", "missing port"),
    "bare-ipv6": ("::1:6379", "must be in brackets"),
    "unknown-scheme": ("http://h:1", "unknown scheme 'http://'"),
    "typo-scheme": ("redis+sentinal://h:1/m", "unknown scheme"),
    "port-not-number": ("redis://h:abc", "port of 'h' is not a number: 'abc'"),
    "port-zero": ("redis://h:0", "out of range"),
    "port-too-big": ("h:65536", "out of range"),
    "empty-port": ("redis://h:/0", "empty port"),
    "missing-host": ("redis:///0", "missing host"),
    "bad-db": ("redis://h:1/x", "db must be a number"),
    "negative-db": ("redis://h:1/-1", "db must be a number"),
    "too-many-path-parts": ("redis://h:1/0/1", "too many path parts"),
    "query": ("redis://h:1/0?socket_timeout=1", "query parameters are not supported"),
    "fragment": ("redis://h:1#x", "fragment"),
    "several-hosts-plain": ("redis://a:1,b:2", "several hosts need redis+sentinel://"),
    "sentinel-no-master": ("redis+sentinel://s1:1,s2:2", "missing master name"),
    "sentinel-empty-master": ("redis+sentinel://s1:1//0", "missing master name"),
    "sentinel-empty-hosts": ("redis+sentinel:///m", "empty host list"),
    "sentinel-empty-host-in-list": ("redis+sentinel://s1:1,,s2:2/m", "empty host"),
    "sentinel-bad-db": ("redis+sentinel://s1:1/m/x", "db must be a number"),
    "sentinel-extra-path": ("redis+sentinel://s1:1/m/0/1", "too many path parts"),
    "sentinel-bad-port": ("redis+sentinel://s1:1,s2:x/m", "port of 's2' is not a number"),
    "cluster-empty-hosts": ("redis+cluster://", "empty host list"),
    "cluster-db": ("redis+cluster://n1:1/2", "only db 0"),
    "cluster-duplicate": ("redis+cluster://n1:1,n1:1", "listed twice"),
    "unclosed-bracket": ("redis://[::1:6379", "unclosed"),
    "junk-after-bracket": ("redis://[::1]x:1", "junk after"),
    "not-ipv6-in-brackets": ("redis://[host]:1", "not an IPv6 address"),
    "bad-host-char": ("redis://h!st:1", "invalid host name"),
    "unix-with-host": ("unix://h/run/redis.sock", "has no host"),
    "unix-no-path": ("unix://", "missing socket path"),
    "unix-bad-query": ("unix:///s.sock?timeout=1", "unknown query parameter"),
    "no-scheme-with-path": ("h:1/0", "no scheme"),
    "bad-percent-encoding": ("redis://u:%ff@h:1", "percent-encoded"),
}


@pytest.mark.parametrize("url,message", list(BAD.values()), ids=list(BAD))
def test_parse_bad(url, message):
    with pytest.raises(ValueError, match="bad Redis target|empty Redis target") as e:
        parse_target(url)
    assert message in str(e.value)


def test_bad_target_messages_mask_the_password():
    with pytest.raises(ValueError) as e:
        parse_target("redis+sentinel://u:hunter2@s1:1,s2:2")
    assert "hunter2" not in str(e.value) and "u:***@s1:1,s2:2" in str(e.value)


@pytest.mark.parametrize("url,masked", [
    ("redis+cluster://u:pw@a:1,b:2", "redis+cluster://u:***@a:1,b:2"),
    ("redis+sentinel://:p%40w@[::1]:1/m/0", "redis+sentinel://:***@[::1]:1/m/0"),
    ("redis://user@h:1", "redis://user@h:1"),
    ("h:1", "h:1"),
])
def test_mask_url_every_form(url, masked):
    assert mask_url(url) == masked


def test_replicated_targets_wait_for_a_replica_by_default():
    assert parse_target("redis+sentinel://s:1/m").replicated
    assert parse_target("rediss+cluster://n:1").replicated
    assert not parse_target("redis://h:1").replicated
    # No I/O in the constructor of a Sentinel or standalone client; the cluster one is lazy.
    assert jsacc.Client("redis+sentinel://127.0.0.1:1/m").wait_replicas == 1
    assert jsacc.Client("redis+cluster://127.0.0.1:1").wait_replicas == 1
    assert jsacc.Client("127.0.0.1:1").wait_replicas == 0
    c = jsacc.Client("redis+cluster://127.0.0.1:1", wait_replicas=2, wait_ms=100, retries=0)
    assert (c.wait_replicas, c.wait_ms, c.retries) == (2, 100, 0)
    assert jsacc.Client("127.0.0.1:1").retries == 0
    assert jsacc.Client("127.0.0.1:1", wait_replicas=1).retries == 8


def test_client_rejects_bad_targets_and_options(tmp_path):
    with pytest.raises(ValueError, match="missing master name"):
        jsacc.Client("redis+sentinel://127.0.0.1:1")
    with pytest.raises(ValueError, match="only used with the TLS targets"):
        jsacc.Client("redis://127.0.0.1:1", ca=str(tmp_path / "ca.pem"))
    with pytest.raises(ValueError, match="CA file not found"):
        jsacc.Client("rediss+cluster://127.0.0.1:1", ca=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="wait_replicas must be >= 0"):
        jsacc.Client("127.0.0.1:1", wait_replicas=-1)
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked before use\n")
    assert jsacc.Client("rediss://127.0.0.1:1", ca=str(ca)).target.tls


def test_unreachable_cluster_is_redis_unavailable():
    c = jsacc.Client("redis+cluster://127.0.0.1:1", retries=0)
    with pytest.raises(jsacc.RedisUnavailable, match="cannot reach Redis at redis\\+cluster"):
        c.agents()


def test_jsctl_redis_flags_and_env(monkeypatch):
    a = build_parser().parse_args(["-r", "redis+cluster://n:1", "--redis-wait-replicas", "2",
                                   "--redis-wait-ms", "50", "agents"])
    assert (a.redis, a.redis_wait_replicas, a.redis_wait_ms, a.redis_ca) == \
        ("redis+cluster://n:1", 2, 50, None)
    monkeypatch.setenv("JSACC_REDIS", "redis+sentinel://s:1/m")
    monkeypatch.setenv("JSACC_REDIS_WAIT_REPLICAS", "0")
    monkeypatch.setenv("JSACC_REDIS_WAIT_MS", "70")
    monkeypatch.setenv("JSACC_REDIS_CA", "/etc/ca.pem")
    a = build_parser().parse_args(["agents"])
    assert (a.redis, a.redis_wait_replicas, a.redis_wait_ms, a.redis_ca) == \
        ("redis+sentinel://s:1/m", 0, 70, "/etc/ca.pem")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--redis-wait-replicas", "-1", "agents"])
