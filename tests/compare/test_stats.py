"""The statistics of a paired comparison against values known independently of our code: exact
binomial sign-test p-values worked by hand, BCa against scipy's reference implementation on
fixed data, Student t intervals, Holm adjustments worked by hand, and the words that follow."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from cloudtune.compare import stats
from cloudtune.compare.stats import (
    BETTER,
    NO_CLEAR,
    SAME,
    TOO_FEW,
    WORSE,
    adjust,
    examples_needed,
    holm,
    minimum_examples,
    paired_difference,
    sign_test,
)


@pytest.mark.parametrize(("differences", "expected"), [
    ([1, 1, 0, 0, 1], 2 * 0.5 ** 3),                      # 3 wins of 3 non-zero: 0.25
    ([-0.022, 0, 0, -0.032, -0.063], 2 * 0.5 ** 3),       # the issue's OpenAI token-F1 example
    ([1, 1, 1, 1, 1], 2 * 0.5 ** 5),                      # n = 5 all one way: 0.0625, never below
    ([1] * 6, 2 * 0.5 ** 6),                              # 0.03125
    ([1, 1, 1, 1, 1, -1], 2 * (1 + 6) / 64),              # P(X <= 1 | 6, 1/2) = 7/64, two-sided
    ([1, -1, 1, -1], 1.0),
    ([0, 0, 0], 1.0),
    ([1] * 8 + [-1] * 2, 2 * (1 + 10 + 45) / 1024),      # P(X <= 2 | 10, 1/2) = 56/1024
])
def test_exact_sign_test_p_values(differences: list[float], expected: float) -> None:
    assert sign_test(differences) == pytest.approx(expected, rel=1e-12)


def test_nothing_below_six_pairs_can_be_real() -> None:
    assert minimum_examples() == 6  # 2 * 0.5**5 = 0.0625 > 0.05 >= 2 * 0.5**6
    assert stats.smallest_p(5) == 0.0625


def test_holm_adjustment_worked_by_hand() -> None:
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == [0.02]


def test_the_issues_n5_exact_match_is_too_few_to_tell() -> None:
    d = paired_difference("exact_match", [1, 1, 0, 0, 1], [0, 0, 0, 0, 0])
    assert d.difference == pytest.approx(0.6) and d.examples == 5 and d.p_value == pytest.approx(0.25)
    # the t interval the issue worked out: 0.6 -+ t(0.975, 4) * sd / sqrt(5) = -0.080 to +1.280 (clipped to 1)
    half = scipy_stats.t.ppf(0.975, 4) * np.std([1, 1, 0, 0, 1], ddof=1) / math.sqrt(5)
    assert d.interval_method == "t" and d.low == pytest.approx(0.6 - half) and d.low == pytest.approx(-0.0801, abs=1e-3)
    assert d.high == 1.0
    assert d.verdict == TOO_FEW and d.within_noise
    text = d.statement("fine-tuned", "base")
    assert "too few examples to tell" in text and "at least 6 needed" in text and "examples would be needed" in text


def test_the_issues_openai_token_f1_loss_is_not_called_real() -> None:
    d = paired_difference("token_f1", [0.978, 1, 1, 0.968, 0.937], [1, 1, 1, 1, 1])
    assert d.difference < 0 and d.losses == 3 and d.p_value == pytest.approx(0.25)
    assert d.low < 0 < d.high and d.verdict == TOO_FEW


def test_bca_matches_scipy_bootstrap_on_fixed_data() -> None:
    rng = np.random.default_rng(7)
    target = rng.uniform(0.3, 1.0, size=40).round(3)
    other = (target - rng.normal(0.08, 0.15, size=40)).clip(0, 1).round(3)
    d = paired_difference("token_f1", list(target), list(other))
    reference = scipy_stats.bootstrap((target - other,), np.mean, confidence_level=0.95, n_resamples=stats.RESAMPLES,
                                      method="BCa", rng=np.random.default_rng(stats.SEED)).confidence_interval
    assert d.interval_method == "BCa bootstrap"
    assert (d.low, d.high) == pytest.approx((reference.low, reference.high), abs=1e-12)
    # and BCa is not the percentile interval: it differs from it on this skewed sample
    percentile = scipy_stats.bootstrap((target - other,), np.mean, n_resamples=stats.RESAMPLES, method="percentile",
                                       rng=np.random.default_rng(stats.SEED)).confidence_interval
    assert (d.low, d.high) != pytest.approx((percentile.low, percentile.high), abs=1e-6)


def test_a_degenerate_bootstrap_falls_back_to_the_constant() -> None:
    d = paired_difference("exact_match", [1.0] * 30, [0.75] * 30)
    assert (d.difference, d.low, d.high, d.interval_method) == (pytest.approx(0.25), 0.25, 0.25, "constant")
    assert d.verdict == BETTER and "better" in d.statement("ft", "base")


def test_identical_scores_are_called_the_same() -> None:
    d = paired_difference("exact_match", [1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert d.verdict == SAME and (d.low, d.high) == (0.0, 0.0)
    assert d.statement("ft", "base") == "exact_match: ft and base score the same on every example"


def test_words_follow_the_numbers() -> None:
    worse = paired_difference("exact_match", [0.0] * 12, [1.0] * 10 + [0.0] * 2)
    assert worse.verdict == WORSE and worse.p_value == pytest.approx(2 * 0.5 ** 10)
    unclear = paired_difference("exact_match", [1, 0, 1, 0, 1, 0, 0, 1], [0, 1, 1, 0, 0, 1, 1, 0])
    assert unclear.verdict == NO_CLEAR and unclear.low < 0 < unclear.high


def test_holm_across_the_table_can_turn_better_into_no_clear_difference() -> None:
    # alone, 6 wins of 6 give p = 0.03125 < 0.05; one of three comparisons, Holm multiplies it by 3
    alone = paired_difference("token_f1", [1.0] * 6 + [0.5] * 4, [0.0] * 6 + [0.5] * 4)
    assert alone.verdict == BETTER
    family = [paired_difference("token_f1", [1.0] * 6 + [0.5] * 4, [0.0] * 6 + [0.5] * 4) for _ in range(3)]
    adjust(family)
    assert family[0].p_holm == pytest.approx(3 * 0.03125) and family[0].verdict == NO_CLEAR


def test_examples_needed_is_the_exact_sign_test_power() -> None:
    # every pair a win: 6 pairs reject with certainty (p = 0.03125)
    assert examples_needed([1.0] * 5) == 6
    # 60% of pairs differ, all in favour: n is the smallest with P(Binom(n, 0.6) >= 6) >= 0.8
    needed = examples_needed([1, 1, 0, 0, 1])
    assert needed == next(n for n in range(6, 50) if scipy_stats.binom.sf(5, n, 0.6) >= 0.8)
    assert examples_needed([1, -1, 0]) is None  # no difference observed


def test_paired_comparison_refuses_unpaired_samples() -> None:
    with pytest.raises(ValueError):
        paired_difference("x", [1.0], [1.0, 0.0])
