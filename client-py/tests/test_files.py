"""File transfer: ``Client.put_file`` / ``Client.get_file`` and ``jsctl cp``.

The unit tests need nothing running; the stack tests run against the real stack of conftest.py
(redis-server, jsacc, jsagents 1:1 and 1:2 on this machine, so a remote path is also a local
one the test can look at).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import stat

import pytest

import jsacc
from jsacc.cli.cp import check_args, parse_remote
from jsacc.files import GET_CHUNK, PUT_CHUNK, check_mode

from conftest import run_jsctl

#: The agents' default max_file_size (100 MiB).
MAX_FILE_SIZE = 100 * 1024 * 1024
WAIT = 60


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parts(folder) -> list:
    return [n for n in os.listdir(folder) if n.endswith(".part")]


# -- unit: target syntax, modes ------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("1:5:/etc/motd", (1, 5, "/etc/motd")),
    ("0:12:$agentroot/x", (0, 12, "$agentroot/x")),
    ("1:5:C:\\data\\x.txt", (1, 5, "C:\\data\\x.txt")),
    ("1:5:relative", (1, 5, "relative")),
])
def test_remote_targets_parse(text, want):
    assert parse_remote(text) == want


@pytest.mark.parametrize("text", ["./file", "/tmp/x", "C:\\x", "file", "a:1:/x", "1:x:/y"])
def test_local_paths_are_not_remote(text):
    assert parse_remote(text) is None


@pytest.mark.parametrize("text", ["1:5", "1:5:"])
def test_a_remote_without_a_path_says_the_syntax(text):
    with pytest.raises(ValueError, match="expected G:N:/path"):
        parse_remote(text)


def _check(source, dest, mode=None):
    return check_args(argparse.Namespace(source=source, dest=dest, mode=mode))


def test_cp_wants_exactly_one_remote_side():
    assert _check("./a", "1:2:/b") is None
    assert _check("1:2:/b", "./a") is None
    assert "one must be G:N:/path" in _check("./a", "./b")
    assert "one of them must be a local path" in _check("1:2:/a", "1:3:/b")
    assert "expected G:N:/path" in _check("./a", "1:2")
    assert "--mode is for uploads" in _check("1:2:/a", "./b", mode="0644")
    assert "octal" in _check("./a", "1:2:/b", mode="0999")


def test_modes():
    assert check_mode("0644") == "0644"
    assert check_mode(0o755) == 0o755
    assert check_mode(None) is None
    for bad in ("rwx", "0999", "77777", -1, 0o10000, True, 1.5):
        with pytest.raises(ValueError):
            check_mode(bad)


def test_cp_of_a_missing_local_file_says_so(tmp_path):
    missing = tmp_path / "nope.txt"
    # Nothing is sent: no Redis is needed (port 1 refuses).
    cp = run_jsctl("cp", str(missing), "1:1:/tmp/x", redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 1, cp
    assert f"no such local file: {missing}" in cp.stderr


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_cp_timeout_must_be_positive():
    cp = run_jsctl("cp", "./a", "1:5:/tmp/a", "--timeout", "0", redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 2
    assert "must be > 0" in cp.stderr


def test_the_bar_closes_once_and_its_rate_counts_from_the_start():
    import io
    import time

    from jsacc.cli.cp import LazyBar, ProgressBar

    out = io.StringIO()
    bar = ProgressBar(out, "x", started=time.monotonic() - 10)
    bar(10 * 1024 * 1024, 20 * 1024 * 1024)
    assert " 1.0 MiB/s" in out.getvalue()
    lazy = LazyBar(True, "x")
    lazy.bar = ProgressBar(out, "x")
    lazy(1, 2)
    lazy.close()
    lazy.close()
    assert out.getvalue().count("\n") == 1


def test_cp_bad_target_is_a_usage_error():
    cp = run_jsctl("cp", "./a", "1:5", redis_url="redis://127.0.0.1:1")
    assert cp.returncode == 2
    assert "expected G:N:/path" in cp.stderr


# -- the real stack ------------------------------------------------------------------------------

def test_a_multi_chunk_file_round_trips(client, tmp_path):
    content = os.urandom(PUT_CHUNK * 2 + 12345)  # 3 put_file chunks, 10 get_file chunks
    local = tmp_path / "big.bin"
    local.write_bytes(content)
    remote = tmp_path / "remote" / "big.bin"
    remote.parent.mkdir()
    seen = []
    answer = client.put_file(1, 2, local, str(remote), mode="0640", timeout=WAIT,
                             progress=lambda done, total: seen.append((done, total)))
    assert answer["complete"] is True
    assert answer["sha256"] == sha(content)
    assert seen == [(0, len(content)), (PUT_CHUNK, len(content)),
                    (2 * PUT_CHUNK, len(content)), (len(content), len(content))]
    assert remote.read_bytes() == content
    assert stat.S_IMODE(remote.stat().st_mode) == 0o640
    assert answer["mode"] == "0640"
    assert parts(remote.parent) == []

    back = tmp_path / "back.bin"
    got = []
    answer = client.get_file(1, 2, str(remote), back, timeout=WAIT,
                             progress=lambda done, total: got.append(done))
    want = (sha(content), len(content), "0640")
    assert (answer["sha256"], answer["size"], answer["mode"]) == want
    assert back.read_bytes() == content
    assert stat.S_IMODE(back.stat().st_mode) == 0o666 & ~_umask()
    assert got[0] == GET_CHUNK and got[-1] == len(content)
    assert parts(tmp_path) == []


def test_paths_are_templated(client, stack):
    content = b"templated\n"
    local = stack.tmp / "templated.txt"
    local.write_bytes(content)
    answer = client.put_file(1, 1, local, "$agentroot/templated.txt", timeout=WAIT)
    remote = stack.tmp / "agent-1-1" / "templated.txt"
    assert answer["path"] == str(remote)
    assert remote.read_bytes() == content


def test_a_file_over_max_file_size_is_refused(client, tmp_path):
    big = tmp_path / "sparse.bin"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)  # sparse: no 100 MiB on disk
    remote = tmp_path / "remote-big.bin"
    with pytest.raises(jsacc.FileTransferError, match="over the agent's max_file_size"):
        client.put_file(1, 2, big, str(remote), timeout=WAIT)
    assert not remote.exists()
    assert parts(tmp_path) == []
    with pytest.raises(jsacc.FileTransferError, match="over the agent's max_file_size"):
        client.get_file(1, 2, str(big), tmp_path / "copy.bin", timeout=WAIT)
    assert not (tmp_path / "copy.bin").exists()
    assert parts(tmp_path) == []


def test_a_corrupted_upload_leaves_no_target(client, tmp_path):
    remote = tmp_path / "corrupt.txt"
    args = {"path": str(remote), "size": 5, "sha256": sha(b"other"), "offset": 0,
            "upload": "corrupt1"}
    result = client.cmd("put_file", args, data=base64.b64encode(b"hello").decode(),
                        gid=1, nid=2).result(WAIT)
    assert result["state"] == "ERROR"
    assert "sha256" in result["data"] and "nothing was written" in result["data"]
    assert not remote.exists()
    assert parts(tmp_path) == []


def test_a_chunk_out_of_order_says_what_offset_was_expected(client, tmp_path):
    remote = tmp_path / "gap.txt"
    args = {"path": str(remote), "size": 10, "sha256": sha(b"0123456789"), "offset": 0,
            "upload": "gap1"}
    first = client.cmd("put_file", args, data=base64.b64encode(b"0123").decode(),
                       gid=1, nid=2).result(WAIT)
    assert first["state"] == "OK", first
    args["offset"] = 6
    gap = client.cmd("put_file", args, data=base64.b64encode(b"6789").decode(),
                     gid=1, nid=2).result(WAIT)
    assert gap["state"] == "ERROR"
    assert "expected offset 4" in gap["data"]
    assert not remote.exists()


def test_bad_args_are_refused_naming_the_field(client, tmp_path):
    result = client.cmd("get_file", {"path": "/etc/hostname", "length": 0}, gid=1,
                        nid=2).result(WAIT)
    assert result["state"] == "ERROR"
    assert "`length`" in result["data"]
    with pytest.raises(jsacc.FileTransferError, match="is not absolute"):
        client.get_file(1, 2, "relative/path", tmp_path / "x", timeout=WAIT)
    assert os.listdir(tmp_path) == []


def test_jsctl_cp_both_ways(stack, tmp_path):
    content = os.urandom(300_000)
    local = tmp_path / "up.bin"
    local.write_bytes(content)
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    cp = run_jsctl("cp", str(local), f"1:2:{remote_dir}/", "--mode", "0600",
                   redis_url=stack.redis_url)
    assert cp.returncode == 0, cp.stderr
    remote = remote_dir / "up.bin"
    assert f"1:2:{remote}: 300000 bytes, sha256 {sha(content)}" in cp.stdout
    assert remote.read_bytes() == content
    assert stat.S_IMODE(remote.stat().st_mode) == 0o600

    down = tmp_path / "down"
    down.mkdir()
    cp = run_jsctl("cp", f"1:2:{remote}", str(down), redis_url=stack.redis_url)
    assert cp.returncode == 0, cp.stderr
    assert (down / "up.bin").read_bytes() == content

    cp = run_jsctl("cp", "1:2:/no/such/file", str(down), redis_url=stack.redis_url)
    assert cp.returncode == 1
    assert "get_file 1:2:/no/such/file failed at offset 0: ERROR: cannot open" in cp.stderr
    assert sorted(os.listdir(down)) == ["up.bin"]


def test_the_progress_bar_shows_bytes_percent_and_rate():
    import io

    from jsacc.cli.cp import LazyBar, ProgressBar

    out = io.StringIO()
    bar = ProgressBar(out, "a → 1:2")
    bar(3 * 1024 * 1024, 12 * 1024 * 1024)
    bar.close()
    line = out.getvalue()
    assert line.startswith("\ra → 1:2 [######------------------] 3.0 MiB/12.0 MiB  25% ")
    assert line.rstrip().endswith("MiB/s") and line.endswith("\n")
    # Not a terminal (pytest captures stderr): no bar, whatever the size.
    lazy = LazyBar(True, "x")
    lazy(10, 100 * 1024 * 1024)
    assert lazy.bar is None
