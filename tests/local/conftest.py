"""Fixtures for the local backend: a tiny real model (built in about a second), an
isolated CLOUDTUNE_HOME per test, and a provider that stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TARGET_ANSWER = "Ahoy matey!"


def chat_example(i: int, answer: str = TARGET_ANSWER) -> dict:
    return {"messages": [{"role": "user", "content": f"Question number {i}?"}, {"role": "assistant", "content": answer}]}


def write_training_file(path: Path, count: int = 8, answer: str = TARGET_ANSWER) -> Path:
    path.write_text("".join(json.dumps(chat_example(i, answer)) + "\n" for i in range(count)))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from local_backend.tiny import build_tiny_model

    texts = [json.dumps(chat_example(i)) for i in range(20)]
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", texts)


@pytest.fixture
def local_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # One thread per worker: tests run several processes on two shared cores.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return home


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    return write_training_file(tmp_path / "train.jsonl")


def _recorded_pids(home: Path) -> list[tuple[int, str]]:
    found = []
    for pid_file in list(home.glob("local/jobs/*/worker.pid")) + list(home.glob("local/servers/*/server.pid")):
        try:
            found.append((int(pid_file.read_text()), str(pid_file.parent)))
        except ValueError:
            pass
    return found


def stop_recorded_processes(home: Path) -> None:
    """Kill the workers and servers this test started (by their recorded pid, checked
    against their command line), so no test leaves a process behind."""
    from local_backend.procs import pid_alive

    for pid, directory in _recorded_pids(home):
        if pid_alive(pid, expect=directory):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    for pid, directory in _recorded_pids(home):
        while pid_alive(pid, expect=directory) and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def provider(local_home: Path) -> Iterator:
    from providers.local import LocalProvider

    instance = LocalProvider({})
    try:
        yield instance
    finally:
        instance.close()
        stop_recorded_processes(local_home)


def fast_hyperparameters(**extra):  # type: ignore[no-untyped-def]
    from cloudtune.types import Hyperparameters

    settings = {"learning_rate": 1e-2, "max_seq_len": 64, "lora_r": 8, "lora_alpha": 16, "checkpoint_every": 4}
    settings.update(extra)
    epochs = settings.pop("epochs", 4)
    return Hyperparameters(epochs=epochs, batch_size=4, extra=settings)


@dataclass
class QuickstartRun:
    """What ``cloudtune quickstart --json`` did, run once per session."""

    returncode: int
    stdout: str
    stderr: str
    home: Path  # its CLOUDTUNE_HOME (the converted SmolLM2 stays cached there)

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> QuickstartRun:
    """The README's first command as a user runs it (subprocess, offline): SmolLM2-135M is
    converted, fine-tuned, deployed beside its base and compared, then cleaned up. Fine-tuning
    it takes minutes on CPU, so it happens once per session and every test that needs a
    fine-tuned SmolLM2 reads this run."""
    workdir = tmp_path_factory.mktemp("quickstart")
    home = workdir / "home"
    env = {**os.environ, "CLOUDTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "CI": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "cloudtune", "quickstart", "--json"], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=900)
    finally:
        stop_recorded_processes(home)
    return QuickstartRun(done.returncode, done.stdout, done.stderr, home)
