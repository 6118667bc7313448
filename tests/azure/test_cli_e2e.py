"""``cloudtune`` as a subprocess against ``cloudtune emulate azure`` in another process.

No hooks at all: the CLI process only gets ``HTTPS_PROXY`` and the test CA
(``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``) plus the usual Azure variables, so
``azure-identity`` (client secret through Entra ID), ``azure-ai-ml`` and ``openai`` run
unchanged against the emulated hosts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli_zygote import run_cloudtune
from tests.support.emulators import EmulatorProcess, control
from tests.support.testenv import env_without

ROOT = Path(__file__).resolve().parents[2]
SPEED = 50.0  # emulated seconds per real second


class Emulator(EmulatorProcess):
    """`cloudtune emulate azure`, fast, keeping its state under ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        super().__init__("azure", "--port", "0", "--json", "--speed", str(SPEED), "--job-seconds", "20",
                         "--deploy-seconds", "10", "--delete-seconds", "5", "--state-dir", str(tmp))

    def state(self) -> dict[str, Any]:
        return control(self.url, "/_emulator/state")

    def configure(self, **body: Any) -> None:
        control(self.url, "/_emulator/config", body)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    with Emulator(tmp_path_factory.mktemp("azure-emulator")) as running:
        yield running


class Cli:
    def __init__(self, emulator: Emulator, home: Path, data: Path) -> None:
        self.emulator = emulator
        self.home = home
        self.data = data

    def env(self, **extra: str) -> dict[str, str]:
        env = env_without("AZURE_", "OPENAI_", "CLOUDTUNE_")
        env.update(self.emulator.env)
        env.update({"CLOUDTUNE_HOME": str(self.home), "PYTHONPATH": str(ROOT)}, **extra)
        return env

    def __call__(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return run_cloudtune(list(args), ROOT, self.env(**env), timeout)

    def run_args(self, model: str) -> list[str]:
        args = ["run", "--provider", "azure", "--model", model, "--train", str(self.data), "--json"]
        if not model.startswith("gpt"):
            args += ["--validation-split", "0.2"]  # serverless fine-tuning always gets validation data
        return args


@pytest.fixture
def cli(emulator: Emulator, tmp_path: Path) -> Cli:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(
        '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Q%d?"},'
        '{"role":"assistant","content":"A%d."}]}\n' % (i, i) for i in range(20)))
    return Cli(emulator, tmp_path / "home", data)


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    return json.loads(lines[-1])


