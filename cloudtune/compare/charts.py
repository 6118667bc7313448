"""The report's two charts, drawn with matplotlib's Agg backend into owner-only PNG files.

* ``metrics.png``: each score's mean per target with its 95% interval. Every target has
  its own colour (matplotlib's ten-colour cycle while it lasts, evenly spaced hues of one
  perceptual map beyond) and, past ten targets, its own hatch too, so no two bars look
  alike however many targets there are. Every bar is outlined and carries its value, so
  a mean of zero reads "0.00" on the axis instead of looking like missing data.
* ``loss_curves.png``: one panel per provider (losses from different tokenizers are not
  on one scale), loss against epochs (or against the fraction of training when the
  number of epochs is unknown), training solid, validation dashed with markers and a
  darker shade. Legends say provider and curve; the run ids are in the caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.compare import metrics
from cloudtune.fsperm import open_private

if TYPE_CHECKING:
    from cloudtune.compare.report import Comparison
    from cloudtune.compare.runfacts import RunFacts

TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf"]
HATCHES = ["", "//", "..", "xx", "\\\\", "oo"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def styles(count: int) -> list[tuple[Any, str]]:
    """(colour, hatch) for ``count`` targets, all different from one another."""
    if count <= len(TAB10):
        return [(TAB10[i], "") for i in range(count)]
    import matplotlib

    colours = matplotlib.colormaps["turbo"]
    # neighbours in hue get different hatches, so even close hues stay apart
    return [(colours(0.05 + 0.9 * i / (count - 1)), HATCHES[i % len(HATCHES)]) for i in range(count)]


def _save(fig: Any, path: Path) -> Path:
    with open_private(path) as out:
        fig.savefig(out, format="png")
    return path


def metrics_png(comparison: Comparison, path: Path) -> Path:
    from cloudtune.compare.report import METRIC_LABELS
    from cloudtune.compare.stats import mean_interval

    plt = _pyplot()
    names = list(metrics.SCORES)
    reports = comparison.reports
    width = 0.8 / max(1, len(reports))
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(reports) + 4), 4.8), dpi=100)
    for i, (report, (colour, hatch)) in enumerate(zip(reports, styles(len(reports)))):
        means, errors, labels = [], ([], []), []
        for name in names:
            values = [a.scores[name] for a in report.answered()]
            mean, low, high, _ = mean_interval(values) if values else (0.0, None, None, "none")
            means.append(mean)
            errors[0].append(0.0 if low is None else max(0.0, mean - max(0.0, low)))
            errors[1].append(0.0 if high is None else max(0.0, min(1.0, high) - mean))
            labels.append(f"{mean:.2f}" if values else "n/a")
        positions = [j + (i - (len(reports) - 1) / 2) * width for j in range(len(names))]
        bars = ax.bar(positions, means, width, yerr=errors, capsize=3, label=report.label, color=colour, hatch=hatch,
                      edgecolor="#333333", linewidth=0.8)
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.axhline(0, color="#333333", linewidth=1)
    ax.set_xticks(range(len(names)), [METRIC_LABELS[n] for n in names])
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("mean score (95% interval)")
    ax.set_title("Scores per target")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=max(1, len(reports) // 8 + 1))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _x_axis(facts: RunFacts) -> tuple[float, str]:
    """(scale, label): step * scale is the position in epochs, or in fraction of training."""
    total = facts.total_steps or max((s for s, _ in facts.train_curve + facts.valid_curve), default=0)
    if not total:
        return 1.0, "step"
    if facts.epochs:
        return facts.epochs / total, "epoch"
    return 1.0 / total, "fraction of training"


def _short_labels(runs: list[RunFacts]) -> dict[str, str]:
    """provider, with #1, #2 when one provider has several runs."""
    out = {}
    for facts in runs:
        same = [f for f in runs if f.provider == facts.provider]
        out[facts.run_id] = facts.provider if len(same) == 1 else f"{facts.provider} #{same.index(facts) + 1}"
    return out


def loss_curves_png(comparison: Comparison, path: Path) -> Path:
    plt = _pyplot()
    providers = list(dict.fromkeys(f.provider for f in comparison.runs)) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(providers), figsize=(max(8, 4.5 * len(providers)), 4.6), dpi=100, squeeze=False)
    labels = _short_labels(comparison.runs)
    drawn = 0
    for ax, provider in zip(axes[0], providers):
        runs = [f for f in comparison.runs if f.provider == provider]
        x_label = "step"
        for facts, (colour, _) in zip(runs, styles(len(runs))):
            scale, x_label = _x_axis(facts)
            if facts.train_curve:
                steps, losses = zip(*facts.train_curve)
                ax.plot([s * scale for s in steps], losses, color=colour, linewidth=2,
                        label=f"{labels[facts.run_id]} train")
                drawn += 1
            if facts.valid_curve:
                steps, losses = zip(*facts.valid_curve)
                ax.plot([s * scale for s in steps], losses, color=colour, linewidth=2, linestyle="--", marker="o",
                        markersize=4, markerfacecolor="white", alpha=0.9, label=f"{labels[facts.run_id]} validation")
                drawn += 1
        ax.set_title(f"{provider}: training and validation loss", fontsize=10)
        ax.set_xlabel(x_label)
        ax.set_ylabel("loss")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no loss metrics reported", ha="center", va="center", transform=ax.transAxes)
    caption = "; ".join(f"{label} = run {run_id}" for run_id, label in labels.items())
    fig.text(0.01, 0.01, ("runs: " + caption) if caption else "no runs", fontsize=7, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    _save(fig, path)
    plt.close(fig)
    return path
