"""The quickstart's base-vs-fine-tuned comparison, with the same figures and report files
as ``cloudtune compare --baseline base``."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune.compare import stats
from cloudtune.compare.answer_cache import AnswerCache
from cloudtune.compare.command import provenance
from cloudtune.compare.evalset import load_eval_file
from cloudtune.compare.metrics import ROUGE_VARIANT
from cloudtune.compare.report import Comparison
from cloudtune.compare.report_files import write_report
from cloudtune.compare.runfacts import live_deployment, run_facts
from cloudtune.compare.runner import DECODING, Target, default_concurrency, evaluate_target

if TYPE_CHECKING:
    from cloudtune.provider import Provider
    from cloudtune.types import Run


def compare_base_and_fine_tuned(run: Run, provider: Provider, base_deployment: str, *, eval_file: Path | None = None,
                                **chat_params: Any) -> tuple[Comparison, Path]:
    """Ask the base and the fine-tuned deployment ``eval_file``'s questions (default: the run's
    eval file); write the report under CLOUDTUNE_HOME/reports/<run id>/ and return it with its
    report.html path."""
    from cloudtune.ledger import cloudtune_home

    eval_file = eval_file or run.spec.eval_file
    assert eval_file is not None
    examples = load_eval_file(eval_file)
    targets = [Target("base", provider, base_deployment, "base", run.provider, run.run_id,
                      price_note="local: your hardware, no price", model=run.spec.base_model),
               Target("fine-tuned", provider, live_deployment(run) or "", "fine-tuned", run.provider, run.run_id,
                      price_note="local: your hardware, no price", model=run.fine_tuned_model)]
    cache = AnswerCache()
    comparison = Comparison(examples, [evaluate_target(t, examples, concurrency=default_concurrency(run.provider), cache=cache,
                                                       **chat_params)
                                       for t in targets],
                            baselines={"fine-tuned": "base"}, runs=[run_facts(run, provider)])
    comparison.settings = {"eval_file": str(eval_file), "examples": len(examples),
                           "eval_sha256": hashlib.sha256(Path(eval_file).read_bytes()).hexdigest(),
                           "decoding": {**DECODING, **chat_params}, "rouge": ROUGE_VARIANT,
                           "statistics": stats.describe(), "baseline": "base",
                           "primary_metric": comparison.primary_metric,
                           "provenance": provenance(Path(eval_file), [run.spec.training_file]),
                           "answer_cache": f"{cache.hits} answers reused, {cache.misses} asked"}
    written = write_report(comparison, cloudtune_home() / "reports" / run.run_id)
    return comparison, written["report.html"]