def _leftovers(state: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """Everything of this run still on the emulator (uploaded blobs are content-addressed and shared
    across runs, like Azure's LocalUpload folder, so they are not counted)."""
    mine = [run.get("fine_tuned_model") or "", *(run.get("deployments") or []), run.get("training_file_id") or "",
            run.get("validation_file_id") or ""]
    tokens = [m.replace("azureml:", "").split(":")[0] for m in mine if m]
    left = []
    for key in ("files", "fine_tuned_models", "cognitive_deployments", "data_assets", "models", "serverless_endpoints"):
        left += [f"{key}:{item}" for item in state[key] if any(token in item for token in tokens)]
    return left


@pytest.mark.parametrize("model", ["gpt-4o-mini-2024-07-18", "Phi-4-mini-instruct"])
def test_run_to_a_smoke_tested_deployment_then_cleanup_leaves_nothing(cli: Cli, emulator: Emulator, model: str) -> None:
    result = cli(*cli.run_args(model), "--cleanup", "never")
    run = _json(result)
    assert result.returncode == 0, (run, result.stderr[-3000:])
    assert run["state"] == "succeeded" and run["fine_tuned_model"]
    assert run["smoke_test"] and "Ready." in run["smoke_test"]
    assert run["deployments"], run
    state = emulator.state()
    assert state["unknown_routes"] == []
    key = "cognitive_deployments" if model.startswith("gpt") else "serverless_endpoints"
    assert any(run["deployments"][0] in item for item in state[key])
    assert _leftovers(state, run)

    cleaned = cli("cleanup", run["run_id"], "--json")
    assert cleaned.returncode == 0, (cleaned.stdout[-2000:], cleaned.stderr[-3000:])
    assert _leftovers(emulator.state(), run) == []


def test_wrong_region_exits_4_naming_the_regions_and_creates_nothing(cli: Cli, emulator: Emulator) -> None:
    before = emulator.state()
    result = cli(*cli.run_args("Phi-4-mini-instruct"), AZURE_AI_PROJECT="ct-project-weu")
    assert result.returncode == 4, (result.stdout[-2000:], result.stderr[-2000:])
    output = result.stdout + result.stderr
    assert "westeurope" in output and "eastus2" in output
    after = emulator.state()
    for key in ("data_assets", "blobs", "ml_jobs", "models", "serverless_endpoints"):
        assert after[key] == before[key], key


def test_a_retired_phi_3_exits_4_before_upload_naming_both_ways_forward(cli: Cli, emulator: Emulator) -> None:
    before = emulator.state()
    result = cli(*cli.run_args("Phi-3.5-mini-instruct"))
    assert result.returncode == 4, (result.stdout[-2000:], result.stderr[-2000:])
    output = result.stdout + result.stderr
    assert "retired" in output and "2025-08-30" in output
    assert "Phi-4-mini-instruct in eastus2" in output  # the successor, in the project's region
    assert "--provider local --model Phi-3.5-mini-instruct" in output
    after = emulator.state()
    for key in ("data_assets", "blobs", "ml_jobs", "models", "serverless_endpoints"):
        assert after[key] == before[key], key


def test_deployment_quota_hit_exits_4_and_cleans_up(cli: Cli, emulator: Emulator) -> None:
    emulator.configure(rules={"deployment_capacity_quota": 0})
    try:
        result = cli(*cli.run_args("gpt-4o-mini-2024-07-18"), "--cleanup", "on-failure")
    finally:
        emulator.configure(rules={"deployment_capacity_quota": 500})
    run = _json(result)
    assert result.returncode == 4, run
    assert "quota" in json.dumps(run).lower()
    assert _leftovers(emulator.state(), run) == []


def test_delete_model_deployed_outside_cloudtune_is_reported_and_nothing_deleted(cli: Cli, emulator: Emulator) -> None:
    run = _json(cli(*cli.run_args("gpt-4o-mini-2024-07-18"), "--cleanup", "never"))
    model = run["fine_tuned_model"]
    control(emulator.url, "/_emulator/external-deployment", {"account": "ct-aoai", "name": "team-prod", "model": model})

    refused = cli("delete-model", model, "--provider", "azure", "--json")
    assert refused.returncode != 0
    assert "team-prod" in refused.stdout + refused.stderr
    state = emulator.state()
    assert model in state["fine_tuned_models"]
    assert "ct-aoai/team-prod" in state["cognitive_deployments"]
    assert any(run["deployments"][0] in d for d in state["cognitive_deployments"])  # nothing was deleted

    # the service's own refusal never surfaces: cleanup of the run's deployment first, then the
    # external one is removed by its owner, and delete-model goes through
    assert cli("undeploy", run["run_id"], "--json").returncode == 0
    blocked = cli("delete-model", model, "--provider", "azure", "--json")
    assert blocked.returncode != 0 and "team-prod" in blocked.stdout + blocked.stderr
    done = cli("delete-model", model, "--provider", "azure", "--include-unmanaged", "--json")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert model not in emulator.state()["fine_tuned_models"]
    assert cli("cleanup", run["run_id"], "--json").returncode == 0


def test_sigterm_while_the_endpoint_is_created_then_resume_and_cleanup(cli: Cli, emulator: Emulator) -> None:
    emulator.configure(timeline={"deploy_s": 100000.0})  # the endpoint stays "Creating" until we say
    try:
        process = subprocess.Popen([sys.executable, "-m", "cloudtune", *cli.run_args("Phi-4-mini-instruct")],
                                   cwd=ROOT, env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not emulator.state()["serverless_endpoints"]:
            assert process.poll() is None, process.communicate()
            time.sleep(0.3)
        assert emulator.state()["serverless_endpoints"], "the run never started creating its endpoint"
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, (out[-2000:], err[-2000:])
    finally:
        emulator.configure(timeline={"deploy_s": 10.0})
    run = _json(subprocess.CompletedProcess([], 130, out, err))

    resumed = cli("resume", run["run_id"], "--json")
    resumed_run = _json(resumed)
    assert resumed.returncode == 0, (resumed_run, resumed.stderr[-3000:])
    assert resumed_run["smoke_test"] and resumed_run["job_id"] == run["job_id"]
    assert len([j for j in emulator.state()["ml_jobs"] if run["job_id"] in j]) == 1

    cleaned = cli("cleanup", run["run_id"], "--json")
    assert cleaned.returncode == 0, (cleaned.stdout[-2000:], cleaned.stderr[-3000:])
    assert _leftovers(emulator.state(), resumed_run) == []


def test_run_prints_training_type_sku_reason_and_lifetimes_then_a_checkpoint_deploys(cli: Cli, emulator: Emulator) -> None:
    import re

    result = cli("run", "--provider", "azure", "--model", "gpt-4.1-mini", "--train", str(cli.data), "--cleanup", "never")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "resolved to gpt-4.1-mini-2025-04-14" in output
    assert "training type GlobalStandard in swedencentral" in output
    assert "ESTIMATE" in output and "price as of" in output
    assert "Deployment SKU Standard" in output and "$1.70/hour" in output
    assert "24 hours" in output and "15 days" in output
    run_id = re.search(r"\[(\d{8}-\d{6}-[0-9a-f]+)\]", output).group(1)
    status = _json(cli("status", run_id, "--json"))
    checkpoints = [c["id"] for c in status.get("checkpoints") or []]
    assert checkpoints and all(c.startswith("ftchkpt-") for c in checkpoints), status
    deployed = cli("deploy", run_id, "--checkpoint", checkpoints[0], "--name", f"ckpt-{run_id[-6:]}", "--json")
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    state = emulator.state()
    assert any(f"ckpt-{run_id[-6:]}" in item for item in state["cognitive_deployments"])
    cleaned = cli("cleanup", run_id, "--json")
    assert cleaned.returncode == 0, (cleaned.stdout[-2000:], cleaned.stderr[-3000:])
