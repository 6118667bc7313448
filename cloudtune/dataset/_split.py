"""Deterministic train/validation split of a JSONL file, streaming.

The same file, fraction and seed always give the same two files, on any
machine: the validation lines are ``random.Random(seed).sample`` of the
non-blank line indices, and lines are copied byte for byte in their order.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import ConfigError, DatasetError
from ..fsperm import open_private
from ._reader import UTF8_BOM


def _content_lines(path: Path):
    with open(path, "rb") as handle:
        first = True
        for raw in handle:
            if first and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM):]
            first = False
            if raw.strip():
                yield raw if raw.endswith(b"\n") else raw + b"\n"


def split_file(path, fraction: float, *, seed: int | None, out_dir) -> tuple[Path, Path]:
    """Write ``<stem>.train.jsonl`` and ``<stem>.validation.jsonl`` into ``out_dir``.

    ``fraction`` of the examples (rounded, at least one, and at least one left
    for training) go to validation."""
    path = Path(path)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ConfigError(f"validation_split must be between 0 and 1 (exclusive), got {fraction!r}")
    try:
        with open(path, "rb") as handle:
            has_bom = handle.read(3) == UTF8_BOM
        total = sum(1 for _ in _content_lines(path))
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if total < 2:
        raise DatasetError(f"{path} has {total} example(s); splitting needs at least 2",
                           hint="give a validation file instead")
    k = min(total - 1, max(1, round(total * fraction)))
    chosen = set(random.Random(seed if seed is not None else 0).sample(range(total), k))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_path = out / f"{path.stem}.train.jsonl"
    validation_path = out / f"{path.stem}.validation.jsonl"
    # copies of the user's data: owner-only whatever the umask (the user's file may be 0600)
    with open_private(train_path) as train, open_private(validation_path) as validation:
        if has_bom:  # keep the encoding the user chose (Azure documents UTF-8 with BOM)
            train.write(UTF8_BOM)
            validation.write(UTF8_BOM)
        for index, line in enumerate(_content_lines(path)):
            (validation if index in chosen else train).write(line)
    return train_path, validation_path
