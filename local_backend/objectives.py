"""What a training step optimises: supervised fine-tuning (assistant-token cross-entropy)
or DPO. Both plug into the one training loop in :mod:`local_backend.trainer`, which owns
batching, gradient accumulation, checkpoints, resume and stop requests.

An objective turns a window of micro-batches into a loss SUM and a normaliser for the
window (labelled tokens for SFT, pairs for DPO), so gradient accumulation gives the same
gradient as one big batch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from local_backend import data as data_mod
from local_backend import dpo_reference, preference
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

    def before_training(self, *, resumed: bool) -> None:
        pass

    def collated_rows(self, items: list | None) -> list | None:
        """The rows ``loss_sum(items)`` collates, so the loop can have them collated ahead."""
        return items

    def loss_sum(self, items: list, *, padding_free: bool) -> tuple[Any, dict[str, Any]]:
        nll, _ = self.trainer.token_nll(self.trainer.collate(items, padding_free=padding_free), want_tokens=False)
        return nll.sum(), {}


class Preference:
    """DPO against the base model: the reference pass runs the same model with the LoRA
    adapter disabled (no second copy in memory), without gradients, either once before
    training (``dpo_reference: precompute``, see local_backend/dpo_reference.py) or beside
    the policy's pass in every micro-batch (``live``).

    Batch layout: a micro-batch is ``batch_size`` pairs, padded (one row per answer) or, with
    padding-free batches, every pair's chosen and rejected answer back to back in one row
    (c0 r0 c1 r1 ...), position ids restarting at each answer so variable-length attention
    keeps them apart; each answer's log-probability is summed over its own segment. The same
    pairs per step either way (unlike supervised packing, which fills rows to
    ``max_seq_len``), so the two layouts train the same DPO steps."""

    name = "dpo"
    needs_token_values = True

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.reference_mode = "live"

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

    def before_training(self, *, resumed: bool) -> None:
        """Choose how the reference is computed and, for ``precompute``, compute (or, on a
        resume, load) it for every training and validation pair."""
        trainer, config = self.trainer, self.trainer.config
        splits = {"train": trainer.train_examples, "valid": trainer.valid_examples}
        for pairs in splits.values():
            for pair in pairs:
                pair.reference = None
        train, valid = len(splits["train"]), len(splits["valid"])
        train_seen = min(trainer.total_steps * config.batch_size * config.grad_accum, train * config.epochs)
        seen = math.ceil(train_seen / trainer.parallel.world_size) + valid * (train_seen // max(1, train))
        mode, why = dpo_reference.choose(config.dpo_reference, pairs=train + valid, pairs_seen=seen)
        self.reference_mode = mode
        if mode == "precompute":
            why += "; " + self._precompute(splits, resumed=resumed)
        trainer._emit(f"DPO reference: {mode} ({why})", dpo_reference=mode)

    def _precompute(self, splits: dict[str, list], *, resumed: bool) -> str:
        trainer = self.trainer
        expected = dpo_reference.fingerprint(trainer, splits)
        path = trainer.checkpoints_dir / dpo_reference.FILE_NAME
        stored = dpo_reference.load(path, expected) if resumed else None
        # All ranks take the same branch: FSDP ranks must run their forwards together.
        if trainer.parallel.reduce_sums({"missing": float(stored is None)})["missing"]:
            started = time.perf_counter()
            stored = {
                name: dpo_reference.compute(
                    self, pairs, batch_size=trainer.config.batch_size, padding_free=trainer.padding_free
                )
                for name, pairs in splits.items()
            }
            if trainer.parallel.is_main:
                dpo_reference.save(path, stored, expected)
            how = f"computed for {sum(len(p) for p in splits.values())} pairs in {time.perf_counter() - started:.1f}s"
        else:
            how = f"loaded from {path.name}"
        for name, pairs in splits.items():
            for pair, values in zip(pairs, stored[name].tolist()):
                pair.reference = (values[0], values[1])
        return how

    @staticmethod
    def _answer_rows(items: list) -> list:
        return data_mod.rows_padded([e for p in items for e in (p.chosen, p.rejected)])

    def collated_rows(self, items: list | None) -> list | None:
        """The rows ``loss_sum(items)`` collates, for collation ahead (trainer.collator); only
        with a precomputed reference: the live one collates the same rows twice per micro-batch,
        and the second request would find the next batch's rows announced instead."""
        if not items or self.reference_mode != "precompute":
            return None
        return self._answer_rows(items)

    def sequence_logps(self, items: list, *, padding_free: bool):  # type: ignore[no-untyped-def]
        """Summed answer log-probabilities, (chosen, rejected), one value per pair."""
        rows = self._answer_rows(items)
        nll, owners = self.trainer.token_nll(self.trainer.collate(rows, padding_free=padding_free), want_tokens=True)
        logps = sequence_sums(-nll, owners, len(rows))
        return logps[0::2], logps[1::2]

    def _stored_reference(self, items: list):  # type: ignore[no-untyped-def]
        """The precomputed (chosen, rejected) values of ``items`` on the training device, or None."""
        import torch

        values = [p.reference for p in items]
        if not values or any(v is None for v in values):
            return None
        table = torch.tensor(values, dtype=torch.float32)
        if str(self.trainer.device).startswith("cuda"):  # pinned + asynchronous: no wait for the GPU
            table = table.pin_memory().to(self.trainer.device, non_blocking=True)
        return table[:, 0], table[:, 1]

    def loss_sum(self, items: list, *, padding_free: bool) -> tuple[Any, dict[str, Any]]:
        import torch

        beta = self.trainer.config.dpo_beta
        reference = self._stored_reference(items)  # copied before the forward is queued
        if reference is None:
            with torch.no_grad(), self.trainer.model.disable_adapter():
                reference = self.sequence_logps(items, padding_free=padding_free)
        policy_chosen, policy_rejected = self.sequence_logps(items, padding_free=padding_free)
        losses, margins = dpo_loss(policy_chosen, policy_rejected, reference[0], reference[1], beta)
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
