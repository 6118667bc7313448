"""Fixtures for the OpenAI provider tests: the emulator in-process on a random loopback port,
driven by an emulated clock that only moves when the code under test sleeps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudtune.emulators._http import EmulatorClock, EmulatorServer
from cloudtune.emulators.openai import EmulatorSettings, OpenAIEmulator, serve
from tests.support.testenv import DOCUMENTED_DAY  # noqa: F401 - re-exported to the OpenAI tests

BASE_MODEL = "gpt-4o-mini-2024-07-18"
KEY_ENV = "CLOUDTUNE_TEST_OPENAI_KEY"
TEST_KEY = "sk-test-emulator-key-0123456789"


def chat_example(i: int) -> dict:
    return {"messages": [
        {"role": "system", "content": "You answer capital-city questions."},
        {"role": "user", "content": f"What is the capital of country {i}?"},
        {"role": "assistant", "content": f"The capital of country {i} is City {i}."},
    ]}


def write_training_file(path: Path, count: int = 12) -> Path:
    path.write_text("".join(json.dumps(chat_example(i)) + "\n" for i in range(count)))
    return path


@dataclass
class Emulated:
    app: OpenAIEmulator
    server: EmulatorServer
    clock: EmulatorClock

    @property
    def base_url(self) -> str:
        return self.server.url + "/v1"

    def sleep(self, seconds: float) -> None:
        """What the code under test calls instead of time.sleep: emulated time moves on at once."""
        self.clock.advance(max(seconds, 0.0))

    def options(self, tmp_path: Path, **extra: object) -> dict:
        return {"base_url": self.base_url, "api_key_env": KEY_ENV,
                "deployments_file": str(tmp_path / "deployments.json"), **extra}


@pytest.fixture(autouse=True)
def documented_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDTUNE_TODAY", DOCUMENTED_DAY)


@pytest.fixture
def emulated(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulated]:
    monkeypatch.setenv(KEY_ENV, TEST_KEY)
    clock = EmulatorClock(speed=0.0)  # frozen unless advanced: deterministic timelines
    settings = EmulatorSettings(api_key=TEST_KEY, validate_s=2, queue_s=2, run_s=20, file_processing_s=1)
    app = OpenAIEmulator(settings, clock=clock)
    with serve(app) as server:
        yield Emulated(app, server, clock)


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    return write_training_file(tmp_path / "train.jsonl")


@pytest.fixture
def provider(emulated: Emulated, tmp_path: Path):  # type: ignore[no-untyped-def]
    from providers.openai import OpenAIProvider

    with OpenAIProvider(emulated.options(tmp_path), sleep=emulated.sleep, clock=emulated.clock.now) as made:
        yield made
