"""A training run's resumable checkpoints on disk (not activation checkpointing, which is
``local_backend/checkpointing.py``): ``checkpoints/step-NNNNNNN/`` holds the adapter weights and
``trainer_state.pt`` (optimiser, scheduler, every RNG: ``local_backend/train_state.py``, and the
data position the trainer passes in). A checkpoint is written under a temporary name and renamed
once complete, so one that exists is whole; only the newest ``keep`` are kept."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_backend.train_state import rng_state, set_rng_state

Emit = Callable[..., None]  # (message, level="info", **data)


def latest(checkpoints_dir: Path) -> Path | None:
    if not checkpoints_dir.is_dir():
        return None
    done = sorted(p for p in checkpoints_dir.glob("step-*") if (p / "trainer_state.pt").is_file())
    return done[-1] if done else None


def save(
    checkpoints_dir: Path, state: dict[str, Any], *, model: Any, optimizer: Any, scheduler: Any, parallel: Any,
    keep: int, emit: Emit,
) -> Path:
    import torch

    step = state["global_step"]
    final = checkpoints_dir / f"step-{step:07d}"
    if not parallel.is_main:  # rank 0 writes; the others wait until it has
        parallel.barrier()
        return final
    tmp = checkpoints_dir / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "adapter")
    torch.save(
        {
            **state,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
        },
        tmp / "trainer_state.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)  # a checkpoint exists only once it is complete
    for old in sorted(checkpoints_dir.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    emit(f"Checkpoint saved at step {step}", checkpoint=final.name, step=step)
    parallel.barrier()
    return final


def restore(checkpoint: Path, *, model: Any, optimizer: Any, scheduler: Any, emit: Emit) -> dict[str, Any]:
    """Loads the adapter weights, optimiser, scheduler and RNGs; returns the saved state (data position)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    weights = load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, weights)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    emit(f"Resumed from {checkpoint.name}", step=state["global_step"], checkpoint=checkpoint.name)
    return state
