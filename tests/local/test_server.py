"""The local OpenAI-compatible server: bearer auth, the official openai SDK against it,
the key kept out of every output, base-model deployments, undeploy stops the process."""

from __future__ import annotations

import json
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloudtune import errors, poller
from cloudtune.types import DeploymentState


def _deploy_ready(provider, model: str, name: str):  # type: ignore[no-untyped-def]
    provider.deploy(model, name=name)
    return poller.wait_for_deployment(provider, name, target="ready", timeout_s=120, sleep=time.sleep, clock=time.monotonic)


def _get(url: str, key: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_base_model_deployment_auth_sdk_and_undeploy(provider, local_home: Path, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from local_backend.deployments import DeploymentDir
    from local_backend.procs import pid_alive

    deployment = _deploy_ready(provider, str(tiny_model_dir), "base-tiny")
    assert deployment.state == DeploymentState.READY and deployment.model == str(tiny_model_dir)
    url = deployment.endpoint_url
    assert url.startswith("http://127.0.0.1:")
    key_file = DeploymentDir("base-tiny").path / "key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()

    assert _get(url.replace("/v1", "/health"))[0] == 200
    assert _get(f"{url}/models")[0] == 401
    status, body = _get(f"{url}/models", key="wrong-key")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = _get(f"{url}/models", key=key)
    assert status == 200 and [m["id"] for m in body["data"]] == ["base-tiny"]

    import openai

    client = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
    completion = client.chat.completions.create(
        model="base-tiny", messages=[{"role": "user", "content": "Question number 3?"}], max_tokens=8, temperature=0
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 8
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])

    via_provider = provider.chat("base-tiny", [{"role": "user", "content": "Question number 3?"}], max_tokens=8, temperature=0)
    assert via_provider.content == completion.choices[0].message.content
    everything = json.dumps([provider.get_deployment("base-tiny").model_dump(mode="json"), via_provider.model_dump(mode="json")])
    log = (DeploymentDir("base-tiny").group().path / "server.log").read_text()
    assert key not in everything and key not in log

    # deploy/run print how to call it: the base URL and a command that prints the key
    import io
    import shlex
    import subprocess

    from cloudtune.output import PlainReporter

    printed = io.StringIO()
    PlainReporter(printed).deployment(type("R", (), {"run_id": "run-x"})(), provider.get_deployment("base-tiny"))
    line = printed.getvalue()
    assert f"deployment base-tiny: ready at {url} (key: `" in line and key not in line
    key_command = provider.get_deployment("base-tiny").details["key_command"]
    assert line.rstrip().endswith(f"`{key_command}`)")
    assert subprocess.run(shlex.split(key_command), capture_output=True, text=True, check=True).stdout.strip() == key

    pid = provider.get_deployment("base-tiny").details["pid"]
    provider.undeploy("base-tiny")
    assert not pid_alive(pid)
    with pytest.raises(errors.NotFound):
        provider.get_deployment("base-tiny")
    assert not key_file.exists()


def test_deploy_rejects_bad_names_and_unknown_models(provider, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(errors.InvalidInput):
        provider.deploy(str(tiny_model_dir), name="../escape")
    with pytest.raises(errors.NotFound):
        provider.deploy("local:ftjob-local-000000000000", name="ghost")
    with pytest.raises(errors.InvalidInput):
        provider.deploy("/no/such/model.gguf", name="ghost")
