"""``--report DIR``: report.md, a self-contained report.html (charts inlined as base64 PNG,
no script, no external URL), loss_curves.png, metrics.png and examples.jsonl.

The report holds the eval questions, the models' answers and the errors of failed requests:
like everything else cloudtune writes, its files are the owner's only (0600 in a 0700 folder
cloudtune made) and its text passes through the same secret scrubber as the terminal output,
since an error message or an answer can echo a key."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from cloudtune.compare import metrics
from cloudtune.compare.report import METRIC_LABELS, Comparison
from cloudtune.fsperm import open_private, private_dir, write_private
from cloudtune.secrets import scrub

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def loss_curves_png(comparison: Comparison, path: Path) -> Path:
    """Training (solid) and validation (dashed) loss of every run on one chart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    drawn = 0
    for i, facts in enumerate(comparison.runs):
        colour = COLOURS[i % len(COLOURS)]
        if facts.train_curve:
            ax.plot(*zip(*facts.train_curve), color=colour, linewidth=2, label=f"{facts.provider} {facts.run_id} train")
            drawn += 1
        if facts.valid_curve:
            ax.plot(*zip(*facts.valid_curve), color=colour, linewidth=2, linestyle="--", marker="o",
                    label=f"{facts.provider} {facts.run_id} validation")
            drawn += 1
    if not drawn:
        ax.text(0.5, 0.5, "no loss metrics reported by the providers", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training and validation loss")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with open_private(path) as out:
        fig.savefig(out, format="png")
    plt.close(fig)
    return path


def metrics_png(comparison: Comparison, path: Path) -> Path:
    """Mean of each score per target, with the 95% interval of the mean (bootstrap of the
    target's own scores) as error bars."""
    from cloudtune.compare.bootstrap import mean_interval

    plt = _pyplot()
    names = list(metrics.SCORES)
    reports = comparison.reports
    width = 0.8 / max(1, len(reports))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for i, report in enumerate(reports):
        means, lows, highs = [], [], []
        for name in names:
            values = [a.scores[name] for a in report.answered()]
            if values:
                interval = mean_interval(name, values)
                means.append(interval.difference)
                lows.append(interval.difference - interval.low)
                highs.append(interval.high - interval.difference)
            else:
                means.append(0.0), lows.append(0.0), highs.append(0.0)
        positions = [j + (i - (len(reports) - 1) / 2) * width for j in range(len(names))]
        ax.bar(positions, means, width, yerr=[lows, highs], capsize=4, label=report.label,
               color=COLOURS[i % len(COLOURS)])
    ax.set_xticks(range(len(names)), [METRIC_LABELS[n] for n in names])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean score (95% CI)")
    ax.set_title("Scores per target")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with open_private(path) as out:
        fig.savefig(out, format="png")
    plt.close(fig)
    return path


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _target_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["target", "answered", "failed", "exact match", "token F1", "ROUGE-L", "mean latency s",
              "p95 latency s", "prompt tokens", "completion tokens", "inference cost USD"]
    rows = []
    for report in comparison.reports:
        s = report.summary()
        rows.append([report.label, str(s["answered"]), str(s["failed_requests"]), _fmt(s["exact_match"], ".1%"),
                     _fmt(s["token_f1"]), _fmt(s["rouge_l"]), _fmt(s["mean_latency_s"], ".3f"),
                     _fmt(s["p95_latency_s"], ".3f"), str(s["prompt_tokens"]), str(s["completion_tokens"]),
                     _fmt(s["inference_cost_usd"], ".6f") if s["inference_cost_usd"] is not None else "n/a"])
    return header, rows


def _difference_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["target", "baseline", "metric", "difference", "95% CI", "verdict"]
    rows = []
    for report in comparison.reports:
        for d in comparison.differences(report.label):
            rows.append([report.label, comparison.baselines[report.label], METRIC_LABELS[d.metric],
                         f"{d.difference:+.3f}", f"{d.low:+.3f} to {d.high:+.3f}",
                         "within noise" if d.within_noise else ("better" if d.difference > 0 else "worse")])
    return header, rows


def _run_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["run", "provider", "base model", "training time s", "trained tokens", "training cost USD",
              "final train loss", "final valid loss"]
    rows = [[f.run_id, f.provider, f.base_model, _fmt(f.training_time_s, ".0f"), _fmt(f.trained_tokens, "d"),
             _fmt(f.training_cost_usd, ".4f") if f.training_cost_usd is not None else "n/a",
             _fmt(f.final_train_loss, ".4f"), _fmt(f.final_valid_loss, ".4f")] for f in comparison.runs]
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _worse_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["#", "target", "question", "reference", "answer", "baseline answer", "F1", "baseline F1"]
    rows = []
    for report in comparison.reports:
        for w in comparison.worse_than_baseline(report.label):
            rows.append([str(w["index"] + 1), w["target"], w["question"][:200], w["reference"][:200],
                         (w["answer"] or f"(failed: {w['error']})")[:200], (w["baseline_answer"] or "")[:200],
                         _fmt(w.get("token_f1"), ".2f"), _fmt(w["baseline_token_f1"], ".2f")])
    return header, rows


def _failure_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    return ["target", "#", "error"], [[r.label, str(a.index + 1), str(a.error)[:300]]
                                      for r in comparison.reports for a in r.failures()]


def _sections(comparison: Comparison) -> list[tuple[str, tuple[list[str], list[list[str]]] | list[str]]]:
    settings = comparison.settings
    notes = [(f"Eval file: {settings.get('eval_file')} ({settings.get('examples')} examples, "
              f"sha256 {str(settings.get('eval_sha256'))[:12]})"),
             f"Decoding (every target): {json.dumps(settings.get('decoding'))}",
             f"ROUGE-L: {metrics.ROUGE_VARIANT}",
             f"Intervals: {settings.get('bootstrap')}; a difference whose interval holds 0 is within noise.",
             "Inference cost: list prices per target (see JSON for sources); local targets have no price."]
    if settings.get("few_shot"):
        notes.append(f"Few-shot: {settings['few_shot']['k']} training examples, seed {settings['few_shot']['seed']}")
    if settings.get("judge"):
        notes.append(f"Judge: {settings['judge']['target']}, each pair asked in both orders")
    return [
        ("Summary", comparison.statements() or ["Only one target: nothing to compare against."]),
        ("Targets", _target_rows(comparison)),
        ("Differences against the baseline", _difference_rows(comparison)),
        ("Judge", (["target", "baseline", "judge", "win rate", "95% CI", "asked", "unparsed", "failed"],
                   [[j["target"], j["baseline"], j["judge"], _fmt(j["win_rate"], ".1%"),
                     f"{_fmt(j['ci_low'], '.1%')} to {_fmt(j['ci_high'], '.1%')}", str(j["asked"]),
                     str(j["unparsed"]), str(j["failed"])] for j in (x.summary() for x in comparison.judgements)])),
        ("Training", _run_rows(comparison)),
        ("Examples where the fine-tune is worse than the baseline (token F1)", _worse_rows(comparison)),
        ("Failed requests", _failure_rows(comparison)),
        ("Settings", notes),
    ]


def _markdown(comparison: Comparison) -> str:
    parts = ["# cloudtune compare", "", "![metrics](metrics.png)", "", "![loss curves](loss_curves.png)", ""]
    for title, content in _sections(comparison):
        parts += [f"## {title}", ""]
        if isinstance(content, tuple):
            parts.append(_md_table(*content) if content[1] else "_none_")
        else:
            parts += [f"- {line}" for line in content]
        parts.append("")
    return "\n".join(parts)


STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}
table{border-collapse:collapse;margin:8px 0 20px;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f0f0f0}img{max-width:100%;border:1px solid #ddd}
.charts{display:flex;gap:12px;flex-wrap:wrap}.charts img{width:560px}"""


def _html(comparison: Comparison, charts: dict[str, Path]) -> str:
    inline = {name: base64.b64encode(path.read_bytes()).decode() for name, path in charts.items()}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>cloudtune compare</title>",
             f"<style>{STYLE}</style></head><body><h1>cloudtune compare</h1><div class='charts' id='charts'>"]
    parts += [f"<img id='{name.split('.')[0]}' alt='{name}' src='data:image/png;base64,{data}'>"
              for name, data in inline.items()]
    parts.append("</div>")
    for title, content in _sections(comparison):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(content, tuple):
            parts.append(_html_table(*content) if content[1] else "<p><em>none</em></p>")
        else:
            parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in content) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(comparison: Comparison, directory: Path) -> dict[str, Path]:
    private_dir(directory)  # a folder of the user's that already holds other files keeps its mode
    charts = {"metrics.png": metrics_png(comparison, directory / "metrics.png"),
              "loss_curves.png": loss_curves_png(comparison, directory / "loss_curves.png")}
    examples = directory / "examples.jsonl"
    rows = (json.dumps(row, ensure_ascii=False) for row in comparison.example_rows())
    write_private(examples, "".join(scrub(row) + "\n" for row in rows))
    markdown = write_private(directory / "report.md", scrub(_markdown(comparison)))
    page = write_private(directory / "report.html", scrub(_html(comparison, charts)))
    return {"report.md": markdown, "report.html": page, "examples.jsonl": examples, **charts}
