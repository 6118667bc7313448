"""The comparison as data: every figure in one dictionary (``--json``), a rich table for
the terminal and the plain statements of which differences are real."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloudtune.compare import metrics
from cloudtune.compare.bootstrap import Difference, paired_bootstrap
from cloudtune.compare.evalset import EvalExample
from cloudtune.compare.judge import JudgeResult
from cloudtune.compare.runfacts import RunFacts
from cloudtune.compare.runner import TargetReport

METRIC_LABELS = {"exact_match": "exact match", "token_f1": "token F1", "rouge_l": "ROUGE-L"}


@dataclass
class Comparison:
    examples: list[EvalExample]
    reports: list[TargetReport]
    baselines: dict[str, str] = field(default_factory=dict)  # target label -> its baseline's label
    settings: dict[str, Any] = field(default_factory=dict)
    runs: list[RunFacts] = field(default_factory=list)
    judgements: list[JudgeResult] = field(default_factory=list)
    _intervals: dict[str, list[Difference]] = field(default_factory=dict, repr=False)

    def report(self, label: str) -> TargetReport:
        return next(r for r in self.reports if r.label == label)

    def differences(self, label: str) -> list[Difference]:
        """Paired intervals of ``label`` minus its baseline, over examples both answered
        (computed once: the table, the JSON and the report files all show them)."""
        if label not in self._intervals:
            self._intervals[label] = self._differences(label)
        return self._intervals[label]

    def _differences(self, label: str) -> list[Difference]:
        baseline_label = self.baselines.get(label)
        if baseline_label is None:
            return []
        mine, theirs = self.report(label), self.report(baseline_label)
        pairs = [(a, b) for a, b in zip(mine.answers, theirs.answers) if a.ok and b.ok]
        if not pairs:
            return []
        return [paired_bootstrap(name, [a.scores[name] for a, _ in pairs], [b.scores[name] for _, b in pairs])
                for name in metrics.SCORES]

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
        lines = []
        for report in self.reports:
            for diff in self.differences(report.label):
                lines.append(diff.statement(report.label, self.baselines[report.label]))
        for judged in self.judgements:
            s = judged.summary()
            if s["win_rate"] is None:
                lines.append(f"judge {s['judge']}: no usable verdict for {s['target']} vs {s['baseline']} "
                             f"({s['unparsed']} unparsed, {s['failed']} failed of {s['asked']})")
            else:
                noise = "within noise" if s["within_noise"] else "a real difference"
                lines.append(f"judge {s['judge']}: {s['target']} wins {s['win_rate']:.0%} against {s['baseline']} "
                             f"(95% CI {s['ci_low']:.0%} to {s['ci_high']:.0%}, both orders asked): {noise}")
        return lines

    def example_rows(self) -> list[dict[str, Any]]:
        rows = []
        for i, example in enumerate(self.examples):
            rows.append({
                "index": i, "prompt": example.prompt, "reference": example.reference,
                "answers": {r.label: {"text": r.answers[i].text, "error": r.answers[i].error,
                                      "latency_s": round(r.answers[i].latency_s, 4), **r.answers[i].scores}
                            for r in self.reports},
            })
        return rows

    def to_dict(self, *, examples: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "settings": self.settings,
            "targets": [{**r.summary(), "baseline": self.baselines.get(r.label)} for r in self.reports],
            "differences": {r.label: [d.to_dict() for d in self.differences(r.label)] for r in self.reports
                            if r.label in self.baselines},
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
            return f"{diff.difference:+.3f} [{diff.low:+.3f},{diff.high:+.3f}]{mark}"
    return ""


def render_terminal(comparison: Comparison, stream: Any) -> None:
    """The rich table of targets and runs, then the plain statements."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, width=max(140, Console(file=stream).width))
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
    console.print(f"Δ: * real difference, ~ within noise (paired bootstrap, {comparison.settings.get('bootstrap')}); "
                  f"ROUGE-L = {metrics.ROUGE_VARIANT}", markup=False, highlight=False)
