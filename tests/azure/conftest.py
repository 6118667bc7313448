"""Shared Azure test fixtures: one emulator (ARM, Azure OpenAI, blob, Entra ID) behind its HTTPS
proxy for the whole session, and the proxy/CA environment per module so the real SDKs
(``openai``, ``azure-ai-ml``, ``azure-identity``) talk to it unchanged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudtune.emulators._http import EmulatorClock
from cloudtune.emulators.azure import AzureEmulator, Timeline

TRAINING = "".join(
    '{"messages":[{"role":"user","content":"Q%d?"},{"role":"assistant","content":"A%d."}]}\n' % (i, i) for i in range(12)
)


@pytest.fixture(scope="session")
def azure_emulator() -> Iterator[AzureEmulator]:
    # speed 0: emulated time moves only when a test's sleep advances it
    emulator = AzureEmulator(clock=EmulatorClock(speed=0.0), timeline=Timeline())
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def azure_env(azure_emulator: AzureEmulator) -> Iterator[dict[str, str]]:
    env = azure_emulator.env()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("AZURE_OPENAI_API_KEY", raising=False)  # exercise Entra ID tokens
        yield env


@dataclass
class EmulatedTime:
    """The contract's sleep/clock: sleeping advances the emulator's clock, nothing waits for real."""

    emulator: AzureEmulator
    now: float = 0.0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
        self.emulator.app.clock.advance(seconds)

    def clock(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def training_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("azure-data") / "train.jsonl"
    path.write_text(TRAINING)
    return path


def state(emulator: AzureEmulator) -> dict:
    with emulator.app.lock:
        return emulator.app.store.summary()
