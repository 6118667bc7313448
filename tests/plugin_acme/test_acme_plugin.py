"""A provider that lives only here (``tests/plugin_acme``), registered through the
``cloudtune.providers`` entry point as a plugin author would ship it, runs every command and the
contract suite with no edit under ``cloudtune/``: the core asks the provider for its facts.

The plugin is registered without installing anything: a dist-info carrying the entry points of
``tests/plugin_acme/pyproject.toml`` is written to a temporary directory on ``PYTHONPATH`` (the
interpreter finds entry points of every distribution on ``sys.path``)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cloudtune.testing import ContractEnv, ProviderContract
from cloudtune.types import FineTuneSpec
from tests.support.testenv import env_without

PLUGIN = Path(__file__).resolve().parent
ROOT = PLUGIN.parents[1]


def register_plugin(into: Path) -> Path:
    """Write the plugin's dist-info (its entry points, read from its pyproject.toml) under ``into``."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    dist = into / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items())
        for group, entries in groups.items()))
    return into


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


class Acme:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.site = register_plugin(tmp / "site")
        rows = [chat(f"What is {n} plus {n}?", str(2 * n)) for n in range(12)]
        (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = env_without("CLOUDTUNE_")
        env.update(CLOUDTUNE_HOME=str(self.tmp / "home"), CLOUDTUNE_POLL_INTERVAL="0.01", CLOUDTUNE_POLL_MAX="0.05",
                   PYTHONPATH=f"{self.site}:{PLUGIN}:{ROOT}", CI="1")
        return subprocess.run([sys.executable, "-m", "cloudtune", *args], cwd=self.tmp, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def service(self) -> dict[str, Any]:
        path = self.tmp / "home" / "acme-service.json"
        return json.loads(path.read_text()) if path.exists() else {"files": {}, "jobs": {}, "models": [],
                                                                     "deployments": {}, "calls": []}


def last_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> Acme:
    return Acme(tmp_path_factory.mktemp("acme"))


def test_the_plugin_is_listed_with_the_models_it_declares(acme: Acme) -> None:
    done = acme("providers", "acme", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "acme-small-2026-01" in done.stdout and "acme-large-2026-01" in done.stdout


def test_validate_uses_the_plugins_data_rules(acme: Acme) -> None:
    ok = acme("validate", "train.jsonl", "--provider", "acme", "--model", "acme-small", "--json")
    assert ok.returncode == 0, ok.stdout[-2000:]
    report = json.loads(ok.stdout)
    assert report["estimate"]["cost_usd"] is not None  # priced from the plugin's own model table
    (acme.tmp / "one.jsonl").write_text(json.dumps(chat("hi", "hello")) + "\n")
    few = acme("validate", "one.jsonl", "--provider", "acme", "--model", "acme-small")
    assert few.returncode == 2 and "2" in few.stdout  # acme declares at least 2 examples
    (acme.tmp / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + (acme.tmp / "train.jsonl").read_bytes())
    bom = acme("validate", "bom.jsonl", "--provider", "acme", "--model", "acme-small")
    assert bom.returncode == 0 and "byte-order mark" in bom.stdout  # acme refuses a BOM: the copy drops it


def test_options_and_budget_are_refused_before_anything_is_uploaded(acme: Acme) -> None:
    unknown = acme("run", "--provider", "acme", "--model", "acme-small", "--train", "train.jsonl", "-o", "regoin=eu-1")
    assert unknown.returncode == 2 and "region" in unknown.stderr
    bad = acme("run", "--provider", "acme", "--model", "acme-small", "--train", "train.jsonl", "-o", "region=mars")
    assert bad.returncode == 2 and "region" in bad.stderr
    over = acme("run", "--provider", "acme", "--model", "acme-large", "--train", "train.jsonl", "--max-cost", "0.0001")
    assert over.returncode == 4, over.stderr[-2000:]
    assert "max-cost" in over.stderr and "Nothing was uploaded" in over.stderr
    refused = acme("run", "--provider", "acme", "--model", "acme-huge", "--train", "train.jsonl")
    assert refused.returncode == 4 and "acme does not fine-tune acme-huge" in refused.stderr  # the plugin's plan()
    assert acme.service()["files"] == {}


def test_run_status_deploy_compare_cleanup(acme: Acme) -> None:
    done = acme("run", "--provider", "acme", "--model", "acme-small", "--train", "train.jsonl", "--max-cost", "1",
                "-o", "region=us-1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    run = last_json(done)
    assert run["state"] == "succeeded" and run["deployment"]

    status = acme("status", run["run_id"], "--json")
    assert status.returncode == 0 and last_json(status)["state"] == "succeeded"

    deployed = acme("deploy", run["run_id"], "--name", "acme-second", "--json")
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    assert set(acme.service()["deployments"]) == {run["deployment"], "acme-second"}

    compared = acme("compare", run["run_id"], "--eval", "eval.jsonl", "--json")
    assert compared.returncode == 0, compared.stderr[-3000:]
    target = last_json(compared)["targets"][0]
    assert target["answered"] == 4 and target["failed_requests"] == 0

    cleaned = acme("cleanup", run["run_id"], "--json")
    assert cleaned.returncode == 0, cleaned.stderr[-2000:]
    service = acme.service()
    assert service["deployments"] == {} and service["models"] == [] and service["files"] == {}


def test_nothing_under_cloudtune_names_the_plugin() -> None:
    import re

    naming = re.compile(r"""cloudtune_acme|["']acme["']|AcmeProvider""")
    named = [str(path) for path in (ROOT / "cloudtune").rglob("*.py") if naming.search(path.read_text())]
    assert named == []


@pytest.fixture
def contract_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ContractEnv:
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.setenv("ACME_STATE", str(tmp_path / "acme-service.json"))
    from cloudtune_acme import AcmeProvider

    training = tmp_path / "train.jsonl"
    training.write_text("".join(json.dumps(chat(f"q{n}", f"a{n}")) + "\n" for n in range(2)))
    provider = AcmeProvider({}, sleep=lambda s: None)
    return ContractEnv(
        provider=provider,
        base_model="acme-small",
        training_file=training,
        make_spec=lambda **kw: FineTuneSpec(provider="acme", base_model="acme-small", training_file=training, **kw),
        wait_timeout_s=60,
        sleep=lambda s: None,
        clock=iter(range(10**6)).__next__,
        force_status=provider.force,
        model_exists=provider.model_exists,
        refuses_delete_while_deployed=True,
    )


class TestAcmeContract(ProviderContract):
    pass
