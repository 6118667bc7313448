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
from cloudtune.compare import stats
from cloudtune.compare.evalset import FEW_SHOT_SEED, few_shot_messages, load_eval_file
from cloudtune.compare.judge import JUDGE_DECODING, judge_pair
from cloudtune.compare.metrics import ROUGE_VARIANT
from cloudtune.compare.answer_cache import AnswerCache
from cloudtune.compare.report import PRIMARY_METRIC, Comparison, render_terminal
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

    def model_deployment(self, provider: Provider, model: str, name: str) -> str:
        """``model`` if it already names a deployment, else ``model`` deployed as ``name``."""
        from cloudtune.poller import wait_for_deployment

        try:
            provider.get_deployment(model)
            return model
        except errors.NotFound:
            pass
        except errors.CloudtuneError:
            pass  # not a deployment name the provider accepts: a model to deploy
        say(f"Deploying {model} as {name} for the comparison")
        self.made.append((provider, name))
        provider.deploy(model, name=name)
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


def _judge_target(spec: str, ledger: Any, opened: list[Provider], bases: BaseDeployments) -> Target:
    """``--judge RUN`` (that run's deployment), ``--judge PROVIDER:DEPLOYMENT`` or
    ``--judge local:MODEL`` (a local model, deployed for the comparison unless a local
    deployment has that name, and removed afterwards)."""
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
    if not provider.facts.hosted:  # your own hardware serves only what was deployed on it
        deployment = bases.model_deployment(provider, deployment, "ct-judge-" + hashlib.sha256(
            deployment.encode()).hexdigest()[:8])
    return Target(spec, provider, deployment, kind="judge", provider_name=provider_name)


def _git_commit(folder: Path) -> dict[str, Any] | None:
    """The commit checked out where the eval file lives, and whether the tree has changes."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "uncommitted_changes": bool(dirty.stdout.strip())}


def provenance(eval_path: Path, training_files: list[Path]) -> dict[str, Any]:
    """What produced this comparison: cloudtune's version, the git commit of the eval file's
    checkout (when it is in one) and the files' hashes."""
    import cloudtune

    git = _git_commit(eval_path.resolve().parent)
    hashes = {}
    for path in training_files:
        try:
            hashes[str(path)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            hashes[str(path)] = None
    return {"cloudtune_version": cloudtune.__version__, "git_commit": git["commit"] if git else None,
            "git_uncommitted_changes": git["uncommitted_changes"] if git else None,
            "eval_sha256": hashlib.sha256(eval_path.read_bytes()).hexdigest(), "training_sha256": hashes}


def require_compare_extra(*, charts: bool) -> None:
    """compare computes with numpy and scipy (intervals, exact tests) and rouge-score, and draws the report's charts
    with matplotlib: all checked before a single question is asked, so a missing extra costs no
    requests and says how to install it instead of ending in a traceback halfway."""
    needed = [("numpy", "numpy"), ("scipy", "scipy"), ("rouge_score", "rouge-score")] + (
        [("matplotlib", "matplotlib")] if charts else [])
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
    comparison = Comparison(examples, [], primary_metric=getattr(args, "metric", None) or PRIMARY_METRIC)
    cache = None if getattr(args, "no_cache", False) else AnswerCache()
    few_shot_rows: dict[str, list[int]] = {}
    try:
        judge = _judge_target(args.judge, ledger, opened, bases) if getattr(args, "judge", None) else None
        for run, prefix in zip(runs, _prefixes(runs)):
            provider = provider_for(run)
            opened.append(provider)
            concurrency = args.concurrency or default_concurrency(run.provider)
            price, note = _price(run, fine_tuned=True)
            targets = [Target(f"{prefix} fine-tuned", provider, live_deployment(run) or "", "fine-tuned",
                              run.provider, run.run_id, price=price, price_note=note, model=run.fine_tuned_model)]
            if with_base or few_shot:
                base_name = bases.name_for(run, provider)
                price, note = _price(run, fine_tuned=False)
                if with_base:
                    targets.append(Target(f"{prefix} base", provider, base_name, "base", run.provider, run.run_id,
                                          price=price, price_note=note, model=run.spec.base_model))
                if few_shot:
                    lines = few_shot_rows.setdefault(run.run_id, [])
                    shots = few_shot_messages(run.spec.training_file, few_shot, line_numbers=lines)
                    targets.append(Target(f"{prefix} {few_shot}-shot", provider, base_name, "few-shot", run.provider,
                                          run.run_id, prefix=shots, price=price, price_note=note,
                                          model=run.spec.base_model))
            baseline = targets[1].label if len(targets) > 1 else None
            for target in targets:
                say(f"Asking {target.label} ({target.deployment}) {len(examples)} questions, {concurrency} at a time")
                comparison.reports.append(evaluate_target(target, examples, concurrency=concurrency, cache=cache))
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
        "statistics": stats.describe(), "primary_metric": comparison.primary_metric,
        "provenance": provenance(eval_path, [run.spec.training_file for run in runs]),
        "answer_cache": (f"{cache.hits} answers reused, {cache.misses} asked" if cache else "off (--no-cache)"),
        "few_shot": {"k": few_shot, "seed": FEW_SHOT_SEED, "rows": few_shot_rows} if few_shot else None,
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
