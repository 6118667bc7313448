"""Where the local backend keeps things, and the two file primitives it relies on:
atomic JSON writes (readers never see half a file) and append-only JSON lines."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def cloudtune_home() -> Path:
    return Path(os.environ.get("CLOUDTUNE_HOME") or Path.home() / ".cloudtune").expanduser()


def local_root() -> Path:
    return cloudtune_home() / "local"


def jobs_dir() -> Path:
    return local_root() / "jobs"


def files_dir() -> Path:
    return local_root() / "files"


def deployments_dir() -> Path:
    return local_root() / "deployments"


def models_cache_dir() -> Path:
    return cloudtune_home() / "models"


def write_json_atomic(path: Path, payload: Any, *, mode: int | None = None) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    write_text_atomic(path, json.dumps(payload, indent=1, default=str), mode=mode)


def write_text_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``: a reader
    sees the old content or the new, never a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One line per write with O_APPEND, flushed, so a reader (or a crash) sees whole lines."""
    line = json.dumps(record, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line after kill -9: ignore it
            continue
    return records
