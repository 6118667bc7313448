"""The fused LoRA-over-frozen-base autograd function (local_backend/fused_lora.py) against
PEFT's own LoRA forward: over plain nn.Linear bases (fp32 and bf16) and bitsandbytes
Linear4bit NF4 bases quantised on CPU, without and with dropout (same mask from the same
seed), outputs and dx/dA/dB; how the option is chosen and reported; the trainer with
``lora_kernel=fused`` against ``peft`` on a tiny model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model

from local_backend import fused_lora


class _One(torch.nn.Module):
    def __init__(self, proj: torch.nn.Module) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.proj(x)


def _lora_model(base: str, dtype: torch.dtype, dropout: float, *, bias: bool = True):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    dense = torch.nn.Linear(48, 80, bias=bias)
    if base == "4bit":
        bnb = pytest.importorskip("bitsandbytes")
        proj = bnb.nn.Linear4bit(48, 80, bias=bias, compute_dtype=torch.bfloat16, quant_type="nf4", compress_statistics=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proj.load_state_dict(dense.state_dict())
            proj.to("cpu")  # quantises (NF4, double quantisation) on bitsandbytes' CPU backend
        if bias:
            proj.bias.data = proj.bias.data.to(dtype)
    else:
        proj = dense.to(dtype)
    model = _One(proj)
    model.is_loaded_in_4bit = base == "4bit"  # PEFT then wraps the base in its Linear4bit LoRA layer
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=["proj"]))
    return peft_model, peft_model.base_model.model.proj


def _run(layer, x, grad, *, fused: bool, seed: int = 3):  # type: ignore[no-untyped-def]
    """Output and (dx, dA, dB) through the layer as installed now; ``fused`` says which path."""
    if fused:
        fused_lora.install(layer)
    else:
        fused_lora.uninstall(layer)
    xi = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = layer(xi)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    return (y.detach(), *torch.autograd.grad(y, [xi, a, b], grad.to(y.dtype)))


@pytest.mark.parametrize(
    ("base", "dtype", "dropout"),
    [("linear", torch.float32, 0.0), ("linear", torch.float32, 0.3), ("linear", torch.bfloat16, 0.0),
     ("linear", torch.bfloat16, 0.2), ("4bit", torch.float32, 0.0), ("4bit", torch.bfloat16, 0.0),
     ("4bit", torch.bfloat16, 0.25)],
)
def test_fused_matches_peft_forward_and_gradients(base: str, dtype: torch.dtype, dropout: float) -> None:
    model, layer = _lora_model(base, dtype, dropout)
    if base == "4bit":
        assert type(layer).__name__ == "Linear4bit" and layer.get_base_layer().weight.quant_state.nested
    assert fused_lora.why_not(layer) is None
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.1)  # B starts at zero: make the adapter count
    layer.train()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 48, generator=generator).to(dtype)
    grad = torch.randn(3, 7, 80, generator=generator)
    ref = _run(layer, x, grad, fused=False)
    got = _run(layer, x, grad, fused=True)
    exact = dtype == torch.float32
    for name, a, b in zip(("y", "dx", "dA", "dB"), got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        scale = b.float().abs().max().item()
        limit = (1e-5 if exact else 1e-2) * scale
        assert (a.float() - b.float()).abs().max().item() <= limit, name
    if dropout:  # the mask really applied: without it the output differs
        layer.eval()
        assert not torch.allclose(_run(layer, x, grad, fused=True)[0].float(), got[0].float())


def test_fused_under_cpu_autocast_and_the_functional_check() -> None:
    model, layer = _lora_model("linear", torch.float32, 0.1)
    figures = fused_lora.check_layer(layer, torch.autocast("cpu", dtype=torch.bfloat16))
    assert set(figures) == {"output", "dx", "dA", "dB"} and max(figures.values()) < 2e-2
    assert not layer.lora_B["default"].weight.any() and layer.lora_A["default"].weight.grad is None  # untouched


def test_fused_path_falls_back_to_peft_when_adapters_are_disabled_or_merged() -> None:
    model, layer = _lora_model("linear", torch.float32, 0.0)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.1)
    fused_lora.install(layer)
    x = torch.randn(2, 5, 48)
    with model.disable_adapter():
        assert torch.allclose(layer(x), layer.get_base_layer()(x))
    adapted = layer(x)
    layer.merge()
    assert torch.allclose(layer(x), adapted, atol=1e-5)  # merged: PEFT's forward, same function
    layer.unmerge()


def test_apply_reports_the_path_and_why() -> None:
    model, layer = _lora_model("linear", torch.float32, 0.0)
    assert fused_lora.apply(model, "peft", "cpu") == ("peft", "asked for")
    path, why = fused_lora.apply(model, "auto", "cpu")
    assert path == "peft" and "CUDA" in why and "forward" not in layer.__dict__
    path, why = fused_lora.apply(model, "fused", "cpu")
    assert path == "fused" and "1 layers" in why and "Linear max rel. error" in why
    assert "forward" in layer.__dict__
    path, why = fused_lora.apply(_lora_model("linear", torch.float32, 0.0)[0], "fused", "cuda", sharded=True)
    assert path == "peft" and "FSDP" in why
    with pytest.raises(ValueError, match="lora_kernel"):
        fused_lora.apply(model, "triton", "cpu")


def test_dora_layers_keep_peft_forward() -> None:
    torch.manual_seed(0)
    model = get_peft_model(_One(torch.nn.Linear(16, 16)), LoraConfig(r=4, target_modules=["proj"], use_dora=True))
    assert "DoRA" in fused_lora.why_not(model.base_model.model.proj)
    path, why = fused_lora.apply(model, "fused", "cpu")
    assert path == "peft" and "no eligible LoRA layer" in why and "DoRA" in why


def _chats(path: Path) -> Path:
    lines = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": "Ahoy matey, gold!"}]}
             for i in range(6)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("checkpointing", [False, True])
def test_trainer_fused_lora_matches_peft_on_cpu(tiny_model_dir: Path, tmp_path: Path, checkpointing: bool) -> None:
    """The trainer's own call (dropout 0.1; with activation checkpointing the recomputed forward
    must draw the same mask) through both kernels: token NLLs and every LoRA gradient."""
    from benchmarks._checks import _lora_grads, make_trainer, randomise_lora

    data = _chats(tmp_path / "train.jsonl")
    results = {}
    for kernel in ("peft", "fused"):
        trainer = make_trainer(tiny_model_dir, data, tmp_path / kernel, device="cpu", lora_kernel=kernel, lora_dropout=0.1,
                               gradient_checkpointing=checkpointing)
        assert trainer.recipe.kernels["lora_kernel"].startswith(kernel) and f"LoRA kernel {kernel}" in trainer.recipe.description
        assert trainer.recipe.kernels["layer_kernels"].startswith("torch: ")
        randomise_lora(trainer.model)
        trainer.model.train()
        batch = trainer.collate(trainer._epoch_rows(0)[:3])
        torch.manual_seed(5)
        nll, _ = trainer.token_nll(batch)
        nll.sum().backward()
        results[kernel] = (nll.detach(), _lora_grads(trainer.model))
    (ref, ref_grads), (got, got_grads) = results["peft"], results["fused"]
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert set(got_grads) == set(ref_grads) and ref_grads
    for name, grad in ref_grads.items():
        assert torch.allclose(got_grads[name], grad, rtol=1e-3, atol=1e-6), name


def test_kernel_options_are_hyperparameters_checked_before_a_job_exists() -> None:
    from cloudtune import errors
    from local_backend.hyperparams import build_train_config

    common = dict(base_model="m", train_file="t", validation_file=None, validation_split=None, epochs=None,
                  batch_size=None, learning_rate_multiplier=None, seed=None, device="cuda")
    config = build_train_config(**common, extra={"lora_kernel": "fused", "layer_kernels": "torch"})
    assert (config.lora_kernel, config.layer_kernels) == ("fused", "torch")
    assert build_train_config(**common, extra={}).lora_kernel == "auto"
    for key in ("lora_kernel", "layer_kernels"):
        with pytest.raises(errors.ConfigError, match=key):
            build_train_config(**common, extra={key: "fastest"})
