"""The fault matrix: one table of (scenario, target) rows, and the runner both pytest
(``tests/faults/test_matrix.py``) and ``python -m tests.faults`` use.

A scenario is a function of a :class:`~tests.faults.harness.Ctx`; it drives the CLI, makes
its own scenario-specific assertions with ``expect``, and tracks its runs. The runner then
cleans every tracked run up and checks the invariants every row shares (see harness).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.faults.harness import (
    Ctx,
    ScenarioFailed,
    check_invariants,
    check_ledgers_before_cleanup,
    expect,
    final_cleanup,
)
from tests.faults.targets import Target, Targets

Body = Callable[[Ctx], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str
    body: Body
    issue: str  # which part of issue 9 it reproduces

    @property
    def id(self) -> str:
        return f"{self.name}[{self.target}]"


SCENARIOS: list[Scenario] = []


def scenario(name: str, *targets: str, issue: str = "") -> Callable[[Body], Body]:
    """Register ``body`` as one row per target."""

    def register(body: Body) -> Body:
        for target in targets:
            SCENARIOS.append(Scenario(name, target, body, issue))
        return body

    return register


def all_scenarios() -> list[Scenario]:
    from tests.faults import (  # noqa: F401 - importing registers the rows
        scenarios_adversary,
        scenarios_cleanup,
        scenarios_ownership,
        scenarios_shared_state,
        scenarios_signals,
        scenarios_transport,
    )

    return list(SCENARIOS)


class Bystanders:
    """Per target, resources the scenarios must never touch: a finished run of another user
    (its own CLOUDTUNE_HOME, --cleanup never) and, on Azure OpenAI, a deployment made outside
    cloudtune."""

    def __init__(self, targets: Targets, workdir: Path) -> None:
        self.targets = targets
        self.workdir = workdir
        self.homes: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def ensure(self, target: Target) -> list[Path]:
        with self._lock:
            lock = self._locks.setdefault(target.name, threading.Lock())
        with lock:  # one bystander per target; targets of the other lane do not wait
            return self._ensure(target)

    def _ensure(self, target: Target) -> list[Path]:
        if target.name in self.homes or target.name == "local":
            return [self.homes[target.name]] if target.name in self.homes else []
        ctx = Ctx(target, Path(tempfile.mkdtemp(prefix=f"bystander-{target.name}-", dir=self.workdir)))
        target.reset()
        result = ctx.cli(*ctx.run_args("--cleanup", "never", "--deployment-name", f"bystander-{target.name[:8]}"))
        expect(result.rc == 0, f"bystander run failed: {result.brief()}")
        if target.name == "azure-openai":
            from tests.faults.targets import post

            post(target.control_url, "/_emulator/external-deployment",
                 {"account": "ct-aoai", "name": "team-prod", "model": result.doc["fine_tuned_model"]})
        self.homes[target.name] = ctx.home("a")
        return [self.homes[target.name]]


def run_scenario(targets: Targets, bystanders: Bystanders, row: Scenario, workdir: Path) -> None:
    """Run one row; raises ScenarioFailed (or another exception) with the reason."""
    target = targets.get(row.target)
    extra_homes = bystanders.ensure(target)
    tmp = Path(tempfile.mkdtemp(prefix=row.name[:40] + "-", dir=workdir))
    ctx = Ctx(target, tmp, extra_homes=extra_homes)
    target.reset()
    before = ctx.baseline = ctx.snapshot()
    ctx.hits_mark = len(target.hits())
    try:
        try:
            row.body(ctx)
        finally:
            ctx.stop_processes()
            target.reset()
        check_ledgers_before_cleanup(ctx)
        final_cleanup(ctx)
        check_invariants(ctx, before)
    finally:
        ctx.stop_processes()
        if target.name == "local":
            stop_local_workers(ctx)
        shutil.rmtree(tmp, ignore_errors=True)


def stop_local_workers(ctx: Ctx) -> None:
    """Kill the local workers/servers this scenario's homes recorded (checked by command line)."""
    import os
    import signal

    from local_backend.procs import pid_alive

    for home in ctx.homes.values():
        for pid_file in [*home.glob("local/jobs/*/worker.pid"), *home.glob("local/deployments/*/server.pid")]:
            try:
                pid = int(pid_file.read_text())
            except ValueError:
                continue
            if pid_alive(pid, expect=str(pid_file.parent)):
                os.kill(pid, signal.SIGKILL)


def emulator_of(row: Scenario) -> str:
    """The service a row runs against: ``openai``, ``azure`` (one emulator for both Azure routes)
    or ``local``. Rows of one service share its emulator; rows of different ones share nothing
    (faults, clocks and records are per emulator)."""
    return "azure" if row.target.startswith("azure") else row.target


def grouped(rows: list[Scenario]) -> list[Scenario]:
    """``rows`` grouped per emulator (OpenAI, Azure, local), table order within a group: a
    group's emulator starts when its first row runs and serves the rest of the group."""
    order = {"openai": 0, "azure": 1, "local": 2}
    return sorted(rows, key=lambda row: order.get(emulator_of(row), len(order)))


def lane_of(row: Scenario) -> str:
    """``python -m tests.faults`` runs the Azure rows beside the OpenAI and local ones: two
    lanes, one per core."""
    return "azure" if emulator_of(row) == "azure" else "main"


def run_rows(targets: Targets, bystanders: Bystanders, rows: list[Scenario], workdir: Path,
             report: Callable[[Scenario, bool, str], None] | None = None) -> dict[str, tuple[bool, str]]:
    """Every row's (passed, reason), rows of a lane in table order, the two lanes in parallel."""
    from concurrent.futures import ThreadPoolExecutor

    results: dict[str, tuple[bool, str]] = {}
    lanes: dict[str, list[Scenario]] = {}
    for row in rows:
        lanes.setdefault(lane_of(row), []).append(row)

    def run_lane(lane: list[Scenario]) -> None:
        for row in lane:
            results[row.id] = outcome(targets, bystanders, row, workdir)
            if report is not None:
                report(row, *results[row.id])

    with ThreadPoolExecutor(max_workers=max(len(lanes), 1), thread_name_prefix="fault-lane") as pool:
        for future in [pool.submit(run_lane, lane) for lane in lanes.values()]:
            future.result()
    return results


def outcome(targets: Targets, bystanders: Bystanders, row: Scenario, workdir: Path) -> tuple[bool, str]:
    """(passed, reason) for the printed table."""
    try:
        run_scenario(targets, bystanders, row, workdir)
    except ScenarioFailed as failed:
        return False, str(failed)
    except Exception as exc:  # noqa: BLE001 - the table reports a harness error as a failed row
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return False, f"harness error {type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"
    return True, ""
