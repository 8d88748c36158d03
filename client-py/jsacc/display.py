"""How a job's live output is shown: the line protocol (DESIGN §6.1) read back from the lines
of ``output:<id>``, as a pure, stateful filter (no Redis needed; unit-tested on its own).

Each line dict (see :func:`jsacc.records.output_line`) carries the ``level`` the agent's parser
gave it. Shown (``raw=False``):

* a line of level N ≥ 3 that starts with ``N::`` shows the text after ``N::``;
* a block ``N:::`` … ``:::`` (every line of it has level N): the opener and the closer are
  hidden and the lines between shown as they are (text after ``N:::`` on the opener, or after
  ``:::`` on the closer, belongs to the block and is shown);
* everything else as printed; level 0 (a line jsacc added, e.g. the cap marker) is a note.

With ``raw=True`` every line is shown exactly as printed.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Tuple

#: The level of a line jsacc added to a job's output (a cap marker), not printed by the job.
MARKER_LEVEL = 0

# The line protocol's header: one or two digits, then `::` (a message) or `:::` (a block).
_HEADER = re.compile(r"(\d{1,2})(:::?)")
_CLOSER = ":::"


class LineDisplay:
    """Turns a job's lines into the text to show; :meth:`text` is ``None`` for a hidden line.

    Blocks are tracked per (agent, fd): the lines of one stream arrive in order, and those of
    different agents or streams may interleave.
    """

    def __init__(self, raw: bool = False):
        self.raw = raw
        self._open: Dict[Tuple[str, int], int] = {}  # (agent, fd) -> level of the open block

    def text(self, line: Mapping[str, Any]) -> Optional[str]:
        """What to show for ``line`` (a dict with ``agent``, ``fd``, ``level``, ``line``), or
        ``None`` when it is hidden (a block's bare opener or closer)."""
        text = str(line.get("line") or "")
        level = int(line.get("level") or 0)
        if self.raw or level == MARKER_LEVEL:
            return text
        where = (str(line.get("agent") or ""), int(line.get("fd") or 0))
        if where in self._open:
            if text.startswith(_CLOSER):
                del self._open[where]
                return text[len(_CLOSER):] or None
            return text
        m = _HEADER.match(text)
        if m is None or int(m.group(1)) != level:
            return text
        rest = text[m.end():]
        if m.group(2) == ":::":
            self._open[where] = level
            return rest or None
        return rest if level >= 3 else text


def is_marker(line: Mapping[str, Any]) -> bool:
    """Whether ``line`` was added by jsacc (level 0: the cap marker and the like)."""
    return int(line.get("level") or 0) == MARKER_LEVEL
