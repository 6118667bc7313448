"""Per-answer scores and per-target aggregates.

* exact match: equal after normalising (lower case, words only, single spaces);
* token F1: SQuAD-style overlap of the normalised words;
* ROUGE-L: the ``rougeL`` variant of Google's ``rouge-score`` package (sentence-level
  longest common subsequence over the whole answer, newlines not split as in
  ``rougeLsum``), with Porter stemming, F-measure. Stemming makes "killed" and "kill"
  one token, which is what a reader means by "the same answer";
* latency: mean and 95th percentile (linear interpolation, numpy's default);
* tokens and inference cost: summed over the answered requests.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)

ROUGE_VARIANT = "rougeL (rouge-score, sentence-level LCS, Porter stemming, F-measure)"


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def exact_match(answer: str, reference: str) -> float:
    return float(normalise(answer) == normalise(reference))


def token_f1(answer: str, reference: str) -> float:
    a, r = _WORD.findall(answer.lower()), _WORD.findall(reference.lower())
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=2)
def _rouge_scorer(stemming: bool) -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:  # pragma: no cover - the compare extra is missing
        from cloudtune import errors

        raise errors.ProviderUnavailable(
            "ROUGE-L needs the rouge-score package.", hint="pip install 'cloudtune[compare]'"
        ) from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemming)


def rouge_l(answer: str, reference: str, *, stemming: bool = True) -> float:
    """ROUGE-L F-measure of ``answer`` against ``reference`` (see the module docstring)."""
    return float(_rouge_scorer(stemming).score(reference, answer)["rougeL"].fmeasure)


SCORES = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}
METRIC_LABELS = {"exact_match": "exact match", "token_f1": "token F1", "rouge_l": "ROUGE-L"}


# An answer this close to the reference (token F1 or ROUGE-L) that is still not an exact
# match is flagged for a reader to check: lexical overlap scores "Grass is a color" 0.82
# against "Grass is green", and only a person (or a judge) can tell it is wrong.
CLOSE_BUT_WRONG = 0.5
# Targets "disagree" on an example when their exact-match results differ or their scores on
# the primary metric are more than this far apart.
DISAGREEMENT_SPREAD = 0.2


def close_but_wrong(scores: dict[str, float]) -> bool:
    return bool(scores) and scores.get("exact_match") == 0.0 and \
        max(scores.get("token_f1", 0.0), scores.get("rouge_l", 0.0)) >= CLOSE_BUT_WRONG


def score_answer(answer: str, reference: str) -> dict[str, float]:
    return {name: fn(answer, reference) for name, fn in SCORES.items()}


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile with linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def inference_cost(prompt_tokens: int, completion_tokens: int, price: tuple[float, float] | None) -> float | None:
    """USD for the tokens at ``price`` = (input, output) USD per 1M tokens; None when unpriced."""
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1_000_000
