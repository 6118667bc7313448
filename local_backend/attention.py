"""Variable-length attention for padding-free batches, through transformers' attention
interface.

A padding-free micro-batch is one row holding every sequence back to back; position ids
restart at 0 at each sequence, and the collator turns those restarts into cumulative
sequence lengths (``cu_seq_lens_q``/``max_length_q``, the names transformers forwards to
attention functions, plus ``cu_seq_lens_host``, the same boundaries as a host tuple so
the exact path below never reads the GPU). Because the boundaries come from position ids
over the whole flattened batch, sequences stay separate at any batch size.

Two paths, both honouring what the model's attention layer asks for (transformers passes
``sliding_window``, ``softcap`` and ``dropout`` to attention functions):

- **fast**: torch's flash variable-length kernel (``torch.nn.attention.varlen``), CUDA only.
  Its keywords changed between torch releases (``window_size=`` and ``enable_gqa=`` in newer
  ones, ``window_size=`` without ``enable_gqa=`` in torch 2.11 (seen on an H200, 2026-12-04),
  ``is_causal=`` in torch 2.10), so the call is chosen by a one-time functional
  check (:func:`prepare`): each candidate call is made on a tiny tensor shaped like the
  model's heads, forward and backward, and compared with the exact path; the first that
  agrees is kept for that (head size, grouped-query, window) combination. It has no
  soft-capping and no dropout: a layer that needs either takes the exact path.
- **exact**: one attention per sequence (``scaled_dot_product_attention`` with a causal,
  optionally windowed mask, and dropout; with soft-capping, the scores are computed,
  capped with tanh, masked and normalised in the open). Slow but exact, on any device.

Batches without sequence lengths (padded batches with an attention mask) go to
transformers' SDPA. Registered under its own name, so transformers builds no 4-D mask for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NAME = "cloudtune_varlen"
_registered = False
EXACT = "exact per-sequence attention (SDPA)"


@dataclass(frozen=True)
class FastCall:
    name: str
    call: Callable[..., Any]  # (q, k, v, cu_seq_lens, max_length, scale, window, gqa) -> out
    supports_window: bool


# (head_dim, grouped-query, window or None) -> the fast call that passed the functional check
_chosen: dict[tuple[int, bool, int | None], FastCall | None] = {}
# what was tried, for reports: key -> "name: ok" / "name: <error>"
probe_log: dict[tuple[int, bool, int | None], list[str]] = {}


def _repeat_kv(key, value, groups: int):  # type: ignore[no-untyped-def]
    if groups == 1:
        return key, value
    return key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)


def fast_candidates() -> list[FastCall]:
    """The calls of torch's flash varlen kernel this code knows, newest first (none when
    this torch has no ``torch.nn.attention.varlen``)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return []

    def windowed(q, k, v, cu, max_length, scale, window, gqa):  # type: ignore[no-untyped-def]
        left = -1 if window is None else window - 1  # transformers: keys with i - j < window
        return varlen_attn(q, k, v, cu, cu, max_length, max_length, scale=scale, window_size=(left, 0), enable_gqa=gqa)

    def windowed_repeat(q, k, v, cu, max_length, scale, window, gqa):  # type: ignore[no-untyped-def]
        left = -1 if window is None else window - 1
        k, v = _repeat_kv(k, v, q.shape[1] // k.shape[1])  # torch 2.11: no enable_gqa
        return varlen_attn(q, k, v, cu, cu, max_length, max_length, scale=scale, window_size=(left, 0))

    def causal(q, k, v, cu, max_length, scale, window, gqa):  # type: ignore[no-untyped-def]
        k, v = _repeat_kv(k, v, q.shape[1] // k.shape[1])
        return varlen_attn(q, k, v, cu, cu, max_length, max_length, is_causal=True, scale=scale)

    return [
        FastCall("torch varlen_attn(window_size=, enable_gqa=)", windowed, True),
        FastCall("torch varlen_attn(window_size=), key/value heads repeated", windowed_repeat, True),
        FastCall("torch varlen_attn(is_causal=)", causal, False),
    ]


def _window_mask(length: int, window: int | None, device):  # type: ignore[no-untyped-def]
    import torch

    rows = torch.arange(length, device=device)
    distance = rows[:, None] - rows[None, :]
    allowed = distance >= 0
    if window is not None:
        allowed &= distance < window
    return allowed


def _one_sequence(q, k, v, *, scale, window, softcap, dropout):  # type: ignore[no-untyped-def]
    """(H, n, D) query, (Hkv, n, D) key/value of one sequence."""
    import torch
    import torch.nn.functional as F

    length = q.shape[1]
    if softcap:
        k, v = _repeat_kv(k.transpose(0, 1), v.transpose(0, 1), q.shape[0] // k.shape[0])
        k, v = k.transpose(0, 1), v.transpose(0, 1)
        scores = torch.matmul(q, k.transpose(1, 2)) * (scale if scale is not None else q.shape[-1] ** -0.5)
        scores = torch.tanh(scores / softcap) * softcap
        scores = scores.masked_fill(~_window_mask(length, window, q.device), float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        weights = F.dropout(weights, p=dropout, training=dropout > 0)
        return torch.matmul(weights, v)
    gqa = q.shape[0] != k.shape[0]
    if window is not None and length > window:
        mask = _window_mask(length, window, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=gqa)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout, scale=scale, enable_gqa=gqa)


def exact_attention(query, key, value, bounds, *, scale, window=None, softcap=None, dropout=0.0):  # type: ignore[no-untyped-def]
    """(T, H, D) tensors; ``bounds`` the sequence starts and the end, as host integers."""
    import torch

    outputs = []
    for start, stop in zip(bounds, bounds[1:]):
        q, k, v = (t[start:stop].transpose(0, 1) for t in (query, key, value))
        out = _one_sequence(q, k, v, scale=scale, window=window, softcap=softcap, dropout=dropout)
        outputs.append(out.transpose(0, 1))
    return torch.cat(outputs, dim=0)


def _window_of(value: Any) -> int | None:
    return int(value) if value else None


def prepare(head_dim: int, grouped: bool, window: int | None, device: Any = "cuda") -> FastCall | None:
    """Choose the fast call for one kind of attention layer, once, by a functional check:
    the exact call the forward will make, on a tiny bf16 tensor (two sequences, one longer
    than the window), forward and backward, against the exact path in fp32."""
    key = (int(head_dim), bool(grouped), _window_of(window))
    if key in _chosen:
        return _chosen[key]
    chosen, tried = _probe(key, device)
    _chosen[key] = chosen
    probe_log[key] = tried
    return chosen


def _probe(key: tuple[int, bool, int | None], device: Any) -> tuple[FastCall | None, list[str]]:
    head_dim, grouped, _ = key
    import torch

    tried: list[str] = []
    chosen = None
    if str(device).startswith("cuda") and torch.cuda.is_available():
        heads, kv_heads = (4, 2) if grouped else (4, 4)
        window = key[2]
        longest = max(24, (window or 0) + 8) if window is not None and window < 256 else 24
        bounds = (0, 9, 9 + longest)
        generator = torch.Generator(device="cpu").manual_seed(0)
        shapes = [(bounds[-1], heads, head_dim), (bounds[-1], kv_heads, head_dim), (bounds[-1], kv_heads, head_dim)]
        base = [torch.randn(s, generator=generator).to(device) for s in shapes]
        grad_out = torch.randn(shapes[0], generator=generator).to(device)
        cu = torch.tensor(bounds, dtype=torch.int32, device=device)
        scale = 1.0 / math.sqrt(head_dim)
        with torch.autocast("cuda", enabled=False), torch.enable_grad():
            ref_in = [t.clone().requires_grad_(True) for t in base]
            reference = exact_attention(*ref_in, bounds, scale=scale, window=window)
            reference.backward(grad_out)
            for candidate in fast_candidates():
                if window is not None and not candidate.supports_window:
                    tried.append(f"{candidate.name}: no sliding window")
                    continue
                try:
                    inputs = [t.to(torch.bfloat16).requires_grad_(True) for t in base]
                    out = candidate.call(*inputs, cu, longest, scale, window, grouped)
                    out.backward(grad_out.to(torch.bfloat16))
                    errors = [(out.float() - reference).abs().max().item()]
                    errors += [(a.grad.float() - b.grad).abs().max().item() for a, b in zip(inputs, ref_in)]
                except Exception as exc:  # noqa: BLE001 - a call this torch does not take
                    tried.append(f"{candidate.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
                    continue
                if max(errors) > 5e-2:
                    tried.append(f"{candidate.name}: disagrees with the exact path (max error {max(errors):.3g})")
                    continue
                tried.append(f"{candidate.name}: ok (max error {max(errors):.2g})")
                chosen = candidate
                break
    else:
        tried.append("no CUDA device: exact path")
    return chosen, tried


# Why FlashAttention-3 is or is not used, decided once per process (None: not yet asked).
fa3_state: str | None = None


def flash_attention_3(device: Any) -> str:
    """Torch's FlashAttention-3 behind its flash kernels (the varlen call included), where this
    torch offers it (``torch.nn.attention.activate_flash_attention_impl("FA3")``, a prototype in
    torch 2.13's ``torch/nn/attention/_fa3.py``) and FA3's kernels import (``flash_attn_interface``,
    FlashAttention's separately built Hopper package; torch does not ship them), on a Hopper card.
    Once activated it is kept only if the fast varlen call passes its functional check with it
    (forward and backward against the exact path); otherwise torch's built-in FlashAttention-2
    is restored. ``CLOUDTUNE_FLASH_ATTENTION_3=off`` never tries. Returns the reason, once."""
    global fa3_state
    if fa3_state is not None:
        return fa3_state
    import os

    import torch

    try:
        fa3_state = _try_fa3(device, torch, os.environ.get("CLOUDTUNE_FLASH_ATTENTION_3", "auto"))
    except Exception as exc:  # noqa: BLE001 - never a reason to stop training: torch's FA2 stays
        fa3_state = f"not used: {type(exc).__name__}: {str(exc)[:200]}"
    return fa3_state


def _try_fa3(device: Any, torch: Any, setting: str) -> str:  # type: ignore[no-untyped-def]
    if setting == "off":
        return "not tried (CLOUDTUNE_FLASH_ATTENTION_3=off)"
    if not (str(device).startswith("cuda") and torch.cuda.is_available()):
        return "not used: no CUDA device"
    try:
        from torch.nn import attention as torch_attention

        offered = torch_attention.list_flash_attention_impls()
        activate = torch_attention.activate_flash_attention_impl
    except (ImportError, AttributeError):
        return f"not offered by torch {torch.__version__} (no torch.nn.attention.activate_flash_attention_impl)"
    if "FA3" not in offered:
        return f"not offered by torch {torch.__version__} (its flash attention impls: {offered or 'none'})"
    major, minor = torch.cuda.get_device_capability()
    if major != 9:
        return f"not used: FA3 is for Hopper (SM 9.x), this card is SM {major}.{minor}"
    try:
        activate("FA3")
    except Exception as exc:  # noqa: BLE001 - e.g. flash_attn_interface (FA3's kernels) not installed
        # whatever a release set before failing goes back to torch's own FA2 (torch 2.13 imports first)
        try:
            if torch_attention.current_flash_attention_impl() is not None:
                torch_attention.restore_flash_attention_impl()
            reset = getattr(getattr(torch, "_C", None), "_set_sdp_use_fa3", None)
            if reset is not None:
                reset(False)
        except Exception:  # noqa: BLE001 - a release without these: nothing was set
            pass
        return f"offered by torch {torch.__version__} but not activated: {type(exc).__name__}: {str(exc)[:200]}"
    try:
        chosen, tried = _probe((128, False, None), device)
    except Exception as exc:  # noqa: BLE001 - the probe itself broke under FA3
        chosen, tried = None, [f"{type(exc).__name__}: {str(exc)[:200]}"]
    if chosen is None:
        torch_attention.restore_flash_attention_impl()
        return "activated, but the varlen functional check failed with it, so FA2 was restored: " + "; ".join(tried)
    _chosen.clear()  # calls checked under FA2 before this are checked again under FA3
    probe_log.clear()
    return f"active (torch {torch.__version__}; functional check: {tried[-1]})"


def layer_needs(config: Any) -> list[tuple[int | None, float | None]]:
    """(sliding window, soft-cap) of each kind of attention layer in a transformers config."""
    window = _window_of(getattr(config, "sliding_window", None))
    softcap = getattr(config, "attn_logit_softcapping", None) or None
    types = getattr(config, "layer_types", None)
    if window is not None and types:
        kinds = {window if kind == "sliding_attention" else None for kind in types}
    else:
        kinds = {window}
    return sorted(((w, softcap) for w in kinds), key=lambda pair: pair[0] or 0)


def prepare_model(config: Any, device: Any) -> list[str]:
    """Run the functional checks for every kind of attention layer of ``config``; returns one
    line per kind saying which path it takes and why (the trainer reports them), and on a CUDA
    machine a last line saying whether FlashAttention-3 is behind torch's flash calls."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    heads = config.num_attention_heads
    grouped = (getattr(config, "num_key_value_heads", None) or heads) != heads
    dropout = float(getattr(config, "attention_dropout", 0.0) or 0.0)
    lines = []
    fa3 = flash_attention_3(device) if str(device).startswith("cuda") else None  # before the checks below run
    for window, softcap in layer_needs(config):
        what = "full" if window is None else f"sliding window {window}"
        if softcap:
            lines.append(f"{what}: {EXACT} (attention soft-capping {softcap:g}; torch's flash kernel has none)")
            continue
        fast = prepare(head_dim, grouped, window, device)
        if fast is None:
            why = "; ".join(probe_log.get((head_dim, grouped, window), [])) or "no fast kernel"
            lines.append(f"{what}: {EXACT} ({why})")
        else:
            lines.append(f"{what}: {fast.name}" + (f"; {EXACT} while training (attention dropout {dropout:g})" if dropout else ""))
    if fa3 and not fa3.startswith("not used: no CUDA"):
        lines.append(f"FlashAttention-3: {fa3}")  # on a CUDA machine, one more line: whether FA3 is behind the flash calls
    return lines


def varlen_attention_forward(  # type: ignore[no-untyped-def]
    module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
):
    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if cu_seq_lens is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError("padding-free attention expects the batch flattened into one row")
    window = _window_of(kwargs.get("sliding_window"))
    softcap = kwargs.get("softcap") or None
    # transformers hands (batch, heads, tokens, dim); the varlen kernels take (tokens, heads, dim)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    fast = None
    if q.is_cuda and not softcap and not dropout:
        fast = _chosen.get((q.shape[-1], q.shape[1] != k.shape[1], window))
    if fast is not None:
        out = fast.call(q, k, v, cu_seq_lens, int(kwargs["max_length_q"]), scaling, window, q.shape[1] != k.shape[1])
    else:
        bounds = kwargs.get("cu_seq_lens_host") if cu_seq_lens.is_cuda else None
        if bounds is None or len(bounds) != cu_seq_lens.shape[0] or bounds[-1] != q.shape[0]:
            bounds = cu_seq_lens.tolist()  # on the host already, or a caller without a (matching) host copy
        out = exact_attention(q, k, v, list(bounds), scale=scaling, window=window, softcap=softcap, dropout=dropout)
    return out.unsqueeze(0), None


def register() -> str:
    """Register the attention function once; returns its name for ``attn_implementation``."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, varlen_attention_forward)
        _registered = True
    return NAME
