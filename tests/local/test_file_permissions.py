"""The local provider's copies of the user's data (its uploaded files, the job's own copies) are
0600 and its job directories 0700, under a permissive umask (0o022), through the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.local.conftest import stop_recorded_processes, write_training_file

ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_local_copies_of_training_data_are_owner_only_under_umask_022(tmp_path: Path, tiny_model_dir: Path) -> None:
    home = tmp_path / "home"
    train = write_training_file(tmp_path / "train.jsonl", count=12)
    os.chmod(train, 0o600)
    env = {**os.environ, "CLOUDTUNE_HOME": str(home), "PYTHONPATH": str(ROOT), "CI": "1", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1"}
    try:
        created = subprocess.run(
            [sys.executable, "-m", "cloudtune", "run", "--provider", "local", "--model", str(tiny_model_dir),
             "--train", "train.jsonl", "--validation-split", "0.25", "--no-deploy", "--no-wait", "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, umask=0o022, check=False)
        assert created.returncode == 0, created.stderr
        job_dir = home / "local" / "jobs" / json.loads(created.stdout)["job_id"]
        assert (job_dir / "train.jsonl").exists() and (job_dir / "validation.jsonl").exists()
        assert _mode(home) == 0o700 and _mode(job_dir) == 0o700
        uploaded = sorted((home / "local" / "files").glob("*.jsonl"))
        assert len(uploaded) == 2, uploaded  # the training and validation parts, uploaded
        copies = [*uploaded, job_dir / "train.jsonl", job_dir / "validation.jsonl", *sorted(home.glob("runs/*/*.jsonl"))]
        assert {str(p.relative_to(home)): oct(_mode(p)) for p in copies} == \
            {str(p.relative_to(home)): oct(0o600) for p in copies}
    finally:
        stop_recorded_processes(home)
