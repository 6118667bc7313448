"""The comparison as data: every figure in one dictionary (``--json``), a rich table for
the terminal and the plain statements of which differences are real.

Which pairs are compared: each target against its baseline (``baselines``), each fine-tune
against the few-shot prompt of the same run, every fine-tune against every other, and the
best-ranked target against every other (the winner is named only when it beats all of
them). Every pair is compared on every metric; Holm's adjustment runs over all pairs of
one metric (:mod:`cloudtune.compare.stats`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloudtune.compare import metrics
from cloudtune.compare.stats import Difference, adjust, paired_difference
from cloudtune.compare.evalset import EvalExample
from cloudtune.compare.judge import JudgeResult
from cloudtune.compare.runfacts import RunFacts
from cloudtune.compare.runner import TargetReport

METRIC_LABELS = metrics.METRIC_LABELS
PRIMARY_METRIC = "token_f1"  # the ranking's metric unless --metric says otherwise


@dataclass
class Comparison:
    examples: list[EvalExample]
    reports: list[TargetReport]
    baselines: dict[str, str] = field(default_factory=dict)  # target label -> its baseline's label
    settings: dict[str, Any] = field(default_factory=dict)
    runs: list[RunFacts] = field(default_factory=list)
    judgements: list[JudgeResult] = field(default_factory=list)
    primary_metric: str = PRIMARY_METRIC
    _table: dict[tuple[str, str], list[Difference]] | None = field(default=None, repr=False)

    def report(self, label: str) -> TargetReport:
        return next(r for r in self.reports if r.label == label)

    def kind(self, label: str) -> str | None:
        target = self.report(label).target
        return target.kind if target else None

    def ranked(self) -> list[TargetReport]:
        """Targets by their mean on the primary metric, best first (unanswered last)."""
        def key(report: TargetReport) -> float:
            value = report.summary()[self.primary_metric]
            return -1.0 if value is None else value
        return sorted(self.reports, key=key, reverse=True)

    def pairs(self) -> list[tuple[str, str]]:
        """Every (target, other) compared, each unordered pair once (see the module docstring)."""
        out: list[tuple[str, str]] = []

        def add(a: str, b: str) -> None:
            if a != b and (a, b) not in out and (b, a) not in out:
                out.append((a, b))

        for label, baseline in self.baselines.items():
            add(label, baseline)
        tuned = [r for r in self.reports if self.kind(r.label) == "fine-tuned"]
        for ft in tuned:
            for other in self.reports:
                if self.kind(other.label) == "few-shot" and other.target and ft.target \
                        and other.target.run_id == ft.target.run_id:
                    add(ft.label, other.label)
        for i, a in enumerate(tuned):
            for b in tuned[i + 1:]:
                add(a.label, b.label)
        ranked = self.ranked()
        for other in ranked[1:]:
            add(ranked[0].label, other.label)
        return out

    def table(self) -> dict[tuple[str, str], list[Difference]]:
        """Every pair's paired differences on every metric over the examples both answered,
        Holm-adjusted per metric (computed once: terminal, JSON and report files agree)."""
        if self._table is None:
            table: dict[tuple[str, str], list[Difference]] = {}
            for a, b in self.pairs():
                both = [(x, y) for x, y in zip(self.report(a).answers, self.report(b).answers) if x.ok and y.ok]
                if both:
                    table[(a, b)] = [paired_difference(name, [x.scores[name] for x, _ in both],
                                                       [y.scores[name] for _, y in both]) for name in metrics.SCORES]
            adjust([d for found in table.values() for d in found])
            self._table = table
        return self._table

    def difference(self, label: str, other: str, metric: str) -> Difference | None:
        """``label`` minus ``other`` on ``metric``, whichever way round the pair was stored."""
        table = self.table()
        for key, flip in (((label, other), False), ((other, label), True)):
            for d in table.get(key, []):
                if d.metric == metric:
                    return d.reversed() if flip else d
        return None

    def differences(self, label: str) -> list[Difference]:
        """``label`` minus its baseline on every metric (empty without a baseline)."""
        baseline = self.baselines.get(label)
        if baseline is None:
            return []
        found = [self.difference(label, baseline, name) for name in metrics.SCORES]
        return [d for d in found if d is not None]

    def worse_than_baseline(self, label: str, metric: str = "token_f1") -> list[dict[str, Any]]:
        """Examples where ``label`` scored below its baseline (or failed where it answered)."""
        baseline_label = self.baselines.get(label)
        mine = self.report(label)
        if baseline_label is None or (mine.target is not None and mine.target.kind != "fine-tuned"):
            return []
        theirs = self.report(baseline_label)
        out = []
        for i, (a, b) in enumerate(zip(mine.answers, theirs.answers)):
            if not b.ok:
                continue
            if not a.ok or a.scores[metric] < b.scores[metric]:
                out.append({"index": i, "question": self.examples[i].question, "reference": self.examples[i].reference,
                            "target": label, "answer": a.text, "error": a.error,
                            "baseline": baseline_label, "baseline_answer": b.text,
                            metric: a.scores.get(metric), f"baseline_{metric}": b.scores[metric]})
        return out

    def statements(self) -> list[str]:
        """Each pair in words: every metric against the baseline, the primary metric otherwise."""
        lines = []
        for report in self.reports:
            for diff in self.differences(report.label):
                lines.append(diff.statement(report.label, self.baselines[report.label]))
        for (a, b), found in self.table().items():
            if self.baselines.get(a) != b and self.baselines.get(b) != a:
                lines += [d.statement(a, b) for d in found if d.metric == self.primary_metric]
        for judged in self.judgements:
            s = judged.summary()
            if s["win_rate"] is None:
                lines.append(f"judge {s['judge']}: no usable verdict for {s['target']} vs {s['baseline']} "
                             f"({s['unparsed']} unparsed, {s['failed']} failed of {s['asked']})")
            else:
                bias = (f"; it named the first position in {s['first_position_rate']:.0%} of its decisive verdicts"
                        if s["first_position_rate"] is not None else "")
                unusable = (f"; {s['unparsed']} unparsed and {s['failed']} failed of {s['asked']} left out"
                            if s["unparsed"] or s["failed"] else "")
                lines.append(f"judge {s['judge']}: {s['target']} wins {s['win_rate']:.0%} against {s['baseline']} "
                             f"(95% CI {s['ci_low']:.0%} to {s['ci_high']:.0%}, n={s['judged_examples']}, "
                             f"p={s['p_value']:.3g}, both orders asked): {s['verdict']}{bias}{unusable}")
        return lines

    def example_rows(self) -> list[dict[str, Any]]:
        """Everything about every example (examples.jsonl, the all-examples table): each target's
        answer, error, latency, tokens and scores, whether it is worse than its baseline on the
        primary metric, whether it is close but wrong, and whether the targets disagree."""
        metric = self.primary_metric
        rows = []
        for i, example in enumerate(self.examples):
            answers: dict[str, dict[str, Any]] = {}
            for r in self.reports:
                a = r.answers[i]
                baseline = self.baselines.get(r.label)
                theirs = self.report(baseline).answers[i] if baseline else None
                worse = bool(theirs is not None and theirs.ok and (not a.ok or a.scores[metric] < theirs.scores[metric]))
                answers[r.label] = {"text": a.text, "error": a.error, "latency_s": round(a.latency_s, 4),
                                    "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens,
                                    **a.scores, "close_but_wrong": a.ok and metrics.close_but_wrong(a.scores),
                                    "baseline": baseline, "worse_than_baseline": worse}
            done = [a for a in answers.values() if not a["error"]]
            spread = (max(a[metric] for a in done) - min(a[metric] for a in done)) if done else 0.0
            judged = {f"{j.target} vs {j.baseline}": {"verdicts": j.verdicts[i], "replies": j.replies[i],
                                                      "score": j.per_example[i]}
                      for j in self.judgements if i < len(j.verdicts)}  # [target first, baseline first]
            rows.append({
                "index": i, "question": example.question, "prompt": example.prompt, "reference": example.reference,
                "disagreement": len({a["exact_match"] for a in done}) > 1 or spread > metrics.DISAGREEMENT_SPREAD,
                "answers": answers, **({"judge": judged} if judged else {}),
            })
        return rows

    def to_dict(self, *, examples: bool = True) -> dict[str, Any]:
        from cloudtune.compare.verdict import verdict

        doc: dict[str, Any] = {
            "settings": self.settings,
            "targets": [{**r.summary(), "baseline": self.baselines.get(r.label)} for r in self.reports],
            "verdict": verdict(self),
            "differences": {r.label: [d.to_dict() for d in self.differences(r.label)] for r in self.reports
                            if r.label in self.baselines},
            "pairs": [{"target": a, "other": b, **d.to_dict()} for (a, b), found in self.table().items()
                      for d in found],
            "judge": [j.summary() for j in self.judgements],
            "runs": [f.to_dict() for f in self.runs],
            "failures": [{"target": r.label, "index": a.index, "question": self.examples[a.index].question,
                          "error": a.error} for r in self.reports for a in r.failures()],
            "worse_than_baseline": [row for r in self.reports for row in self.worse_than_baseline(r.label)],
            "statements": self.statements(),
        }
        if examples:
            doc["examples"] = self.example_rows()
        return doc


def _fmt(value: Any, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _diff_cell(comparison: Comparison, label: str, metric: str) -> str:
    for diff in comparison.differences(label):
        if diff.metric == metric:
            mark = "~" if diff.within_noise else "*"
            span = "" if diff.low is None or diff.high is None else f" [{diff.low:+.3f},{diff.high:+.3f}]"
            return f"{diff.difference:+.3f}{span}{mark} p={diff.p_holm:.2g}"
    return ""


def render_verdict(comparison: Comparison, console: Any) -> None:
    """The ranked table and the verdict lines: the first thing the terminal shows."""
    from rich.table import Table

    from cloudtune.compare.verdict import verdict

    found = verdict(comparison)
    table = Table(title=f"verdict: targets ranked on {METRIC_LABELS[found['metric']]} (95% interval)")
    for column in ("#", "target", "mean", "95% interval", "n", "cost / 1,000 answers", "mean latency s"):
        table.add_column(column, overflow="fold")
    for row in found["ranking"]:
        span = "-" if row["low"] is None else f"{row['low']:.3f} to {row['high']:.3f} ({row['interval_method']})"
        table.add_row(str(row["rank"]), row["label"], _fmt(row["mean"]), span, str(row["answered"]),
                      _fmt(row["cost_per_1000_answers_usd"], ".4f", "n/a"), _fmt(row["mean_latency_s"], ".2f"))
    console.print(table)
    for line in found["lines"]:
        console.print(line, markup=False, highlight=False)


def render_terminal(comparison: Comparison, stream: Any) -> None:
    """The rich table of targets and runs, then the plain statements."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, width=max(140, Console(file=stream).width))
    render_verdict(comparison, console)
    table = Table(title="cloudtune compare", show_lines=False)
    for column in ("target", "ok/failed", "exact", "F1", "ROUGE-L", "Δ F1 vs baseline (95% CI)",
                   "mean s", "p95 s", "tokens in/out", "cost USD"):
        table.add_column(column, overflow="fold")
    for report in comparison.reports:
        s = report.summary()
        table.add_row(report.label, f"{s['answered']}/{s['failed_requests']}", _fmt(s["exact_match"], ".0%"),
                      _fmt(s["token_f1"]), _fmt(s["rouge_l"]), _diff_cell(comparison, report.label, "token_f1"),
                      _fmt(s["mean_latency_s"], ".2f"), _fmt(s["p95_latency_s"], ".2f"),
                      f"{s['prompt_tokens']}/{s['completion_tokens']}", _fmt(s["inference_cost_usd"], ".5f", "n/a"))
    console.print(table)
    if comparison.runs:
        runs = Table(title="training")
        for column in ("run", "provider", "base model", "time s", "trained tokens", "cost USD", "train loss",
                       "valid loss"):
            runs.add_column(column, overflow="fold")
        for f in comparison.runs:
            runs.add_row(f.run_id, f.provider, f.base_model, _fmt(f.training_time_s, ".0f"),
                         _fmt(f.trained_tokens, "d"), _fmt(f.training_cost_usd, ".4f", "n/a"),
                         _fmt(f.final_train_loss, ".4f"), _fmt(f.final_valid_loss, ".4f"))
        console.print(runs)
    for line in comparison.statements():
        console.print(line, markup=False, highlight=False)
    failures = [(r.label, a) for r in comparison.reports for a in r.failures()]
    for label, answer in failures[:20]:
        console.print(f"failed: {label} example {answer.index + 1}: {answer.error}", markup=False, highlight=False)
    if len(failures) > 20:
        console.print(f"... {len(failures) - 20} more failed requests (see --json or the report)")
    console.print(f"Δ: * better/worse, ~ not shown to differ, p Holm-adjusted ({comparison.settings.get('statistics')}); "
                  f"ROUGE-L = {metrics.ROUGE_VARIANT}", markup=False, highlight=False)
