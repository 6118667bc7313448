"""Metric and interval units against values known independently of our code."""

from __future__ import annotations

import pytest

from cloudtune.catalog import inference_price_for
from cloudtune.compare.metrics import (
    exact_match,
    inference_cost,
    normalise,
    percentile,
    rouge_l,
    token_f1,
)


def test_rouge_l_matches_lin_2004_worked_example() -> None:
    # Lin (2004), "ROUGE: A Package for Automatic Evaluation of Summaries", section 3.1:
    # reference S1 "police killed the gunman"; S2 "police kill the gunman" has LCS 3 of 4
    # words (ROUGE-L 3/4), S3 "the gunman kill police" has LCS 2 (ROUGE-L 1/2).
    reference = "police killed the gunman"
    assert rouge_l("police kill the gunman", reference, stemming=False) == pytest.approx(0.75)
    assert rouge_l("the gunman kill police", reference, stemming=False) == pytest.approx(0.5)
    # with Porter stemming (what compare reports) "killed" and "kill" are one token
    assert rouge_l("police kill the gunman", reference) == pytest.approx(1.0)


def test_rouge_l_precision_and_recall_differ() -> None:
    # LCS "a b c" = 3; answer 6 words (P=1/2), reference 3 words (R=1): F = 2PR/(P+R) = 2/3
    assert rouge_l("a b c d e f", "a b c", stemming=False) == pytest.approx(2 / 3)


def test_exact_match_normalises_case_spaces_and_punctuation() -> None:
    assert normalise("  The  Capital, is PARIS! ") == "the capital is paris"
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0


def test_token_f1_squad_style() -> None:
    # answer "the cat sat", reference "the cat sat down": P=1, R=3/4 -> F1 = 6/7
    assert token_f1("the cat sat", "the cat sat down") == pytest.approx(6 / 7)
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("", "") == 1.0


def test_p95_interpolates_between_ranks() -> None:
    values = list(range(1, 101))  # 1..100: position 0.95 * 99 = 94.05 -> 95 + 0.05
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([], 95) is None
    assert percentile([3.0], 95) == 3.0


def test_inference_cost_from_the_price_table() -> None:
    price = inference_price_for("openai", "gpt-4o-mini", fine_tuned=True)
    assert price is not None and price[:2] == (0.30, 1.20) and price[2] == "2025-06-01"
    assert inference_cost(1_000_000, 500_000, price[:2]) == pytest.approx(0.30 + 0.60)
    assert inference_price_for("local", "HuggingFaceTB/SmolLM2-135M-Instruct", fine_tuned=True) is None
    assert inference_cost(10, 10, None) is None
