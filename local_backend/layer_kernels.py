"""Liger's RMSNorm, SwiGLU and RoPE kernels on the loaded model (option ``layer_kernels``).

``liger``/``auto`` on CUDA, for the architectures whose Liger kernels compute what
transformers computes (Llama, Mistral, Phi-3, Qwen2: RMSNorm with Llama's casting, SiLU
gate, full-width rotary embedding), when ``liger_kernel`` imports:

- RMSNorm and SwiGLU: liger-kernel's own ``apply_liger_kernel_to_<arch>(model=...,
  rope=False, swiglu=True, rms_norm=True, cross_entropy=False,
  fused_linear_cross_entropy=False)`` patches this model instance's norm and MLP modules
  (their ``forward``; the MLP still calls its projections as modules, so PEFT's LoRA layers
  and 4-bit bases stay in the path). It also replaces the classes in transformers'
  modeling module for models built later; those are put back, so only this instance changes;
- RoPE: Liger replaces the module-level ``apply_rotary_pos_emb`` of the modeling module,
  which every model of that architecture in the process calls. Here that function becomes a
  dispatcher that takes Liger's kernel only for cos/sin tensors made by this model's rotary
  embedding (tagged by a forward hook, so activation checkpointing's recomputation, which
  receives the same tensors, takes the same kernel), only on CUDA and only for full-width
  rotation (Phi-4-mini's partial rotary keeps transformers' function). Packed batches
  are fine: cos/sin are gathered from the position ids, which restart at each sequence.

Applied before ``get_peft_model``. A one-time functional check compares each patched kind
of module of the real model (first layer's norm and MLP, the rotary function on a packed
position run) forward and backward with transformers' own; any failure undoes the patches
and keeps torch, with the reason reported. Gemma-family models are not covered (Liger's
Gemma kernels use another RMSNorm offset/casting and GELU; soft-capping stays exact on the
torch path), nor anything else.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

MODES = ("auto", "liger", "torch")
COVERED = ("llama", "mistral", "phi3", "qwen2")
_TAG = "_cloudtune_liger_rope"


def _liger_patch_fn(model_type: str):  # type: ignore[no-untyped-def]
    module = importlib.import_module("liger_kernel.transformers.monkey_patch")
    return getattr(module, f"apply_liger_kernel_to_{model_type}")


def why_not(config: Any, device: str) -> str | None:
    """None when Liger's layer kernels can be used for a model of ``config`` on ``device``."""
    if device != "cuda":
        return "Liger's kernels are Triton kernels, CUDA only"
    model_type = getattr(config, "model_type", None)
    if model_type not in COVERED:
        return f"{model_type} is not covered (covered: {', '.join(COVERED)})"
    act = getattr(config, "hidden_act", None)
    if act not in ("silu", "swish"):
        return f"hidden_act {act!r} is not SiLU (Liger's SwiGLU would change it)"
    try:
        _liger_patch_fn(model_type)
        importlib.import_module("liger_kernel.transformers.rope")
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install: keep torch
        return f"liger_kernel not importable: {type(exc).__name__}: {exc}"
    return None


def _rope_dispatcher(original, liger):  # type: ignore[no-untyped-def]
    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):  # type: ignore[no-untyped-def]
        if getattr(cos, _TAG, False) and not args and not kwargs and q.is_cuda and cos.shape[-1] == q.shape[-1]:
            return liger(q, k, cos, sin)
        return original(q, k, cos, sin, *args, **kwargs)

    apply_rotary_pos_emb._cloudtune_original = original  # type: ignore[attr-defined]
    return apply_rotary_pos_emb


def _tag_rope(module, args, output):  # type: ignore[no-untyped-def]
    for tensor in output:
        setattr(tensor, _TAG, True)
    return output


class _Patches:
    """What was changed on one model, so that a failed check can undo it."""

    def __init__(self) -> None:
        self.modules: list[Any] = []
        self.globals: dict[str, Any] = {}
        self.modeling: Any = None
        self.hooks: list[Any] = []

    def undo(self) -> None:
        for module in self.modules:
            for name in ("forward", "extra_repr", "_get_name"):
                module.__dict__.pop(name, None)
        for hook in self.hooks:
            hook.remove()
        if self.modeling is not None:
            for name, value in self.globals.items():
                setattr(self.modeling, name, value)


def _decoder(model: Any):  # type: ignore[no-untyped-def]
    return getattr(model, model.base_model_prefix, model)


def _patch(model: Any, patches: _Patches) -> None:
    from liger_kernel.transformers.rope import liger_rotary_pos_emb

    modeling = sys.modules[type(model).__module__]
    patches.modeling = modeling
    before = dict(vars(modeling))
    decoder = _decoder(model)
    patches.modules = [decoder.norm] + [getattr(layer, name) for layer in decoder.layers
                                        for name in ("mlp", "input_layernorm", "post_attention_layernorm")]
    try:
        _liger_patch_fn(model.config.model_type)(
            model=model, rope=False, swiglu=True, rms_norm=True, cross_entropy=False, fused_linear_cross_entropy=False
        )
    finally:
        # liger also swaps the classes in the modeling module (for models built later): put them back
        for name, value in before.items():
            if vars(modeling).get(name) is not value:
                setattr(modeling, name, value)
    original = modeling.apply_rotary_pos_emb
    if not hasattr(original, "_cloudtune_original"):
        patches.globals["apply_rotary_pos_emb"] = original
        modeling.apply_rotary_pos_emb = _rope_dispatcher(original, liger_rotary_pos_emb)
    rotary = getattr(decoder, "rotary_emb", None)
    if rotary is not None:
        patches.hooks.append(rotary.register_forward_hook(_tag_rope))


