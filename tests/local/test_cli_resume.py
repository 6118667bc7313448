"""`cloudtune resume` after the local worker was killed: the same job restarts from its
checkpoint and the run completes, through the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.local.conftest import stop_recorded_processes, write_training_file
from tests.support.cli_zygote import run_cloudtune

ROOT = Path(__file__).resolve().parents[2]


def _cli(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDTUNE_HOME": str(home), "PYTHONPATH": str(ROOT), "CI": "1", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "CLOUDTUNE_POLL_INTERVAL": "0.2", "CLOUDTUNE_POLL_MAX": "0.5"}
    return run_cloudtune(list(args), home.parent, env, timeout)


def test_resume_restarts_a_killed_worker_and_finishes_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from local_backend.tiny import build_tiny_model
    from tests.local.conftest import chat_example

    home = tmp_path / "home"
    model = build_tiny_model(tmp_path / "model", [json.dumps(chat_example(i)) for i in range(20)],
                             hidden_size=256, intermediate_size=768, layers=4)
    write_training_file(tmp_path / "train.jsonl", count=16)
    (tmp_path / "run.yaml").write_text(
        f"provider: local\nmodel: {model}\ntrain: train.jsonl\ndeploy: false\nseed: 3\n"
        "hyperparameters:\n  epochs: 8\n  batch_size: 4\n"
        "  extra: {learning_rate: 0.003, max_seq_len: 64, lora_r: 8, lora_alpha: 16, checkpoint_every: 2}\n"
    )
    try:
        created = _cli(home, "run", "run.yaml", "--no-wait", "--json")
        assert created.returncode == 0, created.stderr
        doc = json.loads(created.stdout)
        job_dir = home / "local" / "jobs" / doc["job_id"]
        deadline = time.monotonic() + 120
        while not list(job_dir.glob("checkpoints/step-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(int((job_dir / "worker.pid").read_text()), signal.SIGKILL)
        # a killed process holds its files (so the worker lock) until its last thread is torn down:
        # the job is "running" until then, so ask once the lock is free
        from local_backend.jobs import JobDir

        monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
        deadline = time.monotonic() + 30
        while JobDir(doc["job_id"]).worker_holds_lock() and time.monotonic() < deadline:
            time.sleep(0.02)

        status = json.loads(_cli(home, "status", doc["run_id"], "--json").stdout)
        assert status["job"]["state"] == "failed" and status["job"]["error"]["code"] == "worker_died"

        resumed = _cli(home, "resume", doc["run_id"], "--json")
        assert resumed.returncode == 0, resumed.stderr
        final = json.loads(resumed.stdout)
        assert final["status"] == "succeeded" and final["job_id"] == doc["job_id"]
        assert final["fine_tuned_model"] == f"local:{doc['job_id']}"
        assert "restarting it from its latest checkpoint" in resumed.stderr
        assert len(list((home / "local" / "jobs").iterdir())) == 1

        # the deployment says how to call it: base URL in --json and status, the key by a command
        deployed = _cli(home, "deploy", doc["run_id"], "--json")
        assert deployed.returncode == 0, deployed.stderr
        url = json.loads(deployed.stdout)["endpoint_url"]
        assert url and url.startswith("http://127.0.0.1:")
        shown = _cli(home, "status", doc["run_id"], "--offline").stdout
        endpoint_line = next(line for line in shown.splitlines() if line.strip().startswith("endpoint:"))
        assert url in endpoint_line
        key_command = endpoint_line.split("(key: `", 1)[1].rstrip(")`")
        key = subprocess.run(key_command, shell=True, capture_output=True, text=True, check=True).stdout.strip()
        assert key and key not in shown + deployed.stdout + deployed.stderr
        import openai

        client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        name = json.loads(deployed.stdout)["deployment"]
        answer = client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=4)
        assert answer.choices[0].message.content is not None
        assert _cli(home, "cleanup", doc["run_id"]).returncode == 0
    finally:
        stop_recorded_processes(home)
