"""File transfer (DESIGN §11): a file goes to or comes from an agent in chunks, one internal
command per chunk, each sent once the previous one was answered.

``put_file`` chunks travel base64 in the command's ``data``: :data:`PUT_CHUNK` raw bytes
(4 MiB of base64) keep a command well under the controller's 8 MiB ``--max-command``. The
agent writes them to a part file beside the target and renames it over the target only when
the whole file arrived with the SHA-256 the upload announced. ``get_file`` answers at most
:data:`GET_CHUNK` bytes (the agent's results are at most 1 MiB); the chunk that reaches the
end carries the SHA-256 of the whole file, which is checked against what arrived before the
local file is renamed into place. Used by :meth:`jsacc.Client.put_file` and
:meth:`jsacc.Client.get_file`, and by ``jsctl cp``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Dict, Optional, Union

from .errors import FileTransferError, Timeout

if TYPE_CHECKING:
    from .client import Client

#: Raw bytes per ``put_file`` command by default (base64: 4 MiB).
PUT_CHUNK = 3 * 1024 * 1024
#: Largest ``chunk_size`` accepted: its base64 (~5.3 MiB) still fits the 8 MiB ``--max-command``.
MAX_PUT_CHUNK = 4 * 1024 * 1024
#: Bytes per ``get_file`` answer: the agent's largest ``length`` (``schemas::files``).
GET_CHUNK = 704 * 1024
#: Seconds to wait for each chunk's answer by default.
CHUNK_TIMEOUT = 120.0
#: Times a chunk whose answer did not come in time is sent again (a repeat is harmless: the
#: agent answers a chunk it already has from the part file's state, and a read is a read).
CHUNK_RETRIES = 1

#: Called after each chunk with (bytes done, total bytes).
Progress = Callable[[int, int], None]

_MODE = re.compile(r"^(0o)?[0-7]{1,5}$")


def check_mode(mode: Union[None, int, str]) -> Union[None, int, str]:
    """A ``put_file`` mode: ``None``, an octal string (``"0644"``, ``"755"``) or the integer
    value (``0o644``), at most ``0o7777``; ``ValueError`` otherwise."""
    if mode is None:
        return None
    if isinstance(mode, bool):
        raise ValueError(f"mode must be an octal string like '0644' or an int, got {mode!r}")
    if isinstance(mode, int):
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"mode {mode:o} (octal) is not between 0 and 7777")
        return mode
    if isinstance(mode, str) and _MODE.match(mode) and int(mode.removeprefix("0o"), 8) <= 0o7777:
        return mode
    raise ValueError(f"mode must be an octal string like '0644' (at most 7777), got {mode!r}")


def sha256_of(f: BinaryIO) -> str:
    """SHA-256 of an open file from where it is to its end, as hex."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1024 * 1024), b""):
        digest.update(block)
    return digest.hexdigest()


def _answer(client: "Client", what: str, gid: int, nid: int, path: str, offset: int,
            args: Dict[str, Any], data: Optional[str], timeout: float) -> Dict[str, Any]:
    """Sends one chunk command and returns its answer's ``data``; raises
    :class:`FileTransferError` when it did not end ``OK``."""
    for attempt in range(CHUNK_RETRIES + 1):
        try:
            result = client.cmd(what, args, data=data, gid=gid, nid=nid).result(timeout)
            break
        except Timeout:
            if attempt == CHUNK_RETRIES:
                raise
    if result.get("state") != "OK":
        raise FileTransferError(f"{what} {gid}:{nid}:{path} failed at offset {offset}: "
                                f"{result.get('state')}: {result.get('data')}")
    answer = result.get("data")
    if not isinstance(answer, dict):
        raise FileTransferError(f"{what} {gid}:{nid}:{path}: unexpected answer {answer!r}")
    return answer


