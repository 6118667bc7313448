"""The OpenAI samples cannot rot: the config parses into a valid spec, and the GitHub Actions
workflow's dry-run path is executed step by step (its own shell scripts, with GitHub's
``GITHUB_ENV`` / ``GITHUB_OUTPUT`` files and ``if:`` conditions emulated) against a real
``cloudtune emulate openai`` - the one the workflow itself starts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.testenv import env_without

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "samples" / "ci" / "github-actions.yml"
CONFIG = ROOT / "samples" / "openai.yaml"


def test_sample_config_is_a_complete_valid_spec() -> None:
    from cloudtune.config import load_yaml
    from cloudtune.types import FineTuneSpec

    data = load_yaml(CONFIG)
    spec = FineTuneSpec.model_validate(data)
    assert spec.provider == "openai" and spec.base_model == "gpt-4o-mini-2024-07-18"
    assert spec.training_file.is_file() and spec.eval_file and spec.eval_file.is_file()
    assert spec.hyperparameters.epochs == 3 and spec.validation_split == 0.1 and spec.timeout_s == 3 * 3600
    assert not any("key" in k.lower() and "threshold" not in k for k in spec.provider_options)  # no secrets in it


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Runner:
    """Just enough of a GitHub Actions runner for this workflow's ``run:`` steps."""

    def __init__(self, workdir: Path, event: str) -> None:
        self.workdir = workdir
        self.event = event
        self.env_file = workdir / ".github_env"
        self.env_file.touch()
        self.outputs: dict[str, dict[str, str]] = {}
        self.env: dict[str, str] = {}

    def expression(self, text: str) -> str:
        def value(match: re.Match[str]) -> str:
            expr = match.group(1).strip()
            if expr == "github.workspace":
                return str(self.workdir)
            if expr == "github.event_name != 'workflow_dispatch'":
                return "true" if self.event != "workflow_dispatch" else "false"
            if expr == "github.event_name == 'workflow_dispatch' && secrets.OPENAI_API_KEY || 'dry-run-key'":
                return "real-key-from-secrets" if self.event == "workflow_dispatch" else "dry-run-key"
            if re.fullmatch(r"github\.event_name == 'workflow_dispatch' && secrets\.\w+ \|\| ''", expr):
                return "shared-state-secret" if self.event == "workflow_dispatch" else ""  # CLOUDTUNE_STATE
            if re.fullmatch(r"inputs\.\w+\s*\|\|\s*'[^']*'", expr):  # no inputs on push: the default
                return expr.split("||", 1)[1].strip().strip("'")
            found = re.fullmatch(r"steps\.(\w+)\.outputs\.(\w+)", expr)
            if found:
                return self.outputs.get(found.group(1), {}).get(found.group(2), "")
            raise AssertionError(f"expression not emulated: {expr}")

        return re.sub(r"\$\{\{(.*?)\}\}", value, text)

    def condition(self, text: str | None) -> bool:
        if text is None:
            return True
        expr = text.replace("always()", "True").replace("&&", " and ")
        expr = re.sub(r"env\.(\w+)", lambda m: repr(self.env.get(m.group(1), "")), expr)
        expr = re.sub(r"steps\.(\w+)\.outputs\.(\w+)",
                      lambda m: repr(self.outputs.get(m.group(1), {}).get(m.group(2), "")), expr)
        assert re.fullmatch(r"[\w\s'=!()-.]*", expr), expr
        return bool(eval(expr, {"__builtins__": {}}, {"True": True}))  # noqa: S307 - our own tiny expressions

    def run_step(self, step: dict[str, Any], base_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        output_file = self.workdir / f".github_output_{step.get('id', 'x')}"
        output_file.write_text("")
        env = {**base_env, **self.env, "GITHUB_ENV": str(self.env_file), "GITHUB_OUTPUT": str(output_file)}
        script = self.expression(step["run"])
        result = subprocess.run(["bash", "-e", "-c", script], cwd=self.workdir, env=env, capture_output=True,
                                text=True, timeout=240)
        for line in self.env_file.read_text().splitlines():
            key, _, value = line.partition("=")
            self.env[key] = value
        if "id" in step:
            self.outputs[step["id"]] = dict(
                line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line)
        return result


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A repository checkout as the workflow sees it, with ``cloudtune`` on PATH."""
    shutil.copytree(ROOT / "samples", tmp_path / "samples")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "cloudtune"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cloudtune "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    (bin_dir / "python").symlink_to(sys.executable)
    return tmp_path


def test_the_workflow_dry_run_path_runs_the_whole_pipeline(workspace: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert set(workflow[True] if True in workflow else workflow["on"]) >= {"push", "workflow_dispatch"}
    job = workflow["jobs"]["fine-tune"]
    port = str(_free_port())
    runner = Runner(workspace, event="push")
    base_env = env_without("CLOUDTUNE_", "OPENAI_")
    base_env.update(PATH=f"{workspace / 'bin'}:{base_env.get('PATH', '')}", PYTHONPATH=str(ROOT),
                    EMULATED_JOB_SECONDS="2", CLOUDTUNE_POLL_INTERVAL="0.2", CLOUDTUNE_POLL_MAX="0.5", CI="1")
    runner.env.update({key: runner.expression(str(value)) for key, value in job["env"].items()})
    ran: list[str] = []
    outputs: dict[str, str] = {}
    try:
        for step in job["steps"]:
            if "run" not in step or "pip install" in step["run"] or not runner.condition(step.get("if")):
                continue
            step = {**step, "run": step["run"].replace("8089", port)}
            result = runner.run_step(step, base_env)
            assert result.returncode == 0, (step["name"], result.stdout, result.stderr)
            ran.append(step["name"])
            outputs[step["name"]] = result.stdout
    finally:
        pid_file = workspace / "emulator.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
    assert ran == ["Validate the training data", "Start the OpenAI emulator (dry run)", "Preflight",
                   "Fine-tune, deploy, smoke-test, evaluate", "Report",
                   "Clean up (not while the job still runs, a later resume needs its files)"]
    run = json.loads((workspace / "run.json").read_text())
    assert run["status"] == "succeeded" and run["smoke_test"] and run["evaluation"]
    cleaned = json.loads(outputs[ran[-1]].strip().splitlines()[-1])
    deleted = cleaned["runs"][0]["deleted"]
    assert [item.split(":", 1)[0] for item in deleted] == ["deployment", "model", "file", "file"]
    providers = json.loads((workspace / "providers.json").read_text())
    openai_row = next(p for p in providers["providers"] if p["provider"] == "openai")
    assert openai_row["ok"] is True
    assert runner.env["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/v1"
    assert runner.env["OPENAI_API_KEY"] == "dry-run-key"
    # the dry run's state is a throwaway SQLite file; no ledger cache travels between workflows
    assert runner.env["CLOUDTUNE_STATE"] == "" and "actions/cache" not in WORKFLOW.read_text()
