"""DPO with a precomputed reference and padding-free (packed) batches: the first loss is ln 2
either way, precompute and live train the same steps (losses and LoRA gradients), the packed
layout trains the padded layout's steps, and a resumed run loads the stored reference values
instead of recomputing them and ends on the uninterrupted run's adapter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from local_backend.trainer import Stopped, Trainer
from tests.local.test_dpo import _config

pytestmark = pytest.mark.slow  # trains a tiny model several times (about 20 s), like tests/local/test_dpo.py


def _write_varied_pairs(path: Path, count: int = 6) -> Path:
    """Answers of different lengths, so padded rows really pad and packed segments differ."""
    import json

    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"Question number {i}?" + " Tell me." * (i % 3)}]},
            "preferred_output": [{"role": "assistant", "content": "Ahoy matey!" + " Ahoy!" * (i % 4)}],
            "non_preferred_output": [{"role": "assistant", "content": "Arr." + " Arr." * ((i + 1) % 3)}],
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(model: Path, train: Path, out: Path, *, steps: int, **overrides):  # type: ignore[no-untyped-def]
    """Train ``steps`` optimiser steps; returns (trainer, per-step losses, per-step LoRA gradients, events)."""
    import torch

    events: list[tuple[str, dict]] = []
    settings = dict(max_steps=steps, log_every=1, epochs=2, warmup_ratio=0.0)
    settings.update(overrides)
    trainer = Trainer(_config(model, train, **settings), out, on_event=lambda lv, m, d: events.append((m, d)))
    trainer.setup()
    grads: list[dict[str, torch.Tensor]] = []

    def record(optimizer, args, kwargs) -> None:  # type: ignore[no-untyped-def]
        grads.append({n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None})

    trainer.optimizer.register_step_pre_hook(record)
    trainer.train(resume=True)
    losses = [d["train_loss"] for _, d in events if "train_loss" in d]
    return trainer, losses, grads, events


def _reference_lines(events) -> list[str]:  # type: ignore[no-untyped-def]
    return [m for m, _ in events if m.startswith("DPO reference")]


@pytest.mark.parametrize("mode", ["live", "precompute"])
def test_the_first_dpo_loss_is_ln_2_with_either_reference(tiny_model_dir: Path, tmp_path: Path, mode: str) -> None:
    train = _write_varied_pairs(tmp_path / "prefs.jsonl")
    trainer, losses, _, events = _run(tiny_model_dir, train, tmp_path / "out", steps=1, dpo_reference=mode, packing=True)
    assert _reference_lines(events) and _reference_lines(events)[0].startswith(f"DPO reference: {mode}")
    assert losses[0] == pytest.approx(math.log(2), rel=1e-6)
    if mode == "precompute":
        assert all(p.reference is not None for p in trainer.train_examples)
        assert (tmp_path / "out" / "checkpoints" / "dpo_reference.pt").is_file()
    else:
        assert all(p.reference is None for p in trainer.train_examples)


def test_precompute_and_packing_train_the_same_steps_as_live_padded(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Four layouts, three optimiser steps each (3 pairs per step; 8 pairs, 3 of them held out
    for validation, so an epoch is 2 steps): the per-step losses, the LoRA gradients of every
    step and the validation loss after epoch 1 agree with live + padded."""
    train = _write_varied_pairs(tmp_path / "prefs.jsonl", count=8)
    runs, valid = {}, {}
    for mode in ("live", "precompute"):
        for packing in (False, True):
            name = f"{mode}-{'packed' if packing else 'padded'}"
            trainer, losses, grads, events = _run(tiny_model_dir, train, tmp_path / name, steps=3, batch_size=3,
                                                  dpo_reference=mode, packing=packing, learning_rate=2e-2,
                                                  validation_split=0.34)
            assert _reference_lines(events)[0].startswith(f"DPO reference: {mode}")
            valid[name] = [d["valid_loss"] for _, d in events if "valid_loss" in d and "train_loss" not in d]
            # one collation per micro-batch with a precomputed reference: the next one is collated ahead
            assert (trainer.collator.overlapped > 0) == (mode == "precompute"), (name, trainer.collator.overlapped)
            runs[name] = (losses, grads)
    want_losses, want_grads = runs.pop("live-padded")
    assert len(valid["live-padded"]) == 1 and valid["live-padded"][0] > 0
    assert all(v == pytest.approx(valid["live-padded"], rel=1e-5) for v in valid.values()), valid
    assert len(want_losses) == len(want_grads) == 3
    assert want_losses[-1] < want_losses[0]  # it learns: later steps are not the ln 2 of step one again
    for name, (losses, grads) in runs.items():
        print(f"\n{name}: losses {losses} vs live-padded {want_losses}")
        assert losses == pytest.approx(want_losses, rel=1e-5), name
        for step, (got, want) in enumerate(zip(grads, want_grads)):
            assert got.keys() == want.keys() and got, name
            for key in want:
                scale = float(want[key].abs().max()) + 1e-12
                # fp32 rounding differs between the layouts (~5e-7 of the largest gradient at step 1);
                # Adam's normalised first update carries it into later steps (~5e-4 measured)
                limit = (1e-5 if step == 0 else 3e-3) * scale
                assert (got[key] - want[key]).abs().max() <= limit, f"{name} step {step + 1} {key}"


