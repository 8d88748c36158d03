"""A submitted command: :class:`Job` reads its record (``job:<id>``), takes its results off
``cmds_queue_<id>`` (DESIGN §4), waiting in chunks shorter than the socket timeout, and reads
the lines it prints from ``output:<id>`` (DESIGN §11)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from .errors import JsaccError, Timeout, UnknownJob
from .keys import job_key, output_key, parse_agent_id, result_key
from .records import decode, job_record, job_results, output_line

if TYPE_CHECKING:
    from .client import Client

#: States a job record can be in; the last four are final (and the only ones a result carries).
STATES = ("QUEUED", "RUNNING", "OK", "ERROR", "TIMEOUT", "KILLED")
FINAL_STATES = ("OK", "ERROR", "TIMEOUT", "KILLED")

#: Most lines one read of ``output:<id>`` takes (``XREAD COUNT``).
OUTPUT_PAGE = 1000

#: While following a job's output, the longest wait for a new line before the job's state is
#: looked at again (s): a job's end is noticed within this, and idle following costs two round
#: trips per period. Shorter than any blocking chunk (see ``jsacc.connection.MAX_BLOCK_CHUNK``).
OUTPUT_POLL = 0.5

#: How long following the output of a job without a record waits for one to appear (s): a
#: job just pushed is not routed yet; past this the id is unknown (mistyped, or expired).
ROUTING_GRACE = 10.0


class Job:
    """A submitted command. Results are taken with :meth:`result` / :meth:`results`.

    ``BLPOP`` consumes a result from ``cmds_queue_<id>``: the results this object has taken are
    cached in it, so ``result()`` followed by ``results()`` returns the first one again. Another
    ``Job`` object (or another process) waiting on the same id competes for the same results;
    :meth:`stored_results` reads the copies kept in ``job:<id>`` without consuming anything.
    """

    def __init__(self, client: Client, id: str,  # noqa: A002
                 command: Optional[Dict[str, Any]] = None):
        self.client = client
        self.id = id
        #: The command as pushed (``None`` for a handle made with :meth:`Client.job`).
        self.command = command
        self._results: List[Dict[str, Any]] = []
        self._targets: Optional[List[str]] = None

    def __repr__(self) -> str:
        return f"<jsacc.Job {self.id} results={len(self._results)}>"

    # -- job record ---------------------------------------------------------------------------
    @property
    def state(self) -> Optional[str]:
        """``HGET job:<id> state``: QUEUED, RUNNING, OK, ERROR, TIMEOUT, KILLED, or ``None``
        while the controller has not routed the command yet (or the record expired)."""
        return decode(self.client._call(lambda: self.client.redis.hget(job_key(self.id),
                                                                       "state")))

    @property
    def targets(self) -> Optional[List[str]]:
        """The ``"gid:nid"`` agents the controller routed the job to, ``None`` while unknown."""
        if self._targets is None:
            raw = decode(self.client._call(lambda: self.client.redis.hget(job_key(self.id),
                                                                          "targets")))
            if raw:
                try:
                    targets = json.loads(raw)
                except ValueError:
                    raise JsaccError(f"{job_key(self.id)} has invalid targets: {raw!r}") from None
                if isinstance(targets, list):
                    self._targets = [str(t) for t in targets]
        return self._targets

    def stored_results(self) -> Dict[str, Dict[str, Any]]:
        """The results recorded in ``job:<id>`` (``"gid:nid"`` → result), without consuming
        ``cmds_queue_<id>``; empty while none arrived."""
        record = self.client._call(lambda: self.client.redis.hgetall(job_key(self.id)))
        return job_results(record)

    def record(self) -> Optional[Dict[str, Any]]:
        """The job's record (``HGETALL job:<id>``) as a dict (see
        :func:`jsacc.records.job_record`: state, command, submitter, targets, created, started,
        ended, duration, and per agent its state, exit code, times and final result), without
        consuming ``cmds_queue_<id>``; ``None`` when the job is unknown (not routed yet) or its
        record expired."""
        raw = self.client._call(lambda: self.client.redis.hgetall(job_key(self.id)))
        return job_record(self.id, raw)

    # -- live output --------------------------------------------------------------------------
    def read_output(self, after: str = "0-0", wait: Optional[float] = None,
                    count: int = OUTPUT_PAGE) -> List[Dict[str, Any]]:
        """One read of ``output:<id>``: up to ``count`` lines after stream id ``after``
        (``"0-0"``: from the start), oldest first, each a dict (``agent``, ``fd``, ``level``,
        ``line``, ``time``, ``id``; see :func:`jsacc.records.output_line`). With ``wait``
        seconds (at most one blocking chunk), waits that long for a line when none is there."""
        key = output_key(self.id)
        block = None
        if wait is not None:
            block = max(1, int(min(wait, self.client._chunk) * 1000))
        # One stream per XREAD: on a cluster it goes to that stream's node.
        got = self.client._call(lambda: self.client.redis.xread({key: after}, count=count,
                                                                block=block))
        return [output_line(sid, fields) for _stream, entries in got or [] for sid, fields in
                entries]

    def output(self, follow: bool = False,
               timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """The lines the job printed, from its start, as dicts (``agent``, ``fd`` 1|2,
        ``level``, ``line``, ``time``, ``id``; level 0 is a line jsacc added, such as the
        marker of a capped stream). Show them with :class:`jsacc.display.LineDisplay`.

        Without ``follow``: the lines there now. With ``follow=True``: also those that come,
        until the job is final (``job:<id>`` state OK, ERROR, TIMEOUT or KILLED) and the
        stream is drained; an agent posts its lines before its result, so that is all of them.
        A record that disappears while followed (it expired), or is missing while the stream
        has lines, also ends it once the stream is read to its end. Raises
        :class:`jsacc.UnknownJob` when neither a record nor a line appears within
        ``ROUTING_GRACE`` seconds (an id never routed, or long expired), and
        :class:`jsacc.Timeout` when the job is not final within ``timeout`` seconds (``None``:
        wait as long as it takes). The stream holds at most the controller's
        ``--output-maxlen`` lines of a job and expires with its record."""
        for batch in self.output_batches(follow, timeout):
            yield from batch

    def output_batches(self, follow: bool = False,
                       timeout: Optional[float] = None) -> Iterator[List[Dict[str, Any]]]:
        """:meth:`output`, one list of lines per read of ``output:<id>`` (never empty), for a
        caller that prints a batch at a time."""
        deadline = self._deadline(timeout)
        unknown_at = time.monotonic() + ROUTING_GRACE
        last, wait = "0-0", None
        # known: the record was there once, or lines came (only a routed job prints any);
        # ending: the next read is the last one.
        known = ending = False
        while True:
            lines = self.read_output(last, wait)
            if lines:
                last = lines[-1]["id"]
                yield lines
            if len(lines) >= OUTPUT_PAGE:
                wait = None  # more are there: read on without waiting
                continue
            if not follow or ending:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"job {self.id} did not end within {timeout} s "
                              f"(job state: {self.state or 'unknown'})")
            # Final (or gone) before the next read: then that read (no wait) drains every line.
            state = self.state
            known = known or state is not None or last != "0-0"
            if not known and time.monotonic() >= unknown_at:
                raise UnknownJob(f"no job {self.id} (never routed, or expired)")
            ending = state in FINAL_STATES or (state is None and known)
            wait = None if ending else OUTPUT_POLL
            if deadline is not None and not ending:
                wait = max(0.001, min(OUTPUT_POLL, deadline - time.monotonic()))

    # -- results ------------------------------------------------------------------------------
    def _pop_one(self, deadline: Optional[float]) -> Optional[Dict[str, Any]]:
        """Take one result off ``cmds_queue_<id>``, waiting until ``deadline`` (monotonic
        seconds; ``None`` = forever) in chunks (see ``jsacc.connection.MAX_BLOCK_CHUNK``).
        ``None`` if none came."""
        key = result_key(self.id)
        chunk = self.client._chunk

        def take() -> Any:
            # One key per call: on a cluster, BLPOP routes to that key's node.
            r = self.client.redis
            if deadline is None:
                return r.blpop([key], timeout=chunk)
            remaining = deadline - time.monotonic()
            if remaining <= 0.001:
                # Deadline reached (or timeout=0): one last look without blocking.
                raw = r.lpop(key)
                return (key, raw) if raw is not None else False
            return r.blpop([key], timeout=min(remaining, chunk))

        while True:
            item = self.client._call(take)
            if item is False:
                return None
            if item is not None:
                raw = decode(item[1])
                try:
                    result = json.loads(raw)
                except ValueError:
                    raise JsaccError(f"invalid result on {key}: {raw[:200]!r}") from None
                self._results.append(result)
                return result

    def poll_result(self) -> Optional[Dict[str, Any]]:
        """Take the next result off ``cmds_queue_<id>`` if one is there, without waiting
        (cached like the others: :meth:`result` returns the first one again); ``None`` if
        none is."""
        return self._pop_one(time.monotonic())

    def _expected(self) -> Optional[int]:
        """How many results make the job complete: one per target; ``None`` while unknown."""
        targets = self.targets
        if targets is not None:
            return max(len(targets), 1)
        if self._results:
            # A command that could not be routed (unknown agent, bad JSON, ...) is answered with
            # one ERROR result, possibly without a job record carrying targets.
            return len(self._results)
        return None

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, got {timeout}")
        return time.monotonic() + timeout

    def _timeout(self, timeout: Optional[float]) -> Timeout:
        try:
            state = self.state
        except JsaccError:
            state = None
        hint = {None: "not routed yet: is a controller running?",
                "QUEUED": "queued: is the agent online?"}.get(state, "")
        return Timeout(f"no result for job {self.id} within {timeout} s "
                       f"(job state: {state or 'unknown'}{'; ' + hint if hint else ''})")

    def result(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The first result (a dict exactly as DESIGN §3: id, gid, nid, cmd, args, data,
        level, state, time, starttime, exit_code, streams, critical).

        Waits up to ``timeout`` seconds (``None`` = forever, ``0`` = just look) and raises
        :class:`jsacc.Timeout` if nothing arrived. The job's own outcome is in
        ``result["state"]``: a failed job is a normal result, not an exception.
        """
        if not self._results:
            if self._pop_one(self._deadline(timeout)) is None:
                raise self._timeout(timeout)
        return self._results[0]

    def next_result(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Take the next result off ``cmds_queue_<id>`` (waiting like :meth:`result`), for jobs
        that post more than one: each run of a recurring job posts its own result (``run`` = its
        number, ``final`` = False) until the job is killed, whose last result has no ``final``
        field. The list keeps the last 100."""
        result = self._pop_one(self._deadline(timeout))
        if result is None:
            raise self._timeout(timeout)
        return result

    def results(self, timeout: Optional[float] = None) -> List[Dict[str, Any]]:
        """All results: one per target agent (the count is ``len(job:<id>.targets)``).

        Waits until every target answered or ``timeout`` seconds passed (``None`` = forever).
        On timeout it returns the results that did arrive (fewer than the targets: compare with
        :attr:`targets`), and raises :class:`jsacc.Timeout` only if none arrived at all.
        """
        return list(self.iter_results(timeout))

    def iter_results(self, timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Like :meth:`results`, but yields each result as soon as it arrives (those already
        taken first). Same rules: stops when every target answered or at ``timeout``; raises
        :class:`jsacc.Timeout` only if no result arrived at all."""
        deadline = self._deadline(timeout)
        yielded = 0
        while True:
            while yielded < len(self._results):
                yielded += 1
                yield self._results[yielded - 1]
            expected = self._expected()
            if expected is not None and len(self._results) >= expected:
                return
            if self._pop_one(deadline) is None:
                if self._results:
                    return
                raise self._timeout(timeout)

    def kill(self, timeout: Optional[float] = None) -> List["Job"]:
        """Send the internal command ``kill`` (``args.id`` = this job) to each agent running
        it; returns those kill jobs (their results say whether the kill worked). This job then
        ends ``KILLED`` with its own result."""
        targets = self.targets
        if targets is None and self.command is not None and "nid" in self.command:
            targets = [f"{self.command['gid']}:{self.command['nid']}"]
        if not targets:
            raise JsaccError(f"job {self.id}: targets unknown (not routed yet)")
        jobs = []
        for target in targets:
            g, n = parse_agent_id(target)
            jobs.append(self.client.kill(self.id, gid=g, nid=n))
        return jobs
