"""benchmarks/local_qlora.py --tiny runs on CPU (so the GPU benchmark cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_benchmark_runs_and_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "local_qlora.py"), "--tiny", "--steps", "4", "--json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    ours = report["results"]["ours"]
    assert ours["tokens_per_s"] > 0 and ours["peak_memory_gib"] > 0 and ours["params"] > 0
    assert ours["device"] == "cpu" and ours["quantized_4bit"] is False
    if "trl" in report["results"]:  # the reference recipe runs where trl is installed
        assert report["results"]["trl"]["tokens_per_s"] > 0 and report["speedup"] > 0
