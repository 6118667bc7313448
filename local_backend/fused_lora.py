"""LoRA fused into the frozen base layer's output (option ``lora_kernel``).

PEFT's LoRA forward over a frozen base (``peft.tuners.lora.Linear`` and ``Linear4bit``)
runs the base, clones its output (4-bit), applies dropout to a copy of the input, computes
``B(A(x))`` as a full-size (tokens x out_features) tensor, scales it into another one and adds
it into a third: three full-size passes and allocations per layer that autograd keeps or
frees one by one. :class:`FusedLoRA` computes

    y = base(x) + scale * (dropout(x) @ A^T) @ B^T

with the LoRA product added into the base output in place (one ``addmm_`` with
``alpha=scale``), and saves only what the backward pass needs: the input (which the next
projection of the same input saves anyway), the dropout mask as booleans when there is
dropout, and ``h = dropout(x) @ A^T`` (tokens x r). Backward computes dB, dA and dx, dx
through the base as ``grad @ W`` with W dequantised for a 4-bit base, the way bitsandbytes'
own ``MatMul4Bit`` backward does.

It replaces the ``forward`` of each eligible LoRA layer instance (one unmerged, non-DoRA
adapter over a frozen ``nn.Linear`` or bitsandbytes ``Linear4bit``); anything else, and
any call the fused path does not cover (adapters disabled or merged, several active
adapters, extra arguments), keeps PEFT's forward. ``auto`` uses it on CUDA only and only
after a one-time functional check: forward and backward of a real layer of each base kind
in the model, on a few tokens under the trainer's autocast, against PEFT's forward
(:func:`check_layer`).
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

MODES = ("auto", "fused", "peft")
_ATTR = "_cloudtune_fused_adapter"


def _is_4bit(base: Any) -> bool:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return isinstance(base, bnb.nn.Linear4bit)


def _base_input_grad(base: Any, grad):  # type: ignore[no-untyped-def]
    """grad @ W for the frozen base: for 4-bit, W dequantised in the layer's compute dtype, the
    way bitsandbytes' own ``MatMul4Bit`` backward does (its forward ran in that dtype)."""
    if _is_4bit(base):
        import bitsandbytes.functional as bnbf

        dtype = base.compute_dtype or grad.dtype
        weight = bnbf.dequantize_4bit(base.weight.data, base.weight.quant_state).to(dtype)
        return (grad.to(dtype) @ weight).to(grad.dtype)
    return grad @ base.weight.to(grad.dtype)


def _dropout(x, p: float):  # type: ignore[no-untyped-def]
    """(dropout(x), boolean keep-mask), drawing the same random numbers as ``nn.Dropout`` so a
    seeded run keeps the same positions as PEFT's path: torch's fused dropout on accelerators,
    a Bernoulli draw over a tensor like the input on CPU (torch's ``_dropout_impl``)."""
    import torch

    if x.device.type != "cpu":
        out, mask = torch.native_dropout(x, p, True)
        return out, mask
    noise = torch.empty_like(x).bernoulli_(1 - p)
    mask = noise.bool()
    return x * noise.div_(1 - p), mask


