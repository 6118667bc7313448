"""How sure a paired difference is, said no more surely than the data allow.

Both targets answered the same questions, so every comparison is paired: the per-example
differences ``target - other`` are the data. For each comparison we report

* **n and the mean difference**;
* **a 95% interval of the mean**: BCa bootstrap (Efron 1987, "Better bootstrap confidence
  intervals", JASA 82:171; computed by ``scipy.stats.bootstrap``) from ``BCA_MIN_N``
  pairs up, the Student t interval below that. A bootstrap only knows the values it was
  given: on five pairs it cannot see how wide the spread could be, and its intervals come
  out far too narrow (Hesterberg 2015, "What teachers should know about the bootstrap",
  The American Statistician 69:371, section 4); t is the standard small-sample answer.
  When every difference is the same number the interval is that number;
* **an exact p-value**: the two-sided exact sign test on the non-zero differences
  (``scipy.stats.binomtest``; for the 0/1 exact-match scores it is the exact paired
  permutation test too). It needs no large-sample approximation at any n;
* **Holm's step-down adjustment** (Holm 1979, "A simple sequentially rejective multiple
  test procedure", Scand. J. Statist. 6:65) over every comparison on the same metric in
  one report, so a table of many comparisons does not find a "winner" by chance;
* **words that follow the numbers**: "better" / "worse" only when the Holm-adjusted p is
  below ``ALPHA`` and the interval lies on that side of zero, "no clear difference"
  otherwise, and "too few examples to tell" when even a unanimous result on this many
  pairs could not reach ``ALPHA`` (a two-sided sign test on n pairs cannot go below
  2 * 0.5**n: 0.0625 at n = 5);
* **how many examples would show the observed difference**: the smallest n at which the
  sign test would reject with 80% probability if the observed share of ties and of wins
  were the truth (exact binomial power, no normal approximation).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.8
BCA_MIN_N = 20  # below this the t interval (see the module docstring)
RESAMPLES = 9999
SEED = 20240601  # fixed: the same data always give the same interval
MAX_NEEDED = 100_000  # beyond this the power search says "more than"

BETTER, WORSE, NO_CLEAR, TOO_FEW, SAME = ("better", "worse", "no clear difference", "too few examples to tell",
                                          "the same on every example")


def smallest_p(n: int) -> float:
    """The smallest two-sided exact sign-test p-value ``n`` pairs can give (all one way)."""
    return min(1.0, 2 * 0.5 ** n) if n > 0 else 1.0


def minimum_examples(alpha: float = ALPHA) -> int:
    """The fewest pairs with which the sign test can call anything real at ``alpha`` (6 at 0.05)."""
    n = 1
    while smallest_p(n) > alpha:
        n += 1
    return n


def sign_test(differences: Sequence[float]) -> float:
    """Exact two-sided sign test of "positive and negative differences are equally likely";
    zero differences (ties) carry no sign and are left out, as the test prescribes."""
    from scipy.stats import binomtest

    wins = sum(d > 0 for d in differences)
    losses = sum(d < 0 for d in differences)
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: the i-th smallest of m is multiplied by
    (m - i + 1), made non-decreasing along that order, capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float | None, float | None, str]:
    """(low, high, method) of the mean of ``values``: "constant", "BCa bootstrap", "t" or "none"."""
    import numpy as np
    from scipy import stats

    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return None, None, "none"
    if np.all(data == data[0]):
        return float(data[0]), float(data[0]), "constant"
    if len(data) < 2:
        return None, None, "none"
    if len(data) >= BCA_MIN_N:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a degenerate BCa says so with a warning and NaN; we fall back to t
            found = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=RESAMPLES,
                                    method="BCa", rng=np.random.default_rng(SEED)).confidence_interval
        if math.isfinite(found.low) and math.isfinite(found.high):
            return float(found.low), float(found.high), "BCa bootstrap"
    low, high = stats.t.interval(confidence, len(data) - 1, loc=float(data.mean()), scale=float(stats.sem(data)))
    return float(low), float(high), "t"


def _sign_test_power(n: int, tie_free: float, win_share: float, alpha: float) -> float:
    """Probability that the exact sign test on ``n`` pairs rejects at ``alpha`` when each pair
    differs with probability ``tie_free`` and a differing pair is a win with ``win_share``."""
    import numpy as np
    from scipy.stats import binom

    k = np.arange(n + 1)
    # smallest c with P(X >= c | k, 1/2) <= alpha/2: reject when wins >= c or wins <= k - c
    c = binom.ppf(1 - alpha / 2, k, 0.5) + 1
    rejectable = c <= k
    reject = np.where(rejectable, binom.sf(c - 1, k, win_share) + binom.cdf(k - c, k, win_share), 0.0)
    return float((binom.pmf(k, n, tie_free) * reject).sum())


def examples_needed(differences: Sequence[float], alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Pairs needed for the sign test to show the observed difference with ``power``, if the
    observed shares of differing pairs and of wins were the truth; None when no difference
    was observed (no number of examples would show it)."""
    wins = sum(d > 0 for d in differences)
    losses = sum(d < 0 for d in differences)
    if not differences or wins == losses:
        return None
    tie_free, win_share = (wins + losses) / len(differences), wins / (wins + losses)
    low, high = minimum_examples(alpha) - 1, minimum_examples(alpha)
    while _sign_test_power(high, tie_free, win_share, alpha) < power:
        if high >= MAX_NEEDED:
            return MAX_NEEDED + 1
        low, high = high, min(MAX_NEEDED, high * 2)
    while high - low > 1:  # power grows with n (up to the sawtooth of a discrete test): bisect
        middle = (low + high) // 2
        low, high = (low, middle) if _sign_test_power(middle, tie_free, win_share, alpha) >= power else (middle, high)
    return high


