"""Token losses on labelled positions only, and the DPO objective.

Only positions whose next token is labelled need logits. Three ways to get their
negative log-likelihoods, equal up to float rounding (tests/local/test_losses.py):

- ``plain``: the model's full logits (batch x sequence x vocabulary), the reference;
- ``chunked``: the last hidden states at labelled positions go through the output layer
  a chunk of tokens at a time, each chunk under activation checkpointing, so at most one
  chunk of logits exists at any time, in the forward pass and in the backward pass;
- ``liger``: liger-kernel's fused linear cross-entropy, when asked for, where it is
  installed and the tensors are on CUDA (it returns a sum, so DPO, which needs per-sequence
  sums, uses ``chunked``). Not the default: on an H200 it trained no faster than ``chunked``
  and synchronised with the host 3 times per step (benchmarks/RESULTS.md, 2026-12-04).
"""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100
DEFAULT_CHUNK_TOKENS = 1024


def labelled_targets(labels):  # type: ignore[no-untyped-def]
    """(mask over positions 0..L-2 whose next token is labelled, those next tokens)."""
    next_labels = labels[:, 1:]
    mask = next_labels != IGNORE_INDEX
    return mask, next_labels[mask]


def labelled_positions(labels):  # type: ignore[no-untyped-def]
    """Flat indices into the (B x (L-1)) predicting positions whose next token is labelled,
    and those next tokens. Computed where ``labels`` lives (the host, before the batch is
    copied), so selecting rows on the GPU later needs no device-to-host sync."""
    mask, targets = labelled_targets(labels)
    return mask.reshape(-1).nonzero().squeeze(1), targets


def select_positions(states, index):  # type: ignore[no-untyped-def]
    """Rows of ``states`` (B x L x D) at flat predicting positions ``index`` (see above)."""
    return states[:, :-1].reshape(-1, states.shape[-1]).index_select(0, index)


def _softcap(logits, cap: float | None):  # type: ignore[no-untyped-def]
    # Gemma-2 style final logit soft-capping; a no-op for Llama, Phi-3, Qwen, SmolLM2.
    if not cap:
        return logits
    import torch

    return torch.tanh(logits / cap) * cap


def plain_token_nll(logits, labels, *, softcap: float | None = None, positions=None):  # type: ignore[no-untyped-def]
    """Per-token NLL at labelled positions from full logits (row-major order)."""
    import torch.nn.functional as F

    index, targets = positions if positions is not None else labelled_positions(labels)
    selected = _softcap(select_positions(logits, index).float(), softcap)
    return F.cross_entropy(selected, targets, reduction="none")


def plain_head(head):  # type: ignore[no-untyped-def]
    """(weight, bias) when ``F.linear`` on them IS the output layer's forward: a plain torch
    ``Linear`` over ordinary tensors. None otherwise: a quantised head (bitsandbytes'
    ``Linear4bit``/``Linear8bitLt`` keep packed weights in a ``Parameter`` subclass), a sharded
    one (an FSDP ``DTensor``), an adapter-wrapped one, or any other module; call the module then."""
    import torch

    if type(head) is not torch.nn.Linear:
        return None
    weight = head.weight
    if type(weight) not in (torch.nn.Parameter, torch.Tensor) or type(weight.data) is not torch.Tensor:
        return None
    return weight, head.bias


def _project(hidden, head, bias):  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    if isinstance(head, torch.nn.Module):
        return head(hidden)
    return F.linear(hidden, head, bias)


def _chunk_nll(hidden, head, bias, targets, softcap):  # type: ignore[no-untyped-def]
    import torch.nn.functional as F

    return F.cross_entropy(_softcap(_project(hidden, head, bias).float(), softcap), targets, reduction="none")


def chunked_token_nll(  # type: ignore[no-untyped-def]
    hidden, head, targets, *, bias=None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, softcap: float | None = None
):
    """Per-token NLL of ``hidden`` (n x H, labelled positions only) through the output layer,
    ``chunk_tokens`` rows at a time; logits are recomputed per chunk in the backward pass
    instead of being kept. ``head`` is the layer's weight (V x H, with ``bias``) or, where its
    weight cannot be multiplied directly (see :func:`plain_head`), the layer itself."""
    import torch
    from torch.utils.checkpoint import checkpoint

    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    if isinstance(head, torch.nn.Module):
        head_needs_grad = any(p.requires_grad for p in head.parameters())
    else:
        head_needs_grad = head.requires_grad
    pieces = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        stop = start + chunk_tokens
        if torch.is_grad_enabled() and (hidden.requires_grad or head_needs_grad):
            pieces.append(
                checkpoint(_chunk_nll, hidden[start:stop], head, bias, targets[start:stop], softcap, use_reentrant=False)
            )
        else:
            pieces.append(_chunk_nll(hidden[start:stop], head, bias, targets[start:stop], softcap))
    return torch.cat(pieces)


def liger_available(device: Any) -> bool:
    import importlib.util

    return str(device).startswith("cuda") and importlib.util.find_spec("liger_kernel") is not None


def liger_nll_sum(hidden, weight, targets, *, bias=None):  # type: ignore[no-untyped-def]
    """Summed NLL through liger-kernel's fused linear cross-entropy (CUDA only)."""
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss(reduction="sum")(weight, hidden, targets, bias)


def sequence_sums(values, sequence_ids, count: int):  # type: ignore[no-untyped-def]
    """Sum ``values`` (n,) into ``count`` buckets by ``sequence_ids`` (n,)."""
    return values.new_zeros(count).index_add(0, sequence_ids, values)


def dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float):  # type: ignore[no-untyped-def]
    """Per-pair DPO loss (Rafailov et al. 2023, eq. 7) from summed log-probabilities of the
    answers, and the implicit reward margin beta * (policy log-ratio - reference log-ratio)."""
    import torch.nn.functional as F

    margin = beta * ((policy_chosen - policy_rejected) - (reference_chosen - reference_rejected))
    return -F.logsigmoid(margin), margin
