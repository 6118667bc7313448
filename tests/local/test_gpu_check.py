"""benchmarks/gpu_check.py --cpu: the checks a CPU can run (packed attention with sliding windows
and soft-capping against transformers' reference, chunked loss, gradient accumulation, DPO's
first loss) pass, and the JSON and Markdown reports are written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # about a minute: five tiny models built and trained
def test_gpu_check_cpu_mode_passes_and_reports(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    statuses = {entry["name"]: entry["status"] for entry in report["checks"]}
    assert statuses and set(statuses.values()) == {"ok"}, statuses
    assert {"packed vs reference (phi3)", "packed vs reference (mistral)", "packed vs reference (gemma2)"} <= set(statuses)
    gemma = next(e for e in report["checks"] if e["name"] == "packed vs reference (gemma2)")["figures"]
    assert gemma["attn_softcap"] and gemma["sliding_window"] < gemma["longest"]
    assert "gpu_check" in (tmp_path / "gpu_check.md").read_text()
