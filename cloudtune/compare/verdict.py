"""The verdict that opens every comparison: the targets ranked on the primary metric with
their intervals, the winner only when the data name one, and the three questions a user
asks, each answered in one line with its evidence:

1. did fine-tuning beat the base model?
2. did it beat few-shot prompting of that base model?
3. which provider's fine-tune is best, at what cost per 1,000 answers and what latency?

A winner is the best-ranked target only if it is "better" (Holm-adjusted, see
:mod:`cloudtune.compare.stats`) than every other target; otherwise the line says it is not
clearly ahead and of whom.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cloudtune.compare.metrics import METRIC_LABELS
from cloudtune.compare.stats import BETTER, SAME, TOO_FEW, WORSE, Difference, mean_interval

if TYPE_CHECKING:
    from cloudtune.compare.runner import TargetReport

# ``comparison`` below is a cloudtune.compare.report.Comparison; it is not imported, not even for
# type checking, because report.py reads the verdict from here (no import circle).
Comparison = Any

_ANSWER = {BETTER: "yes", WORSE: "no, worse", SAME: "the same on every example"}


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _evidence(d: Difference) -> str:
    holm = f", Holm p={d.p_holm:.2g}" if d.p_holm is not None else ""
    return f"{d.difference:+.3f}, n={d.examples}{holm}"


def _cost_per_1000(report: TargetReport) -> float | None:
    s = report.summary()
    if s["inference_cost_usd"] is None or not s["answered"]:
        return None
    return s["inference_cost_usd"] / s["answered"] * 1000


def ranking(comparison: Comparison) -> list[dict[str, Any]]:
    metric = comparison.primary_metric
    rows = []
    for rank, report in enumerate(comparison.ranked(), 1):
        values = [a.scores[metric] for a in report.answered()]
        mean, low, high, method = mean_interval(values) if values else (None, None, None, "none")
        s = report.summary()
        cost = _cost_per_1000(report)
        rows.append({"rank": rank, "label": report.label, "kind": s["kind"], "provider": s["provider"],
                     "run_id": s["run_id"], "mean": None if mean is None else round(mean, 4),
                     "low": None if low is None else round(low, 4), "high": None if high is None else round(high, 4),
                     "interval_method": method, "answered": s["answered"],
                     "cost_per_1000_answers_usd": None if cost is None else round(cost, 6),
                     "mean_latency_s": s["mean_latency_s"]})
    return rows


def _winner(comparison: Comparison) -> tuple[str | None, str]:
    metric, name = comparison.primary_metric, _metric_label(comparison.primary_metric)
    ranked = comparison.ranked()
    if len(ranked) < 2:
        return None, "Only one target: nothing to rank it against."
    top = ranked[0].label
    unclear = []
    for other in ranked[1:]:
        d = comparison.difference(top, other.label, metric)
        if d is None or d.verdict != BETTER:
            unclear.append(f"{other.label} ({d.verdict if d else 'no common answers'})")
    if not unclear:
        return top, f"Winner on {name}: {top}, better than every other target (Holm-adjusted)."
    return None, (f"No winner on {name}: {top} ranks first but is not clearly better than "
                  f"{', '.join(unclear)}.")


def _against(comparison: Comparison, kind: str, question: str, missing: str) -> str:
    """One line: each fine-tune against the ``kind`` target of its own run."""
    metric = comparison.primary_metric
    parts = []
    for report in comparison.reports:
        target = report.target
        if target is None or target.kind != "fine-tuned":
            continue
        for other in comparison.reports:
            if other.target and other.target.kind == kind and other.target.run_id == target.run_id:
                d = comparison.difference(report.label, other.label, metric)
                if d is not None:
                    parts.append(f"{report.label} vs {other.label}: {_ANSWER.get(d.verdict, d.verdict)} "
                                 f"({_evidence(d)})")
    if not parts:
        return f"{question} {missing}"
    return f"{question} ({_metric_label(metric)}) " + "; ".join(parts) + "."


def _money(value: float | None, report: TargetReport) -> str:
    if value is not None:
        return f"USD {value:.4f} per 1,000 answers"
    on_own_hardware = report.target is not None and not report.target.provider.facts.hosted
    return "no price (your hardware)" if on_own_hardware else "no price known"


def _best_fine_tune(comparison: Comparison) -> str:
    question = "Which provider's fine-tune is best?"
    metric = comparison.primary_metric
    tuned = [r for r in comparison.ranked() if r.target is not None and r.target.kind == "fine-tuned"]
    if not tuned:
        return f"{question} No fine-tune in this comparison."
    costs = "; ".join(f"{r.label}: {_money(_cost_per_1000(r), r)}, "
                      f"{r.summary()['mean_latency_s']} s mean latency" for r in tuned)
    if len(tuned) == 1:
        return f"{question} Only one fine-tune, {tuned[0].label} ({costs})."
    top = tuned[0]
    behind = [(r, comparison.difference(top.label, r.label, metric)) for r in tuned[1:]]
    unclear = [f"{r.label} ({d.verdict if d else 'no common answers'})" for r, d in behind
               if d is None or d.verdict != BETTER]
    if unclear:
        lead = (f"no clear best: {top.label} ranks first on {_metric_label(metric)} but is not clearly better "
                f"than {', '.join(unclear)}")
    else:
        lead = f"{top.label}, better on {_metric_label(metric)} than " + ", ".join(
            f"{r.label} ({_evidence(d)})" for r, d in behind if d is not None)
    return f"{question} {lead}. Cost and latency: {costs}."


def verdict(comparison: Comparison) -> dict[str, Any]:
    """The verdict as data (``--json``'s ``verdict``); ``lines`` is what the reports print first."""
    winner, winner_line = _winner(comparison)
    questions = {
        "beat_base": _against(comparison, "base", "Did fine-tuning beat the base model?",
                              "Not asked in this comparison (compare --baseline base asks it)."),
        "beat_few_shot": _against(comparison, "few-shot", "Did fine-tuning beat few-shot prompting?",
                                  "Not asked in this comparison (compare --few-shot K asks it)."),
        "best_fine_tune": _best_fine_tune(comparison),
    }
    return {"metric": comparison.primary_metric, "ranking": ranking(comparison), "winner": winner,
            "lines": [winner_line, *questions.values()], "questions": questions,
            "note": f"'{TOO_FEW}' means this eval set is too small for the test to call any difference real."}
