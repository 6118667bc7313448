"""Implementations of the ``cloudtune`` commands (the parser lives in :mod:`cloudtune.cli`; what
the commands share is in :mod:`cloudtune.command_helpers`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cloudtune import errors
from cloudtune.cleanup import settle_interrupted_deletes, undone_by_cleanup
from cloudtune.command_helpers import (
    Signalled,
    as_interrupted,
    describe_run,
    finish,
    interruptible,
    load_run,
    locked_run,
    wait_lock_s,
    workdir_for,
)
from cloudtune.config import build_spec, parse_duration
from cloudtune.locks import RunLock
from cloudtune.output import choose_mode, emit_json, make_reporter, run_document, say
from cloudtune.pipeline import Pipeline, provider_for
from cloudtune.state import StateStore, describe_unreadable, open_state
from cloudtune.types import CleanupPolicy, FineTuneSpec, JobAction, JobState, ResourceState, Run, Step


def _workdir(run: Run) -> Path:
    return workdir_for(run.run_id)


def _drive(args: argparse.Namespace, ledger: StateStore, run: Run, *, unpause: bool = False) -> int:
    """Drive ``run`` through the pipeline. The caller holds the run's lock."""
    mode = choose_mode(getattr(args, "json", False))
    reporter = make_reporter(mode)
    provider = provider_for(run)
    pipeline = Pipeline(ledger, provider, reporter, workdir=_workdir(run), unpause=unpause)
    try:
        with interruptible():
            try:
                pipeline.run(run)
            except (errors.Interrupted, KeyboardInterrupt) as exc:
                interrupted = as_interrupted(exc)
                reporter.warn(str(interrupted))
                _on_interrupt(pipeline, run, reporter)
                raise interrupted from None
    except errors.CloudtuneError as exc:
        reporter.close()
        if args.json:
            emit_json(run_document(run, exit_code=errors.exit_code_for(exc), error=exc.to_dict()))
        say(f"cloudtune: {exc}")
        if exc.hint:
            say(f"hint: {exc.hint}")
        if run.error and run.error.cleanup_error:
            say(f"cloudtune: the cleanup after it failed too: {run.error.cleanup_error}")
        say(f"run id: {run.run_id}")
        return errors.exit_code_for(exc)
    finally:
        provider.close()
    return finish(args, run, reporter)


def _on_interrupt(pipeline: Pipeline, run: Run, reporter: Any) -> None:
    """Still inside the signal guard: a second signal exits at once. Nothing here may replace
    the interruption (exit 130): a failed cancel or cleanup is reported beside it."""
    try:
        if run.spec.cancel_on_interrupt and run.job_id and run.job_state and not run.job_state.is_terminal:
            pipeline.job_call(run, JobAction.CANCEL)
        pipeline.apply_cleanup_policy(run, failed=True)
    except errors.Interrupted:
        raise
    except errors.CloudtuneError as exc:
        reporter.warn(f"After the interruption: {exc}")


# ------------------------------------------------------------------ commands
def cmd_run(args: argparse.Namespace) -> int:
    from cloudtune import multirun, registry

    if multirun.wanted(args):  # several providers, or --like RUN: one child run per provider
        return multirun.run_many(args)
    spec = build_spec(args)
    registry.provider_class(spec.provider)  # an unknown or uninstalled provider stops here, before any record
    if getattr(args, "preflight_only", False):
        return _preflight(spec)
    ledger = open_state()
    run = ledger.create_run(spec)
    args.run_id = run.run_id  # from here on, an unexpected error's message may point at `cloudtune resume`
    if not args.json:
        say(f"run {run.run_id}: {spec.provider} / {spec.base_model}")
    with RunLock(run.run_id):
        return _drive(args, ledger, run)


def _preflight(spec: FineTuneSpec) -> int:
    """``run --preflight-only``: whether this provider can start this spec (SDK, credentials, the
    provider's own refusals of the model or method), recording and uploading nothing. A run on
    several providers asks each one first, so none uploads when another could not start."""
    with provider_for(spec) as provider:
        result = provider.check()
        why = f"The {spec.provider} provider cannot start: {'; '.join(result.problems) or 'its preflight failed'}."
        if not result.sdk_installed:
            raise errors.CapabilityError(why, hint=result.install_hint, provider=spec.provider)
        if not result.credentials_found:
            raise errors.AuthError(why, hint=result.install_hint, provider=spec.provider)
        provider.plan(spec)  # refusals of the model or the method raise here
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    ledger = open_state()
    if _rebuild_wanted(args, ledger):
        with RunLock(args.run_id, wait_s=wait_lock_s(args)):
            _rebuilt(args, ledger, save=True)
    with locked_run(args) as (ledger, run):
        if args.timeout:
            run.spec.timeout_s = parse_duration(args.timeout)
        if args.cleanup:
            run.spec.cleanup = CleanupPolicy(args.cleanup)
        run.spec.wait = True
        _settle_deletes(args, ledger, run)
        if run.step == Step.DONE and run.status == "succeeded" and not undone_by_cleanup(run):
            return finish(args, run, make_reporter("plain"))
        run.status = "active"
        return _drive(args, ledger, run, unpause=True)


