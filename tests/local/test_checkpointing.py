"""Activation checkpointing options (local_backend/checkpointing.py) and the logging interval, on CPU:
offloading the checkpointed layers' inputs and checkpointing every Nth layer give the same loss and
LoRA gradients as no checkpointing; bad values are refused as config errors; metrics are read back
every ``log_every`` steps and at the last, without changing what is trained."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks._checks import _lora_grads, make_trainer, randomise_lora, write_chats, write_model
from cloudtune import errors
from local_backend import recipe
from local_backend.hyperparams import build_train_config
from local_backend.trainer import Trainer, TrainConfig

COMMON = dict(base_model="m", train_file="t", validation_file=None, validation_split=None, epochs=None,
              batch_size=None, learning_rate_multiplier=None, seed=None)


@pytest.mark.parametrize(
    "extra, device",
    [
        ({"activation_offload": "gpu"}, "cuda"),
        ({"activation_offload": "cpu"}, "cpu"),  # CPU: checkpointing is off unless asked for
        ({"activation_offload": "cpu", "gradient_checkpointing": False}, "cuda"),
        ({"checkpoint_every_n_layers": 0}, "cuda"),
        ({"checkpoint_every_n_layers": "2"}, "cuda"),
        ({"checkpoint_every_n_layers": 1.5}, "cpu"),
        ({"checkpoint_every_n_layers": True}, "cpu"),
        ({"log_every": 0}, "cpu"),
        ({"log_every": "10"}, "cuda"),
    ],
)
def test_bad_values_are_config_errors(extra: dict, device: str) -> None:
    with pytest.raises(errors.ConfigError):
        build_train_config(**COMMON, extra=extra, device=device)


def test_auto_offloads_on_cuda_with_checkpointing_and_never_on_cpu() -> None:
    cuda = recipe.choose(build_train_config(**COMMON, extra={}, device="cuda"), "cuda")
    assert (cuda.activation_offload, cuda.checkpoint_every_n_layers) == ("cpu", 1)
    assert "every decoder layer, its saved inputs offloaded to pinned host memory" in cuda.description
    no_checkpointing = recipe.choose(build_train_config(**COMMON, extra={"gradient_checkpointing": False}, device="cuda"), "cuda")
    assert no_checkpointing.activation_offload == "none" and "no activation checkpointing" in no_checkpointing.description
    every_4 = recipe.choose(build_train_config(**COMMON, extra={"checkpoint_every_n_layers": 4, "activation_offload": "none"},
                                               device="cuda"), "cuda")
    assert every_4.activation_offload == "none" and "every 4th decoder layer" in every_4.description
    assert "offloaded" not in every_4.description
    cpu = recipe.choose(build_train_config(**COMMON, extra={"gradient_checkpointing": True}, device="cpu"), "cpu")
    assert cpu.activation_offload == "none" and "activation checkpointing of every decoder layer" in cpu.description
    asked = recipe.choose(build_train_config(**COMMON, extra={"gradient_checkpointing": True, "activation_offload": "cpu"},
                                             device="cpu"), "cpu")
    assert asked.activation_offload == "cpu"


def test_offload_and_every_n_layers_give_the_same_loss_and_lora_grads(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model", "llama")  # 2 decoder layers
    data = write_chats(tmp_path / "train.jsonl", 12, long=True)
    variants = {
        "plain": dict(gradient_checkpointing=False),
        "every layer": dict(gradient_checkpointing=True, activation_offload="none"),
        "every layer, offloaded": dict(gradient_checkpointing=True, activation_offload="cpu"),
        "every 2nd layer, offloaded": dict(gradient_checkpointing=True, activation_offload="cpu", checkpoint_every_n_layers=2),
    }
    results = {}
    for name, options in variants.items():
        trainer = make_trainer(model, data, tmp_path / name, packing=True, device="cpu", quantize="none",
                               group_by_length=False, **options)
        layers = trainer.model.get_base_model().model.layers
        checkpointed = [bool(layer.gradient_checkpointing) for layer in layers]
        randomise_lora(trainer.model)
        trainer.model.train()  # checkpointing runs in training mode only
        nll, _ = trainer.token_nll(trainer.collate(trainer._epoch_rows(0)[:3]), want_tokens=True)
        nll.sum().backward()
        offloader = trainer.recipe.offloader
        results[name] = (nll.detach(), _lora_grads(trainer.model), checkpointed, offloader.moved if offloader else 0)
        if offloader is not None:  # once the graph is gone, nothing of the step's host copies is kept
            del nll
            assert offloader.last is not None and offloader.last() is None
    reference, reference_grads, _, _ = results["plain"]
    assert results["plain"][2] == [False, False] and results["every layer"][2] == [True, True]
    assert results["every 2nd layer, offloaded"][2] == [True, False]
    # only the checkpointed layers' inputs went through the hooks: one tensor per checkpointed layer
    assert [results[n][3] for n in variants] == [0, 0, 2, 1]
    for name, (nll, grads, _, _) in results.items():
        assert nll.shape == reference.shape and (nll - reference).abs().max() <= 1e-5, name
        assert set(grads) == set(reference_grads) and len(grads) > 0, name
        for key, grad in reference_grads.items():
            assert (grads[key] - grad).abs().max() <= 1e-6 + 1e-4 * grad.abs().max(), (name, key)


def _train(model: Path, data: Path, out: Path, **overrides) -> tuple[list[dict], dict]:  # type: ignore[no-untyped-def]
    import torch
    from safetensors.torch import load_file

    config = TrainConfig(base_model=str(model), train_file=str(data), epochs=1, batch_size=2, learning_rate=1e-2,
                         lora_r=8, lora_alpha=16, max_seq_len=96, checkpoint_every=0, seed=7, device="cpu",
                         quantize="none", **overrides)
    events: list[dict] = []
    trainer = Trainer(config, out, on_event=lambda level, message, data: events.append({"message": message, **data}))
    trainer.setup()
    torch.manual_seed(0)
    trainer.train(resume=False)
    events.append({"collated_ahead": trainer.collator.overlapped})
    return events, load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_metrics_every_log_every_steps_and_at_the_last_with_the_same_adapter(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model", "llama")
    data = write_chats(tmp_path / "train.jsonl", 24)  # 12 optimiser steps of 2 examples
    every_step, adapter_1 = _train(model, data, tmp_path / "a", log_every=1)
    every_10, adapter_10 = _train(model, data, tmp_path / "b", log_every=10)
    steps_1 = [e["step"] for e in every_step if e.get("kind") == "metrics" and "train_loss" in e]
    steps_10 = [e["step"] for e in every_10 if e.get("kind") == "metrics" and "train_loss" in e]
    assert steps_1 == list(range(1, 13))
    assert steps_10 == [10, 12]
    assert set(adapter_1) == set(adapter_10) and adapter_1
    assert all(bool((adapter_1[k] == adapter_10[k]).all()) for k in adapter_1)
    # every micro-batch after the first was collated on the background thread while the previous one ran
    assert every_step[-1]["collated_ahead"] == every_10[-1]["collated_ahead"] == 11
    # the window's loss is the mean over its steps' tokens: the same figures, read less often
    logged = {e["step"]: e for e in every_step if e.get("kind") == "metrics" and "train_loss" in e}
    last = next(e for e in every_10 if e.get("step") == 12 and "train_loss" in e)
    assert last["train_loss"] > 0 and logged[12]["train_loss"] > 0


def test_the_gpu_check_for_offload_runs_on_cpu_small() -> None:
    """benchmarks.gpu_check's offload check (CUDA only in that run) has one chance on a GPU: its
    comparison runs here on CPU, small and without the memory part, so its code is exercised in CI."""
    from benchmarks import _cuda_checks

    figures = _cuda_checks.activation_offload("cpu")
    assert figures["auto"]["offload"] == "cpu" and figures["auto"]["moved_per_pass"] == figures["layers"]
    assert figures["every 2nd, cpu"]["moved_per_pass"] == figures["layers"] // 2
    assert figures["auto"]["nll_error"] <= 1e-5 and figures["every 2nd, cpu"]["grad_error"] <= 1e-5


def test_offloaded_training_with_accumulation_ends_on_the_same_adapter(tmp_path: Path) -> None:
    """The whole loop (3 optimiser steps of 2 accumulated micro-batches each) with the inputs of
    every 2nd layer offloaded trains the adapter that no checkpointing trains."""
    model = write_model(tmp_path / "model", "llama")
    data = write_chats(tmp_path / "train.jsonl", 12)
    _, plain = _train(model, data, tmp_path / "plain", grad_accum=2, max_steps=3, gradient_checkpointing=False)
    _, offloaded = _train(model, data, tmp_path / "offloaded", grad_accum=2, max_steps=3, gradient_checkpointing=True,
                          activation_offload="cpu", checkpoint_every_n_layers=2)
    assert set(plain) == set(offloaded) and plain
    for key, tensor in plain.items():
        assert (offloaded[key] - tensor).abs().max() <= 1e-6 + 1e-4 * tensor.abs().max(), key