def test_auto_precomputes_unless_the_run_sees_fewer_pairs(tiny_model_dir: Path, tmp_path: Path) -> None:
    train = _write_varied_pairs(tmp_path / "prefs.jsonl")
    _, _, _, whole = _run(tiny_model_dir, train, tmp_path / "whole", steps=None, epochs=1)
    _, _, _, cut = _run(tiny_model_dir, train, tmp_path / "cut", steps=1, epochs=1)
    assert _reference_lines(whole)[0].startswith("DPO reference: precompute (the base is frozen")
    assert _reference_lines(cut)[0].startswith("DPO reference: live (the run sees 2 pairs, fewer than the 6")


def test_a_resumed_precompute_run_loads_the_stored_reference(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    train = _write_varied_pairs(tmp_path / "prefs.jsonl")
    whole, _, _, _ = _run(tiny_model_dir, train, tmp_path / "whole", steps=None, dpo_reference="precompute",
                          packing=True)
    calls = {"n": 0}

    def pause_after_two() -> str | None:
        calls["n"] += 1
        return "pause" if calls["n"] == 2 else None

    first = Trainer(_config(tiny_model_dir, train, dpo_reference="precompute", packing=True, log_every=1, epochs=2,
                            warmup_ratio=0.0), tmp_path / "split", should_stop=pause_after_two)
    first.setup()
    with pytest.raises(Stopped):
        first.train()
    stored = tmp_path / "split" / "checkpoints" / "dpo_reference.pt"
    assert stored.is_file() and first.latest_checkpoint() is not None
    values = torch.load(stored, weights_only=True)
    assert torch.equal(values["train"], torch.tensor([p.reference for p in first.train_examples]))
    _, _, _, events = _run(tiny_model_dir, train, tmp_path / "split", steps=None, dpo_reference="precompute",
                           packing=True)
    assert "loaded from dpo_reference.pt" in _reference_lines(events)[0]
    a = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "split" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [list(p.reference) for p in whole.train_examples] == values["train"].tolist()

    # The values really come from the file: shift them (same fingerprint) and a resume reads the shifted ones.
    values["train"] = values["train"] + 1.0
    torch.save(values, stored)
    again = Trainer(_config(tiny_model_dir, train, dpo_reference="precompute", packing=True), tmp_path / "split")
    again.setup()
    again.objective.before_training(resumed=True)
    assert [list(p.reference) for p in again.train_examples] == values["train"].tolist()

    # A changed data set does not match the stored fingerprint: recomputed, not reused.
    changed = _write_varied_pairs(tmp_path / "changed.jsonl", count=5)
    stale = Trainer(_config(tiny_model_dir, changed, dpo_reference="precompute"), tmp_path / "split")
    stale.setup()
    stale.objective.before_training(resumed=True)
    assert len(stale.train_examples) == 5 and all(p.reference is not None for p in stale.train_examples)
    assert torch.load(stored, weights_only=True)["train"].shape == (5, 2)


def test_an_unknown_dpo_reference_mode_is_refused(tmp_path: Path) -> None:
    from cloudtune import errors
    from local_backend.hyperparams import build_train_config

    with pytest.raises(errors.ConfigError, match="dpo_reference"):
        build_train_config(base_model="m", train_file="t", validation_file=None, validation_split=None, epochs=1,
                           batch_size=1, learning_rate_multiplier=None, seed=None, extra={"dpo_reference": "cached"},
                           device="cpu", method="dpo")


def test_two_processes_train_the_one_process_dpo_adapter_with_a_precomputed_reference(  # type: ignore[no-untyped-def]
    provider, local_home: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Data parallel DPO (torchrun, gloo): both ranks agree to precompute (one collective),
    score every pair, and step exactly as one process with the same global batch."""
    import torch

    from cloudtune.types import FineTuneSpec, JobState
    from providers.local import LocalProvider
    from tests.local.conftest import fast_hyperparameters
    from tests.local.test_distributed import STATE_TOLERANCE, _adapter, _train

    train = _write_varied_pairs(tmp_path / "prefs.jsonl", count=7)  # micro-batches of 4 and 3 pairs
    spec = FineTuneSpec(provider="local", base_model=str(tiny_model_dir), training_file=train, seed=5, method="dpo",
                        hyperparameters=fast_hyperparameters(epochs=2, checkpoint_every=0, dpo_beta=0.5,
                                                             packing=True))
    single_job, single = _train(provider, spec, "run-one")
    two = LocalProvider({"num_processes": "2"})
    pair_job, pair = _train(two, spec, "run-two")
    log = provider._jobdir(pair_job.id).path.joinpath("worker.log")
    assert single.state == pair.state == JobState.SUCCEEDED, log.read_text()[-3000:] if log.is_file() else pair
    for source, job in ((provider, single_job), (two, pair_job)):
        messages = [e.message for e in source.list_events(job.id, limit=1000)]
        assert sum(m.startswith("DPO reference: precompute") for m in messages) == 1, messages
    one_state, two_state = _adapter(provider, single_job.id), _adapter(provider, pair_job.id)
    assert one_state.keys() == two_state.keys()
    assert max(float(one_state[k].abs().max()) for k in one_state if "lora_B" in k) > 1000 * STATE_TOLERANCE
    for name, tensor in one_state.items():
        torch.testing.assert_close(two_state[name], tensor, rtol=0, atol=STATE_TOLERANCE)