@dataclass
class Difference:
    """One paired comparison on one metric: ``target`` minus ``other`` over ``examples`` pairs."""

    metric: str
    difference: float
    low: float | None
    high: float | None
    examples: int
    p_value: float
    wins: int
    losses: int
    interval_method: str
    needed: int | None
    p_holm: float | None = None  # set once the whole table is known (see ``adjust``)
    confidence: float = CONFIDENCE

    @property
    def verdict(self) -> str:
        if self.wins == self.losses == 0:
            return SAME
        if self.examples < minimum_examples():
            return TOO_FEW
        p = self.p_holm if self.p_holm is not None else self.p_value
        if p < ALPHA and self.low is not None and self.high is not None:
            if self.difference > 0 and self.low > 0:
                return BETTER
            if self.difference < 0 and self.high < 0:
                return WORSE
        return NO_CLEAR

    @property
    def within_noise(self) -> bool:
        """True unless the words are "better" or "worse"."""
        return self.verdict not in (BETTER, WORSE)

    def reversed(self) -> Difference:
        """The same comparison read the other way round (other minus target)."""
        return Difference(self.metric, -self.difference, None if self.high is None else -self.high,
                          None if self.low is None else -self.low, self.examples, self.p_value, self.losses, self.wins,
                          self.interval_method, self.needed, self.p_holm, self.confidence)

    def evidence(self) -> str:
        """The numbers behind the words."""
        ci = ("no interval" if self.low is None or self.high is None else
              f"95% {self.interval_method} interval {self.low:+.3f} to {self.high:+.3f}")
        holm_p = f", Holm p={self.p_holm:.3g}" if self.p_holm is not None else ""
        return (f"{self.difference:+.3f}, {ci}, n={self.examples}, {self.wins} better/{self.losses} worse, "
                f"sign test p={self.p_value:.3g}{holm_p}")

    def power_sentence(self) -> str:
        if self.needed is None:
            return "no difference was observed, so no number of examples would show one"
        if self.needed > MAX_NEEDED:
            return f"more than {MAX_NEEDED:,} examples would be needed to show a difference this size"
        return (f"about {self.needed:,} examples would be needed to show a difference this size "
                f"(80% power, sign test at {ALPHA:g})")

    def statement(self, target: str, other: str) -> str:
        verdict = self.verdict
        if verdict == SAME:
            return f"{self.metric}: {target} and {other} score the same on every example"
        if verdict in (BETTER, WORSE):
            return f"{self.metric}: {target} is {verdict} than {other} ({self.evidence()})"
        if verdict == TOO_FEW:
            return (f"{self.metric}: too few examples to tell {target} from {other} ({self.evidence()}); "
                    f"{self.examples} pairs cannot reach p < {ALPHA:g} (at least {minimum_examples()} needed); "
                    f"{self.power_sentence()}")
        return f"{self.metric}: no clear difference between {target} and {other} ({self.evidence()}); " \
               f"{self.power_sentence()}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict, "within_noise": self.within_noise}


def paired_difference(metric: str, target: Sequence[float], other: Sequence[float]) -> Difference:
    """The paired comparison of ``target`` against ``other`` (see the module docstring)."""
    if len(target) != len(other):
        raise ValueError("a paired comparison needs the same examples on both sides")
    if not target:
        raise ValueError("a paired comparison needs at least one example")
    differences = [float(a) - float(b) for a, b in zip(target, other)]
    low, high, method = interval(differences)
    if low is not None and high is not None:  # scores lie in [0, 1], so their differences in [-1, 1]
        low, high = max(-1.0, low), min(1.0, high)
    return Difference(metric, sum(differences) / len(differences), low, high, len(differences),
                      sign_test(differences), sum(d > 0 for d in differences), sum(d < 0 for d in differences),
                      method, examples_needed(differences))


def adjust(differences: Sequence[Difference]) -> None:
    """Set ``p_holm`` on each, Holm-adjusting within each metric (one family per metric)."""
    for metric in {d.metric for d in differences}:
        family = [d for d in differences if d.metric == metric]
        for d, p in zip(family, holm([d.p_value for d in family])):
            d.p_holm = p


def mean_interval(values: Sequence[float]) -> tuple[float, float | None, float | None, str]:
    """(mean, low, high, method) of one target's scores: the ranked table and the chart's bars."""
    low, high, method = interval(values)
    if low is not None and high is not None:  # a t interval can spill past what a score can be
        low, high = max(0.0, low), min(1.0, high)
    return (sum(values) / len(values) if values else 0.0), low, high, method


def describe() -> str:
    """The methods in one line, for the report's settings."""
    return (f"95% interval: BCa bootstrap ({RESAMPLES} resamples, seed {SEED}) from {BCA_MIN_N} pairs, "
            f"Student t below; exact two-sided sign test; Holm adjustment per metric across the report; "
            f"'better'/'worse' need Holm p < {ALPHA:g} and an interval on that side of 0; fewer than "
            f"{minimum_examples()} pairs: too few examples to tell")
