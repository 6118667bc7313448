"""SmolLM2-135M-Instruct end to end on CPU, the quickstart's path: the built-in GGUF is
converted once (then a cache hit), LoRA on samples/quickstart, deployed next to the base model,
and the held-out answers change persona. The model is fine-tuned once per session: this reads
the session's quickstart run (``quickstart_run`` in tests/local/conftest.py)."""

from __future__ import annotations

import pytest

from local_backend.quickstart import persona_rate, prepare_builtin_model
from tests.local.conftest import QuickstartRun


@pytest.mark.slow
def test_smollm2_quickstart_changes_the_answers(quickstart_run: QuickstartRun, monkeypatch: pytest.MonkeyPatch) -> None:
    assert quickstart_run.returncode == 0, quickstart_run.stderr[-3000:]
    monkeypatch.setenv("CLOUDTUNE_HOME", str(quickstart_run.home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached, _ = prepare_builtin_model()  # converted by the run, in its CLOUDTUNE_HOME
    assert (cached / "config.json").is_file()
    assert prepare_builtin_model()[1] < 2  # a cache hit

    examples = quickstart_run.doc["comparison"]["examples"]
    answers = {label: [e["answers"][label]["text"] for e in examples] for label in ("fine-tuned", "base")}
    for example, base, tuned in zip(examples, answers["base"], answers["fine-tuned"]):
        print(f"Q: {example.get('prompt') or example.get('index')}\n  base: {base!r}\n  tuned: {tuned!r}")
    assert len(examples) > 0
    assert persona_rate(answers["fine-tuned"]) >= 0.6
    assert persona_rate(answers["base"]) == 0.0