def _function():  # type: ignore[no-untyped-def]
    import torch

    class FusedLoRA(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, lora_a, lora_b, base, scale, p, dropout_dtype):  # type: ignore[no-untyped-def]
            device = x.device.type
            autocast = torch.is_autocast_enabled(device)
            # PEFT: under autocast the LoRA matmuls run in the autocast dtype; without, in the LoRA weights' dtype
            dtype = torch.get_autocast_dtype(device) if autocast else lora_a.dtype
            y = base(x)  # the frozen base exactly as PEFT calls it (autocast still applies here)
            if not y.is_contiguous():
                y = y.contiguous()
            with torch.autocast(device, enabled=False):
                x2 = x.reshape(-1, x.shape[-1])
                mask = None
                if p > 0:  # on the dtype PEFT applies dropout to: the same random draws, the same mask
                    x2, mask = _dropout(x2.to(dropout_dtype or dtype), p)
                x2 = x2.to(dtype)
                h = x2 @ lora_a.to(dtype).t()  # tokens x r: all the LoRA path keeps
                del x2
                y2 = y.view(-1, y.shape[-1])
                y2.addmm_(h.to(y.dtype), lora_b.to(y.dtype).t(), alpha=scale)
            ctx.base, ctx.scale, ctx.p, ctx.dtype = base, scale, p, dtype
            ctx.save_for_backward(x, lora_a, lora_b, h, mask)
            return y

        @staticmethod
        def backward(ctx, grad):  # type: ignore[no-untyped-def]
            x, lora_a, lora_b, h, mask = ctx.saved_tensors
            dtype, scale = ctx.dtype, ctx.scale
            need_x, need_a, need_b = ctx.needs_input_grad[:3]
            dx = da = db = None
            with torch.autocast(grad.device.type, enabled=False):
                g = grad.reshape(-1, grad.shape[-1])
                gd = g.to(dtype)
                if need_b:
                    db = (gd.t() @ h).mul_(scale).to(lora_b.dtype)
                gh = (gd @ lora_b.to(dtype)).mul_(scale)  # tokens x r
                if need_a:
                    xd = x.reshape(-1, x.shape[-1]).to(dtype)
                    if mask is not None:
                        xd = xd * mask * (1.0 / (1.0 - ctx.p))
                    da = (gh.t() @ xd).to(lora_a.dtype)
                    del xd
                if need_x:
                    dx = _base_input_grad(ctx.base, g)  # through the frozen base
                    if mask is None:  # the LoRA path's dx added in place, like the forward's product
                        dx.addmm_(gh.to(dx.dtype), lora_a.to(dx.dtype))
                    else:
                        lora_dx = (gh @ lora_a.to(dtype)) * mask * (1.0 / (1.0 - ctx.p))
                        dx.add_(lora_dx.to(dx.dtype))
                    dx = dx.to(x.dtype).view(x.shape)
            return dx, da, db, None, None, None, None

    return FusedLoRA


_FUNCTION = None


def fused_lora(x, lora_a, lora_b, base, scale: float, p: float = 0.0, dropout_dtype=None):  # type: ignore[no-untyped-def]
    """``base(x) + scale * (dropout_p(x) @ lora_a^T) @ lora_b^T`` with the fused backward
    (dropout drawn on a tensor of ``dropout_dtype``, default the LoRA matmuls' dtype)."""
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _function()
    return _FUNCTION.apply(x, lora_a, lora_b, base, float(scale), float(p), dropout_dtype)


def _dropout_dtype(layer, x):  # type: ignore[no-untyped-def]
    """The dtype PEFT's forward applies dropout in: its Linear casts the input to the LoRA weights'
    dtype, its Linear4bit does so only without autocast."""
    import torch

    weight_dtype = layer.lora_A[getattr(layer, _ATTR, None) or next(iter(layer.lora_A.keys()))].weight.dtype
    if not getattr(layer, "cast_input_dtype_enabled", True):
        return x.dtype
    if type(layer).__name__ == "Linear4bit" and torch.is_autocast_enabled(x.device.type):
        return x.dtype
    return weight_dtype


# ---------------------------------------------------------------- PEFT layers
def _peft_classes() -> tuple:
    from peft.tuners import lora

    classes = [lora.Linear]
    try:
        from peft.tuners.lora.bnb import Linear4bit

        classes.append(Linear4bit)
    except ImportError:
        pass
    return tuple(classes)


