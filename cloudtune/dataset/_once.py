"""Loading a named resource once per process (tokenizer tables), shared by the counters."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LoadOnce(Generic[T]):
    """``get(name)`` calls ``load(name)`` once, thread-safe, and keeps the value; a load that
    raises is remembered as ``None`` with its reason (:meth:`failure_reason`), not retried."""

    def __init__(self, load: Callable[[str], T]) -> None:
        self._load = load
        self._values: dict[str, T] = {}
        self._failures: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> T | None:
        if name in self._values:
            return self._values[name]
        with self._lock:
            if name in self._values:
                return self._values[name]
            if name in self._failures:
                return None
            try:
                value = self._load(name)
            except Exception as exc:  # noqa: BLE001 - any failure means "use the fallback"
                self._failures[name] = f"{type(exc).__name__}: {exc}"
                return None
            self._values[name] = value
            return value

    def failure_reason(self, name: str) -> str | None:
        return self._failures.get(name)
