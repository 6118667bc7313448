"""The trainer on a tiny real model, in process: it learns, it is deterministic, and
packed padding-free batches train (their exactness is in test_losses.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_backend.trainer import Trainer, TrainConfig
from tests.local.conftest import TARGET_ANSWER, write_training_file


def _config(model: Path, train: Path, **overrides) -> TrainConfig:  # type: ignore[no-untyped-def]
    settings = dict(
        base_model=str(model), train_file=str(train), epochs=6, batch_size=4, learning_rate=1e-2,
        lora_r=8, lora_alpha=16, lora_dropout=0.0, max_seq_len=64, checkpoint_every=0, seed=7,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def _train(config: TrainConfig, out: Path) -> tuple[Trainer, list[dict]]:
    events: list[dict] = []
    trainer = Trainer(config, out, on_event=lambda level, message, data: events.append({"message": message, **data}))
    trainer.setup()
    trainer.train()
    return trainer, events


def _greedy(trainer: Trainer, question: str) -> str:
    import torch

    from local_backend.chat_format import prompt_ids

    ids = prompt_ids(trainer.tokenizer, [{"role": "user", "content": question}])
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=trainer.tokenizer.eos_token_id
        )
    return trainer.tokenizer.decode(out[0][len(ids) :], skip_special_tokens=True)


def test_loss_decreases_and_greedy_output_learns_the_target(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = write_training_file(tmp_path / "train.jsonl", count=12)
    trainer, events = _train(_config(tiny_model_dir, train, validation_split=0.25, epochs=10), tmp_path / "out")
    losses = [e["train_loss"] for e in events if "train_loss" in e]
    valid = [e["valid_loss"] for e in events if "valid_loss" in e and "train_loss" not in e]
    assert losses[-1] < losses[0] * 0.9
    assert len(valid) == 10 and valid[-1] < valid[0]
    assert all("tokens_per_s" in e and "learning_rate" in e for e in events if "train_loss" in e)
    # a question it never saw: the persona (and the stop) was learned, not the examples
    assert _greedy(trainer, "Question number 99?").strip() == TARGET_ANSWER
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()


def test_learning_rate_warms_up_then_decays(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = write_training_file(tmp_path / "train.jsonl", count=16)
    _, events = _train(_config(tiny_model_dir, train, epochs=5, warmup_ratio=0.2), tmp_path / "out")
    rates = [e["learning_rate"] for e in events if "train_loss" in e]
    peak = rates.index(max(rates))
    assert 0 < peak < len(rates) - 1
    assert rates[:peak + 1] == sorted(rates[:peak + 1])
    assert rates[peak:] == sorted(rates[peak:], reverse=True) and rates[-1] < max(rates) * 0.05


def _adapter_tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


def test_same_seed_same_adapter_on_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    train = write_training_file(tmp_path / "train.jsonl")
    config = _config(tiny_model_dir, train, epochs=2, lora_dropout=0.1)
    _train(config, tmp_path / "a")
    _train(config, tmp_path / "b")
    _train(_config(tiny_model_dir, train, epochs=2, lora_dropout=0.1, seed=8), tmp_path / "c")
    a, b, c = (_adapter_tensors(tmp_path / name / "adapter") for name in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_truncations_are_counted_and_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    long_answer = " ".join(["Ahoy matey!"] * 30)
    rows = [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": long_answer}]}] * 3
    rows += [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "Arr."}]}]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer, events = _train(_config(tiny_model_dir, train, epochs=1, max_seq_len=32), tmp_path / "out")
    assert trainer.encode_stats.truncated == 3
    assert any(e.get("truncated") == 3 and "truncated" in e["message"] for e in events)


def test_packing_trains_and_learns(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = write_training_file(tmp_path / "train.jsonl", count=12)
    trainer, events = _train(_config(tiny_model_dir, train, packing=True, batch_size=1, epochs=12), tmp_path / "out")
    assert _greedy(trainer, "Question number 42?").strip() == TARGET_ANSWER