def why_not(layer: Any) -> str | None:
    """None when ``layer`` (a PEFT LoRA layer) can take the fused path, else why not."""
    import torch

    if type(layer) not in _peft_classes():
        return f"{type(layer).__name__} layer"
    adapters = list(layer.lora_A.keys())
    if len(adapters) != 1:
        return f"{len(adapters)} adapters"
    name = adapters[0]
    if getattr(layer, "lora_variant", {}).get(name) is not None or getattr(layer, "use_dora", {}).get(name):
        return "DoRA or another LoRA variant"
    if getattr(layer, "fan_in_fan_out", False):
        return "fan_in_fan_out weights"
    base = layer.get_base_layer()
    if not (type(base) is torch.nn.Linear or _is_4bit(base)):
        return f"{type(base).__name__} base"
    if any(p.requires_grad for p in base.parameters()):
        return "trainable base weights"
    if _is_4bit(base) and getattr(base.weight.quant_state, "packing_format_for_cpu", False):
        return "4-bit weights repacked for CPU inference"
    dropout = layer.lora_dropout[name]
    if not isinstance(dropout, (torch.nn.Dropout, torch.nn.Identity)):
        return f"{type(dropout).__name__} dropout"
    if getattr(layer, "lora_bias", {}).get(name):
        return "LoRA bias"
    return None


