"""``cloudtune`` as a subprocess against ``cloudtune emulate openai`` in another process, with one
fine-tuning run made once per module so the compare tests only pay for the comparisons."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulators import EmulatorProcess, control
from tests.support.cli_zygote import run_cloudtune
from tests.support.testenv import env_without
from tests.openai.conftest import chat_example

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-compare-emulator-key-77"
OPENAI_EMULATOR_ARGS = ("--port", "0", "--job-duration", "1.5", "--api-key", KEY)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("{")]
    assert lines, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    return json.loads(lines[-1])


@dataclass
class OpenAISession:
    tmp: Path
    url: str

    def env(self, **extra: str) -> dict[str, str]:
        env = env_without("CLOUDTUNE_", "OPENAI_")
        env.update(CLOUDTUNE_HOME=str(self.tmp / "home"), OPENAI_API_KEY=KEY, OPENAI_BASE_URL=self.url + "/v1",
                   CLOUDTUNE_POLL_INTERVAL="0.2", CLOUDTUNE_POLL_MAX="0.5", PYTHONPATH=str(ROOT), CI="1",
                   MPLBACKEND="Agg")
        env.update(extra)
        return env

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cloudtune(list(args), self.tmp, self.env(), timeout)

    def control(self, path: str, body: Any = None) -> Any:
        return control(self.url, path, body)


@pytest.fixture(scope="module")
def openai_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAISession]:
    tmp = tmp_path_factory.mktemp("compare-openai")
    write_jsonl(tmp / "train.jsonl", [chat_example(i) for i in range(12)])
    # 8 held-out questions: the first 4 were in the training data (the emulated fine-tune learned
    # them word for word), the last 4 were not
    write_jsonl(tmp / "eval.jsonl", [chat_example(i) for i in range(8, 16)])
    with EmulatorProcess("openai", *OPENAI_EMULATOR_ARGS, cwd=tmp) as emulator:
        yield OpenAISession(tmp, emulator.url)


@pytest.fixture(scope="module")
def openai_run(openai_session: OpenAISession) -> str:
    done = openai_session("run", "--provider", "openai", "--model", "gpt-4o-mini", "--train", "train.jsonl",
                          "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return last_json(done)["run_id"]
