"""SmolLM2-135M-Instruct end to end on CPU, the quickstart's path: the built-in GGUF is
converted once, LoRA with the provider's auto hyperparameters on samples/quickstart,
deployed next to the base model, and the held-out answers change persona."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cloudtune import poller
from cloudtune.types import FineTuneSpec, JobState
from local_backend.quickstart import BASE_MODEL, HELDOUT_FILE, TRAIN_FILE, persona_rate, prepare_builtin_model


@pytest.mark.slow
def test_smollm2_quickstart_changes_the_answers(provider, local_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OMP_NUM_THREADS")  # this one test may use every core
    started = time.monotonic()
    cached, convert_s = prepare_builtin_model()
    assert (cached / "config.json").is_file()
    assert prepare_builtin_model()[1] < 2  # the second time it is a cache hit

    file_id = provider.upload_file(TRAIN_FILE)
    spec = FineTuneSpec(provider="local", base_model=BASE_MODEL, training_file=TRAIN_FILE, seed=42)
    job = provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id="run-smollm2")
    final = poller.wait_for_job(provider, job.id, timeout_s=1500, sleep=time.sleep, clock=time.monotonic)
    assert final.state == JobState.SUCCEEDED, final.error
    train_s = time.monotonic() - started

    questions = [json.loads(line)["messages"][:-1] for line in HELDOUT_FILE.read_text().splitlines()]
    answers: dict[str, list[str]] = {}
    for label, model in (("fine-tuned", final.fine_tuned_model), ("base", BASE_MODEL)):
        provider.deploy(model, name=label)
        poller.wait_for_deployment(provider, label, target="ready", timeout_s=600, sleep=time.sleep, clock=time.monotonic)
        answers[label] = [provider.chat(label, q, max_tokens=48, temperature=0).content for q in questions]
        provider.undeploy(label)
    print(f"\nconvert {convert_s:.0f}s, convert+train {train_s:.0f}s, total {time.monotonic() - started:.0f}s")
    for q, base, tuned in zip(questions, answers["base"], answers["fine-tuned"]):
        print(f"Q: {q[-1]['content']}\n  base: {base!r}\n  tuned: {tuned!r}")
    assert persona_rate(answers["fine-tuned"]) >= 0.6
    assert persona_rate(answers["base"]) == 0.0
    provider.delete_model(final.fine_tuned_model)
