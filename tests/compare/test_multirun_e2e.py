"""One spec on several providers, end to end: `cloudtune run CONFIG` with `providers: [...]` and a
per-provider model map trains a real tiny model locally and fine-tunes on the OpenAI and Azure
emulators (separate processes, real SDKs over HTTP), then compares the three runs; a target
that errors on some examples, a provider that refuses the spec, and `run --like`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli_zygote import run_cloudtune
from tests.azure.test_cli_e2e import Emulator as AzureEmulator
from tests.compare.conftest import OPENAI_EMULATOR_ARGS, OpenAISession, last_json, write_jsonl
from tests.local.conftest import chat_example, stop_recorded_processes
from tests.support.emulators import EmulatorProcess
from tests.support.testenv import env_without


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("multirun")
    with EmulatorProcess("openai", *OPENAI_EMULATOR_ARGS, cwd=tmp) as openai, \
            AzureEmulator(tmp_path_factory.mktemp("azure-state")) as azure:
        yield {"openai": OpenAISession(tmp, openai.url), "azure": azure, "tmp": tmp}


def _cli(hosts: dict[str, Any], home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = hosts["openai"].env(CLOUDTUNE_HOME=str(home), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env = env_without("AZURE_", source=env)
    env.update(hosts["azure"].env)
    return run_cloudtune(list(args), hosts["tmp"], env, timeout)


@pytest.fixture(scope="module")
def data(hosts: dict[str, Any]) -> dict[str, Path]:
    from local_backend.tiny import build_tiny_model

    tmp: Path = hosts["tmp"]
    model = build_tiny_model(tmp / "tiny", [json.dumps(chat_example(i)) for i in range(20)])
    write_jsonl(tmp / "train.jsonl", [chat_example(i) for i in range(12)])
    # six held-out questions: the first three are in the training data
    write_jsonl(tmp / "eval.jsonl", [chat_example(i) for i in range(9, 15)])
    return {"model": model, "train": tmp / "train.jsonl", "eval": tmp / "eval.jsonl"}


def test_three_providers_from_one_spec_then_one_comparison(hosts: dict[str, Any], data: dict[str, Path],
                                                           tmp_path: Path) -> None:
    config = tmp_path / "multi.yaml"
    config.write_text(
        "providers: [local, openai, azure]\n"
        f"model:\n  local: {data['model']}\n  openai: gpt-4o-mini\n  azure: gpt-4o-mini-2024-07-18\n"
        f"train: {data['train']}\neval: {data['eval']}\n"
        "hyperparameters: {epochs: 2, batch_size: 4}\nseed: 5\ncleanup: never\n")
    # the openai run's smoke test and evaluation (1 + 6 requests) go through, the next two are
    # refused: the comparison reuses the fine-tune's answers from the run's evaluation (the
    # answer cache), so those two are the openai base model's first two questions
    hosts["openai"].control("/_emulator/faults", [{"route": "POST /v1/chat/completions$", "status": 400,
                                                   "skip": 7, "times": 2, "message": "injected failure"}])
    home = tmp_path / "home"
    try:
        done = _cli(hosts, home, "run", str(config), "--baseline", "base", "--report", str(tmp_path / "report"),
                    "--json")
    finally:
        stop_recorded_processes(home)
    assert done.returncode == 0, done.stderr[-4000:]
    doc = last_json(done)
    runs = {r["provider"]: r for r in doc["runs"]}
    assert set(runs) == {"local", "openai", "azure"} and all(r["status"] == "succeeded" for r in runs.values())
    assert len({r["run_id"] for r in runs.values()}) == 3  # each its own run and ledger record
    listed = _cli(hosts, home, "list", "--json")
    recorded = {r["run_id"]: r for r in json.loads(listed.stdout)["runs"]}
    assert {recorded[r["run_id"]]["provider"] for r in runs.values()} == {"local", "openai", "azure"}

    comparison = doc["comparison"]
    targets = {t["label"]: t for t in comparison["targets"]}
    assert set(targets) == {f"{p} {kind}" for p in ("local", "openai", "azure") for kind in ("fine-tuned", "base")}
    assert (targets["openai base"]["answered"], targets["openai base"]["failed_requests"]) == (4, 2)
    assert [f["target"] for f in comparison["failures"]] == ["openai base"] * 2
    assert targets["local fine-tuned"]["failed_requests"] == 0 and targets["azure fine-tuned"]["answered"] == 6
    # every fine-tune's answers came from its run's evaluation, none was asked twice
    assert all(targets[f"{p} fine-tuned"]["cached_answers"] == 6 for p in ("local", "openai", "azure"))
    assert all(targets[f"{p} base"]["cached_answers"] == 0 for p in ("local", "openai", "azure"))
    # each base model answered through its own provider's chat, like the fine-tunes
    assert all(targets[f"{p} base"]["answered"] == 6 for p in ("local", "azure"))
    assert targets["local fine-tuned"]["inference_cost_usd"] is None  # your hardware
    assert targets["azure fine-tuned"]["inference_cost_usd"] > 0
    # every fine-tune is measured against its own base model, with intervals
    assert set(comparison["differences"]) == {"local fine-tuned", "openai fine-tuned", "azure fine-tuned"}
    assert {d["examples"] for d in comparison["differences"]["openai fine-tuned"]} == {4}
    assert comparison["verdict"]["ranking"] and len(comparison["verdict"]["lines"]) == 4
    learned = {d["metric"]: d for d in comparison["differences"]["azure fine-tuned"]}["token_f1"]
    assert learned["low"] <= learned["difference"] <= learned["high"]
    facts = {f["provider"]: f for f in comparison["runs"]}
    for provider in ("local", "openai", "azure"):
        assert facts[provider]["trained_tokens"] and facts[provider]["final_train_loss"] is not None, facts[provider]
        assert facts[provider]["train_curve"], provider
    assert facts["openai"]["training_cost_usd"] > 0 and facts["local"]["training_cost_usd"] is None
    # the base deployments made for the comparison are removed again
    deadline = time.monotonic() + 20
    while any("ct-base-" in d for d in hosts["azure"].state()["cognitive_deployments"]):
        assert time.monotonic() < deadline, hosts["azure"].state()["cognitive_deployments"]
        time.sleep(0.2)
    report = Path(comparison["report_files"]["report.html"])
    assert report.is_file() and (report.parent / "loss_curves.png").stat().st_size > 10_000


def test_a_provider_that_refuses_is_reported_and_the_others_go_on(hosts: dict[str, Any], data: dict[str, Path],
                                                                  tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "refused.yaml"
    config.write_text("providers: [azure, openai]\nmodel: {azure: gpt-imaginary-1, openai: gpt-4o-mini}\n"
                      f"train: {data['train']}\neval: {data['eval']}\n")
    home = tmp_path / "home"
    done = _cli(hosts, home, "run", str(config), "--json")
    assert done.returncode not in (0, None), done.stderr[-3000:]
    doc = last_json(done)
    runs = {r["provider"]: r for r in doc["runs"]}
    assert runs["openai"]["status"] == "succeeded" and runs["openai"]["exit_code"] == 0
    assert runs["azure"]["status"] != "succeeded" and "gpt-imaginary-1" in runs["azure"]["error"], runs["azure"]
    assert doc["exit_code"] == runs["azure"]["exit_code"] == done.returncode
    assert [t["label"] for t in doc["comparison"]["targets"]] == ["openai fine-tuned"]

    # the recorded openai run's spec, repeated on azure with a model azure offers
    like = _cli(hosts, home, "run", "--like", runs["openai"]["run_id"], "--provider", "azure", "--model",
                "gpt-4o-mini-2024-07-18", "--no-deploy", "--json")
    assert like.returncode == 0, like.stderr[-3000:]
    (moved,) = last_json(like)["runs"]
    assert moved["provider"] == "azure" and moved["status"] == "succeeded"
    from cloudtune.ledger import Ledger

    monkeypatch.setenv("CLOUDTUNE_HOME", str(home))
    ledger = Ledger()
    shown, original = ledger.get_run(moved["run_id"]), ledger.get_run(runs["openai"]["run_id"])
    assert shown.provider == "azure" and shown.run_id != original.run_id
    assert (shown.spec.training_file, shown.spec.eval_file) == (original.spec.training_file, original.spec.eval_file)
    assert shown.spec.hyperparameters == original.spec.hyperparameters
    assert shown.spec.base_model == "gpt-4o-mini-2024-07-18"


def test_model_map_without_this_provider_is_exit_2(hosts: dict[str, Any], data: dict[str, Path],
                                                   tmp_path: Path) -> None:
    config = tmp_path / "map.yaml"
    config.write_text(f"model: {{openai: gpt-4o-mini}}\ntrain: {data['train']}\n")
    done = _cli(hosts, tmp_path / "home", "run", str(config), "--provider", "local")
    assert done.returncode == 2 and "no model for provider local" in done.stderr


def test_on_a_terminal_the_runs_are_one_live_table_a_row_per_provider(hosts: dict[str, Any], data: dict[str, Path],
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import pty
    import re
    import select

    config = tmp_path / "two.yaml"
    config.write_text(f"providers: [azure, openai]\nmodel: {{azure: gpt-4o-mini-2024-07-18, openai: gpt-4o-mini}}\n"
                      f"train: {data['train']}\n")
    env = hosts["openai"].env(CLOUDTUNE_HOME=str(tmp_path / "home"), COLUMNS="200", TERM="xterm")
    env = {k: v for k, v in env.items() if not k.startswith("AZURE_") and k not in ("CI", "CLOUDTUNE_PLAIN")}
    env.update(hosts["azure"].env)
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "cloudtune", "run", str(config), "--no-deploy"], cwd=hosts["tmp"],
                               env=env, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if select.select([controller], [], [], 1.0)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.wait(timeout=30) == 0, screen[-3000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))

    from cloudtune.ledger import Ledger

    monkeypatch.setenv("CLOUDTUNE_HOME", str(tmp_path / "home"))
    runs = {run.provider: run for run in Ledger().list_runs()}
    assert sorted(runs) == ["azure", "openai"]
    # The last drawing of the table: a header, then one row per provider with its run id,
    # its outcome and its progress (steps done out of the total the job reported).
    header = max(i for i, line in enumerate(text.splitlines()) if "provider" in line and "train loss" in line)
    rows = text.splitlines()[header + 1:]
    for provider, run in runs.items():
        row = next(line for line in rows if f" {provider} " in line and run.run_id in line)
        assert "succeeded" in row, row
        assert re.search(r"\b(\d+)/\1\b", row), row  # step N/N
    assert not any(line.lstrip().startswith('{"type"') for line in text.splitlines())  # the feed is not shown


def test_every_provider_is_asked_before_any_uploads(hosts: dict[str, Any], data: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """A local base model that is not here (as the built-in SmolLM2 without its wheel) is found
    before any provider uploads: local copies nothing and is reported; openai still runs."""
    config = tmp_path / "missing.yaml"
    config.write_text(f"providers: [local, openai]\nmodel: {{local: {tmp_path / 'absent.gguf'}, openai: gpt-4o-mini}}\n"
                      f"train: {data['train']}\ndeploy: false\n")
    home = tmp_path / "home"
    done = _cli(hosts, home, "run", str(config))
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stderr.splitlines()  # progress lines, prefixed with the provider
    refused = next(i for i, line in enumerate(lines) if "cannot start" in line)
    assert "[local" in lines[refused] and "absent.gguf" in lines[refused]
    uploads = [i for i, line in enumerate(lines) if "Upload" in line]
    assert uploads and refused < min(uploads)  # known before openai uploaded anything
    assert not list((home / "local" / "files").glob("*")) if (home / "local" / "files").exists() else True
    assert "local    refused" in done.stdout and "succeeded" in done.stdout
