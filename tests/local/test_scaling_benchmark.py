"""benchmarks/local_scaling.py runs on whatever devices exist (here: CPU, gloo) and compares
1 and 2 processes on the same global batch: the same tokens and nearly the same loss."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scaling_benchmark_reports_efficiency_against_one_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "local_scaling.py"), "--processes", "2", "--steps", "4", "--warmup", "1",
         "--hidden", "64", "--layers", "2", "--examples", "32", "--batch-size", "4", "--seq-len", "64", "--json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    one, two = report["results"]
    assert (one["processes"], two["processes"]) == (1, 2)  # 1 is always measured: efficiency is against it
    assert one["steps"] == two["steps"] == 2 and one["tokens"] == two["tokens"] > 0
    assert one["efficiency"] == 1.0 and two["efficiency"] == pytest.approx(two["tokens_per_s"] / (2 * one["tokens_per_s"]))
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-4)