def put_file(client: "Client", gid: int, nid: int, local_path: Union[str, "os.PathLike[str]"],
             remote_path: str, mode: Union[None, int, str] = None,
             progress: Optional[Progress] = None, chunk_size: int = PUT_CHUNK,
             timeout: float = CHUNK_TIMEOUT) -> Dict[str, Any]:
    """Upload ``local_path`` to ``remote_path`` on agent ``gid:nid``; see
    :meth:`jsacc.Client.put_file`."""
    mode = check_mode(mode)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) \
            or not 1 <= chunk_size <= MAX_PUT_CHUNK:
        raise ValueError(f"chunk_size must be 1 to {MAX_PUT_CHUNK} bytes, got {chunk_size!r}")
    with open(local_path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        sha256 = sha256_of(f)
        f.seek(0)
        base = {"path": remote_path, "size": size, "sha256": sha256,
                "upload": uuid.uuid4().hex}
        if mode is not None:
            base["mode"] = mode
        offset = 0
        if progress is not None:
            progress(0, size)
        while True:
            chunk = f.read(chunk_size)
            args = dict(base, offset=offset)
            data = base64.b64encode(chunk).decode("ascii")
            answer = _answer(client, "put_file", gid, nid, remote_path, offset, args, data,
                             timeout)
            offset += len(chunk)
            if progress is not None:
                progress(offset, size)
            if answer.get("complete"):
                return answer
            if not chunk:
                raise FileTransferError(f"put_file {gid}:{nid}:{remote_path}: the agent has "
                                        f"{answer.get('received')} of {size} bytes after the "
                                        f"last chunk (did {local_path} change meanwhile?)")


def get_file(client: "Client", gid: int, nid: int, remote_path: str,
             local_path: Union[str, "os.PathLike[str]"], progress: Optional[Progress] = None,
             timeout: float = CHUNK_TIMEOUT) -> Dict[str, Any]:
    """Download ``remote_path`` from agent ``gid:nid`` to ``local_path``; see
    :meth:`jsacc.Client.get_file`."""
    local = os.fspath(local_path)
    if os.path.isdir(local):
        local = os.path.join(local, _remote_name(remote_path))
    folder, name = os.path.split(os.path.abspath(local))
    part = os.path.join(folder, f".{name}.jsacc-{uuid.uuid4().hex}.part")
    try:
        # 0600 while incomplete: the file may be a secret; the usual mode once it is whole.
        with os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            answer = _download(client, gid, nid, remote_path, f, progress, timeout)
        os.chmod(part, 0o666 & ~_umask())
        os.replace(part, local)
    finally:
        if os.path.exists(part):
            os.remove(part)
    return {"path": local, "size": answer["size"], "sha256": answer["sha256"],
            "mode": answer.get("mode")}


def _download(client: "Client", gid: int, nid: int, remote_path: str, f: BinaryIO,
              progress: Optional[Progress], timeout: float) -> Dict[str, Any]:
    """Writes the remote file's chunks to ``f``; returns the last answer, its SHA-256 checked."""
    digest = hashlib.sha256()
    offset, size = 0, None
    where = f"{gid}:{nid}:{remote_path}"
    while True:
        args = {"path": remote_path, "offset": offset, "length": GET_CHUNK}
        answer = _answer(client, "get_file", gid, nid, remote_path, offset, args, None, timeout)
        if size is None:
            size = answer.get("size")
        elif answer.get("size") != size:
            raise FileTransferError(f"get_file {where} changed size while being read "
                                    f"({size} then {answer.get('size')} bytes)")
        chunk = base64.b64decode(answer.get("data") or "")
        f.write(chunk)
        digest.update(chunk)
        offset += len(chunk)
        if progress is not None:
            progress(offset, size or 0)
        if answer.get("eof"):
            break
        if not chunk:
            raise FileTransferError(f"get_file {where}: no data at offset {offset} of {size}")
    if digest.hexdigest() != answer.get("sha256"):
        raise FileTransferError(f"get_file {where}: SHA-256 of what arrived "
                                f"({digest.hexdigest()}) is not the file's "
                                f"({answer.get('sha256')}); was it changed while being read? "
                                f"Nothing was written")
    return answer


def _umask() -> int:
    """The process's umask: from /proc where Linux tells it (setting it and back would change it
    for other threads meanwhile), else by setting it and back."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remote_name(remote_path: str) -> str:
    """The file name of a remote path (``/`` or ``\\`` separated: the agent may be Windows)."""
    name = re.split(r"[/\\]", remote_path.rstrip("/\\"))[-1]
    if not name:
        raise ValueError(f"remote path {remote_path!r} names no file")
    return name
