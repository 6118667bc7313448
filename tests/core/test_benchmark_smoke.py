"""The benchmark scripts run, at tiny sizes, in seconds: they cannot rot between the runs that
measure for real (benchmarks/RESULTS.md). Figures are printed beside their reference; nothing
here judges a figure (timings are the benchmark's job, not a test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def bench(tmp_path: Path, script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_cli_startup_prints_each_command_beside_the_import_openai_reference(tmp_path: Path) -> None:
    out = bench(tmp_path, "cli_startup.py", "--runs", "1")
    assert "python -c \"import openai\" (reference)" in out and "cloudtune --help" in out
    assert "heavy modules imported by `cloudtune --help`: none" in out


def test_polling_compares_the_poller_with_naive_polling_on_a_short_timeline(tmp_path: Path) -> None:
    out = bench(tmp_path, "polling.py", "--hour-seconds", "60", "--steps", "5", "--json")
    results = json.loads(out[out.index("{"):])["results"]
    ours, naive = results["cloudtune poller"], results["naive 5 s polling"]
    for figures in (ours, naive):
        assert figures["final_state"] == "succeeded"
        assert figures["events_shown"] == figures["events"] > 0 and figures["duplicates"] == 0


def test_validate_compares_with_the_cookbook_on_small_files(tmp_path: Path) -> None:
    out = bench(tmp_path, "validate.py", "--examples", "120", "--small", "40", "--repeat", "1",
                "--workdir", str(tmp_path))
    assert "cookbook" in out and "cloudtune, default" in out
