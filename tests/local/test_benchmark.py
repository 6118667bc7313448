"""benchmarks/local_qlora.py --tiny runs on CPU in every child (so the GPU benchmark cannot
rot, and the smoke is the same on a GPU machine), side by side with TRL where installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_benchmark_runs_and_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "local_qlora.py"), "--tiny", "--steps", "4", "--rounds", "1",
         "--data", "variable", "--json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["device"] == "cpu" and report["matmul_params"] > 0
    entry = report["datasets"]["variable"]
    ours = entry["results"]["ours"]
    assert ours["device"] == "cpu" and ours["quantized_4bit"] is False
    assert ours["tokens_per_s"] > 0 and ours["device_used_gib"] > 0
    assert ours["measured_steps"] == 4 - report["warmup_steps"]
    if importlib.util.find_spec("trl"):  # the reference runs where trl is installed (the bench extra)
        trl = entry["results"]["trl"]
        assert trl["device"] == "cpu" and trl["tokens_per_s"] > 0 and entry["speedup"] > 0
        # the same tokens are trained by both: the answers, end-of-turn included
        assert trl["labelled_tokens_per_example"] == pytest.approx(ours["labelled_tokens_per_example"])
