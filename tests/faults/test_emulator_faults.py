"""The emulator fault kinds the matrix relies on: ``drop`` and ``latency`` with ``after`` act
once the request was processed, so the outcome is real and only the answer is lost or late."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from cloudtune.emulators._http import EmulatorClock
from cloudtune.emulators.openai import EmulatorSettings, OpenAIEmulator, serve

KEY = "sk-emulator-fault-kinds"
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini-2024-07-18"})


def _chat(port: int, timeout: float = 10) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/chat/completions", BODY,
                           {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def app() -> OpenAIEmulator:
    return OpenAIEmulator(EmulatorSettings(api_key=KEY), clock=EmulatorClock(speed=1.0))


def test_drop_after_processes_the_request_then_resets(app: OpenAIEmulator) -> None:
    with serve(app) as server:
        app.faults.add(route="POST /v1/chat/completions", kind="drop", after=True)
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            _chat(server.port)
        assert app.chat_requests == 1  # handled, answer lost
        assert _chat(server.port) == 200


def test_drop_before_never_reaches_the_handler(app: OpenAIEmulator) -> None:
    with serve(app) as server:
        app.faults.add(route="POST /v1/chat/completions", kind="drop")
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            _chat(server.port)
        assert app.chat_requests == 0


def test_latency_after_answers_late_with_the_work_done(app: OpenAIEmulator) -> None:
    with serve(app) as server:
        app.faults.add(route="POST /v1/chat/completions", kind="latency", latency_s=3.0, after=True)
        with pytest.raises(TimeoutError):
            _chat(server.port, timeout=0.5)
        deadline = time.monotonic() + 5
        while app.chat_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.chat_requests == 1  # processed while the client was still waiting for the answer
