"""Answers kept per (provider, model, prompt, decoding) under CLOUDTUNE_HOME/cache/answers/,
so asking the same model the same question with the same decoding again reuses the answer:
``compare`` after ``run`` reuses the run's evaluation instead of asking every question a
second time (on a CPU the slowest part of a comparison). Failed requests are not kept. The
files are owner-only like everything else in CLOUDTUNE_HOME (they hold questions and
answers); ``compare --no-cache`` asks afresh.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


class AnswerCache:
    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            from cloudtune.ledger import cloudtune_home

            root = cloudtune_home() / "cache" / "answers"
        self.root = root
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(provider: str, model: str, messages: list[dict[str, Any]], decoding: dict[str, Any]) -> str:
        blob = json.dumps([provider, model, messages, decoding], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            found = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.misses += 1
            return None
        if not isinstance(found, dict) or not isinstance(found.get("text"), str):
            self.misses += 1
            return None
        self.hits += 1
        return found

    def put(self, key: str, record: dict[str, Any]) -> None:
        from cloudtune.fsperm import private_dir, write_private

        try:
            folder = private_dir(self._path(key).parent)
            write_private(folder / f"{key}.json", json.dumps(record, ensure_ascii=False))
        except OSError:
            pass  # a cache that cannot be written only costs the next comparison a request
