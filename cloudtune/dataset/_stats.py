"""Streaming statistics with exact percentiles in bounded memory.

Token and message counts are small integers with few distinct values (a
training context caps them), so a value -> count histogram gives exact order
statistics while its size depends on the number of *distinct* values, not on
the number of examples.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field


class Histogram:
    __slots__ = ("counts", "n", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0

    def add(self, value: int) -> None:
        counts = self.counts
        counts[value] = counts.get(value, 0) + 1
        self.n += 1
        self.total += value

    def merge(self, other: "Histogram") -> None:
        counts = self.counts
        for value, count in other.counts.items():
            counts[value] = counts.get(value, 0) + count
        self.n += other.n
        self.total += other.total

    def percentiles(self, qs: tuple[float, ...]) -> list[float]:
        """Percentiles with linear interpolation between order statistics
        (numpy's default 'linear' method), computed exactly."""
        if not self.n:
            return [0.0 for _ in qs]
        items = sorted(self.counts.items())
        wanted = []
        for q in qs:
            position = (q / 100.0) * (self.n - 1)
            wanted.append((math.floor(position), math.ceil(position), position - math.floor(position)))
        # Order statistic k (0-based) for every k we need, in one walk.
        needed = sorted({k for low, high, _ in wanted for k in (low, high)})
        values: dict[int, int] = {}
        cumulative = 0
        index = 0
        for value, count in items:
            cumulative += count
            while index < len(needed) and needed[index] < cumulative:
                values[needed[index]] = value
                index += 1
            if index == len(needed):
                break
        return [values[low] + (values[high] - values[low]) * frac for low, high, frac in wanted]

    def summary(self) -> dict:
        if not self.n:
            return {"count": 0, "total": 0, "min": 0, "mean": 0.0, "p5": 0.0, "p50": 0.0, "p95": 0.0, "max": 0}
        p5, p50, p95 = self.percentiles((5, 50, 95))
        return {
            "count": self.n,
            "total": self.total,
            "min": min(self.counts),
            "mean": round(self.total / self.n, 2),
            "p5": round(p5, 2),
            "p50": round(p50, 2),
            "p95": round(p95, 2),
            "max": max(self.counts),
        }


@dataclass
class FileStats:
    """Everything counted while scanning one file."""

    lines: int = 0
    examples: int = 0  # lines that parsed into an example shape
    usable_examples: int = 0  # examples without errors
    duplicates: int = 0
    over_context: int = 0
    images: int = 0
    billed_tokens_per_epoch: int = 0  # sum of min(context, tokens)
    roles: Counter = field(default_factory=Counter)
    messages: Histogram = field(default_factory=Histogram)
    tokens: Histogram = field(default_factory=Histogram)
    assistant_tokens: Histogram = field(default_factory=Histogram)

    def merge(self, other: "FileStats") -> None:
        """Add the counts of another part of the same file (duplicates excepted:
        only the whole file knows which examples repeat)."""
        self.lines += other.lines
        self.examples += other.examples
        self.usable_examples += other.usable_examples
        self.over_context += other.over_context
        self.images += other.images
        self.billed_tokens_per_epoch += other.billed_tokens_per_epoch
        self.roles.update(other.roles)
        self.messages.merge(other.messages)
        self.tokens.merge(other.tokens)
        self.assistant_tokens.merge(other.assistant_tokens)

    def to_dict(self) -> dict:
        return {
            "lines": self.lines,
            "examples": self.examples,
            "usable_examples": self.usable_examples,
            "duplicates": self.duplicates,
            "examples_over_context": self.over_context,
            "images": self.images,
            "roles": dict(sorted(self.roles.items())),
            "messages_per_example": self.messages.summary(),
            "tokens_per_example": self.tokens.summary(),
            "assistant_tokens_per_example": self.assistant_tokens.summary(),
        }
