"""Paired bootstrap confidence intervals for "target minus baseline".

Both targets answered the same questions, so the comparison is paired: resample the
examples (with replacement, the same indices for both targets) and take the mean
difference each time; the 2.5th and 97.5th percentiles of those means are the 95%
percentile interval (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993,
ch. 13). When the interval contains zero the difference is within noise: this eval
set cannot tell the two targets apart on that metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

RESAMPLES = 2000
SEED = 20240601  # fixed: the same data always gives the same interval


@dataclass(frozen=True)
class Difference:
    metric: str
    difference: float  # mean of target - baseline over the paired examples
    low: float
    high: float
    examples: int
    confidence: float = 0.95

    @property
    def within_noise(self) -> bool:
        return self.low <= 0.0 <= self.high

    def statement(self, target: str, baseline: str) -> str:
        span = f"{self.difference:+.3f} (95% CI {self.low:+.3f} to {self.high:+.3f}, n={self.examples})"
        if self.low == self.high == 0.0:
            return f"{self.metric}: {target} and {baseline} score the same on every example"
        if self.within_noise:
            return f"{self.metric}: {target} vs {baseline} {span}: within noise, no real difference shown"
        better = "better" if self.difference > 0 else "worse"
        return f"{self.metric}: {target} is {better} than {baseline} {span}: a real difference"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_noise": self.within_noise}


def paired_bootstrap(
    metric: str,
    target: Sequence[float],
    baseline: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    confidence: float = 0.95,
    seed: int = SEED,
) -> Difference:
    """95% (by default) paired percentile-bootstrap interval of mean(target - baseline)."""
    import numpy as np

    if len(target) != len(baseline):
        raise ValueError("paired bootstrap needs the same examples on both sides")
    if not target:
        raise ValueError("paired bootstrap needs at least one example")
    diffs = np.asarray(target, dtype=float) - np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[indices].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(metric, float(diffs.mean()), float(low), float(high), len(diffs), confidence)


def mean_interval(metric: str, values: Sequence[float], **kwargs: float) -> Difference:
    """Percentile-bootstrap interval of the mean of ``values`` alone (the bars of a chart)."""
    return paired_bootstrap(metric, values, [0.0] * len(values), **kwargs)  # type: ignore[arg-type]
