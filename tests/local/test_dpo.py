"""Local DPO on the preference JSONL OpenAI and Azure take: the loss and its gradient equal a
hand-computed DPO loss (reference = the base model, adapter disabled), a short run raises
the preferred answer's likelihood over the rejected one, a paused run resumes to the same
adapter, and the provider takes --method dpo (and refuses mismatched files before it
creates anything)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from local_backend.chat_format import IGNORE_INDEX
from local_backend.trainer import Stopped, Trainer, TrainConfig

CHOSEN, REJECTED = "Ahoy matey!", "Arr."


def write_preference_file(path: Path, count: int = 6) -> Path:
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"Question number {i}?"}]},
            "preferred_output": [{"role": "assistant", "content": CHOSEN}],
            "non_preferred_output": [{"role": "assistant", "content": REJECTED}],
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(model: Path, train: Path, **overrides) -> TrainConfig:  # type: ignore[no-untyped-def]
    settings = dict(
        base_model=str(model), train_file=str(train), method="dpo", dpo_beta=0.5, epochs=3, batch_size=2,
        learning_rate=5e-3, lora_r=8, lora_alpha=16, max_seq_len=64, checkpoint_every=0, seed=7,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def _hand_logp(trainer: Trainer, encoded, *, adapter: bool):  # type: ignore[no-untyped-def]
    """Sum of log p(token) over the answer's labelled tokens, one sequence, full logits."""
    import torch

    context = contextlib.nullcontext() if adapter else trainer.model.disable_adapter()
    with context:
        logits = trainer.model(input_ids=torch.tensor([encoded.input_ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    total = logits.new_zeros(())
    for t in range(1, len(encoded.input_ids)):
        if encoded.labels[t] != IGNORE_INDEX:
            total = total + logprobs[t - 1, encoded.input_ids[t]]
    return total


@pytest.mark.parametrize("layout", ["padded-plain", "padding-free-chunked"])
def test_dpo_loss_and_gradient_equal_the_hand_computed_loss(tiny_model_dir: Path, tmp_path: Path, layout: str) -> None:
    import torch

    from tests.local.test_losses import _assert_close_grads, _lora_grads, _randomise_lora

    packing, loss_impl = (False, "plain") if layout == "padded-plain" else (True, "chunked")
    train = write_preference_file(tmp_path / "prefs.jsonl", count=3)
    trainer = Trainer(_config(tiny_model_dir, train, packing=packing, loss_impl=loss_impl), tmp_path / "out")
    trainer.setup()
    _randomise_lora(trainer)  # policy != reference, so the margin is not zero
    pairs = trainer.train_examples
    assert all(p.chosen.trained_tokens and p.rejected.trained_tokens for p in pairs)
    # only the answer is labelled: the prompt's tokens never count in the log-probabilities
    decoded = trainer.tokenizer.decode([t for t in pairs[0].chosen.labels if t != IGNORE_INDEX])
    assert decoded.startswith(CHOSEN) and "Question" not in decoded

    loss_sum, extras = trainer.objective.loss_sum(pairs, padding_free=trainer.padding_free)
    (loss_sum / len(pairs)).backward()
    ours = _lora_grads(trainer)

    beta, hand = 0.5, []
    for pair in pairs:
        with torch.no_grad():
            reference = _hand_logp(trainer, pair.chosen, adapter=False) - _hand_logp(trainer, pair.rejected, adapter=False)
        policy = _hand_logp(trainer, pair.chosen, adapter=True) - _hand_logp(trainer, pair.rejected, adapter=True)
        z = beta * (policy - reference)
        hand.append(torch.log1p(torch.exp(-z)))  # -log(sigmoid(z))
    hand_loss = torch.stack(hand).mean()
    hand_loss.backward()
    theirs = _lora_grads(trainer)
    print(f"\n{layout}: DPO loss {float(loss_sum) / len(pairs):.6f}, hand-computed {float(hand_loss):.6f}")
    assert float(loss_sum) / len(pairs) == pytest.approx(float(hand_loss), rel=1e-5)
    assert float(hand_loss) != pytest.approx(0.6931, abs=1e-3)  # not the trivial log 2 of a zero margin
    _assert_close_grads(ours, theirs)


def _margin(trainer: Trainer) -> float:
    import torch

    with torch.no_grad():
        chosen, rejected = trainer.objective.sequence_logps(trainer.train_examples, padding_free=trainer.padding_free)
    return float((chosen - rejected).mean())


def test_a_short_dpo_run_prefers_the_preferred_answer(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = write_preference_file(tmp_path / "prefs.jsonl")
    events: list[dict] = []
    trainer = Trainer(_config(tiny_model_dir, train), tmp_path / "out", on_event=lambda lv, m, d: events.append(d))
    trainer.setup()
    before = _margin(trainer)
    trainer.train()
    after = _margin(trainer)
    print(f"\nlog p(preferred) - log p(rejected): before {before:.3f}, after {after:.3f}")
    assert after > before + 1.0
    steps = [e for e in events if "train_loss" in e]
    assert steps[-1]["train_loss"] < steps[0]["train_loss"] and steps[-1]["reward_margin"] > 0
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()


def test_a_paused_dpo_run_resumes_to_the_same_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    train = write_preference_file(tmp_path / "prefs.jsonl")
    whole = Trainer(_config(tiny_model_dir, train), tmp_path / "whole")
    whole.setup()
    whole.train()
    calls = {"n": 0}

    def pause_after_two() -> str | None:
        calls["n"] += 1
        return "pause" if calls["n"] == 2 else None

    first = Trainer(_config(tiny_model_dir, train), tmp_path / "split", should_stop=pause_after_two)
    first.setup()
    with pytest.raises(Stopped):
        first.train()
    assert first.latest_checkpoint() is not None
    second = Trainer(_config(tiny_model_dir, train), tmp_path / "split")
    second.setup()
    second.train(resume=True)
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "split" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_preference_rows_are_refused_for_supervised_and_chat_rows_for_dpo_before_a_job_exists(
    provider, tmp_path: Path, local_home: Path, tiny_model_dir: Path  # type: ignore[no-untyped-def]
) -> None:
    from cloudtune import errors
    from cloudtune.types import FineTuneSpec
    from tests.local.conftest import write_training_file

    prefs = provider.upload_file(write_preference_file(tmp_path / "prefs.jsonl"))
    chats = provider.upload_file(write_training_file(tmp_path / "chat.jsonl"))
    for method, file_id in (("supervised", prefs), ("dpo", chats)):
        spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=tmp_path / "x.jsonl",
                            method=method)
        with pytest.raises(errors.DatasetError):
            provider.create_job(spec, training_file_id=file_id, validation_file_id=None, run_id="r1")
    jobs = local_home / "local" / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir())


def test_the_dataset_validator_accepts_a_preference_file_for_local_dpo(tmp_path: Path) -> None:
    from cloudtune.dataset import validate_file

    report = validate_file(write_preference_file(tmp_path / "prefs.jsonl"), provider="local", method="dpo")
    assert not report.errors, report.errors


@pytest.mark.slow
def test_cloudtune_run_with_method_dpo_validates_and_trains_locally(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The same preference file and flag as for OpenAI/Azure: `cloudtune run --provider local
    --method dpo` validates the file, trains, and the job succeeds."""
    from tests.local.conftest import stop_recorded_processes
    from tests.local.test_cli_resume import _cli

    home = tmp_path / "home"
    write_preference_file(tmp_path / "prefs.jsonl", count=4)
    try:
        done = _cli(home, "run", "--provider", "local", "--model", str(tiny_model_dir), "--train", "prefs.jsonl",
                    "--method", "dpo", "--no-deploy", "--epochs", "1", "-o", "torch_threads=1", "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        assert result["status"] == "succeeded"
        job_dir = home / "local" / "jobs" / result["job_id"]
        spec = json.loads((job_dir / "spec.json").read_text())
        assert spec["train_config"]["method"] == "dpo"
        assert (job_dir / "adapter" / "adapter_config.json").is_file()
    finally:
        stop_recorded_processes(home)
