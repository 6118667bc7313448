"""``--report DIR``: report.md, a self-contained report.html (charts inlined as base64 PNG,
the all-examples table's filters as inline JavaScript, no external URL), loss_curves.png,
metrics.png and examples.jsonl. Both reports open with the verdict
(:mod:`cloudtune.compare.verdict`).

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
from cloudtune.compare.charts import loss_curves_png, metrics_png
from cloudtune.compare.examples_view import STYLE as EXAMPLES_STYLE
from cloudtune.compare.examples_view import examples_html
from cloudtune.compare.report import METRIC_LABELS, Comparison
from cloudtune.fsperm import open_private, private_dir, write_private
from cloudtune.secrets import scrub

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
    header = ["target", "compared with", "metric", "n", "difference", "95% interval", "better/worse",
              "sign test p", "Holm p", "verdict", "examples needed"]
    rows = []
    for (a, b), found in comparison.table().items():
        for d in found:
            span = "-" if d.low is None else f"{d.low:+.3f} to {d.high:+.3f} ({d.interval_method})"
            needed = "-" if d.needed is None or d.verdict in ("better", "worse") else f"{d.needed:,}"
            rows.append([a, b, METRIC_LABELS[d.metric], str(d.examples), f"{d.difference:+.3f}", span,
                         f"{d.wins}/{d.losses}", f"{d.p_value:.3g}", _fmt(d.p_holm, ".3g"), d.verdict, needed])
    return header, rows


def _ranking_rows(verdict: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["#", "target", METRIC_LABELS[verdict["metric"]], "95% interval", "n", "cost per 1,000 answers USD",
              "mean latency s"]
    rows = [[str(r["rank"]), r["label"], _fmt(r["mean"]),
             "-" if r["low"] is None else f"{r['low']:.3f} to {r['high']:.3f} ({r['interval_method']})",
             str(r["answered"]), _fmt(r["cost_per_1000_answers_usd"], ".4f") if r["cost_per_1000_answers_usd"]
             is not None else "n/a", _fmt(r["mean_latency_s"], ".3f")] for r in verdict["ranking"]]
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
    provenance = settings.get("provenance") or {}
    notes = [(f"Eval file: {settings.get('eval_file')} ({settings.get('examples')} examples, "
              f"sha256 {str(settings.get('eval_sha256'))[:12]})"),
             f"Decoding (every target): {json.dumps(settings.get('decoding'))}",
             f"ROUGE-L: {metrics.ROUGE_VARIANT}",
             f"Statistics: {settings.get('statistics')}.",
             "Inference cost: list prices per target (see JSON for sources); local targets have no price."]
    if provenance:
        notes.append(f"cloudtune {provenance.get('cloudtune_version')}, git commit "
                     f"{provenance.get('git_commit') or 'unknown (not a git checkout)'}")
    if settings.get("few_shot"):
        rows = "; ".join(f"{run}: rows {', '.join(map(str, ids))}" for run, ids in
                         (settings["few_shot"].get("rows") or {}).items())
        notes.append(f"Few-shot: {settings['few_shot']['k']} training examples, seed {settings['few_shot']['seed']}"
                     + (f" (training file line numbers {rows})" if rows else ""))
    if settings.get("answer_cache"):
        notes.append(f"Answers reused from the cache: {settings['answer_cache']}")
    if settings.get("judge"):
        notes.append(f"Judge: {settings['judge']['target']}, each pair asked in both orders, one JSON verdict "
                     f"per reply, one retry on a reply that is not one")
    return [
        ("Summary", comparison.statements() or ["Only one target: nothing to compare against."]),
        ("Targets", _target_rows(comparison)),
        ("Paired differences", _difference_rows(comparison)),
        ("Judge", (["target", "baseline", "judge", "win rate", "95% CI", "verdict", "asked", "unparsed", "retried",
                    "failed", "first-position rate"],
                   [[j["target"], j["baseline"], j["judge"], _fmt(j["win_rate"], ".1%"),
                     f"{_fmt(j['ci_low'], '.1%')} to {_fmt(j['ci_high'], '.1%')}", str(j.get("verdict") or "-"),
                     str(j["asked"]), str(j["unparsed"]), str(j.get("retried", 0)), str(j["failed"]),
                     _fmt(j.get("first_position_rate"), ".1%")] for j in (x.summary() for x in comparison.judgements)])),
        ("Training", _run_rows(comparison)),
        ("Examples where the fine-tune is worse than the baseline (token F1)", _worse_rows(comparison)),
        ("Failed requests", _failure_rows(comparison)),
        ("Settings", notes),
    ]


def _markdown(comparison: Comparison, verdict: dict[str, Any]) -> str:
    parts = ["# cloudtune compare", "", "## Verdict", "", _md_table(*_ranking_rows(verdict)), ""]
    parts += [f"- {line}" for line in verdict["lines"]]
    parts += ["", "![metrics](metrics.png)", "", "![loss curves](loss_curves.png)", ""]
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
.charts{display:flex;gap:12px;flex-wrap:wrap}.charts img{width:560px}#verdict{border:2px solid #333;
padding:4px 16px;margin-bottom:16px}#verdict li{margin:4px 0}#winner{font-weight:bold}"""


def _html(comparison: Comparison, charts: dict[str, Path], verdict: dict[str, Any]) -> str:
    inline = {name: base64.b64encode(path.read_bytes()).decode() for name, path in charts.items()}
    lines = verdict["lines"]
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>cloudtune compare</title>",
             f"<style>{STYLE}\n{EXAMPLES_STYLE}</style></head><body><h1>cloudtune compare</h1>",
             "<section id='verdict'><h2>Verdict</h2>", _html_table(*_ranking_rows(verdict)),
             f"<ul><li id='winner'>{html.escape(lines[0])}</li>"
             + "".join(f"<li class='question'>{html.escape(line)}</li>" for line in lines[1:]) + "</ul></section>",
             "<div class='charts' id='charts'>"]
    parts += [f"<img id='{name.split('.')[0]}' alt='{name}' src='data:image/png;base64,{data}'>"
              for name, data in inline.items()]
    parts.append("</div>")
    for title, content in _sections(comparison):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if isinstance(content, tuple):
            parts.append(_html_table(*content) if content[1] else "<p><em>none</em></p>")
        else:
            parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in content) + "</ul>")
        if title == "Targets":
            parts += ["<h2 id='all-examples'>Every example</h2>", examples_html(comparison)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(comparison: Comparison, directory: Path) -> dict[str, Path]:
    private_dir(directory)  # a folder of the user's that already holds other files keeps its mode
    charts = {"metrics.png": metrics_png(comparison, directory / "metrics.png"),
              "loss_curves.png": loss_curves_png(comparison, directory / "loss_curves.png")}
    examples = directory / "examples.jsonl"
    rows = (json.dumps(row, ensure_ascii=False) for row in comparison.example_rows())
    write_private(examples, "".join(scrub(row) + "\n" for row in rows))
    from cloudtune.compare.verdict import verdict

    found = verdict(comparison)
    markdown = write_private(directory / "report.md", scrub(_markdown(comparison, found)))
    page = write_private(directory / "report.html", scrub(_html(comparison, charts, found)))
    return {"report.md": markdown, "report.html": page, "examples.jsonl": examples, **charts}
