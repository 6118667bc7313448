"""FineTuneSpec hyperparameters -> a TrainConfig, with the local backend's "auto" values.

``epochs``, ``batch_size`` and ``learning_rate_multiplier`` are the shared knobs (``None``
= auto); everything else comes from ``hyperparameters.extra`` under the names of
:class:`~local_backend.trainer.TrainConfig` fields (plus a few aliases).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from cloudtune import errors
from local_backend import dpo_reference
from local_backend.train_config import TrainConfig

# Learning rate that a multiplier of 1.0 means. On CPU the auto recipe is tuned for small
# persona/format datasets on SmolLM2-135M finishing in a few minutes: short sequences,
# a high LR and a few epochs. On CUDA it is the usual QLoRA recipe, with LoRA dropout 0
# (dropout on the adapter input costs a copy of every activation it touches).
# DPO starts from a model that already answers well and moves it a little: a tenth of the
# supervised learning rate (LoRA DPO recipes use 5e-6..5e-5); beta defaults to 0.1
# (TrainConfig.dpo_beta, the DPO paper's and TRL's default) unless the spec sets it.
DPO_LEARNING_RATE_FACTOR = 0.1
BASE_LEARNING_RATE = {"cpu": 1e-3, "cuda": 2e-4}
AUTO = {
    "cpu": {"epochs": 3, "batch_size": 4, "max_seq_len": 256, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
    "cuda": {"epochs": 3, "batch_size": 8, "max_seq_len": 2048, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
}
ALIASES = {
    "gradient_accumulation_steps": "grad_accum",
    "lr": "learning_rate",
    "r": "lora_r",
    "rank": "lora_r",
    "alpha": "lora_alpha",
    "dropout": "lora_dropout",
    "max_length": "max_seq_len",
    "max_seq_length": "max_seq_len",
    "save_steps": "checkpoint_every",
    "beta": "dpo_beta",
}
_RESERVED = {"base_model", "train_file", "validation_file", "validation_split", "seed", "method"}


def detect_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_train_config(
    *,
    base_model: str,
    train_file: str,
    validation_file: str | None,
    validation_split: float | None,
    epochs: int | None,
    batch_size: int | None,
    learning_rate_multiplier: float | None,
    seed: int | None,
    extra: dict[str, Any],
    device: str | None = None,
    method: str = "supervised",
    beta: float | None = None,
) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)} - _RESERVED
    overrides: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        name = ALIASES.get(key, key)
        if name not in known:
            raise errors.ConfigError(
                f"Unknown local hyperparameter {key!r}.",
                hint="Valid names: " + ", ".join(sorted(known | set(ALIASES))),
            )
        overrides[name] = value
    device = overrides.get("device") if overrides.get("device") not in (None, "auto") else (device or detect_device())
    auto = AUTO.get(device, AUTO["cpu"])
    values: dict[str, Any] = dict(auto)
    values.update(overrides)
    if epochs is not None:
        values["epochs"] = epochs
    if batch_size is not None:
        values["batch_size"] = batch_size
    if beta is not None:
        values["dpo_beta"] = float(beta)
    if "learning_rate" not in overrides:
        values["learning_rate"] = BASE_LEARNING_RATE.get(device, 2e-4) * (learning_rate_multiplier or 1.0)
        if method == "dpo":
            values["learning_rate"] *= DPO_LEARNING_RATE_FACTOR
    elif learning_rate_multiplier is not None:
        values["learning_rate"] = float(overrides["learning_rate"]) * learning_rate_multiplier
    try:
        config = TrainConfig(
            base_model=base_model,
            train_file=train_file,
            validation_file=validation_file,
            validation_split=validation_split,
            seed=42 if seed is None else int(seed),
            method=method,
            **values,
        )
    except TypeError as exc:
        raise errors.ConfigError(f"Invalid local hyperparameters: {exc}") from exc
    check_train_config(config, device)
    return config


METHODS = ("supervised", "dpo")
LOSS_IMPLS = ("auto", "plain", "chunked", "liger")
DPO_REFERENCES = dpo_reference.MODES


def check_train_config(config: TrainConfig, device: str) -> None:
    """Refuse, before a job exists, what this machine cannot train."""
    from local_backend.recipe import choose

    if config.method not in METHODS:
        raise errors.ConfigError(f"The local backend trains {' or '.join(METHODS)}, not {config.method!r}.")
    if config.loss_impl not in LOSS_IMPLS:
        raise errors.ConfigError(f"loss_impl must be one of {', '.join(LOSS_IMPLS)}, not {config.loss_impl!r}.")
    log_every = config.log_every
    if log_every is not None and (isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1):
        raise errors.ConfigError(f"log_every must be an integer >= 1 (optimiser steps per metrics line), not {log_every!r}.")
    if config.method == "dpo" and not config.dpo_beta > 0:
        raise errors.ConfigError(f"DPO beta must be positive, not {config.dpo_beta!r}.")
    if config.dpo_reference not in DPO_REFERENCES:
        raise errors.ConfigError(
            f"dpo_reference must be one of {', '.join(DPO_REFERENCES)}, not {config.dpo_reference!r}."
        )
    try:
        choose(config, device)
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from exc
