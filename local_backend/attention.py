"""Variable-length attention for padding-free batches, through transformers' attention
interface.

A padding-free micro-batch is one row holding every sequence back to back; position ids
restart at 0 at each sequence, and the collator turns those restarts into cumulative
sequence lengths (``cu_seq_lens_q``/``max_length_q``, the names transformers forwards to
attention functions). Because the boundaries come from position ids over the whole
flattened batch, sequences stay separate at any batch size (unlike a flash kernel that
only sees one row's positions).

On CUDA the kernel is torch's own ``torch.nn.attention.varlen.varlen_attn`` (flash
varlen); elsewhere each sequence runs through ``scaled_dot_product_attention`` on its
own, which is slow but exact, so CPU tests check the same code path. Batches without
sequence lengths (padded batches with an attention mask) go to transformers' SDPA.
Registered under its own name, so transformers builds no 4-D mask for it.
"""

from __future__ import annotations

from typing import Any

NAME = "cloudtune_varlen"
_registered = False


def _segments_sdpa(query, key, value, cu_seq_lens, scaling):  # type: ignore[no-untyped-def]
    """(T, H, D) tensors, one causal SDPA per sequence."""
    import torch
    import torch.nn.functional as F

    outputs = []
    bounds = cu_seq_lens.tolist()
    for start, stop in zip(bounds, bounds[1:]):
        q = query[start:stop].transpose(0, 1)
        k = key[start:stop].transpose(0, 1)
        v = value[start:stop].transpose(0, 1)
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scaling, enable_gqa=q.shape[0] != k.shape[0]
        )
        outputs.append(out.transpose(0, 1))
    return torch.cat(outputs, dim=0)


def _torch_varlen():  # type: ignore[no-untyped-def]
    """torch's flash varlen kernel, where this torch has it (older ones: exact per-sequence SDPA)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def varlen_attention_forward(  # type: ignore[no-untyped-def]
    module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
):
    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if cu_seq_lens is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError("padding-free attention expects the batch flattened into one row")
    # transformers hands (batch, heads, tokens, dim); the varlen kernels take (tokens, heads, dim)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    varlen_attn = _torch_varlen() if q.is_cuda else None
    if varlen_attn is not None:
        max_length = int(kwargs["max_length_q"])
        out = varlen_attn(
            q, k, v, cu_seq_lens, cu_seq_lens, max_length, max_length,
            scale=scaling, window_size=(-1, 0), enable_gqa=q.shape[1] != k.shape[1],
        )
    else:
        out = _segments_sdpa(q, k, v, cu_seq_lens, scaling)
    return out.unsqueeze(0), None


def register() -> str:
    """Register the attention function once; returns its name for ``attn_implementation``."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, varlen_attention_forward)
        _registered = True
    return NAME