def _settle_deletes(args: argparse.Namespace, ledger: StateStore, run: Run) -> None:
    """A delete sent by a process that died before it heard the answer: ask the provider what
    happened before the run is described as finished (issue 16 point 3)."""
    if not any(r.state == ResourceState.DELETING for r in run.resources):
        return
    with provider_for(run) as provider:
        changed = settle_interrupted_deletes(Pipeline(ledger, provider), run)
    ledger.save(run)
    if changed and not getattr(args, "json", False):
        say("after an interrupted delete: " + "; ".join(changed))


def cmd_status(args: argparse.Namespace) -> int:
    ledger = open_state()
    rebuilt = _rebuild_wanted(args, ledger)
    if rebuilt:
        run = _rebuilt(args, ledger, save=False)  # read-only: nothing is recorded
    else:
        _, run = load_run(args.run_id)
    live: dict[str, Any] = {}
    if not args.offline and run.job_id:
        with provider_for(run) as provider:
            job = provider.get_job(run.job_id)
            live = {"job": job.model_dump(mode="json")}
            if provider.supports("list_checkpoints"):
                live["checkpoints"] = [c.model_dump(mode="json") for c in provider.list_checkpoints(run.job_id)]
            run.job_state = job.state
            run.fine_tuned_model = run.fine_tuned_model or job.fine_tuned_model
            if not rebuilt:
                record_seen(ledger, run.run_id, job)
    if args.json:
        emit_json(run_document(run, **live))
        return 0
    finish(args, run, make_reporter("plain"))
    if live:
        metrics = live["job"].get("metrics") or {}
        if metrics:
            say("  metrics:    " + ", ".join(f"{k}={v:g}" for k, v in metrics.items()), sys.stdout)
        for checkpoint in live.get("checkpoints", []):
            figures = ", ".join(f"{k}={v:g}" for k, v in (checkpoint.get("metrics") or {}).items())
            say(f"  checkpoint: step {checkpoint.get('step')} {checkpoint.get('model') or checkpoint['id']}"
                + (f" ({figures})" if figures else ""), sys.stdout)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from cloudtune import poller

    ledger, run = load_run(args.run_id)
    if not run.job_id:
        raise errors.InvalidInput(f"Run {run.run_id} has no job yet.", hint="`cloudtune resume` creates it.")
    mode = choose_mode(args.json)
    reporter = make_reporter(mode, lines=True)
    with provider_for(run) as provider, interruptible():
        job = poller.wait_for_job(
            provider, run.job_id, timeout_s=parse_duration(args.timeout) if args.timeout else None,
            on_job=lambda j: reporter.job(run, j), on_event=lambda e: reporter.event(run, e),
        )
    reporter.close()
    run = record_seen(ledger, run.run_id, job) or run
    if args.json:
        emit_json({"type": "result", **run_document(run)})
    else:
        say(f"job {job.id}: {job.state}" + (f" -> {job.fine_tuned_model}" if job.fine_tuned_model else ""), sys.stdout)
    return 0 if job.state == JobState.SUCCEEDED else 1


def record_seen(ledger: StateStore, run_id: str, job: Any) -> Run | None:
    """``status`` and ``watch`` write down the job state they saw (a later sweep must not act on
    what the run looked like when it was started; issue 16 point 10), under the run's lock. A run
    another process drives is left to it - it records what it sees - and ``None`` is returned."""
    from cloudtune.types import ResourceKind

    try:
        with ledger.lock(run_id):
            run = ledger.get_run(run_id)
            if run.job_id != job.id:
                return run
            run.job_state = job.state
            if job.fine_tuned_model:
                run.fine_tuned_model = run.fine_tuned_model or job.fine_tuned_model
                if job.is_terminal and run.resource(ResourceKind.MODEL, id=job.fine_tuned_model) is None:
                    run.record(ResourceKind.MODEL, ResourceState.OWNED, id=job.fine_tuned_model)
            return ledger.save(run)
    except errors.RunLocked:
        return None


