"""Collating the next micro-batch while the current one runs.

The training loop announces which rows come next (:meth:`AheadCollator.announce`); when the
current batch is asked for, the announced one is started on one background thread, so its
Python-side collation (and, on CUDA, the copy into pinned host memory that makes the transfer
asynchronous) overlaps the GPU's work on the current batch instead of following it. A batch
asked for that was not announced is collated on the spot; the result is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Collate = Callable[[list, bool], dict[str, Any]]  # (rows, padding_free) -> batch


class AheadCollator:
    def __init__(self, collate_now: Collate) -> None:
        self.collate_now = collate_now
        self.executor: Any = None
        self.ahead: Any = None  # (rows, padding_free, future)
        self.upcoming: list | None = None
        self.overlapped = 0  # batches that were ready ahead (the tests read it)

    def announce(self, rows: list | None) -> None:
        """The rows of the micro-batch after the one about to be collated (None: none known)."""
        self.upcoming = rows or None

    def get(self, rows: list, padding_free: bool) -> dict[str, Any]:
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead[1] == padding_free and (ahead[0] is rows or ahead[0] == rows):
            batch = ahead[2].result()
            self.overlapped += 1
        else:
            batch = self.collate_now(rows, padding_free)
        upcoming, self.upcoming = self.upcoming, None
        if upcoming is not None:
            if self.executor is None:
                from concurrent.futures import ThreadPoolExecutor

                self.executor = ThreadPoolExecutor(1, thread_name_prefix="collate")
            self.ahead = (upcoming, padding_free, self.executor.submit(self.collate_now, upcoming, padding_free))
        return batch

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.executor, self.ahead, self.upcoming = None, None, None
