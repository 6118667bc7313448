"""The fault matrix under pytest: one test per (scenario, target) row of ``tests.faults.matrix``,
the same rows ``python -m tests.faults`` prints, so ``-x``, ``--lf``, ``-k`` and ``--durations``
speak of single rows. Rows are grouped per emulator (OpenAI, Azure, local); each emulator is
started once per session, by the first row that needs it, and serves every row of its group."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.harness import ScenarioFailed
from tests.faults.matrix import Bystanders, Scenario, all_scenarios, grouped, run_scenario
from tests.faults.targets import Targets

ROWS = all_scenarios()


@dataclass
class FaultWorld:
    """What the rows of a session share: the started emulators, the bystanders planted on
    each, and a work directory."""

    targets: Targets
    bystanders: Bystanders
    workdir: Path


@pytest.fixture(scope="session")
def fault_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultWorld]:
    workdir = tmp_path_factory.mktemp("faults")
    targets = Targets(workdir)
    try:
        yield FaultWorld(targets, Bystanders(targets, workdir), workdir)
    finally:
        targets.close()


def test_matrix_has_every_reproduction() -> None:
    names = {row.name for row in ROWS}
    assert len(ROWS) >= 40
    for required in ("shared-name-refused-deploy-on-failure-cleanup", "shared-name-deploy-name-then-cleanup",
                     "undeploy-of-never-deployed-run", "smoke-failure-cleanup-then-resume",
                     "ctrl-c-in-wait-on-failure-then-resume", "no-wait-then-cleanup-refuses-active-job",
                     "older-than-skips-active-runs", "validation-failure-then-fixed-data", "two-concurrent-resumes",
                     "cleanup-from-another-shell-during-run", "interrupted-uploads-two-runs-identical-files",
                     "sigterm-at-file-processing-then-resume", "502-after-stored-upload", "429-with-retry-after",
                     "429-without-retry-after", "500-burst-on-poll", "503-burst-on-create", "reset-during-upload",
                     "reset-during-create", "reset-during-poll", "reset-during-deploy", "reset-during-delete",
                     "read-timeout-on-poll", "job-fails-in-validation", "job-fails-while-running",
                     "deployment-fails", "quota-refusal-on-deploy", "local-worker-death-then-resume"):
        assert required in names, required
    for step in ("upload", "file-processing", "create", "wait", "smoke-test", "cleanup"):
        assert f"kill-9-at-{step}-then-resume" in names and f"sigterm-at-{step}-then-resume" in names, step
    assert {row.target for row in ROWS} == {"openai", "azure-openai", "azure-serverless", "local"}
    assert len({row.id for row in ROWS}) == len(ROWS)


@pytest.mark.slow
@pytest.mark.parametrize("row", grouped(ROWS), ids=[row.id for row in grouped(ROWS)])
def test_fault_scenario(row: Scenario, fault_world: FaultWorld) -> None:
    try:
        run_scenario(fault_world.targets, fault_world.bystanders, row, fault_world.workdir)
    except ScenarioFailed as failed:
        pytest.fail(f"{row.id}: {failed}", pytrace=False)
