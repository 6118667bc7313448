"""``cloudtune compare RUN [RUN ...] --eval FILE [--baseline base] [--few-shot K] [--judge TARGET]
[--report DIR] [--concurrency N] [--json]``.

Targets are each run's deployment, and with ``--baseline base`` / ``--few-shot K`` the
run's base model on the same provider (deployed under ``ct-base-<run id>`` for the
comparison when the provider needs a deployment to chat, removed afterwards). Every
target is asked through its provider's ``chat`` with the same decoding settings.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtune import errors
from cloudtune.compare import bootstrap
from cloudtune.compare.evalset import FEW_SHOT_SEED, few_shot_messages, load_eval_file
from cloudtune.compare.judge import JUDGE_DECODING, judge_pair
from cloudtune.compare.metrics import ROUGE_VARIANT
from cloudtune.compare.report import Comparison, render_terminal
from cloudtune.compare.runfacts import live_deployment, run_facts
from cloudtune.compare.runner import (
    DECODING,
    Target,
    default_concurrency,
    evaluate_target,
)
from cloudtune.output import emit_json, say

if TYPE_CHECKING:
    from cloudtune.provider import Provider
    from cloudtune.types import Run


@dataclass
class BaseDeployments:
    """Base-model deployments made for this comparison; removed when it ends."""

    made: list[tuple[Provider, str]] = field(default_factory=list)

    def name_for(self, run: Run, provider: Provider) -> str:
        from cloudtune.poller import wait_for_deployment
        from cloudtune.types import DeploymentState

        name = f"ct-base-{run.run_id}".lower()
        try:
            existing = provider.get_deployment(name)
            if existing.state == DeploymentState.READY and existing.model == run.spec.base_model:
                self.made.append((provider, name))
                return name  # left by an earlier comparison that was stopped; reused, then removed
        except errors.NotFound:
            pass
        say(f"Deploying base model {run.spec.base_model} on {run.provider} as {name} for the comparison")
        self.made.append((provider, name))
        provider.deploy(run.spec.base_model, name=name)
        wait_for_deployment(provider, name, target="ready", timeout_s=1800)
        return name

    def remove(self) -> None:
        """Undeploy each and wait until it is gone, as cleanup does: a deployment left
        half-deleted still counts against quota (and a local one still holds a server)."""
        from cloudtune.poller import wait_for_deployment

        for provider, name in self.made:
            try:
                provider.undeploy(name)
                wait_for_deployment(provider, name, target="deleted", timeout_s=1800)
            except errors.CloudtuneError as exc:
                say(f"cloudtune: could not remove the comparison's base deployment {name}: {exc}")


def _price(run: Run, *, fine_tuned: bool) -> tuple[tuple[float, float] | None, str]:
    from cloudtune.catalog import inference_price_for
    from cloudtune.registry import provider_facts

    if not provider_facts(run.provider).hosted:
        return None, "local: your hardware, no price"
    found = inference_price_for(run.provider, run.spec.base_model, fine_tuned=fine_tuned)
    if found is None:
        return None, f"no inference price known for {run.spec.base_model} on {run.provider}"
    return (found[0], found[1]), f"USD {found[0]}/{found[1]} per 1M in/out tokens ({found[2]}, {found[3]})"


def _prefixes(runs: list[Run]) -> list[str]:
    providers = [r.provider for r in runs]
    return [r.provider if providers.count(r.provider) == 1 else f"{r.provider}-{r.run_id[-4:]}" for r in runs]


def _judge_target(spec: str, ledger: Any, opened: list[Provider]) -> Target:
    """``--judge RUN`` (that run's deployment) or ``--judge PROVIDER:DEPLOYMENT``."""
    from cloudtune import registry
    from cloudtune.pipeline import provider_for

    try:
        run = ledger.get_run(spec)
    except errors.InvalidInput:
        run = None
    if run is not None:
        name = live_deployment(run)
        if not name:
            raise errors.InvalidInput(f"Judge run {run.run_id} has no deployment.", hint=f"`cloudtune deploy {run.run_id}`")
        provider = provider_for(run)
        opened.append(provider)
        return Target(f"{run.provider}:{name}", provider, name, kind="judge", provider_name=run.provider)
    provider_name, sep, deployment = spec.partition(":")
    if not sep or not deployment:
        raise errors.InvalidInput(f"--judge {spec!r} is neither a run id nor PROVIDER:DEPLOYMENT.",
                                  hint="e.g. --judge openai:gpt-4.1-mini-2025-04-14")
    provider = registry.get_provider(provider_name, {})
    opened.append(provider)
    return Target(spec, provider, deployment, kind="judge", provider_name=provider_name)


def require_compare_extra(*, charts: bool) -> None:
    """compare computes with numpy (the bootstrap) and rouge-score, and draws the report's charts
    with matplotlib: all checked before a single question is asked, so a missing extra costs no
    requests and says how to install it instead of ending in a traceback halfway."""
    needed = [("numpy", "numpy"), ("rouge_score", "rouge-score")] + ([("matplotlib", "matplotlib")] if charts else [])
    missing = []
    for module, package in needed:
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise errors.ProviderUnavailable(
            f"cloudtune compare needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed.",
            hint="pip install 'cloudtune[compare]'",
        )


def build_comparison(args: argparse.Namespace) -> Comparison:
    from cloudtune.state import open_state
    from cloudtune.pipeline import provider_for

    require_compare_extra(charts=bool(getattr(args, "report", None)))
    eval_path = Path(args.eval)
    examples = load_eval_file(eval_path, limit=getattr(args, "limit", None))
    ledger = open_state()
    runs = [ledger.get_run(run_id) for run_id in args.run_ids]
    for run in runs:
        if not live_deployment(run):
            raise errors.InvalidInput(f"Run {run.run_id} has no deployment.", hint=f"`cloudtune deploy {run.run_id}`")
    few_shot = int(getattr(args, "few_shot", 0) or 0)
    with_base = getattr(args, "baseline", None) == "base"
    opened: list[Provider] = []
    bases = BaseDeployments()
    comparison = Comparison(examples, [])
    try:
        judge = _judge_target(args.judge, ledger, opened) if getattr(args, "judge", None) else None
        for run, prefix in zip(runs, _prefixes(runs)):
            provider = provider_for(run)
            opened.append(provider)
            concurrency = args.concurrency or default_concurrency(run.provider)
            price, note = _price(run, fine_tuned=True)
            targets = [Target(f"{prefix} fine-tuned", provider, live_deployment(run) or "", "fine-tuned",
                              run.provider, run.run_id, price=price, price_note=note)]
            if with_base or few_shot:
                base_name = bases.name_for(run, provider)
                price, note = _price(run, fine_tuned=False)
                if with_base:
                    targets.append(Target(f"{prefix} base", provider, base_name, "base", run.provider, run.run_id,
                                          price=price, price_note=note))
                if few_shot:
                    shots = few_shot_messages(run.spec.training_file, few_shot)
                    targets.append(Target(f"{prefix} {few_shot}-shot", provider, base_name, "few-shot", run.provider,
                                          run.run_id, prefix=shots, price=price, price_note=note))
            baseline = targets[1].label if len(targets) > 1 else None
            for target in targets:
                say(f"Asking {target.label} ({target.deployment}) {len(examples)} questions, {concurrency} at a time")
                comparison.reports.append(evaluate_target(target, examples, concurrency=concurrency))
                if baseline and target.label != baseline:
                    comparison.baselines[target.label] = baseline
            comparison.runs.append(run_facts(run, provider))
        if not with_base and not few_shot and len(comparison.reports) > 1:
            first = comparison.reports[0].label  # no base model asked: the first run is the reference
            comparison.baselines.update({r.label: first for r in comparison.reports[1:]})
        if judge is not None:
            for label, baseline in comparison.baselines.items():
                say(f"Judging {label} against {baseline} with {judge.label} (both orders)")
                comparison.judgements.append(judge_pair(judge, examples, comparison.report(label),
                                                        comparison.report(baseline),
                                                        concurrency=args.concurrency or default_concurrency(
                                                            judge.provider_name)))
    finally:
        bases.remove()
        for provider in opened:
            provider.close()
    comparison.settings = {
        "eval_file": str(eval_path), "eval_sha256": hashlib.sha256(eval_path.read_bytes()).hexdigest(),
        "examples": len(examples), "decoding": dict(DECODING), "rouge": ROUGE_VARIANT,
        "bootstrap": f"{bootstrap.RESAMPLES} paired resamples, 95% percentile interval, seed {bootstrap.SEED}",
        "few_shot": {"k": few_shot, "seed": FEW_SHOT_SEED} if few_shot else None,
        "baseline": "base" if with_base else None,
        "judge": {"target": args.judge, "decoding": JUDGE_DECODING} if getattr(args, "judge", None) else None,
        "concurrency": args.concurrency, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return comparison


def run(args: argparse.Namespace) -> int:
    comparison = build_comparison(args)
    written: dict[str, str] = {}
    if getattr(args, "report", None):
        from cloudtune.compare.report_files import write_report

        written = {k: str(v) for k, v in write_report(comparison, Path(args.report)).items()}
    if args.json:
        emit_json({**comparison.to_dict(), "report_files": written})
    else:
        render_terminal(comparison, sys.stdout)
        if written:
            say(f"report: {written['report.html']} (and report.md, charts, examples.jsonl in {args.report})",
                sys.stdout)
    return 0
