"""The README's first command, `cloudtune quickstart`, as a user runs it (subprocess, offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.local.conftest import stop_recorded_processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_fine_tunes_compares_and_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "CLOUDTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "CI": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "cloudtune", "quickstart", "--json"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        stop_recorded_processes(home)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["state"] == "succeeded" and doc["fine_tuned_model"].startswith("local:")
    targets = {t["label"]: t for t in doc["comparison"]["targets"]}
    assert targets["fine-tuned"]["token_f1"] > targets["base"]["token_f1"]
    answers = [e["answers"] for e in doc["comparison"]["examples"]]
    assert all("matey" in a["fine-tuned"]["text"].lower() for a in answers)
    assert not any("matey" in a["base"]["text"].lower() for a in answers)
    report = Path(doc["report"])
    assert report.name == "report.html" and report.is_file() and (report.parent / "loss_curves.png").is_file()
    assert doc["comparison"]["differences"]["fine-tuned"]  # intervals against the base model
    deleted = doc["deleted"]
    assert [d.split(":")[0] for d in deleted] == ["deployment", "model", "file"]
    assert not list((home / "local" / "servers").glob("*/server.pid"))