def cmd_pause(args: argparse.Namespace) -> int:
    with locked_run(args) as (ledger, run), provider_for(run) as provider:
        job = Pipeline(ledger, provider).job_call(run, JobAction.PAUSE)
    if args.json:
        emit_json(run_document(run))
    else:
        say(f"job {job.id}: {job.state} (`cloudtune resume {run.run_id}` resumes it)", sys.stdout)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    ledger = open_state()
    runs = ledger.list_runs(limit=args.limit)
    if args.json:
        unreadable = [{"run_id": u.run_id, "reason": u.reason} for u in ledger.unreadable]
        emit_json({"runs": [run_document(r) for r in runs], **({"unreadable": unreadable} if unreadable else {})})
        return 0
    for line in describe_unreadable(ledger.unreadable):
        say(f"cloudtune: warning: {line}")
    if not runs:
        say("no runs yet", sys.stdout)
    for r in runs:
        say(f"{r.run_id}  {r.provider:<8} {r.status:<11} {str(r.step):<13} {r.spec.base_model}"
            f"{'  -> ' + r.fine_tuned_model if r.fine_tuned_model else ''}", sys.stdout)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    with locked_run(args) as (ledger, run):
        if args.sku:
            run.spec.deploy.sku = args.sku
        if not run.reached(Step.JOB_FINISHED) or not run.fine_tuned_model:
            raise errors.InvalidInput(f"Run {run.run_id} has no fine-tuned model yet.", hint="`cloudtune resume` first.")
        reporter = make_reporter(choose_mode(args.json))
        with provider_for(run) as provider, interruptible():
            pipeline = Pipeline(ledger, provider, reporter)
            model = _checkpoint_model(provider, run, args.checkpoint) if getattr(args, "checkpoint", None) else None
            name = pipeline.deploy(run, name=args.name, model=model)
            pipeline.advance(run, Step.DEPLOYED)
            run.smoke_test = None
            pipeline.smoke_test(run)
            reporter.step(run, f"Deployment {name} is ready")
        return finish(args, run, reporter)


def _checkpoint_model(provider: Any, run: Any, wanted: str) -> str:
    """The deployable id of the run's checkpoint ``wanted`` (its id or its model id)."""
    checkpoints = provider.list_checkpoints(run.job_id) if run.job_id else []
    for checkpoint in checkpoints:
        if wanted in (checkpoint.id, checkpoint.model):
            return checkpoint.model or checkpoint.id
    known = ", ".join(c.id for c in checkpoints) or "none"
    raise errors.InvalidInput(f"Job {run.job_id} has no checkpoint {wanted} (its checkpoints: {known}).")


def cmd_providers(args: argparse.Namespace) -> int:
    from cloudtune import registry
    from cloudtune.service_facts.table import model_rows
    from cloudtune.service_facts.table import render as render_models

    rows = []
    for name, entry in sorted(registry.known_providers().items()):
        if args.names and name not in args.names:
            continue
        row: dict[str, Any] = {"provider": name, "summary": entry.summary, "install": entry.install_hint}
        try:
            with registry.get_provider(name, {}) as provider:
                result = provider.check()
            row.update(result.model_dump(mode="json"))
        except errors.ProviderUnavailable as exc:
            row.update({"sdk_installed": False, "credentials_found": False, "ok": False, "problems": [str(exc)]})
        except errors.CloudtuneError as exc:
            row.update({"sdk_installed": True, "ok": False, "problems": [str(exc)]})
        row["fine_tunable_models"] = model_rows(name)  # dated: job creation ends, serving ends, retirements
        rows.append(row)
    if args.json:
        emit_json({"providers": rows})
        return 0
    for row in rows:
        flag = "ok " if row.get("ok") else "-- "
        say(f"{flag} {row['provider']:<7} sdk={'yes' if row.get('sdk_installed') else 'no'} "
            f"credentials={'yes' if row.get('credentials_found') else 'no'}  {row['summary']}", sys.stdout)
        for problem in row.get("problems") or []:
            say(f"      - {problem}", sys.stdout)
        for key, value in (row.get("details") or {}).items():
            if not isinstance(value, (list, dict)):  # tables and lists: the model table below, or --json
                say(f"      {key}: {value}", sys.stdout)
        for line in render_models(row["fine_tunable_models"]):
            say(line, sys.stdout)
        if not row.get("sdk_installed"):
            say(f"      install: {row['install']}", sys.stdout)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from cloudtune.compare.command import run as compare_runs

    return compare_runs(args)


def _rebuild_wanted(args: argparse.Namespace, ledger: StateStore) -> bool:
    """``resume RUN --provider P`` / ``status RUN --provider P`` for a run this ledger never saw."""
    if not args.run_id or not getattr(args, "provider", None):
        return False
    try:
        ledger.get_run(args.run_id)
        return False
    except errors.InvalidInput:
        return True


def _rebuilt(args: argparse.Namespace, ledger: StateStore, *, save: bool) -> Run:
    from cloudtune.rebuild import rebuild_run

    if not (getattr(args, "config", None) or (args.model and args.train)):
        raise errors.ConfigError(
            f"Run {args.run_id} is not in the state at {ledger.location}; to rebuild it from the {args.provider} "
            "provider, give its spec: the same config file, or --model and --train.",
            hint=f"cloudtune resume {args.run_id} --provider {args.provider} CONFIG.yaml",
        )
    spec = build_spec(args)
    with provider_for(spec) as provider:
        run, found = rebuild_run(Pipeline(ledger, provider, workdir=workdir_for(args.run_id)), spec, args.run_id)
    if not args.json:
        say(f"run {run.run_id} rebuilt from {spec.provider}: found " + ", ".join(found))
    if save:
        ledger.adopt_run(run)
    return run


__all__ = ["Signalled", "as_interrupted", "describe_run", "interruptible"]  # kept importable from here
