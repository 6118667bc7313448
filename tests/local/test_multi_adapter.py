"""One base, many adapters: deployments of one base model share one server process that holds
the base once; each deployment adds its adapter's weights only; undeploying one leaves the
others serving and the process ends with its last deployment; concurrent deploys from
separate CLI processes end with one server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloudtune import poller
from cloudtune.types import FineTuneSpec, JobState
from tests.local.conftest import TARGET_ANSWER, fast_hyperparameters

QUESTION = [{"role": "user", "content": "Question number 5?"}]
REPO = Path(__file__).resolve().parents[2]


def _ready(provider, name: str):  # type: ignore[no-untyped-def]
    return poller.wait_for_deployment(provider, name, target="ready", timeout_s=120, sleep=time.sleep, clock=time.monotonic)


def _models(url: str, key: str) -> dict:
    request = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _answer(provider, name: str) -> str:  # type: ignore[no-untyped-def]
    return provider.chat(name, QUESTION, max_tokens=12, temperature=0).content


def test_three_adapters_and_the_base_share_one_process(provider, local_home: Path, tiny_model_dir: Path, training_file: Path) -> None:  # type: ignore[no-untyped-def]
    from local_backend.deployments import DeploymentDir, servers_dir
    from local_backend.procs import pid_alive

    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=training_file,
                        hyperparameters=fast_hyperparameters(epochs=10))
    job = provider.create_job(spec, training_file_id=provider.upload_file(training_file), validation_file_id=None, run_id="run-multi")
    model = poller.wait_for_job(provider, job.id, timeout_s=300, sleep=time.sleep, clock=time.monotonic).fine_tuned_model
    assert model and provider.get_job(job.id).state == JobState.SUCCEEDED

    provider.deploy(str(tiny_model_dir), name="base")
    provider.deploy(model, name="ft-a", run_id="run-multi")
    one = _ready(provider, "ft-a")
    _ready(provider, "base")
    memory_one = one.details["memory"]
    adapter_size = memory_one["adapter_bytes"][next(iter(memory_one["adapter_bytes"]))]
    assert 0 < adapter_size < memory_one["base_bytes"] / 4  # r=8 on every linear layer of a 64-wide model: ~13%

    provider.deploy(model, name="ft-b")
    provider.deploy(model, name="ft-c")
    deployments = [_ready(provider, n) for n in ("base", "ft-a", "ft-b", "ft-c")]
    assert len({d.details["pid"] for d in deployments}) == 1 and len({d.endpoint_url for d in deployments}) == 1
    assert len(list(servers_dir().iterdir())) == 1
    memory_three = provider.get_deployment("ft-c").details["memory"]
    # The base is held once: two more deployments add two adapters' weights, nothing of the base.
    assert memory_three["base_bytes"] == memory_one["base_bytes"]
    assert memory_three["weights_bytes"] - memory_one["weights_bytes"] == 2 * adapter_size
    assert memory_three["weights_bytes"] == memory_three["base_bytes"] + 3 * adapter_size
    if "run_id" in type(deployments[1]).model_fields:
        assert deployments[1].run_id == "run-multi"

    url, key = deployments[0].endpoint_url, DeploymentDir("ft-a").key()
    assert sorted(m["id"] for m in _models(url, key)["data"]) == ["base", "ft-a", "ft-b", "ft-c"]
    assert all(_answer(provider, n) == TARGET_ANSWER for n in ("ft-a", "ft-b", "ft-c"))
    assert _answer(provider, "base") != TARGET_ANSWER  # the base is served without any adapter

    pid = deployments[0].details["pid"]
    provider.undeploy("ft-a")
    # each deployment has its own key: ft-a's is revoked with it, the others' keys still work
    with pytest.raises(urllib.error.HTTPError) as revoked:
        _models(url, key)
    assert revoked.value.code == 401
    listed = _models(url, DeploymentDir("ft-b").key())
    assert sorted(m["id"] for m in listed["data"]) == ["base", "ft-b", "ft-c"]
    assert listed["memory"]["weights_bytes"] == memory_three["weights_bytes"] - adapter_size
    assert _answer(provider, "ft-b") == TARGET_ANSWER and pid_alive(pid)

    for name in ("base", "ft-b", "ft-c"):
        provider.undeploy(name)
    assert not pid_alive(pid) and not list(servers_dir().iterdir())


def _deploy_in_another_process(model: str, name: str) -> subprocess.Popen:
    code = f"from providers.local import LocalProvider; LocalProvider({{}}).deploy({model!r}, name={name!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO)


def test_concurrent_deploys_from_separate_processes_start_one_server(provider, local_home: Path, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from local_backend.procs import pid_alive

    launched = [_deploy_in_another_process(str(tiny_model_dir), name) for name in ("p1", "p2", "p3")]
    assert [p.wait(timeout=120) for p in launched] == [0, 0, 0]
    ready = [_ready(provider, name) for name in ("p1", "p2", "p3")]
    assert len({d.details["pid"] for d in ready}) == 1
    pid = ready[0].details["pid"]
    undeploys = [
        subprocess.Popen([sys.executable, "-c", f"from providers.local import LocalProvider; LocalProvider({{}}).undeploy({n!r})"], cwd=REPO)
        for n in ("p1", "p2", "p3")
    ]
    assert [p.wait(timeout=120) for p in undeploys] == [0, 0, 0]
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid) and provider.list_deployments() == []
