"""``jsctl``'s exit codes, documented in ``--help`` and README.md, and how a job's results map
to one."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

EXIT_OK = 0          # the job ended OK (every target, with --fanout)
EXIT_ERROR = 1       # the job ended ERROR: it failed or could not run (reason on stderr)
EXIT_USAGE = 2       # bad command line (argparse)
EXIT_TIMEOUT = 3     # the job ended TIMEOUT: its --max-time was hit
EXIT_KILLED = 4      # the job ended KILLED
EXIT_NO_RESULT = 5   # no result within --timeout (client-side wait)
EXIT_REDIS = 6       # cannot reach Redis
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0  OK: the job ended OK (with --fanout: every agent's did)
  1  ERROR: the job failed or could not run (the reason, from the result's data, is on stderr)
  2  usage error (bad command line)
  3  TIMEOUT: the job was killed after its --max-time
  4  KILLED: the job was killed
  5  no result within --timeout (a client-side wait; the job may still run)
  6  cannot reach Redis (the message names the URL), or Redis did not confirm the command
     (the message names its job id: it may or may not have been queued)
  130 interrupted (Ctrl-C): the job goes on running (exec asks first whether to kill it)
  With --fanout the code is that of the first agent whose job did not end OK, else 5 if some
  agents did not answer within --timeout, else 0.
"""

_STATE_EXIT = {"OK": EXIT_OK, "ERROR": EXIT_ERROR, "TIMEOUT": EXIT_TIMEOUT, "KILLED": EXIT_KILLED}


def exit_code_for_state(state: Optional[str]) -> int:
    """The jsctl exit code for a result's ``state`` (unknown states count as ERROR)."""
    return _STATE_EXIT.get(state or "", EXIT_ERROR)


def exit_code_for_results(results: Sequence[Dict[str, Any]],
                          expected: Optional[int] = None) -> int:
    """The exit code for a job's results: the first non-OK state's code; else
    ``EXIT_NO_RESULT`` when fewer than ``expected`` arrived (or none); else 0."""
    for result in results:
        code = exit_code_for_state(result.get("state"))
        if code != EXIT_OK:
            return code
    if not results or (expected is not None and len(results) < expected):
        return EXIT_NO_RESULT
    return EXIT_OK
