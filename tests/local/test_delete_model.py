"""``cloudtune delete-model`` of a local model id that does not exist is a not-found error (exit 2),
never "deleted"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.support.cli_zygote import run_cloudtune

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("model", ["local:ftjob-doesnotexist", "gpt-4o-mini"])
def test_delete_model_of_a_missing_local_model_exits_2(tmp_path: Path, model: str) -> None:
    env = {**os.environ, "CLOUDTUNE_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT), "CI": "1"}
    result = run_cloudtune(["delete-model", model, "--provider", "local"], tmp_path, env, 120)
    assert result.returncode == 2, result.stderr
    assert f"no model {model!r}" in result.stderr
    assert "deleted" not in result.stdout
