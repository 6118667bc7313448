"""What a training run is asked to do and what it reports back: the settings a job passes to
``local_backend/trainer.py`` (hyperparameters, ``local_backend/hyperparams.py``), the result it
returns, and the exception that says it stopped early (cancel or pause).

Kept apart from the trainer so that reading or validating a job's settings does not import
the training loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

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
    lora_dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"
    method: str = "supervised"  # supervised | dpo
    dpo_beta: float = 0.1
    dpo_reference: str = "auto"  # auto | precompute | live (local_backend/dpo_reference.py)
    packing: bool | None = None  # padding-free batches (local_backend/data.py, objectives.py); None = on with CUDA
    group_by_length: bool | None = None  # None = on with CUDA
    optimizer: str = "auto"  # auto (fused AdamW on CUDA) | adamw | adamw_fused | paged_adamw_8bit
    # auto | plain | chunked | liger. auto: chunked on CUDA (as fast as Liger's fused loss on an H200, 2026-12-04,
    # without its 3 host syncs per step: benchmarks/RESULTS.md), plain on CPU; liger only when asked for
    loss_impl: str = "auto"
    loss_chunk_tokens: int = 1024
    seed: int = 42
    checkpoint_every: int = 50  # optimiser steps; 0 = only at the end of each epoch
    keep_checkpoints: int = 2
    log_every: int | None = None  # optimiser steps per metrics line (one host read each); None = 10 on CUDA, 1 on CPU
    max_steps: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    quantize: str = "auto"  # auto (4-bit on CUDA) | 4bit | none
    gradient_checkpointing: bool | None = None  # None = on with CUDA
    lora_kernel: str = "auto"  # auto (fused on CUDA after its functional check) | fused | peft: local_backend/fused_lora.py
    layer_kernels: str = "auto"  # auto (Liger on CUDA where covered and checked) | liger | torch: local_backend/layer_kernels.py
    # local_backend/checkpointing.py: auto = cpu on CUDA with checkpointing (after a functional check), else none
    activation_offload: str = "auto"  # auto | cpu | none
    checkpoint_every_n_layers: int = 1  # checkpoint decoder layers 0, N, 2N, ...; the others keep activations

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
