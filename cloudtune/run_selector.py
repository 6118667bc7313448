"""What a run selector on the command line (``cloudtune cleanup RUN``) may name.

A selector is a run's exact id, or a prefix of at least :data:`MIN_PREFIX` characters that only
one run id starts with. Nothing else resolves - not an empty string (an unset ``$RUN_ID`` in a
CI script), not a SQL wildcard, not a fragment from the middle of an id - because a command
that deletes must never pick a run the user did not name. Works on a plain list of run ids, so
it does not care where the runs are stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudtune import errors

#: a run id is ``YYYYmmdd-HHMMSS-xxxxxx``: eight characters are at least the day it started
MIN_PREFIX = 8
_SHOWN = 10  # candidates named in an error


def select_run_id(selector: str, run_ids: Sequence[str], *, where: str = "the ledger") -> str:
    """The one run id ``selector`` names among ``run_ids`` (newest first), or
    :class:`errors.InvalidInput` (exit 2) that lists the candidates."""
    if selector in run_ids:
        return selector
    starting = [run_id for run_id in run_ids if selector and run_id.startswith(selector)]
    if len(selector) >= MIN_PREFIX and len(starting) == 1:
        return starting[0]
    if not selector.strip():
        problem = "An empty run id names no run (is the variable that should hold it set?)"
        shown = list(run_ids)
    elif len(starting) > 1:
        problem = f"Run id {selector!r} is ambiguous: {len(starting)} runs start with it"
        shown = starting
    elif starting:
        problem = (f"Run id {selector!r} is too short: give the whole id, or at least {MIN_PREFIX} characters "
                   "of its start")
        shown = starting
    else:
        problem = f"No run {selector!r} in {where}"
        shown = list(run_ids)
    listed = ", ".join(shown[:_SHOWN]) + (f" and {len(shown) - _SHOWN} more" if len(shown) > _SHOWN else "")
    raise errors.InvalidInput(
        problem + (f"; candidates: {listed}." if shown else "; there are no runs."),
        hint=f"Give a run's exact id, or a unique prefix of at least {MIN_PREFIX} characters "
             "(`cloudtune list` shows the runs).",
    )
