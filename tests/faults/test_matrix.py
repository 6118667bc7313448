"""The fault matrix under pytest: one test per (scenario, target) row of ``tests.faults.matrix``,
the same rows ``python -m tests.faults`` prints. The selected rows run once, in two lanes (the
Azure emulator's rows beside the others), in a session fixture; each test reports its row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.matrix import Bystanders, Scenario, all_scenarios, run_rows
from tests.faults.targets import Targets

ROWS = all_scenarios()


@pytest.fixture(scope="session")
def fault_outcomes(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[bool, str]]]:
    params = [getattr(item, "callspec", None) for item in request.session.items]
    selected = [p.params["row"] for p in params if p is not None and isinstance(p.params.get("row"), Scenario)]
    workdir = tmp_path_factory.mktemp("faults")
    targets = Targets(workdir)
    try:
        yield run_rows(targets, Bystanders(targets, workdir), selected, workdir)
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


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_fault_scenario(row: Scenario, fault_outcomes: dict[str, tuple[bool, str]]) -> None:
    passed, reason = fault_outcomes[row.id]
    assert passed, reason
