"""Evaluation and comparison of fine-tunes, base models and few-shot prompting on the
same held-out questions, through each provider's ``chat``.

Modules: :mod:`~cloudtune.compare.metrics` (scores), :mod:`~cloudtune.compare.stats`
(paired intervals, exact tests, Holm), :mod:`~cloudtune.compare.evalset` (eval files, few-shot
prompts), :mod:`~cloudtune.compare.runner` (asking targets), :mod:`~cloudtune.compare.judge`
(pairwise judging), :mod:`~cloudtune.compare.runfacts` (training figures of a run),
:mod:`~cloudtune.compare.report` (the comparison as a table / JSON),
:mod:`~cloudtune.compare.verdict` (ranking, winner, the three questions),
:mod:`~cloudtune.compare.report_files` (report.md, report.html, charts) and
:mod:`~cloudtune.compare.command` (``cloudtune compare``).
"""

from cloudtune.compare.evalset import EvalExample, load_eval_file
from cloudtune.compare.runner import (
           Answer,
           Target,
           TargetReport,
           evaluate_deployment,
           evaluate_target,
)

__all__ = ["Answer", "EvalExample", "Target", "TargetReport", "evaluate_deployment", "evaluate_target",
           "load_eval_file"]
