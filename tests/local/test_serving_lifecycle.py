"""Local serving as an application sees it across deploys and undeploys, on the tiny model: an
undeploy returns only once the server stopped answering for that deployment; the last undeploy
lets a stream in flight finish (or ends it with an error event, never silently); per-deployment
keys; a key and a pinned port (``-o serve_port=N``) that survive a redeploy; read timeouts for a
body that never arrives; the ``developer`` role; a stop string cuts a streamed answer to the same
text as the plain one; ``GET /v1/models/{id}``."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cloudtune import poller

QUESTION = [{"role": "user", "content": "Question number 3?"}]


def _ready(provider, name: str):  # type: ignore[no-untyped-def]
    return poller.wait_for_deployment(provider, name, target="ready", timeout_s=120, sleep=time.sleep, clock=time.monotonic)


def _request(url: str, key: str | None, path: str, body: dict | None = None, *, method: str | None = None,
             timeout: float = 60) -> tuple[int, dict | list]:
    parts = urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    connection.request(method or ("POST" if data else "GET"), parts.path + path, body=data, headers=headers)
    response = connection.getresponse()
    raw = response.read()
    if response.getheader("Content-Type") == "text/event-stream":
        return response.status, _events(raw.decode())
    return response.status, json.loads(raw)


def _events(text: str) -> list:
    return [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]


def _chat(url: str, key: str | None, model: str, **extra) -> tuple[int, dict | list]:  # type: ignore[no-untyped-def]
    return _request(url, key, "/chat/completions", {"model": model, "messages": QUESTION, "max_tokens": 8,
                                                    "temperature": 0, **extra})


@pytest.fixture(scope="module")
def shared(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """Two base-model deployments, "a" and "b", on one server (short read timeout)."""
    from tests.local.conftest import stop_recorded_processes

    home = tmp_path_factory.mktemp("serving-home")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("CLOUDTUNE_HOME", str(home)), ("HF_HUB_OFFLINE", "1"), ("OMP_NUM_THREADS", "1"),
                            ("CLOUDTUNE_SERVE_READ_TIMEOUT_S", "2")):
            patch.setenv(name, value)
        from local_backend.deployments import DeploymentDir
        from providers.local import LocalProvider

        provider = LocalProvider({})
        try:
            for name in ("a", "b"):
                provider.deploy(str(tiny_model_dir), name=name)
            url = _ready(provider, "a").endpoint_url
            assert _ready(provider, "b").endpoint_url == url
            yield provider, url, DeploymentDir("a").key(), DeploymentDir("b").key()
        finally:
            provider.close()
            stop_recorded_processes(home)


def test_each_deployment_has_its_own_key_and_a_model_route(shared) -> None:  # type: ignore[no-untyped-def]
    _, url, key_a, key_b = shared
    assert key_a != key_b
    assert _chat(url, key_a, "a")[0] == 200 and _chat(url, key_b, "b")[0] == 200
    status, body = _chat(url, key_a, "b")  # a's key does not open b
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = _request(url, key_a, "/models/a")
    assert status == 200 and body["id"] == "a" and body["object"] == "model"
    assert _request(url, key_a, "/models/b")[0] == 404
    assert _request(url, key_a, "/models/nope")[0] == 404
    assert _request(url, "wrong", "/models/a")[0] == 401
    import openai

    assert openai.OpenAI(base_url=url, api_key=key_b, max_retries=0).models.retrieve("b").id == "b"


def test_developer_is_the_system_role_and_unknown_roles_are_refused(shared) -> None:  # type: ignore[no-untyped-def]
    _, url, key_a, _ = shared
    as_system = _request(url, key_a, "/chat/completions", {"model": "a", "max_tokens": 6, "temperature": 0,
                                                          "messages": [{"role": "system", "content": "Be brief."}, *QUESTION]})
    as_developer = _request(url, key_a, "/chat/completions", {"model": "a", "max_tokens": 6, "temperature": 0,
                                                             "messages": [{"role": "developer", "content": "Be brief."}, *QUESTION]})
    assert as_developer[0] == 200
    assert as_developer[1]["choices"][0]["message"]["content"] == as_system[1]["choices"][0]["message"]["content"]
    for role in ("wizard", "tool"):
        status, body = _request(url, key_a, "/chat/completions", {"model": "a", "messages": [
            {"role": role, "content": "hi"}, *QUESTION]})
        assert status == 400 and body["error"]["param"] == "messages[0].role", (role, body)


def test_a_stop_string_cuts_streamed_and_plain_answers_to_the_same_text(shared) -> None:  # type: ignore[no-untyped-def]
    _, url, key_a, _ = shared
    full = _chat(url, key_a, "a", max_tokens=24)[1]["choices"][0]["message"]["content"]
    words = full.split(" ")
    # cut right after a space, where the streamed answer used to keep the space the plain one strips
    stops = [words[1][:3]] if len(words) > 1 and words[1] else [full[len(full) // 2:][:3] or "zz"]
    plain = _chat(url, key_a, "a", max_tokens=24, stop=stops)[1]["choices"][0]
    status, events = _chat(url, key_a, "a", max_tokens=24, stop=stops, stream=True)
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == plain["message"]["content"], (full, stops)
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["finish_reason"]


def _raw_exchange(url: str, request: bytes, timeout: float = 30) -> bytes:
    parts = urlparse(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as conn:
        conn.sendall(request)
        received = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return received
            received += chunk


def test_a_body_that_never_arrives_is_answered_not_waited_for(shared) -> None:  # type: ignore[no-untyped-def]
    _, url, key_a, _ = shared
    path = urlparse(url).path + "/chat/completions"
    body = json.dumps({"model": "a", "messages": QUESTION}).encode()
    for length, expected in (("-1", b" 400 "), (str(len(body) + 100), b" 408 ")):
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key_a}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()
        # the connection must come back (the socket timeout of 30 s would raise here otherwise)
        answer = _raw_exchange(url, head + body)
        assert answer.split(b"\r\n", 1)[0].find(expected) > 0, answer[:200]


def test_undeploying_one_of_two_returns_once_it_is_no_longer_served(shared) -> None:  # type: ignore[no-untyped-def]
    provider, url, key_a, key_b = shared
    assert _chat(url, key_a, "a")[0] == 200
    provider.undeploy("a")
    # the moment undeploy returns, the server no longer answers for "a"; "b" goes on
    assert _chat(url, key_a, "a")[0] in (401, 404)
    assert _request(url, key_b, "/models/a")[0] == 404
    assert _chat(url, key_b, "b")[0] == 200


def _stream_in_background(url: str, key: str, model: str, max_tokens: int) -> tuple[threading.Thread, dict]:
    """Start a streamed request; ``seen["first"]`` is set once its first content arrives."""
    seen: dict = {"first": threading.Event(), "events": None, "error": None}

    def read() -> None:
        parts = urlparse(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        body = json.dumps({"model": model, "messages": QUESTION, "max_tokens": max_tokens, "temperature": 0.9,
                           "seed": 1, "stream": True})
        connection.request("POST", parts.path + "/chat/completions", body=body,
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        events = []
        try:
            for raw in response:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    events.append(line[5:].strip())
                    if len(events) >= 2:
                        seen["first"].set()
        except OSError as exc:
            seen["error"] = exc
        seen["events"] = events
        seen["first"].set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, seen


def _ended_properly(events: list[str]) -> bool:
    """A finish_reason and [DONE], or an error event: never a stream that just stops."""
    if any("error" in json.loads(e) for e in events if e != "[DONE]"):
        return True
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return bool(events) and events[-1] == "[DONE]" and chunks[-1]["choices"][0]["finish_reason"] is not None


@pytest.mark.parametrize("grace", ["30", "0"])
def test_the_last_undeploy_lets_streams_finish_or_end_them_with_an_error(
        tiny_model_dir: Path, local_home: Path, monkeypatch: pytest.MonkeyPatch, grace: str) -> None:
    monkeypatch.setenv("CLOUDTUNE_SERVE_DRAIN_S", grace)
    from local_backend.deployments import DeploymentDir
    from local_backend.procs import pid_alive
    from providers.local import LocalProvider

    provider = LocalProvider({})
    try:
        provider.deploy(str(tiny_model_dir), name="last")
        deployment = _ready(provider, "last")
        key = DeploymentDir("last").key()
        thread, seen = _stream_in_background(deployment.endpoint_url, key, "last", max_tokens=400)
        assert seen["first"].wait(60)
        provider.undeploy("last")
        assert not pid_alive(deployment.details["pid"])  # returned only after the server stopped
        thread.join(60)
        events = seen["events"]
        assert events is not None and seen["error"] is None
        assert _ended_properly(events), events[-3:]
        if grace == "30":  # within the grace period the answer completes
            assert events[-1] == "[DONE]", events[-3:]
    finally:
        provider.close()


def test_a_pinned_port_and_the_key_survive_a_redeploy(tiny_model_dir: Path, local_home: Path) -> None:
    from local_backend.deployments import DeploymentDir
    from providers.local import LocalProvider

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = LocalProvider({"serve_port": port})
    try:
        provider.deploy(str(tiny_model_dir), name="app")
        first = _ready(provider, "app")
        key = DeploymentDir("app").key()
        assert first.endpoint_url == f"http://127.0.0.1:{port}/v1"
        provider.undeploy("app")
        provider.deploy(str(tiny_model_dir), name="app")
        again = _ready(provider, "app")
        # the app's configuration (base URL and key) still works after the redeploy
        assert again.endpoint_url == first.endpoint_url and DeploymentDir("app").key() == key
        assert _chat(again.endpoint_url, key, "app")[0] == 200
        provider.undeploy("app")
    finally:
        provider.close()
