"""Watching a job from ``jsctl``: its live lines (``output:<id>``) printed as they come —
stdout lines on stdout, stderr lines on stderr, jsacc's markers as notes on stderr — while its
results are taken off ``cmds_queue_<id>``, so that ``jsctl exec`` ends when the job does, with
every line printed. Used by ``exec`` and ``job follow``."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Set

from redis.exceptions import NoPermissionError

from ..display import LineDisplay, is_marker
from ..errors import Timeout
from ..job import FINAL_STATES, OUTPUT_PAGE, OUTPUT_POLL, Job
from .output import agent_of, err


class LinePrinter:
    """Prints a job's lines with the display rules of :mod:`jsacc.display` (``raw``: as
    printed), each prefixed ``gid:nid: `` with ``prefix`` (fanout jobs)."""

    def __init__(self, raw: bool = False, prefix: bool = False):
        self.display = LineDisplay(raw)
        self.prefix = prefix
        #: The agents that sent at least one line.
        self.agents: Set[str] = set()
        self._last: Any = None

    def _write(self, stream: Any, text: str) -> None:
        if self._last is not None and stream is not self._last:
            self._last.flush()  # keep stdout and stderr lines in their order on a terminal
        stream.write(text + "\n")
        self._last = stream

    def print_lines(self, lines: Iterable[Dict[str, Any]]) -> None:
        """Print ``lines`` (dicts of :meth:`jsacc.Job.read_output`), then flush."""
        for line in lines:
            agent = line.get("agent") or "?"
            self.agents.add(agent)
            text = self.display.text(line)
            if text is None:
                continue
            if is_marker(line):
                self._write(sys.stderr, f"jsctl: note: {agent}: {text}")
                continue
            stream = sys.stderr if line.get("fd") == 2 else sys.stdout
            self._write(stream, f"{agent}: {text}" if self.prefix else text)
        if self._last is not None:
            self._last.flush()

    def print_tails(self, result: Dict[str, Any]) -> None:
        """For an agent that sent no line (live output off, for the job or on that agent): the
        stdout and stderr tails its result carries, as ``jsctl exec`` printed them before."""
        agent = agent_of(result)
        if agent in self.agents:
            return
        streams = list(result.get("streams") or []) + ["", ""]
        for fd, text in ((1, streams[0]), (2, streams[1])):
            if text:
                self.print_lines({"agent": agent, "fd": fd, "level": fd, "line": t}
                                 for t in str(text).rstrip("\n").split("\n"))


class Watch:
    """Prints a job's lines until its results are in: one result, or with ``fanout`` one per
    target. Keeps its place across :meth:`run` calls (``jsctl exec`` runs it again after a
    Ctrl-C answered with a kill)."""

    def __init__(self, job: Job, printer: LinePrinter, fanout: bool,
                 timeout: Optional[float]):
        self.job = job
        self.printer = printer
        self.fanout = fanout
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.results: List[Dict[str, Any]] = []
        self._after = "0-0"
        #: False once Redis refused to read ``output:<id>`` (a Redis user without the key
        #: pattern): then results are waited for as before and their tails printed.
        self.live = True
        #: Set by :meth:`after_kill`: the job record also says when the job ended.
        self._from_record = False
        self._late: Optional[str] = None

    def after_kill(self, within: float) -> None:
        """After a Ctrl-C answered with a kill: wait at most ``within`` s more (then
        :meth:`run` raises :class:`jsacc.Timeout`), and take the job's end from its record
        too. The Ctrl-C may have landed just after ``BLPOP`` took a result off
        ``cmds_queue_<id>``: that result is lost from the list, but its copy stays in
        ``job:<id>`` (read, not taken)."""
        self._from_record = True
        end = time.monotonic() + within
        if self.deadline is None or end < self.deadline:
            self.deadline = end
            self._late = f"job {self.job.id} did not end within {within:g} s of the kill"

    def _read(self, wait: Optional[float]) -> List[Dict[str, Any]]:
        """The next lines (waiting up to ``wait`` s for one); without live output, wait that
        long for a result instead."""
        if self.live:
            try:
                return self.job.read_output(self._after, wait)
            except NoPermissionError as e:
                self.live = False
                err(f"note: cannot read the live output of job {self.job.id} ({e}): "
                    "printing its result's output when it ends")
        if wait:
            try:
                self.results.append(self.job.next_result(timeout=wait))
            except Timeout:
                pass
        return []

    def _expected(self) -> Optional[int]:
        if not self.fanout:
            return 1
        targets = self.job.targets
        if targets:
            return len(targets)
        return len(self.results) or None

    def _complete(self) -> bool:
        while True:
            result = self.job.poll_result()
            if result is None:
                break
            self.results.append(result)
        expected = self._expected()
        if expected is not None and len(self.results) >= expected:
            return True
        return self._from_record and self._ended_in_record()

    def _ended_in_record(self) -> bool:
        """Whether ``job:<id>`` says the job ended (its ``state`` is final: every target
        answered); if so, the results not taken yet are added from its ``result:<g:n>``
        fields."""
        if self.job.state not in FINAL_STATES:
            return False
        record = self.job.record()
        if record is None:
            return False
        got = {agent_of(r) for r in self.results}
        self.results += [entry["result"] for agent, entry in record["agents"].items()
                         if entry.get("result") and agent not in got]
        return bool(self.results)

    def _wait(self) -> float:
        if self.deadline is None:
            return OUTPUT_POLL
        return max(0.001, min(OUTPUT_POLL, self.deadline - time.monotonic()))

    def run(self) -> List[Dict[str, Any]]:
        """The results, once every expected one is in and the stream read to its end (an
        agent posts its lines before its result). At the deadline (``timeout``): the results
        that came (fanout), or :class:`jsacc.Timeout` when none did."""
        draining = False
        wait: Optional[float] = self._wait()
        while True:
            lines = self._read(wait)
            if lines:
                self._after = lines[-1]["id"]
                self.printer.print_lines(lines)
            if len(lines) >= OUTPUT_PAGE:
                wait = None
                continue
            if draining:
                return self.results
            if self._complete():
                draining, wait = True, None
                continue
            if self.deadline is not None and time.monotonic() >= self.deadline:
                if self.results and self.fanout and self._late is None:
                    return self.results
                late = self._late or f"no result for job {self.job.id} within {self.timeout} s"
                raise Timeout(f"{late} (job state: {self.job.state or 'unknown'})")
            wait = self._wait()
