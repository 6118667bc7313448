"""How the suite is shared out between xdist workers (``-n auto`` in the default options).

A *scope* runs whole on one worker: the tests of a module that builds a module- or class-scoped
fixture (a model, an emulator) run where it was built, and every reader of the SmolLM2 run
(the ``quickstart_run`` session fixture, minutes of training) runs on one worker, so SmolLM2 is
fine-tuned once. Scopes go out longest first (tests/conftest.py orders the items), one at a time
to whichever worker is free.

pytest-xdist's own ``--dist loadgroup`` reads ``xdist_group`` marks by rewriting a private
``Item._nodeid`` that pytest 9.2 no longer reads, so it silently spreads a group over every
worker; the scope is decided here from the test's id instead, and tests/conftest.py refuses a
collection whose SmolLM2 readers live outside :data:`SMOLLM2_MODULES`.
"""

from __future__ import annotations

import json
from pathlib import Path

# Every module with a test that reads the SmolLM2 run (the ``quickstart_run`` fixture).
SMOLLM2_MODULES = frozenset({"tests/local/test_quickstart_cli.py", "tests/local/test_smollm2_e2e.py"})
SMOLLM2_FIXTURE = "quickstart_run"

# Modules whose tests share only session-scoped fixtures: each test is its own scope (the fault
# matrix's rows: the biggest module, minutes of independent rows).
SPREAD_MODULES = frozenset({"tests/faults/test_matrix.py"})


def scope_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    if module in SMOLLM2_MODULES:
        return "smollm2"
    if module in SPREAD_MODULES:
        return nodeid
    return module


# Each scope's seconds in a measured run (``pytest --record-scope-seconds``; setup, call and
# teardown summed), so scopes go out longest first by what they cost, not by a guess: a long scope
# handed out last is the suite's tail, with one worker busy and the others idle. A scope not in
# the file (a new module) ranks by UNKNOWN_*_SECONDS until the file is written again.
SECONDS_FILE = Path(__file__).with_name("scope_seconds.json")
UNKNOWN_SLOW_SECONDS = 20.0
UNKNOWN_QUICK_SECONDS = 0.5


def recorded_seconds() -> dict[str, float]:
    try:
        data = json.loads(SECONDS_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_seconds(seconds: dict[str, float]) -> None:
    ordered = dict(sorted(((scope, round(value, 1)) for scope, value in seconds.items()), key=lambda kv: (-kv[1], kv[0])))
    SECONDS_FILE.write_text(json.dumps(ordered, indent=0) + "\n")


def make_scheduler(config, log):  # type: ignore[no-untyped-def] - xdist's hook signature
    from xdist.scheduler import LoadScopeScheduling

    class ScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ScopeScheduling(config, log)
