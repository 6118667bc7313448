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


def make_scheduler(config, log):  # type: ignore[no-untyped-def] - xdist's hook signature
    from xdist.scheduler import LoadScopeScheduling

    class ScopeScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ScopeScheduling(config, log)
