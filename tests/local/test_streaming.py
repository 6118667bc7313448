"""The local server speaks the OpenAI chat API the way applications use it: streaming
(official client and a raw SSE reader), the sampling parameters, refusals in OpenAI's error
shape, context overflow, concurrent requests, the key checked before the body is read."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cloudtune import poller

QUESTION = [{"role": "user", "content": "Question number 3?"}]


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """One base-model deployment shared by this module's tests: (base URL, key)."""
    from tests.local.conftest import stop_recorded_processes

    home = tmp_path_factory.mktemp("stream-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLOUDTUNE_HOME", str(home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("OMP_NUM_THREADS", "1")
        from local_backend.deployments import DeploymentDir
        from providers.local import LocalProvider

        provider = LocalProvider({})
        try:
            provider.deploy(str(tiny_model_dir), name="tiny")
            deployment = poller.wait_for_deployment(provider, "tiny", target="ready", timeout_s=120, sleep=time.sleep, clock=time.monotonic)
            yield deployment.endpoint_url, DeploymentDir("tiny").key()
        finally:
            provider.close()
            stop_recorded_processes(home)


def _raw(url: str, key: str | None, body: bytes | None, *, method: str = "POST", headers: dict | None = None) -> http.client.HTTPResponse:
    parts = urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    connection.request(method, parts.path + "/chat/completions", body=body, headers=sent)
    return connection.getresponse()


def _sse_events(response: http.client.HTTPResponse) -> list[str]:
    """A raw server-sent-events reader: the ``data:`` payload of each event, in order."""
    events, data = [], []
    for raw_line in response:
        line = raw_line.decode().rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line == "" and data:
            events.append("\n".join(data))
            data = []
    return events


def test_streaming_with_the_openai_client_matches_the_plain_answer(served) -> None:  # type: ignore[no-untyped-def]
    import openai

    url, key = served
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
    plain = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=12, temperature=0)
    assert plain.usage.prompt_tokens > 0 and plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

    stream = client.chat.completions.create(
        model="tiny", messages=QUESTION, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip() == plain.choices[0].message.content
    assert finishes == [plain.choices[0].finish_reason]
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_sse_stream_without_usage_ends_with_done(served) -> None:  # type: ignore[no-untyped-def]
    url, key = served
    body = {"model": "tiny", "messages": QUESTION, "max_completion_tokens": 6, "temperature": 0.8, "top_p": 0.9, "seed": 7, "stream": True}
    response = _raw(url, key, json.dumps(body).encode())
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    events = _sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and chunks[-1]["choices"][0]["delta"] == {}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert 1 <= len(pieces) <= 6  # at most one piece per generated token

    # the same seed samples the same answer
    again = [json.loads(e) for e in _sse_events(_raw(url, key, json.dumps(body).encode()))[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in again[1:-1]] == pieces


def test_stop_sequences_cut_the_answer(served) -> None:  # type: ignore[no-untyped-def]
    import openai

    url, key = served
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
    free = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=16, temperature=0).choices[0].message.content
    assert len(free) >= 2, free
    marker = free[1:3].strip() or free[1]
    cut = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=16, temperature=0, stop=[marker])
    assert cut.choices[0].finish_reason == "stop" and marker not in cut.choices[0].message.content
    assert free.startswith(cut.choices[0].message.content)
    streamed = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=16, temperature=0, stop=marker, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).strip() == cut.choices[0].message.content


def test_unsupported_parameters_and_context_overflow_are_refused_in_openais_shape(served) -> None:  # type: ignore[no-untyped-def]
    import openai

    url, key = served
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=QUESTION, logit_bias={"1": 5})
    assert refused.value.body["param"] == "logit_bias" and refused.value.body["code"] == "unsupported_parameter"
    assert "logit_bias" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=QUESTION, n=2)
    assert refused.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=QUESTION, temperature=3)
    assert refused.value.body["param"] == "temperature"
    # neutral values of features the server lacks are accepted (clients send them by default)
    ok = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=2, presence_penalty=0, logprobs=False)
    assert ok.usage.completion_tokens <= 2

    long = [{"role": "user", "content": "Question number 3? " * 200}]  # well past the tiny model's 512 tokens
    with pytest.raises(openai.BadRequestError) as overflow:
        client.chat.completions.create(model="tiny", messages=long, max_tokens=4)
    assert overflow.value.body["code"] == "context_length_exceeded"
    assert "maximum context length is 512 tokens" in overflow.value.body["message"]
    with pytest.raises(openai.BadRequestError) as overflow:
        client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=600)
    assert overflow.value.body["code"] == "context_length_exceeded"


def test_concurrent_requests_are_all_answered(served) -> None:  # type: ignore[no-untyped-def]
    import openai

    url, key = served
    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)
    answers: list[str | None] = [None] * 8
    errors: list[BaseException] = []

    def ask(index: int) -> None:
        try:
            if index % 2:
                stream = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8, temperature=0, stream=True)
                answers[index] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip()
            else:
                answers[index] = client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=8, temperature=0).choices[0].message.content
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(answers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors and len(set(answers)) == 1 and answers[0] is not None


def test_key_is_checked_before_the_body_and_bodies_are_bounded(served) -> None:  # type: ignore[no-untyped-def]
    from local_backend.server import MAX_BODY_BYTES

    url, key = served
    parts = urlparse(url)
    # Announce a large body, send none: without a key the server answers 401 at once and closes,
    # instead of waiting to read what was announced.
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("POST", parts.path + "/chat/completions")
    connection.putheader("Content-Length", str(MAX_BODY_BYTES))
    connection.putheader("Authorization", "Bearer wrong")
    connection.endheaders()
    started = time.monotonic()
    response = connection.getresponse()
    assert response.status == 401 and time.monotonic() - started < 5
    assert json.loads(response.read())["error"]["code"] == "invalid_api_key"

    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("POST", parts.path + "/chat/completions")
    connection.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    connection.putheader("Authorization", f"Bearer {key}")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "request_too_large"

    response = _raw(url, key, b"{not json")
    assert response.status == 400 and json.loads(response.read())["error"]["code"] == "invalid_json"
