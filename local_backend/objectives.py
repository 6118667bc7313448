"""What a training step optimises: supervised fine-tuning (assistant-token cross-entropy)
or DPO. Both plug into the one training loop in :mod:`local_backend.trainer`, which owns
batching, gradient accumulation, checkpoints, resume and stop requests.

An objective turns a window of micro-batches into a loss SUM and a normaliser for the
window (labelled tokens for SFT, pairs for DPO), so gradient accumulation gives the same
gradient as one big batch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from local_backend import data as data_mod
from local_backend import preference
from local_backend.losses import dpo_loss, sequence_sums


class Supervised:
    name = "supervised"
    needs_token_values = False  # a summed loss is enough (liger's fused kernel can serve it)

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def read(self, path: str) -> list:
        return data_mod.read_chat_jsonl(Path(path))

    def split(self, items: list, fraction: float, seed: int) -> tuple[list, list]:
        return data_mod.split_validation(items, fraction, seed)

    def encode(self, items: list) -> tuple[list, Any]:
        config = self.trainer.config
        return data_mod.encode_all(self.trainer.tokenizer, items, config.max_seq_len)

    def epoch_items(self, examples: list, epoch: int) -> list:
        config = self.trainer.config
        order = data_mod.epoch_order(len(examples), config.seed, epoch)
        if self.trainer.group_by_length:
            order = data_mod.length_grouped(
                order, [len(e.input_ids) for e in examples], config.batch_size, config.seed, epoch
            )
        ordered = [examples[i] for i in order]
        if self.trainer.padding_free:
            return data_mod.rows_packed(ordered, config.max_seq_len)
        return data_mod.rows_padded(ordered)

    def eval_items(self, examples: list) -> list:
        return data_mod.rows_padded(examples)

    def weight(self, items: list) -> int:
        return sum(sum(1 for x in r.labels[1:] if x != data_mod.IGNORE_INDEX) for r in items)

    def tokens(self, items: list) -> int:
        return sum(len(r.input_ids) for r in items)

    def loss_sum(self, items: list, *, padding_free: bool) -> tuple[Any, dict[str, Any]]:
        nll, _ = self.trainer.token_nll(self.trainer.collate(items, padding_free=padding_free), want_tokens=False)
        return nll.sum(), {}


class Preference:
    """DPO against the base model: the reference pass runs the same model with the LoRA
    adapter disabled (no second copy in memory), without gradients."""

    name = "dpo"
    needs_token_values = True

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def read(self, path: str) -> list:
        return preference.read_preference_jsonl(Path(path))

    def split(self, items: list, fraction: float, seed: int) -> tuple[list, list]:
        return data_mod.split_validation(items, fraction, seed)

    def encode(self, items: list) -> tuple[list, Any]:
        return preference.encode_pairs(self.trainer.tokenizer, items, self.trainer.config.max_seq_len)

    def epoch_items(self, pairs: list, epoch: int) -> list:
        config = self.trainer.config
        order = data_mod.epoch_order(len(pairs), config.seed, epoch)
        if self.trainer.group_by_length:
            order = data_mod.length_grouped(order, [p.tokens for p in pairs], config.batch_size, config.seed, epoch)
        return [pairs[i] for i in order]

    def eval_items(self, pairs: list) -> list:
        return pairs

    def weight(self, items: list) -> int:
        return len(items)

    def tokens(self, items: list) -> int:
        return sum(p.tokens for p in items)

    def sequence_logps(self, items: list, *, padding_free: bool):  # type: ignore[no-untyped-def]
        """Summed answer log-probabilities, (chosen, rejected), one value per pair."""
        rows = data_mod.rows_padded([e for p in items for e in (p.chosen, p.rejected)])
        nll, owners = self.trainer.token_nll(self.trainer.collate(rows, padding_free=padding_free), want_tokens=True)
        logps = sequence_sums(-nll, owners, len(rows))
        return logps[0::2], logps[1::2]

    def loss_sum(self, items: list, *, padding_free: bool) -> tuple[Any, dict[str, Any]]:
        import torch

        beta = self.trainer.config.dpo_beta
        with torch.no_grad(), self.trainer.model.disable_adapter():
            reference_chosen, reference_rejected = self.sequence_logps(items, padding_free=padding_free)
        policy_chosen, policy_rejected = self.sequence_logps(items, padding_free=padding_free)
        losses, margins = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)
        margins = margins.detach()
        return losses.sum(), {"reward_margin": margins.sum(), "reward_accuracy": (margins > 0).float().sum()}


def for_method(method: str, trainer: Any) -> Supervised | Preference:
    if method in ("supervised", "sft"):
        return Supervised(trainer)
    if method == "dpo":
        return Preference(trainer)
    raise ValueError(f"unknown training method {method!r} (supervised or dpo)")


def steps_per_epoch(items: int, batch_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(items / batch_size) / grad_accum)
