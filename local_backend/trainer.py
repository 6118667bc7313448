"""The training loop: LoRA on CPU (fp32), QLoRA on CUDA (NF4 + double quantisation,
bf16 compute, k-bit preparation, paged 8-bit AdamW, gradient checkpointing).

Everything that makes a run resumable lives in a checkpoint: adapter weights,
optimiser, scheduler, every RNG, and the data position (epoch, micro-batch). The
data order is a pure function of (seed, epoch), so a resumed run replays exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from local_backend import data as data_mod
from local_backend.chat_format import IGNORE_INDEX, ensure_chat_template
from local_backend.sources import load_model, load_tokenizer, resolve_source

EventSink = Callable[[str, str, dict[str, Any]], None]  # (level, message, data)
StopCheck = Callable[[], str | None]  # -> None | "cancel" | "pause"


@dataclass
class TrainConfig:
    base_model: str
    train_file: str
    validation_file: str | None = None
    validation_split: float | None = None
    epochs: int = 3
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int = 1024
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    packing: bool = False
    seed: int = 42
    checkpoint_every: int = 50  # optimiser steps; 0 = only at the end of each epoch
    keep_checkpoints: int = 2
    log_every: int = 1
    max_steps: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    quantize: str = "auto"  # auto (4-bit on CUDA) | 4bit | none
    gradient_checkpointing: bool | None = None  # None = on with CUDA

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Stopped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class TrainResult:
    steps: int
    trained_tokens: int
    train_loss: float | None
    valid_loss: float | None
    metrics: dict[str, float] = field(default_factory=dict)


def _pick_device(config: TrainConfig) -> str:
    import torch

    if config.device != "auto":
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass


def _rng_state() -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy

        state["numpy"] = numpy.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    ) -> None:
        self.config = config
        self.output_dir = Path(output_dir)
        self.on_event = on_event or (lambda level, message, data: None)
        self.should_stop = should_stop or (lambda: None)
        self.checkpoints_dir = self.output_dir / "checkpoints"
        self.adapter_dir = self.output_dir / "adapter"

    # ------------------------------------------------------------ setup
    def _emit(self, message: str, level: str = "info", **data: Any) -> None:
        self.on_event(level, message, data)

    def setup(self) -> None:
        import torch

        config = self.config
        self.device = _pick_device(config)
        self.use_4bit = self.device == "cuda" and config.quantize in ("auto", "4bit")
        if config.quantize == "4bit" and self.device != "cuda":
            raise ValueError("4-bit training needs a CUDA GPU (bitsandbytes 4-bit on CPU is unreliable)")
        _seed_everything(config.seed)
        source = resolve_source(config.base_model)
        self._emit(f"Loading {source.describe()}", stage="loading")
        self.tokenizer = load_tokenizer(source)
        ensure_chat_template(self.tokenizer)
        if self.tokenizer.pad_token_id is None:
            # Padding is never labelled (labels come from the assistant mask), so EOS is safe here.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = load_model(source, quantize_4bit=self.use_4bit)
        from peft import LoraConfig, get_peft_model

        gradient_checkpointing = config.gradient_checkpointing
        if gradient_checkpointing is None:
            gradient_checkpointing = self.device == "cuda"
        if self.use_4bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
            self._emit("QLoRA: 4-bit NF4 with double quantisation, bf16 compute, paged 8-bit AdamW")
        else:
            if self.device == "cpu":
                self._emit(
                    "No CUDA GPU: training plain LoRA in fp32 on CPU (4-bit needs CUDA)", level="warning"
                )
            model.to(self.device)
            if gradient_checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.enable_input_require_grads()
        model.config.use_cache = False
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(model, lora)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        self._emit(
            f"LoRA r={config.lora_r} alpha={config.lora_alpha} on {config.target_modules}: "
            f"{trainable:,} trainable of {total:,} parameters",
            trainable_params=trainable,
            total_params=total,
            device=self.device,
        )
        self._prepare_data()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.use_4bit:
            import bitsandbytes as bnb

            self.optimizer = bnb.optim.PagedAdamW8bit(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        warmup = int(round(self.total_steps * config.warmup_ratio))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda_factory(self.total_steps, warmup))

    def _prepare_data(self) -> None:
        config = self.config
        conversations = data_mod.read_chat_jsonl(Path(config.train_file))
        valid_conversations: list = []
        if config.validation_file:
            valid_conversations = data_mod.read_chat_jsonl(Path(config.validation_file))
        elif config.validation_split:
            conversations, valid_conversations = data_mod.split_validation(
                conversations, config.validation_split, config.seed
            )
        self.train_examples, stats = data_mod.encode_all(self.tokenizer, conversations, config.max_seq_len)
        self.valid_examples, vstats = data_mod.encode_all(self.tokenizer, valid_conversations, config.max_seq_len)
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
            math.ceil(math.ceil(len(self._epoch_rows(e)) / config.batch_size) / config.grad_accum)
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

    def _epoch_rows(self, epoch: int) -> list[data_mod.Row]:
        order = data_mod.epoch_order(len(self.train_examples), self.config.seed, epoch)
        examples = [self.train_examples[i] for i in order]
        if self.config.packing:
            return data_mod.rows_packed(examples, self.config.max_seq_len)
        return data_mod.rows_padded(examples)

    # ------------------------------------------------------------ loss
    def _loss_sum(self, batch: dict[str, Any]):
        """Sum of token cross-entropies over labelled positions (normalised by the caller)."""
        import torch
        import torch.nn.functional as F

        batch = {k: v.to(self.device) for k, v in batch.items()}
        labels = batch.pop("labels")
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.device == "cuda" else torch.autocast("cpu", enabled=False)
        )
        with autocast:
            logits = self.model(**batch, use_cache=False).logits
        shifted = logits[:, :-1, :].float()
        targets = labels[:, 1:]
        return F.cross_entropy(shifted.reshape(-1, shifted.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")

    def _collate(self, rows):
        return data_mod.collate(rows, self.tokenizer.pad_token_id, packed=self.config.packing)

    def evaluate(self) -> float | None:
        import torch

        if not self.valid_examples:
            return None
        self.model.eval()
        total, count = 0.0, 0
        rows = data_mod.rows_padded(self.valid_examples)
        with torch.no_grad():
            for i in range(0, len(rows), self.config.batch_size):
                chunk = rows[i : i + self.config.batch_size]
                total += float(self._loss_sum(data_mod.collate(chunk, self.tokenizer.pad_token_id, packed=False)))
                count += sum(sum(1 for x in r.labels[1:] if x != IGNORE_INDEX) for r in chunk)
        self.model.train()
        return total / max(1, count)

    # ------------------------------------------------------------ checkpoints
    def latest_checkpoint(self) -> Path | None:
        if not self.checkpoints_dir.is_dir():
            return None
        done = sorted(p for p in self.checkpoints_dir.glob("step-*") if (p / "trainer_state.pt").is_file())
        return done[-1] if done else None

    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        import torch

        step = state["global_step"]
        final = self.checkpoints_dir / f"step-{step:07d}"
        tmp = self.checkpoints_dir / f".tmp-step-{step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save_pretrained(tmp / "adapter")
        torch.save(
            {
                **state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": _rng_state(),
            },
            tmp / "trainer_state.pt",
        )
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # a checkpoint exists only once it is complete
        for old in sorted(self.checkpoints_dir.glob("step-*"))[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        self._emit(f"Checkpoint saved at step {step}", checkpoint=final.name, step=step)
        return final

    def _restore(self, checkpoint: Path) -> dict[str, Any]:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
        weights = load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"))
        set_peft_model_state_dict(self.model, weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self._emit(f"Resumed from {checkpoint.name}", step=state["global_step"], checkpoint=checkpoint.name)
        return state

    # ------------------------------------------------------------ loop
    def train(self, *, resume: bool = True) -> TrainResult:
        import torch

        config = self.config
        self.model.train()
        position = {"global_step": 0, "epoch": 0, "micro": 0, "trained_tokens": 0, "metrics": {}}
        checkpoint = self.latest_checkpoint() if resume else None
        if checkpoint is not None:
            position = self._restore(checkpoint)
        step = position["global_step"]
        trained_tokens = position["trained_tokens"]
        metrics: dict[str, float] = dict(position.get("metrics", {}))
        window_start, window_tokens = time.perf_counter(), 0
        epoch = position["epoch"]
        micro_start = position["micro"]

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
                window = batches[micro : micro + config.grad_accum]
                label_count = sum(sum(1 for x in r.labels[1:] if x != IGNORE_INDEX) for b in window for r in b)
                loss_total = 0.0
                for chunk in window:
                    batch = self._collate(chunk)
                    loss = self._loss_sum(batch) / max(1, label_count)
                    loss.backward()
                    loss_total += float(loss.detach())
                    window_tokens += sum(len(r.input_ids) for r in chunk)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], config.max_grad_norm
                )
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                micro += len(window)
                step += 1
                trained_tokens += sum(len(r.input_ids) for b in window for r in b)
                metrics.update(
                    step=step,
                    total_steps=self.total_steps,
                    epoch=epoch + micro / len(batches),
                    train_loss=loss_total,
                    learning_rate=self.scheduler.get_last_lr()[0],
                    grad_norm=float(grad_norm),
                )
                if step % config.log_every == 0 or step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    metrics["tokens_per_s"] = window_tokens / elapsed if elapsed > 0 else 0.0
                    window_start, window_tokens = time.perf_counter(), 0
                    self._emit(
                        f"step {step}/{self.total_steps} loss {loss_total:.4f}",
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
                stop = self.should_stop()
                periodic = config.checkpoint_every and step % config.checkpoint_every == 0
                if stop or periodic or (end_of_epoch and not config.checkpoint_every):
                    if step < self.total_steps:
                        self.save_checkpoint(state_now(*next_position))
                if stop and step < self.total_steps:
                    raise Stopped(stop)
            epoch += 1
        tmp = self.output_dir / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp)
        self.tokenizer.save_pretrained(tmp)
        shutil.rmtree(self.adapter_dir, ignore_errors=True)
        tmp.rename(self.adapter_dir)
        return TrainResult(
            steps=step,
            trained_tokens=trained_tokens,
            train_loss=metrics.get("train_loss"),
            valid_loss=metrics.get("valid_loss"),
            metrics=metrics,
        )
