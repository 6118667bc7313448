"""The training loop, for supervised fine-tuning and DPO (local_backend/objectives.py):
LoRA on CPU (fp32), QLoRA or LoRA on CUDA with a bf16 frozen base (local_backend/recipe.py).

The loss is computed on labelled positions only (local_backend/losses.py): on CUDA
through chunked (or liger's fused) linear cross-entropy, so no batch x sequence x
vocabulary logits tensor is ever built. On CUDA, batches (supervised and DPO) are padding-free by
default (all sequences of a micro-batch in one row, variable-length attention) and
padded batches are length-grouped. The host reads GPU values once per logging
interval, not per micro-batch.

Everything that makes a run resumable lives in a checkpoint (local_backend/run_checkpoints.py):
adapter weights, optimiser, scheduler, every RNG, and the data position (epoch, micro-batch). The
data order is a pure function of (seed, epoch), so a resumed run replays exactly the
batches an uninterrupted run would have seen. The run's settings and result are in
local_backend/train_config.py (re-exported here).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_backend import attention
from local_backend import data as data_mod
from local_backend import objectives
from local_backend import recipe as recipe_mod
from local_backend import run_checkpoints
from local_backend.chat_format import ensure_chat_template
from local_backend.collation import AheadCollator
from local_backend.losses import (
    chunked_token_nll,
    labelled_positions,
    liger_available,
    liger_nll_sum,
    plain_head,
    plain_token_nll,
    select_positions,
)
from local_backend.sources import load_tokenizer, resolve_source
from local_backend.train_config import EventSink, StopCheck, Stopped, TrainConfig, TrainResult
from local_backend.train_state import seed_everything

__all__ = ["EventSink", "StopCheck", "Stopped", "TrainConfig", "TrainResult", "Trainer", "lr_lambda_factory"]


def _single_process():  # noqa: ANN202
    from local_backend.parallel import SingleProcess

    return SingleProcess()


def _pick_device(config: TrainConfig) -> str:
    import torch

    if config.device != "auto":
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _cuda_index(device: str) -> int | None:
    if device != "cuda":
        return None
    import torch

    return torch.cuda.current_device()


def lr_lambda_factory(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warmup, then cosine decay to zero."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    return factor


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        output_dir: Path,
        *,
        on_event: EventSink | None = None,
        should_stop: StopCheck | None = None,
        parallel: Any = None,
    ) -> None:
        self.config = config
        # Peers of a distributed run (local_backend/parallel.py, launch.py): shards, gradient sums, agreed stops.
        self.parallel = parallel if parallel is not None else _single_process()
        self.output_dir = Path(output_dir)
        self.on_event = on_event or (lambda level, message, data: None)
        self.should_stop = should_stop or (lambda: None)
        self.checkpoints_dir = self.output_dir / "checkpoints"
        self.collator = AheadCollator(self._collate_now)  # the next micro-batch, collated while one runs
        self.adapter_dir = self.output_dir / "adapter"

    # ------------------------------------------------------------ setup
    def _emit(self, message: str, level: str = "info", **data: Any) -> None:
        self.on_event(level, message, data)

    def setup(self) -> None:
        config = self.config
        self.device = _pick_device(config)
        self.recipe = recipe_mod.choose(config, self.device)
        self.cuda_index = _cuda_index(self.device)
        self.use_4bit = self.recipe.use_4bit
        self.objective = objectives.for_method(config.method, self)
        on_cuda = self.device == "cuda"
        packing = config.packing
        self.padding_free = on_cuda if packing is None else bool(packing)
        self.group_by_length = on_cuda if config.group_by_length is None else bool(config.group_by_length)
        self.log_every = max(1, int(config.log_every or (10 if on_cuda else 1)))
        self.loss_impl = config.loss_impl
        if self.loss_impl == "auto":
            self.loss_impl = "chunked" if on_cuda else "plain"
        elif self.loss_impl == "liger" and not liger_available(self.device):
            self.loss_impl = "chunked"  # liger-kernel is not installed (or not on CUDA)
        seed_everything(config.seed)
        source = resolve_source(config.base_model)
        self._emit(f"Loading {source.describe()}", stage="loading")
        self.tokenizer = load_tokenizer(source)
        ensure_chat_template(self.tokenizer)
        if self.tokenizer.pad_token_id is None:
            # Padding is never labelled (labels come from the assistant mask), so EOS is safe here.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = recipe_mod.build_model(
            self.recipe, source, config, padding_free=self.padding_free, shard_base=self.parallel.shards_base
        )
        self._emit(self.recipe.description, level="warning" if self.device == "cpu" else "info", kernels=self.recipe.kernels)
        if self.padding_free:  # which attention path each kind of layer takes, chosen by a functional check
            self.attention_paths = attention.prepare_model(self.model.get_base_model().config, self.device)
            self._emit("attention: " + "; ".join(self.attention_paths), attention=self.attention_paths)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        self._emit(
            f"{self.objective.name}: LoRA r={config.lora_r} alpha={config.lora_alpha} on {config.target_modules}: "
            f"{trainable:,} trainable of {total:,} parameters; metrics every {self.log_every} "
            f"step{'s' if self.log_every > 1 else ''}; loss {self.loss_impl}"
            + ("; padding-free batches" if self.padding_free else "")
            + ("; length-grouped batches" if self.group_by_length else ""),
            trainable_params=trainable,
            total_params=total,
            device=self.device,
        )
        self.model = self.parallel.prepare_model(self.model, device=self.device, emit=self._emit)  # FSDP: shards the base
        self._prepare_data()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = recipe_mod.build_optimizer(self.recipe, params, config)
        warmup = int(round(self.total_steps * config.warmup_ratio))
        import torch

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda_factory(self.total_steps, warmup))

    def _prepare_data(self) -> None:
        config = self.config
        items = self.objective.read(config.train_file)
        valid_items: list = []
        if config.validation_file:
            valid_items = self.objective.read(config.validation_file)
        elif config.validation_split:
            items, valid_items = self.objective.split(items, config.validation_split, config.seed)
        self.train_examples, stats = self.objective.encode(items)
        self.valid_examples, vstats = self.objective.encode(valid_items)
        self.encode_stats = stats
        if stats.truncated or vstats.truncated:
            self._emit(
                f"{stats.truncated} training and {vstats.truncated} validation examples were longer than "
                f"max_seq_len={config.max_seq_len} and were truncated ({stats.dropped + vstats.dropped} dropped: "
                "no assistant tokens left)",
                level="warning",
                truncated=stats.truncated,
                valid_truncated=vstats.truncated,
                dropped=stats.dropped + vstats.dropped,
            )
        if not self.train_examples:
            from cloudtune import errors

            raise errors.DatasetError("no training example has an assistant token within max_seq_len")
        # Packed row counts can differ between epochs (the order changes), so count each epoch.
        self.total_steps = sum(
            objectives.steps_per_epoch(len(self._epoch_rows(e)), config.batch_size, config.grad_accum)
            for e in range(config.epochs)
        )
        if config.max_steps:
            self.total_steps = min(self.total_steps, config.max_steps)
        self._emit(
            f"{len(self.train_examples)} training examples ({stats.tokens:,} tokens, {stats.trained_tokens:,} "
            f"trained), {len(self.valid_examples)} validation; {self.total_steps} steps",
            examples=len(self.train_examples),
            valid_examples=len(self.valid_examples),
            tokens=stats.tokens,
            total_steps=self.total_steps,
            truncated=stats.truncated,
        )

    def _epoch_rows(self, epoch: int) -> list:
        return self.objective.epoch_items(self.train_examples, epoch)

    # ------------------------------------------------------------ loss
    def collate(self, rows: list, *, padding_free: bool | None = None) -> dict[str, Any]:
        return self.collator.get(rows, self.padding_free if padding_free is None else padding_free)

    def _collate_now(self, rows: list, padding_free: bool) -> dict[str, Any]:
        if padding_free:
            batch = data_mod.collate_padding_free(rows)
        else:
            batch = data_mod.collate(rows, self.tokenizer.pad_token_id, packed=False)
        if self.device == "cuda":  # pinned here (on the background thread too): copies to the GPU are asynchronous
            import torch

            # a new thread starts on GPU 0: pin through this process's GPU (as DataLoader's pinning thread does)
            torch.cuda.set_device(self.cuda_index)
            batch = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in batch.items()}
        return batch

    def token_nll(self, batch: dict[str, Any], *, want_tokens: bool = True):  # type: ignore[no-untyped-def]
        """Negative log-likelihoods of the labelled tokens and the input row each belongs to;
        with ``want_tokens=False`` the first value may be just their sum (liger)."""
        batch = dict(batch)
        labels = batch.pop("labels")
        sequence_ids = batch.pop("sequence_ids")
        index, targets = labelled_positions(labels)  # on the host: no sync to select rows later
        owners = sequence_ids[:, :-1].reshape(-1).index_select(0, index)
        on_cuda = self.device == "cuda"

        def move(value):  # type: ignore[no-untyped-def]
            if not hasattr(value, "to"):
                return value
            if not on_cuda:
                return value.to(self.device)
            return (value if value.is_pinned() else value.pin_memory()).to(self.device, non_blocking=True)

        batch = {k: move(v) for k, v in batch.items()}
        index, targets, owners = move(index), move(targets), move(owners)
        base = self.model.get_base_model()
        softcap = getattr(base.config, "final_logit_softcapping", None)
        with self.recipe.autocast():
            if self.loss_impl == "plain":
                logits = self.model(**batch, use_cache=False).logits  # soft-capped by the model itself (Gemma-2)
                return plain_token_nll(logits, None, positions=(index, targets)), owners
            hidden = select_positions(base.get_decoder()(**batch, use_cache=False).last_hidden_state, index)
            head = base.get_output_embeddings()
            plain = plain_head(head)  # None: quantised, sharded or wrapped head, called as a module
            if self.loss_impl == "liger" and not want_tokens and not softcap and plain is not None:
                return liger_nll_sum(hidden, plain[0], targets, bias=plain[1]), owners
            weight, bias = plain if plain is not None else (head, None)
            nll = chunked_token_nll(
                hidden, weight, targets, bias=bias, chunk_tokens=self.config.loss_chunk_tokens, softcap=softcap
            )
        return nll, owners

    def _loss_sum(self, batch: dict[str, Any]):  # type: ignore[no-untyped-def]
        """Summed cross-entropy over labelled positions of a collated batch."""
        nll, _ = self.token_nll(batch, want_tokens=False)
        return nll.sum()

    def evaluate(self) -> float | None:
        """Validation loss: mean token cross-entropy (supervised) or mean DPO loss per pair."""
        import torch

        if not self.valid_examples:
            return None
        self.model.eval()
        total, count = None, 0
        items = self.objective.eval_items(self.valid_examples)
        with torch.no_grad():
            for i in range(0, len(items), self.config.batch_size):
                chunk = items[i : i + self.config.batch_size]
                loss, _ = self.objective.loss_sum(chunk, padding_free=self.padding_free)
                total = loss.sum() if total is None else total + loss.sum()
                count += self.objective.weight(chunk)
        self.model.train()
        return float(total) / max(1, count)

    # ------------------------------------------------------------ checkpoints
    def latest_checkpoint(self) -> Path | None:
        return run_checkpoints.latest(self.checkpoints_dir)

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        return run_checkpoints.save(
            self.checkpoints_dir, state, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
            parallel=self.parallel, keep=self.config.keep_checkpoints, emit=self._emit,
        )

    def _restore(self, checkpoint: Path) -> dict[str, Any]:
        return run_checkpoints.restore(
            checkpoint, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, emit=self._emit
        )

    # ------------------------------------------------------------ loop
    def train(self, *, resume: bool = True) -> TrainResult:
        import torch

        config = self.config
        self.model.train()
        position = {"global_step": 0, "epoch": 0, "micro": 0, "trained_tokens": 0, "metrics": {}}
        checkpoint = self.latest_checkpoint() if resume else None
        if checkpoint is not None:
            position = self._restore(checkpoint)
        self.objective.before_training(resumed=checkpoint is not None)  # DPO: the precomputed reference
        step = position["global_step"]
        trained_tokens = position["trained_tokens"]
        metrics: dict[str, float] = dict(position.get("metrics", {}))
        epoch = position["epoch"]
        micro_start = position["micro"]
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Device-side sums over the logging window: the host reads them once per interval.
        window: dict[str, Any] = {}
        window_steps, window_weight, window_tokens, window_start = 0, 0, 0, time.perf_counter()

        def state_now(epoch_: int, micro_: int) -> dict[str, Any]:
            return {
                "global_step": step,
                "epoch": epoch_,
                "micro": micro_,
                "trained_tokens": trained_tokens,
                "metrics": metrics,
            }

        while epoch < config.epochs and step < self.total_steps:
            rows = self._epoch_rows(epoch)
            batches = [rows[i : i + config.batch_size] for i in range(0, len(rows), config.batch_size)]
            micro = micro_start
            micro_start = 0
            while micro < len(batches) and step < self.total_steps:
                group = batches[micro : micro + config.grad_accum]
                weight = max(1, sum(self.objective.weight(chunk) for chunk in group))
                chunks = [self.parallel.shard(chunk) for chunk in group]
                following = [self.parallel.shard(b) for b in batches[micro + len(group) : micro + len(group) + 1]]
                for index, chunk in enumerate(chunks):
                    self.collator.announce(self.objective.collated_rows((chunks[index + 1 :] + following + [None])[0]))
                    idle = not chunk  # this rank's share of a short micro-batch is empty
                    if idle and not self.parallel.lockstep:
                        continue
                    if idle:  # FSDP ranks gather weights together: run a row that counts for nothing
                        chunk = group[0][:1]
                    loss_sum, extras = self.objective.loss_sum(chunk, padding_free=self.padding_free)
                    ((loss_sum * 0.0 if idle else loss_sum) / weight).backward()
                    if idle:
                        continue
                    for name, value in {"loss": loss_sum.detach(), **extras}.items():
                        window[name] = window[name] + value if name in window else value
                tokens = sum(self.objective.tokens(chunk) for chunk in group)
                self.parallel.sync_gradients(params)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                window["grad_norm"] = window["grad_norm"] + grad_norm if "grad_norm" in window else grad_norm
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                micro += len(group)
                step += 1
                trained_tokens += tokens
                window_steps += 1
                window_weight += weight
                window_tokens += tokens
                if step % self.log_every == 0 or step == self.total_steps:
                    values = {name: float(value) for name, value in window.items()}  # the one host sync
                    values = self.parallel.reduce_sums(values, skip=("grad_norm",))
                    elapsed = time.perf_counter() - window_start
                    metrics.update(
                        step=step,
                        total_steps=self.total_steps,
                        epoch=epoch + micro / len(batches),
                        train_loss=values["loss"] / window_weight,
                        learning_rate=self.scheduler.get_last_lr()[0],
                        grad_norm=values["grad_norm"] / window_steps,
                        tokens_per_s=window_tokens / elapsed if elapsed > 0 else 0.0,
                    )
                    for name in ("reward_margin", "reward_accuracy"):
                        if name in values:
                            metrics[name] = values[name] / window_weight
                    window = {}
                    window_steps, window_weight, window_tokens, window_start = 0, 0, 0, time.perf_counter()
                    self._emit(
                        f"step {step}/{self.total_steps} loss {metrics['train_loss']:.4f}",
                        kind="metrics",
                        trained_tokens=trained_tokens,
                        **metrics,
                    )
                end_of_epoch = micro >= len(batches)
                next_position = (epoch + 1, 0) if end_of_epoch else (epoch, micro)
                if end_of_epoch:
                    valid_loss = self.evaluate()
                    if valid_loss is not None:
                        metrics["valid_loss"] = valid_loss
                        self._emit(
                            f"epoch {epoch + 1} validation loss {valid_loss:.4f}",
                            kind="metrics",
                            step=step,
                            epoch=epoch + 1,
                            valid_loss=valid_loss,
                        )
                stop = self.parallel.agree(self.should_stop())
                periodic = config.checkpoint_every and step % config.checkpoint_every == 0
                if stop or periodic or (end_of_epoch and not config.checkpoint_every):
                    if step < self.total_steps:
                        self.save_checkpoint(state_now(*next_position))
                if stop and step < self.total_steps:
                    raise Stopped(stop)
            epoch += 1
        self.collator.close()
        if self.parallel.is_main:
            tmp = self.output_dir / ".adapter.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            shutil.rmtree(self.adapter_dir, ignore_errors=True)
            tmp.rename(self.adapter_dir)
        self.parallel.barrier()
        return TrainResult(
            steps=step,
            trained_tokens=trained_tokens,
            train_loss=metrics.get("train_loss"),
            valid_loss=metrics.get("valid_loss"),
            metrics=metrics,
        )
