from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.support.cli_zygote import Process, run_cloudtune, start_cloudtune
from tests.support.testenv import env_without

ROOT = Path(__file__).resolve().parents[2]
MEMORY = "tests.support.memory_provider:MemoryProvider"


@dataclass
class CLI:
    """Runs ``python -m cloudtune`` as a subprocess against the file-backed memory provider."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.tmp / "provider-state.json"

    def base_env(self, **extra: str) -> dict[str, str]:
        env = env_without("CLOUDTUNE_")
        env.update(
            CLOUDTUNE_HOME=str(self.tmp / "home"),
            CLOUDTUNE_MEMORY_STATE=str(self.state_file),
            CLOUDTUNE_POLL_INTERVAL="0.01",
            CLOUDTUNE_POLL_MAX="0.05",
            PYTHONPATH=str(ROOT),
            CI="1",
        )
        env.update(self.env)
        env.update(extra)
        return env

    def __call__(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        """``cloudtune *args`` to its end (forked from the CLI zygote: the imports are done once)."""
        return run_cloudtune(list(args), self.tmp, self.base_env(**env), timeout)

    def start(self, *args: str, **env: str) -> Process:
        """``cloudtune *args`` started (forked from the CLI zygote, in a session of its own; behaves as
        ``subprocess.Popen``)."""
        return start_cloudtune(list(args), self.tmp, self.base_env(**env))

    def wait_for_hang(self, process: Process, timeout: float = 30) -> None:
        marker = Path(str(self.state_file) + ".hanging")
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if process.poll() is not None:
                raise AssertionError(f"process ended before hanging: {process.communicate()}")
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("the provider never reached the hang point")
            time.sleep(0.02)
        marker.unlink()

    def state(self) -> dict:
        return json.loads(self.state_file.read_text())

    def run_memory(self, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self("run", "--provider", MEMORY, "--model", "base", "--train", "train.jsonl", *extra, **env)

    def start_memory(self, *extra: str, **env: str) -> Process:
        return self.start("run", "--provider", MEMORY, "--model", "base", "--train", "train.jsonl", *extra, **env)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "train.jsonl").write_text(
        "".join(
            json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"q{i}"},
                                     {"role": "assistant", "content": f"a{i}"}]}) + "\n"
            for i in range(12)
        )
    )
    return CLI(tmp_path)


def kill9(process: Process) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
