"""DPO's reference log-probabilities, computed once before training (``dpo_reference``).

In LoRA DPO the reference model is the base with the adapter disabled, and the base is
frozen: the reference's summed log-probability of each answer is the same at every step of
the run. ``live`` recomputes it for every micro-batch (a second forward, without gradients,
beside the policy's); ``precompute`` computes it once for every training and validation
pair before the first optimiser step, keeps it on the host with each pair, and the step loop
then runs one forward (the policy's) per micro-batch. ``auto`` is ``precompute`` (one forward
fewer per step, the values cannot change), except when the run sees fewer pairs than it
would precompute (``max_steps`` cutting it short): then precomputing costs more forwards
than it saves, and ``live`` is chosen. The choice and why is one line of the job's events.

The precomputed values are written once to ``checkpoints/dpo_reference.pt`` (beside the
``step-*`` checkpoints, atomically, by rank 0), one (chosen, rejected) row per pair in the
order of the encoded data set, with a fingerprint of everything that decides them (the base
model, device and recipe, every pair's tokens and labels). A resumed run whose fingerprint
matches loads them instead of recomputing, so it trains on exactly the values the
interrupted run had. Every rank computes every pair (simple, and FSDP ranks must run their
forwards together anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Any

MODES = ("auto", "precompute", "live")
FILE_NAME = "dpo_reference.pt"


def choose(mode: str, *, pairs: int, pairs_seen: int) -> tuple[str, str]:
    """(precompute | live, why). ``pairs``: training + validation pairs precomputing would
    cover; ``pairs_seen``: the reference passes a live run would make (this rank)."""
    if mode == "precompute":
        return mode, "asked for"
    if mode == "live":
        return mode, "asked for: a reference forward beside the policy's every micro-batch"
    if mode != "auto":
        raise ValueError(f"dpo_reference must be one of {', '.join(MODES)}, not {mode!r}")
    if pairs_seen < pairs:
        return "live", f"the run sees {pairs_seen} pairs, fewer than the {pairs} precomputing would cover"
    return "precompute", "the base is frozen, so its log-probabilities never change: one forward fewer per step"


def fingerprint(trainer: Any, splits: dict[str, list]) -> str:
    config = trainer.config
    digest = hashlib.sha256()
    facts = [config.base_model, config.max_seq_len, config.quantize, trainer.device, trainer.recipe.description]
    digest.update(json.dumps(facts, default=str).encode())
    for name, pairs in splits.items():
        digest.update(f"{name}:{len(pairs)}".encode())
        for pair in pairs:
            for side in (pair.chosen, pair.rejected):
                digest.update(array("q", side.input_ids).tobytes())
                digest.update(array("q", side.labels).tobytes())
    return digest.hexdigest()


def compute(objective: Any, pairs: list, *, batch_size: int, padding_free: bool):  # type: ignore[no-untyped-def]
    """(n, 2) float32 tensor on the host: the base model's summed answer log-probabilities
    (chosen, rejected) of each pair, in order. Eval mode: the reference is deterministic."""
    import torch

    model = objective.trainer.model
    was_training = model.training
    model.eval()
    pieces = []
    try:
        with torch.no_grad(), model.disable_adapter():
            for start in range(0, len(pairs), batch_size):
                chosen, rejected = objective.sequence_logps(pairs[start : start + batch_size], padding_free=padding_free)
                pieces.append(torch.stack([chosen, rejected], dim=1).float())
    finally:
        model.train(was_training)
    if not pieces:
        return torch.zeros(0, 2)
    return torch.cat(pieces).cpu()  # one read back for the whole data set


def load(path: Path, expected: str) -> dict[str, Any] | None:
    """The stored values when they were computed for exactly this data and model."""
    import torch

    if not path.is_file():
        return None
    try:
        stored = torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged file is recomputed, not fatal
        return None
    if not isinstance(stored, dict) or stored.get("fingerprint") != expected:
        return None
    return stored


def save(path: Path, values: dict[str, Any], fingerprint_: str) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({**values, "fingerprint": fingerprint_}, tmp)
    os.replace(tmp, path)
