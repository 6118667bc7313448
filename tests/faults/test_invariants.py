"""The matrix's shared checks can fail: a leftover of the scenario's run, a deleted bystander
and a missing job are each reported, read from the OpenAI emulator's own records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import Ctx, ScenarioFailed, check_invariants
from tests.faults.targets import Target, Targets

RUN = "20260101-000000-abcdef"


@pytest.fixture
def openai_target(tmp_path: Path) -> Iterator[Target]:
    targets = Targets(tmp_path)
    try:
        yield targets.get("openai")
    finally:
        targets.close()


@pytest.fixture
def ctx(openai_target: Target, tmp_path: Path) -> Ctx:
    (tmp_path / "scenario").mkdir()
    return Ctx(openai_target, tmp_path / "scenario")


def test_a_left_upload_of_the_run_is_reported(ctx: Ctx) -> None:
    before = ctx.snapshot()
    ctx.target.app.store_file(f"ct-{RUN}-train.jsonl", "fine-tune", b"{}\n")
    ctx.track(RUN, jobs=0)
    with pytest.raises(ScenarioFailed, match="left after cleanup: file"):
        check_invariants(ctx, before)


def test_a_deleted_bystander_file_is_reported(ctx: Ctx) -> None:
    bystander = ctx.target.app.store_file("ct-someone-else-train.jsonl", "fine-tune", b"{}\n")
    before = ctx.snapshot()
    with ctx.target.app.lock:
        del ctx.target.app.files[bystander.id]
    with pytest.raises(ScenarioFailed, match="deleted a file the scenario did not create"):
        check_invariants(ctx, before)


def test_a_run_without_its_job_is_reported(ctx: Ctx) -> None:
    before = ctx.snapshot()
    ctx.track(RUN, jobs=1)
    with pytest.raises(ScenarioFailed, match="0 jobs carry its tag, expected 1"):
        check_invariants(ctx, before)
