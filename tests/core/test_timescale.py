"""CLOUDTUNE_TIME_SCALE: every wait cloudtune makes is multiplied by it (the waits are recorded at
``time.sleep``, the standard library's, which is where they end)."""

from __future__ import annotations

import time

import pytest

from cloudtune import errors, timescale
from cloudtune.retry import call_with_retries


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    return calls


def test_unset_is_real_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(timescale.ENV, raising=False)
    assert timescale.time_scale() == 1.0
    assert timescale.scaled(2.0) == 2.0


@pytest.mark.parametrize("raw", ["0", "-1", "fast", "nan", "inf"])
def test_a_bad_scale_is_refused_with_exit_2(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(timescale.ENV, raw)
    with pytest.raises(errors.ConfigError, match=timescale.ENV) as caught:
        timescale.sleep(1.0)
    assert errors.exit_code_for(caught.value) == 2


def test_retry_back_offs_follow_the_scale(monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    monkeypatch.setenv(timescale.ENV, "0.01")
    failures = iter([errors.TransientError("busy"), errors.RateLimited("slow down"), None])

    def flaky() -> str:
        failure = next(failures)
        if failure is not None:
            raise failure
        return "done"

    assert call_with_retries(flaky) == "done"
    assert slept == [pytest.approx(0.005), pytest.approx(0.01)]  # 0.5 s and 1 s back-offs


def test_a_providers_default_sleep_follows_the_scale(monkeypatch: pytest.MonkeyPatch, slept: list[float]) -> None:
    from providers.openai import OpenAIProvider

    monkeypatch.setenv(timescale.ENV, "0.1")
    OpenAIProvider({}).sleep(2.0)
    assert slept == [pytest.approx(0.2)]


def test_azure_core_retry_policy_waits_follow_the_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.azure._sdk_retries import retry_policy

    monkeypatch.setenv(timescale.ENV, "0.01")
    policy = retry_policy(retry_total=3, retry_backoff_factor=0.5)
    waits: list[float] = []

    class Transport:
        def sleep(self, seconds: float) -> None:
            waits.append(seconds)

    settings = policy.configure_retries({})
    settings["history"] = [object(), object()]  # two attempts made: the SDK's back-off is 0.5 * 2 = 1 s
    policy.sleep(settings, Transport())
    assert waits == [pytest.approx(policy.get_backoff_time(settings) * 0.01)] and waits[0] > 0


def test_openai_sdk_retry_waits_follow_the_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    from openai import OpenAI, _base_client

    from providers.azure._sdk_retries import openai_client

    monkeypatch.setenv(timescale.ENV, "0.01")
    client = openai_client(OpenAI, api_key="sk-test", base_url="http://127.0.0.1:9/v1", max_retries=3)
    assert type(client).__name__ == "OpenAI" and isinstance(client, OpenAI)
    http = getattr(_base_client, "httpx2", None) or getattr(_base_client, "httpx")  # the SDK's HTTP library
    headers = http.Headers({"retry-after": "4"})
    from openai._models import FinalRequestOptions

    options = FinalRequestOptions.construct(method="get", url="/models")
    assert client._calculate_retry_timeout(2, options, headers) == pytest.approx(0.04)
    assert type(client.with_options(timeout=5)) is type(client)  # per-call copies keep the scale
