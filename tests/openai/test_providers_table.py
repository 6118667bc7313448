"""``cloudtune providers`` prints, per provider, a readable table of fine-tunable models with their
dates (issue 10): when job creation ends, when models stop serving, retirements."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from tests.support.testenv import env_without
from tests.support.cli_zygote import run_cloudtune

ROOT = Path(__file__).resolve().parents[2]


def _providers(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = env_without("AZURE_", "OPENAI_", "CLOUDTUNE_")
    env.update(CLOUDTUNE_HOME=str(tmp_path), PYTHONPATH=str(ROOT), CLOUDTUNE_TODAY="2026-11-25")
    return run_cloudtune(["providers", *extra], ROOT, env, 120)


def test_the_table_is_readable_and_dated(tmp_path: Path) -> None:
    result = _providers(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not any("{'" in line or "['" in line for line in lines), "Python reprs in the table"
    def row(model: str, route: str | None = None) -> str:
        return next(line for line in lines if line.strip().startswith(model + " ")
                    and (route is None or line.split()[1] == route))
    assert "shut down 2026-10-23" in row("gpt-4.1-nano-2025-04-14", "openai") and "shut down" in row("gpt-3.5-turbo-0125")
    assert "job creation ends 2027-01-06" in row("gpt-4o-mini-2024-07-18", "openai")
    assert "stop serving 2027-01-14" in row("gpt-4o-mini-2024-07-18", "openai")
    assert "retired 2025-08-30" in row("phi-3*") and "Phi-4-mini-instruct" in row("phi-3*")
    assert "not fine-tunable" in row("Phi-4-reasoning")
    assert "westus3" in row("Llama-3.3-70B-Instruct", "serverless")
    azure = row("gpt-4.1-mini-2025-04-14", "azure-openai")
    assert "24 h" in azure and "15 days" in azure and "northcentralus, swedencentral" in azure
    assert "stop serving 2027-10-14" in azure  # issue 19: Azure fine-tunes stop with their base
    assert "Standard deployments in eastus2, swedencentral" in row("gpt-4o-2024-08-06", "azure-openai")
    assert "RFT" in row("o4-mini-2025-04-16", "azure-openai") and "Foundry" in row("gpt-oss-20b", "azure-openai")
    assert any(line.strip().startswith("source: https://platform.openai.com/docs/deprecations") for line in lines)


def test_json_carries_the_same_rows(tmp_path: Path) -> None:
    result = _providers(tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["provider"]: row for row in json.loads(result.stdout)["providers"]}
    nano = next(m for m in rows["openai"]["fine_tunable_models"] if m["model"] == "gpt-4.1-nano-2025-04-14")
    assert nano["status"] == "shut down" and nano["instead"] == "--provider azure"
    retired = [m for m in rows["azure"]["fine_tunable_models"] if m["status"] == "retired"]
    assert {m["dates"] for m in retired} == {"retired 2025-08-30", "retired 2025-06-30", "retired 2026-01-30",
                                             "retired 2026-06-13"}
