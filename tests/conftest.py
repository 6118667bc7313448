"""Settings shared by every test, set before any test module is imported; and which tests are
``slow`` (``pytest -m "not slow"`` is the quick subset, CI runs everything)."""

from __future__ import annotations

import os

import pytest

from tests.support import xdist_scopes
from tests.support.testenv import pin_documented_day

pin_documented_day()

# Modules whose every test is end to end: a CLI or a whole pipeline against an emulator, local
# training and serving in their own processes. ``*_e2e.py`` modules are slow by their name;
# single tests elsewhere carry ``@pytest.mark.slow`` (fault-matrix rows, SmolLM2, benchmarks).
SLOW_MODULES = frozenset({
    "tests/azure/test_rft_cli.py",
    "tests/compare/test_compare_cli.py",
    "tests/compare/test_quickstart_report.py",
    "tests/compare/test_local_judge.py",
    "tests/local/test_cli_resume.py",
    "tests/local/test_contract.py",
    "tests/local/test_distributed.py",
    "tests/local/test_dpo.py",
    "tests/local/test_export.py",
    "tests/local/test_fsdp_qlora.py",
    "tests/local/test_multi_adapter.py",
    "tests/local/test_server.py",
    "tests/local/test_serving_lifecycle.py",
    "tests/local/test_streaming.py",
    "tests/local/test_trainer.py",
    "tests/local/test_worker.py",
    "tests/openai/test_samples.py",
})


# Tests run several processes on shared cores (xdist's workers, each starting CLIs, trainers and
# servers): one torch thread each. Measured on 2 cores, 3 workers: 11m25s with one thread against
# 15m01s for 2 workers with torch's default (threads spin and fight). A value the caller set wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
_MAX_AUTO_WORKERS = 8  # each worker holds torch and a model or two: memory, not cores, is the limit above this


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core, since many tests spend their time waiting on a CLI, an
    emulator or a server process (the fault matrix: 125 s wall, 88 s CPU on 4 workers). Measured on
    2 cores with batched local serving: 3 workers 688 s (before batching), 4 workers 617 s, 6 workers
    611 s; all 938 tests passing."""
    return min(2 * (os.cpu_count() or 1), _MAX_AUTO_WORKERS)


def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    return xdist_scopes.make_scheduler(config, log)


def _uses_wider_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return any(definition.scope in ("module", "class", "package")
               for definitions in (info.name2fixturedefs.values() if info else ()) for definition in definitions)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    measured = xdist_scopes.recorded_seconds()
    rank: dict[int, tuple[int, float]] = {}
    for index, item in enumerate(items):
        module = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if module in SLOW_MODULES or module.endswith("_e2e.py"):
            item.add_marker(pytest.mark.slow)
        smollm2 = xdist_scopes.SMOLLM2_FIXTURE in getattr(item, "fixturenames", ())
        if smollm2 and module not in xdist_scopes.SMOLLM2_MODULES:
            raise pytest.UsageError(f"{item.nodeid} reads the SmolLM2 run: list {module} in "
                                    "tests/support/xdist_scopes.py SMOLLM2_MODULES (or it is fine-tuned twice)")
        if module in xdist_scopes.SPREAD_MODULES and _uses_wider_fixture(item):
            raise pytest.UsageError(f"{item.nodeid} uses a module- or class-scoped fixture: take {module} out of "
                                    "tests/support/xdist_scopes.py SPREAD_MODULES")
        # Longest first (a worker left with the SmolLM2 run at the end is the suite's wall time):
        # the SmolLM2 readers, then every other scope by its recorded seconds, quick ones filling the gaps.
        scope = xdist_scopes.scope_of(item.nodeid)
        guess = xdist_scopes.UNKNOWN_SLOW_SECONDS if item.get_closest_marker("slow") else xdist_scopes.UNKNOWN_QUICK_SECONDS
        rank[index] = (0 if module in xdist_scopes.SMOLLM2_MODULES else 1, -measured.get(scope, guess))
    order = sorted(range(len(items)), key=lambda index: (rank[index], index))
    items[:] = [items[index] for index in order]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-scope-seconds", action="store_true",
                     help="after the run, write each xdist scope's seconds to tests/support/scope_seconds.json "
                          "(the order scopes are handed out in)")


_scope_seconds: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    scope = xdist_scopes.scope_of(report.nodeid)
    _scope_seconds[scope] = _scope_seconds.get(scope, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    is_xdist_worker = hasattr(session.config, "workerinput")
    # a run with failures still measured every scope it ran; an interrupted one did not
    if session.config.getoption("--record-scope-seconds") and not is_xdist_worker and exitstatus in (0, 1):
        xdist_scopes.write_seconds(_scope_seconds)