def _fused_forward(self, x, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Installed as a LoRA layer's ``forward``: the fused path when this call is plain LoRA
    training or inference with the one adapter, else PEFT's own forward."""
    name = getattr(self, _ATTR)
    if args or kwargs or self.disable_adapters or self.merged or list(self.active_adapters) != [name]:
        return type(self).forward(self, x, *args, **kwargs)
    dropout = self.lora_dropout[name]
    p = dropout.p if dropout.__class__.__name__ == "Dropout" and self.training and dropout.training else 0.0
    lora_a, lora_b = self.lora_A[name].weight, self.lora_B[name].weight
    return fused_lora(x, lora_a, lora_b, self.get_base_layer(), self.scaling[name], p, _dropout_dtype(self, x) if p else None)


def install(layer: Any) -> None:
    setattr(layer, _ATTR, next(iter(layer.lora_A.keys())))
    layer.forward = types.MethodType(_fused_forward, layer)


def uninstall(layer: Any) -> None:
    layer.__dict__.pop("forward", None)
    layer.__dict__.pop(_ATTR, None)


def _error(name: str, got, want, rtol: float) -> float:  # type: ignore[no-untyped-def]
    got, want = got.detach().float(), want.detach().float()
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    error = (got - want).abs().max().item()
    limit = rtol * max(want.abs().max().item(), 1e-6)
    if not error <= limit:
        raise AssertionError(f"{name}: max error {error:.3g} > {limit:.3g}")
    return error / max(want.abs().max().item(), 1e-6)


def check_layer(layer: Any, autocast: Any = None, *, tokens: int = 8, seed: int = 0) -> dict[str, float]:
    """Forward and backward of ``layer`` (a real PEFT LoRA layer of the model) on a few random
    tokens, through PEFT's forward and through the fused path under ``autocast`` (the trainer's),
    with B temporarily random (it starts at zero) and the layer in training mode (dropout on
    when the adapter has it, the same mask through the same seed). Returns the relative errors
    of output, dx, dA and dB; raises AssertionError when they disagree. Nothing of the layer
    changes (weights, mode, .grad)."""
    import torch

    name = next(iter(layer.lora_A.keys()))
    lora_a, lora_b = layer.lora_A[name].weight, layer.lora_B[name].weight
    base = layer.get_base_layer()
    device = lora_a.device
    dtype = torch.bfloat16 if device.type == "cuda" else next(
        (p.dtype for p in base.parameters() if p.is_floating_point()), torch.float32)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(2, tokens, base.in_features, generator=generator).to(device, dtype)
    grad_out = torch.randn(2, tokens, base.out_features, generator=generator).to(device)
    saved_b, was_training = lora_b.data.clone(), layer.training
    results = []
    try:
        lora_b.data.copy_(torch.randn(lora_b.shape, generator=generator).to(device, lora_b.dtype) * 0.1)
        layer.train()
        for fused in (False, True):
            xi = x.clone().requires_grad_(True)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                with autocast if autocast is not None else contextlib.nullcontext():
                    if fused:
                        y = _fused_forward_for_check(layer, xi)
                    else:
                        y = type(layer).forward(layer, xi)
            grads = torch.autograd.grad(y, [xi, lora_a, lora_b], grad_out.to(y.dtype))
            results.append((y.detach(), *grads))
    finally:
        lora_b.data.copy_(saved_b)
        layer.train(was_training)
    (ref, *ref_grads), (got, *got_grads) = results
    exact = autocast is None and dtype == torch.float32 and lora_a.dtype == torch.float32
    rtol = 1e-4 if exact else 2e-2  # bf16 rounds at ~4e-3 of the largest value
    figures = {"output": _error("output", got, ref, rtol)}
    for label, a, b in zip(("dx", "dA", "dB"), got_grads, ref_grads):
        figures[label] = _error(label, a, b, rtol * 2)
    return figures


def _fused_forward_for_check(layer, x):  # type: ignore[no-untyped-def]
    name = next(iter(layer.lora_A.keys()))
    dropout = layer.lora_dropout[name]
    p = dropout.p if dropout.__class__.__name__ == "Dropout" else 0.0
    return fused_lora(x, layer.lora_A[name].weight, layer.lora_B[name].weight, layer.get_base_layer(),
                      layer.scaling[name], p, _dropout_dtype(layer, x) if p else None)


def apply(model: Any, mode: str, device: str, autocast_factory: Any = None, *, sharded: bool = False) -> tuple[str, str]:
    """Install the fused path on ``model``'s eligible LoRA layers according to ``mode``;
    returns (path, why): path ``fused`` or ``peft``. Never raises for a model it cannot help."""
    try:
        return _apply(model, mode, device, autocast_factory, sharded=sharded)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unforeseen layer layout: PEFT's forward everywhere, said why
        for module in model.modules():
            if _ATTR in module.__dict__:
                uninstall(module)
        return "peft", f"the fused path could not be prepared: {type(exc).__name__}: {exc}"


def _apply(model: Any, mode: str, device: str, autocast_factory: Any = None, *, sharded: bool = False) -> tuple[str, str]:
    if mode not in MODES:
        raise ValueError(f"lora_kernel must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "peft":
        return "peft", "asked for"
    if mode == "auto" and device != "cuda":
        return "peft", "auto fuses on CUDA only (lora_kernel=fused to use it here)"
    if sharded:
        return "peft", "FSDP-sharded base (the fused backward reads the whole base weight)"
    layers, skipped = [], {}
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "get_base_layer"):
            reason = why_not(module)
            if reason is None:
                layers.append(module)
            else:
                skipped[reason] = skipped.get(reason, 0) + 1
    if not layers:
        return "peft", "no eligible LoRA layer" + (f" ({_count(skipped)})" if skipped else "")
    samples: dict[str, Any] = {}
    for layer in layers:
        samples.setdefault(type(layer.get_base_layer()).__name__, layer)
    checked = []
    for kind, layer in samples.items():
        try:
            figures = check_layer(layer, autocast_factory() if autocast_factory else None)
        except Exception as exc:  # noqa: BLE001 - any failure means PEFT's forward, reported
            return "peft", f"the fused path's functional check failed on a {kind} layer: {type(exc).__name__}: {exc}"
        checked.append(f"{kind} max rel. error {max(figures.values()):.1e}")
    for layer in layers:
        install(layer)
    why = f"{len(layers)} layers, checked against PEFT's forward ({'; '.join(checked)})"
    if skipped:
        why += f"; PEFT's forward kept for {_count(skipped)}"
    return "fused", why


def _count(reasons: dict[str, int]) -> str:
    return ", ".join(f"{n} ({reason})" for reason, n in reasons.items())