def _compare(name: str, got, want, rtol: float = 2e-2) -> float:  # type: ignore[no-untyped-def]
    got, want = got.detach().float(), want.detach().float()
    scale = max(want.abs().max().item(), 1e-6)
    error = (got - want).abs().max().item() / scale
    if not error <= rtol:
        raise AssertionError(f"{name}: max relative error {error:.3g} > {rtol}")
    return error


def _run_both(fn_ref, fn_new, inputs, seed: int = 0):  # type: ignore[no-untyped-def]
    """(outputs, input grads) of both functions for the same random upstream gradient."""
    import torch

    results = []
    for fn in (fn_ref, fn_new):
        xs = [x.detach().clone().requires_grad_(True) for x in inputs]  # clone keeps the layout (strides)
        outs = fn(*xs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        upstream = [torch.randn(o.shape, generator=generator).to(o.device, o.dtype) for o in outs]
        grads = torch.autograd.grad(outs, xs, upstream)
        results.append((outs, grads))
    return results


def check(model: Any, patches: _Patches, autocast: Any = None) -> dict[str, float]:
    """The patched first-layer norm and MLP, and the rotary function on a packed position run,
    forward and backward against transformers' own forward on the same module."""
    import contextlib

    import torch

    decoder = _decoder(model)
    layer = decoder.layers[0]
    device = next(decoder.parameters()).device
    dtype = decoder.norm.weight.dtype
    generator = torch.Generator(device="cpu").manual_seed(0)
    hidden = torch.randn(1, 24, model.config.hidden_size, generator=generator).to(device, dtype)
    figures: dict[str, float] = {}
    ctx = autocast if autocast is not None else contextlib.nullcontext()
    for name in ("input_layernorm", "mlp"):
        module = getattr(layer, name)
        with ctx:
            (ref, ref_g), (got, got_g) = _run_both(lambda x, m=module: type(m).forward(m, x), module, [hidden])
        figures[name] = max(_compare(name, got[0], ref[0]), _compare(f"{name} grad", got_g[0], ref_g[0]))
    rotary = getattr(decoder, "rotary_emb", None)
    if rotary is not None and "apply_rotary_pos_emb" in vars(patches.modeling):
        heads = model.config.num_attention_heads
        head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // heads
        positions = torch.tensor([list(range(10)) + list(range(14))], device=device)  # two packed sequences
        cos, sin = rotary(hidden, positions)
        q = torch.randn(1, 24, heads, head_dim, generator=generator).to(device, dtype)
        k = torch.randn(1, 24, max(1, heads // 2), head_dim, generator=generator).to(device, dtype)
        dispatcher = patches.modeling.apply_rotary_pos_emb
        original = dispatcher._cloudtune_original

        def attention_layout(fn):  # type: ignore[no-untyped-def]
            # as the attention layers call it: a projection's output (not a leaf; Liger rotates it
            # in place), viewed (batch, tokens, heads, dim) and transposed to (batch, heads, tokens, dim)
            return lambda a, b: fn((a * 1).transpose(1, 2), (b * 1).transpose(1, 2), cos, sin)

        (ref, ref_g), (got, got_g) = _run_both(attention_layout(original), attention_layout(dispatcher), [q, k])
        figures["rope"] = max(_compare("rope q", got[0], ref[0]), _compare("rope k", got[1], ref[1]),
                              *(_compare("rope grad", a, b) for a, b in zip(got_g, ref_g)))
    return figures


def apply(model: Any, mode: str, device: str, autocast_factory: Any = None, *, sharded: bool = False) -> tuple[str, str]:
    """Patch ``model`` (a transformers model, before PEFT) according to ``mode``; returns (path,
    why): path ``liger`` or ``torch``. Never raises for a model or machine it cannot help."""
    if mode not in MODES:
        raise ValueError(f"layer_kernels must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "torch":
        return "torch", "asked for"
    if sharded:
        return "torch", "FSDP-sharded base (Liger's kernels on sharded norm weights are not checked)"
    patches = _Patches()
    try:
        reason = why_not(model.config, device)
        if reason is None and next(model.parameters()).device.type != "cuda":
            reason = "the base is not on the GPU yet (sharded later)"
        if reason is not None:
            return "torch", reason
        _patch(model, patches)
        figures = check(model, patches, autocast_factory() if autocast_factory else None)
    except Exception as exc:  # noqa: BLE001 - any failure: undo, keep torch, say why
        patches.undo()
        return "torch", f"Liger's functional check failed: {type(exc).__name__}: {exc}"
    worst = ", ".join(f"{name} {value:.1e}" for name, value in figures.items())
    return "liger", f"RMSNorm, SwiGLU, RoPE for {model.config.model_type}; checked against transformers (max rel. error {worst})"
