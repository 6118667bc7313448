"""Small helpers for ``cloudtune quickstart`` (the command itself lives in cloudtune/).

The quickstart fine-tunes the built-in SmolLM2-135M-Instruct on
``samples/quickstart/train.jsonl``: answers in a pirate persona ("<answer>, matey!
<flourish>") that the base model never uses, so base and fine-tuned answers to
``samples/quickstart/heldout.jsonl`` differ visibly.
"""

from __future__ import annotations

import time
from pathlib import Path

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples" / "quickstart"
TRAIN_FILE = SAMPLES_DIR / "train.jsonl"
HELDOUT_FILE = SAMPLES_DIR / "heldout.jsonl"
PERSONA_MARKER = "matey"  # every fine-tuned answer carries it; the base model's do not


def prepare_builtin_model() -> tuple[Path, float]:
    """Convert the built-in GGUF once into the cache (about 20 s the first time, instant
    after); returns the cached directory and the seconds it took. Call it before the run
    to show the one-time step separately from training."""
    from local_backend.sources import resolve_source, local_path

    started = time.perf_counter()
    path = Path(local_path(resolve_source(BASE_MODEL)))
    return path, time.perf_counter() - started


def persona_rate(answers: list[str]) -> float:
    """Share of answers in the fine-tuned persona (for a one-line verdict)."""
    return sum(PERSONA_MARKER in a.lower() for a in answers) / max(1, len(answers))
